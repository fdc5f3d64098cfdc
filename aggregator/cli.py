"""``ebroker aggregator``: run an aggregator over other nodes and aggregators."""

from __future__ import annotations

import argparse

from broker_core.db.engine import masked_url
from broker_core.http import server

from .config import load_aggregator_config
from .http.app import create_aggregator_app


def aggregator(args: argparse.Namespace) -> int:
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
    server.serve(app, config.server, log_level=args.log_level.lower())
    return 0
