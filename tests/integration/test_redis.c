/* Interop: braid's ordered rpc mode against a real redis-server, a peer nobody here wrote.
 * Each test starts its own redis-server on 127.0.0.1 and an ephemeral port, talks RESP
 * through a custom framer (tests/resp.c) on a BRAID_RPC_ORDERED channel, and kills and reaps
 * the server at the end. Covered: 10,000 pipelined SET/GET with every value checked, the
 * same through a batcher, a per-request deadline on a BLPOP that blocks server-side (it
 * times out, its late reply is consumed in its turn, later requests complete correctly), and
 * -ERR replies surfaced to the caller as data.
 *
 * No redis-server installed is a failure, not a skip: CI installs it (scripts/deps.sh test). */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "braid/batch.h"

#include "../resp.h"
#include "../support.h"

/* ---- a redis-server child process ------------------------------------------------------- */

typedef struct redis_s {
  uv_process_t proc;
  int exited;
  int64_t exit_status;
  int term_signal;
  int closed; /* the process handle is closed */
  int port;
  char port_str[16];
} redis_t;

/* The running server's pid, killed by the teardown if a test fails before reaping it. */
static int live_pid;

static void on_redis_exit(uv_process_t *p, int64_t status, int term_signal) {
  redis_t *r = p->data;
  r->exited = 1;
  live_pid = 0;
  r->exit_status = status;
  r->term_signal = term_signal;
}

/* An ephemeral port that was free a moment ago (bind port 0, read it, close). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t alen = sizeof(a);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static void redis_spawn(bt_loop_t *t, redis_t *r) {
  memset(r, 0, sizeof(*r));
  r->port = free_port();
  snprintf(r->port_str, sizeof(r->port_str), "%d", r->port);
  char *args[] = {"redis-server", "--port", r->port_str, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                  NULL};
  uv_stdio_container_t stdio[3] = {{UV_IGNORE, {0}}, {UV_IGNORE, {0}}, {UV_INHERIT_FD, {0}}};
  stdio[2].data.fd = 2;
  uv_process_options_t po = {0};
  po.file = "redis-server";
  po.args = args;
  po.exit_cb = on_redis_exit;
  po.stdio = stdio;
  po.stdio_count = 3;
  r->proc.data = r;
  int rc = uv_spawn(&t->uv, &r->proc, &po);
  if (rc == UV_ENOENT)
    fail_msg("redis-server is not installed (install it: scripts/deps.sh test, or apt-get "
             "install redis-server); this test needs a real Redis and does not skip");
  if (rc != 0)
    fail_msg("cannot start redis-server: %s", uv_strerror(rc));
  live_pid = r->proc.pid;
}

static int kill_leftover(void **state) {
  (void)state;
  if (live_pid > 0)
    kill(live_pid, SIGKILL);
  live_pid = 0;
  return 0;
}

static void on_proc_closed(uv_handle_t *h) {
  ((redis_t *)h->data)->closed = 1;
}

/* Stops the server with SIGTERM (SIGKILL if it lingers) and reaps it, bounded in time. */
static void redis_stop(bt_loop_t *t, redis_t *r) {
  if (!r->exited)
    uv_process_kill(&r->proc, SIGTERM);
  for (int i = 0; i < 100 && !r->exited; i++)
    bt_run_for(t, 20);
  if (!r->exited) {
    uv_process_kill(&r->proc, SIGKILL);
    bt_run_until(t, &r->exited, 5000);
  }
  uv_close((uv_handle_t *)&r->proc, on_proc_closed);
  bt_run_until(t, &r->closed, 5000); /* so r may be reused */
}

/* ---- calls and answers ---------------------------------------------------------------------- */

typedef struct res_s {
  int calls;
  int status;
  char data[256];
  size_t len;
} res_t;

static int done_count;

static void on_result(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  res_t *res = arg;
  res->calls++;
  res->status = status;
  res->len = r->len < sizeof(res->data) ? r->len : sizeof(res->data);
  if (res->len)
    memcpy(res->data, r->data, res->len);
  done_count++;
}

static void call(braid_rpc_t *rpc, int argc, const char *const *argv, uint64_t timeout_ms,
                 res_t *res) {
  uint8_t buf[512];
  size_t n = resp_command(buf, sizeof(buf), argc, argv);
  assert_true(n > 0);
  assert_int_equal(braid_rpc_call(rpc, buf, n, timeout_ms, on_result, res), 0);
}

