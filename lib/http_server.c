/* HTTP/1.1 server on braid connections (see braid/http.h).
 *
 * One hconn per served connection feeds what it reads to the parser seam (http_parser.h)
 * and keeps its requests in a FIFO in arrival order. The request at the head writes its
 * response straight to the connection; a later one, whose handler finished first, holds its
 * output in a buffer of its own until every earlier response is complete, so responses leave
 * in request order (pipelining). Parsing stops (the rest of the read is kept in a small
 * stash, and reading stops) when max_pipelined requests are in flight, when the connection's
 * queued output is over its high watermark, when a streamed body's reader pauses, and when a
 * streaming handler has not yet said it will read the body; it resumes from the loop (a
 * flush task), never from inside a call the user made.
 *
 * Timeouts: one timer per (server, loop) ticks while connections are open and walks three
 * lists, one per timeout (header, body, keep-alive). Each list holds connections in order of
 * their deadline because every entry of a list has the same duration, so a tick only looks
 * at the heads and entering or leaving a list is O(1): no timer per connection and no heap
 * operation per request.
 *
 * A request is freed when the parser is done with it, it has left the FIFO (its response is
 * on the connection), and its handler has answered; a request whose connection closed while
 * its handler was still working is an orphan that keeps the loop alive until the answer. */
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "braid/http.h"
#include "http_parser.h"
#include "internal.h"

#define HTTP_STASH_MAX (BRAID__READ_BUF_SIZE)
#define ZBUF_SIZE (16 * 1024)

typedef struct route_s {
  char *method; /* NULL: any */
  char *path;
  size_t path_len;
  unsigned flags;
  braid_http_handler_cb cb;
  void *arg;
} route_t;

/* Per (server, loop): the timeout lists and timer, the date string, compressors, stats. */
typedef struct ctx_s {
  braid_http_server_t *srv;
  braid_loop_t *loop;
  uv_timer_t *timer;
  /* ka_idle_list: keep-alive connections idle for KA_TRIM_MS, their spare request freed. */
  braid__node_t header_list, body_list, ka_list, ka_idle_list;
  braid__node_t conns;
  unsigned nconns;          /* this loop's own count */
  atomic_uint nconns_shared; /* the same, for other threads (stats, close) */
  char date[64];
  size_t date_len;
  uint64_t date_sec;
  braid_gzip_t *gz[2]; /* one-shot compressors: gzip, zlib (HTTP's deflate) */
  braid_gzip_t *gunzip;
  /* stats: written by this loop only (relaxed load+store), read by anyone */
  atomic_uint_fast64_t connections, requests, status[6], ka_reuse, bytes_in, body_bytes,
      body_bytes_sent, compressed, bad_requests, timeouts, cache_hits;
  uv_mutex_t hist_mu;
  braid_histogram_t hist;
} ctx_t;

struct braid_http_server_s {
  braid_loop_t *loop;
  braid_http_server_opts_t opts;
  char *server_name;
  route_t *routes;
  size_t nroutes;
  uv_mutex_t mu; /* guards ctxs */
  ctx_t **ctxs;
  size_t nctxs;
  void *data;
  bool finished;
  atomic_bool closing; /* read by worker loops in serve */
  uv_timer_t *close_timer; /* runs the close's end from the loop (and keeps it alive) */
  void *statics;           /* static-file roots (http_static.c) */
  braid_http_server_close_cb close_cb;
  void *close_arg;
  uint64_t tick_ms;
};

typedef struct hconn_s hconn_t;

enum body_mode { BODY_NONE, BODY_BUFFER, BODY_STREAM, BODY_DISCARD };
enum res_state { RES_NONE, RES_STREAMING, RES_DONE };
enum { ENC_NONE = 0, ENC_GZIP = 1, ENC_DEFLATE = 2 };

typedef struct hdr_s {
  uint32_t name_off, value_off;
} hdr_t;

/* How long a keep-alive connection stays idle before it frees its spare request. */
#define KA_TRIM_MS 1000

struct braid_http_req_s {
  hconn_t *hc; /* NULL once the connection closed (orphan) */
  braid_loop_t *loop;
  braid__node_t qnode;
  bool queued, parsing, user; /* references: FIFO, parser, handler not answered */
  bool orphan_ref;            /* counted on the loop as an orphan */
  unsigned pin;               /* held across a user callback that may finish it */
  bool eof_pending;           /* read_body after the body was complete: BRAID_EOF to send */

  /* request */
  const char *method;
  uint8_t minor;
  bool keep_alive, is_head, headers_done, upgrade;
  char *hbuf; /* target, then name\0value\0 pairs */
  size_t hlen, hcap;
  uint32_t path_len, query_off; /* the target starts at 0 */
  size_t target_len;
  hdr_t *hdrs;
  unsigned nhdrs, hdr_cap;
  int hstate; /* 0 none, 1 in a name, 2 in a value */
  size_t header_bytes;
  const route_t *route;
  uint64_t start_ns;

  /* body */
  uint8_t body_mode;
  bool has_body, body_complete, expect_continue, continue_sent, body_paused, body_ended;
  uint8_t req_encoding;
  uint64_t body_in;  /* bytes received as sent */
  uint64_t body_out; /* bytes after decoding */
  char *body;
  size_t body_len, body_cap;
  braid_gzip_stream_t *unzip;
  braid_http_body_cb body_cb;
  void *body_arg;

  /* response */
  uint8_t res_state;
  int status;
  bool res_close, res_no_body, res_chunked, res_eof_delimited, res_broken;
  uint8_t res_encoding;
  uint8_t precompressed; /* the body given is already in this encoding (a cached variant) */
  int64_t res_remaining; /* Content-Length mode: bytes still owed; -1 otherwise */
  braid_gzip_stream_t *zip;
  char *held;
  size_t held_len, held_cap;
  braid_http_writable_cb wcb;
  void *warg;
  bool wait_writable, notify_writable;
  uint64_t res_body_bytes, res_sent_bytes;

  void *data;
};

struct hconn_s {
  braid_conn_t *conn;
  ctx_t *ctx;
  braid__hp_t *hp;
  braid__node_t cnode; /* in ctx->conns */
  braid__node_t tnode; /* in one of ctx's timeout lists, or unlinked */
  braid__node_t *tlist;
  uint64_t deadline;
  braid__node_t queue;
  unsigned nqueue;
  braid_http_req_t *cur;   /* being parsed */
  braid_http_req_t *spare; /* a finished request kept for reuse */
  char *stash;
  size_t stash_len;
  unsigned requests;
  int error_status; /* set by a parser callback that refuses the request */
  unsigned in_parse;
  bool paused;      /* parsing stopped; input in stash; not reading */
  bool closing;     /* braid_conn_close called or the connection failed */
  bool no_more;     /* no request after the current ones (close after them) */
  bool draining, peer_eof, above_wm, task_queued, marker_pending;
  braid__flush_t task;
};

static const braid__hp_callbacks_t hp_cbs;
static void hc_schedule(hconn_t *hc);
static void hc_close(hconn_t *hc);
static void req_maybe_free(braid_http_req_t *req);
static void hc_advance(hconn_t *hc);
static void hc_update_timer(hconn_t *hc);

/* ---- small helpers -------------------------------------------------------------------- */

