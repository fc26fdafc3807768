#!/usr/bin/env python3
"""braid's benchmark driver: runs every registered scenario, prints tables, writes JSON.

It builds nothing: point it at the meson build directory that holds the bench programs
(default build/bench; a build root with a bench/ subdirectory works too).

    python3 bench/run.py [BUILD_DIR] [--scenario NAME ...] [--rounds N] [--duration S]
                         [--warmup S] [--quick] [--json PATH] [--servers a,b] [--no-pin]
    python3 bench/run.py --render-only [--include-smoke]

A full run (not --quick, at least 3 rounds of at least 1 s) is saved as
bench/results/run-<UTC time>.json and bench/RESULTS.md, the charts (bench/results/*.svg) and
the README's performance table are generated from the latest full runs (bench/report.py).
A shorter run is saved as bench/results/smoke-<time>.json (git-ignored) and rendered as a
draft, bench/results/RESULTS-draft.md, that says it means nothing; --quick saves nothing
unless --json is given. --render-only renders again from the saved JSON without running
anything. How each scenario measures: bench/README.md.

How it measures (see docs in /work/shared/DESIGN.md, "Measuring"): the server runs pinned to
one CPU and the load client to another (taskset); every server gets a warm-up run per cell;
then rounds of interleaved runs (A B C D, B C D A, ...) so slow drift on a shared machine
hits every server alike; medians and the spread (max-min over median) are reported, with
ratios of braid to each baseline and requests per server-CPU-second (utime+stime from
/proc/PID/stat), which stays meaningful when the load client saturates first.

Adding a scenario: write a class with `name`, `describe`, `run(ctx) -> dict` and
`report(result) -> str` (and optionally `failures(result) -> [str]`), decorate it with
@scenario, and it runs by default (or with --scenario NAME). Put it in its own file,
bench/scenario_<name>.py, starting with `from run import scenario, BenchError, Server, table,
median, spread, log`: run.py loads every bench/scenario_*.py at start-up, in name order, after
its own scenarios. ctx.prog(NAME) finds a built program (None when it was not built).

Standard library only.
"""

import argparse
import datetime
import glob
import re
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import report

SCENARIOS = {}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def scenario(cls):
    """Registers a scenario class under cls.name (in definition order)."""
    SCENARIOS[cls.name] = cls
    return cls


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- processes ------------------------------------------------------------------------------

class Ctx:
    """What every scenario gets: where the programs are, the options, CPU pinning."""

    def __init__(self, args, bench_dir):
        self.args = args
        self.bench_dir = bench_dir
        self.clk_tck = os.sysconf('SC_CLK_TCK')
        ncpu = os.cpu_count() or 1
        self.pin = (not args.no_pin) and ncpu >= 2 and shutil.which('taskset') is not None
        if not args.no_pin and not self.pin:
            log('run.py: not pinning (needs 2 CPUs and taskset)')

    def prog(self, name):
        path = os.path.join(self.bench_dir, name)
        return path if os.access(path, os.X_OK) else None

    def cmd(self, role, argv):
        if not self.pin:
            return argv
        cpu = self.args.server_cpu if role == 'server' else self.args.client_cpu
        return ['taskset', '-c', str(cpu)] + argv


