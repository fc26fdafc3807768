/* braid: TCP servers.
 *
 * A server listens on one address and hands each accepted connection to a callback, already
 * tuned with the server's socket options and carrying its connection options. It enforces a
 * connection cap (accepting pauses at the cap and resumes below it), survives running out of
 * file descriptors without spinning, drains gracefully (stop accepting, let connections
 * finish until a deadline, then close them), and can serve on several cores: with workers =
 * N it runs N accepting loops, the caller's and N - 1 threads of its own, each with its own
 * SO_REUSEPORT listener, so the kernel spreads connections across them (Tornado's
 * server.start(0), or nginx's workers, but threads, so it embeds). */
#ifndef BRAID_SERVER_H
#define BRAID_SERVER_H

#include "common.h" /* first: its feature check must come before <uv.h> */
#include <uv.h>

#include "conn.h"
#include "error.h"
#include "loop.h"
#include "sockopts.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_server_s braid_server_t;

/* A new connection was accepted. Runs on the accepting loop's thread: with workers > 1 that
 * is a worker thread (braid_conn_loop(conn) tells which loop), so the callback and what it
 * touches must be safe to run on several threads at once. Set the connection's callbacks and
 * start reading here; a connection left without callbacks is still closed by drain/close.
 * Anything else you open on a worker's loop must be closed by the time its connections are,
 * or the worker (and the drain) waits for it. data is the server's user data
 * (braid_server_get_data()). To reach every worker's loop later, see braid_server_post(). */
typedef void (*braid_connection_cb)(braid_server_t *server, braid_conn_t *conn, void *data);

/* Called on the loop that created the server. For braid_server_close()/drain(): once every
 * connection and listener is closed and worker threads have exited (never from inside the
 * drain/close call itself); status 0, or BRAID_ETIMEDOUT if a drain with a deadline > 0 had
 * to close connections at that deadline (braid_server_close() reports 0). The server is freed
 * when this returns. */
typedef void (*braid_server_close_cb)(braid_server_t *server, int status, void *arg);

typedef struct braid_server_opts_s {
  braid_sockopts_t sockopts;   /* listener and accepted connections */
  /* Every accepted connection. Servers start with timeouts on, so no peer holds a
   * connection forever; loosen them explicitly (0 = off) for long-lived quiet connections or
   * slow links. The defaults follow nginx's:
   * - conn.idle_timeout_ms = 75000: nothing read or written for 75 s (nginx's
   *   keepalive_timeout). Longer than a braid pool's idle timeout (60 s), so a pooled client
   *   retires an idle connection before the server closes it under a request.
   * - conn.write_timeout_ms = 60000: queued output made no progress for 60 s, a peer that
   *   stopped reading (nginx's send_timeout); the connection is reset.
   * - conn.message_timeout_ms = 60000: a request that began to arrive must be complete
   *   within 60 s of reading time (nginx's client_header_timeout), which stops peers that
   *   trickle bytes; armed by rpc channels. A 16 MiB request needs about 2.2 Mbit/s.
   * - conn.read_timeout_ms stays 0: the idle timeout already bounds a silent peer.
   * A server that holds requests longer than 75 s without a byte either way (long
   * computations, long polls) raises idle_timeout_ms. */
  braid_conn_opts_t conn;
  /* Accepting pauses while this many connections are open (per server, across workers):
   * clients beyond the cap wait in the kernel's listen backlog (sockopts.backlog), none is
   * accepted and dropped. 0 = no cap (the default). Bounds 0..(1 << 24). */
  unsigned max_connections;
  /* Accepting loops: 1 = the caller's loop only (default); N > 1 = the caller's loop and
   * N - 1 threads; 0 = one per CPU (uv_available_parallelism()). Bounds 0..256. */
  unsigned workers;
  /* Bandwidth cap for the whole server, each direction, in bytes/s (0 = none). With
   * workers, each loop gets rate / workers. Bounds 0..(1 << 40). When set, it replaces
   * conn.send_group / conn.recv_group; those may only be set with workers == 1 (a group
   * bucket belongs to one loop), otherwise braid_server_new() returns BRAID_EINVAL. */
  uint64_t send_rate_bytes_per_s;
  uint64_t recv_rate_bytes_per_s;
  /* After accept() fails with EMFILE/ENFILE, accepting pauses this long before trying again
   * (so the loop does not spin). Default 100. Bounds 1..60000. */
  uint64_t accept_backoff_ms;
  /* Serve TLS with this server context (braid/tls.h; role BRAID_TLS_SERVER), or NULL
   * (default) for plain TCP. Each accepted connection does its handshake first (bounded by
   * the context's handshake_timeout_ms, and counted in the connection cap), and reaches the
   * connection callback only once it is done: a peer that fails it never does (the context's
   * stats count it). The server holds a reference on the context until it is freed;
   * braid_tls_ctx_reload() on it changes the certificate for later connections. */
  braid_tls_ctx_t *tls;
} braid_server_opts_t;

/* Counters for a server, summed over its workers. */
typedef struct braid_server_stats_s {
  uint64_t accepted;        /* connections accepted */
  uint64_t active;          /* connections open now */
  uint64_t accept_errors;   /* failed accept() calls (EMFILE, ENFILE, ...) */
  uint64_t cap_pauses;      /* times accepting paused at max_connections */
} braid_server_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_server_opts_init(braid_server_opts_t *o);

