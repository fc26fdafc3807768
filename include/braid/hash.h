/* braid: keyed hashing.
 *
 * Hash tables that store keys chosen by the network (URLs, header values, client ids) must
 * not use a hash an attacker can predict: keys crafted to collide turn every lookup into a
 * walk along one long chain (hash flooding, CVE-2011-4885 and friends). braid hashes with
 * SipHash under a 128-bit key drawn from the OS, so collisions cannot be crafted offline.
 *
 * Two SipHash variants: SipHash-2-4 (the conservative PRF from the paper) and SipHash-1-3
 * (the variant Python, Rust and OCaml use for their hash tables; about 40% cheaper on short
 * keys). Both match the reference implementation's test vectors.
 *
 * And a fast keyed hash, braid_hash_fast(): the multiply-fold construction of wyhash (what
 * Go's maps use where AES is missing, and Zig's hash maps) under a 256-bit key from the OS.
 * Keyed, so buckets cannot be predicted without the key, but not a PRF: it trades SipHash's
 * security margin for about a third of the work on short keys. braid's cache uses it by
 * default, with a fall-back to SipHash-1-3 when a probe run grows suspiciously long (see
 * braid/cache.h); use SipHash where the hash itself must resist analysis. */
#ifndef BRAID_HASH_H
#define BRAID_HASH_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 128-bit hash key. From 16 key bytes b[0..15], k0 is b[0..7] and k1 is b[8..15], each
 * read little-endian (the reference implementation's convention). */
typedef struct braid_hash_key_s {
  uint64_t k0, k1;
} braid_hash_key_t;

/* Fills *key from the OS's CSPRNG (getrandom). Returns 0, BRAID_EINVAL (key NULL) or a
 * negated errno from the OS (then *key is unchanged). */
BRAID_EXTERN int braid_hash_key_random(braid_hash_key_t *key);

/* Makes a key from 16 bytes (for tests and reproducible tables). bytes must not be NULL. */
BRAID_EXTERN braid_hash_key_t braid_hash_key_from_bytes(const unsigned char bytes[16]);

/* Returns SipHash-1-3 of data[0..len) under key. data may be NULL only when len is 0.
 * Pure function: thread-safe. */
BRAID_EXTERN uint64_t braid_siphash13(const braid_hash_key_t *key, const void *data, size_t len);

/* Returns SipHash-2-4 of data[0..len) under key. data may be NULL only when len is 0. */
BRAID_EXTERN uint64_t braid_siphash24(const braid_hash_key_t *key, const void *data, size_t len);

/* A 256-bit key for braid_hash_fast(): k[0] seeds the state, k[1..3] are mixed into the
 * input words. */
typedef struct braid_hash_fast_key_s {
  uint64_t k[4];
} braid_hash_fast_key_t;

/* Fills *key from the OS's CSPRNG (getrandom). Returns 0, BRAID_EINVAL (key NULL) or a
 * negated errno from the OS (then *key is unchanged). */
BRAID_EXTERN int braid_hash_fast_key_random(braid_hash_fast_key_t *key);

/* Returns the fast keyed hash of data[0..len) under key (see the top of this header). The
 * result is the same on every platform (input words are read little-endian). data may be
 * NULL only when len is 0. Pure function: thread-safe. */
BRAID_EXTERN uint64_t braid_hash_fast(const braid_hash_fast_key_t *key, const void *data,
                                      size_t len);

#ifdef __cplusplus
}
#endif
#endif
