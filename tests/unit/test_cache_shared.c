/* The shared cache (striped locks) under concurrent threads: every value read matches its
 * key, blobs stay valid while held, and both bounds hold. Run it under TSan too
 * (meson setup build-tsan -Db_sanitize=thread). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../support.h"
#include "internal.h"

enum { THREADS = 4, OPS = 100000, KEYS = 5000 };

typedef struct {
  braid_cache_shared_t *cache;
  uint64_t seed;
  uint64_t hits;
  int bad;
} worker_t;

/* The value for a key is derived from it, so any reader can check what it got. */
static size_t value_for(unsigned k, char *buf) {
  size_t n = 8 + k % 200;
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)('a' + (k + i) % 26);
  return n;
}

static void worker(void *arg) {
  worker_t *w = arg;
  char key[32], val[256], got[256], want[256];
  for (int i = 0; i < OPS; i++) {
    unsigned k = (unsigned)(braid__xorshift64(&w->seed) % KEYS);
    size_t kl = (size_t)snprintf(key, sizeof(key), "key-%u", k);
    unsigned op = (unsigned)(braid__xorshift64(&w->seed) % 10);
    if (op < 3) {
      size_t vl = value_for(k, val);
      if (braid_cache_shared_put(w->cache, key, kl, val, vl, 0) != 0)
        w->bad++;
    } else if (op < 4) {
      braid_blob_t *b;
      size_t vl = value_for(k, val);
      if (braid_blob_copy(&b, val, vl) != 0 ||
          braid_cache_shared_put_blob(w->cache, key, kl, b, 0) != 0)
        w->bad++;
      braid_blob_unref(b);
    } else if (op < 7) {
      size_t len = 0;
      int rc = braid_cache_shared_get(w->cache, key, kl, got, sizeof(got), &len);
      if (rc == 0) {
        w->hits++;
        size_t wl = value_for(k, want);
        if (len != wl || memcmp(got, want, wl) != 0)
          w->bad++;
      } else if (rc != BRAID_ENOTFOUND) {
        w->bad++;
      }
    } else if (op < 9) {
      braid_blob_t *b = NULL;
      int rc = braid_cache_shared_get_blob(w->cache, key, kl, &b);
      if (rc == 0) {
        w->hits++;
        size_t wl = value_for(k, want);
        if (braid_blob_len(b) != wl || memcmp(braid_blob_data(b), want, wl) != 0)
          w->bad++;
        braid_blob_unref(b);
      } else if (rc != BRAID_ENOTFOUND) {
        w->bad++;
      }
    } else {
      int rc = braid_cache_shared_delete(w->cache, key, kl);
      if (rc != 0 && rc != BRAID_ENOTFOUND)
        w->bad++;
    }
  }
}

static void test_shared_threads(void **state) {
  (void)state;
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = 2048;
  o.max_bytes = 256 * 1024;
  o.stripes = 8;
  for (int policy = 0; policy < 2; policy++) {
    o.policy = policy ? BRAID_CACHE_SIEVE : BRAID_CACHE_LRU;
    braid_cache_shared_t *c;
    assert_int_equal(braid_cache_shared_new(&c, &o), 0);
    uv_thread_t th[THREADS];
    worker_t w[THREADS];
    for (int i = 0; i < THREADS; i++) {
      w[i] = (worker_t){.cache = c, .seed = 0x1234567u + (uint64_t)i * 7919u};
      assert_int_equal(uv_thread_create(&th[i], worker, &w[i]), 0);
    }
    uint64_t hits = 0;
    for (int i = 0; i < THREADS; i++) {
      assert_int_equal(uv_thread_join(&th[i]), 0);
      assert_int_equal(w[i].bad, 0);
      hits += w[i].hits;
    }
    braid_cache_stats_t s;
    assert_int_equal(braid_cache_shared_stats(c, &s), 0);
    assert_int_equal(s.hits, hits);
    assert_true(s.hits > 0 && s.evictions > 0);
    assert_true(s.entries <= o.max_entries);
    assert_true(s.bytes <= o.max_bytes);
    braid_cache_shared_free(c);
  }
}

static void test_shared_basics(void **state) {
  (void)state;
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  braid_cache_shared_t *c;
  o.stripes = 6;
  assert_int_equal(braid_cache_shared_new(&c, &o), BRAID_EINVAL);
  o.stripes = 16;
  o.max_entries = 8; /* fewer than one per stripe */
  assert_int_equal(braid_cache_shared_new(&c, &o), BRAID_EINVAL);
  assert_int_equal(braid_cache_shared_new(&c, NULL), 0);
  char buf[8];
  size_t len;
  assert_int_equal(braid_cache_shared_put(c, "k", 1, "v", 1, 30), 0);
  assert_int_equal(braid_cache_shared_get(c, "k", 1, buf, sizeof(buf), &len), 0);
  assert_int_equal(len, 1);
  uv_sleep(60);
  assert_int_equal(braid_cache_shared_get(c, "k", 1, buf, sizeof(buf), &len), BRAID_ENOTFOUND);
  braid_cache_stats_t s;
  assert_int_equal(braid_cache_shared_stats(c, &s), 0);
  assert_int_equal(s.expirations, 1);
  assert_int_equal(braid_cache_shared_delete(c, "k", 1), BRAID_ENOTFOUND);
  braid_cache_shared_free(c);
  braid_cache_shared_free(NULL);
}

/* Each stripe is a cache of its own, and its table alone costs 2,064 bytes, so a byte
 * budget split too thin (1 MiB over 1,024 stripes: 1,024 bytes each) used to be accepted and
 * then report more bytes than max_bytes while refusing every put with ETOOBIG. Such options
 * are refused; the smallest accepted split (4,096 bytes a stripe) stores into every stripe
 * and stays within its bound. */
static void test_shared_stripe_budget(void **state) {
  (void)state;
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  braid_cache_shared_t *c = NULL;
  o.stripes = 1024;
  o.max_bytes = UINT64_C(1) << 20;
  assert_int_equal(braid_cache_shared_new(&c, &o), BRAID_EINVAL);
  assert_null(c);
  o.max_bytes = UINT64_C(4096) * 1024 - 1;
  assert_int_equal(braid_cache_shared_new(&c, &o), BRAID_EINVAL);
  assert_null(c);
  o.max_bytes = UINT64_C(4096) * 1024;
  assert_int_equal(braid_cache_shared_new(&c, &o), 0);
  braid_cache_stats_t s;
  assert_int_equal(braid_cache_shared_stats(c, &s), 0);
  assert_true(s.bytes <= o.max_bytes);
  /* 20,000 keys reach every stripe; each put fits, evicting within its stripe as needed. */
  for (unsigned i = 0; i < 20000; i++) {
    char key[16];
    size_t kl = (size_t)snprintf(key, sizeof(key), "k%u", i);
    assert_int_equal(braid_cache_shared_put(c, key, kl, "value", 5, 0), 0);
  }
  assert_int_equal(braid_cache_shared_stats(c, &s), 0);
  assert_true(s.entries > 0);
  assert_true(s.bytes <= o.max_bytes);
  braid_cache_shared_free(c);
  /* The per-loop cache has no stripes: its own minimum (4,096 bytes) is unchanged. */
  o.stripes = 1;
  o.max_bytes = 4096;
  assert_int_equal(braid_cache_shared_new(&c, &o), 0);
  assert_int_equal(braid_cache_shared_put(c, "k", 1, "v", 1, 0), 0);
  braid_cache_shared_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shared_basics),
      cmocka_unit_test(test_shared_threads),
      cmocka_unit_test(test_shared_stripe_budget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
