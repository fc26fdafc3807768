/* The HTTP parser seam (lib/http_parser.h), table-driven: each case is parsed whole and one
 * byte at a time, and both ways must agree on the requests seen and on the verdict. The
 * rejected cases are the request-smuggling shapes that llhttp's strict mode exists for,
 * plus the Content-Length / Transfer-Encoding conflicts. */
#include <stdio.h>
#include <string.h>

#include "../support.h"
#include "http_parser.h"

typedef struct {
  char log[2048]; /* what the callbacks saw, as text */
  size_t len;
  int pause_after_message;
  int last; /* the previous callback: pieces of one item print their marker once */
} rec_t;

static void put(rec_t *r, const char *s, size_t n) {
  if (r->len + n < sizeof(r->log)) {
    memcpy(r->log + r->len, s, n);
    r->len += n;
    r->log[r->len] = 0;
  }
}
static void puts_(rec_t *r, const char *s) {
  put(r, s, strlen(s));
}

static int begin(void *u) {
  puts_(u, "[");
  return 0;
}
static int url(void *u, const char *at, size_t n) {
  put(u, at, n);
  return 0;
}
static int field(void *u, const char *at, size_t n) {
  rec_t *r = u;
  if (r->last != 1)
    puts_(u, " ");
  r->last = 1;
  put(u, at, n);
  return 0;
}
static int value(void *u, const char *at, size_t n) {
  rec_t *r = u;
  if (r->last != 2)
    puts_(u, "=");
  r->last = 2;
  put(u, at, n);
  return 0;
}
static int headers(void *u, const braid__hp_head_t *h) {
  ((rec_t *)u)->last = 3;
  char b[128];
  snprintf(b, sizeof(b), " |%s 1.%u ka=%d ch=%d cl=%d:%llu|", h->method, h->http_minor,
           h->keep_alive, h->chunked, h->has_length, (unsigned long long)h->content_length);
  puts_(u, b);
  return 0;
}
static int body(void *u, const char *at, size_t n) {
  put(u, at, n);
  return 0;
}
static int complete(void *u) {
  rec_t *r = u;
  puts_(u, "]");
  return r->pause_after_message ? BRAID__HP_PAUSE : 0;
}

static const braid__hp_callbacks_t cbs = {begin, url, field, value, NULL, headers, body,
                                          complete};

static int parse_whole(const char *in, size_t len, rec_t *r) {
  braid__hp_t *hp;
  assert_int_equal(braid__hp_new(&hp, &cbs, r), 0);
  size_t used = 0;
  int rc = braid__hp_execute(hp, in, len, &used);
  braid__hp_free(hp);
  return rc;
}

static int parse_bytewise(const char *in, size_t len, rec_t *r) {
  braid__hp_t *hp;
  assert_int_equal(braid__hp_new(&hp, &cbs, r), 0);
  int rc = 0;
  for (size_t i = 0; i < len && rc == 0; i++) {
    size_t used = 0;
    rc = braid__hp_execute(hp, in + i, 1, &used);
  }
  braid__hp_free(hp);
  return rc;
}

typedef struct {
  const char *name;
  const char *in;
  int ok;            /* 1: parses; 0: rejected */
  const char *expect; /* the log of a parse that succeeds (whole) */
} pcase_t;

