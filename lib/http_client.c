/* braid: the HTTP/1.1 client session (see braid/http_client.h).
 *
 * Layout: a client keeps one host entry per host:port it has talked to. A host has a FIFO of
 * requests waiting for a connection, its idle connections (most recently used last) and its
 * busy ones. A connection (hconn_t) carries its requests in flight in order (one, or up to
 * the host's pipelining depth) and one response parser (lib/http_parser.c in response mode).
 *
 * Parser callbacks never call the user: they record what happened (header section, a body
 * span, the end of a message) and pause the parser; hc_feed() then acts on it outside
 * llhttp, where a user callback may close the client, cancel requests or make new ones.
 *
 * Connections are made with braid_connect() (name resolution included) and are plain
 * braid_conn_t: braid_pool_t does not fit here, since it owns rpc channels that take their
 * connection over and frame whole messages, while an HTTP response's framing depends on the
 * request (HEAD), may run until the connection closes, and is streamed with backpressure.
 *
 * TLS: https:// hosts (host_t.tls: the scheme is part of the host key) connect with
 * braid_connect() and the client's TLS context (o.client.tls, or one with the defaults made
 * at the first https request: system CAs, host names verified); everything else here is the
 * same for both schemes. A build without TLS answers https with BRAID_ENOTSUP. */
#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include "braid/http_client.h"
#include "http_parser.h"
#include "internal.h"

#define HC_DECODE_CHUNK 16384

typedef struct host_s host_t;
typedef struct hconn_s hconn_t;

struct host_s {
  braid__node_t node; /* in client->hosts */
  braid_http_client_t *cl;
  char *name; /* without brackets */
  int port;
  bool tls;
  unsigned depth;       /* pipelining depth; 1 = off */
  braid__node_t queue;  /* requests waiting for a connection */
  unsigned nqueue;
  braid__node_t idle;   /* idle connections, most recently used last */
  braid__node_t busy;   /* connecting, busy or closing connections */
  unsigned nconns;      /* open, connecting and closing */
  unsigned connecting;
};

struct braid_http_client_s {
  braid_loop_t *loop;
  braid_http_client_opts_t o;
  char *user_agent;
  braid__node_t hosts;
  braid__node_t idle_lru; /* every idle connection, least recently used first */
  unsigned nconns;
  unsigned nqueued;
  unsigned live; /* requests and connections not freed yet */
  bool closing;
  uv_timer_t close_timer;
  braid_http_client_close_cb close_cb;
  void *close_arg;
  void *data;
  braid_http_client_stats_t st;
  braid_tls_ctx_t *tls; /* for https hosts: a reference of ours, or NULL until needed */
};

enum { EV_NONE = 0, EV_HEADERS = 1, EV_BODY = 2, EV_COMPLETE = 4 };

struct hconn_s {
  braid__node_t node; /* in host->idle or host->busy */
  braid__node_t lru;  /* in client->idle_lru while idle */
  braid_http_client_t *cl;
  host_t *host;
  braid_connect_t *creq;
  braid_conn_t *conn;
  braid__hp_t *hp;
  braid__node_t inflight;
  unsigned ninflight;
  uint64_t served; /* responses completed on it */
  uv_timer_t timer; /* idle timeout; a resume after a pause */
  bool idle, closing, no_more, resume_pending, reading_paused, feeding;
  int refs;      /* the timer, and the connection (or its connect) */
  int close_err; /* why we closed it, for the requests still on it */
  /* what the parser saw, acted on in hc_feed() */
  unsigned ev;
  braid__hp_head_t head;
  const uint8_t *body_at;
  size_t body_len;
  int perr; /* a limit a parser callback hit */
  /* the header section being read */
  char *hbuf;
  size_t hlen, hcap;
  uint32_t (*hoff)[2];
  unsigned nh, hoff_cap;
  bool in_field, in_value;
  unsigned interim;
  /* bytes read while the head request was paused */
  uint8_t *stash;
  size_t stash_len;
};

/* QUEUED: in host->queue; INFLIGHT: on hc->inflight; LIMBO: on neither, its end to be
 * reported from the loop (later_status); DONE: reported. */
typedef enum { RQ_QUEUED, RQ_INFLIGHT, RQ_LIMBO, RQ_DONE } rq_state_t;

struct braid_http_client_req_s {
  braid__node_t node; /* host->queue or hc->inflight */
  braid_http_client_t *cl;
  host_t *host;
  hconn_t *hc;
  rq_state_t state;
  braid_http_client_req_opts_t o;
  braid_http_client_response_cb cb;
  braid_http_client_body_cb body_cb;
  void *arg;
  /* what to send */
  char *url;
  char method[32];
  char *uhbuf; /* the caller's headers, "name\0value\0" each */
  size_t uhlen;
  size_t nuh;
  uint8_t *body;
  size_t body_len;
  uint8_t *wire;
  size_t wire_len;
  bool idempotent, is_head, fresh;
  /* progress */
  braid_http_phase_t phase;
  unsigned retries, redirects;
  bool reused, started, headers_done, delivered_head, paused, in_cb, redirect_pending;
  bool complete_pending; /* the message ended while decoded output waited for a resume */
  braid_http_timeout_t timeout_kind;
  uint64_t t0_us;
  uint64_t connect_deadline, header_deadline, total_deadline;
  uv_timer_t timer;
  int later_status; /* a failure to report from the loop */
  braid_http_phase_t later_phase;
  /* the response */
  int http_status, http_version;
  bool keep_alive;
  char *hbuf; /* owned copy of the final header section */
  braid_http_header_t *hdrs;
  size_t nhdrs;
  uint8_t *bbuf;
  size_t blen, bcap;
  uint64_t decoded;
  braid_gzip_stream_t *gz;
  int enc; /* 0 none, 1 gzip, 2 deflate (zlib or raw: decided on the first bytes) */
  uint8_t *zpend;
  size_t zpend_len;
  bool zmore, zfinish;
  char *location;
};

/* ---- small helpers --------------------------------------------------------------------- */

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = braid__malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

