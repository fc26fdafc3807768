/* Framers (braid frames, length-field, delimiter, custom) and the framebuf accumulator. */
#include "internal.h"

#include "braid/frame.h"
#include "braid/framer.h"

/* ---- options -------------------------------------------------------------------------- */

void braid_length_field_opts_init(braid_length_field_opts_t *o) {
  if (!o)
    return;
  memset(o, 0, sizeof(*o));
  o->max_frame_bytes = BRAID_FRAMER_DEFAULT_MAX;
  o->length_size = 4;
  o->big_endian = 1;
}

void braid_delimiter_opts_init(braid_delimiter_opts_t *o) {
  if (!o)
    return;
  memset(o, 0, sizeof(*o));
  o->delimiter = "\r\n";
  o->delimiter_len = 2;
  o->max_frame_bytes = BRAID_FRAMER_DEFAULT_MAX;
  o->strip_delimiter = 1;
}

int braid_framer_init_braid(braid_framer_t *f, size_t max_payload) {
  if (!f || braid_frame_check_max(max_payload))
    return BRAID_EINVAL;
  memset(f, 0, sizeof(*f));
  f->kind = BRAID_FRAMER_BRAID;
  f->u.braid.max_payload = max_payload;
  f->max_frame = BRAID_FRAME_HEADER_SIZE + max_payload;
  return 0;
}

int braid_length_field_opts_validate(const braid_length_field_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  size_t max = o->max_frame_bytes;
  if (max < 1 || max > BRAID_FRAMER_MAX_CEILING)
    return braid__opts_fail(err, "max_frame_bytes", "%zu is outside 1..2^30", max);
  if (o->length_size != 1 && o->length_size != 2 && o->length_size != 4 && o->length_size != 8)
    return braid__opts_fail(err, "length_size", "%u is not 1, 2, 4 or 8", o->length_size);
  if (o->big_endian != 0 && o->big_endian != 1)
    return braid__opts_fail(err, "big_endian", "%d is not 0 or 1", o->big_endian);
  if (o->length_offset > 65535)
    return braid__opts_fail(err, "length_offset", "%zu exceeds 65535", o->length_offset);
  if (o->length_offset + o->length_size > max)
    return braid__opts_fail(err, "length_offset",
                            "%zu plus length_size (%u) exceeds max_frame_bytes (%zu)",
                            o->length_offset, o->length_size, max);
  if (o->length_adjust > (int64_t)max || o->length_adjust < -(int64_t)max)
    return braid__opts_fail(err, "length_adjust",
                            "%lld is outside -max_frame_bytes..max_frame_bytes (%zu)",
                            (long long)o->length_adjust, max);
  if (o->strip_bytes > max)
    return braid__opts_fail(err, "strip_bytes", "%zu exceeds max_frame_bytes (%zu)", o->strip_bytes,
                            max);
  return 0;
}

int braid_delimiter_opts_validate(const braid_delimiter_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if (!o->delimiter)
    return braid__opts_fail(err, "delimiter", "is NULL");
  if (o->delimiter_len < 1 || o->delimiter_len > BRAID_DELIMITER_MAX_LEN)
    return braid__opts_fail(err, "delimiter_len", "%zu is outside 1..%d", o->delimiter_len,
                            BRAID_DELIMITER_MAX_LEN);
  if (o->max_frame_bytes < o->delimiter_len || o->max_frame_bytes > BRAID_FRAMER_MAX_CEILING)
    return braid__opts_fail(err, "max_frame_bytes", "%zu is outside delimiter_len (%zu)..2^30",
                            o->max_frame_bytes, o->delimiter_len);
  if (o->strip_delimiter != 0 && o->strip_delimiter != 1)
    return braid__opts_fail(err, "strip_delimiter", "%d is not 0 or 1", o->strip_delimiter);
  return 0;
}

