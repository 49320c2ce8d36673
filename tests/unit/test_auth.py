"""The console's users, sessions, throttle and CSRF tokens, without a server (stream/auth.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from argon2 import PasswordHasher

from stream.auth import (
    CONCURRENT_VERIFICATIONS,
    Auth,
    Session,
    Sessions,
    Throttle,
    User,
    Users,
    UsersError,
    login_page,
    login_template,
    safe_next,
)

PASSWORD = "correct horse battery"


def cheap(time_cost: int = 1) -> PasswordHasher:
    """argon2id with the least work: these tests are about what is verified, not its cost."""
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SpyHasher(PasswordHasher):
    """A hasher that notes every hash it verifies."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(str(hash))
        return super().verify(hash, password)


@pytest.fixture
def users(tmp_path: Path) -> Users:
    users = Users(tmp_path / "console" / "users.json", cheap())
    users.add("ana", PASSWORD, "analyst")
    return users


# ---------------------------------------------------------------- users


def test_the_right_password_gives_the_user_a_wrong_one_or_unknown_name_none(
    users: Users,
) -> None:
    user = users.verify("ana", PASSWORD)
    assert isinstance(user, User) and (user.name, user.role) == ("ana", "analyst")
    assert users.verify("ana", PASSWORD + "!") is None
    assert users.verify("nobody", PASSWORD) is None
    assert users.verify("ana", "") is None


def test_an_unknown_name_is_verified_against_a_dummy_hash(tmp_path: Path) -> None:
    spy = SpyHasher()
    users = Users(tmp_path / "users.json", spy)
    users.add("ana", PASSWORD, "analyst")
    assert users.verify("nobody", PASSWORD) is None
    assert users.verify("ana", "wrong password!") is None
    dummy, stored = spy.verified
    assert dummy == users.dummy_hash() and dummy.startswith("$argon2id$")
    assert stored == users.find("ana").hash  # type: ignore[union-attr]
    # the dummy is made with the same parameters as the users' hashes: it costs the same
    assert dummy.split("$")[3] == stored.split("$")[3]


def test_the_file_holds_hashes_not_passwords_and_is_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0)  # even so: only the owner may read it
    try:
        users = Users(tmp_path / "new" / "users.json", cheap())
        users.add("ana", PASSWORD, "analyst")
    finally:
        os.umask(old)
    path = users.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_bytes()
    assert PASSWORD.encode() not in raw
    document = orjson.loads(raw)
    assert document["schema"] == "duanka.console-users/1"
    row = document["users"]["ana"]
    assert row["role"] == "analyst" and row["hash"].startswith("$argon2id$")


def test_a_write_that_fails_leaves_the_file_as_it_was(
    users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = users.path.read_bytes()

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        users.add("bo", PASSWORD, "viewer")
    assert users.path.read_bytes() == before
    leftovers = {p.name for p in users.path.parent.iterdir()}
    assert leftovers == {"users.json", "users.json.lock"}  # no temporary file left


def test_a_change_by_another_process_is_read_on_the_next_look(users: Users) -> None:
    assert users.find("bo") is None
    cli = Users(users.path, cheap())  # as `duanka users add` would, in its own process
    cli.add("bo", PASSWORD, "viewer")
    assert users.find("bo") is not None
    assert users.verify("bo", PASSWORD) is not None
    cli.remove("bo")
    assert users.find("bo") is None


def test_no_file_no_users_and_a_broken_one_lets_nobody_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = Users(tmp_path / "users.json", cheap())
    assert users.all() == [] and users.find("ana") is None
    users.path.write_text("{not json")
    assert users.find("ana") is None
    assert "cannot read the users file" in caplog.text
    with pytest.raises(UsersError, match="not JSON"):
        users.all()
    users.path.write_text('{"schema": "duanka.console-users/1", "users": {"a": {"role": "x"}}}')
    with pytest.raises(UsersError, match="needs role, hash"):
        users.all()


def test_names_roles_and_short_passwords_are_refused(users: Users) -> None:
    with pytest.raises(UsersError, match="exists"):
        users.add("ana", PASSWORD, "viewer")
    with pytest.raises(UsersError, match="too short: at least 12"):
        users.add("bo", "eleven char", "viewer")
    with pytest.raises(UsersError, match="role must be one of analyst, viewer"):
        users.add("bo", PASSWORD, "admin")
    for name in ("", "-x", "a b", "a/b", "x" * 65):
        with pytest.raises(UsersError, match="user name"):
            users.add(name, PASSWORD, "viewer")
    with pytest.raises(UsersError, match="no console user"):
        users.remove("bo")
    with pytest.raises(UsersError, match="no console user"):
        users.set_password("bo", PASSWORD)
    assert [u.name for u in users.all()] == ["ana"]


def test_a_new_password_replaces_the_old_and_the_stamp(users: Users) -> None:
    before = users.find("ana")
    assert before is not None
    users.set_password("ana", "another long password")
    after = users.find("ana")
    assert after is not None and after.stamp != before.stamp and after.role == "analyst"
    assert users.verify("ana", PASSWORD) is None
    assert users.verify("ana", "another long password") is not None


def test_a_hash_made_with_older_parameters_is_made_again_on_sign_in(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    Users(path, cheap(time_cost=1)).add("ana", PASSWORD, "analyst")
    users = Users(path, cheap(time_cost=2))
    old = users.find("ana")
    assert old is not None and users.hasher.check_needs_rehash(old.hash)
    assert users.verify("ana", "wrong password!") is None
    assert users.find("ana") == old  # a wrong password changes nothing
    assert users.verify("ana", PASSWORD) is not None
    new = users.find("ana")
    assert new is not None and "t=2" in new.hash and not users.hasher.check_needs_rehash(new.hash)
    assert new.stamp == old.stamp  # the same password: sessions go on
    assert users.verify("ana", PASSWORD) is not None


# ---------------------------------------------------------------- sessions


def user(name: str = "ana", role: str = "analyst", stamp: str = "s1") -> User:
    return User(name, role, "$argon2id$...", "2026-12-01T00:00:00+00:00", stamp)


def test_a_session_ends_after_idling() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=1800, max_s=8 * 3600, clock=clock)
    session = sessions.create(user())
    assert len(session.token) >= 43 and len(session.csrf) >= 43 and session.token != session.csrf
    clock.now += 1799
    assert sessions.get(session.token) is session  # seen: the idle time starts again
    clock.now += 1799
    assert sessions.get(session.token) is session
    clock.now += 1800
    assert sessions.get(session.token) is None
    assert len(sessions) == 0


def test_a_session_ends_at_its_limit_however_busy() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=1800, max_s=8 * 3600, clock=clock)
    session = sessions.create(user())
    for _ in range(8 * 60 - 1):
        clock.now += 60
        assert sessions.get(session.token) is session
    clock.now += 60
    assert sessions.get(session.token) is None


