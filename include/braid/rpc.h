/* braid: request/response over one connection.
 *
 * An rpc channel takes over a braid_conn_t and carries many requests at once over it:
 * - BRAID_RPC_BRAID speaks the braid protocol (docs/PROTOCOL.md): every request has an id,
 *   the server may answer out of order, and a client matches answers by id. What goes in a
 *   payload is the application's; docs/PROTOCOL.md section 9 specifies one, the key-value
 *   operations of examples/kv_server.c and kv_client.c.
 * - BRAID_RPC_ORDERED speaks a pipelined protocol whose answers come back in request order
 *   (HTTP/1.1, Redis, memcached, ...): requests go out as the caller encoded them, and a
 *   framer (braid/framer.h) cuts the answers apart; the first answer completes the oldest
 *   request.
 *
 * A client may have many requests in flight; past max_inflight they wait in a bounded queue.
 * A per-request deadline fails that one request with BRAID_ETIMEDOUT and leaves the
 * connection and the other requests alone (a late answer is recognised and dropped). When
 * the connection is lost, every pending request completes exactly once with the error.
 *
 * A server gets each request through a callback and answers it now or later with
 * braid_rpc_respond(); braid protocol answers go out as soon as they are given (in any
 * order), ordered-protocol answers are held back until those before them are given. A batch
 * request (the BATCH flag) can be seen whole by a batch callback, for vectorised work such
 * as a multi-get, or is split into ordinary requests.
 *
 * A server channel bounds what one client can make it hold or do: it stops taking frames
 * (even ones already read) while its answers are queued over the connection's high
 * watermark or it handles max_inflight requests; it disconnects a client that leaves its
 * answers unread (output_timeout_ms) or leaves a frame unfinished (frame_timeout_ms); it
 * sends nothing over max_payload_bytes (such an answer becomes ERROR TOO_BIG); and it
 * refuses, as protocol violations, frames a client may not send and request ids that do not
 * increase (docs/PROTOCOL.md sections 3.1 and 3.5).
 *
 * All of it runs on the connection's loop thread, like the connection. */
#ifndef BRAID_RPC_H
#define BRAID_RPC_H

#include "common.h"
#include "conn.h"
#include "error.h"
#include "frame.h"
#include "framer.h"
#include "gzip.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_rpc_s braid_rpc_t;
typedef struct braid_rpc_req_s braid_rpc_req_t;

typedef enum {
  BRAID_RPC_BRAID = 0,   /* braid protocol, correlated by id */
  BRAID_RPC_ORDERED = 1, /* a pipelined protocol answered in order, framed by opts.framer */
} braid_rpc_mode_t;

/* What came back for a client request, beside its status (braid_rpc_response_cb): with
 * status 0, data[0..len) is the answer; with BRAID_EREMOTE, remote_code is the server's wire
 * code (braid/frame.h) and data its message; otherwise nothing. */
typedef struct braid_rpc_result_s {
  uint16_t remote_code;
  uint8_t flags;       /* braid protocol: the answer frame's flags (BRAID_FRAME_FLAG_*) */
  const uint8_t *data; /* valid during the callback only */
  size_t len;
} braid_rpc_result_t;

/* A client request completed; exactly once per accepted braid_rpc_call(), with the arg
 * given to that call. status 0: result->data is the answer. BRAID_EREMOTE: the server
 * answered with an error (result->remote_code, result->data). BRAID_ETIMEDOUT: the request's
 * deadline passed. BRAID_EGOAWAY: the server is shutting down and did not take the request
 * (safe to retry elsewhere). BRAID_ECANCELED: the channel was closed. Any other negative
 * code: the connection failed (UV_ECONNRESET, BRAID_EPROTO, ...). */
typedef void (*braid_rpc_response_cb)(braid_rpc_t *rpc, int status,
                                      const braid_rpc_result_t *result, void *arg);

/* A server got a request: data[0..len) is valid during the call only (copy what you keep).
 * Answer it exactly once, now or later, with braid_rpc_respond() or
 * braid_rpc_respond_error().
 *
 * req is a handle, not memory of yours: it names this one request. It comes from a pool the
 * channel keeps until it is freed (after on_close returns), and a request's handle differs
 * from the handles of later requests that reuse its memory, so a second answer with the
 * same handle, or one after the request was answered and its memory reused, is refused with
 * BRAID_EINVAL and touches no other request (such a misuse could go unnoticed only after
 * 64 reuses of the same memory, which the pool spreads over all its slots). Using a handle
 * after the channel's on_close returned is undefined behaviour, as with any freed handle. */
typedef void (*braid_rpc_request_cb)(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                                     size_t len, void *arg);

/* A server got a batch of count requests (braid protocol only). reqs[i] and items[i] are the
 * i-th request and its bytes (valid during the call only). Answer every reqs[i] exactly once,
 * in any order, now or later; the batch answer goes out when the last one is given. */
