/* Connection pools: rpc client channels to a list of endpoints.
 *
 * Each endpoint keeps its connections in one list, the most recently used first, so a call
 * takes the first open connection with room, and the spare ones drift to the back, go idle
 * and time out. A call that finds no room waits in one FIFO for the whole pool; calls are
 * not bound to an endpoint while they wait, so the first connection with room serves the
 * oldest waiter. Since every waiter gets the same acquire timeout, the FIFO is also in
 * deadline order and one timer serves it. A second timer does the slow work: idle timeouts,
 * lifetimes, pre-warming and the end of ejections; it is armed for the earliest of them.
 *
 * Connections open on demand: while the waiters outnumber what the connects in progress will
 * carry (connecting * max_inflight), one more starts, on the endpoint the balancing policy
 * names. When a call picks an endpoint that has no connection at all, one is opened there
 * while the call goes to another endpoint with room, so balancing sees every endpoint after
 * the first round.
 *
 * Each call has a context from a free list that keeps a copy of its bytes (inline when small)
 * so it can be sent again: after a goaway (the server did not take it), or for an idempotent
 * call that a reused connection lost. A retry must go out on a connection established after
 * the failure (serial numbers tell), because the failure usually means the peer's other
 * connections are dead too (a restart) and would just fail it again.
 *
 * Callbacks may re-enter the pool (call, close): pump() guards itself against recursion, and
 * nothing is freed synchronously except call contexts after their callback returned; pool
 * memory goes only once every connection and timer has closed. */
#include <math.h>

#include "internal.h"

#include <inttypes.h>

#define CALL_INLINE 192        /* request bytes kept inside the call context */
#define CALL_FREE_MAX 4096     /* call contexts kept for reuse */
#define LEASE_QUARANTINE 64    /* released lease records held back before any is reused */

/* PC_GONE: the channel closed while leased; the lease keeps the struct until released. */
typedef enum { PC_CONNECTING, PC_OPEN, PC_CLOSING, PC_GONE } pc_state_t;
typedef enum { WHY_NONE, WHY_IDLE, WHY_LIFETIME, WHY_ERROR, WHY_POOL } close_why_t;

typedef struct endpoint_s endpoint_t;

typedef struct pconn_s {
  braid__node_t node; /* in ep->conns, most recently used first */
  braid_pool_t *pool;
  endpoint_t *ep;
  braid_connect_t *creq; /* while connecting */
  braid_rpc_t *rpc;      /* once open, until its on_close */
  pc_state_t state;
  bool retiring; /* not handed out any more; closes when its last request completes */
  bool leased;   /* the user has it exclusively (braid_pool_acquire) */
  struct braid_pool_lease_s *lease; /* while leased: the record the user holds */
  close_why_t why;
  unsigned inflight;
  uint64_t uses;
  uint64_t serial; /* order of establishment, from 1 */
  uint64_t last_used_ms;
  uint64_t expires_ms; /* 0: no lifetime */
} pconn_t;

struct endpoint_s {
  char *host;
  braid_tls_ctx_t *tls; /* this endpoint's own TLS context (referenced), or NULL */
  int port;
  braid__node_t conns;
  unsigned n_conns; /* connecting, open and closing */
  unsigned n_connecting, n_open, n_idle;
  uint64_t outstanding;
  unsigned failures;   /* consecutive failed connects */
  unsigned ejections_in_row;
  bool ejected, probing;
  uint64_t ejected_until;
  uint64_t calls, connect_failures, ejections;
};

/* What braid_pool_acquire() hands out. A lease record belongs to the pool, not to the
 * connection, and lives as long as the pool, so releasing a lease a second time (after its
 * channel closed, or after the pool closed the connection) reads valid memory and gets
 * BRAID_EINVAL. Released records wait in a FIFO and are reused only once LEASE_QUARANTINE
 * newer ones were released after them, so a stale handle does not, in practice, name a lease
 * someone else holds now (it could only after 64 other leases were released in between). The
 * records held are at most the peak of leases at once plus LEASE_QUARANTINE. */
struct braid_pool_lease_s {
  braid__node_t node; /* in pool->lease_free while released */
  braid_pool_t *pool;
  pconn_t *pc; /* the leased connection; NULL while released */
};

typedef struct pcall_s {
  braid__node_t node; /* in the wait queue */
  struct pcall_s *next_free;
  braid_pool_t *pool;
  pconn_t *pc; /* while on a connection */
  braid_rpc_response_cb cb;
  braid_pool_acquire_cb acquire_cb; /* set: this waiter wants a lease, not a request sent */
  void *arg;
  uint64_t timeout_ms;
  uint64_t deadline_ms; /* while waiting */
  uint64_t wait_start_ns;
  uint64_t fresh_after; /* only connections with a larger serial may carry it */
  unsigned flags;
  bool retried, reused;
  size_t len;
  uint8_t *data; /* inline_data or a heap copy */
  uint8_t inline_data[CALL_INLINE];
} pcall_t;

struct braid_pool_s {
  braid_loop_t *loop;
  braid_pool_opts_t o;
  endpoint_t **eps;
  unsigned n_eps, cap_eps;
  unsigned rr, grow_rr;

  braid__node_t waiters;
  unsigned n_waiting;
  pcall_t *free_calls;
  unsigned n_free;

  unsigned n_conns, n_connecting, n_open, n_idle;
  unsigned n_leased;        /* leases not released yet (also of channels that closed) */
  unsigned n_acq_waiting;   /* waiters that want a lease */
  braid__node_t lease_free; /* released lease records, oldest first */
  unsigned n_lease_free;
  braid__flush_t flush;     /* serves lease waiters at the end of the iteration */
  uint64_t inflight;
  uint64_t serial;
  uint64_t rng;

  uv_timer_t wait_timer, maint_timer;
  bool wait_armed, maint_armed;
  uint64_t wait_due, maint_due;
  unsigned timers_open;

  bool pumping, pump_again;
  bool closing, finished;
  braid_pool_close_cb close_cb;
  void *close_arg;
  void *data; /* the user's (braid_pool_set_data) */

  braid_pool_stats_t stats;
};

static void pump(braid_pool_t *p);
static void on_flush(braid__flush_t *f);
static void maint_arm(braid_pool_t *p, uint64_t due);
static void pc_settle(pconn_t *pc);

/* ---- options ------------------------------------------------------------------------- */

