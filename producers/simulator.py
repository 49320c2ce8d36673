"""A province in a box: carriers' and banks' openings, with labelled fraud.

The simulator writes what a province's carriers and banks would send: SIM
activations and cancellations, account openings and closings, from counters,
dealers and online channels, over a period, by people from the province and
from elsewhere. Into that ordinary business it injects labelled cases of
every pattern the rules look for, each with the events that should trigger
it. Ordinary people are scripted so that they do not look like fraud: one
SIM, perhaps an account, a cancellation at most, non-local people at the
counter in person. Seeded: the same seed gives the same files.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from rules.idnumber import check_digit

CST = timezone(timedelta(hours=8))
CARRIERS = ("CMCC", "CUCC", "CTCC")
BANKS = ("ICBC", "ABC", "BOC", "CCB", "PSBC")
PAYMENT = ("ALIPAY", "WECHATPAY")
# where non-local customers come from, roughly
HOME_PROVINCES = ("51", "61", "64", "63", "65", "41", "50", "53", "45", "44")

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Case:
    """A labelled scenario: which rule should fire, on whom, on which events."""

    label: str
    rule_id: str
    subject_kind: str  # identity, outlet or agent
    subject: str  # an id number, an outlet_id or an agent_id
    triggers: tuple[str, ...]  # "source/event_id" of the events that should alert


@dataclass
class Outlet:
    outlet_id: str
    region_code: str
    agents: tuple[str, ...]


@dataclass
class World:
    events: list[Event] = field(default_factory=list)
    watchlist: list[Event] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)


class Simulator:
    """Builds a World: ordinary business plus injected cases."""

    def __init__(
        self,
        seed: int = 2026,
        start: date = date(2026, 1, 1),
        days: int = 30,
        province: str = "62",
        outlets: int = 40,
    ) -> None:
        self.random = random.Random(seed)
        self.start = datetime(start.year, start.month, start.day, tzinfo=CST)
        self.days = days
        self.province = province
        self.capital = f"{province}0100"
        self.outlets = [self._outlet(n) for n in range(outlets)]
        self.world = World()
        self._people = 0
        self._serial: dict[str, int] = {}

    # -------------------------------------------------------------- building blocks

    def _outlet(self, number: int) -> Outlet:
        county = f"{self.province}{1 + number % 12:02d}{1 + number % 5:02d}"
        agents = tuple(f"A-{number:03d}{k}" for k in range(3))
        return Outlet(f"{self.province}-OUT-{number:04d}", county, agents)

    def person(self, province: str | None = None, prefecture: str = "01") -> str:
        """A new, valid resident id number; by default from the simulated province."""
        self._people += 1
        n = self._people
        home = province or self.province
        # county, sequence and a birth date in a block of its own: never the same twice
        block = n // 100_000
        birth = date(1960, 1, 1) + timedelta(days=block * 61 + self.random.randint(0, 60))
        first17 = f"{home}{prefecture}{n % 100:02d}{birth:%Y%m%d}{n // 100 % 1000:03d}"
        return first17 + check_digit(first17)

    def when(self, day: float | None = None) -> datetime:
        """A moment in the period: on `day` (from the start) or at random, in opening hours."""
        if day is None:
            day = self.random.uniform(0, self.days - 1)
        base = self.start + timedelta(days=int(day))
        return base + timedelta(hours=8, seconds=self.random.randint(0, 12 * 3600))

    def emit(self, event_type: str, id_number: str, at: datetime, **fields: Any) -> Event:
        bank = event_type.startswith("bank.")
        source = fields.pop("source", None) or (
            f"{self.random.choice(BANKS)}-GS" if bank else f"{self.random.choice(CARRIERS)}-GS"
        )
        self._serial[source] = serial = self._serial.get(source, 0) + 1
        outlet = fields.pop("outlet", None) or self.random.choice(self.outlets)
        event: Event = {
            "schema": "duanka.event/1",
            "event_id": f"{source}-{serial:08d}",
            "event_type": event_type,
            "occurred_at": at.isoformat(),
            "source": source,
            "id_type": "resident_id",
            "id_number": id_number,
            "region_code": outlet.region_code,
            "outlet_id": outlet.outlet_id,
            "agent_id": self.random.choice(outlet.agents),
            "channel": "counter",
            "verification": "in_person",
        }
        if not bank:
            event["msisdn"] = f"1{self.random.randint(3, 9)}{self._people:09d}"
        if event_type == "sim.activate":
            event["sim_kind"] = "personal"
        if bank:
            event["account_id"] = f"62{self.random.randint(10**15, 10**16 - 1)}"
        if event_type == "bank.open":
            event["account_kind"] = "payment" if source in PAYMENT else "personal"
        event.update(fields)
        self.world.events.append(event)
        return event

    def online(self) -> dict[str, Any]:
        """The fields of an opening through the carrier's own online channel."""
        return {
            "outlet": Outlet("online", self.capital, ("",)),
            "channel": "online",
            "verification": "remote_face",
            "agent_id": None,
        }

    def case(self, label: str, rule_id: str, kind: str, subject: str, *events: Event) -> None:
        triggers = tuple(f"{e['source']}/{e['event_id']}" for e in events)
        self.world.cases.append(Case(label, rule_id, kind, subject, triggers))

    # -------------------------------------------------------------- ordinary business

    def ordinary(self, people: int) -> None:
        """People who open a SIM, maybe an account, and rarely cancel: nothing to flag."""
        for _ in range(people):
            if self.random.random() < 0.15:
                self._ordinary_nonlocal()
            else:
                self._ordinary_local()

    def _ordinary_local(self) -> None:
        who = self.person()
        day = self.random.uniform(0, self.days - 1)
        if self.random.random() < 0.3:
            mail = {
                "method": "mail",
                "region_code": self.random.choice(self.outlets).region_code,
                "address_key": f"addr-{self._people}",
            }
            self.emit("sim.activate", who, self.when(day), **self.online(), delivery=mail)
        else:
            self.emit("sim.activate", who, self.when(day), device_id=f"dev-{self._people}")
        if self.random.random() < 0.4:
            self.emit(
                "bank.open", who, self.when(min(day + self.random.uniform(0, 10), self.days - 1))
            )
        if self.random.random() < 0.08:
            self.emit("sim.cancel", who, self.when(self.days - 1))
        if self.random.random() < 0.03:
            self.emit("bank.close", who, self.when(self.days - 1))

    def _ordinary_nonlocal(self) -> None:
        who = self.person(self.random.choice(HOME_PROVINCES), f"{self.random.randint(1, 20):02d}")
        day = self.random.uniform(0, max(self.days - 4, 1))
        self.emit("sim.activate", who, self.when(day))  # at the counter, in person
        if self.random.random() < 0.2 and day + 3 < self.days:
            self.emit("bank.open", who, self.when(day + 3 + self.random.uniform(0, 1)))

    # -------------------------------------------------------------- injected cases

    def churner(self) -> None:
        who = self.person()
        outlet = self.random.choice(self.outlets)
        day = self.random.uniform(0, self.days - 8)
        cancels = []
        for step in range(3):
            self.emit("sim.activate", who, self.when(day + 2 * step), outlet=outlet)
            cancels.append(
                self.emit("sim.cancel", who, self.when(day + 2 * step + 1), outlet=outlet)
            )
        self.case("churner", "sim_churn", "identity", who, cancels[-1])

    def mailer(self, destination: str) -> None:
        who = self.person()
        mail = {"method": "mail", "region_code": destination, "address_key": f"addr-{self._people}"}
        event = self.emit("sim.activate", who, self.when(), **self.online(), delivery=mail)
        self.case(f"mailed to {destination}", "sim_mail_out_of_province", "identity", who, event)

    def nonlocal_repeat(self) -> None:
        who = self.person(self.random.choice(HOME_PROVINCES))
        day = self.random.uniform(0, self.days - 10)
        self.emit("sim.activate", who, self.when(day))
        second = self.emit("sim.activate", who, self.when(day + self.random.uniform(2, 9)))
        self.case(
            "second SIM within 30 days", "sim_nonlocal_monthly_limit", "identity", who, second
        )

    def nonlocal_remote(self) -> None:
        who = self.person(self.random.choice(HOME_PROVINCES))
        event = self.emit("sim.activate", who, self.when(), **self.online())
        self.case("non-local, remote", "sim_nonlocal_not_in_person", "identity", who, event)

    def watchlisted(self, scope: str) -> None:
        who = self.person()
        self.world.watchlist.append(
            self.watch_entry(who, scope, self.start.date() - timedelta(days=90))
        )
        kind = "bank.open" if scope == "bank" else "sim.activate"
        event = self.emit(kind, who, self.when())
        self.case(f"watchlisted ({scope})", "watchlist_hit", "identity", who, event)

    def watchlist_expired(self) -> None:
        """A look-alike: an entry that ended before the person's opening."""
        who = self.person()
        entry = self.watch_entry(who, "all", self.start.date() - timedelta(days=900))
        entry["until"] = (self.start.date() - timedelta(days=1)).isoformat()
        self.world.watchlist.append(entry)
        self.emit("sim.activate", who, self.when())

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
        day = self.random.uniform(0, self.days - 7)
        events = [
            self.emit("bank.open", who, self.when(day + 2 * k), source=f"{bank}-GS")
            for k, bank in enumerate(self.random.sample(BANKS, 3))
        ]
        self.case("three banks in a week", "bank_multi_open", "identity", who, events[-1])

    def two_cards(self) -> None:
        who = self.person(self.random.choice(HOME_PROVINCES))
        at = self.when(self.random.uniform(0, self.days - 2))
        self.emit("sim.activate", who, at)
        account = self.emit("bank.open", who, at + timedelta(hours=self.random.randint(2, 40)))
        self.case("SIM and account in two days", "two_cards_combo", "identity", who, account)

    def outlet_surge(self) -> None:
        outlet = self.random.choice(self.outlets)
        at = self.when(self.random.uniform(0, self.days - 1))
        events = [
            self.emit(
                "sim.activate",
                self.person(self.random.choice(HOME_PROVINCES)),
                at + timedelta(minutes=9 * k),
                outlet=outlet,
            )
            for k in range(22)
        ]
        self.case(
            "non-local surge", "outlet_nonlocal_surge", "outlet", outlet.outlet_id, events[19]
        )

    def gang(self, link: str) -> None:
        outlet = self.random.choice(self.outlets)
        at = self.when(self.random.uniform(0, self.days - 1))
        shared = f"{link}-{self._people}"
        events = []
        for k in range(5):
            fields: dict[str, Any] = {"outlet": outlet}
            if link == "prefecture":
                who = self.person("51", "34")
            else:
                who = self.person()
                if link == "address_key":
                    fields["delivery"] = {"method": "pickup", "address_key": shared}
                else:
                    fields[link] = shared
            events.append(self.emit("sim.activate", who, at + timedelta(minutes=7 * k), **fields))
        self.case(f"gang sharing {link}", "gang_batch_open", "outlet", outlet.outlet_id, events[-1])

    def busy_agent(self) -> None:
        outlet = self.random.choice(self.outlets)
        agent = outlet.agents[0]
        day = self.random.uniform(0, self.days - 6)
        events = [
            self.emit(
                "sim.activate",
                self.person(self.random.choice(HOME_PROVINCES)),
                self.when(day + k / 2),
                outlet=outlet,
                agent_id=agent,
                channel="dealer",
                verification="remote_face",
            )
            for k in range(10)
        ]
        self.case("agent with ten flagged customers", "agent_flag_rate", "agent", agent, events[-1])

    def inject_every_case(self) -> None:
        injections: list[Callable[[], None]] = [
            self.churner,
            lambda: self.mailer("530102"),
            lambda: self.mailer("510104"),
            self.nonlocal_repeat,
            self.nonlocal_remote,
            lambda: self.watchlisted("telecom"),
            lambda: self.watchlisted("bank"),
            self.watchlist_expired,
            self.multi_bank,
            self.two_cards,
            self.outlet_surge,
            lambda: self.gang("device_id"),
            lambda: self.gang("contact_phone"),
            lambda: self.gang("address_key"),
            lambda: self.gang("prefecture"),
            self.busy_agent,
        ]
        for inject in injections:
            inject()

    def build(self, ordinary_people: int, rounds: int = 1) -> World:
        """Ordinary business, `rounds` of every injected case, events in event-time order."""
        self.ordinary(ordinary_people)
        for _ in range(rounds):
            self.inject_every_case()
        self.world.events.sort(key=lambda e: (e["occurred_at"], e["source"], e["event_id"]))
        return self.world


def iter_lines(events: list[Event]) -> Iterator[bytes]:
    import orjson

    for event in events:
        yield orjson.dumps({k: v for k, v in event.items() if v is not None})
