/* libFuzzer target: whatever goes in comes back out, through every pairing of the one-shot
 * and streaming paths. Input: one control byte (format, level, chunk size), then the data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Streams in[0..n) through a new stream in mode, chunk bytes in and out at a time, into a
 * malloc'd buffer. Aborts unless the stream completes. */
static uint8_t *pump(braid_gzip_mode_t mode, const braid_gzip_opts_t *o, const uint8_t *in,
                     size_t n, size_t chunk, size_t *len) {
  braid_gzip_stream_t *s;
  if (braid_gzip_stream_new(&s, mode, o) != 0)
    abort();
  size_t cap = 1024, total = 0, pos = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (cap - total < chunk) {
      cap = (total + chunk) * 2;
      buf = realloc(buf, cap);
    }
    size_t k = n - pos < chunk ? n - pos : chunk, iu, ou;
    int rc = braid_gzip_stream_process(s, in + pos, k, &iu, buf + total, chunk, &ou,
                                       pos + k == n ? BRAID_GZIP_FINISH : 0);
    pos += iu;
    total += ou;
    if (rc == BRAID_GZIP_DONE)
      break;
    if (rc != 0)
      abort();
  }
  braid_gzip_stream_free(s);
  *len = total;
  return buf;
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
  o.level = (ctl / 3) % 10;
  o.min_size_bytes = 0;
  o.max_output_bytes = 0;
  o.max_ratio = 0;
  size_t chunk = 1 + (size_t)(ctl / 30) * 61;

  braid_gzip_t *gz;
  if (braid_gzip_new(&gz, &o) != 0)
    abort();
  void *z, *back;
  size_t zlen, blen;
  if (braid_gzip_compress_alloc(gz, data, size, &z, &zlen) != 0)
    abort();
  if (braid_gzip_decompress(gz, z, zlen, &back, &blen) != 0)
    abort();
  if (blen != size || memcmp(back, data, size) != 0)
    abort();
  braid_gzip_buf_free(back);
  size_t slen;
  uint8_t *sback = pump(BRAID_GZIP_DECOMPRESS, &o, z, zlen, chunk, &slen);
  if (slen != size || memcmp(sback, data, size) != 0)
    abort();
  free(sback);
  braid_gzip_buf_free(z);

  uint8_t *sz = pump(BRAID_GZIP_COMPRESS, &o, data, size, chunk, &zlen);
  if (braid_gzip_decompress(gz, sz, zlen, &back, &blen) != 0)
    abort();
  if (blen != size || memcmp(back, data, size) != 0)
    abort();
  braid_gzip_buf_free(back);
  free(sz);
  braid_gzip_free(gz);
  return 0;
}
