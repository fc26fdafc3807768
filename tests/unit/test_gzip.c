/* gzip/zlib/raw deflate: round trips (one-shot and streaming, every level and size class),
 * every rejection with its own code, the bomb against a cap, and the async calls. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "../support.h"
#include "internal.h"

static const braid_gzip_format_t formats[] = {BRAID_GZIP_FORMAT_GZIP, BRAID_GZIP_FORMAT_ZLIB,
                                              BRAID_GZIP_FORMAT_RAW};

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void) {
  return braid__xorshift64(&rng);
}

/* Text-like data: words from a small vocabulary, so it compresses a few times over. */
static uint8_t *make_text(size_t n) {
  static const char *words[] = {"the ", "braid ",  "loop ",        "gzip ", "stream ",   "of ",
                                "and ", "buffer ", "connection\n", "42 ",   "{\"id\": ", "}, "};
  uint8_t *p = malloc(n ? n : 1);
  size_t i = 0;
  while (i < n) {
    const char *w = words[rnd() % BRAID__ARRAY_SIZE(words)];
    size_t k = strlen(w);
    if (k > n - i)
      k = n - i;
    memcpy(p + i, w, k);
    i += k;
  }
  return p;
}

static uint8_t *make_random(size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(rnd() >> 32);
  return p;
}

static braid_gzip_opts_t opts_for(braid_gzip_format_t f, int level) {
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.format = f;
  o.level = level;
  o.min_size_bytes = 0;
  return o;
}

/* One-shot compress with o, returning a malloc'd copy in *out. */
static void oneshot_compress(const braid_gzip_opts_t *o, const uint8_t *in, size_t n,
                             uint8_t **out,
                             size_t *out_len) {
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, o), 0);
  void *buf;
  assert_int_equal(braid_gzip_compress_alloc(gz, in, n, &buf, out_len), 0);
  assert_true(*out_len <= braid_gzip_compress_bound(gz, n));
  *out = malloc(*out_len ? *out_len : 1);
  memcpy(*out, buf, *out_len);
  braid_gzip_buf_free(buf);
  braid_gzip_free(gz);
}

/* One-shot decompress; returns the code, and the output (malloc'd) on success. */
static int oneshot_decompress(const braid_gzip_opts_t *o, const uint8_t *in, size_t n,
                              uint8_t **out, size_t *out_len) {
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, o), 0);
  void *buf;
  size_t len;
  int rc = braid_gzip_decompress(gz, in, n, &buf, &len);
  if (rc == 0) {
    assert_non_null(buf);
    if (out) {
      *out = malloc(len ? len : 1);
      memcpy(*out, buf, len);
      *out_len = len;
    }
    braid_gzip_buf_free(buf);
  } else {
    assert_null(buf);
    assert_int_equal(len, 0);
  }
  braid_gzip_free(gz);
  return rc;
}

/* Streams in through s in random input chunks (1..max_chunk bytes) and random output room,
 * collecting the output. Returns the final code (DONE or an error); *total gets the output
 * length and *peak_room the output room ever offered in one call. */
static int stream_run(braid_gzip_stream_t *s, const uint8_t *in, size_t n, size_t max_chunk,
                      uint8_t **out, size_t *total) {
  size_t cap = 1024, len = 0, pos = 0;
  uint8_t *buf = malloc(cap);
  int rc;
  for (;;) {
    size_t chunk = 1 + rnd() % max_chunk;
    if (chunk > n - pos)
      chunk = n - pos;
    int flags = pos + chunk == n ? BRAID_GZIP_FINISH : 0;
    size_t room = 1 + rnd() % max_chunk;
    if (cap - len < room) {
      cap = (len + room) * 2;
      buf = realloc(buf, cap);
    }
    size_t iu, ou;
    rc = braid_gzip_stream_process(s, in + pos, chunk, &iu, buf + len, room, &ou, flags);
    assert_true(iu <= chunk);
    assert_true(ou <= room);
    pos += iu;
    len += ou;
    if (rc != 0)
      break;
  }
  *out = buf;
  *total = len;
  return rc;
}

static int stream_decompress(const braid_gzip_opts_t *o, const uint8_t *in, size_t n,
                             size_t max_chunk, uint8_t **out, size_t *len) {
  braid_gzip_stream_t *s;
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_DECOMPRESS, o), 0);
  uint8_t *buf;
  int rc = stream_run(s, in, n, max_chunk, &buf, len);
  braid_gzip_stream_free(s);
  if (out)
    *out = buf;
  else
    free(buf);
  return rc;
}

