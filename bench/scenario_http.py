"""HTTP hello-world: examples/http_server against nginx, with wrk (issue 11's benchmark).

Then latency at fixed rates (no coordinated omission; wrk2 is not in Debian): bench/echo_load
--http --rate issues GET / on a schedule at 25%, 50% and 75% of each server's keep-alive
peak and counts latency from the scheduled times; for it both servers run without a
keep-alive request limit (echo_load does not reconnect).

Both servers run one worker pinned to the server CPU; wrk (one thread) runs on the client
CPU. Cells: keep-alive with 50 connections, and pipelined depth 16 (a wrk Lua script that
sends 16 requests per write). Rounds interleave the servers (A B, B A, ...); the report gives
median requests/s, requests per server-CPU-second (utime+stime from /proc, what stays
meaningful when wrk saturates first) and braid's ratios to nginx, against the issue's targets:
at least 1.10x nginx per server-CPU-second and 0.95x absolute with keep-alive, at least 5x
pipelined.

nginx is configured as the issue says: 1 worker (master_process off, so its one process is
the one measured), `return 200 "Hello, World!"`, access log off, the same keep-alive
settings as braid's defaults (75 s, 1000 requests). Needs wrk and nginx (scripts/deps.sh
bench); a missing one is skipped with the reason.
"""

import gzip
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from run import scenario, BenchError, Server, table, median, spread, log, run_load

