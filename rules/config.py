"""Settings: config.yaml, with environment variables on top.

The defaults below are the ones config.yaml ships with (a test keeps the two
equal), so a command run outside the repository still gets sane values.
Unknown keys are errors: a misspelt threshold must not pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from rules.errors import ConfigError

CONFIG_ENV = "DUANKA_CONFIG"
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("review", "block", "report")


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names, and how `duanka topics create` makes them."""

    sim_events: str = "carrier.sim-events"
    bank_events: str = "bank.account-events"
    watchlist: str = "screening.watchlist"
    alerts: str = "police.alerts"
    deadletter: str = "screening.deadletter"
    holdings: str = "screening.holdings"
    decisions: str = "screening.decisions"
    dispositions: str = "police.dispositions"
    cases: str = "police.cases"
    identity_events: str = "duanka.identity-events"
    outlet_events: str = "duanka.outlet-events"
    agent_signals: str = "duanka.agent-signals"
    case_links: str = "duanka.case-links"
    implicated: str = "police.implicated"
    number_events: str = "duanka.number-events"
    place_events: str = "duanka.place-events"
    traces: str = "duanka.traces"
    partitions: int = 4
    replication_factor: int = 1

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.sim_events, self.bank_events)

    @property
    def compacted(self) -> frozenset[str]:
        """The topics that keep the latest record per key (lists, snapshots, verdicts)."""
        return frozenset(
            {self.watchlist, self.holdings, self.dispositions, self.cases, self.traces}
        )

    def names(self) -> dict[str, str]:
        """Every topic name by its config key."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "str"}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    app_id: str = "duanka"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: str = ".duanka/worker"
    # how long a caught-up input partition may stay quiet before events from
    # the others are released without waiting for it (KIP-353's max.task.idle.ms)
    order_idle_ms: int = 500
    # how often, at most, a sender tells the next stage how far it has got
    # when it has nothing else to send; and how often it does in any case
    tick_ms: int = 100
    heartbeat_ms: int = 1000
    # how long the input reader collects records before it sends them on
    linger_ms: int = 20
    # the most input records the reader takes from Kafka at a time
    max_batch: int = 5000
    # how often each stage makes its state durable and commits (the flush)
    commit_ms: int = 1000
    # decoded subjects each partition of a stage keeps between flushes
    cache_keys: int = 10000
    # how long a record may wait for Kafka before the worker gives up and stops
    delivery_timeout_ms: int = 120000


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """The pre-opening check (`POST /v1/check`, CHECK.md)."""

    # how long the check waits for the identity's state to include every
    # event already read for it before it answers with "stale": true
    max_wait_ms: int = 50
    # how long an allow or review holds the opening's slot in the limits
    reservation_ttl: str = "15m"
    # how long a check_id's first decision is given again to a repeated request
    remember: str = "24h"

    @property
    def reservation_ttl_s(self) -> int:
        return parse_duration(self.reservation_ttl)

    @property
    def remember_s(self) -> int:
        return parse_duration(self.remember)


@dataclass(frozen=True, slots=True)
class CaseSettings:
    """Cases: alerts linked through what their subjects share (CASES.md)."""

    # alerts whose events are at most this far apart in event time are linked
    # when they share an identity, device, contact phone, address, outlet or agent
    window: str = "30d"
    # what links alerts: any of identity, device, contact, address, outlet, agent
    link_by: tuple[str, ...] = ("identity", "device", "contact", "address", "outlet", "agent")
    # a disposition for an alert not known yet waits this long (for the alert
    # to reach the cases) before it is dead-lettered as unknown
    unknown_grace: str = "2m"

    @property
    def window_s(self) -> int:
        return parse_duration(self.window)

    @property
    def unknown_grace_s(self) -> int:
        return parse_duration(self.unknown_grace)


@dataclass(frozen=True, slots=True)
class ImplicatedSettings:
    """Implicated cards: numbers found in fraud cases traced to their openings (CASES.md)."""

    # how long the engine keeps an opening to trace a number to (a report
    # of a card opened longer ago matches nothing)
    retention: str = "730d"

    @property
    def retention_s(self) -> int:
        return parse_duration(self.retention)


LINK_ATTRIBUTES = ("identity", "device", "contact", "address", "outlet", "agent")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """The police console's users and sessions."""

    # the console's users and their password hashes (`duanka users`)
    users_file: str = ".duanka/console-users.json"
    # how long a signed-in session lasts without a request, and at most
    idle: str = "30m"
    session: str = "8h"

    @property
    def idle_s(self) -> int:
        return parse_duration(self.idle)

    @property
    def session_s(self) -> int:
        return parse_duration(self.session)


PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every client authenticates to the brokers (`kafka.security`).

    PLAINTEXT sends nothing; SASL_* log in as `username` with `password`
    (better given in DUANKA_KAFKA_USERNAME / DUANKA_KAFKA_PASSWORD than in a
    file); SSL and SASL_SSL check the brokers' certificates against
    `ssl_cafile` (empty: the system's trusted CAs). With SSL the client
    certificate `ssl_certfile` (and its key, `ssl_keyfile`) names the user.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def parse_duration(text: str) -> int:
    """Seconds in a duration written as a number and a unit: `90s`, `60m`, `48h`, `365d`."""
    number, unit = text[:-1], text[-1:]
    if unit not in DURATION_UNITS or not number.isdigit():
        raise ConfigError(f"{text!r} is not a duration like 60m, 48h or 365d")
    return int(number) * DURATION_UNITS[unit]


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """What every rule has: on or off, how bad, what to do, and its cooldown ("" for none)."""

    enabled: bool = True
    severity: str = "high"
    action: str = "review"
    cooldown: str = ""

    @property
    def cooldown_s(self) -> int:
        return parse_duration(self.cooldown) if self.cooldown else 0


@dataclass(frozen=True, slots=True)
class WindowedRuleConfig(RuleConfig):
    window: str = "1d"

    @property
    def window_s(self) -> int:
        return parse_duration(self.window)


@dataclass(frozen=True, slots=True)
class ChurnSettings(WindowedRuleConfig):
    """`sim_churn`: repeated cancellations."""

    severity: str = "medium"
    cooldown: str = "30d"
    window: str = "365d"
    cancels: int = 3


@dataclass(frozen=True, slots=True)
class MailRuleSettings(RuleConfig):
    """`sim_mail_out_of_province`."""

    severity: str = "medium"
    escalated_severity: str = "high"
    hotspot_provinces: tuple[str, ...] = ("53", "45")


@dataclass(frozen=True, slots=True)
class NonlocalLimitSettings(WindowedRuleConfig):
    """`sim_nonlocal_monthly_limit`."""

    action: str = "block"
    window: str = "30d"
    activations: int = 2


@dataclass(frozen=True, slots=True)
class NotInPersonSettings(RuleConfig):
    """`sim_nonlocal_not_in_person`."""

    severity: str = "medium"


@dataclass(frozen=True, slots=True)
class WatchlistSettings(RuleConfig):
    """`watchlist_hit`."""

    severity: str = "critical"
    action: str = "block"


@dataclass(frozen=True, slots=True)
class CarrierLimitSettings(RuleConfig):
    """`sim_carrier_limit` (一证五号)."""

    action: str = "block"
    sims: int = 5


@dataclass(frozen=True, slots=True)
class TypeOneLimitSettings(RuleConfig):
    """`bank_type1_limit` (一人一行一个I类户)."""

    action: str = "block"
    accounts: int = 1


@dataclass(frozen=True, slots=True)
class MultiBankSettings(WindowedRuleConfig):
    """`bank_multi_open`."""

    cooldown: str = "7d"
    window: str = "7d"
    banks: int = 3


@dataclass(frozen=True, slots=True)
class TwoCardsSettings(WindowedRuleConfig):
    """`two_cards_combo`."""

    cooldown: str = "7d"
    window: str = "48h"


@dataclass(frozen=True, slots=True)
class SurgeSettings(WindowedRuleConfig):
    """`outlet_nonlocal_surge`."""

    cooldown: str = "24h"
    window: str = "24h"
    nonlocal_openings: int = 20
    nonlocal_share: float = 0.5


@dataclass(frozen=True, slots=True)
class GangSettings(WindowedRuleConfig):
    """`gang_batch_open`."""

    severity: str = "critical"
    action: str = "report"
    cooldown: str = "60m"
    window: str = "60m"
    identities: int = 5


@dataclass(frozen=True, slots=True)
class AgentFlagSettings(WindowedRuleConfig):
    """`agent_flag_rate`."""

    cooldown: str = "30d"
    window: str = "30d"
    identities: int = 10


@dataclass(frozen=True, slots=True)
class ImplicatedOpenerSettings(RuleConfig):
    """`implicated_opener`: a card this identity opened turned up in a fraud case."""

    action: str = "report"


@dataclass(frozen=True, slots=True)
class ImplicatedPlaceSettings(WindowedRuleConfig):
    """`outlet_implicated`, `agent_implicated` (谁开卡谁负责, 一案双查)."""

    cooldown: str = "90d"
    window: str = "90d"
    cards: int = 3


@dataclass(frozen=True, slots=True)
class RuleSettings:
    sim_churn: ChurnSettings = field(default_factory=ChurnSettings)
    sim_mail_out_of_province: MailRuleSettings = field(default_factory=MailRuleSettings)
    sim_nonlocal_monthly_limit: NonlocalLimitSettings = field(default_factory=NonlocalLimitSettings)
    sim_nonlocal_not_in_person: NotInPersonSettings = field(default_factory=NotInPersonSettings)
    watchlist_hit: WatchlistSettings = field(default_factory=WatchlistSettings)
    bank_multi_open: MultiBankSettings = field(default_factory=MultiBankSettings)
    two_cards_combo: TwoCardsSettings = field(default_factory=TwoCardsSettings)
    outlet_nonlocal_surge: SurgeSettings = field(default_factory=SurgeSettings)
    gang_batch_open: GangSettings = field(default_factory=GangSettings)
    agent_flag_rate: AgentFlagSettings = field(default_factory=AgentFlagSettings)
    sim_carrier_limit: CarrierLimitSettings = field(default_factory=CarrierLimitSettings)
    bank_type1_limit: TypeOneLimitSettings = field(default_factory=TypeOneLimitSettings)
    implicated_opener: ImplicatedOpenerSettings = field(default_factory=ImplicatedOpenerSettings)
    outlet_implicated: ImplicatedPlaceSettings = field(default_factory=ImplicatedPlaceSettings)
    agent_implicated: ImplicatedPlaceSettings = field(default_factory=ImplicatedPlaceSettings)


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    topics: Topics = field(default_factory=Topics)
    pseudonym_key: str = ""
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    rules: RuleSettings = field(default_factory=RuleSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    cases: CaseSettings = field(default_factory=CaseSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    implicated: ImplicatedSettings = field(default_factory=ImplicatedSettings)


def default_config_path() -> Path | None:
    """The config file used when none is named: ./config.yaml, else the repository's."""
    for candidate in (Path("config.yaml"), Path(__file__).resolve().parents[1] / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from `path` (or $DUANKA_CONFIG, or the default file), then the environment."""
    env = os.environ if environ is None else environ
    chosen = Path(path) if path else Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None
    if chosen is not None and not chosen.is_file():
        raise ConfigError(f"config file {chosen} does not exist")
    chosen = chosen or default_config_path()
    document: Mapping[str, Any] = {}
    if chosen is not None:
        document = _read_yaml(chosen)
    return apply_environment(settings_from_mapping(document, str(chosen)), env)


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def settings_from_mapping(document: Mapping[str, Any], origin: str = "config") -> Settings:
    """Build Settings from a parsed config document, naming the key of any error."""
    sections = {
        "kafka",
        "topics",
        "pseudonym",
        "worker",
        "rules",
        "check",
        "cases",
        "console",
        "implicated",
    }
    _reject_unknown(document, sections, origin)
    kafka = _section(document, "kafka", origin)
    _reject_unknown(kafka, {"bootstrap", "security"}, f"{origin}: kafka")
    pseudonym = _section(document, "pseudonym", origin)
    _reject_unknown(pseudonym, {"key"}, f"{origin}: pseudonym")
    rules = _section(document, "rules", origin)
    _reject_unknown(rules, {f.name for f in fields(RuleSettings)}, f"{origin}: rules")
    return Settings(
        bootstrap=_typed(kafka, "bootstrap", str, Settings().bootstrap, f"{origin}: kafka"),
        security=_security(_section(kafka, "security", f"{origin}: kafka"), origin),
        topics=_build(Topics, _section(document, "topics", origin), f"{origin}: topics"),
        pseudonym_key=_typed(pseudonym, "key", str, "", f"{origin}: pseudonym") or "",
        worker=_build(WorkerSettings, _section(document, "worker", origin), f"{origin}: worker"),
        rules=_rule_settings(rules, f"{origin}: rules"),
        check=_check(_section(document, "check", origin), f"{origin}: check"),
        cases=_cases(_section(document, "cases", origin), f"{origin}: cases"),
        console=_console(_section(document, "console", origin), f"{origin}: console"),
        implicated=_implicated(_section(document, "implicated", origin), f"{origin}: implicated"),
    )


def _durations(built: Any, names: tuple[str, ...], where: str) -> None:
    """Each named duration parses and is at least a second."""
    for name in names:
        try:
            seconds = parse_duration(getattr(built, name))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{name}: {exc}") from exc
        if seconds < 1:
            raise ConfigError(f"{where}.{name} must be at least 1s")


def _cases(section: Mapping[str, Any], where: str) -> CaseSettings:
    built: CaseSettings = _build(CaseSettings, section, where)
    _durations(built, ("window", "unknown_grace"), where)
    for name in built.link_by:
        _choice(name, LINK_ATTRIBUTES, f"{where}.link_by")
    return built


def _implicated(section: Mapping[str, Any], where: str) -> ImplicatedSettings:
    built: ImplicatedSettings = _build(ImplicatedSettings, section, where)
    _durations(built, ("retention",), where)
    return built


def _console(section: Mapping[str, Any], where: str) -> ConsoleSettings:
    built: ConsoleSettings = _build(ConsoleSettings, section, where)
    _durations(built, ("idle", "session"), where)
    if not built.users_file:
        raise ConfigError(f"{where}.users_file must not be empty")
    return built


def _check(section: Mapping[str, Any], where: str) -> CheckSettings:
    built: CheckSettings = _build(CheckSettings, section, where)
    if built.max_wait_ms < 0:
        raise ConfigError(f"{where}.max_wait_ms must not be negative")
    _durations(built, ("reservation_ttl", "remember"), where)
    return built


def _security(section: Mapping[str, Any], origin: str) -> KafkaSecurity:
    built: KafkaSecurity = _build(KafkaSecurity, section, f"{origin}: kafka.security")
    return _checked_security(built, f"{origin}: kafka.security")


def _checked_security(security: KafkaSecurity, where: str) -> KafkaSecurity:
    _choice(security.protocol, PROTOCOLS, f"{where}.protocol")
    _choice(security.sasl_mechanism, SASL_MECHANISMS, f"{where}.sasl_mechanism")
    return security


def _rule_settings(rules: Mapping[str, Any], where: str) -> RuleSettings:
    built: dict[str, Any] = {
        f.name: _rule(_RULE_CLASSES[f.name], _section(rules, f.name, where), f"rules.{f.name}")
        for f in fields(RuleSettings)
    }
    return RuleSettings(**built)


_RULE_CLASSES: dict[str, type[RuleConfig]] = {
    f.name: type(getattr(RuleSettings(), f.name)) for f in fields(RuleSettings)
}


def _rule(cls: type[RuleConfig], section: Mapping[str, Any], where: str) -> RuleConfig:
    built: RuleConfig = _build(cls, section, where)
    _choice(built.severity, SEVERITIES, f"{where}.severity")
    _choice(built.action, ACTIONS, f"{where}.action")
    for name in ("cooldown", "window"):
        value = getattr(built, name, "")
        if value:
            try:
                parse_duration(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{name}: {exc}") from exc
    for name in ("cancels", "activations", "banks", "nonlocal_openings", "identities", "cards"):
        if getattr(built, name, 1) < 1:
            raise ConfigError(f"{where}.{name} must be at least 1")
    for name in ("sims", "accounts"):  # a limit of 0: no opening at all is allowed
        if getattr(built, name, 0) < 0:
            raise ConfigError(f"{where}.{name} must not be negative")
    if isinstance(built, SurgeSettings) and not 0 < built.nonlocal_share <= 1:
        raise ConfigError(f"{where}.nonlocal_share must be above 0 and at most 1")
    if isinstance(built, MailRuleSettings):
        _choice(built.escalated_severity, SEVERITIES, f"{where}.escalated_severity")
        for code in built.hotspot_provinces:
            if not (len(code) == 2 and code.isdigit()):
                raise ConfigError(
                    f"{where}.hotspot_provinces: {code!r} is not a 2-digit province code"
                )
    return built


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


def _section(document: Mapping[str, Any], key: str, origin: str) -> Mapping[str, Any]:
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{origin}: {key} must be a mapping")
    return value


def _reject_unknown(section: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")


def _typed(section: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = section.get(key, default)
    if value is None:
        return default
    if kind is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key} must be a list of strings")
        return tuple(value)
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConfigError(f"{where}.{key} must be a number")
    if kind is float:
        return float(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}.{key} must be an integer")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


_KINDS: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "tuple[str, ...]": tuple,
}


def _build(cls: Any, section: Mapping[str, Any], where: str) -> Any:
    """Fill the flat dataclass `cls` from `section`, type-checked against its annotations."""
    known = {f.name: f for f in fields(cls)}
    _reject_unknown(section, set(known), where)
    values = {
        name: _typed(section, name, _KINDS[str(f.type)], getattr(cls(), name), where)
        for name, f in known.items()
    }
    return cls(**values)


def apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Environment variables override the file (12-factor style, for containers)."""
    renamed = {
        name: environ[f"DUANKA_TOPIC_{name.upper()}"]
        for name in settings.topics.names()
        if environ.get(f"DUANKA_TOPIC_{name.upper()}")
    }
    topics = replace(settings.topics, **renamed)  # type: ignore[arg-type]
    worker = settings.worker
    if environ.get("DUANKA_WEB_HOST"):
        worker = replace(worker, web_host=environ["DUANKA_WEB_HOST"])
    if environ.get("DUANKA_WEB_PORT"):
        worker = replace(worker, web_port=_env_int(environ, "DUANKA_WEB_PORT"))
    if environ.get("DUANKA_DATA_DIR"):
        worker = replace(worker, data_dir=environ["DUANKA_DATA_DIR"])
    return replace(
        settings,
        bootstrap=environ.get("DUANKA_BOOTSTRAP") or settings.bootstrap,
        security=_security_from_environment(settings.security, environ),
        topics=topics,
        worker=worker,
    )


SECURITY_ENV = {
    "protocol": "DUANKA_KAFKA_PROTOCOL",
    "username": "DUANKA_KAFKA_USERNAME",
    "password": "DUANKA_KAFKA_PASSWORD",
}


def _security_from_environment(
    security: KafkaSecurity, environ: Mapping[str, str]
) -> KafkaSecurity:
    given = {key: environ[name] for key, name in SECURITY_ENV.items() if environ.get(name)}
    if "protocol" in given:
        _choice(given["protocol"], PROTOCOLS, SECURITY_ENV["protocol"])
    return replace(security, **given) if given else security


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, not {environ[name]!r}") from exc
