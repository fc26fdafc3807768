/* Clients over loopback: connect timeout against a listener whose backlog is full, refused
 * connects with retries and backoff, "localhost" resolution, IPv6, the fallback to the next
 * resolved address (names served by a fake DNS server, dns_fixture.h), lookup errors, cancel
 * at every stage, and argument checks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "dns_fixture.h"

typedef struct {
  bt_loop_t *t;
  int calls;
  int status;
  int done;
  braid_conn_t *conn;
  uint64_t done_ms;
  braid_connect_t *req;
  int cancel_in_cb; /* result of braid_connect_cancel() from inside the callback */
} result_t;

static void on_conn_closed(braid_conn_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  *(int *)arg = 1;
}

static void on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  result_t *r = arg;
  r->calls++;
  r->status = status;
  r->conn = conn;
  r->done = 1;
  r->done_ms = uv_now(&r->t->uv);
  assert_true(status == 0 ? conn != NULL : conn == NULL);
  r->cancel_in_cb = braid_connect_cancel(req);
}

static void result_init(result_t *r, bt_loop_t *t) {
  memset(r, 0, sizeof(*r));
  r->t = t;
}

/* Closes r's connection, if any, and waits for its close callback. */
static void result_close(result_t *r) {
  if (!r->conn)
    return;
  int closed = 0;
  braid_conn_callbacks_t cbs = {.on_close = on_conn_closed};
  assert_int_equal(braid_conn_set_callbacks(r->conn, &cbs), 0);
  braid_conn_set_data(r->conn, &closed);
  braid_conn_close(r->conn);
  bt_run_until(r->t, &closed, 5000);
  r->conn = NULL;
}

/* A listening socket on host with a full accept queue: listen(fd, 0) and raw connects that
 * are never accepted. Linux drops further SYNs, so a connect to it hangs until timed out. */
typedef struct {
  int listener;
  int fillers[4];
  int nfill;
  int port;
} blackhole_t;

static void blackhole_open(blackhole_t *b) {
  memset(b, 0, sizeof(*b));
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  b->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(b->listener >= 0);
  assert_int_equal(bind(b->listener, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(b->listener, 0), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(b->listener, (struct sockaddr *)&a, &len), 0);
  b->port = ntohs(a.sin_port);
  /* Backlog 0 still queues one connection; more fillers make sure the queue is full. */
  for (int i = 0; i < 3; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    assert_true(rc == 0 || errno == EINPROGRESS);
    b->fillers[b->nfill++] = fd;
  }
  usleep(50 * 1000); /* let the handshakes that can complete, complete */
}

static void blackhole_close(blackhole_t *b) {
  for (int i = 0; i < b->nfill; i++)
    close(b->fillers[i]);
  close(b->listener);
}

/* A port where nothing listens: bound (so nobody else takes it) but not listening, so SYNs
 * get a RST. */
static int closed_port(int *fd_out) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *fd_out = fd;
  return ntohs(a.sin_port);
}

/* ---- a braid echo server to connect to ------------------------------------------------ */

typedef struct {
  int closed_flag;
  int server_conns;
} echo_t;

static void echo_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  (void)arg;
  if (status < 0)
    braid_conn_close(c);
  else
    braid_conn_write(c, data, len, NULL, NULL);
}

static void echo_conn(braid_server_t *s, braid_conn_t *c, void *arg) {
  (void)s;
  echo_t *e = arg;
  e->server_conns++;
  braid_conn_callbacks_t cbs = {.on_read = echo_read};
  braid_conn_set_callbacks(c, &cbs);
  braid_conn_read_start(c);
}

static void echo_closed(braid_server_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  ((echo_t *)arg)->closed_flag = 1;
}

static braid_server_t *echo_start(bt_loop_t *t, echo_t *e, const char *host) {
  memset(e, 0, sizeof(*e));
  braid_server_t *s;
  assert_int_equal(braid_server_new(&s, t->loop, NULL, echo_conn, e), 0);
  assert_int_equal(braid_server_listen(s, host, 0), 0);
  return s;
}

