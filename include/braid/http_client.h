/* braid: an HTTP/1.1 client session.
 *
 * A braid_http_client_t is what requests.Session is to Python: one object on a loop that
 * makes HTTP/1.1 requests and keeps their connections alive between them.
 * - keep-alive: connections are kept per host and port and reused, most recently used
 *   first, within a per-host and a total limit; an idle one closes after idle_timeout_ms.
 *   Requests beyond the limits wait in a FIFO queue (bounded: max_queued).
 * - timeouts per request, each reported with the phase it cut: getting a connection (name
 *   resolution, connect, queueing), the response's header section, the whole exchange.
 * - responses delivered whole (up to max_body_bytes), or streamed piece by piece with
 *   bounded memory: braid_http_client_req_pause() stops reading the connection until
 *   braid_http_client_req_resume(). Content-Length, chunked and read-until-close bodies;
 *   1xx responses skipped; HEAD, 204 and 304 without a body.
 * - gzip and deflate bodies decoded (Accept-Encoding: gzip, deflate is sent by default),
 *   with braid's decompression-bomb limits (braid/gzip.h).
 * - the keep-alive race handled as Go's Transport and urllib3 do: a request written on a
 *   reused connection that turns out to have been closed by the server before any byte of
 *   the answer came back is sent once more on a fresh connection when its method is
 *   idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) or the caller marked it safe;
 *   never otherwise (a POST fails with the connection's error).
 * - pipelining, opt-in per host (braid_http_client_pipeline), for idempotent requests;
 *   requests made in one loop iteration leave in one write per connection (braid's
 *   connections coalesce writes), so many small requests to one host go out batched.
 * - redirects off by default; opt-in per request with a cap (max_redirects). 303 turns any
 *   method but HEAD into GET, 301 and 302 turn a POST into GET (RFC 9110 section 15.4);
 *   307 and 308 keep the method and body.
 *
 * Names are resolved by braid_connect() (braid/client.h), with c-ares on the loop.
 * https:// URLs connect with TLS (braid/tls.h; the context is opts.client.tls, or a default
 * one verifying against the system's CAs); a build without TLS refuses them with
 * BRAID_ENOTSUP.
 *
 * Why a header of its own, beside braid/http.h: the client and the server are two modules
 * (lib/http_client.c, lib/http_server.c) that share only the header type and the llhttp
 * seam (lib/http_parser.c); a program that makes requests should not have to read the
 * server's API to find the client's. It includes braid/http.h for braid_http_header_t.
 *
 * Threads: a client and its requests belong to the loop that created it (docs/API.md
 * rule 7). */
#ifndef BRAID_HTTP_CLIENT_H
#define BRAID_HTTP_CLIENT_H

#include "client.h"
#include "common.h"
#include "error.h"
#include "http.h"
#include "loop.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_http_client_s braid_http_client_t;
typedef struct braid_http_client_req_s braid_http_client_req_t;

/* Where a request was when it ended. */
typedef enum {
  BRAID_HTTP_PHASE_CONNECT = 0, /* getting a connection: queued, resolving, connecting */
  BRAID_HTTP_PHASE_SEND = 1,    /* writing the request */
  BRAID_HTTP_PHASE_HEADERS = 2, /* waiting for or reading the response's header section */
  BRAID_HTTP_PHASE_BODY = 3,    /* reading the response body */
  BRAID_HTTP_PHASE_DONE = 4,    /* the response is complete */
} braid_http_phase_t;

/* Which deadline ended a request whose status is BRAID_ETIMEDOUT. */
typedef enum {
  BRAID_HTTP_TIMEOUT_NONE = 0,    /* no deadline passed */
  BRAID_HTTP_TIMEOUT_CONNECT = 1, /* connect_timeout_ms: no connection in time */
  BRAID_HTTP_TIMEOUT_HEADER = 2,  /* header_timeout_ms: no complete response header */
  BRAID_HTTP_TIMEOUT_TOTAL = 3,   /* total_timeout_ms: the whole exchange took too long */
} braid_http_timeout_t;

/* Options of one request; the client's opts.req holds the defaults used when a request is
 * made with NULL options. */
