"""Group names tied to their issuer (``egi:site-admins``): admin groups and policy ``groups:``
lists with two trusted issuers, where a group name alone no longer says whose group it is."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from broker_core.auth.groups import group_problems
from broker_core.broker import Broker
from broker_core.config import ConfigError, parse_config
from broker_core.identity import Identity, memberships
from ebroker.cli import main
from tests.conftest import ACCEPT, request_doc
from tests.oidc_issuer import OidcIssuer

CANCEL = {**ACCEPT, "value": "CANCELLED"}

# --- which configured names a caller's groups answer to ---------------------------------------


def test_a_group_counts_under_its_issuers_name_and_bare() -> None:
    names = memberships("egi", ["site-admins"], {"egi", "other"})
    assert names == {"egi:site-admins", "site-admins"}


def test_an_issuer_cannot_assert_another_issuers_group() -> None:
    """``other`` saying its user is in ``egi:site-admins`` does not make them egi's admin."""
    names = memberships("other", ["egi:site-admins"], {"egi", "other"})
    assert "egi:site-admins" not in names
    assert names == {"other:egi:site-admins"}


def test_group_names_with_colons_stay_bare_names() -> None:
    entitlement = "urn:mace:egi.eu:group:vo.example:role=member"
    names = memberships("egi", [entitlement], {"egi", "other"})
    assert names == {entitlement, f"egi:{entitlement}"}


def test_an_identity_matches_qualified_names_of_its_own_issuer_only() -> None:
    issuers = {"egi", "other"}
    egi = Identity("bob", frozenset({"site-admins"}), "egi",
                   memberships=memberships("egi", ["site-admins"], issuers))  # fmt: skip
    other = Identity("eve", frozenset({"site-admins"}), "other",
                     memberships=memberships("other", ["site-admins"], issuers))  # fmt: skip
    assert egi.in_any(["egi:site-admins"]) and not other.in_any(["egi:site-admins"])
    assert egi.in_any(["site-admins"]) and other.in_any(["site-admins"])  # bare: any issuer


# --- through the API, with two issuers ------------------------------------------------------


@pytest.fixture(scope="module")
def egi() -> Iterator[OidcIssuer]:
    with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def other() -> Iterator[OidcIssuer]:
    with OidcIssuer() as issuer:
        yield issuer


def two_issuers(egi: OidcIssuer, other: OidcIssuer, **auth: Any) -> dict[str, Any]:
    return {
        "anonymous": False,
        "issuers": [egi.issuer_config("egi"), other.issuer_config("other")],
        **auth,
    }


def bearer(issuer: OidcIssuer, sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=list(groups))}"}


@pytest.fixture
def node(
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    sqlite_url: str,
    egi: OidcIssuer,
    other: OidcIssuer,
) -> TestClient:
    auth = two_issuers(egi, other, admin_groups=["egi:site-admins"])
    access = [{"name": "egi-national", "groups": ["egi:national"], "pools": ["sim/main"]}]
    policies = [{"name": "site", "type": "local-rules", "options": {"access": access}}]
    return client_factory(broker_factory(sqlite_url, auth=auth, policies=policies))


def test_only_the_named_issuers_admins_are_admins(
    node: TestClient, egi: OidcIssuer, other: OidcIssuer
) -> None:
    """A second trusted issuer saying ``site-admins`` does not make its user an admin."""
    alice = bearer(egi, "alice", "national")
    offers = node.post("/requests", json=request_doc(), headers=alice)
    assert offers.status_code == 200, offers.text
    offer_set = offers.json()["meta"]["uuid"]
    intruder = node.get(f"/offersets/{offer_set}", headers=bearer(other, "eve", "site-admins"))
    assert intruder.status_code == 404
    admin = node.get(f"/offersets/{offer_set}", headers=bearer(egi, "bob", "site-admins"))
    assert admin.status_code == 200


def test_policy_groups_name_their_issuer(
    node: TestClient, egi: OidcIssuer, other: OidcIssuer
) -> None:
    mine = node.post("/requests", json=request_doc(), headers=bearer(egi, "alice", "national"))
    assert mine.json()["result"] == "YES"
    theirs = node.post("/requests", json=request_doc(), headers=bearer(other, "eve", "national"))
    assert theirs.json()["result"] == "NO"
    forged = node.post(
        "/requests", json=request_doc(), headers=bearer(other, "eve", "egi:national")
    )
    assert forged.json()["result"] == "NO"


# --- start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "group"), [("admin_groups", "site-admins"),
                                            ("service_groups", "services")])  # fmt: skip
def test_a_bare_privileged_group_with_two_issuers_stops_start_up(
    broker_factory: Callable[..., Broker], sqlite_url: str, egi: OidcIssuer, other: OidcIssuer,
    key: str, group: str,
) -> None:  # fmt: skip
    """A group that grants more than the caller's own must name its issuer."""
    auth = two_issuers(egi, other, **{key: [group]})
    with pytest.raises(ConfigError, match=rf"auth\.{key}\[0\]: '{group}' names no issuer"):
        broker_factory(sqlite_url, auth=auth)


