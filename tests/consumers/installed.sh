#!/usr/bin/env bash
# Consumer test 1 of 3, "installed": installs the current build into a temporary DESTDIR,
# then compiles tests/consumers/consumer.c with nothing but `pkg-config --cflags --libs braid`
# and runs it against the installed shared library. Also checks what the install contains
# (headers, braid.pc) and that libbraid.so exports braid_* symbols and nothing else.
#
# Usage: installed.sh MESON BUILD_DIR SOURCE_DIR WORK_DIR VERSION [SANITIZE]
# (run by meson test; SANITIZE is the build's b_sanitize, so a sanitized libbraid.so gets a
# consumer compiled with the same runtime)
set -euo pipefail
meson=$1 build=$2 src=$3 work=$4 version=$5 sanitize=${6:-none}
cc=${CC:-cc}
san_flags=()
[[ "$sanitize" == none || -z "$sanitize" ]] || san_flags=("-fsanitize=$sanitize")
die() { echo "installed.sh: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"
dest="$work/destdir"
# --no-rebuild: meson test already built everything, and a rebuild from inside a test run
# would race the other tests.
$meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >"$work/install.log"

pc=$(find "$dest" -name braid.pc -path '*/pkgconfig/*' | head -1)
[[ -n "$pc" ]] || { echo "no braid.pc installed" >&2; exit 1; }
inc=$(find "$dest" -name braid.h -not -path '*/braid/*' | head -1)
[[ -n "$inc" ]] || { echo "no braid.h installed" >&2; exit 1; }
incdir=$(dirname "$inc")
for h in "$src"/include/braid/*.h; do
  [[ -f "$incdir/braid/$(basename "$h")" ]] || die "missing include/braid/$(basename "$h")"
done
lib=$(find "$dest" -name 'libbraid.so' | head -1)
[[ -n "$lib" ]] || { echo "no libbraid.so installed" >&2; exit 1; }
[[ -n "$(find "$dest" -name 'libbraid.a' | head -1)" ]] || die "no libbraid.a installed"

# Only the public API is exported: every defined dynamic symbol is braid_<name>, none is an
# internal braid__<name>, and nothing unprefixed leaks.
bad=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -vE '^braid_[a-z0-9]' || true)
internal=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -E '^braid__' || true)
if [[ -n "$bad$internal" ]]; then
  echo "libbraid.so exports symbols outside the public API:" >&2
  echo "$bad$internal" | head -20 >&2
  exit 1
fi
# Every exported symbol is declared in a public header (and so documented there).
for sym in $(nm -D --defined-only "$lib" | awk '{print $NF}'); do
  grep -qw "$sym" "$incdir/braid.h" "$incdir"/braid/*.h ||
    { echo "exported $sym is not declared in an installed header" >&2; exit 1; }
done

# The pkg-config file was written for the real prefix; PKG_CONFIG_SYSROOT_DIR maps its paths
# into the DESTDIR, which is how a staged install is consumed.
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs braid)
# $cc unquoted: it may be a command with arguments ("ccache cc"); meson passes its own.
$cc -std=c11 -Wall -Wextra -Werror "${san_flags[@]}" "$src/tests/consumers/consumer.c" \
  -o "$work/consumer" $flags
LD_LIBRARY_PATH=$(dirname "$lib") "$work/consumer" "$version"

# The program must have run against the installed copy, not the build tree's.
# (ldd's output goes to a variable first: grep -q would stop reading early, and the SIGPIPE
# ldd then gets fails the pipeline under pipefail.)
loaded=$(LD_LIBRARY_PATH=$(dirname "$lib") ldd "$work/consumer")
grep -q "$dest.*libbraid" <<<"$loaded" ||
  die "consumer did not load the installed libbraid.so:"$'\n'"$loaded"
rm -rf "$work"
