"""Prometheus metrics of the worker, and the timer that keeps the slow-moving ones current.

No label value ever carries an id number, a pseudonym or record content:
labels are topic names, event types the validator accepted, field names from
a fixed list, rule ids, severities, table names and partition numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rules.alert import Alert
from rules.figures import DAY_BUCKETS
from rules.implicated import Trace
from stream.internals import committed_offsets, open_databases

log = logging.getLogger("duanka.metrics")

# aiohttp refuses a charset inside content_type, so the exposition format's
# version goes alone; Prometheus reads it as text/plain 0.0.4 either way.
CONTENT_TYPE = "text/plain; version=0.0.4"

# How often consumer lag and state sizes are brought up to date.
PROBE_INTERVAL_S = 5.0
HIGHWATERS_TIMEOUT_S = 10.0

# The fields `InvalidRecord` names (rules/event.py, rules/watchlist.py, the
# stages): the contract's event and watchlist fields, plus "record" for a
# record wrong as a whole and "key" for a watchlist record's key. A label
# takes only these, so a future error that put content in `field` could not
# reach the metrics; anything else becomes "other".
REJECTED_FIELDS = frozenset(
    {
        "record",
        "key",
        "schema",
        "event_id",
        "event_type",
        "occurred_at",
        "source",
        "id_type",
        "id_number",
        "region_code",
        "outlet_id",
        "agent_id",
        "channel",
        "verification",
        "msisdn",
        "sim_kind",
        "delivery",
        "delivery.method",
        "delivery.region_code",
        "delivery.address_key",
        "account_id",
        "account_kind",
        "device_id",
        "contact_phone",
        "scope",
        "since",
        "until",
        "list",
        "reason",
        "basis",
        "account_class",
        "check_id",
        "as_of",
        "sims",
        "accounts",
    }
)
OTHER_FIELD = "other"

# From 1 ms to 30 s, finest around the ordering stage's usual wait (500 ms).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.6,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
    30.0,
)

# Keys of a state table that are not subjects: faust's record of the changelog
# offset it has stored, and the stages' own entries (which start with NUL).
FAUST_OFFSET_KEY = b"__faust\0offset__"
BOOKKEEPING_PREFIX = b"\x00"


def rejected_field(field: str) -> str:
    """The `field` label for a rejected record: a known field name, or "other"."""
    return field if field in REJECTED_FIELDS else OTHER_FIELD


def consumer_lag(highwater: int, committed: int | None) -> int:
    """Records in a partition after the committed offset (the next one to read).

    Faust keeps a committed offset of 0 as None, and a partition with nothing
    committed is read from its start, so None counts from offset 0.
    """
    return max(0, highwater - (committed or 0))


class WorkerMetrics:
    """The worker's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter(
            "duanka_events",
            "Valid events read from the input topics.",
            ["topic", "event_type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "duanka_rejected",
            "Records rejected to the dead-letter topic, by the field at fault "
            "(a contract field name, record, key, or other).",
            ["topic", "field"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "duanka_alerts",
            "Alerts sent to the police topic.",
            ["rule_id", "severity"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "duanka_alert_latency_seconds",
            "Seconds from the worker reading an input event off its topic (the "
            "worker's wall clock, not the Kafka timestamp) to Kafka acknowledging "
            "an alert the event caused. Includes the ordering stage's wait.",
            ["rule_id"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.delay = Histogram(
            "duanka_stage_delay_seconds",
            "Seconds from the worker reading an input event to each point on its "
            "way: the reader's envelopes acknowledged by Kafka (stage=reader, "
            "point=sent), a stage receiving the envelope (point=received) and the "
            "ordering letting it go to be screened (point=released). One "
            "observation per envelope or release, for its oldest event.",
            ["stage", "point"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._delays: dict[tuple[str, str], Any] = {}
        self.watch_updates = Counter(
            "duanka_watchlist_updates",
            "Valid watchlist records read, by change (set or removed).",
            ["change"],
            registry=self.registry,
        )
        self.watch_long = Counter(
            "duanka_watchlist_long_periods",
            "Watchlist entries read whose period is longer than 5 years (accepted, unusual).",
            registry=self.registry,
        )
        self.checks = Counter(
            "duanka_checks",
            "Pre-opening checks answered, by outcome: allow, review, refuse; invalid (400), "
            "unavailable (503); stale counts those answered past check.max_wait_ms too.",
            ["outcome"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "duanka_check_refusals",
            "Refused checks, by each rule that blocked them.",
            ["rule_id"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "duanka_check_seconds",
            "Time to answer a pre-opening check on the worker the caller reached.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.check_wait = Histogram(
            "duanka_check_wait_seconds",
            "How long checks that had to wait waited for their identity stage to read the "
            "envelopes on their way when they came (at most check.max_wait_ms).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.holdings_updates = Counter(
            "duanka_holdings_snapshots",
            "Valid holdings snapshots read, by change (set or removed).",
            ["change"],
            registry=self.registry,
        )
        self.implicated_in = Counter(
            "duanka_implicated_read",
            "Numbers the police found in fraud cases, read from their topic (valid ones), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.implicated_cards = Counter(
            "duanka_implicated_cards",
            "Implicated cards (涉案卡) traced to their openings, each once, by carrier or bank, "
            "province of the outlet and channel of the opening.",
            ["kind", "source", "province", "channel"],
            registry=self.registry,
        )
        self.implicated_outlet_cards = Counter(
            "duanka_implicated_outlet_cards",
            "Implicated cards by the outlet that opened them (谁开卡谁负责).",
            ["outlet"],
            registry=self.registry,
        )
        self.implicated_agent_cards = Counter(
            "duanka_implicated_agent_cards",
            "Implicated cards by the staff member (agent_id) who opened them (一案双查).",
            ["agent"],
            registry=self.registry,
        )
        self.implicated_days = Histogram(
            "duanka_implicated_days_to_report",
            "Days from a card's opening to the police's report of it in a fraud case.",
            ["kind"],
            buckets=DAY_BUCKETS,
            registry=self.registry,
        )
        self.implicated_unknown = Counter(
            "duanka_implicated_unknown",
            "Implicated numbers that matched no opening (dead-lettered: no opening known).",
            ["kind"],
            registry=self.registry,
        )
        self.dispositions = Counter(
            "duanka_dispositions",
            "Police dispositions taken, by outcome: applied, invalid, pending (its alert not "
            "known yet; counted again when applied or dead-lettered as unknown_alert).",
            ["outcome"],
            registry=self.registry,
        )
        self.verdicts = Gauge(
            "duanka_verdicts",
            "Alerts whose standing police verdict is `status`, by rule (the worker that "
            "keeps the cases sets it).",
            ["rule_id", "status"],
            registry=self.registry,
        )
        self.held = Gauge(
            "duanka_events_held",
            "Items a stage holds until every origin has passed them (event-time order).",
            ["stage"],
            registry=self.registry,
        )
        self.late = Gauge(
            "duanka_late_events",
            "Items a stage released after a later one: they came later than the ordering wait.",
            ["stage"],
            registry=self.registry,
        )
        self.rereads = Counter(
            "duanka_rereads",
            "Times a stage found that faust's stream had left envelopes out (around a start "
            "or a rebalance) and sent faust's consumer back to read them.",
            ["stage"],
            registry=self.registry,
        )
        self.flushes = Counter(
            "duanka_flushes",
            "Times a stage made its state durable and acknowledged what it had read.",
            ["stage"],
            registry=self.registry,
        )
        self.state_rows = Counter(
            "duanka_state_rows_written",
            "Changed subjects a stage wrote to its changelog and RocksDB (one row each per flush).",
            ["stage"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "duanka_consumer_lag",
            "Records in a partition the worker consumes beyond its committed offset "
            "(Kafka's end offset minus the committed offset), updated every "
            f"{PROBE_INTERVAL_S:g} s.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.state_keys = Gauge(
            "duanka_state_keys",
            "Subjects (keys) in a state table, on the partitions this worker "
            "processes: counted once after each rebalance, then kept up to date "
            f"by the stages; published every {PROBE_INTERVAL_S:g} s.",
            ["table"],
            registry=self.registry,
        )
        self.state_bytes = Gauge(
            "duanka_state_sst_bytes",
            "Bytes of a state table's RocksDB SST files on this worker's disk "
            "(RocksDB's total-sst-files-size; data still in memory is not included).",
            ["table"],
            registry=self.registry,
        )
        self.probe_failures = Counter(
            "duanka_probe_failures",
            "Times the lag and state-size update failed; the worker carries on.",
            registry=self.registry,
        )
        self.state = StateSizes(self.state_keys)
        self._events_in: dict[tuple[str, str], Any] = {}

    def event_in(self, topic: str, event_type: str) -> None:
        """A valid event read (prometheus-client's labels() costs microseconds: kept per pair)."""
        child = self._events_in.get((topic, event_type))
        if child is None:
            child = self._events_in[(topic, event_type)] = self.events_in.labels(topic, event_type)
        child.inc()

    def traced(self, trace: Trace) -> None:
        """Count a traced implicated card in the campaign's figures (its first report only)."""
        if not trace.first:
            return
        o, kind = trace.opening, trace.report.kind
        self.implicated_cards.labels(kind, o.source, o.region_code[:2], o.channel).inc()
        if o.outlet_id:
            self.implicated_outlet_cards.labels(o.outlet_id).inc()
        if o.agent_id:
            self.implicated_agent_cards.labels(o.agent_id).inc()
        self.implicated_days.labels(kind).observe(trace.days)

    def stage_delay(self, stage: str, point: str, seconds: float) -> None:
        """How long after it was read the oldest event of an envelope or release got to `point`."""
        child = self._delays.get((stage, point))
        if child is None:
            child = self._delays[(stage, point)] = self.delay.labels(stage, point)
        child.observe(max(0.0, seconds))  # the clocks of two workers may disagree a little

    def reject(self, topic: str, field: str) -> None:
        self.rejected.labels(topic, rejected_field(field)).inc()

    def delivered(self, alerts: Iterable[Alert], seconds: float) -> None:
        """Alerts Kafka has acknowledged, `seconds` after their event was read."""
        seconds = max(0.0, seconds)  # the clocks of two workers may disagree a little
        for alert in alerts:
            self.latency.labels(alert.rule_id).observe(seconds)

    def on_delivered(self, rule_id: str, arrived: float) -> Callable[[asyncio.Future[Any]], None]:
        """A done-callback for an alert's send: its latency, once Kafka has acknowledged it."""

        def observe(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.latency.labels(rule_id).observe(max(0.0, time.time() - arrived))

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StateSizes:
    """Keys per table and partition, without reading RocksDB on every scrape.

    A partition is counted once, after a rebalance has given it to this worker
    and its state is recovered; from then on the stages report each key they
    add (they never remove one). The count and the stage's reports cannot
    overlap or miss a key: counting runs without yielding to the event loop.
    """

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.counts: dict[str, dict[int, int]] = {}

    def added(self, table: str, partition: int, count: int = 1) -> None:
        """A stage wrote `count` keys that were not in `table` yet."""
        partitions = self.counts.get(table)
        if partitions is not None and partition in partitions:
            partitions[partition] += count

    def forget(self) -> None:
        """Partitions are moving: every count is stale until taken again."""
        self.counts.clear()

    def track(self, table: str, partitions: set[int], dbs: Mapping[int, Any]) -> None:
        """Keep counts for exactly `partitions`, counting any not counted yet."""
        counts = self.counts.setdefault(table, {})
        for partition in set(counts) - partitions:
            del counts[partition]
        for partition in partitions - set(counts):
            db = dbs.get(partition)
            counts[partition] = 0 if db is None else count_subjects(db.keys())
        self.gauge.labels(table).set(sum(counts.values()))


def count_subjects(keys: Iterable[bytes]) -> int:
    """How many of a store's keys are subjects (not bookkeeping)."""
    return sum(
        1 for key in keys if key != FAUST_OFFSET_KEY and not key.startswith(BOOKKEEPING_PREFIX)
    )


class WorkerProbe:
    """Every few seconds: consumer lag, and the size of each state table.

    Both read faust internals that are not a stable API, so any failure is
    logged (once per distinct error) and counted, and never stops the worker.
    """

    def __init__(
        self,
        app: Any,
        metrics: WorkerMetrics,
        topics: Iterable[str],
        tables: Iterable[Any],
        input_lag: Callable[[], Awaitable[Mapping[tuple[str, int], int]]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.topics = frozenset(topics)
        self.tables = list(tables)
        self.input_lag = input_lag
        self.lag_labels: set[tuple[str, str]] = set()
        self.last_errors: dict[str, str] = {}
        app.on_partitions_revoked.connect(self.on_revoked)

    def on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.metrics.state.forget()

    async def update(self) -> None:
        """The app timer's task: each part on its own, so one failing leaves the other."""
        for name, part in (("lag", self.update_lag), ("state size", self.update_state)):
            try:
                await part()
            except Exception as error:  # metrics must never stop the worker
                self.metrics.probe_failures.inc()
                text = f"{type(error).__name__}: {error}"
                if self.last_errors.get(name) != text:
                    log.warning("could not update the %s metrics: %s", name, text)
                self.last_errors[name] = text
            else:
                self.last_errors.pop(name, None)

    async def update_lag(self) -> None:
        """End offset minus committed offset for each assigned partition of our topics.

        End offsets come from `Consumer.highwaters()`, faust's public call
        (a ListOffsets request), because the highwater cached from fetches goes
        stale while faust pauses a partition. The committed offset is faust's
        own `_committed_offset`: read from Kafka when partitions are assigned
        and updated on every commit, it is what faust resumes from, so this is
        the lag Kafka's consumer-group tool shows, including events read but
        not yet acknowledged (such as those the ordering stage still holds).
        The consumer's fetch position would hide those.
        """
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in self.topics]
        highwaters: Mapping[Any, int] = {}
        if tps:
            highwaters = await asyncio.wait_for(consumer.highwaters(*tps), HIGHWATERS_TIMEOUT_S)
        committed = committed_offsets(consumer)
        lags = {}
        for tp in tps:
            highwater = highwaters.get(tp)
            if highwater is not None:
                lags[(tp.topic, tp.partition)] = consumer_lag(highwater, committed.get(tp))
        if self.input_lag is not None:
            lags.update(await self.input_lag())
        labels = set()
        for (topic, partition), lag in lags.items():
            label = (topic, str(partition))
            self.metrics.lag.labels(*label).set(lag)
            labels.add(label)
        for gone in self.lag_labels - labels:
            self.metrics.lag.remove(*gone)
        self.lag_labels = labels

    async def update_state(self) -> None:
        """Keys and SST bytes per table, once faust has finished any rebalance."""
        if self.app.rebalancing:
            return
        actives = self.app.assignor.assigned_actives()
        for table in self.tables:
            dbs = open_databases(table)
            changelog = table.changelog_topic.get_topic_name()
            partitions = {tp.partition for tp in actives if tp.topic == changelog}
            self.metrics.state.track(table.name, partitions, dbs)
            sst = (db.property_int_value("rocksdb.total-sst-files-size") for db in dbs.values())
            self.metrics.state_bytes.labels(table.name).set(sum(size or 0 for size in sst))
