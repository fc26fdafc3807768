/* braid: name resolution on the loop.
 *
 * A braid_resolver_t turns host names into addresses without a thread: it runs c-ares (the
 * resolver curl and Node use) on the loop, its sockets watched by the loop and its
 * retransmissions driven by a loop timer, so a DNS server that never answers costs a timer
 * and a socket, never a libuv threadpool thread (which gzip offload and memo loaders need).
 *
 * - IP literals ("192.0.2.1", "::1", "fe80::1%eth0") and the localhost names ("localhost",
 *   "*.localhost", RFC 6761) are answered at once, without a lookup: ::1 then 127.0.0.1.
 * - Other names go through /etc/hosts, then DNS (the servers of /etc/resolv.conf, or those
 *   given in the options).
 * - Answers are cached per (name, family) for their TTL (the smallest TTL of the records,
 *   clamped to min_ttl_ms..max_ttl_ms); "no such name" and "no address" answers for
 *   negative_ttl_ms. The cache holds at most cache_entries names (least recently used go).
 * - Lookups of the same (name, family) made while one is on the wire share it (single
 *   flight): one query, every caller gets the answer.
 * - At most max_inflight names are looked up at once; more wait in a queue of at most
 *   max_queued names, in order.
 *
 * braid_connect() uses the resolver named in its options, or the loop's own (default
 * options, made on first use and closed with the loop). */
#ifndef BRAID_DNS_H
#define BRAID_DNS_H

#include "common.h" /* first: its feature check must come before <uv.h> */
#include <uv.h>

#include "error.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_resolver_s braid_resolver_t;
typedef struct braid_resolve_s braid_resolve_t;

