/* braid: memcached meta-protocol client and the two-tier memo (see braid/memcache.h).
 *
 * Layout: digests (murmur3 for rendezvous, md5 for ketama, sha256 for long keys, base64),
 * the meta codec (framer and reply parser, memcache_proto.h), the client (servers, key
 * placement, dead marking, single requests, multi-gets), the memo (L1 braid_cache in front,
 * win/lease protocol with memcached). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "memcache_proto.h"

/* ---- murmur3_32 ----------------------------------------------------------------------- */

static inline uint32_t rotl32(uint32_t x, int r) {
  return (x << r) | (x >> (32 - r));
}

static inline uint32_t mm3_mix_k(uint32_t k) {
  k *= 0xcc9e2d51u;
  k = rotl32(k, 15);
  k *= 0x1b873593u;
  return k;
}

/* murmur3_32 over the concatenation of up to three pieces, without copying them. */
typedef struct mm3_s {
  uint32_t h;
  uint32_t carry;
  unsigned ncarry;
  size_t total;
} mm3_t;

static void mm3_feed(mm3_t *s, const uint8_t *p, size_t n) {
  s->total += n;
  while (n > 0 && s->ncarry > 0 && s->ncarry < 4) {
    s->carry |= (uint32_t)*p++ << (8 * s->ncarry);
    s->ncarry++;
    n--;
    if (s->ncarry == 4) {
      s->h ^= mm3_mix_k(s->carry);
      s->h = rotl32(s->h, 13) * 5 + 0xe6546b64u;
      s->carry = 0;
      s->ncarry = 0;
      break;
    }
  }
  if (s->ncarry != 0)
    return;
  while (n >= 4) {
    uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                 ((uint32_t)p[3] << 24);
    s->h ^= mm3_mix_k(k);
    s->h = rotl32(s->h, 13) * 5 + 0xe6546b64u;
    p += 4;
    n -= 4;
  }
  for (size_t i = 0; i < n; i++)
    s->carry |= (uint32_t)p[i] << (8 * s->ncarry++);
}

static uint32_t mm3_final(mm3_t *s) {
  uint32_t h = s->h;
  if (s->ncarry)
    h ^= mm3_mix_k(s->carry);
  h ^= (uint32_t)s->total;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

uint32_t braid_memcache_murmur3_32(const void *data, size_t len, uint32_t seed) {
  mm3_t s = {seed, 0, 0, 0};
  if (data && len)
    mm3_feed(&s, data, len);
  return mm3_final(&s);
}

/* ---- md5 (RFC 1321) ------------------------------------------------------------------- */

typedef struct md5_s {
  uint32_t a, b, c, d;
  uint64_t total;
  uint8_t buf[64];
  size_t nbuf;
} md5_t;

static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
    0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
    0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
    0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
    0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
    0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391};
static const uint8_t md5_r[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                  5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

static void md5_block(md5_t *s, const uint8_t *p) {
  uint32_t w[16];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] | ((uint32_t)p[4 * i + 1] << 8) | ((uint32_t)p[4 * i + 2] << 16) |
           ((uint32_t)p[4 * i + 3] << 24);
  uint32_t a = s->a, b = s->b, c = s->c, d = s->d;
  for (int i = 0; i < 64; i++) {
    uint32_t f;
    int g;
    if (i < 16) {
      f = (b & c) | (~b & d);
      g = i;
    } else if (i < 32) {
      f = (d & b) | (~d & c);
      g = (5 * i + 1) & 15;
    } else if (i < 48) {
      f = b ^ c ^ d;
      g = (3 * i + 5) & 15;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) & 15;
    }
    uint32_t t = d;
    d = c;
    c = b;
    b = b + rotl32(a + f + md5_k[i] + w[g], md5_r[i]);
    a = t;
  }
  s->a += a;
  s->b += b;
  s->c += c;
  s->d += d;
}

static void md5_feed(md5_t *s, const uint8_t *p, size_t n) {
  s->total += n;
  while (n > 0) {
    size_t take = 64 - s->nbuf < n ? 64 - s->nbuf : n;
    memcpy(s->buf + s->nbuf, p, take);
    s->nbuf += take;
    p += take;
    n -= take;
    if (s->nbuf == 64) {
      md5_block(s, s->buf);
      s->nbuf = 0;
    }
  }
}

void braid__mc_md5(const void *data, size_t len, uint8_t out[16]) {
  md5_t s = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0, {0}, 0};
  md5_feed(&s, data, len);
  uint64_t bits = s.total * 8;
  uint8_t pad = 0x80, zero = 0;
  md5_feed(&s, &pad, 1);
  while (s.nbuf != 56)
    md5_feed(&s, &zero, 1);
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++)
    lenb[i] = (uint8_t)(bits >> (8 * i));
  md5_feed(&s, lenb, 8);
  uint32_t v[4] = {s.a, s.b, s.c, s.d};
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++)
      out[4 * i + j] = (uint8_t)(v[i] >> (8 * j));
}

/* ---- sha256 (FIPS 180-4) -------------------------------------------------------------- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static inline uint32_t rotr32(uint32_t x, int r) {
  return (x >> r) | (x << (32 - r));
}

typedef struct sha_s {
  uint32_t h[8];
  uint64_t total;
  uint8_t buf[64];
  size_t nbuf;
} sha_t;

static void sha_block(sha_t *s, const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
           ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5],
           g = s->h[6], h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t S1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = h + S1 + ch + sha_k[i] + w[i];
    uint32_t S0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
    uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = S0 + mj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  s->h[0] += a;
  s->h[1] += b;
  s->h[2] += c;
  s->h[3] += d;
  s->h[4] += e;
  s->h[5] += f;
  s->h[6] += g;
  s->h[7] += h;
}

static void sha_feed(sha_t *s, const uint8_t *p, size_t n) {
  s->total += n;
  while (n > 0) {
    size_t take = 64 - s->nbuf < n ? 64 - s->nbuf : n;
    memcpy(s->buf + s->nbuf, p, take);
    s->nbuf += take;
    p += take;
    n -= take;
    if (s->nbuf == 64) {
      sha_block(s, s->buf);
      s->nbuf = 0;
    }
  }
}

void braid__mc_sha256(const void *data, size_t len, uint8_t out[32]) {
  sha_t s = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
              0x1f83d9ab, 0x5be0cd19},
             0,
             {0},
             0};
  sha_feed(&s, data, len);
  uint64_t bits = s.total * 8;
  uint8_t pad = 0x80, zero = 0;
  sha_feed(&s, &pad, 1);
  while (s.nbuf != 56)
    sha_feed(&s, &zero, 1);
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++)
    lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_feed(&s, lenb, 8);
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++)
      out[4 * i + j] = (uint8_t)(s.h[i] >> (24 - 8 * j));
}

/* ---- base64 (RFC 4648, padded), for b-flag keys --------------------------------------- */

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
    out[o++] = tab[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
    out[o++] = '=';
  }
  return o;
}

/* ---- keys on the wire ----------------------------------------------------------------- */

/* Raw binary keys up to this long go base64'd with a tag byte: 1 + 185 bytes encode to 248
 * characters, within memcached's 250 (it checks the encoded token's length). */
#define MC_BINARY_KEY_MAX 185
#define MC_KEY_LEN_MAX ((size_t)1 << 20)

typedef struct wire_key_s {
  char text[256]; /* the key token */
  size_t len;
  int base64; /* send the b flag */
} wire_key_t;

static int key_is_plain(const uint8_t *k, size_t n) {
  if (n == 0 || n > BRAID_MEMCACHE_KEY_MAX)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (k[i] <= 32 || k[i] >= 127)
      return 0;
  return 1;
}

static void wire_key(const uint8_t *k, size_t n, wire_key_t *w) {
  if (key_is_plain(k, n)) {
    memcpy(w->text, k, n);
    w->len = n;
    w->base64 = 0;
    return;
  }
  uint8_t raw[1 + MC_BINARY_KEY_MAX];
  size_t rn;
  if (n <= MC_BINARY_KEY_MAX) {
    raw[0] = 0x00;
    memcpy(raw + 1, k, n);
    rn = n + 1;
  } else {
    raw[0] = 0x01;
    braid__mc_sha256(k, n, raw + 1);
    rn = 33;
  }
  w->len = b64_encode(raw, rn, w->text);
  w->base64 = 1;
}

/* ---- the meta codec ------------------------------------------------------------------- */

static int is_flag_char(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Checks the flag tokens of a reply line: " Xtoken" repeated, tokens printable ASCII. */
static int check_flags(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (p[i] != ' ' || i + 1 >= n || !is_flag_char(p[i + 1]))
      return BRAID_EPROTO;
    i += 2;
    while (i < n && p[i] != ' ') {
      if (p[i] < 33 || p[i] > 126)
        return BRAID_EPROTO;
      i++;
    }
  }
  return 0;
}

/* Parses a decimal at p[0..n) (1..19 digits). */
static int parse_u64(const uint8_t *p, size_t n, uint64_t *out) {
  if (n == 0 || n > 19)
    return BRAID_EPROTO;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return BRAID_EPROTO;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  *out = v;
  return 0;
}

static int parse_i64(const uint8_t *p, size_t n, int64_t *out) {
  uint64_t v;
  if (n > 0 && p[0] == '-') {
    if (parse_u64(p + 1, n - 1, &v))
      return BRAID_EPROTO;
    *out = -(int64_t)v;
    return 0;
  }
  if (parse_u64(p, n, &v))
    return BRAID_EPROTO;
  *out = (int64_t)v;
  return 0;
}

static int starts(const uint8_t *p, size_t n, const char *s) {
  size_t sl = strlen(s);
  return n >= sl && memcmp(p, s, sl) == 0;
}

/* Classifies one line (without CRLF). Returns the code, or -1 for a server error line, -2
 * for MN, BRAID_EPROTO otherwise; *flags_off is where the flag tokens start. For VA, *vlen
 * is the declared value length. */
