/* braid: the memoizing cache (see include/braid/cache.h).
 *
 * Layout, chosen for the hit path (a hit at 1M entries is bound by memory round trips):
 * - The store is a flat open-addressing table of 128-byte records plus one tag byte per
 *   record (linear probing, at most 3/4 full, deletions leave tombstones until the next
 *   rehash). A small entry (key + value <= 80 bytes) lives entirely in its record; a larger
 *   one keeps key and value in one external block. The tag (7 hash bits) and the home record
 *   are both addressed straight from the hash, so a hit overlaps their fetches: about one
 *   memory round trip, where a table of pointers needs two (slot, then entry) and a chained
 *   LRU needs three or more (bucket, node, list neighbours).
 * - Large tables are 2 MiB aligned and advised for transparent huge pages (no TLB misses).
 * - Policy lists link record indices. LRU moves the record to the tail on a hit; SIEVE only
 *   sets a byte in the record's first line (written only when clear).
 * - Keys are hashed with braid's fast keyed hash (braid/hash.h) by default: at a million
 *   entries a hit costs about one memory round trip, and what decides the throughput is how
 *   many lookups the CPU overlaps, which the hash's instruction count limits (SipHash-1-3
 *   made a uniform 1M-entry hit about twice as slow). An insert whose probe run reaches
 *   FLOOD_PROBE slots, which random keys practically never produce at 3/4 load, switches
 *   the store to SipHash-1-3 and rehashes it (Rust's old "adaptive hashing" idea), so even
 *   keys crafted against the fast hash cannot keep a long run.
 * The "core" below is the single-threaded store; braid_cache_t adds the loop, memoization
 * and timers; braid_cache_shared_t is an array of cores behind mutexes. */
#include "internal.h"

#include <inttypes.h>

#include "hash_impl.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

/* ---- hash tables of pointers (the in-flight loads) ------------------------------------- */

typedef struct {
  uint64_t hash;
  void *p;
} slot_t;

typedef struct {
  slot_t *slots;
  size_t mask; /* capacity - 1; capacity is a power of two */
  size_t count;
} table_t;

#define TAB_MIN 16
#define HUGE_PAGE ((size_t)2 << 20)

static int table_init(table_t *t, size_t cap) {
  t->slots = braid__calloc(cap, sizeof(slot_t));
  if (!t->slots)
    return BRAID_ENOMEM;
  t->mask = cap - 1;
  t->count = 0;
  return 0;
}

static size_t table_slot_of(const table_t *t, uint64_t h, const void *p) {
  for (size_t i = h & t->mask;; i = (i + 1) & t->mask)
    if (t->slots[i].p == p)
      return i;
}

/* Backward-shift deletion: moves later members of the probe run back so that every entry
 * stays reachable from its home slot without tombstones. */
static void table_remove_at(table_t *t, size_t i) {
  size_t j = i;
  for (;;) {
    j = (j + 1) & t->mask;
    if (!t->slots[j].p)
      break;
    size_t home = t->slots[j].hash & t->mask;
    /* Slot j may move to i only if its home is not cyclically inside (i, j]. */
    bool inside = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!inside) {
      t->slots[i] = t->slots[j];
      i = j;
    }
  }
  t->slots[i].p = NULL;
  t->slots[i].hash = 0;
  t->count--;
}

static void table_insert(table_t *t, uint64_t h, void *p) {
  size_t i = h & t->mask;
  while (t->slots[i].p)
    i = (i + 1) & t->mask;
  t->slots[i].hash = h;
  t->slots[i].p = p;
  t->count++;
}

static int table_grow(table_t *t) {
  table_t n;
  int rc = table_init(&n, (t->mask + 1) * 2);
  if (rc)
    return rc;
  for (size_t i = 0; i <= t->mask; i++)
    if (t->slots[i].p)
      table_insert(&n, t->slots[i].hash, t->slots[i].p);
  braid__free(t->slots);
  *t = n;
  return 0;
}

/* Short keys (the common case: ids, paths, digests) compare word by word inline; memcmp's
 * call costs more than the comparison itself at these sizes. */
static inline bool key_equal(const unsigned char *a, const void *bv, size_t n) {
  const unsigned char *b = bv;
  if (n > 64)
    return memcmp(a, b, n) == 0;
  uint64_t diff = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    memcpy(&x, a + i, 8);
    memcpy(&y, b + i, 8);
    diff |= x ^ y;
  }
  for (; i < n; i++)
    diff |= (uint64_t)(a[i] ^ b[i]);
  return diff == 0;
}

/* ---- the store ------------------------------------------------------------------------- */

/* One slot of the store: a 128-byte record, two cache lines, holding the entry itself. A
 * key and inline value of up to REC_INLINE bytes together live in the record; longer ones
 * in one external allocation the record points to. A hit on a small entry therefore reads
 * the tag byte and the record, both addressed straight from the hash, so the two fetches
 * overlap: one memory round trip, where a pointer-based table needs two (slot, then entry). */
#define REC_INLINE 80
#define NIL UINT32_MAX

typedef struct rec_s {
  uint64_t hash;
  uint64_t expire_ms; /* 0: never */
  uint32_t klen;
  uint32_t vlen;   /* inline value length (0 when blob is set) */
  uint8_t visited; /* SIEVE */
  uint8_t external;
  uint8_t pad[2];
  int32_t err; /* negative entry: the cached load error; 0 for values */
  union {
    unsigned char data[REC_INLINE]; /* key, then the inline value */
    unsigned char *ext;             /* the same, when they do not fit */
  } u;
  braid_blob_t *blob; /* the value, when held as a blob */
  uint32_t prev, next; /* policy list (record indices): oldest first */
} rec_t;

/* Tag bytes, one per record: which slots are live, without touching the records. */
#define TAG_EMPTY 0
static inline uint8_t tag_of(uint64_t h) {
  return (uint8_t)(0x80 | (h >> 57));
}

/* How a core hashes keys. HASH_WEAK exists for tests only (braid__cache_test_weak_hash):
 * a hash that sends every key to one slot, to exercise the flood fall-back. */
enum { HASH_FAST = 0, HASH_SIP = 1, HASH_WEAK = 2 };

/* An insert that lands this many slots past its home slot means the keys collide on
 * purpose: with random hashes at 3/4 load, a run this long has a probability around 1e-17
 * per insert. */
#define FLOOD_PROBE 1024

typedef struct {
  braid_hash_fast_key_t fkey; /* HASH_FAST */
  braid_hash_key_t key;       /* HASH_SIP (and the in-flight table) */
  int mode;
} hasher_t;

typedef struct core_s {
  rec_t *recs;
  uint8_t *tags;
  void *raw;       /* the allocation recs and tags live in */
  size_t mask;     /* capacity - 1 */
  size_t used;     /* live slots */
  uint32_t head, tail; /* oldest and newest entry */
  uint32_t hand;       /* SIEVE: next candidate (NIL: start from the oldest) */
  hasher_t hs;
  braid_loop_t *loop; /* clock; NULL: uv_hrtime */
  braid_cache_policy_t policy;
  uint64_t max_entries, max_bytes, max_value_bytes, default_ttl_ms;
  uint64_t negative_max, negatives;
  size_t sweep_cursor;
  braid_cache_stats_t st;
} core_t;

#define REC_MIN 16

/* The bytes a store of cap slots allocates: the records, the tags, and, from 4 MiB up, the
 * slack that lets the records start on a 2 MiB boundary, marked for transparent huge pages
 * (a random probe into a large table then costs no TLB miss: a large share of a hit at 1M
 * entries, more so under a hypervisor). */
