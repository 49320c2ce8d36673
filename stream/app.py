"""The Faust app: wires the rule engine to Kafka and adds no rule logic.

    carrier.sim-events  ┐ validate, pseudonymise,   ┌► duanka.identity-events ► screen-identity ┐
    bank.account-events ┤ event-time order          │  (key: pseudonym)                        │
    screening.watchlist ┘ (bad → deadletter)        └► duanka.outlet-events ► screen-outlet    │
                                                       (key: outlet_id)           │             │
                                                                   police.alerts ◄┴─────────────┤
                                 duanka.agent-signals (key: agent_id) ◄─────────────────────────┘
                                   └► screen-agent ► police.alerts

Each screening stage keeps its subjects' state in a RocksDB-backed table
with a changelog topic, partitioned like the topic that updates it. An alert
is delivered to Kafka before the state that records its event is written, and
state ignores an event it has already applied, so the events at-least-once
delivery repeats after a crash neither lose nor double an alert.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import faust

from rules.alert import Alert, encode_alert
from rules.config import Settings
from rules.deadletter import encode_dead_letter
from rules.engine import Engine
from rules.errors import InvalidRecord
from rules.pseudonym import Pseudonymizer, pseudonym_key
from stream.console import install_console
from stream.metrics import CONTENT_TYPE, PROBE_INTERVAL_S, WorkerMetrics, WorkerProbe
from stream.topics import TABLES

log = logging.getLogger("duanka.worker")
T = TypeVar("T")

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

DEV_KEY_WARNING = (
    "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY "
    "(or pseudonym.key in config.yaml) to a secret before screening real data"
)


def make_pseudonymizer(settings: Settings, environ: dict[str, str]) -> Pseudonymizer:
    return Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))


class Wiring:
    """The app, its topics and tables, and what every stage shares."""

    def __init__(
        self,
        settings: Settings,
        pseudonymizer: Pseudonymizer,
        engine: Engine,
        metrics: WorkerMetrics,
    ) -> None:
        self.settings = settings
        self.pseudonymizer = pseudonymizer
        self.engine = engine
        self.metrics = metrics
        self.app = self._make_app()
        topics = settings.topics
        self.inputs = self.app.topic(*topics.inputs, topics.watchlist, **RAW)
        self.identity_topic = self.app.topic(topics.identity_events, **RAW)
        self.outlet_topic = self.app.topic(topics.outlet_events, **RAW)
        self.agent_topic = self.app.topic(topics.agent_signals, **RAW)
        self.alerts_topic = self.app.topic(topics.alerts, **RAW)
        self.dead_letters = self.app.topic(topics.deadletter, **RAW)
        # bytes keys and values: faust then stores them as they are (raw)
        tables: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "default": None,
            "partitions": topics.partitions,
        }
        self.identities, self.outlets, self.agents = (
            self.app.Table(name, **tables) for name in TABLES
        )
        # `ensure_topics` has checked that these topics have `topics.partitions`.
        # Faust checks it again on a table's first write, from its consumer's
        # metadata, which can lack a topic for a while after a start or a
        # rebalance; it then reads 0 partitions and crashes the stage.
        written_from: list[tuple[Any, str]] = [
            (self.identities, topics.identity_events),
            (self.outlets, topics.outlet_events),
            (self.agents, topics.agent_signals),
        ]
        for table, source in written_from:
            table._verified_source_topics_for_partitions.add(source)

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
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # Faust's defaults make every start and rebalance take 30-120 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=10.0,
            # The ordering and agent stages hold events, unacknowledged, until
            # later ones arrive; a rebalance that waited for every event to be
            # acknowledged would wait for ever. Held events of revoked
            # partitions are dropped instead (drop_held) and read again by
            # their new owner from the committed offset.
            stream_wait_empty=False,
        )

    @property
    def partitions(self) -> int:
        return self.settings.topics.partitions

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
        await self.dead_letters.send(
            key=message.key,
            value=encode_dead_letter(
                message.topic, message.partition, message.offset, error, message.value
            ),
        )

    async def decode(self, message: Any, decode: Callable[[bytes], T]) -> T | None:
        """An internal record, or None after dead-lettering one that cannot be read."""
        try:
            return decode(message.value or b"")
        except (ValueError, InvalidRecord) as error:
            await self.reject(message, InvalidRecord("record", str(error)))
            return None

    async def deliver(self, alerts: list[Alert], arrived: float | None = None) -> None:
        """Send alerts and wait until Kafka has them: only then may state record their event.

        `arrived` is when the worker read the event behind them (`time.time()`).
        """
        pending = []
        for alert in alerts:
            self.metrics.alerts.labels(alert.rule_id, alert.severity).inc()
            pending.append(
                await self.alerts_topic.send(
                    key=alert.subject.key.encode(), value=encode_alert(alert)
                )
            )
        for future in pending:
            await future
        if arrived is not None:
            self.metrics.delivered(alerts, time.time() - arrived)

    def store(self, table: Any, key: bytes, value: bytes, new: bool) -> None:
        """Write a table value; a key `new` to the table counts towards its size metric."""
        table[key] = value
        event = faust.current_event()  # the store writes to this event's partition
        if new and event is not None:
            self.metrics.state.added(table.name, event.message.partition)

    def probe(self) -> WorkerProbe:
        """The timer task behind the lag and state-size metrics."""
        topics = self.settings.topics
        consumed = [*topics.inputs, topics.watchlist]
        consumed += [topics.identity_events, topics.outlet_events, topics.agent_signals]
        tables = [self.identities, self.outlets, self.agents]
        return WorkerProbe(self.app, self.metrics, consumed, tables)


def create_app(
    settings: Settings,
    pseudonymizer: Pseudonymizer,
    engine: Engine | None = None,
    metrics: WorkerMetrics | None = None,
) -> faust.App:
    """A Faust app that screens the input topics of `settings`."""
    from stream.stages import AgentStage, IdentityStage, OrderingStage, OutletStage

    wiring = Wiring(
        settings, pseudonymizer, engine or Engine(settings.rules), metrics or WorkerMetrics()
    )
    app = wiring.app
    ordering = OrderingStage(wiring)
    app.agent(wiring.inputs, name="validate")(ordering.run)
    app.timer(settings.worker.tick_ms / 1000)(ordering.release)
    identities = IdentityStage(wiring)
    app.agent(wiring.identity_topic, name="screen-identity")(identities.run)
    app.timer(settings.worker.tick_ms / 1000)(identities.flush_ticks)
    app.agent(wiring.outlet_topic, name="screen-outlet")(OutletStage(wiring).run)
    agents = AgentStage(wiring)
    app.agent(wiring.agent_topic, name="screen-agent")(agents.run)

    @app.on_partitions_revoked.connect
    async def drop_held(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = set(args[0])  # the signal is sent with the revoked partitions
        await ordering.on_revoked(revoked)
        identities.on_revoked(revoked)
        agents.on_revoked(revoked)

    @app.on_partitions_assigned.connect
    async def note_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        ordering.on_assigned(set(args[0]))  # the signal is sent with the whole assignment

    app.timer(PROBE_INTERVAL_S)(wiring.probe().update)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(wiring.metrics.exposition(), content_type=CONTENT_TYPE)

    install_console(app, settings)

    if pseudonymizer.is_development_key:

        @app.task
        async def warn_development_key() -> None:
            log.warning(DEV_KEY_WARNING)

    return app


def run_worker(settings: Settings, environ: dict[str, str], loglevel: str = "info") -> int:
    """Make the topics, then run the worker until it is stopped."""
    from stream.topics import ensure_topics

    pseudonymizer = make_pseudonymizer(settings, environ)
    if pseudonymizer.is_development_key:
        print(f"warning: {DEV_KEY_WARNING}", file=sys.stderr)
    ensure_topics(settings)
    Path(settings.worker.data_dir).mkdir(parents=True, exist_ok=True)
    for name in RECORD_LOGGERS:  # faust's logging setup leaves these levels alone
        logging.getLogger(name).setLevel(logging.INFO)
    app = create_app(settings, pseudonymizer)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
