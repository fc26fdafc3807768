/* The memcached client against real memcached servers (and fake ones): every meta command
 * and flag, pipelining order, multi-get across servers, key placement against pymemcache,
 * dead marking and revival, timeouts against a server that never answers, hostile replies.
 *
 * Each test starts its own memcached processes on 127.0.0.1 ephemeral ports and kills them at
 * the end (the teardown kills leftovers of a failed test). No memcached installed: every test
 * skips, saying why (scripts/deps.sh test installs it, so CI runs them). */
#include <stdlib.h>

#include "../mc_support.h"
#include "memcache_proto.h"

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

static braid_memcache_t *mc_new(bt_loop_t *t, mcd_t *servers, int n,
                                braid_memcache_opts_t *o) {
  braid_memcache_t *mc;
  assert_int_equal(braid_memcache_new(&mc, t->loop, o), 0);
  for (int i = 0; i < n; i++) {
    int idx = -1;
    assert_int_equal(braid_memcache_add_server(mc, "127.0.0.1", servers[i].port, 1, &idx), 0);
    assert_int_equal(idx, i);
  }
  return mc;
}

/* ---- every command and flag ----------------------------------------------------------------- */

static void test_commands_and_flags(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d;
  mcd_start(&t, &d);
  braid_memcache_t *mc = mc_new(&t, &d, 1, NULL);
  got_t g;
  braid_memcache_req_t r;

  /* ms with T and F, then mg with v f c t k O s h l */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = "k1";
  r.key_len = 2;
  r.value = "hello";
  r.value_len = 5;
  r.ttl_s = 0;
  r.client_flags = 7;
  r.flags = BRAID_MEMCACHE_F_RETURN_CAS;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  assert_true(g.r.has_cas);
  uint64_t cas = g.r.cas;

  braid_memcache_req_init(&r);
  r.key = "k1";
  r.key_len = 2;
  r.flags = BRAID_MEMCACHE_F_VALUE | BRAID_MEMCACHE_F_RETURN_FLAGS | BRAID_MEMCACHE_F_RETURN_CAS |
            BRAID_MEMCACHE_F_RETURN_TTL | BRAID_MEMCACHE_F_RETURN_KEY | BRAID_MEMCACHE_F_RETURN_SIZE |
            BRAID_MEMCACHE_F_HIT | BRAID_MEMCACHE_F_LAST_ACCESS;
  r.opaque = "op42";
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
  assert_int_equal(g.value_len, 5);
  assert_memory_equal(g.value, "hello", 5);
  assert_int_equal(g.r.client_flags, 7);
  assert_true(g.r.has_flags && g.r.has_cas && g.r.has_ttl && g.r.has_size && g.r.has_hit &&
              g.r.has_last_access);
  assert_int_equal(g.r.cas, cas);
  assert_int_equal(g.r.ttl_s, -1);
  assert_int_equal(g.r.size, 5);
  assert_int_equal(g.r.hit_before, 0);
  assert_string_equal(g.key, "k1");
  assert_string_equal(g.opaque, "op42");
  assert_int_equal(g.r.server, 0);
  /* fetched before now */
  r.opaque = NULL;
  r.flags = BRAID_MEMCACHE_F_HIT;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  assert_int_equal(g.r.hit_before, 1);

  /* touch with T on mg, then t shows it */
  braid_memcache_req_init(&r);
  r.key = "k1";
  r.key_len = 2;
  r.ttl_s = 100;
  r.flags = BRAID_MEMCACHE_F_RETURN_TTL | BRAID_MEMCACHE_F_NO_BUMP;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  assert_true(g.r.ttl_s > 90 && g.r.ttl_s <= 100);

  /* CAS: a wrong one is EX, the right one stores */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = "k1";
  r.key_len = 2;
  r.value = "world";
  r.value_len = 5;
  r.compare_cas = (int64_t)cas + 1000;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_EX);
  r.compare_cas = (int64_t)cas;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);

  /* modes: add on a present key NS, replace on an absent key NS, append, prepend */
  r.compare_cas = -1;
  r.mode = BRAID_MEMCACHE_ADD;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NS);
  r.mode = BRAID_MEMCACHE_REPLACE;
  r.key = "absent";
  r.key_len = 6;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NS);
  r.key = "k1";
  r.key_len = 2;
  r.mode = BRAID_MEMCACHE_APPEND;
  r.value = "!";
  r.value_len = 1;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  r.mode = BRAID_MEMCACHE_PREPEND;
  r.value = "<";
  mc_do(&t, mc, &r, &g);
  mc_get_sync(&t, mc, "k1", &g);
  assert_int_equal(g.value_len, 7);
  assert_memory_equal(g.value, "<world!", 7);

  /* quiet: a stored set and a miss say nothing (NONE); a hit still answers */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = "quiet";
  r.key_len = 5;
  r.value = "q";
  r.value_len = 1;
  r.flags = BRAID_MEMCACHE_F_QUIET;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NONE);
  braid_memcache_req_init(&r);
  r.key = "nothing-here";
  r.key_len = 12;
  r.flags = BRAID_MEMCACHE_F_VALUE | BRAID_MEMCACHE_F_QUIET;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NONE);
  r.key = "quiet";
  r.key_len = 5;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
  /* a plain miss is EN */
  mc_get_sync(&t, mc, "nothing-here", &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_EN);

  /* ma: NF when absent, auto-create with N and J, incr, decr with D */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MA;
  r.key = "counter";
  r.key_len = 7;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NF);
  r.vivify_ttl_s = 0;
  r.initial = 10;
  r.flags = BRAID_MEMCACHE_F_VALUE;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
  assert_int_equal(g.r.number, 10);
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.number, 11);
  r.mode = BRAID_MEMCACHE_DECR;
  r.delta = 5;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.number, 6);
  /* ma on a non-number: the server's CLIENT_ERROR, as BRAID_EREMOTE with the line */
  r.key = "k1";
  r.key_len = 2;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, BRAID_EREMOTE);
  assert_true(g.value_len > 12 && memcmp(g.value, "CLIENT_ERROR", 12) == 0);

  /* md with I marks stale: the next mg wins (W, X), the one after sees Z */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MD;
  r.key = "k1";
  r.key_len = 2;
  r.flags = BRAID_MEMCACHE_F_INVALIDATE;
  r.ttl_s = 30;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  braid_memcache_req_init(&r);
  r.key = "k1";
  r.key_len = 2;
  r.flags = BRAID_MEMCACHE_F_VALUE;
  mc_do(&t, mc, &r, &g);
  assert_true(g.r.won && g.r.stale && !g.r.lost);
  mc_do(&t, mc, &r, &g);
  assert_true(!g.r.won && g.r.stale && g.r.lost);
  /* md: HD, then NF */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MD;
  r.key = "k1";
  r.key_len = 2;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NF);

  /* N (vivify): the first miss wins (W, empty value), the next sees Z; R (recache) */
  braid_memcache_req_init(&r);
  r.key = "lease";
  r.key_len = 5;
  r.flags = BRAID_MEMCACHE_F_VALUE | BRAID_MEMCACHE_F_RETURN_CAS;
  r.vivify_ttl_s = 30;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
  assert_int_equal(g.value_len, 0);
  assert_true(g.r.won && !g.r.lost);
  mc_do(&t, mc, &r, &g);
  assert_true(!g.r.won && g.r.lost);
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = "recache";
  r.key_len = 7;
  r.value = "v";
  r.value_len = 1;
  r.ttl_s = 10;
  mc_do(&t, mc, &r, &g);
  braid_memcache_req_init(&r);
  r.key = "recache";
  r.key_len = 7;
  r.flags = BRAID_MEMCACHE_F_VALUE;
  r.recache_ttl_s = 30;
  mc_do(&t, mc, &r, &g);
  assert_true(g.r.won);
  mc_do(&t, mc, &r, &g);
  assert_true(g.r.lost && !g.r.won);

  /* mn to a server by index */
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MN;
  r.server = 0;
  mc_do(&t, mc, &r, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_NOOP);

  /* binary-safe keys: spaces and control bytes (b flag), 300 bytes (hashed), 185 bytes */
  uint8_t kbin[300];
  for (int i = 0; i < 300; i++)
    kbin[i] = (uint8_t)(i * 7);
  size_t lens[] = {3, 185, 186, 250, 300};
  for (size_t i = 0; i < 5; i++) {
    char val[32];
    int vn = snprintf(val, sizeof(val), "bin-%zu", lens[i]);
    got_t s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(braid_memcache_set(mc, kbin, lens[i], val, (size_t)vn, 0, 0, on_got, &s), 0);
    bt_run_until(&t, &s.done, 5000);
    assert_int_equal(s.status, 0);
    assert_int_equal(s.r.code, BRAID_MEMCACHE_HD);
    memset(&g, 0, sizeof(g));
    assert_int_equal(braid_memcache_get(mc, kbin, lens[i], on_got, &g), 0);
    bt_run_until(&t, &g.done, 5000);
    assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
    assert_int_equal(g.value_len, (size_t)vn);
    assert_memory_equal(g.value, val, (size_t)vn);
  }
  /* "a b" and the base64 key of "a b" do not collide */
  mc_set_sync(&t, mc, "YSBi", "plain");
  memset(&g, 0, sizeof(g));
  assert_int_equal(braid_memcache_set(mc, "a b", 3, "spaced", 6, 0, 0, on_got, &g), 0);
  bt_run_until(&t, &g.done, 5000);
  mc_get_sync(&t, mc, "YSBi", &g);
  assert_memory_equal(g.value, "plain", 5);

  /* binary values with CR LF and NUL inside */
  static const uint8_t bv[] = {0, '\r', '\n', 'M', 'N', '\r', '\n', 255};
  memset(&g, 0, sizeof(g));
  assert_int_equal(braid_memcache_set(mc, "binval", 6, bv, sizeof(bv), 0, 0, on_got, &g), 0);
  bt_run_until(&t, &g.done, 5000);
  mc_get_sync(&t, mc, "binval", &g);
  assert_int_equal(g.value_len, sizeof(bv));
  assert_memory_equal(g.value, bv, sizeof(bv));

  /* bad requests are refused up front */
  braid_memcache_req_init(&r);
  r.key = "";
  r.key_len = 0;
  assert_int_equal(braid_memcache_request(mc, &r, 0, on_got, &g), BRAID_EINVAL);
  r.key = "x";
  r.key_len = 1;
  r.opaque = "has space";
  assert_int_equal(braid_memcache_request(mc, &r, 0, on_got, &g), BRAID_EINVAL);
  r.opaque = "012345678901234567890123456789012"; /* 33 bytes */
  assert_int_equal(braid_memcache_request(mc, &r, 0, on_got, &g), BRAID_EINVAL);
  r.opaque = NULL;
  r.server = 1;
  assert_int_equal(braid_memcache_request(mc, &r, 0, on_got, &g), BRAID_EINVAL);
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MN;
  assert_int_equal(braid_memcache_request(mc, &r, 0, on_got, &g), BRAID_EINVAL);

  mc_close_sync(&t, mc);
  mcd_stop(&t, &d);
  bt_loop_done(&t);
}

