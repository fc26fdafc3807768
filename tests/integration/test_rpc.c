/* Request/response channels over loopback: pipelining, out-of-order answers, one request's
 * deadline among many, the in-flight cap, connection loss with requests pending (each
 * completes exactly once), remote errors, batches, ordered (pipelined) protocols with
 * late answers, goaway (ending with FIN, not a reset), and garbage from the peer. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "../support.h"

#include "rpc_fixture.h"

/* ---- tests ------------------------------------------------------------------------------ */

static void test_pipelined(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  enum { N = 2000 };
  static res_t res[N];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int i = 0; i < N; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "request %d", i);
    assert_int_equal(braid_rpc_call(f.client, msg, (size_t)n, 0, on_result, &res[i]), 0);
  }
  braid_rpc_stats_t st;
  braid_rpc_stats(f.client, &st);
  assert_int_equal(st.calls, N);
  assert_int_equal(st.inflight + st.queued, N);
  while (done_count < N)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 0; i < N; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "request %d", i);
    assert_int_equal(res[i].calls, 1);
    assert_int_equal(res[i].status, 0);
    assert_int_equal(res[i].len, (size_t)n);
    assert_memory_equal(res[i].data, msg, (size_t)n);
  }
  braid_rpc_stats(f.client, &st);
  assert_int_equal(st.completed, N);
  assert_int_equal(st.inflight, 0);
  fix_stop(&f);
  assert_int_equal(f.client_closed, 1);
  assert_int_equal(f.client_close_status, 0);
}

static void test_out_of_order_and_deadline(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.hold = 1;
  fix_start(&f);
  static res_t res[10];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int i = 0; i < 10; i++) {
    char msg[8];
    int n = snprintf(msg, sizeof(msg), "r%d", i);
    /* Request 5 alone has a short deadline. */
    assert_int_equal(braid_rpc_call(f.client, msg, (size_t)n, i == 5 ? 100 : 0, on_result, &res[i]),
                     0);
  }
  while (f.n_held < 10)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  /* Answer in reverse order, all but 5. */
  for (int i = 9; i >= 0; i--) {
    if (i == 5)
      continue;
    assert_int_equal(braid_rpc_respond(f.held[i].req, f.held[i].data, f.held[i].len), 0);
  }
  while (done_count < 9)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_int_equal(res[5].calls, 0);
  bt_run_until(&f.t, &res[5].calls, 5000);
  assert_int_equal(res[5].status, BRAID_ETIMEDOUT);
  for (int i = 0; i < 10; i++) {
    if (i == 5)
      continue;
    char msg[8];
    int n = snprintf(msg, sizeof(msg), "r%d", i);
    assert_int_equal(res[i].status, 0);
    assert_memory_equal(res[i].data, msg, (size_t)n);
  }
  /* The late answer is dropped; the connection still serves. */
  assert_int_equal(braid_rpc_respond(f.held[5].req, "late", 4), 0);
  f.hold = 0;
  res_t after = {0};
  assert_int_equal(braid_rpc_call(f.client, "after", 5, 0, on_result, &after), 0);
  bt_run_until(&f.t, &after.calls, 5000);
  assert_int_equal(after.status, 0);
  assert_memory_equal(after.data, "after", 5);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.client, &st);
  assert_int_equal(st.timeouts, 1);
  assert_int_equal(st.late, 1);
  assert_int_equal(res[5].calls, 1);
  fix_stop(&f);
}

static void test_inflight_cap(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.copts.max_inflight = 4;
  f.copts.max_queued = 96;
  f.hold = 1;
  fix_start(&f);
  static res_t res[101];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int i = 0; i < 100; i++)
    assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, on_result, &res[i]), 0);
  assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, on_result, &res[100]), BRAID_EQUEUEFULL);
  /* Release held requests one by one; the server never sees more than 4 at once. */
  int answered = 0;
  while (done_count < 100) {
    uv_run(&f.t.uv, UV_RUN_ONCE);
    while (answered < f.n_held) {
      assert_true(f.n_held - answered <= 4);
      f.outstanding--;
      assert_int_equal(braid_rpc_respond(f.held[answered].req, "y", 1), 0);
      answered++;
    }
  }
  assert_int_equal(f.max_outstanding, 4);
  for (int i = 0; i < 100; i++)
    assert_int_equal(res[i].calls, 1);
  assert_int_equal(res[100].calls, 0);
  fix_stop(&f);
}

static void test_connection_lost(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.copts.max_inflight = 8;
  f.hold = 1;
  fix_start(&f);
  static res_t res[50];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int i = 0; i < 50; i++)
    assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, on_result, &res[i]), 0);
  while (f.n_held < 8)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  /* The server's side resets the connection with 8 on the wire and 42 queued. */
  braid_conn_abort(braid_rpc_conn(f.srv_rpc));
  while (done_count < 50)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(res[i].calls, 1);
    assert_true(res[i].status < 0);
  }
  /* Held server requests are still answered exactly once: the answer is dropped. */
  for (int i = 0; i < 8; i++)
    assert_int_equal(braid_rpc_respond(f.held[i].req, "late", 4), BRAID_ECLOSED);
  bt_run_until(&f.t, &f.client_closed, 5000);
  assert_true(f.client_close_status < 0);
  fix_stop(&f);
  assert_int_equal(f.srv_closed, 1);
  for (int i = 0; i < 50; i++)
    assert_int_equal(res[i].calls, 1);
}

static void test_remote_error(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.fail_on = "missing";
  fix_start(&f);
  res_t ok = {0}, bad = {0};
  assert_int_equal(braid_rpc_call(f.client, "missing", 7, 0, on_result, &bad), 0);
  assert_int_equal(braid_rpc_call(f.client, "present", 7, 0, on_result, &ok), 0);
  bt_run_until(&f.t, &ok.calls, 5000);
  assert_int_equal(bad.calls, 1);
  assert_int_equal(bad.status, BRAID_EREMOTE);
  assert_int_equal(bad.code, BRAID_WIRE_APP_MIN + 7);
  assert_int_equal(bad.len, 11);
  assert_memory_equal(bad.data, "no such key", 11);
  assert_int_equal(ok.status, 0);
  fix_stop(&f);
}

