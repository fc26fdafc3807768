/* The one load client of the echo benchmark: every server is measured with this program, so
 * the comparison is fair. Single-threaded epoll, level-triggered, no library between it and
 * the sockets, so that it costs as little CPU per request as the servers it drives.
 *
 * It opens C connections, keeps D messages of S bytes outstanding on each (D = 1 is
 * ping-pong), and checks every echoed byte against the pattern it sent. A message is complete
 * when all its bytes came back; its latency (send to last byte back) goes into a braid
 * histogram. Runs for a warm-up then a measured window (or until a request count), and stops
 * by itself. Prints one JSON line; exits 1 on any error or mismatch.
 *
 * --rate R switches from a closed loop to a fixed schedule (open loop, as wrk2 does): R
 * requests per second in all, connection i sending its k-th request at t0 + (k * C + i) / R,
 * whether or not earlier answers came back (a connection with D requests outstanding holds
 * the next one until an answer frees room). Latency is counted from the scheduled time, not
 * from the send, so a server stall is charged to every request it delays: no coordinated
 * omission. Between scheduled sends the client polls epoll without sleeping when the next
 * send is under a millisecond away (it spins on its own CPU).
 *
 * --http speaks HTTP/1.1 instead of echo (for the http scenario's fixed-rate latency): every
 * message is "GET / HTTP/1.1" with a Host header, pipelined on keep-alive connections, and
 * every answer must be "200" with Content-Length 13 and the body "Hello, World!" (what
 * examples/http_server and the benchmark's nginx answer on /). A connection the server
 * closes counts as an error: run the servers without a keep-alive request limit.
 *
 * Usage: echo_load --port N [--host 127.0.0.1] [--conns C] [--size S] [--depth D]
 *                  [--duration SEC] [--warmup SEC] [--requests R] [--rate R] [--http] */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <braid/stats.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_PERIOD 251u   /* prime, so the pattern does not line up with message sizes */
#define IO_CHUNK 65536u
#define STALL_NS (5ull * 1000000000ull)  /* no progress for this long: the server is stuck */

typedef struct {
  int fd;
  unsigned id;
  int want_out;          /* EPOLLOUT armed */
  int dead;
  uint64_t sent_off;     /* bytes written */
  uint64_t target_off;   /* bytes of messages issued (written or waiting for EPOLLOUT) */
  uint64_t recv_off;     /* bytes read back and verified */
  uint64_t issued, done; /* messages */
  uint64_t *send_ns;     /* ring of `depth` send times (scheduled times with --rate) */
  uint64_t next_ns;      /* --rate: when this connection's next request is due */
  char *hbuf;            /* --http: answer bytes not parsed yet */
  size_t hlen;
} lconn_t;

static struct {
  const char *host;
  int port;
  unsigned conns, depth;
  size_t size;
  double duration_s, warmup_s;
  uint64_t max_requests;
  double rate; /* requests per second in all; 0 = closed loop */
  int http;
} opt = {"127.0.0.1", -1, 1, 1, 64, 5.0, 0.0, 0, 0.0, 0};

#define HTTP_REQUEST "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
#define HTTP_BODY "Hello, World!"
#define HTTP_BUF 16384
static unsigned period = PATTERN_PERIOD; /* --http: the request's length, and no per-id shift */

static unsigned char pattern[IO_CHUNK + PATTERN_PERIOD];
static unsigned char rbuf[IO_CHUNK];
static braid_histogram_t hist; /* nanoseconds */
static uint64_t errors, mismatches;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Byte at stream offset o of connection id is pattern[(o + id) % PERIOD]; the buffer repeats
 * the period so any run of up to IO_CHUNK bytes is one contiguous slice. */
static const unsigned char *pattern_at(const lconn_t *c, uint64_t off) {
  return pattern + (off + (opt.http ? 0 : c->id)) % period;
}

static void conn_fail(lconn_t *c, int epfd) {
  if (c->dead) return;
  c->dead = 1;
  errors++;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
}

