/* braid: framers, which split a byte stream into whole messages.
 *
 * A framer does no I/O and allocates nothing: given the bytes received so far, it says how
 * long the first message is and where its payload sits, or that more bytes are needed, or
 * that the stream is broken (too big, malformed). Built in: braid frames (docs/PROTOCOL.md),
 * length-field (like Netty's LengthFieldBasedFrameDecoder), delimiter ("\r\n", ...), and a
 * user callback for anything else. Every framer has a maximum message size, checked before
 * anyone buffers toward it, so a peer can never make a connection grow without bound.
 *
 * braid_framebuf_t (below) is the accumulator a connection puts in front of a framer: it
 * hands out messages as views straight from the read buffer when they sit whole in it, and
 * keeps (copies) only the partial message at the end of a read.
 *
 * Both are caller-allocated structs (embed them; their fields are private). One framer or
 * framebuf per stream; use it from one thread at a time. */
#ifndef BRAID_FRAMER_H
#define BRAID_FRAMER_H

#include "common.h"
#include "error.h"
#include "frame.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The hard ceiling of any framer's maximum message size (1 GiB, so lengths fit an int). */
#define BRAID_FRAMER_MAX_CEILING ((size_t)1 << 30)
/* The default maximum message size of the length-field and delimiter framers. */
#define BRAID_FRAMER_DEFAULT_MAX ((size_t)16 * 1024 * 1024)
#define BRAID_DELIMITER_MAX_LEN 16

/* Where the first message in a buffer is. */
typedef struct braid_framer_msg_s {
  size_t frame_len;   /* bytes the message occupies in the stream: consume this many */
  size_t payload_off; /* offset of the payload from the start of the message */
  size_t payload_len; /* payload_off + payload_len <= frame_len */
  size_t need;        /* after a "need more" result: the total buffered length at which the
                       * framer can decide, when known (> the length passed); 0 = unknown */
} braid_framer_msg_t;

/* A custom framer: the same contract as braid_framer_next() (return frame_len > 0 with
 * msg's payload_off/payload_len filled, 0 with msg->need set or 0, or a negative braid error
 * code such as BRAID_EPROTO). buf[0..len) are the buffered bytes from the start of a message,
 * at most the framer's maximum (bytes beyond it are not shown); a call after a 0 result sees
 * the same bytes plus more. Its answer for a prefix should not change when more bytes follow,
 * so the result does not depend on how reads split the stream. braid enforces the
 * maximum around it: a need-more result at len >= max, or a frame_len > max, becomes
 * BRAID_ETOOBIG, and an impossible result (frame_len 0 or > len, payload outside the
 * frame, need <= len) becomes BRAID_EPROTO. Called synchronously, zero or more times per
 * braid_framer_next(). */
typedef int (*braid_framer_fn)(void *arg, const uint8_t *buf, size_t len,
                               braid_framer_msg_t *msg);

/* Length-field framer options (Netty's LengthFieldBasedFrameDecoder). A message is:
 *   [length_offset bytes][length field: length_size bytes][L + length_adjust bytes]
 * where L is the field's value; frame_len = length_offset + length_size + L + length_adjust,
 * the payload is the message minus its first strip_bytes bytes. */
typedef struct braid_length_field_opts_s {
  /* Largest whole message in bytes, header included. Default BRAID_FRAMER_DEFAULT_MAX;
   * bounds 1..BRAID_FRAMER_MAX_CEILING and >= length_offset + length_size. */
  size_t max_frame_bytes;
  /* Bytes before the length field. Default 0; bounds 0..65535. */
  size_t length_offset;
  /* Width of the length field in bytes: 1, 2, 4 or 8. Default 4. */
  unsigned length_size;
  /* 1 = big-endian (network order, default), 0 = little-endian. Other values: EINVAL. */
  int big_endian;
  /* Added to L to get the bytes that follow the length field (negative when L counts the
   * header too). Default 0; bounds -max_frame_bytes..max_frame_bytes. A frame that comes
   * out shorter than its own header is BRAID_EPROTO. */
  int64_t length_adjust;
  /* Bytes removed from the front of each message before the payload (e.g. offset + size
   * to drop the header). Default 0; bounds 0..max_frame_bytes. A message shorter than this
   * is BRAID_EPROTO. */
  size_t strip_bytes;
} braid_length_field_opts_t;

/* Delimiter framer options: a message ends with the first occurrence of the delimiter. */
typedef struct braid_delimiter_opts_s {
  /* The delimiter bytes (copied). Default "\r\n". */
  const void *delimiter;
  /* Its length: 1..BRAID_DELIMITER_MAX_LEN. Default 2. */
  size_t delimiter_len;
  /* Largest message in bytes, delimiter included; more bytes without a delimiter is
   * BRAID_ETOOBIG. Default BRAID_FRAMER_DEFAULT_MAX; bounds delimiter_len..ceiling. */
  size_t max_frame_bytes;
  /* 1 (default): the payload excludes the delimiter; 0: it includes it. */
  int strip_delimiter;
} braid_delimiter_opts_t;

