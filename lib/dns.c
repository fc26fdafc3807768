/* Name resolution on the loop: c-ares driven by libuv, with a TTL cache, single flight and a
 * bound on the names looked up at once.
 *
 * c-ares does no I/O of its own here. It tells us which sockets it wants watched
 * (sock_state_cb: a uv_poll_t per socket, started or stopped as asked) and when it next
 * needs attention (ares_timeout: one uv_timer_t); we hand it readiness and timeouts with
 * ares_process_fd(). That is how Node's cares_wrap and curl's asyn-ares drive it; no
 * threadpool thread is ever used, so a server that never answers cannot starve gzip offload
 * or memo loaders.
 *
 * One entry per (name, family): waiting for a slot (queued), on the wire (inflight), or
 * answered (done; kept in the LRU while its TTL lives). Requests hang off the entry while it
 * is pending, so one query serves every caller. Answers are never delivered from inside
 * c-ares or from inside braid_resolve(): the entry's requests move to the ready list and the
 * loop's flush (the check or idle phase of this iteration) calls them back. */
#include <ares.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>

#include "internal.h"

typedef enum { E_QUEUED, E_INFLIGHT, E_DONE } entry_state_t;

typedef struct entry_s {
  struct entry_s *hnext; /* hash chain, while in the table */
  braid__node_t lru;     /* r->lru while done and cached */
  braid__node_t qnode;   /* r->queue while queued */
  braid__node_t waiters; /* requests waiting for the answer */
  braid_resolver_t *r;
  unsigned refs; /* the table, the query on the wire, and each request holding it */
  entry_state_t state;
  bool in_table;
  int family;
  int status; /* once done: 0 or the error */
  uint64_t expires_ms;
  uint64_t hash;
  struct sockaddr_storage *addrs;
  size_t naddrs;
  size_t name_len;
  char name[]; /* lower-cased */
} entry_t;

struct braid_resolve_s {
  braid__node_t node; /* entry->waiters while pending, r->ready once answered */
  braid__node_t all;  /* r->requests, for close */
  braid_resolver_t *r;
  entry_t *e;
  braid_resolve_cb cb;
  void *arg;
  bool calling; /* its callback runs */
};

typedef struct poll_s {
  uv_poll_t h;
  struct poll_s *next;
  braid_resolver_t *r;
  ares_socket_t fd;
} poll_t;

struct braid_resolver_s {
  braid_loop_t *loop;
  braid_resolver_opts_t opts;
  ares_channel channel;
  uv_timer_t timer;
  poll_t *polls;
  unsigned handles; /* uv handles not closed yet (the timer and the polls) */
  bool closing;
  bool is_default; /* the loop's own: closed by braid_loop_close(), no loop reference */
  braid_resolver_close_cb close_cb;
  void *close_arg;
  void *data;
  braid__flush_t flush;
  braid__node_t ready;    /* requests answered, to call back from the flush */
  braid__node_t requests; /* every request not called back yet */
  braid__node_t queue;    /* entries waiting for a lookup slot, oldest first */
  braid__node_t lru;      /* cached entries, least recently used first */
  entry_t **table;
  size_t table_mask;
  braid_hash_key_t key;
  braid_resolver_stats_t stats; /* counters; the gauges are filled in by _stats() */
  unsigned inflight, queued, cached;
};

#define NAME_MAX_LEN 254
#define TIMEOUT_MAX_MS 60000
#define TRIES_MAX 10
#define INFLIGHT_MAX 65536u
#define QUEUED_MAX (1u << 20)
#define CACHE_MAX (1u << 20)

/* ---- options ---------------------------------------------------------------------------- */

void braid_resolver_opts_init(braid_resolver_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->timeout_ms = 1000;
  o->tries = 3;
  o->max_inflight = 64;
  o->max_queued = 1024;
  o->cache_entries = 1024;
  o->min_ttl_ms = 0;
  o->max_ttl_ms = 3600000;
  o->negative_ttl_ms = 5000;
}

