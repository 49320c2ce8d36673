"""The demo's police step: an analyst signs in, confirms the ring's case, and the bar holds.

After the province's events have gone through, the demo acts as a police
analyst would, through the console's own pages (stream/casepages.py): it
signs in as `demo-analyst` (made for the run, with a password printed, not
stored anywhere else), finds the case of the ring the simulator planted,
confirms its gang alert, and confirms one member's alert with a punishment.
Then it asks the pre-opening check about that person's next opening, which
the punishment refuses (`watchlist_hit`), and sends the opening anyway, as a
counter that ignored the answer would: the stream flags it.
"""

from __future__ import annotations

import html
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import orjson

from rules.config import Settings
from rules.errors import DuankaError
from rules.event import CHECK_SCHEMA
from rules.pseudonym import Pseudonymizer, mask_id
from stream.auth import Users

ANALYST = "demo-analyst"
WAIT_S = 90.0


def say(text: str = "") -> None:
    print(text, flush=True)


class PoliceStepFailed(DuankaError):
    """The police step of the demo did not show what it should."""


def demo_analyst(settings: Settings) -> str:
    """Make (or reset) the demo's analyst in the console's users file; the new password."""
    password = secrets.token_urlsafe(12)
    users = Users(settings.console.users_file)
    if users.find(ANALYST) is None:
        users.add(ANALYST, password, "analyst")
    else:
        users.set_password(ANALYST, password)
    return password


class Console:
    """The police console, signed in through its sign-in form (cookies kept)."""

    def __init__(self, settings: Settings) -> None:
        worker = settings.worker
        self.base = f"http://{worker.web_host}:{worker.web_port}"
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def sign_in(self, user: str, password: str) -> None:
        login = f"{self.base}/console/login"
        with self.opener.open(login, timeout=10) as response:
            token = re.search(r'name="csrf" value="([^"]+)"', response.read().decode())
        if token is None:
            raise PoliceStepFailed("the console's sign-in form has no CSRF token")
        fields = {"user": user, "password": password, "csrf": html.unescape(token[1])}
        try:
            self.post("/console/login", fields)
        except urllib.error.HTTPError as error:
            raise PoliceStepFailed(f"signing in as {user} failed ({error.code})") from None

    def json(self, path: str) -> Any:
        with self.opener.open(self.base + path, timeout=10) as response:
            return orjson.loads(response.read())

    def post(self, path: str, fields: Mapping[str, str]) -> None:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.base + path, data=data, timeout=10):
            pass  # a 303 to a page, which urllib follows

    def dispose(self, case_id: str, alert_id: str, **fields: str) -> None:
        csrf = self.json("/console/me.json")["csrf"]
        self.post(
            "/console/dispose",
            {"csrf": csrf, "case_id": case_id, "alert_id": alert_id, **fields},
        )


