"""What the simulated people held before the period: carriers' and banks' inventory snapshots.

Holdings do not start at zero (../contract/CHECK.md): each carrier and bank
loads what every identity holds with it, as of the start of the period. The
simulator's cases of `sim_carrier_limit` and `bank_type1_limit` set their
people's snapshots themselves; everyone else who appears in the events gets
an ordinary inventory: one to three SIMs, one or two accounts, at the home
province's carriers and banks for most non-local people. An ordinary
inventory leaves room for what the person opens in the period, so ordinary
business never goes past either limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from random import Random
from typing import Any, NamedTuple

import orjson

from rules.holdings import ACCOUNT_CLASSES, HOLDING_SCHEMA, SIM_KINDS, carrier_of

# 一证五号 as config.yaml's default has it (the truth is written for the defaults):
# personal SIMs per carrier; of Type I accounts a bank allows one (一人一行一个I类户)
SIM_LIMIT = 5
# a source is its carrier or bank and a province: ISO 3166-2:CN's letters for the province
PROVINCE_LETTERS = {
    "11": "BJ",
    "12": "TJ",
    "13": "HE",
    "14": "SX",
    "15": "NM",
    "21": "LN",
    "22": "JL",
    "23": "HL",
    "31": "SH",
    "32": "JS",
    "33": "ZJ",
    "34": "AH",
    "35": "FJ",
    "36": "JX",
    "37": "SD",
    "41": "HA",
    "42": "HB",
    "43": "HN",
    "44": "GD",
    "45": "GX",
    "46": "HI",
    "50": "CQ",
    "51": "SC",
    "52": "GZ",
    "53": "YN",
    "54": "XZ",
    "61": "SN",
    "62": "GS",
    "63": "QH",
    "64": "NX",
    "65": "XJ",
    "71": "TW",
    "81": "HK",
    "82": "MO",
}

Event = dict[str, Any]


def source_in(institution: str, province: str) -> str:
    """The source of a carrier or bank in a province: `CMCC` in 51 is `CMCC-SC`."""
    return f"{institution}-{PROVINCE_LETTERS[province]}"


class Holding(NamedTuple):
    """What one person held at one source when the period began: one snapshot record.

    `counts` has SIMs by kind and accounts by class. A province has millions of
    these: a plain tuple is quick to make, and `holding_lines` writes them as
    `duanka.holding/1` records.
    """

    id_number: str
    source: str
    counts: dict[str, int]


def holding_lines(holdings: Iterable[Holding], as_of: datetime) -> Iterator[bytes]:
    """Each snapshot as one JSON line (without a newline), as `HoldingRecord.to_json` writes it."""
    dumps = orjson.dumps
    when = as_of.isoformat()
    for who, source, counts in holdings:
        sims, accounts = _by_field(counts)
        yield dumps(
            {
                "schema": HOLDING_SCHEMA,
                "source": source,
                "id_type": "resident_id",
                "id_number": who,
                "as_of": when,
                "sims": sims,
                "accounts": accounts,
            }
        )


_BY_FIELD: dict[tuple[tuple[str, int], ...], tuple[dict[str, int], dict[str, int]]] = {}


def _by_field(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The counts as the record's `sims` and `accounts`, in their order, zeros left out.

    A few combinations of small counts are most of a province: each is worked
    out once (the dicts are only read).
    """
    key = tuple(counts.items())
    pair = _BY_FIELD.get(key)
    if pair is None:
        sims = {k: counts[k] for k in SIM_KINDS if counts.get(k)}
        accounts = {k: counts[k] for k in ACCOUNT_CLASSES if counts.get(k)}
        pair = _BY_FIELD[key] = (sims, accounts)
    return pair


