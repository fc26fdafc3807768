/* Fuzz target: every framer kind, configured from the input's first bytes, on the rest of
 * the input as a stream. Frames the stream whole with braid_framer_next() and again through
 * a braid_framebuf_t in input-chosen pieces, and traps unless both find the same messages
 * and end the same way, every message lies inside its frame and under the maximum, and the
 * framebuf's buffer stays within the maximum.
 *
 * Input layout: [0] kind (low 2 bits) and piece seed, [1..6] parameters, [7..] stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "braid.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond))                                                                                \
      __builtin_trap();                                                                         \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Netstrings ("3:abc,"), as a custom framer with need hints. */
static int netstring_fn(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg) {
  (void)arg;
  size_t n = 0, i = 0;
  for (; i < len && buf[i] != ':'; i++) {
    if (buf[i] < '0' || buf[i] > '9' || i >= 9)
      return BRAID_EPROTO;
    n = n * 10 + (size_t)(buf[i] - '0');
  }
  if (i == len)
    return 0;
  if (i == 0)
    return BRAID_EPROTO;
  size_t total = i + 1 + n + 1;
  if (len < total) {
    msg->need = total;
    return 0;
  }
  if (buf[total - 1] != ',')
    return BRAID_EPROTO;
  msg->payload_off = i + 1;
  msg->payload_len = n;
  return (int)total;
}

static int setup(braid_framer_t *f, const uint8_t *p) {
  switch (p[0] & 3) {
  case 0:
    return braid_framer_init_braid(f, 64 + (size_t)p[1] * 4);
  case 1: {
    static const unsigned sizes[] = {1, 2, 4, 8};
    braid_length_field_opts_t o;
    braid_length_field_opts_init(&o);
    o.length_size = sizes[p[1] & 3];
    o.big_endian = (p[1] >> 2) & 1;
    o.length_offset = p[2] % 8;
    o.length_adjust = (int8_t)p[3];
    o.strip_bytes = p[4] % 16;
    o.max_frame_bytes = 1 + (size_t)p[5] * 8;
    return braid_framer_init_length_field(f, &o);
  }
  case 2: {
    braid_delimiter_opts_t o;
    braid_delimiter_opts_init(&o);
    o.delimiter = p + 2;
    o.delimiter_len = 1 + p[1] % 4;
    o.strip_delimiter = p[1] >> 7;
    o.max_frame_bytes = o.delimiter_len + (size_t)p[5] * 4;
    return braid_framer_init_delimiter(f, &o);
  }
  default:
    return braid_framer_init_custom(f, netstring_fn, NULL, 1 + (size_t)p[5] * 4);
  }
}

typedef struct {
  size_t off, payload_off, payload_len;
} ref_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 7)
    return 0;
  braid_framer_t f;
  if (setup(&f, data) != 0)
    return 0;
  const uint8_t *s = data + 7;
  size_t n = size - 7;
  size_t max = braid_framer_max_frame(&f);

  /* Reference: the whole stream at once. */
  ref_t *refs = malloc((n + 1) * sizeof(*refs));
  CHECK(refs);
  size_t nref = 0, off = 0;
  int end;
  for (;;) {
    braid_framer_msg_t m;
    end = braid_framer_next(&f, s + off, n - off, &m);
    if (end <= 0) {
      if (end == 0)
        CHECK(m.need == 0 || (m.need > n - off && m.need <= max));
      break;
    }
    CHECK((size_t)end == m.frame_len && m.frame_len <= n - off && m.frame_len <= max);
    CHECK(m.payload_off <= m.frame_len && m.payload_len <= m.frame_len - m.payload_off);
    refs[nref++] = (ref_t){off, off + m.payload_off, m.payload_len};
    off += m.frame_len;
  }
  CHECK(end == 0 || end == BRAID_ETOOBIG || end == BRAID_EPROTO);

  /* The same through a framebuf, in pieces. */
  braid_framer_reset(&f);
  braid_framebuf_t fb;
  CHECK(braid_framebuf_init(&fb, &f) == 0);
  uint32_t rng = 0x9e3779b9u ^ ((uint32_t)data[0] << 8) ^ data[6];
  size_t pos = 0, got = 0;
  int end2 = 0;
  while (pos < n && end2 == 0) {
    rng = rng * 1103515245u + 12345u;
    size_t piece = 1 + (rng >> 16) % (1 + (size_t)(data[6] & 63));
    if (piece > n - pos)
      piece = n - pos;
    uint8_t *copy = malloc(piece); /* its own allocation: ASan catches stale views */
    CHECK(copy);
    memcpy(copy, s + pos, piece);
    CHECK(braid_framebuf_push(&fb, copy, piece) == 0);
    braid_framebuf_msg_t m;
    int rc;
    while ((rc = braid_framebuf_next(&fb, &m)) == 1) {
      CHECK(got < nref);
      CHECK(m.payload_len == refs[got].payload_len);
      CHECK(memcmp(m.payload, s + refs[got].payload_off, m.payload_len) == 0);
      CHECK(m.frame_len <= max);
      got++;
    }
    free(copy);
    CHECK(fb.cap <= max && fb.len <= max);
    end2 = rc;
    pos += piece;
  }
  CHECK(got == nref && end2 == end);
  if (end == 0)
    CHECK(braid_framebuf_pending(&fb) == n - off);
  braid_framebuf_free(&fb);
  free(refs);
  return 0;
}
