"""`duanka dispose`: write the police's verdict on an alert to the dispositions topic.

The verdict is built from the command's options, then read back with the
engine's own reader (`parse_disposition`), so the command never writes a
record the engine would dead-letter. It is keyed by the alert id, and the
command waits for the brokers to acknowledge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from kafka.errors import KafkaError

from producers.produce import ProduceError, make_producer
from rules.config import Settings
from rules.disposition import (
    PUNISH_SCOPES,
    STATUSES,
    Disposition,
    InvalidDisposition,
    Punishment,
    parse_disposition,
)
from rules.errors import DuankaError
from stream.topics import require_topics

# Asia/Shanghai: +08:00 all the year (China has kept no summer time since 1991)
CST = timezone(timedelta(hours=8))
ACK_TIMEOUT_S = 30.0

# the option that sets each field of the record, to name it in an error
OPTIONS = {
    "alert_id": "ALERT_ID",
    "status": "--status",
    "at": "--at",
    "by": "--by",
    "note": "--note",
    "punish": "--punish-scope",
    "punish.scope": "--punish-scope",
    "punish.since": "--since",
    "punish.until": "--until",
    "punish.basis": "--basis",
}


class DisposeError(DuankaError):
    """Options that do not make a disposition the engine would take: which option, and why."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PunishOptions:
    """`--punish-scope`, `--since`, `--until` and `--basis` as given (None: not given)."""

    scope: str | None = None
    until: str | None = None
    since: str | None = None
    basis: str | None = None

    def given(self) -> list[str]:
        """The options given, as typed on the command line."""
        names = {
            "--punish-scope": self.scope,
            "--until": self.until,
            "--since": self.since,
            "--basis": self.basis,
        }
        return [name for name, value in names.items() if value is not None]


@dataclass(frozen=True, slots=True)
class Written:
    """Where the brokers put the record."""

    topic: str
    partition: int
    offset: int


def build_disposition(
    alert_id: str,
    status: str,
    by: str,
    note: str = "",
    punish: PunishOptions | None = None,
    at: str | None = None,
    now: datetime | None = None,
) -> Disposition:
    """The disposition the options describe, as the engine would read it; DisposeError if none.

    `at` defaults to `now` (the current time) in +08:00; `--since` to that
    day in Asia/Shanghai.
    """
    _choice("--status", status, STATUSES)
    when = (now or datetime.now(CST)).astimezone(CST) if at is None else _time(at)
    punishment = _punishment(status, punish or PunishOptions(), when)
    disposition = Disposition(alert_id, status, when, by, note, punishment)
    try:
        return parse_disposition(disposition.to_json())
    except InvalidDisposition as error:
        raise DisposeError(OPTIONS.get(error.field, error.field), error.reason) from None


def _punishment(status: str, options: PunishOptions, when: datetime) -> Punishment | None:
    given = options.given()
    if not given:
        return None
    if status != "confirmed":
        raise DisposeError(given[0], "only a confirmed disposition may punish (--status confirmed)")
    if options.scope is None:
        raise DisposeError(given[0], "goes with --punish-scope")
    _choice("--punish-scope", options.scope, PUNISH_SCOPES)
    if options.until is None:
        raise DisposeError("--until", "missing: a punishment needs the day it ends")
    today = when.astimezone(CST).date()
    since = today if options.since is None else _date("--since", options.since)
    return Punishment(options.scope, since, _date("--until", options.until), options.basis or "")


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        expected = ", ".join(choices)
        raise DisposeError(option, f"unknown value {value!r} (expected one of: {expected})")


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DisposeError("--at", "not a time like 2026-12-02T09:30:00+08:00") from None
    if when.utcoffset() is None:
        raise DisposeError("--at", "needs its offset, as in 2026-12-02T09:30:00+08:00")
    return when


def _date(option: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise DisposeError(option, "not a date like 2026-12-02") from None


def send_disposition(disposition: Disposition, settings: Settings) -> Written:
    """Write the disposition keyed by its alert id; return where, once the brokers acknowledged."""
    topic = settings.topics.dispositions
    require_topics(settings, [topic])
    producer = make_producer(settings.bootstrap, settings.security)
    try:
        sent = producer.send(
            topic, key=disposition.alert_id.encode("utf-8"), value=disposition.to_json()
        )
        metadata = sent.get(timeout=ACK_TIMEOUT_S)
    except KafkaError as exc:
        raise ProduceError(f"the disposition was not acknowledged by {topic}: {exc}") from exc
    finally:
        producer.close()
    return Written(metadata.topic, metadata.partition, metadata.offset)


def describe(disposition: Disposition, written: Written) -> str:
    """The line the command prints: what was written, and where."""
    what = disposition.status
    p = disposition.punish
    if p is not None:
        what += f", punish {p.scope} from {p.since.isoformat()} until {p.until.isoformat()}"
    return (
        f"wrote {what} for alert {disposition.alert_id} at {disposition.at.isoformat()} "
        f"to {written.topic} partition {written.partition} offset {written.offset}"
    )
