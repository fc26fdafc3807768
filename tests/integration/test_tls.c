/* TLS beneath braid connections (issue 15), over loopback against real peers: openssl
 * s_client and s_server, curl, python3's ssl module, and braid itself on both ends. The
 * certificates are made at run time by tests/tls/make_certs.sh (a throwaway CA, good, wrong,
 * expired, self-signed and rogue-signed server certificates, a client certificate).
 *
 * Covered: handshake facts (version, cipher, ALPN), large transfers both ways, half-close
 * with close_notify both ways, each verification failure with its own code, SNI picking
 * the certificate, resumption seen from both sides, mutual TLS accepted and refused,
 * truncation (FIN without close_notify), garbage before and inside the handshake, a peer
 * stalling mid-handshake, renegotiation refused, reloading the certificate, and rpc, the
 * pool and the HTTP server on TLS without a change of their code. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../support.h"
#include "braid/http_client.h"
#include "internal.h"

static char certdir[] = "/tmp/braid_tls_XXXXXX";
static const char *tls_dir; /* tests/tls in the source tree */
static bool have_peers;     /* openssl, python3 and curl are all there */

static const char *cert(const char *name) {
  static char bufs[8][512];
  static int next;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof(bufs[0]), "%s/%s", certdir, name);
  return b;
}

/* ---- running a peer on a thread while the loop serves --------------------------------- */

typedef struct ext_s {
  void (*fn)(struct ext_s *e);
  char cmd[2048];
  char out[16384];
  int status;
  int port;
  void *arg;
  volatile int done;
  uv_thread_t th;
  uv_async_t wake;
} ext_t;

static void on_wake(uv_async_t *a) {
  (void)a;
}

static void ext_main(void *arg) {
  ext_t *e = arg;
  e->fn(e);
  e->done = 1;
  uv_async_send(&e->wake);
}

static void ext_start(bt_loop_t *t, ext_t *e) {
  e->done = 0;
  assert_int_equal(uv_async_init(&t->uv, &e->wake, on_wake), 0);
  assert_int_equal(uv_thread_create(&e->th, ext_main, e), 0);
}

static void ext_wait(bt_loop_t *t, ext_t *e, uint64_t timeout_ms) {
  bt_run_until(t, &e->done, timeout_ms);
  uv_thread_join(&e->th);
  uv_close((uv_handle_t *)&e->wake, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
}

/* Runs e->cmd with popen, keeping its output and exit status. */
static void shell_fn(ext_t *e) {
  FILE *p = popen(e->cmd, "r");
  size_t n = 0, k;
  if (p) {
    while ((k = fread(e->out + n, 1, sizeof(e->out) - 1 - n, p)) > 0)
      n += k;
    e->status = pclose(p);
  } else {
    e->status = -1;
  }
  e->out[n] = '\0';
}

static void run_shell(bt_loop_t *t, ext_t *e, uint64_t timeout_ms, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->cmd, sizeof(e->cmd), fmt, ap);
  va_end(ap);
  e->fn = shell_fn;
  ext_start(t, e);
  ext_wait(t, e, timeout_ms);
}

/* ---- contexts ----------------------------------------------------------------------- */

static braid_tls_ctx_t *server_ctx(const char *name, int verify) {
  char c[64], k[64];
  snprintf(c, sizeof(c), "%s.pem", name);
  snprintf(k, sizeof(k), "%s.key", name);
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.role = BRAID_TLS_SERVER;
  o.cert_file = cert(c);
  o.key_file = cert(k);
  o.alpn = "http/1.1";
  o.verify_peer = verify;
  if (verify)
    o.ca_file = cert("ca.pem");
  o.handshake_timeout_ms = 3000;
  braid_tls_ctx_t *ctx;
  braid_opts_error_t err;
  int rc = braid_tls_ctx_new(&ctx, &o, &err);
  if (rc)
    fail_msg("server ctx %s: %s: %s: %s", name, braid_err_name(rc), err.field, err.reason);
  return ctx;
}

static braid_tls_ctx_t *client_ctx(const char *ca) {
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.use_system_cas = 0;
  o.ca_file = cert(ca);
  o.alpn = "h2,http/1.1";
  braid_tls_ctx_t *ctx;
  braid_opts_error_t err;
  int rc = braid_tls_ctx_new(&ctx, &o, &err);
  if (rc)
    fail_msg("client ctx: %s: %s: %s", braid_err_name(rc), err.field, err.reason);
  return ctx;
}

/* ---- a braid TLS server: echo, rpc or http ------------------------------------------ */

enum { SRV_ECHO, SRV_RPC };

typedef struct srv_s {
  bt_loop_t t;
  braid_server_t *server;
  braid_tls_ctx_t *ctx;
  int port;
  int mode;
  int conns;  /* reached the connection callback (handshake done) */
  int closes; /* of those, closed */
  int last_status;
  char last_text[256];
  braid_tls_info_t info;
  volatile int closed;
  int closes_wanted;
  volatile int closes_reached;
} srv_t;

