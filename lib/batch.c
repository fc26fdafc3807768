/* Request batching on an rpc channel.
 *
 * Waiting requests are encoded as they arrive, straight into the payload they will leave in:
 * for the braid protocol a batch frame (header room, count, then length-prefixed items) built
 * in the loop's pooled write chunks, which a flush hands to the connection's write queue as
 * they are; for ordered protocols the requests back to back in a buffer the channel copies.
 * A flush keeps only the callbacks, in a small context that the answer completes. Failures found while flushing are reported from the
 * loop's flush phase, so no callback ever runs inside braid_batcher_call/flush. */
#include "internal.h"

#include <inttypes.h>

typedef struct item_s {
  braid_rpc_response_cb cb;
  void *arg;
  uint32_t len; /* ordered mode: the request's bytes in buf, in order */
} item_t;

/* A flushed braid-protocol batch waiting for its answer. */
typedef struct sent_s {
  uint32_t count;
  item_t items[];
} sent_t;

typedef struct failed_s {
  item_t item;
  int status;
} failed_t;

struct braid_batcher_s {
  braid_rpc_t *rpc;
  braid_loop_t *loop;
  braid_batcher_opts_t o;
  bool ordered;

  item_t *items; /* waiting */
  uint32_t n_items;
  uint8_t *buf; /* ordered protocols: the requests being gathered */
  size_t buf_len, buf_cap;
  braid__wchain_t chain; /* braid protocol: frame header room, count, items, in write chunks */
  size_t data_bytes; /* request bytes waiting (what max_bytes bounds) */

  uv_timer_t *timer; /* linger > 0; freed by its own close callback */
  bool timer_armed;
  braid__flush_t flush; /* linger 0, and deferred failures */

  failed_t *failed;
  uint32_t n_failed, cap_failed;

  braid_batcher_stats_t stats;
  void *data; /* the user's (braid_batcher_set_data) */
};

#define COUNT_SIZE 4
#define ITEM_HEADER 4

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void braid_batcher_opts_init(braid_batcher_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->max_items = 64;
  o->max_bytes = 65536;
}

int braid_batcher_opts_validate(const braid_batcher_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->max_items < 1 || o->max_items > 65536)
    return braid__opts_fail(err, "max_items", "%u is outside 1..65536", o->max_items);
  if (o->max_bytes < 1 || o->max_bytes > ((size_t)1 << 24))
    return braid__opts_fail(err, "max_bytes", "%zu is outside 1..2^24", o->max_bytes);
  if (o->linger_us > 10000000)
    return braid__opts_fail(err, "linger_us", "%" PRIu64 " exceeds 10000000 (10 s)", o->linger_us);
  if (o->timeout_ms > BRAID__DEADLINE_MAX_MS)
    return braid__opts_fail(err, "timeout_ms", "%" PRIu64 " exceeds %" PRIu64, o->timeout_ms,
                            (uint64_t)BRAID__DEADLINE_MAX_MS);
  return 0;
}

static void on_flush_phase(braid__flush_t *f);

int braid_batcher_new(braid_batcher_t **out, braid_rpc_t *rpc, const braid_batcher_opts_t *o) {
  braid_batcher_opts_t defaults;
  if (!o) {
    braid_batcher_opts_init(&defaults);
    o = &defaults;
  }
  if (!out || !rpc)
    return BRAID_EINVAL;
  braid_conn_t *conn = braid_rpc_conn(rpc);
  braid_opts_error_t err;
  if (braid_batcher_opts_validate(o, &err)) {
    if (conn)
      braid__opts_log(braid_conn_loop(conn), "braid_batcher_new", &err);
    return BRAID_EINVAL;
  }
  if (!conn)
    return BRAID_ECLOSED;
  braid_batcher_t *b = braid__calloc(1, sizeof(*b));
  if (!b)
    return BRAID_ENOMEM;
  b->rpc = rpc;
  b->loop = braid_conn_loop(conn);
  b->o = *o;
  b->items = braid__malloc(o->max_items * sizeof(*b->items));
  if (!b->items) {
    braid__free(b);
    return BRAID_ENOMEM;
  }
  if (o->linger_us) {
    b->timer = braid__malloc(sizeof(*b->timer));
    if (!b->timer) {
      braid__free(b->items);
      braid__free(b);
      return BRAID_ENOMEM;
    }
    uv_timer_init(braid_loop_uv(b->loop), b->timer);
    b->timer->data = b;
  }
  b->flush.fn = on_flush_phase;
  braid__rpc_ref(rpc);
  braid__loop_ref(b->loop);
  *out = b;
  return 0;
}