static void echo_stop(bt_loop_t *t, braid_server_t *s, echo_t *e) {
  assert_int_equal(braid_server_close(s, echo_closed, e), 0);
  bt_run_until(t, &e->closed_flag, 5000);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_connect_timeout(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  blackhole_t b;
  blackhole_open(&b);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.connect_timeout_ms = 200;
  result_t r;
  result_init(&r, &t);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", b.port, &o, on_connect, &r), 0);
  assert_int_equal(r.calls, 0); /* never from inside the call */
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, BRAID_ETIMEDOUT);
  assert_true(r.done_ms - start >= 190);
  assert_true(r.done_ms - start < 2000);
  assert_int_equal(r.cancel_in_cb, BRAID_ECLOSED);
  bt_run(&t, 5000);
  assert_int_equal(r.calls, 1);
  blackhole_close(&b);
  bt_loop_done(&t);
}

static void test_refused(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  int hold;
  int port = closed_port(&hold);
  result_t r;
  result_init(&r, &t);
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", port, NULL, on_connect, &r), 0);
  bt_run(&t, 5000);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, UV_ECONNREFUSED);
  close(hold);
  bt_loop_done(&t);
}

static void test_refused_with_retries(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  int hold;
  int port = closed_port(&hold);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.retries = 3;
  o.backoff_initial_ms = 100;
  o.backoff_max_ms = 150;
  o.backoff_jitter = 0.0;
  result_t r;
  result_init(&r, &t);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", port, &o, on_connect, &r), 0);
  bt_run(&t, 10000);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, UV_ECONNREFUSED);
  /* Delays 100, then 200 capped to 150, then 150: 400 ms of backoff. */
  uint64_t took = r.done_ms - start;
  assert_true(took >= 390);
  assert_true(took < 2000);

  /* With full jitter, each delay is somewhere in [0, d]: never more than without. */
  o.backoff_jitter = 1.0;
  o.backoff_max_ms = 100;
  result_init(&r, &t);
  start = uv_now(&t.uv);
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", port, &o, on_connect, &r), 0);
  bt_run(&t, 10000);
  assert_int_equal(r.status, UV_ECONNREFUSED);
  assert_true(r.done_ms - start <= 300 + 200);
  close(hold);
  bt_loop_done(&t);
}

static void on_start_listening(uv_timer_t *timer) {
  int *fd = timer->data;
  assert_int_equal(listen(*fd, 8), 0);
  uv_close((uv_handle_t *)timer, NULL);
}

static void test_retry_then_succeed(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  int hold;
  int port = closed_port(&hold);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.retries = 5;
  o.backoff_initial_ms = 200;
  o.backoff_jitter = 0.0;
  result_t r;
  result_init(&r, &t);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", port, &o, on_connect, &r), 0);
  /* The first round is refused; while the request backs off, the port starts listening, and
   * the retry gets through (the kernel completes the handshake; nobody needs to accept). */
  uv_timer_t timer;
  uv_timer_init(&t.uv, &timer);
  timer.data = &hold;
  uv_timer_start(&timer, on_start_listening, 100, 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, 0);
  assert_non_null(r.conn);
  assert_true(r.done_ms - start >= 190);
  assert_true(r.done_ms - start < 2000);
  result_close(&r);
  bt_run(&t, 5000);
  close(hold);
  bt_loop_done(&t);
}

/* A round trip's loop, server and connection live in the test's state, so the teardown
 * closes them even after a failed assertion (cmocka runs it anyway): a failure then reports
 * itself, not a leak as well. */
typedef struct rt_fixture_s {
  bt_loop_t t;
  echo_t e;
  braid_server_t *s;
  result_t r;
} rt_fixture_t;

static int rt_setup(void **state) {
  rt_fixture_t *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  bt_loop_init(&f->t);
  result_init(&f->r, &f->t);
  *state = f;
  return 0;
}

static void on_teardown_timer(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
}

