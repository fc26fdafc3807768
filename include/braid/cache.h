/* braid: a memoizing cache.
 *
 * functools.lru_cache for C network services: keys and values are byte strings; values can
 * be refcounted blobs, so a cached response is written to many sockets without a copy and
 * freed when the last holder lets go. The cache is bounded by entry count and by bytes (keys,
 * values, per-entry bookkeeping and the hash table itself are all counted, and the count
 * never exceeds the bound), evicts by LRU (the default, lru_cache's semantics) or SIEVE
 * (Zhang et al., NSDI '24: a FIFO queue with a "visited" bit and a moving hand; a hit only
 * sets the bit), expires entries by TTL, and memoizes: braid_cache_memo() returns the
 * cached value or runs a loader (synchronous, asynchronous, or on the libuv threadpool),
 * with single-flight (concurrent requests for a key being loaded wait for that one load),
 * load timeouts, optional negative caching and optional stale-while-revalidate.
 *
 * Keys are hashed under keys drawn from the OS when the cache is created, so keys crafted by
 * a client cannot pile into one probe sequence: by default with braid_hash_fast() (about a
 * third of SipHash's work on short keys, which roughly doubles the throughput of hits in a
 * large cache), falling back to SipHash-1-3 for good, after a rehash, if an insert ever finds
 * a probe run of over a thousand slots (random keys practically never make one; counted in
 * the hash_fallbacks statistic and logged as a warning); or with SipHash-1-3 from the start
 * (option hash). See braid/hash.h.
 *
 * Threading: a braid_cache_t belongs to one braid loop and takes no locks; call it only from
 * that loop's thread. For a server's worker threads there is braid_cache_shared_t: the same
 * store split into stripes, each behind its own mutex, without memoization (each worker
 * keeps single-flight on its own loop).
 *
 * Expiry: lazy (a lookup that finds an expired entry treats it as a miss and removes it) and
 * active (a timer on the loop examines up to sweep_max_entries hash slots per
 * sweep_interval_ms, round robin, and removes the expired entries it finds; the timer does
 * not keep the loop alive). Eviction also prefers the dead: SIEVE's hand evicts an expired
 * entry it passes whatever its visited bit. The shared variant has no timer (it belongs to no
 * loop): it expires lazily and through eviction, so an expired entry may hold space until it
 * is looked up or evicted (it still counts against the bounds, which always hold).
 *
 * Memory: the bound counts every byte the cache allocates for its entries and index (the
 * table's slots, external key/value blocks, a blob value's length); only the cache object
 * itself and its in-flight loads are outside it: at most max_loads of them, each about 150
 * bytes plus its key and 16 bytes per waiter (at most max_waiters). A blob value shared with other holders is charged in full. */
#ifndef BRAID_CACHE_H
#define BRAID_CACHE_H

#include "common.h"
#include "blob.h"
#include "error.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_cache_s braid_cache_t;
typedef struct braid_cache_shared_s braid_cache_shared_t;
/* One in-flight load (single-flight): handed to an asynchronous loader, which completes it
 * with braid_cache_load_done(). */
typedef struct braid_cache_load_s braid_cache_load_t;

/* The keyed hash a cache starts with (see the top of this header). */
typedef enum {
  BRAID_CACHE_HASH_FAST = 0,   /* braid_hash_fast(), falling back to SipHash-1-3 on a flood */
  BRAID_CACHE_HASH_SIPHASH = 1 /* SipHash-1-3 throughout */
} braid_cache_hash_t;

typedef enum {
  BRAID_CACHE_LRU = 0, /* least recently used goes first (lru_cache semantics) */
  BRAID_CACHE_SIEVE = 1 /* SIEVE: hits set a bit; the hand evicts the first unvisited entry */
} braid_cache_policy_t;

/* ttl_ms arguments: 0 means "the cache's default_ttl_ms"; BRAID_CACHE_TTL_NONE means "never
 * expires"; anything else up to BRAID_CACHE_TTL_MAX is a lifetime in milliseconds. */
#define BRAID_CACHE_TTL_NONE UINT64_MAX
#define BRAID_CACHE_TTL_MAX (UINT64_C(1) << 40)

