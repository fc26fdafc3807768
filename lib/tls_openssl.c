/* The OpenSSL 3 engine behind tls_engine.h.
 *
 * A session is an SSL object between two BIOs that do no I/O: a memory BIO the connection
 * feeds with the peer's bytes (BIO_s_mem), and a sink BIO whose writes append to the
 * connection's ciphertext buffer (braid__tls_out_t), which the connection writes to the
 * socket itself, so braid keeps its own write path (one sendmsg for everything queued, with
 * MSG_NOSIGNAL) and OpenSSL never sees the socket. The same layering as h2o's and Node's
 * TLS on libuv: encrypted bytes in and out, the event loop does the rest.
 *
 * Safety choices: renegotiation refused (SSL_OP_NO_RENEGOTIATION, and a TLS 1.2 handshake
 * record after the handshake fails the connection), TLS 1.2 minimum, compression off,
 * verification with host name checks on for clients, session id context set so resumption
 * works with client certificates. */
#include <limits.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "tls_engine.h"

typedef struct cached_s {
  char *name;
  SSL_SESSION *sess;
} cached_t;

struct braid__tls_ectx_s {
  atomic_uint refs;
  SSL_CTX *ssl_ctx;
  braid_tls_ctx_t *owner;
  bool server;
  bool verify_hostname;
  bool resumption;
  uint8_t *alpn; /* wire format: length-prefixed names */
  size_t alpn_len;
  /* Client sessions for resumption, one per server name, replaced round-robin. */
  uv_mutex_t mu;
  cached_t *cache;
  unsigned cache_cap, cache_len, cache_next;
};

struct braid__tls_sess_s {
  SSL *ssl;
  BIO *rbio;
  braid__tls_ectx_t *e;
  braid__tls_ectx_t *sni_e; /* the context SNI switched to, held while the SSL uses it */
  braid__tls_out_t *sink;
  char *server_name; /* client: the name asked for (session cache key) */
  bool hs_done;
  bool notify_sent;
  bool reneg; /* the peer tried to renegotiate */
  char err[192];
};

static int sess_index = -1; /* SSL ex_data slot: the braid session */
static BIO_METHOD *sink_method;
static uv_once_t init_once = UV_ONCE_INIT;

/* ---- the sink BIO --------------------------------------------------------------------- */

static int sink_write(BIO *b, const char *data, int len) {
  braid__tls_sess_t *s = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  if (braid__tls_out_append(s->sink, data, (size_t)len))
    return -1;
  return len;
}

static long sink_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  braid__tls_sess_t *s = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1;
  case BIO_CTRL_WPENDING:
    return s ? (long)braid__tls_out_pending(s->sink) : 0;
  default:
    return 0;
  }
}

static int sink_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void engine_init(void) {
  OPENSSL_init_ssl(0, NULL);
  sess_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  sink_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "braid sink");
  if (sink_method) {
    BIO_meth_set_write(sink_method, sink_write);
    BIO_meth_set_ctrl(sink_method, sink_ctrl);
    BIO_meth_set_create(sink_method, sink_create);
  }
}

/* ---- errors --------------------------------------------------------------------------- */

static void set_err(char *buf, size_t cap, const char *prefix, unsigned long e) {
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  char tmp[128];
  if (!r && e) {
    ERR_error_string_n(e, tmp, sizeof(tmp));
    r = tmp;
  }
  snprintf(buf, cap, "%s%s%s", prefix, *prefix && r ? ": " : "", r ? r : "");
}

/* Why OpenSSL refused an option: into err (field, reason). */
static int opt_fail(braid_opts_error_t *err, const char *field, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char reason[160];
  set_err(reason, sizeof(reason), what, e);
  ERR_clear_error();
  return braid__opts_fail(err, field, "%s", reason);
}

/* ---- contexts ------------------------------------------------------------------------- */

void braid__tls_ectx_ref(braid__tls_ectx_t *e) {
  atomic_fetch_add(&e->refs, 1);
}

void braid__tls_ectx_unref(braid__tls_ectx_t *e) {
  if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
    return;
  SSL_CTX_free(e->ssl_ctx);
  for (unsigned i = 0; i < e->cache_len; i++) {
    braid__free(e->cache[i].name);
    SSL_SESSION_free(e->cache[i].sess);
  }
  braid__free(e->cache);
  braid__free(e->alpn);
  uv_mutex_destroy(&e->mu);
  braid__free(e);
}

