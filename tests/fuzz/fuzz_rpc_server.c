/* Fuzz target: an rpc server channel (braid protocol) driven by a script of client actions.
 *
 * Each input opens one loopback TCP connection: the server end becomes a braid connection
 * (braid__conn_create + uv_tcp_open, as a server's accept does) with an rpc server channel
 * on it; the client end is a plain non-blocking socket the harness writes the script's bytes
 * to and reads the server's frames from. A real socket, not an injected read, so the
 * channel's backpressure (it stops reading at max_inflight or the write watermark) and its
 * writes (try-write, then uv_write; FIN; RST) run as in production.
 *
 * Input: [0..2] the channel's options, then a script of actions (op byte, then operands):
 * raw bytes, well-formed frames of every type (REQUEST with any id, GZIP and BATCH flags,
 * payloads from the input, zeros or noise, a gzip trailer that lies about its size),
 * loop turns, the client stopping or resuming reading, half-closing or resetting, the
 * server sending GOAWAY or closing. A request's first payload byte tells the handler how to
 * answer: at once, with an error, later (a list the script flushes, or a timer), twice (the
 * second must return BRAID_EINVAL, also when given later, after the request may have been
 * recycled), large (compressed on the threadpool when the channel compresses), after closing
 * or sending GOAWAY from inside the handler. Batch items are answered the same way, item by
 * item. The script can also make one of the next few allocations fail (braid's allocator
 * hook), so the out-of-memory paths run too; the close at the end runs with memory.
 *
 * Checked: nothing crashes or leaks (ASan); every frame the server sends is well formed, of
 * a type a server sends, and at most one GOAWAY; no request id the client used once is
 * answered twice; the channel's close callback runs once, after every request was answered,
 * and the loop is left with no braid object alive and every write chunk given back.
 *
 * BRAID_FUZZ_RPC_NO_DOUBLE=1 in the environment skips the second answers (to fuzz the rest
 * on a library where answering twice is still undefined behaviour). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      fprintf(stderr, "fuzz_rpc_server: check failed at line %d: %s\n", __LINE__, #cond);       \
      __builtin_trap();                                                                         \
    }                                                                                           \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- allocation failures, injected where the script says ------------------------------ */

static atomic_long g_allocs;              /* braid allocations so far (any thread) */
static atomic_long g_fail_at = ATOMIC_VAR_INIT(0); /* the allocation that fails, or 0 */

static bool fail_now(void) {
  long n = atomic_fetch_add(&g_allocs, 1) + 1;
  long at = atomic_load(&g_fail_at);
  return at && n == at && atomic_compare_exchange_strong(&g_fail_at, &at, 0);
}
static void *fz_malloc(size_t n) {
  return fail_now() ? NULL : malloc(n);
}
static void *fz_realloc(void *p, size_t n) {
  return fail_now() ? NULL : realloc(p, n);
}
static void *fz_calloc(size_t c, size_t n) {
  return fail_now() ? NULL : calloc(c, n);
}

/* ---- process-wide state: one loop and one listening socket, reused by every input ---- */

static braid_loop_t *g_loop;
static int g_listen_fd = -1;
static struct sockaddr_in g_addr;
static int g_no_double;
static int g_trace; /* BRAID_FUZZ_RPC_TRACE=1: print each action (to read a reproducer) */

