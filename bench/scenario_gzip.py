"""run.py scenario 'gzip': bench_gzip (braid's one-shot and streaming gzip against zlib and
libdeflate called directly; text and 1 KiB JSON messages, levels 1 and 6), pinned to the
client CPU. MB per CPU-second of uncompressed data."""
import json
import os
import subprocess
import tempfile

import report
from run import scenario, BenchError, log


@scenario
class Gzip:
    name = 'gzip'
    describe = 'gzip throughput: braid vs zlib and libdeflate (bench_gzip)'

    def run(self, ctx):
        prog = ctx.prog('bench_gzip')
        if not prog:
            raise BenchError('bench_gzip is not built')
        a = ctx.args
        small = a.quick or a.duration < 1.0
        rounds = min(a.rounds, 15)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, 'gzip.json')
            cmd = [prog, '--json', out, '--rounds', str(rounds),
                   '--pass-ms', '20' if small else '100', '--text-mb', '1' if small else '6']
            if ctx.pin:
                cmd = ['taskset', '-c', str(a.client_cpu)] + cmd
            log('gzip: ' + ' '.join(cmd))
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                raise BenchError('bench_gzip exit %d: %s' % (p.returncode, p.stderr.strip()))
            with open(out) as f:
                return json.load(f)

    def report(self, res):
        return report.render_gzip(res)[0]
