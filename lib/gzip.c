/* gzip, zlib and raw deflate: one-shot (libdeflate where built with it, else zlib), async
 * (threadpool above a threshold) and a streaming filter (zlib).
 *
 * Decompression never uses zlib's gzip or zlib wrappers: braid parses headers and trailers
 * itself and runs the deflate body raw, because zlib reports a bad CRC, a bad ISIZE and a bad
 * header CRC alike ("incorrect data check" / "incorrect header check"), and the caller should
 * be told which. The header parser consumes any number of bytes per call and stores nothing
 * but counters, so a stream's memory stays bounded whatever the headers hold. */
#include "internal.h"

#include <zlib.h>

#include "braid/gzip.h"

#if BRAID_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define GZ_FTEXT 0x01
#define GZ_FHCRC 0x02
#define GZ_FEXTRA 0x04
#define GZ_FNAME 0x08
#define GZ_FCOMMENT 0x10
#define GZ_FRESERVED 0xE0

void braid_gzip_opts_init(braid_gzip_opts_t *opts) {
  if (!opts)
    return;
  memset(opts, 0, sizeof(*opts));
  opts->format = BRAID_GZIP_FORMAT_GZIP;
  opts->level = 6;
  opts->min_size_bytes = 256;
  opts->max_output_bytes = 64u << 20;
  opts->max_ratio = 200;
  opts->ratio_grace_bytes = 1u << 20;
  opts->max_members = 64;
  opts->offload_threshold_bytes = 64u << 10;
}

int braid_gzip_opts_validate(const braid_gzip_opts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  if ((unsigned)o->format > BRAID_GZIP_FORMAT_RAW)
    return braid__opts_fail(err, "format", "%d is not a BRAID_GZIP_FORMAT_* value (0..2)",
                            (int)o->format);
  if (o->level < 0 || o->level > 9)
    return braid__opts_fail(err, "level", "%d is outside 0..9", o->level);
  return 0;
}

static int opts_check(const braid_gzip_opts_t *o) {
  return braid_gzip_opts_validate(o, NULL);
}

/* Resolves opts (NULL: defaults) into *dst, validated. */
static int opts_copy(braid_gzip_opts_t *dst, const braid_gzip_opts_t *opts) {
  braid_gzip_opts_t o;
  if (opts)
    o = *opts;
  else
    braid_gzip_opts_init(&o);
  int rc = opts_check(&o);
  if (rc == 0)
    *dst = o;
  return rc;
}

static uint32_t check_init(braid_gzip_format_t f) {
  return f == BRAID_GZIP_FORMAT_ZLIB ? 1u : 0u;
}

/* Running CRC32 (gzip) or Adler-32 (zlib) of member output. libdeflate's are the faster
 * (carry-less multiply CRC), so they are used where available. */
static uint32_t check_update(braid_gzip_format_t f, uint32_t c, const uint8_t *p, size_t n) {
  if (f == BRAID_GZIP_FORMAT_RAW || n == 0)
    return c;
#if BRAID_HAVE_LIBDEFLATE
  return f == BRAID_GZIP_FORMAT_GZIP ? libdeflate_crc32(c, p, n) : libdeflate_adler32(c, p, n);
#else
  /* zlib's length parameter is a uInt: feed it in pieces. */
  while (n) {
    uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
    c = f == BRAID_GZIP_FORMAT_GZIP ? (uint32_t)crc32(c, p, k) : (uint32_t)adler32(c, p, k);
    p += k;
    n -= k;
  }
  return c;
#endif
}

static uint32_t rd_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t rd_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- header parser (gzip and zlib), incremental ------------------------------------- */

enum {
  H_ID1,
  H_ID2,
  H_CM,
  H_FLG,
  H_FIXED,
  H_XLEN0,
  H_XLEN1,
  H_EXTRA,
  H_NAME,
  H_COMMENT,
  H_HCRC0,
  H_HCRC1,
  H_Z0,
  H_Z1,
  H_DONE
};

typedef struct {
  braid_gzip_format_t format;
  int state;
  uint8_t flg;
  uint8_t b0;       /* zlib CMF, or the first FHCRC byte */
  uint32_t count;   /* bytes left in the fixed part or in FEXTRA */
  uint32_t crc;     /* CRC32 of the gzip header so far, for FHCRC */
  bool next_member; /* a member already ended: bad magic here is trailing garbage */
  uint32_t members; /* gzip members started */
  uint32_t max_members;
} hdr_t;

static void hdr_start(hdr_t *h, bool next_member) {
  h->state = h->format == BRAID_GZIP_FORMAT_ZLIB ? H_Z0 : H_ID1;
  h->crc = 0;
  h->next_member = next_member;
}

/* The field that follows the one just finished, in RFC 1952 order. */
static int hdr_after(const hdr_t *h, int done) {
  if (done < H_XLEN0 && (h->flg & GZ_FEXTRA))
    return H_XLEN0;
  if (done < H_NAME && (h->flg & GZ_FNAME))
    return H_NAME;
  if (done < H_COMMENT && (h->flg & GZ_FCOMMENT))
    return H_COMMENT;
  if (done < H_HCRC0 && (h->flg & GZ_FHCRC))
    return H_HCRC0;
  return H_DONE;
}

