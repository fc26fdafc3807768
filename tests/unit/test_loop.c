/* Loops: owned and borrowed, posts from other threads, threadpool work, the flush hook,
 * and the close rules. */
#include <string.h>

#include "../support.h"
#include "internal.h"

static void test_owned_loop(void **state) {
  (void)state;
  braid_loop_t *loop;
  assert_int_equal(braid_loop_new(&loop, NULL), 0);
  assert_non_null(braid_loop_uv(loop));
  assert_int_equal(braid_loop_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(braid_loop_close(loop), 0);
  assert_int_equal(braid_loop_new(NULL, NULL), BRAID_EINVAL);
}

typedef struct {
  braid_loop_t *loop;
  int seen[4][1000];
  int count;
  int last_per_thread[4];
  int out_of_order;
} post_state_t;

typedef struct {
  post_state_t *ps;
  int thread;
  int seq;
} post_msg_t;

static post_msg_t msgs[4][1000];

static void on_post(void *arg) {
  post_msg_t *m = arg;
  post_state_t *ps = m->ps;
  if (m->seq != ps->last_per_thread[m->thread] + 1)
    ps->out_of_order++;
  ps->last_per_thread[m->thread] = m->seq;
  ps->seen[m->thread][m->seq]++;
  ps->count++;
}

static void poster(void *arg) {
  post_msg_t *row = arg;
  for (int i = 0; i < 1000; i++)
    assert_int_equal(braid_loop_post(row[i].ps->loop, on_post, &row[i]), 0);
}

static void on_keepalive(uv_timer_t *t) {
  post_state_t *ps = t->data;
  if (ps->count == 4000)
    uv_close((uv_handle_t *)t, NULL);
}

static void test_post_from_threads(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  static post_state_t ps;
  memset(&ps, 0, sizeof(ps));
  ps.loop = t.loop;
  for (int th = 0; th < 4; th++) {
    ps.last_per_thread[th] = -1;
    for (int i = 0; i < 1000; i++)
      msgs[th][i] = (post_msg_t){&ps, th, i};
  }
  uv_timer_t keep;
  uv_timer_init(&t.uv, &keep);
  keep.data = &ps;
  uv_timer_start(&keep, on_keepalive, 1, 1);
  uv_thread_t threads[4];
  for (int th = 0; th < 4; th++)
    assert_int_equal(uv_thread_create(&threads[th], poster, msgs[th]), 0);
  bt_run(&t, 10000);
  for (int th = 0; th < 4; th++)
    uv_thread_join(&threads[th]);
  assert_int_equal(ps.count, 4000);
  assert_int_equal(ps.out_of_order, 0);
  for (int th = 0; th < 4; th++)
    for (int i = 0; i < 1000; i++)
      assert_int_equal(ps.seen[th][i], 1);
  assert_int_equal(braid_loop_post(t.loop, NULL, NULL), BRAID_EINVAL);
  bt_loop_done(&t);
}

static int ran_at_close;
static void count_post(void *arg) {
  (void)arg;
  ran_at_close++;
}

static void test_posts_run_at_close(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  ran_at_close = 0;
  assert_int_equal(braid_loop_post(t.loop, count_post, NULL), 0);
  assert_int_equal(braid_loop_post(t.loop, count_post, NULL), 0);
  /* Nothing ran the loop: close still runs them, exactly once. */
  bt_loop_done(&t);
  assert_int_equal(ran_at_close, 2);
}

typedef struct {
  int work_ran;
  int done;
  int status;
  uv_thread_t loop_thread;
  int done_on_loop_thread;
} work_state_t;

static void do_work(void *arg) {
  work_state_t *w = arg;
  w->work_ran = 1;
}

static void work_done(braid_loop_t *loop, int status, void *arg) {
  (void)loop;
  work_state_t *w = arg;
  w->done++;
  w->status = status;
  uv_thread_t self = uv_thread_self();
  w->done_on_loop_thread = uv_thread_equal(&self, &w->loop_thread);
}

static void test_work(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  work_state_t w = {0};
  w.loop_thread = uv_thread_self();
  assert_int_equal(braid_work(NULL, t.loop, do_work, work_done, &w), 0);
  /* Pending work keeps the braid loop busy. */
  assert_int_equal(braid_loop_close(t.loop), BRAID_EBUSY);
  bt_run(&t, 10000);
  assert_int_equal(w.done, 1);
  assert_int_equal(w.status, 0);
  assert_int_equal(w.work_ran, 1);
  assert_true(w.done_on_loop_thread);
  assert_int_equal(braid_work(NULL, t.loop, NULL, work_done, &w), BRAID_EINVAL);
  /* User data (API.md rule 3). */
  assert_null(braid_loop_get_data(t.loop));
  braid_loop_set_data(t.loop, &w);
  assert_ptr_equal(braid_loop_get_data(t.loop), &w);
  bt_loop_done(&t);
}

static void block_work(void *arg) {
  uv_sem_t *sem = arg;
  uv_sem_wait(sem);
}
static void block_done(braid_loop_t *loop, int status, void *arg) {
  (void)loop;
  (void)status;
  (void)arg;
}

static void test_work_cancel(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  /* Occupy every threadpool thread so the last item is still queued when cancelled. */
  enum { BLOCKERS = 4 };
  uv_sem_t sem;
  uv_sem_init(&sem, 0);
  for (int i = 0; i < BLOCKERS; i++)
    assert_int_equal(braid_work(NULL, t.loop, block_work, block_done, &sem), 0);
  work_state_t w = {0};
  w.loop_thread = uv_thread_self();
  braid_work_t *id;
  assert_int_equal(braid_work(&id, t.loop, do_work, work_done, &w), 0);
  assert_int_equal(braid_work_cancel(id), 0);
  for (int i = 0; i < BLOCKERS; i++)
    uv_sem_post(&sem);
  bt_run(&t, 10000);
  assert_int_equal(w.done, 1);
  assert_int_equal(w.status, BRAID_ECANCELED);
  assert_int_equal(w.work_ran, 0);
  uv_sem_destroy(&sem);
  bt_loop_done(&t);
}

typedef struct {
  braid__flush_t f;
  int calls;
  int requeue;
  braid_loop_t *loop;
} flusher_t;

static void on_flush(braid__flush_t *f) {
  flusher_t *fl = BRAID__CONTAINER_OF(f, flusher_t, f);
  fl->calls++;
  if (fl->requeue-- > 0)
    braid__loop_want_flush(fl->loop, f);
}

static void test_flush_once_per_iteration(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  flusher_t fl = {.f = {.fn = on_flush}, .loop = t.loop, .requeue = 2};
  /* Many requests before the loop runs collapse into one call. */
  braid__loop_want_flush(t.loop, &fl.f);
  braid__loop_want_flush(t.loop, &fl.f);
  braid__loop_want_flush(t.loop, &fl.f);
  /* The flush keeps the loop alive until it ran; a re-queue runs in a later phase. */
  bt_run(&t, 5000);
  assert_int_equal(fl.calls, 3);
  flusher_t gone = {.f = {.fn = on_flush}, .loop = t.loop};
  braid__loop_want_flush(t.loop, &gone.f);
  braid__loop_cancel_flush(&gone.f);
  bt_run(&t, 5000);
  assert_int_equal(gone.calls, 0);
  bt_loop_done(&t);
}

/* The write-chunk pool keeps the floor, or what brings the chunks in use back to the recent
 * peak: a deep queue that drains and fills again reuses its chunks. Once the peak is out of
 * the last two windows, the pool shrinks back to the floor as it is used. */
static void test_chunk_pool_keeps_recent_peak(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_loop_t *loop = t.loop;
  enum { DEEP = BRAID__CHUNK_POOL_MAX * 3 };
  static void *chunks[DEEP];
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < DEEP; i++)
      assert_non_null(chunks[i] = braid__loop_chunk_get(loop));
    assert_int_equal(loop->chunk_pool_len, 0); /* the second round: all from the pool */
    assert_int_equal(loop->chunks_out, DEEP);
    for (int i = 0; i < DEEP; i++)
      braid__loop_chunk_put(loop, chunks[i]);
    assert_int_equal(loop->chunks_out, 0);
    assert_int_equal(loop->chunk_pool_len, DEEP); /* all kept: the peak is recent */
  }
  /* One window later the peak is still the last window's: kept. */
  loop->chunks_window_end = 0;
  braid__loop_chunk_put(loop, braid__loop_chunk_get(loop));
  assert_int_equal(loop->chunk_pool_len, DEEP);
  /* Two windows later it is gone: each use frees what is over the floor, two at a time. */
  loop->chunks_window_end = 0;
  braid__loop_chunk_put(loop, braid__loop_chunk_get(loop));
  assert_int_equal(loop->chunk_pool_len, DEEP - 2);
  for (int i = 0; i < DEEP; i++)
    braid__loop_chunk_put(loop, braid__loop_chunk_get(loop));
  assert_int_equal(loop->chunk_pool_len, BRAID__CHUNK_POOL_MAX);
  assert_int_equal(loop->chunks_out, 0);
  bt_loop_done(&t);
}

