/* kv_server: an in-memory key-value server speaking the braid protocol.
 *
 *   kv_server [--host ADDR] [--port N] [--workers N] [--max-entries N] [--max-bytes N]
 *
 * It prints one line, "listening on ADDR:PORT", once it accepts connections, and serves the
 * GET / SET / DEL / MGET operations of docs/PROTOCOL.md section 9, one request per frame or
 * many in a BATCH frame. SIGINT or SIGTERM drains it: it stops accepting, tells every
 * connected client GOAWAY (braid_server_drain does that for rpc channels), answers what it
 * had taken, closes each connection as its last answer goes out (or at a 2 s deadline),
 * and exits 0.
 *
 * It is written to face clients it does not trust: keys are hashed with a key a client cannot
 * know (no crafted collisions), every answer is checked against the client's maximum payload
 * before it is built (no request makes it allocate more than one maximal answer), every
 * failure to answer is handled, and connections get timeouts and an output bound.
 *
 * Read it top to bottom: the store, the wire format (with each answer's budget), answering,
 * the rpc callbacks, then main. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

/* ---- the store: one hash table behind one mutex ------------------------------------------
 *
 * With --workers N the server runs N loops on N threads, and every one of them serves
 * requests against this one table, so it is guarded by a mutex. A lock per request is cheap
 * next to a system call; the batch handler takes it once for a whole batch. (The other design,
 * one store per worker, would split the key space by connection, which a kv server cannot
 * do.) The table is bounded by entry count and bytes: a SET that would pass either limit is
 * refused with OVERLOADED and a message that says which limit, and nothing is stored.
 * (braid's shared cache, braid/cache.h, is hashed as safely and striped, but a cache evicts
 * to stay within its bounds, and a store must keep what it said it stored.) */

typedef struct entry_s {
  struct entry_s *next;
  uint64_t hash;
  uint16_t klen;
  uint32_t vlen;
  uint8_t bytes[]; /* key, then value */
} entry_t;

typedef struct store_s {
  uv_mutex_t lock;
  braid_hash_key_t hash_key; /* drawn from the OS at start; see hash_key() */
  entry_t **buckets;
  size_t nbuckets; /* a power of two */
  size_t entries, bytes;
  size_t max_entries, max_bytes;
} store_t;

/* What an entry costs against max_bytes: its bytes and its bookkeeping. */
static size_t entry_cost(size_t klen, size_t vlen) {
  return sizeof(entry_t) + klen + vlen;
}

/* Keys come from clients, so the hash must be one a client cannot predict. With a fixed hash
 * (this server used FNV-1a) a client can compute thousands of keys that share one bucket, and
 * then every SET and GET walks that whole chain while holding the lock: 32,768 such keys cost
 * 3.5 s of server CPU against 0.1 s for random ones (hash flooding, CVE-2011-4885 and
 * friends). SipHash-1-3 under a key drawn from the OS at start (braid/hash.h) leaves a client
 * nothing to compute such keys from. */
static uint64_t hash_key(const store_t *s, const uint8_t *key, size_t len) {
  return braid_siphash13(&s->hash_key, key, len);
}

static int store_init(store_t *s, size_t max_entries, size_t max_bytes) {
  memset(s, 0, sizeof(*s));
  if (braid_hash_key_random(&s->hash_key) != 0)
    return -1;
  s->nbuckets = 1024;
  s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
  s->max_entries = max_entries;
  s->max_bytes = max_bytes;
  if (!s->buckets || uv_mutex_init(&s->lock) != 0) {
    free(s->buckets);
    return -1;
  }
  return 0;
}

static void store_free(store_t *s) {
  for (size_t b = 0; b < s->nbuckets; b++) {
    entry_t *e = s->buckets[b];
    while (e) {
      entry_t *next = e->next;
      free(e);
      e = next;
    }
  }
  free(s->buckets);
  uv_mutex_destroy(&s->lock);
}

/* Finds the link that points at key's entry (or the NULL at its chain's end). */
static entry_t **store_find(store_t *s, const uint8_t *key, uint16_t klen, uint64_t h) {
  entry_t **pp = &s->buckets[h & (s->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->bytes, key, klen) == 0)
      return pp;
  return pp;
}

