/* The net layer against hostile or careless peers (issue 9): a reset must not kill the
 * process with SIGPIPE (each such case runs in a forked child, so a signal that kills it is
 * seen by the parent as a failed test instead of taking the whole test program down); a
 * peer that trickles bytes or says nothing must not hold a connection forever. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "../support.h"
#include "internal.h"

/* ---- running a case in a child process -------------------------------------------------- */

/* In the child, cmocka's asserts would unwind into a copy of the test runner: check by hand
 * and leave with a distinct exit code instead. */
#define CHILD_CHECK(cond)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "child: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
      _exit(3);                                                                                    \
    }                                                                                              \
  } while (0)

/* Runs fn(arg) in a child process, which exits 0 when fn returns; asserts it did, within
 * timeout_s (the child's alarm), and that no signal (SIGPIPE above all) ended it. */
static void run_in_child(void (*fn)(void *), void *arg, unsigned timeout_s) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(timeout_s);
    fn(arg);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status))
    fail_msg("child killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- a loop and a server, for a child ------------------------------------------------- */

typedef struct child_loop_s {
  uv_loop_t uv;
  braid_loop_t *loop;
} child_loop_t;

static void on_guard(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Runs the loop until *flag (polled after each iteration) or timeout_ms. Returns *flag. */
static int child_run_until(child_loop_t *l, int (*cond)(void *), void *arg, uint64_t timeout_ms) {
  int expired = 0;
  uv_timer_t guard;
  uv_timer_init(&l->uv, &guard);
  guard.data = &expired;
  uv_timer_start(&guard, on_guard, timeout_ms, 0);
  while (!expired && !cond(arg))
    uv_run(&l->uv, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&l->uv, UV_RUN_NOWAIT);
  return cond(arg);
}

static int always(void *arg) {
  (void)arg;
  return 0;
}

static void child_run_for(child_loop_t *l, uint64_t ms) {
  child_run_until(l, always, NULL, ms);
}

/* What the child's server does with each read. */
typedef struct hostile_srv_s {
  braid_server_t *server;
  size_t answer_bytes; /* written back per 16 bytes read (0: echo what was read) */
  size_t extra_bytes;  /* and this much more per read, as one large write */
  int closed;          /* server close callback ran */
  int conns_closed;
  int write_errors; /* writes refused (the connection failed under them) */
  uint64_t want;    /* connections the clients made so far */
} hostile_srv_t;

static char big_answer[1 << 20];

static void hs_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  hostile_srv_t *s = arg;
  if (status < 0) {
    braid_conn_close(c);
    return;
  }
  int rc = 0;
  if (s->answer_bytes == 0) {
    rc = braid_conn_write(c, data, len, NULL, NULL);
  } else {
    for (size_t i = 0; rc == 0 && i + 16 <= len; i += 16)
      rc = braid_conn_write(c, big_answer, s->answer_bytes, NULL, NULL);
  }
  if (rc == 0 && s->extra_bytes)
    rc = braid_conn_write(c, big_answer, s->extra_bytes, NULL, NULL);
  if (rc) {
    s->write_errors++;
    braid_conn_close(c);
  }
}

static void hs_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  ((hostile_srv_t *)arg)->conns_closed++;
}

static void hs_conn(braid_server_t *server, braid_conn_t *c, void *arg) {
  (void)server;
  braid_conn_callbacks_t cbs = {.on_read = hs_read, .on_close = hs_close};
  braid_conn_set_callbacks(c, &cbs);
  braid_conn_set_data(c, arg);
  braid_conn_read_start(c);
}

static void hs_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  ((hostile_srv_t *)arg)->closed = 1;
}

/* Every connection the server accepted so far has closed, and it accepted s->want. */
static int hs_done(void *arg) {
  hostile_srv_t *s = arg;
  braid_server_stats_t st;
  braid_server_stats(s->server, &st);
  return st.accepted >= s->want && st.active == 0;
}

static int hs_is_closed(void *arg) {
  return ((hostile_srv_t *)arg)->closed;
}

