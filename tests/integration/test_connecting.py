"""docs/connecting.md works as written: its kcat, curl and Python examples, against a worker.

The examples are taken from the document itself (its fenced blocks), with
only the broker address, the topic names and the worker's web port swapped
for the test's own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from workerkit import WorkerRun

from stream.broker import free_port

DOC = Path(__file__).parents[2] / "docs" / "connecting.md"
TopicFactory = Callable[..., str]  # the topic_factory fixture
DEFAULT_TOPICS = {
    "carrier.sim-events": "sim_events",
    "bank.account-events": "bank_events",
    "police.alerts": "alerts",
    "screening.watchlist": "watchlist",
    "screening.deadletter": "deadletter",
    "screening.holdings": "holdings",
}


@pytest.fixture
def run(worker_run: WorkerRun, topic_factory: TopicFactory) -> WorkerRun:
    # the worker's config names no holdings topic: the examples get one of their own
    worker_run.topics["holdings"] = topic_factory(prefix="holdings")
    return worker_run


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


def localise(text: str, run: WorkerRun, web_port: int | None = None) -> str:
    """The example for the test's broker and topics, and its worker's web port (or `web_port`)."""
    text = text.replace("127.0.0.1:9092", run.bootstrap)
    text = text.replace("127.0.0.1:6066", f"127.0.0.1:{web_port or run.web_port}")
    for default, name in DEFAULT_TOPICS.items():
        text = text.replace(default, run.topics[name])
    return text


def run_shell(
    command: str, run: WorkerRun, web_port: int | None = None
) -> subprocess.CompletedProcess[str]:
    script = f"BOOTSTRAP={run.bootstrap}\nset -euo pipefail\n{localise(command, run, web_port)}"
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def shell(command: str, run: WorkerRun) -> str:
    done = run_shell(command, run)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def python(code: str, run: WorkerRun, web_port: int | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", localise(code, run, web_port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{code}\n{done.stderr}"
    return done.stdout


def test_the_examples_send_events_and_read_their_alerts(run: WorkerRun) -> None:
    sh = blocks("sh")
    py = blocks("python")
    carrier_kcat, bank_kcat = (b for b in sh if "kcat -P" in b and "event_type" in b)
    carrier_py, bank_py, police_py = (
        b for b in py if "duanka.holding/1" not in b and "duanka.check/1" not in b
    )
    run.start()

    shell(carrier_kcat, run)
    python(carrier_py.replace("producer.close()", "") + bank_py + "producer.close()\n", run)
    shell(bank_kcat, run)

    # the non-local, remotely verified, mailed-to-Yunnan SIM, then an account within 48 hours
    expected = {"sim_nonlocal_not_in_person", "sim_mail_out_of_province", "two_cards_combo"}
    records = run.read("alerts", until=lambda rs: len(rs) >= len(expected))
    assert {orjson.loads(r.value)["rule_id"] for r in records} == expected
    assert not run.read("deadletter", until=lambda rs: False, timeout=1, settle=0)
    # kcat and kafka-python put the person's records in one partition of each topic
    for name in ("sim_events", "bank_events"):
        sent = run.read(name, until=lambda rs: len(rs) >= 2, settle=0)
        assert len(sent) == 2
        assert len({r.partition for r in sent}) == 1

    # the police's kcat reads them all; their consumer prints each one once
    reading = next(b for b in sh if "-o beginning -e -q     #" in b).splitlines()[0]
    assert len(shell(reading.split("#")[0], run).splitlines()) == len(expected)
    police = police_py.replace(
        "enable_auto_commit=False,", "enable_auto_commit=False,\n    consumer_timeout_ms=10_000,"
    )
    printed = python(police, run).splitlines()
    assert len(printed) == len(expected)
    assert all("1101**********002X" in line for line in printed)

    # the watchlist's kcat lines: an entry, then its tombstone
    watch = next(b for b in sh if "screening.watchlist -K" in b)
    commands = ["printf" + c for c in watch.split("\nprintf")[1:]]
    assert len(commands) == 2
    for command in commands:
        shell(command.split("   #")[0], run)
    entries = run.read("watchlist", until=lambda rs: len(rs) >= 2, settle=0)
    assert [r.key for r in entries] == [b"11010519491231002X"] * 2
    assert orjson.loads(entries[0].value)["scope"] == "telecom"
    assert entries[1].value is None


def test_the_holdings_examples_load_and_publish_snapshots(run: WorkerRun, tmp_path: Path) -> None:
    (tmp_path / "holdings.jsonl").write_text(blocks("json")[0])
    (tmp_path / "holdings.csv").write_text(blocks("csv")[0])
    load = next(b for b in blocks("sh") if "duanka holdings load" in b).split("#")[0].split()
    assert load == ["duanka", "holdings", "load", "holdings.csv"]
    env = {**run.env, "DUANKA_TOPIC_HOLDINGS": run.topics["holdings"]}
    loaded = [
        subprocess.run(
            [sys.executable, "-m", "stream.cli", "holdings", "load", name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for name in ("holdings.jsonl", "holdings.csv")
    ]
    assert (loaded[0].returncode, loaded[0].stderr) == (0, "")
    # the rejection as the document shows it
    assert loaded[1].returncode == 1
    assert loaded[1].stderr + loaded[1].stdout == localise(blocks("text")[0], run)
    shell(next(b for b in blocks("sh") if "screening.holdings -K" in b), run)
    python(next(b for b in blocks("python") if "duanka.holding/1" in b), run)

    records = run.read("holdings", until=lambda rs: len(rs) >= 4, settle=0)
    # each key in one partition, whichever client sent it: a later snapshot replaces it
    assert len({(r.key, r.partition) for r in records}) == len({r.key for r in records}) == 2
    by_key: dict[bytes, list[tuple[dict[str, int], dict[str, int]]]] = {}
    for record in records:  # in order within a key: one key, one partition
        value = orjson.loads(record.value)
        by_key.setdefault(record.key, []).append((value["sims"], value["accounts"]))
    assert by_key == {
        b"CMCC-GS\x1f11010519491231002X": [
            ({"personal": 3}, {}),  # the JSON-lines file, as the engine writes it
            ({"personal": 3, "iot": 0}, {}),  # kcat, as written
        ],
        b"ICBC-GS\x1f11010519491231002X": [
            ({}, {"I": 1, "II": 2}),  # the CSV file
            ({}, {"I": 1, "II": 2}),  # kafka-python
        ],
    }


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers: a worker past any deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def wait_answering(run: WorkerRun, request: bytes, timeout: float = 60.0) -> None:
    """Until the worker answers checks (a 503 while its partitions are being assigned)."""
    url = f"http://127.0.0.1:{run.web_port}/v1/check"
    # another person (a Lanzhou resident): the examples' own check_ids stay unused
    probe = orjson.loads(request) | {"check_id": "probe", "id_number": "620102199001010011"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, orjson.dumps(probe)), timeout=10
            ):
                return
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def within_deadline(example: Callable[[], tuple[bool, str]], tries: int = 3) -> str:
    """An example's output, asked again (the same check_id) if a busy test machine made it late."""
    for _ in range(tries):
        late, output = example()
        if not late:
            return output
    raise AssertionError(f"no answer within the deadline in {tries} tries: {output}")