static void batch_round_trip(int with_batch_cb) {
  static fix_t f;
  fix_opts(&f);
  if (with_batch_cb)
    f.scbs.on_batch = srv_on_batch;
  fix_start(&f);
  uint8_t buf[256];
  braid_batch_writer_t w;
  assert_int_equal(braid_batch_writer_init(&w, buf, sizeof(buf), 0), 0);
  const char *items[] = {"alpha", "beta", "fail", "gamma"};
  for (int i = 0; i < 4; i++)
    assert_int_equal(braid_batch_writer_add(&w, 0, items[i], strlen(items[i])), 0);
  int n = braid_batch_writer_finish(&w);
  assert_true(n > 0);
  if (!with_batch_cb)
    f.fail_on = "fail";
  res_t res = {0};
  uv_buf_t part = uv_buf_init((char *)buf, (unsigned)n);
  assert_int_equal(
      braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_BATCH, &part, 1, 0, on_result, &res), 0);
  bt_run_until(&f.t, &res.calls, 5000);
  assert_int_equal(res.status, 0);
  assert_true(res.flags & BRAID_FRAME_FLAG_BATCH);
  braid_batch_reader_t rd;
  uint32_t count;
  assert_int_equal(braid_batch_reader_init(&rd, res.data, res.len, 1, &count), 0);
  assert_int_equal(count, 4);
  for (int i = 0; i < 4; i++) {
    braid_batch_item_t it;
    assert_int_equal(braid_batch_reader_next(&rd, &it), 1);
    if (i == 2) {
      assert_int_not_equal(it.status, 0);
      continue;
    }
    assert_int_equal(it.status, 0);
    assert_int_equal(it.len, strlen(items[i]));
    if (with_batch_cb)
      assert_true(it.data[0] >= 'A' && it.data[0] <= 'Z');
    else
      assert_memory_equal(it.data, items[i], it.len);
  }
  assert_int_equal(f.batches_seen, with_batch_cb ? 1 : 0);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.srv_rpc, &st);
  assert_int_equal(st.batches, 1);
  assert_int_equal(st.requests, 4);
  fix_stop(&f);
}

static void test_batch_with_batch_handler(void **state) {
  (void)state;
  batch_round_trip(1);
}

static void test_batch_split_into_requests(void **state) {
  (void)state;
  batch_round_trip(0);
}

/* Ordered mode: lines in, lines out. The server holds the first request and answers the
 * second first; the client still gets them in order. A timed-out request's late answer is
 * consumed in its turn. */
static void test_ordered_protocol(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  braid_delimiter_opts_t d;
  braid_delimiter_opts_init(&d);
  d.delimiter = "\n";
  d.delimiter_len = 1;
  d.strip_delimiter = 0;
  assert_int_equal(braid_framer_init_delimiter(&f.sopts.framer, &d), 0);
  f.sopts.mode = BRAID_RPC_ORDERED;
  f.copts = f.sopts;
  f.hold = 1;
  fix_start(&f);
  res_t r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
  done_count = 0;
  assert_int_equal(braid_rpc_call(f.client, "one\n", 4, 0, on_result, &r1), 0);
  assert_int_equal(braid_rpc_call(f.client, "two\n", 4, 0, on_result, &r2), 0);
  assert_int_equal(braid_rpc_call(f.client, "three\n", 6, 100, on_result, &r3), 0);
  assert_int_equal(braid_rpc_call(f.client, "four\n", 5, 0, on_result, &r4), 0);
  while (f.n_held < 4)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_int_equal(braid_rpc_respond(f.held[1].req, "TWO\n", 4), 0); /* held back */
  bt_run_for(&f.t, 50);
  assert_int_equal(done_count, 0);
  assert_int_equal(braid_rpc_respond(f.held[0].req, "ONE\n", 4), 0);
  while (done_count < 2)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_memory_equal(r1.data, "ONE\n", 4);
  assert_memory_equal(r2.data, "TWO\n", 4);
  bt_run_until(&f.t, &r3.calls, 5000); /* three times out */
  assert_int_equal(r3.status, BRAID_ETIMEDOUT);
  assert_int_equal(braid_rpc_respond(f.held[2].req, "THREE\n", 6), 0); /* late, dropped */
  assert_int_equal(braid_rpc_respond(f.held[3].req, "FOUR\n", 5), 0);
  bt_run_until(&f.t, &r4.calls, 5000);
  assert_int_equal(r4.status, 0);
  assert_int_equal(r4.len, 5);
  assert_memory_equal(r4.data, "FOUR\n", 5);
  assert_int_equal(r3.calls, 1);
  fix_stop(&f);
}

static void test_goaway(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.copts.max_inflight = 2;
  f.hold = 1;
  fix_start(&f);
  static res_t res[5];
  memset(res, 0, sizeof(res));
  done_count = 0;
  for (int i = 0; i < 5; i++)
    assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, on_result, &res[i]), 0);
  while (f.n_held < 2)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_int_equal(braid_rpc_goaway(f.srv_rpc, BRAID_WIRE_SHUTTING_DOWN, "draining"), 0);
  assert_int_equal(braid_rpc_goaway(f.srv_rpc, 0, NULL), BRAID_ECLOSED);
  /* Queued requests were never sent: they fail with EGOAWAY (safe to retry). */
  while (done_count < 3)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  for (int i = 2; i < 5; i++)
    assert_int_equal(res[i].status, BRAID_EGOAWAY);
  assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, on_result, &res[0]), BRAID_ECLOSED);
  /* Taken requests are still answered, then the connection closes. */
  f.outstanding -= 2;
  assert_int_equal(braid_rpc_respond(f.held[0].req, "a", 1), 0);
  assert_int_equal(braid_rpc_respond(f.held[1].req, "b", 1), 0);
  bt_run_until(&f.t, &f.client_closed, 5000);
  assert_int_equal(res[0].status, 0);
  assert_int_equal(res[1].status, 0);
  fix_stop(&f);
}

