"""The `duanka` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from rules.config import Settings, load_settings
from rules.errors import DuankaError

Handler = Callable[[argparse.Namespace, Settings], int]

# The cyclic garbage collector's thresholds (young, middle, old). The worker
# and replay keep hundreds of thousands of long-lived objects (windows, state
# caches, held events) and make and drop many more per second; with CPython's
# defaults (700, 10, 10) the full collections over them took a quarter of the
# worker's CPU and of replay's time (docs/performance.md). Little of what they
# make forms cycles: replay's peak memory was the same with these.
GC_THRESHOLDS = (50_000, 20, 100)


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if args.config:
        # commands that start others (the demo starts a worker) pass it on
        os.environ["DUANKA_CONFIG"] = str(args.config)
    try:
        settings = load_settings(args.config)
        return handler(args, settings)
    except DuankaError as exc:
        print(f"duanka: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duanka",
        description="Streaming risk screening of SIM-card and bank-account openings.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="config file (default: $DUANKA_CONFIG, else ./config.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_broker(commands)
    _add_topics(commands)
    _add_kafka_users(commands)
    _add_users(commands)
    _add_acls(commands)
    _add_worker(commands)
    _add_produce(commands)
    _add_alerts(commands)
    _add_sample(commands)
    _add_demo(commands)
    _add_simulate(commands)
    _add_replay(commands)
    _add_evaluate(commands)
    _add_watchlist(commands)
    _add_holdings(commands)
    _add_check(commands)
    _add_report(commands)
    _add_dispose(commands)
    for command in commands.choices.values():
        # `duanka replay --config F` works as well as `duanka --config F replay`
        command.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
    return parser


Commands = argparse._SubParsersAction


def _add_broker(commands: Commands) -> None:
    broker = commands.add_parser(
        "broker", help="run a local Apache Kafka broker (KRaft) on 127.0.0.1"
    )
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument("--port", type=int, default=9092, help="listener port (default 9092)")
    broker.add_argument(
        "--dir", type=Path, default=Path(".duanka"), help="data directory (default .duanka)"
    )
    broker.add_argument(
        "--secure",
        action="store_true",
        help="SASL/SCRAM logins and ACLs (see docs/security.md); for a new --dir, or one "
        "first started so",
    )
    broker.set_defaults(handler=_broker)


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from stream.broker import command

    return command(args.action, args.port, args.dir, secure=args.secure)


def _add_topics(commands: Commands) -> None:
    topics = commands.add_parser("topics", help="create the topics duanka uses")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(handler=_topics)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from stream.topics import ensure_topics, topic_specs

    created = set(ensure_topics(settings))
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:<28} {spec.partitions} partitions  {state}")
    return 0


def _add_kafka_users(commands: Commands) -> None:
    users = commands.add_parser(
        "kafka-users",
        help="store a Kafka user's SCRAM password on the brokers (run as the admin user)",
    )
    users.add_argument("action", choices=["add"])
    users.add_argument("name")
    users.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    users.set_defaults(handler=_kafka_users)


def _kafka_users(args: argparse.Namespace, settings: Settings) -> int:
    from stream.security import add_user
    from stream.topics import admin_client

    password = _read_password(args.name, args.password_stdin)
    admin = admin_client(settings)
    try:
        add_user(admin, args.name, password, settings.security.sasl_mechanism)
    finally:
        admin.close()
    print(f"stored a {settings.security.sasl_mechanism} credential for {args.name}")
    return 0


def _read_password(name: str, from_stdin: bool, check: Callable[[str], None] | None = None) -> str:
    """A password from the first line of standard input, or asked for twice on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {name}: ")
        if check is not None:
            check(password)  # before asking again
        if getpass.getpass("again: ") != password:
            raise DuankaError("the two passwords differ")
    if check is not None:
        check(password)
    return password


