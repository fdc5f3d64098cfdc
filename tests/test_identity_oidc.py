"""The OIDC bearer-token verifier against a real issuer served over HTTP (tests.oidc_issuer)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from broker_core.auth import Authenticator
from broker_core.config import AuthConfig, ConfigError
from broker_core.errors import IdentityUnavailable, Unauthenticated
from broker_core.identity import ANONYMOUS_IDENTITY
from tests.oidc_issuer import OidcIssuer, public_jwk, rsa_key


@pytest.fixture(scope="module")
def shared_issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture
def issuer(shared_issuer: OidcIssuer) -> OidcIssuer:
    """One issuer for the module (making keys is slow); every test builds its own
    Authenticator, so no cached keys carry over, only the issuer's own keys."""
    shared_issuer.reset()
    return shared_issuer


def make_auth(oidc: OidcIssuer, *, anonymous: bool = False, refetch_interval: float = 10.0,
              retry_interval: float = 5.0, **overrides: Any) -> Authenticator:  # fmt: skip
    """An authenticator trusting ``oidc`` (as issuer 'test'); overrides go to its config."""
    config = AuthConfig.model_validate(oidc.auth_config(anonymous=anonymous, **overrides))
    return Authenticator(config, refetch_interval=refetch_interval, retry_interval=retry_interval)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built without PyJWT (which refuses to make some of these forgeries)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b""
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_of(issuer: OidcIssuer, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.url, "sub": "mallory", "aud": "ebroker", "iat": now, "exp": now + 300,
            "groups": ["admins"], **extra}  # fmt: skip


def refused(auth: Authenticator, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(bearer(token))
    return info.value


# --- valid tokens


def test_valid_token_gives_identity(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, name="egi")
    found = auth.authenticate(bearer(issuer.token(sub="alice", groups=["federation", "ops"])))
    assert found.subject == "alice"
    assert found.groups == frozenset({"federation", "ops"})
    assert found.issuer == "egi"
    assert found.owner == "egi:alice"
    assert not found.anonymous
    assert found.claims["sub"] == "alice" and found.claims["iss"] == issuer.url


def test_es256_token_and_audience_list(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, audience=["other", "ebroker"])
    token = issuer.token(sub="bob", alg="ES256", aud=["ebroker", "somewhere-else"])
    assert auth.authenticate(bearer(token)).subject == "bob"


def test_scheme_is_case_insensitive(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    assert auth.authenticate(f"bearer  {issuer.token()} ").subject == "alice"


@pytest.mark.parametrize(
    ("groups_claim", "claims", "expected"),
    [
        ("realm_access.roles", {"realm_access": {"roles": ["a", 3, None, "b"]}}, {"a", "b"}),
        ("realm_access.roles", {"realm_access": {"roles": "solo"}}, {"solo"}),
        ("realm_access.roles", {"realm_access": "not-an-object"}, set()),
        ("realm_access.roles", {}, set()),
        ("groups", {"groups": {"not": "a list"}}, set()),
        ("https://ebroker.example/groups", {"https://ebroker.example/groups": ["x"]}, {"x"}),
    ],
)
def test_groups_claim(issuer: OidcIssuer, groups_claim: str, claims: dict[str, Any],
                      expected: set[str]) -> None:  # fmt: skip
    auth = make_auth(issuer, groups_claim=groups_claim)
    token = issuer.token(**{"groups": None, **claims})
    assert auth.authenticate(bearer(token)).groups == frozenset(expected)


def test_no_groups_claim_means_no_groups(issuer: OidcIssuer) -> None:
    found = make_auth(issuer).authenticate(bearer(issuer.token(groups=None)))
    assert found.groups == frozenset()


def test_clock_leeway(issuer: OidcIssuer) -> None:
    lenient = make_auth(issuer, leeway="PT30S")
    assert lenient.authenticate(bearer(issuer.token(expires_in=-10))).subject == "alice"
    future = int(time.time()) + 10
    assert lenient.authenticate(bearer(issuer.token(nbf=future, iat=future))).subject == "alice"
    assert refused(lenient, issuer.token(expires_in=-60)).detail == "token expired"
    strict = make_auth(issuer, leeway="PT0S")
    assert refused(strict, issuer.token(expires_in=-10)).detail == "token expired"
    assert refused(strict, issuer.token(nbf=future)).detail == "token not yet valid"


# --- anonymous callers and the header


def test_no_header_anonymous_on(issuer: OidcIssuer) -> None:
    assert make_auth(issuer, anonymous=True).authenticate(None) is ANONYMOUS_IDENTITY


def test_no_header_anonymous_off(issuer: OidcIssuer) -> None:
    with pytest.raises(Unauthenticated) as info:
        make_auth(issuer).authenticate(None)
    assert info.value.error is None  # RFC 6750: no error code when no token was sent
    assert "bearer token" in info.value.detail
    assert issuer.jwks_fetches == 0


def test_bad_token_refused_even_when_anonymous_is_on(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, anonymous=True)
    assert refused(auth, issuer.token(expires_in=-3600)).detail == "token expired"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer ", "Bearer a b", "",
                                    "Token abc", "Bearerabc"])  # fmt: skip
