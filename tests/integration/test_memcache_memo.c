/* The two-tier memo against a real memcached: several clients, each with its own L1 (as
 * separate processes would have), share one memcached. A key missing everywhere is loaded
 * once for all of them (memcached's vivify/win flags), stale values are served while one
 * client refreshes them, errors are cached across clients, large values are gzipped or kept
 * out of memcached, and a dead memcached only costs the sharing. */
#include <stdlib.h>

#include "../mc_support.h"

static int have_memcached = -1;

static int setup(void **state) {
  (void)state;
  if (have_memcached < 0)
    have_memcached = mcd_available();
  return 0;
}

#define NEED_MEMCACHED()                                                                           \
  do {                                                                                             \
    if (!have_memcached) {                                                                         \
      print_message("memcached is not installed (scripts/deps.sh test installs it): skipped\n");  \
      skip();                                                                                      \
    }                                                                                              \
  } while (0)

enum { CLIENTS = 4, KEYS = 20, CALLERS = 25 };

/* ---- a slow asynchronous loader that counts its runs per key -------------------------------- */

static int loads_per_key[KEYS];
static int loader_version = 1;
static int loader_fail; /* nonzero: loads fail with this code */
static int loader_hang; /* nonzero: loads never complete (kept in hung[]) */
static braid_memcache_load_t *hung[16];
static int nhung;
static size_t loader_value_bytes; /* nonzero: values of this size */
static uv_loop_t *loader_uv;

typedef struct pending_load_s {
  uv_timer_t timer;
  braid_memcache_load_t *load;
  int key;
} pending_load_t;

static int key_index(const void *key, size_t len) {
  char buf[32];
  if (len >= sizeof(buf))
    return 0;
  memcpy(buf, key, len);
  buf[len] = 0;
  return atoi(buf + 4); /* "key:N" */
}

static braid_blob_t *make_value(int key) {
  braid_blob_t *b;
  if (loader_value_bytes) {
    assert_int_equal(braid_blob_new(&b, loader_value_bytes), 0);
    uint8_t *p = braid_blob_data(b);
    for (size_t i = 0; i < loader_value_bytes; i++)
      p[i] = (uint8_t)(i % 64 == 0 ? key : 'a' + (int)(i % 7));
    return b;
  }
  char v[64];
  int n = snprintf(v, sizeof(v), "value:%d:v%d", key, loader_version);
  assert_int_equal(braid_blob_copy(&b, v, (size_t)n), 0);
  return b;
}

static void on_load_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_load_timer(uv_timer_t *t) {
  pending_load_t *p = t->data;
  if (loader_fail)
    braid_memcache_memo_load_done(p->load, loader_fail, NULL);
  else
    braid_memcache_memo_load_done(p->load, 0, make_value(p->key));
  t->data = p;
  uv_close((uv_handle_t *)t, on_load_timer_closed);
}

static void slow_start(braid_memcache_load_t *load, const void *key, size_t key_len, void *arg) {
  (void)arg;
  int k = key_index(key, key_len);
  loads_per_key[k]++;
  if (loader_hang) {
    hung[nhung++] = load;
    return;
  }
  pending_load_t *p = calloc(1, sizeof(*p));
  p->load = load;
  p->key = k;
  uv_timer_init(loader_uv, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_load_timer, 30, 0);
}

static braid_memcache_loader_t slow_loader = {BRAID_CACHE_LOAD_ASYNC, NULL, slow_start, NULL};

static int sync_compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  int k = key_index(key, key_len);
  loads_per_key[k]++;
  if (loader_fail)
    return loader_fail;
  *value = make_value(k);
  return 0;
}

static braid_memcache_loader_t sync_loader = {BRAID_CACHE_LOAD_SYNC, sync_compute, NULL, NULL};

/* ---- clients ----------------------------------------------------------------------------------- */

typedef struct fleet_s {
  bt_loop_t t;
  mcd_t d;
  braid_memcache_t *mc[CLIENTS];
  braid_memcache_memo_t *memo[CLIENTS];
} fleet_t;

static void fleet_start(fleet_t *f, const braid_memcache_memo_opts_t *mo) {
  memset(f, 0, sizeof(*f));
  bt_loop_init(&f->t);
  loader_uv = &f->t.uv;
  mcd_start(&f->t, &f->d);
  for (int i = 0; i < CLIENTS; i++) {
    assert_int_equal(braid_memcache_new(&f->mc[i], f->t.loop, NULL), 0);
    assert_int_equal(braid_memcache_add_server(f->mc[i], "127.0.0.1", f->d.port, 1, NULL), 0);
    assert_int_equal(braid_memcache_memo_new(&f->memo[i], f->mc[i], mo), 0);
  }
  memset(loads_per_key, 0, sizeof(loads_per_key));
  loader_version = 1;
  loader_fail = 0;
  loader_hang = 0;
  nhung = 0;
  loader_value_bytes = 0;
}

