#!/usr/bin/env python3
"""What a hostile client tries against a running kv_server, and the bounds the server keeps.

Usage: kv_abuse.py PORT PID     (PID: the kv_server's, to read its memory and CPU in /proc)

1. Output amplification (issue 9): a small request that names a large value many times.
   With a 1 MiB value stored, MGET of it 15 times is answered (15.7 MB, under the 16 MiB
   max_payload that PROTOCOL.md section 5 says a sender must not pass); 17 times and 1,000
   times are refused with ERROR TOO_BIG; MGET naming a 16 MiB value 70 times (a 423-byte
   request) too; a batch of 20 GETs of the 1 MiB value gets 15 answers and 5 TOO_BIG items
   in an answer under 16 MiB. The connection stays usable throughout, another client's GETs
   are answered meanwhile (each within 2 s), and the server's peak RSS (VmHWM) stays under
   200 MB (before the fix: 1 to 2 GB).
2. Clients that never read: three clients each pipeline ten MGETs with 15.7 MB answers and
   read nothing; each may make the server hold about its output bound (two maximal answers,
   32 MiB: the channel closes a connection whose queue would pass it), not the library's
   default 64 MiB: the server's RSS may grow by at most 45 MB a client.
3. Hash flooding: SETs of 32,768 keys (a 256-byte common prefix, then 60 bytes) that all
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
import threading
import time

MAX_PAYLOAD = 16 * 1024 * 1024
REQUEST, RESPONSE, ERROR = 1, 2, 3
BATCH = 0x02
TOO_BIG = 2
RSS_BOUND_KB = 200 * 1024
PREFIX_LEN = int(os.environ.get("KV_ABUSE_PREFIX", "256"))

failures = []


def fail(msg):
    print(f"kv_abuse: FAIL: {msg}", file=sys.stderr)
    failures.append(msg)


def frame(ftype, flags, rid, payload):
    header = struct.pack(">2sBBB3sII", b"BR", 1, ftype, flags, b"\0\0\0", rid, len(payload))
    return header + payload


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


def peak_rss_kb(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields[name] = rest.strip()
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def alive(pid):
    """False once the process has exited (a zombie until its parent waits)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


def expect_error(what, answer, code):
    ftype, _flags, body = answer
    got = struct.unpack(">H", body[:2])[0] if ftype == ERROR and len(body) >= 2 else None
    if ftype != ERROR or got != code:
        fail(f"{what}: got frame type {ftype} code {got} ({len(body)} bytes), want ERROR {code}")
        return
    print(f"kv_abuse: {what}: ERROR {code} '{body[2:].decode(errors='replace')}'")


def expect_mget(what, answer, sizes):
    """sizes: the value length of each key, None for not found."""
    ftype, _flags, body = answer
    want = 2 + sum(1 if n is None else 5 + n for n in sizes)
    if ftype != RESPONSE or len(body) != want or body[:2] != struct.pack(">H", len(sizes)):
        fail(f"{what}: got frame type {ftype} with {len(body)} bytes, want RESPONSE of {want}")
        return
    print(f"kv_abuse: {what}: answered, {len(body)} bytes")


def background_gets(port, stop, result):
    """Another client, reading a small key over and over while the attacks run."""
    c = Client(port)
    worst, count = 0.0, 0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            ftype, _flags, body = c.call(op_get(b"small"))
            worst = max(worst, time.monotonic() - t0)
            if ftype != RESPONSE or body != b"\x00\x00\x00\x00\x05hello":
                result["error"] = f"GET small: type {ftype}, {body[:16].hex(' ')}"
                return
            count += 1
            time.sleep(0.01)
    except Exception as e:  # noqa: BLE001 - any failure of the bystander is a test failure
        result["error"] = repr(e)
    finally:
        c.close()
        result["count"], result["worst"] = count, worst


