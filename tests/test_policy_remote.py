"""The remote global policy plugin against a real policy service over HTTP: allow, deny, limit,
the failure modes (timeout, refused connection, bad status, malformed answers) under both
``on_failure`` settings, the answer cache, concurrency and shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from broker_core.config import ConfigError, PolicyConfig
from broker_core.kinds.base import Range, kind_uri
from policies.contract import Decision, Identity, Limit, PolicyRequest, PoolRef, combine
from policies.registry import build_policies
from policies.remote import RemotePolicy
from tests.policy_service import (
    PolicyService,
    Rule,
    deny,
    error,
    in_pieces,
    limit,
    malformed,
    slow,
    unused_url,
)

WINDOW = [1_900_000_000, 1_900_086_400]
TIMEOUT = 0.5


def make_request(
    subject: str = "alice",
    groups: tuple[str, ...] = ("federation",),
    cores: tuple[int, int] = (1, 4),
    windows: list[tuple[int, int]] | None = None,
) -> PolicyRequest:
    return PolicyRequest(
        identity=Identity(subject=subject, groups=frozenset(groups), issuer="test"),
        amounts={"cores": Range(*cores), "memory": Range(1, 2)},
        duration=3600,
        windows=windows,
        pools=[PoolRef("cluster", "federation"), PoolRef("cluster", "main")],
        kinds={"compute": [kind_uri("compute", "simple-compute-resource")]},
        now=int(time.time()),
        lookahead=7 * 86400,
        project="astro",
    )


@pytest.fixture(scope="module")
def service() -> Iterator[PolicyService]:
    rules = [
        deny(subject="mallory", reason="user banned"),
        deny(subject="trudy"),
        slow(subject="sleepy", seconds=5),
        malformed(subject="garbled"),
        in_pieces(subject="far-away"),
        error(subject="broken", status=500),
        limit(
            group="federation",
            caps={"cores": 8, "gpus": 0},
            pools=["cluster/federation"],
            max_duration=3600,
            windows=[WINDOW],
            messages=["federation members get 8 cores"],
        ),
    ]
    with PolicyService(*rules) as running:
        yield running


@pytest.fixture
def make_policy(service: PolicyService) -> Iterator[Callable[..., RemotePolicy]]:
    """Policies talking to the service (options override the defaults); closed afterwards."""
    made: list[RemotePolicy] = []

    def make(node: Any = None, **options: Any) -> RemotePolicy:
        options = {"url": service.url, "timeout": TIMEOUT, **options}
        policy = RemotePolicy("global", options, node)
        made.append(policy)
        return policy

    service.reset()
    yield make
    for policy in made:
        policy.close()


def texts(decision: Decision) -> list[str]:
    return [m.message for m in decision.messages]


# --- answers ---------------------------------------------------------------------------------


def test_allow_sends_the_summary_and_headers(service, make_policy):
    node = SimpleNamespace(config=SimpleNamespace(site=SimpleNamespace(name="site-a")))
    policy = make_policy(node, headers={"X-Api-Key": "sesame"})
    request = make_request("bob", groups=("staff",))
    decision = policy.evaluate(request)
    assert decision.allowed
    assert decision.messages == []
    assert decision.pools is None and decision.limits == [] and decision.max_duration is None
    assert decision.windows is None
    assert service.bodies == [{"node": "site-a", "request": request.summary()}]
    assert service.headers[0]["X-Api-Key"] == "sesame"
    assert service.headers[0]["Content-Type"].startswith("application/json")


def test_an_answer_in_several_writes_is_read_whole(make_policy):
    """Before: one ``content.read(n)`` took what was buffered, the first write of a 17 KB
    answer, and the policy service's answer was 'malformed'."""
    decision = make_policy().evaluate(make_request(subject="far-away"))
    assert decision.allowed, texts(decision)
    assert len(texts(decision)) == 200


def test_deny_names_the_policy_and_the_reason(make_policy):
    decision = make_policy().evaluate(make_request("mallory"))
    assert not decision.allowed
    assert texts(decision) == ["global policy global: user banned"]
    assert decision.messages[0].level == "WARN"
    assert decision.messages[0].values == {"policy": "global", "reason": "user banned"}


def test_deny_without_a_reason_still_says_so(make_policy):
    decision = make_policy().evaluate(make_request("trudy"))
    assert not decision.allowed
    assert texts(decision) == ["global policy global refused the request"]


