/* Static files over loopback: content types, ETag / Last-Modified / Cache-Control, 304 on
 * revalidation (If-None-Match, If-Modified-Since), single ranges (206, 416, several ranges
 * answered whole), index.html, HEAD, a large file streamed, and every way out of the root
 * refused: "..", percent-encoded and overlong forms, backslashes, NUL, symlinks leading out
 * (relative and absolute), while a symlink inside the root is followed.
 *
 * Zero copy (sendfile): large bodies and ranges byte-exact through the sendfile path (the
 * server's sendfile counters say it was taken), a client that never reads (nothing queued in
 * user space, cut off by the write timeout), a client that resets mid-transfer, the server
 * closing with a transfer in flight, a file truncated while it is sent (the response ends
 * short and the connection closes, nothing but file bytes sent), and pipelined requests
 * behind a file answered in order. */
#include "http_fixture.h"

#include <sys/stat.h>
#include <sys/time.h>

#include "internal.h"

static char base[256], root[300];

static void write_file(const char *dir, const char *name, const void *data, size_t len) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  fclose(fp);
}

static char big[300000];

static void make_tree(void) {
  snprintf(base, sizeof(base), "/tmp/braid-http-static-XXXXXX");
  assert_non_null(mkdtemp(base));
  snprintf(root, sizeof(root), "%s/root", base);
  assert_int_equal(mkdir(root, 0755), 0);
  char sub[400];
  snprintf(sub, sizeof(sub), "%s/sub", root);
  assert_int_equal(mkdir(sub, 0755), 0);
  write_file(base, "secret.txt", "TOPSECRET", 9);
  write_file(root, "index.html", "<h1>home</h1>", 13);
  write_file(sub, "index.html", "<h1>sub</h1>", 12);
  char text[1000];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = (char)('a' + i % 26);
  write_file(root, "a.txt", text, sizeof(text));
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)(i * 7 + i / 251);
  write_file(root, "big.bin", big, sizeof(big));
  char link[512], target[512];
  snprintf(link, sizeof(link), "%s/out", root);
  assert_int_equal(symlink("../secret.txt", link), 0);
  snprintf(link, sizeof(link), "%s/abs", root);
  snprintf(target, sizeof(target), "%s/secret.txt", base);
  assert_int_equal(symlink(target, link), 0);
  snprintf(link, sizeof(link), "%s/evil", sub);
  assert_int_equal(symlink("../../secret.txt", link), 0);
  snprintf(link, sizeof(link), "%s/in.txt", root);
  assert_int_equal(symlink("a.txt", link), 0);
  snprintf(link, sizeof(link), "%s/updir", root);
  assert_int_equal(symlink("..", link), 0);
}

/* A file of n bytes whose byte i is pattern(i), in the root as name. */
static unsigned char pattern(size_t i) {
  return (unsigned char)(i * 131 + (i >> 12) * 7 + 3);
}

static void write_pattern_file(const char *name, size_t n) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", root, name);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  unsigned char block[65536];
  for (size_t off = 0; off < n; off += sizeof(block)) {
    size_t k = n - off < sizeof(block) ? n - off : sizeof(block);
    for (size_t i = 0; i < k; i++)
      block[i] = pattern(off + i);
    assert_int_equal(fwrite(block, 1, k, fp), k);
  }
  fclose(fp);
}

static void remove_tree(void) {
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
  assert_int_equal(system(cmd), 0);
}

typedef struct ask_s {
  const char *req;
  char out[400000];
  size_t n;
  int eof;
} ask_t;

static void c_ask(hfix_t *f, void *arg) {
  ask_t *a = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, a->req);
  a->n = cl_read(fd, a->out, sizeof(a->out), 5000, &a->eof);
  close(fd);
}

static ask_t *ask(hfix_t *f, const char *req) {
  static ask_t a;
  memset(&a, 0, sizeof(a));
  a.req = req;
  run_client(f, c_ask, &a, 20000);
  return &a;
}

static const char *body_of(const ask_t *a) {
  const char *e = strstr(a->out, "\r\n\r\n");
  return e ? e + 4 : "";
}

static void header_value(const char *out, const char *name, char *val, size_t cap) {
  const char *p = strstr(out, name);
  val[0] = 0;
  if (!p)
    return;
  p += strlen(name);
  const char *e = strstr(p, "\r\n");
  size_t n = (size_t)(e - p) < cap - 1 ? (size_t)(e - p) : cap - 1;
  memcpy(val, p, n);
  val[n] = 0;
}

