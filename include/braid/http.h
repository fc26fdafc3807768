/* braid: an HTTP/1.1 server.
 *
 * A braid_http_server_t serves HTTP/1.1 (and 1.0) on braid connections: give it the
 * connections a braid_server_t accepts (pass braid_http_server_on_connection as the server's
 * connection callback, with the http server as its user data), or any other braid_conn_t
 * (braid_http_server_serve). It parses requests with llhttp (strict mode), routes them by
 * method and path to handlers, and writes the responses in request order, whatever order the
 * handlers finish in.
 *
 * Handlers answer at once or later: from a callback on the same loop, or, after posting
 * work to another thread, from a function posted back to the request's loop
 * (braid_loop_post(braid_http_req_loop(req), ...)). A response is whole
 * (braid_http_respond) or streamed (braid_http_res_begin, _write, _end) with Content-Length
 * or chunked, and streamed writes say when to pause (BRAID_HTTP_WAIT) and call back when to
 * go on, so a handler producing a large body holds memory to the connection's watermarks.
 *
 * Requests are read with limits (request target 414, header bytes and count 431, body 413),
 * malformed and ambiguous requests (the request-smuggling shapes, Content-Length with
 * Transfer-Encoding) get 400 and the connection closes, and timeouts are on by default
 * (header section, idle keep-alive, body reads). A connection whose queued responses are over
 * its high watermark, or that has max_pipelined requests in flight, is not read from until
 * that clears. Responses are compressed (gzip or deflate, from Accept-Encoding) when they are
 * large enough and of a compressible type; gzip or deflate request bodies are decoded with
 * braid's decompression limits.
 *
 * Drain: when the braid_server_t that accepted a connection drains, idle keep-alive
 * connections close at once, and busy ones answer the requests they took (the last response
 * says Connection: close) and close.
 *
 * Threads: routes are set up before serving. With a braid server's worker threads, handlers
 * run on each worker's loop; a request and its connection belong to that loop. Everything
 * else about a braid_http_server_t (creating, closing, stats) happens on the loop that
 * created it; braid_http_server_stats* may be called from any of the serving loops. */
#ifndef BRAID_HTTP_H
#define BRAID_HTTP_H

#include "blob.h"
#include "cache.h"
#include "common.h"
#include "conn.h"
#include "loop.h"
#include "server.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_http_server_s braid_http_server_t;
typedef struct braid_http_req_s braid_http_req_t;

/* A response header given by a handler: name and value, NUL-terminated, neither containing
 * CR or LF. */
typedef struct braid_http_header_s {
  const char *name;
  const char *value;
} braid_http_header_t;