def test_malformed_header(issuer: OidcIssuer, header: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        make_auth(issuer, anonymous=True).authenticate(header)
    assert info.value.error == "invalid_request"


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "....", "e30.e30.", "W10.e30.", "e30.W10.", "eyJhbGciOiJSUzI1NiJ9.bnVsbA.",
     "e30." + "W" * 3000 + ".", "x" * 20_000, "é.é.é"],
)  # fmt: skip
def test_garbage_token(issuer: OidcIssuer, token: str) -> None:
    error = refused(make_auth(issuer), token)
    assert error.error == "invalid_token"
    assert len(error.detail) < 100
    assert issuer.jwks_fetches == 0


def test_mutated_tokens_only_ever_unauthenticated(issuer: OidcIssuer) -> None:
    """No corruption of a valid token escapes as anything but a 401 (or is accepted)."""
    auth = make_auth(issuer)
    token = issuer.token()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    rng = random.Random(42)
    for _ in range(300):
        chars = list(token)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        mutated = "".join(chars)
        with contextlib.suppress(Unauthenticated):
            auth.authenticate(bearer(mutated))
    assert issuer.jwks_fetches <= 2  # the real kid, and at most one refetch for mangled ones


# --- refused tokens


def test_expired(issuer: OidcIssuer) -> None:
    error = refused(make_auth(issuer), issuer.token(expires_in=-3600))
    assert (error.detail, error.error) == ("token expired", "invalid_token")


def test_not_yet_valid(issuer: OidcIssuer) -> None:
    token = issuer.token(nbf=int(time.time()) + 3600)
    assert refused(make_auth(issuer), token).detail == "token not yet valid"


def test_forged_signature_same_kid(issuer: OidcIssuer) -> None:
    token = issuer.token(key=rsa_key(), kid=issuer.rsa_kid)
    assert refused(make_auth(issuer), token).detail == "signature verification failed"


def test_tampered_payload(issuer: OidcIssuer) -> None:
    header, _, signature = issuer.token(sub="alice").split(".")
    payload = b64(json.dumps(claims_of(issuer, sub="root")).encode())
    forged = f"{header}.{payload}.{signature}"
    assert refused(make_auth(issuer), forged).detail == "signature verification failed"


def test_wrong_audience(issuer: OidcIssuer) -> None:
    error = refused(make_auth(issuer), issuer.token(aud="another-service"))
    assert error.detail == "token audience not accepted"


def test_unknown_issuer_named_and_truncated(issuer: OidcIssuer) -> None:
    token = issuer.token(iss="https://evil.example/" + "x" * 1000)
    error = refused(make_auth(issuer), token)
    assert "evil.example" in error.detail
    assert len(error.detail) < 200
    assert issuer.jwks_fetches == 0 and issuer.discovery_fetches == 0


