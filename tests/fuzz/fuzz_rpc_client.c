/* Fuzz target: an rpc client channel (braid protocol) against a hostile server played by a
 * script, the mirror of fuzz_rpc_server.c.
 *
 * Each input opens one loopback TCP connection: the connecting end becomes a braid
 * connection with an rpc client channel on it; the accepted end is a plain non-blocking
 * socket the harness reads the client's requests from (to learn their ids) and writes the
 * script's frames to. Calls carry deadlines of 0 to 4 ms, so late answers, holes in the id
 * ring and the queue behind max_inflight are reached; the server answers with RESPONSE
 * frames (any id: pending, timed out, never sent; GZIP and BATCH flags, batch answers whose
 * count does not match), ERROR frames (per request or id 0), GOAWAY with any last_id, PING
 * and PONG, raw bytes, EOF or a reset; the client channel may be closed in the middle.
 *
 * Input: [0..1] the channel's options, then a script of actions (op byte, then operands).
 *
 * Checked: nothing crashes or leaks (ASan); every accepted call completes exactly once; no
 * call completes from inside braid_rpc_call; the close callback runs once, after every call
 * completed; the loop is left with no braid object alive and every write chunk given back. */
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
      fprintf(stderr, "fuzz_rpc_client: check failed at line %d: %s\n", __LINE__, #cond);       \
      __builtin_trap();                                                                         \
    }                                                                                           \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static braid_loop_t *g_loop;
static int g_listen_fd = -1;
static struct sockaddr_in g_addr;

static void setup_once(void) {
  if (g_loop)
    return;
  signal(SIGPIPE, SIG_IGN); /* the harness's own sends to a reset peer */
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

static uint32_t take_u32(in_t *in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = v << 8 | take_u8(in);
  return v;
}

static const uint8_t *take_bytes(in_t *in, size_t *len) {
  if (*len > in->n)
    *len = in->n;
  const uint8_t *p = in->p;
  in->p += *len;
  in->n -= *len;
  return p;
}

#define MAX_CALLS 2048
#define MAX_SEEN 4096

typedef struct {
  braid_rpc_t *rpc;
  braid_conn_t *conn;
  int fd; /* the server's socket, -1 once closed */
  bool closed;
  unsigned close_calls;
  bool in_call; /* inside braid_rpc_call: no callback may run now */
  unsigned ncalls, completed;
  uint8_t done[MAX_CALLS];
  uint32_t seen[MAX_SEEN]; /* request ids the server read, in order */
  unsigned nseen;
  uint8_t *in;
  size_t in_len, in_cap;
} run_t;

static run_t R;

/* ---- the server's side of the socket --------------------------------------------------- */

static void server_read(void) {
  if (R.fd < 0)
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
      break;
    R.in_len += (size_t)n;
  }
  size_t off = 0;
  while (R.in_len - off >= BRAID_FRAME_HEADER_SIZE) {
    braid_frame_header_t h;
    int rc = braid_frame_header_decode(R.in + off, R.in_len - off, BRAID_FRAME_MAX_PAYLOAD_CEILING,
                                       &h, NULL);
    CHECK(rc == BRAID_FRAME_HEADER_SIZE); /* the client only sends valid headers */
    CHECK(h.type == BRAID_FRAME_REQUEST || h.type == BRAID_FRAME_PING ||
          h.type == BRAID_FRAME_PONG || (h.type == BRAID_FRAME_ERROR && h.id == 0));
    if (R.in_len - off < BRAID_FRAME_HEADER_SIZE + (size_t)h.payload_len)
      break;
    if (h.type == BRAID_FRAME_REQUEST && R.nseen < MAX_SEEN)
      R.seen[R.nseen++] = h.id;
    off += BRAID_FRAME_HEADER_SIZE + h.payload_len;
  }
  memmove(R.in, R.in + off, R.in_len - off);
  R.in_len -= off;
}

