#!/usr/bin/env python3
"""Writes the small seed corpora committed under tests/fuzz/corpus/ (run once; kept for
reproducibility). Each file is one control byte followed by the payload; see the targets."""
import gzip
import os
import random
import struct
import zlib

here = os.path.dirname(os.path.abspath(__file__))
rnd = random.Random(1)
text = (b"the braid loop streams gzip members over a connection; " * 40 +
        b'{"id": 42, "name": "braid", "tags": ["a", "b"]}\n' * 20)


def raw(d, level=6):
    c = zlib.compressobj(level, wbits=-15)
    return c.compress(d) + c.flush()


def gz_header(flg, extra=b"", name=b"", comment=b"", hcrc_ok=True):
    h = b"\x1f\x8b\x08" + bytes([flg]) + b"\0\0\0\0\0\xff"
    if flg & 4:
        h += struct.pack("<H", len(extra)) + extra
    if flg & 8:
        h += name + b"\0"
    if flg & 16:
        h += comment + b"\0"
    if flg & 2:
        c = zlib.crc32(h) & 0xffff
        h += struct.pack("<H", c if hcrc_ok else c ^ 1)
    return h


def member(d, flg=0, **kw):
    return gz_header(flg, **kw) + raw(d) + struct.pack("<II", zlib.crc32(d), len(d) & 0xffffffff)


def write(target, name, ctl, payload):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([ctl]) + payload)


# Control byte: format = ctl % 3 (0 gzip, 1 zlib, 2 raw); chunk from ctl >> 2.
g = gzip.compress(text)
seeds = {
    "gzip_text": (0, g),
    "gzip_empty": (4, gzip.compress(b"")),
    "gzip_one_byte_chunks": (0, gzip.compress(b"x" * 300)),
    "gzip_members": (8, gzip.compress(text[:100]) + member(text[100:500], 8, name=b"f.txt")),
    "gzip_all_fields": (12, member(text[:200], 2 | 4 | 8 | 16, extra=b"ab\x02\x00xy",
                                   name=b"name", comment=b"comment")),
    "gzip_bad_hcrc": (0, member(b"abc", 2, hcrc_ok=False)),
    "gzip_bad_crc": (0, g[:-8] + bytes([g[-8] ^ 1]) + g[-7:]),
    "gzip_bad_isize": (0, g[:-1] + bytes([g[-1] ^ 1])),
    "gzip_truncated": (16, g[: len(g) // 2]),
    "gzip_trailing": (0, g + b"\0\0junk"),
    "gzip_method": (0, g[:2] + b"\x07" + g[3:]),
    "gzip_zeros_bomb": (40, gzip.compress(bytes(3 << 20), 9)),
    "gzip_many_members": (0, gzip.compress(b"m") * 12),
    "gzip_stored": (0, gzip.compress(bytes(rnd.randrange(256) for _ in range(3000)), 0)),
    "zlib_text": (1, zlib.compress(text)),
    "zlib_bad_adler": (1, zlib.compress(text)[:-1] + b"\0"),
    "zlib_dict": (1, b"\x78\xbb" + zlib.compress(text)[2:]),
    "raw_text": (2, raw(text, 1)),
    "raw_fixed_huffman": (6, raw(b"abcabcabc", 9)),
    "raw_garbage": (2, bytes(rnd.randrange(256) for _ in range(200))),
}
for name, (ctl, payload) in seeds.items():
    write("gunzip", name, ctl, payload)

# Round trip: format = ctl % 3, level = (ctl / 3) % 10, chunk from ctl / 30.
rt = {
    "empty": (0, b""),
    "text_l6": (18, text),
    "text_l1_zlib": (4, text),
    "text_l9_raw": (29, text),
    "random": (33, bytes(rnd.randrange(256) for _ in range(5000))),
    "zeros_stored": (60, bytes(70000)),
    "one": (250, b"a"),
}
for name, (ctl, payload) in rt.items():
    write("gzip_roundtrip", name, ctl, payload)
