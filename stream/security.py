"""Access control: how duanka's clients log in, and what each party may do on the brokers.

Every Kafka client duanka makes takes its security options from one of the
three functions here (kafka-python, aiokafka, faust), built from
``kafka.security`` in the settings. :func:`acl_set` is the one list of ACLs a
deployment applies (``duanka acls apply``): each party has its own principal
and may touch only its own topics. Users are SCRAM credentials stored by the
brokers (``duanka kafka-users add``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
    UserScramCredentialUpsertion,
)

from rules.config import KafkaSecurity, Settings
from rules.errors import ConfigError, DuankaError

#: PBKDF2 iterations of a stored SCRAM credential (Kafka accepts 4096 to 16384).
SCRAM_ITERATIONS = 8192


class AccessControlError(DuankaError):
    """The brokers refused to store users or ACLs."""


# ------------------------------------------------------------------- clients


def _checked(security: KafkaSecurity) -> KafkaSecurity:
    if security.uses_sasl and not (security.username and security.password):
        raise ConfigError(
            f"kafka.security.protocol is {security.protocol}: set kafka.security.username and "
            "a password (DUANKA_KAFKA_USERNAME and DUANKA_KAFKA_PASSWORD)"
        )
    if bool(security.ssl_certfile) != bool(security.ssl_keyfile):
        raise ConfigError("kafka.security: set both ssl_certfile and ssl_keyfile, or neither")
    return security


def kafka_python_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    security = _checked(security)
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = security.password
    if security.uses_tls and security.ssl_cafile:
        options["ssl_cafile"] = security.ssl_cafile
    if security.uses_tls and security.ssl_certfile:
        options["ssl_certfile"] = security.ssl_certfile
        options["ssl_keyfile"] = security.ssl_keyfile
    return options


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: the CAs of ``ssl_cafile`` (or the system's), and the certificate."""
    context = ssl.create_default_context(cafile=security.ssl_cafile or None)
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile)
    return context


def aiokafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients (the police console's consumer)."""
    security = _checked(security)
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = security.password
    if security.uses_tls:
        options["ssl_context"] = tls_context(security)
    return options


def faust_credentials(security: KafkaSecurity) -> Any:
    """The ``broker_credentials`` of the Faust app: None for PLAINTEXT."""
    import faust  # imported here: the producers and the CLI need not load Faust

    security = _checked(security)
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            mechanism=security.sasl_mechanism,
            ssl_context=tls_context(security) if security.uses_tls else None,
        )
    if security.uses_tls:
        return faust.SSLCredentials(tls_context(security))
    return None


# ---------------------------------------------------------------------- ACLs


