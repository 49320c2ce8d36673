"""Signing in to the police console: its users, their sessions, and the guard of its pages.

`Users` keeps the console's users in a JSON file (`console.users_file`,
written by `duanka users`): per user a role and an argon2id password hash.
`Sessions` are in memory, per worker process: a session belongs to the
worker that made it, so several workers behind one load balancer need
sticky sessions. `Throttle` slows repeated failed sign-ins down. `Auth`
puts them together, and `install_auth` adds to the Faust app:

    GET  /console/login     the sign-in form (stream/static/login.html)
    POST /console/login     user, password, csrf, next: 303 to `next`, or 401 and the form again
    POST /console/logout    ends the session
    GET  /console/me.json   the session's user, role and CSRF token, for the page's script

and a guard in front of everything else under /console/: no session, no
page (303 to the sign-in form) and no API (401); no CSRF token, no POST (403).
CSRF: a synchronizer token per session, sent back in the form field `csrf`
or the header `X-CSRF-Token`; before there is a session, the sign-in form
carries a signed double-submit token (the same value in a cookie and in the
form, signed with a key of this process). docs/security.md says more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import html
import logging
import os
import re
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rules.config import ConsoleSettings, Settings
from rules.errors import DuankaError

log = logging.getLogger("duanka.console")

SCHEMA = "duanka.console-users/1"
# what each role may do; a role that may do all another may passes the other's guard
ROLES = {"viewer": frozenset({"read"}), "analyst": frozenset({"read", "dispose"})}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024

SESSION_COOKIE = "duanka_session"
LOGIN_COOKIE = "duanka_login"
COOKIE_PATH = "/console"
LOGIN_PATH = "/console/login"
LOGOUT_PATH = "/console/logout"
ME_PATH = "/console/me.json"
HOME = "/console/"
LOGIN_FORM_S = 3600  # how long a sign-in form may stay open
FAILED = "unknown user or wrong password"
EXPIRED = "the sign-in form had expired: sign in again"

MAX_SESSIONS = 10_000
# failed sign-ins: counted over this window; the first FREE_FAILURES cost
# nothing, each one after doubles the wait, from FIRST_DELAY_S up to MAX_DELAY_S
FAILURE_WINDOW_S = 15 * 60
FREE_FAILURES = 3
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
MAX_TRACKED = 10_000  # user names and addresses with failures remembered
# argon2 takes a core and 64 MiB for half a second: one at a time, so that a
# flood of sign-ins cannot starve the screening that shares the event loop's process
CONCURRENT_VERIFICATIONS = 1

LOGIN_PAGE = "static/login.html"
LOGIN_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
}
# on every answer under /console/ (a page's own Content-Security-Policy is kept)
CONSOLE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class UsersError(DuankaError):
    """A console user, password or users file that cannot be used."""


def password_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's second recommended option)."""
    return PasswordHasher()


# ---------------------------------------------------------------- users


@dataclass(frozen=True, slots=True)
class User:
    """A console user as the users file holds it.

    `stamp` changes with the password: a session made before the change ends.
    """

    name: str
    role: str
    hash: str = field(repr=False)
    changed_at: str
    stamp: str

    def row(self) -> dict[str, str]:
        return {
            "role": self.role,
            "hash": self.hash,
            "changed_at": self.changed_at,
            "stamp": self.stamp,
        }


