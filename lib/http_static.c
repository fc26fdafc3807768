/* Static files for the HTTP server (see braid_http_server_static in braid/http.h).
 *
 * Nothing here blocks the loop: resolving and opening a file runs on the threadpool
 * (braid_work). Bodies go out one of two ways:
 *
 * - Zero copy (sendfile, conn_sendfile.c), for plain bodies of at least SENDFILE_MIN bytes:
 *   not compressed, not chunked (a Content-Length is always known here), a whole file or a
 *   Range slice (sendfile takes the offset), on a connection that can take it (plain TCP,
 *   no send rate limit: braid__conn_can_sendfile; TLS answers no), and only once the
 *   response is at the head of its connection with nothing of its own held back
 *   (braid__http_res_can_bypass). The check is made again before every block, so a response
 *   that waited behind a pipelined one, or whose first blocks were copied, switches to
 *   sendfile for the rest once it may. The transfer waits for the bytes queued before it
 *   (the header) to be written, then owns the socket until it ends; pipelined responses
 *   behind it hold their bytes and follow in order. HEAD, 304 and 416 have no body to send.
 * - Copied, otherwise: read with uv_fs_read, one 64 KiB block at a time, each written as
 *   streamed response body, pausing at the connection's watermarks. Files below
 *   SENDFILE_MIN always go this way: one read and one write carry them with the header in a
 *   single segment, where sendfile would cost a dup(), a threadpool round trip per call and
 *   a separate write of the header first; the copy of up to 64 KiB is cheaper than that.
 *
 * A file that shrinks while it is sent cannot meet the Content-Length already promised: the
 * response ends short and the connection closes after it (either way: sendfile returns 0,
 * or the read does), never padding or hanging. A connection that closes mid-transfer
 * (timeout, reset, server close) cancels the transfer, which closes its descriptors once
 * the piece running on the threadpool returns.
 *
 * No path outside the root is ever served. The URL path is percent-decoded first, and a
 * decoded NUL, a ".." segment or a backslash is refused before the filesystem sees it; then
 * the file is opened relative to a descriptor of the root with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS), so the kernel refuses any resolution (a symlink, a ".." that slipped
 * through) that would leave the root. Where openat2 is missing (Linux before 5.6) the path
 * is resolved with realpath(), checked to lie under the root's real path, opened, and the
 * opened file must be the one resolved (same device and inode). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__) && defined(SYS_openat2)
#include <linux/openat2.h>
#endif

#include "braid/http.h"
#include "internal.h"

#define READ_BLOCK (64 * 1024)
#define SENDFILE_MIN READ_BLOCK /* smaller bodies are copied (see the top) */

typedef struct static_s {
  char *prefix;
  size_t prefix_len;
  char *root;      /* real path of the root */
  int root_fd;     /* O_PATH | O_DIRECTORY */
  braid_http_static_opts_t opts;
  char *index;
  struct static_s *next;
} static_t;

/* One request being served. */
typedef struct sfile_s {
  braid_http_req_t *req;
  static_t *st;
  char rel[PATH_MAX]; /* decoded path below the root, without a leading '/' */
  int fd;
  int err;            /* from the open: 0, or a negated errno */
  uint64_t size;
  struct timespec mtime;
  uint64_t off, end; /* bytes [off, end) still to send */
  uv_fs_t fs;
  char *buf;
  braid__sendfile_t *sf; /* the zero-copy transfer in progress, or NULL */
  bool reading, cancelled, done_writing;
} sfile_t;

void braid_http_static_opts_init(braid_http_static_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->max_age_s = 3600;
  o->index = "index.html";
}

int braid_http_static_opts_validate(const braid_http_static_opts_t *o, braid_opts_error_t *err) {
  if (!o)
    return braid__opts_fail(err, "", "opts must not be NULL");
  if (o->max_age_s > (UINT64_C(1) << 31))
    return braid__opts_fail(err, "max_age_s", "%llu exceeds 2^31",
                            (unsigned long long)o->max_age_s);
  if (o->index && (!o->index[0] || strchr(o->index, '/') || strlen(o->index) > 255))
    return braid__opts_fail(err, "index", "must be a file name (no '/', 1..255 bytes) or NULL");
  braid__opts_ok(err);
  return 0;
}

