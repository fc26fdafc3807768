/* The HTTP server's core over loopback, with raw sockets: keep-alive, HTTP/1.0, HEAD,
 * routing (404, 405, prefixes), pipelining answered in order while handlers finish out of
 * order, handlers answering later and from another thread, request bodies (buffered,
 * chunked, streamed with backpressure, 100-continue), streamed responses with backpressure,
 * drain, and what an idle keep-alive connection keeps. */
#include <malloc.h>

#include "braid/alloc.h"
#include "http_fixture.h"

/* braid's heap in use, counted through braid_set_allocator (malloc_usable_size). */
static atomic_llong live_bytes;

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p));
  return p;
}

static void *count_calloc(size_t n, size_t size) {
  void *p = calloc(n, size);
  if (p)
    atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p));
  return p;
}

static void *count_realloc(void *old, size_t n) {
  long long was = old ? (long long)malloc_usable_size(old) : 0;
  void *p = realloc(old, n);
  if (p)
    atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p) - was);
  return p;
}

static void count_free(void *p) {
  if (p)
    atomic_fetch_sub(&live_bytes, (long long)malloc_usable_size(p));
  free(p);
}

/* ---- keep-alive, versions, HEAD, routing --------------------------------------------------- */

static void c_keepalive(hfix_t *f, void *arg) {
  char *out = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  int eof;
  size_t n = cl_read_responses(fd, out, 4096, 1, 5000, &eof);
  cl_sends(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_read_responses(fd, out + n, 4096, 1, 5000, &eof);
  /* still open: nothing more, no EOF within 200 ms */
  char more[64];
  cl_read(fd, more, sizeof(more), 200, &eof);
  strcat(out, eof ? "|EOF" : "|OPEN");
  close(fd);
}

static void test_keepalive(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  char out[8192] = {0};
  run_client(&f, c_keepalive, out, 10000);
  assert_int_equal(count_of(out, "HTTP/1.1 200 OK\r\n"), 2);
  assert_int_equal(count_of(out, "Hello, World!"), 2);
  assert_non_null(strstr(out, "Content-Length: 13\r\n"));
  assert_non_null(strstr(out, "Date: "));
  assert_non_null(strstr(out, "Server: braid\r\n"));
  assert_null(strstr(out, "Connection: close"));
  assert_non_null(strstr(out, "|OPEN"));
  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  assert_int_equal(st.requests, 2);
  assert_int_equal(st.keepalive_reuse, 1);
  assert_int_equal(st.status[2], 2);
  hfix_stop(&f);
}

typedef struct exch_s {
  const char *send;
  char out[65536];
  int eof;
  int wait_ms;
} exch_t;

/* Sends x->send and reads until EOF or x->wait_ms of silence. */
static void c_exchange(hfix_t *f, void *arg) {
  exch_t *x = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, x->send);
  cl_read(fd, x->out, sizeof(x->out), x->wait_ms ? x->wait_ms : 2000, &x->eof);
  close(fd);
}

static void exchange(hfix_t *f, exch_t *x, const char *send) {
  memset(x, 0, sizeof(*x));
  x->send = send;
  run_client(f, c_exchange, x, 15000);
}