int braid_resolver_opts_validate(const braid_resolver_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (memchr(o->servers, '\0', sizeof(o->servers)) == NULL)
    return braid__opts_fail(err, "servers", "is not NUL-terminated within %zu bytes",
                            sizeof(o->servers));
  if (o->timeout_ms < 1 || o->timeout_ms > TIMEOUT_MAX_MS)
    return braid__opts_fail(err, "timeout_ms", "%" PRIu64 " is outside 1..%d", o->timeout_ms,
                            TIMEOUT_MAX_MS);
  if (o->tries < 1 || o->tries > TRIES_MAX)
    return braid__opts_fail(err, "tries", "%u is outside 1..%d", o->tries, TRIES_MAX);
  if (o->max_inflight < 1 || o->max_inflight > INFLIGHT_MAX)
    return braid__opts_fail(err, "max_inflight", "%u is outside 1..%u", o->max_inflight,
                            INFLIGHT_MAX);
  if (o->max_queued > QUEUED_MAX)
    return braid__opts_fail(err, "max_queued", "%u exceeds %u", o->max_queued, QUEUED_MAX);
  if (o->cache_entries > CACHE_MAX)
    return braid__opts_fail(err, "cache_entries", "%u exceeds %u", o->cache_entries, CACHE_MAX);
  if (o->max_ttl_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "max_ttl_ms", "%" PRIu64 " exceeds 2^31", o->max_ttl_ms);
  if (o->min_ttl_ms > o->max_ttl_ms)
    return braid__opts_fail(err, "min_ttl_ms", "%" PRIu64 " exceeds max_ttl_ms (%" PRIu64 ")",
                            o->min_ttl_ms, o->max_ttl_ms);
  if (o->negative_ttl_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "negative_ttl_ms", "%" PRIu64 " exceeds 2^31",
                            o->negative_ttl_ms);
  return 0;
}

/* ---- entries and the table ------------------------------------------------------------- */

static void entry_unref(entry_t *e) {
  if (--e->refs == 0) {
    braid__free(e->addrs);
    braid__free(e);
  }
}

static entry_t *entry_new(braid_resolver_t *r, const char *name, size_t len, int family) {
  entry_t *e = braid__calloc(1, sizeof(*e) + len + 1);
  if (!e)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    e->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  e->name[len] = '\0';
  e->name_len = len;
  e->family = family;
  e->r = r;
  braid__list_init(&e->waiters);
  return e;
}

static uint64_t name_hash(const braid_resolver_t *r, const char *lower, size_t len, int family) {
  uint64_t h = braid_siphash13(&r->key, lower, len);
  return h ^ ((uint64_t)(unsigned)family * UINT64_C(0x9e3779b97f4a7c15));
}

static entry_t *table_find(braid_resolver_t *r, const char *lower, size_t len, int family,
                           uint64_t hash) {
  for (entry_t *e = r->table[hash & r->table_mask]; e; e = e->hnext)
    if (e->hash == hash && e->family == family && e->name_len == len &&
        memcmp(e->name, lower, len) == 0)
      return e;
  return NULL;
}

static void table_insert(braid_resolver_t *r, entry_t *e) {
  entry_t **slot = &r->table[e->hash & r->table_mask];
  e->hnext = *slot;
  *slot = e;
  e->in_table = true;
  e->refs++;
}

/* Takes e out of the table (and the LRU or the queue) and drops the table's reference. */
static void table_remove(braid_resolver_t *r, entry_t *e) {
  entry_t **p = &r->table[e->hash & r->table_mask];
  while (*p && *p != e)
    p = &(*p)->hnext;
  if (*p)
    *p = e->hnext;
  e->hnext = NULL;
  e->in_table = false;
  if (braid__node_linked(&e->lru)) {
    braid__list_remove(&e->lru);
    r->cached--;
  }
  if (braid__node_linked(&e->qnode)) {
    braid__list_remove(&e->qnode);
    r->queued--;
  }
  entry_unref(e);
}

