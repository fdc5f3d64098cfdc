"""The booking table, declared with sqlmodel. Times are integer UTC epoch seconds.

Capacity is modelled the way OpenStack placement models it (pools with inventories per resource
class, a generation per pool), plus time: a booking claims amounts on one or more pools over the
half-open interval [start_at, end_at).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

# Booking states
HELD, CONFIRMED, ACTIVE, RELEASED = "HELD", "CONFIRMED", "ACTIVE", "RELEASED"
LIVE_STATES = (HELD, CONFIRMED, ACTIVE)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_type=BigInteger, **kwargs)


class ResourcePool(SQLModel, table=True):
    __tablename__ = "resource_pool"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=255, unique=True)  # "<platform>/<pool>"
    platform: str = Field(max_length=128)
    generation: int = Field(default=0, sa_type=BigInteger)
    # The longest live booking on the pool (seconds). It bounds the end times a window query
    # scans: a booking overlapping [a, b) ends before b + longest_booking.
    longest_booking: int = Field(default=0, sa_type=BigInteger)
    enabled: bool = True
    updated_at: int = _ts()
    # Drained by an admin (``broker_core.admin.drain``): no new claims on the pool; what is
    # booked stays. None when open.
    drained_at: int | None = Field(default=None, sa_type=BigInteger)
    drained_by: str | None = Field(default=None, max_length=255)
    drain_reason: str | None = Field(default=None, max_length=1024)
    # when the last of its live maintenance windows ends (None: it has none): a booking freed
    # on the pool before then is given to its windows (``ledger.top_up_maintenance``)
    maintenance_until: int | None = Field(default=None, sa_type=BigInteger)
    # what its accelerators are, placement-style (GPU_A100, GPU_MEM_80G), sorted: what a
    # request's accelerator model and memory are matched against (``offers.accelerators``)
    traits: list[str] | None = Field(default=None, sa_column=Column(JSON))


class Inventory(SQLModel, table=True):
    __tablename__ = "inventory"
    __table_args__ = (UniqueConstraint("pool_id", "resource_class"),)

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="resource_pool.id", index=True)
    resource_class: str = Field(max_length=32)
    total: int = Field(sa_type=BigInteger)
    reserved: int = Field(default=0, sa_type=BigInteger)
    allocation_ratio: float = 1.0
    min_unit: int = 1
    max_unit: int | None = None
    step_size: int = 1

    @property
    def capacity(self) -> int:
        return int((self.total - self.reserved) * self.allocation_ratio)


class OfferSet(SQLModel, table=True):
    __tablename__ = "offer_set"
    __table_args__ = (
        # GET /offersets, in its order: a caller's, and (for admins) everyone's
        Index("ix_offer_set_owner_created", "owner", "created_at", "uuid"),
        Index("ix_offer_set_created", "created_at", "uuid"),
    )

    uuid: str = Field(primary_key=True, max_length=36)
    result: str = Field(max_length=8)
    owner: str | None = Field(default=None, max_length=255)
    created_at: int = _ts()
    expires_at: int = _ts()
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # what was asked for (a digest of the request without its meta): a caller's new request
    # for the same thing replaces its open offer set
    request_key: str | None = Field(default=None, max_length=64)


class ExecutionSession(SQLModel, table=True):
    __tablename__ = "execution_session"
    __table_args__ = (
        Index("ix_session_phase_expires", "phase", "expires_at"),
        Index("ix_session_due", "due_at"),
        # a caller's open offers, for its hold limits
        Index("ix_session_owner_phase_expires", "owner", "phase", "expires_at"),
        # GET /sessions, in its order (booked start, uuid): a caller's, and everyone's
        Index("ix_session_owner_start", "owner", "start_at", "uuid"),
        Index("ix_session_start", "start_at", "uuid"),
    )

    uuid: str = Field(primary_key=True, max_length=36)
    offerset_uuid: str = Field(foreign_key="offer_set.uuid", index=True, max_length=36)
    phase: str = Field(max_length=16)
    platform: str = Field(max_length=128)
    owner: str | None = Field(default=None, max_length=255)
    created_at: int = _ts()
    modified_at: int = _ts()
    expires_at: int = _ts()
    prepare_at: int = _ts()
    start_at: int = _ts()
    end_at: int = _ts()
    generation: int = Field(default=0, sa_type=BigInteger)
    # The lifecycle engine: when it must next look at the session (None once nothing is left
    # to do), and which node process holds it and until when.
    due_at: int | None = Field(default=None, sa_type=BigInteger)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: int | None = Field(default=None, sa_type=BigInteger)
    # the session's typed record (``sessions.record.SessionRecord``): its components as
    # offered, what was granted on which pools, when each phase was entered, its messages and
    # what its platform keeps; the wire document is rendered from it
    record: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # the project charged for the session (the allocations policy chose it), if any
    project: str | None = Field(default=None, max_length=128, index=True)
    # an occurrence of a recurring series: the series' session (which books nothing itself;
    # each occurrence has its own booking). None for every other session
    series_uuid: str | None = Field(default=None, max_length=36, index=True)


class Booking(SQLModel, table=True):
    __tablename__ = "booking"
    # covers the window query of every request: live bookings by end time, no table lookups
    __table_args__ = (
        Index("ix_booking_live_window", "state", "end_at", "start_at", "id", "offerset_uuid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # a session's booking, or (session None) a piece of a maintenance window, whose uuid is
    # then its offerset_uuid too
    session_uuid: str | None = Field(
        default=None, foreign_key="execution_session.uuid", unique=True, max_length=36
    )
    offerset_uuid: str = Field(index=True, max_length=36)
    maintenance_uuid: str | None = Field(
        default=None, foreign_key="maintenance_window.uuid", index=True, max_length=36
    )
    state: str = Field(max_length=16)
    start_at: int = _ts()
    end_at: int = _ts()
    expires_at: int | None = Field(default=None, sa_type=BigInteger)
    created_at: int = _ts()
    modified_at: int = _ts()


class Allocation(SQLModel, table=True):
    __tablename__ = "allocation"
    __table_args__ = (
        Index("ix_allocation_pool_generation", "pool_id", "generation"),
        # covers the join of the window query
        Index("ix_allocation_booking_amounts", "booking_id", "pool_id", "resource_class", "amount"),
    )

    id: int | None = Field(default=None, primary_key=True)
    booking_id: int = Field(foreign_key="booking.id")
    pool_id: int = Field(foreign_key="resource_pool.id")
    resource_class: str = Field(max_length=32)
    amount: int = Field(sa_type=BigInteger)
    # The pool generation of this allocation's last change (its claim, or a state change of its
    # booking). Changes to a pool are serialised by its row lock, so "allocations newer than
    # generation g" is exactly what a reader of generation g has not seen.
    generation: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class UsageRecord(SQLModel, table=True):
    """What an ended session actually used of one resource class: ``amount`` over
    [start_at, end_at). Written once, in the transaction that frees its booking."""

    __tablename__ = "usage_record"
    __table_args__ = (
        UniqueConstraint("session_uuid", "resource_class"),
        Index("ix_usage_project_end", "project", "end_at"),
        Index("ix_usage_owner_end", "owner", "end_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    session_uuid: str = Field(max_length=36)
    project: str | None = Field(default=None, max_length=128)
    owner: str | None = Field(default=None, max_length=255)
    platform: str = Field(max_length=128)
    resource_class: str = Field(max_length=32)
    amount: int = Field(sa_type=BigInteger)
    start_at: int = _ts()
    end_at: int = _ts()


class MaintenanceWindow(SQLModel, table=True):
    """An admin's maintenance window on one pool: [start_at, end_at) taking ``amounts`` per
    class (None: all of the pool's capacity). What it takes is booked in the ledger as
    CONFIRMED bookings of no session (``Booking.maintenance_uuid``), so offers avoid it and
    the overbooking checks count it; a deleted window keeps its row (the audit log names it)
    and its bookings are RELEASED."""

    __tablename__ = "maintenance_window"
    __table_args__ = (Index("ix_maintenance_pool_end", "pool_id", "end_at"),)

    uuid: str = Field(primary_key=True, max_length=36)
    pool_id: int = Field(foreign_key="resource_pool.id")
    start_at: int = _ts()
    end_at: int = _ts()
    amounts: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    reason: str = Field(max_length=1024)
    created_by: str = Field(max_length=255)
    created_at: int = _ts()
    deleted_at: int | None = Field(default=None, sa_type=BigInteger)
    deleted_by: str | None = Field(default=None, max_length=255)


class PoolOverride(SQLModel, table=True):
    """An admin's change to a pool's inventories, kept over restarts: per class, the fields
    that replace what the platform (or the config) gives, applied on top of it whenever the
    pools are synced (``ledger.sync_pools``)."""

    __tablename__ = "pool_override"

    pool_id: int = Field(primary_key=True, foreign_key="resource_pool.id")
    inventories: dict[str, dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    changed_by: str = Field(max_length=255)
    changed_at: int = _ts()
    reason: str | None = Field(default=None, max_length=1024)


class AuditEvent(SQLModel, table=True):
    """One state change and who made it, written in the transaction that made it
    (``broker_core.audit``). Listed by (at, id)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_at", "at", "id"),
        Index("ix_audit_actor_at", "actor", "at", "id"),
        Index("ix_audit_subject_at", "subject", "at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: int = _ts()
    actor: str = Field(max_length=255)
    action: str = Field(max_length=32)
    subject: str = Field(max_length=320)  # "session:<uuid>", "pool:<platform>/<pool>", ...
    detail: str | None = Field(default=None, max_length=2048)


class NotificationOutbox(SQLModel, table=True):
    """One notification to deliver: an event of a session on one channel (its webhook, or its
    e-mail), written in the transaction of the change that caused it and delivered by the
    notification worker (``broker_core.notifications``) of whichever process leases it first.
    ``message_id`` is the webhook's idempotency key, the same on every attempt; a session's
    rows of one channel go out in ``scheduled_at`` order."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "due_at"),
        Index("ix_outbox_session_order", "session_uuid", "channel", "state", "scheduled_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=40, unique=True)
    session_uuid: str = Field(max_length=36)
    event: str = Field(max_length=32)
    channel: str = Field(max_length=8)  # "webhook" or "email"
    state: str = Field(max_length=12)  # PENDING, DELIVERED, FAILED, DROPPED
    created_at: int = _ts()
    scheduled_at: int = _ts()  # when the event happens (ending soon: ahead of its time)
    due_at: int = _ts()  # the next attempt
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1024)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: int | None = Field(default=None, sa_type=BigInteger)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)
    # the event (``notifications.events.Event``): what the payload and the e-mail say
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