static void test_http10_and_close(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  exchange(&f, &x, "GET / HTTP/1.0\r\n\r\n");
  assert_non_null(strstr(x.out, "HTTP/1.1 200 OK"));
  assert_non_null(strstr(x.out, "Connection: close"));
  assert_true(x.eof);

  x.wait_ms = 300;
  memset(&x, 0, sizeof(x));
  x.wait_ms = 300;
  x.send = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  run_client(&f, c_exchange, &x, 5000);
  assert_non_null(strstr(x.out, "Connection: keep-alive"));
  assert_false(x.eof);

  exchange(&f, &x, "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  assert_int_equal(count_of(x.out, "HTTP/1.1 200"), 1);
  assert_non_null(strstr(x.out, "Connection: close"));
  assert_true(x.eof);
  hfix_stop(&f);
}

static void test_head_and_routes(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  exchange(&f, &x, "HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(x.out, "HTTP/1.1 200 OK"));
  assert_non_null(strstr(x.out, "Content-Length: 13\r\n"));
  assert_null(strstr(x.out, "Hello"));

  exchange(&f, &x, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(x.out, "HTTP/1.1 404 Not Found"));

  exchange(&f, &x, "DELETE / HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(x.out, "HTTP/1.1 405 Method Not Allowed"));
  assert_non_null(strstr(x.out, "Allow: GET, HEAD\r\n"));

  exchange(&f, &x, "GET /p/a/b?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(x.out, "\r\n\r\n/p/a/b"));
  exchange(&f, &x, "GET /p/exact HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(x.out, "Hello, World!"));
  hfix_stop(&f);
}

/* ---- pipelining -------------------------------------------------------------------------- */

static void test_pipelining_in_order(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  /* The first handler finishes last, the second first: answers still leave in order. */
  exchange(&f, &x,
           "GET /later?ms=150&id=1 HTTP/1.1\r\n\r\n"
           "GET /later?ms=10&id=2 HTTP/1.1\r\n\r\n"
           "GET / HTTP/1.1\r\n\r\n"
           "GET /thread HTTP/1.1\r\n\r\n"
           "GET /later?ms=50&id=5 HTTP/1.1\r\nConnection: close\r\n\r\n");
  const char *a = strstr(x.out, "later 1");
  const char *b = strstr(x.out, "later 2");
  const char *c = strstr(x.out, "Hello, World!");
  const char *d = strstr(x.out, "thread 500500");
  const char *e = strstr(x.out, "later 5");
  assert_non_null(a);
  assert_true(a && b && c && d && e && a < b && b < c && c < d && d < e);
  assert_true(x.eof);
  hfix_stop(&f);
}

/* More pipelined requests than max_pipelined: all answered, in order. */
static void test_pipelining_cap(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.max_pipelined = 2;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  static char req[8192];
  size_t n = 0;
  for (int i = 0; i < 20; i++)
    n += (size_t)snprintf(req + n, sizeof(req) - n, "GET /later?ms=%d&id=%d HTTP/1.1\r\n\r\n",
                          (i * 7) % 20, i);
  n += (size_t)snprintf(req + n, sizeof(req) - n, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
  exch_t x;
  exchange(&f, &x, req);
  const char *p = x.out;
  for (int i = 0; i < 20; i++) {
    char want[32];
    snprintf(want, sizeof(want), "later %d", i);
    const char *q = strstr(p, want);
    if (!q)
      fail_msg("answer %d missing or out of order", i);
    p = q;
  }
  assert_non_null(strstr(p, "Hello, World!"));
  assert_true(x.eof);
  hfix_stop(&f);
}

/* ---- request bodies ------------------------------------------------------------------------ */

static void test_bodies(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  exchange(&f, &x, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  assert_non_null(strstr(x.out, "Content-Length: 5\r\n"));
  assert_non_null(strstr(x.out, "\r\n\r\nhello"));

  exchange(&f, &x,
           "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n");
  assert_non_null(strstr(x.out, "\r\n\r\nabcdefg"));

  /* 100-continue on a buffered route: the server will read the body, so it says so. */
  exchange(&f, &x,
           "POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
           "Connection: close\r\n\r\nok");
  assert_true(strncmp(x.out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", 38) == 0);
  hfix_stop(&f);
}

typedef struct upload_s {
  size_t len;
  int chunked;
  const char *path;
  char out[4096];
  int eof;
} upload_t;

static void c_upload(hfix_t *f, void *arg) {
  upload_t *u = arg;
  int fd = cl_connect(f->port);
  char head[256];
  if (u->chunked)
    snprintf(head, sizeof(head),
             "POST %s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
             u->path);
  else
    snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
             u->path, u->len);
  cl_sends(fd, head);
  static char block[10000];
  memset(block, 'x', sizeof(block));
  for (size_t sent = 0; sent < u->len;) {
    size_t n = u->len - sent < sizeof(block) ? u->len - sent : sizeof(block);
    if (u->chunked) {
      char ch[32];
      snprintf(ch, sizeof(ch), "%zx\r\n", n);
      cl_sends(fd, ch);
    }
    cl_send(fd, block, n);
    if (u->chunked)
      cl_sends(fd, "\r\n");
    sent += n;
  }
  if (u->chunked)
    cl_sends(fd, "0\r\n\r\n");
  cl_read(fd, u->out, sizeof(u->out), 10000, &u->eof);
  close(fd);
}

/* A streamed body paused after every piece (backpressure) still arrives whole. */
static void test_stream_body_backpressure(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  upload_t u = {.len = 600000, .path = "/stream?pause=1"};
  run_client(&f, c_upload, &u, 30000);
  if (!strstr(u.out, "HTTP/1.1 200 OK"))
    fail_msg("got '%s' eof %d bytes %d", u.out, u.eof, atomic_load(&f.stream_bytes));
  assert_non_null(strstr(u.out, "got 600000"));
  assert_int_equal(f.stream_status, BRAID_EOF);
  upload_t c = {.len = 300000, .chunked = 1, .path = "/stream"};
  run_client(&f, c_upload, &c, 30000);
  assert_non_null(strstr(c.out, "got 300000"));
  hfix_stop(&f);
}

/* Streaming route: 100 Continue only once the handler reads; a handler that refuses answers
 * at once, without 100, and the connection closes after. */
static void test_expect_continue_stream(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  exchange(&f, &x,
           "POST /stream HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc");
  assert_true(strncmp(x.out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", 38) == 0);
  assert_non_null(strstr(x.out, "got 3"));

  x.wait_ms = 2000;
  exchange(&f, &x,
           "POST /stream?refuse=1 HTTP/1.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n");
  assert_true(strncmp(x.out, "HTTP/1.1 403 Forbidden", 22) == 0);
  assert_null(strstr(x.out, "100 Continue"));
  assert_non_null(strstr(x.out, "Connection: close"));
  assert_true(x.eof);

  exchange(&f, &x, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nExpect: magic\r\n\r\nabc");
  assert_non_null(strstr(x.out, "HTTP/1.1 417 Expectation Failed"));
  assert_true(x.eof);
  hfix_stop(&f);
}

/* ---- streamed responses -------------------------------------------------------------------- */

typedef struct bigread_s {
  const char *req;
  size_t total;
  int eof;
  int slow;
} bigread_t;

static void c_bigread(hfix_t *f, void *arg) {
  bigread_t *b = arg;
  int fd = cl_connect(f->port);
  int small = 32 * 1024;
  if (b->slow)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  cl_sends(fd, b->req);
  static char buf[65536];
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0)
      break;
    ssize_t k = recv(fd, buf, b->slow ? 4096 : sizeof(buf), 0);
    if (k <= 0) {
      b->eof = 1;
      break;
    }
    b->total += (size_t)k;
    if (b->slow)
      usleep(200);
  }
  close(fd);
}

static void test_streamed_response(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  bigread_t b = {.req = "GET /big?n=8000000 HTTP/1.1\r\nConnection: close\r\n\r\n"};
  run_client(&f, c_bigread, &b, 60000);
  assert_true(b.eof);
  assert_true(b.total > 8000000 && b.total < 8000000 + 400);
  /* the producer paused at the watermark: the queue stayed near 1 MiB, not 8 MB */
  assert_true(f.big_max_queued < 2 * 1024 * 1024);

  /* chunked, read slowly through a small receive buffer: not cut off, all arrives */
  bigread_t c = {.req = "GET /big?n=3000000&chunked=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
                 .slow = 1};
  f.big_max_queued = 0;
  run_client(&f, c_bigread, &c, 60000);
  assert_true(c.eof);
  assert_true(c.total > 3000000);
  assert_true(f.big_max_queued < 2 * 1024 * 1024);
  hfix_stop(&f);
}

/* HTTP/1.0 cannot take chunked: a streamed body of unknown length is close-delimited. */
static void test_http10_streamed(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  static exch_t x;
  exchange(&f, &x, "GET /big?n=50000&chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  assert_non_null(strstr(x.out, "HTTP/1.1 200 OK"));
  assert_null(strstr(x.out, "Transfer-Encoding"));
  assert_null(strstr(x.out, "Content-Length"));
  assert_non_null(strstr(x.out, "Connection: close"));
  const char *body = strstr(x.out, "\r\n\r\n") + 4;
  assert_int_equal(strlen(body), 50000);
  assert_true(x.eof);
  hfix_stop(&f);
}

/* A client that asks for a large response and never reads: the producer is held at the
 * watermark (memory bounded) and hears BRAID_ECANCELED when the client goes away. */
static void c_never_read(hfix_t *f, void *arg) {
  (void)arg;
  int fd = cl_connect(f->port);
  int small = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  cl_sends(fd, "GET /big?n=100000000 HTTP/1.1\r\n\r\n");
  usleep(500 * 1000);
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

static void test_never_reading_client(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  run_client(&f, c_never_read, NULL, 10000);
  for (int i = 0; i < 50 && !f.produced_cancelled; i++)
    bt_run_for(&f.t, 20);
  assert_true(f.produced_cancelled);
  assert_true(f.big_max_queued < 2 * 1024 * 1024);
  hfix_stop(&f);
}

/* ---- drain --------------------------------------------------------------------------------- */

typedef struct drain_s {
  char busy_out[4096];
  int idle_eof, busy_eof;
  double idle_closed_ms;
} drain_t;

static hfix_t *drain_fix;
static void start_drain(void *arg) {
  hfix_t *f = arg;
  assert_int_equal(braid_server_drain(f->tcp, 5000, hfix_on_tcp_closed, f), 0);
}

static void c_drain(hfix_t *f, void *arg) {
  drain_t *d = arg;
  int idle = cl_connect(f->port);
  cl_sends(idle, "GET / HTTP/1.1\r\n\r\n");
  char tmp[4096];
  int eof;
  cl_read_responses(idle, tmp, sizeof(tmp), 1, 5000, &eof);
  int busy = cl_connect(f->port);
  cl_sends(busy, "GET /later?ms=400&id=9 HTTP/1.1\r\n\r\n");
  usleep(100 * 1000);
  braid_loop_post(f->t.loop, start_drain, f);
  uint64_t t0 = uv_hrtime();
  cl_read(idle, tmp, sizeof(tmp), 3000, &d->idle_eof);
  d->idle_closed_ms = (double)(uv_hrtime() - t0) / 1e6;
  cl_read(busy, d->busy_out, sizeof(d->busy_out), 5000, &d->busy_eof);
  close(idle);
  close(busy);
}

static void test_drain(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  drain_fix = &f;
  drain_t d = {0};
  run_client(&f, c_drain, &d, 15000);
  assert_true(d.idle_eof);
  assert_true(d.idle_closed_ms < 300); /* at once, not after the busy one */
  assert_non_null(strstr(d.busy_out, "later 9"));
  assert_non_null(strstr(d.busy_out, "Connection: close"));
  assert_true(d.busy_eof);
  bt_run_until(&f.t, &f.tcp_closed, 10000);
  assert_int_equal(f.drain_status, 0);
  hfix_stop(&f);
}

/* Drain under load: clients keep sending keep-alive requests while the server drains.
 * Every request either gets its whole response or finds its connection closed before any
 * byte of an answer (safe to retry): no response is cut, none is lost after being taken. */
typedef struct load_s {
  int answered, cut, unanswered;
} load_t;

static void c_load_one(hfix_t *f, load_t *l) {
  int fd = cl_connect(f->port);
  for (int i = 0; i < 200; i++) {
    char req[96];
    snprintf(req, sizeof(req), "GET /later?ms=%d&id=%d HTTP/1.1\r\n\r\n", i % 3, i);
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
      l->unanswered++;
      break;
    }
    char out[1024];
    int eof = 0;
    size_t n = cl_read_responses(fd, out, sizeof(out), 1, 5000, &eof);
    char want[32];
    snprintf(want, sizeof(want), "later %d", i);
    if (strstr(out, want)) {
      l->answered++;
      if (strstr(out, "Connection: close"))
        break;
    } else {
      if (n)
        l->cut++;
      else
        l->unanswered++;
      break;
    }
  }
  close(fd);
}

typedef struct loadrun_s {
  load_t loads[4];
  uv_thread_t th[4];
  hfix_t *f;
} loadrun_t;

static void load_thread(void *arg) {
  load_t *l = arg;
  c_load_one(drain_fix, l);
}

static void c_load(hfix_t *f, void *arg) {
  loadrun_t *r = arg;
  for (int i = 0; i < 4; i++)
    uv_thread_create(&r->th[i], load_thread, &r->loads[i]);
  usleep(150 * 1000);
  braid_loop_post(f->t.loop, start_drain, f);
  for (int i = 0; i < 4; i++)
    uv_thread_join(&r->th[i]);
}

static void test_drain_under_load(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  drain_fix = &f;
  static loadrun_t r;
  memset(&r, 0, sizeof(r));
  run_client(&f, c_load, &r, 30000);
  int answered = 0;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(r.loads[i].cut, 0);
    answered += r.loads[i].answered;
  }
  assert_true(answered > 4);
  bt_run_until(&f.t, &f.tcp_closed, 10000);
  assert_int_equal(f.drain_status, 0); /* finished before the deadline */
  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  /* every request a handler took was answered */
  assert_int_equal(f.later_pending, 0);
  hfix_stop(&f);
}

/* ---- idle keep-alive connections ----------------------------------------------------------- */

#define IDLE_CONNS 20

typedef struct idle_s {
  long long busy, idle; /* braid's heap right after the requests, and after 1.6 s idle */
  int answered;         /* requests answered after the idle time */
} idle_t;

static void c_idle(hfix_t *f, void *arg) {
  idle_t *x = arg;
  int fds[IDLE_CONNS], eof;
  char out[4096];
  for (int i = 0; i < IDLE_CONNS; i++) {
    fds[i] = cl_connect(f->port);
    cl_sends(fds[i], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_read_responses(fds[i], out, sizeof(out), 1, 5000, &eof);
  }
  usleep(100 * 1000);
  x->busy = atomic_load(&live_bytes);
  usleep(1600 * 1000); /* KA_TRIM_MS (1 s) and a tick (100 ms here) */
  x->idle = atomic_load(&live_bytes);
  for (int i = 0; i < IDLE_CONNS; i++) {
    memset(out, 0, sizeof(out));
    cl_sends(fds[i], "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_read_responses(fds[i], out, sizeof(out), 1, 5000, &eof);
    x->answered += strstr(out, "Hello, World!") != NULL;
    close(fds[i]);
  }
}

/* A keep-alive connection keeps one finished request (with its header buffers) to serve the
 * next without allocating; idle for a second, it gives that back, so 10,000 idle
 * connections cost their connection, HTTP state and parser only. They still serve. */
static void test_idle_keepalive_gives_memory_back(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.header_timeout_ms = 400; /* a 100 ms tick */
  o.keepalive_timeout_ms = 10000;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  idle_t x = {0};
  run_client(&f, c_idle, &x, 15000);
  assert_int_equal(x.answered, IDLE_CONNS);
  /* the spare request (328 B), its header buffer (256 B) and header index (128 B) each */
  long long freed = (x.busy - x.idle) / IDLE_CONNS;
  print_message("idle keep-alive: %lld B freed per connection\n", freed);
  assert_true(freed >= 600);
  hfix_stop(&f);
}

int main(void) {
  /* Before any braid allocation, so every free is of a counted block. */
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, count_free), 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive),
      cmocka_unit_test(test_http10_and_close),
      cmocka_unit_test(test_head_and_routes),
      cmocka_unit_test(test_pipelining_in_order),
      cmocka_unit_test(test_pipelining_cap),
      cmocka_unit_test(test_bodies),
      cmocka_unit_test(test_stream_body_backpressure),
      cmocka_unit_test(test_expect_continue_stream),
      cmocka_unit_test(test_streamed_response),
      cmocka_unit_test(test_http10_streamed),
      cmocka_unit_test(test_never_reading_client),
      cmocka_unit_test(test_drain),
      cmocka_unit_test(test_drain_under_load),
      cmocka_unit_test(test_idle_keepalive_gives_memory_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
