/* Socket options: defaults, the bounds of every field, and apply + read-back on real
 * loopback sockets (IPv4 and IPv6). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "../support.h"

static void test_defaults(void **state) {
  (void)state;
  braid_sockopts_t o;
  memset(&o, 0x5a, sizeof(o));
  braid_sockopts_init(&o);
  assert_int_equal(o.sndbuf_bytes, 0);
  assert_int_equal(o.rcvbuf_bytes, 0);
  assert_int_equal(o.nodelay, BRAID_OPT_ON);
  assert_int_equal(o.keepalive, BRAID_OPT_DEFAULT);
  assert_int_equal(o.keepalive_idle_s, 0);
  assert_int_equal(o.keepalive_interval_s, 0);
  assert_int_equal(o.keepalive_count, 0);
  assert_int_equal(o.reuseaddr, BRAID_OPT_ON);
  assert_int_equal(o.reuseport, BRAID_OPT_DEFAULT);
  assert_int_equal(o.dscp, -1);
  assert_int_equal(o.priority, -1);
  assert_int_equal(o.user_timeout_ms, 0);
  assert_int_equal(o.linger_s, -1);
  assert_int_equal(o.notsent_lowat_bytes, 0);
  assert_int_equal(o.backlog, 511);
  assert_int_equal(o.ipv6_only, BRAID_OPT_DEFAULT);
  assert_int_equal(braid_sockopts_validate(&o, NULL), 0);
  assert_int_equal(braid_sockopts_validate(NULL, NULL), BRAID_EINVAL);
}

/* One field, the values it must accept and the ones it must refuse. */
typedef struct {
  const char *name;
  size_t offset;
  int good[4];
  int ngood;
  int bad[4];
  int nbad;
} bound_t;

#define F(field) #field, offsetof(braid_sockopts_t, field)

static const bound_t bounds[] = {
    {F(sndbuf_bytes), {0, 1024, 1 << 20, 1 << 30}, 4, {-1, 1, 1023, (1 << 30) + 1}, 4},
    {F(rcvbuf_bytes), {0, 1024, 65536, 1 << 30}, 4, {-1, 512, 1023, (1 << 30) + 1}, 4},
    {F(nodelay), {-1, 0, 1}, 3, {-2, 2, 7}, 3},
    {F(keepalive), {-1, 0, 1}, 3, {-2, 2}, 2},
    {F(keepalive_idle_s), {0, 1, 60, 32767}, 4, {-1, 32768, 100000}, 3},
    {F(keepalive_interval_s), {0, 1, 32767}, 3, {-1, 32768}, 2},
    {F(keepalive_count), {0, 1, 9, 127}, 4, {-1, 128}, 2},
    {F(reuseaddr), {-1, 0, 1}, 3, {-2, 2}, 2},
    {F(reuseport), {-1, 0, 1}, 3, {-2, 3}, 2},
    {F(dscp), {-1, 0, 46, 63}, 4, {-2, 64, 255}, 3},
    {F(priority), {-1, 0, 6}, 3, {-2, 7}, 2},
    {F(user_timeout_ms), {0, 1, 30000, 2147483647}, 4, {-1}, 1},
    {F(linger_s), {-1, 0, 5, 3600}, 4, {-2, 3601}, 2},
    {F(notsent_lowat_bytes), {0, 1, 16384, 2147483647}, 4, {-1}, 1},
    {F(backlog), {1, 511, 65535}, 3, {0, -1, 65536}, 3},
    {F(ipv6_only), {-1, 0, 1}, 3, {-2, 2}, 2},
};

static void test_bounds(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
    const bound_t *b = &bounds[i];
    for (int k = 0; k < b->ngood; k++) {
      braid_sockopts_t o;
      braid_sockopts_init(&o);
      memcpy((char *)&o + b->offset, &b->good[k], sizeof(int));
      if (braid_sockopts_validate(&o, NULL) != 0)
        fail_msg("%s = %d refused", b->name, b->good[k]);
    }
    for (int k = 0; k < b->nbad; k++) {
      braid_sockopts_t o;
      braid_sockopts_init(&o);
      memcpy((char *)&o + b->offset, &b->bad[k], sizeof(int));
      braid_opts_error_t err;
      if (braid_sockopts_validate(&o, &err) != BRAID_EINVAL)
        fail_msg("%s = %d accepted", b->name, b->bad[k]);
      /* ... and says which field (API.md rule 2). */
      if (strcmp(err.field, b->name) != 0)
        fail_msg("%s = %d reported as field \"%s\"", b->name, b->bad[k], err.field);
      /* apply refuses it too, before touching the socket */
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      assert_true(fd >= 0);
      int before = 0;
      socklen_t len = sizeof(before);
      assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &before, &len), 0);
      o.sndbuf_bytes =
          b->offset == offsetof(braid_sockopts_t, sndbuf_bytes) ? o.sndbuf_bytes : 4096;
      assert_int_equal(braid_sockopts_apply(fd, &o, 0), BRAID_EINVAL);
      int after = 0;
      assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &after, &len), 0);
      assert_int_equal(before, after); /* nothing applied */
      close(fd);
    }
  }
}

