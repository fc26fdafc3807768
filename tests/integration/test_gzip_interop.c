/* Interop of the one-shot API (libdeflate where built with it) and the async API with the
 * system gzip and python3's gzip/zlib modules, both ways, including multi-member files.
 * (tests/integration/gzip_interop.py covers the streaming API the same way, through bgzip.)
 * Skipped when gzip or python3 is missing. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../support.h"

static char tmpdir[] = "/tmp/braid_gzip_interop_XXXXXX";

static void path_of(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void write_file(const char *name, const void *data, size_t n) {
  char p[256];
  path_of(p, sizeof(p), name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static uint8_t *read_file(const char *name, size_t *n) {
  char p[256];
  path_of(p, sizeof(p), name);
  FILE *f = fopen(p, "rb");
  assert_non_null(f);
  size_t cap = 1 << 16, len = 0, k;
  uint8_t *buf = malloc(cap);
  while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
    len += k;
    if (len == cap)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  *n = len;
  return buf;
}

static void sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  if (rc != 0)
    fail_msg("command failed (%d): %s", rc, cmd);
}

/* The payloads: empty, one byte, 1 KiB, ~1.2 MiB of real text, 200 KB of random bytes. */
typedef struct {
  const char *name;
  uint8_t *data;
  size_t len;
} payload_t;

static payload_t payloads[5];

static int setup(void **state) {
  (void)state;
  if (system("command -v gzip >/dev/null && command -v python3 >/dev/null") != 0)
    return 0;
  assert_non_null(mkdtemp(tmpdir));
  sh("cat /usr/include/*.h 2>/dev/null | head -c 1300000 > %s/text", tmpdir);
  sh("head -c 200000 /dev/urandom > %s/random", tmpdir);
  payloads[0] = (payload_t){"empty", malloc(1), 0};
  payloads[1] = (payload_t){"one", (uint8_t *)strdup("x"), 1};
  payloads[3].name = "text";
  payloads[3].data = read_file("text", &payloads[3].len);
  payloads[2] = (payload_t){"1k", malloc(1024), 1024};
  memcpy(payloads[2].data, payloads[3].data, 1024);
  payloads[4].name = "random";
  payloads[4].data = read_file("random", &payloads[4].len);
  for (int i = 0; i < 5; i++)
    write_file(payloads[i].name, payloads[i].data, payloads[i].len);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < 5; i++)
    free(payloads[i].data);
  if (payloads[3].data)
    sh("rm -rf %s", tmpdir);
  return 0;
}

static bool have_tools(void) {
  if (payloads[3].data)
    return true;
  print_message("gzip or python3 missing: skipped\n");
  return false;
}

static braid_gzip_t *ctx(braid_gzip_format_t f, int level) {
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.format = f;
  o.level = level;
  o.min_size_bytes = 0;
  braid_gzip_t *gz;
  assert_int_equal(braid_gzip_new(&gz, &o), 0);
  return gz;
}

static void expect_decompresses_to(braid_gzip_t *gz, const uint8_t *z, size_t zlen,
                                   const uint8_t *want, size_t want_len) {
  void *out;
  size_t len;
  int rc = braid_gzip_decompress(gz, z, zlen, &out, &len);
  if (rc)
    fail_msg("braid_gzip_decompress: %s", braid_err_name(rc));
  assert_int_equal(len, want_len);
  assert_memory_equal(out, want, len);
  braid_gzip_buf_free(out);
}

typedef struct {
  int calls, status;
  void *out;
  size_t len;
} async_res_t;

static void on_async(braid_loop_t *loop, int status, void *out, size_t len, void *arg) {
  (void)loop;
  async_res_t *r = arg;
  r->calls++;
  r->status = status;
  r->out = out;
  r->len = len;
}

/* braid writes, gzip -dc and python read. Files are named w_<format>_<level>_<payload>,
 * and checked by one gzip loop and one python run (process start-up dominates otherwise). */
static void test_braid_writes(void **state) {
  (void)state;
  if (!have_tools())
    return;
  for (int f = 0; f < 3; f++) {
    for (int level = 1; level <= 9; level += 4) {
      braid_gzip_t *gz = ctx((braid_gzip_format_t)f, level);
      for (int i = 0; i < 5; i++) {
        void *z;
        size_t zlen;
        assert_int_equal(
            braid_gzip_compress_alloc(gz, payloads[i].data, payloads[i].len, &z, &zlen), 0);
        char name[64];
        snprintf(name, sizeof(name), "w_%d_%d_%s", f, level, payloads[i].name);
        write_file(name, z, zlen);
        braid_gzip_buf_free(z);
      }
      braid_gzip_free(gz);
    }
  }
  sh("cd %s && for x in w_0_*; do gzip -dc < $x | cmp -s - ${x#w_0_?_} || exit 1; done", tmpdir);
  sh("cd %s && python3 -c \"import glob,gzip,zlib\n"
     "dec = [gzip.decompress, zlib.decompress, lambda z: zlib.decompress(z, -15)]\n"
     "for x in glob.glob('w_*'):\n"
     "  f, level, name = x.split('_', 3)[1:]\n"
     "  assert dec[int(f)](open(x,'rb').read()) == open(name,'rb').read(), x\n\"",
     tmpdir);
}

