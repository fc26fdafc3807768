/* braid: the HTTP/1.1 parser seam, on llhttp (see http_parser.h), for requests and
 * responses.
 *
 * The only file of braid that includes llhttp.h. llhttp is compiled with
 * LLHTTP_STRICT_MODE=1 (8.1.0 without it accepts a bare CR inside a header value and chunk
 * data not followed by CRLF, both request-smuggling shapes) and none of its lenient flags
 * is ever turned on: a request with both Content-Length and Transfer-Encoding, a repeated
 * Content-Length, or a Transfer-Encoding whose last coding is not chunked is an error. */
#include <llhttp.h>

#include "http_parser.h"
#include "internal.h"

struct braid__hp_s {
  llhttp_t parser;
  const braid__hp_callbacks_t *cbs;
  void *user;
  braid__hp_head_t head;
  int version_error;
  int bad_value;
  /* Obsolete line folding: llhttp 8.1.0 hands a folded continuation to on_header_value as
   * one more piece of the same value. A genuine piece of a value split across reads starts
   * where the previous piece ended, or at the start of the next buffer when the previous
   * piece ran to the end of its own; any other start means line breaks were skipped. */
  const char *exec_start, *exec_end;
  const char *value_end; /* end of the previous piece of the current value, or NULL */
  int value_to_end;      /* that piece ran to the end of its buffer */
};

static braid__hp_t *hp_of(llhttp_t *p) {
  return BRAID__CONTAINER_OF(p, braid__hp_t, parser);
}

/* Maps a braid callback result to llhttp's. */
static int map_rc(int rc) {
  if (rc == BRAID__HP_PAUSE)
    return HPE_PAUSED;
  return rc < 0 ? -1 : 0;
}

static int on_message_begin(llhttp_t *p) {
  braid__hp_t *hp = hp_of(p);
  return hp->cbs->on_message_begin ? map_rc(hp->cbs->on_message_begin(hp->user)) : 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  braid__hp_t *hp = hp_of(p);
  return hp->cbs->on_url ? map_rc(hp->cbs->on_url(hp->user, at, len)) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  braid__hp_t *hp = hp_of(p);
  return hp->cbs->on_header_field ? map_rc(hp->cbs->on_header_field(hp->user, at, len)) : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  braid__hp_t *hp = hp_of(p);
  /* llhttp 8.1.0 passes an obsolete line fold (CRLF then a space) through inside the value;
   * RFC 9112 section 5.2 lets a server reject it, and a value with a line break in it is a
   * smuggling shape, so any CR or LF fails the request. */
  int folded = hp->value_end && at != hp->value_end &&
               !(hp->value_to_end && at == hp->exec_start);
  if (folded || memchr(at, '\r', len) || memchr(at, '\n', len)) {
    hp->bad_value = 1;
    return -1;
  }
  hp->value_end = at + len;
  hp->value_to_end = at + len == hp->exec_end;
  return hp->cbs->on_header_value ? map_rc(hp->cbs->on_header_value(hp->user, at, len)) : 0;
}

static int on_header_value_complete(llhttp_t *p) {
  braid__hp_t *hp = hp_of(p);
  hp->value_end = NULL;
  return hp->cbs->on_header_value_complete
             ? map_rc(hp->cbs->on_header_value_complete(hp->user))
             : 0;
}

static int on_headers_complete(llhttp_t *p) {
  braid__hp_t *hp = hp_of(p);
  braid__hp_head_t *h = &hp->head;
  h->method = p->type == HTTP_RESPONSE ? NULL : llhttp_method_name((llhttp_method_t)p->method);
  h->status_code = p->type == HTTP_RESPONSE ? p->status_code : 0;
  h->http_major = p->http_major;
  h->http_minor = p->http_minor;
  if (h->http_major != 1 || h->http_minor > 1) {
    hp->version_error = 1;
    return -1;
  }
  h->keep_alive = llhttp_should_keep_alive(p);
  h->chunked = (p->flags & F_CHUNKED) != 0;
  h->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h->content_length = h->has_length ? p->content_length : 0;
  h->upgrade = p->upgrade;
  int rc = hp->cbs->on_headers_complete ? hp->cbs->on_headers_complete(hp->user, h) : 0;
  if (rc == BRAID__HP_SKIP_BODY)
    return 1;
  return map_rc(rc);
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  braid__hp_t *hp = hp_of(p);
  /* llhttp flushes an open span at the end of every execute, even an empty one (running
   * it on no input after a pause does that): not a piece of body. */
  if (len == 0)
    return 0;
  return hp->cbs->on_body ? map_rc(hp->cbs->on_body(hp->user, at, len)) : 0;
}