static void assert_reply(const res_t *r, const char *want) {
  assert_int_equal(r->calls, 1);
  assert_int_equal(r->status, 0);
  if (r->len != strlen(want) || memcmp(r->data, want, r->len) != 0)
    fail_msg("reply '%.*s', want '%s'", (int)r->len, r->data, want);
}

/* ---- fixture: redis plus ordered rpc channels ----------------------------------------------- */

typedef struct fix_s {
  bt_loop_t t;
  redis_t redis;
  braid_rpc_t *ch[2];
  int connected, connect_status;
  int closed;
} fix_t;

static void on_ch_close(braid_rpc_t *rpc, int status, void *arg) {
  fix_t *f = arg;
  (void)status;
  for (int i = 0; i < 2; i++)
    if (f->ch[i] == rpc)
      f->ch[i] = NULL;
  f->closed++;
}

static void on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  fix_t *f = arg;
  f->connect_status = status;
  if (status == 0) {
    braid_rpc_opts_t o;
    braid_rpc_opts_init(&o);
    o.mode = BRAID_RPC_ORDERED;
    assert_int_equal(resp_framer_init(&o.framer, 1 << 20), 0);
    braid_rpc_callbacks_t cbs = {.on_close = on_ch_close};
    int i = f->ch[0] ? 1 : 0;
    assert_int_equal(braid_rpc_client(&f->ch[i], conn, &o, &cbs, f), 0);
  }
  f->connected = 1;
}

/* Connects one channel, retrying while the server is still starting (bounded: ~5 s).
 * Returns 0, or -1 when the server exited first (its port was taken after free_port()). */
static int fix_connect(fix_t *f) {
  braid_client_opts_t co;
  braid_client_opts_init(&co);
  co.retries = 100;
  co.backoff_initial_ms = 20;
  co.backoff_max_ms = 50;
  co.connect_timeout_ms = 1000;
  f->connected = 0;
  braid_connect_t *req;
  assert_int_equal(braid_connect(&req, f->t.loop, "127.0.0.1", f->redis.port, &co, on_connect, f),
                   0);
  uint64_t start = uv_now(&f->t.uv);
  while (!f->connected && !f->redis.exited && uv_now(&f->t.uv) - start < 10000)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  if (!f->connected) {
    braid_connect_cancel(req);
    bt_run_until(&f->t, &f->connected, 5000);
  }
  if (f->connect_status == 0)
    return 0;
  if (f->redis.exited)
    return -1;
  fail_msg("cannot connect to redis-server on port %d: %s", f->redis.port,
           braid_strerror(f->connect_status));
  return -1;
}

/* PINGs on channel i: returns 0 when the answer is +PONG, -1 otherwise. */
static int fix_ping(fix_t *f, int i) {
  static const char *const ping[] = {"PING"};
  res_t pong = {0};
  call(f->ch[i], 1, ping, 2000, &pong);
  bt_run_until(&f->t, &pong.calls, 5000);
  return pong.status == 0 && pong.len == 7 && memcmp(pong.data, "+PONG\r\n", 7) == 0 ? 0 : -1;
}

/* Starts redis-server and connects the channels, PING proving the peer is the server we
 * started. If it exited instead (its port was taken after free_port(), maybe by a listener
 * that then accepted our connection), it is started again on another port, up to 3 times. */
static void fix_start(fix_t *f, int channels) {
  memset(f, 0, sizeof(*f));
  bt_loop_init(&f->t);
  for (int attempt = 0;; attempt++) {
    redis_spawn(&f->t, &f->redis);
    if (fix_connect(f) == 0 && fix_ping(f, 0) == 0)
      break;
    if (!f->redis.exited)
      fail_msg("the server on port %d answers, but not as the redis-server started there",
               f->redis.port);
    if (f->ch[0]) {
      braid_rpc_close(f->ch[0]);
      bt_run_until(&f->t, &f->closed, 5000);
      f->closed = 0;
    }
    redis_stop(&f->t, &f->redis);
    if (attempt == 2)
      fail_msg("redis-server exited before serving, 3 times (last exit status %d)",
               (int)f->redis.exit_status);
  }
  for (int i = 1; i < channels; i++)
    if (fix_connect(f) != 0 || fix_ping(f, i) != 0)
      fail_msg("redis-server stopped answering (exited: %d)", f->redis.exited);
  done_count = 0;
}