/* Requests a client sent before it saw the goaway reach the server after it: the server
 * reads them (SHUTTING_DOWN), answers what it took, then ends the connection with FIN and
 * waits for the client to close. Closing with those requests unread would send RST instead,
 * which can destroy answers the client has not read yet: the client must see a clean EOF. */
static void raw_frame(uint8_t *out, uint8_t type, uint32_t id, const char *payload,
                      uint32_t len) {
  braid_frame_header_t h = {BRAID_FRAME_VERSION, type, 0, id, len};
  assert_int_equal(braid_frame_header_encode(out, &h), BRAID_FRAME_HEADER_SIZE);
  memcpy(out + BRAID_FRAME_HEADER_SIZE, payload, len);
}

static void test_goaway_ends_with_fin_not_reset(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.hold = 1;
  fix_start(&f);
  braid_rpc_close(f.client); /* this test talks through a plain socket */
  bt_run_until(&f.t, &f.srv_closed, 5000);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", braid_server_port(f.server), &a), 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  uint8_t req[BRAID_FRAME_HEADER_SIZE + 1];
  raw_frame(req, BRAID_FRAME_REQUEST, 1, "a", 1);
  assert_int_equal(send(fd, req, sizeof(req), 0), (ssize_t)sizeof(req));
  while (f.n_held < 1)
    bt_run_for(&f.t, 5);
  assert_int_equal(braid_rpc_goaway(f.srv_rpc, 0, "bye"), 0);
  /* Two more requests, as if sent before the goaway arrived. */
  uint8_t late[2 * sizeof(req)];
  raw_frame(late, BRAID_FRAME_REQUEST, 2, "b", 1);
  raw_frame(late + sizeof(req), BRAID_FRAME_REQUEST, 3, "c", 1);
  assert_int_equal(send(fd, late, sizeof(late), 0), (ssize_t)sizeof(late));
  bt_run_for(&f.t, 50);
  f.outstanding--;
  assert_int_equal(braid_rpc_respond(f.held[0].req, "A", 1), 0);
  /* Read to the end while the loop runs. */
  static uint8_t rx[4096];
  size_t got = 0;
  int end = 1; /* 0: EOF, else the errno */
  for (int i = 0; i < 600 && end == 1; i++) {
    bt_run_for(&f.t, 5);
    for (;;) {
      ssize_t n = recv(fd, rx + got, sizeof(rx) - got, MSG_DONTWAIT);
      if (n > 0) {
        got += (size_t)n;
        continue;
      }
      if (n == 0)
        end = 0;
      else if (errno != EAGAIN && errno != EWOULDBLOCK)
        end = errno;
      break;
    }
  }
  assert_int_equal(end, 0); /* EOF: not ECONNRESET, not still open */
  /* GOAWAY (last id 1), SHUTTING_DOWN for 2 and 3, the answer to 1. */
  int goaways = 0, refused = 0, answered = 0;
  for (size_t off = 0; off < got;) {
    braid_frame_t fr;
    int n = braid_frame_decode(rx + off, got - off, BRAID_FRAME_DEFAULT_MAX_PAYLOAD, &fr, NULL,
                               NULL);
    assert_true(n > 0);
    off += (size_t)n;
    uint16_t code;
    const char *msg;
    size_t mlen;
    if (fr.hdr.type == BRAID_FRAME_GOAWAY) {
      uint32_t last_id;
      assert_int_equal(braid_frame_goaway_decode(fr.payload, fr.hdr.payload_len, &last_id,
                                                 &code, &msg, &mlen),
                       0);
      assert_int_equal(last_id, 1);
      goaways++;
    } else if (fr.hdr.type == BRAID_FRAME_ERROR) {
      assert_int_equal(
          braid_frame_error_decode(fr.payload, fr.hdr.payload_len, &code, &msg, &mlen), 0);
      assert_int_equal(code, BRAID_WIRE_SHUTTING_DOWN);
      assert_true(fr.hdr.id == 2 || fr.hdr.id == 3);
      refused++;
    } else {
      assert_int_equal(fr.hdr.type, BRAID_FRAME_RESPONSE);
      assert_int_equal(fr.hdr.id, 1);
      assert_int_equal(fr.hdr.payload_len, 1);
      answered++;
    }
  }
  assert_int_equal(goaways, 1);
  assert_int_equal(refused, 2);
  assert_int_equal(answered, 1);
  /* The server waits for the client's close, then closes too. */
  assert_int_equal(f.srv_closed, 1);
  close(fd);
  while (f.srv_closed < 2)
    bt_run_for(&f.t, 5);
  fix_stop(&f);
}

/* A GOAWAY whose last_id is older than every request still pending (the oldest timed out
 * before the server, stalled, read anything): every pending request fails with EGOAWAY at
 * once (PROTOCOL.md: not taken, safe to retry), not only those after last_id + 1 counted
 * from the head. The server here is a raw connection that reads and says nothing else. */
static braid_conn_t *low_sconn;
static int low_status[4];
static void low_read(braid_conn_t *c, int status, const uint8_t *d, size_t l, void *a) {
  (void)c, (void)status, (void)d, (void)l, (void)a;
}
static void low_close(braid_conn_t *c, int status, void *a) {
  (void)c, (void)status, (void)a;
  low_sconn = NULL;
}
static void low_on_conn(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s, (void)arg;
  low_sconn = conn;
  braid_conn_callbacks_t cbs = {.on_read = low_read, .on_close = low_close};
  braid_conn_set_callbacks(conn, &cbs);
  assert_int_equal(braid_conn_read_start(conn), 0);
}
static void low_cb(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  low_status[(intptr_t)arg] = status;
}

