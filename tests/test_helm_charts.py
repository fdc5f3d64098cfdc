"""The Helm charts of deploy/helm (ebroker-node, ebroker-aggregator), without a cluster:
linted strictly and rendered with helm-python-sdk (Helm's own library) for several value sets;
every rendered manifest validated against the Kubernetes OpenAPI schema of ``KUBE_VERSION``
(the kubernetes platform's tests' version) and checked against the restricted Pod Security
Standard; bad values refused by the charts' values.schema.json; the RBAC and the sessions'
NetworkPolicy the same as deploy/kubernetes/'s; the configuration a chart renders accepted by
``ebroker check-config`` (in this process here; in the image in tests/test_image.py); and the
rendered manifests compared with snapshots in tests/snapshots/helm
(``EBROKER_UPDATE_SNAPSHOTS=1`` rewrites them, to be read in the diff and committed).
"""

from __future__ import annotations

import base64
import copy
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.test_platform_kubernetes_manifests import KUBE_VERSION

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "deploy" / "helm"
NODE = CHARTS / "ebroker-node"
AGGREGATOR = CHARTS / "ebroker-aggregator"
KUBERNETES = ROOT / "deploy" / "kubernetes"
EXAMPLES = CHARTS / "examples"
SNAPSHOTS = Path(__file__).parent / "snapshots" / "helm"
RELEASE, NAMESPACE = "ebroker", "broker"
# kinds no Kubernetes OpenAPI schema has: a CRD's (Prometheus Operator)
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# --- the value sets -------------------------------------------------------------------------

KUBERNETES_NODE = yaml.safe_load((KUBERNETES / "node.yaml").read_text())

VALUE_SETS: dict[str, tuple[Path, dict[str, Any]]] = {
    # the chart's defaults: one replica on an embedded SQLite, a simulated platform
    "node-minimal": (NODE, {}),
    # production: PostgreSQL by URL from an existing Secret, three replicas, an Ingress with
    # TLS, OIDC and Basic users, a remote policy with a credential, the optional objects
    "node-production": (
        NODE,
        {
            "replicaCount": 3,
            "image": {"repository": "registry.example.org/ebroker", "tag": "0.1.0"},
            "imagePullSecrets": [{"name": "registry-login"}],
            "config": {
                "site": {"name": "example-site", "description": "The example site"},
                "server": {"workers": 2},
                "offers": {"hold": "PT5M", "max_offers": 4},
                "auth": {
                    "anonymous": False,
                    "admin_groups": ["sso:ebroker-admins"],
                    "issuers": [
                        {
                            "name": "sso",
                            "issuer": "https://sso.example.org/realms/science",
                            "audience": ["ebroker"],
                        }
                    ],
                    "basic": {
                        "users": [
                            {
                                "name": "alice",
                                "password_hash": {"secret_file": "/run/secrets/ebroker/alice"},
                                "groups": ["operators"],
                            }
                        ]
                    },
                },
                "policies": [
                    {
                        "name": "quota",
                        "type": "remote",
                        "options": {
                            "url": "https://policy.example.org/decide",
                            "headers": {
                                "Authorization": {"secret_file": "/run/secrets/ebroker/policy"}
                            },
                        },
                    }
                ],
                "platforms": [
                    {
                        "name": "cluster",
                        "type": "simulated",
                        "pools": [
                            {
                                "name": "main",
                                "inventories": {
                                    "cores": {"total": 1000},
                                    "memory": {"total": 500},
                                    "storage": {"total": 20000},
                                },
                            }
                        ],
                    }
                ],
            },
            "database": {
                "type": "postgresql",
                "postgresql": {"existingSecret": "ebroker-database", "existingSecretKey": "url"},
            },
            "secretFiles": [
                {"file": "alice", "secret": "ebroker-users", "key": "alice"},
                {"file": "policy", "value": "Bearer policy-credential-0123456789"},
            ],
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "hosts": [
                    {"host": "broker.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}
                ],
                "tls": [{"secretName": "broker-tls", "hosts": ["broker.example.org"]}],
            },
            "resources": {
                "requests": {"cpu": "2", "memory": "1Gi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
            "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
            "networkPolicy": {
                "enabled": True,
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                        }
                    }
                ],
            },
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        },
    ),
    # the kubernetes platform of deploy/kubernetes/node.yaml, in the cluster: the RBAC it needs
    # and the sessions' NetworkPolicy, in its namespace
    "node-kubernetes": (
        NODE,
        {
            "config": {
                "site": KUBERNETES_NODE["site"],
                "platforms": KUBERNETES_NODE["platforms"],
            },
            "sessionsNetworkPolicy": {"enabled": True},
        },
    ),
    # the README's full values.yaml: the 1000/500 site, its sessions on the kubernetes platform
    "node-1000-500": (NODE, yaml.safe_load((EXAMPLES / "node-1000-500.yaml").read_text())),
    "aggregator-minimal": (AGGREGATOR, {}),
    "aggregator-production": (
        AGGREGATOR,
        {
            "replicaCount": 2,
            "config": {
                "site": {"name": "national"},
                "fanout": {"deadline": "PT8S", "max_offers": 16, "order": "cost"},
                "upstreams": [
                    {"name": "site-a", "url": "http://ebroker-node.site-a.svc", "weight": 2},
                    {
                        "name": "europe",
                        "url": "https://eu-broker.example.org",
                        "token": {"secret_file": "/run/secrets/ebroker/europe"},
                    },
                ],
            },
            "database": {
                "type": "postgresql",
                "postgresql": {"url": "postgresql+psycopg://aggregator:pw-0123456789@db/agg"},
            },
            "secretFiles": [{"file": "europe", "value": "upstream-token-0123456789"}],
            "ingress": {
                "enabled": True,
                "hosts": [{"host": "broker.example.org", "paths": [{"path": "/"}]}],
                "tls": [{"secretName": "broker-tls", "hosts": ["broker.example.org"]}],
            },
            "podDisruptionBudget": {"enabled": True},
        },
    ),
}

