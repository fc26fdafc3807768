#include "internal.h"

const char *braid_strerror(int code) {
  switch (code) {
#define BRAID_ERR_MSG_(name, value, msg)                                                      \
  case value:                                                                                  \
    return msg;
    BRAID_ERRNO_MAP(BRAID_ERR_MSG_)
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
