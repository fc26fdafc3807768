/* braid: gzip, zlib and raw deflate, one-shot and streaming, bomb-safe by default.
 *
 * Three ways in:
 * - a context (braid_gzip_t) for one-shot compression and decompression of whole buffers on
 *   the calling thread; it keeps its compressor and decompressor between calls, so small
 *   messages cost no allocation of codec state. libdeflate does the work where braid was
 *   built with it (meson feature `libdeflate`), zlib otherwise;
 * - asynchronous one-shot calls that move payloads above a size threshold to the libuv
 *   threadpool and call back on the loop, so a large body never blocks the loop;
 * - a stream filter (braid_gzip_stream_t, on zlib) for bodies that do not fit in memory:
 *   push input in chunks of any size, pull output into buffers of any size, finish. It does
 *   no I/O, so a connection, a framer or an HTTP body can put it between the socket and the
 *   user.
 *
 * Decompression is limited by default: an absolute output cap, a ratio cap (output bytes per
 * input byte, past a grace amount) and a maximum number of gzip members. Each rejection has
 * its own code: BRAID_EOUTPUTCAP, BRAID_ERATIO, BRAID_EMEMBERS, BRAID_ETRAILING (bytes after
 * the end of the stream), BRAID_ETRUNCATED (input ended inside the stream),
 * BRAID_EBADCRC (CRC32 or Adler-32 mismatch), BRAID_EBADSIZE (gzip ISIZE mismatch),
 * BRAID_EBADHCRC (gzip FHCRC mismatch), BRAID_EBADMETHOD (compression method other than
 * deflate, reserved gzip flags, or a zlib preset dictionary), BRAID_ECORRUPT (anything else:
 * bad magic, bad zlib header check, invalid deflate data). Output is reported complete only
 * after the last trailer has been verified.
 *
 * The one-shot and streaming decoders accept the same streams with one known exception:
 * where braid is built with libdeflate, the one-shot decoder, by libdeflate's design,
 * decodes some invalid deflate bodies that zlib, and so the stream filter, rejects as
 * BRAID_ECORRUPT (a code-length repeat past the declared count, 287/288 literal/length or
 * 31/32 distance codes declared). No compressor writes them; the output is still bounded by
 * every limit, and headers, check values and lengths are verified identically on both
 * paths. The fuzz target tests/fuzz/fuzz_gunzip.c pins this as the only difference.
 *
 * Contexts and streams are not thread-safe: use each from one thread at a time. braid
 * allocates through the hook of braid/alloc.h (from threadpool threads too, for the async
 * calls); libdeflate's own state uses libdeflate's allocator. */
#ifndef BRAID_GZIP_H
#define BRAID_GZIP_H

#include "common.h"
#include "error.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The container around the deflate data. */
typedef enum {
  BRAID_GZIP_FORMAT_GZIP = 0, /* RFC 1952: header, CRC32 and ISIZE; members may be chained */
  BRAID_GZIP_FORMAT_ZLIB = 1, /* RFC 1950: 2-byte header, Adler-32 (HTTP's "deflate") */
  BRAID_GZIP_FORMAT_RAW = 2,  /* RFC 1951: bare deflate, no header, no check value */
} braid_gzip_format_t;

/* Positive results (braid/error.h, BRAID_RESULT_MAP): BRAID_GZIP_SKIPPED (1), from a one-shot
 * compression whose input was shorter than min_size_bytes (braid wrote nothing: send the
 * original bytes uncompressed), and BRAID_GZIP_DONE (2), from braid_gzip_stream_process()
 * once the stream is complete. */

typedef struct braid_gzip_opts_s {
  /* Container format. Default BRAID_GZIP_FORMAT_GZIP. */
  braid_gzip_format_t format;
  /* Compression level, 0 (stored, no compression) to 9 (smallest). Default 6. */
  int level;
  /* One-shot compression of fewer bytes than this returns BRAID_GZIP_SKIPPED and writes
   * nothing: a gzip wrapper alone is 18 bytes, and tiny messages rarely shrink. Any value;
   * 0 compresses everything. Streams ignore it. Default 256. */
  size_t min_size_bytes;
  /* Decompression: most bytes of output, over all members; more is BRAID_EOUTPUTCAP, and
   * no byte past the cap is ever handed out. 0 disables the cap. Default 64 MiB. */
  uint64_t max_output_bytes;
  /* Decompression: most output bytes per input byte consumed, checked once the output is
   * over ratio_grace_bytes; more is BRAID_ERATIO. One-shot calls measure against the whole
   * input. 0 disables the check. Default 200 (text rarely passes 20; zeros reach 1032). */
  uint32_t max_ratio;
  /* Output below this many bytes is never rejected for its ratio (small, highly repetitive
   * messages are legitimate). Default 1 MiB. */
  uint64_t ratio_grace_bytes;
  /* Decompression, gzip only: most members in one stream or buffer; one more is
   * BRAID_EMEMBERS. 0 disables the check. Default 64. */
  uint32_t max_members;
  /* Asynchronous calls: inputs longer than this go to the libuv threadpool; shorter ones are
   * processed inside the call. 0 sends everything to the threadpool. Default 64 KiB. */
  size_t offload_threshold_bytes;
} braid_gzip_opts_t;