def _add_users(commands: Commands) -> None:
    users = commands.add_parser(
        "users", help="the police console's users: add, passwd, remove, list"
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="a new user with a role; asks for the password twice")
    add.add_argument("name")
    add.add_argument(
        "--role",
        required=True,
        choices=["analyst", "viewer"],
        help="analyst: reads and disposes of alerts; viewer: reads only",
    )
    passwd = actions.add_parser("passwd", help="a new password (the user's sessions end)")
    passwd.add_argument("name")
    for action in (add, passwd):
        action.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
    remove = actions.add_parser("remove", help="remove a user (their sessions end)")
    remove.add_argument("name")
    actions.add_parser("list", help="the users and their roles (never the hashes)")
    users.set_defaults(handler=_users)


def _users(args: argparse.Namespace, settings: Settings) -> int:
    from stream.auth import Users, UsersError, check_name, check_password

    users = Users(settings.console.users_file)
    names = {user.name for user in users.all()}
    where = f"{users.path} (running workers read it on their next request)"
    if args.action == "list":
        for user in users.all():
            print(f"{user.name:<24} {user.role:<8} password set {user.changed_at}")
        if not names:
            print(f"no console users in {users.path}", file=sys.stderr)
        return 0
    if args.action == "add":
        check_name(args.name)
        if args.name in names:
            raise UsersError(f"user {args.name} exists (duanka users passwd sets a password)")
    elif args.name not in names:
        raise UsersError(f"no console user {args.name} in {users.path}")
    if args.action == "remove":
        users.remove(args.name)
        print(f"removed {args.name} from {where}")
        return 0
    password = _read_password(args.name, args.password_stdin, check_password)
    if args.action == "add":
        users.add(args.name, password, args.role)
        print(f"added {args.name} ({args.role}) to {where}")
    else:
        users.set_password(args.name, password)
        print(f"set a new password for {args.name} in {where}")
    return 0


def _add_acls(commands: Commands) -> None:
    acls = commands.add_parser(
        "acls", help="show, or apply (as the admin user), the ACLs each party needs"
    )
    acls.add_argument("action", choices=["show", "apply"])
    acls.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="the user of a party (carrier, bank, police, watchlist, worker); repeat for "
        "several, e.g. --user carrier=mobile --user carrier=unicom (default: the role's name, "
        "duanka for the worker)",
    )
    acls.set_defaults(handler=_acls)


def _acls(args: argparse.Namespace, settings: Settings) -> int:
    from stream.security import Parties, acl_set, apply_acls, describe_acl
    from stream.topics import admin_client

    acls = acl_set(settings, Parties().named(args.user))
    if args.action == "apply":
        admin = admin_client(settings)
        try:
            apply_acls(admin, acls)
        finally:
            admin.close()
    for acl in acls:
        print(describe_acl(acl))
    if args.action == "apply":
        print(f"applied {len(acls)} ACLs", file=sys.stderr)
    return 0


def _add_worker(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="run the screening worker (Faust)")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from stream.app import run_worker

    return run_worker(settings, dict(os.environ), args.loglevel)


def _add_produce(commands: Commands) -> None:
    produce = commands.add_parser(
        "produce", help="send a JSON-lines file of events to Kafka, in file order"
    )
    produce.add_argument("file", type=Path)
    produce.add_argument(
        "--topic", help="send every line to this topic (default: by each event's event_type)"
    )
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(handler=_produce)


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from producers.produce import produce_file

    summary = produce_file(args.file, settings, args.topic, progress=not args.quiet)
    print(summary.describe(str(args.file)))
    return 0


