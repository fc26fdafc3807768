/* kv_client: three ways to talk to kv_server, and what each costs.
 *
 *   kv_client [--host ADDR] [--port N] [--requests N]
 *
 * It stores N keys and reads them back, checking every value, three times over one
 * connection:
 *   ping-pong  one request on the wire at a time: send, wait for the answer, send the next;
 *   pipelined  many requests on the wire at once with braid_rpc_call(), matched by id;
 *   batched    the same, through a braid_batcher_t that packs the requests made in one loop
 *              iteration into one BATCH frame (one header, one answer frame).
 * Then it prints requests per second for each, tries MGET and DEL, and exits 1 on any wrong
 * answer.
 *
 * Read it top to bottom: the wire format, the callbacks that drive each run, then main. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>
#include <braid/batch.h>

/* ---- the wire format (docs/PROTOCOL.md section 9) ----------------------------------------- */

enum { OP_GET = 1, OP_SET = 2, OP_DEL = 3, OP_MGET = 4 };

static uint8_t *put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* "u16 klen, key" */
static uint8_t *put_key(uint8_t *p, const char *key) {
  size_t klen = strlen(key);
  p = put_u16(p, (uint16_t)klen);
  memcpy(p, key, klen);
  return p + klen;
}

/* Encodes GET key (value NULL) or SET key value into buf; returns the length. */
static size_t encode(uint8_t *buf, const char *key, const char *value) {
  uint8_t *p = buf;
  *p++ = value ? OP_SET : OP_GET;
  p = put_key(p, key);
  if (value) {
    size_t vlen = strlen(value);
    p = put_u32(p, (uint32_t)vlen);
    memcpy(p, value, vlen);
    p += vlen;
  }
  return (size_t)(p - buf);
}

/* ---- one run: N SETs then N GETs, in one of three modes ----------------------------------- */

enum { PINGPONG, PIPELINED, BATCHED, MODES };
static const char *const mode_names[MODES] = {"ping-pong", "pipelined", "batched"};
/* Requests kept on the wire at once. Ping-pong is one by definition. */
static const unsigned windows[MODES] = {1, 256, 4096};

typedef struct client_s {
  braid_loop_t *loop;
  braid_rpc_t *rpc;
  braid_batcher_t *batcher;
  unsigned n;         /* keys per run */
  int mode;           /* PINGPONG, PIPELINED, BATCHED */
  int reading;        /* 0: the SET half of the run, 1: the GET half */
  unsigned sent, done;
  uint64_t started_ns;
  double seconds[MODES];
  unsigned wrong; /* answers that were not what they should be */
  int tour_left;  /* answers the MGET/DEL tour still waits for */
} client_t;

static void key_of(char *key, size_t cap, unsigned i) {
  snprintf(key, cap, "key:%u", i);
}

/* Each mode writes its own values, so a read cannot pass on an earlier run's data. */
static void value_of(char *value, size_t cap, int mode, unsigned i) {
  snprintf(value, cap, "%s-value-%08u-padding-to-about-48-bytes", mode_names[mode], i);
}

static void fail(client_t *c, const char *what, unsigned i, int status,
                 const braid_rpc_result_t *r) {
  if (c->wrong++ >= 5)
    return;
  if (status == BRAID_EREMOTE) /* the server's ERROR frame: a code and a message */
    fprintf(stderr, "kv_client: %s %s #%u: server error %s: %.*s\n", mode_names[c->mode], what,
            i, braid_frame_code_name(r->remote_code), (int)r->len, (const char *)r->data);
  else /* BRAID_EGOAWAY, or BRAID_ECLOSED after one: the server is draining, not broken */
    fprintf(stderr, "kv_client: %s %s #%u: %s (%s)\n", mode_names[c->mode], what, i,
            braid_err_name(status), braid_strerror(status));
}

/* One client per process; the answer callbacks' arg is the key's index, so they find the
 * client here. */
static client_t client;

static void start_mode(client_t *c, int mode);
static void start_tour(client_t *c);
static void on_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg);

