#!/usr/bin/env bash
# Consumer test 2 of 3, "vendored": builds a small downstream meson project
# (tests/consumers/vendored/) that has braid under its subprojects/ and gets it with
# dependency('braid'), offline (--wrap-mode=nodownload). Checks that braid built none of its
# own tests, examples or benchmarks as a subproject, and that its shared library still hides
# everything but the public braid_* API.
#
# Usage: vendored.sh MESON SOURCE_DIR WORK_DIR VERSION   (run by meson test)
set -euo pipefail
meson=$1 src=$2 work=$3 version=$4

rm -rf "$work"
mkdir -p "$work/project/subprojects"
cp "$src/tests/consumers/vendored/meson.build" "$src/tests/consumers/vendored/meson_options.txt" \
  "$src/tests/consumers/consumer.c" "$work/project/"
# A link to the source tree stands in for a copy (or a git submodule): meson builds the
# subproject out of tree, in the consumer's build directory, so the tree stays untouched.
ln -s "$src" "$work/project/subprojects/braid"

# --force-fallback-for: use the vendored copy even if a braid is installed on this machine.
$meson setup "$work/build" "$work/project" --wrap-mode=nodownload --force-fallback-for=braid \
  -Dbraid_version="$version" >"$work/setup.log" 2>&1 ||
  { cat "$work/setup.log" >&2; exit 1; }
$meson compile -C "$work/build" >"$work/compile.log" 2>&1 ||
  { tail -40 "$work/compile.log" >&2; exit 1; }
$meson test -C "$work/build" --print-errorlogs >"$work/test.log" 2>&1 ||
  { cat "$work/test.log" "$work/build/meson-logs/testlog.txt" >&2; exit 1; }

sub="$work/build/subprojects/braid"
for d in tests examples bench; do
  [[ ! -e "$sub/$d" ]] || { echo "braid built its $d/ as a subproject" >&2; exit 1; }
done
lib="$sub/lib/libbraid.so"
[[ -f "$lib" ]] || { echo "no $lib" >&2; exit 1; }
bad=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -vE '^braid_[a-z0-9]' || true)
if [[ -n "$bad" ]]; then
  echo "vendored libbraid.so exports symbols outside the public API:" >&2
  echo "$bad" | head -20 >&2
  exit 1
fi
rm -rf "$work"
