/* braid: the loop context.
 *
 * Every braid handle (connection, server, pool, cache, ...) belongs to one braid_loop_t, and
 * must be used only from the thread that runs that loop. A braid loop wraps a libuv loop:
 * one the caller owns (braid adds a few handles to it and never runs it behind your back),
 * or one braid creates and owns. It holds what braid shares per loop: the read buffer every
 * connection reads into, the once-per-iteration write flush, the thread-safe post queue, and
 * the log hook.
 *
 * The one thread-safe entry point is braid_loop_post(). Blocking work goes to the libuv
 * threadpool through braid_work(), and completes back on the loop (the
 * concurrent.futures of braid). */
#ifndef BRAID_LOOP_H
#define BRAID_LOOP_H

#include "common.h"

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_loop_s braid_loop_t;

/* A function posted to a loop; runs on the loop's thread with the argument given to post. */
typedef void (*braid_post_fn)(void *arg);

/* Blocking work; runs on a libuv threadpool thread. It must not touch braid handles. */
typedef void (*braid_work_fn)(void *arg);

/* Completion of braid_work(); runs on the loop's thread exactly once. status is 0 when the
 * work function ran, or BRAID_ECANCELED if braid_work_cancel() stopped it before it began
 * (the work function then never ran). */
typedef void (*braid_work_done_cb)(braid_loop_t *loop, int status, void *arg);

/* Severity of a log message. */
typedef enum { BRAID_LOG_DEBUG, BRAID_LOG_INFO, BRAID_LOG_WARN, BRAID_LOG_ERROR } braid_log_level_t;

/* Receives braid's diagnostics for one loop (e.g. an accept() that failed with EMFILE). The
 * message is valid during the call only. Called on the loop's thread. */
typedef void (*braid_log_fn)(braid_loop_t *loop, braid_log_level_t level, const char *message,
                             void *arg);

/* Creates a braid loop. With uv == NULL braid creates a libuv loop and owns it (closed by
 * braid_loop_close()); otherwise braid borrows uv, which must outlive the braid loop.
 * Returns 0 and the loop in *out, or BRAID_EINVAL (out is NULL), BRAID_ENOMEM, or a libuv
 * error; on error *out is untouched.
 *
 * SIGPIPE: the first call in a process sets SIGPIPE to SIG_IGN if, and only if, its
 * disposition is still SIG_DFL (a handler or SIG_IGN the program set is left alone), so a
 * peer that resets a connection cannot kill the process: the failed write returns EPIPE,
 * which ends that connection only. braid's own writes pass MSG_NOSIGNAL anyway, but data the
 * kernel had no room for is written later by libuv's uv_write(), whose writev() cannot pass
 * it. nginx, Redis and libuv-based servers ignore SIGPIPE the same way. A program that needs
 * the default action (a filter that should die when its output pipe closes) restores it
 * after its first braid_loop_new() (braid does not set it again); it then relies on
 * MSG_NOSIGNAL and on libuv meeting ECONNRESET before EPIPE, which covers every case known
 * to us but is not guaranteed by the kernel's interface. */
BRAID_EXTERN int braid_loop_new(braid_loop_t **out, uv_loop_t *uv);

/* Returns the libuv loop under loop (borrowed or owned). Never NULL for a valid loop. */
BRAID_EXTERN uv_loop_t *braid_loop_uv(const braid_loop_t *loop);

/* Runs the libuv loop, as uv_run(braid_loop_uv(loop), mode). Returns uv_run's result. */
BRAID_EXTERN int braid_loop_run(braid_loop_t *loop, uv_run_mode mode);

/* Posts fn(arg) to run on the loop's thread, soon. Thread-safe: the one braid call that
 * may be made from any thread. Posts run in the order they were made (per posting
 * thread). Returns 0 (fn will run exactly once), BRAID_EINVAL (loop or fn NULL),
 * BRAID_ECLOSED (the loop is closing: fn will not run), or BRAID_ENOMEM. Posts accepted
 * before braid_loop_close() still run, from inside braid_loop_close(). Must not be called
 * once braid_loop_close() has returned 0. */
BRAID_EXTERN int braid_loop_post(braid_loop_t *loop, braid_post_fn fn, void *arg);

/* Runs work(arg) on the libuv threadpool, then done(loop, status, arg) on the loop's thread.
 * Returns 0 (done will be called exactly once, never from inside this call), BRAID_EINVAL,
 * BRAID_ECLOSED or BRAID_ENOMEM (done will not be called). If id is not NULL it receives a
 * handle for braid_work_cancel(), valid until done runs (the optional out-pointer comes
 * first, as in every call that hands back a handle). */
typedef struct braid_work_s braid_work_t;
BRAID_EXTERN int braid_work(braid_work_t **id, braid_loop_t *loop, braid_work_fn work,
                            braid_work_done_cb done, void *arg);

/* Tries to cancel work that has not started. Returns 0 (done will get BRAID_ECANCELED) or
 * BRAID_EBUSY (the work already runs or ran; done will get 0). */
BRAID_EXTERN int braid_work_cancel(braid_work_t *work);

/* Sets the loop's log hook (NULL: discard, the default). min_level filters lower levels. */
BRAID_EXTERN void braid_loop_set_log(braid_loop_t *loop, braid_log_fn fn, braid_log_level_t min_level,
                                     void *arg);

/* The loop's user data (docs/API.md rule 3): braid never reads it. NULL at first. Like every
 * braid_loop_* call but braid_loop_post(), from the loop's thread only. */
BRAID_EXTERN void braid_loop_set_data(braid_loop_t *loop, void *data);
BRAID_EXTERN void *braid_loop_get_data(const braid_loop_t *loop);

/* Returns the loop's cached time in milliseconds (uv_now). */
BRAID_EXTERN uint64_t braid_loop_now_ms(const braid_loop_t *loop);

/* Closes the braid loop.
 * Every braid handle on it (connections, servers, pending connects, pending work, ...) must
 * be closed first, and their close callbacks must have run; otherwise returns BRAID_EBUSY and
 * nothing changes. Runs pending posts, then closes braid's own libuv handles.
 * - Owned loop: braid runs the libuv loop until its handles are closed, closes the libuv loop
 *   and frees everything before returning. If the caller left other libuv handles open on
 *   it, they are closed with uv_close() first.
 * - Borrowed loop: the caller's next uv_run() finishes the close and frees the braid loop;
 *   uv_loop_close() on the caller's loop then returns 0.
 * Returns 0, BRAID_EINVAL (loop NULL) or BRAID_EBUSY. The loop must not be used after 0. */
BRAID_EXTERN int braid_loop_close(braid_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif
