#!/usr/bin/env python3
"""A consumer compiling with -std=c11 and no feature macro: including any public header must
fail, and the first error must be braid's, naming the fix (not one deep inside <uv.h>). With
-D_POSIX_C_SOURCE=200809L every header must compile.

Usage: check_strict_c11.py INCLUDE_DIR [EXTRA_CFLAGS...]; the compiler comes from $CC (cc)."""
import os
import shlex
import subprocess
import sys
import tempfile

inc = sys.argv[1]
extra = sys.argv[2:]
cc = shlex.split(os.environ.get('CC', 'cc'))
try:
    extra += shlex.split(subprocess.run(['pkg-config', '--cflags', 'libuv'], capture_output=True,
                                        text=True).stdout)
except OSError:
    pass

headers = ['braid.h'] + ['braid/' + h for h in sorted(os.listdir(os.path.join(inc, 'braid')))
                         if h.endswith('.h')]
failed = 0
with tempfile.TemporaryDirectory() as d:
    for h in headers:
        src = os.path.join(d, 'use.c')
        with open(src, 'w') as f:
            f.write('#include <%s>\nint main(void) { return 0; }\n' % h)
        base = cc + ['-std=c11', '-fsyntax-only', '-I', inc] + extra + [src]
        r = subprocess.run(base, capture_output=True, text=True)
        errors = [l for l in r.stderr.splitlines() if 'error:' in l]
        if r.returncode == 0 or not errors or '_POSIX_C_SOURCE' not in errors[0]:
            print('FAIL %s: -std=c11 without a feature macro: first error is not braid\'s: %s'
                  % (h, errors[0] if errors else '(compiled)'))
            failed += 1
        r = subprocess.run(base[:-1] + ['-D_POSIX_C_SOURCE=200809L', src], capture_output=True,
                           text=True)
        if r.returncode != 0:
            print('FAIL %s: does not compile with -std=c11 -D_POSIX_C_SOURCE=200809L:\n%s'
                  % (h, r.stderr))
            failed += 1
print('strict c11: %d headers, %d failures' % (len(headers), failed))
sys.exit(1 if failed else 0)
