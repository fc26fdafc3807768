#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_http_response in tests/fuzz/corpus/http_response/ (run once;
the files are committed). The first byte of each seed is the write size the target cuts the
rest into (0: one write). The target sends GET, HEAD and a streamed GET, pipelined, on one
connection, so the seeds hold up to three answers."""
import gzip
import os
import zlib

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "http_response")
os.makedirs(here, exist_ok=True)
ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
text = b"hello braid " * 50
seeds = {
    "three": ok + head + ok,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n"
               + head + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    "http10": b"HTTP/1.0 200 OK\r\n\r\nold",
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(gzip.compress(text)) + gzip.compress(text),
    "deflate": b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
               % len(zlib.compress(text)) + zlib.compress(text),
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok,
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n" + ok + ok + ok,
    "bodiless": b"HTTP/1.1 204 No Content\r\n\r\n" + head + b"HTTP/1.1 304 Not Modified\r\n\r\n",
    "lie": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "garbage": b"HELLO\r\n\r\n",
    "fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "upgrade": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
}
for name, body in seeds.items():
    for cut in (0, 1, 7):
        with open(os.path.join(here, "%s_%d" % (name, cut)), "wb") as f:
            f.write(bytes([cut]) + body)
