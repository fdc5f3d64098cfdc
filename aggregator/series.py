"""Recurring series through the aggregator: their occurrences, served under its own uuids.

A node answers an accepted series with one session per occurrence (``series.occurrences[]``
with ``uuid`` and ``url``; see ``broker_core.sessions.series``). The aggregator serves each
under a uuid of its own, derived from the series' (so asking twice gives the same one, with
no lookup), remembers which upstream session it is (``agg_occurrence``), and rewrites the
links both ways: the series lists the aggregator's occurrence uuids, an occurrence names the
aggregator's series. Then GET and POST (cancel one occurrence) on those uuids are proxied like
any session, and a node's list shows an occurrence under that uuid too (:func:`listed`). The
upstream URL of an occurrence is built from the series' own (its node's ``/sessions/{uuid}``),
never taken from the answer: an upstream cannot send the aggregator to
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


def _row(series: RemoteSession, ours: str, theirs: str) -> dict[str, Any]:
    """The ``agg_occurrence`` row of an occurrence of the aggregator's series."""
    return {
        "uuid": ours, "series_uuid": series.uuid, "offerset_uuid": series.offerset_uuid,
        "upstream": series.upstream, "remote_uuid": theirs,
        "remote_url": _occurrence_url(series, theirs),
    }  # fmt: skip


def listed(
    store: Store, taken: list[tuple[str, dict[str, Any]]]
) -> dict[tuple[str, str], tuple[str, RemoteSession]]:
    """The listed occurrences (a node's list names each one's ``series``) of the series the
    aggregator offered: each one's uuid here and its series, by (upstream, the node's uuid).
    They are saved as :func:`adopt` saves them, so a client can take an occurrence's uuid
    from the list and GET or cancel it at once."""
    asked = [
        (name, item["series"], item["uuid"]) for name, item in taken
        if isinstance(item.get("series"), str) and _UUID.match(str(item.get("uuid")))
    ]  # fmt: skip
    if not asked:
        return {}
    series = store.remote_sessions([(name, uuid) for name, uuid, _ in asked])
    found: dict[tuple[str, str], tuple[str, RemoteSession]] = {}
    for name, series_uuid, theirs in asked:
        remote = series.get((name, series_uuid))
        if remote is not None:
            found[(name, theirs)] = (local_uuid(remote.uuid, theirs), remote)
    if found:
        store.save_occurrences([_row(remote, ours, key[1]) for key, (ours, remote) in
                                found.items()])  # fmt: skip
    return found


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
                rows.append(_row(remote, ours, theirs))
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
