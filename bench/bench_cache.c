/* bench_cache: braid's cache against a straightforward chained-hash LRU (bench/
 * baseline_lru.h) and python3's functools.lru_cache (bench/bench_lru_cache.py, run on the
 * same keys and query streams in the same run).
 *
 * Measures, with 24-byte keys and 32-byte values:
 * - get-hit ns/op at 1K and 1M (2^20) entries, with uniform, Zipf(0.9), Zipf(1.1) and
 *   hot-set (1,024 keys of the 1M) query streams; put ns/op (fill, and evicting);
 * - a memoized call (braid_cache_memo, synchronous loader) against recomputing;
 * - hit ratio of LRU and SIEVE on Zipf(0.9), Zipf(1.1) and a scan-polluted stream.
 * Each timing is the median of --reps runs, braid and baseline interleaved.
 *
 * Usage: bench_cache [--json PATH] [--reps N] [--python PATH|none] [--quick]
 * Run from the source root so the default --python path (bench/bench_lru_cache.py) works. */
#include <braid.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "baseline_lru.h"

#define KEY_LEN 24
#define VAL_LEN 32
#define HOT_KEYS 1024

static uint64_t rng = 0x243f6a8885a308d3u;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_cache: %s: %s\n", what, rc ? braid_strerror(rc) : "failed");
  exit(1);
}

/* Random printable keys (so Python can take them as str). */
static char *make_keys(size_t n) {
  static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  char *k = malloc(n * KEY_LEN);
  if (!k)
    die("malloc keys", 0);
  for (size_t i = 0; i < n * KEY_LEN; i++)
    k[i] = alpha[rnd() % 62];
  return k;
}

/* Zipf(s) over n ranks by inverse CDF; ranks map to key indices through a permutation, so
 * hot keys are scattered in memory. */
static uint32_t *zipf_stream(size_t n, double s, size_t q, const uint32_t *perm) {
  double *cdf = malloc(n * sizeof(double));
  uint32_t *out = malloc(q * sizeof(uint32_t));
  if (!cdf || !out)
    die("malloc zipf", 0);
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    sum += 1.0 / pow((double)(i + 1), s);
    cdf[i] = sum;
  }
  for (size_t j = 0; j < q; j++) {
    double u = (double)(rnd() >> 11) / 9007199254740992.0 * sum;
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (cdf[mid] < u)
        lo = mid + 1;
      else
        hi = mid;
    }
    out[j] = perm[lo];
  }
  free(cdf);
  return out;
}

