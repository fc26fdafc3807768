/* The HTTP/1.1 client session (braid/http_client.h) against real peers on loopback: braid's
 * own http server (in this process, on the test's loop), python3's http.server, and a raw
 * Python peer with honest and hostile answers (http_peer.py: lying lengths, endless bodies,
 * huge headers, a gzip bomb, silence, resets, 1xx floods, garbage, early answers, and the
 * keep-alive race). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_fixture.h"
#include "braid/http_client.h"
#include "braid/tls.h"

/* ---- peers in child processes ---------------------------------------------------------- */

typedef struct peer_s {
  pid_t pid;
  int in_fd; /* the child's stdin: closing it ends the peer */
  int port;
} peer_t;

/* Starts argv[0..] with a pipe on stdin and stdout; reads the port from the first line the
 * child prints (the last number on it). */
static void peer_start(peer_t *p, char *const argv[]) {
  int in[2], out[2];
  assert_int_equal(pipe(in), 0);
  assert_int_equal(pipe(out), 0);
  p->pid = fork();
  assert_true(p->pid >= 0);
  if (p->pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  p->in_fd = in[1];
  char line[512];
  size_t n = 0;
  while (n < sizeof(line) - 1) {
    ssize_t r = read(out[0], line + n, 1);
    if (r <= 0 || line[n] == '\n')
      break;
    n++;
  }
  line[n] = '\0';
  close(out[0]);
  /* "12345" or "Serving HTTP on 127.0.0.1 port 12345 (http://...) ..." */
  const char *s = strstr(line, "port ");
  p->port = atoi(s ? s + 5 : line);
  assert_true(p->port > 0);
}

static void peer_stop(peer_t *p) {
  close(p->in_fd);
  kill(p->pid, SIGTERM);
  int st;
  waitpid(p->pid, &st, 0);
}

static void raw_peer_start(peer_t *p) {
  const char *script = getenv("BRAID_HTTP_PEER");
  assert_non_null(script);
  char *argv[] = {"python3", (char *)script, NULL};
  peer_start(p, argv);
}

/* ---- one request at a time ------------------------------------------------------------- */

typedef struct got_s {
  int done;
  int calls;
  int status;
  int http_status;
  int http_version;
  braid_http_phase_t phase;
  braid_http_timeout_t timeout;
  int reused;
  unsigned retries, redirects;
  char ce[64];
  uint8_t *body;
  size_t len;
  /* streamed */
  int streamed, head_calls, body_calls, eof;
  size_t max_piece;
  int pause_ms;
  uv_timer_t timer;
  braid_http_client_req_t *req;
  braid_loop_t *loop;
} got_t;

static void got_reset(got_t *g) {
  free(g->body);
  memset(g, 0, sizeof(*g));
}

static void on_res(braid_http_client_req_t *req, int status, const braid_http_client_response_t *res,
                   void *arg) {
  got_t *g = arg;
  (void)req;
  g->calls++;
  g->head_calls++;
  g->status = status;
  g->http_status = res->http_status;
  g->http_version = res->http_version;
  g->phase = res->phase;
  g->timeout = res->timeout;
  g->reused = res->reused;
  g->retries = res->retries;
  g->redirects = res->redirects;
  const char *ce = braid_http_client_response_header(res, "content-encoding");
  snprintf(g->ce, sizeof(g->ce), "%s", ce ? ce : "");
  if (res->body_len) {
    g->body = malloc(res->body_len + 1);
    memcpy(g->body, res->body, res->body_len);
    g->body[res->body_len] = 0;
    g->len = res->body_len;
  }
  if (!g->streamed || status < 0)
    g->done = 1;
}

static void resume_fire(uv_timer_t *t) {
  got_t *g = t->data;
  assert_int_equal(braid_http_client_req_resume(g->req), 0);
}

static void on_piece(braid_http_client_req_t *req, int status, const uint8_t *data, size_t len,
                     void *arg) {
  got_t *g = arg;
  (void)data;
  if (status != 0) {
    g->status = status == BRAID_EOF ? 0 : status;
    g->eof = status == BRAID_EOF;
    g->done = 1;
    if (g->pause_ms)
      uv_close((uv_handle_t *)&g->timer, NULL);
    return;
  }
  g->body_calls++;
  g->len += len;
  if (len > g->max_piece)
    g->max_piece = len;
  if (g->pause_ms) {
    /* a slow consumer: stop after every piece, go on a little later */
    g->req = req;
    assert_int_equal(braid_http_client_req_pause(req), 0);
    uv_timer_start(&g->timer, resume_fire, (uint64_t)g->pause_ms, 0);
  }
}

static void fetch(bt_loop_t *t, braid_http_client_t *cl, const char *method, const char *url,
                  const void *body, size_t blen, const braid_http_client_req_opts_t *o,
                  got_t *g) {
  got_reset(g);
  if (getenv("HC_TRACE"))
    fprintf(stderr, "fetch %s %s\n", method, url);
  assert_int_equal(braid_http_client_request(NULL, cl, method, url, NULL, 0, body, blen, o, on_res,
                                             NULL, g),
                   0);
  bt_run_until(t, &g->done, 15000);
  assert_int_equal(g->calls, 1);
}

static void url_of(char *out, size_t cap, int port, const char *path) {
  assert_true(strlen(path) + 32 < cap);
  int n = snprintf(out, cap, "http://127.0.0.1:%d", port);
  memcpy(out + n, path, strlen(path) + 1);
}

static int client_closed;
static void on_client_closed(braid_http_client_t *cl, int status, void *arg) {
  (void)cl;
  (void)arg;
  assert_int_equal(status, 0);
  client_closed = 1;
}

static void close_client(bt_loop_t *t, braid_http_client_t *cl) {
  client_closed = 0;
  assert_int_equal(braid_http_client_close(cl, on_client_closed, NULL), 0);
  assert_int_equal(client_closed, 0); /* never from inside the call */
  bt_run_until(t, &client_closed, 10000);
}

/* ---- against braid's own server -------------------------------------------------------- */

static void test_braid_server(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, f.t.loop, NULL), 0);
  got_t g = {0};
  char url[256];

  url_of(url, sizeof(url), f.port, "/");
  fetch(&f.t, cl, NULL, url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.http_version, 11);
  assert_int_equal(g.phase, BRAID_HTTP_PHASE_DONE);
  assert_int_equal(g.len, 13);
  assert_memory_equal(g.body, "Hello, World!", 13);
  assert_int_equal(g.reused, 0);

  /* kept alive: the second request reuses the connection */
  fetch(&f.t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.reused, 1);

  /* a body from memory */
  url_of(url, sizeof(url), f.port, "/echo");
  fetch(&f.t, cl, "POST", url, "ping pong", 9, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 9);
  assert_memory_equal(g.body, "ping pong", 9);

  /* the server compresses /text (Accept-Encoding sent by default): decoded here */
  url_of(url, sizeof(url), f.port, "/text");
  fetch(&f.t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_string_equal(g.ce, "gzip");
  assert_int_equal(g.len, 8192);
  assert_memory_equal(g.body, "hello braid http hello", 22);

  /* without decompression: no Accept-Encoding, the body as sent */
  braid_http_client_req_opts_t ro;
  braid_http_client_req_opts_init(&ro);
  ro.decompress = 0;
  fetch(&f.t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_int_equal(g.http_status, 200);
  assert_string_equal(g.ce, "");
  assert_int_equal(g.len, 8192);

  /* a large chunked body, whole */
  url_of(url, sizeof(url), f.port, "/big?n=1000000&chunked=1");
  fetch(&f.t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 1000000);

  /* HEAD: the header section only, and the connection stays in step */
  url_of(url, sizeof(url), f.port, "/");
  fetch(&f.t, cl, "HEAD", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 0);
  fetch(&f.t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.len, 13);

  /* 404 is a response, not an error */
  url_of(url, sizeof(url), f.port, "/nowhere");
  fetch(&f.t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_status, 404);

  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_int_equal(st.connects, 1);
  assert_int_equal(st.requests, 9);
  assert_int_equal(st.completed, 9);
  assert_int_equal(st.sent, 9);
  assert_int_equal(st.reused, 8);
  assert_true(st.body_bytes_decoded > st.body_bytes_wire);
  assert_int_equal(st.latency_us.count, 9);
  assert_int_equal(st.open, 1);
  assert_int_equal(st.idle, 1);

  got_reset(&g);
  close_client(&f.t, cl);
  hfix_stop(&f);
}

/* A large streamed response to a consumer that pauses after every piece: all of it
 * arrives, in bounded pieces, while the server is held back by TCP flow control. */
static void test_stream_slow_consumer(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, f.t.loop, NULL), 0);
  got_t g = {0};
  g.streamed = 1;
  g.pause_ms = 1;
  uv_timer_init(&f.t.uv, &g.timer);
  g.timer.data = &g;
  char url[256];
  const size_t total = 8u << 20;
  url_of(url, sizeof(url), f.port, "/big?n=8388608");
  assert_int_equal(braid_http_client_request(NULL, cl, "GET", url, NULL, 0, NULL, 0, NULL, on_res,
                                             on_piece, &g),
                   0);
  bt_run_until(&f.t, &g.done, 60000);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.eof, 1);
  assert_int_equal(g.head_calls, 1);
  assert_int_equal(g.len, total);
  assert_true(g.max_piece <= 64 * 1024);
  /* the server had to queue: the client was not reading while paused */
  assert_true(f.big_max_queued > 0);
  close_client(&f.t, cl);
  hfix_stop(&f);
}

