"""Kafka out of reach, told once and then summed up, instead of once per failed attempt.

While the brokers are unreachable, aiokafka logs every attempt each of the
worker's clients makes: a 10-second outage wrote about 3,900 lines, an hour
would write over a million. `OutageLog` filters aiokafka's loggers: the
first connection failure passes as one line saying Kafka is unreachable,
the rest are counted and summed up every `summary_s`, and once none has come
for `quiet_s` a line says Kafka answers again and after how long. While the
brokers come back, the group coordinator's retries (an offset commit that
failed because the group is still loading, a coordinator found again) are
logged at info, once per stage that commits: during an outage those are
counted too. aiokafka's other messages pass as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

# the loggers aiokafka's clients report connection trouble on
LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
)
# what a message about the connection itself says (it starts an outage)
CONNECTION_MARKERS = (
    "Unable connect to node",
    "Connect call failed",
    "Unable to update metadata",
    "NodeNotReadyError",
    "KafkaConnectionError",
)
# the group coordinator's info messages while it finds its way back (each stage commits)
RETRY_MARKERS = ("will retry", "will find new coordinator", "Discovered coordinator")


class OutageLog(logging.Filter):
    """A filter for aiokafka's loggers that turns an outage's flood into a few lines."""

    def __init__(
        self,
        log: logging.Logger,
        summary_s: float = 30.0,
        quiet_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.log = log
        self.summary_s = summary_s
        self.quiet_s = quiet_s
        self.clock = clock
        self.lock = threading.Lock()  # faust's consumer logs from a thread of its own
        self.since: float | None = None  # when the outage began
        self.last = 0.0  # the last failure seen
        self.summed_at = 0.0
        self.counts: Counter[str] = Counter()  # failures since the last summary, by logger
        self.total = 0

    def install(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return self.since is None or not self._retry(record)
        message = record.getMessage()
        with self.lock:
            if self.since is None:
                if not any(marker in message for marker in CONNECTION_MARKERS):
                    return True
                now = self.clock()
                self.since = self.last = self.summed_at = now
                self.total = 1
                self.counts.clear()
                self.log.warning(
                    "Kafka is unreachable (%s); the worker keeps trying, and sums up "
                    "failed attempts every %.0f s",
                    message,
                    self.summary_s,
                )
                return False
            self.last = self.clock()
            self.total += 1
            self.counts[record.name] += 1
        self.tick()
        return False

    def _retry(self, record: logging.LogRecord) -> bool:
        """Whether an info record is the coordinator retrying (counted while Kafka is away)."""
        if record.name != "aiokafka.consumer.group_coordinator":
            return False
        if not any(marker in record.getMessage() for marker in RETRY_MARKERS):
            return False
        with self.lock:
            self.total += 1
            self.counts[record.name] += 1
        return True

    def tick(self) -> None:
        """Sum up, or say Kafka answers again: on each failure, and from a timer every second."""
        with self.lock:
            if self.since is None:
                return
            now = self.clock()
            if now - self.last >= self.quiet_s:
                self.log.warning(
                    "Kafka answers again, after %.0f s out of reach (%d failed attempts)",
                    self.last - self.since,
                    self.total,
                )
                self.since = None
                return
            if now - self.summed_at >= self.summary_s:
                self.log.warning(
                    "Kafka still unreachable after %.0f s: %d failed attempts in the last "
                    "%.0f s (%s)",
                    now - self.since,
                    sum(self.counts.values()),
                    now - self.summed_at,
                    ", ".join(f"{name} {count}" for name, count in self.counts.most_common()),
                )
                self.summed_at = now
                self.counts.clear()
