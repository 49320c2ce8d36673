"""Latency benchmark: from producing an event to its alert arriving on the alert topic.

    .venv/bin/python bench/latency.py [--rates 100 200 2000] [--seconds 60] [--partitions 8]

For each rate, on a broker of its own and topics of the rate's own:

1. simulates a province (every rule's cases among ordinary business, a round
   of them per 1,000 events) and keeps the first rate x seconds events, in
   event-time order;
2. starts `duanka worker` with every rule on, waits until it holds its
   partitions, and publishes the watchlist and the holdings snapshots;
3. sends the events at a steady rate (aiokafka producer, 5 ms linger, in
   slices every 10 ms), noting when each was handed to the producer, while
   an aiokafka consumer in the same process reads the alert topic;
4. waits until every alert `duanka replay` gives for those events has
   arrived (or a time limit passes).

An alert's latency is the time it was read from the alert topic minus the
time its newest piece of evidence (the event that completed the pattern) was
handed to the producer; both on this machine's clock. The table shows p50,
p99 and max per rate, how many alerts arrived of those expected, and whether
the worker kept up: how far behind it was when the last event was sent.
Beside them, the worker's own share, from its `duanka_alert_latency_seconds`
histogram (from reading the event to Kafka acknowledging the alert; known
to a bucket, so "at most"), the same for each hop on the way
(`duanka_stage_delay_seconds`: envelopes sent, received by the identity
stage, released by its ordering), and the CPU cores it used while events
were sent.

Prints a table and writes bench/results/latency.json.
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

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from benchkit import add_worker_option, machine, save_results
from throughput import (
    Worker,
    cpu_seconds,
    expected_alerts,
    keyed_lines,
    list_lines,
    own_broker,
    produce,
    worker_options,
    write_config,
)

from producers.simulate import WorldFiles, write_world
from producers.simulator import simulate
from rules.config import Settings, load_settings
from stream.topics import ensure_topics

SLICE_S = 0.01  # the producer sends a slice of events every 10 ms
SLICE_REPORT_S = 10  # latencies are also shown for each 10 s of sending
TARGET_P99_MS = 250.0
# a round of cases (one of each rule's, about 35 alerts) per this many events:
# ten times as dense as the simulator's default, for enough alerts to time
EVENTS_PER_ROUND = 1000


def write_events(root: Path, count: int, seed: int) -> WorldFiles:
    """At least `count` simulated events, dense with cases, the watchlist and the holdings."""
    rounds = max(1, count // EVENTS_PER_ROUND)
    # the cases' people come out of the total, and they open fewer cards than
    # ordinary people do: ask for a quarter more
    world = simulate(count * 5 // 4, days=30, seed=seed, rounds=rounds)
    return write_world(world, root)


def first_events(path: Path, count: int, out: Path) -> int:
    """Copy the first `count` event lines of `path` to `out`; the number copied."""
    copied = 0
    with path.open("rb") as lines, out.open("wb") as kept:
        for line in lines:
            if copied == count:
                break
            kept.write(line)
            copied += 1
    return copied


def wait_ready(worker: Worker, timeout: float = 120.0) -> None:
    """Until the worker reports consumer lag, which it does once it holds partitions."""
    deadline = time.monotonic() + timeout
    while "duanka_consumer_lag" not in worker.metrics():
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not get its partitions in {timeout:.0f} s")
        time.sleep(0.5)


class AlertTimes:
    """When each event was handed to the producer, and each alert's latency as it arrives."""

    def __init__(self) -> None:
        self.sent_at: dict[tuple[str, str], float] = {}
        self.received: dict[str, float] = {}
        self.latencies: list[tuple[str, float]] = []  # (rule_id, seconds)
        self.evidence_sent: list[float] = []  # when each timed alert's newest evidence was sent

    def sent(self, value: bytes) -> None:
        event = orjson.loads(value)
        self.sent_at[(event["source"], event["event_id"])] = time.time()

    async def listen(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for batch in batches.values():
                for record in batch:
                    self.arrived(orjson.loads(record.value), now)

    def arrived(self, alert: dict[str, Any], now: float) -> None:
        if alert["alert_id"] in self.received:
            return
        self.received[alert["alert_id"]] = now
        evidence = [self.sent_at.get((e["source"], e["event_id"])) for e in alert["evidence"]]
        known = [stamp for stamp in evidence if stamp is not None]
        if known:
            self.latencies.append((alert["rule_id"], now - max(known)))
            self.evidence_sent.append(max(known))


async def send_steadily(
    producer: AIOKafkaProducer,
    records: list[tuple[str, bytes, bytes]],
    rate: int,
    times: AlertTimes,
) -> float:
    """Send `records` at `rate` a second; the seconds it took."""
    started = time.monotonic()
    pending = []
    for index, (topic, key, value) in enumerate(records):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(max(delay, SLICE_S))
        times.sent(value)
        pending.append(await producer.send(topic, value, key=key))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return time.monotonic() - started


async def stream_and_listen(
    bootstrap: str,
    settings: Settings,
    events: Path,
    rate: int,
    expected: set[str],
    worker: Worker,
    settle_s: float,
) -> dict[str, Any]:
    """Send `events` at `rate` a second while reading alerts; the latencies and counts."""
    records = list(keyed_lines(events, settings))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    times = AlertTimes()
    try:
        alerts = settings.topics.alerts
        consumer.assign([AioTP(alerts, p) for p in range(settings.topics.partitions)])
        listener = asyncio.create_task(times.listen(consumer))
        assert worker.process is not None
        cpu_before = cpu_seconds(worker.process.pid)
        sending_s = await send_steadily(producer, records, rate, times)
        worker_cores = (cpu_seconds(worker.process.pid) - cpu_before) / sending_s
        read = await asyncio.to_thread(worker.metrics)
        behind_at_end = len(records) - int(read.get("duanka_events_total", 0))
        deadline = time.monotonic() + settle_s
        while not expected <= times.received.keys() and time.monotonic() < deadline:
            worker.check_alive()
            await asyncio.sleep(0.2)
        listener.cancel()
        inside = await asyncio.to_thread(worker_latency, worker)
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "worker_cores_while_sending": round(worker_cores, 2),
        **inside,
        "events_sent": len(records),
        "sending_seconds": round(sending_s, 1),
        "sent_per_second": round(len(records) / sending_s),
        "events_behind_when_sending_ended": behind_at_end,
        "alerts_expected": len(expected),
        "alerts_received": len(expected & times.received.keys()),
        "alerts_unexpected": len(times.received.keys() - expected),
        "latencies": times.latencies,
        "by_slice": by_slice(times, SLICE_REPORT_S),
    }


