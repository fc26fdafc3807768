/* TCP servers: listeners, accept, connection cap, fd exhaustion, drain, worker threads.
 *
 * Each accepting loop is a worker: worker 0 runs on the caller's loop, workers 1..N-1 on
 * threads of their own, each with its own braid loop and its own SO_REUSEPORT listener on
 * the same port. A listener is a socket braid makes itself (so SO_REUSEPORT can be set before
 * bind, which libuv 1.44's uv_tcp_bind cannot do), watched with a uv_poll_t: braid calls
 * accept4() itself and uv_tcp_open()s the new socket into the connection's handle. That gives
 * full control over pausing: at the connection cap or after EMFILE the poll watcher stops,
 * the kernel keeps new clients in the backlog (none is accepted and dropped), and the watcher
 * restarts when a connection closes or the back-off timer fires.
 *
 * Threads talk to each other only through braid_loop_post() and atomics: the open
 * connection count (for the cap) and the per-worker counters (for stats). */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

#include <inttypes.h>

/* Accepts per poll callback: enough to empty a burst, few enough that one busy listener
 * does not starve the loop's connections. */
#define ACCEPT_BATCH 64

typedef struct worker_s {
  braid_server_t *server;
  unsigned index;
  braid_loop_t *loop;
  bool is_thread;
  uv_thread_t thread;
  uv_sem_t ready; /* thread workers: set-up finished (start_rc says how) */
  uv_sem_t go;    /* thread workers: start accepting, or give up (abort_start) */
  int start_rc;
  bool abort_start;

  uv_os_sock_t fd; /* listener, -1 when none */
  uv_poll_t poll;
  bool poll_open;
  bool accepting; /* the poll watcher is started */
  bool in_backoff;
  uv_timer_t timer; /* accept back-off, then the drain deadline */
  uv_async_t keep;  /* never sent: keeps the worker's loop running while it serves */
  bool timer_open, keep_open;
  unsigned handles; /* of poll, timer, keep: how many are not closed yet */

  braid__conn_owner_t owner;
  braid__node_t conns;
  size_t nconns;
  braid_conn_opts_t conn_opts;
  braid_ratelimit_t *send_rl, *recv_rl;

  bool draining;
  bool finished;
  bool deadline_hit;
  bool loop_alive; /* under server->mu: posting to loop is still allowed */

  atomic_int paused_at_cap;
  atomic_uint_fast64_t accepted, accept_errors, cap_pauses;
} worker_t;

struct braid_server_s {
  braid_loop_t *loop;
  braid_server_opts_t opts;
  braid_connection_cb on_connection;
  void *arg;
  unsigned nworkers;
  worker_t *workers;
  uv_mutex_t mu;
  atomic_uint_fast64_t active;

  bool listening;
  struct sockaddr_storage addr;
  int port;

  bool closing;
  uint64_t deadline_ms;
  braid_server_close_cb close_cb;
  void *close_arg;
  unsigned threads_running; /* thread workers not yet joined */
  bool main_finished;
};

static void worker_drain(worker_t *w);
static void check_server_done(braid_server_t *s);

void braid_server_opts_init(braid_server_opts_t *o) {
  memset(o, 0, sizeof(*o));
  braid_sockopts_init(&o->sockopts);
  braid_conn_opts_init(&o->conn);
  /* Safe by default: no peer holds a connection forever (server.h explains each). */
  o->conn.idle_timeout_ms = 75000;
  o->conn.write_timeout_ms = 60000;
  o->conn.message_timeout_ms = 60000;
  o->workers = 1;
  o->accept_backoff_ms = 100;
}