/* ---- c-ares on the loop --------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Arms the timer for c-ares's next timeout, or stops it when nothing is pending. */
static void update_timer(braid_resolver_t *r) {
  if (r->closing)
    return;
  struct timeval tv, *next = ares_timeout(r->channel, NULL, &tv);
  if (!next) {
    uv_timer_stop(&r->timer);
    return;
  }
  /* Rounded up: waking before the deadline would only find nothing due, and spin. */
  uint64_t ms = (uint64_t)next->tv_sec * 1000 + ((uint64_t)next->tv_usec + 999) / 1000;
  uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  braid_resolver_t *r = t->data;
  ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  update_timer(r);
}

static void on_handle_closed(uv_handle_t *h);

static void on_poll(uv_poll_t *h, int status, int events) {
  poll_t *p = h->data;
  braid_resolver_t *r = p->r;
  ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
  if (status < 0) {
    /* Let c-ares meet the error on the socket itself, and drop or retry that server. */
    rfd = wfd = p->fd;
  } else {
    if (events & UV_READABLE)
      rfd = p->fd;
    if (events & UV_WRITABLE)
      wfd = p->fd;
  }
  ares_process_fd(r->channel, rfd, wfd);
  update_timer(r);
}

static void poll_close(braid_resolver_t *r, poll_t *p) {
  /* Stopping takes the fd out of the loop's poller at once, so c-ares may close it (it does,
   * right after this callback) and reuse the number for a new socket; the handle closes
   * later. */
  uv_poll_stop(&p->h);
  uv_close((uv_handle_t *)&p->h, on_handle_closed);
  (void)r;
}

/* c-ares opened, changed or is about to close one of its sockets. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable) {
  braid_resolver_t *r = data;
  poll_t **pp = &r->polls;
  while (*pp && (*pp)->fd != fd)
    pp = &(*pp)->next;
  poll_t *p = *pp;
  if (!readable && !writable) {
    if (p) {
      *pp = p->next;
      poll_close(r, p);
    }
    return;
  }
  if (!p) {
    p = braid__calloc(1, sizeof(*p));
    if (!p) {
      braid__log(r->loop, BRAID_LOG_ERROR, "resolver: no memory to watch a DNS socket");
      return; /* the query it carries times out */
    }
    int rc = uv_poll_init_socket(braid_loop_uv(r->loop), &p->h, fd);
    if (rc) {
      braid__log(r->loop, BRAID_LOG_ERROR, "resolver: cannot watch DNS socket %d: %s", (int)fd,
                 uv_strerror(rc));
      braid__free(p);
      return;
    }
    /* The timer, armed while any query is pending, keeps the loop alive; a socket c-ares
     * keeps open between queries must not. */
    uv_unref((uv_handle_t *)&p->h);
    p->h.data = p;
    p->r = r;
    p->fd = fd;
    p->next = r->polls;
    r->polls = p;
    r->handles++;
  }
  uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* ---- answers ------------------------------------------------------------------------------ */

static int map_ares_status(int status) {
  switch (status) {
  case ARES_SUCCESS:
    return 0;
  case ARES_ENOTFOUND:
  case ARES_ENONAME:
    return BRAID_EDNSNOTFOUND;
  case ARES_ENODATA:
    return BRAID_EDNSNODATA;
  case ARES_ETIMEOUT:
    return BRAID_EDNSTIMEOUT;
  case ARES_ENOMEM:
    return BRAID_ENOMEM;
  case ARES_EBADNAME:
  case ARES_EBADFAMILY:
  case ARES_EBADFLAGS:
  case ARES_EBADHINTS:
  case ARES_ESERVICE:
    return BRAID_EINVAL;
  case ARES_ECANCELLED:
  case ARES_EDESTRUCTION:
    return BRAID_ECANCELED;
  default:
    /* ESERVFAIL, EREFUSED, ENOTIMP, EFORMERR, EBADRESP, ECONNREFUSED, EBADQUERY, ... */
    return BRAID_EDNSFAIL;
  }
}

