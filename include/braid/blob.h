/* braid: refcounted byte blobs.
 *
 * A blob is an immutable-after-fill byte array with an atomic reference count, so one value
 * (a cached response, say) can be written to many connections, on any thread, without a
 * copy, and is freed when the last holder lets go. */
#ifndef BRAID_BLOB_H
#define BRAID_BLOB_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_blob_s braid_blob_t;

/* Creates a blob of len bytes (uninitialised; fill it through braid_blob_data() before
 * sharing it) with one reference. len may be 0. Returns 0, BRAID_EINVAL (out NULL) or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_blob_new(braid_blob_t **out, size_t len);

/* Creates a blob holding a copy of data[0..len). data may be NULL only when len is 0. */
BRAID_EXTERN int braid_blob_copy(braid_blob_t **out, const void *data, size_t len);

/* Adds a reference and returns blob. Thread-safe. */
BRAID_EXTERN braid_blob_t *braid_blob_ref(braid_blob_t *blob);

/* Drops a reference; the last one frees the blob. NULL is ignored. Thread-safe. */
BRAID_EXTERN void braid_blob_unref(braid_blob_t *blob);

/* Returns the blob's bytes (writable: fill before sharing, never after). */
BRAID_EXTERN void *braid_blob_data(const braid_blob_t *blob);

/* Returns the blob's length in bytes. */
BRAID_EXTERN size_t braid_blob_len(const braid_blob_t *blob);

/* Returns the current reference count (for tests and diagnostics). */
BRAID_EXTERN unsigned braid_blob_refcount(const braid_blob_t *blob);

#ifdef __cplusplus
}
#endif
#endif