int braid_server_opts_validate(const braid_server_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  int rc = braid__opts_nest(err, "sockopts", braid_sockopts_validate(&o->sockopts, err));
  if (rc == 0)
    rc = braid__opts_nest(err, "conn", braid_conn_opts_validate(&o->conn, err));
  if (rc)
    return rc;
  if (o->max_connections > (1u << 24))
    return braid__opts_fail(err, "max_connections", "%u exceeds 2^24", o->max_connections);
  if (o->workers > 256)
    return braid__opts_fail(err, "workers", "%u exceeds 256", o->workers);
  if (o->send_rate_bytes_per_s > (UINT64_C(1) << 40))
    return braid__opts_fail(err, "send_rate_bytes_per_s", "%" PRIu64 " exceeds 2^40",
                            o->send_rate_bytes_per_s);
  if (o->recv_rate_bytes_per_s > (UINT64_C(1) << 40))
    return braid__opts_fail(err, "recv_rate_bytes_per_s", "%" PRIu64 " exceeds 2^40",
                            o->recv_rate_bytes_per_s);
  if (o->accept_backoff_ms < 1 || o->accept_backoff_ms > 60000)
    return braid__opts_fail(err, "accept_backoff_ms", "%" PRIu64 " is outside 1..60000",
                            o->accept_backoff_ms);
  if (o->tls && !braid__tls_ctx_is_server(o->tls))
    return braid__opts_fail(err, "tls", "a client context (role BRAID_TLS_CLIENT): a server "
                                        "needs a BRAID_TLS_SERVER one");
  /* A group bucket belongs to one loop; worker threads run loops of their own. */
  if (o->workers != 1 && (o->conn.send_group || o->conn.recv_group))
    return braid__opts_fail(err, o->conn.send_group ? "conn.send_group" : "conn.recv_group",
                            "a group bucket belongs to one loop: only with workers = 1 "
                            "(use send_rate_bytes_per_s / recv_rate_bytes_per_s)");
  return 0;
}

/* ---- pausing and resuming ----------------------------------------------------------- */

static void stop_accepting(worker_t *w) {
  if (w->accepting) {
    uv_poll_stop(&w->poll);
    w->accepting = false;
  }
}

static void on_poll(uv_poll_t *h, int status, int events);

static void resume_accepting(worker_t *w) {
  if (w->draining || w->in_backoff || !w->poll_open || w->accepting)
    return;
  if (uv_poll_start(&w->poll, UV_READABLE, on_poll) == 0)
    w->accepting = true;
}

static void on_resume_post(void *arg) {
  resume_accepting(arg);
}

/* A connection closed somewhere and the count fell below the cap: every worker that paused
 * at the cap resumes, on its own thread. */
static void wake_paused(braid_server_t *s, worker_t *self) {
  for (unsigned i = 0; i < s->nworkers; i++) {
    worker_t *w = &s->workers[i];
    if (!atomic_exchange(&w->paused_at_cap, 0))
      continue;
    if (w == self) {
      resume_accepting(w);
      continue;
    }
    uv_mutex_lock(&s->mu);
    if (w->loop_alive)
      braid_loop_post(w->loop, on_resume_post, w);
    uv_mutex_unlock(&s->mu);
  }
}

/* Takes a slot under the cap for one more connection, or pauses accepting. A compare-and-swap
 * rather than add-then-undo, so the count (which stats report) never exceeds the cap even
 * for a moment. */
static bool reserve_slot(worker_t *w) {
  braid_server_t *s = w->server;
  uint64_t cap = s->opts.max_connections;
  uint64_t n = atomic_load(&s->active);
  while (cap == 0 || n < cap) {
    if (atomic_compare_exchange_weak(&s->active, &n, n + 1))
      return true;
  }
  stop_accepting(w);
  atomic_fetch_add_explicit(&w->cap_pauses, 1, memory_order_relaxed);
  atomic_store(&w->paused_at_cap, 1);
  /* A connection may have closed between the count and the flag, and its closer saw no
   * flag to clear: look again, so the wake-up is never lost. */
  if (atomic_load(&s->active) < cap && atomic_exchange(&w->paused_at_cap, 0))
    resume_accepting(w);
  return false;
}

static void release_slot(worker_t *w) {
  braid_server_t *s = w->server;
  uint64_t n = atomic_fetch_sub(&s->active, 1) - 1;
  if (s->opts.max_connections && n < s->opts.max_connections)
    wake_paused(s, w);
}

static void on_backoff(uv_timer_t *t) {
  worker_t *w = t->data;
  w->in_backoff = false;
  resume_accepting(w);
}

static void start_backoff(worker_t *w, int err) {
  braid_server_t *s = w->server;
  braid__log(w->loop, BRAID_LOG_WARN, "server: accept failed (%s); pausing %llu ms",
             uv_strerror(err), (unsigned long long)s->opts.accept_backoff_ms);
  stop_accepting(w);
  w->in_backoff = true;
  uv_timer_start(&w->timer, on_backoff, s->opts.accept_backoff_ms, 0);
}

