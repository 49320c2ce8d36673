"""`duanka check FILE`: try the pre-opening check (`POST /v1/check`) with a file of requests.

For a carrier's or bank's engineer before wiring the API in: each line of a
JSON-lines file, a `duanka.check/1` request, is posted to a worker, one
after another, and one line per check is printed: its check_id, the decision
and the reasons' rule ids, or for a rejected request its line, field and
reason. A summary goes to stderr. Nothing printed holds an id number: the
answers carry the masked id only, and a request is never echoed.

HTTP through the standard library's urllib: trying the API needs nothing
beyond duanka itself.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import IO, Any

import orjson

from rules.check import DECISION_SCHEMA, DECISIONS
from rules.config import Settings
from rules.errors import DuankaError
from rules.pseudonym import mask_id

CHECK_PATH = "/v1/check"
DEFAULT_TIMEOUT_S = 10.0
RETRIES = 5  # after a 503, each after the answer's Retry-After
DEFAULT_WAIT_S = 1.0  # after a 503 whose Retry-After is missing or unreadable
LONGEST_WAIT_S = 30.0
# A resident id number (or an old 15-digit one) in a reason: masked before it is printed.
_ID_NUMBER_SHAPE = re.compile(r"[0-9]{15}(?:[0-9]{2}[0-9Xx])?")
_SHORTEST_MASKED = 6  # shorter values would mask ordinary words of the reason


class CheckError(DuankaError):
    """The checks cannot go on: no such file, an unusable URL, or no worker there."""


class NoAnswer(Exception):
    """One request got no answer (a timeout, a dropped connection); the next may."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the worker sent back to one request."""

    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """One line's outcome: a decision (as returned), a rejection, or why there is no answer."""

    number: int
    decision: dict[str, Any] | None = None
    returned: bytes = b""
    rejection: str = ""
    problem: str = ""


Send = Callable[[str, bytes, float], Reply]


@dataclass
class Tally:
    """The counts of the summary."""

    decisions: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    rejected: int = 0
    unanswered: int = 0

    def add(self, result: Result) -> None:
        decision = result.decision
        if decision is None:
            if result.rejection:
                self.rejected += 1
            else:
                self.unanswered += 1
            return
        self.decisions[decision["decision"]] += 1
        if decision.get("stale") is True:
            self.stale += 1
        if decision["decision"] == "refuse":
            for reason in decision["reasons"]:
                if reason.get("action") == "block":
                    self.refusals[str(reason.get("rule_id"))] += 1

    @property
    def lines(self) -> int:
        return sum(self.decisions.values()) + self.rejected + self.unanswered

    @property
    def failed(self) -> bool:
        return bool(self.rejected or self.unanswered)

    def summary(self) -> list[str]:
        counts = ", ".join(f"{self.decisions[name]} {name}" for name in DECISIONS)
        first = (
            f"{self.lines} checks: {counts}; {self.rejected} rejected, "
            f"{self.unanswered} not answered"
        )
        if self.stale:
            first += f"; {self.stale} answered stale"
        lines = [first]
        if self.refusals:
            ranked = sorted(self.refusals.items(), key=lambda item: (-item[1], item[0]))
            lines.append("refusals by rule: " + ", ".join(f"{r} {n}" for r, n in ranked))
        return lines


def default_url(settings: Settings) -> str:
    """The config's worker: http://{worker.web_host}:{worker.web_port}/v1/check."""
    host = settings.worker.web_host
    if host in ("", "0.0.0.0", "::"):  # bound to every address: this machine's is one of them
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.worker.web_port}{CHECK_PATH}"