static size_t store_cost(size_t cap) {
  size_t b = cap * (sizeof(rec_t) + 1);
  return b >= 2 * HUGE_PAGE ? b + HUGE_PAGE : b;
}

static int store_alloc(core_t *c, size_t cap) {
  size_t cost = store_cost(cap);
  void *raw = braid__malloc(cost);
  if (!raw)
    return BRAID_ENOMEM;
  char *base = raw;
  if (cost != cap * (sizeof(rec_t) + 1)) {
    uintptr_t p = ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    base += p - (uintptr_t)raw;
#if defined(MADV_HUGEPAGE)
    (void)madvise(base, cap * (sizeof(rec_t) + 1), MADV_HUGEPAGE); /* advice only */
#endif
  }
  c->raw = raw;
  c->recs = (rec_t *)base;
  c->tags = (uint8_t *)(base + cap * sizeof(rec_t));
  memset(c->tags, TAG_EMPTY, cap);
  c->mask = cap - 1;
  c->used = 0;
  return 0;
}

static inline uint64_t core_now(const core_t *c) {
  return c->loop ? braid__now(c->loop) : uv_hrtime() / 1000000;
}

static uint64_t hash_slow(const hasher_t *hs, const void *key, size_t klen) {
  if (hs->mode == HASH_WEAK)
    return UINT64_C(0x5bd1e995) * (klen + 1); /* every key of one length collides */
  return braid__siphash(hs->key.k0, hs->key.k1, klen ? key : "", klen, 1, 3);
}

static inline uint64_t hasher_hash(const hasher_t *hs, const void *key, size_t klen) {
  if (hs->mode == HASH_FAST)
    return braid__fasthash(hs->fkey.k, klen ? key : "", klen);
  return hash_slow(hs, key, klen);
}

static inline uint64_t hash_key(const core_t *c, const void *key, size_t klen) {
  return hasher_hash(&c->hs, key, klen);
}

static inline const unsigned char *rec_key(const rec_t *r) {
  return r->external ? r->u.ext : r->u.data;
}

/* Bytes an entry costs beyond its slot: the external key+value block, the blob. */
static inline size_t ext_cost(size_t klen, size_t inline_vlen, const braid_blob_t *blob) {
  size_t c = blob ? braid_blob_len(blob) + BRAID_CACHE_BLOB_OVERHEAD : 0;
  if (klen + inline_vlen > REC_INLINE)
    c += klen + inline_vlen + BRAID_CACHE_EXTERNAL_OVERHEAD;
  return c;
}

static inline bool rec_expired(const rec_t *r, uint64_t now) {
  return r->expire_ms != 0 && now >= r->expire_ms;
}

/* Finds the slot of the entry with this key, or SIZE_MAX. */
static inline size_t core_find(const core_t *c, uint64_t h, const void *key, size_t klen) {
  size_t mask = c->mask;
  size_t i = h & mask;
#if defined(__GNUC__)
  /* The home record's two lines, fetched while the tags are read. */
  __builtin_prefetch(&c->recs[i]);
  __builtin_prefetch((const char *)&c->recs[i] + 64);
#endif
  uint8_t want = tag_of(h);
  for (;; i = (i + 1) & mask) {
    uint8_t t = c->tags[i];
    if (t == TAG_EMPTY)
      return SIZE_MAX;
    if (t != want)
      continue;
    const rec_t *r = &c->recs[i];
    if (r->hash == h && r->klen == klen && key_equal(rec_key(r), key, klen))
      return i;
  }
}

static void list_unlink(core_t *c, uint32_t i) {
  rec_t *r = &c->recs[i];
  if (c->hand == i)
    c->hand = r->next; /* NIL when it was the newest */
  if (r->prev != NIL)
    c->recs[r->prev].next = r->next;
  else
    c->head = r->next;
  if (r->next != NIL)
    c->recs[r->next].prev = r->prev;
  else
    c->tail = r->prev;
}

static void list_push_back(core_t *c, uint32_t i) {
  rec_t *r = &c->recs[i];
  r->prev = c->tail;
  r->next = NIL;
  if (c->tail != NIL)
    c->recs[c->tail].next = i;
  else
    c->head = i;
  c->tail = i;
}

static void rec_release(rec_t *r) {
  braid_blob_unref(r->blob);
  if (r->external)
    braid__free(r->u.ext);
}

/* Moves the record in slot from to the empty slot to, re-pointing its list neighbours. */
static void store_move(core_t *c, size_t from, size_t to) {
  c->recs[to] = c->recs[from];
  c->tags[to] = c->tags[from];
  rec_t *r = &c->recs[to];
  if (r->prev != NIL)
    c->recs[r->prev].next = (uint32_t)to;
  else
    c->head = (uint32_t)to;
  if (r->next != NIL)
    c->recs[r->next].prev = (uint32_t)to;
  else
    c->tail = (uint32_t)to;
  if (c->hand == from)
    c->hand = (uint32_t)to;
}

/* Removes the entry in slot i from list and accounting and frees what it owns. Deletion
 * shifts later members of the probe run back (no tombstones: with evictions running all the
 * time, tombstones would force a full rehash every few hundred thousand inserts). Records
 * move, so slot indices and record pointers taken before a removal are stale after it. */
static void core_remove(core_t *c, size_t i) {
  rec_t *r = &c->recs[i];
  list_unlink(c, (uint32_t)i);
  c->st.bytes -= ext_cost(r->klen, r->vlen, r->blob);
  c->st.entries--;
  if (r->err)
    c->negatives--;
  rec_release(r);
  size_t j = i;
  for (;;) {
    j = (j + 1) & c->mask;
    if (c->tags[j] == TAG_EMPTY)
      break;
    size_t home = c->recs[j].hash & c->mask;
    /* Slot j may move to i only if its home is not cyclically inside (i, j]. */
    bool inside = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!inside) {
      store_move(c, j, i);
      i = j;
    }
  }
  c->tags[i] = TAG_EMPTY;
  c->used--;
}

/* Moves every entry into a store of new_cap slots, without deleted slots. The old store is
 * read in slot order (sequentially: reading it in list order would be a cache miss per
 * entry), with a map from old to new slot to rewrite the list links afterwards. */
static int store_rehash(core_t *c, size_t new_cap, bool recompute) {
  core_t n = *c;
  size_t old_cap = c->mask + 1;
  uint32_t *map = braid__malloc(old_cap * sizeof(uint32_t));
  if (!map)
    return BRAID_ENOMEM;
  int rc = store_alloc(&n, new_cap);
  if (rc) {
    braid__free(map);
    return rc;
  }
  for (size_t i = 0; i < old_cap; i++) {
    if (c->tags[i] == TAG_EMPTY)
      continue;
    const rec_t *r = &c->recs[i];
    uint64_t h = recompute ? hash_key(&n, rec_key(r), r->klen) : r->hash;
    size_t j = h & n.mask;
    while (n.tags[j] != TAG_EMPTY)
      j = (j + 1) & n.mask;
    n.tags[j] = tag_of(h);
    n.recs[j] = *r;
    n.recs[j].hash = h;
    n.used++;
    map[i] = (uint32_t)j;
  }
  for (size_t j = 0; j < new_cap; j++) {
    if (n.tags[j] == TAG_EMPTY)
      continue;
    rec_t *r = &n.recs[j];
    if (r->prev != NIL)
      r->prev = map[r->prev];
    if (r->next != NIL)
      r->next = map[r->next];
  }
  n.head = c->head == NIL ? NIL : map[c->head];
  n.tail = c->tail == NIL ? NIL : map[c->tail];
  n.hand = c->hand == NIL ? NIL : map[c->hand];
  braid__free(map);
  braid__free(c->raw);
  n.sweep_cursor = 0;
  *c = n;
  return 0;
}

