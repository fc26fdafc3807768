/* TCP connections: reads into the loop's shared buffer, a coalescing write queue flushed once
 * per loop iteration, watermarks, timeouts on one lazy timer, bandwidth limits, half-close,
 * graceful and abortive close.
 *
 * Write queue. Each write is a segment: bytes copied into a chunk, borrowed bytes, a blob
 * range, or a heap copy of a large write. Chunks come from the loop's pool and never move, so
 * segments point straight at their bytes and a uv_write in flight needs no freezing. A copied
 * write that lands right after the previous one in the same chunk extends that segment, so a
 * burst of small writes becomes one iovec. Completion is accounted in bytes from the head: the
 * kernel took n bytes, so the first segments covering n bytes are done, in order.
 *
 * Flushing tries a direct write first (sendmsg with MSG_NOSIGNAL, so a reset peer can never
 * raise SIGPIPE here; libuv's uv_try_write cannot pass that flag); only what the kernel did
 * not take goes to uv_write(), and at most one uv_write is in flight. Errors are never
 * reported from inside the flush: the connection closes, and every segment still queued is
 * completed from the final close callback, after libuv cancelled its own requests, so each
 * write callback runs once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "internal.h"
#include "tls_engine.h"

#include <inttypes.h>

#define MAX_IOVS 64 /* per writev; more segments are sent in further rounds */
#define MAX_IOV_BYTES ((size_t)1 << 30)

enum seg_kind { SEG_CHUNK, SEG_BORROW, SEG_BLOB, SEG_HEAP };

typedef struct braid__chunk_s {
  size_t size; /* bytes of data[] */
  size_t used;
  unsigned refs;              /* segments pointing into it */
  struct braid__chunk_s *next; /* in a braid__wchain_t being built */
  char data[];
} chunk_t;

#define CHUNK_DATA_SIZE (BRAID__CHUNK_SIZE - sizeof(chunk_t)) /* >= BRAID__CHUNK_DATA */
/* Copies this large get a block of their own; smaller ones are split across pooled chunks,
 * so the steady state never mallocs. */
#define HEAP_COPY_MIN ((size_t)256 << 10)
#define MAX_FRESH_CHUNKS (HEAP_COPY_MIN / BRAID__CHUNK_DATA + 1)
#define POOLED_SEGS 8 /* a ring of this many segments comes from the loop's pool */

typedef struct seg_s {
  const char *base; /* next byte to send */
  size_t len;       /* bytes left to send */
  void *owner;      /* chunk_t, braid_blob_t or heap block, by kind */
  braid_write_cb cb;
  void *arg;
  uint8_t kind;
} seg_t;

/* TLS beneath the connection (tls.h): the session, and the ciphertext on its way to the
 * socket. The write queue keeps plaintext; each flush encrypts up to TLS_BATCH_BYTES of it
 * (small writes staged into 16 KiB records, large ones encrypted in place) into `out`, and
 * the segments it covered complete only once the kernel took all of that ciphertext, so
 * write callbacks, watermarks and the write timeout mean what they mean without TLS. Reads
 * feed the session and decrypt into the loop's shared read buffer. */
#define TLS_BATCH_BYTES ((size_t)128 << 10)
#define TLS_STAGE_BYTES ((size_t)16 << 10) /* one full record */

typedef struct tls_state_s {
  braid__tls_sess_t *sess;
  braid_tls_ctx_t *ctx; /* referenced */
  braid__tls_out_t out;
  uint8_t *inflight_copy; /* ciphertext the kernel had no room for, in a uv_write */
  size_t batch_plain;     /* plaintext bytes encrypted whose ciphertext is not all sent */
  bool batch_pending;
  bool hs_done;
  bool notify_queued; /* close_notify is in out (or sent) */
  bool eof;           /* the peer's close_notify arrived and was reported */
  bool eof_pending;   /* it arrived while the user was not reading */
  bool deliver_pending; /* plaintext is buffered and reading restarted: deliver from the loop */
  uint64_t hs_started_ms, hs_deadline_ms, hs_ms;
  braid__conn_ready_fn ready; /* the owner (server, connect) waits for the handshake */
  void *ready_arg;
} tls_state_t;

enum conn_state {
  ST_CREATED, /* handle initialised, not connected yet */
  ST_OPEN,
  ST_CLOSING, /* graceful close: flushing, then close */
  ST_CLOSED   /* handles closing; the final callback frees */
};

struct braid_conn_s {
  uv_tcp_t tcp;
  uv_timer_t *timer; /* made the first time a deadline is set: most connections need none */
  braid_loop_t *loop;
  braid_conn_callbacks_t cbs;
  braid__flush_t flush;
  braid__node_t owner_node;
  braid__conn_owner_t *owner;
  braid__conn_drain_fn drain_fn; /* the protocol on it, told when its server drains */
  void *drain_arg;
  braid__conn_wm_fn wm_fn; /* the protocol on it, told of watermark crossings at once */
  void *wm_arg;
  void *data;       /* the user's (braid_conn_set_data), passed to every callback */
  uv_write_t *wreq; /* made the first time the kernel pushes back */

  /* Options, as needed on the hot path. */
  uint64_t idle_timeout_ms, read_timeout_ms, write_timeout_ms, close_flush_timeout_ms;
  uint64_t message_timeout_ms;
  size_t high_wm, low_wm, max_queue, copy_threshold;
  braid_ratelimit_t *send_rl, *recv_rl;       /* this connection's buckets, or NULL */
  braid_ratelimit_t *send_group, *recv_group; /* shared buckets, or NULL */

  /* Write queue: a ring of segments. */
  seg_t *segs;
  unsigned seg_head, seg_count, seg_cap;
  size_t queued;   /* bytes in segments, not yet taken by the kernel */
  size_t inflight; /* of those, bytes handed to the uv_write in flight */
  chunk_t *tail;   /* chunk that copies append to */

  uint8_t state;
  bool want_read;     /* the user asked for reading */
  bool reading;       /* uv_read_start is in effect */
  bool rate_paused;   /* reading or writing waits for tokens */
  bool write_inflight;
  bool in_flush;
  bool shutdown_requested, shutdown_sent;
  bool peer_eof;
  bool above_wm;
  bool wm_reported; /* the last above_wm value given to on_watermark */
  bool timer_armed;
  bool discarded; /* never handed to the user: no callbacks at close */
  bool drained;   /* its server's drain was announced */
  bool reset_on_close;
  bool msg_pending; /* the protocol on it holds part of a message (message timeout) */
  bool ext_active;  /* a writer beside the queue (sendfile) owes bytes: the write timeout runs */
  int close_status;
  unsigned open_handles;

  uint64_t last_read_ms, last_activity_ms, last_progress_ms, close_started_ms, rate_wait_until;
  uint64_t msg_started_ms; /* when the partial message began (shifted by reading pauses) */
  uint64_t msg_elapsed_ms; /* its time so far, kept while reading is stopped */
  uint64_t timer_due;
  braid_conn_stats_t stats;
  tls_state_t *tls; /* NULL: plain TCP */
};

static void do_flush(braid_conn_t *c);
static void arm_timer(braid_conn_t *c);
static void close_handles(braid_conn_t *c, int status);
static void tls_deliver_deferred(braid_conn_t *c);
static void tls_fail_handshake(braid_conn_t *c, int err);
static void tls_notify_now(braid_conn_t *c);
static void on_drained(braid_conn_t *c);

/* ---- options -------------------------------------------------------------------------- */

void braid_conn_opts_init(braid_conn_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->close_flush_timeout_ms = 10000;
  o->high_watermark_bytes = 1 << 20;
  o->low_watermark_bytes = 256 << 10;
  o->max_queue_bytes = 64 << 20;
  o->copy_threshold_bytes = 4 << 10;
}

int braid_conn_opts_validate(const braid_conn_opts_t *o, braid_opts_error_t *err) {
  const uint64_t big = (uint64_t)1 << 40;
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->max_queue_bytes < 1 || (uint64_t)o->max_queue_bytes > big)
    return braid__opts_fail(err, "max_queue_bytes", "%zu is outside 1..2^40", o->max_queue_bytes);
  /* The watermarks are checked against the queue cap, so a lowered cap names the watermark
   * that no longer fits (and says which cap), not a bare EINVAL. */
  if (o->high_watermark_bytes < 1 || o->high_watermark_bytes > o->max_queue_bytes)
    return braid__opts_fail(err, "high_watermark_bytes",
                            "%zu must be 1..max_queue_bytes (%zu); lower it with max_queue_bytes",
                            o->high_watermark_bytes, o->max_queue_bytes);
  if (o->low_watermark_bytes >= o->high_watermark_bytes)
    return braid__opts_fail(err, "low_watermark_bytes",
                            "%zu must be below high_watermark_bytes (%zu)", o->low_watermark_bytes,
                            o->high_watermark_bytes);
  if (o->copy_threshold_bytes < 64 || o->copy_threshold_bytes > (1 << 20))
    return braid__opts_fail(err, "copy_threshold_bytes", "%zu is outside 64..2^20",
                            o->copy_threshold_bytes);
  if (o->send_rate_bytes_per_s > big)
    return braid__opts_fail(err, "send_rate_bytes_per_s", "%" PRIu64 " exceeds 2^40",
                            o->send_rate_bytes_per_s);
  if (o->recv_rate_bytes_per_s > big)
    return braid__opts_fail(err, "recv_rate_bytes_per_s", "%" PRIu64 " exceeds 2^40",
                            o->recv_rate_bytes_per_s);
  if (o->idle_timeout_ms > big)
    return braid__opts_fail(err, "idle_timeout_ms", "%" PRIu64 " exceeds 2^40", o->idle_timeout_ms);
  if (o->read_timeout_ms > big)
    return braid__opts_fail(err, "read_timeout_ms", "%" PRIu64 " exceeds 2^40", o->read_timeout_ms);
  if (o->write_timeout_ms > big)
    return braid__opts_fail(err, "write_timeout_ms", "%" PRIu64 " exceeds 2^40",
                            o->write_timeout_ms);
  if (o->close_flush_timeout_ms > big)
    return braid__opts_fail(err, "close_flush_timeout_ms", "%" PRIu64 " exceeds 2^40",
                            o->close_flush_timeout_ms);
  if (o->message_timeout_ms > big)
    return braid__opts_fail(err, "message_timeout_ms", "%" PRIu64 " exceeds 2^40",
                            o->message_timeout_ms);
  return 0;
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void wm_notify(braid_conn_t *c);

