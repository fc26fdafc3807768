/* braid: bandwidth limits.
 *
 * A token bucket: rate_bytes_per_s tokens accrue per second up to burst_bytes; sending or
 * receiving n bytes takes n tokens. A connection can have its own bucket (see
 * braid_conn_opts_t) and also draw from a shared group bucket, e.g. one per server, so a
 * whole server stays under a bandwidth cap. A connection that runs out of tokens pauses that
 * direction and resumes on a timer; nothing is dropped. */
#ifndef BRAID_RATELIMIT_H
#define BRAID_RATELIMIT_H

#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_ratelimit_s braid_ratelimit_t;

/* Creates a shared bucket on loop. rate_bytes_per_s: 1..(1 << 40). burst_bytes: 0 means
 * rate/10 (100 ms worth) but at least 16 KiB; otherwise 1..(1 << 40). Use it only from
 * loop's thread. Returns 0, BRAID_EINVAL or BRAID_ENOMEM. */
BRAID_EXTERN int braid_ratelimit_new(braid_ratelimit_t **out, braid_loop_t *loop,
                                     uint64_t rate_bytes_per_s, uint64_t burst_bytes);

/* Changes the rate and burst of a live bucket (same bounds). Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_ratelimit_set(braid_ratelimit_t *rl, uint64_t rate_bytes_per_s,
                                     uint64_t burst_bytes);

/* Drops the caller's bucket. Connections still drawing from it keep it until the last of
 * them closes, and then it is freed (with them, it keeps the loop busy until then); otherwise
 * it is freed now. Do not use rl after this call. Cannot fail; NULL is ignored. */
BRAID_EXTERN void braid_ratelimit_free(braid_ratelimit_t *rl);

#ifdef __cplusplus
}
#endif
#endif
