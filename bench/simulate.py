"""Simulator benchmark: how long `duanka simulate` takes for a million events, and its memory.

    .venv/bin/python bench/simulate.py [--events 1000000] [--days 30]

Runs the command as a user would, in a child process, writing the events,
watchlist, holdings snapshots and ground truth to a temporary directory. Prints the wall time,
the rate and the child's peak resident memory, and writes them to
bench/results/simulate.json.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import machine, save_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duanka-bench-") as tmp:
        command = [
            sys.executable,
            "-m",
            "stream.cli",
            "simulate",
            "--out",
            tmp,
            "--events",
            str(args.events),
            "--days",
            str(args.days),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        events = sum(1 for _ in (Path(tmp) / "events.jsonl").open("rb"))
        size = (Path(tmp) / "events.jsonl").stat().st_size
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    figures = {
        "benchmark": "simulate",
        "events": events,
        "days": args.days,
        "file_bytes": size,
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        "peak_rss_mib": round(peak / 2**20, 1),
        **machine(),
    }
    print(done.stdout.strip())
    print()
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    save_results("simulate", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