static void on_flush(braid__flush_t *f) {
  braid_conn_t *c = BRAID__CONTAINER_OF(f, braid_conn_t, flush);
  if (c->tls && c->tls->deliver_pending) {
    tls_deliver_deferred(c);
    if (c->state == ST_CLOSED)
      return;
  }
  do_flush(c);
  wm_notify(c);
}

int braid__conn_create(braid_loop_t *loop, const braid_conn_opts_t *opts, braid_conn_t **out) {
  braid_conn_opts_t defaults;
  if (!opts) {
    braid_conn_opts_init(&defaults);
    opts = &defaults;
  }
  braid_conn_t *c = braid__calloc(1, sizeof(*c));
  if (!c)
    return BRAID_ENOMEM;
  uint64_t now = braid__now(loop);
  c->send_rl = opts->send_rate_bytes_per_s ? braid__calloc(1, sizeof(*c->send_rl)) : NULL;
  c->recv_rl = opts->recv_rate_bytes_per_s ? braid__calloc(1, sizeof(*c->recv_rl)) : NULL;
  if ((opts->send_rate_bytes_per_s && !c->send_rl) ||
      (opts->recv_rate_bytes_per_s && !c->recv_rl)) {
    braid__free(c->send_rl);
    braid__free(c->recv_rl);
    braid__free(c);
    return BRAID_ENOMEM;
  }
  int rc = uv_tcp_init(loop->uv, &c->tcp);
  if (rc) {
    braid__free(c->send_rl);
    braid__free(c->recv_rl);
    braid__free(c);
    return rc;
  }
  c->tcp.data = c;
  c->open_handles = 1;
  c->loop = loop;
  c->flush.fn = on_flush;
  c->idle_timeout_ms = opts->idle_timeout_ms;
  c->read_timeout_ms = opts->read_timeout_ms;
  c->write_timeout_ms = opts->write_timeout_ms;
  c->close_flush_timeout_ms = opts->close_flush_timeout_ms;
  c->message_timeout_ms = opts->message_timeout_ms;
  c->high_wm = opts->high_watermark_bytes;
  c->low_wm = opts->low_watermark_bytes;
  c->max_queue = opts->max_queue_bytes;
  c->copy_threshold = opts->copy_threshold_bytes;
  if (c->send_rl)
    braid__ratelimit_init(c->send_rl, opts->send_rate_bytes_per_s, 0, now);
  if (c->recv_rl)
    braid__ratelimit_init(c->recv_rl, opts->recv_rate_bytes_per_s, 0, now);
  c->send_group = opts->send_group;
  c->recv_group = opts->recv_group;
  if (c->send_group)
    braid__ratelimit_attach(c->send_group);
  if (c->recv_group)
    braid__ratelimit_attach(c->recv_group);
  c->state = ST_CREATED;
  c->stats.created_ms = now;
  braid__loop_ref(loop);
  *out = c;
  return 0;
}

int braid__conn_established(braid_conn_t *c, const braid_sockopts_t *so) {
  if (so) {
    uv_os_fd_t fd;
    int rc = uv_fileno((uv_handle_t *)&c->tcp, &fd);
    if (rc)
      return rc;
    rc = braid_sockopts_apply(fd, so, 0);
    if (rc)
      return rc;
  }
  uint64_t now = braid__now(c->loop);
  c->state = ST_OPEN;
  c->last_read_ms = c->last_activity_ms = c->last_progress_ms = now;
  arm_timer(c);
  return 0;
}

void braid__conn_discard(braid_conn_t *c) {
  c->discarded = true;
  if (c->tls)
    c->tls->ready = NULL; /* the caller gave up on it: no word back */
  close_handles(c, BRAID_ECANCELED);
}

void braid__conn_set_owner(braid_conn_t *c, braid__conn_owner_t *owner) {
  c->owner = owner;
}

void braid__conn_set_drain_hook(braid_conn_t *c, braid__conn_drain_fn fn, void *arg) {
  c->drain_fn = fn;
  c->drain_arg = arg;
}

void braid__conn_message_pending(braid_conn_t *c, bool pending, unsigned completed) {
  if (c->state == ST_CLOSED || (pending == c->msg_pending && (!pending || completed == 0)))
    return;
  c->msg_pending = pending;
  if (!pending)
    return;
  /* A new message is partly here: its first bytes came with the read being handled now. */
  c->msg_started_ms = braid__now(c->loop);
  c->msg_elapsed_ms = 0;
  arm_timer(c);
}

void braid__conn_set_watermark_hook(braid_conn_t *c, braid__conn_wm_fn fn, void *arg) {
  c->wm_fn = fn;
  c->wm_arg = arg;
}

void braid__conn_notify_drain(braid_conn_t *c) {
  if (c->tls && !c->tls->hs_done) {
    /* Still in its handshake: nothing of it is in progress for anyone. */
    braid_conn_close(c);
    return;
  }
  braid__conn_drain_fn fn = c->drain_fn;
  c->drain_fn = NULL; /* once: a drain is not undone */
  if (c->drained)
    return;
  c->drained = true;
  if (fn && braid_conn_is_open(c))
    fn(c, c->drain_arg);
  /* The user's notice, for raw connections (and anything else the user runs on it). */
  if (c->cbs.on_drain && braid_conn_is_open(c))
    c->cbs.on_drain(c, c->data);
}

braid__node_t *braid__conn_node(braid_conn_t *c) {
  return &c->owner_node;
}

braid_conn_t *braid__conn_from_node(braid__node_t *node) {
  return BRAID__CONTAINER_OF(node, braid_conn_t, owner_node);
}

int braid_conn_set_callbacks(braid_conn_t *c, const braid_conn_callbacks_t *cbs) {
  if (!c || !cbs)
    return BRAID_EINVAL;
  c->cbs = *cbs;
  return 0;
}

braid_conn_callbacks_t braid__conn_callbacks(const braid_conn_t *c) {
  return c->cbs;
}

void braid_conn_set_data(braid_conn_t *c, void *data) {
  c->data = data;
}

void *braid_conn_get_data(const braid_conn_t *c) {
  return c->data;
}

/* ---- the write queue ------------------------------------------------------------------ */

static seg_t *seg_at(braid_conn_t *c, unsigned i) {
  return &c->segs[(c->seg_head + i) & (c->seg_cap - 1)];
}

_Static_assert(POOLED_SEGS * sizeof(seg_t) <= BRAID__SEGS_SIZE, "pooled ring too small");

static void segs_release(braid_conn_t *c) {
  if (c->seg_cap == POOLED_SEGS)
    braid__loop_segs_put(c->loop, c->segs);
  else
    braid__free(c->segs);
  c->segs = NULL;
  c->seg_cap = c->seg_head = 0;
}

/* Makes room for k more segments. */
static int seg_reserve(braid_conn_t *c, unsigned k) {
  if (c->seg_cap - c->seg_count >= k)
    return 0;
  unsigned cap = c->seg_cap ? c->seg_cap : POOLED_SEGS;
  while (cap - c->seg_count < k)
    cap *= 2;
  seg_t *n = cap == POOLED_SEGS ? braid__loop_segs_get(c->loop)
                                : braid__malloc(cap * sizeof(*n));
  if (!n)
    return BRAID_ENOMEM;
  for (unsigned i = 0; i < c->seg_count; i++)
    n[i] = *seg_at(c, i);
  if (c->segs)
    segs_release(c);
  c->segs = n;
  c->seg_cap = cap;
  c->seg_head = 0;
  return 0;
}

static void release_chunk(braid_conn_t *c, chunk_t *ch) {
  if (--ch->refs > 0)
    return;
  if (ch == c->tail) {
    ch->used = 0; /* keep appending to it from the start */
    return;
  }
  braid__loop_chunk_put(c->loop, ch);
}

static void seg_release(braid_conn_t *c, seg_t *s) {
  switch (s->kind) {
  case SEG_CHUNK:
    release_chunk(c, s->owner);
    break;
  case SEG_BLOB:
    braid_blob_unref(s->owner);
    break;
  case SEG_HEAP:
    braid__free(s->owner);
    break;
  default:
    break;
  }
}

