"""A check waiting for envelopes on their way to its identity's stage: woken, or given up."""

from __future__ import annotations

import asyncio
from typing import Any

from stream.flush import Part


def part() -> Part[Any]:
    return Part(0, ["in/0"], cache=None)  # type: ignore[arg-type]


def test_a_check_is_woken_when_the_envelope_it_waits_for_comes() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        p = part()
        p.received(4)
        already = await p.read_up_to(4, 1.0)
        waiting = asyncio.ensure_future(p.read_up_to(6, 5.0))
        await asyncio.sleep(0)
        p.received(5)
        await asyncio.sleep(0)
        early = waiting.done()
        p.received(6)
        return already, early, await waiting

    assert asyncio.run(scenario()) == (True, False, True)


def test_a_check_gives_up_after_its_wait() -> None:
    async def scenario() -> tuple[bool, int]:
        p = part()
        caught = await p.read_up_to(3, 0.01)
        p.received(3)  # too late: nothing is left waiting
        return caught, len(p.readers)

    assert asyncio.run(scenario()) == (False, 0)