/* Consumes header bytes from p[0..n). Returns 1 when the header is complete (*used counts
 * the header bytes consumed), 0 when all n bytes were consumed and more are needed, or an
 * error. */
static int hdr_parse(hdr_t *h, const uint8_t *p, size_t n, size_t *used) {
  size_t i = 0, crc_from = 0;
  int rc = 0;
  while (i < n && h->state != H_DONE) {
    uint8_t b = p[i];
    switch (h->state) {
    case H_ID1:
    case H_ID2:
      if (b != (h->state == H_ID1 ? 0x1f : 0x8b)) {
        rc = h->next_member ? BRAID_ETRAILING : BRAID_ECORRUPT;
        goto out;
      }
      if (h->state == H_ID2 && h->max_members && h->members >= h->max_members) {
        rc = BRAID_EMEMBERS;
        goto out;
      }
      if (h->state == H_ID2)
        h->members++;
      h->state++;
      break;
    case H_CM:
      if (b != Z_DEFLATED) {
        rc = BRAID_EBADMETHOD;
        goto out;
      }
      h->state = H_FLG;
      break;
    case H_FLG:
      if (b & GZ_FRESERVED) {
        rc = BRAID_EBADMETHOD;
        goto out;
      }
      h->flg = b;
      h->count = 6; /* MTIME, XFL, OS */
      h->state = H_FIXED;
      break;
    case H_FIXED:
      if (--h->count == 0)
        h->state = hdr_after(h, H_FIXED);
      break;
    case H_XLEN0:
      h->count = b;
      h->state = H_XLEN1;
      break;
    case H_XLEN1:
      h->count |= (uint32_t)b << 8;
      h->state = h->count ? H_EXTRA : hdr_after(h, H_EXTRA);
      break;
    case H_EXTRA: {
      size_t k = n - i < h->count ? n - i : h->count;
      i += k;
      h->count -= (uint32_t)k;
      if (h->count == 0)
        h->state = hdr_after(h, H_EXTRA);
      continue;
    }
    case H_NAME:
    case H_COMMENT: {
      const uint8_t *z = memchr(p + i, 0, n - i);
      if (!z) {
        i = n;
        continue;
      }
      i = (size_t)(z - p) + 1;
      h->state = hdr_after(h, h->state);
      continue;
    }
    case H_HCRC0:
      /* The header CRC covers every header byte before it. */
      h->crc = (uint32_t)crc32(h->crc, p + crc_from, (uInt)(i - crc_from));
      crc_from = SIZE_MAX;
      h->b0 = b;
      h->state = H_HCRC1;
      break;
    case H_HCRC1:
      if (((uint32_t)b << 8 | h->b0) != (h->crc & 0xffffu)) {
        rc = BRAID_EBADHCRC;
        goto out;
      }
      h->state = H_DONE;
      break;
    case H_Z0:
      h->b0 = b;
      h->state = H_Z1;
      break;
    case H_Z1:
      if (((unsigned)h->b0 << 8 | b) % 31 != 0) {
        rc = BRAID_ECORRUPT;
        goto out;
      }
      /* Method 8 with a window of at most 32 KiB; preset dictionaries are not supported. */
      if ((h->b0 & 0x0f) != Z_DEFLATED || (h->b0 >> 4) > 7 || (b & 0x20)) {
        rc = BRAID_EBADMETHOD;
        goto out;
      }
      h->state = H_DONE;
      break;
    }
    i++;
  }
  if (crc_from != SIZE_MAX && h->format == BRAID_GZIP_FORMAT_GZIP && i > crc_from) {
    /* Header fields are short, but FEXTRA/FNAME may span calls: fold in what we saw. The
     * loop above never advances past the header, so [crc_from, i) is header only. */
    size_t k = i - crc_from;
    const uint8_t *q = p + crc_from;
    while (k) {
      uInt m = k > (1u << 30) ? (1u << 30) : (uInt)k;
      h->crc = (uint32_t)crc32(h->crc, q, m);
      q += m;
      k -= m;
    }
  }
  rc = h->state == H_DONE ? 1 : 0;
out:
  *used = i;
  return rc;
}

/* ---- streams ------------------------------------------------------------------------ */

enum { S_HEADER, S_BODY, S_TRAILER, S_END, S_DONE };

struct braid_gzip_stream_s {
  braid_gzip_opts_t opts;
  braid_gzip_mode_t mode;
  z_stream z;
  int error; /* sticky decompression error */
  int state;
  bool done;
  hdr_t hdr;
  uint32_t check;
  uint64_t member_out;
  uint8_t trailer[8];
  unsigned trailer_len;
  uint64_t total_in, total_out;
};

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  return braid__calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p) {
  (void)opaque;
  braid__free(p);
}

static int window_bits(braid_gzip_format_t f) {
  return f == BRAID_GZIP_FORMAT_GZIP ? 15 + 16 : f == BRAID_GZIP_FORMAT_ZLIB ? 15 : -15;
}

