/* Sending a file's bytes to a connection without copying them through user space
 * (braid__sendfile_start, internal.h). Used by static files (http_static.c) for plain bodies.
 *
 * Why sendfile(2) on the threadpool, not uv_fs_sendfile(). libuv's uv_fs_sendfile() (1.44,
 * Debian 12's) first tries copy_file_range(), which refuses a socket with EINVAL, and then
 * falls back to its emulation: 8 KiB pread()s and write()s in user space, and, when the
 * socket is full, poll(fd, POLLOUT, -1) on the threadpool thread, with no timeout (strace
 * of a small test shows it). So each call copies the bytes anyway, and a client that stops
 * reading holds a threadpool thread for as long as it likes: four such clients stop every
 * file open, DNS lookup and braid_work() of the process. Here the work item calls sendfile(2)
 * itself on the non-blocking socket: zero copy, and a full socket returns EAGAIN at once.
 * The loop then waits for writability with a uv_poll_t and sends the next piece.
 *
 * The descriptor. The transfer writes to a dup() of the socket's descriptor, never to the
 * connection's own number, and closes the dup only after its last work item returned. The
 * connection may close at any time (a timeout, a reset, the server closing): libuv then
 * closes its descriptor, whose number the next accept() may reuse at once; a sendfile still
 * running on the threadpool goes on writing to the old socket through the dup (kept alive by
 * it), never into a new connection. Pinning the connection's close until the work item
 * returns would do as well, but would put a wait into conn.c's close path (shared with TLS
 * and everything else); the dup costs two system calls per file and keeps the hazard here.
 * The uv_poll_t watches the dup's number too (libuv refuses two watchers on one number, and
 * the connection's own watcher stays libuv's), and is closed before the dup is.
 *
 * Order. The transfer starts only when the connection's write queue is empty and nothing is
 * in flight (the response's header first): until then an empty write queued behind the
 * bytes tells it when they are out. Nothing else may write to the connection meanwhile; the
 * HTTP layer guarantees it (a response at the head of the connection owns it, later ones
 * hold their bytes until it ends).
 *
 * Bounds. Each work item sends at most SENDFILE_CHUNK bytes, so a fast reader cannot keep a
 * threadpool thread for a long time (a non-blocking sendfile on loopback moves a MiB in well
 * under a millisecond); the socket's buffer usually stops it sooner. Memory: none beyond the
 * socket's buffer, whatever the client does. Time: each piece that moves counts as progress
 * of the connection (stats, idle and write timeouts); while the transfer waits, the
 * connection's write timeout runs as for queued bytes, so a client that stops reading is cut
 * off (with a reset) exactly as one that stops reading a copied body.
 *
 * Ends. All bytes sent: status 0. sendfile returning 0 before the end: the file shrank, and
 * the promised length cannot be met: BRAID_EOF (the caller closes the connection; nothing
 * but file bytes is ever sent). A socket error (reset, EPIPE): the connection closes with it.
 * Cancel (the connection closed under it): no callback; the transfer lets go of the
 * connection at once and frees itself once its work item returned. A sendfile to a reset
 * peer raises SIGPIPE as libuv's own writev() would; braid_loop_new() sets SIGPIPE to
 * SIG_IGN when it is at its default (loop.h). */
#include <errno.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "internal.h"

#define SENDFILE_CHUNK ((size_t)1 << 20)

struct braid__sendfile_s {
  braid_loop_t *loop;
  braid_conn_t *conn; /* NULL once cancelled */
  int sock_fd;        /* our dup of the socket, -1 until the transfer starts */
  int file_fd;
  uint64_t off, left, sent;
  braid__sendfile_cb cb;
  void *arg;
  uv_work_t work;
  uv_poll_t *poll;
  /* the last work item's result */
  ssize_t result;
  int err;
  size_t asked;
  bool working, marker_pending, polling, cancelled, ended;
};

static void sf_step(braid__sendfile_t *sf);

