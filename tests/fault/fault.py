#!/usr/bin/env python3
"""The fault suite: what a hostile client does to a braid server, each with a figure it must
meet (issue 9; docs/RELIABILITY.md lists them with the figures measured).

Usage: fault.py --echo-server P --kv-server P --fault-server P [--sanitize S] [--heavy] CASE

Each CASE starts its own server on an ephemeral loopback port and stops it at the end; a
case fails by raising (exit 1 with a message) and prints its figures ("figure: ...") when it
passes. --heavy runs the larger variant (suite 'slow'). Under a sanitizer (--sanitize other
than none) memory figures are printed but not asserted (ASan's shadow memory and quarantine
are not the server's), and latency bounds are three times looser. Every loop is bounded in
count and time; servers are killed if a case fails half-way.
"""
import argparse
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

HEADER = struct.Struct(">2sBBB3sII")
REQUEST, RESPONSE, ERROR, PING, PONG, GOAWAY = 1, 2, 3, 4, 5, 6
FLAG_GZIP, FLAG_BATCH = 1, 2
WIRE_TOO_BIG, WIRE_SHUTTING_DOWN = 2, 8
LINE = re.compile(r"^listening on (\S+):(\d+)$")
MAX_PAYLOAD = 16 << 20

ARGS = None


def figure(msg):
    print("figure: " + msg, flush=True)


def sanitized():
    return ARGS.sanitize not in ("", "none")


def slack():
    return 3.0 if sanitized() else 1.0


# ---- the wire -----------------------------------------------------------------------------

def frame(ftype, rid, payload=b"", flags=0):
    return HEADER.pack(b"BR", 1, ftype, flags, b"\0\0\0", rid, len(payload)) + payload


def kv_get(key):
    return bytes([1]) + struct.pack(">H", len(key)) + key


def kv_set(key, value):
    return bytes([2]) + struct.pack(">H", len(key)) + key + struct.pack(">I", len(value)) + value


def kv_mget(keys):
    return bytes([4]) + struct.pack(">H", len(keys)) + b"".join(
        struct.pack(">H", len(k)) + k for k in keys)


class Reader:
    """Frames from a socket: next() returns (type, flags, id, payload) or None at EOF."""

    def __init__(self, sock, max_payload=MAX_PAYLOAD):
        self.sock, self.buf, self.max = sock, b"", max_payload

    def next(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= HEADER.size:
                magic, ver, ftype, flags, _r, rid, plen = HEADER.unpack_from(self.buf)
                assert magic == b"BR" and ver == 1, f"bad frame header from the server: {self.buf[:16]!r}"
                assert plen <= self.max, f"the server sent a {plen}-byte payload, over {self.max}"
                if len(self.buf) >= HEADER.size + plen:
                    payload = self.buf[HEADER.size:HEADER.size + plen]
                    self.buf = self.buf[HEADER.size + plen:]
                    return ftype, flags, rid, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame from the server in %.1f s" % timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                assert not self.buf, "the server closed mid-frame"
                return None
            self.buf += chunk


def call(sock, rd, rid, payload, timeout=5.0):
    sock.sendall(frame(REQUEST, rid, payload))
    while True:
        f = rd.next(timeout)
        assert f is not None, "the server closed the connection"
        if f[0] in (RESPONSE, ERROR) and f[2] == rid:
            return f


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---- servers -------------------------------------------------------------------------------

class Server:
    """An example or test server on an ephemeral port, as a real process."""

    def __init__(self, path, *args, nofile=None):
        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        # subprocess restores SIGPIPE to its default disposition in the child (Python itself
        # ignores it), so the server meets resets as a program that does nothing about them.
        # meson test sets MALLOC_PERTURB_, which makes glibc write over every block it frees:
        # that keeps freed pages resident and would be counted against the server's RSS.
        env = dict(os.environ, MALLOC_PERTURB_="0")
        self.proc = subprocess.Popen([path, "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=limit,
                                     env=env)
        self.name = os.path.basename(path)
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(10)
        m = LINE.match(box[0].strip()) if box else None
        if not m:
            self.kill()
            raise AssertionError(f"{self.name} did not start: {box!r}")
        self.port = int(m.group(2))
        self.pid = self.proc.pid

    def connect(self, timeout=5.0):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        except ConnectionRefusedError:
            self.proc.wait(2)
            self.assert_alive("(connection refused)")
            raise
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self, what):
        rc = self.proc.poll()
        if rc is not None:
            err = self.proc.stderr.read()
            how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
            raise AssertionError(f"{self.name} died ({how}) {what}; stderr: {err[-2000:]}")

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no " + field)

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout=15):
        self.assert_alive("before SIGTERM")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM")
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def with_server(path, body, *args, **kw):
    s = Server(path, *args, **kw)
    try:
        body(s)
        s.stop()
    finally:
        s.kill()