# the hops of duanka_stage_delay_seconds shown, in the order an event passes them
HOPS = (("reader", "sent"), ("identity", "received"), ("identity", "released"))


def worker_latency(worker: Worker) -> dict[str, Any]:
    """The worker's own share, from its histograms: alert latency, and the delay at each hop.

    A quantile of a histogram is known only to its bucket: this gives the
    bucket's upper bound, so "at most".
    """
    url = f"http://127.0.0.1:{worker.settings.worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    alert = at_most_ms(text, "duanka_alert_latency_seconds", {})
    hops = {
        f"{stage} {point}": at_most_ms(
            text, "duanka_stage_delay_seconds", {"stage": stage, "point": point}
        )
        for stage, point in HOPS
    }
    return {
        "worker_p50_ms_at_most": alert[0],
        "worker_p99_ms_at_most": alert[1],
        "worker_hops_p50_p99_ms_at_most": hops,
    }


def at_most_ms(text: str, family: str, labels: dict[str, str]) -> tuple[float | None, float | None]:
    """(p50, p99) of a histogram in Prometheus text, summed over the series with `labels`."""
    buckets: dict[float, float] = {}
    for match in re.finditer(rf"^{family}_bucket\{{([^}}]*)\}} ([0-9.e+]+)$", text, re.M):
        series = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(series.get(name) == value for name, value in labels.items()):
            bound = float(series["le"])
            buckets[bound] = buckets.get(bound, 0.0) + float(match.group(2))
    total = buckets.get(float("inf"), 0.0)

    def quantile(q: float) -> float | None:
        if not total:
            return None
        bound = next(b for b in sorted(buckets) if buckets[b] >= q * total)
        return None if bound == float("inf") else bound * 1000

    return quantile(0.5), quantile(0.99)


