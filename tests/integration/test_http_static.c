/* Static files over loopback: content types, ETag / Last-Modified / Cache-Control, 304 on
 * revalidation (If-None-Match, If-Modified-Since), single ranges (206, 416, several ranges
 * answered whole), index.html, HEAD, a large file streamed, and every way out of the root
 * refused: "..", percent-encoded and overlong forms, backslashes, NUL, symlinks leading out
 * (relative and absolute), while a symlink inside the root is followed. */
#include "http_fixture.h"

#include <sys/stat.h>

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_files_and_caching),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_no_way_out),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