static void setup_once(void) {
  if (g_loop)
    return;
  /* braid does not yet keep a peer's reset from raising SIGPIPE (issue 9, found 1): this
   * target is about the rpc layer, so it does what an embedding program may do. */
  signal(SIGPIPE, SIG_IGN);
  const char *nd = getenv("BRAID_FUZZ_RPC_NO_DOUBLE");
  g_no_double = nd && *nd && *nd != '0';
  const char *tr = getenv("BRAID_FUZZ_RPC_TRACE");
  g_trace = tr && *tr && *tr != '0';
  CHECK(braid_set_allocator(fz_malloc, fz_realloc, fz_calloc, free) == 0);
  CHECK(braid_loop_new(&g_loop, NULL) == 0);
  g_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(g_listen_fd >= 0);
  memset(&g_addr, 0, sizeof(g_addr));
  g_addr.sin_family = AF_INET;
  g_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(g_listen_fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) == 0);
  socklen_t alen = sizeof(g_addr);
  CHECK(getsockname(g_listen_fd, (struct sockaddr *)&g_addr, &alen) == 0);
  CHECK(listen(g_listen_fd, 16) == 0);
}

/* ---- the input as a stream of operands ------------------------------------------------ */

typedef struct {
  const uint8_t *p;
  size_t n;
} in_t;

static unsigned take_u8(in_t *in) {
  if (!in->n)
    return 0;
  in->n--;
  return *in->p++;
}

static unsigned take_u16(in_t *in) {
  unsigned hi = take_u8(in);
  return hi << 8 | take_u8(in);
}

static uint32_t take_u32(in_t *in) {
  uint32_t hi = take_u16(in);
  return hi << 16 | take_u16(in);
}

static const uint8_t *take_bytes(in_t *in, size_t *len) {
  if (*len > in->n)
    *len = in->n;
  const uint8_t *p = in->p;
  in->p += *len;
  in->n -= *len;
  return p;
}

/* ---- one run ---------------------------------------------------------------------------- */

#define MAX_DEFERRED 4096
#define TRACK_IDS 1024 /* ids 1..TRACK_IDS sent once are checked for a single answer */

typedef struct {
  braid_rpc_t *rpc;
  braid_conn_t *conn;
  int fd;             /* the client's socket, -1 once closed */
  bool reading;       /* the client reads the server's answers */
  bool wr_shut;       /* the client half-closed */
  bool closed;        /* the channel's close callback ran */
  unsigned close_calls;
  braid_rpc_req_t *deferred[MAX_DEFERRED];
  unsigned ndeferred;
  unsigned timers_live;

  /* client -> server bytes the socket did not take yet */
  uint8_t *out;
  size_t out_len, out_cap;

  /* server -> client bytes not parsed yet */
  uint8_t *in;
  size_t in_len, in_cap;
  bool saw_fatal, saw_goaway, stream_bad;
  bool untracked; /* raw bytes went out: they may hold requests the harness did not count */

  uint32_t next_id;
  uint8_t sent[TRACK_IDS + 1];     /* requests sent per tracked id (saturating) */
  uint8_t answered[TRACK_IDS + 1]; /* answers seen per tracked id */
} run_t;

static run_t R;

static uint8_t g_big[256 << 10]; /* answers and noise payloads come from here */

static void big_init(void) {
  static int done;
  if (done)
    return;
  done = 1;
  uint64_t s = 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < sizeof(g_big); i += 8) {
    uint64_t v = braid__xorshift64(&s);
    memcpy(g_big + i, &v, 8);
  }
}

