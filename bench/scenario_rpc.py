"""run.py scenario 'rpc': bench_rpc (braid rpc ping-pong, pipelined and batched, against a raw
tuned libuv echo of the same bytes, 1 and 16 connections, 64 B and 1 KiB), run for several
rounds so each figure has a spread. bench_rpc forks its server onto CPU 0 and runs its client
on CPU 1 by itself."""
import json
import subprocess

import report
from run import scenario, BenchError, log


@scenario
class Rpc:
    name = 'rpc'
    describe = 'rpc ping-pong / pipelined / batched vs a raw libuv echo (bench_rpc, rounds)'

    def run(self, ctx):
        prog = ctx.prog('bench_rpc')
        if not prog:
            raise BenchError('bench_rpc is not built')
        a = ctx.args
        rounds = min(a.rounds, 3)
        seconds = max(0.1, min(1.0, a.duration / 3))
        log('rpc: %d rounds of 16 scenarios x %.2f s (about %.0f s)' % (
            rounds, seconds, rounds * 16 * (seconds + 0.4)))
        runs = []
        for _ in range(rounds):
            p = subprocess.run([prog, '--seconds', '%g' % seconds], capture_output=True,
                               text=True, timeout=16 * (seconds + 5) + 60)
            lines = [l for l in p.stdout.splitlines() if l.startswith('{"bench":"rpc"')]
            if p.returncode != 0 or not lines:
                raise BenchError('bench_rpc exit %d: %s' % (p.returncode, p.stderr.strip()))
            runs.append(json.loads(lines[-1]))
        return {'rounds': rounds, 'seconds': seconds, 'runs': runs}

    def report(self, res):
        return report.render_rpc(res)[0]
