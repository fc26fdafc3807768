/* The RESP reply framer used by the Redis interop test (tests/resp.c): every reply type,
 * every split point of a stream (byte by byte through braid_framebuf), need hints, bounds,
 * and malformed input rejected with BRAID_EPROTO. */
#include <stdio.h>
#include <string.h>

#include "../resp.h"
#include "../support.h"

/* Valid replies: each is exactly one reply. */
static const char *const valid[] = {
  "+OK\r\n",
  "+\r\n",
  "-ERR unknown command 'FOO'\r\n",
  ":0\r\n",
  ":-42\r\n",
  ":9223372036854775807\r\n",
  "$-1\r\n",
  "$0\r\n\r\n",
  "$5\r\nhello\r\n",
  "$4\r\na\r\nb\r\n", /* a bulk string may hold CR and LF */
  "*-1\r\n",
  "*0\r\n",
  "*2\r\n$3\r\nfoo\r\n$-1\r\n",
  "*3\r\n:1\r\n*2\r\n+a\r\n*1\r\n$1\r\nx\r\n-e\r\n",
  "*2\r\n*0\r\n*-1\r\n",
  "*1\r\n*1\r\n*1\r\n*1\r\n:7\r\n",
};

/* Malformed replies: each is BRAID_EPROTO once all of it is there (maybe earlier). */
static const char *const malformed[] = {
  "!oops\r\n",           /* unknown type */
  "hello\r\n",           /* inline text is not a reply */
  "+OK\n",               /* LF without CR */
  "+O\rK\r\n",           /* CR without LF */
  ":\r\n",               /* no digits */
  ":12a\r\n",            /* not a number */
  ":--1\r\n",
  ":99999999999999999999\r\n", /* over 19 digits */
  "$-2\r\n",             /* negative length other than -1 */
  "$3\r\nabcd\r\n",      /* bulk not followed by CRLF */
  "$3\r\nabc\n\n",
  "$1073741824\r\n",     /* over RESP_MAX_BULK */
  "*-2\r\n",
  "*99999999\r\n",       /* over RESP_MAX_ELEMENTS */
  "*1\r\n!\r\n",         /* bad element */
  "$12345678901234567890123\r\n", /* a length line longer than any number */
};

static int frame_str(const char *s, size_t len, braid_framer_msg_t *m) {
  return resp_frame(NULL, (const uint8_t *)s, len, m);
}

/* Every prefix of a valid reply needs more (never an error); the whole reply frames to its
 * length with the payload being the whole reply; a need hint is beyond what is buffered. */
static void test_valid_every_prefix(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof(valid) / sizeof(valid[0]); v++) {
    size_t len = strlen(valid[v]);
    braid_framer_msg_t m;
    for (size_t k = 0; k < len; k++) {
      memset(&m, 0xff, sizeof(m));
      int rc = frame_str(valid[v], k, &m);
      if (rc != 0)
        fail_msg("reply %zu (%s) prefix %zu: %d", v, valid[v], k, rc);
      assert_true(m.need == 0 || (m.need > k && m.need <= len));
    }
    assert_int_equal(frame_str(valid[v], len, &m), (int)len);
    assert_int_equal(m.frame_len, len);
    assert_int_equal(m.payload_off, 0);
    assert_int_equal(m.payload_len, len);
  }
}

static void test_malformed(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof(malformed) / sizeof(malformed[0]); v++) {
    braid_framer_msg_t m;
    int rc = frame_str(malformed[v], strlen(malformed[v]), &m);
    if (rc != BRAID_EPROTO)
      fail_msg("malformed %zu (%s): %d", v, malformed[v], rc);
  }
}

