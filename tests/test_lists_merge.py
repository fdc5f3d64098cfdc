"""The aggregator's merge of its upstreams' lists (``aggregator.listing``), against upstreams
faked in memory that page like a node (keyset cursors): many random lists, inserts between
pages, upstreams down and back. No network, no database: the merge and its cursor alone."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from aggregator.listing import SESSIONS, Position, decode_cursor, encode_cursor, merged_list
from aggregator.upstreams import Answer, UpstreamError
from broker_core import pages as node_pages
from broker_core.errors import Forbidden, ParameterInvalid
from broker_core.http.app import SPEC_DOCUMENT

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
FILTERS: dict[str, Any] = {"phase": None, "from": None, "to": None, "pool": None, "owner": None}


def item(name: str, minutes: int, n: int) -> dict[str, Any]:
    start = (EPOCH + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    uuid = f"{name}-{n:05d}"
    return {"uuid": uuid, "href": f"http://{name}/sessions/{uuid}", "phase": "OFFERED",
            "owner": "test:alice", "start": start, "end": start, "pools": ["sim/main"],
            "offerset": "o", "created": start, "modified": start}  # fmt: skip


def key(i: dict[str, Any]) -> tuple[str, str]:
    return i["start"], i["uuid"]


class FakeNode:
    """A node's list in memory, paged as a node pages it: after the cursor's key, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[dict[str, Any]] = []
        self.made = 0
        self.down = False
        self.status = 200

    def add(self, minutes: int) -> dict[str, Any]:
        self.made += 1
        made = item(self.name, minutes, self.made)
        self.items.append(made)
        return made

    def answer(self, url: str) -> Answer:
        if self.down:
            raise UpstreamError("cannot reach it (down)")
        if self.status != 200:
            return Answer(self.status, {"detail": "refused", "status": self.status})
        query = parse_qs(urlsplit(url).query)
        limit = int(query["limit"][0])
        ordered = sorted(self.items, key=key)
        if "cursor" in query:
            after = tuple(json.loads(base64.urlsafe_b64decode(query["cursor"][0]))["k"])
            ordered = [i for i in ordered if key(i) > after]
        page = ordered[:limit]
        doc: dict[str, Any] = {"items": page, "limit": limit}
        if len(ordered) > limit:  # as long as a node's, and as random (its uuids)
            cursor = {"v": 1, "k": key(page[-1]), "f": uuidlib.uuid4().hex[:16],
                      "r": str(uuidlib.uuid4())}  # fmt: skip
            doc["next"] = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        return Answer(200, doc)


class FakeService:
    """What ``merged_list`` reads of an aggregator."""

    def __init__(self, nodes: list[FakeNode], private: tuple[str, ...] = ()) -> None:
        self.nodes = {n.name: n for n in nodes}
        by_name = {
            n.name: SimpleNamespace(name=n.name, config=SimpleNamespace(
                base=f"http://{n.name}", forward_token=n.name not in private))
            for n in nodes
        }  # fmt: skip
        self.upstreams = SimpleNamespace(by_name=by_name, call=self.call)
        self.config = SimpleNamespace(fanout=SimpleNamespace(deadline=timedelta(seconds=5)))
        self.store = SimpleNamespace(local_sessions=lambda pairs: {})
        self.base_url = "http://aggregator"
        self.asked: list[str] = []

    async def call(self, upstream: Any, method: str, url: str, **_: Any) -> Answer:
        assert method == "GET" and url.startswith(f"{upstream.config.base}/sessions?")
        self.asked.append(upstream.name)
        return self.nodes[upstream.name].answer(url)


def page(service: FakeService, limit: int, cursor: str | None, token: str | None = "t") -> dict:
    return asyncio.run(merged_list(service, SESSIONS, FILTERS, limit=limit, cursor=cursor,
                                   token=token))  # fmt: skip


def walk(service: FakeService, limit: int, between: Any = None) -> list[dict[str, Any]]:
    """Every page until the last; ``between(pages, answer)`` runs after each page."""
    listed, cursor = [], None
    for pages in range(1, 1000):
        answer = page(service, limit, cursor)
        assert len(answer["items"]) <= limit
        listed.append(answer)
        if "next" not in answer:
            return listed
        assert answer["items"] or answer.get("messages"), "an empty page before the last"
        cursor = answer["next"]
        if between is not None:
            between(pages, answer)
    raise AssertionError("the list never ended")


def items_of(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for p in pages for i in p["items"]]


def plain(i: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in i.items() if k != "upstream"}


