/* memcache client benchmark (issue 14): braid against libmemcached on the same memcached
 * servers, per client CPU second, plus the cost of a memo L1 hit against a plain braid cache
 * hit. bench/run_memcache.sh starts the servers and runs this and the pymemcache twin
 * (bench_memcache_py.py); see bench/RESULTS.md.
 *
 *   bench_memcache PORT,PORT,... [--rounds N] [--single N] [--hits N] [--json PATH]
 *
 * Cells (each reports wall time, client CPU time (user+sys of this process) and keys per
 * CPU second):
 *   multiget_braid       N rounds of braid_memcache_get_multi() of 100 keys, one at a time
 *   multiget_libmemcached N rounds of memcached_mget() + memcached_fetch_result(), 100 keys
 *   single_braid_50      N single gets with 50 callers in flight at once
 *   single_libmemcached  N single gets, one after another (libmemcached blocks its caller)
 *   l1_hit_cache / l1_hit_memo: ns per hit of braid_cache_memo() and braid_memcache_memo()
 *                         on a warm key (the memo's target: at most the cache's + 10%). */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "braid.h"

#define NKEYS 1000
#define BATCH 100

static char keys[NKEYS][32];
static size_t key_lens[NKEYS];
static uv_loop_t uv;
static braid_loop_t *loop;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

typedef struct cell_s {
  const char *name;
  double wall, cpu, ops;
  int errors;
} cell_t;

static cell_t cells[8];
static int ncells;

static cell_t *cell_begin(const char *name) {
  cell_t *c = &cells[ncells++];
  memset(c, 0, sizeof(*c));
  c->name = name;
  c->wall = -now_s();
  c->cpu = -cpu_s();
  return c;
}

static void cell_end(cell_t *c, double ops) {
  c->wall += now_s();
  c->cpu += cpu_s();
  c->ops = ops;
}

/* ---- braid ------------------------------------------------------------------------------ */

static int multi_done, multi_errors;
static void on_multi(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                     size_t count, void *arg) {
  (void)mc, (void)arg;
  if (status < 0)
    multi_errors++;
  for (size_t i = 0; i < count; i++)
    if (res[i].status < 0 || res[i].code != BRAID_MEMCACHE_VA)
      multi_errors++;
  multi_done = 1;
}

static int inflight, issued, completed, single_errors, single_total;
static braid_memcache_t *the_mc;
static void issue_single(void);
static void on_single(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                      size_t count, void *arg) {
  (void)mc, (void)count, (void)arg;
  if (status < 0 || res->code != BRAID_MEMCACHE_VA)
    single_errors++;
  inflight--;
  completed++;
  if (issued < single_total)
    issue_single();
}
static void issue_single(void) {
  int k = issued % NKEYS;
  issued++;
  inflight++;
  if (braid_memcache_get(the_mc, keys[k], key_lens[k], on_single, NULL) != 0) {
    inflight--;
    completed++;
    single_errors++;
  }
}

static int sets_left;
static void on_set(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                   size_t count, void *arg) {
  (void)mc, (void)res, (void)count, (void)arg;
  if (status < 0)
    fprintf(stderr, "set failed: %s\n", braid_strerror(status));
  sets_left--;
}

static int compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  return braid_blob_copy(value, key, key_len);
}

static void on_cache_memo(braid_cache_t *c, int status, braid_blob_t *v, void *arg) {
  (void)c, (void)status, (void)v, (void)arg;
}

static long hit_misses;
static double hit_loop_cache(braid_cache_t *c, long n) {
  braid_cache_loader_t l = {BRAID_CACHE_LOAD_SYNC, compute, NULL, NULL, 0};
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    braid_blob_t *v;
    int k = (int)(i % NKEYS);
    if (braid_cache_memo(c, keys[k], key_lens[k], &l, &v, on_cache_memo, NULL) == 0)
      braid_blob_unref(v);
    else
      hit_misses++;
  }
  return (now_s() - t0) * 1e9 / (double)n;
}

static void on_memo(braid_memcache_memo_t *m, int status, braid_blob_t *v, void *arg) {
  (void)m, (void)status, (void)v;
  (*(int *)arg)--;
}

