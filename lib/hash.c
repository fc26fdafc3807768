#include "internal.h"

#include "hash_impl.h"

int braid_hash_key_random(braid_hash_key_t *key) {
  if (!key)
    return BRAID_EINVAL;
  unsigned char b[16];
  int rc = braid__random_bytes(b, sizeof(b));
  if (rc != 0)
    return rc;
  *key = braid_hash_key_from_bytes(b);
  return 0;
}

braid_hash_key_t braid_hash_key_from_bytes(const unsigned char bytes[16]) {
  braid_hash_key_t k = {braid__load_le64(bytes), braid__load_le64(bytes + 8)};
  return k;
}

uint64_t braid_siphash13(const braid_hash_key_t *key, const void *data, size_t len) {
  return braid__siphash(key->k0, key->k1, len ? data : "", len, 1, 3);
}

uint64_t braid_siphash24(const braid_hash_key_t *key, const void *data, size_t len) {
  return braid__siphash(key->k0, key->k1, len ? data : "", len, 2, 4);
}

int braid_hash_fast_key_random(braid_hash_fast_key_t *key) {
  if (!key)
    return BRAID_EINVAL;
  unsigned char b[32];
  int rc = braid__random_bytes(b, sizeof(b));
  if (rc != 0)
    return rc;
  for (int i = 0; i < 4; i++)
    key->k[i] = braid__load_le64(b + 8 * i);
  return 0;
}

uint64_t braid_hash_fast(const braid_hash_fast_key_t *key, const void *data, size_t len) {
  return braid__fasthash(key->k, len ? data : "", len);
}