static void server_send(const void *p, size_t len) {
  if (R.fd < 0 || !len)
    return;
  (void)!send(R.fd, p, len, MSG_NOSIGNAL); /* what the socket does not take is lost */
}

static void send_frame(uint8_t type, uint8_t flags, uint32_t id, const void *payload,
                       size_t len) {
  uint8_t h[BRAID_FRAME_HEADER_SIZE] = {BRAID_FRAME_MAGIC0, BRAID_FRAME_MAGIC1,
                                        BRAID_FRAME_VERSION, type, flags};
  for (int i = 0; i < 4; i++) {
    h[8 + i] = (uint8_t)(id >> (24 - 8 * i));
    h[12 + i] = (uint8_t)(len >> (24 - 8 * i));
  }
  server_send(h, sizeof(h));
  server_send(payload, len);
}

static void turn(unsigned times) {
  for (unsigned i = 0; i < times; i++) {
    braid_loop_run(g_loop, UV_RUN_NOWAIT);
    server_read();
  }
}

static void on_tick(uv_timer_t *t) {
  (*(unsigned *)t->data)++;
}

static void wait_ms(unsigned ms) {
  uv_timer_t t;
  unsigned ticks = 0;
  CHECK(uv_timer_init(braid_loop_uv(g_loop), &t) == 0);
  t.data = &ticks;
  CHECK(uv_timer_start(&t, on_tick, ms, 1) == 0);
  while (!ticks) {
    braid_loop_run(g_loop, UV_RUN_ONCE);
    server_read();
  }
  uv_close((uv_handle_t *)&t, NULL);
  braid_loop_run(g_loop, UV_RUN_NOWAIT);
}

/* ---- the client's callbacks ------------------------------------------------------------- */

static void on_response(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res,
                        void *arg) {
  (void)rpc;
  uintptr_t i = (uintptr_t)arg;
  CHECK(!R.in_call);
  CHECK(i < R.ncalls && !R.done[i]); /* exactly once */
  R.done[i] = 1;
  R.completed++;
  CHECK(status <= 0);
  CHECK(res->len == 0 || res->data);
}

static void on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  (void)arg;
  R.close_calls++;
  R.closed = true;
  CHECK(R.completed == R.ncalls); /* every call completed before the close callback */
}

/* ---- the script -------------------------------------------------------------------------- */

static void do_call(in_t *in, unsigned op) {
  if (R.ncalls >= MAX_CALLS)
    return;
  unsigned flags = take_u8(in);
  unsigned t = take_u8(in) % 6; /* 0: the channel's default deadline, else 0..4 ms */
  size_t len = take_u8(in);
  const uint8_t *p = take_bytes(in, &len);
  uint8_t body[4 + 8 * (4 + 255)];
  uv_buf_t part = uv_buf_init((char *)p, (unsigned)len);
  uint8_t fl = 0;
  if (flags & 1) { /* a batch request of 1..4 items */
    unsigned items = 1 + (op >> 4) % 4;
    size_t off = 0, blen = 4;
    body[0] = body[1] = body[2] = 0;
    body[3] = (uint8_t)items;
    for (unsigned i = 0; i < items; i++) {
      size_t il = i + 1 == items ? len - off : (len - off) / 2;
      body[blen] = body[blen + 1] = 0;
      body[blen + 2] = (uint8_t)(il >> 8);
      body[blen + 3] = (uint8_t)il;
      memcpy(body + blen + 4, p + off, il);
      blen += 4 + il;
      off += il;
    }
    part = uv_buf_init((char *)body, (unsigned)blen);
    fl = BRAID_FRAME_FLAG_BATCH;
  }
  uint64_t timeout = t == 0 ? 0 : t - 1;
  unsigned idx = R.ncalls;
  R.in_call = true;
  int rc = braid_rpc_call_parts(R.rpc, fl, &part, 1, timeout, on_response,
                                (void *)(uintptr_t)idx);
  R.in_call = false;
  CHECK(rc == 0 || rc == BRAID_ECLOSED || rc == BRAID_EQUEUEFULL || rc == BRAID_ETOOBIG ||
        rc == BRAID_ENOMEM);
  if (rc == 0)
    R.ncalls++;
}