/* ---- accepting ----------------------------------------------------------------------- */

static void on_conn_closed(braid__conn_owner_t *owner, braid_conn_t *conn) {
  worker_t *w = BRAID__CONTAINER_OF(owner, worker_t, owner);
  braid__node_t *n = braid__conn_node(conn);
  if (braid__node_linked(n))
    braid__list_remove(n);
  w->nconns--;
  release_slot(w);
  if (w->draining && w->nconns == 0)
    worker_drain(w);
}

/* A TLS connection's handshake ended: done, it goes to the user; failed, it is closing by
 * itself (its owner, the worker, hears of the close as of any other). */
static void on_tls_ready(braid_conn_t *conn, int status, void *arg) {
  worker_t *w = arg;
  braid_server_t *s = w->server;
  if (status == 0)
    s->on_connection(s, conn, s->arg);
}

/* Makes a connection of an accepted socket and hands it to the user (over TLS, once its
 * handshake is done). Returns 0 or the error (the socket is closed then, and the slot
 * released). */
static int hand_over(worker_t *w, int fd) {
  braid_server_t *s = w->server;
  braid_conn_t *conn;
  int rc = braid__conn_create(w->loop, &w->conn_opts, &conn);
  if (rc) {
    close(fd);
    return rc;
  }
  rc = uv_tcp_open(braid_conn_uv(conn), fd);
  if (rc) {
    close(fd);
    braid__conn_discard(conn);
    return rc;
  }
  rc = braid__conn_established(conn, &s->opts.sockopts);
  if (rc == 0 && s->opts.tls)
    rc = braid__conn_tls_start(conn, s->opts.tls, NULL, on_tls_ready, w);
  if (rc) {
    braid__conn_discard(conn); /* closes fd with the handle */
    return rc;
  }
  braid__conn_set_owner(conn, &w->owner);
  braid__list_push_back(&w->conns, braid__conn_node(conn));
  w->nconns++;
  atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
  if (!s->opts.tls)
    s->on_connection(s, conn, s->arg);
  return 0;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  worker_t *w = h->data;
  (void)events;
  if (status < 0) {
    atomic_fetch_add_explicit(&w->accept_errors, 1, memory_order_relaxed);
    start_backoff(w, status);
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
    if (!reserve_slot(w))
      return;
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = -errno;
      release_slot(w);
      if (err == UV_EAGAIN || err == -EWOULDBLOCK)
        return;
      atomic_fetch_add_explicit(&w->accept_errors, 1, memory_order_relaxed);
      /* The client gave up before we got to it, or a signal: the next one may be fine. */
      if (err == UV_ECONNABORTED || err == UV_EINTR)
        continue;
      /* EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unexpected: the listener stays
       * readable, so trying again at once would spin the loop. Pause instead. */
      start_backoff(w, err);
      return;
    }
    int rc = hand_over(w, fd);
    if (rc) {
      release_slot(w);
      atomic_fetch_add_explicit(&w->accept_errors, 1, memory_order_relaxed);
      braid__log(w->loop, BRAID_LOG_WARN, "server: dropped an accepted connection (%s)",
                 braid_strerror(rc));
    }
  }
}

/* ---- worker set-up and shutdown ------------------------------------------------------ */

static void free_buckets(worker_t *w) {
  braid_ratelimit_t *rls[2] = {w->send_rl, w->recv_rl};
  for (int i = 0; i < 2; i++)
    braid_ratelimit_free(rls[i]);
  w->send_rl = w->recv_rl = NULL;
}

static void on_worker_handle_closed(uv_handle_t *h) {
  worker_t *w = h->data;
  if (--w->handles == 0 && !w->is_thread) {
    braid_server_t *s = w->server;
    /* Worker 0's handles close last, after every connection: its buckets are unused now. */
    free_buckets(w);
    int status = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
      if (s->workers[i].deadline_hit)
        status = BRAID_ETIMEDOUT;
    braid_server_close_cb cb = s->close_cb;
    void *arg = s->close_arg;
    braid__loop_unref(s->loop);
    if (cb)
      cb(s, status, arg);
    braid_tls_ctx_free(s->opts.tls);
    uv_mutex_destroy(&s->mu);
    braid__free(s->workers);
    braid__free(s);
  }
}