def kv_roundtrip(srv, key=b"probe"):
    """One SET and one GET on a fresh connection: the server still serves."""
    with srv.connect() as c:
        rd = Reader(c)
        f = call(c, rd, 1, kv_set(key, b"v"))
        assert f[0] == RESPONSE, f"SET after the fault: {f!r}"
        f = call(c, rd, 2, kv_get(key))
        assert f[0] == RESPONSE and f[3] == b"\0\0\0\0\x01v", f"GET after the fault: {f!r}"


def echo_roundtrip(srv):
    with srv.connect() as c:
        c.sendall(b"still there?")
        got = b""
        while len(got) < 12:
            chunk = c.recv(100)
            assert chunk, "echo_server closed the probe connection"
            got += chunk
        assert got == b"still there?"


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


# ---- SIGPIPE under resets ----------------------------------------------------------------------

def case_sigpipe_echo():
    """4,096 bytes to echo_server, then a reset (SO_LINGER 0): the echo's write meets the
    reset. Found 1 of issue 9: the server died with exit 141, 10 times out of 10."""
    trials = 200 if ARGS.heavy else 20

    def body(srv):
        for i in range(trials):
            c = srv.connect()
            c.sendall(b"x" * (65536 if ARGS.heavy and i % 2 else 4096))
            rst_close(c)
            if i % 5 == 4:
                time.sleep(0.02)  # let the server write into the reset socket
        time.sleep(0.2)
        srv.assert_alive(f"after {trials} send-then-reset connections")
        echo_roundtrip(srv)
        figure(f"echo_server: {trials} of {trials} resets after a 4 KiB send survived")
    with_server(ARGS.echo_server, body)


def case_sigpipe_kv():
    """10 pipelined GETs of a 64 KiB value, then a reset without reading: kv_server's answers
    meet the reset (it died 6 times in 10)."""
    trials = 100 if ARGS.heavy else 20

    def body(srv):
        with srv.connect() as c:
            assert call(c, Reader(c), 1, kv_set(b"big", b"v" * 65536))[0] == RESPONSE
        get = b"".join(frame(REQUEST, i, kv_get(b"big")) for i in range(1, 11))
        for i in range(trials):
            c = srv.connect()
            c.sendall(get)
            # Closing with answers unread makes the kernel answer the server's next segment
            # with RST while the server still writes 640 KiB (6 in 10 deaths in the issue,
            # 9 in 10 measured with a plain close); every other trial resets at once.
            if i % 2:
                rst_close(c)
            else:
                c.close()
        time.sleep(0.2)
        srv.assert_alive(f"after {trials} pipelined-GET-then-reset connections")
        kv_roundtrip(srv)
        figure(f"kv_server: {trials} of {trials} resets under 10 x 64 KiB answers survived")
    with_server(ARGS.kv_server, body)


# ---- timeouts -------------------------------------------------------------------------------

def case_default_timeouts():
    """A server made with braid_server_opts_init() has idle/read and write timeouts on."""
    r = subprocess.run([ARGS.fault_server, "--check-defaults"], capture_output=True, text=True,
                       timeout=30)
    print(r.stdout.strip())
    assert r.returncode == 0, f"server defaults leave connections without timeouts: {r.stdout}"
    figure("default server timeouts: " + r.stdout.strip().replace("default ", ""))


