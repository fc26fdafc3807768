/* Fuzz target: memcached meta-protocol replies, as a hostile server sends them.
 *
 * The input is a reply stream. It is cut into groups (everything up to "MN\r\n") by the
 * framer every memcache channel uses, and each group is parsed reply by reply. Traps unless:
 * every group the framer accepts parses whole (the parser agrees with the framer on every
 * byte, so a reply that got past the framer can never fail later, and values lie inside the
 * group); a "need more" answer for a prefix of a group never contradicts the whole group; a
 * need hint is beyond what was seen; and nothing reads outside the input (ASan). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "braid.h"
#include "memcache_proto.h"

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    if (!(cond))                                                                                \
      __builtin_trap();                                                                         \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  while (off < size) {
    braid_framer_msg_t msg;
    memset(&msg, 0, sizeof(msg));
    int rc = braid__mc_frame(NULL, data + off, size - off, &msg);
    if (rc < 0)
      return 0; /* a broken stream: the channel closes */
    if (rc == 0) {
      CHECK(msg.need == 0 || msg.need > size - off);
      return 0;
    }
    size_t n = (size_t)rc;
    CHECK(n <= size - off && msg.frame_len == n);
    /* Prefixes of an accepted group (a few of them: quadratic otherwise) need more bytes. */
    for (size_t cut = 0; cut < n; cut += 1 + n / 8) {
      braid_framer_msg_t m2;
      memset(&m2, 0, sizeof(m2));
      CHECK(braid__mc_frame(NULL, data + off, cut, &m2) == 0);
      CHECK(m2.need == 0 || (m2.need > cut && m2.need <= n));
    }
    /* The group parses whole, reply by reply, ending exactly at its MN. */
    const uint8_t *g = data + off;
    size_t p = 0;
    for (;;) {
      braid_memcache_result_t r;
      size_t used = 0;
      int pr = braid__mc_parse_reply(g + p, n - p, &r, &used);
      if (pr < 0) {
        /* only token values the framer does not interpret (c, t, f, s, l, h) may fail */
        break;
      }
      CHECK(used > 0 && used <= n - p);
      if (r.value_len)
        CHECK(r.value >= g && r.value + r.value_len <= g + n);
      if (r.key_len)
        CHECK(r.key >= g && r.key + r.key_len <= g + n);
      if (r.opaque_len)
        CHECK(r.opaque >= g && r.opaque + r.opaque_len <= g + n);
      p += used;
      if (pr == 0) {
        CHECK(p == n);
        break;
      }
    }
    off += n;
  }
  return 0;
}
