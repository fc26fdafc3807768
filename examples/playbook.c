/* playbook: the network-performance playbook, measured on your machine.
 *
 *   playbook [--seconds S] [--quick] [--json] [--workers N] [--cost-us U]
 *
 * One server process (forked at start, on loopback, ephemeral ports) and one client. The
 * client plays the same workload again and again, each row adding one technique to the
 * row before it:
 *
 *   1 naive           a new connection per request, one request per round trip
 *   2 keep-alive pool 8 pooled connections (braid_pool), still one request each at a time
 *   3 pipelining      up to 1024 requests in flight on each pooled connection
 *   4 batching        the requests made in one loop iteration share one frame (braid_batcher)
 *   5 gzip            answers gzip-compressed (fewer bytes on the wire, more CPU)
 *   6 memoized        the costly render is cached, with its compressed form (braid_cache)
 *   7 worker threads  the server accepts and serves on N threads (SO_REUSEPORT)
 *   8 HTTP/1.1        the same as HTTP requests to braid's http server: keep-alive,
 *                     pipelined, gzip (Accept-Encoding), memoized (braid_http_respond_memo)
 *
 * The workload: 64 callers in a closed loop (each sends its next request when the last one
 * was answered), asking for one of 64 documents by key; a document is about 2 KiB of JSON
 * (compressible) that the server "renders" at a cost of --cost-us microseconds of CPU
 * (default 20). Every answer is checked byte for byte against the document the client
 * expects: one wrong byte fails the demo (exit 1).
 *
 * Each row shows requests/s, the median and 99th percentile latency (from the call to its
 * answer), the bytes on the wire per request (payload bytes through the client's sockets,
 * both directions; TCP/IP headers not counted) and the ratio of its rate to the naive one.
 *
 * The HTTP row drives the server with a small HTTP/1.1 client written here on braid's
 * connections (pipelined requests on keep-alive connections, Content-Length bodies only):
 * braid's own HTTP client is not part of this version. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem; and uv.h wants POSIX under -std=c11 */
#endif
#include <braid.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define KEYS 64      /* distinct documents */
#define CALLERS 64   /* concurrent callers, closed loop */
#define CONNS 8      /* pooled connections (and HTTP connections) */
#define DOC_MAX 4096 /* a document's largest size */
#define HOST "127.0.0.1"

/* ---- the workload: documents and their render ------------------------------------------------ */

/* Document `key`: JSON-like text of about 2 KiB, the same in the server and the client. */
static size_t doc_make(unsigned key, char *out) {
  uint64_t s = 0x9e3779b97f4a7c15ull * (key + 1);
  size_t n = (size_t)snprintf(out, DOC_MAX, "{\"id\":%u,\"items\":[", key);
  while (n < 2000) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    n += (size_t)snprintf(
        out + n, DOC_MAX - n, "{\"sku\":\"A%04u\",\"qty\":%u,\"price\":%u.%02u,\"ok\":%s},",
        (unsigned)(s % 10000), (unsigned)(s >> 20) % 9 + 1, (unsigned)(s >> 30) % 500,
        (unsigned)(s >> 40) % 100, (s >> 50) & 1 ? "true" : "false");
  }
  out[n - 1] = ']';
  out[n++] = '}';
  return n;
}

/* The "costly" part of a render: CPU work calibrated at start to take about --cost-us. */
static uint64_t burn_rounds;
static volatile uint64_t burn_sink;

static void burn(uint64_t rounds) {
  uint64_t x = burn_sink | 1;
  for (uint64_t i = 0; i < rounds; i++)
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  burn_sink = x;
}

static void calibrate(double cost_us) {
  uint64_t rounds = 1 << 20, t0 = uv_hrtime();
  burn(rounds);
  double ns = (double)(uv_hrtime() - t0);
  burn_rounds = ns > 0 ? (uint64_t)(cost_us * 1000.0 * (double)rounds / ns) : 0;
}

/* ---- the server process ---------------------------------------------------------------------- */

/* One listener per configuration, so the client picks the technique by port. */
enum { SRV_PLAIN, SRV_GZIP, SRV_MEMO, SRV_WORKERS, SRV_HTTP, NSRV };

typedef struct {
  int gzip, memo;
} srvcfg_t;

static srvcfg_t cfgs[NSRV] = {
    [SRV_PLAIN] = {0, 0},   [SRV_GZIP] = {1, 0}, [SRV_MEMO] = {1, 1},
    [SRV_WORKERS] = {1, 1}, [SRV_HTTP] = {1, 1},
};

/* A test hook (tests/examples/test_playbook.py): BRAID_PLAYBOOK_CORRUPT=N makes server N
 * (0 plain .. 4 http) flip one byte of every answer, which the client must catch. */
static int corrupt_srv = -1;