static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  braid__tls_ectx_t *e = arg;
  unsigned char *o;
  if (SSL_select_next_proto(&o, outlen, e->alpn, (unsigned)e->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* nothing in common: go on without ALPN */
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

static int on_servername(SSL *ssl, int *alert, void *arg) {
  (void)alert;
  braid__tls_ectx_t *e = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || !e->owner)
    return SSL_TLSEXT_ERR_OK;
  braid_tls_ctx_t *pick = braid__tls_ctx_sni(e->owner, name);
  if (!pick)
    return SSL_TLSEXT_ERR_OK;
  braid__tls_sess_t *s = SSL_get_ex_data(ssl, sess_index);
  if (!s || s->sni_e)
    return SSL_TLSEXT_ERR_OK;
  /* The session keeps pe (its callbacks' argument) as long as the SSL uses its SSL_CTX,
   * even if pick is reloaded meanwhile. */
  braid__tls_ectx_t *pe = braid__tls_ctx_engine(pick);
  SSL_set_SSL_CTX(ssl, pe->ssl_ctx);
  s->sni_e = pe;
  return SSL_TLSEXT_ERR_OK;
}

/* The peer sent a record: in TLS 1.2 a handshake record after the handshake is a
 * renegotiation (a ClientHello, or a server's HelloRequest). TLS 1.3 has none (its
 * post-handshake messages travel inside application-data records). */
static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg) {
  (void)version;
  (void)arg;
  if (write_p || content_type != SSL3_RT_HEADER || len < 1)
    return;
  braid__tls_sess_t *s = SSL_get_ex_data(ssl, sess_index);
  if (s && s->hs_done && SSL_version(ssl) <= TLS1_2_VERSION &&
      ((const uint8_t *)buf)[0] == SSL3_RT_HANDSHAKE)
    s->reneg = true;
}

/* A client got a session to resume later: keep the newest per server name. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  braid__tls_sess_t *s = SSL_get_ex_data(ssl, sess_index);
  if (!s || !s->server_name)
    return 0;
  braid__tls_ectx_t *e = s->e;
  uv_mutex_lock(&e->mu);
  cached_t *slot = NULL;
  for (unsigned i = 0; i < e->cache_len && !slot; i++)
    if (strcmp(e->cache[i].name, s->server_name) == 0)
      slot = &e->cache[i];
  if (!slot) {
    if (e->cache_len < e->cache_cap) {
      slot = &e->cache[e->cache_len];
      slot->name = NULL;
      slot->sess = NULL;
    } else {
      slot = &e->cache[e->cache_next];
      e->cache_next = (e->cache_next + 1) % e->cache_cap;
    }
    size_t n = strlen(s->server_name) + 1;
    char *name = braid__malloc(n);
    if (!name) {
      uv_mutex_unlock(&e->mu);
      return 0;
    }
    memcpy(name, s->server_name, n);
    if (slot == &e->cache[e->cache_len])
      e->cache_len++;
    braid__free(slot->name);
    slot->name = name;
  }
  SSL_SESSION_free(slot->sess);
  slot->sess = sess; /* returning 1 hands us the reference */
  uv_mutex_unlock(&e->mu);
  return 1;
}

static int load_pem_chain(SSL_CTX *ctx, const char *pem, braid_opts_error_t *err) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  if (!b)
    return BRAID_ENOMEM;
  X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
  int rc = 0;
  if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    rc = opt_fail(err, "cert_pem", "cannot use the certificate");
  } else {
    SSL_CTX_clear_chain_certs(ctx);
    X509 *ca;
    while ((ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
      if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
        X509_free(ca);
        rc = opt_fail(err, "cert_pem", "cannot add a chain certificate");
        break;
      }
    }
    if (rc == 0)
      ERR_clear_error(); /* the end of the PEM text reads as an error */
  }
  X509_free(leaf);
  BIO_free(b);
  return rc;
}

static int load_pem_key(SSL_CTX *ctx, const char *pem, braid_opts_error_t *err) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  if (!b)
    return BRAID_ENOMEM;
  EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
  int rc = 0;
  if (!k || SSL_CTX_use_PrivateKey(ctx, k) != 1)
    rc = opt_fail(err, "key_pem", "cannot use the private key");
  EVP_PKEY_free(k);
  BIO_free(b);
  return rc;
}

