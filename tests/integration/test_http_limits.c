/* The HTTP server's limits and timeouts over loopback, with raw sockets: every refusal gets
 * its status and the connection closes (414, 431, 413, 417, 415, 400 for each malformed or
 * smuggling shape, 505), the header timeout closes slowloris connections while a normal
 * client is served, idle keep-alive and body timeouts, keepalive_requests, and a slow
 * reader of a large response is not cut off by any of them. */
#include "http_fixture.h"

typedef struct exch_s {
  const char *send;
  size_t send_len;
  char out[16384];
  int eof;
} exch_t;

static void c_exchange(hfix_t *f, void *arg) {
  exch_t *x = arg;
  int fd = cl_connect(f->port);
  cl_send(fd, x->send, x->send_len ? x->send_len : strlen(x->send));
  cl_read(fd, x->out, sizeof(x->out), 3000, &x->eof);
  close(fd);
}

/* Sends req and expects a response starting with status_line, then the server's close. */
static void expect_refusal(hfix_t *f, const char *name, const char *req, size_t len,
                           const char *status_line) {
  exch_t x;
  memset(&x, 0, sizeof(x));
  x.send = req;
  x.send_len = len;
  run_client(f, c_exchange, &x, 10000);
  if (strncmp(x.out, status_line, strlen(status_line)) != 0)
    fail_msg("%s: want '%s', got '%.80s'", name, status_line, x.out);
  if (!strstr(x.out, "Connection: close\r\n") || !x.eof)
    fail_msg("%s: the connection did not close (eof %d)", name, x.eof);
  if (count_of(x.out, "HTTP/1.1 ") != 1)
    fail_msg("%s: more than one response", name);
}

