/* braid: a memcached client (meta protocol) and a two-tier memo on it.
 *
 * The client speaks memcached's meta protocol (mg, ms, md, ma, mn; memcached 1.6 and later)
 * to one or more servers:
 * - each server has its own connection pool (braid/pool.h) of ordered rpc channels
 *   (braid/rpc.h), so requests are pipelined on a few connections, and a slow or dead server
 *   never delays requests to the others;
 * - every call is sent as a group of meta commands closed by "mn", and its answer is
 *   everything up to the server's "MN": a custom framer cuts the stream at "MN", so quiet
 *   mode (q: memcached says nothing for a miss or a stored value) works in a pipeline, and a
 *   multi-key get goes out to each server as one pipelined burst (in groups of at most 256
 *   keys) matched back by opaque tokens;
 * - keys are spread over the servers by rendezvous hashing, placing every ASCII key exactly
 *   where pymemcache's HashClient (RendezvousHash, murmur3_32 of "host:port-key") places it,
 *   or by ketama as libmemcached computes it (MEMCACHED_BEHAVIOR_KETAMA: 100 points per
 *   server, md5; or MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED: 160 points per server by weight, 4
 *   per md5 digest);
 * - a server whose requests fail dead_after_failures times in a row (a timeout, a refused or
 *   reset connection, a reply that breaks the protocol) is marked dead for dead_retry_ms: its
 *   keys go to the server that would own them without it (rendezvous: the next highest
 *   score, as pymemcache does when it removes a node; ketama: the next point on the ring),
 *   and after dead_retry_ms one "mn" probes it, bringing it back when answered;
 * - keys are binary-safe: a key of 1..250 bytes in ASCII 33..126 goes as it is; any other
 *   key of up to 185 bytes goes base64-encoded under the b flag, tagged with a 0x00 byte;
 *   a longer key goes as the SHA-256 digest of its bytes, tagged 0x01 and base64-encoded
 *   (the tags keep the three forms from ever naming the same item);
 * - a reply that breaks the protocol (garbage, a lying length, a value over the framer's
 *   bound) fails the request with BRAID_EPROTO or BRAID_ETOOBIG and closes that connection.
 *
 * The two-tier memo (braid_memcache_memo_t) puts braid's in-process cache (braid/cache.h,
 * L1: single-flight per process) in front of memcached (L2, shared by a fleet). A miss in
 * both is computed once per fleet: the memo's mg carries N (vivify on miss) and R (recache),
 * so memcached hands one process the win (W) and tells the others the item is being
 * computed (Z); the winner computes and stores the value, the others poll with backoff (or
 * serve the value they got, stale-while-revalidate, while the winner refreshes it).
 *
 * Everything runs on the loop thread of the client, like the pools it holds. */
#ifndef BRAID_MEMCACHE_H
#define BRAID_MEMCACHE_H

#include "common.h"
#include "blob.h"
#include "cache.h"
#include "error.h"
#include "loop.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_memcache_s braid_memcache_t;
typedef struct braid_memcache_memo_s braid_memcache_memo_t;
/* One load of the memo handed to an asynchronous loader (braid_memcache_memo_load_done()). */
typedef struct braid_memcache_load_s braid_memcache_load_t;

/* The longest key memcached takes as it is (KEY_MAX_LENGTH), and the opaque token limit. */
#define BRAID_MEMCACHE_KEY_MAX 250
#define BRAID_MEMCACHE_OPAQUE_MAX 32
/* Keys per group of a multi-key get (one rpc call, closed by mn). */
#define BRAID_MEMCACHE_MULTI_GROUP 256
/* Most servers one client holds. */
#define BRAID_MEMCACHE_MAX_SERVERS 256

/* How keys are spread over the servers. */
typedef enum {
  BRAID_MEMCACHE_RENDEZVOUS = 0,      /* pymemcache HashClient's RendezvousHash (default) */
  BRAID_MEMCACHE_KETAMA = 1,          /* libmemcached MEMCACHED_BEHAVIOR_KETAMA */
  BRAID_MEMCACHE_KETAMA_WEIGHTED = 2, /* libmemcached MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED */
} braid_memcache_distribution_t;

