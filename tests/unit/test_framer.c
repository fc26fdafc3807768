/* Framers and the framebuf accumulator, table-driven: every case is framed whole, one byte
 * at a time, and through the framebuf split at every single split point and every pair of
 * split points, and every way must find the same messages and end the same way. */
#include <stdio.h>
#include <string.h>

#include "../support.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_MSGS 16

/* ---- a custom framer for the table: netstrings ("3:abc,") -------------------------------- */

static int netstring_fn(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg) {
  int *calls = arg;
  if (calls)
    (*calls)++;
  size_t n = 0, i = 0;
  for (; i < len && buf[i] != ':'; i++) {
    if (buf[i] < '0' || buf[i] > '9' || i >= 9)
      return BRAID_EPROTO;
    n = n * 10 + (size_t)(buf[i] - '0');
  }
  if (i == len) {
    msg->need = 0; /* unknown until the colon */
    return 0;
  }
  if (i == 0)
    return BRAID_EPROTO;
  size_t total = i + 1 + n + 1;
  if (len < total) {
    msg->need = total;
    return 0;
  }
  if (buf[total - 1] != ',')
    return BRAID_EPROTO;
  msg->payload_off = i + 1;
  msg->payload_len = n;
  return (int)total;
}

/* ---- the table ----------------------------------------------------------------------------- */

enum { K_BRAID, K_LF, K_DELIM, K_NETSTRING };

typedef struct {
  const char *name;
  int kind;
  size_t max;           /* braid: max payload; others: max frame */
  unsigned lf_size;     /* length field */
  int lf_big, lf_off;   /* length field */
  int64_t lf_adjust;    /* length field */
  size_t lf_strip;      /* length field */
  const char *delim;    /* delimiter */
  int delim_strip;      /* delimiter */
  const char *stream;   /* bytes */
  size_t stream_len;
  const char *payloads[MAX_MSGS]; /* expected payloads, NULL-terminated */
  int end;                        /* 0 (need more / clean end) or the error */
  size_t pending;                 /* bytes left unframed at the end when end == 0 */
} tcase_t;

#define S(lit) lit, sizeof(lit) - 1
#define BR(lit) K_BRAID, 64, 0, 0, 0, 0, 0, NULL, 0, S(lit)
#define LF(max, size, big, off, adj, strip, lit) K_LF, max, size, big, off, adj, strip, NULL, 0, \
    S(lit)
#define DL(max, d, strip, lit) K_DELIM, max, 0, 0, 0, 0, 0, d, strip, S(lit)
#define NS(max, lit) K_NETSTRING, max, 0, 0, 0, 0, 0, NULL, 0, S(lit)

/* Braid frames used below (see PROTOCOL.md): */
#define F_HELLO "BR\x01\x01\0\0\0\0\0\0\0\x01\0\0\0\x05hello"
#define F_PING0 "BR\x01\x04\0\0\0\0\0\0\0\x07\0\0\0\0"
#define F_BATCH "BR\x01\x01\x02\0\0\0\0\0\0\x02\0\0\0\x0f\0\0\0\x02\0\0\0\x01" "a\0\0\0\x02" "bc"

