/* bench_rpc: request/response throughput of braid rpc, three ways, against a raw libuv echo.
 *
 *   bench_rpc                          fork a server pinned to CPU 0, run the client on CPU 1
 *   bench_rpc --server [--port N]      just the servers; prints "ports RPC ECHO"
 *   bench_rpc --connect RPC,ECHO       just the client, against a running --server
 *   options: --seconds S (per scenario, default 1.0); --window P,B (in flight per connection,
 *   pipelined and batched); --only MODE (uv-echo, ping-pong, pipelined, batched: that mode
 *   alone, printing the answers counted, for an outside CPU measurement or a profile) with
 *   --conns N (1..16, default 1) and --size B (1..1024, default 64) choosing its cell
 *
 * The server process runs, on one loop, a braid rpc echo server (on_request echoes, on_batch
 * echoes each item) and a minimal tuned libuv echo server (TCP_NODELAY, uv_try_write first,
 * reading into one buffer). For 1 and 16 connections and 64 B and 1 KiB payloads the client
 * measures:
 *   uv-echo    ping-pong over raw libuv, the same bytes a braid frame puts on the wire
 *              (16-byte header + payload): the floor any rpc layer adds to;
 *   ping-pong  braid_rpc_call, one request per connection at a time;
 *   pipelined  braid_rpc_call, 128 requests per connection in flight;
 *   batched    braid_batcher_call (max_items 64, linger 0), 1024 requests per connection in
 *              flight, so up to 16 BATCH frames of 64.
 * Each scenario runs 0.2 s of warm-up, then counts answers (each checked) for --seconds. It
 * prints a table and a JSON line. Bounded: 16 scenarios of ~1.3 s, well under 2 minutes. */
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <braid.h>
#include <braid/batch.h>

#define MAX_CONNS 16
#define MAX_PAYLOAD 1024
#define HEADER 16 /* a braid frame header, for the raw echo's equal bytes on the wire */

/* ---- the servers ------------------------------------------------------------------------- */

static void srv_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                           size_t len, void *arg) {
  (void)rpc;
  (void)arg;
  braid_rpc_respond(req, data, len);
}

static void srv_on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                         uint32_t count, void *arg) {
  (void)rpc;
  (void)arg;
  for (uint32_t i = 0; i < count; i++)
    braid_rpc_respond(reqs[i], items[i].data, items[i].len);
}

static void srv_on_connection(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  (void)arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  static const braid_rpc_callbacks_t cbs = {.on_request = srv_on_request, .on_batch = srv_on_batch};
  braid_rpc_t *rpc;
  if (braid_rpc_server(&rpc, conn, &o, &cbs, NULL) != 0)
    braid_conn_close(conn);
}

/* The raw libuv echo: one 64 KiB read buffer per connection; answers with uv_try_write and
 * queues only what the socket did not take. */
typedef struct echo_conn_s {
  uv_tcp_t tcp;
  char buf[65536];
} echo_conn_t;

typedef struct echo_write_s {
  uv_write_t req;
  char data[];
} echo_write_t;

static void echo_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  echo_conn_t *c = h->data;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void echo_closed(uv_handle_t *h) {
  free(h->data);
}

static void echo_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    uv_close((uv_handle_t *)s, echo_closed);
    return;
  }
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  int w = n > 0 ? uv_try_write(s, &b, 1) : 0;
  if (w == UV_EAGAIN)
    w = 0;
  if (w < 0) {
    uv_close((uv_handle_t *)s, echo_closed);
    return;
  }
  if (w < n) {
    size_t rest = (size_t)n - (size_t)w;
    echo_write_t *ew = malloc(sizeof(*ew) + rest);
    memcpy(ew->data, buf->base + w, rest);
    b = uv_buf_init(ew->data, (unsigned)rest);
    uv_write(&ew->req, s, &b, 1, echo_written);
  }
}

static void echo_on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  echo_conn_t *c = malloc(sizeof(*c));
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, echo_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, echo_alloc, echo_read);
}