static void defer_failure(braid_batcher_t *b, const item_t *it, int status) {
  if (b->n_failed == b->cap_failed) {
    uint32_t cap = b->cap_failed ? b->cap_failed * 2 : 16;
    failed_t *n = braid__realloc(b->failed, cap * sizeof(*n));
    if (!n) {
      /* Out of memory even to report: report now, inline, rather than lose it. */
      braid_rpc_result_t r = {0, 0, NULL, 0};
      it->cb(b->rpc, status, &r, it->arg);
      return;
    }
    b->failed = n;
    b->cap_failed = cap;
  }
  b->failed[b->n_failed++] = (failed_t){*it, status};
  braid__loop_want_flush(b->loop, &b->flush);
}

static void deliver_failures(braid_batcher_t *b) {
  /* Callbacks may add failures (a new call that fails to flush): take the list first. */
  while (b->n_failed) {
    failed_t *list = b->failed;
    uint32_t n = b->n_failed;
    b->failed = NULL;
    b->n_failed = b->cap_failed = 0;
    for (uint32_t i = 0; i < n; i++) {
      braid_rpc_result_t r = {0, 0, NULL, 0};
      list[i].item.cb(b->rpc, list[i].status, &r, list[i].item.arg);
    }
    braid__free(list);
  }
}

/* The answer to a flushed braid-protocol batch: one result per item, in order. */
static void on_batch_answer(braid_rpc_t *rpc, int status, const braid_rpc_result_t *res,
                            void *arg) {
  sent_t *s = arg;
  braid_batch_reader_t rd;
  uint32_t count = 0;
  int bad = 0;
  if (status == 0) {
    if (!(res->flags & BRAID_FRAME_FLAG_BATCH) ||
        braid_batch_reader_init(&rd, res->data, res->len, 1, &count) || count != s->count)
      bad = BRAID_EPROTO;
  }
  for (uint32_t i = 0; i < s->count; i++) {
    braid_rpc_result_t r = *res;
    int st = status;
    if (status == 0 && !bad) {
      braid_batch_item_t it;
      braid_batch_reader_next(&rd, &it);
      r.flags = 0;
      r.data = it.data;
      r.len = it.len;
      r.remote_code = it.status;
      st = it.status ? BRAID_EREMOTE : 0;
    } else if (bad) {
      r = (braid_rpc_result_t){0, 0, NULL, 0};
      st = bad;
    }
    s->items[i].cb(rpc, st, &r, s->items[i].arg);
  }
  braid__free(s);
}

static void reset_waiting(braid_batcher_t *b) {
  b->n_items = 0;
  b->buf_len = 0;
  braid__wchain_free(b->loop, &b->chain); /* left only when the flush failed */
  b->data_bytes = 0;
  if (b->timer_armed) {
    uv_timer_stop(b->timer);
    b->timer_armed = false;
  }
}

static int do_flush(braid_batcher_t *b, braid_flush_reason_t why) {
  uint32_t n = b->n_items;
  if (n == 0)
    return 0;
  b->stats.batches++;
  b->stats.flushes[why]++;
  braid_histogram_record(&b->stats.batch_size, n);
  int rc = 0;
  if (b->ordered) {
    /* Back to back: the connection coalesces them into one write. */
    size_t off = 0;
    uint32_t i = 0;
    for (; i < n; i++) {
      rc = braid_rpc_call(b->rpc, b->buf + off, b->items[i].len, b->o.timeout_ms, b->items[i].cb,
                          b->items[i].arg);
      if (rc)
        break;
      off += b->items[i].len;
    }
    for (; i < n; i++)
      defer_failure(b, &b->items[i], rc);
  } else {
    uint8_t count[COUNT_SIZE];
    put_u32(count, n);
    braid__wchain_overwrite(&b->chain, BRAID_FRAME_HEADER_SIZE, count, sizeof(count));
    sent_t *s = braid__malloc(sizeof(*s) + n * sizeof(item_t));
    if (!s) {
      rc = BRAID_ENOMEM;
    } else {
      s->count = n;
      memcpy(s->items, b->items, n * sizeof(item_t));
      rc = braid__rpc_call_wchain(b->rpc, BRAID_FRAME_FLAG_BATCH, &b->chain, b->o.timeout_ms,
                                  on_batch_answer, s);
      if (rc)
        braid__free(s);
    }
    if (rc)
      for (uint32_t i = 0; i < n; i++)
        defer_failure(b, &b->items[i], rc);
  }
  if (rc)
    b->stats.failed_flushes++;
  reset_waiting(b);
  return rc;
}

