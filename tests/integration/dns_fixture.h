/* A fake authoritative DNS server for the resolver tests: a UDP socket on 127.0.0.1 (an
 * ephemeral port) served by the test's own loop, answering each name the way a rule says:
 * addresses with a TTL, NXDOMAIN, SERVFAIL, REFUSED, silence, garbage, a reply cut short, an
 * answer record cut short, the truncation bit; now or after a delay. It counts the queries it
 * gets per rule and type, and how many delayed answers were pending at once. */
#ifndef BRAID_TEST_DNS_FIXTURE_H
#define BRAID_TEST_DNS_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "../support.h"

#pragma GCC diagnostic ignored "-Wunused-function"

#define FDNS_T_A 1
#define FDNS_T_AAAA 28

typedef enum {
  FDNS_ANSWER,       /* the rule's addresses of the type asked (none: NOERROR, no answer) */
  FDNS_NXDOMAIN,     /* rcode 3 */
  FDNS_SERVFAIL,     /* rcode 2 */
  FDNS_REFUSED,      /* rcode 5 */
  FDNS_SILENT,       /* no reply at all */
  FDNS_GARBAGE,      /* 40 bytes of junk whose id does not match */
  FDNS_GARBAGE_THEN, /* junk, a reply cut short, then the real answer */
  FDNS_SHORT,        /* 7 bytes: the id, then nothing of a header */
  FDNS_BAD_RECORD,   /* a well-formed header and question, an answer record cut short */
  FDNS_TRUNCATED,    /* the TC bit, no answer: asks for TCP, where nothing listens */
} fdns_mode_t;

typedef struct {
  const char *name; /* lower case, no final dot */
  fdns_mode_t mode;
  uint32_t ttl;
  unsigned delay_ms;
  const char *a[2];    /* IPv4 answers (NULL-terminated when fewer) */
  const char *aaaa[2]; /* IPv6 answers */
  int count_a, count_aaaa, count_other;
} fdns_rule_t;

typedef struct fdns_s fdns_t;

typedef struct fdns_delayed_s {
  uv_timer_t timer;
  fdns_t *server;
  struct sockaddr_storage to;
  uint8_t buf[512];
  size_t len;
  struct fdns_delayed_s *next;
} fdns_delayed_t;

struct fdns_s {
  uv_udp_t udp;
  int port;
  fdns_rule_t rules[16];
  int nrules;
  int datagrams;     /* every datagram received */
  int unknown;       /* questions for names without a rule (answered NXDOMAIN) */
  int pending;       /* delayed answers not sent yet */
  int max_pending;   /* the most at once */
  fdns_delayed_t *delayed;
  int handles;       /* open uv handles (the socket, the delay timers) */
};

static fdns_rule_t *fdns_rule(fdns_t *s, const char *name, fdns_mode_t mode, uint32_t ttl) {
  assert_true(s->nrules < 16);
  fdns_rule_t *r = &s->rules[s->nrules++];
  memset(r, 0, sizeof(*r));
  r->name = name;
  r->mode = mode;
  r->ttl = ttl;
  return r;
}

static fdns_rule_t *fdns_find(fdns_t *s, const char *name) {
  for (int i = 0; i < s->nrules; i++)
    if (strcmp(s->rules[i].name, name) == 0)
      return &s->rules[i];
  return NULL;
}

static void fdns_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char mem[2048];
  *buf = uv_buf_init(mem, sizeof(mem));
}

static void fdns_on_sent(uv_udp_send_t *req, int status) {
  (void)status;
  free(req);
}

static void fdns_send(fdns_t *s, const struct sockaddr *to, const uint8_t *data, size_t len) {
  /* A copy travels with the request: uv_udp_send may finish later. */
  uv_udp_send_t *req = malloc(sizeof(*req) + len);
  assert_non_null(req);
  memcpy(req + 1, data, len);
  uv_buf_t b = uv_buf_init((char *)(req + 1), (unsigned)len);
  assert_int_equal(uv_udp_send(req, &s->udp, &b, 1, to, fdns_on_sent), 0);
}