static void stream_compress(const braid_gzip_opts_t *o, const uint8_t *in, size_t n,
                            size_t max_chunk, uint8_t **out, size_t *len) {
  braid_gzip_stream_t *s;
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_COMPRESS, o), 0);
  assert_int_equal(stream_run(s, in, n, max_chunk, out, len), BRAID_GZIP_DONE);
  braid_gzip_stream_free(s);
}

/* Both decoders must say code for in (and agree on the output when code is 0). */
static void expect_both(const braid_gzip_opts_t *o, const uint8_t *in, size_t n, int code) {
  int rc1 = oneshot_decompress(o, in, n, NULL, NULL);
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, o), 0);
  static uint8_t big[1 << 20];
  size_t into_len;
  int rc3 = braid_gzip_decompress_into(gz, in, n, big, sizeof(big), &into_len);
  braid_gzip_free(gz);
  if (rc3 != code)
    fail_msg("expected %s, decompress_into said %s", braid_err_name(code), braid_err_name(rc3));
  size_t len;
  int rc2 = stream_decompress(o, in, n, 1 + rnd() % 64, NULL, &len);
  if (rc2 == BRAID_GZIP_DONE)
    rc2 = 0;
  if (rc1 != code || rc2 != code)
    fail_msg("expected %s, one-shot said %s, stream said %s", braid_err_name(code),
             braid_err_name(rc1), braid_err_name(rc2));
}

static void test_opts(void **state) {
  (void)state;
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  assert_int_equal(o.format, BRAID_GZIP_FORMAT_GZIP);
  assert_int_equal(o.level, 6);
  assert_true(o.max_output_bytes > 0 && o.max_ratio > 0 && o.max_members > 0);
  braid_gzip_opts_init(NULL);
  braid_gzip_t *gz = (braid_gzip_t *)&o;
  o.level = 10;
  assert_int_equal(braid_gzip_new(&gz, &o), BRAID_EINVAL);
  assert_ptr_equal(gz, (braid_gzip_t *)&o); /* untouched */
  /* The validator says which field and why (API.md rule 2). */
  braid_opts_error_t err;
  assert_int_equal(braid_gzip_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "level");
  assert_non_null(strstr(err.reason, "10"));
  assert_int_equal(braid_gzip_opts_validate(&o, NULL), BRAID_EINVAL);
  o.level = 6;
  assert_int_equal(braid_gzip_opts_validate(&o, &err), 0);
  assert_string_equal(err.field, "");
  o.format = (braid_gzip_format_t)3;
  assert_int_equal(braid_gzip_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "format");
  o.format = BRAID_GZIP_FORMAT_GZIP;
  o.level = 10;
  o.level = -1;
  assert_int_equal(braid_gzip_new(&gz, &o), BRAID_EINVAL);
  o.level = 1;
  o.format = (braid_gzip_format_t)3;
  braid_gzip_stream_t *s;
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_COMPRESS, &o), BRAID_EINVAL);
  assert_int_equal(braid_gzip_stream_new(&s, (braid_gzip_mode_t)7, NULL), BRAID_EINVAL);
  assert_int_equal(braid_gzip_new(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_gzip_new(&gz, NULL), 0);
  size_t len;
  void *p;
  assert_int_equal(braid_gzip_compress(gz, NULL, 5, NULL, 0, &len), BRAID_EINVAL);
  assert_int_equal(braid_gzip_decompress(gz, NULL, 5, &p, &len), BRAID_EINVAL);
  assert_int_equal(braid_gzip_decompress(gz, "x", 1, NULL, &len), BRAID_EINVAL);
  braid_gzip_free(gz);
  braid_gzip_free(NULL);
  braid_gzip_stream_free(NULL);
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_DECOMPRESS, NULL), 0);
  size_t iu, ou;
  assert_int_equal(braid_gzip_stream_process(s, NULL, 1, &iu, NULL, 0, &ou, 0), BRAID_EINVAL);
  assert_int_equal(braid_gzip_stream_process(s, "x", 1, &iu, NULL, 0, &ou, 64), BRAID_EINVAL);
  assert_int_equal(braid_gzip_stream_process(s, "x", 1, NULL, NULL, 0, &ou, 0), BRAID_EINVAL);
  braid_gzip_stream_free(s);
}

