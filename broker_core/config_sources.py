"""Where configuration comes from, as Kubernetes delivers it: the YAML file, then the
environment, then files that hold one secret each.

Precedence, lowest first: the models' defaults, the YAML file, ``EBROKER_<SECTION>__<KEY>``
environment variables (``EBROKER_DATABASE__URL``; a list or mapping is given as JSON), and
``EBROKER_<SECTION>__<KEY>_FILE`` variables naming a file whose text is the value. Inside the
YAML file any value may be written ``{secret_file: /run/secrets/name}`` (plugin options
included): the file's text takes its place. Everything is merged into one document before it
is validated, so an error names the key, and says which variable set it.

pydantic-settings reads the environment (its ``EnvSettingsSource``, nested by ``__``); the
document is then validated by the node's own models, which report errors the node's way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from .secrets import Secrets

ENV_PREFIX = "EBROKER_"
NESTED = "__"
FILE_SUFFIX = "_FILE"
SECRET_FILE = "secret_file"  # {secret_file: path} in the YAML file
MAX_SECRET_BYTES = 64 * 1024


class SourceError(ValueError):
    """A source of configuration that cannot be read (the message names it, never a value)."""


@dataclass
class Sources:
    """The merged configuration document, what of it is secret, and which environment
    variable set each key it set (dotted key -> variable), for error messages."""

    document: dict[str, Any]
    secrets: Secrets = field(default_factory=Secrets)
    origins: dict[str, str] = field(default_factory=dict)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of os.environ."""

    def __init__(self, model: type[BaseModel], environ: Mapping[str, str]):
        self._given = dict(environ)
        super().__init__(
            model,  # type: ignore[arg-type]  # it reads only the model's fields
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=NESTED,
            case_sensitive=False,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items()}


def gather(
    model: type[BaseModel], document: Any, environ: Mapping[str, str] | None = None
) -> Sources:
    """The YAML ``document`` with the environment's values merged in, and every
    ``secret_file`` and ``*_FILE`` read."""
    environ = os.environ if environ is None else environ
    secrets = Secrets()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        return Sources(document, secrets)  # validation says the top level must be a mapping
    document = _read_secret_files(document, secrets, ())
    values, origins = _environment(model, environ, secrets)
    merged = _merge(document, values)
    secrets.collect(merged)
    return Sources(merged, secrets, origins)


def _environment(
    model: type[BaseModel], environ: Mapping[str, str], secrets: Secrets
) -> tuple[dict[str, Any], dict[str, str]]:
    """The environment's configuration values, with the ``*_FILE`` ones read."""
    ours = {k: v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    plain: dict[str, str] = {}
    for name, value in ours.items():
        if name.upper().endswith(FILE_SUFFIX) and NESTED in name:
            target = name[: -len(FILE_SUFFIX)]
            text = _secret_text(Path(value), f"environment variable {name}")
            secrets.add(text)
            plain[target] = text
        else:
            plain.setdefault(name, value)
    try:
        values = _Environment(model, plain)()
    except SettingsError as exc:
        cause = exc.__cause__
        raise SourceError(
            f"invalid configuration in the environment: {exc}"
            + (f" ({type(cause).__name__})" if cause else "")
        ) from None
    origins = {}
    for name in ours:
        key = name[len(ENV_PREFIX):].removesuffix(FILE_SUFFIX) if NESTED in name else None
        key = key if key is not None else name[len(ENV_PREFIX):]
        origins[".".join(part.lower() for part in key.split(NESTED))] = name
    return values, origins


def _read_secret_files(value: Any, secrets: Secrets, at: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        if set(value) == {SECRET_FILE} and isinstance(value[SECRET_FILE], str):
            where = ".".join(at) or "(top level)"
            text = _secret_text(Path(value[SECRET_FILE]), f"{where} ({SECRET_FILE})")
            secrets.add(text)
            return text
        return {k: _read_secret_files(v, secrets, (*at, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_read_secret_files(v, secrets, (*at, str(i))) for i, v in enumerate(value)]
    return value


def _secret_text(path: Path, what: str) -> str:
    """A secret file's text, without the newline editors and ``kubectl create secret`` leave."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"cannot read the secret file {path} of {what}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SourceError(f"the secret file {path} of {what} is over {MAX_SECRET_BYTES} bytes")
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"the secret file {path} of {what} is not UTF-8 text") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