/* Parses the server's frames out of R.in. */
static void parse_server_frames(void) {
  size_t off = 0;
  while (!R.stream_bad && R.in_len - off >= BRAID_FRAME_HEADER_SIZE) {
    braid_frame_header_t h;
    int rc = braid_frame_header_decode(R.in + off, R.in_len - off,
                                       BRAID_FRAME_DEFAULT_MAX_PAYLOAD, &h, NULL);
    CHECK(rc == BRAID_FRAME_HEADER_SIZE); /* the server only sends valid headers */
    CHECK(!R.saw_fatal);                  /* nothing follows a connection error */
    CHECK(h.type == BRAID_FRAME_RESPONSE || h.type == BRAID_FRAME_ERROR ||
          h.type == BRAID_FRAME_PONG || h.type == BRAID_FRAME_GOAWAY);
    if (R.in_len - off < BRAID_FRAME_HEADER_SIZE + (size_t)h.payload_len)
      break;
    const uint8_t *payload = R.in + off + BRAID_FRAME_HEADER_SIZE;
    if (h.type == BRAID_FRAME_GOAWAY) {
      CHECK(!R.saw_goaway);
      R.saw_goaway = true;
    }
    if (h.type == BRAID_FRAME_ERROR && h.id == 0)
      R.saw_fatal = true;
    if ((h.type == BRAID_FRAME_RESPONSE || h.type == BRAID_FRAME_ERROR) && h.id &&
        h.id <= TRACK_IDS) {
      if (R.sent[h.id] == 1 && !R.untracked)
        CHECK(R.answered[h.id] == 0); /* one request, one answer */
      if (R.answered[h.id] < 255)
        R.answered[h.id]++;
    }
    if (h.type == BRAID_FRAME_RESPONSE && (h.flags & BRAID_FRAME_FLAG_BATCH) &&
        !(h.flags & BRAID_FRAME_FLAG_GZIP)) {
      braid_batch_reader_t rd;
      uint32_t count;
      CHECK(braid_batch_reader_init(&rd, payload, h.payload_len, 1, &count) == 0);
    }
    off += BRAID_FRAME_HEADER_SIZE + h.payload_len;
  }
  memmove(R.in, R.in + off, R.in_len - off);
  R.in_len -= off;
}

static void client_read(void) {
  if (R.fd < 0 || !R.reading)
    return;
  for (;;) {
    if (R.in_cap - R.in_len < 65536) {
      size_t cap = R.in_cap ? R.in_cap * 2 : 131072;
      uint8_t *p = realloc(R.in, cap);
      CHECK(p);
      R.in = p;
      R.in_cap = cap;
    }
    ssize_t n = recv(R.fd, R.in + R.in_len, R.in_cap - R.in_len, 0);
    if (n <= 0)
      return;
    R.in_len += (size_t)n;
    parse_server_frames();
  }
}

static void client_flush(void) {
  while (R.fd >= 0 && R.out_len && !R.wr_shut) {
    ssize_t n = send(R.fd, R.out, R.out_len, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        R.out_len = 0; /* the server closed: what is left is lost */
      return;
    }
    memmove(R.out, R.out + n, R.out_len - (size_t)n);
    R.out_len -= (size_t)n;
  }
}

static void client_send(const void *p, size_t len) {
  if (R.fd < 0 || R.wr_shut || !len)
    return;
  if (R.out_len + len > (4u << 20))
    return; /* the server stopped reading long ago: drop it */
  if (R.out_cap < R.out_len + len) {
    size_t cap = R.out_cap ? R.out_cap : 65536;
    while (cap < R.out_len + len)
      cap *= 2;
    uint8_t *q = realloc(R.out, cap);
    CHECK(q);
    R.out = q;
    R.out_cap = cap;
  }
  memcpy(R.out + R.out_len, p, len);
  R.out_len += len;
  client_flush();
}

static void send_frame(uint8_t type, uint8_t flags, uint32_t id, const void *payload,
                       size_t len) {
  uint8_t h[BRAID_FRAME_HEADER_SIZE] = {BRAID_FRAME_MAGIC0, BRAID_FRAME_MAGIC1,
                                        BRAID_FRAME_VERSION, type, flags};
  h[8] = (uint8_t)(id >> 24), h[9] = (uint8_t)(id >> 16), h[10] = (uint8_t)(id >> 8);
  h[11] = (uint8_t)id;
  h[12] = (uint8_t)(len >> 24), h[13] = (uint8_t)(len >> 16), h[14] = (uint8_t)(len >> 8);
  h[15] = (uint8_t)len;
  client_send(h, sizeof(h));
  client_send(payload, len);
}

/* Turns the loop without blocking, moving bytes both ways. */
static void turn(unsigned times) {
  for (unsigned i = 0; i < times; i++) {
    client_flush();
    braid_loop_run(g_loop, UV_RUN_NOWAIT);
    client_read();
  }
}

