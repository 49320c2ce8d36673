"""The police console: a web page of the alerts on the alert topic, served by the worker.

It reads the alert topic as any police consumer would, with a consumer of its
own (no consumer group, every partition, from the beginning), not the
worker's internals: what the page shows is what was delivered. `Console`
keeps the newest alerts in memory and counts all of them. It reads the
decisions topic (the pre-opening checks' audit) the same way, with a second
consumer, and keeps only counts of it: checks decided by outcome, and
refusals by the rule that blocked them (`Checks`); no subject, not even its
pseudonym. `read_topic` feeds either; `install_console` adds the two
readers and the pages to the Faust app:

    /console/              the page (static HTML, inline CSS and JavaScript)
    /console/alerts.json   alerts after a sequence number, filtered, newest first,
                           with the counts of alerts and of decisions
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from rules.alert import SEVERITIES, Alert, decode_alert, encode_alert
from rules.config import KafkaSecurity, RuleSettings, Settings
from rules.errors import InvalidAlert, InvalidRecord
from rules.regions import PROVINCES
from stream.auth import Auth
from stream.casebook import CaseBook
from stream.decisions import DecisionCounts, blocking_rules
from stream.security import aiokafka_options

log = logging.getLogger("duanka.console")

# How many alerts the page can list; the counts cover every alert read.
ALERTS_KEPT = 2_000
# How many alert ids are remembered to drop repeats. A repeat is an alert sent
# again after a worker crash, so it follows the first copy within the records
# the worker had not yet committed: far fewer than this.
IDS_REMEMBERED = 200_000
# Records decoded between two yields to the event loop the worker shares.
BATCH_RECORDS = 500
RETRY_S = 5.0
PAGE = "static/console.html"
RULE_IDS = tuple(f.name for f in fields(RuleSettings))
BLOCKING_RULE_IDS = blocking_rules(RuleSettings())
PROVINCE_NAMES = {p.code: {"zh": p.name_zh, "en": p.name_en} for p in PROVINCES.values()}


@dataclass(frozen=True, slots=True)
class Query:
    """What the page asks for: alerts read after `after`, matching every filter given.

    `region` is a prefix of the alert's `region_code`: "62" is Gansu, "6201" Lanzhou.
    """

    after: int = 0
    rule: str = ""
    severity: str = ""
    region: str = ""
    limit: int = ALERTS_KEPT

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        """A query from URL parameters; ValueError names the one that is wrong."""
        region = params.get("region", "")
        if not (region.isdigit() or region == "") or len(region) > 6:
            raise ValueError("region must be up to 6 digits")
        return cls(
            after=_count(params, "after", 0),
            rule=params.get("rule", ""),
            severity=params.get("severity", ""),
            region=region,
            limit=min(_count(params, "limit", ALERTS_KEPT), ALERTS_KEPT),
        )

    def matches(self, alert: Alert) -> bool:
        return (
            (not self.rule or alert.rule_id == self.rule)
            and (not self.severity or alert.severity == self.severity)
            and alert.region_code.startswith(self.region)
        )


def _count(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise ValueError(f"{name} must be a whole number")
    return int(text)


@dataclass(frozen=True, slots=True)
class Entry:
    """An alert as the console keeps it: its place in reading order and its contract JSON."""

    seq: int
    alert: Alert
    row: dict[str, Any]


class Checks:
    """What the console knows of the decisions topic: counts, each check once, and no subject.

    `rule_ids` are the rules listed under refusals from the start (those
    configured to block); a refusal by any other rule adds it.
    """

    def __init__(
        self,
        rule_ids: Iterable[str] = BLOCKING_RULE_IDS,
        remember: int = IDS_REMEMBERED,
        topic: str = "",
    ) -> None:
        self.topic = topic
        self.status = "starting"
        self.counts = DecisionCounts(rule_ids, remember)

    def receive(self, values: Iterable[bytes | None]) -> list[InvalidRecord]:
        """Decode and count a batch of records; the errors of those that are not decisions."""
        return list(self.counts.receive(values))

    def view(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "counts": counts.counts(),
            "total": counts.total,
            "skipped": counts.skipped,
            "repeats": counts.repeats,
            "topic": self.topic,
            "status": self.status,
        }


class Console:
    """The newest alerts read (bounded), and counts over every distinct alert read.

    `checks` holds the counts of the decisions topic, shown beside the alerts'.
    """

    def __init__(
        self,
        rule_ids: Iterable[str] = RULE_IDS,
        keep: int = ALERTS_KEPT,
        remember: int = IDS_REMEMBERED,
        topic: str = "",
        checks: Checks | None = None,
    ) -> None:
        self.topic = topic
        self.checks = checks or Checks(remember=remember)
        self.status = "starting"
        self.seq = 0
        self.skipped = 0
        self.duplicates = 0
        self.by_rule: Counter[str] = Counter(dict.fromkeys(rule_ids, 0))
        self.by_severity: Counter[str] = Counter(dict.fromkeys(SEVERITIES, 0))
        self.by_province: Counter[str] = Counter()
        self.cases: CaseBook | None = None  # for precision per rule, from the police's verdicts
        self._entries: deque[Entry] = deque(maxlen=keep)
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest id goes first
        self._remember = remember

    def add(self, alert: Alert) -> bool:
        """Keep and count an alert; False (and counted as a duplicate) if its id was seen."""
        if alert.alert_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[alert.alert_id] = None
        if len(self._seen) > self._remember:
            del self._seen[next(iter(self._seen))]
        self.seq += 1
        row = orjson.loads(encode_alert(alert))
        row["seq"] = self.seq
        self._entries.append(Entry(self.seq, alert, row))
        self.by_rule[alert.rule_id] += 1
        self.by_severity[alert.severity] += 1
        self.by_province[alert.region_code[:2]] += 1
        return True

    def skip(self) -> None:
        """Count a record that is not an alert."""
        self.skipped += 1

    def receive(self, values: Iterable[bytes | None]) -> list[InvalidRecord]:
        """Decode and add a batch of records, oldest detection first; the errors of the rest."""
        alerts: list[Alert] = []
        errors: list[InvalidRecord] = []
        for value in values:
            try:
                alerts.append(decode_alert(value or b""))
            except InvalidAlert as error:
                self.skip()
                errors.append(error)
        for alert in sorted(alerts, key=lambda a: a.detected_at):
            self.add(alert)
        return errors

    def __len__(self) -> int:
        return len(self._entries)

    def query(self, query: Query) -> dict[str, Any]:
        """The page's view: matching kept alerts newer than `query.after`, newest first."""
        matching = [
            e.row for e in reversed(self._entries) if e.seq > query.after and query.matches(e.alert)
        ]
        return {
            "latest": self.seq,
            "alerts": matching[: query.limit],
            "truncated": len(matching) > query.limit,
            "counts": self.counts(),
            # names for the page, once: on its first request after a start or a new filter
            "provinces": PROVINCE_NAMES if query.after == 0 else {},
            "total": sum(self.by_rule.values()),
            "kept": len(self._entries),
            "keep": self._entries.maxlen,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "topic": self.topic,
            "status": self.status,
            # the checks decided: counts over the whole decisions topic, never filtered
            "decisions": self.checks.view(),
            "precision": {} if self.cases is None else self.cases.precision(),
        }

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "rule": dict(self.by_rule),
            "severity": dict(self.by_severity),
            "province": dict(sorted(self.by_province.items())),
        }


