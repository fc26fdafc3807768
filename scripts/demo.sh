#!/usr/bin/env bash
# Builds braid and runs the playbook on loopback: the same workload as rows, each adding one
# technique (naive, keep-alive pool, pipelining, batching, gzip, memoization, worker threads,
# HTTP), with requests/s, p50/p99 latency, bytes on the wire and the gain over naive, as
# measured on this machine. About a minute; arguments go to examples/playbook (--quick for a
# few seconds, --json for machines, --seconds S per row).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh" build
build="$root/build/demo"
if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=false -Dbench=false >/dev/null
fi
ninja -C "$build" examples/playbook >/dev/null
exec "$build/examples/playbook" "$@"