void braid_pool_opts_init(braid_pool_opts_t *o) {
  memset(o, 0, sizeof(*o));
  braid_client_opts_init(&o->client);
  braid_rpc_opts_init(&o->rpc);
  o->max_per_endpoint = 8;
  o->max_total = 64;
  o->max_idle = 16;
  o->min_idle = 0;
  o->idle_timeout_ms = 60000;
  o->max_lifetime_ms = 0;
  o->lifetime_jitter = 0.1;
  o->max_waiters = 1024;
  o->acquire_timeout_ms = 5000;
  o->balance = BRAID_POOL_ROUND_ROBIN;
  o->eject_after_failures = 3;
  o->eject_base_ms = 1000;
  o->eject_max_ms = 30000;
  o->wait_for_ready = 0;
}

int braid_pool_opts_validate(const braid_pool_opts_t *o, braid_opts_error_t *err) {
  const uint64_t ms_max = BRAID__MS_MAX;
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  /* The embedded options are checked by their owners, so the pool accepts exactly what
   * braid_connect() and braid_rpc_client() accept. */
  int rc = braid__opts_nest(err, "client", braid__client_opts_check(&o->client, err));
  if (rc)
    return rc;
  rc = braid__opts_nest(err, "rpc", braid__rpc_opts_check(&o->rpc, err));
  if (rc)
    return rc;
  if (o->max_per_endpoint < 1 || o->max_per_endpoint > 65536)
    return braid__opts_fail(err, "max_per_endpoint", "%u is outside 1..65536", o->max_per_endpoint);
  if (o->max_total < 1 || o->max_total > (1u << 20))
    return braid__opts_fail(err, "max_total", "%u is outside 1..2^20", o->max_total);
  if (o->max_idle > (1u << 20))
    return braid__opts_fail(err, "max_idle", "%u exceeds 2^20", o->max_idle);
  if (o->min_idle > o->max_per_endpoint)
    return braid__opts_fail(err, "min_idle", "%u exceeds max_per_endpoint (%u)", o->min_idle,
                            o->max_per_endpoint);
  if (o->idle_timeout_ms > ms_max)
    return braid__opts_fail(err, "idle_timeout_ms", "%" PRIu64 " exceeds 2^31", o->idle_timeout_ms);
  if (o->max_lifetime_ms > ms_max)
    return braid__opts_fail(err, "max_lifetime_ms", "%" PRIu64 " exceeds 2^31", o->max_lifetime_ms);
  if (!(o->lifetime_jitter >= 0.0 && o->lifetime_jitter <= 1.0))
    return braid__opts_fail(err, "lifetime_jitter", "%g is outside 0.0..1.0", o->lifetime_jitter);
  if (o->max_waiters > (1u << 24))
    return braid__opts_fail(err, "max_waiters", "%u exceeds 2^24", o->max_waiters);
  if (o->acquire_timeout_ms < 1 || o->acquire_timeout_ms > ms_max)
    return braid__opts_fail(err, "acquire_timeout_ms", "%" PRIu64 " is outside 1..2^31",
                            o->acquire_timeout_ms);
  if (o->balance != BRAID_POOL_ROUND_ROBIN && o->balance != BRAID_POOL_LEAST_OUTSTANDING)
    return braid__opts_fail(err, "balance", "%d is not a BRAID_POOL_* balance", (int)o->balance);
  if (o->eject_after_failures < 1 || o->eject_after_failures > 1000)
    return braid__opts_fail(err, "eject_after_failures", "%u is outside 1..1000",
                            o->eject_after_failures);
  if (o->eject_base_ms < 1 || o->eject_base_ms > ms_max)
    return braid__opts_fail(err, "eject_base_ms", "%" PRIu64 " is outside 1..2^31",
                            o->eject_base_ms);
  if (o->eject_max_ms < o->eject_base_ms || o->eject_max_ms > ms_max)
    return braid__opts_fail(err, "eject_max_ms",
                            "%" PRIu64 " is outside eject_base_ms (%" PRIu64 ")..2^31",
                            o->eject_max_ms, o->eject_base_ms);
  if (o->wait_for_ready != 0 && o->wait_for_ready != 1)
    return braid__opts_fail(err, "wait_for_ready", "%d is not 0 or 1", o->wait_for_ready);
  return 0;
}

/* ---- small helpers ------------------------------------------------------------------- */

static uint64_t now_ms(const braid_pool_t *p) {
  return braid__now(p->loop);
}

static void list_push_front(braid__node_t *head, braid__node_t *n) {
  n->next = head->next;
  n->prev = head;
  head->next->prev = n;
  head->next = n;
}

static bool is_idle(const pconn_t *pc) {
  return pc->state == PC_OPEN && !pc->retiring && !pc->leased && pc->inflight == 0;
}

/* Brings the idle counters in line after pc changed; was: is_idle(pc) before the change. */
static void idle_account(pconn_t *pc, bool was) {
  bool now = is_idle(pc);
  if (was == now)
    return;
  if (now) {
    pc->ep->n_idle++;
    pc->pool->n_idle++;
  } else {
    pc->ep->n_idle--;
    pc->pool->n_idle--;
  }
}

static bool can_grow(const braid_pool_t *p, const endpoint_t *ep) {
  return ep->n_conns < p->o.max_per_endpoint && p->n_conns < p->o.max_total;
}

/* May new connections go to ep? Not while ejected; a probed endpoint gets one at a time. */
static bool ep_usable_for_connect(const endpoint_t *ep) {
  return !ep->ejected && !(ep->probing && ep->n_connecting > 0);
}

/* Nothing can take a call until a probe brings an endpoint back. (An endpoint being probed
 * is not ejected: calls wait for the probe's answer.) */
static bool all_ejected(const braid_pool_t *p) {
  for (unsigned i = 0; i < p->n_eps; i++)
    if (!p->eps[i]->ejected)
      return false;
  return p->n_eps > 0;
}

static bool fail_fast(const braid_pool_t *p) {
  return !p->o.wait_for_ready && all_ejected(p);
}

/* ---- call contexts ------------------------------------------------------------------- */

