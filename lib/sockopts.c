/* Socket options: one struct for listeners and connections, applied with setsockopt() and
 * read back with getsockopt() so callers see what the kernel really uses. */
#include <errno.h>
#include <limits.h>

#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "internal.h"

void braid_sockopts_init(braid_sockopts_t *o) {
  memset(o, 0, sizeof(*o));
  o->nodelay = BRAID_OPT_ON;
  o->keepalive = BRAID_OPT_DEFAULT;
  o->reuseaddr = BRAID_OPT_ON;
  o->reuseport = BRAID_OPT_DEFAULT;
  o->dscp = -1;
  o->priority = -1;
  o->linger_s = -1;
  o->backlog = 511;
  o->ipv6_only = BRAID_OPT_DEFAULT;
}

static bool tri_ok(braid_opt_bool_t v) {
  return v == BRAID_OPT_DEFAULT || v == BRAID_OPT_OFF || v == BRAID_OPT_ON;
}

static bool buf_ok(int v) {
  return v == 0 || (v >= 1024 && v <= (1 << 30));
}

static bool zero_or_range(int v, int lo, int hi) {
  return v == 0 || (v >= lo && v <= hi);
}

/* One rule per field: its name, whether the value is allowed, and the allowed range in words. */
#define TRI(f)                                                                                     \
  if (!tri_ok(o->f))                                                                               \
    return braid__opts_fail(err, #f, "%d is not BRAID_OPT_DEFAULT, _OFF or _ON", (int)o->f);
#define RANGE(f, ok, words)                                                                        \
  if (!(ok))                                                                                       \
    return braid__opts_fail(err, #f, "%d is outside " words, o->f);

int braid_sockopts_validate(const braid_sockopts_t *o, braid_opts_error_t *err) {
  braid__opts_ok(err);
  if (!o)
    return braid__opts_fail(err, "", "the options pointer is NULL");
  RANGE(sndbuf_bytes, buf_ok(o->sndbuf_bytes), "0 or 1024..2^30")
  RANGE(rcvbuf_bytes, buf_ok(o->rcvbuf_bytes), "0 or 1024..2^30")
  TRI(nodelay)
  TRI(keepalive)
  RANGE(keepalive_idle_s, zero_or_range(o->keepalive_idle_s, 1, 32767), "0 or 1..32767")
  RANGE(keepalive_interval_s, zero_or_range(o->keepalive_interval_s, 1, 32767), "0 or 1..32767")
  RANGE(keepalive_count, zero_or_range(o->keepalive_count, 1, 127), "0 or 1..127")
  TRI(reuseaddr)
  TRI(reuseport)
  RANGE(dscp, o->dscp >= -1 && o->dscp <= 63, "-1..63")
  RANGE(priority, o->priority >= -1 && o->priority <= 6, "-1..6")
  RANGE(user_timeout_ms, o->user_timeout_ms >= 0, "0..INT32_MAX")
  RANGE(linger_s, o->linger_s >= -1 && o->linger_s <= 3600, "-1..3600")
  RANGE(notsent_lowat_bytes, o->notsent_lowat_bytes >= 0, "0..INT32_MAX")
  RANGE(backlog, o->backlog >= 1 && o->backlog <= 65535, "1..65535")
  TRI(ipv6_only)
  return 0;
}

#undef TRI
#undef RANGE

static int set_int(uv_os_sock_t fd, int level, int name, int value) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0)
    return -errno;
  return 0;
}

static int get_int(uv_os_sock_t fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len) != 0)
    return -1;
  return v;
}

/* The socket's address family, from getsockname(): decides IP_TOS versus IPV6_TCLASS. */
static int sock_family(uv_os_sock_t fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -errno;
  return ss.ss_family;
}

/* Checks, before anything is applied, that this build knows every option o sets, so an
 * unsupported option fails the call without leaving the socket half-configured. */