/* gzip and python write (one run each for every level and payload), braid reads; a named
 * file and multi-member files from both. */
static void test_braid_reads(void **state) {
  (void)state;
  if (!have_tools())
    return;
  braid_gzip_t *g = ctx(BRAID_GZIP_FORMAT_GZIP, 6), *zl = ctx(BRAID_GZIP_FORMAT_ZLIB, 6),
               *raw = ctx(BRAID_GZIP_FORMAT_RAW, 6);
  sh("cd %s && for l in 1 5 9; do for n in empty one 1k text random; do "
     "gzip -$l -c < $n > r_${l}_$n.gz || exit 1; done; done",
     tmpdir);
  sh("cd %s && python3 -c \"import gzip,zlib\n"
     "for l in (1, 5, 9):\n"
     "  for n in ('empty', 'one', '1k', 'text', 'random'):\n"
     "    d = open(n, 'rb').read()\n"
     "    open('p_%%d_%%s.gz' %% (l, n), 'wb').write(gzip.compress(d, l))\n"
     "    open('p_%%d_%%s.zz' %% (l, n), 'wb').write(zlib.compress(d, l))\n"
     "    c = zlib.compressobj(l, wbits=-15)\n"
     "    open('p_%%d_%%s.raw' %% (l, n), 'wb').write(c.compress(d) + c.flush())\n\"",
     tmpdir);
  for (int i = 0; i < 5; i++) {
    const payload_t *p = &payloads[i];
    for (int level = 1; level <= 9; level += 4) {
      static const char *kinds[] = {"r_%d_%s.gz", "p_%d_%s.gz", "p_%d_%s.zz", "p_%d_%s.raw"};
      braid_gzip_t *by_kind[] = {g, g, zl, raw};
      for (int k = 0; k < 4; k++) {
        char name[64];
        snprintf(name, sizeof(name), kinds[k], level, p->name);
        size_t zlen;
        uint8_t *z = read_file(name, &zlen);
        expect_decompresses_to(by_kind[k], z, zlen, p->data, p->len);
        free(z);
      }
    }
  }
  /* A named file (FNAME, MTIME) and a 5-member file from both tools. */
  sh("cp %s/text %s/named.txt && gzip -f %s/named.txt", tmpdir, tmpdir, tmpdir);
  size_t zlen;
  uint8_t *z = read_file("named.txt.gz", &zlen);
  assert_true(z[3] & 0x08);
  expect_decompresses_to(g, z, zlen, payloads[3].data, payloads[3].len);
  free(z);
  sh("(gzip -c %s/1k; gzip -c %s/empty; python3 -c \"import gzip,sys; "
     "sys.stdout.buffer.write(gzip.compress(open(sys.argv[1],'rb').read()))\" %s/text; "
     "gzip -c %s/random; gzip -c %s/one) > %s/multi.gz",
     tmpdir, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir);
  z = read_file("multi.gz", &zlen);
  size_t total = 1024 + 0 + payloads[3].len + payloads[4].len + 1;
  uint8_t *want = malloc(total), *w = want;
  memcpy(w, payloads[2].data, 1024);
  w += 1024;
  memcpy(w, payloads[3].data, payloads[3].len);
  w += payloads[3].len;
  memcpy(w, payloads[4].data, payloads[4].len);
  w += payloads[4].len;
  *w = 'x';
  expect_decompresses_to(g, z, zlen, want, total);
  /* ... and the async path, through the threadpool. */
  bt_loop_t t;
  bt_loop_init(&t);
  braid_gzip_opts_t o;
  braid_gzip_opts_init(&o);
  o.offload_threshold_bytes = 0;
  async_res_t r = {0, 0, NULL, 0};
  assert_int_equal(braid_gzip_decompress_async(t.loop, &o, z, zlen, on_async, &r), 0);
  bt_run_until(&t, &r.calls, 20000);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.len, total);
  assert_memory_equal(r.out, want, total);
  braid_gzip_buf_free(r.out);
  bt_loop_done(&t);
  free(want);
  free(z);
  braid_gzip_free(g);
  braid_gzip_free(zl);
  braid_gzip_free(raw);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_braid_writes),
      cmocka_unit_test(test_braid_reads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
