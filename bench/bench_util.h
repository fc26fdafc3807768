/* Small helpers shared by the benchmark servers, so that every server parses the same flags,
 * prints the same ready line and reports memory and CPU the same way. Header-only and static:
 * each bench program stays one file plus this. Not part of braid. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Parses `--port N` (0 = ephemeral, the default). Returns the port, or -1 on bad usage after
 * printing why. */
static inline int bench_parse_port(int argc, char **argv) {
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end = NULL;
      long v = strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "%s: bad port '%s'\n", argv[0], argv[i]);
        return -1;
      }
      port = (int)v;
    } else {
      fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
      return -1;
    }
  }
  return port;
}

/* Process set-up every server does: idle-connection runs open 10,000 sockets, so the soft
 * descriptor limit goes up to the hard one; and a client that closes while we write must
 * cost an EPIPE, not the process (libevent and libuv leave SIGPIPE at its default). */
static inline void bench_setup_process(void) {
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* The line the driver waits for. Flushed, because stdout is a pipe. */
static inline void bench_print_ready(int port) {
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
}

/* Answers the driver's SIGUSR1: heap bytes in use (malloc'd, including mmap'd chunks) and
 * the size of libuv's TCP handle, so the driver can compute heap per idle connection. One
 * line on stdout, flushed. Called from the loop (not from a raw signal handler). */
static inline void bench_print_heap(size_t handle_bytes) {
  struct mallinfo2 mi = mallinfo2();
  printf("heap in_use=%zu mmap=%zu handle=%zu\n", mi.uordblks + mi.hblkhd, mi.hblkhd,
         handle_bytes);
  fflush(stdout);
}

/* Reported on exit, for runs without the driver (the driver reads /proc/PID/stat). */
static inline void bench_print_cpu(const char *name) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return;
  fprintf(stderr, "%s: cpu user=%ld.%06lds sys=%ld.%06lds\n", name, (long)ru.ru_utime.tv_sec,
          (long)ru.ru_utime.tv_usec, (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
}

#ifdef UV_VERSION_MAJOR /* the libuv-based servers (uv.h included before this header) */
/* The servers' three signals, all to cb on the loop: SIGTERM and SIGINT stop, SIGUSR1 asks
 * for the heap line (bench_print_heap). */
typedef struct bench_signals_s {
  uv_signal_t term, intr, usr1;
} bench_signals_t;

static inline void bench_signals_start(uv_loop_t *loop, bench_signals_t *s, uv_signal_cb cb) {
  uv_signal_init(loop, &s->term);
  uv_signal_init(loop, &s->intr);
  uv_signal_init(loop, &s->usr1);
  uv_signal_start(&s->term, cb, SIGTERM);
  uv_signal_start(&s->intr, cb, SIGINT);
  uv_signal_start(&s->usr1, cb, SIGUSR1);
}

static inline void bench_signals_close(bench_signals_t *s) {
  uv_close((uv_handle_t *)&s->term, NULL);
  uv_close((uv_handle_t *)&s->intr, NULL);
  uv_close((uv_handle_t *)&s->usr1, NULL);
}
#endif

#endif