/* ---- item size ---------------------------------------------------------------------------- */

static void test_item_too_large(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d;
  mcd_start(&t, &d); /* -I 1m, memcached's default */
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  size_t big = 2 * 1024 * 1024;
  uint8_t *v = calloc(1, big);
  assert_non_null(v);
  braid_memcache_t *mc = mc_new(&t, &d, 1, &o);
  got_t g;
  /* refused before it is sent: over max_item_bytes (1 MiB) */
  assert_int_equal(braid_memcache_set(mc, "big", 3, v, big, 0, 0, on_got, &g), BRAID_ETOOBIG);
  assert_int_equal(braid_memcache_set(mc, "big", 3, v, o.max_item_bytes - 10, 0, 0, on_got, &g),
                   BRAID_ETOOBIG);
  mc_close_sync(&t, mc);
  /* a client told the server takes more: the server's own refusal, a clear BRAID_EREMOTE, and
   * the connection stays usable */
  o.max_item_bytes = 4 * 1024 * 1024;
  mc = mc_new(&t, &d, 1, &o);
  memset(&g, 0, sizeof(g));
  assert_int_equal(braid_memcache_set(mc, "big", 3, v, big, 0, 0, on_got, &g), 0);
  bt_run_until(&t, &g.done, 10000);
  assert_int_equal(g.status, BRAID_EREMOTE);
  assert_true(g.value_len > 12 && memcmp(g.value, "SERVER_ERROR", 12) == 0);
  mc_set_sync(&t, mc, "small", "fits");
  mc_get_sync(&t, mc, "small", &g);
  assert_memory_equal(g.value, "fits", 4);
  braid_memcache_server_stats_t ss;
  assert_int_equal(braid_memcache_server_stats(mc, 0, &ss), 0);
  assert_int_equal(ss.dead, 0);
  free(v);
  mc_close_sync(&t, mc);
  mcd_stop(&t, &d);
  bt_loop_done(&t);
}

