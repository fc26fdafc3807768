/* echo_client: a load client for echo_server, read top to bottom.
 *
 *   echo_client --host ADDR --port N [--conns C] [--requests R] [--size B] [--pipeline D]
 *
 * Opens C connections and sends R requests of B bytes in all, split across the connections;
 * each connection keeps up to D requests in flight (D = 1 is ping-pong). Every echoed byte is
 * checked against what was sent. At the end it prints requests per second and latency
 * percentiles, and exits 0; any mismatch, error or early close exits 1.
 *
 * What it shows: braid_connect(), a connection's read/close callbacks, pipelining on one
 * connection (writes issued together leave in one writev), and latency histograms. */
#include <braid.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One connection and its share of the requests. */
typedef struct {
  int index;
  braid_conn_t *conn;
  uint64_t requests; /* this connection's share */
  uint64_t sent;     /* requests written so far */
  uint64_t done;     /* responses fully received and checked */
  uint64_t rx_bytes; /* bytes received so far */
  uint64_t *sent_ns; /* send time of each request in flight, a ring of pipeline entries */
  uint8_t *request;  /* scratch buffer for building one request */
  int failed;        /* an error on this connection was reported */
} client_t;

/* What every connection shares. One loop, one thread: no locking needed. */
static struct {
  size_t size;
  unsigned pipeline;
  uint64_t done; /* responses, all connections */
  int failed;
  uint64_t start_ns, end_ns;
  braid_histogram_t latency_ns;
} run;

/* Byte i of request n on connection c. It varies with all three, so a byte echoed to the
 * wrong connection, out of order or shifted shows up as a mismatch. */
static uint8_t pattern(int c, uint64_t n, size_t i) {
  return (uint8_t)(n * 131u + i * 7u + (i >> 8) + (unsigned)c * 17u);
}

/* Reports the first error of a connection (later ones are usually its consequences). */
static void report(client_t *cl, const char *what) {
  if (!cl->failed)
    fprintf(stderr, "echo_client: connection %d: %s\n", cl->index, what);
  cl->failed = run.failed = 1;
}

static void fail(client_t *cl, const char *what) {
  report(cl, what);
  braid_conn_close(cl->conn);
}

/* ---- requests and responses ------------------------------------------------------------ */

/* Writes the next request. The write copies the bytes, so the scratch buffer can be reused
 * at once; several writes issued in one callback still leave in one writev(). */
static void send_request(client_t *cl) {
  for (size_t i = 0; i < run.size; i++)
    cl->request[i] = pattern(cl->index, cl->sent, i);
  cl->sent_ns[cl->sent % run.pipeline] = uv_hrtime();
  int rc = braid_conn_write(cl->conn, cl->request, run.size, NULL, NULL);
  if (rc != 0) {
    fail(cl, braid_strerror(rc));
    return;
  }
  cl->sent++;
}

/* A response is complete: record its latency and send the next request, if any. */
static void on_response(client_t *cl) {
  uint64_t now = uv_hrtime();
  braid_histogram_record(&run.latency_ns, now - cl->sent_ns[cl->done % run.pipeline]);
  cl->done++;
  run.done++;
  if (cl->sent < cl->requests)
    send_request(cl);
  if (cl->done == cl->requests) {
    run.end_ns = now;
    braid_conn_close(cl->conn);
  }
}

/* Echoed bytes arrive in chunks of any size: check each byte against the request it
 * belongs to, and count a response whenever a whole one has arrived. */
static void on_read(braid_conn_t *conn, int status, const uint8_t *data, size_t len, void *arg) {
  client_t *cl = arg;
  if (status < 0) {
    fail(cl, braid_strerror(status));
    return;
  }
  for (size_t i = 0; i < len; i++) {
    uint64_t n = cl->rx_bytes / run.size;
    size_t offset = (size_t)(cl->rx_bytes % run.size);
    if (n >= cl->sent || data[i] != pattern(cl->index, n, offset)) {
      char what[96];
      snprintf(what, sizeof what, "mismatch at byte %zu of response %" PRIu64, offset, n);
      fail(cl, what);
      return;
    }
    cl->rx_bytes++;
    if (offset + 1 == run.size) {
      on_response(cl);
      if (cl->done == cl->requests && i + 1 < len)
        fail(cl, "more bytes than were sent");
      if (!braid_conn_is_open(conn))
        return;
    }
  }
}

/* The server closed its side: no more responses can come. */
static void on_eof(braid_conn_t *conn, void *arg) {
  client_t *cl = arg;
  if (cl->done != cl->requests)
    fail(cl, "server closed the connection early");
  else
    braid_conn_close(conn);
}

static void on_close(braid_conn_t *conn, int status, void *arg) {
  client_t *cl = arg;
  (void)conn;
  if (status != 0)
    report(cl, braid_strerror(status));
  else if (cl->done != cl->requests)
    report(cl, "closed before every response arrived");
}

/* ---- connecting ------------------------------------------------------------------------ */

/* Connected (or not): set the callbacks, start reading, and fill the pipeline. */
static void on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  client_t *cl = arg;
  (void)req;
  if (status != 0) {
    fprintf(stderr, "echo_client: connection %d: %s\n", cl->index, braid_strerror(status));
    run.failed = 1;
    return;
  }
  cl->conn = conn;
  braid_conn_callbacks_t cbs = {.on_read = on_read, .on_eof = on_eof, .on_close = on_close};
  braid_conn_set_callbacks(conn, &cbs);
  braid_conn_set_data(conn, cl); /* every callback of conn gets cl */
  int rc = braid_conn_read_start(conn);
  if (rc != 0) {
    fail(cl, braid_strerror(rc));
    return;
  }
  while (cl->sent < cl->requests && cl->sent < run.pipeline && braid_conn_is_open(conn))
    send_request(cl);
}

