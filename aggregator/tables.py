"""The aggregator's own state: which of its offers is which upstream's session. Kept apart from
the node's tables (their own metadata, migrations and version table), so a restart loses
nothing and an aggregator may share a database server with nodes."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, MetaData, String, Table

metadata = MetaData()

offer_set = Table(
    "agg_offer_set",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("result", String(8), nullable=False),
    Column("messages", JSON, nullable=False),
    # the one offer accepted through this aggregator (claimed before the upstream is asked)
    Column("accepted_uuid", String(36), nullable=True),
)


def _keys() -> list[Column]:
    """A row of one of the aggregator's offer sets, under a uuid of its own."""
    return [
        Column("uuid", String(36), primary_key=True),
        Column("offerset_uuid", String(36), ForeignKey("agg_offer_set.uuid"), nullable=False),
    ]


def _remote() -> list[Column]:
    """Where an upstream keeps a session the aggregator serves (new Column objects per table)."""
    return [
        Column("upstream", String(128), nullable=False),
        Column("remote_uuid", String(64), nullable=False),
        Column("remote_url", String(2048), nullable=False),
    ]


def _served(name: str, *extra: Column | Index) -> Table:
    """A table of upstream sessions the aggregator serves under uuids of its own, each of one
    of its offer sets: its offers (``agg_session``) and series' occurrences alike."""
    return Table(
        name,
        metadata,
        *_keys(),
        *_remote(),
        *extra,
    )


session = _served(
    "agg_session",
    Column("rank", BigInteger, nullable=False),  # its place in the merged answer
    Index("ix_agg_session_offerset", "offerset_uuid"),
    # an upstream's session as the aggregator knows it (GET /sessions shows the aggregator's)
    Index("ix_agg_session_remote", "remote_uuid", "upstream"),
)

# the aggregator's own sessions, which no upstream holds: the FAILED session of a direct
# execution no upstream could start (nor kept a FAILED session for), served as it was answered
own_session = Table(
    "agg_own_session",
    metadata,
    *_keys(),
    Column("document", JSON, nullable=False),
)

# a combined offer (one booking of parts at several sites, all or nothing: see combined/) and,
# once accepted, its two-phase booking: ``state`` is the intent written before each step, so a
# restarted aggregator knows what to finish or undo
combined = Table(
    "agg_combined",
    metadata,
    *_keys(),
    Column("rank", BigInteger, nullable=False),
    # OFFERED, CONFIRMING, CONFIRMED, ABORTING, ABORTED, CANCELLING, CANCELLED, REJECTED
    Column("state", String(16), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("modified_at", BigInteger, nullable=False),
    Column("document", JSON, nullable=False),  # the offer as it was made (parts' schedules)
    Column("messages", JSON, nullable=False),  # what its booking met (a lost part, a retry)
    Index("ix_agg_combined_offerset", "offerset_uuid"),
    Index("ix_agg_combined_state", "state"),
)

combined_part = Table(
    "agg_combined_part",
    metadata,
    Column("combined_uuid", String(36), ForeignKey("agg_combined.uuid"), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("name", String(64), nullable=False),
    *_remote(),
    # PREPARED (held), CONFIRMING, CONFIRMED, ABORTING, ABORTED
    Column("state", String(16), nullable=False),
    # its offer set on its node (None: the node named none), which GET /offersets lists
    Column("remote_offerset", String(64), nullable=True),
    Index("ix_agg_combined_part_offerset", "remote_offerset", "upstream"),
)

# the occurrences of a recurring series accepted through the aggregator: each is a session of
# its own on the series' upstream, which the aggregator serves under a uuid of its own
occurrence = _served(
    "agg_occurrence",
    Column("series_uuid", String(36), nullable=False),  # the aggregator's uuid of the series
    Index("ix_agg_occurrence_series", "series_uuid"),
)