static int classify_line(const uint8_t *p, size_t n, size_t *flags_off, uint64_t *vlen) {
  if (n == 2 && memcmp(p, "MN", 2) == 0)
    return -2;
  if ((n == 5 && memcmp(p, "ERROR", 5) == 0) || starts(p, n, "ERROR ") ||
      starts(p, n, "CLIENT_ERROR") || starts(p, n, "SERVER_ERROR")) {
    for (size_t i = 0; i < n; i++)
      if (p[i] < 32 || p[i] > 126)
        return BRAID_EPROTO;
    return -1;
  }
  if (n < 2 || (n > 2 && p[2] != ' '))
    return BRAID_EPROTO;
  static const struct {
    const char *name;
    braid_memcache_code_t code;
  } codes[] = {{"HD", BRAID_MEMCACHE_HD}, {"EN", BRAID_MEMCACHE_EN}, {"NF", BRAID_MEMCACHE_NF},
               {"NS", BRAID_MEMCACHE_NS}, {"EX", BRAID_MEMCACHE_EX}, {"VA", BRAID_MEMCACHE_VA},
               {"ME", BRAID_MEMCACHE_HD}};
  for (size_t c = 0; c < BRAID__ARRAY_SIZE(codes); c++) {
    if (memcmp(p, codes[c].name, 2) != 0)
      continue;
    if (codes[c].code == BRAID_MEMCACHE_VA) {
      /* "VA <size>[ flags]" */
      if (n < 4)
        return BRAID_EPROTO;
      size_t e = 3;
      while (e < n && p[e] != ' ')
        e++;
      if (parse_u64(p + 3, e - 3, vlen))
        return BRAID_EPROTO;
      *flags_off = e;
    } else if (p[0] == 'M' && p[1] == 'E') {
      /* a debug reply: "ME <key> <k=v>..." - printable, never ours to interpret */
      for (size_t i = 0; i < n; i++)
        if (p[i] < 32 || p[i] > 126)
          return BRAID_EPROTO;
      *flags_off = n;
      return (int)BRAID_MEMCACHE_HD;
    } else {
      *flags_off = 2;
    }
    if (check_flags(p + *flags_off, n - *flags_off))
      return BRAID_EPROTO;
    return (int)codes[c].code;
  }
  return BRAID_EPROTO;
}

int braid__mc_frame(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg) {
  (void)arg;
  size_t off = 0;
  for (;;) {
    const uint8_t *nl = off < len ? memchr(buf + off, '\n', len - off) : NULL;
    if (!nl) {
      msg->need = 0;
      return 0;
    }
    size_t end = (size_t)(nl - buf); /* index of '\n' */
    if (end == off || buf[end - 1] != '\r')
      return BRAID_EPROTO;
    size_t flags_off = 0;
    uint64_t vlen = 0;
    int c = classify_line(buf + off, end - 1 - off, &flags_off, &vlen);
    if (c == BRAID_EPROTO)
      return BRAID_EPROTO;
    off = end + 1;
    if (c == -2) {
      msg->frame_len = off;
      msg->payload_off = 0;
      msg->payload_len = off;
      return (int)(off > INT32_MAX ? INT32_MAX : off);
    }
    if (c == (int)BRAID_MEMCACHE_VA) {
      if (vlen > BRAID_FRAMER_MAX_CEILING)
        return BRAID_ETOOBIG;
      size_t need = off + (size_t)vlen + 2;
      if (len < need) {
        msg->need = need;
        return 0;
      }
      if (buf[need - 2] != '\r' || buf[need - 1] != '\n')
        return BRAID_EPROTO;
      off = need;
    }
  }
}

/* Reads the flag tokens of a reply into res. */
static int parse_flags(const uint8_t *p, size_t n, braid_memcache_result_t *res) {
  size_t i = 0;
  while (i < n) {
    i++; /* the space */
    uint8_t f = p[i++];
    size_t s = i;
    while (i < n && p[i] != ' ')
      i++;
    const uint8_t *t = p + s;
    size_t tl = i - s;
    uint64_t u;
    int64_t v;
    switch (f) {
    case 'W': res->won = 1; break;
    case 'X': res->stale = 1; break;
    case 'Z': res->lost = 1; break;
    case 'c':
      if (parse_u64(t, tl, &res->cas))
        return BRAID_EPROTO;
      res->has_cas = 1;
      break;
    case 't':
      if (parse_i64(t, tl, &res->ttl_s))
        return BRAID_EPROTO;
      res->has_ttl = 1;
      break;
    case 'f':
      if (parse_u64(t, tl, &u) || u > UINT32_MAX)
        return BRAID_EPROTO;
      res->client_flags = (uint32_t)u;
      res->has_flags = 1;
      break;
    case 's':
      if (parse_u64(t, tl, &res->size))
        return BRAID_EPROTO;
      res->has_size = 1;
      break;
    case 'l':
      if (parse_i64(t, tl, &v))
        return BRAID_EPROTO;
      res->last_access_s = v;
      res->has_last_access = 1;
      break;
    case 'h':
      if (tl != 1 || (t[0] != '0' && t[0] != '1'))
        return BRAID_EPROTO;
      res->hit_before = t[0] == '1';
      res->has_hit = 1;
      break;
    case 'k':
      res->key = t;
      res->key_len = tl;
      break;
    case 'O':
      res->opaque = t;
      res->opaque_len = tl;
      break;
    default: break; /* b and flags we did not ask for: ignored */
    }
  }
  return 0;
}

int braid__mc_parse_reply(const uint8_t *buf, size_t len, braid_memcache_result_t *res,
                          size_t *consumed) {
  memset(res, 0, sizeof(*res));
  res->server = -1;
  res->ttl_s = -1;
  *consumed = 0;
  const uint8_t *nl = len ? memchr(buf, '\n', len) : NULL;
  if (!nl)
    return BRAID_EPROTO;
  size_t end = (size_t)(nl - buf);
  if (end == 0 || buf[end - 1] != '\r')
    return BRAID_EPROTO;
  size_t n = end - 1, flags_off = 0;
  uint64_t vlen = 0;
  int c = classify_line(buf, n, &flags_off, &vlen);
  if (c == BRAID_EPROTO)
    return BRAID_EPROTO;
  if (c == -2) {
    *consumed = end + 1;
    return 0;
  }
  if (c == -1) {
    res->status = BRAID_EREMOTE;
    res->value = buf;
    res->value_len = n;
    *consumed = end + 1;
    return 1;
  }
  res->code = (braid_memcache_code_t)c;
  if (buf[0] != 'M' && parse_flags(buf + flags_off, n - flags_off, res))
    return BRAID_EPROTO;
  size_t off = end + 1;
  if (c == (int)BRAID_MEMCACHE_VA) {
    if (vlen > len - off || len - off - vlen < 2)
      return BRAID_EPROTO;
    if (buf[off + vlen] != '\r' || buf[off + vlen + 1] != '\n')
      return BRAID_EPROTO;
    res->value = buf + off;
    res->value_len = (size_t)vlen;
    off += (size_t)vlen + 2;
  }
  *consumed = off;
  return 1;
}

/* ---- the client ------------------------------------------------------------------------ */

typedef struct mc_server_s {
  braid_memcache_t *mc;
  int index;
  char *host;
  int port;
  unsigned weight;
  char name[300]; /* "host:port", the rendezvous node name */
  size_t name_len;
  braid_pool_t *pool;
  int dead;
  unsigned failures;
  uv_timer_t probe_timer;
  int probe_inflight;
  braid_memcache_server_stats_t st;
} mc_server_t;

typedef struct ketama_point_s {
  uint32_t value;
  uint32_t server;
} ketama_point_t;

struct braid_memcache_s {
  braid_loop_t *loop;
  braid_memcache_opts_t o;
  void *data;
  mc_server_t *servers[BRAID_MEMCACHE_MAX_SERVERS];
  unsigned nservers;
  ketama_point_t *ring;
  size_t nring;
  int closing;
  unsigned closes_pending; /* pools and timers still closing */
  braid_memcache_close_cb close_cb;
  void *close_arg;
  braid_memcache_stats_t st;
};

void braid_memcache_opts_init(braid_memcache_opts_t *o) {
  if (!o)
    return;
  memset(o, 0, sizeof(*o));
  o->distribution = BRAID_MEMCACHE_RENDEZVOUS;
  braid_pool_opts_init(&o->pool);
  o->pool.max_per_endpoint = 4;
  o->pool.client.connect_timeout_ms = 1000;
  o->pool.client.retries = 0;
  o->pool.acquire_timeout_ms = 1000;
  o->pool.eject_base_ms = 250;
  o->pool.eject_max_ms = 1000;
  o->timeout_ms = 1000;
  o->dead_after_failures = 3;
  o->dead_retry_ms = 2000;
  o->max_item_bytes = 1024 * 1024;
  o->max_reply_bytes = (size_t)64 * 1024 * 1024;
}

/* The pool options braid actually uses: the user's, with the meta framer. */
static void effective_pool_opts(const braid_memcache_opts_t *o, braid_pool_opts_t *po) {
  *po = o->pool;
  po->rpc.mode = BRAID_RPC_ORDERED;
  size_t max = o->max_reply_bytes;
  if (max < 1 || max > BRAID_FRAMER_MAX_CEILING)
    max = BRAID_FRAMER_DEFAULT_MAX; /* refused by the check anyway */
  braid_framer_init_custom(&po->rpc.framer, braid__mc_frame, NULL, max);
}