static void fix_stop(fix_t *f) {
  int open = 0;
  for (int i = 0; i < 2; i++)
    if (f->ch[i]) {
      open++;
      braid_rpc_close(f->ch[i]);
    }
  while (f->closed < open)
    uv_run(&f->t.uv, UV_RUN_ONCE);
  redis_stop(&f->t, &f->redis);
  bt_run(&f->t, 5000);
  bt_loop_done(&f->t);
}

static void wait_done(fix_t *f, int n) {
  uint64_t start = uv_now(&f->t.uv);
  while (done_count < n) {
    if (uv_now(&f->t.uv) - start > 30000)
      fail_msg("only %d of %d answers after 30 s", done_count, n);
    uv_run(&f->t.uv, UV_RUN_ONCE);
  }
}

/* Key i's value, and the bulk-string reply a GET of it returns. */
static void kv_of(unsigned i, char *key, char *value, char *reply) {
  sprintf(key, "key:%u", i);
  int n = sprintf(value, "value-%u-%08x", i, i * 2654435761u);
  sprintf(reply, "$%d\r\n%s\r\n", n, value);
}

enum { N = 10000 };
static res_t res[2 * N];

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_pipelined_set_get(void **state) {
  (void)state;
  static fix_t f;
  fix_start(&f, 1);
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (unsigned i = 0; i < N; i++) {
    char key[32], value[64], reply[96];
    kv_of(i, key, value, reply);
    const char *set[] = {"SET", key, value};
    call(f.ch[0], 3, set, 0, &res[i]);
  }
  for (unsigned i = 0; i < N; i++) {
    char key[32], value[64], reply[96];
    kv_of(i, key, value, reply);
    const char *get[] = {"GET", key};
    call(f.ch[0], 2, get, 0, &res[N + i]);
  }
  braid_rpc_stats_t st;
  braid_rpc_stats(f.ch[0], &st);
  assert_true(st.inflight > 1); /* really pipelined */
  wait_done(&f, 2 * N);
  for (unsigned i = 0; i < N; i++) {
    char key[32], value[64], reply[96];
    kv_of(i, key, value, reply);
    assert_reply(&res[i], "+OK\r\n");
    assert_reply(&res[N + i], reply);
  }
  /* A missing key is the null bulk string. */
  res_t miss = {0};
  const char *get[] = {"GET", "no-such-key"};
  call(f.ch[0], 2, get, 0, &miss);
  bt_run_until(&f.t, &miss.calls, 5000);
  assert_reply(&miss, "$-1\r\n");
  fix_stop(&f);
}

static void test_batched_set_get(void **state) {
  (void)state;
  static fix_t f;
  fix_start(&f, 1);
  braid_batcher_t *b;
  braid_batcher_opts_t bo;
  braid_batcher_opts_init(&bo);
  bo.max_items = 64;
  assert_int_equal(braid_batcher_new(&b, f.ch[0], &bo), 0);
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (unsigned i = 0; i < 2 * N; i++) {
    char key[32], value[64], reply[96];
    kv_of(i % N, key, value, reply);
    const char *set[] = {"SET", key, value};
    const char *get[] = {"GET", key};
    uint8_t buf[256];
    size_t n = i < N ? resp_command(buf, sizeof(buf), 3, set)
                     : resp_command(buf, sizeof(buf), 2, get);
    assert_int_equal(braid_batcher_call(b, buf, n, on_result, &res[i]), 0);
  }
  wait_done(&f, 2 * N);
  for (unsigned i = 0; i < N; i++) {
    char key[32], value[64], reply[96];
    kv_of(i, key, value, reply);
    assert_reply(&res[i], "+OK\r\n");
    assert_reply(&res[N + i], reply);
  }
  braid_batcher_stats_t bs;
  braid_batcher_stats(b, &bs);
  assert_int_equal(bs.requests, 2 * N);
  assert_true(bs.batches >= 2 * N / 64 && bs.batches < 2 * N);
  braid_batcher_free(b);
  fix_stop(&f);
}

/* BLPOP on an empty list blocks server-side, and Redis answers a connection's commands in
 * order, so everything behind it waits too. Its client deadline fails it alone; the requests
 * behind it complete once another connection pushes to the list, and BLPOP's late reply (an
 * array) is consumed in its turn, not handed to the next request. */
