"""POST /offersets/{uuid} on an aggregator: withdraw a merged offer set, rejecting each of its
offers on the node it came from.

A merged offer set spans nodes, so its withdrawal cannot be one transaction: each node rejects
its own offers at once (atomically there), and what could not be reached is said in the
answer's ``meta.messages`` (those offers still lapse at their expiry). Repeating it is
harmless: a node answers a rejected offer's rejection with the offer as it is. An offer already
accepted is left as it is; every offer answering 404 (another caller's) is a 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker_core.errors import NotFound, UpstreamUnavailable
from broker_core.kinds.base import Message, message
from broker_core.offers.withdraw import check_withdrawal
from broker_core.sessions.phases import AFTER_ACCEPTANCE, CANCELLED
from broker_core.sessions.views import wire_messages

from .merge import phase_of
from .rejections import GONE, REJECT
from .store import RemoteSession

NOT_FOUND = "not found"


async def withdraw(
    service: Any, offerset_uuid: str, update: dict[str, Any], token: str | None
) -> dict[str, Any]:
    check_withdrawal(update)
    stored = await asyncio.to_thread(service.store.offerset, offerset_uuid)
    if stored is None:
        raise NotFound("offer set", offerset_uuid)
    remotes: list[RemoteSession] = await asyncio.to_thread(service.store.sessions_of,
                                                           offerset_uuid)  # fmt: skip
    await service.combined.withdraw(offerset_uuid, token)  # a combined offer set's offers

    async def reject(remote: RemoteSession) -> Message | str | None:
        try:
            answer = await service._call(remote, "POST", remote.remote_url, document=REJECT,
                                         token=token)  # fmt: skip
        except UpstreamUnavailable as exc:
            return message("could not withdraw offer {uuid} at upstream {upstream}: {error}",
                           level="WARN", uuid=remote.uuid, upstream=remote.upstream,
                           error=exc.detail)  # fmt: skip
        phase = phase_of(answer.document)
        if answer.status == 200:
            return None
        if answer.status == 404:
            return NOT_FOUND
        if answer.status == 409 and phase in GONE | AFTER_ACCEPTANCE | {CANCELLED}:
            return None  # closed already, or accepted (which a withdrawal leaves)
        return message("could not withdraw offer {uuid} at upstream {upstream}: it answered "
                       "{status}", level="WARN", uuid=remote.uuid, upstream=remote.upstream,
                       status=answer.status)  # fmt: skip

    outcomes = await asyncio.gather(*(reject(r) for r in remotes))
    if remotes and all(o == NOT_FOUND for o in outcomes):
        raise NotFound("offer set", offerset_uuid)  # none of it is the caller's
    document = await service.get_offerset(offerset_uuid, token)
    notes = [o for o in outcomes if isinstance(o, Message)]
    if notes:
        meta = document["meta"]
        meta["messages"] = list(meta.get("messages") or []) + wire_messages(
            [n.model_dump(exclude_none=True) for n in notes]
        )
    return document