static void start(hfix_t *f) {
  make_tree();
  hfix_start(f, NULL, NULL);
  assert_int_equal(braid_http_server_static(f->http, "/static/", root, NULL), 0);
}

static void stop(hfix_t *f) {
  hfix_stop(f);
  remove_tree();
}

static void test_files_and_caching(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  ask_t *a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(a->out, "Content-Type: text/plain; charset=utf-8\r\n"));
  assert_non_null(strstr(a->out, "Cache-Control: public, max-age=3600\r\n"));
  assert_non_null(strstr(a->out, "Accept-Ranges: bytes\r\n"));
  assert_non_null(strstr(a->out, "Content-Length: 1000\r\n"));
  assert_true(strncmp(body_of(a), "abcdefghij", 10) == 0);
  char etag[64], lastmod[64], req[512];
  header_value(a->out, "ETag: ", etag, sizeof(etag));
  header_value(a->out, "Last-Modified: ", lastmod, sizeof(lastmod));
  assert_true(etag[0] == '"' && lastmod[0]);

  snprintf(req, sizeof(req), "GET /static/a.txt HTTP/1.1\r\nIf-None-Match: %s\r\nConnection: close\r\n\r\n", etag);
  a = ask(&f, req);
  assert_non_null(strstr(a->out, "HTTP/1.1 304 Not Modified\r\n"));
  assert_null(strstr(a->out, "Content-Length"));
  assert_string_equal(body_of(a), "");
  snprintf(req, sizeof(req), "GET /static/a.txt HTTP/1.1\r\nIf-None-Match: \"nope\", W/%s\r\nConnection: close\r\n\r\n", etag);
  a = ask(&f, req);
  assert_non_null(strstr(a->out, "HTTP/1.1 304"));
  snprintf(req, sizeof(req), "GET /static/a.txt HTTP/1.1\r\nIf-Modified-Since: %s\r\nConnection: close\r\n\r\n", lastmod);
  a = ask(&f, req);
  assert_non_null(strstr(a->out, "HTTP/1.1 304"));
  a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nIf-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 200"));

  /* index.html, for the root and a subdirectory, with and without the slash */
  a = ask(&f, "GET /static/ HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Type: text/html; charset=utf-8\r\n"));
  assert_string_equal(body_of(a), "<h1>home</h1>");
  a = ask(&f, "GET /static/sub/ HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_string_equal(body_of(a), "<h1>sub</h1>");
  a = ask(&f, "GET /static/sub HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_string_equal(body_of(a), "<h1>sub</h1>");
  /* a symlink inside the root is followed */
  a = ask(&f, "GET /static/in.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_true(strncmp(body_of(a), "abcdefghij", 10) == 0);
  /* HEAD: headers only */
  a = ask(&f, "HEAD /static/big.bin HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Length: 300000\r\n"));
  assert_string_equal(body_of(a), "");
  /* a large file, streamed */
  a = ask(&f, "GET /static/big.bin HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Type: application/octet-stream\r\n"));
  const char *b = body_of(a);
  assert_int_equal(a->n - (size_t)(b - a->out), sizeof(big));
  assert_memory_equal(b, big, sizeof(big));
  a = ask(&f, "GET /static/missing.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 404"));
  stop(&f);
}

static void test_ranges(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  ask_t *a = ask(&f, "GET /static/big.bin HTTP/1.1\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 206 Partial Content\r\n"));
  assert_non_null(strstr(a->out, "Content-Range: bytes 10-19/300000\r\n"));
  assert_non_null(strstr(a->out, "Content-Length: 10\r\n"));
  assert_memory_equal(body_of(a), big + 10, 10);
  a = ask(&f, "GET /static/big.bin HTTP/1.1\r\nRange: bytes=-5\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Range: bytes 299995-299999/300000\r\n"));
  assert_memory_equal(body_of(a), big + 299995, 5);
  a = ask(&f, "GET /static/big.bin HTTP/1.1\r\nRange: bytes=299990-\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Range: bytes 299990-299999/300000\r\n"));
  a = ask(&f, "GET /static/big.bin HTTP/1.1\r\nRange: bytes=300000-\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 416 Range Not Satisfiable\r\n"));
  assert_non_null(strstr(a->out, "Content-Range: bytes */300000\r\n"));
  a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nRange: bytes=0-1,5-6\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 200 OK"));
  a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nRange: bytes=0-1\r\nIf-Range: \"other\"\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 200 OK"));
  stop(&f);
}

