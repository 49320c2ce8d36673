"""`POST /v1/check` on two workers of one group, against the real broker (CHECK.md).

Checks go to one worker's address only; identities whose partition the other
worker owns are answered through routing. Concurrent checks for one
identity's last slot give one allow; a reservation not taken over expires; a
snapshot and then events give the counts; bad requests give 400 with the field.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from checkkit import call, decide, post, request
from kafka import KafkaProducer
from workerkit import KEY, WorkerRun

from rules.pseudonym import Pseudonymizer
from stream.partitioner import partition_of

PARTITIONS = 4
TTL_S = 4
PSEUDONYMS = Pseudonymizer(KEY.encode())


def resident(province: str, n: int) -> str:
    from rules.idnumber import check_digit

    first17 = f"{province}0101" + "19900101" + f"{n:03d}"
    return first17 + check_digit(first17)


@pytest.fixture(scope="module")
def pair(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerRun]]:
    root = tmp_path_factory.mktemp("check")
    check = {"reservation_ttl": f"{TTL_S}s", "max_wait_ms": 5000}
    runs: list[WorkerRun] = []
    for n in range(2):
        (root / f"worker-{n}").mkdir()
        extra = {"run": runs[0].run} if runs else {}
        runs.append(
            WorkerRun(
                kafka_bootstrap, root / f"worker-{n}", partitions=PARTITIONS, check=check, **extra
            )
        )
    runs[0].create_topics()
    try:
        for run in runs:
            run.start()
        for run in runs:
            run.wait_ready()
        wait_for_two_owners(runs)
        yield runs
    finally:
        for run in runs:
            run.stop()


def owned(run: WorkerRun) -> set[int]:
    """The identity partitions the worker's log says it holds now."""
    found = re.findall(r"identity stage: partitions ([0-9, ]+|none)", run.log.read_text())
    last = found[-1] if found else "none"
    return set() if last == "none" else {int(p) for p in last.split(", ")}


def wait_for_two_owners(runs: list[WorkerRun], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a, b = owned(runs[0]), owned(runs[1])
        if a and b and a | b == set(range(PARTITIONS)) and not a & b:
            probe = post(runs[0], request(f"probe-{time.monotonic()}", resident("62", 999)))
            if probe.status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("the two workers did not settle on their partitions")


def partition(id_number: str) -> int:
    return partition_of(PSEUDONYMS.subject_key("resident_id", id_number).encode(), PARTITIONS)


def test_any_worker_answers_any_identity(pair: list[WorkerRun]) -> None:
    front, other = pair
    theirs = next(n for n in range(1, 500) if partition(resident("62", n)) in owned(other))
    mine = next(n for n in range(1, 500) if partition(resident("62", n)) in owned(front))
    for n in (theirs, mine):
        answer = decide(front, request(f"route-{n}", resident("62", n)))
        assert answer["decision"] == "allow"
        assert answer["subject"]["key"] == PSEUDONYMS.subject_key("resident_id", resident("62", n))
        assert answer["stale"] is False  # the owner waited for what was on its way
    decisions = front.read("decisions", lambda rs: len(rs) >= 2)
    audited = [orjson.loads(r.value) for r in decisions]
    assert {d["check_id"] for d in audited} >= {f"route-{theirs}", f"route-{mine}"}
    for record in decisions:
        assert resident("62", theirs).encode() not in record.value
        assert resident("62", mine).encode() not in record.value


def test_concurrent_checks_for_the_last_slot_give_one_allow(pair: list[WorkerRun]) -> None:
    person = resident("11", 20)  # a Beijing id at a Gansu outlet: one SIM a month
    bodies = [request(f"race-{n}", person, msisdn=f"1390000{n:04d}") for n in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda nb: decide(pair[nb[0] % 2], nb[1]), enumerate(bodies)))
    decisions = [a["decision"] for a in answers]
    assert decisions.count("allow") == 1, decisions
    refused = [a for a in answers if a["decision"] == "refuse"]
    assert {r["rule_id"] for a in refused for r in a["reasons"]} >= {"sim_nonlocal_monthly_limit"}
    again = decide(pair[1], bodies[decisions.index("allow")])
    assert again["decision"] == "allow"  # the same check_id: the first answer