typedef struct braid_http_client_req_opts_s {
  /* From the request call until the request is being written on a connection (queueing
   * for a connection, name resolution, connect): past it the request fails with
   * BRAID_ETIMEDOUT, phase CONNECT, timeout CONNECT. Default 10000. 0 = none. Bounds
   * 0..(1 << 31). */
  uint64_t connect_timeout_ms;
  /* From the first byte of the request written until the response's header section is
   * complete (interim 1xx responses do not stop it): BRAID_ETIMEDOUT, timeout HEADER, and
   * the connection closes. Default 30000. 0 = none. Bounds 0..(1 << 31). */
  uint64_t header_timeout_ms;
  /* The whole exchange, redirects and a retry included: BRAID_ETIMEDOUT, timeout TOTAL.
   * Default 0 = none. Bounds 0..(1 << 31). */
  uint64_t total_timeout_ms;
  /* Largest response body, after decoding, for a whole response and for a streamed one
   * (summed over its pieces); more fails with BRAID_ETOOBIG, phase BODY, and the connection
   * closes. Default 64 MiB. 0 = no limit (streamed responses only: a whole response needs
   * one). Bounds 0..(1 << 40). */
  uint64_t max_body_bytes;
  /* 1 (default): send Accept-Encoding: gzip, deflate (unless the request has its own) and
   * decode gzip and deflate bodies; 0: send none and hand bodies over as they came. */
  int decompress;
  /* Decoding: most output bytes per input byte past 1 MiB of output (braid/gzip.h
   * max_ratio). Default 200. 0 = off. */
  uint32_t decode_max_ratio;
  /* Redirects (301, 302, 303, 307, 308 with a Location) followed before the response is
   * handed over as it is. Default 0: none followed. Bounds 0..64. */
  unsigned max_redirects;
  /* 1: retry a non-idempotent request (POST, PATCH) once on a fresh connection after the
   * keep-alive race, as an idempotent one is. Only when the caller knows the server cannot
   * have acted on it twice (an idempotency key). Default 0. Bounds 0..1. */
  int retry_unsafe;
} braid_http_client_req_opts_t;

typedef struct braid_http_client_opts_s {
  /* How connections are made (braid/client.h): socket and connection options, the timeout
   * of one connect attempt, connect retries. Defaults of braid_client_opts_init().
   * client.tls is the TLS context (role BRAID_TLS_CLIENT) for https:// URLs only (plain
   * http:// connections never use it); the session holds a reference. NULL (default): at
   * the first https request the session makes one with braid_tls_opts_init()'s defaults:
   * the system's CAs, the host name verified, SNI sent. In a build without TLS, https://
   * requests fail with BRAID_ENOTSUP. */
  braid_client_opts_t client;
  /* Connections to one host and port (open and connecting). Default 8. Bounds 1..65536. */
  unsigned max_per_host;
  /* Connections in all. When a request needs a new connection at the total limit, the
   * least recently used idle connection (of another host) is closed for it. Default 64.
   * Bounds 1..(1 << 20). */
  unsigned max_total;
  /* An idle kept-alive connection closes after this long. Keep it below the servers'
   * keep-alive timeout (nginx 75 s) so the client, not the server, usually closes first.
   * Default 30000. 0 = never. Bounds 0..(1 << 31). */
  uint64_t idle_timeout_ms;
  /* Requests waiting for a connection, in all; one more is refused with BRAID_EPOOLFULL.
   * Default 65536. Bounds 0..(1 << 24). */
  unsigned max_queued;
  /* Most bytes of header fields (names and values) in one response, and most header
   * fields: more fails with BRAID_ETOOBIG, phase HEADERS. Defaults 65536 and 128. Bounds
   * 256..(1 << 24) and 1..10000. */
  size_t max_header_bytes;
  unsigned max_headers;
  /* Interim (1xx) responses skipped before a final one; one more is BRAID_EPROTO. Default
   * 16. Bounds 0..1000. */
  unsigned max_informational;
  /* The User-Agent sent unless a request has its own; NULL sends none. Copied. Default
   * "braid/<version>". */
  const char *user_agent;
  /* Defaults for requests made with NULL options. */
  braid_http_client_req_opts_t req;
} braid_http_client_opts_t;

/* A response, or what is known of it when a request failed. Valid during the callback. */
typedef struct braid_http_client_response_s {
  int http_status;  /* the status code; 0 when no final response header arrived */
  int http_version; /* 10 or 11; 0 when none */
  braid_http_phase_t phase;     /* where the request was when it ended */
  braid_http_timeout_t timeout; /* with BRAID_ETIMEDOUT: which deadline passed */
  const braid_http_header_t *headers; /* the response's header fields, as received */
  size_t nheaders;
  /* A whole response: the body, decoded; NULL with body_len 0 when empty. */
  const uint8_t *body;
  size_t body_len;
  const char *url;    /* the URL that answered (after redirects), NUL-terminated */
  int reused;         /* 1 when the answer came on a connection that had carried another */
  unsigned retries;   /* times the request was sent again after the keep-alive race */
  unsigned redirects; /* redirects followed */
} braid_http_client_response_t;

