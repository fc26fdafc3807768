/* braid: connection pools.
 *
 * A pool keeps rpc client channels (braid/rpc.h) to one or more endpoints (host:port) and
 * sends each request on one of them, so callers neither connect per request nor manage
 * connections:
 * - limits: connections per endpoint, in total, idle connections kept, and idle ones made
 *   ahead of need per endpoint (pre-warm);
 * - an idle timeout, and a maximum lifetime drawn per connection from [L * (1 - jitter), L]
 *   so a fleet does not reconnect in lockstep;
 * - pipelining: a connection carries up to rpc.max_inflight requests at once, so a few
 *   connections carry thousands of concurrent requests; the most recently used connection
 *   with room is picked first, so spare connections go idle and time out;
 * - a bounded FIFO wait queue when no connection has room and no more may be opened, with
 *   an acquire timeout (BRAID_EPOOLFULL when the queue is full, BRAID_ETIMEDOUT when a
 *   waiter got no room in time);
 * - balancing across endpoints (round-robin or least-outstanding), and ejection of an
 *   endpoint whose connects keep failing, for a doubling backoff, after which one connection
 *   attempt probes it back; while every endpoint is ejected, calls fail fast with
 *   BRAID_EUNAVAILABLE instead of waiting out their acquire timeout (gRPC's default outside
 *   "wait for ready"), unless wait_for_ready is set;
 * - a request that fails because a reused connection turned out dead is sent once more on a
 *   fresh connection when the caller marked it idempotent (never otherwise);
 * - a channel can be leased for exclusive use (braid_pool_acquire), e.g. to run a batcher.
 *
 * The pool owns its channels: the rpc pointer a callback receives is for reading the result
 * and the channel's stats, not for closing or calling (except a leased one).
 * A pool belongs to its loop's thread, like everything on the loop. */
#ifndef BRAID_POOL_H
#define BRAID_POOL_H

#include "common.h"
#include "client.h"
#include "error.h"
#include "loop.h"
#include "rpc.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_pool_s braid_pool_t;
typedef struct braid_pool_lease_s braid_pool_lease_t;

/* braid_pool_acquire() finished: status 0 and a channel for your exclusive use (rpc) until
 * braid_pool_release(lease); or BRAID_ETIMEDOUT (no channel free within acquire_timeout_ms),
 * BRAID_EUNAVAILABLE (every endpoint got ejected while it waited; see wait_for_ready),
 * BRAID_ECANCELED (the pool closed first) or BRAID_ENOMEM, with lease and rpc NULL. Exactly
 * once. */
typedef void (*braid_pool_acquire_cb)(braid_pool_t *pool, int status, braid_pool_lease_t *lease,
                                      braid_rpc_t *rpc, void *arg);

/* The pool is closed: every call has completed and every connection is closed. status is 0
 * (a pool closes only when asked). The pool is freed when this returns. Exactly once per
 * accepted braid_pool_close(). */
typedef void (*braid_pool_close_cb)(braid_pool_t *pool, int status, void *arg);

typedef enum {
  BRAID_POOL_ROUND_ROBIN = 0,      /* endpoints in turn */
  BRAID_POOL_LEAST_OUTSTANDING = 1 /* the endpoint with the fewest requests in flight */
} braid_pool_balance_t;

/* braid_pool_call() flags. */
enum {
  /* The request may be sent twice without harm: if the reused connection it went out on
   * turns out dead (a connection error, not a timeout, not an answer), it is sent once more
   * on a connection opened after the failure. */
  BRAID_POOL_IDEMPOTENT = 1u << 0,
};

