/* braid: TLS on braid connections.
 *
 * TLS sits beneath braid_conn_t, so everything built on connections gets it without a change
 * of code: a braid_server_t given a TLS context (braid_server_opts_t.tls) hands its
 * connection callback connections whose handshake is done; braid_connect() given one
 * (braid_client_opts_t.tls) calls its callback once the handshake is done and the server's
 * certificate verified; a pool's connections (braid_pool_opts_t.client.tls) are TLS to every
 * endpoint, each verified against its own host name; rpc channels, the HTTP server and the
 * memcache client run on those connections unchanged. Reads and writes on such a connection
 * carry plaintext; braid encrypts what the connection queued in one loop iteration together
 * (few large records, one writev) and decrypts into the loop's shared read buffer.
 *
 * A braid_tls_ctx_t holds what many connections share: certificates and keys, the trusted
 * CAs, ALPN protocols, the minimum version, session resumption state and counters. It is
 * reference counted: servers, connects, pools and connections hold their own references,
 * so braid_tls_ctx_free() may be called as soon as the context is handed to them. It may be
 * used from several threads (a server's worker loops) at once.
 *
 * Safe by default: a client verifies the server's certificate against the system's CA store
 * and its host name, sends SNI, and speaks TLS 1.2 or later; a server refuses renegotiation
 * and limits the time a handshake may take. A graceful close (braid_conn_close,
 * braid_conn_shutdown) sends close_notify; a connection whose peer ends the TCP stream
 * without one fails with BRAID_ETRUNCATED instead of reporting a clean end of stream, so a
 * truncated response is never mistaken for a whole one.
 *
 * Built with the meson feature `tls` (OpenSSL 3). Without it the header is the same, and
 * braid_tls_ctx_new() returns BRAID_ENOTSUP (braid_tls_available() says which).
 *
 * A client, e.g. an HTTP client on braid_connect():
 *
 *   braid_tls_opts_t to;
 *   braid_tls_opts_init(&to);                 // client, verify against the system CAs
 *   to.alpn = "http/1.1";
 *   braid_tls_ctx_t *tls;
 *   braid_opts_error_t err;
 *   if (braid_tls_ctx_new(&tls, &to, &err) != 0) { report(err.field, err.reason); ... }
 *   braid_client_opts_t co;
 *   braid_client_opts_init(&co);
 *   co.tls = tls;                             // the host given to braid_connect is the name
 *   braid_connect(&req, loop, "example.org", 443, &co, on_connected, arg);  // verified and SNI
 *   braid_tls_ctx_free(tls);                  // the connect holds its own reference
 *
 * on_connected gets status 0 once the handshake is done (braid_tls_info() tells the version,
 * cipher and ALPN), or the failure: BRAID_ETLSVERIFY, BRAID_ETLSHOSTNAME, BRAID_ETLSEXPIRED,
 * BRAID_ETLS, BRAID_ETIMEDOUT (handshake_timeout_ms), with OpenSSL's reason in the loop's
 * log (BRAID_LOG_WARN). A TLS failure is not retried (retries are for connect failures). */
#ifndef BRAID_TLS_H
#define BRAID_TLS_H

#include "common.h" /* first: its feature check must come before <uv.h> */
#include <uv.h>

#include "conn.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_tls_ctx_s braid_tls_ctx_t;

/* The side of the handshake a context plays. */
enum {
  BRAID_TLS_CLIENT = 0,
  BRAID_TLS_SERVER = 1,
};

/* Protocol versions, for min_version. */
enum {
  BRAID_TLS_V1_2 = 0x0303,
  BRAID_TLS_V1_3 = 0x0304,
};

/* Peer certificate checks (verify_peer). */
enum {
  BRAID_TLS_VERIFY_DEFAULT = 0,  /* the role's default: a client REQUIRED, a server NONE */
  BRAID_TLS_VERIFY_NONE = 1,     /* do not ask for or check the peer's certificate */
  BRAID_TLS_VERIFY_OPTIONAL = 2, /* server: ask for a client certificate, check it if sent */
  BRAID_TLS_VERIFY_REQUIRED = 3, /* check it, and fail the handshake without one */
};

/* A context's options. Strings are read during braid_tls_ctx_new()/_reload() only (copied
 * where kept). PEM text may hold several certificates: the leaf first, then the chain. */