PIPELINE_LUA = """
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
"""

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log %(dir)s/error.log warn;
pid %(dir)s/nginx.pid;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests %(keepalive_requests)d;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
  server {
    listen 127.0.0.1:%(port)d;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
"""

TARGETS = {'keepalive_cpu': 1.10, 'keepalive_abs': 0.95, 'pipelined_abs': 5.0}


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nginx:
    """nginx in the foreground with a config of its own in a temporary directory."""

    def __init__(self, ctx, keepalive_requests=1000):
        self.dir = tempfile.mkdtemp(prefix='braid-bench-nginx-')
        self.port = free_port()
        conf = os.path.join(self.dir, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(NGINX_CONF % {'dir': self.dir, 'port': self.port,
                                  'keepalive_requests': keepalive_requests})
        self.proc = subprocess.Popen(
            ctx.cmd('server', [shutil.which('nginx'), '-p', self.dir, '-c', conf]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.clk_tck = ctx.clk_tck
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError('nginx did not start: %s' % self.proc.stderr.read())
                time.sleep(0.05)

    def cpu_seconds(self):
        with open('/proc/%d/stat' % self.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.clk_tck

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk(ctx, port, conns, duration, lua=None, path='/', headers=()):
    """One wrk run; returns requests/s. Raises when wrk saw errors or non-2xx answers."""
    # wrk takes whole seconds ("1.5s" is refused): callers round their duration the same way
    argv = ['wrk', '-t1', '-c%d' % conns, '-d%ds' % max(1, int(round(duration))),
            'http://127.0.0.1:%d%s' % (port, path)]
    for h in headers:
        argv[1:1] = ['-H', h]
    if lua:
        argv[1:1] = ['-s', lua]
    p = subprocess.run(ctx.cmd('client', argv), capture_output=True, text=True,
                       timeout=duration + 60)
    out = p.stdout
    if p.returncode != 0 or 'Requests/sec:' not in out:
        raise BenchError('wrk: exit %d: %s %s' % (p.returncode, out, p.stderr))
    if 'Non-2xx' in out or 'Socket errors' in out:
        raise BenchError('wrk reported errors:\n' + out)
    return float(out.split('Requests/sec:')[1].split()[0])


@scenario
class Http:
    name = 'http'
    describe = 'HTTP hello world, braid http_server vs nginx (1 worker each), wrk keep-alive and pipelined'

    def run(self, ctx):
        a = ctx.args
        braid = os.path.join(os.path.dirname(ctx.bench_dir.rstrip('/')), 'examples', 'http_server')
        skipped = {}
        if not shutil.which('wrk'):
            return {'skipped': {'all': 'wrk not installed'}}
        if not os.access(braid, os.X_OK):
            return {'skipped': {'all': 'examples/http_server not built'}}
        servers = [('braid', lambda: Server(ctx, 'braid', braid))]
        if shutil.which('nginx'):
            servers.append(('nginx', lambda: Nginx(ctx)))
        else:
            skipped['nginx'] = 'nginx not installed'
        duration = 1 if a.quick else max(1, int(round(a.duration)))  # wrk takes whole seconds
        rounds = 1 if a.quick else a.rounds
        lua = os.path.join(tempfile.mkdtemp(prefix='braid-bench-wrk-'), 'pipeline.lua')
        with open(lua, 'w') as f:
            f.write(PIPELINE_LUA)
        cells = [('keepalive', 50, None), ('pipelined', 50, lua)]
        res = {'cells': {}, 'skipped': skipped, 'duration': duration, 'rounds': rounds}
        for cell, conns, script in cells:
            per = {name: {'rps': [], 'cpu_rps': []} for name, _ in servers}
            for r in range(rounds):
                order = servers[r % len(servers):] + servers[:r % len(servers)]
                for name, make in order:
                    s = make()
                    try:
                        wrk(ctx, s.port, conns, min(1.0, duration), script)  # warm-up
                        c0 = s.cpu_seconds()
                        rps = wrk(ctx, s.port, conns, duration, script)
                        cpu = s.cpu_seconds() - c0
                    finally:
                        s.stop()
                    per[name]['rps'].append(rps)
                    per[name]['cpu_rps'].append(rps * duration / cpu if cpu > 0 else 0.0)
                    log('http %s: %-5s %.0f req/s, %.0f req per server-CPU-s' % (
                        cell, name, rps, per[name]['cpu_rps'][-1]))
            res['cells'][cell] = per
        shutil.rmtree(os.path.dirname(lua), ignore_errors=True)
        if ctx.prog('echo_load'):
            res['latency'] = self.latency(ctx, braid, res['cells']['keepalive'], rounds,
                                          duration)
        return res

    def latency(self, ctx, braid, peaks, rounds, duration):
        """p50/p99/p99.9 at 25/50/75% of each server's keep-alive peak, fixed rate."""
        makers = {'braid': lambda: Server(ctx, 'braid', braid, ['--keepalive-requests', '0']),
                  'nginx': lambda: Nginx(ctx, keepalive_requests=1 << 30)}
        chosen = [n for n in ('braid', 'nginx') if n in peaks]
        peak = {n: median(peaks[n]['rps']) for n in chosen}
        rounds = min(rounds, 2)  # keeps the full run near 11 minutes
        points = []
        for pct in (50,) if ctx.args.quick else (25, 50, 75):  # quick: that it works
            runs = {n: [] for n in chosen}
            for r in range(rounds):
                order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]
                for n in order:
                    s = makers[n]()
                    try:
                        runs[n].append(run_load(ctx, s.port, 50, 64, 16, duration,
                                                warmup=0 if ctx.args.quick else 0.5,
                                                rate=peak[n] * pct / 100.0,
                                                http=True))
                    finally:
                        s.stop()
            for n in chosen:
                rs = runs[n]
                points.append({
                    'server': n, 'load_pct': pct, 'rate': peak[n] * pct / 100.0,
                    'achieved': median([x['rps'] for x in rs]),
                    'achieved_spread': spread([x['rps'] for x in rs]),
                    'p50_us': median([x['lat_us']['p50'] for x in rs]),
                    'p99_us': median([x['lat_us']['p99'] for x in rs]),
                    'p999_us': median([x['lat_us']['p999'] for x in rs]),
                    'p99_spread': spread([x['lat_us']['p99'] for x in rs]), 'runs': rs})
                log('http latency: %-5s %3d%% of peak: p50 %.1f us, p99 %.1f us, p99.9 %.1f us'
                    % (n, pct, points[-1]['p50_us'], points[-1]['p99_us'],
                       points[-1]['p999_us']))
        return {'cell': 'HTTP keep-alive, 50 connections', 'peak': peak, 'rounds': rounds,
                'generator': 'bench/echo_load --http --rate', 'points': points,
                'peer': 'nginx' if 'nginx' in chosen else None}

    def ratios(self, res, cell):
        per = res['cells'].get(cell, {})
        if 'braid' not in per or 'nginx' not in per:
            return None
        b, n = per['braid'], per['nginx']
        return (median(b['rps']) / median(n['rps']) if median(n['rps']) else 0,
                median(b['cpu_rps']) / median(n['cpu_rps']) if median(n['cpu_rps']) else 0)

    def report(self, res):
        if 'cells' not in res:
            return 'skipped: %s' % res['skipped']
        rows = []
        for cell, per in res['cells'].items():
            for name, v in per.items():
                rows.append([cell, name, '%.0f' % median(v['rps']), '%.1f%%' % (100 * spread(v['rps'])),
                             '%.0f' % median(v['cpu_rps'])])
        text = table(['cell', 'server', 'req/s (median)', 'spread', 'req per server-CPU-s'], rows)
        for cell in res['cells']:
            r = self.ratios(res, cell)
            if r:
                text += '\n\n%s: braid/nginx %.2fx req/s, %.2fx per server-CPU-s' % (cell, r[0], r[1])
        if res['skipped']:
            text += '\n\nskipped: ' + ', '.join('%s (%s)' % kv for kv in res['skipped'].items())
        return text

    def failures(self, res):
        if 'cells' not in res or res.get('rounds', 0) < 2:
            return []  # a quick run shows that it works, not how fast
        out = []
        ka, pl = self.ratios(res, 'keepalive'), self.ratios(res, 'pipelined')
        if ka and ka[1] < TARGETS['keepalive_cpu']:
            out.append('http keepalive: %.2fx nginx per CPU-s < %.2f' % (ka[1], TARGETS['keepalive_cpu']))
        if ka and ka[0] < TARGETS['keepalive_abs']:
            out.append('http keepalive: %.2fx nginx req/s < %.2f' % (ka[0], TARGETS['keepalive_abs']))
        if pl and pl[0] < TARGETS['pipelined_abs']:
            out.append('http pipelined: %.2fx nginx req/s < %.1f' % (pl[0], TARGETS['pipelined_abs']))
        return out