/* Picks the policy's victim. SIEVE: the hand walks from the oldest entry towards the newest,
 * clearing visited bits, and stops at the first unvisited (or expired) entry; removing it
 * leaves the hand on the next newer entry. */
static uint32_t core_victim(core_t *c) {
  if (c->head == NIL)
    return NIL;
  if (c->policy == BRAID_CACHE_LRU)
    return c->head;
  uint64_t now = core_now(c);
  uint32_t i = c->hand != NIL ? c->hand : c->head;
  for (;;) {
    rec_t *r = &c->recs[i];
    if (!r->visited || rec_expired(r, now)) {
      c->hand = i;
      return i;
    }
    r->visited = 0;
    i = r->next != NIL ? r->next : c->head;
  }
}

static bool core_evict_one(core_t *c) {
  uint32_t v = core_victim(c);
  if (v == NIL)
    return false;
  if (rec_expired(&c->recs[v], core_now(c)))
    c->st.expirations++;
  else
    c->st.evictions++;
  core_remove(c, v);
  return true;
}

static int hasher_init(hasher_t *hs, const braid_cache_opts_t *o) {
  hs->mode = o->hash == BRAID_CACHE_HASH_SIPHASH ? HASH_SIP : HASH_FAST;
  int rc = braid_hash_key_random(&hs->key);
  return rc ? rc : braid_hash_fast_key_random(&hs->fkey);
}

static int core_init(core_t *c, const braid_cache_opts_t *o, uint64_t max_entries,
                     uint64_t max_bytes, const hasher_t *hs) {
  memset(c, 0, sizeof(*c));
  /* Small caches get their whole table at once (growing costs a copy and fresh pages each
   * time); large ones start small and double, so an empty 1M-entry cache stays cheap. */
  size_t cap = REC_MIN;
  while (cap < (size_t)1 << 31 && cap / 4 * 3 < max_entries &&
         store_cost(cap * 2) <= ((size_t)1 << 20) && store_cost(cap * 2) <= max_bytes / 2)
    cap *= 2;
  int rc = store_alloc(c, cap);
  if (rc)
    return rc;
  c->head = c->tail = c->hand = NIL;
  c->hs = *hs;
  c->policy = o->policy;
  c->max_entries = max_entries;
  c->max_bytes = max_bytes;
  c->max_value_bytes = o->max_value_bytes ? o->max_value_bytes : o->max_bytes / 8;
  c->default_ttl_ms = o->default_ttl_ms;
  uint64_t neg = o->max_entries * o->negative_max_percent / 100;
  c->negative_max = neg ? neg : 1;
  c->st.bytes = store_cost(cap);
  return 0;
}

static void core_clear(core_t *c) {
  while (c->head != NIL)
    core_remove(c, c->head);
}

static void core_destroy(core_t *c) {
  core_clear(c);
  braid__free(c->raw);
  c->raw = NULL;
  c->recs = NULL;
  c->tags = NULL;
}

static int ttl_to_expire(const core_t *c, uint64_t ttl_ms, uint64_t *expire) {
  if (ttl_ms == BRAID_CACHE_TTL_NONE) {
    *expire = 0;
    return 0;
  }
  if (ttl_ms > BRAID_CACHE_TTL_MAX)
    return BRAID_EINVAL;
  if (ttl_ms == 0)
    ttl_ms = c->default_ttl_ms;
  *expire = ttl_ms ? core_now(c) + ttl_ms : 0;
  return 0;
}

/* Looks key up; returns the live entry (touched for the policy) or NULL. An expired entry
 * is removed unless keep_stale_ms says it may still serve as stale (then *stale is set).
 * The pointer is valid until the next insert. */
static inline rec_t *core_lookup(core_t *c, uint64_t h, const void *key, size_t klen,
                                 uint64_t keep_stale_ms, rec_t **stale) {
  size_t i = core_find(c, h, key, klen);
  if (i == SIZE_MAX)
    return NULL;
  rec_t *r = &c->recs[i];
  if (r->expire_ms) {
    uint64_t now = core_now(c);
    if (now >= r->expire_ms) {
      if (keep_stale_ms && !r->err && now < r->expire_ms + keep_stale_ms) {
        *stale = r;
      } else {
        c->st.expirations++;
        core_remove(c, i);
      }
      return NULL;
    }
  }
  if (c->policy == BRAID_CACHE_SIEVE) {
    if (!r->visited)
      r->visited = 1;
  } else if (r->next != NIL) {
    list_unlink(c, (uint32_t)i);
    list_push_back(c, (uint32_t)i);
  }
  return r;
}

static size_t core_free_slot(const core_t *c, uint64_t h) {
  size_t i = h & c->mask;
  while (c->tags[i] != TAG_EMPTY)
    i = (i + 1) & c->mask;
  return i;
}

/* Called when an insert's probe run is too long to be chance: from now on the core hashes
 * with SipHash-1-3 (a PRF: runs stay short whatever the keys), and every entry is rehashed
 * in place of the old table. Returns 0, or BRAID_ENOMEM (then nothing changed), or
 * UV_EALREADY when the core already uses SipHash (a long run then is chance). */
static int core_strengthen(core_t *c) {
  if (c->hs.mode == HASH_SIP)
    return UV_EALREADY;
  int old = c->hs.mode;
  c->hs.mode = HASH_SIP;
  if (store_rehash(c, c->mask + 1, true)) {
    c->hs.mode = old;
    return BRAID_ENOMEM;
  }
  c->st.hash_fallbacks++;
  if (c->loop)
    braid__log(c->loop, BRAID_LOG_WARN,
               "cache: a probe run reached %d slots; keys now hashed with SipHash-1-3",
               FLOOD_PROBE);
  return 0;
}

/* Stores a new entry (value copied inline, or blob referenced, or err for a negative entry).
 * Replaces any entry for the key. */
static int core_set(core_t *c, uint64_t h, const void *key, size_t klen, const void *val,
                    size_t vlen, braid_blob_t *blob, int err, uint64_t expire) {
  size_t old = core_find(c, h, key, klen);
  if (old != SIZE_MAX)
    core_remove(c, old);
  size_t value_bytes = blob ? braid_blob_len(blob) : vlen;
  if (value_bytes > c->max_value_bytes) {
    c->st.rejected++;
    return BRAID_ETOOBIG;
  }
  size_t inline_len = blob ? 0 : vlen;
  size_t cost = ext_cost(klen, inline_len, blob);
  if (cost + store_cost(REC_MIN) > c->max_bytes) {
    c->st.rejected++;
    return BRAID_ETOOBIG;
  }
  if (err && c->negatives >= c->negative_max)
    return BRAID_ETOOBIG;
  /* Make room: both bounds, counting the store's growth if this insert needs it (grow when
   * more than 3/4 of the slots would be live). Evicting may make the growth unnecessary, so
   * re-check each round. */
  size_t new_cap;
  for (;;) {
    size_t cap = c->mask + 1;
    new_cap = cap;
    if ((c->st.entries + 1) * 4 > cap * 3)
      new_cap = cap * 2;
    uint64_t need = cost + store_cost(new_cap) - store_cost(cap);
    if (c->st.entries + 1 <= c->max_entries && c->st.bytes + need <= c->max_bytes)
      break;
    if (!core_evict_one(c)) {
      c->st.rejected++;
      return BRAID_ETOOBIG; /* the store alone leaves no room (tiny max_bytes) */
    }
  }
  size_t cap = c->mask + 1;
  if (new_cap != cap) {
    if (store_rehash(c, new_cap, false))
      return BRAID_ENOMEM;
    c->st.bytes += store_cost(new_cap) - store_cost(cap);
  }
  unsigned char *ext = NULL;
  if (klen + inline_len > REC_INLINE) {
    ext = braid__malloc(klen + inline_len);
    if (!ext)
      return BRAID_ENOMEM;
  }
  size_t i = core_free_slot(c, h);
  if (((i - h) & c->mask) >= FLOOD_PROBE && core_strengthen(c) == 0) {
    h = hash_key(c, key, klen);
    i = core_free_slot(c, h);
  }
  c->used++;
  c->tags[i] = tag_of(h);
  rec_t *r = &c->recs[i];
  r->hash = h;
  r->expire_ms = expire;
  r->klen = (uint32_t)klen;
  r->vlen = (uint32_t)inline_len;
  r->visited = 0;
  r->external = ext != NULL;
  r->err = err;
  r->blob = blob ? braid_blob_ref(blob) : NULL;
  unsigned char *d = ext ? ext : r->u.data;
  if (ext)
    r->u.ext = ext;
  if (klen)
    memcpy(d, key, klen);
  if (inline_len)
    memcpy(d + klen, val, inline_len);
  list_push_back(c, (uint32_t)i);
  c->st.bytes += cost;
  c->st.entries++;
  c->st.inserts++;
  if (err)
    c->negatives++;
  return 0;
}

