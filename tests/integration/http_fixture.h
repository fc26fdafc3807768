/* Shared by the HTTP server tests: a braid server on 127.0.0.1 serving a braid_http_server_t
 * with a set of test routes, and clients that run on a thread of their own with blocking
 * sockets (or as child processes: curl, python3) while the test's loop serves them. */
#ifndef BRAID_TEST_HTTP_FIXTURE_H
#define BRAID_TEST_HTTP_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../support.h"
#include "braid/http.h"

/* Each test file uses some of the helpers below. */
#pragma GCC diagnostic ignored "-Wunused-function"

typedef struct hfix_s {
  bt_loop_t t;
  braid_server_t *tcp;
  braid_http_server_t *http;
  int port;
  int tcp_closed, http_closed;
  int drain_status;
  /* what the routes saw */
  atomic_int stream_bytes;   /* /stream: body bytes delivered */
  atomic_int stream_pieces;
  int stream_status;         /* /stream: the last body status */
  int produced_cancelled;    /* /big: the producer heard BRAID_ECANCELED */
  size_t big_max_queued;     /* /big: most bytes queued on the connection while producing */
  int later_pending;         /* /later: handlers not answered yet */
} hfix_t;

/* ---- routes ---------------------------------------------------------------------------- */

static long q_num(braid_http_req_t *req, const char *key, long def) {
  const char *q = braid_http_req_query(req);
  size_t k = strlen(key);
  for (const char *p = q; p && *p;) {
    if (strncmp(p, key, k) == 0 && p[k] == '=')
      return strtol(p + k + 1, NULL, 10);
    p = strchr(p, '&');
    if (p)
      p++;
  }
  return def;
}

static void h_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_header_t h[] = {{"Content-Type", "text/plain"}};
  assert_int_equal(braid_http_respond(req, 200, h, 1, "Hello, World!", 13), 0);
}

static void h_echo(braid_http_req_t *req, void *arg) {
  (void)arg;
  size_t len;
  const uint8_t *body = braid_http_req_body(req, &len);
  braid_http_header_t h[] = {{"Content-Type", "application/octet-stream"}};
  braid_http_respond(req, 200, h, 1, body, len);
}

static void h_path(braid_http_req_t *req, void *arg) {
  (void)arg;
  const char *p = braid_http_req_path(req);
  braid_http_respond(req, 200, NULL, 0, p, strlen(p));
}

/* /text: 8 KiB of compressible text. */
static void h_text(braid_http_req_t *req, void *arg) {
  (void)arg;
  static char text[8192];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = "hello braid http "[i % 17];
  long n = q_num(req, "n", (long)sizeof(text));
  braid_http_header_t h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
  braid_http_respond(req, 200, h, 1, text, (size_t)n);
}

/* /later?ms=N&id=X: answers "later X" after N ms. */
typedef struct later_s {
  uv_timer_t timer;
  braid_http_req_t *req;
  hfix_t *f;
  long id;
} later_t;

static void later_closed(uv_handle_t *h) {
  free(h->data);
}

static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  char body[64];
  int n = snprintf(body, sizeof(body), "later %ld", l->id);
  braid_http_respond(l->req, 200, NULL, 0, body, (size_t)n);
  l->f->later_pending--;
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

static void h_later(braid_http_req_t *req, void *arg) {
  hfix_t *f = arg;
  later_t *l = calloc(1, sizeof(*l));
  l->req = req;
  l->f = f;
  l->id = q_num(req, "id", 0);
  f->later_pending++;
  uv_timer_init(braid_loop_uv(braid_http_req_loop(req)), &l->timer);
  l->timer.data = l;
  uv_timer_start(&l->timer, later_fire, (uint64_t)q_num(req, "ms", 10), 0);
}

/* /thread: computed on another thread, answered from a function posted back to the loop. */
typedef struct tjob_s {
  braid_http_req_t *req;
  uv_thread_t thread;
  long result;
} tjob_t;

static void tjob_answer(void *arg) {
  tjob_t *j = arg;
  char body[64];
  int n = snprintf(body, sizeof(body), "thread %ld", j->result);
  braid_http_respond(j->req, 200, NULL, 0, body, (size_t)n);
  uv_thread_join(&j->thread);
  free(j);
}

static void tjob_run(void *arg) {
  tjob_t *j = arg;
  long s = 0;
  for (long i = 1; i <= 1000; i++)
    s += i;
  j->result = s;
  assert_int_equal(braid_loop_post(braid_http_req_loop(j->req), tjob_answer, j), 0);
}

static void h_thread(braid_http_req_t *req, void *arg) {
  (void)arg;
  tjob_t *j = calloc(1, sizeof(*j));
  j->req = req;
  assert_int_equal(uv_thread_create(&j->thread, tjob_run, j), 0);
}

/* /big?n=BYTES[&chunked=1][&type=text]: a streamed body produced with backpressure. */
typedef struct big_s {
  hfix_t *f;
  long left;
  char block[16384];
} big_t;

