"""Unit tests of the local-rules policy: access to pools, caps, durations, refusals, windows."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from broker_core.kinds.base import Range
from policies.contract import (
    ANONYMOUS_IDENTITY,
    Decision,
    Identity,
    Limit,
    PolicyRequest,
    PoolRef,
    combine,
)
from policies.local_rules import LocalRules, _materialise

HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY

FEDERATION = PoolRef("cluster", "federation")
LOCAL = PoolRef("cluster", "local")
POOLS = [FEDERATION, LOCAL]

ACCESS: list[dict[str, Any]] = [
    {"name": "federation-pledge", "groups": ["federation"], "pools": ["cluster/federation"]},
    {"name": "local-share", "groups": ["national", "local"], "pools": ["cluster/local"]},
]


def at(text: str) -> int:
    """Epoch seconds of a UTC instant written 'YYYY-MM-DDTHH:MM'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


MONDAY = at("2024-06-03T09:00")  # a Monday morning, far from DST changes


def user(subject: str, *groups: str, issuer: str = "test") -> Identity:
    return Identity(subject=subject, groups=frozenset(groups), issuer=issuer)


def request(
    identity: Identity | None = None,
    *,
    cores: tuple[int, int] = (1, 1),
    gpus: tuple[int, int] | None = None,
    duration: int = HOUR,
    windows: list[tuple[int, int]] | None = None,
    pools: list[PoolRef] | None = None,
    now: int = MONDAY,
    lookahead: int = WEEK,
) -> PolicyRequest:
    amounts = {"cores": Range(*cores), "memory": Range(1, 1)}
    if gpus is not None:
        amounts["gpus"] = Range(*gpus)
    return PolicyRequest(
        identity=identity or user("alice", "federation"),
        amounts=amounts,
        duration=duration,
        windows=windows,
        pools=POOLS if pools is None else pools,
        kinds={},
        now=now,
        lookahead=lookahead,
    )


def policy(**options: Any) -> LocalRules:
    return LocalRules("site-rules", options, None)


def texts(decision: Decision) -> list[str]:
    return [m.message for m in decision.messages]


def weekly(days: list[str], start: str, end: str, zone: str | None = None) -> dict[str, Any]:
    window: dict[str, Any] = {"days": days, "from": start, "to": end}
    if zone:
        window["timezone"] = zone
    return window


# --- access ------------------------------------------------------------------------------------


def test_plugin_is_registered_under_local_rules() -> None:
    (entry,) = [e for e in entry_points(group="ebroker.policies") if e.name == "local-rules"]
    assert entry.load() is LocalRules


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (user("fed", "federation"), {FEDERATION}),
        (user("loc", "local", "federation"), {FEDERATION, LOCAL}),
        (user("nat", "national"), {LOCAL}),
    ],
)
def test_access_is_the_union_of_matching_rules(identity: Identity, expected: set[PoolRef]) -> None:
    decision = policy(access=ACCESS).evaluate(request(identity))
    assert decision.allowed
    assert decision.pools == frozenset(expected)
    assert decision.messages == []


def test_stranger_is_denied_naming_the_policy() -> None:
    decision = policy(access=ACCESS).evaluate(request(user("eve", "elsewhere", "other")))
    assert not decision.allowed
    (text,) = texts(decision)
    assert "no access rule of site-rules lets test:eve use this node" in text
    assert "(groups: elsewhere, other)" in text
    assert decision.messages[0].level == "WARN"
    assert decision.messages[0].values["policy"] == "site-rules"


def test_anonymous_caller_matches_no_group_rule() -> None:
    decision = policy(access=ACCESS).evaluate(request(ANONYMOUS_IDENTITY))
    assert not decision.allowed
    assert "lets anonymous use this node (groups: none)" in texts(decision)[0]


def test_unmatched_allow_leaves_access_unrestricted() -> None:
    decision = policy(access=ACCESS, unmatched="allow").evaluate(request(user("eve")))
    assert decision.allowed
    assert decision.pools is None
    # a matching caller is still restricted to its pools
    decision = policy(access=ACCESS, unmatched="allow").evaluate(request(user("n", "national")))
    assert decision.pools == frozenset({LOCAL})


def test_no_access_rules_means_no_restriction() -> None:
    decision = policy().evaluate(request(user("eve")))
    assert decision.allowed
    assert decision.pools is None
    assert decision == Decision()


