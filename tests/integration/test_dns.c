/* The resolver (dns.h) against a fake DNS server on loopback (dns_fixture.h), served by the
 * test's own loop: a server that never answers (the lookup times out within its bound while
 * timers and threadpool work go on undisturbed), TTL caching and expiry, NXDOMAIN and its
 * negative cache, server failures, one query for many callers, the in-flight bound, hostile
 * replies (junk, short, a record cut short, truncation), literals and localhost without a
 * query, cancel, close with lookups on the wire, and the options. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dns_fixture.h"
#include "internal.h"

typedef struct {
  bt_loop_t *t;
  int calls;
  int status;
  int done;
  size_t n;
  struct sockaddr_storage addrs[4];
  uint64_t done_ms;
  int *counter; /* incremented on every callback when set */
} res_t;

static void on_res(braid_resolve_t *req, int status, const struct sockaddr_storage *addrs,
                   size_t naddrs, void *arg) {
  (void)req;
  res_t *r = arg;
  r->calls++;
  r->status = status;
  r->done = 1;
  r->n = naddrs;
  r->done_ms = uv_now(&r->t->uv);
  if (status == 0) {
    assert_non_null(addrs);
    assert_true(naddrs >= 1);
  } else {
    assert_null(addrs);
    assert_int_equal(naddrs, 0);
  }
  for (size_t i = 0; i < naddrs && i < 4; i++)
    r->addrs[i] = addrs[i];
  if (r->counter)
    (*r->counter)++;
}

static void res_init(res_t *r, bt_loop_t *t) {
  memset(r, 0, sizeof(*r));
  r->t = t;
}

static int closed_flag;
static void on_resolver_closed(braid_resolver_t *res, int status, void *arg) {
  (void)res;
  assert_int_equal(status, 0);
  *(int *)arg = 1;
}

static void resolver_close_wait(bt_loop_t *t, braid_resolver_t *res) {
  closed_flag = 0;
  assert_int_equal(braid_resolver_close(res, on_resolver_closed, &closed_flag), 0);
  assert_int_equal(closed_flag, 0); /* never from inside the close call */
  bt_run_until(t, &closed_flag, 5000);
}

/* Looks name up and runs the loop until the answer. */
static void lookup(bt_loop_t *t, braid_resolver_t *res, const char *name, int family, res_t *r) {
  res_init(r, t);
  assert_int_equal(braid_resolve(NULL, res, name, family, on_res, r), 0);
  assert_int_equal(r->calls, 0); /* never from inside the call */
  bt_run_until(t, &r->done, 5000);
  assert_int_equal(r->calls, 1);
}

static int is_ip(const struct sockaddr_storage *ss, const char *ip) {
  char buf[64];
  if (uv_ip_name((const struct sockaddr *)ss, buf, sizeof(buf)) != 0)
    return 0;
  return strcmp(buf, ip) == 0;
}

/* ---- (a) a server that never answers ------------------------------------------------------ */

typedef struct {
  int done;
  uint64_t done_ms;
} work_t;

static void work_sleep(void *arg) {
  (void)arg;
  usleep(2000);
}

static void work_done(braid_loop_t *loop, int status, void *arg) {
  assert_int_equal(status, 0);
  work_t *w = arg;
  w->done = 1;
  w->done_ms = braid_loop_now_ms(loop);
}

static void on_tick(uv_timer_t *timer) {
  *(uint64_t *)timer->data = uv_now(timer->loop);
  uv_close((uv_handle_t *)timer, NULL);
}

/* Lookups of six names (twelve queries: A and AAAA) wait on a server that never answers.
 * Meanwhile 16 threadpool jobs (four times the pool's threads) and a 20 ms timer run on time:
 * the lookups hold no thread. Each lookup fails with BRAID_EDNSTIMEOUT after its 200 ms. */
