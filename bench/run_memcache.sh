#!/usr/bin/env bash
# The memcache benchmark (issue 14): starts 3 memcached servers on loopback, runs
# bench_memcache (braid and libmemcached, and the L1 hit cost) and bench_memcache_py.py
# (pymemcache) against them, then stops them. Numbers: bench/RESULTS.md.
# Usage: run_memcache.sh path/to/bench_memcache [--quick] [--json-dir DIR]
#   --quick: tiny cells (a smoke test that everything runs and reads back what it stored).
set -euo pipefail
bench=$1; shift
quick=0 jsondir=
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --json-dir) jsondir=$2; shift ;;
  esac
  shift
done
command -v memcached >/dev/null || { echo "run_memcache.sh: memcached is not installed" >&2; exit 77; }
py=/usr/bin/python3
mpids=() ports=()
cleanup() { { for p in "${mpids[@]}"; do kill -9 "$p"; done; wait; } 2>/dev/null || true; }
trap cleanup EXIT
user=(); [[ $(id -u) -eq 0 ]] && user=(-u root)
while [[ ${#ports[@]} -lt 3 ]]; do
  port=$((20000 + RANDOM % 40000))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
  memcached -l 127.0.0.1 -p "$port" -U 0 -m 256 -t 1 "${user[@]}" &
  pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { mpids+=("$pid"); ports+=("$port"); break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
done
servers=$(IFS=,; echo "${ports[*]}")
if [[ $quick -eq 1 ]]; then
  args=(--rounds 50 --single 500 --hits 20000) pyargs=(--rounds 20)
else
  args=(--rounds 10000 --single 100000 --hits 5000000) pyargs=(--rounds 10000)
fi
[[ -n $jsondir ]] && args+=(--json "$jsondir/memcache.json") pyargs+=(--json "$jsondir/memcache_py.json")
"$bench" "$servers" "${args[@]}"
if "$py" -c 'import pymemcache' 2>/dev/null; then
  "$py" "$(dirname "$0")/bench_memcache_py.py" "$servers" "${pyargs[@]}"
else
  echo "pymemcache not installed for $py: its cell is skipped"
fi
