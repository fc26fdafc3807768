/* braid wire protocol: header, error, goaway and batch encodings (docs/PROTOCOL.md). */
#include "internal.h"

#include "braid/frame.h"

static inline uint16_t rd16(const uint8_t *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t rd32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

int braid_frame_check_max(size_t max_payload) {
  if (max_payload < BRAID_FRAME_MIN_MAX_PAYLOAD || max_payload > BRAID_FRAME_MAX_PAYLOAD_CEILING)
    return BRAID_EINVAL;
  return 0;
}

static int reject(braid_frame_reject_t *r, int err, uint16_t code, const char *msg) {
  if (r) {
    r->code = code;
    r->message = msg;
  }
  return err;
}

/* The rules that depend on the type, shared by the decoder and the encoder so the two can
 * never disagree. Returns NULL when (type, flags, id, len) is acceptable, else the reason. */
static const char *check_type_rules(uint8_t type, uint8_t flags, uint32_t id, uint32_t len) {
  switch (type) {
  case BRAID_FRAME_REQUEST:
  case BRAID_FRAME_RESPONSE:
    if (id == 0)
      return "request and response frames need a nonzero id";
    return NULL;
  case BRAID_FRAME_ERROR:
    if (flags)
      return "flags on an error frame";
    if (len < 2)
      return "error frame shorter than its code";
    return NULL;
  case BRAID_FRAME_PING:
  case BRAID_FRAME_PONG:
    if (flags)
      return "flags on a ping or pong frame";
    return NULL;
  case BRAID_FRAME_GOAWAY:
    if (flags)
      return "flags on a goaway frame";
    if (id != 0)
      return "goaway frame with a nonzero id";
    if (len < 6)
      return "goaway frame shorter than last id and code";
    return NULL;
  default:
    return "unknown frame type";
  }
}

int braid_frame_header_decode(const void *buf, size_t len, size_t max_payload,
                              braid_frame_header_t *hdr, braid_frame_reject_t *rej) {
  const uint8_t *p = buf;
  if ((!buf && len > 0) || !hdr || braid_frame_check_max(max_payload))
    return BRAID_EINVAL;
  /* Wire order, byte by byte as far as they have arrived: a peer speaking something else
   * (HTTP, TLS) is refused on its first bytes instead of after 16. */
  if (len >= 1 && p[0] != BRAID_FRAME_MAGIC0)
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "bad magic");
  if (len >= 2 && p[1] != BRAID_FRAME_MAGIC1)
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "bad magic");
  if (len >= 3 && p[2] != BRAID_FRAME_VERSION)
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_VERSION, "unsupported protocol version");
  if (len >= 4 && (p[3] < BRAID_FRAME_REQUEST || p[3] > BRAID_FRAME_GOAWAY))
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "unknown frame type");
  if (len >= 5 && (p[4] & ~BRAID_FRAME_FLAGS_KNOWN))
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "reserved flag bits set");
  for (size_t i = 5; i < 8 && i < len; i++)
    if (p[i])
      return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, "reserved header bytes not zero");
  if (len < BRAID_FRAME_HEADER_SIZE)
    return 0;

  uint32_t id = rd32(p + 8);
  uint32_t plen = rd32(p + 12);
  const char *why = check_type_rules(p[3], p[4], id, plen);
  if (why)
    return reject(rej, BRAID_EPROTO, BRAID_WIRE_PROTOCOL, why);
  if (plen > max_payload)
    return reject(rej, BRAID_ETOOBIG, BRAID_WIRE_TOO_BIG, "frame payload exceeds the maximum");
  hdr->version = p[2];
  hdr->type = p[3];
  hdr->flags = p[4];
  hdr->id = id;
  hdr->payload_len = plen;
  return BRAID_FRAME_HEADER_SIZE;
}

int braid_frame_decode(const void *buf, size_t len, size_t max_payload, braid_frame_t *frame,
                       size_t *need, braid_frame_reject_t *rej) {
  braid_frame_header_t hdr;
  if (!frame)
    return BRAID_EINVAL;
  int rc = braid_frame_header_decode(buf, len, max_payload, &hdr, rej);
  if (rc == 0) {
    if (need)
      *need = BRAID_FRAME_HEADER_SIZE;
    return 0;
  }
  if (rc < 0)
    return rc;
  size_t total = BRAID_FRAME_HEADER_SIZE + (size_t)hdr.payload_len;
  if (len < total) {
    if (need)
      *need = total;
    return 0;
  }
  frame->hdr = hdr;
  frame->payload = (const uint8_t *)buf + BRAID_FRAME_HEADER_SIZE;
  return (int)total;
}