typedef struct braid_http_server_opts_s {
  /* Longest request target (the URL in the request line), in bytes; longer gets 414 and the
   * connection closes. Default 8192. Bounds 64..1048576. */
  size_t max_target_bytes;
  /* Most bytes of header fields (names and values) in one request; more gets 431 and the
   * connection closes. Default 16384. Bounds 256..4194304. */
  size_t max_header_bytes;
  /* Most header fields in one request; more gets 431 and the connection closes. Default 100.
   * Bounds 1..10000. */
  unsigned max_headers;
  /* Largest request body, after decoding a gzip or deflate Content-Encoding; larger gets 413
   * (and the connection closes when the rest of the body would have to be read to go on).
   * Applies to buffered and streamed bodies. Default 1 MiB. Bounds 0..(1 << 40). */
  uint64_t max_body_bytes;
  /* Most requests of one connection received and not yet answered (pipelining); reading
   * pauses there until responses complete. Default 16. Bounds 1..1024. */
  unsigned max_pipelined;
  /* Most requests on one connection; the response to the last says Connection: close (as
   * nginx's keepalive_requests). Default 1000. 0 = no limit. Bounds 0..(1 << 30). */
  unsigned keepalive_requests;
  /* A request's header section must arrive whole within this long from its first byte
   * (slowloris), and a new connection's first request must start within it. On expiry the
   * connection closes (with 408 when no earlier response is pending). Default 60000.
   * 0 = off. Bounds 0..(1 << 31). */
  uint64_t header_timeout_ms;
  /* An idle keep-alive connection (no request in progress, none pending) closes after this
   * long. Default 75000 (nginx). 0 = off. Bounds 0..(1 << 31). */
  uint64_t keepalive_timeout_ms;
  /* While a request body is being read and the handler is not pausing it, the connection
   * closes (408 when possible) when no body bytes arrived for this long. Default 60000.
   * 0 = off. Bounds 0..(1 << 31). A slow reader of a large response is bounded only by the
   * connection's write_timeout_ms (no progress at all), never by these. */
  uint64_t body_timeout_ms;
  /* Response compression: 1 = negotiate gzip or deflate from Accept-Encoding (q-values
   * honoured; gzip preferred) for responses of a compressible type (text/..., JSON, XML,
   * JavaScript, SVG) of at least compress_min_bytes (streamed responses of unknown length
   * always qualify); 0 = never. Compressible responses carry Vary: Accept-Encoding either
   * way. Default 1. */
  int compress;
  /* Smallest body worth compressing. Default 1024. Bounds 0..(1 << 30). */
  size_t compress_min_bytes;
  /* zlib/libdeflate level, 1..9. Default 6. */
  int compress_level;
  /* Request bodies with Content-Encoding gzip or deflate are decoded with braid's
   * decompression limits (braid/gzip.h), the output capped at max_body_bytes: this ratio cap
   * (output bytes per input byte past 1 MiB; 0 = off). Default 200. */
  uint32_t decode_max_ratio;
  /* Bytes a response may hold while it waits for earlier responses on its connection
   * (pipelining); a streamed response is told to wait (BRAID_HTTP_WAIT) past it, and a
   * write that would pass 64 times this fails with BRAID_EQUEUEFULL. Default 1 MiB. Bounds
   * 4096..(1 << 30). */
  size_t held_high_bytes;
  /* The Server header's value, or NULL for none. Default "braid". Copied. */
  const char *server_name;
} braid_http_server_opts_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_http_server_opts_init(braid_http_server_opts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with *err
 * (when err is not NULL) naming the field and the reason (docs/API.md rule 2). */
BRAID_EXTERN int braid_http_server_opts_validate(const braid_http_server_opts_t *o,
                                                 braid_opts_error_t *err);

/* Called when braid_http_server_close() has finished (never from inside it); the server is
 * freed when this returns. status is 0. */
typedef void (*braid_http_server_close_cb)(braid_http_server_t *server, int status, void *arg);

/* A request arrived. For a buffered route: the whole request, body included
 * (braid_http_req_body). For a streaming route: the header section; read the body with
 * braid_http_req_read_body(). The handler answers now or later with braid_http_respond()
 * or braid_http_res_begin() ... braid_http_res_end(), exactly once; req stays valid until
 * then (even if the connection closes first: the answer then goes nowhere). */
typedef void (*braid_http_handler_cb)(braid_http_req_t *req, void *arg);

/* Route flags. */
enum {
  BRAID_HTTP_EXACT = 0,  /* the path must equal the route's path */
  BRAID_HTTP_PREFIX = 1, /* the path starts with the route's path (longest prefix wins) */
  BRAID_HTTP_STREAM_BODY = 2, /* call the handler after the header section; the body is
                                 read with braid_http_req_read_body() */
};

/* Creates an HTTP server on loop with options o (copied; NULL = defaults). It counts as a
 * live object on loop until its close callback. Returns 0 and the server in *out,
 * BRAID_EINVAL (out or loop NULL, or a bad option: see braid_http_server_opts_validate) or
 * BRAID_ENOMEM; on error *out is untouched. */
BRAID_EXTERN int braid_http_server_new(braid_http_server_t **out, braid_loop_t *loop,
                                       const braid_http_server_opts_t *o);

/* Sets and reads the server's user pointer (NULL until set). */
BRAID_EXTERN void braid_http_server_set_data(braid_http_server_t *server, void *data);
BRAID_EXTERN void *braid_http_server_get_data(const braid_http_server_t *server);

/* Routes requests for method (e.g. "GET"; NULL = any method) and path (starting with '/',
 * copied) to handler(req, arg). flags: BRAID_HTTP_EXACT or BRAID_HTTP_PREFIX, optionally
 * | BRAID_HTTP_STREAM_BODY. A GET route also answers HEAD (the body is not sent). An exact
 * route wins over a prefix; the longest prefix wins among prefixes; then the first
 * registered. A path no route matches gets 404; a path matched only for other methods gets
 * 405 with Allow. Call before the server serves its first connection. Returns 0,
 * BRAID_EINVAL (path not starting with '/', handler NULL, unknown flags) or BRAID_ENOMEM. */
BRAID_EXTERN int braid_http_server_route(braid_http_server_t *server, const char *method,
                                         const char *path, unsigned flags,
                                         braid_http_handler_cb handler, void *arg);

/* Takes conn over: sets its callbacks, starts reading, and serves HTTP on it until it
 * closes. Call on conn's loop thread, before anything was read from conn. Returns 0,
 * BRAID_EINVAL, BRAID_ECLOSED (the server is closing; conn is closed) or BRAID_ENOMEM (conn
 * is closed). */
BRAID_EXTERN int braid_http_server_serve(braid_http_server_t *server, braid_conn_t *conn);

/* A braid_connection_cb: pass it to braid_server_new() with the http server as the tcp
 * server's user data (its data argument, or braid_server_set_data()), and every accepted
 * connection is served (braid_http_server_serve). */
BRAID_EXTERN void braid_http_server_on_connection(braid_server_t *tcp_server, braid_conn_t *conn,
                                                  void *data);

/* Closes the server: closes the connections it serves on the calling loop (their queued
 * output is flushed first, as braid_conn_close), then calls cb(server, 0, arg) once from the
 * loop and frees the server. Requests whose handler has not answered yet stay valid until it
 * does (braid_loop_close() refuses until then). Connections on other loops (a braid
 * server's workers) must be closed first, by draining or closing that server: otherwise this
 * returns BRAID_EBUSY and nothing changes. Returns 0, BRAID_EBUSY or BRAID_ECLOSED (already
 * closing; cb will not be called). */
BRAID_EXTERN int braid_http_server_close(braid_http_server_t *server,
                                         braid_http_server_close_cb cb, void *arg);

/* ---- requests ------------------------------------------------------------------------- */

/* The request method ("GET", "POST", ...). Static. */
BRAID_EXTERN const char *braid_http_req_method(const braid_http_req_t *req);

/* The path of the request target (up to '?', not percent-decoded), NUL-terminated. Valid
 * until the response is finished. */
BRAID_EXTERN const char *braid_http_req_path(const braid_http_req_t *req);

/* The query string after '?' (not decoded), NUL-terminated; "" when there is none. */
BRAID_EXTERN const char *braid_http_req_query(const braid_http_req_t *req);

/* The value of the first header named name (case-insensitive), NUL-terminated, or NULL. */
BRAID_EXTERN const char *braid_http_req_header(const braid_http_req_t *req, const char *name);

/* The number of request headers, and the i-th (0-based) name and value; returns
 * BRAID_EINVAL when i is out of range. */
BRAID_EXTERN unsigned braid_http_req_header_count(const braid_http_req_t *req);
BRAID_EXTERN int braid_http_req_header_at(const braid_http_req_t *req, unsigned i,
                                          const char **name, const char **value);

/* The HTTP version as 10 or 11. */
BRAID_EXTERN int braid_http_req_version(const braid_http_req_t *req);

/* A buffered route's request body, decoded when it came with Content-Encoding gzip or
 * deflate; *len gets its length. NULL with *len 0 when there is no body (or on a streaming
 * route). Valid until the response is finished. */
BRAID_EXTERN const uint8_t *braid_http_req_body(const braid_http_req_t *req, size_t *len);

/* The request's loop (where every call on req must be made). */
BRAID_EXTERN braid_loop_t *braid_http_req_loop(const braid_http_req_t *req);

/* The connection the request came on, or NULL once it has closed. */
BRAID_EXTERN braid_conn_t *braid_http_req_conn(const braid_http_req_t *req);

/* Sets and reads the request's user pointer. */
BRAID_EXTERN void braid_http_req_set_data(braid_http_req_t *req, void *data);
BRAID_EXTERN void *braid_http_req_get_data(const braid_http_req_t *req);

/* A piece of a streamed request body (status 0: data[0..len), valid during the call), its
 * end (status BRAID_EOF, len 0), or an error (status < 0: BRAID_ETOOBIG over
 * max_body_bytes, BRAID_ETIMEDOUT, BRAID_ECANCELED when the connection closed or the
 * response finished first, a decompression error for a bad gzip or deflate body); after
 * BRAID_EOF or an error it is not called again. */
typedef void (*braid_http_body_cb)(braid_http_req_t *req, int status, const uint8_t *data,
                                   size_t len, void *arg);

/* On a streaming route: starts delivering the body to cb (decoded when gzip or deflate),
 * sending "100 Continue" first when the client asked for it. Pieces arrive from the loop,
 * never from inside this call; a request without a body gets BRAID_EOF. Returns 0,
 * BRAID_EINVAL (not a streaming route, cb NULL, or called twice) or BRAID_ECLOSED. */
BRAID_EXTERN int braid_http_req_read_body(braid_http_req_t *req, braid_http_body_cb cb, void *arg);

/* Pauses and resumes body delivery (backpressure): while paused the connection is not read,
 * so TCP flow control slows the client. The body timeout does not run while paused. Return 0
 * or BRAID_EINVAL. */
BRAID_EXTERN int braid_http_req_pause_body(braid_http_req_t *req);
BRAID_EXTERN int braid_http_req_resume_body(braid_http_req_t *req);

/* ---- responses ------------------------------------------------------------------------ */

/* Answers req with status (100..999, not 1xx), headers[0..nheaders) and body[0..len)
 * (copied), and finishes the request: req must not be used afterwards. The server adds
 * Content-Length, Date, Server, Connection, and Content-Encoding and Vary when it compresses;
 * headers must not contain Content-Length, Transfer-Encoding or Connection. The body is not
 * sent for HEAD, 204 and 304. Returns 0, BRAID_ECLOSED (the connection closed first: req is
 * finished all the same), or BRAID_EINVAL (bad status or header: nothing sent, req still
 * needs an answer). */
BRAID_EXTERN int braid_http_respond(braid_http_req_t *req, int status,
                                    const braid_http_header_t *headers, size_t nheaders,
                                    const void *body, size_t len);

/* As braid_http_respond(), with the body taken from blob (a reference is taken; no copy
 * when the body is sent as it is). */
BRAID_EXTERN int braid_http_respond_blob(braid_http_req_t *req, int status,
                                         const braid_http_header_t *headers, size_t nheaders,
                                         braid_blob_t *blob);

/* content_length for a streamed response whose length is not known in advance. */
#define BRAID_HTTP_LENGTH_UNKNOWN (-1)

/* Positive result of braid_http_res_write(): the bytes were taken, but the connection's
 * queue is over its high watermark: stop writing until the writable callback runs. */
#define BRAID_HTTP_WAIT 1

/* Starts a streamed response: status line and headers as braid_http_respond(), with
 * content_length bytes to follow, or BRAID_HTTP_LENGTH_UNKNOWN (chunked; close-delimited for
 * an HTTP/1.0 client). When compressing, the body is compressed as a stream and sent
 * chunked. Returns 0, BRAID_EINVAL (as braid_http_respond, or a response already begun) or
 * BRAID_ECLOSED (req still needs braid_http_res_end). */
BRAID_EXTERN int braid_http_res_begin(braid_http_req_t *req, int status,
                                      const braid_http_header_t *headers, size_t nheaders,
                                      int64_t content_length);

/* Sends data[0..len) (copied) as more of the body. Returns 0, BRAID_HTTP_WAIT (taken; pause
 * until the writable callback), BRAID_EINVAL (no response begun, or more than the declared
 * Content-Length), BRAID_EQUEUEFULL (over the connection's hard limit: nothing taken),
 * BRAID_ECLOSED (the connection closed: stop and call braid_http_res_end), or a compression
 * error. */
BRAID_EXTERN int braid_http_res_write(braid_http_req_t *req, const void *data, size_t len);

/* Ends the streamed response and finishes the request: req must not be used afterwards. A
 * response shorter than its Content-Length closes the connection after it (the client sees
 * the body cut short). Returns 0, BRAID_ECLOSED (the connection closed first; req is
 * finished all the same) or BRAID_EINVAL (no response begun: nothing changes). */
BRAID_EXTERN int braid_http_res_end(braid_http_req_t *req);

/* The streamed response may go on (status 0) after braid_http_res_write() returned
 * BRAID_HTTP_WAIT, or the connection closed (status BRAID_ECANCELED: call
 * braid_http_res_end to finish the request). Runs from the loop, never from inside a
 * braid_http_* call. */
typedef void (*braid_http_writable_cb)(braid_http_req_t *req, int status, void *arg);

/* Sets the writable callback of req (NULL to clear). Returns 0 or BRAID_EINVAL. */
BRAID_EXTERN int braid_http_res_on_writable(braid_http_req_t *req, braid_http_writable_cb cb,
                                            void *arg);

/* ---- memoized responses ---------------------------------------------------------------- */

/* Answers req (200, Content-Type content_type) with the value braid_cache_memo(cache, key,
 * key_len, loader) gives: a hit costs no computation; a miss runs loader once however many
 * requests wait for the key (single-flight), with the cache's TTL and stale-while-revalidate
 * rules. When the response is compressed, the compressed variant is cached too (under key,
 * a NUL and the coding's name, with the loader's TTL), so a hit costs neither computation
 * nor compression. content_type must stay valid until the response is sent (a string
 * literal). cache must belong to req's loop. A failed load answers 500 (503 when too many
 * wait). Hits count in the stats' cache_hits. Returns 0 (req is answered, now or when the
 * load completes: do not use it afterwards), or an error known at once (BRAID_EINVAL, or
 * braid_cache_memo()'s negative result: a synchronous loader's failure, a cached error,
 * BRAID_ETOOMANYWAITERS, ...), and then req still needs an answer. */
BRAID_EXTERN int braid_http_respond_memo(braid_http_req_t *req, braid_cache_t *cache,
                                         const void *key, size_t key_len,
                                         const braid_cache_loader_t *loader,
                                         const char *content_type);

/* ---- static files ------------------------------------------------------------------------ */

typedef struct braid_http_static_opts_s {
  /* Cache-Control: public, max-age=this many seconds. Default 3600. Bounds 0..2^31. */
  uint64_t max_age_s;
  /* The file served for a directory (a path ending in '/' or naming a directory), or NULL
   * for none (404). A file name, not a path; it may not be a symlink. Default "index.html".
   * Copied. */
  const char *index;
} braid_http_static_opts_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_http_static_opts_init(braid_http_static_opts_t *o);

/* Checks every field; returns 0, or BRAID_EINVAL with *err (when not NULL) naming the field
 * and the reason. */
BRAID_EXTERN int braid_http_static_opts_validate(const braid_http_static_opts_t *o,
                                                 braid_opts_error_t *err);

/* Serves the files under root (a directory; resolved now) for GET and HEAD requests whose
 * path starts with prefix (e.g. "/static/"; the rest of the path, percent-decoded, names the
 * file below root). Files are opened on the threadpool, so the loop never blocks. A body of
 * 64 KiB or more sent as it is (not compressed; a whole file or a Range slice) goes zero
 * copy with sendfile(2) on the libuv threadpool once the response is at the head of its
 * connection (plain TCP without a send rate limit), counted in the stats' sendfile fields;
 * other bodies are read with libuv's asynchronous fs calls and stream with backpressure (and
 * are compressed like any response when the client accepts it and the type is
 * compressible). Either way a client that stops reading is bounded by the connection's
 * write timeout, and a file that shrinks while sent closes the connection after a short
 * body. Responses carry
 * Content-Type (by extension), ETag, Last-Modified, Cache-Control: public, max-age and
 * Accept-Ranges; If-None-Match and If-Modified-Since give 304; one "bytes=" Range gives 206
 * (416 when unsatisfiable; several ranges are answered with the whole file). No file outside
 * root is ever served: a decoded NUL, backslash or "." / ".." segment gets 404, and the file
 * is opened beneath root with openat2(RESOLVE_BENEATH) (symlinks leading out fail; on kernels
 * without openat2, the resolved path is checked against root). Returns 0, BRAID_EINVAL,
 * BRAID_ENOMEM, or the error resolving or opening root (UV_ENOENT, ...). */
BRAID_EXTERN int braid_http_server_static(braid_http_server_t *server, const char *prefix,
                                          const char *root, const braid_http_static_opts_t *o);

/* ---- stats ----------------------------------------------------------------------------- */

typedef struct braid_http_server_stats_s {
  uint64_t connections;      /* connections served since creation */
  uint64_t connections_open; /* open now */
  uint64_t requests;         /* requests answered */
  uint64_t status[6];        /* responses by class: [1] 1xx .. [5] 5xx ([0] unused) */
  uint64_t keepalive_reuse;  /* requests that came on a connection after its first */
  uint64_t bytes_in;         /* request body bytes received (as sent, before decoding) */
  uint64_t body_bytes;       /* response body bytes before compression */
  uint64_t body_bytes_sent;  /* response body bytes after compression */
  uint64_t compressed;       /* responses compressed */
  uint64_t bad_requests;     /* requests refused as malformed or over a limit (4xx by the
                                server itself, before any handler) */
  uint64_t timeouts;         /* connections closed by a header, body or keep-alive timeout */
  uint64_t cache_hits;       /* counted by braid_http_server_count_cache_hit() */
  uint64_t sendfile;         /* response bodies (static files) sent with sendfile, zero copy */
  uint64_t sendfile_bytes;   /* body bytes sent that way (also counted in body_bytes) */
  braid_histogram_t latency_us; /* request start to response end, microseconds */
} braid_http_server_stats_t;

/* Sums the counters of every loop the server serves on into *out (a snapshot, not a
 * consistent cut). Any serving loop's thread may call it. */
BRAID_EXTERN void braid_http_server_stats(braid_http_server_t *server,
                                          braid_http_server_stats_t *out);

/* Counts a response served from a cache (for the cache_hits counter). Call on the request's
 * loop. */
BRAID_EXTERN void braid_http_server_count_cache_hit(braid_http_req_t *req);

/* Writes the stats as a JSON object (one line) into buf (NUL-terminated, truncated to size).
 * Returns the length the full text needs, excluding the NUL, as snprintf does. */
BRAID_EXTERN int braid_http_server_stats_json(braid_http_server_t *server, char *buf,
                                              size_t size);

/* Writes the stats in Prometheus' text exposition format (version 0.0.4: counters
 * braid_http_requests_total{class="2xx"}, ..., and the latency as a histogram in seconds)
 * into buf, as braid_http_server_stats_json does. */
BRAID_EXTERN int braid_http_server_stats_prometheus(braid_http_server_t *server, char *buf,
                                                    size_t size);

#ifdef __cplusplus
}
#endif
#endif
