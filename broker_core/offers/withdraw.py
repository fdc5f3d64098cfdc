"""POST /offersets/{uuid}: withdraw an offer set, rejecting every offer of it still open.

It is the update that rejects one offer (``{kind: uri:enum-value-update, path: phase, value:
REJECTED}``) applied to all of them, in one write transaction: the offer set's row is locked
first (the lock order of ``sessions.updates``, shared with accepts and the reaper), so an accept
racing it either lands before (and its offer stays accepted, its siblings already rejected) or
finds its offer REJECTED (a 409). Each hold is freed by ``ledger.set_booking_state``, which
bumps the pools' generations so caches see it. Withdrawing again changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import select

from .. import audit
from ..booking import ledger
from ..broker import Broker
from ..db.locks import for_update
from ..db.tables import HELD, RELEASED, OfferSet
from ..errors import DocumentInvalid, FieldError, NotFound
from ..identity import Identity
from ..sessions import store
from ..sessions.phases import OFFERED, REJECTED
from ..sessions.views import render_offerset

# the one update an offer set takes: the one that rejects an offer, for all of them
WITHDRAW = {"kind": "uri:enum-value-update", "path": "phase", "value": REJECTED}


def check_withdrawal(update: dict[str, Any]) -> None:
    """A 400 naming the field of an update that is not the withdrawal (the spec's ``Update``
    schema is shared with sessions, which take others)."""
    wrong = [
        FieldError(f"/{name}", f"an offer set takes only {name} {value!r} (a withdrawal)")
        for name, value in WITHDRAW.items()
        if update.get(name) != value
    ]
    if wrong:
        raise DocumentInvalid(wrong)


def withdraw_offerset(
    broker: Broker, offerset_uuid: str, update: dict[str, Any], identity: Identity
) -> dict[str, Any]:
    """Reject the open offers of the caller's offer set and free their holds; the offer set
    as it is then."""
    check_withdrawal(update)
    now = int(time.time())
    with broker.db.write() as session:
        query = for_update(session, select(OfferSet).where(OfferSet.uuid == offerset_uuid))
        row = session.exec(query).first()
        if row is None or not broker.may_see(identity, row.owner):
            raise NotFound("offer set", offerset_uuid)
        offers = store.of_offerset(session, offerset_uuid)
        open_offers = [s.uuid for s in offers if s.phase == OFFERED]
        if open_offers:
            store.set_phase(session, open_offers, REJECTED, now)
            ledger.set_booking_state(
                session, session_uuids=open_offers, old=(HELD,), new=RELEASED, now=now
            )
            for offer in offers:  # the rows read before the update, as they are now
                session.refresh(offer)
            audit.record(session, identity.owner, audit.WITHDRAW,
                         audit.offerset_subject(offerset_uuid),
                         f"{len(open_offers)} open offers rejected", now)  # fmt: skip
        rendered = render_offerset(row, offers, broker.base_url)
    return rendered