static inline const void *rec_value(const rec_t *r, size_t *len) {
  if (r->blob) {
    *len = braid_blob_len(r->blob);
    return braid_blob_data(r->blob);
  }
  *len = r->vlen;
  return rec_key(r) + r->klen;
}

static inline int core_get(core_t *c, uint64_t h, const void *key, size_t klen, void *buf,
                           size_t cap, size_t *len) {
  rec_t *stale = NULL;
  rec_t *r = core_lookup(c, h, key, klen, 0, &stale);
  if (!r || r->err) {
    c->st.misses++;
    return BRAID_ENOTFOUND;
  }
  c->st.hits++;
  size_t n;
  const void *v = rec_value(r, &n);
  if (len)
    *len = n;
  if (n > cap)
    return BRAID_ETOOBIG;
  if (n)
    memcpy(buf, v, n);
  return 0;
}

static int rec_to_blob(const rec_t *r, braid_blob_t **out) {
  if (r->blob) {
    *out = braid_blob_ref(r->blob);
    return 0;
  }
  return braid_blob_copy(out, rec_key(r) + r->klen, r->vlen);
}

static inline int core_get_blob(core_t *c, uint64_t h, const void *key, size_t klen,
                                braid_blob_t **out) {
  rec_t *stale = NULL;
  rec_t *r = core_lookup(c, h, key, klen, 0, &stale);
  if (!r || r->err) {
    c->st.misses++;
    return BRAID_ENOTFOUND;
  }
  c->st.hits++;
  return rec_to_blob(r, out);
}

static int core_delete(core_t *c, uint64_t h, const void *key, size_t klen) {
  size_t i = core_find(c, h, key, klen);
  if (i == SIZE_MAX)
    return BRAID_ENOTFOUND;
  core_remove(c, i);
  return 0;
}

static bool key_ok(const void *key, size_t klen) {
  return (key || klen == 0) && klen <= (UINT32_C(1) << 31);
}

static int core_put(core_t *c, uint64_t h, const void *key, size_t klen, const void *val,
                    size_t vlen, braid_blob_t *blob, uint64_t ttl_ms) {
  if (!key_ok(key, klen) || (!blob && !val && vlen) || vlen > UINT32_MAX)
    return BRAID_EINVAL;
  uint64_t expire;
  if (ttl_to_expire(c, ttl_ms, &expire))
    return BRAID_EINVAL;
  return core_set(c, h, key, klen, val, vlen, blob, 0, expire);
}

static void stats_finish(braid_cache_stats_t *s) {
  uint64_t lookups = s->hits + s->misses;
  s->hit_ratio = lookups ? (double)s->hits / (double)lookups : 0.0;
}

/* ---- options -------------------------------------------------------------------------- */

#define DAY_MS UINT64_C(86400000)

void braid_cache_opts_init(braid_cache_opts_t *o) {
  if (!o)
    return;
  memset(o, 0, sizeof(*o));
  o->max_entries = 65536;
  o->max_bytes = UINT64_C(64) << 20;
  o->max_value_bytes = 0;
  o->policy = BRAID_CACHE_LRU;
  o->default_ttl_ms = 0;
  o->sweep_interval_ms = 1000;
  o->sweep_max_entries = 256;
  o->max_waiters = 4096;
  o->max_loads = 4096;
  o->load_timeout_ms = 0;
  o->negative_ttl_ms = 0;
  o->negative_max_percent = 10;
  o->stale_ms = 0;
  o->stripes = 16;
  o->hash = BRAID_CACHE_HASH_FAST;
}

int braid_cache_opts_validate(const braid_cache_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->max_entries < 1 || o->max_entries > (UINT64_C(1) << 30))
    return braid__opts_fail(err, "max_entries", "%" PRIu64 " is outside 1..2^30", o->max_entries);
  if (o->max_bytes < 4096 || o->max_bytes > (UINT64_C(1) << 46))
    return braid__opts_fail(err, "max_bytes", "%" PRIu64 " is outside 4096..2^46", o->max_bytes);
  if (o->max_value_bytes > o->max_bytes)
    return braid__opts_fail(err, "max_value_bytes", "%" PRIu64 " exceeds max_bytes (%" PRIu64 ")",
                            o->max_value_bytes, o->max_bytes);
  if (o->policy != BRAID_CACHE_LRU && o->policy != BRAID_CACHE_SIEVE)
    return braid__opts_fail(err, "policy", "%d is not a BRAID_CACHE_* policy", (int)o->policy);
  if (o->default_ttl_ms > BRAID_CACHE_TTL_MAX)
    return braid__opts_fail(err, "default_ttl_ms", "%" PRIu64 " exceeds BRAID_CACHE_TTL_MAX",
                            o->default_ttl_ms);
  if (o->sweep_interval_ms > DAY_MS)
    return braid__opts_fail(err, "sweep_interval_ms", "%" PRIu64 " exceeds one day (86400000)",
                            o->sweep_interval_ms);
  if (o->sweep_max_entries < 1 || o->sweep_max_entries > (UINT32_C(1) << 20))
    return braid__opts_fail(err, "sweep_max_entries", "%" PRIu32 " is outside 1..2^20",
                            o->sweep_max_entries);
  if (o->max_waiters < 1 || o->max_waiters > (UINT32_C(1) << 20))
    return braid__opts_fail(err, "max_waiters", "%" PRIu32 " is outside 1..2^20", o->max_waiters);
  if (o->max_loads < 1 || o->max_loads > (UINT32_C(1) << 20))
    return braid__opts_fail(err, "max_loads", "%" PRIu32 " is outside 1..2^20", o->max_loads);
  if (o->load_timeout_ms > DAY_MS)
    return braid__opts_fail(err, "load_timeout_ms", "%" PRIu64 " exceeds one day (86400000)",
                            o->load_timeout_ms);
  if (o->negative_ttl_ms > DAY_MS)
    return braid__opts_fail(err, "negative_ttl_ms", "%" PRIu64 " exceeds one day (86400000)",
                            o->negative_ttl_ms);
  if (o->stale_ms > DAY_MS)
    return braid__opts_fail(err, "stale_ms", "%" PRIu64 " exceeds one day (86400000)", o->stale_ms);
  if (o->negative_max_percent < 1 || o->negative_max_percent > 100)
    return braid__opts_fail(err, "negative_max_percent", "%" PRIu32 " is outside 1..100",
                            o->negative_max_percent);
  if (o->stripes < 1 || o->stripes > 1024 || (o->stripes & (o->stripes - 1)) != 0)
    return braid__opts_fail(err, "stripes", "%" PRIu32 " is not a power of two in 1..1024",
                            o->stripes);
  if (o->hash != BRAID_CACHE_HASH_FAST && o->hash != BRAID_CACHE_HASH_SIPHASH)
    return braid__opts_fail(err, "hash", "%d is not a BRAID_CACHE_HASH_* value", (int)o->hash);
  return 0;
}

