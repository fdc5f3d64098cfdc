"""Every answer of an aggregator validates against the IVOA ExecutionBroker schema, as a node's
do (``tests/test_conformance.py``, whose checks these are): in JSON, YAML and XML, the XML read
as a client generated from the standard reads it and compared with the JSON answer.

Two aggregators are run as real processes: ``mixed`` federates an ebroker node and two fake
nodes of the other implementation (``tests/calycopis_fake.py``: the standard's own answer forms,
one answering ``POST /requests`` with 303 See Other), so its offers, sessions and direct
executions come from both implementations; ``ebroker`` federates the ebroker node alone, so it
can also answer NO (the fakes offer whatever is asked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.calycopis_fake import CalycopisFake
from tests.conftest import ACCEPT, request_doc
from tests.nodes import Node, start_node
from tests.test_aggregator import aggregator_config, node_config
from tests.test_conformance import (
    CANCEL,
    DIRECT,
    FORMATS,
    OFFERSET,
    REJECT,
    SESSION_GET,
    SESSION_POST,
    XML,
    Standard,
    conforms,
    load_standard,
    posted_in_yaml_and_xml,
    read_answer,
    reads_as_json,
    sessions_conform,
)

pytestmark = pytest.mark.slow  # real node and aggregator processes

standard = pytest.fixture(scope="module")(load_standard)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("conformance-aggregator")
    processes: list[Node] = []
    with CalycopisFake() as caly, CalycopisFake(requests="303", direct="400") as caly303:
        try:
            node = start_node(node_config(tmp, "eb", 64), tmp, "eb")
            processes.append(node)
            upstreams = [
                {"name": "eb", "url": node.url},
                {"name": "caly", "url": caly.url, "weight": 3},
                {"name": "caly303", "url": caly303.url, "weight": 2},
            ]
            mixed = start_node(aggregator_config(tmp, "mixed", upstreams), tmp, "mixed",
                               command="aggregator")  # fmt: skip
            processes.append(mixed)
            alone = start_node(aggregator_config(tmp, "ebroker", upstreams[:1]), tmp, "ebroker",
                               command="aggregator")  # fmt: skip
            processes.append(alone)
            with (
                httpx.Client(base_url=mixed.url, timeout=30) as to_mixed,
                httpx.Client(base_url=alone.url, timeout=30) as to_ebroker,
            ):
                yield {"mixed": to_mixed, "ebroker": to_ebroker, "caly": caly}
        finally:
            for process in processes:
                process.stop()


OfferSets = list[tuple[httpx.Client, dict[str, Any]]]


@pytest.fixture
def made() -> Iterator[OfferSets]:
    """The offer sets a test made; afterwards, their open offers are withdrawn, so that what
    one test holds on the ebroker node is free for the next."""
    offer_sets: OfferSets = []
    yield offer_sets
    for client, offer_set in offer_sets:
        for offer in offer_set["offers"]:  # an offer no longer open refuses it: as well
            client.post(f"/sessions/{offer['meta']['uuid']}", json=REJECT)


def ask(standard: Standard, client: httpx.Client, document: Any, made: OfferSets) -> dict:
    """An offer set of the aggregator, asked for in JSON."""
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=document)
    made.append((client, answer))
    return answer


def offers(standard: Standard, client: httpx.Client, document: Any, made: OfferSets) -> dict:
    """An offer set of the aggregator, in every format, with each of its sessions."""
    answer = ask(standard, client, document, made)
    body = yaml.safe_dump(document).encode()
    for again in posted_in_yaml_and_xml(standard, client, "/requests", body):
        made.append((client, again))
    sessions_conform(standard, client, answer)
    return answer


def offered_by(answer: dict[str, Any], upstream: str) -> str:
    """The url of the first offer that came through ``upstream``."""
    offer = next((o for o in answer["offers"] if o["site"]["upstream"] == upstream), None)
    assert offer is not None, (upstream, [m.get("message") for m in answer["meta"]["messages"]])
    return f"/sessions/{offer['meta']['uuid']}"


def updated_in_every_format(
    standard: Standard, client: httpx.Client, offer_url: Callable[[], str], update: dict[str, Any]
) -> dict[str, Any]:
    """An update of a fresh offer per format (the other implementation refuses a repeated
    one), each answer validated; the JSON answer."""
    answers = {}
    for media in FORMATS:
        url = offer_url()
        r = client.post(url, json=update, headers={"Accept": media})
        assert r.status_code == 200, r.text
        answers[media] = read_answer(standard, SESSION_POST, media, r)
        if media == XML:
            reads_as_json(standard, client, answers[media])
        conforms(standard, client, "GET", url, SESSION_GET)
    return answers["application/json"]


# --- the tests ---------------------------------------------------------------------------------


def test_merged_offers_of_both_implementations_conform(standard: Standard, federation, made):
    answer = offers(standard, federation["mixed"], request_doc(duration="PT1H"), made)
    assert answer["result"] == "YES"
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"eb", "caly", "caly303"}


def test_offers_of_ebroker_nodes_conform(standard: Standard, federation, made) -> None:
    answer = offers(standard, federation["ebroker"], request_doc(duration="PT1H"), made)
    assert answer["result"] == "YES"
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"eb"}


@pytest.mark.parametrize(
    "document",
    [request_doc(cores=(1000, 1000)), request_doc(start="2020-01-01T00:00:00Z/PT1H")],
    ids=["cores", "past"],
)
def test_no_answers_conform(standard: Standard, federation, made, document: dict[str, Any]):
    answer = offers(standard, federation["ebroker"], document, made)
    assert answer["result"] == "NO" and answer["meta"]["messages"]


@pytest.mark.parametrize("upstream", ["eb", "caly", "caly303"])
def test_accepted_and_rejected_sessions_conform(
    standard: Standard, federation, made, upstream: str
) -> None:
    client = federation["mixed"]

    def fresh_offer() -> str:
        return offered_by(ask(standard, client, request_doc(), made), upstream)

    accepted = updated_in_every_format(standard, client, fresh_offer, ACCEPT)
    assert accepted["phase"] in ("WAITING", "ACCEPTED", "PREPARING", "AVAILABLE", "RUNNING")
    rejected = updated_in_every_format(standard, client, fresh_offer, REJECT)
    assert rejected["phase"] == "REJECTED"


def test_cancelled_sessions_conform(standard: Standard, federation, made) -> None:
    """Cancelling an accepted session of an ebroker node, through the aggregator (the other
    implementation's fake knows no cancelling)."""
    client = federation["mixed"]
    answer = ask(standard, client, request_doc(), made)
    url = offered_by(answer, "eb")
    conforms(standard, client, "POST", url, SESSION_POST, json=ACCEPT)
    cancelled = conforms(standard, client, "POST", url, SESSION_POST, json=CANCEL)
    assert cancelled["phase"] == "CANCELLED"
    sessions_conform(standard, client, answer)


@pytest.mark.parametrize(
    ("form", "upstream"),
    [("303", "caly"), ("200", "caly"), ("400", "eb")],
    ids=["see-other", "session", "failed-then-ebroker"],
)
def test_direct_sessions_conform(standard: Standard, federation, form: str, upstream: str):
    """The other implementation's fake answers ``POST /direct`` in ``form``; the aggregator
    answers 303 See Other with the session that started (on the fake, or, when the fake cannot
    start it, on the ebroker node)."""
    client = federation["mixed"]
    federation["caly"].direct = form
    for media in FORMATS:
        r = client.post("/direct", json=request_doc(), headers={"Accept": media})
        assert r.status_code == 303, r.text
        session = read_answer(standard, DIRECT, media, r)
        assert session["site"]["upstream"] == upstream
        assert r.headers["location"] == session["meta"]["url"]
        assert r.headers["location"].startswith(("http://", "https://"))  # format: url
        if media == XML:
            reads_as_json(standard, client, session)
        conforms(standard, client, "GET", r.headers["location"], SESSION_GET)


def test_direct_that_no_upstream_can_start_conforms(standard: Standard, federation) -> None:
    """400 with a FAILED session, whose messages name each upstream's reason."""
    client = federation["mixed"]
    federation["caly"].direct = "400"
    cannot_start = request_doc(cores=(1000, 1000))  # more than the ebroker node has
    failed = conforms(standard, client, "POST", "/direct", DIRECT, status=400, json=cannot_start)
    assert failed["phase"] == "FAILED"
    reasons = " | ".join(m.get("message", "") for m in failed["meta"]["messages"])
    for upstream in ("caly", "caly303", "eb"):
        assert f"upstream {upstream} cannot start it" in reasons
    conforms(standard, client, "GET", f"/sessions/{failed['meta']['uuid']}", SESSION_GET)
    body = yaml.safe_dump(cannot_start).encode()
    posted_in_yaml_and_xml(standard, client, "/direct", body, DIRECT, status=400)