/* Runs both servers until the process is killed. Prints "ports RPC ECHO" to fd out. */
static int server_main(int port, int out) {
  braid_loop_t *loop;
  braid_server_t *server;
  if (braid_loop_new(&loop, NULL) != 0 ||
      braid_server_new(&server, loop, NULL, srv_on_connection, NULL) != 0 ||
      braid_server_listen(server, "127.0.0.1", port) != 0) {
    fprintf(stderr, "bench_rpc: cannot start the rpc server\n");
    return 1;
  }
  static uv_tcp_t echo;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(braid_loop_uv(loop), &echo);
  if (uv_tcp_bind(&echo, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&echo, 1024, echo_on_connection) != 0) {
    fprintf(stderr, "bench_rpc: cannot start the echo server\n");
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_tcp_getsockname(&echo, (struct sockaddr *)&ss, &len);
  char line[64];
  int n = snprintf(line, sizeof(line), "ports %d %d\n", braid_server_port(server),
                   ntohs(((struct sockaddr_in *)&ss)->sin_port));
  if (write(out, line, (size_t)n) != n)
    return 1;
  braid_loop_run(loop, UV_RUN_DEFAULT);
  return 0;
}

/* ---- the client ---------------------------------------------------------------------------- */

enum { UV_ECHO, PINGPONG, PIPELINED, BATCHED, MODES };
static const char *const mode_names[MODES] = {"uv-echo", "ping-pong", "pipelined", "batched"};
static unsigned windows[MODES] = {1, 1, 128, 1024};

typedef struct cconn_s cconn_t;

typedef struct bench_s {
  braid_loop_t *loop;
  int mode;
  size_t payload;
  unsigned nconns, connected, closed;
  int failed;
  int measuring, stopping;
  uint64_t count, count0, t0_ns, t1_ns, count1;
  uint64_t cpu0, cpu1; /* server CPU ticks at the start and end of the measured window */
  uv_timer_t timer;
  double seconds;
  uint8_t msg[HEADER + MAX_PAYLOAD];
} bench_t;

struct cconn_s {
  bench_t *b;
  braid_rpc_t *rpc;
  braid_batcher_t *batcher;
  unsigned inflight;
  /* raw echo */
  uv_tcp_t tcp;
  uv_connect_t creq;
  size_t got;
  char rbuf[65536];
};

static bench_t bench;
static cconn_t conns[MAX_CONNS];
static pid_t server_pid; /* the forked server, whose CPU time we read; 0 with --connect */

/* The server's user + system CPU time in clock ticks (/proc/PID/stat fields 14 and 15), or 0
 * when unknown. On a shared machine, requests per server-CPU-second is the steadier figure:
 * req/s then measures the scheduler as much as the code. */
static uint64_t server_cpu_ticks(void) {
  char path[64], buf[1024];
  if (!server_pid)
    return 0;
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)server_pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long utime, stime;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                   &stime) != 2)
    return 0;
  return utime + stime;
}

static void send_one(cconn_t *c);

static void on_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  cconn_t *c = arg;
  bench_t *b = c->b;
  c->inflight--;
  if (status != 0 || r->len != b->payload || memcmp(r->data, b->msg, r->len) != 0) {
    if (!b->failed++)
      fprintf(stderr, "bench_rpc: %s: bad answer: %s, %zu bytes\n", mode_names[b->mode],
              braid_err_name(status), r->len);
    return;
  }
  b->count++;
  if (!b->stopping)
    send_one(c);
}

static void send_one(cconn_t *c) {
  bench_t *b = c->b;
  int rc = b->mode == BATCHED ? braid_batcher_call(c->batcher, b->msg, b->payload, on_answer, c)
                              : braid_rpc_call(c->rpc, b->msg, b->payload, 0, on_answer, c);
  if (rc != 0) {
    if (!b->failed++)
      fprintf(stderr, "bench_rpc: call: %s\n", braid_strerror(rc));
    return;
  }
  c->inflight++;
}

/* Raw echo client: write a message, read it back whole, repeat. */
static void echo_send(cconn_t *c) {
  uv_buf_t buf = uv_buf_init((char *)c->b->msg, (unsigned)(HEADER + c->b->payload));
  int w = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
  if (w == (int)buf.len)
    return;
  if (w < 0 && w != UV_EAGAIN) {
    c->b->failed++;
    return;
  }
  static uv_write_t wreq[MAX_CONNS]; /* one write at most per connection: ping-pong */
  buf.base += w > 0 ? w : 0;
  buf.len -= w > 0 ? (unsigned)w : 0;
  uv_write(&wreq[c - conns], (uv_stream_t *)&c->tcp, &buf, 1, NULL);
}