/* ---- the handler ---------------------------------------------------------------------- */

enum {
  ANS_NOW,      /* echo the payload */
  ANS_ERROR,    /* an error with a message */
  ANS_DEFER,    /* later, when the script flushes */
  ANS_TWICE,    /* at once, then again: the second must be refused */
  ANS_BIG,      /* a large answer (compressed on the threadpool with gzip_min_bytes) */
  ANS_CLOSE,    /* close the channel from inside the handler, then answer */
  ANS_GOAWAY,   /* send GOAWAY from inside the handler, then answer */
  ANS_TIMER,    /* on a timer, 0-3 ms */
  ANS_KINDS
};

typedef struct {
  uv_timer_t t;
  braid_rpc_req_t *req;
} later_t;

static void defer(braid_rpc_req_t *req);

/* Checks an answer's result. BRAID_ENOMEM (an injected allocation failure) leaves the
 * request unanswered: it is answered again later. Returns rc. */
static int answered(braid_rpc_req_t *req, int rc) {
  CHECK(rc == 0 || rc == BRAID_ECLOSED || rc == BRAID_ETOOBIG || rc == BRAID_ENOMEM);
  if (rc == BRAID_ENOMEM)
    defer(req);
  return rc;
}

static void respond_twice(braid_rpc_req_t *req, const void *p, size_t len) {
  int rc = answered(req, braid_rpc_respond(req, p, len));
  /* A handle used after on_close is undefined behaviour, as for any freed handle: the
   * first answer may have been the last the closing channel waited for. */
  if (g_no_double || (rc != 0 && rc != BRAID_ECLOSED) || R.closed)
    return;
  /* The request is answered: a second answer is misuse the library catches. */
  CHECK(braid_rpc_respond(req, p, len) == BRAID_EINVAL);
  CHECK(braid_rpc_respond_error(req, BRAID_WIRE_INTERNAL, "again") == BRAID_EINVAL);
}

static void on_later_closed(uv_handle_t *h) {
  free(h->data);
  R.timers_live--;
}

static void on_later(uv_timer_t *t) {
  later_t *l = t->data;
  answered(l->req, braid_rpc_respond(l->req, "late", 4));
  uv_close((uv_handle_t *)t, on_later_closed);
}

static void answer_deferred_all(bool reverse) {
  while (R.ndeferred) {
    unsigned i = reverse ? R.ndeferred - 1 : 0;
    braid_rpc_req_t *req = R.deferred[i];
    if (!reverse)
      memmove(R.deferred, R.deferred + 1, (R.ndeferred - 1) * sizeof(R.deferred[0]));
    R.ndeferred--;
    int rc = (i & 1) ? braid_rpc_respond_error(req, BRAID_WIRE_TIMEOUT, "deferred")
                     : braid_rpc_respond(req, "deferred", 8);
    /* Answered later, then again: by now the request may have been recycled or freed, as
     * when a handler keeps a stale handle; the library must still say BRAID_EINVAL. */
    if (answered(req, rc) != BRAID_ENOMEM && !g_no_double && !R.closed)
      CHECK(braid_rpc_respond(req, "again", 5) == BRAID_EINVAL);
  }
}

static void defer(braid_rpc_req_t *req) {
  if (R.ndeferred < MAX_DEFERRED) {
    R.deferred[R.ndeferred++] = req;
    return;
  }
  while (answered(req, braid_rpc_respond(req, NULL, 0)) == BRAID_ENOMEM) {
  }
}