/* Per-thread state: with worker threads every loop has its own cache and gzip context. */
static _Thread_local braid_cache_t *tl_cache[NSRV];
static _Thread_local braid_gzip_t *tl_gzip;

/* Renders document key into a blob: one byte of encoding (0 identity, 1 gzip), then the
 * body. This is the loader the memo calls on a miss. */
static int render(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  const srvcfg_t *cfg = arg;
  unsigned k;
  if (key_len != sizeof(k))
    return BRAID_EINVAL;
  memcpy(&k, key, sizeof(k));
  char doc[DOC_MAX];
  size_t n = doc_make(k, doc);
  burn(burn_rounds);
  if (!cfg->gzip)
    goto identity;
  if (!tl_gzip) {
    braid_gzip_opts_t go;
    braid_gzip_opts_init(&go);
    go.level = 1; /* on a network path speed matters more than the last few percent */
    if (braid_gzip_new(&tl_gzip, &go) != 0)
      return BRAID_ENOMEM;
  }
  uint8_t out[1 + DOC_MAX + 64];
  size_t zlen;
  if (braid_gzip_compress(tl_gzip, doc, n, out + 1, sizeof(out) - 1, &zlen) != 0 || zlen >= n)
    goto identity;
  out[0] = 1;
  return braid_blob_copy(value, out, 1 + zlen);
identity:
  if (braid_blob_new(value, 1 + n) != 0)
    return BRAID_ENOMEM;
  uint8_t *p = braid_blob_data(*value);
  p[0] = 0;
  memcpy(p + 1, doc, n);
  return 0;
}

/* The HTTP route's loader: the plain document (the HTTP server compresses, and caches the
 * compressed variant next to it). */
static int render_plain(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  unsigned k;
  if (key_len != sizeof(k))
    return BRAID_EINVAL;
  memcpy(&k, key, sizeof(k));
  char doc[DOC_MAX];
  size_t n = doc_make(k, doc);
  burn(burn_rounds);
  if (corrupt_srv == SRV_HTTP)
    doc[n / 2] ^= 0x20;
  return braid_blob_copy(value, doc, n);
}

static void memo_never(braid_cache_t *c, int status, braid_blob_t *v, void *arg) {
  (void)c, (void)status, (void)v, (void)arg; /* synchronous loaders never leave a wait */
}

static braid_cache_t *thread_cache(int srv, braid_loop_t *loop) {
  if (!tl_cache[srv]) {
    braid_cache_opts_t co;
    braid_cache_opts_init(&co);
    co.max_entries = 4 * KEYS;
    if (braid_cache_new(&tl_cache[srv], loop, &co) != 0)
      return NULL;
  }
  return tl_cache[srv];
}

/* The answer to one request: rendered now, or from the memo. */
static int answer(int srv, braid_loop_t *loop, const uint8_t *data, size_t len,
                  braid_blob_t **out) {
  unsigned key;
  if (len != sizeof(key))
    return BRAID_EINVAL;
  memcpy(&key, data, sizeof(key));
  if (key >= KEYS)
    return BRAID_EINVAL;
  if (!cfgs[srv].memo)
    return render(&key, sizeof(key), out, &cfgs[srv]);
  braid_cache_t *cache = thread_cache(srv, loop);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = render, .arg = &cfgs[srv]};
  return cache ? braid_cache_memo(cache, &key, sizeof(key), &ld, out, memo_never, NULL)
               : BRAID_ENOMEM;
}

static void reply(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len) {
  int srv = (int)(intptr_t)braid_rpc_get_data(rpc);
  braid_blob_t *blob;
  if (answer(srv, braid_conn_loop(braid_rpc_conn(rpc)), data, len, &blob) != 0) {
    braid_rpc_respond_error(req, BRAID_WIRE_BAD_REQUEST, "bad key");
    return;
  }
  if (srv == corrupt_srv) {
    uint8_t bad[1 + DOC_MAX + 64];
    size_t n = braid_blob_len(blob);
    memcpy(bad, braid_blob_data(blob), n);
    bad[n / 2] ^= 0x20;
    braid_rpc_respond(req, bad, n);
    braid_blob_unref(blob);
    return;
  }
  braid_rpc_respond(req, braid_blob_data(blob), braid_blob_len(blob));
  braid_blob_unref(blob);
}

static void on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                       void *arg) {
  (void)arg;
  reply(rpc, req, data, len);
}

static void on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                     uint32_t count, void *arg) {
  (void)arg;
  for (uint32_t i = 0; i < count; i++)
    reply(rpc, reqs[i], items[i].data, items[i].len);
}

static void on_connection(braid_server_t *server, braid_conn_t *conn, void *data) {
  (void)server;
  braid_rpc_callbacks_t cbs = {.on_request = on_request, .on_batch = on_batch};
  braid_rpc_t *rpc;
  if (braid_rpc_server(&rpc, conn, NULL, &cbs, data) != 0)
    braid_conn_close(conn);
}