static void echo_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  cconn_t *c = h->data;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void echo_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  cconn_t *c = s->data;
  bench_t *b = c->b;
  if (n < 0) {
    b->failed++;
    uv_read_stop(s);
    c->inflight = 0;
    return;
  }
  c->got += (size_t)n;
  size_t msglen = HEADER + b->payload;
  if (c->got < msglen)
    return;
  if (c->got > msglen) {
    b->failed++;
    return;
  }
  c->got = 0;
  b->count++;
  if (b->stopping)
    c->inflight = 0;
  else
    echo_send(c);
}

static void echo_connected(uv_connect_t *req, int status) {
  cconn_t *c = req->data;
  if (status != 0) {
    c->b->failed++;
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, echo_client_alloc, echo_client_read);
  c->b->connected++;
}

static void rpc_on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  ((cconn_t *)arg)->b->closed++;
}

static void rpc_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  cconn_t *c = arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  braid_rpc_callbacks_t cbs = {.on_close = rpc_on_close};
  braid_batcher_opts_t bo;
  braid_batcher_opts_init(&bo);
  bo.max_items = 64;
  bo.linger_us = 0;
  if (status != 0 || braid_rpc_client(&c->rpc, conn, &o, &cbs, c) != 0 ||
      braid_batcher_new(&c->batcher, c->rpc, &bo) != 0) {
    c->b->failed++;
    return;
  }
  c->b->connected++;
}

/* Warm-up over: start counting. Counting over: stop sending, let what is in flight land. */
static void on_timer(uv_timer_t *t) {
  bench_t *b = t->data;
  if (!b->measuring) {
    b->measuring = 1;
    b->count0 = b->count;
    b->t0_ns = uv_hrtime();
    b->cpu0 = server_cpu_ticks();
    uv_timer_start(t, on_timer, (uint64_t)(b->seconds * 1000), 0);
  } else {
    b->count1 = b->count;
    b->t1_ns = uv_hrtime();
    b->cpu1 = server_cpu_ticks();
    b->stopping = 1;
  }
}

static void run_until(bench_t *b, int (*done)(bench_t *)) {
  uint64_t start = uv_hrtime();
  while (!done(b) && !b->failed) {
    braid_loop_run(b->loop, UV_RUN_ONCE);
    if (uv_hrtime() - start > (uint64_t)30e9) {
      fprintf(stderr, "bench_rpc: %s: stuck\n", mode_names[b->mode]);
      b->failed++;
    }
  }
}

static int all_connected(bench_t *b) {
  return b->connected == b->nconns;
}

static int all_landed(bench_t *b) {
  if (!b->stopping)
    return 0;
  for (unsigned i = 0; i < b->nconns; i++)
    if (conns[i].inflight)
      return 0;
  return 1;
}

static void rpc_closed_cb(uv_handle_t *h) {
  ((cconn_t *)h->data)->b->closed++;
}

static int all_closed(bench_t *b) {
  return b->closed == b->nconns;
}

/* One scenario; returns answers per second (0 on failure) and, in *per_cpu, answers per
 * server-CPU-second (0 when unknown). */