static void hs_start(child_loop_t *l, hostile_srv_t *s) {
  CHILD_CHECK(uv_loop_init(&l->uv) == 0);
  CHILD_CHECK(braid_loop_new(&l->loop, &l->uv) == 0);
  CHILD_CHECK(braid_server_new(&s->server, l->loop, NULL, hs_conn, s) == 0);
  CHILD_CHECK(braid_server_listen(s->server, "127.0.0.1", 0) == 0);
}

static void hs_stop(child_loop_t *l, hostile_srv_t *s) {
  CHILD_CHECK(braid_server_close(s->server, hs_closed, s) == 0);
  CHILD_CHECK(child_run_until(l, hs_is_closed, s, 10000));
  CHILD_CHECK(braid_loop_close(l->loop) == 0);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  CHILD_CHECK(uv_loop_close(&l->uv) == 0);
}

/* A blocking client socket connected to port (the kernel completes the handshake before the
 * server accepts), with a small receive buffer when rcvbuf > 0. */
static int raw_connect(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHILD_CHECK(fd >= 0);
  if (rcvbuf > 0)
    CHILD_CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) == 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  CHILD_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  return fd;
}

/* Closes fd with a RST instead of a FIN (SO_LINGER 0), as a crashing or hostile peer does. */
static void raw_reset(int fd) {
  struct linger lg = {1, 0};
  CHILD_CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
  close(fd);
}

static void send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    CHILD_CHECK(n > 0);
    p += n;
    len -= (size_t)n;
  }
}

/* ---- SIGPIPE ----------------------------------------------------------------------------- */

typedef struct sigpipe_case_s {
  int keep_default; /* the program puts SIGPIPE back to SIG_DFL after braid_loop_new() */
} sigpipe_case_t;

/* Sends 4096 bytes then resets, at several points of the server's handling (before it
 * accepted, after it read, while it writes): the server echoes them and adds a large write,
 * and must survive every time. */
static void child_echo_resets(void *arg) {
  sigpipe_case_t *cs = arg;
  child_loop_t l;
  hostile_srv_t s = {.extra_bytes = 256 << 10};
  signal(SIGPIPE, SIG_DFL); /* as a program starts */
  hs_start(&l, &s);
  if (cs->keep_default)
    signal(SIGPIPE, SIG_DFL);
  int port = braid_server_port(s.server);
  char msg[4096];
  memset(msg, 'x', sizeof(msg));
  for (int trial = 0; trial < 40; trial++) {
    int fd = raw_connect(port, 0);
    send_all(fd, msg, sizeof(msg));
    /* Let the server get as far as accepting, reading or writing before the reset. */
    for (int i = 0; i < trial % 5; i++)
      uv_run(&l.uv, UV_RUN_NOWAIT);
    if (trial % 10 >= 5)
      child_run_for(&l, 2);
    raw_reset(fd);
    s.want++;
    CHILD_CHECK(child_run_until(&l, hs_done, &s, 10000));
  }
  CHILD_CHECK(s.conns_closed == 40);
  hs_stop(&l, &s);
}

/* kv-style: ten pipelined requests each answered with 64 KiB, a client that never reads
 * (so the answers back up into libuv's write path), then a reset. */
static void child_pipelined_resets(void *arg) {
  sigpipe_case_t *cs = arg;
  child_loop_t l;
  hostile_srv_t s = {.answer_bytes = 64 << 10};
  signal(SIGPIPE, SIG_DFL);
  hs_start(&l, &s);
  if (cs->keep_default)
    signal(SIGPIPE, SIG_DFL);
  int port = braid_server_port(s.server);
  char reqs[10 * 16];
  memset(reqs, 'g', sizeof(reqs));
  for (int trial = 0; trial < 20; trial++) {
    int fd = raw_connect(port, 4096);
    send_all(fd, reqs, sizeof(reqs));
    /* Reset before the server read the requests, or while their answers back up. */
    if (trial % 4)
      child_run_for(&l, (uint64_t)(trial % 4) * 5);
    raw_reset(fd);
    s.want++;
    CHILD_CHECK(child_run_until(&l, hs_done, &s, 10000));
  }
  CHILD_CHECK(s.conns_closed == 20);
  hs_stop(&l, &s);
}

