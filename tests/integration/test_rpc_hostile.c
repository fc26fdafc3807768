/* An rpc server channel against clients that misbehave, and handlers that do (issue 9): a
 * request answered twice or after its slot was reused, answers over the peer's maximum,
 * pipelining clients that never read, gzip members whose trailer lies, frames a server must
 * not receive, request ids that go backwards, a stream that ends mid-frame, and frames that
 * trickle in. Raw client sockets where the client must misbehave; each test failed on the
 * code before its fix. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "../support.h"
#include "internal.h"
#include "rpc_fixture.h"

/* ---- raw client helpers ---------------------------------------------------------------- */

static size_t raw_frame(uint8_t *out, uint8_t type, uint8_t flags, uint32_t id,
                        const void *payload, uint32_t len) {
  braid_frame_header_t h = {BRAID_FRAME_VERSION, type, flags, id, len};
  assert_int_equal(braid_frame_header_encode(out, &h), BRAID_FRAME_HEADER_SIZE);
  if (payload && len)
    memcpy(out + BRAID_FRAME_HEADER_SIZE, payload, len);
  return BRAID_FRAME_HEADER_SIZE + len;
}

static int raw_connect(braid_server_t *server) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", braid_server_port(server), &a), 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  return fd;
}

static void raw_send(bt_loop_t *t, int fd, const void *buf, size_t len) {
  size_t sent = 0;
  for (int i = 0; i < 2000 && sent < len; i++) {
    ssize_t n = send(fd, (const char *)buf + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0)
      sent += (size_t)n;
    else
      bt_run_for(t, 2);
  }
  assert_int_equal(sent, len);
}

/* Reads what the server sends into rx (up to cap) until want bytes came, EOF, or about
 * ms milliseconds of loop time passed. Returns the bytes read; *eof says how it ended
 * (1 EOF, 0 not yet, negative errno). */
static size_t raw_recv(bt_loop_t *t, int fd, uint8_t *rx, size_t cap, size_t want, int ms,
                       int *eof) {
  size_t got = 0;
  *eof = 0;
  for (int i = 0; i < ms / 2 && got < want; i++) {
    ssize_t n = recv(fd, rx + got, cap - got, MSG_DONTWAIT);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0) {
      *eof = 1;
      break;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *eof = -errno;
      break;
    }
    bt_run_for(t, 2);
  }
  return got;
}

/* Parses the frame at rx[0..len): returns its total length, or 0 if incomplete. */
static size_t parse_frame(const uint8_t *rx, size_t len, braid_frame_t *f) {
  int n = braid_frame_decode(rx, len, BRAID_FRAME_MAX_PAYLOAD_CEILING, f, NULL, NULL);
  assert_true(n >= 0);
  return (size_t)n;
}

/* ---- 3. responding twice, or with a handle whose slot was reused ----------------------- */

static void test_respond_twice_and_stale_handle(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.hold = 1;
  fix_start(&f);
  static res_t res[2];
  memset(res, 0, sizeof(res));
  done_count = 0;
  assert_int_equal(braid_rpc_call(f.client, "a", 1, 0, on_result, &res[0]), 0);
  while (f.n_held < 1)
    bt_run_for(&f.t, 2);
  braid_rpc_req_t *old = f.held[0].req;
  assert_ptr_equal(braid_rpc_req_channel(old), f.srv_rpc);
  assert_int_equal(braid_rpc_respond(old, "A", 1), 0);
  /* Twice: refused, and nothing is sent. */
  assert_int_equal(braid_rpc_respond(old, "A2", 2), BRAID_EINVAL);
  assert_int_equal(braid_rpc_respond_error(old, BRAID_WIRE_INTERNAL, "x"), BRAID_EINVAL);
  assert_null(braid_rpc_req_channel(old));
  bt_run_until(&f.t, &res[0].calls, 5000);
  /* The next request takes the slot the first one left (the pool has one). */
  assert_int_equal(braid_rpc_call(f.client, "b", 1, 0, on_result, &res[1]), 0);
  while (f.n_held < 2)
    bt_run_for(&f.t, 2);
  assert_int_equal(braid_rpc_respond(old, "stale", 5), BRAID_EINVAL);
  assert_int_equal(braid_rpc_respond(f.held[1].req, "B", 1), 0);
  bt_run_until(&f.t, &res[1].calls, 5000);
  assert_int_equal(res[1].status, 0);
  assert_int_equal(res[1].len, 1);
  assert_memory_equal(res[1].data, "B", 1);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.srv_rpc, &st);
  assert_int_equal(st.inflight, 0);
  fix_stop(&f);
}

