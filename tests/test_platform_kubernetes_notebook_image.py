"""The kubernetes platform's notebook container with the real notebook image: no cluster runs
here, so the pod's main container as ``manifests`` builds it (command, working directory,
environment with the token resolved from the session's Secret, user and group, dropped
capabilities, no privilege escalation, a read-only root filesystem, the emptyDir volumes) is run
by podman the way a kubelet runs it, with the image .ci/setup-jupyter.sh builds. The notebook is
put where the fetch init container puts it. Then the connector's URL, its host replaced by the
published port as an Ingress forwards it, serves the notebook under the Ingress path (the
classic server's page; for jupyter-server, which has no notebook front end in that image, its
contents API); the readiness probe's path answers; a kernel starts; without the token nothing
is served.

This shows that a notebook image runs as the site's non-root user under the ``restricted``
profile with what the manifest gives it. A missing podman or image fails in CI
(``EBROKER_REQUIRE_INTEGRATION=1``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid as uuids
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from platforms import notebooks
from platforms.kubernetes import manifests
from tests.conftest import unavailable
from tests.nodes import free_port
from tests.test_platform_kubernetes_manifests import START, TOKEN, notebook_session, options

pytestmark = pytest.mark.slow  # a real container

IMAGE = "localhost/ebroker-jupyter:latest"  # .ci/setup-jupyter.sh tags its build so
NOTEBOOK = '{"cells": [{"cell_type": "code", "execution_count": null, "metadata": {}, '
NOTEBOOK += '"outputs": [], "source": ["print(6 * 7)"]}], "metadata": {}, '
NOTEBOOK += '"nbformat": 4, "nbformat_minor": 5}'


@pytest.fixture(scope="module", autouse=True)
def notebook_image() -> None:
    found = shutil.which("podman")
    exists = found and subprocess.run(["podman", "image", "exists", IMAGE], timeout=60).returncode
    if not found or exists != 0:
        unavailable(f"podman with the image {IMAGE} (run .ci/setup-jupyter.sh)")


def kubelet_argv(
    pod: dict[str, Any], secret: dict[str, Any], dirs: dict[str, Path], name: str, port: int
) -> list[str]:
    """``podman run`` for the pod's main container, as a kubelet would start it: the user
    and group of its securityContext, ALL capabilities dropped, no new privileges, a read-only
    root where asked, the env with secretKeyRef values from ``secret``, the emptyDir volumes
    (``dirs``), its working directory, its command as the entrypoint."""
    (main,) = pod["containers"]
    security = main["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    argv = ["podman", "run", "-d", "--name", name, "--user",
            f"{security['runAsUser']}:{security['runAsGroup']}", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "-p", f"127.0.0.1:{port}:{notebooks.PORT}",
            "-w", main["workingDir"]]  # fmt: skip
    if security.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    for entry in main["env"]:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"]
            value = (
                manifests.token_from_secret(secret) if ref["key"] == notebooks.TOKEN_ENV else None
            )
            assert value is not None, ref
        else:
            value = entry["value"]
        argv += ["-e", f"{entry['name']}={value}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in main["volumeMounts"]:
        if "emptyDir" in volumes[mount["name"]]:
            argv += ["-v", f"{dirs[mount['name']]}:{mount['mountPath']}"]
    command = main["command"]
    return [*argv, "--entrypoint", command[0], IMAGE, *command[1:]]


@pytest.mark.parametrize("server", ["notebook", "jupyter-server"])
def test_the_notebook_container_serves_as_the_sites_user_behind_the_ingress_path(
    tmp_path: Path, server: str
) -> None:
    opts = options(
        notebook_image=IMAGE,
        notebook_server=server,
        node_groups=[{"name": "all"}],
        ingress={"host": "apps.example.org", "path_prefix": "/s"},
        security={"run_as_user": 1000, "run_as_group": 1000, "read_only_root_filesystem": True},
    )
    execution = notebook_session("https://notebooks.example.org/analysis.ipynb")
    execution.storage, execution.data, execution.compute.volumes = [], [], []
    kind = manifests.executable_kind(execution)
    (secret,) = kind.objects(execution, opts, "k8s")
    job = manifests.job_manifest(execution, opts, "k8s", IMAGE, opts.node_groups[0], START)
    pod = job["spec"]["template"]["spec"]
    dirs = {}
    for volume in manifests.notebook_volumes(execution):
        dirs[volume["name"]] = tmp_path / volume["name"]
        dirs[volume["name"]].mkdir()
        dirs[volume["name"]].chmod(0o777)  # as a kubelet makes an emptyDir
    # what the fetch init container leaves in the server's root
    (dirs[manifests.NOTEBOOK_VOLUME] / manifests.notebook_file(execution)).write_text(NOTEBOOK)
    port, name = free_port(), f"ebroker-k8s-check-{uuids.uuid4().hex[:8]}"
    started = subprocess.run(
        kubelet_argv(pod, secret, dirs, name, port), capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    try:
        probe = pod["containers"][0]["readinessProbe"]["httpGet"]["path"]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:  # the readiness probe, as the kubelet sends it
            try:
                ready = httpx.get(base + probe, timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            assert time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        service = manifests.service_manifest(execution, opts, "k8s")
        ingress = manifests.ingress_manifest(execution, opts, "k8s")
        (connector,) = manifests.connectors(execution, opts, service, ingress)
        parts = urlsplit(connector["url"])
        assert parts.netloc == "apps.example.org" and f"token={TOKEN}" in parts.query
        # the Ingress forwards the path unchanged to the Service's port, the server's
        url = urlunsplit(("http", f"127.0.0.1:{port}", parts.path, parts.query, ""))
        if server == "notebook":  # the image's jupyter-server has no notebook front end
            page = httpx.get(url, timeout=30)
            assert page.status_code == 200 and "analysis.ipynb" in page.text
        api = f"{base}{manifests.notebook_base_url(execution, opts)}api"
        auth = {"Authorization": f"token {TOKEN}"}
        listed = httpx.get(f"{api}/contents", headers=auth, timeout=30).json()
        assert [c["name"] for c in listed["content"]] == ["analysis.ipynb"]
        content = httpx.get(f"{api}/contents/analysis.ipynb", headers=auth, timeout=30).json()
        assert content["content"]["cells"][0]["source"] == "print(6 * 7)"
        kernel = httpx.post(f"{api}/kernels", headers=auth, timeout=60)
        assert kernel.status_code == 201, kernel.text  # as a non-root user, on a read-only root
        refused = httpx.get(f"{api}/contents", timeout=30)
        assert refused.status_code == 403
        inspect = subprocess.run(
            ["podman", "inspect", "--format", "{{.Config.User}}", name],
            capture_output=True,
            text=True,
        )
        assert inspect.stdout.strip() == "1000:1000"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)
