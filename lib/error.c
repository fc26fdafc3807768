#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *braid_strerror(int code) {
  switch (code) {
#define BRAID_ERR_MSG_(name, value, msg)                                                      \
  case value:                                                                                  \
    return msg;
    BRAID_ERRNO_MAP(BRAID_ERR_MSG_)
    BRAID_RESULT_MAP(BRAID_ERR_MSG_)
#undef BRAID_ERR_MSG_
  case 0:
    return "success";
  default:
    break;
  }
  if (code < 0 && code > -30000)
    return uv_strerror(code); /* "Unknown system error N" for codes libuv does not know */
  return "unknown error";
}

const char *braid_err_name(int code) {
  switch (code) {
#define BRAID_ERR_NAME_(name, value, msg)                                                     \
  case value:                                                                                  \
    return "BRAID_" #name;
    BRAID_ERRNO_MAP(BRAID_ERR_NAME_)
    BRAID_RESULT_MAP(BRAID_ERR_NAME_)
#undef BRAID_ERR_NAME_
  case 0:
    return "OK";
  default:
    break;
  }
  if (code < 0 && code > -30000)
    return uv_err_name(code);
  return "UNKNOWN";
}

/* ---- options errors ------------------------------------------------------------------- */

int braid__opts_fail(braid_opts_error_t *err, const char *field, const char *fmt, ...) {
  if (err) {
    snprintf(err->field, sizeof(err->field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
    va_end(ap);
  }
  return BRAID_EINVAL;
}

int braid__opts_nest(braid_opts_error_t *err, const char *prefix, int rc) {
  if (rc == 0 || !err)
    return rc;
  /* Built by hand, cut to fit: snprintf into a buffer of the same size trips
   * -Wformat-truncation (an error in -Werror builds). */
  char field[sizeof(err->field)];
  size_t p = strlen(prefix), f = strnlen(err->field, sizeof(err->field));
  if (p > sizeof(field) - 2)
    p = sizeof(field) - 2;
  memcpy(field, prefix, p);
  field[p] = '.';
  if (f > sizeof(field) - p - 2)
    f = sizeof(field) - p - 2;
  memcpy(field + p + 1, err->field, f);
  field[p + 1 + f] = '\0';
  memcpy(err->field, field, sizeof(field));
  return rc;
}

void braid__opts_ok(braid_opts_error_t *err) {
  if (err)
    err->field[0] = err->reason[0] = '\0';
}

void braid__opts_log(braid_loop_t *loop, const char *call, const braid_opts_error_t *err) {
  if (loop)
    braid__log(loop, BRAID_LOG_ERROR, "%s: option %s: %s", call, err->field, err->reason);
}