static void test_goaway_below_head(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  bt_loop_init(&f.t);
  f.ccbs.on_close = cli_on_close;
  for (int i = 0; i < 4; i++)
    low_status[i] = 1; /* not completed */
  assert_int_equal(braid_server_new(&f.server, f.t.loop, NULL, low_on_conn, &f), 0);
  assert_int_equal(braid_server_listen(f.server, "127.0.0.1", 0), 0);
  assert_int_equal(
      braid_connect(NULL, f.t.loop, "127.0.0.1", braid_server_port(f.server), NULL, on_connect, &f),
      0);
  bt_run_until(&f.t, &f.connected, 5000);
  assert_int_equal(braid_rpc_call(f.client, "a", 1, 50, low_cb, (void *)1), 0);
  assert_int_equal(braid_rpc_call(f.client, "b", 1, 0, low_cb, (void *)2), 0);
  assert_int_equal(braid_rpc_call(f.client, "c", 1, 0, low_cb, (void *)3), 0);
  bt_run_for(&f.t, 200); /* request 1 times out: the client's oldest pending id is now 2 */
  assert_int_equal(low_status[1], BRAID_ETIMEDOUT);
  assert_non_null(low_sconn);
  /* GOAWAY, last_id 0 (nothing taken), code 0, no reason. */
  static const uint8_t ga[] = {0x42, 0x52, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6,
                               0, 0, 0, 0, 0, 0};
  assert_int_equal(braid_conn_write(low_sconn, ga, sizeof(ga), NULL, NULL), 0);
  for (int i = 0; i < 500 && (low_status[2] == 1 || low_status[3] == 1); i++)
    bt_run_for(&f.t, 10);
  assert_int_equal(low_status[2], BRAID_EGOAWAY);
  assert_int_equal(low_status[3], BRAID_EGOAWAY);
  braid_rpc_close(f.client);
  assert_int_equal(braid_server_close(f.server, srv_closed_cb, &f), 0);
  bt_run(&f.t, 5000);
  bt_loop_done(&f.t);
}

/* A call whose frame does not fit the connection's write queue is refused whole: its header
 * must not be left queued, or the server reads the next request as its payload and every
 * answer after it goes to the wrong call. Client queue 4096 bytes: A (3000 B) fits, B
 * (3000 B) does not; once A is flushed, C gets C's own echo. */
static int whole_connected;
static braid_rpc_t *whole_cli;
static res_t whole_res;
static int res_dummy;
static void whole_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  fix_t *f = arg;
  assert_int_equal(status, 0);
  assert_int_equal(braid_rpc_client(&whole_cli, conn, &f->copts, NULL, NULL), 0);
  whole_connected = 1;
}
static void whole_ignore(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc, (void)r, (void)arg;
}

static void test_refused_frame_leaves_nothing(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  bt_loop_init(&f.t);
  f.scbs.on_request = srv_on_request; /* echo */
  f.scbs.on_close = srv_on_close;
  whole_connected = 0;
  memset(&whole_res, 0, sizeof(whole_res));
  done_count = 0;
  assert_int_equal(braid_server_new(&f.server, f.t.loop, NULL, on_connection, &f), 0);
  assert_int_equal(braid_server_listen(f.server, "127.0.0.1", 0), 0);
  braid_client_opts_t co;
  braid_client_opts_init(&co);
  co.conn.max_queue_bytes = 4096;
  co.conn.high_watermark_bytes = 4096;
  co.conn.low_watermark_bytes = 1024;
  assert_int_equal(braid_connect(NULL, f.t.loop, "127.0.0.1", braid_server_port(f.server), &co,
                                 whole_connect, &f),
                   0);
  bt_run_until(&f.t, &whole_connected, 5000);
  static char a[3000], b[3000], c[2984];
  memset(a, 'a', sizeof(a));
  memset(b, 'b', sizeof(b));
  memset(c, 'c', sizeof(c));
  assert_int_equal(braid_rpc_call(whole_cli, a, sizeof(a), 0, whole_ignore, NULL), 0);
  assert_int_equal(braid_rpc_call(whole_cli, b, sizeof(b), 0, whole_ignore, NULL),
                   BRAID_EQUEUEFULL);
  braid_rpc_stats_t st;
  braid_rpc_stats(whole_cli, &st);
  assert_int_equal(st.write_errors, 1);
  bt_run_for(&f.t, 100);
  assert_int_equal(braid_rpc_call(whole_cli, c, sizeof(c), 0, on_result, &whole_res), 0);
  while (done_count < 1)
    bt_run_for(&f.t, 10);
  assert_int_equal(whole_res.status, 0);
  assert_int_equal(whole_res.len, sizeof(c));
  assert_int_equal(whole_res.data[0], 'c');
  braid_rpc_close(whole_cli);
  assert_int_equal(braid_server_close(f.server, srv_closed_cb, &f), 0);
  bt_run(&f.t, 5000);
  bt_loop_done(&f.t);
}

/* A batch frame with more items than the server handles at once is refused before a
 * request is made for any item (a 4-byte item would otherwise cost ~112 bytes of server
 * memory); one at the cap is served. */
static int cap_batches;
static void cap_on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                         uint32_t count, void *arg) {
  (void)rpc, (void)items, (void)arg;
  cap_batches++;
  for (uint32_t i = 0; i < count; i++)
    assert_int_equal(braid_rpc_respond(reqs[i], "k", 1), 0);
}