static int memo_closed;
static void on_memo_closed(braid_memcache_memo_t *m, int status, void *arg) {
  (void)m;
  (void)status;
  (void)arg;
  memo_closed++;
}

static void fleet_stop(fleet_t *f) {
  memo_closed = 0;
  for (int i = 0; i < CLIENTS; i++)
    assert_int_equal(braid_memcache_memo_close(f->memo[i], on_memo_closed, NULL), 0);
  while (memo_closed < CLIENTS)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  for (int i = 0; i < CLIENTS; i++)
    mc_close_sync(&f->t, f->mc[i]);
  mcd_stop(&f->t, &f->d);
  bt_run(&f->t, 5000);
  bt_loop_done(&f->t);
}

typedef struct answer_s {
  int done;
  int status;
  char value[64];
  size_t len;
} answer_t;

static void on_answer(braid_memcache_memo_t *m, int status, braid_blob_t *value, void *arg) {
  (void)m;
  answer_t *a = arg;
  a->done = 1;
  a->status = status;
  if (value) {
    a->len = braid_blob_len(value);
    memcpy(a->value, braid_blob_data(value), a->len < sizeof(a->value) ? a->len : sizeof(a->value));
  }
}

/* Asks memo for key k; returns 1 if answered now (a is filled), 0 if pending. */
static int ask(braid_memcache_memo_t *memo, int k, const braid_memcache_loader_t *loader,
               answer_t *a) {
  char key[32];
  int kn = snprintf(key, sizeof(key), "key:%d", k);
  memset(a, 0, sizeof(*a));
  braid_blob_t *v = NULL;
  int rc = braid_memcache_memo(memo, key, (size_t)kn, loader, &v, on_answer, a);
  if (rc == BRAID_PENDING)
    return 0;
  a->done = 1;
  a->status = rc;
  if (rc == 0) {
    a->len = braid_blob_len(v);
    memcpy(a->value, braid_blob_data(v), a->len < sizeof(a->value) ? a->len : sizeof(a->value));
    braid_blob_unref(v);
  }
  return 1;
}

static void wait_all(bt_loop_t *t, answer_t *a, int n) {
  for (int i = 0; i < n; i++)
    bt_run_until(t, &a[i].done, 20000);
}


/* Waits (bounded) until the clients have stored at least n values in memcached. */
static void wait_stores(fleet_t *f, uint64_t n) {
  for (int i = 0; i < 500; i++) {
    uint64_t stores = 0;
    for (int c = 0; c < CLIENTS; c++) {
      braid_memcache_memo_stats_t st;
      braid_memcache_memo_stats(f->memo[c], &st);
      stores += st.stores;
    }
    if (stores >= n)
      return;
    bt_run_for(&f->t, 10);
  }
  fail_msg("the clients did not store %d values in 5 s", (int)n);
}

/* Waits (bounded) until key k is gone from memcached (a released lease). */
static void wait_gone(fleet_t *f, int k) {
  char key[32];
  int kn = snprintf(key, sizeof(key), "key:%d", k);
  for (int i = 0; i < 500; i++) {
    braid_memcache_req_t r;
    braid_memcache_req_init(&r);
    r.key = key;
    r.key_len = (size_t)kn;
    got_t g;
    mc_do(&f->t, f->mc[3], &r, &g);
    if (g.status == 0 && g.r.code == BRAID_MEMCACHE_EN)
      return;
    bt_run_for(&f->t, 10);
  }
  fail_msg("key %d still in memcached after 5 s", k);
}

/* ---- the stampede ---------------------------------------------------------------------------- */

static answer_t answers[CLIENTS * KEYS * CALLERS];