static void handle(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len) {
  unsigned how = len ? data[0] % ANS_KINDS : ANS_NOW;
  unsigned arg = len > 1 ? data[1] : 0;
  switch (how) {
  case ANS_NOW:
    answered(req, braid_rpc_respond(req, data, len));
    return;
  case ANS_ERROR:
    answered(req, braid_rpc_respond_error(req, (uint16_t)(1 + arg * 131), "no"));
    return;
  case ANS_DEFER:
    defer(req);
    return;
  case ANS_TWICE:
    respond_twice(req, data, len);
    return;
  case ANS_BIG: {
    size_t n = ((size_t)arg + 1) << 10; /* 1..256 KiB */
    answered(req, braid_rpc_respond(req, g_big, n));
    return;
  }
  case ANS_CLOSE:
    CHECK(braid_rpc_close(rpc) == 0);
    answered(req, braid_rpc_respond(req, "bye", 3));
    return;
  case ANS_GOAWAY: {
    int rc = braid_rpc_goaway(rpc, (uint16_t)arg, "handler");
    CHECK(rc == 0 || rc == BRAID_ECLOSED);
    answered(req, braid_rpc_respond(req, data, len));
    return;
  }
  default: { /* ANS_TIMER */
    later_t *l = calloc(1, sizeof(*l));
    CHECK(l);
    l->req = req;
    CHECK(uv_timer_init(braid_loop_uv(g_loop), &l->t) == 0);
    l->t.data = l;
    R.timers_live++;
    CHECK(uv_timer_start(&l->t, on_later, arg % 4, 0) == 0);
    return;
  }
  }
}

static void on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                       void *arg) {
  (void)arg;
  CHECK(!R.closed);
  handle(rpc, req, data, len);
}

static void on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                     uint32_t count, void *arg) {
  (void)arg;
  CHECK(!R.closed && count >= 1);
  /* Answer from the last item to the first: every answer but the last is ahead of its turn
   * and must be held until those before it come. */
  for (uint32_t i = count; i-- > 0;)
    handle(rpc, reqs[i], items[i].data, items[i].len);
}

static void on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  (void)arg;
  R.close_calls++;
  R.closed = true;
  CHECK(R.ndeferred == 0); /* on_close waits for every request to be answered */
}

/* ---- the script ---------------------------------------------------------------------- */

/* A request payload from the script: from the input, zeros or noise. */
static const uint8_t *payload_for(in_t *in, unsigned kind, size_t *len, uint8_t *scratch,
                                  size_t scratch_cap) {
  switch (kind % 4) {
  case 0:
  case 1:
    *len = take_u8(in);
    return take_bytes(in, len);
  case 2: { /* zeros after a directive byte: compresses very well */
    unsigned lead = take_u8(in);
    *len = (size_t)take_u8(in) << 10;
    if (*len > scratch_cap)
      *len = scratch_cap;
    memset(scratch, 0, *len);
    if (*len)
      scratch[0] = (uint8_t)lead;
    return scratch;
  }
  default: { /* noise: does not compress */
    unsigned lead = take_u8(in);
    *len = (size_t)take_u8(in) << 9;
    if (*len > scratch_cap)
      *len = scratch_cap;
    memcpy(scratch, g_big + (lead << 8), *len);
    if (*len)
      scratch[0] = (uint8_t)lead;
    return scratch;
  }
  }
}

static uint32_t pick_id(in_t *in) {
  unsigned how = take_u8(in);
  switch (how % 8) {
  case 0:
    return take_u32(in); /* anything, 0 included */
  case 1:
    return R.next_id > 1 ? R.next_id - 1 : 1; /* a duplicate */
  case 2:
    return 1 + how / 8; /* an older one */
  default:
    return R.next_id++;
  }
}

