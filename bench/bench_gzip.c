/* bench_gzip: gzip compress/decompress throughput, braid against zlib and libdeflate called
 * directly, in the same run.
 *
 *   bench_gzip [--json PATH] [--rounds N] [--text-mb N] [--pass-ms N]
 *
 * Data: a text corpus gathered at run time (C headers under /usr/include, default 6 MiB) and
 * 2000 JSON-like messages of about 1 KiB each, at levels 1 and 6, gzip format. Each
 * implementation processes the whole data set; implementations run interleaved (A B C ...,
 * A B C ...) for N rounds (default 5) and the table shows the median MB per CPU-second of
 * uncompressed bytes (thread CPU time, not wall time) and the spread (min-max) over rounds;
 * each timed pass repeats the data set to last at least --pass-ms (default 100).
 * Decompression rows all decode the same input (zlib's output at that level). Rows:
 *   zlib         deflate/inflate on the whole buffer in one call, z_stream reused (Reset)
 *   zlib-64k     the same, fed and drained in 64 KiB pieces (what a streaming user does)
 *   libdeflate   libdeflate_gzip_(de)compress, (de)compressor reused, output preallocated
 *   braid        braid_gzip_compress / braid_gzip_decompress (one-shot; decompress allocates)
 *   braid-into   braid_gzip_decompress_into a preallocated buffer (compress: same as braid)
 *   braid-stream braid_gzip_stream_process in 64 KiB pieces, stream reused (reset)
 * Targets: braid (and braid-into) >= 0.95x libdeflate; braid-stream >= 0.95x zlib-64k. */

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include <braid.h>

#if BENCH_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define CHUNK (64 * 1024)

typedef struct {
  const char *name;
  uint8_t **msg; /* the data set: one buffer (text) or many (json) */
  size_t *len;
  size_t count;
  size_t total;
} dataset_t;

enum { ZLIB, ZLIB64, LIBDEFLATE, BRAID, BRAID_INTO, BRAID_STREAM, NIMPL };
static const char *impl_names[NIMPL] = {"zlib",  "zlib-64k",   "libdeflate",
                                        "braid", "braid-into", "braid-stream"};

static uint8_t *text_buf;
static size_t text_len, text_cap;

static int gather(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)ftw;
  size_t n = strlen(path);
  if (type != FTW_F || n < 2 || strcmp(path + n - 2, ".h") != 0)
    return 0;
  if (text_len >= text_cap)
    return 1;
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  size_t want = text_cap - text_len;
  if ((size_t)st->st_size < want)
    want = (size_t)st->st_size;
  text_len += fread(text_buf + text_len, 1, want, f);
  fclose(f);
  return 0;
}

/* This thread's CPU time: on a box shared with other tenants, wall time mostly measures who
 * else ran; CPU time measures the work (MB per CPU-second). */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_gzip: %s failed (%d %s)\n", what, rc, rc < 0 ? braid_err_name(rc) : "");
  exit(1);
}

/* Shared state for one (dataset, level) cell. */
typedef struct {
  int level;
  z_stream zc, zd;
  braid_gzip_t *gz;
  braid_gzip_stream_t *sc, *sd;
#if BENCH_HAVE_LIBDEFLATE
  struct libdeflate_compressor *ldc;
  struct libdeflate_decompressor *ldd;
#endif
  uint8_t *out; /* big enough for any one message, compressed or not */
  size_t out_cap;
  uint8_t **z; /* zlib's compressed messages: the common decompression input */
  size_t *zlen;
  size_t compressed_total[NIMPL];
} cell_t;

static size_t zlib_compress(cell_t *c, int chunked, const uint8_t *in, size_t n) {
  deflateReset(&c->zc);
  size_t pos = 0, total = 0;
  for (;;) {
    size_t k = chunked && n - pos > CHUNK ? CHUNK : n - pos;
    c->zc.next_in = (Bytef *)(uintptr_t)(in + pos);
    c->zc.avail_in = (uInt)k;
    int flush = pos + k == n ? Z_FINISH : Z_NO_FLUSH;
    int rc;
    do {
      c->zc.next_out = c->out + (chunked ? 0 : total);
      c->zc.avail_out = (uInt)(chunked ? CHUNK : c->out_cap - total);
      uInt before = c->zc.avail_out;
      rc = deflate(&c->zc, flush);
      total += before - c->zc.avail_out;
    } while (c->zc.avail_out == 0 && rc != Z_STREAM_END);
    pos += k;
    if (rc == Z_STREAM_END)
      return total;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      die("deflate", rc);
  }
}

