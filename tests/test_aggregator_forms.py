"""The aggregator reading answers of either implementation, without processes: upstream
messages and sessions of the standard's form, redirects, bare 4xx bodies, refusals, and its own
POST /direct answer in either form of the spec."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from aggregator import service as service_module
from aggregator.config import AggregatorConfig
from aggregator.merge import (
    UpstreamOffer,
    locate_offers,
    own_messages,
    rewrite_session,
    start_of,
)
from aggregator.service import Aggregator, phase_of, refused
from aggregator.upstreams import Answer, UpstreamError, Upstreams
from broker_core.errors import Conflict, DocumentInvalid, Forbidden
from broker_core.http.app import SPEC_DOCUMENT
from tests.nodes import free_port

V1 = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"


def simple_session(uuid: str = "u1") -> dict[str, Any]:
    return {
        "kind": V1 + "session/simple-execution-session.yaml",
        "meta": {
            "uuid": uuid,
            "url": f"http://caly/sessions/{uuid}",
            "created": "2026-01-01T00:00:00Z",
            "links": ["not ours"],
        },
        "phase": "WAITING",
        "executable": {
            "kind": V1 + "executable/docker-container.yaml",
            "phase": "WAITING",
            "schedule": {"available": {"start": "2026-01-02T00:00:00Z/PT5M"}},
        },
        "compute": {
            "kind": V1 + "compute/simple-compute-resource.yaml",
            "phase": "WAITING",
            "schedule": {"available": {"start": "2026-01-03T00:00:00Z/PT5M"}},
        },
    }


def test_messages_of_the_standards_form_are_served_in_ours():
    (m,) = own_messages(
        [
            {
                "kind": "urn:x",
                "level": "OTHER",
                "message": "hello",
                "values": {"n": 2},
                "time": "2026-01-01T00:00:00Z",
            }
        ]
    )
    assert m == {
        "template": "hello",
        "level": "INFO",
        "values": {"n": "2"},
        "message": "hello",
        "time": "2026-01-01T00:00:00Z",
    }
    assert own_messages([{"template": "t"}, "junk"]) == [{"template": "t"}]
    assert own_messages(None) == []


def test_offer_urls_are_made_absolute():
    doc = {"offers": [{"meta": {"uuid": "a", "url": "/sessions/a"}}, {"meta": {"uuid": "b"}}]}
    located = locate_offers(doc, "http://caly:8080/broker")
    assert [o["meta"]["url"] for o in located["offers"]] == [
        "http://caly:8080/sessions/a",
        "http://caly:8080/broker/sessions/b",
    ]


def test_a_simple_session_is_served_with_what_ours_always_have():
    doc = rewrite_session(
        simple_session(), local_uuid="L", offerset_uuid="S", upstream="caly", base_url="http://agg"
    )
    required = SPEC_DOCUMENT["components"]["schemas"]["ExecutionSession"]["required"]
    assert set(required) <= set(doc)
    assert doc["schedule"] == {} and doc["expires"] == "2026-01-01T00:00:00Z"
    assert "links" not in doc["meta"] and doc["site"] == {"upstream": "caly"}
    assert doc["kind"].endswith("simple-execution-session.yaml")  # its own kind is kept


def test_a_simple_session_starts_when_its_components_do():
    offer = UpstreamOffer.model_validate(simple_session())
    assert start_of(offer) == pytest.approx(1767398400.0)  # 2026-01-03, the later component


def test_refusals_of_updates_become_problems_of_our_own():
    with pytest.raises(Conflict) as conflict:
        refused(
            Answer(409, {"detail": "expired", "session": {"phase": "EXPIRED", "meta": {}}}), "a"
        )
    assert conflict.value.phase == "EXPIRED"
    with pytest.raises(DocumentInvalid):
        refused(Answer(400, None), "caly")  # a body that was not JSON
    with pytest.raises(Forbidden):
        refused(Answer(403, None), "caly")
    with pytest.raises(Conflict):
        refused(Answer(410, {"phase": "REJECTED", "meta": {}}), "caly")
    refused(Answer(502, None), "caly")  # not a refusal: the caller says 502
    assert phase_of({"phase": "OFFERED"}) == "OFFERED" and phase_of(None) is None


def answering(make: Any) -> Any:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return make()

    return handler


def test_upstream_calls_read_bare_4xx_bodies_and_follow_see_other():
    port = free_port()

    async def main() -> list[Any]:
        app = web.Application()
        xml = "application/xml"
        app.router.add_get("/empty", answering(lambda: web.Response(status=404)))
        app.router.add_get("/text", answering(lambda: web.Response(status=404, text="Not Found")))
        app.router.add_get("/xml", answering(lambda: web.Response(text="<x/>", content_type=xml)))
        see_other = answering(lambda: web.Response(status=303, headers={"Location": "/set"}))
        app.router.add_post("/requests", see_other)
        app.router.add_get("/set", answering(lambda: web.json_response({"result": "NO"})))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        config = AggregatorConfig.model_validate(
            {
                "breaker": {"failures": 1},
                "upstreams": [{"name": "u", "url": f"http://127.0.0.1:{port}"}],
            }
        )
        ups = Upstreams(config)
        upstream = ups.by_name["u"]
        base = upstream.config.base
        try:
            out: list[Any] = [
                await ups.call(upstream, "GET", f"{base}/empty"),
                await ups.call(upstream, "GET", f"{base}/text"),
            ]
            out.append(upstream.breaker.failures)
            out.append(
                await ups.call(upstream, "POST", f"{base}/requests", document={}, follow=True)
            )
            try:
                await ups.call(upstream, "GET", f"{base}/xml")
            except UpstreamError as exc:
                out.append(str(exc))
            upstream.breaker.success()
            out.append(await ups.kinds(upstream))
            out.append(upstream.undescribed)
        finally:
            await ups.close()
            await runner.cleanup()
        return out

    empty, text, failures, followed, xml, kinds, undescribed = asyncio.run(main())
    assert (empty.status, empty.document) == (404, None)
    assert (text.status, text.document) == (404, None)
    assert failures == 0  # a bare 404 is an answer, not a failure
    assert followed.status == 303 and followed.followed and followed.document == {"result": "NO"}
    assert followed.location == f"http://127.0.0.1:{port}/set"
    assert "not JSON" in xml and "application/xml" in xml
    assert kinds is None and undescribed  # no /node: it accepts anything


@pytest.mark.parametrize("see_other", [False, True])
def test_direct_answers_in_the_form_the_spec_declares(monkeypatch, see_other):
    monkeypatch.setattr(service_module, "DIRECT_SEE_OTHER", see_other)
    config = AggregatorConfig.model_validate({"upstreams": [{"name": "u", "url": "http://u"}]})
    service = Aggregator(config, None, None)  # type: ignore[arg-type]
    session = {
        "meta": {"uuid": "L", "url": "http://agg/sessions/L", "messages": []},
        "phase": "WAITING",
    }
    merged = {
        "meta": {
            "uuid": "S",
            "url": "http://agg/offersets/S",
            "created": "2026-01-01T00:00:00Z",
            "messages": [{"template": "note"}],
        },
        "expires": "2026-01-01T00:00:00Z",
        "offers": [session],
    }
    document, status, headers = service._direct_answer(merged)
    if see_other:
        assert status == 303 and headers == {"Location": "http://agg/sessions/L"}
        assert document["meta"]["messages"] == [{"template": "note"}]
    else:
        assert status == 201 and document is merged and headers == {}
    failed = service._failed_session({"executable": {"kind": "k"}}, merged)
    required = SPEC_DOCUMENT["components"]["schemas"]["ExecutionSession"]["required"]
    assert set(required) <= set(failed) and failed["phase"] == "FAILED"
    assert failed["offerset"]["uuid"] == "S"


def test_direct_reads_every_form_an_upstream_answers_in():
    config = AggregatorConfig.model_validate({"upstreams": [{"name": "u", "url": "http://u"}]})
    service = Aggregator(config, None, None)  # type: ignore[arg-type]
    upstream = type("U", (), {"config": config.upstreams[0], "name": "u"})()
    notes: list = []
    session = {**simple_session("r"), "meta": {"uuid": "r"}}
    (started,) = service._started(upstream, Answer(303, session, "http://u/sessions/r"), notes)
    assert started.meta.url == "http://u/sessions/r"
    assert service._started(upstream, Answer(200, simple_session()), notes)
    failed = {**simple_session(), "phase": "FAILED"}
    assert service._started(upstream, Answer(400, failed), notes) is None
    old = {"result": "YES", "offers": [simple_session()]}
    assert len(service._started(upstream, Answer(201, old), notes)) == 1
    assert service._started(upstream, Answer(200, {"result": "NO", "offers": []}), notes) is None
    assert service._started(upstream, Answer(303, {"meta": "junk"}), notes) == []
    assert notes and "is no session" in str(notes[-1].model_dump())
