/* Test support: a RESP (Redis serialization protocol, v2) reply framer for braid's ordered
 * rpc mode, and a command encoder. Test code, not library API: it proves that braid's custom
 * framer hook and ordered channels carry a protocol braid did not define. */
#ifndef BRAID_TEST_RESP_H
#define BRAID_TEST_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "braid.h"

/* Deepest array nesting accepted (deeper is BRAID_EPROTO). */
#define RESP_MAX_DEPTH 32
/* Largest array element count and bulk string length accepted (larger is BRAID_EPROTO). */
#define RESP_MAX_ELEMENTS ((int64_t)1 << 24)
#define RESP_MAX_BULK ((int64_t)512 << 20)
/* Longest length or integer line ("-9223372036854775808" is 20 characters). */
#define RESP_MAX_NUMBER_DIGITS 20

/* A braid_framer_fn (arg unused) that finds one complete RESP reply at the start of
 * buf[0..len): +simple, -error, :integer, $bulk (including the null bulk $-1) or *array
 * (nested up to RESP_MAX_DEPTH, including the null array *-1). Returns the reply's length
 * with msg filled (the payload is the whole reply), 0 when more bytes are needed (msg->need
 * is the total length needed when a bulk string's length says so, else 0), or BRAID_EPROTO
 * for malformed input (unknown type byte, bad number, LF without CR, CR not followed by LF, a
 * bulk string not followed by CRLF, a negative length other than -1, a length or depth over
 * the bounds above). Allocates nothing. */
int resp_frame(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg);

/* Sets f up as a RESP framer with a maximum reply size of max_bytes. Returns 0 or
 * BRAID_EINVAL. */
int resp_framer_init(braid_framer_t *f, size_t max_bytes);

/* Encodes the command argv[0..argc) (NUL-terminated strings) as a RESP array of bulk strings
 * into out[0..cap). Returns its length, or 0 when it does not fit. */
size_t resp_command(uint8_t *out, size_t cap, int argc, const char *const *argv);

#endif