static void test_sigpipe_echo_reset(void **state) {
  (void)state;
  sigpipe_case_t cs = {0};
  run_in_child(child_echo_resets, &cs, 60);
}

static void test_sigpipe_echo_reset_sig_dfl(void **state) {
  (void)state;
  sigpipe_case_t cs = {.keep_default = 1};
  run_in_child(child_echo_resets, &cs, 60);
}

static void test_sigpipe_pipelined_reset(void **state) {
  (void)state;
  sigpipe_case_t cs = {0};
  run_in_child(child_pipelined_resets, &cs, 60);
}

static void test_sigpipe_pipelined_reset_sig_dfl(void **state) {
  (void)state;
  sigpipe_case_t cs = {.keep_default = 1};
  run_in_child(child_pipelined_resets, &cs, 60);
}

/* The one process-wide change: SIG_DFL becomes SIG_IGN, anything a program chose stays. */
static void on_test_sigpipe(int sig) {
  (void)sig;
}

static void child_disposition(void *arg) {
  (void)arg;
  struct sigaction sa;
  signal(SIGPIPE, SIG_DFL);
  braid__sigpipe_ignore_if_default();
  CHILD_CHECK(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
  signal(SIGPIPE, on_test_sigpipe);
  braid__sigpipe_ignore_if_default();
  CHILD_CHECK(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == on_test_sigpipe);
  /* braid_loop_new() does it once per process: a program that restores the default after
   * its first loop keeps the default. */
  signal(SIGPIPE, SIG_DFL);
  child_loop_t l;
  CHILD_CHECK(uv_loop_init(&l.uv) == 0);
  CHILD_CHECK(braid_loop_new(&l.loop, &l.uv) == 0);
  CHILD_CHECK(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
  signal(SIGPIPE, SIG_DFL);
  braid_loop_t *second;
  CHILD_CHECK(braid_loop_new(&second, &l.uv) == 0);
  CHILD_CHECK(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL);
  CHILD_CHECK(braid_loop_close(second) == 0);
  CHILD_CHECK(braid_loop_close(l.loop) == 0);
  uv_run(&l.uv, UV_RUN_DEFAULT);
  CHILD_CHECK(uv_loop_close(&l.uv) == 0);
}

static void test_sigpipe_disposition(void **state) {
  (void)state;
  run_in_child(child_disposition, NULL, 30);
}

/* braid's own writes never raise SIGPIPE, even with SIGPIPE at SIG_DFL and the reset already
 * reported elsewhere (here: SO_ERROR read by the program), when the kernel answers the next
 * write with EPIPE: the large write's direct path and the flush of a small one. */
typedef struct held_s {
  braid_conn_t *conns[4];
  int n;
  int closed;
  int close_status[4];
} held_t;

static void held_close(braid_conn_t *c, int status, void *arg) {
  held_t *h = arg;
  for (int i = 0; i < h->n; i++)
    if (h->conns[i] == c)
      h->close_status[i] = status;
  h->closed++;
}

static void held_conn(braid_server_t *server, braid_conn_t *c, void *arg) {
  (void)server;
  held_t *h = arg;
  braid_conn_callbacks_t cbs = {.on_close = held_close};
  braid_conn_set_callbacks(c, &cbs);
  braid_conn_set_data(c, h);
  h->conns[h->n++] = c; /* not reading: only writes meet the reset */
}

static int held_two(void *arg) {
  return ((held_t *)arg)->n == 2;
}

static int held_two_closed(void *arg) {
  return ((held_t *)arg)->closed == 2;
}

static int server_closed_flag;
static void on_srv_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  (void)arg;
  server_closed_flag = 1;
}
static int srv_closed(void *arg) {
  (void)arg;
  return server_closed_flag;
}

static void child_consumed_error(void *arg) {
  (void)arg;
  child_loop_t l;
  held_t h = {0};
  braid_server_t *server;
  CHILD_CHECK(uv_loop_init(&l.uv) == 0);
  CHILD_CHECK(braid_loop_new(&l.loop, &l.uv) == 0);
  signal(SIGPIPE, SIG_DFL); /* a program that wants the default: braid must not need it */
  CHILD_CHECK(braid_server_new(&server, l.loop, NULL, held_conn, &h) == 0);
  CHILD_CHECK(braid_server_listen(server, "127.0.0.1", 0) == 0);
  int fds[2];
  for (int i = 0; i < 2; i++)
    fds[i] = raw_connect(braid_server_port(server), 0);
  CHILD_CHECK(child_run_until(&l, held_two, &h, 10000));
  for (int i = 0; i < 2; i++) {
    raw_reset(fds[i]);
    uv_os_fd_t fd;
    CHILD_CHECK(uv_fileno((uv_handle_t *)braid_conn_uv(h.conns[i]), &fd) == 0);
    int err = 0;
    socklen_t len = sizeof(err);
    for (int tries = 0; tries < 100 && err == 0; tries++) {
      CHILD_CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
      if (err == 0)
        usleep(1000);
    }
    CHILD_CHECK(err == ECONNRESET);
  }
  /* Large: straight to the kernel from the call, which meets EPIPE. */
  CHILD_CHECK(braid_conn_write(h.conns[0], big_answer, 64 << 10, NULL, NULL) == BRAID_ECLOSED);
  /* Small: copied, then the flush meets EPIPE. */
  CHILD_CHECK(braid_conn_write(h.conns[1], "ping", 4, NULL, NULL) == 0);
  CHILD_CHECK(child_run_until(&l, held_two_closed, &h, 10000));
  CHILD_CHECK(h.close_status[0] == UV_EPIPE);
  CHILD_CHECK(h.close_status[1] == UV_EPIPE);
  CHILD_CHECK(braid_server_close(server, on_srv_closed, NULL) == 0);
  CHILD_CHECK(child_run_until(&l, srv_closed, NULL, 10000));
  CHILD_CHECK(braid_loop_close(l.loop) == 0);
  uv_run(&l.uv, UV_RUN_DEFAULT);
  CHILD_CHECK(uv_loop_close(&l.uv) == 0);
}

static void test_sigpipe_consumed_error(void **state) {
  (void)state;
  run_in_child(child_consumed_error, NULL, 30);
}

static void on_guard_expired(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Runs t's loop until *v >= want, failing the test after timeout_ms. */
static void run_until_count(bt_loop_t *t, const volatile int *v, int want, uint64_t timeout_ms) {
  int expired = 0;
  uv_timer_t guard;
  uv_timer_init(&t->uv, &guard);
  guard.data = &expired;
  uv_timer_start(&guard, on_guard_expired, timeout_ms, 0);
  while (*v < want && !expired)
    uv_run(&t->uv, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&t->uv, UV_RUN_NOWAIT);
  if (*v < want)
    fail_msg("waited %llu ms for %d, got %d", (unsigned long long)timeout_ms, want, *v);
}

/* ---- slowloris ----------------------------------------------------------------------- */

/* A line server: frames lines with a braid framebuf, answers each with "ok\n", and tells
 * its connection whether a line is partly received, as braid's protocol layers do. */
typedef struct line_conn_s {
  braid_framebuf_t fb;
  struct line_srv_s *srv;
  int index;
} line_conn_t;

typedef struct line_srv_s {
  bt_loop_t *t;
  braid_server_t *server;
  int accepted;
  int closed;
  int close_status[8];
  uint64_t close_ms[8];
  int lines[8];
  int server_closed;
} line_srv_t;

static void line_read(braid_conn_t *c, int status, const uint8_t *data, size_t len, void *arg) {
  line_conn_t *lc = arg;
  if (status < 0) {
    braid_conn_close(c);
    return;
  }
  braid_framebuf_msg_t m;
  unsigned completed = 0;
  int rc = braid_framebuf_push(&lc->fb, data, len);
  while (rc == 0 && (rc = braid_framebuf_next(&lc->fb, &m)) == 1) {
    rc = 0;
    completed++;
    lc->srv->lines[lc->index]++;
    braid_conn_write(c, "ok\n", 3, NULL, NULL);
  }
  assert_int_equal(rc, 0);
  braid__conn_message_pending(c, braid_framebuf_pending(&lc->fb) > 0, completed);
}

static void line_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  line_conn_t *lc = arg;
  lc->srv->close_status[lc->index] = status;
  lc->srv->close_ms[lc->index] = uv_now(&lc->srv->t->uv);
  lc->srv->closed++;
  braid_framebuf_free(&lc->fb);
  free(lc);
}

static void line_conn(braid_server_t *server, braid_conn_t *c, void *arg) {
  (void)server;
  line_srv_t *srv = arg;
  line_conn_t *lc = calloc(1, sizeof(*lc));
  assert_non_null(lc);
  braid_framer_t f;
  braid_delimiter_opts_t o;
  braid_delimiter_opts_init(&o);
  o.delimiter = "\n";
  o.delimiter_len = 1;
  assert_int_equal(braid_framer_init_delimiter(&f, &o), 0);
  assert_int_equal(braid_framebuf_init(&lc->fb, &f), 0);
  lc->srv = srv;
  lc->index = srv->accepted++;
  srv->close_status[lc->index] = 1; /* open */
  braid_conn_callbacks_t cbs = {.on_read = line_read, .on_close = line_close};
  braid_conn_set_callbacks(c, &cbs);
  braid_conn_set_data(c, lc);
  assert_int_equal(braid_conn_read_start(c), 0);
}

static void line_srv_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  ((line_srv_t *)arg)->server_closed = 1;
}