static void want_flush(braid_resolver_t *r) {
  if (!r->closing)
    braid__loop_want_flush(r->loop, &r->flush);
}

/* The request q (holding a reference on e) has its answer: call it back from the flush. */
static void make_ready(braid_resolver_t *r, braid_resolve_t *q) {
  braid__list_push_back(&r->ready, &q->node);
  want_flush(r);
}

static void evict_over_bound(braid_resolver_t *r) {
  while (r->cached > r->opts.cache_entries && !braid__list_empty(&r->lru)) {
    entry_t *old = BRAID__CONTAINER_OF(r->lru.next, entry_t, lru);
    r->stats.evictions++;
    table_remove(r, old);
  }
}

/* e is answered (status, addresses): its waiters become ready; it stays in the cache for
 * ttl_ms, or leaves the table now. */
static void entry_done(braid_resolver_t *r, entry_t *e, int status, uint64_t ttl_ms) {
  e->state = E_DONE;
  e->status = status;
  if (status < 0) {
    r->stats.failures++;
    if (status == BRAID_EDNSTIMEOUT)
      r->stats.timeouts++;
  }
  while (!braid__list_empty(&e->waiters)) {
    braid_resolve_t *q = BRAID__CONTAINER_OF(e->waiters.next, braid_resolve_t, node);
    braid__list_remove(&q->node);
    make_ready(r, q);
  }
  if (!e->in_table)
    return;
  if (ttl_ms > 0 && r->opts.cache_entries > 0) {
    e->expires_ms = braid__now(r->loop) + ttl_ms;
    braid__list_push_back(&r->lru, &e->lru);
    r->cached++;
    evict_over_bound(r);
  } else {
    table_remove(r, e);
  }
}

static uint64_t clamp_ttl(const braid_resolver_t *r, uint64_t ms) {
  if (ms < r->opts.min_ttl_ms)
    ms = r->opts.min_ttl_ms;
  if (ms > r->opts.max_ttl_ms)
    ms = r->opts.max_ttl_ms;
  return ms;
}

/* c-ares finished e's lookup. May run from inside ares_getaddrinfo(), ares_process_fd() or
 * ares_destroy(): it only records the answer; the callbacks run from the flush. */
static void on_ares_done(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  (void)timeouts;
  entry_t *e = arg;
  braid_resolver_t *r = e->r;
  r->inflight--;
  if (r->closing) {
    if (res)
      ares_freeaddrinfo(res);
    entry_unref(e); /* the query's reference */
    return;
  }
  int st = map_ares_status(status);
  uint64_t ttl_ms = 0;
  if (st == 0) {
    size_t n = 0;
    int64_t ttl = INT64_MAX;
    for (struct ares_addrinfo_node *ai = res ? res->nodes : NULL; ai; ai = ai->ai_next)
      if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) && ai->ai_addr &&
          ai->ai_addrlen <= sizeof(struct sockaddr_storage))
        n++;
    if (n == 0) {
      st = BRAID_EDNSNODATA;
    } else {
      e->addrs = braid__calloc(n, sizeof(*e->addrs));
      if (!e->addrs) {
        st = BRAID_ENOMEM;
      } else {
        for (struct ares_addrinfo_node *ai = res->nodes; ai; ai = ai->ai_next) {
          if (!((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) && ai->ai_addr &&
                ai->ai_addrlen <= sizeof(struct sockaddr_storage)))
            continue;
          struct sockaddr_storage *ss = &e->addrs[e->naddrs++];
          memcpy(ss, ai->ai_addr, ai->ai_addrlen);
          if (ss->ss_family == AF_INET)
            ((struct sockaddr_in *)ss)->sin_port = 0;
          else
            ((struct sockaddr_in6 *)ss)->sin6_port = 0;
          if (ai->ai_ttl < ttl)
            ttl = ai->ai_ttl;
        }
        /* A CNAME's TTL bounds the answer's too. */
        for (struct ares_addrinfo_cname *c = res->cnames; c; c = c->next)
          if (c->ttl < ttl)
            ttl = c->ttl;
        if (ttl < 0)
          ttl = 0;
        ttl_ms = clamp_ttl(r, (uint64_t)ttl * 1000);
      }
    }
  }
  if (st == BRAID_EDNSNOTFOUND || st == BRAID_EDNSNODATA)
    ttl_ms = r->opts.negative_ttl_ms;
  if (res)
    ares_freeaddrinfo(res);
  entry_done(r, e, st, ttl_ms);
  entry_unref(e); /* the query's reference */
  want_flush(r);  /* a lookup slot is free: the flush starts the next queued name */
}

