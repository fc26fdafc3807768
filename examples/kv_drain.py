#!/usr/bin/env python3
"""Stops a running kv_server with SIGTERM while clients are connected, and checks its drain.

Usage: kv_drain.py PORT PID

Opens two connections. On the first it writes 50 SET requests (ids 1..50) in one go and sends
SIGTERM right after, without reading, then 0.2 s later 10 more (ids 51..60), which reach a
server that has sent its GOAWAY and FIN; the second connection is idle (one GET answered
before). Then it reads both to the end and requires, per docs/PROTOCOL.md section 3.4, on
each connection: exactly one GOAWAY (id 0, code OK), every request with id <= its last_id
answered, none above it answered (the server refused those; a client may retry them
elsewhere), so no request is lost or answered twice; a clean end (FIN, not a reset that
could have destroyed answers: the late requests must not turn the server's close into an
RST); and both connections ended by the server well before the drain's 2 s deadline, which
only the GOAWAY can do for the idle one. Exits 1 otherwise.
"""
import os
import signal
import socket
import struct
import sys
import time

HEADER = struct.Struct(">2sBBB3sII")
REQUEST, RESPONSE, ERROR, GOAWAY = 1, 2, 3, 6


def frame(ftype, rid, payload):
    return HEADER.pack(b"BR", 1, ftype, 0, b"\0\0\0", rid, len(payload)) + payload


def kv_set(key, value):
    return bytes([2]) + struct.pack(">H", len(key)) + key + struct.pack(">I", len(value)) + value


def kv_get(key):
    return bytes([1]) + struct.pack(">H", len(key)) + key


def read_all(sock, deadline):
    """Every frame the server sends until it closes: a list of (type, id, payload)."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise SystemExit("kv_drain: the server did not close the connection in time")
        except ConnectionResetError:
            raise SystemExit("kv_drain: the server reset the connection instead of closing it")
        if not chunk:
            break
        data += chunk
    frames = []
    while data:
        if len(data) < HEADER.size:
            raise SystemExit("kv_drain: a partial frame header at the end")
        magic, version, ftype, _flags, _res, rid, length = HEADER.unpack_from(data)
        if magic != b"BR" or version != 1 or len(data) < HEADER.size + length:
            raise SystemExit("kv_drain: a malformed frame")
        frames.append((ftype, rid, data[HEADER.size:HEADER.size + length]))
        data = data[HEADER.size + length:]
    return frames


def check(name, frames, sent_ids):
    goaways = [f for f in frames if f[0] == GOAWAY]
    if len(goaways) != 1 or goaways[0][1] != 0 or len(goaways[0][2]) < 6:
        raise SystemExit(f"kv_drain: {name}: want exactly one GOAWAY, got {frames!r}")
    last_id, code = struct.unpack_from(">IH", goaways[0][2])
    if code != 0:
        raise SystemExit(f"kv_drain: {name}: GOAWAY code {code}, want 0 (OK)")
    answered = [rid for ftype, rid, _ in frames if ftype in (RESPONSE, ERROR)]
    if sorted(answered) != answered or len(set(answered)) != len(answered):
        raise SystemExit(f"kv_drain: {name}: answers out of order or twice: {answered}")
    want = [rid for rid in sent_ids if rid <= last_id]
    if answered != want:
        raise SystemExit(f"kv_drain: {name}: last_id {last_id}, answered {answered}")
    bad = [rid for ftype, rid, _ in frames if ftype == ERROR]
    if bad:
        raise SystemExit(f"kv_drain: {name}: requests {bad} failed")
    return last_id


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("kv_drain: the server closed a connection before the drain")
        data += chunk
    return data


def read_all_one(sock):
    """One whole frame (the answer to a request sent before the drain)."""
    _, _, ftype, _, _, rid, length = HEADER.unpack(read_exact(sock, HEADER.size))
    return ftype, rid, read_exact(sock, length)


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle.sendall(frame(REQUEST, 1, kv_get(b"drain-k")))
    first = read_all_one(idle)
    if first[0] != RESPONSE or first[1] != 1:
        raise SystemExit(f"kv_drain: the GET before the drain got {first!r}")
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    ids = list(range(1, 51))
    busy.sendall(b"".join(frame(REQUEST, i, kv_set(b"drain-%d" % i, b"v")) for i in ids))
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    late = list(range(51, 61))
    busy.sendall(b"".join(frame(REQUEST, i, kv_set(b"late-%d" % i, b"v")) for i in late))
    deadline = start + 1.5  # the server's drain deadline is 2 s
    last_busy = check("busy connection", read_all(busy, deadline), ids + late)
    last_idle = check("idle connection", read_all(idle, deadline), [])
    busy.close()
    idle.close()
    if last_busy > 50:
        raise SystemExit(f"kv_drain: GOAWAY last_id {last_busy} covers requests sent after it")
    if last_idle != 1:
        raise SystemExit(f"kv_drain: idle connection: GOAWAY last_id {last_idle}, want 1")
    print(f"kv_drain: GOAWAY on both connections, {last_busy} of 50 pipelined requests "
          f"taken and answered, closed in {time.monotonic() - start:.2f} s")


if __name__ == "__main__":
    main()
