/* Key placement under ketama, checked against libmemcached itself (Debian libmemcached-dev):
 * for the same servers, braid_memcache_server_for_key() must name the server
 * memcached_generate_hash() names, for every key. Built only where libmemcached is found. */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <string.h>

#include "../support.h"

typedef struct srv_s {
  const char *host;
  int port;
  unsigned weight;
} srv_t;

static void compare(braid_memcache_distribution_t dist, const srv_t *srv, int n, int weighted) {
  bt_loop_t t;
  bt_loop_init(&t);
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.distribution = dist;
  braid_memcache_t *mc;
  assert_int_equal(braid_memcache_new(&mc, t.loop, &o), 0);
  memcached_st *memc = memcached_create(NULL);
  assert_non_null(memc);
  if (weighted) {
    assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1),
                     MEMCACHED_SUCCESS);
  } else {
    assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1),
                     MEMCACHED_SUCCESS);
    assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_HASH,
                                            MEMCACHED_HASH_MD5), MEMCACHED_SUCCESS);
    assert_int_equal(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_HASH, MEMCACHED_HASH_MD5),
                     MEMCACHED_SUCCESS);
  }
  for (int i = 0; i < n; i++) {
    assert_int_equal(memcached_server_add_with_weight(memc, srv[i].host, (in_port_t)srv[i].port,
                                                      srv[i].weight), MEMCACHED_SUCCESS);
    assert_int_equal(braid_memcache_add_server(mc, srv[i].host, srv[i].port, srv[i].weight,
                                               NULL), 0);
  }
  int mismatches = 0;
  for (int i = 0; i < 20000; i++) {
    char k[64];
    int kn = snprintf(k, sizeof(k), i % 3 ? "key:%d" : "user/%d/profile", i * 7919);
    uint32_t want = memcached_generate_hash(memc, k, (size_t)kn);
    int got = braid_memcache_server_for_key(mc, k, (size_t)kn);
    if (got != (int)want && mismatches++ < 5)
      print_message("key %s: libmemcached %u, braid %d\n", k, want, got);
  }
  memcached_free(memc);
  assert_int_equal(mismatches, 0);
  int closed = 0;
  (void)closed;
  assert_int_equal(braid_memcache_close(mc, NULL, NULL), 0);
  bt_run(&t, 5000);
  bt_loop_done(&t);
}

static const srv_t three[] = {{"127.0.0.1", 11211, 1}, {"127.0.0.1", 11212, 1},
                              {"10.0.0.7", 21000, 1}};
static const srv_t weighted[] = {{"127.0.0.1", 11211, 1}, {"127.0.0.1", 11212, 2},
                                 {"10.0.0.7", 21000, 3}, {"cache-4", 11211, 1}};

static void test_ketama_md5(void **state) {
  (void)state;
  compare(BRAID_MEMCACHE_KETAMA, three, 3, 0);
}

static void test_ketama_weighted(void **state) {
  (void)state;
  compare(BRAID_MEMCACHE_KETAMA_WEIGHTED, weighted, 4, 1);
  compare(BRAID_MEMCACHE_KETAMA_WEIGHTED, three, 3, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ketama_md5),
      cmocka_unit_test(test_ketama_weighted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
