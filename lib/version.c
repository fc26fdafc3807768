#include "internal.h"

const char *braid_version_string(void) {
  return BRAID_VERSION_STRING;
}

unsigned braid_version(void) {
  return (BRAID_VERSION_MAJOR << 16) | (BRAID_VERSION_MINOR << 8) | BRAID_VERSION_PATCH;
}