/* GET /doc?k=N */
static void on_doc(braid_http_req_t *req, void *arg) {
  (void)arg;
  const char *q = braid_http_req_query(req);
  char *end;
  long k = strncmp(q, "k=", 2) == 0 ? strtol(q + 2, &end, 10) : -1;
  if (k < 0 || k >= KEYS || *end) {
    braid_http_respond(req, 400, NULL, 0, "bad key\n", 8);
    return;
  }
  unsigned key = (unsigned)k;
  braid_cache_t *cache = thread_cache(SRV_HTTP, braid_http_req_loop(req));
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = render_plain};
  if (!cache ||
      braid_http_respond_memo(req, cache, &key, sizeof(key), &ld, "application/json") != 0)
    braid_http_respond(req, 500, NULL, 0, "error\n", 6);
}

/* Starts every server and writes their ports to fd; then serves until killed. */
static int server_main(int fd, double cost_us, unsigned workers) {
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the demo */
#endif
  calibrate(cost_us);
  const char *corrupt = getenv("BRAID_PLAYBOOK_CORRUPT");
  if (corrupt && *corrupt)
    corrupt_srv = atoi(corrupt);
  braid_loop_t *loop;
  if (braid_loop_new(&loop, NULL) != 0)
    return 1;
  braid_http_server_opts_t ho;
  braid_http_server_opts_init(&ho);
  ho.keepalive_requests = 0; /* the demo's connections live for the whole row */
  ho.compress_level = 1;     /* as the rpc rows */
  ho.compress_min_bytes = 256;
  braid_http_server_t *http;
  if (braid_http_server_new(&http, loop, &ho) != 0 ||
      braid_http_server_route(http, "GET", "/doc", BRAID_HTTP_EXACT, on_doc, NULL) != 0)
    return 1;
  char line[128];
  int off = snprintf(line, sizeof(line), "ports");
  for (int i = 0; i < NSRV; i++) {
    braid_server_opts_t so;
    braid_server_opts_init(&so);
    so.sockopts.backlog = 4096; /* the naive row connects hard */
    so.workers = i == SRV_WORKERS || i == SRV_HTTP ? workers : 1;
    braid_server_t *s;
    int rc = i == SRV_HTTP ? braid_server_new(&s, loop, &so, braid_http_server_on_connection, http)
                           : braid_server_new(&s, loop, &so, on_connection, (void *)(intptr_t)i);
    if (rc != 0 || braid_server_listen(s, HOST, 0) != 0)
      return 1;
    off += snprintf(line + off, sizeof(line) - (size_t)off, " %d", braid_server_port(s));
  }
  line[off++] = '\n';
  if (write(fd, line, (size_t)off) != off)
    return 1;
  close(fd);
  return braid_loop_run(loop, UV_RUN_DEFAULT); /* until the client kills us */
}

/* ---- the client: rows ------------------------------------------------------------------------ */

enum {
  ROW_NAIVE,
  ROW_POOL,
  ROW_PIPELINE,
  ROW_BATCH,
  ROW_GZIP,
  ROW_MEMO,
  ROW_WORKERS,
  ROW_HTTP,
  NROWS
};

static const struct {
  const char *name, *adds;
  int srv;
} row_info[NROWS] = {
    {"naive", "a new connection per request, one request per round trip", SRV_PLAIN},
    {"keep-alive pool", "8 pooled connections, one request each at a time", SRV_PLAIN},
    {"pipelining", "up to 1024 requests in flight per pooled connection", SRV_PLAIN},
    {"batching", "a loop iteration's requests share one frame", SRV_PLAIN},
    {"gzip", "answers gzip-compressed (level 1)", SRV_GZIP},
    {"memoized", "the costly render cached, compressed form included", SRV_MEMO},
    {"worker threads", "the server on N threads (SO_REUSEPORT)", SRV_WORKERS},
    {"HTTP/1.1", "the same over braid's HTTP server (keep-alive, pipelined)", SRV_HTTP},
};

typedef struct row_s row_t;

typedef struct {
  row_t *row;
  unsigned idx, seq, key;
  uint64_t t0; /* when its current request was made */
  int busy;
} caller_t;

/* A connection seen by a row, for its bytes on the wire (stats read at each answer). */
typedef struct {
  const braid_conn_t *conn;
  uint64_t bytes;
} seen_t;

typedef struct hconn_s hconn_t;

struct row_s {
  int id;
  int port;
  uint64_t measure_from, end; /* ns */
  int stopping;
  uint64_t done, measured, bytes;
  braid_histogram_t lat; /* ns, measured window only */
  caller_t callers[CALLERS];
  braid_pool_t *pool;
  braid_pool_lease_t *leases[CONNS];
  braid_rpc_t *leased[CONNS];
  braid_batcher_t *batchers[CONNS];
  unsigned acquired, acquire_failed;
  int pool_closed;
  seen_t seen[256];
  unsigned nseen;
  hconn_t *hconns;
  unsigned hopen, hclosed;
  uv_timer_t timer; /* the progress line, and the end of the row */
  /* results */
  double rps, p50_us, p99_us, bytes_per_req, seconds, server_cpu_s;
};

