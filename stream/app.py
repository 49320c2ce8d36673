"""The Faust app: wires the rule engine to Kafka and adds no rule logic.

carrier.sim-events ─┐  validate    (dead letters → screening.deadletter)
bank.account-events ┴─► pseudonymise ─► duanka.identity-events (keyed by pseudonym)
                                           └─► screen ─► police.alerts
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import faust

from rules.alert import encode_alert
from rules.config import Settings
from rules.deadletter import encode_dead_letter
from rules.engine import Engine
from rules.errors import InvalidEvent
from rules.event import (
    decode_pseudonymous,
    encode_pseudonymous,
    parse_event,
    pseudonymise,
)
from rules.pseudonym import Pseudonymizer, pseudonym_key
from stream.metrics import CONTENT_TYPE, WorkerMetrics

log = logging.getLogger("duanka.worker")

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}

DEV_KEY_WARNING = (
    "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY "
    "(or pseudonym.key in config.yaml) to a secret before screening real data"
)


def make_pseudonymizer(settings: Settings, environ: dict[str, str]) -> Pseudonymizer:
    return Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))


def create_app(
    settings: Settings,
    pseudonymizer: Pseudonymizer,
    engine: Engine | None = None,
    metrics: WorkerMetrics | None = None,
) -> faust.App:
    """A Faust app that screens the input topics of `settings`."""
    engine = engine or Engine(settings.rules)
    metrics = metrics or WorkerMetrics()
    app = faust.App(
        settings.worker.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap.split(",")],
        store="memory://",
        datadir=str(Path(settings.worker.data_dir)),
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
        topic_allow_declare=False,
    )
    topics = settings.topics
    inputs = app.topic(*topics.inputs, **RAW)
    identity_events = app.topic(topics.identity_events, **RAW)
    alerts = app.topic(topics.alerts, **RAW)
    dead_letters = app.topic(topics.deadletter, **RAW)

    async def reject(message: Any, error: InvalidEvent) -> None:
        metrics.rejected.labels(message.topic, error.field).inc()
        log.warning(
            "rejected record topic=%s partition=%d offset=%d field=%s",
            message.topic,
            message.partition,
            message.offset,
            error.field,
        )
        await dead_letters.send(
            key=message.key,
            value=encode_dead_letter(
                message.topic, message.partition, message.offset, error, message.value
            ),
        )

    @app.agent(inputs, name="validate")
    async def validate(stream: faust.StreamT) -> None:
        async for record in stream.events():
            message = record.message
            try:
                if message.value is None:
                    raise InvalidEvent("record", "no value (a null record)")
                event = parse_event(message.value)
            except InvalidEvent as error:
                await reject(message, error)
                continue
            metrics.events_in.labels(message.topic, event.event_type).inc()
            redacted = pseudonymise(event, pseudonymizer)
            await identity_events.send(
                key=redacted.subject_key.encode(), value=encode_pseudonymous(redacted)
            )

    @app.agent(identity_events, name="screen-identity")
    async def screen_identity(stream: faust.StreamT) -> None:
        async for record in stream.events():
            try:
                event = decode_pseudonymous(record.message.value or b"")
            except InvalidEvent as error:
                await reject(record.message, error)
                continue
            for alert in engine.screen_identity(event):
                metrics.alerts.labels(alert.rule_id, alert.severity).inc()
                await alerts.send(key=alert.subject.key.encode(), value=encode_alert(alert))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE)

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
    app = create_app(settings, pseudonymizer)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
