"""The kubernetes platform's manifests and options: every manifest a pure function of a fixed
session, shown by a snapshot (``tests/snapshots/kubernetes``; ``EBROKER_UPDATE_SNAPSHOTS=1``
rewrites them) and validated against the Kubernetes OpenAPI schema of ``KUBE_VERSION``
(kubernetes-validate, strict: no unknown fields); options refused with errors naming the key."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import JupyterNotebook, Port
from broker_core.staging.fetch import file_name
from platforms import notebooks, remote_staging
from platforms.contract import Execution, PlatformError, uuid_of
from platforms.kubernetes import manifests
from platforms.kubernetes.options import KubernetesOptions

KUBE_VERSION = "1.37"
SNAPSHOTS = Path(__file__).parent / "snapshots" / "kubernetes"
RBAC = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "rbac.yaml"
NETWORK_POLICY = RBAC.with_name("networkpolicy.yaml")
SESSION = "0b6f1a52-3c1e-4c55-9a0e-7d2c4f1e8a01"
STORAGE_UUID = "5d1e2f3a-0000-4000-8000-000000000001"
DATA_UUID = "5d1e2f3a-0000-4000-8000-000000000002"
START = 1_900_000_000


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def judged(execution: Execution) -> Execution:
    """The session's locations as preparation judges them (``remote_staging``), pinned to
    fixed documentation addresses instead of resolved here."""
    components = [*execution.data]
    if notebooks.is_notebook(execution.executable):
        components.append(execution.executable)
    for component in components:
        location = component.location.strip()
        host = urlsplit(location).hostname or ""
        fetch = remote_staging.Fetch(uuid_of(component), component.name or "", location,
                                     file_name(location), host, 443, "192.0.2.80")  # fmt: skip
        execution.state.setdefault(remote_staging.STATE_KEY, {})[fetch.uuid] = asdict(fetch)
    return execution


def session(**executable: Any) -> Execution:
    """One session with everything a pod can have: ports, environment, entrypoint, a storage
    resource, a data resource staged into it and both mounted (its location judged)."""
    return judged(_session(**executable))


def _session(**executable: Any) -> Execution:
    return Execution(
        session=SESSION,
        executable={
            "kind": kind_uri("executable", "docker-container"),
            "meta": {"uuid": "5d1e2f3a-0000-4000-8000-0000000000e0"},
            "image": {"locations": ["docker.io/library/python:3.12"]},
            "entrypoint": ["python", "-u"],
            "command": ["-m", "http.server", "8080"],
            "environment": {"GREETING": "hello", "A_FIRST": "1"},
            "network": {
                "ports": [
                    {"internal": {"port": 8080}, "protocol": "HTTP", "path": "/index.html"},
                    {"internal": {"port": 5432}, "external": {"port": 30432}, "protocol": "TCP"},
                ]
            },
            **executable,
        },
        compute={
            "kind": kind_uri("compute", "simple-compute-resource"),
            "meta": {"uuid": "5d1e2f3a-0000-4000-8000-0000000000c0"},
            "volumes": [
                {
                    "kind": kind_uri("volume", "simple-volume-mount"),
                    "path": "/work",
                    "mode": "READWRITE",
                    "resource": "scratch",
                },
                {
                    "kind": kind_uri("volume", "simple-volume-mount"),
                    "path": "/input",
                    "resource": "input",
                },
            ],
        },
        storage=[
            {
                "kind": kind_uri("storage", "simple-storage-resource"),
                "meta": {"uuid": STORAGE_UUID, "name": "scratch"},
                "size": {"min": 20, "max": 20},
            }
        ],
        data=[
            {
                "kind": kind_uri("data", "simple-data-resource"),
                "meta": {"uuid": DATA_UUID, "name": "input"},
                "storage": STORAGE_UUID,
                "location": "https://data.example.org/sets/run%2042.fits?v=2",
            }
        ],
        granted={"cores": 4, "memory": 16, "storage": 20, "gpus": 1},
        prepare_at=START - 60,
        start_at=START,
        end_at=START + 7200,
        workdir=Path("/nonexistent"),
    )


def options(**overrides: Any) -> KubernetesOptions:
    base: dict[str, Any] = {
        "namespace": "science",
        "node_groups": [
            {
                "name": "gpu",
                "selector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            }
        ],
        "storage_class": "fast-ssd",
        "image_pull_secrets": ["registry-login"],
    }
    return KubernetesOptions.model_validate({**base, **overrides})


def built(opts: KubernetesOptions) -> dict[str, dict[str, Any] | None]:
    execution = session()
    group = opts.node_groups[0]
    return {
        "job": manifests.job_manifest(
            execution, opts, "k8s", "docker.io/library/python:3.12", group, START
        ),
        "pvc": manifests.pvc_manifest(execution, execution.storage[0], opts, "k8s"),
        "service": manifests.service_manifest(execution, opts, "k8s"),
        "ingress": manifests.ingress_manifest(execution, opts, "k8s"),
    }


VARIANTS: dict[str, dict[str, Any]] = {
    "clusterip": {},
    "nodeport-ingress-host": {
        "service_type": "NodePort",
        "connector_host": "node1.example.org",
        "ingress": {
            "class_name": "nginx",
            "host": "{session}.apps.example.org",
            "tls_secret": "apps-tls",
        },
    },
    "loadbalancer-ingress-path": {
        "service_type": "LoadBalancer",
        "pull": "always",
        "ingress": {
            "host": "apps.example.org",
            "path_prefix": "/sessions",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        },
        "security": {
            "run_as_user": 2000,
            "run_as_group": 2000,
            "fs_group": None,
            "read_only_root_filesystem": True,
        },
    },
}


def check_snapshot(name: str, value: Any) -> None:
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("EBROKER_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with EBROKER_UPDATE_SNAPSHOTS=1"
    assert json.loads(path.read_text()) == json.loads(text), f"{name} differs from {path}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifests_match_their_snapshots_and_the_schema(variant: str) -> None:
    found = built(options(**VARIANTS[variant]))
    assert (found["ingress"] is None) == ("ingress" not in VARIANTS[variant])
    for what, manifest in found.items():
        if manifest is None:
            continue
        validate(manifest)
        check_snapshot(f"{variant}-{what}", manifest)


def test_the_job_is_one_guaranteed_pod_within_the_booked_window() -> None:
    job = built(options())["job"]
    assert job is not None
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 7200 and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    (main,) = pod["containers"]
    assert (
        main["resources"]["requests"]
        == main["resources"]["limits"]
        == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    )
    assert main["command"] == ["python", "-u"] and main["args"][0] == "-m"
    assert {"name": "GREETING", "value": "hello"} in main["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert (
        job["metadata"]["labels"]
        == spec["template"]["metadata"]["labels"]
        == {"ebroker.session": SESSION, "ebroker.platform": "k8s"}
    )
    # what the restricted Pod Security Standard asks of every container
    for container in [*pod["initContainers"], main]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the data is staged into its storage's claim, and mounted from there
    (stage,) = pod["initContainers"]
    assert stage["command"][3:6] == ["fetch", f"/stage/{DATA_UUID}", "run 42.fits"]
    assert "--max-filesize" in stage["command"]  # bounded by the staging rules
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/input"] == {
        "mountPath": "/input",
        "name": "storage-0",
        "readOnly": True,
        "subPath": DATA_UUID,
    }
    assert mounts["/work"]["readOnly"] is False
    assert pod["volumes"] == [
        {
            "name": "storage-0",
            "persistentVolumeClaim": {"claimName": f"ebroker-{SESSION}-{STORAGE_UUID}"},
        }
    ]


@pytest.mark.parametrize(
    "pull,policy", [("missing", "IfNotPresent"), ("always", "Always"), ("never", "Never")]
)
def test_the_pull_option_maps_to_the_image_pull_policy(pull: str, policy: str) -> None:
    job = built(options(pull=pull))["job"]
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_a_privileged_container_needs_the_site_to_allow_it() -> None:
    execution = session(privileged=True)
    strict = options()
    with pytest.raises(PlatformError, match="privileged"):
        manifests.job_manifest(execution, strict, "k8s", "img", strict.node_groups[0], START)
    allowed = options(allow_privileged=True)
    job = manifests.job_manifest(execution, allowed, "k8s", "img", allowed.node_groups[0], START)
    validate(job)
    assert job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"]


def test_a_session_without_ports_storage_or_data_has_only_a_job() -> None:
    execution = session(network=None)
    execution.storage, execution.data = [], []
    execution.compute.volumes = []
    opts = options(node_groups=[{"name": "all"}], image_pull_secrets=[])
    assert manifests.service_manifest(execution, opts, "k8s") is None
    assert manifests.ingress_manifest(execution, opts, "k8s") is None
    job = manifests.job_manifest(execution, opts, "k8s", "img", opts.node_groups[0], START)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "volumes" not in pod and "nodeSelector" not in pod


def test_file_locations_cannot_be_staged_into_a_pod() -> None:
    execution = _session()
    execution.data[0].location = "file:///etc/passwd"
    with pytest.raises(PlatformError, match=r"staging rule scheme.*http"):
        remote_staging.prepare(execution, execution.data[0])
    opts = options()
    with pytest.raises(PlatformError, match="not judged"):  # never fetched unjudged
        manifests.job_manifest(execution, opts, "k8s", "img", opts.node_groups[0], START)


@pytest.mark.parametrize(
    "location,name",
    [
        ("https://x.org/a/b/c.txt", "c.txt"),
        ("https://x.org/", "data"),
        ("https://x.org/a/..%2F..%2Fetc", "etc"),
        ("http://x.org/.hidden", "hidden"),
    ],
)
def test_staged_file_names_are_safe(location: str, name: str) -> None:
    assert manifests.file_name(location) == name


def test_connectors_from_the_cluster_service() -> None:
    execution = session()
    node = options(service_type="NodePort", connector_host="node1.example.org")
    service = manifests.service_manifest(execution, node, "k8s")
    assert service is not None
    service["spec"]["ports"][0]["nodePort"] = 31080  # what the API server chose
    http, tcp = manifests.connectors(execution, node, service, None)
    assert http["url"] == "http://node1.example.org:31080/index.html"
    assert (tcp["kind"], tcp["port"], "url" in tcp) == ("port-connector", 30432, False)
    cluster = options()
    http, _ = manifests.connectors(
        execution, cluster, manifests.service_manifest(execution, cluster, "k8s"), None
    )
    assert http["url"] == f"http://ebroker-{SESSION}.science.svc.cluster.local:8080/index.html"
    routed = options(ingress={"host": "apps.example.org", "path_prefix": "/s", "tls_secret": "t"})
    http, _ = manifests.connectors(
        execution,
        routed,
        manifests.service_manifest(execution, routed, "k8s"),
        manifests.ingress_manifest(execution, routed, "k8s"),
    )
    assert http["url"] == f"https://apps.example.org/s/ebroker-{SESSION}/index.html"
    balancer = options(service_type="LoadBalancer")
    service = manifests.service_manifest(execution, balancer, "k8s")
    assert service is not None
    assert manifests.connectors(execution, balancer, service, None)[0]["host"] is None
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    assert manifests.connectors(execution, balancer, service, None)[0]["url"] == (
        "http://203.0.113.7:8080/index.html"
    )


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,key",
    [
        ({"namespace": "Not_A_Namespace"}, "namespace"),
        ({"share": 0}, "share"),
        ({"share": 1.5}, "share"),
        ({"service_type": "ExternalName"}, "service_type"),
        ({"service_type": "NodePort"}, "connector_host"),
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "kubeconfig"),
        ({"in_cluster": True, "context": "prod"}, "in_cluster"),
        ({"node_groups": []}, "node_groups"),
        ({"node_groups": [{"name": "a"}, {"name": "a"}]}, "repeated"),
        ({"node_groups": [{"name": "a", "selector": {"bad key!": "x"}}]}, "label key"),
        ({"node_groups": [{"name": "a", "tolerations": [{"operator": "Equal"}]}]}, "Exists"),
        ({"ingress": {"host": "{user}.example.org"}}, "placeholder"),
        ({"ingress": {"host": "apps.example.org", "path_prefix": "sessions"}}, "path_prefix"),
        ({"pending_timeout": "PT0S"}, "positive"),
        ({"pull": "sometimes"}, "pull"),
        ({"storage_class": "Fast SSD"}, "storage_class"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_are_refused_naming_the_key(bad: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        KubernetesOptions.model_validate(bad)


def test_the_rbac_manifests_validate_and_grant_what_the_platform_uses() -> None:
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    for document in documents:
        validate(document)
    kinds = {d["kind"] for d in documents}
    assert {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= kinds
    role = next(d for d in documents if d["kind"] == "Role")
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    for needed in [
        ("", "secrets"),
        ("batch", "jobs"),
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("", "persistentvolumeclaims"),
        ("", "services"),
        ("", "resourcequotas"),
        ("networking.k8s.io", "ingresses"),
    ]:
        assert needed in granted, needed
    secrets = {v for rule in role["rules"] if "secrets" in rule["resources"] for v in rule["verbs"]}
    assert secrets == {"get", "list", "create", "delete"}, "a notebook's token, and no more"
    cluster = next(d for d in documents if d["kind"] == "ClusterRole")
    read = {(r, v) for rule in cluster["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("nodes", "list"), ("pods", "list")} <= read
    assert all(v in ("get", "list", "watch") for _, v in read), "the ClusterRole only reads"


def test_the_schema_check_is_strict() -> None:
    """An unknown field anywhere in a manifest is refused, so a typo cannot pass the checks."""
    job = built(options())["job"]
    assert job is not None
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job)


def test_the_image_is_the_first_location_pinned_to_its_digest() -> None:
    execution = session(
        image={"locations": ["docker://registry.example.org/a/b:1", "x/y"], "digest": "0123abcd"}
    )
    assert manifests.docker_image(execution, options()) == (
        "registry.example.org/a/b:1@sha256:0123abcd"
    )
    execution.executable.image.locations = [" "]
    with pytest.raises(PlatformError, match="no image location"):
        manifests.docker_image(execution, options())


def test_another_executable_kind_plugs_into_the_same_pod(monkeypatch) -> None:
    """What a jupyter-notebook (or any other) kind registers: its image, container and
    ports; the pod, staging, security, Service and connectors come with it."""
    notebook = kind_uri("executable", "jupyter-notebook")
    port = Port.model_validate({"internal": {"port": 8888}, "protocol": "HTTP", "path": "/lab"})

    def container(execution: Execution, opts: KubernetesOptions, image: str) -> dict[str, Any]:
        return {
            "name": manifests.MAIN,
            "image": image,
            "args": ["notebook"],
            "resources": manifests.resources(execution),
            "securityContext": manifests.container_security(opts, privileged=False),
        }

    monkeypatch.setitem(
        manifests.EXECUTABLES,
        notebook,
        manifests.ExecutableKind(
            lambda execution, opts: "notebook-image:1", container, lambda execution: [port]
        ),
    )
    execution = session()
    execution.executable = JupyterNotebook.model_validate(
        {"kind": notebook, "location": "https://example.org/a.ipynb"}
    )
    opts = options()
    kind = manifests.executable_kind(execution)
    job = manifests.job_manifest(
        execution, opts, "k8s", kind.image(execution, opts), opts.node_groups[0], START
    )
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "notebook-image:1"
    assert pod["initContainers"][0]["name"] == "stage-0"
    service = manifests.service_manifest(execution, opts, "k8s")
    assert service is not None and service["spec"]["ports"][0]["port"] == 8888
    (connector,) = manifests.connectors(execution, opts, service, None)
    assert connector["url"].endswith(":8888/lab")


def test_the_sessions_network_policy_validates_and_selects_the_sessions_pods() -> None:
    (policy,) = [d for d in yaml.safe_load_all(NETWORK_POLICY.read_text()) if d]
    validate(policy)
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == (manifests.SESSION_LABEL, "Exists")
    blocked = policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    assert "169.254.0.0/16" in blocked and "10.0.0.0/8" in blocked  # metadata, cluster nets


# --- jupyter-notebook ----------------------------------------------------------------------------

NOTEBOOK_KIND = kind_uri("executable", "jupyter-notebook")
TOKEN = "fixed-test-token-0123456789abcdefghijklmnopqrstu"  # what notebooks.new_token makes
NOTEBOOK_IMAGE = "registry.example.org/jupyter/minimal-notebook:2026.11"


def notebook_session(location: str = "https://notebooks.example.org/lab/Analysis%201.ipynb?v=3"):
    """The session above with a notebook for its executable (and its storage and data mounted
    beside the notebook's directory), its token already made."""
    execution = session()
    execution.executable = JupyterNotebook.model_validate(
        {
            "kind": NOTEBOOK_KIND,
            "meta": {"uuid": "5d1e2f3a-0000-4000-8000-0000000000e1"},
            "location": location,
        }
    )
    execution.compute.volumes[0].path = "/scratch"
    execution.state[notebooks.TOKEN_STATE] = TOKEN
    return judged(execution) if execution.executable.location.strip() else execution


def notebook_built(opts: KubernetesOptions) -> dict[str, dict[str, Any] | None]:
    execution = notebook_session()
    kind = manifests.executable_kind(execution)
    (secret,) = kind.objects(execution, opts, "k8s")
    return {
        "secret": secret,
        "job": manifests.job_manifest(
            execution, opts, "k8s", kind.image(execution, opts), opts.node_groups[0], START
        ),
        "service": manifests.service_manifest(execution, opts, "k8s"),
        "ingress": manifests.ingress_manifest(execution, opts, "k8s"),
    }


NOTEBOOK_VARIANTS: dict[str, dict[str, Any]] = {
    "notebook-clusterip": {"notebook_image": NOTEBOOK_IMAGE},
    "notebook-ingress-path": {
        "notebook_image": NOTEBOOK_IMAGE,
        "notebook_server": "jupyter-server",
        "notebook_idle_timeout": "PT20M",
        "service_type": "LoadBalancer",
        "ingress": {"host": "apps.example.org", "path_prefix": "/s", "tls_secret": "apps-tls"},
        "security": {"run_as_user": 2000, "run_as_group": 2000, "read_only_root_filesystem": True},
    },
}


@pytest.mark.parametrize("variant", sorted(NOTEBOOK_VARIANTS))
def test_notebook_manifests_match_their_snapshots_and_the_schema(variant: str) -> None:
    found = notebook_built(options(**NOTEBOOK_VARIANTS[variant]))
    assert (found["ingress"] is None) == ("ingress" not in NOTEBOOK_VARIANTS[variant])
    for what, manifest in found.items():
        if manifest is None:
            continue
        validate(manifest)
        check_snapshot(f"{variant}-{what}", manifest)


def test_the_notebook_token_is_in_its_secret_and_in_no_other_manifest() -> None:
    found = notebook_built(options(**NOTEBOOK_VARIANTS["notebook-ingress-path"]))
    secret = found.pop("secret")
    assert secret is not None
    assert secret["metadata"]["name"] == f"ebroker-{SESSION}" and secret["immutable"] is True
    assert manifests.token_from_secret(secret) == TOKEN
    assert base64.b64decode(secret["data"]["JUPYTER_TOKEN"]).decode() == TOKEN
    for manifest in found.values():
        assert TOKEN not in json.dumps(manifest)
    job = found["job"]
    assert job is not None
    (main,) = job["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in main["env"] if e["name"] == "JUPYTER_TOKEN"]
    assert token == {
        "name": "JUPYTER_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": f"ebroker-{SESSION}", "key": "JUPYTER_TOKEN"}},
    }
    assert manifests.token_from_secret({"data": {"JUPYTER_TOKEN": "not base64!"}}) is None