static inline void stat_add(atomic_uint_fast64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = braid__malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

static int grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 256;
  while (n < need)
    n *= 2;
  char *b = braid__realloc(*buf, n);
  if (!b)
    return BRAID_ENOMEM;
  *buf = b;
  *cap = n;
  return 0;
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

/* ---- options -------------------------------------------------------------------------- */

void braid_http_server_opts_init(braid_http_server_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->max_target_bytes = 8192;
  o->max_header_bytes = 16384;
  o->max_headers = 100;
  o->max_body_bytes = 1 << 20;
  o->max_pipelined = 16;
  o->keepalive_requests = 1000;
  o->header_timeout_ms = 60000;
  o->keepalive_timeout_ms = 75000;
  o->body_timeout_ms = 60000;
  o->compress = 1;
  o->compress_min_bytes = 1024;
  o->compress_level = 6;
  o->decode_max_ratio = 200;
  o->held_high_bytes = 1 << 20;
  o->server_name = "braid";
}

int braid_http_server_opts_validate(const braid_http_server_opts_t *o, braid_opts_error_t *err) {
  const char *w = NULL;
  if (!o)
    w = "opts: must not be NULL";
  else if (o->max_target_bytes < 64 || o->max_target_bytes > (1 << 20))
    w = "max_target_bytes: must be 64..1048576";
  else if (o->max_header_bytes < 256 || o->max_header_bytes > (4 << 20))
    w = "max_header_bytes: must be 256..4194304";
  else if (o->max_headers < 1 || o->max_headers > 10000)
    w = "max_headers: must be 1..10000";
  else if (o->max_body_bytes > (UINT64_C(1) << 40))
    w = "max_body_bytes: must be at most 2^40";
  else if (o->max_pipelined < 1 || o->max_pipelined > 1024)
    w = "max_pipelined: must be 1..1024";
  else if (o->keepalive_requests > (1u << 30))
    w = "keepalive_requests: must be at most 2^30";
  else if (o->header_timeout_ms > BRAID__MS_MAX)
    w = "header_timeout_ms: must be at most 2^31";
  else if (o->keepalive_timeout_ms > BRAID__MS_MAX)
    w = "keepalive_timeout_ms: must be at most 2^31";
  else if (o->body_timeout_ms > BRAID__MS_MAX)
    w = "body_timeout_ms: must be at most 2^31";
  else if (o->compress != 0 && o->compress != 1)
    w = "compress: must be 0 or 1";
  else if (o->compress_min_bytes > (1u << 30))
    w = "compress_min_bytes: must be at most 2^30";
  else if (o->compress_level < 1 || o->compress_level > 9)
    w = "compress_level: must be 1..9";
  else if (o->held_high_bytes < 4096 || o->held_high_bytes > (1u << 30))
    w = "held_high_bytes: must be 4096..2^30";
  else if (o->server_name && (strpbrk(o->server_name, "\r\n") || strlen(o->server_name) > 256))
    w = "server_name: must be at most 256 bytes without CR or LF";
  if (!w) {
    braid__opts_ok(err);
    return 0;
  }
  /* w is "field: reason" */
  const char *colon = strchr(w, ':');
  char field[64];
  size_t fl = (size_t)(colon - w);
  if (fl >= sizeof(field))
    fl = sizeof(field) - 1;
  memcpy(field, w, fl);
  field[fl] = '\0';
  return braid__opts_fail(err, field, "%s", colon + 2);
}

/* ---- server --------------------------------------------------------------------------- */

int braid_http_server_new(braid_http_server_t **out, braid_loop_t *loop,
                          const braid_http_server_opts_t *o) {
  braid_http_server_opts_t def;
  if (!out || !loop)
    return BRAID_EINVAL;
  if (!o) {
    braid_http_server_opts_init(&def);
    o = &def;
  }
  braid_opts_error_t err;
  if (braid_http_server_opts_validate(o, &err)) {
    braid__opts_log(loop, "braid_http_server_new", &err);
    return BRAID_EINVAL;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  braid_http_server_t *s = braid__calloc(1, sizeof(*s));
  if (!s)
    return BRAID_ENOMEM;
  s->loop = loop;
  s->opts = *o;
  if (o->server_name && !(s->server_name = dup_str(o->server_name))) {
    braid__free(s);
    return BRAID_ENOMEM;
  }
  s->opts.server_name = s->server_name;
  if (uv_mutex_init(&s->mu)) {
    braid__free(s->server_name);
    braid__free(s);
    return BRAID_ENOMEM;
  }
  /* The tick: a quarter of the shortest timeout, between 10 ms and 1 s. */
  uint64_t m = UINT64_MAX;
  if (o->header_timeout_ms)
    m = o->header_timeout_ms;
  if (o->body_timeout_ms && o->body_timeout_ms < m)
    m = o->body_timeout_ms;
  if (o->keepalive_timeout_ms && o->keepalive_timeout_ms < m)
    m = o->keepalive_timeout_ms;
  m = m == UINT64_MAX ? 1000 : m / 4;
  s->tick_ms = m < 10 ? 10 : m > 1000 ? 1000 : m;
  braid__loop_ref(loop);
  *out = s;
  return 0;
}

void braid_http_server_set_data(braid_http_server_t *server, void *data) {
  server->data = data;
}

void *braid_http_server_get_data(const braid_http_server_t *server) {
  return server->data;
}

int braid_http_server_route(braid_http_server_t *s, const char *method, const char *path,
                            unsigned flags, braid_http_handler_cb handler, void *arg) {
  if (!s || !path || path[0] != '/' || !handler ||
      (flags & ~(unsigned)(BRAID_HTTP_PREFIX | BRAID_HTTP_STREAM_BODY)))
    return BRAID_EINVAL;
  route_t *r = braid__realloc(s->routes, (s->nroutes + 1) * sizeof(*r));
  if (!r)
    return BRAID_ENOMEM;
  s->routes = r;
  route_t *n = &r[s->nroutes];
  memset(n, 0, sizeof(*n));
  n->path = dup_str(path);
  n->method = method ? dup_str(method) : NULL;
  if (!n->path || (method && !n->method)) {
    braid__free(n->path);
    braid__free(n->method);
    return BRAID_ENOMEM;
  }
  n->path_len = strlen(path);
  n->flags = flags;
  n->cb = handler;
  n->arg = arg;
  s->nroutes++;
  return 0;
}

static bool method_matches(const route_t *r, const char *method) {
  if (!r->method)
    return true;
  if (strcmp(r->method, method) == 0)
    return true;
  return strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0;
}

/* Finds the route for path and method; *path_known says whether any route has the path. */
static const route_t *find_route(const braid_http_server_t *s, const char *path, size_t len,
                                 const char *method, bool *path_known) {
  const route_t *best = NULL;
  size_t best_len = 0;
  bool best_exact = false;
  *path_known = false;
  for (size_t i = 0; i < s->nroutes; i++) {
    const route_t *r = &s->routes[i];
    bool exact = r->path_len == len && memcmp(r->path, path, len) == 0;
    bool prefix = (r->flags & BRAID_HTTP_PREFIX) && r->path_len <= len &&
                  memcmp(r->path, path, r->path_len) == 0;
    if (!exact && !prefix)
      continue;
    if (r->flags & BRAID_HTTP_PREFIX)
      exact = false;
    *path_known = true;
    if (!method_matches(r, method))
      continue;
    if (!best || (exact && !best_exact) || (!exact && !best_exact && r->path_len > best_len)) {
      best = r;
      best_len = r->path_len;
      best_exact = exact;
    }
  }
  return best;
}

/* The methods routed for path, for a 405's Allow header. */
static void allowed_methods(const braid_http_server_t *s, const char *path, size_t len, char *out,
                            size_t cap) {
  size_t n = 0;
  out[0] = 0;
  bool any = false;
  for (size_t i = 0; i < s->nroutes; i++) {
    const route_t *r = &s->routes[i];
    bool match = (r->path_len == len && memcmp(r->path, path, len) == 0) ||
                 ((r->flags & BRAID_HTTP_PREFIX) && r->path_len <= len &&
                  memcmp(r->path, path, r->path_len) == 0);
    if (!match || !r->method)
      continue;
    if (strstr(out, r->method))
      continue;
    int w = snprintf(out + n, cap - n, "%s%s", any ? ", " : "", r->method);
    if (w < 0 || (size_t)w >= cap - n)
      break;
    n += (size_t)w;
    any = true;
    if (strcmp(r->method, "GET") == 0 && !strstr(out, "HEAD")) {
      w = snprintf(out + n, cap - n, ", HEAD");
      if (w > 0 && (size_t)w < cap - n)
        n += (size_t)w;
    }
  }
}

/* ---- per-loop context ----------------------------------------------------------------- */

static void ctx_free(ctx_t *c) {
  braid_gzip_free(c->gz[0]);
  braid_gzip_free(c->gz[1]);
  braid_gzip_free(c->gunzip);
  uv_mutex_destroy(&c->hist_mu);
  braid__free(c);
}

static ctx_t *ctx_get(braid_http_server_t *s, braid_loop_t *loop) {
  ctx_t *found = NULL;
  uv_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nctxs; i++)
    if (s->ctxs[i]->loop == loop)
      found = s->ctxs[i];
  if (!found) {
    ctx_t **a = braid__realloc(s->ctxs, (s->nctxs + 1) * sizeof(*a));
    ctx_t *c = a ? braid__calloc(1, sizeof(*c)) : NULL;
    if (a)
      s->ctxs = a;
    if (c && uv_mutex_init(&c->hist_mu) == 0) {
      c->srv = s;
      c->loop = loop;
      braid__list_init(&c->header_list);
      braid__list_init(&c->body_list);
      braid__list_init(&c->ka_list);
      braid__list_init(&c->ka_idle_list);
      braid__list_init(&c->conns);
      s->ctxs[s->nctxs++] = c;
      found = c;
    } else {
      braid__free(c);
    }
  }
  uv_mutex_unlock(&s->mu);
  return found;
}

static void on_timer_closed(uv_handle_t *h) {
  braid__free(h);
}

static void on_tick(uv_timer_t *t);

static int ctx_attach(ctx_t *c) {
  if (!c->timer && (c->srv->opts.header_timeout_ms || c->srv->opts.body_timeout_ms ||
                    c->srv->opts.keepalive_timeout_ms)) {
    c->timer = braid__malloc(sizeof(*c->timer));
    if (!c->timer)
      return BRAID_ENOMEM;
    uv_timer_init(braid_loop_uv(c->loop), c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, on_tick, c->srv->tick_ms, c->srv->tick_ms);
    uv_unref((uv_handle_t *)c->timer);
  }
  c->nconns++;
  atomic_fetch_add_explicit(&c->nconns_shared, 1, memory_order_relaxed);
  stat_add(&c->connections, 1);
  return 0;
}

static void ctx_detach(ctx_t *c) {
  atomic_fetch_sub_explicit(&c->nconns_shared, 1, memory_order_relaxed);
  if (--c->nconns == 0 && c->timer) {
    /* Nothing of the server stays open on a loop without connections (a worker's loop
     * must be able to finish). */
    uv_close((uv_handle_t *)c->timer, on_timer_closed);
    c->timer = NULL;
  }
}

static void ctx_date(ctx_t *c) {
  uint64_t sec = braid__now(c->loop) / 1000;
  if (c->date_len && sec == c->date_sec)
    return;
  c->date_sec = sec;
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  c->date_len = strftime(c->date, sizeof(c->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---- timeouts -------------------------------------------------------------------------- */

static void timer_leave(hconn_t *hc) {
  if (hc->tlist) {
    braid__list_remove(&hc->tnode);
    hc->tlist = NULL;
  }
}

static void timer_enter(hconn_t *hc, braid__node_t *list, uint64_t timeout_ms) {
  timer_leave(hc);
  if (!timeout_ms)
    return;
  hc->deadline = braid__now(hc->ctx->loop) + timeout_ms;
  hc->tlist = list;
  braid__list_push_back(list, &hc->tnode);
}

static void respond_error(hconn_t *hc, braid_http_req_t *req, int status);

static void on_timeout(hconn_t *hc) {
  stat_add(&hc->ctx->timeouts, 1);
  braid_http_req_t *head =
      braid__list_empty(&hc->queue)
          ? NULL
          : BRAID__CONTAINER_OF(hc->queue.next, braid_http_req_t, qnode);
  /* A request cut short by the timeout gets 408 when nothing is ahead of it. */
  if (hc->cur && head == hc->cur && hc->cur->res_state == RES_NONE && !hc->cur->user) {
    respond_error(hc, hc->cur, 408);
    return;
  }
  hc_close(hc);
}

static void sweep(braid__node_t *list, uint64_t now) {
  while (!braid__list_empty(list)) {
    hconn_t *hc = BRAID__CONTAINER_OF(list->next, hconn_t, tnode);
    if (hc->deadline > now)
      break;
    timer_leave(hc);
    on_timeout(hc);
  }
}

static void req_release_memory(braid_http_req_t *r);

/* A keep-alive connection idle for KA_TRIM_MS gives back the spare request it keeps for its
 * next one (about 760 bytes with its header buffers), so that thousands of idle connections
 * cost their connection, HTTP state and parser only. It moves to ka_idle_list with its
 * deadline; taken from ka_list's head, oldest first, it keeps that list in deadline order. */
static void trim_idle(ctx_t *c, uint64_t now) {
  uint64_t ka = c->srv->opts.keepalive_timeout_ms;
  while (!braid__list_empty(&c->ka_list)) {
    hconn_t *hc = BRAID__CONTAINER_OF(c->ka_list.next, hconn_t, tnode);
    if (hc->deadline + KA_TRIM_MS > now + ka) /* idle for less than KA_TRIM_MS */
      break;
    braid__list_remove(&hc->tnode);
    braid__list_push_back(&c->ka_idle_list, &hc->tnode);
    hc->tlist = &c->ka_idle_list;
    if (hc->spare) {
      req_release_memory(hc->spare);
      hc->spare = NULL;
    }
  }
}

static void on_tick(uv_timer_t *t) {
  ctx_t *c = t->data;
  uint64_t now = braid__now(c->loop);
  sweep(&c->header_list, now);
  sweep(&c->body_list, now);
  sweep(&c->ka_list, now);
  sweep(&c->ka_idle_list, now);
  trim_idle(c, now);
}

/* Puts hc in the list for what it waits for now. */
static void hc_update_timer(hconn_t *hc) {
  const braid_http_server_opts_t *o = &hc->ctx->srv->opts;
  if (hc->closing) {
    timer_leave(hc);
    return;
  }
  braid_http_req_t *cur = hc->cur;
  if (cur && !cur->headers_done) {
    if (hc->tlist != &hc->ctx->header_list)
      timer_enter(hc, &hc->ctx->header_list, o->header_timeout_ms);
  } else if (cur && cur->has_body && !cur->body_complete && !cur->body_paused &&
             !(hc->paused && cur->body_mode == BODY_STREAM && !cur->body_cb)) {
    if (hc->tlist != &hc->ctx->body_list)
      timer_enter(hc, &hc->ctx->body_list, o->body_timeout_ms);
  } else if (!cur && hc->nqueue == 0 && !hc->no_more) {
    braid__node_t *l = hc->requests ? &hc->ctx->ka_list : &hc->ctx->header_list;
    if (hc->tlist != l && !(l == &hc->ctx->ka_list && hc->tlist == &hc->ctx->ka_idle_list))
      timer_enter(hc, l, hc->requests ? o->keepalive_timeout_ms : o->header_timeout_ms);
  } else {
    timer_leave(hc);
  }
}

/* Body bytes arrived: the body deadline starts again (move to the list's tail). */
static void timer_touch_body(hconn_t *hc) {
  if (hc->tlist == &hc->ctx->body_list)
    timer_enter(hc, &hc->ctx->body_list, hc->ctx->srv->opts.body_timeout_ms);
}

/* ---- requests -------------------------------------------------------------------------- */

static braid_http_req_t *req_new(hconn_t *hc) {
  braid_http_req_t *r = hc->spare;
  if (r) {
    hc->spare = NULL;
    char *hbuf = r->hbuf, *body = r->body;
    size_t hcap = r->hcap, bcap = r->body_cap;
    hdr_t *hdrs = r->hdrs;
    unsigned hdr_cap = r->hdr_cap;
    memset(r, 0, sizeof(*r));
    r->hbuf = hbuf;
    r->hcap = hcap;
    r->body = body;
    r->body_cap = bcap;
    r->hdrs = hdrs;
    r->hdr_cap = hdr_cap;
  } else {
    r = braid__calloc(1, sizeof(*r));
    if (!r)
      return NULL;
  }
  r->hc = hc;
  r->loop = hc->ctx->loop;
  r->res_remaining = -1;
  return r;
}

static void req_release_memory(braid_http_req_t *r) {
  braid__free(r->hbuf);
  braid__free(r->hdrs);
  braid__free(r->body);
  braid__free(r->held);
  braid_gzip_stream_free(r->zip);
  braid_gzip_stream_free(r->unzip);
  braid__free(r);
}

static void req_maybe_free(braid_http_req_t *r) {
  if (r->queued || r->parsing || r->user || r->pin)
    return;
  if (r->orphan_ref)
    braid__loop_unref(r->loop);
  hconn_t *hc = r->hc;
  /* Keep one request, with its header buffers, for the next request on this connection (no
   * allocation per request), unless they grew large; never a body buffer: an idle
   * keep-alive connection should cost little (bodies are rarer, and copied anyway). */
  if (hc && !hc->spare && r->hcap <= 2048 && !r->held && !r->zip && !r->unzip) {
    braid__free(r->body);
    r->body = NULL;
    r->body_cap = 0;
    hc->spare = r;
    return;
  }
  req_release_memory(r);
}

static int req_append(braid_http_req_t *r, const char *at, size_t len) {
  if (grow(&r->hbuf, &r->hcap, r->hlen + len + 1))
    return BRAID_ENOMEM;
  memcpy(r->hbuf + r->hlen, at, len);
  r->hlen += len;
  return 0;
}

static braid_http_req_t *queue_head(hconn_t *hc) {
  return braid__list_empty(&hc->queue) ? NULL
                                       : BRAID__CONTAINER_OF(hc->queue.next, braid_http_req_t, qnode);
}

/* ---- output ------------------------------------------------------------------------------ */

/* Sends bytes of req's response: straight to the connection when req is at the head of the
 * FIFO, else into its held buffer. */
static int req_out(braid_http_req_t *r, const void *data, size_t len) {
  hconn_t *hc = r->hc;
  if (!hc || hc->closing)
    return BRAID_ECLOSED;
  if (queue_head(hc) == r && !r->held_len)
    return braid_conn_write(hc->conn, data, len, NULL, NULL);
  size_t cap_max = hc->ctx->srv->opts.held_high_bytes * 64;
  if (r->held_len + len > cap_max)
    return BRAID_EQUEUEFULL;
  if (grow(&r->held, &r->held_cap, r->held_len + len))
    return BRAID_ENOMEM;
  memcpy(r->held + r->held_len, data, len);
  r->held_len += len;
  return 0;
}

static void on_marker_written(braid_conn_t *conn, int status, void *arg) {
  hconn_t *hc = arg;
  (void)conn;
  hc->marker_pending = false;
  if (status == 0)
    hc_schedule(hc);
}

/* Whether req's producer should pause. The head's producer pauses at the connection's high
 * watermark (told by the watermark callback, which wakes it at the low one), or when the
 * connection's queue holds held_high_bytes (then an empty write queued behind the bytes
 * wakes it when they are all sent). The watermark callback runs later, from the loop, and
 * not at all for a crossing that the flush drains, so a crossing seen through
 * braid_conn_is_writable() before the callback is also woken by the marker. */
static bool req_over_watermark(braid_http_req_t *r) {
  hconn_t *hc = r->hc;
  if (!hc)
    return false;
  if (queue_head(hc) != r)
    return r->held_len >= hc->ctx->srv->opts.held_high_bytes;
  if (hc->above_wm)
    return true;
  braid_conn_stats_t st;
  braid_conn_stats(hc->conn, &st);
  if (braid_conn_is_writable(hc->conn) && st.queued_bytes < hc->ctx->srv->opts.held_high_bytes)
    return false;
  if (!hc->marker_pending) {
    if (braid_conn_write(hc->conn, "", 0, on_marker_written, hc) != 0)
      return false;
    hc->marker_pending = true;
  }
  return true;
}

typedef struct sbuf_s {
  char *p;
  size_t len, cap;
  char stack[1024];
  bool failed;
} sbuf_t;

static void sb_init(sbuf_t *b) {
  b->p = b->stack;
  b->len = 0;
  b->cap = sizeof(b->stack);
  b->failed = false;
}

static void sb_add(sbuf_t *b, const char *s, size_t n) {
  if (b->failed)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap * 2;
    while (cap < b->len + n)
      cap *= 2;
    char *p = braid__malloc(cap);
    if (!p) {
      b->failed = true;
      return;
    }
    memcpy(p, b->p, b->len);
    if (b->p != b->stack)
      braid__free(b->p);
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void sb_str(sbuf_t *b, const char *s) {
  sb_add(b, s, strlen(s));
}

static void sb_free(sbuf_t *b) {
  if (b->p != b->stack)
    braid__free(b->p);
}

/* ---- content negotiation ---------------------------------------------------------------- */

static bool token_eq(const char *a, size_t alen, const char *b) {
  return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* The q-value of one Accept-Encoding element's parameters ("q=0.5"), 1000ths. */
static int parse_q(const char *p, const char *end) {
  while (p < end) {
    while (p < end && (*p == ';' || *p == ' ' || *p == '\t'))
      p++;
    if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
      p += 2;
      int q = 0;
      if (p < end && *p == '1')
        return 1000;
      if (p < end && *p == '0') {
        p++;
        if (p < end && *p == '.') {
          p++;
          int scale = 100;
          while (p < end && *p >= '0' && *p <= '9' && scale > 0) {
            q += (*p - '0') * scale;
            scale /= 10;
            p++;
          }
        }
        return q;
      }
      return 0; /* malformed: treat as not acceptable */
    }
    while (p < end && *p != ';')
      p++;
  }
  return 1000;
}

/* Picks the response encoding from an Accept-Encoding value: gzip preferred at equal q. */
static int negotiate_encoding(const char *ae) {
  if (!ae)
    return ENC_NONE;
  int q_gzip = -1, q_deflate = -1, q_star = -1;
  const char *p = ae;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    const char *tok = p;
    while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
      p++;
    size_t tlen = (size_t)(p - tok);
    const char *params = p;
    while (*p && *p != ',')
      p++;
    if (!tlen)
      continue;
    int q = parse_q(params, p);
    if (token_eq(tok, tlen, "gzip") || token_eq(tok, tlen, "x-gzip"))
      q_gzip = q;
    else if (token_eq(tok, tlen, "deflate"))
      q_deflate = q;
    else if (token_eq(tok, tlen, "*"))
      q_star = q;
  }
  if (q_gzip < 0)
    q_gzip = q_star;
  if (q_deflate < 0)
    q_deflate = q_star;
  if (q_gzip > 0 && q_gzip >= q_deflate)
    return ENC_GZIP;
  if (q_deflate > 0)
    return ENC_DEFLATE;
  return ENC_NONE;
}

static bool compressible_type(const char *ct) {
  if (!ct)
    return false;
  if (strncasecmp(ct, "text/", 5) == 0)
    return true;
  static const char *const types[] = {"application/json", "application/javascript",
                                      "application/xml", "application/xhtml+xml",
                                      "image/svg+xml", "application/x-ndjson"};
  for (size_t i = 0; i < BRAID__ARRAY_SIZE(types); i++)
    if (strncasecmp(ct, types[i], strlen(types[i])) == 0)
      return true;
  const char *semi = strchr(ct, ';');
  size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
  return (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0) ||
         (n > 4 && strncasecmp(ct + n - 4, "+xml", 4) == 0);
}

/* ---- response head ------------------------------------------------------------------------ */

static bool header_ok(const braid_http_header_t *h) {
  if (!h->name || !h->value || !h->name[0])
    return false;
  const char *p = h->name;
  for (; *p; p++)
    if (*p <= ' ' || *p == ':' || (unsigned char)*p >= 127)
      return false;
  if (strpbrk(h->value, "\r\n"))
    return false;
  /* The framing headers are braid's to write. The length test first: this runs for every
   * header of every response. */
  size_t n = (size_t)(p - h->name);
  return !(n == 14 && strcasecmp(h->name, "Content-Length") == 0) &&
         !(n == 17 && strcasecmp(h->name, "Transfer-Encoding") == 0) &&
         !(n == 10 && strcasecmp(h->name, "Connection") == 0);
}

/* Writes v in decimal at p (room for 20 digits); returns the length. build_head's hand-made
 * replacement for snprintf, which cost about 3% of a keep-alive hello-world's server CPU. */
static size_t put_u64(char *p, uint64_t v) {
  char t[20];
  size_t n = 0;
  do {
    t[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++)
    p[i] = t[n - 1 - i];
  return n;
}

#define SB_LIT(b, lit) sb_add((b), (lit), sizeof(lit) - 1)

static const char *find_header(const braid_http_header_t *h, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcasecmp(h[i].name, name) == 0)
      return h[i].value;
  return NULL;
}

/* Decides whether the response closes the connection after it. */
static bool res_wants_close(braid_http_req_t *r) {
  hconn_t *hc = r->hc;
  if (!r->keep_alive || r->upgrade || r->res_close)
    return true;
  if (!hc || hc->closing)
    return true;
  const braid_http_server_opts_t *o = &hc->ctx->srv->opts;
  if (o->keepalive_requests && hc->requests >= o->keepalive_requests &&
      &r->qnode == hc->queue.prev)
    return true;
  /* Draining: the last request taken says close. */
  if (hc->draining && &r->qnode == hc->queue.prev && !hc->cur)
    return true;
  /* A body the client was told to hold back (100-continue not sent) and that was not read:
   * the client may or may not send it now, so the connection cannot go on. */
  if (r->has_body && !r->body_complete && r->expect_continue && !r->continue_sent)
    return true;
  return hc->no_more && &r->qnode == hc->queue.prev;
}

/* Writes the status line and headers of req's response into b. body_len < 0: no
 * Content-Length (chunked or close-delimited or none). */
static void build_head(braid_http_req_t *r, sbuf_t *b, int status,
                       const braid_http_header_t *headers, size_t n, int64_t body_len,
                       bool vary) {
  hconn_t *hc = r->hc;
  char num[24];
  SB_LIT(b, "HTTP/1.1 ");
  sb_add(b, num, put_u64(num, (uint64_t)status));
  SB_LIT(b, " ");
  sb_str(b, reason_phrase(status));
  SB_LIT(b, "\r\n");
  if (hc) {
    ctx_date(hc->ctx);
    SB_LIT(b, "Date: ");
    sb_add(b, hc->ctx->date, hc->ctx->date_len);
    SB_LIT(b, "\r\n");
    if (hc->ctx->srv->server_name) {
      SB_LIT(b, "Server: ");
      sb_str(b, hc->ctx->srv->server_name);
      SB_LIT(b, "\r\n");
    }
  }
  for (size_t i = 0; i < n; i++) {
    sb_str(b, headers[i].name);
    SB_LIT(b, ": ");
    sb_str(b, headers[i].value);
    SB_LIT(b, "\r\n");
  }
  if (r->res_encoding == ENC_GZIP)
    SB_LIT(b, "Content-Encoding: gzip\r\n");
  else if (r->res_encoding == ENC_DEFLATE)
    SB_LIT(b, "Content-Encoding: deflate\r\n");
  if (vary)
    SB_LIT(b, "Vary: Accept-Encoding\r\n");
  bool no_length = status == 204 || status == 304 || status < 200;
  if (!no_length) {
    if (body_len >= 0) {
      SB_LIT(b, "Content-Length: ");
      sb_add(b, num, put_u64(num, (uint64_t)body_len));
      SB_LIT(b, "\r\n");
    } else if (r->res_chunked) {
      SB_LIT(b, "Transfer-Encoding: chunked\r\n");
    }
  }
  if (r->res_close)
    SB_LIT(b, "Connection: close\r\n");
  else if (r->minor == 0)
    SB_LIT(b, "Connection: keep-alive\r\n");
  SB_LIT(b, "\r\n");
}

static braid_gzip_t *ctx_compressor(ctx_t *c, int enc) {
  braid_gzip_t **slot = &c->gz[enc == ENC_GZIP ? 0 : 1];
  if (!*slot) {
    braid_gzip_opts_t go;
    braid_gzip_opts_init(&go);
    go.format = enc == ENC_GZIP ? BRAID_GZIP_FORMAT_GZIP : BRAID_GZIP_FORMAT_ZLIB;
    go.level = c->srv->opts.compress_level;
    go.min_size_bytes = c->srv->opts.compress_min_bytes;
    if (braid_gzip_new(slot, &go))
      return NULL;
  }
  return *slot;
}

/* The response is complete (all of it handed to req_out). */
static void res_finished(braid_http_req_t *r) {
  hconn_t *hc = r->hc;
  r->res_state = RES_DONE;
  if (hc) {
    ctx_t *c = hc->ctx;
    int cls = r->status / 100;
    stat_add(&c->requests, 1);
    if (cls >= 1 && cls <= 5)
      stat_add(&c->status[cls], 1);
    stat_add(&c->body_bytes, r->res_body_bytes);
    stat_add(&c->body_bytes_sent, r->res_sent_bytes);
    if (r->res_encoding)
      stat_add(&c->compressed, 1);
    uint64_t us = (uv_hrtime() - r->start_ns) / 1000;
    uv_mutex_lock(&c->hist_mu);
    braid_histogram_record(&c->hist, us);
    uv_mutex_unlock(&c->hist_mu);
    if (r->res_close)
      hc->no_more = true;
    if (queue_head(hc) == r)
      hc_advance(hc);
  }
}

/* Sets up the response's framing and encoding. Returns whether to add Vary. */
static bool res_setup(braid_http_req_t *r, int status, const braid_http_header_t *headers,
                      size_t n, int64_t body_len, bool streamed) {
  hconn_t *hc = r->hc;
  r->status = status;
  r->res_no_body = r->is_head || status == 204 || status == 304;
  if (r->precompressed) {
    r->res_encoding = r->precompressed;
    r->res_close = res_wants_close(r);
    return true;
  }
  const braid_http_server_opts_t *o = &hc->ctx->srv->opts;
  bool vary = false;
  if (o->compress && !find_header(headers, n, "Content-Encoding") &&
      compressible_type(find_header(headers, n, "Content-Type")) && status >= 200 &&
      status != 204 && status != 304 && status != 206) {
    vary = true;
    bool big = body_len < 0 || (uint64_t)body_len >= o->compress_min_bytes;
    if (big)
      r->res_encoding = (uint8_t)negotiate_encoding(braid_http_req_header(r, "Accept-Encoding"));
  }
  (void)streamed;
  r->res_close = res_wants_close(r);
  return vary;
}

static int check_headers(const braid_http_header_t *headers, size_t n) {
  if (n && !headers)
    return BRAID_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!header_ok(&headers[i]))
      return BRAID_EINVAL;
  return 0;
}

/* Sends a whole response. body may be a blob (then data/len are its bytes). */
static int respond_whole(braid_http_req_t *r, int status, const braid_http_header_t *headers,
                         size_t n, const void *body, size_t len, braid_blob_t *blob) {
  hconn_t *hc = r->hc;
  if (!hc || hc->closing) {
    r->res_state = RES_DONE;
    if (hc)
      res_finished(r);
    r->user = false;
    req_maybe_free(r);
    return BRAID_ECLOSED;
  }
  bool vary = res_setup(r, status, headers, n, (int64_t)len, false);
  void *zout = NULL;
  size_t zlen = 0;
  if (r->precompressed) {
    /* sent as it is */
  } else if (r->res_encoding && len) {
    braid_gzip_t *gz = ctx_compressor(hc->ctx, r->res_encoding);
    int rc = gz ? braid_gzip_compress_alloc(gz, body, len, &zout, &zlen) : BRAID_ENOMEM;
    if (rc != 0) { /* skipped or failed: send it as it is */
      zout = NULL;
      r->res_encoding = ENC_NONE;
    }
  } else {
    r->res_encoding = ENC_NONE;
  }
  const void *out = zout ? zout : body;
  size_t out_len = zout ? zlen : len;
  bool no_length = status == 204 || status == 304 || status < 200;
  sbuf_t b;
  sb_init(&b);
  build_head(r, &b, status, headers, n, no_length ? -1 : (int64_t)out_len, vary);
  int rc = b.failed ? BRAID_ENOMEM : 0;
  bool send_body = !r->res_no_body && out_len;
  if (rc == 0) {
    if (queue_head(hc) == r && !r->held_len) {
      if (send_body && blob && !zout && len >= 4096) {
        rc = braid_conn_write(hc->conn, b.p, b.len, NULL, NULL);
        if (rc == 0)
          rc = braid_conn_write_blob(hc->conn, blob, 0, len, NULL, NULL);
      } else {
        uv_buf_t part = uv_buf_init((char *)out, (unsigned)(send_body ? out_len : 0));
        bool partial = false;
        rc = braid__conn_write_whole(hc->conn, b.p, b.len, &part, send_body ? 1 : 0, &partial);
      }
    } else {
      rc = req_out(r, b.p, b.len);
      if (rc == 0 && send_body)
        rc = req_out(r, out, out_len);
    }
  }
  sb_free(&b);
  braid_gzip_buf_free(zout);
  r->res_body_bytes = r->res_no_body ? 0 : len;
  r->res_sent_bytes = send_body ? out_len : 0;
  if (rc) {
    /* Part of a response may be out: the stream cannot go on. */
    r->res_close = true;
    hc_close(hc);
  }
  res_finished(r);
  r->user = false;
  req_maybe_free(r);
  return rc ? BRAID_ECLOSED : 0;
}

int braid_http_respond(braid_http_req_t *r, int status, const braid_http_header_t *headers,
                       size_t nheaders, const void *body, size_t len) {
  if (!r || !r->user || r->res_state != RES_NONE || status < 200 || status > 999 ||
      (len && !body) || check_headers(headers, nheaders))
    return BRAID_EINVAL;
  return respond_whole(r, status, headers, nheaders, body, len, NULL);
}

int braid_http_respond_blob(braid_http_req_t *r, int status, const braid_http_header_t *headers,
                            size_t nheaders, braid_blob_t *blob) {
  if (!r || !r->user || r->res_state != RES_NONE || status < 200 || status > 999 || !blob ||
      check_headers(headers, nheaders))
    return BRAID_EINVAL;
  return respond_whole(r, status, headers, nheaders, braid_blob_data(blob), braid_blob_len(blob),
                       blob);
}

/* A response the server makes itself (errors, 404, 405, 408): the connection closes after
 * it when status says the stream cannot go on. */
static void respond_server(braid_http_req_t *r, int status, bool close, const char *allow) {
  char body[128];
  int blen = snprintf(body, sizeof(body), "%d %s\n", status, reason_phrase(status));
  braid_http_header_t h[2] = {{"Content-Type", "text/plain; charset=utf-8"}, {"Allow", allow}};
  if (close)
    r->res_close = true;
  r->user = true; /* respond_whole drops the reference */
  if (r->hc && status >= 400 && status != 404 && status != 405)
    stat_add(&r->hc->ctx->bad_requests, 1);
  respond_whole(r, status, h, allow ? 2 : 1, body, (size_t)blen, NULL);
}

/* A request refused before any handler: answer it and close after it. */
static void respond_error(hconn_t *hc, braid_http_req_t *req, int status) {
  hc->no_more = true;
  if (!req) {
    req = req_new(hc);
    if (!req) {
      hc_close(hc);
      return;
    }
    req->queued = true;
    braid__list_push_back(&hc->queue, &req->qnode);
    hc->nqueue++;
    req->minor = 1;
    req->start_ns = uv_hrtime();
  }
  if (hc->cur == req) {
    hc->cur = NULL;
    req->parsing = false;
  }
  req->keep_alive = false;
  req->body_mode = BODY_DISCARD;
  if (req->res_state == RES_NONE && !req->user) {
    respond_server(req, status, true, NULL);
  } else {
    /* Already answered (a 404 sent at its header section, then its body went bad): the
     * stream cannot go on, so close once the answers before it are out. */
    req_maybe_free(req);
    if (hc->nqueue == 0)
      hc_close(hc);
  }
  hc_update_timer(hc);
}

/* ---- streamed responses ------------------------------------------------------------------ */

int braid_http_res_begin(braid_http_req_t *r, int status, const braid_http_header_t *headers,
                         size_t nheaders, int64_t content_length) {
  if (!r || !r->user || r->res_state != RES_NONE || status < 200 || status > 999 ||
      content_length < -1 || check_headers(headers, nheaders))
    return BRAID_EINVAL;
  r->res_state = RES_STREAMING;
  hconn_t *hc = r->hc;
  if (!hc || hc->closing)
    return BRAID_ECLOSED;
  bool vary = res_setup(r, status, headers, nheaders, content_length, true);
  bool no_length = status == 204 || status == 304;
  int64_t declared = -1;
  if (r->res_encoding) {
    braid_gzip_opts_t go;
    braid_gzip_opts_init(&go);
    go.format = r->res_encoding == ENC_GZIP ? BRAID_GZIP_FORMAT_GZIP : BRAID_GZIP_FORMAT_ZLIB;
    go.level = hc->ctx->srv->opts.compress_level;
    if (r->res_no_body || braid_gzip_stream_new(&r->zip, BRAID_GZIP_COMPRESS, &go))
      r->res_encoding = ENC_NONE;
  }
  if (no_length) {
    r->res_no_body = true;
  } else if (content_length >= 0 && !r->res_encoding) {
    declared = content_length;
    r->res_remaining = content_length;
  } else if (r->minor >= 1) {
    r->res_chunked = true;
  } else {
    r->res_eof_delimited = true;
    r->res_close = true;
  }
  sbuf_t b;
  sb_init(&b);
  build_head(r, &b, status, headers, nheaders, declared, vary);
  int rc = b.failed ? BRAID_ENOMEM : req_out(r, b.p, b.len);
  sb_free(&b);
  if (rc) {
    hc_close(hc);
    return BRAID_ECLOSED;
  }
  return 0;
}

/* Sends one piece of body as it goes on the wire (a chunk when chunked). */
static int res_emit(braid_http_req_t *r, const void *data, size_t len) {
  if (!len || r->res_no_body)
    return 0;
  r->res_sent_bytes += len;
  if (!r->res_chunked)
    return req_out(r, data, len);
  char head[24];
  int hl = snprintf(head, sizeof(head), "%zx\r\n", len);
  hconn_t *hc = r->hc;
  if (hc && !hc->closing && queue_head(hc) == r && !r->held_len) {
    uv_buf_t parts[2] = {uv_buf_init((char *)data, (unsigned)len), uv_buf_init("\r\n", 2)};
    bool partial = false;
    int rc = braid__conn_write_whole(hc->conn, head, (size_t)hl, parts, 2, &partial);
    if (rc && partial)
      hc_close(hc);
    return rc;
  }
  int rc = req_out(r, head, (size_t)hl);
  if (rc == 0)
    rc = req_out(r, data, len);
  if (rc == 0)
    rc = req_out(r, "\r\n", 2);
  return rc;
}

/* Pushes data through the stream compressor, emitting what it produces. */
static int res_compress(braid_http_req_t *r, const void *data, size_t len, int flags) {
  char out[ZBUF_SIZE];
  const char *in = data;
  for (;;) {
    size_t used = 0, produced = 0;
    int rc = braid_gzip_stream_process(r->zip, in, len, &used, out, sizeof(out), &produced, flags);
    if (rc < 0)
      return rc;
    if (used) /* in is NULL for the final flush */
      in += used;
    len -= used;
    if (produced) {
      int wrc = res_emit(r, out, produced);
      if (wrc)
        return wrc;
    }
    if (rc == BRAID_GZIP_DONE)
      return 0;
    if (len == 0 && produced < sizeof(out))
      return 0;
  }
}

int braid_http_res_write(braid_http_req_t *r, const void *data, size_t len) {
  if (!r || !r->user || r->res_state != RES_STREAMING || (len && !data))
    return BRAID_EINVAL;
  hconn_t *hc = r->hc;
  if (!hc || hc->closing)
    return BRAID_ECLOSED;
  if (r->res_remaining >= 0 && len > (uint64_t)r->res_remaining)
    return BRAID_EINVAL;
  if (r->res_remaining >= 0)
    r->res_remaining -= (int64_t)len;
  if (r->res_no_body)
    return 0;
  r->res_body_bytes += len;
  int rc = r->zip ? res_compress(r, data, len, 0) : res_emit(r, data, len);
  if (rc == BRAID_EQUEUEFULL)
    return rc;
  if (rc) {
    if (r->hc)
      hc_close(r->hc);
    return rc == BRAID_ECLOSED ? rc : rc;
  }
  if (req_over_watermark(r)) {
    r->wait_writable = true;
    return BRAID_HTTP_WAIT;
  }
  return 0;
}

int braid_http_res_end(braid_http_req_t *r) {
  if (!r || !r->user || r->res_state != RES_STREAMING)
    return BRAID_EINVAL;
  hconn_t *hc = r->hc;
  r->wcb = NULL;
  int rc = 0;
  if (!hc || hc->closing) {
    rc = BRAID_ECLOSED;
  } else {
    if (r->zip && !r->res_no_body)
      rc = res_compress(r, NULL, 0, BRAID_GZIP_FINISH);
    if (rc == 0 && r->res_chunked && !r->res_no_body)
      rc = req_out(r, "0\r\n\r\n", 5);
    if (r->res_remaining > 0 || r->res_eof_delimited) {
      /* Shorter than declared (the client sees it cut), or close-delimited. */
      r->res_close = true;
    }
    if (rc)
      hc_close(hc);
  }
  if (hc)
    res_finished(r);
  else
    r->res_state = RES_DONE;
  r->user = false;
  req_maybe_free(r);
  return rc ? BRAID_ECLOSED : 0;
}

int braid_http_res_on_writable(braid_http_req_t *r, braid_http_writable_cb cb, void *arg) {
  if (!r || !r->user)
    return BRAID_EINVAL;
  r->wcb = cb;
  r->warg = arg;
  return 0;
}

/* ---- request accessors --------------------------------------------------------------------- */

const char *braid_http_req_method(const braid_http_req_t *r) {
  return r->method;
}

const char *braid_http_req_path(const braid_http_req_t *r) {
  return r->hbuf && r->headers_done ? r->hbuf : "/";
}

const char *braid_http_req_query(const braid_http_req_t *r) {
  return r->hbuf && r->headers_done && r->query_off ? r->hbuf + r->query_off : "";
}

const char *braid_http_req_header(const braid_http_req_t *r, const char *name) {
  if (!r->headers_done) /* a request refused part way: its last item is not terminated */
    return NULL;
  for (unsigned i = 0; i < r->nhdrs; i++)
    if (strcasecmp(r->hbuf + r->hdrs[i].name_off, name) == 0)
      return r->hbuf + r->hdrs[i].value_off;
  return NULL;
}

unsigned braid_http_req_header_count(const braid_http_req_t *r) {
  return r->headers_done ? r->nhdrs : 0;
}

int braid_http_req_header_at(const braid_http_req_t *r, unsigned i, const char **name,
                             const char **value) {
  if (i >= braid_http_req_header_count(r))
    return BRAID_EINVAL;
  if (name)
    *name = r->hbuf + r->hdrs[i].name_off;
  if (value)
    *value = r->hbuf + r->hdrs[i].value_off;
  return 0;
}

int braid_http_req_version(const braid_http_req_t *r) {
  return r->minor ? 11 : 10;
}

const uint8_t *braid_http_req_body(const braid_http_req_t *r, size_t *len) {
  if (r->body_mode != BODY_BUFFER || !r->body_len) {
    if (len)
      *len = 0;
    return NULL;
  }
  if (len)
    *len = r->body_len;
  return (const uint8_t *)r->body;
}

braid_loop_t *braid_http_req_loop(const braid_http_req_t *r) {
  return r->loop;
}

braid_conn_t *braid_http_req_conn(const braid_http_req_t *r) {
  return r->hc && !r->hc->closing ? r->hc->conn : NULL;
}

void braid_http_req_set_data(braid_http_req_t *r, void *data) {
  r->data = data;
}

void *braid_http_req_get_data(const braid_http_req_t *r) {
  return r->data;
}

void braid_http_server_count_cache_hit(braid_http_req_t *r) {
  if (r && r->hc)
    stat_add(&r->hc->ctx->cache_hits, 1);
}

/* ---- streamed request bodies ------------------------------------------------------------- */

int braid_http_req_read_body(braid_http_req_t *r, braid_http_body_cb cb, void *arg) {
  if (!r || !cb || !r->route || !(r->route->flags & BRAID_HTTP_STREAM_BODY) || r->body_cb ||
      r->res_state == RES_DONE)
    return BRAID_EINVAL;
  hconn_t *hc = r->hc;
  if (!hc || hc->closing)
    return BRAID_ECLOSED;
  r->body_cb = cb;
  r->body_arg = arg;
  if (r->body_complete || !r->has_body)
    r->eof_pending = r->body_complete;
  if (r->expect_continue && !r->continue_sent && r->has_body && !r->body_complete) {
    r->continue_sent = true;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (req_out(r, cont, sizeof(cont) - 1))
      hc_close(hc);
  }
  hc_schedule(hc);
  return 0;
}

int braid_http_req_pause_body(braid_http_req_t *r) {
  if (!r || !r->body_cb)
    return BRAID_EINVAL;
  r->body_paused = true;
  if (r->hc)
    hc_update_timer(r->hc);
  return 0;
}

int braid_http_req_resume_body(braid_http_req_t *r) {
  if (!r || !r->body_cb)
    return BRAID_EINVAL;
  r->body_paused = false;
  if (r->hc)
    hc_schedule(r->hc);
  return 0;
}

/* Ends body delivery with status (BRAID_EOF or an error), once. */
static void body_end(braid_http_req_t *r, int status) {
  if (r->body_ended || !r->body_cb || !r->user)
    return;
  r->body_ended = true;
  r->body_cb(r, status, NULL, 0, r->body_arg);
}

/* ---- parser callbacks ----------------------------------------------------------------------- */

static int refuse(hconn_t *hc, int status) {
  hc->error_status = status;
  return -1;
}

static int cb_message_begin(void *u) {
  hconn_t *hc = u;
  if (hc->closing || hc->no_more)
    return BRAID__HP_PAUSE;
  braid_http_req_t *r = req_new(hc);
  if (!r)
    return refuse(hc, 500);
  r->queued = r->parsing = true;
  r->start_ns = uv_hrtime();
  braid__list_push_back(&hc->queue, &r->qnode);
  hc->nqueue++;
  hc->cur = r;
  hc->requests++;
  if (hc->requests > 1)
    stat_add(&hc->ctx->ka_reuse, 1);
  timer_enter(hc, &hc->ctx->header_list, hc->ctx->srv->opts.header_timeout_ms);
  return 0;
}

static int cb_url(void *u, const char *at, size_t len) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  r->target_len += len;
  if (r->target_len > hc->ctx->srv->opts.max_target_bytes)
    return refuse(hc, 414);
  return req_append(r, at, len) ? refuse(hc, 500) : 0;
}

/* Ends the target or a header value with a NUL. */
static int close_item(braid_http_req_t *r) {
  if (req_append(r, "", 1))
    return -1;
  return 0;
}

static int cb_header_field(void *u, const char *at, size_t len) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  const braid_http_server_opts_t *o = &hc->ctx->srv->opts;
  if (r->hstate == 0 && close_item(r)) /* end of the target */
    return refuse(hc, 500);
  if (r->hstate != 1) {
    if (r->hstate == 2 && close_item(r))
      return refuse(hc, 500);
    if (r->nhdrs >= o->max_headers)
      return refuse(hc, 431);
    if (r->nhdrs == r->hdr_cap) {
      unsigned cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
      hdr_t *h = braid__realloc(r->hdrs, cap * sizeof(*h));
      if (!h)
        return refuse(hc, 500);
      r->hdrs = h;
      r->hdr_cap = cap;
    }
    r->hdrs[r->nhdrs].name_off = (uint32_t)r->hlen;
    r->hdrs[r->nhdrs].value_off = UINT32_MAX;
    r->nhdrs++;
    r->hstate = 1;
  }
  r->header_bytes += len;
  if (r->header_bytes > o->max_header_bytes)
    return refuse(hc, 431);
  return req_append(r, at, len) ? refuse(hc, 500) : 0;
}

static int cb_header_value(void *u, const char *at, size_t len) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  if (r->hstate == 1) {
    if (close_item(r))
      return refuse(hc, 500);
    r->hdrs[r->nhdrs - 1].value_off = (uint32_t)r->hlen;
    r->hstate = 2;
  }
  r->header_bytes += len;
  if (r->header_bytes > hc->ctx->srv->opts.max_header_bytes)
    return refuse(hc, 431);
  return req_append(r, at, len) ? refuse(hc, 500) : 0;
}

