"""Where the client finds the broker and the caller's token.

The URL, first found: ``--url``, ``EBROKER_URL``, the profile's ``url``, else
``http://127.0.0.1:8080`` (``ebroker serve``'s default). The token, first found: ``--token``,
``EBROKER_TOKEN``, ``--token-file`` or ``EBROKER_TOKEN_FILE`` (its first line), the profile's
``token_file``, else the token ``login`` stored for the profile; none is fine for a node that
lets anonymous callers in.

The profile file (``EBROKER_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/ebroker/client.yaml``,
``~/.config`` by default) names brokers; ``--profile`` or ``EBROKER_PROFILE`` picks one, else
its ``default``::

    default: site-a
    profiles:
      site-a:
        url: https://broker.site-a.example.org
        token_file: ~/.config/ebroker/site-a.token
      federation:
        url: https://aggregator.example.org
        issuer: https://aai.example.org/realms/astro   # for `login` (device code)
        client_id: ebroker-cli
        scope: openid groups

A token is held as a :class:`Secret`, whose ``repr`` and ``str`` hide it: only
``Secret.reveal()`` (the ``Authorization`` header) sees it. ``login`` stores its tokens in
``$XDG_CONFIG_HOME/ebroker/tokens/<profile>.json``, readable by the user alone."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PROFILE = "default"
PROFILE_KEYS = {"url", "token_file", "issuer", "client_id", "scope", "audience"}


class ProfileError(ValueError):
    """A profile file, token file or profile name that cannot be used; says which and why."""


class Secret:
    """A token: shown as ``***`` wherever it is printed, logged or repr'd."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Target:
    """The broker to call and how: ``token_source`` says where the token came from (never
    the token)."""

    url: str
    token: Secret | None
    profile: str
    token_source: str
    settings: dict[str, Any] = field(default_factory=dict)


def config_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "ebroker"


def profile_file(env: Mapping[str, str]) -> Path:
    named = env.get("EBROKER_CLIENT_CONFIG")
    return Path(named).expanduser() if named else config_home(env) / "client.yaml"


def load_profiles(path: Path) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """The file's default profile name and its profiles; none when the file is absent."""
    if not path.exists():
        return None, {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"profile file {path}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles", {}), dict):
        raise ProfileError(f"profile file {path}: expected 'profiles:' mapping names to settings")
    profiles: dict[str, dict[str, Any]] = {}
    for name, settings in (doc.get("profiles") or {}).items():
        if not isinstance(settings, dict):
            raise ProfileError(f"profile file {path}: profile {name!r} is not a mapping")
        unknown = sorted(set(settings) - PROFILE_KEYS)
        if unknown:
            raise ProfileError(
                f"profile file {path}: profile {name!r} has unknown key {unknown[0]!r} "
                f"(known: {', '.join(sorted(PROFILE_KEYS))})"
            )
        profiles[str(name)] = dict(settings)
    default = doc.get("default")
    return (str(default) if default is not None else None), profiles


def read_token_file(path: Path) -> Secret:
    try:
        lines = path.expanduser().read_text().strip().splitlines()
    except OSError as e:
        raise ProfileError(f"token file {path}: {e.strerror or e}") from None
    if not lines or not lines[0].strip():
        raise ProfileError(f"token file {path} is empty")
    return Secret(lines[0].strip())


def login_file(env: Mapping[str, str], profile: str) -> Path:
    return config_home(env) / "tokens" / f"{profile}.json"


def load_login(env: Mapping[str, str], profile: str) -> dict[str, Any] | None:
    path = login_file(env, profile)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("access_token") else None


def save_login(env: Mapping[str, str], profile: str, tokens: Mapping[str, Any]) -> Path:
    """Store ``login``'s tokens, readable and writable by the user alone."""
    path = login_file(env, profile)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(tokens), out)
    os.chmod(path, 0o600)
    return path


def delete_login(env: Mapping[str, str], profile: str) -> bool:
    path = login_file(env, profile)
    if path.exists():
        path.unlink()
        return True
    return False


def resolve(
    env: Mapping[str, str],
    url: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    profile: str | None = None,
    now: float | None = None,
) -> Target:
    """The target of a command, from its flags, the environment and the profile file."""
    default, profiles = load_profiles(profile_file(env))
    chosen = profile or env.get("EBROKER_PROFILE") or default
    if chosen is not None and profiles and chosen not in profiles:
        raise ProfileError(
            f"no profile {chosen!r} in {profile_file(env)} (it has: {', '.join(sorted(profiles))})"
        )
    if chosen is not None and not profiles and (profile or env.get("EBROKER_PROFILE")):
        raise ProfileError(f"no profile {chosen!r}: {profile_file(env)} names none")
    name = chosen or DEFAULT_PROFILE
    settings = profiles.get(name, {})
    base = url or env.get("EBROKER_URL") or settings.get("url") or DEFAULT_URL
    secret, source = _token(env, token, token_file, settings, name, now)
    return Target(str(base).rstrip("/"), secret, name, source, settings)


def _token(
    env: Mapping[str, str],
    token: str | None,
    token_file: Path | None,
    settings: Mapping[str, Any],
    profile: str,
    now: float | None,
) -> tuple[Secret | None, str]:
    if token:
        return Secret(token), "--token"
    if env.get("EBROKER_TOKEN"):
        return Secret(env["EBROKER_TOKEN"]), "EBROKER_TOKEN"
    if token_file is not None:
        return read_token_file(token_file), f"--token-file {token_file}"
    if env.get("EBROKER_TOKEN_FILE"):
        path = Path(env["EBROKER_TOKEN_FILE"])
        return read_token_file(path), f"EBROKER_TOKEN_FILE ({path})"
    if settings.get("token_file"):
        path = Path(str(settings["token_file"]))
        return read_token_file(path), f"the profile's token_file ({path})"
    stored = load_login(env, profile)
    if stored is not None:
        expired = float(stored.get("expires_at") or 0) <= (time.time() if now is None else now)
        state = "expired; run login again" if expired and stored.get("expires_at") else "login"
        return Secret(str(stored["access_token"])), f"{state} ({login_file(env, profile)})"
    return None, "none"
