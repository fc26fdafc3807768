/* Request/response channels over one connection.
 *
 * Client. Request ids strictly increase (the protocol requires it), so the requests on the
 * wire always have ids in [head_id, next_id): they live in a ring indexed by id, and an
 * answer finds its request in O(1) without hashing. A request that times out leaves a hole
 * (braid mode: a late answer then matches nothing and is dropped) or a tombstone (ordered
 * mode: the late answer still arrives in its turn and is consumed and dropped). head_id
 * advances past holes. Requests past max_inflight wait in a FIFO with their bytes.
 *
 * Server. Each request gets a slot from a per-channel pool (handed out as a tagged handle,
 * see req_t) that is never freed while the channel lives. Braid-protocol answers are
 * written as they are given; ordered-protocol answers are written in request order, the
 * early ones held until those before them are given. A batch frame becomes one request per
 * item plus a collector that writes the batch answer when the last item is answered.
 *
 * Deadlines share one timer per channel, set for the earliest; it re-arms itself when it
 * fires. Callbacks may call back into the channel (call, respond, close): state is made
 * consistent before each user callback, and loops re-read it afterwards. */
#include "internal.h"

#include <inttypes.h>

#define RING_MAX ((uint32_t)1 << 22) /* largest id window: bounds a channel's memory */
/* The decompression ratio cap of PROTOCOL.md section 4.2: braid_gzip's defaults, named here
 * because the spec promises them. */
#define RPC_GZIP_MAX_RATIO 200u
#define RPC_GZIP_RATIO_GRACE ((uint64_t)1 << 20)
#define LINGER_MS 1000 /* server: how long a goaway waits for the peer to close, after FIN */
#define LINGER_FLUSH_MAX_MS 30000 /* ... and how long it waits for the answers to flush first */

enum { SLOT_HOLE = 0, SLOT_LIVE, SLOT_TOMBSTONE };

typedef struct slot_s {
  uint32_t id;
  uint8_t state;
  braid_rpc_response_cb cb;
  void *arg;
  uint64_t deadline_ms; /* 0: none */
} slot_t;

typedef struct queued_s {
  struct queued_s *next;
  braid_rpc_response_cb cb;
  void *arg;
  uint64_t deadline_ms;
  size_t len;
  uint8_t flags;
  uint8_t data[];
} queued_t;

/* A batch being answered. Answers are encoded as they come, in item order, straight into
 * the pooled write chunks that will carry them (out: room for the frame header, the count,
 * then items 0..next-1), so the answer frame is queued on the connection without another
 * copy. An answer given ahead of its turn is held (a copy) until the ones before it come. */
typedef struct batch_s {
  uint32_t id;
  uint32_t count, answered;
  uint32_t next;       /* the first item not yet in out */
  bool failed;         /* an answer could not be encoded: the batch gets an error instead */
  size_t bytes;        /* the answer payload's size so far: count + the items taken */
  braid__wchain_t out;
  struct {
    uint16_t status;
    bool held; /* answered ahead of its turn: status, len and data wait here */
    uint32_t len;
    uint8_t *data;
  } *items;
} batch_t;

/* A server request. The application holds a handle (braid_rpc_req_t *), not the slot: the
 * handle is the address of tags[gen % REQ_TAGS] inside the slot, and each tag byte holds its
 * own index, so the slot is found from the handle and the handle names one use of the slot.
 * Slots come from a per-channel pool and go back to it (oldest first), never to malloc, while
 * the channel lives: a handle used after its answer (a second respond, or one after the slot
 * was handed to a newer request) still points at pool memory, and its tag no longer matches
 * the slot's generation, or the slot is no longer live: BRAID_EINVAL, and the newer request
 * is untouched. A stale handle aliases a newer request only when its slot was reused a
 * multiple of REQ_TAGS times since (the pool is recycled oldest first, so that takes
 * REQ_TAGS times the pool's size in requests). */
#define REQ_TAGS 64

struct braid_rpc_req_s {
  uint8_t index; /* this tag's place in its slot's tags[] */
};

typedef struct req_s {
  braid_rpc_t *rpc;
  struct req_s *next; /* free list, or the ordered-answer FIFO */
  uint32_t id;
  uint32_t index; /* within its batch */
  batch_t *batch;
  uint32_t gen;  /* bumped each time the slot is handed out */
  bool live;     /* handed out for a request that still holds it */
  bool answered;
  uint8_t *answer; /* ordered mode: an answer held until those before it are written */
  size_t answer_len;
  braid_rpc_req_t tags[REQ_TAGS];
} req_t;

static braid_rpc_req_t *req_handle(req_t *r) {
  return &r->tags[r->gen % REQ_TAGS];
}

/* The slot a handle names, or NULL when the handle is stale (answered, or its slot reused). */
static req_t *req_from(const braid_rpc_req_t *h) {
  if (!h)
    return NULL;
  const braid_rpc_req_t *first = h - h->index;
  req_t *r = (req_t *)((char *)first - offsetof(req_t, tags));
  if (!r->live || r->gen % REQ_TAGS != h->index)
    return NULL;
  return r;
}

struct braid_rpc_s {
  braid_conn_t *conn;
  braid_loop_t *loop;
  braid_rpc_opts_t o;
  braid_rpc_callbacks_t cbs;
  void *data; /* the user's (braid_rpc_set_data), passed to every channel callback */
  braid_rpc_close_cb owner_close; /* a pool's hook, beside the user's on_close */
  void *owner_arg;
  bool server;
  bool closing;       /* braid_rpc_close() or a fatal error: no new work */
  bool goaway;        /* client: got one; server: sent one */
  bool lingering;     /* server after goaway: FIN sent, reading until the peer closes */
  unsigned deflating; /* server: answers being compressed on the threadpool */
  bool close_deferred; /* braid_rpc_close waits for those answers before closing conn */
  uint64_t linger_since; /* loop time lingering began */
  uint64_t linger_due;   /* when the linger timer gives up next (0: not lingering) */
  uint64_t above_since;  /* server: loop time its queued answers passed the high watermark */
  uint64_t partial_since; /* server: loop time the frame now partly read began (0: none) */
  bool read_paused;
  bool above_wm;
  /* Server: bytes read but not acted on, because the channel stopped taking requests part
   * way through a read (queued answers over the high watermark, or max_inflight reached):
   * whole frames and perhaps a partial one, from a frame boundary. Taken up again by
   * backlog_flush once the channel may take requests again, before reading resumes. */
  uint8_t *backlog;
  size_t backlog_len;
  braid__flush_t backlog_flush;
  bool peer_eof;
  int fail_status; /* why pending client requests fail when the connection ends */
  braid_framebuf_t fb;
  uv_timer_t timer;
  bool timer_armed;
  uint64_t timer_due;
  bool conn_closed, timer_closed;
  bool finished;  /* on_close ran; the memory stays while batchers hold references */
  unsigned refs;  /* batchers using the channel */

  /* client */
  slot_t *ring;
  uint32_t ring_cap; /* power of two */
  uint32_t head_id, next_id;
  uint32_t live;
  queued_t *q_head, *q_tail;
  uint32_t q_len;

  /* server */
  req_t *free_head, *free_tail; /* the slot pool, reused oldest first; freed with the channel */
  uint32_t outstanding;               /* requests not answered yet (including after close) */
  uint32_t last_seen_id;              /* braid mode: newest request id taken (for GOAWAY) */
  uint32_t last_read_id;              /* braid mode: newest request id read (ids increase) */
  req_t *ord_head, *ord_tail; /* ordered mode: unanswered or held, in order */

  braid_gzip_t *gz; /* made on first use: compressing, or a gzip-flagged payload arrived */

  braid_rpc_stats_t stats;
};

static void rpc_maybe_finish(braid_rpc_t *rpc);
static void client_fail_all(braid_rpc_t *rpc, int status);
static void arm_timer(braid_rpc_t *rpc, uint64_t deadline);

/* ---- options ------------------------------------------------------------------------- */

void braid_rpc_opts_init(braid_rpc_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->mode = BRAID_RPC_BRAID;
  o->max_payload_bytes = BRAID_FRAME_DEFAULT_MAX_PAYLOAD;
  o->max_inflight = 1024;
  o->max_queued = 65536;
  o->gzip_level = 1;
  o->output_timeout_ms = 60000;
  o->frame_timeout_ms = 30000;
}