static void fdns_handle_closed(uv_handle_t *h) {
  if (h->type == UV_TIMER) {
    fdns_delayed_t *d = h->data;
    d->server->handles--;
    free(d);
  } else {
    ((fdns_t *)h->data)->handles--;
  }
}

static void fdns_on_delay(uv_timer_t *t) {
  fdns_delayed_t *d = t->data;
  fdns_t *s = d->server;
  fdns_send(s, (struct sockaddr *)&d->to, d->buf, d->len);
  s->pending--;
  for (fdns_delayed_t **p = &s->delayed; *p; p = &(*p)->next)
    if (*p == d) {
      *p = d->next;
      break;
    }
  uv_close((uv_handle_t *)t, fdns_handle_closed);
}

static size_t put16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return 2;
}

/* Builds the reply to query q (its question ends at qend) with rcode and the rule's
 * addresses of qtype; returns its length. */
static size_t fdns_reply(const uint8_t *q, size_t qend, unsigned qtype, unsigned rcode,
                         const fdns_rule_t *rule, uint8_t *out) {
  memcpy(out, q, qend);
  out[2] = (uint8_t)(0x84 | (q[2] & 0x01)); /* QR, AA, RD copied */
  out[3] = (uint8_t)(0x80 | rcode);         /* RA */
  put16(out + 4, 1);
  put16(out + 6, 0);
  put16(out + 8, 0);
  put16(out + 10, 0);
  size_t len = qend;
  unsigned an = 0;
  if (rule && rcode == 0) {
    for (int i = 0; i < 2; i++) {
      const char *addr = qtype == FDNS_T_A ? rule->a[i] : qtype == FDNS_T_AAAA ? rule->aaaa[i]
                                                                                 : NULL;
      if (!addr)
        break;
      uint8_t rdata[16];
      unsigned rdlen = qtype == FDNS_T_A ? 4 : 16;
      assert_int_equal(inet_pton(qtype == FDNS_T_A ? AF_INET : AF_INET6, addr, rdata), 1);
      len += put16(out + len, 0xc00c); /* the name: a pointer to the question's */
      len += put16(out + len, qtype);
      len += put16(out + len, 1); /* IN */
      len += put16(out + len, rule->ttl >> 16);
      len += put16(out + len, rule->ttl & 0xffff);
      len += put16(out + len, rdlen);
      memcpy(out + len, rdata, rdlen);
      len += rdlen;
      an++;
    }
  }
  put16(out + 6, an);
  return len;
}

