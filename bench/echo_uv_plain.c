/* Baseline (a): a libuv echo server written the obvious way, as most tutorials show it.
 * Every read gets a fresh malloc'd buffer of libuv's suggested size (64 KiB); every echo
 * mallocs a write request and a copy of the data, and the write callback frees both.
 *
 * Usage: echo_uv_plain [--port N]. Prints `listening on 127.0.0.1:PORT` when ready,
 * the heap in use on SIGUSR1, and exits 0 on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench_util.h"

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
} write_req_t;

static uv_tcp_t server;
static bench_signals_t sigs;

static void on_close_free(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_write(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  (void)status; /* a failed write shows up as a read error too */
  free(w->buf.base);
  free(w);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  if (nread > 0) {
    write_req_t *w = malloc(sizeof(*w));
    char *copy = malloc((size_t)nread);
    if (w && copy) {
      memcpy(copy, buf->base, (size_t)nread);
      w->buf = uv_buf_init(copy, (unsigned)nread);
      if (uv_write(&w->req, s, &w->buf, 1, on_write) == 0) copy = NULL, w = NULL;
    }
    free(copy);
    free(w);
  } else if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close_free);
  }
  free(buf->base);
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  uv_tcp_t *c = malloc(sizeof(*c));
  if (!c) return;
  uv_tcp_init(srv->loop, c);
  if (uv_accept(srv, (uv_stream_t *)c) != 0) {
    uv_close((uv_handle_t *)c, on_close_free);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  /* Connections were malloc'd; the listener and signals are static. */
  int is_conn = h->type == UV_TCP && h != (uv_handle_t *)&server;
  uv_close(h, is_conn ? on_close_free : NULL);
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
    fprintf(stderr, "echo_uv_plain: listen: %s\n", uv_strerror(rc));
    return 1;
  }
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len);

  bench_signals_start(loop, &sigs, on_signal);

  bench_print_ready(ntohs(((struct sockaddr_in *)&bound)->sin_port));
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  bench_print_cpu("echo_uv_plain");
  return rc == 0 ? 0 : 1;
}