static void start_query(braid_resolver_t *r, entry_t *e) {
  e->state = E_INFLIGHT;
  e->refs++; /* the query's, dropped by on_ares_done */
  r->inflight++;
  r->stats.queries++;
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = e->family;
  hints.ai_socktype = SOCK_STREAM;
  ares_getaddrinfo(r->channel, e->name, NULL, &hints, on_ares_done, e);
  update_timer(r);
}

/* Starts queued names while slots are free. */
static void pump(braid_resolver_t *r) {
  while (!r->closing && r->inflight < r->opts.max_inflight && !braid__list_empty(&r->queue)) {
    entry_t *e = BRAID__CONTAINER_OF(r->queue.next, entry_t, qnode);
    braid__list_remove(&e->qnode);
    r->queued--;
    start_query(r, e);
  }
}

static void call_back(braid_resolve_t *q, int status) {
  entry_t *e = q->e;
  braid__list_remove(&q->all);
  q->calling = true;
  bool ok = status == 0 && e->status == 0;
  if (status == 0)
    status = e->status;
  q->cb(q, status, ok ? e->addrs : NULL, ok ? e->naddrs : 0, q->arg);
  braid__free(q);
  entry_unref(e);
}

static void on_flush(braid__flush_t *f) {
  braid_resolver_t *r = BRAID__CONTAINER_OF(f, braid_resolver_t, flush);
  pump(r);
  /* A callback may close the resolver (which calls back the rest with BRAID_ECANCELED and
   * empties the list) or add to the list (a cache hit): take one at a time from the head. */
  while (!braid__list_empty(&r->ready)) {
    braid_resolve_t *q = BRAID__CONTAINER_OF(r->ready.next, braid_resolve_t, node);
    braid__list_remove(&q->node);
    call_back(q, 0);
  }
}

/* ---- the resolver ------------------------------------------------------------------------ */

static uv_once_t ares_once = UV_ONCE_INIT;
static int ares_init_status = ARES_SUCCESS;

