/* braid: the HTTP/1.1 parser seam (private), for requests (the server) and responses (the
 * client).
 *
 * braid parses HTTP with llhttp, and only lib/http_parser.c includes llhttp.h: the rest of
 * the http layer sees this small interface, so the parser can be swapped (a newer llhttp,
 * another parser) by rewriting one file. The interface does no I/O and allocates only the
 * parser itself: bytes in, callbacks out, as llhttp does.
 *
 * Every callback returns 0 to go on, BRAID__HP_PAUSE to stop after the current callback
 * (braid__hp_execute() then returns BRAID__HP_PAUSED with the bytes consumed so far; call
 * braid__hp_resume() and feed the rest later), or -1 to fail the parse (BRAID__HP_ECALLBACK).
 * on_headers_complete may also return BRAID__HP_SKIP_BODY (treat the request as having no
 * body). Data callbacks may be called several times for one item (a header name split across
 * reads arrives in pieces). */
#ifndef BRAID_HTTP_PARSER_H
#define BRAID_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#define BRAID__HP_PAUSE 1
#define BRAID__HP_SKIP_BODY 2

/* Results of braid__hp_execute(). */
enum {
  BRAID__HP_OK = 0,         /* every byte consumed */
  BRAID__HP_PAUSED = 1,     /* a callback asked to pause; *consumed says where */
  BRAID__HP_UPGRADE = 2,    /* the request asked to switch protocols (Upgrade, CONNECT): the
                               bytes after it are not HTTP; *consumed says where they start */
  BRAID__HP_EBADREQ = -1,   /* malformed or ambiguous request (smuggling shapes included) */
  BRAID__HP_EVERSION = -2,  /* an HTTP version other than 1.0 / 1.1 */
  BRAID__HP_ECALLBACK = -3, /* a callback returned -1 */
};

/* What is known when the header section is complete. */
typedef struct braid__hp_head_s {
  const char *method; /* static, e.g. "GET" */
  unsigned http_major, http_minor;
  int keep_alive;       /* the request allows the connection to stay open afterwards */
  int chunked;          /* Transfer-Encoding: chunked */
  int has_length;       /* a Content-Length was given */
  uint64_t content_length;
  int upgrade;          /* Upgrade or CONNECT (requests), 101 Switching Protocols (responses) */
  unsigned status_code; /* responses: the status code (100..999); requests: 0 */
} braid__hp_head_t;

typedef struct braid__hp_callbacks_s {
  int (*on_message_begin)(void *user);
  int (*on_url)(void *user, const char *at, size_t len);
  int (*on_header_field)(void *user, const char *at, size_t len);
  int (*on_header_value)(void *user, const char *at, size_t len);
  int (*on_header_value_complete)(void *user);
  int (*on_headers_complete)(void *user, const braid__hp_head_t *head);
  int (*on_body)(void *user, const char *at, size_t len);
  int (*on_message_complete)(void *user);
} braid__hp_callbacks_t;

typedef struct braid__hp_s braid__hp_t;

/* Makes a request parser calling cbs (kept by pointer: it must outlive the parser) with
 * user. Returns 0, or BRAID_ENOMEM. */
int braid__hp_new(braid__hp_t **out, const braid__hp_callbacks_t *cbs, void *user);

/* Makes a response parser (the client side): the same callbacks, on_url never called, and
 * head->status_code set. A response's framing may depend on the request it answers: the
 * caller's on_headers_complete returns BRAID__HP_SKIP_BODY for the answer to a HEAD. 1xx,
 * 204 and 304 responses have no body; a response with neither Content-Length nor chunked
 * framing runs until the connection ends (braid__hp_finish). Returns 0, or BRAID_ENOMEM. */
int braid__hp_new_response(braid__hp_t **out, const braid__hp_callbacks_t *cbs, void *user);

/* The peer ended the stream (EOF). Completes a response read until the connection closes
 * (on_message_complete runs, from inside this call). Returns BRAID__HP_OK when the stream
 * ended between messages or at the end of such a body, BRAID__HP_EBADREQ when it ended
 * inside a message (a truncated response), or BRAID__HP_PAUSED when on_message_complete
 * asked to pause (the message is complete all the same). */
int braid__hp_finish(braid__hp_t *hp);

/* True when the parser is between messages (nothing of a new one read yet). */
int braid__hp_idle(const braid__hp_t *hp);
void braid__hp_free(braid__hp_t *hp);

/* Parses data[0..len). Returns one of the results above; *consumed is the number of bytes
 * parsed (all of them for BRAID__HP_OK; up to the pause or upgrade point otherwise; up to the
 * error for errors). After an error the parser stays failed. */
int braid__hp_execute(braid__hp_t *hp, const char *data, size_t len, size_t *consumed);

/* Continues after BRAID__HP_PAUSED. */
void braid__hp_resume(braid__hp_t *hp);

/* A short reason for the last error (static). */
const char *braid__hp_error_reason(const braid__hp_t *hp);

/* The parser's version, e.g. "llhttp 8.1.0". */
const char *braid__hp_version(void);

#endif
