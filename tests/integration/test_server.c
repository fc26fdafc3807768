/* Servers over loopback: listen (v4, v6, port 0), round trips with braid_connect clients,
 * the connection cap, EMFILE, worker threads, drain with requests in flight, the drain
 * deadline, and closing from inside the connection callback. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../support.h"

/* ---- an echo server ------------------------------------------------------------------ */

typedef struct srv_s {
  bt_loop_t *t;
  braid_server_t *server;
  atomic_int accepted; /* on_connection calls */
  atomic_int open;     /* server-side connections open now */
  atomic_int max_open;
  atomic_int closed;
  int close_cb_calls;
  int close_status;
  int server_closed; /* flag for bt_run_until */
  uint64_t close_cb_ms;
  uint64_t delay_ms;     /* > 0: answer each read after this long (work in flight) */
  atomic_int reads;      /* read callbacks with data */
  atomic_int max_active; /* highest braid_server_stats().active seen in on_connection */
  int close_in_callback; /* close the server from inside on_connection */
  uv_mutex_t mu;
  uv_thread_t threads[16];
  int nthreads;
} srv_t;

typedef struct {
  srv_t *srv;
  braid_conn_t *conn;
  uv_timer_t timer;
  char buf[4096];
  size_t len;
  int timer_open;
} srv_conn_t;

static void srv_free_conn(uv_handle_t *h) {
  free(h->data);
}

static void srv_on_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  srv_conn_t *sc = arg;
  atomic_fetch_sub(&sc->srv->open, 1);
  atomic_fetch_add(&sc->srv->closed, 1);
  if (sc->timer_open) {
    sc->timer.data = sc;
    uv_close((uv_handle_t *)&sc->timer, srv_free_conn);
  } else {
    free(sc);
  }
}

static void on_delayed_answer(uv_timer_t *t) {
  srv_conn_t *sc = t->data;
  assert_int_equal(braid_conn_write(sc->conn, sc->buf, sc->len, NULL, NULL), 0);
  sc->len = 0;
}

static void srv_on_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  srv_conn_t *sc = arg;
  if (status < 0) {
    braid_conn_close(c);
    return;
  }
  atomic_fetch_add(&sc->srv->reads, 1);
  if (sc->srv->delay_ms == 0) {
    assert_int_equal(braid_conn_write(c, data, len, NULL, NULL), 0);
    return;
  }
  assert_true(sc->len + len <= sizeof(sc->buf));
  memcpy(sc->buf + sc->len, data, len);
  sc->len += len;
  if (!uv_is_active((uv_handle_t *)&sc->timer))
    uv_timer_start(&sc->timer, on_delayed_answer, sc->srv->delay_ms, 0);
}

static void srv_on_server_closed(braid_server_t *s, int status, void *arg) {
  (void)s;
  srv_t *srv = arg;
  srv->close_cb_calls++;
  srv->close_status = status;
  srv->server_closed = 1;
  srv->close_cb_ms = uv_now(&srv->t->uv);
}

static void srv_on_connection(braid_server_t *s, braid_conn_t *c, void *arg) {
  srv_t *srv = arg;
  atomic_fetch_add(&srv->accepted, 1);
  int open = atomic_fetch_add(&srv->open, 1) + 1;
  int max = atomic_load(&srv->max_open);
  while (open > max && !atomic_compare_exchange_weak(&srv->max_open, &max, open)) {
  }
  /* The stats are atomics: readable from a worker thread too. */
  braid_server_stats_t st;
  braid_server_stats(s, &st);
  int active = (int)st.active;
  int max_active = atomic_load(&srv->max_active);
  while (active > max_active &&
         !atomic_compare_exchange_weak(&srv->max_active, &max_active, active)) {
  }
  uv_thread_t self = uv_thread_self();
  uv_mutex_lock(&srv->mu);
  int known = 0;
  for (int i = 0; i < srv->nthreads; i++)
    known |= uv_thread_equal(&srv->threads[i], &self);
  if (!known && srv->nthreads < 16)
    srv->threads[srv->nthreads++] = self;
  uv_mutex_unlock(&srv->mu);

  srv_conn_t *sc = calloc(1, sizeof(*sc));
  assert_non_null(sc);
  sc->srv = srv;
  sc->conn = c;
  if (srv->delay_ms) {
    uv_timer_init(braid_loop_uv(braid_conn_loop(c)), &sc->timer);
    sc->timer.data = sc;
    sc->timer_open = 1;
  }
  braid_conn_callbacks_t cbs = {.on_read = srv_on_read, .on_close = srv_on_close};
  assert_int_equal(braid_conn_set_callbacks(c, &cbs), 0);
  braid_conn_set_data(c, sc);
  assert_int_equal(braid_conn_read_start(c), 0);
  if (srv->close_in_callback) {
    assert_int_equal(braid_server_close(s, srv_on_server_closed, srv), 0);
    assert_int_equal(braid_server_close(s, srv_on_server_closed, srv), BRAID_ECLOSED);
  }
}