static void init_ares(void) {
  ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static size_t table_size(const braid_resolver_opts_t *o) {
  size_t want = (size_t)o->cache_entries + o->max_inflight, n = 16;
  while (n < want && n < ((size_t)1 << 16))
    n <<= 1;
  return n;
}

static void resolver_free(braid_resolver_t *r) {
  braid__free(r->table);
  braid__free(r);
}

static int resolver_make(braid_loop_t *loop, const braid_resolver_opts_t *opts, bool is_default,
                         braid_resolver_t **out) {
  uv_once(&ares_once, init_ares);
  if (ares_init_status != ARES_SUCCESS)
    return BRAID_ENOMEM;
  braid_resolver_t *r = braid__calloc(1, sizeof(*r));
  if (!r)
    return BRAID_ENOMEM;
  r->loop = loop;
  r->opts = *opts;
  r->is_default = is_default;
  size_t n = table_size(opts);
  r->table = braid__calloc(n, sizeof(*r->table));
  if (!r->table) {
    braid__free(r);
    return BRAID_ENOMEM;
  }
  r->table_mask = n - 1;
  if (braid_hash_key_random(&r->key) != 0) {
    uint64_t t = uv_hrtime();
    memcpy(&r->key, &t, sizeof(t) < sizeof(r->key) ? sizeof(t) : sizeof(r->key));
  }
  braid__list_init(&r->ready);
  braid__list_init(&r->requests);
  braid__list_init(&r->queue);
  braid__list_init(&r->lru);
  r->flush.fn = on_flush;

  struct ares_options ao;
  memset(&ao, 0, sizeof(ao));
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  ao.sock_state_cb = on_sock_state;
  ao.sock_state_cb_data = r;
  ao.timeout = (int)opts->timeout_ms;
  ao.tries = (int)opts->tries;
  if (opts->servers[0]) {
    /* Explicit servers: the names are asked as given, without the system's search list. */
    mask |= ARES_OPT_DOMAINS;
    ao.domains = NULL;
    ao.ndomains = 0;
  }
  int rc = ares_init_options(&r->channel, &ao, mask);
  if (rc != ARES_SUCCESS) {
    resolver_free(r);
    return rc == ARES_ENOMEM ? BRAID_ENOMEM : BRAID_EDNSFAIL;
  }
  if (opts->servers[0] && ares_set_servers_ports_csv(r->channel, opts->servers) != ARES_SUCCESS) {
    ares_destroy(r->channel);
    braid__log(loop, BRAID_LOG_ERROR, "braid_resolver_new: option servers: cannot parse \"%s\"",
               opts->servers);
    resolver_free(r);
    return BRAID_EINVAL;
  }
  rc = uv_timer_init(braid_loop_uv(loop), &r->timer);
  if (rc) {
    ares_destroy(r->channel);
    resolver_free(r);
    return rc;
  }
  r->timer.data = r;
  r->handles = 1;
  *out = r;
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  braid_resolver_t *r;
  if (h->type == UV_POLL) {
    poll_t *p = h->data;
    r = p->r;
    braid__free(p);
  } else {
    r = h->data;
  }
  if (--r->handles > 0 || !r->closing)
    return;
  /* The loop's own resolver closes as its loop does, which may free the loop in a close
   * callback of its own: touch nothing of the loop here. */
  braid_resolver_close_cb cb = r->close_cb;
  void *arg = r->close_arg;
  if (!r->is_default)
    braid__loop_unref(r->loop);
  if (cb)
    cb(r, 0, arg);
  resolver_free(r);
}

static void resolver_shut(braid_resolver_t *r) {
  r->closing = true;
  braid__loop_cancel_flush(&r->flush);
  /* Callbacks may cancel other requests or start lookups (refused now): take from the head
   * each time. */
  while (!braid__list_empty(&r->requests)) {
    braid_resolve_t *q = BRAID__CONTAINER_OF(r->requests.next, braid_resolve_t, all);
    braid__list_remove(&q->node);
    call_back(q, BRAID_ECANCELED);
  }
  /* Abandons the queries on the wire: on_ares_done runs for each (closing: it only drops
   * the query's reference) and on_sock_state closes each socket's poll handle. */
  ares_destroy(r->channel);
  while (r->polls) {
    poll_t *p = r->polls;
    r->polls = p->next;
    poll_close(r, p);
  }
  for (size_t i = 0; i <= r->table_mask; i++)
    while (r->table[i])
      table_remove(r, r->table[i]);
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

int braid_resolver_new(braid_resolver_t **out, braid_loop_t *loop,
                       const braid_resolver_opts_t *o) {
  if (!out || !loop)
    return BRAID_EINVAL;
  braid_resolver_opts_t opts;
  if (o)
    opts = *o;
  else
    braid_resolver_opts_init(&opts);
  braid_opts_error_t err;
  if (braid_resolver_opts_validate(&opts, &err)) {
    braid__opts_log(loop, "braid_resolver_new", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_resolver_t *r;
  int rc = resolver_make(loop, &opts, false, &r);
  if (rc)
    return rc;
  braid__loop_ref(loop);
  *out = r;
  return 0;
}

int braid_resolver_close(braid_resolver_t *resolver, braid_resolver_close_cb cb, void *arg) {
  if (!resolver)
    return BRAID_EINVAL;
  if (resolver->closing || resolver->is_default)
    return resolver->closing ? BRAID_ECLOSED : BRAID_EINVAL;
  resolver->close_cb = cb;
  resolver->close_arg = arg;
  resolver_shut(resolver);
  return 0;
}

void braid_resolver_set_data(braid_resolver_t *resolver, void *data) {
  resolver->data = data;
}

void *braid_resolver_get_data(const braid_resolver_t *resolver) {
  return resolver->data;
}

void braid_resolver_stats(const braid_resolver_t *resolver, braid_resolver_stats_t *out) {
  *out = resolver->stats;
  out->inflight = resolver->inflight;
  out->queued = resolver->queued;
  out->cached = resolver->cached;
}

/* ---- lookups ------------------------------------------------------------------------------ */

static bool ends_with_label(const char *name, size_t len, const char *label) {
  size_t l = strlen(label);
  if (len < l || strncasecmp(name + len - l, label, l) != 0)
    return false;
  return len == l || name[len - l - 1] == '.';
}

/* "localhost", "x.localhost", with or without the final dot (RFC 6761 section 6.3). */
static bool is_localhost(const char *name, size_t len) {
  if (len > 0 && name[len - 1] == '.')
    len--;
  return ends_with_label(name, len, "localhost");
}

/* An entry outside the table holding a fixed answer (a literal, localhost). */
static entry_t *fixed_entry(braid_resolver_t *r, const char *host, size_t len, int family,
                            const struct sockaddr_storage *addrs, size_t n) {
  entry_t *e = entry_new(r, host, len, family);
  if (!e)
    return NULL;
  e->addrs = braid__calloc(n, sizeof(*addrs));
  if (!e->addrs) {
    braid__free(e);
    return NULL;
  }
  memcpy(e->addrs, addrs, n * sizeof(*addrs));
  e->naddrs = n;
  e->state = E_DONE;
  return e;
}

/* Fills out[] with host's fixed answer (an IP literal or a localhost name) and returns how
 * many; 0 when host needs a lookup; BRAID_EINVAL for a literal of the other family. */
static int fixed_answer(const char *host, size_t len, int family, struct sockaddr_storage out[2]) {
  memset(out, 0, 2 * sizeof(out[0]));
  if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&out[0]) == 0 ||
      uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&out[0]) == 0) {
    if (family != AF_UNSPEC && family != out[0].ss_family)
      return BRAID_EINVAL;
    return 1;
  }
  if (!is_localhost(host, len))
    return 0;
  memset(out, 0, 2 * sizeof(out[0])); /* the failed parses above wrote into out[0] */
  int n = 0;
  if (family != AF_INET) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out[n++];
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
  }
  if (family != AF_INET6) {
    struct sockaddr_in *a = (struct sockaddr_in *)&out[n++];
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  return n;
}

static bool name_ok(const char *host, size_t len) {
  if (len == 0 || len > NAME_MAX_LEN)
    return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)host[i];
    if (c <= 0x20 || c == 0x7f)
      return false;
  }
  return true;
}