static double run(bench_t *b, int ports[2], int mode, unsigned nconns, size_t payload,
                  double *per_cpu) {
  b->mode = mode;
  b->payload = payload;
  b->nconns = nconns;
  b->connected = b->closed = 0;
  b->measuring = b->stopping = 0;
  b->count = 0;
  memset(conns, 0, sizeof(conns));
  for (unsigned i = 0; i < nconns; i++) {
    cconn_t *c = &conns[i];
    c->b = b;
    if (mode == UV_ECHO) {
      struct sockaddr_in addr;
      uv_ip4_addr("127.0.0.1", ports[1], &addr);
      uv_tcp_init(braid_loop_uv(b->loop), &c->tcp);
      c->tcp.data = c->creq.data = c;
      uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, echo_connected);
    } else if (braid_connect(NULL, b->loop, "127.0.0.1", ports[0], NULL, rpc_connected, c) != 0) {
      b->failed++;
    }
  }
  run_until(b, all_connected);
  uv_timer_start(&b->timer, on_timer, 200, 0);
  for (unsigned i = 0; i < nconns && !b->failed; i++) {
    if (mode == UV_ECHO) {
      conns[i].inflight = 1;
      echo_send(&conns[i]);
    } else {
      for (unsigned k = 0; k < windows[mode]; k++)
        send_one(&conns[i]);
    }
  }
  run_until(b, all_landed);
  uv_timer_stop(&b->timer);
  for (unsigned i = 0; i < nconns; i++) {
    cconn_t *c = &conns[i];
    if (mode == UV_ECHO) {
      if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, rpc_closed_cb);
    } else {
      braid_batcher_free(c->batcher);
      braid_rpc_close(c->rpc); /* rpc_on_close counts it */
    }
  }
  run_until(b, all_closed);
  braid_loop_run(b->loop, UV_RUN_NOWAIT);
  *per_cpu = 0;
  if (b->failed || b->t1_ns <= b->t0_ns)
    return 0;
  if (b->cpu1 > b->cpu0)
    *per_cpu = (double)(b->count1 - b->count0) /
               ((double)(b->cpu1 - b->cpu0) / (double)sysconf(_SC_CLK_TCK));
  return (double)(b->count1 - b->count0) / ((double)(b->t1_ns - b->t0_ns) / 1e9);
}

static void pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0)
    perror("bench_rpc: sched_setaffinity");
}

/* --only MODE: one scenario (--conns, --size; default 1 connection, 64 B), printing every
 * answer counted from the first (warm-up included), to divide a server's CPU time measured
 * from outside (perf stat -e task-clock) by, or to profile one cell alone. */
static int only_mode = -1;
static unsigned only_conns = 1;
static size_t only_size = 64;

static int client_only(bench_t *b, int ports[2]) {
  double per_cpu;
  double rate = run(b, ports, only_mode, only_conns, only_size, &per_cpu);
  if (b->failed)
    return 1;
  printf("%s, %u conn, %zu B: %.0f req/s, %.0f req/srv-CPU-s, %llu answers in all\n",
         mode_names[only_mode], only_conns, only_size, rate, per_cpu,
         (unsigned long long)b->count);
  return 0;
}

static int client_main(int ports[2], double seconds) {
  bench_t *b = &bench;
  b->seconds = seconds;
  for (size_t i = 0; i < sizeof(b->msg); i++)
    b->msg[i] = (uint8_t)(i * 7 + 1);
  if (braid_loop_new(&b->loop, NULL) != 0)
    return 1;
  uv_timer_init(braid_loop_uv(b->loop), &b->timer);
  b->timer.data = b;
  if (only_mode >= 0) {
    int rc = client_only(b, ports);
    uv_close((uv_handle_t *)&b->timer, NULL);
    braid_loop_run(b->loop, UV_RUN_DEFAULT);
    return braid_loop_close(b->loop) == 0 ? rc : 1;
  }
  static const unsigned nconns[] = {1, 16};
  static const size_t payloads[] = {64, 1024};
  double rate[2][2][MODES], cpu[2][2][MODES];
  printf("%-6s %-8s %-10s %7s %12s %13s %14s\n", "conns", "payload", "mode", "window",
         "requests/s", "vs ping-pong", "req/srv-CPU-s");
  for (int ci = 0; ci < 2; ci++)
    for (int pi = 0; pi < 2; pi++)
      for (int m = 0; m < MODES; m++) {
        rate[ci][pi][m] = run(b, ports, m, nconns[ci], payloads[pi], &cpu[ci][pi][m]);
        if (b->failed)
          return 1;
      }
  for (int ci = 0; ci < 2; ci++)
    for (int pi = 0; pi < 2; pi++)
      for (int m = 0; m < MODES; m++)
        printf("%-6u %-8zu %-10s %7u %12.0f %12.2fx %14.0f\n", nconns[ci], payloads[pi],
               mode_names[m], windows[m], rate[ci][pi][m],
               rate[ci][pi][m] / rate[ci][pi][PINGPONG], cpu[ci][pi][m]);
  double batch_x = rate[0][0][BATCHED] / rate[0][0][PINGPONG];
  double pp_x = rate[0][0][PINGPONG] / rate[0][0][UV_ECHO];
  printf("batched / ping-pong, 1 conn, 64 B: %.1fx (target >= 10x): %s\n", batch_x,
         batch_x >= 10 ? "met" : "NOT met");
  printf("rpc ping-pong / uv-echo ping-pong, 1 conn, 64 B: %.2fx (target >= 0.9x): %s\n", pp_x,
         pp_x >= 0.9 ? "met" : "NOT met");
  if (cpu[0][0][UV_ECHO] > 0)
    printf("same, per server-CPU-second: %.2fx; batched / ping-pong per server-CPU-second: "
           "%.1fx\n", cpu[0][0][PINGPONG] / cpu[0][0][UV_ECHO],
           cpu[0][0][BATCHED] / cpu[0][0][PINGPONG]);
  printf("{\"bench\":\"rpc\",\"seconds\":%.2f,\"results\":[", seconds);
  int first = 1;
  for (int ci = 0; ci < 2; ci++)
    for (int pi = 0; pi < 2; pi++)
      for (int m = 0; m < MODES; m++) {
        printf("%s{\"conns\":%u,\"payload\":%zu,\"mode\":\"%s\",\"window\":%u,\"rps\":%.0f,"
               "\"req_per_server_cpu_s\":%.0f}",
               first ? "" : ",", nconns[ci], payloads[pi], mode_names[m], windows[m],
               rate[ci][pi][m], cpu[ci][pi][m]);
        first = 0;
      }
  printf("]}\n");
  uv_close((uv_handle_t *)&b->timer, NULL);
  braid_loop_run(b->loop, UV_RUN_DEFAULT);
  return braid_loop_close(b->loop) == 0 ? 0 : 1;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: bench_rpc [--server [--port N]] [--connect RPC,ECHO] [--seconds S] "
                  "[--window PIPELINED,BATCHED] [--only MODE [--conns N] [--size B]]\n");
  return 2;
}