static void big_pump(braid_http_req_t *req, big_t *b) {
  for (;;) {
    if (b->left == 0) {
      braid_http_res_end(req);
      free(b);
      return;
    }
    size_t n = b->left < (long)sizeof(b->block) ? (size_t)b->left : sizeof(b->block);
    int rc = braid_http_res_write(req, b->block, n);
    braid_conn_t *c = braid_http_req_conn(req);
    if (c) {
      braid_conn_stats_t st;
      braid_conn_stats(c, &st);
      if (st.queued_bytes > b->f->big_max_queued)
        b->f->big_max_queued = st.queued_bytes;
    }
    if (rc < 0) {
      braid_http_res_end(req);
      free(b);
      return;
    }
    b->left -= (long)n;
    if (rc == BRAID_HTTP_WAIT)
      return;
  }
}

static void big_writable(braid_http_req_t *req, int status, void *arg) {
  big_t *b = arg;
  if (status < 0) {
    b->f->produced_cancelled = 1;
    braid_http_res_end(req);
    free(b);
    return;
  }
  big_pump(req, b);
}

static void h_big(braid_http_req_t *req, void *arg) {
  big_t *b = calloc(1, sizeof(*b));
  b->f = arg;
  b->left = q_num(req, "n", 1 << 20);
  for (size_t i = 0; i < sizeof(b->block); i++)
    b->block[i] = (char)('a' + i % 26);
  braid_http_header_t h[] = {
      {"Content-Type", q_num(req, "text", 0) ? "text/plain" : "application/octet-stream"}};
  int64_t len = q_num(req, "chunked", 0) ? BRAID_HTTP_LENGTH_UNKNOWN : b->left;
  assert_int_equal(braid_http_res_begin(req, 200, h, 1, len), 0);
  braid_http_res_on_writable(req, big_writable, b);
  big_pump(req, b);
}

/* /stream (streaming body): counts the body, pausing delivery for 1 ms after each piece when
 * ?pause=1; answers "got N". */
typedef struct sjob_s {
  hfix_t *f;
  uv_timer_t timer;
  braid_http_req_t *req;
  long got;
  int done;
} sjob_t;

static void sjob_closed(uv_handle_t *h) {
  free(h->data);
}

static void sjob_resume(uv_timer_t *t) {
  sjob_t *j = t->data;
  braid_http_req_resume_body(j->req);
}

static void s_body(braid_http_req_t *req, int status, const uint8_t *data, size_t len,
                   void *arg) {
  sjob_t *j = arg;
  (void)data;
  if (status == 0) {
    j->got += (long)len;
    atomic_fetch_add(&j->f->stream_bytes, (int)len);
    atomic_fetch_add(&j->f->stream_pieces, 1);
    if (q_num(req, "pause", 0)) {
      braid_http_req_pause_body(req);
      uv_timer_start(&j->timer, sjob_resume, 1, 0);
    }
    return;
  }
  j->f->stream_status = status;
  uv_timer_stop(&j->timer);
  char body[64];
  int n = status == BRAID_EOF ? snprintf(body, sizeof(body), "got %ld", j->got)
                              : snprintf(body, sizeof(body), "error %s", braid_err_name(status));
  braid_http_respond(req, status == BRAID_EOF ? 200 : status == BRAID_ETOOBIG ? 413 : 400, NULL,
                     0, body, (size_t)n);
  uv_close((uv_handle_t *)&j->timer, sjob_closed);
}

static void h_stream(braid_http_req_t *req, void *arg) {
  sjob_t *j = calloc(1, sizeof(*j));
  j->f = arg;
  j->req = req;
  uv_timer_init(braid_loop_uv(braid_http_req_loop(req)), &j->timer);
  j->timer.data = j;
  if (q_num(req, "refuse", 0)) {
    /* answers without reading the body */
    braid_http_respond(req, 403, NULL, 0, "no", 2);
    uv_close((uv_handle_t *)&j->timer, sjob_closed);
    return;
  }
  assert_int_equal(braid_http_req_read_body(req, s_body, j), 0);
}

/* ---- server set-up ---------------------------------------------------------------------- */

static void hfix_routes(hfix_t *f) {
  braid_http_server_t *h = f->http;
  assert_int_equal(braid_http_server_route(h, "GET", "/", 0, h_hello, f), 0);
  assert_int_equal(braid_http_server_route(h, "POST", "/echo", 0, h_echo, f), 0);
  assert_int_equal(braid_http_server_route(h, "GET", "/text", 0, h_text, f), 0);
  assert_int_equal(braid_http_server_route(h, "GET", "/later", 0, h_later, f), 0);
  assert_int_equal(braid_http_server_route(h, "GET", "/thread", 0, h_thread, f), 0);
  assert_int_equal(braid_http_server_route(h, "GET", "/big", 0, h_big, f), 0);
  assert_int_equal(braid_http_server_route(h, "POST", "/stream", BRAID_HTTP_STREAM_BODY, h_stream,
                                           f), 0);
  assert_int_equal(braid_http_server_route(h, NULL, "/p/", BRAID_HTTP_PREFIX, h_path, f), 0);
  assert_int_equal(braid_http_server_route(h, "GET", "/p/exact", 0, h_hello, f), 0);
}

