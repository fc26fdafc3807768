#!/usr/bin/env python3
"""Tests of examples/echo_server and examples/echo_client, run as real processes on loopback.

Usage: test_echo.py ECHO_SERVER ECHO_CLIENT CASE   (meson test runs one CASE per test)
Every wait is bounded; a case fails by raising (non-zero exit with a message).
"""
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

SERVER, CLIENT = sys.argv[1], sys.argv[2]
LINE = re.compile(r"^listening on (\S+):(\d+)$")


class Server:
    """echo_server on an ephemeral port, with its one stdout line parsed."""

    def __init__(self, *args, host="127.0.0.1"):
        self.proc = subprocess.Popen([SERVER, "--host", host, "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self._first_line(timeout=10)
        m = LINE.match(line)
        assert m, f"first stdout line is {line!r}, want 'listening on ADDR:PORT'"
        self.host, self.port = host, int(m.group(2))
        assert self.port > 0, line

    def _first_line(self, timeout):
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"echo_server printed no 'listening on' line; stderr: {err}")
        return box[0].rstrip("\n")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals the server; it must drain, print nothing more on stdout, and exit 0."""
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"echo_server did not exit within {timeout}s of {sig.name}")
        assert self.proc.returncode == 0, f"exit status {self.proc.returncode}; stderr: {err}"
        assert out == "", f"more than one stdout line: {out!r}"
        return err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def client(server, *args, expect=0, timeout=60):
    cmd = [CLIENT, "--host", server.host, "--port", str(server.port), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == expect, \
        f"{' '.join(cmd)}: exit {r.returncode}, want {expect}\n{r.stdout}{r.stderr}"
    return r.stdout


def check_report(out, requests):
    assert re.search(rf"^{requests} requests of ", out, re.M), out
    assert re.search(r"[0-9.]+ requests/s", out), out
    for p in ("p50", "p90", "p99", "p99.9", "max"):
        assert re.search(rf"\b{re.escape(p)} [0-9.]+", out), f"no {p} in {out!r}"


def with_server(body, *server_args, host="127.0.0.1", sig=signal.SIGTERM):
    s = Server(*server_args, host=host)
    try:
        body(s)
        s.stop(sig)
    finally:
        s.kill()


def connect(server):
    return socket.create_connection((server.host, server.port), timeout=10)


def recv_all(sock):
    """Reads until EOF (the server closed its side); fails on a timeout or reset."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# ---- cases ----------------------------------------------------------------------------------

def case_pingpong():
    with_server(lambda s: check_report(
        client(s, "--conns", "2", "--requests", "2000", "--size", "64"), 2000))


def case_pipelined():
    with_server(lambda s: check_report(
        client(s, "--conns", "4", "--requests", "8000", "--size", "1024", "--pipeline", "16"),
        8000))


def case_uneven_split():
    # 7 requests over 3 connections (3 + 2 + 2), and more connections than requests.
    def body(s):
        check_report(client(s, "--conns", "3", "--requests", "7", "--pipeline", "2"), 7)
        check_report(client(s, "--conns", "5", "--requests", "2"), 2)
    with_server(body)


def case_large_tiny_buffers():
    # 1 MiB requests through 4 KiB socket buffers: many partial writes and reads per request.
    with_server(lambda s: check_report(
        client(s, "--requests", "6", "--size", str(1 << 20), "--pipeline", "2"), 6),
        "--sndbuf", "4096", "--rcvbuf", "4096")


def case_workers():
    with_server(lambda s: check_report(
        client(s, "--conns", "8", "--requests", "4000", "--size", "256", "--pipeline", "4"),
        4000), "--workers", "2")


def case_ipv6():
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        print("no IPv6 loopback here; skipping")
        sys.exit(77)
    s = Server(host="::1")
    try:
        check_report(client(s, "--requests", "500"), 500)
        s.stop()
    finally:
        s.kill()


def case_half_close():
    # The client sends, then shuts down its sending side; the server must echo every byte
    # and then close its side (we see EOF), in several shapes.
    def body(s):
        for size, pieces in ((0, 1), (1, 1), (100, 1), (300_000, 1), (64 * 1024, 64)):
            payload = bytes((i * 7 + size) & 0xFF for i in range(size))
            with connect(s) as sock:
                step = max(1, size // pieces)
                for off in range(0, size, step):
                    sock.sendall(payload[off:off + step])
                sock.shutdown(socket.SHUT_WR)
                got = recv_all(sock)
            assert got == payload, f"size {size}: got {len(got)} bytes back, want {size}"
    with_server(body)


def case_slow_reader():
    # A client that sends 8 MiB before reading anything: the server stops reading from it at
    # its high watermark instead of queueing everything, and still echoes every byte.
    def body(s):
        payload = os.urandom(8 << 20)
        with connect(s) as sock:
            sock.settimeout(30)
            sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                      sock.shutdown(socket.SHUT_WR)))
            sender.start()
            time.sleep(0.5)  # let the server's queue fill while we do not read
            got = recv_all(sock)
            sender.join(30)
        assert got == payload, f"got {len(got)} bytes back, want {len(payload)}"
    with_server(body)


