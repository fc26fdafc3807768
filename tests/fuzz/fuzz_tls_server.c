/* Fuzz target: a TLS server session fed a hostile client's bytes. The first input byte
 * chooses how the rest is cut into feeds (1..255 bytes each; 0: one feed), so records and
 * handshake messages split at every place. After each feed the handshake advances (and,
 * once it is done, the session is read until it wants more), exactly as conn.c drives it.
 * Traps if the session's output grows without bound or a call answers with anything but
 * its documented results. The server's key and certificate are made in memory at the first
 * call (an EC P-256 key and a self-signed certificate): nothing secret is committed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "braid.h"
#include "internal.h"
#include "tls_engine.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond))                                                                                \
      __builtin_trap();                                                                         \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static braid_tls_ctx_t *ctx;

static char *pem_of(int (*write)(BIO *, void *), void *obj) {
  BIO *b = BIO_new(BIO_s_mem());
  CHECK(b && write(b, obj) == 1);
  char *p;
  long n = BIO_get_mem_data(b, &p);
  char *out = malloc((size_t)n + 1);
  CHECK(out);
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  BIO_free(b);
  return out;
}

static int write_cert(BIO *b, void *x) {
  return PEM_write_bio_X509(b, x);
}

static int write_key(BIO *b, void *k) {
  return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static void make_ctx(void) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  CHECK(key && x);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  CHECK(X509_sign(x, key, EVP_sha256()) > 0);
  char *cert = pem_of(write_cert, x);
  char *pkey = pem_of(write_key, key);
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.role = BRAID_TLS_SERVER;
  o.cert_pem = cert;
  o.key_pem = pkey;
  o.alpn = "http/1.1,h2";
  CHECK(braid_tls_ctx_new(&ctx, &o, NULL) == 0);
  free(cert);
  free(pkey);
  X509_free(x);
  EVP_PKEY_free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ctx)
    make_ctx();
  if (size == 0)
    return 0;
  size_t step = data[0] ? data[0] : size;
  data++;
  size--;
  braid__tls_out_t out = {NULL, 0, 0, 0};
  braid__tls_sess_t *s;
  CHECK(braid__tls_sess_new(&s, ctx, true, NULL, &out) == 0);
  bool done = false, failed = false;
  uint8_t buf[4096];
  for (size_t off = 0; off < size && !failed;) {
    size_t k = size - off < step ? size - off : step;
    CHECK(braid__tls_feed(s, data + off, k) == 0);
    off += k;
    if (!done) {
      int rc = braid__tls_handshake(s);
      CHECK(rc == 0 || rc == BRAID__TLS_WANT || rc == BRAID_ETLS || rc == BRAID_ETLSVERIFY ||
            rc == BRAID_ETLSHOSTNAME || rc == BRAID_ETLSEXPIRED);
      if (rc < 0)
        failed = true;
      done = rc == 0;
    }
    while (done && !failed) {
      size_t got = 0;
      int rc = braid__tls_read(s, buf, sizeof(buf), &got);
      CHECK(rc == 0 || rc == BRAID__TLS_WANT || rc == BRAID__TLS_EOF || rc == BRAID_ETLS);
      if (rc == 0) {
        CHECK(got > 0 && got <= sizeof(buf));
        continue;
      }
      failed = rc != BRAID__TLS_WANT;
      break;
    }
    /* What the server says back is bounded: a flight, alerts, never a copy of the input. */
    CHECK(braid__tls_out_pending(&out) < 64 * 1024);
    braid__tls_out_consume(&out, braid__tls_out_pending(&out));
  }
  if (done && !failed) {
    CHECK(braid__tls_write(s, "x", 1) == 0);
    CHECK(braid__tls_close_notify(s) == 0);
  }
  braid__tls_sess_free(s);
  braid__tls_out_free(&out);
  return 0;
}
