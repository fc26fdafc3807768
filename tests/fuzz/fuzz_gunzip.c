/* libFuzzer target: decompression with limits, one-shot and streaming, must agree.
 *
 * Input: one control byte (format, chunk size), then the compressed bytes. The one-shot
 * path (libdeflate where built with it) and the streaming path (zlib, fed in chunks) must
 * both accept or both reject; when they accept they must produce the same bytes; a rejected
 * stream must never have handed out more than the output cap. The one documented exception
 * (include/braid/gzip.h): libdeflate, by design, decodes some invalid deflate bodies (a
 * code-length repeat past the declared count, 287/288 literal or 31/32 distance codes...)
 * that zlib rejects. A disagreement is accepted only in that direction (one-shot accepts,
 * stream says BRAID_ECORRUPT) and only when zlib itself, run directly, rejects the deflate
 * body: container errors (header, check value, length) must agree. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <braid.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP (1u << 20)

static uint8_t stream_out[CAP + 65536];

static int run_stream(const braid_gzip_opts_t *o, const uint8_t *in, size_t n, size_t chunk,
                      size_t *len) {
  braid_gzip_stream_t *s;
  if (braid_gzip_stream_new(&s, BRAID_GZIP_DECOMPRESS, o) != 0)
    abort();
  size_t pos = 0, total = 0;
  int rc;
  for (;;) {
    size_t k = n - pos < chunk ? n - pos : chunk, iu, ou;
    size_t room = sizeof(stream_out) - total < chunk ? sizeof(stream_out) - total : chunk;
    rc = braid_gzip_stream_process(s, in + pos, k, &iu, stream_out + total, room, &ou,
                                   pos + k == n ? BRAID_GZIP_FINISH : 0);
    pos += iu;
    total += ou;
    if (rc != 0 || (room == 0 && total == sizeof(stream_out)))
      break;
  }
  braid_gzip_stream_free(s);
  *len = total;
  return rc;
}

/* zlib's messages for a bad container rather than a bad deflate body (zlib 1.2.x inflate.c). */
static const char *const container_errors[] = {
    "incorrect header check", "unknown compression method", "invalid window size",
    "unknown header flags set", "header crc mismatch", "incorrect data check",
    "incorrect length check",
};

/* Whether plain zlib rejects in[0..n) (as format f, gzip members chained) for its deflate
 * body, which libdeflate may decode anyway. Output is dropped; gives up (false) past CAP. */
static bool zlib_rejects_deflate_body(braid_gzip_format_t f, const uint8_t *in, size_t n) {
  static uint8_t sink[65536];
  z_stream z;
  memset(&z, 0, sizeof(z));
  int wbits = f == BRAID_GZIP_FORMAT_RAW ? -15 : f == BRAID_GZIP_FORMAT_ZLIB ? 15 : 31;
  if (inflateInit2(&z, wbits) != Z_OK)
    abort();
  z.next_in = (Bytef *)(uintptr_t)in;
  z.avail_in = (uInt)n;
  size_t total = 0;
  bool verdict = false;
  for (;;) {
    z.next_out = sink;
    z.avail_out = sizeof(sink);
    int zr = inflate(&z, Z_NO_FLUSH);
    total += sizeof(sink) - z.avail_out;
    if (zr == Z_STREAM_END && f == BRAID_GZIP_FORMAT_GZIP && z.avail_in > 0) {
      inflateReset(&z);
      continue;
    }
    if (zr == Z_DATA_ERROR && z.msg) {
      verdict = true;
      for (size_t i = 0; i < sizeof(container_errors) / sizeof(container_errors[0]); i++)
        if (strcmp(z.msg, container_errors[i]) == 0)
          verdict = false;
    }
    if (zr != Z_OK || total > CAP)
      break;
  }
  inflateEnd(&z);
  return verdict;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t ctl = data[0];
  data++;
  size--;
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.format = (braid_gzip_format_t)(ctl % 3);
  o.max_output_bytes = CAP;
  o.max_ratio = 0; /* the two paths measure the ratio at different points; see below */
  o.max_members = 8;
  size_t chunk = 1 + (size_t)(ctl >> 2) * 97;

  braid_gzip_t *gz;
  if (braid_gzip_new(&gz, &o) != 0)
    abort();
  void *out;
  size_t out_len;
  int rc1 = braid_gzip_decompress(gz, data, size, &out, &out_len);
  size_t len2;
  int rc2 = run_stream(&o, data, size, chunk, &len2);
  bool tolerated = rc1 == 0 && rc2 == BRAID_ECORRUPT &&
                   zlib_rejects_deflate_body(o.format, data, size);
  if ((rc1 == 0) != (rc2 == BRAID_GZIP_DONE) && !tolerated)
    abort();
  if (rc1 == 0 && !tolerated && (out_len != len2 || memcmp(out, stream_out, len2) != 0))
    abort();
  if (rc2 < 0 && len2 > CAP)
    abort();
  braid_gzip_buf_free(out);
  braid_gzip_free(gz);

  /* Again with a tight ratio cap, for crashes and the cap only. */
  o.max_ratio = 4;
  o.ratio_grace_bytes = 4096;
  if (braid_gzip_new(&gz, &o) != 0)
    abort();
  if (braid_gzip_decompress(gz, data, size, &out, &out_len) == 0) {
    if (out_len > 4096 && out_len > (size_t)4 * size)
      abort();
    braid_gzip_buf_free(out);
  }
  braid_gzip_free(gz);
  run_stream(&o, data, size, chunk, &len2);
  return 0;
}