/* ---- 1a. answers over the peer's maximum payload ---------------------------------------- */

/* Answers each request (or item) with as many bytes as its text says ("5000"). */
static int big_rc[8], n_big_rc;
static void big_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                           size_t len, void *arg) {
  (void)rpc;
  (void)arg;
  static char zeros[8192];
  char num[16] = {0};
  memcpy(num, data, len < 15 ? len : 15);
  size_t n = (size_t)atoi(num);
  assert_true(n <= sizeof(zeros));
  big_rc[n_big_rc++ % 8] = braid_rpc_respond(req, zeros, n);
}

static void test_answer_over_max_payload_is_too_big(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.sopts.max_payload_bytes = 4096;
  f.scbs.on_request = big_on_request;
  fix_start(&f);
  static res_t res[3];
  memset(res, 0, sizeof(res));
  n_big_rc = 0;
  assert_int_equal(braid_rpc_call(f.client, "4096", 4, 0, on_result, &res[0]), 0);
  assert_int_equal(braid_rpc_call(f.client, "4097", 4, 0, on_result, &res[1]), 0);
  bt_run_until(&f.t, &res[1].calls, 5000);
  assert_int_equal(res[0].status, 0);
  assert_int_equal(res[0].len, 4096);
  assert_int_equal(res[1].status, BRAID_EREMOTE);
  assert_int_equal(res[1].code, BRAID_WIRE_TOO_BIG);
  assert_int_equal(big_rc[0], 0);
  assert_int_equal(big_rc[1], BRAID_ETOOBIG);
  /* A batch: items are taken in the order they are answered while they fit the maximum
   * with room for an empty status per item still to come; the one that does not fit gets
   * TOO_BIG and the others their answers. */
  uint8_t payload[64];
  braid_batch_writer_t w;
  assert_int_equal(braid_batch_writer_init(&w, payload, sizeof(payload), 0), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "2000", 4), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "2000", 4), 0);
  assert_int_equal(braid_batch_writer_add(&w, 0, "2000", 4), 0);
  int plen = braid_batch_writer_finish(&w);
  uv_buf_t part = uv_buf_init((char *)payload, (unsigned)plen);
  n_big_rc = 0;
  assert_int_equal(braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_BATCH, &part, 1, 0,
                                        on_result, &res[2]),
                   0);
  bt_run_until(&f.t, &res[2].calls, 5000);
  assert_int_equal(res[2].status, 0);
  assert_int_equal(big_rc[0], 0);
  assert_int_equal(big_rc[1], 0);
  assert_int_equal(big_rc[2], BRAID_ETOOBIG);
  assert_int_equal(res[2].len, 4 + 2 * 2006 + 6);
  braid_batch_reader_t rd;
  uint32_t count;
  assert_int_equal(braid_batch_reader_init(&rd, res[2].data, res[2].len, 1, &count), 0);
  assert_int_equal(count, 3);
  braid_batch_item_t it;
  uint16_t want[3] = {0, 0, BRAID_WIRE_TOO_BIG};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(braid_batch_reader_next(&rd, &it), 1);
    assert_int_equal(it.status, want[i]);
    assert_int_equal(it.len, i < 2 ? 2000 : 0);
  }
  braid_rpc_stats_t st;
  braid_rpc_stats(f.srv_rpc, &st);
  assert_int_equal(st.inflight, 0);
  fix_stop(&f);
}

