"""Posting pre-opening checks to a test worker's /v1/check (standard library only)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson
from workerkit import WorkerRun


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


def call(run: WorkerRun, data: bytes | None, method: str) -> Response:
    url = f"http://127.0.0.1:{run.web_port}/v1/check"
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return Response(answer.status, dict(answer.headers), answer.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read().decode())


def post(run: WorkerRun, body: object) -> Response:
    return call(run, body if isinstance(body, bytes) else orjson.dumps(body), "POST")


def decide(run: WorkerRun, body: dict[str, Any]) -> dict[str, Any]:
    for _ in range(60):
        response = post(run, body)
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer
        time.sleep(float(response.headers["Retry-After"]))
    raise AssertionError("still 503 after a minute")


def request(check_id: str, id_number: str, **fields: Any) -> dict[str, Any]:
    """The contract's example check (a SIM at a Lanzhou counter) for `id_number`."""
    return {
        "schema": "duanka.check/1",
        "check_id": check_id,
        "event_type": "sim.activate",
        "occurred_at": "2026-12-01T10:15:00+08:00",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": id_number,
        "region_code": "620102",
        "outlet_id": "GS-LZ-0012",
        "channel": "counter",
        "verification": "in_person",
        "msisdn": "13912345678",
        "sim_kind": "personal",
        "delivery": {"method": "pickup"},
    } | fields