/* ---- pipelining ------------------------------------------------------------------------------ */

enum { PIPE_N = 2000 };
static got_t pipe_got[PIPE_N];

static void test_pipelined_order(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d;
  mcd_start(&t, &d);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.pool.max_per_endpoint = 1; /* everything on one connection, in order */
  braid_memcache_t *mc = mc_new(&t, &d, 1, &o);
  /* sets and gets interleaved, all in flight at once */
  for (int i = 0; i < PIPE_N; i++) {
    char k[32], v[64];
    int kn = snprintf(k, sizeof(k), "p%d", i / 2);
    int vn = snprintf(v, sizeof(v), "value-%d-%x", i / 2, (unsigned)(i / 2) * 2654435761u);
    memset(&pipe_got[i], 0, sizeof(pipe_got[i]));
    if (i % 2 == 0)
      assert_int_equal(
          braid_memcache_set(mc, k, (size_t)kn, v, (size_t)vn, 0, 0, on_got, &pipe_got[i]), 0);
    else
      assert_int_equal(braid_memcache_get(mc, k, (size_t)kn, on_got, &pipe_got[i]), 0);
  }
  for (int i = 0; i < PIPE_N; i++)
    bt_run_until(&t, &pipe_got[i].done, 20000);
  for (int i = 1; i < PIPE_N; i += 2) {
    char v[64];
    int vn = snprintf(v, sizeof(v), "value-%d-%x", i / 2, (unsigned)(i / 2) * 2654435761u);
    assert_int_equal(pipe_got[i].status, 0);
    assert_int_equal(pipe_got[i].r.code, BRAID_MEMCACHE_VA);
    assert_int_equal(pipe_got[i].value_len, (size_t)vn);
    assert_memory_equal(pipe_got[i].value, v, (size_t)vn);
  }
  mc_close_sync(&t, mc);
  mcd_stop(&t, &d);
  bt_loop_done(&t);
}

/* ---- multi-get across servers ------------------------------------------------------------ */

enum { MULTI_N = 10000 };

typedef struct multi_s {
  int done, status;
  size_t count, hits, misses, errors, wrong;
  int servers_seen[3];
} multi_t;

static void key_of(size_t i, char *k, size_t *kn, char *v, size_t *vn) {
  *kn = (size_t)sprintf(k, "multi:%zu", i);
  *vn = (size_t)sprintf(v, "val-%zu-%08zx", i, i * 2654435761u);
}

static void on_multi(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                     size_t count, void *arg) {
  (void)mc;
  multi_t *m = arg;
  m->done = 1;
  m->status = status;
  m->count = count;
  for (size_t i = 0; i < count; i++) {
    if (res[i].status < 0) {
      m->errors++;
      continue;
    }
    if (res[i].code == BRAID_MEMCACHE_NONE) {
      m->misses++;
      continue;
    }
    char k[64], v[64];
    size_t kn, vn;
    key_of(i, k, &kn, v, &vn);
    if (res[i].code != BRAID_MEMCACHE_VA || res[i].value_len != vn ||
        memcmp(res[i].value, v, vn) != 0)
      m->wrong++;
    else
      m->hits++;
    if (res[i].server >= 0 && res[i].server < 3)
      m->servers_seen[res[i].server]++;
  }
}

