/* braid wire protocol: the docs/PROTOCOL.md test vectors byte-exact (encode and decode),
 * every header rejection, error/goaway payloads, batch encode/decode round trips. */
#include <stdio.h>
#include <string.h>

#include "../support.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Parses "42 52 01 ..." into out; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  unsigned v;
  int used;
  while (sscanf(hex, " %2x%n", &v, &used) == 1) {
    assert_true(n < cap);
    out[n++] = (uint8_t)v;
    hex += used;
  }
  return n;
}

/* ---- the vectors of PROTOCOL.md section "Test vectors" ------------------------------- */

typedef struct {
  const char *name;
  const char *hex;
  uint8_t type, flags;
  uint32_t id;
  const char *payload_hex;
} vector_t;

static const vector_t vectors[] = {
    {"V1 request", "42 52 01 01 00 00 00 00 00 00 00 01 00 00 00 05 68 65 6c 6c 6f",
     BRAID_FRAME_REQUEST, 0, 1, "68 65 6c 6c 6f"},
    {"V2 response", "42 52 01 02 00 00 00 00 00 00 00 01 00 00 00 05 77 6f 72 6c 64",
     BRAID_FRAME_RESPONSE, 0, 1, "77 6f 72 6c 64"},
    {"V3 ping",
     "42 52 01 04 00 00 00 00 00 00 00 07 00 00 00 08 01 02 03 04 05 06 07 08",
     BRAID_FRAME_PING, 0, 7, "01 02 03 04 05 06 07 08"},
    {"V4 pong",
     "42 52 01 05 00 00 00 00 00 00 00 07 00 00 00 08 01 02 03 04 05 06 07 08",
     BRAID_FRAME_PONG, 0, 7, "01 02 03 04 05 06 07 08"},
    {"V5 error", "42 52 01 03 00 00 00 00 00 00 00 09 00 00 00 06 00 03 67 7a 69 70",
     BRAID_FRAME_ERROR, 0, 9, "00 03 67 7a 69 70"},
    {"V6 fatal error", "42 52 01 03 00 00 00 00 00 00 00 00 00 00 00 02 00 02",
     BRAID_FRAME_ERROR, 0, 0, "00 02"},
    {"V7 goaway",
     "42 52 01 06 00 00 00 00 00 00 00 00 00 00 00 09 00 00 00 29 00 00 62 79 65",
     BRAID_FRAME_GOAWAY, 0, 0, "00 00 00 29 00 00 62 79 65"},
    {"V8 batch request",
     "42 52 01 01 02 00 00 00 00 00 00 02 00 00 00 0f "
     "00 00 00 02 00 00 00 01 61 00 00 00 02 62 63",
     BRAID_FRAME_REQUEST, BRAID_FRAME_FLAG_BATCH, 2,
     "00 00 00 02 00 00 00 01 61 00 00 00 02 62 63"},
    {"V9 batch response",
     "42 52 01 02 02 00 00 00 00 00 00 02 00 00 00 15 "
     "00 00 00 02 00 00 00 00 00 01 41 00 06 00 00 00 04 6f 6f 70 73",
     BRAID_FRAME_RESPONSE, BRAID_FRAME_FLAG_BATCH, 2,
     "00 00 00 02 00 00 00 00 00 01 41 00 06 00 00 00 04 6f 6f 70 73"},
    {"V10 gzip request",
     "42 52 01 01 01 00 00 00 00 00 00 03 00 00 00 19 "
     "1f 8b 08 00 00 00 00 00 00 03 cb 48 cd c9 c9 07 00 86 a6 10 36 05 00 00 00",
     BRAID_FRAME_REQUEST, BRAID_FRAME_FLAG_GZIP, 3,
     "1f 8b 08 00 00 00 00 00 00 03 cb 48 cd c9 c9 07 00 86 a6 10 36 05 00 00 00"},
    {"V11 kv GET request", "42 52 01 01 00 00 00 00 00 00 00 04 00 00 00 05 01 00 02 6b 31",
     BRAID_FRAME_REQUEST, 0, 4, "01 00 02 6b 31"},
    {"V12 kv GET hit", "42 52 01 02 00 00 00 00 00 00 00 04 00 00 00 06 00 00 00 00 01 76",
     BRAID_FRAME_RESPONSE, 0, 4, "00 00 00 00 01 76"},
    {"V13 kv SET request",
     "42 52 01 01 00 00 00 00 00 00 00 05 00 00 00 0a 02 00 02 6b 31 00 00 00 01 76",
     BRAID_FRAME_REQUEST, 0, 5, "02 00 02 6b 31 00 00 00 01 76"},
    {"V14 kv MGET request",
     "42 52 01 01 00 00 00 00 00 00 00 06 00 00 00 0b 04 00 02 00 02 6b 31 00 02 6b 32",
     BRAID_FRAME_REQUEST, 0, 6, "04 00 02 00 02 6b 31 00 02 6b 32"},
    {"V15 kv MGET response",
     "42 52 01 02 00 00 00 00 00 00 00 06 00 00 00 09 00 02 00 00 00 00 01 76 01",
     BRAID_FRAME_RESPONSE, 0, 6, "00 02 00 00 00 00 01 76 01"},
};