static unsigned trailer_size(braid_gzip_format_t f) {
  return f == BRAID_GZIP_FORMAT_GZIP ? 8 : f == BRAID_GZIP_FORMAT_ZLIB ? 4 : 0;
}

static void stream_begin(braid_gzip_stream_t *s) {
  s->error = 0;
  s->done = false;
  s->total_in = s->total_out = 0;
  s->hdr.format = s->opts.format;
  s->hdr.members = 0;
  s->hdr.max_members = s->opts.max_members;
  hdr_start(&s->hdr, false);
  s->state = s->opts.format == BRAID_GZIP_FORMAT_RAW ? S_BODY : S_HEADER;
  s->check = check_init(s->opts.format);
  s->member_out = 0;
  s->trailer_len = 0;
}

int braid_gzip_stream_new(braid_gzip_stream_t **out, braid_gzip_mode_t mode,
                          const braid_gzip_opts_t *opts) {
  if (!out || (mode != BRAID_GZIP_COMPRESS && mode != BRAID_GZIP_DECOMPRESS))
    return BRAID_EINVAL;
  braid_gzip_opts_t o;
  int rc = opts_copy(&o, opts);
  if (rc)
    return rc;
  braid_gzip_stream_t *s = braid__calloc(1, sizeof(*s));
  if (!s)
    return BRAID_ENOMEM;
  s->opts = o;
  s->mode = mode;
  s->z.zalloc = z_alloc;
  s->z.zfree = z_free;
  int wbits = window_bits(o.format), zrc;
  if (mode == BRAID_GZIP_COMPRESS)
    zrc = deflateInit2(&s->z, o.level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY);
  else
    zrc = inflateInit2(&s->z, -15);
  if (zrc != Z_OK) {
    braid__free(s);
    return zrc == Z_MEM_ERROR ? BRAID_ENOMEM : BRAID_EINVAL;
  }
  stream_begin(s);
  *out = s;
  return 0;
}

int braid_gzip_stream_reset(braid_gzip_stream_t *s) {
  if (!s)
    return BRAID_EINVAL;
  if (s->mode == BRAID_GZIP_COMPRESS)
    deflateReset(&s->z);
  else
    inflateReset(&s->z);
  stream_begin(s);
  return 0;
}

void braid_gzip_stream_totals(const braid_gzip_stream_t *s, uint64_t *in_bytes,
                              uint64_t *out_bytes) {
  if (in_bytes)
    *in_bytes = s ? s->total_in : 0;
  if (out_bytes)
    *out_bytes = s ? s->total_out : 0;
}

void braid_gzip_stream_free(braid_gzip_stream_t *s) {
  if (!s)
    return;
  if (s->mode == BRAID_GZIP_COMPRESS)
    deflateEnd(&s->z);
  else
    inflateEnd(&s->z);
  braid__free(s);
}

/* zlib counts in uInt; larger buffers are simply processed over several passes. */
static uInt clamp_uint(size_t n) {
  return n > (size_t)UINT32_MAX ? UINT32_MAX : (uInt)n;
}

static int compress_step(braid_gzip_stream_t *s, const uint8_t *in, size_t in_len, size_t *in_used,
                         uint8_t *out, size_t out_cap, size_t *out_used, int flags) {
  int flush = (flags & BRAID_GZIP_FINISH)  ? Z_FINISH
              : (flags & BRAID_GZIP_FLUSH) ? Z_SYNC_FLUSH
                                           : Z_NO_FLUSH;
  for (;;) {
    if (s->done)
      return BRAID_GZIP_DONE;
    s->z.next_in = (Bytef *)(uintptr_t)(in + *in_used);
    s->z.avail_in = clamp_uint(in_len - *in_used);
    s->z.next_out = out + *out_used;
    s->z.avail_out = clamp_uint(out_cap - *out_used);
    uInt ai = s->z.avail_in, ao = s->z.avail_out;
    int zrc = deflate(&s->z, in_len - *in_used > ai ? Z_NO_FLUSH : flush);
    size_t ci = ai - s->z.avail_in, co = ao - s->z.avail_out;
    *in_used += ci;
    *out_used += co;
    s->total_in += ci;
    s->total_out += co;
    if (zrc == Z_STREAM_END) {
      s->done = true;
      continue;
    }
    if (zrc != Z_OK && zrc != Z_BUF_ERROR)
      return zrc == Z_MEM_ERROR ? BRAID_ENOMEM : BRAID_EINVAL;
    /* Stop when out of room, or when zlib had everything and made no further progress. */
    if (*out_used == out_cap || (ci == 0 && co == 0))
      return 0;
    if (*in_used == in_len && s->z.avail_out > 0)
      return 0;
  }
}

static int fail(braid_gzip_stream_t *s, int rc) {
  s->error = rc;
  return rc;
}

