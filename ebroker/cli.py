"""The ``ebroker`` command line: the node's commands (:mod:`broker_core.cli`), the aggregator's
(:mod:`aggregator.cli`) and the demo federation of both (:mod:`.demo`). Each is imported only
when it runs, so that ``ebroker serve`` loads nothing of the aggregator."""

from __future__ import annotations

import argparse
import sys
import warnings

from broker_core import cli as node
from broker_core.config import ConfigError
from broker_core.observability import logs

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("ebroker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def aggregator(args: argparse.Namespace) -> int:
    from aggregator.cli import aggregator

    return aggregator(args)


def demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run

    return run(Path(args.dir), args.base_port, args.log_level)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ebroker", description="ebroker execution broker")
    top.add_argument("--version", action="version", version=f"ebroker {version()}")
    sub = top.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", help="node configuration file (YAML)")
        p.add_argument("--database", help="database URL (overrides the config)")

    s = sub.add_parser("serve", help="run a broker node")
    common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--site-name", help="the site's name (overrides the config)")
    s.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    s.set_defaults(func=node.serve)
    a = sub.add_parser("aggregator", help="run an aggregator over other nodes and aggregators")
    a.add_argument("-c", "--config", required=True, help="aggregator configuration file (YAML)")
    a.add_argument("--database", help="database URL (overrides the config)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    a.set_defaults(func=aggregator)
    d = sub.add_parser("db", help="database schema management")
    dsub = d.add_subparsers(dest="db_command", required=True)
    u = dsub.add_parser("upgrade", help="migrate the schema to the latest revision")
    common(u)
    u.set_defaults(func=node.db_upgrade)
    m = sub.add_parser(
        "demo", help="a federation on this machine: two nodes and an aggregator over them"
    )
    m.add_argument("--dir", default="ebroker-demo", help="where configs, databases and logs go")
    m.add_argument(
        "--base-port", type=int, default=8090, help="the aggregator's port; the nodes the next two"
    )
    m.add_argument("--log-level", default="WARNING", choices=LOG_LEVELS)
    m.set_defaults(func=demo)
    c = sub.add_parser("check-config", help="validate a configuration file and exit")
    common(c)
    c.set_defaults(func=node.check_config)
    h = sub.add_parser("hash-password", help="print an argon2id hash of a password for auth.basic "
                       "(read from standard input, or asked for at a terminal)")  # fmt: skip
    h.set_defaults(func=node.hash_password)
    return top


def main(argv: list[str] | None = None) -> int:
    # connexion imports starlette's test client at import time, which warns about httpx
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    args = parser().parse_args(argv)
    logs.configure(getattr(args, "log_level", "INFO"))  # plain, until the config says
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ebroker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