static void test_vectors_decode(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_SIZE(vectors); i++) {
    const vector_t *v = &vectors[i];
    uint8_t wire[256], payload[256];
    size_t n = unhex(v->hex, wire, sizeof(wire));
    size_t pn = unhex(v->payload_hex, payload, sizeof(payload));
    braid_frame_t f;
    size_t need = 0;
    int rc = braid_frame_decode(wire, n, BRAID_FRAME_DEFAULT_MAX_PAYLOAD, &f, &need, NULL);
    if (rc != (int)n)
      fail_msg("%s: decode returned %d, expected %zu", v->name, rc, n);
    assert_int_equal(f.hdr.version, 1);
    assert_int_equal(f.hdr.type, v->type);
    assert_int_equal(f.hdr.flags, v->flags);
    assert_int_equal(f.hdr.id, v->id);
    assert_int_equal(f.hdr.payload_len, pn);
    assert_ptr_equal(f.payload, wire + 16);
    assert_memory_equal(f.payload, payload, pn);
    /* Every proper prefix is "need more", never an error. */
    for (size_t k = 0; k < n; k++) {
      need = 0;
      assert_int_equal(braid_frame_decode(wire, k, 64, &f, &need, NULL), 0);
      assert_int_equal(need, k < 16 ? 16 : n);
    }
  }
}

static void test_vectors_encode(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_SIZE(vectors); i++) {
    const vector_t *v = &vectors[i];
    uint8_t wire[256], out[256];
    size_t n = unhex(v->hex, wire, sizeof(wire));
    braid_frame_header_t h = {0, v->type, v->flags, v->id, (uint32_t)(n - 16)};
    assert_int_equal(braid_frame_header_encode(out, &h), 16);
    if (memcmp(out, wire, 16) != 0)
      fail_msg("%s: encoded header differs", v->name);
  }
  /* Payload encoders reproduce the payloads of V5, V7, V8 and V9. */
  uint8_t buf[64], want[64];
  size_t wn;
  wn = unhex("00 03 67 7a 69 70", want, sizeof(want));
  assert_int_equal(braid_frame_error_encode(buf, sizeof(buf), BRAID_WIRE_UNSUPPORTED, "gzip", 4),
                   (int)wn);
  assert_memory_equal(buf, want, wn);
  wn = unhex("00 00 00 29 00 00 62 79 65", want, sizeof(want));
  assert_int_equal(braid_frame_goaway_encode(buf, sizeof(buf), 41, 0, "bye", 3), (int)wn);
  assert_memory_equal(buf, want, wn);

  braid_batch_writer_t w;
  wn = unhex("00 00 00 02 00 00 00 01 61 00 00 00 02 62 63", want, sizeof(want));
  assert_int_equal(braid_batch_writer_init(&w, buf, sizeof(buf), 0), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "a", 1), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "bc", 2), 0);
  assert_int_equal(braid_batch_writer_finish(&w), (int)wn);
  assert_memory_equal(buf, want, wn);

  wn = unhex("00 00 00 02 00 00 00 00 00 01 41 00 06 00 00 00 04 6f 6f 70 73", want,
             sizeof(want));
  assert_int_equal(braid_batch_writer_init(&w, buf, sizeof(buf), 1), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "A", 1), 0);
  assert_int_equal(braid_batch_writer_add(&w, BRAID_WIRE_INTERNAL, "oops", 4), 0);
  assert_int_equal(braid_batch_writer_finish(&w), (int)wn);
  assert_memory_equal(buf, want, wn);
}

