/* Fuzz target: the braid frame and batch decoders. Decodes the input as a sequence of frames
 * (header validation, payload views, error/goaway payloads, batch payloads), and the whole
 * input as raw request and response batches; whatever decodes must re-encode to the same
 * bytes, and no view may point outside the input. */
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

/* Decodes a batch and, when valid, rebuilds it with the writer: it must come out identical. */
static void batch_round_trip(const uint8_t *p, size_t len, int response) {
  braid_batch_reader_t r;
  uint32_t count = 0;
  if (braid_batch_reader_init(&r, p, len, response, &count) != 0)
    return;
  CHECK(count >= 1 && count <= len / 4);
  uint8_t *out = malloc(len);
  CHECK(out);
  braid_batch_writer_t w;
  CHECK(braid_batch_writer_init(&w, out, len, response) == 0);
  braid_batch_item_t it;
  uint32_t seen = 0;
  while (braid_batch_reader_next(&r, &it)) {
    CHECK(it.data >= p && it.len <= (size_t)(p + len - it.data));
    CHECK(response || it.status == 0);
    CHECK(braid_batch_writer_add(&w, it.status, it.len ? it.data : NULL, it.len) == 0);
    seen++;
  }
  CHECK(seen == count);
  CHECK(braid_batch_writer_finish(&w) == (int)len);
  CHECK(memcmp(out, p, len) == 0);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The receiver's maximum comes from the first byte, so small limits get exercised. */
  size_t max = size ? BRAID_FRAME_MIN_MAX_PAYLOAD + (size_t)data[0] * 16
                    : BRAID_FRAME_DEFAULT_MAX_PAYLOAD;
  size_t off = size ? 1 : 0;
  for (;;) {
    braid_frame_t f;
    braid_frame_reject_t rej = {0, NULL};
    size_t need = 0;
    int rc = braid_frame_decode(data + off, size - off, max, &f, &need, &rej);
    if (rc < 0) {
      CHECK(rc == BRAID_EPROTO || rc == BRAID_ETOOBIG);
      CHECK(rej.message != NULL);
      CHECK(rc == BRAID_ETOOBIG ? rej.code == BRAID_WIRE_TOO_BIG
                                : (rej.code == BRAID_WIRE_PROTOCOL ||
                                   rej.code == BRAID_WIRE_VERSION));
      break;
    }
    if (rc == 0) {
      CHECK(need > size - off && need <= BRAID_FRAME_HEADER_SIZE + max);
      break;
    }
    CHECK((size_t)rc == BRAID_FRAME_HEADER_SIZE + f.hdr.payload_len && (size_t)rc <= size - off);
    CHECK(f.hdr.payload_len <= max);
    CHECK(f.payload == data + off + BRAID_FRAME_HEADER_SIZE);
    uint8_t hdr[BRAID_FRAME_HEADER_SIZE];
    CHECK(braid_frame_header_encode(hdr, &f.hdr) == BRAID_FRAME_HEADER_SIZE);
    CHECK(memcmp(hdr, data + off, sizeof(hdr)) == 0);

    uint16_t code;
    uint32_t last_id;
    const char *msg;
    size_t mlen;
    switch (f.hdr.type) {
    case BRAID_FRAME_ERROR:
      CHECK(braid_frame_error_decode(f.payload, f.hdr.payload_len, &code, &msg, &mlen) == 0);
      CHECK(mlen == f.hdr.payload_len - 2 && braid_frame_code_name(code) != NULL);
      break;
    case BRAID_FRAME_GOAWAY:
      CHECK(braid_frame_goaway_decode(f.payload, f.hdr.payload_len, &last_id, &code, &msg,
                                      &mlen) == 0);
      CHECK(mlen == f.hdr.payload_len - 6);
      break;
    case BRAID_FRAME_REQUEST:
    case BRAID_FRAME_RESPONSE:
      if ((f.hdr.flags & BRAID_FRAME_FLAG_BATCH) && !(f.hdr.flags & BRAID_FRAME_FLAG_GZIP))
        batch_round_trip(f.payload, f.hdr.payload_len, f.hdr.type == BRAID_FRAME_RESPONSE);
      break;
    default:
      break;
    }
    off += (size_t)rc;
  }
  /* The input as a bare batch payload, both ways. */
  batch_round_trip(data, size, 0);
  batch_round_trip(data, size, 1);
  return 0;
}