/* Pops the head segment, releasing what it holds, and runs its callback. The queue is
 * consistent before the callback runs, so the callback may write or close. */
static void seg_complete_head(braid_conn_t *c, int status) {
  seg_t s = *seg_at(c, 0);
  c->seg_head = (c->seg_head + 1) & (c->seg_cap - 1);
  c->seg_count--;
  c->queued -= s.len;
  seg_release(c, &s);
  if (s.cb)
    s.cb(c, status, s.arg);
}

/* Tells the user's on_watermark where the queue stands, if that changed since it was last
 * told. Runs from the loop only (the flush pass, a write completion), never from inside a
 * braid_conn_write*() call (docs/API.md rule 4): crossings are noted at once (state, stats,
 * the protocol's hook) and reported here, so a crossing that is undone before the flush
 * (queue up then down again) is not reported at all, and reports still alternate. */
static void wm_notify(braid_conn_t *c) {
  if (c->wm_reported == c->above_wm)
    return;
  c->wm_reported = c->above_wm;
  if (c->cbs.on_watermark && c->state == ST_OPEN)
    c->cbs.on_watermark(c, c->above_wm, c->data);
}

static void check_watermarks(braid_conn_t *c) {
  if (!c->above_wm && c->queued >= c->high_wm) {
    c->above_wm = true;
    c->stats.watermark_pauses++;
  } else if (c->above_wm && c->queued <= c->low_wm) {
    c->above_wm = false;
  } else {
    return;
  }
  if (c->wm_fn)
    c->wm_fn(c, c->above_wm, c->wm_arg);
  /* Crossings are rare: the report waits for the flush pass, which a write has already
   * asked for, or is asked for here. */
  braid__loop_want_flush(c->loop, &c->flush);
}

/* The kernel took n bytes from the head of the queue: complete what they cover, plus any
 * empty segments that now stand at the head. */
static void consume(braid_conn_t *c, size_t n) {
  c->stats.bytes_written += n;
  /* Runs to the end even if a callback closes the connection: the kernel took these bytes,
   * so their writes succeeded. */
  while (c->seg_count > 0) {
    seg_t *s = seg_at(c, 0);
    if (s->len > n) {
      s->base += n;
      s->len -= n;
      c->queued -= n;
      break;
    }
    n -= s->len;
    seg_complete_head(c, 0);
  }
  check_watermarks(c);
}

static void drop_tail_chunk(braid_conn_t *c) {
  chunk_t *ch = c->tail;
  if (!ch)
    return;
  c->tail = NULL;
  if (ch->refs == 0)
    braid__loop_chunk_put(c->loop, ch);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  braid_conn_t *c = req->data;
  braid__free(req);
  if (status < 0 && status != UV_ECANCELED)
    close_handles(c, status);
}

/* Everything queued has reached the kernel. */
static void on_drained(braid_conn_t *c) {
  /* An idle connection keeps no write memory: the chunk goes back to the loop's pool. */
  drop_tail_chunk(c);
  if (c->segs)
    segs_release(c);
  if (c->state == ST_CLOSING) {
    close_handles(c, c->close_status);
    return;
  }
  if (c->shutdown_requested && !c->shutdown_sent && c->state == ST_OPEN) {
    uv_shutdown_t *req = braid__malloc(sizeof(*req));
    if (!req) {
      close_handles(c, BRAID_ENOMEM);
      return;
    }
    req->data = c;
    c->shutdown_sent = true;
    int rc = uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc) {
      braid__free(req);
      close_handles(c, rc);
    }
  }
}

/* len more bytes are queued: counters, the write deadline, the flush, the watermarks. */
static void note_queued(braid_conn_t *c, size_t len) {
  bool was_empty = c->queued == 0;
  c->queued += len;
  c->stats.writes++;
  if (c->queued > c->stats.max_queued_bytes)
    c->stats.max_queued_bytes = c->queued;
  if (was_empty && c->write_timeout_ms) {
    c->last_progress_ms = braid__now(c->loop);
    arm_timer(c);
  }
  braid__loop_want_flush(c->loop, &c->flush);
  check_watermarks(c);
}

static int queue_write(braid_conn_t *c, uint8_t kind, const char *base, size_t len, void *owner,
                       braid_write_cb cb, void *arg) {
  int rc = seg_reserve(c, 1);
  if (rc)
    return rc;
  seg_t *s = seg_at(c, c->seg_count);
  *s = (seg_t){base, len, owner, cb, arg, kind};
  c->seg_count++;
  note_queued(c, len);
  return 0;
}

static int write_check(braid_conn_t *c, size_t len) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state != ST_OPEN || c->shutdown_requested)
    return BRAID_ECLOSED;
  if (len > c->max_queue - c->queued)
    return BRAID_EQUEUEFULL;
  return 0;
}

/* Appends n bytes at the tail chunk's end as a segment, extending the last segment when the
 * bytes land right after it and it has no callback of its own (its callback would then run
 * too late). A segment slot is reserved. No accounting: the caller does it once. */
static void append_piece(braid_conn_t *c, chunk_t *ch, const char *data, size_t n,
                         braid_write_cb cb, void *arg) {
  char *dst = ch->data + ch->used;
  memcpy(dst, data, n);
  ch->used += n;
  if (c->seg_count > 0) {
    seg_t *last = seg_at(c, c->seg_count - 1);
    if (last->kind == SEG_CHUNK && last->owner == ch && last->base + last->len == dst &&
        !last->cb) {
      last->len += n;
      last->cb = cb;
      last->arg = arg;
      return;
    }
  }
  *seg_at(c, c->seg_count) = (seg_t){dst, n, ch, cb, arg, SEG_CHUNK};
  c->seg_count++;
  ch->refs++;
}

/* Copies data[0..len) into the queue through pooled chunks, cb on its last byte. Everything
 * that can fail is taken first, so on error nothing is queued. */
static int copy_into_chunks(braid_conn_t *c, const char *data, size_t len, braid_write_cb cb,
                            void *arg) {
  size_t room = c->tail ? c->tail->size - c->tail->used : 0;
  size_t over = len > room ? len - room : 0;
  unsigned want = (unsigned)((over + CHUNK_DATA_SIZE - 1) / CHUNK_DATA_SIZE);
  chunk_t *fresh[MAX_FRESH_CHUNKS];
  unsigned got = 0;
  for (; got < want; got++) {
    fresh[got] = braid__loop_chunk_get(c->loop);
    if (!fresh[got])
      break;
    *fresh[got] = (chunk_t){CHUNK_DATA_SIZE, 0, 0, NULL};
  }
  if (got < want || seg_reserve(c, want + 1)) {
    while (got > 0)
      braid__loop_chunk_put(c->loop, fresh[--got]);
    return BRAID_ENOMEM;
  }
  unsigned next = 0;
  size_t left = len;
  while (left > 0) {
    if (!c->tail || c->tail->used == c->tail->size) {
      drop_tail_chunk(c);
      c->tail = fresh[next++];
    }
    size_t n = c->tail->size - c->tail->used;
    if (n > left)
      n = left;
    append_piece(c, c->tail, data, n, left == n ? cb : NULL, arg);
    data += n;
    left -= n;
  }
  note_queued(c, len);
  return 0;
}

/* ---- write chains ---------------------------------------------------------------------- */

_Static_assert(sizeof(chunk_t) <= BRAID__CHUNK_SIZE - BRAID__CHUNK_DATA, "chunk header");

int braid__wchain_append(braid_loop_t *loop, braid__wchain_t *w, const void *data,
                         size_t len) {
  uv_buf_t part = uv_buf_init((char *)data, (unsigned)len);
  return len > UINT_MAX ? BRAID_ETOOBIG : braid__wchain_appendv(loop, w, &part, 1);
}

int braid__wchain_appendv(braid_loop_t *loop, braid__wchain_t *w, const uv_buf_t *parts,
                          unsigned nparts) {
  size_t len = 0;
  for (unsigned i = 0; i < nparts; i++)
    len += parts[i].len;
  size_t room = w->tail ? w->tail->size - w->tail->used : 0;
  chunk_t *first_new = NULL, *last_new = NULL;
  /* Take every chunk first, so a failure leaves w as it was. */
  for (size_t over = len > room ? len - room : 0; over > 0;) {
    chunk_t *ch = braid__loop_chunk_get(loop);
    if (!ch) {
      while (first_new) {
        chunk_t *next = first_new->next;
        braid__loop_chunk_put(loop, first_new);
        first_new = next;
      }
      return BRAID_ENOMEM;
    }
    *ch = (chunk_t){CHUNK_DATA_SIZE, 0, 0, NULL};
    if (last_new)
      last_new->next = ch;
    else
      first_new = ch;
    last_new = ch;
    over = over > CHUNK_DATA_SIZE ? over - CHUNK_DATA_SIZE : 0;
  }
  unsigned part = 0;
  const char *p = nparts ? parts[0].base : NULL;
  size_t left = nparts ? parts[0].len : 0;
  for (;;) {
    while (left == 0 && ++part < nparts) {
      p = parts[part].base;
      left = parts[part].len;
    }
    if (left == 0)
      break;
    chunk_t *t = w->tail;
    size_t n = t ? t->size - t->used : 0;
    if (n > left)
      n = left;
    if (n) {
      memcpy(t->data + t->used, p, n);
      t->used += n;
      p += n;
      left -= n;
      continue;
    }
    chunk_t *ch = first_new;
    first_new = ch->next;
    ch->next = NULL;
    if (w->tail)
      w->tail->next = ch;
    else
      w->head = ch;
    w->tail = ch;
    w->nchunks++;
  }
  w->len += len;
  return 0;
}