def case_slowloris():
    """Connections that trickle a frame a byte every 0.5 s (each byte restarts a read or idle
    timeout, so only a whole-message deadline stops them), that never send, and that stop
    half-way through a frame, against a server with a 1.5 s message timeout and a 2 s idle
    timeout: every one is closed by the server, and a normal client's request latency (p99)
    stays bounded meanwhile."""
    n_trickle, n_silent, n_half = (1000, 100, 1000) if ARGS.heavy else (200, 100, 200)
    message_timeout_ms, idle_timeout_ms = 1500, 2000
    trickle_every = 0.5
    p99_bound_ms = 100 * slack()

    def body(srv):
        lat, failures, stop = [], [], threading.Event()

        def normal_client():
            try:
                with srv.connect() as c:
                    rd = Reader(c)
                    rid = 0
                    while not stop.is_set():
                        rid += 1
                        t0 = time.monotonic()
                        f = call(c, rd, rid, b"n" * 32)
                        lat.append(time.monotonic() - t0)
                        assert f[0] == RESPONSE and f[3] == b"n" * 32, f
                        time.sleep(0.01)
            except Exception as e:  # reported below
                failures.append(repr(e))

        sel = selectors.DefaultSelector()
        socks = {}
        hdr = frame(REQUEST, 1, b"p" * 1000)
        start = time.monotonic()
        for kind, n in (("trickle", n_trickle), ("silent", n_silent), ("half", n_half)):
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.setblocking(False)
                if kind == "half":
                    s.send(hdr[:26])  # the header and 10 of 1000 bytes
                socks[s] = {"kind": kind, "sent": 0, "closed": None, "t": time.monotonic()}
                sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic()
        client = threading.Thread(target=normal_client, daemon=True)
        client.start()
        next_trickle = opened
        deadline = opened + 10 * slack()
        open_left = len(socks)
        while open_left and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_trickle:
                next_trickle = now + trickle_every
                for s, st in socks.items():
                    if st["kind"] == "trickle" and st["closed"] is None:
                        try:
                            s.send(hdr[st["sent"] % len(hdr):][:1])
                            st["sent"] += 1
                        except OSError:
                            pass  # closed: the read below sees it
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, BlockingIOError) as e:
                    data = b"" if isinstance(e, ConnectionResetError) else None
                if data == b"":
                    socks[s]["closed"] = time.monotonic() - socks[s]["t"]  # since its open
                    sel.unregister(s)
                    open_left -= 1
        stop.set()
        client.join(10)
        for s in socks:
            s.close()
        srv.assert_alive("under slowloris")
        assert not failures, f"the normal client failed: {failures}"
        held = {k: sum(1 for st in socks.values() if st["kind"] == k and st["closed"] is None)
                for k in ("trickle", "silent", "half")}
        assert open_left == 0, f"connections still held after {deadline - opened:.0f} s: {held}"
        worst = {k: max(st["closed"] for st in socks.values() if st["kind"] == k)
                 for k in ("trickle", "silent", "half")}
        p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
        figure(f"slowloris: {n_trickle} trickling (1 B / {trickle_every} s), {n_silent} silent, "
               f"{n_half} half-sent frames, message timeout {message_timeout_ms} ms, idle "
               f"timeout {idle_timeout_ms} ms: all closed; "
               f"last closed at trickle {worst['trickle']:.2f} s, silent {worst['silent']:.2f} s, "
               f"half {worst['half']:.2f} s after each opened (opening took {opened - start:.2f} s)")
        figure(f"slowloris: normal client {len(lat)} requests, p50 {p50:.2f} ms, "
               f"p99 {p99:.2f} ms, max {max(lat) * 1000:.2f} ms (bound p99 {p99_bound_ms:.0f} ms)")
        assert p99 <= p99_bound_ms, f"normal client p99 {p99:.1f} ms over {p99_bound_ms} ms"
    with_server(ARGS.fault_server, body, "--message-timeout-ms", str(message_timeout_ms),
                "--idle-timeout-ms", str(idle_timeout_ms), "--write-timeout-ms", "2000")