static void test_one_load_per_key_across_clients(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  fleet_start(&f, NULL);
  /* every client gets CALLERS concurrent calls for every cold key, all at once */
  int n = 0;
  for (int c = 0; c < CALLERS; c++)
    for (int k = 0; k < KEYS; k++)
      for (int i = 0; i < CLIENTS; i++)
        ask(f.memo[i], k, &slow_loader, &answers[n++]);
  wait_all(&f.t, answers, n);
  n = 0;
  for (int c = 0; c < CALLERS; c++)
    for (int k = 0; k < KEYS; k++)
      for (int i = 0; i < CLIENTS; i++) {
        answer_t *a = &answers[n++];
        char want[64];
        snprintf(want, sizeof(want), "value:%d:v1", k);
        assert_int_equal(a->status, 0);
        assert_int_equal(a->len, strlen(want));
        assert_memory_equal(a->value, want, a->len);
      }
  for (int k = 0; k < KEYS; k++)
    if (loads_per_key[k] != 1)
      fail_msg("key %d loaded %d times across %d clients, want 1", k, loads_per_key[k], CLIENTS);
  uint64_t wins = 0, waits = 0, l1_hits = 0, l2_hits = 0;
  for (int i = 0; i < CLIENTS; i++) {
    braid_memcache_memo_stats_t st;
    assert_int_equal(braid_memcache_memo_stats(f.memo[i], &st), 0);
    wins += st.wins;
    waits += st.waits;
    l1_hits += st.l1_hits;
    l2_hits += st.l2_hits;
  }
  assert_int_equal(wins, KEYS);
  assert_true(waits + l2_hits >= (uint64_t)KEYS * (CLIENTS - 1));
  /* now warm: answered from L1 at once */
  answer_t a;
  assert_int_equal(ask(f.memo[2], 3, &slow_loader, &a), 1);
  assert_int_equal(a.status, 0);
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(f.memo[2], &st);
  assert_true(st.l1_hits >= 1);
  fleet_stop(&f);
}

/* ---- stale-while-revalidate under a TTL expiry ------------------------------------------------ */