/* Visits w's bytes [off, off + len), chunk piece by chunk piece. */
static void wchain_span(const braid__wchain_t *w, size_t off, size_t len, char *buf,
                        bool into_chain) {
  for (chunk_t *ch = w->head; ch && len; ch = ch->next) {
    if (off >= ch->used) {
      off -= ch->used;
      continue;
    }
    size_t n = ch->used - off;
    if (n > len)
      n = len;
    if (into_chain)
      memcpy(ch->data + off, buf, n);
    else
      memcpy(buf, ch->data + off, n);
    buf += n;
    len -= n;
    off = 0;
  }
}

void braid__wchain_overwrite(braid__wchain_t *w, size_t off, const void *data, size_t len) {
  wchain_span(w, off, len, (char *)data, true);
}

void braid__wchain_copy_out(const braid__wchain_t *w, size_t off, void *dst, size_t len) {
  wchain_span(w, off, len, dst, false);
}

void braid__wchain_free(braid_loop_t *loop, braid__wchain_t *w) {
  while (w->head) {
    chunk_t *next = w->head->next;
    braid__loop_chunk_put(loop, w->head);
    w->head = next;
  }
  *w = (braid__wchain_t){NULL, NULL, 0, 0};
}

int braid__conn_write_wchain(braid_conn_t *c, braid__wchain_t *w) {
  int rc = write_check(c, w->len);
  if (rc)
    return rc;
  if (w->len == 0) {
    braid__wchain_free(c->loop, w);
    c->stats.writes++;
    return 0;
  }
  if (seg_reserve(c, w->nchunks))
    return BRAID_ENOMEM;
  for (chunk_t *ch = w->head; ch;) {
    chunk_t *next = ch->next;
    ch->next = NULL;
    /* Every chunk of a chain holds bytes: append takes only the chunks it fills. */
    *seg_at(c, c->seg_count) = (seg_t){ch->data, ch->used, ch, NULL, NULL, SEG_CHUNK};
    c->seg_count++;
    ch->refs = 1;
    ch = next;
  }
  /* The chain's last chunk becomes the one later small writes append to: the next frame's
   * header then joins its iovec instead of taking a chunk of its own. */
  if (w->tail->used < w->tail->size) {
    drop_tail_chunk(c);
    c->tail = w->tail;
  }
  size_t len = w->len;
  *w = (braid__wchain_t){NULL, NULL, 0, 0};
  note_queued(c, len);
  return 0;
}

/* An empty write: its callback runs when everything before it is written. */
static int queue_empty_write(braid_conn_t *c, braid_write_cb cb, void *arg) {
  if (c->seg_count > 0 && cb) {
    seg_t *last = seg_at(c, c->seg_count - 1);
    if (!last->cb) {
      last->cb = cb;
      last->arg = arg;
      note_queued(c, 0);
      return 0;
    }
  }
  return queue_write(c, SEG_BORROW, NULL, 0, NULL, cb, arg);
}

/* Queues data[0..len) after some of the message already went to the kernel (or after the
 * kernel refused it): the peer has the start of a message, so a write that cannot be
 * completed must end the connection instead of leaving half a message on the wire, where the
 * peer would read whatever comes next as the rest of it. Closes with a reset and the error,
 * and returns BRAID_ECLOSED (nothing more is queued; cb is never called). */
static int fail_started_write(braid_conn_t *c, int err) {
  c->reset_on_close = true;
  close_handles(c, err);
  return BRAID_ECLOSED;
}

/* Queues a copy of data[0..len) (the part the kernel did not take). */
static int queue_copy(braid_conn_t *c, const void *data, size_t len, braid_write_cb cb,
                      void *arg) {
  if (len == 0)
    return queue_empty_write(c, cb, arg);
  if (len < HEAP_COPY_MIN)
    return copy_into_chunks(c, data, len, cb, arg);
  void *copy = braid__malloc(len);
  if (!copy)
    return BRAID_ENOMEM;
  memcpy(copy, data, len);
  int rc = queue_write(c, SEG_HEAP, copy, len, copy, cb, arg);
  if (rc)
    braid__free(copy);
  return rc;
}

static int sock_try_write(braid_conn_t *c, const uv_buf_t *iov, unsigned n_iov);

/* braid_conn_write() after write_check() passed for at least len bytes. A write is queued
 * whole or not at all; once part of it reached the kernel, a failure to queue the rest
 * closes the connection (fail_started_write). */
static int write_body(braid_conn_t *c, const void *data, size_t len, braid_write_cb cb,
                      void *arg) {
  if (!data && len)
    return BRAID_EINVAL;
  if (len >= c->copy_threshold && c->seg_count == 0 && !c->write_inflight && !c->in_flush &&
      !c->send_rl && !c->send_group && !c->tls) {
    /* Nothing to coalesce with: offer it to the kernel from the caller's buffer, and copy
     * only what it does not take. */
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)(len > MAX_IOV_BYTES ? MAX_IOV_BYTES : len));
    int n = sock_try_write(c, &b, 1);
    c->stats.write_syscalls++;
    if (n < 0 && n != UV_EAGAIN) {
      /* The connection failed (a reset peer): end it now with the real error. Queueing
       * the bytes instead would only meet EPIPE on the next write. */
      close_handles(c, n);
      return BRAID_ECLOSED;
    }
    if (n > 0) {
      c->stats.bytes_written += (uint64_t)n;
      c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
      data = (const char *)data + n;
      len -= (size_t)n;
      int rc;
      if (len == 0 && !cb) {
        c->stats.writes++;
        rc = 0;
      } else {
        rc = queue_copy(c, data, len, cb, arg);
      }
      return rc ? fail_started_write(c, rc) : 0;
    }
  }
  return queue_copy(c, data, len, cb, arg);
}

int braid_conn_write(braid_conn_t *c, const void *data, size_t len, braid_write_cb cb,
                     void *arg) {
  int rc = write_check(c, len);
  return rc ? rc : write_body(c, data, len, cb, arg);
}

int braid__conn_write_whole(braid_conn_t *c, const void *head, size_t hlen,
                            const uv_buf_t *parts, unsigned nparts, bool *partial) {
  size_t len = hlen;
  for (unsigned i = 0; i < nparts; i++)
    len += parts[i].len;
  *partial = false;
  int rc = write_check(c, len);
  if (rc)
    return rc;
  bool started = false;
  if (hlen) {
    rc = write_body(c, head, hlen, NULL, NULL);
    started = rc == 0;
  }
  for (unsigned i = 0; rc == 0 && i < nparts; i++) {
    rc = write_body(c, parts[i].base, parts[i].len, NULL, NULL);
    started = started || (rc == 0 && parts[i].len);
  }
  if (rc == 0)
    return 0;
  *partial = started;
  if (c->state == ST_CLOSED) /* write_body ended the connection */
    return BRAID_ECLOSED;
  return started ? fail_started_write(c, rc) : rc;
}

int braid_conn_write_borrow(braid_conn_t *c, const void *data, size_t len, braid_write_cb cb,
                            void *arg) {
  int rc = write_check(c, len);
  if (rc)
    return rc;
  if (!cb || (!data && len))
    return BRAID_EINVAL;
  return queue_write(c, SEG_BORROW, data, len, NULL, cb, arg);
}

int braid_conn_write_blob(braid_conn_t *c, braid_blob_t *blob, size_t offset, size_t len,
                          braid_write_cb cb, void *arg) {
  int rc = write_check(c, len);
  if (rc)
    return rc;
  if (!blob || offset > braid_blob_len(blob) || len > braid_blob_len(blob) - offset)
    return BRAID_EINVAL;
  rc = queue_write(c, SEG_BLOB, (const char *)braid_blob_data(blob) + offset, len, blob, cb,
                   arg);
  if (rc == 0)
    braid_blob_ref(blob);
  return rc;
}

/* ---- flushing ------------------------------------------------------------------------- */

/* uv_try_write() with MSG_NOSIGNAL: writes what the kernel takes now, without blocking, and
 * returns the bytes written, UV_EAGAIN when it took none, or the error (UV_ECONNRESET,
 * UV_EPIPE, ...). A write to a socket whose peer reset raises SIGPIPE unless the flag is
 * given, and libuv's writev() cannot give it; every write braid makes itself goes through
 * here. (libuv's own uv_write, for what the kernel had no room for, still uses writev():
 * braid_loop_new() covers that path, see loop.h.) */
