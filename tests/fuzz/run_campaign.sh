#!/usr/bin/env bash
# Runs one bounded libFuzzer campaign: run_campaign.sh FUZZER SEED_CORPUS WORK_CORPUS.
# New inputs land in WORK_CORPUS (in the build directory); a crash is written there too and
# fails the test (exit 1: libFuzzer's default 77 would read as "skipped" to meson). Time per
# target: BRAID_FUZZ_SECONDS (default 60). The seed is fixed (BRAID_FUZZ_SEED, default 1) so
# that CI replays the path a longer local run with the same seed has already walked, and a
# red CI is reproducible; set BRAID_FUZZ_SEED=0 for a random seed when hunting.
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3
secs=${BRAID_FUZZ_SECONDS:-60}
seed=${BRAID_FUZZ_SEED:-1}
mkdir -p "$work"
cd "$work"
exec "$fuzzer" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
  -seed="$seed" -print_final_stats=1 -error_exitcode=1 "$work" "$seeds"