/* A request ended, or (streamed requests) its response's header section arrived. status 0:
 * res describes the response (whole, or its header section when a body callback was given:
 * the body follows through it). status < 0: the request failed, and res says where
 * (res->phase, res->timeout) and what came back (res->http_status, or 0):
 * BRAID_ETIMEDOUT (res->timeout says which), a connect or resolution error from
 * braid_connect (UV_ECONNREFUSED, UV_EAI_NONAME, ...; phase CONNECT), UV_ECONNRESET or
 * UV_EOF (the server closed without answering), BRAID_EPROTO (a malformed response),
 * BRAID_ETOOBIG (header section or body over its limit), BRAID_ETRUNCATED (the connection
 * ended inside the body), a decompression error (BRAID_ECORRUPT, BRAID_ERATIO,
 * BRAID_EOUTPUTCAP, ...), BRAID_ECANCELED (cancelled, or the client closed). Exactly once
 * per accepted request, never from inside the call that made it. */
typedef void (*braid_http_client_response_cb)(braid_http_client_req_t *req, int status,
                                              const braid_http_client_response_t *res,
                                              void *arg);

/* A piece of a streamed response body (status 0: data[0..len), decoded, valid during the
 * call), its end (status BRAID_EOF, len 0), or an error after the header section (status
 * < 0, as for the response callback, phase BODY); after BRAID_EOF or an error it is not
 * called again, and the request is finished when it returns. */
typedef void (*braid_http_client_body_cb)(braid_http_client_req_t *req, int status,
                                          const uint8_t *data, size_t len, void *arg);

/* braid_http_client_close() has finished: every request has completed and every
 * connection is closed. status is 0. The client is freed when this returns. */
typedef void (*braid_http_client_close_cb)(braid_http_client_t *client, int status, void *arg);