/* An id for an answer: one the client sent (oldest, newest, or by index), or any. */
static uint32_t pick_id(in_t *in) {
  unsigned how = take_u8(in);
  if (R.nseen && how % 4 != 3) {
    switch (how % 4) {
    case 0:
      return R.seen[0];
    case 1:
      return R.seen[R.nseen - 1];
    default:
      return R.seen[(how >> 2) % R.nseen];
    }
  }
  return how % 8 == 7 ? take_u32(in) : (uint32_t)(how >> 3);
}

static void answer(in_t *in, unsigned op) {
  unsigned flags = take_u8(in);
  uint32_t id = pick_id(in);
  size_t len = take_u8(in);
  const uint8_t *p = take_bytes(in, &len);
  uint8_t body[4 + 8 * (6 + 255)];
  uint8_t fl = 0;
  if (flags & 1) { /* a batch answer of 1..8 items (maybe not the request's count) */
    unsigned items = 1 + (flags >> 4) % 8;
    size_t off = 0, blen = 4;
    body[0] = body[1] = body[2] = 0;
    body[3] = (uint8_t)items;
    for (unsigned i = 0; i < items; i++) {
      size_t il = i + 1 == items ? len - off : (len - off) / 2;
      body[blen] = 0;
      body[blen + 1] = (uint8_t)((flags & 2) && i == 0 ? 5 : 0); /* the first may fail */
      body[blen + 2] = body[blen + 3] = body[blen + 4] = 0;
      body[blen + 5] = (uint8_t)il;
      memcpy(body + blen + 6, p + off, il);
      blen += 6 + il;
      off += il;
    }
    p = body;
    len = blen;
    fl |= BRAID_FRAME_FLAG_BATCH;
  }
  void *gz_out = NULL;
  if (flags & 4) {
    braid_gzip_t *gz = NULL;
    size_t glen;
    if (braid_gzip_new(&gz, NULL) == 0 &&
        braid_gzip_compress_alloc(gz, p, len, &gz_out, &glen) == 0) {
      if (flags & 8)
        ((uint8_t *)gz_out)[glen - 1] ^= 1; /* a wrong ISIZE */
      p = gz_out;
      len = glen;
      fl |= BRAID_FRAME_FLAG_GZIP;
    }
    braid_gzip_free(gz);
  }
  switch ((op >> 4) % 4) {
  case 0:
  case 1:
    send_frame(BRAID_FRAME_RESPONSE, fl, id ? id : 1, p, len);
    break;
  case 2: { /* ERROR for the id, with a code */
    uint8_t e[2 + 64] = {0, (uint8_t)(1 + flags % 12)};
    size_t el = len < 64 ? len : 64;
    memcpy(e + 2, p, el);
    send_frame(BRAID_FRAME_ERROR, 0, (flags & 0x80) ? 0 : id, e, 2 + el);
    break;
  }
  default: { /* GOAWAY with last_id = the id picked */
    uint8_t g[6] = {(uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id,
                    0, (uint8_t)(flags & 0x0f)};
    send_frame(BRAID_FRAME_GOAWAY, 0, 0, g, sizeof(g));
    break;
  }
  }
  braid_gzip_buf_free(gz_out);
}

static void run_script(in_t *in) {
  unsigned steps = 0;
  /* After the close callback the channel is freed: the script ends with it. */
  while (in->n && !R.closed && steps++ < 512) {
    unsigned op = take_u8(in);
    switch (op % 10) {
    case 0:
    case 1:
    case 2:
      do_call(in, op);
      break;
    case 3:
    case 4:
      answer(in, op);
      break;
    case 5: { /* PING or PONG from the server */
      uint8_t b[8] = {0};
      size_t len = take_u8(in) % 9;
      const uint8_t *p = take_bytes(in, &len); /* len shrinks to what is left */
      memcpy(b, p, len);
      send_frame((op & 0x10) ? BRAID_FRAME_PONG : BRAID_FRAME_PING, 0, take_u8(in), b, len);
      break;
    }
    case 6: { /* raw bytes */
      size_t len = take_u8(in);
      const uint8_t *p = take_bytes(in, &len);
      server_send(p, len);
      break;
    }
    case 7:
      turn(1 + (op >> 4) % 4);
      break;
    case 8:
      wait_ms(1 + (op >> 4) % 4);
      break;
    default:
      if ((op >> 4) == 0xf) {
        if (!R.closed)
          CHECK(braid_rpc_close(R.rpc) == 0);
      } else if ((op >> 4) == 0xe && R.fd >= 0) {
        shutdown(R.fd, SHUT_WR); /* the server's EOF */
      } else if ((op >> 4) == 0xd && R.fd >= 0) {
        struct linger lg = {1, 0};
        setsockopt(R.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(R.fd);
        R.fd = -1;
      }
      break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  setup_once();
  in_t in = {data, size};
  unsigned c0 = take_u8(&in), c1 = take_u8(&in);
  uint8_t *keep_in = R.in;
  size_t keep_cap = R.in_cap;
  memset(&R, 0, sizeof(R));
  R.in = keep_in;
  R.in_cap = keep_cap;

  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  static const unsigned inflight[] = {1, 2, 8, 1024};
  static const unsigned queued[] = {0, 1, 16, 65536};
  static const size_t maxp[] = {64, 4096, BRAID_FRAME_DEFAULT_MAX_PAYLOAD,
                                BRAID_FRAME_DEFAULT_MAX_PAYLOAD};
  o.max_inflight = inflight[c0 & 3];
  o.max_queued = queued[(c0 >> 2) & 3];
  o.max_payload_bytes = maxp[(c0 >> 4) & 3];
  o.timeout_ms = (c0 & 0x40) ? 2 : 0;
  o.gzip_min_bytes = (c1 & 1) ? 32 : 0;

  int c = -1;
  for (int attempt = 0; attempt < 200 && c < 0; attempt++) {
    c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0);
    if (connect(c, (struct sockaddr *)&g_addr, sizeof(g_addr)) != 0) {
      close(c);
      c = -1;
      usleep(10000);
    }
  }
  CHECK(c >= 0);
  R.fd = accept(g_listen_fd, NULL, NULL);
  CHECK(R.fd >= 0);
  CHECK(fcntl(R.fd, F_SETFL, fcntl(R.fd, F_GETFL) | O_NONBLOCK) == 0);
  braid_conn_opts_t co;
  braid_conn_opts_init(&co);
  co.close_flush_timeout_ms = 200;
  CHECK(braid__conn_create(g_loop, &co, &R.conn) == 0);
  CHECK(uv_tcp_open(braid_conn_uv(R.conn), c) == 0);
  CHECK(braid__conn_established(R.conn, NULL) == 0);
  braid_rpc_callbacks_t cbs = {.on_close = on_close};
  CHECK(braid_rpc_client(&R.rpc, R.conn, &o, &cbs, NULL) == 0);

  run_script(&in);

  if (!R.closed)
    CHECK(braid_rpc_close(R.rpc) == 0);
  if (R.fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(R.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(R.fd);
    R.fd = -1;
  }
  uint64_t start = uv_hrtime();
  for (unsigned i = 0; i < 16 && !R.closed; i++)
    turn(1);
  while (!R.closed) {
    wait_ms(1);
    if (uv_hrtime() - start > UINT64_C(5000000000)) {
      fprintf(stderr, "fuzz_rpc_client: the channel did not close within 5 s\n");
      __builtin_trap();
    }
  }
  braid_loop_run(g_loop, UV_RUN_NOWAIT);
  CHECK(R.close_calls == 1);
  CHECK(R.completed == R.ncalls);
  CHECK(g_loop->active == 0);
  CHECK(g_loop->chunks_out == 0);
  return 0;
}