static braid_loop_t *loop;
static int ports[NSRV];
static char expected[KEYS][DOC_MAX];
static size_t expected_len[KEYS];
static braid_gzip_t *inflater;
static int failed; /* a wrong answer or an error: the demo fails */
static char failure[256];
static int tty, json_out;
static pid_t server_pid;

static void fail(row_t *r, const char *what, unsigned key) {
  if (!failed)
    snprintf(failure, sizeof(failure), "row %s: %s (key %u)", row_info[r->id].name, what, key);
  failed = 1;
  r->stopping = 1;
}

/* Checks one answer: encoding byte, then the document (inflated when gzip'd). Returns NULL
 * when it is right, else what is wrong. */
static const char *check_rpc_answer(unsigned key, const uint8_t *data, size_t len) {
  if (len < 1)
    return "empty answer";
  if (data[0] == 1) {
    char doc[DOC_MAX];
    size_t n;
    if (braid_gzip_decompress_into(inflater, data + 1, len - 1, doc, sizeof(doc), &n) != 0)
      return "corrupt gzip answer";
    return n == expected_len[key] && memcmp(doc, expected[key], n) == 0 ? NULL
                                                                        : "wrong bytes (gzip)";
  }
  return data[0] == 0 && len - 1 == expected_len[key] &&
                 memcmp(data + 1, expected[key], len - 1) == 0
             ? NULL
             : "wrong bytes";
}

/* The cumulative bytes of conn, kept per connection; the row sums them at its end. */
static void note_bytes(row_t *r, const braid_conn_t *conn) {
  if (!conn)
    return;
  braid_conn_stats_t st;
  braid_conn_stats(conn, &st);
  for (unsigned i = 0; i < r->nseen; i++)
    if (r->seen[i].conn == conn) {
      r->seen[i].bytes = st.bytes_read + st.bytes_written;
      return;
    }
  if (r->nseen < sizeof(r->seen) / sizeof(r->seen[0]))
    r->seen[r->nseen++] = (seen_t){conn, st.bytes_read + st.bytes_written};
}

/* A request completed well at time now: count it, and its latency inside the window. */
static void completed(caller_t *c, uint64_t now) {
  row_t *r = c->row;
  r->done++;
  if (now >= r->measure_from && now < r->end) {
    r->measured++;
    braid_histogram_record(&r->lat, now - c->t0);
  }
  if (now >= r->end)
    r->stopping = 1;
}

static void caller_next(caller_t *c);

/* naive: connect, call, close, for every request */
static void naive_closed(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc, (void)status;
  caller_t *c = arg;
  c->busy = 0;
  caller_next(c);
}

static void naive_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res, void *arg) {
  caller_t *c = arg;
  if (status != 0) {
    fail(c->row, braid_strerror(status), c->key);
  } else {
    const char *bad = check_rpc_answer(c->key, res->data, res->len);
    if (bad)
      fail(c->row, bad, c->key);
    braid_conn_stats_t st;
    braid_conn_stats(braid_rpc_conn(rpc), &st);
    c->row->bytes += st.bytes_read + st.bytes_written;
    completed(c, uv_hrtime());
  }
  braid_rpc_close(rpc); /* naive_closed goes on */
}

static void naive_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  caller_t *c = arg;
  braid_rpc_callbacks_t cbs = {.on_close = naive_closed};
  braid_rpc_t *rpc;
  if (status != 0 || braid_rpc_client(&rpc, conn, NULL, &cbs, c) != 0) {
    if (status == 0)
      braid_conn_close(conn);
    fail(c->row, status ? braid_strerror(status) : "rpc client", c->key);
    c->busy = 0;
    return;
  }
  if (braid_rpc_call(rpc, &c->key, sizeof(c->key), 0, naive_answer, c) != 0) {
    fail(c->row, "call refused", c->key);
    braid_rpc_close(rpc);
  }
}

/* pooled rows: the answer comes with the channel that carried it */
static void pooled_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res, void *arg) {
  caller_t *c = arg;
  c->busy = 0;
  const char *bad =
      status != 0 ? braid_strerror(status) : check_rpc_answer(c->key, res->data, res->len);
  if (bad) {
    fail(c->row, bad, c->key);
    return;
  }
  note_bytes(c->row, rpc ? braid_rpc_conn(rpc) : NULL);
  completed(c, uv_hrtime());
  caller_next(c);
}

static void http_send(caller_t *c);