static void test_need_hint_and_depth(void **state) {
  (void)state;
  braid_framer_msg_t m;
  /* A bulk's length tells how much is needed. */
  assert_int_equal(frame_str("$10\r\nab", 7, &m), 0);
  assert_int_equal(m.need, 17);
  assert_int_equal(frame_str("*2\r\n:1\r\n$3\r\n", 12, &m), 0);
  assert_int_equal(m.need, 17);
  /* RESP_MAX_DEPTH nested arrays are fine, one more is not. */
  char deep[4 * (RESP_MAX_DEPTH + 2) + 8];
  size_t off = 0;
  for (int i = 0; i < RESP_MAX_DEPTH; i++)
    off += (size_t)sprintf(deep + off, "*1\r\n");
  off += (size_t)sprintf(deep + off, ":1\r\n");
  assert_int_equal(frame_str(deep, off, &m), (int)off);
  off = 0;
  for (int i = 0; i < RESP_MAX_DEPTH + 1; i++)
    off += (size_t)sprintf(deep + off, "*1\r\n");
  off += (size_t)sprintf(deep + off, ":1\r\n");
  assert_int_equal(frame_str(deep, off, &m), BRAID_EPROTO);
  /* Only the first reply is framed when two are buffered. */
  assert_int_equal(frame_str("+a\r\n+b\r\n", 8, &m), 4);
}

/* The whole table as one stream, pushed into a braid_framebuf in two pieces split at every
 * byte, and once byte by byte: the same replies come out, in order, each exactly once. */
static void test_stream_split_everywhere(void **state) {
  (void)state;
  static char stream[4096];
  size_t lens[32], n = sizeof(valid) / sizeof(valid[0]), total = 0;
  for (size_t v = 0; v < n; v++) {
    lens[v] = strlen(valid[v]);
    memcpy(stream + total, valid[v], lens[v]);
    total += lens[v];
  }
  braid_framer_t f;
  assert_int_equal(resp_framer_init(&f, 1024), 0);
  for (size_t split = 0; split <= total + 1; split++) {
    /* split == total + 1 means byte by byte. */
    braid_framebuf_t fb;
    assert_int_equal(braid_framebuf_init(&fb, &f), 0);
    size_t got = 0, pos = 0;
    while (pos < total) {
      size_t piece = split == total + 1 ? 1 : (pos < split ? split - pos : total - pos);
      if (piece == 0)
        piece = total - pos;
      assert_int_equal(braid_framebuf_push(&fb, stream + pos, piece), 0);
      pos += piece;
      braid_framebuf_msg_t msg;
      int rc;
      while ((rc = braid_framebuf_next(&fb, &msg)) == 1) {
        assert_true(got < n);
        assert_int_equal(msg.payload_len, lens[got]);
        assert_memory_equal(msg.payload, valid[got], lens[got]);
        got++;
      }
      assert_int_equal(rc, 0);
    }
    assert_int_equal(got, n);
    assert_int_equal(braid_framebuf_pending(&fb), 0);
    braid_framebuf_free(&fb);
  }
}

/* A reply larger than the framer's maximum is refused (by braid around the callback). */
static void test_max(void **state) {
  (void)state;
  braid_framer_t f;
  assert_int_equal(resp_framer_init(&f, 16), 0);
  braid_framer_msg_t m;
  assert_int_equal(braid_framer_next(&f, "$20\r\n", 5, &m), BRAID_ETOOBIG);
  assert_int_equal(braid_framer_next(&f, "+0123456789abcdefgh", 19, &m), BRAID_ETOOBIG);
  assert_int_equal(braid_framer_next(&f, "$2\r\nab\r\n", 8, &m), 8);
}

static void test_command(void **state) {
  (void)state;
  uint8_t buf[64];
  const char *argv[] = {"SET", "k", "hello"};
  size_t n = resp_command(buf, sizeof(buf), 3, argv);
  const char *want = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
  assert_int_equal(n, strlen(want));
  assert_memory_equal(buf, want, n);
  assert_int_equal(resp_command(buf, 10, 3, argv), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_valid_every_prefix),
    cmocka_unit_test(test_malformed),
    cmocka_unit_test(test_need_hint_and_depth),
    cmocka_unit_test(test_stream_split_everywhere),
    cmocka_unit_test(test_max),
    cmocka_unit_test(test_command),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