def test_signing_out_ends_a_session_and_tokens_are_unguessable() -> None:
    sessions = Sessions(idle_s=60, max_s=600, clock=Clock())
    one, two = sessions.create(user()), sessions.create(user())
    assert one.token != two.token and one.csrf != two.csrf
    sessions.end(one.token)
    assert sessions.get(one.token) is None and sessions.get(two.token) is two
    assert sessions.get("") is None and sessions.get("guess") is None


def test_sessions_are_bounded_the_expired_then_the_oldest_go_first() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=60, max_s=600, clock=clock, cap=3)
    old = sessions.create(user())
    clock.now += 61
    kept = [sessions.create(user()) for _ in range(3)]  # the expired one made room
    assert len(sessions) == 3 and sessions.get(old.token) is None
    newest = sessions.create(user())
    assert len(sessions) == 3
    assert sessions.get(kept[0].token) is None
    assert all(sessions.get(s.token) is s for s in (*kept[1:], newest))


def test_roles() -> None:
    analyst = Session("t", "ana", "analyst", "c", 0.0, 0.0, "s")
    viewer = Session("t", "vic", "viewer", "c", 0.0, 0.0, "s")
    assert analyst.may(None) and analyst.may("viewer") and analyst.may("analyst")
    assert viewer.may(None) and viewer.may("viewer") and not viewer.may("analyst")


# ---------------------------------------------------------------- throttle


def test_after_three_failures_the_wait_doubles_up_to_30_s() -> None:
    throttle = Throttle(clock=Clock())
    waits = []
    for _ in range(12):
        waits.append(throttle.delay("ana", "10.0.0.1"))
        throttle.fail("ana", "10.0.0.1")
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_failures_count_per_name_and_per_address() -> None:
    throttle = Throttle(clock=Clock())
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.fail("ana", address)
    assert throttle.delay("ana", "10.0.0.9") == 1  # one name from many addresses
    for name in ("a", "b", "c", "d"):
        throttle.fail(name, "10.0.0.7")
    assert throttle.delay("someone", "10.0.0.7") == 2  # many names from one address
    assert throttle.delay("someone", "10.0.0.8") == 0


def test_a_sign_in_clears_the_names_failures_not_the_addresss() -> None:
    throttle = Throttle(clock=Clock())
    for _ in range(4):
        throttle.fail("ana", "10.0.0.1")
    throttle.succeed("ana")
    assert throttle.delay("ana", "10.0.0.2") == 0
    assert throttle.delay("bo", "10.0.0.1") == 2


def test_failures_leave_the_window() -> None:
    clock = Clock()
    throttle = Throttle(window_s=900, clock=clock)
    for _ in range(3):
        throttle.fail("ana", "10.0.0.1")
        clock.now += 200
    assert throttle.delay("ana", "10.0.0.1") == 1
    clock.now += 300  # the first failure is now 900 s old
    assert throttle.delay("ana", "10.0.0.1") == 0
    clock.now += 900
    assert throttle.failures("user", "ana") == 0 and len(throttle) < 2