/* Clients on raw non-blocking sockets, driven by one timer: each tick, each client sends
 * its next piece. */
typedef struct client_s {
  int fd;
  const char *script; /* bytes to send, one piece per tick, pieces separated by '|' */
  size_t pos;
  size_t rx; /* bytes of answers read */
  int send_failed;
} client_t;

typedef struct clients_s {
  client_t c[4];
  int n;
  uv_timer_t timer;
  int ticks;
} clients_t;

static void client_tick(client_t *cl) {
  char buf[256];
  ssize_t r;
  while ((r = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
    cl->rx += (size_t)r;
  if (!cl->script[cl->pos] || cl->send_failed)
    return;
  size_t end = cl->pos;
  while (cl->script[end] && cl->script[end] != '|')
    end++;
  if (end > cl->pos && send(cl->fd, cl->script + cl->pos, end - cl->pos, MSG_NOSIGNAL) < 0)
    cl->send_failed = 1;
  cl->pos = cl->script[end] ? end + 1 : end;
  if (!cl->script[cl->pos])
    cl->pos = 0; /* the script repeats */
}

static void on_clients_tick(uv_timer_t *t) {
  clients_t *cs = t->data;
  cs->ticks++;
  for (int i = 0; i < cs->n; i++)
    client_tick(&cs->c[i]);
}

static int tcp_connect_nb(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  return fd;
}

/* One client trickles a line one byte per 100 ms tick (a read timeout of 300 ms never
 * fires: every byte restarts it), one sends a whole line per tick, one sends each line in
 * two halves a tick apart, and one pipelines so that every read ends inside a line (the end
 * of one and the start of the next). With a 1 s message timeout only the trickler is
 * closed, after about 1 s; the others, whose lines complete, live on for the whole 3 s. */
static void test_slowloris_message_timeout(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  line_srv_t srv = {.t = &t};
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.conn.read_timeout_ms = 300;
  o.conn.message_timeout_ms = 1000;
  assert_int_equal(braid_server_new(&srv.server, t.loop, &o, line_conn, &srv), 0);
  assert_int_equal(braid_server_listen(srv.server, "127.0.0.1", 0), 0);
  int port = braid_server_port(srv.server);
  clients_t cs = {.n = 4};
  cs.c[0].script = "a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|z";
  cs.c[1].script = "hello\n";
  cs.c[2].script = "hel|lo\n";
  cs.c[3].script = "x|lo\nhel";
  for (int i = 0; i < cs.n; i++) {
    cs.c[i].fd = tcp_connect_nb(port);
    run_until_count(&t, &srv.accepted, i + 1, 5000); /* in order: index i is client i */
  }
  uint64_t start = uv_now(&t.uv);
  uv_timer_init(&t.uv, &cs.timer);
  cs.timer.data = &cs;
  uv_timer_start(&cs.timer, on_clients_tick, 100, 100);
  bt_run_for(&t, 3000);
  uv_close((uv_handle_t *)&cs.timer, NULL);
  /* The trickler: closed by the message timeout, not before it (nor by the read timeout). */
  assert_int_equal(srv.close_status[0], BRAID_ETIMEDOUT);
  assert_true(srv.close_ms[0] - start >= 900);
  assert_int_equal(srv.lines[0], 0);
  /* The others: open, answered every time. */
  assert_int_equal(srv.close_status[1], 1);
  assert_int_equal(srv.close_status[2], 1);
  assert_int_equal(srv.close_status[3], 1);
  assert_true(srv.lines[1] >= 10);
  assert_true(srv.lines[2] >= 5);
  assert_true(srv.lines[3] >= 5);
  assert_int_equal(srv.closed, 1);
  for (int i = 0; i < cs.n; i++)
    close(cs.c[i].fd);
  assert_int_equal(braid_server_close(srv.server, line_srv_closed, &srv), 0);
  bt_run_until(&t, &srv.server_closed, 5000);
  bt_loop_done(&t);
}

/* Servers start with timeouts on, client connections with none. */
static void test_server_timeout_defaults(void **state) {
  (void)state;
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  assert_int_equal(so.conn.idle_timeout_ms, 75000);
  assert_int_equal(so.conn.write_timeout_ms, 60000);
  assert_int_equal(so.conn.message_timeout_ms, 60000);
  assert_int_equal(so.conn.read_timeout_ms, 0);
  braid_conn_opts_t co;
  braid_conn_opts_init(&co);
  assert_int_equal(co.idle_timeout_ms, 0);
  assert_int_equal(co.write_timeout_ms, 0);
  assert_int_equal(co.message_timeout_ms, 0);
  assert_int_equal(co.read_timeout_ms, 0);
  braid_client_opts_t cl;
  braid_client_opts_init(&cl);
  assert_int_equal(cl.conn.idle_timeout_ms, 0);
  assert_int_equal(cl.conn.message_timeout_ms, 0);
  co.message_timeout_ms = (UINT64_C(1) << 40) + 1;
  assert_int_equal(braid_conn_opts_validate(&co, NULL), BRAID_EINVAL);
}

/* With the defaults, a peer that connects and says nothing is closed by the idle timeout;
 * here the same server with it shortened, since the test cannot wait 75 s. */
static void test_silent_peer_closed(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  line_srv_t srv = {.t = &t};
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.conn.idle_timeout_ms = 300;
  assert_int_equal(braid_server_new(&srv.server, t.loop, &o, line_conn, &srv), 0);
  assert_int_equal(braid_server_listen(srv.server, "127.0.0.1", 0), 0);
  int fd = tcp_connect_nb(braid_server_port(srv.server));
  run_until_count(&t, &srv.closed, 1, 10000);
  assert_int_equal(srv.close_status[0], BRAID_ETIMEDOUT);
  close(fd);
  assert_int_equal(braid_server_close(srv.server, line_srv_closed, &srv), 0);
  bt_run_until(&t, &srv.server_closed, 5000);
  bt_loop_done(&t);
}

/* A pooled client whose idle connection the server closes (its idle timeout, here
 * shortened from the default 75 s) just opens another: that is the normal life of a pooled
 * connection, and no request fails for it. */
typedef struct pool_case_s {
  int answers, errors, closed, server_closed;
} pool_case_t;

static void pc_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                       void *arg) {
  (void)rpc;
  (void)arg;
  assert_int_equal(braid_rpc_respond(req, data, len), 0);
}

static void pc_conn(braid_server_t *server, braid_conn_t *c, void *arg) {
  (void)server;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  static const braid_rpc_callbacks_t cbs = {.on_request = pc_request};
  braid_rpc_t *rpc;
  assert_int_equal(braid_rpc_server(&rpc, c, &o, &cbs, arg), 0);
}

static void pc_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  (void)rpc;
  pool_case_t *pc = arg;
  if (status == 0 && r->len == 4 && memcmp(r->data, "ping", 4) == 0)
    pc->answers++;
  else
    pc->errors++;
}