/* Every format, every level, every size class, one-shot and streaming both ways. */
static void test_round_trips(void **state) {
  (void)state;
  const size_t sizes[] = {0, 1, 1024, (1u << 20) + 12345};
  for (size_t fi = 0; fi < BRAID__ARRAY_SIZE(formats); fi++) {
    for (int level = 0; level <= 9; level++) {
      for (size_t si = 0; si <= BRAID__ARRAY_SIZE(sizes); si++) {
        bool random = si == BRAID__ARRAY_SIZE(sizes);
        size_t n = random ? 200000 : sizes[si];
        /* The 1 MiB class at every level costs seconds under ASan: levels 0, 1, 6, 9. */
        if (n > 1000000 && level != 0 && level != 1 && level != 6 && level != 9)
          continue;
        uint8_t *data = random ? make_random(n) : make_text(n);
        braid_gzip_opts_t o = opts_for(formats[fi], level);
        uint8_t *z, *back;
        size_t zlen, blen;
        oneshot_compress(&o, data, n, &z, &zlen);
        if (!random && n > 1000 && level > 0)
          assert_true(zlen < n / 2);
        assert_int_equal(oneshot_decompress(&o, z, zlen, &back, &blen), 0);
        assert_int_equal(blen, n);
        assert_memory_equal(back, data, n);
        free(back);
        assert_int_equal(stream_decompress(&o, z, zlen, 1 + rnd() % 70000, &back, &blen),
                         BRAID_GZIP_DONE);
        assert_int_equal(blen, n);
        assert_memory_equal(back, data, n);
        free(back);
        free(z);
        /* The stream compressor's output must read back through the one-shot path. */
        stream_compress(&o, data, n, 1 + rnd() % 70000, &z, &zlen);
        assert_int_equal(oneshot_decompress(&o, z, zlen, &back, &blen), 0);
        assert_int_equal(blen, n);
        assert_memory_equal(back, data, n);
        free(back);
        free(z);
        free(data);
      }
    }
  }
}

/* Streaming in tiny pieces: 1-byte chunks in and out, then random sizes from 1 byte up. */
static void test_streaming_chunks(void **state) {
  (void)state;
  size_t n = 50000;
  uint8_t *data = make_text(n);
  for (size_t fi = 0; fi < BRAID__ARRAY_SIZE(formats); fi++) {
    braid_gzip_opts_t o = opts_for(formats[fi], 6);
    for (size_t max_chunk = 1; max_chunk <= 100000; max_chunk *= 17) {
      uint8_t *z, *back;
      size_t zlen, blen;
      stream_compress(&o, data, n, max_chunk, &z, &zlen);
      assert_int_equal(stream_decompress(&o, z, zlen, max_chunk, &back, &blen), BRAID_GZIP_DONE);
      assert_int_equal(blen, n);
      assert_memory_equal(back, data, n);
      free(back);
      free(z);
    }
  }
  free(data);
}

/* FLUSH makes everything so far decodable, before the stream is finished. */
static void test_stream_flush(void **state) {
  (void)state;
  braid_gzip_stream_t *c, *d;
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_GZIP, 6);
  assert_int_equal(braid_gzip_stream_new(&c, BRAID_GZIP_COMPRESS, &o), 0);
  assert_int_equal(braid_gzip_stream_new(&d, BRAID_GZIP_DECOMPRESS, &o), 0);
  for (int round = 0; round < 2; round++) {
    char msg[64], z[256], back[256];
    int mlen = snprintf(msg, sizeof(msg), "message number %d, flushed", round);
    size_t iu, zlen, blen;
    assert_int_equal(
        braid_gzip_stream_process(c, msg, (size_t)mlen, &iu, z, sizeof(z), &zlen,
                                  BRAID_GZIP_FLUSH),
        0);
    assert_int_equal(iu, (size_t)mlen);
    assert_int_equal(braid_gzip_stream_process(d, z, zlen, &iu, back, sizeof(back), &blen, 0), 0);
    assert_int_equal(iu, zlen);
    assert_int_equal(blen, (size_t)mlen);
    assert_memory_equal(back, msg, blen);
  }
  uint64_t tin, tout;
  braid_gzip_stream_totals(c, &tin, &tout);
  assert_true(tin > 0 && tout > 0);
  /* Reset gives a fresh stream that works the same. */
  assert_int_equal(braid_gzip_stream_reset(c), 0);
  braid_gzip_stream_totals(c, &tin, &tout);
  assert_int_equal(tin, 0);
  braid_gzip_stream_free(c);
  braid_gzip_stream_free(d);
}

