/* braid: the braid wire protocol's frames, encoded and decoded without I/O or allocation.
 *
 * docs/PROTOCOL.md is the specification; this header is its C form. A frame is a 16-byte
 * header followed by payload_len bytes of payload:
 *
 *   offset size  field
 *   0      2     magic "BR" (0x42 0x52)
 *   2      1     version (1)
 *   3      1     type (BRAID_FRAME_REQUEST ... BRAID_FRAME_GOAWAY)
 *   4      1     flags (BRAID_FRAME_FLAG_GZIP | BRAID_FRAME_FLAG_BATCH; other bits reserved)
 *   5      3     reserved, zero
 *   8      4     request id, big-endian
 *   12     4     payload length, big-endian
 *
 * Decoders return views into the caller's buffer; nothing here allocates or keeps state, so
 * every function is safe to call from any thread on distinct buffers. Every length a peer
 * declares is checked against the receiver's limit before anyone needs to buffer it. */
#ifndef BRAID_FRAME_H
#define BRAID_FRAME_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BRAID_FRAME_HEADER_SIZE 16
#define BRAID_FRAME_MAGIC0 0x42 /* 'B' */
#define BRAID_FRAME_MAGIC1 0x52 /* 'R' */
#define BRAID_FRAME_VERSION 1

/* The default and the hard ceiling of the maximum payload length a receiver accepts. */
#define BRAID_FRAME_DEFAULT_MAX_PAYLOAD (16u * 1024 * 1024)
#define BRAID_FRAME_MAX_PAYLOAD_CEILING (1u << 30)
/* The smallest maximum a receiver may configure: error and goaway frames must always fit. */
#define BRAID_FRAME_MIN_MAX_PAYLOAD 64u

/* Frame types (header byte 3). Any other value is a protocol error. */
typedef enum {
  BRAID_FRAME_REQUEST = 1,
  BRAID_FRAME_RESPONSE = 2,
  BRAID_FRAME_ERROR = 3,
  BRAID_FRAME_PING = 4,
  BRAID_FRAME_PONG = 5,
  BRAID_FRAME_GOAWAY = 6,
} braid_frame_type_t;

/* Flags (header byte 4). Only REQUEST and RESPONSE frames may carry them. */
#define BRAID_FRAME_FLAG_GZIP 0x01u  /* the payload is one gzip member (RFC 1952) */
#define BRAID_FRAME_FLAG_BATCH 0x02u /* the (decompressed) payload is a batch encoding */
#define BRAID_FRAME_FLAGS_KNOWN (BRAID_FRAME_FLAG_GZIP | BRAID_FRAME_FLAG_BATCH)

/* Wire error codes: carried by ERROR frames, GOAWAY frames and batch response items. They are
 * the protocol's, not the C API's; braid_frame_code_from_err() maps between the two. Codes
 * 0x8000..0xFFFF belong to applications. */
typedef enum {
  BRAID_WIRE_OK = 0,            /* batch item status / goaway: no error */
  BRAID_WIRE_PROTOCOL = 1,      /* malformed frame; fatal (id 0) */
  BRAID_WIRE_TOO_BIG = 2,       /* over the receiver's maximum */
  BRAID_WIRE_UNSUPPORTED = 3,   /* a flag or feature the receiver does not implement */
  BRAID_WIRE_VERSION = 4,       /* unsupported protocol version; fatal (id 0) */
  BRAID_WIRE_BAD_REQUEST = 5,   /* the application could not parse the request */
  BRAID_WIRE_INTERNAL = 6,      /* the handler failed */
  BRAID_WIRE_TIMEOUT = 7,       /* the server gave up on the request */
  BRAID_WIRE_SHUTTING_DOWN = 8, /* arrived after a goaway; safe to retry elsewhere */
  BRAID_WIRE_OVERLOADED = 9,    /* refused by an admission limit; safe to retry later */
  BRAID_WIRE_CANCELED = 10,     /* the server cancelled it (e.g. closing) */
  BRAID_WIRE_APP_MIN = 0x8000,  /* first application-defined code */
} braid_wire_code_t;

/* A decoded header. */
typedef struct braid_frame_header_s {
  uint8_t version;
  uint8_t type;  /* a braid_frame_type_t */
  uint8_t flags; /* BRAID_FRAME_FLAG_* */
  uint32_t id;
  uint32_t payload_len;
} braid_frame_header_t;

/* Why a header was rejected: the wire code and a static message to send back in the ERROR
 * frame (id 0) before closing. */
typedef struct braid_frame_reject_s {
  uint16_t code;       /* BRAID_WIRE_PROTOCOL, BRAID_WIRE_VERSION or BRAID_WIRE_TOO_BIG */
  const char *message; /* static, never NULL after a rejection */
} braid_frame_reject_t;