int braid_resolve(braid_resolve_t **req, braid_resolver_t *resolver, const char *host,
                  int family, braid_resolve_cb cb, void *arg) {
  braid_resolver_t *r = resolver;
  if (!r || !host || !cb || (family != AF_UNSPEC && family != AF_INET && family != AF_INET6))
    return BRAID_EINVAL;
  if (r->closing)
    return BRAID_ECLOSED;
  size_t len = strnlen(host, NAME_MAX_LEN + 1);
  if (!name_ok(host, len))
    return BRAID_EINVAL;
  braid_resolve_t *q = braid__calloc(1, sizeof(*q));
  if (!q)
    return BRAID_ENOMEM;
  q->r = r;
  q->cb = cb;
  q->arg = arg;

  struct sockaddr_storage fixed[2];
  int nfixed = fixed_answer(host, len, family, fixed);
  if (nfixed < 0) {
    braid__free(q);
    return nfixed;
  }
  entry_t *e;
  if (nfixed > 0) {
    e = fixed_entry(r, host, len, family, fixed, (size_t)nfixed);
    if (!e) {
      braid__free(q);
      return BRAID_ENOMEM;
    }
    e->refs = 1; /* the request's */
    q->e = e;
    r->stats.lookups++;
    r->stats.answered_now++;
    braid__list_push_back(&r->requests, &q->all);
    make_ready(r, q);
    goto out;
  }

  char lower[NAME_MAX_LEN + 1];
  for (size_t i = 0; i < len; i++)
    lower[i] = (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] - 'A' + 'a') : host[i];
  uint64_t hash = name_hash(r, lower, len, family);
  e = table_find(r, lower, len, family, hash);
  if (e && e->state == E_DONE && braid__now(r->loop) >= e->expires_ms) {
    table_remove(r, e); /* expired: ask again */
    e = NULL;
  }
  if (e) {
    q->e = e;
    e->refs++;
    r->stats.lookups++;
    braid__list_push_back(&r->requests, &q->all);
    if (e->state == E_DONE) {
      r->stats.cache_hits++;
      braid__list_remove(&e->lru); /* most recently used now */
      braid__list_push_back(&r->lru, &e->lru);
      make_ready(r, q);
    } else {
      r->stats.coalesced++;
      braid__list_push_back(&e->waiters, &q->node);
    }
    goto out;
  }
  bool slot = r->inflight < r->opts.max_inflight && braid__list_empty(&r->queue);
  if (!slot && r->queued >= r->opts.max_queued) {
    braid__free(q);
    return BRAID_ETOOMANYWAITERS;
  }
  e = entry_new(r, lower, len, family);
  if (!e) {
    braid__free(q);
    return BRAID_ENOMEM;
  }
  e->hash = hash;
  table_insert(r, e);
  q->e = e;
  e->refs++;
  r->stats.lookups++;
  braid__list_push_back(&r->requests, &q->all);
  braid__list_push_back(&e->waiters, &q->node);
  if (slot) {
    /* May answer at once (/etc/hosts): on_ares_done only moves q to the ready list. */
    start_query(r, e);
  } else {
    e->state = E_QUEUED;
    braid__list_push_back(&r->queue, &e->qnode);
    r->queued++;
  }
