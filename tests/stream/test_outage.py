"""An outage's flood of connection errors becomes one line, summaries, and a line when it ends."""

from __future__ import annotations

import logging

import pytest

from stream.outage import OutageLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(message: str, name: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_an_outage_is_told_once_summed_up_and_its_end_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = OutageLog(logging.getLogger("duanka.test"), summary_s=30, quiet_s=10, clock=clock)
    caplog.set_level(logging.INFO, "duanka.test")
    refused = "Unable connect to node with id 1: [Errno 111] Connect call failed"
    assert not outage.filter(record(refused))
    for second in range(1, 35):
        clock.now = 100.0 + second
        for _ in range(40):  # about what aiokafka writes in a second
            assert not outage.filter(record(refused, "aiokafka.conn"))
    clock.now = 140.0  # 6 s without a failure: not over yet
    outage.tick()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("Kafka is unreachable (Unable connect to node")
    # summed up at the first failure 30 s in: 29 seconds of 40, and that one
    assert lines[1].startswith("Kafka still unreachable after 30 s: 1161 failed attempts")
    assert "aiokafka.conn 1161" in lines[1]
    clock.now = 145.0
    outage.tick()
    assert "Kafka answers again, after 34 s out of reach (1361 failed attempts)" in (
        caplog.records[-1].getMessage()
    )


def test_other_warnings_and_info_pass_outside_an_outage() -> None:
    outage = OutageLog(logging.getLogger("duanka.test"), clock=Clock())
    assert outage.filter(record("Heartbeat failed for group g because it is rebalancing"))
    assert outage.filter(record("Unable connect to node 1", level=logging.INFO))


def test_the_coordinators_retries_are_counted_during_an_outage_and_pass_outside() -> None:
    outage = OutageLog(logging.getLogger("duanka.test"), clock=Clock())
    coordinator = "aiokafka.consumer.group_coordinator"
    retry = "OffsetCommit failed for group g because group is initializing (GroupLoadInProgressError), will retry"  # noqa: E501
    found = "Discovered coordinator 1 for group g"
    assert outage.filter(record(retry, coordinator, logging.INFO))  # no outage: as it is
    assert not outage.filter(record("Unable connect to node 1: Connect call failed"))
    for message in (retry, found):
        assert not outage.filter(record(message, coordinator, logging.INFO))
    assert outage.total == 3
    assert outage.filter(record("Joined group g", coordinator, logging.INFO))  # not a retry