/* Meta commands. */
typedef enum {
  BRAID_MEMCACHE_MG = 0, /* meta get */
  BRAID_MEMCACHE_MS = 1, /* meta set */
  BRAID_MEMCACHE_MD = 2, /* meta delete */
  BRAID_MEMCACHE_MA = 3, /* meta arithmetic */
  BRAID_MEMCACHE_MN = 4, /* meta no-op (needs a server index: braid_memcache_req_t.server) */
} braid_memcache_cmd_t;

/* Request flags (braid_memcache_req_t.flags); each is the meta flag named. */
enum {
  BRAID_MEMCACHE_F_VALUE = 1u << 0,        /* v: return the value (mg; ma: the number) */
  BRAID_MEMCACHE_F_RETURN_TTL = 1u << 1,   /* t: return the remaining TTL */
  BRAID_MEMCACHE_F_RETURN_CAS = 1u << 2,   /* c: return the CAS value */
  BRAID_MEMCACHE_F_RETURN_FLAGS = 1u << 3, /* f: return the client flags */
  BRAID_MEMCACHE_F_RETURN_KEY = 1u << 4,   /* k: return the key (as sent) */
  BRAID_MEMCACHE_F_QUIET = 1u << 5,        /* q: no reply for the common case (mg miss,
                                              ms/md/ma success): result code NONE */
  BRAID_MEMCACHE_F_INVALIDATE = 1u << 6,   /* I: md marks stale instead of deleting; ms
                                              with a lower CAS is accepted (mark stale) */
  BRAID_MEMCACHE_F_HIT = 1u << 7,          /* h: return whether fetched before */
  BRAID_MEMCACHE_F_LAST_ACCESS = 1u << 8,  /* l: return seconds since last access */
  BRAID_MEMCACHE_F_NO_BUMP = 1u << 9,      /* u: do not bump the item in the LRU */
  BRAID_MEMCACHE_F_RETURN_SIZE = 1u << 10, /* s: return the value's size */
};

/* ms modes (M token) and ma modes. */
typedef enum {
  BRAID_MEMCACHE_SET = 0,     /* ms MS (default) */
  BRAID_MEMCACHE_ADD = 1,     /* ms ME: store only if absent */
  BRAID_MEMCACHE_REPLACE = 2, /* ms MR: store only if present */
  BRAID_MEMCACHE_APPEND = 3,  /* ms MA */
  BRAID_MEMCACHE_PREPEND = 4, /* ms MP */
  BRAID_MEMCACHE_INCR = 5,    /* ma MI (default) */
  BRAID_MEMCACHE_DECR = 6,    /* ma MD */
} braid_memcache_mode_t;

/* One meta request, for braid_memcache_request(). Fill it with braid_memcache_req_init()
 * (all tokens absent) and set what you need; absent numeric tokens are -1. */
typedef struct braid_memcache_req_s {
  braid_memcache_cmd_t cmd;
  const void *key; /* key[0..key_len): 1..2^20 bytes, any bytes (see the top) */
  size_t key_len;
  const void *value; /* ms: the value (copied), value_len bytes */
  size_t value_len;
  unsigned flags;              /* BRAID_MEMCACHE_F_* */
  braid_memcache_mode_t mode;  /* ms and ma: the M token (default SET / INCR) */
  int64_t ttl_s;           /* T: ms, ma (on auto-create) TTL; mg/md: touch/update TTL */
  int64_t compare_cas;     /* C: ms, md, ma compare-and-swap; mg ignores it */
  int64_t client_flags;    /* F: ms client flags (0..2^32-1) */
  int64_t vivify_ttl_s;    /* N: mg vivify on miss with this TTL; ma auto-create */
  int64_t recache_ttl_s;   /* R: mg win for recache when the TTL left is below this */
  int64_t delta;           /* D: ma delta (default 1) */
  int64_t initial;         /* J: ma initial value on auto-create */
  /* O: an opaque token returned with the reply (1..32 bytes, ASCII 33..126); NULL: none. */
  const char *opaque;
  /* The server to use (0-based index), -1 (default) to pick by key. Required for MN. */
  int server;
} braid_memcache_req_t;

