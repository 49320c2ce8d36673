"""Replay: the engine over a file, in event-time order whatever the file's order."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
from strategies import DROP, make_event

from producers.inventory import holding_lines
from producers.simulator import Simulator, iter_lines
from rules.cases import Cases, DictStore
from rules.config import CaseSettings, RuleSettings
from rules.engine import Engine
from rules.pseudonym import Pseudonymizer
from rules.replay import Checks, index_lines, replay, replay_in_two, sort_key
from stream.cli import main

FIXED = datetime(2026, 6, 1, tzinfo=UTC)
KEY = Pseudonymizer(b"replay-test")


def world_files(tmp_path: Path, shuffle: bool) -> tuple[Path, Path, Path]:
    """A simulated month's events (in or out of order), watchlist and holdings."""
    world = Simulator(seed=5, days=30).build(ordinary_people=300)
    lines = list(iter_lines(world.events))
    if shuffle:
        random.Random(1).shuffle(lines)
    events = tmp_path / ("shuffled.jsonl" if shuffle else "events.jsonl")
    events.write_bytes(b"\n".join(lines) + b"\n")
    watchlist = tmp_path / "watch.jsonl"
    watchlist.write_bytes(b"\n".join(orjson.dumps(w) for w in world.watchlist) + b"\n")
    holdings = tmp_path / "holdings.jsonl"
    holdings.write_bytes(b"\n".join(holding_lines(world.holdings, world.as_of)) + b"\n")
    return events, watchlist, holdings


def run(
    events: Path, watchlist: Path | None = None, holdings: Path | None = None
) -> tuple[list[bytes], list[bytes], object]:
    out, dead = io.BytesIO(), io.BytesIO()
    engine = Engine(RuleSettings(), clock=lambda: FIXED)
    summary = replay(events, engine, KEY, out, dead, watchlist, holdings=holdings)
    return out.getvalue().splitlines(), dead.getvalue().splitlines(), summary


def test_file_order_does_not_matter(tmp_path: Path) -> None:
    ordered, watch, held = world_files(tmp_path, shuffle=False)
    shuffled, _, _ = world_files(tmp_path, shuffle=True)
    alerts, _, summary = run(ordered, watch, held)
    shuffled_alerts, _, shuffled_summary = run(shuffled, watch, held)
    assert summary.in_order and not shuffled_summary.in_order  # type: ignore[attr-defined]
    assert alerts == shuffled_alerts
    rules = {orjson.loads(a)["rule_id"] for a in alerts}
    assert len(rules) == 12  # the simulated month exercises every rule


def test_without_the_watchlist_there_is_no_watchlist_hit(tmp_path: Path) -> None:
    events, watch, held = world_files(tmp_path, shuffle=False)
    with_list = {orjson.loads(a)["rule_id"] for a in run(events, watch, held)[0]}
    without = {orjson.loads(a)["rule_id"] for a in run(events, None, held)[0]}
    assert "watchlist_hit" in with_list
    assert "watchlist_hit" not in without


def test_the_holdings_add_the_limit_alerts_that_rest_on_what_people_held(tmp_path: Path) -> None:
    events, watch, held = world_files(tmp_path, shuffle=False)
    with_holdings, _, summary = run(events, watch, held)
    without, _, _ = run(events, watch)
    assert summary.holdings_loaded == len(held.read_bytes().splitlines())  # type: ignore[attr-defined]
    assert set(without) < set(with_holdings)  # the same alerts, and more
    added = {orjson.loads(a)["rule_id"] for a in set(with_holdings) - set(without)}
    assert added == {"sim_carrier_limit", "bank_type1_limit"}


