"""`duanka report`: the HTML page agrees with the alert (and decision) files it was made from."""

from __future__ import annotations

import base64
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from matplotlib.image import imread

from producers.report import (
    daily_counts,
    load_alerts,
    load_decisions,
    load_dispositions,
    province_label,
    run_report,
    top_subjects,
    verdict_counts,
)
from producers.simulate import write_world
from producers.simulator import Simulator
from rules.alert import Alert, Evidence, Subject, encode_alert
from rules.config import RuleSettings
from rules.engine import Engine
from rules.implicated import Implicated
from rules.pseudonym import Pseudonymizer
from rules.replay import Checks, Implications, replay
from stream.cli import main

CST = timezone(timedelta(hours=8))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- reading the page


class Page(HTMLParser):
    """The parts of a report page the tests look at: tables by id, images, links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "table":
            self._table = values.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(values.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def counts(table: list[list[str]]) -> dict[str, int]:
    """A two-column table (name, count) after its header row."""
    return {name: int(value.replace(",", "")) for name, value in table[1:]}


# ---------------------------------------------------------------- a simulated month


@dataclass(frozen=True)
class Run:
    alerts: Path
    report: Path
    id_numbers: frozenset[str]
    lines: list[dict[str, Any]]
    events: Path
    watchlist: Path
    holdings: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A simulated month replayed through the rules, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    world = Simulator(seed=11, days=30).build(ordinary_people=300, rounds=2)
    files = write_world(world, tmp)
    alerts = tmp / "alerts.jsonl"
    engine = Engine(RuleSettings(), clock=lambda: datetime(2026, 6, 1, tzinfo=UTC))
    with alerts.open("wb") as out:
        replay(
            files.events,
            engine,
            Pseudonymizer(b"report-test"),
            out,
            None,
            files.watchlist,
            holdings=files.holdings,
        )
    report = tmp / "report.html"
    summary = run_report(alerts, report)
    lines = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert summary.alerts == len(lines) and summary.skipped == 0
    ids = frozenset(e["id_number"] for e in world.events)
    return Run(alerts, report, ids, lines, files.events, files.watchlist, files.holdings)


def test_counts_per_rule_and_severity_match_the_file(run: Run) -> None:
    page = parse(run.report)
    by_rule = Counter(a["rule_id"] for a in run.lines)
    assert len(by_rule) == 12  # the month exercises every rule
    assert counts(page.tables["per-rule"]) == by_rule
    assert counts(page.tables["per-severity"]) == Counter(a["severity"] for a in run.lines)
    headline = dict(page.tables["headline"])
    assert headline["alerts"] == f"{len(run.lines):,}"


def test_period_is_the_first_and_last_event_time(run: Run) -> None:
    headline = dict(parse(run.report).tables["headline"])
    times = sorted(run.lines, key=lambda a: datetime.fromisoformat(a["event_time"]))
    assert headline["first event_time"] == times[0]["event_time"]
    assert headline["last event_time"] == times[-1]["event_time"]


def test_per_day_table_adds_up_to_the_rule_counts(run: Run) -> None:
    table = parse(run.report).tables["per-day"]
    header, rows = table[0], table[1:]
    by_day = Counter(datetime.fromisoformat(a["event_time"]).date().isoformat() for a in run.lines)
    assert {row[0]: int(row[-1]) for row in rows if int(row[-1])} == by_day
    columns = list(zip(*rows, strict=True))
    for rule_id, column in zip(header[1:-1], columns[1:-1], strict=True):
        expected = sum(a["rule_id"] == rule_id for a in run.lines)
        assert sum(int(v) for v in column) == expected


def test_mailed_sim_matrix_matches_the_mail_alerts(run: Run) -> None:
    table = parse(run.report).tables["mail-matrix"]
    header, rows = table[0][1:], table[1:]
    cells = {
        (row[0], header[i]): int(value)
        for row in rows
        for i, value in enumerate(row[1:])
        if int(value)
    }
    mailed = [a["facts"] for a in run.lines if a["rule_id"] == "sim_mail_out_of_province"]
    expected = Counter(
        (province_label(f["outlet_province"]), province_label(f["delivery_province"]))
        for f in mailed
    )
    assert len(expected) >= 2
    assert cells == expected
    assert ("Gansu (62)", "Yunnan (53)") in cells  # names, not only codes


def test_agents_table_counts_their_alerts_and_the_alerts_they_name(run: Run) -> None:
    table = parse(run.report).tables["top-agents"]
    assert table[0] == ["agent", "agent alerts", "identity alerts traced", "total"]
    agent_alerts = [a for a in run.lines if a["subject"]["kind"] == "agent"]
    identity_ids = {a["alert_id"] for a in run.lines if a["subject"]["kind"] == "identity"}
    for row in table[1:]:
        own = [a for a in agent_alerts if a["subject"]["key"] == row[0]]
        named = {n for a in own for n in a["facts"]["alerts"]} & identity_ids
        assert [int(v) for v in row[1:]] == [len(own), len(named), len(own) + len(named)]
    assert len(table) - 1 == len({a["subject"]["key"] for a in agent_alerts})


def test_outlets_table_lists_the_outlets_with_most_alerts(run: Run) -> None:
    table = parse(run.report).tables["top-outlets"]
    by_outlet = Counter(a["subject"]["key"] for a in run.lines if a["subject"]["kind"] == "outlet")
    rows = table[1:]
    assert len(rows) == min(10, len(by_outlet))
    listed = [int(row[1]) for row in rows]
    assert listed == sorted(by_outlet.values(), reverse=True)[: len(rows)]
    assert all(by_outlet[row[0]] == int(row[1]) for row in rows)


def test_images_are_embedded_pngs_drawn_by_matplotlib(run: Run) -> None:
    page = parse(run.report)
    assert len(page.images) == 4  # per day, outlets, agents, mailed SIMs
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix) :], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        pixels = imread(io.BytesIO(data), format="png")
        height, width = pixels.shape[:2]
        assert height >= 200 and width >= 400
        colours = {tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::7]}
        assert len(colours) > 20  # bars, text and axes, not a blank canvas


def test_page_loads_nothing_from_outside(run: Run) -> None:
    page = parse(run.report)
    assert page.links and all(link.startswith("data:") for link in page.links)
    assert not re.search(r"https?://", run.report.read_text(encoding="utf-8"))


def test_no_id_number_appears(run: Run) -> None:
    html = run.report.read_text(encoding="utf-8")
    assert len(run.id_numbers) > 300
    assert [n for n in run.id_numbers if n in html] == []


# ---------------------------------------------------------------- the month's checks


PSEUDONYMS = Pseudonymizer(b"report-test")


@dataclass(frozen=True)
class Checked:
    """The month replayed again with checks among its events; its report with the decisions."""

    alerts: Path
    decisions: Path
    report: Path
    lines: list[dict[str, Any]]  # the decision documents
    summary_decisions: Counter[str]
    id_numbers: frozenset[str]


def month_checks(events: list[dict[str, Any]], watchlist: list[dict[str, Any]]) -> list[bytes]:
    """Checks for every fifth opening of the month, for each listed person, and one asked twice."""
    openings = [e for e in events if e["event_type"] in ("sim.activate", "bank.open")]
    checks = [
        {k: v for k, v in e.items() if k != "event_id"} | {"check_id": f"chk-{n}"}
        for n, e in enumerate(openings[::5])
    ]
    # each listed person asks to open in the scope of the listing, at the end of the month
    last = max(openings, key=lambda e: datetime.fromisoformat(e["occurred_at"]))
    for n, entry in enumerate(watchlist):
        kind = "sim.activate" if entry["scope"] == "telecom" else "bank.open"
        template = next(e for e in reversed(openings) if e["event_type"] == kind)
        request = {k: v for k, v in template.items() if k != "event_id"}
        checks.append(
            request
            | {
                "check_id": f"listed-{n}",
                "id_number": entry["id_number"],
                "occurred_at": last["occurred_at"],
            }
        )
    checks.append(checks[-1])  # the same check sent again
    return [orjson.dumps(c | {"schema": "duanka.check/1"}) for c in checks]


@pytest.fixture(scope="module")
def checked(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Checked:
    tmp = tmp_path_factory.mktemp("checked")
    events = [orjson.loads(line) for line in run.events.read_bytes().splitlines()]
    watchlist = [orjson.loads(line) for line in run.watchlist.read_bytes().splitlines()]
    checks = tmp / "checks.jsonl"
    checks.write_bytes(b"".join(c + b"\n" for c in month_checks(events, watchlist)))
    alerts, decisions = tmp / "alerts.jsonl", tmp / "decisions.jsonl"
    engine = Engine(RuleSettings(), clock=lambda: datetime(2026, 6, 1, tzinfo=UTC))
    with alerts.open("wb") as out, decisions.open("wb") as answers:
        answered = (Checks(checks, PSEUDONYMS, 900, 86400), answers)
        summary = replay(
            run.events,
            engine,
            PSEUDONYMS,
            out,
            None,
            run.watchlist,
            holdings=run.holdings,
            checks=answered,
        )
    report = tmp / "report.html"
    made = run_report(alerts, report, decisions)
    lines = [orjson.loads(line) for line in decisions.read_bytes().splitlines()]
    assert made.decisions == len(lines) - 1 and made.decisions_skipped == 0
    ids = frozenset(e["id_number"] for e in events) | {w["id_number"] for w in watchlist}
    return Checked(alerts, decisions, report, lines, summary.decisions, ids)


def test_checks_by_outcome_and_refusals_by_rule_match_the_decisions(checked: Checked) -> None:
    page = parse(checked.report)
    # each check once: the one sent twice got its first answer again, and counts once
    decided = {(d["check_id"], d["decided_at"]): d for d in checked.lines}
    assert len(decided) == len(checked.lines) - 1
    by_outcome = Counter(d["decision"] for d in decided.values())
    assert counts(page.tables["decisions-by-outcome"]) == {
        "allow": by_outcome["allow"],
        "review": by_outcome["review"],
        "refuse": by_outcome["refuse"],
    }
    refusals = Counter(
        rule_id
        for d in decided.values()
        if d["decision"] == "refuse"
        for rule_id in {r["rule_id"] for r in d["reasons"] if r["action"] == "block"}
    )
    assert len(refusals) >= 2 and "watchlist_hit" in refusals  # more than one rule refuses
    table = page.tables["refusals-by-rule"]
    assert table[0] == ["rule", "refused checks"]
    assert counts(table) == refusals
    assert [int(row[1]) for row in table[1:]] == sorted(refusals.values(), reverse=True)
    headline = dict(page.tables["decisions-headline"])
    assert headline["checks decided"] == f"{len(decided):,}"
    assert headline["refused"] == f"{by_outcome['refuse']:,}"
    assert headline["repeats, counted once"] == "1"
    # replay's own count takes every answer, the repeated one too
    assert sum(checked.summary_decisions.values()) == len(decided) + 1


def test_decisions_add_a_chart_and_leave_the_rest_of_the_page_as_it_was(
    run: Run, checked: Checked
) -> None:
    page = parse(checked.report)
    assert len(page.images) == 5  # the four of the alerts, and the checks'
    data = base64.b64decode(page.images[-1].removeprefix("data:image/png;base64,"))
    assert data.startswith(PNG_SIGNATURE)
    assert imread(io.BytesIO(data), format="png").shape[1] >= 800  # two panels side by side
    # checks change no alert: every table of the page without decisions is the same
    without = parse(run.report)
    assert set(without.tables) < set(page.tables)
    for name, table in without.tables.items():
        assert page.tables[name] == table, name
    assert not {"decisions-headline", "decisions-by-outcome", "refusals-by-rule"} & set(
        without.tables
    )


def test_no_id_number_or_subject_of_a_check_appears(checked: Checked) -> None:
    html = checked.report.read_text(encoding="utf-8")
    assert [n for n in checked.id_numbers if n in html] == []
    subjects = {d["subject"]["key"] for d in checked.lines if "subject" in d}
    masked = {d["subject"]["id_masked"] for d in checked.lines if "subject" in d}
    assert subjects and masked
    assert [s for s in subjects | masked if s in html] == []


# ---------------------------------------------------------------- small files


def alert(
    rule_id: str = "sim_nonlocal_not_in_person",
    kind: str = "identity",
    key: str = "k:abc",
    when: datetime = datetime(2026, 1, 5, 10, 0, tzinfo=CST),
    evidence: tuple[Evidence, ...] = (),
    facts: dict[str, object] | None = None,
    alert_id: str = "a1",
    severity: str = "medium",
) -> Alert:
    return Alert(
        alert_id=alert_id,
        rule_id=rule_id,
        severity=severity,
        action="review",
        subject=Subject(kind, key, "6201**********0017" if kind == "identity" else None),
        event_time=when,
        detected_at=datetime(2026, 6, 1, tzinfo=UTC),
        source="CMCC-GS",
        region_code="620102",
        summary_zh="测试",
        summary_en="test",
        facts=facts or {},
        evidence=evidence,
    )


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_an_empty_file_gives_a_page_that_says_so(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n  \n")):
        out = tmp_path / f"{name}.html"
        summary = run_report(write(tmp_path / name, content), out)
        page = parse(out)
        assert summary.alerts == 0 and summary.skipped == 0
        assert "There are no alerts in this file." in page.text
        assert page.images == [] and page.tables == {}
        assert out.read_text(encoding="utf-8").rstrip().endswith("</html>")


def test_a_malformed_line_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = encode_alert(alert())
    wrong_schema = orjson.dumps({**orjson.loads(good), "schema": "duanka.event/1"})
    path = write(tmp_path / "alerts.jsonl", good, b"not json", wrong_schema)
    out = tmp_path / "report.html"
    summary = run_report(path, out)
    assert (summary.alerts, summary.skipped) == (1, 2)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert f"{path}:2: skipped" in warnings[0] and "not valid JSON" in warnings[0]
    assert f"{path}:3: skipped" in warnings[1] and "schema" in warnings[1]
    page = parse(out)
    assert counts(page.tables["per-rule"]) == {"sim_nonlocal_not_in_person": 1}
    assert "2 lines were not alerts and skipped (see the warnings)." in page.text


def test_a_file_of_only_bad_lines_is_an_empty_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    summary = run_report(write(tmp_path / "bad.jsonl", b"{}", b"[1]"), out)
    assert (summary.alerts, summary.skipped) == (0, 2)
    assert "There are no alerts in this file." in parse(out).text


def test_a_repeated_alert_counts_once(tmp_path: Path) -> None:
    line = encode_alert(alert())
    frame = load_alerts(write(tmp_path / "a.jsonl", line, line, line))
    assert len(frame) == 1


def test_text_from_alerts_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> $\\undefined$'  # and no math mode in the chart
    path = write(
        tmp_path / "a.jsonl",
        encode_alert(alert("gang_batch_open", "outlet", hostile, severity="critical")),
    )
    out = tmp_path / "report.html"
    run_report(path, out)
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") == 1
    assert parse(out).tables["top-outlets"][1][0] == hostile


def test_days_are_counted_in_the_events_own_offset(tmp_path: Path) -> None:
    late = datetime(2026, 1, 2, 1, 30, tzinfo=CST)  # still 1 January in UTC
    utc = datetime(2026, 1, 4, 23, 0, tzinfo=UTC)  # 5 January in +08:00, but not here
    frame = load_alerts(
        write(
            tmp_path / "a.jsonl",
            encode_alert(alert(when=late, alert_id="a1")),
            encode_alert(alert(when=utc, alert_id="a2")),
        )
    )
    table = daily_counts(frame)
    assert list(table.index) == [date(2026, 1, 2), date(2026, 1, 3), date(2026, 1, 4)]
    assert table["sim_nonlocal_not_in_person"].tolist() == [1, 0, 1]


def test_identity_alerts_are_traced_through_outlet_evidence_and_agent_facts(
    tmp_path: Path,
) -> None:
    when = datetime(2026, 1, 5, 10, 0, tzinfo=CST)
    trigger = Evidence("CMCC-GS-1", "CMCC-GS", "sim.activate", when.isoformat())
    earlier = Evidence("CMCC-GS-0", "CMCC-GS", "sim.activate", (when - timedelta(1)).isoformat())
    elsewhere = Evidence("CMCC-GS-9", "CMCC-GS", "sim.activate", when.isoformat())
    lines = [
        # traced: its triggering event is in the outlet alert's evidence
        alert(alert_id="i1", evidence=(earlier, trigger)),
        # not traced: only an earlier event of its history is
        alert(alert_id="i2", evidence=(earlier, elsewhere)),
        alert("gang_batch_open", "outlet", "OUT-1", when, (earlier, trigger), alert_id="o1"),
        alert("gang_batch_open", "outlet", "OUT-2", when, (), alert_id="o2"),
        alert("gang_batch_open", "outlet", "OUT-2", when, (), alert_id="o3"),
        alert("agent_flag_rate", "agent", "A-1", when, (trigger,), {"alerts": ["i1", "i2"]}, "g1"),
    ]
    frame = load_alerts(write(tmp_path / "a.jsonl", *map(encode_alert, lines)))
    outlets = top_subjects(frame, "outlet")
    assert outlets.to_dict("index") == {
        "OUT-2": {"outlet alerts": 2, "identity alerts traced": 0, "total": 2},
        "OUT-1": {"outlet alerts": 1, "identity alerts traced": 1, "total": 2},
    }
    agents = top_subjects(frame, "agent")
    assert agents.to_dict("index") == {
        "A-1": {"agent alerts": 1, "identity alerts traced": 2, "total": 3}
    }


def test_top_tables_keep_ten(tmp_path: Path) -> None:
    lines = [
        alert("gang_batch_open", "outlet", f"OUT-{n:02d}", alert_id=f"o{n}-{k}")
        for n in range(15)
        for k in range(n + 1)
    ]
    frame = load_alerts(write(tmp_path / "a.jsonl", *map(encode_alert, lines)))
    table = top_subjects(frame, "outlet")
    assert list(table.index) == [f"OUT-{n:02d}" for n in range(14, 4, -1)]


# ---------------------------------------------------------------- the command


def test_the_command_writes_the_report(
    tmp_path: Path, run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "from-cli.html"
    assert main(["report", str(run.alerts), "--out", str(out)]) == 0
    assert f"wrote a report of {len(run.lines)} alerts to {out}" in capsys.readouterr().out
    assert counts(parse(out).tables["per-rule"]) == Counter(a["rule_id"] for a in run.lines)


def test_the_command_takes_decisions(
    tmp_path: Path, checked: Checked, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "from-cli.html"
    args = ["report", str(checked.alerts), "--out", str(out), "--decisions", str(checked.decisions)]
    assert main(args) == 0
    assert f"and {len(checked.lines) - 1} checks decided to {out}" in capsys.readouterr().out
    expected = parse(checked.report).tables["refusals-by-rule"]
    assert parse(out).tables["refusals-by-rule"] == expected
    missing = tmp_path / "missing-decisions.jsonl"
    refused = tmp_path / "refused.html"
    args = ["report", str(checked.alerts), "--out", str(refused), "--decisions", str(missing)]
    assert main(args) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert not refused.exists()


def test_the_command_fails_cleanly_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- small decision files


def decision(
    check_id: str,
    outcome: str,
    *reasons: tuple[str, str],
    decided_at: str = "2026-12-01T10:15:00.004+08:00",
    **extra: object,
) -> bytes:
    """A decision document as replay writes it; `extra` adds the audit's fields."""
    document = {
        "schema": "duanka.decision/1",
        "check_id": check_id,
        "decision": outcome,
        "reasons": [
            {
                "rule_id": rule_id,
                "action": action,
                "severity": "high",
                "summary_zh": "测试",
                "summary_en": "test",
                "facts": {},
            }
            for rule_id, action in reasons
        ],
        "reservation": None,
        "decided_at": decided_at,
        "subject": {"key": "k:abc", "id_masked": "6201**********0017"},
        "stale": False,
    }
    return orjson.dumps(document | extra)


