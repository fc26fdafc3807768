#!/usr/bin/env python3
"""functools.lru_cache hit and miss cost, for bench_cache's ratios.

bench_cache writes the keys (24-byte records) and the query streams (uint32 indices into the
keys) to files and runs this script on them, so both sides see identical key sets and access
sequences in the same run. Keys are passed as str (decoded latin-1), which takes lru_cache's
fast path (a single str argument is its own key, with a cached hash): the most favourable
case for Python. Prints "metric value" lines (ns per call, median of --reps runs).

Each timed loop is `for q in qs: f(q)`, so it includes the interpreter's loop and call
overhead, which a Python program pays on every memoized call; `loop_call_ns` (the same loop
calling the builtin id()) is reported so the reader can subtract it.
"""
import argparse
import array
import functools
import statistics
import sys
import time


def load_keys(path, klen):
    data = open(path, "rb").read()
    return [data[i:i + klen].decode("latin-1") for i in range(0, len(data), klen)]


def load_queries(path):
    a = array.array("I")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def timed(fn, qs):
    t0 = time.perf_counter_ns()
    for q in qs:
        fn(q)
    return (time.perf_counter_ns() - t0) / len(qs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", required=True)
    ap.add_argument("--key-len", type=int, default=24)
    ap.add_argument("--entries", type=int, required=True)
    ap.add_argument("--query", action="append", default=[], help="name=path")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    keys = load_keys(args.keys, args.key_len)
    n = args.entries
    fresh = keys[n:]
    value = b"v" * 32

    def make():
        @functools.lru_cache(maxsize=n)
        def f(k):
            return value
        return f

    # Fill from empty: median of several fills into new caches (the last one is kept).
    fills = []
    for _ in range(max(args.reps, 1)):
        f = make()
        t0 = time.perf_counter_ns()
        for k in keys[:n]:
            f(k)
        fills.append((time.perf_counter_ns() - t0) / n)
    print(f"put_fill_ns {statistics.median(fills):.1f}")

    streams = []
    for spec in args.query:
        name, path = spec.split("=", 1)
        idx = load_queries(path)
        streams.append((name, [keys[i] for i in idx]))

    results = {name: [] for name, _ in streams}
    loop_call = []
    for _ in range(args.reps):
        for name, qs in streams:
            results[name].append(timed(f, qs))
        loop_call.append(timed(id, streams[0][1]))
    info = f.cache_info()
    if info.currsize != n:
        sys.exit(f"cache holds {info.currsize}, expected {n}")
    for name, _ in streams:
        print(f"get_hit_{name}_ns {statistics.median(results[name]):.1f}")
    print(f"loop_call_ns {statistics.median(loop_call):.1f}")

    # A miss on a full cache: calls the function, inserts, evicts the least recent entry.
    # Each rep uses its own slice of keys never seen before, so every call misses.
    if fresh:
        per = len(fresh) // max(args.reps, 1)
        evicts = []
        for r in range(args.reps):
            batch = fresh[r * per:(r + 1) * per]
            misses = f.cache_info().misses
            t0 = time.perf_counter_ns()
            for k in batch:
                f(k)
            evicts.append((time.perf_counter_ns() - t0) / per)
            if f.cache_info().misses - misses != per:
                sys.exit("evicting calls hit the cache")
        print(f"put_evict_ns {statistics.median(evicts):.1f}")


if __name__ == "__main__":
    main()