/* Pipelining to one host: eight slow answers on one connection take about one answer's
 * time, not eight. */
static void test_pipeline(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = 1;
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, f.t.loop, &o), 0);
  assert_int_equal(braid_http_client_pipeline(cl, "127.0.0.1", f.port, 8), 0);
  got_t g[8];
  memset(g, 0, sizeof(g));
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < 8; i++) {
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/later?ms=100&id=%d", f.port, i);
    assert_int_equal(braid_http_client_request(NULL, cl, "GET", url, NULL, 0, NULL, 0, NULL,
                                               on_res, NULL, &g[i]),
                     0);
  }
  for (int i = 0; i < 8; i++) {
    bt_run_until(&f.t, &g[i].done, 10000);
    char want[32];
    snprintf(want, sizeof(want), "later %d", i);
    assert_int_equal(g[i].status, 0);
    assert_int_equal(g[i].len, strlen(want));
    assert_memory_equal(g[i].body, want, strlen(want));
    got_reset(&g[i]);
  }
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_true(ms < 600); /* 8 x 100 ms one after the other would be 800 */
  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_int_equal(st.connects, 1);
  close_client(&f.t, cl);
  hfix_stop(&f);
}

/* A burst of 10,000 requests within the connection limits. */
typedef struct burst_s {
  int done, ok, left;
} burst_t;

