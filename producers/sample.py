"""A small, fixed sample of a day's openings in Gansu, for the demo and tests.

Mostly ordinary business, a few SIMs mailed out of the province (which
`sim_mail_out_of_province` must flag), and three malformed records (which
must land on the dead-letter topic). The scenario simulator replaces this
for realistic volumes.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from rules.idnumber import check_digit

CST = timezone(timedelta(hours=8))
OUTLETS = [("GS-LZ-0012", "620102"), ("GS-LZ-0031", "620104"), ("GS-TS-0007", "620502")]
AGENTS = ["A-77812", "A-77813", "A-10450"]


def resident_id(province: str, birth: str, sequence: int) -> str:
    """A valid GB 11643 number: province, prefecture and county '01', birth date, sequence."""
    first17 = f"{province}0102{birth}{sequence:03d}"
    return first17 + check_digit(first17)


class _Sampler:
    def __init__(self, seed: int, start: datetime) -> None:
        self.random = random.Random(seed)
        self.clock = start
        self.serial = 0

    def person(self, province: str = "62") -> str:
        year = self.random.randint(1960, 2004)
        birth = f"{year}{self.random.randint(1, 12):02d}{self.random.randint(1, 28):02d}"
        return resident_id(province, birth, self.random.randint(0, 999))

    def event(self, event_type: str, id_number: str, **fields: Any) -> dict[str, Any]:
        self.serial += 1
        self.clock += timedelta(minutes=self.random.randint(1, 9))
        outlet, region = self.random.choice(OUTLETS)
        source = "ICBC-GS" if event_type.startswith("bank.") else "CMCC-GS"
        event: dict[str, Any] = {
            "schema": "duanka.event/1",
            "event_id": f"{source}-{self.clock:%Y%m%d}-{self.serial:06d}",
            "event_type": event_type,
            "occurred_at": self.clock.isoformat(),
            "source": source,
            "id_type": "resident_id",
            "id_number": id_number,
            "region_code": region,
            "outlet_id": outlet,
            "agent_id": self.random.choice(AGENTS),
            "channel": "counter",
            "verification": "in_person",
        }
        if event_type.startswith("sim."):
            event["msisdn"] = f"139{self.random.randint(0, 99_999_999):08d}"
        if event_type == "sim.activate":
            event["sim_kind"] = "personal"
        if event_type.startswith("bank."):
            event["account_id"] = f"6222{self.random.randint(0, 10**12):012d}"
        if event_type == "bank.open":
            event["account_kind"] = "personal"
        event.update(fields)
        return event

    def mailed(self, id_number: str, destination: str) -> dict[str, Any]:
        return self.event(
            "sim.activate",
            id_number,
            channel="online",
            verification="remote_face",
            outlet_id="online",
            region_code="620100",
            delivery={"method": "mail", "region_code": destination, "address_key": "addr-1"},
        )


def sample_events(seed: int = 2026, start: datetime | None = None) -> list[dict[str, Any]]:
    """The valid sample events, in event-time order."""
    sampler = _Sampler(seed, start or datetime(2026, 11, 20, 8, 30, tzinfo=CST))
    events = []
    for index in range(40):
        kind = ("sim.activate", "bank.open", "sim.cancel", "bank.close")[index % 4]
        events.append(sampler.event(kind, sampler.person()))
        if index == 5:
            events.append(sampler.mailed(sampler.person(), "620502"))  # within Gansu
        if index == 10:
            events.append(sampler.mailed(sampler.person(), "530102"))  # to Yunnan: high
        if index == 18:
            events.append(sampler.mailed(sampler.person(), "510104"))  # to Sichuan: medium
        if index == 25:
            events.append(sampler.mailed(sampler.person("51"), "610102"))  # non-local ID: high
        if index == 33:
            events.append(sampler.mailed(sampler.person(), "450102"))  # to Guangxi: high
    return events


def malformed_records(valid: dict[str, Any]) -> list[bytes]:
    """Three records the engine must reject, each for a different reason.

    Each keeps its `event_type`, so `duanka produce` can route it.
    """
    number = str(valid["id_number"])
    bad_digit = dict(valid, event_id="BAD-CHECK-DIGIT")
    bad_digit["id_number"] = number[:17] + ("0" if number[17] != "0" else "1")
    missing = {k: v for k, v in valid.items() if k != "occurred_at"}
    missing["event_id"] = "MISSING-TIME"
    bad_channel = dict(valid, event_id="BAD-CHANNEL", channel="fax")
    return [orjson.dumps(record) for record in (bad_digit, missing, bad_channel)]


def write_sample(path: Path, seed: int = 2026, with_malformed: bool = True) -> int:
    """Write the sample as JSON lines; return how many lines were written."""
    events = sample_events(seed)
    lines = [orjson.dumps(event) for event in events]
    if with_malformed:
        bad = malformed_records(events[0])
        for position, record in zip((7, 19, 30), bad, strict=True):
            lines.insert(position, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)