static void rt_abort_conn(rt_fixture_t *f) {
  if (!f->r.conn)
    return;
  braid_conn_callbacks_t cbs = {0};
  braid_conn_set_callbacks(f->r.conn, &cbs);
  braid_conn_abort(f->r.conn);
  f->r.conn = NULL;
}

static int rt_teardown(void **state) {
  rt_fixture_t *f = *state;
  rt_abort_conn(f);
  if (f->s) {
    braid_server_close(f->s, NULL, NULL);
    f->s = NULL;
  }
  /* A connect still resolving or connecting ends within its connect timeout (10 s by
   * default); a connection it makes then is aborted too. */
  uv_timer_t timer;
  uv_timer_init(&f->t.uv, &timer);
  uv_timer_start(&timer, on_teardown_timer, 12000, 0);
  uv_unref((uv_handle_t *)&timer);
  uv_run(&f->t.uv, UV_RUN_DEFAULT);
  rt_abort_conn(f);
  if (!uv_is_closing((uv_handle_t *)&timer))
    uv_close((uv_handle_t *)&timer, NULL);
  uv_run(&f->t.uv, UV_RUN_DEFAULT);
  int rc = braid_loop_close(f->t.loop);
  uv_run(&f->t.uv, UV_RUN_DEFAULT);
  int uv_rc = uv_loop_close(&f->t.uv);
  free(f);
  return rc == 0 && uv_rc == 0 ? 0 : -1;
}

static void round_trip(rt_fixture_t *f, const char *connect_host, const char *listen_host,
                       int family, int want_family) {
  f->s = echo_start(&f->t, &f->e, listen_host);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.family = family;
  o.sockopts.sndbuf_bytes = 32768;
  o.sockopts.keepalive = BRAID_OPT_ON;
  o.sockopts.keepalive_idle_s = 42;
  result_t *r = &f->r;
  assert_int_equal(
      braid_connect(NULL, f->t.loop, connect_host, braid_server_port(f->s), &o, on_connect, r), 0);
  assert_int_equal(r->calls, 0); /* resolution runs on the threadpool, never inline */
  bt_run_until(&f->t, &r->done, 5000);
  assert_int_equal(r->status, 0);
  struct sockaddr_storage peer;
  assert_int_equal(braid_conn_peername(r->conn, &peer), 0);
  assert_int_equal(peer.ss_family, want_family);
  /* Options were applied: buffer before connect, the rest after. */
  braid_sockopts_effective_t eff;
  assert_int_equal(braid_conn_sockopts(r->conn, &eff), 0);
  assert_true(eff.sndbuf_bytes >= 32768);
  assert_int_equal(eff.keepalive, 1);
  assert_int_equal(eff.keepalive_idle_s, 42);
  assert_int_equal(eff.nodelay, 1);
  result_close(r);
  braid_server_t *s = f->s;
  f->s = NULL;
  echo_stop(&f->t, s, &f->e);
  assert_int_equal(f->e.server_conns, 1);
}

/* Skips the test, saying why, when "localhost" does not resolve for family here (a minimal
 * system without /etc/hosts, such as a debootstrap minbase chroot): the test is about
 * braid's resolution and fallback, not about the machine's name service. */
static void require_localhost(int family) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo("localhost", NULL, &hints, &res);
  if (res)
    freeaddrinfo(res);
  if (rc != 0) {
    fprintf(stderr, "skipped: \"localhost\" does not resolve%s here (%s); "
                    "add it to /etc/hosts to run this test\n",
            family == AF_INET ? " to IPv4" : "", gai_strerror(rc));
    skip();
  }
}

static void test_localhost(void **state) {
  require_localhost(AF_UNSPEC);
  /* "localhost" may resolve to ::1 first, where nothing listens: the client then tries
   * 127.0.0.1, the next address. */
  round_trip(*state, "localhost", "127.0.0.1", AF_UNSPEC, AF_INET);
}