static void test_call_over_max_payload(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  f.copts.max_payload_bytes = 1024;
  fix_start(&f);
  static char buf[1025];
  static res_t res;
  memset(&res, 0, sizeof(res));
  assert_int_equal(braid_rpc_call(f.client, buf, 1025, 0, on_result, &res), BRAID_ETOOBIG);
  uv_buf_t part = uv_buf_init(buf, 1025);
  assert_int_equal(braid_rpc_call_parts(f.client, 0, &part, 1, 0, on_result, &res),
                   BRAID_ETOOBIG);
  assert_int_equal(braid_rpc_call(f.client, buf, 1024, 0, on_result, &res), 0);
  bt_run_until(&f.t, &res.calls, 5000);
  assert_int_equal(res.status, 0);
  fix_stop(&f);
}

/* ---- 1b. a client that pipelines in one write and does not read -------------------------- */

enum { PIPE_N = 300, ANSWER_BYTES = 64 * 1024 };

static braid_rpc_t *bp_srv;
static int bp_requests;
static void bp_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                          size_t len, void *arg) {
  (void)rpc; (void)data; (void)len; (void)arg;
  static char answer[ANSWER_BYTES];
  bp_requests++;
  assert_int_equal(braid_rpc_respond(req, answer, sizeof(answer)), 0);
}
static void bp_on_conn(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  static const braid_rpc_callbacks_t cbs = {.on_request = bp_on_request};
  assert_int_equal(braid_rpc_server(&bp_srv, conn, arg, &cbs, NULL), 0);
}
static void bp_srv_closed(braid_server_t *s, int status, void *arg) {
  (void)s; (void)status;
  *(int *)arg = 1;
}

/* 300 requests arrive in one read and each is answered with 64 KiB at once: the channel
 * stops taking them when its queued answers pass the high watermark (1 MiB), keeps the rest
 * of the read, and takes them as the client reads. Before, the whole read was handled:
 * 19 MiB queued for a client that does not read. */
static void test_pipelined_read_is_bounded(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.sockopts.sndbuf_bytes = 64 * 1024; /* keep the kernel's share small and fixed */
  static braid_rpc_opts_t ro;
  braid_rpc_opts_init(&ro);
  braid_server_t *server;
  assert_int_equal(braid_server_new(&server, t.loop, &so, bp_on_conn, &ro), 0);
  assert_int_equal(braid_server_listen(server, "127.0.0.1", 0), 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rcv = 64 * 1024;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)), 0);
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", braid_server_port(server), &a), 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  static uint8_t out[PIPE_N * (BRAID_FRAME_HEADER_SIZE + 3)];
  size_t n = 0;
  for (uint32_t i = 0; i < PIPE_N; i++)
    n += raw_frame(out + n, BRAID_FRAME_REQUEST, 0, i + 1, "get", 3);
  bp_requests = 0;
  raw_send(&t, fd, out, n);
  bt_run_for(&t, 300);
  assert_non_null(bp_srv);
  braid_conn_stats_t cs;
  braid_conn_stats(braid_rpc_conn(bp_srv), &cs);
  braid_rpc_stats_t st;
  braid_rpc_stats(bp_srv, &st);
  assert_true(bp_requests < PIPE_N);
  assert_true(st.read_pauses >= 1);
  /* The high watermark plus one answer. */
  assert_true(cs.max_queued_bytes <= (1u << 20) + ANSWER_BYTES + 4096);
  /* Now read everything: every request is answered, in order. */
  static uint8_t rx[256 * 1024];
  size_t have = 0;
  uint32_t answered = 0;
  int eof = 0;
  for (int i = 0; i < 20000 && answered < PIPE_N && eof == 0; i++) {
    have += raw_recv(&t, fd, rx + have, sizeof(rx) - have, 1, 4, &eof);
    braid_frame_t f;
    size_t fl;
    while ((fl = parse_frame(rx, have, &f)) > 0) {
      assert_int_equal(f.hdr.type, BRAID_FRAME_RESPONSE);
      assert_int_equal(f.hdr.id, answered + 1);
      assert_int_equal(f.hdr.payload_len, ANSWER_BYTES);
      answered++;
      memmove(rx, rx + fl, have - fl);
      have -= fl;
    }
  }
  assert_int_equal(answered, PIPE_N);
  assert_int_equal(bp_requests, PIPE_N);
  braid_conn_stats(braid_rpc_conn(bp_srv), &cs);
  assert_true(cs.max_queued_bytes <= (1u << 20) + ANSWER_BYTES + 4096);
  close(fd);
  int sc = 0;
  assert_int_equal(braid_server_close(server, bp_srv_closed, &sc), 0);
  bt_run(&t, 5000);
  bp_srv = NULL;
  bt_loop_done(&t);
}

