/* TCP clients: resolve on the loop (dns.c), try each address with a timeout, retry rounds
 * with exponential backoff and jitter, hand over a tuned connection.
 *
 * One request is a small state machine. Every stage has exactly one thing pending (the
 * resolver, one connect, or the timer), and each stage's completion moves it on, so
 * cancelling only has to stop that one thing and let its completion finish the request. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

#include <inttypes.h>

typedef enum {
  ST_START,
  ST_RESOLVING,
  ST_CONNECTING,
  ST_BACKOFF,
  ST_HANDSHAKE, /* TLS: connected, the handshake runs (r->conn) */
  ST_DONE
} conn_state_t;

struct braid_connect_s {
  braid_loop_t *loop;
  braid_client_opts_t opts;
  braid_connect_cb cb;
  void *arg;
  char *host;
  int port;
  braid_resolver_t *resolver;
  bool literal; /* host is an IP literal: addrs[0] holds it, no resolution */

  conn_state_t state;
  bool cancelled;
  braid_resolve_t *lookup; /* while ST_RESOLVING */
  uv_timer_t timer; /* the 0 ms start, the connect timeout, the backoff */
  uv_connect_t creq;
  braid_conn_t *conn;   /* the attempt in flight */
  bool attempt_aborted; /* its conn was discarded (timeout/cancel); on_connected follows */

  struct sockaddr_storage *addrs;
  size_t naddrs, next;
  unsigned round;
  int last_err;
  uint64_t rng;
};

static void try_next(braid_connect_t *r);
static void start_round(braid_connect_t *r);

void braid_client_opts_init(braid_client_opts_t *o) {
  memset(o, 0, sizeof(*o));
  braid_sockopts_init(&o->sockopts);
  braid_conn_opts_init(&o->conn);
  o->connect_timeout_ms = 10000;
  o->retries = 0;
  o->backoff_initial_ms = 100;
  o->backoff_max_ms = 10000;
  o->backoff_jitter = 0.5;
  o->family = AF_UNSPEC;
}

