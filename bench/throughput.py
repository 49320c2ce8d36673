"""Throughput benchmark: the worker's screening rate next to a bare consumer's read rate.

    .venv/bin/python bench/throughput.py [--events 1000000] [--partitions 8] [--profile 60]

In one run, on the same pre-filled topics of a broker of its own (started
with `stream.broker.start` on a free port in a temporary directory):

1. simulates a province of about --events events over 30 days (every rule's
   cases among ordinary business) and writes them, after the watchlist and
   the holdings snapshots, to topics of --partitions partitions (the worker's internal topics and
   changelogs get as many), with an aiokafka producer (1 MiB batches, 50 ms
   linger);
2. reads the event topics from the beginning to their end offsets with a
   bare aiokafka consumer that only decodes each record's JSON (`getmany` of
   up to 20,000 records, all partitions);
3. works out the alerts `duanka replay` gives for the same events;
4. starts `duanka worker` with every rule on and waits until it has screened
   everything: the consumer group's committed offsets reach the end of the
   input topics, then of the internal topics as they were at that moment.
   The worker's time runs from the first event it passed on (the first
   record on the identity topic) to the last piece of work it wrote (the
   newest record on its changelogs, alert and dead-letter topics), both by
   the records' Kafka timestamps. With --profile S, py-spy samples the
   worker for S seconds once it is busy, and the top entries are printed.

With --workers N, N workers of one group share the partitions (their CPU
and metrics summed). Prints a table and writes bench/results/throughput.json
(throughput-N-workers.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from benchkit import add_worker_option, machine, save_results
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from producers.simulate import WorldFiles, write_world
from producers.simulator import simulate
from rules.config import Settings, load_settings
from rules.engine import Engine
from rules.holdings import parse_holding
from rules.pseudonym import Pseudonymizer
from rules.replay import replay
from stream import broker
from stream.topics import TABLES, changelog_topic, ensure_topics

KEY = "benchmark-pseudonym-key"


# ------------------------------------------------------------------ broker and config


@contextlib.contextmanager
def own_broker(root: Path) -> Iterator[broker.BrokerInfo]:
    """A broker of the benchmark's own on a free 127.0.0.1 port."""
    broker.ensure_jars()
    data_dir = root / "kafka"
    info = broker.start(
        port=broker.free_port(), data_dir=data_dir, timeout=120.0, die_with_parent=True
    )
    try:
        yield info
    finally:
        broker.stop(data_dir)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a (live) process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(
    root: Path, bootstrap: str, partitions: int, worker: dict[str, Any], run: str = ""
) -> Path:
    """A config with topics of this run's own, `partitions` each, every rule on (the defaults).

    Configs written under other roots with the same `run` are workers of one group.
    """
    run = run or uuid.uuid4().hex[:8]
    root.mkdir(parents=True, exist_ok=True)
    names = (
        "sim_events",
        "bank_events",
        "watchlist",
        "holdings",
        "alerts",
        "deadletter",
        "identity_events",
        "outlet_events",
        "agent_signals",
    )
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": bootstrap},
                "topics": {
                    **{name: f"bench.{name}-{run}" for name in names},
                    "partitions": partitions,
                },
                "pseudonym": {"key": KEY},
                "worker": {
                    "app_id": f"duanka-bench-{run}",
                    "web_port": broker.free_port(),
                    "data_dir": str(root / "worker"),
                    **worker,
                },
            }
        )
    )
    return config


# ------------------------------------------------------------------ events


def write_events(root: Path, events: int, seed: int) -> tuple[WorldFiles, int]:
    """Simulated events, watchlist and holdings as JSON lines; the number of events."""
    world = simulate(events, days=30, seed=seed)
    return write_world(world, root), len(world.events)


