"""The Faust app: wires the rule engine to Kafka and adds no rule logic.

    carrier.sim-events  ┐ input reader:          ┌► duanka.identity-events ► identity stage ┐
    bank.account-events ┤ validate, pseudonymise │  (partition by pseudonym)                │
    screening.watchlist ┘ (bad → deadletter)     └► duanka.outlet-events ► outlet stage    │
                                                    (partition by outlet_id)     │          │
                                                                police.alerts ◄──┴──────────┤
                                   duanka.agent-signals (partition by agent_id) ◄───────────┘
                                     └► agent stage ► police.alerts
    every stage's alerts, with what they link by ┐
    police.dispositions (via the input reader)   ┴► duanka.case-links (1 partition) ► case stage
                                      ► police.cases; punishments ► duanka.identity-events

Internal topics carry envelopes (stream/envelope.py): many items for one
partition and the sender's marks, by which each stage merges what it
receives from every origin back into event-time order, on any number of
workers. The input reader (stream/reader.py) reads in batches with a
consumer of its own; the stages (stream/stages.py) are faust agents over the
envelopes and keep their subjects' state in RocksDB-backed faust tables with
changelog topics, so faust's recovery, standbys and partition assignment
still apply. Alerts reach Kafka before the state that records their event is
written, and state ignores an event it has already applied, so what
at-least-once delivery repeats after a crash neither loses nor doubles an alert.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka.errors import KafkaError
from faust.types import TP

from rules.config import Settings
from rules.deadletter import encode_dead_letter
from rules.engine import Engine
from rules.errors import InvalidRecord
from rules.pseudonym import Pseudonymizer, pseudonym_key
from stream.auth import install_auth
from stream.casepages import install_case_pages
from stream.check import Checker, install_check
from stream.cluster import bind_state, identify
from stream.console import install_console
from stream.ends import EndWatch
from stream.internals import (
    TablePartition,
    batch_fetches,
    commit_offsets,
    drop_faust_pages,
    recovering,
    stop_within,
)
from stream.metrics import CONTENT_TYPE, PROBE_INTERVAL_S, WorkerMetrics, WorkerProbe
from stream.outage import OutageLog
from stream.outbox import Timing
from stream.positions import Positions
from stream.reader import InputReader
from stream.sender import Sender
from stream.stages import (
    AgentStage,
    CaseStage,
    IdentityStage,
    NumberStage,
    OutletStage,
    PlaceStage,
    Stage,
)
from stream.topics import CASE_PARTITIONS, CASE_TABLE, TABLES
from stream.tracepages import install_trace_pages

log = logging.getLogger("duanka.worker")

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}

# Loggers whose debug messages print whole Kafka records (keys and values) or
# the raw requests and responses that carry them: input records hold id
# numbers, so these stay at info even when the worker runs at debug.
RECORD_LOGGERS = (
    "aiokafka.conn",
    "aiokafka.producer.producer",
    "faust.topics",
    "faust.transport.drivers.aiokafka",
)

# faust's consumer fetches envelopes once this much has come, or this long has passed
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 20

# SIGTERM or SIGINT ends the worker within this many seconds, whatever Kafka does
STOP_DEADLINE_S = 13.0

DEV_KEY_WARNING = (
    "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY "
    "(or pseudonym.key in config.yaml) to a secret before screening real data"
)


def make_pseudonymizer(settings: Settings, environ: dict[str, str]) -> Pseudonymizer:
    return Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))


class Wiring:
    """The app, its tables and producer, and what every stage shares."""

    def __init__(
        self,
        settings: Settings,
        pseudonymizer: Pseudonymizer,
        engine: Engine,
        metrics: WorkerMetrics,
        origins: frozenset[str],
    ) -> None:
        self.settings = settings
        self.pseudonymizer = pseudonymizer
        self.engine = engine
        self.metrics = metrics
        self.origins = origins  # the input partitions: every stage fed by the reader merges them
        worker = settings.worker
        self.timing = Timing(worker.tick_ms / 1000, worker.heartbeat_ms / 1000)
        self.app = self._make_app()
        self.sender = Sender(settings, client_id=f"{worker.app_id}-sender")
        self.positions = Positions(settings)
        topics = settings.topics
        # the stages commit these themselves (stream/flush.py), so faust acknowledges none
        self.identity_topic = self.app.topic(topics.identity_events, acks=False, **RAW)
        self.outlet_topic = self.app.topic(topics.outlet_events, acks=False, **RAW)
        self.agent_topic = self.app.topic(topics.agent_signals, acks=False, **RAW)
        self.case_topic = self.app.topic(topics.case_links, acks=False, **RAW)
        self.number_topic = self.app.topic(topics.number_events, acks=False, **RAW)
        self.place_topic = self.app.topic(topics.place_events, acks=False, **RAW)
        # bytes keys and values: faust then stores them as they are (raw)
        tables: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "default": None,
            "partitions": topics.partitions,
        }
        self.identities, self.outlets, self.agents, self.numbers, self.places = (
            self.app.Table(name, **tables) for name in TABLES if name != CASE_TABLE
        )
        self.cases = self.app.Table(CASE_TABLE, **(tables | {"partitions": CASE_PARTITIONS}))

    def _make_app(self) -> faust.App:
        from stream.security import faust_credentials

        settings = self.settings
        return faust.App(
            settings.worker.app_id,
            broker=[f"kafka://{server}" for server in settings.bootstrap.split(",")],
            broker_credentials=faust_credentials(settings.security),
            store="rocksdb://",
            datadir=str(Path(settings.worker.data_dir)),
            topic_partitions=settings.topics.partitions,
            web_enabled=True,
            web_bind=settings.worker.web_host,
            web_host=settings.worker.web_host,
            web_port=settings.worker.web_port,
            # faust's own pages: off (docs/security.md); drop_faust_pages takes the rest
            web_router_enabled=False,
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
            web_metrics_enabled=False,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # Faust's defaults make every start and rebalance take 30-120 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=10.0,
            # The stages hold envelopes, unacknowledged, until their items are
            # released and flushed; a rebalance that waited for every message
            # to be acknowledged would wait for ever. What revoked partitions
            # held is dropped instead and read again by their new owner.
            stream_wait_empty=False,
        )

    @property
    def partitions(self) -> int:
        return self.settings.topics.partitions

    def open_partition(self, table: Any, partition: int) -> TablePartition:
        """One partition of a table's store, which faust opened when it assigned it."""
        return TablePartition(table, partition)

    async def commit(self, topic: str, offsets: dict[int, int]) -> None:
        """Commit a stage's offsets (partition -> next offset to read) in faust's group."""
        await commit_offsets(self.app.consumer, {TP(topic, p): o for p, o in offsets.items()})

    async def start_offset(self, topic: str, partition: int) -> int:
        """Where the group reads a stage's partition from (stream/positions.py)."""
        return await self.positions.start_offset(topic, partition)

    async def log_start(self, topic: str, partition: int) -> int:
        return await self.positions.log_start(topic, partition)

    async def reread(self, topic: str, partition: int, offset: int) -> None:
        """Send faust's consumer back to `offset` of a partition it left envelopes out of."""
        await self.app.consumer.seek_wait({TP(topic, partition): offset})

    def changelog(self, table: Any) -> str:
        name: str = table.changelog_topic.get_topic_name()
        return name

    async def reject(self, message: Any, error: InvalidRecord) -> None:
        """Send a record the worker cannot use to the dead-letter topic, with the reason."""
        self.metrics.reject(message.topic, error.field)
        log.warning(
            "rejected record topic=%s partition=%d offset=%d field=%s",
            message.topic,
            message.partition,
            message.offset,
            error.field,
        )
        value = encode_dead_letter(
            message.topic, message.partition, message.offset, error, message.value
        )
        await (await self.sender.send(self.settings.topics.deadletter, value, key=message.key))

    async def fail(self, what: str, error: BaseException) -> None:
        """Stop the worker: what was not committed is read again by the next start."""
        log.error("%s (%s: %s); stopping the worker", what, type(error).__name__, error)
        await self.app.crash(error)

    def probe(self, reader: InputReader) -> WorkerProbe:
        """The timer task behind the lag and state-size metrics."""
        topics = self.settings.topics
        consumed = [
            topics.identity_events,
            topics.outlet_events,
            topics.agent_signals,
            topics.case_links,
            topics.number_events,
            topics.place_events,
        ]
        tables = [self.identities, self.outlets, self.agents, self.cases, self.numbers, self.places]
        return WorkerProbe(self.app, self.metrics, consumed, tables, reader.lag)