/* Output limits after a step: 0, BRAID_EOUTPUTCAP or BRAID_ERATIO. */
static int limits_check(const braid_gzip_stream_t *s) {
  const braid_gzip_opts_t *o = &s->opts;
  if (o->max_output_bytes && s->total_out > o->max_output_bytes)
    return BRAID_EOUTPUTCAP;
  if (o->max_ratio && s->total_out > o->ratio_grace_bytes &&
      (s->total_in <= UINT64_MAX / o->max_ratio) && s->total_out > s->total_in * o->max_ratio)
    return BRAID_ERATIO;
  return 0;
}

static int decompress_step(braid_gzip_stream_t *s, const uint8_t *in, size_t in_len,
                           size_t *in_used, uint8_t *out, size_t out_cap, size_t *out_used,
                           int flags) {
  const braid_gzip_format_t f = s->opts.format;
  for (;;) {
    const uint8_t *p = in + *in_used;
    size_t n = in_len - *in_used;
    switch (s->state) {
    case S_HEADER: {
      size_t used;
      int rc = hdr_parse(&s->hdr, p, n, &used);
      *in_used += used;
      s->total_in += used;
      if (rc < 0)
        return fail(s, rc);
      if (rc == 0)
        goto need_input;
      inflateReset(&s->z);
      s->check = check_init(f);
      s->member_out = 0;
      s->state = S_BODY;
      break;
    }
    case S_BODY: {
      size_t room = out_cap - *out_used;
      if (room == 0)
        return 0;
      /* Let zlib write at most one byte past the cap: enough to know the cap is exceeded,
       * and that byte is never reported to the caller. */
      uint64_t max = s->opts.max_output_bytes;
      if (max && max - s->total_out < (uint64_t)room - 1)
        room = (size_t)(max - s->total_out) + 1;
      uint8_t *o = out + *out_used;
      s->z.next_in = (Bytef *)(uintptr_t)p;
      s->z.avail_in = clamp_uint(n);
      s->z.next_out = o;
      s->z.avail_out = clamp_uint(room);
      uInt ai = s->z.avail_in, ao = s->z.avail_out;
      int zrc = inflate(&s->z, Z_NO_FLUSH);
      size_t ci = ai - s->z.avail_in, co = ao - s->z.avail_out;
      *in_used += ci;
      s->total_in += ci;
      s->total_out += co;
      if (max && s->total_out > max) {
        co -= (size_t)(s->total_out - max);
        s->total_out = max; /* the byte past the cap was never handed out */
        *out_used += co;
        return fail(s, BRAID_EOUTPUTCAP);
      }
      *out_used += co;
      s->check = check_update(f, s->check, o, co);
      s->member_out += co;
      int lrc = limits_check(s);
      if (lrc)
        return fail(s, lrc);
      if (zrc == Z_STREAM_END) {
        s->state = S_TRAILER;
        s->trailer_len = 0;
        break;
      }
      if (zrc == Z_DATA_ERROR || zrc == Z_NEED_DICT)
        return fail(s, BRAID_ECORRUPT);
      if (zrc == Z_MEM_ERROR)
        return fail(s, BRAID_ENOMEM);
      if (s->z.avail_out == 0)
        return 0; /* out of room: the caller drains and calls again */
      if (*in_used < in_len)
        break; /* more than a uInt of input: go round */
      goto need_input;
    }
    case S_TRAILER: {
      unsigned need = trailer_size(f);
      size_t k = n < need - s->trailer_len ? n : need - s->trailer_len;
      memcpy(s->trailer + s->trailer_len, p, k);
      s->trailer_len += (unsigned)k;
      *in_used += k;
      s->total_in += k;
      if (s->trailer_len < need)
        goto need_input;
      if (f == BRAID_GZIP_FORMAT_GZIP) {
        if (rd_le32(s->trailer) != s->check)
          return fail(s, BRAID_EBADCRC);
        if (rd_le32(s->trailer + 4) != (uint32_t)s->member_out)
          return fail(s, BRAID_EBADSIZE);
      } else if (f == BRAID_GZIP_FORMAT_ZLIB && rd_be32(s->trailer) != s->check) {
        return fail(s, BRAID_EBADCRC);
      }
      s->state = S_END;
      break;
    }
    case S_END:
      if (n == 0)
        goto need_input;
      if (f != BRAID_GZIP_FORMAT_GZIP)
        return fail(s, BRAID_ETRAILING);
      hdr_start(&s->hdr, true);
      s->state = S_HEADER;
      break;
    case S_DONE:
      if (n)
        return fail(s, BRAID_ETRAILING);
      return BRAID_GZIP_DONE;
    }
  }
need_input:
  if (!(flags & BRAID_GZIP_FINISH))
    return 0;
  if (s->state == S_END) {
    s->state = S_DONE;
    return BRAID_GZIP_DONE;
  }
  return fail(s, BRAID_ETRUNCATED);
}

