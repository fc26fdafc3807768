/* TLS against plain TCP on braid's echo path, in one process: a braid echo server and N
 * braid clients on one loop, each client keeping one message of --size bytes in flight and
 * sending the next once the echo is whole, for --seconds per mode. Prints the echoed bytes
 * per second and per CPU-second (the process's user+sys: server and clients together, so
 * the TLS/plain ratio counts both ends' crypto) for each mode and their ratio, as a table
 * and a JSON line. The certificate is made in memory (EC P-256, self-signed) and the client
 * does not verify it (verify_peer NONE): this measures the record layer, not verification.
 *
 * Usage: bench_tls [--quick] [--seconds S] [--size BYTES] [--conns N]
 * Run it pinned (taskset -c 0) on a quiet machine; the numbers in bench/RESULTS.md are the
 * lead's. --quick is a one-second smoke run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "braid.h"

typedef struct bench_s {
  braid_loop_t *loop;
  braid_server_t *server;
  size_t size;
  unsigned conns;
  uint64_t bytes;
  int stopping;
  unsigned open_clients;
  uint8_t *msg;
} bench_t;

typedef struct client_s {
  bench_t *b;
  size_t got;
} client_t;

static void s_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len, void *d) {
  (void)d;
  if (status == 0)
    braid_conn_write(conn, bytes, len, NULL, NULL);
}

static void on_conn(braid_server_t *server, braid_conn_t *conn, void *data) {
  (void)server;
  (void)data;
  braid_conn_callbacks_t cbs = {.on_read = s_read};
  braid_conn_set_callbacks(conn, &cbs);
  braid_conn_read_start(conn);
}

static void c_read(braid_conn_t *conn, int status, const uint8_t *bytes, size_t len, void *d) {
  (void)bytes;
  client_t *c = d;
  if (status < 0)
    return;
  c->got += len;
  c->b->bytes += len;
  if (c->got < c->b->size)
    return;
  c->got -= c->b->size;
  if (c->b->stopping)
    braid_conn_close(conn);
  else
    braid_conn_write(conn, c->b->msg, c->b->size, NULL, NULL);
}

static void c_close(braid_conn_t *conn, int status, void *d) {
  (void)conn;
  (void)status;
  client_t *c = d;
  c->b->open_clients--;
  free(c);
}

static void c_connected(braid_connect_t *req, int status, braid_conn_t *conn, void *arg) {
  (void)req;
  bench_t *b = arg;
  if (status) {
    fprintf(stderr, "bench_tls: connect: %s\n", braid_strerror(status));
    exit(1);
  }
  client_t *c = calloc(1, sizeof(*c));
  c->b = b;
  braid_conn_callbacks_t cbs = {.on_read = c_read, .on_close = c_close};
  braid_conn_set_data(conn, c);
  braid_conn_set_callbacks(conn, &cbs);
  braid_conn_read_start(conn);
  braid_conn_write(conn, b->msg, b->size, NULL, NULL);
}

static void on_warm(uv_timer_t *t) {
  uv_stop(t->loop);
}

static void on_stop(uv_timer_t *t) {
  ((bench_t *)t->data)->stopping = 1;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static char *pem(int cert, void *obj) {
  BIO *b = BIO_new(BIO_s_mem());
  if (cert)
    PEM_write_bio_X509(b, obj);
  else
    PEM_write_bio_PrivateKey(b, obj, NULL, NULL, 0, NULL, NULL);
  char *p;
  long n = BIO_get_mem_data(b, &p);
  char *out = malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  BIO_free(b);
  return out;
}

static void make_ctxs(braid_tls_ctx_t **server, braid_tls_ctx_t **client) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_sign(x, key, EVP_sha256());
  char *c = pem(1, x), *k = pem(0, key);
  braid_tls_opts_t o;
  braid_tls_opts_init(&o);
  o.role = BRAID_TLS_SERVER;
  o.cert_pem = c;
  o.key_pem = k;
  braid_opts_error_t err;
  if (braid_tls_ctx_new(server, &o, &err)) {
    fprintf(stderr, "bench_tls: server ctx: %s: %s\n", err.field, err.reason);
    exit(1);
  }
  braid_tls_opts_init(&o);
  o.verify_peer = BRAID_TLS_VERIFY_NONE;
  o.use_system_cas = 0;
  if (braid_tls_ctx_new(client, &o, &err)) {
    fprintf(stderr, "bench_tls: client ctx: %s: %s\n", err.field, err.reason);
    exit(1);
  }
  free(c);
  free(k);
  X509_free(x);
  EVP_PKEY_free(key);
}

/* One mode: returns bytes per second; *per_cpu gets bytes per CPU-second. */
static double run_mode(braid_tls_ctx_t *sctx, braid_tls_ctx_t *cctx, size_t size,
                       unsigned conns, double seconds, double *per_cpu) {
  bench_t b;
  memset(&b, 0, sizeof(b));
  b.size = size;
  b.conns = conns;
  b.msg = malloc(size);
  memset(b.msg, 'x', size);
  braid_loop_new(&b.loop, NULL);
  braid_server_opts_t so;
  braid_server_opts_init(&so);
  so.tls = sctx;
  braid_server_new(&b.server, b.loop, &so, on_conn, &b);
  braid_server_listen(b.server, "127.0.0.1", 0);
  braid_client_opts_t co;
  braid_client_opts_init(&co);
  co.tls = cctx;
  for (unsigned i = 0; i < conns; i++)
    braid_connect(NULL, b.loop, "127.0.0.1", braid_server_port(b.server), &co, c_connected, &b);
  b.open_clients = conns;
  uv_loop_t *uv = braid_loop_uv(b.loop);
  /* Warm up (handshakes) for a tenth of the run, then measure. */
  uv_timer_t warm;
  uv_timer_init(uv, &warm);
  uv_timer_start(&warm, on_warm, (uint64_t)(seconds * 100), 0);
  uv_run(uv, UV_RUN_DEFAULT);
  uint64_t bytes0 = b.bytes;
  double cpu0 = cpu_seconds();
  uint64_t t0 = uv_hrtime();
  uv_timer_t stop;
  uv_timer_init(uv, &stop);
  stop.data = &b;
  uv_timer_start(&stop, on_stop, (uint64_t)(seconds * 1000), 0);
  while (!b.stopping)
    uv_run(uv, UV_RUN_ONCE);
  double wall = (double)(uv_hrtime() - t0) / 1e9;
  double cpu = cpu_seconds() - cpu0;
  uint64_t bytes = b.bytes - bytes0;
  while (b.open_clients > 0)
    uv_run(uv, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&warm, NULL);
  uv_close((uv_handle_t *)&stop, NULL);
  braid_server_close(b.server, NULL, NULL);
  uv_run(uv, UV_RUN_DEFAULT);
  braid_loop_close(b.loop);
  free(b.msg);
  *per_cpu = cpu > 0 ? (double)bytes / cpu : 0;
  return (double)bytes / wall;
}