def test_a_bare_policy_group_with_two_issuers_is_a_start_up_warning(
    broker_factory: Callable[..., Broker],
    sqlite_url: str,
    egi: OidcIssuer,
    other: OidcIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = [{"name": "national", "groups": ["national"], "pools": ["sim/main"]}]
    policies = [{"name": "site", "type": "local-rules", "options": {"access": access}}]
    with caplog.at_level(logging.WARNING):
        broker_factory(sqlite_url, auth=two_issuers(egi, other), policies=policies)
    warned = [r.getMessage() for r in caplog.records if "names no issuer" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith("policies[0].options.access[0].groups[0]: 'national'")
    assert "'egi:national' or 'other:national'" in warned[0]


def test_one_issuer_needs_no_qualified_names(egi: OidcIssuer) -> None:
    config = parse_config({"auth": {**egi.auth_config(), "admin_groups": ["site-admins"]}})
    assert group_problems(config) == ([], [])


def test_a_misspelt_issuer_is_a_warning(egi: OidcIssuer, other: OidcIssuer) -> None:
    config = parse_config({"auth": two_issuers(egi, other, admin_groups=["eg:site-admins"])})
    errors, warnings = group_problems(config)
    assert errors == []
    assert warnings == [
        "auth.admin_groups[0]: 'eg:site-admins' names no configured issuer 'eg', so it is read "
        "as a group of that whole name from any issuer; did you mean 'egi:site-admins'?"
    ]


def test_check_config_shows_the_warnings(
    tmp_path: Any, egi: OidcIssuer, other: OidcIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    access = [{"name": "national", "groups": ["national"], "pools": ["sim/main"]}]
    config = {
        "auth": two_issuers(egi, other),
        "database": {"url": f"sqlite:///{tmp_path / 'none.db'}"},
        "policies": [{"name": "site", "type": "local-rules", "options": {"access": access}}],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", "-c", str(path)]) == 0
    assert "warning: policies[0].options.access[0].groups[0]: 'national' names no issuer" in (
        capsys.readouterr().out
    )


def test_basic_users_groups_can_be_qualified(
    broker_factory: Callable[..., Broker], client_factory: Callable[[Broker], TestClient],
    sqlite_url: str, egi: OidcIssuer,
) -> None:  # fmt: skip
    from broker_core.auth import hash_password

    users = [{"name": "carol", "password_hash": hash_password("pw"), "groups": ["site-admins"]}]
    auth = {**egi.auth_config(), "basic": {"users": users}, "admin_groups": ["basic:site-admins"]}
    client = client_factory(broker_factory(sqlite_url, auth=auth))
    offers = client.post("/requests", json=request_doc(), headers=bearer(egi, "alice"))
    offer_set = offers.json()["meta"]["uuid"]
    assert client.get(f"/offersets/{offer_set}", auth=("carol", "pw")).status_code == 200
    egi_admin = bearer(egi, "bob", "site-admins")  # egi's site-admins are not basic's
    assert client.get(f"/offersets/{offer_set}", headers=egi_admin).status_code == 404


# --- a service (an aggregator's own credential) ------------------------------------------------


def test_a_service_may_read_and_release_anyones_session_and_nothing_else(
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    sqlite_url: str,
    egi: OidcIssuer,
    other: OidcIssuer,
) -> None:
    """What a restarted aggregator needs to undo a booking it was making for a user, without
    the user's token: read the part, cancel it. Not accept it, list it, or read its logs; and
    only the named issuer's group is a service."""
    auth = two_issuers(egi, other, service_groups=["egi:services"])
    node = client_factory(broker_factory(sqlite_url, auth=auth))
    alice = bearer(egi, "alice")
    service = bearer(egi, "federation", "services")
    offers = node.post("/requests", json=request_doc(), headers=alice).json()
    first, second = (o["meta"]["uuid"] for o in offers["offers"][:2])
    forged = bearer(other, "eve", "services")  # another issuer's services group is no service
    assert node.get(f"/sessions/{first}", headers=forged).status_code == 404
    assert node.post(f"/sessions/{first}", json=CANCEL, headers=forged).status_code == 404
    assert node.get(f"/sessions/{first}", headers=service).json()["phase"] == "OFFERED"
    assert node.post(f"/sessions/{first}", json=ACCEPT, headers=service).status_code == 404
    assert node.get(f"/offersets/{offers['meta']['uuid']}", headers=service).status_code == 404
    assert node.get("/sessions", headers=service).json()["items"] == []
    accepted = node.post(f"/sessions/{second}", json=ACCEPT, headers=alice)
    assert accepted.json()["phase"] == "ACCEPTED", accepted.text
    assert node.get(f"/sessions/{second}/logs", headers=service).status_code == 404
    cancelled = node.post(f"/sessions/{second}", json=CANCEL, headers=service)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["phase"] == "CANCELLED"
    assert node.get(f"/sessions/{second}", headers=alice).json()["phase"] == "CANCELLED"