/* ---- main ------------------------------------------------------------------------------ */

typedef struct {
  const char *host;
  long port, conns, requests, size, pipeline;
} args_t;

/* Parses "--name value" pairs. Returns 0, or -1 after printing what is wrong. */
static int parse_args(int argc, char **argv, args_t *a) {
  struct {
    const char *name;
    long *value;
    long min, max;
  } nums[] = {
      {"--port", &a->port, 1, 65535},
      {"--conns", &a->conns, 1, 10000},
      {"--requests", &a->requests, 1, 1000000000},
      {"--size", &a->size, 1, 64L << 20},
      {"--pipeline", &a->pipeline, 1, 100000},
  };
  for (int i = 1; i < argc; i += 2) {
    const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    int known = 0;
    if (value && strcmp(name, "--host") == 0) {
      a->host = value;
      known = 1;
    }
    for (size_t k = 0; value && !known && k < sizeof nums / sizeof nums[0]; k++) {
      if (strcmp(name, nums[k].name) != 0)
        continue;
      char *end;
      long n = strtol(value, &end, 10);
      if (!*value || *end || n < nums[k].min || n > nums[k].max) {
        fprintf(stderr, "echo_client: %s must be %ld..%ld\n", name, nums[k].min, nums[k].max);
        return -1;
      }
      *nums[k].value = n;
      known = 1;
    }
    if (!known) {
      fprintf(stderr, "usage: echo_client --host ADDR --port N [--conns C] [--requests R]"
                      " [--size B] [--pipeline D]\n");
      return -1;
    }
  }
  if (!a->host || !a->port) {
    fprintf(stderr, "echo_client: --host and --port are required\n");
    return -1;
  }
  return 0;
}

static void print_report(const args_t *a) {
  double seconds = (double)(run.end_ns - run.start_ns) / 1e9;
  const braid_histogram_t *h = &run.latency_ns;
  printf("%" PRIu64 " requests of %zu B on %ld connection(s), pipeline %u: %.3f s\n", run.done,
         run.size, a->conns, run.pipeline, seconds);
  printf("  %.0f requests/s, %.1f MB/s each way\n", (double)run.done / seconds,
         (double)run.done * (double)run.size / seconds / 1e6);
  printf("  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
         (double)braid_histogram_percentile(h, 50) / 1e3,
         (double)braid_histogram_percentile(h, 90) / 1e3,
         (double)braid_histogram_percentile(h, 99) / 1e3,
         (double)braid_histogram_percentile(h, 99.9) / 1e3, (double)h->max / 1e3);
}

int main(int argc, char **argv) {
  args_t args = {.conns = 1, .requests = 10000, .size = 64, .pipeline = 1};
  if (parse_args(argc, argv, &args) != 0)
    return 2;
  if (args.conns > args.requests)
    args.conns = args.requests; /* no idle connections */
  run.size = (size_t)args.size;
  run.pipeline = (unsigned)args.pipeline;

  braid_loop_t *loop;
  int rc = braid_loop_new(&loop, NULL);
  if (rc != 0) {
    fprintf(stderr, "echo_client: %s\n", braid_strerror(rc));
    return 1;
  }

  /* A stuck server must not hang us: give up on a connection that receives nothing for
   * 10 s (it then closes with BRAID_ETIMEDOUT). */
  braid_client_opts_t opts;
  braid_client_opts_init(&opts);
  opts.connect_timeout_ms = 5000;
  opts.conn.read_timeout_ms = 10000;

  client_t *clients = calloc((size_t)args.conns, sizeof *clients);
  if (!clients) {
    braid_loop_close(loop);
    return 1;
  }
  run.start_ns = run.end_ns = uv_hrtime();
  for (long c = 0; c < args.conns; c++) {
    client_t *cl = &clients[c];
    cl->index = (int)c;
    /* Split the requests evenly; the first (requests % conns) connections take one more. */
    cl->requests = (uint64_t)(args.requests / args.conns + (c < args.requests % args.conns));
    cl->sent_ns = calloc(run.pipeline, sizeof *cl->sent_ns);
    cl->request = malloc(run.size);
    if (!cl->sent_ns || !cl->request) {
      fprintf(stderr, "echo_client: out of memory\n");
      run.failed = 1;
      break;
    }
    rc = braid_connect(NULL, loop, args.host, (int)args.port, &opts, on_connect, cl);
    if (rc != 0) {
      fprintf(stderr, "echo_client: connect: %s\n", braid_strerror(rc));
      run.failed = 1;
      break;
    }
  }

  /* Runs until every connection has finished (or failed) and closed. */
  braid_loop_run(loop, UV_RUN_DEFAULT);
  rc = braid_loop_close(loop);
  if (rc != 0) {
    fprintf(stderr, "echo_client: closing the loop: %s\n", braid_strerror(rc));
    run.failed = 1;
  }
  if (!run.failed)
    print_report(&args);

  for (long c = 0; c < args.conns; c++) {
    free(clients[c].sent_ns);
    free(clients[c].request);
  }
  free(clients);
  return run.failed ? 1 : 0;
}