static pcall_t *call_get(braid_pool_t *p, const void *data, size_t len) {
  pcall_t *c = p->free_calls;
  if (c) {
    p->free_calls = c->next_free;
    p->n_free--;
  } else {
    c = braid__malloc(sizeof(*c));
    if (!c)
      return NULL;
  }
  memset(c, 0, offsetof(pcall_t, inline_data));
  c->pool = p;
  if (len <= CALL_INLINE) {
    c->data = c->inline_data;
  } else {
    c->data = braid__malloc(len);
    if (!c->data) {
      braid__free(c);
      return NULL;
    }
  }
  if (len)
    memcpy(c->data, data, len);
  c->len = len;
  return c;
}

static void call_put(braid_pool_t *p, pcall_t *c) {
  if (c->data != c->inline_data)
    braid__free(c->data);
  if (p->n_free >= CALL_FREE_MAX || p->closing) {
    braid__free(c);
    return;
  }
  c->next_free = p->free_calls;
  p->free_calls = c;
  p->n_free++;
}

/* Completes a call that never reached a connection (or is given up) with status. */
static void call_fail(braid_pool_t *p, pcall_t *c, braid_rpc_t *rpc, int status) {
  braid_rpc_result_t r = {0, 0, NULL, 0};
  braid_rpc_response_cb cb = c->cb;
  braid_pool_acquire_cb acb = c->acquire_cb;
  void *arg = c->arg;
  call_put(p, c);
  if (acb)
    acb(p, status, NULL, NULL, arg);
  else
    cb(rpc, status, &r, arg);
}

/* ---- lease records -------------------------------------------------------------------- */

/* A record for a new lease: the oldest released one once enough are held back, else a new
 * one. Returns NULL when out of memory. */
static braid_pool_lease_t *lease_get(braid_pool_t *p, pconn_t *pc) {
  braid_pool_lease_t *l;
  if (p->n_lease_free > LEASE_QUARANTINE) {
    l = BRAID__CONTAINER_OF(p->lease_free.next, braid_pool_lease_t, node);
    braid__list_remove(&l->node);
    p->n_lease_free--;
  } else {
    l = braid__malloc(sizeof(*l));
    if (!l)
      return NULL;
    l->pool = p;
  }
  l->pc = pc;
  return l;
}

static void lease_put(braid_pool_t *p, braid_pool_lease_t *l) {
  l->pc = NULL;
  braid__list_push_back(&p->lease_free, &l->node);
  p->n_lease_free++;
}

/* ---- the wait queue ------------------------------------------------------------------ */

static void on_wait_timer(uv_timer_t *t);

static void wait_arm(braid_pool_t *p) {
  if (p->closing)
    return;
  if (braid__list_empty(&p->waiters)) {
    if (p->wait_armed) {
      uv_timer_stop(&p->wait_timer);
      p->wait_armed = false;
    }
    return;
  }
  pcall_t *head = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node);
  if (p->wait_armed && p->wait_due == head->deadline_ms)
    return;
  uint64_t now = now_ms(p);
  uv_timer_start(&p->wait_timer, on_wait_timer,
                 head->deadline_ms > now ? head->deadline_ms - now : 0, 0);
  p->wait_armed = true;
  p->wait_due = head->deadline_ms;
}

static void enqueue(braid_pool_t *p, pcall_t *c) {
  c->deadline_ms = now_ms(p) + p->o.acquire_timeout_ms;
  c->wait_start_ns = uv_hrtime();
  braid__list_push_back(&p->waiters, &c->node);
  p->n_waiting++;
  if (c->acquire_cb)
    p->n_acq_waiting++;
}

static void dequeue(braid_pool_t *p, pcall_t *c) {
  braid__list_remove(&c->node);
  p->n_waiting--;
  if (c->acquire_cb)
    p->n_acq_waiting--;
}

/* Calls the connects in progress will carry once they complete: each first serves a waiting
 * lease, the others take up to max_inflight calls each. */
static uint64_t promised(const braid_pool_t *p) {
  uint64_t conns = p->n_connecting > p->n_acq_waiting ? p->n_connecting - p->n_acq_waiting : 0;
  return conns * p->o.rpc.max_inflight;
}

/* The wait queue's bound (pool.h, max_waiters): waiters that a connection being opened will
 * carry do not count against max_waiters, so a burst on a pool that may still grow waits for
 * the connections it is opening instead of failing. The queue stays bounded by max_waiters +
 * max_total * rpc.max_inflight. */
static bool queue_over(const braid_pool_t *p) {
  return p->n_waiting > p->o.max_waiters + promised(p);
}

static void on_wait_timer(uv_timer_t *t) {
  braid_pool_t *p = t->data;
  p->wait_armed = false;
  uint64_t now = now_ms(p);
  while (!p->closing && !braid__list_empty(&p->waiters)) {
    pcall_t *c = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node);
    if (c->deadline_ms > now)
      break;
    dequeue(p, c);
    p->stats.wait_timeouts++;
    braid_histogram_record(&p->stats.wait_time_us, (uv_hrtime() - c->wait_start_ns) / 1000);
    call_fail(p, c, NULL, BRAID_ETIMEDOUT);
  }
  wait_arm(p);
}

/* The last endpoint was just ejected: without wait_for_ready, everyone waiting fails now
 * rather than at its acquire timeout. A callback may add an endpoint (then the rest wait
 * for it) or close the pool (then close cancels the rest); either ends the loop. */
static void fail_waiters_unavailable(braid_pool_t *p) {
  while (!p->closing && !braid__list_empty(&p->waiters) && fail_fast(p)) {
    pcall_t *c = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node);
    dequeue(p, c);
    p->stats.unavailable++;
    braid_histogram_record(&p->stats.wait_time_us, (uv_hrtime() - c->wait_start_ns) / 1000);
    call_fail(p, c, NULL, BRAID_EUNAVAILABLE);
  }
  wait_arm(p);
}

/* ---- choosing a connection ----------------------------------------------------------- */

/* Stops handing pc out; it closes once its requests have completed. */
static void pc_retire(pconn_t *pc, close_why_t why) {
  if (pc->state != PC_OPEN || pc->retiring)
    return;
  bool was = is_idle(pc);
  pc->retiring = true;
  pc->why = why;
  idle_account(pc, was);
  pc_settle(pc);
}

