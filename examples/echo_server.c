/* echo_server: a TCP echo server on braid, read top to bottom.
 *
 *   echo_server [--host ADDR] [--port N] [--workers N] [--sndbuf B] [--rcvbuf B]
 *               [--idle-timeout-ms MS]
 *
 * Every byte a client sends comes straight back. When the client half-closes (shuts down its
 * sending side), the server echoes what is still queued and then closes its side. When the
 * server is ready it prints exactly one line, "listening on ADDR:PORT", to stdout (port 0
 * picks a free port, so scripts read the port from that line). SIGINT or SIGTERM drains:
 * stop accepting, tell every open connection (its on_drain callback closes it once what is
 * queued is sent), wait at most a few seconds for that, exit 0. A second signal during the
 * drain kills the process the ordinary way.
 *
 * What it shows: a server on a braid loop, per-connection callbacks, copying writes, pausing
 * a reader that outruns its peer (watermarks), half-close (on_eof), timeouts, graceful drain
 * (on_drain), and a libuv handle of your own (uv_signal_t) living on braid's loop. */
#include <braid.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a drain lets open connections finish before closing them. */
#define DRAIN_DEADLINE_MS 5000

typedef struct {
  braid_server_t *server;
  uv_signal_t sigint;
  uv_signal_t sigterm;
} app_t;

/* ---- one connection -------------------------------------------------------------------- */

/* Bytes arrived: queue a copy to send back. braid flushes every connection once per loop
 * iteration, so whatever one read produces leaves in one writev(). */
static void on_read(braid_conn_t *conn, int status, const uint8_t *data, size_t len, void *arg) {
  (void)arg;
  if (status < 0)
    return; /* reading failed: the connection is already closing */
  if (braid_conn_write(conn, data, len, NULL, NULL) != 0)
    braid_conn_close(conn);
}

/* The client half-closed. braid_conn_close() flushes what is still queued before it closes,
 * so the client gets every byte back, then our FIN. (Without an on_eof callback braid does
 * exactly this; it is spelled out here to show where half-close is handled.) */
static void on_eof(braid_conn_t *conn, void *arg) {
  (void)arg;
  braid_conn_close(conn);
}

/* The server is draining (SIGINT/SIGTERM): an echo connection has nothing in progress to
 * finish beyond what is queued, so close it now; the flush still sends every byte. */
static void on_drain(braid_conn_t *conn, void *arg) {
  (void)arg;
  braid_conn_close(conn);
}

/* A client that sends faster than it reads would make the queue grow without bound. Stop
 * reading from it while too much is queued (TCP flow control then slows it down) and resume
 * when the queue has drained to the low watermark. */
static void on_watermark(braid_conn_t *conn, int above, void *arg) {
  (void)arg;
  if (above)
    braid_conn_read_stop(conn);
  else
    braid_conn_read_start(conn);
}

/* The server accepted a connection. With --workers N this runs on N threads at once, so it
 * touches nothing shared. */
static void on_connection(braid_server_t *server, braid_conn_t *conn, void *arg) {
  (void)server;
  (void)arg;
  braid_conn_callbacks_t cbs = {
      .on_read = on_read, .on_eof = on_eof, .on_watermark = on_watermark, .on_drain = on_drain};
  braid_conn_set_callbacks(conn, &cbs);
  if (braid_conn_read_start(conn) != 0)
    braid_conn_close(conn);
}

/* ---- shutting down --------------------------------------------------------------------- */

/* The drain finished: every connection and listener is closed and the server is freed. Our
 * signal handles are the last things keeping the loop alive; closing them ends main's run. */
static void on_drained(braid_server_t *server, int status, void *arg) {
  app_t *app = arg;
  (void)server;
  if (status == BRAID_ETIMEDOUT)
    fprintf(stderr, "echo_server: closed connections still open after %d ms\n", DRAIN_DEADLINE_MS);
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
}

