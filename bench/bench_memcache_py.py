#!/usr/bin/env python3
"""The pymemcache twin of bench_memcache's multi-get cell (issue 14): HashClient.get_many of
100 keys, N rounds, on the same servers (rendezvous placement, as braid's default), keys
stored first. Prints one line and, with --json PATH, writes {"name", "wall_s", "cpu_s", "ops"}.

Usage: bench_memcache_py.py PORT,PORT,... [--rounds N] [--json PATH]"""
import json
import sys
import time

from pymemcache.client.hash import HashClient


def main():
    ports = [int(p) for p in sys.argv[1].split(",")]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    rounds = int(args.get("--rounds", 10000))
    c = HashClient([("127.0.0.1", p) for p in ports])
    keys = ["bench:key:%d" % i for i in range(1000)]
    for k in keys:
        c.set(k, b"v" * 100)
    errors = 0
    w0, c0 = time.monotonic(), time.process_time()
    for r in range(rounds):
        off = (r * 100) % 901
        got = c.get_many(keys[off:off + 100])
        if len(got) != 100:
            errors += 1
    wall, cpu = time.monotonic() - w0, time.process_time() - c0
    ops = rounds * 100
    print("%-22s %10.3f %10.3f %12.0f %8d" % ("multiget_pymemcache", wall, cpu, ops / cpu, errors))
    if "--json" in args:
        with open(args["--json"], "w") as f:
            json.dump({"name": "multiget_pymemcache", "wall_s": wall, "cpu_s": cpu, "ops": ops,
                       "errors": errors}, f)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
