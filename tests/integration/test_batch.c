/* Request batching over loopback: each flush trigger, per-item results and errors, the
 * connection reset mid-batch (every request completes exactly once), ordered channels,
 * bounds, and freeing with requests waiting. */
#include "rpc_fixture.h"

static void call_n(braid_batcher_t *b, res_t *res, int n, const char *prefix) {
  for (int i = 0; i < n; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "%s%d", prefix, i);
    assert_int_equal(braid_batcher_call(b, msg, (size_t)len, on_result, &res[i]), 0);
  }
}

static void check_echoed(res_t *res, int n, const char *prefix) {
  for (int i = 0; i < n; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "%s%d", prefix, i);
    assert_int_equal(res[i].calls, 1);
    assert_int_equal(res[i].status, 0);
    assert_int_equal(res[i].len, (size_t)len);
    assert_memory_equal(res[i].data, msg, (size_t)len);
  }
}

static void test_flush_by_items_and_end_of_iteration(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.max_items = 8;
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  static res_t res[20];
  memset(res, 0, sizeof(res));
  done_count = 0;
  call_n(b, res, 20, "k");
  braid_batcher_stats_t st;
  braid_batcher_stats(b, &st);
  assert_int_equal(st.flushes[BRAID_FLUSH_ITEMS], 2); /* 8 + 8 went at once */
  assert_int_equal(st.batches, 2);
  for (int i = 0; i < 20; i++)
    assert_int_equal(res[i].calls, 0); /* never from inside the call */
  while (done_count < 20)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  check_echoed(res, 20, "k");
  braid_batcher_stats(b, &st);
  assert_int_equal(st.flushes[BRAID_FLUSH_LINGER], 1); /* the last 4, end of the iteration */
  assert_int_equal(st.batches, 3);
  assert_int_equal(st.requests, 20);
  assert_int_equal(st.batch_size.count, 3);
  assert_int_equal(st.batch_size.max, 8);
  assert_int_equal(st.batch_size.min, 4);
  braid_rpc_stats_t rs;
  braid_rpc_stats(f.srv_rpc, &rs);
  assert_int_equal(rs.batches, 3);
  assert_int_equal(rs.requests, 20);
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_flush_by_bytes(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.max_bytes = 25;
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  static res_t res[10];
  memset(res, 0, sizeof(res));
  done_count = 0;
  call_n(b, res, 10, "bytes-"); /* 7 bytes each: a fourth would pass 25 */
  braid_batcher_stats_t st;
  braid_batcher_stats(b, &st);
  assert_int_equal(st.flushes[BRAID_FLUSH_BYTES], 3);
  assert_int_equal(braid_batcher_call(b, "x", 26, on_result, &res[0]), BRAID_ETOOBIG);
  while (done_count < 10)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  check_echoed(res, 10, "bytes-");
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_linger_and_explicit(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.linger_us = 80000;
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  static res_t res[6];
  memset(res, 0, sizeof(res));
  done_count = 0;
  uint64_t start = uv_now(&f.t.uv);
  call_n(b, res, 3, "l");
  bt_run_for(&f.t, 30);
  assert_int_equal(done_count, 0); /* still lingering */
  while (done_count < 3)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_true(uv_now(&f.t.uv) - start >= 75);
  check_echoed(res, 3, "l");
  call_n(b, res + 3, 3, "l");
  assert_int_equal(braid_batcher_flush(b), 0);
  assert_int_equal(braid_batcher_flush(b), 0); /* nothing waits: fine */
  start = uv_now(&f.t.uv);
  while (done_count < 6)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_true(uv_now(&f.t.uv) - start < 75);
  braid_batcher_stats_t st;
  braid_batcher_stats(b, &st);
  assert_int_equal(st.flushes[BRAID_FLUSH_LINGER], 1);
  assert_int_equal(st.flushes[BRAID_FLUSH_EXPLICIT], 1);
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_item_errors(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.scbs.on_batch = srv_on_batch; /* upper-cases; "fail" items get an error */
  fix_start(&f);
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, NULL), 0);
  res_t r1 = {0}, r2 = {0}, r3 = {0};
  done_count = 0;
  assert_int_equal(braid_batcher_call(b, "one", 3, on_result, &r1), 0);
  assert_int_equal(braid_batcher_call(b, "fail", 4, on_result, &r2), 0);
  assert_int_equal(braid_batcher_call(b, "", 0, on_result, &r3), 0);
  while (done_count < 3)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_int_equal(r1.status, 0);
  assert_memory_equal(r1.data, "ONE", 3);
  assert_int_equal(r2.status, BRAID_EREMOTE);
  assert_int_equal(r2.code, BRAID_WIRE_APP_MIN);
  assert_memory_equal(r2.data, "item failed", 11);
  assert_int_equal(r3.status, 0);
  assert_int_equal(r3.len, 0);
  assert_int_equal(f.batches_seen, 1);
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_reset_mid_batch(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.hold = 1; /* the server takes the items and never answers */
  fix_start(&f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.max_items = 16;
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  static res_t res[40];
  memset(res, 0, sizeof(res));
  done_count = 0;
  call_n(b, res, 40, "r");
  while (f.n_held < 40)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  braid_conn_abort(braid_rpc_conn(f.srv_rpc));
  while (done_count < 40)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  bt_run_for(&f.t, 20);
  for (int i = 0; i < 40; i++) {
    assert_int_equal(res[i].calls, 1);
    assert_true(res[i].status < 0);
  }
  for (int i = 0; i < 40; i++)
    braid_rpc_respond(f.held[i].req, "late", 4);
  /* The channel is gone: new requests fail, through their callbacks or at once. */
  res_t after = {0};
  int rc = braid_batcher_call(b, "x", 1, on_result, &after);
  if (rc == 0) {
    bt_run_until(&f.t, &after.calls, 5000);
    assert_true(after.status < 0);
  } else {
    assert_int_equal(rc, BRAID_ECLOSED);
  }
  braid_batcher_free(b);
  fix_stop(&f);
  for (int i = 0; i < 40; i++)
    assert_int_equal(res[i].calls, 1);
}

/* Freeing the batcher from inside its channel's close callback (handles may be closed from
 * their own callbacks): it drops the last reference on the channel while the channel is
 * still in rpc_maybe_finish(), which used to read and free the channel again. */
static braid_batcher_t *close_batcher;

static void cli_on_close_free_batcher(braid_rpc_t *rpc, int status, void *arg) {
  cli_on_close(rpc, status, arg);
  braid_batcher_free(close_batcher);
  close_batcher = NULL;
}

static void test_free_in_channel_close_cb(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.ccbs.on_close = cli_on_close_free_batcher;
  fix_start(&f);
  assert_int_equal(braid_batcher_new(&close_batcher, f.client, NULL), 0);
  static res_t res[4];
  memset(res, 0, sizeof(res));
  done_count = 0;
  call_n(close_batcher, res, 4, "c");
  while (done_count < 4)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  check_echoed(res, 4, "c");
  fix_stop(&f);
  assert_int_equal(f.client_closed, 1);
  assert_null(close_batcher);
}

static void test_ordered_channel(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  braid_delimiter_opts_t d;
  braid_delimiter_opts_init(&d);
  d.delimiter = "\n";
  d.delimiter_len = 1;
  d.strip_delimiter = 0;
  assert_int_equal(braid_framer_init_delimiter(&f.sopts.framer, &d), 0);
  f.sopts.mode = BRAID_RPC_ORDERED;
  f.copts = f.sopts;
  fix_start(&f);
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, NULL), 0);
  static res_t res[50];
  memset(res, 0, sizeof(res));
  done_count = 0;
  braid_conn_stats_t before, after;
  braid_conn_stats(braid_rpc_conn(f.client), &before);
  for (int i = 0; i < 50; i++) {
    char line[16];
    int n = snprintf(line, sizeof(line), "line %d\n", i);
    assert_int_equal(braid_batcher_call(b, line, (size_t)n, on_result, &res[i]), 0);
  }
  while (done_count < 50)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 0; i < 50; i++) {
    char line[16];
    int n = snprintf(line, sizeof(line), "line %d\n", i);
    assert_int_equal(res[i].status, 0);
    assert_memory_equal(res[i].data, line, (size_t)n);
  }
  braid_conn_stats(braid_rpc_conn(f.client), &after);
  assert_int_equal(after.write_syscalls - before.write_syscalls, 1); /* one coalesced write */
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_free_flushes_waiting(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.linger_us = 5000000; /* would wait 5 s */
  braid_batcher_t *b;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  static res_t res[5];
  memset(res, 0, sizeof(res));
  done_count = 0;
  call_n(b, res, 5, "w");
  braid_batcher_free(b);
  while (done_count < 5)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  check_echoed(res, 5, "w");
  /* Bad options. */
  o.max_items = 0;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), BRAID_EINVAL);
  braid_batcher_opts_init(&o);
  o.linger_us = 20000000;
  assert_int_equal(braid_batcher_new(&b, f.client, &o), BRAID_EINVAL);
  /* The validator names the field (API.md rule 2). */
  braid_opts_error_t err;
  assert_int_equal(braid_batcher_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "linger_us");
  assert_non_null(strstr(err.reason, "20000000"));
  braid_batcher_opts_init(&o);
  assert_int_equal(braid_batcher_opts_validate(&o, &err), 0);
  braid_batcher_free(NULL);
  /* User data, and a free that cannot fail (it returns void). */
  assert_int_equal(braid_batcher_new(&b, f.client, &o), 0);
  assert_null(braid_batcher_get_data(b));
  braid_batcher_set_data(b, &o);
  assert_ptr_equal(braid_batcher_get_data(b), &o);
  braid_batcher_free(b);
  fix_stop(&f);
}

