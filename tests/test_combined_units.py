"""Combined bookings without a network: pairing the parts' offers into combined slots, and
reading a combined request."""

from __future__ import annotations

import pytest

from aggregator.combined.request import parse_combined
from aggregator.combined.slots import PartOffer, combine, narrowed_start
from aggregator.config import UpstreamConfig
from aggregator.upstreams import bearer
from broker_core.errors import DocumentInvalid
from tests.conftest import request_doc


def offer(part: int, start: float, upstream: str = "a") -> PartOffer:
    return PartOffer(part, upstream, start, start + 300, offer=f"{part}@{start}")


def test_slots_pair_offers_starting_within_the_rule_earliest_first():
    a = [offer(0, 0), offer(0, 3600), offer(0, 7200)]
    b = [offer(1, 60, "b"), offer(1, 3600, "b")]
    same = combine([a, b], within=0, limit=8)
    assert [(s[0].start, s[1].start) for s in same] == [(3600, 3600)]
    near = combine([a, b], within=120, limit=8)
    assert [(s[0].start, s[1].start) for s in near] == [(0, 60), (3600, 3600)]
    assert len(combine([a, b], within=120, limit=1)) == 1


def test_slots_need_every_part_and_say_where_to_ask_again():
    a, b = [offer(0, 0), offer(0, 100)], [offer(1, 160), offer(1, 500)]
    assert combine([a, b], within=0, limit=8) == []
    assert narrowed_start([a, b]) == 160  # the latest of the earliest starts
    assert combine([a, []], within=3600, limit=8) == []
    assert narrowed_start([a, []]) is None


def test_slots_stay_distinct_and_cheap_with_many_offers():
    parts = [[offer(p, 60 * i) for i in range(64)] for p in range(4)]
    slots = combine(parts, within=0, limit=16)
    assert len(slots) == 16
    assert len({tuple(id(o) for o in s) for s in slots}) == 16
    assert all(len({o.start for o in s}) == 1 for s in slots)


def combined(**changes):
    doc = {"parts": [{"name": "x", "site": "a", "request": request_doc()},
                     {"name": "y", "request": request_doc()}],
           "schedule": {"requested": {"duration": "PT2H"}}}  # fmt: skip
    return {**doc, **changes}


def test_a_combined_request_shares_its_schedule_unless_a_part_has_its_own():
    own = request_doc(duration="PT30M")
    doc = combined()
    doc["parts"][1]["request"] = own
    request = parse_combined(doc, ["a", "b"])
    assert request.within == 0
    assert request.parts[0].request["schedule"] == {"requested": {"duration": "PT2H"}}
    assert request.parts[1].request["schedule"] == {"requested": {"duration": "PT30M"}}
    assert [p.site for p in request.parts] == ["a", None]
    assert parse_combined(combined(together={"within": "PT1H"}), ["a"]).within == 3600


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"together": {"within": "P2D"}}, "/together/within"),
        ({"together": {"within": "an hour"}}, "/together/within"),
        ({"parts": [{"name": "x", "site": "c", "request": {}},
                    {"name": "x", "request": {}}]}, "/parts/0/site"),
    ],
)
def test_what_the_spec_cannot_say_is_refused_naming_the_field(changes, pointer):
    with pytest.raises(DocumentInvalid) as raised:
        parse_combined(combined(**changes), ["a", "b"])
    assert pointer in [e.pointer for e in raised.value.errors]


def test_the_service_credential_is_the_recoverys_alone():
    """A caller without a token never gets the aggregator's service credential passed on (it
    may release anyone's session on the node): only the recovery's calls carry it."""
    config = UpstreamConfig(name="a", url="http://a", forward_token=True, token="own",
                            service_token="service")  # fmt: skip
    assert bearer(config, "alice") == "alice"
    assert bearer(config, "alice", service=True) == "alice"  # the caller's, while it is known
    assert bearer(config, None) == "own"
    assert bearer(config, None, service=True) == "service"
    mine = UpstreamConfig(name="b", url="http://b", token="own")  # no caller's token passed on
    assert bearer(mine, "alice") == bearer(mine, None, service=True) == "own"
