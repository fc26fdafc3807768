/* Fuzz target: the HTTP server's request path, end to end. Each input is sent by a client
 * over a socketpair to a braid connection served by a braid_http_server_t (routes that answer
 * at once, later from a timer, with a buffered body, with a streamed body paused and resumed,
 * and with a streamed response), the way h2o fuzzes its HTTP handlers. The first input byte
 * chooses how the rest is cut into writes (so header names, values, chunk sizes and bodies
 * split at every place); then the client half-closes. Traps unless the server closes the
 * connection within a bounded number of loop iterations and everything it wrote is a
 * sequence of HTTP/1.1 responses (or 100 Continue). Small limits make every refusal
 * reachable. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "braid.h"
#include "braid/http.h"
#include "internal.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond))                                                                                \
      __builtin_trap();                                                                         \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t uv;
static braid_loop_t *loop;
static braid_http_server_t *http;
static int conn_closed;

static void h_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_header_t h[] = {{"Content-Type", "text/plain"}};
  braid_http_respond(req, 200, h, 1, "Hello, World! Hello, World! Hello, World!", 41);
}

static void h_echo(braid_http_req_t *req, void *arg) {
  (void)arg;
  size_t len;
  const uint8_t *b = braid_http_req_body(req, &len);
  braid_http_header_t h[] = {{"Content-Type", "text/plain"}};
  braid_http_respond(req, 200, h, 1, b, len);
}

static void later_fire(uv_timer_t *t) {
  braid_http_respond(t->data, 200, NULL, 0, "later", 5);
  uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void h_later(braid_http_req_t *req, void *arg) {
  (void)arg;
  uv_timer_t *t = malloc(sizeof(*t));
  uv_timer_init(&uv, t);
  t->data = req;
  uv_timer_start(t, later_fire, 0, 0);
}

static void h_big(braid_http_req_t *req, void *arg) {
  (void)arg;
  static char block[3000];
  memset(block, 'x', sizeof(block));
  braid_http_header_t h[] = {{"Content-Type", "text/plain"}};
  if (braid_http_res_begin(req, 200, h, 1, BRAID_HTTP_LENGTH_UNKNOWN) == 0)
    for (int i = 0; i < 4; i++)
      if (braid_http_res_write(req, block, sizeof(block)) < 0)
        break;
  braid_http_res_end(req);
}

typedef struct {
  size_t got;
  int pieces;
} sbody_t;

static void s_body(braid_http_req_t *req, int status, const uint8_t *d, size_t len, void *arg) {
  sbody_t *s = arg;
  (void)d;
  if (status == 0) {
    s->got += len;
    /* pause and resume at once: the resume takes effect from the loop */
    if (++s->pieces % 2 == 0) {
      braid_http_req_pause_body(req);
      braid_http_req_resume_body(req);
    }
    return;
  }
  braid_http_respond(req, status == BRAID_EOF ? 200 : 400, NULL, 0, "done", 4);
  free(s);
}

static void h_stream(braid_http_req_t *req, void *arg) {
  (void)arg;
  if (strstr(braid_http_req_query(req), "refuse")) {
    braid_http_respond(req, 403, NULL, 0, "no", 2);
    return;
  }
  sbody_t *s = calloc(1, sizeof(*s));
  if (braid_http_req_read_body(req, s_body, s) != 0) {
    free(s);
    braid_http_respond(req, 500, NULL, 0, NULL, 0);
  }
}

static braid_cache_t *cache;

static int memo_compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  static char text[2048];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = (char)('a' + (i + key_len) % 26);
  (void)key;
  return braid_blob_copy(value, text, sizeof(text));
}

/* /m?KEY: a memoized response keyed by the query. */
static void h_memo(braid_http_req_t *req, void *arg) {
  (void)arg;
  const char *q = braid_http_req_query(req);
  braid_cache_loader_t l = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = memo_compute};
  if (braid_http_respond_memo(req, cache, q, strlen(q), &l, "text/plain") != 0)
    braid_http_respond(req, 500, NULL, 0, NULL, 0);
}