int braid_frame_header_encode(void *out, const braid_frame_header_t *hdr) {
  if (!out || !hdr)
    return BRAID_EINVAL;
  if (hdr->flags & ~BRAID_FRAME_FLAGS_KNOWN)
    return BRAID_EINVAL;
  if (hdr->payload_len > BRAID_FRAME_MAX_PAYLOAD_CEILING)
    return BRAID_EINVAL;
  if (check_type_rules(hdr->type, hdr->flags, hdr->id, hdr->payload_len))
    return BRAID_EINVAL;
  uint8_t *p = out;
  p[0] = BRAID_FRAME_MAGIC0;
  p[1] = BRAID_FRAME_MAGIC1;
  p[2] = BRAID_FRAME_VERSION;
  p[3] = hdr->type;
  p[4] = hdr->flags;
  p[5] = p[6] = p[7] = 0;
  wr32(p + 8, hdr->id);
  wr32(p + 12, hdr->payload_len);
  return BRAID_FRAME_HEADER_SIZE;
}

/* ---- ERROR and GOAWAY ----------------------------------------------------------------- */

int braid_frame_error_encode(void *out, size_t cap, uint16_t code, const char *msg,
                             size_t msg_len) {
  if (!out || (!msg && msg_len) || msg_len > BRAID_FRAME_MAX_PAYLOAD_CEILING - 2)
    return BRAID_EINVAL;
  if (cap < 2 || cap - 2 < msg_len)
    return BRAID_ETOOBIG;
  uint8_t *p = out;
  wr16(p, code);
  if (msg_len)
    memcpy(p + 2, msg, msg_len);
  return (int)(2 + msg_len);
}

int braid_frame_error_decode(const void *payload, size_t len, uint16_t *code, const char **msg,
                             size_t *msg_len) {
  if (!payload || len < 2)
    return BRAID_EPROTO;
  const uint8_t *p = payload;
  if (code)
    *code = rd16(p);
  if (msg)
    *msg = (const char *)p + 2;
  if (msg_len)
    *msg_len = len - 2;
  return 0;
}

int braid_frame_goaway_encode(void *out, size_t cap, uint32_t last_id, uint16_t code,
                              const char *reason, size_t reason_len) {
  if (!out || (!reason && reason_len) || reason_len > BRAID_FRAME_MAX_PAYLOAD_CEILING - 6)
    return BRAID_EINVAL;
  if (cap < 6 || cap - 6 < reason_len)
    return BRAID_ETOOBIG;
  uint8_t *p = out;
  wr32(p, last_id);
  wr16(p + 4, code);
  if (reason_len)
    memcpy(p + 6, reason, reason_len);
  return (int)(6 + reason_len);
}

int braid_frame_goaway_decode(const void *payload, size_t len, uint32_t *last_id,
                              uint16_t *code, const char **reason, size_t *reason_len) {
  if (!payload || len < 6)
    return BRAID_EPROTO;
  const uint8_t *p = payload;
  if (last_id)
    *last_id = rd32(p);
  if (code)
    *code = rd16(p + 4);
  if (reason)
    *reason = (const char *)p + 6;
  if (reason_len)
    *reason_len = len - 6;
  return 0;
}

uint16_t braid_frame_code_from_err(int err) {
  switch (err) {
  case 0:
    return BRAID_WIRE_OK;
  case BRAID_ETOOBIG:
    return BRAID_WIRE_TOO_BIG;
  case BRAID_ENOTSUP:
    return BRAID_WIRE_UNSUPPORTED;
  case BRAID_ETIMEDOUT:
    return BRAID_WIRE_TIMEOUT;
  case BRAID_ECANCELED:
    return BRAID_WIRE_CANCELED;
  case BRAID_EGOAWAY:
    return BRAID_WIRE_SHUTTING_DOWN;
  case BRAID_EPROTO:
    return BRAID_WIRE_PROTOCOL;
  case BRAID_EINVAL:
    return BRAID_WIRE_BAD_REQUEST;
  case BRAID_EUNAVAILABLE:
  case BRAID_EPOOLFULL:
    return BRAID_WIRE_OVERLOADED;
  default:
    return BRAID_WIRE_INTERNAL;
  }
}

const char *braid_frame_code_name(uint16_t code) {
  static const char *const names[] = {
      "OK",          "PROTOCOL", "TOO_BIG", "UNSUPPORTED",   "VERSION",    "BAD_REQUEST",
      "INTERNAL",    "TIMEOUT",  "SHUTTING_DOWN", "OVERLOADED", "CANCELED",
  };
  if (code < BRAID__ARRAY_SIZE(names))
    return names[code];
  if (code >= BRAID_WIRE_APP_MIN)
    return "APP";
  return "UNKNOWN";
}