/* ---- the path ------------------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes the URL path below the prefix into out (relative, no leading '/'). Returns 0, or
 * the status to answer: 400 for a bad escape, 404 for a path that could leave the root or
 * that no file can have (NUL, backslash, "..", too long). */
static int map_path(const char *path, char *out, size_t cap) {
  size_t n = 0;
  while (*path == '/')
    path++;
  for (const char *p = path; *p; p++) {
    char c = *p;
    if (c == '%') {
      int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
      if (hi < 0 || lo < 0)
        return 400;
      c = (char)(hi * 16 + lo);
      p += 2;
    }
    if (c == '\0' || c == '\\')
      return 404;
    if (n + 1 >= cap)
      return 404;
    out[n++] = c;
  }
  out[n] = 0;
  /* No "." or ".." segment, no empty segment in the middle (a//b). */
  for (char *seg = out; *seg;) {
    char *slash = strchr(seg, '/');
    size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
      return 404;
    if (len == 0 && slash)
      return 404;
    if (!slash)
      break;
    seg = slash + 1;
  }
  return 0;
}

/* ---- opening (threadpool) ------------------------------------------------------------- */

/* Opens rel below the root; on a kernel without openat2, resolves and checks by hand. */
static int open_beneath(const static_t *st, const char *rel, int flags) {
  if (!*rel)
    return openat(st->root_fd, ".", flags | O_CLOEXEC);
#if defined(__linux__) && defined(SYS_openat2)
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = (uint64_t)(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int fd = (int)syscall(SYS_openat2, st->root_fd, rel, &how, sizeof(how));
  if (fd >= 0 || errno != ENOSYS)
    return fd;
#endif
  char joined[PATH_MAX * 2], real[PATH_MAX];
  snprintf(joined, sizeof(joined), "%s/%s", st->root, rel);
  if (!realpath(joined, real))
    return -1;
  size_t rl = strlen(st->root);
  if (strncmp(real, st->root, rl) != 0 || (real[rl] != '/' && real[rl] != 0)) {
    errno = ENOENT;
    return -1;
  }
  int rfd = open(real, flags | O_CLOEXEC | O_NOFOLLOW);
  struct stat a, b;
  if (rfd >= 0 && (fstat(rfd, &a) || stat(real, &b) || a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
    close(rfd);
    errno = ENOENT;
    return -1;
  }
  return rfd;
}

static void open_work(void *arg) {
  sfile_t *f = arg;
  f->fd = open_beneath(f->st, f->rel, O_RDONLY);
  if (f->fd < 0) {
    f->err = -errno;
    return;
  }
  struct stat sb;
  if (fstat(f->fd, &sb) != 0) {
    f->err = -errno;
    close(f->fd);
    f->fd = -1;
    return;
  }
  if (S_ISDIR(sb.st_mode)) {
    int dir = f->fd;
    f->fd = -1;
    if (!f->st->index) {
      close(dir);
      f->err = -ENOENT;
      return;
    }
    /* The index file itself may not be a symlink. */
    f->fd = openat(dir, f->st->index, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    close(dir);
    if (f->fd < 0 || fstat(f->fd, &sb) != 0) {
      f->err = -ENOENT;
      if (f->fd >= 0)
        close(f->fd);
      f->fd = -1;
      return;
    }
    size_t n = strlen(f->rel);
    if (n && f->rel[n - 1] != '/' && n + 1 < sizeof(f->rel))
      strcat(f->rel, "/");
    if (strlen(f->rel) + strlen(f->st->index) < sizeof(f->rel))
      strcat(f->rel, f->st->index);
  }
  if (!S_ISREG(sb.st_mode)) {
    close(f->fd);
    f->fd = -1;
    f->err = -ENOENT;
    return;
  }
  f->size = (uint64_t)sb.st_size;
  f->mtime = sb.st_mtim;
}

/* ---- headers -------------------------------------------------------------------------- */

static const char *content_type(const char *rel) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},   {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"json", "application/json"},         {"txt", "text/plain; charset=utf-8"},
      {"md", "text/markdown; charset=utf-8"}, {"csv", "text/csv; charset=utf-8"},
      {"xml", "application/xml"},           {"svg", "image/svg+xml"},
      {"png", "image/png"},                 {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},               {"gif", "image/gif"},
      {"webp", "image/webp"},               {"avif", "image/avif"},
      {"ico", "image/x-icon"},              {"woff", "font/woff"},
      {"woff2", "font/woff2"},              {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},           {"gz", "application/gzip"},
      {"zip", "application/zip"},           {"mp4", "video/mp4"},
      {"webm", "video/webm"},               {"mp3", "audio/mpeg"},
  };
  const char *slash = strrchr(rel, '/');
  const char *dot = strrchr(slash ? slash : rel, '.');
  if (dot)
    for (size_t i = 0; i < BRAID__ARRAY_SIZE(types); i++)
      if (strcasecmp(dot + 1, types[i].ext) == 0)
        return types[i].type;
  return "application/octet-stream";
}

