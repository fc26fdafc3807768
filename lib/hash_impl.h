/* braid: SipHash and the fast keyed hash, inlined into the modules whose hot path is a hash
 * (the cache). Private.
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


/* ---- the fast keyed hash ------------------------------------------------------------------
 *
 * The multiply-fold ("mum") construction of wyhash, the hash Go's runtime maps fall back to
 * without AES and Zig's standard hash map use, here written from its description: 16 bytes
 * at a time, each half XORed with a secret word (or the running state) and the two multiplied
 * into 128 bits, whose halves are XORed together. Under four random 64-bit key words it is a
 * keyed hash in the sense a hash table needs: the bucket of a key cannot be computed without
 * the key. It is not a PRF (SipHash is), and a product with a zero factor loses the other
 * factor, which an attacker could exploit only by guessing a 64-bit key word. It costs about a
 * third of SipHash-1-3's instructions on a 24-byte key, and a cache hit at a million entries
 * is bound by how many lookups the CPU can keep in flight, which is what the instruction
 * count decides. The cache adds a second line of defence: a probe run that grows past what
 * random keys ever produce makes it rehash everything with SipHash-1-3. */

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 braid__u128;
#endif

/* The full 64x64 -> 128-bit product of a and b, as (*lo, *hi). */
static inline void braid__mul128(uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi) {
#if defined(__SIZEOF_INT128__)
  braid__u128 r = (braid__u128)a * b;
  *lo = (uint64_t)r;
  *hi = (uint64_t)(r >> 64);
#else
  uint64_t al = a & 0xffffffffu, ah = a >> 32, bl = b & 0xffffffffu, bh = b >> 32;
  uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu);
  *lo = (mid << 32) | (ll & 0xffffffffu);
  *hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
#endif
}

static inline uint64_t braid__mum(uint64_t a, uint64_t b) {
  uint64_t lo, hi;
  braid__mul128(a, b, &lo, &hi);
  return lo ^ hi;
}

static inline uint64_t braid__load_le32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

/* The fast keyed hash of data[0..len) under k[0..3] (k[0] seeds the state; k[1..3] are the
 * secrets mixed into each lane). */
static BRAID__ALWAYS_INLINE uint64_t braid__fasthash(const uint64_t k[4], const void *data,
                                                     size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  uint64_t seed = k[0], a, b;
  if (len <= 16) {
    if (len >= 4) {
      /* Two overlapping 4-byte reads from each end cover every byte of 4..16. */
      size_t q = (len >> 3) << 2;
      a = (braid__load_le32(p) << 32) | braid__load_le32(p + q);
      b = (braid__load_le32(p + len - 4) << 32) | braid__load_le32(p + len - 4 - q);
    } else if (len > 0) {
      a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
      b = 0;
    } else {
      a = b = 0;
    }
  } else {
    size_t i = len;
    if (i > 48) {
      uint64_t s1 = seed, s2 = seed;
      do { /* three independent lanes, so the multiplies overlap */
        seed = braid__mum(braid__load_le64(p) ^ k[1], braid__load_le64(p + 8) ^ seed);
        s1 = braid__mum(braid__load_le64(p + 16) ^ k[2], braid__load_le64(p + 24) ^ s1);
        s2 = braid__mum(braid__load_le64(p + 32) ^ k[3], braid__load_le64(p + 40) ^ s2);
        p += 48;
        i -= 48;
      } while (i > 48);
      seed ^= s1 ^ s2;
    }
    while (i > 16) {
      seed = braid__mum(braid__load_le64(p) ^ k[1], braid__load_le64(p + 8) ^ seed);
      p += 16;
      i -= 16;
    }
    /* The last 16 bytes, overlapping what the loop already took when len % 16 != 0. */
    a = braid__load_le64(p + i - 16);
    b = braid__load_le64(p + i - 8);
  }
  uint64_t lo, hi;
  braid__mul128(a ^ k[1], b ^ seed, &lo, &hi);
  return braid__mum(lo ^ k[0] ^ (uint64_t)len, hi ^ k[1]);
}

#endif
