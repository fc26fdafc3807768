#include "support.h"

#include <stdio.h>
#include <sys/resource.h>

void bt_loop_init(bt_loop_t *t) {
  assert_int_equal(uv_loop_init(&t->uv), 0);
  assert_int_equal(braid_loop_new(&t->loop, &t->uv), 0);
}

typedef struct {
  const volatile int *flag;
  int timed_out;
} guard_t;

static void on_guard(uv_timer_t *h) {
  guard_t *g = h->data;
  g->timed_out = 1;
  uv_stop(h->loop);
}

static void stop_if_flag(guard_t *g, uv_loop_t *uv) {
  if (g->flag && *g->flag)
    uv_stop(uv);
}
static void on_flag_prepare(uv_prepare_t *h) {
  stop_if_flag(h->data, h->loop);
}
static void on_flag_check(uv_check_t *h) {
  stop_if_flag(h->data, h->loop);
}

static void run_guarded(bt_loop_t *t, const volatile int *flag, uint64_t timeout_ms) {
  guard_t g = {flag, 0};
  uv_timer_t timer;
  uv_timer_init(&t->uv, &timer);
  timer.data = &g;
  uv_timer_start(&timer, on_guard, timeout_ms, 0);
  uv_unref((uv_handle_t *)&timer);
  /* The flag is set by some callback: a prepare (before the loop blocks) and a check
   * (after poll callbacks) notice it without spinning. Unref'd: they keep nothing alive. */
  uv_prepare_t prepare;
  uv_check_t check;
  uv_prepare_init(&t->uv, &prepare);
  uv_check_init(&t->uv, &check);
  prepare.data = check.data = &g;
  uv_prepare_start(&prepare, on_flag_prepare);
  uv_check_start(&check, on_flag_check);
  uv_unref((uv_handle_t *)&prepare);
  uv_unref((uv_handle_t *)&check);
  for (;;) {
    int alive = uv_run(&t->uv, UV_RUN_DEFAULT);
    if (g.timed_out || (flag && *flag) || !alive)
      break;
  }
  uv_close((uv_handle_t *)&prepare, NULL);
  uv_close((uv_handle_t *)&check, NULL);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
  if (g.timed_out)
    fail_msg("loop did not finish within %llu ms", (unsigned long long)timeout_ms);
  if (flag && !*flag)
    fail_msg("loop ran out of work before the awaited condition");
}

void bt_run(bt_loop_t *t, uint64_t timeout_ms) {
  run_guarded(t, NULL, timeout_ms);
}

void bt_run_until(bt_loop_t *t, const volatile int *flag, uint64_t timeout_ms) {
  run_guarded(t, flag, timeout_ms);
}

static void on_run_for(uv_timer_t *h) {
  *(int *)h->data = 1;
}

void bt_run_for(bt_loop_t *t, uint64_t ms) {
  int done = 0;
  uv_timer_t timer;
  uv_timer_init(&t->uv, &timer);
  timer.data = &done;
  uv_timer_start(&timer, on_run_for, ms, 0);
  run_guarded(t, &done, ms + 10000);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
}

static void print_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "leaked handle: %s active=%d closing=%d\n", uv_handle_type_name(h->type),
          uv_is_active(h), uv_is_closing(h));
}

void bt_loop_done(bt_loop_t *t) {
  int rc = braid_loop_close(t->loop);
  if (rc != 0)
    fail_msg("braid_loop_close: %s", braid_err_name(rc));
  uv_run(&t->uv, UV_RUN_DEFAULT);
  rc = uv_loop_close(&t->uv);
  if (rc != 0) {
    uv_walk(&t->uv, print_handle, NULL);
    fail_msg("uv_loop_close: %s (leaked handles)", uv_err_name(rc));
  }
}

uint64_t bt_set_nofile(uint64_t n) {
  struct rlimit rl;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  uint64_t old = rl.rlim_cur;
  rl.rlim_cur = n;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
  return old;
}
