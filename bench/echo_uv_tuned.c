/* Baseline (b): a libuv echo server tuned as far as libuv allows, the bar braid must meet.
 *
 * - One read buffer for the whole process: libuv calls the alloc callback and then the read
 *   callback before reading again, so a static buffer is safe on one loop.
 * - Echo with uv_try_write() straight from that buffer; only what the kernel did not take is
 *   copied, into a per-connection pending buffer, and sent with uv_write().
 * - No allocation per write: the write request is embedded in the connection (at most one
 *   uv_write is in flight; bytes arriving meanwhile queue behind it in the pending buffer),
 *   and the two buffers are swapped and reused, growing only when needed.
 * - Reading pauses while more than PENDING_CAP bytes wait (a client that stops reading
 *   cannot grow our memory without bound).
 *
 * Usage: echo_uv_tuned [--port N]. Prints `listening on 127.0.0.1:PORT` when ready, the heap
 * in use on SIGUSR1, and exits 0 on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench_util.h"

#define READ_BUF_BYTES 65536
#define PENDING_CAP (4u << 20)

typedef struct {
  uv_tcp_t tcp;
  uv_write_t wreq;
  char *inflight; /* the buffer wreq is sending */
  size_t inflight_cap;
  char *pending; /* bytes that arrived while wreq was in flight */
  size_t pending_len, pending_cap;
  int writing;
  int read_paused;
} conn_t;

static uv_tcp_t server;
static bench_signals_t sigs;
static char read_buf[READ_BUF_BYTES];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  free(c->inflight);
  free(c->pending);
  free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static int pending_append(conn_t *c, const char *data, size_t len) {
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_cap ? c->pending_cap : 4096;
    while (cap < c->pending_len + len) cap *= 2;
    char *p = realloc(c->pending, cap);
    if (!p) return UV_ENOBUFS;
    c->pending = p;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
  return 0;
}

static void on_write(uv_write_t *req, int status);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Sends the pending bytes: they become the in-flight buffer, and the old in-flight buffer
 * becomes the (empty) pending one, so neither is freed or reallocated in steady state. */
static void start_write(conn_t *c) {
  char *buf = c->pending;
  size_t cap = c->pending_cap;
  uv_buf_t b = uv_buf_init(buf, (unsigned)c->pending_len);
  c->pending = c->inflight;
  c->pending_cap = c->inflight_cap;
  c->pending_len = 0;
  c->inflight = buf;
  c->inflight_cap = cap;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    conn_close(c);
    return;
  }
  c->writing = 1;
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = (conn_t *)req->handle;
  c->writing = 0;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->pending_len > 0) start_write(c);
  if (c->read_paused && c->pending_len <= PENDING_CAP && !uv_is_closing((uv_handle_t *)c)) {
    c->read_paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)s;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0) return;
  size_t len = (size_t)nread, done = 0;
  if (!c->writing) {
    /* Nothing queued, so order is kept if we write straight from the read buffer. */
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)len);
    int n = uv_try_write(s, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
      conn_close(c);
      return;
    }
    done = (size_t)n;
    if (done == len) return;
  }
  if (pending_append(c, buf->base + done, len - done) != 0) {
    conn_close(c);
    return;
  }
  if (!c->writing) start_write(c);
  if (c->pending_len > PENDING_CAP && !c->read_paused) {
    c->read_paused = 1;
    uv_read_stop(s);
  }
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof(*c));
  if (!c) return;
  uv_tcp_init(srv->loop, &c->tcp);
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  int is_conn = h->type == UV_TCP && h != (uv_handle_t *)&server;
  uv_close(h, is_conn ? on_conn_closed : NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  if (signum == SIGUSR1) {
    bench_print_heap(sizeof(uv_tcp_t));
    return;
  }
  uv_walk(s->loop, close_walk, NULL);
}

int main(int argc, char **argv) {
  int port = bench_parse_port(argc, argv);
  if (port < 0) return 2;
  bench_setup_process();
  uv_loop_t *loop = uv_default_loop();

  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "echo_uv_tuned: listen: %s\n", uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);

  bench_signals_start(loop, &sigs, on_signal);

  bench_print_ready(ntohs(((struct sockaddr_in *)&bound)->sin_port));
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  bench_print_cpu("echo_uv_tuned");
  return rc == 0 ? 0 : 1;
}