/* Makes the caller's next request, unless the row is over. */
static void caller_next(caller_t *c) {
  row_t *r = c->row;
  if (r->stopping || failed)
    return;
  c->key = (c->idx * 7 + c->seq++ * 13) % KEYS;
  c->t0 = uv_hrtime();
  c->busy = 1;
  int rc = 0;
  switch (r->id) {
  case ROW_NAIVE:
    rc = braid_connect(NULL, loop, HOST, r->port, NULL, naive_connected, c);
    break;
  case ROW_POOL:
  case ROW_PIPELINE:
    rc = braid_pool_call(r->pool, &c->key, sizeof(c->key), BRAID_POOL_IDEMPOTENT, 0, pooled_answer,
                         c);
    break;
  case ROW_HTTP:
    http_send(c);
    break;
  default: /* batching, and every row after it */
    rc = braid_batcher_call(r->batchers[c->idx % CONNS], &c->key, sizeof(c->key), pooled_answer, c);
  }
  if (rc != 0) {
    c->busy = 0;
    fail(r, braid_strerror(rc), c->key);
  }
}

/* ---- the HTTP row: a minimal HTTP/1.1 client on braid connections ---------------------------- */

struct hconn_s {
  row_t *row;
  braid_conn_t *conn;
  caller_t *fifo[CALLERS]; /* requests sent and not answered, oldest first */
  unsigned head, count;
  char buf[65536];
  size_t len;
  uint64_t bytes;
};

static void http_send(caller_t *c) {
  hconn_t *h = &c->row->hconns[c->idx % CONNS];
  char req[128];
  int n =
      snprintf(req, sizeof(req),
               "GET /doc?k=%u HTTP/1.1\r\nHost: " HOST "\r\nAccept-Encoding: gzip\r\n\r\n", c->key);
  h->fifo[(h->head + h->count++) % CALLERS] = c;
  h->bytes += (uint64_t)n;
  if (braid_conn_write(h->conn, req, (size_t)n, NULL, NULL) != 0)
    fail(c->row, "write failed", c->key);
}

/* Parses one complete response at the start of h->buf; returns its length, 0 when more bytes
 * are needed, -1 when it is not a response we accept. */
static long http_parse(hconn_t *h, caller_t *c) {
  char *end = memmem(h->buf, h->len, "\r\n\r\n", 4);
  if (!end)
    return h->len > 16384 ? -1 : 0;
  size_t head = (size_t)(end - h->buf) + 4;
  if (h->len < 12 || memcmp(h->buf, "HTTP/1.1 200", 12) != 0)
    return -1;
  long clen = -1;
  int gz = 0;
  char *limit = h->buf + head - 2; /* the empty line */
  for (char *p = (char *)memchr(h->buf, '\n', head) + 1; p < limit;
       p = (char *)memchr(p, '\n', (size_t)(limit + 2 - p)) + 1) {
    if (strncasecmp(p, "Content-Length:", 15) == 0)
      clen = strtol(p + 15, NULL, 10);
    else if (strncasecmp(p, "Content-Encoding:", 17) == 0)
      gz = strncmp(p + 17 + strspn(p + 17, " "), "gzip", 4) == 0;
  }
  if (clen < 0 || clen > DOC_MAX)
    return -1;
  if (h->len < head + (size_t)clen)
    return 0;
  const uint8_t *body = (const uint8_t *)h->buf + head;
  char doc[DOC_MAX];
  size_t n = (size_t)clen;
  if (gz && braid_gzip_decompress_into(inflater, body, n, doc, sizeof(doc), &n) != 0)
    return -1;
  if (n != expected_len[c->key] || memcmp(gz ? doc : (const char *)body, expected[c->key], n))
    return -1;
  return (long)(head + (size_t)clen);
}

static void http_read(braid_conn_t *conn, int status, const uint8_t *data, size_t len, void *arg) {
  (void)conn;
  hconn_t *h = arg;
  if (status < 0) { /* the connection failed: its pending callers will get no answer */
    if (h->count)
      fail(h->row, braid_strerror(status), 0);
    for (; h->count; h->count--, h->head = (h->head + 1) % CALLERS)
      h->fifo[h->head]->busy = 0;
    return;
  }
  h->bytes += len;
  while (len > 0) {
    size_t take = len < sizeof(h->buf) - h->len ? len : sizeof(h->buf) - h->len;
    memcpy(h->buf + h->len, data, take);
    h->len += take, data += take, len -= take;
    for (;;) {
      if (!h->count) {
        if (h->len)
          fail(h->row, "an answer nobody asked for", 0);
        return;
      }
      caller_t *c = h->fifo[h->head];
      long used = http_parse(h, c);
      if (used < 0) { /* the stream cannot be trusted further: drop what waits on it */
        fail(h->row, "wrong HTTP answer", c->key);
        h->len = 0;
        for (; h->count; h->count--, h->head = (h->head + 1) % CALLERS)
          h->fifo[h->head]->busy = 0;
        return;
      }
      if (used == 0)
        break;
      memmove(h->buf, h->buf + used, h->len - (size_t)used);
      h->len -= (size_t)used;
      h->head = (h->head + 1) % CALLERS;
      h->count--;
      c->busy = 0;
      completed(c, uv_hrtime());
      caller_next(c);
    }
  }
}