static uint32_t *perm_of(size_t n) {
  uint32_t *p = malloc(n * sizeof(uint32_t));
  if (!p)
    die("malloc perm", 0);
  for (size_t i = 0; i < n; i++)
    p[i] = (uint32_t)i;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = rnd() % (i + 1);
    uint32_t t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/* The query keys laid out in query order, so reading them is sequential for every contender
 * and the measured misses are the caches' own. */
static char *gather(const char *keys, const uint32_t *idx, size_t q) {
  char *out = malloc(q * KEY_LEN);
  if (!out)
    die("malloc queries", 0);
  for (size_t i = 0; i < q; i++)
    memcpy(out + i * KEY_LEN, keys + (size_t)idx[i] * KEY_LEN, KEY_LEN);
  return out;
}

/* ---- contenders ------------------------------------------------------------------------- */

enum { C_LRU, C_SIEVE, C_BASE, NCONT };
static const char *cont_name[NCONT] = {"braid-lru", "braid-sieve", "baseline"};

typedef struct {
  braid_cache_t *braid[2];
  bl_cache_t base;
} set_t;

static braid_cache_t *braid_make(braid_loop_t *loop, size_t n, braid_cache_policy_t pol) {
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = n;
  o.max_bytes = UINT64_C(1) << 32;
  o.policy = pol;
  o.sweep_interval_ms = 0;
  braid_cache_t *c;
  int rc = braid_cache_new(&c, loop, &o);
  if (rc)
    die("braid_cache_new", rc);
  return c;
}

static double put_run(set_t *s, int who, const char *keys, size_t n) {
  static const char val[VAL_LEN] = "0123456789abcdef0123456789abcdef";
  double t0 = now_ns();
  for (size_t i = 0; i < n; i++) {
    const char *k = keys + i * KEY_LEN;
    int rc = who == C_BASE ? bl_put(&s->base, k, KEY_LEN, val, VAL_LEN)
                           : braid_cache_put(s->braid[who], k, KEY_LEN, val, VAL_LEN, 0);
    if (rc)
      die("put", rc);
  }
  return (now_ns() - t0) / (double)n;
}

static double get_run(set_t *s, int who, const char *qk, size_t q) {
  char buf[VAL_LEN];
  size_t len, hits = 0;
  double t0 = now_ns();
  if (who == C_BASE) {
    for (size_t i = 0; i < q; i++)
      hits += bl_get(&s->base, qk + i * KEY_LEN, KEY_LEN, buf, &len) == 0;
  } else {
    braid_cache_t *c = s->braid[who];
    for (size_t i = 0; i < q; i++)
      hits += braid_cache_get(c, qk + i * KEY_LEN, KEY_LEN, buf, sizeof(buf), &len) == 0;
  }
  double ns = (now_ns() - t0) / (double)q;
  if (hits != q) {
    fprintf(stderr, "bench_cache: %s: %zu of %zu queries missed\n", cont_name[who], q - hits, q);
    exit(1);
  }
  return ns;
}

static double get_blob_run(braid_cache_t *c, const char *qk, size_t q) {
  double t0 = now_ns();
  for (size_t i = 0; i < q; i++) {
    braid_blob_t *b;
    if (braid_cache_get_blob(c, qk + i * KEY_LEN, KEY_LEN, &b) != 0)
      die("get_blob", 0);
    braid_blob_unref(b);
  }
  return (now_ns() - t0) / (double)q;
}

/* ---- results ------------------------------------------------------------------------------ */

typedef struct {
  char name[128];
  double value;
} metric_t;
static metric_t metrics[256];
static int nmetrics;

static void record(const char *name, double v) {
  if (nmetrics < (int)(sizeof(metrics) / sizeof(metrics[0]))) {
    snprintf(metrics[nmetrics].name, sizeof(metrics[nmetrics].name), "%s", name);
    metrics[nmetrics++].value = v;
  }
}
static double metric(const char *name) {
  for (int i = 0; i < nmetrics; i++)
    if (strcmp(metrics[i].name, name) == 0)
      return metrics[i].value;
  return NAN;
}

/* Runs the Python script on the same keys and streams; records its lines as py_<size>_*. */
static void run_python(const char *script, const char *tag, const char *keys, size_t nkeys,
                       size_t entries, const char **qnames, uint32_t **qidx, size_t nq, size_t q,
                       int reps) {
  char kpath[64], cmd[2048];
  snprintf(kpath, sizeof(kpath), "/tmp/bench_cache_%d_keys", (int)getpid());
  FILE *f = fopen(kpath, "wb");
  if (!f || fwrite(keys, KEY_LEN, nkeys, f) != nkeys || fclose(f))
    die("write keys", 0);
  int off = snprintf(cmd, sizeof(cmd), "python3 %s --keys %s --entries %zu --reps %d", script,
                     kpath, entries, reps);
  char qpaths[8][64];
  for (size_t i = 0; i < nq; i++) {
    snprintf(qpaths[i], sizeof(qpaths[i]), "/tmp/bench_cache_%d_q%zu", (int)getpid(), i);
    f = fopen(qpaths[i], "wb");
    if (!f || fwrite(qidx[i], sizeof(uint32_t), q, f) != q || fclose(f))
      die("write queries", 0);
    off += snprintf(cmd + off, sizeof(cmd) - (size_t)off, " --query %s=%s", qnames[i],
                    qpaths[i]);
  }
  FILE *p = popen(cmd, "r");
  if (!p)
    die("popen python3", 0);
  char line[256];
  while (fgets(line, sizeof(line), p)) {
    char name[64];
    double v;
    if (sscanf(line, "%63s %lf", name, &v) == 2) {
      char full[128];
      snprintf(full, sizeof(full), "py_%s_%s", tag, name);
      record(full, v);
    }
  }
  int st = pclose(p);
  remove(kpath);
  for (size_t i = 0; i < nq; i++)
    remove(qpaths[i]);
  if (st != 0)
    fprintf(stderr, "bench_cache: python3 %s exited with %d (its figures are missing)\n",
            script, st);
}

/* ---- get/put at one size ---------------------------------------------------------------- */

static void bench_size(braid_loop_t *loop, const char *tag, size_t n, size_t q, int reps,
                       const char *python) {
  /* Fresh keys for the evicting puts: at least 64K per rep, so one preemption cannot
   * dominate a small run. */
  size_t fresh = n / 4 > 65536 ? n / 4 : 65536;
  char *keys = make_keys(n + fresh * (size_t)reps);
  uint32_t *perm = perm_of(n);
  const char *qnames[4];
  uint32_t *qidx[4];
  size_t nq = 0;
  qnames[nq] = "uniform";
  qidx[nq] = malloc(q * sizeof(uint32_t));
  for (size_t i = 0; i < q; i++)
    qidx[nq][i] = (uint32_t)(rnd() % n);
  nq++;
  if (n > HOT_KEYS) {
    qnames[nq] = "zipf0.9";
    qidx[nq++] = zipf_stream(n, 0.9, q, perm);
    qnames[nq] = "zipf1.1";
    qidx[nq++] = zipf_stream(n, 1.1, q, perm);
    qnames[nq] = "hot1k";
    qidx[nq] = malloc(q * sizeof(uint32_t));
    for (size_t i = 0; i < q; i++)
      qidx[nq][i] = perm[rnd() % HOT_KEYS];
    nq++;
  }
  char *qk[4];
  for (size_t i = 0; i < nq; i++)
    qk[i] = gather(keys, qidx[i], q);

  set_t s;
  /* Fill from empty (growth included): a median over several fills into new caches, after a
   * throwaway one that pays for the process's first page faults and heap growth. */
  char name[96];
  int fill_reps = n > 100000 ? (reps < 3 ? reps : 3) : reps;
  double *fv = malloc((size_t)(fill_reps + 1) * NCONT * sizeof(double));
  for (int r = 0; r <= fill_reps; r++) {
    s.braid[C_LRU] = braid_make(loop, n, BRAID_CACHE_LRU);
    s.braid[C_SIEVE] = braid_make(loop, n, BRAID_CACHE_SIEVE);
    if (bl_init(&s.base, n))
      die("baseline init", 0);
    for (int c = 0; c < NCONT; c++)
      fv[(size_t)c * (size_t)(fill_reps + 1) + (size_t)r] = put_run(&s, c, keys, n);
    if (r == fill_reps)
      break; /* keep the last fill for the lookups */
    braid_cache_close(s.braid[C_LRU], NULL, NULL);
    braid_cache_close(s.braid[C_SIEVE], NULL, NULL);
    braid_loop_run(loop, UV_RUN_DEFAULT);
    bl_free(&s.base);
  }
  for (int c = 0; c < NCONT; c++) {
    snprintf(name, sizeof(name), "%s_%s_put_fill_ns", cont_name[c], tag);
    record(name, median(fv + (size_t)c * (size_t)(fill_reps + 1) + 1, fill_reps));
  }
  free(fv);
  double *v = malloc((size_t)reps * sizeof(double) * NCONT * 4);
  for (size_t d = 0; d < nq; d++) {
    for (int r = 0; r < reps; r++)
      for (int c = 0; c < NCONT; c++)
        v[(size_t)c * (size_t)reps + (size_t)r] = get_run(&s, c, qk[d], q);
    for (int c = 0; c < NCONT; c++) {
      snprintf(name, sizeof(name), "%s_%s_get_%s_ns", cont_name[c], tag, qnames[d]);
      record(name, median(v + (size_t)c * (size_t)reps, reps));
    }
  }
  for (int pol = 0; pol < 2; pol++) {
    for (int r = 0; r < reps; r++)
      v[r] = get_blob_run(s.braid[pol], qk[0], q);
    snprintf(name, sizeof(name), "%s_%s_get_blob_uniform_ns", cont_name[pol], tag);
    record(name, median(v, reps));
  }
  /* Puts of new keys into the full cache: each evicts one entry. Fresh keys every rep. */
  for (int r = 0; r < reps; r++)
    for (int c = 0; c < NCONT; c++)
      v[(size_t)c * (size_t)reps + (size_t)r] =
          put_run(&s, c, keys + (n + (size_t)r * fresh) * KEY_LEN, fresh);
  for (int c = 0; c < NCONT; c++) {
    snprintf(name, sizeof(name), "%s_%s_put_evict_ns", cont_name[c], tag);
    record(name, median(v + (size_t)c * (size_t)reps, reps));
  }
  braid_cache_close(s.braid[C_LRU], NULL, NULL);
  braid_cache_close(s.braid[C_SIEVE], NULL, NULL);
  braid_loop_run(loop, UV_RUN_DEFAULT);
  bl_free(&s.base);
  free(v);
  for (size_t i = 0; i < nq; i++)
    free(qk[i]);
  if (python)
    run_python(python, tag, keys, n + fresh * (size_t)(reps < 3 ? reps : 3), n, qnames, qidx,
               nq, q, reps < 3 ? reps : 3);
  for (size_t i = 0; i < nq; i++)
    free(qidx[i]);
  free(perm);
  free(keys);
}

/* ---- memoized call against recompute --------------------------------------------------- */

static volatile uint64_t sink;

/* A stand-in for an expensive pure function (template rendering, a price computation):
 * a few microseconds of dependent integer work. */
static uint64_t costly(const void *key, size_t len) {
  uint64_t h = bl_fnv1a(key, len);
  for (int i = 0; i < 4000; i++)
    h = (h ^ (h >> 29)) * 0x9e3779b97f4a7c15u + (uint64_t)i;
  return h;
}

static int memo_compute(const void *key, size_t len, braid_blob_t **value, void *arg) {
  (void)arg;
  uint64_t h = costly(key, len);
  return braid_blob_copy(value, &h, sizeof(h));
}

static void memo_cb(braid_cache_t *c, int status, braid_blob_t *value, void *arg) {
  (void)c;
  (void)arg;
  if (status == 0)
    sink += *(const uint64_t *)braid_blob_data(value);
}

/* A memoized call as a program makes it: a value known now comes back at once (a hit, or a
 * synchronous load); only a wait goes through memo_cb. */
static int memo_use(braid_cache_t *c, const void *key, size_t len, const braid_cache_loader_t *ld) {
  braid_blob_t *v;
  int rc = braid_cache_memo(c, key, len, ld, &v, memo_cb, NULL);
  if (rc == 0) {
    sink += *(const uint64_t *)braid_blob_data(v);
    braid_blob_unref(v);
  }
  return rc < 0 ? rc : 0;
}

static void bench_memo(braid_loop_t *loop, int reps) {
  enum { UNIVERSE = 100000, CAP = 10000, CALLS = 200000 };
  char *keys = make_keys(UNIVERSE);
  uint32_t *perm = perm_of(UNIVERSE);
  uint32_t *idx = zipf_stream(UNIVERSE, 1.1, CALLS, perm);
  char *qk = gather(keys, idx, CALLS);
  double *a = malloc((size_t)reps * sizeof(double)), *b = malloc((size_t)reps * sizeof(double));
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = memo_compute};
  double ratio = 0;
  for (int r = 0; r < reps; r++) {
    double t0 = now_ns();
    for (size_t i = 0; i < CALLS; i++)
      sink += costly(qk + i * KEY_LEN, KEY_LEN);
    a[r] = (now_ns() - t0) / CALLS;
    braid_cache_t *c = braid_make(loop, CAP, BRAID_CACHE_SIEVE);
    t0 = now_ns();
    for (size_t i = 0; i < CALLS; i++)
      if (memo_use(c, qk + i * KEY_LEN, KEY_LEN, &ld))
        die("memo", 0);
    b[r] = (now_ns() - t0) / CALLS;
    braid_cache_stats_t st;
    braid_cache_stats(c, &st);
    ratio = st.hit_ratio;
    braid_cache_close(c, NULL, NULL);
    braid_loop_run(loop, UV_RUN_DEFAULT);
  }
  record("memo_recompute_ns", median(a, reps));
  record("memo_braid_ns", median(b, reps));
  record("memo_hit_ratio", ratio);
  /* All hits: the memoized call's own cost. */
  braid_cache_t *c = braid_make(loop, UNIVERSE, BRAID_CACHE_SIEVE);
  for (size_t i = 0; i < HOT_KEYS; i++)
    memo_use(c, keys + i * KEY_LEN, KEY_LEN, &ld);
  for (int r = 0; r < reps; r++) {
    double t0 = now_ns();
    for (size_t i = 0; i < CALLS; i++)
      memo_use(c, keys + (i % HOT_KEYS) * KEY_LEN, KEY_LEN, &ld);
    b[r] = (now_ns() - t0) / CALLS;
  }
  record("memo_hit_ns", median(b, reps));
  braid_cache_close(c, NULL, NULL);
  braid_loop_run(loop, UV_RUN_DEFAULT);
  free(a);
  free(b);
  free(qk);
  free(idx);
  free(perm);
  free(keys);
}