static int sets_done;
static void on_set_count(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                         size_t count, void *arg) {
  (void)mc;
  (void)res;
  (void)count;
  (void)arg;
  assert_int_equal(status, 0);
  sets_done++;
}

static void test_multi_get_three_servers(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d[3];
  for (int i = 0; i < 3; i++)
    mcd_start(&t, &d[i]);
  braid_memcache_t *mc = mc_new(&t, d, 3, NULL);
  /* 10,000 keys set (the last 100 of the 10,100 asked for are never set: misses) */
  sets_done = 0;
  for (size_t i = 0; i < MULTI_N; i++) {
    char k[64], v[64];
    size_t kn, vn;
    key_of(i, k, &kn, v, &vn);
    int rc;
    while ((rc = braid_memcache_set(mc, k, kn, v, vn, 0, 0, on_set_count, NULL)) ==
           BRAID_EPOOLFULL)
      uv_run(&t.uv, UV_RUN_ONCE);
    assert_int_equal(rc, 0);
  }
  uint64_t start = uv_now(&t.uv);
  while (sets_done < MULTI_N && uv_now(&t.uv) - start < 30000)
    uv_run(&t.uv, UV_RUN_ONCE);
  assert_int_equal(sets_done, MULTI_N);
  size_t n = MULTI_N + 100;
  const void **keys = calloc(n, sizeof(*keys));
  size_t *lens = calloc(n, sizeof(*lens));
  char (*kbuf)[64] = calloc(n, 64);
  for (size_t i = 0; i < n; i++) {
    char v[64];
    size_t vn;
    key_of(i, kbuf[i], &lens[i], v, &vn);
    keys[i] = kbuf[i];
  }
  multi_t m = {0};
  assert_int_equal(braid_memcache_get_multi(mc, keys, lens, n, 10000, on_multi, &m), 0);
  assert_int_equal(m.done, 0); /* never from inside the call */
  bt_run_until(&t, &m.done, 30000);
  assert_int_equal(m.status, 0);
  assert_int_equal(m.count, n);
  assert_int_equal(m.errors, 0);
  assert_int_equal(m.wrong, 0);
  assert_int_equal(m.hits, MULTI_N);
  assert_int_equal(m.misses, 100);
  for (int i = 0; i < 3; i++)
    assert_true(m.servers_seen[i] > MULTI_N / 6); /* spread over all three */
  /* each key is on the server the hash names, and nowhere else */
  for (size_t i = 0; i < 30; i++) {
    int s = braid_memcache_server_for_key(mc, keys[i], lens[i]);
    assert_true(s >= 0 && s < 3);
    for (int j = 0; j < 3; j++) {
      braid_memcache_req_t r;
      braid_memcache_req_init(&r);
      r.key = keys[i];
      r.key_len = lens[i];
      r.server = j;
      got_t g;
      mc_do(&t, mc, &r, &g);
      assert_int_equal(g.r.code, j == s ? BRAID_MEMCACHE_HD : BRAID_MEMCACHE_EN);
    }
  }
  braid_memcache_stats_t st;
  assert_int_equal(braid_memcache_stats(mc, &st), 0);
  assert_true(st.keys >= n);
  free(keys);
  free(lens);
  free(kbuf);
  mc_close_sync(&t, mc);
  for (int i = 0; i < 3; i++)
    mcd_stop(&t, &d[i]);
  bt_loop_done(&t);
}

/* ---- placement: pymemcache's HashClient and libmemcached's ketama ------------------------ */

/* Runs the Python oracle: prints, per key, the node pymemcache's RendezvousHash picks. */
static void test_rendezvous_matches_pymemcache(void **state) {
  (void)state;
  const char *py = getenv("BRAID_PYTHON3");
  if (!py)
    py = "/usr/bin/python3";
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "%s -c 'import pymemcache' 2>/dev/null", py);
  if (system(cmd) != 0) {
    print_message("pymemcache is not installed for %s (scripts/deps.sh test installs "
                  "python3-pymemcache): skipped\n", py);
    skip();
  }
  bt_loop_t t;
  bt_loop_init(&t);
  braid_memcache_t *mc;
  assert_int_equal(braid_memcache_new(&mc, t.loop, NULL), 0);
  /* ports nobody listens on: placement needs no server */
  static const int ports[] = {11211, 11212, 21000, 65000, 1};
  for (int i = 0; i < 5; i++)
    assert_int_equal(braid_memcache_add_server(mc, "127.0.0.1", ports[i], 1, NULL), 0);
  const char *script = getenv("BRAID_MC_ORACLE");
  if (!script)
    script = BRAID_MC_ORACLE_DEFAULT;
  snprintf(cmd, sizeof(cmd), "%s %s rendezvous 4000", py, script);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof(line), f)) {
    /* "<node> <key>" */
    char *sp = strchr(line, ' ');
    assert_non_null(sp);
    *sp = 0;
    char *key = sp + 1;
    key[strcspn(key, "\n")] = 0;
    int s = braid_memcache_server_for_key(mc, key, strlen(key));
    assert_true(s >= 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", ports[s]);
    if (strcmp(want, line) != 0)
      fail_msg("key '%s': pymemcache picks %s, braid %s", key, line, want);
    n++;
  }
  assert_int_equal(pclose(f), 0);
  assert_int_equal(n, 4000);
  mc_close_sync(&t, mc);
  bt_loop_done(&t);
}


/* Values set by braid are read by pymemcache's HashClient on the same three servers (so it
 * looks for each key where braid put it), and the other way round. */