/* Handles every accepting loop has: the back-off/deadline timer and the keep-alive. The
 * keep-alive starts unreferenced and is referenced while listening. */
static int worker_init_handles(worker_t *w) {
  int rc = uv_timer_init(braid_loop_uv(w->loop), &w->timer);
  if (rc)
    return rc;
  w->timer.data = w;
  w->timer_open = true;
  w->handles++;
  /* On failure the caller closes what was made (close_worker_handles). */
  rc = uv_async_init(braid_loop_uv(w->loop), &w->keep, NULL);
  if (rc)
    return rc;
  w->keep.data = w;
  w->keep_open = true;
  w->handles++;
  uv_unref((uv_handle_t *)&w->keep);
  return 0;
}

/* Sets up what a worker needs to accept on its listener w->fd, on its own loop. */
static int worker_init_listener(worker_t *w) {
  braid_server_t *s = w->server;
  int rc;
  uint64_t n = s->nworkers;
  if (s->opts.send_rate_bytes_per_s) {
    uint64_t rate = s->opts.send_rate_bytes_per_s / n;
    if ((rc = braid_ratelimit_new(&w->send_rl, w->loop, rate ? rate : 1, 0)))
      return rc;
    w->conn_opts.send_group = w->send_rl;
  }
  if (s->opts.recv_rate_bytes_per_s) {
    uint64_t rate = s->opts.recv_rate_bytes_per_s / n;
    if ((rc = braid_ratelimit_new(&w->recv_rl, w->loop, rate ? rate : 1, 0)))
      return rc;
    w->conn_opts.recv_group = w->recv_rl;
  }
  if ((rc = uv_poll_init_socket(braid_loop_uv(w->loop), &w->poll, w->fd)))
    return rc;
  w->poll.data = w;
  w->poll_open = true;
  w->handles++;
  uv_ref((uv_handle_t *)&w->keep);
  return 0;
}

