#!/usr/bin/env bash
# A memo fleet on loopback: 3 memcached servers and 4 memo_fleet processes. All four ask for
# the same cold keys at the same moment; the load log shows each key computed once for the
# whole fleet. Then one memcached is killed, and a second round of cold keys is still answered
# in full by every process (the dead server's keys go to the other two).
# Usage: run_fleet.sh path/to/memo_fleet [keys]   (needs memcached: scripts/deps.sh test)
set -euo pipefail
fleet=$1 keys=${2:-20}
command -v memcached >/dev/null || { echo "run_fleet.sh: memcached is not installed" >&2; exit 77; }
dir=$(mktemp -d)
pids=() mpids=()
cleanup() {
  { for p in "${pids[@]}" "${mpids[@]}"; do kill -9 "$p"; done; wait; } 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Three memcached servers on free ports (-U 0: no UDP). A port found free can be taken
# before memcached binds it: then memcached exits, and another port is tried.
ports=()
user=(); [[ $(id -u) -eq 0 ]] && user=(-u root)
start_memcached() {
  for _ in $(seq 20); do
    local port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    memcached -l 127.0.0.1 -p "$port" -U 0 -m 64 -t 1 "${user[@]}" &
    local pid=$!
    for _ in $(seq 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        mpids+=("$pid") ports+=("$port")
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null || true
  done
  echo "run_fleet.sh: could not start memcached" >&2
  exit 1
}
for i in 0 1 2; do start_memcached; done
servers=$(IFS=,; echo "${ports[*]}")
echo "memcached on ports $servers"

now=$(date +%s%3N)
round1=$((now + 1000)) round2=$((now + 2500))
for id in 1 2 3 4; do
  "$fleet" --id "$id" --servers "$servers" --keys "$keys" --round1-at "$round1" \
    --round2-at "$round2" --load-log "$dir/loads" >"$dir/out.$id" 2>&1 &
  pids+=($!)
done

# Between the rounds: kill the second memcached.
wait_ms=$((round1 + 900 - $(date +%s%3N)))
((wait_ms > 0)) && sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))"
{ kill -9 "${mpids[1]}"; wait "${mpids[1]}"; } 2>/dev/null || true
echo "killed the memcached on port ${ports[1]}"

status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
cat "$dir"/out.*
for round in 1 2; do
  counts=$(grep "^r$round:" "$dir/loads" | cut -d' ' -f1 | sort | uniq -c | awk '{print $1}' |
           sort -n | uniq -c | awk '{printf "%s key(s) loaded %s time(s); ", $1, $2}')
  distinct=$(grep -c "^r$round:" "$dir/loads" || true)
  echo "round $round: $distinct loads for $keys keys across 4 processes: $counts"
done
# Round 1 (every server up): exactly one load per key for the whole fleet.
r1=$(grep -c '^r1:' "$dir/loads" || true)
[[ $r1 -eq $keys ]] || { echo "round 1: $r1 loads for $keys keys, want $keys" >&2; status=1; }
# Round 2 (one server killed): every process still answered every key.
for id in 1 2 3 4; do
  grep -q "round 2: answered $keys/$keys, errors 0" "$dir/out.$id" ||
    { echo "process $id did not answer every key in round 2" >&2; status=1; }
done
exit $status