static void on_burst(braid_http_client_req_t *req, int status,
                     const braid_http_client_response_t *res, void *arg) {
  (void)req;
  burst_t *b = arg;
  if (status == 0 && res->http_status == 200 && res->body_len == 13)
    b->ok++;
  if (--b->left == 0)
    b->done = 1;
}

static void test_burst_limits(void **state) {
  (void)state;
  hfix_t f;
  braid_http_server_opts_t ho;
  braid_http_server_opts_init(&ho);
  ho.keepalive_requests = 0; /* the server never ends a connection: only the limit counts */
  hfix_start(&f, &ho, NULL);
  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = 4;
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, f.t.loop, &o), 0);
  char url[256];
  url_of(url, sizeof(url), f.port, "/");
  burst_t b = {0, 0, 10000};
  for (int i = 0; i < 10000; i++)
    assert_int_equal(braid_http_client_get(NULL, cl, url, on_burst, &b), 0);
  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_int_equal(st.queued, 10000); /* nothing is connected before the loop runs */
  bt_run_until(&f.t, &b.done, 60000);
  assert_int_equal(b.ok, 10000);
  braid_http_client_stats(cl, &st);
  assert_true(st.connects <= 4);
  assert_int_equal(st.completed, 10000);
  assert_true(st.reused >= 10000 - 4);
  close_client(&f.t, cl);
  hfix_stop(&f);
}

/* ---- against the raw peer -------------------------------------------------------------- */