static void pc_pool_closed(braid_pool_t *pool, int status, void *arg) {
  (void)status;
  (void)pool;
  ((pool_case_t *)arg)->closed = 1;
}

static void pc_server_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  ((pool_case_t *)arg)->server_closed = 1;
}

static void test_pool_after_server_idle_timeout(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  pool_case_t pc = {0};
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.conn.idle_timeout_ms = 300;
  braid_server_t *server;
  assert_int_equal(braid_server_new(&server, t.loop, &so, pc_conn, &pc), 0);
  assert_int_equal(braid_server_listen(server, "127.0.0.1", 0), 0);
  braid_pool_opts_t po;
  braid_pool_opts_init(&po);
  po.idle_timeout_ms = 0; /* the pool would keep it: the server is the one to close it */
  braid_pool_t *pool;
  assert_int_equal(braid_pool_new(&pool, t.loop, &po), 0);
  assert_int_equal(braid_pool_add_endpoint(pool, "127.0.0.1", braid_server_port(server)), 0);
  for (int round = 1; round <= 3; round++) {
    assert_int_equal(braid_pool_call(pool, "ping", 4, 0, 5000, pc_answer, &pc), 0);
    run_until_count(&t, &pc.answers, round, 5000);
    bt_run_for(&t, 700); /* the server's idle timeout closes the pooled connection */
    braid_server_stats_t st;
    braid_server_stats(server, &st);
    assert_int_equal(st.active, 0);
  }
  assert_int_equal(pc.errors, 0);
  braid_pool_stats_t ps;
  braid_pool_stats(pool, &ps);
  assert_int_equal(ps.creates, 3);
  assert_int_equal(braid_pool_close(pool, pc_pool_closed, &pc), 0);
  bt_run_until(&t, &pc.closed, 5000);
  assert_int_equal(braid_server_close(server, pc_server_closed, &pc), 0);
  bt_run_until(&t, &pc.server_closed, 5000);
  bt_loop_done(&t);
}