typedef enum {
  BRAID_FRAMER_BRAID = 1,
  BRAID_FRAMER_LENGTH_FIELD,
  BRAID_FRAMER_DELIMITER,
  BRAID_FRAMER_CUSTOM,
} braid_framer_kind_t;

/* A framer. Fields are private; set it up with one of the braid_framer_init_*() calls. It
 * holds no pointers to memory of its own (copying the struct is fine) except the custom
 * callback's arg. */
typedef struct braid_framer_s {
  braid_framer_kind_t kind;
  size_t max_frame;
  size_t scanned; /* delimiter: bytes of the current message known to hold no match start */
  union {
    struct {
      size_t max_payload;
      braid_frame_reject_t reject; /* why the last header was refused */
    } braid;
    braid_length_field_opts_t lf;
    struct {
      uint8_t bytes[BRAID_DELIMITER_MAX_LEN];
      size_t len;
      int strip;
    } delim;
    struct {
      braid_framer_fn fn;
      void *arg;
    } custom;
  } u;
} braid_framer_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_length_field_opts_init(braid_length_field_opts_t *o);
BRAID_EXTERN void braid_delimiter_opts_init(braid_delimiter_opts_t *o);

/* Check every field against its documented bounds. Return 0, or BRAID_EINVAL with the field
 * and the reason in *err (err may be NULL). The framer set-up calls run the same check. */
BRAID_EXTERN int braid_length_field_opts_validate(const braid_length_field_opts_t *o,
                                                  braid_opts_error_t *err);
BRAID_EXTERN int braid_delimiter_opts_validate(const braid_delimiter_opts_t *o,
                                               braid_opts_error_t *err);

/* Sets f up as a braid protocol framer accepting payloads up to max_payload bytes
 * (BRAID_FRAME_MIN_MAX_PAYLOAD..BRAID_FRAME_MAX_PAYLOAD_CEILING; e.g.
 * BRAID_FRAME_DEFAULT_MAX_PAYLOAD). Messages are whole frames: payload_off 16. Header
 * violations are BRAID_EPROTO, an oversized declared length BRAID_ETOOBIG, reported as soon
 * as the offending header byte arrives. Returns 0 or BRAID_EINVAL (f untouched). */
BRAID_EXTERN int braid_framer_init_braid(braid_framer_t *f, size_t max_payload);

/* Sets f up as a length-field framer. Returns 0 or BRAID_EINVAL (f untouched) when o is NULL
 * or a field is out of bounds. */
BRAID_EXTERN int braid_framer_init_length_field(braid_framer_t *f,
                                                const braid_length_field_opts_t *o);

/* Sets f up as a delimiter framer. The scan resumes where the last need-more call stopped,
 * so feeding a long message in small pieces costs linear, not quadratic, time. Returns 0 or
 * BRAID_EINVAL (f untouched). */
BRAID_EXTERN int braid_framer_init_delimiter(braid_framer_t *f, const braid_delimiter_opts_t *o);

/* Sets f up to call fn (see braid_framer_fn) with arg, enforcing max_frame_bytes
 * (1..BRAID_FRAMER_MAX_CEILING). Returns 0 or BRAID_EINVAL (f untouched). */
BRAID_EXTERN int braid_framer_init_custom(braid_framer_t *f, braid_framer_fn fn, void *arg,
                                          size_t max_frame_bytes);

/* Finds the first message in buf[0..len), which must start at a message boundary. After a
 * 0 result, the next call must pass the same bytes again plus more (the framer may
 * remember how far it looked), or follow braid_framer_reset().
 *
 * Returns the message's frame_len (> 0; msg filled; the caller consumes that many bytes and
 * calls again for the next message); 0 when more bytes are needed (msg->need set, 0 if
 * unknown); BRAID_ETOOBIG when the message exceeds the maximum (as soon as that is known:
 * from a length field, or after max bytes without a delimiter); BRAID_EPROTO when malformed;
 * BRAID_EINVAL when f or msg is NULL, or buf is NULL with len > 0; or a custom framer's
 * own negative code. After an error the stream cannot be resynchronised: close it. */
BRAID_EXTERN int braid_framer_next(braid_framer_t *f, const void *buf, size_t len,
                                   braid_framer_msg_t *msg);

/* Forgets any scan progress (for a new stream, or a buffer that is not the old one). */
BRAID_EXTERN void braid_framer_reset(braid_framer_t *f);

/* Returns the largest whole message f accepts, in bytes (for braid frames: 16 + the
 * maximum payload). */
BRAID_EXTERN size_t braid_framer_max_frame(const braid_framer_t *f);

/* ---- accumulator --------------------------------------------------------------------- */

