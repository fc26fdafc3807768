/* http_get: fetch URLs with braid's HTTP client, many at once, over kept-alive connections.
 *
 *   http_get [-c CONCURRENCY] [-n REQUESTS] [--compressed] [--pipeline] [-o FILE] URL...
 *
 * It fetches the URLs in turn (repeating the list up to REQUESTS; default: each once), with
 * at most CONCURRENCY requests in flight (default 1), shows a progress line on stderr while
 * it runs, and ends with a summary: how many responses of each status, the bytes received,
 * how many connections it opened for how many requests (keep-alive reuse), and latency
 * percentiles. --compressed asks for gzip or deflate (Accept-Encoding) and decodes it;
 * --pipeline lets each host have up to 16 requests on one connection at once; -o FILE, with
 * one URL and one request, writes the body to FILE. The exit status is 0 when every request
 * got a 2xx or 3xx response, 1 otherwise.
 *
 * Read it top to bottom: the state, the response callback that keeps the pipe full, the
 * progress line and the summary, then main. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>
#include <braid/http_client.h>

/* ---- what the run keeps ------------------------------------------------------------------ */

typedef struct run_s {
  braid_loop_t *loop;
  braid_http_client_t *client;
  braid_http_client_req_opts_t req_opts;
  char **urls;
  int nurls;
  long total;     /* requests to make */
  long started;   /* requests made so far */
  long done;      /* requests ended (answered or failed) */
  long errors;    /* requests that failed without a response */
  long status_counts[6]; /* by first digit: [2] counts 2xx, ... */
  uint64_t body_bytes;
  const char *out_path;
  uint64_t t0_ms;
  uv_timer_t progress;
} run_t;

static void start_next(run_t *r);
static void print_summary(run_t *r);

/* ---- one response ---------------------------------------------------------------------- */

/* Called once per request with the whole response (or the error). It counts the result and
 * starts the next request, so CONCURRENCY requests stay in flight until all are made. */
static void on_response(braid_http_client_req_t *req, int status,
                        const braid_http_client_response_t *res, void *arg) {
  (void)req;
  run_t *r = arg;
  r->done++;
  if (status < 0) {
    r->errors++;
    /* the error says what happened, the phase where */
    fprintf(stderr, "\n%s: %s (%s, in %s)\n", res->url, braid_strerror(status),
            braid_err_name(status), braid_http_phase_name(res->phase));
  } else {
    r->status_counts[res->http_status / 100 % 6]++;
    r->body_bytes += res->body_len;
    if (r->out_path) {
      FILE *f = fopen(r->out_path, "wb");
      if (!f || fwrite(res->body, 1, res->body_len, f) != res->body_len) {
        perror(r->out_path);
        r->errors++;
      }
      if (f)
        fclose(f);
    }
  }
  start_next(r);
}

/* Makes requests until CONCURRENCY are in flight or all were made; closes the client when
 * the last one has ended. */
static void start_next(run_t *r) {
  if (r->started < r->total) {
    const char *url = r->urls[r->started % r->nurls];
    r->started++;
    int rc = braid_http_client_request(NULL, r->client, "GET", url, NULL, 0, NULL, 0,
                                       &r->req_opts, on_response, NULL, r);
    if (rc < 0) { /* refused at once: a bad URL, https without TLS, ... */
      fprintf(stderr, "%s: %s\n", url, braid_strerror(rc));
      r->errors++;
      r->done++;
      start_next(r);
    }
    return;
  }
  if (r->done == r->total) {
    uv_timer_stop(&r->progress);
    uv_close((uv_handle_t *)&r->progress, NULL);
    /* the summary reads the client's counters first: closing frees it */
    print_summary(r);
    braid_http_client_close(r->client, NULL, NULL);
  }
}

/* ---- progress and summary -------------------------------------------------------------- */

static void on_progress(uv_timer_t *t) {
  run_t *r = t->data;
  double secs = (double)(braid_loop_now_ms(r->loop) - r->t0_ms) / 1000.0;
  fprintf(stderr, "\r%ld/%ld done, %.0f req/s, %ld errors   ", r->done, r->total,
          secs > 0 ? (double)r->done / secs : 0.0, r->errors);
}