static int cb_header_value_complete(void *u) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  if (r->hstate == 1) { /* empty value: no value callback */
    if (close_item(r))
      return refuse(hc, 500);
    r->hdrs[r->nhdrs - 1].value_off = (uint32_t)r->hlen;
    r->hstate = 2;
  }
  return 0;
}

/* Strips the optional whitespace llhttp leaves at a value's end. */
static void trim_values(braid_http_req_t *r) {
  for (unsigned i = 0; i < r->nhdrs; i++) {
    if (r->hdrs[i].value_off == UINT32_MAX) {
      r->hdrs[i].value_off = r->hdrs[i].name_off + (uint32_t)strlen(r->hbuf + r->hdrs[i].name_off);
      continue;
    }
    char *v = r->hbuf + r->hdrs[i].value_off;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
      v[--n] = 0;
  }
}

static void call_handler(braid_http_req_t *r) {
  r->user = true;
  r->route->cb(r, r->route->arg);
}

static int cb_headers_complete(void *u, const braid__hp_head_t *head) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  braid_http_server_t *s = hc->ctx->srv;
  if (r->hstate == 0 && close_item(r))
    return refuse(hc, 500);
  if (r->hstate == 2 && close_item(r))
    return refuse(hc, 500);
  r->hstate = 3;
  r->headers_done = true;
  trim_values(r);
  r->method = head->method;
  r->minor = (uint8_t)head->http_minor;
  r->keep_alive = head->keep_alive != 0;
  r->upgrade = head->upgrade != 0;
  r->is_head = strcmp(r->method, "HEAD") == 0;
  r->has_body = head->chunked || (head->has_length && head->content_length > 0);
  /* The path ends at '?'; the query follows. */
  char *q = memchr(r->hbuf, '?', r->target_len);
  r->path_len = (uint32_t)(q ? (size_t)(q - r->hbuf) : r->target_len);
  if (q) {
    *q = 0;
    r->query_off = r->path_len + 1;
  }
  if (!r->keep_alive)
    hc->no_more = true;
  if (strcmp(r->method, "CONNECT") == 0 || r->hbuf[0] != '/') {
    /* Origin-form only: no proxying, no tunnels, no absolute-form targets. */
    return refuse(hc, strcmp(r->method, "CONNECT") == 0 ? 405 : 400);
  }
  const char *expect = braid_http_req_header(r, "Expect");
  if (expect) {
    if (strcasecmp(expect, "100-continue") != 0)
      return refuse(hc, 417);
    r->expect_continue = r->minor >= 1;
  }
  const char *ce = braid_http_req_header(r, "Content-Encoding");
  if (ce && r->has_body) {
    if (strcasecmp(ce, "gzip") == 0 || strcasecmp(ce, "x-gzip") == 0)
      r->req_encoding = ENC_GZIP;
    else if (strcasecmp(ce, "deflate") == 0)
      r->req_encoding = ENC_DEFLATE;
    else if (strcasecmp(ce, "identity") != 0)
      return refuse(hc, 415);
  }
  if (head->has_length && head->content_length > s->opts.max_body_bytes &&
      !r->req_encoding)
    return refuse(hc, 413);
  if (head->has_length && r->req_encoding &&
      head->content_length > s->opts.max_body_bytes)
    return refuse(hc, 413); /* compressed bigger than the decoded cap: cannot fit */
  bool known = false;
  const route_t *route = find_route(s, r->hbuf, r->path_len, r->method, &known);
  if (!route) {
    char allow[256];
    if (known)
      allowed_methods(s, r->hbuf, r->path_len, allow, sizeof(allow));
    r->body_mode = BODY_DISCARD;
    /* Answer now; the body (if any) is read and dropped, within max_body_bytes. */
    bool close = r->has_body && (r->expect_continue || head->chunked);
    respond_server(r, known ? 405 : 404, close, known ? allow : NULL);
    return close ? BRAID__HP_PAUSE : 0;
  }
  r->route = route;
  if (route->flags & BRAID_HTTP_STREAM_BODY) {
    r->body_mode = r->has_body ? BODY_STREAM : BODY_NONE;
    call_handler(r);
    if (hc->closing)
      return BRAID__HP_PAUSE;
    /* Until the handler reads the body (or answers without it), do not parse on. */
    if (r->has_body && !r->body_cb && r->res_state != RES_DONE)
      return BRAID__HP_PAUSE;
    if (r->has_body && r->res_state == RES_DONE)
      r->body_mode = BODY_DISCARD;
    return 0;
  }
  r->body_mode = r->has_body ? BODY_BUFFER : BODY_NONE;
  if (r->expect_continue && r->has_body) {
    r->continue_sent = true;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (req_out(r, cont, sizeof(cont) - 1))
      return refuse(hc, 500);
  }
  return 0;
}