def case_declared_frames():
    """Connections that send a header declaring a 1 MiB payload, then 10 bytes, then wait
    (issue 9: the frame buffer reserved the declared megabyte at once, so 1,000 such
    connections held 1 GB): the server's memory grows by what was sent, not what was
    declared."""
    n = 1000 if ARGS.heavy else 100
    bound_kib = 64

    def body(srv):
        base = settle_rss(srv, 0.3)
        base_data = srv.rss_kib("VmData")
        hdr = frame(REQUEST, 1, b"\0" * (1 << 20))[:16 + 10]
        socks = []
        for _ in range(n):
            s = srv.connect()
            s.sendall(hdr)
            socks.append(s)
        peak = settle_rss(srv, 1.0)
        per = (peak - base) / n
        # Untouched pages of a reservation are not resident: the reservation shows in the
        # memory the process asked for (VmData), which an overcommit limit would refuse.
        per_data = (srv.rss_kib("VmData") - base_data) / n
        for s in socks:
            s.close()
        srv.assert_alive(f"with {n} connections declaring 1 MiB frames")
        with srv.connect() as c:
            assert call(c, Reader(c), 2, b"after")[3] == b"after"
        figure(f"declared frames: {n} connections each sent a header declaring 1 MiB and 10 "
               f"bytes: server RSS +{per:.1f} KiB, memory reserved (VmData) +{per_data:.1f} "
               f"KiB per connection (bound {bound_kib} KiB each)")
        if not sanitized():
            assert per <= bound_kib, f"{per:.0f} KiB resident per connection that declared 1 MiB"
            assert per_data <= bound_kib, (f"{per_data:.0f} KiB reserved per connection that "
                                           f"declared 1 MiB")
    with_server(ARGS.fault_server, body)


# ---- clients that never read ------------------------------------------------------------------

def fill_without_reading(socks, payload, seconds):
    """Sends payload repeatedly on every socket, never reading, until the server stops taking
    bytes (all sockets blocked for 0.5 s) or seconds pass. Returns bytes sent per socket."""
    for s in socks:
        s.setblocking(False)
    sent = [0] * len(socks)
    end = time.monotonic() + seconds
    last_progress = time.monotonic()
    while time.monotonic() < end and time.monotonic() - last_progress < 0.5:
        progress = False
        for i, s in enumerate(socks):
            try:
                n = s.send(payload)
                sent[i] += n
                progress = progress or n > 0
            except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                pass
        if progress:
            last_progress = time.monotonic()
        else:
            time.sleep(0.01)
    return sent


def settle_rss(srv, seconds=1.0):
    """The server's RSS once it stops moving (max over a short window), in KiB."""
    end = time.monotonic() + seconds
    top = srv.rss_kib()
    while time.monotonic() < end:
        time.sleep(0.1)
        top = max(top, srv.rss_kib())
    return top


def case_never_reading_echo():
    """Clients that send and never read: echo stops reading them at its watermark, so each
    costs about its queue (1 MiB high watermark), not what it sent."""
    n = 4
    bound_kib = 4 << 10

    def body(srv):
        echo_roundtrip(srv)
        base = settle_rss(srv, 0.3)
        socks = [srv.connect() for _ in range(n)]
        sent = fill_without_reading(socks, b"e" * 65536, 10)
        peak = settle_rss(srv, 1.0)
        per = (peak - base) / n
        echo_roundtrip(srv)
        for s in socks:
            rst_close(s)
        figure(f"never-reading echo clients: {n} sent {min(sent) >> 20}-{max(sent) >> 20} MiB "
               f"each unread; server RSS +{per / 1024:.2f} MiB per client (bound "
               f"{bound_kib >> 10} MiB)")
        if not sanitized():
            assert per <= bound_kib, f"{per / 1024:.1f} MiB per never-reading echo client"
    with_server(ARGS.echo_server, body)


