"""Replay benchmark: events per second and peak memory of `duanka replay`.

    .venv/bin/python bench/replay.py [--events 1000000] [--days 365]

Generates a simulated province (ordinary business plus every injected case)
of about --events events, runs `duanka replay` on it in a child process, and
prints the rate and the child's peak resident memory. Writes the figures to
bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from producers.simulator import iter_lines, simulate

RESULTS = Path(__file__).parent / "results"


def generate(path: Path, events: int, days: int) -> tuple[int, float, int]:
    started = time.perf_counter()
    world = simulate(events, days=days, seed=2026)
    people = world.people
    with path.open("wb") as out:
        for line in iter_lines(world.events):
            out.write(line + b"\n")
    watchlist = path.with_name("watchlist.jsonl")
    watchlist.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in world.watchlist))
    return len(world.events), time.perf_counter() - started, people


def run_replay(events: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and the summary the command printed."""
    out = events.with_name("alerts.jsonl")
    command = [
        sys.executable,
        "-m",
        "stream.cli",
        "replay",
        str(events),
        "--quiet",
        "--watchlist",
        str(events.with_name("watchlist.jsonl")),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kib * 1024, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duanka-bench-") as tmp:
        path = Path(tmp) / "events.jsonl"
        count, gen_seconds, people = generate(path, args.events, args.days)
        size = path.stat().st_size
        seconds, peak, summary = run_replay(path)
    figures = {
        "benchmark": "replay",
        "events": count,
        "identities": people,
        "days": args.days,
        "file_bytes": size,
        "generate_seconds": round(gen_seconds, 2),
        "replay_seconds": round(seconds, 2),
        "events_per_second": round(count / seconds),
        "peak_rss_mib": round(peak / 2**20, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(summary.strip())
    print()
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