def wait_for(what: str, found: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PoliceStepFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(1.0)


def ring_case(console: Console) -> dict[str, Any] | None:
    """The planted ring's case: a gang alert and the people it links, the most alerts first."""
    listed = console.json("/console/cases.json")["cases"]
    rings = [
        c
        for c in listed
        if c["rules"].get("gang_batch_open") and c["rules"].get("sim_nonlocal_not_in_person")
    ]
    if not rings:
        return None
    best = max(rings, key=lambda c: c["alert_count"])
    doc: dict[str, Any] = console.json(f"/console/case.json?id={best['case_id']}")
    return doc


@dataclass
class Punished:
    id_number: str
    masked: str
    alert_id: str


def check_answer(settings: Settings, opening: dict[str, Any]) -> dict[str, Any] | None:
    worker = settings.worker
    url = f"http://{worker.web_host}:{worker.web_port}/v1/check"
    body = {k: v for k, v in opening.items() if k != "event_id"}
    body |= {"schema": CHECK_SCHEMA, "check_id": f"police-demo-{time.monotonic_ns()}"}
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
            return answer
    except (urllib.error.HTTPError, OSError):
        return None


def next_opening(events: Path, id_number: str) -> dict[str, Any]:
    """The person's next SIM at a counter: a day after the simulation's last event."""
    last: dict[str, Any] | None = None
    counter: dict[str, Any] | None = None
    for line in events.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if type(event) is not dict or "occurred_at" not in event:
            continue
        last = event
        if event.get("channel") == "counter" and event.get("event_type") == "sim.activate":
            counter = event
    if last is None or counter is None:
        raise PoliceStepFailed("the simulated events have no opening at a counter")
    when = datetime.fromisoformat(last["occurred_at"]) + timedelta(days=1)
    opening = {
        key: counter[key]
        for key in ("schema", "source", "region_code", "outlet_id", "agent_id", "channel")
    }
    return opening | {
        "event_id": f"{counter['source']}-police-demo-{when:%Y%m%d}",
        "event_type": "sim.activate",
        "occurred_at": when.isoformat(),
        "id_type": "resident_id",
        "id_number": id_number,
        "verification": "in_person",
        "msisdn": f"147{secrets.randbelow(10**8):08d}",
        "sim_kind": "personal",
    }


def police_step(
    settings: Settings,
    events: Path,
    pseudonymizer: Pseudonymizer,
    send_event: Callable[[dict[str, Any]], None],
    flagged: Callable[[str], bool],
) -> None:
    """Sign in, confirm the ring, punish one member; show the check refuse and the stream flag."""
    password = demo_analyst(settings)
    url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/console/"
    say(f"\nthe police's side: {url}cases")
    say(f"  sign in as {ANALYST} with the password {password} (made for this run)")
    console = Console(settings)
    console.sign_in(ANALYST, password)
    case = wait_for("the planted ring's case in the console", lambda: ring_case(console))
    people = sum(1 for e in case["entities"] if e["kind"] == "identity")
    shared = [e["kind"] for e in case["entities"] if e["kind"] in ("device", "address")]
    say(
        f"  {ANALYST} signed in; case {case['case_id']}: {case['alert_count']} alerts, "
        f"{people} people sharing {' and '.join(sorted(set(shared))) or 'nothing'}"
    )
    gang = next(a for a in case["alerts"] if a["rule_id"] == "gang_batch_open")
    member = next(a for a in case["alerts"] if a["rule_id"] == "sim_nonlocal_not_in_person")
    console.dispose(case["case_id"], gang["alert_id"], status="confirmed", note="ring confirmed")
    since = date.fromisoformat(member["event_time"][:10])
    until = since.replace(year=since.year + 2)
    console.dispose(
        case["case_id"],
        member["alert_id"],
        status="confirmed",
        punish_scope="telecom",
        since=since.isoformat(),
        until=until.isoformat(),
        basis="2024 joint punishment: lending cards",
        note="opened a SIM for the ring",
    )
    masked = member["subject"].get("id_masked", "")
    say(
        f"  confirmed the gang alert, and {masked}'s alert with a punishment "
        f"(telecom, {since} to {until})"
    )
    id_number = _id_of(events, pseudonymizer, member["subject"]["key"])
    opening = next_opening(events, id_number)

    def refused() -> dict[str, Any] | None:
        answer = check_answer(settings, opening)
        if answer is None or answer["decision"] != "refuse":
            return None
        return answer if any(r["rule_id"] == "watchlist_hit" for r in answer["reasons"]) else None

    answer = wait_for("the check refusing the punished person", refused)
    reason = next(r for r in answer["reasons"] if r["rule_id"] == "watchlist_hit")
    say(
        f"  {mask_id(id_number)} asks for another SIM at a counter on "
        f"{opening['occurred_at'][:10]}: the check says {answer['decision']} "
        f"({reason['rule_id']}: {reason['summary_en']})"
    )
    send_event(opening)
    wait_for("the stream flagging the opening", lambda: flagged(opening["event_id"]))
    say("  opened anyway, the stream flags it: watchlist_hit (see above); the console shows it")
    precision = console.json("/console/cases.json")["precision"]
    for rule, counts in precision.items():
        value = counts["precision"]
        shown = "–" if value is None else f"{value:.0%}"
        say(f"  precision of {rule} from the police's verdicts so far: {shown}")


def _id_of(events: Path, pseudonymizer: Pseudonymizer, subject_key: str) -> str:
    """The id number behind a pseudonym, from the demo's own events (the demo made them)."""
    for line in events.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
            number = event["id_number"]
            if (
                pseudonymizer.subject_key(event.get("id_type", "resident_id"), number)
                == subject_key
            ):
                return str(number)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    raise PoliceStepFailed("the punished person is not in the demo's events")