/* ---- a raw-client server fixture ------------------------------------------------------- */

typedef struct raw_s {
  bt_loop_t t;
  braid_server_t *server;
  braid_rpc_opts_t ro;
  braid_rpc_callbacks_t cbs; /* on_request: set by the test; on_close: raw_on_close */
  braid_rpc_t *srv;
  int srv_closed, srv_status, server_closed;
  braid_rpc_stats_t last; /* the channel's stats when it closed */
  int fd;
} raw_t;

static raw_t *the_raw;
static void raw_on_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)arg;
  braid_rpc_stats(rpc, &the_raw->last);
  the_raw->srv_closed++;
  the_raw->srv_status = status;
  the_raw->srv = NULL;
}
static void raw_on_conn(braid_server_t *s, braid_conn_t *conn, void *arg) {
  (void)s;
  raw_t *r = arg;
  assert_int_equal(braid_rpc_server(&r->srv, conn, &r->ro, &r->cbs, r), 0);
}
static void raw_server_closed(braid_server_t *s, int status, void *arg) {
  (void)s; (void)status;
  ((raw_t *)arg)->server_closed = 1;
}
/* Starts a server with r->ro and r->cbs (on_request must be set) and connects a raw socket. */
static void raw_start(raw_t *r, const braid_server_opts_t *so) {
  the_raw = r;
  bt_loop_init(&r->t);
  r->cbs.on_close = raw_on_close;
  assert_int_equal(braid_server_new(&r->server, r->t.loop, so, raw_on_conn, r), 0);
  assert_int_equal(braid_server_listen(r->server, "127.0.0.1", 0), 0);
  r->fd = raw_connect(r->server);
  for (int i = 0; i < 1000 && !r->srv; i++)
    bt_run_for(&r->t, 2);
  assert_non_null(r->srv);
}
static void raw_stop(raw_t *r) {
  if (r->fd >= 0)
    close(r->fd);
  assert_int_equal(braid_server_close(r->server, raw_server_closed, r), 0);
  bt_run(&r->t, 5000);
  assert_true(r->server_closed);
  bt_loop_done(&r->t);
}
/* Runs the loop until the server channel closed or about ms passed. */
static void raw_wait_closed(raw_t *r, int ms) {
  for (int i = 0; i < ms / 5 && !r->srv_closed; i++)
    bt_run_for(&r->t, 5);
}

/* ---- 1c. the output limit: a client that never reads is disconnected -------------------- */

static void test_output_limit_closes_non_reader(void **state) {
  (void)state;
  static raw_t r;
  memset(&r, 0, sizeof(r));
  braid_rpc_opts_init(&r.ro);
  r.cbs.on_request = bp_on_request;
  r.ro.output_timeout_ms = 300;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.sockopts.sndbuf_bytes = 64 * 1024;
  int rcv = 64 * 1024;
  raw_start(&r, &so);
  assert_int_equal(setsockopt(r.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)), 0);
  static uint8_t out[PIPE_N * (BRAID_FRAME_HEADER_SIZE + 3)];
  size_t n = 0;
  for (uint32_t i = 0; i < PIPE_N; i++)
    n += raw_frame(out + n, BRAID_FRAME_REQUEST, 0, i + 1, "get", 3);
  raw_send(&r.t, r.fd, out, n);
  raw_wait_closed(&r, 5000);
  assert_int_equal(r.srv_closed, 1);
  assert_int_equal(r.srv_status, BRAID_ETIMEDOUT);
  assert_int_equal(r.last.output_limit_closes, 1);
  raw_stop(&r);
}

/* ---- 5. slowloris: frames that never complete -------------------------------------------- */

static void hold_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                            size_t len, void *arg) {
  (void)rpc; (void)data; (void)len; (void)arg;
  assert_int_equal(braid_rpc_respond(req, "ok", 2), 0);
}