@pytest.mark.parametrize("seed", range(30))
def test_the_merged_list_is_every_upstreams_list_in_order(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [FakeNode(f"n{k}") for k in range(rng.randint(1, 4))]
    for node in nodes:
        for _ in range(rng.randint(0, 15)):
            node.add(rng.randint(0, 20))  # few distinct starts: many ties, broken by uuid
    limit = rng.randint(1, 6)
    listed = items_of(walk(FakeService(nodes), limit))
    expected = sorted((i for n in nodes for i in n.items), key=key)
    assert [plain(i) for i in listed] == expected
    assert all(i["upstream"] == i["uuid"].split("-")[0] for i in listed)


@pytest.mark.parametrize("seed", range(30))
def test_inserts_between_pages_are_neither_repeated_nor_reordered(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [FakeNode(f"n{k}") for k in range(rng.randint(2, 4))]
    for node in nodes:
        for _ in range(rng.randint(3, 12)):
            node.add(rng.randint(0, 40))
    before = {i["uuid"] for n in nodes for i in n.items}
    after_cursor: set[str] = set()

    def insert(_pages: int, answer: dict[str, Any]) -> None:
        last = key(answer["items"][-1]) if answer["items"] else ("", "")
        for _ in range(rng.randint(0, 3)):
            made = rng.choice(nodes).add(rng.randint(0, 60))
            if key(made) > last:
                after_cursor.add(made["uuid"])

    listed = items_of(walk(FakeService(nodes), rng.randint(1, 5), insert))
    uuids = [i["uuid"] for i in listed]
    assert len(uuids) == len(set(uuids)), "an item was listed twice"
    assert before <= set(uuids), "an item there from the start was skipped"
    assert after_cursor <= set(uuids), "an item made after the cursor was not listed"
    assert [key(i) for i in listed] == sorted(key(i) for i in listed)


def test_an_upstream_down_is_reported_and_listed_when_it_is_back() -> None:
    nodes = [FakeNode("a"), FakeNode("b"), FakeNode("c")]
    for minutes in range(12):
        nodes[minutes % 3].add(minutes)
    service = FakeService(nodes)
    nodes[1].down = True

    def recover(pages: int, answer: dict[str, Any]) -> None:
        texts = " ".join(m["message"] for m in answer.get("messages", []))
        if pages <= 2:
            assert "upstream b failed" in texts and "missing" in texts
        if pages == 2:
            nodes[1].down = False

    listed = walk(service, 2, recover)
    uuids = [i["uuid"] for i in items_of(listed)]
    assert sorted(uuids) == sorted(i["uuid"] for n in nodes for i in n.items)  # none lost
    assert len(uuids) == len(set(uuids))
    assert not any("failed" in m["message"] for m in listed[-1].get("messages", []))


def test_an_upstream_down_for_good_does_not_fail_the_list() -> None:
    up, down = FakeNode("up"), FakeNode("down")
    for minutes in range(3):
        up.add(minutes)
    down.down = True
    answer = page(FakeService([up, down]), 10, None)
    assert [plain(i) for i in answer["items"]] == up.items
    assert "next" not in answer  # the list ends with the others': a client's walk ends
    (note,) = answer["messages"]
    assert note["level"] == "WARN" and "down" in note["message"]
    assert "missing" in note["message"]


def test_upstreams_the_token_is_not_passed_to_are_not_asked() -> None:
    """With the aggregator's own token a node would list every caller's sessions."""
    mine, private = FakeNode("mine"), FakeNode("private")
    mine.add(1)
    private.add(0)
    service = FakeService([mine, private], private=("private",))
    answer = page(service, 10, None)
    assert [i["uuid"] for i in answer["items"]] == [mine.items[0]["uuid"]]
    assert set(service.asked) == {"mine"}
    assert any("private is not listed" in m["message"] for m in answer["messages"])
    # nor is any asked for a caller without a token of their own
    service.asked.clear()
    answer = page(service, 10, None, token=None)
    assert answer["items"] == [] and service.asked == [] and "next" not in answer


def test_refusals() -> None:
    a, b = FakeNode("a"), FakeNode("b")
    a.add(0)
    a.status = b.status = 403
    with pytest.raises(Forbidden):  # every upstream refused the owner filter
        page(FakeService([a, b]), 5, None)
    b.status = 200
    b.add(1)
    answer = page(FakeService([a, b]), 5, None)  # one refused: named, the other listed
    assert [i["upstream"] for i in answer["items"]] == ["b"]
    assert any("refused the list (403)" in m["message"] for m in answer["messages"])


def test_a_cursor_is_checked() -> None:
    nodes = [FakeNode("a")]
    for minutes in range(3):
        nodes[0].add(minutes)
    service = FakeService(nodes)
    cursor = page(service, 1, None)["next"]
    for bad in ("bm9wZQ", "x", base64.urlsafe_b64encode(b'{"v":1,"f":"0","u":{}}').decode()):
        with pytest.raises(ParameterInvalid) as info:
            page(service, 1, bad)
        assert info.value.parameter == "cursor"
    with pytest.raises(ParameterInvalid, match="other filters"):
        asyncio.run(merged_list(service, SESSIONS, {**FILTERS, "phase": ["OFFERED"]}, limit=1,
                                cursor=cursor, token="t"))  # fmt: skip


def test_a_cursor_over_many_upstreams_keeps_to_the_specs_length() -> None:
    """60 upstreams, each at a node's own cursor (random uuids: little to compress)."""
    most = SPEC_DOCUMENT["components"]["parameters"]["cursor"]["schema"]["maxLength"]
    positions = {
        f"site-{k:02d}.example.org": Position(
            node_pages.encode_cursor((1_800_000_000 + k, str(uuidlib.uuid4())), {"owner": "x"}),
            (1_800_000_000, str(uuidlib.uuid4())),
        )
        for k in range(60)
    }
    cursor = encode_cursor(positions, FILTERS)
    assert len(cursor) < most, len(cursor)
    assert decode_cursor(cursor, FILTERS) == positions
