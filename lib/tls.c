/* TLS contexts: options, reference counting, reload, counters, and the per-connection
 * getters of tls.h. The cryptography is the engine's (tls_engine.h); the record layer's
 * place in a connection is conn.c's. */
#include <inttypes.h>
#include <stdio.h>

#include "internal.h"
#include "tls_engine.h"

#define EV_COUNT 7

struct braid_tls_ctx_s {
  atomic_uint refs;
  uv_mutex_t mu;             /* guards engine */
  braid__tls_ectx_t *engine; /* the settings new connections start with */
  int role;
  _Atomic uint64_t handshake_timeout_ms;
  braid_tls_sni_cb sni_cb;
  void *data;
  _Atomic uint64_t counters[EV_COUNT];
};

int braid_tls_available(void) {
#if BRAID_HAVE_TLS
  return 1;
#else
  return 0;
#endif
}

/* ---- options -------------------------------------------------------------------------- */

void braid_tls_opts_init(braid_tls_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->role = BRAID_TLS_CLIENT;
  o->use_system_cas = 1;
  o->verify_peer = BRAID_TLS_VERIFY_DEFAULT;
  o->verify_hostname = 1;
  o->min_version = BRAID_TLS_V1_2;
  o->handshake_timeout_ms = 10000;
  o->session_resumption = 1;
  o->session_cache_size = 1024;
}

static bool set(const char *s) {
  return s && *s;
}

/* ALPN: comma-separated names of 1..255 bytes (each goes on the wire behind a length
 * byte), the whole list under the extension's 16-bit length. */
static int check_alpn(const char *alpn, braid_opts_error_t *err) {
  if (!alpn)
    return 0;
  size_t total = 0;
  for (const char *p = alpn; *p;) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == 0 || n > 255)
      return braid__opts_fail(err, "alpn", "\"%s\": each protocol name must be 1..255 bytes",
                              alpn);
    total += n + 1;
    p += n + (e ? 1 : 0);
    if (e && !*p)
      return braid__opts_fail(err, "alpn", "\"%s\" ends with a comma", alpn);
  }
  if (total > 65535)
    return braid__opts_fail(err, "alpn", "the list exceeds 65535 bytes on the wire");
  return 0;
}

int braid_tls_opts_validate(const braid_tls_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->role != BRAID_TLS_CLIENT && o->role != BRAID_TLS_SERVER)
    return braid__opts_fail(err, "role", "%d is not BRAID_TLS_CLIENT or BRAID_TLS_SERVER",
                            o->role);
  if (set(o->cert_file) && set(o->cert_pem))
    return braid__opts_fail(err, "cert_pem", "give cert_file or cert_pem, not both");
  if (set(o->key_file) && set(o->key_pem))
    return braid__opts_fail(err, "key_pem", "give key_file or key_pem, not both");
  bool cert = set(o->cert_file) || set(o->cert_pem);
  bool key = set(o->key_file) || set(o->key_pem);
  if (cert != key)
    return braid__opts_fail(err, cert ? "key_file" : "cert_file",
                            "a certificate needs its private key and a key its certificate");
  if (o->role == BRAID_TLS_SERVER && !cert)
    return braid__opts_fail(err, "cert_file",
                            "a server context needs a certificate and key (cert_file/key_file "
                            "or cert_pem/key_pem)");
  if (o->verify_peer < BRAID_TLS_VERIFY_DEFAULT || o->verify_peer > BRAID_TLS_VERIFY_REQUIRED)
    return braid__opts_fail(err, "verify_peer", "%d is not a BRAID_TLS_VERIFY_* value",
                            o->verify_peer);
  if (o->role == BRAID_TLS_SERVER && o->verify_peer >= BRAID_TLS_VERIFY_OPTIONAL &&
      !set(o->ca_file) && !set(o->ca_dir))
    return braid__opts_fail(err, "ca_file",
                            "a server that verifies client certificates needs ca_file or ca_dir");
  if (o->role == BRAID_TLS_CLIENT && o->verify_peer == BRAID_TLS_VERIFY_OPTIONAL)
    return braid__opts_fail(err, "verify_peer",
                            "BRAID_TLS_VERIFY_OPTIONAL is for servers; a client verifies "
                            "(REQUIRED) or not (NONE)");
  if (o->use_system_cas != 0 && o->use_system_cas != 1)
    return braid__opts_fail(err, "use_system_cas", "%d is not 0 or 1", o->use_system_cas);
  if (o->verify_hostname != 0 && o->verify_hostname != 1)
    return braid__opts_fail(err, "verify_hostname", "%d is not 0 or 1", o->verify_hostname);
  if (o->session_resumption != 0 && o->session_resumption != 1)
    return braid__opts_fail(err, "session_resumption", "%d is not 0 or 1",
                            o->session_resumption);
  if (o->min_version != BRAID_TLS_V1_2 && o->min_version != BRAID_TLS_V1_3)
    return braid__opts_fail(err, "min_version", "0x%x is not BRAID_TLS_V1_2 or BRAID_TLS_V1_3",
                            (unsigned)o->min_version);
  if (o->handshake_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "handshake_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->handshake_timeout_ms);
  if (o->session_cache_size < 1 || o->session_cache_size > (1u << 20))
    return braid__opts_fail(err, "session_cache_size", "%u is outside 1..2^20",
                            o->session_cache_size);
  return check_alpn(o->alpn, err);
}