static double hit_loop_memo(braid_memcache_memo_t *m, long n) {
  braid_memcache_loader_t l = {BRAID_CACHE_LOAD_SYNC, compute, NULL, NULL};
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    braid_blob_t *v;
    int k = (int)(i % NKEYS);
    int pending = 0;
    int rc = braid_memcache_memo(m, keys[k], key_lens[k], &l, &v, on_memo, &pending);
    if (rc == 0)
      braid_blob_unref(v);
    else if (hit_misses++ == 0)
      fprintf(stderr, "first memo miss: %s\n", braid_err_name(rc));
  }
  return (now_s() - t0) * 1e9 / (double)n;
}

static int closed;
static void on_mc_closed(braid_memcache_t *mc, int status, void *arg) {
  (void)mc, (void)status, (void)arg;
  closed++;
}
static void on_memo_closed(braid_memcache_memo_t *m, int status, void *arg) {
  (void)m, (void)status, (void)arg;
  closed++;
}
static void on_cache_closed(braid_cache_t *c, int status, void *arg) {
  (void)c, (void)status, (void)arg;
  closed++;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_memcache PORT,PORT,... [--rounds N] [--single N] "
                    "[--hits N] [--json PATH]\n");
    return 2;
  }
  long rounds = 10000, singles = 100000, hits = 2000000;
  const char *json = NULL;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--rounds"))
      rounds = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--single"))
      singles = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--hits"))
      hits = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--json"))
      json = argv[i + 1];
  }
  int ports[16], nports = 0;
  for (char *p = argv[1]; p && *p && nports < 16;) {
    ports[nports++] = atoi(p);
    p = strchr(p, ',');
    if (p)
      p++;
  }
  for (int i = 0; i < NKEYS; i++)
    key_lens[i] = (size_t)snprintf(keys[i], sizeof(keys[i]), "bench:key:%d", i);

  uv_loop_init(&uv);
  braid_loop_new(&loop, &uv);
  braid_memcache_t *mc;
  braid_memcache_new(&mc, loop, NULL);
  for (int i = 0; i < nports; i++)
    braid_memcache_add_server(mc, "127.0.0.1", ports[i], 1, NULL);
  the_mc = mc;
  /* values: 100 bytes each */
  char value[100];
  memset(value, 'v', sizeof(value));
  sets_left = NKEYS;
  for (int i = 0; i < NKEYS; i++)
    braid_memcache_set(mc, keys[i], key_lens[i], value, sizeof(value), 0, 0, on_set, NULL);
  while (sets_left > 0)
    uv_run(&uv, UV_RUN_ONCE);

  const void *kp[NKEYS];
  for (int i = 0; i < NKEYS; i++)
    kp[i] = keys[i];

  /* multi-get, braid */
  cell_t *c = cell_begin("multiget_braid");
  for (long r = 0; r < rounds; r++) {
    int off = (int)((r * BATCH) % (NKEYS - BATCH + 1));
    multi_done = 0;
    if (braid_memcache_get_multi(mc, kp + off, key_lens + off, BATCH, 0, on_multi, NULL) != 0) {
      multi_errors++;
      continue;
    }
    while (!multi_done)
      uv_run(&uv, UV_RUN_ONCE);
  }
  cell_end(c, (double)rounds * BATCH);
  c->errors = multi_errors;

  /* multi-get, libmemcached */
  memcached_st *memc = memcached_create(NULL);
  for (int i = 0; i < nports; i++)
    memcached_server_add(memc, "127.0.0.1", (in_port_t)ports[i]);
  /* libmemcached places keys its own way (modula): store them where it will look */
  for (int i = 0; i < NKEYS; i++)
    if (memcached_set(memc, keys[i], key_lens[i], value, sizeof(value), 0, 0) !=
        MEMCACHED_SUCCESS)
      fprintf(stderr, "libmemcached set failed\n");
  c = cell_begin("multiget_libmemcached");
  for (long r = 0; r < rounds; r++) {
    int off = (int)((r * BATCH) % (NKEYS - BATCH + 1));
    const char *ks[BATCH];
    for (int i = 0; i < BATCH; i++)
      ks[i] = keys[off + i];
    if (memcached_mget(memc, ks, key_lens + off, BATCH) != MEMCACHED_SUCCESS) {
      c->errors++;
      continue;
    }
    memcached_result_st res;
    memcached_result_create(memc, &res);
    int got = 0;
    memcached_return_t rc;
    while (memcached_fetch_result(memc, &res, &rc) != NULL)
      got++;
    memcached_result_free(&res);
    if (got != BATCH)
      c->errors++;
  }
  cell_end(c, (double)rounds * BATCH);

  /* single gets, braid, 50 in flight */
  single_total = (int)singles;
  c = cell_begin("single_braid_50");
  while (issued < 50 && issued < single_total)
    issue_single();
  while (completed < single_total)
    uv_run(&uv, UV_RUN_ONCE);
  cell_end(c, (double)singles);
  c->errors = single_errors;

  /* single gets, libmemcached, one after another */
  c = cell_begin("single_libmemcached");
  for (long i = 0; i < singles; i++) {
    size_t vl;
    uint32_t fl;
    memcached_return_t rc;
    int k = (int)(i % NKEYS);
    char *v = memcached_get(memc, keys[k], key_lens[k], &vl, &fl, &rc);
    if (!v)
      c->errors++;
    free(v);
  }
  cell_end(c, (double)singles);
  memcached_free(memc);

  /* L1 hit cost: a plain braid cache memo hit against a memcache memo L1 hit */
  braid_cache_t *cache;
  braid_cache_opts_t co;
  braid_cache_opts_init(&co);
  braid_cache_new(&cache, loop, &co);
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.l1.default_ttl_ms = 0; /* never expires during the loop */
  braid_memcache_memo_t *memo;
  braid_memcache_memo_new(&memo, mc, &mo);
  int warm = 0;
  for (int i = 0; i < NKEYS; i++) {
    braid_memcache_loader_t l = {BRAID_CACHE_LOAD_SYNC, compute, NULL, NULL};
    braid_blob_t *v;
    warm++;
    if (braid_memcache_memo(memo, keys[i], key_lens[i], &l, &v, on_memo, &warm) == 0) {
      braid_blob_unref(v);
      warm--;
    }
  }
  while (warm > 0)
    uv_run(&uv, UV_RUN_ONCE);
  hit_loop_cache(cache, NKEYS); /* warm the plain cache */
  double best_cache = 1e9, best_memo = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    double a = hit_loop_cache(cache, hits / 5), b = hit_loop_memo(memo, hits / 5);
    best_cache = a < best_cache ? a : best_cache;
    best_memo = b < best_memo ? b : best_memo;
  }

  if (hit_misses)
    fprintf(stderr, "L1 hit loops: %ld calls were not hits\n", hit_misses);
  printf("%-22s %10s %10s %12s %8s\n", "cell", "wall_s", "cpu_s", "keys/cpu_s", "errors");
  for (int i = 0; i < ncells; i++)
    printf("%-22s %10.3f %10.3f %12.0f %8d\n", cells[i].name, cells[i].wall, cells[i].cpu,
           cells[i].cpu > 0 ? cells[i].ops / cells[i].cpu : 0, cells[i].errors);
  printf("%-22s %10.1f ns\n%-22s %10.1f ns (%.1f%% over the cache)\n", "l1_hit_cache",
         best_cache, "l1_hit_memo", best_memo, (best_memo / best_cache - 1) * 100);
  double ratio = cells[1].ops / cells[1].cpu > 0
                     ? (cells[0].ops / cells[0].cpu) / (cells[1].ops / cells[1].cpu)
                     : 0;
  printf("multi-get keys per client CPU second, braid / libmemcached: %.2fx (target 2x)\n",
         ratio);
  if (json) {
    FILE *f = fopen(json, "w");
    if (f) {
      fprintf(f, "{\"cells\": [");
      for (int i = 0; i < ncells; i++)
        fprintf(f, "%s{\"name\": \"%s\", \"wall_s\": %.4f, \"cpu_s\": %.4f, \"ops\": %.0f, "
                   "\"errors\": %d}", i ? ", " : "", cells[i].name, cells[i].wall,
                cells[i].cpu, cells[i].ops, cells[i].errors);
      fprintf(f, "], \"l1_hit_cache_ns\": %.2f, \"l1_hit_memo_ns\": %.2f, "
                 "\"multiget_ratio_vs_libmemcached\": %.3f}\n", best_cache, best_memo, ratio);
      fclose(f);
    }
  }
  int errors = 0;
  for (int i = 0; i < ncells; i++)
    errors += cells[i].errors;

  braid_memcache_memo_close(memo, on_memo_closed, NULL);
  braid_cache_close(cache, on_cache_closed, NULL);
  while (closed < 2)
    uv_run(&uv, UV_RUN_ONCE);
  braid_memcache_close(mc, on_mc_closed, NULL);
  while (closed < 3)
    uv_run(&uv, UV_RUN_ONCE);
  braid_loop_close(loop);
  uv_run(&uv, UV_RUN_DEFAULT);
  uv_loop_close(&uv);
  return errors ? 1 : 0;
}