/* ---- memory after a burst ----------------------------------------------------------- */

typedef struct burst_srv_s {
  braid_server_t *server;
  int accepted, closed, server_closed;
} burst_srv_t;

static void burst_close(braid_conn_t *c, int status, void *arg) {
  (void)c;
  (void)status;
  ((burst_srv_t *)arg)->closed++;
}

/* Each connection is sent 200 KiB it never reads: most of it waits in pooled chunks. */
static void burst_conn(braid_server_t *server, braid_conn_t *c, void *arg) {
  (void)server;
  burst_srv_t *b = arg;
  b->accepted++;
  braid_conn_callbacks_t cbs = {.on_close = burst_close};
  braid_conn_set_callbacks(c, &cbs);
  braid_conn_set_data(c, b);
  assert_int_equal(braid_conn_write(c, big_answer, 200 << 10, NULL, NULL), 0);
}

static void burst_srv_closed(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)status;
  ((burst_srv_t *)arg)->server_closed = 1;
}

static int nonreading_client(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  int small = 4096;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  return fd;
}

/* 40 clients that never read make the server queue 8 MB in write chunks; they reset; the
 * loop's pool keeps the chunks for the next burst, but, once no burst comes, gives them
 * back within a couple of decay periods (100 ms here, 5 s by default). */
