/* Keyed hashing: SipHash-2-4 and SipHash-1-3 against the reference implementation's test
 * vectors (messages 00 01 02 .. of length 0..63), the OS-seeded keys, and the fast keyed hash
 * against a plain re-implementation of its description (no int128, bytes read one by one). */
#include <string.h>

#include "../support.h"

/* SipHash-2-4, key 00 01 .. 0f: the reference implementation's vectors.h (vectors_sip64). */
static const uint64_t sip24_vectors[64] = {
    0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
    0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
    0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
    0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
    0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
    0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
    0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
    0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
    0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
    0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
    0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
    0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
    0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
    0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
    0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
};

/* SipHash-1-3, all-zero key, from the reference implementation run with cROUNDS=1,
 * dROUNDS=3 (the same table OCaml's runtime tests its sip13 hash against; the empty-message
 * value is also Rust's DefaultHasher with zero keys). */
static const uint64_t sip13_zero_key_vectors[64] = {
    0xd1fba762150c532c, 0x68a914128e01e473, 0x010bac45c41e3669, 0x4d4c9a4a8ef6e0ad,
    0x7cc43f98813e4dbd, 0x5abe2169dff36275, 0xe3c25f87624f1cdb, 0x2f098ab0c751325a,
    0xead411e67ebe2eea, 0x75927f9d95124362, 0xaf9f77a65ab51a1d, 0xfe64ce8b6617fcff,
    0xa6baf4fb0f9fe1c2, 0xa0cf3211850f8e0d, 0x7f86049379fbfe67, 0xf30eb725bb91c9ea,
    0x8972188433a5c5b7, 0x4883c49a2c009c1d, 0xadc2c0b63044067d, 0x091f4a3329f87d19,
    0x639e355ae68c0100, 0xb17bef2cb5213239, 0xf8aeb1066236ccfe, 0x37332b1389daa4ff,
    0x31185a47af932f3a, 0xebf352e82ae23e2f, 0xed36ff242fe478b2, 0x2454d97d299299df,
    0x8cd57fe8130d0ac7, 0xbe98eb2faf0a0e85, 0xd427c34ee09470c6, 0x169739443111d49b,
    0x31ef8061c910629b, 0x7fb71d24dfa4c9f6, 0x92771f49e836d389, 0x3c393cf6f0853bc3,
    0xac77921fcc642bd3, 0x422a9751192ff266, 0xc680ae8a8c584ddf, 0x6c76b6d34bb6d26b,
    0x95bc321ab41d8206, 0x908a3a97a6d37669, 0xfcaf3c64874dd0b4, 0xf689479b32b84a44,
    0xd857641079efd1fd, 0x8b581578722633f7, 0x83cb09d35ea7bcd4, 0x8485f7f5ae725a0d,
    0xfe1f2445ba50237f, 0x23cece041d7866b0, 0x416687480b336c09, 0xf15960da7e7f3892,
    0xded6177b9826835a, 0xf80dae51668be6be, 0x17ecc6ee6647df18, 0x5220d642b4a52110,
    0xa4f0cf4ba4adc016, 0xe5125bb26d1f2976, 0x851b0e75f580d256, 0x12605250a37e39ac,
    0xd95a713568daebf1, 0xcdcf4a42ec0dd605, 0xa5c708712b617164, 0x385d3e39e5f37359,
};

static void test_siphash24_reference_vectors(void **state) {
  (void)state;
  unsigned char kb[16], msg[64];
  for (int i = 0; i < 16; i++)
    kb[i] = (unsigned char)i;
  for (int i = 0; i < 64; i++)
    msg[i] = (unsigned char)i;
  braid_hash_key_t key = braid_hash_key_from_bytes(kb);
  assert_true(key.k0 == UINT64_C(0x0706050403020100));
  assert_true(key.k1 == UINT64_C(0x0f0e0d0c0b0a0908));
  for (size_t len = 0; len < 64; len++) {
    uint64_t h = braid_siphash24(&key, msg, len);
    if (h != sip24_vectors[len])
      fail_msg("siphash24 len %zu: got %016llx", len, (unsigned long long)h);
  }
}