static const tcase_t cases[] = {
    /* braid frames */
    {"braid: three frames", BR(F_HELLO F_PING0 F_BATCH),
     {"hello", "", "\0\0\0\x02\0\0\0\x01" "a\0\0\0\x02" "bc"}, 0, 0},
    {"braid: partial tail", BR(F_HELLO "BR\x01\x02\0\0\0\0\0\0\0\x01\0\0\0\x05wor"), {"hello"},
     0, 19},
    {"braid: bad magic after a frame", BR(F_HELLO "GET / HTTP/1.1\r\n"), {"hello"}, BRAID_EPROTO,
     0},
    {"braid: reserved flag", BR(F_PING0 "BR\x01\x01\x10"), {""}, BRAID_EPROTO, 0},
    {"braid: version 2", BR("BR\x02"), {NULL}, BRAID_EPROTO, 0},
    {"braid: payload over max", BR("BR\x01\x01\0\0\0\0\0\0\0\x01\0\0\0\x41"), {NULL},
     BRAID_ETOOBIG, 0},
    {"braid: payload at max",
     K_BRAID, 64, 0, 0, 0, 0, 0, NULL, 0,
     S("BR\x01\x02\0\0\0\0\0\0\0\x01\0\0\0\x40"
       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
     {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, 0, 0},

    /* length field: every width and byte order, stripping the length */
    {"lf: 1 byte", LF(100, 1, 1, 0, 0, 1, "\x03" "abc\x00\x01z"), {"abc", "", "z"}, 0, 0},
    {"lf: 2 BE", LF(100, 2, 1, 0, 0, 2, "\0\x03" "abc\0\0\0\x01z"), {"abc", "", "z"}, 0, 0},
    {"lf: 2 LE", LF(100, 2, 0, 0, 0, 2, "\x03\0" "abc\0\0\x01\0z"), {"abc", "", "z"}, 0, 0},
    {"lf: 4 BE", LF(100, 4, 1, 0, 0, 4, "\0\0\0\x03" "abc\0\0\0\x01z\0\0"), {"abc", "z"}, 0,
     2},
    {"lf: 4 LE", LF(100, 4, 0, 0, 0, 4, "\x03\0\0\0" "abc\x01\0\0\0z"), {"abc", "z"}, 0, 0},
    {"lf: 8 BE", LF(100, 8, 1, 0, 0, 8, "\0\0\0\0\0\0\0\x02" "ab\0\0\0\0\0\0\0\0"), {"ab", ""},
     0, 0},
    {"lf: 8 LE", LF(100, 8, 0, 0, 0, 8, "\x02\0\0\0\0\0\0\0" "ab\x01\0\0\0\0\0\0\0z"),
     {"ab", "z"}, 0, 0},
    /* offset: a 2-byte tag before the length; keep the header, or strip it */
    {"lf: offset 2 keep", LF(100, 2, 1, 2, 0, 0, "XY\0\x02" "abXY\0\0"),
     {"XY\0\x02" "ab", "XY\0\0"}, 0, 0},
    {"lf: offset 2 strip 4", LF(100, 2, 1, 2, 0, 4, "XY\0\x02" "abXY\0\0"), {"ab", ""}, 0, 0},
    /* adjustment: the length counts the whole frame (Netty's -2), or a 2-byte header
     * follows the length (+2) */
    {"lf: adjust -2", LF(100, 2, 1, 0, -2, 2, "\0\x05" "abc\0\x02"), {"abc", ""}, 0, 0},
    {"lf: adjust +2 strip 3", LF(100, 2, 1, 0, 2, 3, "\0\x03HHabc\0\0HH"), {"Habc", "H"}, 0,
     0},
    {"lf: frame exactly max", LF(8, 2, 1, 0, 0, 2, "\0\x06" "abcdef"), {"abcdef"}, 0, 0},
    {"lf: frame max + 1", LF(8, 2, 1, 0, 0, 2, "\0\x01z\0\x07"), {"z"}, BRAID_ETOOBIG, 0},
    {"lf: 8-byte huge", LF(100, 8, 1, 0, 0, 8, "\xff\xff\xff\xff\xff\xff\xff\xff"), {NULL},
     BRAID_ETOOBIG, 0},
    {"lf: 4-byte 4 GiB LE", LF(1u << 30, 4, 0, 0, 0, 4, "\xff\xff\xff\xff"), {NULL},
     BRAID_ETOOBIG, 0},
    {"lf: shorter than its header", LF(100, 2, 1, 0, -3, 0, "\0\x01z"), {NULL}, BRAID_EPROTO,
     0},
    {"lf: strip beyond frame", LF(100, 2, 1, 0, 0, 4, "\0\x02" "ab\0\x01z"), {"", NULL},
     BRAID_EPROTO, 0},

    /* delimiters */
    {"delim: crlf", DL(100, "\r\n", 1, "a\r\nbc\r\n\r\nd"), {"a", "bc", ""}, 0, 1},
    {"delim: crlf kept", DL(100, "\r\n", 0, "a\r\nbc\r\n"), {"a\r\n", "bc\r\n"}, 0, 0},
    {"delim: lone cr is data", DL(100, "\r\n", 1, "a\rb\r\r\n\n"), {"a\rb\r"}, 0, 1},
    {"delim: 1 byte", DL(100, "\n", 1, "x\n\nyz\n"), {"x", "", "yz"}, 0, 0},
    {"delim: overlapping prefix", DL(100, "aab", 1, "aaab" "xaab" "aaaaab"),
     {"a", "x", "aaa"}, 0, 0},
    {"delim: self-overlap", DL(100, "abab", 1, "abaabab" "ababab"), {"aba", ""}, 0, 2},
    {"delim: 16 bytes", DL(100, "0123456789abcdef", 1, "x0123456789abcde0123456789abcdef"),
     {"x0123456789abcde"}, 0, 0},
    {"delim: ends exactly at max", DL(4, "\r\n", 1, "ab\r\n\r\n"), {"ab", ""}, 0, 0},
    {"delim: ends past max", DL(4, "\r\n", 1, "ab\r\nabc\r\n"), {"ab"}, BRAID_ETOOBIG, 0},
    {"delim: none within max", DL(8, "\r\n", 1, "0123456789"), {NULL}, BRAID_ETOOBIG, 0},
    {"delim: none yet, under max", DL(8, "\r\n", 1, "012345\r"), {NULL}, 0, 7},

    /* custom (netstrings) */
    {"custom: netstrings", NS(100, "3:abc,0:,1:z,"), {"abc", "", "z"}, 0, 0},
    {"custom: partial", NS(100, "3:abc,12"), {"abc"}, 0, 2},
    {"custom: bad terminator", NS(100, "3:abc;"), {NULL}, BRAID_EPROTO, 0},
    {"custom: over max by need", NS(10, "3:abc,9:"), {"abc"}, BRAID_ETOOBIG, 0},
    {"custom: over max by bytes", NS(4, "1234"), {NULL}, BRAID_ETOOBIG, 0},
    /* Found by fuzz_framer: the callback must not see past max, or "too many digits" (seen
     * whole) and "too big" (seen in pieces) would both be possible answers. */
    {"custom: past max is not shown", NS(4, "1234567890"), {NULL}, BRAID_ETOOBIG, 0},
};

static void setup_framer(const tcase_t *c, braid_framer_t *f) {
  switch (c->kind) {
  case K_BRAID:
    assert_int_equal(braid_framer_init_braid(f, c->max), 0);
    break;
  case K_LF: {
    braid_length_field_opts_t o;
    braid_length_field_opts_init(&o);
    o.max_frame_bytes = c->max;
    o.length_size = c->lf_size;
    o.big_endian = c->lf_big;
    o.length_offset = (size_t)c->lf_off;
    o.length_adjust = c->lf_adjust;
    o.strip_bytes = c->lf_strip;
    assert_int_equal(braid_framer_init_length_field(f, &o), 0);
    break;
  }
  case K_DELIM: {
    braid_delimiter_opts_t o;
    braid_delimiter_opts_init(&o);
    o.delimiter = c->delim;
    o.delimiter_len = strlen(c->delim);
    o.max_frame_bytes = c->max;
    o.strip_delimiter = c->delim_strip;
    assert_int_equal(braid_framer_init_delimiter(f, &o), 0);
    break;
  }
  default:
    assert_int_equal(braid_framer_init_custom(f, netstring_fn, NULL, c->max), 0);
  }
}

/* What a way of framing found. */
typedef struct {
  size_t n;
  uint8_t payload[MAX_MSGS][128];
  size_t payload_len[MAX_MSGS];
  int end;
  size_t pending;
} result_t;

static void record(result_t *r, const uint8_t *payload, size_t len) {
  assert_true(r->n < MAX_MSGS);
  assert_true(len <= 128);
  memcpy(r->payload[r->n], payload, len);
  r->payload_len[r->n++] = len;
}

static void check(const tcase_t *c, const result_t *r, const char *how) {
  size_t want = 0;
  while (want < MAX_MSGS && c->payloads[want])
    want++;
  if (r->n != want || r->end != c->end)
    fail_msg("%s (%s): %zu messages, end %d; want %zu, end %d", c->name, how, r->n, r->end,
             want, c->end);
  for (size_t i = 0; i < want; i++) {
    /* Payloads in the table are C strings, but some contain NULs: compare by the length
     * the binary layout implies, which is the length found. */
    if (memcmp(r->payload[i], c->payloads[i], r->payload_len[i]) != 0)
      fail_msg("%s (%s): message %zu differs", c->name, how, i);
  }
  if (c->end == 0 && r->pending != c->pending)
    fail_msg("%s (%s): pending %zu, want %zu", c->name, how, r->pending, c->pending);
}

/* Lengths of the expected payloads, where they contain NULs, are proven by the whole-buffer
 * run (frame_len accounting); here the printable ones are checked exactly too. */
static void check_lengths(const tcase_t *c, const result_t *r) {
  for (size_t i = 0; i < r->n; i++) {
    size_t sl = strlen(c->payloads[i]);
    if (memchr(r->payload[i], 0, r->payload_len[i]) == NULL && r->payload_len[i] != sl)
      fail_msg("%s: message %zu has length %zu, want %zu", c->name, i, r->payload_len[i], sl);
  }
}

/* The whole stream in one buffer, straight through braid_framer_next(). */
static void frame_whole(const tcase_t *c, result_t *r) {
  braid_framer_t f;
  setup_framer(c, &f);
  memset(r, 0, sizeof(*r));
  const uint8_t *s = (const uint8_t *)c->stream;
  size_t off = 0;
  for (;;) {
    braid_framer_msg_t m;
    int rc = braid_framer_next(&f, s + off, c->stream_len - off, &m);
    if (rc < 0) {
      r->end = rc;
      return;
    }
    if (rc == 0) {
      r->pending = c->stream_len - off;
      return;
    }
    assert_int_equal((size_t)rc, m.frame_len);
    assert_true(m.payload_off + m.payload_len <= m.frame_len);
    record(r, s + off + m.payload_off, m.payload_len);
    off += m.frame_len;
  }
}

/* One more byte per call to braid_framer_next(): a message must complete exactly when its
 * last byte arrives, and every need reported on the way must be a lower bound of it. */
static void frame_bytewise(const tcase_t *c, result_t *r) {
  braid_framer_t f;
  setup_framer(c, &f);
  memset(r, 0, sizeof(*r));
  const uint8_t *s = (const uint8_t *)c->stream;
  size_t off = 0, have = 0, max_need = 0;
  for (;;) {
    braid_framer_msg_t m;
    int rc = braid_framer_next(&f, s + off, have - off, &m);
    if (rc < 0) {
      r->end = rc;
      return;
    }
    if (rc > 0) {
      assert_int_equal(m.frame_len, have - off);
      assert_true(m.frame_len >= max_need); /* a need is a lower bound */
      record(r, s + off + m.payload_off, m.payload_len);
      off = have;
      max_need = 0;
      continue;
    }
    if (m.need) {
      assert_true(m.need > have - off);
      assert_true(m.need <= braid_framer_max_frame(&f));
      if (m.need > max_need)
        max_need = m.need;
    }
    if (have == c->stream_len) {
      r->pending = have - off;
      return;
    }
    have++;
  }
}

/* Through a framebuf, pushed in pieces ending at cuts[0..ncuts) and then the end. Checks
 * that messages not spanning a push are views into the pushed bytes. */
static void frame_pushed(const tcase_t *c, const size_t *cuts, size_t ncuts, result_t *r) {
  braid_framer_t f;
  braid_framebuf_t fb;
  setup_framer(c, &f);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  memset(r, 0, sizeof(*r));
  /* Each piece is copied to its own heap buffer, freed right after, so ASan catches a
   * message view that outlives its push. */
  size_t start = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : c->stream_len;
    size_t n = end - start;
    uint8_t *piece = malloc(n ? n : 1);
    memcpy(piece, c->stream + start, n);
    assert_int_equal(braid_framebuf_push(&fb, piece, n), 0);
    int rc;
    braid_framebuf_msg_t m;
    while ((rc = braid_framebuf_next(&fb, &m)) == 1) {
      assert_true(m.payload >= m.frame && m.payload + m.payload_len <= m.frame + m.frame_len);
      if (!m.copied)
        assert_true(m.frame >= piece && m.frame + m.frame_len <= piece + n);
      record(r, m.payload, m.payload_len);
    }
    free(piece);
    if (rc < 0) {
      r->end = rc;
      assert_int_equal(braid_framebuf_next(&fb, &m), rc); /* sticky */
      assert_int_equal(braid_framebuf_push(&fb, "x", 1), rc);
      break;
    }
    start = end;
  }
  r->pending = braid_framebuf_pending(&fb);
  assert_true(fb.len <= braid_framer_max_frame(&f));
  assert_true(fb.cap <= braid_framer_max_frame(&f));
  braid_framebuf_free(&fb);
}

static void test_table(void **state) {
  (void)state;
  for (size_t t = 0; t < ARRAY_SIZE(cases); t++) {
    const tcase_t *c = &cases[t];
    result_t r;
    frame_whole(c, &r);
    check(c, &r, "whole");
    check_lengths(c, &r);
    frame_bytewise(c, &r);
    check(c, &r, "byte at a time");
    size_t n = c->stream_len;
    /* Every split point, and every pair of split points. */
    for (size_t a = 0; a <= n; a++) {
      size_t cuts[2] = {a, 0};
      frame_pushed(c, cuts, 1, &r);
      check(c, &r, "one split");
      for (size_t b = a; b <= n; b++) {
        cuts[1] = b;
        frame_pushed(c, cuts, 2, &r);
        check(c, &r, "two splits");
      }
    }
    /* One byte per push. */
    size_t ones[256];
    assert_true(n <= ARRAY_SIZE(ones));
    for (size_t i = 0; i < n; i++)
      ones[i] = i + 1;
    frame_pushed(c, ones, n, &r);
    check(c, &r, "one byte per push");
  }
}

/* ---- option validation ------------------------------------------------------------------ */

static void test_config_validation(void **state) {
  (void)state;
  braid_framer_t f, before;
  memset(&f, 0x5a, sizeof(f));
  before = f;
  assert_int_equal(braid_framer_init_braid(&f, 63), BRAID_EINVAL);
  assert_int_equal(braid_framer_init_braid(&f, (1u << 30) + 1), BRAID_EINVAL);
  assert_int_equal(braid_framer_init_braid(NULL, 64), BRAID_EINVAL);

  braid_length_field_opts_t o;
  braid_length_field_opts_init(&o);
  assert_int_equal(o.max_frame_bytes, BRAID_FRAMER_DEFAULT_MAX);
  assert_int_equal(o.length_size, 4);
  assert_int_equal(o.big_endian, 1);
  const unsigned bad_sizes[] = {0, 3, 5, 6, 7, 9, 16};
  for (size_t i = 0; i < ARRAY_SIZE(bad_sizes); i++) {
    braid_length_field_opts_init(&o);
    o.length_size = bad_sizes[i];
    assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  }
  braid_length_field_opts_init(&o);
  o.big_endian = 2;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  braid_length_field_opts_init(&o);
  o.max_frame_bytes = 0;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  o.max_frame_bytes = BRAID_FRAMER_MAX_CEILING + 1;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  braid_length_field_opts_init(&o);
  o.max_frame_bytes = 5;
  o.length_offset = 2; /* 2 + 4 > 5: the header alone would be over the maximum */
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  braid_length_field_opts_init(&o);
  o.length_offset = 65536;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  braid_length_field_opts_init(&o);
  o.max_frame_bytes = 100;
  o.length_adjust = 101;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  o.length_adjust = -101;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  o.length_adjust = 0;
  o.strip_bytes = 101;
  assert_int_equal(braid_framer_init_length_field(&f, &o), BRAID_EINVAL);
  assert_int_equal(braid_framer_init_length_field(&f, NULL), BRAID_EINVAL);
  /* The validators name the field (API.md rule 2). */
  braid_opts_error_t err;
  assert_int_equal(braid_length_field_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "strip_bytes");
  braid_length_field_opts_init(&o);
  assert_int_equal(braid_length_field_opts_validate(&o, &err), 0);
  o.length_size = 3;
  assert_int_equal(braid_length_field_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "length_size");
  {
    braid_delimiter_opts_t dd;
    braid_delimiter_opts_init(&dd);
    assert_int_equal(braid_delimiter_opts_validate(&dd, &err), 0);
    dd.delimiter_len = 0;
    assert_int_equal(braid_delimiter_opts_validate(&dd, &err), BRAID_EINVAL);
    assert_string_equal(err.field, "delimiter_len");
  }

  braid_delimiter_opts_t d;
  braid_delimiter_opts_init(&d);
  assert_int_equal(d.delimiter_len, 2);
  assert_memory_equal(d.delimiter, "\r\n", 2);
  d.delimiter_len = 0;
  assert_int_equal(braid_framer_init_delimiter(&f, &d), BRAID_EINVAL);
  d.delimiter_len = 17;
  d.delimiter = "01234567890123456";
  assert_int_equal(braid_framer_init_delimiter(&f, &d), BRAID_EINVAL);
  braid_delimiter_opts_init(&d);
  d.delimiter = NULL;
  assert_int_equal(braid_framer_init_delimiter(&f, &d), BRAID_EINVAL);
  braid_delimiter_opts_init(&d);
  d.max_frame_bytes = 1; /* smaller than the delimiter */
  assert_int_equal(braid_framer_init_delimiter(&f, &d), BRAID_EINVAL);
  braid_delimiter_opts_init(&d);
  d.strip_delimiter = -1;
  assert_int_equal(braid_framer_init_delimiter(&f, &d), BRAID_EINVAL);

  assert_int_equal(braid_framer_init_custom(&f, NULL, NULL, 10), BRAID_EINVAL);
  assert_int_equal(braid_framer_init_custom(&f, netstring_fn, NULL, 0), BRAID_EINVAL);
  assert_int_equal(
      braid_framer_init_custom(&f, netstring_fn, NULL, BRAID_FRAMER_MAX_CEILING + 1),
      BRAID_EINVAL);
  /* Nothing changed by any refusal. */
  assert_memory_equal(&f, &before, sizeof(f));

  braid_framer_msg_t m;
  assert_int_equal(braid_framer_init_braid(&f, 64), 0);
  assert_int_equal(braid_framer_max_frame(&f), 80);
  assert_int_equal(braid_framer_next(NULL, "x", 1, &m), BRAID_EINVAL);
  assert_int_equal(braid_framer_next(&f, NULL, 1, &m), BRAID_EINVAL);
  assert_int_equal(braid_framer_next(&f, "B", 1, NULL), BRAID_EINVAL);
  assert_int_equal(braid_framer_next(&f, NULL, 0, &m), 0);
  assert_int_equal(m.need, 16);
}

/* ---- custom framer contract enforcement --------------------------------------------------- */

typedef struct {
  int rc;
  braid_framer_msg_t m;
  size_t seen;
} canned_t;

static int canned_fn(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg) {
  canned_t *c = arg;
  (void)buf;
  c->seen = len;
  *msg = c->m;
  return c->rc;
}

static void test_custom_contract(void **state) {
  (void)state;
  const struct {
    canned_t c;
    size_t len;
    int want;
  } rows[] = {
      {{5, {0, 0, 5, 0}, 0}, 10, 5},            /* fine */
      {{11, {0, 0, 0, 0}, 0}, 10, BRAID_EPROTO}, /* frame beyond the bytes given */
      {{5, {0, 4, 2, 0}, 0}, 10, BRAID_EPROTO},  /* payload past the frame */
      {{5, {0, 6, 0, 0}, 0}, 10, BRAID_EPROTO},  /* payload offset past the frame */
      {{0, {0, 0, 0, 10}, 0}, 10, BRAID_EPROTO}, /* need not beyond what it has */
      {{0, {0, 0, 0, 21}, 0}, 10, BRAID_ETOOBIG}, /* need beyond max (20) */
      {{0, {0, 0, 0, 0}, 0}, 20, BRAID_ETOOBIG},  /* undecided at max */
      {{0, {0, 0, 0, 0}, 0}, 19, 0},             /* undecided under max */
      {{-12345, {0, 0, 0, 0}, 0}, 5, -12345},    /* its own error passes through */
  };
  static uint8_t buf[32];
  for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
    braid_framer_t f;
    canned_t c = rows[i].c;
    assert_int_equal(braid_framer_init_custom(&f, canned_fn, &c, 20), 0);
    braid_framer_msg_t m;
    int rc = braid_framer_next(&f, buf, rows[i].len, &m);
    if (rc != rows[i].want)
      fail_msg("row %zu: %d, want %d", i, rc, rows[i].want);
  }
  /* The callback is shown at most max bytes. */
  braid_framer_t f;
  canned_t c = {5, {0, 0, 5, 0}, 0};
  assert_int_equal(braid_framer_init_custom(&f, canned_fn, &c, 20), 0);
  braid_framer_msg_t m;
  assert_int_equal(braid_framer_next(&f, buf, 30, &m), 5);
  assert_int_equal(c.seen, 20);
  assert_int_equal(braid_framer_next(&f, buf, 7, &m), 5);
  assert_int_equal(c.seen, 7);
}