/* Counters of a client since it was made. */
typedef struct braid_http_client_stats_s {
  uint64_t requests;         /* requests accepted */
  uint64_t completed;        /* ended with a response (any HTTP status) */
  uint64_t failed;           /* ended with an error (cancellations included) */
  uint64_t sent;             /* requests written on a connection (retries and redirects
                                count again) */
  uint64_t reused;           /* of those, written on a connection that carried another:
                                reuse ratio = reused / sent */
  uint64_t connects;         /* connections established */
  uint64_t connect_failures; /* connects that failed */
  uint64_t retries;          /* requests sent again after the keep-alive race */
  uint64_t redirects;        /* redirects followed */
  uint64_t bytes_sent;       /* request bytes written (head and body) */
  uint64_t body_bytes_wire;  /* response body bytes as received (after chunked framing) */
  uint64_t body_bytes_decoded; /* response body bytes after decompression */
  uint64_t open;             /* connections open now */
  uint64_t idle;             /* of those, idle now */
  uint64_t queued;           /* requests waiting for a connection now */
  braid_histogram_t latency_us; /* request call to completion, of completed requests, us */
} braid_http_client_stats_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_http_client_req_opts_init(braid_http_client_req_opts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with the
 * field and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_http_client_req_opts_validate(const braid_http_client_req_opts_t *o,
                                                     braid_opts_error_t *err);

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_http_client_opts_init(braid_http_client_opts_t *o);

/* Checks every field against its documented bounds (client with braid_client_opts_validate,
 * reported as "client.<field>"; req as "req.<field>"). Returns 0, or BRAID_EINVAL with the
 * field and the reason in *err (err may be NULL). braid_http_client_new() runs this check. */
BRAID_EXTERN int braid_http_client_opts_validate(const braid_http_client_opts_t *o,
                                                 braid_opts_error_t *err);

/* Creates a client on loop with options o (copied; NULL = defaults). It counts as a live
 * object on loop (braid_loop_close() refuses) until its close callback ran. Returns 0 and
 * the client in *out, BRAID_EINVAL (out or loop NULL, or a bad option:
 * braid_http_client_opts_validate() says which, and the loop's log hook is told),
 * BRAID_ECLOSED (the loop is closing) or BRAID_ENOMEM; on error *out is untouched. */
BRAID_EXTERN int braid_http_client_new(braid_http_client_t **out, braid_loop_t *loop,
                                       const braid_http_client_opts_t *o);

/* The client's user data (docs/API.md rule 3): braid never reads it. NULL at first. */
BRAID_EXTERN void braid_http_client_set_data(braid_http_client_t *client, void *data);
BRAID_EXTERN void *braid_http_client_get_data(const braid_http_client_t *client);

/* Starts a request: method (a token such as "GET" or "PATCH"; NULL = "GET"), url
 * ("http://host[:port][/path][?query]", a host name, an IPv4 literal or a bracketed IPv6
 * literal; a fragment is dropped), headers[0..nheaders) (names and values NUL-terminated,
 * without CR or LF; not Content-Length, Transfer-Encoding or Connection, which the client
 * writes) and body[0..body_len) (copied; sent with a Content-Length). The client adds Host,
 * User-Agent and Accept-Encoding unless headers has them. o: NULL = the client's opts.req;
 * otherwise copied.
 * Without body_cb, cb gets the whole response (or the error), exactly once. With body_cb,
 * cb gets the header section (or an error before it), then body_cb the body in pieces and
 * BRAID_EOF (or an error); a response to HEAD, or a 204 or 304, goes straight to BRAID_EOF.
 * Callbacks never run from inside this call. *out (may be NULL) receives the request's
 * handle, valid until its last callback has returned.
 * Returns 0, BRAID_EINVAL (client or cb NULL, a malformed URL, method or header, a bad
 * option: braid_http_client_req_opts_validate() says which), BRAID_ENOTSUP (an https://
 * URL in a build without TLS), braid_tls_ctx_new()'s error (the default TLS context could
 * not be made), BRAID_EPOOLFULL (max_queued requests are waiting),
 * BRAID_ECLOSED (the client is closing) or BRAID_ENOMEM; then no callback runs. */
BRAID_EXTERN int braid_http_client_request(braid_http_client_req_t **out,
                                           braid_http_client_t *client, const char *method,
                                           const char *url, const braid_http_header_t *headers,
                                           size_t nheaders, const void *body, size_t body_len,
                                           const braid_http_client_req_opts_t *o,
                                           braid_http_client_response_cb cb,
                                           braid_http_client_body_cb body_cb, void *arg);

/* A GET of url with the client's default options, the whole response to cb: the same as
 * braid_http_client_request(out, client, "GET", url, NULL, 0, NULL, 0, NULL, cb, NULL,
 * arg), with the same results. */
BRAID_EXTERN int braid_http_client_get(braid_http_client_req_t **out, braid_http_client_t *client,
                                       const char *url, braid_http_client_response_cb cb,
                                       void *arg);

/* Streamed responses: stops delivering body pieces (the connection is not read, so TCP
 * flow control slows the server; what was read already is kept, at most one read's worth)
 * until braid_http_client_req_resume(); pieces then come from the loop, never from inside
 * resume. Pausing inside body_cb stops before the next piece. Timeouts keep running
 * (total_timeout_ms bounds a paused request). Return 0, or BRAID_EINVAL (req NULL, not a
 * streamed request, or already finished). */
BRAID_EXTERN int braid_http_client_req_pause(braid_http_client_req_t *req);
BRAID_EXTERN int braid_http_client_req_resume(braid_http_client_req_t *req);

/* Cancels a request: its callback (cb, or body_cb once the header section was delivered)
 * runs with BRAID_ECANCELED from inside this call, unless it is running now; a request on
 * the wire takes its connection down with it (the answer can no longer be skipped). Returns
 * 0, or BRAID_EINVAL (req NULL or already finished). */
BRAID_EXTERN int braid_http_client_req_cancel(braid_http_client_req_t *req);

/* Allows pipelining to host:port: up to depth idempotent requests (GET, HEAD, PUT, DELETE,
 * OPTIONS, TRACE) in flight on one connection, written before the answers to the earlier
 * ones arrived; depth 1 turns it off (the default for every host). A request behind one
 * that fails on a pipelined connection is sent again on another connection, once. host is
 * compared as written in URLs (case-insensitively). Returns 0, BRAID_EINVAL (NULL host,
 * port outside 1..65535, depth outside 1..1024) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_http_client_pipeline(braid_http_client_t *client, const char *host,
                                            int port, unsigned depth);

/* The value of the first header named name (case-insensitive) of res, NUL-terminated, or
 * NULL. */
BRAID_EXTERN const char *braid_http_client_response_header(const braid_http_client_response_t *res,
                                                           const char *name);

/* The phase's name ("connect", "send", "headers", "body", "done"); static, never NULL. */
BRAID_EXTERN const char *braid_http_phase_name(braid_http_phase_t phase);

/* Copies the client's counters into out (a large struct: it holds a histogram). */
BRAID_EXTERN void braid_http_client_stats(const braid_http_client_t *client,
                                          braid_http_client_stats_t *out);

/* Closes the client: requests not finished complete with BRAID_ECANCELED (from inside this
 * call), connects are cancelled, connections close; then cb (may be NULL) runs once from
 * the loop, never from inside this call, and the client is freed. Closing from one of the
 * client's callbacks is allowed. Returns 0, BRAID_EINVAL (client NULL) or BRAID_ECLOSED
 * (already closing; cb will not run). */
BRAID_EXTERN int braid_http_client_close(braid_http_client_t *client, braid_http_client_close_cb cb,
                                         void *arg);

#ifdef __cplusplus
}
#endif
#endif