/* Puts the next request of the run on its way. */
static void send_next(client_t *c) {
  unsigned i = c->sent++;
  char key[32], value[96];
  uint8_t req[160];
  key_of(key, sizeof(key), i);
  value_of(value, sizeof(value), c->mode, i);
  size_t len = encode(req, key, c->reading ? NULL : value);
  void *arg = (void *)(uintptr_t)i;
  int rc = c->mode == BATCHED ? braid_batcher_call(c->batcher, req, len, on_answer, arg)
                              : braid_rpc_call(c->rpc, req, len, 0, on_answer, arg);
  if (rc != 0) {
    braid_rpc_result_t r = {0, 0, NULL, 0};
    fail(c, "call", i, rc, &r);
    if (c->rpc)
      braid_rpc_close(c->rpc);
  }
}

/* Starts the SET half (reading 0) or the GET half (reading 1) of the run. */
static void start_half(client_t *c, int reading) {
  c->reading = reading;
  c->sent = c->done = 0;
  while (c->sent < c->n && c->sent < windows[c->mode])
    send_next(c);
}

/* Every answer of a run lands here: check it, send the next request, or end the half. */
static void on_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  client_t *c = &client;
  unsigned i = (unsigned)(uintptr_t)arg;
  if (status != 0) {
    /* A failed request (timeout, lost connection) ends the program: close and report. */
    fail(c, c->reading ? "GET" : "SET", i, status, r);
    if (c->rpc)
      braid_rpc_close(c->rpc);
    return;
  }
  if (!c->reading) {
    if (r->len != 1 || r->data[0] != 0)
      fail(c, "SET", i, status, r);
  } else {
    char value[96];
    value_of(value, sizeof(value), c->mode, i);
    size_t vlen = strlen(value);
    if (r->len != 5 + vlen || r->data[0] != 0 || get_u32(r->data + 1) != vlen ||
        memcmp(r->data + 5, value, vlen) != 0)
      fail(c, "GET", i, status, r);
  }
  c->done++;
  if (c->sent < c->n) {
    send_next(c);
  } else if (c->done == c->n && !c->reading) {
    start_half(c, 1);
  } else if (c->done == c->n) {
    c->seconds[c->mode] = (double)(uv_hrtime() - c->started_ns) / 1e9;
    if (c->mode + 1 < MODES)
      start_mode(c, c->mode + 1);
    else
      start_tour(c);
  }
}

static void start_mode(client_t *c, int mode) {
  c->mode = mode;
  c->started_ns = uv_hrtime();
  start_half(c, 0);
}

/* ---- a short tour of MGET and DEL --------------------------------------------------------- */

static void tour_done(client_t *c) {
  if (--c->tour_left == 0) {
    braid_batcher_free(c->batcher);
    c->batcher = NULL;
    braid_rpc_close(c->rpc);
  }
}

/* MGET key:0 key:1 missing: the first two as the batched run stored them, the third absent. */
static void on_mget(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  (void)arg;
  client_t *c = &client;
  uint8_t want[256], *p = want;
  p = put_u16(p, 3);
  for (unsigned i = 0; i < 2; i++) {
    char value[96];
    value_of(value, sizeof(value), BATCHED, i);
    *p++ = 0;
    p = put_u32(p, (uint32_t)strlen(value));
    memcpy(p, value, strlen(value));
    p += strlen(value);
  }
  *p++ = 1; /* not found */
  if (status != 0 || r->len != (size_t)(p - want) || memcmp(r->data, want, r->len) != 0)
    fail(c, "MGET", 0, status, r);
  tour_done(c);
}

/* DEL key:0 twice: deleted (0), then not found (1). arg is the answer expected. */
static void on_del(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  client_t *c = &client;
  uint8_t want = (uint8_t)(uintptr_t)arg;
  if (status != 0 || r->len != 1 || r->data[0] != want)
    fail(c, "DEL", want, status, r);
  tour_done(c);
}

/* The three requests go out pipelined; the server runs one connection's requests in order,
 * so the MGET sees key:0 before the DELs remove it. */