/* ---- framebuf specifics ----------------------------------------------------------------- */

static size_t allocs, max_alloc;
static void *count_malloc(size_t n) {
  allocs++;
  if (n > max_alloc)
    max_alloc = n;
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  allocs++;
  if (n > max_alloc)
    max_alloc = n;
  return realloc(p, n);
}
static void *count_calloc(size_t a, size_t b) {
  allocs++;
  return calloc(a, b);
}

static void lf4_framer(braid_framer_t *f, size_t max) {
  braid_length_field_opts_t o;
  braid_length_field_opts_init(&o);
  o.max_frame_bytes = max;
  o.strip_bytes = 4;
  assert_int_equal(braid_framer_init_length_field(f, &o), 0);
}

static size_t put_lf4(uint8_t *p, const void *data, uint32_t len) {
  p[0] = (uint8_t)(len >> 24);
  p[1] = (uint8_t)(len >> 16);
  p[2] = (uint8_t)(len >> 8);
  p[3] = (uint8_t)len;
  memcpy(p + 4, data, len);
  return 4 + len;
}

/* Whole messages cost no allocation and no copy; a partial one is assembled in exactly one
 * allocation sized from the length field, and the messages after it are views again. */
static void test_framebuf_zero_copy_and_allocations(void **state) {
  (void)state;
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  lf4_framer(&f, 100000);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);

  static uint8_t big[50000], rd[70000];
  memset(big, 'b', sizeof(big));
  size_t n = 0;
  n += put_lf4(rd + n, "one", 3);
  n += put_lf4(rd + n, "two", 3);
  allocs = 0;
  assert_int_equal(braid_framebuf_push(&fb, rd, n), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(braid_framebuf_next(&fb, &m), 1);
    assert_int_equal(m.copied, 0);
    assert_true(m.frame >= rd && m.frame < rd + n);
  }
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(allocs, 0);

  /* A 50000-byte message arriving in 1000-byte reads, followed by a small one. */
  n = put_lf4(rd, big, sizeof(big));
  n += put_lf4(rd + n, "tail", 4);
  size_t off = 0, got = 0;
  max_alloc = 0;
  while (off < n) {
    size_t piece = n - off < 1000 ? n - off : 1000;
    assert_int_equal(braid_framebuf_push(&fb, rd + off, piece), 0);
    int rc;
    while ((rc = braid_framebuf_next(&fb, &m)) == 1) {
      if (got == 0) {
        assert_int_equal(m.payload_len, sizeof(big));
        assert_int_equal(m.copied, 1);
        assert_memory_equal(m.payload, big, sizeof(big));
      } else {
        assert_int_equal(m.payload_len, 4);
        assert_memory_equal(m.payload, "tail", 4);
        assert_int_equal(m.copied, 0); /* only the big one's last bytes were copied */
      }
      got++;
    }
    assert_int_equal(rc, 0);
    off += piece;
  }
  assert_int_equal(got, 2);
  /* Room grew with the bytes (4 KiB, then twice what had arrived), and never past the
   * declared length: a few allocations, not one per read. */
  assert_true(allocs >= 2 && allocs <= 6);
  assert_int_equal(max_alloc, 4 + sizeof(big));
  /* The big buffer is let go once empty. */
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_null(fb.buf);
  assert_int_equal(braid_framebuf_pending(&fb), 0);
  braid_framebuf_free(&fb);
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