static int alpn_wire(braid__tls_ectx_t *e, const char *alpn) {
  size_t n = strlen(alpn);
  e->alpn = braid__malloc(n + 1);
  if (!e->alpn)
    return BRAID_ENOMEM;
  size_t w = 0;
  for (const char *p = alpn; *p;) {
    const char *c = strchr(p, ',');
    size_t k = c ? (size_t)(c - p) : strlen(p);
    e->alpn[w++] = (uint8_t)k;
    memcpy(e->alpn + w, p, k);
    w += k;
    p += k + (c ? 1 : 0);
  }
  e->alpn_len = w;
  return 0;
}

static int configure(braid__tls_ectx_t *e, const braid_tls_opts_t *o, braid_opts_error_t *err) {
  SSL_CTX *ctx = e->ssl_ctx;
  int rc;
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set_min_proto_version(ctx, o->min_version) != 1)
    return opt_fail(err, "min_version", "refused");
  if (o->cipher_list && SSL_CTX_set_cipher_list(ctx, o->cipher_list) != 1)
    return opt_fail(err, "cipher_list", "no usable cipher");
  if (o->ciphersuites && SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1)
    return opt_fail(err, "ciphersuites", "no usable suite");
  if (o->cert_file && *o->cert_file &&
      SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
    return opt_fail(err, "cert_file", o->cert_file);
  if (o->cert_pem && *o->cert_pem && (rc = load_pem_chain(ctx, o->cert_pem, err)))
    return rc;
  if (o->key_file && *o->key_file &&
      SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
    return opt_fail(err, "key_file", o->key_file);
  if (o->key_pem && *o->key_pem && (rc = load_pem_key(ctx, o->key_pem, err)))
    return rc;
  bool cert = (o->cert_file && *o->cert_file) || (o->cert_pem && *o->cert_pem);
  if (cert && SSL_CTX_check_private_key(ctx) != 1)
    return opt_fail(err, o->key_file && *o->key_file ? "key_file" : "key_pem",
                    "the key does not match the certificate");
  const char *ca_file = o->ca_file && *o->ca_file ? o->ca_file : NULL;
  const char *ca_dir = o->ca_dir && *o->ca_dir ? o->ca_dir : NULL;
  if ((ca_file || ca_dir) && SSL_CTX_load_verify_locations(ctx, ca_file, ca_dir) != 1)
    return opt_fail(err, ca_file ? "ca_file" : "ca_dir", ca_file ? ca_file : ca_dir);
  if (e->server) {
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"braid", 5);
    if (o->verify_peer >= BRAID_TLS_VERIFY_OPTIONAL) {
      int mode = SSL_VERIFY_PEER;
      if (o->verify_peer == BRAID_TLS_VERIFY_REQUIRED)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(ctx, mode, NULL);
      if (ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (names)
          SSL_CTX_set_client_CA_list(ctx, names);
      }
    }
    if (o->session_resumption) {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
      SSL_CTX_sess_set_cache_size(ctx, o->session_cache_size);
    } else {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
      SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, e);
    if (e->alpn_len)
      SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, e);
  } else {
    if (o->use_system_cas && SSL_CTX_set_default_verify_paths(ctx) != 1)
      return opt_fail(err, "use_system_cas", "cannot load the system's CA store");
    SSL_CTX_set_verify(ctx, o->verify_peer == BRAID_TLS_VERIFY_NONE ? SSL_VERIFY_NONE
                                                                    : SSL_VERIFY_PEER,
                       NULL);
    if (e->alpn_len && SSL_CTX_set_alpn_protos(ctx, e->alpn, (unsigned)e->alpn_len) != 0)
      return opt_fail(err, "alpn", "refused");
    if (o->session_resumption) {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                              SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
  }
  SSL_CTX_set_msg_callback(ctx, on_msg);
  return 0;
}