static int on_message_complete(llhttp_t *p) {
  braid__hp_t *hp = hp_of(p);
  return hp->cbs->on_message_complete ? map_rc(hp->cbs->on_message_complete(hp->user)) : 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static int hp_new(braid__hp_t **out, llhttp_type_t type, const braid__hp_callbacks_t *cbs,
                  void *user) {
  braid__hp_t *hp = braid__calloc(1, sizeof(*hp));
  if (!hp)
    return BRAID_ENOMEM;
  llhttp_init(&hp->parser, type, &settings);
  hp->cbs = cbs;
  hp->user = user;
  *out = hp;
  return 0;
}

int braid__hp_new(braid__hp_t **out, const braid__hp_callbacks_t *cbs, void *user) {
  return hp_new(out, HTTP_REQUEST, cbs, user);
}

int braid__hp_new_response(braid__hp_t **out, const braid__hp_callbacks_t *cbs, void *user) {
  return hp_new(out, HTTP_RESPONSE, cbs, user);
}

int braid__hp_finish(braid__hp_t *hp) {
  llhttp_errno_t err = llhttp_finish(&hp->parser);
  if (err == HPE_OK)
    return BRAID__HP_OK;
  return err == HPE_PAUSED ? BRAID__HP_PAUSED : BRAID__HP_EBADREQ;
}

int braid__hp_idle(const braid__hp_t *hp) {
  return hp->parser.finish == HTTP_FINISH_SAFE;
}

void braid__hp_free(braid__hp_t *hp) {
  braid__free(hp);
}

int braid__hp_execute(braid__hp_t *hp, const char *data, size_t len, size_t *consumed) {
  hp->exec_start = data;
  hp->exec_end = data + len;
  llhttp_errno_t err = llhttp_execute(&hp->parser, data, len);
  if (err == HPE_OK) {
    *consumed = len;
    return BRAID__HP_OK;
  }
  const char *pos = llhttp_get_error_pos(&hp->parser);
  *consumed = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
  switch (err) {
  case HPE_PAUSED:
    return BRAID__HP_PAUSED;
  case HPE_PAUSED_UPGRADE:
    return BRAID__HP_UPGRADE;
  case HPE_INVALID_VERSION:
    return BRAID__HP_EVERSION;
  case HPE_USER:
  case HPE_CB_MESSAGE_BEGIN:
  case HPE_CB_HEADERS_COMPLETE:
  case HPE_CB_MESSAGE_COMPLETE:
  case HPE_CB_HEADER_VALUE_COMPLETE:
    if (hp->version_error)
      return BRAID__HP_EVERSION;
    return hp->bad_value ? BRAID__HP_EBADREQ : BRAID__HP_ECALLBACK;
  default:
    return BRAID__HP_EBADREQ;
  }
}

void braid__hp_resume(braid__hp_t *hp) {
  llhttp_resume(&hp->parser);
}

const char *braid__hp_error_reason(const braid__hp_t *hp) {
  const char *r = llhttp_get_error_reason(&hp->parser);
  return r ? r : "ok";
}

#define BRAID__STR2(x) #x
#define BRAID__STR(x) BRAID__STR2(x)
const char *braid__hp_version(void) {
  return "llhttp " BRAID__STR(LLHTTP_VERSION_MAJOR) "." BRAID__STR(
      LLHTTP_VERSION_MINOR) "." BRAID__STR(LLHTTP_VERSION_PATCH);
}
