"""run.py scenario 'pool': bench_pool (connect-per-request against pooled, pooled+pipelined and
pooled+leased+batched, 1 and 64 callers), its rounds interleaved inside one run. bench_pool
forks its server onto CPU 0 and pins itself to CPU 1."""
import json
import subprocess

import report
from run import scenario, BenchError, log


@scenario
class Pool:
    name = 'pool'
    describe = 'connection pools vs a new connection per request (bench_pool)'

    def run(self, ctx):
        prog = ctx.prog('bench_pool')
        if not prog:
            raise BenchError('bench_pool is not built')
        a = ctx.args
        rounds = min(a.rounds, 16)
        ms = int(max(50, min(300, a.duration * 200)))
        log('pool: %d rounds x 12 scenarios x %d ms (about %.0f s)' % (
            rounds, ms, rounds * 12 * (ms + 80) / 1000))
        p = subprocess.run([prog, str(rounds), str(ms)], capture_output=True, text=True,
                           timeout=rounds * 12 * (ms + 1000) / 1000 + 60)
        lines = [l for l in p.stdout.splitlines() if l.startswith('JSON: ')]
        if p.returncode != 0 or not lines:
            raise BenchError('bench_pool exit %d: %s %s' % (p.returncode, p.stdout[-500:],
                                                            p.stderr.strip()))
        return json.loads(lines[-1][len('JSON: '):])

    def report(self, res):
        return report.render_pool(res)[0]
