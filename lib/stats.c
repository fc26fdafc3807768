#include <stdio.h>

#include "internal.h"

#define SUB_COUNT (1u << BRAID_HIST_SUB_BITS)

/* Values below SUB_COUNT get a bucket each; above, each power of two [2^k, 2^(k+1)) splits
 * into SUB_COUNT buckets of equal width, so the relative error stays under 1/SUB_COUNT. */
static unsigned bucket_of(uint64_t v) {
  if (v < SUB_COUNT)
    return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned e = msb - BRAID_HIST_SUB_BITS + 1;
  return e * SUB_COUNT + (unsigned)(v >> (e - 1)) - SUB_COUNT;
}

/* The highest value that falls into bucket i. */
static uint64_t bucket_top(unsigned i) {
  if (i < SUB_COUNT)
    return i;
  unsigned e = i / SUB_COUNT;
  uint64_t lower = (uint64_t)(i - e * SUB_COUNT + SUB_COUNT) << (e - 1);
  return lower + ((uint64_t)1 << (e - 1)) - 1;
}

void braid_histogram_reset(braid_histogram_t *h) {
  memset(h, 0, sizeof(*h));
}

void braid_histogram_record(braid_histogram_t *h, uint64_t value) {
  if (h->count == 0 || value < h->min)
    h->min = value;
  if (value > h->max)
    h->max = value;
  h->count++;
  h->sum += value;
  h->counts[bucket_of(value)]++;
}

void braid_histogram_merge(braid_histogram_t *dst, const braid_histogram_t *src) {
  if (src->count == 0)
    return;
  if (dst->count == 0 || src->min < dst->min)
    dst->min = src->min;
  if (src->max > dst->max)
    dst->max = src->max;
  dst->count += src->count;
  dst->sum += src->sum;
  for (unsigned i = 0; i < BRAID_HIST_BUCKETS; i++)
    dst->counts[i] += src->counts[i];
}

uint64_t braid_histogram_percentile(const braid_histogram_t *h, double p) {
  if (h->count == 0)
    return 0;
  if (!(p > 0.0))
    return h->min;
  if (p >= 100.0)
    return h->max;
  /* Rank of the value wanted, 1-based: ceil(p/100 * count). */
  double exact = p / 100.0 * (double)h->count;
  uint64_t rank = (uint64_t)exact;
  if ((double)rank < exact)
    rank++;
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < BRAID_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t v = bucket_top(i);
      if (v > h->max)
        v = h->max;
      if (v < h->min)
        v = h->min;
      return v;
    }
  }
  return h->max;
}

double braid_histogram_mean(const braid_histogram_t *h) {
  return h->count ? (double)h->sum / (double)h->count : 0.0;
}

int braid_histogram_json(const braid_histogram_t *h, char *buf, size_t size) {
  return snprintf(buf, size,
                  "{\"count\":%llu,\"min\":%llu,\"max\":%llu,\"mean\":%.3f,\"p50\":%llu,"
                  "\"p90\":%llu,\"p99\":%llu,\"p999\":%llu}",
                  (unsigned long long)h->count, (unsigned long long)(h->count ? h->min : 0),
                  (unsigned long long)h->max, braid_histogram_mean(h),
                  (unsigned long long)braid_histogram_percentile(h, 50),
                  (unsigned long long)braid_histogram_percentile(h, 90),
                  (unsigned long long)braid_histogram_percentile(h, 99),
                  (unsigned long long)braid_histogram_percentile(h, 99.9));
}