static void sf_poll_closed(uv_handle_t *h) {
  braid__sendfile_t *sf = h->data;
  braid__free(h);
  if (sf->sock_fd >= 0)
    close(sf->sock_fd);
  close(sf->file_fd);
  braid_loop_t *loop = sf->loop;
  braid__free(sf);
  braid__loop_unref(loop);
}

/* Frees sf once nothing of it runs: the poll handle closes first, then the descriptors. */
static void sf_free_when_idle(braid__sendfile_t *sf) {
  if (sf->working || sf->marker_pending)
    return; /* the work item's or the marker's completion comes back here */
  if (sf->poll) {
    if (!uv_is_closing((uv_handle_t *)sf->poll))
      uv_close((uv_handle_t *)sf->poll, sf_poll_closed);
    return;
  }
  if (sf->sock_fd >= 0)
    close(sf->sock_fd);
  close(sf->file_fd);
  braid_loop_t *loop = sf->loop;
  braid__free(sf);
  braid__loop_unref(loop);
}

/* Ends the transfer with status: the connection is told, then the owner, then sf goes. */
static void sf_end(braid__sendfile_t *sf, int status) {
  sf->ended = true;
  if (sf->polling) {
    uv_poll_stop(sf->poll);
    sf->polling = false;
  }
  braid_conn_t *c = sf->conn;
  sf->conn = NULL;
  /* A socket error ends the connection; a short file or a connection already closing
   * leaves that to the owner. */
  if (c && sf->sock_fd >= 0)
    braid__conn_external_end(c, status == BRAID_EOF || status == BRAID_ECLOSED ? 0 : status);
  if (!sf->cancelled && sf->cb)
    sf->cb(sf, status, sf->sent, sf->arg);
  sf_free_when_idle(sf);
}

static void sf_work(uv_work_t *w) {
  braid__sendfile_t *sf = BRAID__CONTAINER_OF(w, braid__sendfile_t, work);
  off_t off = (off_t)sf->off;
  ssize_t n;
  do
    n = sendfile(sf->sock_fd, sf->file_fd, &off, sf->asked);
  while (n < 0 && errno == EINTR);
  sf->result = n;
  sf->err = n < 0 ? errno : 0;
}

static void sf_on_writable(uv_poll_t *p, int status, int events) {
  braid__sendfile_t *sf = p->data;
  (void)status; /* an error shows in the next sendfile's result */
  (void)events;
  uv_poll_stop(p);
  sf->polling = false;
  sf_step(sf);
}

static void sf_wait_writable(braid__sendfile_t *sf) {
  int rc = 0;
  if (!sf->poll) {
    sf->poll = braid__malloc(sizeof(*sf->poll));
    if (!sf->poll) {
      sf_end(sf, BRAID_ENOMEM);
      return;
    }
    rc = uv_poll_init(sf->loop->uv, sf->poll, sf->sock_fd);
    if (rc) {
      braid__free(sf->poll);
      sf->poll = NULL;
      sf_end(sf, rc);
      return;
    }
    sf->poll->data = sf;
  }
  rc = uv_poll_start(sf->poll, UV_WRITABLE | UV_DISCONNECT, sf_on_writable);
  if (rc) {
    sf_end(sf, rc);
    return;
  }
  sf->polling = true;
}

static void sf_after_work(uv_work_t *w, int status) {
  braid__sendfile_t *sf = BRAID__CONTAINER_OF(w, braid__sendfile_t, work);
  sf->working = false;
  if (sf->cancelled) {
    sf_free_when_idle(sf);
    return;
  }
  if (status < 0) { /* uv_cancel'd: not done here, but handled as a failure */
    sf_end(sf, status);
    return;
  }
  if (sf->result > 0) {
    size_t n = (size_t)sf->result;
    sf->off += n;
    sf->left -= n;
    sf->sent += n;
    braid__conn_external_progress(sf->conn, n);
    if (sf->left == 0) {
      sf_end(sf, 0);
      return;
    }
    /* A short count means the socket filled up (or the file ends: the next call says). */
    if (n < sf->asked)
      sf_wait_writable(sf);
    else
      sf_step(sf);
    return;
  }
  if (sf->result == 0) {
    sf_end(sf, BRAID_EOF); /* the file is shorter than promised */
    return;
  }
  if (sf->err == EAGAIN || sf->err == EWOULDBLOCK) {
    sf_wait_writable(sf);
    return;
  }
  sf_end(sf, -sf->err);
}