static void test_no_way_out(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  static const char *const paths[] = {
      "/static/../secret.txt",      "/static/%2e%2e/secret.txt",   "/static/%2E%2E%2Fsecret.txt",
      "/static/..%2fsecret.txt",    "/static/sub/../../secret.txt", "/static/sub/%2e%2e/%2e%2e/secret.txt",
      "/static/%c0%ae%c0%ae/secret.txt", "/static/%c0%af..%c0%afsecret.txt",
      "/static/..%5csecret.txt",    "/static/a.txt%00.html",       "/static/out",
      "/static/abs",                "/static/sub/evil",             "/static/updir/secret.txt",
      "/static/.%2e/secret.txt",    "/static//etc/passwd",         "/static/%2fetc%2fpasswd",
      "/static/./a.txt",
  };
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nConnection: close\r\n\r\n", paths[i]);
    ask_t *a = ask(&f, req);
    if (strstr(a->out, "TOPSECRET") || strstr(a->out, "root:"))
      fail_msg("%s: served a file outside the root", paths[i]);
    if (!strstr(a->out, "HTTP/1.1 404") && !strstr(a->out, "HTTP/1.1 400"))
      fail_msg("%s: want 404 or 400, got '%.40s'", paths[i], a->out);
  }
  stop(&f);
}


/* ---- zero copy ------------------------------------------------------------------------ */

#define HUGE_SIZE ((size_t)24 << 20) /* well above the loopback socket buffers */

static braid_http_server_stats_t stats_of(hfix_t *f) {
  braid_http_server_stats_t st;
  braid_http_server_stats(f->http, &st);
  return st;
}

/* Reads one response's head from fd (up to and with the blank line) into head; returns the
 * Content-Length, and leaves in *extra the body bytes read past the head. */
static long read_head(int fd, char *head, size_t cap, char *extra, size_t *extra_len) {
  size_t n = 0;
  for (;;) {
    ssize_t k = recv(fd, head + n, cap - 1 - n, 0);
    if (k <= 0)
      return -1;
    n += (size_t)k;
    head[n] = 0;
    char *e = strstr(head, "\r\n\r\n");
    if (e) {
      size_t hl = (size_t)(e + 4 - head);
      *extra_len = n - hl;
      memcpy(extra, e + 4, *extra_len);
      *e = 0;
      const char *cl = strstr(head, "Content-Length: ");
      return cl ? strtol(cl + 16, NULL, 10) : -1;
    }
    if (n + 1 >= cap)
      return -1;
  }
}

typedef struct bigread_s {
  const char *req;
  size_t want_off; /* the body is the file's bytes from here */
  long length;     /* Content-Length seen */
  size_t got;      /* body bytes received */
  int exact;       /* every byte received matched the file */
  int eof;
  char head[4096];
} bigread_t;

/* Sends req and reads the whole body, checking each byte against the pattern. */
static void c_bigread(hfix_t *f, void *arg) {
  bigread_t *b = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, b->req);
  static char buf[1 << 16];
  size_t extra = 0;
  b->length = read_head(fd, b->head, sizeof(b->head), buf, &extra);
  b->exact = 1;
  size_t n = extra;
  for (;;) {
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)buf[i] != pattern(b->want_off + b->got + i))
        b->exact = 0;
    b->got += n;
    if (b->length >= 0 && b->got >= (size_t)b->length)
      break;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0)
      break;
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k <= 0) {
      b->eof = 1;
      break;
    }
    n = (size_t)k;
  }
  close(fd);
}

