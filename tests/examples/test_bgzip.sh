#!/usr/bin/env bash
# examples suite: bgzip round trips through the system gzip, both ways, and refuses a
# corrupt stream with a non-zero exit. Usage: test_bgzip.sh PATH_TO_BGZIP
set -euo pipefail
bgzip=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A few hundred KiB of real text from the machine, plus some binary.
cat /usr/include/stdio.h /usr/include/stdlib.h /usr/include/string.h /usr/include/zlib.h \
  > "$tmp/in"
head -c 100000 /dev/urandom >> "$tmp/in"
"$bgzip" < "$tmp/in" | gzip -dc | cmp - "$tmp/in"
"$bgzip" -1 < "$tmp/in" | gzip -dc | cmp - "$tmp/in"
gzip -c < "$tmp/in" | "$bgzip" -d | cmp - "$tmp/in"
gzip -9c < "$tmp/in" > "$tmp/in.gz"
# Flip a byte in the middle: must fail, naming the braid error.
python3 - "$tmp/in.gz" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0xff
open(p + '.bad', 'wb').write(b)
PY
if "$bgzip" -d < "$tmp/in.gz.bad" > /dev/null 2> "$tmp/err"; then
  echo "bgzip -d accepted a corrupt stream" >&2
  exit 1
fi
grep -q 'BRAID_E' "$tmp/err" || { echo "no braid error name in: $(cat "$tmp/err")" >&2; exit 1; }
echo "ok"
