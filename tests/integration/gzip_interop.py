#!/usr/bin/env python3
"""Interop of braid's gzip/zlib/raw deflate with the system gzip and python3's gzip/zlib,
through examples/bgzip (the streaming API): braid writes -> they read, they write -> braid
reads (multi-member files, header fields), and every failure exits non-zero with the braid
error name. Usage: gzip_interop.py PATH_TO_BGZIP"""
import gzip
import glob
import os
import random
import subprocess
import sys
import tempfile
import zlib

BGZIP = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def bgzip(args, data):
    p = subprocess.run([BGZIP] + args, input=data, capture_output=True, timeout=120)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def system_gzip(args, data):
    p = subprocess.run(["gzip"] + args, input=data, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def corpus():
    rnd = random.Random(5)
    text = b""
    for path in sorted(glob.glob("/usr/include/*.h")):
        with open(path, "rb") as f:
            text += f.read()
        if len(text) > 1_500_000:
            break
    return {
        "empty": b"",
        "one": b"x",
        "1k": text[:1024],
        "text": text,
        "random": rnd.randbytes(200_000),
        "zeros": bytes(300_000),
    }


def unraw(z):
    d = zlib.decompressobj(wbits=-15)
    out = d.decompress(z) + d.flush()
    assert d.eof and not d.unused_data
    return out


def main():
    data = corpus()
    # braid writes, they read.
    for name, d in data.items():
        for level in (1, 6, 9):
            rc, z, err = bgzip(["-%d" % level], d)
            check(rc == 0, "bgzip -%d %s: %s" % (level, name, err))
            check(system_gzip(["-dc"], z) == d, "gzip -dc of braid's %s -%d" % (name, level))
            check(gzip.decompress(z) == d, "python gzip of braid's %s -%d" % (name, level))
        rc, z, err = bgzip(["--format", "zlib"], d)
        check(rc == 0 and zlib.decompress(z) == d, "python zlib of braid's %s" % name)
        rc, z, err = bgzip(["--format", "raw"], d)
        check(rc == 0 and unraw(z) == d, "python raw deflate of braid's %s" % name)

    # They write, braid reads.
    for name, d in data.items():
        for level in (1, 6, 9):
            z = system_gzip(["-c", "-%d" % level], d)
            rc, out, err = bgzip(["-d"], z)
            check(rc == 0 and out == d, "bgzip -d of gzip -%d %s: %s" % (level, name, err))
            z = gzip.compress(d, compresslevel=level)
            rc, out, err = bgzip(["-d"], z)
            check(rc == 0 and out == d, "bgzip -d of python gzip %s -%d" % (name, level))
            z = zlib.compress(d, level)
            rc, out, err = bgzip(["-d", "--format", "zlib"], z)
            check(rc == 0 and out == d, "bgzip -d of python zlib %s -%d" % (name, level))
            c = zlib.compressobj(level, wbits=-15)
            z = c.compress(d) + c.flush()
            rc, out, err = bgzip(["-d", "--format", "raw"], z)
            check(rc == 0 and out == d, "bgzip -d of python raw %s -%d" % (name, level))

    with tempfile.TemporaryDirectory() as tmp:
        # gzip of a named file sets FNAME and MTIME; python can add FNAME too.
        path = os.path.join(tmp, "named.txt")
        with open(path, "wb") as f:
            f.write(data["text"])
        subprocess.run(["gzip", "-k", "-f", path], check=True)
        with open(path + ".gz", "rb") as f:
            z = f.read()
        check(z[3] & 0x08, "gzip of a file sets FNAME")
        rc, out, err = bgzip(["-d"], z)
        check(rc == 0 and out == data["text"], "bgzip -d of gzip file with FNAME: " + err)
        # Multi-member: gzip's and python's members concatenated, and braid's own.
        parts = [data["1k"], data["text"], data["empty"], data["random"]]
        z = (system_gzip(["-c"], parts[0]) + gzip.compress(parts[1]) +
             system_gzip(["-c"], parts[2]) + gzip.compress(parts[3]))
        rc, out, err = bgzip(["-d"], z)
        check(rc == 0 and out == b"".join(parts), "bgzip -d of 4 members: " + err)
        braid_members = b"".join(bgzip([], p)[1] for p in parts)
        check(system_gzip(["-dc"], braid_members) == b"".join(parts), "gzip -dc of braid members")
        check(gzip.decompress(braid_members) == b"".join(parts), "python of braid members")

    # Failures: never exit 0, always name the braid error.
    z = gzip.compress(data["text"])

    def expect_fail(args, payload, code, what):
        rc, out, err = bgzip(args, payload)
        check(rc != 0, what + ": exit 0")
        check(code in err, what + ": expected %s, got %r" % (code, err))
        return out

    bad = bytearray(z)
    bad[-8] ^= 1
    expect_fail(["-d"], bytes(bad), "BRAID_EBADCRC", "bad CRC")
    bad = bytearray(z)
    bad[-1] ^= 1
    expect_fail(["-d"], bytes(bad), "BRAID_EBADSIZE", "bad ISIZE")
    bad = bytearray(z)
    bad[len(bad) // 2] ^= 0xff
    expect_fail(["-d"], bytes(bad), "BRAID_E", "corrupt body")
    for cut in (1, 5, 10, len(z) // 2, len(z) - 4, len(z) - 1):
        expect_fail(["-d"], z[:cut], "BRAID_ETRUNCATED", "truncated at %d" % cut)
    expect_fail(["-d"], b"", "BRAID_ETRUNCATED", "empty input")
    expect_fail(["-d"], z + b"garbage", "BRAID_ETRAILING", "trailing garbage")
    bad = bytearray(z)
    bad[2] = 9
    expect_fail(["-d"], bytes(bad), "BRAID_EBADMETHOD", "method 9")
    out = expect_fail(["-d", "--max-output", "1000"], z, "BRAID_EOUTPUTCAP", "over the cap")
    check(len(out) <= 1000, "over the cap: wrote %d bytes" % len(out))
    bomb = gzip.compress(bytes(10_000_000), 9)
    out = expect_fail(["-d", "--max-output", "1000000"], bomb, "BRAID_EOUTPUTCAP", "bomb")
    check(len(out) <= 1_000_000, "bomb: wrote %d bytes" % len(out))
    out = expect_fail(["-d", "--max-output", "0"], bomb, "BRAID_ERATIO", "bomb, ratio")
    rc, out, err = bgzip(["--format", "nope"], b"")
    check(rc != 0, "bad --format accepted")

    if failures:
        print("%d failures" % len(failures), file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
