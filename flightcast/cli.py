"""`flightcast run [--spicepod PATH] [--http HOST:PORT] [--flight HOST:PORT] [--data-dir DIR] [--api-key KEY]
[--role all|data|serve] [--data grpc://HOST:PORT] [--shutdown-grace SECONDS]` and `flightcast run --help-spicepod`
(every spicepod key with its default and help)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from spicepod import SpicepodError, describe_keys, load_spicepod
from spicepod.addresses import parse_host_port

# On SIGINT/SIGTERM, the longest Flight calls and HTTP connections still open may take to finish.
SHUTDOWN_GRACE_S = 10.0


class _LineFormatter(logging.Formatter):
    """One line per event: `logger: message`, the level named when it is not INFO."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"{record.name}: {level}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _host_port(value: str) -> str:
    try:
        parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {value!r}")
    return seconds


def _grpc_location(value: str) -> str:
    if not value.startswith("grpc://"):
        raise argparse.ArgumentTypeError(f"expected grpc://HOST:PORT, got {value!r}")
    _host_port(value[len("grpc://"):])
    return value


class _HelpSpicepod(argparse.Action):
    """Like --help: print every spicepod key with its default and help, then exit 0."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="print every spicepod.yaml key with its default and help, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(describe_keys())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flightcast", description="Time-series forecasting runtime.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the datasets and models of a spicepod")
    run.add_argument("--spicepod", default="spicepod.yaml", help="the spicepod file (default ./spicepod.yaml)")
    run.add_argument("--http", type=_host_port, help="HTTP listen address (default 127.0.0.1:3000)")
    run.add_argument("--flight", type=_host_port, help="Flight listen address (default 127.0.0.1:50051)")
    run.add_argument("--data-dir", help="where stored datasets and models live (default .flightcast/)")
    run.add_argument("--api-key", help="require this API key on HTTP /v1/* and on Flight")
    run.add_argument("--role", choices=("all", "data", "serve"), default="all",
                     help="all (default): one process; data: the Flight server alone; serve: pipelines and HTTP "
                          "against the data node named by --data")
    run.add_argument("--data", type=_grpc_location, metavar="grpc://HOST:PORT",
                     help="the data node a serve node reads from (its key is --api-key)")
    run.add_argument("--shutdown-grace", type=_seconds, default=SHUTDOWN_GRACE_S, metavar="SECONDS",
                     help="on SIGINT/SIGTERM, how long Flight calls and HTTP connections still open may take to "
                          f"finish before the process exits without them (default {SHUTDOWN_GRACE_S:g})")
    run.add_argument("--help-spicepod", action=_HelpSpicepod)
    return parser


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("tornado.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.role == "serve") != (args.data is not None):
        parser.error("--data grpc://HOST:PORT goes with --role serve, and --role serve needs it")
    configure_logging()
    try:
        pod = load_spicepod(args.spicepod)
    except SpicepodError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    runtime = pod.runtime
    if args.http:
        runtime = replace(runtime, http=args.http)
    if args.flight:
        runtime = replace(runtime, flight=args.flight)
    if args.data_dir:
        runtime = replace(runtime, data_dir=Path(args.data_dir).resolve())
    if args.api_key:
        runtime = replace(runtime, api_key=args.api_key)
    pod = replace(pod, runtime=runtime)

    if args.role != "data" and pod.models and pod.runtime.training.engine == "local":
        import pipelines.lightgbm_core  # noqa: F401 - LightGBM without the integrations this process never uses
    from flightcast.runtime import Runtime, StartError  # heavy imports once the spicepod is known valid

    try:
        code = Runtime(pod, grace_s=args.shutdown_grace, role=args.role, data_location=args.data).run()
    except SpicepodError as exc:  # data that does not fit its declaration stops start-up the same way
        print(f"{args.spicepod}: {exc.message}", file=sys.stderr)
        code = 2
    except StartError as exc:
        print(f"flightcast: {exc}", file=sys.stderr)
        code = 1
    # The store is closed and every acknowledged write is on disk. A Flight call a client left open can
    # keep a server thread alive that interpreter shutdown would wait for, and after a failed start a
    # training thread may still be loading LightGBM, which interpreter shutdown can crash: leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
