/* Compression in the HTTP server over loopback: response encoding negotiated from
 * Accept-Encoding with q-values (gzip;q=0 honoured, deflate when preferred), only above the
 * size threshold and for compressible types, Vary: Accept-Encoding always on those; streamed
 * bodies compressed as a stream; gzip and deflate request bodies decoded, with braid's bomb
 * limits (413). Bodies are checked by decoding them with braid's own gzip. */
#include "http_fixture.h"

#include "braid/gzip.h"

typedef struct resp_s {
  char head[4096];
  char *body;
  size_t body_len;
  int eof;
} resp_t;

/* Sends req on a new connection (Connection: close) and splits the answer into head and
 * body, undoing chunked transfer coding. */
typedef struct ask_s {
  const char *req;
  size_t req_len;
  resp_t r;
} ask_t;

static void c_ask(hfix_t *f, void *arg) {
  ask_t *a = arg;
  int fd = cl_connect(f->port);
  cl_send(fd, a->req, a->req_len ? a->req_len : strlen(a->req));
  size_t cap = 16 << 20;
  char *buf = malloc(cap);
  size_t n = cl_read(fd, buf, cap, 5000, &a->r.eof);
  close(fd);
  char *end = strstr(buf, "\r\n\r\n");
  assert_non_null(end);
  size_t hl = (size_t)(end + 4 - buf);
  assert_true(hl < sizeof(a->r.head));
  memcpy(a->r.head, buf, hl);
  a->r.head[hl] = 0;
  char *body = malloc(n - hl + 1);
  size_t bl = 0;
  if (strstr(a->r.head, "Transfer-Encoding: chunked")) {
    char *p = end + 4;
    for (;;) {
      size_t len = strtoul(p, &p, 16);
      p = strstr(p, "\r\n") + 2;
      if (len == 0)
        break;
      memcpy(body + bl, p, len);
      bl += len;
      p += len + 2;
    }
  } else {
    bl = n - hl;
    memcpy(body, end + 4, bl);
  }
  a->r.body = body;
  a->r.body_len = bl;
  free(buf);
}

static void ask(hfix_t *f, ask_t *a, const char *req) {
  memset(a, 0, sizeof(*a));
  a->req = req;
  run_client(f, c_ask, a, 20000);
}

/* Decodes body in format; returns a malloc'd buffer and its length in *len. */
static char *decode(const resp_t *r, braid_gzip_format_t fmt, size_t *len) {
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.format = fmt;
  o.max_ratio = 0; /* the test's text is very repetitive */
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &o), 0);
  void *out;
  int rc = braid_gzip_decompress(gz, r->body, r->body_len, &out, len);
  braid_gzip_free(gz);
  if (rc)
    fail_msg("decode: %s", braid_err_name(rc));
  char *copy = malloc(*len + 1);
  memcpy(copy, out, *len);
  copy[*len] = 0;
  braid_gzip_buf_free(out);
  return copy;
}

static void expect_text(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (s[i] != "hello braid http "[i % 17])
      fail_msg("byte %zu differs", i);
}