static void http_closed(braid_conn_t *conn, int status, void *arg) {
  (void)conn, (void)status;
  ((hconn_t *)arg)->row->hclosed++;
}

static void http_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  hconn_t *h = arg;
  if (status != 0) {
    fail(h->row, braid_strerror(status), 0);
    h->row->hclosed++;
    return;
  }
  h->conn = conn;
  braid_conn_callbacks_t cbs = {.on_read = http_read, .on_close = http_closed};
  braid_conn_set_data(conn, h);
  braid_conn_set_callbacks(conn, &cbs);
  braid_conn_read_start(conn);
  h->row->hopen++;
}

/* ---- running a row --------------------------------------------------------------------------- */

static void on_acquired(braid_pool_t *pool, int status, braid_pool_lease_t *lease, braid_rpc_t *rpc,
                        void *arg) {
  (void)pool;
  row_t *r = arg;
  if (status != 0) {
    r->acquire_failed++;
    return;
  }
  r->leases[r->acquired] = lease;
  r->leased[r->acquired++] = rpc;
}

static void on_pool_closed(braid_pool_t *pool, int status, void *arg) {
  (void)pool, (void)status;
  ((row_t *)arg)->pool_closed = 1;
}

static int callers_busy(row_t *r) {
  for (unsigned i = 0; i < CALLERS; i++)
    if (r->callers[i].busy)
      return 1;
  return 0;
}

static double server_cpu(void) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)server_pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')');
  unsigned long long ut, st;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void fmt_int(char *out, size_t cap, double v) { /* 1234567 -> "1,234,567" */
  char tmp[32];
  int n = snprintf(tmp, sizeof(tmp), "%.0f", v), o = 0;
  for (int i = 0; i < n && o + 2 < (int)cap; i++) {
    if (i && (n - i) % 3 == 0)
      out[o++] = ',';
    out[o++] = tmp[i];
  }
  out[o] = 0;
}

static void progress(uv_timer_t *t) {
  row_t *r = t->data;
  uint64_t now = uv_hrtime();
  double secs = now > r->measure_from ? (double)(now - r->measure_from) / 1e9 : 0;
  if (now >= r->end) /* also when every caller waits on something slow */
    r->stopping = 1;
  if (!tty || json_out) /* the live line is for people watching a terminal */
    return;
  char rate[32];
  fmt_int(rate, sizeof(rate), secs > 0 ? (double)r->measured / secs : 0);
  printf("\r\033[K %d  %-16s %s %4.1f s  %s req/s", r->id + 1, row_info[r->id].name,
         now < r->measure_from ? "warming up" : "measuring ", secs, rate);
  fflush(stdout);
}

/* Runs the loop until done(r), or fails the row after a generous deadline. */
static void run_until(row_t *r, int (*done)(row_t *), uint64_t deadline) {
  while (!done(r)) {
    braid_loop_run(loop, UV_RUN_ONCE);
    if (uv_hrtime() > deadline && !failed) {
      fail(r, "stuck: no progress", 0);
      deadline = uv_hrtime() + 10000000000ull; /* give the teardown 10 s more */
    } else if (failed && uv_hrtime() > deadline) {
      fprintf(stderr, "playbook: FAILED: %s (and stuck)\n", failure);
      exit(1);
    }
  }
}

static int all_acquired(row_t *r) {
  return r->acquired + r->acquire_failed == CONNS;
}
static int all_connected(row_t *r) {
  return r->hopen + r->hclosed == CONNS;
}
static int row_over(row_t *r) {
  return r->stopping && !callers_busy(r);
}
static int pool_closed(row_t *r) {
  return r->pool_closed;
}
static int http_all_closed(row_t *r) {
  return r->hclosed == CONNS;
}