/* ---- the per-loop cache ----------------------------------------------------------------- */

typedef struct {
  braid_cache_memo_cb cb;
  void *arg;
} waiter_t;

/* Where a load that completes inside the braid_cache_memo() call that started it leaves its
 * result, so the call returns it instead of calling back (API.md rule 4). */
typedef struct {
  bool done;
  int status;
  braid_blob_t *value; /* a reference for the caller when status is 0 */
} inline_result_t;

struct braid_cache_load_s {
  braid_cache_t *cache;  /* NULL once orphaned (timed out, or the cache closed) */
  /* In cache->deadlines while a timeout applies; after it timed out with its loader still
   * running, in orphan_of->orphans (so max_loads still counts it) until the loader ends. */
  braid__node_t deadline;
  braid_cache_t *orphan_of;
  uint64_t hash; /* flight_hash() of the key */
  uint64_t deadline_ms;
  uint64_t ttl_ms;
  waiter_t *waiters;
  uint32_t nwaiters, cap;
  bool pending; /* the loader has not completed yet */
  bool in_table;
  bool delivering; /* flight_abandon is telling the waiters: it frees the load after */
  inline_result_t *inline_res; /* set while the memo call that started it runs the loader */
  braid_cache_load_mode_t mode;
  braid_cache_compute_fn compute;
  void *compute_arg;
  braid_work_t *work;
  int work_status;
  braid_blob_t *work_value;
  uint32_t klen;
  unsigned char key[];
};

struct braid_cache_s {
  core_t core; /* first: the hit path reads it */
  braid_loop_t *loop;
  braid_cache_opts_t opts;
  table_t flights;
  braid__node_t deadlines; /* loads with a timeout, oldest (earliest deadline) first */
  braid__node_t orphans;   /* timed-out loads whose loader has not finished */
  uint32_t orphan_count;
  uv_timer_t sweep_timer;
  uv_timer_t deadline_timer;
  int open_handles;
  bool closing;
  braid_cache_close_cb close_cb;
  void *close_arg;
  void *data; /* the user's (braid_cache_set_data) */
};

/* A timed-out load whose loader has now finished stops counting against max_loads. */
static void orphan_release(braid_cache_load_t *l) {
  if (l->orphan_of) {
    braid__list_remove(&l->deadline);
    l->orphan_of->orphan_count--;
    l->orphan_of = NULL;
  }
}

static void load_free(braid_cache_load_t *l) {
  braid__free(l->waiters);
  braid__free(l);
}

/* The in-flight table hashes with SipHash-1-3 whatever the store does: it is touched on
 * misses only, and its hashes must not change under a load when the store falls back. */
static uint64_t flight_hash(const braid_cache_t *c, const void *key, size_t klen) {
  return braid__siphash(c->core.hs.key.k0, c->core.hs.key.k1, klen ? key : "", klen, 1, 3);
}

static braid_cache_load_t *flight_find(braid_cache_t *c, uint64_t h, const void *key,
                                       size_t klen) {
  const table_t *t = &c->flights;
  for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
    braid_cache_load_t *l = t->slots[i].p;
    if (!l)
      return NULL;
    if (t->slots[i].hash == h && l->klen == klen && (klen == 0 || memcmp(l->key, key, klen) == 0))
      return l;
  }
}

/* Takes the load out of the flight table and the deadline list, so new requests for the key
 * start a fresh load. */
static void flight_detach(braid_cache_t *c, braid_cache_load_t *l) {
  if (l->in_table) {
    table_remove_at(&c->flights, table_slot_of(&c->flights, l->hash, l));
    l->in_table = false;
  }
  if (braid__node_linked(&l->deadline))
    braid__list_remove(&l->deadline);
}

/* Calls every waiter once with (status, value). The waiters array is taken off the load
 * first, so a callback that closes the cache cannot make us deliver twice. */
static void flight_deliver(braid_cache_t *c, braid_cache_load_t *l, int status,
                           braid_blob_t *value) {
  waiter_t *w = l->waiters;
  uint32_t n = l->nwaiters;
  l->waiters = NULL;
  l->nwaiters = l->cap = 0;
  for (uint32_t i = 0; i < n; i++)
    w[i].cb(c, status, status ? NULL : value, w[i].arg);
  braid__free(w);
}

static int waiter_add(braid_cache_load_t *l, braid_cache_memo_cb cb, void *arg) {
  if (l->nwaiters == l->cap) {
    uint32_t ncap = l->cap ? l->cap * 2 : 4;
    waiter_t *w = braid__realloc(l->waiters, ncap * sizeof(*w));
    if (!w)
      return BRAID_ENOMEM;
    l->waiters = w;
    l->cap = ncap;
  }
  l->waiters[l->nwaiters].cb = cb;
  l->waiters[l->nwaiters].arg = arg;
  l->nwaiters++;
  return 0;
}

static void deadline_fire(uv_timer_t *t);

/* Points the deadline timer at the earliest deadline (loads share one timeout, so the list is
 * in deadline order). A pending deadline keeps the loop alive, as the load itself would. */
static void deadline_arm(braid_cache_t *c) {
  if (c->closing)
    return;
  if (braid__list_empty(&c->deadlines)) {
    uv_timer_stop(&c->deadline_timer);
    return;
  }
  braid_cache_load_t *l = BRAID__CONTAINER_OF(c->deadlines.next, braid_cache_load_t, deadline);
  uint64_t now = braid__now(c->loop);
  uint64_t delay = l->deadline_ms > now ? l->deadline_ms - now : 0;
  uv_timer_start(&c->deadline_timer, deadline_fire, delay, 0);
}

/* Completes a load: caches its result (value, or error when negative caching allows) and
 * tells every waiter. Owns one reference to value. */
static void load_complete(braid_cache_load_t *l, int status, braid_blob_t *value) {
  braid_cache_t *c = l->cache;
  l->pending = false;
  if (l->inline_res) {
    inline_result_t *res = l->inline_res;
    l->inline_res = NULL;
    res->done = true;
    if (!c)
      res->status = BRAID_ECANCELED;
    else if (status == 0 && !value)
      res->status = BRAID_EINVAL;
    else
      res->status = status;
    if (res->status == 0)
      res->value = braid_blob_ref(value);
  }
  if (!c) { /* orphaned: timed out or the cache closed; the waiters have been told */
    braid_blob_unref(value);
    if (l->delivering)
      return; /* completed from a waiter's callback: flight_abandon frees it after */
    orphan_release(l);
    load_free(l);
    return;
  }
  flight_detach(c, l);
  deadline_arm(c);
  if (status == 0 && !value)
    status = BRAID_EINVAL;
  if (status) {
    braid_blob_unref(value);
    value = NULL;
  }
  core_t *core = &c->core;
  uint64_t h = hash_key(core, l->key, l->klen);
  if (status == 0) {
    uint64_t expire;
    if (ttl_to_expire(core, l->ttl_ms, &expire) == 0)
      (void)core_set(core, h, l->key, l->klen, NULL, 0, value, 0, expire);
  } else {
    core->st.load_errors++;
    if (c->opts.negative_ttl_ms) {
      /* A revalidation's failure keeps the stale value rather than replacing it. */
      size_t i = core_find(core, h, l->key, l->klen);
      if (i == SIZE_MAX)
        (void)core_set(core, h, l->key, l->klen, NULL, 0, NULL, status,
                       core_now(core) + c->opts.negative_ttl_ms);
    }
  }
  flight_deliver(c, l, status, value);
  braid_blob_unref(value);
  load_free(l);
}