static void test_pymemcache_interop(void **state) {
  (void)state;
  NEED_MEMCACHED();
  const char *py = getenv("BRAID_PYTHON3");
  if (!py)
    py = "/usr/bin/python3";
  char cmd[8192];
  snprintf(cmd, sizeof(cmd), "%s -c 'import pymemcache' 2>/dev/null", py);
  if (system(cmd) != 0) {
    print_message("pymemcache is not installed for %s: skipped\n", py);
    skip();
  }
  const char *script = getenv("BRAID_MC_ORACLE");
  if (!script)
    script = BRAID_MC_ORACLE_DEFAULT;
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d[3];
  for (int i = 0; i < 3; i++)
    mcd_start(&t, &d[i]);
  braid_memcache_t *mc = mc_new(&t, d, 3, NULL);
  char ports[64];
  snprintf(ports, sizeof(ports), "%d,%d,%d", d[0].port, d[1].port, d[2].port);
  /* braid -> python */
  int n = snprintf(cmd, sizeof(cmd), "%s %s interop %s check", py, script, ports);
  int used[3] = {0};
  for (int i = 0; i < 40; i++) {
    char k[32], v[32];
    snprintf(k, sizeof(k), "from-braid-%d", i);
    snprintf(v, sizeof(v), "value-%d", i * 31);
    mc_set_sync(&t, mc, k, v);
    used[braid_memcache_server_for_key(mc, k, strlen(k))]++;
    n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " %s=%s", k, v);
  }
  for (int i = 0; i < 3; i++)
    assert_true(used[i] > 0);
  assert_int_equal(system(cmd), 0);
  /* python -> braid */
  n = snprintf(cmd, sizeof(cmd), "%s %s interop %s set", py, script, ports);
  for (int i = 0; i < 40; i++)
    n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " from-python-%d=pv-%d", i, i * 7);
  assert_int_equal(system(cmd), 0);
  for (int i = 0; i < 40; i++) {
    char k[32], v[32];
    snprintf(k, sizeof(k), "from-python-%d", i);
    int vn = snprintf(v, sizeof(v), "pv-%d", i * 7);
    got_t g;
    mc_get_sync(&t, mc, k, &g);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.r.code, BRAID_MEMCACHE_VA);
    assert_int_equal(g.value_len, (size_t)vn);
    assert_memory_equal(g.value, v, (size_t)vn);
  }
  mc_close_sync(&t, mc);
  for (int i = 0; i < 3; i++)
    mcd_stop(&t, &d[i]);
  bt_loop_done(&t);
}

/* ---- dead marking and revival ------------------------------------------------------------- */

/* A key that lives on server s (by the current placement). */
static void key_on(braid_memcache_t *mc, int s, char *k, size_t *kn) {
  for (int i = 0;; i++) {
    *kn = (size_t)sprintf(k, "dead-test-%d", i);
    if (braid_memcache_server_for_key(mc, k, *kn) == s)
      return;
  }
}

static void test_dead_server_and_revival(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d[3];
  for (int i = 0; i < 3; i++)
    mcd_start(&t, &d[i]);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.dead_after_failures = 2;
  o.dead_retry_ms = 300;
  o.timeout_ms = 500;
  braid_memcache_t *mc = mc_new(&t, d, 3, &o);
  char k[64], k0[64];
  size_t kn, k0n;
  key_on(mc, 1, k, &kn);
  key_on(mc, 0, k0, &k0n);
  mc_set_sync(&t, mc, k, "on-one");
  mc_set_sync(&t, mc, k0, "on-zero");
  /* kill server 1 mid-run */
  int port1 = d[1].port;
  mcd_stop(&t, &d[1]);
  got_t g;
  int failures = 0;
  for (int i = 0; i < 5; i++) {
    mc_get_sync(&t, mc, k, &g);
    if (g.status < 0)
      failures++;
    else
      break;
  }
  /* at most two failures (the pool's own connect failures may tell first), then its keys
   * go elsewhere */
  assert_true(failures >= 1 && failures <= 2);
  braid_memcache_server_stats_t ss;
  assert_int_equal(braid_memcache_server_stats(mc, 1, &ss), 0);
  assert_int_equal(ss.dead, 1);
  assert_int_equal(ss.dead_marks, 1);
  int now_on = braid_memcache_server_for_key(mc, k, kn);
  assert_true(now_on == 0 || now_on == 2);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_EN); /* a miss on the next server */
  assert_int_equal(g.r.server, now_on);
  /* the others are unaffected */
  mc_get_sync(&t, mc, k0, &g);
  assert_int_equal(g.status, 0);
  assert_memory_equal(g.value, "on-zero", 7);
  /* probes fail while it is down */
  bt_run_for(&t, 700);
  assert_int_equal(braid_memcache_server_stats(mc, 1, &ss), 0);
  assert_int_equal(ss.dead, 1);
  /* restart it on the same port: a probe brings it back */
  const char *none[] = {NULL};
  if (mcd_start_args(&t, &d[1], port1, none) != 0)
    fail_msg("could not restart memcached on port %d", port1);
  for (int i = 0; i < 300; i++) {
    assert_int_equal(braid_memcache_server_stats(mc, 1, &ss), 0);
    if (!ss.dead)
      break;
    bt_run_for(&t, 10);
  }
  assert_int_equal(ss.dead, 0);
  assert_int_equal(ss.revivals, 1);
  assert_int_equal(braid_memcache_server_for_key(mc, k, kn), 1);
  mc_set_sync(&t, mc, k, "back");
  mc_get_sync(&t, mc, k, &g);
  assert_memory_equal(g.value, "back", 4);
  braid_memcache_stats_t st;
  braid_memcache_stats(mc, &st);
  assert_int_equal(st.dead_marks, 1);
  assert_int_equal(st.revivals, 1);

  /* every server dead: calls fail fast with BRAID_EUNAVAILABLE */
  for (int i = 0; i < 3; i++)
    mcd_stop(&t, &d[i]);
  for (int i = 0; i < 20; i++) {
    memset(&g, 0, sizeof(g));
    int rc = braid_memcache_get(mc, k, kn, on_got, &g);
    if (rc == BRAID_EUNAVAILABLE)
      break;
    assert_int_equal(rc, 0);
    bt_run_until(&t, &g.done, 5000);
  }
  assert_int_equal(braid_memcache_get(mc, k, kn, on_got, &g), BRAID_EUNAVAILABLE);
  mc_close_sync(&t, mc);
  bt_loop_done(&t);
}