static const pcase_t cases[] = {
    {"simple GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1,
     "[/a?b=1 Host=x |GET 1.1 ka=1 ch=0 cl=0:0|]"},
    {"HTTP/1.0 closes", "GET / HTTP/1.0\r\n\r\n", 1, "[/ |GET 1.0 ka=0 ch=0 cl=0:0|]"},
    {"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1,
     "[/ Connection=keep-alive |GET 1.0 ka=1 ch=0 cl=0:0|]"},
    {"Connection: close", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1,
     "[/ Connection=close |GET 1.1 ka=0 ch=0 cl=0:0|]"},
    {"content-length body", "POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 1,
     "[/e Content-Length=3 |POST 1.1 ka=1 ch=0 cl=1:3|abc]"},
    {"chunked body", "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     1, "[/e Transfer-Encoding=chunked |POST 1.1 ka=1 ch=1 cl=0:0|abc]"},
    {"two pipelined", "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 1,
     "[/1 |GET 1.1 ka=1 ch=0 cl=0:0|][/2 |GET 1.1 ka=1 ch=0 cl=0:0|]"},
    /* smuggling shapes and ambiguities: all rejected */
    {"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     0, NULL},
    {"two different CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 0,
     NULL},
    {"TE not chunked last", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, NULL},
    {"bare CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 0, NULL},
    {"bare LF line end", "GET / HTTP/1.1\nHost: x\n\n", 0, NULL},
    {"chunk data without CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
     0, NULL},
    {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0, NULL},
    {"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 0, NULL},
    {"negative CL", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0, NULL},
    {"CL with plus", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 0, NULL},
    {"huge chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 0,
     NULL},
    {"bad method", "G@T / HTTP/1.1\r\n\r\n", 0, NULL},
    {"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 0, NULL},
    {"HTTP/0.9 style", "GET /\r\n\r\n", 0, NULL},
    {"NUL in URL", "GET /a\0b HTTP/1.1\r\n\r\n", 0, NULL},
    {"space in header name", "GET / HTTP/1.1\r\nX Y: a\r\n\r\n", 0, NULL},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const pcase_t *c = &cases[i];
    size_t len = strlen(c->in);
    if (strcmp(c->name, "NUL in URL") == 0)
      len = sizeof("GET /a\0b HTTP/1.1\r\n\r\n") - 1;
    rec_t a = {0}, b = {0};
    int ra = parse_whole(c->in, len, &a);
    int rb = parse_bytewise(c->in, len, &b);
    if (c->ok) {
      if (ra != 0 || rb != 0 || strcmp(a.log, c->expect) != 0)
        fail_msg("%s: rc %d/%d, log '%s', want '%s'", c->name, ra, rb, a.log, c->expect);
      if (strcmp(b.log, c->expect) != 0)
        fail_msg("%s: bytewise log '%s', want '%s'", c->name, b.log, c->expect);
    } else {
      if (ra >= 0 || rb >= 0)
        fail_msg("%s: accepted (rc %d/%d), log '%s'", c->name, ra, rb, a.log);
    }
  }
}

static void test_version_error(void **state) {
  (void)state;
  rec_t r = {0};
  const char *in = "GET / HTTP/2.0\r\n\r\n";
  int rc = parse_whole(in, strlen(in), &r);
  assert_true(rc == BRAID__HP_EVERSION || rc == BRAID__HP_EBADREQ);
}

/* A pause after each message stops the parse there; resuming parses the next. */
static void test_pause_resume(void **state) {
  (void)state;
  rec_t r = {0};
  r.pause_after_message = 1;
  const char *in = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
  size_t len = strlen(in);
  braid__hp_t *hp;
  assert_int_equal(braid__hp_new(&hp, &cbs, &r), 0);
  size_t used = 0;
  assert_int_equal(braid__hp_execute(hp, in, len, &used), BRAID__HP_PAUSED);
  assert_int_equal(used, strlen("GET /1 HTTP/1.1\r\n\r\n"));
  braid__hp_resume(hp);
  size_t used2 = 0;
  assert_int_equal(braid__hp_execute(hp, in + used, len - used, &used2), BRAID__HP_PAUSED);
  assert_int_equal(used + used2, len);
  braid__hp_resume(hp);
  assert_string_equal(r.log, "[/1 |GET 1.1 ka=1 ch=0 cl=0:0|][/2 |GET 1.1 ka=1 ch=0 cl=0:0|]");
  braid__hp_free(hp);
}

/* Upgrade requests stop the parse after their header section. */
static void test_upgrade(void **state) {
  (void)state;
  rec_t r = {0};
  const char *in = "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nxyz";
  braid__hp_t *hp;
  assert_int_equal(braid__hp_new(&hp, &cbs, &r), 0);
  size_t used;
  assert_int_equal(braid__hp_execute(hp, in, strlen(in), &used), BRAID__HP_UPGRADE);
  assert_int_equal(used, strlen(in) - 3);
  braid__hp_free(hp);
  assert_non_null(strstr(braid__hp_version(), "llhttp"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_version_error),
      cmocka_unit_test(test_pause_resume),
      cmocka_unit_test(test_upgrade),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