static void s_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len, void *data) {
  (void)data;
  if (status < 0)
    return;
  braid_conn_write(conn, bytes, len, NULL, NULL);
}

static void s_eof(braid_conn_t *conn, void *data) {
  (void)data;
  /* Half-close: the peer is done sending; say goodbye after the echo, then close (which
   * sends close_notify after everything queued). */
  braid_conn_write(conn, "bye", 3, NULL, NULL);
  braid_conn_close(conn);
}

static void s_close(braid_conn_t *conn, int status, void *data) {
  srv_t *s = data;
  s->closes++;
  s->last_status = status;
  snprintf(s->last_text, sizeof(s->last_text), "%s", braid_tls_error_text(conn));
  if (s->closes >= s->closes_wanted)
    s->closes_reached = 1;
}

static void rpc_echo(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                     void *arg) {
  (void)rpc;
  (void)arg;
  braid_rpc_respond(req, data, len);
}

static void on_conn(braid_server_t *server, braid_conn_t *conn, void *data) {
  (void)server;
  srv_t *s = data;
  s->conns++;
  assert_int_equal(braid_tls_info(conn, &s->info), 0);
  if (s->mode == SRV_RPC) {
    braid_rpc_callbacks_t cbs = {.on_request = rpc_echo};
    braid_rpc_t *rpc;
    assert_int_equal(braid_rpc_server(&rpc, conn, NULL, &cbs, s), 0);
    return;
  }
  braid_conn_callbacks_t cbs = {.on_read = s_read, .on_eof = s_eof, .on_close = s_close};
  braid_conn_set_data(conn, s);
  braid_conn_set_callbacks(conn, &cbs);
  assert_int_equal(braid_conn_read_start(conn), 0);
}

static void srv_start(srv_t *s, braid_tls_ctx_t *ctx, int mode) {
  memset(s, 0, sizeof(*s));
  bt_loop_init(&s->t);
  s->ctx = ctx;
  s->mode = mode;
  s->closes_wanted = 1;
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.tls = ctx;
  assert_int_equal(braid_server_new(&s->server, s->t.loop, &o, on_conn, s), 0);
  assert_int_equal(braid_server_listen(s->server, "127.0.0.1", 0), 0);
  s->port = braid_server_port(s->server);
}

static void on_srv_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  ((srv_t *)arg)->closed = 1;
}

static void srv_stop(srv_t *s) {
  assert_int_equal(braid_server_close(s->server, on_srv_closed, s), 0);
  bt_run_until(&s->t, &s->closed, 5000);
  braid_tls_ctx_free(s->ctx);
  bt_loop_done(&s->t);
}

static braid_tls_stats_t srv_stats(srv_t *s) {
  braid_tls_stats_t st;
  braid_tls_ctx_stats(s->ctx, &st);
  return st;
}

/* ---- a braid TLS client ------------------------------------------------------------- */

typedef struct cli_s {
  braid_conn_t *conn;
  int status;
  volatile int done;
  braid_tls_info_t info;
  uint8_t *rx;
  size_t rx_len, rx_cap;
  volatile int eof, closed;
  int close_status;
  size_t want; /* close after this many bytes (0: wait for EOF) */
} cli_t;

static void c_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len, void *data) {
  cli_t *c = data;
  if (status < 0)
    return;
  if (c->rx_len + len > c->rx_cap) {
    c->rx_cap = (c->rx_len + len) * 2;
    c->rx = realloc(c->rx, c->rx_cap);
  }
  memcpy(c->rx + c->rx_len, bytes, len);
  c->rx_len += len;
  if (c->want && c->rx_len >= c->want)
    braid_conn_close(conn);
}

static void c_eof(braid_conn_t *conn, void *data) {
  ((cli_t *)data)->eof = 1;
  braid_conn_close(conn);
}

static void c_close(braid_conn_t *conn, int status, void *data) {
  (void)conn;
  cli_t *c = data;
  c->close_status = status;
  c->closed = 1;
}

static void c_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  cli_t *c = arg;
  c->status = status;
  c->done = 1;
  if (status)
    return;
  c->conn = conn;
  assert_int_equal(braid_tls_info(conn, &c->info), 0);
  braid_conn_callbacks_t cbs = {.on_read = c_read, .on_eof = c_eof, .on_close = c_close};
  braid_conn_set_data(conn, c);
  braid_conn_set_callbacks(conn, &cbs);
  assert_int_equal(braid_conn_read_start(conn), 0);
}

static void cli_connect(bt_loop_t *t, cli_t *c, braid_tls_ctx_t *ctx, const char *host, int port) {
  memset(c, 0, sizeof(*c));
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.tls = ctx;
  assert_int_equal(braid_connect(NULL, t->loop, host, port, &o, c_connected, c), 0);
  bt_run_until(t, &c->done, 5000);
}