/* Decodes a piece of a gzip/deflate request body into the body callback or buffer. */
static int deliver_body(hconn_t *hc, braid_http_req_t *r, const char *at, size_t len) {
  uint64_t max = hc->ctx->srv->opts.max_body_bytes;
  if (r->body_mode == BODY_BUFFER && !r->req_encoding) {
    if (r->body_len + len > max)
      return refuse(hc, 413);
    if (grow(&r->body, &r->body_cap, r->body_len + len))
      return refuse(hc, 500);
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return 0;
  }
  if (r->body_mode == BODY_BUFFER) {
    /* Compressed: keep the bytes as sent (bounded by max: a compressed body is never
     * larger than what it decodes to, within the format's overhead) and decode at the end. */
    if (r->body_in > max + 1024)
      return refuse(hc, 413);
    if (grow(&r->body, &r->body_cap, r->body_len + len))
      return refuse(hc, 500);
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return 0;
  }
  /* BODY_STREAM */
  if (r->body_ended)
    return 0;
  if (!r->req_encoding) {
    if (r->body_in > max) {
      body_end(r, BRAID_ETOOBIG);
      return 0;
    }
    r->body_out += len;
    r->body_cb(r, 0, (const uint8_t *)at, len, r->body_arg);
    return 0;
  }
  if (!r->unzip) {
    braid_gzip_opts_t go;
    braid_gzip_opts_init(&go);
    go.format = r->req_encoding == ENC_GZIP ? BRAID_GZIP_FORMAT_GZIP : BRAID_GZIP_FORMAT_ZLIB;
    go.max_output_bytes = max ? max : 1;
    go.max_ratio = hc->ctx->srv->opts.decode_max_ratio;
    if (braid_gzip_stream_new(&r->unzip, BRAID_GZIP_DECOMPRESS, &go)) {
      body_end(r, BRAID_ENOMEM);
      return 0;
    }
  }
  char out[ZBUF_SIZE];
  while (!r->body_ended) {
    size_t used = 0, produced = 0;
    int rc = braid_gzip_stream_process(r->unzip, at, len, &used, out, sizeof(out), &produced, 0);
    at += used;
    len -= used;
    if (produced) {
      r->body_out += produced;
      r->body_cb(r, 0, (const uint8_t *)out, produced, r->body_arg);
    }
    if (rc < 0) {
      body_end(r, rc == BRAID_EOUTPUTCAP || rc == BRAID_ERATIO ? BRAID_ETOOBIG : rc);
      break;
    }
    if (len == 0 && produced < sizeof(out))
      break;
    if (rc == BRAID_GZIP_DONE && len) {
      body_end(r, BRAID_ETRAILING);
      break;
    }
  }
  return 0;
}

