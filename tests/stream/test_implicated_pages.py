"""The console's implicated-cards page over HTTP, without a broker: figures and rankings.

The trace book is fed trace rows as the number stage writes them to the
traces topic (`Trace.row()`), a repeated report and a redelivered row among
them, and a record that is not a trace.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient
from consolekit import PASSWORD, cheap_hashes, client_of, settings_for, sign_in

from rules.implicated import Opened, Report, Trace
from stream.auth import Users, install_auth
from stream.casepages import install_case_pages
from stream.console import install_console
from stream.tracebook import TraceBook, TraceQuery
from stream.tracepages import install_trace_pages

CST = timezone(timedelta(hours=8))
DAY0 = datetime(2026, 10, 1, 10, 0, tzinfo=CST)


@pytest.fixture(autouse=True)
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashes(monkeypatch)


def trace(
    n: int,
    opened_day: int,
    days: float,
    outlet: str,
    agent: str,
    person: str,
    kind: str = "sim",
    region: str = "620102",
    case_ref: str = "",
) -> Trace:
    """Card `n`, opened `opened_day` days after 1 October at `outlet`, reported `days` later."""
    opened = DAY0 + timedelta(days=opened_day)
    reported = opened + timedelta(days=days)
    source = "CMCC-GS" if kind == "sim" else "ICBC-GX"
    opening = Opened(
        opened.timestamp(),
        opened.isoformat(),
        source,
        f"open-{n}",
        "sim.activate" if kind == "sim" else "bank.open",
        f"k:{person * 32}",
        "6201**********0017",
        region[:2],
        outlet,
        agent,
        "counter" if n % 2 else "dealer",
        region,
    )
    ref = case_ref or f"2026-GS-{n:04d}"
    report = Report(kind, f"t:{n:032x}", ref, reported.isoformat(), reported.timestamp())
    return Trace(report, opening)


TRACES = [
    # outlet GS-LZ-0012, staff A-7: four cards, two people
    trace(1, 0, 10, "GS-LZ-0012", "A-7", "a"),
    trace(2, 3, 20, "GS-LZ-0012", "A-7", "a"),
    trace(3, 5, 30, "GS-LZ-0012", "A-7", "b"),
    trace(4, 40, 2, "GS-LZ-0012", "A-8", "a"),
    # outlet GS-LZ-0031, staff A-9: two cards
    trace(5, 38, 100, "GS-LZ-0031", "A-9", "c"),
    trace(6, 39, 200, "GS-LZ-0031", "A-9", "d"),
    # a bank account in Guangxi
    trace(7, 41, 400, "GX-NN-0001", "B-1", "e", "account", "450102"),
]
# card 2 found again in another police case: counted once
AGAIN = Trace(
    Report("sim", "t:again", "2026-GS-0999", TRACES[1].report.reported_at, TRACES[1].report.ts),
    TRACES[1].opening,
    first=False,
)


def fill(book: TraceBook) -> TraceBook:
    rows = [orjson.dumps(t.row()) for t in [*TRACES, AGAIN]]
    errors = book.receive([*rows, rows[0], b"not a trace", None])  # one redelivered
    assert [e.field for e in errors] == ["record", "record"]
    return book


def test_the_book_counts_each_card_once_and_ranks_where_they_were_opened() -> None:
    book = fill(TraceBook(topic="duanka.traces"))
    assert (book.rows, book.repeats, book.skipped) == (9, 2, 2)
    view = book.view(TraceQuery())
    assert view["cards"] == 7 and view["kinds"] == {"sim": 6, "account": 1}
    assert view["police_cases"] == 8
    assert [(o["id"], o["cards"]) for o in view["top_outlets"]] == [
        ("GS-LZ-0012", 4),
        ("GS-LZ-0031", 2),
        ("GX-NN-0001", 1),
    ]
    first = view["top_outlets"][0]
    assert (first["first_day"], first["last_day"], first["median_days"]) == (
        "2026-10-01",
        "2026-11-10",
        15.0,
    )
    assert first["people"] == 2
    assert first["openers"] == [
        {"opener": "k:aaaaaa…", "cards": 3},
        {"opener": "k:bbbbbb…", "cards": 1},
    ]
    assert first["agents"] == {"A-7": 3, "A-8": 1}
    assert [c["opened_day"] for c in first["card_list"]] == [
        "2026-11-10",
        "2026-10-06",
        "2026-10-04",
        "2026-10-01",
    ]
    assert [(a["id"], a["cards"]) for a in view["top_agents"]][:2] == [("A-7", 3), ("A-9", 2)]
    assert view["top_agents"][0]["outlets"] == {"GS-LZ-0012": 3}
    # the last 30 opening days, up to the latest
    assert len(view["by_day"]) == 30
    assert view["by_day"][-1] == {"day": "2026-11-11", "cards": 1}
    assert sum(d["cards"] for d in view["by_day"]) == 4  # cards 4 to 7; 1 to 3 are older
    provinces = {p["value"]: p for p in view["by"]["province"]}
    assert provinces["62"]["cards"] == 6 and provinces["62"]["name_en"] == "Gansu"
    assert view["by"]["source"] == [
        {"value": "CMCC-GS", "cards": 6},
        {"value": "ICBC-GX", "cards": 1},
    ]
    assert view["days_to_report"]["median"] == 30.0
    buckets = {b["days"]: b["cards"] for b in view["days_to_report"]["buckets"]}
    assert buckets["≤ 3"] == 1 and buckets["≤ 14"] == 1 and buckets["≤ 730"] == 1
    assert sum(buckets.values()) == 7


def test_an_empty_book_has_nothing_to_rank() -> None:
    view = TraceBook().view(TraceQuery())
    assert view["cards"] == 0 and view["by_day"] == [] and view["top_outlets"] == []
    assert view["days_to_report"]["median"] is None


Test = Callable[[TestClient[Any, Any]], Awaitable[None]]


def run(tmp_path: Path, test: Test) -> None:
    settings = settings_for(tmp_path)
    app = faust.App(f"duanka-implicated-test-{tmp_path.name}", broker="kafka://127.0.0.1:1")
    auth = install_auth(app, settings)
    install_console(app, settings, auth)

    async def send(topic: str, value: bytes, key: bytes) -> None:
        raise AssertionError("nothing is sent")

    install_case_pages(app, settings, auth, send)
    fill(install_trace_pages(app, settings, auth))
    Users(settings.console.users_file).add("vic", PASSWORD, "viewer")

    async def main() -> None:
        async with client_of(app) as client:
            await test(client)

    asyncio.run(main())


def test_the_page_needs_a_session(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        page = await client.get("/console/implicated", allow_redirects=False)
        assert page.status == 303 and "/console/login" in page.headers["Location"]
        assert (await client.get("/console/implicated.json")).status == 401

    run(tmp_path, test)


def test_the_page_ranks_outlets_and_staff_with_no_script_and_nothing_from_elsewhere(
    tmp_path: Path,
) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        assert (await sign_in(client, "vic")).status == 303  # a viewer may read it
        response = await client.get("/console/implicated")
        html = await response.text()
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert "<script" not in html.lower() and " style=" not in html
        # links to the console's own pages only; the icon is inline
        for ref in re.findall(r'(?:href|src|action)="([^"]*)"', html):
            assert ref.startswith("/console/") or ref == "data:,", ref
        # nothing a pseudonym could be recovered from: prefixes only
        assert "k:aaaaaa…" in html and "k:" + "a" * 32 not in html
        outlets, agents = re.findall(r"<h2>(?:Outlets|Staff).*?</section>", html, re.DOTALL)
        ranked = re.findall(r'<td class="mono">([A-Z]{1,2}-[A-Z0-9-]+)<br>', outlets)
        assert ranked == ["GS-LZ-0012", "GS-LZ-0031", "GX-NN-0001"]
        assert re.findall(r'<td class="mono">([A-Z]-\d)<br>', agents)[:2] == ["A-7", "A-9"]
        assert '<a href="/console/cases?q=GS-LZ-0012">cases</a>' in outlets
        svg = re.search(r"<svg.*?</svg>", html, flags=re.DOTALL)
        assert svg is not None
        bars = ET.fromstring(svg.group(0)).findall("{http://www.w3.org/2000/svg}rect")
        assert len(bars) == 30
        assert "2026-11-11: 1 card" in svg.group(0)

        top = await client.get("/console/implicated.json", params={"top": "1"})
        view = await top.json()
        assert top.status == 200 and top.headers["Cache-Control"] == "no-store"
        assert [o["id"] for o in view["top_outlets"]] == ["GS-LZ-0012"]
        assert [a["id"] for a in view["top_agents"]] == ["A-7"]
        assert view["cards"] == 7 and view["topic"] == "duanka.traces"
        assert "k:" + "a" * 32 not in await top.text()
        for wrong in ("0", "201", "x"):
            answer = await client.get("/console/implicated.json", params={"top": wrong})
            assert answer.status == 400
            assert (await client.get("/console/implicated", params={"top": wrong})).status == 400

    run(tmp_path, test)


def test_the_console_pages_link_to_it(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        await sign_in(client, "vic")
        for path in ("/console/", "/console/cases", "/console/implicated"):
            html = await (await client.get(path)).text()
            assert 'href="/console/implicated"' in html, path

    run(tmp_path, test)
