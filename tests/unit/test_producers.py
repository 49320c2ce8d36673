"""The producer side without a broker: routing, keys, the sample, alert lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from strategies import make_event

from producers.alerts import format_alert
from producers.produce import ProduceError, check_routable, read_lines, route
from producers.sample import sample_events, write_sample
from rules.alert import Alert, Evidence, Subject
from rules.config import Settings
from rules.engine import Engine, Screening
from rules.errors import InvalidEvent
from rules.event import parse_event, pseudonymise
from rules.pseudonym import Pseudonymizer

SETTINGS = Settings()


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_lines_are_routed_by_event_type_and_keyed_by_id_number(tmp_path: Path) -> None:
    sim = make_event()
    bank = make_event(event_type="bank.close", id_number="11010519491231002X")
    path = write(tmp_path / "e.jsonl", [orjson.dumps(sim), b"", b"   ", orjson.dumps(bank)])
    lines = list(read_lines(path))
    assert [line.number for line in lines] == [1, 4]
    assert [route(line, SETTINGS, None) for line in lines] == [
        "carrier.sim-events",
        "bank.account-events",
    ]
    assert [line.key for line in lines] == [b"11010519491231002X"] * 2
    assert lines[0].value == orjson.dumps(sim)  # sent as written
    assert check_routable(path, SETTINGS, None) == (
        2,
        {"carrier.sim-events", "bank.account-events"},
    )


def test_unroutable_lines_stop_the_file_before_anything_is_sent(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", [orjson.dumps(make_event()), b"{not json", b"[1]"])
    with pytest.raises(ProduceError, match=r"line\(s\) 2, 3 .* nothing was sent"):
        check_routable(path, SETTINGS, None)
    # with --topic every line goes as it is, and records without an id get no key
    assert check_routable(path, SETTINGS, "carrier.sim-events") == (3, {"carrier.sim-events"})
    assert [line.key for line in read_lines(path)][1:] == [None, None]


def test_sample_has_the_advertised_alerts_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "sample.jsonl"
    count = write_sample(path)
    lines = path.read_bytes().splitlines()
    assert count == len(lines) == len(sample_events()) + 3
    screening = Screening(Engine(SETTINGS.rules, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)))
    pseudonymizer = Pseudonymizer(b"k")
    found: list[tuple[str, str]] = []
    rejected: list[str] = []
    for line in lines:
        try:
            event = parse_event(line)
        except InvalidEvent as error:
            rejected.append(str(error))
            continue
        found += [
            (a.rule_id, a.severity) for a in screening.screen(pseudonymise(event, pseudonymizer))
        ]
    assert sorted(found) == [
        ("sim_mail_out_of_province", "high"),
        ("sim_mail_out_of_province", "high"),
        ("sim_mail_out_of_province", "high"),
        ("sim_mail_out_of_province", "medium"),
        ("sim_nonlocal_not_in_person", "medium"),  # the non-local ID mailed to Shaanxi
    ]
    assert [r.split(":")[0] for r in rejected] == ["id_number", "occurred_at", "channel"]
    assert check_routable(path, SETTINGS, None)[0] == count


def test_sample_is_reproducible_and_in_time_order() -> None:
    events = sample_events(seed=7)
    assert events == sample_events(seed=7)
    times = [datetime.fromisoformat(str(e["occurred_at"])) for e in events]
    assert times == sorted(times)


def test_alert_line_shows_what_the_police_need() -> None:
    alert = Alert(
        alert_id="0" * 32,
        rule_id="sim_mail_out_of_province",
        severity="high",
        action="review",
        subject=Subject("identity", "k:" + "a" * 32, "6201**********1234", "62"),
        event_time=datetime.fromisoformat("2026-11-20T10:15:00+08:00"),
        detected_at=datetime(2026, 11, 20, 2, 15, 1, tzinfo=UTC),
        source="CMCC-GS",
        region_code="620102",
        summary_zh="号卡邮寄至外省",
        summary_en="SIM mailed out of province",
        facts={},
        evidence=(Evidence("E1", "CMCC-GS", "sim.activate", "2026-11-20T10:15:00+08:00"),),
    )
    line = format_alert(alert)
    for part in (
        "2026-11-20T10:15:00+08:00",
        "HIGH",
        "sim_mail_out_of_province",
        "6201**********1234",
        "CMCC-GS@620102",
        "SIM mailed out of province",
        "号卡邮寄至外省",
    ):
        assert part in line