def test_limit_becomes_pools_caps_duration_and_windows(make_policy):
    decision = make_policy().evaluate(make_request("carol"))
    assert decision.allowed
    assert decision.pools == frozenset({PoolRef("cluster", "federation")})
    assert sorted(decision.limits, key=lambda lim: lim.resource_class) == [
        Limit("cores", 8, rule="global policy global"),
        Limit("gpus", 0, rule="global policy global"),
    ]
    assert decision.max_duration == 3600
    assert decision.windows == [tuple(WINDOW)]
    assert texts(decision) == ["global policy global: federation members get 8 cores"]
    assert decision.messages[0].level == "INFO"
    # and it combines with another policy's answer as the narrowest of both
    both = combine([decision, Decision(max_duration=600, pools=None)])
    assert both.max_duration == 600 and both.pools == decision.pools


def test_limits_are_ignored_unless_the_decision_is_limit(service, make_policy):
    odd = Rule(decision="allow", messages=["welcome"], limits={"caps": "not even a mapping"})
    with service.using(odd):
        decision = make_policy().evaluate(make_request())
    assert decision.allowed and decision.limits == [] and decision.pools is None
    assert texts(decision) == ["global policy global: welcome"]


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("on_failure", ["deny", "allow"])
def test_timeout_is_bounded_and_handled(make_policy, on_failure, caplog):
    policy = make_policy(on_failure=on_failure)
    start = time.monotonic()
    decision = policy.evaluate(make_request("sleepy"))
    elapsed = time.monotonic() - start
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 0.5
    assert decision.allowed is (on_failure == "allow")
    [text] = texts(decision)
    assert "global policy global" in text and "timed out after 0.5s" in text
    assert decision.messages[0].level == "WARN"
    if on_failure == "allow":
        assert "allowed without asking" in text
    assert any("timed out" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_default_timeout_is_two_seconds_and_reported_as_such():
    policy = RemotePolicy("global", {"url": unused_url()}, None)
    try:
        assert policy.options.timeout.total_seconds() == 2
        assert policy.options.on_failure == "deny"
        assert policy.options.cache_ttl.total_seconds() == 30
    finally:
        policy.close()


@pytest.mark.parametrize("on_failure", ["deny", "allow"])
def test_service_down(make_policy, on_failure):
    policy = make_policy(url=unused_url(), on_failure=on_failure)
    start = time.monotonic()
    decision = policy.evaluate(make_request())
    assert time.monotonic() - start < TIMEOUT + 0.5
    assert decision.allowed is (on_failure == "allow")
    [text] = texts(decision)
    assert "could not be asked (cannot connect to it)" in text
    assert "127.0.0.1" not in text  # the service's address stays in the log


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (error(status=500), "it answered HTTP 500"),
        (error(status=404), "it answered HTTP 404"),
        (Rule(status=302, raw="{}"), "it answered HTTP 302"),
        (malformed(), "its answer is malformed"),
        (malformed(raw='{"decision": "perhaps"}'), "its answer is malformed"),
        (malformed(raw='{"decision": "deny", "why": "x"}'), "its answer is malformed"),
        (malformed(raw='{"decision": "deny", "messages": "no"}'), "its answer is malformed"),
        (limit(caps={"cores": "8"}), "its answer is malformed"),
        (limit(caps={"cores": -1}), "its answer is malformed"),
        (limit(caps={"widgets": 1}), "its answer is malformed"),
        (limit(pools=["no-slash"]), "its answer is malformed"),
        (limit(windows=[[5, 1]]), "its answer is malformed"),
        (limit(windows=[[1, 2, 3]]), "its answer is malformed"),
        (Rule(decision="limit", limits={"caps": {}, "extra": 1}), "its answer is malformed"),
    ],
)
@pytest.mark.parametrize("on_failure", ["deny", "allow"])
def test_bad_answers_are_failures(service, make_policy, rule, reason, on_failure):
    with service.using(rule):
        decision = make_policy(on_failure=on_failure).evaluate(make_request())
    assert decision.allowed is (on_failure == "allow")
    assert decision.limits == [] and decision.pools is None
    [text] = texts(decision)
    assert f"global policy global: the policy service could not be asked ({reason})" in text


def test_failures_are_not_cached(service, make_policy):
    policy = make_policy()
    with service.using(error()):
        assert not policy.evaluate(make_request("dave")).allowed
    assert policy.evaluate(make_request("dave", groups=())).allowed
    assert service.calls_for("dave") == 2
    assert policy.evaluate(make_request("dave", groups=())).allowed  # now cached
    assert service.calls_for("dave") == 2


def test_evaluate_never_raises_on_its_own_faults(make_policy, monkeypatch):
    policy = make_policy()
    monkeypatch.setattr(policy, "_call", lambda body: 1 / 0)
    decision = policy.evaluate(make_request())
    assert not decision.allowed
    assert "internal error (ZeroDivisionError)" in texts(decision)[0]


# --- the cache -------------------------------------------------------------------------------


