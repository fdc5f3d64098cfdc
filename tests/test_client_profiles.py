"""Where the client finds its broker and token (client/profiles.py), and its device-code login
(client/oidc.py, the ``login``/``logout`` commands) against the tests' real OIDC issuer
(tests/oidc_issuer.py), the test playing the user who enters the code. No broker."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from client import oidc, profiles
from client.app import app
from tests.oidc_issuer import OidcIssuer

PROFILES = """\
default: east
profiles:
  east: {url: "http://east.example:8080/", token_file: "%s"}
  west: {url: "http://west.example", issuer: "%s", client_id: eb-test}
"""



@pytest.fixture
def home(tmp_path: Path, issuer: OidcIssuer) -> dict[str, str]:
    """An environment whose config home is the test's: a profile file, a token file."""
    (tmp_path / "east.token").write_text("east-token\nignored second line\n")
    config = tmp_path / "ebroker"
    config.mkdir()
    (config / "client.yaml").write_text(PROFILES % (tmp_path / "east.token", issuer.url))
    issuer.reset()
    return {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("flags", "env", "url", "token", "source"),
    [
        ({}, {}, "http://east.example:8080", "east-token", "the profile's token_file"),
        ({"url": "http://flag:1"}, {"EBROKER_URL": "http://env:2"}, "http://flag:1", "east-token",
         "the profile's"),
        ({}, {"EBROKER_URL": "http://env:2"}, "http://env:2", "east-token", "the profile's"),
        ({"token": "flag-token"}, {"EBROKER_TOKEN": "env-token"}, "http://east.example:8080",
         "flag-token", "--token"),
        ({}, {"EBROKER_TOKEN": "env-token"}, "http://east.example:8080", "env-token",
         "EBROKER_TOKEN"),
        ({"profile": "west"}, {}, "http://west.example", None, "none"),
        ({}, {"EBROKER_PROFILE": "west"}, "http://west.example", None, "none"),
    ],
)  # fmt: skip
def test_what_wins(home, flags, env, url, token, source) -> None:
    target = profiles.resolve({**home, **env}, **flags)
    assert target.url == url
    assert (target.token.reveal() if target.token else None) == token
    assert target.token_source.startswith(source)


def test_no_profile_file_is_the_local_node(tmp_path: Path) -> None:
    target = profiles.resolve({"XDG_CONFIG_HOME": str(tmp_path)})
    assert (target.url, target.token, target.profile) == (profiles.DEFAULT_URL, None, "default")


def test_token_files(home, tmp_path: Path) -> None:
    other = tmp_path / "other.token"
    other.write_text("  other-token  \n")
    assert profiles.resolve(home, token_file=other).token.reveal() == "other-token"
    env = {**home, "EBROKER_TOKEN_FILE": str(other)}
    assert profiles.resolve(env).token_source.startswith("EBROKER_TOKEN_FILE")
    (tmp_path / "empty.token").write_text("\n")
    with pytest.raises(profiles.ProfileError, match="is empty"):
        profiles.resolve(home, token_file=tmp_path / "empty.token")
    with pytest.raises(profiles.ProfileError, match=r"missing\.token"):
        profiles.resolve(home, token_file=tmp_path / "missing.token")


@pytest.mark.parametrize(
    ("text", "profile", "says"),
    [
        ("profiles: {a: {url: x, tokne_file: y}}", None, "unknown key 'tokne_file'"),
        ("profiles: {a: {url: x}}", "b", "no profile 'b'"),
        ("profiles: [a]", None, "mapping names"),
        ("profiles: {a: {url: x}", None, "profile file"),
    ],
)
def test_bad_profile_files(tmp_path: Path, text: str, profile: str | None, says: str) -> None:
    (tmp_path / "client.yaml").write_text(text)
    env = {"EBROKER_CLIENT_CONFIG": str(tmp_path / "client.yaml")}
    with pytest.raises(profiles.ProfileError, match=says):
        profiles.resolve(env, profile=profile)


def test_a_secret_hides_itself() -> None:
    secret = profiles.Secret("s3cr3t")
    assert (
        "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret) and "s3cr3t" not in f"{secret}"
    )
    target = profiles.Target("http://x", secret, "default", "--token")
    assert "s3cr3t" not in repr(target)


def test_a_stored_login_is_private_and_its_expiry_known(home) -> None:
    path = profiles.save_login(home, "west", {"access_token": "tok", "expires_at": 100.0})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    fresh = profiles.resolve(home, profile="west", now=50)
    assert fresh.token.reveal() == "tok" and fresh.token_source.startswith("login")
    assert profiles.resolve(home, profile="west", now=150).token_source.startswith("expired")
    assert profiles.delete_login(home, "west") and not path.exists()
    assert not profiles.delete_login(home, "west")


# --- the device grant --------------------------------------------------------------------------


