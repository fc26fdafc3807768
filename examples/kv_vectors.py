#!/usr/bin/env python3
"""Checks docs/PROTOCOL.md's kv test vectors against a running kv_server, byte for byte.

Usage: kv_vectors.py PROTOCOL.md PORT

Sends V13 (SET k1 = v), then V11 (GET k1) and V14 (MGET k1 k2), each on a fresh connection
(request ids must increase per connection, and the vectors' ids do not), and requires the
answers to be exactly V16, V12 and V15. Exits 1 on any difference, so the page and the example
cannot drift apart.
"""
import re
import socket
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
    print("kv vectors: " + ("ok" if not bad else f"{bad} differ"))
    return 1 if bad else 0


sys.exit(main())
