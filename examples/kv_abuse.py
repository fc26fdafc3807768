#!/usr/bin/env python3
"""What a hostile client tries against a running kv_server, and the bounds the server keeps.

Usage: kv_abuse.py PORT PID     (PID: the kv_server's, to read its memory and CPU in /proc)

1. Hash flooding: SETs of 32,768 keys (a 256-byte common prefix, then 60 bytes) that all
   share one FNV-1a hash (the hash kv_server used to use) must cost about the server CPU of
   32,768 random keys of the same shape (bound: 5x, plus 0.2 s for clock-tick granularity
   and a busy machine; before the fix: 3.5 s against 0.07 s).
Exits 1 on any failure and prints the figures it measured.
"""
import os
import random
import socket
import struct
import sys
import time

REQUEST, RESPONSE = 1, 2
PREFIX_LEN = int(os.environ.get("KV_ABUSE_PREFIX", "256"))

failures = []


def fail(msg):
    print(f"kv_abuse: FAIL: {msg}", file=sys.stderr)
    failures.append(msg)


def frame(ftype, flags, rid, payload):
    return struct.pack(">2sBBB3sII", b"BR", 1, ftype, flags, b"\0\0\0", rid, len(payload)) + payload


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(s):
    """Returns (type, flags, id, payload)."""
    hdr = recv_exact(s, 16)
    magic, _ver, ftype, flags, _z, rid, length = struct.unpack(">2sBBB3sII", hdr)
    if magic != b"BR":
        raise ValueError(f"bad magic in {hdr.hex(' ')}")
    return ftype, flags, rid, recv_exact(s, length)


def key(k):
    return struct.pack(">H", len(k)) + k


def op_set(k, v):
    return b"\x02" + key(k) + struct.pack(">I", len(v)) + v


def op_get(k):
    return b"\x01" + key(k)


def op_mget(keys):
    return b"\x04" + struct.pack(">H", len(keys)) + b"".join(key(k) for k in keys)


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.next_id = 1

    def call(self, payload, flags=0):
        rid = self.next_id
        self.next_id += 1
        self.s.sendall(frame(REQUEST, flags, rid, payload))
        ftype, rflags, got_id, body = read_frame(self.s)
        if got_id != rid:
            raise ValueError(f"answer for id {got_id}, want {rid}")
        return ftype, rflags, body

    def close(self):
        self.s.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


# ---- hash flooding ---------------------------------------------------------------------

def fnv1a32(data, h=2166136261):
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def fnv_colliding_keys(prefix, bits, rng):
    """2**bits keys, each prefix and then bits 4-byte blocks, with one FNV-1a-32 hash: from
    each state, two blocks that lead to the same next state (a birthday search, about 2**16
    tries); any choice of one block per step then gives the same final hash (Joux's
    multicollision construction). The common prefix makes each comparison along a chain of
    equal hashes read that far, as keys with a common namespace would."""
    h, pairs = fnv1a32(prefix), []
    for _ in range(bits):
        seen = {}
        while True:
            block = rng.getrandbits(32).to_bytes(4, "little")
            nh = fnv1a32(block, h)
            other = seen.setdefault(nh, block)
            if other != block:
                pairs.append((other, block))
                h = nh
                break
    keys = []
    for i in range(1 << bits):
        keys.append(prefix + b"".join(pairs[j][(i >> j) & 1] for j in range(bits)))
    return keys, h


def set_all(port, keys):
    """SETs every key, 1,024 pipelined requests at a time."""
    c = Client(port)
    try:
        for start in range(0, len(keys), 1024):
            chunk = keys[start:start + 1024]
            first = c.next_id
            c.s.sendall(b"".join(frame(REQUEST, 0, first + i, op_set(k, b"v"))
                                 for i, k in enumerate(chunk)))
            c.next_id += len(chunk)
            for _ in chunk:
                ftype, _flags, _rid, body = read_frame(c.s)
                if ftype != RESPONSE or body != b"\x00":
                    raise ValueError(f"SET answered with type {ftype}: {body[:40]!r}")
    finally:
        c.close()


def hash_flood(port, pid):
    rng = random.Random(9)
    t0 = time.monotonic()
    prefix = b"user:" + b"x" * (PREFIX_LEN - 5)
    colliding, h = fnv_colliding_keys(prefix, 15, rng)
    assert len(set(colliding)) == len(colliding) and all(fnv1a32(k) == h for k in colliding[:64])
    print(f"kv_abuse: {len(colliding)} keys with FNV-1a hash {h:#010x} "
          f"({time.monotonic() - t0:.1f} s to find)")
    randoms = [prefix + rng.getrandbits(8 * 60).to_bytes(60, "little") for _ in colliding]
    cpu = []
    for name, keys in (("random", randoms), ("colliding", colliding)):
        before, t1 = cpu_seconds(pid), time.monotonic()
        try:
            set_all(port, keys)
        except (OSError, ValueError) as e:
            fail(f"SET of {name} keys: {e!r}")
            return
        cpu.append(cpu_seconds(pid) - before)
        print(f"kv_abuse: {len(keys)} SETs of {name} keys: server CPU {cpu[-1]:.2f} s, "
              f"wall {time.monotonic() - t1:.2f} s")
    if cpu[1] > 5 * cpu[0] + 0.2:
        fail(f"colliding keys cost {cpu[1]:.2f} s of server CPU against {cpu[0]:.2f} s")


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    hash_flood(port, pid)
    if failures:
        sys.exit(1)
    print("kv_abuse: ok")


if __name__ == "__main__":
    main()