static void on_flush_phase(braid__flush_t *f) {
  braid_batcher_t *b = BRAID__CONTAINER_OF(f, braid_batcher_t, flush);
  if (b->o.linger_us == 0)
    do_flush(b, BRAID_FLUSH_LINGER);
  deliver_failures(b);
}

static void on_linger(uv_timer_t *t) {
  braid_batcher_t *b = t->data;
  b->timer_armed = false;
  do_flush(b, BRAID_FLUSH_LINGER);
}

static int reserve_buf(braid_batcher_t *b, size_t more) {
  if (b->buf_len + more <= b->buf_cap)
    return 0;
  size_t cap = b->buf_cap ? b->buf_cap : 1024;
  while (cap < b->buf_len + more)
    cap *= 2;
  uint8_t *n = braid__realloc(b->buf, cap);
  if (!n)
    return BRAID_ENOMEM;
  b->buf = n;
  b->buf_cap = cap;
  return 0;
}

int braid_batcher_call(braid_batcher_t *b, const void *data, size_t len, braid_rpc_response_cb cb,
                       void *arg) {
  if (!b || !cb || (!data && len))
    return BRAID_EINVAL;
  if (len > b->o.max_bytes)
    return BRAID_ETOOBIG;
  if (!braid_rpc_conn(b->rpc))
    return BRAID_ECLOSED;
  if (b->n_items == 0)
    b->ordered = braid__rpc_is_ordered(b->rpc);
  /* Keep the memory bound: what would overflow goes out first. */
  if (b->data_bytes + len > b->o.max_bytes)
    do_flush(b, BRAID_FLUSH_BYTES);
  if (b->ordered) {
    if (reserve_buf(b, len))
      return BRAID_ENOMEM;
    if (len)
      memcpy(b->buf + b->buf_len, data, len);
    b->buf_len += len;
  } else {
    if (b->chain.len == 0) {
      /* Room for the frame header (the channel writes it) and the count (the flush). */
      static const uint8_t room[BRAID_FRAME_HEADER_SIZE + COUNT_SIZE];
      if (braid__wchain_append(b->loop, &b->chain, room, sizeof(room)))
        return BRAID_ENOMEM;
    }
    uint8_t head[ITEM_HEADER];
    put_u32(head, (uint32_t)len);
    uv_buf_t parts[2] = {uv_buf_init((char *)head, sizeof(head)),
                         uv_buf_init((char *)data, (unsigned)len)};
    if (braid__wchain_appendv(b->loop, &b->chain, parts, len ? 2 : 1))
      return BRAID_ENOMEM;
  }
  b->data_bytes += len;
  b->items[b->n_items++] = (item_t){cb, arg, (uint32_t)len};
  b->stats.requests++;
  if (b->n_items >= b->o.max_items) {
    do_flush(b, BRAID_FLUSH_ITEMS);
  } else if (b->data_bytes >= b->o.max_bytes) {
    do_flush(b, BRAID_FLUSH_BYTES);
  } else if (b->n_items == 1) {
    if (b->o.linger_us == 0) {
      braid__loop_want_flush(b->loop, &b->flush);
    } else {
      uint64_t ms = (b->o.linger_us + 999) / 1000; /* libuv timers tick in ms */
      uv_timer_start(b->timer, on_linger, ms, 0);
      b->timer_armed = true;
    }
  }
  return 0;
}

int braid_batcher_flush(braid_batcher_t *b) {
  if (!b)
    return BRAID_EINVAL;
  return do_flush(b, BRAID_FLUSH_EXPLICIT);
}

static void on_timer_closed(uv_handle_t *h) {
  braid__free(h);
}

void braid_batcher_set_data(braid_batcher_t *b, void *data) {
  b->data = data;
}

void *braid_batcher_get_data(const braid_batcher_t *b) {
  return b->data;
}

void braid_batcher_free(braid_batcher_t *b) {
  if (!b)
    return;
  do_flush(b, BRAID_FLUSH_EXPLICIT);
  braid__loop_cancel_flush(&b->flush);
  deliver_failures(b);
  if (b->timer)
    uv_close((uv_handle_t *)b->timer, on_timer_closed);
  braid__rpc_unref(b->rpc);
  braid__loop_unref(b->loop);
  braid__wchain_free(b->loop, &b->chain);
  braid__free(b->items);
  braid__free(b->buf);
  braid__free(b->failed);
  braid__free(b);
}

void braid_batcher_stats(const braid_batcher_t *b, braid_batcher_stats_t *out) {
  *out = b->stats;
}