static void work_run(void *arg) {
  braid_cache_load_t *l = arg;
  braid_blob_t *v = NULL;
  l->work_status = l->compute(l->key, l->klen, &v, l->compute_arg);
  l->work_value = v;
}

static void work_done(braid_loop_t *loop, int status, void *arg) {
  (void)loop;
  braid_cache_load_t *l = arg;
  l->work = NULL;
  if (status != 0) { /* cancelled before it ran */
    load_complete(l, status, NULL);
    return;
  }
  braid_blob_t *v = l->work_value;
  l->work_value = NULL;
  if (l->work_status) {
    braid_blob_unref(v);
    v = NULL;
  }
  load_complete(l, l->work_status, v);
}

int braid_cache_load_done(braid_cache_load_t *load, int status, braid_blob_t *value) {
  if (!load)
    return BRAID_EINVAL;
  int rc = (status == 0 && !value) ? BRAID_EINVAL : 0;
  load_complete(load, status, value);
  return rc;
}

/* Fails every waiter of a load with status and orphans the load (freed when its loader
 * completes). */
static void flight_abandon(braid_cache_t *c, braid_cache_load_t *l, int status) {
  flight_detach(c, l);
  l->cache = NULL;
  if (l->work)
    (void)braid_work_cancel(l->work);
  if (l->pending && !c->closing) { /* its loader still holds it: it still counts */
    l->orphan_of = c;
    braid__list_push_back(&c->orphans, &l->deadline);
    c->orphan_count++;
  }
  /* A waiter's callback may complete the load (braid_cache_load_done) or close the cache:
   * the load stays ours until the waiters are told. */
  l->delivering = true;
  flight_deliver(c, l, status, NULL);
  l->delivering = false;
  if (!l->pending) {
    orphan_release(l);
    load_free(l);
  }
}

static void deadline_fire(uv_timer_t *t) {
  braid_cache_t *c = t->data;
  uint64_t now = braid__now(c->loop);
  while (!c->closing && !braid__list_empty(&c->deadlines)) {
    braid_cache_load_t *l =
        BRAID__CONTAINER_OF(c->deadlines.next, braid_cache_load_t, deadline);
    if (l->deadline_ms > now)
      break;
    c->core.st.load_errors++;
    c->core.st.load_timeouts++;
    flight_abandon(c, l, BRAID_ETIMEDOUT);
  }
  if (!c->closing)
    deadline_arm(c);
}

static void sweep_fire(uv_timer_t *t) {
  braid_cache_t *c = t->data;
  core_t *core = &c->core;
  uint64_t now = braid__now(c->loop);
  size_t n = c->opts.sweep_max_entries;
  size_t cap = core->mask + 1;
  if (n > cap)
    n = cap;
  size_t i = core->sweep_cursor & core->mask;
  /* A removal shifts a later entry into slot i, so re-examine i before moving on. */
  while (n--) {
    rec_t *r = &core->recs[i];
    if (core->tags[i] != TAG_EMPTY && r->expire_ms &&
        now >= r->expire_ms + (r->err ? 0 : c->opts.stale_ms)) {
      core->st.expirations++;
      core_remove(core, i);
      continue;
    }
    i = (i + 1) & core->mask;
  }
  core->sweep_cursor = i;
}

int braid_cache_new(braid_cache_t **out, braid_loop_t *loop, const braid_cache_opts_t *opts) {
  braid_cache_opts_t def;
  if (!loop || !out)
    return BRAID_EINVAL;
  if (!opts) {
    braid_cache_opts_init(&def);
    opts = &def;
  }
  braid_opts_error_t err;
  int rc = braid_cache_opts_validate(opts, &err);
  if (rc) {
    braid__opts_log(loop, "braid_cache_new", &err);
    return rc;
  }
  if (loop->closing)
    return BRAID_ECLOSED;
  hasher_t hs;
  rc = hasher_init(&hs, opts);
  if (rc)
    return rc;
  braid_cache_t *c = braid__calloc(1, sizeof(*c));
  if (!c)
    return BRAID_ENOMEM;
  c->opts = *opts;
  c->loop = loop;
  rc = core_init(&c->core, opts, opts->max_entries, opts->max_bytes, &hs);
  if (rc == 0) {
    c->core.loop = loop;
    rc = table_init(&c->flights, TAB_MIN);
  }
  if (rc) {
    braid__free(c->core.raw);
    braid__free(c);
    return rc;
  }
  braid__list_init(&c->deadlines);
  braid__list_init(&c->orphans);
  uv_timer_init(loop->uv, &c->sweep_timer);
  uv_timer_init(loop->uv, &c->deadline_timer);
  c->sweep_timer.data = c;
  c->deadline_timer.data = c;
  c->open_handles = 2;
  if (opts->sweep_interval_ms) {
    uv_timer_start(&c->sweep_timer, sweep_fire, opts->sweep_interval_ms,
                   opts->sweep_interval_ms);
    /* Expiry is housekeeping: it must not keep the loop running on its own. */
    uv_unref((uv_handle_t *)&c->sweep_timer);
  }
  braid__loop_ref(loop);
  *out = c;
  return 0;
}

static void cache_handle_closed(uv_handle_t *h) {
  braid_cache_t *c = h->data;
  if (--c->open_handles > 0)
    return;
  braid_loop_t *loop = c->loop;
  braid_cache_close_cb cb = c->close_cb;
  void *arg = c->close_arg;
  /* Unref first, so the callback may close the loop. */
  braid__loop_unref(loop);
  if (cb)
    cb(c, 0, arg);
  braid__free(c);
}

void braid_cache_set_data(braid_cache_t *c, void *data) {
  c->data = data;
}

void *braid_cache_get_data(const braid_cache_t *c) {
  return c->data;
}

int braid_cache_close(braid_cache_t *c, braid_cache_close_cb cb, void *arg) {
  if (!c)
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  c->closing = true;
  c->close_cb = cb;
  c->close_arg = arg;
  uv_timer_stop(&c->sweep_timer);
  uv_timer_stop(&c->deadline_timer);
  /* Collect the loads first: waiters' callbacks run while we walk. */
  while (c->flights.count) {
    for (size_t i = 0; i <= c->flights.mask; i++) {
      braid_cache_load_t *l = c->flights.slots[i].p;
      if (l) {
        flight_abandon(c, l, BRAID_ECANCELED);
        break;
      }
    }
  }
  /* Timed-out loads still running outlive the cache: they no longer report to it. */
  while (!braid__list_empty(&c->orphans)) {
    braid_cache_load_t *l = BRAID__CONTAINER_OF(c->orphans.next, braid_cache_load_t, deadline);
    braid__list_remove(&l->deadline);
    l->orphan_of = NULL;
  }
  c->orphan_count = 0;
  braid__free(c->flights.slots);
  c->flights.slots = NULL;
  core_destroy(&c->core);
  uv_close((uv_handle_t *)&c->sweep_timer, cache_handle_closed);
  uv_close((uv_handle_t *)&c->deadline_timer, cache_handle_closed);
  return 0;
}

int braid_cache_put(braid_cache_t *c, const void *key, size_t klen, const void *value,
                    size_t vlen, uint64_t ttl_ms) {
  if (!c)
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  if (!key_ok(key, klen))
    return BRAID_EINVAL;
  return core_put(&c->core, hash_key(&c->core, key, klen), key, klen, value, vlen, NULL, ttl_ms);
}