static void test_framings(void **state) {
  (void)state;
  peer_t p;
  raw_peer_start(&p);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  got_t g = {0};
  char url[256];

  url_of(url, sizeof(url), p.port, "/cl?n=1000");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 1000);

  url_of(url, sizeof(url), p.port, "/chunked");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.len, 19);
  assert_memory_equal(g.body, "hello chunked world", 19);
  assert_int_equal(g.reused, 1);

  url_of(url, sizeof(url), p.port, "/close");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.len, 11);
  assert_memory_equal(g.body, "until close", 11);

  url_of(url, sizeof(url), p.port, "/http10");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_version, 10);
  assert_int_equal(g.len, 14);

  const char *enc[] = {"/gzip", "/deflate", "/rawdeflate"};
  for (int i = 0; i < 3; i++) {
    url_of(url, sizeof(url), p.port, enc[i]);
    fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
    assert_int_equal(g.status, 0);
    assert_true(g.len > 50000);
    assert_memory_equal(g.body, "line 0 of a compressible body\nline 1 ", 37);
  }

  url_of(url, sizeof(url), p.port, "/1xx?n=3");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 5);

  url_of(url, sizeof(url), p.port, "/head");
  fetch(&t, cl, "HEAD", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.len, 0);
  url_of(url, sizeof(url), p.port, "/204");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 204);
  url_of(url, sizeof(url), p.port, "/304");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 304);
  assert_int_equal(g.len, 0);
  /* still in step after the bodiless ones */
  url_of(url, sizeof(url), p.port, "/echo");
  fetch(&t, cl, "PUT", url, "xyz", 3, NULL, &g);
  assert_int_equal(g.len, 7);
  assert_memory_equal(g.body, "PUT xyz", 7);
  assert_int_equal(g.reused, 1);

  /* a streamed HEAD goes straight to the end */
  got_reset(&g);
  g.streamed = 1;
  url_of(url, sizeof(url), p.port, "/head");
  assert_int_equal(braid_http_client_request(NULL, cl, "HEAD", url, NULL, 0, NULL, 0, NULL, on_res,
                                             on_piece, &g),
                   0);
  bt_run_until(&t, &g.done, 10000);
  assert_int_equal(g.eof, 1);
  assert_int_equal(g.head_calls, 1);
  assert_int_equal(g.body_calls, 0);

  got_reset(&g);
  close_client(&t, cl);
  bt_loop_done(&t);
  peer_stop(&p);
}

static void expect_fail(bt_loop_t *t, braid_http_client_t *cl, const char *method, const char *url,
                        const void *body, size_t blen, const braid_http_client_req_opts_t *o,
                        int status, braid_http_phase_t phase) {
  got_t g = {0};
  fetch(t, cl, method, url, body, blen, o, &g);
  if (g.status != status)
    fprintf(stderr, "%s: got %s (%s) phase %s, want %s\n", url, braid_err_name(g.status),
            braid_strerror(g.status), braid_http_phase_name(g.phase), braid_err_name(status));
  assert_int_equal(g.status, status);
  assert_int_equal(g.phase, phase);
  got_reset(&g);
}