static void on_signal(uv_signal_t *handle, int signum) {
  app_t *app = handle->data;
  fprintf(stderr, "echo_server: %s, draining\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
  /* Stopping the watchers restores the default action, so a second signal kills us. */
  uv_signal_stop(&app->sigint);
  uv_signal_stop(&app->sigterm);
  braid_server_drain(app->server, DRAIN_DEADLINE_MS, on_drained, app);
}

/* ---- setting up ------------------------------------------------------------------------ */

typedef struct {
  const char *host;
  int port;
  long workers, sndbuf, rcvbuf, idle_timeout_ms;
} args_t;

/* Parses "--name value" pairs. Returns 0, or -1 after printing what is wrong. */
static int parse_args(int argc, char **argv, args_t *a) {
  for (int i = 1; i < argc; i += 2) {
    const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    long n = value ? strtol(value, &end, 10) : 0;
    int numeric = value && *value && *end == '\0' && n >= 0;
    if (!value) {
      fprintf(stderr, "echo_server: %s needs a value\n", name);
      return -1;
    } else if (strcmp(name, "--host") == 0) {
      a->host = value;
    } else if (strcmp(name, "--port") == 0 && numeric && n <= 65535) {
      a->port = (int)n;
    } else if (strcmp(name, "--workers") == 0 && numeric) {
      a->workers = n;
    } else if (strcmp(name, "--sndbuf") == 0 && numeric) {
      a->sndbuf = n;
    } else if (strcmp(name, "--rcvbuf") == 0 && numeric) {
      a->rcvbuf = n;
    } else if (strcmp(name, "--idle-timeout-ms") == 0 && numeric) {
      a->idle_timeout_ms = n;
    } else {
      fprintf(stderr, "usage: echo_server [--host ADDR] [--port N] [--workers N] [--sndbuf B]"
                      " [--rcvbuf B] [--idle-timeout-ms MS]\n");
      return -1;
    }
  }
  return 0;
}

/* Prints "listening on ADDR:PORT" (IPv6 as [ADDR]:PORT), the one line scripts wait for. */
static void print_address(braid_server_t *server) {
  struct sockaddr_storage ss;
  char ip[64] = "?";
  braid_server_address(server, &ss);
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((const struct sockaddr_in6 *)&ss, ip, sizeof ip);
    printf("listening on [%s]:%d\n", ip, braid_server_port(server));
  } else {
    uv_ip4_name((const struct sockaddr_in *)&ss, ip, sizeof ip);
    printf("listening on %s:%d\n", ip, braid_server_port(server));
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  args_t args = {.host = "127.0.0.1", .port = 7000, .workers = 1, .idle_timeout_ms = 75000};
  if (parse_args(argc, argv, &args) != 0)
    return 2;

  braid_loop_t *loop;
  int rc = braid_loop_new(&loop, NULL); /* NULL: braid makes and owns the libuv loop */
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", braid_strerror(rc));
    return 1;
  }

  /* Options are plain structs: take the defaults, change what you need. Out-of-range values
   * make braid_server_new() fail with BRAID_EINVAL rather than being clamped. */
  braid_server_opts_t opts;
  braid_server_opts_init(&opts);
  opts.workers = (unsigned)args.workers;
  opts.sockopts.sndbuf_bytes = (int)args.sndbuf;
  opts.sockopts.rcvbuf_bytes = (int)args.rcvbuf;

  /* Servers start with timeouts on, so no client can hold a connection forever: a
   * connection with no traffic either way for 75 s (idle), or whose client has read none of
   * what we queued for it for 60 s (write), is closed. Loosen them for clients that stay
   * quiet on purpose, tighten them under attack; 0 turns one off. (The message timeout,
   * which stops clients that trickle a request byte by byte, needs a protocol that knows
   * where requests end; echo has none. See braid/server.h.) */
  opts.conn.idle_timeout_ms = (uint64_t)args.idle_timeout_ms;
  opts.conn.write_timeout_ms = 60 * 1000;

  app_t app = {0};
  rc = braid_server_new(&app.server, loop, &opts, on_connection, &app);
  if (rc == 0) {
    rc = braid_server_listen(app.server, args.host, args.port);
    if (rc != 0)
      braid_server_close(app.server, NULL, NULL);
  }
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s:%d: %s\n", args.host, args.port, braid_strerror(rc));
    braid_loop_run(loop, UV_RUN_DEFAULT); /* lets the server's close finish */
    braid_loop_close(loop);
    return 1;
  }

  /* A libuv handle of our own on braid's loop. It must be closed before braid_loop_close().
   * Watch the signals before announcing the address, so a script that signals us as soon as
   * it reads that line gets a drain, not the default action. */
  uv_signal_init(braid_loop_uv(loop), &app.sigint);
  uv_signal_init(braid_loop_uv(loop), &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  print_address(app.server);

  /* Runs until the drain has finished and the signal handles are closed. */
  braid_loop_run(loop, UV_RUN_DEFAULT);
  rc = braid_loop_close(loop);
  if (rc != 0)
    fprintf(stderr, "echo_server: closing the loop: %s\n", braid_strerror(rc));
  return rc == 0 ? 0 : 1;
}