def test_decisions_count_each_check_once_and_refusals_under_each_blocking_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    watch, limit = ("watchlist_hit", "block"), ("sim_carrier_limit", "block")
    both = decision("chk-3", "refuse", watch, limit, ("sim_mail_out_of_province", "review"))
    path = write(
        tmp_path / "decisions.jsonl",
        decision("chk-1", "allow"),
        decision("chk-2", "review", ("sim_nonlocal_not_in_person", "review")),
        both,
        both,  # read twice
        decision("chk-4", "refuse", limit, source="CMCC-GS", repeat=False),
        decision("chk-4", "refuse", limit, source="CMCC-GS", repeat=True),  # answered again
        decision("chk-4", "refuse", limit, source="CUCC-GS"),  # another carrier's chk-4
        b'{"line": 7, "error": "missing", "field": "check_id"}',  # replay's rejected check
        b"",
        b"not json",
        encode_alert(alert()),
    )
    alerts = write(tmp_path / "alerts.jsonl", encode_alert(alert()))
    out = tmp_path / "report.html"
    summary = run_report(alerts, out, path)
    assert (summary.alerts, summary.decisions, summary.decisions_skipped) == (1, 5, 2)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert f"{path}:10: skipped, not a decision" in warnings[0] and "JSON" in warnings[0]
    assert f"{path}:11: skipped, not a decision" in warnings[1] and "schema" in warnings[1]
    page = parse(out)
    assert counts(page.tables["decisions-by-outcome"]) == {"allow": 1, "review": 1, "refuse": 3}
    assert [row[0] for row in page.tables["refusals-by-rule"][1:]] == [
        "sim_carrier_limit",
        "watchlist_hit",
    ]
    assert counts(page.tables["refusals-by-rule"]) == {"sim_carrier_limit": 3, "watchlist_hit": 1}
    assert dict(page.tables["decisions-headline"]) == {
        "checks decided": "5",
        "refused": "3",
        "repeats, counted once": "2",
        "checks rejected by validation": "1",
    }
    assert "2 lines were not decisions and skipped (see the warnings)." in page.text
    decisions = load_decisions(path, lambda number, reason: None)
    assert (decisions.rejected, decisions.skipped) == (1, 2)