static void srv_start(srv_t *srv, bt_loop_t *t, const braid_server_opts_t *o, const char *host) {
  memset(srv, 0, sizeof(*srv));
  srv->t = t;
  uv_mutex_init(&srv->mu);
  assert_int_equal(braid_server_new(&srv->server, t->loop, o, srv_on_connection, srv), 0);
  assert_int_equal(braid_server_listen(srv->server, host, 0), 0);
  assert_true(braid_server_port(srv->server) > 0);
}

static void srv_close_and_wait(srv_t *srv) {
  assert_int_equal(braid_server_close(srv->server, srv_on_server_closed, srv), 0);
  bt_run_until(srv->t, &srv->server_closed, 10000);
  assert_int_equal(srv->close_cb_calls, 1);
  uv_mutex_destroy(&srv->mu);
}

/* ---- clients ------------------------------------------------------------------------ */

typedef struct clients_s clients_t;

typedef struct {
  clients_t *all;
  braid_conn_t *conn;
  int connect_status;
  int connected;
  char payload[64];
  size_t want, got;
  int mismatch;
  int echoed;
  int closed;
  int close_status;
  uv_timer_t timer;
} client_t;

struct clients_s {
  bt_loop_t *t;
  client_t c[64];
  int n;
  int connects_done;
  int connect_errors;
  int echoed;
  int closed;
  int all_connected; /* flags for bt_run_until */
  int all_echoed;
  int all_closed;
  int64_t close_after_ms; /* after the echo: -1 keep open, 0 close now, N close after N ms */
  int accepted_at_first_close;
  int first_close_seen;
  srv_t *srv;
};

static void cl_on_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  client_t *cl = arg;
  cl->closed = 1;
  cl->close_status = status;
  cl->conn = NULL;
  if (++cl->all->closed == cl->all->n)
    cl->all->all_closed = 1;
}

static void cl_close_now(client_t *cl) {
  clients_t *all = cl->all;
  if (!all->first_close_seen && all->srv) {
    all->first_close_seen = 1;
    all->accepted_at_first_close = atomic_load(&all->srv->accepted);
  }
  braid_conn_close(cl->conn);
}

static void cl_on_timer(uv_timer_t *t) {
  cl_close_now(t->data);
}

static void cl_on_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  client_t *cl = arg;
  if (status < 0) {
    braid_conn_close(c);
    return;
  }
  if (cl->got + len > cl->want || memcmp(cl->payload + cl->got, data, len) != 0)
    cl->mismatch = 1;
  cl->got += len;
  if (cl->got != cl->want || cl->echoed)
    return;
  cl->echoed = 1;
  if (++cl->all->echoed == cl->all->n)
    cl->all->all_echoed = 1;
  if (cl->all->close_after_ms == 0)
    cl_close_now(cl);
  else if (cl->all->close_after_ms > 0)
    uv_timer_start(&cl->timer, cl_on_timer, (uint64_t)cl->all->close_after_ms, 0);
}

static void cl_on_connect(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  client_t *cl = arg;
  clients_t *all = cl->all;
  cl->connect_status = status;
  if (++all->connects_done == all->n)
    all->all_connected = 1;
  if (status) {
    all->connect_errors++;
    return;
  }
  cl->connected = 1;
  cl->conn = conn;
  braid_conn_callbacks_t cbs = {.on_read = cl_on_read, .on_close = cl_on_close};
  assert_int_equal(braid_conn_set_callbacks(conn, &cbs), 0);
  braid_conn_set_data(conn, cl);
  assert_int_equal(braid_conn_read_start(conn), 0);
  assert_int_equal(braid_conn_write(conn, cl->payload, cl->want, NULL, NULL), 0);
}

