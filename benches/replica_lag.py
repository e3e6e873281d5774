#!/usr/bin/env python3
"""Samples Tessera's replication lag while a load runs; prints p50/p99 in LSNs and ms.

Usage: replica_lag.py --port PORT --seconds N [--interval-ms 5]

Every interval it reads tessera.replication (one row per shard copy: role, applied lsn)
over one connection. Lag in LSNs is primary lsn - replica lsn at the same sample. Lag in
milliseconds is, for each sample, the time until a later sample shows the replica at or
past the primary's lsn of that sample (resolution: the sampling interval plus one query).
Only connects to 127.0.0.1. Uses libpq through ctypes (no pip install).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "slt"))
import check_against_postgres as pg  # noqa: E402


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--interval-ms", type=float, default=5.0)
    args = ap.parse_args()
    pg.LIBPQ = pg.load_libpq()
    conn = pg.Conn("127.0.0.1", args.port, "tessera", "tessera")
    samples = []  # (t, {shard: primary_lsn}, {(shard, node): replica_lsn})
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        t = time.monotonic()
        rows = conn.execute("SELECT shard, node, role, lsn FROM tessera.replication").rows
        primary, replica = {}, {}
        for shard, node, role, lsn in rows:
            if lsn is None:
                # A copy whose node did not answer this sample (just started, or busy).
                continue
            if role == "primary":
                primary[shard] = int(lsn)
            else:
                replica[(shard, node)] = int(lsn)
        samples.append((t, primary, replica))
        time.sleep(max(0.0, args.interval_ms / 1000.0 - (time.monotonic() - t)))
    conn.close()
    lag_lsn, lag_ms = [], []
    for i, (t, primary, replica) in enumerate(samples):
        for (shard, node), r in replica.items():
            p = primary.get(shard)
            if p is None:
                continue
            lag_lsn.append(max(0, p - r))
            if r >= p:
                lag_ms.append(0.0)
                continue
            for t2, _, later in samples[i + 1:]:
                if later.get((shard, node), -1) >= p:
                    lag_ms.append((t2 - t) * 1000.0)
                    break
    print(
        "replica_lag samples=%d lsn_p50=%d lsn_p99=%d ms_p50=%.1f ms_p99=%.1f"
        % (
            len(samples),
            percentile(lag_lsn, 50) if lag_lsn else 0,
            percentile(lag_lsn, 99) if lag_lsn else 0,
            percentile(lag_ms, 50) if lag_ms else 0.0,
            percentile(lag_ms, 99) if lag_ms else 0.0,
        )
    )


if __name__ == "__main__":
    main()