/* Stops listening at once: clients that connect from now on are refused, not queued. */
static void close_listener(worker_t *w) {
  if (w->poll_open) {
    stop_accepting(w);
    w->poll_open = false;
    uv_close((uv_handle_t *)&w->poll, on_worker_handle_closed);
  }
  /* uv_close() already took the socket out of epoll; the poll handle never owned it. */
  if (w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
}

static void close_worker_handles(worker_t *w) {
  close_listener(w);
  if (w->timer_open) {
    w->timer_open = false;
    uv_close((uv_handle_t *)&w->timer, on_worker_handle_closed);
  }
  if (w->keep_open) {
    w->keep_open = false;
    uv_close((uv_handle_t *)&w->keep, on_worker_handle_closed);
  }
}

static void on_deadline(uv_timer_t *t) {
  worker_t *w = t->data;
  /* A drain whose deadline passed reports it; braid_server_close() (deadline 0) asked for
   * the connections to close, so that is no failure. */
  if (w->nconns > 0 && w->server->deadline_ms > 0)
    w->deadline_hit = true;
  for (braid__node_t *n = w->conns.next, *next; n != &w->conns; n = next) {
    next = n->next;
    braid_conn_close(braid__conn_from_node(n));
  }
}

/* Runs on the worker's thread: the first call stops accepting and arms the deadline; every
 * call after a connection closed checks whether the worker is done. */
static void worker_drain(worker_t *w) {
  braid_server_t *s = w->server;
  if (!w->draining) {
    w->draining = true;
    stop_accepting(w);
    w->in_backoff = false;
    uv_timer_stop(&w->timer);
    close_listener(w);
    /* Protocols that can say goodbye (rpc channels: GOAWAY) do so now, so their peers stop
     * sending and the connections close as soon as what was taken is answered. A hook may
     * start closing its connection; none leaves the list before its close callback. */
    for (braid__node_t *n = w->conns.next, *next; n != &w->conns; n = next) {
      next = n->next;
      braid__conn_notify_drain(braid__conn_from_node(n));
    }
    if (w->nconns > 0) {
      if (s->deadline_ms == 0)
        on_deadline(&w->timer);
      else
        uv_timer_start(&w->timer, on_deadline, s->deadline_ms, 0);
    }
  }
  if (w->finished || w->nconns > 0)
    return;
  w->finished = true;
  if (w->is_thread) {
    /* Closing the timer and the keep-alive lets the thread's uv_run() return. */
    close_worker_handles(w);
  } else {
    s->main_finished = true;
    check_server_done(s);
  }
}

static void on_drain_post(void *arg) {
  worker_drain(arg);
}

static void on_worker_exited(void *arg) {
  worker_t *w = arg;
  braid_server_t *s = w->server;
  uv_thread_join(&w->thread);
  s->threads_running--;
  check_server_done(s);
}

static void check_server_done(braid_server_t *s) {
  if (!s->main_finished || s->threads_running > 0)
    return;
  /* Frees the server once worker 0's handles have closed (on_worker_handle_closed). */
  close_worker_handles(&s->workers[0]);
}

static void worker_teardown_thread(worker_t *w) {
  /* Everything on the loop is closed: the buckets are unused, the loop can go. */
  free_buckets(w);
  uv_mutex_lock(&w->server->mu);
  w->loop_alive = false;
  uv_mutex_unlock(&w->server->mu);
  int rc = braid_loop_close(w->loop);
  if (rc)
    fprintf(stderr, "braid: server worker %u: braid_loop_close: %s\n", w->index,
            braid_strerror(rc));
}

static void worker_thread(void *arg) {
  worker_t *w = arg;
  braid_server_t *s = w->server;
  int rc = braid_loop_new(&w->loop, NULL);
  if (rc) {
    w->start_rc = rc;
    uv_sem_post(&w->ready);
    return;
  }
  braid_loop_set_log(w->loop, s->loop->log_fn, s->loop->log_min, s->loop->log_arg);
  rc = worker_init_handles(w);
  if (rc == 0)
    rc = worker_init_listener(w);
  w->start_rc = rc;
  if (rc == 0) {
    uv_mutex_lock(&s->mu);
    w->loop_alive = true;
    uv_mutex_unlock(&s->mu);
  }
  uv_sem_post(&w->ready);
  if (rc == 0) {
    uv_sem_wait(&w->go);
    if (!w->abort_start) {
      resume_accepting(w);
      uv_run(braid_loop_uv(w->loop), UV_RUN_DEFAULT);
      worker_teardown_thread(w);
      /* The server (and its loop) waits for this post before it frees anything. */
      braid_loop_post(s->loop, on_worker_exited, w);
      return;
    }
  }
  /* Set-up failed or the server gave up starting: close what exists and leave. */
  if (w->handles > 0)
    close_worker_handles(w);
  uv_run(braid_loop_uv(w->loop), UV_RUN_DEFAULT);
  worker_teardown_thread(w);
}

/* ---- public API ---------------------------------------------------------------------- */

static void free_unborn_server(braid_server_t *s) {
  uv_mutex_destroy(&s->mu);
  braid__free(s->workers);
  braid__free(s);
}

static void free_unborn(uv_handle_t *h) {
  free_unborn_server(h->data);
}

int braid_server_new(braid_server_t **out, braid_loop_t *loop, const braid_server_opts_t *o,
                     braid_connection_cb on_connection, void *arg) {
  if (!out || !loop || !on_connection)
    return BRAID_EINVAL;
  braid_server_opts_t opts;
  if (o)
    opts = *o;
  else
    braid_server_opts_init(&opts);
  braid_opts_error_t err;
  if (braid_server_opts_validate(&opts, &err)) {
    braid__opts_log(loop, "braid_server_new", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  unsigned n = opts.workers;
  if (n == 0) {
    n = uv_available_parallelism();
    if (n > 256)
      n = 256;
  }
  braid_server_t *s = braid__calloc(1, sizeof(*s));
  if (!s)
    return BRAID_ENOMEM;
  s->workers = braid__calloc(n, sizeof(*s->workers));
  if (!s->workers || uv_mutex_init(&s->mu)) {
    braid__free(s->workers);
    braid__free(s);
    return BRAID_ENOMEM;
  }
  s->loop = loop;
  s->opts = opts;
  s->nworkers = n;
  s->on_connection = on_connection;
  s->arg = arg;
  s->port = -1;
  atomic_init(&s->active, 0);
  for (unsigned i = 0; i < n; i++) {
    worker_t *w = &s->workers[i];
    w->server = s;
    w->index = i;
    w->is_thread = i > 0;
    w->fd = -1;
    w->owner.on_conn_closed = on_conn_closed;
    w->conn_opts = opts.conn;
    braid__list_init(&w->conns);
    atomic_init(&w->paused_at_cap, 0);
    atomic_init(&w->accepted, 0);
    atomic_init(&w->accept_errors, 0);
    atomic_init(&w->cap_pauses, 0);
  }
  worker_t *w0 = &s->workers[0];
  w0->loop = loop;
  w0->loop_alive = true;
  int rc = worker_init_handles(w0);
  if (rc) {
    /* Only the timer can exist: free the server from its close callback. */
    if (w0->timer_open) {
      w0->timer.data = s;
      uv_close((uv_handle_t *)&w0->timer, free_unborn);
    } else {
      free_unborn_server(s);
    }
    return rc;
  }
  braid__loop_ref(loop);
  if (s->opts.tls)
    braid__tls_ctx_ref(s->opts.tls);
  *out = s;
  return 0;
}

static int parse_host(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return BRAID_EINVAL;
}

static socklen_t addr_len(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Makes one listening socket: options (SO_REUSEPORT included) before bind, then listen. */
static int make_listener(const struct sockaddr_storage *addr, const braid_sockopts_t *so,
                         uv_os_sock_t *out) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rc = braid_sockopts_apply(fd, so, 1);
  if (rc == 0 && bind(fd, (const struct sockaddr *)addr, addr_len(addr)) != 0)
    rc = -errno;
  if (rc == 0 && listen(fd, so->backlog) != 0)
    rc = -errno;
  if (rc) {
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

/* Starts the thread workers; on failure stops the ones already started and joins them. */
static int start_threads(braid_server_t *s) {
  unsigned started = 1;
  int rc = 0;
  for (unsigned i = 1; i < s->nworkers; i++) {
    worker_t *w = &s->workers[i];
    if ((rc = uv_sem_init(&w->ready, 0)))
      break;
    if ((rc = uv_sem_init(&w->go, 0))) {
      uv_sem_destroy(&w->ready);
      break;
    }
    if ((rc = uv_thread_create(&w->thread, worker_thread, w))) {
      uv_sem_destroy(&w->ready);
      uv_sem_destroy(&w->go);
      break;
    }
    started++;
    uv_sem_wait(&w->ready);
    if ((rc = w->start_rc))
      break;
  }
  for (unsigned i = 1; i < started; i++) {
    worker_t *w = &s->workers[i];
    if (rc) {
      w->abort_start = true;
      if (w->start_rc == 0)
        uv_sem_post(&w->go);
      uv_thread_join(&w->thread);
    } else {
      uv_sem_post(&w->go);
    }
  }
  for (unsigned i = 1; i < started; i++) {
    uv_sem_destroy(&s->workers[i].ready);
    if (rc)
      uv_sem_destroy(&s->workers[i].go);
  }
  if (rc == 0)
    s->threads_running = s->nworkers - 1;
  return rc;
}

/* Undoes a braid_server_listen() that failed part-way: nothing listens afterwards. */
static void undo_listen(braid_server_t *s) {
  worker_t *w0 = &s->workers[0];
  for (unsigned i = 1; i < s->nworkers; i++) {
    if (s->workers[i].fd >= 0)
      close(s->workers[i].fd);
    s->workers[i].fd = -1;
  }
  if (w0->poll_open)
    uv_unref((uv_handle_t *)&w0->keep);
  close_listener(w0);
  free_buckets(w0);
  w0->conn_opts = s->opts.conn;
  s->port = -1;
}

int braid_server_listen(braid_server_t *server, const char *host, int port) {
  if (!server || !host || port < 0 || port > 65535)
    return BRAID_EINVAL;
  if (server->closing)
    return BRAID_ECLOSED;
  if (server->listening)
    return BRAID_EINVAL;
  braid_server_t *s = server;
  struct sockaddr_storage addr;
  if (parse_host(host, port, &addr))
    return BRAID_EINVAL;
  braid_sockopts_t so = s->opts.sockopts;
  if (s->nworkers > 1)
    so.reuseport = BRAID_OPT_ON;
  int rc = 0;
  for (unsigned i = 0; i < s->nworkers; i++) {
    if ((rc = make_listener(&addr, &so, &s->workers[i].fd)))
      break;
    if (i == 0) {
      /* The first listener picks the port; the others join it with SO_REUSEPORT. */
      socklen_t len = sizeof(s->addr);
      if (getsockname(s->workers[0].fd, (struct sockaddr *)&s->addr, &len) != 0) {
        rc = -errno;
        break;
      }
      uint16_t p = s->addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&s->addr)->sin6_port
                                                 : ((struct sockaddr_in *)&s->addr)->sin_port;
      s->port = ntohs(p);
      if (addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&addr)->sin6_port = p;
      else
        ((struct sockaddr_in *)&addr)->sin_port = p;
    }
  }
  if (rc == 0)
    rc = worker_init_listener(&s->workers[0]);
  if (rc == 0)
    rc = start_threads(s);
  if (rc) {
    undo_listen(s);
    return rc;
  }
  s->listening = true;
  resume_accepting(&s->workers[0]);
  return 0;
}

int braid_server_address(const braid_server_t *server, struct sockaddr_storage *out) {
  if (!server || !out || !server->listening)
    return BRAID_EINVAL;
  *out = server->addr;
  return 0;
}

int braid_server_port(const braid_server_t *server) {
  if (!server || !server->listening)
    return -1;
  return server->port;
}

int braid_server_drain(braid_server_t *server, uint64_t deadline_ms, braid_server_close_cb cb,
                       void *arg) {
  if (!server)
    return BRAID_EINVAL;
  braid_server_t *s = server;
  if (s->closing)
    return BRAID_ECLOSED;
  s->closing = true;
  s->deadline_ms = deadline_ms;
  s->close_cb = cb;
  s->close_arg = arg;
  for (unsigned i = 1; i < s->nworkers && s->threads_running > 0; i++) {
    worker_t *w = &s->workers[i];
    /* Thread workers stay alive until they drain, so the post cannot meet a closed loop. */
    int rc = braid_loop_post(w->loop, on_drain_post, w);
    if (rc)
      braid__log(s->loop, BRAID_LOG_ERROR, "server: cannot reach worker %u (%s)", i,
                 braid_strerror(rc));
  }
  worker_drain(&s->workers[0]);
  return 0;
}

int braid_server_close(braid_server_t *server, braid_server_close_cb cb, void *arg) {
  return braid_server_drain(server, 0, cb, arg);
}

void braid_server_stats(const braid_server_t *server, braid_server_stats_t *out) {
  memset(out, 0, sizeof(*out));
  for (unsigned i = 0; i < server->nworkers; i++) {
    worker_t *w = &server->workers[i];
    out->accepted += atomic_load_explicit(&w->accepted, memory_order_relaxed);
    out->accept_errors += atomic_load_explicit(&w->accept_errors, memory_order_relaxed);
    out->cap_pauses += atomic_load_explicit(&w->cap_pauses, memory_order_relaxed);
  }
  out->active = atomic_load(&server->active);
}

unsigned braid_server_workers(const braid_server_t *server) {
  return server->nworkers;
}

void braid_server_set_data(braid_server_t *s, void *data) {
  s->arg = data;
}

void *braid_server_get_data(const braid_server_t *s) {
  return s->arg;
}

int braid_server_post(braid_server_t *s, unsigned index, braid_post_fn fn, void *arg) {
  if (!s || !fn || index >= s->nworkers)
    return BRAID_EINVAL;
  worker_t *w = &s->workers[index];
  if (!w->is_thread) /* the server's own loop: it outlives the server */
    return braid_loop_post(w->loop, fn, arg);
  /* A worker's loop exists from listen until its thread closes it after the drain; the
   * server's lock keeps it from closing while a post goes in (as resuming does). */
  uv_mutex_lock(&s->mu);
  int rc = w->loop_alive ? braid_loop_post(w->loop, fn, arg) : BRAID_ECLOSED;
  uv_mutex_unlock(&s->mu);
  return rc;
}
