/* braid: TCP clients.
 *
 * braid_connect() resolves a host name on the loop with a braid_resolver_t (dns.h: c-ares,
 * asynchronous, cached for the answer's TTL; no libuv threadpool thread is used, so a slow
 * DNS server cannot hold up gzip offload or memo loaders), tries the addresses it gets in
 * order, with a timeout per attempt, and retries the whole thing with exponential backoff
 * and jitter, then hands over a braid_conn_t tuned with the given socket options. IPv4 and
 * IPv6. */
#ifndef BRAID_CLIENT_H
#define BRAID_CLIENT_H

#include "common.h" /* first: its feature check must come before <uv.h> */
#include <uv.h>

#include "conn.h"
#include "dns.h"
#include "error.h"
#include "loop.h"
#include "sockopts.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_connect_s braid_connect_t;

/* The connect finished: status 0 and conn set (set its callbacks and start reading), or a
 * negative code and conn NULL: the last attempt's error (UV_ECONNREFUSED, BRAID_ETIMEDOUT
 * for a connect attempt that timed out, ...), the lookup's (BRAID_EDNSNOTFOUND,
 * BRAID_EDNSNODATA, BRAID_EDNSTIMEOUT, BRAID_EDNSFAIL: see braid_resolve_cb in dns.h), or
 * BRAID_ECANCELED after braid_connect_cancel(). Exactly once. */
typedef void (*braid_connect_cb)(braid_connect_t *req, int status, braid_conn_t *conn, void *arg);

typedef struct braid_client_opts_s {
  braid_sockopts_t sockopts;  /* applied before connecting (buffers) and after (the rest) */
  braid_conn_opts_t conn;     /* for the connection made */
  /* Timeout of one connection attempt to one address. Default 10000. 0 = none (the
   * kernel's own, minutes). Bounds 0..(1 << 31). */
  uint64_t connect_timeout_ms;
  /* Extra rounds after the first fails (each round tries every resolved address). Default
   * 0. Bounds 0..1000. */
  unsigned retries;
  /* Backoff before retry k (1-based): min(max, initial * 2^(k-1)), then jittered to a random
   * value in [d * (1 - jitter), d]. Defaults 100 ms, 10000 ms, 0.5. Bounds: initial
   * 1..(1 << 31), max >= initial, jitter 0.0..1.0. */
  uint64_t backoff_initial_ms;
  uint64_t backoff_max_ms;
  double backoff_jitter;
  /* AF_UNSPEC (default), AF_INET or AF_INET6: which addresses to use. An IP literal host of
   * the other family is BRAID_EINVAL. */
  int family;
  /* The resolver that looks names up (dns.h), on the same loop as the connect; it must stay
   * open while connects use it (closing it fails their lookups with BRAID_ECANCELED). NULL
   * (the default) = the loop's own: default resolver options, made on the first connect to
   * a name and closed by braid_loop_close(). */
  braid_resolver_t *resolver;
  /* Speak TLS with this client context (braid/tls.h; role BRAID_TLS_CLIENT), or NULL
   * (default) for plain TCP. The host given to braid_connect() is sent as SNI (unless an IP
   * literal) and the server's certificate is checked against it; the callback runs once the
   * handshake is done, or with its failure (BRAID_ETLSVERIFY, BRAID_ETLSHOSTNAME,
   * BRAID_ETLSEXPIRED, BRAID_ETLS, BRAID_ETIMEDOUT), which is not retried. The request
   * holds a reference on the context while it runs. */
  braid_tls_ctx_t *tls;
} braid_client_opts_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_client_opts_init(braid_client_opts_t *o);

/* Checks every field against its documented bounds (sockopts and conn with their own
 * validators, reported as "sockopts.<field>" and "conn.<field>"). Returns 0, or BRAID_EINVAL
 * with the field and the reason in *err (err may be NULL). braid_connect() runs this check. */
BRAID_EXTERN int braid_client_opts_validate(const braid_client_opts_t *o, braid_opts_error_t *err);

/* Starts connecting to host (a name or an IP literal) and port (1..65535). o is copied (NULL
 * = defaults). A name is looked up again before each retry round (answered from the
 * resolver's cache while the answer's TTL lives); a literal is not looked up.
 * The request counts as a live object on loop (braid_loop_close() refuses) until cb runs.
 * Returns 0 (cb will be called exactly once, never from inside this call),
 * BRAID_EINVAL (bad argument or option: braid_client_opts_validate() says which, and the
 * loop's log hook is told; a name braid_resolve() refuses; a resolver of another loop),
 * BRAID_ECLOSED (the loop or the resolver is closing), BRAID_ETOOMANYWAITERS (the
 * resolver's queue is full) or BRAID_ENOMEM (cb will not be called). If req
 * is not NULL it receives a handle for braid_connect_cancel(), valid until cb returns. */
BRAID_EXTERN int braid_connect(braid_connect_t **req, braid_loop_t *loop, const char *host,
                               int port, const braid_client_opts_t *o, braid_connect_cb cb,
                               void *arg);

/* Cancels a pending connect: cb runs once with BRAID_ECANCELED (from inside this call when
 * the request was waiting on a timer or a lookup; otherwise once the pending connect attempt
 * has been stopped) and nothing stays open. Cancelling twice is harmless. Returns 0,
 * BRAID_EINVAL (req NULL), or BRAID_ECLOSED if cb is running (req is invalid after it
 * returned). */
BRAID_EXTERN int braid_connect_cancel(braid_connect_t *req);

#ifdef __cplusplus
}
#endif
#endif