static int cb_body(void *u, const char *at, size_t len) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  r->body_in += len;
  stat_add(&hc->ctx->bytes_in, len);
  timer_touch_body(hc);
  switch (r->body_mode) {
  case BODY_DISCARD:
    if (r->body_in > hc->ctx->srv->opts.max_body_bytes) {
      hc->no_more = true;
      hc_close(hc);
      return BRAID__HP_PAUSE;
    }
    return 0;
  case BODY_BUFFER:
    return deliver_body(hc, r, at, len);
  case BODY_STREAM: {
    if (r->res_state == RES_DONE || !r->body_cb) {
      r->body_mode = BODY_DISCARD;
      return 0;
    }
    int rc = deliver_body(hc, r, at, len);
    if (rc)
      return rc;
    if (hc->closing || r->body_paused)
      return BRAID__HP_PAUSE;
    if (r->res_state == RES_DONE || r->body_ended) {
      r->body_mode = BODY_DISCARD;
      if (r->expect_continue && !r->continue_sent) {
        hc->no_more = true;
        return BRAID__HP_PAUSE;
      }
    }
    return 0;
  }
  default:
    return 0;
  }
}

/* A buffered body arrived whole: decode it when it is compressed. Returns 0 or a status. */
static int decode_buffered(hconn_t *hc, braid_http_req_t *r) {
  if (!r->req_encoding || !r->body_len)
    return 0;
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.format = r->req_encoding == ENC_GZIP ? BRAID_GZIP_FORMAT_GZIP : BRAID_GZIP_FORMAT_ZLIB;
  go.max_output_bytes = hc->ctx->srv->opts.max_body_bytes ? hc->ctx->srv->opts.max_body_bytes : 1;
  go.max_ratio = hc->ctx->srv->opts.decode_max_ratio;
  braid_gzip_t *gz;
  if (braid_gzip_new(&gz, &go))
    return 500;
  void *out = NULL;
  size_t out_len = 0;
  int rc = braid_gzip_decompress(gz, r->body, r->body_len, &out, &out_len);
  braid_gzip_free(gz);
  if (rc == BRAID_EOUTPUTCAP || rc == BRAID_ERATIO || rc == BRAID_EMEMBERS)
    return 413;
  if (rc)
    return 400;
  /* Keep the decoded body in the request's own buffer (freed with it). */
  braid__free(r->body);
  r->body = braid__malloc(out_len ? out_len : 1);
  if (!r->body) {
    braid_gzip_buf_free(out);
    r->body_cap = r->body_len = 0;
    return 500;
  }
  memcpy(r->body, out, out_len);
  braid_gzip_buf_free(out);
  r->body_len = r->body_cap = out_len;
  r->body_out = out_len;
  return 0;
}