def test_bad_lines_become_dead_letters_with_their_line_numbers(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    good = {
        "schema": "duanka.event/1",
        "event_id": "E1",
        "event_type": "sim.activate",
        "occurred_at": "2026-11-20T10:15:00+08:00",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": "11010519491231002X",
        "region_code": "620102",
        "outlet_id": "online",
        "channel": "online",
        "verification": "remote_face",
        "msisdn": "139",
        "sim_kind": "personal",
        "delivery": {"method": "mail", "region_code": "530102"},
    }
    events.write_bytes(
        b"not json\n"
        + orjson.dumps(good)
        + b"\n\n"
        + orjson.dumps(dict(good, channel="fax"))
        + b"\n"
    )
    alerts, dead, summary = run(events)
    assert summary.events_read == 3 and summary.rejected == 2  # type: ignore[attr-defined]
    letters = [orjson.loads(d) for d in dead]
    assert {(d["offset"], d["field"]) for d in letters} == {(1, "record"), (4, "channel")}
    assert {d["topic"] for d in letters} == {"file:e.jsonl"}
    # the good line still alerts: mailed to Yunnan, and non-local (Beijing ID in Gansu)
    assert sorted(orjson.loads(a)["rule_id"] for a in alerts) == [
        "sim_mail_out_of_province",
        "sim_nonlocal_not_in_person",
    ]


def test_bad_watchlist_lines_are_counted_and_dead_lettered(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"")
    watch = tmp_path / "w.jsonl"
    watch.write_bytes(b'{"schema": "duanka.watch/1", "id_number": "123"}\n')
    _, dead, summary = run(events, watch)
    assert summary.watch_rejected == 1 and summary.watch_loaded == 0  # type: ignore[attr-defined]
    assert orjson.loads(dead[0])["topic"] == "file:w.jsonl"


def test_sort_key_reads_time_as_an_instant() -> None:
    east = b'{"occurred_at": "2026-01-01T08:00:00+08:00", "source": "B", "event_id": "1"}'
    utc = b'{"occurred_at": "2026-01-01T00:00:00+00:00", "source": "A", "event_id": "1"}'
    assert sort_key(east)[0] == sort_key(utc)[0]
    assert sort_key(utc) < sort_key(east)  # same instant: source decides
    assert sort_key(b"garbage")[0] == float("inf")
    assert sort_key(b'{"occurred_at": "2026-01-01T00:00:00"}')[0] == float("inf")


def test_index_notices_order(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    a = b'{"occurred_at": "2026-01-01T00:00:00+00:00", "source": "A", "event_id": "1"}'
    b = b'{"occurred_at": "2026-01-02T00:00:00+00:00", "source": "A", "event_id": "1"}'
    path.write_bytes(a + b"\n" + b + b"\n")
    refs, in_order = index_lines(path)
    assert in_order and [r.number for r in refs] == [1, 2]
    path.write_bytes(b + b"\n" + a + b"\n")
    assert index_lines(path)[1] is False


def test_on_two_cores_replay_writes_the_same_bytes(tmp_path: Path) -> None:
    """The second process reads, orders and pseudonymises; the output is replay's to the byte."""
    events, watch, held = world_files(tmp_path, shuffle=True)
    with events.open("ab") as out:  # and some lines to dead-letter on the way
        out.write(b'{"schema": "duanka.event/1"}\nnot json\n\n')
    single, single_dead, single_summary = run(events, watch, held)
    out, dead = io.BytesIO(), io.BytesIO()
    engine = Engine(RuleSettings(), clock=lambda: FIXED)
    summary = replay_in_two(events, engine, KEY, out, dead, watch, holdings=held)
    assert out.getvalue().splitlines() == single and len(single) > 30
    assert dead.getvalue().splitlines() == single_dead and len(single_dead) == 2
    assert summary == single_summary


def test_on_two_cores_a_file_in_order_is_read_once_and_gives_the_same(tmp_path: Path) -> None:
    events, watch, held = world_files(tmp_path, shuffle=False)
    single, single_dead, single_summary = run(events, watch, held)
    out, dead = io.BytesIO(), io.BytesIO()
    engine = Engine(RuleSettings(), clock=lambda: FIXED)
    summary = replay_in_two(events, engine, KEY, out, dead, watch, holdings=held)
    assert summary.in_order and summary == single_summary
    assert out.getvalue().splitlines() == single
    assert dead.getvalue().splitlines() == single_dead
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    assert replay_in_two(empty, engine, KEY, io.BytesIO()).events_read == 0


def _raw_event(n: int, when: datetime, **fields: object) -> bytes:
    obj = make_event(
        event_id=f"CMCC-GS-{n:04d}",
        occurred_at=when.isoformat(),
        id_number=PERSON,
        msisdn=f"1390000{n:04d}",
        region_code="110105",  # a Beijing id at a Beijing outlet: local
        verification="in_person",
        delivery=DROP,
        device_id=DROP,
        contact_phone=DROP,
        agent_id=DROP,
        **fields,
    )
    return orjson.dumps(obj)


def _raw_check(check_id: str, when: datetime) -> bytes:
    obj = orjson.loads(_raw_event(0, when))
    del obj["event_id"]
    return orjson.dumps(obj | {"schema": "duanka.check/1", "check_id": check_id})


PERSON = "11010519491231002X"
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_holdings_and_checks_in_event_time_order(tmp_path: Path) -> None:
    """A snapshot of four SIMs, a check allowed for the fifth and its opening, a refused check."""
    holdings = tmp_path / "holdings.jsonl"
    holdings.write_bytes(
        orjson.dumps(
            {
                "schema": "duanka.holding/1",
                "source": "CMCC-GS",
                "id_type": "resident_id",
                "id_number": PERSON,
                "as_of": DAY0.isoformat(),
                "sims": {"personal": 4},
                "accounts": {},
            }
        )
        + b"\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        _raw_event(1, DAY0.replace(day=2, minute=1), check_id="chk-1")
        + b"\n"
        + _raw_event(2, DAY0.replace(day=4))
        + b"\n"
    )
    checks = tmp_path / "checks.jsonl"
    checks.write_bytes(
        _raw_check("chk-1", DAY0.replace(day=2))
        + b"\n"
        + _raw_check("chk-2", DAY0.replace(day=3))
        + b"\n"
        + b'{"schema": "duanka.check/1"}\n'
    )
    outputs = []
    for run_replay in (replay, replay_in_two):
        out, decisions = io.BytesIO(), io.BytesIO()
        engine = Engine(RuleSettings(), clock=lambda: FIXED)
        answered = (Checks(checks, KEY, 900, 86400), decisions)
        summary = run_replay(
            events, engine, KEY, out, None, None, None, holdings=holdings, checks=answered
        )
        lines = [orjson.loads(line) for line in decisions.getvalue().splitlines()]
        assert lines[0] == {"line": 3, "error": "missing", "field": "check_id"}
        assert [(d["check_id"], d["decision"]) for d in lines[1:]] == [
            ("chk-1", "allow"),
            ("chk-2", "refuse"),
        ]
        assert lines[2]["reasons"][0]["facts"] == {"held": 5, "limit": 5, "carrier": "CMCC"}
        alerts = [orjson.loads(line) for line in out.getvalue().splitlines()]
        assert [(a["rule_id"], a["facts"]["held"]) for a in alerts] == [("sim_carrier_limit", 5)]
        assert summary.holdings_loaded == 1
        assert summary.refusals == {"sim_carrier_limit": 1}
        assert PERSON not in decisions.getvalue().decode()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]


def test_replay_forms_the_same_cases_on_one_core_or_two_and_from_the_command(
    tmp_path: Path,
) -> None:
    events, watch, held = world_files(tmp_path, shuffle=True)  # the simulator plants a ring
    documents = []
    for run_replay in (replay, replay_in_two):
        cases = Cases(CaseSettings(), DictStore())
        engine = Engine(RuleSettings(), clock=lambda: FIXED)
        run_replay(events, engine, KEY, io.BytesIO(), None, watch, None, holdings=held, cases=cases)
        documents.append(cases.documents())
    assert documents[0] == documents[1]
    # the ring's case: the eight people and the two gang alerts on their shared device and
    # address (an alert about one of its outlets may join it too: what else happened there)
    rings = [
        d
        for d in documents[0]
        if any(e["kind"] == "device" and len(e["alerts"]) == 10 for e in d["entities"])
    ]
    assert len(rings) == 1
    ring = rings[0]
    assert ring["rules"]["sim_nonlocal_not_in_person"] >= 8
    assert ring["rules"]["gang_batch_open"] >= 2
    addresses = [e for e in ring["entities"] if e["kind"] == "address" and len(e["alerts"]) == 10]
    assert len(addresses) == 1
    assert len([e for e in ring["entities"] if e["kind"] == "outlet"]) >= 2

    config = tmp_path / "config.yaml"
    config.write_text("pseudonym: {key: replay-test}\n")
    out = tmp_path / "alerts.jsonl"
    argv = ["--config", str(config), "replay", str(events), "--out", str(out), "--quiet"]
    assert main([*argv, "--processes", "1"]) == 0
    written = [orjson.loads(line) for line in (tmp_path / "cases.jsonl").read_bytes().splitlines()]
    assert sum(d["alert_count"] for d in written) == len(out.read_bytes().splitlines())
    assert main([*argv, "--cases", str(out)]) == 1  # alerts and cases to one file
