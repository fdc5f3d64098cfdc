"""The session's typed record: what was granted, on which pools and when, kept as data (never
read back from the rendered document), and the migration that gives existing rows theirs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text
from sqlmodel import select

from broker_core.db import migrate
from broker_core.db.tables import Booking, ExecutionSession, UsageRecord
from broker_core.kinds.builtin import (
    DockerContainer,
    SimpleComputeResource,
    SimpleStorageResource,
    SimpleVolumeMount,
)
from broker_core.kinds.registry import load_registry
from broker_core.sessions.execution import execution_of
from broker_core.sessions.record import SessionRecord
from broker_core.sessions.usage import record_usage
from tests.conftest import ACCEPT, COMPUTE, request_doc

STORAGE = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/storage/simple-storage-resource.yaml"


def _row(broker, uuid: str) -> ExecutionSession:
    with broker.db.read() as session:
        return session.get(ExecutionSession, uuid)


def test_an_offer_records_what_it_grants_per_pool_and_per_class(client, broker):
    doc = request_doc(cores=(2, 4), memory=(3, 3))
    doc["storage"] = [{"kind": STORAGE, "meta": {"name": "scratch"}, "size": {"min": 5, "max": 5}}]
    offer = client.post("/requests", json=doc).json()["offers"][0]
    row = _row(broker, offer["meta"]["uuid"])
    record = SessionRecord.of(row.record)
    granted = offer["compute"]["cores"]["max"]
    assert record.granted == {"cores": granted, "memory": 3, "storage": 5}
    assert record.pools == ["main"] and offer["site"]["pools"] == ["sim/main"]
    assert {(g.pool, g.resource_class, g.amount) for g in record.allocations} == {
        ("main", "cores", granted),
        ("main", "memory", 3),
        ("main", "storage", 5),
    }
    assert not record.probe and record.entered == {}


def test_the_platform_is_given_what_the_record_granted_not_what_the_document_says(
    client, broker, tmp_path
):
    offer = client.post("/requests", json=request_doc(cores=(2, 2))).json()["offers"][0]
    row = _row(broker, offer["meta"]["uuid"])
    row.document = {**row.document, "compute": {**row.document["compute"], "cores": {"max": 99}}}
    row.document["site"] = {"pools": ["sim/elsewhere"]}
    execution = execution_of(row, broker.registry, tmp_path)
    assert execution.granted["cores"] == 2 and execution.pools == ["main"]


def test_usage_is_charged_from_the_recorded_instant(client, broker):
    """The charge starts when the record says the session became available; the rendered
    ``schedule.actual`` text is not read back."""
    offer = client.post("/requests", json=request_doc()).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    now = int(time.time())
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        booking = session.exec(select(Booking).where(Booking.session_uuid == uuid)).one()
        booking.state = "ACTIVE"
        session.add(booking)
        row.document = {**row.document, "schedule": {"actual": {"available": "not an instant"}}}
        assert record_usage(session, row, now - 60, now) > 0
    with broker.db.read() as session:
        records = list(session.exec(select(UsageRecord).where(UsageRecord.session_uuid == uuid)))
    assert {(r.start_at, r.end_at) for r in records} == {(now - 60, now)}


# --- the migration -----------------------------------------------------------------------------


def _sql(c, statement: str, **values: object) -> None:
    c.execute(text(statement), values)


def _downgrade(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = migrate.alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


OLD_ACCEPTED = {
    "site": {"name": "s", "platform": "sim", "pools": ["sim/main"]},
    "compute": {
        "kind": COMPUTE,
        "meta": {"uuid": "c"},
        "cores": {"min": 2, "max": 2},
        "memory": {"min": 1, "max": 4},
    },
    "storage": [
        {"kind": STORAGE, "meta": {"uuid": "s1"}, "size": {"min": 3, "max": 3}},
        {"kind": STORAGE, "meta": {"uuid": "s2"}},
    ],
    "schedule": {
        "actual": {"waiting": "2026-12-01T11:00:00Z", "available": "2026-12-01T12:00:00Z"}
    },
}
OLD_PROBE = {
    "probe": True,
    "lifecycle": {"claim": [[1, "cores", 2], [1, "memory", 4]]},
    "site": {"name": "s", "platform": "sim", "pools": ["sim/main"]},
    "compute": {"kind": COMPUTE, "cores": {"min": 2, "max": 2}, "memory": {"min": 4, "max": 4}},
}


def test_the_migration_gives_existing_sessions_their_record(database_url, tmp_path: Path):
    """Rows stored before the record get theirs from their document, as the node read it, and
    from their booking's allocations; the downgrade puts a probe's claim back."""
    migrate.upgrade(database_url, "0005")
    engine = create_engine(database_url)
    try:
        with engine.begin() as c:
            _sql(
                c,
                "INSERT INTO resource_pool (id, name, platform, generation, longest_booking, "
                "enabled, updated_at) VALUES (1, 'sim/main', 'sim', 7, 3600, true, 0)",
            )
            _sql(
                c,
                "INSERT INTO offer_set (uuid, result, created_at, expires_at, document) "
                "VALUES ('os', 'YES', 0, 10, '{}')",
            )
            for uuid, document, phase in (
                ("accepted", OLD_ACCEPTED, "ACCEPTED"),
                ("probe", OLD_PROBE, "OFFERED"),
                ("failed", {"meta": {}, "schedule": {}}, "FAILED"),
            ):
                _sql(
                    c,
                    "INSERT INTO execution_session (uuid, offerset_uuid, phase, platform, "
                    "created_at, modified_at, expires_at, prepare_at, start_at, end_at, "
                    "generation, document) VALUES (:uuid, 'os', :phase, 'sim', 0, 0, 10, 100, "
                    "100, 3700, 1, :doc)",
                    uuid=uuid,
                    phase=phase,
                    doc=json.dumps(document),
                )
            _sql(
                c,
                "INSERT INTO booking (id, session_uuid, offerset_uuid, state, start_at, "
                "end_at, created_at, modified_at) VALUES (1, 'accepted', 'os', 'CONFIRMED', "
                "100, 3700, 0, 0)",
            )
            _sql(
                c,
                "INSERT INTO allocation (id, booking_id, pool_id, resource_class, amount, "
                "generation) VALUES (1, 1, 1, 'cores', 2, 7)",
            )
        migrate.upgrade(database_url)
        with engine.connect() as c:
            stored = dict(c.execute(text("SELECT uuid, record FROM execution_session")).all())
        records = {
            uuid: SessionRecord.of(json.loads(r) if isinstance(r, str) else r)
            for uuid, r in stored.items()
        }
        accepted = records["accepted"]
        assert accepted.granted == {"cores": 2, "memory": 4, "storage": 3}
        assert accepted.pools == ["main"] and not accepted.probe
        assert [(g.pool_id, g.pool, g.resource_class, g.amount) for g in accepted.allocations] == [
            (1, "main", "cores", 2)
        ]
        assert accepted.entered == {"waiting": 1796122800, "available": 1796126400}
        assert accepted.available_since == 1796126400
        probe = records["probe"]
        assert probe.probe
        assert [(g.pool_id, g.resource_class, g.amount) for g in probe.allocations] == [
            (1, "cores", 2),
            (1, "memory", 4),
        ]
        assert records["failed"].granted == {"cores": 0, "memory": 0, "storage": 0}
        # the session the platform is given reads as it read from the document before
        row = ExecutionSession(
            uuid="accepted",
            offerset_uuid="os",
            phase="ACCEPTED",
            platform="sim",
            created_at=0,
            modified_at=0,
            expires_at=10,
            prepare_at=100,
            start_at=100,
            end_at=3700,
            document=OLD_ACCEPTED,
            record=accepted.stored(),
        )
        execution = execution_of(row, load_registry(), tmp_path)
        assert execution.granted == {"cores": 2, "memory": 4, "storage": 3}
        assert execution.pools == ["main"]

        _downgrade(database_url, "0005")
        with engine.connect() as c:
            document = c.execute(
                text("SELECT document FROM execution_session WHERE uuid = 'probe'")
            ).scalar_one()
        document = json.loads(document) if isinstance(document, str) else document
        assert document["lifecycle"]["claim"] == [[1, "cores", 2], [1, "memory", 4]]
    finally:
        engine.dispose()


def test_platforms_are_given_the_kinds_models(client, broker, tmp_path):
    """A platform reads the session's components as typed models, not documents reached into
    with ``.get("image") or {}``."""
    doc = request_doc(cores=(2, 2))
    doc["storage"] = [{"kind": STORAGE, "meta": {"name": "scratch"}, "size": {"min": 1, "max": 1}}]
    doc["compute"]["volumes"] = [{"path": "/scratch", "resource": "scratch", "mode": "READWRITE"}]
    offer = client.post("/requests", json=doc).json()["offers"][0]
    execution = execution_of(_row(broker, offer["meta"]["uuid"]), broker.registry, tmp_path)
    assert isinstance(execution.executable, DockerContainer)
    assert execution.executable.image is not None
    assert execution.executable.image.locations == ["localhost/busybox:latest"]
    assert isinstance(execution.compute, SimpleComputeResource)
    assert execution.compute.cores is not None and execution.compute.cores.max == 2
    (volume,) = execution.volumes
    assert isinstance(volume, SimpleVolumeMount) and volume.mode == "READWRITE"
    (storage,) = execution.storage
    assert isinstance(storage, SimpleStorageResource) and storage.meta is not None
    assert execution.mount_source("scratch") == execution.storage_path(storage)


def test_the_platforms_reach_into_no_documents():
    platforms = Path(__file__).resolve().parent.parent / "platforms"
    # the contract's own helpers validate documents into models (``Network.model_validate``)
    modules = sorted(m for m in platforms.rglob("*.py") if m.name != "contract.py")
    assert len(modules) >= 5
    for module in modules:
        text = module.read_text()
        for reach in ("executable.get(", "image.get(", "compute.get(", "volume.get("):
            assert reach not in text, f"{module.relative_to(platforms)}: {reach}"