def case_never_reading_kv():
    """Clients that pipeline 1,000 GETs of a 64 KiB value and never read (issue 9: 59 MiB of
    server memory each): an rpc channel stops reading requests while its queued answers are
    over the high watermark, so each costs about its queue. Another client is served
    meanwhile."""
    n = 8 if ARGS.heavy else 4
    gets = 1000
    bound_kib = 4 << 10
    lat_bound = 0.5 * slack()

    def body(srv):
        with srv.connect() as c:
            assert call(c, Reader(c), 1, kv_set(b"big", b"v" * 65536))[0] == RESPONSE
        kv_roundtrip(srv)
        base = settle_rss(srv, 0.3)
        socks = [srv.connect() for _ in range(n)]
        batch = b"".join(frame(REQUEST, i, kv_get(b"big")) for i in range(1, gets + 1))
        for s in socks:
            s.sendall(batch)  # 21 KiB: the socket buffers take it whether the server reads or not
        peak = settle_rss(srv, 2.0)
        per = (peak - base) / n
        t0 = time.monotonic()
        kv_roundtrip(srv, b"other")
        other = time.monotonic() - t0
        still_open = 0
        for s in socks:
            s.setblocking(False)
            try:
                still_open += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                still_open += 1
            except ConnectionResetError:
                pass
            rst_close(s)
        figure(f"never-reading kv clients: {n} x {gets} pipelined GETs of 64 KiB "
               f"({gets * 64 // 1024} MiB of answers each), never read: server RSS "
               f"+{per / 1024:.2f} MiB per client (bound {bound_kib >> 10} MiB), {still_open} of "
               f"{n} still open after 2 s; another client's SET+GET {other * 1000:.1f} ms")
        if not sanitized():
            assert per <= bound_kib, f"{per / 1024:.1f} MiB per never-reading kv client"
        assert other <= lat_bound, f"another client waited {other:.2f} s"
    with_server(ARGS.kv_server, body)


# ---- output amplification ---------------------------------------------------------------------

def case_mget_amplification():
    """After SET of a 1 MiB value, MGET naming it 17 times would answer 17.8 MB, over the
    16 MiB max_payload a sender MUST NOT exceed: that request gets ERROR TOO_BIG, the
    connection goes on. Naming it 1,000 times (a 5 KB request) also gets TOO_BIG, without
    the server's memory growing by the answer's size or stalling another client."""
    rss_bound_kib = 64 << 10  # growth allowed while refusing (an answer over 16 MiB is never built whole)
    lat_bound = 0.5 * slack()

    def body(srv):
        with srv.connect() as c:
            rd = Reader(c)
            assert call(c, rd, 1, kv_set(b"m", b"v" * (1 << 20)))[0] == RESPONSE
            base = settle_rss(srv, 0.3)
            f = call(c, rd, 2, kv_mget([b"m"] * 17), timeout=20)
            assert f[0] == ERROR, (f"MGET x17 of 1 MiB: got a {len(f[3])}-byte "
                                   f"{'RESPONSE' if f[0] == RESPONSE else f[0]}, want ERROR TOO_BIG")
            code = struct.unpack(">H", f[3][:2])[0]
            assert code == WIRE_TOO_BIG, f"MGET x17: error code {code}, want TOO_BIG ({WIRE_TOO_BIG})"
            f = call(c, rd, 3, kv_get(b"m"), timeout=10)
            assert f[0] == RESPONSE and len(f[3]) == 5 + (1 << 20), "GET after the refused MGET"

            # 1,000 names, while another client works and the RSS is watched.
            peak = [srv.rss_kib()]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    try:
                        peak[0] = max(peak[0], srv.rss_kib())
                    except OSError:
                        return
                    if peak[0] > base + (512 << 10):  # do not take the machine down
                        srv.kill()
                        return
                    time.sleep(0.01)
            w = threading.Thread(target=watch, daemon=True)
            w.start()
            t0 = time.monotonic()
            c.sendall(frame(REQUEST, 4, kv_mget([b"m"] * 1000)))
            t1 = time.monotonic()
            kv_roundtrip(srv, b"bystander")
            other = time.monotonic() - t1
            f = rd.next(timeout=30)
            took = time.monotonic() - t0
            stop.set()
            w.join(5)
            srv.assert_alive("after MGET x1000 of 1 MiB")
            assert f is not None and f[0] == ERROR and f[2] == 4, f"MGET x1000: got {f and f[:3]}"
            code = struct.unpack(">H", f[3][:2])[0]
            assert code == WIRE_TOO_BIG, f"MGET x1000: error code {code}, want TOO_BIG"
            grew = peak[0] - base
            figure(f"MGET amplification: x17 and x1000 of a 1 MiB value -> ERROR TOO_BIG; x1000 "
                   f"answered in {took * 1000:.1f} ms, server RSS +{grew / 1024:.1f} MiB "
                   f"(bound {rss_bound_kib >> 10} MiB); a bystander's SET+GET {other * 1000:.1f} ms")
            if not sanitized():
                assert grew <= rss_bound_kib, f"RSS grew {grew / 1024:.0f} MiB refusing MGET x1000"
            assert other <= lat_bound, f"a bystander waited {other:.2f} s"
        kv_roundtrip(srv)
    with_server(ARGS.kv_server, body)