static int cb_message_complete(void *u) {
  hconn_t *hc = u;
  braid_http_req_t *r = hc->cur;
  hc->cur = NULL;
  r->parsing = false;
  r->pin++; /* the handler may answer (and finish) it inside */
  r->body_complete = true;
  timer_leave(hc);
  if (r->body_mode == BODY_BUFFER || (r->body_mode == BODY_NONE && r->route &&
                                      !(r->route->flags & BRAID_HTTP_STREAM_BODY))) {
    int status = decode_buffered(hc, r);
    if (status) {
      r->body_mode = BODY_DISCARD;
      respond_server(r, status, false, NULL);
    } else {
      call_handler(r);
    }
  } else if (r->body_mode == BODY_STREAM) {
    if (r->unzip && !r->body_ended) {
      /* The compressed stream must end exactly with the body. */
      char out[256];
      size_t used = 0, produced = 0;
      int rc = braid_gzip_stream_process(r->unzip, NULL, 0, &used, out, sizeof(out), &produced,
                                         BRAID_GZIP_FINISH);
      if (produced)
        r->body_cb(r, 0, (const uint8_t *)out, produced, r->body_arg);
      if (rc < 0)
        body_end(r, rc);
    }
    body_end(r, BRAID_EOF);
  } else if (r->body_mode == BODY_NONE && r->body_cb) {
    body_end(r, BRAID_EOF);
  }
  r->pin--;
  req_maybe_free(r);
  unsigned cap = hc->ctx->srv->opts.keepalive_requests;
  if (cap && hc->requests >= cap)
    hc->no_more = true;
  if (hc->closing || hc->no_more || hc->draining)
    return BRAID__HP_PAUSE;
  if (hc->nqueue >= hc->ctx->srv->opts.max_pipelined || hc->above_wm)
    return BRAID__HP_PAUSE;
  return 0;
}

static const braid__hp_callbacks_t hp_cbs = {
    cb_message_begin, cb_url, cb_header_field, cb_header_value, cb_header_value_complete,
    cb_headers_complete, cb_body, cb_message_complete,
};

/* ---- the connection ------------------------------------------------------------------------- */

/* Whether parsing may go on now. */
static bool hc_can_parse(hconn_t *hc) {
  if (hc->closing || (hc->no_more && !hc->cur))
    return false;
  braid_http_req_t *cur = hc->cur;
  if (cur && cur->headers_done && cur->body_mode == BODY_STREAM && !cur->body_complete) {
    if (cur->body_paused)
      return false;
    if (!cur->body_cb && cur->res_state != RES_DONE)
      return false;
  }
  if (!cur && (hc->nqueue >= hc->ctx->srv->opts.max_pipelined || hc->above_wm ||
               hc->draining))
    return false;
  return true;
}

/* Keeps data[0..len) for later and stops reading. */
static void hc_stash(hconn_t *hc, const char *data, size_t len) {
  if (!hc->paused) {
    hc->paused = true;
    braid_conn_read_stop(hc->conn);
  }
  if (!len)
    return;
  uintptr_t d = (uintptr_t)data, st = (uintptr_t)hc->stash;
  if (hc->stash && d >= st && d < st + HTTP_STASH_MAX) {
    memmove(hc->stash, data, len);
    hc->stash_len = len;
    return;
  }
  if (!hc->stash) {
    hc->stash = braid__malloc(HTTP_STASH_MAX);
    if (!hc->stash) {
      hc_close(hc);
      return;
    }
  }
  /* Reading stops as soon as a stash is needed, so it holds at most one read. */
  if (hc->stash_len + len > HTTP_STASH_MAX) {
    hc_close(hc);
    return;
  }
  memcpy(hc->stash + hc->stash_len, data, len);
  hc->stash_len += len;
}

static void hc_eof(hconn_t *hc);

/* kick: run the parser even with no input, after a pause: llhttp completes a message whose
 * last body byte came with the pause only when it runs again. */
static void hc_parse(hconn_t *hc, const char *data, size_t len, bool kick) {
  hc->in_parse++;
  static const char empty[1] = {0};
  if (!data)
    data = empty;
  while ((len > 0 || kick) && !hc->closing) {
    kick = false;
    if (!hc_can_parse(hc)) {
      hc_stash(hc, data, len);
      len = 0;
      break;
    }
    size_t used = 0;
    int rc = braid__hp_execute(hc->hp, data, len, &used);
    data += used;
    len -= used;
    if (rc == BRAID__HP_OK)
      break;
    if (rc == BRAID__HP_PAUSED) {
      braid__hp_resume(hc->hp);
      if (!hc_can_parse(hc)) {
        /* Even with nothing left, remember to run the parser again when it may go on: a
         * message whose last body byte came with the pause completes only then. */
        hc_stash(hc, data, len);
        len = 0;
        break;
      }
      kick = true;
      continue;
    }
    if (rc == BRAID__HP_UPGRADE) {
      /* braid does not switch protocols: the request was answered as plain HTTP and the
       * connection closes after it; the bytes after it are not read as HTTP. */
      hc->no_more = true;
      len = 0;
      break;
    }
    /* A refused or malformed request: answer it and close. */
    int status = hc->error_status ? hc->error_status
                 : rc == BRAID__HP_EVERSION ? 505
                                            : 400;
    braid_http_req_t *cur = hc->cur;
    if (cur && cur->user) {
      /* Its handler has it (a streamed body went bad): end the body, close after. */
      body_end(cur, BRAID_EPROTO);
      cur->parsing = false;
      hc->cur = NULL;
      hc->no_more = true;
      req_maybe_free(cur);
    } else {
      respond_error(hc, cur, status);
    }
    len = 0;
    break;
  }
  hc->in_parse--;
  if (len == 0 && hc->paused && hc->stash_len == 0 && hc_can_parse(hc)) {
    hc->paused = false;
    if (hc->peer_eof)
      hc_eof(hc);
    else if (braid_conn_read_start(hc->conn) && !hc->closing)
      hc_close(hc);
  }
  if (!hc->closing && hc->no_more && hc->nqueue == 0)
    hc_close(hc);
  hc_update_timer(hc);
}