static int sock_try_write(braid_conn_t *c, const uv_buf_t *iov, unsigned n_iov) {
#if defined(MSG_NOSIGNAL) && !defined(_WIN32)
  _Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                     offsetof(uv_buf_t, base) == offsetof(struct iovec, iov_base) &&
                     offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
                 "uv_buf_t is an iovec on unix");
  /* As uv_try_write: never overtake bytes libuv still holds. */
  if (c->write_inflight)
    return UV_EAGAIN;
  uv_os_fd_t fd;
  int rc = uv_fileno((uv_handle_t *)&c->tcp, &fd);
  if (rc)
    return rc;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = (struct iovec *)iov;
  msg.msg_iovlen = n_iov;
  ssize_t n;
  do
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n >= 0)
    return (int)n; /* the kernel writes at most INT_MAX & PAGE_MASK bytes per call */
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
    return UV_EAGAIN;
  return -errno;
#else
  return uv_try_write((uv_stream_t *)&c->tcp, iov, n_iov);
#endif
}

/* Grants up to want bytes from the send buckets; 0 means wait (the timer is armed). */
static size_t send_allowance(braid_conn_t *c, size_t want) {
  if (!c->send_rl && !c->send_group)
    return want;
  uint64_t now = braid__now(c->loop);
  uint64_t got = want;
  if (c->send_rl)
    got = braid__ratelimit_take(c->send_rl, now, got);
  if (got && c->send_group) {
    uint64_t g = braid__ratelimit_take(c->send_group, now, got);
    if (c->send_rl)
      braid__ratelimit_refund(c->send_rl, got - g);
    got = g;
  }
  if (got == 0) {
    uint64_t wait = 0;
    if (c->send_rl)
      wait = braid__ratelimit_wait_ms(c->send_rl, now, want);
    if (c->send_group) {
      uint64_t w = braid__ratelimit_wait_ms(c->send_group, now, want);
      wait = w > wait ? w : wait;
    }
    c->rate_wait_until = now + wait;
    c->rate_paused = true;
    c->stats.rate_waits++;
    arm_timer(c);
  }
  return (size_t)got;
}

static void refund_send(braid_conn_t *c, size_t unused) {
  if (!unused)
    return;
  if (c->send_rl)
    braid__ratelimit_refund(c->send_rl, unused);
  if (c->send_group)
    braid__ratelimit_refund(c->send_group, unused);
}

/* Fills iov from the queue, skipping skip bytes, up to limit bytes. Returns the count. */
static unsigned fill_iov(braid_conn_t *c, uv_buf_t *iov, unsigned max, size_t skip, size_t limit,
                         size_t *total) {
  unsigned n = 0;
  size_t sum = 0;
  for (unsigned i = 0; i < c->seg_count && n < max && sum < limit; i++) {
    seg_t *s = seg_at(c, i);
    if (s->len <= skip) {
      skip -= s->len;
      continue;
    }
    size_t len = s->len - skip;
    if (len > MAX_IOV_BYTES) /* uv_buf_t lengths are unsigned int */
      len = MAX_IOV_BYTES;
    if (len > limit - sum)
      len = limit - sum;
    iov[n++] = uv_buf_init((char *)s->base + skip, (unsigned)len);
    sum += len;
    if (len < s->len - skip)
      break; /* the rest of this segment goes first in the next round */
    skip = 0;
  }
  *total = sum;
  return n;
}

static void after_write(uv_write_t *req, int status) {
  braid_conn_t *c = req->data;
  c->write_inflight = false;
  if (status < 0) {
    /* UV_ECANCELED: the handle is closing; the final close completes the segments. */
    if (status != UV_ECANCELED)
      close_handles(c, status);
    return;
  }
  size_t n = c->inflight;
  c->inflight = 0;
  c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
  consume(c, n);
  do_flush(c);
  wm_notify(c);
}

static void tls_flush(braid_conn_t *c);

static void do_flush(braid_conn_t *c) {
  if (c->tls) {
    tls_flush(c);
    return;
  }
  if (c->in_flush || c->write_inflight || c->state == ST_CLOSED || c->state == ST_CREATED)
    return;
  c->in_flush = true;
  while (c->state != ST_CLOSED) {
    if (c->seg_count == 0) {
      c->in_flush = false;
      on_drained(c);
      return;
    }
    if (c->queued == 0) { /* only empty segments: they complete in order, now */
      consume(c, 0);
      continue;
    }
    size_t allow = send_allowance(c, c->queued);
    if (allow == 0)
      break;
    uv_buf_t iov[MAX_IOVS];
    size_t total;
    unsigned n_iov = fill_iov(c, iov, MAX_IOVS, 0, allow, &total);
    int n = sock_try_write(c, iov, n_iov);
    c->stats.write_syscalls++;
    if (n == UV_EAGAIN)
      n = 0;
    if (n < 0) {
      refund_send(c, allow);
      c->in_flush = false;
      close_handles(c, n);
      return;
    }
    refund_send(c, allow - total);
    if ((size_t)n < total) {
      /* The kernel is full: hand the rest of this round to libuv, which writes it when the
       * socket drains; more rounds follow from after_write. */
      if (!c->wreq) {
        c->wreq = braid__malloc(sizeof(*c->wreq));
        if (!c->wreq) {
          c->in_flush = false;
          close_handles(c, BRAID_ENOMEM);
          return;
        }
        c->wreq->data = c;
      }
      size_t rest;
      n_iov = fill_iov(c, iov, MAX_IOVS, (size_t)n, total - (size_t)n, &rest);
      int rc = uv_write(c->wreq, (uv_stream_t *)&c->tcp, iov, n_iov, after_write);
      if (rc) {
        c->in_flush = false;
        close_handles(c, rc);
        return;
      }
      c->write_inflight = true;
      c->inflight = rest;
      c->stats.write_syscalls++;
      if (n > 0) {
        c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
        consume(c, (size_t)n);
      }
      break;
    }
    c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
    consume(c, (size_t)n);
  }
  c->in_flush = false;
}

int braid_conn_flush(braid_conn_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state == ST_CLOSED)
    return BRAID_ECLOSED;
  braid__loop_cancel_flush(&c->flush);
  do_flush(c);
  return 0;
}

/* ---- reading -------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  braid_conn_t *c = h->data;
  braid__loop_read_alloc(c->loop, buf);
}

/* After n bytes arrived: pays for them, and pauses reading while the buckets are in debt. */
static void recv_account(braid_conn_t *c, size_t n) {
  uint64_t now = braid__now(c->loop);
  int64_t debt = 0;
  if (c->recv_rl) {
    braid__ratelimit_consume(c->recv_rl, now, n);
    debt = c->recv_rl->tokens < 0 ? -c->recv_rl->tokens : 0;
  }
  if (c->recv_group) {
    braid__ratelimit_consume(c->recv_group, now, n);
    if (c->recv_group->tokens < 0 && -c->recv_group->tokens > debt)
      debt = -c->recv_group->tokens;
  }
  if (debt == 0 || !c->reading)
    return;
  uint64_t wait = 0;
  if (c->recv_rl && c->recv_rl->tokens < 0)
    wait = braid__ratelimit_wait_ms(c->recv_rl, now, 1);
  if (c->recv_group && c->recv_group->tokens < 0) {
    uint64_t w = braid__ratelimit_wait_ms(c->recv_group, now, 1);
    wait = w > wait ? w : wait;
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
  c->rate_paused = true;
  c->rate_wait_until = now + wait;
  c->stats.rate_waits++;
  arm_timer(c);
}

static void tls_on_read(braid_conn_t *c, const uv_buf_t *buf, size_t n);
static void tls_on_eof(braid_conn_t *c);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  braid_conn_t *c = stream->data;
  if (nread > 0 && c->tls) {
    c->last_read_ms = c->last_activity_ms = braid__now(c->loop);
    if (c->recv_rl || c->recv_group)
      recv_account(c, (size_t)nread);
    tls_on_read(c, buf, (size_t)nread);
    braid__loop_read_release(c->loop, buf);
    return;
  }
  if (nread > 0) {
    c->stats.bytes_read += (uint64_t)nread;
    c->stats.reads++;
    c->last_read_ms = c->last_activity_ms = braid__now(c->loop);
    if (c->recv_rl || c->recv_group)
      recv_account(c, (size_t)nread);
    if (c->state == ST_OPEN && c->cbs.on_read)
      c->cbs.on_read(c, 0, (const uint8_t *)buf->base, (size_t)nread, c->data);
    braid__loop_read_release(c->loop, buf);
    return;
  }
  braid__loop_read_release(c->loop, buf);
  if (nread == 0)
    return;
  c->reading = false;
  if (nread == UV_EOF) {
    /* libuv stopped reading; the connection stays open for writing. */
    uv_read_stop(stream);
    c->peer_eof = true;
    if (c->tls) {
      tls_on_eof(c);
      return;
    }
    if (c->state != ST_OPEN)
      return;
    /* The end of the peer's stream is not a read error: it has its own callback, so the
     * natural `if (status < 0) return;` in a read callback stays right. Without one, the
     * connection closes gracefully (what nearly every protocol does at EOF). */
    if (c->cbs.on_eof)
      c->cbs.on_eof(c, c->data);
    else
      braid_conn_close(c);
    return;
  }
  int deliver = c->state == ST_OPEN;
  close_handles(c, (int)nread);
  if (deliver && c->cbs.on_read)
    c->cbs.on_read(c, (int)nread, NULL, 0, c->data);
}

static bool tls_handshaking(const braid_conn_t *c) {
  return c->tls && !c->tls->hs_done;
}