# --- rendering ------------------------------------------------------------------------------


def render_templates(chart: Path, values: dict[str, Any]) -> dict[str, str]:
    loaded = helm_python.Chart.load(str(chart))
    return loaded.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)


def manifests_of(templates: dict[str, str]) -> list[dict[str, Any]]:
    """Every object the templates make (NOTES.txt is text, not an object)."""
    found = []
    for path, text in sorted(templates.items()):
        if path.endswith(".txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def render(name: str) -> list[dict[str, Any]]:
    chart, values = VALUE_SETS[name]
    return manifests_of(render_templates(chart, values))


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        m for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]  # fmt: skip
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


@dataclass
class PodFiles:
    """What one of the chart's pods gives its container: command, arguments, environment, and
    the files of its volumes (ConfigMap and Secrets), by mount path; for check-config here and
    for podman in the image."""

    command: list[str] | None
    args: list[str]
    env: dict[str, str]
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # mount path -> name -> text
    writable: list[str] = field(default_factory=list)  # mount paths of emptyDirs and claims


def pod_files(
    manifests: list[dict[str, Any]],
    existing: dict[tuple[str, str], str],
    kind: str = "Deployment",
) -> PodFiles:
    """The pod of the one ``kind`` object (the Deployment, or the migration Job), with the
    texts of its Secrets: the rendered ones', or ``existing``'s for (Secret, key) the chart only
    names."""
    spec = one(manifests, kind)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    secrets = {
        m["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in m["data"].items()}
        for m in manifests
        if m["kind"] == "Secret"
    }
    configmaps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}

    def secret_texts(name: str, items: list[dict[str, str]]) -> dict[str, str]:
        given = secrets.get(name)
        return {
            i["path"]: given[i["key"]] if given is not None else existing[(name, i["key"])]
            for i in items
        }

    pod = PodFiles(
        command=container.get("command"),
        args=container["args"],
        env={e["name"]: e["value"] for e in container.get("env", [])},
    )
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            pod.files[mount["mountPath"]] = dict(configmaps[volume["configMap"]["name"]])
        elif "projected" in volume:
            texts: dict[str, str] = {}
            for source in volume["projected"]["sources"]:
                texts |= secret_texts(source["secret"]["name"], source["secret"]["items"])
            pod.files[mount["mountPath"]] = texts
        elif "secret" in volume:
            secret = volume["secret"]
            pod.files[mount["mountPath"]] = secret_texts(secret["secretName"], secret["items"])
        else:
            pod.writable.append(mount["mountPath"])
    return pod


