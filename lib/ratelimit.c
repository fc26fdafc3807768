/* Token buckets. Tokens are kept as a signed count so that reading, which cannot give bytes
 * back once the kernel handed them over, may overdraw: the debt then delays the next read. */
#include "internal.h"

#define RL_MAX ((uint64_t)1 << 40)


static uint64_t default_burst(uint64_t rate) {
  uint64_t b = rate / 10;
  return b < 16384 ? 16384 : b;
}

static int check(uint64_t rate, uint64_t burst) {
  if (rate < 1 || rate > RL_MAX || burst > RL_MAX)
    return BRAID_EINVAL;
  return 0;
}

void braid__ratelimit_init(braid_ratelimit_t *rl, uint64_t rate, uint64_t burst, uint64_t now) {
  rl->rate = rate;
  rl->burst = burst ? burst : default_burst(rate);
  rl->tokens = (int64_t)rl->burst;
  rl->last_ms = now;
}

int braid_ratelimit_new(braid_ratelimit_t **out, braid_loop_t *loop, uint64_t rate_bytes_per_s,
                        uint64_t burst_bytes) {
  if (!out || !loop || check(rate_bytes_per_s, burst_bytes))
    return BRAID_EINVAL;
  braid_ratelimit_t *rl = braid__calloc(1, sizeof(*rl));
  if (!rl)
    return BRAID_ENOMEM;
  rl->loop = loop;
  braid__ratelimit_init(rl, rate_bytes_per_s, burst_bytes, braid__now(loop));
  braid__loop_ref(loop);
  *out = rl;
  return 0;
}

int braid_ratelimit_set(braid_ratelimit_t *rl, uint64_t rate_bytes_per_s, uint64_t burst_bytes) {
  if (!rl || check(rate_bytes_per_s, burst_bytes))
    return BRAID_EINVAL;
  rl->rate = rate_bytes_per_s;
  rl->burst = burst_bytes ? burst_bytes : default_burst(rate_bytes_per_s);
  if (rl->tokens > (int64_t)rl->burst)
    rl->tokens = (int64_t)rl->burst;
  return 0;
}

static void ratelimit_destroy(braid_ratelimit_t *rl) {
  braid__loop_unref(rl->loop);
  braid__free(rl);
}

void braid_ratelimit_free(braid_ratelimit_t *rl) {
  if (!rl)
    return;
  /* Connections still drawing from it keep it; the last one to close frees it. */
  if (rl->users) {
    rl->freed = true;
    return;
  }
  ratelimit_destroy(rl);
}

static void refill(braid_ratelimit_t *rl, uint64_t now) {
  if (now <= rl->last_ms)
    return;
  uint64_t elapsed = now - rl->last_ms;
  /* rate <= 2^40 and a bucket caps out within burst/rate seconds, so clamp elapsed first to
   * keep the product in range. */
  uint64_t cap_ms = (rl->burst + (uint64_t)(rl->tokens < 0 ? -rl->tokens : 0)) * 1000 / rl->rate + 1;
  if (elapsed > cap_ms)
    elapsed = cap_ms;
  uint64_t add = elapsed * rl->rate / 1000;
  if (add == 0)
    return; /* keep last_ms so fractions accumulate instead of being lost */
  rl->last_ms = now;
  int64_t t = rl->tokens + (int64_t)add;
  rl->tokens = t > (int64_t)rl->burst ? (int64_t)rl->burst : t;
}

uint64_t braid__ratelimit_take(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t want) {
  refill(rl, now_ms);
  if (rl->tokens <= 0)
    return 0;
  uint64_t got = want < (uint64_t)rl->tokens ? want : (uint64_t)rl->tokens;
  rl->tokens -= (int64_t)got;
  return got;
}

void braid__ratelimit_consume(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t n) {
  refill(rl, now_ms);
  rl->tokens -= (int64_t)(n > RL_MAX ? RL_MAX : n);
}

void braid__ratelimit_refund(braid_ratelimit_t *rl, uint64_t tokens) {
  int64_t t = rl->tokens + (int64_t)tokens;
  rl->tokens = t > (int64_t)rl->burst ? (int64_t)rl->burst : t;
}

uint64_t braid__ratelimit_wait_ms(braid_ratelimit_t *rl, uint64_t now_ms, uint64_t want) {
  refill(rl, now_ms);
  /* Wake at half a bucket, not a full one: tokens past the cap are lost, so a waiter that
   * wakes only when the bucket is full loses whatever accrues while its timer runs late. */
  uint64_t half = rl->burst / 2;
  uint64_t need = want < half ? want : half;
  if (need == 0)
    need = 1;
  int64_t missing = (int64_t)need - rl->tokens;
  if (missing <= 0)
    return 1;
  uint64_t ms = ((uint64_t)missing * 1000 + rl->rate - 1) / rl->rate;
  return ms ? ms : 1;
}

void braid__ratelimit_attach(braid_ratelimit_t *rl) {
  rl->users++;
}

void braid__ratelimit_detach(braid_ratelimit_t *rl) {
  if (--rl->users == 0 && rl->freed)
    ratelimit_destroy(rl);
}