class Store(Protocol):
    """What a topic reader feeds: the alerts (`Console`) or the decisions (`Checks`)."""

    status: str

    def receive(self, values: Iterable[bytes | None]) -> Sequence[InvalidRecord]: ...


async def read_topic(
    store: Store,
    bootstrap: str,
    topic: str,
    security: KafkaSecurity,
    what: str = "alerts",
    client_id: str = "duanka-console",
) -> None:
    """Feed `store` from `topic` (records of kind `what`, for the log) until cancelled.

    The console must never stop the screening: any failure is logged, shown
    on the page, and followed by a fresh consumer a few seconds later.
    """
    next_offsets: dict[Any, int] = {}
    while True:
        try:
            await _read(store, bootstrap, topic, security, next_offsets, what, client_id)
        except Exception as error:
            store.status = f"error: {type(error).__name__}, retrying"
            # Kafka's errors say what went wrong; others might quote a record
            detail = repr(error) if isinstance(error, KafkaError) else type(error).__name__
            log.warning("console: reading %s failed (%s); retry in %.0f s", topic, detail, RETRY_S)
            await asyncio.sleep(RETRY_S)


async def _read(
    store: Store,
    bootstrap: str,
    topic: str,
    security: KafkaSecurity,
    next_offsets: dict[Any, int],
    what: str,
    client_id: str,
) -> None:
    # No group: the consumer is assigned every partition of the topic (also
    # ones added later) and, with nothing committed, starts at the beginning.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # people read the console: a fetch every half second is fresh enough,
        # and spares the brokers one per alert
        fetch_min_bytes=64 * 1024,
        fetch_max_wait_ms=500,
        **aiokafka_options(security),
    )
    try:
        await consumer.start()
        log.info("console: reading %s from the beginning", topic)
        store.status = "reading"
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH_RECORDS)
            values: list[bytes | None] = []
            for tp, records in batches.items():
                # after a reconnect the topic is read again from the start: skip what was read
                start = next_offsets.get(tp, 0)
                values.extend(r.value for r in records if r.offset >= start)
                if records:
                    next_offsets[tp] = max(start, records[-1].offset + 1)
            errors = store.receive(values)
            if errors:
                # the field only: a reason can quote the record, and a record may hold anything
                log.warning(
                    "console: skipped %d record(s) on %s that are not %s (field: %s)",
                    len(errors),
                    topic,
                    what,
                    errors[0].field,
                )
    finally:
        await consumer.stop()
        log.info("console: stopped reading %s", topic)