static void test_min_size_and_bound(void **state) {
  (void)state;
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.min_size_bytes = 100;
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &o), 0);
  uint8_t out[512];
  size_t len = 99;
  uint8_t *text = make_text(200);
  assert_int_equal(braid_gzip_compress(gz, text, 99, out, sizeof(out), &len), BRAID_GZIP_SKIPPED);
  assert_int_equal(len, 0);
  void *p = (void *)1;
  assert_int_equal(braid_gzip_compress_alloc(gz, text, 50, &p, &len), BRAID_GZIP_SKIPPED);
  assert_null(p);
  assert_int_equal(braid_gzip_compress(gz, text, 100, out, sizeof(out), &len), 0);
  assert_true(len > 18);
  assert_int_equal(braid_gzip_compress(gz, text, 200, out, 10, &len), BRAID_ETOOBIG);
  free(text);
  /* Incompressible input at the bound always fits. */
  uint8_t *rnd_data = make_random(100000);
  size_t cap = braid_gzip_compress_bound(gz, 100000);
  uint8_t *big = malloc(cap);
  assert_int_equal(braid_gzip_compress(gz, rnd_data, 100000, big, cap, &len), 0);
  assert_true(len <= cap);
  assert_int_equal(braid_gzip_compress_bound(gz, SIZE_MAX), 0);
  free(big);
  free(rnd_data);
  braid_gzip_free(gz);
}

/* Builds a gzip member by hand around a raw deflate body, with the header flags given. */
static size_t build_gzip(uint8_t *out, const uint8_t *data, size_t n, uint8_t flg, bool bad_hcrc) {
  size_t i = 0;
  out[i++] = 0x1f;
  out[i++] = 0x8b;
  out[i++] = 8;
  out[i++] = flg;
  memset(out + i, 0, 6);
  i += 6;
  if (flg & 0x04) {
    out[i++] = 3;
    out[i++] = 0;
    memcpy(out + i, "abc", 3);
    i += 3;
  }
  if (flg & 0x08) {
    memcpy(out + i, "name.txt", 9);
    i += 9;
  }
  if (flg & 0x10) {
    memcpy(out + i, "a comment", 10);
    i += 10;
  }
  if (flg & 0x02) {
    uint32_t c = (uint32_t)crc32(0, out, (uInt)i) ^ (bad_hcrc ? 1u : 0u);
    out[i++] = (uint8_t)c;
    out[i++] = (uint8_t)(c >> 8);
  }
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_RAW, 6);
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &o), 0);
  size_t zlen;
  assert_int_equal(braid_gzip_compress(gz, data, n, out + i, 4096, &zlen), 0);
  braid_gzip_free(gz);
  i += zlen;
  uint32_t c = (uint32_t)crc32(0, data, (uInt)n);
  for (int k = 0; k < 4; k++)
    out[i++] = (uint8_t)(c >> (8 * k));
  for (int k = 0; k < 4; k++)
    out[i++] = (uint8_t)(n >> (8 * k));
  return i;
}

static void test_header_fields(void **state) {
  (void)state;
  const uint8_t data[] = "hello hello hello header fields";
  uint8_t buf[8192];
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_GZIP, 6);
  for (unsigned flg = 0; flg < 32; flg++) {
    size_t n = build_gzip(buf, data, sizeof(data), (uint8_t)flg, false);
    uint8_t *back;
    size_t blen;
    assert_int_equal(oneshot_decompress(&o, buf, n, &back, &blen), 0);
    assert_int_equal(blen, sizeof(data));
    assert_memory_equal(back, data, blen);
    free(back);
    for (size_t chunk = 1; chunk < 20; chunk += 6) {
      assert_int_equal(stream_decompress(&o, buf, n, chunk, &back, &blen), BRAID_GZIP_DONE);
      assert_int_equal(blen, sizeof(data));
      free(back);
    }
  }
}