def test_identical_requests_are_answered_from_the_cache(service, make_policy):
    policy = make_policy()
    first = policy.evaluate(make_request("erin"))
    first.limits.clear()  # a caller changing its decision must not change the cached answer
    first.messages.clear()
    second = policy.evaluate(make_request("erin"))
    assert service.calls_for("erin") == 1
    assert [lim.cap for lim in second.limits if lim.resource_class == "cores"] == [8]
    assert len(second.messages) == 1
    # a different identity or a different request is asked about
    policy.evaluate(make_request("frank"))
    policy.evaluate(make_request("erin", cores=(2, 4)))
    policy.evaluate(make_request("erin", windows=[(WINDOW[0], WINDOW[0] + 7200)]))
    assert service.calls_for("frank") == 1
    assert service.calls_for("erin") == 3


def test_cached_answers_expire(service, make_policy):
    policy = make_policy(cache_ttl=0.3)
    policy.evaluate(make_request("grace"))
    policy.evaluate(make_request("grace"))
    assert service.calls_for("grace") == 1
    time.sleep(0.4)
    policy.evaluate(make_request("grace"))
    assert service.calls_for("grace") == 2


def test_a_zero_ttl_disables_the_cache(service, make_policy):
    policy = make_policy(cache_ttl="PT0S")
    for _ in range(3):
        assert not policy.evaluate(make_request("mallory")).allowed
    assert service.calls_for("mallory") == 3


def test_the_cache_is_bounded_and_drops_the_oldest(service, make_policy):
    policy = make_policy(cache_size=2)
    for subject in ("h1", "h2", "h3"):
        policy.evaluate(make_request(subject))
    policy.evaluate(make_request("h3"))
    policy.evaluate(make_request("h2"))
    assert service.calls == 3
    policy.evaluate(make_request("h1"))  # dropped when h3 came
    assert service.calls_for("h1") == 2


# --- concurrency and lifecycle ---------------------------------------------------------------


def test_many_threads_at_once_share_one_loop(service, make_policy):
    before = set(threading.enumerate())
    policy = make_policy(timeout=5)
    results: dict[int, Decision] = {}
    barrier = threading.Barrier(20)

    def ask(i: int) -> None:
        barrier.wait()
        subject = "mallory" if i % 4 == 0 else f"user{i}"
        results[i] = policy.evaluate(make_request(subject))

    with service.using(deny(subject="mallory"), slow(group="federation", seconds=0.3)):
        start = time.monotonic()
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        elapsed = time.monotonic() - start
    assert len(results) == 20
    for i, decision in results.items():
        assert decision.allowed is (i % 4 != 0), (i, texts(decision))
    assert elapsed < 2.5  # concurrent: 20 serial calls would take 6 s
    started = set(threading.enumerate()) - before
    assert sum(1 for t in started if t.name == "policy-global") == 1


def test_close_stops_the_thread_and_later_calls_fail_safely(make_policy):
    policy = make_policy()
    assert policy.evaluate(make_request("ivan")).allowed
    assert policy._thread.is_alive()
    policy.close()
    assert not policy._thread.is_alive()
    assert policy._session.closed
    policy.close()  # idempotent
    decision = policy.evaluate(make_request("judy"))
    assert not decision.allowed
    assert "the policy is closed" in texts(decision)[0]


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "url"),
        ({"url": "ftp://example.org/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://x", "timeout": "PT0S"}, "timeout"),
        ({"url": "http://x", "timeout": "soon"}, "timeout"),
        ({"url": "http://x", "on_failure": "maybe"}, "on_failure"),
        ({"url": "http://x", "cache_ttl": -1}, "cache_ttl"),
        ({"url": "http://x", "cache_size": 0}, "cache_size"),
        ({"url": "http://x", "headers": {"X-Key": ["a"]}}, "headers"),
        ({"url": "http://x", "forward_token": True}, "forward_token"),
    ],
)
def test_bad_options_name_the_key(options, key):
    before = threading.active_count()
    with pytest.raises(ValidationError) as caught:
        RemotePolicy("global", options, None)
    assert caught.value.errors()[0]["loc"][0] == key
    assert threading.active_count() == before  # no loop thread left behind


def test_built_through_the_entry_point(service):
    config = PolicyConfig(
        name="global", type="remote", options={"url": service.url, "timeout": "PT1S"}
    )
    [policy] = build_policies([config], None)
    try:
        assert isinstance(policy, RemotePolicy)
        assert policy.options.timeout.total_seconds() == 1
        assert not policy.evaluate(make_request("mallory")).allowed
    finally:
        policy.close()
    bad = PolicyConfig(name="global", type="remote", options={"url": "ftp://x"})
    with pytest.raises(ConfigError, match=r"policies\.0\.options\.url"):
        build_policies([bad], None)