/* The first connection of ep, most recently used first, that can take a request now. */
static pconn_t *ep_pick(braid_pool_t *p, endpoint_t *ep, uint64_t fresh_after, bool exclusive,
                        uint64_t now) {
  braid__node_t *n = ep->conns.next;
  while (n != &ep->conns) {
    pconn_t *pc = BRAID__CONTAINER_OF(n, pconn_t, node);
    n = n->next; /* retiring pc below may not unlink it, but read next first anyway */
    if (pc->state != PC_OPEN || pc->retiring || pc->leased)
      continue;
    if (pc->expires_ms && now >= pc->expires_ms) {
      pc_retire(pc, WHY_LIFETIME);
      continue;
    }
    /* The cheap health check on borrow: the channel still has an open connection. A peer's
     * close normally reaches the channel first and removes it; this catches the rest. */
    braid_conn_t *conn = braid_rpc_conn(pc->rpc);
    if (!conn || !braid_conn_is_open(conn)) {
      pc_retire(pc, WHY_ERROR);
      continue;
    }
    if (pc->inflight >= (exclusive ? 1 : p->o.rpc.max_inflight) || pc->serial <= fresh_after)
      continue;
    return pc;
  }
  return NULL;
}

/* The endpoint the balancing policy prefers among those not ejected (NULL: none). */
static unsigned preferred_index(braid_pool_t *p, bool *found) {
  *found = false;
  unsigned best = 0;
  for (unsigned i = 0; i < p->n_eps; i++) {
    unsigned k = (p->rr + i) % p->n_eps;
    endpoint_t *ep = p->eps[k];
    if (ep->ejected)
      continue;
    if (p->o.balance == BRAID_POOL_ROUND_ROBIN)
      return *found = true, k;
    if (!*found || ep->outstanding < p->eps[best]->outstanding) {
      best = k;
      *found = true;
    }
  }
  return best;
}

static int start_connect(braid_pool_t *p, endpoint_t *ep);

/* Picks the connection for a call: by the balancing policy among the endpoints that have a
 * connection with room. */
static pconn_t *pick_conn(braid_pool_t *p, uint64_t fresh_after, bool exclusive) {
  if (p->n_eps == 0)
    return NULL;
  uint64_t now = now_ms(p);
  bool found;
  unsigned pref = preferred_index(p, &found);
  if (found) {
    endpoint_t *ep = p->eps[pref];
    /* An endpoint without any connection gets its first one now, so the next calls can be
     * balanced onto it; this call does not wait for it if another endpoint has room. */
    if (ep->n_conns == 0 && ep_usable_for_connect(ep) && can_grow(p, ep))
      start_connect(p, ep);
  }
  pconn_t *best = NULL;
  unsigned best_k = 0;
  for (unsigned i = 0; i < p->n_eps; i++) {
    unsigned k = (p->rr + i) % p->n_eps;
    endpoint_t *ep = p->eps[k];
    if (ep->ejected || ep->n_open == 0)
      continue;
    if (best && p->o.balance == BRAID_POOL_LEAST_OUTSTANDING &&
        ep->outstanding >= best->ep->outstanding)
      continue;
    pconn_t *pc = ep_pick(p, ep, fresh_after, exclusive, now);
    if (!pc)
      continue;
    best = pc;
    best_k = k;
    if (p->o.balance == BRAID_POOL_ROUND_ROBIN)
      break;
  }
  if (best)
    p->rr = (best_k + 1) % p->n_eps;
  return best;
}

static void call_done(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg);

/* Sends c on the best connection. Returns 0 (sent), 1 (no connection has room), or the
 * channel's error. */
static int dispatch(braid_pool_t *p, pcall_t *c) {
  for (;;) {
    pconn_t *pc = pick_conn(p, c->fresh_after, c->acquire_cb != NULL);
    if (!pc)
      return 1;
    if (c->acquire_cb) {
      pc->lease = lease_get(p, pc);
      if (!pc->lease)
        return BRAID_ENOMEM;
      bool was = is_idle(pc);
      c->pc = pc;
      if (pc->uses++ > 0)
        p->stats.reuses++;
      pc->leased = true;
      p->n_leased++;
      braid__rpc_ref(pc->rpc); /* its memory outlives a close until the lease is released */
      braid__list_remove(&pc->node);
      list_push_front(&pc->ep->conns, &pc->node);
      idle_account(pc, was);
      return 0;
    }
    int rc = braid_rpc_call(pc->rpc, c->data, c->len, c->timeout_ms, call_done, c);
    if (rc == BRAID_ECLOSED) {
      /* A goaway or a failure the channel knows and the pool does not yet: skip it. */
      pc_retire(pc, WHY_ERROR);
      continue;
    }
    if (rc)
      return rc;
    bool was = is_idle(pc);
    c->pc = pc;
    c->reused = pc->uses > 0;
    if (c->reused)
      p->stats.reuses++;
    pc->uses++;
    pc->inflight++;
    pc->ep->outstanding++;
    pc->ep->calls++;
    p->inflight++;
    braid__list_remove(&pc->node);
    list_push_front(&pc->ep->conns, &pc->node);
    idle_account(pc, was);
    return 0;
  }
}

/* ---- connections --------------------------------------------------------------------- */

static void on_rpc_close(braid_rpc_t *rpc, int status, void *arg);
static void maybe_finish(braid_pool_t *p);

static void lease_granted(braid_pool_t *p, pcall_t *c) {
  pconn_t *pc = c->pc;
  braid_pool_acquire_cb cb = c->acquire_cb;
  void *arg = c->arg;
  call_put(p, c);
  cb(p, 0, pc->lease, pc->rpc, arg);
}

static void pc_close(pconn_t *pc, close_why_t why) {
  if (pc->state != PC_OPEN)
    return;
  bool was = is_idle(pc);
  if (!pc->retiring || pc->why == WHY_NONE)
    pc->why = why;
  pc->state = PC_CLOSING;
  idle_account(pc, was);
  braid_rpc_close(pc->rpc); /* requests still in flight fail now, with BRAID_ECANCELED */
}

/* Closes the least recently used idle connection; with only_useless, only one that the
 * oldest waiter cannot use (not fresh enough for its retry, or on an ejected endpoint). */