/* What a reply said. */
typedef enum {
  BRAID_MEMCACHE_NONE = 0, /* nothing: a quiet request that succeeded (or an mg miss) */
  BRAID_MEMCACHE_HD = 1,   /* success, no value */
  BRAID_MEMCACHE_VA = 2,   /* success with a value */
  BRAID_MEMCACHE_EN = 3,   /* mg/ma: not found (miss) */
  BRAID_MEMCACHE_NF = 4,   /* md/ma: not found */
  BRAID_MEMCACHE_NS = 5,   /* ms: not stored (add on a present key, replace on an absent
                              one, append/prepend on an absent one) */
  BRAID_MEMCACHE_EX = 6,   /* CAS mismatch */
  BRAID_MEMCACHE_NOOP = 7, /* MN: the no-op's answer */
} braid_memcache_code_t;

/* A reply. Pointers are valid during the callback only. has_* say which tokens came back. */
typedef struct braid_memcache_result_s {
  int status; /* multi-get items: this key's own status (see braid_memcache_cb) */
  braid_memcache_code_t code;
  const uint8_t *value; /* VA: the value; BRAID_EREMOTE: the server's error line */
  size_t value_len;
  const uint8_t *key; /* k: the key as the server returned it (base64 under b) */
  size_t key_len;
  const uint8_t *opaque; /* O: the opaque token */
  size_t opaque_len;
  uint64_t cas;          /* c */
  int64_t ttl_s;         /* t: seconds left, -1 = never expires */
  uint32_t client_flags; /* f */
  uint64_t size;         /* s */
  int64_t last_access_s; /* l */
  int hit_before;        /* h: 1 if fetched before */
  int has_cas, has_ttl, has_flags, has_size, has_last_access, has_hit;
  int won;      /* W: this client won the right to recache (vivify/recache/stale) */
  int stale;    /* X: the item is stale */
  int lost;     /* Z: another client already won; a new value is coming */
  uint64_t number; /* ma with v: the counter's value */
  int server;   /* the index of the server that answered (-1 when none did) */
} braid_memcache_result_t;

/* A request completed: exactly once per accepted call, never from inside the call.
 * status 0: the server answered with a meta reply, res->code says which (a miss, EN, is a
 * reply too; quiet requests that succeeded give NONE). BRAID_EREMOTE: the server answered
 * ERROR, CLIENT_ERROR or SERVER_ERROR (res->value holds the line; e.g. "SERVER_ERROR object
 * too large for cache"). BRAID_ETIMEDOUT: no answer in time. BRAID_EUNAVAILABLE: every
 * server is marked dead. BRAID_EPROTO / BRAID_ETOOBIG: the server broke the protocol (the
 * connection is closed). BRAID_ECANCELED: the client was closed. Other negative codes: the
 * connection failed (UV_ECONNREFUSED, UV_ECONNRESET, ...). For braid_memcache_get_multi(),
 * res points at count results (one per key, in the order given, each with its own status)
 * and status is 0, or the first key's error when every key failed. */
typedef void (*braid_memcache_cb)(braid_memcache_t *mc, int status,
                                  const braid_memcache_result_t *res, size_t count, void *arg);

/* The client is closed: every request has completed, every connection is closed. status 0.
 * The client is freed when this returns. */
typedef void (*braid_memcache_close_cb)(braid_memcache_t *mc, int status, void *arg);