int braid_rpc_opts_validate(const braid_rpc_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->mode != BRAID_RPC_BRAID && o->mode != BRAID_RPC_ORDERED)
    return braid__opts_fail(err, "mode", "%d is not BRAID_RPC_BRAID or BRAID_RPC_ORDERED",
                            (int)o->mode);
  if (o->mode == BRAID_RPC_BRAID && braid_frame_check_max(o->max_payload_bytes))
    return braid__opts_fail(err, "max_payload_bytes",
                            "%zu is outside BRAID_FRAME_MIN_MAX_PAYLOAD..the ceiling",
                            o->max_payload_bytes);
  if (o->mode == BRAID_RPC_ORDERED && o->framer.kind == 0)
    return braid__opts_fail(err, "framer",
                            "ordered mode needs a framer: set it up with braid_framer_init_*()");
  if (o->max_inflight < 1 || o->max_inflight > BRAID__RPC_INFLIGHT_MAX)
    return braid__opts_fail(err, "max_inflight", "%u is outside 1..2^20", o->max_inflight);
  if (o->max_queued > BRAID__RPC_QUEUED_MAX)
    return braid__opts_fail(err, "max_queued", "%u exceeds 2^24", o->max_queued);
  if (o->timeout_ms > BRAID__DEADLINE_MAX_MS)
    return braid__opts_fail(err, "timeout_ms", "%" PRIu64 " exceeds %" PRIu64, o->timeout_ms,
                            (uint64_t)BRAID__DEADLINE_MAX_MS);
  if (o->gzip_min_bytes > BRAID_FRAME_MAX_PAYLOAD_CEILING)
    return braid__opts_fail(err, "gzip_min_bytes", "%zu exceeds the frame ceiling",
                            o->gzip_min_bytes);
  if (o->gzip_level < 1 || o->gzip_level > 9)
    return braid__opts_fail(err, "gzip_level", "%d is outside 1..9", o->gzip_level);
  if (o->output_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "output_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->output_timeout_ms);
  if (o->frame_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "frame_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->frame_timeout_ms);
  return 0;
}

int braid__rpc_opts_check(const braid_rpc_opts_t *o, braid_opts_error_t *err) {
  return braid_rpc_opts_validate(o, err);
}

/* ---- writing frames ------------------------------------------------------------------- */

static braid_gzip_t *channel_gzip(braid_rpc_t *rpc) {
  if (!rpc->gz) {
    braid_gzip_opts_t go;
    braid_gzip_opts_init(&go);
    go.level = rpc->o.gzip_level;
    go.min_size_bytes = rpc->o.gzip_min_bytes;
    go.max_output_bytes = rpc->o.max_payload_bytes; /* a frame never decodes past its max */
    go.max_members = 1;                             /* PROTOCOL.md: one gzip member */
    go.max_ratio = RPC_GZIP_MAX_RATIO;
    go.ratio_grace_bytes = RPC_GZIP_RATIO_GRACE;
    braid_gzip_new(&rpc->gz, &go);
  }
  return rpc->gz;
}

static int write_frame(braid_rpc_t *rpc, uint8_t type, uint8_t flags, uint32_t id,
                       const uv_buf_t *parts, unsigned nparts);

/* Queues head[0..hlen) then parts[0..nparts) as one message, whole or not at all: a payload
 * refused after its header (or a request's second part after its first, in a pipelined
 * protocol) would leave the peer reading the next message as the rest of this one. So the
 * room for all of it is checked first; after that only an allocation can fail part way, and
 * then the stream is beyond repair and the connection is aborted. The connection copies the
 * pieces into one chunk, so they still leave in one iovec. */
static int write_whole(braid_rpc_t *rpc, const void *head, size_t hlen, const uv_buf_t *parts,
                       unsigned nparts) {
  bool partial;
  int rc = braid__conn_write_whole(rpc->conn, head, hlen, parts, nparts, &partial);
  if (rc) {
    rpc->stats.write_errors++;
    if (partial)
      braid_conn_abort(rpc->conn);
  }
  return rc;
}

/* Sends a REQUEST or RESPONSE, compressed when the channel asks for it and it pays. */
static int write_payload_frame(braid_rpc_t *rpc, uint8_t type, uint8_t flags, uint32_t id,
                               const uv_buf_t *parts, unsigned nparts) {
  size_t len = 0;
  for (unsigned i = 0; i < nparts; i++)
    len += parts[i].len;
  if (!rpc->o.gzip_min_bytes || len < rpc->o.gzip_min_bytes || rpc->o.mode != BRAID_RPC_BRAID ||
      (flags & BRAID_FRAME_FLAG_GZIP)) /* the caller compressed it already */
    return write_frame(rpc, type, flags, id, parts, nparts);
  braid_gzip_t *gz = channel_gzip(rpc);
  uint8_t *flat = NULL;
  const uint8_t *in = (const uint8_t *)parts[0].base;
  if (nparts > 1) {
    flat = braid__malloc(len);
    if (!flat)
      return BRAID_ENOMEM;
    size_t off = 0;
    for (unsigned i = 0; i < nparts; i++) {
      memcpy(flat + off, parts[i].base, parts[i].len);
      off += parts[i].len;
    }
    in = flat;
  }
  void *z = NULL;
  size_t zlen = 0;
  int rc = gz ? braid_gzip_compress_alloc(gz, in, len, &z, &zlen) : BRAID_ENOMEM;
  braid__free(flat);
  if (rc == 0 && zlen < len) {
    uv_buf_t part = uv_buf_init(z, (unsigned)zlen);
    rc = write_frame(rpc, type, flags | BRAID_FRAME_FLAG_GZIP, id, &part, 1);
    braid_gzip_buf_free(z);
    return rc;
  }
  /* Skipped, did not shrink, or failed: the plain frame is always correct. */
  braid_gzip_buf_free(z);
  return write_frame(rpc, type, flags, id, parts, nparts);
}

static int write_frame(braid_rpc_t *rpc, uint8_t type, uint8_t flags, uint32_t id,
                       const uv_buf_t *parts, unsigned nparts) {
  size_t len = 0;
  for (unsigned i = 0; i < nparts; i++)
    len += parts[i].len;
  if (len > BRAID_FRAME_MAX_PAYLOAD_CEILING)
    return BRAID_ETOOBIG;
  braid_frame_header_t h = {BRAID_FRAME_VERSION, type, flags, id, (uint32_t)len};
  uint8_t hdr[BRAID_FRAME_HEADER_SIZE];
  if (braid_frame_header_encode(hdr, &h) != BRAID_FRAME_HEADER_SIZE)
    return BRAID_EINVAL;
  return write_whole(rpc, hdr, sizeof(hdr), parts, nparts);
}

/* A server could not queue an answer (the client is not reading and the queue reached its
 * hard cap, or memory ran out): the client would wait for that answer forever, or, with
 * ordered answers, match every later one to the wrong request. The connection is closed
 * (what is queued still goes out first); the client fails what it has pending. */
static int answer_write_failed(braid_rpc_t *rpc, int rc) {
  if (rc && rpc->conn && braid_conn_is_open(rpc->conn))
    braid_conn_close(rpc->conn);
  return rc;
}

static int send_error_frame(braid_rpc_t *rpc, uint32_t id, uint16_t code, const char *msg) {
  size_t mlen = msg ? strlen(msg) : 0;
  if (mlen > 1024)
    mlen = 1024;
  if (rpc->o.mode == BRAID_RPC_BRAID && mlen > rpc->o.max_payload_bytes - 2)
    mlen = rpc->o.max_payload_bytes - 2; /* the peer's maximum holds for errors too */
  uint8_t buf[2 + 1024];
  int n = braid_frame_error_encode(buf, sizeof(buf), code, msg, mlen);
  if (n <= 0)
    return BRAID_EINVAL;
  uv_buf_t part = uv_buf_init((char *)buf, (unsigned)n);
  return write_frame(rpc, BRAID_FRAME_ERROR, 0, id, &part, 1);
}

/* A server's error answer: as send_error_frame(), closing the connection if it cannot go. */
static int answer_error(braid_rpc_t *rpc, uint32_t id, uint16_t code, const char *msg) {
  return answer_write_failed(rpc, send_error_frame(rpc, id, code, msg));
}

/* A fatal protocol error: tell the peer (braid mode), then close. */
static void protocol_error(braid_rpc_t *rpc, int err, uint16_t code, const char *msg) {
  if (rpc->o.mode == BRAID_RPC_BRAID && rpc->conn && braid_conn_is_open(rpc->conn))
    send_error_frame(rpc, 0, code, msg);
  rpc->closing = true;
  rpc->fail_status = err;
  if (!rpc->server)
    client_fail_all(rpc, err);
  if (rpc->conn)
    braid_conn_close(rpc->conn);
}

/* ---- client: the ring ----------------------------------------------------------------- */

static slot_t *slot_of(braid_rpc_t *rpc, uint32_t id) {
  return &rpc->ring[id & (rpc->ring_cap - 1)];
}

static int ring_reserve(braid_rpc_t *rpc) {
  uint32_t span = rpc->next_id - rpc->head_id;
  if (span < rpc->ring_cap)
    return 0;
  if (rpc->ring_cap >= RING_MAX)
    return BRAID_EQUEUEFULL;
  uint32_t cap = rpc->ring_cap ? rpc->ring_cap * 2 : 64;
  slot_t *n = braid__calloc(cap, sizeof(*n));
  if (!n)
    return BRAID_ENOMEM;
  for (uint32_t id = rpc->head_id; id != rpc->next_id; id++)
    n[id & (cap - 1)] = *slot_of(rpc, id);
  braid__free(rpc->ring);
  rpc->ring = n;
  rpc->ring_cap = cap;
  return 0;
}

static void advance_head(braid_rpc_t *rpc) {
  while (rpc->head_id != rpc->next_id && slot_of(rpc, rpc->head_id)->state == SLOT_HOLE)
    rpc->head_id++;
}

static void complete(braid_rpc_t *rpc, braid_rpc_response_cb cb, void *arg, int status,
                     uint16_t code, uint8_t flags, const uint8_t *data, size_t len) {
  braid_rpc_result_t r = {code, flags, data, len};
  cb(rpc, status, &r, arg);
}

static uint64_t deadline_for(braid_rpc_t *rpc, uint64_t timeout_ms) {
  if (timeout_ms == 0)
    timeout_ms = rpc->o.timeout_ms;
  return timeout_ms ? braid__now(rpc->loop) + timeout_ms : 0;
}

static void request_sent(braid_rpc_t *rpc, uint32_t id, uint64_t deadline,
                         braid_rpc_response_cb cb, void *arg);

/* Puts a request on the wire. The ring has room (ring_reserve succeeded). */
static int send_request(braid_rpc_t *rpc, uint8_t flags, const uv_buf_t *parts, unsigned nparts,
                        uint64_t deadline, braid_rpc_response_cb cb, void *arg) {
  uint32_t id = rpc->next_id;
  int rc;
  if (rpc->o.mode == BRAID_RPC_BRAID) {
    rc = write_payload_frame(rpc, BRAID_FRAME_REQUEST, flags, id, parts, nparts);
  } else {
    rc = write_whole(rpc, NULL, 0, parts, nparts);
  }
  if (rc)
    return rc;
  request_sent(rpc, id, deadline, cb, arg);
  return 0;
}

/* The request with this id (the next one) is on the wire: it waits for its answer. */
static void request_sent(braid_rpc_t *rpc, uint32_t id, uint64_t deadline,
                         braid_rpc_response_cb cb, void *arg) {
  rpc->next_id++;
  if (rpc->next_id == 0) /* ids are nonzero; after 2^32 - 1 the channel is spent */
    rpc->goaway = true;
  slot_t *s = slot_of(rpc, id);
  *s = (slot_t){id, SLOT_LIVE, cb, arg, deadline};
  rpc->live++;
  rpc->stats.inflight = rpc->live;
  if (deadline)
    arm_timer(rpc, deadline);
}

/* Takes the oldest waiting request off the queue; the caller frees it. */
static queued_t *queue_pop(braid_rpc_t *rpc) {
  queued_t *q = rpc->q_head;
  rpc->q_head = q->next;
  if (!rpc->q_head)
    rpc->q_tail = NULL;
  rpc->q_len--;
  rpc->stats.queued = rpc->q_len;
  return q;
}

/* Fails the oldest waiting request with status (and remote code). */
static void queue_fail_head(braid_rpc_t *rpc, int status, uint16_t code) {
  queued_t *q = queue_pop(rpc);
  braid_rpc_response_cb cb = q->cb;
  void *arg = q->arg;
  braid__free(q);
  complete(rpc, cb, arg, status, code, 0, NULL, 0);
}

/* Moves queued requests onto the wire while there is room. */
static void pump_queue(braid_rpc_t *rpc) {
  while (rpc->q_head && rpc->live < rpc->o.max_inflight && !rpc->closing && !rpc->goaway) {
    if (ring_reserve(rpc))
      return; /* the id window is full: wait for the oldest to finish */
    queued_t *q = queue_pop(rpc);
    uv_buf_t part = uv_buf_init((char *)q->data, (unsigned)q->len);
    int rc = send_request(rpc, q->flags, &part, 1, q->deadline_ms, q->cb, q->arg);
    braid_rpc_response_cb cb = q->cb;
    void *arg = q->arg;
    braid__free(q);
    if (rc)
      complete(rpc, cb, arg, rc, 0, 0, NULL, 0);
  }
}

int braid_rpc_call_parts(braid_rpc_t *rpc, uint8_t flags, const uv_buf_t *parts, unsigned nparts,
                         uint64_t timeout_ms, braid_rpc_response_cb cb, void *arg) {
  if (!rpc || !cb || rpc->server || (nparts && !parts) || timeout_ms > BRAID__DEADLINE_MAX_MS)
    return BRAID_EINVAL;
  if (flags & ~BRAID_FRAME_FLAGS_KNOWN || (flags && rpc->o.mode != BRAID_RPC_BRAID))
    return BRAID_EINVAL;
  if (rpc->closing || rpc->goaway || !rpc->conn)
    return BRAID_ECLOSED;
  size_t len = 0;
  for (unsigned i = 0; i < nparts; i++) {
    if (!parts[i].base && parts[i].len)
      return BRAID_EINVAL;
    len += parts[i].len;
  }
  if (rpc->o.mode == BRAID_RPC_BRAID && len > rpc->o.max_payload_bytes)
    return BRAID_ETOOBIG; /* PROTOCOL.md section 5: the peer's maximum, taken to be ours */
  uint64_t deadline = deadline_for(rpc, timeout_ms);
  if (rpc->live < rpc->o.max_inflight && !rpc->q_head && ring_reserve(rpc) == 0) {
    int rc = send_request(rpc, flags, parts, nparts, deadline, cb, arg);
    if (rc)
      return rc;
  } else {
    if (rpc->q_len >= rpc->o.max_queued)
      return BRAID_EQUEUEFULL;
    queued_t *q = braid__malloc(sizeof(*q) + len);
    if (!q)
      return BRAID_ENOMEM;
    *q = (queued_t){NULL, cb, arg, deadline, len, flags};
    size_t off = 0;
    for (unsigned i = 0; i < nparts; i++) {
      if (parts[i].len)
        memcpy(q->data + off, parts[i].base, parts[i].len);
      off += parts[i].len;
    }
    if (rpc->q_tail)
      rpc->q_tail->next = q;
    else
      rpc->q_head = q;
    rpc->q_tail = q;
    rpc->q_len++;
    rpc->stats.queued = rpc->q_len;
    if (deadline)
      arm_timer(rpc, deadline);
  }
  rpc->stats.calls++;
  return 0;
}

int braid__rpc_call_wchain(braid_rpc_t *rpc, uint8_t flags, braid__wchain_t *w,
                           uint64_t timeout_ms, braid_rpc_response_cb cb, void *arg) {
  if (!rpc || !w || w->len < BRAID_FRAME_HEADER_SIZE || rpc->o.mode != BRAID_RPC_BRAID)
    return BRAID_EINVAL;
  size_t len = w->len - BRAID_FRAME_HEADER_SIZE;
  bool compress = rpc->o.gzip_min_bytes && len >= rpc->o.gzip_min_bytes &&
                  !(flags & BRAID_FRAME_FLAG_GZIP);
  if (!compress && rpc->conn && !rpc->closing && !rpc->goaway && cb && !rpc->server &&
      !(flags & ~BRAID_FRAME_FLAGS_KNOWN) && timeout_ms <= ((uint64_t)1 << 40) &&
      len <= rpc->o.max_payload_bytes && rpc->live < rpc->o.max_inflight &&
      !rpc->q_head && ring_reserve(rpc) == 0) {
    /* The common case: straight onto the wire, the chain's chunks queued as they are. */
    uint32_t id = rpc->next_id;
    braid_frame_header_t h = {BRAID_FRAME_VERSION, BRAID_FRAME_REQUEST, flags, id,
                              (uint32_t)len};
    uint8_t hdr[BRAID_FRAME_HEADER_SIZE];
    braid_frame_header_encode(hdr, &h);
    braid__wchain_overwrite(w, 0, hdr, sizeof(hdr));
    int rc = braid__conn_write_wchain(rpc->conn, w);
    if (rc) {
      rpc->stats.write_errors++;
      return rc;
    }
    request_sent(rpc, id, deadline_for(rpc, timeout_ms), cb, arg);
    rpc->stats.calls++;
    return 0;
  }
  /* Anything else (queued behind the in-flight cap, compressed, or refused) takes the flat
   * path, whose checks and queueing are the public call's. */
  uint8_t *flat = braid__malloc(len ? len : 1);
  if (!flat)
    return BRAID_ENOMEM;
  braid__wchain_copy_out(w, BRAID_FRAME_HEADER_SIZE, flat, len);
  uv_buf_t part = uv_buf_init((char *)flat, (unsigned)len);
  int rc = braid_rpc_call_parts(rpc, flags, &part, 1, timeout_ms, cb, arg);
  braid__free(flat);
  if (rc == 0)
    braid__wchain_free(rpc->loop, w);
  return rc;
}

int braid_rpc_call(braid_rpc_t *rpc, const void *data, size_t len, uint64_t timeout_ms,
                   braid_rpc_response_cb cb, void *arg) {
  if (!data && len)
    return BRAID_EINVAL;
  uv_buf_t part = uv_buf_init((char *)data, (unsigned)(len > UINT32_MAX ? 0 : len));
  if (len > UINT32_MAX)
    return BRAID_ETOOBIG;
  return braid_rpc_call_parts(rpc, 0, &part, 1, timeout_ms, cb, arg);
}

/* The answer for the request with this id arrived (braid mode). */
static void client_answer(braid_rpc_t *rpc, uint32_t id, int status, uint16_t code, uint8_t flags,
                          const uint8_t *data, size_t len) {
  if ((uint32_t)(id - rpc->head_id) >= (uint32_t)(rpc->next_id - rpc->head_id)) {
    rpc->stats.late++; /* not outstanding: timed out earlier, or bogus; the protocol says ignore */
    return;
  }
  slot_t *s = slot_of(rpc, id);
  if (s->state != SLOT_LIVE || s->id != id) {
    rpc->stats.late++;
    return;
  }
  braid_rpc_response_cb cb = s->cb;
  void *arg = s->arg;
  s->state = SLOT_HOLE;
  rpc->live--;
  rpc->stats.inflight = rpc->live;
  rpc->stats.completed++;
  advance_head(rpc);
  complete(rpc, cb, arg, status, code, flags, data, len);
}

/* An answer arrived (ordered mode): it belongs to the oldest request still waiting for one. */
static void client_answer_ordered(braid_rpc_t *rpc, const uint8_t *data, size_t len) {
  if (rpc->head_id == rpc->next_id) {
    protocol_error(rpc, BRAID_EPROTO, 0, NULL); /* an answer nobody asked for */
    return;
  }
  slot_t *s = slot_of(rpc, rpc->head_id);
  rpc->head_id++;
  if (s->state == SLOT_TOMBSTONE) {
    rpc->stats.late++;
    return;
  }
  braid_rpc_response_cb cb = s->cb;
  void *arg = s->arg;
  s->state = SLOT_HOLE;
  rpc->live--;
  rpc->stats.inflight = rpc->live;
  rpc->stats.completed++;
  complete(rpc, cb, arg, 0, 0, 0, data, len);
}

/* Fails every pending client request with status, exactly once each. */
static void client_fail_all(braid_rpc_t *rpc, int status) {
  while (rpc->head_id != rpc->next_id) {
    slot_t *s = slot_of(rpc, rpc->head_id);
    rpc->head_id++;
    if (s->state != SLOT_LIVE) {
      s->state = SLOT_HOLE;
      continue;
    }
    s->state = SLOT_HOLE;
    rpc->live--;
    rpc->stats.inflight = rpc->live;
    complete(rpc, s->cb, s->arg, status, 0, 0, NULL, 0);
  }
  while (rpc->q_head)
    queue_fail_head(rpc, status, 0);
}

/* ---- deadlines ------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

static void arm_timer(braid_rpc_t *rpc, uint64_t deadline) {
  if (rpc->timer_closed || (rpc->timer_armed && deadline >= rpc->timer_due))
    return;
  uint64_t now = braid__now(rpc->loop);
  uv_timer_start(&rpc->timer, on_timer, deadline > now ? deadline - now : 0, 0);
  rpc->timer_armed = true;
  rpc->timer_due = deadline;
}


/* The frame being read has had this long to arrive: its own time, plus what its size
 * earns (FRAME_BYTES_PER_MS), so a large frame on a slow link is not cut off but a trickle
 * of bytes is. */
#define FRAME_BYTES_PER_MS 64 /* 64 KB/s */

/* The server's timer: the output limit, the frame-completion limit, and the linger after a
 * goaway, whichever is due first. */
static void server_timer(braid_rpc_t *rpc) {
  if (!rpc->conn || rpc->closing)
    return;
  uint64_t now = braid__now(rpc->loop);
  uint64_t next = UINT64_MAX;
  if (rpc->o.output_timeout_ms && rpc->above_wm && rpc->above_since) {
    /* Redis's client-output-buffer-limit: a client that has not read its answers down to
     * the low watermark for this long is not going to. Reset: no point flushing to it. */
    uint64_t due = rpc->above_since + rpc->o.output_timeout_ms;
    if (now >= due) {
      rpc->stats.output_limit_closes++;
      rpc->closing = true;
      rpc->fail_status = BRAID_ETIMEDOUT;
      braid_conn_abort(rpc->conn);
      return;
    }
    next = due;
  }
  if (rpc->o.frame_timeout_ms && rpc->partial_since) {
    size_t pending = braid_framebuf_pending(&rpc->fb);
    if (pending == 0) {
      rpc->partial_since = 0;
    } else {
      if (rpc->read_paused)
        rpc->partial_since = now; /* not reading: the peer cannot be late */
      uint64_t due = rpc->partial_since + rpc->o.frame_timeout_ms + pending / FRAME_BYTES_PER_MS;
      if (now >= due) {
        rpc->stats.frame_timeouts++;
        protocol_error(rpc, BRAID_ETIMEDOUT, BRAID_WIRE_TIMEOUT, "frame not completed in time");
        return;
      }
      next = due < next ? due : next;
    }
  }
  if (rpc->lingering && rpc->linger_due) {
    if (now >= rpc->linger_due) {
      /* The linger ran out; the peer did not close. Answers still flushing to a slow
       * reader: the FIN has not gone out, so the linger has not really begun; closing now
       * would stop reading and reset the connection over the requests the peer sends
       * meanwhile. Wait for the flush, within a bound. */
      braid_conn_stats_t st;
      braid_conn_stats(rpc->conn, &st);
      if (st.queued_bytes && now - rpc->linger_since < LINGER_FLUSH_MAX_MS) {
        rpc->linger_due = now + LINGER_MS;
      } else {
        rpc->closing = true;
        braid_conn_close(rpc->conn);
        return;
      }
    }
    next = rpc->linger_due < next ? rpc->linger_due : next;
  }
  if (next != UINT64_MAX)
    arm_timer(rpc, next);
}

static void on_timer(uv_timer_t *t) {
  braid_rpc_t *rpc = t->data;
  rpc->timer_armed = false;
  if (rpc->server) {
    server_timer(rpc);
    return;
  }
  uint64_t now = braid__now(rpc->loop);
  uint64_t next = UINT64_MAX;
  /* Expire requests on the wire. Walk by id: callbacks may add requests or grow the ring. */
  for (uint32_t id = rpc->head_id; id != rpc->next_id; id++) {
    slot_t *s = slot_of(rpc, id);
    if (s->state != SLOT_LIVE || !s->deadline_ms)
      continue;
    if (s->deadline_ms > now) {
      next = s->deadline_ms < next ? s->deadline_ms : next;
      continue;
    }
    braid_rpc_response_cb cb = s->cb;
    void *arg = s->arg;
    /* Braid mode: the id is forgotten, a late answer matches nothing. Ordered mode: the
     * answer still comes in its turn, so keep the place to consume it. */
    s->state = rpc->o.mode == BRAID_RPC_BRAID ? SLOT_HOLE : SLOT_TOMBSTONE;
    rpc->live--;
    rpc->stats.inflight = rpc->live;
    rpc->stats.timeouts++;
    if (rpc->o.mode == BRAID_RPC_BRAID && id == rpc->head_id)
      advance_head(rpc);
    complete(rpc, cb, arg, BRAID_ETIMEDOUT, 0, 0, NULL, 0);
    if (rpc->conn_closed)
      return;
  }
  /* Expire requests still waiting for room. */
  queued_t **pp = &rpc->q_head, *prev = NULL;
  while (*pp) {
    queued_t *q = *pp;
    if (!q->deadline_ms || q->deadline_ms > now) {
      if (q->deadline_ms && q->deadline_ms < next)
        next = q->deadline_ms;
      prev = q;
      pp = &q->next;
      continue;
    }
    *pp = q->next;
    if (rpc->q_tail == q)
      rpc->q_tail = prev;
    rpc->q_len--;
    rpc->stats.queued = rpc->q_len;
    rpc->stats.timeouts++;
    braid_rpc_response_cb cb = q->cb;
    void *arg = q->arg;
    braid__free(q);
    complete(rpc, cb, arg, BRAID_ETIMEDOUT, 0, 0, NULL, 0);
    if (rpc->conn_closed)
      return;
    /* The callback may have changed the queue: start over. */
    pp = &rpc->q_head;
    prev = NULL;
  }
  pump_queue(rpc);
  if (next != UINT64_MAX)
    arm_timer(rpc, next);
}

/* ---- server --------------------------------------------------------------------------- */

static req_t *req_get(braid_rpc_t *rpc) {
  req_t *r = rpc->free_head;
  if (r) {
    rpc->free_head = r->next;
    if (!rpc->free_head)
      rpc->free_tail = NULL;
  } else {
    r = braid__malloc(sizeof(*r));
    if (!r)
      return NULL;
    r->gen = 0;
    for (unsigned i = 0; i < REQ_TAGS; i++)
      r->tags[i].index = (uint8_t)i;
  }
  r->rpc = rpc;
  r->next = NULL;
  r->id = r->index = 0;
  r->batch = NULL;
  r->gen++;
  r->live = true;
  r->answered = false;
  r->answer = NULL;
  r->answer_len = 0;
  rpc->outstanding++;
  rpc->stats.inflight = rpc->outstanding;
  return r;
}

/* Server: whether the channel must stop taking requests now: its answers queued on the
 * connection are over the high watermark (a client that does not read must not make the
 * server buffer without end), or it handles max_inflight requests already. */
static bool server_full(const braid_rpc_t *rpc) {
  return rpc->server && (rpc->above_wm || rpc->outstanding >= rpc->o.max_inflight);
}

static void read_resume_maybe(braid_rpc_t *rpc) {
  if (rpc->read_paused && !server_full(rpc) && !rpc->closing && rpc->conn) {
    rpc->read_paused = false;
    /* Frames already read come first, and not from inside this call (it may be an answer
     * given from a request handler): reading resumes once they are taken. */
    if (rpc->backlog)
      braid__loop_want_flush(rpc->loop, &rpc->backlog_flush);
    else
      braid_conn_read_start(rpc->conn);
  }
}

/* Server, after its goaway, with every request taken answered. Closing now would reset the
 * connection if requests the peer sent before it saw the goaway sit unread in the socket
 * (close() with unread data sends RST), and an RST can make the peer's kernel drop the
 * answers and the GOAWAY it has not read yet. So: FIN once the answers are flushed, read and
 * drop what still comes (the peer fails those requests itself: they are above last_id) until
 * the peer closes, which a braid client does on EOF, or LINGER_MS pass. */
static void linger_close(braid_rpc_t *rpc) {
  if (rpc->lingering)
    return;
  rpc->lingering = true;
  rpc->linger_since = braid__now(rpc->loop);
  rpc->linger_due = rpc->linger_since + LINGER_MS;
  if (braid_conn_shutdown(rpc->conn) != 0) {
    rpc->closing = true;
    braid_conn_close(rpc->conn);
    return;
  }
  read_resume_maybe(rpc);
  arm_timer(rpc, rpc->linger_due);
}

/* One request the server took is done with (answered, or a placeholder released). */
static void outstanding_done(braid_rpc_t *rpc) {
  rpc->outstanding--;
  rpc->stats.inflight = rpc->outstanding;
  read_resume_maybe(rpc);
  if (rpc->outstanding == 0 && rpc->conn && !rpc->closing) {
    if (rpc->peer_eof) {
      /* The peer is done sending and everything is answered. */
      rpc->closing = true;
      braid_conn_close(rpc->conn);
    } else if (rpc->goaway) {
      linger_close(rpc);
    }
  }
}

static void req_put(braid_rpc_t *rpc, req_t *r) {
  braid__free(r->answer);
  r->answer = NULL;
  r->live = false;
  /* Back to the pool, at the end: reused oldest first, so a stale handle meets its slot
   * reused as late as possible. */
  r->next = NULL;
  if (rpc->free_tail)
    rpc->free_tail->next = r;
  else
    rpc->free_head = r;
  rpc->free_tail = r;
  outstanding_done(rpc);
}

static void batch_free(braid_rpc_t *rpc, batch_t *b) {
  for (uint32_t i = 0; i < b->count; i++)
    braid__free(b->items[i].data);
  braid__wchain_free(rpc->loop, &b->out);
  braid__free(b->items);
  braid__free(b);
}

/* Encodes one answer at the end of b->out. Returns 0 or BRAID_ENOMEM (out unchanged). */
static int batch_encode(braid_rpc_t *rpc, batch_t *b, uint16_t status, const void *data,
                        size_t len) {
  uint8_t hdr[BRAID_BATCH_RESP_ITEM_HEADER];
  if (braid_batch_item_header_encode(hdr, 1, status, len) != BRAID_BATCH_RESP_ITEM_HEADER)
    return BRAID_ETOOBIG;
  uv_buf_t parts[2] = {uv_buf_init((char *)hdr, sizeof(hdr)),
                       uv_buf_init((char *)data, (unsigned)len)};
  return braid__wchain_appendv(rpc->loop, &b->out, parts, len ? 2 : 1);
}

/* Encodes the held answers whose turn has come. They were accepted already, so a failure
 * here fails the batch as a whole (an error frame), never one answer's caller. */
static void batch_drain(braid_rpc_t *rpc, batch_t *b) {
  while (b->next < b->count && b->items[b->next].held) {
    uint32_t i = b->next++;
    if (!b->failed && batch_encode(rpc, b, b->items[i].status, b->items[i].data,
                                   b->items[i].len))
      b->failed = true;
    braid__free(b->items[i].data);
    b->items[i].data = NULL;
    b->items[i].held = false;
  }
}

/* Whether an item answer of len bytes keeps the batch answer within max_payload, with
 * room left for every item still unanswered to get at least an empty error status. Items are
 * taken in the order they are answered: the first ones that would not fit are refused. When
 * even empty answers cannot fit (many items and a small maximum), every answer is taken and
 * the batch as a whole is answered TOO_BIG (batch_send). */
static bool batch_fits(const braid_rpc_t *rpc, const batch_t *b, size_t len) {
  size_t max = rpc->o.max_payload_bytes;
  size_t reserve = (size_t)(b->count - b->answered - 1) * BRAID_BATCH_RESP_ITEM_HEADER;
  size_t base = b->bytes + BRAID_BATCH_RESP_ITEM_HEADER + reserve;
  if (base > max)
    return len <= max; /* the batch is lost as a whole anyway */
  return len <= max - base;
}

/* Takes the answer to item i: encoded now when it is its turn, else held. Returns 0 or
 * BRAID_ENOMEM (nothing taken: the caller may answer again). With the connection gone,
 * nothing is kept: there is no one to send it to. */
static int batch_take(braid_rpc_t *rpc, batch_t *b, uint32_t i, uint16_t code, const void *data,
                      size_t len, bool open) {
  if (!open)
    return 0;
  if (i == b->next && (b->failed || batch_encode(rpc, b, code, data, len) == 0)) {
    b->next++;
    batch_drain(rpc, b);
    return 0;
  }
  /* Ahead of its turn, or no chunk to encode it into now: hold a copy (a later answer, or
   * the send, encodes it). */
  uint8_t *copy = NULL;
  if (len) {
    copy = braid__malloc(len);
    if (!copy)
      return BRAID_ENOMEM;
    memcpy(copy, data, len);
  }
  b->items[i].status = code;
  b->items[i].len = (uint32_t)len;
  b->items[i].data = copy;
  b->items[i].held = true;
  return 0;
}

/* Every item of b has its answer: write the batch answer. Returns 0, or the error that kept
 * it from going out (the connection is then closed or gone). */
static int batch_send(braid_rpc_t *rpc, batch_t *b) {
  if (!rpc->conn || !braid_conn_is_open(rpc->conn))
    return BRAID_ECLOSED;
  batch_drain(rpc, b); /* an answer held for want of a chunk */
  size_t len = b->out.len - BRAID_FRAME_HEADER_SIZE;
  if (b->failed || b->next != b->count) {
    return answer_error(rpc, b->id, BRAID_WIRE_INTERNAL, "could not encode the batch answer");
  }
  if (len > rpc->o.max_payload_bytes) {
    return answer_error(rpc, b->id, BRAID_WIRE_TOO_BIG, "batch answer too big");
  }
  if (rpc->o.gzip_min_bytes && len >= rpc->o.gzip_min_bytes) {
    /* Compression wants the payload flat; a compressing channel pays that copy anyway. */
    uint8_t *flat = braid__malloc(len);
    if (!flat) {
      return answer_error(rpc, b->id, BRAID_WIRE_INTERNAL, "could not encode the batch answer");
    }
    braid__wchain_copy_out(&b->out, BRAID_FRAME_HEADER_SIZE, flat, len);
    uv_buf_t part = uv_buf_init((char *)flat, (unsigned)len);
    int rc =
        write_payload_frame(rpc, BRAID_FRAME_RESPONSE, BRAID_FRAME_FLAG_BATCH, b->id, &part, 1);
    braid__free(flat);
    return answer_write_failed(rpc, rc);
  }
  braid_frame_header_t h = {BRAID_FRAME_VERSION, BRAID_FRAME_RESPONSE, BRAID_FRAME_FLAG_BATCH,
                            b->id, (uint32_t)len};
  uint8_t hdr[BRAID_FRAME_HEADER_SIZE];
  braid_frame_header_encode(hdr, &h);
  braid__wchain_overwrite(&b->out, 0, hdr, sizeof(hdr));
  int rc = braid__conn_write_wchain(rpc->conn, &b->out); /* on failure freed with b */
  if (rc)
    rpc->stats.write_errors++;
  return answer_write_failed(rpc, rc);
}

/* Writes held ordered answers that are now at the front. */
static void ordered_flush(braid_rpc_t *rpc) {
  while (rpc->ord_head && rpc->ord_head->answered) {
    req_t *r = rpc->ord_head;
    rpc->ord_head = r->next;
    if (!rpc->ord_head)
      rpc->ord_tail = NULL;
    if (rpc->conn && braid_conn_is_open(rpc->conn) && r->answer_len) {
      uv_buf_t part = uv_buf_init((char *)r->answer, (unsigned)r->answer_len);
      answer_write_failed(rpc, write_whole(rpc, NULL, 0, &part, 1));
    }
    req_put(rpc, r);
  }
}

/* Server, braid mode: an answer of DEFLATE_OFFLOAD_IN bytes or more that the channel
 * compresses (gzip_min_bytes) is compressed on the libuv threadpool, so a large answer does
 * not stall the loop for the milliseconds compression takes. The answer waits in a deflate_t
 * holding a copy; its request stays outstanding until the frame is queued (so drain, linger
 * and close wait for it), and the channel is held by a reference. */
#define DEFLATE_OFFLOAD_IN ((size_t)64 << 10)

typedef struct {
  req_t *req;
  size_t len;
  uint8_t data[]; /* the answer, uncompressed */
} deflate_t;

static void on_deflated(braid_loop_t *loop, int status, void *out, size_t out_len, void *arg) {
  (void)loop;
  deflate_t *z = arg;
  req_t *req = z->req;
  braid_rpc_t *rpc = req->rpc;
  if (rpc->conn && braid_conn_is_open(rpc->conn)) {
    /* As write_payload_frame: compressed when that made it smaller, plain otherwise. */
    bool zipped = status == 0 && out_len < z->len;
    uv_buf_t part = zipped ? uv_buf_init(out, (unsigned)out_len)
                           : uv_buf_init((char *)z->data, (unsigned)z->len);
    answer_write_failed(rpc, write_frame(rpc, BRAID_FRAME_RESPONSE,
                                         zipped ? BRAID_FRAME_FLAG_GZIP : 0, req->id, &part, 1));
  }
  braid_gzip_buf_free(out);
  braid__free(z);
  /* braid_rpc_close() promises that answers given before it go out: it waited for these. */
  if (--rpc->deflating == 0 && rpc->close_deferred && rpc->conn) {
    rpc->close_deferred = false;
    braid_conn_close(rpc->conn);
  }
  req_put(rpc, req);
  rpc_maybe_finish(rpc);
  braid__rpc_unref(rpc); /* last: it may free the channel */
}

/* Starts compressing req's answer on the threadpool; false when it should go the
 * synchronous way (too small, not compressing, or out of memory). */
static bool deflate_offloaded(req_t *req, const void *data, size_t len) {
  braid_rpc_t *rpc = req->rpc;
  if (!rpc->server || rpc->o.mode != BRAID_RPC_BRAID || !rpc->o.gzip_min_bytes ||
      len < rpc->o.gzip_min_bytes || len < DEFLATE_OFFLOAD_IN)
    return false;
  deflate_t *z = braid__malloc(sizeof(*z) + len);
  if (!z)
    return false;
  z->req = req;
  z->len = len;
  memcpy(z->data, data, len);
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.level = rpc->o.gzip_level;
  go.offload_threshold_bytes = 0;
  if (braid_gzip_compress_async(rpc->loop, &go, z->data, len, on_deflated, z) != 0) {
    braid__free(z);
    return false;
  }
  braid__rpc_ref(rpc);
  rpc->deflating++;
  rpc->stats.deflated_offloaded++;
  return true;
}

static int answer(req_t *req, uint16_t code, const void *data, size_t len) {
  if (!req || req->answered || (!data && len))
    return BRAID_EINVAL;
  braid_rpc_t *rpc = req->rpc;
  bool open = rpc->conn && braid_conn_is_open(rpc->conn);
  /* PROTOCOL.md section 5: no frame over the peer's max_payload, which, with no
   * negotiation, is taken to be this channel's own. An answer that does not fit is refused
   * for its request alone: the request is answered TOO_BIG (a batch item gets that status)
   * and the caller learns it from BRAID_ETOOBIG. */
  int refused = 0;
  if (req->batch) {
    batch_t *b = req->batch;
    if (!batch_fits(rpc, b, len)) {
      refused = BRAID_ETOOBIG;
      code = BRAID_WIRE_TOO_BIG;
      data = NULL;
      len = 0;
    }
    int rc = batch_take(rpc, b, req->index, code, data, len, open);
    if (rc)
      return rc;
    b->bytes += BRAID_BATCH_RESP_ITEM_HEADER + len;
    req->answered = true;
    if (++b->answered == b->count) {
      if (batch_send(rpc, b))
        open = false; /* the whole batch answer is lost with the connection */
      batch_free(rpc, b);
    }
    req_put(rpc, req);
    rpc_maybe_finish(rpc); /* last: it may free the channel */
    return refused ? refused : open ? 0 : BRAID_ECLOSED;
  }
  if (rpc->o.mode == BRAID_RPC_BRAID) {
    if (!code && len > rpc->o.max_payload_bytes) {
      refused = BRAID_ETOOBIG;
      code = BRAID_WIRE_TOO_BIG;
      data = "answer exceeds the maximum payload";
      len = 0;
    }
    req->answered = true;
    if (open && !code && deflate_offloaded(req, data, len))
      return 0; /* on_deflated writes it and frees req */
    int wrc = 0;
    if (open) {
      if (code) {
        wrc = answer_error(rpc, req->id, code, data);
      } else {
        uv_buf_t part = uv_buf_init((char *)data, (unsigned)len);
        wrc = answer_write_failed(
            rpc, write_payload_frame(rpc, BRAID_FRAME_RESPONSE, 0, req->id, &part, 1));
      }
    }
    req_put(rpc, req);
    rpc_maybe_finish(rpc); /* last: it may free the channel */
    return refused ? refused : open && !wrc ? 0 : BRAID_ECLOSED;
  }
  /* Ordered: an answer goes out when every request before it has its answer; until then
   * a copy is held. After the connection is gone nothing is written, but the order of
   * release is kept so every request is freed exactly once. */
  if (rpc->ord_head != req && open && len) {
    req->answer = braid__malloc(len);
    if (!req->answer)
      return BRAID_ENOMEM;
    memcpy(req->answer, data, len);
    req->answer_len = len;
  }
  req->answered = true;
  if (rpc->ord_head == req) {
    rpc->ord_head = req->next;
    if (!rpc->ord_head)
      rpc->ord_tail = NULL;
    if (open && len) {
      uv_buf_t part = uv_buf_init((char *)data, (unsigned)len);
      if (answer_write_failed(rpc, write_whole(rpc, NULL, 0, &part, 1)))
        open = false; /* the answer is lost with the connection */
    }
    req_put(rpc, req);
  }
  ordered_flush(rpc);
  rpc_maybe_finish(rpc); /* last: it may free the channel */
  return open ? 0 : BRAID_ECLOSED;
}

int braid_rpc_respond(braid_rpc_req_t *handle, const void *data, size_t len) {
  return answer(req_from(handle), 0, data, len);
}

int braid_rpc_respond_error(braid_rpc_req_t *handle, uint16_t code, const char *msg) {
  req_t *req = req_from(handle);
  if (!req || code == 0)
    return BRAID_EINVAL;
  if (req->rpc->o.mode == BRAID_RPC_ORDERED || req->batch)
    return answer(req, req->batch ? code : 0, msg, msg ? strlen(msg) : 0);
  return answer(req, code, msg, 0);
}

braid_rpc_t *braid_rpc_req_channel(const braid_rpc_req_t *handle) {
  req_t *req = req_from(handle);
  return req ? req->rpc : NULL;
}

static void pause_reading(braid_rpc_t *rpc) {
  if (!rpc->read_paused && rpc->conn) {
    rpc->read_paused = true;
    rpc->stats.read_pauses++;
    braid_conn_read_stop(rpc->conn);
  }
}

static void server_request(braid_rpc_t *rpc, uint32_t id, const uint8_t *data, size_t len) {
  req_t *r = req_get(rpc);
  if (!r) {
    if (rpc->o.mode == BRAID_RPC_BRAID)
      answer_error(rpc, id, BRAID_WIRE_OVERLOADED, "out of memory");
    else
      protocol_error(rpc, BRAID_ENOMEM, 0, NULL);
    return;
  }
  r->id = id;
  if (rpc->o.mode == BRAID_RPC_ORDERED) {
    if (rpc->ord_tail)
      rpc->ord_tail->next = r;
    else
      rpc->ord_head = r;
    rpc->ord_tail = r;
  }
  rpc->stats.requests++;
  rpc->cbs.on_request(rpc, req_handle(r), data, len, rpc->data);
}

static void server_batch(braid_rpc_t *rpc, uint32_t id, const uint8_t *payload, size_t len) {
  braid_batch_reader_t rd;
  uint32_t count;
  if (braid_batch_reader_init(&rd, payload, len, 0, &count)) {
    answer_error(rpc, id, BRAID_WIRE_BAD_REQUEST, "malformed batch");
    return;
  }
  /* Each item becomes a request being handled: a batch may not hold more than the channel
   * handles at once, or one frame of 4-byte items could make millions of them (about 28x
   * its size in memory). Refused before anything is allocated; a batch within the cap may
   * take the channel past it once, and reading pauses until it is back under. */
  if (count > rpc->o.max_inflight) {
    rpc->stats.oversized_batches++;
    answer_error(rpc, id, BRAID_WIRE_OVERLOADED, "batch holds more items than max_inflight");
    return;
  }
  batch_t *b = braid__calloc(1, sizeof(*b));
  braid_batch_item_t *items = braid__malloc((size_t)count * sizeof(*items));
  braid_rpc_req_t **reqs = braid__malloc((size_t)count * sizeof(*reqs));
  if (b)
    b->items = braid__calloc(count, sizeof(*b->items));
  if (!b || !b->items || !items || !reqs) {
    if (b)
      braid__free(b->items);
    braid__free(b);
    braid__free(items);
    braid__free(reqs);
    answer_error(rpc, id, BRAID_WIRE_OVERLOADED, "out of memory");
    return;
  }
  b->id = id;
  b->count = count;
  b->bytes = BRAID_BATCH_COUNT_SIZE;
  /* Room for the frame header, written once the length is known, then the count. */
  uint8_t head[BRAID_FRAME_HEADER_SIZE + BRAID_BATCH_COUNT_SIZE] = {0};
  braid_batch_count_encode(head + BRAID_FRAME_HEADER_SIZE, count);
  if (braid__wchain_append(rpc->loop, &b->out, head, sizeof(head))) {
    batch_free(rpc, b);
    braid__free(items);
    braid__free(reqs);
    answer_error(rpc, id, BRAID_WIRE_OVERLOADED, "out of memory");
    return;
  }
  uint32_t made = 0;
  for (; made < count; made++) {
    braid_batch_reader_next(&rd, &items[made]);
    req_t *r = req_get(rpc);
    if (!r)
      break;
    r->id = id;
    r->batch = b;
    r->index = made;
    reqs[made] = req_handle(r);
  }
  if (made < count) {
    /* Out of memory part way: answer what was made with the error, the rest directly. */
    for (uint32_t i = made; i < count; i++) {
      b->items[i].status = BRAID_WIRE_OVERLOADED;
      b->items[i].held = true;
    }
    b->answered = count - made;
    if (made == 0) { /* nothing will answer: the batch is complete now */
      batch_drain(rpc, b);
      batch_send(rpc, b);
      batch_free(rpc, b);
    }
    for (uint32_t i = 0; i < made; i++)
      answer(req_from(reqs[i]), BRAID_WIRE_OVERLOADED, NULL, 0);
  } else {
    rpc->stats.batches++;
    rpc->stats.requests += count;
    if (rpc->cbs.on_batch) {
      rpc->cbs.on_batch(rpc, reqs, items, count, rpc->data);
    } else {
      for (uint32_t i = 0; i < count; i++)
        rpc->cbs.on_request(rpc, reqs[i], items[i].data, items[i].len, rpc->data);
    }
  }
  braid__free(items);
  braid__free(reqs);
}

/* ---- incoming frames ------------------------------------------------------------------- */

static void on_braid_payload(braid_rpc_t *rpc, braid_frame_header_t *hdr, const uint8_t *p,
                             size_t len, int gz_err);

/* Server: a gzip-flagged request that may inflate to a lot (INFLATE_OFFLOAD_IN compressed
 * bytes, or a gzip trailer announcing INFLATE_OFFLOAD_OUT) is decompressed on the libuv
 * threadpool, so a client sending large bodies, or many bombs, never blocks the loop that
 * serves every other connection. The frame waits in an inflate_t holding a copy of the
 * compressed bytes and counts as a request taken (in-flight cap, GOAWAY's last_id, drain,
 * peer EOF and close all wait for it); the channel is held by a reference. A client inflates
 * its answers on the loop: it asked for them, and an answer must keep its place relative to
 * the connection's end (an EOF right behind it) and to the calls queued behind it. */
#define INFLATE_OFFLOAD_IN ((size_t)16 << 10)
#define INFLATE_OFFLOAD_OUT ((uint32_t)256 << 10)

typedef struct {
  braid_rpc_t *rpc;
  braid_frame_header_t hdr;
  size_t len;
  uint8_t data[]; /* the compressed payload */
} inflate_t;

static void server_take(braid_rpc_t *rpc, const braid_frame_header_t *hdr, const uint8_t *p,
                        size_t len, int gz_err);

static void on_inflated(braid_loop_t *loop, int status, void *out, size_t out_len, void *arg) {
  (void)loop;
  inflate_t *z = arg;
  braid_rpc_t *rpc = z->rpc;
  if (status == 0)
    z->hdr.flags &= (uint8_t)~BRAID_FRAME_FLAG_GZIP;
  /* Taken before any goaway or close that came since: handled as if it had just arrived
   * (its answer is dropped if the connection is gone). Dispatch first, then release the
   * placeholder, so the count of requests taken never touches zero in between. */
  if (!rpc->closing && rpc->conn)
    server_take(rpc, &z->hdr, out, out_len, status);
  outstanding_done(rpc);
  rpc_maybe_finish(rpc);
  braid_gzip_buf_free(out);
  braid__free(z);
  braid__rpc_unref(rpc);
}

static bool inflate_offloaded(braid_rpc_t *rpc, const braid_frame_header_t *hdr,
                              const uint8_t *p, size_t len) {
  if (hdr->type != BRAID_FRAME_REQUEST || !rpc->server || rpc->goaway)
    return false; /* the synchronous path answers, refuses or drops it */
  uint32_t isize = len >= 4 ? (uint32_t)p[len - 4] | (uint32_t)p[len - 3] << 8 |
                                  (uint32_t)p[len - 2] << 16 | (uint32_t)p[len - 1] << 24
                            : 0;
  if (len < INFLATE_OFFLOAD_IN && isize < INFLATE_OFFLOAD_OUT)
    return false;
  inflate_t *z = braid__malloc(sizeof(*z) + len);
  if (!z)
    return false; /* inflate it here instead */
  z->rpc = rpc;
  z->hdr = *hdr;
  z->len = len;
  memcpy(z->data, p, len);
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.max_output_bytes = rpc->o.max_payload_bytes; /* as channel_gzip() */
  go.max_members = 1;
  go.max_ratio = RPC_GZIP_MAX_RATIO;
  go.ratio_grace_bytes = RPC_GZIP_RATIO_GRACE;
  go.offload_threshold_bytes = 0;
  if (braid_gzip_decompress_async(rpc->loop, &go, z->data, len, on_inflated, z) != 0) {
    braid__free(z);
    return false;
  }
  braid__rpc_ref(rpc);
  rpc->stats.inflated_offloaded++;
  rpc->last_seen_id = hdr->id;
  rpc->outstanding++; /* the placeholder */
  rpc->stats.inflight = rpc->outstanding;
  if (rpc->outstanding >= rpc->o.max_inflight)
    pause_reading(rpc);
  return true;
}

/* The gzip trailer's ISIZE: what the member claims to hold (the sender wrote it). */
static uint32_t gzip_claim(const uint8_t *p, size_t len) {
  if (len < 18) /* shorter than any gzip member: it fails to decode anyway */
    return 0;
  return (uint32_t)p[len - 4] | (uint32_t)p[len - 3] << 8 | (uint32_t)p[len - 2] << 16 |
         (uint32_t)p[len - 1] << 24;
}

/* Decompresses a gzip-flagged payload on the loop into a buffer of what it claims to hold
 * (its ISIZE), never more: a member that inflates past its claim is corrupt (ISIZE is the
 * exact length for anything under 4 GiB), so it fails as soon as the output passes the
 * claim, after work bounded by the claim, not by what the data would inflate to. The claim
 * is also cut to max_payload and to the ratio cap (PROTOCOL.md section 4.2: more than 1 MiB
 * at more than 200:1), which then name the error. On 0, *out (free with
 * braid_gzip_buf_free) holds *out_len bytes. A server offloads claims of
 * INFLATE_OFFLOAD_OUT or more before this (inflate_offloaded). */
static int inflate_claimed(braid_rpc_t *rpc, const uint8_t *p, size_t len, void **out,
                           size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  braid_gzip_t *gz = channel_gzip(rpc);
  if (!gz)
    return BRAID_ENOMEM;
  uint64_t cap = gzip_claim(p, len);
  int over = BRAID_EBADSIZE; /* output past a truthful claim cannot happen */
  if (cap > rpc->o.max_payload_bytes) {
    cap = rpc->o.max_payload_bytes;
    over = BRAID_EOUTPUTCAP;
  }
  uint64_t ratio_cap = (uint64_t)len * RPC_GZIP_MAX_RATIO;
  if (ratio_cap < RPC_GZIP_RATIO_GRACE)
    ratio_cap = RPC_GZIP_RATIO_GRACE;
  if (cap > ratio_cap) {
    cap = ratio_cap;
    over = BRAID_ERATIO;
  }
  uint8_t *buf = braid__malloc(cap ? (size_t)cap : 1);
  if (!buf)
    return BRAID_ENOMEM;
  int rc = braid_gzip_decompress_into(gz, p, len, buf, (size_t)cap, out_len);
  if (rc == BRAID_EOUTPUTCAP)
    rc = over;
  if (rc) {
    braid__free(buf);
    *out_len = 0;
    return rc;
  }
  *out = buf;
  return 0;
}

/* Server: the rules of PROTOCOL.md section 3.5 for what a client may send, checked before
 * any work on the payload. A RESPONSE or GOAWAY (only servers send them), an ERROR naming a
 * request (a client has no request of the server's to fail), or a REQUEST whose id is not
 * above every id read before (a duplicate would get two answers the client cannot tell
 * apart, and GOAWAY's last_id assumes increasing ids) are violations: ERROR (id 0)
 * PROTOCOL, then close. Returns true when the frame may be acted on. */
static bool server_frame_ok(braid_rpc_t *rpc, const braid_frame_header_t *h) {
  const char *why = NULL;
  switch (h->type) {
  case BRAID_FRAME_REQUEST:
    if (h->id <= rpc->last_read_id)
      why = "request id not above the previous one";
    else
      rpc->last_read_id = h->id;
    break;
  case BRAID_FRAME_RESPONSE:
  case BRAID_FRAME_GOAWAY:
    why = "frame type only a server sends";
    break;
  case BRAID_FRAME_ERROR:
    if (h->id != 0)
      why = "ERROR with a request id from a client";
    break;
  default: /* PING (answered), PONG (ignored), ERROR id 0 (closes) */
    break;
  }
  if (!why)
    return true;
  protocol_error(rpc, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, why);
  return false;
}

static void on_braid_frame(braid_rpc_t *rpc, const braid_framebuf_msg_t *m) {
  braid_frame_t f;
  braid_frame_reject_t rej;
  int rc = braid_frame_decode(m->frame, m->frame_len, rpc->o.max_payload_bytes, &f, NULL, &rej);
  if (rc <= 0) {
    protocol_error(rpc, BRAID_EPROTO, rej.code, rej.message);
    return;
  }
  if (rpc->server && !server_frame_ok(rpc, &f.hdr))
    return;
  const uint8_t *p = f.payload;
  size_t len = f.hdr.payload_len;
  void *inflated = NULL; /* a gzip-flagged payload, decompressed; freed below */
  int gz_err = 0;
  if ((f.hdr.flags & BRAID_FRAME_FLAG_GZIP) && inflate_offloaded(rpc, &f.hdr, p, len))
    return;
  if (rpc->server && rpc->goaway && f.hdr.type == BRAID_FRAME_REQUEST) {
    on_braid_payload(rpc, &f.hdr, p, len, 0); /* refused or dropped: no need to inflate it */
    return;
  }
  if ((f.hdr.flags & BRAID_FRAME_FLAG_GZIP) &&
      (f.hdr.type == BRAID_FRAME_REQUEST || f.hdr.type == BRAID_FRAME_RESPONSE)) {
    size_t out_len = 0;
    gz_err = inflate_claimed(rpc, p, len, &inflated, &out_len);
    if (gz_err == 0) {
      p = inflated;
      len = out_len;
      f.hdr.flags &= (uint8_t)~BRAID_FRAME_FLAG_GZIP;
    }
  }
  on_braid_payload(rpc, &f.hdr, p, len, gz_err);
  braid_gzip_buf_free(inflated);
}

/* Server: hands a request (or batch) it has taken to the handler; gz_err is the
 * decompression error of a gzip-flagged payload, or 0. */
static void server_take(braid_rpc_t *rpc, const braid_frame_header_t *hdr, const uint8_t *p,
                        size_t len, int gz_err) {
  if (gz_err) {
    /* One bad or oversized compressed request fails alone; the connection goes on. */
    bool big = gz_err == BRAID_EOUTPUTCAP || gz_err == BRAID_ERATIO;
    answer_error(rpc, hdr->id, big ? BRAID_WIRE_TOO_BIG : BRAID_WIRE_BAD_REQUEST,
                 braid_strerror(gz_err));
    return;
  }
  if (hdr->flags & BRAID_FRAME_FLAG_BATCH)
    server_batch(rpc, hdr->id, p, len);
  else
    server_request(rpc, hdr->id, p, len);
  if (rpc->outstanding >= rpc->o.max_inflight)
    pause_reading(rpc);
}

/* A whole frame with its payload as the application sees it (decompressed); gz_err is the
 * decompression error of a gzip-flagged payload, or 0. */
static void on_braid_payload(braid_rpc_t *rpc, braid_frame_header_t *hdr, const uint8_t *p,
                             size_t len, int gz_err) {
  braid_frame_t f = {*hdr, p};
  switch (f.hdr.type) {
  case BRAID_FRAME_PING: {
    if (rpc->lingering) /* the FIN is out: no PONG can follow it */
      return;
    uv_buf_t part = uv_buf_init((char *)p, (unsigned)len);
    write_frame(rpc, BRAID_FRAME_PONG, 0, f.hdr.id, &part, 1);
    return;
  }
  case BRAID_FRAME_PONG:
    return;
  case BRAID_FRAME_REQUEST:
    if (!rpc->server)
      break;
    if (rpc->goaway) {
      /* Lingering, the FIN is out and nothing more can be written: drop it silently (the
       * client fails it itself, its id being above the GOAWAY's last_id). */
      if (!rpc->lingering)
        answer_error(rpc, f.hdr.id, BRAID_WIRE_SHUTTING_DOWN, "shutting down");
      return;
    }
    rpc->last_seen_id = f.hdr.id;
    server_take(rpc, &f.hdr, p, len, gz_err);
    return;
  case BRAID_FRAME_RESPONSE:
    if (rpc->server)
      break;
    if (gz_err)
      client_answer(rpc, f.hdr.id, gz_err, 0, f.hdr.flags, NULL, 0);
    else
      client_answer(rpc, f.hdr.id, 0, 0, f.hdr.flags, p, len);
    return;
  case BRAID_FRAME_ERROR: {
    uint16_t code;
    const char *msg;
    size_t mlen;
    if (braid_frame_error_decode(p, len, &code, &msg, &mlen)) {
      protocol_error(rpc, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "short error payload");
      return;
    }
    if (f.hdr.id == 0) { /* about the connection: it ends */
      rpc->closing = true;
      rpc->fail_status = BRAID_EREMOTE;
      if (!rpc->server)
        client_fail_all(rpc, BRAID_EREMOTE);
      braid_conn_close(rpc->conn);
      return;
    }
    client_answer(rpc, f.hdr.id, BRAID_EREMOTE, code, 0, (const uint8_t *)msg, mlen);
    return;
  }
  case BRAID_FRAME_GOAWAY: {
    if (rpc->server)
      break;
    uint32_t last_id;
    uint16_t code;
    const char *reason;
    size_t rlen;
    if (braid_frame_goaway_decode(p, len, &last_id, &code, &reason, &rlen)) {
      protocol_error(rpc, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "short goaway payload");
      return;
    }
    rpc->goaway = true;
    /* Requests after last_id were not taken: fail them (safe to retry), newest first does
     * not matter, each exactly once. last_id may be older than the oldest request still
     * pending (those before it completed or timed out): then every pending one goes. Ids
     * compare in wrapping order. */
    uint32_t first = last_id + 1;
    if ((int32_t)(first - rpc->head_id) < 0)
      first = rpc->head_id;
    for (uint32_t id = first; (uint32_t)(id - rpc->head_id) < (uint32_t)(rpc->next_id -
                                                                          rpc->head_id);
         id++) {
      slot_t *s = slot_of(rpc, id);
      if (s->state != SLOT_LIVE)
        continue;
      braid_rpc_response_cb cb = s->cb;
      void *arg = s->arg;
      s->state = SLOT_HOLE;
      rpc->live--;
      rpc->stats.inflight = rpc->live;
      complete(rpc, cb, arg, BRAID_EGOAWAY, code, 0, NULL, 0);
      if (rpc->conn_closed)
        return;
    }
    advance_head(rpc);
    while (rpc->q_head) {
      queue_fail_head(rpc, BRAID_EGOAWAY, code);
      if (rpc->conn_closed)
        return;
    }
    if (rpc->live == 0 && rpc->conn)
      braid_rpc_close(rpc);
    return;
  }
  default:
    break;
  }
  protocol_error(rpc, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "unexpected frame type");
}

static void pause_reading(braid_rpc_t *rpc);

/* Frames data[0..len) (a read, or the backlog) and acts on each frame. A server that must
 * stop taking requests part way (server_full) keeps the rest in the backlog, from the frame
 * boundary where it stopped, and stops reading: what a client pipelines in one read is
 * bounded by the watermark like what it sends in many. */
static unsigned feed(braid_rpc_t *rpc, const uint8_t *data, size_t len) {
  size_t partial = braid_framebuf_pending(&rpc->fb); /* bytes of a frame begun earlier */
  int rc = braid_framebuf_push(&rpc->fb, data, len);
  braid_framebuf_msg_t m;
  unsigned frames = 0;
  while (rc == 0 && (rc = braid_framebuf_next(&rpc->fb, &m)) == 1) {
    rc = 0;
    frames++;
    if (rpc->closing)
      continue; /* drain the push without acting on it */
    /* Where the frame ends in data: a view into it, or one reassembled from the partial
     * frame held before this push plus the start of data. */
    size_t used = m.copied ? m.frame_len - partial : (size_t)(m.frame + m.frame_len - data);
    partial = 0;
    if (rpc->o.mode == BRAID_RPC_BRAID)
      on_braid_frame(rpc, &m);
    else if (rpc->server)
      server_request(rpc, 0, m.payload, m.payload_len);
    else
      client_answer_ordered(rpc, m.payload, m.payload_len);
    if (used < len && server_full(rpc) && !rpc->closing && rpc->conn) {
      uint8_t *rest = braid__malloc(len - used);
      if (!rest) {
        protocol_error(rpc, BRAID_ENOMEM, BRAID_WIRE_INTERNAL, "out of memory");
        return frames;
      }
      memcpy(rest, data + used, len - used);
      rpc->backlog = rest;
      rpc->backlog_len = len - used;
      /* The framebuf holds nothing of its own now (the frame it handed out is done with):
       * forget the pushed view, the rest starts at a frame boundary. */
      braid_framebuf_reset(&rpc->fb);
      rpc->partial_since = 0; /* the frames wait for this server, not for the client */
      pause_reading(rpc);
      return frames;
    }
  }
  if (rc < 0 && !rpc->closing) {
    braid_frame_reject_t rej; /* the spec's code for what was refused: VERSION, TOO_BIG... */
    braid_framebuf_reject(&rpc->fb, &rej);
    protocol_error(rpc, rc, rej.code, rej.message);
    return frames;
  }
  if (server_full(rpc))
    pause_reading(rpc);
  if (rpc->server && rpc->o.frame_timeout_ms && !rpc->closing) {
    /* A frame must arrive whole in bounded time (server_timer): note when the frame now
     * partly read began, which is now if this push finished the one before. */
    if (!braid_framebuf_pending(&rpc->fb)) {
      rpc->partial_since = 0;
    } else if (!rpc->partial_since || frames) {
      rpc->partial_since = braid__now(rpc->loop);
      arm_timer(rpc, rpc->partial_since + rpc->o.frame_timeout_ms);
    }
  }
  if (!rpc->server)
    pump_queue(rpc); /* answers made room on the wire */
  /* An idle channel keeps no partial-message buffer. */
  if (rpc->server ? rpc->outstanding == 0 : rpc->live == 0)
    braid_framebuf_trim(&rpc->fb);
  return frames;
}

/* The channel may take requests again and frames wait in the backlog: take them, then
 * resume reading unless they filled the channel again. */
static void on_backlog(braid__flush_t *fl) {
  braid_rpc_t *rpc = BRAID__CONTAINER_OF(fl, braid_rpc_t, backlog_flush);
  if (!rpc->backlog || rpc->closing || !rpc->conn)
    return; /* freed with the channel */
  if (server_full(rpc)) {
    pause_reading(rpc); /* full again meanwhile: read_resume_maybe comes back */
    return;
  }
  uint8_t *buf = rpc->backlog;
  size_t len = rpc->backlog_len;
  rpc->backlog = NULL;
  rpc->backlog_len = 0;
  rpc->read_paused = true; /* reading is still stopped while the backlog is taken */
  feed(rpc, buf, len);
  braid__free(buf);
  if (rpc->closing || !rpc->conn)
    return;
  if (!rpc->backlog && !server_full(rpc)) {
    rpc->read_paused = false;
    braid_conn_read_start(rpc->conn);
  }
}

static void on_eof(braid_conn_t *conn, void *arg) {
  braid_rpc_t *rpc = arg;
  rpc->peer_eof = true;
  if (braid_framebuf_pending(&rpc->fb)) {
    /* The stream ended mid-frame: a violation (PROTOCOL.md section 6). The partial frame
     * is dropped; the peer, which only half-closed, is told why. */
    protocol_error(rpc, BRAID_ETRUNCATED, BRAID_WIRE_PROTOCOL, "stream ended mid-frame");
  } else if (!rpc->server) {
    /* A client whose server stopped talking: nothing more can come. */
    rpc->fail_status = UV_EOF;
    rpc->closing = true;
    client_fail_all(rpc, rpc->fail_status);
    braid_conn_close(conn);
  } else if (rpc->outstanding == 0) {
    rpc->closing = true;
    braid_conn_close(conn);
  }
}

static void on_read(braid_conn_t *conn, int status, const uint8_t *data, size_t len, void *arg) {
  braid_rpc_t *rpc = arg;
  if (status < 0) {
    rpc->fail_status = status;
    return; /* the connection closes; on_conn_close fails what is pending */
  }
  unsigned frames = feed(rpc, data, len);
  /* The connection's message clock (conn.message_timeout_ms, on for servers): a frame partly
   * here must complete in bounded time, and each completed frame restarts it. */
  if (rpc->conn)
    braid__conn_message_pending(rpc->conn, braid_framebuf_pending(&rpc->fb) > 0, frames);
}

static void on_watermark(braid_conn_t *conn, int above, void *arg) {
  (void)conn;
  braid_rpc_t *rpc = arg;
  rpc->above_wm = above;
  if (!rpc->server)
    return;
  rpc->above_since = above ? braid__now(rpc->loop) : 0;
  if (above && rpc->o.output_timeout_ms)
    arm_timer(rpc, rpc->above_since + rpc->o.output_timeout_ms);
  /* A client that does not read its answers must not make the server buffer without end. */
  if (above)
    pause_reading(rpc);
  else
    read_resume_maybe(rpc);
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void rpc_free(braid_rpc_t *rpc) {
  braid_loop_t *loop = rpc->loop;
  while (rpc->free_head) {
    req_t *r = rpc->free_head;
    rpc->free_head = r->next;
    braid__free(r);
  }
  braid_framebuf_free(&rpc->fb);
  braid__loop_cancel_flush(&rpc->backlog_flush);
  braid__free(rpc->backlog);
  braid_gzip_free(rpc->gz);
  braid__free(rpc->ring);
  braid__free(rpc);
  braid__loop_unref(loop);
}

static void rpc_maybe_finish(braid_rpc_t *rpc) {
  if (rpc->finished || !rpc->conn_closed || !rpc->timer_closed || rpc->outstanding > 0)
    return;
  rpc->finished = true;
  /* on_close may free the last batcher on this channel, dropping the last reference: hold
   * one of our own across the call so the channel is freed exactly once, after it. */
  rpc->refs++;
  if (rpc->cbs.on_close)
    rpc->cbs.on_close(rpc, rpc->fail_status == UV_EOF ? 0 : rpc->fail_status, rpc->data);
  if (rpc->owner_close) /* the pool that owns it: its own hook, not the user's callbacks */
    rpc->owner_close(rpc, rpc->fail_status == UV_EOF ? 0 : rpc->fail_status, rpc->owner_arg);
  braid__rpc_unref(rpc);
}

void braid__rpc_ref(braid_rpc_t *rpc) {
  rpc->refs++;
}

void braid__rpc_unref(braid_rpc_t *rpc) {
  if (--rpc->refs == 0 && rpc->finished)
    rpc_free(rpc);
}

static void on_timer_closed(uv_handle_t *h) {
  braid_rpc_t *rpc = h->data;
  rpc->timer_closed = true;
  rpc_maybe_finish(rpc);
}

/* The server that accepted the connection drains: tell the client, so it sends nothing new
 * here and the connection closes once the requests taken are answered. */
static void on_server_drain(braid_conn_t *conn, void *arg) {
  (void)conn;
  braid_rpc_goaway(arg, BRAID_WIRE_OK, "server draining"); /* BRAID_ECLOSED: said already */
}

static void on_conn_close(braid_conn_t *conn, int status, void *arg) {
  braid_rpc_t *rpc = arg;
  braid__conn_set_drain_hook(conn, NULL, NULL);
  if (status < 0 && (rpc->fail_status == 0 || rpc->fail_status == UV_EOF))
    rpc->fail_status = status;
  rpc->conn = NULL;
  rpc->closing = true;
  if (!rpc->server)
    client_fail_all(rpc, rpc->fail_status ? rpc->fail_status : BRAID_ECANCELED);
  rpc->conn_closed = true;
  uv_close((uv_handle_t *)&rpc->timer, on_timer_closed);
  /* Server requests not answered yet keep the channel until they are (answers return
   * BRAID_ECLOSED). Ordered answers held for them are dropped. */
}

static int rpc_open(braid_rpc_t **out, braid_conn_t *conn, const braid_rpc_opts_t *o,
                    const braid_rpc_callbacks_t *cbs, void *data, bool server) {
  if (!out || !conn || !braid_conn_is_open(conn) || (server && (!cbs || !cbs->on_request)))
    return BRAID_EINVAL;
  braid_rpc_opts_t defaults;
  if (!o) {
    braid_rpc_opts_init(&defaults);
    o = &defaults;
  }
  braid_opts_error_t err;
  if (braid_rpc_opts_validate(o, &err)) {
    braid__opts_log(braid_conn_loop(conn), server ? "braid_rpc_server" : "braid_rpc_client", &err);
    return BRAID_EINVAL;
  }
  braid_rpc_t *rpc = braid__calloc(1, sizeof(*rpc));
  if (!rpc)
    return BRAID_ENOMEM;
  rpc->o = *o;
  if (cbs)
    rpc->cbs = *cbs;
  rpc->data = data;
  rpc->server = server;
  rpc->conn = conn;
  rpc->loop = braid_conn_loop(conn);
  rpc->head_id = rpc->next_id = 1;
  braid_framer_t framer;
  if (o->mode == BRAID_RPC_BRAID)
    braid_framer_init_braid(&framer, o->max_payload_bytes);
  else
    framer = o->framer;
  int rc = braid_framebuf_init(&rpc->fb, &framer);
  if (rc) {
    braid__free(rpc);
    return rc;
  }
  braid_conn_callbacks_t before = braid__conn_callbacks(conn);
  void *before_data = braid_conn_get_data(conn);
  braid_conn_callbacks_t ccbs = {.on_read = on_read, .on_eof = on_eof, .on_close = on_conn_close};
  braid_conn_set_callbacks(conn, &ccbs);
  braid_conn_set_data(conn, rpc);
  /* Told of crossings at once, from inside the write that made them, so a server stops
   * taking requests part way through a read. */
  braid__conn_set_watermark_hook(conn, on_watermark, rpc);
  rc = braid_conn_read_start(conn);
  if (rc) { /* nothing changed: conn keeps its callbacks, not ones aimed at freed memory */
    braid_conn_set_callbacks(conn, &before);
    braid_conn_set_data(conn, before_data);
    braid__conn_set_watermark_hook(conn, NULL, NULL);
    braid_framebuf_free(&rpc->fb);
    braid__free(rpc);
    return rc;
  }
  if (server && o->mode == BRAID_RPC_BRAID)
    braid__conn_set_drain_hook(conn, on_server_drain, rpc);
  uv_timer_init(braid_loop_uv(rpc->loop), &rpc->timer);
  rpc->timer.data = rpc;
  rpc->backlog_flush.fn = on_backlog;
  braid__loop_ref(rpc->loop);
  *out = rpc;
  return 0;
}

int braid_rpc_client(braid_rpc_t **out, braid_conn_t *conn, const braid_rpc_opts_t *o,
                     const braid_rpc_callbacks_t *cbs, void *data) {
  return rpc_open(out, conn, o, cbs, data, false);
}

int braid_rpc_server(braid_rpc_t **out, braid_conn_t *conn, const braid_rpc_opts_t *o,
                     const braid_rpc_callbacks_t *cbs, void *data) {
  return rpc_open(out, conn, o, cbs, data, true);
}

void braid_rpc_set_data(braid_rpc_t *rpc, void *data) {
  rpc->data = data;
}

void *braid_rpc_get_data(const braid_rpc_t *rpc) {
  return rpc->data;
}

void braid__rpc_set_owner_close(braid_rpc_t *rpc, braid_rpc_close_cb fn, void *arg) {
  rpc->owner_close = fn;
  rpc->owner_arg = arg;
}

int braid_rpc_goaway(braid_rpc_t *rpc, uint16_t code, const char *reason) {
  if (!rpc || !rpc->server || rpc->o.mode != BRAID_RPC_BRAID)
    return BRAID_EINVAL;
  if (rpc->goaway || rpc->closing || !rpc->conn)
    return BRAID_ECLOSED;
  rpc->goaway = true;
  size_t rlen = reason ? strlen(reason) : 0;
  if (rlen > 1024)
    rlen = 1024;
  if (rlen > rpc->o.max_payload_bytes - 6)
    rlen = rpc->o.max_payload_bytes - 6; /* as send_error_frame */
  uint8_t buf[6 + 1024];
  /* Every request read so far was handed to the handler: the newest id seen is the last. */
  int n = braid_frame_goaway_encode(buf, sizeof(buf), rpc->last_seen_id, code, reason, rlen);
  if (n > 0) {
    uv_buf_t part = uv_buf_init((char *)buf, (unsigned)n);
    write_frame(rpc, BRAID_FRAME_GOAWAY, 0, 0, &part, 1);
  }
  /* Reading goes on: requests read from here on get SHUTTING_DOWN (PROTOCOL.md 3.4). */
  if (rpc->outstanding == 0)
    linger_close(rpc);
  return 0;
}

int braid_rpc_close(braid_rpc_t *rpc) {
  if (!rpc)
    return BRAID_EINVAL;
  if (rpc->closing && !rpc->conn)
    return 0;
  rpc->closing = true;
  if (!rpc->server)
    client_fail_all(rpc, BRAID_ECANCELED);
  if (rpc->conn && rpc->deflating) {
    /* Answers given before this are still compressing: close once they are queued. */
    rpc->close_deferred = true;
    braid_conn_read_stop(rpc->conn);
    rpc->read_paused = true;
  } else if (rpc->conn) {
    braid_conn_close(rpc->conn); /* idempotent; queued answers still flush */
  }
  return 0;
}

bool braid__rpc_is_ordered(const braid_rpc_t *rpc) {
  return rpc->o.mode == BRAID_RPC_ORDERED;
}

braid_conn_t *braid_rpc_conn(const braid_rpc_t *rpc) {
  return rpc->conn;
}

void braid_rpc_stats(const braid_rpc_t *rpc, braid_rpc_stats_t *out) {
  *out = rpc->stats;
}
