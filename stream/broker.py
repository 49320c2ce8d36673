"""A local, single-node Apache Kafka broker (KRaft mode) managed from Python.

The broker is the real Apache Kafka server: its jars come from Maven Central
(``stream/kafka/pom.xml``, fetched once into a cache directory) and it runs as
``java -cp '<libs>/*' kafka.Kafka server.properties``, detached from the
calling process. It listens on 127.0.0.1 only, both for clients and for its
KRaft controller, and keeps all of its state under ``<data_dir>/broker``:

- ``server.properties`` and the logging configuration it was started with,
- ``data/``: the log directory (topics and the KRaft metadata log),
- ``broker.log``: everything the JVM writes (stdout and stderr),
- ``broker.pid``: the pid of the running broker (absent when stopped),
- ``broker.json``: port, controller port, pid and Kafka version of the last start.

Started ``secure``, the broker takes clients on a SASL_PLAINTEXT listener
(SCRAM-SHA-512, and optionally a SASL_SSL one as well) and authorizes every
request with KRaft's StandardAuthorizer: nothing is allowed without an ACL,
except to the super user ``admin``, whose random password is made at the
first secured start and kept in ``admin.password`` (mode 0600). Its
controller listener then takes SASL/PLAIN logins of ``admin`` only. A data
directory set up one way cannot be started the other way.

``duanka broker start|stop|status`` calls :func:`command`; tests use
:func:`start` and :func:`stop`. ``DUANKA_KAFKA_VERSION`` overrides the pinned
:data:`KAFKA_VERSION`, ``DUANKA_CACHE`` the jar cache directory.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: The Kafka version the project is tested with; the default of stream/kafka/pom.xml.
KAFKA_VERSION = "4.4.0"
#: Environment variable that overrides :data:`KAFKA_VERSION`.
VERSION_ENV = "DUANKA_KAFKA_VERSION"
#: Environment variable that names the cache directory (jars).
CACHE_ENV = "DUANKA_CACHE"
#: The only address the broker binds to and advertises.
HOST = "127.0.0.1"
#: Default data directory (relative to the working directory).
DEFAULT_DATA_DIR = Path(".duanka")
#: The Kafka node id of the single combined broker/controller.
NODE_ID = 1
#: The super user of a secured broker: its own connections, and whoever manages users and ACLs.
ADMIN_USER = "admin"
#: The SASL mechanism of a secured broker's client listeners.
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
ADMIN_PASSWORD_FILE = "admin.password"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"

POM_PATH = Path(__file__).parent / "kafka" / "pom.xml"
JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
# Unknown -XX options (another JVM) are ignored; class-data-sharing chatter is not logged.
CDS_QUIET_OPTS = ("-XX:+IgnoreUnrecognizedVMOptions", "-Xlog:cds*=error")
CDS_STALE_DUMP_S = 600.0
MAVEN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.2
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-.][0-9A-Za-z.-]+)?$")
_PROBLEM_RE = re.compile(r"\b(?:ERROR|FATAL)\b|Exception|Error:|Address already in use")
_PR_SET_PDEATHSIG = 1

# Brokers started by this process, so that they can be reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(Exception):
    """The local broker could not be fetched, started or stopped."""


@dataclass(frozen=True)
class TlsListener:
    """TLS listeners of a secured broker, beside its SASL_PLAINTEXT one.

    ``port`` takes SASL_SSL: SCRAM logins over TLS. ``keystore`` is a PKCS12
    file with the broker's private key and its certificate (for 127.0.0.1),
    protected by ``password``. With ``client_ca`` (PEM), ``cert_port`` takes
    SSL with a client certificate signed by that CA instead of a password;
    the certificate's CN is the user name (``CN=carrier`` is ``User:carrier``),
    for clients whose SCRAM does not work with Kafka 4 (librdkafka < 2.6.1).
    """

    port: int
    keystore: Path
    password: str
    client_ca: Path | None = None
    cert_port: int | None = None


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker."""

    port: int
    pid: int
    version: str
    data_dir: Path
    log_path: Path
    secure: bool = False
    tls_port: int | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for clients: ``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    def admin_options(self) -> dict[str, str]:
        """kafka-python options that log in as the super user (secured), or none."""
        if not self.secure:
            return {}
        return _admin_options(admin_password(self.data_dir))


