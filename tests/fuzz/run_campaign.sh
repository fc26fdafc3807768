#!/usr/bin/env bash
# Runs one bounded libFuzzer campaign: run_campaign.sh FUZZER SEED_CORPUS WORK_CORPUS.
# New inputs land in WORK_CORPUS (in the build directory); a crash is written there too and
# fails the test (exit 1: libFuzzer's default 77 would read as "skipped" to meson). Time per target: BRAID_FUZZ_SECONDS (default 60).
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3
secs=${BRAID_FUZZ_SECONDS:-60}
mkdir -p "$work"
cd "$work"
exec "$fuzzer" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
  -print_final_stats=1 -error_exitcode=1 "$work" "$seeds"