int braid_memcache_opts_validate(const braid_memcache_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (o->distribution != BRAID_MEMCACHE_RENDEZVOUS && o->distribution != BRAID_MEMCACHE_KETAMA &&
      o->distribution != BRAID_MEMCACHE_KETAMA_WEIGHTED)
    return braid__opts_fail(err, "distribution", "%d is not a braid_memcache_distribution_t",
                            (int)o->distribution);
  if (o->timeout_ms < 1 || o->timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "timeout_ms", "%" PRIu64 " is outside 1..2^31", o->timeout_ms);
  if (o->dead_after_failures < 1 || o->dead_after_failures > 1000)
    return braid__opts_fail(err, "dead_after_failures", "%u is outside 1..1000",
                            o->dead_after_failures);
  if (o->dead_retry_ms < 1 || o->dead_retry_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "dead_retry_ms", "%" PRIu64 " is outside 1..2^31",
                            o->dead_retry_ms);
  if (o->max_item_bytes < 1024 || o->max_item_bytes > ((size_t)1 << 30))
    return braid__opts_fail(err, "max_item_bytes", "%zu is outside 1024..2^30",
                            o->max_item_bytes);
  if (o->max_reply_bytes < 1024 || o->max_reply_bytes > BRAID_FRAMER_MAX_CEILING)
    return braid__opts_fail(err, "max_reply_bytes", "%zu is outside 1024..2^30",
                            o->max_reply_bytes);
  braid_pool_opts_t po;
  effective_pool_opts(o, &po);
  return braid__opts_nest(err, "pool", braid_pool_opts_validate(&po, err));
}

int braid_memcache_new(braid_memcache_t **out, braid_loop_t *loop,
                       const braid_memcache_opts_t *o) {
  braid_memcache_opts_t defaults;
  if (!o) {
    braid_memcache_opts_init(&defaults);
    o = &defaults;
  }
  if (!out || !loop)
    return BRAID_EINVAL;
  braid_opts_error_t err;
  if (braid_memcache_opts_validate(o, &err)) {
    braid__opts_log(loop, "braid_memcache_new", &err);
    return BRAID_EINVAL;
  }
  braid_memcache_t *mc = braid__calloc(1, sizeof(*mc));
  if (!mc)
    return BRAID_ENOMEM;
  mc->loop = loop;
  mc->o = *o;
  *out = mc;
  return 0;
}

void braid_memcache_set_data(braid_memcache_t *mc, void *data) {
  if (mc)
    mc->data = data;
}

void *braid_memcache_get_data(const braid_memcache_t *mc) {
  return mc ? mc->data : NULL;
}

static int ketama_cmp(const void *a, const void *b) {
  const ketama_point_t *x = a, *y = b;
  return x->value < y->value ? -1 : x->value > y->value ? 1 : 0;
}

/* Builds the continuum as libmemcached's update_continuum() does with every server live. */
static int ketama_build(braid_memcache_t *mc) {
  int weighted = mc->o.distribution == BRAID_MEMCACHE_KETAMA_WEIGHTED;
  uint64_t total_weight = 0;
  for (unsigned i = 0; i < mc->nservers; i++)
    total_weight += mc->servers[i]->weight;
  size_t cap = 0;
  uint32_t pps[BRAID_MEMCACHE_MAX_SERVERS];
  for (unsigned i = 0; i < mc->nservers; i++) {
    if (weighted) {
      float pct = (float)mc->servers[i]->weight / (float)total_weight;
      pps[i] = (uint32_t)((floor((float)(pct * 160 / 4 * (float)mc->nservers + 0.0000000001))) *
                          4);
    } else {
      pps[i] = 100;
    }
    cap += pps[i];
  }
  ketama_point_t *ring = braid__calloc(cap ? cap : 1, sizeof(*ring));
  if (!ring)
    return BRAID_ENOMEM;
  size_t n = 0;
  for (unsigned i = 0; i < mc->nservers; i++) {
    const mc_server_t *s = mc->servers[i];
    uint32_t per_hash = weighted ? 4 : 1;
    for (uint32_t p = 1; p <= pps[i] / per_hash; p++) {
      char host[400];
      int hl = s->port == 11211 ? snprintf(host, sizeof(host), "%s-%u", s->host, p - 1)
                                : snprintf(host, sizeof(host), "%s:%u-%u", s->host,
                                           (unsigned)s->port, p - 1);
      uint8_t d[16];
      braid__mc_md5(host, (size_t)hl, d);
      for (uint32_t x = 0; x < per_hash; x++) {
        ring[n].value = ((uint32_t)d[3 + x * 4] << 24) | ((uint32_t)d[2 + x * 4] << 16) |
                        ((uint32_t)d[1 + x * 4] << 8) | d[x * 4];
        ring[n].server = i;
        n++;
      }
    }
  }
  qsort(ring, n, sizeof(*ring), ketama_cmp);
  braid__free(mc->ring);
  mc->ring = ring;
  mc->nring = n;
  return 0;
}

static void on_probe_timer_closed(uv_handle_t *h);

int braid_memcache_add_server(braid_memcache_t *mc, const char *host, int port, unsigned weight,
                              int *index) {
  if (!mc || !host || port < 1 || port > 65535 || weight < 1 || weight > 1000)
    return BRAID_EINVAL;
  size_t hl = strlen(host);
  if (hl == 0 || hl > 255)
    return BRAID_EINVAL;
  if (mc->closing)
    return BRAID_ECLOSED;
  if (mc->nservers >= BRAID_MEMCACHE_MAX_SERVERS)
    return BRAID_EINVAL;
  for (unsigned i = 0; i < mc->nservers; i++)
    if (mc->servers[i]->port == port && strcmp(mc->servers[i]->host, host) == 0)
      return BRAID_EINVAL;
  mc_server_t *s = braid__calloc(1, sizeof(*s));
  if (!s)
    return BRAID_ENOMEM;
  s->host = braid__malloc(hl + 1);
  if (!s->host) {
    braid__free(s);
    return BRAID_ENOMEM;
  }
  memcpy(s->host, host, hl + 1);
  s->mc = mc;
  s->port = port;
  s->weight = weight;
  s->index = (int)mc->nservers;
  s->name_len = (size_t)snprintf(s->name, sizeof(s->name), "%s:%d", host, port);
  s->st.port = port;
  braid_pool_opts_t po;
  effective_pool_opts(&mc->o, &po);
  int rc = braid_pool_new(&s->pool, mc->loop, &po);
  if (rc == 0) {
    rc = braid_pool_add_endpoint(s->pool, host, port);
    if (rc) {
      braid_pool_close(s->pool, NULL, NULL);
      s->pool = NULL;
    }
  }
  if (rc) {
    braid__free(s->host);
    braid__free(s);
    return rc;
  }
  uv_timer_init(braid_loop_uv(mc->loop), &s->probe_timer);
  s->probe_timer.data = s;
  uv_unref((uv_handle_t *)&s->probe_timer);
  mc->servers[mc->nservers++] = s;
  if (mc->o.distribution != BRAID_MEMCACHE_RENDEZVOUS && (rc = ketama_build(mc)) != 0) {
    /* The ring could not grow: take the server back out. */
    mc->nservers--;
    braid_pool_close(s->pool, NULL, NULL);
    s->pool = NULL;
    s->host[0] = 0;
    uv_close((uv_handle_t *)&s->probe_timer, on_probe_timer_closed);
    mc->closes_pending++;
    return rc;
  }
  if (index)
    *index = s->index;
  return 0;
}

/* The live server with the highest rendezvous score for key (pymemcache's get_node over the
 * nodes not removed), or -1. */
static int pick_rendezvous(const braid_memcache_t *mc, const uint8_t *key, size_t len) {
  int best = -1;
  uint32_t best_score = 0;
  for (unsigned i = 0; i < mc->nservers; i++) {
    const mc_server_t *s = mc->servers[i];
    if (s->dead)
      continue;
    mm3_t h = {0, 0, 0, 0};
    mm3_feed(&h, (const uint8_t *)s->name, s->name_len);
    mm3_feed(&h, (const uint8_t *)"-", 1);
    mm3_feed(&h, key, len);
    uint32_t score = mm3_final(&h);
    if (best < 0 || score > best_score ||
        (score == best_score && strcmp(s->name, mc->servers[best]->name) > 0)) {
      best = (int)i;
      best_score = score;
    }
  }
  return best;
}

static int pick_ketama(const braid_memcache_t *mc, const uint8_t *key, size_t len) {
  if (mc->nring == 0)
    return -1;
  uint8_t d[16];
  braid__mc_md5(key, len, d);
  uint32_t hash = ((uint32_t)d[3] << 24) | ((uint32_t)d[2] << 16) | ((uint32_t)d[1] << 8) | d[0];
  size_t lo = 0, hi = mc->nring;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (mc->ring[mid].value < hash)
      lo = mid + 1;
    else
      hi = mid;
  }
  /* The first point at or after the hash (wrapping); past a dead server's point, the next. */
  for (size_t step = 0; step < mc->nring; step++) {
    const ketama_point_t *p = &mc->ring[(lo + step) % mc->nring];
    if (!mc->servers[p->server]->dead)
      return (int)p->server;
  }
  return -1;
}

static int pick_server(const braid_memcache_t *mc, const uint8_t *key, size_t len) {
  return mc->o.distribution == BRAID_MEMCACHE_RENDEZVOUS ? pick_rendezvous(mc, key, len)
                                                         : pick_ketama(mc, key, len);
}

int braid_memcache_server_for_key(const braid_memcache_t *mc, const void *key, size_t key_len) {
  if (!mc || !key || key_len == 0 || mc->nservers == 0)
    return BRAID_EINVAL;
  int i = pick_server(mc, key, key_len);
  return i < 0 ? BRAID_EUNAVAILABLE : i;
}

/* ---- dead marking ---------------------------------------------------------------------- */

static void probe_send(mc_server_t *s);

static void on_probe_timer(uv_timer_t *t) {
  probe_send(t->data);
}

static void on_probe_reply(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r,
                           void *arg) {
  (void)rpc;
  (void)r;
  mc_server_t *s = arg;
  s->probe_inflight = 0;
  if (s->mc->closing || !s->dead)
    return;
  if (status == 0) {
    s->dead = 0;
    s->failures = 0;
    s->st.revivals++;
    s->mc->st.revivals++;
    braid__log(s->mc->loop, BRAID_LOG_INFO, "memcache: server %s is back", s->name);
  } else {
    uv_timer_start(&s->probe_timer, on_probe_timer, s->mc->o.dead_retry_ms, 0);
  }
}