# ---- reset storm ------------------------------------------------------------------------------

def storm(srv, conns, wave=100):
    """conns connections, wave at a time: each pipelines 10 GETs of the 64 KiB value and
    resets without reading."""
    get = b"".join(frame(REQUEST, i, kv_get(b"big")) for i in range(1, 11))
    done = 0
    while done < conns:
        socks = []
        for _ in range(min(wave, conns - done)):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(get)
            socks.append(s)
        time.sleep(0.01)
        for s in socks:
            rst_close(s)
        done += len(socks)


def case_reset_storm():
    """Thousands of connections that pipeline GETs of 64 KiB and reset (issue 9: kv_server
    stayed at 377-405 MB for good): once the burst is over the server's RSS returns to
    within 20% of its value before the burst."""
    conns = 10000 if ARGS.heavy else 2000
    # Under a sanitizer the RSS is not asserted (ASan's quarantine keeps freed memory), so
    # there is no point waiting for it to come down.
    settle_max = 1.0 if sanitized() else 15.0

    def body(srv):
        with srv.connect() as c:
            assert call(c, Reader(c), 1, kv_set(b"big", b"v" * 65536))[0] == RESPONSE
        # Warm-up, so one-time allocations are not counted as the burst's: a few clients
        # that read their answers (not a burst: the baseline must not hold a burst's pool).
        for _ in range(5):
            with srv.connect() as c:
                rd = Reader(c)
                c.sendall(b"".join(frame(REQUEST, i, kv_get(b"big")) for i in range(1, 11)))
                for _ in range(10):
                    assert rd.next()[0] == RESPONSE
        time.sleep(0.5)
        base = settle_rss(srv, 1.0)
        t0 = time.monotonic()
        peak = [base]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], srv.rss_kib())
                except OSError:
                    return
                time.sleep(0.02)
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        storm(srv, conns, wave=500 if ARGS.heavy else 100)
        stop.set()
        w.join(5)
        burst_s = time.monotonic() - t0
        srv.assert_alive(f"after a storm of {conns} resets")
        t1 = time.monotonic()
        rss = srv.rss_kib()
        while rss > base * 1.2 and time.monotonic() - t1 < settle_max:
            time.sleep(0.25)
            rss = srv.rss_kib()
        settled = time.monotonic() - t1
        kv_roundtrip(srv)
        figure(f"reset storm: {conns} connections x 10 pipelined 64 KiB GETs then RST in "
               f"{burst_s:.1f} s; RSS {base / 1024:.1f} MiB before, peak {peak[0] / 1024:.1f} MiB, "
               f"{rss / 1024:.1f} MiB {settled:.1f} s after (bound {base * 1.2 / 1024:.1f} MiB "
               f"within {settle_max:.0f} s)")
        if not sanitized():
            assert rss <= base * 1.2, (f"RSS {rss / 1024:.1f} MiB {settle_max:.0f} s after the "
                                       f"burst, over 120% of {base / 1024:.1f} MiB")
    with_server(ARGS.kv_server, body)


# ---- EMFILE -----------------------------------------------------------------------------------