int main(int argc, char **argv) {
  int server = 0, port = 0, ports[2] = {0, 0};
  double seconds = 1.0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0)
      server = 1;
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc &&
             sscanf(argv[++i], "%d,%d", &ports[0], &ports[1]) == 2)
      ;
    else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc &&
             sscanf(argv[++i], "%u,%u", &windows[PIPELINED], &windows[BATCHED]) == 2 &&
             windows[PIPELINED] >= 1 && windows[BATCHED] >= 1)
      ;
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      i++;
      for (int m = 0; m < MODES; m++)
        if (strcmp(argv[i], mode_names[m]) == 0)
          only_mode = m;
      if (only_mode < 0)
        return usage();
    } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
      only_conns = (unsigned)atoi(argv[++i]);
      if (only_conns < 1 || only_conns > MAX_CONNS)
        return usage();
    } else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
      int size = atoi(argv[++i]);
      if (size < 1 || size > MAX_PAYLOAD)
        return usage();
      only_size = (size_t)size;
    } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else
      return usage();
  }
  if (seconds <= 0 || seconds > 5) {
    fprintf(stderr, "bench_rpc: --seconds must be in (0, 5]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (server)
    return server_main(port, 1);
  if (ports[0])
    return client_main(ports, seconds);

  /* Fork the server (before any loop exists), pin it and us, read its ports. */
  int fds[2];
  if (pipe(fds) != 0)
    return 1;
  int two_cpus = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
  pid_t pid = fork();
  if (pid < 0)
    return 1;
  if (pid == 0) {
    close(fds[0]);
    if (two_cpus)
      pin_to_cpu(0);
    _exit(server_main(port, fds[1]));
  }
  close(fds[1]);
  server_pid = pid;
  if (two_cpus)
    pin_to_cpu(1);
  char line[64] = {0};
  struct pollfd pfd = {fds[0], POLLIN, 0};
  if (poll(&pfd, 1, 5000) != 1 || read(fds[0], line, sizeof(line) - 1) <= 0 ||
      sscanf(line, "ports %d %d", &ports[0], &ports[1]) != 2) {
    fprintf(stderr, "bench_rpc: the server did not start\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 1;
  }
  printf("server pid %d on CPU 0, client on CPU %s; %.2f s per scenario after 0.2 s warm-up\n",
         (int)pid, two_cpus ? "1" : "0 (one CPU)", seconds);
  int rc = client_main(ports, seconds);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return rc;
}