static void test_rejections(void **state) {
  (void)state;
  size_t n = 5000;
  uint8_t *data = make_text(n);
  uint8_t buf[16384];
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_GZIP, 6);
  uint8_t *z;
  size_t zlen;
  oneshot_compress(&o, data, n, &z, &zlen);
  expect_both(&o, z, zlen, 0);

  /* Truncated: empty, inside the header, the body, the trailer. */
  expect_both(&o, z, 0, BRAID_ETRUNCATED);
  for (size_t cut = 1; cut < zlen; cut += (cut < 20 || cut > zlen - 10) ? 1 : 97)
    expect_both(&o, z, cut, BRAID_ETRUNCATED);

  /* Trailing garbage: junk, a lone 0x1f, and zero padding. */
  memcpy(buf, z, zlen);
  memcpy(buf + zlen, "junk", 4);
  expect_both(&o, buf, zlen + 4, BRAID_ETRAILING);
  buf[zlen] = 0x1f;
  buf[zlen + 1] = 0x00;
  expect_both(&o, buf, zlen + 2, BRAID_ETRAILING);
  buf[zlen] = 0;
  expect_both(&o, buf, zlen + 1, BRAID_ETRAILING);
  /* ... but a lone 0x1f at the very end is the start of a truncated member. */
  buf[zlen] = 0x1f;
  expect_both(&o, buf, zlen + 1, BRAID_ETRUNCATED);

  /* Bad CRC32, bad ISIZE. */
  memcpy(buf, z, zlen);
  buf[zlen - 8] ^= 0x01;
  expect_both(&o, buf, zlen, BRAID_EBADCRC);
  memcpy(buf, z, zlen);
  buf[zlen - 1] ^= 0x80;
  expect_both(&o, buf, zlen, BRAID_EBADSIZE);

  /* Unknown method, reserved flag, bad magic, invalid deflate (block type 3). */
  memcpy(buf, z, zlen);
  buf[2] = 7;
  expect_both(&o, buf, zlen, BRAID_EBADMETHOD);
  memcpy(buf, z, zlen);
  buf[3] = 0x20;
  expect_both(&o, buf, zlen, BRAID_EBADMETHOD);
  memcpy(buf, z, zlen);
  buf[1] = 0x8c;
  expect_both(&o, buf, zlen, BRAID_ECORRUPT);
  memcpy(buf, z, zlen);
  buf[10] = 0x07; /* BFINAL=1, BTYPE=11 */
  expect_both(&o, buf, zlen, BRAID_ECORRUPT);

  /* Header CRC: right one accepted (test_header_fields), wrong one rejected. */
  size_t hn = build_gzip(buf, data, 100, 0x02 | 0x08, true);
  expect_both(&o, buf, hn, BRAID_EBADHCRC);

  /* Members: three accepted by default, rejected over max_members. */
  for (int k = 0; k < 3; k++)
    memcpy(buf + k * zlen, z, zlen);
  uint8_t *back;
  size_t blen;
  assert_int_equal(oneshot_decompress(&o, buf, 3 * zlen, &back, &blen), 0);
  assert_int_equal(blen, 3 * n);
  assert_memory_equal(back + 2 * n, data, n);
  free(back);
  assert_int_equal(stream_decompress(&o, buf, 3 * zlen, 1, &back, &blen), BRAID_GZIP_DONE);
  assert_int_equal(blen, 3 * n);
  free(back);
  braid_gzip_opts_t om = o;
  om.max_members = 2;
  expect_both(&om, buf, 2 * zlen, 0);
  expect_both(&om, buf, 3 * zlen, BRAID_EMEMBERS);
  free(z);

  /* zlib: bad Adler-32, bad header check, unknown method, preset dictionary, trailing. */
  braid_gzip_opts_t oz = opts_for(BRAID_GZIP_FORMAT_ZLIB, 6);
  oneshot_compress(&oz, data, n, &z, &zlen);
  expect_both(&oz, z, zlen, 0);
  expect_both(&oz, z, zlen - 1, BRAID_ETRUNCATED);
  memcpy(buf, z, zlen);
  buf[zlen - 1] ^= 1;
  expect_both(&oz, buf, zlen, BRAID_EBADCRC);
  memcpy(buf, z, zlen);
  buf[1] ^= 1;
  expect_both(&oz, buf, zlen, BRAID_ECORRUPT);
  memcpy(buf, z, zlen);
  buf[0] = 0x77; /* CM 7, CINFO 7 */
  buf[1] = (uint8_t)(31 - (0x77 * 256) % 31);
  expect_both(&oz, buf, zlen, BRAID_EBADMETHOD);
  buf[0] = 0x78;
  buf[1] = 0x20; /* FDICT */
  buf[1] = (uint8_t)(buf[1] + (31 - (0x7820 % 31)) % 31);
  expect_both(&oz, buf, zlen, BRAID_EBADMETHOD);
  memcpy(buf, z, zlen);
  memcpy(buf + zlen, z, zlen); /* zlib has no members: a second stream is trailing data */
  expect_both(&oz, buf, 2 * zlen, BRAID_ETRAILING);
  free(z);

  /* raw: truncated, trailing. */
  braid_gzip_opts_t orw = opts_for(BRAID_GZIP_FORMAT_RAW, 6);
  oneshot_compress(&orw, data, n, &z, &zlen);
  expect_both(&orw, z, zlen, 0);
  expect_both(&orw, z, zlen / 2, BRAID_ETRUNCATED);
  expect_both(&orw, z, 0, BRAID_ETRUNCATED);
  memcpy(buf, z, zlen);
  buf[zlen] = 0;
  expect_both(&orw, buf, zlen + 1, BRAID_ETRAILING);
  free(z);
  free(data);
}