def test_pool_names_with_and_without_platform() -> None:
    pools = [LOCAL, PoolRef("cloud", "local"), PoolRef("cloud", "gpu"), FEDERATION]
    rules = policy(
        access=[
            {"name": "any-local", "groups": ["a"], "pools": ["local"]},
            {"name": "cloud-gpu", "groups": ["b"], "pools": ["cloud/gpu", "nowhere/gpu"]},
            {"name": "vanished", "groups": ["c"], "pools": ["gone", "cluster/federation"]},
        ]
    )
    assert rules.evaluate(request(user("a", "a"), pools=pools)).pools == frozenset(
        {LOCAL, PoolRef("cloud", "local")}
    )
    # "platform/pool" names one pool only; a name the node lacks is ignored
    assert rules.evaluate(request(user("b", "b"), pools=pools)).pools == frozenset(
        {PoolRef("cloud", "gpu")}
    )
    decision = rules.evaluate(request(user("c", "c"), pools=pools))
    assert decision.allowed
    assert decision.pools == frozenset({FEDERATION})


def test_access_to_only_missing_pools_is_denied_with_a_reason() -> None:
    rules = policy(access=[{"name": "old", "groups": ["a"], "pools": ["retired/pool"]}])
    decision = rules.evaluate(request(user("a", "a")))
    assert not decision.allowed
    assert decision.pools == frozenset()
    assert "rule old of site-rules" in texts(decision)[0]
    assert "retired/pool, none of which this node has" in texts(decision)[0]


def test_subjects_anonymous_and_everyone_selectors() -> None:
    rules = policy(
        access=[
            {"name": "by-owner", "subjects": ["test:bob"], "pools": ["federation"]},
            {"name": "guests", "anonymous": True, "pools": ["local"]},
        ]
    )
    assert rules.evaluate(request(user("bob"))).pools == frozenset({FEDERATION})
    assert not rules.evaluate(request(user("bob", issuer="other"))).allowed  # other issuer's bob
    assert rules.evaluate(request(ANONYMOUS_IDENTITY)).pools == frozenset({LOCAL})
    everyone = policy(access=[{"name": "all", "everyone": True, "pools": ["local"]}])
    assert everyone.evaluate(request(user("x"))).pools == frozenset({LOCAL})
    assert everyone.evaluate(request(ANONYMOUS_IDENTITY)).pools == frozenset({LOCAL})


# --- caps, durations, refusals -----------------------------------------------------------------


STUDENTS: dict[str, Any] = {
    "name": "students",
    "groups": ["students"],
    "caps": {"cores": 64, "gpus": 1},
    "max_duration": "PT4H",
}


def test_caps_become_limits_naming_the_rule() -> None:
    decision = policy(limits=[STUDENTS]).evaluate(request(user("s", "students"), cores=(8, 128)))
    assert decision.allowed
    assert decision.limits == [
        Limit("cores", 64, rule="rule students"),
        Limit("gpus", 1, rule="rule students"),
    ]
    assert decision.max_duration == 4 * HOUR
    # a caller the limit does not match is not limited
    assert policy(limits=[STUDENTS]).evaluate(request(user("p", "staff"))) == Decision()


def test_min_above_cap_is_denied_naming_rule_cap_and_need() -> None:
    decision = policy(limits=[STUDENTS]).evaluate(
        request(user("s", "students"), cores=(100, 200), gpus=(2, 2))
    )
    assert not decision.allowed
    assert texts(decision) == [
        "rule students: at most 64 cores per session; 100 needed",
        "rule students: at most 1 GPUs per session; 2 needed",
    ]
    assert decision.messages[0].values == {
        "rule": "students",
        "cap": 64,
        "unit": "cores",
        "needed": 100,
    }
    # the cap itself is still fine
    assert (
        policy(limits=[STUDENTS]).evaluate(request(user("s", "students"), cores=(64, 64))).allowed
    )


def test_max_duration_denies_and_the_smallest_wins() -> None:
    rules = policy(
        limits=[
            STUDENTS,
            {"name": "short", "groups": ["interactive"], "max_duration": "PT2H"},
            {"name": "long", "everyone": True, "max_duration": "P1D"},
        ]
    )
    both = user("s", "students", "interactive")
    assert rules.evaluate(request(both, duration=HOUR)).max_duration == 2 * HOUR
    assert rules.evaluate(request(user("x"), duration=HOUR)).max_duration == DAY
    decision = rules.evaluate(request(both, duration=3 * HOUR))
    assert not decision.allowed
    assert texts(decision) == ["rule short: sessions may last at most PT2H; PT3H requested"]
    decision = rules.evaluate(request(both, duration=5 * HOUR))
    assert len(decision.messages) == 2  # both rules say so, each by name
    assert "rule students" in texts(decision)[0] and "at most PT4H" in texts(decision)[0]
    assert rules.evaluate(request(both, duration=2 * HOUR)).allowed  # exactly the maximum