def amplification(port, pid):
    one_mib = b"m" * (1 << 20)
    huge_len = MAX_PAYLOAD - 7 - 4  # the largest value a SET of a 4-byte key can carry
    a = Client(port)
    for k, v in ((b"small", b"hello"), (b"big", one_mib), (b"huge", b"h" * huge_len)):
        ftype, _flags, body = a.call(op_set(k, v))
        if ftype != RESPONSE or body != b"\x00":
            fail(f"SET {k!r}: type {ftype}, {body[:40]!r}")
            return
    stop, bystander = threading.Event(), {}
    t = threading.Thread(target=background_gets, args=(port, stop, bystander))
    t.start()
    try:
        expect_mget("MGET big x15 (15.7 MB, fits)", a.call(op_mget([b"big"] * 15)),
                    [1 << 20] * 15)
        expect_mget("MGET huge + a missing key (16 MiB - 3 bytes, fits)",
                    a.call(op_mget([b"huge", b"nope"])), [huge_len, None])
        expect_error("MGET big x17 (17.8 MB)", a.call(op_mget([b"big"] * 17)), TOO_BIG)
        expect_error("MGET huge x70 (a 423-byte request for 1.2 GB)",
                     a.call(op_mget([b"huge"] * 70)), TOO_BIG)
        request = op_mget([b"big"] * 1000)
        answers = [a.call(request) for _ in range(20)]
        for answer in answers[1:]:
            if answer != answers[0]:
                fail(f"MGET big x1000: answers differ: {answer[2][:40]!r}")
        expect_error("MGET big x1000 (1 GB), 20 times", answers[0], TOO_BIG)
        # A batch whose answers together pass the maximum: each item that does not fit fails
        # on its own with TOO_BIG, and the batch answer stays within the maximum.
        items = [op_get(b"big")] * 20
        payload = struct.pack(">I", len(items))
        payload += b"".join(struct.pack(">I", len(i)) + i for i in items)
        ftype, flags, body = a.call(payload, BATCH)
        statuses, pos = [], 4
        while ftype == RESPONSE and pos + 6 <= len(body):
            status, n = struct.unpack(">HI", body[pos:pos + 6])
            statuses.append(status)
            pos += 6 + n
        if (ftype != RESPONSE or not flags & BATCH or len(body) > MAX_PAYLOAD
                or statuses != [0] * 15 + [TOO_BIG] * 5):
            fail(f"batch of 20 GET big: type {ftype}, {len(body)} bytes, statuses {statuses}")
        else:
            print(f"kv_abuse: batch of 20 GET big: 15 answered, 5 TOO_BIG, {len(body)} bytes")
        # The connection that asked for all of it is still served.
        ftype, _flags, body = a.call(op_get(b"small"))
        if ftype != RESPONSE or body != b"\x00\x00\x00\x00\x05hello":
            fail(f"GET small after the attacks: type {ftype}, {body[:16].hex(' ')}")
    except (OSError, ValueError) as e:
        fail(f"the attacking connection failed: {e!r}")
    finally:
        stop.set()
        t.join(60)
        a.close()
    if "error" in bystander:
        fail(f"the other client: {bystander['error']}")
    elif bystander.get("count", 0) < 1 or bystander["worst"] > 2.0:
        fail(f"the other client: {bystander.get('count')} GETs, worst {bystander.get('worst')} s")
    else:
        print(f"kv_abuse: the other client: {bystander['count']} GETs, "
              f"worst {bystander['worst'] * 1000:.1f} ms")
    hwm, rss = peak_rss_kb(pid)
    print(f"kv_abuse: server RSS {rss / 1024:.1f} MB now, peak {hwm / 1024:.1f} MB")
    if hwm > RSS_BOUND_KB:
        fail(f"server peak RSS {hwm / 1024:.1f} MB, bound {RSS_BOUND_KB / 1024:.0f} MB")


def never_reading(port, pid):
    _, before = peak_rss_kb(pid)
    clients = []
    request = b"".join(frame(REQUEST, 0, i + 1, op_mget([b"big"] * 15)) for i in range(10))
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A small receive window, so the kernel takes little of what the server queues.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            s.sendall(request)
            clients.append(s)
        time.sleep(1.5)
        _, during = peak_rss_kb(pid)
    finally:
        for s in clients:
            s.close()  # with answers unread: a reset, while the server still has more to send
    time.sleep(0.5)
    if not alive(pid):
        fail("kv_server died when clients that never read reset their connections "
             "(SIGPIPE: issue 9, item 1)")
        return
    grown_mb = (during - before) / 1024 / len(clients)
    print(f"kv_abuse: {len(clients)} clients that never read: server RSS {before / 1024:.1f} MB "
          f"before, {during / 1024:.1f} MB while they hold (+{grown_mb:.1f} MB each)")
    if grown_mb > 45:
        fail(f"each client that never reads costs the server {grown_mb:.1f} MB, bound 45 MB")


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
    amplification(port, pid)
    never_reading(port, pid)
    if alive(pid):
        hash_flood(port, pid)
    if failures:
        sys.exit(1)
    print("kv_abuse: ok")


if __name__ == "__main__":
    main()
