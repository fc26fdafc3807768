#!/usr/bin/env python3
"""bench/report.py renders RESULTS.md from run JSON: checked on a small fixture (a full run
and a smoke run). Fast: no benchmark runs, no gnuplot (the chart script is checked as text).

usage: test_report.py SOURCE_ROOT"""
import os
import shutil
import sys
import tempfile

root = sys.argv[1]
sys.path.insert(0, os.path.join(root, 'bench'))
sys.dont_write_bytecode = True
import report  # noqa: E402

here = os.path.join(root, 'tests', 'bench')


def check(cond, what):
    if not cond:
        raise SystemExit('FAILED: ' + what)


def line_with(text, *needles):
    for line in text.splitlines():
        if all(n in line for n in needles):
            return line
    raise SystemExit('FAILED: no line with %r in:\n%s' % (needles, text))


tmp = tempfile.mkdtemp(prefix='braid-report-test-')
try:
    # No run at all: a placeholder that says how to make one.
    text, drawn = report.render([], tmp, charts=False)
    check('No full run yet' in text and 'bench/run.py' in text, 'placeholder')

    shutil.copy(os.path.join(here, 'fixture_run.json'), os.path.join(tmp, 'run-1.json'))
    shutil.copy(os.path.join(here, 'fixture_smoke.json'), os.path.join(tmp, 'smoke-1.json'))
    docs = report.load_runs(tmp)
    check(len(docs) == 1, 'smoke runs are not loaded by default')
    text, drawn = report.render(docs, tmp, charts=False)

    # The machine, versions, load average and exact command, in each section.
    check('Test CPU 9000, 2 cores, kernel 6.1.0-test' in text, 'machine line')
    check('load average 0.25 before, 1.50 after' in text, 'load average')
    check('braid 0.2.0 (abc1234)' in text and 'libuv 1.44.2' in text, 'versions')
    check('`python3 bench/run.py build`' in text, 'command')
    check('Smoke CPU' not in text, 'a smoke run leaked into RESULTS.md')

    echo = text[text.index('## echo'):text.index('## latency')]
    # Ratios first, then the absolute figures.
    check(echo.index('braid / uv_tuned') < echo.index('| 1c 64B ping-pong | braid |'),
          'ratios before absolute figures')
    # braid's 25% spread is flagged, in its own row and in the ratio built on it ...
    check(report.FLAG in line_with(echo, '| 1c 64B ping-pong | braid |'), 'flagged cell')
    check('25.0%' + report.FLAG in echo, 'flagged spread')
    check('0.976' + report.FLAG in line_with(echo, '1c 64B ping-pong', 'braid / uv_tuned'),
          'flagged ratio')
    # ... while the quiet cells are not.
    check(report.FLAG not in line_with(echo, '| 50c 1KiB pipe16 | braid |'), 'quiet cell')
    check(report.FLAG not in line_with(echo, '50c 1KiB pipe16', 'braid / uv_tuned'),
          'quiet ratio')
    check('| 50c 1KiB pipe16 | braid | 300,000 | 2.0% | 2000.0 | 4000.0 | 310,000 | 97% |'
          in echo, 'absolute row: %s' % line_with(echo, '| 50c 1KiB pipe16 | braid |'))
    check('meets 0.95x' in echo, 'target verdict')

    lat = text[text.index('## latency'):text.index('## rpc')]
    check(report.FLAG in line_with(lat, '| uv_tuned | 25% |'), 'latency p99 spread flagged')
    check('| braid | 25% | 25,000 | 25,000 | 30.0 | 80.0 | 200.0 | 5.0% |' in lat,
          'latency row: %s' % line_with(lat, '| braid | 25% |'))

    rpc = text[text.index('## rpc'):]
    check('| 1 conn, 64 B | batched / ping-pong | 49.73 | 18.70 |' in rpc,
          'rpc ratio: %s' % line_with(rpc, 'batched / ping-pong'))

    # The README block: five lines at most, each linking to its section; the markers stay.
    block = report.readme_block(docs)
    check('49.7x' in block and 'bench/RESULTS.md#rpc' in block, 'readme block: ' + block)
    readme = os.path.join(tmp, 'README.md')
    with open(readme, 'w') as f:
        f.write('intro\n%s\nold\n%s\nrest\n' % (report.README_BEGIN, report.README_END))
    check(report.update_readme(readme, block), 'markers found')
    with open(readme) as f:
        r = f.read()
    check('old' not in r and block in r and r.endswith('%s\nrest\n' % report.README_END),
          'readme updated between the markers')

    # With smoke runs asked for: a draft that says so, written beside, not over, RESULTS.md.
    results_md = os.path.join(tmp, 'RESULTS.md')
    path, _ = report.write_all(tmp, results_md, readme, include_smoke=True, charts=False)
    check(path.endswith('RESULTS-draft.md') and not os.path.exists(results_md), 'draft path')
    with open(path) as f:
        check('DRAFT from smoke runs' in f.read(), 'draft marked')

    # The chart script: one clustered-histogram column per server, categories quoted.
    spec = report.render_echo(docs[0]['scenarios']['echo'])[1][0]
    gp = report.gnuplot_script(spec, '/tmp/x.svg')
    check('set terminal svg' in gp and '"1c 64B ping-pong" 40000 41000' in gp and
          'title "uv_tuned"' in gp, 'gnuplot script:\n' + gp)
finally:
    shutil.rmtree(tmp)
print('ok')
