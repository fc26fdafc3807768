#!/usr/bin/env python3
"""pymemcache as the oracle for braid's memcache tests (Debian python3-pymemcache).

  memcache_oracle.py rendezvous N
      prints "<node> <key>" for N keys: the node pymemcache's HashClient hasher
      (RendezvousHash over nodes "127.0.0.1:PORT" for the ports below) picks.
  memcache_oracle.py interop PORT[,PORT...] check KEY=VALUE...
      reads each KEY through a HashClient on those servers and exits 1 unless it holds VALUE.
  memcache_oracle.py interop PORT[,PORT...] set KEY=VALUE...
      stores each KEY through a HashClient (flags 0, no expiry).
"""
import random
import sys

from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash

PORTS = [11211, 11212, 21000, 65000, 1]  # must match test_rendezvous_matches_pymemcache


def keys(n):
    rnd = random.Random(20261204)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-./"
    out = ["a", "b", "key", "user:1", "x" * 250]
    while len(out) < n:
        out.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 60))))
    return out[:n]


def main():
    if sys.argv[1] == "rendezvous":
        h = RendezvousHash()
        for p in PORTS:
            h.add_node("127.0.0.1:%d" % p)
        for k in keys(int(sys.argv[2])):
            print(h.get_node(k), k)
        return 0
    if sys.argv[1] == "interop":
        servers = [("127.0.0.1", int(p)) for p in sys.argv[2].split(",")]
        c = HashClient(servers, connect_timeout=2, timeout=2)
        bad = 0
        for kv in sys.argv[4:]:
            k, v = kv.split("=", 1)
            if sys.argv[3] == "set":
                c.set(k, v.encode())
            else:
                got = c.get(k)
                if got != v.encode():
                    print("key %s: pymemcache read %r, want %r" % (k, got, v), file=sys.stderr)
                    bad += 1
        return 1 if bad else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
