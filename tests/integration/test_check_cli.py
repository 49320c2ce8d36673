"""`duanka check FILE` against a real worker: the lines it prints, its summary and exit code.

A local resident is allowed; a non-local one at a Gansu outlet is allowed a
first SIM of the month and refused a second (sim_nonlocal_monthly_limit);
a line with a bad id number is rejected with its field. No id number is
ever printed.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from checkkit import request
from workerkit import WorkerRun

from rules.idnumber import check_digit


def resident(province: str, n: int) -> str:
    first17 = f"{province}0101" + "19900101" + f"{n:03d}"
    return first17 + check_digit(first17)


LOCAL = resident("62", 1)
NONLOCAL = resident("11", 2)
BAD = NONLOCAL[:-1] + ("1" if NONLOCAL[-1] != "1" else "2")  # a wrong check digit


def wait_answering(run: WorkerRun, timeout: float = 60.0) -> None:
    """Until the worker answers checks (its partitions assigned, its tables recovered)."""
    url = f"http://127.0.0.1:{run.web_port}/v1/check"
    body = orjson.dumps(request(f"probe-{time.monotonic()}", resident("62", 999)))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10):
                return
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def duanka_check(run: WorkerRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "check", *args],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_duanka_check_prints_each_decision_and_a_summary(
    worker_run: WorkerRun, tmp_path: Path
) -> None:
    lines = [
        request("chk-local-1", LOCAL),
        request("chk-nonlocal-1", NONLOCAL, msisdn="13900000001"),
        request("chk-nonlocal-2", NONLOCAL, msisdn="13900000002"),
        request("chk-bad-1", BAD),
    ]
    checks = tmp_path / "checks.jsonl"
    checks.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    worker_run.start()
    worker_run.wait_ready()
    wait_answering(worker_run)

    done = duanka_check(worker_run, str(checks))  # the config's worker: its web_port
    assert done.stdout.splitlines() == [
        "chk-local-1 allow",
        "chk-nonlocal-1 allow",
        "chk-nonlocal-2 refuse sim_nonlocal_monthly_limit",
        f"{checks}:4: id_number: bad check digit",
    ]
    assert done.stderr.splitlines() == [
        "4 checks: 2 allow, 0 review, 1 refuse; 1 rejected, 0 not answered",
        "refusals by rule: sim_nonlocal_monthly_limit 1",
    ]
    assert done.returncode == 1

    # again, as JSON: the same check_ids get their first decisions
    url = f"http://127.0.0.1:{worker_run.web_port}/v1/check"
    again = duanka_check(worker_run, str(checks), "--json", "--url", url)
    decisions = [orjson.loads(line) for line in again.stdout.splitlines()]
    assert [(d["check_id"], d["decision"]) for d in decisions] == [
        ("chk-local-1", "allow"),
        ("chk-nonlocal-1", "allow"),
        ("chk-nonlocal-2", "refuse"),
    ]
    assert decisions[1]["reservation"] is not None
    assert decisions[2]["subject"]["id_masked"] == "1101**********" + NONLOCAL[-4:]
    assert again.stderr.splitlines()[0] == f"{checks}:4: id_number: bad check digit"
    assert again.returncode == 1

    for output in (done.stdout, done.stderr, again.stdout, again.stderr):
        for id_number in (LOCAL, NONLOCAL, BAD):
            assert id_number not in output


def test_duanka_check_without_a_worker_names_the_url(worker_run: WorkerRun, tmp_path: Path) -> None:
    checks = tmp_path / "checks.jsonl"
    checks.write_bytes(orjson.dumps(request("chk-1", LOCAL)) + b"\n")
    done = duanka_check(worker_run, str(checks))  # no worker started on its web_port
    url = f"http://127.0.0.1:{worker_run.web_port}/v1/check"
    assert done.stderr == f"duanka: error: cannot reach the worker at {url}: connection refused\n"
    assert (done.returncode, done.stdout) == (1, "")