typedef struct braid_tls_opts_s {
  /* BRAID_TLS_CLIENT (default) or BRAID_TLS_SERVER. */
  int role;
  /* This side's certificate chain and private key, as PEM files or as PEM text in memory
   * (one of each pair, not both). A server needs them; a client sends them when the server
   * asks (mutual TLS). NULL = none. */
  const char *cert_file;
  const char *key_file;
  const char *cert_pem;
  const char *key_pem;
  /* CAs trusted to sign the peer's certificate: a PEM bundle file and/or an OpenSSL hashed
   * directory (c_rehash). A client also trusts the system's store unless
   * use_system_cas = 0; a server that verifies clients trusts only these. NULL = none. */
  const char *ca_file;
  const char *ca_dir;
  /* 1 (client default): trust the system's CA store (OpenSSL's default paths) as well.
   * 0: only ca_file/ca_dir. A server ignores it. */
  int use_system_cas;
  /* Peer checks, BRAID_TLS_VERIFY_*: DEFAULT (0, the default) is REQUIRED for a client and
   * NONE for a server. A client may turn every check off with NONE (for tests only); a
   * server asks for client certificates with OPTIONAL or REQUIRED (mutual TLS; then ca_file
   * or ca_dir is required). */
  int verify_peer;
  /* Client: 1 (default) checks that the server's certificate names the host given to
   * braid_connect() (DNS name, or IP address for a literal). 0 = any name. */
  int verify_hostname;
  /* ALPN protocols in preference order, comma-separated ("h2,http/1.1"), each 1..255 bytes.
   * A client offers them; a server picks its first that the client offers (none in common:
   * the handshake goes on without ALPN). NULL or "" = no ALPN. Copied. */
  const char *alpn;
  /* Lowest protocol version: BRAID_TLS_V1_2 (default) or BRAID_TLS_V1_3. */
  int min_version;
  /* OpenSSL cipher lists: TLS 1.2 ciphers (cipher_list, e.g. "ECDHE+AESGCM") and TLS 1.3
   * suites (ciphersuites, e.g. "TLS_AES_128_GCM_SHA256"). NULL = OpenSSL's defaults. */
  const char *cipher_list;
  const char *ciphersuites;
  /* A connection's handshake must finish within this long of the TCP connection being
   * established, or the connection closes with BRAID_ETIMEDOUT (a peer that stalls
   * mid-handshake holds a slot no longer). Default 10000. 0 = off. Bounds 0..(1 << 31). */
  uint64_t handshake_timeout_ms;
  /* Session resumption: 1 (default) = a server issues session tickets (and keeps a session
   * cache for TLS 1.2 clients without tickets) and a client offers the last session it got
   * from the same host; 0 = every handshake is a full one. */
  int session_resumption;
  /* Sessions a context keeps (server cache, client sessions per host). Default 1024.
   * Bounds 1..(1 << 20). */
  unsigned session_cache_size;
} braid_tls_opts_t;

/* A context's counters, summed over every connection that used it (and every loop). */
typedef struct braid_tls_stats_s {
  uint64_t handshakes;          /* completed */
  uint64_t resumed;             /* of those, resumed sessions */
  uint64_t handshake_failures;  /* failed (a timeout, a bad certificate, garbage, ...) */
  uint64_t handshake_timeouts;  /* of those, handshake_timeout_ms passed */
  uint64_t verify_failures;     /* of those, the peer's certificate was refused */
  uint64_t renegotiations_refused; /* connections closed for trying to renegotiate */
  uint64_t truncations;         /* connections whose peer ended without close_notify */
} braid_tls_stats_t;

/* What a connection's handshake settled. Strings are NUL-terminated ("" when none). */
typedef struct braid_tls_info_s {
  char version[16];      /* "TLSv1.3", "TLSv1.2" */
  char cipher[64];       /* e.g. "TLS_AES_256_GCM_SHA384" */
  char alpn[64];         /* the protocol ALPN chose, or "" */
  char server_name[256]; /* SNI: the name the client sent (server) or asked for (client) */
  int resumed;           /* 1 when the session was resumed */
  int peer_verified;     /* 1 when the peer sent a certificate that passed verification */
  uint64_t handshake_ms; /* from the TCP connection to the end of the handshake */
} braid_tls_info_t;

