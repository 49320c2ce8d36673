"""docs/connecting.md works as written: its kcat commands and Python code, against a worker.

The examples are taken from the document itself (its fenced blocks), with
only the broker address and the topic names swapped for the test's own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from workerkit import WorkerRun

DOC = Path(__file__).parents[2] / "docs" / "connecting.md"
DEFAULT_TOPICS = {
    "carrier.sim-events": "sim_events",
    "bank.account-events": "bank_events",
    "police.alerts": "alerts",
    "screening.watchlist": "watchlist",
    "screening.deadletter": "deadletter",
}


@pytest.fixture
def run(worker_run: WorkerRun) -> WorkerRun:
    return worker_run


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


def localise(text: str, run: WorkerRun) -> str:
    text = text.replace("127.0.0.1:9092", run.bootstrap)
    for default, name in DEFAULT_TOPICS.items():
        text = text.replace(default, run.topics[name])
    return text


def shell(command: str, run: WorkerRun) -> str:
    script = f"BOOTSTRAP={run.bootstrap}\nset -euo pipefail\n{localise(command, run)}"
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def python(code: str, run: WorkerRun) -> str:
    done = subprocess.run(
        [sys.executable, "-c", localise(code, run)],
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
    carrier_py, bank_py, police_py = py
    run.start()

    shell(carrier_kcat, run)
    python(carrier_py.replace("producer.close()", "") + bank_py + "producer.close()\n", run)
    shell(bank_kcat, run)

    # the non-local, remotely verified, mailed-to-Yunnan SIM, then an account within 48 hours
    expected = {"sim_nonlocal_not_in_person", "sim_mail_out_of_province", "two_cards_combo"}
    records = run.read("alerts", until=lambda rs: len(rs) >= len(expected))
    assert {orjson.loads(r.value)["rule_id"] for r in records} == expected
    assert not run.read("deadletter", until=lambda rs: False, timeout=1, settle=0)

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
