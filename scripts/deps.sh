#!/usr/bin/env bash
# Installs what braid needs on Debian/Ubuntu, only what is missing: quiet and quick when
# everything is present. Usage: scripts/deps.sh [build|test|bench]...  (default: build)
set -euo pipefail

# node-llhttp: llhttp's generated C sources, compiled into braid's http layer (lib/meson.build).
# libc-ares-dev: c-ares, which resolves names on the loop (lib/dns.c).
# libssl-dev: OpenSSL 3 for TLS (the meson feature `tls`); openssl: the test suite's own
# throwaway CA and certificates, and its s_client/s_server peers.
want=(meson ninja-build pkg-config gcc libuv1-dev zlib1g-dev libdeflate-dev node-llhttp
      libc-ares-dev libssl-dev)
for set in "${@:-build}"; do
  case "$set" in
    build) ;;
    test) want+=(libcmocka-dev clang libclang-rt-14-dev curl python3 gzip redis-server
                 iproute2 procps openssl nginx memcached
                 python3-pymemcache libmemcached-dev) ;;
    bench) want+=(libevent-dev procps iproute2 python3 util-linux wrk nginx python3-tornado
                  python3-aiohttp memcached python3-pymemcache libmemcached-dev
                  gnuplot-nox) ;;
    *) echo "deps.sh: unknown set '$set' (build, test, bench)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}" >&2
# env, not export: sudo resets the environment, and a package that asks a debconf question
# would otherwise wait for an answer. apt's chatter goes to a log, shown only on failure.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq)
log=$(mktemp)
if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "deps.sh: apt-get failed installing ${missing[*]}" >&2
  exit 1
fi
rm -f "$log"