static void test_batch_over_inflight_cap(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.max_inflight = 4;
  f.scbs.on_batch = cap_on_batch;
  fix_start(&f);
  cap_batches = 0;
  done_count = 0;
  static res_t res[2];
  memset(res, 0, sizeof(res));
  for (int k = 0; k < 2; k++) {
    uint32_t n = k == 0 ? 5 : 4; /* over the cap, then at it */
    uint8_t p[4 + 5 * 5];
    size_t plen = 4;
    p[0] = p[1] = p[2] = 0;
    p[3] = (uint8_t)n;
    for (uint32_t i = 0; i < n; i++) { /* items of 1 byte: length 00 00 00 01, then 'x' */
      p[plen] = p[plen + 1] = p[plen + 2] = 0;
      p[plen + 3] = 1;
      p[plen + 4] = 'x';
      plen += 5;
    }
    uv_buf_t part = uv_buf_init((char *)p, (unsigned)plen);
    assert_int_equal(
        braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_BATCH, &part, 1, 0, on_result, &res[k]),
        0);
    while (done_count < k + 1)
      bt_run_for(&f.t, 10);
  }
  assert_int_equal(res[0].status, BRAID_EREMOTE);
  assert_int_equal(res[0].code, BRAID_WIRE_OVERLOADED);
  assert_int_equal(res[1].status, 0);
  assert_int_equal(cap_batches, 1);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.srv_rpc, &st);
  assert_int_equal(st.oversized_batches, 1);
  assert_int_equal(st.requests, 4);
  fix_stop(&f);
}

/* Garbage from a client: the server answers with a connection ERROR and closes. */
typedef struct raw_s {
  char rx[256];
  size_t len;
  int eof;
  int closed;
} raw_t;

static void raw_eof(braid_conn_t *c, void *arg) {
  ((raw_t *)arg)->eof = 1;
  braid_conn_close(c);
}

static void raw_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  raw_t *r = arg;
  if (status == 0 && r->len + len <= sizeof(r->rx)) {
    memcpy(r->rx + r->len, data, len);
    r->len += len;
  }
  if (status < 0) {
    r->eof = 1;
    braid_conn_close(c);
  }
}

static void raw_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  ((raw_t *)arg)->closed = 1;
}

static raw_t raw;
static const char *raw_send = "GET / HTTP/1.1\r\n\r\n";
static size_t raw_send_len = 18;
static void on_raw_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  assert_int_equal(status, 0);
  braid_conn_callbacks_t cbs = {.on_read = raw_read, .on_eof = raw_eof, .on_close = raw_close};
  braid_conn_set_callbacks(conn, &cbs);
  braid_conn_set_data(conn, &raw);
  braid_conn_read_start(conn);
  assert_int_equal(braid_conn_write(conn, raw_send, raw_send_len, NULL, NULL), 0);
  *(int *)arg = 1;
}

static void garbage_gets_error_frame(uint16_t expected) {
  static fix_t f;
  fix_opts(&f);
  bt_loop_init(&f.t);
  f.scbs.on_request = srv_on_request;
  f.scbs.on_close = srv_on_close;
  memset(&raw, 0, sizeof(raw));
  assert_int_equal(braid_server_new(&f.server, f.t.loop, NULL, on_connection, &f), 0);
  assert_int_equal(braid_server_listen(f.server, "127.0.0.1", 0), 0);
  int connected = 0;
  assert_int_equal(braid_connect(NULL, f.t.loop, "127.0.0.1", braid_server_port(f.server), NULL,
                                 on_raw_connect, &connected),
                   0);
  bt_run_until(&f.t, &raw.closed, 5000);
  assert_true(raw.len >= BRAID_FRAME_HEADER_SIZE + 2);
  braid_frame_t fr;
  assert_true(braid_frame_decode(raw.rx, raw.len, BRAID_FRAME_DEFAULT_MAX_PAYLOAD, &fr, NULL,
                                 NULL) > 0);
  assert_int_equal(fr.hdr.type, BRAID_FRAME_ERROR);
  assert_int_equal(fr.hdr.id, 0);
  uint16_t code;
  const char *msg;
  size_t mlen;
  assert_int_equal(braid_frame_error_decode(fr.payload, fr.hdr.payload_len, &code, &msg, &mlen),
                   0);
  assert_int_equal(code, expected);
  assert_int_equal(braid_server_close(f.server, srv_closed_cb, &f), 0);
  bt_run(&f.t, 5000);
  assert_int_equal(f.srv_closed, 1);
  bt_loop_done(&f.t);
}

static void test_garbage_gets_error_frame(void **state) {
  (void)state;
  raw_send = "GET / HTTP/1.1\r\n\r\n";
  raw_send_len = 18;
  garbage_gets_error_frame(BRAID_WIRE_PROTOCOL);
}

