/* memo_fleet: one process of a fleet that memoizes a costly function through two tiers, its
 * own in-process cache (L1) and memcached servers shared by the whole fleet (L2).
 *
 *   memo_fleet --id N --servers PORT,PORT,... --keys K --round1-at MS --round2-at MS
 *              [--load-log FILE]
 *
 * At wall-clock time round1-at (ms since the epoch) it asks for keys "r1:0".."r1:K-1", all
 * at once; at round2-at for "r2:0".."r2:K-1". Every run of the costly function appends
 * "<round-key> <id>" to the load log, so the driver (run_fleet.sh) can count loads per key
 * across the fleet: 1, not one per process, because memcached's meta protocol hands exactly
 * one process the "win" for a missing key and tells the others to wait for its value. After
 * each round it prints one line: answered, errors, and its share of loads, hits and waits.
 * Between the rounds the driver kills one memcached: round 2 still answers everything.
 *
 * Read it top to bottom: the costly function, the calls, then main. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "braid.h"

static int id;
static int nkeys;
static int load_log_fd = -1;

/* ---- the costly function: runs on the threadpool, once per key per fleet ------------------ */

static int compute(const void *key, size_t key_len, braid_blob_t **value, void *arg) {
  (void)arg;
  usleep(100 * 1000); /* the expensive part: 100 ms of "work" */
  char line[128];
  int n = snprintf(line, sizeof(line), "%.*s %d\n", (int)key_len, (const char *)key, id);
  if (load_log_fd >= 0 && write(load_log_fd, line, (size_t)n) != n)
    perror("load log");
  char v[128];
  int vn = snprintf(v, sizeof(v), "result of %.*s", (int)key_len, (const char *)key);
  return braid_blob_copy(value, v, (size_t)vn);
}

/* ---- one round: every key at once --------------------------------------------------------- */

typedef struct round_s {
  int round;
  int answered, errors, pending;
  braid_memcache_memo_t *memo;
} round_t;

static void check_value(round_t *r, const char *key, braid_blob_t *v) {
  char want[128];
  int n = snprintf(want, sizeof(want), "result of %s", key);
  if (braid_blob_len(v) != (size_t)n || memcmp(braid_blob_data(v), want, (size_t)n) != 0) {
    fprintf(stderr, "proc %d: wrong value for %s\n", id, key);
    r->errors++;
  } else {
    r->answered++;
  }
}

typedef struct ask_s {
  round_t *r;
  char key[32];
} ask_t;

static void on_value(braid_memcache_memo_t *memo, int status, braid_blob_t *value, void *arg) {
  (void)memo;
  ask_t *a = arg;
  if (status == 0) {
    check_value(a->r, a->key, value);
  } else {
    fprintf(stderr, "proc %d: %s: %s\n", id, a->key, braid_strerror(status));
    a->r->errors++;
  }
  a->r->pending--;
  free(a);
}

static const braid_memcache_loader_t loader = {BRAID_CACHE_LOAD_WORK, compute, NULL, NULL};

static void start_round(round_t *r) {
  for (int i = 0; i < nkeys; i++) {
    ask_t *a = calloc(1, sizeof(*a));
    a->r = r;
    int kn = snprintf(a->key, sizeof(a->key), "r%d:%d", r->round, i);
    braid_blob_t *v = NULL;
    int rc = braid_memcache_memo(r->memo, a->key, (size_t)kn, &loader, &v, on_value, a);
    if (rc == BRAID_PENDING) {
      r->pending++;
      continue;
    }
    if (rc == 0) {
      check_value(r, a->key, v);
      braid_blob_unref(v);
    } else {
      fprintf(stderr, "proc %d: %s: %s\n", id, a->key, braid_strerror(rc));
      r->errors++;
    }
    free(a);
  }
}

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* A health check: one no-op ("mn") per server. A server that does not answer is marked dead
 * (dead_after_failures is 1 here), so the round's keys go to the live ones from the start. */
static int checks_pending;
static void on_noop(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                    size_t count, void *arg) {
  (void)mc, (void)res, (void)count, (void)arg;
  if (status != 0)
    printf("proc %d: server %d did not answer (%s): its keys go to the others\n", id,
           res->server, braid_err_name(status));
  checks_pending--;
}

static void health_check(uv_loop_t *uv, braid_memcache_t *mc, int nservers) {
  for (int s = 0; s < nservers; s++) {
    braid_memcache_req_t req;
    braid_memcache_req_init(&req);
    req.cmd = BRAID_MEMCACHE_MN;
    req.server = s;
    if (braid_memcache_request(mc, &req, 0, on_noop, NULL) == 0)
      checks_pending++;
  }
  while (checks_pending > 0)
    uv_run(uv, UV_RUN_ONCE);
}