# --------------------------------------------------------------------------- jars


def kafka_version() -> str:
    """The Kafka version to run: ``$DUANKA_KAFKA_VERSION`` or :data:`KAFKA_VERSION`."""
    return os.environ.get(VERSION_ENV, "").strip() or KAFKA_VERSION


def cache_dir() -> Path:
    """``$DUANKA_CACHE``, else ``$XDG_CACHE_HOME/duanka``, else ``~/.cache/duanka``."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "duanka"


def ensure_jars(version: str | None = None) -> Path:
    """Return the directory of the broker's jars, fetching them with Maven once.

    ``version`` defaults to :func:`kafka_version`. The jars are fetched into a
    temporary directory that is renamed into place when complete, so an
    interrupted fetch never leaves a half-filled cache behind.
    """
    version = _checked_version(version or kafka_version())
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    if _jars_complete(libs, version):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".lock"):
        if not _jars_complete(libs, version):
            _fetch_jars(version, home, libs)
    return libs


def _checked_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise BrokerError(f"not a Kafka version: {version!r} (expected e.g. {KAFKA_VERSION})")
    return version


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def _jars_complete(libs: Path, version: str) -> bool:
    return (libs / f"kafka_2.13-{version}.jar").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_jars(version: str, home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars "
            "(Debian: apt-get install maven)"
        )
    for stale in home.glob("libs.partial-*"):  # left by a fetch that was killed
        shutil.rmtree(stale, ignore_errors=True)
    print(f"fetching Kafka {version} jars with Maven into {libs}", file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix="libs.partial-", dir=home))
    try:
        _run_maven(mvn, version, staging)
        if not _jars_complete(staging, version):
            raise BrokerError(f"Maven finished but kafka_2.13-{version}.jar is not in {staging}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _run_maven(mvn: str, version: str, out_dir: Path) -> None:
    args = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM_PATH),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    if _major(version) < 4:
        args.append("-Dkafka.logging=reload4j")
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"Maven did not finish within {MAVEN_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        tail = _tail(done.stdout + done.stderr, 15)
        raise BrokerError(
            f"Maven could not fetch Kafka {version} (exit code {done.returncode}):\n{tail}"
        )


def _tail(text: str, lines: int) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


# ----------------------------------------------------------------------- processes


def _proc_text(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    except OSError:
        return None


def _is_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None  # also reaps it: no zombie
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_text(pid, "stat")
    return stat is None or stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _is_broker_of(pid: int, props: Path) -> bool:
    """Whether ``pid`` is alive and is the broker started with ``props``."""
    if not _is_alive(pid):
        return False
    cmdline = _proc_text(pid, "cmdline")
    if cmdline is None:  # no /proc: trust the pid file
        return True
    return "kafka.Kafka" in cmdline and str(props) in cmdline


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _exit_code(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return None if child is None else child.poll()


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the calling thread exits (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


# --------------------------------------------------------------------------- files


def _broker_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "broker"


def _props_path(bdir: Path) -> Path:
    return bdir / "server.properties"


def _read_pid(bdir: Path) -> int | None:
    try:
        return int((bdir / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(bdir: Path) -> dict[str, object]:
    try:
        state = json.loads((bdir / "broker.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_atomic(path: Path, text: str, private: bool = False) -> None:
    """Replace ``path`` at once; ``private`` files (they hold secrets) are the owner's only."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def _write_state(bdir: Path, info: BrokerInfo, controller_port: int, cds: _Cds) -> None:
    state = {
        "port": info.port,
        "controller_port": controller_port,
        "pid": info.pid,
        "version": info.version,
        "bootstrap": info.bootstrap,
        "secure": info.secure,
        "tls_port": info.tls_port,
        "cds_archive": str(cds.archive),
        "cds_dump": None if cds.dump is None else str(cds.dump),
    }
    _write_atomic(bdir / "broker.json", json.dumps(state, indent=2) + "\n")
    _write_atomic(bdir / "broker.pid", f"{info.pid}\n")


