#!/usr/bin/env python3
"""examples/http_get.c as a real process against real servers on loopback: braid's
examples/http_server (keep-alive, gzip with --compressed, pipelining, many requests over few
connections) and python3's http.server (HTTP/1.0: one connection per request; -o FILE).

usage: test_http_get.py HTTP_GET HTTP_SERVER"""
import os
import re
import subprocess
import sys
import tempfile


def check(cond, what, out=None):
    if not cond:
        raise SystemExit("FAILED: %s\n%s" % (what, out or ""))


def start_braid(binary):
    p = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    check(line.startswith("listening on "), "http_server started", line)
    return p, int(line.rsplit(":", 1)[1])


def start_python(root):
    p = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                          "--directory", root], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r"port (\d+)", line)
    check(m, "http.server started", line)
    return p, int(m.group(1))


def run(http_get, *args):
    r = subprocess.run([http_get] + list(args), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def field(out, name):
    m = re.search(r"^%s:\s+(.*)$" % name, out, re.M)
    return m.group(1) if m else ""


def main():
    http_get, http_server = sys.argv[1], sys.argv[2]
    srv, port = start_braid(http_server)
    try:
        base = "http://127.0.0.1:%d" % port
        # 200 requests, 4 at a time: all 2xx, at most 4 connections (keep-alive)
        rc, out, err = run(http_get, "-c", "4", "-n", "200", base + "/")
        check(rc == 0, "200 requests", out + err)
        check("2xx 200," in field(out, "status"), "all 2xx", out)
        conns = int(re.match(r"(\d+) opened", field(out, "connections")).group(1))
        check(1 <= conns <= 4, "at most 4 connections for 200 requests", out)
        check("p99" in field(out, "latency"), "latency percentiles", out)
        check("done" in err, "progress line on stderr", err)
        # --compressed: /metrics is sent gzip'd, decoded bytes exceed wire bytes
        rc, out, err = run(http_get, "--compressed", base + "/metrics")
        check(rc == 0, "--compressed", out + err)
        m = re.match(r"(\d+) body bytes \((\d+) on the wire", field(out, "bytes"))
        check(m and int(m.group(1)) > int(m.group(2)), "gzip decoded", out)
        # --pipeline: one connection carries them all
        rc, out, err = run(http_get, "--pipeline", "-c", "8", "-n", "64", base + "/")
        check(rc == 0 and "2xx 64," in field(out, "status"), "pipelined", out + err)
        # a 404 makes the exit status 1; a refused connect is an error with its phase
        rc, out, err = run(http_get, base + "/no/such/page")
        check(rc == 1 and "4xx 1," in field(out, "status"), "404 counted", out)
        rc, out, err = run(http_get, "https://127.0.0.1:%d/" % port)
        # with TLS: a TLS error against this plain server; without: refused as unsupported
        check(rc == 1 and ("not supported" in err or "BRAID_ETLS" in err), "https error clear", err)
    finally:
        srv.terminate()
        srv.wait(timeout=10)
    # python3's http.server: HTTP/1.0, -o FILE
    with tempfile.TemporaryDirectory() as d:
        data = os.urandom(100000)
        with open(os.path.join(d, "blob.bin"), "wb") as f:
            f.write(data)
        py, pport = start_python(d)
        try:
            out_path = os.path.join(d, "got.bin")
            rc, out, err = run(http_get, "-o", out_path, "http://127.0.0.1:%d/blob.bin" % pport)
            check(rc == 0, "-o FILE", out + err)
            with open(out_path, "rb") as f:
                check(f.read() == data, "-o wrote the body")
            rc, out, err = run(http_get, "-c", "2", "-n", "6",
                               "http://127.0.0.1:%d/blob.bin" % pport)
            check(rc == 0 and field(out, "connections").startswith("6 opened"),
                  "HTTP/1.0: a connection per request", out + err)
        finally:
            py.terminate()
            py.wait(timeout=10)
    rc, out, err = run(http_get)
    check(rc == 2 and "usage" in err, "usage")
    print("http_get: ok")


if __name__ == "__main__":
    main()