def test_refuse_by_subject() -> None:
    rules = policy(
        access=ACCESS, limits=[{"name": "banned", "subjects": ["test:mallory"], "refuse": True}]
    )
    decision = rules.evaluate(request(user("mallory", "federation")))
    assert not decision.allowed
    assert texts(decision) == ["rule banned of site-rules refuses requests from test:mallory"]
    assert rules.evaluate(request(user("mallory", "federation", issuer="other"))).allowed


def test_anonymous_limit() -> None:
    rules = policy(
        limits=[
            {
                "name": "anonymous-callers",
                "anonymous": True,
                "caps": {"cores": 2},
                "max_duration": "PT1H",
            }
        ]
    )
    decision = rules.evaluate(request(ANONYMOUS_IDENTITY, cores=(1, 4)))
    assert decision.allowed
    assert decision.limits == [Limit("cores", 2, rule="rule anonymous-callers")]
    assert decision.max_duration == HOUR
    assert rules.evaluate(request(user("a"), cores=(1, 4))) == Decision()
    denied = rules.evaluate(request(ANONYMOUS_IDENTITY, cores=(4, 4), duration=2 * HOUR))
    assert not denied.allowed
    assert len(denied.messages) == 2


def test_combines_with_other_policies() -> None:
    mine = policy(access=ACCESS, limits=[STUDENTS]).evaluate(
        request(user("s", "students", "national"))
    )
    other = Decision(pools=frozenset({LOCAL, FEDERATION}), max_duration=HOUR)
    merged = combine([mine, other])
    assert merged.allowed
    assert merged.pools == frozenset({LOCAL})
    assert merged.max_duration == HOUR


# --- weekly windows ----------------------------------------------------------------------------


def windowed(*windows: dict[str, Any], name: str = "students") -> dict[str, Any]:
    return {"name": name, "groups": ["students"], "windows": list(windows)}


STUDENT = user("s", "students")


def upcoming(decision: Decision, now: int = MONDAY) -> list[tuple[int, int]]:
    """The windows not yet over (they also cover a day before now, harmlessly)."""
    return [w for w in decision.windows or [] if w[1] > now]


def test_overnight_window_wraps_into_the_next_day() -> None:
    rules = policy(limits=[windowed(weekly(["fri"], "20:00", "08:00"))])
    decision = rules.evaluate(request(STUDENT, duration=8 * HOUR))
    assert decision.allowed
    assert decision.windows == [(at("2024-06-07T20:00"), at("2024-06-08T08:00"))]


def test_window_to_midnight_and_merged_weekend() -> None:
    split = policy(
        limits=[windowed(weekly(["sat"], "00:00", "24:00"), weekly(["sun"], "00:00", "24:00"))]
    )
    together = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00"))])
    weekend = [(at("2024-06-08T00:00"), at("2024-06-10T00:00"))]
    for rules in (split, together):
        decision = rules.evaluate(request(STUDENT, duration=30 * HOUR))
        assert decision.allowed, texts(decision)
        assert upcoming(decision) == weekend


def test_windows_cover_the_lookahead_plus_duration() -> None:
    rules = policy(limits=[windowed(weekly(["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00"))])
    decision = rules.evaluate(request(STUDENT, duration=HOUR))
    assert decision.windows is not None
    starts = [lo for lo, _ in decision.windows]
    # today's window (already open) through next Monday's, within now + 7 days + 1 hour
    assert at("2024-06-03T09:00") in starts and at("2024-06-10T09:00") in starts
    assert all(hi - lo == 8 * HOUR for lo, hi in decision.windows)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # spring forward, Sunday 31 March 2024: Saturday 00:00 is CET, Monday 00:00 is CEST
        ("2024-03-27T12:00", (at("2024-03-29T23:00"), at("2024-03-31T22:00"))),
        # fall back, Sunday 27 October 2024: Saturday 00:00 is CEST, Monday 00:00 is CET
        ("2024-10-23T12:00", (at("2024-10-25T22:00"), at("2024-10-27T23:00"))),
    ],
)
def test_weekend_in_amsterdam_across_a_dst_change(now: str, expected: tuple[int, int]) -> None:
    rules = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00", "Europe/Amsterdam"))])
    decision = rules.evaluate(request(STUDENT, now=at(now)))
    assert decision.windows is not None
    assert expected in decision.windows