/* Expects ERROR (id 0) TIMEOUT, then EOF, on r->fd. */
static void expect_fatal(raw_t *r, uint16_t code) {
  static uint8_t rx[4096];
  int eof;
  size_t got = raw_recv(&r->t, r->fd, rx, sizeof(rx), sizeof(rx), 3000, &eof);
  braid_frame_t f;
  size_t fl = parse_frame(rx, got, &f);
  assert_true(fl > 0);
  assert_int_equal(f.hdr.type, BRAID_FRAME_ERROR);
  assert_int_equal(f.hdr.id, 0);
  uint16_t c;
  const char *msg;
  size_t mlen;
  assert_int_equal(braid_frame_error_decode(f.payload, f.hdr.payload_len, &c, &msg, &mlen), 0);
  assert_int_equal(c, code);
  assert_int_equal(eof, 1);
}

static void test_frame_timeout_stalled_header(void **state) {
  (void)state;
  static raw_t r;
  memset(&r, 0, sizeof(r));
  braid_rpc_opts_init(&r.ro);
  r.cbs.on_request = hold_on_request;
  r.ro.frame_timeout_ms = 200;
  raw_start(&r, NULL);
  /* A whole frame first (answered), then a header declaring 1 MB and 10 bytes of it. */
  uint8_t buf[64];
  size_t n = raw_frame(buf, BRAID_FRAME_REQUEST, 0, 1, "a", 1);
  braid_frame_header_t h = {BRAID_FRAME_VERSION, BRAID_FRAME_REQUEST, 0, 2, 1000000};
  braid_frame_header_encode(buf + n, &h);
  n += BRAID_FRAME_HEADER_SIZE + 10;
  raw_send(&r.t, r.fd, buf, n);
  raw_wait_closed(&r, 3000);
  assert_int_equal(r.srv_closed, 1);
  assert_int_equal(r.srv_status, BRAID_ETIMEDOUT);
  assert_int_equal(r.last.frame_timeouts, 1);
  /* The answer to request 1, then the fatal error. */
  static uint8_t rx[4096];
  int eof;
  size_t got = raw_recv(&r.t, r.fd, rx, sizeof(rx), sizeof(rx), 2000, &eof);
  braid_frame_t f;
  size_t fl = parse_frame(rx, got, &f);
  assert_true(fl > 0);
  assert_int_equal(f.hdr.type, BRAID_FRAME_RESPONSE);
  size_t fl2 = parse_frame(rx + fl, got - fl, &f);
  assert_true(fl2 > 0);
  assert_int_equal(f.hdr.type, BRAID_FRAME_ERROR);
  assert_int_equal(f.hdr.id, 0);
  assert_int_equal(f.payload[1], BRAID_WIRE_TIMEOUT);
  assert_int_equal(eof, 1);
  raw_stop(&r);
}

static void test_frame_timeout_trickle(void **state) {
  (void)state;
  static raw_t r;
  memset(&r, 0, sizeof(r));
  braid_rpc_opts_init(&r.ro);
  r.cbs.on_request = hold_on_request;
  r.ro.frame_timeout_ms = 200;
  raw_start(&r, NULL);
  /* One byte of a 40-byte frame every 20 ms: it would take 800 ms. */
  uint8_t buf[64];
  size_t n = raw_frame(buf, BRAID_FRAME_REQUEST, 0, 1, "0123456789012345678901234", 24);
  for (size_t i = 0; i < n && !r.srv_closed; i++) {
    raw_send(&r.t, r.fd, buf + i, 1);
    bt_run_for(&r.t, 20);
  }
  raw_wait_closed(&r, 2000);
  assert_int_equal(r.srv_closed, 1);
  assert_int_equal(r.last.frame_timeouts, 1);
  assert_int_equal(r.last.requests, 0);
  expect_fatal(&r, BRAID_WIRE_TIMEOUT);
  raw_stop(&r);
}

/* ---- 2. a gzip member whose trailer understates what it holds --------------------------- */

/* 4 MiB of zeros deflate to about 4 KiB, under the size the server offloads: it inflates on
 * the loop. Its trailer claims 100 bytes. The server must not do the work the data asks for
 * (before: inflating until the ratio cap, 1 MiB, then TOO_BIG); it stops past the claim, the
 * member is corrupt, BAD_REQUEST. A truthful member of the same size is still served. */
