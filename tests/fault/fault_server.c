/* fault_server: a braid-protocol rpc server on braid's public API, for the fault suite.
 *
 *   fault_server [--host ADDR] [--port N] [--idle-timeout-ms N] [--read-timeout-ms N]
 *                [--write-timeout-ms N] [--message-timeout-ms N] [--max-connections N]
 *   fault_server --check-defaults
 *
 * Every REQUEST is answered with its own payload (an echo). The timeouts start from
 * braid_server_opts_init()'s defaults and each flag given replaces one, so the slowloris
 * test can make them short enough to watch in seconds. It prints "listening on ADDR:PORT"
 * when ready; SIGTERM or SIGINT drains (1 s) and exits 0. It never ignores SIGPIPE: a peer's
 * reset must not kill it whatever the disposition.
 *
 * --check-defaults prints the timeouts a server gets when the caller sets none and exits 1
 * unless they are on (a connection that sends nothing, trickles a message a byte at a time,
 * or never reads, is closed in bounded time): DESIGN.md's "servers start with timeouts on;
 * callers loosen them explicitly". */
#include <braid.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  braid_server_t *server;
  uv_signal_t sigint, sigterm;
} app_t;

static void on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                       void *arg) {
  (void)rpc;
  (void)arg;
  braid_rpc_respond(req, data, len);
}

static void on_connection(braid_server_t *server, braid_conn_t *conn, void *arg) {
  (void)server;
  (void)arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  braid_rpc_callbacks_t cbs = {.on_request = on_request};
  braid_rpc_t *rpc;
  if (braid_rpc_server(&rpc, conn, &o, &cbs, NULL) != 0)
    braid_conn_close(conn);
}

static void on_drained(braid_server_t *server, int status, void *arg) {
  app_t *app = arg;
  (void)server;
  (void)status;
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
}

static void on_signal(uv_signal_t *handle, int signum) {
  app_t *app = handle->data;
  (void)signum;
  uv_signal_stop(&app->sigint);
  uv_signal_stop(&app->sigterm);
  braid_server_drain(app->server, 1000, on_drained, app);
}

static int check_defaults(void) {
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  printf("default idle_timeout_ms %llu read_timeout_ms %llu write_timeout_ms %llu "
         "message_timeout_ms %llu\n",
         (unsigned long long)o.conn.idle_timeout_ms, (unsigned long long)o.conn.read_timeout_ms,
         (unsigned long long)o.conn.write_timeout_ms,
         (unsigned long long)o.conn.message_timeout_ms);
  int silent_bounded = o.conn.idle_timeout_ms || o.conn.read_timeout_ms;
  int nonreader_bounded = o.conn.write_timeout_ms != 0;
  int trickler_bounded = o.conn.message_timeout_ms != 0; /* a byte at a time resets the others */
  return silent_bounded && nonreader_bounded && trickler_bounded ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--check-defaults") == 0)
    return check_defaults();
  const char *host = "127.0.0.1";
  int port = 0;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) {
      fprintf(stderr, "fault_server: %s needs a value\n", argv[i]);
      return 2;
    }
    const char *name = argv[i], *val = argv[i + 1];
    unsigned long long n = strtoull(val, NULL, 10);
    if (strcmp(name, "--host") == 0)
      host = val;
    else if (strcmp(name, "--port") == 0)
      port = (int)n;
    else if (strcmp(name, "--idle-timeout-ms") == 0)
      so.conn.idle_timeout_ms = n;
    else if (strcmp(name, "--read-timeout-ms") == 0)
      so.conn.read_timeout_ms = n;
    else if (strcmp(name, "--write-timeout-ms") == 0)
      so.conn.write_timeout_ms = n;
    else if (strcmp(name, "--message-timeout-ms") == 0)
      so.conn.message_timeout_ms = n;
    else if (strcmp(name, "--max-connections") == 0)
      so.max_connections = (unsigned)n;
    else {
      fprintf(stderr, "fault_server: unknown option %s\n", name);
      return 2;
    }
  }
  braid_loop_t *loop;
  if (braid_loop_new(&loop, NULL) != 0)
    return 1;
  app_t app = {0};
  int rc = braid_server_new(&app.server, loop, &so, on_connection, &app);
  if (rc == 0 && (rc = braid_server_listen(app.server, host, port)) != 0)
    braid_server_close(app.server, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "fault_server: %s\n", braid_strerror(rc));
    braid_loop_run(loop, UV_RUN_DEFAULT);
    braid_loop_close(loop);
    return 1;
  }
  uv_signal_init(braid_loop_uv(loop), &app.sigint);
  uv_signal_init(braid_loop_uv(loop), &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  printf("listening on %s:%d\n", host, braid_server_port(app.server));
  fflush(stdout);
  braid_loop_run(loop, UV_RUN_DEFAULT);
  return braid_loop_close(loop) == 0 ? 0 : 1;
}