static void test_other_version_gets_version_error(void **state) {
  (void)state;
  /* A version 2 header: refused with the spec's VERSION code, not a generic one. */
  static const char v2[16] = {'B', 'R', 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  raw_send = v2;
  raw_send_len = sizeof(v2);
  garbage_gets_error_frame(BRAID_WIRE_VERSION);
}

/* The GZIP flag: both sides compress what is worth it; a bomb or corrupt data fails only its
 * own request, and the connection goes on. */
static void test_gzip_payloads(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.gzip_min_bytes = 512;
  f.sopts.max_payload_bytes = 64 << 10;
  f.copts.gzip_min_bytes = 512;
  fix_start(&f);
  static char text[20000];
  for (size_t i = 0; i < sizeof(text); i++)
    text[i] = "the quick brown fox jumps over the lazy dog "[i % 44];
  static res_t big;
  memset(&big, 0, sizeof(big));
  braid_conn_stats_t before, after;
  braid_conn_stats(braid_rpc_conn(f.client), &before);
  assert_int_equal(braid_rpc_call(f.client, text, sizeof(text), 0, on_result, &big), 0);
  bt_run_until(&f.t, &big.calls, 5000);
  assert_int_equal(big.status, 0);
  assert_int_equal(big.len, sizeof(big.data)); /* res_t keeps the first 4 KiB */
  assert_memory_equal(big.data, text, sizeof(big.data));
  braid_conn_stats(braid_rpc_conn(f.client), &after);
  /* Both ways compressed: far fewer bytes moved than the 20,000 sent and echoed. */
  assert_true(after.bytes_written - before.bytes_written < 2000);
  assert_true(after.bytes_read - before.bytes_read < 2000);

  /* A bomb: 1 MiB of zeros in a few KiB, against a 64 KiB maximum. */
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, NULL), 0);
  char *zeros = calloc(1, 1 << 20);
  void *bomb;
  size_t bomb_len;
  assert_int_equal(braid_gzip_compress_alloc(gz, zeros, 1 << 20, &bomb, &bomb_len), 0);
  free(zeros);
  res_t r_bomb = {0}, r_bad = {0}, r_after = {0};
  uv_buf_t part = uv_buf_init(bomb, (unsigned)bomb_len);
  assert_int_equal(braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_GZIP, &part, 1, 0, on_result,
                                        &r_bomb),
                   0);
  static char junk_bytes[] = "\x1f\x8b\x08\x00 not deflate at all";
  uv_buf_t junk = uv_buf_init(junk_bytes, sizeof(junk_bytes) - 1);
  assert_int_equal(
      braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_GZIP, &junk, 1, 0, on_result, &r_bad), 0);
  assert_int_equal(braid_rpc_call(f.client, "still here", 10, 0, on_result, &r_after), 0);
  bt_run_until(&f.t, &r_after.calls, 5000);
  /* Those two announce large sizes in their gzip trailers (1 MiB; the junk's last four bytes
   * read as a huge size), so they are inflated on the threadpool and may answer later. */
  bt_run_until(&f.t, &r_bomb.calls, 5000);
  bt_run_until(&f.t, &r_bad.calls, 5000);
  assert_int_equal(r_bomb.status, BRAID_EREMOTE);
  assert_int_equal(r_bomb.code, BRAID_WIRE_TOO_BIG);
  assert_int_equal(r_bad.status, BRAID_EREMOTE);
  assert_int_equal(r_bad.code, BRAID_WIRE_BAD_REQUEST);
  assert_int_equal(r_after.status, 0);
  assert_memory_equal(r_after.data, "still here", 10);
  braid_gzip_buf_free(bomb);
  braid_gzip_free(gz);
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  o.gzip_level = 0;
  braid_rpc_t *r;
  assert_int_equal(braid_rpc_client(&r, braid_rpc_conn(f.client), &o, NULL, NULL), BRAID_EINVAL);
  fix_stop(&f);
}

/* A large gzip-flagged request is inflated on the server's threadpool and arrives intact;
 * the large echoed answer is compressed on the server's threadpool and inflates on the
 * client's loop; a connection that closes while a request is inflating (or its answer is
 * compressing) leaves nothing behind (the server channel still closes once). */
static void test_gzip_large_offloaded(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.gzip_min_bytes = 512;
  f.sopts.max_payload_bytes = 4 << 20;
  f.copts.gzip_min_bytes = 512;
  f.copts.max_payload_bytes = 4 << 20;
  fix_start(&f);
  enum { BIG = 1 << 20 };
  char *text = malloc(BIG);
  uint64_t x = 88172645463325252u;
  for (size_t i = 0; i < BIG; i++) { /* compressible, not trivially: words from a small set */
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    text[i] = "abcdefgh "[x % 9];
  }
  static res_t r;
  memset(&r, 0, sizeof(r));
  assert_int_equal(braid_rpc_call(f.client, text, BIG, 0, on_result, &r), 0);
  bt_run_until(&f.t, &r.calls, 10000);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.len, sizeof(r.data)); /* res_t keeps the first 4 KiB */
  assert_memory_equal(r.data, text, sizeof(r.data));
  braid_rpc_stats_t cs, ss;
  braid_rpc_stats(f.client, &cs);
  braid_rpc_stats(f.srv_rpc, &ss);
  assert_int_equal(ss.inflated_offloaded, 1);
  assert_int_equal(ss.deflated_offloaded, 1); /* the 1 MiB echo was compressed there too */
  assert_int_equal(cs.inflated_offloaded, 0); /* a client inflates its answers on the loop */
  braid_conn_stats_t conn_st;
  braid_conn_stats(braid_rpc_conn(f.client), &conn_st);
  assert_true(conn_st.bytes_read < BIG / 2); /* the answer came compressed */
  /* Small ones stay on the loop. */
  static res_t small;
  memset(&small, 0, sizeof(small));
  assert_int_equal(braid_rpc_call(f.client, text, 2000, 0, on_result, &small), 0);
  bt_run_until(&f.t, &small.calls, 5000);
  assert_int_equal(small.status, 0);
  braid_rpc_stats(f.srv_rpc, &ss);
  assert_int_equal(ss.inflated_offloaded, 1);
  assert_int_equal(ss.deflated_offloaded, 1);
  /* A big request, then the client goes away at once: the server's inflate finishes after
   * its connection closed; the answer is dropped and the channel closes exactly once. */
  static res_t gone;
  memset(&gone, 0, sizeof(gone));
  assert_int_equal(braid_rpc_call(f.client, text, BIG, 0, on_result, &gone), 0);
  while (f.srv_rpc) {
    braid_rpc_stats(f.srv_rpc, &ss);
    if (ss.inflated_offloaded == 2)
      break;
    uv_run(&f.t.uv, UV_RUN_ONCE);
  }
  braid_rpc_close(f.client);
  bt_run_until(&f.t, &f.srv_closed, 5000);
  assert_int_equal(gone.calls, 1);
  assert_int_equal(gone.status, BRAID_ECANCELED);
  assert_int_equal(f.srv_closed, 1);
  free(text);
  fix_stop(&f);
}

static char *mk_text(size_t n) {
  char *text = malloc(n);
  uint64_t x = 88172645463325252u;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    text[i] = "abcdefgh "[x % 9];
  }
  return text;
}

/* A client inflates its answers on the loop: a large compressed answer is followed at once
 * by the call queued behind it (max_inflight 1). (With answers inflated on the threadpool,
 * nothing sent the queued call: found by the third review.) */