static void test_hostile(void **state) {
  (void)state;
  peer_t p;
  raw_peer_start(&p);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  char url[256];
  braid_http_client_req_opts_t ro;
  braid_http_client_req_opts_init(&ro);

  url_of(url, sizeof(url), p.port, "/lie");
  expect_fail(&t, cl, "GET", url, NULL, 0, NULL, BRAID_ETRUNCATED, BRAID_HTTP_PHASE_BODY);

  ro.max_body_bytes = 1 << 20;
  url_of(url, sizeof(url), p.port, "/endless");
  expect_fail(&t, cl, "GET", url, NULL, 0, &ro, BRAID_ETOOBIG, BRAID_HTTP_PHASE_BODY);
  braid_http_client_req_opts_init(&ro);

  url_of(url, sizeof(url), p.port, "/hugeheaders");
  expect_fail(&t, cl, "GET", url, NULL, 0, NULL, BRAID_ETOOBIG, BRAID_HTTP_PHASE_HEADERS);

  url_of(url, sizeof(url), p.port, "/bomb");
  expect_fail(&t, cl, "GET", url, NULL, 0, NULL, BRAID_ERATIO, BRAID_HTTP_PHASE_BODY);

  url_of(url, sizeof(url), p.port, "/1xx?n=100");
  expect_fail(&t, cl, "GET", url, NULL, 0, NULL, BRAID_EPROTO, BRAID_HTTP_PHASE_HEADERS);

  url_of(url, sizeof(url), p.port, "/garbage");
  expect_fail(&t, cl, "GET", url, NULL, 0, NULL, BRAID_EPROTO, BRAID_HTTP_PHASE_HEADERS);

  /* a reset part way through the body */
  got_t g = {0};
  url_of(url, sizeof(url), p.port, "/reset");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_true(g.status == UV_ECONNRESET || g.status == BRAID_ETRUNCATED);
  assert_int_equal(g.phase, BRAID_HTTP_PHASE_BODY);

  /* timeouts, each named */
  ro.header_timeout_ms = 200;
  url_of(url, sizeof(url), p.port, "/never");
  fetch(&t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_int_equal(g.status, BRAID_ETIMEDOUT);
  assert_int_equal(g.timeout, BRAID_HTTP_TIMEOUT_HEADER);
  assert_int_equal(g.phase, BRAID_HTTP_PHASE_HEADERS);
  url_of(url, sizeof(url), p.port, "/slowhead");
  fetch(&t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_int_equal(g.status, BRAID_ETIMEDOUT);
  assert_int_equal(g.timeout, BRAID_HTTP_TIMEOUT_HEADER);
  braid_http_client_req_opts_init(&ro);
  ro.total_timeout_ms = 300;
  ro.max_body_bytes = 0;
  got_reset(&g);
  g.streamed = 1;
  url_of(url, sizeof(url), p.port, "/endless");
  assert_int_equal(braid_http_client_request(NULL, cl, "GET", url, NULL, 0, NULL, 0, &ro, on_res,
                                             on_piece, &g),
                   0);
  bt_run_until(&t, &g.done, 10000);
  assert_int_equal(g.status, BRAID_ETIMEDOUT);
  assert_true(g.len > 0);

  /* an answer before the request body was read */
  static char big[65536];
  memset(big, 'b', sizeof(big));
  url_of(url, sizeof(url), p.port, "/early");
  fetch(&t, cl, "POST", url, big, sizeof(big), NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_status, 413);

  /* the client is fine after all of it */
  url_of(url, sizeof(url), p.port, "/cl?n=3");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  got_reset(&g);

  close_client(&t, cl);
  bt_loop_done(&t);
  peer_stop(&p);
}

/* The keep-alive race: the server closes a kept-alive connection as the next request on it
 * arrives. GET goes again on a fresh connection; POST does not (unless marked safe). */
static void test_keepalive_race(void **state) {
  (void)state;
  peer_t p;
  raw_peer_start(&p);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  got_t g = {0};
  char url[256];
  url_of(url, sizeof(url), p.port, "/race");

  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.retries, 0);
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.retries, 1);
  assert_int_equal(g.reused, 0); /* answered on the fresh connection */

  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_int_equal(st.retries, 1);
  assert_int_equal(st.connects, 2);

  /* POST on the reused connection: not sent twice (a new session: a fresh connection) */
  close_client(&t, cl);
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  fetch(&t, cl, "POST", url, "once", 4, NULL, &g);
  assert_int_equal(g.status, 0);
  fetch(&t, cl, "POST", url, "once", 4, NULL, &g);
  assert_true(g.status == UV_EOF || g.status == UV_ECONNRESET);
  assert_int_equal(g.retries, 0);
  assert_int_equal(g.http_status, 0);

  /* unless the caller says it is safe */
  braid_http_client_req_opts_t ro;
  braid_http_client_req_opts_init(&ro);
  ro.retry_unsafe = 1;
  close_client(&t, cl);
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  fetch(&t, cl, "POST", url, "safe", 4, &ro, &g);
  assert_int_equal(g.status, 0);
  fetch(&t, cl, "POST", url, "safe", 4, &ro, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.retries, 1);

  braid_http_client_stats(cl, &st);
  assert_int_equal(st.retries, 1);
  got_reset(&g);
  close_client(&t, cl);
  bt_loop_done(&t);
  peer_stop(&p);
}

