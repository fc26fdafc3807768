#include "internal.h"

struct braid_blob_s {
  atomic_uint refs;
  size_t len;
  max_align_t data[]; /* aligned for any use of the bytes */
};

int braid_blob_new(braid_blob_t **out, size_t len) {
  if (!out || len > SIZE_MAX - sizeof(braid_blob_t))
    return BRAID_EINVAL;
  braid_blob_t *b = braid__malloc(sizeof(*b) + len);
  if (!b)
    return BRAID_ENOMEM;
  atomic_init(&b->refs, 1);
  b->len = len;
  *out = b;
  return 0;
}

int braid_blob_copy(braid_blob_t **out, const void *data, size_t len) {
  if (!data && len)
    return BRAID_EINVAL;
  int rc = braid_blob_new(out, len);
  if (rc == 0 && len)
    memcpy((*out)->data, data, len);
  return rc;
}

braid_blob_t *braid_blob_ref(braid_blob_t *blob) {
  atomic_fetch_add_explicit(&blob->refs, 1, memory_order_relaxed);
  return blob;
}

void braid_blob_unref(braid_blob_t *blob) {
  if (!blob)
    return;
  if (atomic_fetch_sub_explicit(&blob->refs, 1, memory_order_acq_rel) == 1)
    braid__free(blob);
}

void *braid_blob_data(const braid_blob_t *blob) {
  return (void *)blob->data;
}

size_t braid_blob_len(const braid_blob_t *blob) {
  return blob->len;
}

unsigned braid_blob_refcount(const braid_blob_t *blob) {
  return atomic_load_explicit(&((braid_blob_t *)blob)->refs, memory_order_relaxed);
}