static int start_reading(braid_conn_t *c) {
  if (c->reading || c->peer_eof || c->rate_paused)
    return 0;
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc == 0)
    c->reading = true;
  return rc;
}

int braid_conn_read_start(braid_conn_t *c) {
  if (!c || !c->cbs.on_read)
    return BRAID_EINVAL;
  if (c->state != ST_OPEN)
    return BRAID_ECLOSED;
  if (!c->want_read) {
    uint64_t now = braid__now(c->loop);
    c->last_read_ms = now;
    /* A partial message's clock ran only while we read: resume it where it stopped. */
    if (c->msg_pending)
      c->msg_started_ms = now - c->msg_elapsed_ms;
  }
  c->want_read = true;
  int rc = start_reading(c);
  if (rc == 0)
    arm_timer(c);
  if (rc == 0 && c->tls && c->tls->hs_done && !c->tls->eof &&
      (c->tls->eof_pending || braid__tls_has_input(c->tls->sess))) {
    /* Decrypted bytes wait in the session, and no socket read will bring them: deliver
     * them from the loop (never from inside this call). */
    c->tls->deliver_pending = true;
    braid__loop_want_flush(c->loop, &c->flush);
  }
  return rc;
}

int braid_conn_read_stop(braid_conn_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state != ST_OPEN && c->state != ST_CLOSING)
    return BRAID_ECLOSED;
  if (c->want_read && c->msg_pending)
    c->msg_elapsed_ms = braid__now(c->loop) - c->msg_started_ms;
  c->want_read = false;
  if (c->reading && !tls_handshaking(c)) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
  return 0;
}

/* ---- TLS ------------------------------------------------------------------------------ */

int braid__conn_tls_start(braid_conn_t *c, braid_tls_ctx_t *ctx, const char *server_name,
                          braid__conn_ready_fn fn, void *arg) {
  if (c->state != ST_OPEN || c->tls)
    return BRAID_EINVAL;
  tls_state_t *t = braid__calloc(1, sizeof(*t));
  if (!t)
    return BRAID_ENOMEM;
  bool server = braid__tls_ctx_is_server(ctx);
  int rc = braid__tls_sess_new(&t->sess, ctx, server, server_name, &t->out);
  if (rc) {
    braid__free(t);
    return rc;
  }
  braid__tls_ctx_ref(ctx);
  t->ctx = ctx;
  t->ready = fn;
  t->ready_arg = arg;
  uint64_t now = braid__now(c->loop);
  uint64_t timeout = braid__tls_ctx_handshake_timeout(ctx);
  t->hs_started_ms = now;
  t->hs_deadline_ms = timeout ? now + timeout : UINT64_MAX;
  c->tls = t;
  if (!server) {
    /* The ClientHello: it goes out at the end of this loop iteration. */
    rc = braid__tls_handshake(t->sess);
    if (rc < 0) {
      c->tls = NULL;
      braid__tls_sess_free(t->sess);
      braid__tls_out_free(&t->out);
      braid_tls_ctx_free(ctx);
      braid__free(t);
      return rc;
    }
    braid__loop_want_flush(c->loop, &c->flush);
  }
  rc = start_reading(c);
  if (rc == 0)
    arm_timer(c);
  /* On failure c->tls stays: the caller discards the connection, which frees it. */
  return rc;
}

const braid__tls_sess_t *braid__conn_tls_session(const braid_conn_t *c, uint64_t *hs_ms) {
  if (!c->tls || !c->tls->hs_done)
    return NULL;
  *hs_ms = c->tls->hs_ms;
  return c->tls->sess;
}

const braid__tls_sess_t *braid__conn_tls_any_session(const braid_conn_t *c) {
  return c->tls ? c->tls->sess : NULL;
}

static bool is_verify_error(int err) {
  return err == BRAID_ETLSVERIFY || err == BRAID_ETLSHOSTNAME || err == BRAID_ETLSEXPIRED;
}

/* Sends what the session has for the peer now, if the kernel takes it: an alert before the
 * connection closes, so the peer learns why. Best effort; never waits. */
static void tls_send_now(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  size_t pend = braid__tls_out_pending(&t->out);
  if (pend == 0 || c->write_inflight || c->state == ST_CLOSED)
    return;
  uv_buf_t b = uv_buf_init((char *)t->out.buf + t->out.off,
                           (unsigned)(pend > MAX_IOV_BYTES ? MAX_IOV_BYTES : pend));
  int n = sock_try_write(c, &b, 1);
  if (n > 0)
    braid__tls_out_consume(&t->out, (size_t)n);
}

static void tls_notify_now(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  if (t->notify_queued || !t->hs_done)
    return;
  t->notify_queued = true;
  if (braid__tls_out_pending(&t->out) == 0 && braid__tls_close_notify(t->sess) == 0)
    tls_send_now(c);
}

static void tls_fail_handshake(braid_conn_t *c, int err) {
  tls_state_t *t = c->tls;
  braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_FAILED);
  if (is_verify_error(err))
    braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_VERIFY);
  if (!c->discarded)
    braid__log(c->loop, BRAID_LOG_WARN, "tls: handshake failed: %s (%s)",
               braid__tls_error_text(t->sess), braid_err_name(err));
  tls_send_now(c); /* the alert that says why */
  close_handles(c, err);
}

/* Ends the connection for a failure on an established session: the read callback hears of
 * it (status < 0), then the close callback. */
static void tls_fail(braid_conn_t *c, int err) {
  int deliver = c->state == ST_OPEN;
  tls_send_now(c);
  close_handles(c, err);
  if (deliver && c->cbs.on_read)
    c->cbs.on_read(c, err, NULL, 0, c->data);
}

static void tls_handshake_step(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  int rc = braid__tls_handshake(t->sess);
  if (braid__tls_out_pending(&t->out))
    braid__loop_want_flush(c->loop, &c->flush);
  if (rc == BRAID__TLS_WANT)
    return;
  if (rc < 0) {
    tls_fail_handshake(c, rc);
    return;
  }
  t->hs_done = true;
  t->hs_ms = braid__now(c->loop) - t->hs_started_ms;
  braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_HANDSHAKE);
  braid_tls_info_t info;
  memset(&info, 0, sizeof(info));
  braid__tls_sess_info(t->sess, &info);
  if (info.resumed)
    braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_RESUMED);
  braid__conn_ready_fn fn = t->ready;
  t->ready = NULL;
  if (fn)
    fn(c, 0, t->ready_arg);
  /* The owner handed the connection on: it reads only if its new owner asked. */
  if (c->state == ST_OPEN && !c->want_read && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
  arm_timer(c);
}

/* The peer's close_notify, reported: on_eof, or a graceful close without one. */
static void tls_eof_now(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  t->eof_pending = false;
  t->eof = true;
  c->peer_eof = true;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
  if (c->cbs.on_eof)
    c->cbs.on_eof(c, c->data);
  else
    braid_conn_close(c);
}

/* Decrypts what the session holds into buf and hands it to the read callback, for as long
 * as the user reads: as many records as fill buf in one callback, as a plain read would. */
static void tls_deliver(braid_conn_t *c, uint8_t *buf, size_t cap) {
  tls_state_t *t = c->tls;
  if (t->eof_pending && c->want_read && c->state == ST_OPEN) {
    tls_eof_now(c);
    return;
  }
  while (c->state == ST_OPEN && c->want_read && !t->eof) {
    size_t filled = 0;
    int rc = 0;
    while (filled < cap) {
      size_t got = 0;
      rc = braid__tls_read(t->sess, buf + filled, cap - filled, &got);
      if (rc != 0)
        break;
      filled += got;
    }
    if (braid__tls_out_pending(&t->out))
      braid__loop_want_flush(c->loop, &c->flush);
    if (filled > 0) {
      c->stats.bytes_read += filled;
      c->stats.reads++;
      if (c->cbs.on_read)
        c->cbs.on_read(c, 0, buf, filled, c->data);
      if (c->state != ST_OPEN)
        return;
    }
    if (rc == 0)
      continue; /* buf was full: more may wait */
    if (rc == BRAID__TLS_WANT)
      return;
    if (rc == BRAID__TLS_EOF) {
      /* close_notify: the peer's clean end of stream, reported once the user reads again
       * if the read callback just paused. */
      t->eof_pending = true;
      if (c->want_read)
        tls_eof_now(c);
      return;
    }
    if (strcmp(braid__tls_error_text(t->sess), "renegotiation refused") == 0)
      braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_RENEG);
    braid__log(c->loop, BRAID_LOG_WARN, "tls: %s (%s)", braid__tls_error_text(t->sess),
               braid_err_name(rc));
    tls_fail(c, rc);
    return;
  }
}

static void tls_deliver_deferred(braid_conn_t *c) {
  c->tls->deliver_pending = false;
  uv_buf_t b;
  braid__loop_read_alloc(c->loop, &b);
  if (b.base && b.len)
    tls_deliver(c, (uint8_t *)b.base, b.len);
  braid__loop_read_release(c->loop, &b);
}

