/* braid: SipHash, inlined into the modules whose hot path is a hash (the cache). Private.
 *
 * SipHash (Aumasson and Bernstein, 2012) is a keyed pseudo-random function: without the key,
 * an attacker cannot predict which bucket a key lands in, so crafted keys cannot pile into one
 * chain. SipHash-c-d runs c compression rounds per 8-byte word and d finalisation rounds.
 * SipHash-2-4 is the conservative PRF; SipHash-1-3 is what Python (3.11+), Rust's HashMap
 * and OCaml use for hash tables: about 40% fewer rounds, and still keyed, which is all a hash
 * table needs against flooding. Written from the paper's description. */
#ifndef BRAID_HASH_IMPL_H
#define BRAID_HASH_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t braid__rotl64(uint64_t x, unsigned b) {
  return (x << b) | (x >> (64 - b));
}

static inline uint64_t braid__load_le64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

typedef struct {
  uint64_t v0, v1, v2, v3;
} braid__sip_state_t;

static inline void braid__sip_round(braid__sip_state_t *s) {
  s->v0 += s->v1;
  s->v1 = braid__rotl64(s->v1, 13);
  s->v1 ^= s->v0;
  s->v0 = braid__rotl64(s->v0, 32);
  s->v2 += s->v3;
  s->v3 = braid__rotl64(s->v3, 16);
  s->v3 ^= s->v2;
  s->v0 += s->v3;
  s->v3 = braid__rotl64(s->v3, 21);
  s->v3 ^= s->v0;
  s->v2 += s->v1;
  s->v1 = braid__rotl64(s->v1, 17);
  s->v1 ^= s->v2;
  s->v2 = braid__rotl64(s->v2, 32);
}

#if defined(__GNUC__)
#define BRAID__ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define BRAID__ALWAYS_INLINE inline
#endif

/* SipHash-c-d of data[0..len) under the key (k0, k1), 64-bit output. c and d are constants
 * at every call site; inlining lets the compiler unroll the rounds (a cache hit is mostly
 * this function, so a call and a generic round loop would show). */
static BRAID__ALWAYS_INLINE uint64_t braid__siphash(uint64_t k0, uint64_t k1, const void *data,
                                                    size_t len, unsigned c, unsigned d) {
  const unsigned char *p = (const unsigned char *)data;
  braid__sip_state_t s = {
      k0 ^ UINT64_C(0x736f6d6570736575),
      k1 ^ UINT64_C(0x646f72616e646f6d),
      k0 ^ UINT64_C(0x6c7967656e657261),
      k1 ^ UINT64_C(0x7465646279746573),
  };
  size_t words = len / 8;
  for (size_t i = 0; i < words; i++, p += 8) {
    uint64_t m = braid__load_le64(p);
    s.v3 ^= m;
    for (unsigned r = 0; r < c; r++)
      braid__sip_round(&s);
    s.v0 ^= m;
  }
  /* The last word: the remaining 0..7 bytes, little-endian, with len mod 256 on top. */
  uint64_t b = (uint64_t)len << 56;
  switch (len & 7) {
  case 7: b |= (uint64_t)p[6] << 48; /* fall through */
  case 6: b |= (uint64_t)p[5] << 40; /* fall through */
  case 5: b |= (uint64_t)p[4] << 32; /* fall through */
  case 4: b |= (uint64_t)p[3] << 24; /* fall through */
  case 3: b |= (uint64_t)p[2] << 16; /* fall through */
  case 2: b |= (uint64_t)p[1] << 8;  /* fall through */
  case 1: b |= (uint64_t)p[0]; break;
  default: break;
  }
  s.v3 ^= b;
  for (unsigned r = 0; r < c; r++)
    braid__sip_round(&s);
  s.v0 ^= b;
  s.v2 ^= 0xff;
  for (unsigned r = 0; r < d; r++)
    braid__sip_round(&s);
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

#endif
