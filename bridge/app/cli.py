"""The ``bridge`` command: run | validate | schema | send | dlq | dev | test.

Exit codes: 0 success, 1 invalid config or failed command, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from bridge.app.config import json_schema, load_config, print_config_error
from bridge.config import BridgeConfig
from bridge.config.models import listen_address
from bridge.config.schema import schema_text
from bridge.errors import BridgeError, ConfigError
from bridge.settings import Settings


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="A fan-out message bridge.")
    parser.add_argument("--version", action="version", version=f"bridge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            default=settings.config,
            help="config file (env BRIDGE_CONFIG)",
        )

    def with_server(p: argparse.ArgumentParser) -> None:
        """The flags of a command that runs the bridge: where it listens, its store."""
        p.add_argument(
            "--listen",
            metavar="HOST:PORT",
            default=settings.listen,
            type=_listen,
            help="override server.listen (host:port; env BRIDGE_LISTEN)",
        )
        p.add_argument(
            "--store",
            metavar="URL",
            default=settings.store,
            help="override the store URL (env BRIDGE_STORE)",
        )

    run = sub.add_parser("run", help="run the bridge")
    with_config(run)
    with_server(run)
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=settings.log_level,
        type=_level,
        help="override telemetry.logs.level: DEBUG, INFO, WARNING, ERROR or CRITICAL "
        "(env BRIDGE_LOG_LEVEL)",
    )
    run.add_argument(
        "--log-format",
        default=settings.log_format,
        choices=["json", "console"],
        help="override telemetry.logs.format (env BRIDGE_LOG_FORMAT)",
    )

    validate = sub.add_parser(
        "validate", help="check a config file; print every error with its line"
    )
    with_config(validate)

    schema = sub.add_parser("schema", help="print the JSON Schema of the config file")
    schema.add_argument(
        "-o", "--output", metavar="FILE", help="write to this file instead of stdout"
    )

    send = sub.add_parser("send", help="send an event to a running bridge's event API")
    with_config(send)
    send.add_argument("type", metavar="TYPE", help="event type")
    send.add_argument("--data", metavar="JSON", default="{}", help="event data as JSON")
    send.add_argument("--id", help="event id (default: random)")
    send.add_argument(
        "--correlation-id", metavar="ID", help="the event's correlation id (default: the event id)"
    )
    send.add_argument(
        "--url", metavar="URL", help="bridge base URL (default: from the config's server.listen)"
    )
    send.add_argument("--token", help="bearer token for the event API")

    dlq = sub.add_parser("dlq", help="list, show, replay or discard dead letters")
    with_config(dlq)
    dlq.add_argument(
        "--store",
        metavar="URL",
        default=settings.store,
        help="override the store URL (env BRIDGE_STORE)",
    )
    dsub = dlq.add_subparsers(dest="action", required=True)
    dlist = dsub.add_parser("list", help="newest first")
    dlist.add_argument(
        "--status", choices=["pending", "replayed", "discarded"], help="only letters in this state"
    )
    dlist.add_argument("--handler", metavar="HANDLER", help="only letters of this handler")
    dlist.add_argument(
        "--limit", metavar="N", type=_positive, default=50, help="at most this many (default 50)"
    )
    dlist.add_argument("--json", action="store_true", help="one JSON object per line")
    dshow = dsub.add_parser(
        "show", help="one dead letter in full, as JSON (tracebacks also as text on stderr)"
    )
    dshow.add_argument("id", metavar="ID", help="the dead letter's id (from `dlq list`)")
    dreplay = dsub.add_parser("replay", help="send the event again to its handler (or --handler)")
    dreplay.add_argument("id", metavar="ID", help="the dead letter's id")
    dreplay.add_argument("--handler", help="replay to this handler instead of the one that failed")
    dreplay.add_argument("--force", action="store_true", help="replay a letter that was discarded")
    ddiscard = dsub.add_parser("discard", help="mark a dead letter discarded")
    ddiscard.add_argument("id", metavar="ID", help="the dead letter's id")

    dev = sub.add_parser(
        "dev", help="run for development: readable logs, the UI, reload, embedded brokers"
    )
    with_config(dev)
    with_server(dev)
    dev.add_argument(
        "--log-level",
        metavar="LEVEL",
        default=settings.log_level or "INFO",
        type=_level,
        help="DEBUG, INFO (the default), WARNING, ERROR or CRITICAL",
    )
    dev.add_argument("--no-reload", action="store_true", help="do not restart on changes")
    dev.add_argument("--no-brokers", action="store_true", help="never start embedded Kafka or SQS")

    test = sub.add_parser("test", help="check a config against cases, without brokers")
    with_config(test)
    test.add_argument("cases", metavar="CASES", help="the cases file (YAML)")
    test.add_argument(
        "--log-level",
        metavar="LEVEL",
        default="CRITICAL",
        type=_level,
        help="handlers' and the bridge's logs (default CRITICAL: none)",
    )
    return parser


def _version() -> str:
    try:
        return metadata.version("fanout-bridge")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _positive(value: str) -> int:
    """``--limit``: a whole number above 0."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number above 0")
    return int(value)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(value: str) -> str:
    """``--log-level``, in any case."""
    if value.upper() not in _LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(_LEVELS)}")
    return value.upper()