/* ---- large batches: answers encoded straight into write chunks ----------------------- */

#define BIG_ITEMS 64
#define BIG_ITEM_LEN 4000 /* 64 of them: a ~256 KiB frame each way, over many reads/chunks */

static char big_item[BIG_ITEMS][BIG_ITEM_LEN];

/* Item i: its own pattern; 10 and 50 ask for an error, 20 is empty. */
static size_t big_item_make(int i) {
  for (int k = 0; k < BIG_ITEM_LEN; k++)
    big_item[i][k] = (char)('a' + (i * 7 + k * 13) % 26);
  if (i == 10 || i == 50)
    big_item[i][0] = 'E';
  return i == 20 ? 0 : BIG_ITEM_LEN;
}

static int big_deferred; /* hold the requests instead of answering in the handler */
static braid_rpc_req_t *big_reqs[BIG_ITEMS];
static size_t big_lens[BIG_ITEMS];

static void big_answer(braid_rpc_req_t *req, const uint8_t *data, size_t len) {
  if (len && data[0] == 'E')
    assert_int_equal(braid_rpc_respond_error(req, BRAID_WIRE_APP_MIN + 3, "bad item"), 0);
  else
    assert_int_equal(braid_rpc_respond(req, data, len), 0);
}

/* Answers odd items first, then even ones from the last: most answers come ahead of their
 * turn and are held until the ones before them arrive. */