int braid_gzip_stream_process(braid_gzip_stream_t *s, const void *in, size_t in_len,
                              size_t *in_used, void *out, size_t out_cap, size_t *out_used,
                              int flags) {
  if (in_used)
    *in_used = 0;
  if (out_used)
    *out_used = 0;
  if (!s || !in_used || !out_used || (!in && in_len) || (!out && out_cap) ||
      (flags & ~(BRAID_GZIP_FINISH | BRAID_GZIP_FLUSH)))
    return BRAID_EINVAL;
  /* Pointer arithmetic on NULL is undefined even for offset 0: use a real empty buffer. */
  static uint8_t none[1];
  if (!in)
    in = none;
  if (!out)
    out = none;
  if (s->mode == BRAID_GZIP_COMPRESS)
    return compress_step(s, in, in_len, in_used, out, out_cap, out_used, flags);
  if (s->error)
    return s->error;
  return decompress_step(s, in, in_len, in_used, out, out_cap, out_used, flags);
}

/* ---- one-shot contexts -------------------------------------------------------------- */

struct braid_gzip_s {
  braid_gzip_opts_t opts;
#if BRAID_HAVE_LIBDEFLATE
  struct libdeflate_compressor *ldc;
  struct libdeflate_decompressor *ldd;
#else
  z_stream zc;
  bool zc_ready;
#endif
  braid_gzip_stream_t *dec; /* zlib decoder: the fallback, and the error classifier */
};

int braid_gzip_new(braid_gzip_t **out, const braid_gzip_opts_t *opts) {
  if (!out)
    return BRAID_EINVAL;
  braid_gzip_opts_t o;
  int rc = opts_copy(&o, opts);
  if (rc)
    return rc;
  braid_gzip_t *gz = braid__calloc(1, sizeof(*gz));
  if (!gz)
    return BRAID_ENOMEM;
  gz->opts = o;
  *out = gz;
  return 0;
}

void braid_gzip_free(braid_gzip_t *gz) {
  if (!gz)
    return;
#if BRAID_HAVE_LIBDEFLATE
  libdeflate_free_compressor(gz->ldc);
  libdeflate_free_decompressor(gz->ldd);
#else
  if (gz->zc_ready)
    deflateEnd(&gz->zc);
#endif
  braid_gzip_stream_free(gz->dec);
  braid__free(gz);
}

void braid_gzip_buf_free(void *buf) {
  braid__free(buf);
}

size_t braid_gzip_compress_bound(const braid_gzip_t *gz, size_t in_len) {
  if (!gz)
    return 0;
  /* Covers libdeflate's bound (5 bytes per block of at least 5000 bytes, plus padding) and
   * zlib's deflateBound() at every level, plus the largest wrapper (gzip's 18 bytes). */
  size_t extra = in_len / 256 + 128;
  if (in_len > SIZE_MAX - extra)
    return 0;
  return in_len + extra;
}

#if BRAID_HAVE_LIBDEFLATE
static int ld_compress(braid_gzip_t *gz, const void *in, size_t in_len, void *out, size_t out_cap,
                       size_t *out_len) {
  if (!gz->ldc && !(gz->ldc = libdeflate_alloc_compressor(gz->opts.level)))
    return BRAID_ENOMEM;
  size_t n;
  switch (gz->opts.format) {
  case BRAID_GZIP_FORMAT_GZIP:
    n = libdeflate_gzip_compress(gz->ldc, in, in_len, out, out_cap);
    break;
  case BRAID_GZIP_FORMAT_ZLIB:
    n = libdeflate_zlib_compress(gz->ldc, in, in_len, out, out_cap);
    break;
  default:
    n = libdeflate_deflate_compress(gz->ldc, in, in_len, out, out_cap);
    break;
  }
  if (n == 0)
    return BRAID_ETOOBIG;
  *out_len = n;
  return 0;
}
#else
static int z_compress(braid_gzip_t *gz, const void *in, size_t in_len, void *out, size_t out_cap,
                      size_t *out_len) {
  if (!gz->zc_ready) {
    gz->zc.zalloc = z_alloc;
    gz->zc.zfree = z_free;
    int zrc = deflateInit2(&gz->zc, gz->opts.level, Z_DEFLATED, window_bits(gz->opts.format), 8,
                           Z_DEFAULT_STRATEGY);
    if (zrc != Z_OK)
      return zrc == Z_MEM_ERROR ? BRAID_ENOMEM : BRAID_EINVAL;
    gz->zc_ready = true;
  } else {
    deflateReset(&gz->zc);
  }
  const uint8_t *ip = in;
  uint8_t *op = out;
  size_t il = in_len, ol = out_cap;
  for (;;) {
    gz->zc.next_in = (Bytef *)(uintptr_t)ip;
    gz->zc.avail_in = clamp_uint(il);
    gz->zc.next_out = op;
    gz->zc.avail_out = clamp_uint(ol);
    uInt ai = gz->zc.avail_in, ao = gz->zc.avail_out;
    int zrc = deflate(&gz->zc, il > ai ? Z_NO_FLUSH : Z_FINISH);
    ip += ai - gz->zc.avail_in;
    il -= ai - gz->zc.avail_in;
    op += ao - gz->zc.avail_out;
    ol -= ao - gz->zc.avail_out;
    if (zrc == Z_STREAM_END)
      break;
    if (zrc != Z_OK && zrc != Z_BUF_ERROR)
      return zrc == Z_MEM_ERROR ? BRAID_ENOMEM : BRAID_EINVAL;
    if (ol == 0)
      return BRAID_ETOOBIG;
  }
  *out_len = out_cap - ol;
  return 0;
}
#endif