/* ---- tests -------------------------------------------------------------------------- */

#define NEED_PEERS()                                                                           \
  do {                                                                                         \
    if (!have_peers)                                                                           \
      skip();                                                                                  \
  } while (0)

static void test_s_client_handshake(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  ext_t e = {0};
  run_shell(&s.t, &e, 10000,
            "openssl s_client -connect 127.0.0.1:%d -servername localhost -CAfile %s "
            "-verify_return_error -alpn h2,http/1.1 -brief </dev/null 2>&1",
            s.port, cert("ca.pem"));
  if (!strstr(e.out, "Verification: OK") || !strstr(e.out, "TLSv1.3"))
    fail_msg("s_client said:\n%s", e.out);
  bt_run_until(&s.t, &s.closes_reached, 5000);
  assert_int_equal(s.conns, 1);
  assert_string_equal(s.info.version, "TLSv1.3");
  assert_string_equal(s.info.alpn, "http/1.1");
  assert_string_equal(s.info.server_name, "localhost");
  assert_true(s.info.cipher[0] != '\0');
  assert_int_equal(s.last_status, 0); /* s_client ended with close_notify */
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.handshakes, 1);
  assert_int_equal(st.handshake_failures, 0);
  srv_stop(&s);
}

static void test_python_echo_large(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  ext_t e = {0};
  run_shell(&s.t, &e, 30000, "python3 %s/peer.py echo %d %s 3000000 2>&1", tls_dir, s.port,
            certdir);
  if (e.status != 0 || !strstr(e.out, "echo_ok=1"))
    fail_msg("peer.py echo:\n%s", e.out);
  assert_non_null(strstr(e.out, "alpn=http/1.1"));
  bt_run_until(&s.t, &s.closes_reached, 5000);
  assert_int_equal(s.last_status, 0);
  srv_stop(&s);
}

/* braid on both ends: 4 MiB each way, then a half-close: the client shuts down its side
 * (close_notify + FIN), still reads the rest of the echo and the server's "bye", and sees
 * the server's close_notify as a clean EOF. */
static void test_braid_large_and_half_close(void **state) {
  (void)state;
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  braid_tls_ctx_t *cctx = client_ctx("ca.pem");
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  assert_string_equal(c.info.version, "TLSv1.3");
  assert_string_equal(c.info.alpn, "http/1.1");
  assert_int_equal(c.info.peer_verified, 1);
  size_t n = 4 << 20;
  uint8_t *data = malloc(n);
  for (size_t i = 0; i < n; i++)
    data[i] = (uint8_t)(i * 7 + (i >> 13));
  for (size_t off = 0; off < n; off += 100000) {
    size_t k = n - off < 100000 ? n - off : 100000;
    assert_int_equal(braid_conn_write(c.conn, data + off, k, NULL, NULL), 0);
  }
  assert_int_equal(braid_conn_shutdown(c.conn), 0);
  bt_run_until(&s.t, &c.closed, 20000);
  assert_int_equal(c.eof, 1);
  assert_int_equal(c.close_status, 0);
  assert_int_equal(c.rx_len, n + 3);
  assert_memory_equal(c.rx, data, n);
  assert_memory_equal(c.rx + n, "bye", 3);
  bt_run_until(&s.t, &s.closes_reached, 5000);
  assert_int_equal(s.last_status, 0);
  free(c.rx);
  free(data);
  braid_tls_ctx_free(cctx);
  srv_stop(&s);
}

static char last_log[512];
static void capture_log(braid_loop_t *loop, braid_log_level_t level, const char *message,
                        void *arg) {
  (void)loop;
  (void)level;
  (void)arg;
  if (strstr(message, "tls:") && !last_log[0]) /* the client's: it fails first */
    snprintf(last_log, sizeof(last_log), "%s", message);
}