def test_the_throttle_remembers_a_bounded_number_of_names_and_addresses() -> None:
    clock = Clock()
    throttle = Throttle(max_keys=100, clock=clock)
    for n in range(10_000):
        throttle.fail(f"guess-{n}" + "x" * 500, f"10.{n // 256 % 256}.{n % 256}.1")
        clock.now += 0.01
    assert len(throttle) <= 100
    assert all(len(key[1]) <= 64 for key in throttle._failures)
    # the most recent are the ones kept
    assert throttle.failures("address", "10.39.15.1") == 1


# ---------------------------------------------------------------- signing in


def auth_for(users: Users, clock: Clock) -> tuple[Auth, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sessions = Sessions(idle_s=1800, max_s=8 * 3600, clock=clock)
    return Auth(users, sessions, Throttle(clock=clock), sleep=sleep), slept


def test_repeated_failures_wait_and_log_neither_password_nor_unknown_name(
    users: Users, caplog: pytest.LogCaptureFixture
) -> None:
    auth, slept = auth_for(users, Clock())
    caplog.set_level(logging.INFO, logger="duanka.console")

    async def attempts() -> list[User | None]:
        tries = [("ana", "first wrong one")] * 3 + [("mallory-typed", "second wrong one")] * 2
        results = [await auth.sign_in(name, password, "192.0.2.7") for name, password in tries]
        return [*results, await auth.sign_in("ana", PASSWORD, "192.0.2.7")]

    results = asyncio.run(attempts())
    assert results[:5] == [None] * 5 and results[5] is not None
    assert slept == [1, 2, 4]  # the 4th, 5th and 6th attempts from that address
    assert "wrong one" not in caplog.text and PASSWORD not in caplog.text
    assert "mallory" not in caplog.text
    assert caplog.text.count("unknown user or wrong password from 192.0.2.7") == 2
    assert caplog.text.count("wrong password for ana from 192.0.2.7") == 3
    assert "ana signed in (analyst) from 192.0.2.7" in caplog.text
    assert auth.throttle.failures("user", "ana") == 0
    assert CONCURRENT_VERIFICATIONS == 1


def request(headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request("POST", "/console/logout", headers=headers or {})


def test_csrf_the_sessions_token_from_the_header_or_the_form(users: Users) -> None:
    auth, _ = auth_for(users, Clock())
    user = users.find("ana")
    assert user is not None
    session, other = auth.sessions.create(user), auth.sessions.create(user)
    assert auth.check_csrf(session, request({"X-CSRF-Token": session.csrf}))
    assert auth.check_csrf(session, request(), {"csrf": session.csrf})
    assert not auth.check_csrf(session, request())
    assert not auth.check_csrf(session, request(), {"csrf": ""})
    assert not auth.check_csrf(session, request({"X-CSRF-Token": other.csrf}))
    assert not auth.check_csrf(session, request(), {"csrf": session.csrf[:-1]})
    assert not auth.check_csrf(session, request(), {"csrf": session.token})


def test_the_sign_in_forms_token_is_signed_and_expires(users: Users) -> None:
    clock = Clock()
    auth, _ = auth_for(users, clock)
    token = auth.login_token()
    assert auth.login_token_ok(token)
    issued, nonce, signature = token.split(".")
    assert not auth.login_token_ok(f"{issued}.{nonce}x.{signature}")
    assert not auth.login_token_ok(f"{int(issued) + 1}.{nonce}.{signature}")
    assert not auth.login_token_ok("")
    assert not auth_for(users, clock)[0].login_token_ok(token)  # another worker's key
    clock.now += 3601
    assert not auth.login_token_ok(token)


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/console/", "/console/"),
        ("/console/?rule=sim_churn&severity=high", "/console/?rule=sim_churn&severity=high"),
        ("/console/cases/42", "/console/cases/42"),
        (None, "/console/"),
        ("", "/console/"),
        ("//evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("http://evil.example/console/", "/console/"),
        ("https://127.0.0.1:6066/console/", "/console/"),
        ("/\\evil.example", "/console/"),
        ("/console/\\..\\", "/console/"),
        ("/console/\r\nSet-Cookie: x", "/console/"),
        ("/console/ x", "/console/"),
        ("javascript:alert(1)", "/console/"),
        ("/metrics", "/console/"),
        ("/console/login", "/console/"),
        ("/console/login?next=//evil.example", "/console/"),
    ],
)
def test_after_signing_in_only_a_console_page_of_this_server(
    asked: str | None, goes_to: str
) -> None:
    assert safe_next(asked) == goes_to


def test_the_sign_in_page_has_no_script_and_a_policy_for_its_style() -> None:
    page, policy = login_template()
    assert "<script" not in page and not re.search(r"https?:|@import|url\(", page)
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}';" in policy
    assert "default-src 'none'" in policy and "form-action 'self'" in policy
    assert "unsafe-inline" not in policy


def test_the_sign_in_page_escapes_what_it_shows() -> None:
    body = login_page('tok"en', '/console/?q="><b>x</b>', "a <b>message</b>").decode()
    assert 'value="tok&quot;en"' in body
    assert 'value="/console/?q=&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in body
    assert '<p id="message" role="alert">a &lt;b&gt;message&lt;/b&gt;</p>' in body
    assert 'id="message"' not in login_page("t", "/console/").decode()