typedef struct braid_memcache_opts_s {
  /* Key distribution. Default BRAID_MEMCACHE_RENDEZVOUS. */
  braid_memcache_distribution_t distribution;
  /* Each server's pool. braid sets pool.rpc.mode and pool.rpc.framer (the meta framer, with
   * max_reply_bytes); the rest is yours. Defaults: braid_pool_opts_init() with
   * max_per_endpoint 4, client.connect_timeout_ms 1000, client.retries 0,
   * acquire_timeout_ms 1000, eject_base_ms 250 and eject_max_ms 1000 (the client's own dead
   * marking decides where keys go; the pool's ejection only makes calls to a server that
   * refuses connections fail fast). */
  braid_pool_opts_t pool;
  /* Deadline of a request whose call passes 0. Default 1000; bounds 1..(1 << 31). */
  uint64_t timeout_ms;
  /* Consecutive failed requests that mark a server dead. Default 3; bounds 1..1000. */
  unsigned dead_after_failures;
  /* How long a dead server gets no keys before a probe. Default 2000; bounds 1..(1 << 31). */
  uint64_t dead_retry_ms;
  /* Largest item memcached stores (its -I, default 1 MiB): a set whose key and value take
   * more (value_len + key_len + 64 bytes of item header) is refused with BRAID_ETOOBIG
   * before it is sent. Default 1048576; bounds 1024..(1 << 30). */
  size_t max_item_bytes;
  /* Largest reply to one group (up to 256 values, or one): more is BRAID_ETOOBIG and the
   * connection closes. Default 64 MiB; bounds 1024..BRAID_FRAMER_MAX_CEILING. */
  size_t max_reply_bytes;
} braid_memcache_opts_t;

/* Counters of one server. */
typedef struct braid_memcache_server_stats_s {
  int port;
  int dead;                 /* nonzero while marked dead */
  uint64_t requests;        /* rpc calls sent (a multi-get group counts once) */
  uint64_t errors;          /* calls failed by the server or its connection */
  uint64_t timeouts;        /* of which timed out */
  uint64_t dead_marks;      /* times marked dead */
  uint64_t revivals;        /* times brought back by a probe */
  uint64_t consecutive_failures;
} braid_memcache_server_stats_t;

/* The client's counters. */
typedef struct braid_memcache_stats_s {
  uint64_t requests;      /* calls accepted (single or multi) */
  uint64_t keys;          /* keys asked for by multi-gets */
  uint64_t errors;        /* calls (multi-get keys) that completed with a negative status */
  uint64_t unavailable;   /* of which BRAID_EUNAVAILABLE: every server dead */
  uint64_t dead_marks;    /* all servers */
  uint64_t revivals;
  uint64_t protocol_errors; /* replies that broke the protocol */
} braid_memcache_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_memcache_opts_init(braid_memcache_opts_t *o);

/* Checks every field against its documented bounds (pool with braid_pool_opts_validate(),
 * reported as "pool.<field>", after braid's own settings of mode and framer). Returns 0, or
 * BRAID_EINVAL with the field and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_memcache_opts_validate(const braid_memcache_opts_t *o,
                                              braid_opts_error_t *err);

/* Creates a client with no servers on loop (o copied; NULL = defaults). Returns 0,
 * BRAID_EINVAL (bad argument or option; braid_memcache_opts_validate() says which) or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_memcache_new(braid_memcache_t **out, braid_loop_t *loop,
                                    const braid_memcache_opts_t *o);

/* The client's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_memcache_set_data(braid_memcache_t *mc, void *data);
BRAID_EXTERN void *braid_memcache_get_data(const braid_memcache_t *mc);

/* Adds a server host (an IP literal or name, at most 255 bytes; copied) : port (1..65535)
 * with weight (1..1000; used by BRAID_MEMCACHE_KETAMA_WEIGHTED only) and returns its index
 * (0, 1, ... in the order added) in *index (may be NULL). The hash names it "host:port" as
 * given (ketama: "host" alone on port 11211, as libmemcached does), so give the same
 * spelling as the other clients of the fleet. Returns 0, BRAID_EINVAL (bad argument, a
 * server added twice, more than BRAID_MEMCACHE_MAX_SERVERS), BRAID_ECLOSED or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_memcache_add_server(braid_memcache_t *mc, const char *host, int port,
                                           unsigned weight, int *index);

/* Returns the index of the server key[0..key_len) goes to now (dead servers skipped), or
 * BRAID_EUNAVAILABLE (every server dead), BRAID_EINVAL (no server, bad argument). */