static void big_on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                         uint32_t count, void *arg) {
  (void)rpc;
  ((fix_t *)arg)->batches_seen++;
  assert_int_equal(count, BIG_ITEMS);
  if (big_deferred) {
    for (uint32_t i = 0; i < count; i++) {
      big_reqs[i] = reqs[i];
      big_lens[i] = items[i].len;
      assert_memory_equal(items[i].data, big_item[i], items[i].len);
    }
    return;
  }
  for (uint32_t i = 1; i < count; i += 2)
    big_answer(reqs[i], items[i].data, items[i].len);
  for (uint32_t i = count; i-- > 0;)
    if (i % 2 == 0)
      big_answer(reqs[i], items[i].data, items[i].len);
}

static void big_check(res_t *res, int i) {
  assert_int_equal(res->calls, 1);
  if (i == 10 || i == 50) {
    assert_int_equal(res->status, BRAID_EREMOTE);
    assert_int_equal(res->code, BRAID_WIRE_APP_MIN + 3);
    assert_int_equal(res->len, 8);
    assert_memory_equal(res->data, "bad item", 8);
    return;
  }
  assert_int_equal(res->status, 0);
  assert_int_equal(res->len, i == 20 ? 0 : BIG_ITEM_LEN);
  assert_memory_equal(res->data, big_item[i], res->len);
}

/* f's options are set (fix_opts) by the caller. */
static void big_start(fix_t *f, braid_batcher_t **b, int gzip) {
  f->scbs.on_batch = big_on_batch;
  if (gzip) {
    f->sopts.gzip_min_bytes = 512;
    f->copts.gzip_min_bytes = 512;
  }
  fix_start(f);
  braid_batcher_opts_t o;
  braid_batcher_opts_init(&o);
  o.max_items = BIG_ITEMS;
  o.max_bytes = 1 << 20;
  assert_int_equal(braid_batcher_new(b, f->client, &o), 0);
}

static void big_call(braid_batcher_t *b, res_t *res) {
  for (int i = 0; i < BIG_ITEMS; i++) {
    size_t len = big_item_make(i);
    assert_int_equal(braid_batcher_call(b, big_item[i], len, on_result, &res[i]), 0);
  }
}

/* Batch frames several times a read, back to back on one connection, answered out of order
 * with error and empty items among them: every answer in its place, byte for byte. */