static bool close_lru_idle(braid_pool_t *p, bool only_useless) {
  uint64_t fresh_after = 0;
  if (only_useless) {
    if (braid__list_empty(&p->waiters))
      return false;
    fresh_after = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node)->fresh_after;
  }
  pconn_t *victim = NULL;
  for (unsigned i = 0; i < p->n_eps; i++) {
    endpoint_t *ep = p->eps[i];
    for (braid__node_t *n = ep->conns.prev; n != &ep->conns; n = n->prev) {
      pconn_t *pc = BRAID__CONTAINER_OF(n, pconn_t, node);
      if (!is_idle(pc) || (only_useless && !ep->ejected && pc->serial > fresh_after))
        continue;
      if (!victim || pc->last_used_ms < victim->last_used_ms)
        victim = pc;
      break; /* the list is in use order: the first match from the back is its oldest */
    }
  }
  if (!victim)
    return false;
  pc_close(victim, WHY_IDLE);
  return true;
}

/* After pc's requests changed: close it if it is retiring and done, keep max_idle, and
 * schedule its idle timeout. */
static void pc_settle(pconn_t *pc) {
  braid_pool_t *p = pc->pool;
  if (pc->state != PC_OPEN || pc->leased)
    return;
  if (pc->retiring) {
    if (pc->inflight == 0)
      pc_close(pc, pc->why);
    return;
  }
  if (pc->inflight > 0 || p->closing)
    return;
  if (p->n_idle > p->o.max_idle) {
    close_lru_idle(p, false);
    return;
  }
  if (p->o.idle_timeout_ms)
    maint_arm(p, pc->last_used_ms + p->o.idle_timeout_ms);
}

static uint64_t lifetime_for(braid_pool_t *p) {
  uint64_t life = p->o.max_lifetime_ms;
  if (!life)
    return 0;
  /* Uniform in [life * (1 - jitter), life]: 53 random bits make a double in [0, 1). */
  double u = (double)(braid__xorshift64(&p->rng) >> 11) / 9007199254740992.0;
  double cut = (double)life * p->o.lifetime_jitter * u;
  uint64_t l = life - (uint64_t)cut;
  return l ? l : 1;
}

static void eject(braid_pool_t *p, endpoint_t *ep) {
  ep->ejected = true;
  ep->probing = false;
  ep->failures = 0;
  unsigned shift = ep->ejections_in_row < 31 ? ep->ejections_in_row : 31;
  uint64_t d = p->o.eject_base_ms << shift;
  if (d > p->o.eject_max_ms || (d >> shift) != p->o.eject_base_ms)
    d = p->o.eject_max_ms;
  ep->ejections_in_row++;
  ep->ejections++;
  ep->ejected_until = now_ms(p) + d;
  p->stats.ejections++;
  braid__log(p->loop, BRAID_LOG_WARN, "pool: endpoint %s:%d ejected for %llu ms", ep->host,
             ep->port, (unsigned long long)d);
  maint_arm(p, ep->ejected_until);
}

static void on_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  pconn_t *pc = arg;
  braid_pool_t *p = pc->pool;
  endpoint_t *ep = pc->ep;
  pc->creq = NULL;
  ep->n_connecting--;
  p->n_connecting--;
  if (status == 0 && p->closing) {
    braid_conn_abort(conn);
    status = BRAID_ECANCELED;
  }
  if (status == 0) {
    /* No user callbacks: the pool hears of the close through the owner hook, and leaves the
     * channel's user data and on_close alone (a leased channel is the user's to mark). */
    status = braid_rpc_client(&pc->rpc, conn, &p->o.rpc, NULL, NULL);
    if (status)
      braid_conn_abort(conn);
    else
      braid__rpc_set_owner_close(pc->rpc, on_rpc_close, pc);
  }
  if (status == 0) {
    pc->state = PC_OPEN;
    pc->serial = ++p->serial;
    pc->last_used_ms = now_ms(p);
    uint64_t life = lifetime_for(p);
    pc->expires_ms = life ? pc->last_used_ms + life : 0;
    ep->n_open++;
    p->n_open++;
    ep->failures = 0;
    ep->ejections_in_row = 0;
    ep->probing = false;
    ep->ejected = false; /* a connect that began before an ejection proves it wrong */
    p->stats.creates++;
    idle_account(pc, false);
    if (pc->expires_ms)
      maint_arm(p, pc->expires_ms);
    pump(p);
    pc_settle(pc);
    return;
  }
  braid__list_remove(&pc->node);
  ep->n_conns--;
  p->n_conns--;
  braid__free(pc);
  if (p->closing) {
    maybe_finish(p);
    return;
  }
  if (status != BRAID_ECANCELED) {
    p->stats.connect_failures++;
    ep->connect_failures++;
    ep->failures++;
    if (ep->probing || ep->failures >= p->o.eject_after_failures) {
      eject(p, ep);
      fail_waiters_unavailable(p);
      if (p->closing)
        return;
    }
  }
  pump(p);
}

static int start_connect(braid_pool_t *p, endpoint_t *ep) {
  pconn_t *pc = braid__calloc(1, sizeof(*pc));
  if (!pc)
    return BRAID_ENOMEM;
  pc->pool = p;
  pc->ep = ep;
  pc->state = PC_CONNECTING;
  int rc;
  if (ep->tls) {
    braid_client_opts_t co = p->o.client; /* braid_connect copies it */
    co.tls = ep->tls;
    rc = braid_connect(&pc->creq, p->loop, ep->host, ep->port, &co, on_connected, pc);
  } else {
    rc = braid_connect(&pc->creq, p->loop, ep->host, ep->port, &p->o.client, on_connected, pc);
  }
  if (rc) {
    braid__free(pc);
    return rc;
  }
  braid__list_push_back(&ep->conns, &pc->node);
  ep->n_conns++;
  ep->n_connecting++;
  p->n_conns++;
  p->n_connecting++;
  return 0;
}

static void on_rpc_close(braid_rpc_t *rpc, int status, void *arg) {
  (void)rpc;
  (void)status;
  pconn_t *pc = arg;
  braid_pool_t *p = pc->pool;
  endpoint_t *ep = pc->ep;
  bool was = is_idle(pc);
  close_why_t why = pc->state == PC_OPEN ? WHY_ERROR : pc->why;
  pc->state = PC_CLOSING;
  idle_account(pc, was);
  switch (why) {
  case WHY_IDLE:
    p->stats.closes_idle++;
    break;
  case WHY_LIFETIME:
    p->stats.closes_lifetime++;
    break;
  case WHY_ERROR:
  case WHY_NONE:
    p->stats.closes_error++;
    break;
  case WHY_POOL:
    break;
  }
  braid__list_remove(&pc->node);
  ep->n_conns--;
  ep->n_open--;
  p->n_conns--;
  p->n_open--;
  if (pc->leased)
    pc->state = PC_GONE; /* braid_pool_release() frees it */
  else
    braid__free(pc);
  if (p->closing) {
    maybe_finish(p);
    return;
  }
  pump(p); /* a slot is free: a waiter may get a new connection */
}

