"""HTTP Basic identities of the node's local users (``auth.basic``), as Calycopis-broker's
clients send them: config, the verifier, the cache, and the whole node through its HTTP API."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable
from typing import Any

import argon2
import bcrypt
import pytest
from starlette.testclient import TestClient

from broker_core.auth import Authenticator, hash_password
from broker_core.auth import basic as basic_module
from broker_core.broker import Broker
from broker_core.config import AuthConfig, ConfigError, parse_config
from broker_core.errors import Unauthenticated
from ebroker import cli
from tests.conftest import ACCEPT, POOL_CONFIG, request_doc

# cheap argon2id parameters keep the many hashes of these tests fast; the node reads any
_FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_PW, BOB_PW, ROOT_PW = "alice-secret", "bob's pässword", "root-pw"
ALICE_HASH = hash_password(ALICE_PW)  # the real default (argon2id), as hash-password makes it
BOB_HASH = bcrypt.hashpw(BOB_PW.encode(), bcrypt.gensalt(4)).decode()
ROOT_HASH = _FAST.hash(ROOT_PW)

USERS: list[dict[str, Any]] = [
    {"name": "alice", "password_hash": ALICE_HASH, "groups": ["astro"]},
    {"name": "bob", "password_hash": BOB_HASH},
    {"name": "root", "password_hash": ROOT_HASH, "groups": ["site-admins"]},
]
ISSUER = {"name": "egi", "issuer": "https://aai.example.invalid/egi", "audience": ["ebroker"]}


def basic(name: str | bytes, password: str | bytes) -> str:
    raw = (name if isinstance(name, bytes) else name.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


def as_header(name: str, password: str) -> dict[str, str]:
    return {"Authorization": basic(name, password)}


def auth_config(**overrides: Any) -> AuthConfig:
    data: dict[str, Any] = {"anonymous": False, "basic": {"users": USERS}, **overrides}
    return AuthConfig.model_validate(data)


def refused(auth: Authenticator, header: str | None) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(header)
    return info.value


# --- configuration ------------------------------------------------------------------------------


def node_config(auth: dict[str, Any]) -> Any:
    return parse_config({**POOL_CONFIG, "auth": auth})


def test_a_plaintext_password_key_is_refused_naming_it() -> None:
    users = [{"name": "alice", "password": "alice-secret", "groups": []}]
    with pytest.raises(ConfigError) as info:
        node_config({"basic": {"users": users}})
    message = str(info.value)
    assert "auth.basic.users.0" in message and "'password'" in message
    assert "hash-password" in message
    assert "alice-secret" not in message


@pytest.mark.parametrize(
    "value", ["alice-secret", "$argon2id$nonsense", "$2b$12$short", "{bcrypt}$2b$12$abc", ""]
)
def test_a_password_hash_that_is_no_hash_is_refused_without_repeating_it(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        node_config({"basic": {"users": [{"name": "alice", "password_hash": value}]}})
    message = str(info.value)
    assert "auth.basic.users.0.password_hash" in message
    assert "plaintext" in message
    if value:
        assert value not in message


def test_config_shape_and_checks() -> None:
    config = node_config({"anonymous": False, "basic": {"realm": "calycopis", "users": USERS}})
    assert config.auth.basic.realm == "calycopis"
    assert [u.name for u in config.auth.basic.users] == ["alice", "bob", "root"]
    assert config.auth.basic.users[1].groups == []
    with pytest.raises(ConfigError, match="Basic user names must be unique"):
        node_config({"basic": {"users": [USERS[0], USERS[0]]}})
    with pytest.raises(ConfigError, match=r"auth\.basic\.users\.0\.name"):
        node_config({"basic": {"users": [{**USERS[0], "name": "al:ice"}]}})
    with pytest.raises(ConfigError, match="issuer name 'basic' is taken"):
        node_config({"basic": {"users": USERS}, "issuers": [{**ISSUER, "name": "basic"}]})
    with pytest.raises(ConfigError, match=r"auth\.basic\.realm"):
        node_config({"basic": {"realm": 'a"b', "users": USERS}})
    with pytest.raises(ConfigError, match="no issuers or Basic users"):
        node_config({"anonymous": False, "basic": {"users": []}})


def test_check_config_accepts_basic_users(tmp_path, capsys) -> None:
    import yaml

    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({**POOL_CONFIG, "auth": {"basic": {"users": USERS}}}))
    assert cli.main(["check-config", "-c", str(path)]) == 0
    plaintext = [{"name": "a", "password": "x"}]
    path.write_text(yaml.safe_dump({"auth": {"basic": {"users": plaintext}}}))
    assert cli.main(["check-config", "-c", str(path)]) == 2
    assert "auth.basic.users.0" in capsys.readouterr().err


# --- the verifier ---------------------------------------------------------------------------------


def test_argon2_and_bcrypt_users_get_their_identity() -> None:
    auth = Authenticator(auth_config())
    alice = auth.authenticate(basic("alice", ALICE_PW))
    assert (alice.subject, alice.issuer, alice.owner) == ("alice", "basic", "basic:alice")
    assert alice.groups == frozenset({"astro"}) and not alice.anonymous
    bob = auth.authenticate(basic("bob", BOB_PW))  # bcrypt, and a non-ASCII password
    assert bob.owner == "basic:bob" and bob.groups == frozenset()
    assert auth.authenticate("basic   " + basic("root", ROOT_PW)[6:] + " ").owner == "basic:root"


def test_wrong_password_and_unknown_user_are_one_and_the_same_refusal() -> None:
    auth = Authenticator(auth_config())
    wrong = refused(auth, basic("alice", "guess"))
    unknown = refused(auth, basic("mallory", "guess"))
    assert wrong.detail == unknown.detail == "wrong user name or password"
    assert wrong.error is None  # not about a bearer token
    assert refused(auth, basic("Alice", ALICE_PW)).detail == wrong.detail  # names are exact
    assert refused(auth, basic("alice", ALICE_PW + "x")).detail == wrong.detail
    assert refused(auth, basic("alice", "")).detail == wrong.detail


def test_an_unknown_user_is_verified_against_a_dummy_hash_like_the_first_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = Authenticator(auth_config())
    seen: list[str] = []
    real = basic_module._verify

    def spy(password_hash: str, password: bytes) -> bool:
        seen.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(basic_module, "_verify", spy)
    refused(auth, basic("mallory", "guess"))
    (dummy,) = seen
    assert dummy not in (ALICE_HASH, BOB_HASH, ROOT_HASH)
    # the same algorithm and cost as alice's (the first user's) hash: the same time
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(ALICE_HASH)
    bcrypt_first = Authenticator(auth_config(basic={"users": [USERS[1], USERS[0]]}))
    assert bcrypt_first.basic is not None
    assert bcrypt_first.basic._dummy.startswith("$2b$04$")


def test_unknown_users_take_as_long_as_known_ones() -> None:
    auth = Authenticator(auth_config())

    def timed(header: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with pytest.raises(Unauthenticated):
                auth.authenticate(header)
            best = min(best, time.perf_counter() - start)
        return best

    known, unknown = timed(basic("alice", "guess")), timed(basic("mallory", "guess"))
    assert 0.5 < unknown / known < 2, (known, unknown)


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U",  # base64 without its padding
        "Basic " + base64.b64encode(b"alice-without-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:" + ALICE_PW.encode()).decode(),
        "Basic " + "A" * 10_000,
        "Basic YWxp Y2U6eA==",
    ],
)
def test_malformed_basic_credentials(header: str) -> None:
    error = refused(Authenticator(auth_config()), header)
    assert error.detail.startswith(("malformed Basic credentials", "wrong user name")), error
    assert len(error.detail) < 120


def test_a_long_password_never_matches_a_bcrypt_hash() -> None:
    long_pw = "x" * 80
    config = auth_config(basic={"users": [{"name": "bob", "password_hash": bcrypt.hashpw(
        long_pw[:72].encode(), bcrypt.gensalt(4)).decode()}]})  # fmt: skip
    auth = Authenticator(config)
    assert auth.authenticate(basic("bob", long_pw[:72])).owner == "basic:bob"
    assert refused(auth, basic("bob", long_pw)).detail == "wrong user name or password"


def test_no_header_asks_for_what_the_node_accepts() -> None:
    assert "Basic credentials" in refused(Authenticator(auth_config()), None).detail
    both = Authenticator(auth_config(issuers=[ISSUER]))
    detail = refused(both, None).detail
    assert "bearer token" in detail and "Basic credentials" in detail
    assert Authenticator(auth_config(anonymous=True)).authenticate(None).anonymous


def test_other_schemes_and_bearer_on_a_node_without_issuers() -> None:
    auth = Authenticator(auth_config())
    assert "'Basic <credentials>'" in refused(auth, "Digest abc").detail
    bearer = refused(auth, "Bearer eyJ.abc.def")
    assert "accepts no bearer tokens" in bearer.detail and "Basic" in bearer.detail
    both = Authenticator(auth_config(issuers=[ISSUER]))
    assert "'Bearer <token>' or 'Basic <credentials>'" in refused(both, "Digest abc").detail


# --- the cache ----------------------------------------------------------------------------------


def users(count: int = 2) -> AuthConfig:
    made = [{"name": f"u{i}", "password_hash": _FAST.hash(f"pw{i}")} for i in range(count)]
    return AuthConfig.model_validate({"basic": {"users": made}})


def test_a_right_password_is_verified_once_then_cached() -> None:
    auth = Authenticator(users())
    assert auth.basic is not None
    for _ in range(5):
        assert auth.authenticate(basic("u0", "pw0")).owner == "basic:u0"
    assert auth.basic.verifications == 1
    assert auth.cached(basic("u0", "pw0")) is not None
    assert auth.cached(basic("u0", "pw1")) is None
    assert auth.cached("Bearer " + basic("u0", "pw0")[6:]) is None


def test_the_cache_never_lets_a_wrong_password_through_after_a_right_one() -> None:
    auth = Authenticator(users())
    assert auth.basic is not None
    assert auth.authenticate(basic("u0", "pw0")).owner == "basic:u0"
    for wrong in ("pw1", "pw0 ", "pw", "PW0", ""):
        assert refused(auth, basic("u0", wrong)).detail == "wrong user name or password"
    assert refused(auth, basic("u1", "pw0")).detail == "wrong user name or password"
    assert auth.basic.verifications == 7  # every wrong one was verified, none cached


def test_cached_verifications_expire() -> None:
    auth = Authenticator(users(), basic_cache_ttl=0.05)
    assert auth.basic is not None
    auth.authenticate(basic("u0", "pw0"))
    time.sleep(0.1)
    assert auth.cached(basic("u0", "pw0")) is None
    auth.authenticate(basic("u0", "pw0"))
    assert auth.basic.verifications == 2


def test_the_cache_is_bounded_and_failures_are_not_kept() -> None:
    config = users(5)
    assert config.basic is not None
    bounded = basic_module.BasicUsers(config.basic, cache_size=3)
    for i in range(5):
        bounded.authenticate(basic(f"u{i}", f"pw{i}")[6:])
    assert len(bounded._cache) == 3
    assert bounded.cached(basic("u0", "pw0")[6:]) is None  # the least recent went first
    assert bounded.cached(basic("u4", "pw4")[6:]) is not None
    for i in range(200):
        with pytest.raises(Unauthenticated):
            bounded.authenticate(basic(f"u{i % 5}", f"wrong{i}")[6:])
    assert len(bounded._cache) == 3


def test_the_cache_keeps_no_password_nor_a_plain_digest_of_it() -> None:
    import hashlib

    auth = Authenticator(users())
    assert auth.basic is not None
    header = basic("u0", "pw0")
    auth.authenticate(header)
    (key,) = auth.basic._cache
    encoded = header[6:].encode()
    assert b"pw0" not in key and key != hashlib.sha256(encoded).digest()


def test_concurrent_verifications_are_right_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    real, lock = basic_module._verify, threading.Lock()
    running, most = 0, 0

    def counting(password_hash: str, password: bytes) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.01)
            return real(password_hash, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(basic_module, "_verify", counting)
    auth = Authenticator(users(4), basic_cache_ttl=0)

    def attempt(i: int) -> str:
        try:
            return auth.authenticate(basic(f"u{i % 4}", f"pw{i % 4}" if i % 3 else "bad")).owner
        except Unauthenticated:
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(64)))
    assert results == [f"basic:u{i % 4}" if i % 3 else "refused" for i in range(64)]
    assert 1 < most <= max(2, os.cpu_count() or 1)


# --- hash-password --------------------------------------------------------------------------------


def test_hash_password_from_stdin_makes_a_hash_the_node_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pässword\n"))
    assert cli.main(["hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$")
    config = AuthConfig.model_validate(
        {"anonymous": False, "basic": {"users": [{"name": "carol", "password_hash": printed}]}}
    )
    auth = Authenticator(config)
    assert auth.authenticate(basic("carol", "s3cret pässword")).owner == "basic:carol"
    assert refused(auth, basic("carol", "s3cret pässword\n")).detail.startswith("wrong")


def test_hash_password_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["hash-password"]) == 2
    assert "empty" in capsys.readouterr().err


# --- the node, through its HTTP API ---------------------------------------------------------------


SITE_RULES = {
    "access": [{"name": "astronomers", "groups": ["astro"], "pools": ["sim/main"]}],
    "unmatched": "deny",
}


@pytest.fixture
def node(
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    sqlite_url: str,
) -> Callable[..., tuple[Broker, TestClient]]:
    def make(auth: dict[str, Any], policies: list[dict[str, Any]] | None = None) -> Any:
        broker = broker_factory(sqlite_url, auth=auth, policies=policies or [])
        return broker, client_factory(broker)

    return make


BASIC_NODE = {"anonymous": False, "admin_groups": ["site-admins"], "basic": {"users": USERS}}


def ask(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    r = client.post("/requests", json=request_doc(), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_basic_users_get_offers_and_own_their_sessions(node) -> None:
    broker, client = node(BASIC_NODE)
    alice, bob, root = as_header("alice", ALICE_PW), as_header("bob", BOB_PW), as_header(
        "root", ROOT_PW)  # fmt: skip
    answer = ask(client, alice)
    assert answer["result"] == "YES"
    uuid, offerset = answer["offers"][0]["meta"]["uuid"], answer["meta"]["uuid"]
    assert ask(client, bob)["result"] == "YES"  # bcrypt user
    for path in (f"/sessions/{uuid}", f"/offersets/{offerset}", f"/sessions/{uuid}/logs"):
        r = client.get(path, headers=bob)
        assert r.status_code == 404, (path, r.text)  # the owner-only rule: nothing of it shows
        assert "alice" not in r.text
        assert client.get(path, headers=alice).status_code == 200, path
        assert client.get(path, headers=root).status_code == 200, path  # an admin group
    assert client.post(f"/sessions/{uuid}", json=ACCEPT, headers=bob).status_code == 404
    r = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=alice)
    assert r.status_code == 200 and r.json()["phase"] in ("ACCEPTED", "WAITING"), r.text
    usage = client.get("/usage", headers=alice)
    assert usage.status_code == 200 and usage.json()["identity"]["owner"] == "basic:alice"
    # the HTTP layer serves repeated requests from the cache: alice was verified once
    assert broker.authenticator is not None and broker.authenticator.basic is not None
    before = broker.authenticator.basic.verifications
    ask(client, alice)
    assert broker.authenticator.basic.verifications == before


def refusal(r: Any) -> str:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 401
    return str(r.json()["detail"])


def test_bad_credentials_are_a_401_with_the_basic_challenge(node) -> None:
    _, client = node({**BASIC_NODE, "basic": {"realm": "calycopis", "users": USERS}})
    headers = [
        as_header("alice", "guess"),
        as_header("mallory", ALICE_PW),
        {"Authorization": "Basic"},
        {"Authorization": "Basic %%%"},
        {"Authorization": "Basic " + base64.b64encode(b"alice").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xffalice:x").decode()},
        {"Authorization": "Digest username=alice"},
        {},
    ]
    for h in headers:
        r = client.post("/requests", json=request_doc(), headers=h)
        refusal(r)
        assert r.headers["www-authenticate"] == 'Basic realm="calycopis", charset="UTF-8"', h
    r = client.post("/requests", json=request_doc(), headers=as_header("alice", "guess"))
    assert refusal(r) == "wrong user name or password"
    r = client.post("/requests", json=request_doc(), headers={
        "Authorization": b"Basic " + base64.b64encode(b"alice:\xff\xfe")})  # fmt: skip
    assert refusal(r) == "wrong user name or password"


def test_with_issuers_too_both_challenges_are_sent(node) -> None:
    _, client = node({**BASIC_NODE, "issuers": [ISSUER]})
    r = client.post("/requests", json=request_doc(), headers=as_header("alice", "guess"))
    refusal(r)
    challenges = r.headers.get_list("www-authenticate")
    assert challenges == ['Bearer realm="ebroker"', 'Basic realm="ebroker", charset="UTF-8"']
    r = client.post("/requests", json=request_doc(), headers={"Authorization": "Bearer x.y.z"})
    refusal(r)
    bearer, basic_challenge = r.headers.get_list("www-authenticate")
    assert bearer.startswith("Bearer") and 'error="invalid_token"' in bearer
    assert basic_challenge.startswith("Basic")
    assert ask(client, as_header("alice", ALICE_PW))["result"] == "YES"


def test_a_node_without_basic_users_refuses_basic_with_a_clear_message(node) -> None:
    _, client = node({"anonymous": True})
    r = client.post("/requests", json=request_doc(), headers=as_header("alice", ALICE_PW))
    detail = refusal(r)
    assert "accepts no Basic credentials" in detail and "anonymous calls" in detail
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert ask(client, {})["result"] == "YES"  # anonymous still works

    _, client = node({"anonymous": False, "issuers": [ISSUER]})
    r = client.post("/requests", json=request_doc(), headers=as_header("alice", ALICE_PW))
    detail = refusal(r)
    assert "accepts no Basic credentials" in detail and "bearer tokens from issuer egi" in detail
    assert "anonymous" not in detail
    (challenge,) = r.headers.get_list("www-authenticate")
    assert challenge.startswith('Bearer realm="ebroker", error="invalid_request"')


def test_groups_reach_the_policies(node) -> None:
    policies = [{"name": "site-rules", "type": "local-rules", "options": SITE_RULES}]
    _, client = node(BASIC_NODE, policies)
    assert ask(client, as_header("alice", ALICE_PW))["result"] == "YES"  # astro
    refused_answer = ask(client, as_header("bob", BOB_PW))  # in no group
    assert refused_answer["result"] == "NO"
    messages = " | ".join(m["message"] for m in refused_answer["meta"]["messages"])
    assert "site-rules" in messages and "basic:bob" in messages


def test_a_plaintext_password_stops_the_node_at_start_up(tmp_path) -> None:
    import yaml

    path = tmp_path / "node.yaml"
    users = [{"name": "alice", "password": "alice-secret"}]
    path.write_text(yaml.safe_dump({"auth": {"basic": {"users": users}}}))
    with pytest.raises(ConfigError) as info:
        from broker_core.config import load_config

        load_config(path)
    assert "auth.basic.users.0" in str(info.value) and "'password'" in str(info.value)
