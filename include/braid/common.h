/* braid: common definitions shared by every public header.
 *
 * braid is an embeddable async networking library on libuv. Every public symbol starts with
 * braid_ / BRAID_. Functions return 0 or a negative error code (see braid/error.h) unless
 * their comment says otherwise. */
#ifndef BRAID_COMMON_H
#define BRAID_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* braid's headers include <uv.h>, which needs POSIX declarations (pthread types, struct
 * addrinfo, ...) that a strict C mode (-std=c11) hides on glibc. Stop here with the fix, not
 * deep inside libuv's headers. (<stdint.h> above has pulled in glibc's <features.h>, which
 * defines _POSIX_C_SOURCE whenever POSIX is visible.) Define BRAID_NO_FEATURE_CHECK to skip
 * the check. */
#if defined(__linux__) && defined(__STRICT_ANSI__) && !defined(_POSIX_C_SOURCE) &&                 \
    !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE) && !defined(_XOPEN_SOURCE) &&               \
    !defined(BRAID_NO_FEATURE_CHECK)
#error                                                                                             \
    "braid: strict -std=c11 hides the POSIX declarations <uv.h> needs: compile with -D_POSIX_C_SOURCE=200809L (or -D_GNU_SOURCE), or #define one of them before the first #include, or use -std=gnu11"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BRAID_BUILDING) && defined(__GNUC__)
#define BRAID_EXTERN __attribute__((visibility("default")))
#else
#define BRAID_EXTERN
#endif

#define BRAID_VERSION_MAJOR 0
#define BRAID_VERSION_MINOR 2
#define BRAID_VERSION_PATCH 0

/* Returns the library's version as "MAJOR.MINOR.PATCH", e.g. "0.2.0". The string is static. */
BRAID_EXTERN const char *braid_version_string(void);

/* Returns the library's version as (MAJOR << 16) | (MINOR << 8) | PATCH. */
BRAID_EXTERN unsigned braid_version(void);

#ifdef __cplusplus
}
#endif
#endif
