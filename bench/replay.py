"""Replay benchmark: events per second and peak memory of `duanka replay`, by size.

    .venv/bin/python bench/replay.py [--events 1000000 5000000] [--days 365]

For each size, `duanka simulate` writes a province (ordinary business plus
every injected case, and what everyone held when it began) of about that
many events over --days, and `duanka replay` runs over it, its holdings
loaded first; both run as child processes, and each child's own peak
resident memory is read from the kernel when it exits. Prints one row per
size, with the memory per identity, so how memory grows with the number of
identities shows; writes the rows to bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import machine, save_results


def run_child(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes and output of a child process; exits if it fails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{text}")
    return seconds, usage.ru_maxrss * 1024, text


def duanka(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def measure(events: int, days: int, directory: Path) -> dict[str, object]:
    gen_seconds, gen_peak, said = run_child(
        duanka("simulate", "--out", str(directory), "--events", str(events), "--days", str(days))
    )
    truth = directory / "truth.jsonl"
    files = directory / "events.jsonl", directory / "watchlist.jsonl", directory / "holdings.jsonl"
    count = sum(1 for _ in files[0].open("rb"))
    people = re.search(r"by ([\d,]+) people", said)
    assert people, said
    identities = int(people[1].replace(",", ""))
    seconds, peak, summary = run_child(
        duanka(
            "replay",
            str(files[0]),
            "--quiet",
            "--watchlist",
            str(files[1]),
            "--holdings",
            str(files[2]),
            "--out",
            str(directory / "alerts.jsonl"),
        )
    )
    alerts = sum(1 for _ in (directory / "alerts.jsonl").open("rb"))
    for path in (*files, truth, directory / "alerts.jsonl"):
        path.unlink()
    return {
        "events": count,
        "identities": identities,
        "days": days,
        "alerts": alerts,
        "simulate_seconds": round(gen_seconds, 1),
        "simulate_peak_rss_mib": round(gen_peak / 2**20),
        "replay_seconds": round(seconds, 1),
        "events_per_second": round(count / seconds),
        "peak_rss_mib": round(peak / 2**20),
        "bytes_per_identity": round(peak / identities),
        "summary": summary.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="duanka-bench-") as tmp:
        for events in args.events:
            rows.append(measure(events, args.days, Path(tmp)))
            print(f"done: {rows[-1]['events']:,} events", file=sys.stderr)
    columns = [
        "events",
        "identities",
        "alerts",
        "replay_seconds",
        "events_per_second",
        "peak_rss_mib",
        "bytes_per_identity",
        "simulate_seconds",
    ]
    print("  ".join(f"{c:>17}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>17,}" for c in columns))
    figures = {
        "benchmark": "replay",
        "rows": rows,
        **machine(),
    }
    save_results("replay", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