static void sf_on_marker(braid_conn_t *conn, int status, void *arg) {
  braid__sendfile_t *sf = arg;
  (void)conn;
  sf->marker_pending = false;
  if (sf->cancelled) {
    sf_free_when_idle(sf);
    return;
  }
  if (status < 0) {
    sf_end(sf, BRAID_ECLOSED);
    return;
  }
  sf_step(sf);
}

/* Sends the next piece, after the queue has drained. */
static void sf_step(braid__sendfile_t *sf) {
  braid_conn_t *c = sf->conn;
  if (!braid_conn_is_open(c)) {
    sf_end(sf, BRAID_ECLOSED);
    return;
  }
  if (!braid__conn_write_idle(c)) {
    /* Bytes queued before the file (the header) go first: an empty write behind them. */
    int rc = braid_conn_write(c, "", 0, sf_on_marker, sf);
    if (rc) {
      sf_end(sf, rc == BRAID_ECLOSED ? rc : BRAID_ECLOSED);
      return;
    }
    sf->marker_pending = true;
    return;
  }
  if (sf->sock_fd < 0) {
    int fd = braid__conn_external_begin(c);
    if (fd < 0) {
      sf_end(sf, fd);
      return;
    }
    sf->sock_fd = fd;
  }
  sf->asked = sf->left < SENDFILE_CHUNK ? (size_t)sf->left : SENDFILE_CHUNK;
  int rc = uv_queue_work(sf->loop->uv, &sf->work, sf_work, sf_after_work);
  if (rc) {
    sf_end(sf, rc);
    return;
  }
  sf->working = true;
}

int braid__sendfile_start(braid__sendfile_t **out, braid_conn_t *c, int file_fd, uint64_t off,
                          uint64_t len, braid__sendfile_cb cb, void *arg) {
  if (!c || file_fd < 0 || !braid__conn_can_sendfile(c) || len == 0)
    return BRAID_EINVAL;
  braid__sendfile_t *sf = braid__calloc(1, sizeof(*sf));
  if (!sf)
    return BRAID_ENOMEM;
  sf->loop = braid_conn_loop(c);
  sf->conn = c;
  sf->sock_fd = -1;
  sf->file_fd = file_fd;
  sf->off = off;
  sf->left = len;
  sf->cb = cb;
  sf->arg = arg;
  braid__loop_ref(sf->loop);
  /* The first step only queues the marker, so the callback never runs from in here. It
   * completes once everything queued before it (the response's header) is written, or at
   * the next flush when nothing is. */
  int rc = braid_conn_write(c, "", 0, sf_on_marker, sf);
  if (rc) {
    braid__free(sf);
    braid__loop_unref(braid_conn_loop(c));
    return rc;
  }
  sf->marker_pending = true;
  *out = sf;
  return 0;
}

void braid__sendfile_cancel(braid__sendfile_t *sf) {
  if (!sf || sf->cancelled)
    return;
  sf->cancelled = true;
  if (sf->ended)
    return;
  if (sf->working)
    uv_cancel((uv_req_t *)&sf->work); /* not started yet: its completion comes at once */
  if (sf->polling) {
    uv_poll_stop(sf->poll);
    sf->polling = false;
  }
  braid_conn_t *c = sf->conn;
  sf->conn = NULL;
  if (c && sf->sock_fd >= 0)
    braid__conn_external_end(c, 0);
  sf->ended = true;
  sf_free_when_idle(sf);
}
