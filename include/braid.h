/* braid: the umbrella header. Include this, or only the module headers you use. */
#ifndef BRAID_H
#define BRAID_H

#include "braid/common.h"
#include "braid/error.h"
#include "braid/alloc.h"
#include "braid/loop.h"
#include "braid/blob.h"
#include "braid/stats.h"
#include "braid/hash.h"
#include "braid/sockopts.h"
#include "braid/ratelimit.h"
#include "braid/conn.h"
#include "braid/tls.h"
#include "braid/server.h"
#include "braid/dns.h"
#include "braid/client.h"
#include "braid/frame.h"
#include "braid/framer.h"
#include "braid/gzip.h"
#include "braid/rpc.h"
#include "braid/batch.h"
#include "braid/pool.h"
#include "braid/cache.h"
#include "braid/http.h"
#include "braid/http_client.h"
#include "braid/memcache.h"

#endif
