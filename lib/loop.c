#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "internal.h"

struct braid_work_s {
  uv_work_t req;
  braid_loop_t *loop;
  braid_work_fn work;
  braid_work_done_cb done;
  void *arg;
};

static void free_pool(void **pool) {
  while (*pool) {
    void *next = *(void **)*pool;
    braid__free(*pool);
    *pool = next;
  }
}

static void loop_free(braid_loop_t *loop) {
  free_pool(&loop->chunk_pool);
  free_pool(&loop->segs_pool);
  uv_mutex_destroy(&loop->post_mu);
  braid__free(loop->read_buf);
  braid__free(loop);
}

static void run_posts(braid_loop_t *loop) {
  uv_mutex_lock(&loop->post_mu);
  braid__post_t *p = loop->post_head;
  loop->post_head = loop->post_tail = NULL;
  uv_mutex_unlock(&loop->post_mu);
  while (p) {
    braid__post_t *next = p->next;
    p->fn(p->arg);
    braid__free(p);
    p = next;
  }
}

static void on_async(uv_async_t *h) {
  run_posts(h->data);
}

static void run_flushes(braid_loop_t *loop) {
  /* Detach the list first: a flush may queue more output (or another connection's), which
   * then waits for the next phase instead of looping here forever. */
  braid__node_t pending;
  braid__list_init(&pending);
  if (!braid__list_empty(&loop->flush_list)) {
    pending.next = loop->flush_list.next;
    pending.prev = loop->flush_list.prev;
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    braid__list_init(&loop->flush_list);
  }
  while (!braid__list_empty(&pending)) {
    braid__flush_t *f = BRAID__CONTAINER_OF(pending.next, braid__flush_t, node);
    braid__list_remove(&f->node);
    f->fn(f);
  }
  if (braid__list_empty(&loop->flush_list) && loop->flush_active) {
    uv_idle_stop(&loop->idle);
    uv_check_stop(&loop->check);
    loop->flush_active = false;
  }
}

static void on_idle(uv_idle_t *h) {
  run_flushes(h->data);
}

static void on_check(uv_check_t *h) {
  run_flushes(h->data);
}

void braid__loop_want_flush(braid_loop_t *loop, braid__flush_t *f) {
  if (braid__node_linked(&f->node))
    return;
  braid__list_push_back(&loop->flush_list, &f->node);
  if (!loop->flush_active) {
    /* Check runs right after the poll phase's callbacks (where most writes come from).
     * Idle runs before poll, catching writes made from timers, close callbacks or a flush
     * itself, and while it is active the poll does not block, so nothing waits for an
     * unrelated event. Both stay active only while something waits to be flushed: they keep
     * the loop alive exactly as long as there is output. */
    uv_idle_start(&loop->idle, on_idle);
    uv_check_start(&loop->check, on_check);
    loop->flush_active = true;
  }
}

void braid__loop_cancel_flush(braid__flush_t *f) {
  if (braid__node_linked(&f->node))
    braid__list_remove(&f->node);
}

void braid__loop_read_alloc(braid_loop_t *loop, uv_buf_t *buf) {
  /* libuv calls alloc then read for one stream at a time, so one buffer serves every
   * connection on the loop. The fallback covers a nested read should libuv ever do one. */
  if (!loop->read_buf_busy) {
    if (!loop->read_buf)
      loop->read_buf = braid__malloc(BRAID__READ_BUF_SIZE);
    if (loop->read_buf) {
      loop->read_buf_busy = true;
      *buf = uv_buf_init(loop->read_buf, BRAID__READ_BUF_SIZE);
      return;
    }
  }
  char *p = braid__malloc(BRAID__READ_BUF_SIZE);
  *buf = uv_buf_init(p, p ? BRAID__READ_BUF_SIZE : 0);
}

void braid__loop_read_release(braid_loop_t *loop, const uv_buf_t *buf) {
  if (buf->base && buf->base == loop->read_buf)
    loop->read_buf_busy = false;
  else
    braid__free(buf->base);
}

/* A free list of fixed-size blocks, linked through their first pointer, capped at max. */
static void *pool_get(void **pool, unsigned *len, size_t size) {
  void *p = *pool;
  if (p) {
    *pool = *(void **)p;
    (*len)--;
    return p;
  }
  return braid__malloc(size);
}