/* A stream of messages each longer than a read (64 KiB batch frames in 64 KiB reads), so
 * nearly every read ends inside one: the reassembly buffer is allocated once and reused for
 * every message, and let go when a read ends on a message boundary. */
static void test_framebuf_long_messages_reuse_buffer(void **state) {
  (void)state;
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  assert_int_equal(braid_framer_init_braid(&f, BRAID_FRAME_DEFAULT_MAX_PAYLOAD), 0);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  enum { N = 20, PLEN = 65796, READ = 65536 };
  size_t total = (size_t)N * (16 + PLEN);
  uint8_t *stream = malloc(total);
  for (int i = 0; i < N; i++) {
    uint8_t *fr = stream + (size_t)i * (16 + PLEN);
    braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, BRAID_FRAME_FLAG_BATCH, (uint32_t)i + 1,
                              PLEN};
    assert_int_equal(braid_frame_header_encode(fr, &h), 16);
    for (int k = 0; k < PLEN; k++)
      fr[16 + k] = (uint8_t)(i + k * 3);
  }
  allocs = 0;
  int got = 0;
  for (size_t off = 0; off < total; off += READ) {
    size_t piece = total - off < READ ? total - off : READ;
    assert_int_equal(braid_framebuf_push(&fb, stream + off, piece), 0);
    int rc;
    while ((rc = braid_framebuf_next(&fb, &m)) == 1) {
      assert_int_equal(m.payload_len, PLEN);
      assert_memory_equal(m.payload, stream + (size_t)got * (16 + PLEN) + 16, PLEN);
      got++;
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(got, N);
  assert_int_equal(allocs, 1); /* one buffer for all twenty */
  assert_null(fb.buf);         /* the last read ended on a boundary: let go */
  /* Small messages after a large one: the large buffer serves a small partial message at
   * most until that one is whole. */
  uint8_t small[16 + 10] = {0};
  braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, 0, 99, 10};
  assert_int_equal(braid_frame_header_encode(small, &h), 16);
  assert_int_equal(braid_framebuf_push(&fb, stream, 40000), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_non_null(fb.buf);
  uint8_t *rest = malloc(16 + PLEN - 40000 + sizeof(small) + 5);
  memcpy(rest, stream + 40000, 16 + PLEN - 40000);
  memcpy(rest + 16 + PLEN - 40000, small, sizeof(small));
  memcpy(rest + 16 + PLEN - 40000 + sizeof(small), small, 5); /* a partial small one */
  assert_int_equal(braid_framebuf_push(&fb, rest, 16 + PLEN - 40000 + sizeof(small) + 5), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.payload_len, PLEN);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.payload_len, 10);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_pending(&fb), 5);
  /* Once a small message has been reassembled in it, the large buffer goes. */
  uint8_t tail[sizeof(small) - 5 + 5];
  memcpy(tail, small + 5, sizeof(small) - 5);
  memcpy(tail + sizeof(small) - 5, small, 5);
  assert_int_equal(braid_framebuf_push(&fb, tail, sizeof(tail)), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.copied, 1);
  assert_int_equal(m.payload_len, 10);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_pending(&fb), 5);
  assert_true(fb.cap <= BRAID_FRAMEBUF_KEEP_BYTES);
  braid_framebuf_free(&fb);
  free(rest);
  free(stream);
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