static void test_siphash13_reference_vectors(void **state) {
  (void)state;
  unsigned char msg[64];
  for (int i = 0; i < 64; i++)
    msg[i] = (unsigned char)i;
  braid_hash_key_t key = {0, 0};
  for (size_t len = 0; len < 64; len++) {
    uint64_t h = braid_siphash13(&key, msg, len);
    if (h != sip13_zero_key_vectors[len])
      fail_msg("siphash13 len %zu: got %016llx", len, (unsigned long long)h);
  }
  /* NULL with length 0 is the empty message. */
  assert_true(braid_siphash13(&key, NULL, 0) == sip13_zero_key_vectors[0]);
}

static void test_key_changes_hash(void **state) {
  (void)state;
  braid_hash_key_t a, b;
  assert_int_equal(braid_hash_key_random(&a), 0);
  assert_int_equal(braid_hash_key_random(&b), 0);
  /* Two draws of 128 random bits are equal with probability 2^-128. */
  assert_false(a.k0 == b.k0 && a.k1 == b.k1);
  const char *m = "GET /index.html";
  assert_true(braid_siphash13(&a, m, strlen(m)) != braid_siphash13(&b, m, strlen(m)));
  assert_true(braid_siphash13(&a, m, strlen(m)) == braid_siphash13(&a, m, strlen(m)));
  assert_int_equal(braid_hash_key_random(NULL), BRAID_EINVAL);
}

/* Flipping any one input bit flips about half the output bits (the avalanche a hash table
 * needs so that similar keys land in unrelated buckets). Averaged over many flips. */