static void test_sendfile_large_and_range(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  write_pattern_file("huge.bin", HUGE_SIZE);
  static bigread_t b;
  memset(&b, 0, sizeof(b));
  b.req = "GET /static/huge.bin HTTP/1.1\r\nConnection: close\r\n\r\n";
  run_client(&f, c_bigread, &b, 30000);
  assert_non_null(strstr(b.head, "HTTP/1.1 200 OK"));
  assert_int_equal(b.length, (long)HUGE_SIZE);
  assert_int_equal(b.got, HUGE_SIZE);
  assert_true(b.exact);
  braid_http_server_stats_t st = stats_of(&f);
  assert_int_equal(st.sendfile, 1);
  assert_int_equal(st.sendfile_bytes, HUGE_SIZE);
  assert_int_equal(st.body_bytes, HUGE_SIZE);

  /* a range: sendfile from an offset */
  memset(&b, 0, sizeof(b));
  b.req = "GET /static/huge.bin HTTP/1.1\r\nRange: bytes=1000001-3000000\r\n"
          "Connection: close\r\n\r\n";
  b.want_off = 1000001;
  run_client(&f, c_bigread, &b, 30000);
  assert_non_null(strstr(b.head, "HTTP/1.1 206 Partial Content"));
  assert_non_null(strstr(b.head, "Content-Range: bytes 1000001-3000000/25165824"));
  assert_int_equal(b.length, 2000000);
  assert_int_equal(b.got, 2000000);
  assert_true(b.exact);
  st = stats_of(&f);
  assert_int_equal(st.sendfile, 2);
  assert_int_equal(st.sendfile_bytes, HUGE_SIZE + 2000000);

  /* HEAD, a small range and a small file send nothing that way */
  ask_t *a = ask(&f, "HEAD /static/huge.bin HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "Content-Length: 25165824\r\n"));
  assert_string_equal(body_of(a), "");
  a = ask(&f, "GET /static/huge.bin HTTP/1.1\r\nRange: bytes=5-9\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 206"));
  for (size_t i = 0; i < 5; i++)
    assert_int_equal((unsigned char)body_of(a)[i], pattern(5 + i));
  a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_true(strncmp(body_of(a), "abcdefghij", 10) == 0);
  st = stats_of(&f);
  assert_int_equal(st.sendfile, 2);
  stop(&f);
}

/* A file behind a pipelined request and requests behind the file: all answered in order. */
typedef struct pipe_s {
  char out[5 << 20];
  size_t n;
  int eof;
} pipe_t;

static void c_pipelined(hfix_t *f, void *arg) {
  pipe_t *a = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, "GET /later?ms=30&id=1 HTTP/1.1\r\n\r\n"
               "GET /static/huge.bin HTTP/1.1\r\nRange: bytes=0-2999999\r\n\r\n"
               "GET /static/big.bin HTTP/1.1\r\n\r\n"
               "GET /static/a.txt HTTP/1.1\r\n\r\n"
               "GET /static/big.bin HTTP/1.1\r\nRange: bytes=100000-299999\r\n\r\n"
               "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
  a->n = cl_read(fd, a->out, sizeof(a->out), 5000, &a->eof);
  close(fd);
}

static void test_sendfile_pipelined(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  write_pattern_file("huge.bin", HUGE_SIZE);
  static pipe_t a;
  memset(&a, 0, sizeof(a));
  run_client(&f, c_pipelined, &a, 20000);
  assert_true(a.eof);
  const char *p = a.out, *end = a.out + a.n;
  /* 1: the slow handler's answer comes first */
  assert_true(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0);
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(strncmp(p, "later 1", 7) == 0);
  p += 7;
  /* 2: 3 MB of the huge file: held while the slow answer is pending (up to held_high_bytes
   * copied), then sent zero copy once at the head */
  assert_true(strncmp(p, "HTTP/1.1 206 Partial Content\r\n", 30) == 0);
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(end - p >= 3000000);
  for (size_t i = 0; i < 3000000; i++)
    if ((unsigned char)p[i] != pattern(i))
      fail_msg("byte %zu of the range differs", i);
  p += 3000000;
  /* 3: the whole file, byte-exact */
  assert_true(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_non_null(strstr(p, "Content-Length: 300000\r\n"));
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(end - p >= (long)sizeof(big));
  assert_memory_equal(p, big, sizeof(big));
  p += sizeof(big);
  /* 4: a small file */
  assert_true(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0);
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(strncmp(p, "abcdefghij", 10) == 0);
  p += 1000;
  /* 5: a range of the file */
  assert_true(strncmp(p, "HTTP/1.1 206 Partial Content\r\n", 30) == 0);
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(end - p >= 200000);
  assert_memory_equal(p, big + 100000, 200000);
  p += 200000;
  /* 6: the last one, then the close */
  assert_true(strncmp(p, "HTTP/1.1 200 OK\r\n", 17) == 0);
  p = strstr(p, "\r\n\r\n") + 4;
  assert_true(end - p == 13 && strncmp(p, "Hello, World!", 13) == 0);
  /* the file went zero copy: the one behind the slow answer once it reached the head */
  braid_http_server_stats_t st = stats_of(&f);
  assert_true(st.sendfile >= 1);
  assert_true(st.sendfile_bytes >= 1500000); /* the range switched to sendfile at the head */
  stop(&f);
}

/* A client that requests a huge file and never reads. */
typedef struct stall_s {
  atomic_int sent;     /* the request is out */
  atomic_int finished; /* the client is done */
  size_t got;
  int reset;
  long hold_ms;
} stall_t;

static void c_stall(hfix_t *f, void *arg) {
  stall_t *s = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int small = 65536;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)f->port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  cl_sends(fd, "GET /static/huge.bin HTTP/1.1\r\n\r\n");
  atomic_store(&s->sent, 1);
  usleep((useconds_t)s->hold_ms * 1000);
  static char buf[1 << 16];
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 3000) <= 0)
      break;
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k < 0 && errno == ECONNRESET)
      s->reset = 1;
    if (k <= 0)
      break;
    s->got += (size_t)k;
  }
  close(fd);
  atomic_store(&s->finished, 1);
}

