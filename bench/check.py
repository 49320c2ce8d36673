"""Check benchmark: the pre-opening check's response time while the worker screens a stream.

    .venv/bin/python bench/check.py [--rates 100 500] [--seconds 60] [--events-per-second 1000]

For each check rate, on a broker of its own and topics of the rate's own:

1. simulates a province and keeps enough events for the run, in event-time
   order; starts `duanka worker` (one worker, every rule on), publishes the
   watchlist and the holdings snapshots, and waits until it holds its
   partitions and answers checks;
2. sends the events at `--events-per-second` (aiokafka, as bench/latency.py
   does) and, at the same time, POSTs checks to the worker's /v1/check at the
   check rate, open loop: each check is sent at its scheduled moment whether
   or not the earlier ones were answered, so a slow answer cannot slow the
   load down and hide itself;
3. the checks are the openings of the simulated people (an identity the
   stream is changing as the checks come, its history, watchlist entries,
   non-local IDs), each with a check_id of its own, as of now.

A check's time is from its scheduled moment to its answer being read, on
this process's clock (the HTTP round trip, the worker's routing, its wait
for the identity's state, the decision). The table shows p50, p99 and max
per rate, the answers by status and decision, how many were stale, and
whether the stream kept up (events screened when sending ended).

Prints a table and writes bench/results/check.json.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from benchkit import add_worker_option, machine, save_results
from latency import at_most_ms, first_events, wait_ready, write_events
from throughput import (
    Worker,
    cpu_seconds,
    keyed_lines,
    list_lines,
    own_broker,
    produce,
    worker_options,
    write_config,
)

from rules.config import Settings, load_settings
from stream.topics import ensure_topics

TARGET_P99_MS = 20.0
RATE_FOR_TARGET = 500
CONNECTIONS = 256


def check_requests(events: Path, count: int) -> list[bytes]:
    """`count` checks made of the file's openings (cycled), each with a check_id of its own."""
    openings = []
    with events.open("rb") as lines:
        for raw in lines:
            event = orjson.loads(raw)
            if event["event_type"] in ("sim.activate", "bank.open"):
                openings.append(event)
    requests = []
    for n in range(count):
        event = dict(openings[n % len(openings)])
        del event["event_id"]
        event.pop("check_id", None)
        event |= {
            "schema": "duanka.check/1",
            "check_id": f"bench-{n:08d}",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }
        requests.append(orjson.dumps(event))
    return requests


async def send_events(
    producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes]], rate: int
) -> float:
    started = time.monotonic()
    pending = []
    for index, (topic, key, value) in enumerate(records):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(max(delay, 0.01))
        pending.append(await producer.send(topic, value, key=key))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return time.monotonic() - started


class Checks:
    """Checks sent open loop, and their outcomes."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.seconds: list[float] = []
        self.statuses: dict[str, int] = {}
        self.decisions: dict[str, int] = {}
        self.stale = 0

    async def one(self, body: bytes, due: float) -> None:
        try:
            async with self.session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = await response.read()
                status = str(response.status)
        except aiohttp.ClientError as error:
            status = type(error).__name__
            answer = b""
        self.seconds.append(time.monotonic() - due)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "200":
            decision = orjson.loads(answer)
            self.decisions[decision["decision"]] = self.decisions.get(decision["decision"], 0) + 1
            self.stale += bool(decision.get("stale"))

    async def send(self, requests: list[bytes], rate: int) -> float:
        started = time.monotonic()
        tasks = []
        for index, body in enumerate(requests):
            due = started + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(body, due)))
        await asyncio.gather(*tasks)
        return time.monotonic() - started


async def warm_up(url: str, requests: list[bytes]) -> None:
    """Until the worker answers checks (its identity stage holds every partition)."""
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        for body in requests:
            while True:
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not answer checks in 120 s")
                await asyncio.sleep(0.5)


async def run_load(
    bootstrap: str,
    settings: Settings,
    events: Path,
    event_rate: int,
    requests: list[bytes],
    check_rate: int,
    worker: Worker,
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.worker.web_port}/v1/check"
    records = list(keyed_lines(events, settings))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    # a pool of kept-alive connections, as a carrier's client would hold (a new connection
    # per request would time the TCP handshakes of both sides instead)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        checks = Checks(session, url)
        assert worker.process is not None
        cpu_before = cpu_seconds(worker.process.pid)
        try:
            streaming = asyncio.create_task(send_events(producer, records, event_rate))
            checking_s = await checks.send(requests, check_rate)
            sending_s = await streaming
        finally:
            await producer.stop()
    worker_cores = (cpu_seconds(worker.process.pid) - cpu_before) / max(checking_s, sending_s)
    read = await asyncio.to_thread(worker.metrics)
    inside = await asyncio.to_thread(worker_share, worker)
    seconds = np.array(checks.seconds) * 1000
    return {
        "check_rate": check_rate,
        "checks_sent": len(requests),
        "checks_per_second": round(len(requests) / checking_s),
        "p50_ms": round(float(np.percentile(seconds, 50)), 1),
        "p99_ms": round(float(np.percentile(seconds, 99)), 1),
        "max_ms": round(float(seconds.max()), 1),
        "statuses": checks.statuses,
        "decisions": checks.decisions,
        "stale": checks.stale,
        "events_sent": len(records),
        "events_per_second": round(len(records) / sending_s),
        "events_behind_when_sending_ended": len(records) - int(read.get("duanka_events_total", 0)),
        "worker_cores": round(worker_cores, 2),
        **inside,
    }


def worker_share(worker: Worker) -> dict[str, Any]:
    """The worker's own time per check (its duanka_check_seconds; to a bucket, so "at most")."""
    url = f"http://127.0.0.1:{worker.settings.worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    p50, p99 = at_most_ms(text, "duanka_check_seconds", {})
    waited = sum(
        float(value)
        for value in re.findall(r"^duanka_check_wait_seconds_count ([0-9.e+]+)$", text, re.M)
    )
    wait_p50, wait_p99 = at_most_ms(text, "duanka_check_wait_seconds", {})
    return {
        "worker_p50_ms_at_most": p50,
        "worker_p99_ms_at_most": p99,
        "checks_that_waited": int(waited),
        "wait_p50_ms_at_most": wait_p50,
        "wait_p99_ms_at_most": wait_p99,
    }