static void test_negotiation(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  ask_t a;
  size_t len;
  char *d;

  ask(&f, &a, "GET /text HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: gzip\r\n"));
  assert_non_null(strstr(a.r.head, "Vary: Accept-Encoding\r\n"));
  assert_true(a.r.body_len < 1000);
  d = decode(&a.r, BRAID_GZIP_FORMAT_GZIP, &len);
  assert_int_equal(len, 8192);
  expect_text(d, len);
  free(d);
  free(a.r.body);

  /* gzip refused by q=0: deflate is next */
  ask(&f, &a, "GET /text HTTP/1.1\r\nAccept-Encoding: gzip;q=0, deflate\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: deflate\r\n"));
  d = decode(&a.r, BRAID_GZIP_FORMAT_ZLIB, &len);
  assert_int_equal(len, 8192);
  free(d);
  free(a.r.body);

  /* q-values order the choice */
  ask(&f, &a, "GET /text HTTP/1.1\r\nAccept-Encoding: gzip;q=0.5, deflate;q=0.8\r\n"
              "Connection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: deflate\r\n"));
  free(a.r.body);

  /* only gzip, refused: identity, still Vary */
  ask(&f, &a, "GET /text HTTP/1.1\r\nAccept-Encoding: gzip;q=0.000\r\nConnection: close\r\n\r\n");
  assert_null(strstr(a.r.head, "Content-Encoding"));
  assert_non_null(strstr(a.r.head, "Vary: Accept-Encoding\r\n"));
  assert_int_equal(a.r.body_len, 8192);
  free(a.r.body);

  /* "*" stands for gzip */
  ask(&f, &a, "GET /text HTTP/1.1\r\nAccept-Encoding: *\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: gzip\r\n"));
  free(a.r.body);

  /* no Accept-Encoding: identity */
  ask(&f, &a, "GET /text HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_null(strstr(a.r.head, "Content-Encoding"));
  free(a.r.body);

  /* under the threshold: identity, Vary still said */
  ask(&f, &a, "GET /text?n=100 HTTP/1.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
  assert_null(strstr(a.r.head, "Content-Encoding"));
  assert_non_null(strstr(a.r.head, "Vary: Accept-Encoding\r\n"));
  assert_int_equal(a.r.body_len, 100);
  free(a.r.body);

  /* not a compressible type: never, and no Vary */
  ask(&f, &a, "GET /big?n=100000 HTTP/1.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
  assert_null(strstr(a.r.head, "Content-Encoding"));
  assert_null(strstr(a.r.head, "Vary"));
  assert_int_equal(a.r.body_len, 100000);
  free(a.r.body);

  /* HEAD: the same headers as GET, no body */
  ask(&f, &a, "HEAD /text HTTP/1.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: gzip\r\n"));
  assert_int_equal(a.r.body_len, 0);
  free(a.r.body);

  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  assert_true(st.compressed >= 5);
  assert_true(st.body_bytes_sent < st.body_bytes);
  hfix_stop(&f);
}

/* A streamed text body of 2 MB is compressed as a stream (chunked). */
static void test_streamed_compression(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  ask_t a;
  ask(&f, &a, "GET /big?n=2000000&text=1 HTTP/1.1\r\nAccept-Encoding: gzip\r\n"
              "Connection: close\r\n\r\n");
  assert_non_null(strstr(a.r.head, "Content-Encoding: gzip\r\n"));
  assert_non_null(strstr(a.r.head, "Transfer-Encoding: chunked\r\n"));
  assert_null(strstr(a.r.head, "Content-Length"));
  size_t len;
  char *d = decode(&a.r, BRAID_GZIP_FORMAT_GZIP, &len);
  assert_int_equal(len, 2000000);
  for (size_t i = 0; i < len; i++)
    if (d[i] != (char)('a' + (i % 16384) % 26))
      fail_msg("byte %zu", i);
  free(d);
  free(a.r.body);
  hfix_stop(&f);
}

static size_t gzip_of(braid_gzip_format_t fmt, const void *in, size_t len, char *out, size_t cap) {
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.format = fmt;
  o.min_size_bytes = 0;
  o.level = 9;
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &o), 0);
  size_t n;
  assert_int_equal(braid_gzip_compress(gz, in, len, out, cap, &n), 0);
  braid_gzip_free(gz);
  return n;
}

