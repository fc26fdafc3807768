/* Baseline (c): libevent's bufferevent echo, the idiomatic libevent server: an
 * evconnlistener hands each accepted socket to a bufferevent, and the read callback moves the
 * input buffer to the output buffer (evbuffer_add_buffer moves chains, no copy).
 *
 * Usage: echo_libevent [--port N]. Prints `listening on 127.0.0.1:PORT` when ready, the heap
 * in use on SIGUSR1, and exits 0 on SIGINT/SIGTERM. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "bench_util.h"

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg) {
  (void)sa;
  (void)salen;
  (void)arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct event_base *base = evconnlistener_get_base(l);
  struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) {
    evutil_closesocket(fd);
    return;
  }
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  if (sig == SIGUSR1) {
    /* libevent has no separate "handle"; report 0 so the driver subtracts nothing. */
    bench_print_heap(0);
    return;
  }
  event_base_loopbreak(arg);
}

int main(int argc, char **argv) {
  int port = bench_parse_port(argc, argv);
  if (port < 0) return 2;
  bench_setup_process();
  struct event_base *base = event_base_new();
  if (!base) return 1;

  struct sockaddr_in addr;
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct evconnlistener *l = evconnlistener_new_bind(
      base, on_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 4096,
      (struct sockaddr *)&addr, sizeof(addr));
  if (!l) {
    fprintf(stderr, "echo_libevent: listen failed\n");
    return 1;
  }
  struct sockaddr_in bound;
  socklen_t len = sizeof(bound);
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &len);

  struct event *sigs[3];
  int signums[3] = {SIGTERM, SIGINT, SIGUSR1};
  for (int i = 0; i < 3; i++) {
    sigs[i] = evsignal_new(base, signums[i], on_signal, base);
    evsignal_add(sigs[i], NULL);
  }

  bench_print_ready(ntohs(bound.sin_port));
  event_base_dispatch(base);

  for (int i = 0; i < 3; i++) event_free(sigs[i]);
  evconnlistener_free(l);
  /* Connections still open are left to the kernel at exit: libevent keeps no list of
   * bufferevents for us to free. */
  event_base_free(base);
  bench_print_cpu("echo_libevent");
  return 0;
}
