/* Test support for the memcache tests: memcached children on loopback ephemeral ports, and
 * synchronous wrappers around the client's calls. Header-only (static functions): included
 * by test_memcache.c and test_memcache_memo.c. */
#ifndef BRAID_TEST_MC_SUPPORT_H
#define BRAID_TEST_MC_SUPPORT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"

typedef struct mcd_s {
  uv_process_t proc;
  int spawned, exited, closed;
  int port;
  char port_str[16];
} mcd_t;

#define MCD_MAX 8
/* Every memcached started, killed by the teardown if a test fails before reaping it. */
static int mcd_pids[MCD_MAX];

static inline void mcd_forget(int pid) {
  for (int i = 0; i < MCD_MAX; i++)
    if (mcd_pids[i] == pid)
      mcd_pids[i] = 0;
}

static inline void mcd_remember(int pid) {
  for (int i = 0; i < MCD_MAX; i++)
    if (mcd_pids[i] == 0) {
      mcd_pids[i] = pid;
      return;
    }
}

static inline int mcd_kill_leftovers(void **state) {
  (void)state;
  for (int i = 0; i < MCD_MAX; i++)
    if (mcd_pids[i] > 0) {
      kill(mcd_pids[i], SIGCONT);
      kill(mcd_pids[i], SIGKILL);
      mcd_pids[i] = 0;
    }
  return 0;
}

static inline void on_mcd_exit(uv_process_t *p, int64_t status, int term_signal) {
  (void)status;
  (void)term_signal;
  mcd_t *m = p->data;
  m->exited = 1;
  mcd_forget(p->pid);
}

/* An ephemeral port that was free a moment ago (bind port 0, read it, close). */
static inline int mcd_free_port(void) {
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

/* 1 when something accepts TCP connections on 127.0.0.1:port. */
static inline int mcd_port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

/* 1 when memcached can be run here. */
static inline int mcd_available(void) {
  return system("memcached -h >/dev/null 2>&1") == 0;
}

/* Starts memcached on port (0: a free ephemeral port) and waits until it accepts. Returns 0,
 * or -1 when it exited first (its port was taken). extra: more arguments (NULL-ended). */
static inline int mcd_start_args(bt_loop_t *t, mcd_t *m, int port, const char *const *extra) {
  memset(m, 0, sizeof(*m));
  m->port = port ? port : mcd_free_port();
  snprintf(m->port_str, sizeof(m->port_str), "%d", m->port);
  const char *args[24] = {"memcached", "-l", "127.0.0.1", "-p", m->port_str, "-U", "0",
                          "-m", "64", "-t", "1", "-c", "1024"};
  int n = 13;
  if (getuid() == 0) {
    args[n++] = "-u";
    args[n++] = "root";
  }
  for (int i = 0; extra && extra[i] && n < 22; i++)
    args[n++] = extra[i];
  args[n] = NULL;
  uv_stdio_container_t stdio[3] = {{UV_IGNORE, {0}}, {UV_IGNORE, {0}}, {UV_INHERIT_FD, {0}}};
  stdio[2].data.fd = 2;
  uv_process_options_t po = {0};
  po.file = "memcached";
  po.args = (char **)args;
  po.exit_cb = on_mcd_exit;
  po.stdio = stdio;
  po.stdio_count = 3;
  m->proc.data = m;
  int rc = uv_spawn(&t->uv, &m->proc, &po);
  if (rc != 0)
    fail_msg("cannot start memcached: %s", uv_strerror(rc));
  m->spawned = 1;
  mcd_remember(m->proc.pid);
  for (int i = 0; i < 500 && !m->exited; i++) {
    if (mcd_port_open(m->port))
      return 0;
    bt_run_for(t, 10);
  }
  if (!m->exited)
    fail_msg("memcached on port %d never accepted", m->port);
  return -1;
}

static inline void mcd_start(bt_loop_t *t, mcd_t *m) {
  for (int attempt = 0; attempt < 5; attempt++) {
    if (mcd_start_args(t, m, 0, NULL) == 0)
      return;
    uv_close((uv_handle_t *)&m->proc, NULL);
    bt_run_for(t, 10);
  }
  fail_msg("memcached exited before serving, 5 times");
}

static inline void on_mcd_closed(uv_handle_t *h) {
  ((mcd_t *)h->data)->closed = 1;
}

/* Kills memcached (SIGKILL) and reaps it, bounded in time. */
static inline void mcd_stop(bt_loop_t *t, mcd_t *m) {
  if (!m->spawned || m->closed)
    return;
  if (!m->exited) {
    uv_process_kill(&m->proc, SIGCONT);
    uv_process_kill(&m->proc, SIGKILL);
  }
  bt_run_until(t, &m->exited, 5000);
  uv_close((uv_handle_t *)&m->proc, on_mcd_closed);
  bt_run_until(t, &m->closed, 5000);
}

/* ---- synchronous calls ------------------------------------------------------------------ */

typedef struct got_s {
  int done;
  int status;
  braid_memcache_result_t r;
  char value[8192];
  size_t value_len;
  char key[400];
  char opaque[40];
} got_t;

static inline void on_got(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                   size_t count, void *arg) {
  (void)mc;
  got_t *g = arg;
  assert_int_equal(count, 1);
  assert_int_equal(g->done, 0);
  g->done = 1;
  g->status = status;
  g->r = *res;
  g->value_len = res->value_len;
  if (res->value_len && res->value_len <= sizeof(g->value))
    memcpy(g->value, res->value, res->value_len);
  if (res->key_len && res->key_len < sizeof(g->key))
    memcpy(g->key, res->key, res->key_len);
  if (res->opaque_len && res->opaque_len < sizeof(g->opaque))
    memcpy(g->opaque, res->opaque, res->opaque_len);
  g->r.value = NULL;
  g->r.key = NULL;
  g->r.opaque = NULL;
}

static inline void mc_do(bt_loop_t *t, braid_memcache_t *mc, const braid_memcache_req_t *r, got_t *g) {
  memset(g, 0, sizeof(*g));
  int rc = braid_memcache_request(mc, r, 0, on_got, g);
  if (rc)
    fail_msg("braid_memcache_request: %s", braid_err_name(rc));
  bt_run_until(t, &g->done, 10000);
}

static inline void mc_set_sync(bt_loop_t *t, braid_memcache_t *mc, const char *k, const char *v) {
  got_t g = {0};
  assert_int_equal(braid_memcache_set(mc, k, strlen(k), v, strlen(v), 0, 0, on_got, &g), 0);
  bt_run_until(t, &g.done, 10000);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.r.code, BRAID_MEMCACHE_HD);
}

static inline void mc_get_sync(bt_loop_t *t, braid_memcache_t *mc, const char *k, got_t *g) {
  memset(g, 0, sizeof(*g));
  assert_int_equal(braid_memcache_get(mc, k, strlen(k), on_got, g), 0);
  bt_run_until(t, &g->done, 10000);
}

static int mc_closed_flag;
static inline void on_mc_closed(braid_memcache_t *mc, int status, void *arg) {
  (void)mc;
  (void)status;
  (void)arg;
  mc_closed_flag = 1;
}

static inline void mc_close_sync(bt_loop_t *t, braid_memcache_t *mc) {
  mc_closed_flag = 0;
  assert_int_equal(braid_memcache_close(mc, on_mc_closed, NULL), 0);
  bt_run_until(t, &mc_closed_flag, 10000);
}

#endif
