/* braid: common definitions shared by every public header.
 *
 * braid is an embeddable async networking library on libuv. Every public symbol starts with
 * braid_ / BRAID_. Functions return 0 or a negative error code (see braid/error.h) unless
 * their comment says otherwise. */
#ifndef BRAID_COMMON_H
#define BRAID_COMMON_H

#include <stddef.h>
#include <stdint.h>

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