class Pipeline(mode.Service):
    """The worker's producer, input reader and end watch: started before faust's agents."""

    def __init__(
        self,
        wiring: Wiring,
        reader: InputReader,
        stages: list[Stage[Any]],
        watch: EndWatch,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wiring = wiring
        self.reader = reader
        self.stages = stages
        self.watch = watch

    async def on_start(self) -> None:
        await self.wiring.sender.start()
        await self.wiring.positions.start()
        await self.watch.start()

    @mode.Service.task
    async def _read(self) -> None:
        await self.reader.run()

    @mode.Service.task
    async def _watch_ends(self) -> None:
        """Tell the stages fed by the reader where the inputs end, every `tick_ms`."""
        merging = [s for s in self.stages if s.kind in ("identity", "outlet", "number")]
        interval = self.wiring.settings.worker.tick_ms / 1000
        while not self.should_stop:
            counts = [stage.counts() for stage in merging]
            try:
                ends = await self.watch.poll()
            except KafkaError as error:
                log.debug("could not read the input partitions' ends: %s", error)
            else:
                for stage, before in zip(merging, counts, strict=True):
                    await stage.on_ends(ends, before)
            await asyncio.sleep(interval)

    def pending(self) -> str:
        """What a stop now would leave undone, for the stop deadline's last words."""
        return "; ".join([self.reader.pending(), *(stage.pending() for stage in self.stages)])

    async def flush_all(self) -> None:
        """Make what every stage screened durable before the worker goes (on a clean stop)."""
        for stage in self.stages:
            await stage.flush()

    async def on_stop(self) -> None:
        await self.watch.stop()
        await self.wiring.positions.stop()
        await self.wiring.sender.stop()


def make_stages(wiring: Wiring, origins: frozenset[str]) -> list[Stage[Any]]:
    """The stages, each a faust agent over its topic, with the timers they need."""
    app, settings = wiring.app, wiring.settings
    topics = settings.topics
    lists = (f"{topics.watchlist}/", f"{topics.holdings}/")
    reports = f"{topics.implicated}/"
    events = frozenset(o for o in origins if not o.startswith((*lists, reports)))
    identities = IdentityStage(wiring, frozenset(o for o in origins if not o.startswith(reports)))
    outlets = OutletStage(wiring, events)
    agents = AgentStage(wiring)
    cases = CaseStage(wiring)
    numbers = NumberStage(wiring, frozenset(o for o in origins if not o.startswith(lists)))
    places = PlaceStage(wiring)
    app.agent(wiring.identity_topic, name="screen-identity")(identities.run)
    app.agent(wiring.outlet_topic, name="screen-outlet")(outlets.run)
    app.agent(wiring.agent_topic, name="screen-agent")(agents.run)
    app.agent(wiring.case_topic, name="keep-cases")(cases.run)
    app.agent(wiring.number_topic, name="trace-numbers")(numbers.run)
    app.agent(wiring.place_topic, name="screen-places")(places.run)
    app.timer(settings.worker.tick_ms / 1000)(identities.tick)
    app.timer(settings.worker.tick_ms / 1000)(numbers.tick)
    app.timer(1.0)(cases.tick)
    stages: list[Stage[Any]] = [identities, outlets, agents, cases, numbers, places]
    for stage in stages:
        app.timer(settings.worker.commit_ms / 4000)(stage.flush_if_due)
    return stages


def create_app(
    settings: Settings,
    pseudonymizer: Pseudonymizer,
    origins: frozenset[str],
    engine: Engine | None = None,
    metrics: WorkerMetrics | None = None,
) -> tuple[faust.App, Pipeline]:
    """A Faust app that screens the input topics of `settings`, and its pipeline service.

    `origins` names every input partition ("topic/partition"): what the
    stages wait for before they release an event.
    """

    wiring = Wiring(
        settings,
        pseudonymizer,
        engine or Engine(settings.rules, implicated=settings.implicated),
        metrics or WorkerMetrics(),
        origins,
    )
    app = wiring.app
    stages = make_stages(wiring, origins)
    reader = InputReader(wiring)
    watch = EndWatch(settings, origins)
    pipeline = Pipeline(wiring, reader, stages, watch, loop=app.loop, beacon=app.beacon)
    app.add_dependency(pipeline)

    @app.on_partitions_revoked.connect
    async def drop_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = set(args[0])  # the signal is sent with the revoked partitions
        for stage in stages:
            await stage.on_revoked(revoked)

    @app.on_partitions_assigned.connect
    async def note_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        batch_fetches(app, FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)  # its consumer exists by now
        assigned = set(args[0])  # the signal is sent with the whole assignment
        for stage in stages:
            stage.on_assigned(assigned)

    @app.on_before_shutdown.connect
    async def flush_before_stop(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await pipeline.flush_all()

    app.timer(PROBE_INTERVAL_S)(wiring.probe(reader).update)

    outage = OutageLog(log)

    @app.task
    async def quiet_outages() -> None:
        outage.install()  # after the worker has set up logging

    @app.timer(1.0)
    async def sum_up_outages() -> None:
        outage.tick()

    drop_faust_pages(app)  # the port serves only the pages below

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        if app.rebalancing or recovering(app):
            return web.json({"status": "recovering"}, status=503)
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(wiring.metrics.exposition(), content_type=CONTENT_TYPE)

    auth = install_auth(app, settings)
    console = install_console(app, settings, auth)

    async def send(topic: str, value: bytes, key: bytes) -> Any:
        return await (await wiring.sender.send(topic, value, key=key))

    console.cases = install_case_pages(app, settings, auth, send)
    install_trace_pages(app, settings, auth)
    identities = next(stage for stage in stages if isinstance(stage, IdentityStage))
    install_check(app, Checker(wiring, identities))

    if pseudonymizer.is_development_key:

        @app.task
        async def warn_development_key() -> None:
            log.warning(DEV_KEY_WARNING)

    return app, pipeline


def run_worker(settings: Settings, environ: dict[str, str], loglevel: str = "info") -> int:
    """Make the topics, then run the worker until it is stopped."""
    from stream.topics import ensure_topics, input_origins

    pseudonymizer = make_pseudonymizer(settings, environ)
    if pseudonymizer.is_development_key:
        print(f"warning: {DEV_KEY_WARNING}", file=sys.stderr)
    ensure_topics(settings)
    origins = input_origins(settings)
    Path(settings.worker.data_dir).mkdir(parents=True, exist_ok=True)
    for name in RECORD_LOGGERS:  # faust's logging setup leaves these levels alone
        logging.getLogger(name).setLevel(logging.INFO)
    app, pipeline = create_app(settings, pseudonymizer, origins)
    discarded = bind_state(
        Path(settings.worker.data_dir), Path(app.conf.tabledir), identify(settings)
    )
    if discarded is not None:  # faust's logging is not set up yet: say it on stderr too
        print(f"warning: discarded the local state: {discarded}", file=sys.stderr)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    stop_within(worker, STOP_DEADLINE_S, pipeline.pending)
    worker.execute_from_commandline()
    return 0