static void fdns_on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                         const struct sockaddr *from, unsigned flags) {
  (void)flags;
  fdns_t *s = h->data;
  if (nread <= 0 || !from)
    return;
  s->datagrams++;
  const uint8_t *q = (const uint8_t *)buf->base;
  size_t n = (size_t)nread;
  if (n < 12)
    return;
  /* The question: labels, then type and class. */
  char name[256];
  size_t off = 12, nl = 0;
  while (off < n && q[off] != 0) {
    unsigned l = q[off++];
    if (l > 63 || off + l > n || nl + l + 1 >= sizeof(name))
      return;
    if (nl)
      name[nl++] = '.';
    for (unsigned i = 0; i < l; i++) {
      char c = (char)q[off + i];
      name[nl++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    off += l;
  }
  name[nl] = '\0';
  if (off + 5 > n)
    return;
  unsigned qtype = ((unsigned)q[off + 1] << 8) | q[off + 2];
  size_t qend = off + 5;
  fdns_rule_t *rule = fdns_find(s, name);
  uint8_t out[512];
  size_t len = 0;
  if (!rule) {
    s->unknown++;
    len = fdns_reply(q, qend, qtype, 3, NULL, out);
    fdns_send(s, from, out, len);
    return;
  }
  if (qtype == FDNS_T_A)
    rule->count_a++;
  else if (qtype == FDNS_T_AAAA)
    rule->count_aaaa++;
  else
    rule->count_other++;
  switch (rule->mode) {
  case FDNS_SILENT:
    return;
  case FDNS_GARBAGE:
  case FDNS_GARBAGE_THEN: {
    uint8_t junk[40];
    for (size_t i = 0; i < sizeof(junk); i++)
      junk[i] = (uint8_t)(i * 37 + 11);
    junk[0] = (uint8_t)~q[0]; /* never the query's id */
    junk[1] = (uint8_t)~q[1];
    fdns_send(s, from, junk, sizeof(junk));
    if (rule->mode == FDNS_GARBAGE)
      return;
    fdns_send(s, from, q, 7); /* the id, then too short for a header */
    len = fdns_reply(q, qend, qtype, 0, rule, out);
    break;
  }
  case FDNS_SHORT:
    fdns_send(s, from, q, 7);
    return;
  case FDNS_BAD_RECORD:
    len = fdns_reply(q, qend, qtype, 0, NULL, out);
    put16(out + 6, 1);
    len += put16(out + len, 0xc00c);
    len += put16(out + len, qtype);
    len += put16(out + len, 1);
    len += put16(out + len, 0);
    len += put16(out + len, 60);
    len += put16(out + len, 16); /* rdlength 16, and 2 bytes follow */
    len += put16(out + len, 0x7f00);
    break;
  case FDNS_TRUNCATED:
    len = fdns_reply(q, qend, qtype, 0, NULL, out);
    out[2] |= 0x02; /* TC */
    break;
  case FDNS_NXDOMAIN:
    len = fdns_reply(q, qend, qtype, 3, rule, out);
    break;
  case FDNS_SERVFAIL:
    len = fdns_reply(q, qend, qtype, 2, rule, out);
    break;
  case FDNS_REFUSED:
    len = fdns_reply(q, qend, qtype, 5, rule, out);
    break;
  case FDNS_ANSWER:
    len = fdns_reply(q, qend, qtype, 0, rule, out);
    break;
  }
  if (rule->delay_ms == 0) {
    fdns_send(s, from, out, len);
    return;
  }
  fdns_delayed_t *d = calloc(1, sizeof(*d));
  assert_non_null(d);
  d->server = s;
  memcpy(&d->to, from, from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in));
  memcpy(d->buf, out, len);
  d->len = len;
  assert_int_equal(uv_timer_init(h->loop, &d->timer), 0);
  d->timer.data = d;
  s->handles++;
  d->next = s->delayed;
  s->delayed = d;
  if (++s->pending > s->max_pending)
    s->max_pending = s->pending;
  uv_timer_start(&d->timer, fdns_on_delay, rule->delay_ms, 0);
}

static void fdns_start(fdns_t *s, bt_loop_t *t) {
  memset(s, 0, sizeof(*s));
  assert_int_equal(uv_udp_init(&t->uv, &s->udp), 0);
  s->udp.data = s;
  s->handles = 1;
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
  assert_int_equal(uv_udp_bind(&s->udp, (struct sockaddr *)&a, 0), 0);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  assert_int_equal(uv_udp_getsockname(&s->udp, (struct sockaddr *)&ss, &len), 0);
  s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  assert_int_equal(uv_udp_recv_start(&s->udp, fdns_alloc, fdns_on_recv), 0);
  /* The server alone keeps no loop alive: bt_run() runs while lookups (their timers) are
   * pending. */
  uv_unref((uv_handle_t *)&s->udp);
}

/* Closes the socket and drops delayed answers; runs the loop until all are closed. */
static void fdns_stop(fdns_t *s, bt_loop_t *t) {
  while (s->delayed) {
    fdns_delayed_t *d = s->delayed;
    s->delayed = d->next;
    uv_close((uv_handle_t *)&d->timer, fdns_handle_closed);
  }
  uv_close((uv_handle_t *)&s->udp, fdns_handle_closed);
  for (int i = 0; i < 100 && s->handles > 0; i++)
    uv_run(&t->uv, UV_RUN_NOWAIT);
  assert_int_equal(s->handles, 0);
}

/* resolver options asking s, with the given first-try timeout and tries. */
static void fdns_resolver_opts(const fdns_t *s, braid_resolver_opts_t *o, uint64_t timeout_ms,
                               unsigned tries) {
  braid_resolver_opts_init(o);
  snprintf(o->servers, sizeof(o->servers), "127.0.0.1:%d", s->port);
  o->timeout_ms = timeout_ms;
  o->tries = tries;
}

#endif