/* Fills opts with the defaults documented above. NULL is ignored. */
BRAID_EXTERN void braid_gzip_opts_init(braid_gzip_opts_t *opts);

/* Checks opts: format one of BRAID_GZIP_FORMAT_*, level 0..9 (the other fields take any
 * value). Returns 0, or BRAID_EINVAL with the field and the reason in *err (err may be
 * NULL). Every call that takes a braid_gzip_opts_t runs this check. */
BRAID_EXTERN int braid_gzip_opts_validate(const braid_gzip_opts_t *opts, braid_opts_error_t *err);

/* ---- one-shot, on the calling thread ------------------------------------------------ */

typedef struct braid_gzip_s braid_gzip_t;

/* Creates a one-shot context with a copy of opts (NULL: the defaults). Codec state is
 * allocated on first use and kept until braid_gzip_free(). Returns 0 and the context in
 * *out, BRAID_EINVAL (out NULL, format or level out of bounds; *out untouched) or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_gzip_new(braid_gzip_t **out, const braid_gzip_opts_t *opts);

/* Frees a context and its codec state. NULL is ignored. */
BRAID_EXTERN void braid_gzip_free(braid_gzip_t *gz);

/* Returns an output capacity that braid_gzip_compress() never exceeds for in_len bytes of
 * input (in_len plus a small overhead), or 0 if that does not fit in a size_t. */
BRAID_EXTERN size_t braid_gzip_compress_bound(const braid_gzip_t *gz, size_t in_len);

/* Compresses in[0..in_len) into the caller's out[0..out_cap) in the context's format and
 * level. Returns:
 * - 0: *out_len holds the compressed length;
 * - BRAID_GZIP_SKIPPED (a positive result): in_len < min_size_bytes; nothing written, *out_len = 0;
 * - BRAID_ETOOBIG: the result did not fit in out_cap (never when out_cap >=
 *   braid_gzip_compress_bound(gz, in_len)); out's contents are unspecified;
 * - BRAID_EINVAL (gz or out_len NULL, in NULL with in_len > 0, out NULL with out_cap > 0),
 *   BRAID_ENOMEM. */
BRAID_EXTERN int braid_gzip_compress(braid_gzip_t *gz, const void *in, size_t in_len, void *out,
                                     size_t out_cap, size_t *out_len);

/* As braid_gzip_compress(), into a buffer braid allocates: on 0, *out (free it with
 * braid_gzip_buf_free()) and *out_len hold the result. On BRAID_GZIP_SKIPPED or an error,
 * *out = NULL and *out_len = 0. */
BRAID_EXTERN int braid_gzip_compress_alloc(braid_gzip_t *gz, const void *in, size_t in_len,
                                           void **out, size_t *out_len);

/* Decompresses the whole of in[0..in_len), applying the context's limits, into a buffer braid
 * allocates (at most the output cap, whatever the input claims). Every byte of the input must
 * belong to the stream (gzip: to one of up to max_members members). Returns 0 with *out
 * (never NULL, even for empty output; free it with braid_gzip_buf_free()) and *out_len, or one
 * of the decompression errors listed at the top, BRAID_EINVAL (gz, out or out_len NULL, in NULL
 * with in_len > 0) or BRAID_ENOMEM; then *out = NULL and *out_len = 0. */
BRAID_EXTERN int braid_gzip_decompress(braid_gzip_t *gz, const void *in, size_t in_len, void **out,
                                       size_t *out_len);

/* As braid_gzip_decompress(), into the caller's out[0..out_cap) (no allocation for the
 * output; the zero-copy choice when the size is known or bounded, e.g. by a frame's maximum).
 * out_cap acts as one more output cap: output that does not fit is BRAID_EOUTPUTCAP. On 0,
 * *out_len holds the length; on an error *out_len = 0 and out's contents are unspecified.
 * BRAID_EINVAL also when out is NULL with out_cap > 0. */
BRAID_EXTERN int braid_gzip_decompress_into(braid_gzip_t *gz, const void *in, size_t in_len,
                                            void *out, size_t out_cap, size_t *out_len);

/* Frees a buffer returned by braid (one-shot and async results). NULL is ignored. */
BRAID_EXTERN void braid_gzip_buf_free(void *buf);

/* ---- one-shot, asynchronous --------------------------------------------------------- */

/* Completion of an asynchronous call, on the loop's thread, exactly once. status is 0,
 * BRAID_GZIP_SKIPPED (compression of a short input: out NULL, out_len 0) or a negative code
 * as for the synchronous call. On 0 the callback owns out (free it with
 * braid_gzip_buf_free()); otherwise out is NULL. */
typedef void (*braid_gzip_done_cb)(braid_loop_t *loop, int status, void *out, size_t out_len,
                                   void *arg);

