"""Signing in to the console, over HTTP, without a broker.

A faust app gets the console's pages and the sign-in as `duanka worker`
adds them (`install_auth`, `install_console`), and aiohttp's test client
drives its web application on 127.0.0.1: nothing under /console/ without a
session, the same answer for an unknown user as for a wrong password, no
POST without the session's CSRF token, sessions that end, roles that count.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from consolekit import PASSWORD, cheap_hashes, client_of, form_token, settings_for, sign_in

from rules.pseudonym import DEV_KEY, Pseudonymizer
from stream.app import create_app
from stream.auth import Auth, Users, install_auth
from stream.console import install_console

ANALYST_ONLY = "/console/test-analyst-only"


@pytest.fixture(autouse=True)
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashes(monkeypatch)


@dataclasses.dataclass
class Console:
    app: Any
    auth: Auth
    users: Users


def console_app(tmp_path: Path) -> Console:
    """A faust app with the console as the worker has it, plus a page only analysts may use."""
    settings = settings_for(tmp_path)
    app = faust.App(f"duanka-auth-test-{tmp_path.name}", broker="kafka://127.0.0.1:1")
    auth = install_auth(app, settings)
    install_console(app, settings, auth)

    class AnalystOnly(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            return auth.api_guard(request, role="analyst") or web.json_response({"ok": True})

        async def post(self, request: web.Request) -> web.StreamResponse:
            session = auth.session(request)
            form = await request.post()
            if session is None or not auth.check_csrf(session, request, form):
                return web.json_response({"error": "csrf"}, status=403)
            return auth.api_guard(request, role="analyst") or web.json_response({"ok": True})

    app.page(ANALYST_ONLY)(AnalystOnly)
    users = Users(settings.console.users_file)
    users.add("ana", PASSWORD, "analyst")
    users.add("vic", PASSWORD, "viewer")
    return Console(app, auth, users)


def run(tmp_path: Path, test: Callable[[TestClient[Any, Any], Console], Awaitable[None]]) -> None:
    console = console_app(tmp_path)

    async def main() -> None:
        async with client_of(console.app) as client:
            await test(client, console)

    asyncio.run(main())


async def csrf_of(client: TestClient[Any, Any]) -> str:
    response = await client.get("/console/me.json")
    assert response.status == 200
    token: str = (await response.json())["csrf"]
    return token


def test_without_a_session_the_page_sends_to_sign_in_and_the_api_says_401(
    tmp_path: Path,
) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        page = await client.get("/console/", allow_redirects=False)
        assert page.status == 303
        assert page.headers["Location"] == "/console/login?next=%2Fconsole%2F"
        api = await client.get("/console/alerts.json")
        assert api.status == 401
        assert await api.json() == {"error": "sign in"}
        me = await client.get("/console/me.json")
        assert me.status == 401
        # a page the guard of its own would forget is still guarded
        other = await client.get("/console/anything.json")
        assert other.status == 401

    run(tmp_path, test)


def test_the_sign_in_form_and_its_headers(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        response = await client.get("/console/login?next=%2Fconsole%2F%3Frule%3Dsim_churn")
        body = await response.text()
        assert response.status == 200
        assert 'name="next" value="/console/?rule=sim_churn"' in body
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        policy = response.headers["Content-Security-Policy"]
        assert "form-action 'self'" in policy and "script-src" not in policy
        cookie = response.cookies["duanka_login"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain http on loopback: a Secure cookie would never return
        assert cookie.value in body

    run(tmp_path, test)


def test_an_unknown_user_gets_exactly_the_answer_of_a_wrong_password(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        token = await form_token(client)
        answers = []
        for user, password in (("ana", "not the password"), ("nobody", PASSWORD)):
            fields = {"user": user, "password": password, "csrf": token, "next": ""}
            response = await client.post("/console/login", data=fields, allow_redirects=False)
            answers.append((response.status, await response.read()))
            assert "duanka_session" not in response.cookies
        assert answers[0] == answers[1]
        status, body = answers[0]
        assert status == 401
        assert b"unknown user or wrong password" in body
        assert b"nobody" not in body

    run(tmp_path, test)


def test_signed_in_the_console_answers_until_signing_out(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        response = await sign_in(client, "ana")
        assert response.status == 303
        assert response.headers["Location"] == "/console/"
        cookie = response.cookies["duanka_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        session_token = cookie.value

        page = await client.get("/console/")
        assert page.status == 200 and "断卡预警台" in await page.text()
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src")
        alerts = await client.get("/console/alerts.json")
        assert alerts.status == 200
        assert (await alerts.json())["total"] == 0
        assert alerts.headers["Cache-Control"] == "no-store"
        me = await client.get("/console/me.json")
        view = await me.json()
        assert (view["user"], view["role"]) == ("ana", "analyst") and len(view["csrf"]) >= 32

        # no CSRF token, no POST; the session stays
        refused = await client.post("/console/logout", allow_redirects=False)
        assert refused.status == 403
        wrong = await client.post("/console/logout", data={"csrf": "x" * 43}, allow_redirects=False)
        assert wrong.status == 403
        assert (await client.get("/console/alerts.json")).status == 200

        out = await client.post(
            "/console/logout", data={"csrf": view["csrf"]}, allow_redirects=False
        )
        assert (out.status, out.headers["Location"]) == (303, "/console/login")
        assert (await client.get("/console/alerts.json")).status == 401
        # the old cookie, sent again, names no session
        client.session.cookie_jar.update_cookies({"duanka_session": session_token})
        assert (await client.get("/console/alerts.json")).status == 401

    run(tmp_path, test)


def test_the_csrf_token_may_come_as_a_header(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        await sign_in(client, "ana")
        csrf = await csrf_of(client)
        posted = await client.post(ANALYST_ONLY, headers={"X-CSRF-Token": csrf})
        assert (posted.status, await posted.json()) == (200, {"ok": True})
        out = await client.post(
            "/console/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False
        )
        assert out.status == 303

    run(tmp_path, test)


def test_a_viewer_reads_but_may_not_use_an_analysts_api(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        await sign_in(client, "vic")
        assert (await client.get("/console/alerts.json")).status == 200
        refused = await client.get(ANALYST_ONLY)
        assert refused.status == 403
        assert await refused.json() == {"error": "this needs the analyst role"}
        csrf = await csrf_of(client)
        assert (await client.post(ANALYST_ONLY, data={"csrf": csrf})).status == 403

    run(tmp_path, test)


def test_an_analyst_may(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        await sign_in(client, "ana")
        assert (await client.get(ANALYST_ONLY)).status == 200
        csrf = await csrf_of(client)
        assert (await client.post(ANALYST_ONLY, data={"csrf": csrf})).status == 200
        assert (await client.post(ANALYST_ONLY, data={})).status == 403

    run(tmp_path, test)


def test_signing_in_needs_the_forms_token(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        fields = {"user": "ana", "password": PASSWORD, "next": ""}
        # no token at all, a token without its cookie, and a token made up
        missing = await client.post("/console/login", data=fields, allow_redirects=False)
        token = await form_token(client)
        client.session.cookie_jar.clear()
        uncookied = await client.post(
            "/console/login", data=fields | {"csrf": token}, allow_redirects=False
        )
        forged = "1.nonce.signature"
        client.session.cookie_jar.update_cookies({"duanka_login": forged})
        made_up = await client.post(
            "/console/login", data=fields | {"csrf": forged}, allow_redirects=False
        )
        for response in (missing, uncookied, made_up):
            assert response.status == 403
            assert "duanka_session" not in response.cookies
            assert "sign in again" in await response.text()

    run(tmp_path, test)


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/console/?rule=sim_churn", "/console/?rule=sim_churn"),
        ("//evil.example/console/", "/console/"),
        ("http://evil.example/console/", "/console/"),
        ("/console/login", "/console/"),
    ],
)
def test_after_signing_in_only_a_local_page(tmp_path: Path, asked: str, sent_to: str) -> None:
    async def test(client: TestClient[Any, Any], _: Console) -> None:
        response = await sign_in(client, "ana", next_page=asked)
        assert (response.status, response.headers["Location"]) == (303, sent_to)

    run(tmp_path, test)


def test_a_user_added_while_the_worker_runs_can_sign_in(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], console: Console) -> None:
        assert (await sign_in(client, "late")).status == 401
        Users(console.users.path).add("late", PASSWORD, "viewer")  # as `duanka users add` does
        assert (await sign_in(client, "late")).status == 303
        assert (await client.get("/console/alerts.json")).status == 200

    run(tmp_path, test)


def test_a_new_password_or_removal_ends_the_users_sessions(tmp_path: Path) -> None:
    async def test(client: TestClient[Any, Any], console: Console) -> None:
        await sign_in(client, "ana")
        assert (await client.get("/console/alerts.json")).status == 200
        Users(console.users.path).set_password("ana", "another long password")
        assert (await client.get("/console/alerts.json")).status == 401
        assert (await sign_in(client, "ana", "another long password")).status == 303
        Users(console.users.path).remove("ana")
        assert (await client.get("/console/alerts.json")).status == 401
        assert len(console.auth.sessions) == 0

    run(tmp_path, test)


def test_the_workers_app_guards_its_console(tmp_path: Path) -> None:
    """The app `duanka worker` runs: its console too needs a session."""
    settings = settings_for(tmp_path)
    origins = frozenset({f"{settings.topics.sim_events}/0"})
    app, _ = create_app(settings, Pseudonymizer(DEV_KEY), origins)
    Users(settings.console.users_file).add("ana", PASSWORD, "analyst")

    async def main() -> None:
        async with client_of(app) as client:
            page = await client.get("/console/", allow_redirects=False)
            assert page.status == 303
            assert (await client.get("/console/alerts.json")).status == 401
            assert (await sign_in(client, "ana")).status == 303
            alerts = await client.get("/console/alerts.json")
            assert alerts.status == 200
            assert orjson.loads(await alerts.read())["total"] == 0

    asyncio.run(main())
