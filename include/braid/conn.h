/* braid: TCP connections.
 *
 * A braid_conn_t is one TCP connection, accepted by a braid_server_t or made by
 * braid_connect(). It reads into the loop's shared read buffer and hands the bytes to the
 * read callback as a view (valid during the callback only). Writes are queued without a
 * syscall and flushed once per loop iteration: everything written to a connection while
 * handling one read goes out in one writev(), tried directly first (uv_try_write) and
 * handed to uv_write only for what the kernel did not take. Small writes are copied into a
 * per-connection buffer; large ones can be borrowed or passed as refcounted blobs.
 *
 * A peer that resets its connection never kills the process: braid's writes pass
 * MSG_NOSIGNAL, and the first braid_loop_new() ignores SIGPIPE if it was at its default
 * (loop.h explains why and how to opt out). Write errors close the connection and reach its
 * close callback.
 *
 * Memory stays bounded per connection: high/low watermarks on the queued bytes tell a
 * producer when to pause and resume, and a hard cap fails writes past it. Timeouts (idle,
 * read, write) run on one timer per connection; bandwidth limits pause reading or writing
 * until tokens accrue.
 *
 * Lifetime: the connection stays valid until its close callback has returned. It closes when
 * the caller calls braid_conn_close()/braid_conn_abort(), on a read or write error, or on a
 * timeout; the close callback then runs exactly once, with the reason. Calling any braid_conn
 * function (including close) from inside the connection's own callbacks is allowed. */
#ifndef BRAID_CONN_H
#define BRAID_CONN_H

#include "common.h" /* first: its feature check must come before <uv.h> */
#include <uv.h>

#include "blob.h"
#include "error.h"
#include "loop.h"
#include "ratelimit.h"
#include "sockopts.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_conn_s braid_conn_t;

/* Every callback of a connection gets the connection's user data (braid_conn_set_data()) as
 * its last argument (docs/API.md rule 3). Bytes braid hands out are const uint8_t *. */

/* Data arrived (status 0: bytes[0..len) is valid during the call only), or reading failed
 * (status < 0: the connection is closing, and its close callback follows). Never BRAID_EOF:
 * the end of the peer's stream goes to on_eof, so `if (status < 0) return;` is always
 * right. */
typedef void (*braid_read_cb)(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len,
                              void *data);

/* The peer closed its sending side (a FIN): nothing more will be read, and the connection
 * stays open for writing until you close it or shut it down. */
typedef void (*braid_eof_cb)(braid_conn_t *conn, void *data);

/* A write completed: status 0 when the kernel took every byte, a negative code when the
 * connection failed before that, BRAID_ECANCELED when it closed first. Exactly once. Gets
 * the arg given to that write. */
typedef void (*braid_write_cb)(braid_conn_t *conn, int status, void *arg);

/* The queued bytes crossed the high watermark (above = 1: pause producing) or fell back to
 * the low watermark (above = 0: resume). Alternates, starting with above = 1. Runs from the
 * loop, never from inside braid_conn_write*() (docs/API.md rule 4): a write that crosses the
 * high watermark returns first, and the callback runs at the end of that loop iteration,
 * when braid flushes, if the queue is still above it then (one that the flush drains is not
 * reported). A producer writing in a loop checks braid_conn_is_writable() between writes. */
typedef void (*braid_watermark_cb)(braid_conn_t *conn, int above, void *data);

/* The server that accepted this connection started a drain (braid_server_drain() or
 * braid_server_close()): finish what is in progress, then close. Runs once, on the
 * connection's loop, while it is open. A connection that carries an rpc server channel is
 * told through the channel (GOAWAY) instead. */
typedef void (*braid_drain_cb)(braid_conn_t *conn, void *data);

/* The connection is closed and its handle is about to be freed. status is 0 after
 * braid_conn_close() or a peer's clean close that the caller answered with close,
 * BRAID_ETIMEDOUT after a timeout, or the error that ended it (UV_ECONNRESET, ...). The
 * connection is freed when this returns. Exactly once. */
typedef void (*braid_close_cb)(braid_conn_t *conn, int status, void *data);

/* Per-connection options. Fill with braid_conn_opts_init(), whose timeouts are all off: it
 * serves client connections, whose requests carry their own deadlines (rpc, pool). A
 * server's connections start from braid_server_opts_init() instead, which turns the idle,
 * write and message timeouts on (server.h). Every timeout is in milliseconds, bounds
 * 0..(1 << 40), 0 = off. */