/* Doubles the bucket array when the table is as full as it is wide. Growth failing is not an
 * error: the chains just get longer. */
static void store_maybe_grow(store_t *s) {
  if (s->entries < s->nbuckets)
    return;
  size_t n = s->nbuckets * 2;
  entry_t **nb = calloc(n, sizeof(*nb));
  if (!nb)
    return;
  for (size_t b = 0; b < s->nbuckets; b++) {
    entry_t *e = s->buckets[b];
    while (e) {
      entry_t *next = e->next;
      e->next = nb[e->hash & (n - 1)];
      nb[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(s->buckets);
  s->buckets = nb;
  s->nbuckets = n;
}

/* Results of store operations, beyond 0 = done. */
enum { KV_NOT_FOUND = 1, KV_FULL_ENTRIES = -1, KV_FULL_BYTES = -2, KV_NOMEM = -3 };

static int store_set(store_t *s, const uint8_t *key, uint16_t klen, const uint8_t *val,
                     uint32_t vlen) {
  uint64_t h = hash_key(s, key, klen);
  entry_t **pp = store_find(s, key, klen, h);
  entry_t *old = *pp;
  size_t old_cost = old ? entry_cost(old->klen, old->vlen) : 0;
  if (!old && s->entries >= s->max_entries)
    return KV_FULL_ENTRIES;
  if (s->bytes - old_cost + entry_cost(klen, vlen) > s->max_bytes)
    return KV_FULL_BYTES;
  entry_t *e = malloc(entry_cost(klen, vlen));
  if (!e)
    return KV_NOMEM;
  e->next = old ? old->next : NULL;
  e->hash = h;
  e->klen = klen;
  e->vlen = vlen;
  memcpy(e->bytes, key, klen);
  if (vlen)
    memcpy(e->bytes + klen, val, vlen);
  *pp = e;
  free(old);
  s->bytes = s->bytes - old_cost + entry_cost(klen, vlen);
  if (!old) {
    s->entries++;
    store_maybe_grow(s);
  }
  return 0;
}

static int store_del(store_t *s, const uint8_t *key, uint16_t klen) {
  entry_t **pp = store_find(s, key, klen, hash_key(s, key, klen));
  entry_t *e = *pp;
  if (!e)
    return KV_NOT_FOUND;
  *pp = e->next;
  s->entries--;
  s->bytes -= entry_cost(e->klen, e->vlen);
  free(e);
  return 0;
}

static const entry_t *store_get(store_t *s, const uint8_t *key, uint16_t klen) {
  return *store_find(s, key, klen, hash_key(s, key, klen));
}

/* ---- the wire format (PROTOCOL.md section 9) ----------------------------------------------
 *
 * Answers are built in an output buffer that starts on the stack and moves to the heap only
 * for large values. Every answer must fit the client's max_payload (PROTOCOL.md section 5:
 * a sender MUST NOT pass it), and a few bytes of request can ask for far more than that (an
 * MGET naming one large value a thousand times), so each request gets a budget, room, and
 * what would not fit in it is refused with TOO_BIG before anything is built: no request
 * makes the server allocate more than one answer's worth. */

enum { OP_GET = 1, OP_SET = 2, OP_DEL = 3, OP_MGET = 4 };

typedef struct out_s {
  uint8_t *data;
  size_t len, cap;
  uint8_t *heap; /* data when it moved off the stack */
  size_t max;    /* the most it will need: the answer's budget */
} out_t;

static int out_reserve(out_t *o, size_t more) {
  if (o->cap - o->len >= more)
    return 0;
  /* Doubling saves copies, but need not overshoot the budget (the callers' checks keep
   * len + more within it). */
  size_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more;
  if (cap > o->max && o->max >= o->len + more)
    cap = o->max;
  uint8_t *p = realloc(o->heap, cap);
  if (!p)
    return -1;
  if (!o->heap)
    memcpy(p, o->data, o->len);
  o->heap = o->data = p;
  o->cap = cap;
  return 0;
}

static int out_u8(out_t *o, uint8_t v) {
  if (out_reserve(o, 1))
    return -1;
  o->data[o->len++] = v;
  return 0;
}

static int out_u16(out_t *o, uint16_t v) {
  if (out_reserve(o, 2))
    return -1;
  o->data[o->len++] = (uint8_t)(v >> 8);
  o->data[o->len++] = (uint8_t)v;
  return 0;
}

/* What a found value adds to an answer: "0 (found), u32 vlen, value". */
static size_t value_size(const entry_t *e) {
  return 5 + (size_t)e->vlen;
}

static int out_value(out_t *o, const entry_t *e) {
  if (out_reserve(o, value_size(e)))
    return -1;
  uint8_t *p = o->data + o->len;
  p[0] = 0;
  p[1] = (uint8_t)(e->vlen >> 24);
  p[2] = (uint8_t)(e->vlen >> 16);
  p[3] = (uint8_t)(e->vlen >> 8);
  p[4] = (uint8_t)e->vlen;
  memcpy(p + 5, e->bytes + e->klen, e->vlen);
  o->len += value_size(e);
  return 0;
}

/* A cursor over a request's fields; every read checks the bounds. */
typedef struct in_s {
  const uint8_t *p, *end;
} in_t;

static int in_u16(in_t *in, uint16_t *v) {
  if (in->end - in->p < 2)
    return -1;
  *v = (uint16_t)(in->p[0] << 8 | in->p[1]);
  in->p += 2;
  return 0;
}

static int in_u32(in_t *in, uint32_t *v) {
  if (in->end - in->p < 4)
    return -1;
  *v = (uint32_t)in->p[0] << 24 | (uint32_t)in->p[1] << 16 | (uint32_t)in->p[2] << 8 | in->p[3];
  in->p += 4;
  return 0;
}

/* Reads "u16 klen, key" with klen >= 1. */
static int in_key(in_t *in, const uint8_t **key, uint16_t *klen) {
  if (in_u16(in, klen) || *klen == 0 || in->end - in->p < *klen)
    return -1;
  *key = in->p;
  in->p += *klen;
  return 0;
}

/* Why a request failed: a wire code and a message for the ERROR frame (or batch item). Every
 * message is shorter than KV_MSG_MAX bytes, which the batch handler counts on. */
typedef struct kv_error_s {
  uint16_t code;
  const char *msg;
} kv_error_t;

enum { KV_MSG_MAX = 64 };

static const kv_error_t bad = {BRAID_WIRE_BAD_REQUEST, "malformed kv request"};
static const kv_error_t unknown_op = {BRAID_WIRE_UNSUPPORTED, "unknown kv op"};
static const kv_error_t nomem = {BRAID_WIRE_INTERNAL, "out of memory"};
static const kv_error_t too_big = {BRAID_WIRE_TOO_BIG, "answer would exceed the max payload"};
static const kv_error_t full_entries = {BRAID_WIRE_OVERLOADED, "store full: max entries reached"};
static const kv_error_t full_bytes = {BRAID_WIRE_OVERLOADED, "store full: max bytes reached"};

/* Runs one kv request against the store (locked by the caller) and appends its answer to
 * out, in at most room bytes (an answer that would not fit is refused before the request
 * has any effect). Returns 0, or -1 with *err set. */
static int kv_execute(store_t *s, const uint8_t *req, size_t len, size_t room, out_t *out,
                      kv_error_t *err) {
  in_t in = {req + 1, req + len};
  const uint8_t *key;
  uint16_t klen, n;
  uint32_t vlen;
  const entry_t *e;
  int rc;
  if (len == 0)
    return *err = bad, -1;
  switch (req[0]) {
  case OP_GET:
    if (in_key(&in, &key, &klen) || in.p != in.end)
      return *err = bad, -1;
    e = store_get(s, key, klen);
    if ((e ? value_size(e) : 1) > room)
      return *err = too_big, -1;
    rc = e ? out_value(out, e) : out_u8(out, KV_NOT_FOUND);
    break;
  case OP_SET:
    if (in_key(&in, &key, &klen) || in_u32(&in, &vlen) || (size_t)(in.end - in.p) != vlen)
      return *err = bad, -1;
    if (room < 1)
      return *err = too_big, -1;
    rc = store_set(s, key, klen, in.p, vlen);
    if (rc == KV_FULL_ENTRIES)
      return *err = full_entries, -1;
    if (rc == KV_FULL_BYTES)
      return *err = full_bytes, -1;
    rc = rc ? rc : out_u8(out, 0);
    break;
  case OP_DEL:
    if (in_key(&in, &key, &klen) || in.p != in.end)
      return *err = bad, -1;
    if (room < 1)
      return *err = too_big, -1;
    rc = out_u8(out, (uint8_t)store_del(s, key, klen));
    break;
  case OP_MGET:
    if (in_u16(&in, &n) || n == 0)
      return *err = bad, -1;
    /* First pass: validate every key (a bad request leaves no partial answer) and add up
     * the answer's size (in 64 bits: 65,535 values of up to 4 GiB each). */
    {
      in_t scan = in;
      uint64_t need = 2;
      for (uint16_t i = 0; i < n; i++) {
        if (in_key(&scan, &key, &klen))
          return *err = bad, -1;
        e = store_get(s, key, klen);
        need += e ? value_size(e) : 1;
      }
      if (scan.p != scan.end)
        return *err = bad, -1;
      if (need > room)
        return *err = too_big, -1;
      rc = out_reserve(out, (size_t)need); /* one allocation, of exactly the answer */
    }
    /* Second pass: the answer. The lock is held throughout, so it is the size just counted. */
    rc = rc ? rc : out_u16(out, n);
    for (uint16_t i = 0; rc == 0 && i < n; i++) {
      in_key(&in, &key, &klen);
      e = store_get(s, key, klen);
      rc = e ? out_value(out, e) : out_u8(out, KV_NOT_FOUND);
    }
    break;
  default:
    return *err = unknown_op, -1;
  }
  if (rc)
    return *err = nomem, -1;
  return 0;
}

/* ---- answering ----------------------------------------------------------------------------
 *
 * braid_rpc_respond() can fail, and an example is what gets copied, so every outcome is
 * handled here:
 *   0              the answer is queued;
 *   BRAID_ECLOSED  the client is gone, or it stopped reading until its connection reached
 *                  its output bound and the channel closed it: the answer is dropped and req
 *                  freed, nothing to do;
 *   BRAID_ETOOBIG  over the client's max payload (the budgets above keep it from happening):
 *                  the channel has answered ERROR TOO_BIG itself and freed req;
 *   BRAID_ENOMEM   req is still unanswered: ERROR INTERNAL;
 *   BRAID_EINVAL   req was answered already: a bug in this program (nothing was sent).
 * An error that cannot be sent either would leave the client waiting for ever and the
 * channel open for a request it never finishes: close the channel; an answer into a closed
 * channel cannot fail, and frees req. */

static void send_error(braid_rpc_t *rpc, braid_rpc_req_t *req, kv_error_t err) {
  int rc = braid_rpc_respond_error(req, err.code, err.msg);
  if (rc == 0 || rc == BRAID_ECLOSED)
    return;
  fprintf(stderr, "kv_server: cannot answer a request: %s\n", braid_strerror(rc));
  if (rc == BRAID_ENOMEM) { /* req is still unanswered: see above */
    braid_rpc_close(rpc);
    braid_rpc_respond_error(req, err.code, err.msg);
  }
}

static void send_answer(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len) {
  int rc = braid_rpc_respond(req, data, len);
  if (rc == BRAID_ENOMEM)
    send_error(rpc, req, nomem);
  else if (rc == BRAID_ETOOBIG || rc == BRAID_EINVAL)
    fprintf(stderr, "kv_server: cannot answer a request: %s\n", braid_strerror(rc));
}

/* ---- rpc callbacks ------------------------------------------------------------------------ */

typedef struct server_s {
  store_t store;
  size_t max_payload; /* the largest payload a client accepts (and this server, too) */
  braid_server_t *server;
  uv_signal_t sigint, sigterm;
} server_t;

/* One request: run it under the lock, answer after unlocking. */
static void on_request(braid_rpc_t *rpc, braid_rpc_req_t *req, const uint8_t *data, size_t len,
                       void *arg) {
  server_t *sv = arg;
  uint8_t stack[4096];
  out_t out = {stack, 0, sizeof(stack), NULL, sv->max_payload};
  kv_error_t err;
  uv_mutex_lock(&sv->store.lock);
  int rc = kv_execute(&sv->store, data, len, sv->max_payload, &out, &err);
  uv_mutex_unlock(&sv->store.lock);
  if (rc == 0)
    send_answer(rpc, req, out.data, out.len);
  else
    send_error(rpc, req, err);
  free(out.heap);
}

/* A batch answer is one payload: a u32 count, then for each item a u16 status, a u32 length
 * and the item's answer (or error message). ITEM_MIN is what any item may need at least. */
enum { ITEM_HEADER = 6, ITEM_MIN = ITEM_HEADER + KV_MSG_MAX };

/* A whole batch: one lock for all of its items, every answer built into one buffer, then
 * handed out item by item (the channel sends one batch answer after the last).
 * The whole batch answer must fit the client's max payload. Items take their room in order,
 * each leaving ITEM_MIN for every item after it, so a large early answer cannot leave a later
 * item without room for its error; an item that does not fit fails alone with TOO_BIG. (The
 * channel refuses a batch of more than max_inflight items, 1024, before calling this, so the
 * reserve is at most 70 KiB of the 16 MiB.) */
static void on_batch(braid_rpc_t *rpc, braid_rpc_req_t **reqs, const braid_batch_item_t *items,
                     uint32_t count, void *arg) {
  server_t *sv = arg;
  uint8_t stack[16384];
  out_t out = {stack, 0, sizeof(stack), NULL, sv->max_payload};
  size_t *ends = malloc(count * sizeof(*ends));
  kv_error_t *errs = malloc(count * sizeof(*errs));
  if (!ends || !errs) {
    for (uint32_t i = 0; i < count; i++)
      send_error(rpc, reqs[i], nomem);
    free(ends);
    free(errs);
    return;
  }
  size_t used = 4; /* the count */
  uv_mutex_lock(&sv->store.lock);
  for (uint32_t i = 0; i < count; i++) {
    size_t keep = used + ITEM_HEADER + (size_t)(count - 1 - i) * ITEM_MIN;
    size_t room = keep < sv->max_payload ? sv->max_payload - keep : 0;
    size_t start = out.len;
    if (kv_execute(&sv->store, items[i].data, items[i].len, room, &out, &errs[i]) == 0) {
      errs[i].code = 0; /* every error code is nonzero, so 0 marks success */
      used += ITEM_HEADER + (out.len - start);
    } else {
      used += ITEM_HEADER + strlen(errs[i].msg);
    }
    ends[i] = out.len;
  }
  uv_mutex_unlock(&sv->store.lock);
  size_t start = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (errs[i].code)
      send_error(rpc, reqs[i], errs[i]);
    else
      send_answer(rpc, reqs[i], out.data + start, ends[i] - start);
    start = ends[i];
  }
  free(out.heap);
  free(ends);
  free(errs);
}

/* Every accepted connection becomes an rpc server channel. With workers this runs on worker
 * threads; it touches nothing shared but the options it reads. */
static void on_connection(braid_server_t *server, braid_conn_t *conn, void *arg) {
  (void)server;
  server_t *sv = arg;
  braid_rpc_opts_t o;
  braid_rpc_opts_init(&o);
  o.max_payload_bytes = sv->max_payload;
  static const braid_rpc_callbacks_t cbs = {.on_request = on_request, .on_batch = on_batch};
  braid_rpc_t *rpc;
  if (braid_rpc_server(&rpc, conn, &o, &cbs, sv) != 0) /* the channel's data: the server's */
    braid_conn_close(conn);
}

/* ---- shutdown ----------------------------------------------------------------------------- */

static void on_drained(braid_server_t *server, int status, void *arg) {
  (void)server;
  (void)arg;
  fprintf(stderr, "kv_server: drained%s\n", status == BRAID_ETIMEDOUT ? " (deadline hit)" : "");
}

/* SIGINT or SIGTERM: stop accepting and drain. The drain sends GOAWAY on every channel, so
 * clients send nothing new (a pool moves to its other endpoints) and each connection closes
 * once its requests are answered; the 2 s deadline only closes what is still open then.
 * Once the server and the signal handles are closed, the loop runs out of work and main
 * returns. */
static void on_signal(uv_signal_t *sig, int signum) {
  server_t *sv = sig->data;
  fprintf(stderr, "kv_server: signal %d, draining\n", signum);
  uv_close((uv_handle_t *)&sv->sigint, NULL);
  uv_close((uv_handle_t *)&sv->sigterm, NULL);
  braid_server_drain(sv->server, 2000, on_drained, sv);
}

/* ---- main --------------------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: kv_server [--host ADDR] [--port N] [--workers N] "
                  "[--max-entries N] [--max-bytes N]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  long port = 7379, workers = 1;
  size_t max_entries = 1000000, max_bytes = (size_t)256 << 20;
  for (int i = 1; i < argc; i += 2) {
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!val)
      return usage();
    if (strcmp(argv[i], "--host") == 0)
      host = val;
    else if (strcmp(argv[i], "--port") == 0)
      port = strtol(val, NULL, 10);
    else if (strcmp(argv[i], "--workers") == 0)
      workers = strtol(val, NULL, 10);
    else if (strcmp(argv[i], "--max-entries") == 0)
      max_entries = strtoull(val, NULL, 10);
    else if (strcmp(argv[i], "--max-bytes") == 0)
      max_bytes = strtoull(val, NULL, 10);
    else
      return usage();
  }
  if (port < 0 || port > 65535 || workers < 1 || workers > 256)
    return usage();

  static server_t sv;
  braid_loop_t *loop;
  if (store_init(&sv.store, max_entries, max_bytes) != 0 || braid_loop_new(&loop, NULL) != 0) {
    fprintf(stderr, "kv_server: cannot set up the store or the loop\n");
    return 1;
  }
  /* PROTOCOL.md section 5: with no negotiation, peers are configured alike, so the largest
   * answer a client takes is the max payload this server takes too (the default, 16 MiB). */
  braid_rpc_opts_t ro;
  braid_rpc_opts_init(&ro);
  sv.max_payload = ro.max_payload_bytes;

  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.workers = (unsigned)workers;
  /* A server facing the network holds no connection for ever and no answers without bound:
   * a connection silent for 75 s closes (nginx's keep-alive), as does one whose client
   * stopped reading for 60 s; and a client that asks for more than two maximal answers
   * without reading them is cut off (Redis's client-output-buffer-limit), which bounds what
   * one connection can make this server hold. */
  so.conn.idle_timeout_ms = 75000;
  so.conn.write_timeout_ms = 60000;
  so.conn.max_queue_bytes = 2 * (sv.max_payload + BRAID_FRAME_HEADER_SIZE);
  int rc = braid_server_new(&sv.server, loop, &so, on_connection, &sv);
  if (rc == 0)
    rc = braid_server_listen(sv.server, host, (int)port);
  if (rc != 0) {
    fprintf(stderr, "kv_server: %s:%ld: %s\n", host, port, braid_strerror(rc));
    if (sv.server)
      braid_server_close(sv.server, NULL, NULL);
    braid_loop_run(loop, UV_RUN_DEFAULT);
    braid_loop_close(loop);
    store_free(&sv.store);
    return 1;
  }

  uv_signal_init(braid_loop_uv(loop), &sv.sigint);
  uv_signal_init(braid_loop_uv(loop), &sv.sigterm);
  sv.sigint.data = sv.sigterm.data = &sv;
  uv_signal_start(&sv.sigint, on_signal, SIGINT);
  uv_signal_start(&sv.sigterm, on_signal, SIGTERM);

  printf("listening on %s:%d\n", host, braid_server_port(sv.server));
  fflush(stdout);

  braid_loop_run(loop, UV_RUN_DEFAULT);
  rc = braid_loop_close(loop);
  store_free(&sv.store);
  return rc == 0 ? 0 : 1;
}
