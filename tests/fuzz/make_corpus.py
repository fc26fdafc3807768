#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/ (run once; the files are committed).

Seeds are small valid and invalid inputs for each framer kind and for the frame decoder, so
the replay in the normal test suite covers every branch the unit tests name, and a libFuzzer
campaign starts from structure instead of noise."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def hdr(typ, flags, rid, plen, version=1, magic=b"BR", reserved=b"\0\0\0"):
    return magic + bytes([version, typ, flags]) + reserved + struct.pack(">II", rid, plen)


def frame(typ, flags, rid, payload):
    return hdr(typ, flags, rid, len(payload)) + payload


def batch(items, response=False):
    out = struct.pack(">I", len(items))
    for it in items:
        if response:
            status, data = it
            out += struct.pack(">HI", status, len(data)) + data
        else:
            out += struct.pack(">I", len(it)) + it
    return out


gz_hello = bytes.fromhex("1f8b0800000000000003cb48cdc9c90700 86a61036 05000000".replace(" ", ""))
frames = {
    "request": frame(1, 0, 1, b"hello"),
    "ping_pong": frame(4, 0, 7, bytes(range(1, 9))) + frame(5, 0, 7, bytes(range(1, 9))),
    "error": frame(3, 0, 9, b"\x00\x03gzip"),
    "fatal": frame(3, 0, 0, b"\x00\x02"),
    "goaway": frame(6, 0, 0, struct.pack(">IH", 41, 0) + b"bye"),
    "batch_req": frame(1, 2, 2, batch([b"a", b"bc", b""])),
    "batch_resp": frame(2, 2, 2, batch([(0, b"A"), (6, b"oops")], True)),
    "gzip": frame(1, 1, 3, gz_hello),
    "kv": frame(1, 0, 4, b"\x01\x00\x02k1") + frame(2, 0, 4, b"\x00\x00\x00\x00\x01v"),
    "bad_magic": b"GET / HTTP/1.1\r\n\r\n",
    "bad_version": hdr(1, 0, 1, 0, version=2),
    "bad_flags": hdr(1, 0x84, 1, 0),
    "bad_reserved": hdr(1, 0, 1, 0, reserved=b"\0\1\0"),
    "too_big": hdr(1, 0, 1, 0xFFFFFFFF),
    "partial": frame(1, 0, 1, b"hello")[:11],
    "bad_batch": frame(1, 2, 5, b"\x00\x00\x00\x02\x00\x00\x00\x01a"),
}


def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# fuzz_frame: [0] selects the maximum (64 + 16 * b), then frames.
for name, data in frames.items():
    write("frame", name, b"\x10" + data)
write("frame", "raw_batch", batch([b"x", b"yz"]))
write("frame", "raw_batch_resp", batch([(0, b"x"), (0x8001, b"err")], True))
write("frame", "small_max", b"\x00" + hdr(1, 0, 1, 65) + b"x" * 65)

# fuzz_framer: [0] kind (low 2 bits) + piece seed, [1..6] parameters, [7..] the stream.
def framer_seed(kind, params, stream, seed=0):
    return bytes([kind | (seed << 2)]) + bytes(params) + stream

allf = b"".join(frames[k] for k in ("request", "ping_pong", "batch_req", "goaway"))
write("framer", "braid_ok", framer_seed(0, [4, 0, 0, 0, 0, 8], allf))
write("framer", "braid_bad", framer_seed(0, [0, 0, 0, 0, 0, 3], frames["request"] + b"GET /"))
write("framer", "braid_big", framer_seed(0, [0, 0, 0, 0, 0, 1], hdr(2, 0, 1, 65) + b"z" * 65))
lf = struct.pack(">H", 3) + b"abc" + struct.pack(">H", 0) + struct.pack(">H", 1) + b"z"
write("framer", "lf_2be", framer_seed(1, [1, 0, 0, 2, 100, 9], lf))
lf = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 1) + b"z"
write("framer", "lf_4le", framer_seed(1, [2, 0, 0, 4, 100, 17], lf))
lf = struct.pack(">Q", 2) + b"ab" + b"\xff" * 8
write("framer", "lf_8be", framer_seed(1, [3 | 4, 0, 0, 8, 100, 33], lf))
lf = b"XY" + struct.pack(">H", 5) + b"abcXY" + struct.pack(">H", 4)
write("framer", "lf_offset_adjust", framer_seed(1, [1 | 4, 2, 0xfe, 4, 50, 3], lf))
write("framer", "delim_crlf", framer_seed(2, [1, ord("\r"), ord("\n"), 0, 0, 10],
                                          b"a\r\nbc\r\n\r\nd\r"))
write("framer", "delim_overlap", framer_seed(2, [3 | 0x80, ord("a"), ord("b"), ord("a"), ord("b"),
                                                 6], b"abaabab" + b"ababab" + b"abab" * 3))
write("framer", "delim_none", framer_seed(2, [0, ord("\n"), 0, 0, 0, 2], b"x" * 40))
write("framer", "netstring", framer_seed(3, [0, 0, 0, 0, 0, 20], b"3:abc,0:,1:z,12:"))
write("framer", "netstring_bad", framer_seed(3, [0, 0, 0, 0, 0, 20], b"3:abc;"))