static void test_refusals(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.max_target_bytes = 256;
  o.max_header_bytes = 1024;
  o.max_headers = 10;
  o.max_body_bytes = 1000;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  static char big[8192];
  /* 414 */
  char *p = big + sprintf(big, "GET /");
  memset(p, 'a', 300);
  strcpy(p + 300, " HTTP/1.1\r\n\r\n");
  expect_refusal(&f, "long target", big, 0, "HTTP/1.1 414 URI Too Long");
  /* 431: bytes */
  p = big + sprintf(big, "GET / HTTP/1.1\r\nX-Big: ");
  memset(p, 'b', 1100);
  strcpy(p + 1100, "\r\n\r\n");
  expect_refusal(&f, "header bytes", big, 0, "HTTP/1.1 431 Request Header Fields Too Large");
  /* 431: count */
  p = big + sprintf(big, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 11; i++)
    p += sprintf(p, "X-%d: v\r\n", i);
  strcpy(p, "\r\n");
  expect_refusal(&f, "header count", big, 0, "HTTP/1.1 431 Request Header Fields Too Large");
  /* 413: declared, and chunked past the limit */
  expect_refusal(&f, "content-length", "POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 0,
                 "HTTP/1.1 413 Content Too Large");
  p = big + sprintf(big, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    p += sprintf(p, "190\r\n");
    memset(p, 'c', 400);
    p += 400;
    p += sprintf(p, "\r\n");
  }
  strcpy(p, "0\r\n\r\n");
  expect_refusal(&f, "chunked over", big, 0, "HTTP/1.1 413 Content Too Large");
  expect_refusal(&f, "expect", "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nExpect: x\r\n\r\na", 0,
                 "HTTP/1.1 417 Expectation Failed");
  expect_refusal(&f, "encoding", "POST /echo HTTP/1.1\r\nContent-Length: 1\r\n"
                                 "Content-Encoding: br\r\n\r\na", 0,
                 "HTTP/1.1 415 Unsupported Media Type");
  expect_refusal(&f, "version", "GET / HTTP/2.0\r\n\r\n", 0, "HTTP/1.1 505");
  expect_refusal(&f, "connect", "CONNECT a:443 HTTP/1.1\r\n\r\n", 0, "HTTP/1.1 405");
  expect_refusal(&f, "absolute form", "GET http://x/ HTTP/1.1\r\n\r\n", 0, "HTTP/1.1 400");
  /* smuggling shapes: 400 and close, and the second request is never answered */
  static const struct {
    const char *name, *req;
  } bad[] = {
      {"CL+TE", "POST /echo HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                "0\r\n\r\nGET / HTTP/1.1\r\n\r\n"},
      {"TE+CL", "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
                "0\r\n\r\nGET / HTTP/1.1\r\n\r\n"},
      {"two CL", "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
      {"TE chunked not last", "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"},
      {"TE unknown", "POST /echo HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
      {"bare CR", "GET / HTTP/1.1\r\nX: a\rGET / HTTP/1.1\r\n\r\n"},
      {"bare LF", "GET / HTTP/1.1\nHost: x\n\n"},
      {"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"},
      {"space before colon", "GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc"},
      {"chunk without CRLF", "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\nabcGET / HTTP/1.1\r\n\r\n"},
      {"bad chunk size", "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
      {"CL not a number", "POST /echo HTTP/1.1\r\nContent-Length: 1x\r\n\r\na"},
      {"bad method", "GE T / HTTP/1.1\r\n\r\n"},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    expect_refusal(&f, bad[i].name, bad[i].req, 0, "HTTP/1.1 400 Bad Request");
  expect_refusal(&f, "NUL", "GET /a\0b HTTP/1.1\r\n\r\n", 21, "HTTP/1.1 400 Bad Request");
  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  assert_true(st.bad_requests >= 20);
  hfix_stop(&f);
}

/* A refused request behind answered ones: the earlier answers still go out, in order. */
static void test_refusal_after_pipelined(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  exch_t x;
  memset(&x, 0, sizeof(x));
  x.send = "GET /later?ms=100&id=1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX: a\rb\r\n\r\n";
  run_client(&f, c_exchange, &x, 10000);
  const char *a = strstr(x.out, "later 1"), *b = strstr(x.out, "Hello"),
             *c = strstr(x.out, "400 Bad Request");
  assert_true(a && b && c && a < b && b < c);
  assert_true(x.eof);
  hfix_stop(&f);
}

/* ---- timeouts ------------------------------------------------------------------------------ */

typedef struct slow_s {
  int nslow;
  int closed;        /* slow connections the server closed */
  int got_408;
  double normal_max_ms; /* a normal client's worst latency meanwhile */
  int normal_ok;
} slow_t;

static void c_slowloris(hfix_t *f, void *arg) {
  slow_t *s = arg;
  int fds[20];
  for (int i = 0; i < s->nslow; i++) {
    fds[i] = cl_connect(f->port);
    cl_sends(fds[i], "GET / HTTP/1.1\r\n");
  }
  const char *trickle = "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  int normal = cl_connect(f->port);
  for (int step = 0; step < 40; step++) {
    for (int i = 0; i < s->nslow; i++)
      if (fds[i] >= 0)
        cl_send(fds[i], trickle + (step % 60), 1);
    uint64_t t0 = uv_hrtime();
    cl_sends(normal, "GET / HTTP/1.1\r\n\r\n");
    char out[1024];
    int eof;
    cl_read_responses(normal, out, sizeof(out), 1, 5000, &eof);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    if (strstr(out, "Hello, World!"))
      s->normal_ok++;
    if (ms > s->normal_max_ms)
      s->normal_max_ms = ms;
    usleep(50 * 1000);
  }
  for (int i = 0; i < s->nslow; i++) {
    char out[1024];
    int eof;
    cl_read(fds[i], out, sizeof(out), 100, &eof);
    if (eof)
      s->closed++;
    if (strstr(out, "408"))
      s->got_408++;
    close(fds[i]);
  }
  close(normal);
}

static void test_slowloris(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.header_timeout_ms = 500;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  slow_t s = {.nslow = 20};
  run_client(&f, c_slowloris, &s, 30000);
  /* 40 steps of >= 50 ms: every trickling connection outlived the 500 ms header timeout */
  assert_int_equal(s.closed, s.nslow);
  assert_int_equal(s.got_408, s.nslow);
  assert_int_equal(s.normal_ok, 40);
  assert_true(s.normal_max_ms < 1000); /* a bound for a loaded 2-core box, not a benchmark */
  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  assert_true(st.timeouts >= (uint64_t)s.nslow);
  hfix_stop(&f);
}

typedef struct idle_s {
  double first_closed_ms, ka_closed_ms, body_closed_ms;
  char body_out[1024];
} idle_t;

static double wait_eof(int fd, char *out, size_t cap) {
  uint64_t t0 = uv_hrtime();
  int eof;
  cl_read(fd, out, cap, 5000, &eof);
  return eof ? (double)(uv_hrtime() - t0) / 1e6 : -1;
}

static void c_idle(hfix_t *f, void *arg) {
  idle_t *d = arg;
  char out[1024];
  int silent = cl_connect(f->port);
  int ka = cl_connect(f->port);
  cl_sends(ka, "GET / HTTP/1.1\r\n\r\n");
  int eof;
  cl_read_responses(ka, out, sizeof(out), 1, 5000, &eof);
  int body = cl_connect(f->port);
  cl_sends(body, "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789");
  d->first_closed_ms = wait_eof(silent, out, sizeof(out));
  d->ka_closed_ms = wait_eof(ka, out, sizeof(out));
  d->body_closed_ms = wait_eof(body, d->body_out, sizeof(d->body_out));
  close(silent);
  close(ka);
  close(body);
}

static void test_idle_timeouts(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.header_timeout_ms = 300;
  o.keepalive_timeout_ms = 300;
  o.body_timeout_ms = 300;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  idle_t d = {0};
  run_client(&f, c_idle, &d, 30000);
  /* closed, and not long after the timeout (generous: a shared 2-core machine) */
  assert_true(d.first_closed_ms >= 0 && d.first_closed_ms < 3000);
  assert_true(d.ka_closed_ms >= 0);
  assert_true(d.body_closed_ms >= 0);
  assert_non_null(strstr(d.body_out, "408 Request Timeout"));
  hfix_stop(&f);
}

static void c_ka_requests(hfix_t *f, void *arg) {
  char *out = arg;
  int fd = cl_connect(f->port);
  size_t n = 0;
  int eof = 0;
  for (int i = 0; i < 3; i++) {
    cl_sends(fd, "GET / HTTP/1.1\r\n\r\n");
    n += cl_read_responses(fd, out + n, 8192 - n, 1, 5000, &eof);
  }
  char more[16];
  cl_read(fd, more, sizeof(more), 2000, &eof);
  strcat(out, eof ? "|EOF" : "|OPEN");
  close(fd);
}

static void test_keepalive_requests(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.keepalive_requests = 3;
  hfix_t f;
  hfix_start(&f, &o, NULL);
  static char out[8192];
  memset(out, 0, sizeof(out));
  run_client(&f, c_ka_requests, out, 15000);
  assert_int_equal(count_of(out, "Hello, World!"), 3);
  assert_int_equal(count_of(out, "Connection: close"), 1);
  assert_non_null(strstr(out, "|EOF"));
  hfix_stop(&f);
}

/* With every timeout short, a reader of a 4 MB response that takes far longer than them is
 * still served to the end. */
typedef struct slowread_s {
  size_t total;
  int eof;
} slowread_t;

static void c_slow_reader(hfix_t *f, void *arg) {
  slowread_t *s = arg;
  int fd = cl_connect(f->port);
  int small = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  cl_sends(fd, "GET /big?n=4000000 HTTP/1.1\r\nConnection: close\r\n\r\n");
  char buf[8192];
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0)
      break;
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k <= 0) {
      s->eof = 1;
      break;
    }
    s->total += (size_t)k;
    usleep(2000); /* about 4 MB/s at most: well over a second in all */
  }
  close(fd);
}

static void test_slow_reader_not_cut(void **state) {
  (void)state;
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.header_timeout_ms = 200;
  o.keepalive_timeout_ms = 200;
  o.body_timeout_ms = 200;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.conn.write_timeout_ms = 2000; /* no progress at all for 2 s: that one would cut */
  hfix_t f;
  hfix_start(&f, &o, &so);
  slowread_t s = {0};
  uint64_t t0 = uv_hrtime();
  run_client(&f, c_slow_reader, &s, 60000);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  assert_true(s.eof);
  assert_true(s.total > 4000000);
  assert_true(secs > 0.4); /* it was slow, far past the 200 ms timeouts */
  hfix_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_refusal_after_pipelined),
      cmocka_unit_test(test_slowloris),
      cmocka_unit_test(test_idle_timeouts),
      cmocka_unit_test(test_keepalive_requests),
      cmocka_unit_test(test_slow_reader_not_cut),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