static void test_output_cap_and_ratio(void **state) {
  (void)state;
  size_t n = 100000;
  uint8_t *data = make_text(n);
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_GZIP, 6);
  uint8_t *z;
  size_t zlen;
  oneshot_compress(&o, data, n, &z, &zlen);
  o.max_output_bytes = n;
  expect_both(&o, z, zlen, 0); /* exactly at the cap is fine */
  o.max_output_bytes = n - 1;
  expect_both(&o, z, zlen, BRAID_EOUTPUTCAP);
  o.max_output_bytes = 0; /* no cap */
  expect_both(&o, z, zlen, 0);
  /* Ratio: the text compresses ~4x; a cap of 2 with no grace rejects it. */
  o.max_ratio = 2;
  o.ratio_grace_bytes = 0;
  expect_both(&o, z, zlen, BRAID_ERATIO);
  o.ratio_grace_bytes = n;
  expect_both(&o, z, zlen, 0);
  /* Over the cap, the stream hands out exactly the cap, never more. */
  braid_gzip_opts_init(&o);
  o.max_output_bytes = 12345;
  size_t len;
  assert_int_equal(stream_decompress(&o, z, zlen, 777, NULL, &len), BRAID_EOUTPUTCAP);
  assert_int_equal(len, 12345);
  free(z);
  free(data);
}

/* Into a caller's buffer: exact fit, one byte short, and the same codes as the others. */
static void test_decompress_into(void **state) {
  (void)state;
  for (size_t fi = 0; fi < BRAID__ARRAY_SIZE(formats); fi++) {
    size_t n = 70000;
    uint8_t *data = make_text(n);
    braid_gzip_opts_t o = opts_for(formats[fi], 6);
    uint8_t *z;
    size_t zlen, len = 1;
    oneshot_compress(&o, data, n, &z, &zlen);
    braid_gzip_t *gz;
    assert_int_equal(braid_gzip_new(&gz, &o), 0);
    uint8_t *out = malloc(n + 10);
    assert_int_equal(braid_gzip_decompress_into(gz, z, zlen, out, n, &len), 0);
    assert_int_equal(len, n);
    assert_memory_equal(out, data, n);
    assert_int_equal(braid_gzip_decompress_into(gz, z, zlen, out, n - 1, &len), BRAID_EOUTPUTCAP);
    assert_int_equal(len, 0);
    assert_int_equal(braid_gzip_decompress_into(gz, z, zlen, NULL, 0, &len), BRAID_EOUTPUTCAP);
    assert_int_equal(braid_gzip_decompress_into(gz, z, zlen - 1, out, n + 10, &len),
                     BRAID_ETRUNCATED);
    assert_int_equal(braid_gzip_decompress_into(gz, z, zlen, NULL, 5, &len), BRAID_EINVAL);
    braid_gzip_free(gz);
    free(out);
    free(z);
    free(data);
  }
}

