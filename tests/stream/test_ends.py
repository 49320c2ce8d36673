"""The end watch: a partition counts as quiet once its end has not moved for order_idle_ms."""

from __future__ import annotations

from rules.config import Settings, WorkerSettings
from stream.ends import EndWatch


def test_a_partition_is_quiet_once_its_end_stays_put_for_the_idle_time() -> None:
    settings = Settings(worker=WorkerSettings(order_idle_ms=500))
    watch = EndWatch(settings, frozenset({"sims/0", "sims/1"}))
    first = watch.note({"sims/0": 5, "sims/1": 0}, now=10.0)
    assert first.quiet == frozenset()  # not seen long enough
    later = watch.note({"sims/0": 5, "sims/1": 1}, now=10.6)
    assert later.quiet == {"sims/0"}  # sims/1 moved
    assert later.caught_up("sims/0", 5)
    assert not later.caught_up("sims/0", 4)  # its reader is behind the end
    assert not later.caught_up("sims/1", 1)
    assert watch.note({"sims/0": 5, "sims/1": 1}, now=11.1).caught_up("sims/1", 1)
