"""The worker's metrics helpers: bounded labels, lag arithmetic, state-size counts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import CONTRACT_EXAMPLE, alerts, encode, make_event, resident_ids, texts

from rules.alert import Alert
from rules.errors import InvalidRecord
from rules.event import parse_event
from rules.watchlist import parse_watch
from stream.metrics import (
    FAUST_OFFSET_KEY,
    OTHER_FIELD,
    REJECTED_FIELDS,
    WorkerMetrics,
    WorkerProbe,
    consumer_lag,
    count_subjects,
    rejected_field,
)

DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
WATCH: dict[str, Any] = {
    "schema": "duanka.watch/1",
    "id_number": "11010519491231002X",
    "scope": "telecom",
    "since": "2025-03-01",
    "until": "2030-03-01",
    "list": "credit_punishment",
    "reason": "",
}
BANK_FIELDS = {"event_type": "bank.open", "account_id": "6222", "account_kind": "personal"}


def field_of(parse: Any, raw: bytes) -> str:
    with pytest.raises(InvalidRecord) as error:
        parse(raw)
    return str(error.value.field)


def event_errors() -> list[str]:
    """The field each way of breaking the contract's example event names."""
    fields = []
    for name in [*CONTRACT_EXAMPLE, *BANK_FIELDS]:
        base = make_event(**BANK_FIELDS) if name in BANK_FIELDS else make_event()
        fields.append(field_of(parse_event, encode({**base, name: 12345})))
        if name in ("event_id", "id_number", "account_id"):
            fields.append(field_of(parse_event, encode({**base, name: None})))
    for name in ("method", "region_code", "address_key"):
        delivery = {"method": "mail", "region_code": "530102", name: 12345}
        fields.append(field_of(parse_event, encode(make_event(delivery=delivery))))
    fields.append(field_of(parse_event, b"not json"))
    return fields


def watch_errors() -> list[str]:
    fields = [field_of(parse_watch, orjson.dumps({**WATCH, name: 12345})) for name in WATCH]
    fields.append(field_of(parse_watch, orjson.dumps({**WATCH, "id_type": "passport"})))
    return fields


@pytest.mark.parametrize("field", sorted({*event_errors(), *watch_errors()}))
def test_every_field_validation_names_keeps_its_own_label(field: str) -> None:
    assert field in REJECTED_FIELDS
    assert rejected_field(field) == field


@given(st.one_of(texts, resident_ids(), st.just("id_number: 11010519491231002X")))
def test_anything_else_is_other(field: str) -> None:
    expected = field if field in REJECTED_FIELDS else OTHER_FIELD
    assert rejected_field(field) == expected


@given(resident_ids())
def test_an_id_number_in_the_field_never_reaches_the_page(number: str) -> None:
    metrics = WorkerMetrics()
    metrics.reject("carrier.sim-events", number)
    metrics.reject("carrier.sim-events", f"delivery.{number}")
    page = metrics.exposition().decode()
    assert number not in page
    assert 'duanka_rejected_total{field="other",topic="carrier.sim-events"} 2.0' in page


@pytest.mark.parametrize(
    ("highwater", "committed", "lag"),
    [(10, 7, 3), (10, 10, 0), (10, None, 10), (0, None, 0), (5, 8, 0)],
)
def test_consumer_lag(highwater: int, committed: int | None, lag: int) -> None:
    assert consumer_lag(highwater, committed) == lag


def test_count_subjects_leaves_out_bookkeeping() -> None:
    keys = [b"subject-1", FAUST_OFFSET_KEY, b"\x00watermarks:0", b"subject-2"]
    assert count_subjects(keys) == 2


def open_store(path: Path, keys: list[bytes]) -> rocksdict.Rdict:
    """A RocksDB store like faust's for one table partition (raw bytes keys)."""
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    for key in keys:
        db.put(key, b"state")
    return db


def gauge(metrics: WorkerMetrics, table: str) -> float | None:
    return metrics.registry.get_sample_value("duanka_state_keys", {"table": table})


def test_state_sizes_count_a_partition_once_then_follow_the_stages(tmp_path: Path) -> None:
    metrics = WorkerMetrics()
    sizes = metrics.state
    db0 = open_store(tmp_path / "p0", [b"a", b"b", FAUST_OFFSET_KEY, b"\x00watermarks:0"])
    db1 = open_store(tmp_path / "p1", [b"c"])
    try:
        sizes.added("identity-state", 0)  # before any count: the count will include it
        sizes.track("identity-state", {0, 1}, {0: db0, 1: db1})
        assert gauge(metrics, "identity-state") == 3

        db0.put(b"d", b"state")
        sizes.added("identity-state", 0)
        db1.put(b"c", b"rewritten")  # not new: a stage does not report it
        sizes.track("identity-state", {0, 1}, {0: db0, 1: db1})  # no second count
        assert gauge(metrics, "identity-state") == 4

        sizes.track("identity-state", {1}, {0: db0, 1: db1})  # partition 0 went elsewhere
        assert gauge(metrics, "identity-state") == 1
        sizes.added("identity-state", 0)  # and is not counted any more
        sizes.track("identity-state", {1, 2}, {0: db0, 1: db1})  # 2 has no store yet
        assert gauge(metrics, "identity-state") == 1

        sizes.forget()  # a rebalance: every partition is counted again
        db1.put(b"e", b"state")  # written by recovery, which the stages do not report
        sizes.track("identity-state", {0, 1}, {0: db0, 1: db1})
        assert gauge(metrics, "identity-state") == 5
    finally:
        db0.close()
        db1.close()