static void test_localhost_v4_only(void **state) {
  require_localhost(AF_INET);
  round_trip(*state, "localhost", "127.0.0.1", AF_INET, AF_INET);
}

static void test_ipv6(void **state) {
  round_trip(*state, "::1", "::1", AF_UNSPEC, AF_INET6);
}

/* ---- the fallback to the next resolved address ------------------------------------------
 *
 * braid_connect() tries the resolver's addresses in order until one connects. A fake DNS
 * server (dns_fixture.h) gives one name the loopback addresses of both families, and a
 * link-time wrapper (tests/meson.build passes -Wl,--wrap for this test) records the address
 * of every connect braid starts. */

#define FALLBACK_HOST "braid-fallback.test"

int __real_uv_tcp_connect(uv_connect_t *req, uv_tcp_t *handle, const struct sockaddr *addr,
                          uv_connect_cb cb);
int __wrap_uv_tcp_connect(uv_connect_t *req, uv_tcp_t *handle, const struct sockaddr *addr,
                          uv_connect_cb cb);

static struct sockaddr_storage attempts[8];
static int n_attempts;

int __wrap_uv_tcp_connect(uv_connect_t *req, uv_tcp_t *handle, const struct sockaddr *addr,
                          uv_connect_cb cb) {
  if (n_attempts < 8)
    memcpy(&attempts[n_attempts], addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in));
  n_attempts++;
  return __real_uv_tcp_connect(req, handle, addr, cb);
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr *b) {
  if (a->ss_family != b->sa_family)
    return 0;
  if (a->ss_family == AF_INET6)
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
  return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
         ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static int port_of(const struct sockaddr_storage *a) {
  return ntohs(a->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                        : ((const struct sockaddr_in *)a)->sin_port);
}

/* The first address refuses (a socket bound to its port there that does not listen, which
 * answers a SYN with RST every time), the second has the server: the client connects to the
 * second after exactly one failed attempt on the first, in the resolver's order. */
typedef struct {
  int done, status;
  size_t n;
  struct sockaddr_storage addrs[2];
} order_t;

static void on_order(braid_resolve_t *req, int status, const struct sockaddr_storage *addrs,
                     size_t naddrs, void *arg) {
  (void)req;
  order_t *o = arg;
  o->done = 1;
  o->status = status;
  o->n = naddrs;
  for (size_t i = 0; i < naddrs && i < 2; i++)
    o->addrs[i] = addrs[i];
}

static int have_ipv6_loopback(void) {
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof(a));
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

/* The first address refuses (a socket bound to its port there that does not listen, which
 * answers a SYN with RST every time), the second has the server: the client connects to the
 * second after exactly one failed attempt on the first, in the resolver's order. */
static void test_fallback_to_second_address(void **state) {
  (void)state;
  if (!have_ipv6_loopback()) {
    print_message("skipped: no IPv6 loopback here, so no second address of another family\n");
    skip();
  }
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t dns;
  fdns_start(&dns, &t);
  fdns_rule_t *rule = fdns_rule(&dns, FALLBACK_HOST, FDNS_ANSWER, 60);
  rule->a[0] = "127.0.0.1";
  rule->aaaa[0] = "::1";
  braid_resolver_opts_t ro;
  fdns_resolver_opts(&dns, &ro, 500, 2);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &ro), 0);
  /* The resolver's order (then cached for the connects below). */
  order_t ord;
  memset(&ord, 0, sizeof(ord));
  assert_int_equal(braid_resolve(NULL, res, FALLBACK_HOST, AF_UNSPEC, on_order, &ord), 0);
  bt_run_until(&t, &ord.done, 5000);
  assert_int_equal(ord.status, 0);
  assert_int_equal(ord.n, 2);
  assert_int_not_equal(ord.addrs[0].ss_family, ord.addrs[1].ss_family);
  struct sockaddr_storage first = ord.addrs[0], second = ord.addrs[1];
  char second_host[INET6_ADDRSTRLEN];
  assert_int_equal(uv_ip_name((struct sockaddr *)&second, second_host, sizeof(second_host)), 0);
  echo_t e;
  braid_server_t *s = NULL;
  int blocker = -1, port = 0;
  for (int tries = 0; tries < 5 && blocker < 0; tries++) {
    s = echo_start(&t, &e, second_host);
    port = braid_server_port(s);
    /* Take the same port on the first address, without listening. (Someone may hold it
     * there already: then use another port.) */
    struct sockaddr_storage a = first;
    socklen_t alen = sizeof(struct sockaddr_in);
    if (a.ss_family == AF_INET6) {
      ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)port);
      alen = sizeof(struct sockaddr_in6);
    } else {
      ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)port);
    }
    blocker = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(blocker >= 0);
    int one = 1;
    if (a.ss_family == AF_INET6)
      assert_int_equal(setsockopt(blocker, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)), 0);
    if (bind(blocker, (struct sockaddr *)&a, alen) != 0) {
      assert_int_equal(errno, EADDRINUSE);
      close(blocker);
      blocker = -1;
      echo_stop(&t, s, &e);
    }
  }
  assert_true(blocker >= 0);
  braid_client_opts_t o;
  braid_client_opts_init(&o); /* family AF_UNSPEC, no retries: one round over the list */
  o.resolver = res;
  result_t r;
  result_init(&r, &t);
  n_attempts = 0;
  assert_int_equal(braid_connect(NULL, t.loop, FALLBACK_HOST, port, &o, on_connect, &r), 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, 0);
  assert_int_equal(n_attempts, 2);
  assert_true(same_ip(&attempts[0], (struct sockaddr *)&first));
  assert_int_equal(port_of(&attempts[0]), port);
  assert_true(same_ip(&attempts[1], (struct sockaddr *)&second));
  assert_int_equal(port_of(&attempts[1]), port);
  struct sockaddr_storage peer;
  assert_int_equal(braid_conn_peername(r.conn, &peer), 0);
  assert_true(same_ip(&peer, (struct sockaddr *)&second));
  result_close(&r);
  /* With the server gone too, the one round ends with the last address's error. */
  echo_stop(&t, s, &e);
  assert_int_equal(e.server_conns, 1);
  result_init(&r, &t);
  n_attempts = 0;
  assert_int_equal(braid_connect(NULL, t.loop, FALLBACK_HOST, port, &o, on_connect, &r), 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, UV_ECONNREFUSED);
  assert_int_equal(n_attempts, 2);
  close(blocker);
  assert_int_equal(rule->count_a, 1); /* every lookup after the first came from the cache */
  assert_int_equal(rule->count_aaaa, 1);
  assert_int_equal(braid_resolver_close(res, NULL, NULL), 0);
  bt_run_for(&t, 10);
  fdns_stop(&dns, &t);
  bt_loop_done(&t);
}

