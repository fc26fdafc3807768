#!/usr/bin/env python3
"""examples/playbook as a real process: --quick --json must run every row, each with a rate,
latencies and bytes; the human table must list every row; a server that flips one byte
(BRAID_PLAYBOOK_CORRUPT, a test hook) must make it exit 1; bad arguments exit 2.

usage: test_playbook.py PLAYBOOK CASE"""
import json
import os
import subprocess
import sys

ROWS = ['naive', 'keep-alive pool', 'pipelining', 'batching', 'gzip', 'memoized',
        'worker threads', 'HTTP/1.1']


def run(binary, *args, env=None, timeout=90):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          env=e)


def check(cond, what):
    if not cond:
        raise SystemExit('FAILED: ' + what)


def case_quick(binary):
    r = run(binary, '--quick', '--json')
    check(r.returncode == 0, 'exit %d: %s' % (r.returncode, r.stderr))
    doc = json.loads(r.stdout)
    check([x['technique'] for x in doc['rows']] == ROWS, 'rows: %r' % doc['rows'])
    for x in doc['rows']:
        check(x['requests'] > 0 and x['rps'] > 0, 'no requests in %s' % x['technique'])
        check(0 < x['p50_us'] <= x['p99_us'], 'latency of %s: %r' % (x['technique'], x))
        check(x['bytes_per_request'] > 0, 'bytes of %s' % x['technique'])
    rows = {x['technique']: x for x in doc['rows']}
    check(abs(rows['naive']['ratio_to_naive'] - 1) < 1e-9, 'naive ratio')
    # gzip shrinks what goes over the wire (~2 KiB of JSON to well under half); this holds on
    # any machine, unlike the rates.
    check(rows['gzip']['bytes_per_request'] < 0.6 * rows['batching']['bytes_per_request'],
          'gzip bytes: %r vs %r' % (rows['gzip'], rows['batching']))
    check(rows['HTTP/1.1']['bytes_per_request'] < rows['batching']['bytes_per_request'],
          'http gzip bytes')
    # The human form (stdout is a pipe here: no progress line, no escape codes).
    r = run(binary, '--quick', '--cost-us', '0')
    check(r.returncode == 0, 'table run exit %d: %s' % (r.returncode, r.stderr))
    check('\033' not in r.stdout and '\r' not in r.stdout, 'progress line on a pipe')
    for i, name in enumerate(ROWS):
        check(any(l.startswith(' %d  %s ' % (i + 1, name)) and 'x' in l
                  for l in r.stdout.splitlines()), 'row %s missing:\n%s' % (name, r.stdout))


def case_corrupt(binary):
    # Each server in turn flips a byte: the rows it serves must fail the demo.
    for srv in (0, 2, 4):  # plain (naive row), memo, http
        r = run(binary, '--quick', '--json', env={'BRAID_PLAYBOOK_CORRUPT': str(srv)})
        check(r.returncode == 1, 'server %d corrupting: exit %d' % (srv, r.returncode))
        check('playbook: FAILED: row' in r.stderr, 'server %d: %s' % (srv, r.stderr))
        check(r.stdout == '', 'server %d: JSON printed after a failure' % srv)


def case_bad_arguments(binary):
    for args in (['--seconds', '0'], ['--seconds', 'x'], ['--workers', '0'], ['--bogus'],
                 ['--cost-us']):
        r = run(binary, *args, timeout=20)
        check(r.returncode == 2 and 'usage' in r.stderr, '%r: exit %d' % (args, r.returncode))


if __name__ == '__main__':
    globals()['case_' + sys.argv[2]](sys.argv[1])
    print('ok')