static void pool_put(void **pool, unsigned *len, unsigned max, void *p) {
  if (*len >= max) {
    braid__free(p);
    return;
  }
  *(void **)p = *pool;
  *pool = p;
  (*len)++;
}

/* Frees n blocks from the head of a pool; returns the bytes freed. */
static size_t pool_free_n(void **pool, unsigned *len, unsigned n, size_t size) {
  size_t freed = 0;
  while (n-- > 0 && *pool) {
    braid__free(pool_get(pool, len, size));
    freed += size;
  }
  return freed;
}

static unsigned pool_excess(unsigned len, unsigned peak, unsigned out, unsigned floor) {
  unsigned keep = peak > out ? peak - out : 0;
  if (keep < floor)
    keep = floor;
  return len > keep ? len - keep : 0;
}

void braid__loop_trim(braid_loop_t *loop) {
  size_t freed = pool_free_n(&loop->chunk_pool, &loop->chunk_pool_len,
                             pool_excess(loop->chunk_pool_len, loop->chunks_tick_peak,
                                         loop->chunks_out, BRAID__CHUNK_IDLE_FLOOR),
                             BRAID__CHUNK_SIZE);
  freed += pool_free_n(&loop->segs_pool, &loop->segs_pool_len,
                       pool_excess(loop->segs_pool_len, loop->segs_tick_peak, loop->segs_out,
                                   BRAID__SEGS_IDLE_FLOOR),
                       BRAID__SEGS_SIZE);
  loop->chunks_tick_peak = loop->chunks_out;
  loop->segs_tick_peak = loop->segs_out;
  loop->trimmed_bytes += freed;
#if defined(__GLIBC__)
  if (freed >= BRAID__TRIM_RETURN_BYTES)
    malloc_trim(0);
#endif
  if (loop->trim_active && loop->chunk_pool_len <= BRAID__CHUNK_IDLE_FLOOR &&
      loop->segs_pool_len <= BRAID__SEGS_IDLE_FLOOR) {
    uv_timer_stop(&loop->trim_timer);
    loop->trim_active = false;
  }
}

static void on_trim(uv_timer_t *t) {
  braid__loop_trim(t->data);
}

/* A pool grew past its idle floor: make sure the decay timer runs. */
static void want_trim(braid_loop_t *loop) {
  if (loop->trim_active || loop->closing)
    return;
  uv_timer_start(&loop->trim_timer, on_trim, loop->decay_ms, loop->decay_ms);
  loop->trim_active = true;
}

void braid__loop_set_decay_ms(braid_loop_t *loop, uint64_t ms) {
  loop->decay_ms = ms ? ms : 1;
  if (loop->trim_active) {
    uv_timer_stop(&loop->trim_timer);
    loop->trim_active = false;
    want_trim(loop);
  }
}

void *braid__loop_chunk_get(braid_loop_t *loop) {
  void *p = pool_get(&loop->chunk_pool, &loop->chunk_pool_len, BRAID__CHUNK_SIZE);
  if (p && ++loop->chunks_out > loop->chunks_peak)
    loop->chunks_peak = loop->chunks_out;
  if (loop->chunks_out > loop->chunks_tick_peak)
    loop->chunks_tick_peak = loop->chunks_out;
  return p;
}

void braid__loop_chunk_put(braid_loop_t *loop, void *chunk) {
  loop->chunks_out--;
  uint64_t now = braid__now(loop);
  if (now >= loop->chunks_window_end) {
    loop->chunks_peak_prev = loop->chunks_peak;
    loop->chunks_peak = loop->chunks_out;
    loop->chunks_window_end = now + BRAID__CHUNK_WINDOW_MS;
  }
  unsigned peak = loop->chunks_peak > loop->chunks_peak_prev ? loop->chunks_peak
                                                              : loop->chunks_peak_prev;
  unsigned keep = peak - loop->chunks_out; /* peak >= out: out only falls since the roll */
  if (keep < BRAID__CHUNK_POOL_MAX)
    keep = BRAID__CHUNK_POOL_MAX;
  /* Over what to keep (the peak aged out): free one more, so the pool shrinks as it is used. */
  if (loop->chunk_pool_len > keep)
    braid__free(pool_get(&loop->chunk_pool, &loop->chunk_pool_len, BRAID__CHUNK_SIZE));
  pool_put(&loop->chunk_pool, &loop->chunk_pool_len, keep, chunk);
  if (loop->chunk_pool_len > BRAID__CHUNK_IDLE_FLOOR)
    want_trim(loop);
}