/* Resumes parsing after whatever stopped it cleared, and tells waiting producers they may
 * write: from the loop (the flush task), never inside a call of the user's. */
static void hc_task_run(braid__flush_t *f) {
  hconn_t *hc = BRAID__CONTAINER_OF(f, hconn_t, task);
  hc->task_queued = false;
  if (hc->closing)
    return;
  /* Writable notices, for the head's producer only (later ones wait for their turn). */
  braid_http_req_t *head = queue_head(hc);
  if (head && head->wait_writable && !hc->above_wm && head->user && !head->held_len) {
    head->wait_writable = false;
    if (head->wcb) {
      head->pin++;
      head->wcb(head, 0, head->warg);
      head->pin--;
      req_maybe_free(head);
    }
    if (hc->closing)
      return;
  }
  /* Bodies that ended before their handler asked for them. */
  for (braid__node_t *n = hc->queue.next; n != &hc->queue;) {
    braid_http_req_t *r = BRAID__CONTAINER_OF(n, braid_http_req_t, qnode);
    n = n->next;
    if (r->eof_pending) {
      r->eof_pending = false;
      r->pin++;
      body_end(r, BRAID_EOF);
      r->pin--;
      req_maybe_free(r);
      if (hc->closing)
        return;
      n = hc->queue.next; /* the callback may have changed the FIFO: start over */
    }
  }
  if (hc->paused && hc_can_parse(hc)) {
    size_t n = hc->stash_len;
    hc->stash_len = 0;
    hc_parse(hc, n ? hc->stash : NULL, n, true);
  } else if (!hc->in_parse) {
    hc_update_timer(hc);
  }
}

static void hc_schedule(hconn_t *hc) {
  if (hc->closing)
    return;
  braid__loop_want_flush(hc->ctx->loop, &hc->task);
  hc->task_queued = true;
}

/* The head's response is complete: pass the FIFO on to the next request. */
static void hc_advance(hconn_t *hc) {
  for (;;) {
    braid_http_req_t *head = queue_head(hc);
    if (!head || head->res_state != RES_DONE || head->held_len)
      break;
    braid__list_remove(&head->qnode);
    head->queued = false;
    hc->nqueue--;
    bool close = head->res_close;
    req_maybe_free(head);
    if (close) {
      hc->no_more = true;
      hc_close(hc);
      return;
    }
    braid_http_req_t *next = queue_head(hc);
    if (!next)
      break;
    if (next->held_len) {
      int rc = braid_conn_write(hc->conn, next->held, next->held_len, NULL, NULL);
      braid__free(next->held);
      next->held = NULL;
      next->held_len = next->held_cap = 0;
      if (rc) {
        hc_close(hc);
        return;
      }
      if (next->wait_writable)
        hc_schedule(hc);
    }
  }
  if (hc->nqueue == 0 && hc->no_more && !hc->cur) {
    hc_close(hc);
    return;
  }
  if (hc->nqueue == 0 && hc->draining && (!hc->cur || !hc->cur->headers_done)) {
    hc_close(hc);
    return;
  }
  if (hc->paused)
    hc_schedule(hc);
  if (!hc->in_parse)
    hc_update_timer(hc);
}

static void hc_close(hconn_t *hc) {
  if (hc->closing)
    return;
  hc->closing = true;
  timer_leave(hc);
  braid_conn_close(hc->conn);
}

/* The peer sent everything it will send, and every byte of it was parsed. */
static void hc_eof(hconn_t *hc) {
  hc->no_more = true;
  /* A request cut short is dropped; answered ones still go out, then the connection
   * closes. */
  braid_http_req_t *cur = hc->cur;
  if (cur && !cur->user && cur->res_state == RES_NONE) {
    hc->cur = NULL;
    cur->parsing = false;
    if (cur->queued) {
      braid__list_remove(&cur->qnode);
      cur->queued = false;
      hc->nqueue--;
    }
    req_maybe_free(cur);
  } else if (cur) {
    body_end(cur, BRAID_EPROTO);
  }
  if (hc->nqueue == 0)
    hc_close(hc);
  else
    timer_leave(hc);
}

static void on_eof(braid_conn_t *conn, void *data) {
  hconn_t *hc = data;
  (void)conn;
  hc->peer_eof = true;
  /* Requests kept in the stash are still answered: the end is handled after them. */
  if (!hc->paused)
    hc_eof(hc);
}

static void on_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len,
                    void *data) {
  hconn_t *hc = data;
  (void)conn;
  if (status < 0)
    return; /* the close callback follows */
  hc_parse(hc, (const char *)bytes, len, false);
}

static void on_watermark(braid_conn_t *conn, int above, void *data) {
  hconn_t *hc = data;
  (void)conn;
  hc->above_wm = above != 0;
  if (!above)
    hc_schedule(hc);
}

static void server_finish(braid_http_server_t *s);
static void close_check(uv_timer_t *t);

static void on_close(braid_conn_t *conn, int status, void *data) {
  hconn_t *hc = data;
  (void)conn;
  (void)status;
  hc->closing = true;
  timer_leave(hc);
  braid__loop_cancel_flush(&hc->task);
  braid_http_req_t *cur = hc->cur;
  hc->cur = NULL;
  if (cur && !cur->queued) {
    /* answered early while its body still came in */
    cur->parsing = false;
    cur->hc = NULL;
    req_maybe_free(cur);
  }
  /* Every request still held: body readers and producers hear of the close; the requests
   * their handlers still hold become orphans, valid until answered. */
  while (!braid__list_empty(&hc->queue)) {
    braid_http_req_t *r = queue_head(hc);
    braid__list_remove(&r->qnode);
    r->queued = false;
    r->parsing = false;
    hc->nqueue--;
    r->hc = NULL;
    if (r->user) {
      r->orphan_ref = true;
      braid__loop_ref(r->loop);
      r->pin++;
      body_end(r, BRAID_ECANCELED);
      if (r->user && r->wcb && r->res_state == RES_STREAMING)
        r->wcb(r, BRAID_ECANCELED, r->warg);
      r->pin--;
    }
    req_maybe_free(r);
  }
  braid__list_remove(&hc->cnode);
  ctx_t *c = hc->ctx;
  if (hc->spare)
    req_release_memory(hc->spare);
  braid__hp_free(hc->hp);
  braid__free(hc->stash);
  braid__free(hc);
  ctx_detach(c);
  braid_http_server_t *s = c->srv;
  if (s->closing && s->loop == c->loop && c->nconns == 0)
    uv_timer_start(s->close_timer, close_check, 0, 0);
}

static void on_drain(braid_conn_t *conn, void *data) {
  hconn_t *hc = data;
  (void)conn;
  hc->draining = true;
  braid_http_req_t *cur = hc->cur;
  if (cur && !cur->headers_done) {
    /* A request not yet taken is dropped (the client may retry it elsewhere). */
    hc->cur = NULL;
    cur->parsing = false;
    braid__list_remove(&cur->qnode);
    cur->queued = false;
    hc->nqueue--;
    req_maybe_free(cur);
  }
  if (hc->nqueue == 0) {
    hc_close(hc);
    return;
  }
  hc->no_more = true;
}

int braid_http_server_serve(braid_http_server_t *s, braid_conn_t *conn) {
  if (!s || !conn)
    return BRAID_EINVAL;
  if (s->closing) {
    braid_conn_close(conn);
    return BRAID_ECLOSED;
  }
  ctx_t *c = ctx_get(s, braid_conn_loop(conn));
  hconn_t *hc = c ? braid__calloc(1, sizeof(*hc)) : NULL;
  if (!hc || braid__hp_new(&hc->hp, &hp_cbs, hc)) {
    braid__free(hc);
    braid_conn_close(conn);
    return BRAID_ENOMEM;
  }
  if (ctx_attach(c)) {
    braid__hp_free(hc->hp);
    braid__free(hc);
    braid_conn_close(conn);
    return BRAID_ENOMEM;
  }
  hc->conn = conn;
  hc->ctx = c;
  hc->task.fn = hc_task_run;
  braid__list_init(&hc->queue);
  braid__list_push_back(&c->conns, &hc->cnode);
  braid_conn_callbacks_t cbs = {
      .on_read = on_read,
      .on_eof = on_eof,
      .on_close = on_close,
      .on_watermark = on_watermark,
      .on_drain = on_drain,
  };
  braid_conn_set_data(conn, hc);
  braid_conn_set_callbacks(conn, &cbs);
  int rc = braid_conn_read_start(conn);
  if (rc) {
    hc_close(hc);
    return rc;
  }
  hc_update_timer(hc);
  return 0;
}

void braid_http_server_on_connection(braid_server_t *tcp_server, braid_conn_t *conn,
                                     void *data) {
  (void)tcp_server;
  braid_http_server_serve(data, conn);
}

/* ---- closing ------------------------------------------------------------------------------ */

/* http_static.c's roots live as long as the server. */
void **braid__http_static_list(braid_http_server_t *s);
void braid__http_static_free(void *list);
void **braid__http_static_list(braid_http_server_t *s) {
  return &s->statics;
}
braid_loop_t *braid__http_server_loop(braid_http_server_t *s);
braid_loop_t *braid__http_server_loop(braid_http_server_t *s) {
  return s->loop;
}

static void server_free(braid_http_server_t *s) {
  braid__http_static_free(s->statics);
  for (size_t i = 0; i < s->nctxs; i++)
    ctx_free(s->ctxs[i]);
  braid__free(s->ctxs);
  for (size_t i = 0; i < s->nroutes; i++) {
    braid__free(s->routes[i].path);
    braid__free(s->routes[i].method);
  }
  braid__free(s->routes);
  braid__free(s->server_name);
  uv_mutex_destroy(&s->mu);
  braid__free(s);
}

static void server_finish(braid_http_server_t *s) {
  if (s->finished)
    return;
  s->finished = true;
  braid_loop_t *loop = s->loop;
  if (s->close_cb)
    s->close_cb(s, 0, s->close_arg);
  server_free(s);
  braid__loop_unref(loop);
}

static void on_close_timer_closed(uv_handle_t *h) {
  braid_http_server_t *s = h->data;
  braid__free(h);
  server_finish(s);
}

/* Runs from the loop after braid_http_server_close(), and again after each connection on
 * the server's loop closed: ends the close once the last one is gone. */
static void close_check(uv_timer_t *t) {
  braid_http_server_t *s = t->data;
  for (size_t i = 0; i < s->nctxs; i++)
    if (s->ctxs[i]->loop == s->loop && s->ctxs[i]->nconns)
      return; /* the last connection's close looks again */
  uv_close((uv_handle_t *)t, on_close_timer_closed);
}

int braid_http_server_close(braid_http_server_t *s, braid_http_server_close_cb cb, void *arg) {
  if (!s)
    return BRAID_EINVAL;
  if (s->closing)
    return BRAID_ECLOSED;
  uv_mutex_lock(&s->mu);
  bool busy = false;
  for (size_t i = 0; i < s->nctxs; i++)
    if (s->ctxs[i]->loop != s->loop && atomic_load(&s->ctxs[i]->nconns_shared))
      busy = true;
  uv_mutex_unlock(&s->mu);
  if (busy)
    return BRAID_EBUSY;
  s->close_timer = braid__malloc(sizeof(*s->close_timer));
  if (!s->close_timer)
    return BRAID_ENOMEM;
  uv_timer_init(braid_loop_uv(s->loop), s->close_timer);
  s->close_timer->data = s;
  uv_timer_start(s->close_timer, close_check, 0, 0);
  s->closing = true;
  s->close_cb = cb;
  s->close_arg = arg;
  for (size_t i = 0; i < s->nctxs; i++) {
    ctx_t *c = s->ctxs[i];
    if (c->loop != s->loop)
      continue;
    for (braid__node_t *n = c->conns.next; n != &c->conns;) {
      hconn_t *hc = BRAID__CONTAINER_OF(n, hconn_t, cnode);
      n = n->next;
      hc_close(hc);
    }
  }
  return 0;
}