static void http_date(time_t t, char *out, size_t cap) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Whether an If-None-Match list matches etag (weak comparison, RFC 9110 13.1.2). */
static bool etag_matches(const char *list, const char *etag) {
  const char *tag = etag[0] == 'W' ? etag + 2 : etag;
  size_t tl = strlen(tag);
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '*')
      return true;
    if (p[0] == 'W' && p[1] == '/')
      p += 2;
    if (strncmp(p, tag, tl) == 0 && (p[tl] == 0 || p[tl] == ',' || p[tl] == ' '))
      return true;
    while (*p && *p != ',')
      p++;
  }
  return false;
}

/* Parses a single "bytes=" range against size. Returns 0 (no usable range: send it all),
 * 1 (*first..*last), or -1 (unsatisfiable: 416). */
static int parse_range(const char *h, uint64_t size, uint64_t *first, uint64_t *last) {
  if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
    return 0; /* other units, or several ranges: ignored, the whole file is sent */
  const char *p = h + 6;
  char *end;
  if (*p == '-') {
    if (p[1] < '0' || p[1] > '9')
      return 0;
    unsigned long long n = strtoull(p + 1, &end, 10);
    if (*end)
      return 0;
    if (n == 0 || size == 0)
      return -1;
    *first = n >= size ? 0 : size - n;
    *last = size - 1;
    return 1;
  }
  if (*p < '0' || *p > '9')
    return 0;
  unsigned long long a = strtoull(p, &end, 10);
  if (*end != '-')
    return 0;
  p = end + 1;
  unsigned long long b = size ? size - 1 : 0;
  if (*p) {
    if (*p < '0' || *p > '9')
      return 0;
    b = strtoull(p, &end, 10);
    if (*end || b < a)
      return 0;
  }
  if (a >= size)
    return -1;
  if (b >= size)
    b = size - 1;
  *first = a;
  *last = b;
  return 1;
}

/* ---- sending -------------------------------------------------------------------------- */

static void sfile_free(sfile_t *f) {
  if (f->fd >= 0) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, f->fd, NULL); /* a regular file's close does not block */
    uv_fs_req_cleanup(&req);
  }
  braid__free(f->buf);
  braid__free(f);
}

static void pump(sfile_t *f);

static void on_read(uv_fs_t *fs) {
  sfile_t *f = fs->data;
  ssize_t n = fs->result;
  uv_fs_req_cleanup(fs);
  f->reading = false;
  if (f->cancelled) {
    sfile_free(f);
    return;
  }
  if (n <= 0) { /* the file shrank or failed: the response ends short and the conn closes */
    braid_http_res_end(f->req);
    sfile_free(f);
    return;
  }
  f->off += (uint64_t)n;
  int rc = braid_http_res_write(f->req, f->buf, (size_t)n);
  if (rc < 0) {
    braid_http_res_end(f->req);
    sfile_free(f);
    return;
  }
  if (rc == BRAID_HTTP_WAIT)
    return; /* on_writable continues */
  pump(f);
}

/* The zero-copy transfer ended (status 0: everything sent). */
static void on_sent(braid__sendfile_t *sf, int status, uint64_t sent, void *arg) {
  sfile_t *f = arg;
  (void)sf;
  (void)status; /* short (the file shrank, the socket failed): res_end closes after it */
  f->sf = NULL;
  f->off += sent;
  braid__http_res_bypass(f->req, false, sent);
  braid_http_res_end(f->req);
  sfile_free(f);
}