static void test_gzip_claim_bounds_loop_work(void **state) {
  (void)state;
  static fix_t f;
  fix_opts(&f);
  fix_start(&f);
  enum { ZEROS = 4 << 20 };
  uint8_t *zeros = calloc(1, ZEROS);
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.level = 9;
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &go), 0);
  void *z;
  size_t zlen;
  assert_int_equal(braid_gzip_compress_alloc(gz, zeros, ZEROS, &z, &zlen), 0);
  assert_true(zlen < 16 * 1024);
  uint8_t *lie = malloc(zlen);
  memcpy(lie, z, zlen);
  lie[zlen - 4] = 100; /* ISIZE, little-endian: 100 */
  lie[zlen - 3] = lie[zlen - 2] = lie[zlen - 1] = 0;
  static res_t res[2];
  memset(res, 0, sizeof(res));
  uv_buf_t part = uv_buf_init((char *)lie, (unsigned)zlen);
  assert_int_equal(braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_GZIP, &part, 1, 0, on_result,
                                        &res[0]),
                   0);
  /* A truthful small member: "hello". */
  void *hz;
  size_t hzlen;
  go.min_size_bytes = 0;
  braid_gzip_t *gz2;
  assert_int_equal(braid_gzip_new(&gz2, &go), 0);
  assert_int_equal(braid_gzip_compress_alloc(gz2, "hello", 5, &hz, &hzlen), 0);
  uv_buf_t hpart = uv_buf_init(hz, (unsigned)hzlen);
  assert_int_equal(braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_GZIP, &hpart, 1, 0,
                                        on_result, &res[1]),
                   0);
  /* And an empty one: a claim of 0 bytes. */
  void *ez;
  size_t ezlen;
  assert_int_equal(braid_gzip_compress_alloc(gz2, "", 0, &ez, &ezlen), 0);
  uv_buf_t epart = uv_buf_init(ez, (unsigned)ezlen);
  static res_t eres;
  memset(&eres, 0, sizeof(eres));
  eres.len = 99;
  assert_int_equal(braid_rpc_call_parts(f.client, BRAID_FRAME_FLAG_GZIP, &epart, 1, 0,
                                        on_result, &eres),
                   0);
  bt_run_until(&f.t, &eres.calls, 5000);
  assert_int_equal(eres.status, 0);
  assert_int_equal(eres.len, 0);
  braid_gzip_buf_free(ez);
  bt_run_until(&f.t, &res[1].calls, 5000);
  bt_run_until(&f.t, &res[0].calls, 5000);
  assert_int_equal(res[0].status, BRAID_EREMOTE);
  assert_int_equal(res[0].code, BRAID_WIRE_BAD_REQUEST);
  assert_int_equal(res[1].status, 0);
  assert_int_equal(res[1].len, 5);
  assert_memory_equal(res[1].data, "hello", 5);
  braid_rpc_stats_t st;
  braid_rpc_stats(f.srv_rpc, &st);
  assert_int_equal(st.inflated_offloaded, 0);
  braid_gzip_buf_free(z);
  braid_gzip_buf_free(hz);
  braid_gzip_free(gz);
  braid_gzip_free(gz2);
  free(lie);
  free(zeros);
  fix_stop(&f);
}

/* ---- 4. frames and ids a server must refuse (PROTOCOL.md section 3.5) -------------------- */

/* Sends bytes[0..len) from a raw client (then half-closes when fin), reads until EOF, and
 * returns the frames the server sent: types[i], ids[i], and for ERROR frames codes[i]. */
static int exchange(const uint8_t *bytes, size_t len, int fin, uint8_t *types, uint32_t *ids,
                    uint16_t *codes, int max) {
  static raw_t r;
  memset(&r, 0, sizeof(r));
  braid_rpc_opts_init(&r.ro);
  r.cbs.on_request = hold_on_request;
  raw_start(&r, NULL);
  raw_send(&r.t, r.fd, bytes, len);
  if (fin)
    shutdown(r.fd, SHUT_WR);
  static uint8_t rx[65536];
  int eof;
  size_t got = raw_recv(&r.t, r.fd, rx, sizeof(rx), sizeof(rx), 3000, &eof);
  assert_int_equal(eof, 1);
  int n = 0;
  size_t off = 0, fl;
  braid_frame_t f;
  while (n < max && (fl = parse_frame(rx + off, got - off, &f)) > 0) {
    types[n] = f.hdr.type;
    ids[n] = f.hdr.id;
    codes[n] = f.hdr.type == BRAID_FRAME_ERROR ? (uint16_t)(f.payload[0] << 8 | f.payload[1]) : 0;
    n++;
    off += fl;
  }
  assert_int_equal(off, got);
  raw_wait_closed(&r, 2000);
  assert_int_equal(r.srv_closed, 1);
  raw_stop(&r);
  return n;
}