static void probe_send(mc_server_t *s) {
  if (s->mc->closing || s->probe_inflight)
    return;
  if (braid_pool_call(s->pool, "mn\r\n", 4, 0, s->mc->o.timeout_ms, on_probe_reply, s) == 0)
    s->probe_inflight = 1;
  else
    uv_timer_start(&s->probe_timer, on_probe_timer, s->mc->o.dead_retry_ms, 0);
}

static void server_mark_dead(mc_server_t *s, int status) {
  if (s->dead || s->mc->closing)
    return;
  s->dead = 1;
  s->st.dead_marks++;
  s->mc->st.dead_marks++;
  braid__log(s->mc->loop, BRAID_LOG_WARN,
             "memcache: server %s marked dead after %u failures (last: %s)", s->name,
             s->failures, braid_err_name(status));
  uv_timer_start(&s->probe_timer, on_probe_timer, s->mc->o.dead_retry_ms, 0);
}

/* Counts a request's outcome against its server: failures in a row mark it dead. */
static void server_outcome(mc_server_t *s, int status) {
  if (status == BRAID_ECANCELED || s->mc->closing)
    return;
  if (status == 0) {
    s->failures = 0;
    return;
  }
  s->st.errors++;
  if (status == BRAID_ETIMEDOUT)
    s->st.timeouts++;
  if (status == BRAID_EPROTO || status == BRAID_ETOOBIG || status == BRAID_ETRUNCATED)
    s->mc->st.protocol_errors++;
  s->failures++;
  if (s->failures >= s->mc->o.dead_after_failures)
    server_mark_dead(s, status);
}

/* ---- encoding requests ----------------------------------------------------------------- */

typedef struct wbuf_s {
  uint8_t *p;
  size_t len, cap;
  int failed;
  uint8_t small[512];
} wbuf_t;

static void wb_init(wbuf_t *w) {
  w->p = w->small;
  w->len = 0;
  w->cap = sizeof(w->small);
  w->failed = 0;
}

static void wb_free(wbuf_t *w) {
  if (w->p != w->small)
    braid__free(w->p);
}

static void wb_put(wbuf_t *w, const void *d, size_t n) {
  if (w->failed)
    return;
  if (w->len + n > w->cap) {
    size_t cap = w->cap * 2;
    while (cap < w->len + n)
      cap *= 2;
    uint8_t *p = braid__malloc(cap);
    if (!p) {
      w->failed = 1;
      return;
    }
    memcpy(p, w->p, w->len);
    if (w->p != w->small)
      braid__free(w->p);
    w->p = p;
    w->cap = cap;
  }
  memcpy(w->p + w->len, d, n);
  w->len += n;
}

static void wb_str(wbuf_t *w, const char *s) {
  wb_put(w, s, strlen(s));
}

static void wb_tok(wbuf_t *w, char flag, int64_t v) {
  char t[32];
  int n = snprintf(t, sizeof(t), " %c%" PRId64, flag, v);
  wb_put(w, t, (size_t)n);
}

static void wb_key(wbuf_t *w, const wire_key_t *k) {
  wb_put(w, " ", 1);
  wb_put(w, k->text, k->len);
}

static int opaque_ok(const char *o) {
  size_t n = strlen(o);
  if (n < 1 || n > BRAID_MEMCACHE_OPAQUE_MAX)
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((uint8_t)o[i] < 33 || (uint8_t)o[i] > 126)
      return 0;
  return 1;
}

void braid_memcache_req_init(braid_memcache_req_t *r) {
  if (!r)
    return;
  memset(r, 0, sizeof(*r));
  r->cmd = BRAID_MEMCACHE_MG;
  r->mode = BRAID_MEMCACHE_SET;
  r->ttl_s = -1;
  r->compare_cas = -1;
  r->client_flags = -1;
  r->vivify_ttl_s = -1;
  r->recache_ttl_s = -1;
  r->delta = -1;
  r->initial = -1;
  r->server = -1;
}

/* Encodes req (then "mn") into w. Returns 0 or BRAID_EINVAL / BRAID_ETOOBIG. */
static int encode_req(const braid_memcache_t *mc, const braid_memcache_req_t *r, wbuf_t *w) {
  static const char *cmds[] = {"mg", "ms", "md", "ma", "mn"};
  if ((unsigned)r->cmd > BRAID_MEMCACHE_MN)
    return BRAID_EINVAL;
  if (r->opaque && !opaque_ok(r->opaque))
    return BRAID_EINVAL;
  if ((r->ttl_s < -1) || r->compare_cas < -1 || r->client_flags < -1 ||
      r->client_flags > (int64_t)UINT32_MAX || r->vivify_ttl_s < -1 || r->recache_ttl_s < -1 ||
      r->delta < -1 || r->initial < -1)
    return BRAID_EINVAL;
  wb_str(w, cmds[r->cmd]);
  if (r->cmd == BRAID_MEMCACHE_MN) {
    wb_str(w, "\r\n"); /* the no-op closes its own group */
    return w->failed ? BRAID_ENOMEM : 0;
  }
  wire_key_t k;
  wire_key(r->key, r->key_len, &k);
  wb_key(w, &k);
  if (r->cmd == BRAID_MEMCACHE_MS) {
    if (r->value_len > mc->o.max_item_bytes || r->value_len + r->key_len + 64 > mc->o.max_item_bytes)
      return BRAID_ETOOBIG;
    char t[32];
    int n = snprintf(t, sizeof(t), " %zu", r->value_len);
    wb_put(w, t, (size_t)n);
  }
  if (k.base64)
    wb_str(w, " b");
  /* Tokens that change the item first: memcached reports return flags (t, c, ...) as of
   * their place in the line, so a TTL set by T must come before the t that reports it. */
  if (r->ttl_s >= 0)
    wb_tok(w, 'T', r->ttl_s);
  if (r->compare_cas >= 0 && r->cmd != BRAID_MEMCACHE_MG)
    wb_tok(w, 'C', r->compare_cas);
  if (r->client_flags >= 0 && r->cmd == BRAID_MEMCACHE_MS)
    wb_tok(w, 'F', r->client_flags);
  if (r->vivify_ttl_s >= 0)
    wb_tok(w, 'N', r->vivify_ttl_s);
  if (r->recache_ttl_s >= 0 && r->cmd == BRAID_MEMCACHE_MG)
    wb_tok(w, 'R', r->recache_ttl_s);
  if (r->cmd == BRAID_MEMCACHE_MA) {
    if (r->delta >= 0)
      wb_tok(w, 'D', r->delta);
    if (r->initial >= 0)
      wb_tok(w, 'J', r->initial);
    if (r->mode == BRAID_MEMCACHE_DECR)
      wb_str(w, " MD");
    else if (r->mode != BRAID_MEMCACHE_INCR && r->mode != BRAID_MEMCACHE_SET)
      return BRAID_EINVAL;
  }
  if (r->cmd == BRAID_MEMCACHE_MS) {
    static const char *modes[] = {" MS", " ME", " MR", " MA", " MP"};
    if ((unsigned)r->mode > BRAID_MEMCACHE_PREPEND)
      return BRAID_EINVAL;
    if (r->mode != BRAID_MEMCACHE_SET)
      wb_str(w, modes[r->mode]);
  }
  unsigned f = r->flags;
  if (f & BRAID_MEMCACHE_F_VALUE)
    wb_str(w, " v");
  if (f & BRAID_MEMCACHE_F_RETURN_TTL)
    wb_str(w, " t");
  if (f & BRAID_MEMCACHE_F_RETURN_CAS)
    wb_str(w, " c");
  if (f & BRAID_MEMCACHE_F_RETURN_FLAGS)
    wb_str(w, " f");
  if (f & BRAID_MEMCACHE_F_RETURN_KEY)
    wb_str(w, " k");
  if (f & BRAID_MEMCACHE_F_QUIET)
    wb_str(w, " q");
  if (f & BRAID_MEMCACHE_F_INVALIDATE)
    wb_str(w, " I");
  if (f & BRAID_MEMCACHE_F_HIT)
    wb_str(w, " h");
  if (f & BRAID_MEMCACHE_F_LAST_ACCESS)
    wb_str(w, " l");
  if (f & BRAID_MEMCACHE_F_NO_BUMP)
    wb_str(w, " u");
  if (f & BRAID_MEMCACHE_F_RETURN_SIZE)
    wb_str(w, " s");
  if (r->opaque) {
    wb_str(w, " O");
    wb_str(w, r->opaque);
  }
  wb_str(w, "\r\n");
  if (r->cmd == BRAID_MEMCACHE_MS) {
    wb_put(w, r->value, r->value_len);
    wb_str(w, "\r\n");
  }
  wb_str(w, "mn\r\n");
  return w->failed ? BRAID_ENOMEM : 0;
}

/* ---- single requests ------------------------------------------------------------------- */

typedef struct mc_op_s {
  braid_memcache_t *mc;
  mc_server_t *srv;
  braid_memcache_cb cb;
  void *arg;
  braid_memcache_cmd_t cmd;
} mc_op_t;

static void on_single_reply(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r,
                            void *arg) {
  (void)rpc;
  mc_op_t *op = arg;
  braid_memcache_t *mc = op->mc;
  braid_memcache_result_t res;
  memset(&res, 0, sizeof(res));
  res.ttl_s = -1;
  res.server = op->srv->index;
  if (status == 0) {
    size_t used = 0;
    int rc = braid__mc_parse_reply(r->data, r->len, &res, &used);
    res.server = op->srv->index;
    if (rc == 0) {
      res.code = op->cmd == BRAID_MEMCACHE_MN ? BRAID_MEMCACHE_NOOP : BRAID_MEMCACHE_NONE;
    } else if (rc == 1) {
      /* exactly one reply, then the MN */
      braid_memcache_result_t end;
      size_t used2 = 0;
      if (braid__mc_parse_reply(r->data + used, r->len - used, &end, &used2) != 0 ||
          used + used2 != r->len)
        rc = BRAID_EPROTO;
      else if (res.status == BRAID_EREMOTE)
        status = BRAID_EREMOTE;
      else if (op->cmd == BRAID_MEMCACHE_MA && res.code == BRAID_MEMCACHE_VA &&
               parse_u64(res.value, res.value_len, &res.number))
        rc = BRAID_EPROTO;
    }
    if (rc < 0) {
      memset(&res, 0, sizeof(res));
      res.server = op->srv->index;
      status = BRAID_EPROTO;
    }
  }
  res.status = status;
  /* A server error line is an answer: the server is alive. */
  server_outcome(op->srv, status == BRAID_EREMOTE ? 0 : status);
  if (status < 0) {
    mc->st.errors++;
    if (status != BRAID_EREMOTE) {
      res.value = NULL;
      res.value_len = 0;
    }
  }
  op->cb(mc, status, &res, 1, op->arg);
  braid__free(op);
}