static void test_large_gzip_answer_then_queued_call(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.gzip_min_bytes = 512;
  f.sopts.max_payload_bytes = 4 << 20;
  f.copts.max_payload_bytes = 4 << 20;
  f.copts.max_inflight = 1;
  fix_start(&f);
  enum { BIG = 1 << 20 };
  char *text = mk_text(BIG);
  static res_t a, b;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  assert_int_equal(braid_rpc_call(f.client, text, BIG, 0, on_result, &a), 0);
  assert_int_equal(braid_rpc_call(f.client, "b", 1, 0, on_result, &b), 0); /* queued */
  bt_run_until(&f.t, &a.calls, 10000);
  assert_int_equal(a.status, 0);
  bt_run_until(&f.t, &b.calls, 5000);
  assert_int_equal(b.status, 0);
  free(text);
  fix_stop(&f);
}

/* The server answers with a large gzip body and then goes away (GOAWAY, then FIN right behind
 * the answer): the client, which read the whole answer, delivers it, not UV_EOF. (With the
 * answer inflating on the threadpool, the EOF failed the request first: third review.) */
static fix_t fb;
static void srv_answer_then_goaway(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                                   size_t len, void *arg) {
  (void)arg;
  assert_int_equal(braid_rpc_respond(req, data, len), 0);
  assert_int_equal(braid_rpc_goaway(rpc, BRAID_WIRE_OK, "bye"), 0);
}
static void test_large_gzip_answer_then_fin(void **state) {
  (void)state;
  fix_opts(&fb);
  fb.sopts.gzip_min_bytes = 512;
  fb.sopts.max_payload_bytes = 4 << 20;
  fb.copts.max_payload_bytes = 4 << 20;
  fb.scbs.on_request = srv_answer_then_goaway;
  fix_start(&fb);
  enum { BIG = 1 << 20 };
  char *text = mk_text(BIG);
  static res_t a;
  memset(&a, 0, sizeof(a));
  assert_int_equal(braid_rpc_call(fb.client, text, BIG, 0, on_result, &a), 0);
  bt_run_until(&fb.t, &a.calls, 10000);
  assert_int_equal(a.status, 0);
  assert_memory_equal(a.data, text, sizeof(a.data));
  free(text);
  fix_stop(&fb);
}

/* A raw client sends a big gzip request (inflated on the server's threadpool), a small plain
 * one behind it, then FIN: the server (max_inflight 1) answers both and closes once. */
static fix_t fc;
static braid_conn_t *eofc;
static int eofc_eof, eofc_closed;
static size_t eofc_bytes;
static void eofc_eof_cb(braid_conn_t *c, void *arg) {
  (void)arg;
  eofc_eof = 1;
  braid_conn_close(c);
}
static void eofc_read(braid_conn_t *c, int status, const uint8_t *d, size_t n, void *arg) {
  (void)c;
  (void)d;
  (void)arg;
  if (status < 0) { eofc_eof = 1; return; }
  eofc_bytes += n;
}
static void eofc_close(braid_conn_t *c, int status, void *arg) { (void)c; (void)status; (void)arg; eofc_closed = 1; }
static void eofc_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req; (void)arg;
  assert_int_equal(status, 0);
  eofc = conn;
  braid_conn_callbacks_t cb = {.on_read = eofc_read, .on_eof = eofc_eof_cb, .on_close = eofc_close};
  braid_conn_set_callbacks(conn, &cb);
  braid_conn_read_start(conn);
  fc.connected = 1;
}
static void eofc_frame(uint8_t type, uint8_t flags, uint32_t id, const void *p, size_t len) {
  braid_frame_header_t h = {BRAID_FRAME_VERSION, type, flags, id, (uint32_t)len};
  uint8_t hdr[BRAID_FRAME_HEADER_SIZE];
  assert_int_equal(braid_frame_header_encode(hdr, &h), BRAID_FRAME_HEADER_SIZE);
  assert_int_equal(braid_conn_write(eofc, hdr, sizeof(hdr), NULL, NULL), 0);
  assert_int_equal(braid_conn_write(eofc, p, len, NULL, NULL), 0);
}
static void test_server_eof_while_inflating(void **state) {
  (void)state;
  fix_opts(&fc);
  fc.sopts.max_payload_bytes = 4 << 20;
  fc.sopts.max_inflight = 1;
  bt_loop_init(&fc.t);
  fc.scbs.on_request = srv_on_request;
  fc.scbs.on_close = srv_on_close;
  assert_int_equal(braid_server_new(&fc.server, fc.t.loop, NULL, on_connection, &fc), 0);
  assert_int_equal(braid_server_listen(fc.server, "127.0.0.1", 0), 0);
  assert_int_equal(braid_connect(NULL, fc.t.loop, "127.0.0.1", braid_server_port(fc.server), NULL,
                                 eofc_connect, &fc),
                   0);
  bt_run_until(&fc.t, &fc.connected, 5000);
  enum { BIG = 1 << 20 };
  char *text = mk_text(BIG);
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, NULL), 0);
  void *z; size_t zl;
  assert_int_equal(braid_gzip_compress_alloc(gz, text, BIG, &z, &zl), 0);
  eofc_frame(BRAID_FRAME_REQUEST, BRAID_FRAME_FLAG_GZIP, 1, z, zl);
  eofc_frame(BRAID_FRAME_REQUEST, 0, 2, "x", 1);
  assert_int_equal(braid_conn_shutdown(eofc), 0);
  bt_run_until(&fc.t, &eofc_closed, 10000);
  bt_run_until(&fc.t, &fc.srv_closed, 10000);
  assert_true(eofc_bytes > 2 * BRAID_FRAME_HEADER_SIZE + 1); /* both answered */
  assert_int_equal(fc.srv_closed, 1);
  braid_gzip_buf_free(z);
  braid_gzip_free(gz);
  free(text);
  assert_int_equal(braid_server_close(fc.server, srv_closed_cb, &fc), 0);
  bt_run(&fc.t, 5000);
  bt_loop_done(&fc.t);
}

/* A handler that answers with 1 MiB (compressed on the threadpool) and at once closes its
 * channel: braid_rpc_close waits for the answer to be queued, so the client gets it whole.
 * (It closed over the compressing answer and the client got UV_EOF: fourth review.) */
