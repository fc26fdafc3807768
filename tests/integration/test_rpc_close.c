/* How a braid server channel ends a connection, seen from a raw client socket: after a
 * GOAWAY it lingers (FIN out, reading and dropping late requests until the client closes,
 * never a reset), and when its client stops reading and an answer cannot be queued it closes
 * the connection and braid_rpc_respond() says BRAID_ECLOSED (single and batch answers alike).
 * Also: a refused request is counted in write_errors on the write-chain path as on the flat
 * one. (From the second review of session 2; each test failed on the code before its fix.) */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "../support.h"
#include "internal.h"
#include "rpc_fixture.h"

static void raw_frame(uint8_t *out, uint8_t type, uint32_t id, const char *payload, uint32_t len) {
  braid_frame_header_t h = {BRAID_FRAME_VERSION, type, 0, id, len};
  assert_int_equal(braid_frame_header_encode(out, &h), BRAID_FRAME_HEADER_SIZE);
  if (payload) memcpy(out + BRAID_FRAME_HEADER_SIZE, payload, len);
}

/* A request that reaches the server after its goaway, once every answer is out (lingering):
 * the server reads and drops it until the client closes. (It used to answer it, the write
 * was refused after the FIN, and the connection closed at once over unread bytes: RST.) */
static void test_linger_drops_late_requests(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.hold = 1;
  fix_start(&f);
  braid_rpc_close(f.client);
  bt_run_until(&f.t, &f.srv_closed, 5000);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", braid_server_port(f.server), &a), 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  uint8_t req[BRAID_FRAME_HEADER_SIZE + 1];
  raw_frame(req, BRAID_FRAME_REQUEST, 1, "a", 1);
  assert_int_equal(send(fd, req, sizeof(req), 0), (ssize_t)sizeof(req));
  while (f.n_held < 1)
    bt_run_for(&f.t, 5);
  assert_int_equal(braid_rpc_goaway(f.srv_rpc, 0, "bye"), 0);
  f.outstanding--;
  assert_int_equal(braid_rpc_respond(f.held[0].req, "A", 1), 0);
  bt_run_for(&f.t, 20); /* GOAWAY, the answer and FIN are out; the client has not read them */
  assert_int_equal(f.srv_closed, 1);
  /* Requests the client sent before it read the GOAWAY: id 2, then id 3 with 200 KB. */
  enum { BIG = 200 * 1024 };
  static uint8_t late[2 * BRAID_FRAME_HEADER_SIZE + 1 + BIG];
  raw_frame(late, BRAID_FRAME_REQUEST, 2, "b", 1);
  raw_frame(late + sizeof(req), BRAID_FRAME_REQUEST, 3, NULL, BIG);
  size_t sent = 0;
  for (int i = 0; i < 100 && sent < sizeof(late); i++) {
    ssize_t n = send(fd, late + sent, sizeof(late) - sent, MSG_DONTWAIT);
    if (n > 0) sent += (size_t)n;
    else break;
  }
  bt_run_for(&f.t, 50);
  static uint8_t rx[65536];
  size_t got = 0;
  int end = 1;
  for (int i = 0; i < 100 && end == 1; i++) {
    ssize_t n = recv(fd, rx + got, sizeof(rx) - got, MSG_DONTWAIT);
    if (n > 0) { got += (size_t)n; continue; }
    if (n == 0) end = 0;
    else if (errno != EAGAIN) end = errno;
    else bt_run_for(&f.t, 5);
  }
  int soerr = 0;
  socklen_t sl = sizeof(soerr);
  assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl), 0);
  assert_int_equal(soerr, 0);
  assert_true(got > 0); /* the GOAWAY and the answer */
  assert_int_equal(f.srv_closed, 1); /* expected: still lingering, waiting for the client */
  assert_int_equal(end, 0);          /* expected: clean EOF, never ECONNRESET */
  close(fd);
  fix_stop(&f);
}


/* An answer that cannot be queued (client not reading, server queue at its 2 KiB hard cap):
 * the connection is closed and braid_rpc_respond says BRAID_ECLOSED, for a single answer and
 * for the answer that completes a batch (that one used to return 0). */