/* What the byte bound charges. Entries live in slots of BRAID_CACHE_SLOT_BYTES each (a
 * 128-byte record and a tag byte), allocated with the hash table, which runs at most 3/4
 * full; a key and an inline value of up to BRAID_CACHE_INLINE_BYTES together sit in the slot
 * and cost nothing more. Longer ones are stored in one external block, charged its length
 * plus BRAID_CACHE_EXTERNAL_OVERHEAD; a blob value is charged its length plus
 * BRAID_CACHE_BLOB_OVERHEAD. Tables of 4 MiB and more also allocate, and are charged, 2 MiB
 * of alignment slack (so they can use huge pages). */
#define BRAID_CACHE_SLOT_BYTES 129
#define BRAID_CACHE_INLINE_BYTES 80
#define BRAID_CACHE_EXTERNAL_OVERHEAD 16
#define BRAID_CACHE_BLOB_OVERHEAD 16

/* The shared variant's least byte budget per stripe (max_bytes / stripes): each stripe is a
 * cache with a table of its own, and needs what a per-loop cache needs at least (max_bytes
 * 4096). braid_cache_shared_new() refuses a thinner split with BRAID_EINVAL. */
#define BRAID_CACHE_STRIPE_MIN_BYTES 4096

typedef struct braid_cache_opts_s {
  /* Most entries held. Default 65536; 1 .. 2^30. */
  uint64_t max_entries;
  /* Most bytes held: the table's slots, plus external keys, values and blobs (see
   * BRAID_CACHE_SLOT_BYTES). Default 64 MiB; 4096 .. 2^46. */
  uint64_t max_bytes;
  /* A value longer than this is not cached (put returns BRAID_ETOOBIG; a memo load still
   * delivers it to its waiters). 0 (the default) means max_bytes / 8. Otherwise
   * 1 .. max_bytes. */
  uint64_t max_value_bytes;
  /* Eviction policy. Default BRAID_CACHE_LRU. */
  braid_cache_policy_t policy;
  /* TTL used when a call passes ttl_ms = 0. 0 (the default): entries never expire. At most
   * BRAID_CACHE_TTL_MAX. */
  uint64_t default_ttl_ms;
  /* Active expiry period; 0 disables the sweep (lazy expiry only). Default 1000; at most
   * 86400000 (one day). Ignored by the shared variant. */
  uint64_t sweep_interval_ms;
  /* Hash slots examined per sweep tick, which bounds the tick's cost. Default 256;
   * 1 .. 2^20. */
  uint32_t sweep_max_entries;
  /* Most requests waiting on one key's load (the first one included); more get
   * BRAID_ETOOMANYWAITERS. Default 4096; 1 .. 2^20. */
  uint32_t max_waiters;
  /* Most loads in flight at once (distinct keys being loaded, revalidations included, and
   * loads whose timeout passed while their loader still runs); a memo call that would start
   * one more gets BRAID_ETOOMANYWAITERS, so a flood of distinct misses against a slow or
   * hung loader cannot grow memory without bound. Default 4096; 1 .. 2^20. */
  uint32_t max_loads;
  /* A load that has not completed after this long fails every waiter with BRAID_ETIMEDOUT
   * (its late result is discarded). 0 (the default): no timeout. At most 86400000. */
  uint64_t load_timeout_ms;
  /* Negative caching: a failed load's error is cached for this long, and memo calls in
   * that window get the same error without running the loader. 0 (the default): errors are
   * never cached. At most 86400000. */
  uint64_t negative_ttl_ms;
  /* Cap on cached errors, as a percentage of max_entries (at least one entry); an error
   * beyond the cap is delivered but not cached. Default 10; 1 .. 100. */
  uint32_t negative_max_percent;
  /* Stale-while-revalidate: for this long after an entry expires, braid_cache_memo() still
   * returns it at once and starts one background reload. 0 (the default): off. At most
   * 86400000. */
  uint64_t stale_ms;
  /* Shared variant only: the number of stripes (locks); a power of two, 1 .. 1024, at most
   * max_entries, and at most max_bytes / BRAID_CACHE_STRIPE_MIN_BYTES (so 1 MiB allows 256
   * stripes). Each stripe holds max_entries / stripes entries and max_bytes / stripes bytes.
   * Default 16. */
  uint32_t stripes;
  /* The hash keys start with. Default BRAID_CACHE_HASH_FAST. */
  braid_cache_hash_t hash;
} braid_cache_opts_t;

