/* The in-run baseline for bench_cache: a straightforward chained hash table with a doubly
 * linked LRU list, as one would write it without tuning. Keys and values are inline in one
 * allocation per entry (already better than a malloc per key), the hash is unkeyed FNV-1a,
 * buckets are a power of two at least the capacity (load factor <= 1), and a hit moves the
 * node to the list head. Not part of the library. */
#ifndef BENCH_BASELINE_LRU_H
#define BENCH_BASELINE_LRU_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct bl_link_s {
  struct bl_link_s *prev, *next;
} bl_link_t;

typedef struct bl_node_s {
  bl_link_t lru; /* first, so a link is its node */
  struct bl_node_s *hnext;
  uint64_t hash;
  uint32_t klen, vlen;
  unsigned char data[];
} bl_node_t;

typedef struct {
  bl_node_t **buckets;
  size_t mask;
  size_t count, cap;
  bl_link_t head; /* sentinel: head.next is the most recent */
} bl_cache_t;

static inline uint64_t bl_fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3u;
  }
  return h;
}

static inline int bl_init(bl_cache_t *c, size_t cap) {
  size_t nb = 1;
  while (nb < cap)
    nb <<= 1;
  c->buckets = calloc(nb, sizeof(*c->buckets));
  if (!c->buckets)
    return -1;
  c->mask = nb - 1;
  c->count = 0;
  c->cap = cap;
  c->head.next = c->head.prev = &c->head;
  return 0;
}

static inline void bl_unlink(bl_node_t *n) {
  n->lru.prev->next = n->lru.next;
  n->lru.next->prev = n->lru.prev;
}

static inline void bl_push_front(bl_cache_t *c, bl_node_t *n) {
  n->lru.next = c->head.next;
  n->lru.prev = &c->head;
  c->head.next->prev = &n->lru;
  c->head.next = &n->lru;
}

static inline bl_node_t *bl_find(bl_cache_t *c, uint64_t h, const void *key, size_t klen) {
  for (bl_node_t *n = c->buckets[h & c->mask]; n; n = n->hnext)
    if (n->hash == h && n->klen == klen && memcmp(n->data, key, klen) == 0)
      return n;
  return NULL;
}

static inline void bl_remove(bl_cache_t *c, bl_node_t *n) {
  bl_node_t **pp = &c->buckets[n->hash & c->mask];
  while (*pp != n)
    pp = &(*pp)->hnext;
  *pp = n->hnext;
  bl_unlink(n);
  c->count--;
  free(n);
}

/* Copies the value out; returns 0 or -1 (absent). */
static inline int bl_get(bl_cache_t *c, const void *key, size_t klen, void *buf, size_t *len) {
  uint64_t h = bl_fnv1a(key, klen);
  bl_node_t *n = bl_find(c, h, key, klen);
  if (!n)
    return -1;
  bl_unlink(n);
  bl_push_front(c, n);
  memcpy(buf, n->data + n->klen, n->vlen);
  *len = n->vlen;
  return 0;
}

static inline int bl_put(bl_cache_t *c, const void *key, size_t klen, const void *val,
                         size_t vlen) {
  uint64_t h = bl_fnv1a(key, klen);
  bl_node_t *old = bl_find(c, h, key, klen);
  if (old)
    bl_remove(c, old);
  if (c->count == c->cap)
    bl_remove(c, (bl_node_t *)c->head.prev);
  bl_node_t *n = malloc(sizeof(*n) + klen + vlen);
  if (!n)
    return -1;
  n->hash = h;
  n->klen = (uint32_t)klen;
  n->vlen = (uint32_t)vlen;
  memcpy(n->data, key, klen);
  memcpy(n->data + klen, val, vlen);
  n->hnext = c->buckets[h & c->mask];
  c->buckets[h & c->mask] = n;
  bl_push_front(c, n);
  c->count++;
  return 0;
}

static inline void bl_free(bl_cache_t *c) {
  bl_link_t *n = c->head.next;
  while (n != &c->head) {
    bl_link_t *next = n->next;
    free(n);
    n = next;
  }
  free(c->buckets);
}

#endif
