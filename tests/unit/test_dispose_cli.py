"""`duanka dispose` without a broker: every wrong option is named before anything connects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from producers import dispose
from producers.dispose import (
    DisposeError,
    PunishOptions,
    Written,
    build_disposition,
    describe,
    send_disposition,
)
from rules.config import Settings
from rules.disposition import Punishment, parse_disposition
from stream.cli import main

CST = timezone(timedelta(hours=8))
ALERT = "3f9a0c6e1b2d4a5f8e7d6c5b4a392817"
BY = ["--by", "GS-LZ-police-0042"]
PUNISH_ALL = ["--status", "confirmed", "--punish-scope", "all"]


class Connected(AssertionError):
    """The command got as far as the brokers."""


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command asks the brokers anything."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Connected("the command connected before finding the error")

    monkeypatch.setattr(dispose, "require_topics", refuse)
    monkeypatch.setattr(dispose, "make_producer", refuse)
    monkeypatch.delenv("DUANKA_CONFIG", raising=False)


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `duanka dispose ARGS`; it must exit 1; its one line of error."""
    assert main(["dispose", *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("duanka: error: "), captured.err
    return lines[0].removeprefix("duanka: error: ")


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("status", ["investigating", "dismissed"])
@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--punish-scope", "telecom", "--until", "2028-12-02"], "--punish-scope"),
        (["--until", "2028-12-02"], "--until"),
        (["--since", "2026-12-02"], "--since"),
        (["--basis", "card trade"], "--basis"),
    ],
)
def test_punishing_without_confirming_names_the_option(
    capsys: pytest.CaptureFixture[str], status: str, options: list[str], named: str
) -> None:
    error = fails(capsys, ALERT, "--status", status, *BY, *options)
    assert error == f"{named}: only a confirmed disposition may punish (--status confirmed)"


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--status", "closed"], "--status: unknown value 'closed' (expected one of: "),
        (["--status", "confirmed", "--by", ""], "--by: missing"),
        (["--status", "confirmed", "--note", "x" * 1001], "--note: longer than 1000 characters"),
        (["--status", "confirmed", "--at", "yesterday"], "--at: not a time like 2026-12-02T"),
        (["--status", "confirmed", "--at", "2026-12-02T09:30:00"], "--at: needs its offset"),
        (["--status", "confirmed", "--at", "1969-12-31T09:30:00+08:00"], "--at: out of range"),
        (["--status", "confirmed", "--punish-scope", "sim", "--until", "2028-12-02"], None),
        (["--status", "confirmed", "--punish-scope", "bank"], "--until: missing"),
        (["--status", "confirmed", "--until", "2028-12-02"], "--until: goes with --punish-scope"),
        (["--status", "confirmed", "--basis", "x"], "--basis: goes with --punish-scope"),
        ([*PUNISH_ALL, "--until", "02.12.2028"], "--until: not a date like 2026-12-02"),
        (
            [*PUNISH_ALL, "--until", "2028-12-02", "--since", "tomorrow"],
            "--since: not a date like 2026-12-02",
        ),
        (
            [*PUNISH_ALL, "--until", "2026-12-01", "--since", "2026-12-01"],
            "--until: must be after since",
        ),
        (
            [*PUNISH_ALL, "--until", "2028-12-02", "--basis", "法" * 1001],
            "--basis: longer than 1000 characters",
        ),
    ],
)
def test_a_wrong_option_is_named(
    capsys: pytest.CaptureFixture[str], options: list[str], error: str | None
) -> None:
    if "--by" not in options:
        options = [*options, *BY]
    said = fails(capsys, ALERT, *options)
    if error is None:  # the scope's own message
        error = "--punish-scope: unknown value 'sim' (expected one of: telecom, bank, all)"
    assert said.startswith(error), said


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("alert_id", ["alert-1", "3F9A0C6E", "a" * 65, ""])
def test_an_alert_id_that_is_not_one_is_named(
    capsys: pytest.CaptureFixture[str], alert_id: str
) -> None:
    error = fails(capsys, alert_id, "--status", "dismissed", *BY)
    assert error.startswith("ALERT_ID: "), error


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    "args",
    [
        [ALERT, *BY],  # no --status
        [ALERT, "--status", "confirmed"],  # no --by
        ["--status", "confirmed", *BY],  # no alert
    ],
)
def test_a_required_argument_left_out_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dispose", *args])
    assert exit_.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err


# ---------------------------------------------------------------- what is built and sent


