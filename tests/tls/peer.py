#!/usr/bin/env python3
"""A TLS peer from python3's ssl module, for tests/integration/test_tls.c.

Usage: peer.py MODE PORT CERTDIR [ARGS]; prints what it saw, one `key=value` a line, and
exits 0 when the exchange went as the mode expects.

  echo N           send N random bytes, read them back, close with close_notify
  resume           two connections: the second resumes the first's session
  truncate         handshake, one echo, then TCP FIN without close_notify
  mtls             present certs/client.pem; echo 5 bytes
  nocert           present no certificate to a server that requires one (expects failure)
  sni NAME         connect asking for NAME, verify the certificate against NAME
"""
import os
import socket
import ssl
import sys

mode, port, certs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = sys.argv[4:]


def context(cert=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, 'ca.pem'))
    ctx.set_alpn_protocols(['http/1.1'])
    if cert:
        ctx.load_cert_chain(os.path.join(certs, 'client.pem'), os.path.join(certs, 'client.key'))
    return ctx


def connect(ctx, name='localhost', session=None):
    raw = socket.create_connection(('127.0.0.1', port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=name, session=session)


def recv_exact(s, n):
    got = bytearray()
    while len(got) < n:
        b = s.recv(min(65536, n - len(got)))
        if not b:
            raise SystemExit('eof after %d of %d bytes' % (len(got), n))
        got += b
    return bytes(got)


def echo(s, data):
    # Send and read concurrently enough: the echo server answers as it reads, and both
    # directions have kernel buffers; send in slices and drain what came back in between.
    got = bytearray()
    s.setblocking(True)
    off = 0
    while off < len(data):
        k = s.send(data[off:off + 65536])
        off += k
        s.settimeout(0.0)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
            pass
        s.settimeout(10)
    got += recv_exact(s, len(data) - len(got))
    return bytes(got)


def close(s):
    """close_notify, then wait for the server's (after its goodbye bytes, if any)."""
    try:
        s.unwrap()
    except (ssl.SSLError, OSError):
        pass
    s.close()


def report(s):
    print('version=%s' % s.version())
    print('cipher=%s' % s.cipher()[0])
    print('alpn=%s' % (s.selected_alpn_protocol() or ''))
    print('reused=%d' % (1 if s.session_reused else 0))


if mode == 'echo':
    n = int(args[0])
    data = os.urandom(n)
    s = connect(context())
    report(s)
    back = echo(s, data)
    print('echo_ok=%d' % (1 if back == data else 0))
    close(s)
    sys.exit(0 if back == data else 1)
elif mode == 'resume':
    ctx = context()
    s = connect(ctx)
    assert echo(s, b'hello') == b'hello'  # reading takes in the TLS 1.3 tickets
    sess = s.session
    close(s)
    s = connect(ctx, session=sess)
    report(s)
    assert echo(s, b'again') == b'again'
    close(s)
elif mode == 'truncate':
    s = connect(context())
    assert echo(s, b'cut') == b'cut'
    s.shutdown(socket.SHUT_WR)  # SSLSocket.shutdown: a TCP FIN, no close_notify
    try:
        s.recv(1)
    except (ssl.SSLError, OSError):
        pass
    print('truncated=1')
elif mode == 'mtls':
    s = connect(context(cert=True))
    report(s)
    ok = echo(s, b'hello') == b'hello'
    print('echo_ok=%d' % ok)
    close(s)
    sys.exit(0 if ok else 1)
elif mode == 'nocert':
    try:
        s = connect(context())
        s.sendall(b'hello')
        b = s.recv(5)  # TLS 1.3: the server's refusal arrives after our Finished
        print('refused=%d' % (1 if not b else 0))
        sys.exit(0 if not b else 1)
    except (ssl.SSLError, OSError) as e:
        print('refused=1')
        print('error=%s' % e)
elif mode == 'sni':
    s = connect(context(), name=args[0])
    report(s)
    print('peer_cn=%s' % dict(x[0] for x in s.getpeercert()['subject'])['commonName'])
    close(s)
else:
    raise SystemExit('unknown mode ' + mode)