def test_the_check_examples_decide_within_their_deadline_or_fail_closed(
    run: WorkerRun, tmp_path: Path, silent_port: int
) -> None:
    request = blocks("json")[1].strip()
    curl = next(b for b in blocks("sh") if b.startswith("curl "))
    caller = next(b for b in blocks("python") if "duanka.check/1" in b)
    sent = re.search(r"--data '(.*)'", curl)
    assert sent is not None and orjson.loads(sent.group(1)) == orjson.loads(request)

    # no worker at the address, or one that does not answer: no decision, manual review
    closed = free_port()
    for port, error, curl_exit in ((closed, "ConnectError", 7), (silent_port, "ReadTimeout", 28)):
        printed = python(caller, run, web_port=port).splitlines()
        assert printed == [f"no decision from duanka: {error}", "manual_review"]
        assert run_shell(curl, run, web_port=port).returncode == curl_exit

    run.start()
    run.wait_ready()
    wait_answering(run, request.encode())

    def by_curl() -> tuple[bool, str]:
        done = run_shell(curl, run)
        assert done.returncode in (0, 28), done.stderr
        return done.returncode == 28, done.stdout

    answer = orjson.loads(within_deadline(by_curl))
    assert (answer["check_id"], answer["decision"]) == ("CMCC-GS-chk-000981", "allow")
    assert answer["reservation"] is not None
    assert answer["subject"]["id_masked"] == "1101**********002X"

    def by_python() -> tuple[bool, str]:
        output = python(caller, run)
        return "ReadTimeout" in output, output

    # the same check_id again: the first decision
    assert within_deadline(by_python).splitlines() == ["CMCC-GS-chk-000981 allow []", "open"]

    # duanka check on the file the document describes, printing what it shows
    second = orjson.loads(request) | {"check_id": "CMCC-GS-chk-000982"}
    typo = orjson.loads(request) | {
        "check_id": "CMCC-GS-chk-000983",
        "id_number": "11010519491231012X",
    }
    lines = [request.encode(), orjson.dumps(second), orjson.dumps(typo)]
    (tmp_path / "checks.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    command = next(b for b in blocks("sh") if "duanka check" in b).split("#")[0].split()
    assert command == ["duanka", "check", "checks.jsonl"]
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *command[1:]],
        cwd=tmp_path,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout + done.stderr == blocks("text")[1]