static int run_row(row_t *r, double seconds, double warmup) {
  r->port = ports[row_info[r->id].srv];
  uint64_t deadline = uv_hrtime() + (uint64_t)((seconds + warmup + 30) * 1e9);
  /* Set up what the row needs before the clock starts. */
  if (r->id != ROW_NAIVE && r->id != ROW_HTTP) {
    braid_pool_opts_t po;
    braid_pool_opts_init(&po);
    po.max_per_endpoint = po.max_total = po.max_idle = CONNS;
    po.rpc.max_inflight = r->id == ROW_POOL ? 1 : 1024;
    po.max_waiters = 4 * CALLERS;
    if (braid_pool_new(&r->pool, loop, &po) != 0 ||
        braid_pool_add_endpoint(r->pool, HOST, r->port) != 0)
      return -1;
    if (r->id >= ROW_BATCH) {
      for (unsigned i = 0; i < CONNS; i++)
        if (braid_pool_acquire(r->pool, on_acquired, r) != 0)
          return -1;
      run_until(r, all_acquired, deadline);
      if (r->acquire_failed)
        return -1;
      for (unsigned i = 0; i < CONNS; i++)
        if (braid_batcher_new(&r->batchers[i], r->leased[i], NULL) != 0)
          return -1;
    }
  } else if (r->id == ROW_HTTP) {
    r->hconns = calloc(CONNS, sizeof(hconn_t));
    if (!r->hconns)
      return -1;
    for (unsigned i = 0; i < CONNS; i++) {
      r->hconns[i].row = r;
      if (braid_connect(NULL, loop, HOST, r->port, NULL, http_connected, &r->hconns[i]) != 0)
        return -1;
    }
    run_until(r, all_connected, deadline);
  }

  uv_timer_init(braid_loop_uv(loop), &r->timer);
  r->timer.data = r;
  uint64_t start = uv_hrtime();
  r->measure_from = start + (uint64_t)(warmup * 1e9);
  r->end = r->measure_from + (uint64_t)(seconds * 1e9);
  uv_timer_start(&r->timer, progress, 200, 200);
  double cpu0 = server_cpu();
  for (unsigned i = 0; i < CALLERS; i++) {
    r->callers[i] = (caller_t){.row = r, .idx = i};
    caller_next(&r->callers[i]);
  }
  run_until(r, row_over, deadline);
  r->server_cpu_s = server_cpu() - cpu0;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, NULL);
  if (tty && !json_out) {
    printf("\r\033[K");
    fflush(stdout);
  }

  /* Tear down: batchers, leases, the pool, or the HTTP connections. */
  for (unsigned i = 0; i < CONNS; i++) {
    braid_batcher_free(r->batchers[i]);
    if (r->leases[i])
      braid_pool_release(r->leases[i]);
  }
  for (unsigned i = 0; i < r->nseen; i++)
    r->bytes += r->seen[i].bytes;
  if (r->pool) {
    braid_pool_close(r->pool, on_pool_closed, r);
    run_until(r, pool_closed, deadline + 10000000000ull);
  }
  if (r->hconns) {
    for (unsigned i = 0; i < CONNS; i++) {
      r->bytes += r->hconns[i].bytes;
      if (r->hconns[i].conn)
        braid_conn_close(r->hconns[i].conn);
    }
    run_until(r, http_all_closed, deadline + 10000000000ull);
    free(r->hconns);
    r->hconns = NULL;
  }
  braid_loop_run(loop, UV_RUN_NOWAIT);

  r->seconds = seconds;
  r->rps = (double)r->measured / seconds;
  r->p50_us = (double)braid_histogram_percentile(&r->lat, 50) / 1e3;
  r->p99_us = (double)braid_histogram_percentile(&r->lat, 99) / 1e3;
  r->bytes_per_req = r->done ? (double)r->bytes / (double)r->done : 0;
  return failed ? -1 : 0;
}

/* ---- output ---------------------------------------------------------------------------------- */

static void fmt_lat(char *out, size_t cap, double us) {
  if (us < 1000)
    snprintf(out, cap, "%.0f us", us);
  else
    snprintf(out, cap, "%.2f ms", us / 1000);
}

static void print_row(const row_t *r, double naive_rps) {
  char rate[32], p50[32], p99[32], bytes[32];
  fmt_int(rate, sizeof(rate), r->rps);
  fmt_lat(p50, sizeof(p50), r->p50_us);
  fmt_lat(p99, sizeof(p99), r->p99_us);
  fmt_int(bytes, sizeof(bytes), r->bytes_per_req);
  printf(" %d  %-16s %10s %10s %10s %9s B %8.1fx\n", r->id + 1, row_info[r->id].name, rate, p50,
         p99, bytes, naive_rps > 0 ? r->rps / naive_rps : 0);
  fflush(stdout);
}

static void print_header(void) {
  printf(" #  %-16s %10s %10s %10s %11s %9s\n", "technique", "req/s", "p50", "p99", "bytes/req",
         "vs naive");
}

static void print_json(row_t *rows, int nrows, double seconds, double cost_us, unsigned workers) {
  printf("{\"program\":\"playbook\",\"braid\":\"%s\",\"seconds_per_row\":%g,\"callers\":%d,"
         "\"connections\":%d,\"keys\":%d,\"render_cost_us\":%g,\"workers\":%u,\"rows\":[",
         braid_version_string(), seconds, CALLERS, CONNS, KEYS, cost_us, workers);
  for (int i = 0; i < nrows; i++) {
    const row_t *r = &rows[i];
    printf("%s\n {\"row\":%d,\"technique\":\"%s\",\"adds\":\"%s\",\"requests\":%llu,"
           "\"seconds\":%g,\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"bytes_per_request\":%.1f,"
           "\"ratio_to_naive\":%.3f,\"server_cpu_s\":%.3f}",
           i ? "," : "", r->id + 1, row_info[r->id].name, row_info[r->id].adds,
           (unsigned long long)r->measured, r->seconds, r->rps, r->p50_us, r->p99_us,
           r->bytes_per_req, rows[0].rps > 0 ? r->rps / rows[0].rps : 0, r->server_cpu_s);
  }
  printf("\n]}\n");
}