/* Counters since the cache was created. */
typedef struct braid_cache_stats_s {
  uint64_t hits;          /* lookups (get, get_blob, memo) that found a live entry */
  uint64_t misses;        /* lookups that did not */
  uint64_t loads;         /* loads started by memo (including revalidations) */
  uint64_t load_errors;   /* loads that failed, timed out included */
  uint64_t load_timeouts; /* loads that timed out */
  uint64_t coalesced;     /* memo calls that joined a load already in flight */
  uint64_t stale_hits;    /* memo calls served a stale value (stale-while-revalidate) */
  uint64_t negative_hits; /* memo calls served a cached error */
  uint64_t inserts;       /* entries stored (put, put_blob, loads) */
  uint64_t rejected;      /* values not stored because they exceed max_value_bytes */
  uint64_t evictions;     /* entries evicted to respect max_entries or max_bytes */
  uint64_t expirations;   /* entries removed because their TTL passed */
  uint64_t entries;       /* entries held now */
  uint64_t bytes;         /* bytes charged now (see max_bytes) */
  uint64_t hash_fallbacks; /* stores switched to SipHash-1-3 after a suspiciously long probe
                              run (at most 1 per cache; 1 per stripe when shared) */
  double hit_ratio;       /* hits / (hits + misses), 0 when both are 0 */
} braid_cache_stats_t;

/* Fills opts with the defaults documented above. */
BRAID_EXTERN void braid_cache_opts_init(braid_cache_opts_t *opts);

/* Checks every field against the bounds documented above. Returns 0, or BRAID_EINVAL with
 * the field and the reason in *err (err may be NULL). braid_cache_new() and
 * braid_cache_shared_new() run this check (the shared variant also needs max_bytes / stripes
 * >= 1024 and stripes <= max_entries). */
BRAID_EXTERN int braid_cache_opts_validate(const braid_cache_opts_t *opts, braid_opts_error_t *err);

/* Called once when braid_cache_close() has finished, with status 0 (a cache closes only when
 * asked); the cache is freed after it returns. */
typedef void (*braid_cache_close_cb)(braid_cache_t *cache, int status, void *arg);

/* Creates a cache on loop with opts (copied; NULL: defaults). The cache counts as a live
 * object on the loop until its close callback (braid_loop_close() refuses before).
 * Returns 0 and the cache in *out, BRAID_EINVAL (loop or out NULL, or an option out of
 * bounds: braid_cache_opts_validate() says which, and the loop's log hook is told),
 * BRAID_ENOMEM, or an error from the OS's random source or libuv. */
BRAID_EXTERN int braid_cache_new(braid_cache_t **out, braid_loop_t *loop,
                                 const braid_cache_opts_t *opts);

/* The cache's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_cache_set_data(braid_cache_t *cache, void *data);
BRAID_EXTERN void *braid_cache_get_data(const braid_cache_t *cache);

/* Closes the cache. Every memo waiter still waiting gets BRAID_ECANCELED exactly once,
 * before this returns; every entry is dropped (blob values are unreferenced: holders keep
 * theirs); then cb (may be NULL) runs once from the loop, and the cache is freed. Loads still
 * running (an asynchronous loader that has not called braid_cache_load_done(), a
 * threadpool job) finish on their own; their results are discarded. Allowed from inside the
 * cache's callbacks. Returns 0, BRAID_EINVAL (cache NULL) or BRAID_ECLOSED (already
 * closing: cb will not be called). */
BRAID_EXTERN int braid_cache_close(braid_cache_t *cache, braid_cache_close_cb cb, void *arg);

/* Stores a copy of value[0..value_len) under key[0..key_len), replacing any entry for the key
 * (the replacement is a new entry for the policy: most recent under LRU, newest and unvisited
 * under SIEVE), with ttl_ms (see BRAID_CACHE_TTL_NONE). Evicts by the policy until both
 * bounds hold.
 * key may be NULL only when key_len is 0 (the empty key is a valid key); likewise value.
 * key_len is at most 2^31. Returns 0, BRAID_EINVAL, BRAID_ETOOBIG (the value exceeds
 * max_value_bytes or the entry alone exceeds max_bytes: not stored, and any old entry for
 * the key is removed), BRAID_ENOMEM or BRAID_ECLOSED. */
BRAID_EXTERN int braid_cache_put(braid_cache_t *cache, const void *key, size_t key_len,
                                 const void *value, size_t value_len, uint64_t ttl_ms);

/* As braid_cache_put(), but stores a reference to blob instead of a copy (the caller keeps
 * its own reference). The entry is charged the blob's length. */