typedef struct {
  const char *name;
  const char *hex;
  int err;
  uint16_t code;
  size_t reject_at; /* the shortest prefix already rejected */
} bad_t;
static const bad_t bad[24];

/* The vectors in this file are the ones in PROTOCOL.md, character for character, so the
 * specification and the implementation cannot drift apart silently. */
static void test_vectors_match_doc(void **state) {
  (void)state;
  const char *path = getenv("BRAID_PROTOCOL_MD");
  if (!path)
    skip();
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  static char doc[256 * 1024];
  size_t n = fread(doc, 1, sizeof(doc) - 1, fp);
  fclose(fp);
  doc[n] = 0;
  /* The doc wraps long vectors; compare with all whitespace collapsed to single spaces. */
  static char flat[256 * 1024];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    char c = doc[i] == '\n' || doc[i] == '\t' ? ' ' : doc[i];
    if (c == ' ' && m > 0 && flat[m - 1] == ' ')
      continue;
    flat[m++] = c;
  }
  flat[m] = 0;
  for (size_t i = 0; i < ARRAY_SIZE(vectors); i++)
    if (!strstr(flat, vectors[i].hex))
      fail_msg("%s is not in PROTOCOL.md verbatim: %s", vectors[i].name, vectors[i].hex);
  for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
    if (!strstr(flat, bad[i].hex))
      fail_msg("rejection '%s' is not in PROTOCOL.md verbatim: %s", bad[i].name, bad[i].hex);
}

/* ---- rejections -------------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const bad_t bad[24] = {
    {"magic0", "43 52 01 01 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 1},
    {"magic1 (HTTP)", "47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 1},
    {"magic1", "42 53 01 01 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 2},
    {"version 2", "42 52 02 01 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_VERSION, 3},
    {"version 0", "42 52 00 01 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_VERSION, 3},
    {"type 0", "42 52 01 00 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 4},
    {"type 7", "42 52 01 07 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 4},
    {"type ff", "42 52 01 ff 00 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 4},
    {"flag 0x04", "42 52 01 01 04 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 5},
    {"flag 0x80", "42 52 01 01 80 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 5},
    {"reserved byte 5", "42 52 01 01 00 01 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 6},
    {"reserved byte 6", "42 52 01 01 00 00 80 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 7},
    {"reserved byte 7", "42 52 01 01 00 00 00 01 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 8},
    {"request id 0", "42 52 01 01 00 00 00 00 00 00 00 00 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"response id 0", "42 52 01 02 02 00 00 00 00 00 00 00 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"error with flags", "42 52 01 03 01 00 00 00 00 00 00 01 00 00 00 02", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"error shorter than code", "42 52 01 03 00 00 00 00 00 00 00 01 00 00 00 01",
     BRAID_EPROTO, BRAID_WIRE_PROTOCOL, 16},
    {"ping with batch", "42 52 01 04 02 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"pong with gzip", "42 52 01 05 01 00 00 00 00 00 00 01 00 00 00 00", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"goaway with id", "42 52 01 06 00 00 00 00 00 00 00 01 00 00 00 06", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"goaway too short", "42 52 01 06 00 00 00 00 00 00 00 00 00 00 00 05", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"goaway with flags", "42 52 01 06 02 00 00 00 00 00 00 00 00 00 00 06", BRAID_EPROTO,
     BRAID_WIRE_PROTOCOL, 16},
    {"payload over max", "42 52 01 01 00 00 00 00 00 00 00 01 00 00 10 01", BRAID_ETOOBIG,
     BRAID_WIRE_TOO_BIG, 16},
    {"payload 4 GiB - 1", "42 52 01 02 00 00 00 00 00 00 00 01 ff ff ff ff", BRAID_ETOOBIG,
     BRAID_WIRE_TOO_BIG, 16},
};

static void test_rejections(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
    const bad_t *b = &bad[i];
    uint8_t wire[16];
    assert_int_equal(unhex(b->hex, wire, sizeof(wire)), 16);
    for (size_t k = 0; k <= 16; k++) {
      braid_frame_header_t h;
      braid_frame_reject_t r = {0, NULL};
      int rc = braid_frame_header_decode(wire, k, 4096, &h, &r);
      int want = k < b->reject_at ? 0 : b->err;
      if (rc != want)
        fail_msg("%s: prefix %zu gave %d, want %d", b->name, k, rc, want);
      if (rc < 0) {
        assert_int_equal(r.code, b->code);
        assert_non_null(r.message);
      }
    }
    /* And the encoder refuses to produce it (where the encoder is told the same fields). */
    braid_frame_header_t h = {1, wire[3], wire[4], be32(wire + 8), be32(wire + 12)};
    /* Magic, version and reserved bytes are not the encoder's input; the 4 GiB length is
     * over the ceiling, and "over max" is fine for an encoder (the max is the receiver's). */
    int encoder_refuses = b->reject_at == 4 || b->reject_at == 5 ||
                          (b->reject_at == 16 && b->err == BRAID_EPROTO) ||
                          h.payload_len > BRAID_FRAME_MAX_PAYLOAD_CEILING;
    if (encoder_refuses) {
      uint8_t out[16] = {0};
      if (braid_frame_header_encode(out, &h) != BRAID_EINVAL)
        fail_msg("%s: the encoder accepted it", b->name);
    }
  }
}