typedef struct braid_resolver_opts_s {
  /* The DNS servers to ask, comma-separated: "192.0.2.53", "192.0.2.53:5353",
   * "[2001:db8::53]:53". "" (the default) = the system's (/etc/resolv.conf). With servers
   * given, the system's search domains are not used either: names are looked up as given.
   * At most 255 characters. */
  char servers[256];
  /* How long the first query to a server waits for its answer; c-ares doubles it for each
   * round over the servers, so with one server a lookup gives up after
   * timeout_ms * (2^tries - 1) at most (defaults: 1000 ms, 3 tries: 7 s), and fails with
   * BRAID_EDNSTIMEOUT. Bounds: timeout_ms 1..60000, tries 1..10. */
  uint64_t timeout_ms;
  unsigned tries;
  /* Names looked up at once (each is one A and one AAAA query, or one of them when a family
   * is asked for). Default 64. Bounds 1..65536. */
  unsigned max_inflight;
  /* Names waiting for a free lookup slot; a lookup that would make it more fails at once with
   * BRAID_ETOOMANYWAITERS. Callers of a name already waiting or in flight join it and do not
   * count. Default 1024. Bounds 0..(1 << 20). */
  unsigned max_queued;
  /* Names (per family asked) the cache keeps answers for; 0 = no cache (lookups in flight are
   * still shared). Default 1024. Bounds 0..(1 << 20). */
  unsigned cache_entries;
  /* An answer is kept for its TTL, raised to min_ttl_ms and cut to max_ttl_ms. A TTL of 0
   * (and answers from /etc/hosts, which have none) is not cached unless min_ttl_ms says so.
   * Defaults 0 and 3600000 (1 h). Bounds: 0 <= min_ttl_ms <= max_ttl_ms <= 2^31. */
  uint64_t min_ttl_ms;
  uint64_t max_ttl_ms;
  /* How long "no such name" (BRAID_EDNSNOTFOUND) and "no address of that family"
   * (BRAID_EDNSNODATA) are remembered; timeouts and server failures never are. 0 = not at
   * all. Default 5000. Bounds 0..2^31. */
  uint64_t negative_ttl_ms;
} braid_resolver_opts_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_resolver_opts_init(braid_resolver_opts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with the field
 * and the reason in *err (err may be NULL). braid_resolver_new() runs this check. */
BRAID_EXTERN int braid_resolver_opts_validate(const braid_resolver_opts_t *o,
                                              braid_opts_error_t *err);

/* Counters since the resolver was made, and its state now. */
typedef struct braid_resolver_stats_s {
  uint64_t lookups;        /* braid_resolve() calls accepted (braid_connect() makes them too) */
  uint64_t answered_now;   /* of which answered without a query: a literal or localhost */
  uint64_t cache_hits;     /* of which answered from the cache (negative answers included) */
  uint64_t coalesced;      /* of which joined a lookup of the same name already under way */
  uint64_t queries;        /* names sent to c-ares (hosts file, then DNS) */
  uint64_t failures;       /* lookups that ended with an error other than BRAID_ECANCELED */
  uint64_t timeouts;       /* of which BRAID_EDNSTIMEOUT */
  uint64_t evictions;      /* cached answers dropped to make room (not on expiry) */
  uint64_t inflight;       /* names being looked up now */
  uint64_t queued;         /* names waiting for a lookup slot now */
  uint64_t cached;         /* answers in the cache now (some may have expired) */
} braid_resolver_stats_t;

/* The lookup finished: status 0 with the addresses (naddrs >= 1, port 0, in the order to try
 * them), or a negative code with addrs NULL and naddrs 0: BRAID_EDNSNOTFOUND (no such name),
 * BRAID_EDNSNODATA (the name has no address of the family asked), BRAID_EDNSTIMEOUT (no
 * server answered), BRAID_EDNSFAIL (the server failed or refused, or its answer was
 * malformed), BRAID_ENOMEM, or BRAID_ECANCELED (braid_resolve_cancel(), or the resolver
 * closed). The addresses are valid during the call only. Exactly once. */
typedef void (*braid_resolve_cb)(braid_resolve_t *req, int status,
                                 const struct sockaddr_storage *addrs, size_t naddrs,
                                 void *arg);

/* The resolver has closed (status 0); it is freed when this returns. */
typedef void (*braid_resolver_close_cb)(braid_resolver_t *resolver, int status, void *arg);

/* Makes a resolver on loop with options o (copied; NULL = defaults). It reads
 * /etc/resolv.conf now (when o->servers is ""), and opens sockets only while lookups are on
 * the wire. It counts as a live object on loop until its close callback has run. Returns 0
 * and the resolver in *out, or BRAID_EINVAL (out or loop NULL, or a bad option:
 * braid_resolver_opts_validate() says which, and the loop's log hook is told; a servers list
 * c-ares cannot parse too), BRAID_ECLOSED (the loop is closing) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_resolver_new(braid_resolver_t **out, braid_loop_t *loop,
                                    const braid_resolver_opts_t *o);

/* Closes the resolver: every pending lookup's callback runs with BRAID_ECANCELED before this
 * returns, queries on the wire are abandoned, and cb (may be NULL) runs once, later, when its
 * sockets and timer have closed. Allowed from inside a lookup's callback. Returns 0,
 * BRAID_EINVAL (resolver NULL) or BRAID_ECLOSED (already closing: cb will not be called). */
BRAID_EXTERN int braid_resolver_close(braid_resolver_t *resolver, braid_resolver_close_cb cb,
                                      void *arg);

/* The resolver's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_resolver_set_data(braid_resolver_t *resolver, void *data);
BRAID_EXTERN void *braid_resolver_get_data(const braid_resolver_t *resolver);

/* Fills *out with the resolver's counters. */
BRAID_EXTERN void braid_resolver_stats(const braid_resolver_t *resolver,
                                       braid_resolver_stats_t *out);

/* Looks host up: a name (at most 254 characters, no spaces or control characters) or an IP
 * literal. family: AF_UNSPEC (both, in the order to try), AF_INET or AF_INET6. Returns 0
 * (cb will be called exactly once, never from inside this call; from the cache or for a
 * literal, later in the same loop iteration), BRAID_EINVAL (a NULL argument, a bad family or
 * name, or a literal of the other family), BRAID_ECLOSED (the resolver is closing),
 * BRAID_ETOOMANYWAITERS (max_queued names wait already) or BRAID_ENOMEM; cb will not be called
 * then. If req is not NULL it receives a handle for braid_resolve_cancel(), valid until cb
 * returns. */
BRAID_EXTERN int braid_resolve(braid_resolve_t **req, braid_resolver_t *resolver,
                               const char *host, int family, braid_resolve_cb cb, void *arg);

/* Cancels a pending lookup: its callback runs with BRAID_ECANCELED from inside this call. A
 * query on the wire for it goes on if others wait for the same name, or to fill the cache,
 * but is bounded by the timeouts. Returns 0, BRAID_EINVAL (req NULL) or BRAID_ECLOSED (the
 * callback is running or ran: req is invalid after it returned). */
BRAID_EXTERN int braid_resolve_cancel(braid_resolve_t *req);

#ifdef __cplusplus
}
#endif
#endif