static void print_summary(run_t *r) {
  braid_http_client_stats_t st;
  braid_http_client_stats(r->client, &st);
  double secs = (double)(braid_loop_now_ms(r->loop) - r->t0_ms) / 1000.0;
  fprintf(stderr, "\r%ld/%ld done in %.2f s%30s\n", r->done, r->total, secs, "");
  printf("requests:    %ld (%.0f/s)\n", r->total, secs > 0 ? (double)r->total / secs : 0.0);
  printf("status:      2xx %ld, 3xx %ld, 4xx %ld, 5xx %ld, errors %ld\n", r->status_counts[2],
         r->status_counts[3], r->status_counts[4], r->status_counts[5], r->errors);
  printf("bytes:       %llu body bytes (%llu on the wire before decoding)\n",
         (unsigned long long)st.body_bytes_decoded, (unsigned long long)st.body_bytes_wire);
  printf("connections: %llu opened for %llu requests sent (%.1f%% reused), %llu retries\n",
         (unsigned long long)st.connects, (unsigned long long)st.sent,
         st.sent ? 100.0 * (double)st.reused / (double)st.sent : 0.0,
         (unsigned long long)st.retries);
  printf("latency:     p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
         (double)braid_histogram_percentile(&st.latency_us, 50) / 1000.0,
         (double)braid_histogram_percentile(&st.latency_us, 90) / 1000.0,
         (double)braid_histogram_percentile(&st.latency_us, 99) / 1000.0,
         (double)st.latency_us.max / 1000.0);
}

/* ---- main ------------------------------------------------------------------------------ */

static int usage(void) {
  fprintf(stderr, "usage: http_get [-c CONCURRENCY] [-n REQUESTS] [--compressed] [--pipeline] "
                  "[-o FILE] URL...\n");
  return 2;
}

/* host and port of an http:// URL, for braid_http_client_pipeline(). */
static int host_port(const char *url, char *host, size_t cap, int *port) {
  if (strncmp(url, "http://", 7) != 0)
    return -1;
  const char *h = url + 7;
  size_t n = strcspn(h, "/?#");
  const char *colon = h[0] == '[' ? strstr(h, "]:") : memchr(h, ':', n);
  if (colon && h[0] == '[')
    colon++;
  size_t hl = colon && (size_t)(colon - h) < n ? (size_t)(colon - h) : n;
  if (hl >= cap)
    return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = colon && (size_t)(colon - h) < n ? atoi(colon + 1) : 80;
  return 0;
}

int main(int argc, char **argv) {
  run_t r;
  memset(&r, 0, sizeof(r));
  long concurrency = 1;
  int compressed = 0, pipeline = 0;
  r.urls = calloc((size_t)argc, sizeof(char *));
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-c") && i + 1 < argc)
      concurrency = atol(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      r.total = atol(argv[++i]);
    else if (!strcmp(argv[i], "-o") && i + 1 < argc)
      r.out_path = argv[++i];
    else if (!strcmp(argv[i], "--compressed"))
      compressed = 1;
    else if (!strcmp(argv[i], "--pipeline"))
      pipeline = 1;
    else if (argv[i][0] == '-')
      return free(r.urls), usage();
    else
      r.urls[r.nurls++] = argv[i];
  }
  if (r.nurls == 0 || concurrency < 1 || r.total < 0)
    return free(r.urls), usage();
  if (r.total == 0)
    r.total = r.nurls;
  if (r.out_path && (r.nurls != 1 || r.total != 1)) {
    fprintf(stderr, "-o needs exactly one URL and one request\n");
    free(r.urls);
    return 2;
  }

  if (braid_loop_new(&r.loop, NULL) != 0)
    return 1;
  /* The session: up to CONCURRENCY connections per host, kept alive between requests. */
  braid_http_client_opts_t o;
  braid_http_client_opts_init(&o);
  o.max_per_host = (unsigned)(concurrency < 65536 ? concurrency : 65536);
  o.req.decompress = compressed; /* Accept-Encoding: gzip, deflate, decoded on arrival */
  o.req.header_timeout_ms = 30000;
  r.req_opts = o.req;
  int rc = braid_http_client_new(&r.client, r.loop, &o);
  if (rc != 0) {
    fprintf(stderr, "http_get: %s\n", braid_strerror(rc));
    return 1;
  }
  if (pipeline) {
    for (int i = 0; i < r.nurls; i++) {
      char host[256];
      int port;
      if (host_port(r.urls[i], host, sizeof(host), &port) == 0)
        braid_http_client_pipeline(r.client, host, port, 16);
    }
  }

  /* A progress line four times a second, on the loop's own libuv loop. */
  uv_timer_init(braid_loop_uv(r.loop), &r.progress);
  r.progress.data = &r;
  uv_timer_start(&r.progress, on_progress, 250, 250);
  r.t0_ms = braid_loop_now_ms(r.loop);
  for (long i = 0; i < concurrency && i < r.total; i++)
    start_next(&r);

  braid_loop_run(r.loop, UV_RUN_DEFAULT);
  if (braid_loop_close(r.loop) != 0)
    return 1;
  free(r.urls);
  return r.errors || r.status_counts[4] || r.status_counts[5] ? 1 : 0;
}