def percentiles_ms(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def by_slice(times: AlertTimes, slice_s: float) -> list[dict[str, Any]]:
    """p50/p99/max of the alerts whose evidence was sent in each `slice_s` of the run.

    Shows whether the slow alerts come at the start (a worker warming up),
    now and then (pauses) or throughout.
    """
    if not times.sent_at:
        return []
    start = min(times.sent_at.values())
    slices: dict[int, list[float]] = {}
    for (_, seconds), sent in zip(times.latencies, times.evidence_sent, strict=True):
        slices.setdefault(int((sent - start) // slice_s), []).append(seconds)
    return [
        {"from_s": index * slice_s, "alerts": len(values)} | percentiles_ms(values)
        for index, values in sorted(slices.items())
    ]


def by_rule(latencies: list[tuple[str, float]]) -> dict[str, dict[str, Any]]:
    rules = sorted({rule for rule, _ in latencies})
    return {
        rule: {"alerts": sum(1 for r, _ in latencies if r == rule)}
        | percentiles_ms([seconds for r, seconds in latencies if r == rule])
        for rule in rules
    }


def run_rate(
    root: Path, rate: int, seconds: int, partitions: int, seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    with own_broker(root) as kafka:
        config = write_config(root, kafka.bootstrap, partitions, options)
        settings = load_settings(config, environ={})
        ensure_topics(settings)
        files = write_events(root, rate * seconds, seed)
        events = root / "sent.jsonl"
        first_events(files.events, rate * seconds, events)
        expected = expected_alerts(settings, events, files)
        worker = Worker(config, settings)
        try:
            worker.start()
            wait_ready(worker)
            asyncio.run(produce(kafka.bootstrap, list_lines(files, settings)))
            settle = max(60.0, seconds)
            result = asyncio.run(
                stream_and_listen(kafka.bootstrap, settings, events, rate, expected, worker, settle)
            )
        finally:
            worker.stop()
    latencies = result.pop("latencies")
    overall = percentiles_ms([seconds for _, seconds in latencies])
    return {
        "rate": rate,
        **overall,
        "alerts_timed": len(latencies),
        **result,
        "by_rule": by_rule(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 2000])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--label", default="", help="a note stored with the figures")
    add_worker_option(parser, "order_idle_ms=50")
    args = parser.parse_args()
    options = worker_options(args.worker)

    runs = []
    for rate in args.rates:
        print(f"rate {rate}/s for {args.seconds} s ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="duanka-latency-") as tmp:
            root = Path(tmp)
            runs.append(run_rate(root, rate, args.seconds, args.partitions, args.seed, options))
        print(f"  {runs[-1]}", flush=True)
        for hop, (p50, p99) in runs[-1]["worker_hops_p50_p99_ms_at_most"].items():
            print(f"    read to {hop:<18}: p50 <= {p50} ms, p99 <= {p99} ms", flush=True)
        for part in runs[-1]["by_slice"]:
            print(f"    from {part['from_s']:>3} s: {part}", flush=True)

    columns = (
        ("rate", "events/s"),
        ("sent_per_second", "sent/s"),
        ("events_behind_when_sending_ended", "behind at end"),
        ("alerts_received", "alerts"),
        ("alerts_expected", "expected"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("worker_p50_ms_at_most", "worker p50 ≤"),
        ("worker_p99_ms_at_most", "worker p99 ≤"),
        ("worker_cores_while_sending", "worker cores"),
    )
    print()
    print("  ".join(f"{title:>13}" for _, title in columns))
    for run in runs:
        print("  ".join(f"{run[key]!s:>13}" for key, _ in columns))
    print(f"target: p99 under {TARGET_P99_MS:.0f} ms")
    figures = {
        "benchmark": "latency",
        "label": args.label,
        "seconds_per_rate": args.seconds,
        "partitions": args.partitions,
        "worker_options": options,
        "latency": "alert read from the alert topic minus its newest evidence event handed "
        "to the producer, same clock",
        "target_p99_ms": TARGET_P99_MS,
        "runs": runs,
        **machine(),
    }
    save_results("latency", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