/* Compresses (braid_gzip_compress_async) or decompresses (braid_gzip_decompress_async)
 * in[0..in_len) with a copy of opts (NULL: the defaults), then calls done(loop, status, out,
 * out_len, arg). The input is borrowed: keep it unchanged until done runs. Inputs longer than
 * opts->offload_threshold_bytes are processed on the libuv threadpool; shorter ones inside
 * this call. Either way done runs later, from the loop, never from inside this call. Each
 * call sets up its own codec state: for many small messages on the loop's thread, a context
 * (braid_gzip_new) is cheaper. Returns 0 (done will be called exactly once), BRAID_EINVAL
 * (loop or done NULL, in NULL with in_len > 0, opts out of bounds), BRAID_ECLOSED (the loop
 * is closing) or BRAID_ENOMEM; on an error done is never called. The loop cannot close
 * (braid_loop_close() says BRAID_EBUSY) while threadpool work is pending. */
BRAID_EXTERN int braid_gzip_compress_async(braid_loop_t *loop, const braid_gzip_opts_t *opts,
                                           const void *in, size_t in_len, braid_gzip_done_cb done,
                                           void *arg);
BRAID_EXTERN int braid_gzip_decompress_async(braid_loop_t *loop, const braid_gzip_opts_t *opts,
                                             const void *in, size_t in_len,
                                             braid_gzip_done_cb done, void *arg);

/* ---- streaming filter --------------------------------------------------------------- */

typedef enum { BRAID_GZIP_COMPRESS = 0, BRAID_GZIP_DECOMPRESS = 1 } braid_gzip_mode_t;

/* Flags for braid_gzip_stream_process(). */
enum {
  /* The input passed is the last: compression finishes the stream; decompression reports
   * BRAID_ETRUNCATED if the stream ends before its trailer, and BRAID_GZIP_DONE after it. */
  BRAID_GZIP_FINISH = 1,
  /* Compression only: emit everything buffered so far, byte-aligned (zlib's Z_SYNC_FLUSH),
   * so the peer can decode what was sent up to now, e.g. at the end of a message. */
  BRAID_GZIP_FLUSH = 2,
};

typedef struct braid_gzip_stream_s braid_gzip_stream_t;

/* Creates a stream filter in mode with a copy of opts (NULL: the defaults; min_size_bytes and
 * offload_threshold_bytes do not apply). Memory is bounded by zlib's state (about 270 KiB
 * compressing at memLevel 8, about 45 KiB decompressing), whatever the input. Returns 0 and
 * the stream in *out, BRAID_EINVAL (out NULL, mode or opts out of bounds; *out untouched) or
 * BRAID_ENOMEM. */
BRAID_EXTERN int braid_gzip_stream_new(braid_gzip_stream_t **out, braid_gzip_mode_t mode,
                                       const braid_gzip_opts_t *opts);

/* Runs the filter: consumes bytes from in[0..in_len) and writes bytes to out[0..out_cap).
 * *in_used and *out_used receive how many were consumed and written (always set, even on
 * error). Input not consumed must be passed again (from in + *in_used); a call that fills out
 * completely may have more output pending, so call again with fresh room, and the same or
 * further input, until it returns BRAID_GZIP_DONE or writes less than out_cap with all input
 * consumed. flags: BRAID_GZIP_FINISH with the last input (repeat it on every call from then
 * on), BRAID_GZIP_FLUSH (compression) to flush. Returns:
 * - 0: progress, or none possible without more input (or more room);
 * - BRAID_GZIP_DONE (a positive result, 2): compression wrote its last byte; decompression verified
 * the last trailer, FINISH was given, and all input was consumed. Later calls return DONE again, or
 * BRAID_ETRAILING (decompression) if given more input;
 * - a negative code: decompression errors listed at the top, or BRAID_EINVAL (s, in_used or
 *   out_used NULL, in NULL with in_len > 0, out NULL with out_cap > 0, unknown flags), or
 *   BRAID_ENOMEM. Decompression errors are sticky: every later call returns the same code
 *   until braid_gzip_stream_reset(). On BRAID_EOUTPUTCAP the output written stops exactly
 *   at the cap. */
BRAID_EXTERN int braid_gzip_stream_process(braid_gzip_stream_t *s, const void *in, size_t in_len,
                                           size_t *in_used, void *out, size_t out_cap,
                                           size_t *out_used, int flags);

/* Makes s ready for a new stream with the same mode and options, keeping its memory (cheaper
 * than free + new per message). Returns 0 or BRAID_EINVAL (s NULL). */
BRAID_EXTERN int braid_gzip_stream_reset(braid_gzip_stream_t *s);

/* Bytes consumed and produced since the stream was created or reset. Either pointer may be
 * NULL. */
BRAID_EXTERN void braid_gzip_stream_totals(const braid_gzip_stream_t *s, uint64_t *in_bytes,
                                           uint64_t *out_bytes);

/* Frees a stream. NULL is ignored. */
BRAID_EXTERN void braid_gzip_stream_free(braid_gzip_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