def test_overnight_window_across_spring_forward_is_an_hour_shorter() -> None:
    rules = policy(limits=[windowed(weekly(["sat"], "20:00", "08:00", "Europe/Amsterdam"))])
    decision = rules.evaluate(request(STUDENT, now=at("2024-03-27T12:00")))
    # Saturday 20:00 CET = 19:00Z; Sunday 08:00 CEST = 06:00Z
    assert (at("2024-03-30T19:00"), at("2024-03-31T06:00")) in (decision.windows or [])


def test_windows_of_two_limits_intersect() -> None:
    rules = policy(
        limits=[
            windowed(weekly(["sat", "sun"], "00:00", "24:00")),
            {"name": "daytime", "everyone": True, "windows": [weekly(DAYS, "06:00", "18:00")]},
        ]
    )
    decision = rules.evaluate(request(STUDENT, duration=8 * HOUR))
    assert decision.allowed, texts(decision)
    assert upcoming(decision) == [
        (at("2024-06-08T06:00"), at("2024-06-08T18:00")),
        (at("2024-06-09T06:00"), at("2024-06-09T18:00")),
    ]
    # a caller only the daytime rule matches gets every day's daytime window
    assert len(rules.evaluate(request(user("x"))).windows or []) >= 7


def test_disjoint_windows_of_two_limits_deny_naming_both() -> None:
    rules = policy(
        limits=[
            windowed(weekly(["sat", "sun"], "00:00", "24:00")),
            windowed(
                weekly(["mon", "tue", "wed", "thu", "fri"], "00:00", "24:00"), name="weekdays"
            ),
        ]
    )
    decision = rules.evaluate(request(STUDENT, duration=HOUR))
    assert not decision.allowed
    assert decision.windows == []
    (text,) = texts(decision)
    assert text.startswith("rules students, weekdays together:")
    assert "none fits PT1H in the next P7D" in text


def test_no_room_in_the_requested_window_is_denied_naming_the_rule() -> None:
    rules = policy(
        limits=[
            windowed(
                weekly(["sat", "sun"], "00:00", "24:00", "Europe/Amsterdam"),
                weekly(["mon", "tue", "wed", "thu", "fri"], "20:00", "08:00"),
            )
        ]
    )
    monday_office_hours = [(at("2024-06-03T09:00"), at("2024-06-03T12:00"))]
    decision = rules.evaluate(request(STUDENT, duration=8 * HOUR, windows=monday_office_hours))
    assert not decision.allowed
    (text,) = texts(decision)
    assert text == (
        "rule students: sessions may only run within its weekly windows "
        "(sat, sun 00:00\N{EN DASH}24:00 Europe/Amsterdam; "
        "mon, tue, wed, thu, fri 20:00\N{EN DASH}08:00 UTC); "
        "none fits PT8H in the requested window"
    )
    # a start the overnight window has room for
    evening = [(at("2024-06-03T18:00"), at("2024-06-03T21:00"))]
    assert rules.evaluate(request(STUDENT, duration=8 * HOUR, windows=evening)).allowed
    # ... but not for 13 hours (20:00 to 08:00 is 12)
    assert not rules.evaluate(request(STUDENT, duration=13 * HOUR, windows=evening)).allowed


def test_session_may_end_exactly_when_its_window_ends() -> None:
    rules = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00"))])
    sunday = at("2024-06-09T16:00")
    assert rules.evaluate(request(STUDENT, duration=8 * HOUR, windows=[(sunday, sunday)])).allowed
    late = sunday + 60
    assert not rules.evaluate(request(STUDENT, duration=8 * HOUR, windows=[(late, late)])).allowed


def test_asap_looks_only_as_far_as_the_lookahead() -> None:
    rules = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00"))])
    assert rules.evaluate(request(STUDENT, duration=8 * HOUR)).allowed
    decision = rules.evaluate(request(STUDENT, duration=8 * HOUR, lookahead=DAY))
    assert not decision.allowed
    assert texts(decision)[0].endswith("none fits PT8H in the next P1D")


def test_requested_starts_beyond_the_lookahead_are_left_to_the_node() -> None:
    rules = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00"))])
    far = MONDAY + 30 * DAY
    decision = rules.evaluate(request(STUDENT, windows=[(far, far + HOUR)]))
    assert decision.allowed  # the node explains that it never offers so late
    assert decision.windows  # but still restricts the times