@cache
def console_page() -> tuple[bytes, str]:
    """The page, and a Content-Security-Policy that lets only its own inline script and style run.

    The policy also forbids requests anywhere but the worker itself, so nothing
    the page shows can be sent elsewhere, and no script from elsewhere can run.
    """
    html = (Path(__file__).parent / PAGE).read_text(encoding="utf-8")
    script = _inline_hash(html, "script")
    style = _inline_hash(html, "style")
    policy = (
        f"default-src 'none'; script-src '{script}'; style-src '{style}'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode(), policy


def _inline_hash(html: str, tag: str) -> str:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    if len(found) != 1:
        raise ValueError(f"{PAGE} must hold exactly one inline <{tag}>")
    digest = hashlib.sha256(found[0].encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_console(app: Any, settings: Settings, auth: Auth) -> Console:
    """Add the console's two readers (alerts, decisions) and its pages, for signed-in users."""
    topic = settings.topics.alerts
    checks = Checks(blocking_rules(settings.rules), topic=settings.topics.decisions)
    console = Console(topic=topic, checks=checks)

    @app.task
    async def read_alerts_for_console() -> None:
        await read_topic(console, settings.bootstrap, topic, settings.security)

    @app.task
    async def read_decisions_for_console() -> None:
        await read_topic(
            checks,
            settings.bootstrap,
            checks.topic,
            settings.security,
            what="decisions",
            client_id="duanka-console-decisions",
        )

    @app.page("/console/")
    async def console_index(web: Any, request: Any) -> Any:
        if (refused := auth.page_guard(request)) is not None:
            return refused
        body, policy = console_page()
        headers = {
            **SECURITY_HEADERS,
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": policy,
        }
        return web.bytes(body, headers=headers)

    @app.page("/console/alerts.json")
    async def console_alerts(web: Any, request: Any) -> Any:
        if (refused := auth.api_guard(request)) is not None:
            return refused
        try:
            payload, status = console.query(Query.from_params(request.query)), 200
        except ValueError as error:
            payload, status = {"error": str(error)}, 400
        headers = {**SECURITY_HEADERS, "Content-Type": "application/json; charset=utf-8"}
        return web.bytes(orjson.dumps(payload), status=status, headers=headers)

    return console