/* Opens connections for the waiters that the connects in progress will not carry. */
static void grow(braid_pool_t *p) {
  uint64_t cap = p->o.rpc.max_inflight;
  for (;;) {
    /* A lease takes a connection of its own; calls share one up to the cap. */
    uint64_t calls = p->n_waiting - p->n_acq_waiting;
    uint64_t need = p->n_acq_waiting + (calls + cap - 1) / cap;
    if (p->n_connecting >= need)
      return;
    endpoint_t *pick = NULL;
    for (unsigned i = 0; i < p->n_eps; i++) {
      endpoint_t *ep = p->eps[(p->grow_rr + i) % p->n_eps];
      if (!ep_usable_for_connect(ep) || !can_grow(p, ep))
        continue;
      if (p->o.balance == BRAID_POOL_ROUND_ROBIN) {
        pick = ep;
        p->grow_rr = (p->grow_rr + i + 1) % p->n_eps;
        break;
      }
      if (!pick || ep->outstanding + ep->n_connecting < pick->outstanding + pick->n_connecting)
        pick = ep;
    }
    if (!pick) {
      /* Every endpoint is at its limit or the pool at max_total, and still the head waiter
       * could not use any idle connection (not fresh enough for its retry, or on an ejected
       * endpoint): close the oldest idle one so its slot can serve the waiters. */
      if (close_lru_idle(p, true))
        continue;
      return;
    }
    if (start_connect(p, pick))
      return;
  }
}

/* Serves waiters in FIFO order while connections have room, then opens connections for the
 * rest. Re-entrant calls (from user callbacks) just ask the running pass to go again. */
static void pump(braid_pool_t *p) {
  if (p->pumping) {
    p->pump_again = true;
    return;
  }
  p->pumping = true;
  do {
    p->pump_again = false;
    while (!p->closing && !braid__list_empty(&p->waiters)) {
      pcall_t *c = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node);
      int rc = dispatch(p, c);
      if (rc == 1)
        break;
      dequeue(p, c);
      braid_histogram_record(&p->stats.wait_time_us, (uv_hrtime() - c->wait_start_ns) / 1000);
      if (rc)
        call_fail(p, c, NULL, rc);
      else if (c->acquire_cb)
        lease_granted(p, c);
    }
    if (!p->closing)
      grow(p);
  } while (p->pump_again && !p->closing);
  p->pumping = false;
  wait_arm(p);
}

/* ---- a request completed ------------------------------------------------------------- */

static bool conn_error(int st) {
  return st < 0 && st != BRAID_EREMOTE && st != BRAID_ETIMEDOUT && st != BRAID_ECANCELED &&
         st != BRAID_EGOAWAY;
}

static void call_done(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r, void *arg) {
  pcall_t *c = arg;
  pconn_t *pc = c->pc;
  braid_pool_t *p = c->pool;
  bool was = is_idle(pc);
  pc->inflight--;
  pc->ep->outstanding--;
  p->inflight--;
  pc->last_used_ms = now_ms(p);
  c->pc = NULL;
  idle_account(pc, was);
  int st = status;
  /* Not taken by the server: refused by its goaway, or read after it sent one. */
  bool refused = st == BRAID_EGOAWAY ||
                 (st == BRAID_EREMOTE && r->remote_code == BRAID_WIRE_SHUTTING_DOWN);
  if (refused || conn_error(st))
    pc_retire(pc, WHY_ERROR); /* hand it out no more; it closes when its requests are done */
  /* No second send while every endpoint is ejected (without wait_for_ready): it could only
   * fail with BRAID_EUNAVAILABLE, and this result says more. */
  bool retry = !p->closing && !c->retried && !fail_fast(p) &&
               (refused || ((c->flags & BRAID_POOL_IDEMPOTENT) && c->reused && conn_error(st)));
  if (retry) {
    c->retried = true;
    c->fresh_after = p->serial;
    p->stats.retries++;
    enqueue(p, c);
  } else {
    braid_rpc_response_cb cb = c->cb;
    void *cb_arg = c->arg;
    call_put(p, c);
    cb(rpc, status, r, cb_arg);
  }
  if (p->closing)
    return;
  pc_settle(pc);
  pump(p);
}

/* ---- maintenance --------------------------------------------------------------------- */

static void on_maint_timer(uv_timer_t *t);

static void maint_arm(braid_pool_t *p, uint64_t due) {
  if (p->closing || (p->maint_armed && due >= p->maint_due))
    return;
  uint64_t now = now_ms(p);
  uv_timer_start(&p->maint_timer, on_maint_timer, due > now ? due - now : 0, 0);
  p->maint_armed = true;
  p->maint_due = due;
}

/* Idle timeouts, lifetimes, ends of ejections and pre-warming; re-arms for the next due. */
static void maintain(braid_pool_t *p) {
  uint64_t now = now_ms(p);
  uint64_t next = UINT64_MAX;
  for (unsigned i = 0; i < p->n_eps && !p->closing; i++) {
    endpoint_t *ep = p->eps[i];
    if (ep->ejected) {
      if (now < ep->ejected_until) {
        next = ep->ejected_until < next ? ep->ejected_until : next;
        continue;
      }
      ep->ejected = false;
      ep->probing = true; /* one connect decides */
      if (can_grow(p, ep) && start_connect(p, ep) == 0)
        continue;
    }
    braid__node_t *n = ep->conns.next;
    while (n != &ep->conns) {
      pconn_t *pc = BRAID__CONTAINER_OF(n, pconn_t, node);
      n = n->next; /* closing does not unlink (that waits for on_close) */
      if (pc->state != PC_OPEN || pc->retiring || pc->leased)
        continue;
      if (pc->expires_ms && now >= pc->expires_ms) {
        pc_retire(pc, WHY_LIFETIME);
        continue;
      }
      if (pc->expires_ms && pc->expires_ms < next)
        next = pc->expires_ms;
      if (!is_idle(pc) || !p->o.idle_timeout_ms)
        continue;
      uint64_t due = pc->last_used_ms + p->o.idle_timeout_ms;
      if (now >= due) {
        if (ep->n_idle > p->o.min_idle)
          pc_close(pc, WHY_IDLE);
      } else if (due < next) {
        next = due;
      }
    }
    while (!ep->ejected && !ep->probing && ep->n_idle + ep->n_connecting < p->o.min_idle &&
           p->n_idle + p->n_connecting < p->o.max_idle && can_grow(p, ep)) {
      if (start_connect(p, ep))
        break;
    }
  }
  if (next != UINT64_MAX)
    maint_arm(p, next);
}