/* The first request is answered; the offending frame gets ERROR (id 0) PROTOCOL and the
 * connection closes; a request after it is never answered. */
static void expect_violation(uint8_t type, uint8_t flags, uint32_t id, const void *payload,
                             uint32_t plen, uint32_t first_id) {
  static uint8_t buf[256];
  size_t n = raw_frame(buf, BRAID_FRAME_REQUEST, 0, first_id, "a", 1);
  n += raw_frame(buf + n, type, flags, id, payload, plen);
  n += raw_frame(buf + n, BRAID_FRAME_REQUEST, 0, 1000, "b", 1);
  uint8_t types[8];
  uint32_t ids[8];
  uint16_t codes[8];
  int k = exchange(buf, n, 0, types, ids, codes, 8);
  assert_int_equal(k, 2);
  assert_int_equal(types[0], BRAID_FRAME_RESPONSE);
  assert_int_equal(ids[0], first_id);
  assert_int_equal(types[1], BRAID_FRAME_ERROR);
  assert_int_equal(ids[1], 0);
  assert_int_equal(codes[1], BRAID_WIRE_PROTOCOL);
}

static void test_duplicate_request_id(void **state) {
  (void)state;
  expect_violation(BRAID_FRAME_REQUEST, 0, 5, "a", 1, 5);
}

static void test_decreasing_request_id(void **state) {
  (void)state;
  expect_violation(BRAID_FRAME_REQUEST, 0, 3, "a", 1, 7);
}

static void test_error_with_id_from_client(void **state) {
  (void)state;
  expect_violation(BRAID_FRAME_ERROR, 0, 1, "\0\6", 2, 1);
}

static void test_response_and_goaway_to_server(void **state) {
  (void)state;
  expect_violation(BRAID_FRAME_RESPONSE, 0, 1, "x", 1, 1);
  expect_violation(BRAID_FRAME_GOAWAY, 0, 0, "\0\0\0\0\0\0", 6, 1);
}

/* A PONG that answers nothing is ignored; requests around it are answered; a client FIN
 * after whole frames gets every answer and then the server's FIN. */
static void test_unsolicited_pong_ignored(void **state) {
  (void)state;
  static uint8_t buf[256];
  size_t n = raw_frame(buf, BRAID_FRAME_REQUEST, 0, 1, "a", 1);
  n += raw_frame(buf + n, BRAID_FRAME_PONG, 0, 9, "12345678", 8);
  n += raw_frame(buf + n, BRAID_FRAME_REQUEST, 0, 2, "b", 1);
  uint8_t types[8];
  uint32_t ids[8];
  uint16_t codes[8];
  int k = exchange(buf, n, 1, types, ids, codes, 8);
  assert_int_equal(k, 2);
  assert_int_equal(types[0], BRAID_FRAME_RESPONSE);
  assert_int_equal(ids[0], 1);
  assert_int_equal(types[1], BRAID_FRAME_RESPONSE);
  assert_int_equal(ids[1], 2);
}

/* A stream that ends mid-frame: the whole frame before it is answered, the partial one is
 * dropped, and the server says why (ERROR id 0 PROTOCOL) before closing. */
static void test_eof_mid_frame(void **state) {
  (void)state;
  static uint8_t buf[256];
  size_t n = raw_frame(buf, BRAID_FRAME_REQUEST, 0, 1, "a", 1);
  size_t m = raw_frame(buf + n, BRAID_FRAME_REQUEST, 0, 2, "hello", 5);
  uint8_t types[8];
  uint32_t ids[8];
  uint16_t codes[8];
  int k = exchange(buf, n + m - 3, 1, types, ids, codes, 8);
  assert_int_equal(k, 2);
  assert_int_equal(types[0], BRAID_FRAME_RESPONSE);
  assert_int_equal(types[1], BRAID_FRAME_ERROR);
  assert_int_equal(ids[1], 0);
  assert_int_equal(codes[1], BRAID_WIRE_PROTOCOL);
}