typedef struct braid_conn_opts_s {
  /* Close with BRAID_ETIMEDOUT when nothing was read or written for this long. 0 = off
   * (default; servers: 75000). */
  uint64_t idle_timeout_ms;
  /* Close with BRAID_ETIMEDOUT when reading is on and nothing arrived for this long. 0 = off
   * (default, servers too: the idle timeout bounds a silent peer, the message timeout a
   * slow one). Every byte restarts it, so it cannot stop a peer trickling bytes. */
  uint64_t read_timeout_ms;
  /* Close with BRAID_ETIMEDOUT when queued data made no progress into the kernel for this
   * long (a peer that stopped reading); the connection is reset. 0 = off (default; servers:
   * 60000). */
  uint64_t write_timeout_ms;
  /* Close with BRAID_ETIMEDOUT when a message that has started to arrive is not complete
   * within this long of reading time (the clock stands still while reading is stopped): a
   * peer sending one byte every few seconds resets a read timeout forever, but not this.
   * Only a protocol layer knows where messages begin and end, so braid's protocol layers
   * (rpc channels) arm it; on a raw connection it never fires. 0 = off (default; servers:
   * 60000). */
  uint64_t message_timeout_ms;
  /* How long braid_conn_close() waits in all for queued writes to flush before resetting
   * the connection. Default 10000. 0 = do not wait: close now, cancelling queued writes.
   * Both bound a graceful close's flush, and whichever ends it first wins: the flush gives
   * up (reset; close status BRAID_ETIMEDOUT) close_flush_timeout_ms after braid_conn_close(),
   * or earlier once nothing moved for write_timeout_ms. So close_flush_timeout_ms bounds the
   * whole close, and write_timeout_ms stops a close to a peer that reads nothing at all
   * sooner. */
  uint64_t close_flush_timeout_ms;
  /* Watermarks on queued-but-unsent bytes, for the watermark callback. Default 1 MiB high,
   * 256 KiB low. Bounds: low < high; high 1..max_queue_bytes. */
  size_t high_watermark_bytes;
  size_t low_watermark_bytes;
  /* Hard cap on queued-but-unsent bytes: a write that would pass it fails with
   * BRAID_EQUEUEFULL and nothing is queued. Default 64 MiB. Bounds 1..(1 << 40). */
  size_t max_queue_bytes;
  /* A copying write of at least this many bytes, made while nothing is queued, is offered
   * to the kernel straight from the caller's buffer (one syscall in the call), and only what
   * the kernel does not take is copied: large writes gain nothing from coalescing, and this
   * saves their copy. Smaller writes are copied and coalesced. Default 4 KiB. Bounds
   * 64..(1 << 20). */
  size_t copy_threshold_bytes;
  /* Bandwidth caps per direction (token buckets of this connection). 0 = unlimited.
   * Bounds 0..(1 << 40). */
  uint64_t send_rate_bytes_per_s;
  uint64_t recv_rate_bytes_per_s;
  /* Shared buckets this connection also draws from (e.g. one per server), or NULL. They
   * must belong to the connection's loop and outlive the connection. */
  braid_ratelimit_t *send_group;
  braid_ratelimit_t *recv_group;
} braid_conn_opts_t;

/* The callbacks of a connection, registered up front (a connection can close on its own:
 * docs/API.md rule 5). Initialise it with designated initialisers. */
typedef struct braid_conn_callbacks_s {
  braid_read_cb on_read;           /* required before braid_conn_read_start() */
  braid_eof_cb on_eof;             /* optional; NULL: close gracefully at EOF */
  braid_close_cb on_close;         /* optional */
  braid_watermark_cb on_watermark; /* optional */
  braid_drain_cb on_drain;         /* optional: the accepting server drains */
} braid_conn_callbacks_t;

/* Counters for one connection. Over TLS (braid/tls.h) the byte counts are of plaintext: what
 * the read callback got and what writes queued. */