static int batch_rc[2], single_rc = 99, got_batch, got_single;
static braid_rpc_t *q_srv;
static int q_closed;
static char big[1500];
static void q_on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                       uint32_t count, void *arg) {
  (void)rpc; (void)items; (void)arg;
  assert_int_equal(count, 2);
  batch_rc[0] = braid_rpc_respond(reqs[0], big, sizeof(big));
  batch_rc[1] = braid_rpc_respond(reqs[1], big, sizeof(big));
  got_batch = 1;
}
static void q_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                         void *arg) {
  (void)rpc; (void)data; (void)len; (void)arg;
  static char bigger[3000];
  single_rc = braid_rpc_respond(req, bigger, sizeof(bigger));
  got_single = 1;
}
static void q_on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc; (void)status; (void)arg;
  q_closed++;
}
static void q_on_conn(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  static const braid_rpc_callbacks_t cbs = {
      .on_request = q_on_request, .on_batch = q_on_batch, .on_close = q_on_close};
  assert_int_equal(braid_rpc_server(&q_srv, conn, arg, &cbs, NULL), 0);
}
static void q_srv_closed(braid_server_t *s, int status, void *arg) {
  (void)s; (void)status;
  *(int *)arg = 1;
}
static void run_one(int batch) {
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.conn.max_queue_bytes = 2048;
  so.conn.high_watermark_bytes = 2048;
  so.conn.low_watermark_bytes = 512;
  static braid_rpc_opts_t ro;
  braid_rpc_opts_init(&ro);
  braid_server_t *server;
  assert_int_equal(braid_server_new(&server, t.loop, &so, q_on_conn, &ro), 0);
  assert_int_equal(braid_server_listen(server, "127.0.0.1", 0), 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", braid_server_port(server), &a), 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  uint8_t payload[64];
  size_t plen;
  if (batch) {
    braid_batch_writer_t w;
    assert_int_equal(braid_batch_writer_init(&w, payload, sizeof(payload), 0), 0);
    assert_int_equal(braid_batch_writer_add(&w, 0, "x", 1), 0);
    assert_int_equal(braid_batch_writer_add(&w, 0, "y", 1), 0);
    plen = (size_t)braid_batch_writer_finish(&w);
  } else {
    payload[0] = 'z';
    plen = 1;
  }
  uint8_t frame[BRAID_FRAME_HEADER_SIZE + 64];
  braid_frame_header_t h = {BRAID_FRAME_VERSION, BRAID_FRAME_REQUEST,
                            batch ? BRAID_FRAME_FLAG_BATCH : 0, 1, (uint32_t)plen};
  braid_frame_header_encode(frame, &h);
  memcpy(frame + BRAID_FRAME_HEADER_SIZE, payload, plen);
  assert_int_equal(send(fd, frame, BRAID_FRAME_HEADER_SIZE + plen, 0),
                   (ssize_t)(BRAID_FRAME_HEADER_SIZE + plen));
  int *got = batch ? &got_batch : &got_single;
  for (int i = 0; i < 400 && !*got; i++)
    bt_run_for(&t, 5);
  close(fd);
  int sc = 0;
  assert_int_equal(braid_server_close(server, q_srv_closed, &sc), 0);
  bt_run(&t, 5000);
  bt_loop_done(&t);
  if (batch)
    assert_int_equal(batch_rc[1], BRAID_ECLOSED);
  else
    assert_int_equal(single_rc, BRAID_ECLOSED);
}
static void test_single_answer_refused(void **state) { (void)state; run_one(0); }
static void test_batch_answer_refused(void **state) { (void)state; run_one(1); }


/* write_errors counts a refused request frame on the chain path as on the flat path. */
static void nop_cb(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc; (void)r; (void)arg;
}
static void test_wchain_write_errors(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  assert_int_equal(braid_conn_shutdown(braid_rpc_conn(f.client)), 0);
  braid_rpc_stats_t st;
  assert_int_equal(braid_rpc_call(f.client, "x", 1, 0, nop_cb, NULL), BRAID_ECLOSED);
  braid_rpc_stats(f.client, &st);
  uint64_t flat = st.write_errors;
  braid__wchain_t w = {0};
  static const uint8_t room[BRAID_FRAME_HEADER_SIZE + 5] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                            0, 0, 0, 1, 0};
  assert_int_equal(braid__wchain_append(f.t.loop, &w, room, sizeof(room)), 0);
  assert_int_equal(braid__rpc_call_wchain(f.client, BRAID_FRAME_FLAG_BATCH, &w, 0, nop_cb, NULL),
                   BRAID_ECLOSED);
  braid__wchain_free(f.t.loop, &w);
  braid_rpc_stats(f.client, &st);
  fix_stop(&f);
  assert_int_equal(st.write_errors, flat + 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linger_drops_late_requests),
      cmocka_unit_test(test_single_answer_refused),
      cmocka_unit_test(test_batch_answer_refused),
      cmocka_unit_test(test_wchain_write_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
