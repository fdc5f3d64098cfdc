"""Recurring series through the aggregator: their occurrences, served under its own uuids.

A node answers an accepted series with one session per occurrence (``series.occurrences[]``
with ``uuid`` and ``url``; see ``broker_core.sessions.series``). The aggregator serves each
under a uuid of its own, derived from the series' (so asking twice gives the same one, with
no lookup), remembers which upstream session it is (``agg_occurrence``), and rewrites the
links both ways: the series lists the aggregator's occurrence uuids, an occurrence names the
aggregator's series. Then GET and POST (cancel one occurrence) on those uuids are proxied like
any session. The upstream URL of an occurrence is built from the series' own (its node's
``/sessions/{uuid}``), never taken from the answer: an upstream cannot send the aggregator to
another host.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuidlib
from typing import Any

from .store import RemoteSession, Store

_NAMESPACE = uuidlib.UUID("1b1e0b6e-7d5c-4a43-9f1e-6c0c2b9d7a51")
_UUID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def local_uuid(series_uuid: str, remote_uuid: str) -> str:
    """The aggregator's uuid of an occurrence of its series ``series_uuid``."""
    return str(uuidlib.uuid5(_NAMESPACE, f"{series_uuid}/{remote_uuid}"))


def _occurrence_url(series: RemoteSession, remote_uuid: str) -> str:
    return f"{series.remote_url.rsplit('/', 1)[0]}/{remote_uuid}"


async def adopt(
    store: Store, remote: RemoteSession, document: dict[str, Any], base_url: str
) -> dict[str, Any]:
    """The upstream's session (already rewritten as the aggregator's) with its series'
    occurrences, or its own series, named as the aggregator serves them."""
    series = document.get("series")
    if isinstance(series, dict) and isinstance(series.get("occurrences"), list):
        rows, shown = [], []
        for occurrence in series["occurrences"][:1000]:
            theirs = occurrence.get("uuid") if isinstance(occurrence, dict) else None
            if isinstance(theirs, str) and _UUID.match(theirs):
                ours = local_uuid(remote.uuid, theirs)
                rows.append({
                    "uuid": ours, "series_uuid": remote.uuid,
                    "offerset_uuid": remote.offerset_uuid, "upstream": remote.upstream,
                    "remote_uuid": theirs, "remote_url": _occurrence_url(remote, theirs),
                })  # fmt: skip
                occurrence = {**occurrence, "uuid": ours, "url": f"{base_url}/sessions/{ours}"}
            shown.append(occurrence)
        if rows:
            await asyncio.to_thread(store.save_occurrences, rows)
        document = {**document, "series": {**series, "occurrences": shown}}
    occurrence = document.get("occurrence")
    if isinstance(occurrence, dict):
        ours = await asyncio.to_thread(store.series_of, remote.uuid)
        link = {"uuid": ours, "url": f"{base_url}/sessions/{ours}"} if ours else None
        # an upstream's uuid of the series means nothing here: named only when known
        document = {**document, "occurrence": {
            **{k: v for k, v in occurrence.items() if k != "series"},
            **({"series": link} if link else {}),
        }}  # fmt: skip
    return document
