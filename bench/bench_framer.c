/* Framer throughput: messages per second through a braid_framebuf_t, for braid frames,
 * length-field and delimiter framing, with reads that hold whole messages (64 KiB) and
 * reads that split them (1000 bytes). Compared with a naive accumulator that copies every
 * read into a growing buffer before framing it (what the zero-copy path avoids).
 *
 * Usage: bench_framer [seconds_per_case=0.3]. Prints a table, then one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "braid.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum { BRAID, LF, DELIM };
static const char *kind_name[] = {"braid", "length-field", "delimiter"};

/* Fills buf with whole messages of payload size plen; returns the bytes used and count. */
static size_t fill(int kind, uint8_t *buf, size_t cap, size_t plen, size_t *count) {
  size_t n = 0;
  *count = 0;
  for (;;) {
    size_t hdr = kind == BRAID ? 16 : kind == LF ? 4 : 0;
    size_t total = hdr + plen + (kind == DELIM ? 2 : 0);
    if (n + total > cap)
      return n;
    if (kind == BRAID) {
      braid_frame_header_t h = {0, BRAID_FRAME_REQUEST, 0, (uint32_t)(*count + 1),
                                (uint32_t)plen};
      braid_frame_header_encode(buf + n, &h);
    } else if (kind == LF) {
      buf[n] = (uint8_t)(plen >> 24);
      buf[n + 1] = (uint8_t)(plen >> 16);
      buf[n + 2] = (uint8_t)(plen >> 8);
      buf[n + 3] = (uint8_t)plen;
    }
    memset(buf + n + hdr, 'x', plen);
    if (kind == DELIM)
      memcpy(buf + n + hdr + plen, "\r\n", 2);
    n += total;
    (*count)++;
  }
}

static void make_framer(int kind, braid_framer_t *f) {
  if (kind == BRAID) {
    braid_framer_init_braid(f, BRAID_FRAME_DEFAULT_MAX_PAYLOAD);
  } else if (kind == LF) {
    braid_length_field_opts_t o;
    braid_length_field_opts_init(&o);
    o.strip_bytes = 4;
    braid_framer_init_length_field(f, &o);
  } else {
    braid_delimiter_opts_t o;
    braid_delimiter_opts_init(&o);
    braid_framer_init_delimiter(f, &o);
  }
}

static volatile size_t sink;

/* Runs for at least secs; returns messages per second. naive = copy every read first. */
static double run(int kind, const uint8_t *stream, size_t n, size_t read_size, int naive,
                  double secs) {
  braid_framer_t f;
  make_framer(kind, &f);
  braid_framebuf_t fb;
  braid_framebuf_init(&fb, &f);
  uint8_t *acc = malloc(n + 65536);
  size_t acc_len = 0, msgs = 0;
  double t0 = now_s(), t;
  do {
    for (size_t off = 0; off < n; off += read_size) {
      size_t len = n - off < read_size ? n - off : read_size;
      if (!naive) {
        braid_framebuf_msg_t m;
        braid_framebuf_push(&fb, stream + off, len);
        while (braid_framebuf_next(&fb, &m) == 1) {
          sink += m.payload_len;
          msgs++;
        }
      } else {
        memcpy(acc + acc_len, stream + off, len);
        acc_len += len;
        size_t pos = 0;
        braid_framer_msg_t m;
        int rc;
        while ((rc = braid_framer_next(&f, acc + pos, acc_len - pos, &m)) > 0) {
          sink += m.payload_len;
          pos += (size_t)rc;
          msgs++;
        }
        memmove(acc, acc + pos, acc_len - pos);
        acc_len -= pos;
      }
    }
    t = now_s() - t0;
  } while (t < secs);
  braid_framebuf_free(&fb);
  free(acc);
  return (double)msgs / t;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.3;
  static uint8_t stream[1 << 20];
  const size_t plens[] = {64, 1024};
  const size_t reads[] = {65536, 1000};
  char json[8192];
  size_t jn = (size_t)snprintf(json, sizeof(json), "{\"bench\":\"framer\",\"results\":[");
  printf("%-13s %7s %6s %16s %16s %7s\n", "framer", "payload", "read", "framebuf msg/s",
         "naive msg/s", "ratio");
  int first = 1;
  for (int kind = 0; kind < 3; kind++)
    for (size_t p = 0; p < 2; p++)
      for (size_t r = 0; r < 2; r++) {
        size_t count;
        size_t n = fill(kind, stream, sizeof(stream), plens[p], &count);
        double a = run(kind, stream, n, reads[r], 0, secs);
        double b = run(kind, stream, n, reads[r], 1, secs);
        printf("%-13s %7zu %6zu %16.0f %16.0f %7.2f\n", kind_name[kind], plens[p], reads[r], a,
               b, a / b);
        jn += (size_t)snprintf(json + jn, sizeof(json) - jn,
                               "%s{\"framer\":\"%s\",\"payload\":%zu,\"read\":%zu,"
                               "\"framebuf_msgs_per_s\":%.0f,\"naive_msgs_per_s\":%.0f}",
                               first ? "" : ",", kind_name[kind], plens[p], reads[r], a, b);
        first = 0;
      }
  printf("%s]}\n", json);
  return 0;
}