def keyed_lines(path: Path, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) for each event line, routed and keyed as `duanka produce` does."""
    topics = settings.topics
    with path.open("rb") as lines:
        for raw in lines:
            value = raw.rstrip(b"\n")
            event = orjson.loads(value)
            sim = event["event_type"].startswith("sim.")
            topic = topics.sim_events if sim else topics.bank_events
            yield topic, event["id_number"].encode(), value


def watch_lines(path: Path, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    with path.open("rb") as lines:
        for raw in lines:
            value = raw.rstrip(b"\n")
            yield settings.topics.watchlist, orjson.loads(value)["id_number"].encode(), value


def hold_lines(path: Path, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    """Holdings snapshots, keyed as `duanka holdings load` keys them (source and id number)."""
    with path.open("rb") as lines:
        for raw in lines:
            value = raw.rstrip(b"\n")
            yield settings.topics.holdings, parse_holding(value).key(), value


def list_lines(files: WorldFiles, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    """The watchlist, then the holdings snapshots: what the events are screened with."""
    yield from watch_lines(files.watchlist, settings)
    yield from hold_lines(files.holdings, settings)


async def produce(bootstrap: str, records: Iterator[tuple[str, bytes, bytes]]) -> int:
    """Send every record with an aiokafka producer in large batches; the number sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=50,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


# ------------------------------------------------------------------ the bare consumer


async def bare_consume(bootstrap: str, topics: list[str], partitions: int) -> tuple[int, float]:
    """Read `topics` from the start to their end offsets, decoding each value: (records, s)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    try:
        tps = [AioTP(topic, p) for topic in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        loads = orjson.loads
        count = 0
        started = time.perf_counter()
        while count < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                count += len(records)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ expected alerts


def expected_alerts(settings: Settings, events: Path, files: WorldFiles) -> set[str]:
    """The alert ids `duanka replay` gives for the events, with the world's lists and settings."""

    out = io.BytesIO()
    replay(
        events,
        Engine(settings.rules),
        Pseudonymizer(KEY.encode()),
        out,
        watchlist=files.watchlist,
        holdings=files.holdings,
    )
    return {orjson.loads(line)["alert_id"] for line in out.getvalue().splitlines()}


# ------------------------------------------------------------------ the worker


@dataclass
class Worker:
    """A `duanka worker` subprocess on a config, and what can be read from outside it."""

    config: Path
    settings: Settings
    process: subprocess.Popen[bytes] | None = None
    spawned: float = 0.0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.config.with_name("worker.log")

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
        env["DUANKA_CONFIG"] = str(self.config)
        self.spawned = time.time()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker exited:\n{tail}")

    def metrics(self) -> dict[str, float]:
        """Each metric family of /metrics summed over its labels ({} while not up)."""
        url = f"http://127.0.0.1:{self.settings.worker.web_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        sums: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^([a-z_]+)(?:\{[^}]*\})? ([-+0-9.e]+|NaN)$", line)
            if match and match.group(2) != "NaN":
                name = match.group(1)
                sums[name] = sums.get(name, 0.0) + float(match.group(2))
        return sums