int braid_gzip_compress(braid_gzip_t *gz, const void *in, size_t in_len, void *out, size_t out_cap,
                        size_t *out_len) {
  if (out_len)
    *out_len = 0;
  if (!gz || !out_len || (!in && in_len) || (!out && out_cap))
    return BRAID_EINVAL;
  if (in_len < gz->opts.min_size_bytes)
    return BRAID_GZIP_SKIPPED;
  static const uint8_t empty[1];
  if (!in)
    in = empty;
#if BRAID_HAVE_LIBDEFLATE
  return ld_compress(gz, in, in_len, out, out_cap, out_len);
#else
  return z_compress(gz, in, in_len, out, out_cap, out_len);
#endif
}

int braid_gzip_compress_alloc(braid_gzip_t *gz, const void *in, size_t in_len, void **out,
                              size_t *out_len) {
  if (out)
    *out = NULL;
  if (out_len)
    *out_len = 0;
  if (!gz || !out || !out_len || (!in && in_len))
    return BRAID_EINVAL;
  if (in_len < gz->opts.min_size_bytes)
    return BRAID_GZIP_SKIPPED;
  size_t cap = braid_gzip_compress_bound(gz, in_len);
  if (cap == 0)
    return BRAID_ENOMEM;
  uint8_t *buf = braid__malloc(cap);
  if (!buf)
    return BRAID_ENOMEM;
  size_t n;
  int rc = braid_gzip_compress(gz, in, in_len, buf, cap, &n);
  if (rc) {
    braid__free(buf);
    return rc;
  }
  /* Give back the unused tail when it is large (incompressible input leaves little). */
  if (cap - n > 4096) {
    uint8_t *smaller = braid__realloc(buf, n ? n : 1);
    if (smaller)
      buf = smaller;
  }
  *out = buf;
  *out_len = n;
  return 0;
}

/* The most output one-shot decompression of in_len bytes may produce, and the error for
 * exceeding it (the cap or the ratio, whichever binds). */
static uint64_t oneshot_limit(const braid_gzip_opts_t *o, size_t in_len, int *err) {
  uint64_t limit = UINT64_MAX;
  *err = BRAID_EOUTPUTCAP;
  if (o->max_output_bytes)
    limit = o->max_output_bytes;
  if (o->max_ratio) {
    uint64_t r = (uint64_t)in_len <= UINT64_MAX / o->max_ratio ? (uint64_t)in_len * o->max_ratio
                                                               : UINT64_MAX;
    if (r < o->ratio_grace_bytes)
      r = o->ratio_grace_bytes;
    if (r < limit) {
      limit = r;
      *err = BRAID_ERATIO;
    }
  }
  if (limit > SIZE_MAX - 1)
    limit = SIZE_MAX - 1;
  return limit;
}

/* First guess at the output size: the gzip trailer's ISIZE (exact for one member under
 * 4 GiB; only a hint, never trusted past the limit), otherwise 4x the input. */
static size_t first_guess(braid_gzip_format_t f, const uint8_t *in, size_t in_len,
                          uint64_t limit) {
  uint64_t guess = (uint64_t)in_len * 4;
  if (f == BRAID_GZIP_FORMAT_GZIP && in_len >= 18)
    guess = rd_le32(in + in_len - 4);
  if (guess < 64)
    guess = 64;
  if (guess > limit)
    guess = limit;
  return (size_t)guess;
}

static int dec_stream(braid_gzip_t *gz) {
  if (gz->dec)
    return braid_gzip_stream_reset(gz->dec);
  return braid_gzip_stream_new(&gz->dec, BRAID_GZIP_DECOMPRESS, &gz->opts);
}

/* Where one-shot decompression writes: a caller's fixed buffer, or one braid grows (never
 * past the limits). */
typedef struct {
  uint8_t *buf;
  size_t cap;
  bool grow;
} obuf_t;

/* Decompresses through the zlib stream decoder; it applies every limit itself. With ob NULL,
 * output goes to a scratch buffer and is dropped (used to find out why libdeflate refused an
 * input). */