/* ---- batches -------------------------------------------------------------------------- */

int braid_batch_reader_init(braid_batch_reader_t *r, const void *payload, size_t len,
                            int response, uint32_t *count_out) {
  if (!r || (!payload && len > 0))
    return BRAID_EINVAL;
  const uint8_t *p = payload;
  if (len < BRAID_BATCH_COUNT_SIZE)
    return BRAID_EPROTO;
  uint32_t count = rd32(p);
  size_t item_hdr = response ? BRAID_BATCH_RESP_ITEM_HEADER : BRAID_BATCH_REQ_ITEM_HEADER;
  size_t rest = len - BRAID_BATCH_COUNT_SIZE;
  /* Checked before the walk so a hostile count costs nothing (and a caller may size a
   * per-item array from *count knowing it is bounded by the payload). */
  if (count == 0 || count > rest / item_hdr)
    return BRAID_EPROTO;
  const uint8_t *q = p + BRAID_BATCH_COUNT_SIZE, *end = p + len;
  for (uint32_t i = 0; i < count; i++) {
    if ((size_t)(end - q) < item_hdr)
      return BRAID_EPROTO;
    uint32_t ilen = rd32(q + item_hdr - 4);
    q += item_hdr;
    if ((size_t)(end - q) < ilen)
      return BRAID_EPROTO;
    q += ilen;
  }
  if (q != end)
    return BRAID_EPROTO;
  r->p = p + BRAID_BATCH_COUNT_SIZE;
  r->end = end;
  r->count = r->left = count;
  r->response = response ? 1 : 0;
  if (count_out)
    *count_out = count;
  return 0;
}

int braid_batch_reader_next(braid_batch_reader_t *r, braid_batch_item_t *item) {
  if (!r || !item || r->left == 0)
    return 0;
  const uint8_t *q = r->p;
  if (r->response) {
    item->status = rd16(q);
    q += 2;
  } else {
    item->status = 0;
  }
  item->len = rd32(q);
  item->data = q + 4;
  r->p = q + 4 + item->len;
  r->left--;
  return 1;
}

int braid_batch_writer_init(braid_batch_writer_t *w, void *buf, size_t cap, int response) {
  if (!w || !buf || cap < BRAID_BATCH_COUNT_SIZE)
    return BRAID_EINVAL;
  w->buf = buf;
  w->cap = cap;
  w->len = BRAID_BATCH_COUNT_SIZE;
  w->count = 0;
  w->response = response ? 1 : 0;
  return 0;
}

int braid_batch_item_header_encode(void *out, int response, uint16_t status, size_t len) {
  if (!out || (!response && status) || len > BRAID_FRAME_MAX_PAYLOAD_CEILING)
    return BRAID_EINVAL;
  uint8_t *p = out;
  if (response) {
    wr16(p, status);
    p += 2;
  }
  wr32(p, (uint32_t)len);
  return response ? BRAID_BATCH_RESP_ITEM_HEADER : BRAID_BATCH_REQ_ITEM_HEADER;
}

int braid_batch_writer_add(braid_batch_writer_t *w, uint16_t status, const void *data,
                           size_t len) {
  if (!w || !w->buf || (!data && len) || (!w->response && status) || w->count == UINT32_MAX)
    return BRAID_EINVAL;
  size_t hdr = w->response ? BRAID_BATCH_RESP_ITEM_HEADER : BRAID_BATCH_REQ_ITEM_HEADER;
  size_t room = w->cap - w->len;
  size_t ceiling_room = BRAID_FRAME_MAX_PAYLOAD_CEILING - w->len;
  if (room > ceiling_room)
    room = ceiling_room;
  if (room < hdr || room - hdr < len)
    return BRAID_ETOOBIG;
  w->len += (size_t)braid_batch_item_header_encode(w->buf + w->len, w->response, status, len);
  if (len)
    memcpy(w->buf + w->len, data, len);
  w->len += len;
  w->count++;
  return 0;
}

int braid_batch_count_encode(void *out, uint32_t count) {
  if (!out || count == 0)
    return BRAID_EINVAL;
  wr32(out, count);
  return BRAID_BATCH_COUNT_SIZE;
}

int braid_batch_writer_finish(braid_batch_writer_t *w) {
  if (!w || !w->buf || w->count == 0)
    return BRAID_EINVAL;
  wr32(w->buf, w->count);
  return (int)w->len;
}
