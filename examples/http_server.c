/* http_server: a small web server on braid, read top to bottom.
 *
 *   http_server [--host ADDR] [--port N] [--workers N] [--root DIR] [--keepalive-requests N]
 *
 * Routes:
 *   GET  /          "Hello, World!"
 *   GET  /fib?n=N   the N-th Fibonacci number by naive recursion (N <= 35): deliberately
 *                   costly, so it runs on the threadpool and its answers are memoized in
 *                   braid's cache, as functools.lru_cache does in every Python tutorial
 *   POST /echo      the request body back (gzip or deflate request bodies are decoded)
 *   GET  /stats     the server's counters as JSON
 *   GET  /metrics   the same in Prometheus' text format, for a scraper
 *   GET  /static/P  the file P under --root, with ETag, Last-Modified and Cache-Control
 *                   (revalidations get 304), byte ranges, and index.html for directories
 *
 * Responses of a compressible type are gzip'd for clients that accept it; connections are
 * kept alive and pipelined requests are answered in order. When ready it prints exactly one
 * line, "listening on ADDR:PORT" (port 0 picks a free port). SIGINT or SIGTERM drains: stop
 * accepting, close idle keep-alive connections at once, let requests in progress finish
 * (their responses say Connection: close), exit 0.
 *
 * What it shows: braid_http_server_t on a braid_server_t (with worker threads), handlers
 * that answer at once and handlers that answer later (after threadpool work), a memoizing
 * cache shared by the workers, and the safe defaults (timeouts, limits) spelled out. */
#include <braid.h>
#include <braid/http.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_DEADLINE_MS 5000
#define FIB_MAX 35

typedef struct {
  braid_server_t *tcp;       /* accepts connections (on every worker) */
  braid_http_server_t *http; /* speaks HTTP on them */
  braid_cache_shared_t *fib_cache;
  uv_signal_t sigint, sigterm;
} app_t;

static app_t app;

/* ---- GET / ----------------------------------------------------------------------------- */

static void on_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  static const braid_http_header_t headers[] = {{"Content-Type", "text/plain"}};
  braid_http_respond(req, 200, headers, 1, "Hello, World!", 13);
}

/* ---- GET /fib?n=N: costly, so off the loop, and memoized -------------------------------- */

