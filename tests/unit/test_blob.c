/* Refcounted blobs: counts, copies, and concurrent ref/unref from threads. */
#include <string.h>

#include "../support.h"

static void test_copy_and_refs(void **state) {
  (void)state;
  braid_blob_t *b;
  assert_int_equal(braid_blob_copy(&b, "hello", 5), 0);
  assert_int_equal(braid_blob_len(b), 5);
  assert_memory_equal(braid_blob_data(b), "hello", 5);
  assert_int_equal(braid_blob_refcount(b), 1);
  assert_ptr_equal(braid_blob_ref(b), b);
  assert_int_equal(braid_blob_refcount(b), 2);
  braid_blob_unref(b);
  assert_int_equal(braid_blob_refcount(b), 1);
  braid_blob_unref(b);
  braid_blob_unref(NULL);
}

static void test_bad_args(void **state) {
  (void)state;
  braid_blob_t *b;
  assert_int_equal(braid_blob_new(NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_blob_copy(&b, NULL, 3), BRAID_EINVAL);
  assert_int_equal(braid_blob_new(&b, SIZE_MAX), BRAID_EINVAL);
  assert_int_equal(braid_blob_copy(&b, NULL, 0), 0);
  assert_int_equal(braid_blob_len(b), 0);
  braid_blob_unref(b);
}

static void hammer(void *arg) {
  braid_blob_t *b = arg;
  for (int i = 0; i < 100000; i++) {
    braid_blob_ref(b);
    braid_blob_unref(b);
  }
  braid_blob_unref(b);
}

static void test_threads(void **state) {
  (void)state;
  braid_blob_t *b;
  assert_int_equal(braid_blob_new(&b, 64), 0);
  uv_thread_t th[4];
  for (int i = 0; i < 4; i++) {
    braid_blob_ref(b);
    assert_int_equal(uv_thread_create(&th[i], hammer, b), 0);
  }
  for (int i = 0; i < 4; i++)
    uv_thread_join(&th[i]);
  assert_int_equal(braid_blob_refcount(b), 1);
  braid_blob_unref(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_copy_and_refs),
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