static int z_decompress(braid_gzip_t *gz, const uint8_t *in, size_t in_len, obuf_t *ob,
                        size_t *lenp) {
  int rc = dec_stream(gz);
  if (rc)
    return rc;
  uint8_t scratch[4096];
  size_t pos = 0, len = 0;
  for (;;) {
    uint8_t *o = scratch;
    size_t room = sizeof(scratch);
    bool probe = false;
    /* Grow by doubling, but never past the cap plus the one byte the stream needs to see
     * that the cap is exceeded (it never reports that byte). */
    uint64_t most = gz->opts.max_output_bytes ? gz->opts.max_output_bytes + 1 : SIZE_MAX;
    if (ob && ob->grow && !ob->buf) {
      /* Sized right the first time for one member, so no realloc copies. */
      int unused;
      uint64_t limit = oneshot_limit(&gz->opts, in_len, &unused);
      ob->cap = first_guess(gz->opts.format, in, in_len, limit);
      if (ob->cap < most)
        ob->cap++; /* room to see the end (or the cap) without a second allocation */
      if (!(ob->buf = braid__malloc(ob->cap)))
        return BRAID_ENOMEM;
    }
    if (ob && ob->grow && ob->cap == len && ob->cap < most) {
      size_t ncap = ob->cap < 65536 ? 65536 : ob->cap * 2;
      if (ncap > most)
        ncap = (size_t)most;
      uint8_t *nb = braid__realloc(ob->buf, ncap);
      if (!nb)
        return BRAID_ENOMEM;
      ob->buf = nb;
      ob->cap = ncap;
    }
    if (ob && ob->cap > len) {
      o = ob->buf + len;
      room = ob->cap - len;
    } else if (ob) {
      /* A full caller buffer: one byte more would mean the output does not fit. */
      room = 1;
      probe = true;
    }
    size_t iu, ou;
    rc = braid_gzip_stream_process(gz->dec, in + pos, in_len - pos, &iu, o, room, &ou,
                                   BRAID_GZIP_FINISH);
    pos += iu;
    if (probe && ou)
      return BRAID_EOUTPUTCAP;
    if (ob && !probe)
      len += ou;
    if (rc < 0)
      return rc;
    if (rc == BRAID_GZIP_DONE)
      break;
  }
  if (lenp)
    *lenp = len;
  return 0;
}

#if BRAID_HAVE_LIBDEFLATE
static int ld_decompress(braid_gzip_t *gz, const uint8_t *in, size_t in_len, obuf_t *ob,
                         size_t *lenp) {
  if (!gz->ldd && !(gz->ldd = libdeflate_alloc_decompressor()))
    return BRAID_ENOMEM;
  const braid_gzip_format_t f = gz->opts.format;
  int limit_err;
  uint64_t limit = oneshot_limit(&gz->opts, in_len, &limit_err);
  if (!ob->grow && ob->cap < limit) {
    limit = ob->cap; /* the caller's buffer is one more cap */
    limit_err = BRAID_EOUTPUTCAP;
  } else if (!ob->grow) {
    ob->cap = (size_t)limit; /* never write past the limits, however large the buffer */
  }
  if (ob->grow) {
    ob->cap = first_guess(f, in, in_len, limit);
    if (!(ob->buf = braid__malloc(ob->cap ? ob->cap : 1)))
      return BRAID_ENOMEM;
  }
  size_t len = 0, pos = 0;
  hdr_t h = {.format = f, .max_members = gz->opts.max_members};
  bool first = true;
  for (;;) {
    if (f != BRAID_GZIP_FORMAT_RAW) {
      hdr_start(&h, !first);
      size_t used;
      int rc = hdr_parse(&h, in + pos, in_len - pos, &used);
      if (rc < 0)
        return rc;
      if (rc == 0)
        return BRAID_ETRUNCATED;
      pos += used;
    }
    first = false;
    size_t ain, aout;
    enum libdeflate_result r;
    for (;;) {
      r = libdeflate_deflate_decompress_ex(gz->ldd, in + pos, in_len - pos, ob->buf + len,
                                           ob->cap - len, &ain, &aout);
      if (r != LIBDEFLATE_INSUFFICIENT_SPACE)
        break;
      if (ob->cap >= limit)
        return limit_err;
      uint64_t ncap = (uint64_t)ob->cap * 2 < limit ? (uint64_t)ob->cap * 2 : limit;
      uint8_t *nb = braid__realloc(ob->buf, (size_t)ncap);
      if (!nb)
        return BRAID_ENOMEM;
      ob->buf = nb;
      ob->cap = (size_t)ncap;
    }
    if (r != LIBDEFLATE_SUCCESS) {
      /* libdeflate says only "bad data": let the zlib decoder say truncated or corrupt. */
      int why = z_decompress(gz, in, in_len, NULL, NULL);
      return why ? why : BRAID_ECORRUPT;
    }
    pos += ain;
    unsigned tsz = trailer_size(f);
    if (in_len - pos < tsz)
      return BRAID_ETRUNCATED;
    uint32_t c = check_update(f, check_init(f), ob->buf + len, aout);
    if (f == BRAID_GZIP_FORMAT_GZIP) {
      if (rd_le32(in + pos) != c)
        return BRAID_EBADCRC;
      if (rd_le32(in + pos + 4) != (uint32_t)aout)
        return BRAID_EBADSIZE;
    } else if (f == BRAID_GZIP_FORMAT_ZLIB && rd_be32(in + pos) != c) {
      return BRAID_EBADCRC;
    }
    pos += tsz;
    len += aout;
    if (pos == in_len)
      break;
    if (f != BRAID_GZIP_FORMAT_GZIP)
      return BRAID_ETRAILING;
  }
  *lenp = len;
  return 0;
}
#endif