int braid_cache_put_blob(braid_cache_t *c, const void *key, size_t klen, braid_blob_t *blob,
                         uint64_t ttl_ms) {
  if (!c || !blob)
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  if (!key_ok(key, klen))
    return BRAID_EINVAL;
  return core_put(&c->core, hash_key(&c->core, key, klen), key, klen, NULL, 0, blob, ttl_ms);
}

int braid_cache_get(braid_cache_t *c, const void *key, size_t klen, void *buf, size_t cap,
                    size_t *len) {
  if (!c || !key_ok(key, klen) || (!buf && cap))
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  return core_get(&c->core, hash_key(&c->core, key, klen), key, klen, buf, cap, len);
}

int braid_cache_get_blob(braid_cache_t *c, const void *key, size_t klen, braid_blob_t **out) {
  if (!c || !out || !key_ok(key, klen))
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  return core_get_blob(&c->core, hash_key(&c->core, key, klen), key, klen, out);
}

int braid_cache_delete(braid_cache_t *c, const void *key, size_t klen) {
  if (!c || !key_ok(key, klen))
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  return core_delete(&c->core, hash_key(&c->core, key, klen), key, klen);
}

int braid_cache_clear(braid_cache_t *c) {
  if (!c)
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  core_clear(&c->core);
  return 0;
}

int braid_cache_stats(const braid_cache_t *c, braid_cache_stats_t *out) {
  if (!c || !out)
    return BRAID_EINVAL;
  *out = c->core.st;
  stats_finish(out);
  return 0;
}

/* Starts a load for key with loader, without waiters. A load that completes before this
 * returns (a synchronous loader, an asynchronous one that answered at once) leaves its result
 * in *res (may be NULL for a background revalidation). On error nothing is left behind. */
static int flight_start(braid_cache_t *c, uint64_t h, const void *key, size_t klen,
                        const braid_cache_loader_t *ld, inline_result_t *res) {
  /* h: flight_hash() of key. */
  if (c->flights.count + c->orphan_count >= c->opts.max_loads)
    return BRAID_ETOOMANYWAITERS;
  if ((c->flights.count + 1) * 4 > (c->flights.mask + 1) * 3 && table_grow(&c->flights))
    return BRAID_ENOMEM;
  braid_cache_load_t *l = braid__calloc(1, sizeof(*l) + klen);
  if (!l)
    return BRAID_ENOMEM;
  l->cache = c;
  l->hash = h;
  l->klen = (uint32_t)klen;
  if (klen)
    memcpy(l->key, key, klen);
  l->ttl_ms = ld->ttl_ms;
  l->mode = ld->mode;
  l->compute = ld->compute;
  l->compute_arg = ld->arg;
  l->pending = true;
  if (ld->mode == BRAID_CACHE_LOAD_WORK) {
    int rc = braid_work(&l->work, c->loop, work_run, work_done, l);
    if (rc) {
      load_free(l);
      return rc;
    }
  }
  table_insert(&c->flights, h, l);
  l->in_table = true;
  c->core.st.loads++;
  if (c->opts.load_timeout_ms) {
    l->deadline_ms = braid__now(c->loop) + c->opts.load_timeout_ms;
    braid__list_push_back(&c->deadlines, &l->deadline);
    if (c->deadlines.next == &l->deadline)
      deadline_arm(c);
  }
  l->inline_res = res;
  if (ld->mode == BRAID_CACHE_LOAD_SYNC) {
    braid_blob_t *v = NULL;
    int rc = ld->compute(l->key, klen, &v, ld->arg);
    if (rc) {
      braid_blob_unref(v);
      v = NULL;
    }
    load_complete(l, rc, v);
  } else if (ld->mode == BRAID_CACHE_LOAD_ASYNC) {
    ld->start(l, l->key, klen, ld->arg);
  }
  /* Not completed inside: from now on its waiters hear through their callbacks. (l may be
   * freed when res->done.) */
  if (res && !res->done)
    l->inline_res = NULL;
  return 0;
}

/* Hands an entry's value (a new reference) or cached error back to the memo call. */
static int take_entry(braid_cache_t *c, rec_t *e, braid_blob_t **value) {
  if (e->err) {
    c->core.st.negative_hits++;
    return e->err;
  }
  return rec_to_blob(e, value);
}

int braid_cache_memo(braid_cache_t *c, const void *key, size_t klen, const braid_cache_loader_t *ld,
                     braid_blob_t **value, braid_cache_memo_cb cb, void *arg) {
  if (!c || !ld || !value || !cb || !key_ok(key, klen))
    return BRAID_EINVAL;
  if (ld->mode == BRAID_CACHE_LOAD_ASYNC ? !ld->start
      : (ld->mode == BRAID_CACHE_LOAD_SYNC || ld->mode == BRAID_CACHE_LOAD_WORK)
          ? !ld->compute
          : true)
    return BRAID_EINVAL;
  if (ld->ttl_ms > BRAID_CACHE_TTL_MAX && ld->ttl_ms != BRAID_CACHE_TTL_NONE)
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECLOSED;
  *value = NULL;
  core_t *core = &c->core;
  uint64_t h = hash_key(core, key, klen);
  rec_t *stale = NULL;
  rec_t *e = core_lookup(core, h, key, klen, c->opts.stale_ms, &stale);
  if (e) {
    core->st.hits++;
    return take_entry(c, e, value);
  }
  if (stale) {
    /* Serve the stale value now; refresh it in the background, once. */
    uint64_t hf = flight_hash(c, key, klen);
    if (!flight_find(c, hf, key, klen))
      (void)flight_start(c, hf, key, klen, ld, NULL);
    if (c->closing)
      return BRAID_ECLOSED;
    stale = NULL;
    h = hash_key(core, key, klen); /* the reload may have switched the store's hash */
    size_t i = core_find(core, h, key, klen);
    if (i != SIZE_MAX) { /* a synchronous revalidation may already have replaced it */
      core->st.stale_hits++;
      core->st.hits++;
      return take_entry(c, &core->recs[i], value);
    }
  }
  core->st.misses++;
  uint64_t hf = flight_hash(c, key, klen);
  braid_cache_load_t *l = flight_find(c, hf, key, klen);
  if (!l) {
    inline_result_t res = {0};
    int rc = flight_start(c, hf, key, klen, ld, &res);
    if (rc)
      return rc;
    if (res.done) {
      *value = res.value;
      return res.status;
    }
    if (c->closing) /* closed from inside the loader's start */
      return BRAID_ECANCELED;
    l = flight_find(c, hf, key, klen);
    if (!l) /* cannot happen: a pending load stays in the table until it completes */
      return BRAID_ECANCELED;
  } else if (l->nwaiters >= c->opts.max_waiters) {
    return BRAID_ETOOMANYWAITERS;
  } else {
    core->st.coalesced++;
  }
  int rc = waiter_add(l, cb, arg);
  return rc ? rc : BRAID_PENDING;
}

/* ---- internal probes for tests --------------------------------------------------------- */

int braid__cache_test_weak_hash(braid_cache_t *c) {
  if (c->core.st.entries)
    return BRAID_EINVAL;
  c->core.hs.mode = HASH_WEAK;
  return 0;
}

int braid__cache_hash_mode(const braid_cache_t *c) {
  return c->core.hs.mode;
}