int braid_framer_init_length_field(braid_framer_t *f, const braid_length_field_opts_t *o) {
  if (!f || braid_length_field_opts_validate(o, NULL))
    return BRAID_EINVAL;
  size_t max = o->max_frame_bytes;
  memset(f, 0, sizeof(*f));
  f->kind = BRAID_FRAMER_LENGTH_FIELD;
  f->u.lf = *o;
  f->max_frame = max;
  return 0;
}

int braid_framer_init_delimiter(braid_framer_t *f, const braid_delimiter_opts_t *o) {
  if (!f || braid_delimiter_opts_validate(o, NULL))
    return BRAID_EINVAL;
  memset(f, 0, sizeof(*f));
  f->kind = BRAID_FRAMER_DELIMITER;
  memcpy(f->u.delim.bytes, o->delimiter, o->delimiter_len);
  f->u.delim.len = o->delimiter_len;
  f->u.delim.strip = o->strip_delimiter;
  f->max_frame = o->max_frame_bytes;
  return 0;
}

int braid_framer_init_custom(braid_framer_t *f, braid_framer_fn fn, void *arg,
                             size_t max_frame_bytes) {
  if (!f || !fn || max_frame_bytes < 1 || max_frame_bytes > BRAID_FRAMER_MAX_CEILING)
    return BRAID_EINVAL;
  memset(f, 0, sizeof(*f));
  f->kind = BRAID_FRAMER_CUSTOM;
  f->u.custom.fn = fn;
  f->u.custom.arg = arg;
  f->max_frame = max_frame_bytes;
  return 0;
}

void braid_framer_reset(braid_framer_t *f) {
  if (f)
    f->scanned = 0;
}

size_t braid_framer_max_frame(const braid_framer_t *f) {
  return f ? f->max_frame : 0;
}

/* ---- the framers ------------------------------------------------------------------------ */

static int need_more(braid_framer_msg_t *msg, size_t need) {
  msg->need = need;
  return 0;
}

static int found(braid_framer_msg_t *msg, size_t frame_len, size_t off, size_t plen) {
  msg->frame_len = frame_len;
  msg->payload_off = off;
  msg->payload_len = plen;
  msg->need = 0;
  return (int)frame_len;
}

static int next_braid(braid_framer_t *f, const uint8_t *buf, size_t len,
                      braid_framer_msg_t *msg) {
  braid_frame_header_t hdr;
  int rc = braid_frame_header_decode(buf, len, f->u.braid.max_payload, &hdr,
                                     &f->u.braid.reject);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return need_more(msg, BRAID_FRAME_HEADER_SIZE);
  size_t total = BRAID_FRAME_HEADER_SIZE + (size_t)hdr.payload_len;
  if (len < total)
    return need_more(msg, total);
  return found(msg, total, BRAID_FRAME_HEADER_SIZE, hdr.payload_len);
}

static uint64_t read_uint(const uint8_t *p, unsigned size, int big_endian) {
  uint64_t v = 0;
  for (unsigned i = 0; i < size; i++) {
    unsigned idx = big_endian ? i : size - 1 - i;
    v = (v << 8) | p[idx];
  }
  return v;
}

static int next_length_field(braid_framer_t *f, const uint8_t *buf, size_t len,
                             braid_framer_msg_t *msg) {
  const braid_length_field_opts_t *o = &f->u.lf;
  size_t end = o->length_offset + o->length_size;
  if (len < end)
    return need_more(msg, end);
  uint64_t value = read_uint(buf + o->length_offset, o->length_size, o->big_endian);
  /* |adjust| <= max <= 1 GiB, so any value above 2 GiB gives a frame above max; checking
   * that first keeps the arithmetic below far from overflow. */
  if (value > 2 * (uint64_t)BRAID_FRAMER_MAX_CEILING)
    return BRAID_ETOOBIG;
  int64_t frame_len = (int64_t)end + (int64_t)value + o->length_adjust;
  if (frame_len < (int64_t)end)
    return BRAID_EPROTO;
  if ((uint64_t)frame_len > f->max_frame)
    return BRAID_ETOOBIG;
  if ((uint64_t)frame_len < o->strip_bytes)
    return BRAID_EPROTO;
  if (len < (size_t)frame_len)
    return need_more(msg, (size_t)frame_len);
  return found(msg, (size_t)frame_len, o->strip_bytes, (size_t)frame_len - o->strip_bytes);
}