static void test_shared_read_buffer(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  uv_buf_t a, b;
  braid__loop_read_alloc(t.loop, &a);
  braid__loop_read_alloc(t.loop, &b); /* nested: gets its own buffer */
  assert_ptr_not_equal(a.base, b.base);
  braid__loop_read_release(t.loop, &b);
  braid__loop_read_release(t.loop, &a);
  uv_buf_t c;
  braid__loop_read_alloc(t.loop, &c);
  assert_ptr_equal(a.base, c.base); /* shared buffer reused */
  braid__loop_read_release(t.loop, &c);
  bt_loop_done(&t);
}

static int logged;
static void log_fn(braid_loop_t *loop, braid_log_level_t level, const char *msg, void *arg) {
  (void)loop;
  (void)arg;
  assert_int_equal(level, BRAID_LOG_WARN);
  assert_string_equal(msg, "value 42");
  logged++;
}

static void test_log_hook(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid__log(t.loop, BRAID_LOG_WARN, "dropped %d", 1); /* no hook: nothing */
  braid_loop_set_log(t.loop, log_fn, BRAID_LOG_WARN, NULL);
  braid__log(t.loop, BRAID_LOG_INFO, "filtered %d", 1);
  braid__log(t.loop, BRAID_LOG_WARN, "value %d", 42);
  assert_int_equal(logged, 1);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_owned_loop),
      cmocka_unit_test(test_post_from_threads),
      cmocka_unit_test(test_posts_run_at_close),
      cmocka_unit_test(test_work),
      cmocka_unit_test(test_work_cancel),
      cmocka_unit_test(test_flush_once_per_iteration),
      cmocka_unit_test(test_shared_read_buffer),
      cmocka_unit_test(test_chunk_pool_keeps_recent_peak),
      cmocka_unit_test(test_log_hook),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
