"""Jupyter notebook sessions (the ``jupyter-notebook`` executable): what every platform that
serves them shares, so that the ``local`` (podman) and ``kubernetes`` platforms run the same
server the same way.

A notebook session runs the site's notebook-server image (``NotebookOptions.notebook_image``)
with the notebook from its ``location`` fetched into the session's work directory
(``workdir/notebook``, through the node's staging rules: no host files outside the data roots,
no internal addresses), which is the server's root directory (``ROOT`` in the container). The
server listens on ``PORT``; its token is random per session (``new_token``), kept in
``Execution.state[TOKEN_STATE]`` and given to the server in the environment (``TOKEN_ENV``), never
on a command line or in a log. The connector's URL opens the notebook with the token.

Idle culling: kernels idle for ``notebook_idle_timeout`` are shut down, and the server ends
itself after that long without any activity (the session then completes early, freeing its
booking); both are capped at the booked window, at whose end the platform stops the server.

Everything here is a pure function of the session and the options, except ``new_token`` and
``fetch`` (which stages the notebook).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from broker_core.config import Duration
from broker_core.kinds.base import Component, kind_uri
from broker_core.kinds.builtin import JupyterNotebook, Port
from broker_core.staging.rules import StagingRules

from .contract import Execution
from .errors import PlatformError
from .staging import stage

NOTEBOOK = kind_uri("executable", "jupyter-notebook")
PORT = 8888  # the server's port in the container
ROOT = "/work"  # the server's root directory in the container: the fetched notebook
DIRECTORY = "notebook"  # where the notebook is fetched, in the session's workdir
TOKEN_ENV = "JUPYTER_TOKEN"  # read by both the classic notebook server and jupyter-server
TOKEN_STATE = "notebook_token"  # in Execution.state
ENTRY_STATE = "notebook"  # in Execution.state: the notebook to open, relative to ROOT
TOKEN_BYTES = 32
HIDDEN = "[token]"  # what the token is in the output the node keeps
CULL_INTERVAL = 60  # seconds between the kernel manager's looks for idle kernels

ServerKind = Literal["notebook", "jupyter-server"]
IMAGE_REF = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"


@dataclass(frozen=True)
class Server:
    """How one kind of notebook server is started and configured."""

    module: str  # run as ``python -m <module>`` (Debian's image has no jupyter on PATH)
    app: str  # the application's config class
    root_dir: str  # the app's trait naming the directory it serves


SERVERS: dict[str, Server] = {
    # the classic notebook server (Debian's python3-notebook 6.4): serves /notebooks/<path>
    "notebook": Server("notebook", "NotebookApp", "notebook_dir"),
    # jupyter-server with a notebook front end (Notebook 7, nbclassic): serves the same paths
    "jupyter-server": Server("jupyter_server", "ServerApp", "root_dir"),
}


class NotebookOptions(BaseModel):
    """The notebook options of a platform's options model (a mixin): which image serves
    notebooks, which server it runs, and when idle notebooks are culled."""

    model_config = ConfigDict(extra="forbid")

    notebook_image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        description="the notebook-server image; without one, notebook sessions are refused",
    )
    notebook_server: ServerKind = Field(
        default="notebook", description="the server the image runs: notebook or jupyter-server"
    )
    notebook_python: str = Field(
        default="python3",
        min_length=1,
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="the Python in the image that runs the server",
    )
    notebook_idle_timeout: Duration = Field(
        default=timedelta(hours=1),
        description="idle kernels are culled, and an idle server ends, after this long",
    )


def is_notebook(executable: Component | None) -> bool:
    return isinstance(executable, JupyterNotebook)


def new_token() -> str:
    """A fresh random token for one session's server (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_of(execution: Execution) -> str:
    """The session's token, made once and kept in its state (so a restart keeps it)."""
    token = execution.state.get(TOKEN_STATE)
    if not isinstance(token, str) or not token:
        token = execution.state[TOKEN_STATE] = new_token()
    return token


def environment(token: str) -> dict[str, str]:
    """The server's environment: its token (read at start, never on the command line)."""
    return {TOKEN_ENV: token}