typedef void (*braid_rpc_batch_cb)(braid_rpc_t *rpc, braid_rpc_req_t **reqs,
                                   const braid_batch_item_t *items, uint32_t count, void *arg);

/* The channel is closed: its connection is closed, every client request has completed, and
 * every server request has been answered. status is 0 after braid_rpc_close(), or the error
 * that ended the connection. The channel is freed when this returns, or, if batchers still
 * use it, when the last of them is freed (until then it refuses new requests with
 * BRAID_ECLOSED). */
typedef void (*braid_rpc_close_cb)(braid_rpc_t *rpc, int status, void *arg);

typedef struct braid_rpc_opts_s {
  braid_rpc_mode_t mode;
  /* Braid mode: largest payload accepted from the peer, and, since the protocol has no
   * negotiation (PROTOCOL.md section 5), the largest this channel sends: a call over it
   * fails with BRAID_ETOOBIG, an answer over it is replaced by ERROR TOO_BIG. Default
   * BRAID_FRAME_DEFAULT_MAX_PAYLOAD; bounds BRAID_FRAME_MIN_MAX_PAYLOAD..ceiling. */
  size_t max_payload_bytes;
  /* Ordered mode: cuts the peer's stream into messages (answers on a client, requests on a
   * server). Required in ordered mode: set it up with a braid_framer_init_*() call (a
   * framer left as braid_rpc_opts_init() made it, all zero, is "not set"). */
  braid_framer_t framer;
  /* Client: requests on the wire at once; more wait in a queue. Server: requests being
   * handled at once; a batch frame holding more items than this is answered OVERLOADED as a
   * whole (each item counts as a request). A server stops taking frames when it handles this
   * many, or when its answers queued on the connection pass the connection's high watermark
   * (a client that does not read): it stops reading, and frames it had already read but not
   * taken (many pipelined requests arrive in one read) wait, copied, until the requests taken
   * are answered or the queue falls to the low watermark. So what one client makes a server
   * buffer is bounded by the high watermark plus the answers to the requests it has taken,
   * however it pipelines. Default 1024; bounds 1..(1 << 20). */
  unsigned max_inflight;
  /* Client: requests waiting beyond max_inflight; one more fails with BRAID_EQUEUEFULL.
   * Default 65536; bounds 0..(1 << 24). */
  unsigned max_queued;
  /* Client: deadline of a request whose call passes 0. 0 = none (the default). */
  uint64_t timeout_ms;
  /* Braid mode: payloads this channel sends (requests on a client, answers on a server) of
   * at least this many bytes go out gzip-compressed (the GZIP flag) when that makes them
   * smaller. 0 = never (the default). Whatever this says, gzip-flagged payloads from the
   * peer are always accepted, decompressed with output capped at max_payload_bytes and at
   * the ratio cap (more than 1 MiB at more than 200:1; either fails that one request:
   * BRAID_WIRE_TOO_BIG). A server decompresses a request of 16 KiB or more compressed, or
   * whose gzip trailer announces 256 KiB or more, on the libuv threadpool (the request
   * reaches the handler when that is done, possibly after later ones, and counts as taken
   * meanwhile); smaller ones, and a client's answers, inflate on the loop into a buffer of
   * the size their trailer announces and never further: a member that holds more than it
   * announces is corrupt and fails (BRAID_WIRE_BAD_REQUEST) after that much work, so the
   * loop's work is bounded by what is known (the compressed size, the claim, the caps), not
   * by what the data would inflate to. A server compresses an answer of 64 KiB or more on the threadpool too (it goes
   * out when that is done, possibly after later answers); smaller answers, and a client's
   * requests, are compressed on the loop, so keep what a client sends modest where it is on.
   * Bounds 0..BRAID_FRAME_MAX_PAYLOAD_CEILING. */
  size_t gzip_min_bytes;
  /* Compression level for gzip_min_bytes, 1 (fastest) to 9 (smallest). Default 1: on a
   * network path the speed usually matters more than the last few percent. */
  int gzip_level;
  /* Server: a client whose answers stay queued over the connection's high watermark (it
   * has not read them down to the low watermark) for this long is disconnected (reset, the
   * queue dropped; on_close gets BRAID_ETIMEDOUT): Redis's client-output-buffer-limit. With
   * the server's backpressure (max_inflight) what such a client holds is about the high
   * watermark (conn opts, default 1 MiB) plus one answer and one read (64 KiB); this bounds
   * how long. The connection's hard cap (max_queue_bytes) still applies at any time, and its
   * write timeout, if set, to a client that reads nothing at all. Default 60000; 0 = off;
   * bounds 0..(1 << 31). Clients ignore it. */
  uint64_t output_timeout_ms;
  /* Server: a frame must arrive whole within this long of its first byte, plus 1 ms for
   * every 64 bytes of it received so far (a large frame on a slow link is not cut off, a
   * trickle of bytes or a header declaring a large payload and then silence is). Time does
   * not run while the server itself stopped reading (backpressure). On expiry the server
   * sends ERROR (id 0) TIMEOUT and closes; on_close gets BRAID_ETIMEDOUT. Default 30000;
   * 0 = off; bounds 0..(1 << 31). Clients ignore it. */
  uint64_t frame_timeout_ms;
} braid_rpc_opts_t;

