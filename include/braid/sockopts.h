/* braid: socket options.
 *
 * One options struct for listeners, accepted connections and client connections. braid
 * applies the options, then reads back what the kernel actually uses, so callers can see
 * the effective values (Linux doubles SO_SNDBUF/SO_RCVBUF to leave room for its
 * bookkeeping, and clamps them to net.core.wmem_max/rmem_max: you ask for 64 KiB and read
 * back 128 KiB). An option the platform lacks makes the apply call fail with BRAID_ENOTSUP,
 * never a silent no-op. */
#ifndef BRAID_SOCKOPTS_H
#define BRAID_SOCKOPTS_H

#include "common.h"

#include <uv.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tri-state for boolean options: leave the system default, or force on/off. */
typedef enum { BRAID_OPT_DEFAULT = -1, BRAID_OPT_OFF = 0, BRAID_OPT_ON = 1 } braid_opt_bool_t;

typedef struct braid_sockopts_s {
  /* SO_SNDBUF / SO_RCVBUF in bytes, as asked (the kernel doubles it). 0 = system default.
   * Bounds: 0 or 1024..(1 << 30). */
  int sndbuf_bytes;
  int rcvbuf_bytes;
  /* TCP_NODELAY. Default ON: braid coalesces writes itself, so Nagle only adds latency. */
  braid_opt_bool_t nodelay;
  /* SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT. Default DEFAULT (off).
   * When ON, a 0 field keeps the system default; bounds: idle and interval 1..32767 s,
   * count 1..127. */
  braid_opt_bool_t keepalive;
  int keepalive_idle_s;
  int keepalive_interval_s;
  int keepalive_count;
  /* SO_REUSEADDR on listeners. Default ON (restart without waiting out TIME_WAIT). */
  braid_opt_bool_t reuseaddr;
  /* SO_REUSEPORT on listeners. Default DEFAULT (off); forced ON by a server with workers. */
  braid_opt_bool_t reuseport;
  /* DSCP code point for QoS (0..63), written as IP_TOS (IPv4) or IPV6_TCLASS (IPv6) with
   * the two ECN bits clear. -1 = leave (default). Example: 46 (EF) for latency-critical
   * traffic, 8 (CS1) for bulk. */
  int dscp;
  /* SO_PRIORITY (0..6 unprivileged), the Linux queueing priority. -1 = leave (default). */
  int priority;
  /* TCP_USER_TIMEOUT in ms: how long sent data may stay unacknowledged before the kernel
   * drops the connection. 0 = system default. Bounds 0..INT32_MAX. */
  int user_timeout_ms;
  /* SO_LINGER: -1 = leave (default); 0 = close sends RST; N > 0 = close blocks up to N s
   * (don't: it blocks the loop; braid's graceful close drains without it). Bounds -1..3600. */
  int linger_s;
  /* TCP_NOTSENT_LOWAT in bytes: cap on unsent data in the kernel; keeps latency low for
   * writers that produce faster than the network. 0 = system default. Bounds 0..INT32_MAX. */
  int notsent_lowat_bytes;
  /* listen() backlog for listeners; default 511. Bounds 1..65535. */
  int backlog;
  /* IPV6_V6ONLY on IPv6 listeners. Default DEFAULT (system: usually dual-stack). */
  braid_opt_bool_t ipv6_only;
} braid_sockopts_t;

/* What the kernel reports back after braid applied a braid_sockopts_t. -1 where the value
 * could not be read (e.g. dscp on a non-IP socket). */
typedef struct braid_sockopts_effective_s {
  int sndbuf_bytes; /* as the kernel reports it: twice the request on Linux */
  int rcvbuf_bytes;
  int nodelay;      /* 0 or 1 */
  int keepalive;    /* 0 or 1 */
  int keepalive_idle_s;
  int keepalive_interval_s;
  int keepalive_count;
  int reuseaddr;
  int reuseport;
  int dscp;
  int priority;
  int user_timeout_ms;
  int linger_s;     /* -1 when linger is off */
  int notsent_lowat_bytes;
} braid_sockopts_effective_t;

/* Fills o with the defaults documented on each field. */
BRAID_EXTERN void braid_sockopts_init(braid_sockopts_t *o);

/* Checks every field against its documented bounds. Returns 0, or BRAID_EINVAL with the
 * field and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_sockopts_validate(const braid_sockopts_t *o, braid_opts_error_t *err);

/* Applies o to an open TCP socket (connected, or a listener before bind: SO_REUSEADDR and
 * SO_REUSEPORT only have effect then). is_listener selects the listener options (reuseaddr,
 * reuseport, ipv6_only, plus the buffer sizes, which accepted sockets inherit and which size
 * the window scale offered in the handshake) instead of the connection ones (buffer sizes,
 * nodelay, keepalive, dscp, priority, user timeout, linger, notsent lowat). backlog is not
 * applied here: it is listen()'s argument. Returns 0,
 * BRAID_EINVAL (bad field; nothing applied), BRAID_ENOTSUP (the platform lacks an option
 * that o sets), or the negated errno of a setsockopt() that failed. */
BRAID_EXTERN int braid_sockopts_apply(uv_os_sock_t fd, const braid_sockopts_t *o, int is_listener);

/* Reads the effective values of fd into out. A field the socket cannot report is -1
 * (notsent_lowat_bytes also reads -1 when unset: Linux reports UINT_MAX, "no limit").
 * Returns 0, BRAID_EINVAL (out NULL or fd < 0) or a negated errno (e.g. not a socket). */
BRAID_EXTERN int braid_sockopts_read(uv_os_sock_t fd, braid_sockopts_effective_t *out);

#ifdef __cplusplus
}
#endif
#endif
