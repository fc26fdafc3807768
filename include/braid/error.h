/* braid: error codes.
 *
 * Every braid function that can fail returns 0 on success or a negative error code. Codes
 * from libuv (UV_ECONNRESET, UV_EOF, ...) pass through unchanged; braid's own codes live in a
 * separate range (-30000 and below) so the two never collide. Common conditions are spelled
 * with braid names that alias the libuv code (BRAID_EINVAL == UV_EINVAL), so a caller can
 * compare against either. */
#ifndef BRAID_ERROR_H
#define BRAID_ERROR_H

#include "common.h"

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Aliases of libuv codes, for readability in braid code and callers. */
#define BRAID_EINVAL UV_EINVAL       /* an argument or option is out of its documented bounds */
#define BRAID_ENOMEM UV_ENOMEM       /* an allocation failed */
#define BRAID_ETIMEDOUT UV_ETIMEDOUT /* a deadline passed */
#define BRAID_ECANCELED UV_ECANCELED /* the operation was cancelled, usually by a close */
#define BRAID_ENOTSUP UV_ENOTSUP     /* the platform or build lacks the feature */
#define BRAID_EBUSY UV_EBUSY         /* the object still has work or handles outstanding */
#define BRAID_EOF UV_EOF             /* the peer closed its sending side */

/* braid's own codes: XX(name, value, message). One list drives the enum, braid_err_name()
 * and braid_strerror(). Values are stable across releases; new codes are appended. */
#define BRAID_ERRNO_MAP(XX)                                                                     \
  XX(ETOOBIG, -30001, "message exceeds the configured maximum size")                            \
  XX(EPROTO, -30002, "protocol violation by the peer")                                          \
  XX(EPOOLFULL, -30003, "pool wait queue is full")                                              \
  XX(ECLOSED, -30004, "handle is closing or closed")                                            \
  XX(EQUEUEFULL, -30005, "write queue is over its hard limit")                                  \
  XX(ECORRUPT, -30006, "compressed data is corrupt")                                            \
  XX(ETRUNCATED, -30007, "input ended before the end of the stream")                            \
  XX(ETRAILING, -30008, "trailing data after the end of the stream")                            \
  XX(EBADCRC, -30009, "checksum mismatch")                                                      \
  XX(EBADSIZE, -30010, "gzip length trailer (ISIZE) mismatch")                                  \
  XX(EBADHCRC, -30011, "gzip header checksum mismatch")                                         \
  XX(EBADMETHOD, -30012, "unknown compression method or header")                                \
  XX(EOUTPUTCAP, -30013, "decompressed output exceeds the configured cap")                      \
  XX(ERATIO, -30014, "decompression ratio exceeds the configured cap")                          \
  XX(EMEMBERS, -30015, "too many gzip members")                                                 \
  XX(ENOTFOUND, -30016, "no such entry")                                                        \
  XX(ETOOMANYWAITERS, -30017, "too many waiters")                                               \
  XX(EREMOTE, -30018, "the peer answered with an error")                                        \
  XX(EGOAWAY, -30019, "the peer is shutting down")                                            \
  XX(EUNAVAILABLE, -30020, "no endpoint is available: every one is ejected")                 \
  XX(EDNSNOTFOUND, -30021, "host name not found: the DNS says no such name exists")           \
  XX(EDNSNODATA, -30022, "host name has no address of the family asked for")                  \
  XX(EDNSTIMEOUT, -30023, "DNS lookup timed out: no name server answered")                    \
  XX(EDNSFAIL, -30024, "DNS lookup failed: the server failed, refused, or answered garbage") \
  XX(ETLS, -30025, "TLS failure (handshake, record or alert; braid_tls_error_text says which)") \
  XX(ETLSVERIFY, -30026, "the peer's TLS certificate is not trusted (unknown CA, self-signed, "  \
                         "or none sent)")                                                      \
  XX(ETLSHOSTNAME, -30027, "the peer's TLS certificate does not match the host name")          \
  XX(ETLSEXPIRED, -30028, "the peer's TLS certificate has expired or is not yet valid")

typedef enum {
#define BRAID_ERR_ENUM_(name, value, msg) BRAID_##name = (value),
  BRAID_ERRNO_MAP(BRAID_ERR_ENUM_)
#undef BRAID_ERR_ENUM_
} braid_errno_t;

/* Positive results: a few calls return a documented positive value that is neither success
 * nor an error. XX(name, value, message); each has its own value, so braid_err_name() and
 * braid_strerror() name it. */
#define BRAID_RESULT_MAP(XX)                                                                       \
  XX(GZIP_SKIPPED, 1, "input shorter than min_size_bytes: nothing compressed, send it as is")      \
  XX(GZIP_DONE, 2, "the stream is complete")                                                       \
  XX(PENDING, 3, "the result will be delivered to the callback")

typedef enum {
#define BRAID_RESULT_ENUM_(name, value, msg) BRAID_##name = (value),
  BRAID_RESULT_MAP(BRAID_RESULT_ENUM_)
#undef BRAID_RESULT_ENUM_
} braid_result_t;

/* Why an options struct was refused (docs/API.md rule 2): filled by every
 * braid_*_opts_validate() that returns BRAID_EINVAL. */
typedef struct braid_opts_error_s {
  /* The offending field as a path from the struct validated, e.g.
   * "conn.high_watermark_bytes"; "" when there is no error. */
  char field[64];
  /* Why, in words, with the values involved, e.g. "1048576 exceeds conn.max_queue_bytes
   * (65536); lower it too". */
  char reason[192];
} braid_opts_error_t;

/* Returns a human-readable message for any code: braid's own, libuv's, a positive result
 * (BRAID_RESULT_MAP), or 0 ("success"). Unknown codes give "unknown error". The string is
 * static; never NULL. */
BRAID_EXTERN const char *braid_strerror(int code);

/* Returns the code's symbolic name ("BRAID_ETOOBIG", "ECONNRESET", "BRAID_GZIP_DONE", "OK").
 * Static; never NULL; unknown codes give "UNKNOWN". */
BRAID_EXTERN const char *braid_err_name(int code);

#ifdef __cplusplus
}
#endif
#endif
