/* braid: allocator hook.
 *
 * The only process-wide state braid has. Set it before creating any braid object, from one
 * thread, and never change it while braid objects exist; memory allocated with one allocator
 * is freed with it. Like uv_replace_allocator(), which braid does not call for you. */
#ifndef BRAID_ALLOC_H
#define BRAID_ALLOC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(*braid_malloc_fn)(size_t size);
typedef void *(*braid_realloc_fn)(void *ptr, size_t size);
typedef void *(*braid_calloc_fn)(size_t count, size_t size);
typedef void (*braid_free_fn)(void *ptr);

/* Replaces the functions braid allocates with (default: the C library's). All four must be
 * non-NULL and must behave like their C counterparts, including thread safety (braid
 * allocates from threadpool threads). Returns 0, or BRAID_EINVAL if any is NULL (nothing
 * changed). */
BRAID_EXTERN int braid_set_allocator(braid_malloc_fn malloc_fn, braid_realloc_fn realloc_fn,
                                     braid_calloc_fn calloc_fn, braid_free_fn free_fn);

#ifdef __cplusplus
}
#endif
#endif
