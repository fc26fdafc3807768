/* braid: private declarations shared by the library's modules. Not installed. */
#ifndef BRAID_INTERNAL_H
#define BRAID_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "braid.h"
#include "braid_config.h"

/* ---- allocation (alloc.c) ---------------------------------------------------------- */
void *braid__malloc(size_t size);
void *braid__realloc(void *ptr, size_t size);
void *braid__calloc(size_t count, size_t size);
void braid__free(void *ptr);

#define BRAID__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define BRAID__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- intrusive doubly linked list ------------------------------------------------- */
typedef struct braid__node_s {
  struct braid__node_s *next, *prev;
} braid__node_t;

static inline void braid__list_init(braid__node_t *head) {
  head->next = head->prev = head;
}
static inline bool braid__list_empty(const braid__node_t *head) {
  return head->next == head;
}
static inline bool braid__node_linked(const braid__node_t *n) {
  return n->next != NULL;
}
static inline void braid__list_push_back(braid__node_t *head, braid__node_t *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}
static inline void braid__list_remove(braid__node_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = NULL;
}

/* ---- options errors (error.c) ------------------------------------------------------- */

/* Fills err (may be NULL) with field and a printf-style reason; returns BRAID_EINVAL. */
int braid__opts_fail(braid_opts_error_t *err, const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* When rc is an error from a nested struct's validator, prefixes err's field with
 * "prefix."; returns rc. */
int braid__opts_nest(braid_opts_error_t *err, const char *prefix, int rc);
/* Clears err (may be NULL): no error. */
void braid__opts_ok(braid_opts_error_t *err);
/* Logs a refused option through loop's log hook: "call: option field: reason". */
void braid__opts_log(braid_loop_t *loop, const char *call, const braid_opts_error_t *err);

/* ---- loop (loop.c) ------------------------------------------------------------------ */

/* Something with output to flush once per loop iteration (a connection's write queue, a
 * batcher with linger 0). Registered with braid__loop_want_flush(); the loop calls fn once,
 * from its check phase (after poll) or idle phase (before poll), and unlinks the node first, so fn may re-register. */
typedef struct braid__flush_s {
  braid__node_t node;
  void (*fn)(struct braid__flush_s *self);
} braid__flush_t;

typedef struct braid__post_s {
  struct braid__post_s *next;
  braid_post_fn fn;
  void *arg;
} braid__post_t;

#define BRAID__READ_BUF_SIZE (64 * 1024)

struct braid_loop_s {
  uv_loop_t *uv;
  uv_loop_t owned_uv; /* used when braid owns the loop */
  bool owns_uv;
  bool closing;
  unsigned internal_handles; /* braid's own uv handles not yet closed */
  unsigned active;           /* braid objects alive on this loop (conns, servers, work...) */

  uv_async_t async;
  uv_mutex_t post_mu;
  braid__post_t *post_head, *post_tail;
  bool post_closed;

  uv_idle_t idle;
  uv_check_t check;
  braid__node_t flush_list;
  bool flush_active;

  char *read_buf; /* shared by every connection on the loop; see braid__loop_read_alloc */
  void *chunk_pool; /* free write chunks (BRAID__CHUNK_SIZE bytes each), linked through
                       their first pointer */
  unsigned chunk_pool_len;
  unsigned chunks_out; /* chunks handed out and not given back */
  unsigned chunks_peak, chunks_peak_prev; /* most out at once, this and the last window */
  uint64_t chunks_window_end;             /* when this window ends (loop ms) */
  void *segs_pool; /* free write-segment rings, linked the same way */
  unsigned segs_pool_len;
  unsigned segs_out;
  bool read_buf_busy;

  /* Decay (braid__loop_trim): every decay_ms while a pool holds more than its idle floor,
   * free what the last period's peak use does not need. Unreferenced. */
  uv_timer_t trim_timer;
  bool trim_active;
  uint64_t decay_ms;
  unsigned chunks_tick_peak, segs_tick_peak; /* most out at once since the last tick */
  uint64_t trimmed_bytes;                    /* freed by decay so far (for tests, stats) */

  /* The loop's own resolver (dns.c), made by the first braid_connect() that needs one and
   * closed by braid_loop_close() through the hook, so the core does not link the net layer. */
  braid_resolver_t *resolver;
  void (*resolver_close)(braid_resolver_t *resolver);

  braid_log_fn log_fn;
  braid_log_level_t log_min;
  void *log_arg;
  void *data; /* the user's (braid_loop_set_data) */
};

/* Counts a braid object as alive on loop (braid_loop_close refuses while any are). */
static inline void braid__loop_ref(braid_loop_t *loop) {
  loop->active++;
}
static inline void braid__loop_unref(braid_loop_t *loop) {
  loop->active--;
}

/* Asks for f->fn to run at the end of this loop iteration (or before the next poll). A
 * second call before it ran is a no-op. */
void braid__loop_want_flush(braid_loop_t *loop, braid__flush_t *f);
/* Withdraws a pending flush request (e.g. the object is closing). */
void braid__loop_cancel_flush(braid__flush_t *f);

/* The loop's shared read buffer, for a libuv alloc callback. */
void braid__loop_read_alloc(braid_loop_t *loop, uv_buf_t *buf);
/* Gives the buffer back after the read callback has run. */
void braid__loop_read_release(braid_loop_t *loop, const uv_buf_t *buf);

/* Write-buffer chunks: fixed-size blocks recycled per loop, so connections copy small writes
 * without a malloc per write and an idle connection holds none. The pool keeps up to
 * BRAID__CHUNK_POOL_MAX free chunks, or, when more, enough to bring the chunks in use back
 * to the most that were in use at once over the last one to two seconds of writing
 * (BRAID__CHUNK_WINDOW_MS windows): deep write queues (many connections whose peers read
 * slowly, filling and draining together) then recycle their chunks instead of going through
 * malloc and free, and the page faults of memory the C library gave back, for every 16 KiB.
 * What the pool keeps beyond the floor follows the recent peak down as writing goes on, and
 * the decay below frees it (down to a smaller idle floor) when writing stops. */
#define BRAID__CHUNK_WINDOW_MS 1000
#define BRAID__CHUNK_DATA (16 * 1024)                 /* bytes of data a chunk holds */
#define BRAID__CHUNK_SIZE (BRAID__CHUNK_DATA + 64)      /* block size: data plus a header */
#define BRAID__CHUNK_POOL_MAX 256
void *braid__loop_chunk_get(braid_loop_t *loop);
void braid__loop_chunk_put(braid_loop_t *loop, void *chunk);

/* Decay: the pools keep a burst's worth of chunks for the next burst, but not for good.
 * While the chunk or segment pool holds more than its idle floor, a timer on the loop
 * (unreferenced: it keeps nothing alive) runs every BRAID__POOL_DECAY_MS and frees what the
 * last period's peak use would not have needed, down to the floor; it stops once both pools
 * are at their floors. After a tick that freed at least BRAID__TRIM_RETURN_BYTES, glibc's
 * malloc_trim(0) gives the freed pages back to the system (free() alone keeps most of them
 * in the heap, fragmented by the connections' own blocks). So a server returns to near its
 * starting footprint within two periods of a burst's end, and a steady load keeps what it
 * uses (its peak recurs every period). */
#define BRAID__POOL_DECAY_MS 5000
#define BRAID__CHUNK_IDLE_FLOOR 16
#define BRAID__SEGS_IDLE_FLOOR 64
#define BRAID__TRIM_RETURN_BYTES ((size_t)1 << 20)
/* Tests: the decay period of loop (ms, >= 1), in place of BRAID__POOL_DECAY_MS. */
void braid__loop_set_decay_ms(braid_loop_t *loop, uint64_t ms);
/* One decay tick now (what the timer runs each period). */
void braid__loop_trim(braid_loop_t *loop);

/* Write-segment rings of BRAID__SEGS_SIZE bytes, recycled per loop the same way: a
 * connection takes one with its first queued write and gives it back when the queue drains,
 * so the steady state allocates nothing and an idle connection holds none. */
#define BRAID__SEGS_SIZE 512
#define BRAID__SEGS_POOL_MAX 4096
void *braid__loop_segs_get(braid_loop_t *loop);
void braid__loop_segs_put(braid_loop_t *loop, void *segs);

/* Sets SIGPIPE to SIG_IGN if its disposition is SIG_DFL; leaves a handler or SIG_IGN alone.
 * braid_loop_new() calls it once per process (see loop.h); tests call it directly. */
void braid__sigpipe_ignore_if_default(void);

/* Logs through the loop's hook, printf-style. */
void braid__log(braid_loop_t *loop, braid_log_level_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Loop time now, in ms. */
static inline uint64_t braid__now(const braid_loop_t *loop) {
  return uv_now(loop->uv);
}

/* ---- randomness --------------------------------------------------------------------- */
/* Fills buf with bytes from the OS's CSPRNG (getrandom). Returns 0 or a negated errno. */
int braid__random_bytes(void *buf, size_t len);
/* A fast, non-cryptographic PRNG for jitter; state must be seeded non-zero. */
static inline uint64_t braid__xorshift64(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

/* ---- option bounds shared by several modules ---------------------------------------- */

/* The pool embeds client and rpc options, and the batcher and pool take per-request
 * deadlines that end up on an rpc channel: one definition each, so the modules that check
 * them cannot drift apart. The public headers document the same numbers. */
#define BRAID__MS_MAX (UINT64_C(1) << 31)           /* timeouts, backoffs, lifetimes (ms) */
#define BRAID__DEADLINE_MAX_MS (UINT64_C(1) << 40)  /* a request's deadline (ms) */
#define BRAID__RETRIES_MAX 1000u                    /* client connect retries */
#define BRAID__RPC_INFLIGHT_MAX (1u << 20)          /* rpc max_inflight */
#define BRAID__RPC_QUEUED_MAX (1u << 24)            /* rpc max_queued */

/* The owners' own checks of their options structs, for modules that embed them (the pool).
 * Return 0 or BRAID_EINVAL. server: check o as a server channel's (on_request required). */
int braid__client_opts_check(const braid_client_opts_t *o, braid_opts_error_t *err);
int braid__rpc_opts_check(const braid_rpc_opts_t *o, braid_opts_error_t *err);
/* The owner of a channel (a pool) hears of its close through this hook, leaving on_close and
 * the channel's user data to the user. */
void braid__rpc_set_owner_close(braid_rpc_t *rpc, braid_rpc_close_cb fn, void *arg);

/* ---- resolver (dns.c), for client.c ------------------------------------------------- */

/* The loop's own resolver (default options), made on first use. Returns 0, BRAID_ECLOSED
 * (the loop is closing), BRAID_ENOMEM, or a libuv error. It is no live object: closing the
 * loop closes it, abandoning its queries. */
int braid__resolver_for_loop(braid_loop_t *loop, braid_resolver_t **out);
/* The loop a resolver runs on. */
braid_loop_t *braid__resolver_loop(const braid_resolver_t *resolver);
/* Tests: points a resolver (the loop's own, say) at other DNS servers ("ip:port,...").
 * Returns 0 or BRAID_EINVAL. */
int braid__resolver_test_servers(braid_resolver_t *resolver, const char *servers);

/* ---- connections (conn.c), for server.c and client.c -------------------------------- */

/* Told when a connection it owns has closed, just before the user's close callback runs
 * (the connection is still valid during the call). A server uses it for its connection count
 * and list, so drain and the connection cap work. */
typedef struct braid__conn_owner_s {
  void (*on_conn_closed)(struct braid__conn_owner_s *owner, braid_conn_t *conn);
} braid__conn_owner_t;

/* Allocates a connection on loop with options opts (copied; validated by the caller) and
 * uv_tcp_init()s its handle, which the caller then accepts into or connects with (get it with
 * braid_conn_uv()). The connection counts as a live object on loop from here on. Returns 0,
 * BRAID_ENOMEM or a libuv error. */
int braid__conn_create(braid_loop_t *loop, const braid_conn_opts_t *opts, braid_conn_t **out);

/* The socket is connected (accepted, or connect succeeded): applies so (NULL: leave the
 * socket as it is), starts the timers, and marks the connection open. Returns 0 or the
 * sockopts error (the connection is then still unestablished: discard it). */
int braid__conn_established(braid_conn_t *conn, const braid_sockopts_t *so);

/* Closes and frees a connection that was never handed to the user (accept or connect
 * failed, or established failed). No user callback runs. Asynchronous (uv_close); the loop
 * reference is dropped when the handle has closed. */
void braid__conn_discard(braid_conn_t *conn);

/* Sets the owner told about the close. owner_node is a list node inside the connection the
 * owner may link into its own list; braid__conn_from_node() maps it back. */
void braid__conn_set_owner(braid_conn_t *conn, braid__conn_owner_t *owner);
braid__node_t *braid__conn_node(braid_conn_t *conn);
braid_conn_t *braid__conn_from_node(braid__node_t *node);

/* Queues head[0..hlen) then parts[0..nparts) (copied) as one message: the room for all of
 * it is checked once, first, so a refusal (BRAID_ECLOSED, BRAID_EQUEUEFULL) queues nothing.
 * After that only an allocation (or the connection failing) can stop it part way. If
 * nothing of the message had reached the queue or the kernel, the error is returned
 * (BRAID_ENOMEM) and the connection goes on; otherwise the stream is beyond repair, so the
 * connection is reset and closed with the error (its close callback gets it), and the call
 * returns BRAID_ECLOSED, with *partial set when earlier pieces had been queued. 0 when all of
 * it is queued. */
int braid__conn_write_whole(braid_conn_t *c, const void *head, size_t hlen,
                            const uv_buf_t *parts, unsigned nparts, bool *partial);

/* The message timeout (braid_conn_opts_t.message_timeout_ms), for the protocol layer on a
 * connection, which alone knows where its messages begin and end. Call it at the end of
 * every read callback that delivered data, with pending = whether a message is now partly
 * received (for a framebuf: braid_framebuf_pending(&fb) > 0) and completed = how many whole
 * messages this read delivered. The clock starts when a message becomes partly received
 * (pending turns true, or stays true while completed > 0: the partial one is a new
 * message), keeps running across reads that complete nothing however many bytes trickle in,
 * and stops when pending turns false. If the partial message is not complete within
 * message_timeout_ms of reading time (the clock stands still while reading is stopped), the
 * connection closes with BRAID_ETIMEDOUT. A read timeout that every byte restarts cannot
 * stop a peer sending one byte every few seconds; this can, while a pipelining peer whose
 * reads nearly always end mid-message is never cut off, since each message restarts the
 * clock. Cheap when nothing changes (a compare); a no-op when the option is 0 or the
 * connection is closed. */
void braid__conn_message_pending(braid_conn_t *conn, bool pending, unsigned completed);

/* The callbacks conn has now (so a layer that fails to take conn over can put them back). */
braid_conn_callbacks_t braid__conn_callbacks(const braid_conn_t *c);

/* TLS beneath an established connection (conn.c; tls.h). Starts the handshake with ctx's
 * current settings (a client sends SNI for server_name and verifies the certificate against
 * it; NULL = none), reading from the socket whatever the user asked. fn(conn, status, arg)
 * runs exactly once from the loop, never from inside this call: status 0 when the handshake
 * is done (the owner then hands the connection to its user, who sets callbacks and reads),
 * or the failure (BRAID_ETLS*, BRAID_ETIMEDOUT for handshake_timeout_ms, a socket error, or
 * BRAID_ECANCELED for a close during the handshake), the connection then closing by itself
 * with no user callback. braid__conn_discard() during the handshake cancels fn. Returns 0,
 * or an error (fn will not run; discard the connection). */
typedef struct braid__tls_sess_s braid__tls_sess_t;
typedef void (*braid__conn_ready_fn)(braid_conn_t *conn, int status, void *arg);
int braid__conn_tls_start(braid_conn_t *conn, braid_tls_ctx_t *ctx, const char *server_name,
                          braid__conn_ready_fn fn, void *arg);
/* conn's TLS session once its handshake is done (and how long that took), else NULL. */
const braid__tls_sess_t *braid__conn_tls_session(const braid_conn_t *conn, uint64_t *hs_ms);
/* conn's TLS session at any stage, or NULL for plain TCP. */
const braid__tls_sess_t *braid__conn_tls_any_session(const braid_conn_t *conn);
/* Takes a reference on a TLS context (tls.c); braid_tls_ctx_free() drops it. */
void braid__tls_ctx_ref(braid_tls_ctx_t *ctx);
bool braid__tls_ctx_is_server(const braid_tls_ctx_t *ctx);

/* A write built in place: bytes appended into the loop's pooled write chunks, then queued on
 * a connection as they are, without another copy (braid__conn_write_wchain). For a message
 * assembled piece by piece (a batch answer) that would otherwise be built in a buffer of its
 * own and copied into the connection's chunks. Fields are private to conn.c; zero it to
 * start. Until queued it belongs to its builder, who frees it with braid__wchain_free. */
typedef struct braid__wchain_s {
  struct braid__chunk_s *head, *tail;
  size_t len;
  unsigned nchunks;
} braid__wchain_t;

/* Appends data[0..len) (len may be 0). Returns 0, or BRAID_ENOMEM with w unchanged. */
int braid__wchain_append(braid_loop_t *loop, braid__wchain_t *w, const void *data, size_t len);
/* Appends parts[0..nparts) one after the other, all or nothing: 0 or BRAID_ENOMEM. */
int braid__wchain_appendv(braid_loop_t *loop, braid__wchain_t *w, const uv_buf_t *parts,
                          unsigned nparts);
/* Overwrites w's bytes [off, off + len) with data (off + len <= w->len): a header written
 * once the length it carries is known. */
void braid__wchain_overwrite(braid__wchain_t *w, size_t off, const void *data, size_t len);
/* Copies w's bytes [off, off + len) into dst (off + len <= w->len). */
void braid__wchain_copy_out(const braid__wchain_t *w, size_t off, void *dst, size_t len);
/* Gives w's chunks back to the loop's pool; w is empty (zeroed) afterwards. */
void braid__wchain_free(braid_loop_t *loop, braid__wchain_t *w);
/* Queues all of w on c as one write (no callback) and empties w. Returns 0; or, with w
 * still the caller's, what braid_conn_write would for len bytes (BRAID_ECLOSED,
 * BRAID_EQUEUEFULL, ...) or BRAID_ENOMEM. */
int braid__conn_write_wchain(braid_conn_t *c, braid__wchain_t *w);

/* braid_rpc_call_parts() for a braid-protocol request built in a write chain: w holds
 * BRAID_FRAME_HEADER_SIZE bytes of room for the frame header, then the payload. When the
 * request can go out now (uncompressed) the chain's chunks are queued without a copy.
 * Returns 0 with w consumed (emptied), or braid_rpc_call_parts()'s error with w still the
 * caller's; BRAID_EINVAL also when the channel is not braid-protocol or w has no header
 * room. */
int braid__rpc_call_wchain(braid_rpc_t *rpc, uint8_t flags, braid__wchain_t *w,
                           uint64_t timeout_ms, braid_rpc_response_cb cb, void *arg);

/* The server that accepted conn starts to drain. The protocol that runs on the connection
 * (an rpc server channel) registers this to ask its peer to stop sending new requests
 * (GOAWAY) while the ones taken finish, so a drain loses nothing and ends as soon as the
 * answers are out instead of at its deadline. The net layer knows no protocol: it only
 * calls the hook. fn runs on conn's loop thread, at most once, and only while conn is open;
 * fn NULL unregisters (do it before arg goes away). */
typedef void (*braid__conn_drain_fn)(braid_conn_t *conn, void *arg);
void braid__conn_set_drain_hook(braid_conn_t *conn, braid__conn_drain_fn fn, void *arg);
/* The protocol on a connection (an rpc channel) is told of every watermark crossing at
 * once, from inside the write that crossed it, so it can stop taking requests part way
 * through a read; the user's on_watermark is told later, from the loop (conn.h). fn NULL
 * unregisters. */
typedef void (*braid__conn_wm_fn)(braid_conn_t *conn, int above, void *arg);
void braid__conn_set_watermark_hook(braid_conn_t *conn, braid__conn_wm_fn fn, void *arg);
/* Called by the server for each of its connections when its drain starts: the protocol's
 * drain hook, then the user's on_drain; at most once per connection. */
void braid__conn_notify_drain(braid_conn_t *conn);

/* ---- writers beside the write queue (conn.c), for conn_sendfile.c ------------------- */

/* Whether bytes may go to conn's socket other than through its write queue (sendfile): the
 * connection is open, plain TCP, and has no send rate limit. A TLS connection must answer
 * false (its bytes must pass through the TLS layer). */
bool braid__conn_can_sendfile(const braid_conn_t *conn);
/* Nothing queued and no write in flight: bytes written to the socket now come next. */
bool braid__conn_write_idle(const braid_conn_t *conn);
/* An outside writer takes over the socket: returns a dup() of the socket's descriptor (the
 * caller writes to it, never to the connection's own number, and closes it when done), or
 * a negated errno / BRAID_ECLOSED. Until braid__conn_external_end(), the connection's write
 * timeout runs as if bytes were queued, restarted by each braid__conn_external_progress(). */
int braid__conn_external_begin(braid_conn_t *conn);
/* n bytes reached the kernel: counted as written (stats), and as write and idle progress. */
void braid__conn_external_progress(braid_conn_t *conn, size_t n);
/* The outside writer is done. status < 0: the socket failed, the connection closes with a
 * reset and status (as a failed flush closes it). */
void braid__conn_external_end(braid_conn_t *conn, int status);

/* ---- sendfile (conn_sendfile.c) ---------------------------------------------------------- */

/* Sends len bytes of the file file_fd from offset off on a connection, zero copy: sendfile(2)
 * on the libuv threadpool (see conn_sendfile.c for why not uv_fs_sendfile), waiting for the
 * bytes queued before it to be written first. cb runs once on the loop: status 0 when all
 * len bytes were sent; BRAID_EOF when the file ended first (it shrank); BRAID_ECLOSED or the
 * socket's error (the connection is then closing). sent: bytes sent. */
typedef struct braid__sendfile_s braid__sendfile_t;
typedef void (*braid__sendfile_cb)(braid__sendfile_t *sf, int status, uint64_t sent, void *arg);
/* Returns 0 (file_fd now belongs to the transfer, which closes it), BRAID_EINVAL when
 * braid__conn_can_sendfile() is false, BRAID_ENOMEM, or a dup()'s error. */
int braid__sendfile_start(braid__sendfile_t **out, braid_conn_t *conn, int file_fd,
                          uint64_t off, uint64_t len, braid__sendfile_cb cb, void *arg);
/* Stops the transfer: cb will not run, and the transfer lets go of the connection now (call
 * it before the connection is freed, e.g. from its close callback). What is running on the
 * threadpool finishes on its own descriptors, which are closed after it. */
void braid__sendfile_cancel(braid__sendfile_t *sf);

/* ---- http (http_server.c), for http_static.c ---------------------------------------------- */

/* Whether req's streamed body may now bypass the connection's write queue (sendfile): its
 * response is streaming with a Content-Length still owed, unencoded, with no body held, at
 * the head of the connection's responses, on a connection that can sendfile. */
bool braid__http_res_can_bypass(braid_http_req_t *req);
/* A bypass of req's body starts (mark = true: braid_http_res_write is refused meanwhile) or
 * ends with n body bytes sent beside the queue, counted as braid_http_res_write counts. */
void braid__http_res_bypass(braid_http_req_t *req, bool mark, uint64_t n);

/* ---- rate limits (ratelimit.c) ------------------------------------------------------ */

/* The bucket's state, public to the library so a connection can embed its own buckets. */
struct braid_ratelimit_s {
  braid_loop_t *loop; /* NULL for an embedded bucket */
  uint64_t rate;      /* tokens per second */
  uint64_t burst;     /* bucket size */
  int64_t tokens;     /* may go negative: reads overdraw, and the debt delays the next read */
  uint64_t last_ms;
  unsigned users;
  bool freed; /* braid_ratelimit_free() was called: the last user's detach frees it */
};

/* Sets up an embedded bucket (burst 0: the default), full. */
void braid__ratelimit_init(braid_ratelimit_t *rl, uint64_t rate, uint64_t burst, uint64_t now);
/* Takes up to want tokens from rl at loop time now_ms; returns how many were granted (0 when
 * the bucket is empty). */
uint64_t braid__ratelimit_take(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t want);
/* Milliseconds until at least min(want, burst / 2) tokens are available (>= 1). */
uint64_t braid__ratelimit_wait_ms(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t want);
/* Takes n tokens, going into debt if the bucket holds fewer (for bytes already read). */
void braid__ratelimit_consume(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t n);
/* Gives back tokens taken but not used (e.g. the other bucket of a pair said no). */
void braid__ratelimit_refund(braid_ratelimit_t *rl, uint64_t tokens);
/* Counts a connection using rl (braid_ratelimit_free() while any do defers the free to the
 * last detach, which may free rl). */
void braid__ratelimit_attach(braid_ratelimit_t *rl);
void braid__ratelimit_detach(braid_ratelimit_t *rl);

/* ---- cache (cache.c), for tests ---------------------------------------------------------- */

/* Tests only: makes an empty cache hash every key of one length to the same slot (a stand-in
 * for keys crafted against the fast hash), to exercise the fall-back to SipHash. Returns 0,
 * or BRAID_EINVAL when the cache holds entries. */
int braid__cache_test_weak_hash(braid_cache_t *cache);
/* Tests only: the cache's current hash (0 fast, 1 SipHash-1-3, 2 the test's weak hash). */
int braid__cache_hash_mode(const braid_cache_t *cache);
/* The cache's index: longest and mean probe distance (1 = found in its home slot) over the
 * entries held, and the slot count. Lets tests assert that crafted keys do not cluster. */
void braid__cache_probe_stats(const braid_cache_t *cache, size_t *max_probe, double *mean_probe,
                              size_t *capacity);

/* ---- rpc (rpc.c), for batch.c -------------------------------------------------------- */

/* True for a BRAID_RPC_ORDERED channel. */
bool braid__rpc_is_ordered(const braid_rpc_t *rpc);
/* A batcher keeps the channel's memory alive (not its connection) until it lets go, so a
 * channel that closes under it leaves it a closed channel, not a dangling pointer. */
void braid__rpc_ref(braid_rpc_t *rpc);
void braid__rpc_unref(braid_rpc_t *rpc);

#endif