int braid_client_opts_validate(const braid_client_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  int rc = braid__opts_nest(err, "sockopts", braid_sockopts_validate(&o->sockopts, err));
  if (rc == 0)
    rc = braid__opts_nest(err, "conn", braid_conn_opts_validate(&o->conn, err));
  if (rc)
    return rc;
  if (o->connect_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "connect_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->connect_timeout_ms);
  if (o->retries > BRAID__RETRIES_MAX)
    return braid__opts_fail(err, "retries", "%u exceeds %u", o->retries,
                            (unsigned)BRAID__RETRIES_MAX);
  if (o->backoff_initial_ms < 1 || o->backoff_initial_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "backoff_initial_ms", "%" PRIu64 " is outside 1..2^31",
                            o->backoff_initial_ms);
  if (o->backoff_max_ms < o->backoff_initial_ms)
    return braid__opts_fail(err, "backoff_max_ms",
                            "%" PRIu64 " is below backoff_initial_ms (%" PRIu64 ")",
                            o->backoff_max_ms, o->backoff_initial_ms);
  /* Written so that NaN fails too. */
  if (!(o->backoff_jitter >= 0.0 && o->backoff_jitter <= 1.0))
    return braid__opts_fail(err, "backoff_jitter", "%g is outside 0.0..1.0", o->backoff_jitter);
  if (o->family != AF_UNSPEC && o->family != AF_INET && o->family != AF_INET6)
    return braid__opts_fail(err, "family", "%d is not AF_UNSPEC, AF_INET or AF_INET6", o->family);
  if (o->tls && braid__tls_ctx_is_server(o->tls))
    return braid__opts_fail(err, "tls", "a server context (role BRAID_TLS_SERVER): a client "
                                        "needs a BRAID_TLS_CLIENT one");
  return 0;
}

int braid__client_opts_check(const braid_client_opts_t *o, braid_opts_error_t *err) {
  return braid_client_opts_validate(o, err);
}

static void on_timer_closed(uv_handle_t *h) {
  braid_connect_t *r = h->data;
  braid_tls_ctx_free(r->opts.tls);
  braid__free(r->addrs);
  braid__free(r->host);
  braid__free(r);
}

static void finish(braid_connect_t *r, braid_conn_t *conn, int status) {
  r->state = ST_DONE;
  uv_timer_stop(&r->timer);
  braid__loop_unref(r->loop);
  r->cb(r, status, conn, r->arg);
  uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

/* Delay before retry round k (1-based): min(max, initial * 2^(k-1)), jittered down by up to
 * jitter * d so that clients that failed together do not retry together. */
static uint64_t backoff_ms(braid_connect_t *r, unsigned k) {
  uint64_t d = r->opts.backoff_initial_ms;
  for (unsigned i = 1; i < k && d < r->opts.backoff_max_ms; i++)
    d *= 2;
  if (d > r->opts.backoff_max_ms)
    d = r->opts.backoff_max_ms;
  double u = (double)(braid__xorshift64(&r->rng) >> 11) * 0x1.0p-53; /* [0, 1) */
  return d - (uint64_t)((double)d * r->opts.backoff_jitter * u);
}

static void on_backoff(uv_timer_t *t) {
  start_round(t->data);
}

static void round_failed(braid_connect_t *r, int err) {
  r->last_err = err;
  if (r->round >= r->opts.retries) {
    finish(r, NULL, err);
    return;
  }
  r->round++;
  r->state = ST_BACKOFF;
  uv_timer_start(&r->timer, on_backoff, backoff_ms(r, r->round), 0);
}

static void on_resolved(braid_resolve_t *req, int status, const struct sockaddr_storage *addrs,
                        size_t naddrs, void *arg) {
  (void)req;
  braid_connect_t *r = arg;
  r->lookup = NULL;
  if (r->cancelled) {
    finish(r, NULL, BRAID_ECANCELED);
    return;
  }
  if (status < 0) {
    round_failed(r, status);
    return;
  }
  braid__free(r->addrs);
  r->naddrs = 0;
  r->addrs = braid__calloc(naddrs, sizeof(*r->addrs));
  if (!r->addrs) {
    round_failed(r, BRAID_ENOMEM);
    return;
  }
  uint16_t port = htons((uint16_t)r->port);
  for (size_t i = 0; i < naddrs; i++) {
    struct sockaddr_storage *ss = &r->addrs[r->naddrs++];
    *ss = addrs[i];
    if (ss->ss_family == AF_INET6)
      ((struct sockaddr_in6 *)ss)->sin6_port = port;
    else
      ((struct sockaddr_in *)ss)->sin_port = port;
  }
  r->next = 0;
  try_next(r);
}

static int resolve(braid_connect_t *r) {
  int rc = braid_resolve(&r->lookup, r->resolver, r->host, r->opts.family, on_resolved, r);
  if (rc == 0)
    r->state = ST_RESOLVING;
  return rc;
}

static void start_round(braid_connect_t *r) {
  if (r->literal) {
    r->next = 0;
    try_next(r);
    return;
  }
  int rc = resolve(r);
  if (rc)
    round_failed(r, rc);
}

static void on_start(uv_timer_t *t) {
  start_round(t->data);
}

/* The TLS handshake ended: a TLS failure is the answer, not a reason to try elsewhere (a
 * certificate refused here would be refused there). */
static void on_tls_ready(braid_conn_t *conn, int status, void *arg) {
  braid_connect_t *r = arg;
  r->conn = NULL;
  finish(r, status == 0 ? conn : NULL, status);
}

static void on_connected(uv_connect_t *creq, int status) {
  braid_connect_t *r = BRAID__CONTAINER_OF(creq, braid_connect_t, creq);
  braid_conn_t *conn = r->conn;
  r->conn = NULL;
  uv_timer_stop(&r->timer);
  if (r->attempt_aborted) {
    /* The conn was discarded by a timeout or a cancel; this is libuv cancelling the connect
     * as the handle closes. */
    r->attempt_aborted = false;
    if (r->cancelled)
      finish(r, NULL, BRAID_ECANCELED);
    else
      try_next(r);
    return;
  }
  if (status == 0) {
    status = braid__conn_established(conn, &r->opts.sockopts);
    if (status == 0 && r->opts.tls) {
      status = braid__conn_tls_start(conn, r->opts.tls, r->host, on_tls_ready, r);
      if (status == 0) {
        r->conn = conn;
        r->state = ST_HANDSHAKE;
        return;
      }
    }
    if (status == 0) {
      finish(r, conn, 0);
      return;
    }
  }
  braid__conn_discard(conn);
  r->last_err = status;
  try_next(r);
}

static void on_connect_timeout(uv_timer_t *t) {
  braid_connect_t *r = t->data;
  r->last_err = BRAID_ETIMEDOUT;
  r->attempt_aborted = true;
  braid__conn_discard(r->conn);
}

static int set_buffers(int fd, const braid_sockopts_t *so) {
  /* Before connect(): the receive buffer decides the window scale sent in the SYN. */
  int v;
  if ((v = so->sndbuf_bytes) > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
    return -errno;
  if ((v = so->rcvbuf_bytes) > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)))
    return -errno;
  return 0;
}

/* Starts connecting to addr. Returns 0 (on_connected will run) or an error (nothing left). */
static int attempt(braid_connect_t *r, const struct sockaddr_storage *addr) {
  braid_conn_t *conn;
  int rc = braid__conn_create(r->loop, &r->opts.conn, &conn);
  if (rc)
    return rc;
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    rc = -errno;
    braid__conn_discard(conn);
    return rc;
  }
  if ((rc = set_buffers(fd, &r->opts.sockopts)) || (rc = uv_tcp_open(braid_conn_uv(conn), fd))) {
    close(fd);
    braid__conn_discard(conn);
    return rc;
  }
  rc = uv_tcp_connect(&r->creq, braid_conn_uv(conn), (const struct sockaddr *)addr, on_connected);
  if (rc) {
    braid__conn_discard(conn); /* the handle owns fd now */
    return rc;
  }
  r->conn = conn;
  r->state = ST_CONNECTING;
  if (r->opts.connect_timeout_ms)
    uv_timer_start(&r->timer, on_connect_timeout, r->opts.connect_timeout_ms, 0);
  return 0;
}

