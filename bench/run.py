#!/usr/bin/env python3
"""braid's benchmark driver: runs every registered scenario, prints tables, writes JSON.

It builds nothing: point it at the meson build directory that holds the bench programs
(default build/bench; a build root with a bench/ subdirectory works too).

    python3 bench/run.py [BUILD_DIR] [--scenario NAME ...] [--rounds N] [--duration S]
                         [--warmup S] [--quick] [--json PATH] [--servers a,b] [--no-pin]

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

SCENARIOS = {}


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

    def __init__(self, ctx, name, path):
        self.name = name
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(ctx.cmd('server', [path, '--port', '0']),
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


def run_load(ctx, port, conns, size, depth, duration, warmup=0.0):
    """Runs echo_load once; returns its JSON result. Raises on any error or mismatch."""
    argv = [ctx.prog('echo_load'), '--port', str(port), '--conns', str(conns), '--size',
            str(size), '--depth', str(depth), '--duration', '%g' % duration,
            '--warmup', '%g' % warmup]
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
                     '(meson setup build && ninja -C build)' % (path, path))


def main(argv):
    load_scenario_files()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('build_dir', nargs='?', default='build/bench',
                   help='meson build dir holding the bench programs (default build/bench)')
    p.add_argument('--scenario', action='append', choices=list(SCENARIOS),
                   help='run only these scenarios (repeatable; default all)')
    p.add_argument('--servers', help='comma-separated echo servers to run (default all built)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds per cell (5)')
    p.add_argument('--duration', type=float, default=2.0, help='seconds per measured run (2)')
    p.add_argument('--warmup', type=float, default=0.5, help='warm-up seconds per server/cell')
    p.add_argument('--idle-conns', type=int, default=10000, help='idle connections (10000)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 2 cells, 1 round of 0.3 s, 200 idle conns (seconds)')
    p.add_argument('--json', metavar='PATH', help='write every result as JSON to PATH')
    p.add_argument('--no-pin', action='store_true', help='do not pin with taskset')
    p.add_argument('--server-cpu', type=int, default=0)
    p.add_argument('--client-cpu', type=int, default=1)
    p.add_argument('--check-targets', action='store_true',
                   help='exit 3 when a performance target is missed')
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 0.3, 0.0
    if a.rounds < 1 or a.duration <= 0 or a.warmup < 0 or a.idle_conns < 1:
        p.error('rounds >= 1, duration > 0, warmup >= 0, idle-conns >= 1')

    try:
        ctx = Ctx(a, find_bench_dir(a.build_dir))
    except BenchError as e:
        log('run.py: %s' % e)
        return 2
    doc = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'command': ' '.join([os.path.basename(sys.executable), 'bench/run.py'] + argv),
           'host': {'machine': platform.machine(), 'kernel': platform.release(),
                    'cpus': os.cpu_count(), 'pinned': ctx.pin,
                    'loadavg_start': os.getloadavg()},
           'scenarios': {}}
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
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(doc, f, indent=1)
            f.write('\n')
    if failed:
        return 1
    return 3 if missed and a.check_targets else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