def test_the_notebook_server_runs_as_the_sites_non_root_user_serving_its_root() -> None:
    opts = options(**NOTEBOOK_VARIANTS["notebook-ingress-path"])
    job = notebook_built(opts)["job"]
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert main["image"] == NOTEBOOK_IMAGE and main["workingDir"] == notebooks.ROOT
    assert main["command"][:3] == ["python3", "-m", "jupyter_server"]
    assert "--allow-root" not in main["command"]
    assert "--ServerApp.root_dir=/work" in main["command"]
    assert "--ServerApp.shutdown_no_activity_timeout=1200" in main["command"]  # idle culling
    assert main["securityContext"]["runAsUser"] == pod["securityContext"]["runAsUser"] == 2000
    assert main["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert job["spec"]["activeDeadlineSeconds"] == 7200  # the hard stop at the window's end
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts["/work"] == "notebook" and mounts["/home/ebroker"] == "notebook-home"
    assert mounts["/scratch"] == mounts["/input"] == "storage-0"
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/home/ebroker"  # writable with a read-only root
    assert {"name": "notebook", "emptyDir": {}} in pod["volumes"]


def test_the_notebook_is_fetched_into_the_servers_root_before_the_data_is_staged() -> None:
    job = notebook_built(options(notebook_image=NOTEBOOK_IMAGE))["job"]
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    fetch, stage = pod["initContainers"]
    assert (fetch["name"], stage["name"]) == ("fetch-notebook", "stage-0")
    command = fetch["command"]
    assert command[:2] == ["sh", "-c"] and command[3:6] == ["fetch", "/stage", "Analysis_1.ipynb"]
    assert command[-1] == "https://notebooks.example.org/lab/Analysis%201.ipynb?v=3"
    assert "notebooks.example.org:443:192.0.2.80" in command  # pinned, as judged
    assert fetch["volumeMounts"] == [{"name": "notebook", "mountPath": "/stage"}]
    assert fetch["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_notebook_connector_opens_the_notebook_through_the_ingress_with_the_token() -> None:
    opts = options(**NOTEBOOK_VARIANTS["notebook-ingress-path"])
    found = notebook_built(opts)
    execution = notebook_session()
    service, ingress, job = found["service"], found["ingress"], found["job"]
    assert service is not None and ingress is not None and job is not None
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8888, 8888)
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == f"/s/ebroker-{SESSION}/"
    (connector,) = manifests.connectors(execution, opts, service, ingress)
    assert connector["url"] == (
        f"https://apps.example.org/s/ebroker-{SESSION}/notebooks/Analysis_1.ipynb?token={TOKEN}"
    )
    # the server serves under the Ingress path, so the URL reaches it unchanged
    main = job["spec"]["template"]["spec"]["containers"][0]
    assert f"--ServerApp.base_url=/s/ebroker-{SESSION}/" in main["command"]
    assert main["readinessProbe"]["httpGet"]["path"] == f"/s/ebroker-{SESSION}/api"
    plain = options(notebook_image=NOTEBOOK_IMAGE)
    (connector,) = manifests.connectors(
        execution, plain, manifests.service_manifest(execution, plain, "k8s"), None
    )
    assert connector["url"] == (
        f"http://ebroker-{SESSION}.science.svc.cluster.local:8888"
        f"/notebooks/Analysis_1.ipynb?token={TOKEN}"
    )


def test_a_location_that_names_no_notebook_opens_the_file_list() -> None:
    execution = notebook_session("https://notebooks.example.org/lab/")
    assert manifests.notebook_entry(execution) is None
    assert manifests.ports(execution)[0].path == "/tree"


@pytest.mark.parametrize(
    "change,match",
    [
        ({"notebook_image": None}, "no notebook_image"),
        ({"location": "file:///etc/passwd"}, "http"),
        ({"location": " "}, "no location"),
        ({"volume": "/work"}, "notebook server's own directory"),
    ],
)
def test_notebooks_that_cannot_run_are_refused_before_the_booked_start(
    change: dict[str, Any], match: str
) -> None:
    execution = notebook_session(change.get("location", "https://x.org/a.ipynb"))
    if "volume" in change:
        execution.compute.volumes[0].path = change["volume"]
    opts = options(notebook_image=change.get("notebook_image", NOTEBOOK_IMAGE))
    kind = manifests.executable_kind(execution)
    with pytest.raises(PlatformError, match=match):
        kind.container(execution, opts, kind.image(execution, opts))
        kind.init_containers(execution, opts)
