/* The memoizing cache: LRU against a reference model, SIEVE, byte and count bounds (with a
 * counting allocator), TTL (lazy and active), single-flight with thousands of waiters, loader
 * failure and timeout, negative caching, stale-while-revalidate, blobs outliving eviction,
 * close, and resistance to keys crafted against an unkeyed hash. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support.h"
#include "internal.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) {
  return braid__xorshift64(&rng_state);
}

static braid_cache_t *new_cache(bt_loop_t *t, const braid_cache_opts_t *o) {
  braid_cache_t *c = NULL;
  assert_int_equal(braid_cache_new(&c, t->loop, o), 0);
  return c;
}

static int closed_count;
static void on_closed(braid_cache_t *c, int status, void *arg) {
  (void)c;
  assert_int_equal(status, 0);
  (void)arg;
  closed_count++;
}

static void close_cache(bt_loop_t *t, braid_cache_t *c) {
  int before = closed_count;
  uv_update_time(&t->uv); /* a long synchronous test body leaves the loop clock behind */
  assert_int_equal(braid_cache_close(c, on_closed, NULL), 0);
  bt_run(t, 5000);
  assert_int_equal(closed_count, before + 1);
}

static braid_cache_stats_t stats_of(braid_cache_t *c) {
  braid_cache_stats_t s;
  assert_int_equal(braid_cache_stats(c, &s), 0);
  return s;
}

/* A timer-driven wait, so TTLs see the loop clock move. */
static int slept;
static void on_sleep(uv_timer_t *h) {
  slept = 1;
  uv_close((uv_handle_t *)h, (uv_close_cb)free);
}
static void sleep_loop(bt_loop_t *t, uint64_t ms) {
  uv_timer_t *h = malloc(sizeof(*h));
  uv_timer_init(&t->uv, h);
  slept = 0;
  uv_timer_start(h, on_sleep, ms, 0);
  bt_run_until(t, &slept, ms + 5000);
}

/* ---- options and basics ------------------------------------------------------------------ */