class Offsets:
    """End offsets of topics and the worker's committed offsets, read with kafka-python."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="duanka-bench")

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]

    def ends(self, topics: list[str]) -> dict[TopicPartition, int]:
        tps = [tp for topic in topics for tp in self.partitions(topic)]
        return dict(self.consumer.end_offsets(tps))

    def behind(self, group: str, targets: dict[TopicPartition, int]) -> int:
        """How many records the group's committed offsets are short of `targets`.

        Before the group has a coordinator (the worker is starting) that is all of them.
        """
        try:
            committed = self.admin.list_group_offsets(group)[group]
        except KafkaError:
            return sum(targets.values())
        short = 0
        for tp, end in targets.items():
            done = committed.get(tp)
            short += max(0, end - (done.offset if done is not None and done.offset >= 0 else 0))
        return short

    def edge_timestamp(self, topic: str, last: bool) -> float | None:
        """The newest (or, not `last`, the oldest) record timestamp of `topic`, in seconds."""
        tps = self.partitions(topic)
        if not tps:
            return None
        ends = self.consumer.end_offsets(tps)
        starts = self.consumer.beginning_offsets(tps)
        wanted = [tp for tp in tps if ends[tp] > starts[tp]]
        if not wanted:
            return None
        self.consumer.assign(wanted)
        for tp in wanted:
            self.consumer.seek(tp, ends[tp] - 1 if last else starts[tp])
        stamps: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 30
        while len(stamps) < len(wanted) and time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=500).items():
                if records and tp not in stamps:
                    stamps[tp] = records[-1 if last else 0].timestamp
        self.consumer.assign([])
        if not stamps:
            return None
        return (max(stamps.values()) if last else min(stamps.values())) / 1000

    def alert_ids(self, topic: str) -> set[str]:
        tps = self.partitions(topic)
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        ends = self.consumer.end_offsets(tps)
        ids: set[str] = set()
        while any(self.consumer.position(tp) < end for tp, end in ends.items()):
            for records in self.consumer.poll(timeout_ms=500).values():
                ids.update(orjson.loads(r.value)["alert_id"] for r in records)
        self.consumer.assign([])
        return ids


def wait_screened(worker: Worker, offsets: Offsets, timeout: float) -> None:
    """Until the worker has committed all input, then all internal records written before it."""
    topics = worker.settings.topics
    app_id = worker.settings.worker.app_id
    deadline = time.monotonic() + timeout
    # marks keep coming while the worker idles: internal topics are waited for only up
    # to what they held when the stage before had finished
    stages = [
        (f"{app_id}-input", [*topics.inputs, topics.watchlist]),
        (app_id, [topics.identity_events, topics.outlet_events, topics.number_events]),
        (app_id, [topics.agent_signals, topics.place_events]),
    ]
    last_report = 0.0
    for group, stage in stages:
        targets = offsets.ends(stage)
        while (short := offsets.behind(group, targets)) > 0:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not finish {stage} in {timeout:.0f} s")
            if time.monotonic() - last_report > 15:
                read = worker.metrics().get("duanka_events_total", 0)
                print(f"  worker: {read:.0f} events read, {short} records behind on {stage[0]}")
                last_report = time.monotonic()
            time.sleep(1.0)


# ------------------------------------------------------------------ profile


def start_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for `seconds` into `out` (collapsed stacks, one per line)."""
    pyspy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "100",
            "--format",
            "raw",
            "--function",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarise_profile(path: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples: by part of the pipeline, by function (own time, and with callees)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        raw = stack.split(";")
        frames = [_frame_name(frame) for frame in raw]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        parts[_part(raw)] += count
    share = 100.0 / max(1, total)
    return {
        "samples": [("total", float(total))],
        "parts": [(name, round(n * share, 1)) for name, n in parts.most_common()],
        "own": [(name, round(n * share, 1)) for name, n in own.most_common(top)],
        "inclusive": [(name, round(n * share, 1)) for name, n in inclusive.most_common(top * 2)],
    }


STAGES = (
    ("InputReader.", "input reader"),
    ("IdentityStage.", "identity stage"),
    ("OutletStage.", "outlet stage"),
    ("AgentStage.", "agent stage"),
)
# what a stage's sample was doing, by the first of these found below the stage's frame
ACTIVITIES = (
    ("(rules/", "rules, parsing, codecs"),
    ("(stream/envelope.py", "rules, parsing, codecs"),
    ("flush.py", "flush (changelog, RocksDB)"),
    ("Sender.", "sends"),
    ("stores/", "table store (RocksDB)"),
    ("Collection.", "table changelog"),
    ("Topic.send", "sends"),
    ("Topic.publish_message", "sends"),
    ("metrics", "metrics"),
    ("prometheus_client", "metrics"),
)


def _part(frames: list[str]) -> str:
    """The part of the worker a stack belongs to: a stage and its activity, or faust's own."""
    for index, frame in enumerate(frames):
        for marker, stage in STAGES:
            if frame.startswith(marker):
                for below in frames[index + 1 :]:
                    for where, activity in ACTIVITIES:
                        if where in below:
                            return f"{stage}: {activity}"
                return f"{stage}: faust stream and own code"
    text = ";".join(frames)
    for marker, part in (
        ("_drain_messages", "consumer: fetch, decode, deliver to streams"),
        ("Fetcher", "consumer: fetch, decode, deliver to streams"),
        ("threads.py", "consumer thread"),
        ("sender.py", "producer: send requests, acks"),
        ("producer.py", "producer: send requests, acks"),
        ("ProducerBuffer", "table changelog sends"),
        ("Collection.", "table changelog acks"),
        ("WorkerProbe", "metrics probe"),
        ("monitor", "faust monitor"),
        ("commit", "offset commits"),
        ("select", "event loop: waiting"),
    ):
        if marker in text:
            return part
    return "event loop and other"


def _frame_name(frame: str) -> str:
    """`function (path/to/module.py:12)` as `function (module.py)`; a thread's name as it is."""
    match = re.match(r"^(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    parts = Path(path).parts
    package = next((p for p in ("faust", "aiokafka", "mode", "kafka") if p in parts), "")
    name = Path(path).name
    return f"{function} ({package + '/' if package else ''}{name})"


# ------------------------------------------------------------------ the run


def run_worker(
    settings: Settings,
    configs: list[Path],
    kafka: broker.BrokerInfo,
    events: int,
    profile_seconds: int,
    profile_out: Path | None,
) -> dict[str, Any]:
    """Run the workers of `configs` (one group) until they have screened everything."""
    workers = [Worker(config, settings) for config in configs]
    worker = workers[0]
    offsets = Offsets(kafka.bootstrap)
    profile: dict[str, Any] = {}
    try:
        broker_cpu = cpu_seconds(kafka.pid)
        for each in workers:
            each.start()
        assert worker.process is not None
        if profile_seconds:
            profile = profile_worker(worker, profile_seconds, profile_out, configs[0].parent)
        wait_screened(worker, offsets, timeout=600 + events / 200)
        finals = [each.metrics() for each in workers]
        final = {name: sum(f.get(name, 0.0) for f in finals) for name in finals[0]}
        worker_cpu = sum(cpu_seconds(each.process.pid) for each in workers if each.process)
        broker_cpu = cpu_seconds(kafka.pid) - broker_cpu
        topics = settings.topics
        changelogs = {f"{table}-changelog": changelog_topic(settings, table) for table in TABLES}
        internal = {
            "identity_events": topics.identity_events,
            "outlet_events": topics.outlet_events,
            "agent_signals": topics.agent_signals,
            "number_events": topics.number_events,
            "place_events": topics.place_events,
            **changelogs,
        }
        written_records = {name: sum(offsets.ends([t]).values()) for name, t in internal.items()}
        first = offsets.edge_timestamp(topics.identity_events, last=False)
        written = [*changelogs.values(), topics.alerts, topics.deadletter]
        lasts = [offsets.edge_timestamp(topic, last=True) for topic in written]
        last = max(stamp for stamp in lasts if stamp is not None)
        received = offsets.alert_ids(topics.alerts)
    finally:
        for each in workers:
            each.stop()
        offsets.close()
    assert first is not None
    return {
        "startup_seconds": round(first - worker.spawned, 2),
        "cpu_seconds": round(worker_cpu, 1),
        "broker_cpu_seconds": round(broker_cpu, 1),
        "records_written": written_records,
        "rebalances": sum(
            each.log.read_text(errors="replace").count("Executing _on_partitions_assigned")
            for each in workers
        ),
        "seconds": round(last - first, 2),
        "events_read": int(final.get("duanka_events_total", 0)),
        "late_events": int(final.get("duanka_late_events", 0)),
        "alerts": received,
        "profile": profile,
    }


def profile_worker(worker: Worker, seconds: int, keep: Path | None, root: Path) -> dict[str, Any]:
    """Wait until the worker is busy, then sample it with py-spy for `seconds`."""
    assert worker.process is not None
    while worker.metrics().get("duanka_events_total", 0) < 1000:
        worker.check_alive()
        time.sleep(0.5)
    time.sleep(5)  # past the first fetches and table opening
    out = keep or root / "profile.txt"
    spy = start_profile(worker.process.pid, seconds, out)
    _, errors = spy.communicate(timeout=seconds + 120)
    if spy.returncode != 0 or not out.exists():
        return {"error": errors.decode(errors="replace")[-2000:]}
    return summarise_profile(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="S", help="sample the worker for S seconds"
    )
    parser.add_argument(
        "--profile-out", type=Path, help="keep py-spy's collapsed stacks in this file"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip comparing the alerts with replay's"
    )
    parser.add_argument("--label", default="", help="a note stored with the figures")
    parser.add_argument(
        "--workers", type=int, default=1, help="workers in one group, each its own process"
    )
    add_worker_option(parser, "tick_ms=100")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="duanka-throughput-") as tmp:
        root = Path(tmp)
        with own_broker(root) as kafka:
            bootstrap = kafka.bootstrap
            options = worker_options(args.worker)
            config = write_config(root, bootstrap, args.partitions, options)
            run = load_settings(config, environ={}).worker.app_id.removeprefix("duanka-bench-")
            configs = [config] + [
                write_config(root / f"worker-{n}", bootstrap, args.partitions, options, run)
                for n in range(2, args.workers + 1)
            ]
            settings = load_settings(config, environ={})
            ensure_topics(settings)
            started = time.perf_counter()
            files, count = write_events(root, args.events, args.seed)
            simulated = time.perf_counter() - started
            print(f"simulated {count} events in {simulated:.1f} s")

            started = time.perf_counter()
            asyncio.run(produce(bootstrap, list_lines(files, settings)))
            sent = asyncio.run(produce(bootstrap, keyed_lines(files.events, settings)))
            fill_seconds = time.perf_counter() - started
            print(f"pre-filled {sent} events in {fill_seconds:.1f} s")

            bare_count, bare_seconds = asyncio.run(
                bare_consume(bootstrap, list(settings.topics.inputs), args.partitions)
            )
            print(f"bare consumer: {bare_count} records in {bare_seconds:.2f} s")

            expected: set[str] | None = None
            if not args.no_check:
                expected = expected_alerts(settings, files.events, files)
                print(f"replay predicts {len(expected)} alerts")

            print("worker: starting")
            result = run_worker(settings, configs, kafka, count, args.profile, args.profile_out)

    bare_rate = bare_count / bare_seconds
    worker_rate = count / result["seconds"]
    received: set[str] = result.pop("alerts")
    figures: dict[str, Any] = {
        "benchmark": "throughput",
        "label": args.label,
        "events": count,
        "partitions": args.partitions,
        "workers": args.workers,
        "worker_options": worker_options(args.worker),
        "prefill": "aiokafka producer, acks=all, 1 MiB batches, 50 ms linger",
        "prefill_events_per_second": round(sent / fill_seconds),
        "bare_consumer_seconds": round(bare_seconds, 2),
        "bare_consumer_events_per_second": round(bare_rate),
        "worker_startup_seconds": result["startup_seconds"],
        "worker_seconds": result["seconds"],
        "worker_events_per_second": round(worker_rate),
        "worker_to_bare_ratio": round(worker_rate / bare_rate, 4),
        "worker_events_read": result["events_read"],
        "worker_late_events": result["late_events"],
        "worker_cpu_seconds": result["cpu_seconds"],
        "worker_cpu_us_per_event": round(result["cpu_seconds"] / count * 1e6),
        "broker_cpu_seconds_during_worker": result["broker_cpu_seconds"],
        "worker_records_written": result["records_written"],
        "worker_rebalances": result["rebalances"],
        "alerts_received": len(received),
        "alerts_expected": None if expected is None else len(expected),
        "alerts_missing": None if expected is None else len(expected - received),
        "alerts_unexpected": None if expected is None else len(received - expected),
        **machine(),
    }
    print()
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    profile = result["profile"]
    if profile:
        figures["profile"] = profile
        print_profile(profile)
    save_results(
        "throughput" if args.workers == 1 else f"throughput-{args.workers}-workers", figures
    )
    return 0


def worker_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs as the config's worker section holds them (numbers as numbers)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)
    return options


def print_profile(profile: dict[str, Any]) -> None:
    if "error" in profile:
        print(f"\nprofile failed: {profile['error']}")
        return
    print(f"\nprofile: {profile['samples'][0][1]:.0f} samples")
    for part in ("parts", "own", "inclusive"):
        print(f"\n% of samples, {part}")
        for name, share in profile[part]:
            print(f"{share:6.1f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