void *braid__loop_segs_get(braid_loop_t *loop) {
  void *p = pool_get(&loop->segs_pool, &loop->segs_pool_len, BRAID__SEGS_SIZE);
  if (p && ++loop->segs_out > loop->segs_tick_peak)
    loop->segs_tick_peak = loop->segs_out;
  return p;
}

void braid__loop_segs_put(braid_loop_t *loop, void *segs) {
  loop->segs_out--;
  pool_put(&loop->segs_pool, &loop->segs_pool_len, BRAID__SEGS_POOL_MAX, segs);
  if (loop->segs_pool_len > BRAID__SEGS_IDLE_FLOOR)
    want_trim(loop);
}

void braid__log(braid_loop_t *loop, braid_log_level_t level, const char *fmt, ...) {
  if (!loop->log_fn || level < loop->log_min)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  loop->log_fn(loop, level, msg, loop->log_arg);
}

/* A peer that resets its connection makes the next write to it raise SIGPIPE, whose default
 * action ends the process. braid's own writes pass MSG_NOSIGNAL (conn.c), but what the
 * kernel had no room for is written later by libuv's uv_write, with writev(), which cannot
 * pass it. So, once per process, the first braid loop ignores SIGPIPE, and only if its
 * disposition is still the default: a program that installed a handler or ignores it
 * already keeps what it chose; one that wants the default back restores it after its first
 * braid_loop_new() (loop.h). nginx, Redis and libuv-based servers ignore SIGPIPE the same
 * way; EPIPE then comes back as an error, which braid reports on the connection. */
void braid__sigpipe_ignore_if_default(void) {
#ifdef SIGPIPE
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0)
    return;
  if ((sa.sa_flags & SA_SIGINFO) || sa.sa_handler != SIG_DFL)
    return;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
#endif
}

static uv_once_t sigpipe_once = UV_ONCE_INIT;

int braid_loop_new(braid_loop_t **out, uv_loop_t *uv) {
  if (!out)
    return BRAID_EINVAL;
  uv_once(&sigpipe_once, braid__sigpipe_ignore_if_default);
  braid_loop_t *loop = braid__calloc(1, sizeof(*loop));
  if (!loop)
    return BRAID_ENOMEM;
  int rc;
  if (uv) {
    loop->uv = uv;
  } else {
    rc = uv_loop_init(&loop->owned_uv);
    if (rc) {
      braid__free(loop);
      return rc;
    }
    loop->uv = &loop->owned_uv;
    loop->owns_uv = true;
  }
  rc = uv_mutex_init(&loop->post_mu);
  if (rc)
    goto fail_mutex;
  rc = uv_async_init(loop->uv, &loop->async, on_async);
  if (rc)
    goto fail_async;
  loop->async.data = loop;
  /* Posts must not keep the loop alive on their own; the user's handles do that. */
  uv_unref((uv_handle_t *)&loop->async);
  uv_idle_init(loop->uv, &loop->idle);
  uv_check_init(loop->uv, &loop->check);
  uv_timer_init(loop->uv, &loop->trim_timer);
  uv_unref((uv_handle_t *)&loop->trim_timer); /* decay never keeps the loop alive */
  loop->idle.data = loop->check.data = loop->trim_timer.data = loop;
  loop->decay_ms = BRAID__POOL_DECAY_MS;
  loop->internal_handles = 4;
  braid__list_init(&loop->flush_list);
  loop->log_min = BRAID_LOG_INFO;
  *out = loop;
  return 0;

fail_async:
  uv_mutex_destroy(&loop->post_mu);
fail_mutex:
  if (loop->owns_uv)
    uv_loop_close(&loop->owned_uv);
  braid__free(loop);
  return rc;
}

uv_loop_t *braid_loop_uv(const braid_loop_t *loop) {
  return loop->uv;
}

int braid_loop_run(braid_loop_t *loop, uv_run_mode mode) {
  return uv_run(loop->uv, mode);
}

uint64_t braid_loop_now_ms(const braid_loop_t *loop) {
  return uv_now(loop->uv);
}

void braid_loop_set_data(braid_loop_t *loop, void *data) {
  loop->data = data;
}