/* Chooses the context whose certificate a server presents for the name the client asked
 * for (SNI), e.g. one context per virtual host. Runs during the handshake, on the
 * connection's loop thread (with server workers, on several threads at once: keep it
 * thread-safe and quick). server_name is NUL-terminated. Return another server context, or
 * NULL (or ctx itself) to keep ctx. The returned context must stay alive (a reference held
 * by the caller) while handshakes may pick it. data is ctx's user data
 * (braid_tls_ctx_set_data()). */
typedef braid_tls_ctx_t *(*braid_tls_sni_cb)(braid_tls_ctx_t *ctx, const char *server_name,
                                             void *data);

/* 1 when braid was built with TLS (the meson feature `tls`), else 0. */
BRAID_EXTERN int braid_tls_available(void);

/* Fills o with the defaults documented on each field (a client context). */
BRAID_EXTERN void braid_tls_opts_init(braid_tls_opts_t *o);

/* Checks every field against its documented bounds and the combinations (a server without
 * a certificate, a key without a certificate, both a file and PEM text, verification of
 * clients without a CA). Files are not read here. Returns 0, or BRAID_EINVAL with the field
 * and the reason in *err (err may be NULL). */
BRAID_EXTERN int braid_tls_opts_validate(const braid_tls_opts_t *o, braid_opts_error_t *err);

/* Makes a context from o (NULL = client defaults), holding one reference for the caller.
 * Reads the certificate, key and CA files now. Returns 0, BRAID_EINVAL (bad option, or a
 * file or PEM text OpenSSL refuses: *err names the field and gives OpenSSL's reason),
 * BRAID_ENOTSUP (built without TLS) or BRAID_ENOMEM; on error *out is untouched. err may
 * be NULL. Any thread. */
BRAID_EXTERN int braid_tls_ctx_new(braid_tls_ctx_t **out, const braid_tls_opts_t *o,
                                   braid_opts_error_t *err);

/* Replaces the context's settings (certificates, keys, CAs, ALPN, versions, ciphers,
 * timeouts) with o's, e.g. a renewed certificate, without restarting anything: connections
 * that start their handshake from now on use the new ones; established connections keep
 * theirs. The role cannot change. All or nothing: on error the old settings stay. Session
 * tickets issued before a reload are not accepted after it. Thread-safe. Returns 0,
 * BRAID_EINVAL (as braid_tls_ctx_new, or another role), BRAID_ENOTSUP or BRAID_ENOMEM. */
BRAID_EXTERN int braid_tls_ctx_reload(braid_tls_ctx_t *ctx, const braid_tls_opts_t *o,
                                      braid_opts_error_t *err);

/* Drops the caller's reference; the context goes when its last user (server, connect,
 * pool, connection) lets go. NULL is ignored. Any thread. */
BRAID_EXTERN void braid_tls_ctx_free(braid_tls_ctx_t *ctx);

/* Sets the SNI callback of a server context (NULL: none). Set it before the context serves
 * connections. Returns 0, or BRAID_EINVAL (ctx NULL or a client context). */
BRAID_EXTERN int braid_tls_ctx_set_sni_cb(braid_tls_ctx_t *ctx, braid_tls_sni_cb cb);

/* The context's user data (docs/API.md rule 3), passed to its SNI callback: braid never
 * reads it. NULL at first. */
BRAID_EXTERN void braid_tls_ctx_set_data(braid_tls_ctx_t *ctx, void *data);
BRAID_EXTERN void *braid_tls_ctx_get_data(const braid_tls_ctx_t *ctx);

/* Copies the context's counters into out. Any thread; a snapshot, not a consistent cut. */
BRAID_EXTERN void braid_tls_ctx_stats(const braid_tls_ctx_t *ctx, braid_tls_stats_t *out);

/* What conn's handshake settled (valid from the connection or connect callback on, until
 * the close callback returns). Returns 0, or BRAID_EINVAL when conn does not run TLS or
 * its handshake is not done. */
BRAID_EXTERN int braid_tls_info(const braid_conn_t *conn, braid_tls_info_t *out);

/* OpenSSL's words for the TLS failure that ended conn (e.g. "certificate verify failed:
 * certificate has expired", "unexpected eof while reading", "renegotiation refused"), or ""
 * when none did; for the close callback, which gets the braid code. Static or owned by conn:
 * valid until the close callback returns. Never NULL. */
BRAID_EXTERN const char *braid_tls_error_text(const braid_conn_t *conn);

#ifdef __cplusplus
}
#endif
#endif