/* Lookup errors end the connect with the resolver's code: no such name, no answer in time.
 * A retry round looks the name up again (a timeout is not cached). */
static void test_lookup_errors(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t dns;
  fdns_start(&dns, &t);
  fdns_rule_t *nx = fdns_rule(&dns, "nx.test", FDNS_NXDOMAIN, 0);
  fdns_rule_t *silent = fdns_rule(&dns, "silent.test", FDNS_SILENT, 0);
  braid_resolver_opts_t ro;
  fdns_resolver_opts(&dns, &ro, 100, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &ro), 0);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.resolver = res;
  o.family = AF_INET;
  result_t r;
  result_init(&r, &t);
  assert_int_equal(braid_connect(NULL, t.loop, "nx.test", 80, &o, on_connect, &r), 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, BRAID_EDNSNOTFOUND);
  assert_int_equal(nx->count_a, 1);
  o.retries = 1;
  o.backoff_initial_ms = 10;
  result_init(&r, &t);
  uv_update_time(&t.uv);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_connect(NULL, t.loop, "silent.test", 80, &o, on_connect, &r), 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, BRAID_EDNSTIMEOUT);
  assert_int_equal(silent->count_a, 2);
  assert_true(r.done_ms - start >= 200);
  assert_true(r.done_ms - start < 2000);
  /* A resolver of another loop is refused. */
  bt_loop_t t2;
  bt_loop_init(&t2);
  result_init(&r, &t);
  assert_int_equal(braid_connect(NULL, t2.loop, "nx.test", 80, &o, on_connect, &r), BRAID_EINVAL);
  bt_loop_done(&t2);
  assert_int_equal(braid_resolver_close(res, NULL, NULL), 0);
  bt_run_for(&t, 10);
  fdns_stop(&dns, &t);
  assert_int_equal(r.calls, 0);
  bt_loop_done(&t);
}