static void test_verify_failures(void **state) {
  (void)state;
  struct {
    const char *cert;
    int want;
    const char *words;
  } cases[] = {
      {"other", BRAID_ETLSHOSTNAME, "mismatch"},
      {"expired", BRAID_ETLSEXPIRED, "expired"},
      {"self", BRAID_ETLSVERIFY, "self"},
      {"unknown", BRAID_ETLSVERIFY, "local issuer"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    srv_t s;
    srv_start(&s, server_ctx(cases[i].cert, 0), SRV_ECHO);
    braid_tls_ctx_t *cctx = client_ctx("ca.pem");
    braid_loop_set_log(s.t.loop, capture_log, BRAID_LOG_WARN, NULL);
    last_log[0] = '\0';
    cli_t c;
    cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
    /* OpenSSL's words reach the log hook. */
    if (!strstr(last_log, cases[i].words))
      fail_msg("%s: log said \"%s\"", cases[i].cert, last_log);
    if (c.status != cases[i].want)
      fail_msg("%s: got %s, want %s", cases[i].cert, braid_err_name(c.status),
               braid_err_name(cases[i].want));
    braid_tls_stats_t st;
    braid_tls_ctx_stats(cctx, &st);
    assert_int_equal(st.verify_failures, 1);
    assert_int_equal(st.handshakes, 0);
    bt_run_for(&s.t, 50);
    assert_int_equal(s.conns, 0); /* the server never handed it on */
    braid_tls_ctx_free(cctx);
    srv_stop(&s);
  }
}

static braid_tls_ctx_t *sni_other;

static braid_tls_ctx_t *pick_by_name(braid_tls_ctx_t *ctx, const char *name, void *data) {
  (void)ctx;
  (void)data;
  return strcmp(name, "other.test") == 0 ? sni_other : NULL;
}

static void test_sni(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  sni_other = server_ctx("other", 0);
  assert_int_equal(braid_tls_ctx_set_sni_cb(s.ctx, pick_by_name), 0);
  ext_t e = {0};
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py sni %d %s other.test 2>&1", tls_dir, s.port,
            certdir);
  if (e.status != 0 || !strstr(e.out, "peer_cn=other.test"))
    fail_msg("peer.py sni other.test:\n%s", e.out);
  memset(&e, 0, sizeof(e));
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py sni %d %s localhost 2>&1", tls_dir, s.port,
            certdir);
  if (e.status != 0 || !strstr(e.out, "peer_cn=localhost"))
    fail_msg("peer.py sni localhost:\n%s", e.out);
  braid_tls_ctx_free(sni_other);
  srv_stop(&s);
}

static void test_resumption_python(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  s.closes_wanted = 2;
  ext_t e = {0};
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py resume %d %s 2>&1", tls_dir, s.port, certdir);
  if (e.status != 0 || !strstr(e.out, "reused=1"))
    fail_msg("peer.py resume:\n%s", e.out);
  bt_run_until(&s.t, &s.closes_reached, 5000);
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.handshakes, 2);
  assert_int_equal(st.resumed, 1);
  assert_int_equal(s.info.resumed, 1); /* the last connection's */
  srv_stop(&s);
}

static void test_mtls(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_REQUIRED), SRV_ECHO);
  ext_t e = {0};
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py mtls %d %s 2>&1", tls_dir, s.port, certdir);
  if (e.status != 0 || !strstr(e.out, "echo_ok=1"))
    fail_msg("peer.py mtls:\n%s", e.out);
  assert_int_equal(s.info.peer_verified, 1);
  memset(&e, 0, sizeof(e));
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py nocert %d %s 2>&1", tls_dir, s.port, certdir);
  if (e.status != 0 || !strstr(e.out, "refused=1"))
    fail_msg("peer.py nocert:\n%s", e.out);
  bt_run_for(&s.t, 100);
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.handshakes, 1);
  assert_int_equal(st.handshake_failures, 1);
  assert_int_equal(st.verify_failures, 1);
  assert_int_equal(s.conns, 1);

  /* braid's client with a certificate (cert_pem/key_pem would do the same). */
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.use_system_cas = 0;
  o.ca_file = cert("ca.pem");
  o.cert_file = cert("client.pem");
  o.key_file = cert("client.key");
  braid_tls_ctx_t *cctx;
  assert_int_equal(braid_tls_ctx_new(&cctx, &o, NULL), 0);
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  c.want = 2;
  assert_int_equal(braid_conn_write(c.conn, "hi", 2, NULL, NULL), 0);
  bt_run_until(&s.t, &c.closed, 5000);
  assert_int_equal(c.close_status, 0);
  assert_memory_equal(c.rx, "hi", 2);
  free(c.rx);
  assert_int_equal(s.info.peer_verified, 1);
  braid_tls_ctx_free(cctx);
  /* Without one: TLS 1.3 finishes the client's side of the handshake first, so the
   * server's refusal arrives as the first read's error. */
  cctx = client_ctx("ca.pem");
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  if (c.status == 0)
    bt_run_until(&s.t, &c.closed, 5000);
  assert_true(c.status != 0 || c.close_status == BRAID_ETLS);
  braid_tls_ctx_free(cctx);
  assert_int_equal(srv_stats(&s).verify_failures, 2);
  srv_stop(&s);
}

static void test_truncation(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  ext_t e = {0};
  run_shell(&s.t, &e, 10000, "python3 %s/peer.py truncate %d %s 2>&1", tls_dir, s.port,
            certdir);
  if (e.status != 0 || !strstr(e.out, "truncated=1"))
    fail_msg("peer.py truncate:\n%s", e.out);
  bt_run_until(&s.t, &s.closes_reached, 5000);
  assert_int_equal(s.last_status, BRAID_ETRUNCATED);
  assert_non_null(strstr(s.last_text, "close_notify"));
  assert_int_equal(srv_stats(&s).truncations, 1);
  srv_stop(&s);
}