def idle_seconds(execution: Execution, options: NotebookOptions) -> int:
    """How long a kernel or the server may be idle: the site's timeout, capped at the window."""
    window = max(execution.end_at - execution.start_at, 1)
    return max(1, min(int(options.notebook_idle_timeout.total_seconds()), window))


def server_command(
    execution: Execution,
    options: NotebookOptions,
    *,
    allow_root: bool = True,
    base_url: str | None = None,
) -> list[str]:
    """The notebook server's command line: listening on every address of the container at
    ``PORT``, serving ``ROOT``, no browser, remote access (the token guards it), idle kernels
    culled and an idle server ending. The token is not in it (``environment``). A container
    that runs as root needs ``allow_root`` (podman's do; a Kubernetes pod runs as a user); a
    server behind a path (an Ingress's) is told its ``base_url``."""
    server = SERVERS[options.notebook_server]
    app = server.app
    idle = idle_seconds(execution, options)
    return [
        options.notebook_python,
        "-m",
        server.module,
        *(["--allow-root"] if allow_root else []),
        "--no-browser",
        f"--{app}.ip=0.0.0.0",
        f"--{app}.port={PORT}",
        f"--{app}.port_retries=0",
        f"--{app}.{server.root_dir}={ROOT}",
        f"--{app}.allow_remote_access=True",
        f"--{app}.shutdown_no_activity_timeout={idle}",
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        f"--MappingKernelManager.cull_interval={min(CULL_INTERVAL, idle)}",
        "--MappingKernelManager.cull_connected=True",
        *([f"--{app}.base_url={base_url}"] if base_url is not None else []),
    ]


def scrub(text: str, token: str | None) -> str:
    """``text`` (a line of the server's output) without the token: a server may log a
    request's URL with the token in its query."""
    return text.replace(token, HIDDEN) if token else text


def open_path(entry: str | None) -> str:
    """The server path that opens ``entry`` (a notebook relative to ``ROOT``), or the file
    list when there is none."""
    if not entry:
        return "/tree"
    return "/notebooks/" + quote(entry.strip("/"), safe="/")


def port(entry: str | None) -> Port:
    """The server's published port, as an executable's port: HTTP, opening the notebook."""
    return Port.model_validate(
        {"internal": {"port": PORT}, "protocol": "HTTP", "path": open_path(entry), "access": True}
    )


def connector_url(url: str, token: str) -> str:
    """``url`` (the published port's) with the token in its query, as the server takes it."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"token={quote(token, safe='')}") if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def entry_from_location(location: str | None) -> str | None:
    """The notebook a location names, as fetching names it (the URL path's last part), when
    it is a notebook (``.ipynb``); for platforms that fetch without listing the result."""
    if not location:
        return None
    name = PurePosixPath(unquote(urlsplit(location).path)).name
    return name if name.endswith(".ipynb") else None


def entry_notebook(names: Iterable[str]) -> str | None:
    """The notebook to open among the names fetched into ``ROOT``: the only ``.ipynb`` one,
    else none (the connector then opens the file list)."""
    found = sorted(n for n in names if n.endswith(".ipynb") and not n.startswith("."))
    return found[0] if len(found) == 1 else None


def notebook_dir(execution: Execution) -> Path:
    """Where the notebook is fetched on the node: the server's root directory."""
    return execution.workdir / DIRECTORY


def fetch(execution: Execution, rules: StagingRules, user: str | None) -> list[str]:
    """Fetch the notebook from its location into ``notebook_dir`` within the staging rules
    (as ``user``), record the notebook to open in ``state[ENTRY_STATE]``; notes for the
    session. Repeating it fetches again."""
    executable = execution.executable
    if not isinstance(executable, JupyterNotebook) or not executable.location:
        raise PlatformError("the jupyter-notebook executable names no location")
    document = {"kind": NOTEBOOK, "location": executable.location.strip()}
    target = notebook_dir(execution)
    notes = stage(document, target, rules, user=user)
    entry = entry_notebook(p.name for p in target.iterdir() if p.is_file())
    execution.state[ENTRY_STATE] = entry
    shown = entry or "no single notebook: the connector opens the file list"
    return [*notes, f"notebook {executable.location} fetched ({shown})"]
