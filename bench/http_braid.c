/* braid's HTTP server for the benchmark cells that examples/http_server cannot isolate: heap
 * per idle keep-alive connection, a costly handler memoized or not, and a compressible body
 * compressed per request or served from the cached compressed variant. Default options
 * (compression on), one loop, public headers only.
 *
 * Routes (all GET):
 *   /               "Hello, World!" (text/plain)
 *   /fib?n=N        fib(N) computed on the loop for every request (N <= 30)
 *   /fib-memo?n=N   the same through braid_http_respond_memo(): computed once, then a hit
 *   /text           a 16 KiB compressible JSON body; compressed per request when the client
 *                   sends Accept-Encoding: gzip
 *   /text-memo      the same body through braid_http_respond_memo(): the gzip variant is
 *                   cached beside it, so a hit costs neither building nor compressing
 *
 * Usage: http_braid [--port N]. Prints `listening on 127.0.0.1:PORT` when ready, the heap in
 * use on SIGUSR1, and exits 0 on SIGINT/SIGTERM. */
#include <braid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define FIB_MAX 30
#define TEXT_BYTES 16384

static braid_loop_t *loop;
static braid_server_t *tcp;
static braid_http_server_t *http;
static braid_cache_t *memo;
static bench_signals_t sigs;
static char text[TEXT_BYTES];

static const braid_http_header_t plain[] = {{"Content-Type", "text/plain"}};
static const braid_http_header_t json[] = {{"Content-Type", "application/json"}};

static void on_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_respond(req, 200, plain, 1, "Hello, World!", 13);
}

static unsigned long long fib(unsigned n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/* n from "n=N", or -1. */
static long fib_arg(braid_http_req_t *req) {
  const char *q = braid_http_req_query(req);
  char *end;
  long n = strncmp(q, "n=", 2) == 0 ? strtol(q + 2, &end, 10) : -1;
  return n < 0 || n > FIB_MAX || end == q + 2 || *end ? -1 : n;
}

static void on_fib(braid_http_req_t *req, void *arg) {
  (void)arg;
  long n = fib_arg(req);
  if (n < 0) {
    braid_http_respond(req, 400, NULL, 0, "bad n\n", 6);
    return;
  }
  char out[32];
  int len = snprintf(out, sizeof out, "%llu\n", fib((unsigned)n));
  braid_http_respond(req, 200, plain, 1, out, (size_t)len);
}

/* The memo's loader: the key is the decimal n. */
static int fib_compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  char k[16], out[32];
  if (key_len >= sizeof k)
    return BRAID_EINVAL;
  memcpy(k, key, key_len);
  k[key_len] = '\0';
  int len = snprintf(out, sizeof out, "%llu\n", fib((unsigned)atoi(k)));
  return braid_blob_copy(value, out, (size_t)len);
}

static void on_fib_memo(braid_http_req_t *req, void *arg) {
  (void)arg;
  long n = fib_arg(req);
  if (n < 0) {
    braid_http_respond(req, 400, NULL, 0, "bad n\n", 6);
    return;
  }
  char key[16];
  int klen = snprintf(key, sizeof key, "%ld", n);
  braid_cache_loader_t loader = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = fib_compute};
  if (braid_http_respond_memo(req, memo, key, (size_t)klen, &loader, "text/plain") != 0)
    braid_http_respond(req, 500, NULL, 0, "error\n", 6);
}

static void on_text(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_respond(req, 200, json, 1, text, sizeof text);
}

static int text_compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)key;
  (void)key_len;
  (void)arg;
  return braid_blob_copy(value, text, sizeof text);
}

static void on_text_memo(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_cache_loader_t loader = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = text_compute};
  if (braid_http_respond_memo(req, memo, "text", 4, &loader, "application/json") != 0)
    braid_http_respond(req, 500, NULL, 0, "error\n", 6);
}

/* A JSON array of records: compressible the way API answers are (about 6:1 with gzip -6). */
static void make_text(void) {
  size_t n = 0;
  text[n++] = '[';
  for (unsigned i = 0; n + 96 < sizeof text; i++)
    n += (size_t)snprintf(text + n, sizeof text - n,
                          "{\"id\":%u,\"name\":\"user%u\",\"score\":%u,\"active\":%s},", i,
                          i * 7919u % 100000u, i * 31u % 1000u, i % 3 ? "true" : "false");
  while (n < sizeof text - 1)
    text[n++] = ' ';
  text[n] = ']';
}

static void on_closed(braid_http_server_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  (void)arg;
  bench_signals_close(&sigs);
  braid_cache_close(memo, NULL, NULL);
}

static void on_tcp_closed(braid_server_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  (void)arg;
  braid_http_server_close(http, on_closed, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (signum == SIGUSR1) {
    bench_print_heap(sizeof(uv_tcp_t));
    return;
  }
  if (tcp) {
    braid_server_close(tcp, on_tcp_closed, NULL);
    tcp = NULL;
  }
}

int main(int argc, char **argv) {
  int port = bench_parse_port(argc, argv);
  if (port < 0)
    return 2;
  bench_setup_process();
  make_text();

  int rc = braid_loop_new(&loop, NULL);
  if (rc == 0)
    rc = braid_cache_new(&memo, loop, NULL);
  if (rc == 0)
    rc = braid_http_server_new(&http, loop, NULL);
  if (rc == 0)
    rc = braid_http_server_route(http, "GET", "/", BRAID_HTTP_EXACT, on_hello, NULL);
  if (rc == 0)
    rc = braid_http_server_route(http, "GET", "/fib", BRAID_HTTP_EXACT, on_fib, NULL);
  if (rc == 0)
    rc = braid_http_server_route(http, "GET", "/fib-memo", BRAID_HTTP_EXACT, on_fib_memo, NULL);
  if (rc == 0)
    rc = braid_http_server_route(http, "GET", "/text", BRAID_HTTP_EXACT, on_text, NULL);
  if (rc == 0)
    rc = braid_http_server_route(http, "GET", "/text-memo", BRAID_HTTP_EXACT, on_text_memo, NULL);
  if (rc == 0)
    rc = braid_server_new(&tcp, loop, NULL, braid_http_server_on_connection, http);
  if (rc == 0)
    rc = braid_server_listen(tcp, "127.0.0.1", port);
  if (rc != 0) {
    fprintf(stderr, "http_braid: %s\n", braid_strerror(rc));
    return 1;
  }

  uv_loop_t *uv = braid_loop_uv(loop);
  bench_signals_start(uv, &sigs, on_signal);

  bench_print_ready(braid_server_port(tcp));
  braid_loop_run(loop, UV_RUN_DEFAULT);
  rc = braid_loop_close(loop);
  bench_print_cpu("http_braid");
  return rc == 0 ? 0 : 1;
}
