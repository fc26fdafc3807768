/* Fuzz target: the HTTP client's response path, end to end. A raw libuv server on loopback
 * answers every connection with the input's bytes (after the first byte, which chooses how
 * they are cut into writes, so status lines, header names, chunk sizes and gzip bodies split
 * at every place) and then closes. A braid_http_client_t sends three requests to it at once
 * with pipelining on (GET whole, HEAD, GET streamed with a pause after each piece), small
 * limits so every refusal is reachable, and decoding on. Traps unless every request ends
 * exactly once within a bounded number of loop iterations and the client closes cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "braid.h"
#include "braid/http_client.h"
#include "internal.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond))                                                                                \
      __builtin_trap();                                                                         \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t uv;
static braid_loop_t *loop;
static uv_tcp_t listener;
static int port;
static const uint8_t *answer;
static size_t answer_len, cut;

typedef struct peer_s {
  uv_tcp_t tcp;
  uv_shutdown_t shut;
} peer_t;

static void peer_closed(uv_handle_t *h) {
  free(h->data);
}

static void peer_shut(uv_shutdown_t *s, int status) {
  (void)status;
  uv_close((uv_handle_t *)s->handle, peer_closed);
}

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  (void)h;
  static char buf[65536];
  (void)n;
  *b = uv_buf_init(buf, sizeof(buf));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  peer_t *p = s->data;
  if (n < 0 && !uv_is_closing((uv_handle_t *)s)) {
    uv_read_stop(s);
    if (uv_shutdown(&p->shut, s, peer_shut) != 0)
      uv_close((uv_handle_t *)s, peer_closed);
  }
}

static void on_peer(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  peer_t *p = calloc(1, sizeof(*p));
  uv_tcp_init(&uv, &p->tcp);
  p->tcp.data = p;
  if (uv_accept(server, (uv_stream_t *)&p->tcp) != 0) {
    uv_close((uv_handle_t *)&p->tcp, peer_closed);
    return;
  }
  /* the answer, in pieces (uv_try_write copies nothing: the input outlives this call) */
  for (size_t off = 0; off < answer_len;) {
    size_t n = cut && answer_len - off > cut ? cut : answer_len - off;
    uv_buf_t b = uv_buf_init((char *)answer + off, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&p->tcp, &b, 1);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_read);
  if (uv_shutdown(&p->shut, (uv_stream_t *)&p->tcp, peer_shut) != 0)
    uv_close((uv_handle_t *)&p->tcp, peer_closed);
}

static void setup(void) {
  uv_loop_init(&uv);
  CHECK(braid_loop_new(&loop, &uv) == 0);
  uv_tcp_init(&uv, &listener);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  CHECK(uv_tcp_bind(&listener, (const struct sockaddr *)&a, 0) == 0);
  CHECK(uv_listen((uv_stream_t *)&listener, 64, on_peer) == 0);
  int al = sizeof(a);
  uv_tcp_getsockname(&listener, (struct sockaddr *)&a, &al);
  port = ntohs(a.sin_port);
  uv_unref((uv_handle_t *)&listener);
}

typedef struct got_s {
  int ends;
  int streamed;
  braid_http_client_req_t *req;
} got_t;

static void on_res(braid_http_client_req_t *req, int status,
                   const braid_http_client_response_t *res, void *arg) {
  got_t *g = arg;
  (void)req;
  CHECK(res != NULL);
  if (status == 0 && !g->streamed)
    CHECK(res->body_len <= 4096);
  if (!g->streamed || status < 0)
    g->ends++;
}

static void on_piece(braid_http_client_req_t *req, int status, const uint8_t *d, size_t len,
                     void *arg) {
  got_t *g = arg;
  (void)d;
  if (status != 0) {
    g->ends++;
    return;
  }
  CHECK(len > 0);
  /* pause and resume at once: the resume's pieces come from the loop */
  CHECK(braid_http_client_req_pause(req) == 0);
  CHECK(braid_http_client_req_resume(req) == 0);
}

static int closed;
static void on_closed(braid_http_client_t *c, int status, void *arg) {
  (void)c;
  (void)arg;
  CHECK(status == 0);
  closed = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop)
    setup();
  if (size < 1)
    return 0;
  cut = data[0] ? data[0] : 0;
  answer = data + 1;
  answer_len = size - 1;

  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = 1;
  o.max_header_bytes = 512;
  o.max_headers = 8;
  o.max_informational = 2;
  o.req.max_body_bytes = 4096;
  o.req.header_timeout_ms = 2000;
  o.req.total_timeout_ms = 3000;
  o.req.max_redirects = 1;
  braid_http_client_t *cl;
  CHECK(braid_http_client_new(&cl, loop, &o) == 0);
  CHECK(braid_http_client_pipeline(cl, "127.0.0.1", port, 4) == 0);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
  got_t g[3];
  memset(g, 0, sizeof(g));
  g[2].streamed = 1;
  CHECK(braid_http_client_request(NULL, cl, "GET", url, NULL, 0, NULL, 0, NULL, on_res, NULL,
                                  &g[0]) == 0);
  CHECK(braid_http_client_request(NULL, cl, "HEAD", url, NULL, 0, NULL, 0, NULL, on_res, NULL,
                                  &g[1]) == 0);
  CHECK(braid_http_client_request(NULL, cl, "GET", url, NULL, 0, NULL, 0, NULL, on_res, on_piece,
                                  &g[2]) == 0);
  for (int i = 0; i < 20000 && (g[0].ends + g[1].ends + g[2].ends) < 3; i++)
    uv_run(&uv, UV_RUN_ONCE);
  for (int i = 0; i < 3; i++)
    CHECK(g[i].ends == 1);
  closed = 0;
  CHECK(braid_http_client_close(cl, on_closed, NULL) == 0);
  for (int i = 0; i < 1000 && !closed; i++)
    uv_run(&uv, UV_RUN_ONCE);
  CHECK(closed);
  /* let the peers' connections finish closing */
  for (int i = 0; i < 100; i++)
    uv_run(&uv, UV_RUN_NOWAIT);
  return 0;
}