/* 10 MB of zeros against a 1 MB cap: rejected, having produced at most the cap. */
static void test_bomb(void **state) {
  (void)state;
  size_t n = 10u * 1000 * 1000;
  uint8_t *zeros = calloc(1, n);
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_GZIP, 9);
  uint8_t *z;
  size_t zlen;
  oneshot_compress(&o, zeros, n, &z, &zlen);
  free(zeros);
  assert_true(zlen < 20000);
  braid_gzip_opts_init(&o);
  o.max_output_bytes = 1000 * 1000;
  o.max_ratio = 0;
  assert_int_equal(oneshot_decompress(&o, z, zlen, NULL, NULL), BRAID_EOUTPUTCAP);
  /* Streamed through a 64 KiB buffer in 4 KiB input chunks. */
  braid_gzip_stream_t *s;
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_DECOMPRESS, &o), 0);
  static uint8_t out[65536];
  size_t pos = 0, total = 0;
  int rc = 0;
  while (rc == 0) {
    size_t chunk = zlen - pos < 4096 ? zlen - pos : 4096, iu, ou;
    rc = braid_gzip_stream_process(s, z + pos, chunk, &iu, out, sizeof(out), &ou,
                                   pos + chunk == zlen ? BRAID_GZIP_FINISH : 0);
    pos += iu;
    total += ou;
    for (size_t i = 0; i < ou; i++)
      assert_int_equal(out[i], 0);
  }
  assert_int_equal(rc, BRAID_EOUTPUTCAP);
  assert_true(total <= o.max_output_bytes);
  /* Sticky. */
  size_t iu, ou;
  assert_int_equal(braid_gzip_stream_process(s, NULL, 0, &iu, out, sizeof(out), &ou, 0),
                   BRAID_EOUTPUTCAP);
  /* The default ratio cap (200, past 1 MiB) stops the same bomb with no output cap. */
  braid_gzip_opts_init(&o);
  o.max_output_bytes = 0;
  assert_int_equal(oneshot_decompress(&o, z, zlen, NULL, NULL), BRAID_ERATIO);
  braid_gzip_stream_free(s);
  assert_int_equal(stream_decompress(&o, z, zlen, 4096, NULL, &total), BRAID_ERATIO);
  assert_true(total <= 2u << 20);
  free(z);
}

/* ---- memory bounds, measured through the allocator hook ---------------------------- */

static size_t mem_now, mem_peak;

static void *count_malloc(size_t n) {
  size_t *p = malloc(n + sizeof(max_align_t));
  if (!p)
    return NULL;
  *p = n;
  mem_now += n;
  if (mem_now > mem_peak)
    mem_peak = mem_now;
  return (char *)p + sizeof(max_align_t);
}

static void count_free(void *q) {
  if (!q)
    return;
  size_t *p = (size_t *)((char *)q - sizeof(max_align_t));
  mem_now -= *p;
  free(p);
}

static void *count_realloc(void *q, size_t n) {
  void *r = count_malloc(n);
  if (r && q) {
    size_t old = *(size_t *)((char *)q - sizeof(max_align_t));
    memcpy(r, q, old < n ? old : n);
    count_free(q);
  }
  return r;
}

static void *count_calloc(size_t k, size_t n) {
  void *r = count_malloc(k * n);
  if (r)
    memset(r, 0, k * n);
  return r;
}

/* A stream's memory does not grow with the input: a 4 MB file name, then a 10 MB bomb. The
 * one-shot path allocates at most the cap, whatever ISIZE claims. */
static void test_memory_bounded(void **state) {
  (void)state;
  size_t n = 10u * 1000 * 1000, name_len = 4u << 20;
  uint8_t *zeros = calloc(1, n);
  braid_gzip_opts_t o = opts_for(BRAID_GZIP_FORMAT_RAW, 9);
  uint8_t *body;
  size_t body_len;
  oneshot_compress(&o, zeros, n, &body, &body_len);
  free(zeros);
  size_t total = 10 + name_len + 1 + body_len + 8;
  uint8_t *g = malloc(total);
  memcpy(g, "\x1f\x8b\x08\x08\0\0\0\0\0\xff", 10);
  memset(g + 10, 'n', name_len);
  g[10 + name_len] = 0;
  memcpy(g + 11 + name_len, body, body_len);
  memset(g + 11 + name_len + body_len, 0, 8); /* CRC32 of zeros is not 0: never reached */
  free(body);

  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, count_free),
                   0);
  mem_now = mem_peak = 0;
  braid_gzip_opts_init(&o);
  o.max_output_bytes = 0;
  o.max_ratio = 0;
  braid_gzip_stream_t *s;
  assert_int_equal(braid_gzip_stream_new(&s, BRAID_GZIP_DECOMPRESS, &o), 0);
  static uint8_t out[65536];
  size_t pos = 0, produced = 0;
  int rc = 0;
  while (rc == 0) {
    size_t k = total - pos < 65536 ? total - pos : 65536, iu, ou;
    rc = braid_gzip_stream_process(s, g + pos, k, &iu, out, sizeof(out), &ou,
                                   pos + k == total ? BRAID_GZIP_FINISH : 0);
    pos += iu;
    produced += ou;
  }
  assert_int_equal(rc, BRAID_EBADCRC); /* the whole stream went through */
  assert_int_equal(produced, n);
  braid_gzip_stream_free(s);
  size_t stream_peak = mem_peak;

  /* One-shot, ISIZE claiming ~10 MB, cap 1 MB: never more than the cap allocated. */
  mem_now = mem_peak = 0;
  o = opts_for(BRAID_GZIP_FORMAT_GZIP, 9);
  o.max_output_bytes = 1000 * 1000;
  uint8_t *gz10;
  size_t gz10_len;
  uint8_t *z10 = calloc(1, n);
  oneshot_compress(&o, z10, n, &gz10, &gz10_len);
  free(z10);
  mem_now = mem_peak = 0;
  assert_int_equal(oneshot_decompress(&o, gz10, gz10_len, NULL, NULL), BRAID_EOUTPUTCAP);
  size_t oneshot_peak = mem_peak;
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
  free(gz10);
  free(g);
  print_message("stream peak %zu bytes, one-shot peak %zu bytes\n", stream_peak, oneshot_peak);
  assert_true(stream_peak < 64 * 1024);
  /* The context, the output buffer (at most the cap) and the zlib classifier's state. */
  assert_true(oneshot_peak < 1000 * 1000 + 64 * 1024);
}

