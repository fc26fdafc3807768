/* Benchmark: connection pools. 64-byte requests to a braid rpc echo server running in a
 * separate process (pinned to CPU 0; this driver pins itself to CPU 1), in one run:
 *   connect-per-request   a new connection for every request (connect, call, close)
 *   pooled N              a pool of N connections, one request per connection at a time
 *   pooled+pipelined      a pool of up to 4 connections, up to 1024 requests on each
 *   pooled+leased+batched one channel leased from a pool (braid_pool_acquire) with a
 *                         braid_batcher_t on it: a loop iteration's requests share a frame
 * each with 1 and 64 concurrent callers (closed loop: a caller sends its next request when
 * the previous one completed). Scenarios run interleaved in rounds (A B C ... A B C ...) and
 * the table shows the median, min and max requests/s over the rounds. After each pooled run
 * the pool is closed and the TIME_WAIT sockets it left (on the server port, counted with
 * `ss -tan state time-wait`) are compared with its pool size.
 *
 * Usage: bench_pool [rounds] [ms_per_run]   (defaults 5 and 300)
 * Only public headers: this is also an example of the pool API. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "braid.h"

/* ---- the server process --------------------------------------------------------------- */

static void srv_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                        void *arg) {
  (void)rpc;
  (void)arg;
  braid_rpc_respond(req, data, len);
}

static void srv_connection(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  (void)arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  static const braid_rpc_callbacks_t cbs = {.on_request = srv_request};
  braid_rpc_t *rpc;
  if (braid_rpc_server(&rpc, conn, &o, &cbs, NULL))
    braid_conn_close(conn);
}

static int run_server(void) {
  braid_loop_t *loop;
  braid_server_t *s1, *s2;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.sockopts.backlog = 4096;
  if (braid_loop_new(&loop, NULL) || braid_server_new(&s1, loop, &so, srv_connection, NULL) ||
      braid_server_new(&s2, loop, &so, srv_connection, NULL) ||
      braid_server_listen(s1, "127.0.0.1", 0) || braid_server_listen(s2, "127.0.0.1", 0)) {
    fprintf(stderr, "server: setup failed\n");
    return 1;
  }
  printf("%d %d\n", braid_server_port(s1), braid_server_port(s2));
  fflush(stdout);
  braid_loop_run(loop, UV_RUN_DEFAULT); /* until the driver kills it */
  return 0;
}

/* ---- the driver ---------------------------------------------------------------------------- */

enum { KIND_CONNECT, KIND_POOL, KIND_BATCH };

typedef struct scenario_s {
  const char *name;
  int kind;
  unsigned conns;        /* pool size (max_total) */
  unsigned max_inflight; /* per connection */
  int callers;
  double rps[16];
  int tw_max; /* most TIME_WAIT sockets one run left behind */
  uint64_t creates;
} scenario_t;

typedef struct run_s {
  braid_loop_t *loop;
  braid_pool_t *pool;
  int port;
  uint64_t end_ns, measure_from_ns;
  uint64_t done;       /* completions inside the measured window */
  int live;            /* callers still going */
  int errors;
  int pool_closed;
  braid_pool_lease_t *lease; /* KIND_BATCH: the leased channel the batcher runs on */
  braid_rpc_t *rpc;
  braid_batcher_t *batcher;
  int acquired;
} run_t;

static uint8_t payload[64];

static void caller_next(run_t *r);

static void on_pooled(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res, void *arg) {
  (void)rpc;
  run_t *r = arg;
  uint64_t now = uv_hrtime();
  if (status != 0)
    r->errors++;
  else if (now >= r->measure_from_ns && now < r->end_ns)
    r->done++;
  if (now >= r->end_ns) {
    r->live--;
    return;
  }
  caller_next(r);
}