static void tls_on_read(braid_conn_t *c, const uv_buf_t *buf, size_t n) {
  tls_state_t *t = c->tls;
  int rc = braid__tls_feed(t->sess, buf->base, n);
  if (rc) {
    if (t->hs_done)
      tls_fail(c, rc);
    else
      close_handles(c, rc);
    return;
  }
  /* The ciphertext is in the session now: the shared read buffer is free to take the
   * plaintext. */
  if (!t->hs_done) {
    tls_handshake_step(c);
    if (c->state != ST_OPEN || !t->hs_done)
      return;
  }
  tls_deliver(c, (uint8_t *)buf->base, buf->len);
}

/* The peer ended its TCP stream. After its close_notify that was reported already (reading
 * stopped then); without one the stream may have been cut by an attacker or a crash, and a
 * clean EOF would let a truncated message pass for a whole one. */
static void tls_on_eof(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  if (t->eof || t->eof_pending || c->state == ST_CLOSED || braid__tls_peer_closed(t->sess))
    return;
  if (!t->hs_done) {
    braid__tls_set_error_text(t->sess, "the peer closed the connection during the handshake");
    tls_fail_handshake(c, BRAID_ETLS);
    return;
  }
  braid__tls_ctx_count(t->ctx, BRAID__TLS_EV_TRUNCATED);
  braid__tls_set_error_text(t->sess, "the peer ended the stream without close_notify "
                                     "(truncated)");
  if (c->state != ST_OPEN) {
    close_handles(c, BRAID_ETRUNCATED);
    return;
  }
  tls_fail(c, BRAID_ETRUNCATED);
}

/* Encrypts up to limit bytes from the head of the write queue into t->out. *done: the
 * plaintext bytes encrypted. */
static int tls_encrypt(braid_conn_t *c, size_t limit, size_t *done) {
  tls_state_t *t = c->tls;
  uv_buf_t iov[MAX_IOVS];
  size_t total;
  unsigned n = fill_iov(c, iov, MAX_IOVS, 0, limit, &total);
  /* One allocation for the batch's records (each adds at most ~64 bytes), not one per
   * doubling. */
  if (braid__tls_out_reserve(&t->out, total + (total / TLS_STAGE_BYTES + 1) * 64))
    return BRAID_ENOMEM;
  char *stage = NULL; /* small writes gather here into full records */
  size_t staged = 0;
  int rc = 0;
  *done = 0;
  for (unsigned i = 0; i < n && rc == 0; i++) {
    const char *p = iov[i].base;
    size_t len = iov[i].len;
    while (len > 0 && rc == 0) {
      if (staged == 0 && len >= TLS_STAGE_BYTES) {
        rc = braid__tls_write(t->sess, p, len);
        if (rc == 0)
          *done += len;
        break;
      }
      if (!stage && !(stage = braid__loop_chunk_get(c->loop))) {
        rc = BRAID_ENOMEM;
        break;
      }
      size_t k = TLS_STAGE_BYTES - staged;
      if (k > len)
        k = len;
      memcpy(stage + staged, p, k);
      staged += k;
      p += k;
      len -= k;
      if (staged == TLS_STAGE_BYTES) {
        rc = braid__tls_write(t->sess, stage, staged);
        if (rc == 0)
          *done += staged;
        staged = 0;
      }
    }
  }
  if (rc == 0 && staged > 0) {
    rc = braid__tls_write(t->sess, stage, staged);
    if (rc == 0)
      *done += staged;
  }
  if (stage)
    braid__loop_chunk_put(c->loop, stage);
  return rc;
}

static void tls_after_write(uv_write_t *req, int status) {
  braid_conn_t *c = req->data;
  c->write_inflight = false;
  braid__free(c->tls->inflight_copy);
  c->tls->inflight_copy = NULL;
  if (status < 0) {
    if (status != UV_ECANCELED)
      close_handles(c, status);
    return;
  }
  c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
  tls_flush(c);
  wm_notify(c);
}

/* Sends pending ciphertext; returns false when the rest went to a uv_write (or the
 * connection failed), true when the kernel took all of it. */
static bool tls_send_out(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  size_t pend = braid__tls_out_pending(&t->out);
  uv_buf_t b = uv_buf_init((char *)t->out.buf + t->out.off,
                           (unsigned)(pend > MAX_IOV_BYTES ? MAX_IOV_BYTES : pend));
  int n = sock_try_write(c, &b, 1);
  c->stats.write_syscalls++;
  if (n == UV_EAGAIN)
    n = 0;
  if (n < 0) {
    close_handles(c, n);
    return false;
  }
  if (n > 0) {
    c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
    braid__tls_out_consume(&t->out, (size_t)n);
  }
  pend -= (size_t)n;
  if (pend == 0)
    return true;
  /* The kernel is full. The rest goes to libuv as a copy of its own, so the session may
   * keep appending to its buffer (alerts, tickets) while libuv holds this. */
  if (!c->wreq) {
    c->wreq = braid__malloc(sizeof(*c->wreq));
    if (!c->wreq) {
      close_handles(c, BRAID_ENOMEM);
      return false;
    }
    c->wreq->data = c;
  }
  uint8_t *copy = braid__malloc(pend);
  if (!copy) {
    close_handles(c, BRAID_ENOMEM);
    return false;
  }
  memcpy(copy, t->out.buf + t->out.off, pend);
  uv_buf_t wb = uv_buf_init((char *)copy, (unsigned)pend);
  int rc = uv_write(c->wreq, (uv_stream_t *)&c->tcp, &wb, 1, tls_after_write);
  if (rc) {
    braid__free(copy);
    close_handles(c, rc);
    return false;
  }
  braid__tls_out_consume(&t->out, pend);
  t->inflight_copy = copy;
  c->write_inflight = true;
  c->stats.write_syscalls++;
  return false;
}

static void tls_flush(braid_conn_t *c) {
  tls_state_t *t = c->tls;
  if (c->in_flush || c->write_inflight || c->state == ST_CLOSED || c->state == ST_CREATED)
    return;
  c->in_flush = true;
  while (c->state != ST_CLOSED) {
    if (braid__tls_out_pending(&t->out) > 0) {
      if (!tls_send_out(c))
        break;
      continue;
    }
    if (t->batch_pending) {
      /* All of the batch's ciphertext is in the kernel: its writes are done. */
      size_t n = t->batch_plain;
      t->batch_plain = 0;
      t->batch_pending = false;
      consume(c, n);
      continue;
    }
    if (!t->hs_done)
      break;
    if (c->seg_count == 0) {
      if ((c->state == ST_CLOSING || c->shutdown_requested) && !t->notify_queued) {
        t->notify_queued = true;
        if (braid__tls_close_notify(t->sess) == 0)
          continue;
      }
      braid__tls_out_free(&t->out); /* an idle connection keeps no ciphertext buffer */
      c->in_flush = false;
      on_drained(c);
      return;
    }
    if (c->queued == 0) {
      consume(c, 0);
      continue;
    }
    size_t want = c->queued < TLS_BATCH_BYTES ? c->queued : TLS_BATCH_BYTES;
    size_t allow = send_allowance(c, want);
    if (allow == 0)
      break;
    size_t done;
    int rc = tls_encrypt(c, allow, &done);
    refund_send(c, allow - done);
    if (done > 0) {
      t->batch_plain = done;
      t->batch_pending = true;
    }
    if (rc == BRAID__TLS_WANT && done == 0)
      break; /* retried after the next read */
    if (rc < 0) {
      c->in_flush = false;
      tls_fail(c, rc);
      return;
    }
  }
  c->in_flush = false;
}

/* ---- timers --------------------------------------------------------------------------- */

static uint64_t min_u64(uint64_t a, uint64_t b) {
  return a < b ? a : b;
}

/* The message timeout counts while a partial message is held and we are reading: a
 * connection that paused reading (its protocol at an in-flight cap) does not hold it
 * against the peer. */
static bool message_clock_runs(const braid_conn_t *c) {
  return c->message_timeout_ms && c->msg_pending && c->want_read && !c->peer_eof;
}

static uint64_t next_deadline(const braid_conn_t *c) {
  uint64_t d = UINT64_MAX;
  if (c->state != ST_OPEN && c->state != ST_CLOSING)
    return d;
  if (c->idle_timeout_ms)
    d = min_u64(d, c->last_activity_ms + c->idle_timeout_ms);
  if (c->read_timeout_ms && c->want_read && !c->peer_eof)
    d = min_u64(d, c->last_read_ms + c->read_timeout_ms);
  if (c->write_timeout_ms && (c->queued > 0 || c->ext_active))
    d = min_u64(d, c->last_progress_ms + c->write_timeout_ms);
  if (message_clock_runs(c))
    d = min_u64(d, c->msg_started_ms + c->message_timeout_ms);
  if (c->state == ST_CLOSING && c->close_flush_timeout_ms)
    d = min_u64(d, c->close_started_ms + c->close_flush_timeout_ms);
  if (c->rate_paused)
    d = min_u64(d, c->rate_wait_until);
  if (tls_handshaking(c))
    d = min_u64(d, c->tls->hs_deadline_ms);
  return d;
}

static void on_timer(uv_timer_t *t);

/* Deadlines only move later with activity, so the timer is re-armed only when a deadline
 * comes earlier than the one it is set for; when it fires early it re-arms itself. */