static int validate_key(const void *key, size_t len) {
  return key && len >= 1 && len <= MC_KEY_LEN_MAX ? 0 : BRAID_EINVAL;
}

int braid_memcache_request(braid_memcache_t *mc, const braid_memcache_req_t *req,
                           uint64_t timeout_ms, braid_memcache_cb cb, void *arg) {
  if (!mc || !req || !cb || timeout_ms > BRAID__DEADLINE_MAX_MS)
    return BRAID_EINVAL;
  if (mc->closing)
    return BRAID_ECLOSED;
  if (mc->nservers == 0)
    return BRAID_EINVAL;
  if (req->cmd != BRAID_MEMCACHE_MN && validate_key(req->key, req->key_len))
    return BRAID_EINVAL;
  if (req->cmd == BRAID_MEMCACHE_MS && req->value_len && !req->value)
    return BRAID_EINVAL;
  int si = req->server;
  if (si >= (int)mc->nservers || si < -1 || (req->cmd == BRAID_MEMCACHE_MN && si < 0))
    return BRAID_EINVAL;
  if (si < 0) {
    si = pick_server(mc, req->key, req->key_len);
    if (si < 0) {
      mc->st.unavailable++;
      return BRAID_EUNAVAILABLE;
    }
  }
  wbuf_t w;
  wb_init(&w);
  int rc = encode_req(mc, req, &w);
  if (rc) {
    wb_free(&w);
    return rc;
  }
  mc_op_t *op = braid__malloc(sizeof(*op));
  if (!op) {
    wb_free(&w);
    return BRAID_ENOMEM;
  }
  op->mc = mc;
  op->cb = cb;
  op->arg = arg;
  op->cmd = req->cmd;
  for (;;) {
    op->srv = mc->servers[si];
    rc = braid_pool_call(op->srv->pool, w.p, w.len, 0, timeout_ms ? timeout_ms : mc->o.timeout_ms,
                         on_single_reply, op);
    if (rc != BRAID_EUNAVAILABLE || req->server >= 0)
      break;
    /* The server's pool ejected it (its connects keep failing): it is dead to us too, and
     * the key goes to the next server, as it would after any failure that marks it. */
    server_mark_dead(op->srv, rc);
    si = pick_server(mc, req->key, req->key_len);
    if (si < 0) {
      mc->st.unavailable++;
      break;
    }
  }
  wb_free(&w);
  if (rc) {
    braid__free(op);
    return rc;
  }
  op->srv->st.requests++;
  mc->st.requests++;
  return 0;
}

int braid_memcache_get(braid_memcache_t *mc, const void *key, size_t key_len,
                       braid_memcache_cb cb, void *arg) {
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MG;
  r.key = key;
  r.key_len = key_len;
  r.flags = BRAID_MEMCACHE_F_VALUE | BRAID_MEMCACHE_F_RETURN_FLAGS | BRAID_MEMCACHE_F_RETURN_CAS;
  return braid_memcache_request(mc, &r, 0, cb, arg);
}

int braid_memcache_set(braid_memcache_t *mc, const void *key, size_t key_len, const void *value,
                       size_t value_len, uint32_t ttl_s, uint32_t client_flags,
                       braid_memcache_cb cb, void *arg) {
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = key;
  r.key_len = key_len;
  r.value = value;
  r.value_len = value_len;
  r.ttl_s = ttl_s;
  r.client_flags = client_flags;
  return braid_memcache_request(mc, &r, 0, cb, arg);
}

int braid_memcache_delete(braid_memcache_t *mc, const void *key, size_t key_len,
                          braid_memcache_cb cb, void *arg) {
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MD;
  r.key = key;
  r.key_len = key_len;
  return braid_memcache_request(mc, &r, 0, cb, arg);
}

/* ---- multi-key gets -------------------------------------------------------------------- */

typedef struct mc_multi_s {
  braid_memcache_t *mc;
  braid_memcache_cb cb;
  void *arg;
  size_t count;
  braid_memcache_result_t *res;
  uint8_t **bufs; /* copies of the group replies the results point into */
  size_t nbufs, groups;
  size_t pending;
} mc_multi_t;

typedef struct mc_group_s {
  mc_multi_t *m;
  mc_server_t *srv;
  size_t n;
  size_t idx[BRAID_MEMCACHE_MULTI_GROUP]; /* the keys' positions in the call */
} mc_group_t;

static void multi_finish(mc_multi_t *m) {
  braid_memcache_t *mc = m->mc;
  int status = 0;
  size_t failed = 0;
  for (size_t i = 0; i < m->count; i++)
    if (m->res[i].status < 0) {
      failed++;
      mc->st.errors++;
      if (m->res[i].status == BRAID_EUNAVAILABLE)
        mc->st.unavailable++;
    }
  if (m->count > 0 && failed == m->count)
    status = m->res[0].status;
  m->cb(mc, status, m->res, m->count, m->arg);
  for (size_t i = 0; i < m->nbufs; i++)
    braid__free(m->bufs[i]);
  braid__free(m->bufs);
  braid__free(m->res);
  braid__free(m);
}

static void group_fail(mc_group_t *g, int status) {
  for (size_t j = 0; j < g->n; j++) {
    braid_memcache_result_t *r = &g->m->res[g->idx[j]];
    memset(r, 0, sizeof(*r));
    r->ttl_s = -1;
    r->server = g->srv->index;
    r->status = status;
  }
}

/* Matches a group's replies to its keys by opaque. Returns 0 or BRAID_EPROTO. */
static int group_parse(mc_group_t *g, const uint8_t *p, size_t len) {
  uint8_t seen[BRAID_MEMCACHE_MULTI_GROUP] = {0};
  size_t off = 0;
  int remote = 0;
  for (;;) {
    braid_memcache_result_t r;
    size_t used = 0;
    int rc = braid__mc_parse_reply(p + off, len - off, &r, &used);
    if (rc < 0)
      return BRAID_EPROTO;
    off += used;
    if (rc == 0)
      return off == len ? (remote ? 1 : 0) : BRAID_EPROTO;
    if (r.status == BRAID_EREMOTE) {
      remote = 1; /* untagged: it belongs to one of the keys not answered */
      continue;
    }
    uint64_t j;
    if (!r.opaque || parse_u64(r.opaque, r.opaque_len, &j) || j >= g->n || seen[j])
      return BRAID_EPROTO;
    if (r.code != BRAID_MEMCACHE_VA && r.code != BRAID_MEMCACHE_HD && r.code != BRAID_MEMCACHE_EN)
      return BRAID_EPROTO;
    seen[j] = 1;
    r.server = g->srv->index;
    r.status = 0;
    g->m->res[g->idx[j]] = r;
  }
}

static void on_group_reply(braid_rpc_t *rpc, int status, const braid_rpc_result_t *r,
                           void *arg) {
  (void)rpc;
  mc_group_t *g = arg;
  mc_multi_t *m = g->m;
  if (status == 0) {
    uint8_t *copy = braid__malloc(r->len ? r->len : 1);
    if (!copy) {
      status = BRAID_ENOMEM;
    } else {
      memcpy(copy, r->data, r->len);
      m->bufs[m->nbufs++] = copy;
      int rc = group_parse(g, copy, r->len);
      if (rc < 0) {
        status = BRAID_EPROTO;
      } else if (rc == 1) {
        /* keys left unanswered next to a server error line: that error is theirs */
        for (size_t j = 0; j < g->n; j++) {
          braid_memcache_result_t *x = &m->res[g->idx[j]];
          if (x->code == BRAID_MEMCACHE_NONE && x->status == 0)
            x->status = BRAID_EREMOTE;
        }
      }
    }
  }
  server_outcome(g->srv, status);
  if (status < 0)
    group_fail(g, status);
  braid__free(g);
  if (--m->pending == 0)
    multi_finish(m);
}

static void encode_multi_key(wbuf_t *w, const uint8_t *key, size_t len, size_t j) {
  wire_key_t k;
  wire_key(key, len, &k);
  wb_str(w, "mg");
  wb_key(w, &k);
  if (k.base64)
    wb_str(w, " b");
  wb_str(w, " v f c q");
  wb_tok(w, 'O', (int64_t)j);
  wb_str(w, "\r\n");
}