/* Cancelled while the lookup is on the wire: the callback runs inside the cancel; closing the
 * resolver then abandons the query; nothing is left on the loop. */
static void test_cancel_lookup_on_wire(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  fdns_t dns;
  fdns_start(&dns, &t);
  fdns_rule_t *silent = fdns_rule(&dns, "silent.test", FDNS_SILENT, 0);
  braid_resolver_opts_t ro;
  fdns_resolver_opts(&dns, &ro, 5000, 1);
  braid_resolver_t *res;
  assert_int_equal(braid_resolver_new(&res, t.loop, &ro), 0);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.resolver = res;
  result_t r;
  result_init(&r, &t);
  braid_connect_t *req;
  assert_int_equal(braid_connect(&req, t.loop, "silent.test", 80, &o, on_connect, &r), 0);
  bt_run_for(&t, 30);
  assert_int_equal(silent->count_a, 1);
  assert_int_equal(r.calls, 0);
  assert_int_equal(braid_connect_cancel(req), 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, BRAID_ECANCELED);
  assert_int_equal(braid_resolver_close(res, NULL, NULL), 0);
  bt_run_for(&t, 10);
  fdns_stop(&dns, &t);
  bt_loop_done(&t);
}

static void test_cancel_resolving(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  result_t r;
  result_init(&r, &t);
  braid_connect_t *req;
  assert_int_equal(braid_connect(&req, t.loop, "localhost", 9, NULL, on_connect, &r), 0);
  assert_int_equal(braid_connect_cancel(req), 0);
  bt_run(&t, 5000);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, BRAID_ECANCELED);
  assert_int_equal(r.cancel_in_cb, BRAID_ECLOSED);
  bt_loop_done(&t);
}

typedef struct {
  braid_connect_t *req;
  int rc;
  int calls_before;
  result_t *r;
} canceller_t;

static void on_cancel_timer(uv_timer_t *timer) {
  canceller_t *c = timer->data;
  c->calls_before = c->r->calls;
  c->rc = braid_connect_cancel(c->req);
  uv_close((uv_handle_t *)timer, NULL);
}

static void cancel_after(bt_loop_t *t, const char *host, int port, braid_client_opts_t *o,
                         uint64_t after_ms, result_t *r, canceller_t *c) {
  result_init(r, t);
  memset(c, 0, sizeof(*c));
  c->r = r;
  c->rc = 1;
  assert_int_equal(braid_connect(&c->req, t->loop, host, port, o, on_connect, r), 0);
  static uv_timer_t timer;
  uv_timer_init(&t->uv, &timer);
  timer.data = c;
  uv_timer_start(&timer, on_cancel_timer, after_ms, 0);
}

static void test_cancel_connecting(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  blackhole_t b;
  blackhole_open(&b);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.connect_timeout_ms = 5000;
  result_t r;
  canceller_t c;
  uint64_t start = uv_now(&t.uv);
  cancel_after(&t, "127.0.0.1", b.port, &o, 100, &r, &c);
  bt_run(&t, 5000);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.calls_before, 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, BRAID_ECANCELED);
  assert_true(r.done_ms - start < 1000); /* not the 5 s timeout */
  blackhole_close(&b);
  bt_loop_done(&t);
}