static void test_silent_server_times_out_and_starves_nothing(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  const char *names[] = {"s1.test", "s2.test", "s3.test", "s4.test", "s5.test", "s6.test"};
  for (int i = 0; i < 6; i++)
    fdns_rule(&s, names[i], FDNS_SILENT, 0);
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 200, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  uv_update_time(&t.uv);
  uint64_t start = uv_now(&t.uv);
  res_t r[6];
  int done = 0;
  for (int i = 0; i < 6; i++) {
    res_init(&r[i], &t);
    r[i].counter = &done;
    assert_int_equal(braid_resolve(NULL, res, names[i], AF_UNSPEC, on_res, &r[i]), 0);
  }
  work_t w[16];
  memset(w, 0, sizeof(w));
  for (int i = 0; i < 16; i++)
    assert_int_equal(braid_work(NULL, t.loop, work_sleep, work_done, &w[i]), 0);
  uv_timer_t tick;
  uint64_t tick_ms = 0;
  uv_timer_init(&t.uv, &tick);
  tick.data = &tick_ms;
  uv_timer_start(&tick, on_tick, 20, 0);
  bt_run(&t, 5000);
  assert_int_equal(done, 6);
  for (int i = 0; i < 16; i++) {
    assert_int_equal(w[i].done, 1);
    assert_true(w[i].done_ms - start < 150); /* not behind the 200 ms lookups */
  }
  assert_true(tick_ms - start >= 20 && tick_ms - start < 150);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(r[i].status, BRAID_EDNSTIMEOUT);
    assert_true(r[i].done_ms - start >= 190);
    assert_true(r[i].done_ms - start < 1500);
    assert_int_equal(s.rules[i].count_a, 1);
    assert_int_equal(s.rules[i].count_aaaa, 1);
  }
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.lookups, 6);
  assert_int_equal(st.queries, 6);
  assert_int_equal(st.timeouts, 6);
  assert_int_equal(st.failures, 6);
  assert_int_equal(st.inflight, 0);
  assert_int_equal(st.cached, 0); /* timeouts are not cached */
  assert_string_equal(braid_err_name(BRAID_EDNSTIMEOUT), "BRAID_EDNSTIMEOUT");
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* tries = 2 with one server: 100 ms, then 200 ms: the bound timeout_ms * (2^tries - 1). */
static void test_timeout_bound_with_tries(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *rule = fdns_rule(&s, "silent.test", FDNS_SILENT, 0);
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 100, 2);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  uv_update_time(&t.uv);
  uint64_t start = uv_now(&t.uv);
  res_t r;
  lookup(&t, res, "silent.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSTIMEOUT);
  assert_true(r.done_ms - start >= 290);
  assert_true(r.done_ms - start < 1000);
  assert_int_equal(rule->count_a, 2);
  assert_int_equal(rule->count_aaaa, 0);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- (b) answers cached for their TTL -------------------------------------------------------- */

static void test_ttl_cache_and_expiry(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *one = fdns_rule(&s, "ttl1.test", FDNS_ANSWER, 1);
  one->a[0] = "127.0.0.1";
  fdns_rule_t *dual = fdns_rule(&s, "dual.test", FDNS_ANSWER, 60);
  dual->a[0] = "127.0.0.1";
  dual->aaaa[0] = "::1";
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 200, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r;
  lookup(&t, res, "ttl1.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 1);
  assert_true(is_ip(&r.addrs[0], "127.0.0.1"));
  assert_int_equal(one->count_a, 1);
  /* Again, and in another case: from the cache, no query. */
  lookup(&t, res, "TTL1.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  assert_true(is_ip(&r.addrs[0], "127.0.0.1"));
  assert_int_equal(one->count_a, 1);
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.cache_hits, 1);
  assert_int_equal(st.cached, 1);
  /* Another family is another entry. */
  lookup(&t, res, "ttl1.test", AF_INET6, &r);
  assert_int_equal(r.status, BRAID_EDNSNODATA);
  assert_int_equal(one->count_aaaa, 1);
  /* Both families at once: two addresses, one of each. */
  lookup(&t, res, "dual.test", AF_UNSPEC, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 2);
  assert_true((is_ip(&r.addrs[0], "::1") && is_ip(&r.addrs[1], "127.0.0.1")) ||
              (is_ip(&r.addrs[0], "127.0.0.1") && is_ip(&r.addrs[1], "::1")));
  assert_int_equal(dual->count_a, 1);
  assert_int_equal(dual->count_aaaa, 1);
  /* After the 1 s TTL: asked again. dual.test (60 s) is still cached. */
  bt_run_for(&t, 1050);
  lookup(&t, res, "ttl1.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(one->count_a, 2);
  lookup(&t, res, "dual.test", AF_UNSPEC, &r);
  assert_int_equal(r.n, 2);
  assert_int_equal(dual->count_a, 1);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* max_ttl_ms cuts a long TTL; min_ttl_ms raises a zero one; cache_entries bounds the cache
 * (the least recently used name goes). */
static void test_ttl_clamps_and_cache_bound(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *lng = fdns_rule(&s, "long.test", FDNS_ANSWER, 86400);
  lng->a[0] = "127.0.0.2";
  fdns_rule_t *zero = fdns_rule(&s, "zero.test", FDNS_ANSWER, 0);
  zero->a[0] = "127.0.0.3";
  fdns_rule_t *x = fdns_rule(&s, "x.test", FDNS_ANSWER, 60);
  x->a[0] = "127.0.0.4";
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 200, 1);
  o.max_ttl_ms = 100;
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r;
  lookup(&t, res, "long.test", AF_INET, &r);
  lookup(&t, res, "long.test", AF_INET, &r);
  assert_int_equal(lng->count_a, 1);
  bt_run_for(&t, 150);
  lookup(&t, res, "long.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(lng->count_a, 2);
  /* TTL 0: not cached. */
  lookup(&t, res, "zero.test", AF_INET, &r);
  lookup(&t, res, "zero.test", AF_INET, &r);
  assert_int_equal(zero->count_a, 2);
  resolver_close_wait(&t, res);

  fdns_resolver_opts(&s, &o, 200, 1);
  o.min_ttl_ms = 10000;
  o.cache_entries = 2;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  lookup(&t, res, "zero.test", AF_INET, &r);
  lookup(&t, res, "zero.test", AF_INET, &r);
  assert_int_equal(zero->count_a, 3); /* cached this time: min_ttl_ms */
  lookup(&t, res, "long.test", AF_INET, &r);
  lookup(&t, res, "zero.test", AF_INET, &r); /* zero.test is now the most recent */
  lookup(&t, res, "x.test", AF_INET, &r);    /* a third name: long.test goes */
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.cached, 2);
  assert_int_equal(st.evictions, 1);
  lookup(&t, res, "zero.test", AF_INET, &r);
  assert_int_equal(zero->count_a, 3);
  lookup(&t, res, "long.test", AF_INET, &r);
  assert_int_equal(lng->count_a, 4);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- (c) errors that say what happened ----------------------------------------------------- */

static void test_nxdomain_negative_cache_and_failures(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *nx = fdns_rule(&s, "nx.test", FDNS_NXDOMAIN, 0);
  fdns_rule_t *v6 = fdns_rule(&s, "v6only.test", FDNS_ANSWER, 60);
  v6->aaaa[0] = "::1";
  fdns_rule_t *sf = fdns_rule(&s, "servfail.test", FDNS_SERVFAIL, 0);
  fdns_rule_t *rf = fdns_rule(&s, "refused.test", FDNS_REFUSED, 0);
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 200, 1);
  o.negative_ttl_ms = 150;
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r;
  lookup(&t, res, "nx.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSNOTFOUND);
  assert_int_equal(nx->count_a, 1);
  lookup(&t, res, "nx.test", AF_INET, &r); /* remembered */
  assert_int_equal(r.status, BRAID_EDNSNOTFOUND);
  assert_int_equal(nx->count_a, 1);
  bt_run_for(&t, 200); /* forgotten after negative_ttl_ms */
  lookup(&t, res, "nx.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSNOTFOUND);
  assert_int_equal(nx->count_a, 2);
  /* The name exists, without an IPv4 address. */
  lookup(&t, res, "v6only.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSNODATA);
  lookup(&t, res, "v6only.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSNODATA);
  assert_int_equal(v6->count_a, 1);
  lookup(&t, res, "v6only.test", AF_UNSPEC, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 1);
  assert_true(is_ip(&r.addrs[0], "::1"));
  /* Server failures: an error of their own, never cached. */
  lookup(&t, res, "servfail.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSFAIL);
  lookup(&t, res, "servfail.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSFAIL);
  assert_int_equal(sf->count_a, 2);
  lookup(&t, res, "refused.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSFAIL);
  assert_int_equal(rf->count_a, 1);
  /* Each code has its own name and message. */
  int codes[] = {BRAID_EDNSNOTFOUND, BRAID_EDNSNODATA, BRAID_EDNSTIMEOUT, BRAID_EDNSFAIL};
  for (int i = 0; i < 4; i++) {
    assert_string_not_equal(braid_err_name(codes[i]), "UNKNOWN");
    assert_string_not_equal(braid_strerror(codes[i]), "unknown error");
    for (int j = 0; j < i; j++)
      assert_string_not_equal(braid_strerror(codes[i]), braid_strerror(codes[j]));
  }
  assert_non_null(strstr(braid_strerror(BRAID_EDNSNOTFOUND), "not found"));
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- (d) one query for many callers; the in-flight bound ------------------------------------ */

static void test_single_flight(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *slow = fdns_rule(&s, "slow.test", FDNS_ANSWER, 60);
  slow->a[0] = "127.0.0.1";
  slow->delay_ms = 50;
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 300, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  enum { N = 200 };
  static res_t r[N];
  int done = 0;
  for (int i = 0; i < N; i++) {
    res_init(&r[i], &t);
    r[i].counter = &done;
    assert_int_equal(braid_resolve(NULL, res, i % 2 ? "slow.test" : "SLOW.TEST", AF_INET, on_res,
                                   &r[i]),
                     0);
  }
  bt_run(&t, 5000);
  assert_int_equal(done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].calls, 1);
    assert_int_equal(r[i].status, 0);
    assert_true(is_ip(&r[i].addrs[0], "127.0.0.1"));
  }
  assert_int_equal(slow->count_a, 1); /* one query on the wire */
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.queries, 1);
  assert_int_equal(st.coalesced, N - 1);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

static void test_inflight_bound(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  const char *names[] = {"n1.test", "n2.test", "n3.test", "n4.test", "n5.test", "n6.test"};
  for (int i = 0; i < 6; i++) {
    fdns_rule_t *rule = fdns_rule(&s, names[i], FDNS_ANSWER, 60);
    rule->a[0] = "127.0.0.1";
    rule->delay_ms = 30;
  }
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 300, 1);
  o.max_inflight = 2;
  o.max_queued = 3;
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r[6];
  int done = 0;
  for (int i = 0; i < 5; i++) {
    res_init(&r[i], &t);
    r[i].counter = &done;
    assert_int_equal(braid_resolve(NULL, res, names[i], AF_INET, on_res, &r[i]), 0);
  }
  /* Two on the wire, three waiting: a sixth name is refused, a caller of a waiting name
   * joins it. */
  res_init(&r[5], &t);
  assert_int_equal(braid_resolve(NULL, res, names[5], AF_INET, on_res, &r[5]),
                   BRAID_ETOOMANYWAITERS);
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.inflight, 2);
  assert_int_equal(st.queued, 3);
  res_t join;
  res_init(&join, &t);
  join.counter = &done;
  assert_int_equal(braid_resolve(NULL, res, names[4], AF_INET, on_res, &join), 0);
  bt_run(&t, 5000);
  assert_int_equal(done, 6);
  for (int i = 0; i < 5; i++)
    assert_int_equal(r[i].status, 0);
  assert_int_equal(join.status, 0);
  assert_int_equal(r[5].calls, 0);
  assert_int_equal(s.max_pending, 2); /* never more than two questions at the server */
  braid_resolver_stats(res, &st);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.queries, 5);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- (e) hostile replies ---------------------------------------------------------------- */

static void test_hostile_replies(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule(&s, "junk.test", FDNS_GARBAGE, 0);
  fdns_rule(&s, "short.test", FDNS_SHORT, 0);
  fdns_rule(&s, "badrecord.test", FDNS_BAD_RECORD, 0);
  fdns_rule(&s, "tc.test", FDNS_TRUNCATED, 0);
  fdns_rule_t *then = fdns_rule(&s, "junkthengood.test", FDNS_GARBAGE_THEN, 60);
  then->a[0] = "127.0.0.9";
  fdns_rule_t *good = fdns_rule(&s, "good.test", FDNS_ANSWER, 60);
  good->a[0] = "127.0.0.1";
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 100, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r;
  /* Junk and a reply too short for a header are not answers: c-ares waits on, then times
   * out. */
  lookup(&t, res, "junk.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSTIMEOUT);
  lookup(&t, res, "short.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSTIMEOUT);
  /* An answer for our question whose record is cut short: a malformed answer. */
  lookup(&t, res, "badrecord.test", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSFAIL);
  /* Truncated: c-ares retries over TCP, where nothing listens. */
  lookup(&t, res, "tc.test", AF_INET, &r);
  assert_true(r.status == BRAID_EDNSFAIL || r.status == BRAID_EDNSTIMEOUT);
  /* Junk, a short reply, then the answer: the answer wins. */
  lookup(&t, res, "junkthengood.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  assert_true(is_ip(&r.addrs[0], "127.0.0.9"));
  /* And the resolver still works. */
  lookup(&t, res, "good.test", AF_INET, &r);
  assert_int_equal(r.status, 0);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- (f) cancel, close with lookups on the wire ---------------------------------------------- */

static braid_resolver_t *close_me;
static void on_res_close(braid_resolve_t *req, int status, const struct sockaddr_storage *addrs,
                         size_t naddrs, void *arg) {
  on_res(req, status, addrs, naddrs, arg);
  if (close_me) {
    assert_int_equal(braid_resolver_close(close_me, on_resolver_closed, &closed_flag), 0);
    close_me = NULL;
  }
}

static void test_cancel_and_close(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *silent = fdns_rule(&s, "silent.test", FDNS_SILENT, 0);
  fdns_rule_t *good = fdns_rule(&s, "good.test", FDNS_ANSWER, 60);
  good->a[0] = "127.0.0.1";
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 5000, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  /* Cancel on the wire: the callback runs inside the cancel. */
  res_t a, b;
  res_init(&a, &t);
  res_init(&b, &t);
  braid_resolve_t *qa, *qb;
  assert_int_equal(braid_resolve(&qa, res, "silent.test", AF_UNSPEC, on_res, &a), 0);
  assert_int_equal(braid_resolve(&qb, res, "silent.test", AF_UNSPEC, on_res, &b), 0);
  bt_run_for(&t, 30);
  assert_int_equal(silent->count_a, 1);
  assert_int_equal(braid_resolve_cancel(qa), 0);
  assert_int_equal(a.calls, 1);
  assert_int_equal(a.status, BRAID_ECANCELED);
  assert_int_equal(b.calls, 0);
  /* A cache hit cancelled before its callback ran. */
  res_t c;
  lookup(&t, res, "good.test", AF_INET, &c);
  braid_resolve_t *qc;
  res_init(&c, &t);
  assert_int_equal(braid_resolve(&qc, res, "good.test", AF_INET, on_res, &c), 0);
  assert_int_equal(braid_resolve_cancel(qc), 0);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, BRAID_ECANCELED);
  /* Close with b still on the wire (both families): b is cancelled inside the close, the
   * queries abandoned, the close callback later; nothing is left on the loop. */
  closed_flag = 0;
  assert_int_equal(braid_resolver_close(res, on_resolver_closed, &closed_flag), 0);
  assert_int_equal(b.calls, 1);
  assert_int_equal(b.status, BRAID_ECANCELED);
  assert_int_equal(closed_flag, 0);
  assert_int_equal(braid_resolver_close(res, NULL, NULL), BRAID_ECLOSED);
  bt_run_until(&t, &closed_flag, 5000);
  assert_int_equal(a.calls + b.calls + c.calls, 3);

  /* Close from inside a lookup's callback, with another lookup pending. */
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t d, e;
  res_init(&d, &t);
  res_init(&e, &t);
  close_me = res;
  closed_flag = 0;
  assert_int_equal(braid_resolve(NULL, res, "127.0.0.1", AF_UNSPEC, on_res_close, &d), 0);
  assert_int_equal(braid_resolve(NULL, res, "silent.test", AF_INET, on_res, &e), 0);
  bt_run_until(&t, &closed_flag, 5000);
  assert_int_equal(d.status, 0);
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.status, BRAID_ECANCELED);

  /* The loop refuses to close while a resolver is open. */
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  assert_int_equal(braid_loop_close(t.loop), BRAID_EBUSY);
  res_t f;
  res_init(&f, &t);
  assert_int_equal(braid_resolve(NULL, res, "silent.test", AF_UNSPEC, on_res, &f), 0);
  bt_run_for(&t, 20);
  resolver_close_wait(&t, res);
  assert_int_equal(f.status, BRAID_ECANCELED);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* The loop's own resolver (braid_connect() without one in its options), pointed at the fake
 * server, with a query on the wire when the loop closes: braid_loop_close() abandons it and
 * leaves nothing behind (uv_loop_close() == 0 in bt_loop_done, no leak under ASan). */
typedef struct {
  int calls, status;
} conn_res_t;

static void on_conn(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  (void)conn;
  conn_res_t *c = arg;
  c->calls++;
  c->status = status;
}

static void test_loop_close_with_query_on_wire(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  fdns_rule_t *silent = fdns_rule(&s, "silent.test", FDNS_SILENT, 0);
  braid_resolver_t *own;
  assert_int_equal(braid__resolver_for_loop(t.loop, &own), 0);
  char servers[64];
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", s.port);
  assert_int_equal(braid__resolver_test_servers(own, servers), 0);
  conn_res_t c = {0, 1};
  braid_connect_t *req;
  assert_int_equal(braid_connect(&req, t.loop, "silent.test", 80, NULL, on_conn, &c), 0);
  bt_run_for(&t, 30);
  assert_true(silent->count_a + silent->count_aaaa >= 1);
  assert_int_equal(braid_connect_cancel(req), 0);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.status, BRAID_ECANCELED);
  fdns_stop(&s, &t);
  bt_loop_done(&t); /* the query (timeout 1 s, 3 tries) is still on the wire */
}

/* ---- literals and localhost: no query --------------------------------------------------------- */

static void test_literals_and_localhost(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t s;
  fdns_start(&s, &t);
  braid_resolver_opts_t o;
  fdns_resolver_opts(&s, &o, 100, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), 0);
  res_t r;
  lookup(&t, res, "127.0.0.1", AF_UNSPEC, &r);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 1);
  assert_true(is_ip(&r.addrs[0], "127.0.0.1"));
  lookup(&t, res, "::1", AF_INET6, &r);
  assert_true(is_ip(&r.addrs[0], "::1"));
  lookup(&t, res, "localhost", AF_UNSPEC, &r);
  assert_int_equal(r.n, 2);
  assert_true(is_ip(&r.addrs[0], "::1"));
  assert_true(is_ip(&r.addrs[1], "127.0.0.1"));
  lookup(&t, res, "LocalHost.", AF_INET, &r);
  assert_int_equal(r.n, 1);
  assert_true(is_ip(&r.addrs[0], "127.0.0.1"));
  lookup(&t, res, "api.localhost", AF_INET6, &r);
  assert_int_equal(r.n, 1);
  assert_true(is_ip(&r.addrs[0], "::1"));
  assert_int_equal(s.datagrams, 0);
  braid_resolver_stats_t st;
  braid_resolver_stats(res, &st);
  assert_int_equal(st.queries, 0);
  assert_int_equal(st.answered_now, 5);
  /* "notlocalhost" is a name like any other. */
  lookup(&t, res, "notlocalhost", AF_INET, &r);
  assert_int_equal(r.status, BRAID_EDNSNOTFOUND);
  assert_int_equal(s.unknown, 1);
  /* Refused at the call, callback never called. */
  res_init(&r, &t);
  assert_int_equal(braid_resolve(NULL, res, "127.0.0.1", AF_INET6, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, "", AF_INET, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, "a b.test", AF_INET, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, "a\n.test", AF_INET, on_res, &r), BRAID_EINVAL);
  char longname[300];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  assert_int_equal(braid_resolve(NULL, res, longname, AF_INET, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, "x.test", AF_UNIX, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, NULL, AF_INET, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, res, "x.test", AF_INET, NULL, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve(NULL, NULL, "x.test", AF_INET, on_res, &r), BRAID_EINVAL);
  assert_int_equal(braid_resolve_cancel(NULL), BRAID_EINVAL);
  bt_run_for(&t, 10);
  assert_int_equal(r.calls, 0);
  braid_resolver_set_data(res, &r);
  assert_ptr_equal(braid_resolver_get_data(res), &r);
  resolver_close_wait(&t, res);
  fdns_stop(&s, &t);
  bt_loop_done(&t);
}

/* ---- options ----------------------------------------------------------------------------- */

static void test_options(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_resolver_opts_t o;
  braid_resolver_opts_init(&o);
  assert_string_equal(o.servers, "");
  assert_int_equal(o.timeout_ms, 1000);
  assert_int_equal(o.tries, 3);
  assert_int_equal(o.max_inflight, 64);
  assert_int_equal(o.max_queued, 1024);
  assert_int_equal(o.cache_entries, 1024);
  assert_int_equal(o.min_ttl_ms, 0);
  assert_int_equal(o.max_ttl_ms, 3600000);
  assert_int_equal(o.negative_ttl_ms, 5000);
  braid_opts_error_t err;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), 0);
  o.timeout_ms = 0;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "timeout_ms");
  braid_resolver_opts_init(&o);
  o.tries = 0;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "tries");
  braid_resolver_opts_init(&o);
  o.max_inflight = 0;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "max_inflight");
  braid_resolver_opts_init(&o);
  o.max_queued = (1u << 20) + 1;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "max_queued");
  braid_resolver_opts_init(&o);
  o.min_ttl_ms = 5000;
  o.max_ttl_ms = 1000;
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "min_ttl_ms");
  assert_non_null(strstr(err.reason, "max_ttl_ms"));
  braid_resolver_opts_init(&o);
  memset(o.servers, 'x', sizeof(o.servers));
  assert_int_equal(braid_resolver_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "servers");
  braid_resolver_t *res = NULL;
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), BRAID_EINVAL);
  assert_null(res);
  braid_resolver_opts_init(&o);
  snprintf(o.servers, sizeof(o.servers), "not an address");
  assert_int_equal(braid_resolver_new(&res, t.loop, &o), BRAID_EINVAL);
  assert_int_equal(braid_resolver_new(NULL, t.loop, NULL), BRAID_EINVAL);
  assert_int_equal(braid_resolver_new(&res, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_resolver_close(NULL, NULL, NULL), BRAID_EINVAL);
  /* Defaults (the system's servers): made and closed without a lookup. */
  assert_int_equal(braid_resolver_new(&res, t.loop, NULL), 0);
  resolver_close_wait(&t, res);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_silent_server_times_out_and_starves_nothing),
      cmocka_unit_test(test_timeout_bound_with_tries),
      cmocka_unit_test(test_ttl_cache_and_expiry),
      cmocka_unit_test(test_ttl_clamps_and_cache_bound),
      cmocka_unit_test(test_nxdomain_negative_cache_and_failures),
      cmocka_unit_test(test_single_flight),
      cmocka_unit_test(test_inflight_bound),
      cmocka_unit_test(test_hostile_replies),
      cmocka_unit_test(test_cancel_and_close),
      cmocka_unit_test(test_loop_close_with_query_on_wire),
      cmocka_unit_test(test_literals_and_localhost),
      cmocka_unit_test(test_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