static int next_delimiter(braid_framer_t *f, const uint8_t *buf, size_t len,
                          braid_framer_msg_t *msg) {
  const uint8_t *d = f->u.delim.bytes;
  size_t dlen = f->u.delim.len;
  size_t lim = len < f->max_frame ? len : f->max_frame;
  size_t i = f->scanned <= lim ? f->scanned : 0;
  while (lim - i >= dlen) {
    const uint8_t *hit = memchr(buf + i, d[0], lim - i - dlen + 1);
    if (!hit)
      break;
    i = (size_t)(hit - buf);
    if (memcmp(hit, d, dlen) == 0) {
      f->scanned = 0;
      size_t frame_len = i + dlen;
      return found(msg, frame_len, 0, f->u.delim.strip ? i : frame_len);
    }
    i++;
  }
  if (len >= f->max_frame) {
    f->scanned = 0;
    return BRAID_ETOOBIG;
  }
  /* A match may still start in the last dlen - 1 bytes; everything before is settled. */
  f->scanned = lim >= dlen - 1 ? lim - (dlen - 1) : 0;
  return need_more(msg, 0);
}

static int next_custom(braid_framer_t *f, const uint8_t *buf, size_t len,
                       braid_framer_msg_t *msg) {
  /* The callback never sees past the maximum: what it decides then cannot depend on how
   * the stream was split (a read of max + 1000 bytes and a read of max bytes get the same
   * answer), and no call scans more than max bytes. */
  if (len > f->max_frame)
    len = f->max_frame;
  memset(msg, 0, sizeof(*msg));
  int rc = f->u.custom.fn(f->u.custom.arg, buf, len, msg);
  if (rc < 0)
    return rc;
  if (rc == 0) {
    if (msg->need > f->max_frame || len >= f->max_frame)
      return BRAID_ETOOBIG;
    if (msg->need != 0 && msg->need <= len)
      return BRAID_EPROTO;
    return 0;
  }
  size_t frame_len = (size_t)rc;
  if (frame_len > len || msg->payload_off > frame_len ||
      msg->payload_len > frame_len - msg->payload_off)
    return BRAID_EPROTO;
  if (frame_len > f->max_frame)
    return BRAID_ETOOBIG;
  return found(msg, frame_len, msg->payload_off, msg->payload_len);
}

int braid_framer_next(braid_framer_t *f, const void *buf, size_t len, braid_framer_msg_t *msg) {
  if (!f || !msg || (!buf && len > 0))
    return BRAID_EINVAL;
  switch (f->kind) {
  case BRAID_FRAMER_BRAID:
    return next_braid(f, buf, len, msg);
  case BRAID_FRAMER_LENGTH_FIELD:
    return next_length_field(f, buf, len, msg);
  case BRAID_FRAMER_DELIMITER:
    return next_delimiter(f, buf, len, msg);
  case BRAID_FRAMER_CUSTOM:
    return next_custom(f, buf, len, msg);
  }
  return BRAID_EINVAL;
}

/* ---- framebuf --------------------------------------------------------------------------- */

int braid_framebuf_init(braid_framebuf_t *fb, const braid_framer_t *framer) {
  if (!fb || !framer || framer->kind < BRAID_FRAMER_BRAID || framer->kind > BRAID_FRAMER_CUSTOM)
    return BRAID_EINVAL;
  memset(fb, 0, sizeof(*fb));
  fb->framer = *framer;
  fb->framer.scanned = 0;
  return 0;
}

static void release_buf(braid_framebuf_t *fb) {
  braid__free(fb->buf);
  fb->buf = NULL;
  fb->cap = 0;
}

void braid_framebuf_free(braid_framebuf_t *fb) {
  if (!fb)
    return;
  release_buf(fb);
  fb->len = fb->consume = fb->in_len = fb->need_hint = 0;
  fb->in = NULL;
}