out:
  if (req)
    *req = q;
  return 0;
}

int braid_resolve_cancel(braid_resolve_t *req) {
  if (!req)
    return BRAID_EINVAL;
  braid_resolve_t *q = req;
  if (q->calling)
    return BRAID_ECLOSED;
  braid_resolver_t *r = q->r;
  entry_t *e = q->e;
  braid__list_remove(&q->node);
  /* A queued name nobody waits for any more need not be looked up. One on the wire goes on:
   * c-ares cannot stop one query, and its answer fills the cache. */
  if (e->state == E_QUEUED && braid__list_empty(&e->waiters) && e->in_table)
    table_remove(r, e);
  call_back(q, BRAID_ECANCELED);
  return 0;
}

/* ---- for braid_connect() and the loop --------------------------------------------------- */

static void close_default(braid_resolver_t *r) {
  resolver_shut(r);
}

int braid__resolver_for_loop(braid_loop_t *loop, braid_resolver_t **out) {
  if (loop->resolver) {
    *out = loop->resolver;
    return 0;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_resolver_opts_t o;
  braid_resolver_opts_init(&o);
  braid_resolver_t *r;
  int rc = resolver_make(loop, &o, true, &r);
  if (rc)
    return rc;
  loop->resolver = r;
  loop->resolver_close = close_default;
  *out = r;
  return 0;
}

braid_loop_t *braid__resolver_loop(const braid_resolver_t *r) {
  return r->loop;
}

int braid__resolver_test_servers(braid_resolver_t *r, const char *servers) {
  return ares_set_servers_ports_csv(r->channel, servers) == ARES_SUCCESS ? 0 : BRAID_EINVAL;
}