static void arm_timer(braid_conn_t *c) {
  uint64_t d = next_deadline(c);
  if (d == UINT64_MAX || (c->timer_armed && d >= c->timer_due) || c->state == ST_CLOSED)
    return;
  if (!c->timer) {
    c->timer = braid__malloc(sizeof(*c->timer));
    if (!c->timer) {
      close_handles(c, BRAID_ENOMEM); /* a deadline we cannot keep: fail loudly */
      return;
    }
    uv_timer_init(c->loop->uv, c->timer);
    c->timer->data = c;
    c->open_handles++;
  }
  uint64_t now = braid__now(c->loop);
  uv_timer_start(c->timer, on_timer, d > now ? d - now : 0, 0);
  c->timer_armed = true;
  c->timer_due = d;
}

static void set_linger_zero(braid_conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
}

static void on_timer(uv_timer_t *t) {
  braid_conn_t *c = t->data;
  c->timer_armed = false;
  uint64_t now = braid__now(c->loop);
  if (c->rate_paused && c->rate_wait_until <= now) {
    c->rate_paused = false;
    if ((c->want_read || tls_handshaking(c)) && !c->reading && c->state == ST_OPEN) {
      int rc = start_reading(c);
      if (rc) {
        close_handles(c, rc);
        return;
      }
    }
    do_flush(c);
    if (c->state == ST_CLOSED)
      return;
  }
  if (tls_handshaking(c) && now >= c->tls->hs_deadline_ms) {
    braid__tls_ctx_count(c->tls->ctx, BRAID__TLS_EV_TIMEOUT);
    braid__tls_set_error_text(c->tls->sess, "handshake timed out");
    tls_fail_handshake(c, BRAID_ETIMEDOUT);
    return;
  }
  if (c->state == ST_CLOSING && c->close_flush_timeout_ms &&
      now >= c->close_started_ms + c->close_flush_timeout_ms) {
    c->reset_on_close = true;
    close_handles(c, BRAID_ETIMEDOUT);
    return;
  }
  if (c->write_timeout_ms && (c->queued > 0 || c->ext_active) &&
      now >= c->last_progress_ms + c->write_timeout_ms) {
    /* The peer stopped reading: a FIN would wait behind the unsent data, so reset. */
    c->reset_on_close = true;
    close_handles(c, BRAID_ETIMEDOUT);
    return;
  }
  if ((c->idle_timeout_ms && now >= c->last_activity_ms + c->idle_timeout_ms) ||
      (c->read_timeout_ms && c->want_read && !c->peer_eof &&
       now >= c->last_read_ms + c->read_timeout_ms) ||
      (message_clock_runs(c) && now >= c->msg_started_ms + c->message_timeout_ms)) {
    close_handles(c, BRAID_ETIMEDOUT);
    return;
  }
  arm_timer(c);
}

/* ---- closing -------------------------------------------------------------------------- */

static void finalize(braid_conn_t *c) {
  /* Writes still queued never reached the kernel: they fail with the reason the connection
   * ended, or BRAID_ECANCELED when the user closed it. */
  int status = c->close_status < 0 ? c->close_status : BRAID_ECANCELED;
  while (c->seg_count > 0)
    seg_complete_head(c, status);
  drop_tail_chunk(c);
  if (c->send_group)
    braid__ratelimit_detach(c->send_group);
  if (c->recv_group)
    braid__ratelimit_detach(c->recv_group);
  braid_loop_t *loop = c->loop;
  if (!c->discarded) {
    if (c->owner)
      c->owner->on_conn_closed(c->owner, c);
    if (c->cbs.on_close)
      c->cbs.on_close(c, c->close_status, c->data);
  }
  if (c->tls) {
    /* After the close callback, which may still ask braid_tls_error_text(). */
    braid__tls_sess_free(c->tls->sess);
    braid__tls_out_free(&c->tls->out);
    braid__free(c->tls->inflight_copy);
    braid_tls_ctx_free(c->tls->ctx);
    braid__free(c->tls);
  }
  if (c->segs)
    segs_release(c);
  braid__free(c->timer);
  braid__free(c->wreq);
  braid__free(c->send_rl);
  braid__free(c->recv_rl);
  braid__free(c);
  braid__loop_unref(loop);
}

static void on_handle_closed(uv_handle_t *h) {
  braid_conn_t *c = h->data;
  if (--c->open_handles == 0)
    finalize(c);
}

static void close_handles(braid_conn_t *c, int status) {
  if (c->state == ST_CLOSED)
    return;
  c->state = ST_CLOSED;
  c->close_status = status;
  c->reading = false;
  braid__loop_cancel_flush(&c->flush);
  if (c->reset_on_close)
    set_linger_zero(c);
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  if (c->timer)
    uv_close((uv_handle_t *)c->timer, on_handle_closed);
  if (c->tls && c->tls->ready) {
    /* The owner waiting for the handshake hears how it ended, once. */
    braid__conn_ready_fn fn = c->tls->ready;
    c->tls->ready = NULL;
    fn(c, status < 0 ? status : BRAID_ECANCELED, c->tls->ready_arg);
  }
}

int braid_conn_close(braid_conn_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state != ST_OPEN)
    return 0;
  if (tls_handshaking(c)) {
    close_handles(c, 0);
    return 0;
  }
  braid_conn_read_stop(c);
  /* Over TLS a graceful close says so with close_notify, which goes out through the flush. */
  bool notify = c->tls && !c->tls->notify_queued;
  if ((c->seg_count == 0 && !notify) || c->close_flush_timeout_ms == 0) {
    if (c->seg_count > 0)
      c->reset_on_close = true; /* unsent data is dropped: say so to the peer */
    else if (notify)
      tls_notify_now(c);
    close_handles(c, 0);
    return 0;
  }
  c->state = ST_CLOSING;
  c->close_status = 0;
  c->close_started_ms = braid__now(c->loop);
  arm_timer(c);
  braid__loop_want_flush(c->loop, &c->flush);
  return 0;
}

int braid_conn_abort(braid_conn_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state == ST_CLOSED)
    return 0;
  c->reset_on_close = true;
  close_handles(c, 0);
  return 0;
}

int braid_conn_shutdown(braid_conn_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->state != ST_OPEN || c->shutdown_requested)
    return BRAID_ECLOSED;
  c->shutdown_requested = true;
  braid__loop_want_flush(c->loop, &c->flush);
  return 0;
}

/* ---- writers beside the queue (sendfile, conn_sendfile.c) ----------------------------- */

bool braid__conn_can_sendfile(const braid_conn_t *c) {
  /* Plain TCP only (bytes go to the socket as they are: never beneath TLS, whose records
   * only the write queue makes), and not under a send rate limit, whose buckets only the
   * write queue consults. */
  return c->state == ST_OPEN && !c->shutdown_requested && !c->send_rl && !c->send_group &&
         !c->tls;
}

bool braid__conn_write_idle(const braid_conn_t *c) {
  return c->seg_count == 0 && !c->write_inflight;
}

int braid__conn_external_begin(braid_conn_t *c) {
  if (!braid__conn_can_sendfile(c))
    return BRAID_ECLOSED;
  uv_os_fd_t fd;
  int rc = uv_fileno((uv_handle_t *)&c->tcp, &fd);
  if (rc)
    return rc;
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dup_fd < 0)
    return -errno;
  c->ext_active = true;
  c->last_progress_ms = braid__now(c->loop);
  arm_timer(c);
  return dup_fd;
}

void braid__conn_external_progress(braid_conn_t *c, size_t n) {
  c->stats.bytes_written += n;
  c->stats.write_syscalls++;
  c->last_progress_ms = c->last_activity_ms = braid__now(c->loop);
}

void braid__conn_external_end(braid_conn_t *c, int status) {
  c->ext_active = false;
  if (status < 0 && c->state != ST_CLOSED) {
    c->reset_on_close = true;
    close_handles(c, status);
  }
}

/* ---- introspection -------------------------------------------------------------------- */

void braid_conn_stats(const braid_conn_t *c, braid_conn_stats_t *out) {
  *out = c->stats;
  out->queued_bytes = c->queued;
}

int braid_conn_sockopts(const braid_conn_t *c, braid_sockopts_effective_t *out) {
  uv_os_fd_t fd;
  if (c->state == ST_CLOSED || uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0)
    return BRAID_ECLOSED;
  return braid_sockopts_read(fd, out);
}

int braid_conn_sockname(const braid_conn_t *c, struct sockaddr_storage *out) {
  if (c->state == ST_CLOSED)
    return BRAID_ECLOSED;
  int len = sizeof(*out);
  return uv_tcp_getsockname(&c->tcp, (struct sockaddr *)out, &len);
}

int braid_conn_peername(const braid_conn_t *c, struct sockaddr_storage *out) {
  if (c->state == ST_CLOSED)
    return BRAID_ECLOSED;
  int len = sizeof(*out);
  return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)out, &len);
}

braid_loop_t *braid_conn_loop(const braid_conn_t *c) {
  return c->loop;
}

uv_tcp_t *braid_conn_uv(braid_conn_t *c) {
  return &c->tcp;
}

int braid_conn_is_open(const braid_conn_t *c) {
  return c->state == ST_OPEN;
}

int braid_conn_is_writable(const braid_conn_t *c) {
  return c->state == ST_OPEN && !c->above_wm;
}