static void send_request(in_t *in, unsigned op) {
  static uint8_t scratch[128 << 10], body[160 << 10];
  unsigned flags = take_u8(in);
  uint32_t id = pick_id(in);
  size_t len;
  const uint8_t *p = payload_for(in, op >> 4, &len, scratch, sizeof(scratch));
  uint8_t fl = 0;
  if (flags & 1) { /* a batch of up to 8 items cut from the payload */
    unsigned items = 1 + (flags >> 4) % 8;
    size_t off = 0;
    size_t blen = 4;
    if (len + 4 + 4 * items > sizeof(body))
      len = sizeof(body) - 4 - 4 * items;
    body[0] = 0, body[1] = 0, body[2] = 0, body[3] = (uint8_t)items;
    for (unsigned i = 0; i < items; i++) {
      size_t il = i + 1 == items ? len - off : (len - off) / 2;
      body[blen] = (uint8_t)(il >> 24), body[blen + 1] = (uint8_t)(il >> 16);
      body[blen + 2] = (uint8_t)(il >> 8), body[blen + 3] = (uint8_t)il;
      memcpy(body + blen + 4, p + off, il);
      blen += 4 + il;
      off += il;
    }
    if (flags & 8) /* a malformed batch: a byte left over */
      body[blen++] = 0;
    p = body;
    len = blen;
    fl |= BRAID_FRAME_FLAG_BATCH;
  }
  void *gz_out = NULL;
  if (flags & 2) {
    braid_gzip_t *gz = NULL;
    size_t glen;
    if (braid_gzip_new(&gz, NULL) == 0 &&
        braid_gzip_compress_alloc(gz, p, len, &gz_out, &glen) == 0) {
      if ((flags & 4) && glen >= 4) { /* the trailer claims another size */
        uint32_t lie = (flags & 0x40) ? (512u << 10) : 100;
        uint8_t *t = (uint8_t *)gz_out + glen - 4;
        t[0] = (uint8_t)lie, t[1] = (uint8_t)(lie >> 8), t[2] = (uint8_t)(lie >> 16);
        t[3] = (uint8_t)(lie >> 24);
      }
      if (flags & 0x80) /* a flipped byte in the deflate data */
        ((uint8_t *)gz_out)[glen / 2] ^= 0x5a;
      p = gz_out;
      len = glen;
      fl |= BRAID_FRAME_FLAG_GZIP;
    }
    braid_gzip_free(gz);
  }
  if (id && id <= TRACK_IDS && R.sent[id] < 255)
    R.sent[id]++;
  send_frame(BRAID_FRAME_REQUEST, fl, id, p, len);
  braid_gzip_buf_free(gz_out);
}

static void on_tick(uv_timer_t *t) {
  (*(unsigned *)t->data)++;
}

/* Runs the loop for about ms milliseconds of real time. The timer repeats, so the poll
 * never sleeps without a wake-up while the connection's handles keep the loop alive. */
static void wait_ms(unsigned ms) {
  uv_timer_t t;
  unsigned ticks = 0;
  CHECK(uv_timer_init(braid_loop_uv(g_loop), &t) == 0);
  t.data = &ticks;
  CHECK(uv_timer_start(&t, on_tick, ms, 1) == 0);
  while (!ticks) {
    braid_loop_run(g_loop, UV_RUN_ONCE);
    client_read();
    client_flush();
  }
  uv_close((uv_handle_t *)&t, NULL);
  braid_loop_run(g_loop, UV_RUN_NOWAIT);
}