class Users:
    """The console's users, in a JSON file read again whenever it changes.

    Changes are written to a temporary file (mode 0600) that then replaces
    the file, under a lock, so a reader sees the old file or the new one and
    two writers do not lose each other's change.
    """

    def __init__(self, path: Path | str, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.hasher = hasher or password_hasher()
        self._users: dict[str, User] = {}
        self._signature: tuple[int, int, int] | None = None
        self._dummy: str | None = None

    # reading

    def find(self, name: str) -> User | None:
        """The user `name` as the file says now; None if there is none (or no usable file)."""
        try:
            return self._current().get(name)
        except UsersError as error:
            log.error("console: cannot read the users file: %s", error)
            return None

    def all(self) -> list[User]:
        """Every user, by name (an unusable file raises UsersError)."""
        return sorted(self._current().values(), key=lambda u: u.name)

    def _current(self) -> dict[str, User]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._users, self._signature = {}, None
            return self._users
        except OSError as error:
            raise UsersError(f"{self.path}: {error.strerror}") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature != self._signature:
            users = self._read()
            self._users, self._signature = users, signature
        return self._users

    def _read(self) -> dict[str, User]:
        try:
            document = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise UsersError(f"{self.path}: {error.strerror}") from None
        except orjson.JSONDecodeError:
            raise UsersError(f"{self.path} is not JSON") from None
        return _parse(document, self.path)

    # verifying

    def verify(self, name: str, password: str) -> User | None:
        """The user if `password` is theirs, else None; an unknown name costs the same.

        An unknown name is verified against a dummy hash made with the same
        parameters, so neither the time nor the answer tells it from a wrong
        password. A hash made with older parameters is made again.
        """
        user = self.find(name)
        hashed = user.hash if user is not None else self.dummy_hash()
        try:
            self.hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        if self.hasher.check_needs_rehash(user.hash):
            self._rehash(user, password)
        return user

    def dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(24))
        return self._dummy

    def _rehash(self, user: User, password: str) -> None:
        def rehash(users: dict[str, User]) -> None:
            now = users.get(user.name)
            if now is not None and now.stamp == user.stamp:  # the same password still
                users[user.name] = User(
                    now.name, now.role, self.hasher.hash(password), now.changed_at, now.stamp
                )

        try:
            self._change(rehash)
        except (OSError, UsersError) as error:
            log.warning("console: could not store a new hash for %s: %s", user.name, error)

    # changing

    def add(self, name: str, password: str, role: str) -> User:
        """A new user; UsersError for a name taken or invalid, an unknown role, a short password."""
        check_name(name)
        if role not in ROLES:
            raise UsersError(f"role must be one of {', '.join(sorted(ROLES))}, not {role!r}")
        user = self._new(name, role, password)

        def add(users: dict[str, User]) -> None:
            if name in users:
                raise UsersError(f"user {name} exists (duanka users passwd {name} sets a password)")
            users[name] = user

        self._change(add)
        return user

    def set_password(self, name: str, password: str) -> User:
        """Give `name` a new password; their sessions end on every worker's next request."""
        current = self._existing(name)
        user = self._new(name, current.role, password)

        def change(users: dict[str, User]) -> None:
            if name not in users:
                raise UsersError(f"no console user {name}")
            users[name] = user

        self._change(change)
        return user

    def remove(self, name: str) -> None:
        def remove(users: dict[str, User]) -> None:
            if users.pop(name, None) is None:
                raise UsersError(f"no console user {name}")

        self._change(remove)

    def _existing(self, name: str) -> User:
        user = self._current().get(name)
        if user is None:
            raise UsersError(f"no console user {name}")
        return user

    def _new(self, name: str, role: str, password: str) -> User:
        check_password(password)
        changed_at = datetime.now(UTC).isoformat(timespec="seconds")
        return User(name, role, self.hasher.hash(password), changed_at, secrets.token_hex(8))

    def _change(self, change: Callable[[dict[str, User]], None]) -> None:
        """Read, change and write the file as one step, under the users file's lock."""
        with self._locked():
            users = self._read()
            change(users)
            write_atomically(self.path, users_document(users))
        self._signature = None  # read it again next time

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise UsersError(
            "a user name is 1 to 64 letters, digits and . _ @ - (starting with a letter or digit)"
        )


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsersError(f"the password is too long: at most {MAX_PASSWORD} characters")


def users_document(users: Mapping[str, User]) -> dict[str, Any]:
    return {"schema": SCHEMA, "users": {name: users[name].row() for name in sorted(users)}}


def _parse(document: Any, path: Path) -> dict[str, User]:
    rows = document.get("users") if isinstance(document, dict) else None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise UsersError(f"{path} is not a {SCHEMA} document")
    if not isinstance(rows, dict):
        raise UsersError(f"{path}: users must be an object")
    users = {}
    for name, row in rows.items():
        fields = ("role", "hash", "changed_at", "stamp")
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in fields):
            raise UsersError(f"{path}: user {name!r} needs {', '.join(fields)} as strings")
        if row["role"] not in ROLES:
            raise UsersError(f"{path}: user {name!r} has the unknown role {row['role']!r}")
        users[name] = User(name, row["role"], row["hash"], row["changed_at"], row["stamp"])
    return users


def write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Write `document` as JSON to `path` (mode 0600): all of it or, on any failure, none."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


# ---------------------------------------------------------------- sessions


@dataclass(slots=True)
class Session:
    """A signed-in browser: its cookie's token, who, and the CSRF token its POSTs carry."""

    token: str = field(repr=False)
    user: str
    role: str
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    stamp: str = field(repr=False)  # the user's password when signed in

    def may(self, role: str | None) -> bool:
        """Whether this session's role may do all that `role` may (None: any signed-in user)."""
        return role is None or ROLES[role] <= ROLES.get(self.role, frozenset())