/* Starts the fixture; hopts / sopts may be NULL for the defaults. */
static void hfix_start(hfix_t *f, const braid_http_server_opts_t *hopts,
                       const braid_server_opts_t *sopts) {
  memset(f, 0, sizeof(*f));
  bt_loop_init(&f->t);
  assert_int_equal(braid_http_server_new(&f->http, f->t.loop, hopts), 0);
  hfix_routes(f);
  assert_int_equal(
      braid_server_new(&f->tcp, f->t.loop, sopts, braid_http_server_on_connection, f->http), 0);
  assert_int_equal(braid_server_listen(f->tcp, "127.0.0.1", 0), 0);
  f->port = braid_server_port(f->tcp);
}

static void hfix_on_tcp_closed(braid_server_t *s, int status, void *arg) {
  hfix_t *f = arg;
  (void)s;
  f->drain_status = status;
  f->tcp_closed = 1;
}

static void hfix_on_http_closed(braid_http_server_t *h, int status, void *arg) {
  hfix_t *f = arg;
  (void)h;
  assert_int_equal(status, 0);
  f->http_closed = 1;
}

/* Closes both servers and the loop, asserting nothing is left behind. */
static void hfix_stop(hfix_t *f) {
  if (!f->tcp_closed) {
    assert_int_equal(braid_server_close(f->tcp, hfix_on_tcp_closed, f), 0);
    bt_run_until(&f->t, &f->tcp_closed, 10000);
  }
  assert_int_equal(braid_http_server_close(f->http, hfix_on_http_closed, f), 0);
  bt_run_until(&f->t, &f->http_closed, 10000);
  bt_loop_done(&f->t);
}

/* ---- clients on a thread ------------------------------------------------------------------ */

typedef void (*client_fn)(hfix_t *f, void *arg);

typedef struct client_run_s {
  hfix_t *f;
  client_fn fn;
  void *arg;
  int done;
  uv_thread_t thread;
  uv_async_t wake; /* keeps the loop alive while the client runs; sent when it is done */
} client_run_t;

static void client_main(void *arg) {
  client_run_t *c = arg;
  c->fn(c->f, c->arg);
  uv_async_send(&c->wake);
}

static void client_woken(uv_async_t *a) {
  client_run_t *c = a->data;
  c->done = 1;
  uv_close((uv_handle_t *)a, NULL);
}

/* Runs fn(f, arg) on a thread while the loop serves, until it returns. */
static void run_client(hfix_t *f, client_fn fn, void *arg, uint64_t timeout_ms) {
  client_run_t c = {.f = f, .fn = fn, .arg = arg};
  assert_int_equal(uv_async_init(&f->t.uv, &c.wake, client_woken), 0);
  c.wake.data = &c;
  assert_int_equal(uv_thread_create(&c.thread, client_main, &c), 0);
  bt_run_until(&f->t, &c.done, timeout_ms);
  uv_thread_join(&c.thread);
  uv_run(&f->t.uv, UV_RUN_NOWAIT); /* the async handle's close */
}

/* A blocking client socket connected to the fixture, with a receive timeout. */
static int cl_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

static void cl_send(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* the server closed: the reads will tell */
    p += n;
    len -= (size_t)n;
  }
}

static void cl_sends(int fd, const char *s) {
  cl_send(fd, s, strlen(s));
}

/* Reads until EOF, cap bytes, or timeout_ms without data. Returns the bytes read; *eof says
 * whether the server closed. out is NUL-terminated. */
static size_t cl_read(int fd, char *out, size_t cap, int timeout_ms, int *eof) {
  size_t n = 0;
  if (eof)
    *eof = 0;
  while (n + 1 < cap) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0)
      break;
    ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      if (eof)
        *eof = 1;
      break;
    }
    n += (size_t)k;
  }
  out[n] = 0;
  return n;
}

/* Reads until the text holds want_responses "HTTP/1.1 " status lines whose bodies are
 * complete (Content-Length only), or EOF, or timeout. Returns bytes read. */
static size_t cl_read_responses(int fd, char *out, size_t cap, int want, int timeout_ms,
                                int *eof) {
  size_t n = 0;
  if (eof)
    *eof = 0;
  for (;;) {
    /* count complete responses */
    int complete = 0;
    const char *p = out;
    out[n] = 0;
    for (;;) {
      const char *s = strstr(p, "HTTP/1.1 ");
      if (!s)
        break;
      if (strncmp(s, "HTTP/1.1 100", 12) == 0) {
        p = s + 9;
        continue;
      }
      const char *end = strstr(s, "\r\n\r\n");
      if (!end)
        break;
      const char *cl = strstr(s, "Content-Length: ");
      long len = cl && cl < end ? strtol(cl + 16, NULL, 10) : 0;
      if ((size_t)(end + 4 - out) + (size_t)len > n)
        break;
      complete++;
      p = end + 4 + len;
    }
    if (complete >= want || n + 1 >= cap)
      return n;
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) <= 0)
      return n;
    ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      if (eof)
        *eof = 1;
      out[n] = 0;
      return n;
    }
    n += (size_t)k;
  }
}

/* Counts occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle) {
  int c = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    c++;
  return c;
}

#endif