class Server:
    """A bench server process: started, waited for (`listening on ...`), queried, stopped."""

    def __init__(self, ctx, name, path, args=()):
        self.name = name
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(ctx.cmd('server', [path, '--port', '0'] + list(args)),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append),
                         daemon=True).start()
        line = self._line(10, 'listening on ')
        self.port = int(line.rsplit(':', 1)[1])
        self.clk_tck = ctx.clk_tck

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line.rstrip('\n'))

    def _line(self, timeout, prefix):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self.lines.empty():
                raise BenchError('%s: no "%s" line (exit %s): %s' % (
                    self.name, prefix.strip(), self.proc.poll(), ' | '.join(self.stderr[-5:])))
            try:
                line = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line

    def alive(self):
        return self.proc.poll() is None

    def cpu_seconds(self):
        """utime + stime of the server so far, from /proc/PID/stat."""
        with open('/proc/%d/stat' % self.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.clk_tck

    def rss_bytes(self):
        with open('/proc/%d/status' % self.proc.pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
        return 0

    def heap(self):
        """Heap in use as the server reports it on SIGUSR1: {'in_use', 'mmap', 'handle'}."""
        self.proc.send_signal(signal.SIGUSR1)
        line = self._line(5, 'heap ')
        return {k: int(v) for k, v in (kv.split('=') for kv in line.split()[1:])}

    def stop(self):
        """SIGTERM, then wait; a server that does not exit cleanly is an error."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BenchError('%s: did not exit within 10 s of SIGTERM' % self.name)
        if self.proc.returncode != 0:
            raise BenchError('%s: exit status %d: %s' % (
                self.name, self.proc.returncode, ' | '.join(self.stderr[-5:])))


def run_load(ctx, port, conns, size, depth, duration, warmup=0.0, rate=0.0, http=False):
    """Runs echo_load once; returns its JSON result. Raises on any error or mismatch.
    rate > 0: open loop, requests issued on a fixed schedule of rate per second in all
    (depth is then the most outstanding per connection before a request waits)."""
    argv = [ctx.prog('echo_load'), '--port', str(port), '--conns', str(conns), '--size',
            str(size), '--depth', str(depth), '--duration', '%g' % duration,
            '--warmup', '%g' % warmup]
    if rate > 0:
        argv += ['--rate', '%.0f' % rate]
    if http:
        argv.append('--http')
    p = subprocess.run(ctx.cmd('client', argv), capture_output=True, text=True,
                       timeout=duration + warmup + 60)
    lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if p.returncode != 0 or not lines:
        raise BenchError('echo_load %s: exit %d: %s %s' % (
            ' '.join(argv[1:]), p.returncode, p.stdout.strip(), p.stderr.strip()))
    return json.loads(lines[-1])


def median(xs):
    return statistics.median(xs) if xs else 0.0


def spread(xs):
    """(max - min) / median, as a fraction: how much the rounds disagreed."""
    m = median(xs)
    return (max(xs) - min(xs)) / m if xs and m else 0.0


def table(headers, rows):
    """A Markdown table, so the output pastes straight into RESULTS.md."""
    out = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    out += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(out)


# ---- echo: throughput and latency -----------------------------------------------------------

ECHO_SERVERS = [  # (name in tables, program); the first is the one compared to the others
    ('braid', 'echo_braid'),
    ('uv_tuned', 'echo_uv_tuned'),
    ('uv_plain', 'echo_uv_plain'),
    ('libevent', 'echo_libevent'),
]
# Targets from issue 2: braid's median requests/s over each baseline's, in every cell.
ECHO_TARGETS = {'uv_tuned': 0.95, 'libevent': 1.0}


def echo_servers(ctx):
    """The echo servers to run (those built and selected), and the names skipped and why."""
    wanted = ctx.args.servers.split(',') if ctx.args.servers else None
    found, skipped = [], {}
    for name, prog in ECHO_SERVERS:
        if wanted and name not in wanted:
            continue
        path = ctx.prog(prog)
        if path:
            found.append((name, path))
        else:
            skipped[name] = '%s not built' % prog
    return found, skipped


def cell_name(c):
    conns, size, depth = c
    return '%dc %s %s' % (conns, '1KiB' if size == 1024 else '%dB' % size,
                          'ping-pong' if depth == 1 else 'pipe%d' % depth)


@scenario
class Echo:
    name = 'echo'
    describe = ('echo throughput/latency: braid vs tuned libuv, plain libuv, libevent '
                '(same load client)')

    def cells(self, ctx):
        if ctx.args.quick:
            return [(1, 64, 1), (50, 1024, 16)]
        return [(c, s, d) for c in (1, 50) for s in (64, 1024) for d in (1, 16)]

    def run(self, ctx):
        a = ctx.args
        servers, skipped = echo_servers(ctx)
        if not servers:
            raise BenchError('echo: no server built in %s' % ctx.bench_dir)
        cells = self.cells(ctx)
        est = len(cells) * len(servers) * (a.rounds * a.duration + a.warmup + 0.3)
        log('echo: %d cells x %d servers x %d rounds x %gs (about %.0f s)' % (
            len(cells), len(servers), a.rounds, a.duration, est))
        procs = {}
        result = {'cells': [], 'skipped': skipped, 'rounds': a.rounds,
                  'duration_s': a.duration, 'warmup_s': a.warmup}
        try:
            for name, path in servers:
                procs[name] = Server(ctx, name, path)
            for cell in cells:
                result['cells'].append(self.run_cell(ctx, procs, cell))
            for s in procs.values():
                s.stop()
        finally:
            for s in procs.values():
                if s.alive():
                    s.proc.kill()
        return result

    def run_cell(self, ctx, procs, cell):
        a = ctx.args
        conns, size, depth = cell
        names = list(procs)
        if a.warmup > 0:
            for n in names:
                run_load(ctx, procs[n].port, conns, size, depth, a.warmup)
        runs = {n: [] for n in names}
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                s = procs[n]
                cpu0 = s.cpu_seconds()
                res = run_load(ctx, s.port, conns, size, depth, a.duration)
                cpu = s.cpu_seconds() - cpu0
                if not s.alive():
                    raise BenchError('%s died during %s' % (n, cell_name(cell)))
                res['server_cpu_s'] = cpu
                res['req_per_cpu_s'] = res['requests'] / cpu if cpu > 0 else 0.0
                runs[n].append(res)
        out = {'cell': cell_name(cell), 'conns': conns, 'size': size, 'depth': depth,
               'servers': {}, 'ratios': {}}
        for n in names:
            rs = runs[n]
            rps = [x['rps'] for x in rs]
            per_cpu = [x['req_per_cpu_s'] for x in rs]
            out['servers'][n] = {
                'rps_median': median(rps), 'rps_min': min(rps), 'rps_max': max(rps),
                'rps_spread': spread(rps),
                'p50_us': median([x['lat_us']['p50'] for x in rs]),
                'p99_us': median([x['lat_us']['p99'] for x in rs]),
                'req_per_cpu_s_median': median(per_cpu),
                'server_cpu_util': median([x['server_cpu_s'] / x['seconds'] for x in rs
                                           if x['seconds'] > 0]),
                'runs': rs,
            }
        base = names[0]
        if base == 'braid':
            for other in names[1:]:
                b, o = out['servers'][base], out['servers'][other]
                paired = [x['rps'] / y['rps'] for x, y in zip(runs[base], runs[other])
                          if y['rps'] > 0]
                out['ratios'][other] = {
                    'rps': b['rps_median'] / o['rps_median'] if o['rps_median'] else 0.0,
                    'rps_paired_min': min(paired) if paired else 0.0,
                    'rps_paired_max': max(paired) if paired else 0.0,
                    'per_cpu': (b['req_per_cpu_s_median'] / o['req_per_cpu_s_median']
                                if o['req_per_cpu_s_median'] else 0.0),
                    'target': ECHO_TARGETS.get(other),
                }
        log('echo: %-22s %s' % (out['cell'], '  '.join(
            '%s %.0f' % (n, out['servers'][n]['rps_median']) for n in names)))
        return out

    def report(self, res):
        rows = []
        for c in res['cells']:
            for n, s in c['servers'].items():
                rows.append([c['cell'], n, '%.0f' % s['rps_median'],
                             '%.1f%%' % (100 * s['rps_spread']), '%.1f' % s['p50_us'],
                             '%.1f' % s['p99_us'], '%.0f' % s['req_per_cpu_s_median'],
                             '%.0f%%' % (100 * s['server_cpu_util'])])
        text = table(['cell', 'server', 'req/s (median)', 'spread', 'p50 us', 'p99 us',
                      'req/server-CPU-s', 'server CPU'], rows)
        ratio_rows = []
        for c in res['cells']:
            for other, r in c['ratios'].items():
                t = r['target']
                verdict = '' if t is None else ('meets %.2fx' % t if r['rps'] >= t
                                                else 'MISSES %.2fx' % t)
                ratio_rows.append([c['cell'], 'braid/' + other, '%.3f' % r['rps'],
                                   '%.2f..%.2f' % (r['rps_paired_min'], r['rps_paired_max']),
                                   '%.3f' % r['per_cpu'], verdict])
        if ratio_rows:
            text += '\n\n' + table(['cell', 'ratio', 'req/s', 'per-round range',
                                    'req/server-CPU-s', 'target'], ratio_rows)
        if res['skipped']:
            text += '\n\nskipped: ' + ', '.join('%s (%s)' % kv for kv in res['skipped'].items())
        return text

    def failures(self, res):
        return ['echo %s: braid/%s = %.3f < %.2f' % (c['cell'], o, r['rps'], r['target'])
                for c in res['cells'] for o, r in c['ratios'].items()
                if r['target'] is not None and r['rps'] < r['target']]


# ---- latency: fixed-rate load, no coordinated omission ---------------------------------------

LATENCY_CELL = (50, 64, 1)    # 50 connections, 64 B, ping-pong: the peak is measured here
LATENCY_LOADS = (25, 50, 75)  # percent of each server's own peak
LATENCY_DEPTH = 16            # requests one connection may have outstanding at fixed rate


@scenario
class Latency:
    name = 'latency'
    describe = ('echo latency at fixed rates (25/50/75%% of peak), braid and the strongest '
                'peer, counted from the scheduled send time')

    def run(self, ctx):
        a = ctx.args
        servers, skipped = echo_servers(ctx)
        if not servers or servers[0][0] != 'braid':
            raise BenchError('latency: braid echo server not built')
        conns, size, depth = LATENCY_CELL
        name = cell_name(LATENCY_CELL)
        # The peak of each server: from this run's echo scenario when it measured the cell,
        # else measured now (closed loop, the same rounds).
        echo = ctx.results.get('echo', {})
        peak = {}
        for c in echo.get('cells', []):
            if c['cell'] == name:
                peak = {n: s['rps_median'] for n, s in c['servers'].items()}
        rounds = min(a.rounds, 3)
        procs = {}
        try:
            for n, path in servers:
                procs[n] = Server(ctx, n, path)
            if not peak:
                for n in procs:
                    peak[n] = median([run_load(ctx, procs[n].port, conns, size, depth,
                                               a.duration)['rps'] for _ in range(rounds)])
            peers = [n for n in procs if n != 'braid' and peak.get(n)]
            strongest = max(peers, key=lambda n: peak[n]) if peers else None
            chosen = ['braid'] + ([strongest] if strongest else [])
            log('latency: peaks %s; strongest peer %s' % (
                ', '.join('%s %.0f' % (n, peak[n]) for n in chosen), strongest))
            points = []
            for pct in (50,) if a.quick else LATENCY_LOADS:  # quick: that it works
                runs = {n: [] for n in chosen}
                for r in range(rounds):
                    order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]
                    for n in order:
                        rate = peak[n] * pct / 100.0
                        runs[n].append(run_load(ctx, procs[n].port, conns, size, LATENCY_DEPTH,
                                                a.duration, warmup=min(a.warmup, 0.5),
                                                rate=rate))
                for n in chosen:
                    rs = runs[n]
                    points.append({
                        'server': n, 'load_pct': pct, 'rate': peak[n] * pct / 100.0,
                        'achieved': median([x['rps'] for x in rs]),
                        'achieved_spread': spread([x['rps'] for x in rs]),
                        'p50_us': median([x['lat_us']['p50'] for x in rs]),
                        'p99_us': median([x['lat_us']['p99'] for x in rs]),
                        'p999_us': median([x['lat_us']['p999'] for x in rs]),
                        'p99_spread': spread([x['lat_us']['p99'] for x in rs]),
                        'runs': rs})
                    log('latency: %-9s %3d%% of peak: p50 %.1f us, p99 %.1f us, p99.9 %.1f us'
                        % (n, pct, points[-1]['p50_us'], points[-1]['p99_us'],
                           points[-1]['p999_us']))
            for s in procs.values():
                s.stop()
        finally:
            for s in procs.values():
                if s.alive():
                    s.proc.kill()
        return {'cell': name, 'generator': 'bench/echo_load --rate', 'peak': peak,
                'peer': strongest, 'rounds': rounds, 'duration_s': a.duration,
                'depth': LATENCY_DEPTH, 'points': points, 'skipped': skipped}

    def report(self, res):
        return report.render_latency(res)[0]


# ---- echo_idle: heap per idle connection ----------------------------------------------------

@scenario
class EchoIdle:
    name = 'echo_idle'
    describe = 'heap bytes per idle connection (N idle connections, each echoed one byte)'
    target_beyond_handle = 1024

    def run(self, ctx):
        a = ctx.args
        n = 200 if a.quick else a.idle_conns
        servers, skipped = echo_servers(ctx)
        result = {'conns': n, 'servers': {}, 'skipped': skipped}
        for name, path in servers:
            result['servers'][name] = self.measure(ctx, name, path, n)
            r = result['servers'][name]
            log('echo_idle: %-9s %.0f B/conn heap (%.0f beyond the uv handle), %.0f B/conn RSS'
                % (name, r['heap_per_conn'], r['beyond_handle'], r['rss_per_conn']))
        return result

    def measure(self, ctx, name, path, n):
        s = Server(ctx, name, path)
        client = None
        try:
            # Warm up first, so lazily made per-loop state (read buffers, ...) is in the
            # baseline rather than charged to the idle connections.
            run_load(ctx, s.port, 2, 64, 1, 0.2)
            time.sleep(0.2)
            before, rss0 = s.heap(), s.rss_bytes()
            client = subprocess.Popen(
                ctx.cmd('client', [ctx.prog('idle_conns'), '--port', str(s.port),
                                   '--conns', str(n), '--hold', '120']),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            line = client.stdout.readline()
            if not line.startswith('ready'):
                client.wait(timeout=10)
                raise BenchError('idle_conns against %s: %s %s' % (
                    name, line.strip(), client.stderr.read().strip()))
            time.sleep(0.3)  # let the server finish accepting and reading
            after, rss1 = s.heap(), s.rss_bytes()
            client.stdin.close()
            client.wait(timeout=30)
            if client.returncode != 0:
                raise BenchError('idle_conns exit %d' % client.returncode)
            s.stop()
        finally:
            if client and client.poll() is None:
                client.kill()
            if s.alive():
                s.proc.kill()
        per = (after['in_use'] - before['in_use']) / n
        return {'heap_before': before['in_use'], 'heap_after': after['in_use'],
                'heap_per_conn': per, 'uv_handle_bytes': after['handle'],
                'beyond_handle': per - after['handle'],
                'rss_before': rss0, 'rss_after': rss1, 'rss_per_conn': (rss1 - rss0) / n}

    def report(self, res):
        rows = []
        for n, r in res['servers'].items():
            if r['heap_after'] == 0:  # sanitizer builds replace malloc: mallinfo2() says 0
                heap = beyond = 'n/a'
            else:
                heap, beyond = '%.0f' % r['heap_per_conn'], '%.0f' % r['beyond_handle']
            rows.append([n, heap, r['uv_handle_bytes'] or '-', beyond,
                         '%.0f' % r['rss_per_conn']])
        text = ('%d idle connections\n\n' % res['conns']) + table(
            ['server', 'heap B/conn', 'uv_tcp_t B', 'heap beyond handle B/conn', 'RSS B/conn'],
            rows)
        if res['skipped']:
            text += '\n\nskipped: ' + ', '.join('%s (%s)' % kv for kv in res['skipped'].items())
        return text

    def failures(self, res):
        r = res['servers'].get('braid')
        if r and r['heap_after'] and r['beyond_handle'] >= self.target_beyond_handle:
            return ['echo_idle: braid %.0f B/conn beyond the handle >= %d' % (
                r['beyond_handle'], self.target_beyond_handle)]
        return []


# ---- main -----------------------------------------------------------------------------------

def load_scenario_files():
    """Imports bench/scenario_*.py; their @scenario classes register themselves."""
    import glob
    import importlib.util
    # Scenario files `from run import ...`: make that name this very module, so they
    # register in this SCENARIOS, also when run.py runs as __main__.
    sys.modules.setdefault("run", sys.modules[__name__])
    sys.dont_write_bytecode = True  # keep the source tree clean
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, 'scenario_*.py'))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)


def find_bench_dir(path):
    for d in (path, os.path.join(path, 'bench')):
        if os.access(os.path.join(d, 'echo_load'), os.X_OK):
            return os.path.abspath(d)
    raise BenchError('no bench programs (echo_load) in %s or %s/bench: build first '
                     '(meson setup build --buildtype=release && ninja -C build)' % (path, path))


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def first_line(argv, stream='stdout'):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout if stream == 'stdout' else p.stderr) or p.stdout or p.stderr
    return text.strip().splitlines()[0] if text.strip() else None


def versions():
    """braid (meson.build's version and the git commit) and every peer's version."""
    v = {}
    try:
        with open(os.path.join(ROOT, 'meson.build')) as f:
            m = re.search(r"version\s*:\s*'([^']+)'", f.read())
        commit = first_line(['git', '-C', ROOT, 'describe', '--always', '--dirty'])
        v['braid'] = '%s (%s)' % (m.group(1) if m else '?', commit or 'no git')
    except OSError:
        v['braid'] = '?'
    for pkg in ('libuv', 'libevent', 'zlib', 'libdeflate'):
        out = first_line(['pkg-config', '--modversion', pkg])
        if out:
            v[pkg] = out
    out = first_line(['nginx', '-v'], 'stderr')
    if out:
        v['nginx'] = out.split('/')[-1]
    out = first_line(['wrk', '-v'])
    if out and out.startswith('wrk'):
        v['wrk'] = out.split()[1]
    v['python'] = platform.python_version()
    out = first_line(['cc', '--version'])
    if out:
        v['compiler'] = out
    return v


def render_reports(results_dir, include_smoke):
    path, drawn = report.write_all(results_dir, os.path.join(HERE, 'RESULTS.md'),
                                   os.path.join(ROOT, 'README.md'), include_smoke)
    log('run.py: rendered %s%s' % (os.path.relpath(path), (' and %d charts' % len(drawn))
                                   if drawn else ' (no charts)'))


def main(argv):
    load_scenario_files()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('build_dir', nargs='?', default='build/bench',
                   help='meson build dir holding the bench programs (default build/bench)')
    p.add_argument('--scenario', action='append', choices=list(SCENARIOS),
                   help='run only these scenarios (repeatable; default all)')
    p.add_argument('--servers', help='comma-separated echo servers to run (default all built)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds per cell (5)')
    p.add_argument('--duration', type=float, default=1.5, help='seconds per measured run (1.5)')
    p.add_argument('--warmup', type=float, default=0.5, help='warm-up seconds per server/cell')
    p.add_argument('--idle-conns', type=int, default=10000, help='idle connections (10000)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 2 cells, 1 round of 0.3 s, 200 idle conns (seconds)')
    p.add_argument('--json', metavar='PATH', help='also write every result as JSON to PATH')
    p.add_argument('--results-dir', default=os.path.join(HERE, 'results'),
                   help='where runs are saved and charts drawn (bench/results)')
    p.add_argument('--render-only', action='store_true',
                   help='run nothing: render RESULTS.md, charts and README table from the JSON')
    p.add_argument('--include-smoke', action='store_true',
                   help='with --render-only: render a draft from smoke runs too')
    p.add_argument('--no-pin', action='store_true', help='do not pin with taskset')
    p.add_argument('--server-cpu', type=int, default=0)
    p.add_argument('--client-cpu', type=int, default=1)
    p.add_argument('--check-targets', action='store_true',
                   help='exit 3 when a performance target is missed')
    a = p.parse_args(argv)
    if a.render_only:
        render_reports(a.results_dir, a.include_smoke)
        return 0
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 0.3, 0.0
    if a.rounds < 1 or a.duration <= 0 or a.warmup < 0 or a.idle_conns < 1:
        p.error('rounds >= 1, duration > 0, warmup >= 0, idle-conns >= 1')
    full = not a.quick and a.rounds >= 3 and a.duration >= 1.0

    try:
        ctx = Ctx(a, find_bench_dir(a.build_dir))
    except BenchError as e:
        log('run.py: %s' % e)
        return 2
    ctx.results = {}
    now = datetime.datetime.now(datetime.timezone.utc)
    doc = {'format': report.FORMAT, 'full': full,
           'date': now.isoformat(timespec='seconds'),
           'command': ' '.join([os.path.basename(sys.executable), 'bench/run.py'] + argv),
           'host': {'machine': platform.machine(), 'kernel': platform.release(),
                    'cpu_model': cpu_model(), 'cpus': os.cpu_count(), 'pinned': ctx.pin,
                    'loadavg_start': os.getloadavg()},
           'versions': versions(), 'scenarios': {}}
    failed, missed = [], []
    t0 = time.monotonic()
    for name in a.scenario or list(SCENARIOS):
        sc = SCENARIOS[name]()
        log('== %s: %s' % (name, sc.describe))
        try:
            res = sc.run(ctx)
        except (BenchError, subprocess.TimeoutExpired, OSError) as e:
            log('run.py: %s FAILED: %s' % (name, e))
            failed.append(name)
            doc['scenarios'][name] = {'error': str(e)}
            continue
        doc['scenarios'][name] = res
        ctx.results[name] = res
        print('\n## %s\n\n%s\n' % (name, sc.report(res)), flush=True)
        if hasattr(sc, 'failures'):
            missed += sc.failures(res)
    doc['elapsed_s'] = round(time.monotonic() - t0, 1)
    doc['host']['loadavg_end'] = os.getloadavg()
    # Other jobs on the machine skew every figure; say so next to them.
    print('load average %.1f at start, %.1f at end (%d CPUs)' % (
        doc['host']['loadavg_start'][0], doc['host']['loadavg_end'][0], os.cpu_count() or 1))
    doc['targets_missed'] = missed
    doc['failed'] = failed
    for m in missed:
        print('target missed: ' + m)
    print('elapsed %.0f s' % doc['elapsed_s'])
    paths = [a.json] if a.json else []
    if not a.quick:
        os.makedirs(a.results_dir, exist_ok=True)
        paths.append(os.path.join(a.results_dir, '%s-%s.json' % (
            'run' if full else 'smoke', now.strftime('%Y%m%dT%H%M%SZ'))))
    for path in paths:
        with open(path, 'w') as f:
            json.dump(doc, f, indent=1)
            f.write('\n')
        log('run.py: wrote %s' % path)
    if not a.quick:
        render_reports(a.results_dir, not full)
    if failed:
        return 1
    return 3 if missed and a.check_targets else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