typedef struct braid_pool_opts_s {
  /* How connections are made: socket and connection options, connect timeout, and retries
   * with backoff inside one connect (defaults of braid_client_opts_init()). Bounds: exactly
   * what braid_connect() accepts (braid/client.h), checked by the same code. With
   * client.tls set, every endpoint is reached over TLS, its certificate verified against
   * that endpoint's own host name (and SNI sent for it); the pool holds a reference on the
   * context until it is freed. */
  braid_client_opts_t client;
  /* The channel on each connection: mode, framer, max payload, default request timeout;
   * max_inflight is the per-connection pipelining cap (set it to 1 for one request per
   * connection at a time). The pool's channels have no user callbacks (the pool follows
   * their closes through a hook of its own) and their user data is left to you (e.g. on a
   * leased channel). Bounds: exactly what braid_rpc_client() accepts (braid/rpc.h), checked
   * by braid_rpc_opts_validate(), so a bad value fails braid_pool_new(), not every
   * connect. */
  braid_rpc_opts_t rpc;
  /* Connections per endpoint (open, connecting and closing ones all count). Default 8;
   * bounds 1..65536. */
  unsigned max_per_endpoint;
  /* Connections in the whole pool, counted the same way. Default 64; bounds 1..(1 << 20). */
  unsigned max_total;
  /* Idle connections (open, nothing in flight) kept in the whole pool; beyond it the least
   * recently used idle one closes. Default 16; bounds 0..(1 << 20). */
  unsigned max_idle;
  /* Idle connections per endpoint opened ahead of need and kept through idle timeouts
   * (within max_idle, max_per_endpoint and max_total). Default 0; bounds
   * 0..max_per_endpoint. */
  unsigned min_idle;
  /* An idle connection closes after this long without a request. 0 = never. Default
   * 60000; bounds 0..(1 << 31). */
  uint64_t idle_timeout_ms;
  /* A connection is not handed out after its lifetime, drawn from
   * [max_lifetime_ms * (1 - lifetime_jitter), max_lifetime_ms], and closes once its
   * requests have completed. 0 = no limit (default); bounds 0..(1 << 31). Jitter default
   * 0.1; bounds 0.0..1.0. */
  uint64_t max_lifetime_ms;
  double lifetime_jitter;
  /* Calls and lease requests waiting for room beyond what the connections being opened will
   * carry; one more fails with BRAID_EPOOLFULL (synchronously: the callback is not called).
   * How waiting works: a call goes to a connection with room (fewer than rpc.max_inflight
   * in flight); when none has room it waits, in FIFO order, and the pool opens connections
   * for the waiters, as many as they need (one per rpc.max_inflight waiting calls, one per
   * waiting lease) within max_per_endpoint and max_total. Waiters a connection being opened
   * will carry do not count against max_waiters. So a burst of 3000 calls on a pool with one
   * connection open, max_per_endpoint 4 and max_inflight 1024 puts 1024 in flight, waits
   * with 1976 while three more connections open, and refuses none; only calls beyond
   * max_waiters + (connections being opened) x max_inflight are refused. The queue holds at
   * most max_waiters + max_total x rpc.max_inflight calls. Default 1024; bounds
   * 0..(1 << 24) (0: a call waits only for a connection being opened for it). */
  unsigned max_waiters;
  /* A call that waited this long for room fails with BRAID_ETIMEDOUT. Default 5000;
   * bounds 1..(1 << 31). */
  uint64_t acquire_timeout_ms;
  braid_pool_balance_t balance; /* default BRAID_POOL_ROUND_ROBIN */
  /* Consecutive failed connects to an endpoint that eject it (a connection that fails
   * after it was established does not count: peers restart). An ejected endpoint gets no
   * calls and no connects; what calls do while every endpoint is ejected is wait_for_ready's
   * choice. Default 3; bounds 1..1000. */
  unsigned eject_after_failures;
  /* Ejection length: eject_base_ms, doubling with each consecutive ejection, at most
   * eject_max_ms. Then one connect attempt probes the endpoint: success ends its ejections,
   * failure ejects it again. Defaults 1000 and 30000; bounds base 1..(1 << 31),
   * max base..(1 << 31). */
  uint64_t eject_base_ms;
  uint64_t eject_max_ms;
  /* What calls and lease requests do while every endpoint is ejected (the pool cannot send
   * anything until a probe brings one back, which takes at least the rest of the shortest
   * ejection).
   * 0 (default), fail fast: braid_pool_call() and braid_pool_acquire() return
   * BRAID_EUNAVAILABLE at once (the callback is not called), and the moment the last
   * endpoint is ejected, every call and lease request already waiting completes with
   * BRAID_EUNAVAILABLE, exactly once (retries of refused or idempotent calls included).
   * The caller learns in one connect-failure round trip that the service is down, instead
   * of after acquire_timeout_ms, and can shed load or try elsewhere.
   * 1, wait for ready: they wait in the queue as they would for room, until a probe
   * succeeds (then they are served in order) or acquire_timeout_ms passes (BRAID_ETIMEDOUT).
   * Either way probes go on by themselves, calls or not: the first endpoint back makes the
   * pool usable again. While some endpoint is not ejected (or being probed), nothing fails
   * fast. Bounds 0..1. */
  int wait_for_ready;
} braid_pool_opts_t;

