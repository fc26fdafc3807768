#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_rpc_server and fuzz_rpc_client in tests/fuzz/corpus/
rpc_server/ and rpc_client/ (run once; the files are committed). Each seed is a small script in the target's input language (see the
comment at the top of fuzz_rpc_server.c): three option bytes, then actions. Together they
reach every action and every way the handler answers, so the replay in the 'fuzz' suite
walks them all and a campaign starts from structure instead of noise."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "corpus", "rpc_server")

# How the handler answers: a request payload's first byte, modulo 8.
NOW, ERROR, DEFER, TWICE, BIG, CLOSE, GOAWAY, TIMER = range(8)
NEXT_ID = 3  # id mode: the next id of a counter from 1


def opts(inflight=5, maxp=5, batch_cb=True, small_wm=False, tiny_queue=False, low_copy=False,
         gzip=0, level=1, reading=True):
    c0 = inflight | maxp << 3 | (0x40 if batch_cb else 0)
    c1 = (1 if small_wm else 0) | (2 if tiny_queue else 0) | (4 if low_copy else 0) | gzip << 3
    c2 = (level - 1) | (0 if reading else 0x80)
    return bytes([c0, c1, c2])


def request(payload=b"", how=NOW, arg=0, batch_items=0, gz=False, lie=None, corrupt=False,
            bad_batch=False, kind=0, kib=0, idmode=NEXT_ID, id32=None):
    """A REQUEST action. kind 0: the payload given (its first byte is replaced by how);
    kind 2: kib KiB of zeros; kind 3: kib half-KiB of noise (the first byte is how)."""
    flags = 0
    if batch_items:
        flags |= 1 | ((batch_items - 1) << 4)
    if bad_batch:
        flags |= 8
    if gz:
        flags |= 2
    if lie is not None:
        flags |= 4 | (0x40 if lie == "big" else 0)
    if corrupt:
        flags |= 0x80
    out = bytes([kind << 4, flags, idmode])
    if idmode % 8 == 0:
        out += struct.pack(">I", id32)
    if kind in (0, 1):
        body = bytes([how, arg]) + payload
        out += bytes([len(body)]) + body
    else:
        out += bytes([how, kib])
    return out


def raw(data):
    return bytes([4, len(data)]) + data


def frame(ftype, rid, payload):
    return b"BR" + bytes([1, ftype, 0, 0, 0, 0]) + struct.pack(">II", rid, len(payload)) + payload


def other(kind, sel=2, payload=b""):
    """kind: 0 PING, 1 PONG, 2 ERROR, 3 GOAWAY, 4 RESPONSE (a frame a server should not get)."""
    return bytes([5 | kind << 4, sel, len(payload)]) + payload


def turn(n=1):
    return bytes([6 | (n - 1) << 4])


def toggle_reading():
    return bytes([9])


def flush_deferred(reverse=False):
    return bytes([10 | (0x10 if reverse else 0)])


def goaway(code=0):
    return bytes([11 | code << 4])


def server_close():
    return bytes([12 | 0xF0])


def half_close():
    return bytes([12 | 0xE0])


def reset():
    return bytes([13 | 0xF0])


def split_header(cut=5):
    return bytes([14 | (cut - 1) << 4])


def fail_alloc(k=0):
    """One of the next braid allocations (the (1 + 3k)-th) fails; k 0..14."""
    return bytes([13 | k << 4])


def wait(ms=1):
    return bytes([15 | (ms - 1) << 4])