static void arm_out(lconn_t *c, int epfd, int on) {
  if (c->want_out == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->want_out = on;
}

static void flush_out(lconn_t *c, int epfd) {
  while (c->sent_off < c->target_off) {
    uint64_t left = c->target_off - c->sent_off;
    size_t n = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
    ssize_t w = write(c->fd, pattern_at(c, c->sent_off), n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      conn_fail(c, epfd);
      return;
    }
    c->sent_off += (uint64_t)w;
  }
  arm_out(c, epfd, c->sent_off < c->target_off);
}

static void issue(lconn_t *c, unsigned n, uint64_t t) {
  for (unsigned i = 0; i < n; i++) {
    c->send_ns[c->issued % opt.depth] = t;
    c->issued++;
  }
  c->target_off = c->issued * opt.size;
}

/* --http: completes the answers whole in c->hbuf; returns how many, or -1 on a bad one. */
static int http_answers(lconn_t *c, uint64_t t, int record) {
  int completed = 0;
  for (;;) {
    char *end = memmem(c->hbuf, c->hlen, "\r\n\r\n", 4);
    if (!end) return c->hlen >= HTTP_BUF ? -1 : completed;
    size_t head = (size_t)(end - c->hbuf) + 4;
    if (c->hlen < 13 || memcmp(c->hbuf, "HTTP/1.1 200 ", 13) != 0) return -1;
    long clen = -1;
    for (char *p = memchr(c->hbuf, '\n', head); p && p + 1 < end; p = memchr(p + 1, '\n', (size_t)(end - p - 1)))
      if (strncasecmp(p + 1, "Content-Length:", 15) == 0) clen = strtol(p + 16, NULL, 10);
    if (clen != (long)strlen(HTTP_BODY)) return -1;
    if (c->hlen < head + (size_t)clen) return completed;
    if (memcmp(c->hbuf + head, HTTP_BODY, (size_t)clen) != 0 || c->done >= c->issued) return -1;
    if (record) braid_histogram_record(&hist, t - c->send_ns[c->done % opt.depth]);
    c->done++;
    completed++;
    memmove(c->hbuf, c->hbuf + head + (size_t)clen, c->hlen - head - (size_t)clen);
    c->hlen -= head + (size_t)clen;
  }
}

/* Reads what is there, verifies it, completes messages. Returns messages completed. */
static unsigned on_readable(lconn_t *c, int epfd, uint64_t t, int record) {
  ssize_t r = read(c->fd, opt.http ? c->hbuf + c->hlen : (char *)rbuf,
                   opt.http ? HTTP_BUF - c->hlen : sizeof(rbuf));
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
  if (r <= 0) {
    conn_fail(c, epfd); /* reset, or EOF from a server that should still be echoing */
    return 0;
  }
  size_t n = (size_t)r;
  if (opt.http) {
    c->hlen += n;
    int done = http_answers(c, t, record);
    if (done < 0) {
      mismatches++;
      conn_fail(c, epfd);
      return 0;
    }
    return (unsigned)done;
  }
  if (c->recv_off + n > c->sent_off || memcmp(rbuf, pattern_at(c, c->recv_off), n) != 0) {
    mismatches++;
    conn_fail(c, epfd);
    return 0;
  }
  c->recv_off += n;
  unsigned completed = 0;
  while ((c->done + 1) * opt.size <= c->recv_off) {
    if (record) braid_histogram_record(&hist, t - c->send_ns[c->done % opt.depth]);
    c->done++;
    completed++;
  }
  return completed;
}

static int connect_one(lconn_t *c, const struct sockaddr_in *sa) {
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) return -1;
  if (connect(c->fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int flags = fcntl(c->fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
}

static int parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v && strcmp(a, "--http") != 0) goto usage;
    i++;
    if (strcmp(a, "--host") == 0) opt.host = v;
    else if (strcmp(a, "--port") == 0) opt.port = atoi(v);
    else if (strcmp(a, "--conns") == 0) opt.conns = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--size") == 0) opt.size = (size_t)strtoul(v, NULL, 10);
    else if (strcmp(a, "--depth") == 0) opt.depth = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--duration") == 0) opt.duration_s = strtod(v, NULL);
    else if (strcmp(a, "--warmup") == 0) opt.warmup_s = strtod(v, NULL);
    else if (strcmp(a, "--requests") == 0) opt.max_requests = strtoull(v, NULL, 10);
    else if (strcmp(a, "--rate") == 0) opt.rate = strtod(v, NULL);
    else if (strcmp(a, "--http") == 0) { opt.http = 1; i--; }
    else goto usage;
  }
  if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.conns > 100000 ||
      opt.size < 1 || opt.size > (1u << 24) || opt.depth < 1 || opt.depth > 4096 ||
      !(opt.duration_s > 0 && opt.duration_s <= 3600) ||
      !(opt.warmup_s >= 0 && opt.warmup_s <= 3600) || !(opt.rate >= 0 && opt.rate <= 1e8))
    goto usage;
  return 0;
usage:
  fprintf(stderr,
          "usage: %s --port N [--host A] [--conns C] [--size S] [--depth D] "
          "[--duration SEC] [--warmup SEC] [--requests R] [--rate PER_SEC] [--http]\n",
          argv[0]);
  return -1;
}