int braid_memcache_get_multi(braid_memcache_t *mc, const void *const *keys,
                             const size_t *key_lens, size_t count, uint64_t timeout_ms,
                             braid_memcache_cb cb, void *arg) {
  if (!mc || !keys || !key_lens || !cb || count < 1 || count > 1000000 ||
      timeout_ms > BRAID__DEADLINE_MAX_MS)
    return BRAID_EINVAL;
  if (mc->closing)
    return BRAID_ECLOSED;
  if (mc->nservers == 0)
    return BRAID_EINVAL;
  for (size_t i = 0; i < count; i++)
    if (validate_key(keys[i], key_lens[i]))
      return BRAID_EINVAL;
  mc_multi_t *m = braid__calloc(1, sizeof(*m));
  int *where = braid__malloc(count * sizeof(int));
  if (m)
    m->res = braid__calloc(count, sizeof(*m->res));
  if (!m || !where || !m->res) {
    if (m)
      braid__free(m->res);
    braid__free(m);
    braid__free(where);
    return BRAID_ENOMEM;
  }
  m->mc = mc;
  m->cb = cb;
  m->arg = arg;
  m->count = count;
  size_t live = 0;
  for (size_t i = 0; i < count; i++) {
    where[i] = pick_server(mc, keys[i], key_lens[i]);
    m->res[i].ttl_s = -1;
    m->res[i].server = where[i];
    if (where[i] < 0)
      m->res[i].status = BRAID_EUNAVAILABLE;
    else
      live++;
  }
  if (live == 0) {
    braid__free(where);
    braid__free(m->res);
    braid__free(m);
    mc->st.unavailable++;
    return BRAID_EUNAVAILABLE;
  }
  /* Groups: per server, in key order, at most BRAID_MEMCACHE_MULTI_GROUP keys each. */
  size_t max_groups = live / BRAID_MEMCACHE_MULTI_GROUP + mc->nservers + 1;
  m->bufs = braid__calloc(max_groups, sizeof(uint8_t *));
  if (!m->bufs) {
    braid__free(where);
    braid__free(m->res);
    braid__free(m);
    return BRAID_ENOMEM;
  }
  m->pending = 1; /* held by this call until every group is sent */
  int first_err = 0;
  size_t sent = 0;
  uint64_t tmo = timeout_ms ? timeout_ms : mc->o.timeout_ms;
  for (unsigned s = 0; s < mc->nservers; s++) {
    size_t i = 0;
    while (i < count) {
      mc_group_t *g = braid__malloc(sizeof(*g));
      if (!g) {
        first_err = first_err ? first_err : BRAID_ENOMEM;
        for (; i < count; i++)
          if (where[i] == (int)s)
            m->res[i].status = BRAID_ENOMEM;
        break;
      }
      g->m = m;
      g->srv = mc->servers[s];
      g->n = 0;
      wbuf_t w;
      wb_init(&w);
      for (; i < count && g->n < BRAID_MEMCACHE_MULTI_GROUP; i++) {
        if (where[i] != (int)s)
          continue;
        encode_multi_key(&w, keys[i], key_lens[i], g->n);
        g->idx[g->n++] = i;
      }
      if (g->n == 0) {
        braid__free(g);
        wb_free(&w);
        break;
      }
      wb_str(&w, "mn\r\n");
      int rc = w.failed ? BRAID_ENOMEM
                        : braid_pool_call(g->srv->pool, w.p, w.len, 0, tmo, on_group_reply, g);
      wb_free(&w);
      if (rc) {
        first_err = first_err ? first_err : rc;
        group_fail(g, rc);
        braid__free(g);
        continue;
      }
      g->srv->st.requests++;
      m->pending++;
      m->groups++;
      sent++;
    }
  }
  braid__free(where);
  if (sent == 0) {
    braid__free(m->bufs);
    braid__free(m->res);
    braid__free(m);
    return first_err ? first_err : BRAID_EUNAVAILABLE;
  }
  mc->st.requests++;
  mc->st.keys += count;
  m->pending--; /* groups complete later, never from inside this call */
  return 0;
}

/* ---- stats and close ------------------------------------------------------------------- */

int braid_memcache_stats(const braid_memcache_t *mc, braid_memcache_stats_t *out) {
  if (!mc || !out)
    return BRAID_EINVAL;
  *out = mc->st;
  return 0;
}

int braid_memcache_server_stats(const braid_memcache_t *mc, unsigned index,
                                braid_memcache_server_stats_t *out) {
  if (!mc || !out || index >= mc->nservers)
    return BRAID_EINVAL;
  const mc_server_t *s = mc->servers[index];
  *out = s->st;
  out->dead = s->dead;
  out->consecutive_failures = s->failures;
  return 0;
}

static void close_step(braid_memcache_t *mc) {
  if (--mc->closes_pending > 0 || !mc->closing)
    return;
  for (unsigned i = 0; i < mc->nservers; i++) {
    braid__free(mc->servers[i]->host);
    braid__free(mc->servers[i]);
  }
  braid__free(mc->ring);
  if (mc->close_cb)
    mc->close_cb(mc, 0, mc->close_arg);
  braid__free(mc);
}

static void on_probe_timer_closed(uv_handle_t *h) {
  mc_server_t *s = h->data;
  braid_memcache_t *mc = s->mc;
  if (s->host[0] == 0 && s->pool == NULL) {
    /* a server taken back out by add_server: freed alone */
    braid__free(s->host);
    braid__free(s);
    mc->closes_pending--;
    return;
  }
  close_step(mc);
}

static void on_pool_closed(braid_pool_t *pool, int status, void *arg) {
  (void)pool;
  (void)status;
  close_step(arg);
}

static void close_post(void *arg) {
  close_step(arg);
}

int braid_memcache_close(braid_memcache_t *mc, braid_memcache_close_cb cb, void *arg) {
  if (!mc)
    return BRAID_EINVAL;
  if (mc->closing)
    return BRAID_ECLOSED;
  mc->closing = 1;
  mc->close_cb = cb;
  mc->close_arg = arg;
  /* One count for this call, so nothing completes the close from inside it. */
  mc->closes_pending++;
  for (unsigned i = 0; i < mc->nservers; i++) {
    mc_server_t *s = mc->servers[i];
    mc->closes_pending += 2;
    uv_close((uv_handle_t *)&s->probe_timer, on_probe_timer_closed);
    if (braid_pool_close(s->pool, on_pool_closed, mc) != 0)
      mc->closes_pending--;
  }
  /* The last close callback may come only from the loop, so this drops our count only. */
  mc->closes_pending--;
  if (mc->closes_pending == 0) {
    /* no servers: finish from the loop (no callback from inside this call) */
    mc->closes_pending = 1;
    int rc = braid_loop_post(mc->loop, close_post, mc);
    if (rc) {
      mc->closing = 0;
      return rc;
    }
  }
  return 0;
}

/* ---- the two-tier memo ----------------------------------------------------------------- */

/* Client flags of the items the memo stores (values stored by anyone else have none of
 * these and are treated as placeholders, never as values). */
#define MEMO_F_VALUE 0x4000u    /* a value stored by a braid memo */
#define MEMO_F_GZIP 0x2000u     /* ... gzip-compressed */
#define MEMO_F_NEGATIVE 0x1000u /* ... a failed load: the value is the error code, decimal */

typedef struct memo_call_s {
  braid_memcache_memo_t *memo;
  braid_memcache_memo_cb cb;
  void *arg;
  struct memo_call_s *next;
} memo_call_t;

typedef struct memo_job_s memo_job_t;

struct braid_memcache_load_s {
  memo_job_t *job;
};

struct memo_job_s {
  braid_memcache_memo_t *memo;
  braid__node_t node;
  braid_cache_load_t *l1load; /* NULL once L1 got its answer */
  braid_memcache_loader_t loader;
  uv_timer_t timer;
  uint64_t deadline_ms, delay_ms;
  int64_t lease_cas;  /* the placeholder's CAS when this process won it, else -1 */
  int store;          /* store the computed value in memcached */
  int waiting;        /* counted in stats.waits already */
  int computing;      /* the loader runs */
  int ended;
  int work_status;
  braid_blob_t *work_value;
  braid_memcache_load_t uload;
  size_t key_len;
  uint8_t key[];
};

struct braid_memcache_memo_s {
  braid_memcache_t *mc;
  braid_loop_t *loop;
  braid_cache_t *l1;
  braid_memcache_memo_opts_t o;
  void *data;
  braid_gzip_t *gz;
  braid__node_t jobs;
  unsigned njobs;   /* jobs not freed yet (their timers close asynchronously) */
  unsigned inflight; /* fire-and-forget stores and deletes */
  int closing, l1_closed;
  braid_memcache_memo_close_cb close_cb;
  void *close_arg;
  memo_call_t *free_calls;
  unsigned nfree_calls;
  braid_memcache_memo_stats_t st;
};

void braid_memcache_memo_opts_init(braid_memcache_memo_opts_t *o) {
  if (!o)
    return;
  memset(o, 0, sizeof(*o));
  braid_cache_opts_init(&o->l1);
  o->l1.default_ttl_ms = 1000;
  o->ttl_s = 60;
  o->stale_s = 0;
  o->lease_s = 10;
  o->wait_timeout_ms = 15000;
  o->poll_initial_ms = 5;
  o->poll_max_ms = 200;
  o->gzip_min_bytes = 0;
  o->negative_ttl_s = 0;
  o->max_value_bytes = (size_t)16 * 1024 * 1024;
}

int braid_memcache_memo_opts_validate(const braid_memcache_memo_opts_t *o,
                                      braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  int rc = braid__opts_nest(err, "l1", braid_cache_opts_validate(&o->l1, err));
  if (rc)
    return rc;
  if (o->l1.stale_ms != 0)
    return braid__opts_fail(err, "l1.stale_ms",
                            "%" PRIu64 " must be 0: the memo does stale-while-revalidate in "
                            "memcached (stale_s)", o->l1.stale_ms);
  if (o->ttl_s < 1 || o->ttl_s > 2592000)
    return braid__opts_fail(err, "ttl_s", "%u is outside 1..2592000", o->ttl_s);
  if (o->stale_s > 2592000)
    return braid__opts_fail(err, "stale_s", "%u exceeds 2592000", o->stale_s);
  if (o->lease_s < 1 || o->lease_s > 3600)
    return braid__opts_fail(err, "lease_s", "%u is outside 1..3600", o->lease_s);
  if (o->wait_timeout_ms < 1 || o->wait_timeout_ms > BRAID__MS_MAX)
    return braid__opts_fail(err, "wait_timeout_ms", "%" PRIu64 " is outside 1..2^31",
                            o->wait_timeout_ms);
  if (o->poll_max_ms < 1 || o->poll_max_ms > o->wait_timeout_ms)
    return braid__opts_fail(err, "poll_max_ms", "%" PRIu64 " is outside 1..wait_timeout_ms (%"
                            PRIu64 ")", o->poll_max_ms, o->wait_timeout_ms);
  if (o->poll_initial_ms < 1 || o->poll_initial_ms > o->poll_max_ms)
    return braid__opts_fail(err, "poll_initial_ms", "%" PRIu64 " is outside 1..poll_max_ms (%"
                            PRIu64 ")", o->poll_initial_ms, o->poll_max_ms);
  if (o->gzip_min_bytes != 0 && (o->gzip_min_bytes < 64 || o->gzip_min_bytes > ((size_t)1 << 30)))
    return braid__opts_fail(err, "gzip_min_bytes", "%zu is outside 0 or 64..2^30",
                            o->gzip_min_bytes);
  if (o->negative_ttl_s > 86400)
    return braid__opts_fail(err, "negative_ttl_s", "%u exceeds 86400", o->negative_ttl_s);
  if (o->max_value_bytes < 1 || o->max_value_bytes > ((size_t)1 << 30))
    return braid__opts_fail(err, "max_value_bytes", "%zu is outside 1..2^30", o->max_value_bytes);
  return 0;
}