void braid_framebuf_reset(braid_framebuf_t *fb) {
  if (!fb)
    return;
  braid_framebuf_free(fb);
  fb->failed = 0;
  braid_framer_reset(&fb->framer);
}

size_t braid_framebuf_pending(const braid_framebuf_t *fb) {
  return fb ? fb->len - fb->consume : 0;
}

int braid_framebuf_push(braid_framebuf_t *fb, const void *data, size_t len) {
  if (!fb || (!data && len > 0))
    return BRAID_EINVAL;
  if (fb->failed)
    return fb->failed;
  if (fb->in_len > 0)
    return BRAID_EBUSY;
  fb->in = data;
  fb->in_len = len;
  return 0;
}

static int fail(braid_framebuf_t *fb, int err) {
  fb->failed = err;
  fb->in = NULL;
  fb->in_len = 0;
  return err;
}

/* Makes room for have bytes of a message whose total length is need (0 = unknown), have <=
 * the framer's maximum. Room follows the bytes that came, never what a header claims: with
 * the length known, the whole message when it is small (BRAID_FRAMEBUF_EAGER_BYTES), else
 * twice what arrived, capped at the length (so a message a little longer than one read still
 * gets its buffer in one allocation, and doubling toward 3 MiB does not allocate 4); with it
 * unknown, doubling. A 16-byte header declaring a megabyte thus commits 4 KiB, not the
 * megabyte, until the peer sends it. */
static int reserve(braid_framebuf_t *fb, size_t have, size_t need) {
  if (have <= fb->cap)
    return 0;
  size_t max = braid_framer_max_frame(&fb->framer);
  bool known = need >= have; /* a stale hint (need < have) counts as unknown */
  if (known && need < max)
    max = need;
  size_t cap;
  if (known)
    cap = have > BRAID_FRAMEBUF_EAGER_BYTES / 2 ? 2 * have : BRAID_FRAMEBUF_EAGER_BYTES;
  else
    cap = fb->cap * 2 > have ? fb->cap * 2 : have;
  if (cap < 256)
    cap = 256;
  if (cap > max)
    cap = max > have ? max : have;
  uint8_t *p = braid__realloc(fb->buf, cap);
  if (!p)
    return BRAID_ENOMEM;
  fb->buf = p;
  fb->cap = cap;
  return 0;
}

static int hand_out(braid_framebuf_msg_t *out, const uint8_t *base, const braid_framer_msg_t *m,
                    int copied) {
  out->frame = base;
  out->frame_len = m->frame_len;
  out->payload = base + m->payload_off;
  out->payload_len = m->payload_len;
  out->copied = copied;
  return 1;
}

/* Continues the partial message in fb->buf with pushed bytes. Appends only what the framer
 * says it needs when it knows; otherwise a growing chunk, and gives back whatever followed
 * the message, so the messages after it are still handed out from the pushed bytes. */
static int next_from_partial(braid_framebuf_t *fb, braid_framebuf_msg_t *out) {
  size_t max = braid_framer_max_frame(&fb->framer);
  braid_framer_msg_t m;
  for (;;) {
    if (fb->in_len == 0)
      return 0;
    size_t n;
    if (fb->need_hint > fb->len)
      n = fb->need_hint - fb->len;
    else
      n = fb->len > BRAID_FRAMEBUF_KEEP_BYTES ? fb->len : BRAID_FRAMEBUF_KEEP_BYTES;
    if (n > fb->in_len)
      n = fb->in_len;
    if (n > max - fb->len)
      n = max - fb->len;
    if (n == 0) /* a framer undecided at its own maximum: a custom one, misbehaving */
      return fail(fb, BRAID_ETOOBIG);
    int rc = reserve(fb, fb->len + n, fb->need_hint);
    if (rc < 0)
      return fail(fb, rc);
    memcpy(fb->buf + fb->len, fb->in, n);
    size_t before = fb->len;
    fb->len += n;
    fb->in += n;
    fb->in_len -= n;
    rc = braid_framer_next(&fb->framer, fb->buf, fb->len, &m);
    if (rc < 0)
      return fail(fb, rc);
    if (rc == 0) {
      fb->need_hint = m.need;
      continue;
    }
    /* The bytes before this append held no whole message, so anything past the message
     * came from this append: give it back to the pushed bytes. A framer that now finds a
     * message within bytes it already called incomplete (a custom one, inconsistent) would
     * make that hand back more than was appended. */
    if (m.frame_len <= before)
      return fail(fb, BRAID_EPROTO);
    size_t excess = fb->len - m.frame_len;
    fb->in -= excess;
    fb->in_len += excess;
    fb->len = m.frame_len;
    fb->consume = m.frame_len;
    fb->need_hint = 0;
    return hand_out(out, fb->buf, &m, 1);
  }
}