/* A connected loopback pair: *client and *server are blocking fds. */
static void tcp_pair(int family, int *client, int *server) {
  int l = socket(family, SOCK_STREAM, 0);
  assert_true(l >= 0);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  }
  assert_int_equal(bind(l, (struct sockaddr *)&ss, len), 0);
  assert_int_equal(listen(l, 4), 0);
  assert_int_equal(getsockname(l, (struct sockaddr *)&ss, &len), 0);
  *client = socket(family, SOCK_STREAM, 0);
  assert_true(*client >= 0);
  assert_int_equal(connect(*client, (struct sockaddr *)&ss, len), 0);
  *server = accept(l, NULL, NULL);
  assert_true(*server >= 0);
  close(l);
}

static void check_apply_connection(int family) {
  int c, s;
  tcp_pair(family, &c, &s);
  braid_sockopts_t o;
  braid_sockopts_init(&o);
  o.sndbuf_bytes = 64 * 1024;
  o.rcvbuf_bytes = 32 * 1024;
  o.nodelay = BRAID_OPT_ON;
  o.keepalive = BRAID_OPT_ON;
  o.keepalive_idle_s = 30;
  o.keepalive_interval_s = 7;
  o.keepalive_count = 4;
  o.dscp = 46;
  o.priority = 3;
  o.user_timeout_ms = 12345;
  o.linger_s = 0;
  o.notsent_lowat_bytes = 16384;
  assert_int_equal(braid_sockopts_apply(c, &o, 0), 0);

  braid_sockopts_effective_t e;
  assert_int_equal(braid_sockopts_read(c, &e), 0);
  /* Linux doubles the request (bookkeeping room) and clamps to wmem_max/rmem_max; the
   * header promises at least what was asked for. */
  assert_true(e.sndbuf_bytes >= 64 * 1024);
  assert_true(e.rcvbuf_bytes >= 32 * 1024);
  assert_int_equal(e.nodelay, 1);
  assert_int_equal(e.keepalive, 1);
  assert_int_equal(e.keepalive_idle_s, 30);
  assert_int_equal(e.keepalive_interval_s, 7);
  assert_int_equal(e.keepalive_count, 4);
  assert_int_equal(e.dscp, 46);
  assert_int_equal(e.priority, 3);
  assert_int_equal(e.user_timeout_ms, 12345);
  assert_int_equal(e.linger_s, 0);
  assert_int_equal(e.notsent_lowat_bytes, 16384);

  /* The mark is really in the TOS / traffic class byte, ECN bits clear. */
  int tos = -1;
  socklen_t len = sizeof(tos);
  if (family == AF_INET)
    assert_int_equal(getsockopt(c, IPPROTO_IP, IP_TOS, &tos, &len), 0);
  else
    assert_int_equal(getsockopt(c, IPPROTO_IPV6, IPV6_TCLASS, &tos, &len), 0);
  assert_int_equal(tos, 46 << 2);

  /* Turning things off reads back off; other values change. */
  braid_sockopts_init(&o);
  o.nodelay = BRAID_OPT_OFF;
  o.keepalive = BRAID_OPT_OFF;
  o.linger_s = 7;
  o.dscp = 8;
  assert_int_equal(braid_sockopts_apply(c, &o, 0), 0);
  assert_int_equal(braid_sockopts_read(c, &e), 0);
  assert_int_equal(e.nodelay, 0);
  assert_int_equal(e.keepalive, 0);
  assert_int_equal(e.linger_s, 7);
  assert_int_equal(e.dscp, 8);
  assert_int_equal(e.user_timeout_ms, 12345); /* 0 = leave as it is */

  /* The untouched peer still has the system's values. */
  assert_int_equal(braid_sockopts_read(s, &e), 0);
  assert_int_equal(e.keepalive, 0);
  assert_int_equal(e.linger_s, -1);
  assert_int_equal(e.dscp, 0);
  close(c);
  close(s);
}

static void test_apply_v4(void **state) {
  (void)state;
  check_apply_connection(AF_INET);
}

static void test_apply_v6(void **state) {
  (void)state;
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0)
    skip();
  close(fd);
  check_apply_connection(AF_INET6);
}