/* ---- a server that accepts and never answers --------------------------------------------- */

typedef struct hole_s {
  uv_tcp_t server;
  uv_tcp_t clients[16];
  int nclients;
  int port;
  const char *reply; /* sent on each read, then... */
  size_t reply_len;
  int close_after;   /* 1: close the connection after replying */
} hole_t;

static void hole_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  static char sink[65536];
  (void)size;
  *buf = uv_buf_init(sink, sizeof(sink));
}

static void hole_write_done(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void hole_shutdown_done(uv_shutdown_t *sd, int status) {
  (void)status;
  free(sd);
}

static void hole_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  hole_t *h = s->data;
  if (n < 0) {
    uv_read_stop(s);
    return;
  }
  if (n > 0 && h->reply) {
    uv_write_t *w = malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)h->reply, (unsigned)h->reply_len);
    uv_write(w, s, &b, 1, hole_write_done);
    if (h->close_after) {
      uv_read_stop(s);
      uv_shutdown_t *sd = malloc(sizeof(*sd));
      uv_shutdown(sd, s, hole_shutdown_done);
    }
  }
}

static void hole_conn(uv_stream_t *srv, int status) {
  hole_t *h = srv->data;
  if (status < 0 || h->nclients >= 16)
    return;
  uv_tcp_t *c = &h->clients[h->nclients++];
  uv_tcp_init(srv->loop, c);
  c->data = h;
  if (uv_accept(srv, (uv_stream_t *)c) == 0)
    uv_read_start((uv_stream_t *)c, hole_alloc, hole_read);
}

static void hole_start(bt_loop_t *t, hole_t *h) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&t->uv, &h->server);
  h->server.data = h;
  assert_int_equal(uv_tcp_bind(&h->server, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&h->server, 16, hole_conn), 0);
  int alen = sizeof(a);
  uv_tcp_getsockname(&h->server, (struct sockaddr *)&a, &alen);
  h->port = ntohs(a.sin_port);
}

static void hole_stop(bt_loop_t *t, hole_t *h) {
  for (int i = 0; i < h->nclients; i++)
    if (!uv_is_closing((uv_handle_t *)&h->clients[i]))
      uv_close((uv_handle_t *)&h->clients[i], NULL);
  uv_close((uv_handle_t *)&h->server, NULL);
  bt_run_for(t, 20);
}

static void test_silent_server_times_out_without_stalling_others(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d;
  mcd_start(&t, &d);
  static hole_t hole;
  memset(&hole, 0, sizeof(hole));
  hole_start(&t, &hole);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.timeout_ms = 300;
  o.dead_after_failures = 3;
  braid_memcache_t *mc;
  assert_int_equal(braid_memcache_new(&mc, t.loop, &o), 0);
  assert_int_equal(braid_memcache_add_server(mc, "127.0.0.1", d.port, 1, NULL), 0);
  assert_int_equal(braid_memcache_add_server(mc, "127.0.0.1", hole.port, 1, NULL), 0);
  char kh[64], kd[64];
  size_t khn, kdn;
  key_on(mc, 1, kh, &khn);
  key_on(mc, 0, kd, &kdn);
  mc_set_sync(&t, mc, kd, "alive");
  /* a request to the hole, then 50 to the live server right behind it */
  got_t gh;
  memset(&gh, 0, sizeof(gh));
  uint64_t t0 = uv_now(&t.uv);
  assert_int_equal(braid_memcache_get(mc, kh, khn, on_got, &gh), 0);
  static got_t gd[50];
  for (int i = 0; i < 50; i++) {
    memset(&gd[i], 0, sizeof(gd[i]));
    assert_int_equal(braid_memcache_get(mc, kd, kdn, on_got, &gd[i]), 0);
  }
  for (int i = 0; i < 50; i++)
    bt_run_until(&t, &gd[i].done, 5000);
  /* all answered while the request to the silent server still waits for its deadline */
  for (int i = 0; i < 50; i++)
    assert_memory_equal(gd[i].value, "alive", 5);
  assert_int_equal(gh.done, 0);
  bt_run_until(&t, &gh.done, 5000);
  assert_int_equal(gh.status, BRAID_ETIMEDOUT);
  uint64_t hole_ms = uv_now(&t.uv) - t0;
  assert_true(hole_ms >= 290 && hole_ms < 1500);
  /* two more timeouts mark it dead; then its keys go to the live server */
  for (int i = 0; i < 2; i++) {
    mc_get_sync(&t, mc, kh, &gh);
    assert_int_equal(gh.status, BRAID_ETIMEDOUT);
  }
  braid_memcache_server_stats_t ss;
  braid_memcache_server_stats(mc, 1, &ss);
  assert_int_equal(ss.dead, 1);
  assert_int_equal(ss.timeouts, 3);
  mc_get_sync(&t, mc, kh, &gh);
  assert_int_equal(gh.status, 0);
  assert_int_equal(gh.r.server, 0);
  mc_close_sync(&t, mc);
  hole_stop(&t, &hole);
  mcd_stop(&t, &d);
  bt_loop_done(&t);
}