static void clients_start(clients_t *all, bt_loop_t *t, int n, const char *host, int port,
                          int64_t close_after_ms, srv_t *srv) {
  memset(all, 0, sizeof(*all));
  all->t = t;
  all->n = n;
  all->close_after_ms = close_after_ms;
  all->srv = srv;
  for (int i = 0; i < n; i++) {
    client_t *cl = &all->c[i];
    cl->all = all;
    cl->want = (size_t)snprintf(cl->payload, sizeof(cl->payload), "request %d from a client", i);
    uv_timer_init(&t->uv, &cl->timer);
    cl->timer.data = cl;
    braid_client_opts_t o;
    braid_client_opts_init(&o);
    o.connect_timeout_ms = 5000;
    assert_int_equal(braid_connect(NULL, t->loop, host, port, &o, cl_on_connect, cl), 0);
  }
}

static void clients_close_all(clients_t *all) {
  for (int i = 0; i < all->n; i++) {
    client_t *cl = &all->c[i];
    if (cl->conn && !cl->closed)
      braid_conn_close(cl->conn);
    uv_close((uv_handle_t *)&cl->timer, NULL);
  }
}

static void clients_wait_closed(clients_t *all) {
  int connected = 0;
  for (int i = 0; i < all->n; i++)
    connected += all->c[i].connected;
  if (connected == all->n)
    bt_run_until(all->t, &all->all_closed, 10000);
  clients_close_all(all);
}

/* ---- tests --------------------------------------------------------------------------- */

static char log_seen[512];
static void record_log(braid_loop_t *loop, braid_log_level_t level, const char *msg, void *arg) {
  (void)loop;
  (void)level;
  (void)arg;
  snprintf(log_seen, sizeof(log_seen), "%s", msg);
}

