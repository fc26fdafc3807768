#!/usr/bin/env bash
# Builds braid and runs the showcase on loopback: the echo server and client, then the
# key-value server and client comparing ping-pong, pipelined and batched requests.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh" build
build="$root/build/demo"
if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=false -Dbench=false >/dev/null
fi
ninja -C "$build" examples/echo_server examples/echo_client examples/kv_server \
  examples/kv_client >/dev/null

out=$(mktemp)
servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true; rm -f "$out"' EXIT

# start PROGRAM: runs an example server on an ephemeral port, sets $port and $pid.
start() {
  : >"$out"
  "$build/examples/$1" --host 127.0.0.1 --port 0 >"$out" &
  pid=$!
  servers+=("$pid")
  for _ in $(seq 100); do grep -q '^listening on' "$out" && break; sleep 0.05; done
  local line
  line=$(head -1 "$out")
  if [[ "$line" != "listening on "* ]]; then
    echo "$1 did not start" >&2
    exit 1
  fi
  echo "$1: $line"
  port=${line##*:}
}

# stop NAME PID: SIGINT, which drains; the status must be 0.
stop() {
  kill -INT "$2"
  local status=0
  wait "$2" || status=$?
  echo "$1 drained and exited with status $status"
  [[ $status -eq 0 ]]
}

echo "== 1. echo: braid's connections (coalesced writes, try-write first)"
start echo_server
echo "-- ping-pong: 1 connection, 20000 requests of 64 B"
"$build/examples/echo_client" --host 127.0.0.1 --port "$port" --conns 1 --requests 20000 --size 64
echo "-- pipelined: 50 connections, depth 16, 200000 requests of 1 KiB"
"$build/examples/echo_client" --host 127.0.0.1 --port "$port" --conns 50 --requests 200000 \
  --size 1024 --pipeline 16
stop echo_server "$pid"

echo
echo "== 2. key-value store: the same requests ping-pong, pipelined and batched (braid rpc)"
start kv_server
"$build/examples/kv_client" --host 127.0.0.1 --port "$port"
stop kv_server "$pid"