static void test_redirects(void **state) {
  (void)state;
  peer_t p;
  raw_peer_start(&p);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  got_t g = {0};
  char url[256];
  braid_http_client_req_opts_t ro;
  braid_http_client_req_opts_init(&ro);

  /* off by default: the 303 itself */
  url_of(url, sizeof(url), p.port, "/redirect?code=303&to=/echo");
  fetch(&t, cl, "POST", url, "data", 4, NULL, &g);
  assert_int_equal(g.http_status, 303);
  assert_int_equal(g.redirects, 0);

  ro.max_redirects = 5;
  fetch(&t, cl, "POST", url, "data", 4, &ro, &g);
  assert_int_equal(g.http_status, 200);
  assert_int_equal(g.redirects, 1);
  assert_string_equal((char *)g.body, "GET ");
  /* 307 keeps the method and the body */
  url_of(url, sizeof(url), p.port, "/redirect?code=307&to=/echo");
  fetch(&t, cl, "POST", url, "data", 4, &ro, &g);
  assert_string_equal((char *)g.body, "POST data");
  /* 302 turns POST into GET, keeps PUT */
  url_of(url, sizeof(url), p.port, "/redirect?code=302&to=echo");
  fetch(&t, cl, "POST", url, "data", 4, &ro, &g);
  assert_string_equal((char *)g.body, "GET ");
  fetch(&t, cl, "PUT", url, "data", 4, &ro, &g);
  assert_string_equal((char *)g.body, "PUT data");
  /* an absolute Location */
  char to[300];
  snprintf(to, sizeof(to), "/redirect?code=301&to=http://127.0.0.1:%d/echo", p.port);
  url_of(url, sizeof(url), p.port, to);
  fetch(&t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_string_equal((char *)g.body, "GET ");
  /* a loop stops at the cap with the last redirect */
  ro.max_redirects = 3;
  url_of(url, sizeof(url), p.port, "/loop");
  fetch(&t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_int_equal(g.http_status, 302);
  assert_int_equal(g.redirects, 3);
  got_reset(&g);
  close_client(&t, cl);
  bt_loop_done(&t);
  peer_stop(&p);
}

/* Timeouts in the connect phase, connect errors, cancels, closing with work pending. */
static void test_connect_phase(void **state) {
  (void)state;
  peer_t p;
  raw_peer_start(&p);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = 1;
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, &o), 0);
  char url[256];

  /* the only connection is held by a request that gets no answer: the next one waits for a
   * connection and its connect timeout ends it */
  braid_http_client_req_opts_t ro;
  braid_http_client_req_opts_init(&ro);
  ro.header_timeout_ms = 0;
  got_t hold = {0};
  url_of(url, sizeof(url), p.port, "/never");
  braid_http_client_req_t *held;
  assert_int_equal(braid_http_client_request(&held, cl, "GET", url, NULL, 0, NULL, 0, &ro, on_res,
                                             NULL, &hold),
                   0);
  ro.connect_timeout_ms = 200;
  got_t g = {0};
  url_of(url, sizeof(url), p.port, "/cl?n=1");
  fetch(&t, cl, "GET", url, NULL, 0, &ro, &g);
  assert_int_equal(g.status, BRAID_ETIMEDOUT);
  assert_int_equal(g.timeout, BRAID_HTTP_TIMEOUT_CONNECT);
  assert_int_equal(g.phase, BRAID_HTTP_PHASE_CONNECT);
  /* cancel the held one: its callback runs from inside the cancel, once */
  assert_int_equal(braid_http_client_req_cancel(held), 0);
  assert_int_equal(hold.done, 1);
  assert_int_equal(hold.status, BRAID_ECANCELED);
  got_reset(&hold);

  /* a refused connect */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t al = sizeof(a);
  getsockname(fd, (struct sockaddr *)&a, &al);
  int dead_port = ntohs(a.sin_port);
  close(fd);
  url_of(url, sizeof(url), dead_port, "/");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.status, UV_ECONNREFUSED);
  assert_int_equal(g.phase, BRAID_HTTP_PHASE_CONNECT);

  /* refused at once: https without TLS, bad URLs, bad headers, bad options (no callback) */
  got_reset(&g);
  if (!braid_tls_available()) /* with TLS, https is test_tls's */
    assert_int_equal(braid_http_client_get(NULL, cl, "https://127.0.0.1/", on_res, &g),
                     BRAID_ENOTSUP);
  assert_int_equal(braid_http_client_get(NULL, cl, "ftp://x/", on_res, &g), BRAID_EINVAL);
  assert_int_equal(braid_http_client_get(NULL, cl, "http://:80/", on_res, &g), BRAID_EINVAL);
  assert_int_equal(braid_http_client_get(NULL, cl, "http://a b/", on_res, &g), BRAID_EINVAL);
  assert_int_equal(braid_http_client_get(NULL, cl, "http://h:99999/", on_res, &g), BRAID_EINVAL);
  assert_int_equal(braid_http_client_get(NULL, cl, "http://u@h/", on_res, &g), BRAID_EINVAL);
  assert_int_equal(braid_http_client_get(NULL, cl, "http://h/a b", on_res, &g), BRAID_EINVAL);
  braid_http_header_t bad[] = {{"X-Evil", "a\r\nInjected: 1"}};
  assert_int_equal(braid_http_client_request(NULL, cl, "GET", "http://h/", bad, 1, NULL, 0, NULL,
                                             on_res, NULL, &g),
                   BRAID_EINVAL);
  braid_http_header_t cl_hdr[] = {{"Content-Length", "5"}};
  assert_int_equal(braid_http_client_request(NULL, cl, "GET", "http://h/", cl_hdr, 1, NULL, 0,
                                             NULL, on_res, NULL, &g),
                   BRAID_EINVAL);
  assert_int_equal(braid_http_client_request(NULL, cl, "GE T", "http://h/", NULL, 0, NULL, 0,
                                             NULL, on_res, NULL, &g),
                   BRAID_EINVAL);
  assert_int_equal(g.calls, 0);
  braid_opts_error_t err;
  braid_http_client_opts_init(&o);
  o.req.max_redirects = 65;
  assert_int_equal(braid_http_client_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "req.max_redirects");
  braid_http_client_opts_init(&o);
  o.client.retries = 5000;
  assert_int_equal(braid_http_client_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "client.retries");

  /* closing with requests queued and in flight: each ends once with BRAID_ECANCELED */
  got_t q[3];
  memset(q, 0, sizeof(q));
  url_of(url, sizeof(url), p.port, "/never");
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_http_client_get(NULL, cl, url, on_res, &q[i]), 0);
  bt_run_for(&t, 50);
  close_client(&t, cl);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(q[i].calls, 1);
    assert_int_equal(q[i].status, BRAID_ECANCELED);
  }
  got_reset(&g);
  bt_loop_done(&t);
  peer_stop(&p);
}

