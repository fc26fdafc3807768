/* braid: latency histograms.
 *
 * A fixed-size log-linear histogram (HdrHistogram's idea): values from 0 to 2^63 with a
 * relative error under 1/64 (about 1.6%), 64 sub-buckets per power of two. Recording is a
 * few instructions and never allocates; histograms merge, and export as JSON. Not
 * thread-safe: keep one per thread and merge. */
#ifndef BRAID_STATS_H
#define BRAID_STATS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BRAID_HIST_SUB_BITS 6
#define BRAID_HIST_BUCKETS ((64 - BRAID_HIST_SUB_BITS + 1) << BRAID_HIST_SUB_BITS)

typedef struct braid_histogram_s {
  uint64_t count;
  uint64_t sum;
  uint64_t min;
  uint64_t max;
  uint64_t counts[BRAID_HIST_BUCKETS];
} braid_histogram_t;

/* Empties h. A zeroed histogram is also valid and empty. */
BRAID_EXTERN void braid_histogram_reset(braid_histogram_t *h);

/* Records one value (any unit; name the unit where you keep the histogram). */
BRAID_EXTERN void braid_histogram_record(braid_histogram_t *h, uint64_t value);

/* Adds every value recorded in src to dst. */
BRAID_EXTERN void braid_histogram_merge(braid_histogram_t *dst, const braid_histogram_t *src);

/* Returns the value at percentile p (0..100): the smallest recorded bucket value v such that
 * at least p% of values are <= v, within the histogram's relative error. 0 when empty; p
 * outside 0..100 is clamped to it. */
BRAID_EXTERN uint64_t braid_histogram_percentile(const braid_histogram_t *h, double p);

/* Returns the mean of the recorded values, 0.0 when empty. */
BRAID_EXTERN double braid_histogram_mean(const braid_histogram_t *h);

/* Writes h as a JSON object {"count":..,"min":..,"max":..,"mean":..,"p50":..,"p90":..,
 * "p99":..,"p999":..} into buf (NUL-terminated, truncated to size). Returns the length the
 * full text needs, excluding the NUL, as snprintf does. */
BRAID_EXTERN int braid_histogram_json(const braid_histogram_t *h, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