/* braid's client against openssl s_server (-rev answers each line reversed): verified,
 * and the second connection resumes the first's session (the ticket arrived with data). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

/* Waits until something listens on port, without connecting to it (s_server counts every
 * connection against -naccept): while it listens, our own bind() fails. */
static void wait_listening(int port) {
  for (int i = 0; i < 250; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
    close(fd);
    if (rc != 0 && errno == EADDRINUSE)
      return;
    usleep(20 * 1000);
  }
  fail_msg("nothing listens on %d", port);
}

static void test_client_against_s_server(void **state) {
  (void)state;
  NEED_PEERS();
  bt_loop_t t;
  bt_loop_init(&t);
  int port = free_port();
  ext_t e = {0};
  snprintf(e.cmd, sizeof(e.cmd),
           "timeout 20 openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -naccept 2 "
           "-rev -quiet 2>&1",
           port, cert("server.pem"), cert("server.key"));
  e.fn = shell_fn;
  ext_start(&t, &e);
  wait_listening(port);
  braid_tls_ctx_t *cctx = client_ctx("ca.pem");
  for (int round = 0; round < 2; round++) {
    cli_t c;
    cli_connect(&t, &c, cctx, "127.0.0.1", port);
    if (c.status)
      fail_msg("round %d: %s", round, braid_err_name(c.status));
    assert_int_equal(c.info.resumed, round); /* the second one resumes */
    assert_int_equal(c.info.peer_verified, 1);
    c.want = 6;
    assert_int_equal(braid_conn_write(c.conn, "hello\n", 6, NULL, NULL), 0);
    bt_run_until(&t, &c.closed, 5000);
    assert_true(c.rx_len >= 5);
    assert_memory_equal(c.rx, "olleh", 5);
    free(c.rx);
  }
  braid_tls_stats_t st;
  braid_tls_ctx_stats(cctx, &st);
  assert_int_equal(st.handshakes, 2);
  assert_int_equal(st.resumed, 1);
  ext_wait(&t, &e, 20000);
  braid_tls_ctx_free(cctx);
  bt_loop_done(&t);
}

/* A raw TCP peer: sends bytes, then waits (up to 5 s) for the server to close. */
typedef struct raw_s {
  const void *bytes;
  size_t len;
  uint64_t closed_after_ms;
  int got_eof;
} raw_t;

static void raw_fn(ext_t *e) {
  raw_t *r = e->arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)e->port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return;
  }
  uint64_t t0 = uv_hrtime();
  if (r->len)
    send(fd, r->bytes, r->len, MSG_NOSIGNAL);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      r->got_eof = 1;
      break;
    }
    if (n < 0)
      break;
  }
  r->closed_after_ms = (uv_hrtime() - t0) / 1000000;
  close(fd);
}

static void raw_peer(srv_t *s, raw_t *r) {
  ext_t e = {0};
  e.fn = raw_fn;
  e.arg = r;
  e.port = s->port;
  ext_start(&s->t, &e);
  ext_wait(&s->t, &e, 10000);
}

static void test_garbage(void **state) {
  (void)state;
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  /* Plain HTTP to a TLS port. */
  const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  raw_t r = {http, sizeof(http) - 1, 0, 0};
  raw_peer(&s, &r);
  assert_int_equal(r.got_eof, 1);
  /* A well-framed handshake record whose body is garbage. */
  uint8_t rec[5 + 64];
  memcpy(rec, "\x16\x03\x01\x00\x40", 5);
  memset(rec + 5, 0xAA, 64);
  raw_t r2 = {rec, sizeof(rec), 0, 0};
  raw_peer(&s, &r2);
  assert_int_equal(r2.got_eof, 1);
  bt_run_for(&s.t, 50);
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.handshake_failures, 2);
  assert_int_equal(st.handshakes, 0);
  assert_int_equal(s.conns, 0);
  /* The server still serves. */
  braid_tls_ctx_t *cctx = client_ctx("ca.pem");
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  braid_conn_close(c.conn);
  bt_run_until(&s.t, &c.closed, 5000);
  braid_tls_ctx_free(cctx);
  srv_stop(&s);
}

static void test_handshake_stall_times_out(void **state) {
  (void)state;
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.role = BRAID_TLS_SERVER;
  o.cert_file = cert("server.pem");
  o.key_file = cert("server.key");
  o.handshake_timeout_ms = 300;
  braid_tls_ctx_t *ctx;
  assert_int_equal(braid_tls_ctx_new(&ctx, &o, NULL), 0);
  srv_t s;
  srv_start(&s, ctx, SRV_ECHO);
  /* The start of a ClientHello record, then nothing. */
  raw_t r = {"\x16\x03\x01\x02\x00\x01\x00\x01", 8, 0, 0};
  raw_peer(&s, &r);
  assert_int_equal(r.got_eof, 1);
  assert_true(r.closed_after_ms >= 250 && r.closed_after_ms < 3000);
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.handshake_timeouts, 1);
  assert_int_equal(st.handshake_failures, 1);
  srv_stop(&s);
}