# ---- issue 11's other cells: idle connections, memo, cached gzip variant, Python peers ----

PY_PEERS = ('tornado', 'aiohttp')
IDLE_TARGET_BYTES = 2048


def python_with(module):
    """A python3 that can import module (Debian's python3-tornado and python3-aiohttp install
    into /usr/bin/python3's path, which a pyenv python3 first in PATH does not see)."""
    for exe in (sys.executable, '/usr/bin/python3'):
        if exe and os.access(exe, os.X_OK) and subprocess.run(
                [exe, '-c', 'import ' + module], capture_output=True).returncode == 0:
            return exe
    return None


def py_server_path(kind, tmp):
    """An executable that runs bench/http_py.py KIND --port N (Server's calling shape)."""
    exe = python_with(kind)
    if not exe:
        return None
    path = os.path.join(tmp, 'http_' + kind)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nexec %s %s %s "$@"\n' % (exe, os.path.join(here, 'http_py.py'), kind))
    os.chmod(path, 0o755)
    return path


def fetch(port, path, gz=False):
    """One GET; returns (status, headers dict, body bytes as sent)."""
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        c.request('GET', path, headers={'Accept-Encoding': 'gzip'} if gz else {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


@scenario
class HttpExtra:
    name = 'http_extra'
    describe = ('HTTP: braid vs Tornado and aiohttp (hello world), heap per idle keep-alive '
                'connection, /fib memoized vs not, gzip per request vs cached variant')

    def run(self, ctx):
        a = ctx.args
        if not shutil.which('wrk'):
            return {'skipped': {'all': 'wrk not installed'}}
        example = os.path.join(os.path.dirname(ctx.bench_dir.rstrip('/')), 'examples', 'http_server')
        bench_srv = ctx.prog('http_braid')
        if not bench_srv or not os.access(example, os.X_OK):
            return {'skipped': {'all': 'http_braid or examples/http_server not built'}}
        duration = 1 if a.quick else max(1, int(round(a.duration)))  # wrk: whole seconds
        rounds = 1 if a.quick else min(a.rounds, 3)  # keeps the full run near 11 minutes
        tmp = tempfile.mkdtemp(prefix='braid-bench-py-')
        res = {'duration': duration, 'rounds': rounds, 'skipped': {}}
        try:
            servers = [('braid', example)]
            for kind in PY_PEERS:
                path = py_server_path(kind, tmp)
                if path:
                    servers.append((kind, path))
                else:
                    res['skipped'][kind] = 'python3 cannot import %s (Debian python3-%s)' % (kind, kind)
            res['python'] = self.python_cell(ctx, servers, duration, rounds)
            res['idle'] = self.idle_cell(ctx, bench_srv, 200 if a.quick else a.idle_conns)
            res['memo'] = self.pair_cell(ctx, bench_srv, duration, rounds,
                                         ('/fib?n=25', '/fib-memo?n=25'), (), b'75025\n', False)
            res['gzip'] = self.pair_cell(ctx, bench_srv, duration, rounds,
                                         ('/text', '/text-memo'), ('Accept-Encoding: gzip',),
                                         None, True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return res

    def python_cell(self, ctx, servers, duration, rounds):
        per = {name: {'rps': [], 'cpu_rps': []} for name, _ in servers}
        for r in range(rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for name, path in order:
                s = Server(ctx, name, path)
                try:
                    st, _, body = fetch(s.port, '/')
                    if st != 200 or body != b'Hello, World!':
                        raise BenchError('%s: GET / gave %d %r' % (name, st, body[:40]))
                    wrk(ctx, s.port, 50, min(1.0, duration))  # warm-up
                    c0 = s.cpu_seconds()
                    rps = wrk(ctx, s.port, 50, duration)
                    cpu = s.cpu_seconds() - c0
                finally:
                    s.stop()
                per[name]['rps'].append(rps)
                per[name]['cpu_rps'].append(rps * duration / cpu if cpu > 0 else 0.0)
                log('http_extra python: %-7s %.0f req/s, %.0f req per server-CPU-s' % (
                    name, rps, per[name]['cpu_rps'][-1]))
        return per

    def idle_cell(self, ctx, path, n):
        s = Server(ctx, 'http_braid', path)
        client = None
        try:
            wrk(ctx, s.port, 2, 1)  # per-loop state made lazily goes into the baseline
            time.sleep(0.2)
            before, rss0 = s.heap(), s.rss_bytes()
            client = subprocess.Popen(
                ctx.cmd('client', [ctx.prog('idle_conns'), '--port', str(s.port), '--conns',
                                   str(n), '--hold', '120', '--http']),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = client.stdout.readline()
            if not line.startswith('ready'):
                client.wait(timeout=10)
                raise BenchError('idle_conns --http: %s %s' % (line.strip(), client.stderr.read().strip()))
            # Idle means idle: braid frees a keep-alive connection's spare request after 1 s
            # without traffic (found by a timer tick of up to 1 s).
            time.sleep(2.5)
            after, rss1 = s.heap(), s.rss_bytes()
            client.stdin.close()
            client.wait(timeout=30)
            s.stop()
        finally:
            if client and client.poll() is None:
                client.kill()
            if s.alive():
                s.proc.kill()
        per = (after['in_use'] - before['in_use']) / n
        log('http_extra idle: %d keep-alive conns, %.0f B heap each (%.0f beyond the uv handle), '
            '%.0f B RSS each' % (n, per, per - after['handle'], (rss1 - rss0) / n))
        return {'conns': n, 'heap_per_conn': per, 'uv_handle_bytes': after['handle'],
                'heap_after': after['in_use'], 'rss_per_conn': (rss1 - rss0) / n}

    def pair_cell(self, ctx, path, duration, rounds, paths, headers, expect, gz):
        """Two routes of one http_braid, alternated: requests/s and bytes per answer of each."""
        per = {p: {'rps': [], 'cpu_rps': []} for p in paths}
        s = Server(ctx, 'http_braid', path)
        try:
            bodies = []
            for p in paths:
                st, hdrs, body = fetch(s.port, p, gz)
                if st != 200 or (gz and hdrs.get('content-encoding') != 'gzip'):
                    raise BenchError('%s: %d %s' % (p, st, hdrs))
                plain = gzip.decompress(body) if gz else body
                if expect is not None and plain != expect:
                    raise BenchError('%s: wrong answer %r' % (p, plain[:40]))
                bodies.append(plain)
                per[p]['wire_bytes'] = len(body)
                per[p]['body_bytes'] = len(plain)
            if bodies[0] != bodies[1]:
                raise BenchError('%s and %s answer differently' % paths)
            for r in range(rounds):
                for p in (paths if r % 2 == 0 else paths[::-1]):
                    wrk(ctx, s.port, 50, 1, path=p, headers=headers)  # warm-up
                    c0 = s.cpu_seconds()
                    rps = wrk(ctx, s.port, 50, duration, path=p, headers=headers)
                    cpu = s.cpu_seconds() - c0
                    per[p]['rps'].append(rps)
                    per[p]['cpu_rps'].append(rps * duration / cpu if cpu > 0 else 0.0)
                    log('http_extra %-14s %.0f req/s, %.0f req per server-CPU-s' % (
                        p, rps, per[p]['cpu_rps'][-1]))
            s.stop()
        finally:
            if s.alive():
                s.proc.kill()
        return per

    def report(self, res):
        if 'python' not in res:
            return 'skipped: %s' % res['skipped']
        py = res['python']
        b = median(py['braid']['rps'])
        bc = median(py['braid']['cpu_rps'])
        rows = [[name, '%.0f' % median(v['rps']), '%.1f%%' % (100 * spread(v['rps'])),
                 '%.0f' % median(v['cpu_rps']),
                 '%.2fx' % (b / median(v['rps'])) if median(v['rps']) else '-',
                 '%.2fx' % (bc / median(v['cpu_rps'])) if median(v['cpu_rps']) else '-']
                for name, v in py.items()]
        text = 'hello world, keep-alive, wrk -c50 (one process each)\n\n' + table(
            ['server', 'req/s', 'spread', 'req per server-CPU-s', 'braid/this req/s',
             'braid/this per CPU'], rows)
        i = res['idle']
        text += ('\n\n%d idle keep-alive connections (one request each): %.0f B heap per '
                 'connection (%d B of it libuv\'s handle; measured 2.5 s after the last request), '
                 '%.0f B RSS per connection; target '
                 '< %d B heap' % (i['conns'], i['heap_per_conn'], i['uv_handle_bytes'],
                                  i['rss_per_conn'], IDLE_TARGET_BYTES))
        for cell, title in (('memo', 'costly handler, fib(25) on the loop'),
                            ('gzip', '16 KiB JSON, Accept-Encoding: gzip')):
            per = res[cell]
            rows = [[p, '%.0f' % median(v['rps']), '%.1f%%' % (100 * spread(v['rps'])),
                     '%.0f' % median(v['cpu_rps']), v['wire_bytes']] for p, v in per.items()]
            (p0, v0), (p1, v1) = list(per.items())
            text += '\n\n%s\n\n' % title + table(
                ['path', 'req/s', 'spread', 'req per server-CPU-s', 'bytes per answer'], rows)
            text += '\n\n%s / %s: %.2fx req/s' % (p1, p0, median(v1['rps']) / median(v0['rps']))
        if res['skipped']:
            text += '\n\nskipped: ' + ', '.join('%s (%s)' % kv for kv in res['skipped'].items())
        return text

    def failures(self, res):
        i = res.get('idle')
        if i and i['heap_after'] and i['heap_per_conn'] >= IDLE_TARGET_BYTES:
            return ['http idle: %.0f B heap per keep-alive connection >= %d' % (
                i['heap_per_conn'], IDLE_TARGET_BYTES)]
        return []