enum { CLOSE_ANS = 1 << 20 };
static char *close_ans;
static int close_calls, close_status, close_intact;
static void close_on_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc, (void)arg;
  close_calls++;
  close_status = status;
  close_intact = r->len == CLOSE_ANS && memcmp(r->data, close_ans, CLOSE_ANS) == 0;
}
static void close_answer_then_close(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *d,
                                    size_t l, void *arg) {
  (void)d, (void)l, (void)arg;
  assert_int_equal(braid_rpc_respond(req, close_ans, CLOSE_ANS), 0);
  assert_int_equal(braid_rpc_close(rpc), 0);
}

static void test_respond_then_close_waits_for_compression(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.gzip_min_bytes = 1024;
  f.copts.max_payload_bytes = 4 << 20;
  close_ans = malloc(CLOSE_ANS);
  memset(close_ans, 'a', CLOSE_ANS);
  close_calls = 0;
  f.scbs.on_request = close_answer_then_close;
  fix_start(&f);
  assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, close_on_answer, NULL), 0);
  bt_run_until(&f.t, &close_calls, 5000);
  assert_int_equal(close_status, 0);
  assert_true(close_intact);
  bt_run_until(&f.t, &f.srv_closed, 5000);
  assert_int_equal(f.srv_closed, 1);
  free(close_ans);
  fix_stop(&f);
}

static void test_bad_arguments(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  o.mode = BRAID_RPC_ORDERED; /* no framer */
  braid_rpc_t *r;
  assert_int_equal(braid_rpc_client(&r, braid_rpc_conn(f.client), &o, NULL, NULL), BRAID_EINVAL);
  braid_rpc_opts_init(&o);
  o.max_inflight = 0;
  assert_int_equal(braid_rpc_client(&r, braid_rpc_conn(f.client), &o, NULL, NULL), BRAID_EINVAL);
  braid_rpc_opts_init(&o);
  /* A server needs on_request (NULL callbacks, or none in them). */
  assert_int_equal(braid_rpc_server(&r, braid_rpc_conn(f.client), &o, NULL, NULL), BRAID_EINVAL);
  braid_rpc_callbacks_t none = {0};
  assert_int_equal(braid_rpc_server(&r, braid_rpc_conn(f.client), &o, &none, NULL), BRAID_EINVAL);
  /* The validator names the field (API.md rule 2), and a framer left unset is "not set"
   * (0.1.0 needed a framer_set flag beside it). */
  braid_opts_error_t err;
  o.mode = BRAID_RPC_ORDERED;
  assert_int_equal(braid_rpc_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "framer");
  assert_int_equal(
      braid_framer_init_delimiter(&o.framer, &(braid_delimiter_opts_t){.delimiter = "\n",
                                                                       .delimiter_len = 1,
                                                                       .max_frame_bytes = 1024,
                                                                       .strip_delimiter = 1}),
      0);
  assert_int_equal(braid_rpc_opts_validate(&o, &err), 0);
  braid_rpc_opts_init(&o);
  o.gzip_level = 10;
  assert_int_equal(braid_rpc_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "gzip_level");
  /* User data (API.md rule 3): the fixture gave each channel the fixture. */
  assert_ptr_equal(braid_rpc_get_data(f.client), &f);
  braid_rpc_set_data(f.client, &res_dummy);
  assert_ptr_equal(braid_rpc_get_data(f.client), &res_dummy);
  braid_rpc_set_data(f.client, &f);
  res_t res = {0};
  assert_int_equal(braid_rpc_call(f.client, NULL, 3, 0, on_result, &res), BRAID_EINVAL);
  assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_rpc_call_parts(f.client, 0x80, NULL, 0, 0, on_result, &res),
                   BRAID_EINVAL);
  assert_int_equal(braid_rpc_respond(NULL, "x", 1), BRAID_EINVAL);
  /* Close with requests pending: each completes once with ECANCELED. */
  f.hold = 1;
  res_t a = {0}, b = {0};
  assert_int_equal(braid_rpc_call(f.client, "a", 1, 0, on_result, &a), 0);
  assert_int_equal(braid_rpc_call(f.client, "b", 1, 0, on_result, &b), 0);
  while (f.n_held < 2)
    uv_run(&f.t.uv, UV_RUN_ONCE);
  assert_int_equal(braid_rpc_close(f.client), 0);
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_int_equal(a.status, BRAID_ECANCELED);
  assert_int_equal(braid_rpc_close(f.client), 0);
  bt_run_until(&f.t, &f.client_closed, 5000);
  for (int i = 0; i < 2; i++)
    braid_rpc_respond(f.held[i].req, "z", 1);
  fix_stop(&f);
  assert_int_equal(a.calls, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipelined),
      cmocka_unit_test(test_out_of_order_and_deadline),
      cmocka_unit_test(test_inflight_cap),
      cmocka_unit_test(test_connection_lost),
      cmocka_unit_test(test_remote_error),
      cmocka_unit_test(test_batch_with_batch_handler),
      cmocka_unit_test(test_batch_split_into_requests),
      cmocka_unit_test(test_ordered_protocol),
      cmocka_unit_test(test_goaway),
      cmocka_unit_test(test_goaway_ends_with_fin_not_reset),
      cmocka_unit_test(test_goaway_below_head),
      cmocka_unit_test(test_refused_frame_leaves_nothing),
      cmocka_unit_test(test_batch_over_inflight_cap),
      cmocka_unit_test(test_garbage_gets_error_frame),
      cmocka_unit_test(test_other_version_gets_version_error),
      cmocka_unit_test(test_gzip_payloads),
      cmocka_unit_test(test_gzip_large_offloaded),
      cmocka_unit_test(test_large_gzip_answer_then_queued_call),
      cmocka_unit_test(test_large_gzip_answer_then_fin),
      cmocka_unit_test(test_server_eof_while_inflating),
      cmocka_unit_test(test_respond_then_close_waits_for_compression),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