/* python3's http.server: HTTP/1.0, a connection per request. */
static void test_python_http_server(void **state) {
  (void)state;
  char dir[] = "/tmp/braid_hc_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[512];
  snprintf(path, sizeof(path), "%s/file.txt", dir);
  FILE *fp = fopen(path, "w");
  for (int i = 0; i < 5000; i++)
    fprintf(fp, "row %d\n", i);
  long size = ftell(fp);
  fclose(fp);
  peer_t p;
  char *argv[] = {"python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                  "--directory", dir, NULL};
  peer_start(&p, argv);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  got_t g = {0};
  char url[256];
  url_of(url, sizeof(url), p.port, "/file.txt");
  for (int i = 0; i < 3; i++) {
    fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.http_status, 200);
    assert_int_equal(g.len, (size_t)size);
    assert_memory_equal(g.body, "row 0\nrow 1\n", 12);
  }
  url_of(url, sizeof(url), p.port, "/missing");
  fetch(&t, cl, "GET", url, NULL, 0, NULL, &g);
  assert_int_equal(g.http_status, 404);
  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_int_equal(st.connects, st.sent); /* HTTP/1.0: no reuse */
  got_reset(&g);
  close_client(&t, cl);
  bt_loop_done(&t);
  peer_stop(&p);
  unlink(path);
  rmdir(dir);
}

/* nginx (Debian package, scripts/deps.sh test): a generated config on a free port with
 * static files, gzip on and a keep-alive timeout of 200 ms, short enough that requests sent
 * around that moment meet the keep-alive race for real. Skipped when nginx is absent. */
static const char *find_nginx(void) {
  static const char *paths[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
    if (access(paths[i], X_OK) == 0)
      return paths[i];
  return NULL;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t al = sizeof(a);
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  return ntohs(a.sin_port);
}

static void write_file(const char *dir, const char *name, const char *data, size_t len) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  fclose(fp);
  chmod(path, 0644);
}