def _add_alerts(commands: Commands) -> None:
    alerts = commands.add_parser("alerts", help="read the police alert topic")
    alerts.add_argument(
        "--follow", action="store_true", help="keep waiting for new alerts (Ctrl-C stops)"
    )
    alerts.add_argument("--out", type=Path, help="write the alerts as JSON lines to this file")
    alerts.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="stop after S seconds without a new record",
    )
    alerts.add_argument(
        "--group",
        help="read as this consumer group and commit (default: read all, commit nothing)",
    )
    alerts.add_argument(
        "--from-now", action="store_true", help="only alerts that arrive from now on"
    )
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    from producers.alerts import ReadOptions, open_consumer, read_alerts, write_alerts

    options = ReadOptions(
        follow=args.follow,
        idle_timeout=args.idle_timeout,
        start="end" if args.from_now else "beginning",
        group=args.group,
    )
    consumer = open_consumer(settings.bootstrap, settings.topics.alerts, options, settings.security)
    skipped = lambda message: print(message, file=sys.stderr)  # noqa: E731
    try:
        alerts = read_alerts(consumer, options, on_skip=skipped)
        if args.out:
            with args.out.open("w", encoding="utf-8") as out:
                count = write_alerts(alerts, out, sys.stdout)
        else:
            count = write_alerts(alerts, None, sys.stdout)
    finally:
        consumer.close()
    print(f"{count} alerts", file=sys.stderr)
    return 0


def _add_sample(commands: Commands) -> None:
    sample = commands.add_parser("sample", help="write the small demo sample of events")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--seed", type=int, default=2026)
    sample.add_argument(
        "--no-malformed", action="store_true", help="leave out the three malformed records"
    )
    sample.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace, settings: Settings) -> int:
    from producers.sample import write_sample

    count = write_sample(args.out, args.seed, with_malformed=not args.no_malformed)
    print(f"wrote {count} records to {args.out}")
    return 0


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="broker, worker, police console and a simulated province; alerts shown live",
    )
    demo.add_argument(
        "--forever", action="store_true", help="after the run, keep following alerts until Ctrl-C"
    )
    demo.add_argument(
        "--events", type=int, default=3_000, help="about how many events (default 3000)"
    )
    demo.add_argument(
        "--rate", type=float, default=60.0, help="events sent per second (default 60)"
    )
    demo.add_argument("--seed", type=int, default=2026, help="the simulation's seed")
    demo.add_argument("--dir", type=Path, default=Path(".duanka"), help="working directory")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from producers.demo import DemoOptions, run_demo

    if args.events < 1 or args.rate <= 0:
        raise DuankaError("--events must be at least 1 and --rate above 0")
    options = DemoOptions(events=args.events, rate=args.rate, seed=args.seed, forever=args.forever)
    return run_demo(settings, args.dir, options, environ=dict(os.environ))


def _add_simulate(commands: Commands) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="simulate a province's openings, with labelled fraud cases, to files or Kafka",
    )
    simulate.add_argument(
        "--out",
        type=Path,
        help="directory for events.jsonl, watchlist.jsonl, holdings.jsonl and truth.jsonl "
        "(default with --to-kafka: .duanka/simulate)",
    )
    simulate.add_argument(
        "--to-kafka",
        action="store_true",
        help="also publish the watchlist and the holdings snapshots, then send the events",
    )
    simulate.add_argument(
        "--rate",
        type=float,
        default=500.0,
        metavar="N",
        help="with --to-kafka: events per second (default 500; 0 for as fast as possible)",
    )
    simulate.add_argument(
        "--events", type=int, default=100_000, help="about how many events (default 100000)"
    )
    simulate.add_argument("--days", type=int, default=30, help="length of the period (default 30)")
    simulate.add_argument(
        "--start",
        type=date.fromisoformat,
        default=date(2026, 1, 1),
        metavar="YYYY-MM-DD",
        help="first day of the period (default 2026-01-01)",
    )
    simulate.add_argument("--seed", type=int, default=2026)
    simulate.add_argument(
        "--rounds", type=int, help="rounds of injected cases (default: one per 10,000 events)"
    )
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from producers.simulate import run_simulate

    if args.out is None and not args.to_kafka:
        raise DuankaError("say where the files go (--out DIR), or send them with --to-kafka")
    if args.events < 1 or args.days < 10:
        raise DuankaError("--events must be at least 1 and --days at least 10")
    return run_simulate(
        settings,
        args.out or Path(".duanka/simulate"),
        events=args.events,
        days=args.days,
        seed=args.seed,
        start=args.start,
        rounds=args.rounds,
        to_kafka=args.to_kafka,
        rate=args.rate,
        progress=not args.quiet,
    )