def admin_password(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The super user's password of the secured broker of ``data_dir``."""
    path = _broker_dir(data_dir) / ADMIN_PASSWORD_FILE
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise BrokerError(f"no admin password in {_shown(path)}: is the broker secured?") from exc


def _admin_options(password: str) -> dict[str, str]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_plain_username": ADMIN_USER,
        "sasl_plain_password": password,
    }


@dataclass(frozen=True)
class _Access:
    """How a broker is secured: the super user's password and an optional TLS listener."""

    admin_password: str
    tls: TlsListener | None = None


def _access(bdir: Path, secure: bool, tls: TlsListener | None) -> _Access | None:
    """The access settings to start with, checked against how the data directory was set up.

    The super user's SCRAM credential is written into the metadata log when
    the storage is formatted, so a directory formatted plain cannot be
    secured later; and starting a secured one plain would open it to anyone.
    """
    if tls is not None and not secure:
        raise BrokerError("a TLS listener is only offered by a secured broker (--secure)")
    if tls is not None and (tls.client_ca is None) != (tls.cert_port is None):
        raise BrokerError("client certificates need both a CA (client_ca) and a port (cert_port)")
    password_path = bdir / ADMIN_PASSWORD_FILE
    formatted = (bdir / "data" / "meta.properties").exists()
    if not secure:
        if password_path.exists():
            raise BrokerError(
                f"{_shown(bdir.parent)} holds a secured broker: start it with --secure"
            )
        return None
    if formatted and not password_path.exists():
        raise BrokerError(
            f"{_shown(bdir.parent)} holds a broker set up without access control; "
            "start a secured one in another --dir"
        )
    if not password_path.exists():
        _write_atomic(password_path, secrets.token_urlsafe(24) + "\n", private=True)
    return _Access(password_path.read_text().strip(), tls)


def _scram_credential(password: str) -> str:
    """The super user's credential for ``kafka-storage format --add-scram``, salted here.

    Only the salted password appears on the formatting command's line.
    """
    salt = secrets.token_bytes(24)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    encoded = [base64.b64encode(value).decode() for value in (salt, salted)]
    return (
        f"{SCRAM_MECHANISM}=[name={ADMIN_USER},iterations={SCRAM_ITERATIONS},"
        f'salt="{encoded[0]}",saltedpassword="{encoded[1]}"]'
    )