static void test_nginx(void **state) {
  (void)state;
  const char *nginx = find_nginx();
  if (!nginx) {
    fprintf(stderr, "nginx not installed: skipped\n");
    skip();
  }
  char dir[] = "/tmp/braid_nginx_XXXXXX";
  assert_non_null(mkdtemp(dir));
  chmod(dir, 0755);
  char www[300], conf[300], tmp[300];
  snprintf(www, sizeof(www), "%s/www", dir);
  snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
  mkdir(www, 0755);
  mkdir(tmp, 0755);
  static char text[20000];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = "nginx serves braid text "[i % 24];
  write_file(www, "text.txt", text, sizeof(text));
  write_file(www, "small.txt", "tiny", 4);
  int port = free_port();
  snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
  FILE *fp = fopen(conf, "w");
  fprintf(fp,
          "daemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log stderr error;\n"
          "events { worker_connections 256; }\n"
          "http {\n  access_log off;\n  client_body_temp_path %s;\n  proxy_temp_path %s;\n"
          "  fastcgi_temp_path %s;\n  uwsgi_temp_path %s;\n  scgi_temp_path %s;\n"
          "  types { text/plain txt; }\n"
          "  server {\n    listen 127.0.0.1:%d;\n    root %s;\n    gzip on;\n"
          "    gzip_types text/plain;\n    gzip_min_length 100;\n"
          "    keepalive_timeout 200ms;\n  }\n}\n",
          dir, tmp, tmp, tmp, tmp, tmp, port, www);
  fclose(fp);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    execl(nginx, "nginx", "-p", dir, "-c", conf, "-e", "stderr", (char *)NULL);
    _exit(127);
  }
  /* wait until it listens */
  int up = 0;
  for (int i = 0; i < 500 && !up; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    up = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    if (!up)
      usleep(10000);
  }
  assert_true(up);

  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = 2;
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, &o), 0);
  char url[256];

  /* 50 at once over at most two kept-alive connections, gzip decoded */
  got_t g[50];
  memset(g, 0, sizeof(g));
  url_of(url, sizeof(url), port, "/text.txt");
  for (int i = 0; i < 50; i++)
    assert_int_equal(braid_http_client_get(NULL, cl, url, on_res, &g[i]), 0);
  for (int i = 0; i < 50; i++) {
    bt_run_until(&t, &g[i].done, 10000);
    assert_int_equal(g[i].status, 0);
    assert_int_equal(g[i].http_status, 200);
    assert_string_equal(g[i].ce, "gzip");
    assert_int_equal(g[i].len, sizeof(text));
    assert_memory_equal(g[i].body, text, sizeof(text));
    got_reset(&g[i]);
  }
  braid_http_client_stats_t st;
  braid_http_client_stats(cl, &st);
  assert_true(st.connects <= 2);
  assert_true(st.body_bytes_wire < st.body_bytes_decoded / 10);

  /* requests sent around the moment nginx closes the idle connection: every one succeeds,
   * those that met the race after one retry */
  url_of(url, sizeof(url), port, "/small.txt");
  for (int i = 0; i < 12; i++) {
    bt_run_for(&t, (uint64_t)(196 + i % 8));
    got_t one = {0};
    fetch(&t, cl, "GET", url, NULL, 0, NULL, &one);
    assert_int_equal(one.status, 0);
    assert_int_equal(one.http_status, 200);
    assert_int_equal(one.len, 4);
    got_reset(&one);
  }
  braid_http_client_stats(cl, &st);
  fprintf(stderr, "nginx: %llu connects, %llu retries after the keep-alive race\n",
          (unsigned long long)st.connects, (unsigned long long)st.retries);
  close_client(&t, cl);
  bt_loop_done(&t);
  kill(pid, SIGTERM);
  int wst;
  waitpid(pid, &wst, 0);
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_braid_server),       cmocka_unit_test(test_stream_slow_consumer),
      cmocka_unit_test(test_pipeline),           cmocka_unit_test(test_burst_limits),
      cmocka_unit_test(test_framings),           cmocka_unit_test(test_hostile),
      cmocka_unit_test(test_keepalive_race),     cmocka_unit_test(test_redirects),
      cmocka_unit_test(test_connect_phase),      cmocka_unit_test(test_python_http_server),
      cmocka_unit_test(test_nginx),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