/* ---- contexts ------------------------------------------------------------------------- */

int braid_tls_ctx_new(braid_tls_ctx_t **out, const braid_tls_opts_t *o,
                      braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!out)
    return BRAID_EINVAL;
  braid_tls_opts_t def;
  if (!o) {
    braid_tls_opts_init(&def);
    o = &def;
  }
  int rc = braid_tls_opts_validate(o, err);
  if (rc)
    return rc;
  if (!braid_tls_available())
    return BRAID_ENOTSUP;
  braid_tls_ctx_t *ctx = braid__calloc(1, sizeof(*ctx));
  if (!ctx)
    return BRAID_ENOMEM;
  if (uv_mutex_init(&ctx->mu)) {
    braid__free(ctx);
    return BRAID_ENOMEM;
  }
  atomic_init(&ctx->refs, 1);
  ctx->role = o->role;
  atomic_init(&ctx->handshake_timeout_ms, o->handshake_timeout_ms);
  for (int i = 0; i < EV_COUNT; i++)
    atomic_init(&ctx->counters[i], 0);
  rc = braid__tls_ectx_new(&ctx->engine, ctx, o, err);
  if (rc) {
    uv_mutex_destroy(&ctx->mu);
    braid__free(ctx);
    return rc;
  }
  *out = ctx;
  return 0;
}

int braid_tls_ctx_reload(braid_tls_ctx_t *ctx, const braid_tls_opts_t *o,
                         braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!ctx || !o)
    return BRAID_EINVAL;
  int rc = braid_tls_opts_validate(o, err);
  if (rc)
    return rc;
  if (o->role != ctx->role)
    return braid__opts_fail(err, "role", "a reload cannot change the context's role");
  braid__tls_ectx_t *fresh;
  rc = braid__tls_ectx_new(&fresh, ctx, o, err);
  if (rc)
    return rc;
  uv_mutex_lock(&ctx->mu);
  braid__tls_ectx_t *old = ctx->engine;
  ctx->engine = fresh;
  atomic_store(&ctx->handshake_timeout_ms, o->handshake_timeout_ms);
  uv_mutex_unlock(&ctx->mu);
  braid__tls_ectx_unref(old);
  return 0;
}

void braid__tls_ctx_ref(braid_tls_ctx_t *ctx) {
  atomic_fetch_add(&ctx->refs, 1);
}

void braid_tls_ctx_free(braid_tls_ctx_t *ctx) {
  if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1)
    return;
  braid__tls_ectx_unref(ctx->engine);
  uv_mutex_destroy(&ctx->mu);
  braid__free(ctx);
}

int braid_tls_ctx_set_sni_cb(braid_tls_ctx_t *ctx, braid_tls_sni_cb cb) {
  if (!ctx || ctx->role != BRAID_TLS_SERVER)
    return BRAID_EINVAL;
  ctx->sni_cb = cb;
  return 0;
}

void braid_tls_ctx_set_data(braid_tls_ctx_t *ctx, void *data) {
  ctx->data = data;
}

void *braid_tls_ctx_get_data(const braid_tls_ctx_t *ctx) {
  return ctx->data;
}