static void test_renegotiation_refused(void **state) {
  (void)state;
  NEED_PEERS();
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  ext_t e = {0};
  run_shell(&s.t, &e, 10000,
            "(echo R; sleep 1) | openssl s_client -connect 127.0.0.1:%d -tls1_2 "
            "-servername localhost -CAfile %s 2>&1",
            s.port, cert("ca.pem"));
  bt_run_until(&s.t, &s.closes_reached, 5000);
  if (s.last_status != BRAID_ETLS)
    fail_msg("close status %s (%s); s_client said:\n%s", braid_err_name(s.last_status),
             s.last_text, e.out);
  assert_string_equal(s.last_text, "renegotiation refused");
  braid_tls_stats_t st = srv_stats(&s);
  assert_int_equal(st.renegotiations_refused, 1);
  assert_int_equal(st.handshakes, 1);
  srv_stop(&s);
}

/* A renewed certificate, without a restart: a client that trusts only the rogue CA fails
 * before the reload and succeeds after it. */
static void test_reload(void **state) {
  (void)state;
  srv_t s;
  srv_start(&s, server_ctx("server", BRAID_TLS_VERIFY_DEFAULT), SRV_ECHO);
  braid_tls_ctx_t *cctx = client_ctx("rogue-ca.pem");
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, BRAID_ETLSVERIFY);
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.role = BRAID_TLS_SERVER;
  o.cert_file = cert("unknown.pem");
  o.key_file = cert("server.key"); /* the wrong key: refused, nothing changes */
  braid_opts_error_t err;
  assert_int_equal(braid_tls_ctx_reload(s.ctx, &o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "key_file");
  o.key_file = cert("unknown.key");
  assert_int_equal(braid_tls_ctx_reload(s.ctx, &o, &err), 0);
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  braid_conn_close(c.conn);
  bt_run_until(&s.t, &c.closed, 5000);
  braid_tls_ctx_free(cctx);
  srv_stop(&s);
}

/* rpc channels and pools sit on connections: TLS comes for free. */
typedef struct rpc_res_s {
  volatile int done;
  int status;
  char answer[32];
} rpc_res_t;

static void on_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res, void *arg) {
  (void)rpc;
  rpc_res_t *r = arg;
  r->status = status;
  if (status == 0)
    snprintf(r->answer, sizeof(r->answer), "%.*s", (int)res->len, (const char *)res->data);
  r->done = 1;
}

static void test_rpc_and_pool_over_tls(void **state) {
  (void)state;
  srv_t s;
  srv_start(&s, server_ctx("server", 0), SRV_RPC);
  braid_tls_ctx_t *cctx = client_ctx("ca.pem");
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  braid_rpc_t *rpc;
  assert_int_equal(braid_rpc_client(&rpc, c.conn, NULL, NULL, NULL), 0);
  rpc_res_t r = {0};
  assert_int_equal(braid_rpc_call(rpc, "ping", 4, 5000, on_answer, &r), 0);
  bt_run_until(&s.t, &r.done, 5000);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.answer, "ping");
  braid_rpc_close(rpc);

  braid_pool_opts_t po;
  braid_pool_opts_init(&po);
  po.client.tls = cctx;
  braid_pool_t *pool;
  assert_int_equal(braid_pool_new(&pool, s.t.loop, &po), 0);
  assert_int_equal(braid_pool_add_endpoint(pool, "127.0.0.1", s.port), 0);
  rpc_res_t r2 = {0};
  assert_int_equal(braid_pool_call(pool, "pooled", 6, 0, 5000, on_answer, &r2), 0);
  bt_run_until(&s.t, &r2.done, 5000);
  assert_int_equal(r2.status, 0);
  assert_string_equal(r2.answer, "pooled");
  assert_int_equal(braid_pool_close(pool, NULL, NULL), 0);

  /* A plain pool with one TLS endpoint: the endpoint's context is what its connections use
   * (a plain connection to this server would fail its handshake). */
  braid_pool_opts_init(&po);
  assert_int_equal(braid_pool_new(&pool, s.t.loop, &po), 0);
  assert_int_equal(braid_pool_add_endpoint_tls(pool, "127.0.0.1", s.port, cctx), 0);
  braid_tls_ctx_free(cctx); /* the pools hold their own references */
  rpc_res_t r3 = {0};
  assert_int_equal(braid_pool_call(pool, "endpoint", 8, 0, 5000, on_answer, &r3), 0);
  bt_run_until(&s.t, &r3.done, 5000);
  assert_int_equal(r3.status, 0);
  assert_string_equal(r3.answer, "endpoint");
  assert_int_equal(braid_pool_close(pool, NULL, NULL), 0);
  bt_run_for(&s.t, 50);
  assert_int_equal(srv_stats(&s).handshakes, 3);
  srv_stop(&s);
}