static void large_batches(int max_inflight) {
  static fix_t f;
  braid_batcher_t *b;
  big_deferred = 0;
  fix_opts(&f);
  f.copts.max_inflight = (unsigned)max_inflight;
  big_start(&f, &b, 0);
  static res_t res[3][BIG_ITEMS];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int round = 0; round < 3; round++)
    big_call(b, res[round]);
  braid_rpc_stats_t qs;
  braid_rpc_stats(f.client, &qs);
  assert_int_equal(qs.queued, max_inflight == 1 ? 2 : 0);
  while (done_count < 3 * BIG_ITEMS)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < BIG_ITEMS; i++)
      big_check(&res[round][i], i);
  assert_int_equal(f.batches_seen, 3);
  braid_rpc_stats_t rs;
  braid_rpc_stats(f.srv_rpc, &rs);
  assert_int_equal(rs.batches, 3);
  assert_int_equal(rs.inflight, 0);
  braid_conn_stats_t cs;
  braid_conn_stats(braid_rpc_conn(f.srv_rpc), &cs);
  assert_true(cs.bytes_read > 3 * (BIG_ITEMS - 3) * (size_t)BIG_ITEM_LEN);
  braid_rpc_stats_t cst;
  braid_rpc_stats(f.client, &cst);
  assert_int_equal(cst.calls, 3);
  assert_int_equal(cst.completed, 3);
  braid_batcher_free(b);
  fix_stop(&f);
}

static void test_large_batches_span_reads(void **state) {
  (void)state;
  large_batches(1024);
}

/* One batch in flight at a time: the next two wait in the channel's queue (their chains
 * flattened into it) and still go out, in order. */
static void test_large_batches_queued_behind_cap(void **state) {
  (void)state;
  large_batches(1);
}

/* Answers given later, from outside the handler, in a scrambled order over several loop
 * iterations: the answer frame goes out once, when the last one is given. */
static void test_large_batch_deferred_answers(void **state) {
  (void)state;
  static fix_t f;
  braid_batcher_t *b;
  big_deferred = 1;
  fix_opts(&f);
  big_start(&f, &b, 0);
  static res_t res[BIG_ITEMS];
  memset(res, 0, sizeof(res));
  memset(big_reqs, 0, sizeof(big_reqs));
  done_count = 0;
  big_call(b, res);
  while (!big_reqs[BIG_ITEMS - 1])
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int step = 0; step < BIG_ITEMS; step++) {
    int i = (step * 37 + 5) % BIG_ITEMS; /* 37 is prime to 64: a permutation */
    big_answer(big_reqs[i], (const uint8_t *)big_item[i], big_lens[i]);
    if (step % 16 == 15)
      uv_run(&f.t.uv, UV_RUN_NOWAIT);
    if (step < BIG_ITEMS - 1)
      assert_int_equal(done_count, 0);
  }
  while (done_count < BIG_ITEMS)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 0; i < BIG_ITEMS; i++)
    big_check(&res[i], i);
  big_deferred = 0;
  braid_batcher_free(b);
  fix_stop(&f);
}

/* A compressing channel: the batch answer is flattened and compressed, still correct. */
static void test_large_batch_compressed_answer(void **state) {
  (void)state;
  static fix_t f;
  braid_batcher_t *b;
  big_deferred = 0;
  fix_opts(&f);
  big_start(&f, &b, 1);
  static res_t res[BIG_ITEMS];
  memset(res, 0, sizeof(res));
  done_count = 0;
  braid_conn_stats_t before, after;
  braid_conn_stats(braid_rpc_conn(f.client), &before);
  big_call(b, res);
  while (done_count < BIG_ITEMS)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 0; i < BIG_ITEMS; i++)
    big_check(&res[i], i);
  braid_conn_stats(braid_rpc_conn(f.client), &after);
  /* The patterns repeat every 26 bytes: the answer shrinks to a small part. */
  assert_true(after.bytes_read - before.bytes_read < BIG_ITEMS * BIG_ITEM_LEN / 4);
  braid_batcher_free(b);
  fix_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flush_by_items_and_end_of_iteration),
      cmocka_unit_test(test_flush_by_bytes),
      cmocka_unit_test(test_linger_and_explicit),
      cmocka_unit_test(test_item_errors),
      cmocka_unit_test(test_reset_mid_batch),
      cmocka_unit_test(test_free_in_channel_close_cb),
      cmocka_unit_test(test_ordered_channel),
      cmocka_unit_test(test_free_flushes_waiting),
      cmocka_unit_test(test_large_batches_span_reads),
      cmocka_unit_test(test_large_batches_queued_behind_cap),
      cmocka_unit_test(test_large_batch_deferred_answers),
      cmocka_unit_test(test_large_batch_compressed_answer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
