"""The check's HTTP answers without a broker: 400 for bad input, 503 while not ready, never 500."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from strategies import make_event

from rules.config import Settings
from rules.pseudonym import DEV_KEY, Pseudonymizer
from stream.check import Checker
from stream.metrics import WorkerMetrics


def checker(rebalancing: bool = False, hosts: dict[str, Any] | None = None) -> Checker:
    app = SimpleNamespace(
        rebalancing=rebalancing,
        router=SimpleNamespace(table_metadata=lambda name: hosts or {}),
        conf=SimpleNamespace(canonical_url="http://127.0.0.1:6066"),
    )
    wiring = SimpleNamespace(
        settings=Settings(),
        pseudonymizer=Pseudonymizer(DEV_KEY),
        metrics=WorkerMetrics(),
        partitions=4,
        app=app,
        identities=SimpleNamespace(name="identity-state"),
        changelog=lambda table: "duanka-identity-state-changelog",
    )
    return Checker(wiring, SimpleNamespace())  # type: ignore[arg-type]


def request(**fields: Any) -> bytes:
    obj = make_event(**fields)
    del obj["event_id"]
    return orjson.dumps(obj | {"schema": "duanka.check/1", "check_id": "chk-1"})


def answer(
    c: Checker, body: bytes, owned: bool = False
) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, raw, headers = asyncio.run(c.check(body) if not owned else c.owned(body))
    return status, orjson.loads(raw), headers


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "record"),
        (b"\xff\xfe", "record"),
        (b"[]", "record"),
        (b'{"schema": "duanka.check/1"}', "check_id"),
        (request(id_number="110105194912310021"), "id_number"),
        (request(occurred_at="2026-13-01T00:00:00Z"), "occurred_at"),
        (request(region_code=620102), "region_code"),
        (request(delivery="mail"), "delivery"),
    ],
)
def test_bad_input_is_a_400_with_the_field(body: bytes, field: str) -> None:
    status, body_out, headers = answer(checker(), body)
    assert (status, body_out["field"], headers) == (400, field, {})
    assert body_out["error"]


def test_while_rebalancing_or_unowned_a_503_with_retry_after() -> None:
    for c in (checker(rebalancing=True), checker(hosts={})):
        status, body, headers = answer(c, request())
        assert status == 503 and headers == {"Retry-After": "1"}
        assert "not ready" in body["error"]


def test_a_forwarded_check_that_is_not_one_is_a_400() -> None:
    for body in (b"{", b"{}", b'{"partition": "1", "opening": []}', b'{"partition": 1}'):
        status, out, _ = answer(checker(), body, owned=True)
        assert (status, out["field"]) == (400, "record")
