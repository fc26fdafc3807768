#!/usr/bin/env python3
"""examples/http_server.c as a real process on loopback, with real clients: curl (keep-alive
reuse visible in -v, --compressed), python's urllib and http.client (keep-alive, gzip request
bodies), raw sockets (pipelining), then SIGTERM with an idle keep-alive connection open:
the drain closes it at once and the server exits 0.

usage: test_http_example.py HTTP_SERVER CASE [--workers N]"""
import gzip
import json
import socket
import subprocess
import sys
import time
import http.client
import urllib.request


def start(binary, workers, root=None):
    argv = [binary, "--port", "0", "--workers", str(workers)]
    if root:
        argv += ["--root", root]
    p = subprocess.Popen(argv,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit("no 'listening on' line: %r %s" % (line, p.stderr.read()))
    port = int(line.rsplit(":", 1)[1])
    return p, port


def stop(p):
    p.send_signal(15)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("server did not exit after SIGTERM")
    if rc != 0:
        raise SystemExit("server exited %d: %s" % (rc, p.stderr.read()))


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)


def case_clients(binary, workers):
    p, port = start(binary, workers)
    base = "http://127.0.0.1:%d" % port
    try:
        # urllib
        with urllib.request.urlopen(base + "/") as r:
            check(r.status == 200 and r.read() == b"Hello, World!", "urllib GET /")
        # curl: two requests on one connection, reuse visible in -v
        out = subprocess.run(["curl", "-sv", base + "/", base + "/"], capture_output=True,
                             text=True, timeout=20)
        check(out.returncode == 0 and out.stdout == "Hello, World!Hello, World!", "curl twice")
        check("Re-using existing connection" in out.stderr, "curl reused the connection")
        # curl --compressed: /metrics is large, compressible text
        out = subprocess.run(["curl", "-s", "--compressed", "-D", "-", base + "/metrics"],
                             capture_output=True, text=True, timeout=20)
        check("content-encoding: gzip" in out.stdout.lower(), "metrics gzip'd")
        check("vary: accept-encoding" in out.stdout.lower(), "Vary")
        check('braid_http_requests_total{class="2xx"}' in out.stdout, "metrics text")
        # http.client: keep-alive, a gzip'd POST body, memoized /fib
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        body = b"braid " * 5000
        c.request("POST", "/echo", gzip.compress(body),
                  {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        r = c.getresponse()
        data = r.read()
        if r.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        check(r.status == 200 and data == body, "gzip echo")
        answers = []
        for _ in range(3):
            c.request("GET", "/fib?n=27")
            r = c.getresponse()
            answers.append(r.read())
        check(answers == [b"196418\n"] * 3, "fib: %r" % answers)
        c.request("GET", "/fib?n=99")
        r = c.getresponse()
        r.read()
        check(r.status == 400, "fib bound")
        c.request("GET", "/stats")
        r = c.getresponse()
        stats = json.loads(r.read())
        check(stats["cache_hits"] >= 2, "cache hits: %r" % stats)
        check(stats["keepalive_reuse"] >= 5, "reuse: %r" % stats)
        check(stats["status"]["2xx"] >= 8, "2xx: %r" % stats)
        check(stats["compressed"] >= 1, "compressed: %r" % stats)
        c.close()
        # raw pipelining: three requests in one write, three answers in order
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /fib?n=20 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
                  b"GET /fib?n=10 HTTP/1.1\r\nConnection: close\r\n\r\n")
        got = b""
        s.settimeout(10)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        i, j, k = got.find(b"6765\n"), got.find(b"Hello, World!"), got.find(b"\r\n\r\n55\n")
        check(0 <= i < j < k, "pipelined order: %r" % got)
        # an idle keep-alive connection while draining: closed at once, exit 0
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        idle.request("GET", "/")
        idle.getresponse().read()
        t0 = time.monotonic()
        stop(p)
        check(time.monotonic() - t0 < 4.0, "drain waited for the idle connection")
    finally:
        if p.poll() is None:
            p.kill()


def case_static(binary, workers):
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="braid-http-example-")
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write("<h1>braid</h1>")
    with open(os.path.join(d, "data.txt"), "w") as f:
        f.write("0123456789" * 1000)
    blob = os.urandom(3 << 20)  # large and binary: sent zero copy (sendfile)
    with open(os.path.join(d, "blob.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(os.path.dirname(d), os.path.basename(d) + "-secret"), "w") as f:
        f.write("TOPSECRET")
    os.symlink(os.path.join(os.path.dirname(d), os.path.basename(d) + "-secret"),
               os.path.join(d, "leak"))
    p, port = start(binary, workers, d)
    base = "http://127.0.0.1:%d/static/" % port
    try:
        out = subprocess.run(["curl", "-s", "-D", "-", base], capture_output=True, text=True,
                             timeout=20).stdout
        check("<h1>braid</h1>" in out and "Cache-Control: public, max-age=3600" in out, "index")
        etag = [l.split(": ", 1)[1].strip() for l in out.splitlines() if l.startswith("ETag: ")][0]
        # revalidation: 304 with the ETag, and with the date
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                               "If-None-Match: " + etag, base], capture_output=True, text=True,
                              timeout=20).stdout
        check(code == "304", "304 on If-None-Match: %s" % code)
        lm = [l.split(": ", 1)[1].strip() for l in out.splitlines()
              if l.startswith("Last-Modified: ")][0]
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                               "If-Modified-Since: " + lm, base], capture_output=True,
                              text=True, timeout=20).stdout
        check(code == "304", "304 on If-Modified-Since: %s" % code)
        # curl -r: a range
        r = subprocess.run(["curl", "-s", "-r", "10-24", "-w", " %{http_code}", base + "data.txt"],
                           capture_output=True, text=True, timeout=20).stdout
        check(r == "012345678901234 206", "range: %r" % r)
        # --compressed: text is gzip'd on the way
        r = subprocess.run(["curl", "-s", "--compressed", "-D", "-", base + "data.txt"],
                           capture_output=True, text=True, timeout=20).stdout
        check("Content-Encoding: gzip" in r and r.endswith("0123456789" * 1000), "gzip file")
        # a large binary file, whole and a range, with sendfile (the stats say so)
        r = subprocess.run(["curl", "-s", base + "blob.bin"], capture_output=True, timeout=20)
        check(r.returncode == 0 and r.stdout == blob, "large file byte-exact")
        r = subprocess.run(["curl", "-s", "-r", "100000-2100000", base + "blob.bin"],
                           capture_output=True, timeout=20)
        check(r.returncode == 0 and r.stdout == blob[100000:2100001], "large range byte-exact")
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % port) as resp:
            stats = json.loads(resp.read())
        check(stats["sendfile"] >= 2 and stats["sendfile_bytes"] >= (3 << 20) + 2000001,
              "sendfile used: %r" % stats)
        # traversal and a symlink out
        for path in ["../", "%2e%2e/", "..%2f" + os.path.basename(d) + "-secret", "leak"]:
            r = subprocess.run(["curl", "-s", "--path-as-is", base + path], capture_output=True,
                               text=True, timeout=20).stdout
            check("TOPSECRET" not in r, "served outside the root via %s" % path)
        stop(p)
    finally:
        if p.poll() is None:
            p.kill()
        subprocess.run(["rm", "-rf", d, d + "-secret"])


def case_bad_arguments(binary, workers):
    r = subprocess.run([binary, "--port", "70000"], capture_output=True, text=True, timeout=10)
    check(r.returncode == 2 and "usage" in r.stderr, "bad port refused")


CASES = {"clients": case_clients, "static": case_static, "bad_arguments": case_bad_arguments}

if __name__ == "__main__":
    binary, case = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--workers" else 1
    CASES[case](binary, workers)
    print("ok")