BRAID_EXTERN int braid_memcache_server_for_key(const braid_memcache_t *mc, const void *key,
                                               size_t key_len);

/* Fills r with an empty request: cmd MG, no key, no flags, mode SET (INCR for ma), every
 * numeric token -1 (absent), delta -1 (memcached's default 1), server -1. */
BRAID_EXTERN void braid_memcache_req_init(braid_memcache_req_t *r);

/* Sends one meta request (everything it points to is copied) and calls cb once with its
 * reply (count 1). timeout_ms 0 takes opts.timeout_ms. Returns 0 (cb runs exactly once,
 * later), BRAID_EINVAL (bad request: no key, empty key, key over 2^20 bytes, a bad opaque,
 * a token out of range, MN without server, a server index out of range), BRAID_ETOOBIG (an
 * ms over max_item_bytes), BRAID_EUNAVAILABLE (every server is dead), BRAID_ECLOSED,
 * BRAID_ENOMEM, or the pool's refusal (BRAID_EPOOLFULL, ...); then cb is never called. */
BRAID_EXTERN int braid_memcache_request(braid_memcache_t *mc, const braid_memcache_req_t *req,
                                        uint64_t timeout_ms, braid_memcache_cb cb, void *arg);

/* Shorthands of braid_memcache_request(): get = mg with v f c (value, client flags, CAS);
 * set = ms with T ttl_s (0: never expires) and F client_flags; delete = md. Same returns. */
BRAID_EXTERN int braid_memcache_get(braid_memcache_t *mc, const void *key, size_t key_len,
                                    braid_memcache_cb cb, void *arg);
BRAID_EXTERN int braid_memcache_set(braid_memcache_t *mc, const void *key, size_t key_len,
                                    const void *value, size_t value_len, uint32_t ttl_s,
                                    uint32_t client_flags, braid_memcache_cb cb, void *arg);
BRAID_EXTERN int braid_memcache_delete(braid_memcache_t *mc, const void *key, size_t key_len,
                                       braid_memcache_cb cb, void *arg);

/* Gets count keys (keys[i][0..key_lens[i]), 1..1000000 keys; copied) with one pipelined
 * burst per server: mg <key> v f c q O<i> for each (in groups of at most
 * BRAID_MEMCACHE_MULTI_GROUP, each closed by mn). cb runs once, when every server has
 * answered or failed, with count results in the order of keys: code VA (status 0) for a
 * hit, NONE (status 0) for a miss, or a negative status for the keys of a server that
 * failed (the others are unaffected). Returns as braid_memcache_request(). */
BRAID_EXTERN int braid_memcache_get_multi(braid_memcache_t *mc, const void *const *keys,
                                          const size_t *key_lens, size_t count,
                                          uint64_t timeout_ms, braid_memcache_cb cb, void *arg);

/* Copies the client's counters. Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_memcache_stats(const braid_memcache_t *mc, braid_memcache_stats_t *out);

/* Copies the counters of the index-th server. Returns 0 or BRAID_EINVAL (no such server). */
BRAID_EXTERN int braid_memcache_server_stats(const braid_memcache_t *mc, unsigned index,
                                             braid_memcache_server_stats_t *out);

/* Closes the client: requests in flight complete with BRAID_ECANCELED, connections close,
 * then cb (may be NULL) runs once, never from inside this call. Close memos built on the
 * client first. Returns 0, BRAID_EINVAL (NULL) or BRAID_ECLOSED (already closing). */
BRAID_EXTERN int braid_memcache_close(braid_memcache_t *mc, braid_memcache_close_cb cb,
                                      void *arg);

/* ---- hashing, exposed for cross-checks ---------------------------------------------- */

/* murmur3_32 (x86, 32-bit) of data[0..len) with seed, as pymemcache's murmur3_32 computes
 * it for a string of code points below 256. */
BRAID_EXTERN uint32_t braid_memcache_murmur3_32(const void *data, size_t len, uint32_t seed);

/* ---- two-tier memo ------------------------------------------------------------------- */