seeds = {
    "echo": opts() + request(b"hello") + turn(),
    "every_answer": opts() + b"".join(request(b"x%d" % h, how=h) for h in
                                      (NOW, ERROR, DEFER, TWICE, TIMER, BIG)) +
    wait(3) + flush_deferred() + turn(2),
    "close_in_handler": opts() + request(b"a", how=DEFER) + request(b"b", how=CLOSE) +
    turn(2) + flush_deferred(),
    "goaway_in_handler": opts() + request(b"a", how=DEFER) + request(b"b", how=GOAWAY) +
    request(b"c") + turn(2) + flush_deferred() + turn(2),
    "goaway_script": opts() + request(b"a", how=TIMER, arg=2) + goaway() + request(b"late") +
    wait(3) + turn(3),
    "batch": opts() + request(b"abcdefgh", batch_items=4) + turn(2),
    "batch_split": opts(batch_cb=False) + request(b"abcdefgh", batch_items=3, how=DEFER) +
    flush_deferred(reverse=True) + turn(2),
    "batch_mixed": opts() + request(b"\x02\x00\x03\x00", batch_items=2, how=ERROR) +
    request(b"qq", batch_items=8, how=TIMER) + wait(3) + turn(2),
    "batch_bad": opts() + request(b"xyz", batch_items=2, bad_batch=True) + turn(),
    "batch_over_inflight": opts(inflight=2) + request(b"abcdefghijkl", batch_items=6) + turn(),
    "gzip": opts() + request(b"squeeze me " * 10, gz=True) + turn(2),
    "gzip_corrupt": opts() + request(b"squeeze me " * 10, gz=True, corrupt=True) + turn(2),
    "gzip_lie_small": opts() + request(gz=True, lie="small", kind=2, kib=64) + wait(2) +
    turn(2),
    "gzip_lie_big": opts() + request(b"tiny", gz=True, lie="big") + wait(3) + turn(2),
    "gzip_offload_noise": opts() + request(gz=True, kind=3, kib=64, how=NOW) + wait(3) +
    turn(3),
    "gzip_bomb": opts(maxp=3) + request(gz=True, kind=2, kib=128) + turn(2),
    "gzip_batch": opts() + request(b"0123456789" * 4, batch_items=3, gz=True) + turn(2),
    "gzip_answers": opts(gzip=3) + request(b"x" * 100) + request(b"y", how=BIG, arg=100) +
    wait(3) + turn(3),
    "gzip_answers_offload_close": opts(gzip=5) + request(b"y", how=BIG, arg=200) +
    server_close() + wait(3) + turn(2),
    "inflight_1": opts(inflight=0) + b"".join(request(b"r", how=DEFER) for _ in range(4)) +
    turn(2) + flush_deferred() + turn(2) + flush_deferred() + turn(2),
    "not_reading_big": opts(small_wm=True, reading=False) +
    b"".join(request(b"b", how=BIG, arg=63) for _ in range(6)) + turn(3) + toggle_reading() +
    turn(3),
    "tiny_queue": opts(small_wm=True, tiny_queue=True, low_copy=True, reading=False) +
    b"".join(request(b"b", how=BIG, arg=40) for _ in range(4)) + turn(3),
    "too_big": opts(maxp=0) + request(b"z" * 100) + turn(),
    "ping": opts() + other(0, sel=7, payload=b"12345678") + turn(),
    "pong": opts() + other(1, sel=8, payload=b"x") + request(b"after") + turn(),
    "client_error_fatal": opts() + request(b"a", how=DEFER) + other(2, sel=1) + turn(2) +
    flush_deferred(),
    "client_error_id": opts() + other(2, sel=4, payload=b"\x00\x05no") + request(b"a") + turn(),
    "client_goaway": opts() + other(3, payload=b"\x00\x00\x00\x01\x00\x00") + turn(),
    "client_response": opts() + other(4, sel=2, payload=b"r") + turn(),
    "half_close_pending": opts() + request(b"a", how=DEFER) + half_close() + turn(2) +
    flush_deferred() + turn(2),
    "half_close_mid_frame": opts() + raw(frame(1, 50, b"hello")[:10]) + half_close() + turn(2),
    "reset_pending": opts() + request(b"a", how=DEFER) + request(b"b", how=TIMER, arg=3) +
    reset() + turn(2) + wait(3) + flush_deferred(),
    "reset_big": opts(reading=False) + request(b"b", how=BIG, arg=255) + reset() + turn(2),
    "split_header": opts() + split_header(1) + split_header(9) + split_header(15) + turn(),
    "ids_dup_and_old": opts() + request(b"a") + request(b"b", idmode=1) +
    request(b"c", idmode=2 | 8 * 5) + turn(),
    "id_zero": opts() + request(b"a", idmode=0, id32=0) + turn(),
    "id_max": opts() + request(b"a", idmode=0, id32=0xFFFFFFFF) + request(b"b", idmode=0,
                                                                       id32=1) + turn(),
    "raw_garbage": opts() + raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") + turn(),
    "raw_two_frames": opts() + raw(frame(1, 1, b"\x00a") + frame(4, 9, b"")) + turn(),
    "server_close_deferred": opts() + request(b"a", how=DEFER) + server_close() + turn(2) +
    flush_deferred() + turn(),
    "goaway_then_close": opts() + goaway(3) + server_close() + turn(),
    # max_inflight 3: one request and a batch of three wait; answering them returns more
    # requests than the free list keeps, so the last is freed before it is answered again.
    "double_after_free": opts(inflight=2) + request(b"a", how=DEFER) +
    request(b"\x02\x00\x02\x00\x02\x00", how=DEFER, batch_items=3) + turn(2) +
    flush_deferred() + turn(),
    "alloc_fail_request": opts() + fail_alloc(0) + request(b"a") + turn() + request(b"b") +
    turn(),
    "alloc_fail_batch": opts() + fail_alloc(1) + request(b"abcdefgh", batch_items=4, how=DEFER) +
    turn() + fail_alloc(0) + flush_deferred(reverse=True) + turn(),
    "alloc_fail_answers": opts() + b"".join(request(b"x", how=DEFER) for _ in range(3)) + turn() +
    b"".join(fail_alloc(k) + flush_deferred() for k in range(3)) + turn(),
    "alloc_fail_big": opts(reading=False) + fail_alloc(2) + request(b"b", how=BIG, arg=100) +
    turn(2) + toggle_reading() + turn(2),
    "alloc_fail_gzip": opts(gzip=3) + fail_alloc(4) + request(b"zz" * 60, gz=True) +
    request(gz=True, kind=3, kib=40) + wait(3) + turn(2),
    "alloc_fail_goaway": opts() + request(b"a", how=DEFER) + fail_alloc(0) + goaway() +
    flush_deferred() + turn(2),
    "many_small": opts(inflight=3) + b"".join(request(bytes([h, h])) for h in range(8)) * 3 +
    turn(4),
}