/* gzip and deflate request bodies are decoded; a bomb is refused with 413. */
static void test_request_decoding(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  static char plain[50000], z[60000], req[70000];
  for (size_t i = 0; i < sizeof(plain); i++)
    plain[i] = (char)('A' + i % 23);
  size_t zn = gzip_of(BRAID_GZIP_FORMAT_GZIP, plain, sizeof(plain), z, sizeof(z));
  int hl = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nContent-Encoding: gzip\r\n"
                                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", zn);
  memcpy(req + hl, z, zn);
  ask_t a;
  memset(&a, 0, sizeof(a));
  a.req = req;
  a.req_len = (size_t)hl + zn;
  run_client(&f, c_ask, &a, 20000);
  assert_non_null(strstr(a.r.head, "HTTP/1.1 200 OK"));
  assert_int_equal(a.r.body_len, sizeof(plain));
  assert_memory_equal(a.r.body, plain, sizeof(plain));
  free(a.r.body);

  /* deflate, streamed to a streaming route */
  zn = gzip_of(BRAID_GZIP_FORMAT_ZLIB, plain, sizeof(plain), z, sizeof(z));
  hl = snprintf(req, sizeof(req), "POST /stream HTTP/1.1\r\nContent-Encoding: deflate\r\n"
                                  "Content-Length: %zu\r\nConnection: close\r\n\r\n", zn);
  memcpy(req + hl, z, zn);
  memset(&a, 0, sizeof(a));
  a.req = req;
  a.req_len = (size_t)hl + zn;
  run_client(&f, c_ask, &a, 20000);
  assert_true(a.r.body_len == 9 && memcmp(a.r.body, "got 50000", 9) == 0);
  free(a.r.body);

  /* a bomb: 8 MiB of zeros in a few KiB, over max_body_bytes (1 MiB) */
  char *zeros = calloc(1, 8 << 20);
  zn = gzip_of(BRAID_GZIP_FORMAT_GZIP, zeros, 8 << 20, z, sizeof(z));
  free(zeros);
  hl = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nContent-Encoding: gzip\r\n"
                                  "Content-Length: %zu\r\nConnection: close\r\n\r\n", zn);
  memcpy(req + hl, z, zn);
  memset(&a, 0, sizeof(a));
  a.req = req;
  a.req_len = (size_t)hl + zn;
  run_client(&f, c_ask, &a, 20000);
  assert_non_null(strstr(a.r.head, "HTTP/1.1 413"));
  free(a.r.body);
  /* the same bomb to the streaming route: the handler hears BRAID_ETOOBIG */
  hl = snprintf(req, sizeof(req), "POST /stream HTTP/1.1\r\nContent-Encoding: gzip\r\n"
                                  "Content-Length: %zu\r\nConnection: close\r\n\r\n", zn);
  memcpy(req + hl, z, zn);
  memset(&a, 0, sizeof(a));
  a.req = req;
  a.req_len = (size_t)hl + zn;
  run_client(&f, c_ask, &a, 20000);
  assert_non_null(strstr(a.r.head, "HTTP/1.1 413"));
  assert_int_equal(f.stream_status, BRAID_ETOOBIG);
  free(a.r.body);

  /* corrupt gzip: 400 */
  memset(&a, 0, sizeof(a));
  a.req = "POST /echo HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n"
          "Connection: close\r\n\r\nhello";
  run_client(&f, c_ask, &a, 20000);
  assert_non_null(strstr(a.r.head, "HTTP/1.1 400"));
  free(a.r.body);
  hfix_stop(&f);
}

/* Memoized responses: one load for many requests, the gzip variant cached too. */
static int memo_loads;

static int memo_compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)key;
  (void)key_len;
  (void)arg;
  memo_loads++;
  char text[8192];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = "hello braid http "[i % 17];
  return braid_blob_copy(value, text, sizeof(text));
}

static braid_cache_t *memo_cache;

static void h_memo(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_cache_loader_t l = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = memo_compute};
  assert_int_equal(braid_http_respond_memo(req, memo_cache, "page", 4, &l, "text/plain"), 0);
}

static int memo_closed;
static void on_memo_closed(braid_cache_t *c, int status, void *arg) {
  (void)c;
  (void)arg;
  assert_int_equal(status, 0);
  memo_closed = 1;
}

static void test_memoized(void **state) {
  (void)state;
  hfix_t f;
  hfix_start(&f, NULL, NULL);
  assert_int_equal(braid_cache_new(&memo_cache, f.t.loop, NULL), 0);
  assert_int_equal(braid_http_server_route(f.http, "GET", "/memo", 0, h_memo, NULL), 0);
  memo_loads = 0;
  for (int i = 0; i < 3; i++) {
    ask_t a;
    ask(&f, &a, "GET /memo HTTP/1.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a.r.head, "Content-Encoding: gzip\r\n"));
    assert_non_null(strstr(a.r.head, "Vary: Accept-Encoding\r\n"));
    size_t len;
    char *d = decode(&a.r, BRAID_GZIP_FORMAT_GZIP, &len);
    assert_int_equal(len, 8192);
    expect_text(d, len);
    free(d);
    free(a.r.body);
  }
  ask_t a;
  ask(&f, &a, "GET /memo HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_null(strstr(a.r.head, "Content-Encoding"));
  assert_int_equal(a.r.body_len, 8192);
  free(a.r.body);
  assert_int_equal(memo_loads, 1);
  braid_cache_stats_t cs;
  braid_cache_stats(memo_cache, &cs);
  assert_int_equal(cs.entries, 2); /* the value and its gzip variant */
  braid_http_server_stats_t st;
  braid_http_server_stats(f.http, &st);
  assert_int_equal(st.cache_hits, 3);
  memo_closed = 0;
  braid_cache_close(memo_cache, on_memo_closed, NULL);
  bt_run_until(&f.t, &memo_closed, 5000);
  hfix_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_negotiation),
      cmocka_unit_test(test_streamed_compression),
      cmocka_unit_test(test_request_decoding),
      cmocka_unit_test(test_memoized),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