def case_emfile():
    """The server runs out of file descriptors (RLIMIT_NOFILE 64) with more clients waiting:
    it must not spin while it cannot accept, must serve the waiting clients once descriptors
    free up, and lose none of their requests."""
    nofile, clients = 64, 100
    cpu_bound = 0.5 * slack()

    def body(srv):
        socks = []
        for i in range(clients):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(frame(REQUEST, 1, b"c%d" % i))
            socks.append(s)
        time.sleep(0.5)
        cpu0 = srv.cpu_s()
        time.sleep(2.0)
        spin = srv.cpu_s() - cpu0
        srv.assert_alive("at EMFILE")
        answered, waiting = [], []
        for s in socks:
            s.setblocking(False)
            try:
                data = s.recv(4096)
                (answered if data else waiting).append(s)
            except BlockingIOError:
                waiting.append(s)
        assert answered and waiting, (f"{len(answered)} answered, {len(waiting)} waiting: the "
                                      f"limit of {nofile} descriptors was not reached")
        figure(f"EMFILE: RLIMIT_NOFILE {nofile}, {clients} clients: {len(answered)} served, "
               f"{len(waiting)} waiting; server CPU {spin:.3f} s over 2 s at EMFILE (bound "
               f"{cpu_bound:.1f} s)")
        assert spin <= cpu_bound, f"server used {spin:.2f} s of CPU in 2 s at EMFILE: spinning"
        for s in answered:
            s.close()
        t0 = time.monotonic()
        for i, s in enumerate(waiting):
            s.setblocking(True)
            rd = Reader(s)
            f = rd.next(timeout=10)
            assert f is not None and f[0] == RESPONSE, f"a waiting client got {f!r}"
        recovered = time.monotonic() - t0
        for s in waiting:
            s.close()
        with srv.connect() as c:
            assert call(c, Reader(c), 7, b"after")[3] == b"after"
        figure(f"EMFILE: every waiting client answered {recovered:.2f} s after descriptors "
               f"freed up; nothing lost")
    with_server(ARGS.fault_server, body, nofile=nofile)


# ---- drain under load -------------------------------------------------------------------------