class Sessions:
    """The sessions of this worker process, in memory: gone with the process.

    A session ends `idle_s` after its last request, `max_s` after it began,
    or when its user signs out. At most `cap` are kept: past it, the expired
    go first, then the oldest.
    """

    def __init__(
        self, idle_s: float, max_s: float, clock: Clock = time.monotonic, cap: int = MAX_SESSIONS
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self.cap = cap
        self._sessions: dict[str, Session] = {}

    def create(self, user: User) -> Session:
        now = self.clock()
        if len(self._sessions) >= self.cap:
            self._prune(now)
        token = secrets.token_urlsafe(32)
        session = Session(
            token, user.name, user.role, secrets.token_urlsafe(32), now, now, user.stamp
        )
        self._sessions[token] = session
        return session

    def get(self, token: str) -> Session | None:
        """The live session of `token`, seen now; None if there is none or it expired."""
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def end(self, token: str) -> None:
        self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen >= self.idle_s or now - session.created >= self.max_s

    def _prune(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]
        while len(self._sessions) >= self.cap:  # the oldest first: a dict keeps creation order
            del self._sessions[next(iter(self._sessions))]
            log.warning("console: %d sessions: ended the oldest", self.cap)


# ---------------------------------------------------------------- throttle


class Throttle:
    """Failed sign-ins per user name and per client address, over a sliding window.

    After `free` failures of either within `window_s`, each further attempt
    waits `first_s`, then twice as long each time, up to `cap_s`. A sign-in
    clears its user name's failures (not its address's: one's own account
    must not wash out guesses at others'). At most `max_keys` names and
    addresses are remembered, those failing most recently.
    """

    def __init__(
        self,
        window_s: float = FAILURE_WINDOW_S,
        free: int = FREE_FAILURES,
        first_s: float = FIRST_DELAY_S,
        cap_s: float = MAX_DELAY_S,
        max_keys: int = MAX_TRACKED,
        clock: Clock = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.free = free
        self.first_s = first_s
        self.cap_s = cap_s
        self.max_keys = max_keys
        self.clock = clock
        # (kind, name or address) -> the times of its failures, oldest first
        self._failures: dict[tuple[str, str], deque[float]] = {}
        # past this many failures the wait is at its cap: no need to remember more
        self._kept = free + max(1, int(cap_s / first_s).bit_length()) + 1

    def delay(self, user: str, address: str) -> float:
        """How long to wait before answering this attempt."""
        failures = max(self.failures("user", user), self.failures("address", address))
        if failures < self.free:
            return 0.0
        return float(min(self.first_s * 2 ** (failures - self.free), self.cap_s))

    def fail(self, user: str, address: str) -> int:
        """Count a failure; how many the user name has had in the window, this one included."""
        self._add(("address", address))
        return self._add(("user", _user_key(user)))

    def succeed(self, user: str) -> None:
        self._failures.pop(("user", _user_key(user)), None)

    def failures(self, kind: str, name: str) -> int:
        key = (kind, _user_key(name) if kind == "user" else name)
        times = self._failures.get(key)
        if times is None:
            return 0
        self._expire(times, self.clock())
        if not times:
            del self._failures[key]
        return len(times)

    def __len__(self) -> int:
        return len(self._failures)

    def _add(self, key: tuple[str, str]) -> int:
        now = self.clock()
        times = self._failures.pop(key, None) or deque(maxlen=self._kept)
        self._expire(times, now)
        times.append(now)
        self._failures[key] = times  # last in the dict: the most recent failure
        if len(self._failures) > self.max_keys:
            self._prune(now)
        return len(times)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and now - times[0] >= self.window_s:
            times.popleft()

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if now - t[-1] >= self.window_s]:
            del self._failures[key]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]


def _user_key(name: str) -> str:
    return name[:64]  # longer names exist nowhere: they need not take more memory


# ---------------------------------------------------------------- pages


def safe_next(target: str | None) -> str:
    """Where to go after signing in: `target` if it is a console page of this server, else home."""
    if not target or not target.startswith(HOME) or "\\" in target:
        return HOME
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith(LOGIN_PATH):
        return HOME
    return target