static void test_bad_args(void **state) {
  (void)state;
  braid_frame_header_t h;
  braid_frame_t f;
  uint8_t buf[16] = {0x42, 0x52, 1, 4};
  assert_int_equal(braid_frame_header_decode(NULL, 1, 4096, &h, NULL), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_decode(buf, 16, 4096, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_decode(buf, 16, 63, &h, NULL), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_decode(buf, 16, (1u << 30) + 1, &h, NULL), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_decode(buf, 16, 64, &h, NULL), 16);
  assert_int_equal(braid_frame_header_decode(NULL, 0, 64, &h, NULL), 0);
  assert_int_equal(braid_frame_decode(buf, 16, 64, NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_frame_decode(buf, 16, 64, &f, NULL, NULL), 16);
  assert_int_equal(f.hdr.payload_len, 0);
  assert_int_equal(braid_frame_check_max(64), 0);
  assert_int_equal(braid_frame_check_max(1u << 30), 0);
  assert_int_equal(braid_frame_check_max(0), BRAID_EINVAL);

  h = (braid_frame_header_t){0, BRAID_FRAME_REQUEST, 0, 1, (1u << 30) + 1};
  assert_int_equal(braid_frame_header_encode(buf, &h), BRAID_EINVAL);
  h.payload_len = 1u << 30;
  assert_int_equal(braid_frame_header_encode(buf, &h), 16);
  h.flags = 0x04;
  assert_int_equal(braid_frame_header_encode(buf, &h), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_encode(NULL, &h), BRAID_EINVAL);
  assert_int_equal(braid_frame_header_encode(buf, NULL), BRAID_EINVAL);
}

/* The maximum applies to the payload, inclusive, and a just-too-big length is refused from
 * the header alone: nothing needs to be buffered to find out. */
static void test_max_boundary(void **state) {
  (void)state;
  uint8_t hdr[16];
  braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, 0, 5, 1000};
  assert_int_equal(braid_frame_header_encode(hdr, &h), 16);
  braid_frame_header_t out;
  assert_int_equal(braid_frame_header_decode(hdr, 16, 1000, &out, NULL), 16);
  assert_int_equal(braid_frame_header_decode(hdr, 16, 999, &out, NULL), BRAID_ETOOBIG);
  braid_frame_t f;
  size_t need = 0;
  assert_int_equal(braid_frame_decode(hdr, 16, 1000, &f, &need, NULL), 0);
  assert_int_equal(need, 1016);
  assert_int_equal(braid_frame_decode(hdr, 16, 999, &f, &need, NULL), BRAID_ETOOBIG);
}

static void test_error_goaway_payloads(void **state) {
  (void)state;
  uint8_t buf[32];
  uint16_t code;
  const char *msg;
  size_t mlen;
  assert_int_equal(braid_frame_error_encode(buf, 2, 7, NULL, 0), 2);
  assert_int_equal(braid_frame_error_decode(buf, 2, &code, &msg, &mlen), 0);
  assert_int_equal(code, 7);
  assert_int_equal(mlen, 0);
  assert_int_equal(braid_frame_error_encode(buf, 5, 7, "abcd", 4), BRAID_ETOOBIG);
  assert_int_equal(braid_frame_error_encode(buf, 1, 7, NULL, 0), BRAID_ETOOBIG);
  assert_int_equal(braid_frame_error_encode(buf, 8, 7, NULL, 3), BRAID_EINVAL);
  assert_int_equal(braid_frame_error_decode(buf, 1, &code, &msg, &mlen), BRAID_EPROTO);
  assert_int_equal(braid_frame_error_encode(buf, 32, 0x8001, "app", 3), 5);
  assert_int_equal(braid_frame_error_decode(buf, 5, &code, &msg, &mlen), 0);
  assert_int_equal(code, 0x8001);
  assert_int_equal(mlen, 3);
  assert_memory_equal(msg, "app", 3);

  uint32_t last;
  assert_int_equal(braid_frame_goaway_encode(buf, 6, 0xfffffffe, 8, NULL, 0), 6);
  assert_int_equal(braid_frame_goaway_decode(buf, 6, &last, &code, &msg, &mlen), 0);
  assert_int_equal(last, 0xfffffffe);
  assert_int_equal(code, 8);
  assert_int_equal(mlen, 0);
  assert_int_equal(braid_frame_goaway_decode(buf, 5, &last, &code, &msg, &mlen), BRAID_EPROTO);
  assert_int_equal(braid_frame_goaway_encode(buf, 7, 1, 0, "ab", 2), BRAID_ETOOBIG);

  assert_string_equal(braid_frame_code_name(BRAID_WIRE_UNSUPPORTED), "UNSUPPORTED");
  assert_string_equal(braid_frame_code_name(BRAID_WIRE_CANCELED), "CANCELED");
  assert_string_equal(braid_frame_code_name(0x9000), "APP");
  assert_string_equal(braid_frame_code_name(11), "UNKNOWN");
  assert_int_equal(braid_frame_code_from_err(BRAID_ENOTSUP), BRAID_WIRE_UNSUPPORTED);
  assert_int_equal(braid_frame_code_from_err(BRAID_ETOOBIG), BRAID_WIRE_TOO_BIG);
  assert_int_equal(braid_frame_code_from_err(UV_ECONNRESET), BRAID_WIRE_INTERNAL);
  assert_int_equal(braid_frame_code_from_err(BRAID_EUNAVAILABLE), BRAID_WIRE_OVERLOADED);
  assert_int_equal(braid_frame_code_from_err(BRAID_EPOOLFULL), BRAID_WIRE_OVERLOADED);
  assert_int_equal(braid_frame_code_from_err(0), BRAID_WIRE_OK);
}

/* ---- batches ------------------------------------------------------------------------------ */

static void test_batch_round_trips(void **state) {
  (void)state;
  static uint8_t buf[70000], data[70000];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(i * 31 + 7);
  const size_t sizes[] = {0, 1, 2, 3, 255, 256, 4095, 65536};
  for (int response = 0; response <= 1; response++) {
    for (size_t count = 1; count <= 64; count = count * 2 + 1) {
      braid_batch_writer_t w;
      assert_int_equal(braid_batch_writer_init(&w, buf, sizeof(buf), response), 0);
      size_t added = 0, off = 0;
      for (size_t i = 0; i < count; i++) {
        size_t len = sizes[(i + count) % ARRAY_SIZE(sizes)];
        if (off + len > sizeof(data))
          off = 0;
        uint16_t status = response ? (uint16_t)(i % 3 ? 0 : 0x8000 + i) : 0;
        int rc = braid_batch_writer_add(&w, status, data + off, len);
        if (rc == BRAID_ETOOBIG)
          break;
        assert_int_equal(rc, 0);
        added++;
        off += len;
      }
      int plen = braid_batch_writer_finish(&w);
      assert_true(plen > 0);

      braid_batch_reader_t r;
      uint32_t n = 0;
      assert_int_equal(braid_batch_reader_init(&r, buf, (size_t)plen, response, &n), 0);
      assert_int_equal(n, added);
      braid_batch_item_t it;
      off = 0;
      for (size_t i = 0; i < added; i++) {
        size_t len = sizes[(i + count) % ARRAY_SIZE(sizes)];
        if (off + len > sizeof(data))
          off = 0;
        assert_int_equal(braid_batch_reader_next(&r, &it), 1);
        assert_int_equal(it.len, len);
        assert_int_equal(it.status, response ? (uint16_t)(i % 3 ? 0 : 0x8000 + i) : 0);
        assert_memory_equal(it.data, data + off, len);
        off += len;
      }
      assert_int_equal(braid_batch_reader_next(&r, &it), 0);
      assert_int_equal(braid_batch_reader_next(&r, &it), 0);

      /* Every truncation and one byte extra are rejected; a request batch read as a
       * response batch (or the reverse) is rejected or reads differently, never overruns. */
      for (int k = 0; k < plen; k++)
        assert_int_equal(braid_batch_reader_init(&r, buf, (size_t)k, response, NULL),
                         BRAID_EPROTO);
      assert_int_equal(braid_batch_reader_init(&r, buf, (size_t)plen + 1, response, NULL),
                       BRAID_EPROTO);
    }
  }
}

static void test_batch_rejections(void **state) {
  (void)state;
  braid_batch_reader_t r;
  uint8_t b[64];
  size_t n;
  n = unhex("00 00 00 00", b, sizeof(b)); /* count 0 */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("ff ff ff ff 00 00 00 00", b, sizeof(b)); /* count beyond what fits */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("00 00 00 02 00 00 00 00 00 00 00", b, sizeof(b)); /* 2nd header cut */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("00 00 00 01 00 00 00 05 61 62", b, sizeof(b)); /* item overruns */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("00 00 00 01 ff ff ff ff 61 62", b, sizeof(b)); /* item length 4 GiB - 1 */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("00 00 00 01 00 00 00 00 00", b, sizeof(b)); /* trailing byte */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 0, NULL), BRAID_EPROTO);
  n = unhex("00 00 00 01 00 00 00 00 00 00", b, sizeof(b)); /* response: 6-byte item */
  assert_int_equal(braid_batch_reader_init(&r, b, n, 1, NULL), 0);
  assert_int_equal(braid_batch_reader_init(&r, b, 3, 1, NULL), BRAID_EPROTO);
  assert_int_equal(braid_batch_reader_init(NULL, b, n, 1, NULL), BRAID_EINVAL);
  assert_int_equal(braid_batch_reader_init(&r, NULL, 4, 1, NULL), BRAID_EINVAL);

  braid_batch_writer_t w;
  assert_int_equal(braid_batch_writer_init(&w, b, 3, 0), BRAID_EINVAL);
  assert_int_equal(braid_batch_writer_init(&w, b, 12, 0), 0);
  assert_int_equal(braid_batch_writer_finish(&w), BRAID_EINVAL); /* empty */
  assert_int_equal(braid_batch_writer_add(&w, 1, "x", 1), BRAID_EINVAL); /* status on req */
  assert_int_equal(braid_batch_writer_add(&w, 0, "abcde", 5), BRAID_ETOOBIG); /* 4+4+5 > 12 */
  assert_int_equal(braid_batch_writer_add(&w, 0, "abcd", 4), 0);               /* exactly 12 */
  assert_int_equal(braid_batch_writer_add(&w, 0, NULL, 0), BRAID_ETOOBIG);
  assert_int_equal(braid_batch_writer_finish(&w), 12);

  uint8_t h[6];
  assert_int_equal(braid_batch_item_header_encode(h, 0, 0, 258), 4);
  assert_memory_equal(h, "\x00\x00\x01\x02", 4);
  assert_int_equal(braid_batch_item_header_encode(h, 1, 0x0102, 3), 6);
  assert_memory_equal(h, "\x01\x02\x00\x00\x00\x03", 6);
  assert_int_equal(braid_batch_item_header_encode(h, 0, 1, 3), BRAID_EINVAL);
  assert_int_equal(braid_batch_count_encode(h, 0), BRAID_EINVAL);
  assert_int_equal(braid_batch_count_encode(h, 0x01020304), 4);
  assert_memory_equal(h, "\x01\x02\x03\x04", 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors_decode),    cmocka_unit_test(test_vectors_encode),
      cmocka_unit_test(test_vectors_match_doc), cmocka_unit_test(test_rejections),
      cmocka_unit_test(test_bad_args),          cmocka_unit_test(test_max_boundary),
      cmocka_unit_test(test_error_goaway_payloads), cmocka_unit_test(test_batch_round_trips),
      cmocka_unit_test(test_batch_rejections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