int braid_memcache_memo_new(braid_memcache_memo_t **out, braid_memcache_t *mc,
                            const braid_memcache_memo_opts_t *o) {
  braid_memcache_memo_opts_t defaults;
  if (!o) {
    braid_memcache_memo_opts_init(&defaults);
    o = &defaults;
  }
  if (!out || !mc)
    return BRAID_EINVAL;
  braid_opts_error_t err;
  if (braid_memcache_memo_opts_validate(o, &err)) {
    braid__opts_log(mc->loop, "braid_memcache_memo_new", &err);
    return BRAID_EINVAL;
  }
  if (mc->closing)
    return BRAID_ECLOSED;
  braid_memcache_memo_t *m = braid__calloc(1, sizeof(*m));
  if (!m)
    return BRAID_ENOMEM;
  m->mc = mc;
  m->loop = mc->loop;
  m->o = *o;
  braid__list_init(&m->jobs);
  braid_gzip_opts_t go;
  braid_gzip_opts_init(&go);
  go.level = 1;
  go.min_size_bytes = 0;
  go.max_output_bytes = o->max_value_bytes;
  go.max_ratio = 0; /* the output cap bounds the work; repetitive values compress far */
  int rc = braid_gzip_new(&m->gz, &go);
  if (rc == 0)
    rc = braid_cache_new(&m->l1, mc->loop, &o->l1);
  if (rc) {
    braid_gzip_free(m->gz);
    braid__free(m);
    return rc;
  }
  *out = m;
  return 0;
}

void braid_memcache_memo_set_data(braid_memcache_memo_t *memo, void *data) {
  if (memo)
    memo->data = data;
}

void *braid_memcache_memo_get_data(const braid_memcache_memo_t *memo) {
  return memo ? memo->data : NULL;
}

int braid_memcache_memo_stats(const braid_memcache_memo_t *memo,
                              braid_memcache_memo_stats_t *out) {
  if (!memo || !out)
    return BRAID_EINVAL;
  *out = memo->st;
  return 0;
}

static void memo_maybe_closed(braid_memcache_memo_t *m) {
  if (!m->closing || !m->l1_closed || m->njobs > 0 || m->inflight > 0)
    return;
  while (m->free_calls) {
    memo_call_t *c = m->free_calls;
    m->free_calls = c->next;
    braid__free(c);
  }
  braid_gzip_free(m->gz);
  if (m->close_cb)
    m->close_cb(m, 0, m->close_arg);
  braid__free(m);
}

/* -- jobs: one per L1 load (a key missing in this process) -- */

static void on_job_timer_closed(uv_handle_t *h) {
  memo_job_t *job = h->data;
  braid_memcache_memo_t *m = job->memo;
  braid__free(job);
  m->njobs--;
  memo_maybe_closed(m);
}

/* Answers L1 (if not yet) with status/value and ends the job. value's reference is taken. */
static void job_end(memo_job_t *job, int status, braid_blob_t *value) {
  if (job->ended) {
    if (value)
      braid_blob_unref(value);
    return;
  }
  job->ended = 1;
  if (job->l1load) {
    braid_cache_load_t *l = job->l1load;
    job->l1load = NULL;
    if (status == 0 && !value)
      status = BRAID_EINVAL;
    braid_cache_load_done(l, status, status == 0 ? value : NULL);
    if (status != 0 && value)
      braid_blob_unref(value);
  } else if (value) {
    braid_blob_unref(value);
  }
  braid__list_remove(&job->node);
  uv_timer_stop(&job->timer);
  uv_close((uv_handle_t *)&job->timer, on_job_timer_closed);
}

/* Gives L1 its answer now but keeps the job (a background refresh follows). */
static void job_answer(memo_job_t *job, int status, braid_blob_t *value) {
  braid_cache_load_t *l = job->l1load;
  job->l1load = NULL;
  if (l)
    braid_cache_load_done(l, status, value);
  else if (value)
    braid_blob_unref(value);
}

static void job_fetch(memo_job_t *job);

static void on_store_done(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                          size_t count, void *arg) {
  (void)mc;
  (void)res;
  (void)count;
  braid_memcache_memo_t *m = arg;
  m->inflight--;
  if (status == 0)
    m->st.stores++;
  else
    m->st.l2_errors++;
  memo_maybe_closed(m);
}

static void on_release_done(braid_memcache_t *mc, int status,
                            const braid_memcache_result_t *res, size_t count, void *arg) {
  (void)mc;
  (void)res;
  (void)count;
  (void)status;
  braid_memcache_memo_t *m = arg;
  m->inflight--;
  memo_maybe_closed(m);
}

/* Drops this process's lease (the placeholder) so another process may win at once. */
static void job_release_lease(memo_job_t *job) {
  braid_memcache_memo_t *m = job->memo;
  if (job->lease_cas < 0 || m->mc->closing)
    return;
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MD;
  r.key = job->key;
  r.key_len = job->key_len;
  r.compare_cas = job->lease_cas;
  if (braid_memcache_request(m->mc, &r, 0, on_release_done, m) == 0)
    m->inflight++;
}

static void job_store(memo_job_t *job, const void *data, size_t len, uint32_t flags,
                      uint32_t ttl_s) {
  braid_memcache_memo_t *m = job->memo;
  if (m->mc->closing)
    return;
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MS;
  r.key = job->key;
  r.key_len = job->key_len;
  r.value = data;
  r.value_len = len;
  r.ttl_s = ttl_s;
  r.client_flags = flags;
  int rc = braid_memcache_request(m->mc, &r, 0, on_store_done, m);
  if (rc == 0) {
    m->inflight++;
  } else if (rc == BRAID_ETOOBIG) {
    m->st.too_big++;
    job_release_lease(job);
  } else {
    m->st.l2_errors++;
  }
}

/* The loader finished (status, value: a reference passed to us). */
static void job_loaded(memo_job_t *job, int status, braid_blob_t *value) {
  braid_memcache_memo_t *m = job->memo;
  job->computing = 0;
  if (status == 0 && !value)
    status = BRAID_EINVAL;
  if (status != 0 && value) {
    braid_blob_unref(value);
    value = NULL;
  }
  if (status == 0 && braid_blob_len(value) > m->o.max_value_bytes) {
    braid_blob_unref(value);
    value = NULL;
    status = BRAID_ETOOBIG;
  }
  if (m->closing) {
    job_end(job, BRAID_ECANCELED, value);
    return;
  }
  if (job->store) {
    uint32_t ttl = m->o.ttl_s + m->o.stale_s;
    if (status == 0) {
      const uint8_t *d = braid_blob_data(value);
      size_t n = braid_blob_len(value);
      void *z = NULL;
      size_t zn = 0;
      if (m->o.gzip_min_bytes && n >= m->o.gzip_min_bytes &&
          braid_gzip_compress_alloc(m->gz, d, n, &z, &zn) == 0 && zn < n) {
        job_store(job, z, zn, MEMO_F_VALUE | MEMO_F_GZIP, ttl);
      } else {
        job_store(job, d, n, MEMO_F_VALUE, ttl);
      }
      braid_gzip_buf_free(z);
    } else if (m->o.negative_ttl_s && status != BRAID_ECANCELED) {
      char t[24];
      int tn = snprintf(t, sizeof(t), "%d", status);
      job_store(job, t, (size_t)tn, MEMO_F_VALUE | MEMO_F_NEGATIVE, m->o.negative_ttl_s);
    } else {
      job_release_lease(job);
    }
  }
  if (!job->l1load && status == 0) {
    /* a background refresh: L1 was answered with the stale value */
    braid_cache_put_blob(m->l1, job->key, job->key_len, value, 0);
  }
  job_end(job, status, value);
}

static void job_work(void *arg) {
  memo_job_t *job = arg;
  job->work_value = NULL;
  job->work_status =
      job->loader.compute(job->key, job->key_len, &job->work_value, job->loader.arg);
}

static void job_work_done(braid_loop_t *loop, int status, void *arg) {
  (void)loop;
  memo_job_t *job = arg;
  if (status == 0)
    status = job->work_status;
  job_loaded(job, status, job->work_value);
}

int braid_memcache_memo_load_done(braid_memcache_load_t *load, int status, braid_blob_t *value) {
  if (!load || !load->job)
    return BRAID_EINVAL;
  memo_job_t *job = load->job;
  load->job = NULL;
  if (status == 0 && !value) {
    job_loaded(job, BRAID_EINVAL, NULL);
    return BRAID_EINVAL;
  }
  job_loaded(job, status, value);
  return 0;
}

/* Runs this process's loader for the job (store: put the result in memcached). */
static void job_compute(memo_job_t *job, int store) {
  braid_memcache_memo_t *m = job->memo;
  job->store = store;
  job->computing = 1;
  m->st.loads++;
  switch (job->loader.mode) {
  case BRAID_CACHE_LOAD_SYNC: {
    braid_blob_t *v = NULL;
    int rc = job->loader.compute(job->key, job->key_len, &v, job->loader.arg);
    job_loaded(job, rc, v);
    return;
  }
  case BRAID_CACHE_LOAD_WORK: {
    int rc = braid_work(NULL, m->loop, job_work, job_work_done, job);
    if (rc)
      job_loaded(job, rc, NULL);
    return;
  }
  case BRAID_CACHE_LOAD_ASYNC:
  default:
    job->uload.job = job;
    job->loader.start(&job->uload, job->key, job->key_len, job->loader.arg);
    return;
  }
}

