"""One booking across several sites, all or nothing, end to end: real node processes, a real
aggregator process, and faults (a node killed between hold and confirm, the aggregator killed
mid-accept and restarted, a part lost to a race on its node). After each, the independent
checker (tests/combined_checker.py) reads every node's booking table and the aggregator's own:
no site holds a confirmed part of a combined booking that failed, and nothing is overbooked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import yaml
from aiohttp import ClientSession, web

from tests.combined_checker import combined_problems
from tests.conftest import ACCEPT, offered_start, request_doc
from tests.nodes import Node, free_port, start_node

pytestmark = pytest.mark.slow  # real processes

NOTEBOOK = ("https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/"
            "jupyter-notebook.yaml")  # fmt: skip
CANCEL = {**ACCEPT, "value": "CANCELLED"}
BOOKED_PHASES = ("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING")
REJECT = {**ACCEPT, "value": "REJECTED"}


def node_config(
    tmp: Path, name: str, cores: int, database: str | None = None,
    server: dict[str, Any] | None = None, auth: dict[str, Any] | None = None, **offers: Any,
) -> Path:  # fmt: skip
    config = {
        **({"auth": auth} if auth else {}),
        "site": {"name": name},
        "database": {"url": database or f"sqlite:///{tmp / f'{name}.db'}"},
        "server": server or {},
        "offers": {"max_offers": 2, **offers},
        "lifecycle": {"workdir": str(tmp / f"{name}-sessions"), "poll_interval": "PT1S"},
        "platforms": [{"name": "sim", "type": "simulated",
                       "options": {"base_preparation": "PT0S", "image_pull": "PT0S"},
                       "pools": [{"name": "main", "inventories": {
                           "cores": {"total": cores}, "memory": {"total": 256}}}]}],
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def aggregator_config(tmp: Path, upstreams: list[dict[str, Any]]) -> Path:
    config = {
        "site": {"name": "federation"},
        "server": {"validate_responses": True},
        "database": {"url": f"sqlite:///{tmp / 'aggregator.db'}"},
        "fanout": {"deadline": "PT6S", "max_offers": 4},
        "upstreams": upstreams,
    }
    path = tmp / "aggregator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def combined(*parts: dict[str, Any], within: str | None = None, **schedule: Any) -> dict:
    doc: dict[str, Any] = {"parts": list(parts), "schedule": {"requested": {"duration": "PT1H",
                                                                         **schedule}}}  # fmt: skip
    if within is not None:
        doc["together"] = {"within": within}
    return doc


def part(name: str, site: str | None, cores: int = 1, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "request": {**request_doc((cores, cores)), **request}}
    if site is not None:
        entry["site"] = site
    return entry


def notebook(name: str, site: str) -> dict[str, Any]:
    doc = request_doc()
    doc["executable"] = {"kind": NOTEBOOK, "location": "https://example.org/analysis.ipynb"}
    return {"name": name, "site": site, "request": doc}


def databases(tmp: Path, nodes: list[str] | dict[str, str]) -> dict[str, str]:
    """The database URL of each node (on SQLite in ``tmp`` unless given)."""
    if isinstance(nodes, dict):
        return nodes
    return {n: f"sqlite:///{tmp / f'{n}.db'}" for n in nodes}


def check(tmp: Path, nodes: list[str] | dict[str, str], wait: float = 10.0) -> None:
    """The independent checker, until it passes (a cancelled session's booking is freed by its
    node's lifecycle engine soon after) or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    urls = databases(tmp, nodes)
    while True:
        engines = {n: sqlalchemy.create_engine(url) for n, url in urls.items()}
        agg = sqlalchemy.create_engine(f"sqlite:///{tmp / 'aggregator.db'}")
        try:
            with agg.connect() as a:
                conns = {n: e.connect() for n, e in engines.items()}
                try:
                    problems = combined_problems(a, conns)
                finally:
                    for c in conns.values():
                        c.close()
        finally:
            for e in [*engines.values(), agg]:
                e.dispose()
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not problems, problems


def db(tmp: Path, node: str) -> str:
    return f"sqlite:///{tmp / f'{node}.db'}"


def rows(url: str, sql: str, **params: Any) -> list[tuple]:
    e = sqlalchemy.create_engine(url)
    try:
        with e.connect() as c:
            return [tuple(r) for r in c.execute(sqlalchemy.text(sql), params)]
    finally:
        e.dispose()


def booking_of(url: str, session: str) -> tuple[str, str | None]:
    (found,) = rows(url, "SELECT s.phase, b.state FROM execution_session s LEFT JOIN booking b "
                    "ON b.session_uuid = s.uuid WHERE s.uuid = :u", u=session)  # fmt: skip
    return found


def released(url: str, session: str) -> None:
    """Wait for a cancelled part's booking to be freed: by the cancel itself, or, when its
    node's lifecycle engine had already made the work (PREPARING: the booking ACTIVE), by that
    engine once it has removed the work."""
    until(lambda: booking_of(url, session) == RELEASED, timeout=20,
          what=f"session {session} cancelled and its booking released")  # fmt: skip


def combined_state(tmp: Path, uuid: str) -> str:
    found = rows(f"sqlite:///{tmp / 'aggregator.db'}",
                 "SELECT state FROM agg_combined WHERE uuid = :u", u=uuid)  # fmt: skip
    return found[0][0]


def until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what or condition}")


