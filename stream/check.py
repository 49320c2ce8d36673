"""`POST /v1/check`: the pre-opening check, on every worker's web port (CHECK.md).

    caller ─► any worker: validate, pseudonymise ─► the identity's owner: wait, decide, reserve
               (400 for bad input)                   (a worker: POST /v1/check/owner, no raw id)

Any worker answers any identity. The worker the caller reached validates the
request (a 400 names the field), pseudonymises it, and finds the worker whose
identity stage holds the identity's partition in faust's assignment (the
table's host map, as faust's table routing does). If that is another worker,
it forwards the pseudonymous opening, never the id number, to that worker's
`/v1/check/owner`. Faust's own `route_req` cannot be used: it forwards the
method and headers of a request but not its body.

The owner waits until its identity stage has read its partition up to where
it ended when the check came, or until `check.max_wait_ms` (then the answer
is `"stale": true`). It then decides (rules/check.py) on the identity's
state and the identity's events the stage holds back for event-time order,
with no await in between, so checks of one identity are decided one after another
and never both take the last slot. The reservation is part of the identity's
state and reaches the changelog with the stage's next flush; every decision
goes to `screening.decisions`, keyed by the pseudonym.

503 with Retry-After while the owner is recovering, rebalancing, or not known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import faust
import orjson
from faust.types import TP

from rules.check import audit_document, decide, decision_document
from rules.errors import InvalidEvent
from rules.event import PseudonymousEvent, parse_check, pseudonymise, pseudonymous_from_row
from rules.event import pseudonymous_row as _row
from stream.internals import recovering
from stream.partitioner import cached_partition_of

if TYPE_CHECKING:
    from stream.app import Wiring
    from stream.stages import IdentityStage

log = logging.getLogger("duanka.check")

JSON = "application/json"
RETRY_AFTER_S = 1
FORWARD_TIMEOUT_S = 5.0


class Unavailable(Exception):
    """The identity's owner cannot answer now (recovering, rebalancing, or unknown)."""