def case_drain_under_load():
    """SIGTERM while clients pipeline SETs on every worker: each connection gets one GOAWAY,
    every request up to its last_id is answered once and successfully, none above it is
    executed (refused SHUTTING_DOWN or dropped), the connections end cleanly and the server
    exits 0 (examples/kv_drain.py checks the same at rest, in the 'examples' suite)."""
    n = 8 if ARGS.heavy else 4
    results = []

    def client(srv, idx, ready):
        c = srv.connect()
        rd = Reader(c)
        sent, answers, goaway = [], {}, None
        rid = 0
        window = 32
        c.settimeout(5)
        ready.release()
        try:
            while goaway is None and rid < 200000:
                while goaway is None and len(sent) - len(answers) < window:
                    rid += 1
                    c.sendall(frame(REQUEST, rid, kv_set(b"d%d-%d" % (idx, rid), b"x" * 16)))
                    sent.append(rid)
                f = rd.next(10)
                if f is None:
                    break
                if f[0] == GOAWAY:
                    goaway = struct.unpack(">IH", f[3][:6])
                else:
                    assert f[2] not in answers, f"request {f[2]} answered twice"
                    answers[f[2]] = f
            while True:  # after the GOAWAY: read to the end
                f = rd.next(10)
                if f is None:
                    break
                assert f[0] != GOAWAY, "a second GOAWAY"
                assert f[2] not in answers, f"request {f[2]} answered twice"
                answers[f[2]] = f
            results.append((idx, sent, answers, goaway, None))
        except Exception as e:
            results.append((idx, sent, answers, goaway, repr(e)))
        finally:
            c.close()

    srv = Server(ARGS.kv_server, "--workers", "2")
    try:
        ready = threading.Semaphore(0)
        threads = [threading.Thread(target=client, args=(srv, i, ready), daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        for _ in threads:
            ready.acquire(timeout=10)
        time.sleep(0.5)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(20)
        srv.proc.communicate(timeout=15)
        took = time.monotonic() - t0
        assert srv.proc.returncode == 0, f"kv_server exited {srv.proc.returncode} after SIGTERM"
    finally:
        srv.kill()
    total_ok = 0
    for idx, sent, answers, goaway, err in sorted(results):
        assert err is None, f"client {idx}: {err}"
        assert goaway is not None, f"client {idx}: no GOAWAY"
        last_id, code = goaway
        assert code == 0, f"client {idx}: GOAWAY code {code}"
        for rid in sent:
            f = answers.get(rid)
            if rid <= last_id:
                assert f is not None and f[0] == RESPONSE, f"client {idx}: request {rid} <= " \
                                                           f"last_id {last_id} got {f!r}"
                total_ok += 1
            else:
                assert f is None or (f[0] == ERROR and struct.unpack(">H", f[3][:2])[0] ==
                                     WIRE_SHUTTING_DOWN), f"client {idx}: request {rid} > " \
                                                          f"last_id {last_id} got {f!r}"
    assert len(results) == n
    figure(f"drain under load: {n} pipelining clients on 2 workers, SIGTERM: {total_ok} "
           f"requests up to last_id answered, none lost or doubled; exit 0 after {took:.2f} s")


# ---- malformed input --------------------------------------------------------------------------

def seeds_for_malformed():
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    gzbody = gz.compress(kv_get(b"k")) + gz.flush()
    batch = struct.pack(">I", 2) + struct.pack(">I", 4) + kv_get(b"k")[:4] + \
        struct.pack(">I", 3) + b"\x01\x00\x01"
    return [
        frame(REQUEST, 1, kv_get(b"k")),
        frame(REQUEST, 2, kv_set(b"k", b"value")),
        frame(REQUEST, 3, kv_mget([b"k", b"j"])),
        frame(REQUEST, 4, batch, FLAG_BATCH),
        frame(REQUEST, 5, gzbody, FLAG_GZIP),
        frame(PING, 6, b"12345678"),
        frame(REQUEST, 7, kv_get(b"k")) + frame(REQUEST, 8, kv_set(b"j", b"")),
    ]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(6)
        if what == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif what == 1 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif what == 2:
            del data[rng.randrange(len(data) + 1):]
        elif what == 3:
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif what == 4 and len(data) >= 16:
            # a header field set to an edge value: type, flags, id or length
            off = rng.choice([3, 4, 8, 12])
            val = rng.choice([0, 1, 0x7F, 0xFF, 0xFFFFFFFF, 0x01000001])
            if off >= 8:
                data[off:off + 4] = struct.pack(">I", val & 0xFFFFFFFF)
            else:
                data[off] = val & 0xFF
        else:
            data += data[:rng.randint(0, len(data))]
    return bytes(data)


def case_malformed():
    """Seeded random mutations of valid frames (GET, SET, MGET, batch, gzip, PING), one
    connection each, half-closed after the send: the server answers or refuses, always ends
    the connection within 3 s of the client's FIN, sends only well-formed frames, and
    survives to serve a normal client."""
    count = 30000 if ARGS.heavy else 3000
    rng = random.Random(int(os.environ.get("BRAID_FAULT_SEED", "9")))
    seeds = seeds_for_malformed()

    def body(srv):
        t0 = time.monotonic()
        stats = {"answers": 0, "fatal": 0}
        for i in range(count):
            data = mutate(rng, rng.choice(seeds))
            with srv.connect(timeout=3) as c:
                try:
                    c.sendall(data)
                    c.shutdown(socket.SHUT_WR)
                except (ConnectionResetError, BrokenPipeError):
                    continue
                rd = Reader(c)
                while True:
                    try:
                        f = rd.next(timeout=3)
                    except ConnectionResetError:
                        break
                    except AssertionError as e:
                        raise AssertionError(f"input {i} ({data.hex()}): {e}")
                    if f is None:
                        break
                    if f[0] == ERROR and f[2] == 0:
                        stats["fatal"] += 1
                    else:
                        stats["answers"] += 1
            if i % 100 == 0:
                srv.assert_alive(f"after malformed input {i}")
        srv.assert_alive(f"after {count} malformed inputs")
        kv_roundtrip(srv)
        figure(f"malformed input: {count} seeded mutations (seed "
               f"{os.environ.get('BRAID_FAULT_SEED', '9')}) in {time.monotonic() - t0:.1f} s: "
               f"{stats['answers']} answers, {stats['fatal']} connection errors, every connection "
               f"ended, server alive; RSS {srv.rss_kib() / 1024:.1f} MiB after")
    with_server(ARGS.kv_server, body)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--echo-server", required=True)
    p.add_argument("--kv-server", required=True)
    p.add_argument("--fault-server", required=True)
    p.add_argument("--sanitize", default="none")
    p.add_argument("--heavy", action="store_true")
    p.add_argument("case")
    ARGS = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    fn = globals().get("case_" + ARGS.case)
    if not fn:
        sys.exit(f"fault.py: no case {ARGS.case}")
    t0 = time.monotonic()
    fn()
    print(f"{ARGS.case}: ok in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