@dataclass(frozen=True, slots=True)
class Parties:
    """The user names of each party; a party may have several (one per carrier, say)."""

    carrier: tuple[str, ...] = ("carrier",)
    bank: tuple[str, ...] = ("bank",)
    police: tuple[str, ...] = ("police",)
    watchlist: tuple[str, ...] = ("watchlist",)
    worker: tuple[str, ...] = ("duanka",)

    @classmethod
    def roles(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def named(self, assignments: Iterable[str]) -> Parties:
        """These parties with ``ROLE=NAME`` assignments; naming a role replaces its default."""
        chosen: dict[str, tuple[str, ...]] = {}
        for assignment in assignments:
            role, _, user = assignment.partition("=")
            if role not in self.roles() or not user or "*" in user:
                raise ConfigError(
                    f"{assignment!r}: expected ROLE=NAME with ROLE one of {', '.join(self.roles())}"
                )
            chosen[role] = (*chosen.get(role, ()), user)
        return replace(self, **chosen)


def _acl(
    user: str,
    operation: ACLOperation,
    kind: ResourceType,
    name: str,
    prefixed: bool = False,
) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL
    return ACL(
        principal=f"User:{user}",
        host="*",
        operation=operation,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(kind, name, pattern),
    )


READ, WRITE, CREATE = ACLOperation.READ, ACLOperation.WRITE, ACLOperation.CREATE
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP


def acl_set(settings: Settings, parties: Parties | None = None) -> list[ACL]:
    """Every ACL a deployment needs, for the topic names and app id of ``settings``.

    READ and WRITE imply DESCRIBE. Producers may write idempotently with WRITE
    on a topic alone (Kafka 3.0+, KIP-679), so no cluster ACL is granted.
    """
    parties = parties or Parties()
    topics = settings.topics
    # carriers and banks send their events, and load their inventories as snapshots
    acls = [
        _acl(user, WRITE, TOPIC, name)
        for user in parties.carrier
        for name in (topics.sim_events, topics.holdings)
    ]
    acls += [
        _acl(user, WRITE, TOPIC, name)
        for user in parties.bank
        for name in (topics.bank_events, topics.holdings)
    ]
    acls += [_acl(user, WRITE, TOPIC, topics.watchlist) for user in parties.watchlist]
    for user in parties.police:
        acls += [
            _acl(user, READ, TOPIC, topics.alerts),
            _acl(user, READ, TOPIC, topics.cases),
            _acl(user, WRITE, TOPIC, topics.dispositions),
            _acl(user, WRITE, TOPIC, topics.implicated),
            _acl(user, READ, GROUP, user, True),
        ]
    for user in parties.worker:
        acls += _worker_acls(user, settings)
    return acls


def _worker_acls(user: str, settings: Settings) -> list[ACL]:
    """The worker reads the inputs, writes alerts, decisions and dead letters, owns its topics.

    The inputs are the events, the watchlist, the holdings snapshots, the
    police's verdicts and the numbers they found in fraud cases; the
    decisions are the check's audit trail. It also
    reads the alert, decision and case topics (the police console, with no
    group), writes the verdicts analysts give in the console, and creates the
    changelog and other topics Faust names after the app id.
    """
    topics = settings.topics
    app_id = settings.worker.app_id
    inputs = (*topics.inputs, topics.watchlist, topics.holdings, topics.implicated)
    acls = [_acl(user, READ, TOPIC, name) for name in inputs]
    acls += [
        _acl(user, op, TOPIC, name)
        for name in (topics.alerts, topics.decisions, topics.cases, topics.dispositions)
        for op in (READ, WRITE)
    ]
    acls.append(_acl(user, WRITE, TOPIC, topics.deadletter))
    own = [(app_id, True)] + [
        (name, False)
        for name in (
            topics.identity_events,
            topics.outlet_events,
            topics.agent_signals,
            topics.case_links,
            topics.number_events,
            topics.place_events,
            topics.traces,
        )
        if not name.startswith(app_id)
    ]
    for name, prefixed in own:
        acls += [_acl(user, op, TOPIC, name, prefixed) for op in (READ, WRITE, CREATE)]
    # its faust group (app_id) and its input reader's (app_id-input)
    acls.append(_acl(user, READ, GROUP, app_id, True))
    return acls


def describe_acl(acl: ACL) -> str:
    """One line: who, allowed what, on which resource (a prefix says so)."""
    pattern = acl.resource_pattern
    prefixed = pattern.pattern_type == ACLResourcePatternType.PREFIXED
    return (
        f"{acl.principal:<16} {acl.permission_type.name:<5} {acl.operation.name:<6} "
        f"{pattern.resource_type.name.lower():<5} {pattern.resource_name}"
        f"{' (prefix)' if prefixed else ''}"
    )


def apply_acls(admin: KafkaAdminClient, acls: list[ACL]) -> None:
    """Create the ACLs (ones that exist already are left as they are)."""
    result: Mapping[str, list[Any]] = admin.create_acls(acls)
    failed = result.get("failed", [])
    if failed:
        raise AccessControlError(f"the brokers refused {len(failed)} ACL(s): {failed[0]!r}")


def add_user(admin: KafkaAdminClient, name: str, password: str, mechanism: str) -> None:
    """Store a SCRAM credential for ``name`` (a new user, or a new password)."""
    if not name or not password:
        raise ConfigError("a user needs a name and a non-empty password")
    if not mechanism.startswith("SCRAM-"):
        raise ConfigError(f"users are SCRAM credentials; {mechanism} users are not stored in Kafka")
    upsert = UserScramCredentialUpsertion(name, mechanism, password, iterations=SCRAM_ITERATIONS)
    errors: Mapping[str, str | None] = admin.alter_user_scram_credentials([upsert])
    error = errors.get(name)
    if error:
        raise AccessControlError(f"the brokers refused the credential of {name}: {error}")