static void test_pool_decays_after_burst(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  braid__loop_set_decay_ms(t.loop, 100);
  burst_srv_t b = {0};
  braid_server_opts_t o;
  braid_server_opts_init(&o);
  o.sockopts.sndbuf_bytes = 4096;
  assert_int_equal(braid_server_new(&b.server, t.loop, &o, burst_conn, &b), 0);
  assert_int_equal(braid_server_listen(b.server, "127.0.0.1", 0), 0);
  enum { N = 40 };
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = nonreading_client(braid_server_port(b.server));
  run_until_count(&t, &b.accepted, N, 10000);
  unsigned out = t.loop->chunks_out;
  assert_true(out >= N * 8); /* most of each 200 KiB waits in 16 KiB chunks */
  for (int i = 0; i < N; i++) {
    struct linger lg = {1, 0};
    assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fds[i]);
  }
  run_until_count(&t, &b.closed, N, 10000);
  /* The burst's chunks are kept for a while (the next burst reuses them)... */
  assert_int_equal(t.loop->chunks_out, 0);
  assert_true(t.loop->chunk_pool_len + 4 >= out || t.loop->trimmed_bytes > 0);
  /* ...and let go when no burst follows. */
  bt_run_for(&t, 1000);
  assert_true(t.loop->chunk_pool_len <= BRAID__CHUNK_IDLE_FLOOR);
  assert_true(t.loop->segs_pool_len <= BRAID__SEGS_IDLE_FLOOR);
  assert_true(t.loop->trimmed_bytes >=
              (uint64_t)(out - BRAID__CHUNK_IDLE_FLOOR) * BRAID__CHUNK_SIZE);
  assert_int_equal(braid_server_close(b.server, burst_srv_closed, &b), 0);
  bt_run_until(&t, &b.server_closed, 5000);
  bt_loop_done(&t);
}

