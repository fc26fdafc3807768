/* Histograms: exact for small values, bounded relative error above, percentiles, merge. */
#include <stdio.h>
#include <string.h>

#include "../support.h"

static braid_histogram_t h, h2;

static void test_small_values_exact(void **state) {
  (void)state;
  braid_histogram_reset(&h);
  for (uint64_t v = 1; v <= 50; v++)
    braid_histogram_record(&h, v);
  assert_int_equal(h.count, 50);
  assert_int_equal(h.min, 1);
  assert_int_equal(h.max, 50);
  assert_int_equal(braid_histogram_percentile(&h, 50), 25);
  assert_int_equal(braid_histogram_percentile(&h, 100), 50);
  assert_int_equal(braid_histogram_percentile(&h, 0), 1);
  assert_true(braid_histogram_mean(&h) > 25.49 && braid_histogram_mean(&h) < 25.51);
}

static void test_relative_error(void **state) {
  (void)state;
  uint64_t vals[] = {64, 65, 100, 1000, 12345, 999999, 123456789, (uint64_t)1 << 40,
                     UINT64_MAX / 3, UINT64_MAX};
  for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
    braid_histogram_reset(&h);
    braid_histogram_record(&h, 0);
    braid_histogram_record(&h, vals[i]);
    braid_histogram_record(&h, UINT64_MAX);
    uint64_t got = braid_histogram_percentile(&h, 50);
    assert_true(got >= vals[i]);
    assert_true((double)(got - vals[i]) <= (double)vals[i] / 64.0);
  }
}

static void test_merge_and_json(void **state) {
  (void)state;
  braid_histogram_reset(&h);
  braid_histogram_reset(&h2);
  for (int i = 0; i < 90; i++)
    braid_histogram_record(&h, 10);
  for (int i = 0; i < 10; i++)
    braid_histogram_record(&h2, 1000);
  braid_histogram_merge(&h, &h2);
  assert_int_equal(h.count, 100);
  assert_int_equal(braid_histogram_percentile(&h, 90), 10);
  uint64_t p99 = braid_histogram_percentile(&h, 99);
  assert_true(p99 >= 1000 && p99 <= 1000 + 1000 / 64);
  char buf[256];
  int n = braid_histogram_json(&h, buf, sizeof(buf));
  assert_true(n > 0 && (size_t)n < sizeof(buf));
  assert_non_null(strstr(buf, "\"count\":100"));
  assert_non_null(strstr(buf, "\"p50\":10"));
  char tiny[8];
  assert_int_equal(braid_histogram_json(&h, tiny, sizeof(tiny)), n);
  assert_int_equal(strlen(tiny), 7);
}

static void test_empty(void **state) {
  (void)state;
  braid_histogram_reset(&h);
  assert_int_equal(braid_histogram_percentile(&h, 99), 0);
  assert_true(braid_histogram_mean(&h) == 0.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_relative_error),
      cmocka_unit_test(test_merge_and_json),
      cmocka_unit_test(test_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