static void test_listen_v4_v6(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t s4, s6;
  srv_start(&s4, &t, NULL, "127.0.0.1");
  struct sockaddr_storage ss;
  assert_int_equal(braid_server_address(s4.server, &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  assert_int_equal(ntohl(a4->sin_addr.s_addr), INADDR_LOOPBACK);
  assert_int_equal(ntohs(a4->sin_port), braid_server_port(s4.server));
  assert_int_equal(braid_server_workers(s4.server), 1);
  /* Listening twice is refused. */
  assert_int_equal(braid_server_listen(s4.server, "127.0.0.1", 0), BRAID_EINVAL);

  srv_start(&s6, &t, NULL, "::1");
  assert_int_equal(braid_server_address(s6.server, &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  assert_memory_equal(&a6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));
  assert_int_equal(ntohs(a6->sin6_port), braid_server_port(s6.server));

  /* Errors: bad address, port in use (no SO_REUSEPORT), bad options, not listening. */
  braid_server_t *bad;
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, &s4), 0);
  assert_int_equal(braid_server_port(bad), -1);
  assert_int_equal(braid_server_address(bad, &ss), BRAID_EINVAL);
  assert_int_equal(braid_server_listen(bad, "localhost", 0), BRAID_EINVAL);
  assert_int_equal(braid_server_listen(bad, "127.0.0.1", 70000), BRAID_EINVAL);
  assert_int_equal(braid_server_listen(bad, "127.0.0.1", braid_server_port(s4.server)),
                   UV_EADDRINUSE);
  assert_int_equal(braid_server_port(bad), -1);
  /* After a failed listen the server can still listen elsewhere. */
  assert_int_equal(braid_server_listen(bad, "127.0.0.1", 0), 0);
  srv_t dummy;
  memset(&dummy, 0, sizeof(dummy));
  dummy.t = &t;
  assert_int_equal(braid_server_close(bad, srv_on_server_closed, &dummy), 0);

  /* With workers, a failed listen starts no thread and leaves nothing open. */
  braid_server_t *multi;
  srv_t mdummy;
  memset(&mdummy, 0, sizeof(mdummy));
  braid_server_opts_init(&o);
  o.workers = 3;
  assert_int_equal(braid_server_new(&multi, t.loop, &o, srv_on_connection, &mdummy), 0);
  assert_int_equal(braid_server_listen(multi, "127.0.0.1", braid_server_port(s4.server)),
                   UV_EADDRINUSE);
  assert_int_equal(braid_server_listen(multi, "::1", 0), 0);
  assert_int_equal(braid_server_close(multi, srv_on_server_closed, &mdummy), 0);
  mdummy.t = &t;
  bt_run_until(&t, &mdummy.server_closed, 5000);
  assert_int_equal(mdummy.close_cb_calls, 1);

  braid_server_opts_init(&o);
  o.max_connections = (1u << 24) + 1;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_server_opts_init(&o);
  o.workers = 257;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_server_opts_init(&o);
  o.accept_backoff_ms = 0;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_server_opts_init(&o);
  o.sockopts.backlog = 0;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_server_opts_init(&o);
  o.send_rate_bytes_per_s = (UINT64_C(1) << 40) + 1;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  assert_int_equal(braid_server_new(&bad, t.loop, NULL, NULL, NULL), BRAID_EINVAL);
  /* Issue 10: lowering max_queue_bytes below the default 1 MiB high watermark made
   * braid_server_new() fail with a bare EINVAL. The validator names the field and both
   * values, and braid_server_new() tells the loop's log hook the same. */
  braid_server_opts_init(&o);
  o.conn.max_queue_bytes = 64 * 1024;
  braid_opts_error_t err;
  assert_int_equal(braid_server_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "conn.high_watermark_bytes");
  assert_non_null(strstr(err.reason, "1048576"));
  assert_non_null(strstr(err.reason, "65536"));
  log_seen[0] = '\0';
  braid_loop_set_log(t.loop, record_log, BRAID_LOG_DEBUG, NULL);
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_loop_set_log(t.loop, NULL, BRAID_LOG_DEBUG, NULL);
  assert_non_null(strstr(log_seen, "conn.high_watermark_bytes"));
  braid_server_opts_init(&o);
  o.sockopts.backlog = 0;
  assert_int_equal(braid_server_opts_validate(&o, &err), BRAID_EINVAL);
  assert_string_equal(err.field, "sockopts.backlog");
  /* A group bucket belongs to one loop: not allowed with worker threads. */
  braid_ratelimit_t *rl;
  assert_int_equal(braid_ratelimit_new(&rl, t.loop, 1000, 0), 0);
  braid_server_opts_init(&o);
  o.workers = 2;
  o.conn.send_group = rl;
  assert_int_equal(braid_server_new(&bad, t.loop, &o, srv_on_connection, NULL), BRAID_EINVAL);
  braid_ratelimit_free(rl);

  /* The server keeps the braid loop busy until its close callback. */
  assert_int_equal(braid_loop_close(t.loop), BRAID_EBUSY);
  bt_run_until(&t, &dummy.server_closed, 5000);
  assert_int_equal(dummy.close_cb_calls, 1);
  assert_int_equal(dummy.close_status, 0);
  srv_close_and_wait(&s4);
  srv_close_and_wait(&s6);
  assert_int_equal(s4.close_status, 0);
  bt_loop_done(&t);
}

static void round_trip(const char *host) {
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t srv;
  srv_start(&srv, &t, NULL, host);
  clients_t cl;
  clients_start(&cl, &t, 3, host, braid_server_port(srv.server), 0, &srv);
  bt_run_until(&t, &cl.all_echoed, 10000);
  for (int i = 0; i < cl.n; i++) {
    assert_int_equal(cl.c[i].connect_status, 0);
    assert_int_equal(cl.c[i].mismatch, 0);
  }
  clients_wait_closed(&cl);
  braid_server_stats_t st;
  braid_server_stats(srv.server, &st);
  assert_int_equal(st.accepted, 3);
  assert_int_equal(st.accept_errors, 0);
  srv_close_and_wait(&srv);
  assert_int_equal(atomic_load(&srv.open), 0);
  bt_loop_done(&t);
}

static void test_round_trip_v4(void **state) {
  (void)state;
  round_trip("127.0.0.1");
}

static void test_round_trip_v6(void **state) {
  (void)state;
  round_trip("::1");
}

static void test_connection_cap(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.max_connections = 2;
  srv_t srv;
  srv_start(&srv, &t, &o, "127.0.0.1");
  clients_t cl;
  /* cap + 2 clients: each closes 300 ms after its echo, which lets the next one in. */
  clients_start(&cl, &t, 4, "127.0.0.1", braid_server_port(srv.server), 300, &srv);
  bt_run_until(&t, &cl.all_connected, 10000);
  assert_int_equal(cl.connect_errors, 0); /* the kernel completes the handshake */
  bt_run_until(&t, &cl.all_echoed, 10000);
  for (int i = 0; i < cl.n; i++)
    assert_int_equal(cl.c[i].mismatch, 0);
  /* Only cap were accepted until the first client closed; never more than cap open. */
  assert_int_equal(cl.accepted_at_first_close, 2);
  assert_true(atomic_load(&srv.max_open) <= 2);
  bt_run_until(&t, &cl.all_closed, 10000);
  clients_close_all(&cl);
  braid_server_stats_t st;
  braid_server_stats(srv.server, &st);
  assert_int_equal(st.accepted, 4);
  assert_true(st.cap_pauses >= 1);
  srv_close_and_wait(&srv);
  bt_loop_done(&t);
}

static void test_connection_cap_workers(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.max_connections = 3;
  o.workers = 3;
  srv_t srv;
  srv_start(&srv, &t, &o, "127.0.0.1");
  clients_t cl;
  /* Closes on one worker must wake listeners paused on the others: every client is served. */
  enum { N = 12 };
  clients_start(&cl, &t, N, "127.0.0.1", braid_server_port(srv.server), 300, &srv);
  bt_run_until(&t, &cl.all_echoed, 20000);
  for (int i = 0; i < N; i++)
    assert_int_equal(cl.c[i].mismatch, 0);
  if (atomic_load(&srv.max_active) > 3 || cl.accepted_at_first_close != 3)
    fail_msg("max active %d, accepted at the first close %d (want <= 3 and 3)",
             atomic_load(&srv.max_active), cl.accepted_at_first_close);
  bt_run_until(&t, &cl.all_closed, 10000);
  clients_close_all(&cl);
  braid_server_stats_t st;
  braid_server_stats(srv.server, &st);
  assert_int_equal(st.accepted, N);
  assert_true(st.cap_pauses >= 1);
  srv_close_and_wait(&srv);
  bt_loop_done(&t);
}

/* ---- EMFILE ------------------------------------------------------------------------- */

typedef struct {
  int warnings;
} log_count_t;

static void count_log(braid_loop_t *loop, braid_log_level_t level, const char *msg, void *arg) {
  (void)loop;
  (void)msg;
  log_count_t *lc = arg;
  if (level >= BRAID_LOG_WARN)
    lc->warnings++;
}

typedef struct {
  uint64_t iterations;
} spin_t;

static void count_iteration(uv_prepare_t *p) {
  ((spin_t *)p->data)->iterations++;
}

static void on_stop_timer(uv_timer_t *t) {
  *(int *)t->data = 1;
}

static void run_for(bt_loop_t *t, uint64_t ms) {
  int done = 0;
  uv_timer_t timer;
  uv_timer_init(&t->uv, &timer);
  timer.data = &done;
  uv_timer_start(&timer, on_stop_timer, ms, 0);
  bt_run_until(t, &done, ms + 5000);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
}

/* Restores RLIMIT_NOFILE even when test_emfile fails half-way, so later tests can open
 * sockets. */
static uint64_t saved_nofile;

static int restore_nofile(void **state) {
  (void)state;
  if (saved_nofile)
    bt_set_nofile(saved_nofile);
  saved_nofile = 0;
  return 0;
}

static void test_emfile(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  log_count_t lc = {0};
  braid_loop_set_log(t.loop, count_log, BRAID_LOG_DEBUG, &lc);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.accept_backoff_ms = 100;
  srv_t srv;
  srv_start(&srv, &t, &o, "127.0.0.1");
  struct sockaddr_storage ss;
  assert_int_equal(braid_server_address(srv.server, &ss), 0);

  /* Three raw clients: the kernel completes their handshakes without an accept(). */
  enum { N = 3 };
  int raw[N];
  for (int i = 0; i < N; i++) {
    raw[i] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(raw[i] >= 0);
    assert_int_equal(connect(raw[i], (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  }
  /* Use up every descriptor the lowered limit leaves. */
  int fill[512];
  int nfill = 0;
  int highest = raw[N - 1];
  saved_nofile = bt_set_nofile((uint64_t)highest + 8);
  for (;;) {
    assert_true(nfill < 512);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      assert_int_equal(errno, EMFILE);
      break;
    }
    fill[nfill++] = fd;
  }
  spin_t spin = {0};
  uv_prepare_t prep;
  uv_prepare_init(&t.uv, &prep);
  prep.data = &spin;
  uv_prepare_start(&prep, count_iteration);
  run_for(&t, 600);
  braid_server_stats_t st;
  braid_server_stats(srv.server, &st);
  /* It tried, failed, and backed off: about one attempt per 100 ms, not a busy loop. */
  fprintf(stderr, "emfile: %llu accept errors and %llu loop iterations in 600 ms\n",
          (unsigned long long)st.accept_errors, (unsigned long long)spin.iterations);
  assert_int_equal(st.accepted, 0);
  assert_true(st.accept_errors >= 2);
  assert_true(st.accept_errors <= 10);
  assert_true(spin.iterations < 100);
  assert_true(lc.warnings >= 1);

  /* Free descriptors: the server accepts every waiting client, none was dropped. */
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  restore_nofile(NULL);
  uv_close((uv_handle_t *)&prep, NULL);
  for (int i = 0; i < 300 && atomic_load(&srv.accepted) < N; i++)
    run_for(&t, 10);
  assert_int_equal(atomic_load(&srv.accepted), N);
  /* Each accepted connection still works: it echoes. */
  for (int i = 0; i < N; i++) {
    assert_int_equal(write(raw[i], "ping", 4), 4);
    char buf[8];
    int got = 0;
    for (int k = 0; k < 200 && got < 4; k++) {
      run_for(&t, 5);
      ssize_t r = recv(raw[i], buf + got, sizeof(buf) - (size_t)got, MSG_DONTWAIT);
      if (r > 0)
        got += (int)r;
    }
    assert_int_equal(got, 4);
    assert_memory_equal(buf, "ping", 4);
    close(raw[i]);
  }
  srv_close_and_wait(&srv);
  bt_loop_done(&t);
}

/* ---- worker threads ------------------------------------------------------------------ */

static void test_workers(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.workers = 2;
  /* Each worker loop gets its own bucket of rate / 2 (far above what this test sends). */
  o.send_rate_bytes_per_s = 64 << 20;
  o.recv_rate_bytes_per_s = 64 << 20;
  srv_t srv;
  srv_start(&srv, &t, &o, "127.0.0.1");
  assert_int_equal(braid_server_workers(srv.server), 2);
  clients_t cl;
  enum { N = 40 };
  clients_start(&cl, &t, N, "127.0.0.1", braid_server_port(srv.server), -1, &srv);
  bt_run_until(&t, &cl.all_echoed, 20000);
  for (int i = 0; i < N; i++) {
    assert_int_equal(cl.c[i].connect_status, 0);
    assert_int_equal(cl.c[i].mismatch, 0);
  }
  braid_server_stats_t st;
  braid_server_stats(srv.server, &st);
  assert_int_equal(st.accepted, N);
  assert_int_equal(st.active, N);
  /* SO_REUSEPORT spread 40 connections over both listeners (all on one: p = 2^-39). */
  assert_int_equal(srv.nthreads, 2);
  clients_close_all(&cl);
  bt_run_until(&t, &cl.all_closed, 10000);
  srv_close_and_wait(&srv);
  assert_int_equal(srv.close_status, 0);
  assert_int_equal(atomic_load(&srv.closed), N);
  bt_loop_done(&t);
}

static void test_workers_default_and_close_busy(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.workers = 0; /* one per CPU */
  srv_t srv;
  srv_start(&srv, &t, &o, "::1");
  assert_int_equal(braid_server_workers(srv.server), uv_available_parallelism());
  clients_t cl;
  enum { N = 10 };
  clients_start(&cl, &t, N, "::1", braid_server_port(srv.server), -1, &srv);
  bt_run_until(&t, &cl.all_echoed, 20000);
  /* Closing with connections open on worker threads closes them there; clients see it. */
  srv_close_and_wait(&srv);
  assert_int_equal(srv.close_status, 0);
  assert_int_equal(atomic_load(&srv.closed), N);
  bt_run_until(&t, &cl.all_closed, 10000);
  clients_close_all(&cl);
  bt_loop_done(&t);
}

/* ---- drain ------------------------------------------------------------------------- */

typedef struct {
  int status;
  int done;
} refused_t;

static void on_refused(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  refused_t *r = arg;
  r->status = status;
  r->done = 1;
  if (conn)
    braid_conn_close(conn);
}

static void test_drain_in_flight(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t srv;
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  srv_start(&srv, &t, &o, "127.0.0.1");
  srv.delay_ms = 300; /* every answer takes 300 ms */
  int port = braid_server_port(srv.server);
  clients_t cl;
  enum { N = 5 };
  clients_start(&cl, &t, N, "127.0.0.1", port, 0, &srv);
  /* Wait until the server holds every request, then drain with answers still pending. */
  while (atomic_load(&srv.reads) < N)
    run_for(&t, 5);
  assert_int_equal(cl.echoed, 0);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_server_drain(srv.server, 5000, srv_on_server_closed, &srv), 0);
  int again = braid_server_drain(srv.server, 5000, srv_on_server_closed, &srv);
  assert_int_equal(again, BRAID_ECLOSED);
  /* The listener is gone at once: a new client is refused. */
  refused_t r = {0};
  assert_int_equal(braid_connect(NULL, t.loop, "127.0.0.1", port, NULL, on_refused, &r), 0);
  bt_run_until(&t, &r.done, 5000);
  assert_int_equal(r.status, UV_ECONNREFUSED);
  bt_run_until(&t, &srv.server_closed, 10000);
  /* Every client got its whole answer, then closed, which let the drain finish early. */
  assert_int_equal(cl.echoed, N);
  for (int i = 0; i < N; i++)
    assert_int_equal(cl.c[i].mismatch, 0);
  assert_int_equal(srv.close_status, 0);
  assert_true(srv.close_cb_ms - start < 4000);
  bt_run_until(&t, &cl.all_closed, 5000);
  clients_close_all(&cl);
  uv_mutex_destroy(&srv.mu);
  bt_loop_done(&t);
}

static void test_drain_deadline(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t srv;
  srv_start(&srv, &t, NULL, "127.0.0.1");
  clients_t cl;
  enum { N = 3 };
  /* Idle clients: they never close on their own. */
  clients_start(&cl, &t, N, "127.0.0.1", braid_server_port(srv.server), -1, &srv);
  bt_run_until(&t, &cl.all_echoed, 10000);
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_server_drain(srv.server, 300, srv_on_server_closed, &srv), 0);
  bt_run_until(&t, &srv.server_closed, 10000);
  uint64_t took = srv.close_cb_ms - start;
  assert_true(took >= 290);
  assert_true(took < 3000);
  assert_int_equal(srv.close_status, BRAID_ETIMEDOUT);
  assert_int_equal(atomic_load(&srv.closed), N);
  /* The clients see the server's close. */
  bt_run_until(&t, &cl.all_closed, 10000);
  clients_close_all(&cl);
  uv_mutex_destroy(&srv.mu);
  bt_loop_done(&t);
}

static void test_close_in_connection_cb(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t srv;
  srv_start(&srv, &t, NULL, "127.0.0.1");
  srv.close_in_callback = 1;
  clients_t cl;
  clients_start(&cl, &t, 1, "127.0.0.1", braid_server_port(srv.server), -1, &srv);
  bt_run_until(&t, &srv.server_closed, 10000);
  assert_int_equal(srv.close_cb_calls, 1);
  assert_int_equal(srv.close_status, 0);
  assert_int_equal(atomic_load(&srv.accepted), 1);
  assert_int_equal(atomic_load(&srv.closed), 1);
  bt_run_until(&t, &cl.all_closed, 10000);
  clients_close_all(&cl);
  uv_mutex_destroy(&srv.mu);
  bt_loop_done(&t);
}

static void test_close_before_listen(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  srv_t srv;
  memset(&srv, 0, sizeof(srv));
  srv.t = &t;
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.workers = 3;
  assert_int_equal(braid_server_new(&srv.server, t.loop, &o, srv_on_connection, &srv), 0);
  assert_int_equal(braid_server_close(srv.server, srv_on_server_closed, &srv), 0);
  /* cb is never called from inside close. */
  assert_int_equal(srv.close_cb_calls, 0);
  bt_run_until(&t, &srv.server_closed, 5000);
  assert_int_equal(srv.close_cb_calls, 1);
  bt_loop_done(&t);
}

/* ---- drain notice for raw connections; reaching worker loops ------------------------------ */

static atomic_int dn_accepted, dn_notified, dn_posted;
static int dn_closed; /* set on the server's loop */
static void dn_read(braid_conn_t *c, int status, const uint8_t *d, size_t n, void *data) {
  (void)c, (void)status, (void)d, (void)n, (void)data;
}
static void dn_drain(braid_conn_t *c, void *data) {
  (void)data;
  atomic_fetch_add(&dn_notified, 1);
  braid_conn_close(c); /* nothing in progress: go now, not at the deadline */
}
static void dn_conn(braid_server_t *s, braid_conn_t *c, void *data) {
  (void)s;
  assert_ptr_equal(data, &dn_accepted); /* the server's user data */
  braid_conn_callbacks_t cbs = {.on_read = dn_read, .on_drain = dn_drain};
  assert_int_equal(braid_conn_set_callbacks(c, &cbs), 0);
  assert_int_equal(braid_conn_read_start(c), 0);
  atomic_fetch_add(&dn_accepted, 1);
}
static void dn_post(void *arg) {
  (void)arg;
  atomic_fetch_add(&dn_posted, 1);
}
static void dn_closed_cb(braid_server_t *s, int status, void *arg) {
  (void)s, (void)arg;
  assert_int_equal(status, 0);
  dn_closed = 1;
}

/* Issue 10: braid_server_drain() told rpc channels (GOAWAY) but a raw connection got no
 * notice, and a program could not reach the server's worker loops (a line protocol had to
 * keep its own registry and post to each loop). Now every connection gets on_drain, and
 * braid_server_post() reaches each accepting loop. */
static void test_drain_notifies_raw_connections(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  atomic_store(&dn_accepted, 0);
  atomic_store(&dn_notified, 0);
  atomic_store(&dn_posted, 0);
  dn_closed = 0;
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.workers = 2;
  braid_server_t *srv;
  assert_int_equal(braid_server_new(&srv, t.loop, &o, dn_conn, &dn_accepted), 0);
  assert_ptr_equal(braid_server_get_data(srv), &dn_accepted);
  assert_int_equal(braid_server_post(srv, 1, dn_post, NULL), BRAID_ECLOSED); /* not yet */
  assert_int_equal(braid_server_post(srv, 2, dn_post, NULL), BRAID_EINVAL);
  assert_int_equal(braid_server_listen(srv, "127.0.0.1", 0), 0);
  struct sockaddr_storage ss;
  assert_int_equal(braid_server_address(srv, &ss), 0);
  enum { N = 6 };
  int raw[N];
  for (int i = 0; i < N; i++) {
    raw[i] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(raw[i] >= 0);
    assert_int_equal(connect(raw[i], (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  }
  for (int i = 0; i < 500 && atomic_load(&dn_accepted) < N; i++)
    bt_run_for(&t, 10);
  assert_int_equal(atomic_load(&dn_accepted), N);
  /* Every accepting loop, the caller's and the worker thread's. */
  for (unsigned i = 0; i < braid_server_workers(srv); i++)
    assert_int_equal(braid_server_post(srv, i, dn_post, NULL), 0);
  for (int i = 0; i < 500 && atomic_load(&dn_posted) < 2; i++)
    bt_run_for(&t, 10);
  assert_int_equal(atomic_load(&dn_posted), 2);
  /* A drain with a long deadline ends as soon as the notified connections close. */
  uint64_t start = uv_now(&t.uv);
  assert_int_equal(braid_server_drain(srv, 20000, dn_closed_cb, NULL), 0);
  bt_run_until(&t, &dn_closed, 10000);
  assert_true(uv_now(&t.uv) - start < 5000);
  assert_int_equal(atomic_load(&dn_notified), N);
  for (int i = 0; i < N; i++)
    close(raw[i]);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_listen_v4_v6),
      cmocka_unit_test(test_round_trip_v4),
      cmocka_unit_test(test_round_trip_v6),
      cmocka_unit_test(test_connection_cap),
      cmocka_unit_test(test_connection_cap_workers),
      cmocka_unit_test_teardown(test_emfile, restore_nofile),
      cmocka_unit_test(test_workers),
      cmocka_unit_test(test_workers_default_and_close_busy),
      cmocka_unit_test(test_drain_in_flight),
      cmocka_unit_test(test_drain_deadline),
      cmocka_unit_test(test_close_in_connection_cb),
      cmocka_unit_test(test_close_before_listen),
      cmocka_unit_test(test_drain_notifies_raw_connections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