/* Runs the loop until the wall clock reaches at_ms, then runs round r to completion. */
static void run_round(uv_loop_t *uv, round_t *r, uint64_t at_ms, braid_memcache_t *mc,
                      int nservers) {
  while (wall_ms() + 50 < at_ms) {
    uint64_t left = at_ms - 50 - wall_ms();
    usleep((useconds_t)(left > 5 ? 5000 : left * 1000));
    uv_run(uv, UV_RUN_NOWAIT);
  }
  health_check(uv, mc, nservers);
  while (wall_ms() < at_ms)
    usleep(1000);
  start_round(r);
  while (r->pending > 0)
    uv_run(uv, UV_RUN_ONCE);
  braid_memcache_memo_stats_t st;
  braid_memcache_memo_stats(r->memo, &st);
  printf("proc %d round %d: answered %d/%d, errors %d; so far: loads %llu, wins %llu, "
         "waits %llu, l2 hits %llu, l2 errors %llu\n",
         id, r->round, r->answered, nkeys, r->errors, (unsigned long long)st.loads,
         (unsigned long long)st.wins, (unsigned long long)st.waits,
         (unsigned long long)st.l2_hits, (unsigned long long)st.l2_errors);
  fflush(stdout);
}

static int closed;
static void on_memo_closed(braid_memcache_memo_t *m, int status, void *arg) {
  (void)m, (void)status, (void)arg;
  closed++;
}
static void on_client_closed(braid_memcache_t *mc, int status, void *arg) {
  (void)mc, (void)status, (void)arg;
  closed++;
}

int main(int argc, char **argv) {
  const char *servers = NULL, *log_path = NULL;
  uint64_t at1 = 0, at2 = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--id"))
      id = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--servers"))
      servers = argv[i + 1];
    else if (!strcmp(argv[i], "--keys"))
      nkeys = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--round1-at"))
      at1 = strtoull(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--round2-at"))
      at2 = strtoull(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--load-log"))
      log_path = argv[i + 1];
  }
  if (!servers || nkeys < 1 || nkeys > 100000 || !at1 || at2 <= at1) {
    fprintf(stderr, "usage: memo_fleet --id N --servers PORT,... --keys K --round1-at MS "
                    "--round2-at MS [--load-log FILE]\n");
    return 2;
  }
  if (log_path && (load_log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0644)) < 0) {
    perror(log_path);
    return 1;
  }
  uv_loop_t uv;
  uv_loop_init(&uv);
  braid_loop_t *loop;
  braid_loop_new(&loop, &uv);

  /* The client: a server dead after 1 failure is skipped for 1 s, then probed. */
  braid_memcache_opts_t o;
  braid_memcache_opts_init(&o);
  o.dead_after_failures = 1;
  o.dead_retry_ms = 1000;
  braid_memcache_t *mc;
  if (braid_memcache_new(&mc, loop, &o) != 0)
    return 1;
  int nservers = 0;
  for (const char *p = servers; *p;) {
    if (braid_memcache_add_server(mc, "127.0.0.1", atoi(p), 1, NULL) != 0) {
      fprintf(stderr, "bad server port in '%s'\n", servers);
      return 2;
    }
    nservers++;
    p = strchr(p, ',');
    if (!p)
      break;
    p++;
  }
  /* The memo: values fresh 60 s in memcached, kept 10 s in this process. */
  braid_memcache_memo_opts_t mo;
  braid_memcache_memo_opts_init(&mo);
  mo.l1.default_ttl_ms = 10000;
  braid_memcache_memo_t *memo;
  if (braid_memcache_memo_new(&memo, mc, &mo) != 0)
    return 1;

  round_t r1 = {1, 0, 0, 0, memo}, r2 = {2, 0, 0, 0, memo};
  run_round(&uv, &r1, at1, mc, nservers);
  run_round(&uv, &r2, at2, mc, nservers);

  braid_memcache_memo_close(memo, on_memo_closed, NULL);
  while (closed < 1)
    uv_run(&uv, UV_RUN_ONCE);
  braid_memcache_close(mc, on_client_closed, NULL);
  while (closed < 2)
    uv_run(&uv, UV_RUN_ONCE);
  braid_loop_close(loop);
  uv_run(&uv, UV_RUN_DEFAULT);
  uv_loop_close(&uv);
  if (load_log_fd >= 0)
    close(load_log_fd);
  return r1.errors || r2.errors ? 1 : 0;
}
