/* Error codes: every braid code has a distinct name and message; libuv codes pass through. */
#include <string.h>

#include "../support.h"

static void test_braid_codes_named(void **state) {
  (void)state;
#define CHECK_(name, value, msg)                                                               \
  assert_string_equal(braid_err_name(value), "BRAID_" #name);                                 \
  assert_string_equal(braid_strerror(value), msg);                                            \
  assert_true((value) <= -30000);
  BRAID_ERRNO_MAP(CHECK_)
#undef CHECK_
}

static void test_codes_distinct(void **state) {
  (void)state;
  static const int codes[] = {
#define CODE_(name, value, msg) value,
      BRAID_ERRNO_MAP(CODE_)
#undef CODE_
  };
  size_t n = sizeof(codes) / sizeof(codes[0]);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      assert_int_not_equal(codes[i], codes[j]);
}

/* Positive results have names and messages too, and values of their own (0.1.0 gave
 * BRAID_GZIP_DONE the value 1 and "UNKNOWN" as its name). */
static void test_results_named(void **state) {
  (void)state;
#define CHECK_(name, value, msg)                                                                   \
  assert_string_equal(braid_err_name(value), "BRAID_" #name);                                      \
  assert_string_equal(braid_strerror(value), msg);                                                 \
  assert_true((value) > 0);
  BRAID_RESULT_MAP(CHECK_)
#undef CHECK_
  assert_string_equal(braid_err_name(BRAID_GZIP_DONE), "BRAID_GZIP_DONE");
  assert_string_equal(braid_err_name(BRAID_GZIP_SKIPPED), "BRAID_GZIP_SKIPPED");
  assert_string_equal(braid_err_name(BRAID_PENDING), "BRAID_PENDING");
  assert_int_not_equal(BRAID_GZIP_DONE, BRAID_GZIP_SKIPPED);
  assert_int_not_equal(BRAID_PENDING, BRAID_GZIP_DONE);
}

static void test_uv_passthrough(void **state) {
  (void)state;
  assert_string_equal(braid_err_name(UV_ECONNRESET), "ECONNRESET");
  assert_string_equal(braid_strerror(UV_ECONNRESET), uv_strerror(UV_ECONNRESET));
  assert_int_equal(BRAID_EINVAL, UV_EINVAL);
  assert_int_equal(BRAID_ETIMEDOUT, UV_ETIMEDOUT);
  assert_string_equal(braid_err_name(0), "OK");
  assert_string_equal(braid_strerror(0), "success");
  assert_string_equal(braid_err_name(-39999), "UNKNOWN");
  assert_string_equal(braid_strerror(12345), "unknown error");
}

static void test_version(void **state) {
  (void)state;
  assert_string_equal(braid_version_string(), "0.2.0");
  assert_int_equal(braid_version(), 0x000200);
}

static int allocs;
static void *count_malloc(size_t n) {
  allocs++;
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  allocs++;
  return realloc(p, n);
}
static void *count_calloc(size_t c, size_t n) {
  allocs++;
  return calloc(c, n);
}

static void test_allocator_hook(void **state) {
  (void)state;
  assert_int_equal(braid_set_allocator(NULL, realloc, calloc, free), BRAID_EINVAL);
  assert_int_equal(braid_set_allocator(count_malloc, count_realloc, count_calloc, free), 0);
  braid_blob_t *b;
  assert_int_equal(braid_blob_new(&b, 10), 0);
  braid_blob_unref(b);
  assert_true(allocs >= 1);
  assert_int_equal(braid_set_allocator(malloc, realloc, calloc, free), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_braid_codes_named), cmocka_unit_test(test_codes_distinct),
      cmocka_unit_test(test_results_named),     cmocka_unit_test(test_uv_passthrough),
      cmocka_unit_test(test_version),           cmocka_unit_test(test_allocator_hook),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
