"""Direct execution as the standard defines it: the session started, or a FAILED one saying why.

``POST /direct`` books and accepts the earliest slot starting now (``request_offers`` with
``direct``). The standard answers that with the session (``303 See Other`` to it); a direct
execution that cannot start is answered with a session in phase ``FAILED`` whose
``meta.messages`` say why: the same reasons a NO offer set gives. That session is stored (with
the NO offer set it belongs to, and no booking), so ``GET /sessions/{uuid}`` finds it.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from pydantic import ValidationError

from ..broker import Broker
from ..db.tables import ExecutionSession, OfferSet
from ..errors import CannotStart, DocumentInvalid
from ..identity import ANONYMOUS_IDENTITY, Identity
from ..kinds.base import Message, message
from ..kinds.request import parse_request
from ..sessions import store
from ..sessions.phases import FAILED
from ..sessions.record import Components, SessionRecord
from ..sessions.views import render_session
from .service import request_offers


def execute_direct(
    broker: Broker,
    document: Any,
    *,
    identity: Identity = ANONYMOUS_IDENTITY,
    project: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """The rendered session, and whether it was started (else it is FAILED)."""
    try:
        answer = request_offers(broker, document, direct=True, identity=identity, project=project)
    except CannotStart as exc:  # nothing fits now: no offer set was kept
        return _failed(broker, document, exc.reasons, identity.owner, None), False
    if answer["result"] == "YES":
        return answer["offers"][0], True
    reasons = (answer.get("meta") or {}).get("messages") or []
    return _failed(broker, document, reasons, identity.owner, answer["meta"]["uuid"]), False


def _failed(
    broker: Broker,
    document: Any,
    reasons: list[dict[str, Any]],
    owner: str | None,
    offerset_uuid: str | None,
) -> dict[str, Any]:
    """Store and render a FAILED session for a direct execution that could not start."""
    now = int(time.time())
    request = document if isinstance(document, dict) else {}
    asked = request.get("meta") if isinstance(request.get("meta"), dict) else {}
    record = SessionRecord(
        name=asked.get("name") or None,
        site=broker.config.site.name,
        components=_components(broker, request),
        messages=[_message(m) for m in reasons],
    )
    row = ExecutionSession(
        uuid=str(uuidlib.uuid4()),
        offerset_uuid=offerset_uuid or str(uuidlib.uuid4()),
        phase=FAILED,
        platform="",
        owner=owner,
        created_at=now,
        modified_at=now,
        expires_at=now,
        prepare_at=now,
        start_at=now,
        end_at=now,
        record=record.stored(),
    )
    with broker.db.write(durable=False) as session:
        if offerset_uuid is None:
            session.add(
                OfferSet(
                    uuid=row.offerset_uuid,
                    result="NO",
                    owner=owner,
                    created_at=now,
                    expires_at=now,
                    document={"meta": {"messages": list(reasons)}, "request": {}},
                )
            )
            session.flush()  # the offer set first: the session refers to it
        store.add(session, row)
        rendered = render_session(row, broker.base_url)
    return rendered


def _message(reason: dict[str, Any]) -> Message:
    """A reason as it was said (a message of the node's, or of its answer)."""
    try:
        return Message.model_validate(reason)
    except ValidationError:
        return message("{reason}", "ERROR", reason=str(reason.get("message") or reason))


def _components(broker: Broker, request: dict[str, Any]) -> Components:
    """What was asked for: the node's form of each component when it knows their kinds, else
    the executable and the rest as the client sent them (they passed the spec's validation)."""
    try:
        parsed = parse_request(request, broker.registry).request
    except DocumentInvalid:  # (it parsed before) the session shows what was sent
        parsed = None
    if parsed is None:
        return Components(
            executable=request.get("executable") or {},
            compute=request.get("compute") or None,
            storage=request.get("storage") or [],
            data=request.get("data") or [],
        )

    def dump(component: Any) -> dict[str, Any]:
        doc = component.model_dump(mode="json", exclude_none=True)
        return {**doc, "meta": {**doc.get("meta", {}), "uuid": str(uuidlib.uuid4())}}

    return Components(
        executable=dump(parsed.executable),
        compute=dump(parsed.compute) if parsed.compute else None,
        storage=[dump(s) for s in parsed.storage],
        data=[dump(d) for d in parsed.data],
    )
