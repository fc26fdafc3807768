/* braid: the seam between braid's TLS (tls.c, conn.c) and the library that does the
 * cryptography. Not installed.
 *
 * One engine is linked in: tls_openssl.c (OpenSSL 3) when the meson feature `tls` found
 * OpenSSL, tls_none.c otherwise (every constructor says BRAID_ENOTSUP). Another library
 * (BoringSSL, wolfSSL, rustls-ffi) would be one more file implementing these functions;
 * nothing above this header names OpenSSL.
 *
 * The engine does no I/O. A session takes the peer's bytes through braid__tls_feed(),
 * and everything it has to send (handshake flights, records, alerts) goes to its output
 * sink: a byte buffer owned by the connection (braid__tls_out_t), appended to by every
 * engine call. The connection writes that buffer to the socket and calls
 * braid__tls_out_consume() for what the kernel took. */
#ifndef BRAID_TLS_ENGINE_H
#define BRAID_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/tls.h"

/* Results of engine calls besides 0 and braid error codes. */
#define BRAID__TLS_WANT 1 /* needs more input from the peer */
#define BRAID__TLS_EOF 2  /* the peer sent close_notify: no more data */

/* Ciphertext to send, in order: bytes [off, len) of buf. */
typedef struct braid__tls_out_s {
  uint8_t *buf;
  size_t len, off, cap;
} braid__tls_out_t;

static inline size_t braid__tls_out_pending(const braid__tls_out_t *o) {
  return o->len - o->off;
}
/* The kernel took n bytes from the front. Empties the buffer (keeps its memory) when all
 * went. */
void braid__tls_out_consume(braid__tls_out_t *o, size_t n);
/* Frees the buffer's memory (pending bytes are lost). */
void braid__tls_out_free(braid__tls_out_t *o);
/* Makes room for n more bytes. Returns 0 or BRAID_ENOMEM. */
int braid__tls_out_reserve(braid__tls_out_t *o, size_t n);
/* Appends data[0..n). Returns 0 or BRAID_ENOMEM. */
int braid__tls_out_append(braid__tls_out_t *o, const void *data, size_t n);

typedef struct braid__tls_sess_s braid__tls_sess_t;

/* ---- contexts (the engine's part of a braid_tls_ctx_t) -------------------------------- */

typedef struct braid__tls_ectx_s braid__tls_ectx_t;

/* Builds the engine's context from o (already validated). On a failure of OpenSSL's (a
 * file it cannot read, a key that does not match) fills err's field and reason and returns
 * BRAID_EINVAL; or BRAID_ENOMEM, BRAID_ENOTSUP. */
int braid__tls_ectx_new(braid__tls_ectx_t **out, braid_tls_ctx_t *owner,
                        const braid_tls_opts_t *o, braid_opts_error_t *err);
/* Reference counting: sessions hold the engine context they started with, so a reload
 * can swap a braid_tls_ctx_t's engine context while old connections still use theirs. */
void braid__tls_ectx_ref(braid__tls_ectx_t *e);
void braid__tls_ectx_unref(braid__tls_ectx_t *e);

/* ---- sessions (one per connection) ------------------------------------------------------ */

/* Starts a session of ctx (its current engine context) whose output goes to out. For a
 * client, server_name (may be NULL) is sent as SNI (unless an IP literal) and checked
 * against the certificate (when the context verifies host names). Returns 0, BRAID_ENOMEM
 * or BRAID_ETLS. */
int braid__tls_sess_new(braid__tls_sess_t **out, braid_tls_ctx_t *ctx, bool server,
                        const char *server_name, braid__tls_out_t *sink);
void braid__tls_sess_free(braid__tls_sess_t *s);

/* The peer's bytes. Returns 0 or BRAID_ENOMEM. */
int braid__tls_feed(braid__tls_sess_t *s, const void *data, size_t len);
/* Advances the handshake with what was fed. Returns 0 (done), BRAID__TLS_WANT, or the
 * failure (BRAID_ETLS, BRAID_ETLSVERIFY, BRAID_ETLSHOSTNAME, BRAID_ETLSEXPIRED; the text
 * from braid__tls_error_text). Output may have been appended either way. */
int braid__tls_handshake(braid__tls_sess_t *s);
/* Decrypts into buf[0..cap). Returns 0 with *got > 0, BRAID__TLS_WANT (nothing more
 * buffered), BRAID__TLS_EOF (close_notify), or an error (BRAID_ETLS: a bad record, an alert,
 * a renegotiation attempt). */
int braid__tls_read(braid__tls_sess_t *s, uint8_t *buf, size_t cap, size_t *got);
/* Whether plaintext or unprocessed records are buffered (a read would not need the
 * socket). */
bool braid__tls_has_input(const braid__tls_sess_t *s);
/* Encrypts all of data[0..len) (len > 0) into the sink, as records of at most 16 KiB.
 * Returns 0 or BRAID_ETLS / BRAID_ENOMEM (the connection cannot go on). */
int braid__tls_write(braid__tls_sess_t *s, const void *data, size_t len);
/* Appends close_notify to the sink (once). Returns 0 or an error. */
int braid__tls_close_notify(braid__tls_sess_t *s);
/* Whether the peer's close_notify was received. */
bool braid__tls_peer_closed(const braid__tls_sess_t *s);
/* Fills info (after the handshake). */
void braid__tls_sess_info(const braid__tls_sess_t *s, braid_tls_info_t *info);
/* The reason of the last failure, or "". */
const char *braid__tls_error_text(const braid__tls_sess_t *s);
/* Sets the failure text (e.g. "handshake timed out") when the engine has none. */
void braid__tls_set_error_text(braid__tls_sess_t *s, const char *text);

/* ---- braid_tls_ctx_t internals (tls.c), for the engine and conn.c ------------------------- */

void braid__tls_ctx_ref(braid_tls_ctx_t *ctx);
/* The context's current engine context, referenced (unref when done). Thread-safe. */
braid__tls_ectx_t *braid__tls_ctx_engine(braid_tls_ctx_t *ctx);
/* The options the context was last built from (for the handshake timeout). */
uint64_t braid__tls_ctx_handshake_timeout(braid_tls_ctx_t *ctx);
bool braid__tls_ctx_is_server(const braid_tls_ctx_t *ctx);
/* The SNI callback, for the engine: the context to use for server_name, or NULL. */
braid_tls_ctx_t *braid__tls_ctx_sni(braid_tls_ctx_t *ctx, const char *server_name);

/* Counter events, for conn.c and the engine. */
typedef enum {
  BRAID__TLS_EV_HANDSHAKE,
  BRAID__TLS_EV_RESUMED,
  BRAID__TLS_EV_FAILED,
  BRAID__TLS_EV_TIMEOUT,
  BRAID__TLS_EV_VERIFY,
  BRAID__TLS_EV_RENEG,
  BRAID__TLS_EV_TRUNCATED,
} braid__tls_event_t;
void braid__tls_ctx_count(braid_tls_ctx_t *ctx, braid__tls_event_t ev);

#endif