def _add_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="recall and precision of alerts against a simulation's ground truth"
    )
    evaluate.add_argument("truth", type=Path, help="truth.jsonl written by `duanka simulate`")
    evaluate.add_argument("alerts", type=Path, help="alerts, as JSON lines")
    evaluate.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if a labelled case was missed or an alert was unexpected",
    )
    evaluate.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from producers.evaluate import run_evaluate

    return run_evaluate(
        args.truth, args.alerts, list(settings.rules.__dataclass_fields__), args.strict
    )


def _add_replay(commands: Commands) -> None:
    replay = commands.add_parser(
        "replay", help="run the rules over a file of events, in event-time order"
    )
    replay.add_argument("events", type=Path, help="JSON-lines file of duanka.event/1 records")
    replay.add_argument("--out", type=Path, required=True, help="alerts, as JSON lines")
    replay.add_argument("--watchlist", type=Path, help="watchlist file (JSON lines or .csv)")
    replay.add_argument(
        "--holdings",
        type=Path,
        help="inventory snapshots that seed the holdings (JSON lines or .csv)",
    )
    replay.add_argument(
        "--checks",
        type=Path,
        help="duanka.check/1 requests, answered in event-time order among the events",
    )
    replay.add_argument(
        "--decisions",
        type=Path,
        help="where the checks' decisions go (default: OUT.decisions.jsonl)",
    )
    replay.add_argument(
        "--cases",
        type=Path,
        help="where the cases the alerts form go (default: cases.jsonl beside OUT)",
    )
    replay.add_argument(
        "--implicated",
        type=Path,
        help="duanka.implicated/1 numbers found in fraud cases, traced at their reported_at",
    )
    replay.add_argument(
        "--traces",
        type=Path,
        help="where the implicated numbers' traces go (default: traces.jsonl beside OUT)",
    )
    replay.add_argument("--deadletter", type=Path, help="rejected records, as JSON lines")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.add_argument(
        "--processes",
        type=int,
        choices=[1, 2],
        default=2 if (os.cpu_count() or 1) > 1 else 1,
        help="2: read and screen outlets in a second process (default with 2 or more CPUs)",
    )
    replay.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from producers.replay import run_replay

    return run_replay(
        args.events,
        args.out,
        settings,
        dict(os.environ),
        args.watchlist,
        args.deadletter,
        progress=not args.quiet,
        processes=args.processes,
        holdings=args.holdings,
        checks=args.checks,
        decisions=args.decisions,
        cases=args.cases,
        implicated=args.implicated,
        traces=args.traces,
    )


def _add_watchlist(commands: Commands) -> None:
    watchlist = commands.add_parser(
        "watchlist", help="publish the credit-punishment watchlist to its compacted topic"
    )
    actions = watchlist.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="publish every entry of a JSON-lines or CSV file")
    load.add_argument("file", type=Path)
    remove = actions.add_parser("remove", help="remove a person's entry (a null record)")
    remove.add_argument("id_number")
    watchlist.set_defaults(handler=_watchlist)


def _watchlist(args: argparse.Namespace, settings: Settings) -> int:
    from producers.watchlist import load_file, remove_entry

    if args.action == "load":
        return load_file(args.file, settings)
    return remove_entry(args.id_number, settings)


def _add_holdings(commands: Commands) -> None:
    holdings = commands.add_parser(
        "holdings",
        help="publish carriers' and banks' inventory snapshots to their compacted topic",
    )
    actions = holdings.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load",
        help="publish every snapshot of a JSON-lines or CSV file; print each rejected one",
    )
    load.add_argument("file", type=Path)
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    holdings.set_defaults(handler=_holdings)


def _holdings(args: argparse.Namespace, settings: Settings) -> int:
    from producers.holdings import load_file

    return load_file(args.file, settings, progress=not args.quiet)