static size_t zlib_decompress(cell_t *c, int chunked, const uint8_t *in, size_t n) {
  inflateReset(&c->zd);
  size_t pos = 0, total = 0;
  for (;;) {
    size_t k = chunked && n - pos > CHUNK ? CHUNK : n - pos;
    c->zd.next_in = (Bytef *)(uintptr_t)(in + pos);
    c->zd.avail_in = (uInt)k;
    int rc;
    do {
      c->zd.next_out = c->out + (chunked ? 0 : total);
      c->zd.avail_out = (uInt)(chunked ? CHUNK : c->out_cap - total);
      uInt before = c->zd.avail_out;
      rc = inflate(&c->zd, Z_NO_FLUSH);
      total += before - c->zd.avail_out;
    } while (c->zd.avail_out == 0 && rc == Z_OK);
    pos += k - c->zd.avail_in;
    if (rc == Z_STREAM_END)
      return total;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      die("inflate", rc);
  }
}

static size_t braid_stream(braid_gzip_stream_t *s, const uint8_t *in, size_t n, uint8_t *out) {
  braid_gzip_stream_reset(s);
  size_t pos = 0, total = 0;
  for (;;) {
    size_t k = n - pos > CHUNK ? CHUNK : n - pos, iu, ou;
    int rc = braid_gzip_stream_process(s, in + pos, k, &iu, out, CHUNK, &ou,
                                       pos + k == n ? BRAID_GZIP_FINISH : 0);
    pos += iu;
    total += ou;
    if (rc == BRAID_GZIP_DONE)
      return total;
    if (rc < 0)
      die("braid_gzip_stream_process", rc);
  }
}

static size_t braid_compress(cell_t *c, const uint8_t *in, size_t n) {
  size_t got;
  int rc = braid_gzip_compress(c->gz, in, n, c->out, c->out_cap, &got);
  if (rc)
    die("braid_gzip_compress", rc);
  return got;
}