int main(int argc, char **argv) {
  if (parse_args(argc, argv) != 0) return 2;
  if (opt.http) {
    period = (unsigned)strlen(HTTP_REQUEST);
    opt.size = period;
  }
  for (size_t i = 0; i < sizeof(pattern); i++)
    pattern[i] = opt.http ? (unsigned char)HTTP_REQUEST[i % period]
                          : (unsigned char)((i % PATTERN_PERIOD) * 37u + 11u);

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)opt.port);
  if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
    fprintf(stderr, "echo_load: bad host %s\n", opt.host);
    return 2;
  }

  int epfd = epoll_create1(0);
  lconn_t *conns = calloc(opt.conns, sizeof(*conns));
  uint64_t *rings = calloc((size_t)opt.conns * opt.depth, sizeof(uint64_t));
  if (epfd < 0 || !conns || !rings) return 1;
  for (unsigned i = 0; i < opt.conns; i++) {
    lconn_t *c = &conns[i];
    c->id = i;
    c->send_ns = rings + (size_t)i * opt.depth;
    if (opt.http && !(c->hbuf = malloc(HTTP_BUF))) return 1;
    if (connect_one(c, &sa) != 0) {
      fprintf(stderr, "echo_load: connect %u: %s\n", i, strerror(errno));
      printf("{\"errors\":%u,\"mismatches\":0,\"requests\":0,\"rps\":0}\n", opt.conns - i);
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
  }

  uint64_t t0 = now_ns();
  uint64_t measure_start = t0 + (uint64_t)(opt.warmup_s * 1e9);
  uint64_t end = measure_start + (uint64_t)(opt.duration_s * 1e9);
  /* --rate: connection i's k-th request is due at t0 + (k * conns + i) * interval. */
  double interval_ns = opt.rate > 0 ? 1e9 / opt.rate : 0;
  for (unsigned i = 0; i < opt.conns; i++) {
    if (opt.rate > 0) {
      conns[i].next_ns = t0 + (uint64_t)(i * interval_ns);
    } else {
      issue(&conns[i], opt.depth, t0);
      flush_out(&conns[i], epfd);
    }
  }

  uint64_t measured = 0, last_progress = t0, t = t0;
  int measuring = opt.warmup_s <= 0;
  unsigned live = opt.conns;
  struct epoll_event evs[256];
  while (live > 0) {
    int timeout_ms = 10;
    if (opt.rate > 0) { /* issue what is due; wait no longer than until the next is due */
      uint64_t next = UINT64_MAX;
      for (unsigned i = 0; i < opt.conns; i++) {
        lconn_t *c = &conns[i];
        if (c->dead) continue;
        unsigned n_due = 0;
        while (c->next_ns <= t && c->issued - c->done < opt.depth) {
          issue(c, 1, c->next_ns); /* latency counts from the schedule */
          c->next_ns += (uint64_t)(interval_ns * opt.conns);
          n_due++;
        }
        if (n_due) flush_out(c, epfd);
        if (c->next_ns < next) next = c->next_ns;
      }
      timeout_ms = next <= t + 1000000 ? 0 : (int)((next - t) / 1000000);
      if (timeout_ms > 10) timeout_ms = 10;
    }
    int n = epoll_wait(epfd, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR) break;
    t = now_ns();
    if (!measuring && t >= measure_start) {
      measuring = 1;
      measure_start = t;
      end = t + (uint64_t)(opt.duration_s * 1e9);
    }
    if (measuring && t >= end) break;
    if (opt.max_requests && measured >= opt.max_requests) break;
    if (n <= 0) {
      int waiting = 0; /* at a low fixed rate nothing may be outstanding: not a stall */
      for (unsigned i = 0; i < opt.conns && !waiting; i++)
        waiting = !conns[i].dead && conns[i].issued > conns[i].done;
      if (!waiting) last_progress = t;
      if (t - last_progress > STALL_NS) {
        fprintf(stderr, "echo_load: no progress for 5 s\n");
        errors++;
        break;
      }
      continue;
    }
    for (int i = 0; i < n; i++) {
      lconn_t *c = evs[i].data.ptr;
      if (c->dead) continue;
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        unsigned done = on_readable(c, epfd, t, measuring);
        if (c->dead) {
          live--;
          continue;
        }
        if (done) {
          last_progress = t;
          if (measuring) measured += done;
          if (opt.rate <= 0) issue(c, done, t);
        }
      }
      flush_out(c, epfd);
      if (c->dead) live--;
    }
  }
  double secs = (double)(t - measure_start) / 1e9;
  if (!measuring || secs <= 0) secs = 0;
  for (unsigned i = 0; i < opt.conns; i++) {
    close(conns[i].fd);
    free(conns[i].hbuf);
  }
  if (live == 0 && opt.conns > 0) fprintf(stderr, "echo_load: every connection failed\n");

  double rps = secs > 0 ? (double)measured / secs : 0.0;
  printf("{\"conns\":%u,\"size\":%zu,\"depth\":%u,\"rate\":%.1f,\"seconds\":%.3f,"
         "\"requests\":%llu,"
         "\"rps\":%.1f,\"mb_per_s\":%.2f,\"lat_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
         "\"p999\":%.1f,\"mean\":%.1f,\"max\":%.1f},\"errors\":%llu,\"mismatches\":%llu}\n",
         opt.conns, opt.size, opt.depth, opt.rate, secs, (unsigned long long)measured, rps,
         rps * (double)opt.size / 1e6, braid_histogram_percentile(&hist, 50) / 1e3,
         braid_histogram_percentile(&hist, 90) / 1e3, braid_histogram_percentile(&hist, 99) / 1e3,
         braid_histogram_percentile(&hist, 99.9) / 1e3, braid_histogram_mean(&hist) / 1e3,
         (double)hist.max / 1e3, (unsigned long long)errors, (unsigned long long)mismatches);
  free(rings);
  free(conns);
  close(epfd);
  return errors || mismatches || measured == 0 ? 1 : 0;
}
