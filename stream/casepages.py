"""The console's case pages: the cases list with search and precision, a case with its graph.

Server-rendered HTML with one inline stylesheet (its hash in the page's
Content-Security-Policy), no script and nothing from elsewhere: the link
graph is an inline SVG (stream/graph.py). Everything shown comes from the
`duanka.case/1` documents (stream/casebook.py): pseudonyms, keyed tokens and
masked values only. Every page needs a signed-in user (stream/auth.py); the
verdict form is shown to analysts, and `POST /console/dispose` takes it from
analysts only, with the session's CSRF token, and writes a
`duanka.disposition/1` to the dispositions topic, as `duanka dispose` does.

    /console/cases              the cases, newest and most severe first; ?q= searches
    /console/cases/<case_id>    a case: its graph, entities, alerts with evidence, verdict forms
    /console/cases.json         the list as JSON (?q=)
    /console/case.json?id=      a case's document as JSON
    /console/dispose            POST: a verdict on one alert
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from functools import cache
from html import escape
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from rules.config import Settings
from rules.disposition import (
    PUNISH_SCOPES,
    STATUSES,
    Disposition,
    InvalidDisposition,
    Punishment,
    parse_disposition,
)
from stream.auth import Auth
from stream.casebook import CaseBook, CaseQuery, graph

log = logging.getLogger("duanka.console")

CST = timezone(timedelta(hours=8))
Send = Callable[[str, bytes, bytes], Awaitable[Any]]  # (topic, value, key) -> record metadata

STYLE = """
:root { --ink: #1d2433; --muted: #5c667a; --line: #dde2ea; --paper: #f4f6f9; --card: #fff;
  --accent: #1f4e8c; --critical: #8e1020; --high: #d2461e; --medium: #c98a00; --low: #6b7689; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--paper); color: var(--ink); font-size: 14px; line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC",
  "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif; }
header { background: #14223b; color: #fff; padding: 12px 24px; display: flex; gap: 24px;
  align-items: baseline; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header a { color: #cfd8e8; }
header .who { margin-left: auto; color: #cfd8e8; font-size: 13px; }
header form { display: inline; margin: 0; }
header button { font: inherit; font-size: 12px; background: none; color: #cfd8e8;
  border: 1px solid #50607e; border-radius: 4px; cursor: pointer; }
main { padding: 16px 24px 32px; display: grid; gap: 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 12px 16px; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.badge { text-transform: uppercase; font-size: 11px; font-weight: 700; color: #fff;
  background: var(--low); border-radius: 4px; padding: 1px 7px; }
.sev-critical { background: var(--critical); } .sev-high { background: var(--high); }
.sev-medium { background: var(--medium); }
.search { display: flex; gap: 8px; }
.search input { flex: 1; max-width: 420px; font: inherit; padding: 4px 8px;
  border: 1px solid var(--line); border-radius: 6px; }
button { font: inherit; padding: 4px 10px; border: 1px solid var(--accent); border-radius: 6px;
  background: var(--accent); color: #fff; cursor: pointer; }
.note { color: var(--muted); font-size: 13px; }
.flash { background: #e9f6ec; border-color: #9fd3ab; }
.error { background: #fbeaea; border-color: #e3a1a1; }
.graph svg { width: 100%; height: auto; max-height: 560px; }
.alert { border-top: 1px solid var(--line); padding: 10px 0; }
.alert:first-of-type { border-top: none; }
.alert .head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
.alert pre { background: var(--paper); padding: 6px 8px; border-radius: 4px; font-size: 12px;
  overflow-x: auto; margin: 6px 0; }
.verdict { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-top: 6px;
  background: #f7f9fc; border: 1px dashed var(--line); border-radius: 6px; padding: 6px 8px; }
.verdict label { color: var(--muted); font-size: 12px; }
.verdict select, .verdict input { font: inherit; font-size: 13px; padding: 2px 6px;
  border: 1px solid var(--line); border-radius: 4px; }
.verdict input.note { width: 260px; }
.figures { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.headline { display: flex; gap: 12px 32px; flex-wrap: wrap; color: var(--muted); }
.headline b { display: block; color: var(--ink); font-size: 22px; font-weight: 600; }
.chart svg { width: 100%; height: auto; max-height: 240px; }
details summary { cursor: pointer; color: var(--accent); }
details table { margin-top: 6px; }
.wide { overflow-x: auto; }
main > * { min-width: 0; }
.rank td { white-space: nowrap; }
"""


@cache
def policy() -> str:
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Type": "text/html; charset=utf-8",
}


def page(
    title: str, body: str, session: Any, status: int = 200, heading: str = "cases"
) -> web.Response:
    who = ""
    if session is not None:
        who = (
            f'<span class="who">{escape(session.user)} ({escape(session.role)}) '
            f'<form method="post" action="/console/logout">'
            f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
            f"<button>sign out</button></form></span>"
        )
    html = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
        f"<title>{escape(title)} · duanka</title><style>{STYLE}</style></head><body>"
        f'<header><h1>断卡预警台 · {escape(heading)}</h1><a href="/console/">alerts</a>'
        '<a href="/console/cases">cases</a><a href="/console/implicated">implicated cards</a>'
        f"{who}</header><main>{body}</main></body></html>"
    )
    headers = {**HEADERS, "Content-Security-Policy": policy()}
    return web.Response(body=html.encode(), status=status, headers=headers)


def _badge(severity: str) -> str:
    return f'<span class="badge sev-{escape(severity)}">{escape(severity)}</span>'


def _verdicts(counts: Mapping[str, int]) -> str:
    shown = [f"{n} {status}" for status, n in counts.items() if n]
    return escape(", ".join(shown)) or '<span class="note">none</span>'


def list_body(result: Mapping[str, Any], text: str) -> str:
    rows = []
    for case in result["cases"]:
        case_id = escape(case["case_id"])
        rules = ", ".join(f"{escape(r)} ×{n}" for r, n in case["rules"].items())
        rows.append(
            f'<tr><td class="mono"><a href="/console/cases/{quote(case["case_id"])}">'
            f"{case_id}</a></td><td>{_badge(case['severity'])}</td>"
            f'<td class="n">{case["alert_count"]}</td><td>{rules}</td>'
            f"<td>{escape(str(case['latest'])[:16])}</td>"
            f"<td>{escape(', '.join(case['outlets']))}</td>"
            f"<td>{_verdicts(case['verdicts'])}</td></tr>"
        )
    table = (
        "<table><tr><th>case</th><th>severity</th><th>alerts</th><th>rules</th>"
        "<th>latest</th><th>outlets</th><th>verdicts</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="note">No case matches.</p>'
    )
    shown = f"{len(result['cases'])} of {result['matching']} matching, {result['total']} cases"
    return (
        '<section><form class="search" method="get" action="/console/cases">'
        f'<input name="q" value="{escape(text)}" maxlength="64" '
        'placeholder="case id, masked id number, outlet or agent" aria-label="search">'
        f'<button>search</button></form><p class="note">{escape(shown)} '
        f"(newest, then most severe, first; from {escape(result['topic'])}, "
        f"{escape(result['status'])})</p>{table}</section>" + precision_section(result["precision"])
    )


def precision_section(precision: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for rule, c in precision.items():
        value = c["precision"]
        shown = "–" if value is None else f"{value:.0%}"
        rows.append(
            f'<tr><td class="mono">{escape(rule)}</td><td class="n">{c["confirmed"]}</td>'
            f'<td class="n">{c["dismissed"]}</td><td class="n">{c["investigating"]}</td>'
            f'<td class="n">{shown}</td></tr>'
        )
    table = (
        "<table><tr><th>rule</th><th>confirmed</th><th>dismissed</th><th>investigating</th>"
        "<th>precision</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="note">No verdicts yet.</p>'
    )
    return (
        "<section><h2>Precision by rule (police verdicts)</h2>"
        '<p class="note">confirmed / (confirmed + dismissed), from the standing verdict of '
        f"each alert in the cases kept</p>{table}</section>"
    )


def case_body(doc: Mapping[str, Any], session: Any, sent: str, today: date) -> str:
    analyst = session is not None and session.may("analyst")
    head = (
        f"<section><h2>{escape(doc['case_id'])} {_badge(doc['severity'])}</h2>"
        f"<p>{doc['alert_count']} alerts from {escape(str(doc['opened']))} to "
        f"{escape(str(doc['latest']))}; verdicts: {_verdicts(doc['verdicts'])}</p></section>"
    )
    flash = ""
    if sent:
        flash = (
            f'<section class="flash">Verdict on alert <span class="mono">{escape(sent)}</span> '
            "sent. The case shows it once the engine has taken it.</section>"
        )
    picture = f'<section class="graph"><h2>Who shares what</h2>{graph(doc)}</section>'
    entities = "".join(
        f'<tr><td>{escape(e["kind"])}</td><td class="mono">'
        f"{escape(e['shown'] or e['token'][:12] + '…')}</td>"
        f'<td class="n">{len(e["alerts"])}</td></tr>'
        for e in doc["entities"]
    )
    listed = (
        "<section><h2>Entities</h2><table><tr><th>kind</th><th>shown as</th><th>alerts</th></tr>"
        f"{entities}</table></section>"
    )
    alerts = "".join(_alert(doc["case_id"], a, analyst, session, today) for a in doc["alerts"])
    more = ""
    if doc["alert_count"] > len(doc["alerts"]):
        more = f'<p class="note">The first {len(doc["alerts"])} alerts are listed.</p>'
    return head + flash + picture + listed + f"<section><h2>Alerts</h2>{more}{alerts}</section>"


def _alert(case_id: str, a: Mapping[str, Any], analyst: bool, session: Any, today: date) -> str:
    subject = a["subject"]
    who = subject.get("id_masked") or f"{subject['kind']} {subject['key']}"
    evidence = "".join(
        f'<li class="mono">{escape(e["occurred_at"])} {escape(e["event_type"])} '
        f"{escape(e['source'])}/{escape(e['event_id'])}</li>"
        for e in a["evidence"]
    )
    facts = escape(orjson.dumps(a["facts"], option=orjson.OPT_INDENT_2).decode())
    verdict = escape(a["verdict"] or "none")
    form = _form(case_id, a, session, today) if analyst else ""
    return (
        f'<div class="alert" id="a-{escape(a["alert_id"])}"><div class="head">'
        f'{_badge(a["severity"])}<span class="mono">{escape(a["rule_id"])}</span>'
        f'<span>{escape(a["action"])}</span><span class="mono">{escape(who)}</span>'
        f"<span>{escape(a['event_time'])}</span><span>verdict: {verdict}</span></div>"
        f"<div>{escape(a['summary_zh'])} · {escape(a['summary_en'])}</div>"
        f"<pre>{facts}</pre><ul>{evidence}</ul>"
        f'<div class="note mono">alert {escape(a["alert_id"])}</div>{form}</div>'
    )


def _form(case_id: str, a: Mapping[str, Any], session: Any, today: date) -> str:
    statuses = "".join(f'<option value="{s}">{s}</option>' for s in STATUSES)
    punish = ""
    if a["subject"]["kind"] == "identity":
        scopes = '<option value="">no punishment</option>' + "".join(
            f'<option value="{s}">punish: {s}</option>' for s in PUNISH_SCOPES
        )
        until = _years_later(today, 2)
        punish = (
            f'<label>punishment <select name="punish_scope">{scopes}</select></label>'
            f'<label>from <input type="date" name="since" value="{today.isoformat()}"></label>'
            f'<label>until <input type="date" name="until" value="{until.isoformat()}"></label>'
            '<label>basis <input name="basis" maxlength="200"></label>'
        )
    return (
        '<form class="verdict" method="post" action="/console/dispose">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        f'<input type="hidden" name="case_id" value="{escape(case_id)}">'
        f'<input type="hidden" name="alert_id" value="{escape(a["alert_id"])}">'
        f'<label>verdict <select name="status">{statuses}</select></label>{punish}'
        '<label>note <input class="note" name="note" maxlength="1000"></label>'
        "<button>send verdict</button></form>"
    )


def _years_later(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return date(day.year + years, 3, 1)


def disposition_from_form(form: Mapping[str, str], user: str, now: datetime) -> Disposition:
    """The verdict a form asks for, as the engine will read it; InvalidDisposition if not one."""
    punish = None
    scope = form.get("punish_scope", "")
    if scope:
        try:
            since = date.fromisoformat(form.get("since") or now.date().isoformat())
            until = date.fromisoformat(form.get("until", ""))
        except ValueError:
            raise InvalidDisposition("punish.until", "not a date like 2026-12-02") from None
        punish = Punishment(scope, since, until, form.get("basis", "").strip())
    disposition = Disposition(
        form.get("alert_id", ""),
        form.get("status", ""),
        now,
        f"console:{user}",
        form.get("note", "").strip(),
        punish,
    )
    return parse_disposition(disposition.to_json())


def install_case_pages(app: Any, settings: Settings, auth: Auth, send: Send) -> CaseBook:
    """Add the case pages and the reader of the cases topic to a Faust app."""
    import faust

    from stream.console import read_topic

    book = CaseBook(topic=settings.topics.cases)

    @app.task
    async def read_cases_for_console() -> None:
        await read_topic(
            book,
            settings.bootstrap,
            settings.topics.cases,
            settings.security,
            what="cases",
            client_id="duanka-console-cases",
        )

    def json_response(payload: Any, status: int = 200) -> web.Response:
        headers = {**HEADERS, "Content-Type": "application/json; charset=utf-8"}
        return web.Response(body=orjson.dumps(payload), status=status, headers=headers)

    class CasesView(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.page_guard(request)) is not None:
                return refused
            try:
                query = CaseQuery.from_params(request.query)
            except ValueError as error:
                return page(
                    "cases",
                    f'<section class="error">{escape(str(error))}</section>',
                    auth.session(request),
                    400,
                )
            return page("cases", list_body(book.search(query), query.text), auth.session(request))

    class CaseView(faust.web.View):
        async def get(self, request: web.Request, case_id: str = "") -> web.StreamResponse:
            if (refused := auth.page_guard(request)) is not None:
                return refused
            session = auth.session(request)
            doc = book.get(case_id)
            if doc is None:
                body = f'<section class="error">No case {escape(case_id)} (yet).</section>'
                return page("case", body, session, 404)
            if doc["case_id"] != case_id:  # merged into another: its page
                raise web.HTTPSeeOther(f"/console/cases/{quote(doc['case_id'])}")
            sent = request.query.get("sent", "")[:64]
            today = datetime.now(CST).date()
            return page(doc["case_id"], case_body(doc, session, sent, today), session)

    class CasesJson(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.api_guard(request)) is not None:
                return refused
            try:
                return json_response(book.search(CaseQuery.from_params(request.query)))
            except ValueError as error:
                return json_response({"error": str(error)}, 400)

    class CaseJson(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.api_guard(request)) is not None:
                return refused
            doc = book.get(request.query.get("id", ""))
            if doc is None:
                return json_response({"error": "no such case"}, 404)
            return json_response(doc)

    class DisposeView(faust.web.View):
        async def post(self, request: web.Request) -> web.StreamResponse:
            if (refused := auth.api_guard(request, role="analyst")) is not None:
                return refused
            session = auth.session(request)
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            if session is None or not auth.check_csrf(session, request, form):
                return json_response({"error": "missing or wrong CSRF token"}, 403)
            try:
                disposition = disposition_from_form(form, session.user, datetime.now(CST))
            except InvalidDisposition as error:
                body = (
                    f'<section class="error">The verdict was not sent: {escape(str(error))}. '
                    f'<a href="/console/cases/{quote(form.get("case_id", ""))}">back</a>'
                    "</section>"
                )
                return page("verdict", body, session, 400)
            topic = settings.topics.dispositions
            key = disposition.alert_id.encode()
            await send(topic, disposition.to_json(), key)
            log.info(
                "console: %s sent a verdict (%s) on alert %s",
                session.user,
                disposition.status,
                disposition.alert_id,
            )
            case_id = quote(form.get("case_id", ""))
            target = f"/console/cases/{case_id}?sent={disposition.alert_id}"
            raise web.HTTPSeeOther(target)

    app.page("/console/cases")(CasesView)
    app.page("/console/cases/{case_id}")(CaseView)
    app.page("/console/cases.json")(CasesJson)
    app.page("/console/case.json")(CaseJson)
    app.page("/console/dispose")(DisposeView)
    return book