static void try_next(braid_connect_t *r) {
  while (r->next < r->naddrs) {
    int rc = attempt(r, &r->addrs[r->next++]);
    if (rc == 0)
      return;
    r->last_err = rc;
  }
  round_failed(r, r->last_err);
}

/* An IP literal needs no resolver: parse it (with an IPv6 scope, "fe80::1%eth0") here. */
static int parse_literal(braid_connect_t *r, int port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (uv_ip4_addr(r->host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(r->host, port, (struct sockaddr_in6 *)&ss) != 0)
    return 0;
  if (r->opts.family != AF_UNSPEC && r->opts.family != ss.ss_family)
    return BRAID_EINVAL;
  r->addrs = braid__malloc(sizeof(*r->addrs));
  if (!r->addrs)
    return BRAID_ENOMEM;
  r->addrs[0] = ss;
  r->naddrs = 1;
  r->literal = true;
  return 0;
}

int braid_connect(braid_connect_t **req, braid_loop_t *loop, const char *host, int port,
                  const braid_client_opts_t *o, braid_connect_cb cb, void *arg) {
  if (!loop || !host || !*host || port < 1 || port > 65535 || !cb)
    return BRAID_EINVAL;
  braid_client_opts_t opts;
  if (o)
    opts = *o;
  else
    braid_client_opts_init(&opts);
  braid_opts_error_t err;
  if (braid_client_opts_validate(&opts, &err)) {
    braid__opts_log(loop, "braid_connect", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_connect_t *r = braid__calloc(1, sizeof(*r));
  if (!r)
    return BRAID_ENOMEM;
  size_t hlen = strlen(host);
  r->host = braid__malloc(hlen + 1);
  if (!r->host) {
    braid__free(r);
    return BRAID_ENOMEM;
  }
  memcpy(r->host, host, hlen + 1);
  r->port = port;
  r->loop = loop;
  r->opts = opts;
  if (r->opts.tls)
    braid__tls_ctx_ref(r->opts.tls); /* dropped when the request is freed */
  r->cb = cb;
  r->arg = arg;
  r->last_err = BRAID_ETIMEDOUT;
  if (braid__random_bytes(&r->rng, sizeof(r->rng)) != 0 || r->rng == 0)
    r->rng = uv_hrtime() | 1;
  int rc = parse_literal(r, port);
  if (rc == 0 && !r->literal) {
    r->resolver = opts.resolver;
    if (!r->resolver)
      rc = braid__resolver_for_loop(loop, &r->resolver);
    else if (braid__resolver_loop(r->resolver) != loop) {
      braid__log(loop, BRAID_LOG_ERROR, "braid_connect: option resolver: runs on another loop");
      rc = BRAID_EINVAL;
    }
  }
  if (rc == 0)
    rc = uv_timer_init(braid_loop_uv(loop), &r->timer);
  if (rc == 0) {
    r->timer.data = r;
    /* A literal starts from a 0 ms timer so that cb never runs inside this call, even if
     * the first attempt fails at once. */
    rc = r->literal ? uv_timer_start(&r->timer, on_start, 0, 0) : resolve(r);
    if (rc) {
      uv_close((uv_handle_t *)&r->timer, on_timer_closed);
      return rc;
    }
  }
  if (rc) {
    braid_tls_ctx_free(r->opts.tls);
    braid__free(r->addrs);
    braid__free(r->host);
    braid__free(r);
    return rc;
  }
  braid__loop_ref(loop);
  if (req)
    *req = r;
  return 0;
}

int braid_connect_cancel(braid_connect_t *req) {
  if (!req)
    return BRAID_EINVAL;
  braid_connect_t *r = req;
  if (r->state == ST_DONE)
    return BRAID_ECLOSED;
  if (r->cancelled)
    return 0;
  r->cancelled = true;
  switch (r->state) {
  case ST_START:
  case ST_BACKOFF:
    finish(r, NULL, BRAID_ECANCELED);
    break;
  case ST_RESOLVING:
    /* on_resolved runs from inside this call with BRAID_ECANCELED and finishes. */
    braid_resolve_cancel(r->lookup);
    break;
  case ST_HANDSHAKE: {
    braid_conn_t *conn = r->conn;
    r->conn = NULL;
    braid__conn_discard(conn); /* no word back from the handshake now */
    finish(r, NULL, BRAID_ECANCELED);
    break;
  }
  case ST_CONNECTING:
    if (!r->attempt_aborted) {
      uv_timer_stop(&r->timer);
      r->attempt_aborted = true;
      braid__conn_discard(r->conn);
    }
    break;
  case ST_DONE:
    break;
  }
  return 0;
}
