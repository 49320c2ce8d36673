"""`duanka report`: the HTML page agrees with the alert file it was made from."""

from __future__ import annotations

import base64
import io
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

from producers.report import daily_counts, load_alerts, province_label, run_report, top_subjects
from producers.simulate import write_world
from producers.simulator import Simulator
from rules.alert import Alert, Evidence, Subject, encode_alert
from rules.config import RuleSettings
from rules.engine import Engine
from rules.pseudonym import Pseudonymizer
from rules.replay import replay
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
    return Run(alerts, report, ids, lines)


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


def test_the_command_fails_cleanly_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()