static void test_sndbuf_doubling(void **state) {
  (void)state;
  int c, s;
  tcp_pair(AF_INET, &c, &s);
  braid_sockopts_t o;
  braid_sockopts_init(&o);
  o.sndbuf_bytes = 4096;
  o.rcvbuf_bytes = 4096;
  assert_int_equal(braid_sockopts_apply(c, &o, 0), 0);
  braid_sockopts_effective_t e;
  assert_int_equal(braid_sockopts_read(c, &e), 0);
  /* Small values are not clamped by rmem_max: Linux reports exactly twice the request. */
  assert_int_equal(e.sndbuf_bytes, 8192);
  assert_int_equal(e.rcvbuf_bytes, 8192);
  close(c);
  close(s);
}

static void test_listener_reuseport(void **state) {
  (void)state;
  braid_sockopts_t o;
  braid_sockopts_init(&o);
  o.reuseport = BRAID_OPT_ON;
  o.ipv6_only = BRAID_OPT_ON;
  o.sndbuf_bytes = 8192;
  /* Connection-only options are ignored on a listener: these would be applied otherwise. */
  o.keepalive = BRAID_OPT_ON;

  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l1 = socket(AF_INET, SOCK_STREAM, 0);
  assert_int_equal(braid_sockopts_apply(l1, &o, 1), 0);
  assert_int_equal(bind(l1, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(l1, (struct sockaddr *)&a, &len), 0);
  assert_int_equal(listen(l1, 8), 0);
  braid_sockopts_effective_t e;
  assert_int_equal(braid_sockopts_read(l1, &e), 0);
  assert_int_equal(e.reuseport, 1);
  assert_int_equal(e.reuseaddr, 1);
  assert_int_equal(e.keepalive, 0);
  assert_int_equal(e.sndbuf_bytes, 16384);
  assert_int_equal(e.dscp, 0);

  /* A second listener on the same port works only because of SO_REUSEPORT. */
  int l2 = socket(AF_INET, SOCK_STREAM, 0);
  assert_int_equal(braid_sockopts_apply(l2, &o, 1), 0);
  assert_int_equal(bind(l2, (struct sockaddr *)&a, sizeof(a)), 0);
  int l3 = socket(AF_INET, SOCK_STREAM, 0);
  braid_sockopts_init(&o);
  assert_int_equal(braid_sockopts_apply(l3, &o, 1), 0);
  assert_int_equal(bind(l3, (struct sockaddr *)&a, sizeof(a)), -1);
  assert_int_equal(errno, EADDRINUSE);
  close(l1);
  close(l2);
  close(l3);

  /* IPV6_V6ONLY on an IPv6 listener. */
  int l6 = socket(AF_INET6, SOCK_STREAM, 0);
  if (l6 >= 0) {
    o.ipv6_only = BRAID_OPT_ON;
    assert_int_equal(braid_sockopts_apply(l6, &o, 1), 0);
    int v = 0;
    len = sizeof(v);
    assert_int_equal(getsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len), 0);
    assert_int_equal(v, 1);
    o.ipv6_only = BRAID_OPT_OFF;
    assert_int_equal(braid_sockopts_apply(l6, &o, 1), 0);
    assert_int_equal(getsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len), 0);
    assert_int_equal(v, 0);
    close(l6);
  }
}

static void test_errors(void **state) {
  (void)state;
  braid_sockopts_t o;
  braid_sockopts_init(&o);
  braid_sockopts_effective_t e;
  assert_int_equal(braid_sockopts_apply(-1, &o, 0), BRAID_EINVAL);
  assert_int_equal(braid_sockopts_apply(0, NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_sockopts_read(-1, &e), BRAID_EINVAL);
  /* A closed descriptor: the kernel's error comes back negated. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  close(fd);
  assert_int_equal(braid_sockopts_read(fd, &e), -EBADF);
  assert_int_equal(braid_sockopts_apply(fd, &o, 0), -EBADF);
  /* Not a socket. */
  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(braid_sockopts_read(p[0], &e), -ENOTSOCK);
  close(p[0]);
  close(p[1]);
  /* dscp on a non-IP socket: no IP_TOS to write. */
  int u[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
  braid_sockopts_init(&o);
  o.nodelay = BRAID_OPT_DEFAULT;
  o.dscp = 10;
  assert_int_equal(braid_sockopts_apply(u[0], &o, 0), BRAID_ENOTSUP);
  assert_int_equal(braid_sockopts_read(u[0], &e), 0);
  assert_int_equal(e.dscp, -1);
  assert_int_equal(e.nodelay, -1);
  close(u[0]);
  close(u[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),        cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_apply_v4),        cmocka_unit_test(test_apply_v6),
      cmocka_unit_test(test_sndbuf_doubling), cmocka_unit_test(test_listener_reuseport),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
