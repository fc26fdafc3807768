/* Opens N idle connections to an echo server and holds them, so the driver can measure the
 * server's heap per idle connection (heap after minus heap before, over N).
 *
 * Each connection echoes one byte first: that proves the server accepted it and started
 * reading, and leaves it in the state a real idle client leaves it (a read behind it, reading
 * on). With --http, each connection instead sends one `GET / HTTP/1.1` and reads the whole
 * response (its Content-Length), leaving an idle keep-alive connection behind. Source
 * addresses rotate over 127.0.0.2..127.0.0.201 (with IP_BIND_ADDRESS_NO_PORT) so repeated
 * runs do not run out of ephemeral ports. Prints `ready N` (flushed) when all are open, then
 * holds them until stdin closes or --hold seconds pass, and exits.
 *
 * Usage: idle_conns --port N [--conns N] [--hold SEC] [--http] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static int http_mode;

/* One keep-alive request and its whole response: headers, then Content-Length bytes. */
static int http_exchange(int fd) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
  if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
    return -1;
  char buf[4096];
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
    if (r <= 0)
      return -1;
    got += (size_t)r;
    buf[got] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end) {
      const char *cl = strcasestr(buf, "\r\ncontent-length:");
      if (!cl || strncmp(buf, "HTTP/1.1 200", 12) != 0)
        return -1;
      size_t want = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
      if (want >= sizeof buf)
        return -1;
      if (got >= want)
        return got == want ? 0 : -1;
    } else if (got >= sizeof buf - 1) {
      return -1;
    }
  }
}

static int open_one(const struct sockaddr_in *dst, unsigned i) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  struct sockaddr_in src;
  memset(&src, 0, sizeof(src));
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(0x7f000002u + i % 200u);
  struct timeval tv = {5, 0}; /* a server that never answers must not hang us */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  char b = 'x';
  if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
      connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) != 0 ||
      (http_mode ? http_exchange(fd) != 0
                 : (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1 || b != 'x'))) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int main(int argc, char **argv) {
  int port = -1;
  unsigned n = 10000;
  double hold_s = 60;
  for (int i = 1; i < argc; i += 2) {
    if (strcmp(argv[i], "--http") == 0) {
      http_mode = 1;
      i--;
      continue;
    }
    if (i + 1 >= argc) port = -1;
    else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--conns") == 0) n = (unsigned)strtoul(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--hold") == 0) hold_s = strtod(argv[i + 1], NULL);
    else port = -1, i = argc;
  }
  if (port <= 0 || port > 65535 || n < 1 || n > 100000 || !(hold_s > 0 && hold_s < 3600)) {
    fprintf(stderr, "usage: %s --port N [--conns N] [--hold SEC] [--http]\n", argv[0]);
    return 2;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < n + 16) {
      fprintf(stderr, "idle_conns: RLIMIT_NOFILE hard limit %llu is below %u\n",
              (unsigned long long)rl.rlim_max, n + 16);
      return 1;
    }
  }

  struct sockaddr_in dst;
  memset(&dst, 0, sizeof(dst));
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int *fds = calloc(n, sizeof(int));
  if (!fds) return 1;
  for (unsigned i = 0; i < n; i++) {
    fds[i] = open_one(&dst, i);
    if (fds[i] < 0) {
      fprintf(stderr, "idle_conns: connection %u: %s\n", i, strerror(errno));
      for (unsigned j = 0; j < i; j++) close(fds[j]);
      return 1;
    }
  }
  printf("ready %u\n", n);
  fflush(stdout);

  /* Hold until the driver closes our stdin (or the hold time runs out). */
  struct pollfd p = {.fd = 0, .events = POLLIN};
  char sink[64];
  while (poll(&p, 1, (int)(hold_s * 1000)) > 0 && read(0, sink, sizeof(sink)) > 0) {
  }
  for (unsigned i = 0; i < n; i++) close(fds[i]);
  free(fds);
  return 0;
}