/* A channel's callbacks, given when it is made (a channel can close on its own: docs/API.md
 * rule 5). Each gets the channel's user data (braid_rpc_set_data()) as its last argument. */
typedef struct braid_rpc_callbacks_s {
  braid_rpc_request_cb on_request; /* server: required */
  braid_rpc_batch_cb on_batch;     /* server, braid mode: optional */
  braid_rpc_close_cb on_close;     /* optional */
} braid_rpc_callbacks_t;

/* Counters for one channel. */
typedef struct braid_rpc_stats_s {
  uint64_t calls;       /* client: requests accepted */
  uint64_t completed;   /* client: completed with an answer (success or remote error) */
  uint64_t timeouts;    /* client: failed by their deadline */
  uint64_t late;        /* client: answers dropped because their request had timed out */
  uint64_t queued;      /* client: waiting beyond max_inflight now */
  uint64_t inflight;    /* client: on the wire now; server: being handled now */
  uint64_t requests;    /* server: requests received (batch items counted one by one) */
  uint64_t batches;     /* server: batch frames received */
  uint64_t read_pauses; /* server: times it stopped taking frames (reading paused) at
                           max_inflight or the watermark */
  uint64_t write_errors; /* frames that could not be queued whole: a server closes the
                            connection then (its client stopped reading), a client's call
                            fails with the error */
  uint64_t oversized_batches; /* server: batch frames refused for holding more items than
                                 max_inflight (answered OVERLOADED, nothing allocated) */
  uint64_t inflated_offloaded; /* server: gzip-flagged requests decompressed on the threadpool
                                  (16 KiB or more compressed, or announcing 256 KiB or more) */
  uint64_t deflated_offloaded; /* server: answers compressed on the threadpool (64 KiB or more,
                                  with gzip_min_bytes on) */
  uint64_t output_limit_closes; /* server: connections reset by output_timeout_ms */
  uint64_t frame_timeouts;      /* server: connections closed by frame_timeout_ms */
} braid_rpc_stats_t;

/* Fills o with the defaults documented on each field (braid mode). */
BRAID_EXTERN void braid_rpc_opts_init(braid_rpc_opts_t *o);

/* Checks every field against its documented bounds (ordered mode: a framer is set). Returns
 * 0, or BRAID_EINVAL with the field and the reason in *err (err may be NULL).
 * braid_rpc_client()/braid_rpc_server() and braid_pool_new() run this check. */
BRAID_EXTERN int braid_rpc_opts_validate(const braid_rpc_opts_t *o, braid_opts_error_t *err);

/* Makes conn a client channel: the channel sets conn's callbacks and user data and starts
 * reading; from now on use conn only through the channel (its stats and addresses remain
 * readable). o is copied (NULL = defaults), and so is cbs (NULL: none; a client needs only
 * on_close, if anything). data becomes the channel's user data, passed to its callbacks.
 * Returns 0; BRAID_EINVAL (bad option: braid_rpc_opts_validate() says which, and the loop's
 * log hook is told; ordered mode without a framer; conn not open: nothing changed);
 * BRAID_ENOMEM; or braid_conn_read_start()'s error (nothing changed: conn keeps its
 * callbacks). */
BRAID_EXTERN int braid_rpc_client(braid_rpc_t **out, braid_conn_t *conn, const braid_rpc_opts_t *o,
                                  const braid_rpc_callbacks_t *cbs, void *data);

/* Makes conn a server channel (see braid_rpc_client; cbs->on_request is required). */
BRAID_EXTERN int braid_rpc_server(braid_rpc_t **out, braid_conn_t *conn, const braid_rpc_opts_t *o,
                                  const braid_rpc_callbacks_t *cbs, void *data);

/* The channel's user data (docs/API.md rule 3), passed to its callbacks: braid never reads
 * it. A pool's channels keep theirs to the pool's user; the pool does not use it. */
BRAID_EXTERN void braid_rpc_set_data(braid_rpc_t *rpc, void *data);
BRAID_EXTERN void *braid_rpc_get_data(const braid_rpc_t *rpc);

