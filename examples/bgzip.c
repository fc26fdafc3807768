/* bgzip: gzip -c / gzip -dc with braid's streaming filter.
 *
 *   bgzip [-d] [-1..-9] [--format gzip|zlib|raw] [--max-output BYTES] < in > out
 *
 * Reads stdin in 64 KiB pieces, pushes each through a braid_gzip_stream_t and writes what
 * comes out to stdout. Decompression runs with braid's default limits (output cap 64 MiB
 * unless --max-output says otherwise, ratio cap, member cap); any corrupt, truncated or
 * over-limit input ends with the braid error on stderr and a non-zero exit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <braid.h>

static int usage(void) {
  fprintf(stderr, "usage: bgzip [-d] [-1..-9] [--format gzip|zlib|raw] [--max-output BYTES]\n"
                  "  compresses (or with -d decompresses) stdin to stdout\n");
  return 2;
}

static int fail(int rc) {
  fprintf(stderr, "bgzip: %s: %s\n", braid_err_name(rc), braid_strerror(rc));
  return 1;
}

/* Pushes in[0..n) through s, writing all output; finish marks the last input. Returns 0, or
 * BRAID_GZIP_DONE when the stream is complete, or a braid error (EIO as UV_EIO). */
static int pump(braid_gzip_stream_t *s, const unsigned char *in, size_t n, int finish) {
  static unsigned char out[64 * 1024];
  size_t pos = 0;
  for (;;) {
    size_t in_used, out_used;
    int rc = braid_gzip_stream_process(s, in + pos, n - pos, &in_used, out, sizeof(out), &out_used,
                                       finish ? BRAID_GZIP_FINISH : 0);
    pos += in_used;
    /* On an error, output written before it is still valid data: emit it, then fail. */
    if (out_used && fwrite(out, 1, out_used, stdout) != out_used)
      return UV_EIO;
    if (rc != 0)
      return rc;
    /* Done with this input once it is consumed and the filter had room to spare. */
    if (pos == n && out_used < sizeof(out))
      return 0;
  }
}

int main(int argc, char **argv) {
  braid_gzip_opts_t opts;
  braid_gzip_opts_init(&opts);
  braid_gzip_mode_t mode = BRAID_GZIP_COMPRESS;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-d") == 0) {
      mode = BRAID_GZIP_DECOMPRESS;
    } else if (a[0] == '-' && a[1] >= '1' && a[1] <= '9' && a[2] == '\0') {
      opts.level = a[1] - '0';
    } else if (strcmp(a, "--format") == 0 && i + 1 < argc) {
      const char *f = argv[++i];
      if (strcmp(f, "gzip") == 0)
        opts.format = BRAID_GZIP_FORMAT_GZIP;
      else if (strcmp(f, "zlib") == 0)
        opts.format = BRAID_GZIP_FORMAT_ZLIB;
      else if (strcmp(f, "raw") == 0)
        opts.format = BRAID_GZIP_FORMAT_RAW;
      else
        return usage();
    } else if (strcmp(a, "--max-output") == 0 && i + 1 < argc) {
      char *end;
      opts.max_output_bytes = strtoull(argv[++i], &end, 10);
      if (*end != '\0')
        return usage();
    } else {
      return usage();
    }
  }

  braid_gzip_stream_t *s;
  int rc = braid_gzip_stream_new(&s, mode, &opts);
  if (rc)
    return fail(rc);
  static unsigned char in[64 * 1024];
  for (;;) {
    size_t n = fread(in, 1, sizeof(in), stdin);
    int eof = n < sizeof(in) && feof(stdin);
    if (n < sizeof(in) && ferror(stdin)) {
      rc = UV_EIO;
      break;
    }
    rc = pump(s, in, n, eof);
    if (rc < 0 || eof)
      break;
  }
  braid_gzip_stream_free(s);
  if (fflush(stdout) != 0 && rc >= 0)
    rc = UV_EIO;
  /* With FINISH given and all input pushed, only DONE means the stream really ended. */
  if (rc < 0)
    return fail(rc);
  if (rc != BRAID_GZIP_DONE)
    return fail(BRAID_ETRUNCATED);
  return 0;
}