/* The memo's answer, later: status 0 and the value (borrowed for the call: braid_blob_ref()
 * to keep it), or a negative error (the loader's, BRAID_ETIMEDOUT: waited wait_timeout_ms
 * for another process's value, BRAID_ECANCELED: closed) and NULL. Exactly once per call
 * that returned BRAID_PENDING, never from inside it. */
typedef void (*braid_memcache_memo_cb)(braid_memcache_memo_t *memo, int status,
                                       braid_blob_t *value, void *arg);

/* An asynchronous loader: starts computing key's value and later, on the loop thread, calls
 * braid_memcache_memo_load_done(load, ...) exactly once (it may before returning). */
typedef void (*braid_memcache_start_fn)(braid_memcache_load_t *load, const void *key,
                                        size_t key_len, void *arg);

/* How the memo computes a value missing from both tiers (run once per fleet): mode
 * BRAID_CACHE_LOAD_SYNC (compute on the loop), BRAID_CACHE_LOAD_WORK (compute on the
 * threadpool) or BRAID_CACHE_LOAD_ASYNC (start). */
typedef struct braid_memcache_loader_s {
  braid_cache_load_mode_t mode;
  braid_cache_compute_fn compute; /* SYNC and WORK */
  braid_memcache_start_fn start;  /* ASYNC */
  void *arg;                      /* passed to compute / start */
} braid_memcache_loader_t;

/* The memo close callback: status 0; the memo is freed when it returns. */
typedef void (*braid_memcache_memo_close_cb)(braid_memcache_memo_t *memo, int status,
                                             void *arg);

typedef struct braid_memcache_memo_opts_s {
  /* The L1 cache (braid_cache_opts_t; its stale_ms must stay 0: the memo does
   * stale-while-revalidate in L2). Defaults: braid_cache_opts_init() with default_ttl_ms
   * 1000 (how long a process serves a value without asking memcached). */
  braid_cache_opts_t l1;
  /* How long a value is fresh in memcached, in seconds. Default 60; bounds 1..2592000. */
  uint32_t ttl_s;
  /* Stale-while-revalidate: the value stays in memcached stale_s more seconds; in that
   * window one process wins the recompute (R flag) while every process serves the stale
   * value. 0 = off. Default 0; bounds 0..2592000. */
  uint32_t stale_s;
  /* How long a winner may take to compute before another process may win: the TTL of the
   * placeholder memcached creates on a miss (N flag), in seconds. Default 10; bounds
   * 1..3600. */
  uint32_t lease_s;
  /* How long a process waits (polling) for a value another process computes, before failing
   * with BRAID_ETIMEDOUT. Default 15000; bounds 1..(1 << 31). */
  uint64_t wait_timeout_ms;
  /* Polling: first delay, doubling up to the maximum. Defaults 5 and 200; bounds
   * 1..wait_timeout_ms, initial <= max. */
  uint64_t poll_initial_ms;
  uint64_t poll_max_ms;
  /* Values of at least this many bytes are stored gzip-compressed in memcached (when that
   * makes them smaller). 0 = never (default); otherwise 64..(1 << 30). */
  size_t gzip_min_bytes;
  /* Negative caching across the fleet: a failed load's error is stored in memcached for
   * this many seconds, and every process gets it without loading. 0 = off (default); bounds
   * 0..86400. (l1.negative_ttl_ms is the per-process counterpart.) */
  uint32_t negative_ttl_s;
  /* Largest value the memo handles (decompressed); bigger fails the load with
   * BRAID_ETOOBIG. A value too big for memcached (max_item_bytes) is delivered but kept in
   * L1 only. Default 16 MiB; bounds 1..(1 << 30). */
  size_t max_value_bytes;
} braid_memcache_memo_opts_t;