static void on_maint_timer(uv_timer_t *t) {
  braid_pool_t *p = t->data;
  p->maint_armed = false;
  maintain(p);
  pump(p); /* an endpoint may be back */
}

/* ---- public API ---------------------------------------------------------------------- */

int braid_pool_new(braid_pool_t **out, braid_loop_t *loop, const braid_pool_opts_t *o) {
  braid_pool_opts_t defaults;
  if (!out || !loop)
    return BRAID_EINVAL;
  if (!o) {
    braid_pool_opts_init(&defaults);
    o = &defaults;
  }
  braid_opts_error_t err;
  if (braid_pool_opts_validate(o, &err)) {
    braid__opts_log(loop, "braid_pool_new", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_pool_t *p = braid__calloc(1, sizeof(*p));
  if (!p)
    return BRAID_ENOMEM;
  p->loop = loop;
  p->o = *o;
  braid__list_init(&p->waiters);
  braid__list_init(&p->lease_free);
  if (braid__random_bytes(&p->rng, sizeof(p->rng)) || p->rng == 0)
    p->rng = 0x9e3779b97f4a7c15ull ^ uv_hrtime();
  if (p->rng == 0)
    p->rng = 1;
  uv_timer_init(braid_loop_uv(loop), &p->wait_timer);
  uv_timer_init(braid_loop_uv(loop), &p->maint_timer);
  p->wait_timer.data = p->maint_timer.data = p;
  p->timers_open = 2;
  p->flush.fn = on_flush;
  if (p->o.client.tls)
    braid__tls_ctx_ref(p->o.client.tls); /* TLS to every endpoint; dropped in pool_free */
  braid__loop_ref(loop);
  *out = p;
  return 0;
}

void braid_pool_set_data(braid_pool_t *p, void *data) {
  p->data = data;
}

void *braid_pool_get_data(const braid_pool_t *p) {
  return p->data;
}

int braid_pool_add_endpoint(braid_pool_t *p, const char *host, int port) {
  return braid_pool_add_endpoint_tls(p, host, port, NULL);
}

int braid_pool_add_endpoint_tls(braid_pool_t *p, const char *host, int port,
                                braid_tls_ctx_t *tls) {
  if (!p || !host || !*host || port < 1 || port > 65535 ||
      (tls && braid__tls_ctx_is_server(tls)))
    return BRAID_EINVAL;
  if (p->closing)
    return BRAID_ECLOSED;
  if (p->n_eps == p->cap_eps) {
    unsigned cap = p->cap_eps ? p->cap_eps * 2 : 4;
    endpoint_t **n = braid__realloc(p->eps, cap * sizeof(*n));
    if (!n)
      return BRAID_ENOMEM;
    p->eps = n;
    p->cap_eps = cap;
  }
  endpoint_t *ep = braid__calloc(1, sizeof(*ep));
  size_t hlen = strlen(host);
  char *h = braid__malloc(hlen + 1);
  if (!ep || !h) {
    braid__free(ep);
    braid__free(h);
    return BRAID_ENOMEM;
  }
  memcpy(h, host, hlen + 1);
  ep->host = h;
  ep->port = port;
  if (tls) {
    braid__tls_ctx_ref(tls);
    ep->tls = tls;
  }
  braid__list_init(&ep->conns);
  p->eps[p->n_eps++] = ep;
  if (p->o.min_idle)
    maint_arm(p, now_ms(p)); /* pre-warm from the loop, not inside this call */
  return 0;
}

int braid_pool_call(braid_pool_t *p, const void *data, size_t len, unsigned flags,
                    uint64_t timeout_ms, braid_rpc_response_cb cb, void *arg) {
  if (!p || !cb || (!data && len) || (flags & ~(unsigned)BRAID_POOL_IDEMPOTENT) ||
      timeout_ms > BRAID__DEADLINE_MAX_MS)
    return BRAID_EINVAL;
  if (p->closing)
    return BRAID_ECLOSED;
  if (p->n_eps == 0)
    return BRAID_EINVAL;
  if (len > UINT32_MAX ||
      (p->o.rpc.mode == BRAID_RPC_BRAID && len > BRAID_FRAME_MAX_PAYLOAD_CEILING))
    return BRAID_ETOOBIG;
  if (fail_fast(p)) {
    p->stats.unavailable++;
    return BRAID_EUNAVAILABLE;
  }
  bool must_wait = !braid__list_empty(&p->waiters); /* FIFO: nobody overtakes a waiter */
  pcall_t *c = call_get(p, data, len);
  if (!c)
    return BRAID_ENOMEM;
  c->cb = cb;
  c->arg = arg;
  c->flags = flags;
  c->timeout_ms = timeout_ms;
  if (!must_wait) {
    int rc = dispatch(p, c);
    if (rc == 0) {
      p->stats.calls++;
      return 0;
    }
    if (rc != 1) {
      call_put(p, c);
      return rc;
    }
  }
  enqueue(p, c);
  grow(p); /* connects never complete inside braid_connect: no callback from this call */
  if (queue_over(p)) {
    /* A connect grow() started for it stays: the pool may grow, and the next call uses it. */
    dequeue(p, c);
    call_put(p, c);
    p->stats.rejected++;
    return BRAID_EPOOLFULL;
  }
  p->stats.calls++;
  p->stats.waits++;
  wait_arm(p);
  return 0;
}

static void on_flush(braid__flush_t *f) {
  pump(BRAID__CONTAINER_OF(f, braid_pool_t, flush));
}

int braid_pool_acquire(braid_pool_t *p, braid_pool_acquire_cb cb, void *arg) {
  if (!p || !cb)
    return BRAID_EINVAL;
  if (p->closing)
    return BRAID_ECLOSED;
  if (p->n_eps == 0)
    return BRAID_EINVAL;
  if (fail_fast(p)) {
    p->stats.unavailable++;
    return BRAID_EUNAVAILABLE;
  }
  if (p->n_waiting >= p->o.max_waiters + promised(p)) {
    p->stats.rejected++;
    return BRAID_EPOOLFULL;
  }
  pcall_t *c = call_get(p, NULL, 0);
  if (!c)
    return BRAID_ENOMEM;
  c->acquire_cb = cb;
  c->arg = arg;
  /* Always through the queue and served at the end of this iteration, so the callback never
   * runs inside this call and FIFO order holds. */
  enqueue(p, c);
  braid__loop_want_flush(p->loop, &p->flush);
  wait_arm(p);
  return 0;
}

int braid_pool_release(braid_pool_lease_t *lease) {
  if (!lease || !lease->pc)
    return BRAID_EINVAL; /* NULL, or released already */
  pconn_t *pc = lease->pc;
  braid_pool_t *p = lease->pool;
  lease_put(p, lease);
  pc->lease = NULL;
  pc->leased = false;
  p->n_leased--;
  idle_account(pc, false); /* from here on it is an ordinary connection again */
  braid_rpc_t *rpc = pc->rpc;
  if (pc->state == PC_GONE) {
    braid__free(pc);
    braid__rpc_unref(rpc);
    maybe_finish(p);
    return 0;
  }
  pc->last_used_ms = now_ms(p);
  if (p->closing) {
    braid__rpc_unref(rpc);
    return 0;
  }
  braid_rpc_stats_t rs;
  braid_rpc_stats(rpc, &rs);
  if (rs.inflight + rs.queued > 0) {
    /* Their answers would reach the user, not the pool, which could not tell when the
     * channel is free again: close it (those requests complete with BRAID_ECANCELED). */
    pc_close(pc, WHY_ERROR);
  } else if (pc->expires_ms && pc->last_used_ms >= pc->expires_ms) {
    pc_retire(pc, WHY_LIFETIME);
  }
  braid__rpc_unref(rpc);
  pc_settle(pc);
  pump(p);
  return 0;
}

static void pool_free(braid_pool_t *p) {
  braid_loop_t *loop = p->loop;
  while (!braid__list_empty(&p->lease_free)) {
    braid_pool_lease_t *l = BRAID__CONTAINER_OF(p->lease_free.next, braid_pool_lease_t, node);
    braid__list_remove(&l->node);
    braid__free(l);
  }
  while (p->free_calls) {
    pcall_t *c = p->free_calls;
    p->free_calls = c->next_free;
    braid__free(c);
  }
  for (unsigned i = 0; i < p->n_eps; i++) {
    braid__free(p->eps[i]->host);
    braid_tls_ctx_free(p->eps[i]->tls);
    braid__free(p->eps[i]);
  }
  braid__free(p->eps);
  braid_tls_ctx_free(p->o.client.tls);
  braid__free(p);
  braid__loop_unref(loop);
}

static void maybe_finish(braid_pool_t *p) {
  if (p->finished || !p->closing || p->n_conns > 0 || p->n_leased > 0 || p->timers_open > 0)
    return;
  p->finished = true;
  if (p->close_cb)
    p->close_cb(p, 0, p->close_arg);
  pool_free(p);
}

static void on_timer_closed(uv_handle_t *h) {
  braid_pool_t *p = h->data;
  p->timers_open--;
  maybe_finish(p);
}

int braid_pool_close(braid_pool_t *p, braid_pool_close_cb close_cb, void *arg) {
  if (!p)
    return BRAID_EINVAL;
  if (p->closing)
    return BRAID_ECLOSED;
  p->closing = true;
  p->close_cb = close_cb;
  p->close_arg = arg;
  braid__loop_cancel_flush(&p->flush);
  /* The timers' close callbacks come from the loop, so the pool cannot finish (and be freed)
   * inside this call whatever the callbacks below do. */
  uv_close((uv_handle_t *)&p->wait_timer, on_timer_closed);
  uv_close((uv_handle_t *)&p->maint_timer, on_timer_closed);
  while (!braid__list_empty(&p->waiters)) {
    pcall_t *c = BRAID__CONTAINER_OF(p->waiters.next, pcall_t, node);
    dequeue(p, c);
    call_fail(p, c, NULL, BRAID_ECANCELED);
  }
  for (unsigned i = 0; i < p->n_eps; i++) {
    endpoint_t *ep = p->eps[i];
    braid__node_t *n = ep->conns.next;
    while (n != &ep->conns) {
      pconn_t *pc = BRAID__CONTAINER_OF(n, pconn_t, node);
      n = n->next; /* a cancelled connect may free pc at once */
      if (pc->state == PC_CONNECTING)
        braid_connect_cancel(pc->creq);
      else if (pc->state == PC_OPEN)
        pc_close(pc, WHY_POOL);
    }
  }
  return 0;
}

void braid_pool_stats(const braid_pool_t *p, braid_pool_stats_t *out) {
  *out = p->stats;
  out->open = p->n_open;
  out->idle = p->n_idle;
  out->connecting = p->n_connecting;
  out->waiting = p->n_waiting;
  out->inflight = p->inflight;
  out->leased = p->n_leased;
  uint64_t busy = 0;
  for (unsigned i = 0; i < p->n_eps; i++) {
    const endpoint_t *ep = p->eps[i];
    for (const braid__node_t *n = ep->conns.next; n != &ep->conns; n = n->next) {
      const pconn_t *pc = BRAID__CONTAINER_OF(n, pconn_t, node);
      if (pc->state != PC_CONNECTING && (pc->inflight > 0 || pc->leased))
        busy++;
    }
  }
  out->busy = busy;
}

int braid_pool_endpoint_stats(const braid_pool_t *p, unsigned index,
                              braid_pool_endpoint_stats_t *out) {
  if (!p || !out || index >= p->n_eps)
    return BRAID_EINVAL;
  const endpoint_t *ep = p->eps[index];
  memset(out, 0, sizeof(*out));
  out->port = ep->port;
  out->open = ep->n_open;
  out->connecting = ep->n_connecting;
  out->outstanding = ep->outstanding;
  out->calls = ep->calls;
  out->connect_failures = ep->connect_failures;
  out->ejections = ep->ejections;
  out->ejected = ep->ejected;
  uint64_t now = now_ms(p);
  out->ejected_for_ms = ep->ejected && ep->ejected_until > now ? ep->ejected_until - now : 0;
  return 0;
}