def test_materialised_windows_are_cached_per_day() -> None:
    rules = policy(limits=[windowed(weekly(["sat", "sun"], "00:00", "24:00"))])
    rules.evaluate(request(STUDENT))
    before = _materialise.cache_info().hits
    rules.evaluate(request(STUDENT, now=MONDAY + 60))
    assert _materialise.cache_info().hits == before + 1


def test_brief_example_config_from_yaml() -> None:
    options = yaml.safe_load(
        """
        access:
          - {name: federation-pledge, groups: [federation], pools: [cluster/federation]}
          - {name: local-share, groups: [national, local], pools: [cluster/local]}
        unmatched: deny
        limits:
          - name: students
            groups: [students]
            caps: {cores: 64, gpus: 1}
            max_duration: PT4H
            windows:
              - {days: [sat, sun], from: "00:00", to: "24:00", timezone: Europe/Amsterdam}
              - {days: [mon, tue, wed, thu, fri], from: "20:00", to: "08:00"}
          - {name: banned, subjects: ["test:mallory"], refuse: true}
          - {name: anonymous-callers, anonymous: true, caps: {cores: 2}, max_duration: PT1H}
        """
    )
    rules = policy(**options)
    decision = rules.evaluate(request(user("s", "students", "national"), duration=2 * HOUR))
    assert decision.allowed, texts(decision)
    assert decision.pools == frozenset({LOCAL})
    assert decision.max_duration == 4 * HOUR
    assert decision.windows and decision.windows[0][0] <= MONDAY  # the overnight one before now


# --- configuration errors ----------------------------------------------------------------------


DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"acces": []}, "acces"),
        ({"access": [{"name": "a", "groups": ["g"], "pool": ["x"]}]}, "pool"),
        ({"access": [{"name": "a", "pools": ["x"]}]}, "matches nobody"),
        ({"access": [{"name": "a", "anonymous": False, "pools": ["x"]}]}, "matches nobody"),
        ({"access": [{"name": "a", "groups": ["g"], "pools": []}]}, "pools"),
        ({"access": [{"name": "a", "groups": ["g"], "pools": ["a/b/c"]}]}, "not a pool name"),
        ({"unmatched": "maybe"}, "unmatched"),
        ({"limits": [{"name": "l", "caps": {"cores": 1}}]}, "matches nobody"),
        ({"limits": [{"name": "l", "everyone": True}]}, "limits nothing"),
        ({"limits": [{"name": "l", "everyone": True, "caps": {"cpus": 1}}]}, "cpus"),
        ({"limits": [{"name": "l", "everyone": True, "caps": {"cores": -1}}]}, "negative"),
        ({"limits": [{"name": "l", "everyone": True, "max_duration": "soon"}]}, "max_duration"),
        ({"limits": [{"name": "l", "everyone": True, "max_duration": "PT0S"}]}, "positive"),
        ({"limits": [windowed(weekly(["funday"], "00:00", "24:00"))]}, "funday"),
        ({"limits": [windowed(weekly(["mon"], "25:00", "26:00"))]}, "25:00"),
        ({"limits": [windowed(weekly(["mon"], "08:00", "24:01"))]}, "24:01"),
        ({"limits": [windowed(weekly(["mon"], "24:00", "08:00"))]}, "24:00"),
        ({"limits": [windowed(weekly(["mon"], "8am", "10:00"))]}, "8am"),
        ({"limits": [windowed(weekly(["mon"], 1200, "22:00"))]}, "quoted"),  # YAML's 20:00
        ({"limits": [windowed(weekly(["mon"], "08:00", "08:00"))]}, "empty"),
        ({"limits": [windowed(weekly([], "08:00", "09:00"))]}, "days"),
        ({"limits": [windowed(weekly(["mon"], "08:00", "09:00", "Mars/Olympus"))]}, "Mars"),
        ({"limits": [windowed()]}, "windows"),
        (
            {
                "access": [{"name": "dup", "groups": ["g"], "pools": ["x"]}],
                "limits": [{"name": "dup", "groups": ["g"], "refuse": True}],
            },
            "unique",
        ),
    ],
)
def test_bad_options_raise_validation_error(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        policy(**options)
    assert needle in str(caught.value)


def test_day_names_are_case_insensitive() -> None:
    rules = policy(limits=[windowed(weekly(["Sat", "SUN"], "00:00", "24:00"))])
    assert rules.evaluate(request(STUDENT)).windows