static void on_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_respond(req, 200, NULL, 0, "hello over tls", 14);
}

static volatile int http_closed;
static void on_http_closed(braid_http_server_t *h, int status, void *arg) {
  (void)h;
  (void)status;
  (void)arg;
  http_closed = 1;
}

static volatile int tcp_closed;
static void on_tcp_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  (void)arg;
  tcp_closed = 1;
}

static void test_https_with_curl(void **state) {
  (void)state;
  NEED_PEERS();
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_server_t *http;
  assert_int_equal(braid_http_server_new(&http, t.loop, NULL), 0);
  assert_int_equal(braid_http_server_route(http, "GET", "/hello", BRAID_HTTP_EXACT, on_hello,
                                           NULL),
                   0);
  braid_tls_ctx_t *ctx = server_ctx("server", 0);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.tls = ctx;
  braid_server_t *server;
  assert_int_equal(braid_server_new(&server, t.loop, &o, braid_http_server_on_connection, http),
                   0);
  braid_tls_ctx_free(ctx); /* the server holds its own reference */
  assert_int_equal(braid_server_listen(server, "127.0.0.1", 0), 0);
  int port = braid_server_port(server);
  ext_t e = {0};
  run_shell(&t, &e, 15000,
            "curl -sS --cacert %s --resolve localhost:%d:127.0.0.1 "
            "https://localhost:%d/hello https://localhost:%d/hello -w ' %%{http_version}' 2>&1",
            cert("ca.pem"), port, port, port);
  if (e.status != 0 || !strstr(e.out, "hello over tls") || !strstr(e.out, " 1.1"))
    fail_msg("curl said:\n%s", e.out);
  tcp_closed = 0;
  assert_int_equal(braid_server_close(server, on_tcp_closed, NULL), 0);
  bt_run_until(&t, &tcp_closed, 5000);
  http_closed = 0;
  assert_int_equal(braid_http_server_close(http, on_http_closed, NULL), 0);
  bt_run_until(&t, &http_closed, 5000);
  bt_loop_done(&t);
}

/* ---- the HTTP client over https (braid_http_client_t with a TLS context) ------------- */

typedef struct hget_s {
  int done, status, http_status, reused;
  char body[64];
} hget_t;

static void on_hget(braid_http_client_req_t *req, int status,
                    const braid_http_client_response_t *res, void *arg) {
  (void)req;
  hget_t *g = arg;
  g->status = status;
  g->http_status = res->http_status;
  g->reused = res->reused;
  snprintf(g->body, sizeof(g->body), "%.*s", (int)res->body_len, res->body ? (const char *)res->body : "");
  g->done = 1;
}

static volatile int hclient_closed;
static void on_hclient_closed(braid_http_client_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  (void)arg;
  hclient_closed = 1;
}

static void hget(bt_loop_t *t, braid_http_client_t *cl, const char *url, hget_t *g) {
  memset(g, 0, sizeof(*g));
  assert_int_equal(braid_http_client_get(NULL, cl, url, on_hget, g), 0);
  bt_run_until(t, &g->done, 10000);
}

/* https:// through the HTTP client session: verified against the test CA, the connection
 * kept alive and reused; the same URL with the default context (the system's CAs, which do
 * not know the test CA) fails verification with its own code. */
static void test_https_with_braid_http_client(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_http_server_t *http;
  assert_int_equal(braid_http_server_new(&http, t.loop, NULL), 0);
  assert_int_equal(braid_http_server_route(http, "GET", "/hello", BRAID_HTTP_EXACT, on_hello,
                                           NULL),
                   0);
  braid_tls_ctx_t *sctx = server_ctx("server", 0);
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.tls = sctx;
  braid_server_t *server;
  assert_int_equal(braid_server_new(&server, t.loop, &so, braid_http_server_on_connection, http),
                   0);
  braid_tls_ctx_free(sctx);
  assert_int_equal(braid_server_listen(server, "127.0.0.1", 0), 0);
  char url[128];
  snprintf(url, sizeof(url), "https://localhost:%d/hello", braid_server_port(server));

  braid_http_client_opts_t co;
  braid_http_client_opts_init(&co);
  co.client.tls = client_ctx("ca.pem");
  braid_http_client_t *cl;
  assert_int_equal(braid_http_client_new(&cl, t.loop, &co), 0);
  braid_tls_ctx_free(co.client.tls); /* the session holds its own reference */
  hget_t g;
  hget(&t, cl, url, &g);
  assert_int_equal(g.status, 0);
  assert_int_equal(g.http_status, 200);
  assert_string_equal(g.body, "hello over tls");
  hget(&t, cl, url, &g);
  assert_int_equal(g.status, 0);
  assert_string_equal(g.body, "hello over tls");
  assert_int_equal(g.reused, 1);
  hclient_closed = 0;
  assert_int_equal(braid_http_client_close(cl, on_hclient_closed, NULL), 0);
  bt_run_until(&t, &hclient_closed, 5000);

  /* the default context: system CAs only */
  assert_int_equal(braid_http_client_new(&cl, t.loop, NULL), 0);
  hget(&t, cl, url, &g);
  assert_int_equal(g.status, BRAID_ETLSVERIFY);
  assert_int_equal(g.http_status, 0);
  hclient_closed = 0;
  assert_int_equal(braid_http_client_close(cl, on_hclient_closed, NULL), 0);
  bt_run_until(&t, &hclient_closed, 5000);

  tcp_closed = 0;
  assert_int_equal(braid_server_close(server, on_tcp_closed, NULL), 0);
  bt_run_until(&t, &tcp_closed, 5000);
  http_closed = 0;
  assert_int_equal(braid_http_server_close(http, on_http_closed, NULL), 0);
  bt_run_until(&t, &http_closed, 5000);
  bt_loop_done(&t);
}

