/* Test fixture shared by the rpc and batch tests: a braid server on 127.0.0.1 whose
 * connections become rpc server channels with a scriptable handler, and one client channel.
 * Header-only (static functions): include it from one test file per executable. */
#ifndef BRAID_TEST_RPC_FIXTURE_H
#define BRAID_TEST_RPC_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "../support.h"

/* Header-only: a test file uses the helpers it needs, not all of them. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* ---- fixture: a braid server whose connections become rpc server channels --------------- */

typedef struct held_s {
  braid_rpc_req_t *req;
  char data[64];
  size_t len;
} held_t;

typedef struct fix_s {
  bt_loop_t t;
  braid_server_t *server;
  braid_rpc_opts_t sopts; /* server channel options */
  braid_rpc_opts_t copts; /* client channel options */
  braid_rpc_callbacks_t scbs; /* server channel callbacks (their data: this fixture) */
  braid_rpc_callbacks_t ccbs; /* client channel callbacks */
  braid_rpc_t *client;
  braid_rpc_t *srv_rpc;
  int connected;
  int server_closed;
  /* server behaviour */
  int hold;          /* hold requests instead of answering */
  held_t held[256];
  int n_held;
  int max_outstanding, outstanding;
  const char *fail_on;   /* answer requests equal to this with an error */
  int batches_seen;
  int client_closed, client_close_status;
  int srv_closed;
} fix_t;

static void srv_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                           size_t len, void *arg) {
  (void)rpc;
  fix_t *f = arg;
  f->outstanding++;
  if (f->outstanding > f->max_outstanding)
    f->max_outstanding = f->outstanding;
  if (f->fail_on && len == strlen(f->fail_on) && memcmp(data, f->fail_on, len) == 0) {
    f->outstanding--;
    assert_int_equal(braid_rpc_respond_error(req, BRAID_WIRE_APP_MIN + 7, "no such key"), 0);
    return;
  }
  if (f->hold) {
    assert_true(f->n_held < 256 && len <= 64);
    held_t *h = &f->held[f->n_held++];
    h->req = req;
    memcpy(h->data, data, len);
    h->len = len;
    return;
  }
  f->outstanding--;
  assert_int_equal(braid_rpc_respond(req, data, len), 0);
}

static void srv_on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                         uint32_t count, void *arg) {
  (void)rpc;
  fix_t *f = arg;
  f->batches_seen++;
  /* Answer in reverse, upper-casing, to show the order of answers does not matter. */
  for (uint32_t i = count; i-- > 0;) {
    char up[64];
    assert_true(items[i].len <= sizeof(up));
    for (uint32_t k = 0; k < items[i].len; k++)
      up[k] = (char)(items[i].data[k] >= 'a' && items[i].data[k] <= 'z' ? items[i].data[k] - 32
                                                                         : items[i].data[k]);
    if (items[i].len == 4 && memcmp(items[i].data, "fail", 4) == 0)
      assert_int_equal(braid_rpc_respond_error(reqs[i], BRAID_WIRE_APP_MIN, "item failed"), 0);
    else
      assert_int_equal(braid_rpc_respond(reqs[i], up, items[i].len), 0);
  }
}

static void srv_on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  fix_t *f = arg;
  f->srv_closed++;
  f->srv_rpc = NULL;
}

static void on_connection(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  fix_t *f = arg;
  assert_int_equal(braid_rpc_server(&f->srv_rpc, conn, &f->sopts, &f->scbs, f), 0);
}

static void cli_on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  fix_t *f = arg;
  f->client_closed++;
  f->client_close_status = status;
  f->client = NULL;
}

static void on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  fix_t *f = arg;
  assert_int_equal(status, 0);
  assert_int_equal(braid_rpc_client(&f->client, conn, &f->copts, &f->ccbs, f), 0);
  f->connected = 1;
}

static void srv_closed_cb(braid_server_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  ((fix_t *)arg)->server_closed = 1;
}

/* Starts a server and connects a client channel. Fill f->sopts/copts first (fix_opts). */
static void fix_start(fix_t *f) {
  bt_loop_init(&f->t);
  if (!f->scbs.on_request) /* a test may bring its own handler */
    f->scbs.on_request = srv_on_request;
  f->scbs.on_close = srv_on_close;
  if (!f->ccbs.on_close) /* a test may wrap cli_on_close */
    f->ccbs.on_close = cli_on_close;
  assert_int_equal(braid_server_new(&f->server, f->t.loop, NULL, on_connection, f), 0);
  assert_int_equal(braid_server_listen(f->server, "127.0.0.1", 0), 0);
  assert_int_equal(braid_connect(NULL, f->t.loop, "127.0.0.1", braid_server_port(f->server), NULL,
                                 on_connect, f),
                   0);
  bt_run_until(&f->t, &f->connected, 5000);
}

static void fix_opts(fix_t *f) {
  memset(f, 0, sizeof(*f));
  braid_rpc_opts_init(&f->sopts);
  braid_rpc_opts_init(&f->copts);
}

static void fix_stop(fix_t *f) {
  if (f->client)
    braid_rpc_close(f->client);
  assert_int_equal(braid_server_close(f->server, srv_closed_cb, f), 0);
  bt_run(&f->t, 5000);
  assert_true(f->server_closed);
  bt_loop_done(&f->t);
}

/* ---- client-side result recording -------------------------------------------------------- */

typedef struct res_s {
  int calls;
  int status;
  uint16_t code;
  uint8_t flags;
  char data[4096];
  size_t len;
} res_t;

static int done_count;

static void on_result(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  res_t *res = arg;
  res->calls++;
  res->status = status;
  res->code = r->remote_code;
  res->flags = r->flags;
  res->len = r->len < sizeof(res->data) ? r->len : sizeof(res->data);
  if (res->len)
    memcpy(res->data, r->data, res->len);
  done_count++;
}

#endif