/* A header declaring a huge message commits memory only as the bytes arrive. */
static void test_framebuf_large_message_grows_with_data(void **state) {
  (void)state;
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  assert_int_equal(braid_framer_init_braid(&f, BRAID_FRAME_DEFAULT_MAX_PAYLOAD), 0);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  const uint32_t plen = 3u << 20;
  uint8_t *frame = malloc(16 + plen);
  braid_frame_header_t h = {0, BRAID_FRAME_RESPONSE, 0, 9, plen};
  assert_int_equal(braid_frame_header_encode(frame, &h), 16);
  for (uint32_t i = 0; i < plen; i++)
    frame[16 + i] = (uint8_t)(i * 7);
  max_alloc = 0;
  size_t off = 0;
  int rc = 0;
  while (off < 16 + (size_t)plen) {
    size_t piece = 16 + plen - off < 65536 ? 16 + plen - off : 65536;
    assert_int_equal(braid_framebuf_push(&fb, frame + off, piece), 0);
    off += piece;
    rc = braid_framebuf_next(&fb, &m);
    if (rc == 0) /* room follows the data: at most about twice what arrived */
      assert_true(fb.cap <= 2 * off + 256 || fb.cap <= BRAID_FRAMEBUF_EAGER_BYTES);
  }
  assert_int_equal(rc, 1);
  assert_int_equal(m.copied, 1);
  assert_int_equal(m.payload_len, plen);
  assert_memory_equal(m.payload, frame + 16, plen);
  assert_true(max_alloc <= 16 + (size_t)plen + 65536 * 2);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_null(fb.buf); /* a big buffer is let go once drained */
  braid_framebuf_free(&fb);
  free(frame);
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

/* A 16-byte header may declare up to a megabyte without the bytes ever coming: an idle
 * connection that sent only that must not hold the megabyte (1,000 such connections held
 * 1 GB). Room follows what arrived, at most about twice it, and reaches the declared size
 * only as the message does. */
static void header_commits_little(uint32_t plen) {
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  assert_int_equal(braid_framer_init_braid(&f, BRAID_FRAME_DEFAULT_MAX_PAYLOAD), 0);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  uint8_t *frame = malloc(16 + (size_t)plen);
  braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, 0, 1, plen};
  assert_int_equal(braid_frame_header_encode(frame, &h), 16);
  for (uint32_t i = 0; i < plen; i++)
    frame[16 + i] = (uint8_t)(i * 13);
  max_alloc = 0;
  assert_int_equal(braid_framebuf_push(&fb, frame, 16 + 8), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_pending(&fb), 16 + 8);
  assert_true(fb.cap <= 4096);
  assert_true(max_alloc <= 4096);
  size_t off = 16 + 8;
  int rc = 0;
  while (off < 16 + (size_t)plen) {
    size_t piece = 16 + plen - off < 65536 ? 16 + plen - off : 65536;
    assert_int_equal(braid_framebuf_push(&fb, frame + off, piece), 0);
    off += piece;
    rc = braid_framebuf_next(&fb, &m);
    assert_true(fb.cap <= 2 * off || fb.cap <= 4096);
    assert_true(fb.cap <= 16 + (size_t)plen); /* never past the declared size */
  }
  assert_int_equal(rc, 1);
  assert_int_equal(m.payload_len, plen);
  assert_memory_equal(m.payload, frame + 16, plen);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  braid_framebuf_free(&fb);
  free(frame);
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

static void test_framebuf_header_commits_little(void **state) {
  (void)state;
  header_commits_little((1u << 20) - 16); /* a whole frame of exactly 1 MiB */
  header_commits_little(300000);
  header_commits_little(5000);
}

/* A delimiter framer does not know lengths: the framebuf appends a chunk, and gives back
 * what followed the message so the rest of the read stays zero-copy. */
static void test_framebuf_delimiter_give_back(void **state) {
  (void)state;
  braid_framer_t f;
  braid_delimiter_opts_t o;
  braid_delimiter_opts_init(&o);
  o.max_frame_bytes = 1000;
  assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  assert_int_equal(braid_framebuf_push(&fb, "GET /a", 6), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_pending(&fb), 6);
  const char *rest = "bc\r\nSET x\r\nPING\r\nDE";
  assert_int_equal(braid_framebuf_push(&fb, rest, strlen(rest)), 0);
  /* Pushing again before draining is refused, and changes nothing. */
  assert_int_equal(braid_framebuf_push(&fb, "zz", 2), BRAID_EBUSY);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.copied, 1);
  assert_int_equal(m.payload_len, 8);
  assert_memory_equal(m.payload, "GET /abc", 8);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.copied, 0);
  assert_ptr_equal(m.frame, rest + 4);
  assert_memory_equal(m.payload, "SET x", 5);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.copied, 0);
  assert_memory_equal(m.payload, "PING", 4);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_pending(&fb), 2);
  braid_framebuf_trim(&fb); /* holds a partial message: kept */
  assert_non_null(fb.buf);
  assert_int_equal(braid_framebuf_pending(&fb), 2);
  braid_framebuf_reset(&fb);
  assert_int_equal(braid_framebuf_pending(&fb), 0);
  assert_int_equal(braid_framebuf_push(&fb, "L\r\n", 3), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_memory_equal(m.payload, "L", 1);
  /* A message reassembled in the buffer, then trimmed once drained: no memory left. */
  assert_int_equal(braid_framebuf_push(&fb, "ab", 2), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_non_null(fb.buf);
  assert_int_equal(braid_framebuf_push(&fb, "\r\n", 2), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 1);
  assert_int_equal(m.copied, 1);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_non_null(fb.buf); /* small: kept for the next partial */
  braid_framebuf_trim(&fb);
  assert_null(fb.buf);
  assert_int_equal(braid_framebuf_pending(&fb), 0);
  braid_framebuf_free(&fb);
  braid_framebuf_free(NULL);
  assert_int_equal(braid_framebuf_init(NULL, &f), BRAID_EINVAL);
  assert_int_equal(braid_framebuf_init(&fb, NULL), BRAID_EINVAL);
}

/* A stream that never sends a delimiter is refused at the maximum, and the buffer never
 * grows past it, however it is fed. */
static void test_framebuf_bounded(void **state) {
  (void)state;
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_framer_t f;
  braid_delimiter_opts_t o;
  braid_delimiter_opts_init(&o);
  o.max_frame_bytes = 10000;
  assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
  static uint8_t junk[4096];
  memset(junk, 'j', sizeof(junk));
  const size_t pieces[] = {1, 7, 1000, 4096};
  for (size_t p = 0; p < ARRAY_SIZE(pieces); p++) {
    braid_framebuf_t fb;
    braid_framebuf_msg_t m;
    assert_int_equal(braid_framebuf_init(&fb, &f), 0);
    max_alloc = 0;
    int rc = 0;
    size_t fed = 0;
    while (rc == 0 && fed < 100000) {
      rc = braid_framebuf_push(&fb, junk, pieces[p]);
      if (rc == 0)
        rc = braid_framebuf_next(&fb, &m);
      fed += pieces[p];
    }
    assert_int_equal(rc, BRAID_ETOOBIG);
    assert_true(fed >= 10000 && fed < 10000 + pieces[p] + 1);
    assert_true(max_alloc <= 10000);
    braid_framebuf_free(&fb);
  }
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

/* The delimiter scan resumes where it stopped: after n bytes without a delimiter, only the
 * last delimiter_len - 1 bytes are still unsettled. */
static void test_delimiter_scan_resumes(void **state) {
  (void)state;
  braid_framer_t f;
  braid_delimiter_opts_t o;
  braid_delimiter_opts_init(&o);
  o.delimiter = "END!";
  o.delimiter_len = 4;
  o.max_frame_bytes = 1u << 20;
  assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
  static uint8_t buf[1u << 20];
  memset(buf, 'E', sizeof(buf)); /* every byte is a candidate start */
  braid_framer_msg_t m;
  size_t n = 1;
  for (; n < 900000; n += 1 + n / 64) {
    assert_int_equal(braid_framer_next(&f, buf, n, &m), 0);
    assert_int_equal(f.scanned, n >= 3 ? n - 3 : 0);
  }
  memcpy(buf + n, "END!", 4);
  assert_int_equal(braid_framer_next(&f, buf, n + 4, &m), (int)(n + 4));
  assert_int_equal(m.payload_len, n);
  assert_int_equal(f.scanned, 0);
}

/* Random streams of random messages for each framer kind, framed whole and through a
 * framebuf in random pieces: the same messages either way. */
static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static void test_random_streams(void **state) {
  (void)state;
  static uint8_t stream[20000];
  for (int round = 0; round < 200; round++) {
    braid_framer_t f;
    int kind = round % 3;
    size_t n = 0, nmsg = 0;
    static size_t lens[2000];
    if (kind == 0) {
      assert_int_equal(braid_framer_init_braid(&f, 300), 0);
      while (n + 16 + 300 < sizeof(stream)) {
        uint32_t plen = rnd(300);
        braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, 0, 1 + rnd(1000), plen};
        assert_int_equal(braid_frame_header_encode(stream + n, &h), 16);
        memset(stream + n + 16, 'p', plen);
        n += 16 + plen;
        lens[nmsg++] = plen;
      }
    } else if (kind == 1) {
      lf4_framer(&f, 400);
      while (n + 400 < sizeof(stream)) {
        uint32_t plen = rnd(396);
        static uint8_t fill[400];
        n += put_lf4(stream + n, fill, plen);
        lens[nmsg++] = plen;
      }
    } else {
      braid_delimiter_opts_t o;
      braid_delimiter_opts_init(&o);
      o.max_frame_bytes = 300;
      assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
      while (n + 300 < sizeof(stream)) {
        uint32_t plen = rnd(298);
        for (uint32_t i = 0; i < plen; i++)
          stream[n + i] = "ab\r\n"[rnd(3) == 0 ? 2 : rnd(2)]; /* lone \r, never \r\n */
        for (uint32_t i = 0; i + 1 < plen; i++)
          if (stream[n + i] == '\r' && stream[n + i + 1] == '\n')
            stream[n + i + 1] = 'a';
        if (plen && stream[n + plen - 1] == '\r')
          stream[n + plen - 1] = 'b';
        memcpy(stream + n + plen, "\r\n", 2);
        n += plen + 2;
        lens[nmsg++] = plen;
      }
    }
    braid_framebuf_t fb;
    braid_framebuf_msg_t m;
    assert_int_equal(braid_framebuf_init(&fb, &f), 0);
    size_t off = 0, got = 0;
    while (off < n) {
      size_t piece = 1 + rnd(round % 2 ? 700 : 40);
      if (piece > n - off)
        piece = n - off;
      assert_int_equal(braid_framebuf_push(&fb, stream + off, piece), 0);
      int rc;
      while ((rc = braid_framebuf_next(&fb, &m)) == 1) {
        assert_true(got < nmsg);
        if (m.payload_len != lens[got])
          fail_msg("round %d kind %d message %zu: %zu bytes, want %zu", round, kind, got,
                   m.payload_len, lens[got]);
        got++;
      }
      assert_int_equal(rc, 0);
      off += piece;
    }
    assert_int_equal(got, nmsg);
    assert_int_equal(braid_framebuf_pending(&fb), 0);
    braid_framebuf_free(&fb);
  }
}

/* After a failure the framebuf says what to send the peer: the braid framer's exact reason,
 * or a generic one for the other framers. */
static void test_framebuf_reject(void **state) {
  (void)state;
  const struct {
    const char *stream;
    size_t len;
    int err;
    uint16_t code;
    const char *message;
  } rows[] = {
      {"GET / HTTP/1.1\r\n", 16, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "bad magic"},
      {"BR\x02", 3, BRAID_EPROTO, BRAID_WIRE_VERSION, "unsupported protocol version"},
      {"BR\x01\x01\0\0\0\0\0\0\0\x01\0\x01\0\0", 16, BRAID_ETOOBIG, BRAID_WIRE_TOO_BIG,
       "frame payload exceeds the maximum"},
  };
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  braid_frame_reject_t r;
  assert_int_equal(braid_framer_init_braid(&f, 4096), 0);
  for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
    assert_int_equal(braid_framebuf_init(&fb, &f), 0);
    braid_framebuf_reject(&fb, &r);
    assert_int_equal(r.code, BRAID_WIRE_OK);
    /* In two pieces, so the failure may come from the partial path too. */
    assert_int_equal(braid_framebuf_push(&fb, rows[i].stream, 2), 0);
    int rc = braid_framebuf_next(&fb, &m);
    if (rc == 0) {
      assert_int_equal(braid_framebuf_push(&fb, rows[i].stream + 2, rows[i].len - 2), 0);
      rc = braid_framebuf_next(&fb, &m);
    }
    assert_int_equal(rc, rows[i].err);
    braid_framebuf_reject(&fb, &r);
    assert_int_equal(r.code, rows[i].code);
    assert_string_equal(r.message, rows[i].message);
    braid_framebuf_free(&fb);
  }
  braid_delimiter_opts_t o;
  braid_delimiter_opts_init(&o);
  o.max_frame_bytes = 4;
  assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
  assert_int_equal(braid_framebuf_init(&fb, &f), 0);
  assert_int_equal(braid_framebuf_push(&fb, "abcdef", 6), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), BRAID_ETOOBIG);
  braid_framebuf_reject(&fb, &r);
  assert_int_equal(r.code, BRAID_WIRE_TOO_BIG);
  braid_framebuf_reset(&fb);
  braid_framebuf_reject(&fb, &r);
  assert_int_equal(r.code, BRAID_WIRE_OK);
  braid_framebuf_free(&fb);
}

