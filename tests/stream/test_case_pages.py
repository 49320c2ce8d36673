"""The console's case pages over HTTP, without a broker: list, search, case, verdict form.

The case book is filled with documents as the case stage publishes them,
and the verdict form's POST goes to a recording `send` instead of Kafka.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient
from consolekit import PASSWORD, cheap_hashes, client_of, settings_for, sign_in

from rules.cases import Cases, DictStore, LinkRow
from rules.config import CaseSettings
from rules.disposition import parse_disposition
from stream.auth import Users, install_auth
from stream.casebook import CaseBook
from stream.casepages import install_case_pages
from stream.console import install_console

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashes(monkeypatch)


def alert(
    n: int, kind: str = "identity", rule: str = "sim_nonlocal_not_in_person"
) -> dict[str, Any]:
    return {
        "alert_id": f"{n:02d}" + "cd" * 15,
        "rule_id": rule,
        "severity": "high",
        "action": "review",
        "subject": {"kind": kind, "key": f"p{n}", "id_masked": f"5301**********00{n:02d}"},
        "event_time": (T0 + timedelta(hours=n)).isoformat(),
        "summary_zh": "外地身份证<非现场>认证",
        "summary_en": "non-local ID <script>alert(1)</script>",
        "facts": {"verification": "remote_face"},
        "evidence": [
            {
                "event_id": f"E{n}",
                "source": "CMCC-GS",
                "event_type": "sim.activate",
                "occurred_at": (T0 + timedelta(hours=n)).isoformat(),
            }
        ],
    }


def links(n: int) -> list[LinkRow]:
    return [
        [f"E{n}", "identity", f"p{n}", f"5301**********00{n:02d}"],
        [f"E{n}", "device", "tok-device", "8612****0001"],
        [f"E{n}", "address", "tok-address", ""],
        [f"E{n}", "outlet", "GS-LZ-0012", "GS-LZ-0012"],
    ]


def filled_book() -> tuple[CaseBook, str]:
    cases = Cases(CaseSettings(), DictStore())
    for n in range(1, 4):
        cases.add(alert(n), links(n))
    book = CaseBook(topic="police.cases")
    store = cases.store
    assert isinstance(store, DictStore)
    book.receive(orjson.dumps(cases.document(c)) for c in store.case_ids())
    [case_id] = list(book.cases)
    return book, case_id


Test = Callable[[TestClient[Any, Any], str, list[tuple[str, bytes, bytes]]], Awaitable[None]]


def run(tmp_path: Path, test: Test) -> None:
    settings = settings_for(tmp_path)
    app = faust.App(f"duanka-cases-test-{tmp_path.name}", broker="kafka://127.0.0.1:1")
    auth = install_auth(app, settings)
    install_console(app, settings, auth)
    sent: list[tuple[str, bytes, bytes]] = []

    async def send(topic: str, value: bytes, key: bytes) -> None:
        sent.append((topic, value, key))

    book = install_case_pages(app, settings, auth, send)
    filled, case_id = filled_book()
    book.cases, book.merged = filled.cases, {"case-old": case_id}
    users = Users(settings.console.users_file)
    users.add("ana", PASSWORD, "analyst")
    users.add("vic", PASSWORD, "viewer")

    async def main() -> None:
        async with client_of(app) as client:
            await test(client, case_id, sent)

    asyncio.run(main())


def forms(html: str) -> list[dict[str, str]]:
    found = []
    for form in re.findall(r'<form class="verdict".*?</form>', html, flags=re.DOTALL):
        found.append(dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form)))
    return found


def test_pages_need_a_session(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], case_id: str, _: Any) -> None:
        for path in ("/console/cases", f"/console/cases/{case_id}"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 303
        assert (await client.get("/console/cases.json")).status == 401
        assert (await client.post("/console/dispose", data={})).status in (401, 403)

    run(tmp_path, test)


def test_the_list_searches_and_a_case_page_draws_its_graph(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], case_id: str, _: Any) -> None:
        assert (await sign_in(client, "vic")).status == 303
        listed = await client.get("/console/cases")
        body = await listed.text()
        assert listed.status == 200 and case_id in body
        assert "form-action 'self'" in listed.headers["Content-Security-Policy"]
        for query in ("5301**********0002", "gs-lz-0012", case_id):
            found = await (await client.get("/console/cases.json", params={"q": query})).json()
            assert [c["case_id"] for c in found["cases"]] == [case_id]
        nothing = await (await client.get("/console/cases.json", params={"q": "GX-NN"})).json()
        assert nothing["cases"] == []

        page = await client.get(f"/console/cases/{case_id}")
        html = await page.text()
        assert page.status == 200
        assert "<script>alert(1)</script>" not in html  # escaped
        svg = re.search(r"<svg.*?</svg>", html, flags=re.DOTALL)
        assert svg is not None
        root = ET.fromstring(svg.group(0))
        nodes = {g.get("data-id") for g in root.iter("{http://www.w3.org/2000/svg}g")}
        assert {"device:tok-device", "address:tok-address"} <= nodes
        assert forms(html) == []  # a viewer gets no verdict form
        merged = await client.get("/console/cases/case-old", allow_redirects=False)
        assert merged.headers["Location"] == f"/console/cases/{case_id}"
        missing = await client.get("/console/cases/case-nothing")
        assert missing.status == 404

    run(tmp_path, test)


def test_an_analyst_sends_a_verdict_and_a_viewer_cannot(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], case_id: str, sent: list[Any]) -> None:
        assert (await sign_in(client, "ana")).status == 303
        html = await (await client.get(f"/console/cases/{case_id}")).text()
        [first, *_] = forms(html)
        fields = {
            **first,
            "status": "confirmed",
            "punish_scope": "telecom",
            "until": "2028-12-02",
            "note": "sold the card",
        }
        without = {k: v for k, v in fields.items() if k != "csrf"}
        assert (await client.post("/console/dispose", data=without)).status == 403
        assert sent == []
        response = await client.post("/console/dispose", data=fields, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].endswith(f"?sent={first['alert_id']}")
        [(topic, value, key)] = sent
        assert topic == "police.dispositions" and key == first["alert_id"].encode()
        verdict = parse_disposition(value)
        assert (verdict.status, verdict.by, verdict.note) == (
            "confirmed",
            "console:ana",
            "sold the card",
        )
        assert verdict.punish is not None and verdict.punish.scope == "telecom"
        wrong = {**fields, "status": "dismissed"}  # a punishment only with confirmed
        refused = await client.post("/console/dispose", data=wrong)
        assert refused.status == 400 and "only a confirmed" in await refused.text()
        assert len(sent) == 1

        await client.post("/console/logout", data={"csrf": first["csrf"]})
        assert (await sign_in(client, "vic")).status == 303
        me = await (await client.get("/console/me.json")).json()
        as_viewer = {**fields, "csrf": me["csrf"]}
        assert (await client.post("/console/dispose", data=as_viewer)).status == 403
        assert len(sent) == 1

    run(tmp_path, test)


@pytest.mark.parametrize("query", ["x" * 65])
def test_a_search_too_long_is_a_400(tmp_path: Path, query: str) -> None:
    async def test(client: TestClient[Any, Any], _: str, __: Any) -> None:
        await sign_in(client, "vic")
        assert (await client.get("/console/cases.json", params={"q": query})).status == 400

    run(tmp_path, test)