static void test_options(void **state) {
  (void)state;
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  braid_opts_error_t err;
  assert_int_equal(braid_tls_opts_validate(&o, &err), 0);
  o.role = BRAID_TLS_SERVER;
  assert_int_equal(braid_tls_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "cert_file");
  o.cert_file = cert("server.pem");
  assert_int_equal(braid_tls_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "key_file");
  o.key_file = cert("missing.key");
  braid_tls_ctx_t *ctx;
  assert_int_equal(braid_tls_ctx_new(&ctx, &o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "key_file");
  o.key_file = cert("server.key");
  o.alpn = "h2,";
  assert_int_equal(braid_tls_ctx_new(&ctx, &o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "alpn");
  o.alpn = NULL;
  o.verify_peer = BRAID_TLS_VERIFY_REQUIRED;
  assert_int_equal(braid_tls_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "ca_file");
  o.verify_peer = BRAID_TLS_VERIFY_NONE;
  assert_int_equal(braid_tls_ctx_new(&ctx, &o, &err), 0);
  /* A server context where a client one belongs, and the reverse. */
  braid_client_opts_t co;
  braid_client_opts_init(&co);
  co.tls = ctx;
  assert_int_equal(braid_client_opts_validate(&co, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "tls");
  braid_tls_ctx_t *cctx = client_ctx("ca.pem");
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.tls = cctx;
  assert_int_equal(braid_server_opts_validate(&so, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "tls");
  /* PEM text in memory works like files. */
  FILE *f = fopen(cert("server.pem"), "r");
  static char cpem[8192], kpem[8192];
  cpem[fread(cpem, 1, sizeof(cpem) - 1, f)] = '\0';
  fclose(f);
  f = fopen(cert("server.key"), "r");
  kpem[fread(kpem, 1, sizeof(kpem) - 1, f)] = '\0';
  fclose(f);
  braid_tls_opts_t m;
  braid_tls_opts_init(&m);
  m.role = BRAID_TLS_SERVER;
  m.cert_pem = cpem;
  m.key_pem = kpem;
  braid_tls_ctx_t *mctx;
  assert_int_equal(braid_tls_ctx_new(&mctx, &m, &err), 0);
  srv_t s;
  srv_start(&s, mctx, SRV_ECHO);
  cli_t c;
  cli_connect(&s.t, &c, cctx, "127.0.0.1", s.port);
  assert_int_equal(c.status, 0);
  braid_conn_close(c.conn);
  bt_run_until(&s.t, &c.closed, 5000);
  srv_stop(&s);
  braid_tls_ctx_free(cctx);
  braid_tls_ctx_free(ctx);
}

static int setup(void **state) {
  (void)state;
  tls_dir = getenv("BRAID_TLS_DIR");
  if (!tls_dir)
    tls_dir = "tests/tls";
  if (!mkdtemp(certdir))
    return -1;
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "sh %s/make_certs.sh %s", tls_dir, certdir);
  if (system(cmd) != 0) {
    fprintf(stderr, "test_tls: make_certs.sh failed\n");
    return -1;
  }
  have_peers = system("command -v openssl >/dev/null && command -v python3 >/dev/null && "
                      "command -v curl >/dev/null") == 0;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", certdir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  braid__sigpipe_ignore_if_default();
  if (!braid_tls_available()) {
    printf("braid built without TLS: nothing to test\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_s_client_handshake),
      cmocka_unit_test(test_python_echo_large),
      cmocka_unit_test(test_braid_large_and_half_close),
      cmocka_unit_test(test_verify_failures),
      cmocka_unit_test(test_sni),
      cmocka_unit_test(test_resumption_python),
      cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_client_against_s_server),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_handshake_stall_times_out),
      cmocka_unit_test(test_renegotiation_refused),
      cmocka_unit_test(test_reload),
      cmocka_unit_test(test_rpc_and_pool_over_tls),
      cmocka_unit_test(test_https_with_curl),
      cmocka_unit_test(test_https_with_braid_http_client),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