static int check_supported(const braid_sockopts_t *o, int is_listener) {
  if (is_listener) {
#ifndef SO_REUSEPORT
    if (o->reuseport != BRAID_OPT_DEFAULT)
      return BRAID_ENOTSUP;
#endif
#ifndef IPV6_V6ONLY
    if (o->ipv6_only != BRAID_OPT_DEFAULT)
      return BRAID_ENOTSUP;
#endif
    return 0;
  }
#if !defined(TCP_KEEPIDLE) || !defined(TCP_KEEPINTVL) || !defined(TCP_KEEPCNT)
  if (o->keepalive == BRAID_OPT_ON &&
      (o->keepalive_idle_s || o->keepalive_interval_s || o->keepalive_count))
    return BRAID_ENOTSUP;
#endif
#ifndef IPV6_TCLASS
  if (o->dscp >= 0)
    return BRAID_ENOTSUP;
#endif
#ifndef SO_PRIORITY
  if (o->priority >= 0)
    return BRAID_ENOTSUP;
#endif
#ifndef TCP_USER_TIMEOUT
  if (o->user_timeout_ms > 0)
    return BRAID_ENOTSUP;
#endif
#ifndef TCP_NOTSENT_LOWAT
  if (o->notsent_lowat_bytes > 0)
    return BRAID_ENOTSUP;
#endif
  (void)o;
  return 0;
}

static int apply_buffers(uv_os_sock_t fd, const braid_sockopts_t *o) {
  int rc;
  if (o->sndbuf_bytes > 0 && (rc = set_int(fd, SOL_SOCKET, SO_SNDBUF, o->sndbuf_bytes)))
    return rc;
  if (o->rcvbuf_bytes > 0 && (rc = set_int(fd, SOL_SOCKET, SO_RCVBUF, o->rcvbuf_bytes)))
    return rc;
  return 0;
}

static int apply_listener(uv_os_sock_t fd, const braid_sockopts_t *o) {
  int rc;
  if (o->reuseaddr != BRAID_OPT_DEFAULT &&
      (rc = set_int(fd, SOL_SOCKET, SO_REUSEADDR, o->reuseaddr == BRAID_OPT_ON)))
    return rc;
#ifdef SO_REUSEPORT
  if (o->reuseport != BRAID_OPT_DEFAULT &&
      (rc = set_int(fd, SOL_SOCKET, SO_REUSEPORT, o->reuseport == BRAID_OPT_ON)))
    return rc;
#endif
#ifdef IPV6_V6ONLY
  /* Only IPv6 sockets have the option; on an IPv4 listener it has nothing to say. */
  if (o->ipv6_only != BRAID_OPT_DEFAULT && sock_family(fd) == AF_INET6 &&
      (rc = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, o->ipv6_only == BRAID_OPT_ON)))
    return rc;
#endif
  /* Accepted sockets inherit the listener's buffer sizes, and the receive buffer decides
   * the window scale offered in the SYN-ACK, which cannot change after the handshake. */
  return apply_buffers(fd, o);
}

static int apply_keepalive(uv_os_sock_t fd, const braid_sockopts_t *o) {
  int rc;
  if (o->keepalive == BRAID_OPT_DEFAULT)
    return 0;
  if ((rc = set_int(fd, SOL_SOCKET, SO_KEEPALIVE, o->keepalive == BRAID_OPT_ON)))
    return rc;
  if (o->keepalive != BRAID_OPT_ON)
    return 0;
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
  int idle = o->keepalive_idle_s;
  if (idle > 0 && (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle)))
    return rc;
  if (o->keepalive_interval_s > 0 &&
      (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, o->keepalive_interval_s)))
    return rc;
  if (o->keepalive_count > 0 && (rc = set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, o->keepalive_count)))
    return rc;
#endif
  return 0;
}

static int apply_dscp(uv_os_sock_t fd, int dscp) {
  /* DSCP is the upper six bits of the TOS / traffic class byte; the ECN bits stay 0. */
  int tos = dscp << 2;
  int family = sock_family(fd);
  if (family < 0)
    return family;
  if (family == AF_INET)
    return set_int(fd, IPPROTO_IP, IP_TOS, tos);
#ifdef IPV6_TCLASS
  if (family == AF_INET6)
    return set_int(fd, IPPROTO_IPV6, IPV6_TCLASS, tos);
#endif
  return BRAID_ENOTSUP;
}