static void pump(sfile_t *f) {
  if (f->off >= f->end) {
    braid_http_res_end(f->req);
    sfile_free(f);
    return;
  }
  if (f->end - f->off >= SENDFILE_MIN && braid__http_res_can_bypass(f->req) &&
      braid__sendfile_start(&f->sf, braid_http_req_conn(f->req), f->fd, f->off,
                            f->end - f->off, on_sent, f) == 0) {
    f->fd = -1; /* the transfer closes it */
    braid__http_res_bypass(f->req, true, 0);
    return;
  }
  f->sf = NULL;
  if (!f->buf && !(f->buf = braid__malloc(READ_BLOCK))) {
    braid_http_res_end(f->req);
    sfile_free(f);
    return;
  }
  uint64_t want = f->end - f->off;
  uv_buf_t b = uv_buf_init(f->buf, (unsigned)(want < READ_BLOCK ? want : READ_BLOCK));
  f->fs.data = f;
  f->reading = true;
  int rc = uv_fs_read(braid_loop_uv(braid_http_req_loop(f->req)), &f->fs, f->fd, &b, 1,
                      (int64_t)f->off, on_read);
  if (rc) {
    f->reading = false;
    braid_http_res_end(f->req);
    sfile_free(f);
  }
}

static void on_writable(braid_http_req_t *req, int status, void *arg) {
  sfile_t *f = arg;
  (void)req;
  if (status < 0) {
    if (f->sf) {
      braid__sendfile_cancel(f->sf);
      f->sf = NULL;
      braid__http_res_bypass(f->req, false, 0);
    }
    braid_http_res_end(f->req);
    if (f->reading)
      f->cancelled = true; /* on_read frees */
    else
      sfile_free(f);
    return;
  }
  if (!f->reading && !f->sf)
    pump(f);
}

static void answer_status(braid_http_req_t *req, int status) {
  char body[64];
  int n = snprintf(body, sizeof(body), "%d\n", status);
  braid_http_header_t h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
  braid_http_respond(req, status, h, 1, body, (size_t)n);
}

static void open_done(braid_loop_t *loop, int status, void *arg) {
  sfile_t *f = arg;
  (void)loop;
  braid_http_req_t *req = f->req;
  if (status != 0 || f->err) {
    int s = f->err == -EACCES ? 403 : 404;
    answer_status(req, s);
    sfile_free(f);
    return;
  }
  char etag[64], lastmod[64], cc[48], crange[96];
  snprintf(etag, sizeof(etag), "\"%llx-%llx\"", (unsigned long long)f->size,
           (unsigned long long)f->mtime.tv_sec * 1000000000ull + (unsigned long long)f->mtime.tv_nsec);
  http_date(f->mtime.tv_sec, lastmod, sizeof(lastmod));
  snprintf(cc, sizeof(cc), "public, max-age=%llu", (unsigned long long)f->st->opts.max_age_s);
  braid_http_header_t h[8] = {{"Content-Type", content_type(f->rel)},
                              {"ETag", etag},
                              {"Last-Modified", lastmod},
                              {"Cache-Control", cc},
                              {"Accept-Ranges", "bytes"}};
  size_t nh = 5;
  /* Conditionals: If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2). */
  const char *inm = braid_http_req_header(req, "If-None-Match");
  const char *ims = braid_http_req_header(req, "If-Modified-Since");
  bool not_modified = false;
  if (inm) {
    not_modified = etag_matches(inm, etag);
  } else if (ims) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end && !*end && f->mtime.tv_sec <= timegm(&tm))
      not_modified = true;
  }
  if (not_modified) {
    braid_http_respond(req, 304, h + 1, 4, NULL, 0); /* no Content-Type on a 304 */
    sfile_free(f);
    return;
  }
  int status_code = 200;
  f->off = 0;
  f->end = f->size;
  const char *range = braid_http_req_header(req, "Range");
  const char *if_range = braid_http_req_header(req, "If-Range");
  if (range && (!if_range || strcmp(if_range, etag) == 0)) {
    uint64_t first = 0, last = 0;
    int r = parse_range(range, f->size, &first, &last);
    if (r < 0) {
      snprintf(crange, sizeof(crange), "bytes */%llu", (unsigned long long)f->size);
      braid_http_header_t h416[] = {{"Content-Range", crange}, {"Content-Type", "text/plain"}};
      braid_http_respond(req, 416, h416, 2, "416\n", 4);
      sfile_free(f);
      return;
    }
    if (r > 0) {
      status_code = 206;
      f->off = first;
      f->end = last + 1;
      snprintf(crange, sizeof(crange), "bytes %llu-%llu/%llu", (unsigned long long)first,
               (unsigned long long)last, (unsigned long long)f->size);
      h[nh].name = "Content-Range";
      h[nh++].value = crange;
    }
  }
  if (braid_http_res_begin(req, status_code, h, nh, (int64_t)(f->end - f->off)) != 0 ||
      strcmp(braid_http_req_method(req), "HEAD") == 0 || f->end == f->off) {
    braid_http_res_end(req);
    sfile_free(f);
    return;
  }
  braid_http_res_on_writable(req, on_writable, f);
  pump(f);
}