def _remove_pid_file(bdir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (bdir / "broker.pid").unlink()


def _listener_settings(port: int, controller_port: int, access: _Access | None) -> dict[str, str]:
    if access is None:
        return {
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
        }
    clients = [f"SASL_PLAINTEXT://{HOST}:{port}"]
    tls = access.tls
    if tls is not None:
        clients.append(f"SASL_SSL://{HOST}:{tls.port}")
        if tls.client_ca is not None:
            clients.append(f"SSL://{HOST}:{tls.cert_port}")
    password = access.admin_password
    scram_login = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{password}";'
    )
    settings = {
        "listeners": ",".join([*clients, f"CONTROLLER://{HOST}:{controller_port}"]),
        "advertised.listeners": ",".join(clients),
        "listener.security.protocol.map": (
            "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SASL_PLAINTEXT"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram_login,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram_login,
        # SCRAM credentials live in the metadata log the controller serves, so
        # the controller listener takes PLAIN logins, of the super user only.
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{ADMIN_USER}" password="{password}" user_{ADMIN_USER}="{password}";'
        ),
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{ADMIN_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }
    if tls is not None:
        settings.update(_tls_settings(tls))
    return settings


def _tls_settings(tls: TlsListener) -> dict[str, str]:
    settings: dict[str, str] = {}
    for listener in ("sasl_ssl", "ssl") if tls.client_ca is not None else ("sasl_ssl",):
        prefix = f"listener.name.{listener}.ssl"
        settings[f"{prefix}.keystore.type"] = "PKCS12"
        settings[f"{prefix}.keystore.location"] = str(tls.keystore)
        settings[f"{prefix}.keystore.password"] = tls.password
    if tls.client_ca is not None:
        settings["listener.name.ssl.ssl.client.auth"] = "required"
        settings["listener.name.ssl.ssl.truststore.type"] = "PEM"
        settings["listener.name.ssl.ssl.truststore.location"] = str(tls.client_ca)
        # the user of a client certificate is its CN, as a SCRAM user is its name
        settings["ssl.principal.mapping.rules"] = "RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT"
    return settings


def _server_properties(
    bdir: Path, port: int, controller_port: int, access: _Access | None = None
) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        **_listener_settings(port, controller_port, access),
        "log.dirs": str(bdir / "data"),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    lines = ["# Written by stream/broker.py at every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


_LOG4J2 = """\
status = warn
# Keep logging until Kafka's own shutdown hook has finished.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
"""

_LOG4J1 = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
"""


def _logging_option(bdir: Path, version: str) -> str:
    """Write the logging configuration (console, i.e. broker.log) and return its -D option."""
    if _major(version) >= 4:
        path = bdir / "log4j2.properties"
        _write_atomic(path, _LOG4J2)
        return f"-Dlog4j2.configurationFile={path}"
    path = bdir / "log4j.properties"
    _write_atomic(path, _LOG4J1)
    return f"-Dlog4j.configuration=file:{path}"


def _problems(log_path: Path, offset: int) -> str:
    """The reason for a failure, as found in the broker log written since ``offset``."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no broker log)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [line for line in lines if _PROBLEM_RE.search(line) and not line.startswith("at ")]
    picked = found[-4:] if found else lines[-5:]
    if not picked:
        return "(the broker log is empty)"
    return "\n".join(line[:400] for line in picked)


# ------------------------------------------------------------ class-data sharing


@dataclass(frozen=True)
class _Cds:
    """Class-data sharing for the broker JVM: a start about twice as fast.

    The first broker started with a set of jars dumps the classes it loaded
    into ``dump`` when it exits; a clean :func:`stop` renames that to
    ``archive``, which later starts map instead of loading the classes again.
    The archive sits in the libs directory, so a new fetch discards it, and is
    named after the JVM build that made it.
    """

    archive: Path
    dump: Path | None

    @property
    def options(self) -> tuple[str, ...]:
        if self.dump is not None:
            return (*CDS_QUIET_OPTS, f"-XX:ArchiveClassesAtExit={self.dump}")
        return (*CDS_QUIET_OPTS, f"-XX:SharedArchiveFile={self.archive}")


def _jvm_key(java: str) -> str:
    real = Path(java).resolve()
    parts = [str(real)]
    for path in (real, real.parent.parent / "lib" / "server" / "libjvm.so"):
        with contextlib.suppress(OSError):
            info = path.stat()
            parts.append(f"{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _cds(java: str, libs: Path) -> _Cds:
    archive = libs / f"classes-{_jvm_key(java)}.jsa"
    if archive.is_file():
        return _Cds(archive, None)
    now = time.time()
    for stale in libs.glob("*.jsa.*.partial"):  # left by brokers that were not stopped cleanly
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > CDS_STALE_DUMP_S:
                stale.unlink()
    return _Cds(archive, libs / f"{archive.name}.{uuid.uuid4().hex[:8]}.partial")


def _finish_cds_dump(state: dict[str, object], clean_exit: bool) -> None:
    """Keep the class archive a cleanly stopped broker dumped; discard a partial one."""
    dump, archive = state.get("cds_dump"), state.get("cds_archive")
    if not isinstance(dump, str) or not isinstance(archive, str):
        return
    dumped = Path(dump)
    with contextlib.suppress(OSError):
        if clean_exit and dumped.stat().st_size > 0:
            dumped.replace(archive)
        else:
            dumped.unlink()


# ------------------------------------------------------------------------ network


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_error(port: int) -> OSError | None:
    """None if ``port`` can be bound on 127.0.0.1 (as the broker would), else the error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            return exc
    return None


def _check_port_free(port: int) -> None:
    if not 0 < port < 65536:
        raise BrokerError(f"not a TCP port: {port}")
    error = _port_error(port)
    if error is not None:
        raise BrokerError(
            f"cannot start Kafka on {HOST}:{port}: the port is already in use by another "
            f"process ({error.strerror or error}); choose another port with --port"
        )


def _controller_port(bdir: Path, port: int) -> int:
    """The controller port of the last start if it is still free, else a new free port."""
    recorded = _read_state(bdir).get("controller_port")
    if isinstance(recorded, int) and recorded != port and _port_error(recorded) is None:
        return recorded
    while True:
        candidate = free_port()
        if candidate != port:
            return candidate


@contextlib.contextmanager
def _quiet_kafka_logging() -> Iterator[None]:
    """Silence kafka-python's connection warnings while polling a starting broker."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _answers(port: int, options: dict[str, str]) -> bool:
    """Whether a Kafka broker at 127.0.0.1:``port`` answers a metadata request.

    ``options`` are the kafka-python security options to log in with.
    """
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            pass
    except OSError:
        return False
    from kafka.admin import KafkaAdminClient  # imported here: only needed while starting

    with _quiet_kafka_logging():
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"{HOST}:{port}",
                client_id="duanka-broker-probe",
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                reconnect_backoff_max_ms=500,
                **options,
            )
        except Exception:
            return False
        try:
            cluster = admin.describe_cluster()
        except Exception:
            return False
        finally:
            admin.close()
    return any(broker.get("broker_id") == NODE_ID for broker in cluster.get("brokers", []))


# ------------------------------------------------------------------ start / stop


def status(data_dir: Path = DEFAULT_DATA_DIR) -> BrokerInfo | None:
    """The broker running for ``data_dir``, or None (nothing running, or a stale pid file)."""
    bdir = _broker_dir(data_dir)
    pid = _read_pid(bdir)
    if pid is None or not _is_broker_of(pid, _props_path(bdir)):
        return None
    state = _read_state(bdir)
    port = state.get("port")
    version = state.get("version")
    if not isinstance(port, int) or not isinstance(version, str):
        return None
    tls_port = state.get("tls_port")
    return BrokerInfo(
        port,
        pid,
        version,
        bdir.parent,
        bdir / "broker.log",
        secure=state.get("secure") is True,
        tls_port=tls_port if isinstance(tls_port, int) else None,
    )


def start(
    port: int = 9092,
    data_dir: Path = DEFAULT_DATA_DIR,
    timeout: float = 90.0,
    *,
    version: str | None = None,
    die_with_parent: bool = False,
    secure: bool = False,
    tls: TlsListener | None = None,
) -> BrokerInfo:
    """Start a broker for ``data_dir`` on 127.0.0.1:``port`` and wait until it answers.

    If one is already running for ``data_dir``, say so (stderr) and return it.
    ``version`` defaults to :func:`kafka_version`. With ``die_with_parent`` the
    broker is sent SIGTERM when the calling thread's process dies (Linux); tests
    use it so that a killed test run leaves no JVM behind. ``secure`` turns on
    SASL/SCRAM and ACLs (see the module's docstring), ``tls`` adds TLS listeners
    to a secured broker.
    """
    info, started = _start(port, data_dir, timeout, version, die_with_parent, secure, tls)
    if not started:
        print(
            f"Kafka broker already running at {info.bootstrap} (pid {info.pid}) "
            f"for {_shown(info.data_dir)}",
            file=sys.stderr,
        )
    return info


def _start(
    port: int,
    data_dir: Path,
    timeout: float,
    version: str | None,
    die_with_parent: bool,
    secure: bool = False,
    tls: TlsListener | None = None,
) -> tuple[BrokerInfo, bool]:
    """Start (or find) the broker; the flag tells whether it was started by this call."""
    deadline = time.monotonic() + timeout
    running = status(data_dir)
    if running is not None:
        _wait_until_answering(running, deadline, timeout, 0)
        return running, False
    version = _checked_version(version or kafka_version())
    _check_port_free(port)
    if tls is not None:
        for tls_port in (tls.port, tls.cert_port):
            if tls_port is not None:
                _check_port_free(tls_port)
    java = _java()
    libs = ensure_jars(version)
    bdir = _broker_dir(data_dir)
    bdir.mkdir(parents=True, exist_ok=True)
    access = _access(bdir, secure, tls)
    _remove_pid_file(bdir)
    controller_port = _controller_port(bdir, port)
    props = _props_path(bdir)
    properties = _server_properties(bdir, port, controller_port, access)
    _write_atomic(props, properties, private=access is not None)
    jvm = _Jvm(java, libs, _logging_option(bdir, version), bdir / "broker.log")
    cds = _cds(java, libs)
    _format_storage(jvm, bdir, cds, access)
    offset = jvm.log_path.stat().st_size if jvm.log_path.exists() else 0
    deadline = time.monotonic() + timeout
    pid = _launch(jvm, cds, props, die_with_parent)
    tls_port = None if tls is None else tls.port
    info = BrokerInfo(port, pid, version, bdir.parent, jvm.log_path, secure, tls_port)
    _write_state(bdir, info, controller_port, cds)
    try:
        _wait_until_answering(info, deadline, timeout, offset)
    except BrokerError:
        _terminate(pid, 10.0)
        _finish_cds_dump(_read_state(bdir), clean_exit=False)
        _remove_pid_file(bdir)
        raise
    return info, True


@dataclass(frozen=True)
class _Jvm:
    """How to run Kafka's classes: the java binary, jars, logging option and log file."""

    java: str
    libs: Path
    log_option: str
    log_path: Path

    def args(self, *options: str) -> list[str]:
        return [self.java, *options, self.log_option, "-cp", f"{self.libs}/*"]


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java is not on PATH; Kafka needs a Java 17+ runtime")
    return java


def _format_storage(jvm: _Jvm, bdir: Path, cds: _Cds, access: _Access | None) -> None:
    """Format the KRaft storage on first start (skipped when meta.properties exists).

    A secured broker's super user gets its SCRAM credential here, in the
    metadata log, so that it can log in before any other user exists.
    """
    if (bdir / "data" / "meta.properties").exists():
        return
    options = ("-Xmx256m",) if cds.dump is not None else ("-Xmx256m", *cds.options)
    args = [*jvm.args(*options), "kafka.tools.StorageTool", "format", "-t", _cluster_id()]
    args += ["-c", str(_props_path(bdir))]
    if access is not None:
        args += ["--add-scram", _scram_credential(access.admin_password)]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"formatting the Kafka storage took over {FORMAT_TIMEOUT_S}s") from exc
    with jvm.log_path.open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = _tail(done.stdout + done.stderr, 10)
        raise BrokerError(f"formatting the Kafka storage in {bdir / 'data'} failed:\n{tail}")


def _cluster_id() -> str:
    """A random cluster id in Kafka's format (URL-safe base64 of 16 bytes, no padding)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # would read as an option on the command line
            return cid


def _launch(jvm: _Jvm, cds: _Cds, props: Path, die_with_parent: bool) -> int:
    args = [*jvm.args(*JVM_OPTS, *cds.options), "kafka.Kafka", str(props)]
    with jvm.log_path.open("ab") as log:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=props.parent,
            start_new_session=True,
            preexec_fn=_die_with_parent() if die_with_parent else None,  # noqa: PLW1509
        )
    _CHILDREN[child.pid] = child
    return child.pid


def _wait_until_answering(info: BrokerInfo, deadline: float, timeout: float, offset: int) -> None:
    while True:
        if not _is_alive(info.pid):
            code = _exit_code(info.pid)
            how = "" if code is None else f" with exit code {code}"
            raise BrokerError(
                f"the Kafka broker exited{how} before answering at {info.bootstrap}:\n"
                f"{_problems(info.log_path, offset)}\n(log: {_shown(info.log_path)})"
            )
        if _answers(info.port, info.admin_options()):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the Kafka broker (pid {info.pid}) did not answer at {info.bootstrap} "
                f"within {timeout:.0f}s:\n{_problems(info.log_path, offset)}\n"
                f"(log: {_shown(info.log_path)})"
            )
        time.sleep(POLL_INTERVAL_S)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL if ``pid`` has not exited within ``timeout`` seconds.

    Returns True if it exited after SIGTERM alone.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_exit(pid, 10.0)
    return False


def stop(data_dir: Path = DEFAULT_DATA_DIR, timeout: float = 30.0) -> bool:
    """Stop the broker of ``data_dir`` (SIGTERM, SIGKILL after ``timeout``).

    Returns False if no broker was running. The pid file is removed either way.
    """
    bdir = _broker_dir(data_dir)
    pid = _read_pid(bdir)
    running = pid is not None and _is_broker_of(pid, _props_path(bdir))
    if pid is not None and running:
        clean = _terminate(pid, timeout)
        _finish_cds_dump(_read_state(bdir), clean)
    _remove_pid_file(bdir)
    return running


def kill(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    """SIGKILL the broker of ``data_dir``, as a crash would (tests use it); False if none ran."""
    bdir = _broker_dir(data_dir)
    pid = _read_pid(bdir)
    if pid is None or not _is_broker_of(pid, _props_path(bdir)):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_exit(pid, 10.0)
    _remove_pid_file(bdir)
    return True


# ---------------------------------------------------------------------------- CLI


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _describe(info: BrokerInfo, state: str = "running") -> str:
    text = (
        f"Kafka {info.version} broker {state} at {info.bootstrap} (pid {info.pid}); "
        f"log: {_shown(info.log_path)}"
    )
    if info.secure:
        password = _broker_dir(info.data_dir) / ADMIN_PASSWORD_FILE
        text += (
            f"\nsecured: SASL_PLAINTEXT with {SCRAM_MECHANISM} and ACLs; super user "
            f"{ADMIN_USER!r}, password in {_shown(password)}"
        )
    return text


def command(action: str, port: int, data_dir: Path, secure: bool = False) -> int:
    """``duanka broker start|stop|status``: print what happened, return the exit code."""
    try:
        return _command(action, port, data_dir, secure)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _command(action: str, port: int, data_dir: Path, secure: bool) -> int:
    if action == "start":
        info, started = _start(port, data_dir, 90.0, None, False, secure)
        print(_describe(info, "running" if started else "already running"))
        return 0
    if action == "stop":
        print("stopped" if stop(data_dir) else f"no broker running for {_shown(data_dir)}")
        return 0
    if action == "status":
        found = status(data_dir)
        if found is None:
            print(f"no broker running for {_shown(data_dir)}")
            return 1
        print(_describe(found))
        return 0
    print(f"error: unknown broker action {action!r} (start, stop or status)", file=sys.stderr)
    return 2