int main(int argc, char **argv) {
  double seconds = 5;
  size_t size = 16384;
  unsigned conns = 4;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      seconds = 0.5;
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
      size = (size_t)atol(argv[++i]);
    else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc)
      conns = (unsigned)atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--quick] [--seconds S] [--size BYTES] [--conns N]\n", argv[0]);
      return 2;
    }
  }
  if (!braid_tls_available()) {
    fprintf(stderr, "bench_tls: braid built without TLS\n");
    return 77;
  }
  braid_tls_ctx_t *sctx, *cctx;
  make_ctxs(&sctx, &cctx);
  double plain_cpu, tls_cpu;
  double plain = run_mode(NULL, NULL, size, conns, seconds, &plain_cpu);
  double tls = run_mode(sctx, cctx, size, conns, seconds, &tls_cpu);
  printf("%-6s %14s %18s\n", "mode", "MB/s", "MB per CPU-second");
  printf("%-6s %14.1f %18.1f\n", "plain", plain / 1e6, plain_cpu / 1e6);
  printf("%-6s %14.1f %18.1f\n", "tls", tls / 1e6, tls_cpu / 1e6);
  printf("{\"bench\":\"tls_echo\",\"size\":%zu,\"conns\":%u,\"seconds\":%g,"
         "\"plain_Bps\":%.0f,\"tls_Bps\":%.0f,\"plain_B_per_cpu_s\":%.0f,"
         "\"tls_B_per_cpu_s\":%.0f,\"tls_over_plain_per_cpu\":%.3f}\n",
         size, conns, seconds, plain, tls, plain_cpu, tls_cpu,
         plain_cpu > 0 ? tls_cpu / plain_cpu : 0);
  braid_tls_ctx_free(sctx);
  braid_tls_ctx_free(cctx);
  return 0;
}