def test_a_reservation_not_taken_over_expires(pair: list[WorkerRun]) -> None:
    person = resident("11", 21)
    first = decide(pair[0], request("ttl-1", person))
    assert first["decision"] == "allow" and first["reservation"] is not None
    assert decide(pair[0], request("ttl-2", person))["decision"] == "refuse"
    time.sleep(TTL_S + 0.5)
    assert decide(pair[0], request("ttl-3", person))["decision"] == "allow"


def test_a_snapshot_then_events_give_the_counts(pair: list[WorkerRun]) -> None:
    """Four SIMs as of Nov 30; one opened before (in the snapshot), two after, one in Sichuan."""
    run = pair[0]
    person = resident("62", 600)
    snapshot = {
        "schema": "duanka.holding/1",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": person,
        "as_of": "2026-11-30T00:00:00+08:00",
        "sims": {"personal": 4},
        "accounts": {},
    }
    base = request("x", person)
    del base["check_id"]
    base["schema"] = "duanka.event/1"
    events = [
        base
        | {
            "event_id": "GS-599",
            "occurred_at": "2026-11-29T10:00:00+08:00",
            "msisdn": "13900000599",
        },
        base
        | {
            "event_id": "SC-600",
            "occurred_at": "2026-11-30T10:00:00+08:00",
            "msisdn": "13900000600",
            "source": "CMCC-SC",
            "region_code": "510104",
        },
        base
        | {
            "event_id": "GS-601",
            "occurred_at": "2026-11-30T11:00:00+08:00",
            "msisdn": "13900000601",
        },
    ]
    producer = KafkaProducer(bootstrap_servers=run.bootstrap)
    try:
        key = f"CMCC-GS\x1f{person}".encode()
        producer.send(run.topics["holdings"], orjson.dumps(snapshot), key=key)
        producer.flush()
        for event in events:
            producer.send(run.topics["sim_events"], orjson.dumps(event), key=person.encode())
        producer.flush()
    finally:
        producer.close()
    subject = PSEUDONYMS.subject_key("resident_id", person)

    def limit_alerts(records: list[Any]) -> list[dict[str, Any]]:
        alerts = [orjson.loads(r.value) for r in records]
        return [
            a
            for a in alerts
            if a["subject"]["key"] == subject and a["rule_id"] == "sim_carrier_limit"
        ]

    [alert] = limit_alerts(run.read("alerts", lambda rs: bool(limit_alerts(rs))))
    assert alert["evidence"][0]["event_id"] == "GS-601"  # 4 + 1 (Sichuan) + 1: the sixth
    assert alert["facts"] == {"held": 5, "limit": 5, "carrier": "CMCC"}
    answer = decide(pair[1], request("count-1", person, msisdn="13911110001"))
    assert answer["decision"] == "refuse"
    [reason] = [r for r in answer["reasons"] if r["rule_id"] == "sim_carrier_limit"]
    assert reason["facts"]["held"] == 6


def test_bad_requests_give_400_with_the_field(pair: list[WorkerRun]) -> None:
    for body, field in [
        (b"not json", "record"),
        (request("bad-1", "110105194912310021"), "id_number"),
        (
            {k: v for k, v in request("bad-2", resident("62", 1)).items() if k != "check_id"},
            "check_id",
        ),
        (request("bad-3", resident("62", 1), sim_kind="satellite"), "sim_kind"),
        (request("bad-4", resident("62", 1), event_type="sim.cancel"), "event_type"),
    ]:
        response = post(pair[1], body)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
    assert call(pair[0], None, "GET").status_code == 405