void *braid_loop_get_data(const braid_loop_t *loop) {
  return loop->data;
}

void braid_loop_set_log(braid_loop_t *loop, braid_log_fn fn, braid_log_level_t min_level,
                        void *arg) {
  loop->log_fn = fn;
  loop->log_min = min_level;
  loop->log_arg = arg;
}

int braid_loop_post(braid_loop_t *loop, braid_post_fn fn, void *arg) {
  if (!loop || !fn)
    return BRAID_EINVAL;
  braid__post_t *p = braid__malloc(sizeof(*p));
  if (!p)
    return BRAID_ENOMEM;
  p->next = NULL;
  p->fn = fn;
  p->arg = arg;
  uv_mutex_lock(&loop->post_mu);
  if (loop->post_closed) {
    uv_mutex_unlock(&loop->post_mu);
    braid__free(p);
    return BRAID_ECLOSED;
  }
  if (loop->post_tail)
    loop->post_tail->next = p;
  else
    loop->post_head = p;
  loop->post_tail = p;
  /* Send under the lock: braid_loop_close() takes it before closing the async handle. */
  uv_async_send(&loop->async);
  uv_mutex_unlock(&loop->post_mu);
  return 0;
}

static void work_run(uv_work_t *req) {
  braid_work_t *w = BRAID__CONTAINER_OF(req, braid_work_t, req);
  w->work(w->arg);
}

static void work_after(uv_work_t *req, int status) {
  braid_work_t *w = BRAID__CONTAINER_OF(req, braid_work_t, req);
  braid_loop_t *loop = w->loop;
  braid_work_done_cb done = w->done;
  void *arg = w->arg;
  braid__free(w);
  braid__loop_unref(loop);
  done(loop, status == UV_ECANCELED ? BRAID_ECANCELED : status, arg);
}

int braid_work(braid_work_t **id, braid_loop_t *loop, braid_work_fn work, braid_work_done_cb done,
               void *arg) {
  if (!loop || !work || !done)
    return BRAID_EINVAL;
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_work_t *w = braid__malloc(sizeof(*w));
  if (!w)
    return BRAID_ENOMEM;
  w->loop = loop;
  w->work = work;
  w->done = done;
  w->arg = arg;
  int rc = uv_queue_work(loop->uv, &w->req, work_run, work_after);
  if (rc) {
    braid__free(w);
    return rc;
  }
  braid__loop_ref(loop);
  if (id)
    *id = w;
  return 0;
}

int braid_work_cancel(braid_work_t *work) {
  return uv_cancel((uv_req_t *)&work->req) == 0 ? 0 : BRAID_EBUSY;
}

static void on_internal_closed(uv_handle_t *h) {
  braid_loop_t *loop = h->data;
  if (--loop->internal_handles == 0 && !loop->owns_uv)
    loop_free(loop);
}

static void close_stray(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int braid_loop_close(braid_loop_t *loop) {
  if (!loop)
    return BRAID_EINVAL;
  if (loop->active > 0 || loop->closing)
    return loop->closing ? BRAID_ECLOSED : BRAID_EBUSY;
  loop->closing = true;
  uv_mutex_lock(&loop->post_mu);
  loop->post_closed = true;
  uv_mutex_unlock(&loop->post_mu);
  run_posts(loop);
  /* The loop's resolver: its pending lookups belonged to connects, all finished by now
   * (active == 0); queries still on the wire for them are abandoned. */
  if (loop->resolver_close) {
    loop->resolver_close(loop->resolver);
    loop->resolver_close = NULL;
    loop->resolver = NULL;
  }
  loop->flush_active = false;
  uv_close((uv_handle_t *)&loop->async, on_internal_closed);
  uv_close((uv_handle_t *)&loop->idle, on_internal_closed);
  uv_close((uv_handle_t *)&loop->check, on_internal_closed);
  uv_close((uv_handle_t *)&loop->trim_timer, on_internal_closed);
  loop->trim_active = false;
  if (!loop->owns_uv)
    return 0;
  /* An owned loop may still carry the caller's own handles (a signal watcher, a timer):
   * close them too, or uv_run() below would never return. */
  uv_walk(loop->uv, close_stray, NULL);
  uv_run(loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(loop->uv);
  loop_free(loop);
  return 0;
}