static void caller_next(run_t *r) {
  int rc = r->batcher ? braid_batcher_call(r->batcher, payload, sizeof(payload), on_pooled, r)
                      : braid_pool_call(r->pool, payload, sizeof(payload),
                                        BRAID_POOL_IDEMPOTENT, 0, on_pooled, r);
  if (rc) {
    r->errors++;
    r->live--;
  }
}

/* connect-per-request: one caller is a chain connect -> call -> close -> connect ... */
typedef struct cpr_s {
  run_t *r;
  braid_rpc_t *rpc;
} cpr_t;

static void cpr_start(cpr_t *c);

static void cpr_closed(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  cpr_t *c = arg;
  if (uv_hrtime() >= c->r->end_ns) {
    c->r->live--;
    free(c);
    return;
  }
  cpr_start(c);
}

static void cpr_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res, void *arg) {
  cpr_t *c = arg;
  uint64_t now = uv_hrtime();
  if (status != 0)
    c->r->errors++;
  else if (now >= c->r->measure_from_ns && now < c->r->end_ns)
    c->r->done++;
  braid_rpc_close(rpc);
}

static void cpr_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  cpr_t *c = arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  braid_rpc_callbacks_t cbs = {.on_close = cpr_closed};
  if (status || braid_rpc_client(&c->rpc, conn, &o, &cbs, c)) {
    if (!status)
      braid_conn_close(conn);
    c->r->errors++;
    c->r->live--;
    free(c);
    return;
  }
  if (braid_rpc_call(c->rpc, payload, sizeof(payload), 0, cpr_answer, c)) {
    c->r->errors++;
    braid_rpc_close(c->rpc);
  }
}

static void cpr_start(cpr_t *c) {
  if (braid_connect(NULL, c->r->loop, "127.0.0.1", c->r->port, NULL, cpr_connected, c)) {
    c->r->errors++;
    c->r->live--;
    free(c);
  }
}

static void on_acquired(braid_pool_t *pool, int status, braid_pool_lease_t *lease, braid_rpc_t *rpc,
                        void *arg) {
  (void)pool;
  run_t *r = arg;
  r->acquired = status == 0 ? 1 : -1;
  r->lease = lease;
  r->rpc = rpc;
}

static void on_pool_closed(braid_pool_t *pool, int status, void *arg) {
  (void)pool;
  (void)status;
  ((run_t *)arg)->pool_closed = 1;
}

static int count_time_wait(int port) {
  FILE *f = popen("ss -tan state time-wait 2>/dev/null", "r");
  if (!f)
    return -1;
  char line[512], want[16];
  snprintf(want, sizeof(want), ":%d", port);
  size_t wl = strlen(want);
  int n = 0;
  while (fgets(line, sizeof(line), f)) {
    for (char *tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
      size_t tl = strlen(tok);
      if (tl >= wl && strcmp(tok + tl - wl, want) == 0) {
        n++;
        break;
      }
    }
  }
  pclose(f);
  return n;
}