void braid_tls_ctx_stats(const braid_tls_ctx_t *ctx, braid_tls_stats_t *out) {
  braid_tls_ctx_t *c = (braid_tls_ctx_t *)ctx;
  out->handshakes = atomic_load(&c->counters[BRAID__TLS_EV_HANDSHAKE]);
  out->resumed = atomic_load(&c->counters[BRAID__TLS_EV_RESUMED]);
  out->handshake_failures = atomic_load(&c->counters[BRAID__TLS_EV_FAILED]);
  out->handshake_timeouts = atomic_load(&c->counters[BRAID__TLS_EV_TIMEOUT]);
  out->verify_failures = atomic_load(&c->counters[BRAID__TLS_EV_VERIFY]);
  out->renegotiations_refused = atomic_load(&c->counters[BRAID__TLS_EV_RENEG]);
  out->truncations = atomic_load(&c->counters[BRAID__TLS_EV_TRUNCATED]);
}

braid__tls_ectx_t *braid__tls_ctx_engine(braid_tls_ctx_t *ctx) {
  uv_mutex_lock(&ctx->mu);
  braid__tls_ectx_t *e = ctx->engine;
  braid__tls_ectx_ref(e);
  uv_mutex_unlock(&ctx->mu);
  return e;
}

uint64_t braid__tls_ctx_handshake_timeout(braid_tls_ctx_t *ctx) {
  return atomic_load(&ctx->handshake_timeout_ms);
}

bool braid__tls_ctx_is_server(const braid_tls_ctx_t *ctx) {
  return ctx->role == BRAID_TLS_SERVER;
}

braid_tls_ctx_t *braid__tls_ctx_sni(braid_tls_ctx_t *ctx, const char *server_name) {
  if (!ctx->sni_cb)
    return NULL;
  braid_tls_ctx_t *pick = ctx->sni_cb(ctx, server_name, ctx->data);
  return pick && pick != ctx && pick->role == BRAID_TLS_SERVER ? pick : NULL;
}

void braid__tls_ctx_count(braid_tls_ctx_t *ctx, braid__tls_event_t ev) {
  atomic_fetch_add_explicit(&ctx->counters[ev], 1, memory_order_relaxed);
}

/* ---- the output sink ------------------------------------------------------------------ */

int braid__tls_out_reserve(braid__tls_out_t *o, size_t n) {
  if (o->len + n <= o->cap)
    return 0;
  size_t keep = o->len - o->off;
  size_t cap = o->cap ? o->cap : 4096;
  while (cap < keep + n)
    cap *= 2;
  if (o->off > 0 && keep + n <= o->cap) {
    memmove(o->buf, o->buf + o->off, keep);
  } else {
    uint8_t *b = braid__malloc(cap);
    if (!b)
      return BRAID_ENOMEM;
    if (o->buf) {
      memcpy(b, o->buf + o->off, keep);
      braid__free(o->buf);
    }
    o->buf = b;
    o->cap = cap;
  }
  o->len = keep;
  o->off = 0;
  return 0;
}

int braid__tls_out_append(braid__tls_out_t *o, const void *data, size_t n) {
  if (braid__tls_out_reserve(o, n))
    return BRAID_ENOMEM;
  memcpy(o->buf + o->len, data, n);
  o->len += n;
  return 0;
}

void braid__tls_out_consume(braid__tls_out_t *o, size_t n) {
  o->off += n;
  if (o->off >= o->len)
    o->off = o->len = 0;
}

void braid__tls_out_free(braid__tls_out_t *o) {
  braid__free(o->buf);
  *o = (braid__tls_out_t){NULL, 0, 0, 0};
}

/* ---- per connection ------------------------------------------------------------------- */

int braid_tls_info(const braid_conn_t *conn, braid_tls_info_t *out) {
  if (!conn || !out)
    return BRAID_EINVAL;
  uint64_t hs_ms;
  const braid__tls_sess_t *s = braid__conn_tls_session(conn, &hs_ms);
  if (!s)
    return BRAID_EINVAL;
  memset(out, 0, sizeof(*out));
  braid__tls_sess_info(s, out);
  out->handshake_ms = hs_ms;
  return 0;
}

const char *braid_tls_error_text(const braid_conn_t *conn) {
  if (!conn)
    return "";
  const braid__tls_sess_t *s = braid__conn_tls_any_session(conn);
  return s ? braid__tls_error_text(s) : "";
}