/* Client: sends a request (data[0..len) is copied) and calls cb once with the result.
 * Braid mode wraps it in a REQUEST frame; ordered mode sends the bytes as they are (encode
 * the protocol's request yourself). timeout_ms 0 takes opts.timeout_ms. Returns 0 (cb will
 * run exactly once, never from inside this call), BRAID_EINVAL, BRAID_ETOOBIG (braid mode:
 * over max_payload_bytes, the peer's maximum as PROTOCOL.md section 5 assumes it equal to
 * this channel's), BRAID_EQUEUEFULL, BRAID_ECLOSED (closing, or after
 * a goaway), or BRAID_ENOMEM; then cb is never called. */
BRAID_EXTERN int braid_rpc_call(braid_rpc_t *rpc, const void *data, size_t len,
                                uint64_t timeout_ms, braid_rpc_response_cb cb, void *arg);

/* Client, braid mode: like braid_rpc_call() with frame flags (BRAID_FRAME_FLAG_BATCH for a
 * payload you encoded with braid_batch_writer_*; the batch layer uses this) and the payload
 * gathered from parts[0..nparts) (copied). */
BRAID_EXTERN int braid_rpc_call_parts(braid_rpc_t *rpc, uint8_t flags, const uv_buf_t *parts,
                                      unsigned nparts, uint64_t timeout_ms,
                                      braid_rpc_response_cb cb, void *arg);

/* Server: answers req with data[0..len) (copied), and frees req. Returns 0; BRAID_ECLOSED
 * when the connection is gone (the answer is dropped, req is still freed), also when the
 * answer could not be queued because the client stopped reading and the connection's write
 * queue reached its hard cap (the connection is then closed: its client would otherwise
 * wait for the answer forever; an answer compressed on the threadpool, see gzip_min_bytes,
 * returns 0 and meets that check when it is done, and goes out if the connection is still
 * open then: braid_rpc_close() waits for it, an immediate braid_server_close() does not); BRAID_ETOOBIG
 * (braid mode: the answer is longer than max_payload_bytes, which PROTOCOL.md section 5 forbids
 * sending, the peer's maximum being taken equal to this channel's; for a batch item: the
 * answer would take the batch answer past it, with room kept for an empty status per item
 * not answered yet, so the items answered first win): the request is answered for you with
 * ERROR TOO_BIG (a batch item with status TOO_BIG) and freed, the rest of the batch goes on;
 * BRAID_EINVAL (req NULL, already
 * answered, or its memory already reused for a later request: nothing is sent, no other
 * request is affected; see braid_rpc_request_cb); BRAID_ENOMEM (req stays unanswered). */
BRAID_EXTERN int braid_rpc_respond(braid_rpc_req_t *req, const void *data, size_t len);

/* Server: answers req with an error: braid mode sends an ERROR frame (a batch item gets the
 * status) with code (a BRAID_WIRE_* or application code, nonzero) and msg (may be NULL).
 * Ordered mode has no error frame: it sends msg's bytes as the answer, so encode the
 * protocol's own error there. Same returns as braid_rpc_respond(). */
BRAID_EXTERN int braid_rpc_respond_error(braid_rpc_req_t *req, uint16_t code, const char *msg);

/* Server: the channel a request arrived on, or NULL once the request is answered. */
BRAID_EXTERN braid_rpc_t *braid_rpc_req_channel(const braid_rpc_req_t *req);

/* Server, braid mode: sends GOAWAY (last id taken, code, reason; the reason is cut at 1024
 * bytes). Requests read after it are answered with ERROR SHUTTING_DOWN and not handed to
 * on_request. Once every taken request is answered the channel half-closes (FIN after the
 * answers) and keeps reading, dropping what comes, until the client closes (a braid client
 * does on EOF) or 1 s passes, then closes: closing with the client's late requests unread
 * would send RST, which can destroy answers the client has not read yet.
 * braid_server_drain() does this (code BRAID_WIRE_OK) for every braid-mode server channel
 * on the server's connections, on every worker, so a draining rpc server needs no call of
 * its own; call it yourself to shed one connection. Returns 0, BRAID_EINVAL (NULL, a client
 * or an ordered-mode channel) or BRAID_ECLOSED (already sent, or closing). */
BRAID_EXTERN int braid_rpc_goaway(braid_rpc_t *rpc, uint16_t code, const char *reason);

/* Closes the channel: client requests still pending complete with BRAID_ECANCELED, answers
 * already queued are flushed, the connection closes, and on_close runs once all server
 * requests are answered. Calling it again does nothing. Returns 0. */
BRAID_EXTERN int braid_rpc_close(braid_rpc_t *rpc);

/* The channel's connection (NULL once it is closed). */
BRAID_EXTERN braid_conn_t *braid_rpc_conn(const braid_rpc_t *rpc);

/* Copies the channel's counters into out. */
BRAID_EXTERN void braid_rpc_stats(const braid_rpc_t *rpc, braid_rpc_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