static int decompress_to(braid_gzip_t *gz, const uint8_t *in, size_t in_len, obuf_t *ob,
                         size_t *lenp) {
#if BRAID_HAVE_LIBDEFLATE
  return ld_decompress(gz, in, in_len, ob, lenp);
#else
  return z_decompress(gz, in, in_len, ob, lenp);
#endif
}

int braid_gzip_decompress(braid_gzip_t *gz, const void *in, size_t in_len, void **out,
                          size_t *out_len) {
  if (out)
    *out = NULL;
  if (out_len)
    *out_len = 0;
  if (!gz || !out || !out_len || (!in && in_len))
    return BRAID_EINVAL;
  static const uint8_t empty[1];
  obuf_t ob = {NULL, 0, true};
  size_t len = 0;
  int rc = decompress_to(gz, in ? in : empty, in_len, &ob, &len);
  if (rc == 0 && !ob.buf && !(ob.buf = braid__malloc(1)))
    rc = BRAID_ENOMEM;
  if (rc) {
    braid__free(ob.buf);
    return rc;
  }
  if (ob.cap - len > 4096) {
    uint8_t *smaller = braid__realloc(ob.buf, len ? len : 1);
    if (smaller)
      ob.buf = smaller;
  }
  *out = ob.buf;
  *out_len = len;
  return 0;
}

int braid_gzip_decompress_into(braid_gzip_t *gz, const void *in, size_t in_len, void *out,
                               size_t out_cap, size_t *out_len) {
  if (out_len)
    *out_len = 0;
  if (!gz || !out_len || (!in && in_len) || (!out && out_cap))
    return BRAID_EINVAL;
  static const uint8_t empty[1];
  uint8_t one[1];
  obuf_t ob = {out ? out : one, out ? out_cap : 0, false};
  return decompress_to(gz, in ? in : empty, in_len, &ob, out_len);
}

/* ---- asynchronous one-shot ---------------------------------------------------------- */

typedef struct {
  braid_loop_t *loop;
  braid_gzip_opts_t opts;
  bool compress;
  const void *in;
  size_t in_len;
  void *out;
  size_t out_len;
  int status;
  braid_gzip_done_cb done;
  void *arg;
} job_t;

static void job_run(void *arg) {
  job_t *j = arg;
  braid_gzip_t *gz;
  j->status = braid_gzip_new(&gz, &j->opts);
  if (j->status)
    return;
  j->status = j->compress ? braid_gzip_compress_alloc(gz, j->in, j->in_len, &j->out, &j->out_len)
                          : braid_gzip_decompress(gz, j->in, j->in_len, &j->out, &j->out_len);
  braid_gzip_free(gz);
}

static void job_finish(job_t *j, int status) {
  if (status == 0)
    status = j->status;
  if (status != 0 && j->out) {
    braid__free(j->out);
    j->out = NULL;
    j->out_len = 0;
  }
  braid_gzip_done_cb done = j->done;
  braid_loop_t *loop = j->loop;
  void *out = j->out, *arg = j->arg;
  size_t out_len = j->out_len;
  braid__free(j);
  done(loop, status, out, out_len, arg);
}

static void job_after_work(braid_loop_t *loop, int status, void *arg) {
  (void)loop;
  job_finish(arg, status);
}

static void job_posted(void *arg) {
  job_finish(arg, 0);
}

static int submit(braid_loop_t *loop, const braid_gzip_opts_t *opts, const void *in, size_t in_len,
                  braid_gzip_done_cb done, void *arg, bool compress) {
  if (!loop || !done || (!in && in_len))
    return BRAID_EINVAL;
  if (loop->closing)
    return BRAID_ECLOSED;
  job_t *j = braid__calloc(1, sizeof(*j));
  if (!j)
    return BRAID_ENOMEM;
  int rc = opts_copy(&j->opts, opts);
  if (rc) {
    braid__free(j);
    return rc;
  }
  j->loop = loop;
  j->compress = compress;
  j->in = in;
  j->in_len = in_len;
  j->done = done;
  j->arg = arg;
  if (in_len > j->opts.offload_threshold_bytes || j->opts.offload_threshold_bytes == 0) {
    rc = braid_work(NULL, loop, job_run, job_after_work, j);
  } else {
    /* Small: cheaper to do now than to hop threads, but the callback still comes from the
     * loop, so callers never see it re-enter them. */
    job_run(j);
    rc = braid_loop_post(loop, job_posted, j);
  }
  if (rc) {
    braid__free(j->out);
    braid__free(j);
  }
  return rc;
}

int braid_gzip_compress_async(braid_loop_t *loop, const braid_gzip_opts_t *opts, const void *in,
                              size_t in_len, braid_gzip_done_cb done, void *arg) {
  return submit(loop, opts, in, in_len, done, arg, true);
}

int braid_gzip_decompress_async(braid_loop_t *loop, const braid_gzip_opts_t *opts, const void *in,
                                size_t in_len, braid_gzip_done_cb done, void *arg) {
  return submit(loop, opts, in, in_len, done, arg, false);
}
