"""The broker node's commands of ``ebroker``: ``serve``, ``db upgrade``, ``check-config`` and
``hash-password``. The command line itself, above the node and the aggregator, is
:mod:`ebroker.cli`."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .config import NodeConfig, load_with_secrets
from .observability import logs
from .observability.metrics import MULTIPROCESS_ENV
from .secrets import Secrets, mask_logs


def _load(args: argparse.Namespace) -> NodeConfig:
    """The node's configuration (file, environment, secret files, command line), with its
    secrets masked in every log line from now on."""
    config, secrets = load_with_secrets(NodeConfig, args.config)
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
    secrets.add_url_password(config.database.url)
    mask_logs(secrets)
    _SECRETS.append(secrets)
    logs.configure(getattr(args, "log_level", "INFO"), config.server.log_format)
    return config


_SECRETS: list[Secrets] = []  # this process's, handed on to its worker processes


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
    handed = _hand_on(config, level)
    os.environ[CONFIG_FILE_ENV] = str(handed)
    # each worker's counters, summed when /metrics is scraped (prometheus-client's way)
    metrics_dir = handed.parent / "metrics"
    metrics_dir.mkdir(mode=0o700)
    os.environ[MULTIPROCESS_ENV] = str(metrics_dir)
    server.serve(
        "broker_core.cli:worker_app",
        config.server,
        log_level=level,
        limits=limits,
        workers=config.server.workers,
        factory=True,
    )
    return 0


CONFIG_FILE_ENV = "EBROKER_WORKER_CONFIG_FILE"


def _hand_on(config: NodeConfig, log_level: str) -> Path:
    """The validated configuration, for the worker processes, in a file only this user may
    read (removed when the node exits): never in their environment, where its secrets would
    show in ``/proc/<pid>/environ`` and in every child's environment."""
    directory = Path(tempfile.mkdtemp(prefix="ebroker-workers-"))  # mode 0700
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "config.json"
    secrets = sorted(s for found in _SECRETS for s in found.values())
    handed = {"config": config.model_dump(mode="json"), "secrets": secrets,
              "log_level": log_level}  # fmt: skip
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(handed, handle)
    return path


def worker_app() -> object:
    """The app of one of several worker processes, from the config the parent validated."""
    from .http.app import create_app
    from .node import build_broker

    handed = json.loads(Path(os.environ[CONFIG_FILE_ENV]).read_text())
    mask_logs(Secrets(handed["secrets"]))
    config = NodeConfig.model_validate(handed["config"])
    logs.configure(handed["log_level"].upper(), config.server.log_format)
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


def hash_password(args: argparse.Namespace) -> int:
    from .auth.basic import hash_password_command

    return hash_password_command()


if __name__ == "__main__":  # the command line moved above the node and the aggregator
    sys.exit("ebroker: run `ebroker` (or `python -m ebroker`); broker_core.cli is not a command")
