"""Prometheus metrics of the worker. Labels never carry an id number."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# aiohttp refuses a charset inside content_type, so the exposition format's
# version goes alone; Prometheus reads it as text/plain 0.0.4 either way.
CONTENT_TYPE = "text/plain; version=0.0.4"


class WorkerMetrics:
    """The worker's counters, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter(
            "duanka_events",
            "Valid events read from the input topics.",
            ["topic", "event_type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "duanka_rejected",
            "Input records rejected to the dead-letter topic, by the field at fault.",
            ["topic", "field"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "duanka_alerts",
            "Alerts sent to the police topic.",
            ["rule_id", "severity"],
            registry=self.registry,
        )

        self.held = Gauge(
            "duanka_events_held",
            "Valid events waiting to be released in event-time order.",
            registry=self.registry,
        )
        self.late = Gauge(
            "duanka_late_events",
            "Events released after a later one: they came later than the ordering wait.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
