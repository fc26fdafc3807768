/* Test support: bounded loop runs and leak checks shared by braid's tests. */
#ifndef BRAID_TEST_SUPPORT_H
#define BRAID_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "braid.h"

/* A test's loops: a libuv loop the test owns, with a braid loop borrowing it, so the test can
 * prove at the end that braid left no handle behind (uv_loop_close() == 0). */
typedef struct bt_loop_s {
  uv_loop_t uv;
  braid_loop_t *loop;
} bt_loop_t;

/* Initialises t (fails the test on error). */
void bt_loop_init(bt_loop_t *t);

/* Runs the loop until it has nothing left to do, or fails the test after timeout_ms. */
void bt_run(bt_loop_t *t, uint64_t timeout_ms);

/* Runs the loop until *flag becomes nonzero, or fails the test after timeout_ms. */
void bt_run_until(bt_loop_t *t, const volatile int *flag, uint64_t timeout_ms);

/* Runs the loop for ms milliseconds (a timer wakes it), whatever else happens. */
void bt_run_for(bt_loop_t *t, uint64_t ms);

/* Closes the braid loop, runs the libuv loop dry and asserts uv_loop_close() == 0. */
void bt_loop_done(bt_loop_t *t);

/* Lowers RLIMIT_NOFILE's soft limit to n; returns the old soft limit. */
uint64_t bt_set_nofile(uint64_t n);

#endif
