"""run.py scenario 'cache': runs bench_cache (braid's cache vs a chained-hash LRU baseline and
functools.lru_cache) and reports its headline figures. bench_cache is also a standalone
program; see bench/RESULTS.md, section "cache"."""
import json
import os
import subprocess
import tempfile

from run import scenario, BenchError, log


@scenario
class Cache:
    name = 'cache'
    describe = 'memoizing cache: get-hit/put ns/op vs baseline and lru_cache, LRU vs SIEVE'

    def run(self, ctx):
        prog = ctx.prog('bench_cache')
        if not prog:
            raise BenchError('bench_cache is not built')
        here = os.path.dirname(os.path.abspath(__file__))
        # A smoke run (--quick, or runs under a second) uses 64K entries and one rep.
        quick = ctx.args.quick or ctx.args.duration < 1.0
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'cache.json')
            cmd = [prog, '--json', out, '--python', os.path.join(here, 'bench_lru_cache.py')]
            cmd += ['--quick', '--reps', '1' if ctx.args.duration < 1.0 else '2'] if quick \
                else ['--reps', '5']
            if ctx.pin:
                cmd = ['taskset', '-c', str(ctx.args.client_cpu)] + cmd
            log('cache: ' + ' '.join(cmd))
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=600)
            if r.returncode != 0:
                raise BenchError('bench_cache exited with %d: %s' % (r.returncode, r.stderr))
            with open(out) as f:
                doc = json.load(f)
        doc['table'] = r.stdout
        return doc

    def report(self, res):
        return res['table'].rstrip()

    def failures(self, res):
        # The targets are stated for 1M entries; --quick runs 64K and says nothing about them.
        if res.get('entries_large', 0) < (1 << 20):
            return []
        m = res['metrics']
        out = []

        def ratio(a, b):
            return m.get(a, -1) / m[b] if m.get(b, 0) > 0 and m.get(a, -1) > 0 else None

        checks = [
            ('baseline_1m_get_uniform_ns', 'braid-sieve_1m_get_uniform_ns', 2.0,
             'get-hit 1M uniform >= 2x baseline'),
            ('py_1m_get_hit_uniform_ns', 'braid-sieve_1m_get_uniform_ns', 5.0,
             'get-hit 1M uniform >= 5x lru_cache'),
            ('py_1m_get_hit_zipf0.9_ns', 'braid-sieve_1m_get_zipf0.9_ns', 5.0,
             'get-hit 1M Zipf(0.9) >= 5x lru_cache'),
            ('py_1m_get_hit_hot1k_ns', 'braid-sieve_1m_get_hot1k_ns', 3.0,
             'get-hit hot 1,024 keys >= 3x lru_cache'),
        ]
        for slow, fast, want, what in checks:
            x = ratio(slow, fast)
            if x is not None and x < want:
                out.append('cache: %s (got %.2fx)' % (what, x))
        return out