/* ---- async ------------------------------------------------------------------------- */

typedef struct {
  int calls;
  int status;
  void *out;
  size_t out_len;
  int returned; /* set once the submitting call returned */
  int early;    /* the callback ran before the call returned */
} async_res_t;

static void on_done(braid_loop_t *loop, int status, void *out, size_t out_len, void *arg) {
  async_res_t *r = arg;
  assert_non_null(loop);
  if (!r->returned)
    r->early = 1;
  r->calls++;
  r->status = status;
  r->out = out;
  r->out_len = out_len;
}

static void test_async(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.offload_threshold_bytes = 4096;
  const size_t sizes[] = {1000, 300000}; /* inline, then threadpool */
  for (size_t si = 0; si < 2; si++) {
    size_t n = sizes[si];
    uint8_t *data = make_text(n);
    async_res_t c = {0}, d = {0};
    assert_int_equal(braid_gzip_compress_async(t.loop, &o, data, n, on_done, &c), 0);
    c.returned = 1;
    assert_int_equal(c.calls, 0);
    bt_run_until(&t, &c.calls, 10000);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.early, 0);
    assert_int_equal(c.status, 0);
    assert_non_null(c.out);
    assert_int_equal(braid_gzip_decompress_async(t.loop, &o, c.out, c.out_len, on_done, &d), 0);
    d.returned = 1;
    bt_run_until(&t, &d.calls, 10000);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.early, 0);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.out_len, n);
    assert_memory_equal(d.out, data, n);
    /* Corrupt input: the error arrives in the callback, with no buffer. */
    ((uint8_t *)c.out)[c.out_len - 8] ^= 1;
    async_res_t e = {0};
    assert_int_equal(braid_gzip_decompress_async(t.loop, &o, c.out, c.out_len, on_done, &e), 0);
    e.returned = 1;
    bt_run_until(&t, &e.calls, 10000);
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.status, BRAID_EBADCRC);
    assert_null(e.out);
    braid_gzip_buf_free(c.out);
    braid_gzip_buf_free(d.out);
    free(data);
  }
  /* Short input: SKIPPED in the callback. */
  async_res_t s = {0};
  assert_int_equal(braid_gzip_compress_async(t.loop, NULL, "tiny", 4, on_done, &s), 0);
  bt_run_until(&t, &s.calls, 10000);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.status, BRAID_GZIP_SKIPPED);
  assert_null(s.out);
  /* Bad arguments: an error, and no callback ever. */
  async_res_t b = {0};
  o.level = 11;
  assert_int_equal(braid_gzip_compress_async(t.loop, &o, "x", 1, on_done, &b), BRAID_EINVAL);
  assert_int_equal(braid_gzip_compress_async(t.loop, NULL, NULL, 1, on_done, &b), BRAID_EINVAL);
  assert_int_equal(braid_gzip_decompress_async(NULL, NULL, "x", 1, on_done, &b), BRAID_EINVAL);
  assert_int_equal(braid_gzip_decompress_async(t.loop, NULL, "x", 1, NULL, &b), BRAID_EINVAL);
  bt_run(&t, 1000);
  assert_int_equal(b.calls, 0);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opts),
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_streaming_chunks),
      cmocka_unit_test(test_stream_flush),
      cmocka_unit_test(test_min_size_and_bound),
      cmocka_unit_test(test_header_fields),
      cmocka_unit_test(test_rejections),
      cmocka_unit_test(test_output_cap_and_ratio),
      cmocka_unit_test(test_decompress_into),
      cmocka_unit_test(test_bomb),
      cmocka_unit_test(test_memory_bounded),
      cmocka_unit_test(test_async),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