class HoldingProxy:
    """A small HTTP proxy in front of one node (its ``public_url``, so its offers point here)
    that, when ``armed``, holds the next accept until ``release`` is set: the aggregator is then
    provably waiting on that part. What the node answered the held accepts is ``answered``."""

    def __init__(self, target: str | None = None) -> None:
        self.port = free_port()
        self.target = target
        self.armed = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.answered: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.loop.run_forever()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        held = self.armed and request.method == "POST" and b"ACCEPTED" in body
        if held:
            self.armed = False  # the next accept only: others pass
            self.arrived.set()
            await self.loop.run_in_executor(None, self.release.wait)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "accept", "authorization")}  # fmt: skip
        async with ClientSession() as client, client.request(
            request.method, f"{self.target}{request.path_qs}", data=body, headers=headers,
            allow_redirects=False,
        ) as answer:  # fmt: skip
            raw = await answer.read()
            if held:
                self.answered.append(answer.status)
            out = {k: v for k, v in answer.headers.items()
                   if k.lower() in ("content-type", "location", "retry-after")}  # fmt: skip
            return web.Response(status=answer.status, body=raw, headers=out)

    def __enter__(self) -> HoldingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Sites a (64 cores) and b (8 cores) and an aggregator over both."""
    tmp = tmp_path_factory.mktemp("combined")
    nodes: dict[str, Node] = {}
    try:
        nodes["a"] = start_node(node_config(tmp, "a", 64), tmp, "a")
        nodes["b"] = start_node(node_config(tmp, "b", 8), tmp, "b")
        config = aggregator_config(tmp, [{"name": n, "url": nodes[n].url} for n in ("a", "b")])
        nodes["agg"] = start_node(config, tmp, "aggregator", command="aggregator")
        yield {"tmp": tmp, "nodes": nodes, "agg": nodes["agg"].url}
    finally:
        for node in nodes.values():
            node.stop()


def post(url: str, doc: dict[str, Any], **params: Any) -> httpx.Response:
    return httpx.post(url, json=doc, params=params, timeout=30)


# --- the API ----------------------------------------------------------------------------------


def test_a_node_refuses_a_combined_request_naming_aggregators(federation):
    doc = combined(part("x", None), part("y", None))
    for path in ("/requests", "/direct"):
        r = post(federation["nodes"]["a"].url + path, doc)
        assert r.status_code == 400, r.text
        (error,) = r.json()["errors"]
        assert error["pointer"] == "/parts" and "aggregator" in error["detail"]


def test_bad_combined_requests_are_refused_naming_the_field(federation):
    agg = federation["agg"]
    cases = [
        (combined(part("x", "a"), part("y", "nowhere")), "/parts/1/site"),
        (combined(part("x", "a"), part("x", "b")), "/parts/1/name"),
        (combined(part("x", "a"), part("y", "b"), within="P2D"), "/together/within"),
        (combined(part("x", "a"), part("y", "b"), within="soon"), "/together/within"),
        (combined(part("x", "a")), "/parts"),  # one part is no combined booking
        (combined(*(part(f"p{i}", "a") for i in range(5))), "/parts"),
        ({"parts": [{"name": "x", "request": {"compute": {}}}, part("y", "b")]},
         "/parts/0/request"),
    ]  # fmt: skip
    for doc, pointer in cases:
        r = post(f"{agg}/requests", doc)
        assert r.status_code == 400, (pointer, r.text)
        assert any(e["pointer"].startswith(pointer) for e in r.json()["errors"]), (pointer, r.text)
    r = post(f"{agg}/requests", combined(part("x", "a"), part("y", "b")), probe="true")
    assert r.status_code == 400 and "probe" in r.text
    r = post(f"{agg}/direct", combined(part("x", "a"), part("y", "b")))
    assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == "/parts"


def test_combined_offers_list_their_parts_and_release_what_they_do_not_use(federation):
    tmp, agg = federation["tmp"], federation["agg"]
    r = post(f"{agg}/requests", combined(part("cores", "a", cores=64), notebook("nb", "b")))
    assert r.status_code == 200, r.text
    offers = r.json()
    assert offers["result"] == "YES", offers["meta"]["messages"]
    parts_seen = set()
    for offer in offers["offers"]:
        assert offer["phase"] == "OFFERED"
        names = [(p["name"], p["upstream"]) for p in offer["parts"]]
        assert names == [("cores", "a"), ("nb", "b")]
        starts = {offered_start(p) for p in offer["parts"]}
        assert len(starts) == 1, starts  # the same start: together.within is PT0S by default
        assert offer["expires"] == min(p["expires"] for p in offer["parts"])
        assert offer["meta"]["url"].startswith(agg)
        parts_seen |= {p["uuid"] for p in offer["parts"]}
    again = httpx.get(offers["meta"]["url"], timeout=10).json()
    assert [o["meta"]["uuid"] for o in again["offers"]] == [
        o["meta"]["uuid"] for o in offers["offers"]
    ]
    # every part offer no combined offer uses is rejected on its node
    for node in ("a", "b"):
        until(lambda n=node: all(
            uuid in parts_seen for (uuid,) in rows(f"sqlite:///{tmp / f'{n}.db'}",
                                                   "SELECT session_uuid FROM booking WHERE "
                                                   "state = 'HELD'")
        ), what=f"unused part offers rejected on {node}")  # fmt: skip
    for offer in offers["offers"]:
        assert post(offer["meta"]["url"], REJECT).json()["phase"] == "REJECTED"
    check(tmp, ["a", "b"])


def test_accepting_books_every_part_and_rejects_its_siblings_then_cancel_cancels_all(federation):
    tmp, agg = federation["tmp"], federation["agg"]
    doc = combined(part("x", "a", cores=4), part("y", "b", cores=2))
    offers = post(f"{agg}/requests", doc).json()
    assert offers["result"] == "YES" and len(offers["offers"]) >= 2, offers
    first, *siblings = offers["offers"]
    r = post(first["meta"]["url"], ACCEPT)
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["phase"] in BOOKED_PHASES, accepted
    assert [p["state"] for p in accepted["parts"]] == ["CONFIRMED", "CONFIRMED"]
    for p in accepted["parts"]:
        assert booking_of(db(tmp, p["upstream"]), p["uuid"])[1] in ("CONFIRMED", "ACTIVE")
    for sibling in siblings:
        assert httpx.get(sibling["meta"]["url"], timeout=10).json()["phase"] == "REJECTED"
        assert post(sibling["meta"]["url"], ACCEPT).status_code == 409
    assert post(first["meta"]["url"], ACCEPT).status_code == 200  # repeating it is harmless
    check(tmp, ["a", "b"])
    r = post(first["meta"]["url"], CANCEL)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED", r.text
    for p in accepted["parts"]:
        until(lambda p=p: booking_of(db(tmp, p["upstream"]), p["uuid"]) == RELEASED,
              what=f"part {p['name']} cancelled")  # fmt: skip
    assert combined_state(tmp, first["meta"]["uuid"]) == "CANCELLED"
    check(tmp, ["a", "b"])


def test_the_same_job_at_two_sites_for_a_comparison_run(federation):
    tmp, agg = federation["tmp"], federation["agg"]
    job = request_doc((2, 2))
    doc = combined({"name": "at-a", "site": "a", "request": job},
                   {"name": "at-b", "site": "b", "request": job}, within="PT1H")  # fmt: skip
    offers = post(f"{agg}/requests", doc).json()
    assert offers["result"] == "YES", offers["meta"]["messages"]
    offer = offers["offers"][0]
    assert {p["upstream"] for p in offer["parts"]} == {"a", "b"}
    accepted = post(offer["meta"]["url"], ACCEPT).json()
    assert [p["state"] for p in accepted["parts"]] == ["CONFIRMED", "CONFIRMED"]
    check(tmp, ["a", "b"])
    assert post(offer["meta"]["url"], CANCEL).json()["phase"] == "CANCELLED"
    check(tmp, ["a", "b"])


def test_no_combined_slot_is_a_no_naming_the_part_and_holds_nothing(federation):
    tmp, agg = federation["tmp"], federation["agg"]
    r = post(f"{agg}/requests", combined(part("x", "a", cores=2), part("big", "b", cores=16)))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["result"] == "NO" and not answer["offers"]
    said = " ".join(m["message"] for m in answer["meta"]["messages"])
    assert "part big" in said, said
    until(lambda: not rows(db(tmp, "a"), "SELECT id FROM booking WHERE state = 'HELD'"),
          what="part x's offers rejected on a")  # fmt: skip
    check(tmp, ["a", "b"])


# --- faults -----------------------------------------------------------------------------------

RELEASED = ("CANCELLED", "RELEASED")


def start_aggregator(tmp: Path, upstreams: list[dict[str, Any]], port: int | None = None) -> Node:
    return start_node(aggregator_config(tmp, upstreams), tmp, "aggregator", command="aggregator",
                      port=port)  # fmt: skip


def accept_in_background(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Accept in a thread (the aggregator may die under it); ``answer`` once it answered."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = httpx.post(url, json=ACCEPT, headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


def test_a_node_killed_between_hold_and_confirm_releases_the_other_parts(tmp_path):
    tmp, port_b = tmp_path, free_port()
    started: list[Node] = []
    try:
        a = start_node(node_config(tmp, "a", 8), tmp, "a")
        b = start_node(node_config(tmp, "b", 8), tmp, "b", port=port_b)
        started += [a, b]
        agg = start_aggregator(tmp, [{"name": "a", "url": a.url},
                                     {"name": "b", "url": b.url, "timeout": "PT2S"}])  # fmt: skip
        started.append(agg)
        offers = post(f"{agg.url}/requests", combined(part("x", "a", 2), part("y", "b", 2))).json()
        offer = offers["offers"][0]
        x, y = offer["parts"]
        b.kill()  # between hold (the offers) and confirm (the accept)
        r = post(offer["meta"]["url"], ACCEPT)
        assert r.status_code == 409, r.text
        problem = r.json()
        assert "part y at upstream b" in problem["detail"], problem
        assert problem["session"]["phase"] == "FAILED"
        released(db(tmp, "a"), x["uuid"])  # part x was accepted, then undone
        assert booking_of(db(tmp, "b"), y["uuid"]) == ("OFFERED", "HELD")  # never confirmed
        assert combined_state(tmp, offer["meta"]["uuid"]) == "ABORTING"  # b's part is left
        check(tmp, ["a", "b"])
        # b comes back: the aggregator's recovery (with back-off) releases its part there
        started.append(start_node(node_config(tmp, "b", 8), tmp, "b-again", port=port_b))
        until(lambda: combined_state(tmp, offer["meta"]["uuid"]) == "ABORTED", timeout=60,
              what="the part on b released once b is back")  # fmt: skip
        assert booking_of(db(tmp, "b"), y["uuid"]) == RELEASED
        assert httpx.get(offer["meta"]["url"], timeout=10).json()["phase"] == "FAILED"
        check(tmp, ["a", "b"])
    finally:
        for node in started:
            node.stop()


def undone_after_restart(
    tmp: Path, proxy: HoldingProxy, uuid: str, x: dict[str, Any], y: dict[str, Any]
) -> None:
    """The restarted aggregator undid the booking: part x (accepted on a) and part y (whose
    accept the proxy held) are released, and the held accept reaches b too late (409)."""
    until(lambda: combined_state(tmp, uuid) == "ABORTED", what="undone")
    proxy.release.set()
    until(lambda: proxy.answered, what="the held accept answered")
    assert proxy.answered == [409]  # too late: part y was cancelled
    released(db(tmp, "a"), x["uuid"])
    released(db(tmp, "b"), y["uuid"])


@pytest.mark.parametrize("late_accept", ["after-recovery", "before-restart"])
def test_the_aggregator_killed_mid_accept_is_finished_or_undone_on_restart(tmp_path, late_accept):
    """The aggregator is killed while provably waiting on part y (its accept held by a proxy in
    front of node b). Restarted, it reads CONFIRMING from its store: part y was not accepted, so
    every part is undone; the held accept then reaches b too late (409). Or the held accept
    reached b before the restart: every part was accepted, so the booking is finished."""
    tmp = tmp_path
    started: list[Node] = []
    with HoldingProxy() as proxy:
        try:
            a = start_node(node_config(tmp, "a", 8), tmp, "a")
            started.append(a)
            b = start_node(node_config(tmp, "b", 8, server={"public_url": proxy.url}), tmp, "b")
            started.append(b)
            proxy.target = b.url
            upstreams = [{"name": "a", "url": a.url},
                         {"name": "b", "url": proxy.url, "timeout": "PT60S"}]  # fmt: skip
            agg = start_aggregator(tmp, upstreams)
            started.append(agg)
            offers = post(f"{agg.url}/requests", combined(part("x", "a", 2), part("y", "b", 2)))
            offer = offers.json()["offers"][0]
            uuid, (x, y) = offer["meta"]["uuid"], offer["parts"]
            assert y["url"].startswith(proxy.url)
            proxy.armed = True
            accepting = accept_in_background(offer["meta"]["url"])
            assert proxy.arrived.wait(20), "the accept of part y never reached b"
            until(lambda: booking_of(db(tmp, "a"), x["uuid"])[1] in ("CONFIRMED", "ACTIVE"),
                  what="part x accepted on a")  # fmt: skip
            assert combined_state(tmp, uuid) == "CONFIRMING"  # the intent, in its own store
            agg.kill()
            accepting["thread"].join(10)
            assert "error" in accepting, accepting  # the client got no answer
            if late_accept == "before-restart":
                proxy.release.set()
                until(lambda: proxy.answered, what="the held accept answered")
                assert proxy.answered == [200]
            started.append(start_aggregator(tmp, upstreams, port=int(agg.url.rsplit(":", 1)[1])))
            if late_accept == "before-restart":
                until(lambda: combined_state(tmp, uuid) == "CONFIRMED", what="finished")
                session = httpx.get(offer["meta"]["url"], timeout=10).json()
                assert session["phase"] in BOOKED_PHASES, session
                assert booking_of(db(tmp, "b"), y["uuid"])[1] in ("CONFIRMED", "ACTIVE")
            else:
                undone_after_restart(tmp, proxy, uuid, x, y)
                session = httpx.get(offer["meta"]["url"], timeout=10).json()
                assert session["phase"] == "FAILED"
                said = " ".join(m["message"] for m in session["meta"]["messages"])
                assert "stopped while booking" in said, said
            check(tmp, ["a", "b"])
        finally:
            proxy.release.set()
            for node in started:
                node.stop()


@pytest.mark.parametrize("own_token", ["service", "none"])
def test_per_user_nodes_behind_a_forwarding_aggregator_are_undone_after_its_restart(
    tmp_path, issuer, own_token
):
    """Nodes keep each session for its user (OIDC, no anonymous callers) and the aggregator
    passes the user's token on; it never stores it. Killed mid-accept and restarted, it acts
    with its own token, which the nodes trust as a service (``auth.service_groups``: read and
    release, nothing else): every part is undone. Without a token of its own it cannot, and
    says so (its log, the booking's messages) instead of taking the nodes' 404s for done."""
    tmp = tmp_path
    auth = {**issuer.auth_config(), "service_groups": ["test:services"]}
    alice = {"Authorization": f"Bearer {issuer.token(sub='alice', expires_in=3600)}"}
    service = issuer.token(sub="federation", groups=("services",), expires_in=3600)
    started: list[Node] = []
    with HoldingProxy() as proxy:
        try:
            a = start_node(node_config(tmp, "a", 8, auth=auth), tmp, "a")
            started.append(a)
            b = start_node(node_config(tmp, "b", 8, server={"public_url": proxy.url}, auth=auth),
                           tmp, "b")  # fmt: skip
            started.append(b)
            proxy.target = b.url
            own = {"service_token": service} if own_token == "service" else {}
            upstreams = [{"name": "a", "url": a.url, "forward_token": True, **own},
                         {"name": "b", "url": proxy.url, "timeout": "PT60S",
                          "forward_token": True, **own}]  # fmt: skip
            agg = start_aggregator(tmp, upstreams)
            started.append(agg)
            r = httpx.post(f"{agg.url}/requests", json=combined(part("x", "a", 2),
                           part("y", "b", 2)), headers=alice, timeout=30)  # fmt: skip
            offer = r.json()["offers"][0]
            uuid, (x, y) = offer["meta"]["uuid"], offer["parts"]
            # the parts are alice's: her nodes show them to nobody else
            assert httpx.get(x["url"], timeout=10).status_code == 401
            eve = {"Authorization": f"Bearer {issuer.token(sub='eve', expires_in=3600)}"}
            assert httpx.get(x["url"], headers=eve, timeout=10).status_code == 404
            proxy.armed = True
            accepting = accept_in_background(offer["meta"]["url"], alice)
            assert proxy.arrived.wait(20), "the accept of part y never reached b"
            until(lambda: booking_of(db(tmp, "a"), x["uuid"])[1] in ("CONFIRMED", "ACTIVE"),
                  what="part x accepted on a")  # fmt: skip
            assert combined_state(tmp, uuid) == "CONFIRMING"
            agg.kill()
            accepting["thread"].join(10)
            started.append(start_aggregator(tmp, upstreams, port=int(agg.url.rsplit(":", 1)[1])))
            if own_token == "service":
                undone_after_restart(tmp, proxy, uuid, x, y)
                check(tmp, ["a", "b"])
                return
            said = ""

            def refused() -> bool:
                nonlocal said
                (found,) = rows(
                    f"sqlite:///{tmp / 'aggregator.db'}",
                    "SELECT messages FROM agg_combined WHERE uuid = :u",
                    u=uuid,
                )
                said = str(found[0])  # fmt: skip
                return "cannot release every part" in said

            until(refused, what="the booking's messages saying it cannot release its parts")
            assert "auth.service_groups" in said, said
            assert "cannot be released" in started[-1].output()  # its log, as an error
            assert combined_state(tmp, uuid) == "ABORTING"  # kept, and retried: not "done"
            assert booking_of(db(tmp, "a"), x["uuid"])[1] in ("CONFIRMED", "ACTIVE")
            session = httpx.get(offer["meta"]["url"], headers=alice, timeout=10).json()
            assert "cannot release every part" in str(session["meta"]["messages"])
        finally:
            proxy.release.set()
            for node in started:
                node.stop()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_part_lost_to_a_race_on_its_node_releases_the_others(tmp_path, database, request):
    """Part y's accept is held (a proxy in front of node b) until its hold there lapsed and
    another client booked b's whole capacity: b refuses it (409), so part x is undone."""
    tmp = tmp_path
    b_db = request.getfixturevalue("pg_url") if database == "postgresql" else db(tmp, "b")
    started: list[Node] = []
    with HoldingProxy() as proxy:
        try:
            a = start_node(node_config(tmp, "a", 8), tmp, "a")
            started.append(a)
            b = start_node(node_config(tmp, "b", 4, database=b_db, hold="PT4S",
                                       server={"public_url": proxy.url}), tmp, "b")  # fmt: skip
            started.append(b)
            proxy.target = b.url
            agg = start_aggregator(
                tmp,
                [{"name": "a", "url": a.url}, {"name": "b", "url": proxy.url, "timeout": "PT60S"}],
            )
            started.append(agg)
            offers = post(f"{agg.url}/requests", combined(part("x", "a", 2), part("y", "b", 4)))
            offer = offers.json()["offers"][0]
            x, y = offer["parts"]
            proxy.armed = True
            accepting = accept_in_background(offer["meta"]["url"])
            assert proxy.arrived.wait(20)
            # meanwhile on b: part y's hold lapses, and another client takes the capacity
            until(lambda: booking_of(b_db, y["uuid"])[1] != "HELD", timeout=30,
                  what="part y's hold lapsed")  # fmt: skip
            other = post(f"{b.url}/requests", request_doc((4, 4), duration="PT1H")).json()
            assert other["result"] == "YES", other
            taken = post(other["offers"][0]["meta"]["url"], ACCEPT)
            assert taken.status_code == 200, taken.text
            proxy.release.set()
            accepting["thread"].join(30)
            answer = accepting["answer"]
            assert answer.status_code == 409, answer.text
            assert "part y at upstream b" in answer.json()["detail"]
            assert proxy.answered == [409]
            assert combined_state(tmp, offer["meta"]["uuid"]) == "ABORTED"
            released(db(tmp, "a"), x["uuid"])
            assert booking_of(b_db, y["uuid"])[1] == "RELEASED"
            assert booking_of(b_db, other["offers"][0]["meta"]["uuid"])[1] in (
                "CONFIRMED",
                "ACTIVE",
            )
            check(tmp, {"a": db(tmp, "a"), "b": b_db})
        finally:
            proxy.release.set()
            for node in started:
                node.stop()