BRAID_EXTERN int braid_cache_put_blob(braid_cache_t *cache, const void *key, size_t key_len,
                                      braid_blob_t *blob, uint64_t ttl_ms);

/* Copies the value for key into buf[0..cap) and its length into *len (len may be NULL).
 * Counts as a use for the policy. Returns 0, BRAID_ENOTFOUND (absent, expired or a cached
 * error), BRAID_ETOOBIG (cap too small: *len holds the length needed, buf is untouched, and
 * the lookup still counts as a hit), BRAID_EINVAL or BRAID_ECLOSED. */
BRAID_EXTERN int braid_cache_get(braid_cache_t *cache, const void *key, size_t key_len,
                                 void *buf, size_t cap, size_t *len);

/* Returns the value for key as a blob reference the caller owns (braid_blob_unref() it):
 * zero-copy when the value is held as a blob (put_blob, memo), otherwise a fresh blob with a
 * copy. The value stays valid after eviction for as long as the caller holds it.
 * Returns 0, BRAID_ENOTFOUND, BRAID_ENOMEM, BRAID_EINVAL or BRAID_ECLOSED. */
BRAID_EXTERN int braid_cache_get_blob(braid_cache_t *cache, const void *key, size_t key_len,
                                      braid_blob_t **out);

/* Removes the entry for key. Returns 0, BRAID_ENOTFOUND, BRAID_EINVAL or BRAID_ECLOSED. A
 * load in flight for the key is not affected. */
BRAID_EXTERN int braid_cache_delete(braid_cache_t *cache, const void *key, size_t key_len);

/* Removes every entry (loads in flight are not affected). Returns 0, BRAID_EINVAL or
 * BRAID_ECLOSED. */
BRAID_EXTERN int braid_cache_clear(braid_cache_t *cache);

/* Fills *out with the counters. Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_cache_stats(const braid_cache_t *cache, braid_cache_stats_t *out);

/* ---- memoization ------------------------------------------------------------------- */

/* The later result of a braid_cache_memo() that returned BRAID_PENDING: status 0 and the
 * value, or a negative error (the loader's own error, BRAID_ETIMEDOUT, BRAID_ECANCELED on
 * close, BRAID_ENOMEM) and NULL. value is borrowed for the duration of the call:
 * braid_blob_ref() it to keep it. Never runs from inside the braid_cache_memo() call that
 * returned BRAID_PENDING: it runs when the load completes (from the loop, or from inside
 * braid_cache_load_done() or braid_cache_close()). */
typedef void (*braid_cache_memo_cb)(braid_cache_t *cache, int status, braid_blob_t *value,
                                    void *arg);

/* A synchronous or threadpool loader: computes the value for key, stores a new blob in
 * *value (ownership passes to the cache) and returns 0, or returns a negative error (then
 * *value is ignored). Returning 0 with *value NULL fails the load with BRAID_EINVAL. A
 * threadpool loader runs on a libuv threadpool thread: it must not touch braid handles. */
typedef int (*braid_cache_compute_fn)(const void *key, size_t key_len, braid_blob_t **value,
                                      void *arg);

/* An asynchronous loader: starts loading key (key is valid until the load completes) and
 * later, on the loop's thread, calls braid_cache_load_done(load, ...) exactly once (it may
 * do so before returning). */
typedef void (*braid_cache_start_fn)(braid_cache_load_t *load, const void *key, size_t key_len,
                                     void *arg);

typedef enum {
  BRAID_CACHE_LOAD_SYNC = 0,  /* compute() runs inside braid_cache_memo() */
  BRAID_CACHE_LOAD_ASYNC = 1, /* start() begins it; braid_cache_load_done() ends it */
  BRAID_CACHE_LOAD_WORK = 2   /* compute() runs on the libuv threadpool (braid_work) */
} braid_cache_load_mode_t;

typedef struct braid_cache_loader_s {
  braid_cache_load_mode_t mode;
  braid_cache_compute_fn compute; /* SYNC and WORK */
  braid_cache_start_fn start;     /* ASYNC */
  void *arg;                      /* passed to compute / start */
  uint64_t ttl_ms;                /* TTL of the loaded value (0: default_ttl_ms) */
} braid_cache_loader_t;

