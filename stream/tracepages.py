"""The console's implicated-cards page: where the cards found in fraud cases were opened.

What a 一案双查 review starts from (谁开卡谁负责): the implicated cards read
from the traces topic (stream/tracebook.py), by opening day, carrier or
bank, province and channel, the days from opening to report, and the
outlets and staff members ranked by the cards they opened. Server-rendered
like the case pages (stream/casepages.py: the same stylesheet, policy and
sign-in, any role); the daily figure is an inline SVG, a card list opens
with <details>: no script, nothing from elsewhere. Openers are shown as a
count and a pseudonym's prefix only.

    /console/implicated         the page; ?top= ranks that many outlets and staff members
    /console/implicated.json    the same figures as JSON
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from rules.config import Settings
from stream.auth import Auth
from stream.casepages import HEADERS, page
from stream.tracebook import TraceBook, TraceQuery

CHART_W, CHART_H = 900, 180
CHART_LEFT, CHART_BOTTOM, CHART_TOP = 36, 24, 16
BAR = "#1f4e8c"
# a place's title, its column, and the column of where else its cards were opened
PLACE_NAMES = {
    "outlet": ("Outlets 营业网点", "outlet", "staff"),
    "agent": ("Staff members 受理工号", "staff", "outlets"),
}
NAMES = {
    "source": "Carrier or bank 运营商/银行",
    "province": "Province 省份",
    "channel": "Channel 渠道",
}


def day_chart(days: Sequence[Mapping[str, Any]]) -> str:
    """Cards by opening day as an inline SVG: a bar a day, its figure in its title and above it."""
    if not days:
        return '<p class="note">No implicated card yet.</p>'
    most = max(d["cards"] for d in days) or 1
    room = CHART_H - CHART_BOTTOM - CHART_TOP
    step = (CHART_W - CHART_LEFT) / len(days)
    bars = []
    for i, d in enumerate(days):
        x = CHART_LEFT + i * step
        h = room * d["cards"] / most
        y = CHART_TOP + room - h
        day = escape(d["day"])
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{step - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR}"><title>{day}: {_cards_n(d["cards"])}</title></rect>'
        )
        if d["cards"]:
            bars.append(
                f'<text x="{x + step / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'font-size="10" fill="#1d2433">{d["cards"]}</text>'
            )
        if (len(days) - 1 - i) % 7 == 0:  # weekly, back from the latest day
            bars.append(
                f'<text x="{x + step / 2:.1f}" y="{CHART_H - 6}" text-anchor="middle" '
                f'font-size="10" fill="#5c667a">{day[5:]}</text>'
            )
    base = CHART_TOP + room
    summary = f"implicated cards by opening day, {days[0]['day']} to {days[-1]['day']}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" '
        f'role="img" aria-label="{escape(summary)}" font-family="sans-serif">'
        f"<title>{escape(summary)}</title>"
        f'<line x1="{CHART_LEFT}" y1="{base}" x2="{CHART_W}" y2="{base}" stroke="#dde2ea"/>'
        f'<text x="{CHART_LEFT - 4}" y="{CHART_TOP + 4}" text-anchor="end" font-size="10" '
        f'fill="#5c667a">{most}</text>' + "".join(bars) + "</svg>"
    )


def _cards_n(n: int) -> str:
    return f"{n} card" if n == 1 else f"{n} cards"


def _days(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _table(
    head: Sequence[str], rows: Sequence[str], empty: str = "None yet.", kind: str = ""
) -> str:
    if not rows:
        return f'<p class="note">{escape(empty)}</p>'
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    table = f"<tr>{cells}</tr>{''.join(rows)}"
    if not kind:
        return f"<table>{table}</table>"
    return f'<div class="wide"><table class="{kind}">{table}</table></div>'


def headline(view: Mapping[str, Any]) -> str:
    kinds = view["kinds"]
    figures = [
        (view["cards"], "implicated cards 涉案卡"),
        (kinds.get("sim", 0), "SIM cards 电话卡"),
        (kinds.get("account", 0), "bank accounts 银行账户"),
        (view["police_cases"], "police cases 案件"),
        (view["outlets"], "outlets 网点"),
        (view["agents"], "staff members 工号"),
        (_days(view["days_to_report"]["median"]), "median days to report 开卡至通报中位天数"),
    ]
    shown = "".join(f"<div><b>{escape(str(n))}</b>{escape(label)}</div>" for n, label in figures)
    read = (
        f"{view['rows']} traces read from {view['topic']} ({view['status']}); each card counted "
        f"once ({view['repeats']} repeated reports or deliveries), by the day it was opened"
    )
    if view["skipped"]:
        read += f"; {view['skipped']} records skipped that are not traces"
    return (
        "<section><h2>Implicated cards 涉案卡</h2>"
        f'<div class="headline">{shown}</div><p class="note">{escape(read)}</p></section>'
    )


def by_sections(view: Mapping[str, Any]) -> str:
    parts = []
    for name, title in NAMES.items():
        rows = []
        for row in view["by"][name]:
            label = escape(row["value"])
            if name == "province" and row["name_en"]:
                label += f" {escape(row['name_zh'])} {escape(row['name_en'])}"
            rows.append(f'<tr><td>{label}</td><td class="n">{row["cards"]}</td></tr>')
        parts.append(f"<section><h2>{escape(title)}</h2>{_table(('', 'cards'), rows)}</section>")
    buckets = view["days_to_report"]
    total = sum(b["cards"] for b in buckets["buckets"]) or 1
    rows = [
        f'<tr><td>{escape(b["days"])} days</td><td class="n">{b["cards"]}</td>'
        f'<td class="n">{b["cards"] / total:.0%}</td></tr>'
        for b in buckets["buckets"]
        if b["cards"]
    ]
    parts.append(
        "<section><h2>Days from opening to report 开卡至通报</h2>"
        f'<p class="note">median {_days(buckets["median"])} days</p>'
        f"{_table(('', 'cards', 'share'), rows)}</section>"
    )
    return f'<div class="figures">{"".join(parts)}</div>'


def ranking(view: Mapping[str, Any], kind: str) -> str:
    places = view["top_outlets" if kind == "outlet" else "top_agents"]
    other = "agents" if kind == "outlet" else "outlets"
    rows = []
    for rank, p in enumerate(places, 1):
        key = escape(p["id"])
        openers = ", ".join(f"{escape(o['opener'])} ×{o['cards']}" for o in p["openers"])
        elsewhere = ", ".join(f"{escape(k)} ×{n}" for k, n in list(p[other].items())[:3])
        rows.append(
            f'<tr><td class="n">{rank}</td><td class="mono">{key}<br>'
            f'<a href="/console/cases?q={quote(p["id"])}">cases</a></td>'
            f'<td class="n">{p["cards"]}</td><td>{escape(str(p["first_day"]))}</td>'
            f'<td>{escape(str(p["last_day"]))}</td><td class="n">{_days(p["median_days"])}</td>'
            f'<td class="n">{p["people"]}</td><td class="mono">{elsewhere}</td>'
            f"<td>{_cards(p, openers)}</td></tr>"
        )
    title, which, where = PLACE_NAMES[kind]
    head = ["#", which, "cards", "first opened", "last opened", "median days to report"]
    head += ["openers", where, "cards and openers"]
    return (
        f"<section><h2>{escape(title)} by implicated cards</h2>"
        '<p class="note">most cards first; openers as a count and a pseudonym prefix</p>'
        f"{_table(head, rows, 'No implicated card yet.', 'rank')}</section>"
    )


def _cards(place: Mapping[str, Any], openers: str) -> str:
    rows = "".join(
        f'<tr><td>{escape(c["opened_day"])}</td><td class="n">{c["days_to_report"]:g}</td>'
        f'<td class="mono">{escape(c["case_ref"])}</td><td>{escape(c["kind"])}</td>'
        f"<td>{escape(c['channel'])}</td><td>{escape(c['source'])}</td>"
        f'<td class="mono">{escape(c["opener"])}</td></tr>'
        for c in place["card_list"]
    )
    more = ""
    if place["cards"] > len(place["card_list"]):
        more = f'<p class="note">the latest {len(place["card_list"])} of {place["cards"]}</p>'
    return (
        f"<details><summary>{_cards_n(place['cards'])}</summary>"
        f'<p class="note mono">{openers}</p>{more}'
        "<table><tr><th>opened</th><th>days to report</th><th>police case</th><th>kind</th>"
        f"<th>channel</th><th>source</th><th>opener</th></tr>{rows}</table></details>"
    )


def implicated_body(view: Mapping[str, Any]) -> str:
    days = view["by_day"]
    span = f" ({days[0]['day']} to {days[-1]['day']})" if days else ""
    chart = (
        f'<section class="chart"><h2>Opened per day 每日新开涉案卡{escape(span)}</h2>'
        '<p class="note">the last 30 opening days up to the latest one read</p>'
        f"{day_chart(days)}</section>"
    )
    return (
        headline(view)
        + chart
        + by_sections(view)
        + ranking(view, "outlet")
        + ranking(view, "agent")
    )


def install_trace_pages(app: Any, settings: Settings, auth: Auth) -> TraceBook:
    """Add the implicated-cards page and the reader of the traces topic to a Faust app."""
    import faust

    from stream.console import read_topic

    book = TraceBook(topic=settings.topics.traces)

    @app.task
    async def read_traces_for_console() -> None:
        await read_topic(
            book,
            settings.bootstrap,
            settings.topics.traces,
            settings.security,
            what="traces",
            client_id="duanka-console-traces",
        )

    def json_response(payload: Any, status: int = 200) -> web.Response:
        headers = {**HEADERS, "Content-Type": "application/json; charset=utf-8"}
        return web.Response(body=orjson.dumps(payload), status=status, headers=headers)

    class ImplicatedView(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.page_guard(request)) is not None:
                return refused
            session = auth.session(request)
            try:
                query = TraceQuery.from_params(request.query)
            except ValueError as error:
                body = f'<section class="error">{escape(str(error))}</section>'
                return page("implicated cards", body, session, 400, "implicated cards")
            body = implicated_body(book.view(query))
            return page("implicated cards", body, session, heading="implicated cards")

    class ImplicatedJson(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.api_guard(request)) is not None:
                return refused
            try:
                return json_response(book.view(TraceQuery.from_params(request.query)))
            except ValueError as error:
                return json_response({"error": str(error)}, 400)

    app.page("/console/implicated")(ImplicatedView)
    app.page("/console/implicated.json")(ImplicatedJson)
    return book