def case_sigterm_idle():
    # Nothing connected: SIGTERM exits 0 at once.
    s = Server()
    try:
        t0 = time.monotonic()
        s.stop(signal.SIGTERM)
        assert time.monotonic() - t0 < 5, "drain of an idle server took too long"
    finally:
        s.kill()


def case_sigint_open_connection():
    # A connection that stays open: SIGINT drains, the connection is closed at the drain
    # deadline (we see EOF, after what we sent was echoed), and the server exits 0.
    s = Server()
    try:
        with connect(s) as sock:
            sock.sendall(b"before the drain")
            assert sock.recv(100) == b"before the drain"
            s.proc.send_signal(signal.SIGINT)
            sock.settimeout(15)
            assert recv_all(sock) == b"", "data after the drain started"
        out, err = s.proc.communicate(timeout=15)
        assert s.proc.returncode == 0, f"exit status {s.proc.returncode}; stderr: {err}"
        assert out == "", f"more than one stdout line: {out!r}"
    finally:
        s.kill()


def case_client_detects_mismatch():
    # A broken "echo" server that flips one byte: echo_client must notice and exit 1. This is
    # what makes the byte checks above worth something.
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)

    def serve():
        conn, _ = lst.accept()
        with conn:
            total = 0
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf = bytearray(data)
                if total <= 1000 < total + len(buf):
                    buf[1000 - total] ^= 0x01
                total += len(buf)
                conn.sendall(bytes(buf))

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    class Fake:
        host, port = "127.0.0.1", lst.getsockname()[1]
    out = client(Fake, "--requests", "100", "--size", "64", expect=1, timeout=30)
    assert "requests/s" not in out
    lst.close()


def case_client_refused():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    lst.close()  # nothing listens there now

    class Nobody:
        host = "127.0.0.1"
    Nobody.port = port
    client(Nobody, "--requests", "1", expect=1, timeout=30)


def case_idle_timeout():
    # A client that goes quiet is closed by the idle timeout (--idle-timeout-ms; servers
    # start with 75 s), after what it sent was echoed; the server goes on.
    def body(s):
        with connect(s) as sock:
            sock.sendall(b"then silence")
            assert sock.recv(100) == b"then silence"
            t0 = time.monotonic()
            assert recv_all(sock) == b"", "expected the server to close the quiet connection"
            assert time.monotonic() - t0 >= 0.4, "closed before the idle timeout"
        client(s, "--requests", "10")
    with_server(body, "--idle-timeout-ms", "500")


def case_reset_storm():
    # Issue 9's reproduction: 4,096 bytes then a reset (SO_LINGER 0), over and over. A write
    # to a reset connection raised SIGPIPE and killed the server (exit 141).
    def body(s):
        for _ in range(50):
            sock = connect(s)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"x" * 4096)
            sock.close()
        time.sleep(0.2)
        assert s.proc.poll() is None, f"echo_server died: exit {s.proc.returncode}"
        client(s, "--requests", "10")
    with_server(body)


def case_bad_arguments():
    for args in (["--port", "70000"], ["--workers", "-1"], ["--bogus", "1"], ["--port"]):
        r = subprocess.run([SERVER, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and r.stdout == "", f"echo_server {args}: {r.returncode}"
    for args in (["--host", "127.0.0.1"], ["--host", "127.0.0.1", "--port", "1", "--size", "0"]):
        r = subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0, f"echo_client {args}: {r.returncode}"


if __name__ == "__main__":
    globals()["case_" + sys.argv[3]]()