static void setup(void) {
  CHECK(uv_loop_init(&uv) == 0);
  CHECK(braid_loop_new(&loop, &uv) == 0);
  braid_http_server_opts_t o;
  braid_http_server_opts_init(&o);
  o.max_target_bytes = 256;
  o.max_header_bytes = 1024;
  o.max_headers = 16;
  o.max_body_bytes = 4096;
  o.max_pipelined = 3;
  o.keepalive_requests = 8;
  o.compress_min_bytes = 16;
  CHECK(braid_http_server_new(&http, loop, &o) == 0);
  braid_cache_opts_t co;
  braid_cache_opts_init(&co);
  co.max_entries = 64;
  CHECK(braid_cache_new(&cache, loop, &co) == 0);
  CHECK(braid_http_server_route(http, "GET", "/m", 0, h_memo, NULL) == 0);
  CHECK(braid_http_server_route(http, "GET", "/", 0, h_hello, NULL) == 0);
  CHECK(braid_http_server_route(http, "POST", "/echo", 0, h_echo, NULL) == 0);
  CHECK(braid_http_server_route(http, "GET", "/later", 0, h_later, NULL) == 0);
  CHECK(braid_http_server_route(http, "GET", "/big", 0, h_big, NULL) == 0);
  CHECK(braid_http_server_route(http, NULL, "/s", BRAID_HTTP_PREFIX | BRAID_HTTP_STREAM_BODY,
                                h_stream, NULL) == 0);
}

/* Everything the server wrote: responses (status line first) one after the other. */
static void check_output(const char *out, size_t len) {
  if (len == 0)
    return;
  CHECK(len >= 9 && memcmp(out, "HTTP/1.1 ", 9) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop)
    setup();
  if (size < 1)
    return 0;
  size_t piece = data[0] ? data[0] : size;
  data++;
  size--;
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  braid_conn_opts_t co;
  braid_conn_opts_init(&co);
  braid_conn_t *c;
  CHECK(braid__conn_create(loop, &co, &c) == 0);
  CHECK(uv_tcp_open(braid_conn_uv(c), sv[0]) == 0);
  CHECK(braid__conn_established(c, NULL) == 0);
  CHECK(braid_http_server_serve(http, c) == 0);
  static char out[1 << 20];
  size_t out_len = 0;
  size_t sent = 0;
  int eof = 0, shut = 0;
  for (int iter = 0; iter < 20000 && !eof; iter++) {
    if (sent < size) {
      size_t n = size - sent < piece ? size - sent : piece;
      ssize_t w = send(sv[1], data + sent, n, MSG_NOSIGNAL);
      if (w > 0)
        sent += (size_t)w;
      else if (w < 0 && errno != EAGAIN)
        sent = size; /* the server closed: stop sending */
    } else if (!shut) {
      shutdown(sv[1], SHUT_WR);
      shut = 1;
    }
    uv_run(&uv, UV_RUN_NOWAIT);
    for (;;) {
      ssize_t r = recv(sv[1], out + out_len < out + sizeof(out) ? out + out_len : out,
                       out_len < sizeof(out) ? sizeof(out) - out_len : sizeof(out), 0);
      if (r > 0) {
        if (out_len < sizeof(out))
          out_len += (size_t)r;
        continue;
      }
      if (r == 0)
        eof = 1;
      break;
    }
  }
  /* The client half-closed: the server must have answered what it took and closed. */
  CHECK(eof);
  check_output(out, out_len);
  close(sv[1]);
  /* Let the connection's close finish. */
  for (int i = 0; i < 100 && braid_http_server_stats_json(http, NULL, 0) >= 0; i++) {
    braid_http_server_stats_t st;
    braid_http_server_stats(http, &st);
    if (st.connections_open == 0)
      break;
    uv_run(&uv, UV_RUN_NOWAIT);
  }
  (void)conn_closed;
  return 0;
}
