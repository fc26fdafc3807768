/* braid: request batching.
 *
 * A batcher collects requests for one rpc channel and sends them together: on a braid
 * protocol channel as one BATCH frame (one header, one id, one answer frame carrying every
 * result in order), on an ordered channel as back-to-back requests that leave in one write.
 * It flushes when max_items requests wait, when their bytes reach max_bytes, linger_us after
 * the first one arrived (0: at the end of the current loop iteration), or on
 * braid_batcher_flush(). Each request completes exactly once with its own result or error,
 * also when the batch as a whole fails (deadline, connection loss, remote error): then every
 * request in it gets that error.
 *
 * The batcher belongs to the channel's loop thread. It holds at most max_bytes of request
 * bytes; once flushed, requests belong to the channel (its max_inflight and max_queued
 * apply to whole batches). */
#ifndef BRAID_BATCH_H
#define BRAID_BATCH_H

#include "common.h"
#include "error.h"
#include "rpc.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_batcher_s braid_batcher_t;

typedef struct braid_batcher_opts_s {
  /* Flush when this many requests wait. Default 64; bounds 1..65536. */
  unsigned max_items;
  /* Flush when the waiting requests' bytes reach this; a request that would take them past
   * it flushes the others first, and one larger than it alone fails with BRAID_ETOOBIG.
   * Bounds the batcher's memory. Default 65536; bounds 1..(1 << 24). */
  size_t max_bytes;
  /* Latency bound: flush this long after the first waiting request arrived. 0 (default) =
   * at the end of the current loop iteration, so requests made while handling one event
   * share a batch and none waits for a timer. Bounds 0..10000000 (10 s). */
  uint64_t linger_us;
  /* Deadline of each flushed batch on the channel, as braid_rpc_call's timeout_ms (0 = the
   * channel's default). The requests of a batch that times out all get BRAID_ETIMEDOUT. */
  uint64_t timeout_ms;
} braid_batcher_opts_t;

/* Why a batch was flushed. */
typedef enum {
  BRAID_FLUSH_ITEMS = 0, /* max_items reached */
  BRAID_FLUSH_BYTES,     /* max_bytes reached */
  BRAID_FLUSH_LINGER,    /* the linger time (or the end of the loop iteration) came */
  BRAID_FLUSH_EXPLICIT,  /* braid_batcher_flush() or braid_batcher_free() */
  BRAID_FLUSH_REASONS
} braid_flush_reason_t;

typedef struct braid_batcher_stats_s {
  uint64_t requests;                      /* requests accepted */
  uint64_t batches;                       /* batches flushed */
  uint64_t flushes[BRAID_FLUSH_REASONS];  /* batches flushed, by reason */
  uint64_t failed_flushes;                /* batches the channel refused (requests failed) */
  braid_histogram_t batch_size;           /* requests per flushed batch */
} braid_batcher_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_batcher_opts_init(braid_batcher_opts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with the
 * field and the reason in *err (err may be NULL). braid_batcher_new() runs this check. */
BRAID_EXTERN int braid_batcher_opts_validate(const braid_batcher_opts_t *o,
                                             braid_opts_error_t *err);

/* Creates a batcher sending on rpc (a client channel; o copied, NULL = defaults). The
 * batcher keeps the channel's memory (not its connection) until braid_batcher_free(): if
 * the channel closes first, later requests fail with BRAID_ECLOSED. Returns 0, BRAID_EINVAL,
 * BRAID_ECLOSED (the channel is closing) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_batcher_new(braid_batcher_t **out, braid_rpc_t *rpc,
                                   const braid_batcher_opts_t *o);

/* Adds a request (data[0..len) is copied). cb runs exactly once with this request's result:
 * status 0 and its answer; BRAID_EREMOTE with remote_code when the server failed this item
 * (or the whole batch); or the error that failed the batch (BRAID_ETIMEDOUT, a connection
 * error, BRAID_ECANCELED, BRAID_EGOAWAY...). Never called from inside this call. Returns 0,
 * BRAID_EINVAL, BRAID_ETOOBIG (len > max_bytes), BRAID_ECLOSED (the channel is closing), or
 * BRAID_ENOMEM; then cb is never called. */
BRAID_EXTERN int braid_batcher_call(braid_batcher_t *b, const void *data, size_t len,
                                    braid_rpc_response_cb cb, void *arg);

/* Sends what waits now. Returns 0 (also when nothing waits), or the channel's refusal (the
 * waiting requests then fail with it through their callbacks, soon, never from inside this
 * call). */
BRAID_EXTERN int braid_batcher_flush(braid_batcher_t *b);

/* Flushes what waits, then frees the batcher; requests already flushed still complete
 * through their callbacks (requests the channel refused at this flush complete with its
 * error before this returns). Cannot fail. NULL is ignored. */
BRAID_EXTERN void braid_batcher_free(braid_batcher_t *b);

/* The batcher's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_batcher_set_data(braid_batcher_t *b, void *data);
BRAID_EXTERN void *braid_batcher_get_data(const braid_batcher_t *b);

/* Copies the batcher's counters and histogram into out. */
BRAID_EXTERN void braid_batcher_stats(const braid_batcher_t *b, braid_batcher_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