/* A real memcached stopped with SIGSTOP: its connections stay open and silent. Requests to
 * it time out one by one, requests to the other server go on at full speed meanwhile, it is
 * marked dead, and after SIGCONT a probe brings it back. */
static void test_sigstopped_server(void **state) {
  (void)state;
  NEED_MEMCACHED();
  bt_loop_t t;
  bt_loop_init(&t);
  mcd_t d[2];
  for (int i = 0; i < 2; i++)
    mcd_start(&t, &d[i]);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.timeout_ms = 400;
  o.dead_after_failures = 2;
  o.dead_retry_ms = 200;
  braid_memcache_t *mc = mc_new(&t, d, 2, &o);
  char k0[64], k1[64];
  size_t k0n, k1n;
  key_on(mc, 0, k0, &k0n);
  key_on(mc, 1, k1, &k1n);
  mc_set_sync(&t, mc, k0, "zero");
  mc_set_sync(&t, mc, k1, "one");
  assert_int_equal(kill(d[1].proc.pid, SIGSTOP), 0);
  got_t g1;
  memset(&g1, 0, sizeof(g1));
  assert_int_equal(braid_memcache_get(mc, k1, k1n, on_got, &g1), 0);
  static got_t g0[20];
  for (int i = 0; i < 20; i++) {
    memset(&g0[i], 0, sizeof(g0[i]));
    assert_int_equal(braid_memcache_get(mc, k0, k0n, on_got, &g0[i]), 0);
  }
  for (int i = 0; i < 20; i++) {
    bt_run_until(&t, &g0[i].done, 5000);
    assert_int_equal(g0[i].status, 0);
    assert_memory_equal(g0[i].value, "zero", 4);
  }
  assert_int_equal(g1.done, 0); /* not held behind the stopped server */
  bt_run_until(&t, &g1.done, 5000);
  assert_int_equal(g1.status, BRAID_ETIMEDOUT);
  mc_get_sync(&t, mc, k1, &g1);
  assert_int_equal(g1.status, BRAID_ETIMEDOUT);
  braid_memcache_server_stats_t ss;
  braid_memcache_server_stats(mc, 1, &ss);
  assert_int_equal(ss.dead, 1);
  /* meanwhile its keys are served (as misses) by server 0 */
  mc_get_sync(&t, mc, k1, &g1);
  assert_int_equal(g1.status, 0);
  assert_int_equal(g1.r.server, 0);
  assert_int_equal(kill(d[1].proc.pid, SIGCONT), 0);
  for (int i = 0; i < 300; i++) {
    braid_memcache_server_stats(mc, 1, &ss);
    if (!ss.dead)
      break;
    bt_run_for(&t, 10);
  }
  assert_int_equal(ss.dead, 0);
  mc_get_sync(&t, mc, k1, &g1);
  assert_int_equal(g1.status, 0);
  assert_int_equal(g1.r.server, 1);
  assert_memory_equal(g1.value, "one", 3);
  mc_close_sync(&t, mc);
  for (int i = 0; i < 2; i++)
    mcd_stop(&t, &d[i]);
  bt_loop_done(&t);
}

/* ---- hostile replies from a fake server -------------------------------------------------- */

static void hostile_case(const char *reply, size_t len, int close_after, int want_status,
                         int want_code) {
  bt_loop_t t;
  bt_loop_init(&t);
  static hole_t h;
  memset(&h, 0, sizeof(h));
  h.reply = reply;
  h.reply_len = len;
  h.close_after = close_after;
  hole_start(&t, &h);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.timeout_ms = 500;
  o.max_reply_bytes = 4096;
  braid_memcache_t *mc;
  assert_int_equal(braid_memcache_new(&mc, t.loop, &o), 0);
  assert_int_equal(braid_memcache_add_server(mc, "127.0.0.1", h.port, 1, NULL), 0);
  got_t g;
  mc_get_sync(&t, mc, "key", &g);
  if (g.status != want_status)
    fail_msg("reply '%.*s': status %s, want %s", (int)(len > 40 ? 40 : len), reply,
             braid_err_name(g.status), braid_err_name(want_status));
  if (want_status == 0)
    assert_int_equal(g.r.code, want_code);
  /* a multi-get against the same server fails the same way, without a crash */
  const void *keys[] = {"a", "b"};
  size_t lens[] = {1, 1};
  multi_t m = {0};
  if (braid_memcache_get_multi(mc, keys, lens, 2, 0, on_multi, &m) == 0)
    bt_run_until(&t, &m.done, 5000);
  mc_close_sync(&t, mc);
  hole_stop(&t, &h);
  bt_loop_done(&t);
}

