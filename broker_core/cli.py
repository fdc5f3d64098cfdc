"""The ``ebroker`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from .config import ConfigError, NodeConfig, load_config


def _load(args: argparse.Namespace) -> NodeConfig:
    config = load_config(args.config)
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if overrides:
        config.server = config.server.model_copy(update=overrides)
    if getattr(args, "database", None):
        config.database = config.database.model_copy(update={"url": args.database})
    if getattr(args, "site_name", None):
        config.site = config.site.model_copy(update={"name": args.site_name})
    return config


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("ebroker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def serve(args: argparse.Namespace) -> int:
    from . import neighbours
    from .http import server
    from .http.app import create_app
    from .node import build_broker

    config = _load(args)
    broker = build_broker(config)  # migrates and syncs the pools once, before any worker starts
    platforms = ", ".join(f"{p.name} ({p.config.type})" for p in broker.platforms)
    print(f"ebroker node {config.site.name!r} at {config.base_url}", flush=True)
    from .db.engine import masked_url

    database = masked_url(config.database.url)
    print(f"  API UI: {config.base_url}/ui   database: {database}", flush=True)
    print(f"  platforms: {platforms}", flush=True)
    for other in neighbours.register(config):
        print(f"ebroker: warning: {other}", file=sys.stderr, flush=True)
    limits = server.connection_limits(config.server)  # before serving: a bad limit stops here
    print(f"  connections: at most {limits.max_connections} per worker", flush=True)
    level = args.log_level.lower()
    if config.server.workers == 1:
        server.serve(create_app(broker), config.server, log_level=level, limits=limits)
        return 0
    broker.db.dispose()
    os.environ[CONFIG_ENV] = config.model_dump_json()
    server.serve(
        "broker_core.cli:worker_app",
        config.server,
        log_level=level,
        limits=limits,
        workers=config.server.workers,
        factory=True,
    )
    return 0


CONFIG_ENV = "EBROKER_WORKER_CONFIG"
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def worker_app() -> object:
    """The app of one of several worker processes, from the config the parent validated."""
    from .config import NodeConfig
    from .http.app import create_app
    from .node import build_broker

    config = NodeConfig.model_validate_json(os.environ[CONFIG_ENV])
    config.database = config.database.model_copy(update={"migrate_on_start": False})
    return create_app(build_broker(config))


def db_upgrade(args: argparse.Namespace) -> int:
    from .db import migrate

    config = _load(args)
    migrate.upgrade(config.database.url)
    from .db.engine import masked_url

    print(f"database {masked_url(config.database.url)} at revision {migrate.head_revision()}")
    return 0


def check_config(args: argparse.Namespace) -> int:
    from platforms.registry import build_platforms
    from policies.registry import build_policies

    from .auth import Authenticator
    from .auth.groups import check_group_names
    from .http.server import connection_limits
    from .node import check_bookings

    config = _load(args)
    for warning in check_group_names(config):
        print(f"warning: {warning}")
    limits = connection_limits(config.server)  # what the open-file limit allows, here
    platforms = build_platforms(config.platforms)
    Authenticator(config.auth)
    for policy in build_policies(config.policies, None):
        policy.close()
    for line in check_bookings(config, platforms):  # reads the database if there is one
        print(line)
    print(f"connections: at most {limits.max_connections} per worker")
    print(
        f"configuration OK: site {config.site.name!r}, {len(config.platforms)} platform(s), "
        f"{len(config.policies)} policy(ies)"
    )
    return 0


def aggregator(args: argparse.Namespace) -> int:
    from aggregator.config import load_aggregator_config
    from aggregator.http.app import create_aggregator_app

    from .db.engine import masked_url

    config = load_aggregator_config(args.config)
    if args.host or args.port is not None:
        config.server = config.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
    if args.database:
        config.database = config.database.model_copy(update={"url": args.database})
    app = create_aggregator_app(config)
    names = ", ".join(u.name for u in config.upstreams)
    print(f"ebroker aggregator {config.site.name!r} at {config.base_url}", flush=True)
    print(f"  upstreams: {names}   database: {masked_url(config.database.url)}", flush=True)
    from .http import server

    server.serve(app, config.server, log_level=args.log_level.lower())
    return 0


def hash_password(args: argparse.Namespace) -> int:
    from .auth.basic import hash_password_command

    return hash_password_command()


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
    s.set_defaults(func=serve)
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
    u.set_defaults(func=db_upgrade)
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
    c.set_defaults(func=check_config)
    h = sub.add_parser("hash-password", help="print an argon2id hash of a password for auth.basic "
                       "(read from standard input, or asked for at a terminal)")  # fmt: skip
    h.set_defaults(func=hash_password)
    return top


def main(argv: list[str] | None = None) -> int:
    # connexion imports starlette's test client at import time, which warns about httpx
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ebroker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