/* A whole frame, decoded to views into the caller's buffer. */
typedef struct braid_frame_s {
  braid_frame_header_t hdr;
  const uint8_t *payload; /* hdr.payload_len bytes; points into the decoded buffer */
} braid_frame_t;

/* Checks that max_payload is a valid receiver limit: BRAID_FRAME_MIN_MAX_PAYLOAD ..
 * BRAID_FRAME_MAX_PAYLOAD_CEILING. Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_frame_check_max(size_t max_payload);

/* Decodes the header at buf[0..len), validating everything the header alone can tell (see
 * PROTOCOL.md "Validation"), in wire order so garbage fails on its first bad byte even when
 * fewer than 16 bytes have arrived.
 *
 * Returns BRAID_FRAME_HEADER_SIZE with *hdr filled; 0 when the bytes so far are a valid
 * prefix but fewer than 16 (need more; *hdr untouched); BRAID_ETOOBIG when the declared
 * payload length exceeds max_payload; BRAID_EPROTO for anything malformed; BRAID_EINVAL
 * when buf or hdr is NULL (with len > 0) or max_payload is out of bounds. On a
 * BRAID_ETOOBIG or BRAID_EPROTO result *reject (may be NULL) says what to answer. */
BRAID_EXTERN int braid_frame_header_decode(const void *buf, size_t len, size_t max_payload,
                                           braid_frame_header_t *hdr,
                                           braid_frame_reject_t *reject);

/* Decodes one whole frame at the start of buf[0..len): the header as above, and the payload
 * as a view. Returns the frame's total length (16 + payload_len, > 0), 0 when more bytes are
 * needed (then *need, if not NULL, is the total length needed when known, else 16), or the
 * errors of braid_frame_header_decode(). Payload-level checks (batch, error, goaway
 * encodings) are separate: see braid_batch_reader_init() and the decoders below. The
 * result fits an int because the ceiling is 1 GiB. */
BRAID_EXTERN int braid_frame_decode(const void *buf, size_t len, size_t max_payload,
                                    braid_frame_t *frame, size_t *need,
                                    braid_frame_reject_t *reject);

/* Writes the 16-byte header for hdr into out (at least 16 bytes), after checking it obeys
 * every rule a decoder checks (known type, flags allowed for the type, id rules, minimum
 * payload length for the type, payload_len <= BRAID_FRAME_MAX_PAYLOAD_CEILING); hdr->version
 * is ignored (always BRAID_FRAME_VERSION). Returns BRAID_FRAME_HEADER_SIZE, or BRAID_EINVAL
 * with out untouched. */
BRAID_EXTERN int braid_frame_header_encode(void *out, const braid_frame_header_t *hdr);

/* ---- ERROR and GOAWAY payloads ------------------------------------------------------- */

/* Size of an ERROR payload carrying a message of msg_len bytes (2 + msg_len). */
static inline size_t braid_frame_error_size(size_t msg_len) {
  return 2 + msg_len;
}

/* Writes an ERROR payload (code, then the message bytes) into out[0..cap). msg may be NULL
 * when msg_len is 0. Returns the payload length, or BRAID_ETOOBIG when cap is too small, or
 * BRAID_EINVAL when out is NULL or the length exceeds the ceiling. */
BRAID_EXTERN int braid_frame_error_encode(void *out, size_t cap, uint16_t code,
                                          const char *msg, size_t msg_len);

/* Decodes an ERROR payload to its code and message view (not NUL-terminated; *msg points
 * into payload). Returns 0, or BRAID_EPROTO when shorter than 2 bytes. */
BRAID_EXTERN int braid_frame_error_decode(const void *payload, size_t len, uint16_t *code,
                                          const char **msg, size_t *msg_len);

/* Size of a GOAWAY payload with a reason of reason_len bytes (6 + reason_len). */
static inline size_t braid_frame_goaway_size(size_t reason_len) {
  return 6 + reason_len;
}

/* Writes a GOAWAY payload (last_id, code, reason) into out[0..cap). Returns its length,
 * BRAID_ETOOBIG (cap too small) or BRAID_EINVAL. */
BRAID_EXTERN int braid_frame_goaway_encode(void *out, size_t cap, uint32_t last_id,
                                           uint16_t code, const char *reason,
                                           size_t reason_len);

/* Decodes a GOAWAY payload. Returns 0 or BRAID_EPROTO (shorter than 6 bytes). */
BRAID_EXTERN int braid_frame_goaway_decode(const void *payload, size_t len, uint32_t *last_id,
                                           uint16_t *code, const char **reason,
                                           size_t *reason_len);