/* Bytes of partial-message buffer a framebuf keeps between messages; a larger buffer (from a
 * large message) is freed as soon as it is empty and the pushed bytes are used up, so an idle
 * connection holds little. While pushed bytes remain, a larger buffer at most twice the size
 * of the message it held is kept for the next partial message: a stream of messages longer
 * than one read reuses one buffer. */
#define BRAID_FRAMEBUF_KEEP_BYTES 4096
/* A partial message whose length is known and at most this is given its whole buffer in one
 * allocation; a longer one gets room as its bytes arrive (at most twice what arrived,
 * doubling, never past its declared length), so a peer cannot make a connection commit more
 * than about twice what it actually sent: a header alone commits at most this. */
#define BRAID_FRAMEBUF_EAGER_BYTES ((size_t)4096)

/* A message handed out by braid_framebuf_next(). The views are valid until the next call
 * on the framebuf (next, push, trim, reset, free) and, when copied is 0, only as long as the
 * bytes given to braid_framebuf_push() are. */
typedef struct braid_framebuf_msg_s {
  const uint8_t *frame; /* the whole message, frame_len bytes */
  size_t frame_len;
  const uint8_t *payload; /* frame + payload_off */
  size_t payload_len;
  int copied; /* 0: a view into the pushed bytes (zero-copy); 1: reassembled in the buffer */
} braid_framebuf_msg_t;

/* The accumulator. Fields are private. */
typedef struct braid_framebuf_s {
  braid_framer_t framer;
  uint8_t *buf; /* partial message, len bytes; cap allocated */
  size_t len, cap;
  size_t need_hint;   /* the framer's need for the partial message (0 = unknown) */
  size_t consume;     /* bytes of buf handed out by the last next(), dropped on the next call */
  const uint8_t *in;  /* pushed bytes not yet framed */
  size_t in_len;
  int failed; /* the first error, sticky: the stream is broken */
} braid_framebuf_t;

/* Sets fb up with a copy of framer (configured; scan progress reset). Allocates nothing.
 * Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_framebuf_init(braid_framebuf_t *fb, const braid_framer_t *framer);

/* Hands fb the next bytes of the stream, data[0..len), as a view: they are not copied
 * unless they end in a partial message. Call braid_framebuf_next() until it returns 0 before
 * the next push or before data goes away. Returns 0, BRAID_EINVAL (NULL data with len > 0),
 * BRAID_EBUSY (the previous push was not drained), or the sticky error of an earlier
 * failure. */
BRAID_EXTERN int braid_framebuf_push(braid_framebuf_t *fb, const void *data, size_t len);

/* Returns the next whole message. Returns 1 with *msg filled; 0 when the pushed bytes are
 * used up (any partial message at their end has been copied into fb: in one allocation when
 * the framer knows the length and it is at most BRAID_FRAMEBUF_EAGER_BYTES, else growing
 * with the bytes received, to at most twice them; never beyond the message's declared
 * length or the framer's maximum); or a
 * negative code: the framer's error (BRAID_ETOOBIG, BRAID_EPROTO, ...) or BRAID_ENOMEM.
 * Errors are sticky: every later call returns the same code. */
BRAID_EXTERN int braid_framebuf_next(braid_framebuf_t *fb, braid_framebuf_msg_t *msg);

/* Bytes of a partial message held between pushes (at end of stream: nonzero means the
 * peer closed mid-message). */
BRAID_EXTERN size_t braid_framebuf_pending(const braid_framebuf_t *fb);

/* Drops any partial message and error, releases the buffer, and resets the framer's scan,
 * keeping its configuration (for a new stream). */
BRAID_EXTERN void braid_framebuf_reset(braid_framebuf_t *fb);

/* Describes fb's sticky error as what to send the peer before closing: for a braid framer
 * the exact wire code and message of the refused header (BRAID_WIRE_PROTOCOL,
 * BRAID_WIRE_VERSION or BRAID_WIRE_TOO_BIG); for other framers BRAID_WIRE_TOO_BIG or
 * BRAID_WIRE_PROTOCOL with a generic message, BRAID_WIRE_INTERNAL for other errors
 * (BRAID_ENOMEM, a custom framer's own code); BRAID_WIRE_OK "no error" when fb has not
 * failed. out->message is static. */
BRAID_EXTERN void braid_framebuf_reject(const braid_framebuf_t *fb, braid_frame_reject_t *out);

/* Frees the buffer when it holds no partial message (an idle connection's framebuf then
 * owns no memory; the next partial message allocates again). Call it when a connection goes
 * idle; the buffer is otherwise kept (up to BRAID_FRAMEBUF_KEEP_BYTES) so that pipelined
 * streams, where nearly every read ends mid-message, do not allocate per read. */
BRAID_EXTERN void braid_framebuf_trim(braid_framebuf_t *fb);

/* Releases the buffer. fb may be re-initialised afterwards. NULL is ignored. */
BRAID_EXTERN void braid_framebuf_free(braid_framebuf_t *fb);

#ifdef __cplusplus
}
#endif
#endif