static void test_avalanche(void **state) {
  (void)state;
  braid_hash_key_t key;
  assert_int_equal(braid_hash_key_random(&key), 0);
  unsigned char msg[24];
  for (int i = 0; i < 24; i++)
    msg[i] = (unsigned char)(i * 7);
  uint64_t base = braid_siphash13(&key, msg, sizeof(msg));
  unsigned total = 0;
  for (int bit = 0; bit < 24 * 8; bit++) {
    msg[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    total += (unsigned)__builtin_popcountll(base ^ braid_siphash13(&key, msg, sizeof(msg)));
    msg[bit / 8] ^= (unsigned char)(1u << (bit % 8));
  }
  double mean = (double)total / (24 * 8);
  assert_true(mean > 28.0 && mean < 36.0);
}

/* ---- braid_hash_fast ------------------------------------------------------------------ */

/* braid_hash_fast, key words 0706..00, 0f0e..08, 1716..10, 1f1e..18, messages 00 01 02 .. of
 * length 0..63. Pinned so that any change of output (on any platform) is seen. */
static const uint64_t fast_vectors[64] = {
    0xc458899e3ad3396b, 0xd4f0fbe14b057156, 0x8c658d2ae3814002, 0x72a92676a6103797,
    0xd599eeda50ad1cf9, 0xb5671d673ff85b9f, 0x338721afd47a7dfb, 0x414a0fe2ec7dd7b0,
    0x91524841a9551175, 0x2a597f953efd5cc6, 0xa1c245b52f37d948, 0xdd6f39b513d4ddde,
    0x2e66b4c9b6aa9a4a, 0x4c457e1e2b1a37cc, 0x0a9d51128dfe212f, 0x3219faac09db6ab5,
    0xf41e454bdeb55cb2, 0x1af3b13e923ea8ac, 0x0da791e7132da048, 0x0c19dfe6e5ecb546,
    0x1d3566eb257793ea, 0xe0e9a602efc68ff4, 0x55f8d5c65f271f30, 0x76cc9c9834a55a71,
    0x827579801835a1f6, 0xef0e6e179a70823a, 0x3d51ea771d2e5218, 0xf380d96e4a0b6a2f,
    0x45ac2f633f0ea6e1, 0x19cbead97cee10d8, 0x8b5499f095fe0be2, 0xb08caac3b92a7bed,
    0xdccca9f9b7031243, 0x168ade66c81d83cd, 0x452ef1a06489e23b, 0x89af886dc2d4bdfd,
    0x96f626cda1c1dbea, 0x5ea2e72d47383696, 0x9158dc087753636f, 0x0faacaf845f4393d,
    0x1ea711ae18a30042, 0xcdc8c4057dbd3f58, 0x2a7fd7ab11c29f6a, 0x333a89c2cc7c4538,
    0x526eb2e3f389e1c7, 0x4275c0700ac946e0, 0x6210498969693322, 0xa288d8bb20fe034f,
    0x8ccfda6900bc5bb2, 0xe2f369d6eae1cfa5, 0x4ce7af36df90021b, 0x5cbc23e0e39e261e,
    0xcace2a14f22f3481, 0xb692ea7f2ecc992f, 0x62ebbe1f3506d9be, 0x4c4639de101e3a30,
    0xcbefdd9b817d0922, 0x3cd80f51f4f27694, 0x93dc5f948a099629, 0x35f8312636c8a5bd,
    0x5857ba69caa45217, 0xb3972c8894d887c1, 0x13024d5e36847e43, 0x6d66c2a31e79803b
};

static uint64_t ref_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

/* The 128-bit product from 32-bit halves, schoolbook. */
static void ref_mul(uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi) {
  uint64_t a0 = a & 0xffffffff, a1 = a >> 32, b0 = b & 0xffffffff, b1 = b >> 32;
  uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  uint64_t cross = (p00 >> 32) + (p01 & 0xffffffff) + (p10 & 0xffffffff);
  *lo = (cross << 32) | (p00 & 0xffffffff);
  *hi = p11 + (p01 >> 32) + (p10 >> 32) + (cross >> 32);
}

static uint64_t ref_mum(uint64_t a, uint64_t b) {
  uint64_t lo, hi;
  ref_mul(a, b, &lo, &hi);
  return lo ^ hi;
}

/* The construction as include/braid/hash.h and lib/hash_impl.h describe it. */
static uint64_t ref_fast(const uint64_t k[4], const unsigned char *p, size_t len) {
  uint64_t seed = k[0], a = 0, b = 0;
  if (len <= 16) {
    if (len >= 4) {
      size_t q = len / 8 * 4; /* 0 for 4..7, 4 for 8..15, 8 for 16 */
      a = ref_le(p, 4) << 32 | ref_le(p + q, 4);
      b = ref_le(p + len - 4, 4) << 32 | ref_le(p + len - 4 - q, 4);
    } else if (len > 0) {
      a = (uint64_t)p[0] << 16 | (uint64_t)p[len / 2] << 8 | p[len - 1];
    }
  } else {
    size_t done = 0;
    if (len > 48) {
      uint64_t l1 = seed, l2 = seed;
      while (len - done > 48) {
        seed = ref_mum(ref_le(p + done, 8) ^ k[1], ref_le(p + done + 8, 8) ^ seed);
        l1 = ref_mum(ref_le(p + done + 16, 8) ^ k[2], ref_le(p + done + 24, 8) ^ l1);
        l2 = ref_mum(ref_le(p + done + 32, 8) ^ k[3], ref_le(p + done + 40, 8) ^ l2);
        done += 48;
      }
      seed ^= l1 ^ l2;
    }
    while (len - done > 16) {
      seed = ref_mum(ref_le(p + done, 8) ^ k[1], ref_le(p + done + 8, 8) ^ seed);
      done += 16;
    }
    a = ref_le(p + len - 16, 8);
    b = ref_le(p + len - 8, 8);
  }
  uint64_t lo, hi;
  ref_mul(a ^ k[1], b ^ seed, &lo, &hi);
  return ref_mum(lo ^ k[0] ^ len, hi ^ k[1]);
}

static void test_fast_pinned_vectors(void **state) {
  (void)state;
  braid_hash_fast_key_t key;
  unsigned char kb[32], msg[64];
  for (int i = 0; i < 32; i++)
    kb[i] = (unsigned char)i;
  for (int i = 0; i < 4; i++)
    key.k[i] = ref_le(kb + 8 * i, 8);
  for (int i = 0; i < 64; i++)
    msg[i] = (unsigned char)i;
  for (size_t n = 0; n < 64; n++) {
    uint64_t h = braid_hash_fast(&key, msg, n);
    if (h != fast_vectors[n])
      fail_msg("length %zu: 0x%016llx, pinned 0x%016llx", n, (unsigned long long)h,
               (unsigned long long)fast_vectors[n]);
    assert_true(h == ref_fast(key.k, msg, n));
  }
  assert_true(braid_hash_fast(&key, NULL, 0) == fast_vectors[0]);
}

/* Random keys and messages of every length up to 300 (every path: short, the 16-byte loop,
 * the three-lane loop and their tails) against the re-implementation. */
static void test_fast_matches_reference(void **state) {
  (void)state;
  uint64_t x = 0x9e3779b97f4a7c15u;
  unsigned char msg[300];
  for (int round = 0; round < 20; round++) {
    braid_hash_fast_key_t key;
    assert_int_equal(braid_hash_fast_key_random(&key), 0);
    for (size_t i = 0; i < sizeof(msg); i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      msg[i] = (unsigned char)x;
    }
    for (size_t n = 0; n <= sizeof(msg); n++)
      if (braid_hash_fast(&key, msg, n) != ref_fast(key.k, msg, n))
        fail_msg("round %d, length %zu differs from the reference", round, n);
  }
  assert_int_equal(braid_hash_fast_key_random(NULL), BRAID_EINVAL);
}

/* Every input bit and every key matters: flipping one flips about half the output bits,
 * for each length class; and messages that differ only by trailing zero bytes differ. */
static void test_fast_avalanche(void **state) {
  (void)state;
  braid_hash_fast_key_t key;
  assert_int_equal(braid_hash_fast_key_random(&key), 0);
  static const size_t lens[] = {1, 3, 4, 7, 8, 15, 16, 17, 24, 33, 48, 49, 100};
  unsigned char msg[100];
  for (size_t i = 0; i < sizeof(msg); i++)
    msg[i] = (unsigned char)(i * 7 + 1);
  for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
    size_t n = lens[li];
    uint64_t base = braid_hash_fast(&key, msg, n);
    unsigned total = 0, worst = 64;
    for (size_t bit = 0; bit < n * 8; bit++) {
      msg[bit / 8] ^= (unsigned char)(1u << (bit % 8));
      unsigned d = (unsigned)__builtin_popcountll(base ^ braid_hash_fast(&key, msg, n));
      msg[bit / 8] ^= (unsigned char)(1u << (bit % 8));
      total += d;
      worst = d < worst ? d : worst;
    }
    double mean = (double)total / (double)(n * 8);
    if (mean < 26.0 || mean > 38.0 || worst == 0)
      fail_msg("length %zu: mean %.1f bits flipped, fewest %u", n, mean, worst);
    for (int w = 0; w < (n > 48 ? 4 : 2); w++) { /* k[2], k[3] feed only the 3-lane loop */
      braid_hash_fast_key_t k2 = key;
      k2.k[w] ^= 1;
      assert_true(braid_hash_fast(&k2, msg, n) != base);
    }
  }
  unsigned char z[40] = {0};
  for (size_t n = 0; n < sizeof(z); n++)
    assert_true(braid_hash_fast(&key, z, n) != braid_hash_fast(&key, z, n + 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_siphash24_reference_vectors),
      cmocka_unit_test(test_siphash13_reference_vectors),
      cmocka_unit_test(test_key_changes_hash),
      cmocka_unit_test(test_avalanche),
      cmocka_unit_test(test_fast_pinned_vectors),
      cmocka_unit_test(test_fast_matches_reference),
      cmocka_unit_test(test_fast_avalanche),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