int braid_framebuf_next(braid_framebuf_t *fb, braid_framebuf_msg_t *out) {
  if (!fb || !out)
    return BRAID_EINVAL;
  if (fb->failed)
    return fb->failed;
  if (fb->consume) {
    /* A large buffer stays while the pushed bytes go on and it is not much larger than the
     * message it just held: a stream of messages each longer than a read (a 64 KiB batch)
     * then reassembles every one in the same buffer, instead of a malloc and free per
     * message. It goes when the pushed bytes end on a message boundary (below). */
    size_t held = fb->consume;
    fb->len = 0;
    fb->consume = 0;
    if (fb->cap > BRAID_FRAMEBUF_KEEP_BYTES && (fb->in_len == 0 || fb->cap / 2 > held))
      release_buf(fb);
  }
  if (fb->len > 0)
    return next_from_partial(fb, out);
  if (fb->in_len == 0) {
    if (fb->cap > BRAID_FRAMEBUF_KEEP_BYTES)
      release_buf(fb);
    return 0;
  }

  braid_framer_msg_t m;
  int rc = braid_framer_next(&fb->framer, fb->in, fb->in_len, &m);
  if (rc < 0)
    return fail(fb, rc);
  if (rc > 0) {
    const uint8_t *base = fb->in;
    fb->in += m.frame_len;
    fb->in_len -= m.frame_len;
    return hand_out(out, base, &m, 0);
  }
  /* A partial message ends the pushed bytes: keep it, sized for the whole message at once
   * when the framer knows its length and it is not huge. The framer bounded both by its
   * maximum already. */
  rc = reserve(fb, fb->in_len, m.need);
  if (rc < 0)
    return fail(fb, rc);
  memcpy(fb->buf, fb->in, fb->in_len);
  fb->len = fb->in_len;
  fb->need_hint = m.need;
  fb->in = NULL;
  fb->in_len = 0;
  return 0;
}

void braid_framebuf_reject(const braid_framebuf_t *fb, braid_frame_reject_t *out) {
  if (!out)
    return;
  int err = fb ? fb->failed : 0;
  if (err == 0) {
    *out = (braid_frame_reject_t){BRAID_WIRE_OK, "no error"};
  } else if (fb->framer.kind == BRAID_FRAMER_BRAID && (err == BRAID_EPROTO ||
                                                       err == BRAID_ETOOBIG) &&
             fb->framer.u.braid.reject.message) {
    *out = fb->framer.u.braid.reject;
  } else if (err == BRAID_ETOOBIG) {
    *out = (braid_frame_reject_t){BRAID_WIRE_TOO_BIG, "message exceeds the maximum size"};
  } else if (err == BRAID_EPROTO) {
    *out = (braid_frame_reject_t){BRAID_WIRE_PROTOCOL, "malformed message"};
  } else {
    *out = (braid_frame_reject_t){BRAID_WIRE_INTERNAL, "cannot frame the stream"};
  }
}

void braid_framebuf_trim(braid_framebuf_t *fb) {
  if (!fb || fb->len > fb->consume)
    return;
  if (fb->consume) {
    fb->len = 0;
    fb->consume = 0;
  }
  release_buf(fb);
}
