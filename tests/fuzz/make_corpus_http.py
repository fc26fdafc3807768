#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_http_request in tests/fuzz/corpus/http_request/ (run once;
the files are committed). The first byte of each seed is the write size the target cuts the
rest into (0: one write)."""
import gzip
import os
import zlib

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "http_request")
os.makedirs(here, exist_ok=True)

seeds = {
    "get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "get_gzip": b"GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=0.5, deflate\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    "pipelined": b"GET /later HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /later HTTP/1.1\r\n\r\n"
                 b"GET /big HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "echo": b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
    "stream": b"POST /s HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
    "stream_chunked": b"POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n",
    "stream_refuse": b"POST /s?refuse HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcd",
    "expect": b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok",
    "gzip_body": b"POST /echo HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n",
    "deflate_stream": b"POST /s HTTP/1.1\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n",
    "cl_te": b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "fold": b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
    "long_target": b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
    "many_headers": b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n",
    "big_body": b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
    "not_found": b"GET /nope HTTP/1.1\r\n\r\nDELETE / HTTP/1.1\r\n\r\n",
    "upgrade": b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nxxxx",
    "connect": b"CONNECT a:1 HTTP/1.1\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "memo": b"GET /m?a HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\nGET /m?a HTTP/1.1\r\n\r\n"
            b"GET /m?b HTTP/1.1\r\nAccept-Encoding: deflate\r\n\r\n",
}
body = b"fuzz " * 100
for name, req in seeds.items():
    if name == "gzip_body":
        z = gzip.compress(body)
        req = (req % len(z)) + z
    elif name == "deflate_stream":
        z = zlib.compress(body)
        req = (req % len(z)) + z
    for split in (0, 1, 7):
        with open(os.path.join(here, "%s_%d" % (name, split)), "wb") as f:
            f.write(bytes([split]) + req)
