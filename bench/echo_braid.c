/* braid's entry in the echo benchmark: the plainest braid echo server, using only the public
 * headers and default options. The read callback writes the bytes back with a copying
 * braid_conn_write(); braid queues them and flushes once per loop iteration (try-write
 * first), reading into the loop's shared buffer. Nothing here is tuned beyond the defaults:
 * the point is to measure what a user gets.
 *
 * Usage: echo_braid [--port N]. Prints `listening on 127.0.0.1:PORT` when ready, the heap
 * in use on SIGUSR1, and exits 0 on SIGINT/SIGTERM. */
#include <braid.h>
#include <signal.h>
#include <stdio.h>

#include "bench_util.h"

static braid_loop_t *loop;
static braid_server_t *server;
static bench_signals_t sigs;

/* No on_eof: braid closes gracefully at the client's EOF. */
static void on_read(braid_conn_t *conn, int status, const uint8_t *data, size_t len, void *arg) {
  (void)arg;
  if (status < 0) return; /* the connection is closing; nothing to do */
  if (braid_conn_write(conn, data, len, NULL, NULL) != 0) braid_conn_close(conn);
}

static void on_connection(braid_server_t *srv, braid_conn_t *conn, void *arg) {
  (void)srv;
  (void)arg;
  braid_conn_callbacks_t cbs = {.on_read = on_read};
  if (braid_conn_set_callbacks(conn, &cbs) != 0 || braid_conn_read_start(conn) != 0)
    braid_conn_close(conn);
}

static void on_server_closed(braid_server_t *srv, int status, void *arg) {
  (void)srv;
  (void)status;
  (void)arg;
  bench_signals_close(&sigs);
  /* braid's own per-loop handles may keep the loop alive; braid_loop_close() ends them. */
  uv_stop(braid_loop_uv(loop));
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (signum == SIGUSR1) {
    bench_print_heap(sizeof(uv_tcp_t));
    return;
  }
  if (server) {
    braid_server_close(server, on_server_closed, NULL);
    server = NULL;
  }
}

int main(int argc, char **argv) {
  int port = bench_parse_port(argc, argv);
  if (port < 0) return 2;
  bench_setup_process();

  int rc = braid_loop_new(&loop, NULL);
  if (rc != 0) {
    fprintf(stderr, "echo_braid: loop: %s\n", braid_strerror(rc));
    return 1;
  }
  rc = braid_server_new(&server, loop, NULL, on_connection, NULL);
  if (rc == 0) rc = braid_server_listen(server, "127.0.0.1", port);
  if (rc != 0) {
    fprintf(stderr, "echo_braid: listen: %s\n", braid_strerror(rc));
    return 1;
  }

  uv_loop_t *uv = braid_loop_uv(loop);
  bench_signals_start(uv, &sigs, on_signal);

  bench_print_ready(braid_server_port(server));
  braid_loop_run(loop, UV_RUN_DEFAULT);
  rc = braid_loop_close(loop);
  bench_print_cpu("echo_braid");
  return rc == 0 ? 0 : 1;
}