def _listen(value: str) -> str:
    """``--listen``, checked as ``server.listen`` is in the config file."""
    try:
        return listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bridge`` command; returns the exit code."""
    settings = Settings()
    args = _parser(settings).parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        # The reader went away (`bridge schema | head`): it has what it wanted. Later
        # writes, and the flush at exit, go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "schema":
            return _schema(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "run":
            return _run(args)
        if args.command == "send":
            return asyncio.run(_send(args))
        if args.command == "dlq":
            from bridge.app.dlq import dlq_command

            return asyncio.run(dlq_command(args))
        if args.command == "dev":
            from bridge.app.devmode import run_dev

            return run_dev(args)
        if args.command == "test":
            return _test(args)
    except ConfigError as exc:
        print_config_error(exc)
        return 1
    except BridgeError as exc:
        from bridge.server import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except ExceptionGroup as group:
        # A task of the running bridge failed for good (a connector that cannot connect):
        # one line per reason, not a traceback.
        known, other = group.split(BridgeError)
        if known is None or other is not None:
            raise
        from bridge.server import redact

        for leaf in _leaves(known):
            print(f"error: {redact(str(leaf))}", file=sys.stderr)
        return 1
    return 2


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _schema(args: argparse.Namespace) -> int:
    text = schema_text(json_schema())
    if args.output:
        try:
            with open(args.output, "w") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(
        f"{args.config}: ok ({len(cfg.connectors)} connectors, {len(cfg.handlers)} handlers, "
        f"{len(cfg.events)} event types)"
    )
    if not cfg.handlers:
        # Valid, but a bridge that does nothing: most likely a file not yet filled in.
        what = "no handlers" if cfg.connectors else "no handlers and no connectors"
        print(
            f"warning: {args.config} has {what}: events would be received and nothing would run",
            file=sys.stderr,
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from bridge.app.runtime import Runtime, tune_gc
    from bridge.telemetry import configure_logging

    cfg = load_config(args.config)
    _override(cfg, args)
    logs = cfg.telemetry.logs
    configure_logging(args.log_format or logs.format, args.log_level or logs.level, logs.levels)

    async def main() -> None:
        runtime = Runtime(cfg)
        runtime.tracing.install_global()
        runtime.install_signal_handlers()
        tune_gc()
        await runtime.run()

    asyncio.run(main())
    return 0


def _test(args: argparse.Namespace) -> int:
    from bridge.app.cases import load_cases
    from bridge.app.casetest import report, run_cases
    from bridge.telemetry import configure_logging

    cfg = load_config(args.config)
    cases = load_cases(args.cases)
    configure_logging("console", args.log_level.upper())
    outcomes = asyncio.run(run_cases(cfg, cases))
    print(report(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1


def _override(cfg: BridgeConfig, args: argparse.Namespace) -> None:
    if getattr(args, "listen", None):
        cfg.server.listen = args.listen
    if getattr(args, "store", None):
        cfg.store = args.store


def _base_url(cfg: BridgeConfig) -> str:
    host = cfg.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{cfg.server.port}"


async def _send(args: argparse.Namespace) -> int:
    import aiohttp

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        print(f"error: --data is not JSON: {exc}", file=sys.stderr)
        return 1
    cfg = load_config(args.config, check=False) if args.url is None else None
    url = (args.url or _base_url(cfg)).rstrip("/") + "/v1/events"  # type: ignore[arg-type]
    token = args.token or (cfg.server.api.token if cfg else None)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": args.type,
        "source": "bridge://cli",
        "data": data,
    }
    if args.id:
        event["id"] = args.id
    if args.correlation_id:
        event["correlationid"] = args.correlation_id
    headers = {"content-type": "application/cloudevents+json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=event, headers=headers) as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError as exc:
        print(f"error: cannot reach the bridge at {url}: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0 if resp.status == 202 else 1