/* Checks every field against its documented bounds (sockopts and conn with their own
 * validators, reported as "sockopts.<field>" and "conn.<field>": lowering
 * conn.max_queue_bytes below the default 1 MiB high watermark is reported as
 * conn.high_watermark_bytes, with both values). Returns 0, or BRAID_EINVAL with the field
 * and the reason in *err (err may be NULL). braid_server_new() runs this check. */
BRAID_EXTERN int braid_server_opts_validate(const braid_server_opts_t *o, braid_opts_error_t *err);

/* Creates a server on loop with options o (copied; NULL = defaults). on_connection is
 * required. The server counts as a live object on loop (braid_loop_close() refuses) until its
 * close callback ran. Every braid_server_* call must come from loop's thread; with workers > 1
 * the worker threads' loops copy loop's log hook. Returns 0, BRAID_EINVAL (bad option:
 * nothing made; braid_server_opts_validate() says which field and why, and the loop's log
 * hook is told), BRAID_ECLOSED (loop is closing) or BRAID_ENOMEM. data becomes the server's
 * user data (braid_server_set_data()), passed to on_connection. */
BRAID_EXTERN int braid_server_new(braid_server_t **out, braid_loop_t *loop,
                                  const braid_server_opts_t *o, braid_connection_cb on_connection,
                                  void *data);

/* Binds host (an IPv4 or IPv6 literal, e.g. "127.0.0.1", "::1", "0.0.0.0", "::") and port
 * (0 = an ephemeral port; read it back with braid_server_address()), and starts accepting on
 * every worker (starting the worker threads). Returns 0, BRAID_EINVAL (bad address or port,
 * or already listening), BRAID_ECLOSED (drain/close started), or the socket/bind/listen or
 * thread start error (UV_EADDRINUSE, ...), in which case nothing listens and the call may be
 * retried. */
BRAID_EXTERN int braid_server_listen(braid_server_t *server, const char *host, int port);

/* The bound address (with the real port when 0 was asked). Returns 0, or BRAID_EINVAL when
 * not listening. */
BRAID_EXTERN int braid_server_address(const braid_server_t *server, struct sockaddr_storage *out);

/* The bound port, or -1 when not listening. */
BRAID_EXTERN int braid_server_port(const braid_server_t *server);

/* Graceful drain: stops accepting at once, lets open connections finish, and after
 * deadline_ms closes the ones still open (braid_conn_close: their queued writes still
 * flush). Connections that carry a braid-protocol rpc server channel (braid/rpc.h) are
 * asked to finish at once: each channel sends GOAWAY (code BRAID_WIRE_OK, as
 * braid_rpc_goaway()), so its client sends nothing new there (requests it sent before it
 * saw the GOAWAY fail with BRAID_EGOAWAY, safe to retry elsewhere; a pool does so itself)
 * and the connection closes as soon as the requests taken are answered, not at the
 * deadline. Every other connection (raw connections, ordered-mode channels' connections)
 * gets its on_drain callback (braid/conn.h), on its own loop, once: finish what is in
 * progress and close it, or it lasts until the deadline. When everything is closed (worker
 * loops too: see braid_server_post()), cb(server, status) runs once and the server is freed.
 * deadline_ms 0 closes open connections at once. Returns 0, or BRAID_ECLOSED if a drain or
 * close already started (cb will not be called). */
BRAID_EXTERN int braid_server_drain(braid_server_t *server, uint64_t deadline_ms,
                                    braid_server_close_cb cb, void *arg);

/* Closes the server now: same as braid_server_drain(server, 0, cb, arg). cb may be NULL. */
BRAID_EXTERN int braid_server_close(braid_server_t *server, braid_server_close_cb cb, void *arg);

/* Copies the server's counters into out. The counters are atomics, so this may also be called
 * from a worker's connection callback; the sum is a snapshot, not a consistent cut. */
BRAID_EXTERN void braid_server_stats(const braid_server_t *server, braid_server_stats_t *out);

/* Number of accepting loops (resolved value of opts.workers). Any thread. */
BRAID_EXTERN unsigned braid_server_workers(const braid_server_t *server);

/* The server's user data (docs/API.md rule 3), passed to on_connection on every worker:
 * braid never reads it. Starts as the data given to braid_server_new(). Set it before
 * braid_server_listen() (worker threads read it); get it from any thread. */
BRAID_EXTERN void braid_server_set_data(braid_server_t *server, void *data);
BRAID_EXTERN void *braid_server_get_data(const braid_server_t *server);

/* Posts fn(arg) to accepting loop index (0 .. braid_server_workers() - 1; 0 is the loop
 * the server was made on), to run on that loop's thread: how a program reaches its worker
 * loops, e.g. to tell every worker's connections something (a config reload, a drain of its
 * own), without a registry of its own. To reach them all, post to each index. Thread-safe:
 * any thread, including a worker's, until the server's close callback has run.
 * Worker loops (index >= 1) live from braid_server_listen() until the drain or close has
 * closed every connection on them (and what you opened on them: see braid_connection_cb);
 * then each worker thread closes its loop and exits, and once all have, the close callback
 * runs on the server's loop. A post accepted before a worker's loop closes still runs (from
 * inside that close). Returns 0 (fn will run exactly once), BRAID_EINVAL (server or fn NULL,
 * index out of range), BRAID_ECLOSED (that worker's loop is not running: before listen, or
 * closed after a drain; fn will not run) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_server_post(braid_server_t *server, unsigned index, braid_post_fn fn,
                                   void *arg);

#ifdef __cplusplus
}
#endif
#endif