/* One pass over the data set; returns the bytes produced. */
static size_t run_once(cell_t *c, const dataset_t *d, int impl, int compress) {
  size_t produced = 0;
  for (size_t i = 0; i < d->count; i++) {
    const uint8_t *in = compress ? d->msg[i] : c->z[i];
    size_t n = compress ? d->len[i] : c->zlen[i], got = 0;
    switch (impl) {
    case ZLIB:
    case ZLIB64:
      got = compress ? zlib_compress(c, impl == ZLIB64, in, n)
                     : zlib_decompress(c, impl == ZLIB64, in, n);
      break;
#if BENCH_HAVE_LIBDEFLATE
    case LIBDEFLATE:
      if (compress) {
        got = libdeflate_gzip_compress(c->ldc, in, n, c->out, c->out_cap);
      } else if (libdeflate_gzip_decompress(c->ldd, in, n, c->out, d->len[i], &got) != 0) {
        die("libdeflate_gzip_decompress", -1);
      }
      break;
#endif
    case BRAID_INTO:
      if (!compress) {
        int rc = braid_gzip_decompress_into(c->gz, in, n, c->out, c->out_cap, &got);
        if (rc)
          die("braid_gzip_decompress_into", rc);
        break;
      }
      /* Compression into a caller's buffer is what braid does already. */
      got = braid_compress(c, in, n);
      break;
    case BRAID:
      if (compress) {
        got = braid_compress(c, in, n);
      } else {
        void *p;
        int rc = braid_gzip_decompress(c->gz, in, n, &p, &got);
        if (rc)
          die("braid_gzip_decompress", rc);
        braid_gzip_buf_free(p);
      }
      break;
    case BRAID_STREAM:
      got = braid_stream(compress ? c->sc : c->sd, in, n, c->out);
      break;
    }
    if (!compress && got != d->len[i])
      die("decompressed length check", (int)got);
    produced += got;
  }
  return produced;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void cell_init(cell_t *c, const dataset_t *d, int level) {
  memset(c, 0, sizeof(*c));
  c->level = level;
  size_t biggest = 0;
  for (size_t i = 0; i < d->count; i++)
    biggest = d->len[i] > biggest ? d->len[i] : biggest;
  c->out_cap = biggest + biggest / 8 + 4096;
  c->out = malloc(c->out_cap);
  if (deflateInit2(&c->zc, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK ||
      inflateInit2(&c->zd, 31) != Z_OK)
    die("zlib init", -1);
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.level = level;
  o.min_size_bytes = 0;
  o.max_output_bytes = 0; /* the corpus may exceed the default cap; limits stay on below */
  o.max_ratio = 0;
  int rc = braid_gzip_new(&c->gz, &o);
  if (rc == 0)
    rc = braid_gzip_stream_new(&c->sc, BRAID_GZIP_COMPRESS, &o);
  if (rc == 0)
    rc = braid_gzip_stream_new(&c->sd, BRAID_GZIP_DECOMPRESS, &o);
  if (rc)
    die("braid init", rc);
#if BENCH_HAVE_LIBDEFLATE
  c->ldc = libdeflate_alloc_compressor(level);
  c->ldd = libdeflate_alloc_decompressor();
#endif
  /* The common decompression input: zlib's output; check every decoder against it once. */
  c->z = calloc(d->count, sizeof(*c->z));
  c->zlen = calloc(d->count, sizeof(*c->zlen));
  for (size_t i = 0; i < d->count; i++) {
    c->zlen[i] = zlib_compress(c, 0, d->msg[i], d->len[i]);
    c->z[i] = malloc(c->zlen[i]);
    memcpy(c->z[i], c->out, c->zlen[i]);
  }
  void *p;
  size_t got;
  rc = braid_gzip_decompress(c->gz, c->z[0], c->zlen[0], &p, &got);
  if (rc || got != d->len[0] || memcmp(p, d->msg[0], got) != 0)
    die("braid round trip check", rc);
  braid_gzip_buf_free(p);
}

static void cell_free(cell_t *c, const dataset_t *d) {
  deflateEnd(&c->zc);
  inflateEnd(&c->zd);
  braid_gzip_free(c->gz);
  braid_gzip_stream_free(c->sc);
  braid_gzip_stream_free(c->sd);
#if BENCH_HAVE_LIBDEFLATE
  libdeflate_free_compressor(c->ldc);
  libdeflate_free_decompressor(c->ldd);
#endif
  for (size_t i = 0; i < d->count; i++)
    free(c->z[i]);
  free(c->z);
  free(c->zlen);
  free(c->out);
}

typedef struct {
  const char *dataset;
  int level;
  const char *op;
  int impl;
  double median, lo, hi, ratio;
} result_t;

static result_t results[64];
static double pass_s = 0.1;
static int nresults;

static void bench_cell(const dataset_t *d, int level, int rounds) {
  cell_t c;
  cell_init(&c, d, level);
  for (int compress = 1; compress >= 0; compress--) {
    /* Repeat each pass enough times to last pass_s, so timer noise and preemption by the
     * box's other tenants weigh less. */
    double t0 = now_s();
    run_once(&c, d, ZLIB, compress);
    double one = now_s() - t0;
    int reps = one >= pass_s ? 1 : (int)(pass_s / (one > 1e-6 ? one : 1e-6)) + 1;
    double mbps[NIMPL][16];
    for (int r = 0; r < rounds; r++) {
      for (int impl = 0; impl < NIMPL; impl++) {
#if !BENCH_HAVE_LIBDEFLATE
        if (impl == LIBDEFLATE)
          continue;
#endif
        double start = now_s();
        size_t produced = 0;
        for (int k = 0; k < reps; k++)
          produced = run_once(&c, d, impl, compress);
        double secs = now_s() - start;
        mbps[impl][r] = (double)d->total * reps / secs / 1e6;
        if (compress)
          c.compressed_total[impl] = produced;
      }
    }
    for (int impl = 0; impl < NIMPL; impl++) {
#if !BENCH_HAVE_LIBDEFLATE
      if (impl == LIBDEFLATE)
        continue;
#endif
      qsort(mbps[impl], (size_t)rounds, sizeof(double), cmp_double);
      result_t *res = &results[nresults++];
      res->dataset = d->name;
      res->level = level;
      res->op = compress ? "compress" : "decompress";
      res->impl = impl;
      res->median = mbps[impl][rounds / 2];
      res->lo = mbps[impl][0];
      res->hi = mbps[impl][rounds - 1];
      size_t ct = compress ? c.compressed_total[impl] : c.compressed_total[ZLIB];
      res->ratio = ct ? (double)d->total / (double)ct : 0;
      printf("%-6s L%d %-10s %-12s %9.1f MB/s  [%7.1f-%7.1f]  ratio %.3f\n", d->name, level,
             res->op, impl_names[impl], res->median, res->lo, res->hi, res->ratio);
      fflush(stdout);
    }
  }
  cell_free(&c, d);
}

static double find(const char *ds, int level, const char *op, int impl) {
  for (int i = 0; i < nresults; i++)
    if (strcmp(results[i].dataset, ds) == 0 && results[i].level == level &&
        strcmp(results[i].op, op) == 0 && results[i].impl == impl)
      return results[i].median;
  return 0;
}

static double find_best(const char *ds, int level, const char *op, int impl) {
  for (int i = 0; i < nresults; i++)
    if (strcmp(results[i].dataset, ds) == 0 && results[i].level == level &&
        strcmp(results[i].op, op) == 0 && results[i].impl == impl)
      return results[i].hi;
  return 0;
}

int main(int argc, char **argv) {
  const char *json = NULL;
  int rounds = 5;
  size_t text_mb = 6;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
      json = argv[++i];
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--text-mb") == 0 && i + 1 < argc)
      text_mb = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--pass-ms") == 0 && i + 1 < argc)
      pass_s = atoi(argv[++i]) / 1000.0;
    else {
      fprintf(stderr, "usage: bench_gzip [--json PATH] [--rounds N(1-15)] [--text-mb N] "
                      "[--pass-ms N]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > 15 || text_mb < 1 || pass_s <= 0)
    return 2;

  text_cap = text_mb << 20;
  text_buf = malloc(text_cap);
  nftw("/usr/include", gather, 32, FTW_PHYS);
  if (text_len < (1u << 20)) {
    fprintf(stderr, "bench_gzip: found only %zu bytes of headers\n", text_len);
    return 1;
  }
  dataset_t text = {"text", &text_buf, &text_len, 1, text_len};

  /* 1 KiB JSON-like messages: same shape, varying values, like an API's responses. */
  enum { NJSON = 2000 };
  static uint8_t *jmsg[NJSON];
  static size_t jlen[NJSON];
  dataset_t js = {"json1k", jmsg, jlen, NJSON, 0};
  uint64_t seed = 88172645463325252u;
  for (int i = 0; i < NJSON; i++) {
    char *m = malloc(1200);
    size_t n = 0;
    n += (size_t)snprintf(m + n, 1200 - n, "{\"id\":%d,\"user\":\"user%05d\",\"items\":[", i,
                          (int)(seed % 100000));
    while (n < 960) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      n += (size_t)snprintf(
          m + n, 1200 - n, "{\"sku\":\"A%04u\",\"qty\":%u,\"price\":%u.%02u,\"ok\":%s},",
          (unsigned)(seed % 10000), (unsigned)(seed >> 20) % 9 + 1, (unsigned)(seed >> 30) % 500,
          (unsigned)(seed >> 40) % 100, (seed >> 50) & 1 ? "true" : "false");
    }
    n += (size_t)snprintf(m + n - 1, 1200 - n + 1, "]}") - 1;
    jmsg[i] = (uint8_t *)m;
    jlen[i] = n;
    js.total += n;
  }

  printf("text corpus: %.2f MiB of /usr/include headers; json: %d messages, %.0f bytes avg; "
         "%d rounds, median [min-max]\n",
         (double)text_len / 1048576.0, NJSON, (double)js.total / NJSON, rounds);
  const dataset_t *sets[] = {&text, &js};
  const int levels[] = {1, 6};
  for (int s = 0; s < 2; s++)
    for (int l = 0; l < 2; l++)
      bench_cell(sets[s], levels[l], rounds);

  printf("\nspeed ratios of medians, and of best rounds (targets: braid/libdeflate >= 0.95, "
         "braid-stream/zlib-64k >= 0.95)\n");
  for (int s = 0; s < 2; s++)
    for (int l = 0; l < 2; l++)
      for (int op = 0; op < 2; op++) {
        const char *ops = op ? "decompress" : "compress";
        const char *ds = sets[s]->name;
        double ld = find(ds, levels[l], ops, LIBDEFLATE), b = find(ds, levels[l], ops, BRAID);
        double bi = find(ds, levels[l], ops, BRAID_INTO);
        double z64 = find(ds, levels[l], ops, ZLIB64), z = find(ds, levels[l], ops, ZLIB);
        double bs = find(ds, levels[l], ops, BRAID_STREAM);
        double ldb = find_best(ds, levels[l], ops, LIBDEFLATE);
        double bb = find_best(ds, levels[l], ops, BRAID);
        double bsb = find_best(ds, levels[l], ops, BRAID_STREAM);
        double z64b = find_best(ds, levels[l], ops, ZLIB64);
        printf("%-6s L%d %-10s braid/ld %.3f (best %.3f)  braid-into/ld %.3f  "
               "stream/zlib-64k %.3f (best %.3f)  stream/zlib %.3f\n",
               ds, levels[l], ops, ld > 0 ? b / ld : 0, ldb > 0 ? bb / ldb : 0,
               ld > 0 ? bi / ld : 0, bs / z64, bsb / z64b, bs / z);
      }

  if (json) {
    FILE *f = fopen(json, "w");
    if (!f) {
      perror(json);
      return 1;
    }
    fprintf(f,
            "{\"bench\":\"gzip\",\"text_bytes\":%zu,\"json_messages\":%d,\"rounds\":%d,"
            "\"results\":[",
            text_len, NJSON, rounds);
    for (int i = 0; i < nresults; i++)
      fprintf(f,
              "%s\n {\"dataset\":\"%s\",\"level\":%d,\"op\":\"%s\",\"impl\":\"%s\","
              "\"mb_per_s\":%.2f,\"min\":%.2f,\"max\":%.2f,\"ratio\":%.4f}",
              i ? "," : "", results[i].dataset, results[i].level, results[i].op,
              impl_names[results[i].impl], results[i].median, results[i].lo, results[i].hi,
              results[i].ratio);
    fprintf(f, "\n]}\n");
    fclose(f);
  }
  return 0;
}
