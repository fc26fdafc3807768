/* The engine of a build without TLS (the meson feature `tls` found no OpenSSL): no context
 * can be made, so no session ever starts. braid_tls_ctx_new() says BRAID_ENOTSUP. */
#include "internal.h"
#include "tls_engine.h"

struct braid__tls_ectx_s {
  int unused;
};

struct braid__tls_sess_s {
  int unused;
};

int braid__tls_ectx_new(braid__tls_ectx_t **out, braid_tls_ctx_t *owner,
                        const braid_tls_opts_t *o, braid_opts_error_t *err) {
  (void)out;
  (void)owner;
  (void)o;
  (void)err;
  return BRAID_ENOTSUP;
}

void braid__tls_ectx_ref(braid__tls_ectx_t *e) {
  (void)e;
}

void braid__tls_ectx_unref(braid__tls_ectx_t *e) {
  (void)e;
}

int braid__tls_sess_new(braid__tls_sess_t **out, braid_tls_ctx_t *ctx, bool server,
                        const char *server_name, braid__tls_out_t *sink) {
  (void)out;
  (void)ctx;
  (void)server;
  (void)server_name;
  (void)sink;
  return BRAID_ENOTSUP;
}

void braid__tls_sess_free(braid__tls_sess_t *s) {
  (void)s;
}

int braid__tls_feed(braid__tls_sess_t *s, const void *data, size_t len) {
  (void)s;
  (void)data;
  (void)len;
  return BRAID_ENOTSUP;
}

int braid__tls_handshake(braid__tls_sess_t *s) {
  (void)s;
  return BRAID_ENOTSUP;
}

int braid__tls_read(braid__tls_sess_t *s, uint8_t *buf, size_t cap, size_t *got) {
  (void)s;
  (void)buf;
  (void)cap;
  (void)got;
  return BRAID_ENOTSUP;
}

bool braid__tls_has_input(const braid__tls_sess_t *s) {
  (void)s;
  return false;
}

int braid__tls_write(braid__tls_sess_t *s, const void *data, size_t len) {
  (void)s;
  (void)data;
  (void)len;
  return BRAID_ENOTSUP;
}

int braid__tls_close_notify(braid__tls_sess_t *s) {
  (void)s;
  return BRAID_ENOTSUP;
}

bool braid__tls_peer_closed(const braid__tls_sess_t *s) {
  (void)s;
  return false;
}

void braid__tls_sess_info(const braid__tls_sess_t *s, braid_tls_info_t *info) {
  (void)s;
  (void)info;
}

const char *braid__tls_error_text(const braid__tls_sess_t *s) {
  (void)s;
  return "";
}

void braid__tls_set_error_text(braid__tls_sess_t *s, const char *text) {
  (void)s;
  (void)text;
}
