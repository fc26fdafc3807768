/* A RESP reply framer and command encoder (see resp.h). */
#include "resp.h"

#include <stdio.h>
#include <string.h>

/* Finds the CRLF ending the line that starts at buf[pos]. Returns 1 with *eol at the CR, 0
 * when the line is not complete yet, BRAID_EPROTO for a bare LF or a CR without its LF (a
 * RESP line never holds either). */
static int find_eol(const uint8_t *buf, size_t len, size_t pos, size_t *eol) {
  for (size_t i = pos; i < len; i++) {
    if (buf[i] == '\n')
      return BRAID_EPROTO;
    if (buf[i] == '\r') {
      if (i + 1 == len)
        return 0;
      if (buf[i + 1] != '\n')
        return BRAID_EPROTO;
      *eol = i;
      return 1;
    }
  }
  return 0;
}

/* Parses the decimal integer in buf[from..to): an optional '-' and 1..19 digits. */
static int parse_number(const uint8_t *buf, size_t from, size_t to, int64_t *out) {
  int neg = from < to && buf[from] == '-';
  size_t i = from + (size_t)neg;
  if (i == to || to - i > 19)
    return BRAID_EPROTO;
  uint64_t v = 0;
  for (; i < to; i++) {
    if (buf[i] < '0' || buf[i] > '9')
      return BRAID_EPROTO;
    v = v * 10 + (uint64_t)(buf[i] - '0');
  }
  if (v > (uint64_t)INT64_MAX)
    return BRAID_EPROTO;
  *out = neg ? -(int64_t)v : (int64_t)v;
  return 0;
}

int resp_frame(void *arg, const uint8_t *buf, size_t len, braid_framer_msg_t *msg) {
  (void)arg;
  int64_t left[RESP_MAX_DEPTH]; /* elements still to come in each open array */
  int depth = 0;
  size_t pos = 0;
  msg->need = 0;
  for (;;) {
    if (pos >= len)
      return 0;
    uint8_t type = buf[pos];
    if (!strchr("+-:$*", type) || type == 0)
      return BRAID_EPROTO;
    size_t eol;
    int rc = find_eol(buf, len, pos + 1, &eol);
    if (rc < 0)
      return rc;
    if (rc == 0) {
      /* A length or integer line cannot grow past its digits: reject it early. */
      if (type != '+' && type != '-' && len - pos - 1 > RESP_MAX_NUMBER_DIGITS + 1)
        return BRAID_EPROTO;
      return 0;
    }
    size_t next = eol + 2;
    int64_t n = 0;
    if (type == ':' || type == '$' || type == '*') {
      if (parse_number(buf, pos + 1, eol, &n) < 0)
        return BRAID_EPROTO;
    }
    if (type == '$' && n != -1) {
      if (n < 0 || n > RESP_MAX_BULK)
        return BRAID_EPROTO;
      size_t end = next + (size_t)n; /* where the bulk's CRLF starts */
      if (len < end + 2) {
        msg->need = end + 2;
        return 0;
      }
      if (buf[end] != '\r' || buf[end + 1] != '\n')
        return BRAID_EPROTO;
      next = end + 2;
    }
    pos = next;
    if (type == '*' && n != -1 && n != 0) {
      if (n < 0 || n > RESP_MAX_ELEMENTS || depth == RESP_MAX_DEPTH)
        return BRAID_EPROTO;
      left[depth++] = n;
      continue; /* its elements follow */
    }
    /* One element is complete: it may complete the arrays around it. */
    while (depth > 0 && --left[depth - 1] == 0)
      depth--;
    if (depth == 0) {
      msg->frame_len = pos;
      msg->payload_off = 0;
      msg->payload_len = pos;
      return pos > (size_t)INT32_MAX ? BRAID_ETOOBIG : (int)pos;
    }
  }
}

int resp_framer_init(braid_framer_t *f, size_t max_bytes) {
  return braid_framer_init_custom(f, resp_frame, NULL, max_bytes);
}

size_t resp_command(uint8_t *out, size_t cap, int argc, const char *const *argv) {
  size_t off = 0;
  int n = snprintf((char *)out, cap, "*%d\r\n", argc);
  if (n < 0 || (size_t)n >= cap)
    return 0;
  off = (size_t)n;
  for (int i = 0; i < argc; i++) {
    size_t alen = strlen(argv[i]);
    n = snprintf((char *)out + off, cap - off, "$%zu\r\n", alen);
    if (n < 0 || (size_t)n >= cap - off || cap - off - (size_t)n < alen + 2)
      return 0;
    off += (size_t)n;
    memcpy(out + off, argv[i], alen);
    memcpy(out + off + alen, "\r\n", 2);
    off += alen + 2;
  }
  return off;
}