def run_rate(
    root: Path,
    check_rate: int,
    event_rate: int,
    seconds: int,
    partitions: int,
    seed: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    with own_broker(root) as kafka:
        config = write_config(root, kafka.bootstrap, partitions, options)
        settings = load_settings(config, environ={})
        ensure_topics(settings)
        files = write_events(root, event_rate * seconds, seed)
        events = root / "sent.jsonl"
        first_events(files.events, event_rate * seconds, events)
        requests = check_requests(files.events, check_rate * seconds + 20)
        worker = Worker(config, settings)
        try:
            worker.start()
            wait_ready(worker)
            asyncio.run(produce(kafka.bootstrap, list_lines(files, settings)))
            url = f"http://127.0.0.1:{settings.worker.web_port}/v1/check"
            asyncio.run(warm_up(url, requests[:20]))
            return asyncio.run(
                run_load(
                    kafka.bootstrap, settings, events, event_rate, requests[20:], check_rate, worker
                )
            )
        finally:
            worker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--events-per-second", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label", default="", help="a note stored with the figures")
    add_worker_option(parser, "commit_ms=500")
    args = parser.parse_args()
    options = worker_options(args.worker)

    runs = []
    for rate in args.rates:
        print(f"{rate} checks/s with {args.events_per_second} events/s for {args.seconds} s ...")
        with tempfile.TemporaryDirectory(prefix="duanka-check-") as tmp:
            runs.append(
                run_rate(
                    Path(tmp),
                    rate,
                    args.events_per_second,
                    args.seconds,
                    args.partitions,
                    args.seed,
                    options,
                )
            )
        print(f"  {runs[-1]}", flush=True)

    columns = (
        ("check_rate", "checks/s"),
        ("checks_per_second", "sent/s"),
        ("events_per_second", "events/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("worker_p99_ms_at_most", "worker p99 ≤"),
        ("checks_that_waited", "waited"),
        ("stale", "stale"),
        ("events_behind_when_sending_ended", "behind at end"),
        ("worker_cores", "worker cores"),
    )
    print()
    print("  ".join(f"{title:>13}" for _, title in columns))
    for run in runs:
        print("  ".join(f"{run[key]!s:>13}" for key, _ in columns))
    print(f"target: p99 under {TARGET_P99_MS:.0f} ms at {RATE_FOR_TARGET} checks/s")
    save_results(
        "check",
        {
            "benchmark": "check",
            "label": args.label,
            "seconds": args.seconds,
            "events_per_second": args.events_per_second,
            "partitions": args.partitions,
            "worker_options": options,
            "time": "scheduled send to answer read, open loop, this process's clock",
            "target_p99_ms": TARGET_P99_MS,
            "runs": runs,
            **machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