static uint64_t fib(unsigned n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

typedef struct {
  braid_http_req_t *req;
  unsigned n;
  char answer[32];
} fib_job_t;

static void send_fib(braid_http_req_t *req, braid_blob_t *value) {
  static const braid_http_header_t headers[] = {{"Content-Type", "text/plain"}};
  braid_http_respond_blob(req, 200, headers, 1, value);
}

/* Runs on a threadpool thread: touches no braid handle. */
static void fib_work(void *arg) {
  fib_job_t *job = arg;
  snprintf(job->answer, sizeof job->answer, "%llu\n", (unsigned long long)fib(job->n));
}

/* Back on the request's loop: remember the answer, then send it. */
static void fib_done(braid_loop_t *loop, int status, void *arg) {
  fib_job_t *job = arg;
  (void)loop;
  braid_blob_t *value = NULL;
  if (status == 0 && braid_blob_copy(&value, job->answer, strlen(job->answer)) == 0) {
    char key[16];
    int klen = snprintf(key, sizeof key, "%u", job->n);
    braid_cache_shared_put_blob(app.fib_cache, key, (size_t)klen, value, BRAID_CACHE_TTL_NONE);
    send_fib(job->req, value);
    braid_blob_unref(value);
  } else {
    braid_http_respond(job->req, 500, NULL, 0, "error\n", 6);
  }
  free(job);
}

static void on_fib(braid_http_req_t *req, void *arg) {
  (void)arg;
  const char *q = braid_http_req_query(req);
  char *end;
  long n = strncmp(q, "n=", 2) == 0 ? strtol(q + 2, &end, 10) : -1;
  if (n < 0 || n > FIB_MAX || end == q + 2 || *end) {
    braid_http_respond(req, 400, NULL, 0, "n must be 0..35\n", 16);
    return;
  }
  /* A hit costs a lookup: no computation, no thread. */
  char key[16];
  int klen = snprintf(key, sizeof key, "%ld", n);
  braid_blob_t *value;
  if (braid_cache_shared_get_blob(app.fib_cache, key, (size_t)klen, &value) == 0) {
    braid_http_server_count_cache_hit(req);
    send_fib(req, value);
    braid_blob_unref(value);
    return;
  }
  /* A miss runs on the threadpool; the request waits (it stays valid until answered). */
  fib_job_t *job = calloc(1, sizeof *job);
  if (job) {
    job->req = req;
    job->n = (unsigned)n;
  }
  if (!job || braid_work(NULL, braid_http_req_loop(req), fib_work, fib_done, job) != 0) {
    free(job);
    braid_http_respond(req, 503, NULL, 0, "busy\n", 5);
  }
}

/* ---- POST /echo -------------------------------------------------------------------------- */

static void on_echo(braid_http_req_t *req, void *arg) {
  (void)arg;
  size_t len;
  const uint8_t *body = braid_http_req_body(req, &len); /* already gunzipped if it was */
  const char *type = braid_http_req_header(req, "Content-Type");
  braid_http_header_t headers[] = {{"Content-Type", type ? type : "application/octet-stream"}};
  braid_http_respond(req, 200, headers, 1, body, len);
}

/* ---- GET /stats and /metrics -------------------------------------------------------------- */

static void on_stats(braid_http_req_t *req, void *arg) {
  int prometheus = arg != NULL;
  char buf[8192];
  int n = prometheus ? braid_http_server_stats_prometheus(app.http, buf, sizeof buf)
                     : braid_http_server_stats_json(app.http, buf, sizeof buf);
  if (n < 0 || (size_t)n >= sizeof buf)
    n = (int)strlen(buf);
  braid_http_header_t headers[] = {
      {"Content-Type", prometheus ? "text/plain; version=0.0.4" : "application/json"},
      {"Cache-Control", "no-store"}};
  braid_http_respond(req, 200, headers, 2, buf, (size_t)n);
}

/* ---- shutting down ------------------------------------------------------------------------ */

static void on_http_closed(braid_http_server_t *http, int status, void *arg) {
  (void)http;
  (void)status;
  (void)arg;
  uv_close((uv_handle_t *)&app.sigint, NULL);
  uv_close((uv_handle_t *)&app.sigterm, NULL);
}

/* Every connection is closed (idle ones at once, busy ones after their last response). */
static void on_drained(braid_server_t *tcp, int status, void *arg) {
  (void)tcp;
  (void)arg;
  if (status == BRAID_ETIMEDOUT)
    fprintf(stderr, "http_server: closed connections still busy after %d ms\n",
            DRAIN_DEADLINE_MS);
  braid_http_server_close(app.http, on_http_closed, NULL);
}

static void on_signal(uv_signal_t *handle, int signum) {
  (void)handle;
  fprintf(stderr, "http_server: %s, draining\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_signal_stop(&app.sigint); /* a second signal kills the ordinary way */
  uv_signal_stop(&app.sigterm);
  braid_server_drain(app.tcp, DRAIN_DEADLINE_MS, on_drained, NULL);
}

/* ---- setting up ------------------------------------------------------------------------------ */

typedef struct {
  const char *host;
  int port;
  long workers;
  const char *root;
  long keepalive_requests; /* requests per connection before Connection: close; 0 = no limit */
} args_t;

static int parse_args(int argc, char **argv, args_t *a) {
  for (int i = 1; i < argc; i += 2) {
    const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    long n = value ? strtol(value, &end, 10) : 0;
    int numeric = value && *value && *end == '\0' && n >= 0;
    if (value && strcmp(name, "--host") == 0) {
      a->host = value;
    } else if (strcmp(name, "--port") == 0 && numeric && n <= 65535) {
      a->port = (int)n;
    } else if (strcmp(name, "--workers") == 0 && numeric && n <= 256) {
      a->workers = n;
    } else if (value && strcmp(name, "--root") == 0) {
      a->root = value;
    } else if (strcmp(name, "--keepalive-requests") == 0 && numeric && n <= (1 << 30)) {
      a->keepalive_requests = n;
    } else {
      fprintf(stderr, "usage: http_server [--host ADDR] [--port N] [--workers N] [--root DIR] "
                      "[--keepalive-requests N]\n");
      return -1;
    }
  }
  return 0;
}

static void print_address(braid_server_t *tcp) {
  struct sockaddr_storage ss;
  char ip[64] = "?";
  braid_server_address(tcp, &ss);
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((const struct sockaddr_in6 *)&ss, ip, sizeof ip);
    printf("listening on [%s]:%d\n", ip, braid_server_port(tcp));
  } else {
    uv_ip4_name((const struct sockaddr_in *)&ss, ip, sizeof ip);
    printf("listening on %s:%d\n", ip, braid_server_port(tcp));
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  args_t args = {.host = "127.0.0.1", .port = 8080, .workers = 1, .keepalive_requests = 1000};
  if (parse_args(argc, argv, &args) != 0)
    return 2;

  braid_loop_t *loop;
  if (braid_loop_new(&loop, NULL) != 0)
    return 1;

  /* The memo for /fib: one cache every worker thread may use (striped locks). */
  braid_cache_opts_t copts;
  braid_cache_opts_init(&copts);
  copts.max_entries = 1024;
  if (braid_cache_shared_new(&app.fib_cache, &copts) != 0)
    return 1;

  /* HTTP options: the defaults are safe (shown here so you know what they are). */
  braid_http_server_opts_t hopts;
  braid_http_server_opts_init(&hopts);
  hopts.header_timeout_ms = 60000;    /* the whole header section (slowloris) */
  hopts.keepalive_timeout_ms = 75000; /* idle keep-alive, as nginx */
  hopts.body_timeout_ms = 60000;      /* between body reads */
  hopts.max_body_bytes = 1 << 20;     /* 413 above */
  hopts.compress = 1;                 /* gzip/deflate from Accept-Encoding */
  hopts.keepalive_requests = (unsigned)args.keepalive_requests; /* as nginx; 0: no limit */
  int rc = braid_http_server_new(&app.http, loop, &hopts);
  if (rc == 0) {
    braid_http_server_route(app.http, "GET", "/", BRAID_HTTP_EXACT, on_hello, NULL);
    braid_http_server_route(app.http, "GET", "/fib", BRAID_HTTP_EXACT, on_fib, NULL);
    braid_http_server_route(app.http, "POST", "/echo", BRAID_HTTP_EXACT, on_echo, NULL);
    braid_http_server_route(app.http, "GET", "/stats", BRAID_HTTP_EXACT, on_stats, NULL);
    braid_http_server_route(app.http, "GET", "/metrics", BRAID_HTTP_EXACT, on_stats, &app);
  }
  /* Files under --root: opened on the threadpool, read asynchronously, cached by browsers
   * for an hour (Cache-Control: public, max-age=3600) and revalidated with ETags. */
  if (rc == 0 && args.root) {
    braid_http_static_opts_t sopts_files;
    braid_http_static_opts_init(&sopts_files);
    sopts_files.max_age_s = 3600;
    rc = braid_http_server_static(app.http, "/static/", args.root, &sopts_files);
    if (rc != 0)
      fprintf(stderr, "http_server: --root %s: %s\n", args.root, braid_strerror(rc));
  }

  /* The TCP server hands every accepted connection to the HTTP server. A client that stops
   * reading is cut after 60 s without progress (nginx's send_timeout). */
  braid_server_opts_t sopts;
  braid_server_opts_init(&sopts);
  sopts.workers = (unsigned)args.workers;
  sopts.conn.write_timeout_ms = 60000;
  if (rc == 0)
    rc = braid_server_new(&app.tcp, loop, &sopts, braid_http_server_on_connection, app.http);
  if (rc == 0 && (rc = braid_server_listen(app.tcp, args.host, args.port)) != 0)
    braid_server_close(app.tcp, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "http_server: %s:%d: %s\n", args.host, args.port, braid_strerror(rc));
    if (app.http)
      braid_http_server_close(app.http, NULL, NULL);
    braid_loop_run(loop, UV_RUN_DEFAULT);
    braid_loop_close(loop);
    braid_cache_shared_free(app.fib_cache);
    return 1;
  }

  uv_signal_init(braid_loop_uv(loop), &app.sigint);
  uv_signal_init(braid_loop_uv(loop), &app.sigterm);
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  print_address(app.tcp);

  braid_loop_run(loop, UV_RUN_DEFAULT); /* until the drain is done and the signals closed */
  rc = braid_loop_close(loop);
  braid_cache_shared_free(app.fib_cache);
  if (rc != 0)
    fprintf(stderr, "http_server: closing the loop: %s\n", braid_strerror(rc));
  return rc == 0 ? 0 : 1;
}