static void run_script(in_t *in) {
  unsigned steps = 0;
  while (in->n && !R.closed && steps++ < 512) {
    unsigned op = take_u8(in);
    if (g_trace)
      fprintf(stderr, "step %u: op %u (0x%02x), %zu bytes left\n", steps, op % 16, op, in->n);
    switch (op % 16) {
    case 0:
    case 1:
    case 2:
    case 3:
      send_request(in, op);
      break;
    case 4: { /* raw bytes */
      size_t len = take_u8(in);
      const uint8_t *p = take_bytes(in, &len);
      R.untracked = true;
      client_send(p, len);
      break;
    }
    case 5: { /* a frame a client may send but a server does not answer, or should not get */
      static const uint8_t types[] = {BRAID_FRAME_PING, BRAID_FRAME_PONG, BRAID_FRAME_ERROR,
                                      BRAID_FRAME_GOAWAY, BRAID_FRAME_RESPONSE};
      uint8_t type = types[(op >> 4) % 5];
      unsigned sel = take_u8(in);
      size_t len = take_u8(in);
      const uint8_t *p = take_bytes(in, &len);
      uint8_t buf[256 + 8] = {0};
      memcpy(buf + 8, p, len);
      size_t min = type == BRAID_FRAME_ERROR ? 2 : type == BRAID_FRAME_GOAWAY ? 6 : 0;
      uint32_t id = type == BRAID_FRAME_GOAWAY ? 0 : (sel & 1) ? 0 : sel;
      if (type == BRAID_FRAME_RESPONSE && !id)
        id = 1;
      send_frame(type, 0, id, buf + 8 - (len < min ? min - len : 0),
                 len < min ? min : len);
      break;
    }
    case 6:
    case 7:
    case 8:
      turn(1 + (op >> 4));
      break;
    case 9:
      R.reading = !R.reading;
      break;
    case 10:
      answer_deferred_all(op & 0x10);
      break;
    case 11: {
      int rc = braid_rpc_goaway(R.rpc, (uint16_t)(op >> 4), "script");
      CHECK(rc == 0 || rc == BRAID_ECLOSED);
      break;
    }
    case 12:
      if ((op >> 4) == 0xf) {
        CHECK(braid_rpc_close(R.rpc) == 0);
      } else if ((op >> 4) == 0xe && R.fd >= 0) {
        client_flush();
        R.wr_shut = true;
        shutdown(R.fd, SHUT_WR);
      }
      break;
    case 13:
      if ((op >> 4) < 0xf) { /* one of the next braid allocations fails */
        atomic_store(&g_fail_at, atomic_load(&g_allocs) + 1 + (long)(op >> 4) * 3);
      } else if (R.fd >= 0) { /* the client resets */
        struct linger lg = {1, 0};
        setsockopt(R.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(R.fd);
        R.fd = -1;
      }
      break;
    case 14: { /* a header split over two loop turns */
      uint8_t h[BRAID_FRAME_HEADER_SIZE] = {BRAID_FRAME_MAGIC0, BRAID_FRAME_MAGIC1,
                                            BRAID_FRAME_VERSION, BRAID_FRAME_REQUEST, 0};
      uint32_t id = R.next_id++;
      h[11] = (uint8_t)id, h[10] = (uint8_t)(id >> 8);
      h[15] = 2;
      unsigned cut = 1 + (op >> 4) % 15;
      if (id <= TRACK_IDS)
        R.sent[id]++;
      client_send(h, cut);
      turn(1);
      client_send(h + cut, sizeof(h) - cut);
      client_send("\0x", 2);
      break;
    }
    default: /* wait on a short real timer: lets timers and threadpool work finish */
      client_flush();
      wait_ms(1 + (op >> 4) % 3);
      break;
    }
  }
}

/* ---- entry point ------------------------------------------------------------------------ */

static int connect_pair(int *client_fd, int *server_fd) {
  /* A long campaign on a machine where other tests churn loopback connections can meet a
   * transient shortage of ephemeral ports: retry for a while before calling it a failure. */
  int c = -1;
  for (int attempt = 0; attempt < 200; attempt++) {
    c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0);
    if (connect(c, (struct sockaddr *)&g_addr, sizeof(g_addr)) == 0)
      break;
    int err = errno;
    close(c);
    c = -1;
    if (err != EADDRNOTAVAIL && err != EAGAIN && err != ECONNREFUSED && err != ETIMEDOUT) {
      fprintf(stderr, "fuzz_rpc_server: connect: %s\n", strerror(err));
      break;
    }
    usleep(10000);
  }
  CHECK(c >= 0);
  int s = accept(g_listen_fd, NULL, NULL);
  CHECK(s >= 0);
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  CHECK(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK) == 0);
  *client_fd = c;
  *server_fd = s;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  setup_once();
  big_init();
  in_t in = {data, size};
  unsigned c0 = take_u8(&in), c1 = take_u8(&in), c2 = take_u8(&in);

  uint8_t *keep_in = R.in, *keep_out = R.out;
  size_t keep_in_cap = R.in_cap, keep_out_cap = R.out_cap;
  memset(&R, 0, sizeof(R));
  R.in = keep_in, R.in_cap = keep_in_cap, R.out = keep_out, R.out_cap = keep_out_cap;
  R.reading = !(c2 & 0x80);
  R.next_id = 1;

  braid_conn_opts_t co;
  braid_conn_opts_init(&co);
  if (c1 & 1) { /* small watermarks and queue: a client that stops reading is felt soon */
    co.high_watermark_bytes = 16 << 10;
    co.low_watermark_bytes = 4 << 10;
    co.max_queue_bytes = (c1 & 2) ? (64 << 10) : (1 << 20);
  }
  co.copy_threshold_bytes = (c1 & 4) ? 64 : 4096;
  co.close_flush_timeout_ms = 200;

  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  static const unsigned inflight[] = {1, 2, 3, 8, 64, 1024, 1024, 1024};
  o.max_inflight = inflight[c0 & 7];
  static const size_t maxp[] = {64, 300, 4096, 65536, 1 << 20, BRAID_FRAME_DEFAULT_MAX_PAYLOAD,
                                BRAID_FRAME_DEFAULT_MAX_PAYLOAD,
                                BRAID_FRAME_DEFAULT_MAX_PAYLOAD};
  o.max_payload_bytes = maxp[(c0 >> 3) & 7];
  static const size_t gzmin[] = {0, 0, 1, 64, 1024, 64 << 10};
  o.gzip_min_bytes = gzmin[(c1 >> 3) % 6];
  o.gzip_level = 1 + (c2 & 7) % 9;
  braid_rpc_callbacks_t cbs = {.on_request = on_request,
                               .on_batch = (c0 & 0x40) ? on_batch : NULL,
                               .on_close = on_close};

  int sfd;
  connect_pair(&R.fd, &sfd);
  CHECK(braid__conn_create(g_loop, &co, &R.conn) == 0);
  CHECK(uv_tcp_open(braid_conn_uv(R.conn), sfd) == 0);
  CHECK(braid__conn_established(R.conn, NULL) == 0);
  CHECK(braid_rpc_server(&R.rpc, R.conn, &o, &cbs, NULL) == 0);

  run_script(&in);
  atomic_store(&g_fail_at, 0); /* the close runs with memory */

  /* The end: answer what waits, close, and let everything finish. The client resets (so
   * nothing waits on a flush or a linger) unless it already closed. */
  answer_deferred_all(false);
  turn(2);
  if (!R.closed)
    CHECK(braid_rpc_close(R.rpc) == 0);
  turn(2);
  if (R.fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(R.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(R.fd);
    R.fd = -1;
  }
  uint64_t start = uv_hrtime();
  for (unsigned i = 0; i < 16 && (!R.closed || R.timers_live); i++) {
    answer_deferred_all(false); /* handlers that ran during the close */
    turn(1);                    /* most channels close without waiting on a timer */
  }
  while (!R.closed || R.timers_live) {
    answer_deferred_all(false);
    wait_ms(1);
    if (uv_hrtime() - start > UINT64_C(5000000000)) {
      fprintf(stderr, "fuzz_rpc_server: the channel did not close within 5 s\n");
      __builtin_trap();
    }
  }
  braid_loop_run(g_loop, UV_RUN_NOWAIT);
  CHECK(R.close_calls == 1);
  CHECK(g_loop->active == 0);     /* no braid object left alive on the loop */
  CHECK(g_loop->chunks_out == 0); /* every write chunk given back */
  return 0;
}
