"""A province in a box: carriers' and banks' openings, with labelled fraud.

The simulator writes what a province's carriers, banks and payment
institutions would send: SIM activations and cancellations, account openings
and closings, at business halls, bank branches, dealers and online, over a
period, by people from the province and from everywhere else. Into that
ordinary business it injects labelled cases of every pattern the rules look
for, and look-alikes: people and outlets that come close to a rule without
meeting it, which must not alert. Each case lists its events, so an alert can
be matched to the case it found (see `producers.evaluate`). What people
held before the period, the carriers' and banks' inventory snapshots, comes
with the events (see `producers.inventory`), and so do the numbers the police
later find in fraud cases (`duanka.implicated/1`), reported days to months
after their openings, some of them after the period.

Seeded: the same arguments give the same events, byte for byte. Times are
kept as whole seconds from the start of the period and formatted from
tables, which keeps a million events to seconds of work.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from random import Random
from typing import Any

import orjson

from producers.inventory import (
    PROVINCE_LETTERS,
    SIM_LIMIT,
    Holding,
    Inventory,
    OrdinaryHoldings,
    openings,
    source_in,
)
from rules.idnumber import check_digit
from rules.implicated import Implicated
from rules.pseudonym import mask_id

CARRIERS = ("CMCC", "CUCC", "CTCC")
BANKS = ("ICBC", "ABC", "BOC", "CCB", "PSBC", "BOCOM", "CMB")
PAYMENT = ("ALIPAY", "WECHATPAY")
# classes of personal accounts opened: mostly Type I or II, some Type III
OPENED_CLASSES = ("I",) * 5 + ("II",) * 4 + ("III",)
CST = timezone(timedelta(hours=8))
# where non-local customers come from: migrant workers' home provinces first
HOME_PROVINCES = (
    ("51", 12),
    ("41", 10),
    ("61", 8),
    ("50", 6),
    ("64", 6),
    ("63", 5),
    ("65", 5),
    ("42", 5),
    ("43", 5),
    ("53", 4),
    ("45", 4),
    ("44", 4),
    ("34", 4),
    ("37", 3),
    ("13", 3),
    ("14", 3),
    ("36", 2),
    ("52", 2),
    ("32", 2),
    ("33", 2),
    ("15", 2),
    ("22", 1),
    ("23", 1),
    ("21", 1),
    ("11", 1),
    ("31", 1),
    ("35", 1),
    ("46", 1),
    ("12", 1),
    ("54", 1),
)
HOTSPOTS = ("530102", "450102")  # Kunming and Nanning: frequent destinations of mailed cards
ELSEWHERE = ("510104", "440106", "330106", "610113", "420102")
DAY = 86_400
OPENING = 8 * 3600  # outlets open 08:00 to 20:00
HOURS = 12 * 3600
# openers per outlet per day that ordinary business aims at, when the outlets are not given
OPENERS_PER_OUTLET_DAY = 8
TRUTH_SCHEMA = "duanka.case/1"
MIN_CASE_DAYS = 10  # some cases span a week

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Case:
    """A labelled scenario: the rule it is about, its subject, and every event in it.

    `expected` cases must alert under `rule_id`; look-alikes (expected False)
    come close to it and must not. An alert belongs to a case when its rule is
    the case's and its evidence shares an event with the case.
    """

    case_id: str
    label: str
    rule_id: str
    expected: bool
    subject_kind: str  # identity, outlet or agent
    subject: str  # a masked id number, an outlet_id or an agent_id
    events: tuple[str, ...]  # "source/event_id"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema": TRUTH_SCHEMA,
                "case_id": self.case_id,
                "label": self.label,
                "rule_id": self.rule_id,
                "expected": self.expected,
                "subject": {"kind": self.subject_kind, "key": self.subject},
                "events": list(self.events),
            }
        )


@dataclass
class Outlet:
    outlet_id: str
    region_code: str
    agents: tuple[str, ...]
    channel: str = "counter"


@dataclass
class World:
    events: list[Event] = field(default_factory=list)
    watchlist: list[Event] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    as_of: datetime = datetime(2026, 1, 1, tzinfo=CST)  # of the holdings: the period's start
    cases: list[Case] = field(default_factory=list)
    implicated: list[Implicated] = field(default_factory=list)  # the police's, by reported_at
    people: int = 0
    outlets: int = 0


def ref(event: Event) -> str:
    return f"{event['source']}/{event['event_id']}"


class Simulator:
    """Builds a World: ordinary business plus injected cases and look-alikes."""

    def __init__(
        self,
        seed: int = 2026,
        start: date = date(2026, 1, 1),
        days: int = 30,
        province: str = "62",
        outlets: int = 40,
    ) -> None:
        self.random = Random(seed)
        self._r = self.random.random
        self.start = start
        self.days = days
        self.province = province
        self.capital = f"{province}0102"
        self.carrier_sources = tuple(source_in(carrier, province) for carrier in CARRIERS)
        self.bank_sources = tuple(source_in(bank, province) for bank in BANKS)
        self.inventory = Inventory()  # the snapshots the limit cases set
        self._held: set[str] = set()  # the people whose snapshots a case set
        self._numbers = 0
        self.outlets = [self._outlet(n) for n in range(outlets)]
        self.online_outlet = Outlet("online", self.capital, ("",), "online")
        as_of = datetime(start.year, start.month, start.day, tzinfo=CST)
        self.world = World(outlets=len(self.outlets), as_of=as_of)
        self._people = 0
        self._serial: dict[str, int] = {}
        self._dealers = 0
        self._homes = [code for code, weight in HOME_PROVINCES for _ in range(weight)]
        self._days = [(start + timedelta(days=d)).isoformat() for d in range(days + 2)]
        self._clock = [
            f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+08:00" for s in range(DAY)
        ]
        self._births = [
            (date(1958, 1, 1) + timedelta(days=d)).strftime("%Y%m%d") for d in range(9000)
        ]
        self._outlet_users: set[str] = set()
        self._implicated_at: set[str] = set()  # outlets with an implicated card, in any round
        self._more_outlets = 0
        self._case_refs = 0

    # -------------------------------------------------------------- building blocks

    def _outlet(self, number: int) -> Outlet:
        county = f"{self.province}{1 + number % 12:02d}{1 + number // 12 % 5:02d}"
        kind = "counter" if number % 4 else "dealer"
        agents = tuple(f"A-{number:04d}{k}" for k in range(3))
        return Outlet(f"{self.province}-OUT-{number:05d}", county, agents, kind)

    def pick(self, items: Any) -> Any:
        return items[int(self._r() * len(items))]

    def home(self) -> str:
        """A province other than the simulated one, weighted like migration."""
        while (code := self.pick(self._homes)) == self.province:
            pass
        return str(code)

    def person(self, province: str | None = None, prefecture: str | None = None) -> str:
        """A new, valid resident id number; by default from the simulated province.

        Numbers never repeat: the person's serial sets the county digits, the
        sequence digits and a birth-date block of its own.
        """
        self._people += 1
        n = self._people
        home = province or self.province
        if prefecture is None:
            prefecture = f"{1 + int(self._r() * 15):02d}"
        birth = self._births[(n // 100_000) * 61 % 9000 + int(self._r() * 61)]
        first17 = f"{home}{prefecture}{n % 100:02d}{birth}{n // 100 % 1000:03d}"
        return first17 + check_digit(first17)

    def when(self, day: float | None = None) -> int:
        """Seconds from the start: on `day` (from the start) or any day, in opening hours."""
        if day is None:
            day = self._r() * (self.days - 1)
        return int(day) * DAY + OPENING + int(self._r() * HOURS)

    def emit(self, event_type: str, id_number: str, t: int, **fields: Any) -> Event:
        """One event at `t` seconds from the start; `fields` override the defaults."""
        r = self._r
        bank = event_type[0] == "b"
        source = fields.pop("source", None)
        if source is None:
            sources = self.bank_sources if bank else self.carrier_sources
            source = sources[int(r() * len(sources))]
        self._serial[source] = serial = self._serial.get(source, 0) + 1
        outlet: Outlet | None = fields.pop("outlet", None)
        if outlet is None:
            outlet = self.outlets[int(r() * len(self.outlets))]
        event: Event = {
            "schema": "duanka.event/1",
            "event_id": f"{source}-{serial:08d}",
            "event_type": event_type,
            "occurred_at": self._days[t // DAY] + self._clock[t % DAY],
            "source": source,
            "id_type": "resident_id",
            "id_number": id_number,
            "region_code": outlet.region_code,
            "outlet_id": outlet.outlet_id,
        }
        if outlet.channel == "online":
            event["channel"] = "online"
            event["verification"] = "remote_face"
        else:
            event["agent_id"] = outlet.agents[int(r() * len(outlet.agents))]
            event["channel"] = outlet.channel
            event["verification"] = "in_person"
        if not bank:
            event["msisdn"] = f"1{3 + int(r() * 7)}{self._people:09d}"
            if event_type == "sim.activate":
                event["sim_kind"] = "personal"
        else:
            event["account_id"] = f"62{int(r() * 10**16):016d}"
            if event_type == "bank.open":
                event["account_kind"] = "payment" if source in PAYMENT else "personal"
            if source not in PAYMENT:
                event["account_class"] = OPENED_CLASSES[int(r() * len(OPENED_CLASSES))]
        if fields:
            event.update(fields)
        self.world.events.append(event)
        return event

    def case(
        self,
        label: str,
        rule_id: str,
        kind: str,
        subject: str,
        events: list[Event],
        expected: bool = True,
    ) -> None:
        if kind == "identity":
            subject = mask_id(subject)
        case_id = f"case-{len(self.world.cases) + 1:05d}"
        refs = tuple(ref(e) for e in events)
        self.world.cases.append(Case(case_id, label, rule_id, expected, kind, subject, refs))

    def case_outlet(self) -> Outlet:
        """An outlet for an outlet-level case: one no other such case used."""
        for _ in range(50):
            outlet: Outlet = self.pick(self.outlets)
            if outlet.outlet_id not in self._outlet_users:
                break
        self._outlet_users.add(outlet.outlet_id)
        return outlet

    def dealer(self) -> str:
        """A dealer's staff number of its own, so agent cases do not overlap."""
        self._dealers += 1
        return f"D-{self._dealers:05d}"

    # -------------------------------------------------------------- ordinary business

    def ordinary(self, people: int) -> None:
        """People who open a SIM, maybe an account, and rarely cancel: nothing to flag."""
        r = self._r
        for _ in range(people):
            if r() < 0.15:
                self._ordinary_nonlocal()
            else:
                self._ordinary_local()

    def _ordinary_local(self) -> None:
        r = self._r
        who = self.person()
        day = r() * (self.days - 1)
        roll = r()
        if roll < 0.25:  # ordered online, mailed within the province
            mail = {
                "method": "mail",
                "region_code": self.pick(self.outlets).region_code,
                "address_key": f"addr-{self._people}",
            }
            self.emit("sim.activate", who, self.when(day), outlet=self.online_outlet, delivery=mail)
        else:
            self.emit("sim.activate", who, self.when(day), device_id=f"dev-{self._people}")
        if r() < 0.35:
            later = min(day + r() * 10, self.days - 1)
            self.emit("bank.open", who, self.when(later))
        if r() < 0.12:  # a payment account, opened in the app
            later = min(day + r() * 20, self.days - 1)
            self.emit(
                "bank.open",
                who,
                self.when(later),
                source=self.pick(PAYMENT),
                outlet=self.online_outlet,
            )
        if r() < 0.08:
            self.emit("sim.cancel", who, self.when(min(day + 1 + r() * 20, self.days - 1)))
        if r() < 0.03:
            self.emit("bank.close", who, self.when(self.days - 1))

    def _ordinary_nonlocal(self) -> None:
        """A migrant worker: one SIM at a counter, in person; an account days later."""
        r = self._r
        who = self.person(self.home())
        day = r() * (self.days - 4)
        self.emit("sim.activate", who, self.when(day))
        if r() < 0.2:
            self.emit("bank.open", who, self.when(day + 3 + r()))

    # -------------------------------------------------------------- injected cases

    def churner(self) -> None:
        who = self.person()
        outlet = self.pick(self.outlets)
        day = self._r() * (self.days - 8)
        events = []
        for step in range(3):
            events.append(self.emit("sim.activate", who, self.when(day + 2 * step), outlet=outlet))
            events.append(
                self.emit("sim.cancel", who, self.when(day + 2 * step + 1), outlet=outlet)
            )
        self.case("opened and cancelled three times", "sim_churn", "identity", who, events)

    def churner_lookalike(self) -> None:
        who = self.person()
        day = self._r() * (self.days - 6)
        events = []
        for step in range(2):
            events.append(self.emit("sim.activate", who, self.when(day + 2 * step)))
            events.append(self.emit("sim.cancel", who, self.when(day + 2 * step + 1)))
        self.case("cancelled twice", "sim_churn", "identity", who, events, expected=False)

    def mailer(self, destination: str) -> None:
        who = self.person()
        mail = {"method": "mail", "region_code": destination, "address_key": f"addr-{self._people}"}
        event = self.emit(
            "sim.activate", who, self.when(), outlet=self.online_outlet, delivery=mail
        )
        label = f"mailed to {destination}"
        self.case(label, "sim_mail_out_of_province", "identity", who, [event])

    def mailer_lookalike(self) -> None:
        who = self.person()
        mail = {
            "method": "mail",
            "region_code": self.pick(self.outlets).region_code,
            "address_key": f"addr-{self._people}",
        }
        event = self.emit(
            "sim.activate", who, self.when(), outlet=self.online_outlet, delivery=mail
        )
        label = "mailed within the province"
        self.case(label, "sim_mail_out_of_province", "identity", who, [event], expected=False)

    def nonlocal_repeat(self) -> None:
        who = self.person(self.home())
        day = self._r() * (self.days - 10)
        first = self.emit("sim.activate", who, self.when(day))
        second = self.emit("sim.activate", who, self.when(day + 2 + self._r() * 7))
        label = "non-local ID, second SIM within 30 days"
        self.case(label, "sim_nonlocal_monthly_limit", "identity", who, [first, second])

    def nonlocal_repeat_lookalike(self) -> None:
        """A second SIM more than 30 days after the first (only in periods long enough)."""
        if self.days < 40:
            return
        who = self.person(self.home())
        day = self._r() * (self.days - 38)
        first = self.emit("sim.activate", who, self.when(day))
        second = self.emit("sim.activate", who, self.when(day + 31 + self._r() * 5))
        label = "non-local ID, second SIM after 30 days"
        self.case(
            label, "sim_nonlocal_monthly_limit", "identity", who, [first, second], expected=False
        )

    def local_repeat_lookalike(self) -> None:
        """A local person with two SIMs in a month: the limit is for non-local IDs only."""
        who = self.person()
        day = self._r() * (self.days - 10)
        first = self.emit("sim.activate", who, self.when(day))
        second = self.emit("sim.activate", who, self.when(day + 2 + self._r() * 7))
        label = "local ID, second SIM within 30 days"
        self.case(
            label, "sim_nonlocal_monthly_limit", "identity", who, [first, second], expected=False
        )

    def nonlocal_remote(self) -> None:
        who = self.person(self.home())
        event = self.emit("sim.activate", who, self.when(), outlet=self.online_outlet)
        label = "non-local ID, remote verification"
        self.case(label, "sim_nonlocal_not_in_person", "identity", who, [event])

    def local_remote_lookalike(self) -> None:
        who = self.person()
        event = self.emit("sim.activate", who, self.when(), outlet=self.online_outlet)
        label = "local ID, remote verification"
        self.case(label, "sim_nonlocal_not_in_person", "identity", who, [event], expected=False)

    def watchlisted(self, scope: str) -> None:
        who = self.person()
        since = self.start - timedelta(days=90)
        self.world.watchlist.append(self.watch_entry(who, scope, since))
        kind = "bank.open" if scope == "bank" else "sim.activate"
        event = self.emit(kind, who, self.when())
        self.case(f"watchlisted ({scope})", "watchlist_hit", "identity", who, [event])

    def watchlist_lookalikes(self) -> None:
        """An entry that ended before the opening, and one for banks only before a SIM."""
        who = self.person()
        entry = self.watch_entry(who, "all", self.start - timedelta(days=900))
        entry["until"] = (self.start - timedelta(days=1)).isoformat()
        self.world.watchlist.append(entry)
        event = self.emit("sim.activate", who, self.when())
        label = "watchlist entry expired"
        self.case(label, "watchlist_hit", "identity", who, [event], expected=False)

        who = self.person()
        self.world.watchlist.append(self.watch_entry(who, "bank", self.start))
        event = self.emit("sim.activate", who, self.when())
        label = "watchlisted for banks, opened a SIM"
        self.case(label, "watchlist_hit", "identity", who, [event], expected=False)

    def watch_entry(self, who: str, scope: str, since: date) -> Event:
        return {
            "schema": "duanka.watch/1",
            "id_number": who,
            "scope": scope,
            "since": since.isoformat(),
            "until": (since + timedelta(days=5 * 365)).isoformat(),
            "list": "credit_punishment",
            "reason": "sold a SIM card used in fraud",
        }

    def multi_bank(self) -> None:
        who = self.person()
        day = self._r() * (self.days - 7)
        events = [
            self.emit(
                "bank.open", who, self.when(day + 2 * k), source=source_in(bank, self.province)
            )
            for k, bank in enumerate(self.random.sample(BANKS, 3))
        ]
        self.case("three banks in a week", "bank_multi_open", "identity", who, events)

    def multi_bank_lookalike(self) -> None:
        """Three banks, but more than a week apart each."""
        who = self.person()
        day = self._r() * (self.days - 10)
        events = [
            self.emit(
                "bank.open",
                who,
                self.when(min(day + 8 * k, self.days - 1)),
                source=source_in(b, self.province),
            )
            for k, b in enumerate(self.random.sample(BANKS, 3 if self.days >= 20 else 2))
        ]
        label = "banks more than a week apart"
        self.case(label, "bank_multi_open", "identity", who, events, expected=False)

    def two_cards(self) -> None:
        who = self.person(self.home())
        t = self.when(self._r() * (self.days - 2))
        sim = self.emit("sim.activate", who, t)
        account = self.emit("bank.open", who, t + 3600 * (2 + int(self._r() * 38)))
        self.case(
            "non-local SIM and account in two days",
            "two_cards_combo",
            "identity",
            who,
            [sim, account],
        )

    def two_cards_lookalike(self) -> None:
        """A local person opening both on one day: common and fine."""
        who = self.person()
        t = self.when(self._r() * (self.days - 2))
        sim = self.emit("sim.activate", who, t, device_id=f"dev-{self._people}")
        account = self.emit("bank.open", who, t + 3600)
        label = "local SIM and account on one day"
        self.case(label, "two_cards_combo", "identity", who, [sim, account], expected=False)

    def outlet_surge(self) -> None:
        outlet = self.case_outlet()
        t = self.when(self._r() * (self.days - 1)) - 3 * 3600
        events = [
            self.emit("sim.activate", self.person(self.home()), t + 540 * k, outlet=outlet)
            for k in range(22)
        ]
        label = "22 non-local openings in three hours"
        self.case(label, "outlet_nonlocal_surge", "outlet", outlet.outlet_id, events)

    def outlet_surge_lookalike(self) -> None:
        """A busy market day: many non-local people, but fewer than half the crowd."""
        outlet = self.case_outlet()
        t = self.when(self._r() * (self.days - 1)) - 4 * 3600
        events = []
        for k in range(60):
            who = self.person(self.home()) if k % 5 < 2 else self.person()
            events.append(self.emit("sim.activate", who, t + 300 * k, outlet=outlet))
        label = "24 non-local among 60 openings in a day"
        self.case(
            label, "outlet_nonlocal_surge", "outlet", outlet.outlet_id, events, expected=False
        )

    def gang(self, link: str, people: int = 5, spacing: int = 420) -> list[Event]:
        outlet = self.case_outlet()
        t = self.when(self._r() * (self.days - 1))
        shared = f"{link}-{self._people}"
        events = []
        prefecture = f"{20 + int(self._r() * 10)}"
        home = self.home()
        for k in range(people):
            fields: dict[str, Any] = {"outlet": outlet}
            if link == "prefecture":
                who = self.person(home, prefecture)
            else:
                who = self.person()
                if link == "address_key":
                    fields["delivery"] = {"method": "pickup", "address_key": shared}
                else:
                    fields[link] = shared
            events.append(self.emit("sim.activate", who, t + spacing * k, **fields))
        expected = people >= 5 and spacing * (people - 1) < 3600
        how = f"{people} people sharing {link}" + (
            "" if expected else f", {spacing // 60} min apart"
        )
        self.case(how, "gang_batch_open", "outlet", outlet.outlet_id, events, expected=expected)
        return events

    def ring(self, first: int = 5, second: int = 3) -> list[Event]:
        """A card-opening ring: non-local people brought to two outlets by one dealer's agent.

        They share one device and one pickup address. The first outlet sees
        `first` of them within the hour (a gang alert from 5), the second the
        rest the next day; each is verified remotely, which flags them all.
        Their alerts make one case (CASES.md): the case's label names it.
        """
        outlets = [self.case_outlet(), self.case_outlet()]
        agent = self.dealer()
        device = f"ring-device-{self._people}"
        address = f"ring-address-{self._people}"
        home = self.home()
        day = self._r() * (self.days - 3)
        events = []
        for k in range(first + second):
            at, outlet = (k, 0) if k < first else (k - first, 1)
            who = self.person(home)
            event = self.emit(
                "sim.activate",
                who,
                self.when(day + outlet) // DAY * DAY + OPENING + 600 * at,
                outlet=outlets[outlet],
                agent_id=agent,
                channel="dealer",
                verification="remote_face",
                device_id=device,
                delivery={"method": "pickup", "address_key": address},
            )
            label = f"ring of {first + second}, one device and address, two outlets"
            self.case(label, "sim_nonlocal_not_in_person", "identity", who, [event])
            events.append(event)
        label = f"ring of {first + second}, one device and address, two outlets"
        outlet_id = outlets[0].outlet_id
        self.case(label, "gang_batch_open", "outlet", outlet_id, events[:first], first >= 5)
        return events

    def busy_agent(self, customers: int = 10) -> None:
        """A dealer's staff member whose customers are all non-local and verified remotely."""
        outlet = self.case_outlet()
        agent = self.dealer()
        day = self._r() * (self.days - 6)
        events = []
        for k in range(customers):
            who = self.person(self.home())
            event = self.emit(
                "sim.activate",
                who,
                self.when(day + k / 2),
                outlet=outlet,
                agent_id=agent,
                channel="dealer",
                verification="remote_face",
            )
            self.case(
                "dealer customer, remote verification",
                "sim_nonlocal_not_in_person",
                "identity",
                who,
                [event],
            )
            events.append(event)
        expected = customers >= 10
        label = f"agent with {customers} alerted customers"
        self.case(label, "agent_flag_rate", "agent", agent, events, expected=expected)

    # -------------------------------------------------------------- holdings and their limits

    def number(self) -> str:
        """A phone number of its own: the limit cases tell their SIMs apart by number."""
        self._numbers += 1
        return f"147{self._numbers:08d}"

    def hold(self, who: str, source: str, counts: dict[str, int]) -> None:
        """Part of a case's inventory: what `who` held at `source` when the period began."""
        for kind, count in counts.items():
            self.inventory.add(who, source, kind, count)
        self._held.add(who)

    def sims(self, who: str, source: str, days: list[float], **fields: Any) -> list[Event]:
        """Activations at `source`, one on each of `days`, each with a number of its own."""
        return [
            self.emit(
                "sim.activate", who, self.when(day), source=source, msisdn=self.number(), **fields
            )
            for day in days
        ]

    def carrier_limit_held(self) -> None:
        """Five personal SIMs at a carrier in its snapshot, and a sixth."""
        who = self.person()
        here = self.pick(self.carrier_sources)
        self.hold(who, here, {"personal": SIM_LIMIT})
        sixth = self.sims(who, here, [self._r() * (self.days - 1)])
        label = "held five SIMs at the carrier, opened a sixth"
        self.case(label, "sim_carrier_limit", "identity", who, sixth)

    def carrier_limit_over_the_period(self) -> None:
        """Three SIMs held in two provinces, two opened here, then a sixth and a seventh.

        The fourth and fifth are a look-alike of their own: an alert on them would be unexpected.
        """
        who = self.person()
        carrier = self.pick(CARRIERS)
        here = source_in(carrier, self.province)
        self.hold(who, here, {"personal": 2})
        self.hold(who, source_in(carrier, self.home()), {"personal": 1})
        day = self._r() * (self.days - 10)
        opened = self.sims(who, here, [day, day + 2, day + 4, day + 6 + self._r() * 3])
        label = "three SIMs held in two provinces, two opened, then a sixth and a seventh"
        self.case(label, "sim_carrier_limit", "identity", who, opened[2:])
        label = "the fourth and fifth SIMs of a person who opens more"
        self.case(label, "sim_carrier_limit", "identity", who, opened[:2], expected=False)

    def carrier_limit_two_provinces(self) -> None:
        """A non-local person with three SIMs at home and two here at one carrier; a sixth here."""
        home = self.home()
        who = self.person(home)
        carrier = self.pick(CARRIERS)
        here = source_in(carrier, self.province)
        self.hold(who, source_in(carrier, home), {"personal": 3})
        self.hold(who, here, {"personal": 2})
        sixth = self.sims(who, here, [self._r() * (self.days - 1)])
        label = "five SIMs at the carrier in two provinces, opened a sixth"
        self.case(label, "sim_carrier_limit", "identity", who, sixth)

    def carrier_limit_lookalikes(self) -> None:
        """Exactly five, and five again after a cancellation: neither is more than five."""
        rule = "sim_carrier_limit"
        who = self.person()
        carrier = self.pick(CARRIERS)
        here = source_in(carrier, self.province)
        self.hold(who, here, {"personal": 1})
        self.hold(who, source_in(carrier, self.home()), {"personal": 2})
        day = self._r() * (self.days - 6)
        opened = self.sims(who, here, [day, day + 3 + self._r() * 2])
        self.case("five SIMs at the carrier in two provinces", rule, "identity", who, opened, False)

        who = self.person()
        here = self.pick(self.carrier_sources)
        self.hold(who, here, {"personal": SIM_LIMIT})
        day = self._r() * (self.days - 4)
        cancel = self.emit("sim.cancel", who, self.when(day), source=here, msisdn=self.number())
        reopen = self.sims(who, here, [day + 2 + self._r()])
        label = "cancelled one of five SIMs, opened one"
        self.case(label, rule, "identity", who, [cancel, *reopen], expected=False)

        who = self.person()
        here = self.pick(self.carrier_sources)
        self.hold(who, here, {"personal": SIM_LIMIT - 1})
        day = self._r() * (self.days - 6)
        fifth = self.sims(who, here, [day])
        cancel = self.emit(
            "sim.cancel", who, self.when(day + 2), source=here, msisdn=fifth[0]["msisdn"]
        )
        another = self.sims(who, here, [day + 4 + self._r()])
        label = "opened a fifth SIM, cancelled it, opened another"
        self.case(label, rule, "identity", who, [*fifth, cancel, *another], expected=False)

    def carrier_limit_other_kinds(self) -> None:
        """Five personal SIMs and more that do not count: IoT SIMs, and another carrier's."""
        rule = "sim_carrier_limit"
        who = self.person()
        here = self.pick(self.carrier_sources)
        self.hold(who, here, {"personal": SIM_LIMIT, "iot": 2})
        day = self._r() * (self.days - 4)
        iot = self.sims(who, here, [day, day + 2 + self._r()], sim_kind="iot")
        label = "five personal SIMs, IoT SIMs beyond them"
        self.case(label, rule, "identity", who, iot, expected=False)

        who = self.person()
        first, second = self.random.sample(self.carrier_sources, 2)
        self.hold(who, first, {"personal": SIM_LIMIT})
        self.hold(who, second, {"personal": 1})
        other = self.sims(who, second, [self._r() * (self.days - 1)])
        label = "five SIMs at one carrier, opened one at another"
        self.case(label, rule, "identity", who, other, expected=False)

    def type_one(self, who: str, source: str, day: float, **fields: Any) -> Event:
        """A Type I account opened at `source` on `day` (`fields` may change its class)."""
        fields.setdefault("account_class", "I")
        return self.emit("bank.open", who, self.when(day), source=source, **fields)

    def type_one_limit_held(self) -> None:
        """A Type I account (and a Type II) at a bank in its snapshot; another Type I there."""
        who = self.person()
        here = self.pick(self.bank_sources)
        self.hold(who, here, {"I": 1, "II": 1})
        second = self.type_one(who, here, self._r() * (self.days - 1))
        label = "held a Type I account at the bank, opened another"
        self.case(label, "bank_type1_limit", "identity", who, [second])

    def type_one_limit_two_provinces(self) -> None:
        """A non-local person with a Type I account at home opens another at the same bank here."""
        home = self.home()
        who = self.person(home)
        bank = self.pick(BANKS)
        self.hold(who, source_in(bank, home), {"I": 1})
        second = self.type_one(who, source_in(bank, self.province), self._r() * (self.days - 1))
        label = "held a Type I account at the bank in another province, opened another here"
        self.case(label, "bank_type1_limit", "identity", who, [second])

    def type_one_limit_twice(self) -> None:
        """Two Type I accounts opened at one bank in the period: the second is one too many."""
        who = self.person()
        here = self.pick(self.bank_sources)
        day = self._r() * (self.days - 8)
        first = self.type_one(who, here, day)
        second = self.type_one(who, here, day + 3 + self._r() * 4)
        self.case(
            "opened two Type I accounts at one bank", "bank_type1_limit", "identity", who, [second]
        )
        label = "the first Type I account of a person who opens another"
        self.case(label, "bank_type1_limit", "identity", who, [first], expected=False)

    def type_one_limit_lookalikes(self) -> None:
        """One Type I per bank kept: other classes at its bank, Type I at other banks, a swap."""
        rule = "bank_type1_limit"
        who = self.person()
        here = self.pick(self.bank_sources)
        self.hold(who, here, {"I": 1})
        day = self._r() * (self.days - 6)
        opened = [
            self.type_one(who, here, day, account_class="II"),
            self.type_one(who, here, day + 2, account_class="III"),
            self.type_one(who, here, day + 4, account_class="II"),
            self.type_one(who, here, day + 5, account_kind="corporate", account_class=None),
        ]
        label = "a Type I account, then Type II and III and a corporate account at the bank"
        self.case(label, rule, "identity", who, opened, expected=False)

        who = self.person()
        first, second, third = self.random.sample(self.bank_sources, 3)
        self.hold(who, first, {"I": 1})
        day = self._r() * (self.days - 8)
        opened = [self.type_one(who, second, day), self.type_one(who, third, day + 6)]
        label = "Type I accounts at three banks"
        self.case(label, rule, "identity", who, opened, expected=False)

        who = self.person()
        here = self.pick(self.bank_sources)
        self.hold(who, here, {"I": 1})
        day = self._r() * (self.days - 4)
        close = self.emit("bank.close", who, self.when(day), source=here, account_class="I")
        reopen = self.type_one(who, here, day + 2 + self._r())
        label = "closed the Type I account, opened a new one at the bank"
        self.case(label, rule, "identity", who, [close, reopen], expected=False)

    # -------------------------------------------------------------- implicated cards

    def implicated_outlet(self) -> Outlet:
        """An outlet that has no implicated card yet, in any round.

        An implicated card counts against its outlet and its staff for months:
        a case's outlet then holds exactly the cards the case planted there,
        and a single card stays the only one of its outlet and its staff.
        """
        for _ in range(50):
            outlet: Outlet = self.pick(self.outlets)
            if outlet.outlet_id not in self._implicated_at:
                break
        else:  # fifty tries found only such outlets: one the ordinary business does not use
            outlet = self._outlet(len(self.outlets) + self._more_outlets)
            self._more_outlets += 1
        self._implicated_at.add(outlet.outlet_id)
        return outlet

    def card(self, day: float, outlet: Outlet, agent_id: str, **fields: Any) -> Event:
        """A local person's SIM, opened in person on `day` with a number of its own."""
        return self.emit(
            "sim.activate",
            self.person(),
            self.when(day),
            outlet=outlet,
            agent_id=agent_id,
            msisdn=self.number(),
            **fields,
        )

    def delay(self) -> float:
        """Days from an opening to its report: weeks for some cards, months for most."""
        r = self._r()
        return 2 + 178 * r * r

    def report(self, opening: Event, after: float) -> None:
        """The police find the number `opening` created in a fraud case, `after` days later.

        On a day of its own: a report `after` one day or more is later than the
        opening, one a day or more before (a negative `after`) is earlier.
        """
        opened = datetime.fromisoformat(opening["occurred_at"])
        day = (opened - self.world.as_of) / timedelta(days=1) + after
        if opening["event_type"] == "sim.activate":
            kind, number = "sim", opening["msisdn"]
        else:
            kind, number = "account", opening["account_id"]
        self.report_number(kind, number, day, opening["source"])

    def report_number(self, kind: str, number: str, day: float, source: str) -> None:
        """A `duanka.implicated/1` record on `day` (from the start); half of them name `source`."""
        seconds = OPENING + int(self._r() * HOURS)
        at = self.world.as_of + timedelta(days=math.floor(day), seconds=seconds)
        self._case_refs += 1
        case_ref = f"{at.year}-{PROVINCE_LETTERS[self.province]}-{self._case_refs:04d}"
        named = source if self._r() < 0.5 else None
        self.world.implicated.append(Implicated(kind, number, case_ref, at, named))

    def opener(self, label: str, opening: Event, expected: bool = True) -> None:
        """An `implicated_opener` case: the person who opened the card the report traces to."""
        who = opening["id_number"]
        self.case(label, "implicated_opener", "identity", who, [opening], expected=expected)

    def implicated_outlet_case(self, cards: int = 4) -> None:
        """An outlet whose cards keep turning up in fraud cases, opened by all its staff.

        No staff member opened three of them: the outlet alerts, its staff do not.
        """
        outlet = self.implicated_outlet()
        carrier = self.pick(self.carrier_sources)
        day = self._r() * (self.days - 2 * cards - 1)
        opened = []
        for k in range(cards):
            agent = outlet.agents[k % len(outlet.agents)]
            event = self.card(day + 2 * k + self._r(), outlet, agent, source=carrier)
            self.report(event, self.delay())
            self.opener("opened a SIM at an implicated outlet", event)
            opened.append(event)
        label = f"{cards} implicated cards opened at the outlet by {len(outlet.agents)} staff"
        self.case(label, "outlet_implicated", "outlet", outlet.outlet_id, opened)
        label = "two implicated cards opened by one staff member"
        twice = opened[:: len(outlet.agents)]
        self.case(label, "agent_implicated", "agent", outlet.agents[0], twice, expected=False)

    def implicated_agent_case(self, cards: int = 3) -> None:
        """A dealer's staff member whose cards turn up in fraud cases, opened at two outlets.

        Neither outlet opened three of them: the staff member alerts, the outlets do not.
        """
        outlets = [self.implicated_outlet(), self.implicated_outlet()]
        agent = self.dealer()
        carrier = self.pick(self.carrier_sources)
        day = self._r() * (self.days - 2 * cards - 1)
        opened = []
        for k in range(cards):
            at = outlets[k % 2]
            event = self.card(day + 2 * k + self._r(), at, agent, source=carrier, channel="dealer")
            self.report(event, self.delay())
            self.opener("opened a SIM by an implicated dealer's staff member", event)
            opened.append(event)
        label = f"{cards} implicated cards opened by a dealer's staff member at two outlets"
        self.case(label, "agent_implicated", "agent", agent, opened)
        label = "two implicated cards opened at the outlet by a dealer's staff member"
        first = outlets[0].outlet_id
        self.case(label, "outlet_implicated", "outlet", first, opened[::2], expected=False)

    def implicated_staff(self, cards: int = 3) -> None:
        """One staff member opened the outlet's implicated cards: the outlet and they alert."""
        outlet = self.implicated_outlet()
        agent = self.pick(outlet.agents)
        day = self._r() * (self.days - 2 * cards - 1)
        opened = []
        for k in range(cards):
            event = self.card(day + 2 * k + self._r(), outlet, agent)
            self.report(event, self.delay())
            self.opener("opened a SIM by an implicated staff member", event)
            opened.append(event)
        label = f"{cards} implicated cards opened by one staff member at the outlet"
        self.case(label, "outlet_implicated", "outlet", outlet.outlet_id, opened)
        self.case(label, "agent_implicated", "agent", agent, opened)

    def implicated_outlet_lookalike(self) -> None:
        """Two implicated cards at an outlet, one of them found in two fraud cases: two cards."""
        outlet = self.implicated_outlet()
        day = self._r() * (self.days - 4)
        opened = [self.card(day + 2 * k + self._r(), outlet, outlet.agents[k]) for k in range(2)]
        for event in opened:
            self.report(event, self.delay())
        self.report(opened[0], self.delay())
        self.opener("opened a SIM found in two fraud cases", opened[0])
        self.opener("opened a SIM found in a fraud case", opened[1])
        label = "two implicated cards at the outlet, one of them in two fraud cases"
        rule = "outlet_implicated"
        self.case(label, rule, "outlet", outlet.outlet_id, opened, expected=False)

    def implicated_far_apart(self) -> None:
        """Three implicated cards of one staff member, the first and last over 90 days apart.

        No 90 days hold the three: neither the outlet nor the staff member
        alerts (only in periods of 100 days or more).
        """
        if self.days < 100:
            return
        outlet = self.implicated_outlet()
        agent = self.pick(outlet.agents)
        day = self._r() * (self.days - 97)
        opened = []
        for gap in (0, 46 + self._r(), 92 + 2 * self._r()):
            event = self.card(day + gap, outlet, agent)
            self.report(event, self.delay())
            self.opener("opened a SIM by a staff member with implicated cards", event)
            opened.append(event)
        label = "three implicated cards opened over more than 90 days"
        self.case(label, "outlet_implicated", "outlet", outlet.outlet_id, opened, expected=False)
        self.case(label, "agent_implicated", "agent", agent, opened, expected=False)

    def implicated_singles(self) -> None:
        """Single implicated cards, each the only one of its outlet and its staff.

        A SIM opened at a counter, found within weeks; a SIM and a payment
        account opened online (no outlet or staff to account), and an account
        at a bank's counter, found months later.
        """
        outlet = self.implicated_outlet()
        day = self._r() * (self.days - 1)
        sim = self.card(day, outlet, self.pick(outlet.agents))
        self.report(sim, 2 + 26 * self._r())
        self.opener("opened a SIM found in a fraud case within weeks", sim)

        online = self.emit(
            "sim.activate",
            self.person(),
            self.when(),
            outlet=self.online_outlet,
            msisdn=self.number(),
        )
        self.report(online, 60 + 120 * self._r())
        self.opener("opened a SIM online, found in a fraud case months later", online)

        bank = self.pick(self.bank_sources)
        account = self.emit(
            "bank.open", self.person(), self.when(), source=bank, outlet=self.implicated_outlet()
        )
        self.report(account, 30 + 150 * self._r())
        self.opener("opened a bank account found in a fraud case", account)

        payment = self.emit(
            "bank.open",
            self.person(),
            self.when(),
            source=self.pick(PAYMENT),
            outlet=self.online_outlet,
        )
        self.report(payment, self.delay())
        self.opener("opened a payment account found in a fraud case", payment)

    def implicated_number_reused(self, reported_first: bool) -> None:
        """A number cancelled and given out again, then found in a fraud case.

        The report is traced to whoever held the number when it was reported:
        the first holder if the police reported it before it was given out
        again, else the second. The other holder is a look-alike.
        """
        carrier = self.pick(self.carrier_sources)
        number = self.number()
        traced = self.implicated_outlet()
        day = self._r() * (self.days - 8)
        first = self.emit(
            "sim.activate",
            self.person(),
            self.when(day),
            source=carrier,
            msisdn=number,
            outlet=traced if reported_first else None,
        )
        cancel_day = day + 1 + self._r()
        self.emit(
            "sim.cancel", first["id_number"], self.when(cancel_day), source=carrier, msisdn=number
        )
        second = self.emit(
            "sim.activate",
            self.person(),
            self.when(day + 5 + 2 * self._r()),
            source=carrier,
            msisdn=number,
            outlet=None if reported_first else traced,
        )
        if reported_first:
            self.report(first, 3)  # after the cancellation, before the second opening
            self.opener("held a number reported before it was given out again", first)
            label = "given a number after it was reported: its former holder's"
            self.opener(label, second, expected=False)
        else:
            self.report(second, self.delay())
            self.opener("given a number again, then reported", second)
            label = "held a number given out again before it was reported"
            self.opener(label, first, expected=False)

    def implicated_unknown(self) -> None:
        """Numbers found in fraud cases that match no opening here.

        One opened by someone after the police had reported it (a former
        holder's, before the period): a look-alike. And a SIM and an account
        never opened in the events (another province's, or long ago).
        """
        day = 1 + self._r() * (self.days - 2)
        later = self.emit("sim.activate", self.person(), self.when(day), msisdn=self.number())
        self.report(later, -1 - 60 * self._r())
        self.opener("opened a number reported before: a former holder's", later, expected=False)

        day = self._r() * self.days
        self.report_number("sim", self.number(), day, self.pick(self.carrier_sources))
        account = f"62{int(self._r() * 10**16):016d}"
        self.report_number("account", account, day + self.delay(), self.pick(self.bank_sources))

    def holdings(self) -> list[Holding]:
        """The snapshots: ordinary inventories of everyone else in the events, then the cases'."""
        ordinary = OrdinaryHoldings(
            Random(self.random.getrandbits(64)), self.province, CARRIERS, BANKS
        )
        people = openings(self.world.events, self._held)
        return ordinary.holdings(people) + self.inventory.holdings()

    def inject_every_case(self) -> None:
        """One round: every kind of case, and every look-alike."""
        self._outlet_users.clear()
        injections: list[Callable[[], object]] = [
            self.churner,
            self.churner_lookalike,
            lambda: self.mailer(self.pick(HOTSPOTS)),
            lambda: self.mailer(self.pick(ELSEWHERE)),
            self.mailer_lookalike,
            self.nonlocal_repeat,
            self.nonlocal_repeat_lookalike,
            self.local_repeat_lookalike,
            self.nonlocal_remote,
            self.local_remote_lookalike,
            lambda: self.watchlisted("telecom"),
            lambda: self.watchlisted("bank"),
            lambda: self.watchlisted("all"),
            self.watchlist_lookalikes,
            self.multi_bank,
            self.multi_bank_lookalike,
            self.two_cards,
            self.two_cards_lookalike,
            self.outlet_surge,
            self.outlet_surge_lookalike,
            lambda: self.gang("device_id"),
            lambda: self.gang("contact_phone"),
            lambda: self.gang("address_key"),
            lambda: self.gang("prefecture"),
            lambda: self.gang("device_id", people=4),
            lambda: self.gang("address_key", spacing=2 * 3600),
            self.ring,
            self.busy_agent,
            lambda: self.busy_agent(customers=9),
            self.carrier_limit_held,
            self.carrier_limit_over_the_period,
            self.carrier_limit_two_provinces,
            self.carrier_limit_lookalikes,
            self.carrier_limit_other_kinds,
            self.type_one_limit_held,
            self.type_one_limit_two_provinces,
            self.type_one_limit_twice,
            self.type_one_limit_lookalikes,
            self.implicated_outlet_case,
            self.implicated_agent_case,
            self.implicated_staff,
            self.implicated_outlet_lookalike,
            self.implicated_far_apart,
            self.implicated_singles,
            lambda: self.implicated_number_reused(reported_first=True),
            lambda: self.implicated_number_reused(reported_first=False),
            self.implicated_unknown,
        ]
        for inject in injections:
            inject()

    def build(self, ordinary_people: int, rounds: int = 1) -> World:
        """Ordinary business, `rounds` of every injected case, events in event-time order.

        Then the inventory snapshots, as of the start of the period; the
        police's implicated numbers go in the order they reported them.
        """
        if rounds and self.days < MIN_CASE_DAYS:
            raise ValueError(f"injected cases need a period of {MIN_CASE_DAYS} days or more")
        with collector_paused():
            self.ordinary(ordinary_people)
            for _ in range(rounds):
                self.inject_every_case()
            self.world.holdings = self.holdings()
        self.world.events.sort(key=lambda e: (e["occurred_at"], e["source"], e["event_id"]))
        self.world.implicated.sort(key=lambda r: (r.reported_at, r.case_ref))
        self.world.people = self._people
        return self.world


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off while a world is built.

    A world is millions of small dicts and tuples and no reference cycles;
    the collector would walk every one of them each time the heap grew by a
    quarter, for nothing (a third of the time the holdings take).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def simulate(
    events: int,
    days: int = 30,
    seed: int = 2026,
    start: date = date(2026, 1, 1),
    province: str = "62",
    rounds: int | None = None,
) -> World:
    """A province of about `events` events over `days`, outlets and cases scaled to fit.

    There are enough outlets that ordinary business stays near
    OPENERS_PER_OUTLET_DAY openers a day each, and about one round of cases
    per 10,000 events (at least one).
    """
    people = max(1, int(events / EVENTS_PER_PERSON))
    outlets = max(40, people // (days * OPENERS_PER_OUTLET_DAY))
    if rounds is None:
        rounds = max(1, events // 10_000)
    simulator = Simulator(seed=seed, start=start, days=days, province=province, outlets=outlets)
    people -= rounds * PEOPLE_PER_ROUND
    return simulator.build(max(0, people), rounds)


# measured on the simulator's own output: events per ordinary person, and the
# people one round of cases adds
EVENTS_PER_PERSON = 1.52
PEOPLE_PER_ROUND = 190


def iter_lines(events: list[Event]) -> Iterator[bytes]:
    """Each event as one JSON line (without a newline), optional fields left out when None."""
    dumps = orjson.dumps
    for event in events:
        if None in event.values():
            yield dumps({k: v for k, v in event.items() if v is not None})
        else:
            yield dumps(event)