@cache
def login_template() -> tuple[str, str]:
    """The sign-in page's HTML, and a policy that lets only its inline style apply.

    The page has no script. Its form may post only to this server.
    """
    page = (Path(__file__).parent / LOGIN_PAGE).read_text(encoding="utf-8")
    styles = re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    if len(styles) != 1 or "<script" in page:
        raise ValueError(f"{LOGIN_PAGE} must hold one inline <style> and no script")
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    policy = (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return page, policy


def login_page(csrf: str, target: str, message: str = "") -> bytes:
    page, _ = login_template()
    shown = f'<p id="message" role="alert">{html.escape(message)}</p>' if message else ""
    return (
        page.replace("{{csrf}}", html.escape(csrf))
        .replace("{{next}}", html.escape(target))
        .replace("<!--message-->", shown)
        .encode()
    )


def _json(payload: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _login_url(request: web.Request) -> str:
    return f"{LOGIN_PATH}?next={quote(request.path_qs, safe='')}"


def _under_console(path: str) -> bool:
    return path == COOKIE_PATH or path.startswith(HOME)


async def add_console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The headers every answer under /console/ carries, unless it set its own."""
    if _under_console(request.path):
        for name, value in CONSOLE_HEADERS.items():
            response.headers.setdefault(name, value)


# ---------------------------------------------------------------- the facade

# where a request keeps its session once looked up: once per request, however many guards ask
_SESSION: web.RequestKey[Session | None] = web.RequestKey("duanka_session", Session)


class Auth:
    """Users, sessions and the throttle, and the console's pages that sign in and out."""

    def __init__(
        self,
        users: Users,
        sessions: Sessions,
        throttle: Throttle | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.throttle = throttle or Throttle(clock=sessions.clock)
        self._sleep = sleep
        self._key = secrets.token_bytes(32)  # signs this process's sign-in forms
        self._verifying = asyncio.Semaphore(CONCURRENT_VERIFICATIONS)

    @classmethod
    def from_settings(cls, console: ConsoleSettings) -> Auth:
        return cls(Users(console.users_file), Sessions(console.idle_s, console.session_s))

    # the guard

    def session(self, request: web.Request) -> Session | None:
        """The request's live session, if its cookie names one and its user's password stands."""
        if _SESSION in request:
            return request[_SESSION]
        session = self._look_up(request.cookies.get(SESSION_COOKIE, ""))
        request[_SESSION] = session
        return session

    def _look_up(self, token: str) -> Session | None:
        session = self.sessions.get(token) if token else None
        if session is None:
            return None
        user = self.users.find(session.user)
        if user is None or user.stamp != session.stamp:  # removed, or a new password
            self.sessions.end(token)
            return None
        session.role = user.role
        return session

    def page_guard(self, request: web.Request) -> web.Response | None:
        """None if a user is signed in; else the answer to send: 303 to the sign-in form."""
        if self.session(request) is not None:
            return None
        return _redirect(_login_url(request))

    def api_guard(self, request: web.Request, role: str | None = None) -> web.Response | None:
        """None if a user is signed in with `role` (or more); else a 401 or 403 to send."""
        session = self.session(request)
        if session is None:
            return _json({"error": "sign in"}, 401)
        if not session.may(role):
            return _json({"error": f"this needs the {role} role"}, 403)
        return None

    def check_csrf(
        self, session: Session, request: web.Request, form: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether the request carries `session`'s CSRF token (X-CSRF-Token, or field csrf)."""
        given = request.headers.get("X-CSRF-Token") or _field(form or {}, "csrf")
        return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())

    def middleware(self) -> Any:
        """An aiohttp middleware: nothing under /console/ but the sign-in form without a session,
        no POST there without the session's CSRF token. The pages' own guards stay: this one
        catches a page that forgets its guard."""

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            if not _under_console(request.path) or request.path == LOGIN_PATH:
                return await handler(request)
            session = self.session(request)
            if session is None:
                if request.method in SAFE_METHODS and not request.path.endswith(".json"):
                    return _redirect(_login_url(request))
                return _json({"error": "sign in"}, 401)
            if request.method not in SAFE_METHODS:
                form = await request.post() if request.content_type in FORMS else None
                if not self.check_csrf(session, request, form):
                    return _json({"error": "missing or wrong csrf token"}, 403)
            return await handler(request)

        return guard

    # signing in and out

    async def sign_in(self, name: str, password: str, address: str) -> User | None:
        """The user if the password is theirs, after the throttle's wait; logs no password."""
        delay = self.throttle.delay(name, address)
        if delay > 0:
            await self._sleep(delay)
        async with self._verifying:  # argon2 in a thread: the event loop goes on
            user = await asyncio.to_thread(self.users.verify, name, password)
        if user is not None:
            self.throttle.succeed(name)
            log.info("console: %s signed in (%s) from %s", user.name, user.role, address)
            return user
        failures = self.throttle.fail(name, address)
        if self.users.find(name) is None:  # a name typed, maybe a password: not logged
            log.warning("console: unknown user or wrong password from %s", address)
        else:
            log.warning(
                "console: wrong password for %s from %s (%d in %d min)",
                name,
                address,
                failures,
                self.throttle.window_s // 60,
            )
        return None

    def login_token(self) -> str:
        """A token for one sign-in form: issued when, a nonce, and this process's signature."""
        body = f"{int(self.sessions.clock())}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def login_token_ok(self, token: str) -> bool:
        body, _, signature = token.rpartition(".")
        issued = body.partition(".")[0]
        if not (signature and issued.isdigit()):
            return False
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return False
        return 0 <= self.sessions.clock() - int(issued) <= LOGIN_FORM_S

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, b"login." + body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    # the pages

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        """GET /console/login: the form, with a fresh token in it and in a cookie."""
        target = safe_next(request.query.get("next"))
        if self.session(request) is not None:
            return _redirect(target)
        return self._form(request, target, "", 200, self.login_token(), new=True)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST /console/login: 303 to `next` with a new session, or the form again."""
        form = await request.post()
        target = safe_next(_field(form, "next"))
        token = _field(form, "csrf")
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not (
            self.login_token_ok(token) and hmac.compare_digest(token.encode(), cookie.encode())
        ):
            return self._form(request, target, EXPIRED, 403, self.login_token(), new=True)
        address = request.remote or "unknown"
        user = await self.sign_in(_field(form, "user"), _field(form, "password"), address)
        if user is None:
            # the same token again: the answer is the same for any wrong name and password
            return self._form(request, target, FAILED, 401, token)
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            self.sessions.end(old)
        session = self.sessions.create(user)
        response = _redirect(target)
        response.set_cookie(SESSION_COOKIE, session.token, **_cookie(request))
        response.del_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """POST /console/logout (with the CSRF token): end the session, 303 to the form."""
        session = self.session(request)
        if session is None:
            return _json({"error": "sign in"}, 401)
        form = await request.post() if request.content_type in FORMS else None
        if not self.check_csrf(session, request, form):
            return _json({"error": "missing or wrong csrf token"}, 403)
        self.sessions.end(session.token)
        log.info("console: %s signed out", session.user)
        response = _redirect(LOGIN_PATH)
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    async def me(self, request: web.Request) -> web.StreamResponse:
        """GET /console/me.json: who is signed in, and the token their page's POSTs carry."""
        refused = self.api_guard(request)
        session = self.session(request)
        if refused is not None or session is None:
            return refused or _json({"error": "sign in"}, 401)
        return _json({"user": session.user, "role": session.role, "csrf": session.csrf}, 200)

    def _form(
        self,
        request: web.Request,
        target: str,
        message: str,
        status: int,
        token: str,
        new: bool = False,
    ) -> web.Response:
        """The sign-in form carrying `token`; a `new` one is also set as its cookie."""
        _, policy = login_template()
        response = web.Response(
            body=login_page(token, target, message),
            status=status,
            headers={**LOGIN_HEADERS, "Content-Security-Policy": policy},
        )
        if new:
            response.set_cookie(
                LOGIN_COOKIE, token, max_age=LOGIN_FORM_S, **_cookie(request, LOGIN_PATH)
            )
        return response


def _cookie(request: web.Request, path: str = COOKIE_PATH) -> dict[str, Any]:
    # Secure only over https: the worker normally serves plain http on loopback
    return {"path": path, "httponly": True, "samesite": "Strict", "secure": request.secure}


def install_auth(app: Any, settings: Settings) -> Auth:
    """Add signing in and out, and the guard of everything under /console/, to a Faust app."""
    import faust

    auth = Auth.from_settings(settings.console)
    app.web.web_app.middlewares.append(auth.middleware())
    app.web.web_app.on_response_prepare.append(add_console_headers)

    class LoginView(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            return await auth.login_form(request)

        async def post(self, request: web.Request) -> web.StreamResponse:
            return await auth.login(request)

    class LogoutView(faust.web.View):
        async def post(self, request: web.Request) -> web.StreamResponse:
            return await auth.logout(request)

    class MeView(faust.web.View):
        async def get(self, request: web.Request) -> web.StreamResponse:
            return await auth.me(request)

    app.page(LOGIN_PATH)(LoginView)
    app.page(LOGOUT_PATH)(LogoutView)
    app.page(ME_PATH)(MeView)

    @app.task
    async def prepare_sign_in() -> None:
        # the dummy hash now, so that the first unknown name costs no more than the next
        await asyncio.to_thread(auth.users.dummy_hash)
        try:
            if not auth.users.all():
                log.warning(
                    "console: no users in %s: nobody can sign in "
                    "(duanka users add NAME --role analyst)",
                    auth.users.path,
                )
        except UsersError as error:
            log.error("console: cannot read the users file: %s", error)

    return auth