typedef struct cthread_s {
  hfix_t *f;
  client_fn fn;
  void *arg;
  uv_thread_t thread;
} cthread_t;

static void cthread_main(void *arg) {
  cthread_t *c = arg;
  c->fn(c->f, c->arg);
}

/* Runs the loop in slices until *flag is set (by another thread) or timeout_ms passes. */
static int run_until_atomic(hfix_t *f, atomic_int *flag, uint64_t timeout_ms) {
  for (uint64_t t = 0; t < timeout_ms; t += 5) {
    if (atomic_load(flag))
      return 1;
    bt_run_for(&f->t, 5);
  }
  return atomic_load(flag);
}

static void test_sendfile_never_reading(void **state) {
  (void)state;
  make_tree();
  write_pattern_file("huge.bin", HUGE_SIZE);
  hfix_t f;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.conn.write_timeout_ms = 300;
  hfix_start(&f, NULL, &so);
  assert_int_equal(braid_http_server_static(f.http, "/static/", root, NULL), 0);
  static stall_t s;
  memset(&s, 0, sizeof(s));
  s.hold_ms = 2500;
  cthread_t c = {&f, c_stall, &s, 0};
  assert_int_equal(uv_thread_create(&c.thread, cthread_main, &c), 0);
  assert_true(run_until_atomic(&f, &s.sent, 5000));
  /* The server stalls on the full socket: nothing piles up in user space, and the write
   * timeout closes the connection while the client still sleeps. */
  unsigned most_chunks = 0;
  uint64_t t0 = uv_now(&f.t.uv);
  int closed = 0;
  for (int i = 0; i < 400 && !closed; i++) {
    bt_run_for(&f.t, 5);
    if (f.t.loop->chunks_out > most_chunks)
      most_chunks = f.t.loop->chunks_out;
    closed = stats_of(&f).connections_open == 0 && stats_of(&f).requests == 0 &&
             stats_of(&f).connections == 1;
  }
  uint64_t waited = uv_now(&f.t.uv) - t0;
  assert_true(closed);
  assert_false(atomic_load(&s.finished)); /* closed by the server, not the client */
  assert_true(waited >= 200 && waited < 1800);
  assert_true(most_chunks <= 2);
  assert_true(run_until_atomic(&f, &s.finished, 10000));
  uv_thread_join(&c.thread);
  assert_true(s.got < HUGE_SIZE);
  stop(&f);
}

/* A client that reads a little, then resets the connection. */
typedef struct resetter_s {
  atomic_int finished;
  size_t read_first;
} resetter_t;

static void c_reset(hfix_t *f, void *arg) {
  resetter_t *r = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, "GET /static/huge.bin HTTP/1.1\r\n\r\n");
  static char buf[1 << 16];
  size_t got = 0;
  while (got < r->read_first) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0)
      break;
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k <= 0)
      break;
    got += (size_t)k;
  }
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd); /* RST */
  atomic_store(&r->finished, 1);
}

