"""`duanka check` without a worker: its lines, summary, retries, masking, and its HTTP client
against a small server on 127.0.0.1."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from producers import check
from producers.check import (
    CheckError,
    NoAnswer,
    Reply,
    Result,
    Tally,
    check_line,
    default_url,
    describe,
    masked,
    post,
    read_requests,
    retry_after,
    run_checks,
)
from rules.config import Settings, WorkerSettings
from stream.broker import free_port
from stream.cli import main

RESIDENT = "11010519491231002X"
URL = "http://127.0.0.1:6066/v1/check"


def request(check_id: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "schema": "duanka.check/1",
            "check_id": check_id,
            "event_type": "sim.activate",
            "id_number": RESIDENT,
        }
        | fields
    )


def decision(check_id: str, verdict: str, *reasons: tuple[str, str], stale: bool = False) -> bytes:
    return orjson.dumps(
        {
            "schema": "duanka.decision/1",
            "check_id": check_id,
            "decision": verdict,
            "reasons": [{"rule_id": rule, "action": action} for rule, action in reasons],
            "reservation": None,
            "subject": {"key": "k:00", "id_masked": "1101**********002X"},
            "stale": stale,
        }
    )


def rejection(field: str, error: str) -> Reply:
    return Reply(400, orjson.dumps({"error": error, "field": field}))


class Script:
    """A worker that answers each request with the next reply; `None` times out."""

    def __init__(self, *replies: Reply | None) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []

    def __call__(self, url: str, body: bytes, timeout: float) -> Reply:
        self.sent.append(body)
        reply = self.replies.pop(0)
        if reply is None:
            raise NoAnswer(f"no answer within {timeout:g} s")
        return reply


def test_a_decision_is_its_check_id_decision_and_rule_ids() -> None:
    assert describe(orjson.loads(decision("c-1", "allow"))) == "c-1 allow"
    refused = decision("c-2", "refuse", ("sim_nonlocal_monthly_limit", "block"), ("x", "review"))
    assert describe(orjson.loads(refused)) == "c-2 refuse sim_nonlocal_monthly_limit,x"
    late = decision("c-3", "review", ("sim_churn", "review"), stale=True)
    assert describe(orjson.loads(late)) == "c-3 review sim_churn stale"


def test_the_summary_counts_decisions_refusals_by_rule_and_failures() -> None:
    tally = Tally()
    for number, body in enumerate(
        [
            decision("a", "allow"),
            decision("b", "refuse", ("sim_carrier_limit", "block"), ("sim_churn", "review")),
            decision("c", "refuse", ("sim_carrier_limit", "block"), ("watchlist_hit", "block")),
            decision("d", "review", ("sim_churn", "review"), stale=True),
        ]
    ):
        tally.add(Result(number, decision=orjson.loads(body)))
    assert not tally.failed
    tally.add(Result(5, rejection="id_number: bad check digit"))
    tally.add(Result(6, problem="no answer within 10 s"))
    assert tally.failed
    assert tally.summary() == [
        "6 checks: 1 allow, 1 review, 2 refuse; 1 rejected, 1 not answered; 1 answered stale",
        "refusals by rule: sim_carrier_limit 2, watchlist_hit 1",
    ]
    assert Tally().summary() == [
        "0 checks: 0 allow, 0 review, 0 refuse; 0 rejected, 0 not answered"
    ]


def test_a_503_is_asked_again_after_its_retry_after() -> None:
    waits: list[float] = []
    busy = Reply(503, b'{"error": "rebalancing"}', "2")
    script = Script(busy, busy, Reply(200, decision("c-1", "allow")))
    result = check_line(1, request("c-1"), URL, 5.0, script, waits.append)
    assert result.decision is not None and result.decision["decision"] == "allow"
    assert waits == [2.0, 2.0]
    assert script.sent == [request("c-1")] * 3


def test_a_503_that_does_not_end_is_reported() -> None:
    waits: list[float] = []
    script = Script(*[Reply(503, b'{"error": "rebalancing"}', "1")] * (check.RETRIES + 1))
    result = check_line(7, request("c-1"), URL, 5.0, script, waits.append)
    assert result.decision is None
    assert result.problem == f"still 503 after {check.RETRIES} retries (rebalancing)"
    assert len(waits) == check.RETRIES


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (None, 1.0), ("soon", 1.0), ("0", 0.0), ("86400", check.LONGEST_WAIT_S)],
)
def test_retry_after_in_seconds_within_bounds(header: str | None, seconds: float) -> None:
    assert retry_after(header, 0.0) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 12, 1, 2, 15, tzinfo=UTC)
    later = format_datetime(now.replace(second=5), usegmt=True)
    assert retry_after(later, now.timestamp()) == 5.0
    assert retry_after(format_datetime(now, usegmt=True), now.timestamp() + 60) == 0.0


def test_a_rejection_never_shows_an_id_number() -> None:
    # an id number in the wrong field: the enum's error quotes it
    quoted = f"unknown value '{RESIDENT}' (expected one of: counter, online)"
    assert masked(f"channel: {quoted}", request("c", channel=RESIDENT)) == (
        "channel: unknown value '1101**********002X' (expected one of: counter, online)"
    )
    # a passport number has no shape to find: the request's own id_number is masked
    shown = masked("channel: unknown value 'E12345678'", request("c", id_number="E12345678"))
    assert "E12345678" not in shown
    # another request's number, or one in a body that is not JSON, by its shape
    assert RESIDENT not in masked(f"record: {RESIDENT}", b"not json")
    assert masked("id_number: bad check digit", request("c")) == "id_number: bad check digit"


def test_the_default_url_is_the_configs_worker() -> None:
    def url(host: str, port: int = 6066) -> str:
        return default_url(Settings(worker=WorkerSettings(web_host=host, web_port=port)))

    assert url("127.0.0.1", 7000) == "http://127.0.0.1:7000/v1/check"
    assert url("0.0.0.0") == "http://127.0.0.1:6066/v1/check"
    assert url("::1") == "http://[::1]:6066/v1/check"


def test_blank_lines_are_skipped_and_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "checks.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"b": 2}')
    assert list(read_requests(path)) == [(1, b'{"a": 1}'), (4, b'{"b": 2}')]


def run(tmp_path: Path, script: Script, as_json: bool = False) -> tuple[int, list[str], list[str]]:
    path = tmp_path / "checks.jsonl"
    out, err = io.StringIO(), io.StringIO()
    code = run_checks(path, URL, 5.0, as_json, out, err, script, lambda s: None)
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def test_one_line_per_check_and_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "checks.jsonl"
    path.write_bytes(b"\n".join([request("c-1"), request("c-2"), b"{", request("c-4")]))
    refused = decision("c-2", "refuse", ("sim_nonlocal_monthly_limit", "block"))
    script = Script(
        Reply(200, decision("c-1", "allow")),
        Reply(200, refused),
        rejection("record", "not valid JSON"),
        None,
    )
    code, out, err = run(tmp_path, script)
    assert code == 1
    assert out == [
        "c-1 allow",
        "c-2 refuse sim_nonlocal_monthly_limit",
        f"{path}:3: record: not valid JSON",
        f"{path}:4: no answer: no answer within 5 s",
    ]
    assert err == [
        "4 checks: 1 allow, 0 review, 1 refuse; 1 rejected, 1 not answered",
        "refusals by rule: sim_nonlocal_monthly_limit 1",
    ]


def test_with_json_the_decisions_as_returned_and_the_rest_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "checks.jsonl"
    path.write_bytes(b"\n".join([request("c-1"), request("c-2", id_number="1")]))
    script = Script(Reply(200, decision("c-1", "allow")), rejection("id_number", "too short"))
    code, out, err = run(tmp_path, script, as_json=True)
    assert (code, out) == (1, [decision("c-1", "allow").decode()])
    assert err[0] == f"{path}:2: id_number: too short"


def test_all_answered_exits_0(tmp_path: Path) -> None:
    (tmp_path / "checks.jsonl").write_bytes(request("c-1"))
    code, _, err = run(tmp_path, Script(Reply(200, decision("c-1", "review", ("x", "review")))))
    assert code == 0
    assert err == ["1 checks: 0 allow, 1 review, 0 refuse; 0 rejected, 0 not answered"]


def test_a_wrong_path_stops_at_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "checks.jsonl").write_bytes(request("c-1") + b"\n" + request("c-2"))
    script = Script(Reply(404, b"Not Found"), Reply(404, b"Not Found"))
    with pytest.raises(CheckError, match="answered 404: not a worker's check"):
        run(tmp_path, script)
    assert len(script.sent) == 1


def test_a_worker_gone_midway_stops_the_run_after_the_summary(tmp_path: Path) -> None:
    (tmp_path / "checks.jsonl").write_bytes(request("c-1") + b"\n" + request("c-2"))
    answered = Reply(200, decision("c-1", "allow"))

    def send(url: str, body: bytes, timeout: float) -> Reply:
        if body == request("c-1"):
            return answered
        raise CheckError(f"cannot reach the worker at {url}: connection refused")

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CheckError, match="cannot reach the worker"):
        run_checks(tmp_path / "checks.jsonl", URL, 5.0, False, out, err, send)
    assert out.getvalue() == "c-1 allow\n"
    assert err.getvalue().startswith("1 checks: 1 allow, 0 review, 0 refuse;")


def test_an_answer_that_is_not_a_decision_is_not_counted_as_one(tmp_path: Path) -> None:
    (tmp_path / "checks.jsonl").write_bytes(request("c-1"))
    code, out, _ = run(tmp_path, Script(Reply(200, b'{"decision": "allow"}')))
    assert code == 1
    assert out[0].endswith("no answer: the answer is not a duanka.decision/1 document")


# ---------------------------------------------------------------- over HTTP, on 127.0.0.1


class Handler(http.server.BaseHTTPRequestHandler):
    replies: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    received: ClassVar[list[tuple[str, str, bytes]]] = []
    hold: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        status, headers, answer = self.replies.pop(0)
        if status == 0:
            self.hold.wait(5)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.replies.clear()
    Handler.received.clear()
    Handler.hold.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/check"
    finally:
        Handler.hold.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_post_gives_the_status_retry_after_and_body(server: str) -> None:
    Handler.replies.extend(
        [
            (200, {}, decision("c-1", "allow")),
            (400, {}, b'{"error": "no body", "field": "record"}'),
            (503, {"Retry-After": "1"}, b'{"error": "not ready"}'),
        ]
    )
    assert post(server, request("c-1"), 5) == Reply(200, decision("c-1", "allow"), None)
    assert post(server, b"", 5).status == 400
    assert post(server, request("c-1"), 5) == Reply(503, b'{"error": "not ready"}', "1")
    assert Handler.received[0] == ("/v1/check", "application/json", request("c-1"))


def test_a_slow_answer_is_no_answer(server: str) -> None:
    Handler.replies.append((0, {}, b""))
    with pytest.raises(NoAnswer, match=r"no answer within 0\.2 s"):
        post(server, request("c-1"), 0.2)


def test_no_worker_at_the_address_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/check"
    with pytest.raises(CheckError) as caught:
        post(url, request("c-1"), 5)
    assert str(caught.value) == f"cannot reach the worker at {url}: connection refused"


def test_the_command_fails_in_one_line_without_a_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "checks.jsonl"
    path.write_bytes(request("c-1"))
    url = f"http://127.0.0.1:{free_port()}/v1/check"
    assert main(["check", str(path), "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"duanka: error: cannot reach the worker at {url}: connection refused\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "127.0.0.1:6066"], "--url '127.0.0.1:6066': expected http://HOST:PORT/v1/check"),
        (["--timeout", "0"], "--timeout must be above 0"),
    ],
)
def test_the_command_refuses_a_bad_url_or_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = tmp_path / "checks.jsonl"
    path.write_bytes(request("c-1"))
    assert main(["check", str(path), *args]) == 1
    assert capsys.readouterr().err == f"duanka: error: {message}\n"


def test_the_command_fails_cleanly_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tmp_path / "missing.jsonl"), "--url", URL]) == 1
    assert "missing.jsonl: no such file" in capsys.readouterr().err