def test_decisions_without_a_refusal_or_without_any(tmp_path: Path) -> None:
    alerts = write(tmp_path / "alerts.jsonl", encode_alert(alert()))
    out = tmp_path / "report.html"
    run_report(alerts, out, write(tmp_path / "d.jsonl", decision("chk-1", "allow")))
    page = parse(out)
    assert counts(page.tables["decisions-by-outcome"]) == {"allow": 1, "review": 0, "refuse": 0}
    assert "refusals-by-rule" not in page.tables
    assert "No check was refused." in page.text
    assert len(page.images) == 2  # the alerts per day, and the outcomes alone
    run_report(alerts, out, write(tmp_path / "none.jsonl", b""))
    page = parse(out)
    assert "There are no decisions in this file." in page.text
    assert len(page.images) == 1
    assert dict(page.tables["decisions-headline"])["checks decided"] == "0"


def test_decisions_beside_an_empty_alert_file(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    alerts = write(tmp_path / "alerts.jsonl", b"")
    decisions = write(tmp_path / "d.jsonl", decision("chk-1", "refuse", ("watchlist_hit", "block")))
    summary = run_report(alerts, out, decisions)
    assert (summary.alerts, summary.decisions) == (0, 1)
    page = parse(out)
    assert "There are no alerts in this file." in page.text
    assert counts(page.tables["refusals-by-rule"]) == {"watchlist_hit": 1}


def test_text_from_decisions_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> $\\undefined$'  # and no math mode in the chart
    path = write(tmp_path / "d.jsonl", decision("chk-1", "refuse", (hostile, "block")))
    out = tmp_path / "report.html"
    run_report(write(tmp_path / "a.jsonl", b""), out, path)
    assert "<script" not in out.read_text(encoding="utf-8")
    assert parse(out).tables["refusals-by-rule"][1][0] == hostile


# ---------------------------------------------------------------- police verdicts


def disposition(alert_id: str, status: str, minute: int = 0, **extra: object) -> bytes:
    """A `duanka.disposition/1` line as a police system would export it."""
    record = {
        "schema": "duanka.disposition/1",
        "alert_id": alert_id,
        "status": status,
        "at": f"2026-12-02T09:{minute:02d}:00+08:00",
        "by": "GS-LZ-police-0042",
    }
    return orjson.dumps(record | extra)


@dataclass(frozen=True)
class Judged:
    """The month's alerts with verdicts on some of them, and its report."""

    dispositions: Path
    report: Path
    expected: dict[str, dict[str, int]]  # rule_id -> status -> alerts whose verdict stands
    unknown: int


@pytest.fixture(scope="module")
def judged(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Judged:
    """Verdicts on three of each rule's alerts, some given twice, some on alerts not in the file."""
    tmp = tmp_path_factory.mktemp("judged")
    by_rule: dict[str, list[str]] = {}
    for line in run.lines:
        by_rule.setdefault(line["rule_id"], []).append(line["alert_id"])
    lines: list[bytes] = []
    expected: dict[str, dict[str, int]] = {}
    for n, (rule_id, ids) in enumerate(sorted(by_rule.items())):
        # the first rule has only a verdict under investigation, so nothing decided
        statuses = ["investigating"] if n == 0 else ["confirmed", "dismissed", "investigating"]
        if n % 3 == 1:
            statuses = ["confirmed", "confirmed", "dismissed"]
        standing = Counter[str]()
        for alert_id, status in zip(ids, statuses, strict=False):
            lines.append(disposition(alert_id, "investigating", 0))
            lines.append(disposition(alert_id, status, 5))  # the later one stands
            standing[status] += 1
        expected[rule_id] = {s: standing[s] for s in ("confirmed", "dismissed", "investigating")}
    first = sorted(by_rule)[1]
    # an appeal: a confirmed alert dismissed later in the file
    appealed = by_rule[first][0]
    lines.append(disposition(appealed, "dismissed", 30, note="appeal upheld"))
    expected[first]["confirmed"] -= 1
    expected[first]["dismissed"] += 1
    unknown = ["0" * 32, "f" * 32]
    lines += [disposition(alert_id, "confirmed") for alert_id in unknown]
    lines.append(disposition("0" * 32, "dismissed"))  # unknown, twice: one verdict
    path = write(tmp / "dispositions.jsonl", *lines)
    report = tmp / "report.html"
    summary = run_report(run.alerts, report, None, path)
    assert (summary.verdicts_unmatched, summary.dispositions_skipped) == (len(unknown), 0)
    return Judged(path, report, expected, len(unknown))


def precision_text(counts: dict[str, int]) -> str:
    decided = counts["confirmed"] + counts["dismissed"]
    return f"{counts['confirmed'] / decided:.1%}" if decided else "–"


def test_the_per_rule_table_adds_verdicts_and_precision(run: Run, judged: Judged) -> None:
    table = parse(judged.report).tables["per-rule"]
    assert table[0] == ["rule", "alerts", "confirmed", "dismissed", "investigating", "precision"]
    alerts = Counter(a["rule_id"] for a in run.lines)
    rows = {row[0]: row[1:] for row in table[1:]}
    assert set(rows) == set(alerts)
    for rule_id, counted in judged.expected.items():
        statuses = [counted[s] for s in ("confirmed", "dismissed", "investigating")]
        assert rows[rule_id] == [
            f"{alerts[rule_id]:,}",
            *map(str, statuses),
            precision_text(counted),
        ], rule_id
    # two of three confirmed, one of two, and nothing decided
    shown = {row[-1] for row in rows.values()}
    assert {"66.7%", "50.0%", "–"} <= shown
    # the alerts column and its order are those of the page without verdicts
    without = parse(run.report).tables["per-rule"]
    assert [row[:2] for row in table[1:]] == [row[:2] for row in without[1:]]


def test_verdicts_leave_the_rest_of_the_page_as_it_was(run: Run, judged: Judged) -> None:
    page, without = parse(judged.report), parse(run.report)
    assert set(page.tables) == set(without.tables)
    for name, table in without.tables.items():
        if name != "per-rule":
            assert page.tables[name] == table, name
    assert len(page.images) == len(without.images)


def test_the_page_says_how_many_verdicts_matched_no_alert(judged: Judged) -> None:
    text = " ".join(parse(judged.report).text)
    assert f"{judged.unknown} verdicts matched no alert in this file." in text
    assert "The last disposition of an alert in the file stands" in text


def test_the_last_verdict_in_the_file_stands_and_investigating_is_not_decided(
    tmp_path: Path,
) -> None:
    alerts = write(
        tmp_path / "alerts.jsonl",
        encode_alert(alert(alert_id="a1")),
        encode_alert(alert(alert_id="a2")),
        encode_alert(alert("gang_batch_open", "outlet", "OUT-1", alert_id="b1")),
    )
    dispositions = write(
        tmp_path / "d.jsonl",
        disposition("a1", "confirmed", 50),
        disposition("a1", "dismissed", 10),  # earlier `at`, later in the file: it stands
        disposition("a2", "investigating"),
        disposition("b1", "investigating"),
        b"",
    )
    out = tmp_path / "report.html"
    summary = run_report(alerts, out, None, dispositions)
    assert (summary.verdicts, summary.verdicts_unmatched) == (3, 0)
    table = parse(out).tables["per-rule"]
    assert table[1:] == [
        ["sim_nonlocal_not_in_person", "2", "0", "1", "1", "0.0%"],
        ["gang_batch_open", "1", "0", "0", "1", "–"],
    ]
    frame, unmatched = verdict_counts(load_alerts(alerts), load_dispositions(dispositions))
    assert unmatched == 0
    assert frame.loc["sim_nonlocal_not_in_person"].tolist()[:3] == [0, 1, 1]
    assert math.isnan(frame.loc["gang_batch_open", "precision"])
    assert "Every verdict matched an alert in this file." in " ".join(parse(out).text)


def test_an_invalid_disposition_is_skipped_with_its_line_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = write(tmp_path / "alerts.jsonl", encode_alert(alert(alert_id="a1")))
    path = write(
        tmp_path / "d.jsonl",
        disposition("a1", "confirmed"),
        disposition("a1", "closed"),
        b"not json",
        disposition("a1", "dismissed", punish={"scope": "telecom", "until": "2028-12-02"}),
        disposition("a1", "confirmed", at="yesterday"),
        encode_alert(alert(alert_id="a1")),
    )
    out = tmp_path / "report.html"
    summary = run_report(alerts, out, None, path)
    assert (summary.verdicts, summary.dispositions_skipped) == (1, 5)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 5
    for warning, (number, field) in zip(
        warnings,
        [(2, "status"), (3, "record"), (4, "punish"), (5, "at"), (6, "schema")],
        strict=True,
    ):
        assert f"{path}:{number}: skipped, not a disposition ({field}: " in warning, warning
    assert "unknown value 'closed'" in warnings[0]
    assert "only a confirmed disposition may punish" in warnings[2]
    page = parse(out)
    assert page.tables["per-rule"][1][2:] == ["1", "0", "0", "100.0%"]
    assert "5 lines were not valid dispositions and skipped (see the warnings)." in page.text


def test_verdicts_beside_an_empty_alert_file(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    alerts = write(tmp_path / "alerts.jsonl", b"")
    dispositions = write(tmp_path / "d.jsonl", disposition("a1", "confirmed"))
    summary = run_report(alerts, out, None, dispositions)
    assert (summary.alerts, summary.verdicts, summary.verdicts_unmatched) == (0, 1, 1)
    text = " ".join(parse(out).text)
    assert "There are no alerts in this file." in text
    assert "1 verdict matched no alert in this file." in text


def test_the_command_takes_dispositions(
    tmp_path: Path, run: Run, judged: Judged, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "from-cli.html"
    args = ["report", str(run.alerts), "--out", str(out)]
    assert main([*args, "--dispositions", str(judged.dispositions)]) == 0
    verdicts = sum(sum(c.values()) for c in judged.expected.values()) + judged.unknown
    printed = capsys.readouterr().out
    assert f"and {verdicts} verdicts ({judged.unknown} on no alert in the file) to {out}" in printed
    assert parse(out).tables["per-rule"] == parse(judged.report).tables["per-rule"]
    missing = tmp_path / "missing.jsonl"
    assert main([*args, "--dispositions", str(missing)]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------- implicated cards


def trace_row(
    event_id: str,
    opened_day: str,
    outlet_id: str,
    agent_id: str,
    days: float,
    case_ref: str = "2026-GS-0001",
    kind: str = "sim",
    source: str = "CMCC-GS",
    province: str = "62",
    channel: str = "counter",
) -> bytes:
    """A line of replay's traces file: a number found in a case, and the opening it came from."""
    return orjson.dumps(
        {
            "kind": kind,
            "number_key": f"t:number-of-{event_id}",
            "case_ref": case_ref,
            "reported_at": "2026-06-01T09:30:00+08:00",
            "opened_at": f"{opened_day}T10:00:00+08:00",
            "opened_day": opened_day,
            "days_to_report": days,
            "source": source,
            "province": province,
            "outlet_id": outlet_id,
            "agent_id": agent_id,
            "channel": channel,
            "subject_key": f"k:person-of-{event_id}",
            "event_id": event_id,
            "first": True,
        }
    )


TRACES = (
    trace_row("e1", "2026-01-02", "OUT-1", "A-1", 3.0, "c-1"),
    trace_row("e2", "2026-01-02", "OUT-1", "A-1", 40.5, "c-2"),
    trace_row("e3", "2026-01-04", "OUT-1", "A-2", 199.5, "c-3"),
    trace_row("e4", "2026-01-05", "OUT-2", "A-3", 800, "c-4", "account", "ICBC-GS", "53", "online"),
    trace_row("e1", "2026-01-02", "OUT-1", "A-1", 90.0, "c-5"),  # the first card, in another case
)


def test_implicated_cards_are_counted_once_by_day_place_and_days_to_report(
    tmp_path: Path,
) -> None:
    alerts = write(
        tmp_path / "alerts.jsonl",
        encode_alert(alert("outlet_implicated", "outlet", "OUT-1", alert_id="o1")),
    )
    traces = write(tmp_path / "traces.jsonl", *TRACES)
    out = tmp_path / "report.html"
    summary = run_report(alerts, out, traces_file=traces)
    assert (summary.cards, summary.traces, summary.traces_skipped) == (4, 5, 0)
    page = parse(out)
    assert dict(page.tables["implicated-headline"]) == {
        "reports traced": "5",
        "implicated cards": "4",
        "SIM cards": "3",
        "bank accounts": "1",
        "reported again, in another case": "1",
        "first opening day": "2026-01-02",
        "last opening day": "2026-01-05",
        "opened per day, on average": "1.0",
        "most opened on one day": "2 (2026-01-02)",
        "median days from opening to report": "120.0",
    }
    assert counts(page.tables["implicated-per-day"]) == {
        "2026-01-02": 2,
        "2026-01-03": 0,
        "2026-01-04": 1,
        "2026-01-05": 1,
    }
    assert counts(page.tables["implicated-by-source"]) == {"CMCC-GS": 3, "ICBC-GS": 1}
    assert counts(page.tables["implicated-by-province"]) == {"Gansu (62)": 3, "Yunnan (53)": 1}
    assert counts(page.tables["implicated-by-channel"]) == {"counter": 3, "online": 1}
    assert page.tables["implicated-outlets"] == [
        ["outlet", "cards", "of all", "alerts"],
        ["OUT-1", "3", "75.0%", "1"],
        ["OUT-2", "1", "25.0%", "0"],
    ]
    assert [row[:3] for row in page.tables["implicated-agents"][1:]] == [
        ["A-1", "2", "50.0%"],
        ["A-2", "1", "25.0%"],
        ["A-3", "1", "25.0%"],
    ]
    buckets = counts(page.tables["implicated-days-to-report"])
    assert {days: n for days, n in buckets.items() if n} == {
        "≤ 3": 1,
        "≤ 60": 1,
        "≤ 365": 1,
        "> 730": 1,
    }
    assert "Implicated cards (涉案卡)" in page.text
    # the per-day, top-places and days-to-report charts, beside the alert report's own
    assert len(page.images) == len(parse(run_report_without_traces(alerts, tmp_path)).images) + 3
    html = out.read_text(encoding="utf-8")
    for hidden in ("t:number-of-", "k:person-of-", "c-1", "2026-GS-0001"):
        assert hidden not in html  # tokens and pseudonyms mean nothing to a reader


def run_report_without_traces(alerts: Path, tmp_path: Path) -> Path:
    out = tmp_path / "without-traces.html"
    run_report(alerts, out)
    page = parse(out)
    assert "implicated-headline" not in page.tables
    assert "Implicated cards (涉案卡)" not in page.text
    return out


def test_a_line_that_is_not_a_trace_row_is_skipped_with_its_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = write(tmp_path / "alerts.jsonl", encode_alert(alert()))
    implicated = b'{"schema": "duanka.implicated/1", "kind": "sim", "number": "13912345678"}'
    no_opening = orjson.loads(TRACES[1])
    del no_opening["event_id"]
    path = write(
        tmp_path / "traces.jsonl",
        TRACES[0],
        b"not json",
        implicated,
        orjson.dumps(no_opening),
        b"",
        encode_alert(alert()),
    )
    out = tmp_path / "report.html"
    summary = run_report(alerts, out, traces_file=path)
    assert (summary.cards, summary.traces, summary.traces_skipped) == (1, 1, 4)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 4
    for warning, (number, field) in zip(
        warnings, [(2, "record"), (3, "record"), (4, "event_id"), (6, "record")], strict=True
    ):
        assert f"{path}:{number}: skipped, not a trace row ({field}: " in warning, warning
    assert "a duanka.implicated/1 record, not a trace row" in warnings[1]
    assert "a duanka.alert/1 record, not a trace row" in warnings[3]
    page = parse(out)
    assert page.tables["implicated-headline"][1] == ["implicated cards", "1"]
    assert "4 lines were not trace rows and skipped (see the warnings)." in page.text


def test_an_empty_traces_file_beside_an_empty_alert_file(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    alerts = write(tmp_path / "alerts.jsonl", b"")
    summary = run_report(alerts, out, traces_file=write(tmp_path / "traces.jsonl", b""))
    assert (summary.cards, summary.traces) == (0, 0)
    page = parse(out)
    assert "There are no alerts in this file." in page.text
    assert "There are no traces in this file." in page.text
    assert dict(page.tables["implicated-headline"])["implicated cards"] == "0"
    assert page.images == []


def test_text_from_traces_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> $\\undefined$'  # and no math mode in the chart
    traces = write(tmp_path / "t.jsonl", trace_row("e1", "2026-01-02", hostile, "A-1", 3.0))
    out = tmp_path / "report.html"
    run_report(write(tmp_path / "a.jsonl", b""), out, traces_file=traces)
    assert "<script" not in out.read_text(encoding="utf-8")
    assert parse(out).tables["implicated-outlets"][1][0] == hostile


def test_the_command_takes_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts = write(tmp_path / "alerts.jsonl", encode_alert(alert()))
    traces = write(tmp_path / "traces.jsonl", *TRACES, b"not json")
    out = tmp_path / "from-cli.html"
    args = ["report", str(alerts), "--out", str(out)]
    assert main([*args, "--traces", str(traces)]) == 0
    printed = capsys.readouterr()
    assert f"and 4 implicated cards (5 reports; 1 lines skipped) to {out}" in printed.out
    assert f"{traces}:6: skipped, not a trace row (record: not valid JSON)" in printed.err
    assert counts(parse(out).tables["implicated-by-source"]) == {"CMCC-GS": 3, "ICBC-GS": 1}
    missing = tmp_path / "missing.jsonl"
    refused = tmp_path / "refused.html"
    assert main(["report", str(alerts), "--out", str(refused), "--traces", str(missing)]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert not refused.exists()


def test_replays_traces_are_counted_by_the_opening_they_were_traced_to(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers of the simulated month reported by the police, traced by replay, then reported."""
    events = [orjson.loads(line) for line in run.events.read_bytes().splitlines()]
    openings = [e for e in events if e["event_type"] == "sim.activate"]
    once = Counter(e["msisdn"] for e in openings)
    chosen = [e for e in openings if once[e["msisdn"]] == 1][::25]
    records = [
        Implicated(
            "sim",
            e["msisdn"],
            f"2026-GS-{n:04d}",
            datetime.fromisoformat(e["occurred_at"]) + timedelta(days=10 + n),
        ).to_json()
        for n, e in enumerate([*chosen, chosen[0]])  # the first number in a second case
    ]
    implicated = write(tmp_path / "implicated.jsonl", *records)
    traces = tmp_path / "traces.jsonl"
    alerts = tmp_path / "alerts.jsonl"
    engine = Engine(RuleSettings(), clock=lambda: datetime(2026, 6, 1, tzinfo=UTC))
    pseudonymizer = Pseudonymizer(b"report-test")
    with alerts.open("wb") as out, traces.open("w+b") as written:
        reports = Implications(implicated, pseudonymizer, written)
        summary = replay(run.events, engine, pseudonymizer, out, None, implicated=reports)
    assert len(chosen) >= 10 and summary.traced == len(chosen) + 1
    out = tmp_path / "report.html"
    counted = run_report(alerts, out, traces_file=traces)
    assert capsys.readouterr().err == ""
    assert (counted.cards, counted.traces, counted.traces_skipped) == (len(chosen), len(records), 0)
    page = parse(out)
    by_outlet = Counter(e["outlet_id"] for e in chosen)
    top = sorted(by_outlet.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert [(row[0], int(row[1])) for row in page.tables["implicated-outlets"][1:]] == top
    days = Counter(e["occurred_at"][:10] for e in chosen)
    per_day = counts(page.tables["implicated-per-day"])
    assert {day: n for day, n in per_day.items() if n} == days
    html = out.read_text(encoding="utf-8")
    assert not any(e["msisdn"] in html or e["id_number"] in html for e in chosen)