/* A custom framer that is not prefix-stable: "need more" below 300 bytes, then a 10-byte
 * message. The framebuf asked it about 200 bytes, appended 200 more, and must not hand back
 * more bytes than it appended (that read before the pushed buffer): a clear EPROTO. */
static int unstable_fn(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *m) {
  (void)arg;
  (void)buf;
  if (len < 300) {
    m->need = 0;
    return 0;
  }
  m->payload_off = 0;
  m->payload_len = 10;
  return 10;
}

static void test_custom_unstable_framer(void **state) {
  (void)state;
  braid_framer_t f;
  braid_framebuf_t fb;
  braid_framebuf_msg_t m;
  assert_int_equal(braid_framer_init_custom(&f, unstable_fn, NULL, 4096), 0);
  braid_framebuf_init(&fb, &f);
  char *a = calloc(1, 200), *b = calloc(1, 200);
  assert_int_equal(braid_framebuf_push(&fb, a, 200), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), 0);
  assert_int_equal(braid_framebuf_push(&fb, b, 200), 0);
  assert_int_equal(braid_framebuf_next(&fb, &m), BRAID_EPROTO);
  assert_int_equal(braid_framebuf_next(&fb, &m), BRAID_EPROTO); /* sticky */
  braid_framebuf_free(&fb);
  free(a);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_config_validation),
      cmocka_unit_test(test_custom_contract),
      cmocka_unit_test(test_framebuf_zero_copy_and_allocations),
      cmocka_unit_test(test_framebuf_large_message_grows_with_data),
      cmocka_unit_test(test_framebuf_header_commits_little),
      cmocka_unit_test(test_framebuf_long_messages_reuse_buffer),
      cmocka_unit_test(test_framebuf_delimiter_give_back),
      cmocka_unit_test(test_framebuf_bounded),
      cmocka_unit_test(test_delimiter_scan_resumes),
      cmocka_unit_test(test_random_streams),
      cmocka_unit_test(test_framebuf_reject),
      cmocka_unit_test(test_custom_unstable_framer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