os.makedirs(out_dir, exist_ok=True)
for name, data in seeds.items():
    assert len(data) <= 4096, name
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)


# ---- fuzz_rpc_client: [0..1] options, then actions (see fuzz_rpc_client.c) -------------------

def copts(inflight=3, queued=3, maxp=2, default_timeout=False, gzip=False):
    return bytes([inflight | queued << 2 | maxp << 4 | (0x40 if default_timeout else 0),
                  1 if gzip else 0])


def ccall(payload=b"q", timeout=0, batch=0):
    """A call; timeout None: the channel's default; else 0..4 ms (0 = none)."""
    t = 0 if timeout is None else timeout + 1
    op = (batch - 1) << 4 if batch else 0
    return bytes([op, 1 if batch else 0, t, len(payload)]) + payload


def canswer(kind=0, pick=1, payload=b"a", batch=0, fail_first=False, gz=False, bad_isize=False,
            fatal=False, code=0, id32=None):
    """kind 0/1 RESPONSE, 2 ERROR, 3 GOAWAY; pick 0 oldest, 1 newest, 3+8k: id k, 7: id32."""
    flags = (1 | (batch - 1) << 4 if batch else 0) | (2 if fail_first else 0) | \
        (4 if gz else 0) | (8 if bad_isize else 0) | (0x80 if fatal else 0) | code
    out = bytes([3 | kind << 4, flags, pick])
    if pick % 8 == 7:
        out += struct.pack(">I", id32)
    return out + bytes([len(payload)]) + payload


def cturn(n=1):
    return bytes([7 | (n - 1) << 4])


def cwait(ms=1):
    return bytes([8 | (ms - 1) << 4])


client_seeds = {
    "call_answer": copts() + ccall() + cturn() + canswer() + cturn(),
    "deadline_then_late": copts() + ccall(timeout=1) + cwait(3) + canswer(pick=0) + cturn(),
    "default_deadline": copts(default_timeout=True) + ccall(timeout=None) + ccall() + cwait(4) +
    canswer() + cturn(),
    "queue": copts(inflight=0, queued=2) + b"".join(ccall(b"%d" % i, timeout=i % 3)
                                                    for i in range(5)) +
    cturn() + canswer(pick=0) + cwait(3) + canswer(pick=1) + cturn(2),
    "queue_full": copts(inflight=0, queued=0) + ccall() + ccall() + cturn() + canswer(pick=0),
    "error_answer": copts() + ccall() + cturn() + canswer(kind=2, code=5) + cturn(),
    "fatal_error": copts() + ccall() + ccall() + cturn() + canswer(kind=2, fatal=True) + cturn(),
    "goaway_zero": copts() + ccall() + ccall() + cturn() + canswer(kind=3, pick=3) + cturn(2),
    "goaway_first": copts() + ccall() + ccall() + ccall() + cturn() + canswer(kind=3, pick=0) +
    canswer(pick=0) + cturn(2),
    "goaway_after_timeouts": copts() + ccall(timeout=1) + ccall() + cwait(3) +
    canswer(kind=3, pick=0) + cturn(2),
    "batch": copts() + ccall(b"abcd", batch=2) + cturn() + canswer(payload=b"xy", batch=2) +
    cturn(),
    "batch_wrong_count": copts() + ccall(b"abcd", batch=2) + cturn() +
    canswer(payload=b"xyz", batch=3, fail_first=True) + cturn(),
    "gzip_answer": copts() + ccall() + cturn() + canswer(payload=b"zip" * 20, gz=True) + cturn(),
    "gzip_bad": copts() + ccall() + cturn() + canswer(payload=b"zip" * 20, gz=True,
                                                      bad_isize=True) + cturn(),
    "gzip_calls": copts(gzip=True) + ccall(b"c" * 100) + cturn() + canswer() + cturn(),
    "unknown_id": copts() + ccall() + cturn() + canswer(pick=7, id32=0xFFFFFFF0) + cturn(),
    "ping_pong": copts() + bytes([5, 8]) + b"12345678" + b"\x07" + bytes([5 | 0x10, 0, 9]) +
    cturn(),
    "raw": copts() + ccall() + bytes([6, 5]) + b"BR\x01\x09\x00" + cturn(),
    "eof": copts() + ccall() + cturn() + bytes([9 | 0xE0]) + cturn(2),
    "reset": copts() + ccall(timeout=2) + cturn() + bytes([9 | 0xD0]) + cturn(2),
    "close_pending": copts() + ccall() + ccall(timeout=1) + bytes([9 | 0xF0]) + cturn(2),
    "too_big": copts(maxp=0) + ccall(b"x" * 100) + cturn(),
}

out_dir = os.path.join(here, "corpus", "rpc_client")
os.makedirs(out_dir, exist_ok=True)
for name, data in client_seeds.items():
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)