static void test_stale_while_revalidate(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.ttl_s = 1;
  mo.stale_s = 30;
  mo.l1.default_ttl_ms = 50;
  fleet_start(&f, &mo);
  answer_t a, b;
  if (!ask(f.memo[0], 1, &slow_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_memory_equal(a.value, "value:1:v1", 10);
  /* past the fresh second (memcached counts whole seconds) */
  bt_run_for(&f.t, 2100);
  loader_version = 2;
  /* two clients at once: one wins the refresh, both are served the stale value now */
  int na = ask(f.memo[0], 1, &slow_loader, &a);
  int nb = ask(f.memo[1], 1, &slow_loader, &b);
  (void)na;
  (void)nb;
  bt_run_until(&f.t, &a.done, 5000);
  bt_run_until(&f.t, &b.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(b.status, 0);
  assert_memory_equal(a.value, "value:1:v1", 10);
  assert_memory_equal(b.value, "value:1:v1", 10);
  /* the refresh lands; L1 entries expire; everyone sees v2 */
  wait_stores(&f, 2);
  bt_run_for(&f.t, 60);
  assert_int_equal(loads_per_key[1], 2);
  for (int i = 0; i < CLIENTS; i++) {
    if (!ask(f.memo[i], 1, &slow_loader, &a))
      bt_run_until(&f.t, &a.done, 5000);
    assert_int_equal(a.status, 0);
    assert_memory_equal(a.value, "value:1:v2", 10);
  }
  assert_int_equal(loads_per_key[1], 2);
  uint64_t stale = 0;
  for (int i = 0; i < CLIENTS; i++) {
    braid_memcache_memo_stats_t st;
    braid_memcache_memo_stats(f.memo[i], &st);
    stale += st.stale_served;
  }
  assert_true(stale >= 2);
  fleet_stop(&f);
}

/* ---- negative caching across clients ---------------------------------------------------------- */

static void test_negative_caching_carries_over(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.negative_ttl_s = 30;
  fleet_start(&f, &mo);
  loader_fail = BRAID_ENOTFOUND;
  answer_t a;
  if (!ask(f.memo[0], 5, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, BRAID_ENOTFOUND);
  wait_stores(&f, 1); /* the error is stored */
  for (int i = 1; i < CLIENTS; i++) {
    if (!ask(f.memo[i], 5, &sync_loader, &a))
      bt_run_until(&f.t, &a.done, 5000);
    assert_int_equal(a.status, BRAID_ENOTFOUND);
  }
  assert_int_equal(loads_per_key[5], 1);
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(f.memo[1], &st);
  assert_int_equal(st.negative_hits, 1);
  fleet_stop(&f);
}

/* ---- a winner that fails without negative caching releases its lease ---------------------- */

static void test_failed_winner_releases_lease(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  fleet_start(&f, NULL);
  loader_fail = BRAID_EREMOTE;
  answer_t a;
  if (!ask(f.memo[0], 6, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, BRAID_EREMOTE);
  wait_gone(&f, 6);
  loader_fail = 0;
  uint64_t t0 = uv_now(&f.t.uv);
  if (!ask(f.memo[1], 6, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_true(uv_now(&f.t.uv) - t0 < 1000); /* won at once, did not wait out the lease */
  assert_int_equal(loads_per_key[6], 2);
  fleet_stop(&f);
}

/* ---- waiting is bounded ---------------------------------------------------------------------- */

static void test_waiter_times_out(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.wait_timeout_ms = 300;
  mo.poll_max_ms = 50;
  fleet_start(&f, &mo);
  loader_hang = 1;
  answer_t a, b;
  assert_int_equal(ask(f.memo[0], 7, &slow_loader, &a), 0);
  for (int i = 0; i < 500 && nhung == 0; i++)
    bt_run_for(&f.t, 10); /* until client 0 has won and runs its loader */
  assert_int_equal(nhung, 1);
  uint64_t t0 = uv_now(&f.t.uv);
  assert_int_equal(ask(f.memo[1], 7, &slow_loader, &b), 0);
  bt_run_until(&f.t, &b.done, 5000);
  assert_int_equal(b.status, BRAID_ETIMEDOUT);
  uint64_t waited = uv_now(&f.t.uv) - t0;
  assert_true(waited >= 280 && waited < 2000);
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(f.memo[1], &st);
  assert_true(st.polls >= 3);
  assert_int_equal(loads_per_key[7], 1);
  /* the winner finishes: its callers get the value, and so does everyone after */
  braid_blob_t *v;
  assert_int_equal(braid_blob_copy(&v, "late", 4), 0);
  assert_int_equal(braid_memcache_memo_load_done(hung[0], 0, v), 0);
  bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_memory_equal(a.value, "late", 4);
  wait_stores(&f, 1);
  if (!ask(f.memo[2], 7, &slow_loader, &b))
    bt_run_until(&f.t, &b.done, 5000);
  assert_memory_equal(b.value, "late", 4);
  fleet_stop(&f);
}

/* ---- large values: gzip, and too big for memcached ------------------------------------------ */

static void test_gzip_and_too_big(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.gzip_min_bytes = 1024;
  fleet_start(&f, &mo);
  /* 3 MiB of repetitive bytes: over memcached's 1 MiB item size raw, far under it gzipped */
  loader_value_bytes = 3 * 1024 * 1024;
  answer_t a;
  if (!ask(f.memo[0], 8, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.len, loader_value_bytes);
  wait_stores(&f, 1);
  if (!ask(f.memo[1], 8, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.len, loader_value_bytes);
  assert_int_equal(loads_per_key[8], 1); /* client 1 got it from memcached */
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(f.memo[0], &st);
  assert_int_equal(st.stores, 1);
  fleet_stop(&f);

  /* without gzip the same value cannot go to memcached: delivered, counted, lease released */
  fleet_start(&f, NULL);
  loader_value_bytes = 3 * 1024 * 1024;
  if (!ask(f.memo[0], 9, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.len, loader_value_bytes);
  braid_memcache_memo_stats(f.memo[0], &st);
  assert_int_equal(st.too_big, 1);
  wait_gone(&f, 9);
  if (!ask(f.memo[1], 9, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(loads_per_key[9], 2); /* computed per process, as documented */
  fleet_stop(&f);
}


/* ---- a value another kind of client stored is served as it is ------------------------------ */

static void test_foreign_value_served(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  fleet_start(&f, NULL);
  got_t g;
  memset(&g, 0, sizeof(g));
  assert_int_equal(braid_memcache_set(f.mc[0], "key:11", 6, "from-elsewhere", 14, 0, 0, on_got,
                                      &g), 0);
  bt_run_until(&f.t, &g.done, 5000);
  answer_t a;
  if (!ask(f.memo[1], 11, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.len, 14);
  assert_memory_equal(a.value, "from-elsewhere", 14);
  assert_int_equal(loads_per_key[11], 0);
  fleet_stop(&f);
}

/* ---- memcached down: loads run locally ------------------------------------------------------ */

static void test_memcached_down_loads_locally(void **state) {
  (void)state;
  NEED_MEMCACHED();
  static fleet_t f;
  fleet_start(&f, NULL);
  mcd_stop(&f.t, &f.d);
  answer_t a;
  if (!ask(f.memo[0], 10, &sync_loader, &a))
    bt_run_until(&f.t, &a.done, 5000);
  assert_int_equal(a.status, 0);
  assert_memory_equal(a.value, "value:10:v1", 11);
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(f.memo[0], &st);
  assert_true(st.l2_errors >= 1);
  fleet_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_one_load_per_key_across_clients, setup,
                                      mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_stale_while_revalidate, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_negative_caching_carries_over, setup,
                                      mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_failed_winner_releases_lease, setup,
                                      mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_waiter_times_out, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_gzip_and_too_big, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_foreign_value_served, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_memcached_down_loads_locally, setup,
                                      mcd_kill_leftovers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
