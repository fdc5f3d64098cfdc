"""``ebroker aggregator``: run an aggregator over other nodes and aggregators."""

from __future__ import annotations

import argparse

from broker_core.config import load_with_secrets
from broker_core.db.engine import masked_url
from broker_core.http import server
from broker_core.observability import logs
from broker_core.secrets import mask_logs

from .config import AggregatorConfig
from .http.app import create_aggregator_app


def aggregator(args: argparse.Namespace) -> int:
    config, secrets = load_with_secrets(AggregatorConfig, args.config)
    if args.host or args.port is not None:
        config.server = config.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
    if args.database:
        config.database = config.database.model_copy(update={"url": args.database})
    secrets.add_url_password(config.database.url)
    mask_logs(secrets)
    logs.configure(args.log_level.upper(), config.server.log_format)
    app = create_aggregator_app(config)
    names = ", ".join(u.name for u in config.upstreams)
    print(f"ebroker aggregator {config.site.name!r} at {config.base_url}", flush=True)
    print(f"  upstreams: {names}   database: {masked_url(config.database.url)}", flush=True)
    server.serve(app, config.server, log_level=args.log_level.lower())
    return 0