int braid__tls_ectx_new(braid__tls_ectx_t **out, braid_tls_ctx_t *owner,
                        const braid_tls_opts_t *o, braid_opts_error_t *err) {
  uv_once(&init_once, engine_init);
  if (sess_index < 0 || !sink_method)
    return BRAID_ENOMEM;
  braid__tls_ectx_t *e = braid__calloc(1, sizeof(*e));
  if (!e)
    return BRAID_ENOMEM;
  if (uv_mutex_init(&e->mu)) {
    braid__free(e);
    return BRAID_ENOMEM;
  }
  atomic_init(&e->refs, 1);
  e->owner = owner;
  e->server = o->role == BRAID_TLS_SERVER;
  e->verify_hostname = o->verify_hostname && o->verify_peer != BRAID_TLS_VERIFY_NONE;
  /* verify_peer is DEFAULT, NONE or REQUIRED for a client (validated); DEFAULT verifies. */
  e->resumption = o->session_resumption;
  int rc = 0;
  if (o->alpn && *o->alpn)
    rc = alpn_wire(e, o->alpn);
  if (rc == 0 && !e->server && o->session_resumption) {
    e->cache_cap = o->session_cache_size;
    e->cache = braid__calloc(e->cache_cap, sizeof(*e->cache));
    if (!e->cache)
      rc = BRAID_ENOMEM;
  }
  if (rc == 0) {
    ERR_clear_error();
    e->ssl_ctx = SSL_CTX_new(e->server ? TLS_server_method() : TLS_client_method());
    if (!e->ssl_ctx)
      rc = BRAID_ENOMEM;
  }
  if (rc == 0)
    rc = configure(e, o, err);
  if (rc) {
    braid__tls_ectx_unref(e);
    return rc;
  }
  *out = e;
  return 0;
}

/* ---- sessions ------------------------------------------------------------------------- */

static bool is_ip_literal(const char *name) {
  struct in6_addr a6;
  struct in_addr a4;
  return uv_inet_pton(AF_INET, name, &a4) == 0 || uv_inet_pton(AF_INET6, name, &a6) == 0;
}

int braid__tls_sess_new(braid__tls_sess_t **out, braid_tls_ctx_t *ctx, bool server,
                        const char *server_name, braid__tls_out_t *sink) {
  braid__tls_sess_t *s = braid__calloc(1, sizeof(*s));
  if (!s)
    return BRAID_ENOMEM;
  s->sink = sink;
  s->e = braid__tls_ctx_engine(ctx);
  int rc = BRAID_ENOMEM;
  ERR_clear_error();
  s->ssl = SSL_new(s->e->ssl_ctx);
  s->rbio = BIO_new(BIO_s_mem());
  BIO *wbio = BIO_new(sink_method);
  if (!s->ssl || !s->rbio || !wbio) {
    BIO_free(wbio);
    BIO_free(s->rbio);
    goto fail;
  }
  BIO_set_mem_eof_return(s->rbio, -1); /* empty means "wait", not end of stream */
  BIO_set_data(wbio, s);
  SSL_set_bio(s->ssl, s->rbio, wbio);
  SSL_set_ex_data(s->ssl, sess_index, s);
  if (server) {
    SSL_set_accept_state(s->ssl);
  } else {
    SSL_set_connect_state(s->ssl);
    if (server_name && *server_name) {
      size_t n = strlen(server_name) + 1;
      s->server_name = braid__malloc(n);
      if (!s->server_name)
        goto fail;
      memcpy(s->server_name, server_name, n);
      rc = BRAID_ETLS;
      bool ip = is_ip_literal(server_name);
      if (!ip && SSL_set_tlsext_host_name(s->ssl, server_name) != 1)
        goto fail;
      if (s->e->verify_hostname) {
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), server_name) != 1
               : SSL_set1_host(s->ssl, server_name) != 1)
          goto fail;
      }
      if (s->e->resumption) {
        uv_mutex_lock(&s->e->mu);
        for (unsigned i = 0; i < s->e->cache_len; i++)
          if (strcmp(s->e->cache[i].name, server_name) == 0) {
            SSL_set_session(s->ssl, s->e->cache[i].sess);
            break;
          }
        uv_mutex_unlock(&s->e->mu);
      }
    }
  }
  *out = s;
  return 0;
fail:
  ERR_clear_error();
  braid__tls_sess_free(s); /* the SSL owns the BIOs once set */
  return rc;
}

void braid__tls_sess_free(braid__tls_sess_t *s) {
  if (!s)
    return;
  SSL_free(s->ssl); /* frees both BIOs */
  braid__tls_ectx_unref(s->e);
  braid__tls_ectx_unref(s->sni_e);
  braid__free(s->server_name);
  braid__free(s);
}

int braid__tls_feed(braid__tls_sess_t *s, const void *data, size_t len) {
  while (len > 0) {
    int n = BIO_write(s->rbio, data, len > INT_MAX ? INT_MAX : (int)len);
    if (n <= 0)
      return BRAID_ENOMEM;
    data = (const char *)data + n;
    len -= (size_t)n;
  }
  return 0;
}

