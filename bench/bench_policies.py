#!/usr/bin/env python3
"""What identity and policies cost per request, in process (no HTTP), on a SQLite node.

    python bench/bench_policies.py [--requests 400]

It builds the README's 1000/500 site twice on fresh SQLite files (synchronous=OFF, so commits
do not dominate): once with no policies and anonymous callers, once with bearer tokens, the
``local-rules`` and ``allocations`` policies (the caller's project holding 50 accepted
sessions). It prints, for ``request_offers`` and for ``Authenticator.authenticate`` of a
cached RS256 token, p50/p99 in milliseconds and the policies' share as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker_core.auth import Authenticator
from broker_core.config import parse_config
from broker_core.identity import ANONYMOUS_IDENTITY
from broker_core.node import build_broker
from broker_core.offers.service import request_offers
from broker_core.sessions.updates import update_session
from tests.conftest import ACCEPT, request_doc
from tests.oidc_issuer import OidcIssuer

POOLS = [
    {"name": "federation", "inventories": {"cores": {"total": 500}, "memory": {"total": 10**5}}},
    {"name": "local", "inventories": {"cores": {"total": 500}, "memory": {"total": 10**5}}},
]
RULES = {
    "access": [
        {"name": "federation-pledge", "groups": ["federation"], "pools": ["cluster/federation"]},
        {"name": "national-share", "groups": ["local"], "pools": ["cluster/local"]},
    ],
    "limits": [{"name": "students", "groups": ["students"], "caps": {"cores": 64}}],
}
PROJECTS = {
    "projects": [
        {"name": "institute", "members": {"groups": ["managers"]},
         "allocations": [{"resource": "cores", "hours": 10**7, "start": "2020-01-01",
                          "end": "2100-01-01"}]},
        {"name": "astro", "parent": "institute", "members": {"groups": ["astro"]},
         "allocations": [{"resource": "cores", "hours": 10**6, "start": "2020-01-01",
                          "end": "2100-01-01"}],
         "concurrency": {"cores": 900}},
    ]
}  # fmt: skip


def node(folder: str, name: str, extra: dict[str, Any]) -> Any:
    data = {
        "database": {"url": f"sqlite:///{folder}/{name}.db", "sqlite_synchronous": "OFF"},
        "lifecycle": {"enabled": False},
        "platforms": [{"name": "cluster", "type": "simulated", "combine_pools": True,
                       "options": {"base_preparation": "PT0S", "image_pull": "PT0S",
                                   "data_staging": "PT0S"}, "pools": POOLS}],
        **extra,
    }  # fmt: skip
    return build_broker(parse_config(data))


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    doc = request_doc(cores=(1, 8), duration="PT1H")
    with OidcIssuer() as issuer, tempfile.TemporaryDirectory() as folder:
        plain = node(folder, "plain", {"holds": {"anonymous": {}}})  # one caller, many asks
        guarded = node(folder, "guarded", {
            "auth": {**issuer.auth_config(), "admin_groups": ["admins"]},
            "policies": [{"name": "site-rules", "type": "local-rules", "options": RULES},
                         {"name": "allocations", "type": "allocations", "options": PROJECTS}],
        })  # fmt: skip
        authenticator = guarded.authenticator
        assert isinstance(authenticator, Authenticator)
        header = f"Bearer {issuer.token(sub='ann', groups=['federation', 'local', 'astro'])}"
        ann = authenticator.authenticate(header)
        for _ in range(50):  # the project's accepted sessions, counted by every check
            offer = request_offers(guarded, doc, identity=ann)["offers"][0]
            update_session(guarded, offer["meta"]["uuid"], ACCEPT, ann)
        rows = []
        cases = [
            ("no policies, anonymous", plain, ANONYMOUS_IDENTITY),
            ("token + local-rules + allocations", guarded, ann),
        ]
        for label, broker, identity in cases:
            timed(lambda b=broker, i=identity: request_offers(b, doc, identity=i), 20)  # warm-up
            samples = timed(lambda b=broker, i=identity: request_offers(b, doc, identity=i),
                            args.requests)  # fmt: skip
            rows.append((label, *summary(samples)))
        auth = summary(timed(lambda: authenticator.authenticate(header), args.requests))
        plain.close()
        guarded.close()
    print("| request_offers | p50 ms | p99 ms |\n|---|---|---|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.2f} | {p99:.2f} |")
    print(f"| verifying a bearer token (keys cached) | {auth[0]:.3f} | {auth[1]:.3f} |")
    ratio = rows[1][1] / rows[0][1]
    print(f"\npolicies/plain p50 ratio: {ratio:.2f} "
          f"(+{rows[1][1] - rows[0][1]:.2f} ms per request)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
