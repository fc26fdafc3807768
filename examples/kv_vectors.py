#!/usr/bin/env python3
"""Checks docs/PROTOCOL.md's kv test vectors against a running kv_server, byte for byte.

Usage: kv_vectors.py PROTOCOL.md PORT

Sends V13 (SET k1 = v), then V11 (GET k1) and V14 (MGET k1 k2), each on a fresh connection
(request ids must increase per connection, and the vectors' ids do not), and requires the
answers to be exactly V16, V12 and V15. Then checks section 9's error rules: malformed
requests get ERROR BAD_REQUEST, an unknown op UNSUPPORTED, and inside a batch each item gets
its own status. Exits 1 on any difference, so the page and the example cannot drift apart.
"""
import re
import socket
import struct
import sys


def vectors(path):
    text = open(path, encoding="utf-8").read()
    out = {}
    # "**Vn title**" then, after a blank line, the indented hex lines.
    pattern = r"\*\*(V\d+) [^*]*\*\*[^\n]*\n(?:[^\n]*\n)*?\n((?:    [0-9a-f ]+\n)+)"
    for m in re.finditer(pattern, text):
        out[m.group(1)] = bytes.fromhex(m.group(2).replace("\n", " "))
    return out


def exchange(port, request, answer_len):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        got = b""
        while len(got) < answer_len:
            chunk = s.recv(answer_len - len(got))
            if not chunk:
                break
            got += chunk
        return got


def frame(ftype, flags, rid, payload):
    header = struct.pack(">2sBBB3sII", b"BR", 1, ftype, flags, b"\0\0\0", rid, len(payload))
    return header + payload


def check_errors(port):
    """Section 9's error rules: malformed -> BAD_REQUEST (5), unknown op -> UNSUPPORTED (3),
    per item inside a batch, the other items unaffected."""
    get_k1 = bytes.fromhex("01 00 02 6b 31")
    cases = [
        ("GET klen 0", bytes.fromhex("01 00 00"), 5),
        ("GET with a byte left over", get_k1 + b"x", 5),
        ("SET vlen past the end", bytes.fromhex("02 00 01 6b 00 00 00 05 61"), 5),
        ("MGET n 0", bytes.fromhex("04 00 00"), 5),
        ("empty request", b"", 5),
        ("unknown op 9", bytes.fromhex("09 00 01 6b"), 3),
    ]
    bad = 0
    for rid, (what, req, code) in enumerate(cases, start=1):
        got = exchange(port, frame(1, 0, rid, req), 18)
        want = frame(3, 0, rid, b"")  # type ERROR and the id; the length varies with the text
        if got[:12] != want[:12] or got[16:18] != struct.pack(">H", code):
            print(f"kv_vectors: {what}: got {got.hex(' ')}, want ERROR code {code}",
                  file=sys.stderr)
            bad += 1
    # A batch of GET k1 (found, "v" from V13), a malformed GET, and an unknown op.
    items = [get_k1, bytes.fromhex("01 00 00"), bytes.fromhex("09")]
    payload = struct.pack(">I", len(items))
    payload += b"".join(struct.pack(">I", len(i)) + i for i in items)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(frame(1, 2, 1, payload))
        got = b""
        while len(got) < 16 or len(got) < 16 + struct.unpack(">I", got[12:16])[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    body = got[16:]
    ok = got[:12] == frame(2, 2, 1, b"")[:12] and body[:4] == struct.pack(">I", 3)
    pos, statuses = 4, []
    while ok and pos + 6 <= len(body):
        status, n = struct.unpack(">HI", body[pos:pos + 6])
        statuses.append((status, body[pos + 6:pos + 6 + n]))
        pos += 6 + n
    if not ok or len(statuses) != 3 or statuses[0] != (0, bytes.fromhex("00 00 00 00 01 76")) \
            or statuses[1][0] != 5 or statuses[2][0] != 3:
        print(f"kv_vectors: mixed batch: got {got.hex(' ')}", file=sys.stderr)
        bad += 1
    return bad


def main():
    v = vectors(sys.argv[1])
    port = int(sys.argv[2])
    for name in ("V11", "V12", "V13", "V14", "V15", "V16"):
        if name not in v:
            print(f"kv_vectors: {name} not found in {sys.argv[1]}", file=sys.stderr)
            return 1
    checks = [("V13 -> V16", v["V13"], v["V16"]), ("V11 -> V12", v["V11"], v["V12"]),
              ("V14 -> V15", v["V14"], v["V15"])]
    bad = 0
    for what, req, want in checks:
        got = exchange(port, req, len(want))
        if got != want:
            print(f"kv_vectors: {what}: got {got.hex(' ')}, want {want.hex(' ')}", file=sys.stderr)
            bad += 1
    bad += check_errors(port)
    print("kv vectors: " + ("ok" if not bad else f"{bad} differ"))
    return 1 if bad else 0


sys.exit(main())