static int grow(void *bufp, size_t *cap, size_t need, size_t elem) {
  void **buf = bufp;
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 16;
  while (n < need)
    n *= 2;
  void *p = braid__realloc(*buf, n * elem);
  if (!p)
    return BRAID_ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

static uint64_t now_ms(braid_http_client_t *cl) {
  return braid__now(cl->loop);
}

static bool is_tchar(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (!is_tchar((unsigned char)*s))
      return false;
  return true;
}

/* ---- options --------------------------------------------------------------------------- */

void braid_http_client_req_opts_init(braid_http_client_req_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->connect_timeout_ms = 10000;
  o->header_timeout_ms = 30000;
  o->total_timeout_ms = 0;
  o->max_body_bytes = UINT64_C(64) << 20;
  o->decompress = 1;
  o->decode_max_ratio = 200;
  o->max_redirects = 0;
  o->retry_unsafe = 0;
}

int braid_http_client_req_opts_validate(const braid_http_client_req_opts_t *o,
                                        braid_opts_error_t *err) {
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->connect_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "connect_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->connect_timeout_ms);
  if (o->header_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "header_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->header_timeout_ms);
  if (o->total_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "total_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->total_timeout_ms);
  if (o->max_body_bytes > (UINT64_C(1) << 40))
    return braid__opts_fail(err, "max_body_bytes", "%" PRIu64 " exceeds 2^40", o->max_body_bytes);
  if (o->decompress != 0 && o->decompress != 1)
    return braid__opts_fail(err, "decompress", "%d is not 0 or 1", o->decompress);
  if (o->max_redirects > 64)
    return braid__opts_fail(err, "max_redirects", "%u exceeds 64", o->max_redirects);
  if (o->retry_unsafe != 0 && o->retry_unsafe != 1)
    return braid__opts_fail(err, "retry_unsafe", "%d is not 0 or 1", o->retry_unsafe);
  braid__opts_ok(err);
  return 0;
}

void braid_http_client_opts_init(braid_http_client_opts_t *o) {
  memset(o, 0, sizeof(*o));
  braid_client_opts_init(&o->client);
  o->max_per_host = 8;
  o->max_total = 64;
  o->idle_timeout_ms = 30000;
  o->max_queued = 65536;
  o->max_header_bytes = 65536;
  o->max_headers = 128;
  o->max_informational = 16;
  o->user_agent = "braid/" BRAID_VERSION_STRING;
  braid_http_client_req_opts_init(&o->req);
}

int braid_http_client_opts_validate(const braid_http_client_opts_t *o, braid_opts_error_t *err) {
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  int rc = braid__client_opts_check(&o->client, err);
  if (rc)
    return braid__opts_nest(err, "client", rc);
  if (o->max_per_host < 1 || o->max_per_host > 65536)
    return braid__opts_fail(err, "max_per_host", "%u is outside 1..65536", o->max_per_host);
  if (o->max_total < 1 || o->max_total > (1u << 20))
    return braid__opts_fail(err, "max_total", "%u is outside 1..2^20", o->max_total);
  if (o->idle_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "idle_timeout_ms", "%" PRIu64 " exceeds 2^31",
                            o->idle_timeout_ms);
  if (o->max_queued < 1 || o->max_queued > (1u << 24))
    return braid__opts_fail(err, "max_queued", "%u is outside 1..2^24", o->max_queued);
  if (o->max_header_bytes < 256 || o->max_header_bytes > ((size_t)1 << 24))
    return braid__opts_fail(err, "max_header_bytes", "%zu is outside 256..2^24",
                            o->max_header_bytes);
  if (o->max_headers < 1 || o->max_headers > 10000)
    return braid__opts_fail(err, "max_headers", "%u is outside 1..10000", o->max_headers);
  if (o->max_informational > 1000)
    return braid__opts_fail(err, "max_informational", "%u exceeds 1000", o->max_informational);
  if (o->user_agent && (strpbrk(o->user_agent, "\r\n") || strlen(o->user_agent) > 256))
    return braid__opts_fail(err, "user_agent", "must be at most 256 bytes without CR or LF");
  rc = braid_http_client_req_opts_validate(&o->req, err);
  if (rc)
    return braid__opts_nest(err, "req", rc);
  braid__opts_ok(err);
  return 0;
}

const char *braid_http_phase_name(braid_http_phase_t phase) {
  switch (phase) {
  case BRAID_HTTP_PHASE_CONNECT:
    return "connect";
  case BRAID_HTTP_PHASE_SEND:
    return "send";
  case BRAID_HTTP_PHASE_HEADERS:
    return "headers";
  case BRAID_HTTP_PHASE_BODY:
    return "body";
  case BRAID_HTTP_PHASE_DONE:
    return "done";
  }
  return "unknown";
}

/* ---- URLs ------------------------------------------------------------------------------ */

typedef struct url_s {
  bool tls;
  char host[256]; /* without brackets */
  bool ipv6;
  int port;
  const char *target; /* path and query, in the URL given */
  size_t target_len;  /* up to a fragment */
} url_t;

/* Splits an absolute http(s) URL. Returns 0 or BRAID_EINVAL. */
static int url_parse(const char *s, url_t *u) {
  memset(u, 0, sizeof(*u));
  if (strncasecmp(s, "http://", 7) == 0) {
    s += 7;
    u->port = 80;
  } else if (strncasecmp(s, "https://", 8) == 0) {
    s += 8;
    u->tls = true;
    u->port = 443;
  } else {
    return BRAID_EINVAL;
  }
  size_t alen = strcspn(s, "/?#");
  const char *a = s, *aend = s + alen;
  if (memchr(a, '@', alen))
    return BRAID_EINVAL; /* credentials in URLs are not supported */
  const char *hend;
  if (a < aend && *a == '[') {
    const char *rb = memchr(a, ']', alen);
    if (!rb || rb == a + 1)
      return BRAID_EINVAL;
    for (const char *p = a + 1; p < rb; p++)
      if (!strchr("0123456789abcdefABCDEF:.", *p))
        return BRAID_EINVAL;
    if ((size_t)(rb - a - 1) >= sizeof(u->host))
      return BRAID_EINVAL;
    memcpy(u->host, a + 1, (size_t)(rb - a - 1));
    u->ipv6 = true;
    hend = rb + 1;
  } else {
    hend = memchr(a, ':', alen);
    if (!hend)
      hend = aend;
    size_t hl = (size_t)(hend - a);
    if (hl == 0 || hl >= sizeof(u->host))
      return BRAID_EINVAL;
    for (const char *p = a; p < hend; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_'))
        return BRAID_EINVAL;
    memcpy(u->host, a, hl);
  }
  if (hend < aend) {
    if (*hend != ':' || hend + 1 == aend || aend - hend > 6)
      return BRAID_EINVAL;
    int port = 0;
    for (const char *p = hend + 1; p < aend; p++) {
      if (*p < '0' || *p > '9')
        return BRAID_EINVAL;
      port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
      return BRAID_EINVAL;
    u->port = port;
  }
  u->target = aend;
  u->target_len = strcspn(aend, "#");
  for (size_t i = 0; i < u->target_len; i++) {
    unsigned char c = (unsigned char)u->target[i];
    if (c <= 0x20 || c == 0x7f)
      return BRAID_EINVAL;
  }
  return 0;
}

/* ---- forward declarations -------------------------------------------------------------- */

static void host_dispatch(host_t *h);
static void hc_close(hconn_t *hc, int err);
static void req_finish(braid_http_client_req_t *r, int status);
static void hc_feed(hconn_t *hc, const uint8_t *data, size_t len);
static void client_maybe_done(braid_http_client_t *cl);

/* ---- hosts ----------------------------------------------------------------------------- */

static host_t *host_find(braid_http_client_t *cl, const char *name, int port, bool tls,
                         bool create) {
  for (braid__node_t *n = cl->hosts.next; n != &cl->hosts; n = n->next) {
    host_t *h = BRAID__CONTAINER_OF(n, host_t, node);
    if (h->port == port && h->tls == tls && strcasecmp(h->name, name) == 0)
      return h;
  }
  if (!create)
    return NULL;
  host_t *h = braid__calloc(1, sizeof(*h));
  if (!h || !(h->name = dup_str(name))) {
    braid__free(h);
    return NULL;
  }
  h->cl = cl;
  h->port = port;
  h->tls = tls;
  h->depth = 1;
  braid__list_init(&h->queue);
  braid__list_init(&h->idle);
  braid__list_init(&h->busy);
  braid__list_push_back(&cl->hosts, &h->node);
  return h;
}

/* ---- requests: building ---------------------------------------------------------------- */

static bool method_idempotent(const char *m) {
  static const char *const ok[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
  for (size_t i = 0; i < BRAID__ARRAY_SIZE(ok); i++)
    if (strcmp(m, ok[i]) == 0)
      return true;
  return false;
}

static bool uh_has(const braid_http_client_req_t *r, const char *name) {
  const char *p = r->uhbuf;
  for (size_t i = 0; i < r->nuh; i++) {
    if (strcasecmp(p, name) == 0)
      return true;
    p += strlen(p) + 1;
    p += strlen(p) + 1;
  }
  return false;
}

typedef struct wbuf_s {
  char *p;
  size_t len, cap;
  int err;
} wbuf_t;

static void wb_add(wbuf_t *w, const void *s, size_t n) {
  if (w->err)
    return;
  if (grow(&w->p, &w->cap, w->len + n + 1, 1)) {
    w->err = BRAID_ENOMEM;
    return;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void wb_str(wbuf_t *w, const char *s) {
  wb_add(w, s, strlen(s));
}

/* Builds r->wire (the request as sent) for r->url and r->method. */
static int req_build(braid_http_client_req_t *r, const url_t *u) {
  wbuf_t w = {0};
  wb_str(&w, r->method);
  wb_str(&w, " ");
  if (u->target_len == 0 || u->target[0] == '?')
    wb_str(&w, "/");
  wb_add(&w, u->target, u->target_len);
  wb_str(&w, " HTTP/1.1\r\n");
  if (!uh_has(r, "Host")) {
    wb_str(&w, "Host: ");
    if (u->ipv6)
      wb_str(&w, "[");
    wb_str(&w, u->host);
    if (u->ipv6)
      wb_str(&w, "]");
    if (u->port != (u->tls ? 443 : 80)) {
      char pb[16];
      snprintf(pb, sizeof(pb), ":%d", u->port);
      wb_str(&w, pb);
    }
    wb_str(&w, "\r\n");
  }
  if (r->cl->user_agent && !uh_has(r, "User-Agent")) {
    wb_str(&w, "User-Agent: ");
    wb_str(&w, r->cl->user_agent);
    wb_str(&w, "\r\n");
  }
  if (r->o.decompress && !uh_has(r, "Accept-Encoding"))
    wb_str(&w, "Accept-Encoding: gzip, deflate\r\n");
  const char *p = r->uhbuf;
  for (size_t i = 0; i < r->nuh; i++) {
    wb_str(&w, p);
    wb_str(&w, ": ");
    p += strlen(p) + 1;
    wb_str(&w, p);
    wb_str(&w, "\r\n");
    p += strlen(p) + 1;
  }
  if (r->body_len || !strcmp(r->method, "POST") || !strcmp(r->method, "PUT") ||
      !strcmp(r->method, "PATCH")) {
    char cl[48];
    snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", r->body_len);
    wb_str(&w, cl);
  }
  wb_str(&w, "\r\n");
  if (r->body_len)
    wb_add(&w, r->body, r->body_len);
  if (w.err) {
    braid__free(w.p);
    return w.err;
  }
  braid__free(r->wire);
  r->wire = (uint8_t *)w.p;
  r->wire_len = w.len;
  return 0;
}

/* ---- requests: timers ------------------------------------------------------------------ */

static void req_on_timer(uv_timer_t *t);

static void req_timer_arm(braid_http_client_req_t *r) {
  if (r->state == RQ_DONE)
    return;
  uint64_t next = UINT64_MAX;
  if (r->later_status)
    next = 0;
  if (r->phase == BRAID_HTTP_PHASE_CONNECT && r->connect_deadline)
    next = r->connect_deadline < next ? r->connect_deadline : next;
  if ((r->phase == BRAID_HTTP_PHASE_SEND || r->phase == BRAID_HTTP_PHASE_HEADERS) &&
      r->header_deadline)
    next = r->header_deadline < next ? r->header_deadline : next;
  if (r->total_deadline)
    next = r->total_deadline < next ? r->total_deadline : next;
  if (next == UINT64_MAX) {
    uv_timer_stop(&r->timer);
    return;
  }
  uint64_t now = now_ms(r->cl);
  uv_timer_start(&r->timer, req_on_timer, next > now ? next - now : 0, 0);
}

static void req_detach(braid_http_client_req_t *r) {
  if (r->state == RQ_QUEUED) {
    braid__list_remove(&r->node);
    r->host->nqueue--;
    r->cl->nqueued--;
  } else if (r->state == RQ_INFLIGHT) {
    braid__list_remove(&r->node);
    r->hc->ninflight--;
    r->hc = NULL;
  }
  if (r->state != RQ_DONE)
    r->state = RQ_LIMBO;
}

static void req_on_timer(uv_timer_t *t) {
  braid_http_client_req_t *r = BRAID__CONTAINER_OF(t, braid_http_client_req_t, timer);
  if (r->state == RQ_DONE)
    return;
  if (r->later_status) {
    int st = r->later_status;
    r->later_status = 0;
    r->phase = r->later_phase;
    req_detach(r);
    req_finish(r, st);
    return;
  }
  uint64_t now = now_ms(r->cl);
  braid_http_timeout_t kind = BRAID_HTTP_TIMEOUT_NONE;
  if (r->total_deadline && now >= r->total_deadline)
    kind = BRAID_HTTP_TIMEOUT_TOTAL;
  else if (r->phase == BRAID_HTTP_PHASE_CONNECT && r->connect_deadline &&
           now >= r->connect_deadline)
    kind = BRAID_HTTP_TIMEOUT_CONNECT;
  else if ((r->phase == BRAID_HTTP_PHASE_SEND || r->phase == BRAID_HTTP_PHASE_HEADERS) &&
           r->header_deadline && now >= r->header_deadline)
    kind = BRAID_HTTP_TIMEOUT_HEADER;
  if (kind == BRAID_HTTP_TIMEOUT_NONE) {
    req_timer_arm(r);
    return;
  }
  hconn_t *hc = r->state == RQ_INFLIGHT ? r->hc : NULL;
  req_detach(r);
  r->timeout_kind = kind;
  req_finish(r, BRAID_ETIMEDOUT);
  /* The answer can no longer be told apart from the next one's: the connection goes. */
  if (hc)
    hc_close(hc, BRAID_ETIMEDOUT);
}

/* Reports st from the loop (a failure found inside a call that must not call back). */
static void req_fail_later(braid_http_client_req_t *r, int st, braid_http_phase_t phase) {
  r->later_status = st;
  r->later_phase = phase;
  req_timer_arm(r);
}

/* ---- requests: finishing --------------------------------------------------------------- */

static void req_free_cb(uv_handle_t *h) {
  braid_http_client_req_t *r = BRAID__CONTAINER_OF(h, braid_http_client_req_t, timer);
  braid_http_client_t *cl = r->cl;
  braid__free(r->url);
  braid__free(r->uhbuf);
  braid__free(r->body);
  braid__free(r->wire);
  braid__free(r->hbuf);
  braid__free(r->hdrs);
  braid__free(r->bbuf);
  braid__free(r->zpend);
  braid__free(r->location);
  braid_gzip_stream_free(r->gz);
  braid__free(r);
  cl->live--;
  client_maybe_done(cl);
}

static void res_fill(braid_http_client_req_t *r, braid_http_client_response_t *res,
                     braid_http_timeout_t kind) {
  memset(res, 0, sizeof(*res));
  res->http_status = r->http_status;
  res->http_version = r->http_version;
  res->phase = r->phase;
  res->timeout = kind;
  res->headers = r->hdrs;
  res->nheaders = r->nhdrs;
  res->body = r->blen ? r->bbuf : NULL;
  res->body_len = r->blen;
  res->url = r->url;
  res->reused = r->reused;
  res->retries = r->retries;
  res->redirects = r->redirects;
}

/* Ends r (already detached from queues and connections) with status: calls the user once,
 * then frees r from the loop. */
static void req_finish(braid_http_client_req_t *r, int status) {
  braid_http_client_t *cl = r->cl;
  braid_http_timeout_t kind = status == BRAID_ETIMEDOUT ? r->timeout_kind : BRAID_HTTP_TIMEOUT_NONE;
  r->state = RQ_DONE;
  uv_timer_stop(&r->timer);
  if (status == 0) {
    r->phase = BRAID_HTTP_PHASE_DONE;
    cl->st.completed++;
    braid_histogram_record(&cl->st.latency_us, (uv_hrtime() / 1000) - r->t0_us);
  } else {
    cl->st.failed++;
  }
  r->in_cb = true;
  if (r->delivered_head) {
    r->body_cb(r, status == 0 ? BRAID_EOF : status, NULL, 0, r->arg);
  } else {
    braid_http_client_response_t res;
    res_fill(r, &res, kind);
    r->cb(r, status, &res, r->arg);
  }
  r->in_cb = false;
  uv_close((uv_handle_t *)&r->timer, req_free_cb);
}

/* Ends r with status now, or, when r's own callback is running (a cancel or a close from
 * inside it), from the loop once it has returned: a callback never runs inside itself. */
static void req_end(braid_http_client_req_t *r, int status) {
  req_detach(r);
  if (r->in_cb) {
    req_fail_later(r, status, r->phase);
    return;
  }
  req_finish(r, status);
}

/* ---- connections ----------------------------------------------------------------------- */

static void hc_free_maybe(hconn_t *hc) {
  if (--hc->refs > 0)
    return;
  braid_http_client_t *cl = hc->cl;
  braid__hp_free(hc->hp);
  braid__free(hc->hbuf);
  braid__free(hc->hoff);
  braid__free(hc->stash);
  braid__free(hc);
  cl->live--;
  client_maybe_done(cl);
}

static void hc_timer_closed(uv_handle_t *h) {
  hc_free_maybe(BRAID__CONTAINER_OF(h, hconn_t, timer));
}

static void hc_set_idle(hconn_t *hc, bool idle) {
  if (hc->idle == idle)
    return;
  hc->idle = idle;
  braid__list_remove(&hc->node);
  if (idle) {
    braid__list_push_back(&hc->host->idle, &hc->node);
    braid__list_push_back(&hc->cl->idle_lru, &hc->lru);
    hc->cl->st.idle++;
  } else {
    braid__list_push_back(&hc->host->busy, &hc->node);
    braid__list_remove(&hc->lru);
    hc->cl->st.idle--;
  }
}

static void hc_on_timer(uv_timer_t *t);

static void hc_arm_idle(hconn_t *hc) {
  if (hc->cl->o.idle_timeout_ms && !hc->closing)
    uv_timer_start(&hc->timer, hc_on_timer, hc->cl->o.idle_timeout_ms, 0);
}

/* Puts requests still on hc back in their host's queue (fresh connections only) or fails
 * them. The head request (the one whose answer was due) follows the keep-alive race rule:
 * again only if nothing of its answer came, hc had carried an earlier request, it may be
 * sent twice, and it was not sent twice already. The ones behind it (pipelined, so
 * idempotent) go again once. */
static void hc_fail_inflight(hconn_t *hc, int err) {
  bool head = true;
  while (!braid__list_empty(&hc->inflight)) {
    braid_http_client_req_t *r =
        BRAID__CONTAINER_OF(hc->inflight.next, braid_http_client_req_t, node);
    bool again = !r->started && r->retries == 0 && !hc->cl->closing &&
                 (r->idempotent || r->o.retry_unsafe) && (!head || r->reused);
    req_detach(r);
    if (again) {
      r->retries++;
      hc->cl->st.retries++;
      r->fresh = true;
      r->phase = BRAID_HTTP_PHASE_CONNECT;
      r->state = RQ_QUEUED;
      braid__list_push_back(&r->host->queue, &r->node);
      r->host->nqueue++;
      r->cl->nqueued++;
      req_timer_arm(r);
    } else {
      /* closed because of another request (its timeout, its cancel): not this one's fault */
      req_end(r, err == BRAID_ETIMEDOUT || err == BRAID_ECANCELED ? UV_ECONNABORTED : err);
    }
    head = false;
  }
}

static void kick_all(braid_http_client_t *cl) {
  if (cl->closing)
    return;
  for (braid__node_t *n = cl->hosts.next; n != &cl->hosts; n = n->next) {
    host_t *h = BRAID__CONTAINER_OF(n, host_t, node);
    if (h->nqueue)
      host_dispatch(h);
  }
}

static void on_conn_close(braid_conn_t *conn, int status, void *data) {
  (void)conn;
  hconn_t *hc = data;
  hc->conn = NULL;
  hc->closing = true;
  int err = hc->close_err ? hc->close_err : status ? status : UV_ECONNRESET;
  hc_set_idle(hc, false);
  braid__list_remove(&hc->node);
  hc->host->nconns--;
  hc->cl->nconns--;
  hc->cl->st.open--;
  hc_fail_inflight(hc, err);
  uv_close((uv_handle_t *)&hc->timer, hc_timer_closed);
  kick_all(hc->cl);
  hc_free_maybe(hc);
}

/* Closes hc; requests still on it are handled by on_conn_close with err. */
static void hc_close(hconn_t *hc, int err) {
  if (hc->closing)
    return;
  hc->closing = true;
  if (!hc->close_err)
    hc->close_err = err;
  uv_timer_stop(&hc->timer);
  if (hc->conn) {
    if (err && err != BRAID_ECANCELED)
      braid_conn_abort(hc->conn);
    else
      braid_conn_close(hc->conn);
  }
}

static void hc_on_timer(uv_timer_t *t) {
  hconn_t *hc = BRAID__CONTAINER_OF(t, hconn_t, timer);
  if (hc->closing)
    return;
  if (hc->resume_pending) {
    hc->resume_pending = false;
    uint8_t *stash = hc->stash;
    size_t len = hc->stash_len;
    hc->stash = NULL;
    hc->stash_len = 0;
    hc->reading_paused = false;
    hc_feed(hc, stash, len);
    braid__free(stash);
    if (!hc->closing && !hc->reading_paused)
      braid_conn_read_start(hc->conn);
    return;
  }
  if (hc->idle)
    hc_close(hc, 0);
}

/* ---- parser callbacks: record and pause ------------------------------------------------ */

static braid_http_client_req_t *hc_head(hconn_t *hc) {
  return braid__list_empty(&hc->inflight)
             ? NULL
             : BRAID__CONTAINER_OF(hc->inflight.next, braid_http_client_req_t, node);
}

static int p_message_begin(void *user) {
  hconn_t *hc = user;
  hc->hlen = 0;
  hc->nh = 0;
  hc->in_value = false;
  hc->in_field = false;
  braid_http_client_req_t *r = hc_head(hc);
  if (!r) {
    hc->perr = BRAID_EPROTO; /* an answer nobody asked for */
    return -1;
  }
  r->started = true;
  return 0;
}

static int h_append(hconn_t *hc, const char *at, size_t len) {
  if (hc->hlen + len + 1 > hc->cl->o.max_header_bytes + 2 * (size_t)hc->cl->o.max_headers) {
    hc->perr = BRAID_ETOOBIG;
    return -1;
  }
  if (grow(&hc->hbuf, &hc->hcap, hc->hlen + len + 1, 1)) {
    hc->perr = BRAID_ENOMEM;
    return -1;
  }
  memcpy(hc->hbuf + hc->hlen, at, len);
  hc->hlen += len;
  return 0;
}

static int p_header_field(void *user, const char *at, size_t len) {
  hconn_t *hc = user;
  if (!hc->in_field) { /* a new field (a name may come in several pieces) */
    if (hc->nh >= hc->cl->o.max_headers) {
      hc->perr = BRAID_ETOOBIG;
      return -1;
    }
    size_t cap = hc->hoff_cap;
    if (grow(&hc->hoff, &cap, hc->nh + 1, sizeof(*hc->hoff))) {
      hc->perr = BRAID_ENOMEM;
      return -1;
    }
    hc->hoff_cap = (unsigned)cap;
    hc->hoff[hc->nh][0] = (uint32_t)hc->hlen;
    hc->hoff[hc->nh][1] = UINT32_MAX;
    hc->nh++;
    hc->in_value = false;
    hc->in_field = true;
  }
  return h_append(hc, at, len);
}

static int p_header_value(void *user, const char *at, size_t len) {
  hconn_t *hc = user;
  if (!hc->in_value) {
    if (h_append(hc, "", 1)) /* ends the name */
      return -1;
    hc->hoff[hc->nh - 1][1] = (uint32_t)hc->hlen;
    hc->in_value = true;
    hc->in_field = false;
  }
  return h_append(hc, at, len);
}

static int p_header_value_complete(void *user) {
  hconn_t *hc = user;
  if (hc->nh == 0)
    return 0;
  if (!hc->in_value) { /* an empty value */
    if (h_append(hc, "", 1))
      return -1;
    hc->hoff[hc->nh - 1][1] = (uint32_t)hc->hlen;
  }
  if (h_append(hc, "", 1))
    return -1;
  hc->in_value = false;
  hc->in_field = false;
  return 0;
}

static int p_headers_complete(void *user, const braid__hp_head_t *head) {
  hconn_t *hc = user;
  hc->head = *head;
  hc->ev |= EV_HEADERS;
  braid_http_client_req_t *r = hc_head(hc);
  /* No body after HEAD, 204 or 304 (RFC 9110 section 6.4.1), whatever Content-Length says
   * (llhttp would wait for a 304's Content-Length bytes); llhttp completes the message
   * next, and that pauses. */
  if ((r && r->is_head && head->status_code >= 200) || head->status_code == 204 ||
      head->status_code == 304)
    return BRAID__HP_SKIP_BODY;
  return BRAID__HP_PAUSE;
}

static int p_body(void *user, const char *at, size_t len) {
  hconn_t *hc = user;
  hc->ev |= EV_BODY;
  hc->body_at = (const uint8_t *)at;
  hc->body_len = len;
  return BRAID__HP_PAUSE;
}

static int p_message_complete(void *user) {
  hconn_t *hc = user;
  hc->ev |= EV_COMPLETE;
  return BRAID__HP_PAUSE;
}

static const braid__hp_callbacks_t parser_cbs = {
    .on_message_begin = p_message_begin,
    .on_header_field = p_header_field,
    .on_header_value = p_header_value,
    .on_header_value_complete = p_header_value_complete,
    .on_headers_complete = p_headers_complete,
    .on_body = p_body,
    .on_message_complete = p_message_complete,
};

/* ---- response handling ----------------------------------------------------------------- */

static const char *hdr_get(braid_http_header_t *h, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcasecmp(h[i].name, name) == 0)
      return h[i].value;
  return NULL;
}

const char *braid_http_client_response_header(const braid_http_client_response_t *res,
                                              const char *name) {
  if (!res || !name)
    return NULL;
  for (size_t i = 0; i < res->nheaders; i++)
    if (strcasecmp(res->headers[i].name, name) == 0)
      return res->headers[i].value;
  return NULL;
}

/* Hands decoded bytes to the request: appended (whole) or to body_cb (streamed). */
static int body_deliver(braid_http_client_req_t *r, const uint8_t *p, size_t n) {
  if (n == 0)
    return 0;
  r->decoded += n;
  r->cl->st.body_bytes_decoded += n;
  if (r->o.max_body_bytes && r->decoded > r->o.max_body_bytes)
    return BRAID_ETOOBIG;
  if (!r->body_cb) {
    if (grow(&r->bbuf, &r->bcap, r->blen + n, 1))
      return BRAID_ENOMEM;
    memcpy(r->bbuf + r->blen, p, n);
    r->blen += n;
    return 0;
  }
  r->in_cb = true;
  r->body_cb(r, 0, p, n, r->arg);
  r->in_cb = false;
  return 0;
}

/* Decodes (or passes on) in[0..len) of body. When the caller pauses part way, what is left
 * of in is kept in r->zpend. flags: BRAID_GZIP_FINISH at the end of the body. Returns 0 or
 * an error for the request. */
static int body_process(braid_http_client_req_t *r, const uint8_t *in, size_t len, int flags) {
  if (!r->gz) {
    if (flags)
      return 0;
    return body_deliver(r, in, len);
  }
  uint8_t out[HC_DECODE_CHUNK];
  for (;;) {
    if (r->state != RQ_INFLIGHT)
      return 0;
    if (r->paused && (len || r->zmore)) {
      uint8_t *z = braid__malloc(len ? len : 1);
      if (!z)
        return BRAID_ENOMEM;
      if (len)
        memcpy(z, in, len);
      braid__free(r->zpend);
      r->zpend = z;
      r->zpend_len = len;
      r->zfinish = flags != 0;
      return 0;
    }
    size_t used = 0, produced = 0;
    int rc = braid_gzip_stream_process(r->gz, in, len, &used, out, sizeof(out), &produced, flags);
    if (used) /* in may be NULL (a final flush with no input): no arithmetic on it then */
      in += used;
    len -= used;
    if (rc < 0)
      return rc;
    r->zmore = produced == sizeof(out);
    int drc = body_deliver(r, out, produced);
    if (drc)
      return drc;
    if (rc == BRAID_GZIP_DONE) {
      r->zmore = false;
      return 0;
    }
    if (!r->zmore && len == 0)
      return flags ? BRAID_ETRUNCATED : 0;
  }
}

static void setup_decoder(braid_http_client_req_t *r) {
  r->enc = 0;
  if (!r->o.decompress)
    return;
  const char *ce = hdr_get(r->hdrs, r->nhdrs, "Content-Encoding");
  if (!ce)
    return;
  if (strcasecmp(ce, "gzip") == 0 || strcasecmp(ce, "x-gzip") == 0)
    r->enc = 1;
  else if (strcasecmp(ce, "deflate") == 0)
    r->enc = 2;
}

/* Creates the decoder on the body's first bytes (deflate may be zlib-wrapped, as RFC 9110
 * says, or raw, as some servers send it). */
static int start_decoder(braid_http_client_req_t *r, const uint8_t *in, size_t len) {
  if (!r->enc || r->gz)
    return 0;
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.format = BRAID_GZIP_FORMAT_GZIP;
  if (r->enc == 2) {
    bool zlib = len >= 2 ? (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 &&
                               ((unsigned)in[0] * 256 + in[1]) % 31 == 0
                         : len == 1 ? (in[0] & 0x0f) == 8 : true;
    go.format = zlib ? BRAID_GZIP_FORMAT_ZLIB : BRAID_GZIP_FORMAT_RAW;
  }
  go.max_output_bytes = 0; /* body_deliver() holds max_body_bytes, as BRAID_ETOOBIG */
  go.max_ratio = r->o.decode_max_ratio;
  return braid_gzip_stream_new(&r->gz, BRAID_GZIP_DECOMPRESS, &go);
}

/* Builds the request's copy of the final header section. */
static int take_headers(hconn_t *hc, braid_http_client_req_t *r) {
  braid__free(r->hbuf);
  braid__free(r->hdrs);
  r->hbuf = NULL;
  r->hdrs = NULL;
  r->nhdrs = 0;
  if (hc->nh == 0)
    return 0;
  r->hbuf = braid__malloc(hc->hlen ? hc->hlen : 1);
  r->hdrs = braid__calloc(hc->nh, sizeof(*r->hdrs));
  if (!r->hbuf || !r->hdrs)
    return BRAID_ENOMEM;
  memcpy(r->hbuf, hc->hbuf, hc->hlen);
  for (unsigned i = 0; i < hc->nh; i++) {
    if (hc->hoff[i][1] == UINT32_MAX)
      return BRAID_EPROTO;
    r->hdrs[i].name = r->hbuf + hc->hoff[i][0];
    r->hdrs[i].value = r->hbuf + hc->hoff[i][1];
  }
  r->nhdrs = hc->nh;
  return 0;
}

static bool is_redirect(int st) {
  return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

/* The header section of a response arrived for the head request. Returns 0 or an error
 * for that request. */
static int on_headers(hconn_t *hc, braid_http_client_req_t *r) {
  unsigned st = hc->head.status_code;
  if (st < 200) {
    if (st == 101 || ++hc->interim > hc->cl->o.max_informational)
      return BRAID_EPROTO;
    return 0;
  }
  r->http_status = (int)st;
  r->http_version = (int)(hc->head.http_major * 10 + hc->head.http_minor);
  r->keep_alive = hc->head.keep_alive != 0;
  r->headers_done = true;
  r->phase = BRAID_HTTP_PHASE_BODY;
  r->header_deadline = 0;
  req_timer_arm(r);
  int rc = take_headers(hc, r);
  if (rc)
    return rc;
  setup_decoder(r);
  braid__free(r->location);
  r->location = NULL;
  r->redirect_pending = false;
  if (is_redirect(r->http_status) && r->redirects < r->o.max_redirects) {
    const char *loc = hdr_get(r->hdrs, r->nhdrs, "Location");
    if (loc && *loc) {
      if (!(r->location = dup_str(loc)))
        return BRAID_ENOMEM;
      r->redirect_pending = true;
      r->enc = 0; /* the body is dropped */
      return 0;
    }
  }
  if (r->body_cb) {
    braid_http_client_response_t res;
    res_fill(r, &res, BRAID_HTTP_TIMEOUT_NONE);
    r->delivered_head = true;
    r->in_cb = true;
    r->cb(r, 0, &res, r->arg);
    r->in_cb = false;
  }
  return 0;
}

static int req_redirect(braid_http_client_req_t *r);

/* The head request's response is complete. */
static void on_complete(hconn_t *hc, braid_http_client_req_t *r) {
  if (r->state != RQ_INFLIGHT || !r->headers_done) /* an interim response ended */
    return;
  int rc = 0;
  if (r->gz && !r->redirect_pending)
    rc = body_process(r, NULL, 0, BRAID_GZIP_FINISH);
  if (r->state != RQ_INFLIGHT)
    return;
  if (!rc && r->paused && (r->zpend || r->zmore)) {
    /* decoded output still waits for the caller: end the request when it resumes */
    r->complete_pending = true;
    return;
  }
  bool keep = r->keep_alive && !hc->no_more;
  req_detach(r);
  hc->served++;
  hc->interim = 0;
  if (!keep)
    hc->no_more = true;
  if (rc) {
    req_finish(r, rc);
    hc_close(hc, rc);
    return;
  }
  /* Before the user's callback, so a request made from it can take this connection. */
  if (!hc->no_more && hc->ninflight == 0 && !hc->closing) {
    hc_set_idle(hc, true);
    hc_arm_idle(hc);
  }
  if (r->redirect_pending) {
    r->redirect_pending = false;
    int rrc = req_redirect(r);
    if (rrc)
      req_finish(r, rrc);
  } else {
    req_finish(r, 0);
  }
  if (hc->no_more && hc->ninflight == 0)
    hc_close(hc, 0);
  else if (hc->idle && !hc->closing)
    host_dispatch(hc->host);
}

/* Fails the head request with err and closes hc (the stream is out of step). */
static void hc_fail_head(hconn_t *hc, braid_http_client_req_t *r, int err) {
  if (r && r->state == RQ_INFLIGHT)
    req_end(r, err);
  hc_close(hc, err);
}

/* Runs data through the parser, acting on each event outside llhttp. */
static void hc_feed(hconn_t *hc, const uint8_t *data, size_t len) {
  /* decoded output a pause left behind comes first */
  braid_http_client_req_t *r0 = hc_head(hc);
  if (r0 && (r0->zpend || r0->zmore) && !r0->paused) {
    uint8_t *z = r0->zpend;
    size_t zl = r0->zpend_len;
    int fin = r0->zfinish;
    r0->zpend = NULL;
    r0->zpend_len = 0;
    r0->zmore = false;
    int rc = body_process(r0, z ? z : (const uint8_t *)"", zl, fin ? BRAID_GZIP_FINISH : 0);
    braid__free(z);
    if (rc) {
      hc_fail_head(hc, r0, rc);
      return;
    }
    if (r0->complete_pending && !r0->paused && !r0->zpend && !r0->zmore &&
        r0->state == RQ_INFLIGHT) {
      r0->complete_pending = false;
      on_complete(hc, r0);
    }
  }
  /* After a pause llhttp may have steps left that need no input (the end of a body span,
   * then the end of the message): run it on no input once more whenever it paused. */
  bool kick = true;
  if (!data)
    data = (const uint8_t *)"";
  while (!hc->closing) {
    braid_http_client_req_t *r = hc_head(hc);
    if (r && r->paused) {
      /* keep the rest until resume; stop reading (TCP flow control does the rest) */
      if (len) {
        uint8_t *s = braid__malloc(hc->stash_len + len);
        if (!s) {
          hc_fail_head(hc, r, BRAID_ENOMEM);
          return;
        }
        if (hc->stash_len)
          memcpy(s, hc->stash, hc->stash_len);
        memcpy(s + hc->stash_len, data, len);
        braid__free(hc->stash);
        hc->stash = s;
        hc->stash_len += len;
      }
      if (!hc->reading_paused) {
        hc->reading_paused = true;
        braid_conn_read_stop(hc->conn);
      }
      return;
    }
    if (len == 0 && !kick)
      return;
    size_t used = 0;
    hc->ev = EV_NONE;
    hc->perr = 0;
    int prc = braid__hp_execute(hc->hp, (const char *)data, len, &used);
    data += used;
    len -= used;
    kick = prc == BRAID__HP_PAUSED;
    if (kick)
      braid__hp_resume(hc->hp);
    if (prc < 0 || prc == BRAID__HP_UPGRADE) {
      int err = hc->perr ? hc->perr : BRAID_EPROTO;
      hc_fail_head(hc, hc_head(hc), err);
      return;
    }
    r = hc_head(hc);
    if (!r)
      return;
    if (hc->ev & EV_HEADERS) {
      int rc = on_headers(hc, r);
      if (rc) {
        hc_fail_head(hc, r, rc);
        return;
      }
      if (r->state != RQ_INFLIGHT || hc->closing)
        return;
    }
    if (hc->ev & EV_BODY) {
      hc->cl->st.body_bytes_wire += hc->body_len;
      int rc = 0;
      if (!r->redirect_pending) {
        rc = start_decoder(r, hc->body_at, hc->body_len);
        if (!rc)
          rc = body_process(r, hc->body_at, hc->body_len, 0);
      }
      if (rc) {
        hc_fail_head(hc, r, rc);
        return;
      }
      if (r->state != RQ_INFLIGHT || hc->closing)
        return;
    }
    if (hc->ev & EV_COMPLETE)
      on_complete(hc, r);
  }
}

static void on_conn_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len,
                         void *data) {
  (void)conn;
  hconn_t *hc = data;
  if (status < 0 || hc->closing)
    return;
  if (hc->ninflight == 0) {
    /* bytes on an idle connection: a server speaking out of turn */
    hc_close(hc, BRAID_EPROTO);
    return;
  }
  hc_feed(hc, bytes, len);
}

static void on_conn_eof(braid_conn_t *conn, void *data) {
  (void)conn;
  hconn_t *hc = data;
  if (hc->closing)
    return;
  braid_http_client_req_t *r = hc_head(hc);
  if (r && r->started) {
    hc->ev = EV_NONE;
    int prc = braid__hp_finish(hc->hp);
    if (prc == BRAID__HP_PAUSED) {
      braid__hp_resume(hc->hp);
      if (hc->ev & EV_COMPLETE) {
        hc->no_more = true;
        on_complete(hc, r);
      }
    } else if (prc < 0) {
      hc_fail_head(hc, r, BRAID_ETRUNCATED);
      return;
    } else if (r->state == RQ_INFLIGHT) {
      hc_fail_head(hc, r, BRAID_ETRUNCATED);
      return;
    }
  }
  /* requests with no answer at all meet the keep-alive race rule in on_conn_close */
  hc_close(hc, UV_EOF);
}

/* ---- connecting and sending ------------------------------------------------------------ */

static void req_send(braid_http_client_req_t *r, hconn_t *hc) {
  braid_http_client_t *cl = r->cl;
  braid__list_remove(&r->node);
  r->host->nqueue--;
  cl->nqueued--;
  r->state = RQ_INFLIGHT;
  r->hc = hc;
  r->started = false;
  r->headers_done = false;
  r->reused = hc->served > 0 || hc->ninflight > 0;
  braid__list_push_back(&hc->inflight, &r->node);
  hc->ninflight++;
  if (hc->idle) {
    hc_set_idle(hc, false);
    uv_timer_stop(&hc->timer);
  }
  r->phase = BRAID_HTTP_PHASE_SEND;
  cl->st.sent++;
  if (r->reused)
    cl->st.reused++;
  int rc = braid_conn_write(hc->conn, r->wire, r->wire_len, NULL, NULL);
  if (rc) {
    req_detach(r); /* reported from the loop: this may run inside braid_http_client_request */
    req_fail_later(r, rc, BRAID_HTTP_PHASE_SEND);
    hc_close(hc, rc);
    return;
  }
  cl->st.bytes_sent += r->wire_len;
  r->phase = BRAID_HTTP_PHASE_HEADERS;
  r->header_deadline = r->o.header_timeout_ms ? now_ms(cl) + r->o.header_timeout_ms : 0;
  req_timer_arm(r);
}

static void on_connected(braid_connect_t *creq, int status, braid_conn_t *conn, void *arg) {
  (void)creq;
  hconn_t *hc = arg;
  host_t *h = hc->host;
  braid_http_client_t *cl = hc->cl;
  hc->creq = NULL;
  h->connecting--;
  if (status == 0 && (cl->closing || hc->closing)) {
    braid_conn_close(conn);
    status = BRAID_ECANCELED;
    conn = NULL;
  }
  if (status == 0 && braid__hp_new_response(&hc->hp, &parser_cbs, hc) != 0) {
    braid_conn_close(conn);
    status = BRAID_ENOMEM;
  }
  if (status != 0) {
    if (status != BRAID_ECANCELED)
      cl->st.connect_failures++;
    braid__list_remove(&hc->node);
    h->nconns--;
    cl->nconns--;
    hc->closing = true;
    /* the connect error goes to the request waiting longest (Go's Transport does so) */
    if (status != BRAID_ECANCELED && h->nqueue) {
      braid_http_client_req_t *r =
          BRAID__CONTAINER_OF(h->queue.next, braid_http_client_req_t, node);
      r->phase = BRAID_HTTP_PHASE_CONNECT;
      req_end(r, status);
    }
    uv_close((uv_handle_t *)&hc->timer, hc_timer_closed);
    hc_free_maybe(hc);
    kick_all(cl);
    return;
  }
  cl->st.connects++;
  cl->st.open++;
  hc->conn = conn;
  braid_conn_set_data(conn, hc);
  braid_conn_callbacks_t cbs = {
      .on_read = on_conn_read, .on_eof = on_conn_eof, .on_close = on_conn_close};
  braid_conn_set_callbacks(conn, &cbs);
  if (braid_conn_read_start(conn) != 0) {
    hc_close(hc, BRAID_ECLOSED);
    return;
  }
  hc_set_idle(hc, true);
  hc_arm_idle(hc);
  host_dispatch(h);
}

/* Opens one more connection to h. Returns 0 or the error of braid_connect. */
static int hc_open(host_t *h) {
  braid_http_client_t *cl = h->cl;
  hconn_t *hc = braid__calloc(1, sizeof(*hc));
  if (!hc)
    return BRAID_ENOMEM;
  hc->cl = cl;
  hc->host = h;
  braid__list_init(&hc->inflight);
  uv_timer_init(braid_loop_uv(cl->loop), &hc->timer);
  hc->refs = 2;
  braid_client_opts_t co = cl->o.client;
  co.tls = h->tls ? cl->tls : NULL; /* client_tls() made it before the host was queued */
  int rc = braid_connect(&hc->creq, cl->loop, h->name, h->port, &co, on_connected, hc);
  if (rc) {
    hc->refs = 1;
    hc->closing = true;
    cl->live++;
    uv_close((uv_handle_t *)&hc->timer, hc_timer_closed);
    return rc;
  }
  cl->live++;
  braid__list_push_back(&h->busy, &hc->node);
  h->nconns++;
  h->connecting++;
  cl->nconns++;
  return 0;
}

/* Closes the least recently used idle connection of a host other than h, to make room for
 * one to h at the total limit. Returns true when one was closed. */
static bool evict_idle(braid_http_client_t *cl, host_t *h) {
  for (braid__node_t *n = cl->idle_lru.next; n != &cl->idle_lru; n = n->next) {
    hconn_t *hc = BRAID__CONTAINER_OF(n, hconn_t, lru);
    if (hc->host != h && !hc->closing) {
      hc_close(hc, 0);
      return true;
    }
  }
  return false;
}

static hconn_t *pick_conn(host_t *h, braid_http_client_req_t *r) {
  /* most recently used idle connection first; a retry takes only one never used */
  for (braid__node_t *n = h->idle.prev; n != &h->idle; n = n->prev) {
    hconn_t *hc = BRAID__CONTAINER_OF(n, hconn_t, node);
    if (!hc->closing && !hc->no_more && (!r->fresh || hc->served == 0))
      return hc;
  }
  if (h->depth > 1 && r->idempotent && !r->fresh && !r->body_cb) {
    for (braid__node_t *n = h->busy.next; n != &h->busy; n = n->next) {
      hconn_t *hc = BRAID__CONTAINER_OF(n, hconn_t, node);
      if (hc->conn && !hc->closing && !hc->no_more && hc->ninflight < h->depth &&
          hc->ninflight > 0 && !hc->reading_paused) {
        braid_http_client_req_t *last =
            BRAID__CONTAINER_OF(hc->inflight.prev, braid_http_client_req_t, node);
        if (last->idempotent && !last->body_cb)
          return hc;
      }
    }
  }
  return NULL;
}

static void host_dispatch(host_t *h) {
  braid_http_client_t *cl = h->cl;
  if (cl->closing)
    return;
  braid__node_t *n = h->queue.next;
  while (n != &h->queue) {
    braid_http_client_req_t *r = BRAID__CONTAINER_OF(n, braid_http_client_req_t, node);
    n = n->next;
    if (r->later_status)
      continue;
    hconn_t *hc = pick_conn(h, r);
    if (hc)
      req_send(r, hc);
  }
  unsigned waiting = 0;
  for (braid__node_t *m = h->queue.next; m != &h->queue; m = m->next)
    if (!BRAID__CONTAINER_OF(m, braid_http_client_req_t, node)->later_status)
      waiting++;
  unsigned coming = h->connecting;
  while (waiting > coming && h->nconns < cl->o.max_per_host) {
    if (cl->nconns >= cl->o.max_total) {
      evict_idle(cl, h); /* the slot frees when it has closed; dispatch runs again then */
      return;
    }
    int rc = hc_open(h);
    if (rc) {
      /* fail the request waiting longest: it would only wait out its timeout */
      for (braid__node_t *m = h->queue.next; m != &h->queue; m = m->next) {
        braid_http_client_req_t *r = BRAID__CONTAINER_OF(m, braid_http_client_req_t, node);
        if (!r->later_status) {
          req_fail_later(r, rc, BRAID_HTTP_PHASE_CONNECT);
          break;
        }
      }
      waiting--;
      continue;
    }
    coming++;
  }
}

/* ---- redirects ------------------------------------------------------------------------- */

/* Resolves loc against r->url into a new absolute URL. */
static char *resolve_location(const char *base, const char *loc) {
  if (strncasecmp(loc, "http://", 7) == 0 || strncasecmp(loc, "https://", 8) == 0)
    return dup_str(loc);
  url_t u;
  if (url_parse(base, &u))
    return NULL;
  size_t scheme_len = (size_t)(strstr(base, "://") - base) + 3;
  size_t auth_len = (size_t)(u.target - base);
  wbuf_t w = {0};
  if (loc[0] == '/' && loc[1] == '/') {
    wb_add(&w, base, scheme_len - 2);
    wb_str(&w, loc);
  } else if (loc[0] == '/') {
    wb_add(&w, base, auth_len);
    wb_str(&w, loc);
  } else {
    /* relative to the base path's directory */
    size_t plen = strcspn(u.target, "?#");
    const char *slash = NULL;
    for (size_t i = 0; i < plen; i++)
      if (u.target[i] == '/')
        slash = u.target + i;
    wb_add(&w, base, auth_len);
    if (slash)
      wb_add(&w, u.target, (size_t)(slash - u.target) + 1);
    else
      wb_str(&w, "/");
    wb_str(&w, loc);
  }
  wb_add(&w, "", 1);
  if (w.err) {
    braid__free(w.p);
    return NULL;
  }
  return w.p;
}

/* The TLS context for https hosts: the caller's (o.client.tls) or, at the first https request,
 * one with braid_tls_opts_init()'s defaults (system CAs, host-name verification on).
 * Returns 0, BRAID_ENOTSUP (a build without TLS), or braid_tls_ctx_new()'s error. */
static int client_tls(braid_http_client_t *cl) {
  if (cl->tls)
    return 0;
  if (!braid_tls_available())
    return BRAID_ENOTSUP;
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  return braid_tls_ctx_new(&cl->tls, &o, NULL);
}

/* Sends r again to its Location (RFC 9110 section 15.4 for the method). Returns 0 (queued),
 * or an error to finish r with. */
static int req_redirect(braid_http_client_req_t *r) {
  char *next = resolve_location(r->url, r->location);
  if (!next)
    return BRAID_EPROTO;
  url_t u;
  int rc = url_parse(next, &u);
  if (rc == 0 && u.tls)
    rc = client_tls(r->cl);
  if (rc) {
    braid__free(next);
    return rc == BRAID_ENOTSUP ? rc : BRAID_EPROTO;
  }
  int st = r->http_status;
  if ((st == 303 && strcmp(r->method, "HEAD") != 0) ||
      ((st == 301 || st == 302) && strcmp(r->method, "POST") == 0)) {
    strcpy(r->method, "GET");
    braid__free(r->body);
    r->body = NULL;
    r->body_len = 0;
  }
  r->is_head = strcmp(r->method, "HEAD") == 0;
  r->idempotent = method_idempotent(r->method);
  host_t *h = host_find(r->cl, u.host, u.port, u.tls, true);
  if (!h) {
    braid__free(next);
    return BRAID_ENOMEM;
  }
  braid__free(r->url);
  r->url = next;
  rc = req_build(r, &u);
  if (rc)
    return rc;
  r->redirects++;
  r->cl->st.redirects++;
  r->host = h;
  r->fresh = false;
  r->http_status = 0;
  r->http_version = 0;
  r->blen = 0;
  r->decoded = 0;
  braid_gzip_stream_free(r->gz);
  r->gz = NULL;
  r->phase = BRAID_HTTP_PHASE_CONNECT;
  r->state = RQ_QUEUED;
  braid__list_push_back(&h->queue, &r->node);
  h->nqueue++;
  r->cl->nqueued++;
  r->connect_deadline = r->o.connect_timeout_ms ? now_ms(r->cl) + r->o.connect_timeout_ms : 0;
  req_timer_arm(r);
  host_dispatch(h);
  return 0;
}

/* ---- public: client -------------------------------------------------------------------- */

int braid_http_client_new(braid_http_client_t **out, braid_loop_t *loop,
                          const braid_http_client_opts_t *o) {
  braid_http_client_opts_t def;
  if (!out || !loop)
    return BRAID_EINVAL;
  if (!o) {
    braid_http_client_opts_init(&def);
    o = &def;
  }
  braid_opts_error_t err;
  if (braid_http_client_opts_validate(o, &err)) {
    braid__opts_log(loop, "braid_http_client_new", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_http_client_t *cl = braid__calloc(1, sizeof(*cl));
  if (!cl)
    return BRAID_ENOMEM;
  cl->loop = loop;
  cl->o = *o;
  if (o->user_agent && !(cl->user_agent = dup_str(o->user_agent))) {
    braid__free(cl);
    return BRAID_ENOMEM;
  }
  cl->o.user_agent = cl->user_agent;
  if (o->client.tls) { /* ours for https hosts; plain hosts connect without it */
    braid__tls_ctx_ref(o->client.tls);
    cl->tls = o->client.tls;
  }
  braid__list_init(&cl->hosts);
  braid__list_init(&cl->idle_lru);
  uv_timer_init(braid_loop_uv(loop), &cl->close_timer);
  braid__loop_ref(loop);
  *out = cl;
  return 0;
}

void braid_http_client_set_data(braid_http_client_t *client, void *data) {
  client->data = data;
}

void *braid_http_client_get_data(const braid_http_client_t *client) {
  return client->data;
}

int braid_http_client_pipeline(braid_http_client_t *client, const char *host, int port,
                               unsigned depth) {
  if (!client || !host || port < 1 || port > 65535 || depth < 1 || depth > 1024)
    return BRAID_EINVAL;
  char name[256];
  size_t n = strlen(host);
  if (n >= sizeof(name))
    return BRAID_EINVAL;
  /* accept "[::1]" as written in URLs */
  if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
    memcpy(name, host + 1, n - 2);
    name[n - 2] = '\0';
  } else {
    memcpy(name, host, n + 1);
  }
  host_t *h = host_find(client, name, port, false, true);
  if (!h)
    return BRAID_ENOMEM;
  h->depth = depth;
  return 0;
}

void braid_http_client_stats(const braid_http_client_t *client, braid_http_client_stats_t *out) {
  *out = client->st;
  out->queued = client->nqueued;
}

static void close_timer_closed(uv_handle_t *h) {
  braid_http_client_t *cl = BRAID__CONTAINER_OF(h, braid_http_client_t, close_timer);
  while (!braid__list_empty(&cl->hosts)) {
    host_t *ho = BRAID__CONTAINER_OF(cl->hosts.next, host_t, node);
    braid__list_remove(&ho->node);
    braid__free(ho->name);
    braid__free(ho);
  }
  braid_loop_t *loop = cl->loop;
  if (cl->close_cb)
    cl->close_cb(cl, 0, cl->close_arg);
  braid__free(cl->user_agent);
  braid_tls_ctx_free(cl->tls);
  braid__free(cl);
  braid__loop_unref(loop);
}

static void close_timer_fire(uv_timer_t *t) {
  braid_http_client_t *cl = BRAID__CONTAINER_OF(t, braid_http_client_t, close_timer);
  if (cl->live == 0 && !uv_is_closing((uv_handle_t *)t))
    uv_close((uv_handle_t *)t, close_timer_closed);
}

static void client_maybe_done(braid_http_client_t *cl) {
  if (cl->closing && cl->live == 0 && !uv_is_closing((uv_handle_t *)&cl->close_timer))
    uv_timer_start(&cl->close_timer, close_timer_fire, 0, 0);
}

int braid_http_client_close(braid_http_client_t *client, braid_http_client_close_cb cb,
                            void *arg) {
  if (!client)
    return BRAID_EINVAL;
  if (client->closing)
    return BRAID_ECLOSED;
  braid_http_client_t *cl = client;
  cl->closing = true;
  cl->close_cb = cb;
  cl->close_arg = arg;
  for (braid__node_t *n = cl->hosts.next; n != &cl->hosts; n = n->next) {
    host_t *h = BRAID__CONTAINER_OF(n, host_t, node);
    while (!braid__list_empty(&h->queue)) {
      braid_http_client_req_t *r =
          BRAID__CONTAINER_OF(h->queue.next, braid_http_client_req_t, node);
      req_end(r, BRAID_ECANCELED);
    }
    braid__node_t *lists[2] = {&h->idle, &h->busy};
    for (int i = 0; i < 2; i++) {
      for (braid__node_t *m = lists[i]->next; m != lists[i];) {
        hconn_t *hc = BRAID__CONTAINER_OF(m, hconn_t, node);
        m = m->next;
        while (!braid__list_empty(&hc->inflight)) {
          braid_http_client_req_t *r =
              BRAID__CONTAINER_OF(hc->inflight.next, braid_http_client_req_t, node);
          req_end(r, BRAID_ECANCELED);
        }
        if (hc->creq)
          braid_connect_cancel(hc->creq);
        else
          hc_close(hc, BRAID_ECANCELED);
      }
    }
  }
  client_maybe_done(cl);
  return 0;
}

/* ---- public: requests ------------------------------------------------------------------ */

int braid_http_client_request(braid_http_client_req_t **out, braid_http_client_t *client,
                              const char *method, const char *url,
                              const braid_http_header_t *headers, size_t nheaders,
                              const void *body, size_t body_len,
                              const braid_http_client_req_opts_t *o,
                              braid_http_client_response_cb cb, braid_http_client_body_cb body_cb,
                              void *arg) {
  if (!client || !cb || !url || (nheaders && !headers) || (body_len && !body))
    return BRAID_EINVAL;
  if (!method)
    method = "GET";
  if (strlen(method) >= sizeof(((braid_http_client_req_t *)0)->method) || !is_token(method))
    return BRAID_EINVAL;
  if (!o)
    o = &client->o.req;
  else if (braid_http_client_req_opts_validate(o, NULL))
    return BRAID_EINVAL;
  if (!body_cb && o->max_body_bytes == 0)
    return BRAID_EINVAL;
  url_t u;
  if (url_parse(url, &u))
    return BRAID_EINVAL;
  if (u.tls) {
    int trc = client_tls(client);
    if (trc) {
      braid__log(client->loop, BRAID_LOG_ERROR, "braid_http_client_request: %s: %s", url,
                 trc == BRAID_ENOTSUP ? "https is not supported in this build (no TLS)"
                                      : braid_strerror(trc));
      return trc;
    }
  }
  size_t uhlen = 0;
  for (size_t i = 0; i < nheaders; i++) {
    const char *nm = headers[i].name, *v = headers[i].value;
    if (!nm || !v || !is_token(nm) || strpbrk(v, "\r\n") || !strcasecmp(nm, "Content-Length") ||
        !strcasecmp(nm, "Transfer-Encoding") || !strcasecmp(nm, "Connection"))
      return BRAID_EINVAL;
    uhlen += strlen(nm) + strlen(v) + 2;
  }
  if (client->closing)
    return BRAID_ECLOSED;
  if (client->nqueued >= client->o.max_queued)
    return BRAID_EPOOLFULL;
  braid_http_client_req_t *r = braid__calloc(1, sizeof(*r));
  if (!r)
    return BRAID_ENOMEM;
  r->cl = client;
  r->o = *o;
  r->cb = cb;
  r->body_cb = body_cb;
  r->arg = arg;
  strcpy(r->method, method);
  r->idempotent = method_idempotent(method);
  r->is_head = strcmp(method, "HEAD") == 0;
  int rc = BRAID_ENOMEM;
  if (!(r->url = dup_str(url)))
    goto fail;
  if (uhlen && !(r->uhbuf = braid__malloc(uhlen)))
    goto fail;
  char *p = r->uhbuf;
  for (size_t i = 0; i < nheaders; i++) {
    size_t a = strlen(headers[i].name) + 1, b = strlen(headers[i].value) + 1;
    memcpy(p, headers[i].name, a);
    memcpy(p + a, headers[i].value, b);
    p += a + b;
  }
  r->uhlen = uhlen;
  r->nuh = nheaders;
  if (body_len) {
    if (!(r->body = braid__malloc(body_len)))
      goto fail;
    memcpy(r->body, body, body_len);
    r->body_len = body_len;
  }
  if ((rc = req_build(r, &u)) != 0)
    goto fail;
  rc = BRAID_ENOMEM;
  host_t *h = host_find(client, u.host, u.port, u.tls, true);
  if (!h)
    goto fail;
  r->host = h;
  uv_timer_init(braid_loop_uv(client->loop), &r->timer);
  client->live++;
  r->t0_us = uv_hrtime() / 1000;
  uint64_t now = now_ms(client);
  r->connect_deadline = o->connect_timeout_ms ? now + o->connect_timeout_ms : 0;
  r->total_deadline = o->total_timeout_ms ? now + o->total_timeout_ms : 0;
  r->phase = BRAID_HTTP_PHASE_CONNECT;
  r->state = RQ_QUEUED;
  braid__list_push_back(&h->queue, &r->node);
  h->nqueue++;
  client->nqueued++;
  client->st.requests++;
  req_timer_arm(r);
  host_dispatch(h);
  if (out)
    *out = r;
  return 0;
fail:
  braid__free(r->url);
  braid__free(r->uhbuf);
  braid__free(r->body);
  braid__free(r->wire);
  braid__free(r);
  return rc;
}

int braid_http_client_get(braid_http_client_req_t **out, braid_http_client_t *client,
                          const char *url, braid_http_client_response_cb cb, void *arg) {
  return braid_http_client_request(out, client, "GET", url, NULL, 0, NULL, 0, NULL, cb, NULL,
                                   arg);
}

int braid_http_client_req_pause(braid_http_client_req_t *req) {
  if (!req || req->state == RQ_DONE || !req->body_cb)
    return BRAID_EINVAL;
  req->paused = true;
  return 0;
}

int braid_http_client_req_resume(braid_http_client_req_t *req) {
  if (!req || req->state == RQ_DONE || !req->body_cb)
    return BRAID_EINVAL;
  if (!req->paused)
    return 0;
  req->paused = false;
  hconn_t *hc = req->hc;
  if (hc && !hc->closing && hc_head(hc) == req &&
      (hc->reading_paused || req->zpend || req->zmore)) {
    hc->resume_pending = true;
    uv_timer_start(&hc->timer, hc_on_timer, 0, 0);
  }
  return 0;
}

int braid_http_client_req_cancel(braid_http_client_req_t *req) {
  if (!req || req->state == RQ_DONE)
    return BRAID_EINVAL;
  if (req->state == RQ_LIMBO)
    return 0; /* its end is already on the way */
  hconn_t *hc = req->state == RQ_INFLIGHT ? req->hc : NULL;
  req_end(req, BRAID_ECANCELED);
  if (hc)
    hc_close(hc, BRAID_ECANCELED);
  return 0;
}