static int apply_connection(uv_os_sock_t fd, const braid_sockopts_t *o) {
  int rc;
  if ((rc = apply_buffers(fd, o)))
    return rc;
  if (o->nodelay != BRAID_OPT_DEFAULT &&
      (rc = set_int(fd, IPPROTO_TCP, TCP_NODELAY, o->nodelay == BRAID_OPT_ON)))
    return rc;
  if ((rc = apply_keepalive(fd, o)))
    return rc;
  if (o->dscp >= 0 && (rc = apply_dscp(fd, o->dscp)))
    return rc;
#ifdef SO_PRIORITY
  if (o->priority >= 0 && (rc = set_int(fd, SOL_SOCKET, SO_PRIORITY, o->priority)))
    return rc;
#endif
#ifdef TCP_USER_TIMEOUT
  if (o->user_timeout_ms > 0 &&
      (rc = set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, o->user_timeout_ms)))
    return rc;
#endif
  if (o->linger_s >= 0) {
    struct linger l = {1, o->linger_s};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) != 0)
      return -errno;
  }
#ifdef TCP_NOTSENT_LOWAT
  if (o->notsent_lowat_bytes > 0 &&
      (rc = set_int(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, o->notsent_lowat_bytes)))
    return rc;
#endif
  return 0;
}

int braid_sockopts_apply(uv_os_sock_t fd, const braid_sockopts_t *o, int is_listener) {
  if (!o || fd < 0 || braid_sockopts_validate(o, NULL) != 0)
    return BRAID_EINVAL;
  int rc = check_supported(o, is_listener);
  if (rc)
    return rc;
  return is_listener ? apply_listener(fd, o) : apply_connection(fd, o);
}

int braid_sockopts_read(uv_os_sock_t fd, braid_sockopts_effective_t *out) {
  if (!out || fd < 0)
    return BRAID_EINVAL;
  /* The first read tells a bad descriptor apart; later ones fail only for options the
   * socket's protocol lacks, which the struct reports as -1. */
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &len) != 0)
    return -errno;
  out->sndbuf_bytes = v;
  out->rcvbuf_bytes = get_int(fd, SOL_SOCKET, SO_RCVBUF);
  out->nodelay = get_int(fd, IPPROTO_TCP, TCP_NODELAY);
  if (out->nodelay > 0)
    out->nodelay = 1;
  out->keepalive = get_int(fd, SOL_SOCKET, SO_KEEPALIVE);
  if (out->keepalive > 0)
    out->keepalive = 1;
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
  out->keepalive_idle_s = get_int(fd, IPPROTO_TCP, TCP_KEEPIDLE);
  out->keepalive_interval_s = get_int(fd, IPPROTO_TCP, TCP_KEEPINTVL);
  out->keepalive_count = get_int(fd, IPPROTO_TCP, TCP_KEEPCNT);
#else
  out->keepalive_idle_s = out->keepalive_interval_s = out->keepalive_count = -1;
#endif
  out->reuseaddr = get_int(fd, SOL_SOCKET, SO_REUSEADDR);
  if (out->reuseaddr > 0)
    out->reuseaddr = 1;
#ifdef SO_REUSEPORT
  out->reuseport = get_int(fd, SOL_SOCKET, SO_REUSEPORT);
  if (out->reuseport > 0)
    out->reuseport = 1;
#else
  out->reuseport = -1;
#endif
  out->dscp = -1;
  int family = sock_family(fd);
  int tos = -1;
  if (family == AF_INET)
    tos = get_int(fd, IPPROTO_IP, IP_TOS);
#ifdef IPV6_TCLASS
  else if (family == AF_INET6)
    tos = get_int(fd, IPPROTO_IPV6, IPV6_TCLASS);
#endif
  if (tos >= 0)
    out->dscp = (tos >> 2) & 0x3f;
#ifdef SO_PRIORITY
  out->priority = get_int(fd, SOL_SOCKET, SO_PRIORITY);
#else
  out->priority = -1;
#endif
#ifdef TCP_USER_TIMEOUT
  out->user_timeout_ms = get_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT);
#else
  out->user_timeout_ms = -1;
#endif
  struct linger l;
  memset(&l, 0, sizeof(l));
  len = sizeof(l);
  if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &len) == 0)
    out->linger_s = l.l_onoff ? l.l_linger : -1;
  else
    out->linger_s = -1;
#ifdef TCP_NOTSENT_LOWAT
  out->notsent_lowat_bytes = get_int(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT);
#else
  out->notsent_lowat_bytes = -1;
#endif
  return 0;
}