/* Decodes a memo item into a value or an error. Returns 0 (*value set), the stored error
 * (negative caching), or 1 when the item is not usable (corrupt: recompute). */
static int memo_decode(braid_memcache_memo_t *m, const braid_memcache_result_t *res,
                       braid_blob_t **value) {
  *value = NULL;
  if (res->client_flags & MEMO_F_NEGATIVE) {
    int64_t code;
    if (parse_i64(res->value, res->value_len, &code) || code >= 0 || code < INT32_MIN)
      return 1;
    m->st.negative_hits++;
    return (int)code;
  }
  if (res->client_flags & MEMO_F_GZIP) {
    void *out = NULL;
    size_t n = 0;
    if (braid_gzip_decompress(m->gz, res->value, res->value_len, &out, &n) != 0)
      return 1;
    int rc = braid_blob_copy(value, out, n);
    braid_gzip_buf_free(out);
    return rc ? rc : 0;
  }
  if (res->value_len > m->o.max_value_bytes)
    return 1;
  return braid_blob_copy(value, res->value, res->value_len);
}

static void on_job_timer(uv_timer_t *t) {
  memo_job_t *job = t->data;
  job->memo->st.polls++;
  job_fetch(job);
}

static void job_wait(memo_job_t *job) {
  braid_memcache_memo_t *m = job->memo;
  if (!job->waiting) {
    job->waiting = 1;
    m->st.waits++;
  }
  uint64_t now = braid_loop_now_ms(m->loop);
  if (now >= job->deadline_ms) {
    job_end(job, BRAID_ETIMEDOUT, NULL);
    return;
  }
  uint64_t d = job->delay_ms;
  if (now + d > job->deadline_ms)
    d = job->deadline_ms - now;
  job->delay_ms = job->delay_ms * 2 > m->o.poll_max_ms ? m->o.poll_max_ms : job->delay_ms * 2;
  uv_timer_start(&job->timer, on_job_timer, d, 0);
}

static void on_fetch(braid_memcache_t *mc, int status, const braid_memcache_result_t *res,
                     size_t count, void *arg) {
  (void)mc;
  (void)count;
  memo_job_t *job = arg;
  braid_memcache_memo_t *m = job->memo;
  if (m->closing) {
    job_end(job, BRAID_ECANCELED, NULL);
    return;
  }
  if (status < 0 || (res->code != BRAID_MEMCACHE_VA && res->code != BRAID_MEMCACHE_EN)) {
    /* memcached cannot help: compute here, and do not store (it is failing) */
    m->st.l2_errors++;
    job_compute(job, 0);
    return;
  }
  if (res->code == BRAID_MEMCACHE_EN) {
    /* no vivify happened (memcached could not create the placeholder): compute and store */
    m->st.l2_misses++;
    job_compute(job, 1);
    return;
  }
  int real = res->has_flags && (res->client_flags & MEMO_F_VALUE);
  if (!real && !res->won && !res->lost) {
    /* A value someone else stored (another kind of client, no win token on it): it is the
     * value, as it is. */
    braid_blob_t *v = NULL;
    int rc = res->value_len > m->o.max_value_bytes ? BRAID_ETOOBIG
                                                   : braid_blob_copy(&v, res->value, res->value_len);
    m->st.l2_hits++;
    job_end(job, rc, v);
    return;
  }
  if (real) {
    braid_blob_t *v = NULL;
    int rc = memo_decode(m, res, &v);
    if (rc == 1) {
      /* an item we cannot use: recompute and overwrite it */
      m->st.l2_misses++;
      job_compute(job, 1);
      return;
    }
    m->st.l2_hits++;
    if (res->won) {
      /* ours to refresh (recache window or marked stale): serve what is there meanwhile */
      m->st.wins++;
      m->st.stale_served++;
      job_answer(job, rc, v);
      job_compute(job, 1);
      return;
    }
    if (res->stale || res->lost)
      m->st.stale_served++;
    job_end(job, rc, v);
    return;
  }
  /* A placeholder (or a foreign value with a win token on it): someone computes the value. */
  if (res->won) {
    m->st.wins++;
    m->st.l2_misses++;
    job->lease_cas = res->has_cas ? (int64_t)res->cas : -1;
    job_compute(job, 1);
    return;
  }
  if (!job->waiting)
    m->st.l2_misses++;
  job_wait(job);
}

static void job_fetch(memo_job_t *job) {
  braid_memcache_memo_t *m = job->memo;
  braid_memcache_req_t r;
  braid_memcache_req_init(&r);
  r.cmd = BRAID_MEMCACHE_MG;
  r.key = job->key;
  r.key_len = job->key_len;
  r.flags = BRAID_MEMCACHE_F_VALUE | BRAID_MEMCACHE_F_RETURN_FLAGS | BRAID_MEMCACHE_F_RETURN_CAS;
  r.vivify_ttl_s = m->o.lease_s;
  if (m->o.stale_s)
    r.recache_ttl_s = m->o.stale_s;
  int rc = braid_memcache_request(m->mc, &r, 0, on_fetch, job);
  if (rc) {
    m->st.l2_errors++;
    job_compute(job, 0);
  }
}

typedef struct start_ctx_s {
  braid_memcache_memo_t *memo;
  const braid_memcache_loader_t *loader;
  int started;
} start_ctx_t;

/* L1's asynchronous loader: a key missing in this process. */
static void l1_start(braid_cache_load_t *load, const void *key, size_t key_len, void *arg) {
  start_ctx_t *sc = arg;
  braid_memcache_memo_t *m = sc->memo;
  sc->started = 1;
  memo_job_t *job = braid__calloc(1, sizeof(*job) + key_len);
  if (!job) {
    braid_cache_load_done(load, BRAID_ENOMEM, NULL);
    return;
  }
  job->memo = m;
  job->l1load = load;
  job->loader = *sc->loader;
  job->key_len = key_len;
  memcpy(job->key, key, key_len);
  job->lease_cas = -1;
  job->delay_ms = m->o.poll_initial_ms;
  job->deadline_ms = braid_loop_now_ms(m->loop) + m->o.wait_timeout_ms;
  uv_timer_init(braid_loop_uv(m->loop), &job->timer);
  job->timer.data = job;
  braid__list_push_back(&m->jobs, &job->node);
  m->njobs++;
  job_fetch(job);
}

static void on_l1_done(braid_cache_t *cache, int status, braid_blob_t *value, void *arg) {
  (void)cache;
  memo_call_t *c = arg;
  braid_memcache_memo_t *m = c->memo;
  c->cb(m, status, value, c->arg);
  if (m->nfree_calls < 64 && !m->closing) {
    c->next = m->free_calls;
    m->free_calls = c;
    m->nfree_calls++;
  } else {
    braid__free(c);
  }
}

int braid_memcache_memo(braid_memcache_memo_t *memo, const void *key, size_t key_len,
                        const braid_memcache_loader_t *loader, braid_blob_t **value,
                        braid_memcache_memo_cb cb, void *arg) {
  if (value)
    *value = NULL;
  if (!memo || !key || key_len == 0 || key_len > MC_KEY_LEN_MAX || !loader || !value || !cb)
    return BRAID_EINVAL;
  if (loader->mode == BRAID_CACHE_LOAD_ASYNC ? !loader->start
      : (loader->mode == BRAID_CACHE_LOAD_SYNC || loader->mode == BRAID_CACHE_LOAD_WORK)
          ? !loader->compute
          : 1)
    return BRAID_EINVAL;
  if (memo->closing)
    return BRAID_ECLOSED;
  /* The hit path first: one lookup, nothing set up for a wait that will not happen. */
  if (braid_cache_get_blob(memo->l1, key, key_len, value) == 0) {
    memo->st.l1_hits++;
    return 0;
  }
  memo_call_t *c = memo->free_calls;
  if (c) {
    memo->free_calls = c->next;
    memo->nfree_calls--;
  } else if (!(c = braid__malloc(sizeof(*c)))) {
    return BRAID_ENOMEM;
  }
  c->memo = memo;
  c->cb = cb;
  c->arg = arg;
  start_ctx_t sc = {memo, loader, 0};
  braid_cache_loader_t l1l = {BRAID_CACHE_LOAD_ASYNC, NULL, l1_start, &sc, 0};
  int rc = braid_cache_memo(memo->l1, key, key_len, &l1l, value, on_l1_done, c);
  if (rc == BRAID_PENDING) {
    memo->st.l1_misses++;
    return rc;
  }
  if (rc == 0 && !sc.started)
    memo->st.l1_hits++;
  else
    memo->st.l1_misses++;
  c->next = memo->free_calls;
  memo->free_calls = c;
  memo->nfree_calls++;
  return rc;
}

static void on_l1_closed(braid_cache_t *cache, int status, void *arg) {
  (void)cache;
  (void)status;
  braid_memcache_memo_t *m = arg;
  m->l1_closed = 1;
  memo_maybe_closed(m);
}

int braid_memcache_memo_close(braid_memcache_memo_t *memo, braid_memcache_memo_close_cb cb,
                              void *arg) {
  if (!memo)
    return BRAID_EINVAL;
  if (memo->closing)
    return BRAID_ECLOSED;
  memo->closing = 1;
  memo->close_cb = cb;
  memo->close_arg = arg;
  /* Jobs waiting between polls end now; those with a request or a loader in flight end
   * when it completes. */
  braid__node_t *n = memo->jobs.next;
  while (n != &memo->jobs) {
    memo_job_t *job = BRAID__CONTAINER_OF(n, memo_job_t, node);
    n = n->next;
    if (uv_is_active((uv_handle_t *)&job->timer))
      job_end(job, BRAID_ECANCELED, NULL);
  }
  braid_cache_close(memo->l1, on_l1_closed, memo);
  return 0;
}