class Checker:
    """Answers checks: routes each to its identity's owner, and decides those it owns."""

    def __init__(self, wiring: Wiring, stage: IdentityStage) -> None:
        self.w = wiring
        self.stage = stage
        self.settings = wiring.settings.check

    # ---------------------------------------------------------------- the caller's side

    async def check(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """Status, JSON body and headers for a `duanka.check/1` request."""
        started = time.perf_counter()
        try:
            opening = pseudonymise(parse_check(body), self.w.pseudonymizer)
        except InvalidEvent as error:
            self.w.metrics.checks.labels("invalid").inc()
            return 400, orjson.dumps({"error": error.reason, "field": error.field}), {}
        partition = cached_partition_of(opening.subject_key.encode(), self.w.partitions)
        try:
            owner = self.owner(partition)
            if owner is None:
                status, answer = 200, await self.decide(opening, partition)
            else:
                status, answer = await self.forward(owner, opening, partition)
        except Unavailable as why:
            self.w.metrics.checks.labels("unavailable").inc()
            body = orjson.dumps({"error": f"the identity's worker is not ready: {why}"})
            return 503, body, {"Retry-After": str(RETRY_AFTER_S)}
        self.w.metrics.check_seconds.observe(time.perf_counter() - started)
        return status, answer, {}

    def owner(self, partition: int) -> str | None:
        """The URL of the worker that owns `partition` of the identity table (None: this one)."""
        app = self.w.app
        if app.rebalancing:
            raise Unavailable("a rebalance is going on")
        changelog = self.w.changelog(self.w.identities)
        hosts = app.router.table_metadata(self.w.identities.name)
        for url, topics in hosts.items():
            if partition in topics.get(changelog, ()):
                return None if _same(url, str(app.conf.canonical_url)) else str(url)
        raise Unavailable(f"no worker owns partition {partition} yet")

    async def forward(
        self, owner: str, opening: PseudonymousEvent, partition: int
    ) -> tuple[int, bytes]:
        """Ask the owner to decide (the opening without its id number); its status and body."""
        body = orjson.dumps({"partition": partition, "opening": _row(opening)})
        url = f"{owner.rstrip('/')}/v1/check/owner"
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        try:
            async with self.w.app.http_client.post(
                url, data=body, headers={"Content-Type": JSON}, timeout=timeout
            ) as response:
                answer = await response.read()
                if response.status == 503:
                    raise Unavailable(f"the owner at {owner} is not ready")
                return response.status, answer
        except (aiohttp.ClientError, TimeoutError) as error:
            raise Unavailable(
                f"the owner at {owner} did not answer ({type(error).__name__})"
            ) from None

    # ---------------------------------------------------------------- the owner's side

    async def owned(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """`/v1/check/owner`: a check another worker forwarded."""
        try:
            obj = orjson.loads(body)
            partition = obj["partition"]
            opening = pseudonymous_from_row(obj["opening"])
            if type(partition) is not int or opening.check_id is None:
                raise ValueError("not a forwarded check")
        except (ValueError, KeyError, TypeError, InvalidEvent):
            return 400, orjson.dumps({"error": "not a forwarded check", "field": "record"}), {}
        try:
            return 200, await self.decide(opening, partition), {}
        except Unavailable as why:
            body = orjson.dumps({"error": f"not ready: {why}"})
            return 503, body, {"Retry-After": str(RETRY_AFTER_S)}

    async def decide(self, opening: PseudonymousEvent, partition: int) -> bytes:
        """Wait for the identity's state to catch up (or `max_wait_ms`), then decide."""
        stage = self.stage
        if partition not in stage.assigned or recovering(self.w.app):
            raise Unavailable(f"partition {partition} is being recovered or moved")
        stale = not await self.caught_up(partition)
        part, _ = stage.part(partition)
        key = opening.subject_key.encode()
        state = part.cache.get(key)
        held = part.waiting.get(opening.subject_key, ())
        outcome = decide(
            self.w.engine,
            state,
            opening,
            time.time(),
            self.settings.reservation_ttl_s,
            self.settings.remember_s,
            [item.event for item in held],
        )
        if not outcome.repeat:
            part.cache.changed(key)
        metrics = self.w.metrics
        metrics.checks.labels(outcome.decision).inc()
        if stale:
            metrics.checks.labels("stale").inc()
        for reason in outcome.answer["reasons"]:
            if reason["action"] == "block" and outcome.decision == "refuse":
                metrics.refusals.labels(reason["rule_id"]).inc()
        audit = orjson.dumps(audit_document(opening, outcome, stale))
        # the answer does not wait for Kafka; the stage's next flush does, before it commits
        stage.sends.append(asyncio.ensure_future(self.audit(audit, key)))
        return orjson.dumps(decision_document(opening, outcome, stale))

    async def audit(self, value: bytes, key: bytes) -> None:
        await (await self.w.sender.send(self.w.settings.topics.decisions, value, key=key))

    async def caught_up(self, partition: int) -> bool:
        """Whether the stage has read its partition to where it ended when the check came.

        What it has read is either in the state or held back for event-time
        order (`Part.waiting`, which the decision takes in), so only envelopes
        still on their way are waited for.
        """
        stage = self.stage
        end = self.w.app.consumer.highwater(TP(stage.topic, partition))
        part, _ = stage.part(partition)
        if end is None or part.read_to + 1 >= end:
            return True
        started = time.monotonic()
        caught = await part.read_up_to(end - 1, self.settings.max_wait_ms / 1000)
        self.w.metrics.check_wait.observe(time.monotonic() - started)
        return caught


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def install_check(app: faust.App, checker: Checker) -> None:
    """`POST /v1/check` and the owners' `POST /v1/check/owner` on the worker's web server."""

    class CheckView(faust.web.View):
        async def post(self, request: Any) -> Any:
            status, body, headers = await checker.check(await request.read())
            return self.web.bytes(body, status=status, headers=headers, content_type=JSON)

    class OwnerView(faust.web.View):
        async def post(self, request: Any) -> Any:
            status, body, headers = await checker.owned(await request.read())
            return self.web.bytes(body, status=status, headers=headers, content_type=JSON)

    app.page("/v1/check")(CheckView)
    app.page("/v1/check/owner")(OwnerView)