def test_the_time_and_the_first_day_default_to_now_in_beijing() -> None:
    late = datetime(2026, 12, 1, 16, 30, tzinfo=UTC)  # 00:30 on 2 December in Beijing
    punish = PunishOptions("telecom", "2028-12-02")
    built = build_disposition(ALERT, "confirmed", "GS-1", punish=punish, now=late)
    assert built.at == late and built.at.utcoffset() == timedelta(hours=8)
    assert orjson.loads(built.to_json())["at"] == "2026-12-02T00:30:00+08:00"
    assert built.punish == Punishment("telecom", date(2026, 12, 2), date(2028, 12, 2))
    # without `now`: the clock, in +08:00
    before = datetime.now(UTC)
    plain = build_disposition(ALERT, "investigating", "GS-1")
    assert before <= plain.at <= datetime.now(UTC)
    assert plain.at.utcoffset() == timedelta(hours=8)


def test_the_first_day_defaults_to_the_day_of_at_in_beijing() -> None:
    punish = PunishOptions("bank", "2027-01-01", basis="card trade")
    built = build_disposition(ALERT, "confirmed", "GS-1", "", punish, "2026-11-30T20:00:00Z")
    assert built.punish == Punishment("bank", date(2026, 12, 1), date(2027, 1, 1), "card trade")
    given = PunishOptions("all", "2027-01-01", "2026-06-01")
    built = build_disposition(ALERT, "confirmed", "GS-1", "", given, "2026-11-30T20:00:00Z")
    assert built.punish is not None and built.punish.since == date(2026, 6, 1)


def test_what_is_built_is_what_the_engine_reads() -> None:
    punish = PunishOptions("telecom", "2028-12-02", "2026-12-02", "2024 joint punishment")
    built = build_disposition(
        ALERT,
        "confirmed",
        "GS-LZ-police-0042",
        "sold the SIM to a collector",
        punish,
        "2026-12-02T09:30:00+08:00",
    )
    assert parse_disposition(built.to_json()) == built
    assert orjson.loads(built.to_json()) == {
        "schema": "duanka.disposition/1",
        "alert_id": ALERT,
        "status": "confirmed",
        "at": "2026-12-02T09:30:00+08:00",
        "by": "GS-LZ-police-0042",
        "note": "sold the SIM to a collector",
        "punish": {
            "scope": "telecom",
            "since": "2026-12-02",
            "until": "2028-12-02",
            "basis": "2024 joint punishment",
        },
    }
    with pytest.raises(DisposeError) as caught:
        build_disposition(ALERT, "dismissed", "GS-1", punish=punish)
    assert (caught.value.option, caught.value.reason) == (
        "--punish-scope",
        "only a confirmed disposition may punish (--status confirmed)",
    )


class Metadata:
    topic = "police.dispositions"
    partition = 2
    offset = 17


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.waited: float | None = None

    def get(self, timeout: float) -> Metadata:
        self.waited = timeout
        if self.error is not None:
            raise self.error
        return Metadata()


class Producer:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.future = Future(error)
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        self.sent.append((topic, key, value))
        return self.future

    def close(self) -> None:
        self.closed = True


def test_the_verdict_is_keyed_by_its_alert_and_waits_for_the_ack(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    producer = Producer()
    asked: list[list[str]] = []
    monkeypatch.setattr(dispose, "require_topics", lambda settings, names: asked.append(names))
    monkeypatch.setattr(dispose, "make_producer", lambda bootstrap, security: producer)
    monkeypatch.delenv("DUANKA_CONFIG", raising=False)
    at = "2026-12-02T09:30:00+08:00"
    assert main(["dispose", ALERT, "--status", "dismissed", *BY, "--at", at]) == 0
    assert asked == [["police.dispositions"]]
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("police.dispositions", ALERT.encode("utf-8"))
    assert orjson.loads(value) == {
        "schema": "duanka.disposition/1",
        "alert_id": ALERT,
        "status": "dismissed",
        "at": at,
        "by": "GS-LZ-police-0042",
    }
    assert producer.future.waited is not None and producer.closed
    assert capsys.readouterr().out == (
        f"wrote dismissed for alert {ALERT} at {at} to police.dispositions partition 2 offset 17\n"
    )


def test_a_send_the_brokers_refuse_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka.errors import TopicAuthorizationFailedError

    producer = Producer(TopicAuthorizationFailedError())
    monkeypatch.setattr(dispose, "require_topics", lambda settings, names: None)
    monkeypatch.setattr(dispose, "make_producer", lambda bootstrap, security: producer)
    built = build_disposition(ALERT, "confirmed", "GS-1")
    with pytest.raises(dispose.ProduceError, match=r"not acknowledged by police\.dispositions"):
        send_disposition(built, Settings())
    assert producer.closed


def test_the_line_printed_names_a_punishment() -> None:
    punish = PunishOptions("telecom", "2028-12-02", "2026-12-02")
    built = build_disposition(ALERT, "confirmed", "GS-1", "", punish, "2026-12-02T09:30:00+08:00")
    line = describe(built, Written("police.dispositions", 0, 5))
    assert line == (
        f"wrote confirmed, punish telecom from 2026-12-02 until 2028-12-02 for alert {ALERT} "
        "at 2026-12-02T09:30:00+08:00 to police.dispositions partition 0 offset 5"
    )