void braid__cache_probe_stats(const braid_cache_t *c, size_t *max_probe, double *mean_probe,
                              size_t *capacity) {
  const core_t *k = &c->core;
  size_t cap = k->mask + 1, maxp = 0, total = 0, n = 0;
  for (size_t i = 0; i < cap; i++) {
    if (k->tags[i] == TAG_EMPTY)
      continue;
    size_t home = k->recs[i].hash & k->mask;
    size_t d = ((i + cap - home) & k->mask) + 1;
    if (d > maxp)
      maxp = d;
    total += d;
    n++;
  }
  *max_probe = maxp;
  *mean_probe = n ? (double)total / (double)n : 0.0;
  *capacity = cap;
}

/* ---- shared variant ------------------------------------------------------------------- */

typedef struct {
  uv_mutex_t mu;
  core_t core;
  char pad[64]; /* keeps neighbouring stripes' locks off each other's cache line */
} stripe_t;

struct braid_cache_shared_s {
  hasher_t hs; /* picks the stripe; every core starts with the same keys and mode */
  uint32_t nstripes;
  stripe_t *stripes;
};

int braid_cache_shared_new(braid_cache_shared_t **out, const braid_cache_opts_t *opts) {
  braid_cache_opts_t def;
  if (!out)
    return BRAID_EINVAL;
  if (!opts) {
    braid_cache_opts_init(&def);
    opts = &def;
  }
  int rc = braid_cache_opts_validate(opts, NULL);
  if (rc)
    return rc;
  /* Each stripe is a whole cache with its own table, so each needs the byte budget a
   * per-loop cache needs at least (4096, over its smallest table's 2064 bytes): a thinner
   * split would be over its bound from the start and refuse every put. */
  uint64_t per_entries = opts->max_entries / opts->stripes;
  uint64_t per_bytes = opts->max_bytes / opts->stripes;
  if (per_entries < 1 || per_bytes < BRAID_CACHE_STRIPE_MIN_BYTES)
    return BRAID_EINVAL;
  hasher_t hs;
  rc = hasher_init(&hs, opts);
  if (rc)
    return rc;
  braid_cache_shared_t *s = braid__calloc(1, sizeof(*s));
  stripe_t *st = braid__calloc(opts->stripes, sizeof(stripe_t));
  if (!s || !st) {
    braid__free(s);
    braid__free(st);
    return BRAID_ENOMEM;
  }
  s->hs = hs;
  s->stripes = st;
  for (uint32_t i = 0; i < opts->stripes; i++) {
    rc = core_init(&st[i].core, opts, per_entries, per_bytes, &hs);
    if (rc == 0) {
      rc = uv_mutex_init(&st[i].mu);
      if (rc)
        braid__free(st[i].core.raw);
    }
    if (rc) {
      s->nstripes = i;
      braid_cache_shared_free(s);
      return rc;
    }
    st[i].core.max_value_bytes =
        opts->max_value_bytes ? opts->max_value_bytes : opts->max_bytes / 8;
  }
  s->nstripes = opts->stripes;
  *out = s;
  return 0;
}

void braid_cache_shared_free(braid_cache_shared_t *s) {
  if (!s)
    return;
  for (uint32_t i = 0; i < s->nstripes; i++) {
    core_destroy(&s->stripes[i].core);
    uv_mutex_destroy(&s->stripes[i].mu);
  }
  braid__free(s->stripes);
  braid__free(s);
}

/* The stripe comes from the hash's top bits; the table index uses the low bits, so the two
 * choices are independent. */
static inline stripe_t *stripe_of(braid_cache_shared_t *s, uint64_t h) {
  return &s->stripes[(h >> 48) & (s->nstripes - 1)];
}

/* The hash the stripe's core wants: the one that picked the stripe, unless the stripe has
 * fallen back to SipHash (under its lock). */
static inline uint64_t stripe_hash(const stripe_t *st, const braid_cache_shared_t *s,
                                   uint64_t h, const void *key, size_t klen) {
  return st->core.hs.mode == s->hs.mode ? h : hash_key(&st->core, key, klen);
}

int braid_cache_shared_put(braid_cache_shared_t *s, const void *key, size_t klen,
                           const void *value, size_t vlen, uint64_t ttl_ms) {
  if (!s || !key_ok(key, klen))
    return BRAID_EINVAL;
  uint64_t h = hasher_hash(&s->hs, key, klen);
  stripe_t *st = stripe_of(s, h);
  uv_mutex_lock(&st->mu);
  h = stripe_hash(st, s, h, key, klen);
  int rc = core_put(&st->core, h, key, klen, value, vlen, NULL, ttl_ms);
  uv_mutex_unlock(&st->mu);
  return rc;
}

int braid_cache_shared_put_blob(braid_cache_shared_t *s, const void *key, size_t klen,
                                braid_blob_t *blob, uint64_t ttl_ms) {
  if (!s || !blob || !key_ok(key, klen))
    return BRAID_EINVAL;
  uint64_t h = hasher_hash(&s->hs, key, klen);
  stripe_t *st = stripe_of(s, h);
  uv_mutex_lock(&st->mu);
  h = stripe_hash(st, s, h, key, klen);
  int rc = core_put(&st->core, h, key, klen, NULL, 0, blob, ttl_ms);
  uv_mutex_unlock(&st->mu);
  return rc;
}

int braid_cache_shared_get(braid_cache_shared_t *s, const void *key, size_t klen, void *buf,
                           size_t cap, size_t *len) {
  if (!s || !key_ok(key, klen) || (!buf && cap))
    return BRAID_EINVAL;
  uint64_t h = hasher_hash(&s->hs, key, klen);
  stripe_t *st = stripe_of(s, h);
  uv_mutex_lock(&st->mu);
  h = stripe_hash(st, s, h, key, klen);
  int rc = core_get(&st->core, h, key, klen, buf, cap, len);
  uv_mutex_unlock(&st->mu);
  return rc;
}

int braid_cache_shared_get_blob(braid_cache_shared_t *s, const void *key, size_t klen,
                                braid_blob_t **out) {
  if (!s || !out || !key_ok(key, klen))
    return BRAID_EINVAL;
  uint64_t h = hasher_hash(&s->hs, key, klen);
  stripe_t *st = stripe_of(s, h);
  uv_mutex_lock(&st->mu);
  h = stripe_hash(st, s, h, key, klen);
  int rc = core_get_blob(&st->core, h, key, klen, out);
  uv_mutex_unlock(&st->mu);
  return rc;
}

int braid_cache_shared_delete(braid_cache_shared_t *s, const void *key, size_t klen) {
  if (!s || !key_ok(key, klen))
    return BRAID_EINVAL;
  uint64_t h = hasher_hash(&s->hs, key, klen);
  stripe_t *st = stripe_of(s, h);
  uv_mutex_lock(&st->mu);
  h = stripe_hash(st, s, h, key, klen);
  int rc = core_delete(&st->core, h, key, klen);
  uv_mutex_unlock(&st->mu);
  return rc;
}

int braid_cache_shared_stats(braid_cache_shared_t *s, braid_cache_stats_t *out) {
  if (!s || !out)
    return BRAID_EINVAL;
  memset(out, 0, sizeof(*out));
  for (uint32_t i = 0; i < s->nstripes; i++) {
    stripe_t *st = &s->stripes[i];
    uv_mutex_lock(&st->mu);
    const braid_cache_stats_t *a = &st->core.st;
    out->hits += a->hits;
    out->misses += a->misses;
    out->inserts += a->inserts;
    out->rejected += a->rejected;
    out->evictions += a->evictions;
    out->expirations += a->expirations;
    out->hash_fallbacks += a->hash_fallbacks;
    out->entries += a->entries;
    out->bytes += a->bytes;
    uv_mutex_unlock(&st->mu);
  }
  stats_finish(out);
  return 0;
}