static void test_deadline_on_blocking_call(void **state) {
  (void)state;
  static fix_t f;
  fix_start(&f, 2);
  done_count = 0;
  res_t before = {0}, blpop = {0}, after_set = {0}, after_get = {0}, push = {0};
  const char *set[] = {"SET", "k", "v1"};
  const char *pop[] = {"BLPOP", "queue", "0"}; /* 0: block forever */
  const char *set2[] = {"SET", "k", "v2"};
  const char *get[] = {"GET", "k"};
  call(f.ch[0], 3, set, 0, &before);
  call(f.ch[0], 3, pop, 200, &blpop);
  call(f.ch[0], 3, set2, 0, &after_set);
  call(f.ch[0], 2, get, 0, &after_get);
  bt_run_until(&f.t, &blpop.calls, 5000);
  assert_int_equal(blpop.status, BRAID_ETIMEDOUT);
  assert_reply(&before, "+OK\r\n");
  assert_int_equal(after_set.calls, 0); /* still behind the BLPOP on the server */
  assert_int_equal(after_get.calls, 0);
  bt_run_for(&f.t, 100);
  assert_int_equal(after_get.calls, 0);
  /* Unblock it from the second connection. */
  const char *rpush[] = {"RPUSH", "queue", "item"};
  call(f.ch[1], 3, rpush, 0, &push);
  /* The two connections' answers may arrive in either order. */
  bt_run_until(&f.t, &after_get.calls, 5000);
  bt_run_until(&f.t, &push.calls, 5000);
  assert_reply(&push, ":1\r\n");
  assert_reply(&after_set, "+OK\r\n");
  assert_reply(&after_get, "$2\r\nv2\r\n");
  assert_int_equal(blpop.calls, 1);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.ch[0], &st);
  assert_int_equal(st.timeouts, 1);
  assert_int_equal(st.late, 1); /* the BLPOP's "*2 queue item" reply, dropped */
  /* The list is empty again: the timed-out BLPOP did take the item. */
  res_t len = {0};
  const char *llen[] = {"LLEN", "queue"};
  call(f.ch[0], 2, llen, 0, &len);
  bt_run_until(&f.t, &len.calls, 5000);
  assert_reply(&len, ":0\r\n");
  fix_stop(&f);
}

/* Redis errors are replies like any other: the caller gets "-ERR ..." as data, and the
 * channel goes on. Also a nested array with a null inside, from a real server. */
static void test_error_replies_and_nesting(void **state) {
  (void)state;
  static fix_t f;
  fix_start(&f, 1);
  done_count = 0;
  res_t r[6];
  memset(r, 0, sizeof(r));
  const char *set[] = {"SET", "s", "not a number"};
  const char *incr[] = {"INCR", "s"};
  const char *bogus[] = {"NO-SUCH-COMMAND", "x"};
  const char *mget[] = {"MGET", "s", "missing"};
  const char *eval[] = {"EVAL", "return {1, {2, 'x'}, {}}", "0"};
  const char *ping[] = {"PING"};
  call(f.ch[0], 3, set, 0, &r[0]);
  call(f.ch[0], 2, incr, 0, &r[1]);
  call(f.ch[0], 2, bogus, 0, &r[2]);
  call(f.ch[0], 3, mget, 0, &r[3]);
  call(f.ch[0], 3, eval, 0, &r[4]);
  call(f.ch[0], 1, ping, 0, &r[5]);
  wait_done(&f, 6);
  assert_reply(&r[0], "+OK\r\n");
  assert_reply(&r[1], "-ERR value is not an integer or out of range\r\n");
  assert_int_equal(r[2].status, 0);
  assert_true(r[2].len > 5 && memcmp(r[2].data, "-ERR unknown command", 20) == 0);
  assert_reply(&r[3], "*2\r\n$12\r\nnot a number\r\n$-1\r\n");
  assert_reply(&r[4], "*3\r\n:1\r\n*2\r\n:2\r\n$1\r\nx\r\n*0\r\n");
  assert_reply(&r[5], "+PONG\r\n");
  fix_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_pipelined_set_get, kill_leftover),
    cmocka_unit_test_teardown(test_batched_set_get, kill_leftover),
    cmocka_unit_test_teardown(test_deadline_on_blocking_call, kill_leftover),
    cmocka_unit_test_teardown(test_error_replies_and_nesting, kill_leftover),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
