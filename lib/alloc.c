#include <stdlib.h>
#include <sys/random.h>
#include <errno.h>

#include "internal.h"

static struct {
  braid_malloc_fn malloc_fn;
  braid_realloc_fn realloc_fn;
  braid_calloc_fn calloc_fn;
  braid_free_fn free_fn;
} braid__allocator = {malloc, realloc, calloc, free};

int braid_set_allocator(braid_malloc_fn malloc_fn, braid_realloc_fn realloc_fn,
                        braid_calloc_fn calloc_fn, braid_free_fn free_fn) {
  if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
    return BRAID_EINVAL;
  braid__allocator.malloc_fn = malloc_fn;
  braid__allocator.realloc_fn = realloc_fn;
  braid__allocator.calloc_fn = calloc_fn;
  braid__allocator.free_fn = free_fn;
  return 0;
}

void *braid__malloc(size_t size) {
  return braid__allocator.malloc_fn(size ? size : 1);
}

void *braid__realloc(void *ptr, size_t size) {
  return braid__allocator.realloc_fn(ptr, size ? size : 1);
}

void *braid__calloc(size_t count, size_t size) {
  return braid__allocator.calloc_fn(count ? count : 1, size ? size : 1);
}

void braid__free(void *ptr) {
  if (ptr)
    braid__allocator.free_fn(ptr);
}

int braid__random_bytes(void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}