def _add_check(commands: Commands) -> None:
    check = commands.add_parser(
        "check",
        help="send a file of pre-opening checks to a worker's POST /v1/check, one at a time",
    )
    check.add_argument("file", type=Path, help="JSON-lines file of duanka.check/1 requests")
    check.add_argument(
        "--url",
        help="where to send them (default: http://WEB_HOST:WEB_PORT/v1/check of the config's "
        "worker section)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print each decision document as returned (rejected lines go to stderr)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for each answer (default 10)",
    )
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from producers.check import default_url, run_checks

    if args.timeout <= 0:
        raise DuankaError("--timeout must be above 0")
    url = args.url or default_url(settings)
    return run_checks(args.file, url, args.timeout, as_json=args.json)


def _add_report(commands: Commands) -> None:
    report = commands.add_parser(
        "report", help="write a self-contained HTML report of a JSON-lines file of alerts"
    )
    report.add_argument("alerts", type=Path, help="JSON-lines file of duanka.alert/1 records")
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.add_argument(
        "--decisions",
        type=Path,
        help="JSON-lines file of duanka.decision/1 records (as replay --decisions writes): "
        "adds the checks by outcome and the refusals by rule",
    )
    report.add_argument(
        "--dispositions",
        type=Path,
        help="JSON-lines file of duanka.disposition/1 records (the police's verdicts): adds "
        "the alerts confirmed, dismissed and under investigation, and precision, per rule",
    )
    report.add_argument(
        "--traces",
        type=Path,
        help="JSON-lines file of implicated numbers' traces (as replay --implicated writes "
        "traces.jsonl): adds the implicated cards by opening day, place and days to report",
    )
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from producers.report import run_report

    summary = run_report(args.alerts, args.out, args.decisions, args.dispositions, args.traces)
    skipped = f", {summary.skipped} lines skipped" if summary.skipped else ""
    checks = ""
    if summary.decisions is not None:
        checks = f" and {summary.decisions} checks decided"
        if summary.decisions_skipped:
            checks += f" ({summary.decisions_skipped} lines skipped)"
    if summary.verdicts is not None:
        unmatched = f"{summary.verdicts_unmatched} on no alert in the file"
        if summary.dispositions_skipped:
            unmatched += f"; {summary.dispositions_skipped} lines skipped"
        checks += f" and {summary.verdicts} verdicts ({unmatched})"
    if summary.cards is not None:
        traced = f"{summary.traces} reports"
        if summary.traces_skipped:
            traced += f"; {summary.traces_skipped} lines skipped"
        checks += f" and {summary.cards} implicated cards ({traced})"
    print(f"wrote a report of {summary.alerts} alerts{skipped}{checks} to {args.out}")
    return 0


def _add_dispose(commands: Commands) -> None:
    dispose = commands.add_parser(
        "dispose",
        help="write the police's verdict on an alert (and a punishment) to the dispositions topic",
    )
    dispose.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id, as in the alert")
    dispose.add_argument("--status", required=True, metavar="investigating|confirmed|dismissed")
    dispose.add_argument("--by", required=True, metavar="WHO", help="who gives the verdict")
    dispose.add_argument("--note", default="", metavar="TEXT")
    dispose.add_argument(
        "--punish-scope",
        metavar="telecom|bank|all",
        help="with --status confirmed, for an identity alert: bar the alert's identity from "
        "these openings (watchlist entry); needs --until",
    )
    dispose.add_argument(
        "--until",
        metavar="YYYY-MM-DD",
        help="the day the punishment ends: openings from that day on are not barred",
    )
    dispose.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        help="the punishment's first day (default: the day of --at in Asia/Shanghai, today)",
    )
    dispose.add_argument("--basis", metavar="TEXT", help="the punishment's legal basis")
    dispose.add_argument(
        "--at", metavar="ISO-TIME", help="when the verdict was given (default: now, +08:00)"
    )
    dispose.set_defaults(handler=_dispose)


def _dispose(args: argparse.Namespace, settings: Settings) -> int:
    from producers.dispose import PunishOptions, build_disposition, describe, send_disposition

    punish = PunishOptions(args.punish_scope, args.until, args.since, args.basis)
    disposition = build_disposition(args.alert_id, args.status, args.by, args.note, punish, args.at)
    print(describe(disposition, send_disposition(disposition, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