def test_no_issuer(issuer: OidcIssuer) -> None:
    assert "'iss'" in refused(make_auth(issuer), issuer.token(iss=None)).detail


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(issuer: OidcIssuer, alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT", "kid": issuer.rsa_kid}, claims_of(issuer), None)
    assert "algorithm" in refused(make_auth(issuer), token).detail
    assert issuer.jwks_fetches == 0  # refused before any key is looked up


def test_hs256_signed_with_public_key(issuer: OidcIssuer) -> None:
    """The classic algorithm confusion: the RSA public key PEM used as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.rsa_kid}
    token = hand_made(header, claims_of(issuer), issuer.public_pem)
    assert "algorithm" in refused(make_auth(issuer), token).detail
    # and without a kid (which an issuer with a single key would otherwise resolve)
    token = hand_made({"alg": "HS256"}, claims_of(issuer), issuer.public_pem)
    assert "algorithm" in refused(make_auth(issuer), token).detail


def test_alg_must_match_the_key(issuer: OidcIssuer) -> None:
    """An RS256 header naming the EC key's kid: the key decides the algorithm, not the token."""
    token = issuer.token(alg="RS256", kid=issuer.ec_kid)
    assert refused(make_auth(issuer), token).detail == "token algorithm not accepted"


def test_algorithm_not_configured(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, algorithms=["ES256"])
    assert "algorithm" in refused(auth, issuer.token(alg="RS256")).detail
    assert auth.authenticate(bearer(issuer.token(alg="ES256"))).subject == "alice"


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"sub": None}, "token lacks the 'sub' claim"),
        ({"aud": None}, "token lacks the 'aud' claim"),
        ({"sub": 42}, "token subject ('sub') is not a string"),
        ({"sub": ""}, "token subject ('sub') is empty"),
        (
            {"iat": "yesterday"},
            "token issue time ('iat') is not a NumericDate (a number of seconds)",
        ),
    ],
)
def test_bad_claims(issuer: OidcIssuer, claims: dict[str, Any], detail: str) -> None:
    assert refused(make_auth(issuer), issuer.token(**claims)).detail == detail


def test_missing_exp(issuer: OidcIssuer) -> None:
    claims = claims_of(issuer)
    del claims["exp"]
    token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": issuer.rsa_kid})
    assert refused(make_auth(issuer), token).detail == "token lacks the 'exp' claim"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", lambda now: str(now + 300)),  # PyJWT's int() reads this as a time
        ("exp", lambda now: True),
        ("exp", lambda now: float("inf")),
        ("exp", lambda now: [now + 300]),
        ("nbf", lambda now: str(now - 10)),
        ("iat", lambda now: str(now)),
        ("iat", lambda now: None),  # JSON null
    ],
)
def test_time_claims_must_be_numeric_dates(issuer: OidcIssuer, claim: str, value: Any) -> None:
    """``exp``, ``nbf`` and ``iat`` are NumericDates (RFC 7519): JSON numbers, nothing else, in
    a token that is otherwise valid and properly signed."""
    claims = claims_of(issuer)
    claims[claim] = value(int(time.time()))
    token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": issuer.rsa_kid})
    assert refused(make_auth(issuer), token).detail.startswith(f"token {_WORDS[claim]} ('{claim}')")


_WORDS = {"exp": "expiry", "nbf": "start of validity", "iat": "issue time"}


def test_fractional_numeric_dates_are_accepted(issuer: OidcIssuer) -> None:
    now = time.time()
    claims = claims_of(issuer, iat=now, nbf=now - 1.5, exp=now + 300.25)
    token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": issuer.rsa_kid})
    assert make_auth(issuer).authenticate(bearer(token)).subject == "mallory"


def test_token_of_another_issuer_with_its_kid(issuer: OidcIssuer) -> None:
    """Issuers are isolated: a token claiming one issuer but signed by another is refused."""
    with OidcIssuer() as other:
        config = AuthConfig(
            anonymous=False, issuers=[issuer.issuer_config("one"), other.issuer_config("two")]
        )
        auth = Authenticator(config)
        assert auth.authenticate(bearer(other.token(sub="bob"))).owner == "two:bob"
        assert auth.authenticate(bearer(issuer.token(sub="bob"))).owner == "one:bob"
        forged = other.token(iss=issuer.url)  # other's key and kid, claiming the first issuer
        assert "kid" in refused(auth, forged).detail


