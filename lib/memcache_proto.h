/* braid: memcached meta protocol codec, private to lib/memcache.c and its tests and fuzz
 * target. No I/O, no allocation: bytes in, lines and values out. */
#ifndef BRAID_MEMCACHE_PROTO_H
#define BRAID_MEMCACHE_PROTO_H

#include "internal.h"

/* The framer behind every memcache channel: one message is a group of meta replies ended by
 * "MN\r\n" (every call braid sends ends with "mn\r\n"). Checks every line as it goes (a
 * known reply code, well-formed flag tokens, a VA length that is a decimal number followed
 * by that many bytes and CRLF); anything else is BRAID_EPROTO. Same contract as
 * braid_framer_fn (arg unused). */
int braid__mc_frame(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg);

/* Parses the reply line at buf[0..len) (a group the framer accepted, or any bytes: it
 * re-checks everything) into *res (zeroed first, server -1) and returns the bytes it takes
 * (line plus any value), 0 at the end of the group ("MN\r\n", which it consumes: *consumed
 * = 4), or BRAID_EPROTO. A server error line (ERROR, CLIENT_ERROR, SERVER_ERROR) gives
 * res->status BRAID_EREMOTE with the line (without CRLF) as the value. */
int braid__mc_parse_reply(const uint8_t *buf, size_t len, braid_memcache_result_t *res,
                          size_t *consumed);

/* Digests used by the hashing (exposed for the unit tests). */
void braid__mc_md5(const void *data, size_t len, uint8_t out[16]);
void braid__mc_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