static void test_opts_bounds(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_t *c = NULL;
  braid_cache_opts_init(&o);
  o.max_entries = 0;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.max_bytes = 100;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.max_value_bytes = o.max_bytes + 1;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.policy = (braid_cache_policy_t)7;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.max_waiters = 0;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.max_loads = 0;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  o.max_loads = (1u << 20) + 1;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.negative_max_percent = 101;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  braid_cache_opts_init(&o);
  o.stripes = 3;
  assert_int_equal(braid_cache_new(&c, t.loop, &o), BRAID_EINVAL);
  assert_null(c);
  assert_int_equal(braid_cache_new(&c, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_cache_new(NULL, t.loop, NULL), BRAID_EINVAL);
  c = new_cache(&t, NULL);
  /* The open cache keeps the loop from closing. */
  assert_int_equal(braid_loop_close(t.loop), BRAID_EBUSY);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static void test_put_get_delete(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  char buf[64];
  size_t len = 0;
  assert_int_equal(braid_cache_get(c, "k", 1, buf, sizeof(buf), &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_put(c, "k", 1, "value", 5, 0), 0);
  assert_int_equal(braid_cache_get(c, "k", 1, buf, sizeof(buf), &len), 0);
  assert_int_equal(len, 5);
  assert_memory_equal(buf, "value", 5);
  /* Too small a buffer: the length needed comes back, the buffer is untouched. */
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(braid_cache_get(c, "k", 1, buf, 2, &len), BRAID_ETOOBIG);
  assert_int_equal(len, 5);
  assert_int_equal(buf[0], 'x');
  /* Replace. */
  assert_int_equal(braid_cache_put(c, "k", 1, "v2", 2, 0), 0);
  assert_int_equal(braid_cache_get(c, "k", 1, buf, sizeof(buf), &len), 0);
  assert_int_equal(len, 2);
  /* The empty key and the empty value are valid. */
  assert_int_equal(braid_cache_put(c, NULL, 0, NULL, 0, 0), 0);
  assert_int_equal(braid_cache_get(c, NULL, 0, NULL, 0, &len), 0);
  assert_int_equal(len, 0);
  /* A blob view of an inline value is a copy. */
  braid_blob_t *b = NULL;
  assert_int_equal(braid_cache_get_blob(c, "k", 1, &b), 0);
  assert_int_equal(braid_blob_len(b), 2);
  assert_memory_equal(braid_blob_data(b), "v2", 2);
  braid_blob_unref(b);
  assert_int_equal(braid_cache_delete(c, "k", 1), 0);
  assert_int_equal(braid_cache_delete(c, "k", 1), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_put(c, NULL, 3, "x", 1, 0), BRAID_EINVAL);
  assert_int_equal(braid_cache_put(c, "a", 1, "x", 1, BRAID_CACHE_TTL_MAX + 1), BRAID_EINVAL);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.entries, 1);
  assert_int_equal(s.hits, 5);
  assert_int_equal(s.misses, 1);
  assert_true(s.hit_ratio > 0.83 && s.hit_ratio < 0.84);
  assert_int_equal(braid_cache_clear(c), 0);
  assert_int_equal(stats_of(c).entries, 0);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* ---- LRU against a reference model ------------------------------------------------------- */

/* The model: an array of keys, least recently used first, with their values. */
typedef struct {
  int keys[64];
  uint32_t vals[64];
  int n;
} model_t;

static int model_find(const model_t *m, int k) {
  for (int i = 0; i < m->n; i++)
    if (m->keys[i] == k)
      return i;
  return -1;
}
static void model_take(model_t *m, int i) {
  memmove(&m->keys[i], &m->keys[i + 1], (size_t)(m->n - i - 1) * sizeof(int));
  memmove(&m->vals[i], &m->vals[i + 1], (size_t)(m->n - i - 1) * sizeof(uint32_t));
  m->n--;
}
static void model_put(model_t *m, int cap, int k, uint32_t v) {
  int i = model_find(m, k);
  if (i >= 0)
    model_take(m, i);
  if (m->n == cap)
    model_take(m, 0);
  m->keys[m->n] = k;
  m->vals[m->n] = v;
  m->n++;
}
static int model_get(model_t *m, int k, uint32_t *v) {
  int i = model_find(m, k);
  if (i < 0)
    return 0;
  int key = m->keys[i];
  *v = m->vals[i];
  model_take(m, i);
  m->keys[m->n] = key;
  m->vals[m->n] = *v;
  m->n++;
  return 1;
}

static void test_lru_matches_model(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  for (int round = 0; round < 20; round++) {
    int cap = 1 + (int)(rnd() % 40);
    int keyspace = cap + 1 + (int)(rnd() % 40);
    braid_cache_opts_t o;
    braid_cache_opts_init(&o);
    o.max_entries = (uint64_t)cap;
    braid_cache_t *c = new_cache(&t, &o);
    model_t m = {.n = 0};
    for (int op = 0; op < 20000; op++) {
      int k = (int)(rnd() % (uint64_t)keyspace);
      char key[16];
      int klen = snprintf(key, sizeof(key), "key%d", k);
      uint64_t r = rnd() % 10;
      if (r < 4) {
        uint32_t v = (uint32_t)rnd();
        assert_int_equal(braid_cache_put(c, key, (size_t)klen, &v, sizeof(v), 0), 0);
        model_put(&m, cap, k, v);
      } else if (r < 9) {
        uint32_t got = 0, want = 0;
        size_t len = 0;
        int rc = braid_cache_get(c, key, (size_t)klen, &got, sizeof(got), &len);
        if (model_get(&m, k, &want)) {
          assert_int_equal(rc, 0);
          assert_int_equal(got, want);
        } else {
          assert_int_equal(rc, BRAID_ENOTFOUND);
        }
      } else {
        int i = model_find(&m, k);
        int rc = braid_cache_delete(c, key, (size_t)klen);
        assert_int_equal(rc, i >= 0 ? 0 : BRAID_ENOTFOUND);
        if (i >= 0)
          model_take(&m, i);
      }
      assert_int_equal(stats_of(c).entries, (uint64_t)m.n);
    }
    close_cache(&t, c);
  }
  bt_loop_done(&t);
}

/* SIEVE's reference model: the queue oldest first, visited bits, and the hand as an index
 * (-1: start from the oldest). A put replaces: the old entry goes, the new one is newest. */
typedef struct {
  int keys[64];
  uint32_t vals[64];
  int visited[64];
  int n, hand;
} sieve_model_t;

static void sieve_take(sieve_model_t *m, int i) {
  memmove(&m->keys[i], &m->keys[i + 1], (size_t)(m->n - i - 1) * sizeof(int));
  memmove(&m->vals[i], &m->vals[i + 1], (size_t)(m->n - i - 1) * sizeof(uint32_t));
  memmove(&m->visited[i], &m->visited[i + 1], (size_t)(m->n - i - 1) * sizeof(int));
  m->n--;
  if (m->hand > i)
    m->hand--;
  else if (m->hand == i && i == m->n)
    m->hand = -1; /* the hand was on the newest: it moves past the end */
}
static void sieve_put(sieve_model_t *m, int cap, int k, uint32_t v) {
  int i;
  for (i = 0; i < m->n && m->keys[i] != k; i++) {
  }
  if (i < m->n)
    sieve_take(m, i);
  if (m->n == cap) {
    int h = m->hand < 0 ? 0 : m->hand;
    while (m->visited[h]) {
      m->visited[h] = 0;
      h = h + 1 == m->n ? 0 : h + 1;
    }
    m->hand = h;
    sieve_take(m, h);
  }
  m->keys[m->n] = k;
  m->vals[m->n] = v;
  m->visited[m->n] = 0;
  m->n++;
}

static void test_sieve_matches_model(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  for (int round = 0; round < 20; round++) {
    int cap = 1 + (int)(rnd() % 40);
    int keyspace = cap + 1 + (int)(rnd() % 40);
    braid_cache_opts_t o;
    braid_cache_opts_init(&o);
    o.max_entries = (uint64_t)cap;
    o.policy = BRAID_CACHE_SIEVE;
    braid_cache_t *c = new_cache(&t, &o);
    sieve_model_t m = {.n = 0, .hand = -1};
    for (int op = 0; op < 20000; op++) {
      int k = (int)(rnd() % (uint64_t)keyspace);
      char key[16];
      int klen = snprintf(key, sizeof(key), "key%d", k);
      uint64_t r = rnd() % 10;
      int i;
      for (i = 0; i < m.n && m.keys[i] != k; i++) {
      }
      if (r < 4) {
        uint32_t v = (uint32_t)rnd();
        assert_int_equal(braid_cache_put(c, key, (size_t)klen, &v, sizeof(v), 0), 0);
        sieve_put(&m, cap, k, v);
      } else if (r < 9) {
        uint32_t got = 0;
        size_t len = 0;
        int rc = braid_cache_get(c, key, (size_t)klen, &got, sizeof(got), &len);
        if (i < m.n) {
          assert_int_equal(rc, 0);
          assert_int_equal(got, m.vals[i]);
          m.visited[i] = 1;
        } else {
          assert_int_equal(rc, BRAID_ENOTFOUND);
        }
      } else {
        assert_int_equal(braid_cache_delete(c, key, (size_t)klen), i < m.n ? 0 : BRAID_ENOTFOUND);
        if (i < m.n)
          sieve_take(&m, i);
      }
      assert_int_equal(stats_of(c).entries, (uint64_t)m.n);
    }
    close_cache(&t, c);
  }
  bt_loop_done(&t);
}

/* SIEVE, from the paper's example: a hit only marks; the hand skips (and clears) marked
 * entries, so the oldest unmarked one goes. */
static void test_sieve_order(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.policy = BRAID_CACHE_SIEVE;
  o.max_entries = 3;
  braid_cache_t *c = new_cache(&t, &o);
  size_t len;
  assert_int_equal(braid_cache_put(c, "A", 1, "a", 1, 0), 0);
  assert_int_equal(braid_cache_put(c, "B", 1, "b", 1, 0), 0);
  assert_int_equal(braid_cache_put(c, "C", 1, "c", 1, 0), 0);
  assert_int_equal(braid_cache_get(c, "A", 1, NULL, 0, &len), BRAID_ETOOBIG); /* a hit */
  /* Queue A B C, A visited. The hand starts at the oldest, clears A, evicts B and stays
   * where B was (now C). */
  assert_int_equal(braid_cache_put(c, "D", 1, "d", 1, 0), 0);
  assert_int_equal(braid_cache_get(c, "B", 1, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_get(c, "C", 1, NULL, 0, &len), BRAID_ETOOBIG); /* marks C */
  /* Queue A C D, hand at C: clears C, evicts D. A survives although it is the oldest and
   * unvisited: the hand does not go back (this is where SIEVE differs from CLOCK/LRU). */
  assert_int_equal(braid_cache_put(c, "E", 1, "e", 1, 0), 0);
  assert_int_equal(braid_cache_get(c, "D", 1, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_get(c, "A", 1, NULL, 0, &len), BRAID_ETOOBIG);
  assert_int_equal(braid_cache_get(c, "C", 1, NULL, 0, &len), BRAID_ETOOBIG);
  assert_int_equal(braid_cache_get(c, "E", 1, NULL, 0, &len), BRAID_ETOOBIG);
  /* Queue A C E, all visited, hand wrapped to A: a full lap clears every bit and evicts A. */
  assert_int_equal(braid_cache_put(c, "F", 1, "f", 1, 0), 0);
  assert_int_equal(braid_cache_get(c, "A", 1, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(stats_of(c).evictions, 3);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* ---- bounds, with a counting allocator ------------------------------------------------------ */

static atomic_llong live_bytes;
typedef struct {
  size_t size;
  max_align_t align[];
} hdr_t;
static void *count_malloc(size_t n) {
  hdr_t *h = malloc(sizeof(hdr_t) + n);
  if (!h)
    return NULL;
  h->size = n;
  atomic_fetch_add(&live_bytes, (long long)n);
  return h->align;
}
static void count_free(void *p) {
  if (!p)
    return;
  hdr_t *h = (hdr_t *)((char *)p - offsetof(hdr_t, align));
  atomic_fetch_sub(&live_bytes, (long long)h->size);
  free(h);
}
static void *count_calloc(size_t n, size_t sz) {
  if (sz && n > SIZE_MAX / sz)
    return NULL;
  void *p = count_malloc(n * sz);
  if (p)
    memset(p, 0, n * sz);
  return p;
}
static void *count_realloc(void *p, size_t n) {
  if (!p)
    return count_malloc(n);
  hdr_t *h = (hdr_t *)((char *)p - offsetof(hdr_t, align));
  void *q = count_malloc(n);
  if (!q)
    return NULL;
  memcpy(q, p, h->size < n ? h->size : n);
  count_free(p);
  return q;
}

static size_t inserts_for_bounds(void) {
  const char *e = getenv("BRAID_CACHE_BOUND_INSERTS");
  return e ? (size_t)strtoull(e, NULL, 10) : 100000;
}

/* Random-size inserts; value lengths below span: span 4500 makes most values external and
 * some too big, span 120 keeps most inline (key + value <= 80 bytes) so the table, not the
 * values, is what fills the bound and must stop growing in time. */
static void run_bounds(braid_cache_policy_t policy, size_t span) {
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, count_free), 0);
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.policy = policy;
  o.max_entries = 5000;
  o.max_bytes = 1 << 20;
  o.max_value_bytes = 4096;
  long long base = atomic_load(&live_bytes);
  braid_cache_t *c = new_cache(&t, &o);
  /* What the cache allocates beyond its accounting: its own struct and the flight table. */
  long long fixed = atomic_load(&live_bytes) - base - (long long)stats_of(c).bytes;
  assert_true(fixed > 0 && fixed < 4096);
  size_t n = inserts_for_bounds();
  char val[5000];
  memset(val, 'v', sizeof(val));
  uint64_t rejected = 0;
  for (size_t i = 0; i < n; i++) {
    char key[32];
    size_t klen = (size_t)snprintf(key, sizeof(key), "k%zu", rnd() % 200000);
    size_t vlen = (size_t)(rnd() % span); /* some may exceed max_value_bytes */
    int rc = braid_cache_put(c, key, klen, val, vlen, 0);
    if (vlen > 4096) {
      assert_int_equal(rc, BRAID_ETOOBIG);
      rejected++;
    } else {
      assert_int_equal(rc, 0);
    }
    braid_cache_stats_t s = stats_of(c);
    if (s.bytes > o.max_bytes || s.entries > o.max_entries)
      fail_msg("bound broken after %zu inserts: %llu bytes, %llu entries", i,
               (unsigned long long)s.bytes, (unsigned long long)s.entries);
    long long real = atomic_load(&live_bytes) - base - fixed;
    if (real > (long long)o.max_bytes)
      fail_msg("allocated %lld bytes > bound", real);
  }
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.rejected, rejected);
  assert_true(s.evictions > 0);
  close_cache(&t, c);
  bt_loop_done(&t);
  assert_int_equal(atomic_load(&live_bytes), 0); /* the loop is gone too: nothing leaked */
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

static void test_bounds_lru(void **state) {
  (void)state;
  run_bounds(BRAID_CACHE_LRU, 4500);
  run_bounds(BRAID_CACHE_LRU, 120);
}
static void test_bounds_sieve(void **state) {
  (void)state;
  run_bounds(BRAID_CACHE_SIEVE, 4500);
  run_bounds(BRAID_CACHE_SIEVE, 120);
}

/* Entry count bound with tiny values, so max_entries (not bytes) is what binds. */
static void test_entry_bound(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = 100;
  braid_cache_t *c = new_cache(&t, &o);
  for (int i = 0; i < 1000; i++) {
    char key[16];
    int kl = snprintf(key, sizeof(key), "%d", i);
    assert_int_equal(braid_cache_put(c, key, (size_t)kl, "x", 1, 0), 0);
    assert_true(stats_of(c).entries <= 100);
  }
  assert_int_equal(stats_of(c).entries, 100);
  assert_int_equal(stats_of(c).evictions, 900);
  /* LRU: the last 100 remain. */
  size_t len;
  assert_int_equal(braid_cache_get(c, "899", 3, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_get(c, "900", 3, NULL, 0, &len), BRAID_ETOOBIG);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* ---- TTL ---------------------------------------------------------------------------------- */

static void test_ttl_lazy(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.sweep_interval_ms = 0; /* lazy only */
  o.default_ttl_ms = 40;
  braid_cache_t *c = new_cache(&t, &o);
  size_t len;
  assert_int_equal(braid_cache_put(c, "short", 5, "1", 1, 0), 0);          /* default 40 */
  assert_int_equal(braid_cache_put(c, "long", 4, "2", 1, 60000), 0);       /* 60 s */
  assert_int_equal(braid_cache_put(c, "never", 5, "3", 1, BRAID_CACHE_TTL_NONE), 0);
  assert_int_equal(braid_cache_get(c, "short", 5, NULL, 0, &len), BRAID_ETOOBIG);
  sleep_loop(&t, 80);
  assert_int_equal(stats_of(c).entries, 3); /* nothing swept */
  assert_int_equal(braid_cache_get(c, "short", 5, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_cache_get(c, "long", 4, NULL, 0, &len), BRAID_ETOOBIG);
  assert_int_equal(braid_cache_get(c, "never", 5, NULL, 0, &len), BRAID_ETOOBIG);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.expirations, 1);
  assert_int_equal(s.entries, 2);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static void test_ttl_active_sweep(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.sweep_interval_ms = 10;
  o.sweep_max_entries = 512;
  braid_cache_t *c = new_cache(&t, &o);
  for (int i = 0; i < 500; i++) {
    char key[16];
    int kl = snprintf(key, sizeof(key), "e%d", i);
    assert_int_equal(braid_cache_put(c, key, (size_t)kl, "x", 1, 20), 0);
  }
  assert_int_equal(braid_cache_put(c, "keep", 4, "x", 1, BRAID_CACHE_TTL_NONE), 0);
  size_t maxp, cap;
  double mean;
  braid__cache_probe_stats(c, &maxp, &mean, &cap);
  assert_true(cap <= 4096);
  /* At most 4096 slots at 512 per 10 ms tick: a full pass takes at most 80 ms. */
  sleep_loop(&t, 400);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.entries, 1);
  assert_int_equal(s.expirations, 500);
  assert_int_equal(s.hits + s.misses, 0); /* removed without any lookup */
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* ---- memoization -------------------------------------------------------------------------- */

typedef struct {
  int calls;
  int status;
  braid_blob_t *value;
  int *order; /* optional: records arrival order */
} result_t;

static void on_result(braid_cache_t *c, int status, braid_blob_t *value, void *arg) {
  (void)c;
  result_t *r = arg;
  r->calls++;
  r->status = status;
  if (value)
    r->value = braid_blob_ref(value);
  if (status == 0)
    assert_non_null(value);
  else
    assert_null(value);
}

/* Most checks below record results through on_result. braid_cache_memo() returns a result
 * known at once instead of calling back (0: the value; a negative code: the error, or a
 * refused call); memo_() hands a returned value to the callback so those checks read the same,
 * and passes BRAID_PENDING on as 0 (the callback comes later). The tests of the direct result
 * itself (test_memo_returns_*) call braid_cache_memo() directly. */
static int memo_(braid_cache_t *c, const void *key, size_t klen, const braid_cache_loader_t *ld,
                 braid_cache_memo_cb cb, void *arg) {
  braid_blob_t *v = (braid_blob_t *)&v; /* must be overwritten */
  int rc = braid_cache_memo(c, key, klen, ld, &v, cb, arg);
  if (rc == BRAID_PENDING) {
    assert_null(v);
    return 0;
  }
  if (rc == 0) {
    assert_non_null(v);
    cb(c, 0, v, arg);
    braid_blob_unref(v);
    return 0;
  }
  assert_null(v == (braid_blob_t *)&v ? NULL : v);
  return rc;
}

static void results_release(result_t *r, size_t n) {
  for (size_t i = 0; i < n; i++) {
    braid_blob_unref(r[i].value);
    r[i].value = NULL;
  }
}

static int compute_calls;
static int compute_square(const void *key, size_t klen, braid_blob_t **value, void *arg) {
  (void)arg;
  compute_calls++;
  char buf[32];
  long n = strtol((const char *)key, NULL, 10);
  (void)klen;
  int len = snprintf(buf, sizeof(buf), "%ld", n * n);
  return braid_blob_copy(value, buf, (size_t)len);
}

static void test_memo_sync(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = compute_square};
  result_t r[3] = {{0}};
  compute_calls = 0;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(memo_(c, "12", 3, &ld, on_result, &r[i]), 0);
    assert_int_equal(r[i].calls, 1); /* before memo returned */
    assert_int_equal(r[i].status, 0);
    assert_memory_equal(braid_blob_data(r[i].value), "144", 3);
  }
  assert_int_equal(compute_calls, 1);
  /* The cached value is the loader's blob: zero-copy. */
  assert_ptr_equal(r[1].value, r[0].value);
  braid_blob_t *b;
  assert_int_equal(braid_cache_get_blob(c, "12", 3, &b), 0);
  assert_ptr_equal(b, r[0].value);
  braid_blob_unref(b);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.loads, 1);
  assert_int_equal(s.hits, 3);
  assert_int_equal(s.misses, 1);
  results_release(r, 3);
  /* A loader missing its function is rejected. */
  braid_cache_loader_t bad = {.mode = BRAID_CACHE_LOAD_ASYNC};
  result_t x = {0};
  assert_int_equal(memo_(c, "k", 1, &bad, on_result, &x), BRAID_EINVAL);
  assert_int_equal(x.calls, 0);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* An asynchronous loader completed by a timer, so the waiters really wait. */
typedef struct {
  braid_cache_load_t *load;
  int starts;
  int status;
  const char *value;
  uv_timer_t timer;
  bool timer_open;
} async_src_t;

static void on_async_timer(uv_timer_t *h) {
  async_src_t *s = h->data;
  braid_blob_t *b = NULL;
  if (s->status == 0)
    assert_int_equal(braid_blob_copy(&b, s->value, strlen(s->value)), 0);
  braid_cache_load_t *l = s->load;
  s->load = NULL;
  assert_int_equal(braid_cache_load_done(l, s->status, b), 0);
  uv_close((uv_handle_t *)h, NULL);
}

static void async_start_later(braid_cache_load_t *load, const void *key, size_t klen, void *arg) {
  (void)key;
  (void)klen;
  async_src_t *s = arg;
  s->starts++;
  s->load = load;
  uv_timer_init(s->timer.loop ? s->timer.loop : uv_default_loop(), &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_async_timer, 20, 0);
}

/* Never completes on its own: the test completes (or abandons) it. */
static void async_start_hold(braid_cache_load_t *load, const void *key, size_t klen, void *arg) {
  (void)key;
  (void)klen;
  async_src_t *s = arg;
  s->starts++;
  s->load = load;
}

#define WAITERS 5000

static void test_single_flight_async(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_waiters = WAITERS;
  braid_cache_t *c = new_cache(&t, &o);
  async_src_t src = {.status = 0, .value = "loaded"};
  src.timer.loop = &t.uv;
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_later,
                             .arg = &src};
  result_t *r = calloc(WAITERS + 1, sizeof(*r));
  for (int i = 0; i < WAITERS; i++)
    assert_int_equal(memo_(c, "key", 3, &ld, on_result, &r[i]), 0);
  /* One more than max_waiters is refused, and its callback never runs. */
  assert_int_equal(memo_(c, "key", 3, &ld, on_result, &r[WAITERS]), BRAID_ETOOMANYWAITERS);
  assert_int_equal(src.starts, 1);
  bt_run(&t, 5000);
  for (int i = 0; i < WAITERS; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, 0);
    assert_memory_equal(braid_blob_data(r[i].value), "loaded", 6);
    assert_ptr_equal(r[i].value, r[0].value); /* every waiter shares one blob */
  }
  assert_int_equal(r[WAITERS].calls, 0);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.loads, 1);
  assert_int_equal(s.coalesced, WAITERS - 1);
  results_release(r, WAITERS);
  free(r);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static atomic_int work_calls;
static int compute_slow(const void *key, size_t klen, braid_blob_t **value, void *arg) {
  (void)arg;
  atomic_fetch_add(&work_calls, 1);
  uv_sleep(30); /* the threadpool thread blocks; the loop does not */
  return braid_blob_copy(value, key, klen);
}

static void test_single_flight_threadpool(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_WORK, .compute = compute_slow};
  result_t *r = calloc(2000, sizeof(*r));
  atomic_store(&work_calls, 0);
  for (int i = 0; i < 2000; i++)
    assert_int_equal(memo_(c, "heavy", 5, &ld, on_result, &r[i]), 0);
  assert_int_equal(r[0].calls, 0); /* nothing completes before the loop runs */
  bt_run(&t, 5000);
  assert_int_equal(atomic_load(&work_calls), 1);
  for (int i = 0; i < 2000; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, 0);
    assert_memory_equal(braid_blob_data(r[i].value), "heavy", 5);
  }
  results_release(r, 2000);
  free(r);
  /* Now a hit, without the threadpool. */
  result_t h = {0};
  assert_int_equal(memo_(c, "heavy", 5, &ld, on_result, &h), 0);
  assert_int_equal(h.calls, 1);
  results_release(&h, 1);
  assert_int_equal(atomic_load(&work_calls), 1);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static void test_loader_failure_releases_all(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  async_src_t src = {.status = UV_ECONNREFUSED};
  src.timer.loop = &t.uv;
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_later,
                             .arg = &src};
  result_t r[1000] = {{0}};
  for (int i = 0; i < 1000; i++)
    assert_int_equal(memo_(c, "k", 1, &ld, on_result, &r[i]), 0);
  bt_run(&t, 5000);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, UV_ECONNREFUSED);
  }
  /* Errors are not cached by default: the next call loads again. */
  memset(&src.timer, 0, sizeof(src.timer));
  src.timer.loop = &t.uv;
  src.status = 0;
  src.value = "ok";
  result_t again = {0};
  assert_int_equal(memo_(c, "k", 1, &ld, on_result, &again), 0);
  bt_run(&t, 5000);
  assert_int_equal(src.starts, 2);
  assert_int_equal(again.status, 0);
  results_release(&again, 1);
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.load_errors, 1);
  assert_int_equal(s.loads, 2);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static void test_loader_timeout(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.load_timeout_ms = 30;
  braid_cache_t *c = new_cache(&t, &o);
  async_src_t src = {0};
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &src};
  result_t r[3000] = {{0}};
  for (int i = 0; i < 3000; i++)
    assert_int_equal(memo_(c, "slow", 4, &ld, on_result, &r[i]), 0);
  bt_run(&t, 5000); /* the deadline timer keeps the loop alive until it fires */
  for (int i = 0; i < 3000; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, BRAID_ETIMEDOUT);
  }
  braid_cache_stats_t s = stats_of(c);
  assert_int_equal(s.load_timeouts, 1);
  assert_int_equal(s.load_errors, 1);
  /* A new request starts a new load; the late result of the first is discarded. */
  braid_cache_load_t *late = src.load;
  result_t r2 = {0};
  assert_int_equal(memo_(c, "slow", 4, &ld, on_result, &r2), 0);
  assert_int_equal(src.starts, 2);
  braid_blob_t *b;
  assert_int_equal(braid_blob_copy(&b, "late", 4), 0);
  assert_int_equal(braid_cache_load_done(late, 0, b), 0);
  for (int i = 0; i < 3000; i++)
    assert_int_equal(r[i].calls, 1);
  assert_int_equal(r2.calls, 0);
  assert_int_equal(braid_cache_load_done(src.load, 0, NULL), BRAID_EINVAL);
  assert_int_equal(r2.calls, 1);
  assert_int_equal(r2.status, BRAID_EINVAL);
  close_cache(&t, c);
  bt_loop_done(&t);
}