@settings(max_examples=20)
@given(alerts())
def test_latency_is_observed_per_alert_and_never_negative(alert: Alert) -> None:
    metrics = WorkerMetrics()
    metrics.delivered([alert, alert], 0.4)
    metrics.delivered([alert], -2.0)  # two workers' clocks a little apart
    labels = {"rule_id": alert.rule_id}
    registry = metrics.registry
    assert registry.get_sample_value("duanka_alert_latency_seconds_count", labels) == 3
    assert registry.get_sample_value("duanka_alert_latency_seconds_sum", labels) == 0.8
    first = registry.get_sample_value(
        "duanka_alert_latency_seconds_bucket", {**labels, "le": "0.001"}
    )
    assert first == 1


def test_stage_delays_are_observed_per_stage_and_point_and_never_negative() -> None:
    metrics = WorkerMetrics()
    metrics.stage_delay("identity", "received", 0.2)
    metrics.stage_delay("identity", "received", -1.0)  # two workers' clocks a little apart
    metrics.stage_delay("reader", "sent", 0.05)
    registry = metrics.registry

    def sample(name: str, stage: str, point: str) -> float | None:
        labels = {"stage": stage, "point": point}
        return registry.get_sample_value(f"duanka_stage_delay_seconds_{name}", labels)

    assert sample("count", "identity", "received") == 2
    assert sample("sum", "identity", "received") == 0.2
    assert sample("count", "reader", "sent") == 1
    assert sample("count", "identity", "released") is None


def exported_names() -> set[str]:
    """The names the worker's metrics go by in PromQL (counters with `_total`)."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in WorkerMetrics().registry.collect()
    }


def test_the_deployment_guide_lists_every_metric() -> None:
    documented = set(re.findall(r"^\| `(duanka_[a-z_]+)` \|", DEPLOYMENT.read_text(), re.M))
    assert documented == exported_names()


class BrokenApp:
    """Just enough of a faust app for WorkerProbe, failing where faust's internals could."""

    rebalancing = False

    class on_partitions_revoked:
        @staticmethod
        def connect(receiver: Any) -> None:
            pass

    class consumer:
        @staticmethod
        def assignment() -> set[Any]:
            raise RuntimeError("consumer not started")

    class assignor:
        @staticmethod
        def assigned_actives() -> set[Any]:
            raise AttributeError("no assignment")


def test_a_failing_probe_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkerMetrics()
    probe = WorkerProbe(BrokenApp(), metrics, ["carrier.sim-events"], [])
    for _ in range(3):
        asyncio.run(probe.update())  # never raises
    assert metrics.registry.get_sample_value("duanka_probe_failures_total") == 6  # both parts
    warnings = [r.getMessage() for r in caplog.records if r.name == "duanka.metrics"]
    assert warnings == [
        "could not update the lag metrics: RuntimeError: consumer not started",
        "could not update the state size metrics: AttributeError: no assignment",
    ]


def test_verdicts_and_dispositions_by_their_labels() -> None:
    metrics = WorkerMetrics()
    metrics.verdicts.labels("sim_churn", "confirmed").set(2)
    metrics.verdicts.labels("sim_churn", "dismissed").set(1)
    metrics.verdicts.labels("sim_churn", "confirmed").set(1)  # a gauge: an appeal lowers it
    metrics.dispositions.labels("applied").inc()
    metrics.dispositions.labels("unknown_alert").inc()
    registry = metrics.registry

    def verdicts(status: str) -> float | None:
        labels = {"rule_id": "sim_churn", "status": status}
        return registry.get_sample_value("duanka_verdicts", labels)

    assert verdicts("confirmed") == verdicts("dismissed") == 1
    assert verdicts("investigating") is None
    for outcome in ("applied", "unknown_alert"):
        labels = {"outcome": outcome}
        assert registry.get_sample_value("duanka_dispositions_total", labels) == 1
    page = metrics.exposition().decode()
    assert "# TYPE duanka_verdicts gauge" in page
    assert "# TYPE duanka_dispositions_total counter" in page
