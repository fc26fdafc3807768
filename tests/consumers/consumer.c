/* A program that uses braid the way a downstream project does: only <braid.h>, compiled and
 * linked by a build that knows nothing of braid's source tree. tests/consumers/installed.sh
 * builds it against an installed braid (pkg-config), tests/consumers/vendored.sh inside a
 * meson project that has braid under subprojects/. Exits 0 when every check passes.
 *
 * Usage: consumer [EXPECTED_VERSION] */

/* braid's headers include <uv.h>, which needs POSIX types (pthread_rwlock_t, ...) that a
 * strict -std=c11 hides. Ask for them before any system header, as any C11 program on libuv
 * must (or compile with -std=gnu11). */
#define _POSIX_C_SOURCE 200809L

#include <braid.h>

#include <stdio.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "consumer: FAILED: %s\n", what);
    failures++;
  }
}

int main(int argc, char **argv) {
  const char *version = braid_version_string();
  check(version != NULL && strlen(version) >= 5, "braid_version_string() looks like X.Y.Z");
  if (argc > 1)
    check(strcmp(version, argv[1]) == 0, "version matches the build's");
  check(braid_version() ==
            ((BRAID_VERSION_MAJOR << 16) | (BRAID_VERSION_MINOR << 8) | BRAID_VERSION_PATCH),
        "braid_version() matches the header's BRAID_VERSION_*");

  /* Errors: braid's own codes and libuv's both have names and messages. */
  check(strcmp(braid_err_name(BRAID_ETOOBIG), "BRAID_ETOOBIG") == 0,
        "braid_err_name(BRAID_ETOOBIG)");
  check(strcmp(braid_err_name(BRAID_EINVAL), "EINVAL") == 0, "braid_err_name(BRAID_EINVAL)");
  check(strlen(braid_strerror(UV_ECONNREFUSED)) > 0, "braid_strerror(UV_ECONNREFUSED)");
  check(braid_loop_new(NULL, NULL) == BRAID_EINVAL, "braid_loop_new(NULL) is BRAID_EINVAL");

  /* A loop braid owns, used and closed. */
  braid_loop_t *loop = NULL;
  check(braid_loop_new(&loop, NULL) == 0 && loop != NULL, "braid_loop_new(&loop, NULL)");
  if (loop) {
    check(braid_loop_uv(loop) != NULL, "braid_loop_uv()");
    check(braid_loop_run(loop, UV_RUN_NOWAIT) == 0, "braid_loop_run(NOWAIT) on an idle loop");
    check(braid_loop_close(loop) == 0, "braid_loop_close()");
  }

  /* A loop on a libuv loop the program owns. */
  uv_loop_t uv;
  check(uv_loop_init(&uv) == 0, "uv_loop_init()");
  loop = NULL;
  check(braid_loop_new(&loop, &uv) == 0, "braid_loop_new(&loop, &uv)");
  if (loop) {
    check(braid_loop_uv(loop) == &uv, "braid_loop_uv() is the borrowed loop");
    check(braid_loop_close(loop) == 0, "braid_loop_close() on a borrowed loop");
    uv_run(&uv, UV_RUN_DEFAULT);
  }
  check(uv_loop_close(&uv) == 0, "uv_loop_close() after braid let go");

  if (failures == 0)
    printf("consumer: braid %s OK\n", version);
  return failures == 0 ? 0 : 1;
}