static int usage(void) {
  fprintf(stderr, "usage: playbook [--seconds S (0.05..60)] [--quick] [--json] "
                  "[--workers N (1..64)] [--cost-us U (0..10000)]\n");
  return 2;
}

int main(int argc, char **argv) {
  double seconds = 5.0, cost_us = 20.0;
  unsigned workers = 2;
  int quick = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    if (strcmp(a, "--quick") == 0)
      quick = 1;
    else if (strcmp(a, "--json") == 0)
      json_out = 1;
    else if (strcmp(a, "--seconds") == 0 && v && (seconds = strtod(v, &end), !*end) &&
             seconds >= 0.05 && seconds <= 60)
      i++;
    else if (strcmp(a, "--cost-us") == 0 && v && (cost_us = strtod(v, &end), !*end) &&
             cost_us >= 0 && cost_us <= 10000)
      i++;
    else if (strcmp(a, "--workers") == 0 && v &&
             (workers = (unsigned)strtoul(v, &end, 10), !*end) && workers >= 1 && workers <= 64)
      i++;
    else
      return usage();
  }
  if (quick)
    seconds = 0.25;
  double warmup = quick ? 0.05 : 0.5;
  tty = isatty(STDOUT_FILENO);
  signal(SIGPIPE, SIG_IGN);

  /* The server: a child process, forked before any loop or thread exists. */
  int fds[2];
  if (pipe(fds) != 0)
    return 1;
  server_pid = fork();
  if (server_pid < 0)
    return 1;
  if (server_pid == 0) {
    close(fds[0]);
    _exit(server_main(fds[1], cost_us, workers));
  }
  close(fds[1]);
  FILE *pf = fdopen(fds[0], "r");
  if (!pf || fscanf(pf, "ports %d %d %d %d %d", &ports[0], &ports[1], &ports[2], &ports[3],
                    &ports[4]) != NSRV) {
    fprintf(stderr, "playbook: the server did not start\n");
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    return 1;
  }
  fclose(pf);

  for (unsigned k = 0; k < KEYS; k++)
    expected_len[k] = doc_make(k, expected[k]);
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.max_output_bytes = DOC_MAX;
  if (braid_loop_new(&loop, NULL) != 0 || braid_gzip_new(&inflater, &go) != 0)
    return 1;

  if (!json_out) {
    printf("braid %s playbook: %d callers, %d keys of ~%zu B JSON, render cost %g us, "
           "%g s per row%s, server pid %d (%u worker threads in rows 7-8)\n\n",
           braid_version_string(), CALLERS, KEYS, expected_len[0], cost_us, seconds,
           quick ? " (--quick)" : "", (int)server_pid, workers);
    for (int i = 0; i < NROWS; i++)
      printf(" %d  %-16s %s\n", i + 1, row_info[i].name, row_info[i].adds);
    printf("\n");
    print_header();
  }
  static row_t rows[NROWS];
  int nrows = 0, rc = 0;
  for (int i = 0; i < NROWS; i++) {
    rows[i].id = i;
    nrows++;
    /* naive connects per request: keep it short, its sockets linger in TIME_WAIT */
    double s = i == ROW_NAIVE && seconds > 2 ? 2 : seconds;
    if (run_row(&rows[i], s, warmup) != 0) {
      rc = 1;
      break;
    }
    if (!json_out)
      print_row(&rows[i], rows[0].rps);
  }

  kill(server_pid, SIGKILL);
  waitpid(server_pid, NULL, 0);
  braid_gzip_free(inflater);
  braid_loop_run(loop, UV_RUN_DEFAULT);
  if (braid_loop_close(loop) != 0) {
    fprintf(stderr, "playbook: the loop did not close cleanly\n");
    rc = 1;
  }
  if (rc != 0) {
    fprintf(stderr, "playbook: FAILED: %s\n", failed ? failure : "setup failed");
    return 1;
  }
  if (json_out) {
    print_json(rows, nrows, seconds, cost_us, workers);
  } else {
    printf("\nSummary (rates vs the naive row):");
    for (int i = 1; i < nrows; i++)
      printf("%s %s %.1fx", i == 1 ? "" : ",", row_info[i].name, rows[i].rps / rows[0].rps);
    printf("\nEvery answer was checked byte for byte. Bytes/req: payload bytes through the "
           "client's sockets, both ways.\n");
  }
  return 0;
}