/* Get-or-compute. What is known now is returned now; only a wait calls back:
 * - 0: *value holds a reference to the value (braid_blob_unref() it when done), and cb is
 *   not called. So it goes for a hit (a hit costs no trip through the loop), a stale value
 *   (stale-while-revalidate: one background reload starts too), and a load that completed
 *   inside this call: a BRAID_CACHE_LOAD_SYNC loader, or an asynchronous one whose start
 *   called braid_cache_load_done() before returning. The loaded value is cached (unless it
 *   exceeds max_value_bytes).
 * - BRAID_PENDING (a positive result): a load for key is in flight (this call joined it, or
 *   started it with loader, which is copied); cb runs exactly once, later, from the loop,
 *   with the value or the load's error. Waiters are answered in arrival order.
 * - a negative code, and cb is never called: the load's own error when it is known now (a
 *   cached error under negative caching, a synchronous loader's failure, BRAID_ECANCELED if
 *   the cache was closed from inside the loader), BRAID_EINVAL (a NULL argument, key_len >
 *   2^31, or a loader without the function its mode needs), BRAID_ETOOMANYWAITERS
 *   (max_waiters already wait on this key, or a new load is needed and max_loads are in
 *   flight), BRAID_ECLOSED, BRAID_ENOMEM, or braid_work()'s error (the load could not be
 *   queued).
 * *value is NULL unless 0 is returned. No callback of any kind runs from inside this call
 * (docs/API.md rule 4), though a synchronous loader, or an asynchronous loader's start, does. */
BRAID_EXTERN int braid_cache_memo(braid_cache_t *cache, const void *key, size_t key_len,
                                  const braid_cache_loader_t *loader, braid_blob_t **value,
                                  braid_cache_memo_cb cb, void *arg);

/* Completes an asynchronous load, on the loop's thread, exactly once: status 0 with value (a
 * blob whose reference passes to the cache), or a negative error with value NULL (a value
 * passed anyway is unreferenced). If the load has timed out or the cache has closed, the
 * result is discarded. Returns 0, or BRAID_EINVAL (load NULL, or status 0 with value NULL:
 * the waiters then get BRAID_EINVAL). The load must not be used afterwards. */
BRAID_EXTERN int braid_cache_load_done(braid_cache_load_t *load, int status,
                                       braid_blob_t *value);

/* ---- shared variant (striped locks) ---------------------------------------------------- */

/* Creates a cache any thread may call, for a server's worker threads. Uses max_entries,
 * max_bytes, max_value_bytes, policy, default_ttl_ms and stripes from opts (NULL: defaults);
 * the memo, sweep and negative-caching options are ignored. TTLs run on the monotonic clock
 * (uv_hrtime). Returns 0, BRAID_EINVAL (out NULL, an option out of bounds, fewer than one
 * entry or BRAID_CACHE_STRIPE_MIN_BYTES bytes per stripe), BRAID_ENOMEM or an OS error. */
BRAID_EXTERN int braid_cache_shared_new(braid_cache_shared_t **out, const braid_cache_opts_t *opts);

/* Frees the cache and drops its references to blob values. No other thread may be using it.
 * NULL is ignored. */
BRAID_EXTERN void braid_cache_shared_free(braid_cache_shared_t *cache);

/* Thread-safe counterparts of braid_cache_put/put_blob/get/get_blob/delete, with the same
 * arguments, returns and ownership rules (without BRAID_ECLOSED). */
BRAID_EXTERN int braid_cache_shared_put(braid_cache_shared_t *cache, const void *key,
                                        size_t key_len, const void *value, size_t value_len,
                                        uint64_t ttl_ms);
BRAID_EXTERN int braid_cache_shared_put_blob(braid_cache_shared_t *cache, const void *key,
                                             size_t key_len, braid_blob_t *blob,
                                             uint64_t ttl_ms);
BRAID_EXTERN int braid_cache_shared_get(braid_cache_shared_t *cache, const void *key,
                                        size_t key_len, void *buf, size_t cap, size_t *len);
BRAID_EXTERN int braid_cache_shared_get_blob(braid_cache_shared_t *cache, const void *key,
                                             size_t key_len, braid_blob_t **out);
BRAID_EXTERN int braid_cache_shared_delete(braid_cache_shared_t *cache, const void *key,
                                           size_t key_len);

/* Sums the stripes' counters into *out (each stripe read under its lock, so the sum is
 * not one atomic snapshot). Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_cache_shared_stats(braid_cache_shared_t *cache, braid_cache_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