/* ---- hit ratio: LRU against SIEVE ---------------------------------------------------------- */

static double hit_ratio(braid_loop_t *loop, braid_cache_policy_t pol, size_t cap,
                        const uint32_t *stream, size_t q) {
  braid_cache_t *c = braid_make(loop, cap, pol);
  char key[KEY_LEN];
  memset(key, 'k', sizeof(key));
  for (size_t i = 0; i < q; i++) {
    memcpy(key, &stream[i], sizeof(uint32_t));
    size_t len;
    if (braid_cache_get(c, key, KEY_LEN, NULL, 0, &len) == BRAID_ENOTFOUND)
      braid_cache_put(c, key, KEY_LEN, "v", 1, 0);
  }
  braid_cache_stats_t st;
  braid_cache_stats(c, &st);
  braid_cache_close(c, NULL, NULL);
  braid_loop_run(loop, UV_RUN_DEFAULT);
  return st.hit_ratio;
}

static void bench_ratio(braid_loop_t *loop, size_t q) {
  enum { UNIVERSE = 100000 };
  uint32_t *perm = perm_of(UNIVERSE);
  uint32_t *z09 = zipf_stream(UNIVERSE, 0.9, q, perm);
  uint32_t *z11 = zipf_stream(UNIVERSE, 1.1, q, perm);
  /* Scan-polluted: Zipf(0.9) traffic, and every 20,000 requests a scan of 5,000 keys that
   * are never requested again (a crawler, a batch export). */
  uint32_t *scan = malloc(q * sizeof(uint32_t));
  uint32_t fresh_key = UNIVERSE;
  for (size_t i = 0; i < q; i++)
    scan[i] = (i % 20000) >= 15000 ? fresh_key++ : z09[i];
  const char *names[3] = {"zipf0.9", "zipf1.1", "scan"};
  uint32_t *streams[3] = {z09, z11, scan};
  size_t caps[2] = {UNIVERSE / 100, UNIVERSE / 10};
  char name[96];
  for (int w = 0; w < 3; w++)
    for (int k = 0; k < 2; k++)
      for (int pol = 0; pol < 2; pol++) {
        double r = hit_ratio(loop, pol ? BRAID_CACHE_SIEVE : BRAID_CACHE_LRU, caps[k],
                             streams[w], q);
        snprintf(name, sizeof(name), "ratio_%s_%s_cap%zu", pol ? "sieve" : "lru", names[w],
                 caps[k]);
        record(name, r);
      }
  free(perm);
  free(z09);
  free(z11);
  free(scan);
}