def approve_soon(issuer: OidcIssuer, **grant: Any) -> threading.Thread:
    """The user: waits for the code a client asked for, and approves it."""
    thread = threading.Thread(target=lambda: issuer.approve(issuer.wait_for_user_code(), **grant))
    thread.start()
    return thread


def test_device_login_against_the_issuer(issuer: OidcIssuer) -> None:
    issuer.reset()
    waits: list[float] = []
    with httpx.Client() as http:
        discovery = oidc.discover(issuer.url, http)
        device = oidc.start(discovery, "eb-test", "openid", http)
        assert device.interval == issuer.device_interval and device.user_code
        user = approve_soon(issuer, sub="carol", groups=["astro"])
        issuer.slow_downs = 1  # the first poll is told to slow down: 5 s more from then on
        tokens = oidc.poll(discovery, "eb-test", device, http, sleep=waits.append)
        user.join()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["groups"], claims["aud"]) == ("carol", ["astro"], "ebroker")
    assert waits[0] == 1 and all(w == 6 for w in waits[1:]) and len(waits) >= 2
    # the refresh token gives a new access token once
    with httpx.Client() as http:
        again = oidc.refresh(discovery, "eb-test", tokens["refresh_token"], http)
        assert (
            jwt.decode(again["access_token"], options={"verify_signature": False})["sub"] == "carol"
        )
        with pytest.raises(oidc.LoginError, match="could not be refreshed"):
            oidc.refresh(discovery, "eb-test", tokens["refresh_token"], http)


def test_a_refused_or_expired_code_is_no_login(issuer: OidcIssuer) -> None:
    issuer.reset()
    with httpx.Client() as http:
        discovery = oidc.discover(issuer.url, http)
        device = oidc.start(discovery, "eb-test", None, http)
        issuer.deny(device.user_code)
        with pytest.raises(oidc.LoginError, match="refused at the issuer"):
            oidc.poll(discovery, "eb-test", device, http, sleep=lambda s: None)
        # nobody enters the code: the client gives up when it expires (its own clock)
        device = oidc.start(discovery, "eb-test", None, http)
        ticks = iter(range(0, 10_000, 100))
        with pytest.raises(oidc.LoginError, match="expired"):
            oidc.poll(discovery, "eb-test", device, http, sleep=lambda s: None,
                      clock=lambda: float(next(ticks)))  # fmt: skip


def test_an_issuer_without_the_device_grant() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "x", "token_endpoint": "http://x/token"})

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
        pytest.raises(oidc.LoginError, match="no device authorization"),
    ):
        oidc.discover("http://x", http)


def test_login_and_logout_commands(home, issuer: OidcIssuer) -> None:
    runner = CliRunner()
    user = approve_soon(issuer, sub="dave")
    result = runner.invoke(app, ["--profile", "west", "login"], env=home)
    user.join()
    assert result.exit_code == 0, result.output
    stored = profiles.load_login(home, "west")
    assert (
        stored is not None and stored["issuer"] == issuer.url and stored["client_id"] == "eb-test"
    )
    assert "enter the code" in result.output and issuer.url in result.output
    assert stored["access_token"] not in result.output
    assert stored["refresh_token"] not in result.output
    result = runner.invoke(app, ["--profile", "west", "logout"], env=home)
    assert result.exit_code == 0 and profiles.load_login(home, "west") is None


def test_login_needs_an_issuer_and_a_reachable_one(home, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["login"], env=home)  # east has no issuer
    assert result.exit_code == 2 and "no issuer" in result.output
    result = runner.invoke(app, ["login", "--issuer", "http://127.0.0.1:9"], env=home)
    assert result.exit_code == 3 and "cannot reach the issuer" in result.output


def test_an_expired_login_is_refreshed_before_the_call(home, issuer: OidcIssuer) -> None:
    tokens = issuer._tokens("frank", ("astro",))
    profiles.save_login(home, "west", {**oidc.stored(tokens, issuer.url, "eb-test", now=0),
                                       "expires_at": 1.0})  # fmt: skip
    runner = CliRunner()
    # a dry run sends nothing to the broker, but resolves the token it would send
    result = runner.invoke(
        app, ["--profile", "west", "request", "--image", "x", "--dry-run"], env=home
    )
    assert result.exit_code == 0, result.output
    stored = profiles.load_login(home, "west")
    assert stored["refresh_token"] != tokens["refresh_token"] and stored["expires_at"] > 1000
    assert stored["access_token"] not in result.output
    # a refresh token the issuer no longer takes: log in again
    profiles.save_login(home, "west", {**stored, "expires_at": 1.0})
    issuer.refresh_tokens.clear()
    result = runner.invoke(
        app, ["--profile", "west", "request", "--image", "x", "--dry-run"], env=home
    )
    assert result.exit_code == 1 and "login` again" in result.output