/* One endpoint's state and counters. */
typedef struct braid_pool_endpoint_stats_s {
  int port;
  uint64_t open;        /* connections established and not closed */
  uint64_t connecting;  /* connects in progress */
  uint64_t outstanding; /* requests in flight on its connections now */
  uint64_t calls;       /* requests sent to it (retries counted again) */
  uint64_t connect_failures; /* failed connects, all time */
  uint64_t ejections;   /* times ejected, all time */
  int ejected;          /* nonzero while ejected */
  uint64_t ejected_for_ms; /* while ejected: how long until it is probed */
} braid_pool_endpoint_stats_t;

/* The pool's counters. Connection states: open = established and not yet closed, of which
 * idle (nothing in flight) and busy (requests in flight); connecting = connects pending. */
typedef struct braid_pool_stats_s {
  uint64_t open, idle, busy, connecting;
  uint64_t waiting;  /* calls in the wait queue now */
  uint64_t inflight; /* calls on connections now */
  uint64_t leased;   /* leases not released yet */
  uint64_t calls;    /* calls accepted */
  uint64_t waits;    /* calls that had to wait for room */
  uint64_t wait_timeouts; /* waiters failed with BRAID_ETIMEDOUT */
  uint64_t rejected; /* calls refused with BRAID_EPOOLFULL */
  uint64_t creates;  /* connections established */
  uint64_t connect_failures;
  uint64_t reuses;   /* requests sent on a connection that had carried one before */
  uint64_t closes_idle;     /* closed by the idle timeout or max_idle */
  uint64_t closes_lifetime; /* closed at the end of their lifetime */
  uint64_t closes_error;    /* closed by the peer or an error */
  uint64_t ejections;
  uint64_t retries; /* requests sent again (idempotent, or refused by a goaway) */
  uint64_t unavailable; /* calls and lease requests failed fast: every endpoint ejected */
  braid_histogram_t wait_time_us; /* how long waiters waited for room, microseconds */
} braid_pool_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_pool_opts_init(braid_pool_opts_t *o);

/* Checks every field against its documented bounds (client with braid_client_opts_validate,
 * reported as "client.<field>"; rpc with braid_rpc_opts_validate, as "rpc.<field>").
 * Returns 0, or BRAID_EINVAL with the field and the reason in *err (err may be NULL).
 * braid_pool_new() runs this check. */
BRAID_EXTERN int braid_pool_opts_validate(const braid_pool_opts_t *o, braid_opts_error_t *err);

/* Creates an empty pool on loop (o copied; NULL = defaults). The pool counts as a live
 * object on the loop (braid_loop_close() refuses) until its close callback ran. Returns 0,
 * BRAID_EINVAL (bad argument or option: nothing made; braid_pool_opts_validate() says which,
 * and the loop's log hook is told), BRAID_ECLOSED or BRAID_ENOMEM. */
BRAID_EXTERN int braid_pool_new(braid_pool_t **out, braid_loop_t *loop,
                                const braid_pool_opts_t *o);

/* The pool's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_pool_set_data(braid_pool_t *pool, void *data);
BRAID_EXTERN void *braid_pool_get_data(const braid_pool_t *pool);

/* Adds the endpoint host (a name or an IP literal; copied) : port (1..65535). Connections
 * to it open on demand, or now for min_idle. Returns 0, BRAID_EINVAL, BRAID_ECLOSED
 * (closing) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_pool_add_endpoint(braid_pool_t *pool, const char *host, int port);

/* Like braid_pool_add_endpoint(), with the endpoint's own TLS context (braid/tls.h; a
 * client one): its connections use tls instead of opts.client.tls (e.g. another CA, or a
 * client certificate for this endpoint only); NULL = the pool's. The certificate is
 * verified against host, which is also sent as SNI. The pool holds a reference on tls until
 * it is freed. Returns 0, BRAID_EINVAL (also for a server context), BRAID_ECLOSED or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_pool_add_endpoint_tls(braid_pool_t *pool, const char *host, int port,
                                             braid_tls_ctx_t *tls);

/* Sends a request (data[0..len) is copied) on a pooled connection, waiting for room if
 * needed, and calls cb exactly once, never from inside this call, as braid_rpc_call() does:
 * - the answer, or BRAID_EREMOTE, BRAID_ETIMEDOUT (timeout_ms passed once sent; 0 takes
 *   rpc.timeout_ms), or the connection error, with rpc the channel that carried it (valid
 *   during the callback only; do not call or close it);
 * - BRAID_ETIMEDOUT with rpc NULL when it waited acquire_timeout_ms without getting room;
 * - BRAID_ECANCELED (rpc NULL or not) when the pool was closed first.
 * A request the server did not take (BRAID_EGOAWAY, or BRAID_EREMOTE with remote code
 * BRAID_WIRE_SHUTTING_DOWN: it came after the server's goaway) is sent once more on a fresh
 * connection whatever the flags: it cannot have had an effect. With BRAID_POOL_IDEMPOTENT, one
 * that failed by a connection error (not BRAID_EREMOTE, not BRAID_ETIMEDOUT) on a reused
 * connection is sent once more too; a request is sent at most twice in all, and the second
 * result is the one reported (the first, when every endpoint is ejected at that moment and
 * wait_for_ready is 0: it is not sent again).
 * - BRAID_EUNAVAILABLE with rpc NULL when it was waiting (for room, or for its second send)
 *   and the last endpoint that was not ejected got ejected (unless wait_for_ready).
 * flags: 0 or BRAID_POOL_IDEMPOTENT. Returns 0, BRAID_EINVAL (bad argument, or no endpoint
 * added), BRAID_ETOOBIG (braid mode: over BRAID_FRAME_MAX_PAYLOAD_CEILING), BRAID_EPOOLFULL
 * (the wait queue is full), BRAID_EUNAVAILABLE (every endpoint is ejected now and
 * wait_for_ready is 0), BRAID_ECLOSED (closing) or BRAID_ENOMEM; then cb is never called.
 * See max_waiters for when a call waits and when it is refused. */