/* ---- stats ---------------------------------------------------------------------------------- */

void braid_http_server_stats(braid_http_server_t *s, braid_http_server_stats_t *out) {
  memset(out, 0, sizeof(*out));
  uv_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nctxs; i++) {
    ctx_t *c = s->ctxs[i];
#define LD(x) atomic_load_explicit(&c->x, memory_order_relaxed)
    out->connections += LD(connections);
    out->requests += LD(requests);
    for (int k = 0; k < 6; k++)
      out->status[k] += LD(status[k]);
    out->keepalive_reuse += LD(ka_reuse);
    out->bytes_in += LD(bytes_in);
    out->body_bytes += LD(body_bytes);
    out->body_bytes_sent += LD(body_bytes_sent);
    out->compressed += LD(compressed);
    out->bad_requests += LD(bad_requests);
    out->timeouts += LD(timeouts);
    out->cache_hits += LD(cache_hits);
#undef LD
    uv_mutex_lock(&c->hist_mu);
    braid_histogram_merge(&out->latency_us, &c->hist);
    uv_mutex_unlock(&c->hist_mu);
  }
  uv_mutex_unlock(&s->mu);
  /* connections_open: connections served minus those closed is not kept per loop; count the
   * attached ones instead (a racy read across loops, as the rest). */
  uv_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nctxs; i++)
    out->connections_open += atomic_load_explicit(&s->ctxs[i]->nconns_shared,
                                                  memory_order_relaxed);
  uv_mutex_unlock(&s->mu);
}

int braid_http_server_stats_json(braid_http_server_t *s, char *buf, size_t size) {
  braid_http_server_stats_t *st = braid__malloc(sizeof(*st));
  if (!st)
    return snprintf(buf, size, "{}");
  braid_http_server_stats(s, st);
  char hist[256];
  braid_histogram_json(&st->latency_us, hist, sizeof(hist));
  int n = snprintf(
      buf, size,
      "{\"connections\":%llu,\"connections_open\":%llu,\"requests\":%llu,"
      "\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%llu},"
      "\"keepalive_reuse\":%llu,\"bytes_in\":%llu,\"body_bytes\":%llu,"
      "\"body_bytes_sent\":%llu,\"compressed\":%llu,\"bad_requests\":%llu,\"timeouts\":%llu,"
      "\"cache_hits\":%llu,\"latency_us\":%s}",
      (unsigned long long)st->connections, (unsigned long long)st->connections_open,
      (unsigned long long)st->requests, (unsigned long long)st->status[1],
      (unsigned long long)st->status[2], (unsigned long long)st->status[3],
      (unsigned long long)st->status[4], (unsigned long long)st->status[5],
      (unsigned long long)st->keepalive_reuse, (unsigned long long)st->bytes_in,
      (unsigned long long)st->body_bytes, (unsigned long long)st->body_bytes_sent,
      (unsigned long long)st->compressed, (unsigned long long)st->bad_requests,
      (unsigned long long)st->timeouts, (unsigned long long)st->cache_hits, hist);
  braid__free(st);
  return n;
}

/* Appends printf output at *n, keeping the would-be total like snprintf. */
static void cat(char *buf, size_t size, size_t *n, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void cat(char *buf, size_t size, size_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(*n < size ? buf + *n : NULL, *n < size ? size - *n : 0, fmt, ap);
  va_end(ap);
  if (w > 0)
    *n += (size_t)w;
}

int braid_http_server_stats_prometheus(braid_http_server_t *s, char *buf, size_t size) {
  braid_http_server_stats_t *st = braid__malloc(sizeof(*st));
  if (!st)
    return snprintf(buf, size, "\n");
  braid_http_server_stats(s, st);
  size_t n = 0;
  if (size)
    buf[0] = 0;
  cat(buf, size, &n, "# HELP braid_http_requests_total Requests answered, by status class.\n"
                     "# TYPE braid_http_requests_total counter\n");
  for (int k = 1; k <= 5; k++)
    cat(buf, size, &n, "braid_http_requests_total{class=\"%dxx\"} %llu\n", k,
        (unsigned long long)st->status[k]);
  struct {
    const char *name, *help, *type;
    uint64_t v;
  } m[] = {
      {"braid_http_connections_total", "Connections served.", "counter", st->connections},
      {"braid_http_connections_open", "Connections open now.", "gauge", st->connections_open},
      {"braid_http_keepalive_reuse_total", "Requests on a reused connection.", "counter",
       st->keepalive_reuse},
      {"braid_http_request_body_bytes_total", "Request body bytes received.", "counter",
       st->bytes_in},
      {"braid_http_response_body_bytes_total", "Response body bytes before compression.",
       "counter", st->body_bytes},
      {"braid_http_response_body_sent_bytes_total", "Response body bytes after compression.",
       "counter", st->body_bytes_sent},
      {"braid_http_compressed_responses_total", "Responses compressed.", "counter",
       st->compressed},
      {"braid_http_bad_requests_total", "Requests refused before a handler.", "counter",
       st->bad_requests},
      {"braid_http_timeouts_total", "Connections closed by a timeout.", "counter", st->timeouts},
      {"braid_http_cache_hits_total", "Responses served from a cache.", "counter",
       st->cache_hits},
  };
  for (size_t i = 0; i < BRAID__ARRAY_SIZE(m); i++)
    cat(buf, size, &n, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m[i].name, m[i].help, m[i].name,
        m[i].type, m[i].name, (unsigned long long)m[i].v);
  /* The latency histogram, in seconds, with fixed buckets from the recorded microseconds. */
  static const uint64_t bounds_us[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                                       100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
  cat(buf, size, &n, "# HELP braid_http_request_duration_seconds Request start to response "
                     "end.\n# TYPE braid_http_request_duration_seconds histogram\n");
  const braid_histogram_t *h = &st->latency_us;
  for (size_t b = 0; b < BRAID__ARRAY_SIZE(bounds_us); b++) {
    uint64_t cnt = 0;
    /* Count values <= bound by walking the buckets (each bucket's low edge). */
    for (size_t k = 0; k < BRAID_HIST_BUCKETS; k++) {
      if (!h->counts[k])
        continue;
      unsigned sub = BRAID_HIST_SUB_BITS;
      size_t exp = k >> sub, idx = k & ((1u << sub) - 1);
      uint64_t low = exp == 0 ? idx : ((uint64_t)(idx + (1u << sub)) << (exp - 1));
      if (low <= bounds_us[b])
        cnt += h->counts[k];
    }
    cat(buf, size, &n, "braid_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
        (double)bounds_us[b] / 1e6, (unsigned long long)cnt);
  }
  cat(buf, size, &n, "braid_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
      (unsigned long long)h->count);
  cat(buf, size, &n, "braid_http_request_duration_seconds_sum %.6f\n", (double)h->sum / 1e6);
  cat(buf, size, &n, "braid_http_request_duration_seconds_count %llu\n",
      (unsigned long long)h->count);
  braid__free(st);
  return (int)n;
}

/* ---- memoized responses --------------------------------------------------------------------- */

typedef struct memo_s {
  braid_http_req_t *req;
  const char *content_type; /* static or the caller's: see http.h */
  uint64_t ttl_ms;
  size_t key_len;
  char key[]; /* key, then room for the variant's suffix */
} memo_t;

static void memo_answer(memo_t *m, braid_cache_t *cache, braid_blob_t *value, bool hit) {
  braid_http_req_t *r = m->req;
  braid_http_header_t h[] = {{"Content-Type", m->content_type}};
  hconn_t *hc = r->hc;
  int enc = ENC_NONE;
  if (hc) {
    const braid_http_server_opts_t *o = &hc->ctx->srv->opts;
    if (hit)
      stat_add(&hc->ctx->cache_hits, 1);
    if (o->compress && compressible_type(m->content_type) &&
        braid_blob_len(value) >= o->compress_min_bytes)
      enc = negotiate_encoding(braid_http_req_header(r, "Accept-Encoding"));
  }
  if (enc == ENC_NONE) {
    braid_http_respond_blob(r, 200, h, 1, value);
    return;
  }
  /* The compressed variant has a key of its own: key, NUL, the coding's name. */
  const char *suffix = enc == ENC_GZIP ? "gzip" : "deflate";
  memcpy(m->key + m->key_len, "", 1);
  memcpy(m->key + m->key_len + 1, suffix, strlen(suffix));
  size_t vlen = m->key_len + 1 + strlen(suffix);
  braid_blob_t *z = NULL;
  if (braid_cache_get_blob(cache, m->key, vlen, &z) != 0) {
    braid_gzip_t *gz = ctx_compressor(hc->ctx, enc);
    void *out = NULL;
    size_t out_len = 0;
    if (!gz || braid_gzip_compress_alloc(gz, braid_blob_data(value), braid_blob_len(value), &out,
                                         &out_len) != 0 ||
        braid_blob_copy(&z, out, out_len) != 0) {
      braid_gzip_buf_free(out);
      braid_http_respond_blob(r, 200, h, 1, value); /* uncompressed, still correct */
      return;
    }
    braid_gzip_buf_free(out);
    braid_cache_put_blob(cache, m->key, vlen, z, m->ttl_ms);
  }
  r->precompressed = (uint8_t)enc;
  uint64_t saved = r->is_head ? 0 : braid_blob_len(value) - braid_blob_len(z);
  ctx_t *c = hc->ctx;
  braid_http_respond_blob(r, 200, h, 1, z);
  /* body_bytes counts bodies before compression, as for any compressed response */
  stat_add(&c->body_bytes, saved);
  braid_blob_unref(z);
}

static void memo_done(braid_cache_t *cache, int status, braid_blob_t *value, void *arg) {
  memo_t *m = arg;
  if (status != 0) {
    braid_http_respond(m->req, status == BRAID_ETOOMANYWAITERS ? 503 : 500, NULL, 0, NULL, 0);
  } else {
    memo_answer(m, cache, value, false); /* waited for a load: not a hit */
  }
  braid__free(m);
}

int braid_http_respond_memo(braid_http_req_t *r, braid_cache_t *cache, const void *key,
                            size_t key_len, const braid_cache_loader_t *loader,
                            const char *content_type) {
  if (!r || !r->user || r->res_state != RES_NONE || !cache || (!key && key_len) || !loader ||
      !content_type || strpbrk(content_type, "\r\n") || key_len > (1u << 20))
    return BRAID_EINVAL;
  memo_t *m = braid__malloc(sizeof(*m) + key_len + 16);
  if (!m)
    return BRAID_ENOMEM;
  m->req = r;
  m->content_type = content_type;
  m->ttl_ms = loader->ttl_ms;
  m->key_len = key_len;
  if (key_len)
    memcpy(m->key, key, key_len);
  braid_cache_stats_t st;
  uint64_t loads_before = braid_cache_stats(cache, &st) == 0 ? st.loads : 0;
  braid_blob_t *value = NULL;
  int rc = braid_cache_memo(cache, key, key_len, loader, &value, memo_done, m);
  if (rc == BRAID_PENDING)
    return 0; /* memo_done answers and frees m */
  if (rc < 0) {
    braid__free(m);
    return rc;
  }
  /* Known now: a hit, or a synchronous load (which counts as a load, not a hit). */
  bool hit = braid_cache_stats(cache, &st) == 0 && st.loads == loads_before;
  memo_answer(m, cache, value, hit);
  braid_blob_unref(value);
  braid__free(m);
  return 0;
}