static void start_tour(client_t *c) {
  uint8_t req[64], *p = req;
  *p++ = OP_MGET;
  p = put_u16(p, 3);
  p = put_key(p, "key:0");
  p = put_key(p, "key:1");
  p = put_key(p, "no-such-key");
  uint8_t del[16], *d = del;
  *d++ = OP_DEL;
  d = put_key(d, "key:0");
  c->tour_left = 3;
  if (braid_rpc_call(c->rpc, req, (size_t)(p - req), 0, on_mget, NULL) != 0 ||
      braid_rpc_call(c->rpc, del, (size_t)(d - del), 0, on_del, (void *)(uintptr_t)0) != 0 ||
      braid_rpc_call(c->rpc, del, (size_t)(d - del), 0, on_del, (void *)(uintptr_t)1) != 0) {
    c->wrong++;
    braid_rpc_close(c->rpc);
  }
}

/* ---- connecting --------------------------------------------------------------------------- */

static void on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  client_t *c = arg;
  c->rpc = NULL;
  if (status != 0) {
    fprintf(stderr, "kv_client: connection ended: %s\n", braid_strerror(status));
    c->wrong++;
  }
  if (c->batcher) {
    braid_batcher_free(c->batcher);
    c->batcher = NULL;
  }
}

static void on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  client_t *c = arg;
  if (status != 0) {
    fprintf(stderr, "kv_client: connect: %s\n", braid_strerror(status));
    c->wrong++;
    return;
  }
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  o.timeout_ms = 10000; /* no answer within 10 s is a failure, not a hang */
  braid_batcher_opts_t bo;
  braid_batcher_opts_init(&bo);
  bo.max_items = 64;
  bo.linger_us = 0; /* flush at the end of each loop iteration */
  braid_rpc_callbacks_t cbs = {.on_close = on_close};
  if (braid_rpc_client(&c->rpc, conn, &o, &cbs, c) != 0) {
    braid_conn_close(conn);
    c->wrong++;
    return;
  }
  if (braid_batcher_new(&c->batcher, c->rpc, &bo) != 0) {
    braid_rpc_close(c->rpc);
    c->wrong++;
    return;
  }
  start_mode(c, PINGPONG);
}

/* ---- main --------------------------------------------------------------------------------- */

static void print_table(const client_t *c) {
  printf("%-10s %10s %9s %12s %13s\n", "mode", "requests", "seconds", "requests/s",
         "vs ping-pong");
  double base = 2.0 * c->n / c->seconds[PINGPONG];
  for (int m = 0; m < MODES; m++) {
    double rate = 2.0 * c->n / c->seconds[m];
    printf("%-10s %10u %9.3f %12.0f %12.1fx\n", mode_names[m], 2 * c->n, c->seconds[m], rate,
           rate / base);
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  long port = 7379, requests = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--host") == 0)
      host = argv[i + 1];
    else if (strcmp(argv[i], "--port") == 0)
      port = strtol(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--requests") == 0)
      requests = strtol(argv[i + 1], NULL, 10);
    else
      argc = 0; /* unknown option: fall through to usage */
  }
  if (argc % 2 == 0 || port < 1 || port > 65535 || requests < 1 || requests > 10000000) {
    fprintf(stderr, "usage: kv_client [--host ADDR] [--port N] [--requests N]\n");
    return 2;
  }

  client_t *c = &client;
  c->n = (unsigned)requests;
  if (braid_loop_new(&c->loop, NULL) != 0)
    return 1;
  if (braid_connect(NULL, c->loop, host, (int)port, NULL, on_connect, c) != 0)
    return 1;
  braid_loop_run(c->loop, UV_RUN_DEFAULT);
  if (braid_loop_close(c->loop) != 0)
    c->wrong++;

  if (c->wrong) {
    fprintf(stderr, "kv_client: %u wrong answers\n", c->wrong);
    return 1;
  }
  print_table(c);
  printf("all %u values verified; MGET and DEL answered as expected\n", 3 * c->n);
  return 0;
}