BRAID_EXTERN int braid_pool_call(braid_pool_t *pool, const void *data, size_t len,
                                 unsigned flags, uint64_t timeout_ms, braid_rpc_response_cb cb,
                                 void *arg);

/* Takes a channel for exclusive use, e.g. to run a braid_batcher_t on it: an open
 * connection with nothing in flight, chosen like a call's (balancing, most recently used
 * first), or a new one. The request waits in the same FIFO as calls, with the same acquire
 * timeout and max_waiters. cb runs exactly once, never from inside this call. While leased
 * the pool sends nothing on the channel, and neither the idle timeout nor the lifetime
 * closes it. Use rpc only through braid_rpc_call()/batchers, do not close it; if its
 * connection fails the channel refuses calls with BRAID_ECLOSED (the lease still needs its
 * release). Returns 0, BRAID_EINVAL (no endpoint), BRAID_EPOOLFULL, BRAID_EUNAVAILABLE
 * (as braid_pool_call()), BRAID_ECLOSED or BRAID_ENOMEM; then cb is never called. */
BRAID_EXTERN int braid_pool_acquire(braid_pool_t *pool, braid_pool_acquire_cb cb, void *arg);

/* Gives a leased channel back to the pool (exactly once per lease; free any batcher on it
 * first), also when the channel has closed meanwhile. Requests you left in flight on it make
 * the pool close it: they complete with BRAID_ECANCELED, from inside this call. Returns 0, or
 * BRAID_EINVAL (NULL, or released already: nothing changes).
 * A lease handle stays readable memory until the pool's close callback, so a second release
 * is caught safely, whether the channel closed or not; and the pool reuses a released handle
 * for a new lease only after 64 other leases were released after it, so a stale handle does
 * not release someone else's lease unless that many releases came in between. After the
 * pool's close callback (which waits for every lease's release) a handle must not be used. */
BRAID_EXTERN int braid_pool_release(braid_pool_lease_t *lease);

/* Closes the pool: waiters and requests in flight complete with BRAID_ECANCELED (some from
 * inside this call), connects are cancelled, connections (leased ones too) close, then,
 * once every lease is released, close_cb (may be NULL) runs once, never from inside this
 * call. Closing from a pool callback is allowed. Returns
 * 0, BRAID_EINVAL (pool NULL) or BRAID_ECLOSED (already closing; close_cb will not run). */
BRAID_EXTERN int braid_pool_close(braid_pool_t *pool, braid_pool_close_cb close_cb, void *arg);

/* Copies the pool's counters into out (a large struct: it holds a histogram). */
BRAID_EXTERN void braid_pool_stats(const braid_pool_t *pool, braid_pool_stats_t *out);

/* Copies the counters of the index-th endpoint added (0-based). Returns 0 or BRAID_EINVAL
 * (no such endpoint). */
BRAID_EXTERN int braid_pool_endpoint_stats(const braid_pool_t *pool, unsigned index,
                                           braid_pool_endpoint_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
