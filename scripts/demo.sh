#!/usr/bin/env bash
# Builds braid and runs the showcase: the echo server and the echo client on loopback.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh" build
build="$root/build/demo"
if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" "$root" --buildtype=release -Dtests=false -Dbench=false >/dev/null
fi
ninja -C "$build" examples/echo_server examples/echo_client >/dev/null

out=$(mktemp)
"$build/examples/echo_server" --host 127.0.0.1 --port 0 >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q '^listening on' "$out" && break; sleep 0.05; done
line=$(head -1 "$out")
if [[ "$line" != "listening on "* ]]; then
  echo "echo_server did not start" >&2
  exit 1
fi
echo "server: $line"
port=${line##*:}

echo "== ping-pong: 1 connection, 20000 requests of 64 B"
"$build/examples/echo_client" --host 127.0.0.1 --port "$port" --conns 1 --requests 20000 --size 64
echo "== pipelined: 50 connections, depth 16, 200000 requests of 1 KiB"
"$build/examples/echo_client" --host 127.0.0.1 --port "$port" --conns 50 --requests 200000 \
  --size 1024 --pipeline 16
kill -INT $server
status=0
wait $server || status=$?
echo "server drained and exited with status $status"
exit $status
