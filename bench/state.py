"""State benchmark: the worker's memory and disk once it holds many identities.

    .venv/bin/python bench/state.py [--identities 5000000] [--partitions 8]

On a broker of its own, writes --identities SIM activations, each by a
person of their own (valid resident ids of one province, spread over a
year and 200 outlets), to the input topic with an aiokafka producer; runs
`duanka worker` until it has screened and committed them all; then reads the
worker's resident memory (now, and its peak) and the size of its data
directory (the RocksDB stores), and the size on the broker's disk of its
changelog topics. Prints a table and writes bench/results/state.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
from benchkit import machine, save_results
from throughput import (
    Offsets,
    Worker,
    cpu_seconds,
    own_broker,
    produce,
    wait_screened,
    write_config,
)

from rules.config import Settings, load_settings
from rules.idnumber import check_digit
from stream.topics import ensure_topics

START = datetime(2026, 1, 1, tzinfo=UTC)
OUTLETS = 200


def events(count: int, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value): one SIM activation per person, a year of them in time order."""
    step = timedelta(days=365) / count
    topic = settings.topics.sim_events
    for n in range(count):
        born = date(1960, 1, 1) + timedelta(days=n // 900)
        first17 = f"620102{born:%Y%m%d}{n % 900 + 100:03d}"
        id_number = first17 + check_digit(first17)
        event = {
            "schema": "duanka.event/1",
            "event_id": f"CMCC-GS-{n:09d}",
            "event_type": "sim.activate",
            "occurred_at": (START + n * step).isoformat(timespec="seconds"),
            "source": "CMCC-GS",
            "id_type": "resident_id",
            "id_number": id_number,
            "region_code": "620102",
            "outlet_id": f"GS-LZ-{n % OUTLETS:04d}",
            "channel": "counter",
            "verification": "in_person",
            "msisdn": f"139{n:08d}",
            "sim_kind": "personal",
        }
        yield topic, id_number.encode(), orjson.dumps(event)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a live process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def size(path: Path, match: str = "") -> int:
    """Bytes of the files under `path` (in directories whose name contains `match`)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and match in str(p.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=5_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duanka-state-") as tmp:
        root = Path(tmp)
        with own_broker(root) as kafka:
            config = write_config(root, kafka.bootstrap, args.partitions, {})
            settings = load_settings(config, environ={})
            ensure_topics(settings)
            started = time.perf_counter()
            sent = asyncio.run(produce(kafka.bootstrap, events(args.identities, settings)))
            print(f"pre-filled {sent} events in {time.perf_counter() - started:.0f} s")
            worker = Worker(config, settings)
            offsets = Offsets(kafka.bootstrap)
            try:
                started = time.perf_counter()
                worker.start()
                assert worker.process is not None
                wait_screened(worker, offsets, timeout=3600 + args.identities / 100)
                seconds = time.perf_counter() - started
                rss = memory(worker.process.pid)
                cpu = cpu_seconds(worker.process.pid)
            finally:
                worker.stop()
                offsets.close()
            data_dir = Path(settings.worker.data_dir)
            figures = {
                "benchmark": "state",
                "identities": args.identities,
                "partitions": args.partitions,
                "worker_seconds_to_screen": round(seconds),
                "worker_cpu_seconds": round(cpu),
                "rss_mib_at_end": round(rss["VmRSS"] / 2**20),
                "rss_peak_mib": round(rss["VmHWM"] / 2**20),
                "data_dir_mib": round(size(data_dir) / 2**20),
                "data_dir_bytes_per_identity": round(size(data_dir) / args.identities),
                "changelogs_on_broker_mib": round(
                    size(root / "kafka", f"{settings.worker.app_id}-") / 2**20
                ),
                **machine(),
            }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    save_results("state", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