/* ---- report ------------------------------------------------------------------------------- */

static void row(const char *label, const char *b_lru, const char *b_sieve, const char *base,
                const char *py) {
  double l = metric(b_lru), s = metric(b_sieve), bl = metric(base), p = py ? metric(py) : NAN;
  double best = l < s ? l : s;
  printf("%-24s %9.1f %9.1f %9.1f %9.1f   %5.2fx %5.2fx  %5.2fx %5.2fx\n", label, l, s, bl, p,
         bl / l, bl / s, p / l, p / s);
  (void)best;
}

int main(int argc, char **argv) {
  const char *json = NULL, *python = "bench/bench_lru_cache.py";
  int reps = 5;
  int quick = 0, only_get = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
      json = argv[++i];
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--python") == 0 && i + 1 < argc)
      python = argv[++i];
    else if (strcmp(argv[i], "--quick") == 0)
      quick = 1;
    else if (strcmp(argv[i], "--only-get") == 0) /* development: the large get/put part */
      only_get = 1;
    else {
      fprintf(stderr,
              "usage: %s [--json PATH] [--reps N] [--python PATH|none] [--quick] [--only-get]\n",
              argv[0]);
      return 2;
    }
  }
  if (reps < 1 || reps > 50)
    reps = 5;
  if (strcmp(python, "none") == 0)
    python = NULL;
  double load_before[3] = {0, 0, 0}, load_after[3] = {0, 0, 0};
  FILE *la = fopen("/proc/loadavg", "r");
  if (la) {
    if (fscanf(la, "%lf %lf %lf", &load_before[0], &load_before[1], &load_before[2]) != 3)
      load_before[0] = -1;
    fclose(la);
  }
  braid_loop_t *loop;
  int rc = braid_loop_new(&loop, NULL);
  if (rc)
    die("braid_loop_new", rc);
  size_t big = quick ? (1u << 16) : (1u << 20);
  size_t q = quick ? 200000 : 1000000;
  if (!only_get)
    bench_size(loop, "1k", 1024, q, reps, python);
  bench_size(loop, "1m", big, q, reps, python);
  if (!only_get) {
    bench_memo(loop, reps < 3 ? reps : 3);
    bench_ratio(loop, quick ? 300000 : 2000000);
  }
  braid_loop_close(loop);
  la = fopen("/proc/loadavg", "r");
  if (la) {
    if (fscanf(la, "%lf %lf %lf", &load_after[0], &load_after[1], &load_after[2]) != 3)
      load_after[0] = -1;
    fclose(la);
  }
  printf("load average (1 min) before %.2f, after %.2f (the machine is shared: read ratios, "
         "not absolutes)\n",
         load_before[0], load_after[0]);

  printf("get-hit and put, ns/op (median of %d; ratios: baseline/braid, lru_cache/braid)\n",
         reps);
  printf("%-24s %9s %9s %9s %9s   %-13s  %-13s\n", "case", "lru", "sieve", "baseline",
         "lru_cache", "vs baseline", "vs lru_cache");
  printf("%-24s %9s %9s %9s %9s   %5s  %5s   %5s  %5s\n", "", "", "", "", "", "lru", "sieve",
         "lru", "sieve");
  row("1K get uniform", "braid-lru_1k_get_uniform_ns", "braid-sieve_1k_get_uniform_ns",
      "baseline_1k_get_uniform_ns", "py_1k_get_hit_uniform_ns");
  row("1M get uniform", "braid-lru_1m_get_uniform_ns", "braid-sieve_1m_get_uniform_ns",
      "baseline_1m_get_uniform_ns", "py_1m_get_hit_uniform_ns");
  row("1M get zipf0.9", "braid-lru_1m_get_zipf0.9_ns", "braid-sieve_1m_get_zipf0.9_ns",
      "baseline_1m_get_zipf0.9_ns", "py_1m_get_hit_zipf0.9_ns");
  row("1M get zipf1.1", "braid-lru_1m_get_zipf1.1_ns", "braid-sieve_1m_get_zipf1.1_ns",
      "baseline_1m_get_zipf1.1_ns", "py_1m_get_hit_zipf1.1_ns");
  row("1M get hot 1,024 keys", "braid-lru_1m_get_hot1k_ns", "braid-sieve_1m_get_hot1k_ns",
      "baseline_1m_get_hot1k_ns", "py_1m_get_hit_hot1k_ns");
  row("1K put fill", "braid-lru_1k_put_fill_ns", "braid-sieve_1k_put_fill_ns",
      "baseline_1k_put_fill_ns", "py_1k_put_fill_ns");
  row("1M put fill", "braid-lru_1m_put_fill_ns", "braid-sieve_1m_put_fill_ns",
      "baseline_1m_put_fill_ns", "py_1m_put_fill_ns");
  row("1K put evicting", "braid-lru_1k_put_evict_ns", "braid-sieve_1k_put_evict_ns",
      "baseline_1k_put_evict_ns", "py_1k_put_evict_ns");
  row("1M put evicting", "braid-lru_1m_put_evict_ns", "braid-sieve_1m_put_evict_ns",
      "baseline_1m_put_evict_ns", "py_1m_put_evict_ns");
  printf("get_blob (zero-copy ref) 1M uniform: lru %.1f ns, sieve %.1f ns\n",
         metric("braid-lru_1m_get_blob_uniform_ns"), metric("braid-sieve_1m_get_blob_uniform_ns"));
  printf("python loop+call overhead (for q in qs: id(q)): %.1f ns\n",
         metric("py_1m_loop_call_ns"));
  printf("\nmemoized call, Zipf(1.1) over 100k keys, 10k-entry cache: recompute %.1f ns, "
         "memo %.1f ns (%.1fx), hit ratio %.3f; all-hit memo call %.1f ns\n",
         metric("memo_recompute_ns"), metric("memo_braid_ns"),
         metric("memo_recompute_ns") / metric("memo_braid_ns"), metric("memo_hit_ratio"),
         metric("memo_hit_ns"));
  printf("\nhit ratio, 100k-key universe    %8s %8s  %8s %8s\n", "lru 1%", "sieve 1%", "lru 10%",
         "sieve 10%");
  const char *w[3] = {"zipf0.9", "zipf1.1", "scan"};
  for (int i = 0; i < 3; i++) {
    char a[96], b[96], c[96], d[96];
    snprintf(a, sizeof(a), "ratio_lru_%s_cap1000", w[i]);
    snprintf(b, sizeof(b), "ratio_sieve_%s_cap1000", w[i]);
    snprintf(c, sizeof(c), "ratio_lru_%s_cap10000", w[i]);
    snprintf(d, sizeof(d), "ratio_sieve_%s_cap10000", w[i]);
    printf("  %-29s %8.4f %8.4f  %8.4f %8.4f\n", w[i], metric(a), metric(b), metric(c),
           metric(d));
  }
  if (json) {
    FILE *f = fopen(json, "w");
    if (!f)
      die("open --json path", 0);
    fprintf(f,
            "{\"bench\":\"cache\",\"reps\":%d,\"entries_large\":%zu,\"queries\":%zu,"
            "\"loadavg_before\":%.2f,\"loadavg_after\":%.2f,\"metrics\":{",
            reps, big, q, load_before[0], load_after[0]);
    for (int i = 0; i < nmetrics; i++)
      fprintf(f, "%s\"%s\":%.4f", i ? "," : "", metrics[i].name,
              isnan(metrics[i].value) ? -1.0 : metrics[i].value);
    fprintf(f, "}}\n");
    fclose(f);
  }
  return (int)(sink & 0);
}
