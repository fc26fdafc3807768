#!/usr/bin/env bash
# slow suite: a short libFuzzer campaign. New inputs go to a scratch directory; the committed
# corpus is only read. Usage: run_fuzz.sh FUZZER CORPUS_DIR SECONDS
set -euo pipefail
fuzzer=$1 corpus=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$work" "$corpus"
