#!/usr/bin/env python3
"""A raw-socket HTTP/1.1 server with honest and hostile answers, for the client tests.

Listens on 127.0.0.1 (an ephemeral port, printed on the first line of stdout) and answers each
request by its path; it exits when stdin closes (the test's end). Paths:
  /cl?n=N          N bytes, Content-Length, keep-alive
  /chunked         a chunked body in several chunks
  /close           HTTP/1.1 without a length: the body runs until the server closes
  /http10          HTTP/1.0 without a length, then close
  /gzip, /deflate, /rawdeflate   a compressed text body (Content-Encoding), chunked
  /bomb            gzip of 64 MiB of zeros (a decompression bomb)
  /lie             Content-Length: 100 with 10 bytes, then close
  /endless         a chunked body that never ends
  /hugeheaders     2000 header fields of 100 bytes
  /never           reads the request, never answers
  /slowhead        the status line, then nothing
  /reset           headers and half the body, then a reset
  /1xx?n=N         N interim 100 responses, then 200
  /garbage         not HTTP
  /early           answers 413 before reading the request body, then closes
  /race            keep-alive race: answers the first request on a connection and keeps
                   it open, then closes the connection when the next request arrives on
                   it (as a server whose idle timeout fires as that request comes in)
  /redirect?code=C&to=PATH   a redirect
  /loop            a redirect to itself
  /echo            "METHOD body-bytes"
  /head            Content-Length: 100 (no body for HEAD)
  /204, /304       bodiless statuses
  /stats           "conns=N": connections accepted so far
"""
import gzip
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib

TEXT = b''.join(b'line %d of a compressible body\n' % i for i in range(2000))
BOMB = None
BOMB_LOCK = threading.Lock()
CONNS = [0]


def bomb():
    global BOMB
    with BOMB_LOCK:
        if BOMB is None:
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            z = bytes(1 << 20)
            BOMB = b''.join(c.compress(z) for _ in range(64)) + c.flush()
        return BOMB


def read_request(sock, buf):
    """Returns (method, target, headers, body, rest) or None at EOF."""
    while b'\r\n\r\n' not in buf:
        d = sock.recv(65536)
        if not d:
            return None
        buf += d
    head, rest = buf.split(b'\r\n\r\n', 1)
    lines = head.decode('latin-1').split('\r\n')
    method, target, _ = lines[0].split(' ', 2)
    headers = {}
    for l in lines[1:]:
        k, v = l.split(':', 1)
        headers[k.strip().lower()] = v.strip()
    return method, target, headers, rest


def read_body(sock, headers, rest):
    n = int(headers.get('content-length', '0'))
    while len(rest) < n:
        d = sock.recv(65536)
        if not d:
            break
        rest += d
    return rest[:n], rest[n:]


def chunked(parts):
    return b''.join(b'%x\r\n%s\r\n' % (len(p), p) for p in parts if p) + b'0\r\n\r\n'


def respond(sock, status, headers, body, reason='OK'):
    h = 'HTTP/1.1 %d %s\r\n' % (status, reason)
    for k, v in headers:
        h += '%s: %s\r\n' % (k, v)
    sock.sendall(h.encode() + b'\r\n' + body)


def handle(sock):
    CONNS[0] += 1
    buf = b''
    served = 0
    while True:
        req = read_request(sock, buf)
        if req is None:
            return
        method, target, headers, rest = req
        u = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(u.query))
        path = u.path
        if path == '/early':
            respond(sock, 413, [('Content-Length', '8'), ('Connection', 'close')], b'too big!',
                    'Payload Too Large')
            time.sleep(0.2)
            return
        body, buf = read_body(sock, headers, rest)
        served += 1
        if path == '/cl':
            n = int(q.get('n', '10'))
            respond(sock, 200, [('Content-Length', str(n))], b'a' * n)
        elif path == '/chunked':
            respond(sock, 200, [('Transfer-Encoding', 'chunked')],
                    chunked([b'hello ', b'chunked ', b'world']))
        elif path == '/close':
            respond(sock, 200, [('Connection', 'close')], b'until close')
            return
        elif path == '/http10':
            sock.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold style body')
            return
        elif path in ('/gzip', '/deflate', '/rawdeflate'):
            if path == '/gzip':
                z, enc = gzip.compress(TEXT), 'gzip'
            elif path == '/deflate':
                z, enc = zlib.compress(TEXT), 'deflate'
            else:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                z, enc = c.compress(TEXT) + c.flush(), 'deflate'
            respond(sock, 200, [('Content-Encoding', enc), ('Transfer-Encoding', 'chunked')],
                    chunked([z[i:i + 1000] for i in range(0, len(z), 1000)]))
        elif path == '/bomb':
            z = bomb()
            respond(sock, 200, [('Content-Encoding', 'gzip'), ('Content-Length', str(len(z)))], z)
        elif path == '/lie':
            respond(sock, 200, [('Content-Length', '100')], b'0123456789')
            return
        elif path == '/endless':
            respond(sock, 200, [('Transfer-Encoding', 'chunked')], b'')
            try:
                while True:
                    sock.sendall(b'4000\r\n' + b'x' * 0x4000 + b'\r\n')
            except OSError:
                return
        elif path == '/hugeheaders':
            hs = [('X-Filler-%d' % i, 'v' * 90) for i in range(2000)]
            respond(sock, 200, hs + [('Content-Length', '0')], b'')
        elif path == '/never':
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return
        elif path == '/slowhead':
            sock.sendall(b'HTTP/1.1 200 OK\r\n')
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return
        elif path == '/reset':
            sock.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + b'r' * 500)
            time.sleep(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            return
        elif path == '/1xx':
            n = int(q.get('n', '1'))
            sock.sendall(b'HTTP/1.1 100 Continue\r\n\r\n' * n)
            respond(sock, 200, [('Content-Length', '5')], b'final')
        elif path == '/garbage':
            sock.sendall(b'HELLO THERE, THIS IS NOT HTTP\r\n\r\n')
            return
        elif path == '/race':
            if served > 1:
                return  # closes instead of answering
            respond(sock, 200, [('Content-Length', '4')], b'race')
        elif path == '/redirect':
            code = int(q.get('code', '302'))
            respond(sock, code, [('Location', q.get('to', '/echo')), ('Content-Length', '3')],
                    b'moo', 'Redirect')
        elif path == '/loop':
            respond(sock, 302, [('Location', '/loop'), ('Content-Length', '0')], b'', 'Found')
        elif path == '/echo':
            b = method.encode() + b' ' + body
            respond(sock, 200, [('Content-Length', str(len(b)))], b)
        elif path == '/head':
            respond(sock, 200, [('Content-Length', '100')], b'' if method == 'HEAD' else b'h' * 100)
        elif path == '/204':
            respond(sock, 204, [], b'', 'No Content')
        elif path == '/304':
            respond(sock, 304, [('Content-Length', '50')], b'', 'Not Modified')
        elif path == '/stats':
            b = b'conns=%d' % CONNS[0]
            respond(sock, 200, [('Content-Length', str(len(b)))], b)
        else:
            respond(sock, 404, [('Content-Length', '0')], b'', 'Not Found')


def serve(sock):
    try:
        handle(sock)
    except OSError:
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('127.0.0.1', 0))
    ls.listen(128)
    print(ls.getsockname()[1], flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == '__main__':
    main()
