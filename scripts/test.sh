#!/usr/bin/env bash
# Runs braid's whole test suite: a normal build (unit, integration, examples, consumers),
# the same suites under ASan+UBSan, and the slow suite (fuzz replay campaigns, soaks) within
# a time budget (BRAID_SLOW_BUDGET_S, default 600 s). Installs what is missing first.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh" build test || exit 1
cd "$root"
budget=${BRAID_SLOW_BUDGET_S:-600}
passed=0 failed=0 skipped=0

count() { # count BUILD_DIR: adds the results of the last meson test run in BUILD_DIR
  local log="$1/meson-logs/testlog.json"
  [[ -f "$log" ]] || return 0
  read -r p f s < <(python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

setup() { # setup DIR ARGS...
  local dir=$1; shift
  if [[ -f "$dir/build.ninja" ]]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
  else
    meson setup "$dir" "$@" >/dev/null || return 1
  fi
}

run_suites() { # run_suites DIR [meson test args...]
  local dir=$1; shift
  ninja -C "$dir" >/dev/null || { echo "build failed in $dir" >&2; ninja -C "$dir" | tail -40; failed=$((failed + 1)); return; }
  # A run that dies before writing its log must not count the previous run's results.
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --no-rebuild --print-errorlogs --no-stdsplit "$@" | grep -vE '^ *[0-9]+/[0-9]+ .* OK '
  if [[ ! -f "$dir/meson-logs/testlog.json" ]]; then
    echo "meson test did not run in $dir" >&2
    failed=$((failed + 1))
  fi
  count "$dir"
}

echo "== build/test: debugoptimized build, all default suites"
setup build/test -Dbuildtype=debugoptimized -Dfuzz=false && \
  run_suites build/test --no-suite slow || failed=$((failed + 1))

echo "== build/asan: the same under ASan+UBSan"
setup build/asan -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
  -Dbench=false && run_suites build/asan --no-suite slow --no-suite consumers \
  || failed=$((failed + 1))

echo "== build/test: slow suite (budget ${budget}s)"
if meson test -C build/test --list --suite slow >/dev/null 2>&1 && \
   [[ -n "$(meson test -C build/test --list --suite slow 2>/dev/null)" ]]; then
  BRAID_SLOW_BUDGET_S=$budget run_suites build/test --suite slow
fi

echo "== build/fuzz: libFuzzer campaigns (clang, BRAID_FUZZ_SECONDS=${BRAID_FUZZ_SECONDS:-60} each)"
if command -v clang >/dev/null; then
  CC=clang setup build/fuzz -Dbuildtype=debugoptimized -Dfuzz=true -Dexamples=false \
    -Dbench=false && run_suites build/fuzz --suite campaign || failed=$((failed + 1))
fi

echo
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[[ $failed -eq 0 ]]