static void test_hostile_replies(void **state) {
  (void)state;
  /* garbage */
  hostile_case("HELLO WORLD\r\n", 13, 0, BRAID_EPROTO, 0);
  hostile_case("\x01\x02\x03\r\n", 5, 0, BRAID_EPROTO, 0);
  /* a line without CR */
  hostile_case("EN\nMN\n", 6, 0, BRAID_EPROTO, 0);
  /* a lying length: fewer bytes than declared, then more garbage where CRLF should be */
  hostile_case("VA 10\r\nabc\r\nMN\r\nxxxxxx", 23, 0, BRAID_EPROTO, 0);
  /* a huge declared value: refused at once (over max_reply_bytes), never buffered */
  hostile_case("VA 99999999999\r\n", 16, 0, BRAID_ETOOBIG, 0);
  hostile_case("VA 99999999999999999999999\r\n", 28, 0, BRAID_EPROTO, 0);
  /* a negative or non-numeric length */
  hostile_case("VA -1\r\n\r\nMN\r\n", 13, 0, BRAID_EPROTO, 0);
  /* an unknown code ("ES") and a flag token with a control byte */
  hostile_case("ES\r\nMN\r\n", 8, 0, BRAID_EPROTO, 0);
  hostile_case("HD t\x01\r\nMN\r\n", 11, 0, BRAID_EPROTO, 0);
  /* two replies for one request */
  hostile_case("EN\r\nEN\r\nMN\r\n", 12, 0, BRAID_EPROTO, 0);
  /* a bad token value */
  hostile_case("VA 1 cXYZ\r\nx\r\nMN\r\n", 18, 0, BRAID_EPROTO, 0);
  /* truncated, then the server closes: the connection's error, not a hang */
  hostile_case("VA 100\r\nabc", 11, 1, BRAID_ETRUNCATED, 0);
  /* an unexpected but well-formed EN for a get is just a miss */
  hostile_case("EN\r\nMN\r\n", 8, 0, 0, BRAID_MEMCACHE_EN);
  /* an answer that never ends (no MN): the frame bound, then the connection closes */
  static char flood[8192];
  memset(flood, 'x', sizeof(flood));
  memcpy(flood, "HD", 2);
  hostile_case(flood, sizeof(flood), 0, BRAID_ETOOBIG, 0);
}

/* ---- options ---------------------------------------------------------------------------------- */

static void test_options(void **state) {
  (void)state;
  braid_memcache_opts_t o;
  braid_opts_error_t err;
  braid_memcache_opts_init(&o);
  assert_int_equal(braid_memcache_opts_validate(&o, &err), 0);
  o.dead_after_failures = 0;
  assert_int_equal(braid_memcache_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "dead_after_failures");
  braid_memcache_opts_init(&o);
  o.pool.max_per_endpoint = 0;
  assert_int_equal(braid_memcache_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "pool.max_per_endpoint");
  braid_memcache_opts_init(&o);
  o.distribution = (braid_memcache_distribution_t)7;
  assert_int_equal(braid_memcache_opts_validate(&o, &err), BRAID_EINVAL);
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  assert_int_equal(braid_memcache_memo_opts_validate(&mo, &err), 0);
  mo.l1.stale_ms = 10;
  assert_int_equal(braid_memcache_memo_opts_validate(&mo, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "l1.stale_ms");
  braid_memcache_memo_opts_init(&mo);
  mo.poll_initial_ms = mo.poll_max_ms + 1;
  assert_int_equal(braid_memcache_memo_opts_validate(&mo, &err), BRAID_EINVAL);
  /* md5 (RFC 1321 appendix A.5) and sha256 (FIPS 180-2 appendix B) vectors */
  static const struct {
    const char *in, *md5, *sha256;
  } v[] = {
      {"", "d41d8cd98f00b204e9800998ecf8427e",
       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72",
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "8215ef0796a20bcaaae116d3876c664a",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a", NULL},
  };
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    uint8_t d[32];
    char hex[65];
    braid__mc_md5(v[i].in, strlen(v[i].in), d);
    for (int j = 0; j < 16; j++)
      sprintf(hex + 2 * j, "%02x", d[j]);
    assert_string_equal(hex, v[i].md5);
    if (!v[i].sha256)
      continue;
    braid__mc_sha256(v[i].in, strlen(v[i].in), d);
    for (int j = 0; j < 32; j++)
      sprintf(hex + 2 * j, "%02x", d[j]);
    assert_string_equal(hex, v[i].sha256);
  }
  /* murmur3_32 test vectors (the reference implementation's) */
  assert_int_equal(braid_memcache_murmur3_32("", 0, 0), 0);
  assert_int_equal(braid_memcache_murmur3_32("", 0, 1), 0x514E28B7u);
  assert_int_equal(braid_memcache_murmur3_32("abcd", 4, 0x9747b28c), 0xF0478627u);
  assert_int_equal(braid_memcache_murmur3_32("Hello, world!", 13, 0x9747b28c), 0x24884CBAu);
  assert_int_equal(braid_memcache_murmur3_32("The quick brown fox jumps over the lazy dog", 43,
                                             0x9747b28c), 0x2FA826CDu);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options),
      cmocka_unit_test_setup_teardown(test_commands_and_flags, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_item_too_large, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_pipelined_order, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_multi_get_three_servers, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_rendezvous_matches_pymemcache, setup,
                                      mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_pymemcache_interop, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_dead_server_and_revival, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_silent_server_times_out_without_stalling_others, setup,
                                      mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_sigstopped_server, setup, mcd_kill_leftovers),
      cmocka_unit_test_setup_teardown(test_hostile_replies, setup, mcd_kill_leftovers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