static void test_cancel_backing_off(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  int hold;
  int port = closed_port(&hold);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  o.retries = 5;
  o.backoff_initial_ms = 2000;
  o.backoff_jitter = 0.0;
  result_t r;
  canceller_t c;
  uint64_t start = uv_now(&t.uv);
  /* The refusal is immediate, so at 200 ms the request waits out its first backoff. */
  cancel_after(&t, "127.0.0.1", port, &o, 200, &r, &c);
  bt_run(&t, 5000);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.calls_before, 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, BRAID_ECANCELED);
  assert_true(r.done_ms - start < 1500);
  close(hold);
  bt_loop_done(&t);
}

static void test_cancel_before_start(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  result_t r;
  result_init(&r, &t);
  braid_connect_t *req;
  /* An IP literal: cancelled before the first attempt started. */
  assert_int_equal(braid_connect(&req, t.loop, "127.0.0.1", 9, NULL, on_connect, &r), 0);
  assert_int_equal(braid_connect_cancel(req), 0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, BRAID_ECANCELED);
  bt_run(&t, 5000);
  assert_int_equal(r.calls, 1);
  bt_loop_done(&t);
}

static void test_bad_arguments(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  result_t r;
  result_init(&r, &t);
  braid_client_opts_t o;
  braid_client_opts_init(&o);
  assert_int_equal(o.connect_timeout_ms, 10000);
  assert_int_equal(o.retries, 0);
  assert_int_equal(o.backoff_initial_ms, 100);
  assert_int_equal(o.backoff_max_ms, 10000);
  assert_true(o.backoff_jitter == 0.5);
  assert_int_equal(o.family, AF_UNSPEC);
  braid_loop_t *l = t.loop;
  assert_int_equal(braid_connect(NULL, NULL, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, l, NULL, 1, &o, on_connect, &r), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, l, "", 1, &o, on_connect, &r), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 0, &o, on_connect, &r), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 65536, &o, on_connect, &r), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, NULL, &r), BRAID_EINVAL);
  o.backoff_jitter = 1.5;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.backoff_max_ms = 50;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.backoff_initial_ms = 0;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.retries = 1001;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.connect_timeout_ms = (UINT64_C(1) << 31) + 1;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.family = AF_UNIX;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.family = AF_INET6; /* an IPv4 literal cannot be reached over IPv6 only */
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  braid_client_opts_init(&o);
  o.sockopts.dscp = 64;
  assert_int_equal(braid_connect(NULL, l, "127.0.0.1", 1, &o, on_connect, &r), BRAID_EINVAL);
  /* The validator says which field, with its path (API.md rule 2). */
  braid_opts_error_t err;
  assert_int_equal(braid_client_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "sockopts.dscp");
  braid_client_opts_init(&o);
  o.backoff_max_ms = 50;
  assert_int_equal(braid_client_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "backoff_max_ms");
  assert_non_null(strstr(err.reason, "backoff_initial_ms"));
  braid_client_opts_init(&o);
  assert_int_equal(braid_client_opts_validate(&o, &err), 0);
  assert_int_equal(braid_connect_cancel(NULL), BRAID_EINVAL);
  assert_int_equal(r.calls, 0);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_timeout),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_refused_with_retries),
      cmocka_unit_test(test_retry_then_succeed),
      cmocka_unit_test_setup_teardown(test_localhost, rt_setup, rt_teardown),
      cmocka_unit_test_setup_teardown(test_localhost_v4_only, rt_setup, rt_teardown),
      cmocka_unit_test_setup_teardown(test_ipv6, rt_setup, rt_teardown),
      cmocka_unit_test(test_fallback_to_second_address),
      cmocka_unit_test(test_lookup_errors),
      cmocka_unit_test(test_cancel_lookup_on_wire),
      cmocka_unit_test(test_cancel_resolving),
      cmocka_unit_test(test_cancel_connecting),
      cmocka_unit_test(test_cancel_backing_off),
      cmocka_unit_test(test_cancel_before_start),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
