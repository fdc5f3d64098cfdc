"""The session's typed record: what was granted, on which pools and when, kept as data (never
read back from the rendered document), and the migration that gives existing rows theirs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text
from sqlmodel import Session as SqlSession
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
from broker_core.sessions.views import render_session
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


def test_a_session_is_its_row_and_its_record(client, broker, tmp_path):
    """No rendered document is stored: the answer is rendered from the record on every read,
    and what the platform is given comes from the same record."""
    assert "document" not in ExecutionSession.model_fields
    assert "platform_state" not in ExecutionSession.model_fields
    offer = client.post("/requests", json=request_doc(cores=(2, 2))).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        record = SessionRecord.of(row.record)
        assert record.components.compute is not None
        assert record.components.compute["cores"] == {"min": 2, "max": 2}
        record.granted["cores"] = 3
        record.components.compute["cores"] = {"min": 3, "max": 3}
        record.pools = ["elsewhere"]
        record.note("a note of the test's")
        row.record = record.stored()
        session.add(row)
    shown = client.get(f"/sessions/{uuid}").json()
    assert shown["compute"]["cores"] == {"min": 3, "max": 3}
    assert shown["site"]["pools"] == ["sim/elsewhere"]
    assert shown["meta"]["messages"][-1]["message"] == "a note of the test's"
    execution = execution_of(_row(broker, uuid), broker.registry, tmp_path)
    assert execution.granted["cores"] == 3 and execution.pools == ["elsewhere"]


def test_usage_is_charged_from_the_recorded_instant(client, broker):
    """The charge starts when the record says the session became available."""
    offer = client.post("/requests", json=request_doc()).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    now = int(time.time())
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        booking = session.exec(select(Booking).where(Booking.session_uuid == uuid)).one()
        booking.state = "ACTIVE"
        session.add(booking)
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
        migrate.upgrade(database_url, "0006")
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
        # and at the head, the session the platform is given reads as it read from the
        # document before
        migrate.upgrade(database_url)
        with SqlSession(engine) as session:
            row = session.get(ExecutionSession, "accepted")
            assert row is not None
        execution = execution_of(row, load_registry(), tmp_path)
        assert execution.granted == {"cores": 2, "memory": 4, "storage": 3}
        assert execution.pools == ["main"]
        assert isinstance(execution.compute, SimpleComputeResource)
        assert execution.compute.cores is not None and execution.compute.cores.max == 2
        assert [s.meta.uuid for s in execution.storage if s.meta] == ["s1", "s2"]

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


OLD_RUNNING = {
    "meta": {
        "name": "notebook",
        "messages": [
            {"level": "INFO", "template": "offered {granted}", "values": {"granted": "2 cores"},
             "message": "offered 2 cores", "time": "2026-12-01T10:00:00Z"},
            {"level": "LOUD", "template": "a level the node never wrote"},
            {"no": "template"},
        ],
    },
    "site": {"name": "site-a", "platform": "sim", "pools": ["sim/main"]},
    "schedule": {"actual": {"available": "2026-12-01T12:00:00Z"}},
    "executable": {"kind": COMPUTE.replace("compute/simple-compute-resource", "executable/"
                                           "docker-container"),
                   "meta": {"uuid": "e", "name": "nb"},
                   "image": {"locations": ["localhost/busybox:latest"]}},
    "compute": {"kind": COMPUTE, "meta": {"uuid": "c"}, "cores": {"min": 2, "max": 2}},
    "storage": [],
    "data": [],
    "costs": [{"type": "urn:ebroker:cost:money:EUR", "min": 1.5, "max": 1.5}],
    "metrics": [],
    "components": [
        {"category": "executable", "uuid": "e", "kind": "k", "name": "nb", "phase": "AVAILABLE",
         "prepared": {"start": "2026-12-01T11:59:00Z", "seconds": 2.5}},
    ],
    "connectors": [{"kind": "http-connector", "url": "http://127.0.0.1:18080/", "port": 18080}],
    "lifecycle": {"outcome": "FAILED", "exit_code": 3, "release_attempts": 1},
}  # fmt: skip


def test_the_migration_moves_the_document_and_the_platform_state_into_the_record(
    database_url, tmp_path: Path
):
    """Rows of revision 0006 keep everything their answer showed: it is rendered from the
    record now, and the downgrade gives the document back."""
    migrate.upgrade(database_url, "0006")
    engine = create_engine(database_url)
    try:
        with engine.begin() as c:
            _sql(c, "INSERT INTO offer_set (uuid, result, created_at, expires_at, document) "
                    "VALUES ('os', 'YES', 0, 10, '{}')")  # fmt: skip
            _sql(
                c,
                "INSERT INTO execution_session (uuid, offerset_uuid, phase, platform, "
                "created_at, modified_at, expires_at, prepare_at, start_at, end_at, "
                "generation, document, platform_state, record) VALUES ('running', 'os', "
                "'RUNNING', 'sim', 0, 0, 10, 1796126340, 1796126400, 1796130000, 4, :doc, "
                ":state, :record)",
                doc=json.dumps(OLD_RUNNING),
                state=json.dumps({"container": "ebroker-running"}),
                record=json.dumps({"granted": {"cores": 2}, "pools": ["main"],
                                   "entered": {"available": 1796126400}}),
            )  # fmt: skip
        migrate.upgrade(database_url)
        with SqlSession(engine) as session:
            row = session.get(ExecutionSession, "running")
            assert row is not None
        record = SessionRecord.of(row.record)
        assert record.name == "notebook" and record.site == "site-a"
        assert record.platform_state == {"container": "ebroker-running"}
        assert [m.message for m in record.messages] == [
            "offered 2 cores",
            "a level the node never wrote",
        ]
        assert record.messages[1].level == "INFO"
        assert record.statuses is not None and record.statuses[0].prepared is not None
        assert record.statuses[0].prepared.start == 1796126340
        assert (record.outcome, record.exit_code, record.release_attempts) == ("FAILED", 3, 1)
        shown = render_session(row, "http://node")
        assert shown["meta"]["name"] == "notebook"
        assert shown["site"] == OLD_RUNNING["site"]
        assert shown["costs"][0]["max"] == 1.5
        assert shown["schedule"]["actual"] == {"available": "2026-12-01T12:00:00Z"}
        assert shown["executable"]["phase"] == "RUNNING"
        assert shown["executable"]["schedule"]["preparing"] == {
            "start": "2026-12-01T11:59:00Z", "duration": "PT2S"}  # fmt: skip
        assert shown["components"][0]["prepared"] == OLD_RUNNING["components"][0]["prepared"]
        assert shown["connectors"][0]["location"] == "http://127.0.0.1:18080/"
        execution = execution_of(row, load_registry(), tmp_path)
        assert execution.state == {"container": "ebroker-running"}
        assert isinstance(execution.executable, DockerContainer)

        _downgrade(database_url, "0006")
        with engine.connect() as c:
            document, state = c.execute(
                text("SELECT document, platform_state FROM execution_session")
            ).one()
        document = json.loads(document) if isinstance(document, str) else document
        state = json.loads(state) if isinstance(state, str) else state
        assert state == {"container": "ebroker-running"}
        for key in ("site", "executable", "compute", "costs", "components", "connectors",
                    "lifecycle"):  # fmt: skip
            assert document[key] == OLD_RUNNING[key], key
        assert document["meta"]["name"] == "notebook"
        assert document["schedule"]["actual"] == OLD_RUNNING["schedule"]["actual"]
    finally:
        engine.dispose()


def test_what_a_platform_says_and_keeps_when_it_extends_is_recorded(client, broker, monkeypatch):
    """An extension's platform call is a step like the others: its notes reach the session's
    messages and its state is kept."""
    from platforms.simulated import SimulatedPlatform

    def extend(self, execution, end_at):
        execution.state["extended_to"] = end_at
        execution.notes.append(f"lease moved to {end_at}")

    monkeypatch.setattr(SimulatedPlatform, "extend", extend)
    offer = client.post("/requests", json=request_doc()).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    longer = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 60}
    answer = client.post(f"/sessions/{uuid}", json=longer)
    assert answer.status_code == 200, answer.text
    end_at = _row(broker, uuid).end_at
    said = [m["message"] for m in answer.json()["meta"]["messages"]]
    assert f"lease moved to {end_at}" in said
    assert SessionRecord.of(_row(broker, uuid).record).platform_state["extended_to"] == end_at