static void test_sendfile_reset_mid_transfer(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  write_pattern_file("huge.bin", HUGE_SIZE);
  static resetter_t r;
  memset(&r, 0, sizeof(r));
  r.read_first = 300000;
  run_client(&f, c_reset, &r, 20000);
  /* the server notices (the next sendfile or read fails) and lets the connection go */
  int gone = 0;
  for (int i = 0; i < 400 && !gone; i++) {
    bt_run_for(&f.t, 5);
    gone = stats_of(&f).connections_open == 0;
  }
  assert_true(gone);
  /* neighbours are fine */
  ask_t *a = ask(&f, "GET /static/a.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(a->out, "HTTP/1.1 200 OK"));
  stop(&f);
}

/* The server closes while a transfer is in flight (the client reads slowly). */
typedef struct slow_s {
  atomic_int started, finished;
  size_t got;
  int exact;
} slow_t;

static void c_slow(hfix_t *f, void *arg) {
  slow_t *s = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, "GET /static/huge.bin HTTP/1.1\r\n\r\n");
  static char buf[1 << 14];
  char head[4096];
  size_t extra = 0;
  read_head(fd, head, sizeof(head), buf, &extra);
  s->exact = 1;
  s->got = extra;
  for (size_t i = 0; i < extra; i++)
    if ((unsigned char)buf[i] != pattern(i))
      s->exact = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0)
      break;
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k <= 0)
      break;
    for (ssize_t i = 0; i < k; i++)
      if ((unsigned char)buf[i] != pattern(s->got + (size_t)i))
        s->exact = 0;
    s->got += (size_t)k;
    if (s->got > (1u << 20))
      atomic_store(&s->started, 1);
    usleep(2000); /* about 8 MB/s at most: the transfer lasts seconds */
  }
  close(fd);
  atomic_store(&s->finished, 1);
}

static void test_sendfile_server_close_mid_transfer(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  write_pattern_file("huge.bin", HUGE_SIZE);
  static slow_t s;
  memset(&s, 0, sizeof(s));
  cthread_t c = {&f, c_slow, &s, 0};
  assert_int_equal(uv_thread_create(&c.thread, cthread_main, &c), 0);
  assert_true(run_until_atomic(&f, &s.started, 10000));
  assert_false(atomic_load(&s.finished));
  /* close everything now, with sendfile in flight: the loop must end clean */
  hfix_stop(&f);
  uv_thread_join(&c.thread);
  assert_true(s.got < HUGE_SIZE);
  assert_true(s.exact); /* only file bytes, in order */
  remove_tree();
}

/* The file is truncated while it is being sent. */
typedef struct trunc_s {
  size_t got;
  int exact, eof;
  long length;
} trunc_t;

static void c_trunc(hfix_t *f, void *arg) {
  trunc_t *t = arg;
  int fd = cl_connect(f->port);
  cl_sends(fd, "GET /static/huge.bin HTTP/1.1\r\n\r\n");
  static char buf[1 << 16];
  char head[4096];
  size_t extra = 0;
  t->length = read_head(fd, head, sizeof(head), buf, &extra);
  t->exact = 1;
  size_t n = extra;
  int truncated = 0;
  for (;;) {
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)buf[i] != pattern(t->got + i))
        t->exact = 0;
    t->got += n;
    if (!truncated && t->got >= (1u << 20)) {
      char path[512];
      snprintf(path, sizeof(path), "%s/huge.bin", root);
      assert_int_equal(truncate(path, 3 << 20), 0);
      truncated = 1;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0)
      break; /* a hang: t->eof stays 0 */
    ssize_t k = recv(fd, buf, sizeof(buf), 0);
    if (k <= 0) {
      t->eof = 1;
      break;
    }
    n = (size_t)k;
    usleep(500);
  }
  close(fd);
}

static void test_sendfile_truncated_file(void **state) {
  (void)state;
  hfix_t f;
  start(&f);
  write_pattern_file("huge.bin", HUGE_SIZE);
  static trunc_t t;
  memset(&t, 0, sizeof(t));
  run_client(&f, c_trunc, &t, 30000);
  assert_int_equal(t.length, (long)HUGE_SIZE);
  assert_true(t.eof);            /* the connection closed: no hang */
  assert_true(t.got < HUGE_SIZE); /* the promise could not be kept */
  assert_true(t.exact);          /* and nothing but the file's bytes was sent */
  stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_files_and_caching),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_no_way_out),
      cmocka_unit_test(test_sendfile_large_and_range),
      cmocka_unit_test(test_sendfile_pipelined),
      cmocka_unit_test(test_sendfile_never_reading),
      cmocka_unit_test(test_sendfile_reset_mid_transfer),
      cmocka_unit_test(test_sendfile_server_close_mid_transfer),
      cmocka_unit_test(test_sendfile_truncated_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
