#!/usr/bin/env bash
# Runs kv_server on an ephemeral port, kv_client against it, then stops the server with
# SIGTERM while clients are connected (kv_drain.py checks the GOAWAY drain). Passes only if
# the client verified every value, the drain lost nothing, and both exited 0. Then a full
# store, and a hostile client (kv_abuse.py) against a server of its own.
# Usage: run_kv.sh path/to/kv_server path/to/kv_client path/to/PROTOCOL.md
set -euo pipefail
server=$1 client=$2 protocol_md=$3
out=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
"$server" --port 0 --workers 2 >"$out" &
pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$out" && break
  sleep 0.05
done
line=$(head -n1 "$out")
[[ "$line" =~ ^listening\ on\ .*:([0-9]+)$ ]] ||
  { echo "no 'listening on' line: '$line'" >&2; exit 1; }
port=${BASH_REMATCH[1]}
timeout 60 "$client" --port "$port" --requests 5000
# The kv test vectors of docs/PROTOCOL.md, byte for byte, against this server.
timeout 30 python3 "$(dirname "$0")/kv_vectors.py" "$protocol_md" "$port"
# SIGTERM with clients connected: the drain sends GOAWAY, answers what it took, loses nothing.
timeout 30 python3 "$(dirname "$0")/kv_drain.py" "$port" "$pid"
status=0
wait "$pid" || status=$?
[[ $status -eq 0 ]] || { echo "kv_server exited $status after SIGTERM" >&2; exit 1; }
[[ $(wc -l <"$out") -eq 1 ]] || { echo "kv_server printed more than one line" >&2; exit 1; }

# A bounded store refuses what does not fit, and the client reports it and exits 1.
"$server" --port 0 --max-entries 100 >"$out" &
pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$out" && break
  sleep 0.05
done
[[ $(head -n1 "$out") =~ :([0-9]+)$ ]] || { echo "second server did not start" >&2; exit 1; }
status=0
port=${BASH_REMATCH[1]}
errs=$(timeout 60 "$client" --port "$port" --requests 1000 2>&1 >/dev/null) || status=$?
kill -TERM "$pid"
wait "$pid"
[[ $status -eq 1 ]] ||
  { echo "kv_client exited $status against a full store, want 1" >&2; exit 1; }
grep -q 'OVERLOADED: store full: max entries reached' <<<"$errs" ||
  { echo "no store-full error from kv_client: $errs" >&2; exit 1; }

# What a hostile client tries (kv_abuse.py): the server must keep its bounds, on a server of
# its own so the memory and CPU it reads in /proc are this test's alone. Under ASan, freed
# memory waits in a quarantine of up to 256 MB, which its RSS bound would count: keep it small.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16" "$server" --port 0 >"$out" &
pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$out" && break
  sleep 0.05
done
[[ $(head -n1 "$out") =~ :([0-9]+)$ ]] || { echo "third server did not start" >&2; exit 1; }
port=${BASH_REMATCH[1]}
timeout 90 python3 "$(dirname "$0")/kv_abuse.py" "$port" "$pid"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[[ $status -eq 0 ]] || { echo "kv_server exited $status after kv_abuse.py" >&2; exit 1; }
echo "kv example: ok"