static void static_handler(braid_http_req_t *req, void *arg) {
  static_t *st = arg;
  sfile_t *f = braid__calloc(1, sizeof(*f));
  if (!f) {
    answer_status(req, 503);
    return;
  }
  f->req = req;
  f->st = st;
  f->fd = -1;
  const char *path = braid_http_req_path(req);
  int s = map_path(path + (strlen(path) >= st->prefix_len ? st->prefix_len : strlen(path)), f->rel,
                   sizeof(f->rel));
  if (s) {
    answer_status(req, s);
    braid__free(f);
    return;
  }
  if (braid_work(NULL, braid_http_req_loop(req), open_work, open_done, f) != 0) {
    answer_status(req, 503);
    braid__free(f);
  }
}

/* ---- registration --------------------------------------------------------------------- */

/* The server frees its static roots with it. */
void braid__http_static_free(void *list);
void braid__http_static_free(void *list) {
  for (static_t *st = list, *next; st; st = next) {
    next = st->next;
    if (st->root_fd >= 0)
      close(st->root_fd);
    braid__free(st->prefix);
    braid__free(st->root);
    braid__free(st->index);
    braid__free(st);
  }
}

void **braid__http_static_list(braid_http_server_t *s);
braid_loop_t *braid__http_server_loop(braid_http_server_t *s);

int braid_http_server_static(braid_http_server_t *server, const char *prefix, const char *root,
                             const braid_http_static_opts_t *o) {
  braid_http_static_opts_t def;
  if (!server || !prefix || prefix[0] != '/' || !root)
    return BRAID_EINVAL;
  if (!o) {
    braid_http_static_opts_init(&def);
    o = &def;
  }
  braid_opts_error_t err;
  if (braid_http_static_opts_validate(o, &err)) {
    braid__opts_log(braid__http_server_loop(server), "braid_http_server_static", &err);
    return BRAID_EINVAL;
  }
  static_t *st = braid__calloc(1, sizeof(*st));
  if (!st)
    return BRAID_ENOMEM;
  st->root_fd = -1;
  char real[PATH_MAX];
  if (!realpath(root, real)) {
    int e = -errno;
    braid__free(st);
    return e;
  }
  st->root_fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
  size_t pl = strlen(prefix), rl = strlen(real);
  st->prefix = braid__malloc(pl + 1);
  st->root = braid__malloc(rl + 1);
  st->index = o->index ? braid__malloc(strlen(o->index) + 1) : NULL;
  if (st->root_fd < 0 || !st->prefix || !st->root || (o->index && !st->index)) {
    int e = st->root_fd < 0 ? -errno : BRAID_ENOMEM;
    braid__http_static_free(st);
    return e;
  }
  memcpy(st->prefix, prefix, pl + 1);
  memcpy(st->root, real, rl + 1);
  if (st->index)
    strcpy(st->index, o->index);
  st->prefix_len = pl;
  st->opts = *o;
  st->opts.index = st->index;
  int rc = braid_http_server_route(server, "GET", prefix, BRAID_HTTP_PREFIX, static_handler, st);
  if (rc) {
    braid__http_static_free(st);
    return rc;
  }
  void **list = braid__http_static_list(server);
  st->next = *list;
  *list = st;
  return 0;
}