class Inventory:
    """Snapshots as they are given, one at a time: counts by (id number, source)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[str, int]] = {}

    def add(self, who: str, source: str, kind: str, count: int = 1) -> None:
        held = self.counts.setdefault((who, source), {})
        held[kind] = held.get(kind, 0) + count

    def holdings(self) -> list[Holding]:
        """One per (source, identity), in the order first given."""
        return [Holding(who, source, held) for (who, source), held in self.counts.items()]


@dataclass(slots=True)
class Opened:
    """What one person opens in the period: personal SIMs by carrier, banks of Type I accounts."""

    sims: dict[str, int] = field(default_factory=dict)
    type_one: frozenset[str] = frozenset()


def openings(events: Iterable[Event], skip: set[str]) -> dict[str, Opened]:
    """Each person's openings in the period, people in order of their first event."""
    people: dict[str, Opened] = {}
    institutions: dict[str, str] = {}  # carrier_of each source, worked out once
    for event in events:
        who = event["id_number"]
        opened = people.get(who)
        if opened is None:
            if who in skip:
                continue
            opened = people[who] = Opened()
        kind = event["event_type"]
        if kind == "sim.activate":
            if event.get("sim_kind") != "personal":
                continue
        elif kind != "bank.open" or event.get("account_class") != "I":
            continue
        source = event["source"]
        institution = institutions.get(source)
        if institution is None:
            institution = institutions[source] = carrier_of(source)
        if kind == "sim.activate":
            opened.sims[institution] = opened.sims.get(institution, 0) + 1
        else:
            opened.type_one = opened.type_one | {institution}
    return people


class OrdinaryHoldings:
    """Draws the ordinary inventories, with a random generator of their own."""

    def __init__(
        self,
        random: Random,
        province: str,
        carriers: Sequence[str],
        banks: Sequence[str],
    ) -> None:
        self._r: Callable[[], float] = random.random
        self.province = province
        self.carriers = carriers
        self.banks = banks
        self._sources: dict[tuple[str, str], str] = {}

    def holdings(self, people: dict[str, Opened]) -> list[Holding]:
        """Every person's ordinary inventory, a snapshot per source."""
        return [
            Holding(who, source, counts)
            for who, opened in people.items()
            for source, counts in self.draw(who, opened).items()
        ]

    def draw(self, who: str, opened: Opened) -> dict[str, dict[str, int]]:
        """One person's SIMs and accounts by source, under both limits with what they open."""
        r = self._r
        carriers, banks = self.carriers, self.banks
        home = who[:2]
        held: dict[str, dict[str, int]] = {}
        if r() < 0.9:
            first = carriers[int(r() * len(carriers))]
            second = carriers[int(r() * len(carriers))]
            sims = dict(opened.sims)  # personal SIMs by carrier, with those opened later
            for _ in range(1 + (r() < 0.55) + (r() < 0.2)):
                carrier = second if r() < 0.3 else first
                if sims.get(carrier, 0) < SIM_LIMIT:
                    sims[carrier] = sims.get(carrier, 0) + 1
                    _add(held, self.source(carrier, home), "personal")
            if r() < 0.03:  # a watch or a car with a SIM of its own
                _add(held, self.source(first, home), "iot")
        if r() < 0.8:
            type_one = opened.type_one
            for _ in range(1 + (r() < 0.4)):
                bank = banks[int(r() * len(banks))]
                if bank not in type_one and r() < 0.75:
                    type_one = type_one | {bank}
                    account_class = "I"
                else:
                    account_class = "II" if r() < 0.8 else "III"
                _add(held, self.source(bank, home), account_class)
        return held

    def source(self, institution: str, home: str) -> str:
        """Where a card is held: at home for most of a non-local person's, else here."""
        province = self.province
        if home != province and home in PROVINCE_LETTERS and self._r() < 0.75:
            province = home
        key = (institution, province)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = source_in(institution, province)
        return source


def _add(held: dict[str, dict[str, int]], source: str, kind: str) -> None:
    counts = held.get(source)
    if counts is None:
        held[source] = {kind: 1}
    else:
        counts[kind] = counts.get(kind, 0) + 1