typedef struct braid_conn_stats_s {
  uint64_t bytes_read;
  uint64_t bytes_written;   /* taken by the kernel */
  uint64_t reads;           /* read callbacks with data */
  uint64_t writes;          /* write calls accepted */
  uint64_t write_syscalls;  /* writev()s issued (try-write or uv_write); < writes when coalesced */
  uint64_t queued_bytes;    /* queued, not yet taken by the kernel, now */
  uint64_t max_queued_bytes;/* high-water mark of queued_bytes */
  uint64_t watermark_pauses;/* times the high watermark was crossed */
  uint64_t rate_waits;      /* times a bandwidth limit paused reading or writing */
  uint64_t created_ms;      /* loop time when the connection was made */
} braid_conn_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_conn_opts_init(braid_conn_opts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with the
 * field and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_conn_opts_validate(const braid_conn_opts_t *o, braid_opts_error_t *err);

/* Sets the callbacks (copied). Call it from the server's connection callback or the connect
 * callback, before reading. Returns 0, or BRAID_EINVAL if cbs is NULL. */
BRAID_EXTERN int braid_conn_set_callbacks(braid_conn_t *conn, const braid_conn_callbacks_t *cbs);

/* The connection's user data, passed to each of its callbacks (docs/API.md rule 3): braid
 * never reads it. NULL at first: set it where the connection is handed to you. */
BRAID_EXTERN void braid_conn_set_data(braid_conn_t *conn, void *data);
BRAID_EXTERN void *braid_conn_get_data(const braid_conn_t *conn);

/* Starts or stops delivering data to the read callback. Returns 0, BRAID_EINVAL (no read
 * callback set), BRAID_ECLOSED, or a libuv error. Stopping keeps unread data in the kernel
 * (TCP flow control then slows the peer). */
BRAID_EXTERN int braid_conn_read_start(braid_conn_t *conn);
BRAID_EXTERN int braid_conn_read_stop(braid_conn_t *conn);

/* Queues a copy of data[0..len). cb (may be NULL) runs once when the kernel took the bytes,
 * or with the error that stopped that. Returns 0, BRAID_ECLOSED, BRAID_EQUEUEFULL (over
 * max_queue_bytes), BRAID_EINVAL or BRAID_ENOMEM; on error cb is never called. len 0 is
 * allowed (cb still runs, in order).
 *
 * A write is sent whole or the connection ends: BRAID_EQUEUEFULL, BRAID_EINVAL and
 * BRAID_ENOMEM mean nothing of it was sent or queued and the connection goes on.
 * BRAID_ECLOSED means the connection is closing or shut down, or ended during the call:
 * the kernel reported it failed (a peer reset: the close callback gets UV_ECONNRESET or
 * UV_EPIPE), or part of a large write had gone to the kernel and the rest could not be
 * queued (the connection is then reset, so the peer never reads half a message followed by
 * the next one, and the close callback gets BRAID_ENOMEM). Writes never raise SIGPIPE. */
BRAID_EXTERN int braid_conn_write(braid_conn_t *conn, const void *data, size_t len,
                                  braid_write_cb cb, void *arg);

/* Like braid_conn_write() but without a copy: data must stay valid and unchanged until cb
 * runs. cb is required. */
BRAID_EXTERN int braid_conn_write_borrow(braid_conn_t *conn, const void *data, size_t len,
                                         braid_write_cb cb, void *arg);

/* Like braid_conn_write() for bytes [offset, offset + len) of blob, without a copy: braid
 * takes a reference on success and drops it when the write completes. cb may be NULL.
 * BRAID_EINVAL if the range is outside the blob. */
BRAID_EXTERN int braid_conn_write_blob(braid_conn_t *conn, braid_blob_t *blob, size_t offset,
                                       size_t len, braid_write_cb cb, void *arg);

/* Flushes queued writes now instead of at the end of the loop iteration. Rarely needed.
 * Returns 0 or the connection's error. */
BRAID_EXTERN int braid_conn_flush(braid_conn_t *conn);

/* Half-close: after every queued write is flushed, sends FIN. Reading goes on. Later writes
 * fail with BRAID_ECLOSED. Returns 0 or BRAID_ECLOSED. */
BRAID_EXTERN int braid_conn_shutdown(braid_conn_t *conn);

/* Graceful close: stops reading, flushes queued writes (waiting at most
 * close_flush_timeout_ms, after which the rest are cancelled and the connection reset),
 * closes, then calls the close callback once. Calling it again, or after an error started
 * the close, does nothing. Returns 0. */
BRAID_EXTERN int braid_conn_close(braid_conn_t *conn);

/* Abortive close: cancels queued writes (their callbacks get BRAID_ECANCELED), sends RST
 * (SO_LINGER 0), closes, then calls the close callback once with status 0. Returns 0. */
BRAID_EXTERN int braid_conn_abort(braid_conn_t *conn);

/* Copies the connection's counters into out. */
BRAID_EXTERN void braid_conn_stats(const braid_conn_t *conn, braid_conn_stats_t *out);

/* Reads the effective socket options. Returns 0, BRAID_ECLOSED, or a negated errno. */
BRAID_EXTERN int braid_conn_sockopts(const braid_conn_t *conn, braid_sockopts_effective_t *out);

/* The local and peer addresses. Returns 0, BRAID_ECLOSED, or a libuv error. */
BRAID_EXTERN int braid_conn_sockname(const braid_conn_t *conn, struct sockaddr_storage *out);
BRAID_EXTERN int braid_conn_peername(const braid_conn_t *conn, struct sockaddr_storage *out);

/* The connection's loop. */
BRAID_EXTERN braid_loop_t *braid_conn_loop(const braid_conn_t *conn);

/* The connection's libuv handle, for options braid does not wrap. Do not close it or start
 * reading on it yourself. */
BRAID_EXTERN uv_tcp_t *braid_conn_uv(braid_conn_t *conn);

/* Nonzero while the connection is open and not closing. */
BRAID_EXTERN int braid_conn_is_open(const braid_conn_t *conn);

/* Nonzero while the connection is open and its queued bytes have not crossed the high
 * watermark (or have fallen back to the low one since): what on_watermark reports, known at
 * once, for a producer that writes in a loop. */
BRAID_EXTERN int braid_conn_is_writable(const braid_conn_t *conn);

#ifdef __cplusplus
}
#endif
#endif