/* The memo's counters. */
typedef struct braid_memcache_memo_stats_s {
  uint64_t l1_hits, l1_misses; /* memo calls answered by L1 or not (joiners included) */
  uint64_t l2_hits;    /* L1 loads answered by memcached (fresh or stale) */
  uint64_t l2_misses;  /* L1 loads memcached could not answer at once */
  uint64_t loads;      /* loader runs in this process */
  uint64_t wins;       /* wins (W) taken by this process */
  uint64_t waits;      /* loads that waited for another process's value */
  uint64_t polls;      /* mg rounds spent waiting */
  uint64_t stale_served; /* loads answered with a stale value (SWR) */
  uint64_t negative_hits; /* loads answered with an error stored by another process */
  uint64_t l2_errors;  /* memcached failures (the value was computed locally instead) */
  uint64_t too_big;    /* values kept out of memcached for their size */
  uint64_t stores;     /* values stored in memcached */
} braid_memcache_memo_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_memcache_memo_opts_init(braid_memcache_memo_opts_t *o);

/* Checks every field (l1 with braid_cache_opts_validate(), as "l1.<field>"). Returns 0, or
 * BRAID_EINVAL with the field and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_memcache_memo_opts_validate(const braid_memcache_memo_opts_t *o,
                                                   braid_opts_error_t *err);

/* Creates a memo on mc (which must outlive it; o copied, NULL = defaults). Returns 0,
 * BRAID_EINVAL (bad argument or option), BRAID_ENOMEM, or braid_cache_new()'s error. */
BRAID_EXTERN int braid_memcache_memo_new(braid_memcache_memo_t **out, braid_memcache_t *mc,
                                         const braid_memcache_memo_opts_t *o);

/* The memo's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_memcache_memo_set_data(braid_memcache_memo_t *memo, void *data);
BRAID_EXTERN void *braid_memcache_memo_get_data(const braid_memcache_memo_t *memo);

/* Get-or-compute through both tiers, as braid_cache_memo() does for one. An item in
 * memcached that another kind of client stored (without the memo's client flags, and with
 * no win token on it) is taken as the value, as it is; the memo's own items carry client
 * flags 0x4000 (value), 0x2000 (gzip) and 0x1000 (a cached error), so do not store other
 * items under the memo's keys with those bits set.
 * Returns:
 * - 0: an L1 hit; *value holds a reference (braid_blob_unref() it); cb is not called;
 * - BRAID_PENDING: cb runs exactly once, later, with the value or the error: from memcached,
 *   from this process's loader (when this process won the key, or memcached failed), or
 *   after waiting for the process that won;
 * - a negative code (cb never called): BRAID_EINVAL (NULL argument, empty key, a loader
 *   without its function), a cached error (negative caching), BRAID_ETOOMANYWAITERS,
 *   BRAID_ECLOSED, BRAID_ENOMEM.
 * loader is copied. The key goes to memcached as braid_memcache_request() sends keys. */
BRAID_EXTERN int braid_memcache_memo(braid_memcache_memo_t *memo, const void *key,
                                     size_t key_len, const braid_memcache_loader_t *loader,
                                     braid_blob_t **value, braid_memcache_memo_cb cb, void *arg);

/* Completes an asynchronous load exactly once: status 0 with value (its reference passes to
 * the memo), or a negative error with value NULL. Returns 0 or BRAID_EINVAL (load NULL, or
 * status 0 with value NULL: the load fails with BRAID_EINVAL). */
BRAID_EXTERN int braid_memcache_memo_load_done(braid_memcache_load_t *load, int status,
                                               braid_blob_t *value);

/* Copies the memo's counters. Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_memcache_memo_stats(const braid_memcache_memo_t *memo,
                                           braid_memcache_memo_stats_t *out);

/* Closes the memo: waiters get BRAID_ECANCELED (some from inside this call), requests to
 * memcached in flight are let finish (their results dropped), loaders still running are
 * waited for (an asynchronous loader must still call braid_memcache_memo_load_done(); its
 * result is dropped), then cb (may be NULL) runs once, never from inside this call. Close
 * the memo before its client. Returns 0, BRAID_EINVAL or BRAID_ECLOSED (already closing). */
BRAID_EXTERN int braid_memcache_memo_close(braid_memcache_memo_t *memo,
                                           braid_memcache_memo_close_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