/* A steady load keeps what it uses: a decay tick frees only what the last period's peak did
 * not need (ticks run by hand here, so no timing is involved). */
static void test_pool_keeps_recent_peak(void **state) {
  (void)state;
  bt_loop_t t;
  bt_loop_init(&t);
  void *chunks[300];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 300; i++)
      chunks[i] = braid__loop_chunk_get(t.loop);
    for (int i = 0; i < 300; i++)
      braid__loop_chunk_put(t.loop, chunks[i]);
    braid__loop_trim(t.loop); /* this period peaked at 300 in use: keep them */
    assert_int_equal(t.loop->chunk_pool_len, 300);
  }
  for (int i = 0; i < 100; i++) /* a quieter period: 100 in use at most */
    chunks[i] = braid__loop_chunk_get(t.loop);
  for (int i = 0; i < 100; i++)
    braid__loop_chunk_put(t.loop, chunks[i]);
  braid__loop_trim(t.loop);
  assert_int_equal(t.loop->chunk_pool_len, 100);
  braid__loop_trim(t.loop); /* an idle period */
  assert_int_equal(t.loop->chunk_pool_len, BRAID__CHUNK_IDLE_FLOOR);
  bt_loop_done(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sigpipe_echo_reset),
      cmocka_unit_test(test_sigpipe_echo_reset_sig_dfl),
      cmocka_unit_test(test_sigpipe_pipelined_reset),
      cmocka_unit_test(test_sigpipe_pipelined_reset_sig_dfl),
      cmocka_unit_test(test_sigpipe_disposition),
      cmocka_unit_test(test_sigpipe_consumed_error),
      cmocka_unit_test(test_slowloris_message_timeout),
      cmocka_unit_test(test_server_timeout_defaults),
      cmocka_unit_test(test_silent_peer_closed),
      cmocka_unit_test(test_pool_after_server_idle_timeout),
      cmocka_unit_test(test_pool_decays_after_burst),
      cmocka_unit_test(test_pool_keeps_recent_peak),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