static double run_one(braid_loop_t *loop, scenario_t *s, int port, uint64_t ms, int *errors) {
  run_t r;
  memset(&r, 0, sizeof(r));
  r.loop = loop;
  r.port = port;
  uint64_t warm_ns = 50 * 1000000ull;
  if (s->kind != KIND_CONNECT) {
    braid_pool_opts_t o;
    braid_pool_opts_init(&o);
    o.max_per_endpoint = s->conns;
    o.max_total = s->conns;
    o.max_idle = s->conns;
    o.rpc.max_inflight = s->max_inflight;
    o.max_waiters = 4096;
    if (braid_pool_new(&r.pool, loop, &o) || braid_pool_add_endpoint(r.pool, "127.0.0.1", port)) {
      fprintf(stderr, "pool setup failed\n");
      exit(1);
    }
    if (s->kind == KIND_BATCH) {
      /* One leased channel with a batcher: requests made in one loop iteration leave as one
       * BATCH frame (max 64 per frame). */
      if (braid_pool_acquire(r.pool, on_acquired, &r))
        exit(1);
      while (!r.acquired)
        braid_loop_run(loop, UV_RUN_ONCE);
      if (r.acquired < 0 || braid_batcher_new(&r.batcher, r.rpc, NULL))
        exit(1);
    }
  }
  int tw_before = s->kind != KIND_CONNECT ? count_time_wait(port) : 0;
  uint64_t start = uv_hrtime();
  r.measure_from_ns = start + warm_ns;
  r.end_ns = r.measure_from_ns + ms * 1000000ull;
  r.live = s->callers;
  for (int i = 0; i < s->callers; i++) {
    if (s->kind != KIND_CONNECT) {
      caller_next(&r);
    } else {
      cpr_t *c = calloc(1, sizeof(*c));
      c->r = &r;
      cpr_start(c);
    }
  }
  while (r.live > 0)
    braid_loop_run(loop, UV_RUN_ONCE);
  if (r.batcher) {
    braid_batcher_free(r.batcher);
    braid_pool_release(r.lease);
  }
  if (s->kind != KIND_CONNECT) {
    braid_pool_stats_t st;
    braid_pool_stats(r.pool, &st);
    s->creates += st.creates;
    braid_pool_close(r.pool, on_pool_closed, &r);
    while (!r.pool_closed)
      braid_loop_run(loop, UV_RUN_ONCE);
    /* Let the closes reach the kernel before counting. */
    for (int i = 0; i < 5; i++)
      braid_loop_run(loop, UV_RUN_NOWAIT);
    usleep(20000);
    int tw = count_time_wait(port) - tw_before;
    if (tw > s->tw_max)
      s->tw_max = tw;
  } else {
    /* Let the last connections finish closing. */
    for (int i = 0; i < 100; i++)
      braid_loop_run(loop, UV_RUN_NOWAIT);
  }
  *errors += r.errors;
  return (double)r.done * 1000.0 / (double)ms;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--server") == 0)
    return run_server();
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  uint64_t ms = argc > 2 ? (uint64_t)atoi(argv[2]) : 300;
  if (rounds < 1 || rounds > 16 || ms < 10 || ms > 10000) {
    fprintf(stderr, "usage: bench_pool [rounds 1..16] [ms_per_run 10..10000]\n");
    return 2;
  }
  memset(payload, 'x', sizeof(payload));

  /* The server: a child process on CPU 0 (through taskset when present). */
  char self[PATH_MAX];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (sl <= 0)
    return 1;
  self[sl] = 0;
  int pfd[2];
  if (pipe(pfd))
    return 1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pfd[1], 1);
    close(pfd[0]);
    close(pfd[1]);
    execlp("taskset", "taskset", "-c", "0", self, "--server", (char *)NULL);
    execl(self, self, "--server", (char *)NULL);
    _exit(127);
  }
  close(pfd[1]);
  FILE *pf = fdopen(pfd[0], "r");
  int port_pool = 0, port_cpr = 0;
  if (!pf || fscanf(pf, "%d %d", &port_pool, &port_cpr) != 2) {
    fprintf(stderr, "server did not start\n");
    kill(pid, SIGTERM);
    return 1;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(1, &set);
  int pinned = sched_setaffinity(0, sizeof(set), &set) == 0;

  scenario_t sc[] = {
      {"connect-per-request", KIND_CONNECT, 0, 1, 1, {0}, 0, 0},
      {"connect-per-request", KIND_CONNECT, 0, 1, 64, {0}, 0, 0},
      {"pooled 1 conn", KIND_POOL, 1, 1, 1, {0}, 0, 0},
      {"pooled 1 conn", KIND_POOL, 1, 1, 64, {0}, 0, 0},
      {"pooled 4 conns", KIND_POOL, 4, 1, 1, {0}, 0, 0},
      {"pooled 4 conns", KIND_POOL, 4, 1, 64, {0}, 0, 0},
      {"pooled 16 conns", KIND_POOL, 16, 1, 1, {0}, 0, 0},
      {"pooled 16 conns", KIND_POOL, 16, 1, 64, {0}, 0, 0},
      {"pooled+pipelined (<=4)", KIND_POOL, 4, 1024, 1, {0}, 0, 0},
      {"pooled+pipelined (<=4)", KIND_POOL, 4, 1024, 64, {0}, 0, 0},
      {"pooled+leased+batched", KIND_BATCH, 1, 1024, 1, {0}, 0, 0},
      {"pooled+leased+batched", KIND_BATCH, 1, 1024, 64, {0}, 0, 0},
  };
  enum { NS = sizeof(sc) / sizeof(sc[0]) };
  braid_loop_t *loop;
  if (braid_loop_new(&loop, NULL))
    return 1;
  int errors = 0;
  int tw_cpr_before = count_time_wait(port_cpr);
  for (int round = 0; round < rounds; round++)
    for (int i = 0; i < NS; i++)
      sc[i].rps[round] = run_one(loop, &sc[i], sc[i].kind != KIND_CONNECT ? port_pool : port_cpr,
                                 ms, &errors);
  int tw_cpr = count_time_wait(port_cpr) - tw_cpr_before;
  braid_loop_close(loop);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);

  printf("bench_pool: %d rounds x %llu ms per run, 64 B requests, server pid on CPU 0, "
         "driver %s\n",
         rounds, (unsigned long long)ms, pinned ? "on CPU 1" : "NOT pinned");
  printf("%-24s %7s %12s %12s %12s %8s %10s %8s\n", "scenario", "callers", "median req/s",
         "min", "max", "vs cpr", "TIME_WAIT", "creates");
  double base[2] = {0, 0};
  for (int i = 0; i < NS; i++) {
    double sorted[16];
    memcpy(sorted, sc[i].rps, sizeof(double) * (size_t)rounds);
    qsort(sorted, (size_t)rounds, sizeof(double), cmp_double);
    double med = sorted[rounds / 2];
    int ci = sc[i].callers == 1 ? 0 : 1;
    if (sc[i].kind == KIND_CONNECT)
      base[ci] = med;
    char tw[32];
    if (sc[i].kind != KIND_CONNECT)
      snprintf(tw, sizeof(tw), "%d/%u", sc[i].tw_max, 2 * sc[i].conns);
    else
      snprintf(tw, sizeof(tw), "-");
    printf("%-24s %7d %12.0f %12.0f %12.0f %7.1fx %10s %8llu\n", sc[i].name, sc[i].callers, med,
           sorted[0], sorted[rounds - 1], base[ci] > 0 ? med / base[ci] : 0.0, tw,
           (unsigned long long)sc[i].creates);
  }
  printf("TIME_WAIT column: most sockets one pooled run left in TIME_WAIT / target (2 x pool "
         "size).\nconnect-per-request left %d TIME_WAIT sockets on its port over the run.\n",
         tw_cpr);
  printf("errors: %d\n", errors);
  printf("JSON: {\"bench\":\"pool\",\"rounds\":%d,\"ms\":%llu,\"scenarios\":[", rounds,
         (unsigned long long)ms);
  for (int i = 0; i < NS; i++) {
    double sorted[16];
    memcpy(sorted, sc[i].rps, sizeof(double) * (size_t)rounds);
    qsort(sorted, (size_t)rounds, sizeof(double), cmp_double);
    printf("%s{\"name\":\"%s\",\"callers\":%d,\"median_rps\":%.0f,\"min_rps\":%.0f,"
           "\"max_rps\":%.0f,\"time_wait\":%d}",
           i ? "," : "", sc[i].name, sc[i].callers, sorted[rounds / 2], sorted[0],
           sorted[rounds - 1], sc[i].kind != KIND_CONNECT ? sc[i].tw_max : tw_cpr);
  }
  printf("]}\n");
  return errors ? 1 : 0;
}