/* Maps a failed SSL call to a braid code and keeps OpenSSL's words for it. */
static int fail(braid__tls_sess_t *s, int ssl_err) {
  unsigned long e = ERR_peek_error();
  int reason = e ? ERR_GET_REASON(e) : 0;
  long v = SSL_get_verify_result(s->ssl);
  int rc = BRAID_ETLS;
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && v != X509_V_OK) {
    snprintf(s->err, sizeof(s->err), "certificate verify failed: %s",
             X509_verify_cert_error_string(v));
    switch (v) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      rc = BRAID_ETLSHOSTNAME;
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      rc = BRAID_ETLSEXPIRED;
      break;
    default:
      rc = BRAID_ETLSVERIFY;
    }
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    set_err(s->err, sizeof(s->err), "", e);
    rc = BRAID_ETLSVERIFY;
  } else if (e) {
    set_err(s->err, sizeof(s->err), "", e);
  } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_SSL) {
    snprintf(s->err, sizeof(s->err), "TLS failure (SSL error %d)", ssl_err);
  }
  ERR_clear_error();
  return rc;
}

int braid__tls_handshake(braid__tls_sess_t *s) {
  ERR_clear_error();
  int r = SSL_do_handshake(s->ssl);
  if (r == 1) {
    s->hs_done = true;
    return 0;
  }
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return BRAID__TLS_WANT;
  return fail(s, e);
}

int braid__tls_read(braid__tls_sess_t *s, uint8_t *buf, size_t cap, size_t *got) {
  ERR_clear_error();
  int r = SSL_read(s->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  if (s->reneg) {
    snprintf(s->err, sizeof(s->err), "renegotiation refused");
    ERR_clear_error();
    return BRAID_ETLS;
  }
  if (r > 0) {
    *got = (size_t)r;
    return 0;
  }
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return BRAID__TLS_WANT;
  if (e == SSL_ERROR_ZERO_RETURN)
    return BRAID__TLS_EOF;
  return fail(s, e);
}

bool braid__tls_has_input(const braid__tls_sess_t *s) {
  return SSL_pending(s->ssl) > 0 || BIO_ctrl_pending(s->rbio) > 0;
}

int braid__tls_write(braid__tls_sess_t *s, const void *data, size_t len) {
  ERR_clear_error();
  while (len > 0) {
    int r = SSL_write(s->ssl, data, len > INT_MAX ? INT_MAX : (int)len);
    if (r <= 0) {
      int e = SSL_get_error(s->ssl, r);
      /* With a sink that never blocks, only a renegotiation (refused) could ask for more
       * input: the caller retries with the same bytes (ACCEPT_MOVING_WRITE_BUFFER). */
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return BRAID__TLS_WANT;
      return fail(s, e);
    }
    data = (const char *)data + r;
    len -= (size_t)r;
  }
  return 0;
}

int braid__tls_close_notify(braid__tls_sess_t *s) {
  if (s->notify_sent)
    return 0;
  s->notify_sent = true;
  ERR_clear_error();
  int r = SSL_shutdown(s->ssl);
  ERR_clear_error();
  return r < 0 ? BRAID_ETLS : 0;
}

bool braid__tls_peer_closed(const braid__tls_sess_t *s) {
  return (SSL_get_shutdown(s->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
}

void braid__tls_sess_info(const braid__tls_sess_t *s, braid_tls_info_t *info) {
  snprintf(info->version, sizeof(info->version), "%s", SSL_get_version(s->ssl));
  const char *c = SSL_get_cipher_name(s->ssl);
  snprintf(info->cipher, sizeof(info->cipher), "%s", c ? c : "");
  const unsigned char *a;
  unsigned alen;
  SSL_get0_alpn_selected(s->ssl, &a, &alen);
  if (alen >= sizeof(info->alpn))
    alen = sizeof(info->alpn) - 1;
  memcpy(info->alpn, a ? (const char *)a : "", a ? alen : 0);
  info->alpn[a ? alen : 0] = '\0';
  const char *sn = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
  if (!sn)
    sn = s->server_name;
  snprintf(info->server_name, sizeof(info->server_name), "%s", sn ? sn : "");
  info->resumed = SSL_session_reused(s->ssl);
  info->peer_verified = SSL_get0_peer_certificate(s->ssl) != NULL &&
                        SSL_get_verify_result(s->ssl) == X509_V_OK &&
                        SSL_get_verify_mode(s->ssl) != SSL_VERIFY_NONE;
}

const char *braid__tls_error_text(const braid__tls_sess_t *s) {
  return s->err;
}

void braid__tls_set_error_text(braid__tls_sess_t *s, const char *text) {
  if (!s->err[0])
    snprintf(s->err, sizeof(s->err), "%s", text);
}