def test_kid_absent(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    assert "several" in refused(auth, issuer.token(with_kid=False)).detail
    # an issuer with a single key: a token without kid uses it
    issuer.jwks_body = json.dumps({"keys": [public_jwk(issuer.rsa_key, "only")]}).encode()
    single = make_auth(issuer)
    assert single.authenticate(bearer(issuer.token(with_kid=False))).subject == "alice"


def test_kid_not_a_string(issuer: OidcIssuer) -> None:
    token = hand_made({"alg": "RS256", "kid": 12345}, claims_of(issuer), b"whatever")
    refused(make_auth(issuer), token)  # PyJWT already calls it malformed
    assert issuer.jwks_fetches == 0


def test_bad_jwks_uri_is_a_config_error(issuer: OidcIssuer) -> None:
    with pytest.raises(ConfigError, match="jwks_uri"):
        make_auth(issuer, jwks_uri="file:///etc/passwd")


# --- keys: discovery, caching, rotation, rate limits


def test_discovery_fetched_once(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)  # no jwks_uri: OIDC discovery
    for sub in ("a", "b", "c"):
        assert auth.authenticate(bearer(issuer.token(sub=sub))).subject == sub
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


def test_configured_jwks_uri_skips_discovery(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, jwks_uri=issuer.jwks_uri)
    assert auth.authenticate(bearer(issuer.token())).subject == "alice"
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (0, 1)


def test_discovery_naming_another_issuer(issuer: OidcIssuer) -> None:
    # the configured issuer differs from the one the discovery document names
    auth = make_auth(issuer, issuer=issuer.url + "/")
    with pytest.raises(IdentityUnavailable, match="'test'"):
        auth.authenticate(bearer(issuer.token(iss=issuer.url + "/")))
    assert issuer.jwks_fetches == 0


def test_keys_cached(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    for i in range(50):
        alg = "ES256" if i % 2 else "RS256"
        assert auth.authenticate(bearer(issuer.token(sub=f"u{i}", alg=alg))).subject == f"u{i}"
    assert issuer.jwks_fetches == 1


def test_key_rotation_one_refetch(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    old_token = issuer.token(sub="before")
    assert auth.authenticate(bearer(old_token)).subject == "before"
    issuer.rotate()
    assert auth.authenticate(bearer(issuer.token(sub="after"))).subject == "after"
    assert issuer.jwks_fetches == 2
    assert auth.authenticate(bearer(issuer.token(sub="again"))).subject == "again"
    assert issuer.jwks_fetches == 2
    assert "kid" in refused(auth, old_token).detail  # the old key left the JWKS
    assert issuer.jwks_fetches == 2  # and asking again within the interval is not allowed


def test_unknown_kids_cannot_flood_the_issuer(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    auth.authenticate(bearer(issuer.token()))
    forger = rsa_key()
    for i in range(100):
        token = issuer.token(key=forger, kid=f"forged-{i}")
        assert "kid" in refused(auth, token).detail
    assert issuer.jwks_fetches <= 2  # the first fetch and one refetch per 10 s
    assert auth.authenticate(bearer(issuer.token())).subject == "alice"


def test_unknown_kid_refetch_allowed_again_after_interval(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, refetch_interval=0.2)
    auth.authenticate(bearer(issuer.token()))
    refused(auth, issuer.token(kid="nope-1"))
    refused(auth, issuer.token(kid="nope-2"))
    assert issuer.jwks_fetches == 2
    time.sleep(0.25)
    issuer.rotate()
    assert auth.authenticate(bearer(issuer.token(sub="rotated"))).subject == "rotated"
    assert issuer.jwks_fetches == 3


def test_cache_expiry_refetches(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, jwks_cache="PT0.2S")
    auth.authenticate(bearer(issuer.token()))
    time.sleep(0.25)
    auth.authenticate(bearer(issuer.token()))
    assert issuer.jwks_fetches == 2


# --- an issuer that fails


def test_issuer_down_at_first_use(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, jwks_uri=issuer.jwks_uri, retry_interval=0.2)
    issuer.down = True
    with pytest.raises(IdentityUnavailable, match="'test'"):
        auth.authenticate(bearer(issuer.token()))
    with pytest.raises(IdentityUnavailable):  # within the retry interval: not asked again
        auth.authenticate(bearer(issuer.token()))
    assert issuer.jwks_fetches == 1
    issuer.down = False
    time.sleep(0.25)
    assert auth.authenticate(bearer(issuer.token())).subject == "alice"


def test_discovery_down_at_first_use(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, retry_interval=0.2)
    issuer.down = True
    with pytest.raises(IdentityUnavailable, match="discovery"):
        auth.authenticate(bearer(issuer.token()))
    issuer.down = False
    time.sleep(0.25)
    assert auth.authenticate(bearer(issuer.token())).subject == "alice"


def test_outage_after_keys_cached(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, jwks_cache="PT0.2S")
    auth.authenticate(bearer(issuer.token()))
    issuer.down = True
    assert auth.authenticate(bearer(issuer.token(sub="cached"))).subject == "cached"
    time.sleep(0.25)  # past the cache lifespan: the refresh fails, the known key still works
    assert auth.authenticate(bearer(issuer.token(sub="stale"))).subject == "stale"
    assert auth.authenticate(bearer(issuer.token(sub="stale", alg="ES256"))).subject == "stale"
    assert issuer.jwks_fetches == 2  # one failed refresh, then the retry interval holds
    with pytest.raises(IdentityUnavailable):  # a key we do not know cannot be checked
        auth.authenticate(bearer(issuer.token(kid="new-key")))
    assert "signature" in refused(auth, issuer.token(key=rsa_key())).detail


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"keys": []}', b'{"keys": [{"kty": "nonsense"}]}']
)
def test_broken_jwks(issuer: OidcIssuer, body: bytes) -> None:
    issuer.jwks_body = body
    with pytest.raises(IdentityUnavailable, match="'test'"):
        make_auth(issuer).authenticate(bearer(issuer.token()))


def test_issuer_unreachable() -> None:
    with OidcIssuer() as issuer:
        auth = make_auth(issuer, jwks_uri=issuer.jwks_uri)
        token = issuer.token()
    # stopped: connection refused
    with pytest.raises(IdentityUnavailable, match="'test'"):
        auth.authenticate(bearer(token))


def test_issuer_too_slow(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer, jwks_uri=issuer.jwks_uri, timeout="PT0.2S")
    issuer.delay = 1.0
    started = time.monotonic()
    with pytest.raises(IdentityUnavailable):
        auth.authenticate(bearer(issuer.token()))
    assert time.monotonic() - started < 0.9


# --- many threads


def run_threads(count: int, work: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return errors


def test_concurrent_authenticate(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)  # cold: discovery and keys are fetched while 16 threads ask
    tokens = {(i, j): issuer.token(sub=f"t{i}-{j}", alg="ES256" if j % 2 else "RS256")
              for i in range(16) for j in range(10)}  # fmt: skip

    def work(i: int) -> None:
        for j in range(10):
            found = auth.authenticate(bearer(tokens[i, j]))
            assert found.owner == f"test:t{i}-{j}"
            assert found.groups == frozenset({"federation"})

    assert run_threads(16, work) == []
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


def test_concurrent_unknown_kids(issuer: OidcIssuer) -> None:
    auth = make_auth(issuer)
    forger = rsa_key()
    forged = [issuer.token(key=forger, kid=f"forged-{i}") for i in range(16)]
    good = issuer.token()

    def work(i: int) -> None:
        for _ in range(5):
            with pytest.raises(Unauthenticated):
                auth.authenticate(bearer(forged[i]))
            assert auth.authenticate(bearer(good)).subject == "alice"

    assert run_threads(16, work) == []
    assert issuer.jwks_fetches <= 2