def run_checks(
    path: Path,
    url: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    as_json: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    send: Send | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Check every line of `path` in turn; print each outcome and the summary; the exit code."""
    out, err, send = out or sys.stdout, err or sys.stderr, send or post
    require_url(url)
    if not path.is_file():
        raise CheckError(f"{path}: no such file")
    tally = Tally()
    try:
        for number, request in read_requests(path):
            result = check_line(number, request, url, timeout, send, sleep)
            tally.add(result)
            show(result, path, as_json, out, err)
    except CheckError:
        if tally.lines:  # what was answered before the worker went away
            print("\n".join(tally.summary()), file=err, flush=True)
        raise
    print("\n".join(tally.summary()), file=err, flush=True)
    return 1 if tally.failed else 0


def require_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CheckError(f"--url {url!r}: expected http://HOST:PORT{CHECK_PATH}")


def read_requests(path: Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of `path` with their numbers (from 1), as they are."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            request = raw.rstrip(b"\r\n")
            if request.strip():
                yield number, request


def check_line(
    number: int,
    request: bytes,
    url: str,
    timeout: float,
    send: Send,
    sleep: Callable[[float], None],
) -> Result:
    """Post one request (again after each 503, up to RETRIES times) and read the answer."""
    try:
        reply = send(url, request, timeout)
        for _ in range(RETRIES):
            if reply.status != 503:
                break
            sleep(retry_after(reply.retry_after, time.time()))
            reply = send(url, request, timeout)
    except NoAnswer as why:
        return Result(number, problem=str(why))
    return result_of(number, request, reply, url)


def result_of(number: int, request: bytes, reply: Reply, url: str) -> Result:
    """A line's result from the worker's reply; a reply every line would get stops the run."""
    if reply.status == 200:
        decision = _object(reply.body)
        if not _is_decision(decision):
            return Result(number, problem="the answer is not a duanka.decision/1 document")
        return Result(number, decision=decision, returned=reply.body)
    if reply.status == 400:
        body = _object(reply.body)
        reason = f"{body.get('field', 'record')}: {body.get('error', 'rejected')}"
        return Result(number, rejection=masked(reason, request))
    if reply.status == 503:
        error = _object(reply.body).get("error", "")
        why = f" ({error})" if isinstance(error, str) and error else ""
        return Result(number, problem=f"still 503 after {RETRIES} retries{why}")
    if reply.status in (404, 405):
        raise CheckError(
            f"{url} answered {reply.status}: not a worker's check (its path is {CHECK_PATH})"
        )
    return Result(number, problem=f"HTTP {reply.status}")


def show(result: Result, path: Path, as_json: bool, out: IO[str], err: IO[str]) -> None:
    """One line for the result: the decision on `out`; with --json, the rest on `err`."""
    if result.decision is not None:
        text = result.returned.decode() if as_json else describe(result.decision)
        print(text, file=out, flush=True)
        return
    if result.rejection:
        text = f"{path}:{result.number}: {result.rejection}"
    else:
        text = f"{path}:{result.number}: no answer: {result.problem}"
    print(text, file=err if as_json else out, flush=True)


def describe(decision: dict[str, Any]) -> str:
    """`check_id decision rule_id,rule_id [stale]`."""
    parts = [str(decision.get("check_id")), str(decision["decision"])]
    rule_ids = [str(reason.get("rule_id")) for reason in decision["reasons"]]
    if rule_ids:
        parts.append(",".join(rule_ids))
    if decision.get("stale") is True:
        parts.append("stale")
    return " ".join(parts)


def masked(reason: str, request: bytes) -> str:
    """The reason of a rejection with any id number in it masked.

    An enum's error quotes the value it got, and that can be an id number
    put in the wrong field.
    """
    try:
        sent = orjson.loads(request)
    except orjson.JSONDecodeError:
        sent = None
    id_number = sent.get("id_number") if isinstance(sent, dict) else None
    if isinstance(id_number, str) and len(id_number.strip()) >= _SHORTEST_MASKED:
        reason = reason.replace(id_number.strip(), mask_id(id_number.strip()))
    return _ID_NUMBER_SHAPE.sub(lambda match: mask_id(match.group()), reason)


def retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), within bounds."""
    if value is None:
        return DEFAULT_WAIT_S
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_WAIT_S
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), LONGEST_WAIT_S)


def post(url: str, body: bytes, timeout: float) -> Reply:
    """POST `body` as JSON; CheckError if nothing listens at `url`, NoAnswer for a lost request."""
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read(), response.headers.get("Retry-After"))
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.read(), error.headers.get("Retry-After"))
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise NoAnswer(f"no answer within {timeout:g} s") from None
        raise CheckError(f"cannot reach the worker at {url}: {_why(error.reason)}") from None
    except TimeoutError:
        raise NoAnswer(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise NoAnswer(f"the connection failed ({type(error).__name__})") from None


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror).lower()
    return str(reason)


def _is_decision(document: dict[str, Any]) -> bool:
    reasons = document.get("reasons")
    return (
        document.get("schema") == DECISION_SCHEMA
        and document.get("decision") in DECISIONS
        and isinstance(reasons, list)
        and all(isinstance(reason, dict) for reason in reasons)
    )


def _object(body: bytes) -> dict[str, Any]:
    """A JSON object's fields, or none if the body is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