/* Maps a braid/libuv error code to the wire code a server sends for it (BRAID_ETOOBIG ->
 * TOO_BIG, BRAID_ENOTSUP -> UNSUPPORTED, BRAID_ETIMEDOUT -> TIMEOUT, BRAID_ECANCELED ->
 * CANCELED, BRAID_EGOAWAY -> SHUTTING_DOWN, BRAID_EPROTO -> PROTOCOL, BRAID_EINVAL ->
 * BAD_REQUEST, BRAID_EUNAVAILABLE and BRAID_EPOOLFULL -> OVERLOADED (a proxy whose own
 * upstream pool cannot take the request: retry later), anything else -> INTERNAL; 0 -> OK). */
BRAID_EXTERN uint16_t braid_frame_code_from_err(int err);

/* Returns the wire code's name ("PROTOCOL", "TOO_BIG", ..., "APP" for application codes,
 * "UNKNOWN" otherwise). Static; never NULL. */
BRAID_EXTERN const char *braid_frame_code_name(uint16_t code);

/* ---- batch payloads ------------------------------------------------------------------ */
/* A batch payload is: count (u32 BE, >= 1), then count items. A request item is
 * len (u32 BE) + len bytes; a response item is status (u16 BE, a wire code, 0 = success) +
 * len (u32 BE) + len bytes (the response, or the error message when status != 0). The
 * items fill the payload exactly. */

#define BRAID_BATCH_COUNT_SIZE 4
#define BRAID_BATCH_REQ_ITEM_HEADER 4
#define BRAID_BATCH_RESP_ITEM_HEADER 6

/* One batch item, as a view. */
typedef struct braid_batch_item_s {
  uint16_t status; /* response items only; 0 for request items */
  const uint8_t *data;
  uint32_t len;
} braid_batch_item_t;

/* Iterates a batch payload that braid_batch_reader_init() has validated whole. Fields are
 * private. */
typedef struct braid_batch_reader_s {
  const uint8_t *p, *end;
  uint32_t count, left;
  int response;
} braid_batch_reader_t;

/* Validates a whole batch payload (request items when response is 0, response items
 * otherwise) before handing out any item, so a handler never sees half a batch that turns
 * out malformed. Returns 0 with r ready and *count (may be NULL) the item count; BRAID_EPROTO
 * when the count is 0, claims more items than the payload can hold, an item overruns, or
 * bytes are left over; BRAID_EINVAL when r is NULL or payload is NULL with len > 0.
 * One pass over the item headers; touches no item data. */
BRAID_EXTERN int braid_batch_reader_init(braid_batch_reader_t *r, const void *payload,
                                         size_t len, int response, uint32_t *count);

/* Hands out the next item. Returns 1 with *item filled, 0 when all items were read. */
BRAID_EXTERN int braid_batch_reader_next(braid_batch_reader_t *r, braid_batch_item_t *item);

/* Builds a batch payload into a caller buffer. Fields are private. */
typedef struct braid_batch_writer_s {
  uint8_t *buf;
  size_t cap, len;
  uint32_t count;
  int response;
} braid_batch_writer_t;

/* Starts a batch in buf[0..cap) (request items when response is 0). Returns 0, or
 * BRAID_EINVAL when w or buf is NULL or cap < 4 (no room for the count). */
BRAID_EXTERN int braid_batch_writer_init(braid_batch_writer_t *w, void *buf, size_t cap,
                                         int response);

/* Appends an item: status (must be 0 for a request batch) and data[0..len) (data may be
 * NULL when len is 0). Returns 0; BRAID_ETOOBIG when it does not fit in the rest of the
 * buffer or would take the payload past BRAID_FRAME_MAX_PAYLOAD_CEILING (nothing written:
 * finish this batch and start another); BRAID_EINVAL on a bad argument. */
BRAID_EXTERN int braid_batch_writer_add(braid_batch_writer_t *w, uint16_t status,
                                        const void *data, size_t len);

/* Writes the count and returns the payload length (> 0), or BRAID_EINVAL when no item was
 * added (an empty batch is not valid on the wire). */
BRAID_EXTERN int braid_batch_writer_finish(braid_batch_writer_t *w);

/* For scatter/gather writers that do not copy item data: writes one item's header
 * (4 bytes for a request item, 6 for a response item) into out and returns its size, or
 * BRAID_EINVAL (status != 0 on a request item, len over the ceiling). */
BRAID_EXTERN int braid_batch_item_header_encode(void *out, int response, uint16_t status,
                                                size_t len);

/* Writes a batch count (4 bytes) into out. Returns 4, or BRAID_EINVAL when count is 0. */
BRAID_EXTERN int braid_batch_count_encode(void *out, uint32_t count);

#ifdef __cplusplus
}
#endif
#endif