static int failing_calls;
static int compute_fail(const void *key, size_t klen, braid_blob_t **value, void *arg) {
  (void)key;
  (void)klen;
  (void)value;
  (void)arg;
  failing_calls++;
  return UV_EHOSTUNREACH;
}

static void test_negative_caching(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = 20;
  o.negative_ttl_ms = 40;
  o.negative_max_percent = 10; /* at most 2 cached errors */
  o.sweep_interval_ms = 0;
  braid_cache_t *c = new_cache(&t, &o);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = compute_fail};
  failing_calls = 0;
  result_t r = {0};
  /* The synchronous load's error, then the cached one: both returned, never called back. */
  for (int i = 0; i < 5; i++)
    assert_int_equal(memo_(c, "bad", 3, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(r.calls, 0);
  assert_int_equal(failing_calls, 1);
  assert_int_equal(stats_of(c).negative_hits, 4);
  /* get() does not see cached errors. */
  size_t len;
  assert_int_equal(braid_cache_get(c, "bad", 3, NULL, 0, &len), BRAID_ENOTFOUND);
  /* The cap: a second error is cached, a third is not. */
  assert_int_equal(memo_(c, "bad2", 4, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(memo_(c, "bad3", 4, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(failing_calls, 3);
  assert_int_equal(memo_(c, "bad2", 4, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(failing_calls, 3);
  assert_int_equal(memo_(c, "bad3", 4, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(failing_calls, 4);
  /* The error's own short TTL. */
  sleep_loop(&t, 60);
  assert_int_equal(memo_(c, "bad", 3, &ld, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(failing_calls, 5);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* Answers at once, from inside start. */
static void async_start_now(braid_cache_load_t *load, const void *key, size_t klen, void *arg) {
  (void)arg;
  braid_blob_t *b;
  assert_int_equal(braid_blob_copy(&b, key, klen), 0);
  assert_int_equal(braid_cache_load_done(load, 0, b), 0);
}

/* Issue 10: a hit called back before braid_cache_memo() returned, so a caller needed a
 * re-entrancy flag. Now what is known at once is returned, and the callback only ever runs
 * later, after the call returned. */
static void test_memo_returns_known_results(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.negative_ttl_ms = 60000;
  braid_cache_t *c = new_cache(&t, &o);
  result_t r = {0};
  braid_blob_t *v = NULL;
  /* A synchronous loader: the loaded value comes back, the callback is not called. */
  braid_cache_loader_t sync = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = compute_square};
  assert_int_equal(braid_cache_memo(c, "12", 3, &sync, &v, on_result, &r), 0);
  assert_non_null(v);
  assert_memory_equal(braid_blob_data(v), "144", 3);
  braid_blob_unref(v);
  /* A hit: the same, and the reference is the caller's (it outlives a delete). */
  v = NULL;
  assert_int_equal(braid_cache_memo(c, "12", 3, &sync, &v, on_result, &r), 0);
  assert_int_equal(braid_cache_delete(c, "12", 3), 0);
  assert_memory_equal(braid_blob_data(v), "144", 3);
  braid_blob_unref(v);
  /* An asynchronous loader that answers from inside start: returned too. */
  braid_cache_loader_t now = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_now};
  assert_int_equal(braid_cache_memo(c, "abc", 3, &now, &v, on_result, &r), 0);
  assert_memory_equal(braid_blob_data(v), "abc", 3);
  braid_blob_unref(v);
  /* A failing synchronous loader, then its cached error: returned, never called back. */
  braid_cache_loader_t fail = {.mode = BRAID_CACHE_LOAD_SYNC, .compute = compute_fail};
  assert_int_equal(braid_cache_memo(c, "x", 1, &fail, &v, on_result, &r), UV_EHOSTUNREACH);
  assert_null(v);
  assert_int_equal(braid_cache_memo(c, "x", 1, &fail, &v, on_result, &r), UV_EHOSTUNREACH);
  assert_int_equal(r.calls, 0);
  /* A wait: BRAID_PENDING, and the callback runs later, from the loop. */
  async_src_t src = {.value = "later"};
  src.timer.loop = &t.uv;
  braid_cache_loader_t later = {
      .mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_later, .arg = &src};
  result_t w[2] = {{0}};
  assert_int_equal(braid_cache_memo(c, "k", 1, &later, &v, on_result, &w[0]), BRAID_PENDING);
  assert_null(v);
  assert_int_equal(braid_cache_memo(c, "k", 1, &later, &v, on_result, &w[1]), BRAID_PENDING);
  assert_int_equal(w[0].calls + w[1].calls, 0);
  bt_run_until(&t, &w[1].calls, 5000);
  assert_int_equal(w[0].calls, 1);
  assert_int_equal(w[0].status, 0);
  assert_memory_equal(braid_blob_data(w[1].value), "later", 5);
  results_release(w, 2);
  assert_int_equal(r.calls, 0);
  /* User data (API.md rule 3). */
  assert_null(braid_cache_get_data(c));
  braid_cache_set_data(c, &r);
  assert_ptr_equal(braid_cache_get_data(c), &r);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* braid_cache_opts_validate() names the field and says why. */
static void test_opts_validate_names_field(void **state) {
  (void)state;
  braid_cache_opts_t o;
  braid_opts_error_t err;
  braid_cache_opts_init(&o);
  assert_int_equal(braid_cache_opts_validate(&o, &err), 0);
  o.max_bytes = 1 << 20;
  o.max_value_bytes = 2 << 20;
  assert_int_equal(braid_cache_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "max_value_bytes");
  assert_non_null(strstr(err.reason, "max_bytes"));
  braid_cache_opts_init(&o);
  o.stripes = 3;
  assert_int_equal(braid_cache_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "stripes");
  assert_int_equal(braid_cache_opts_validate(NULL, NULL), BRAID_EINVAL);
}

static int version;
static int compute_versioned(const void *key, size_t klen, braid_blob_t **value, void *arg) {
  (void)key;
  (void)klen;
  (void)arg;
  char buf[16];
  int n = snprintf(buf, sizeof(buf), "v%d", ++version);
  return braid_blob_copy(value, buf, (size_t)n);
}

static void test_stale_while_revalidate(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.stale_ms = 10000;
  o.sweep_interval_ms = 0;
  braid_cache_t *c = new_cache(&t, &o);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_WORK, .compute = compute_versioned,
                             .ttl_ms = 30};
  version = 0;
  result_t r = {0};
  assert_int_equal(memo_(c, "page", 4, &ld, on_result, &r), 0);
  bt_run(&t, 5000);
  assert_memory_equal(braid_blob_data(r.value), "v1", 2);
  results_release(&r, 1);
  sleep_loop(&t, 50);
  /* Expired but within the stale window: served at once, refreshed in the background. */
  result_t s1 = {0};
  assert_int_equal(memo_(c, "page", 4, &ld, on_result, &s1), 0);
  assert_int_equal(s1.calls, 1);
  assert_memory_equal(braid_blob_data(s1.value), "v1", 2);
  result_t s2 = {0};
  assert_int_equal(memo_(c, "page", 4, &ld, on_result, &s2), 0);
  assert_int_equal(s2.calls, 1); /* still stale, no second reload */
  bt_run(&t, 5000);
  assert_int_equal(version, 2);
  result_t f = {0};
  assert_int_equal(memo_(c, "page", 4, &ld, on_result, &f), 0);
  assert_memory_equal(braid_blob_data(f.value), "v2", 2);
  assert_int_equal(stats_of(c).stale_hits, 2);
  results_release(&s1, 1);
  results_release(&s2, 1);
  results_release(&f, 1);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* ---- blobs and close -------------------------------------------------------------------- */

static void test_blob_outlives_eviction(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = 2;
  braid_cache_t *c = new_cache(&t, &o);
  braid_blob_t *resp;
  assert_int_equal(braid_blob_copy(&resp, "HTTP/1.1 200 OK", 15), 0);
  assert_int_equal(braid_cache_put_blob(c, "/", 1, resp, 0), 0);
  assert_int_equal(braid_blob_refcount(resp), 2);
  braid_blob_t *held[3];
  for (int i = 0; i < 3; i++) { /* three "sockets" writing the same bytes */
    assert_int_equal(braid_cache_get_blob(c, "/", 1, &held[i]), 0);
    assert_ptr_equal(held[i], resp);
  }
  braid_blob_unref(resp);
  assert_int_equal(braid_blob_refcount(held[0]), 4);
  assert_int_equal(braid_cache_put(c, "a", 1, "1", 1, 0), 0);
  assert_int_equal(braid_cache_put(c, "b", 1, "2", 1, 0), 0); /* evicts "/" */
  size_t len;
  assert_int_equal(braid_cache_get(c, "/", 1, NULL, 0, &len), BRAID_ENOTFOUND);
  assert_int_equal(braid_blob_refcount(held[0]), 3);
  assert_memory_equal(braid_blob_data(held[2]), "HTTP/1.1 200 OK", 15);
  close_cache(&t, c);
  for (int i = 0; i < 3; i++)
    braid_blob_unref(held[i]); /* the last one frees it (ASan checks) */
  bt_loop_done(&t);
}

static void test_close_cancels_waiters(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.load_timeout_ms = 60000;
  braid_cache_t *c = new_cache(&t, &o);
  async_src_t a = {0}, b = {0};
  braid_cache_loader_t la = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &a};
  braid_cache_loader_t lb = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &b};
  braid_cache_loader_t lw = {.mode = BRAID_CACHE_LOAD_WORK, .compute = compute_slow};
  result_t r[300] = {{0}};
  for (int i = 0; i < 100; i++) {
    assert_int_equal(memo_(c, "a", 1, &la, on_result, &r[i]), 0);
    assert_int_equal(memo_(c, "b", 1, &lb, on_result, &r[100 + i]), 0);
    assert_int_equal(memo_(c, "w", 1, &lw, on_result, &r[200 + i]), 0);
  }
  assert_int_equal(braid_cache_close(c, on_closed, NULL), 0);
  for (int i = 0; i < 300; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, BRAID_ECANCELED);
  }
  assert_int_equal(braid_cache_close(c, on_closed, NULL), BRAID_ECLOSED);
  /* The loaders finish later; their results go nowhere. */
  braid_blob_t *v;
  assert_int_equal(braid_blob_copy(&v, "x", 1), 0);
  assert_int_equal(braid_cache_load_done(a.load, 0, v), 0);
  assert_int_equal(braid_cache_load_done(b.load, UV_EIO, NULL), 0);
  int before = closed_count;
  bt_run(&t, 5000);
  assert_int_equal(closed_count, before + 1);
  for (int i = 0; i < 300; i++)
    assert_int_equal(r[i].calls, 1);
  bt_loop_done(&t);
}

/* Closing from inside a waiter's callback: the other waiters of that load still get the
 * value, the waiters of other loads get BRAID_ECANCELED, each exactly once. */
static braid_cache_t *closing_cache;
static void on_result_then_close(braid_cache_t *c, int status, braid_blob_t *value, void *arg) {
  on_result(c, status, value, arg);
  if (closing_cache) {
    assert_int_equal(braid_cache_close(closing_cache, on_closed, NULL), 0);
    closing_cache = NULL;
  }
}

static void test_close_from_callback(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  async_src_t a = {0}, b = {0};
  braid_cache_loader_t la = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &a};
  braid_cache_loader_t lb = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &b};
  result_t ra[10] = {{0}}, rb[10] = {{0}};
  assert_int_equal(memo_(c, "a", 1, &la, on_result_then_close, &ra[0]), 0);
  for (int i = 1; i < 10; i++)
    assert_int_equal(memo_(c, "a", 1, &la, on_result, &ra[i]), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(memo_(c, "b", 1, &lb, on_result, &rb[i]), 0);
  closing_cache = c;
  braid_blob_t *v;
  assert_int_equal(braid_blob_copy(&v, "va", 2), 0);
  int before = closed_count;
  assert_int_equal(braid_cache_load_done(a.load, 0, v), 0);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(ra[i].calls, 1);
    assert_int_equal(ra[i].status, 0);
    assert_int_equal(rb[i].calls, 1);
    assert_int_equal(rb[i].status, BRAID_ECANCELED);
  }
  assert_int_equal(braid_cache_load_done(b.load, UV_EIO, NULL), 0);
  results_release(ra, 10);
  bt_run(&t, 5000);
  assert_int_equal(closed_count, before + 1);
  bt_loop_done(&t);
}

/* ---- crafted keys -------------------------------------------------------------------------- */

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3u;
  }
  return h;
}

/* Keys chosen so that an unkeyed FNV-1a table would put all of them in one bucket (their low
 * 12 bits agree, and an attacker can find such keys offline); the keyed table spreads them. */
static void test_crafted_keys_spread(void **state) {
  (void)state;
  enum { N = 2000, KEYLEN = 24 };
  char(*keys)[KEYLEN] = malloc((size_t)N * KEYLEN);
  int found = 0;
  uint64_t target = 0x5a5;
  for (uint64_t i = 0; found < N; i++) {
    char k[KEYLEN];
    memset(k, 'a', KEYLEN);
    snprintf(k, KEYLEN, "user:%016llx", (unsigned long long)(i * 0x9e3779b97f4a7c15u));
    if ((fnv1a(k, KEYLEN) & 0xfff) == target)
      memcpy(keys[found++], k, KEYLEN);
  }
  /* The control: under FNV every key has the same home in a table of up to 4096 slots (the
   * keyed table below has 4096 slots for 2000 keys). */
  for (int i = 1; i < N; i++)
    assert_true((fnv1a(keys[i], KEYLEN) & 0xfff) == (fnv1a(keys[0], KEYLEN) & 0xfff));
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_t *c = new_cache(&t, NULL);
  for (int i = 0; i < N; i++)
    assert_int_equal(braid_cache_put(c, keys[i], KEYLEN, "v", 1, 0), 0);
  size_t maxp, cap;
  double mean;
  braid__cache_probe_stats(c, &maxp, &mean, &cap);
  assert_int_equal(cap, 4096);
  /* With FNV and linear probing, the mean probe would be about N/2 = 1000. */
  if (maxp > 40 || mean > 3.0)
    fail_msg("keyed table clusters: max probe %zu, mean %.2f, %zu slots", maxp, mean, cap);
  for (int i = 0; i < N; i++) {
    size_t len;
    assert_int_equal(braid_cache_get(c, keys[i], KEYLEN, NULL, 0, &len), BRAID_ETOOBIG);
  }
  close_cache(&t, c);
  bt_loop_done(&t);
  free(keys);
}

/* Keys the store's hash sends to one slot (the test hook stands in for keys crafted against
 * the fast hash): once an insert's probe run reaches the flood bound, the cache rehashes with
 * SipHash-1-3, every entry stays reachable, runs are short again, and a load that was in
 * flight across the switch still lands where lookups find it. */
static void test_flood_falls_back_to_siphash(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_entries = 4096;
  braid_cache_t *c = new_cache(&t, &o);
  assert_int_equal(braid__cache_hash_mode(c), 0); /* fast by default */
  assert_int_equal(braid__cache_test_weak_hash(c), 0);
  async_src_t src = {0};
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &src};
  result_t r = {0};
  assert_int_equal(memo_(c, "k-pending", 9, &ld, on_result, &r), 0);
  assert_int_equal(src.starts, 1);
  enum { N = 1500 };
  for (int i = 0; i < N; i++) {
    char key[16];
    snprintf(key, sizeof(key), "k%08d", i); /* all 9 bytes long: one weak hash value */
    assert_int_equal(braid_cache_put(c, key, 9, &i, sizeof(i), 0), 0);
    if (i == 1000)
      assert_int_equal(braid__cache_hash_mode(c), 2); /* still colliding below the bound */
  }
  assert_int_equal(braid__cache_hash_mode(c), 1);
  braid_cache_stats_t st = stats_of(c);
  assert_int_equal(st.hash_fallbacks, 1);
  assert_int_equal(st.entries, N);
  size_t maxp, cap;
  double mean;
  braid__cache_probe_stats(c, &maxp, &mean, &cap);
  if (maxp > 40 || mean > 3.0)
    fail_msg("after the fall-back: max probe %zu, mean %.2f, %zu slots", maxp, mean, cap);
  for (int i = 0; i < N; i++) {
    char key[16];
    int v = -1;
    size_t len;
    snprintf(key, sizeof(key), "k%08d", i);
    assert_int_equal(braid_cache_get(c, key, 9, &v, sizeof(v), &len), 0);
    assert_int_equal(v, i);
  }
  braid_blob_t *b;
  assert_int_equal(braid_blob_copy(&b, "late", 4), 0);
  assert_int_equal(braid_cache_load_done(src.load, 0, b), 0);
  assert_int_equal(r.calls, 1);
  char buf[8];
  size_t len;
  assert_int_equal(braid_cache_get(c, "k-pending", 9, buf, sizeof(buf), &len), 0);
  assert_memory_equal(buf, "late", 4);
  results_release(&r, 1);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* The SipHash-from-the-start option works the same way, and bad values are refused. */
static void test_hash_option(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  assert_int_equal(o.hash, BRAID_CACHE_HASH_FAST);
  o.hash = BRAID_CACHE_HASH_SIPHASH;
  braid_cache_t *c = new_cache(&t, &o);
  assert_int_equal(braid__cache_hash_mode(c), 1);
  for (int i = 0; i < 3000; i++)
    assert_int_equal(braid_cache_put(c, &i, sizeof(i), &i, sizeof(i), 0), 0);
  for (int i = 0; i < 3000; i++) {
    int v = -1;
    size_t len;
    assert_int_equal(braid_cache_get(c, &i, sizeof(i), &v, sizeof(v), &len), 0);
    assert_int_equal(v, i);
  }
  assert_int_equal(stats_of(c).hash_fallbacks, 0);
  close_cache(&t, c);
  o.hash = (braid_cache_hash_t)2;
  braid_cache_t *bad = NULL;
  assert_int_equal(braid_cache_new(&bad, t.loop, &o), BRAID_EINVAL);
  assert_null(bad);
  braid_cache_shared_t *sh = NULL;
  assert_int_equal(braid_cache_shared_new(&sh, &o), BRAID_EINVAL);
  o.hash = BRAID_CACHE_HASH_SIPHASH;
  assert_int_equal(braid_cache_shared_new(&sh, &o), 0);
  for (int i = 0; i < 3000; i++)
    assert_int_equal(braid_cache_shared_put(sh, &i, sizeof(i), &i, sizeof(i), 0), 0);
  for (int i = 0; i < 3000; i++) {
    int v = -1;
    size_t len;
    assert_int_equal(braid_cache_shared_get(sh, &i, sizeof(i), &v, sizeof(v), &len), 0);
    assert_int_equal(v, i);
  }
  braid_cache_shared_free(sh);
  bt_loop_done(&t);
}

/* Distinct misses against a loader that never finishes cannot pile up loads: the one past
 * max_loads is refused (its callback never runs), joining a load in flight still works, and
 * a completed load frees its place. */
static void test_max_loads(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_loads = 3;
  braid_cache_t *c = new_cache(&t, &o);
  async_src_t src[4] = {{0}};
  result_t r[5] = {{0}};
  const char *keys[4] = {"a", "b", "c", "d"};
  for (int i = 0; i < 3; i++) {
    braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                               .arg = &src[i]};
    assert_int_equal(memo_(c, keys[i], 1, &ld, on_result, &r[i]), 0);
  }
  braid_cache_loader_t ld3 = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                              .arg = &src[3]};
  assert_int_equal(memo_(c, "d", 1, &ld3, on_result, &r[3]), BRAID_ETOOMANYWAITERS);
  assert_int_equal(src[3].starts, 0);
  assert_int_equal(memo_(c, "a", 1, &ld3, on_result, &r[4]), 0); /* joins "a" */
  braid_blob_t *b;
  assert_int_equal(braid_blob_copy(&b, "A", 1), 0);
  assert_int_equal(braid_cache_load_done(src[0].load, 0, b), 0);
  assert_int_equal(r[0].calls, 1);
  assert_int_equal(r[4].calls, 1);
  assert_int_equal(memo_(c, "d", 1, &ld3, on_result, &r[3]), 0);
  assert_int_equal(src[3].starts, 1);
  for (int i = 1; i < 4; i++)
    assert_int_equal(braid_cache_load_done(src[i].load, BRAID_ECANCELED, NULL), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(r[i].calls, 1);
  results_release(r, 5);
  close_cache(&t, c);
  bt_loop_done(&t);
}

/* Loads whose timeout passed while their (hung) loader still holds them keep counting
 * against max_loads until the loader finishes: otherwise each timeout period could start
 * max_loads more and memory would grow with every round. Once the loaders finish, new loads
 * start again. */
static void test_max_loads_counts_timed_out(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.max_loads = 2;
  o.load_timeout_ms = 10;
  braid_cache_t *c = new_cache(&t, &o);
  enum { ROUNDS = 5, N = 2 * ROUNDS };
  static async_src_t src[N + 1];
  static result_t r[N + 1];
  memset(src, 0, sizeof(src));
  memset(r, 0, sizeof(r));
  int started = 0, refused = 0;
  for (int round = 0; round < ROUNDS; round++) {
    for (int k = 0; k < 2; k++) {
      int i = round * 2 + k;
      char key[8];
      snprintf(key, sizeof(key), "k%d", i);
      braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                                 .arg = &src[i]};
      int rc = memo_(c, key, strlen(key), &ld, on_result, &r[i]);
      if (rc == 0)
        started += src[i].starts;
      else if (rc == BRAID_ETOOMANYWAITERS)
        refused++;
    }
    bt_run_for(&t, 30); /* the loads time out; their loader still holds them */
  }
  assert_int_equal(started, 2);
  assert_int_equal(refused, N - 2);
  for (int i = 0; i < N; i++) {
    if (src[i].starts) {
      assert_int_equal(r[i].calls, 1);
      assert_int_equal(r[i].status, BRAID_ETIMEDOUT);
      assert_int_equal(braid_cache_load_done(src[i].load, BRAID_ECANCELED, NULL), 0);
    }
  }
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &src[N]};
  assert_int_equal(memo_(c, "again", 5, &ld, on_result, &r[N]), 0);
  assert_int_equal(src[N].starts, 1);
  /* One still held when the cache closes: its waiter hears ECANCELED, and the loader's late
   * completion finds no cache. */
  close_cache(&t, c);
  assert_int_equal(r[N].calls, 1);
  assert_int_equal(braid_cache_load_done(src[N].load, 0, NULL), BRAID_EINVAL);
  results_release(r, N + 1);
  bt_loop_done(&t);
}

/* A waiter that, told of its load's timeout, releases the load from its callback (an app
 * giving up its backend fetch): the load is freed once, after every waiter was told. (It was
 * freed inside the callback and then again: heap-use-after-free, found by the third review.)
 * The same with a cache closing under a waiting load. */
static async_src_t release_src;
static int release_calls;
static void release_on_result(braid_cache_t *c, int status, braid_blob_t *v, void *arg) {
  (void)c, (void)v, (void)arg;
  release_calls++;
  if ((status == BRAID_ETIMEDOUT || status == BRAID_ECANCELED) && release_src.load) {
    braid_cache_load_t *l = release_src.load;
    release_src.load = NULL;
    assert_int_equal(braid_cache_load_done(l, BRAID_ECANCELED, NULL), 0);
  }
}

static void test_load_done_from_waiter_callback(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_cache_opts_t o;
  braid_cache_opts_init(&o);
  o.load_timeout_ms = 10;
  braid_cache_t *c = new_cache(&t, &o);
  braid_cache_loader_t ld = {.mode = BRAID_CACHE_LOAD_ASYNC, .start = async_start_hold,
                             .arg = &release_src};
  memset(&release_src, 0, sizeof(release_src));
  release_calls = 0;
  assert_int_equal(memo_(c, "k", 1, &ld, release_on_result, NULL), 0);
  assert_int_equal(memo_(c, "k", 1, &ld, release_on_result, NULL), 0);
  bt_run_for(&t, 40);
  assert_int_equal(release_calls, 2);
  /* The load's place is free again: a new one starts. */
  assert_int_equal(memo_(c, "k", 1, &ld, release_on_result, NULL), 0);
  assert_int_equal(release_src.starts, 2);
  close_cache(&t, c); /* its waiter hears ECANCELED and releases the load from the callback */
  assert_int_equal(release_calls, 3);
  assert_null(release_src.load);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opts_bounds),
      cmocka_unit_test(test_put_get_delete),
      cmocka_unit_test(test_lru_matches_model),
      cmocka_unit_test(test_sieve_order),
      cmocka_unit_test(test_sieve_matches_model),
      cmocka_unit_test(test_bounds_lru),
      cmocka_unit_test(test_bounds_sieve),
      cmocka_unit_test(test_entry_bound),
      cmocka_unit_test(test_ttl_lazy),
      cmocka_unit_test(test_ttl_active_sweep),
      cmocka_unit_test(test_memo_sync),
      cmocka_unit_test(test_single_flight_async),
      cmocka_unit_test(test_single_flight_threadpool),
      cmocka_unit_test(test_loader_failure_releases_all),
      cmocka_unit_test(test_loader_timeout),
      cmocka_unit_test(test_negative_caching),
      cmocka_unit_test(test_memo_returns_known_results),
      cmocka_unit_test(test_opts_validate_names_field),
      cmocka_unit_test(test_stale_while_revalidate),
      cmocka_unit_test(test_blob_outlives_eviction),
      cmocka_unit_test(test_close_cancels_waiters),
      cmocka_unit_test(test_close_from_callback),
      cmocka_unit_test(test_crafted_keys_spread),
      cmocka_unit_test(test_flood_falls_back_to_siphash),
      cmocka_unit_test(test_hash_option),
      cmocka_unit_test(test_max_loads),
      cmocka_unit_test(test_max_loads_counts_timed_out),
      cmocka_unit_test(test_load_done_from_waiter_callback),
  };
  /* The slow suite runs only the bounds tests, at full size. */
  if (getenv("BRAID_CACHE_BOUND_INSERTS"))
    cmocka_set_test_filter("test_bounds_*");
  return cmocka_run_group_tests(tests, NULL, NULL);
}