/* ---- GOAWAY's last_id counts requests taken, not frames held back ------------------------ */

static braid_rpc_req_t *kept[8];
static int n_kept;
static void keep_on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data,
                            size_t len, void *arg) {
  (void)rpc; (void)data; (void)len; (void)arg;
  kept[n_kept++] = req;
}

/* Five requests in one read to a server that takes two at a time: three wait in the
 * backlog. A GOAWAY now names request 2, the last taken; 3..5 are never handled. */
static void test_goaway_last_id_is_last_taken(void **state) {
  (void)state;
  static raw_t r;
  memset(&r, 0, sizeof(r));
  braid_rpc_opts_init(&r.ro);
  r.cbs.on_request = keep_on_request;
  r.ro.max_inflight = 2;
  n_kept = 0;
  raw_start(&r, NULL);
  static uint8_t buf[256];
  size_t n = 0;
  for (uint32_t id = 1; id <= 5; id++)
    n += raw_frame(buf + n, BRAID_FRAME_REQUEST, 0, id, "x", 1);
  raw_send(&r.t, r.fd, buf, n);
  for (int i = 0; i < 500 && n_kept < 2; i++)
    bt_run_for(&r.t, 2);
  bt_run_for(&r.t, 20);
  assert_int_equal(n_kept, 2);
  assert_int_equal(braid_rpc_goaway(r.srv, BRAID_WIRE_OK, "bye"), 0);
  assert_int_equal(braid_rpc_respond(kept[0], "1", 1), 0);
  assert_int_equal(braid_rpc_respond(kept[1], "2", 1), 0);
  static uint8_t rx[4096];
  int eof;
  size_t got = raw_recv(&r.t, r.fd, rx, sizeof(rx), sizeof(rx), 3000, &eof);
  assert_int_equal(eof, 1);
  braid_frame_t f;
  size_t off = parse_frame(rx, got, &f);
  assert_true(off > 0);
  assert_int_equal(f.hdr.type, BRAID_FRAME_GOAWAY);
  uint32_t last_id;
  uint16_t code;
  const char *reason;
  size_t rlen;
  assert_int_equal(braid_frame_goaway_decode(f.payload, f.hdr.payload_len, &last_id, &code,
                                             &reason, &rlen),
                   0);
  assert_int_equal(last_id, 2);
  int responses = 0;
  size_t fl;
  while ((fl = parse_frame(rx + off, got - off, &f)) > 0) {
    if (f.hdr.type == BRAID_FRAME_RESPONSE)
      assert_true(f.hdr.id <= 2), responses++;
    else
      assert_int_equal(f.hdr.type, BRAID_FRAME_ERROR); /* SHUTTING_DOWN for 3..5, if any */
    off += fl;
  }
  assert_int_equal(responses, 2);
  assert_int_equal(n_kept, 2);
  raw_stop(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_respond_twice_and_stale_handle),
      cmocka_unit_test(test_answer_over_max_payload_is_too_big),
      cmocka_unit_test(test_call_over_max_payload),
      cmocka_unit_test(test_pipelined_read_is_bounded),
      cmocka_unit_test(test_gzip_claim_bounds_loop_work),
      cmocka_unit_test(test_output_limit_closes_non_reader),
      cmocka_unit_test(test_frame_timeout_stalled_header),
      cmocka_unit_test(test_frame_timeout_trickle),
      cmocka_unit_test(test_duplicate_request_id),
      cmocka_unit_test(test_decreasing_request_id),
      cmocka_unit_test(test_error_with_id_from_client),
      cmocka_unit_test(test_response_and_goaway_to_server),
      cmocka_unit_test(test_unsolicited_pong_ignored),
      cmocka_unit_test(test_eof_mid_frame),
      cmocka_unit_test(test_goaway_last_id_is_last_taken),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