def write_pod_files(pod: PodFiles, root: Path) -> dict[str, Path]:
    """The pod's files under ``root``, one directory per mount path (which it returns)."""
    places = {}
    for index, mount in enumerate([*pod.files, *pod.writable]):
        place = root / f"mount{index}"
        place.mkdir(parents=True)
        for name, text in pod.files.get(mount, {}).items():
            (place / name).write_text(text)
        places[mount] = place
    return places


def hashed(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


# --- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("chart", [NODE, AGGREGATOR], ids=lambda p: p.name)
def test_charts_lint_strictly(chart: Path) -> None:
    report = helm_python.lint(str(chart), strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    # 1 is information (e.g. "icon is recommended"); 2 and 3, warnings and errors, fail
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["total_charts_linted"] == 1


BAD_VALUES: dict[str, tuple[Path, dict[str, Any]]] = {
    "sqlite-with-replicas": (NODE, {"replicaCount": 3}),
    "postgresql-without-url": (NODE, {"database": {"type": "postgresql"}}),
    "postgresql-url-not-postgresql": (
        NODE, {"database": {"type": "postgresql", "postgresql": {"url": "mysql://db/x"}}},
    ),
    "replicas-without-migration-job": (
        NODE,
        {
            "replicaCount": 2,
            "database": {"type": "postgresql", "postgresql": {"url": "postgresql://db/x"}},
            "migration": {"enabled": False},
        },
    ),
    "database-url-in-config": (NODE, {"config": {"database": {"url": "sqlite:///x.db"}}}),
    "port-in-config": (NODE, {"config": {"server": {"port": 9000}}}),
    "unknown-config-section": (NODE, {"config": {"offerz": {}}}),
    "unknown-value": (NODE, {"replicas": 2}),
    "privilege-escalation": (NODE, {"securityContext": {"allowPrivilegeEscalation": True}}),
    "root": (NODE, {"podSecurityContext": {"runAsNonRoot": False}}),
    "capabilities-kept": (NODE, {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
    "privileged-port": (NODE, {"containerPort": 80}),
    "ingress-without-hosts": (NODE, {"ingress": {"enabled": True, "hosts": []}}),
    "bad-pull-policy": (NODE, {"image": {"pullPolicy": "Sometimes"}}),
    "probe-elsewhere": (NODE, {"livenessProbe": {"httpGet": {"path": "/", "port": "http"}}}),
    "secret-file-value-and-secret": (
        NODE, {"secretFiles": [{"file": "x", "value": "v", "secret": "s", "key": "k"}]},
    ),
    "secret-file-bad-name": (NODE, {"secretFiles": [{"file": "../etc/passwd", "value": "v"}]}),
    "aggregator-without-upstreams": (AGGREGATOR, {"config": {"upstreams": []}}),
    "aggregator-token-in-values": (
        AGGREGATOR, {"config": {"upstreams": [{"name": "a", "url": "http://a", "token": "t"}]}},
    ),
    "aggregator-sqlite-with-replicas": (AGGREGATOR, {"replicaCount": 2}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_schema_refuses_bad_values(name: str) -> None:
    chart, values = BAD_VALUES[name]
    loaded = helm_python.Chart.load(str(chart))
    with pytest.raises(helm_python.HelmValuesError):
        loaded.validate_schema(copy.deepcopy(values))
    with pytest.raises(helm_python.HelmValuesError):  # an install validates them too
        render_templates(chart, values)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_schema_accepts_the_value_sets(name: str) -> None:
    chart, values = VALUE_SETS[name]
    helm_python.Chart.load(str(chart)).validate_schema(copy.deepcopy(values))


def test_schemas_know_every_configuration_section() -> None:
    """values.schema.json refuses an unknown section of config: its sections must be the
    models' own, or a real section would be refused too."""
    import json

    from aggregator.config import AggregatorConfig
    from broker_core.config import NodeConfig

    for chart, model in ((NODE, NodeConfig), (AGGREGATOR, AggregatorConfig)):
        schema = json.loads((chart / "values.schema.json").read_text())
        config = schema["properties"]["config"]
        assert config["additionalProperties"] is False
        assert set(config["properties"]) == set(model.model_fields), chart.name


# the keys whose children are Kubernetes' or ebroker's own fields, documented there
FREE_FORM = {"config", "resources", "jobResources", "podSecurityContext", "securityContext",
             "livenessProbe", "readinessProbe", "startupProbe"}  # fmt: skip


@pytest.mark.parametrize("chart", [NODE, AGGREGATOR], ids=lambda p: p.name)
def test_values_are_documented_key_by_key(chart: Path) -> None:
    """Every key of values.yaml with a value (but the free-form blocks' children) has a
    comment of its own, above it or on its line (a group's keys are documented one by one),
    and every key is in the schema."""
    import json

    lines = (chart / "values.yaml").read_text().splitlines()
    schema = json.loads((chart / "values.schema.json").read_text())["properties"]
    undocumented, unknown = [], []
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = [p for _, p in parents] + [key]
        parents.append((indent, key))
        if path[0] in FREE_FORM and len(path) > 1:
            continue
        group = line.split(":", 1)[1].strip() == ""
        before = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        if not group and not (before.startswith("#") or "#" in line.split(":", 1)[1]):
            undocumented.append(".".join(path))
        node: dict[str, Any] | None = {"properties": schema}
        for part in path:
            node = node or {}
            node = node.get("items", node).get("properties", {}).get(part)  # lists: their items
        if node is None:
            unknown.append(".".join(path))
    assert undocumented == []
    assert unknown == []


# --- what is rendered -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    manifests = render(name)
    assert manifests
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        name = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            yield name, m["spec"]
        elif m["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield name, m["spec"]["template"]["spec"]


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard (with baseline's checks) refuses in a pod
    spec: https://kubernetes.io/docs/concepts/security/pod-security-standards/."""
    found = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            found.append(f"{host} is true")
    pod = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']} is {sorted(types)}")
    if pod.get("sysctls"):
        found.append("sysctls are set")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser is 0")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds {capabilities['add']}")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {sc['procMount']}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
        if not c.get("resources", {}).get("limits") or not c["resources"].get("requests"):
            found.append(f"{name}: no resource requests and limits")  # the issue's, not PSS's
    return found


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_pod_is_admitted_by_the_restricted_pod_security_standard(name: str) -> None:
    specs = dict(pod_specs(render(name)))
    assert any(k.startswith("Deployment/") for k in specs) and any(
        k.startswith("Pod/") for k in specs
    )  # the node, and the helm test's pod
    assert {k: restricted_violations(s) for k, s in specs.items()} == {k: [] for k in specs}


def test_the_restricted_check_finds_what_the_standard_refuses() -> None:
    spec = copy.deepcopy(dict(pod_specs(render("node-minimal")))["Deployment/ebroker-ebroker-node"])
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    container = spec["containers"][0]
    container["securityContext"] = {"allowPrivilegeEscalation": True, "runAsUser": 0}
    del spec["securityContext"]["runAsNonRoot"], spec["securityContext"]["seccompProfile"]
    found = restricted_violations(spec)
    assert len(found) == 7, found  # host network, hostPath, escalation, root (2), seccomp, caps


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_match_their_snapshot(name: str) -> None:
    chart, values = VALUE_SETS[name]
    templates = render_templates(chart, values)
    text = "".join(
        f"# Source: {path}\n{body.strip()}\n---\n"
        for path, body in sorted(templates.items())
        if body.strip()
    )
    path = SNAPSHOTS / f"{name}.yaml"
    if os.environ.get("EBROKER_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with EBROKER_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} differs from {path}"


def test_minimal_node_is_one_replica_on_sqlite_migrating_at_start() -> None:
    manifests = render("node-minimal")
    assert kinds(manifests) == sorted(
        ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Pod", "Service", "ServiceAccount"]
    )
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one writer of the file
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["node.yaml"])
    assert config["database"] == {
        "url": "sqlite:////var/lib/ebroker/data/ebroker.db", "migrate_on_start": True,
    }  # fmt: skip
    assert config["server"] == {"host": "0.0.0.0", "port": 8080}
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False  # no kubernetes platform: no token
    container = spec["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_production_node_migrates_once_in_a_hook_and_runs_several_replicas() -> None:
    manifests = render("node-production")
    job = one(manifests, "Job")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["node.yaml"])
    assert config["database"] == {"migrate_on_start": False}  # the URL comes as a file
    assert config["server"]["public_url"] == "https://broker.example.org"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EBROKER_DATABASE__URL_FILE"] == "/run/secrets/ebroker/database-url"
    ingress = one(manifests, "Ingress")
    assert ingress["spec"]["tls"] == [{"secretName": "broker-tls", "hosts": ["broker.example.org"]}]
    assert one(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "Role" not in kinds(manifests) and "ClusterRole" not in kinds(manifests)


def test_secrets_are_only_in_secrets() -> None:
    """A secret given as a value is in a Secret, base64, and nowhere else: not in the
    ConfigMap, not in the Deployment's environment, not in NOTES.txt."""
    for name, secret in (
        ("node-production", "policy-credential-0123456789"),
        ("aggregator-production", "upstream-token-0123456789"),
        ("aggregator-production", "pw-0123456789"),
    ):
        chart, values = VALUE_SETS[name]
        templates = render_templates(chart, values)
        assert not [path for path, text in templates.items() if secret in text], name
        encoded = [
            m for m in manifests_of(templates)
            if m["kind"] == "Secret"
            and any(secret in base64.b64decode(v).decode() for v in m["data"].values())
        ]  # fmt: skip
        assert encoded, name


Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def rules(manifest: dict[str, Any]) -> list[Rule]:
    return sorted(
        (tuple(r["apiGroups"]), tuple(sorted(r["resources"])), tuple(sorted(r["verbs"])))
        for r in manifest["rules"]
    )


def test_kubernetes_platform_gets_the_rbac_of_deploy_kubernetes() -> None:
    """The chart's RBAC is deploy/kubernetes/rbac.yaml's, with the release's names: the same
    kinds, the same rules, the Role in the platform's namespace, bound to the node's
    ServiceAccount, which alone mounts a token."""
    reference = [d for d in yaml.safe_load_all((KUBERNETES / "rbac.yaml").read_text()) if d]
    manifests = render("node-kubernetes")
    rbac_kinds = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
    ours = [m for m in manifests if m["kind"] in rbac_kinds]
    assert sorted(m["kind"] for m in ours) == sorted(m["kind"] for m in reference)
    namespace = KUBERNETES_NODE["platforms"][0]["options"]["namespace"]
    for kind in ("Role", "ClusterRole"):
        (theirs,) = [m for m in reference if m["kind"] == kind]
        assert rules(one(manifests, kind)) == rules(theirs), kind
    assert one(manifests, "Role")["metadata"]["namespace"] == namespace
    account = one(manifests, "ServiceAccount")
    assert account["automountServiceAccountToken"] is True
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"]}
    subject["namespace"] = NAMESPACE
    for binding, role in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        made = one(manifests, binding)
        assert made["subjects"] == [subject]
        assert made["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": role,
            "name": one(manifests, role)["metadata"]["name"],
        }  # fmt: skip
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True
    # the sessions' NetworkPolicy is deploy/kubernetes/networkpolicy.yaml's, in that namespace
    policy = one(manifests, "NetworkPolicy")
    reference_policy = yaml.safe_load((KUBERNETES / "networkpolicy.yaml").read_text())
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"] == reference_policy["spec"]


def test_no_rbac_without_a_kubernetes_platform() -> None:
    for name in ("node-minimal", "node-production", "aggregator-production"):
        found = {m["kind"] for m in render(name)}
        assert not found & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}, name


def test_notes_say_how_to_reach_the_node() -> None:
    for name, where in (
        ("node-minimal", f"http://ebroker-ebroker-node.{NAMESPACE}.svc:80/node"),
        ("node-production", "https://broker.example.org/node"),
        ("aggregator-minimal", f"http://ebroker-ebroker-aggregator.{NAMESPACE}.svc:80/node"),
    ):
        chart, values = VALUE_SETS[name]
        notes = [t for p, t in render_templates(chart, values).items() if p.endswith("NOTES.txt")]
        assert len(notes) == 1 and where in notes[0], name


def test_helm_test_asks_the_service_for_node() -> None:
    for name in ("node-minimal", "aggregator-minimal"):
        pod = one(render(name), "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        service = one(render(name), "Service")["metadata"]["name"]
        assert f"http://{service}:80/node" in pod["spec"]["containers"][0]["args"][0]


# --- the configuration a chart renders, read as the node reads it ----------------------------


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a command with exactly the pod's EBROKER_* environment."""

    def use(env: dict[str, str]) -> None:
        for name in list(os.environ):
            if name.upper().startswith("EBROKER_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return use


def in_place(pod: PodFiles, places: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
    """The pod's arguments and environment with its mount paths moved to ``places``."""

    mounts = re.compile("|".join(re.escape(m) for m in sorted(places, key=len, reverse=True)))

    def moved(text: str) -> str:
        return mounts.sub(lambda found: str(places[found[0]]), text)

    for place in places.values():
        for file in place.iterdir():
            file.write_text(moved(file.read_text()))
    return [moved(a) for a in pod.args], {k: moved(v) for k, v in pod.env.items()}


@pytest.mark.parametrize("name", ["node-minimal", "node-kubernetes"])
def test_rendered_node_config_passes_check_config(
    name: str, tmp_path: Path, pod_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ebroker.cli import main

    pod = pod_files(render(name), {})
    args, env = in_place(pod, write_pod_files(pod, tmp_path))
    pod_env(env)
    assert args[0] == "serve"
    assert main(["check-config", *args[1:]]) == 0, capsys.readouterr()
    assert "configuration OK" in capsys.readouterr().out


def existing_secrets(pg_url: str) -> dict[tuple[str, str], str]:
    """What the sites of the value sets keep in Secrets of their own, which the charts only
    name: the test server's URL, real password hashes, a policy's token."""
    return {
        ("ebroker-database", "url"): pg_url + "\n",  # with the newline `kubectl` may leave
        ("ebroker-users", "alice"): hashed("alice's password"),
        ("ebroker-users", "monitor"): hashed("the monitor's password"),
        ("ebroker-policy", "token"): "Bearer policy-token-0123456789",
    }


# what check-config says of each PostgreSQL value set: its site, platforms and policies
SAID = {
    "node-production": "configuration OK: site 'example-site', 1 platform(s), 1 policy(ies)",
    "node-1000-500": "configuration OK: site 'example-site', 1 platform(s), 2 policy(ies)",
}


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(SAID))
def test_postgresql_node_config_passes_check_config(
    name: str,
    pg_server_url: str,
    tmp_path: Path,
    pod_env: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value set on PostgreSQL, its existing Secrets holding the test server's URL and real
    password hashes: check-config reads every secret file and reaches the database."""
    from ebroker.cli import main

    pod = pod_files(render(name), existing_secrets(pg_server_url))
    args, env = in_place(pod, write_pod_files(pod, tmp_path))
    pod_env(env)
    assert main(["check-config", *args[1:]]) == 0, capsys.readouterr()
    assert SAID[name] in capsys.readouterr().out


@pytest.mark.parametrize("name", ["aggregator-minimal", "aggregator-production"])
def test_rendered_aggregator_config_loads(name: str, tmp_path: Path) -> None:
    from aggregator.config import load_aggregator_config

    pod = pod_files(render(name), {})
    args, env = in_place(pod, write_pod_files(pod, tmp_path))
    assert args[:2] == ["aggregator", "-c"]
    config = load_aggregator_config(args[2], environ=env)
    assert config.server.port == 8080
    if name == "aggregator-production":
        assert config.database.url.startswith("postgresql+psycopg://aggregator:")
        assert config.database.migrate_on_start is False
        assert config.upstreams[1].token == "upstream-token-0123456789"
