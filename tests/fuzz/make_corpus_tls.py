#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_tls_server in tests/fuzz/corpus/tls_server/ (run once; the
files are committed): real ClientHellos (TLS 1.3 and 1.2, with SNI and ALPN) made by
python3's ssl module in memory, plus plain and garbage openings. No keys: a ClientHello
holds only the client's ephemeral public share. The first byte of each seed is the feed
size the target cuts the rest into (0: one feed)."""
import os
import ssl

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "tls_server")
os.makedirs(here, exist_ok=True)


def client_hello(maxv):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maxv
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="fuzz.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


seeds = {
    "hello13": client_hello(ssl.TLSVersion.TLSv1_3),
    "hello12": client_hello(ssl.TLSVersion.TLSv1_2),
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "record_garbage": b"\x16\x03\x01\x00\x40" + b"\xaa" * 64,
    "huge_length": b"\x16\x03\x01\xff\xff" + b"\x01" * 32,
}
for name, body in seeds.items():
    for step in (0, 1, 7):
        with open(os.path.join(here, "%s_%d" % (name, step)), "wb") as f:
            f.write(bytes([step]) + body)
