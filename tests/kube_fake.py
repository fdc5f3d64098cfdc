"""A fake Kubernetes API server at the HTTP level, for the kubernetes platform's tests.

No kube-apiserver can run here, so this speaks the part of the API the platform uses, the way
the real one does, and the official client talks to it unmodified through a kubeconfig file:

- the real paths: core v1 nodes, pods (and ``pods/log``), events, persistentvolumeclaims,
  services, secrets, resourcequotas; batch/v1 jobs; networking.k8s.io/v1 ingresses;
  bearer-token auth;
- get, list, create, replace, patch (merge, strategic-merge as merge, and JSON patch), delete
  (one, or a collection by selector) with the API's propagation policies (a Job's default is
  to orphan its pods, as on a real cluster); resourceVersions and uids; ``labelSelector`` and
  ``fieldSelector``; 404s, 409s and 422s as ``Status`` objects;
- ``?watch=true`` streams (chunked, one JSON event per line) from a resourceVersion, and a
  ``410 Expired`` error event once that version has been compacted away (``history_limit``);
- admission as the API server does it: ResourceQuotas (a pod over a hard limit is forbidden,
  and the job controller records ``FailedCreate`` on its Job), and ``pvc-protection`` (a
  claim deleted while a pod uses it stays, with a deletionTimestamp, until the pod is gone);
- every object it receives validated against the Kubernetes OpenAPI schema of ``VERSION``
  (kubernetes-validate, strict), refused with a 422 like the API server's;
- controllers on a clock: claims bind; the job controller makes each Job's pod, and marks the
  Job complete, failed, or past its ``activeDeadlineSeconds``; the scheduler binds pods to
  Ready, schedulable nodes whose labels, taints and free resources fit, or records a
  ``FailedScheduling`` event with its message; a kubelet pulls images (unknown images back off
  with ``ImagePullBackOff``), resolves ``valueFrom.secretKeyRef`` (a missing Secret or key is a
  ``CreateContainerConfigError``), runs init containers then the main container, and ends the
  pod; Secrets keep ``data`` base64 (``stringData`` merged in) and refuse changes once
  ``immutable``.

Containers run in a tiny interpreter of busybox-style ``sh -c`` scripts (``echo``, ``sleep``,
``exit``, ``cat``, ``mkdir -p``, ``curl -o``, ``true``/``false``, ``set -e``) against one
directory per claim (and per pod for an ``emptyDir``), so staged data is real and the output is
what a real busybox would print; a script given arguments (the stagers' bounded download) runs
in the real ``sh`` and ``curl``, its paths mapped to those directories. An image in
``programs`` runs a test's stand-in for its program instead (a notebook server), given the same
arguments, environment and files.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import copy
import json
import random
import re
import shlex
import shutil
import string
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import yaml

VERSION = "1.37"
TICK = 0.1
Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES = {
    r.plural: r
    for r in [
        Resource("", "v1", "nodes", "Node", namespaced=False),
        Resource("", "v1", "namespaces", "Namespace", namespaced=False),
        Resource("", "v1", "pods", "Pod"),
        Resource("", "v1", "events", "Event"),
        Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
        Resource("", "v1", "services", "Service"),
        Resource("", "v1", "secrets", "Secret"),
        Resource("", "v1", "resourcequotas", "ResourceQuota"),
        Resource("batch", "v1", "jobs", "Job"),
        Resource("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ]
}
# what DELETE answers with the object deleted (the others answer a Status), as the API does
PVC_PROTECTION = "kubernetes.io/pvc-protection"
RETURNS_DELETED = {
    "nodes",
    "namespaces",
    "pods",
    "services",
    "persistentvolumeclaims",
    "resourcequotas",
}
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z0-9.-]+)/(?P<version>v[0-9a-z]+))"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>log|status))?$"
)


def now_text(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def quantity(text: Any) -> float:
    """A Kubernetes quantity (``500m``, ``4``, ``16Gi``, ``1e3``) as a number."""
    value = str(text)
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "n": 1e-9,
        "u": 1e-6,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


# --- selectors -----------------------------------------------------------------------------------


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


def label_matcher(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A label selector as the API parses it: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``,
    ``a in (x,y)``, ``a notin (x,y)``."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(text or ""):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, v=values: labels.get(k) in v)
            else:
                tests.append(lambda labels, k=key, v=values: labels.get(k) not in v)
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m[1], m[2], m[3]
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := re.fullmatch(r"!\s*(\S+)", term):
            tests.append(lambda labels, k=m[1]: k not in labels)
        elif re.fullmatch(r"\S+", term):
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(test(labels) for test in tests)


def _path_value(obj: Obj, dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(text: str | None) -> Callable[[Obj], bool]:
    tests = []
    for term in _split_terms(text or ""):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, value = m[1], m[2], m[3]
        if op == "!=":
            tests.append(lambda obj, p=path, v=value: _path_value(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: _path_value(obj, p) == v)
    return lambda obj: all(test(obj) for test in tests)


# --- patches -------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902's add, replace and remove (what clients send for single fields)."""
    result = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch operation {op['op']}")
    return result


# --- containers ----------------------------------------------------------------------------------


@dataclass
class Run:
    """A container's life, worked out when it starts: output lines at their offsets, when it
    ends and with what exit code."""

    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    duration: float = 0.0
    exit_code: int = 0

    def output(self, at: float) -> str:
        return "".join(text for offset, text in self.lines if self.started + offset <= at)

    def ended(self, at: float) -> bool:
        return at >= self.started + self.duration


def _expand(word: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m[1], ""), word)


def run_script(
    argv: list[str], env: dict[str, str], files: Callable[[str], Path | None], started: float
) -> Run:
    """Interpret a busybox ``sh -c`` script (or a bare ``sleep``/``echo``/``true``)."""
    run = Run(started)
    if argv[:1] in (["/bin/busybox"], ["busybox"]):
        argv = argv[1:]
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) and len(argv) > 3:
        return _real_sh(argv, env, files, run)
    if argv[:1] in (["sh"], ["/bin/sh"]) and len(argv) >= 3 and argv[1] == "-c":
        script = argv[2]
    else:
        script = shlex.join(argv)
    errexit, clock = False, 0.0
    statements = [s for line in script.splitlines() for s in re.split(r";|&&", line)]
    for statement in statements:
        try:
            words = [_expand(w, env) for w in shlex.split(statement)]
        except ValueError:
            words = statement.split()
        if not words:
            continue
        name, args = words[0], words[1:]
        code = 0
        if name == "echo":
            run.lines.append((clock, " ".join(args) + "\n"))
        elif name == "sleep":
            clock += float(args[0]) if args else 0
        elif name == "exit":
            run.duration, run.exit_code = clock, int(args[0]) if args else 0
            return run
        elif name in ("true", ":"):
            pass
        elif name == "false":
            code = 1
        elif name == "set":
            errexit = errexit or "-e" in args
        elif name == "cat":
            for arg in args:
                path = files(arg)
                if path is None or not path.is_file():
                    run.lines.append(
                        (clock, f"cat: can't open '{arg}': No such file or directory\n")
                    )
                    code = 1
                else:
                    run.lines.append((clock, path.read_text(errors="replace")))
        elif name == "mkdir":
            for arg in (a for a in args if not a.startswith("-")):
                path = files(arg)
                if path is None:
                    code = 1
                else:
                    path.mkdir(parents=True, exist_ok=True)
        elif name == "curl":
            code = _curl(args, files, run, clock)
            clock += 0.2
        else:
            run.lines.append((clock, f"sh: {name}: not found\n"))
            code = 127
        if code and errexit:
            run.duration, run.exit_code = clock, code
            return run
    run.duration = clock
    return run


def _real_sh(
    argv: list[str], env: dict[str, str], files: Callable[[str], Path | None], run: Run
) -> Run:
    """A script given its arguments (``sh -c SCRIPT NAME ARGS...``, as the stagers' download
    is) runs in the real ``sh`` with the real ``curl``: each argument naming a path in one of
    the container's mounts is given as that mount's directory on this machine."""
    mapped = [
        str(files(arg)) if arg.startswith("/") and files(arg) is not None else arg
        for arg in argv[3:]
    ]
    environment = {"PATH": "/usr/bin:/bin", **env}
    try:
        done = subprocess.run(["/bin/sh", "-c", argv[2], *mapped], env=environment,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        run.lines.append((0.0, "sh: timed out\n"))
        run.exit_code = 124
        return run
    run.lines.append((0.0, done.stdout + done.stderr))
    run.duration, run.exit_code = 0.2, done.returncode
    return run


def _curl(args: list[str], files: Callable[[str], Path | None], run: Run, clock: float) -> int:
    target, url, skip = None, None, False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "-o":
            target, skip = args[i + 1], True
        elif arg in ("--retry", "--proto"):
            skip = True
        elif not arg.startswith("-"):
            url = arg
    path = files(target) if target else None
    if not url or path is None:
        return 2
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            path.write_bytes(answer.read())
    except OSError as exc:
        run.lines.append((clock, f"curl: (22) {exc}\n"))
        return 22
    return 0


# a test's stand-in for an image's program: (argv, env, files, started) -> its run
Program = Callable[[list[str], dict[str, str], Callable[[str], Path | None], float], Run]


# --- the cluster -------------------------------------------------------------------------------


class FakeCluster:
    """The API server's store and its controllers. ``images`` are the images the registry
    has: pods of any other image back off pulling it; those in ``programs`` run that program
    rather than the ``sh`` interpreter."""

    def __init__(
        self,
        token: str = "fake-token",
        images: set[str] | None = None,
        history_limit: int = 100_000,
        programs: dict[str, Program] | None = None,
    ):
        self.token = token
        self.history_limit = history_limit
        self.programs = dict(programs or {})
        self.images = set(images or ()) | set(self.programs)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in RESOURCES}
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, plural, type, object)
        self.rv = 100
        self.received: list[Obj] = []  # every object a client sent, as sent
        self.requests: list[tuple[str, str]] = []  # (method, path and query) of every request
        self.runs: dict[tuple[str, str, str], Run] = {}  # (ns, pod, container) -> run
        self.storage = Path(tempfile.mkdtemp(prefix="kube-fake-"))
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._control, daemon=True),
        ]

    # --- life ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeCluster:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.storage, ignore_errors=True)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file whose current context is this server."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": self.token}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                        }
                    ],
                }
            )
        )
        return path

    # --- the store ----------------------------------------------------------------------------

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, plural: str, kind: str, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = self._bump()
        self.history.append((self.rv, plural, kind, copy.deepcopy(obj)))
        if len(self.history) > self.history_limit:  # etcd compacts: older versions expire
            del self.history[: len(self.history) // 2]
        self.changed.notify_all()

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            found = self.objects[plural].get((namespace, name))
            return copy.deepcopy(found) if found else None

    def items(self, plural: str, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self.objects[plural].items())
                if namespace in (None, ns)
            ]

    def create(self, plural: str, namespace: str, body: Obj, received: bool = True) -> Obj:
        resource = RESOURCES[plural]
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        self._validate(obj, received)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            metadata["name"] = metadata["generateName"] + suffix
        name = metadata.get("name")
        if not name:
            raise ApiError(
                422,
                "Invalid",
                f'{resource.kind} "" is invalid: metadata.name: '
                "Required value: name or generateName is required",
            )
        ns = namespace if resource.namespaced else ""
        if resource.namespaced:
            if metadata.get("namespace", ns) != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does "
                    "not match the namespace sent on the request",
                )
            metadata["namespace"] = ns
        with self.lock:
            if plural == "pods":
                self._admit(ns, name, obj)
            if (ns, name) in self.objects[plural]:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{plural}.{resource.group or ""} "{name}" already exists'.replace(". ", " "),
                    {"name": name, "kind": plural, "group": resource.group},
                )
            metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now_text(), generation=1)
            self._default(plural, obj)
            self.objects[plural][(ns, name)] = obj
            self._record(plural, "ADDED", obj)
            return copy.deepcopy(obj)

    def replace(self, plural: str, namespace: str, name: str, obj: Obj) -> Obj:
        with self.lock:
            current = self.objects[plural].get((namespace, name))
            if current is None:
                raise self._not_found(plural, name)
            sent_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {plural} "
                    f'"{name}": the object has been modified; please apply your '
                    "changes to the latest version and try again",
                    {"name": name, "kind": plural},
                )
            obj = copy.deepcopy(obj)
            for key in (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "ownerReferences",
                "deletionTimestamp",
            ):
                if key in current["metadata"]:
                    obj["metadata"][key] = current["metadata"][key]
            if obj.get("spec") != current.get("spec"):
                obj["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if plural == "secrets":
                _secret_data(obj)
            self._check_immutable(plural, current, obj)
            self.objects[plural][(namespace, name)] = obj
            self._record(plural, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def update_status(
        self, plural: str, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> None:
        """What a controller does: change an object in place, as a new resourceVersion."""
        with self.lock:
            obj = self.objects[plural].get((namespace, name))
            if obj is None:
                return
            before = copy.deepcopy(obj)
            change(obj)
            if obj != before:
                self._record(plural, "MODIFIED", obj)

    def delete(
        self,
        plural: str,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace: int | None = None,
    ) -> Obj:
        with self.lock:
            obj = self.objects[plural].get((namespace, name))
            if obj is None:
                raise self._not_found(plural, name)
            if plural == "pods":
                period = (
                    grace
                    if grace is not None
                    else (obj["spec"].get("terminationGracePeriodSeconds", 30))
                )
                if period > 0 and not obj["metadata"].get("deletionTimestamp"):
                    # the kubelet stops the containers, then the pod goes (quickly, in here)
                    obj["metadata"]["deletionTimestamp"] = now_text(time.time() + period)
                    obj["metadata"]["deletionGracePeriodSeconds"] = period
                    self._record(plural, "MODIFIED", obj)
                    return copy.deepcopy(obj)
            if plural == "persistentvolumeclaims" and self._claim_in_use(namespace, name):
                # kubernetes.io/pvc-protection: the claim goes once no pod uses it
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = now_text()
                    self._record(plural, "MODIFIED", obj)
                return copy.deepcopy(obj)
            self._remove(plural, namespace, name)
            policy = propagation or ("Orphan" if plural == "jobs" else "Background")
            uid = obj["metadata"]["uid"]
            for (ns, child_name), child in list(self.objects["pods"].items()):
                owners = child["metadata"].get("ownerReferences") or []
                if ns == namespace and any(o.get("uid") == uid for o in owners):
                    if policy == "Orphan":
                        child["metadata"]["ownerReferences"] = [
                            o for o in owners if o.get("uid") != uid
                        ]
                        self._record("pods", "MODIFIED", child)
                    else:
                        self.delete("pods", ns, child_name, grace=1)
            if plural in RETURNS_DELETED:
                return copy.deepcopy(obj)
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": plural, "uid": uid},
            }

    def _remove(self, plural: str, namespace: str, name: str) -> None:
        obj = self.objects[plural].pop((namespace, name))
        self._record(plural, "DELETED", obj)
        if plural == "persistentvolumeclaims":
            shutil.rmtree(self.storage / obj["metadata"]["uid"], ignore_errors=True)
        if plural == "pods":  # its emptyDir volumes go with it
            shutil.rmtree(self.storage / "pods" / obj["metadata"]["uid"], ignore_errors=True)

    def _not_found(self, plural: str, name: str) -> ApiError:
        group = RESOURCES[plural].group
        what = f"{plural}.{group}" if group else plural
        return ApiError(
            404,
            "NotFound",
            f'{what} "{name}" not found',
            {"name": name, "kind": plural, "group": group},
        )

    def _validate(self, obj: Obj, received: bool = True) -> None:
        if received:
            self.received.append(copy.deepcopy(obj))
        try:
            kubernetes_validate.validate(obj, VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = (obj.get("metadata") or {}).get("name")
            raise ApiError(
                422,
                "Invalid",
                f'{obj.get("kind")} "{name}" is invalid: {where}: {exc.message}',
                {"name": name, "kind": obj.get("kind")},
            ) from None

    def _admit(self, namespace: str, name: str, pod: Obj) -> None:
        """The ResourceQuota admission plug-in: a pod that would take the namespace over a
        quota's hard limit is forbidden."""
        wanted = {f"requests.{k}": v for k, v in pod_requests(pod).items()}
        wanted["pods"] = 1
        used: dict[str, float] = {"pods": 0}
        for (ns, _), other in self.objects["pods"].items():
            if ns == namespace and other["status"].get("phase") not in ("Succeeded", "Failed"):
                used["pods"] += 1
                for key, value in pod_requests(other).items():
                    used[f"requests.{key}"] = used.get(f"requests.{key}", 0) + value
        for (ns, quota_name), quota in self.objects["resourcequotas"].items():
            if ns != namespace:
                continue
            for key, limit in (quota["spec"].get("hard") or {}).items():
                counted = key if key.startswith("requests.") or key == "pods" else f"requests.{key}"
                if counted not in wanted:
                    continue
                if used.get(counted, 0) + wanted[counted] > quantity(limit) + 1e-9:
                    raise ApiError(
                        403,
                        "Forbidden",
                        (
                            f'pods "{name}" is forbidden: exceeded quota: {quota_name}, requested: '
                            f"{key}={_quantity_text(wanted[counted])}, used: "
                            f"{key}={_quantity_text(used.get(counted, 0))}, limited: {key}={limit}"
                        ),
                        {"name": name, "kind": "pods"},
                    )

    def _check_immutable(self, plural: str, current: Obj, new: Obj) -> None:
        if plural == "secrets":
            name = current["metadata"]["name"]
            if new.get("type", "Opaque") != current.get("type"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: type: Invalid value: '
                    f'"{new.get("type")}": field is immutable',
                )
            if current.get("immutable") and any(
                new.get(key) != current.get(key) for key in ("data", "immutable")
            ):
                raise ApiError(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: data: Forbidden: '
                    "field is immutable when `immutable` is set",
                )
        if plural == "jobs":
            old = copy.deepcopy(current["spec"])
            changed = copy.deepcopy(new.get("spec") or {})
            for mutable in ("activeDeadlineSeconds", "suspend", "parallelism", "completions"):
                old.pop(mutable, None)
                changed.pop(mutable, None)
            if old != changed:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Job.batch "{current["metadata"]["name"]}" is '
                    "invalid: spec.template: Invalid value: field is immutable",
                )

    def _default(self, plural: str, obj: Obj) -> None:
        """What the API server fills in on create."""
        plain = ("events", "namespaces", "secrets")  # kinds without a spec
        spec = obj.setdefault("spec", {}) if plural not in plain else {}
        if plural == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
        elif plural == "jobs":
            uid = obj["metadata"]["uid"]
            selector = {"batch.kubernetes.io/controller-uid": uid}
            spec.setdefault("selector", {"matchLabels": selector})
            labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
            labels.update(
                {
                    **selector,
                    "controller-uid": uid,
                    "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                    "job-name": obj["metadata"]["name"],
                }
            )
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("suspend", False)
            obj["status"] = {}
        elif plural == "services":
            spec.setdefault("type", "ClusterIP")
            spec["clusterIP"] = f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
            used = {
                p.get("nodePort")
                for s in self.objects["services"].values()
                for p in s["spec"].get("ports") or []
            }
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port["port"])
                if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                    port["nodePort"] = next(p for p in range(30000, 32768) if p not in used)
                    used.add(port["nodePort"])
            obj["status"] = {"loadBalancer": {}}
        elif plural == "persistentvolumeclaims":
            obj["metadata"].setdefault("finalizers", []).append(PVC_PROTECTION)
            spec.setdefault("volumeMode", "Filesystem")
            spec.setdefault("storageClassName", "standard")
            obj["status"] = {"phase": "Pending"}
        elif plural == "resourcequotas":
            obj["status"] = {"hard": dict(spec.get("hard") or {}), "used": {}}
        elif plural == "ingresses":
            obj["status"] = {"loadBalancer": {}}
        elif plural == "secrets":
            obj.setdefault("type", "Opaque")
            _secret_data(obj)

    # --- what tests do as a cluster admin -----------------------------------------------------

    def add_node(
        self,
        name: str,
        cpu: str = "4",
        memory: str = "16Gi",
        gpus: int = 0,
        storage: str = "100Gi",
        labels: dict[str, str] | None = None,
        taints: list[Obj] | None = None,
        ready: bool = True,
    ) -> Obj:
        allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": storage, "pods": "110"}
        if gpus:
            allocatable["nvidia.com/gpu"] = str(gpus)
        node = {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": dict(allocatable),
                "allocatable": allocatable,
                "conditions": [_condition("Ready", ready, "KubeletReady")],
            },
        }
        return self.create("nodes", "", node, received=False)

    def set_ready(self, name: str, ready: bool) -> None:
        def change(node: Obj) -> None:
            node["status"]["conditions"] = [_condition("Ready", ready, "KubeletReady")]

        self.update_status("nodes", "", name, change)

    # --- controllers ------------------------------------------------------------------------

    def _control(self) -> None:
        while not self.stopping.wait(TICK):
            with self.lock:
                at = time.time()
                self._bind_claims()
                self._jobs(at)
                self._schedule(at)
                self._kubelet(at)
                self._quotas()

    def _claim_in_use(self, namespace: str, name: str) -> bool:
        return any(
            ns == namespace
            and pod["status"].get("phase") not in ("Succeeded", "Failed")
            and any(
                (v.get("persistentVolumeClaim") or {}).get("claimName") == name
                for v in pod["spec"].get("volumes") or []
            )
            for (ns, _), pod in self.objects["pods"].items()
        )

    def _bind_claims(self) -> None:
        for (ns, name), claim in list(self.objects["persistentvolumeclaims"].items()):
            if claim["metadata"].get("deletionTimestamp"):
                if not self._claim_in_use(ns, name):
                    self._remove("persistentvolumeclaims", ns, name)
                continue
            if claim["status"].get("phase") == "Pending":
                (self.storage / claim["metadata"]["uid"]).mkdir(parents=True, exist_ok=True)

                def bind(c: Obj) -> None:
                    c["spec"]["volumeName"] = f"pvc-{c['metadata']['uid']}"
                    c["status"] = {
                        "phase": "Bound",
                        "accessModes": c["spec"]["accessModes"],
                        "capacity": c["spec"]["resources"]["requests"],
                    }

                self.update_status("persistentvolumeclaims", ns, name, bind)

    def _pods_of(self, job: Obj) -> list[Obj]:
        uid = job["metadata"]["uid"]
        return [
            p
            for (ns, _), p in self.objects["pods"].items()
            if ns == job["metadata"]["namespace"]
            and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])
        ]

    def _jobs(self, at: float) -> None:
        for (ns, name), job in list(self.objects["jobs"].items()):
            conditions = job["status"].get("conditions") or []
            if any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions
            ):
                continue
            pods = self._pods_of(job)
            if not pods and not job["status"].get("startTime"):
                try:
                    self._make_pod(job)
                except ApiError as refused:
                    self._event(
                        job,
                        "FailedCreate",
                        f"Error creating: {refused.message}",
                        "Warning",
                        "job-controller",
                    )
                    continue
                self.update_status(
                    "jobs",
                    ns,
                    name,
                    lambda j: j["status"].update(
                        startTime=now_text(at), active=1, ready=0, terminating=0
                    ),
                )
                continue
            started = _epoch(job["status"].get("startTime"))
            deadline = job["spec"].get("activeDeadlineSeconds")
            if deadline is not None and started is not None and at >= started + deadline:
                for pod in pods:
                    self.delete("pods", ns, pod["metadata"]["name"], grace=1)
                self._finish(
                    ns,
                    name,
                    at,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
                continue
            phases = [p["status"].get("phase") for p in pods]
            if "Succeeded" in phases:
                self._finish(
                    ns,
                    name,
                    at,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
            elif "Failed" in phases:
                self._finish(
                    ns,
                    name,
                    at,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            else:
                counts = {"active": len(pods), "ready": phases.count("Running")}
                self.update_status("jobs", ns, name, lambda j, c=counts: j["status"].update(c))

    def _finish(self, ns: str, name: str, at: float, kind: str, reason: str, text: str) -> None:
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"

        def change(job: Obj) -> None:
            status = job["status"]
            status.update(active=0, ready=0)
            status["succeeded" if kind == "Complete" else "failed"] = 1
            if kind == "Complete":
                status["completionTime"] = now_text(at)
            status["conditions"] = [
                {**_condition(target, True, reason), "message": text},
                {**_condition(kind, True, reason), "message": text},
            ]

        self.update_status("jobs", ns, name, change)

    def _make_pod(self, job: Obj) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        metadata = template.get("metadata") or {}
        metadata.update(
            name=f"{job['metadata']['name']}-{suffix}",
            ownerReferences=[
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        )
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        self.create("pods", job["metadata"]["namespace"], pod, received=False)

    def _event(
        self, pod: Obj, reason: str, message: str, kind: str = "Normal", source: str = "kubelet"
    ) -> None:
        """An Event about ``pod`` (or any object: a Job's FailedCreate), counted up when the
        same one repeats."""
        ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        for (ens, ename), event in self.objects["events"].items():
            same = event["involvedObject"].get("uid") == pod["metadata"]["uid"]
            if ens == ns and same and event["reason"] == reason and event["message"] == message:
                if time.time() - (_epoch(event["lastTimestamp"]) or 0) < 5:
                    return
                self.update_status(
                    "events",
                    ens,
                    ename,
                    lambda e: e.update(count=e["count"] + 1, lastTimestamp=now_text()),
                )
                return
        self.create(
            "events",
            ns,
            {
                "metadata": {"name": f"{pod_name}.{uuid.uuid4().hex[:16]}", "namespace": ns},
                "involvedObject": {
                    "kind": pod.get("kind", "Pod"),
                    "name": pod_name,
                    "namespace": ns,
                    "uid": pod["metadata"]["uid"],
                    "apiVersion": pod.get("apiVersion", "v1"),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": now_text(),
                "lastTimestamp": now_text(),
                "source": {"component": source},
            },
            received=False,
        )

    def _free(self, node: Obj) -> dict[str, float]:
        free = {k: quantity(v) for k, v in node["status"]["allocatable"].items()}
        for pod in self.objects["pods"].values():
            if pod["spec"].get("nodeName") == node["metadata"]["name"] and pod["status"].get(
                "phase"
            ) not in ("Succeeded", "Failed"):
                for key, value in pod_requests(pod).items():
                    free[key] = free.get(key, 0) - value
        return free

    def _schedule(self, at: float) -> None:
        nodes = list(self.objects["nodes"].values())
        for (ns, name), pod in list(self.objects["pods"].items()):
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            reasons: dict[str, int] = {}
            chosen = None
            for node in nodes:
                why = self._unfit(node, pod)
                if why is None:
                    chosen = node
                    break
                reasons[why] = reasons.get(why, 0) + 1
            if chosen is not None:
                node_name = chosen["metadata"]["name"]

                def bind(p: Obj, n: str = node_name) -> None:
                    p["spec"]["nodeName"] = n
                    p["status"]["conditions"] = [_condition("PodScheduled", True, None)]

                self.update_status("pods", ns, name, bind)
                self._event(
                    pod,
                    "Scheduled",
                    f"Successfully assigned {ns}/{name} to {node_name}",
                    source="default-scheduler",
                )
                continue
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            text = (
                f"0/{len(nodes)} nodes are available: {detail}."
                if nodes
                else ("no nodes available to schedule pods")
            )

            def unschedulable(p: Obj, t: str = text) -> None:
                _set_condition(
                    p["status"],
                    {**_condition("PodScheduled", False, "Unschedulable"), "message": t},
                )

            self.update_status("pods", ns, name, unschedulable)
            self._event(pod, "FailedScheduling", text, "Warning", "default-scheduler")

    def _unfit(self, node: Obj, pod: Obj) -> str | None:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node["status"].get("conditions") or []
        )
        if not ready:
            return "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        if node["spec"].get("unschedulable"):
            return "node(s) were unschedulable"
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
            return "node(s) didn't match Pod's node affinity/selector"
        for taint in node["spec"].get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
                taint, pod["spec"].get("tolerations") or []
            ):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        free = self._free(node)
        for key, value in pod_requests(pod).items():
            if free.get(key, 0) + 1e-9 < value:
                return f"Insufficient {key}"
        return None

    def _kubelet(self, at: float) -> None:
        for (ns, name), pod in list(self.objects["pods"].items()):
            if pod["metadata"].get("deletionTimestamp"):
                self._remove("pods", ns, name)  # the kubelet stops its containers at once
                continue
            if not pod["spec"].get("nodeName") or pod["status"]["phase"] in ("Succeeded", "Failed"):
                continue
            self._step_pod(ns, name, pod, at)

    def _files(self, ns: str, pod: Obj, container: Obj) -> Callable[[str], Path | None]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))

        def resolve(path: str) -> Path | None:
            for mount in mounts:
                base = mount["mountPath"].rstrip("/")
                if path == base or path.startswith(base + "/"):
                    volume = volumes.get(mount["name"]) or {}
                    if "emptyDir" in volume:  # the kubelet's directory for this pod
                        root = self.storage / "pods" / pod["metadata"]["uid"] / mount["name"]
                        root.mkdir(parents=True, exist_ok=True)
                        return root / mount.get("subPath", "") / path[len(base) :].lstrip("/")
                    claim = volume.get("persistentVolumeClaim")
                    pvc = self.objects["persistentvolumeclaims"].get(
                        (ns, (claim or {}).get("claimName", ""))
                    )
                    if pvc is None:
                        return None
                    root = self.storage / pvc["metadata"]["uid"] / mount.get("subPath", "")
                    return root / path[len(base) :].lstrip("/")
            return None

        return resolve

    def _step_pod(self, ns: str, name: str, pod: Obj, at: float) -> None:
        spec = pod["spec"]
        init, main = spec.get("initContainers") or [], spec["containers"]
        statuses: list[Obj] = []
        for container in [*init, *main]:
            if container["image"] not in self.images:
                text = (
                    f'Failed to pull image "{container["image"]}": rpc error: code = '
                    "NotFound desc = failed to pull and unpack image: not found"
                )
                first = (ns, name, "pull:" + container["name"]) not in self.runs
                self.runs.setdefault((ns, name, "pull:" + container["name"]), Run(at))
                reason = "ErrImagePull" if first else "ImagePullBackOff"
                self._event(pod, "Failed", text, "Warning")
                waiting = {
                    "reason": reason,
                    "message": text if first else f'Back-off pulling image "{container["image"]}"',
                }
                self._set_status(ns, name, container, init, waiting=waiting)
                return
        for container in [*init, *main]:
            if (ns, name, container["name"]) in self.runs:
                continue
            problem = self._env(ns, container)[1]
            if problem:
                waiting = {"reason": "CreateContainerConfigError", "message": problem}
                self._event(pod, "Failed", f"Error: {problem}", "Warning")
                self._set_status(ns, name, container, init, waiting=waiting)
                return
            if container in init:
                break  # the next init container to run: the later ones are resolved then
        for container in init:
            run = self._run(ns, name, pod, container, at)
            if not run.ended(at):
                self._set_status(ns, name, container, init, running=run)
                return
            if run.exit_code != 0:
                self._set_status(ns, name, container, init, done=run, phase="Failed")
                return
            statuses.append(container)
        run = self._run(ns, name, pod, main[0], at)
        if run.ended(at):
            phase = "Succeeded" if run.exit_code == 0 else "Failed"
            self._set_status(ns, name, main[0], init, done=run, phase=phase)
        else:
            self._set_status(ns, name, main[0], init, running=run, phase="Running")

    def _env(self, ns: str, container: Obj) -> tuple[dict[str, str], str | None]:
        """A container's environment as the kubelet makes it, values from Secrets included;
        what keeps it from starting when a Secret or key is missing."""
        env: dict[str, str] = {}
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[entry["name"]] = entry.get("value", "")
                continue
            secret = self.objects["secrets"].get((ns, ref.get("name", "")))
            data = (secret or {}).get("data") or {}
            if ref.get("key") in data:
                env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode(errors="replace")
            elif not ref.get("optional"):
                if secret is None:
                    return env, f'secret "{ref.get("name")}" not found'
                return env, f"couldn't find key {ref.get('key')} in Secret {ns}/{ref.get('name')}"
        return env, None

    def _run(self, ns: str, name: str, pod: Obj, container: Obj, at: float) -> Run:
        key = (ns, name, container["name"])
        if key not in self.runs:
            env = self._env(ns, container)[0]
            # the fake images have no entrypoint and ``sh`` as their command, like busybox
            argv = [*(container.get("command") or []), *(container.get("args") or [])] or ["sh"]
            program = self.programs.get(container["image"], run_script)
            self.runs[key] = program(argv, env, self._files(ns, pod, container), at)
            self._event(pod, "Started", f"Started container {container['name']}")
        return self.runs[key]

    def _set_status(
        self,
        ns: str,
        name: str,
        container: Obj,
        init: list[Obj],
        waiting: Obj | None = None,
        running: Run | None = None,
        done: Run | None = None,
        phase: str | None = None,
    ) -> None:
        if waiting:
            state: Obj = {"waiting": waiting}
        elif running:
            state = {"running": {"startedAt": now_text(running.started)}}
        else:
            assert done is not None
            state = {
                "terminated": {
                    "exitCode": done.exit_code,
                    "reason": "Completed" if done.exit_code == 0 else "Error",
                    "startedAt": now_text(done.started),
                    "finishedAt": now_text(done.started + done.duration),
                }
            }
        is_init = container in init
        entry = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": bool(running) and not is_init,
            "restartCount": 0,
            "state": state,
            "started": bool(running),
        }

        def change(pod: Obj) -> None:
            status = pod["status"]
            key = "initContainerStatuses" if is_init else "containerStatuses"
            others = [s for s in status.get(key) or [] if s["name"] != container["name"]]
            status[key] = [*others, entry]
            status.setdefault("startTime", now_text())
            status.setdefault("hostIP", "10.0.0.1")
            status.setdefault("podIP", f"10.244.0.{random.randint(2, 254)}")
            if phase:
                status["phase"] = phase
            _set_condition(status, _condition("Ready", phase == "Running", None))

        self.update_status("pods", ns, name, change)

    def _quotas(self) -> None:
        for (ns, name), quota in list(self.objects["resourcequotas"].items()):
            used: dict[str, float] = {}
            for pod in self.objects["pods"].values():
                if pod["metadata"]["namespace"] == ns and pod["status"]["phase"] not in (
                    "Succeeded",
                    "Failed",
                ):
                    for key, value in pod_requests(pod).items():
                        used[f"requests.{key}"] = used.get(f"requests.{key}", 0) + value
            hard = quota["spec"].get("hard") or {}
            text = {
                k: _quantity_text(used.get(k if "." in k else f"requests.{k}", 0)) for k in hard
            }
            self.update_status(
                "resourcequotas", ns, name, lambda q, t=text: q["status"].update(used=t)
            )

    def logs(self, ns: str, name: str, container: str | None) -> str:
        pod = self.objects["pods"].get((ns, name))
        if pod is None:
            raise self._not_found("pods", name)
        wanted = container or pod["spec"]["containers"][0]["name"]
        run = self.runs.get((ns, name, wanted))
        if run is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{wanted}" in pod "{name}" is waiting to start: PodInitializing',
            )
        return run.output(time.time())

    # --- HTTP -------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                cluster.requests.append((method, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    if self.headers.get("Authorization") != f"Bearer {cluster.token}":
                        raise ApiError(401, "Unauthorized", "Unauthorized")
                    cluster._route(self, method, raw)
                except ApiError as exc:
                    self._json(exc.code, exc.status())

            def _json(self, code: int, body: Obj) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _text(self, code: int, text: str) -> None:
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, body: Obj) -> None:
                data = json.dumps(body).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler

    def _route(self, handler: Any, method: str, raw: bytes) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/version":
            handler._json(
                200, {"major": "1", "minor": VERSION.split(".")[1], "gitVersion": f"v{VERSION}.0"}
            )
            return
        m = PATH.match(url.path)
        if not m or m["plural"] not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = RESOURCES[m["plural"]]
        if (m["core"] and resource.group) or (m["group"] and m["group"] != resource.group):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name, sub = m["ns"] or "", m["name"], m["sub"]
        plural = resource.plural
        body = json.loads(raw) if raw else None
        if method == "GET" and sub == "log":
            handler._text(200, self.logs(ns, name, query.get("container")))
        elif method == "GET" and name:
            found = self.get(plural, ns, name)
            if found is None:
                raise self._not_found(plural, name)
            handler._json(200, found)
        elif method == "GET" and query.get("watch") in ("true", "1"):
            self._watch(handler, resource, m["ns"], query)
        elif method == "GET":
            handler._json(200, self._list(resource, m["ns"], query))
        elif method == "POST" and not name:
            handler._json(201, self.create(plural, ns, body or {}))
        elif method == "PUT" and name:
            obj = copy.deepcopy(body or {})
            self._validate(obj)
            handler._json(200, self.replace(plural, ns, name, obj))
        elif method == "PATCH" and name:
            handler._json(200, self._patch(plural, ns, name, body, handler.headers))
        elif method == "DELETE" and name:
            options = body or {}
            propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
            grace = query.get("gracePeriodSeconds") or options.get("gracePeriodSeconds")
            handler._json(
                200,
                self.delete(
                    plural, ns, name, propagation, int(grace) if grace is not None else None
                ),
            )
        elif method == "DELETE":
            listing = self._list(resource, m["ns"], query)
            for item in listing["items"]:
                with contextlib.suppress(ApiError):
                    self.delete(
                        plural,
                        item["metadata"].get("namespace", ""),
                        item["metadata"]["name"],
                        query.get("propagationPolicy"),
                    )
            handler._json(200, listing)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _patch(self, plural: str, ns: str, name: str, body: Any, headers: Any) -> Obj:
        current = self.get(plural, ns, name)
        if current is None:
            raise self._not_found(plural, name)
        kind = headers.get("Content-Type", "")
        if "json-patch" in kind:
            patched = json_patch(current, body or [])
        elif "merge-patch" in kind:
            patched = merge_patch(current, body or {})
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an "
                f"unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                f"application/strategic-merge-patch+json (got {kind})",
            )
        received = copy.deepcopy(patched)
        received["metadata"].pop("resourceVersion", None)
        self._validate(received)
        return self.replace(plural, ns, name, received)

    def _matching(
        self, resource: Resource, namespace: str | None, query: dict[str, str]
    ) -> Callable[[Obj], bool]:
        labels = label_matcher(query.get("labelSelector"))
        fields = field_matcher(query.get("fieldSelector"))

        def test(obj: Obj) -> bool:
            ns = obj["metadata"].get("namespace", "")
            return (
                (not resource.namespaced or namespace is None or ns == namespace)
                and labels(obj["metadata"].get("labels") or {})
                and fields(obj)
            )

        return test

    def _list(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> Obj:
        test = self._matching(resource, namespace, query)
        with self.lock:
            items = [
                copy.deepcopy(o)
                for _, o in sorted(self.objects[resource.plural].items())
                if test(o)
            ]
            rv = str(self.rv)
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    def _watch(
        self, handler: Any, resource: Resource, namespace: str | None, query: dict[str, str]
    ) -> None:
        test = self._matching(resource, namespace, query)
        timeout = float(query.get("timeoutSeconds") or 1800)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        with self.lock:
            since = int(query.get("resourceVersion") or 0)
            pending: list[Obj] = []
            if since == 0:  # "any version": the current objects first, as ADDED
                pending = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for o in self.objects[resource.plural].values()
                    if test(o)
                ]
                since = self.rv
        ends = time.monotonic() + timeout
        try:
            for event in pending:
                handler._chunk(event)
            while time.monotonic() < ends and not self.stopping.is_set():
                with self.changed:
                    if self.history and since < self.history[0][0] - 1:  # compacted away
                        gone = ApiError(410, "Expired", f"too old resource version: {since}")
                        handler._chunk({"type": "ERROR", "object": gone.status()})
                        break
                    start = bisect.bisect_right(self.history, since, key=lambda h: h[0])
                    events = [
                        (kind, obj)
                        for _, plural, kind, obj in self.history[start:]
                        if plural == resource.plural and test(obj)
                    ]
                    since = self.rv
                    if not events:
                        self.changed.wait(min(1.0, max(ends - time.monotonic(), 0)))
                        continue
                for kind, obj in events:
                    handler._chunk({"type": kind, "object": obj})
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


def pod_requests(pod: Obj) -> dict[str, float]:
    """A pod's effective requests: the larger of its containers' sum and any init container."""
    total: dict[str, float] = {}
    for container in pod["spec"].get("containers") or []:
        for key, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[key] = total.get(key, 0) + quantity(value)
    for container in pod["spec"].get("initContainers") or []:
        for key, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[key] = max(total.get(key, 0), quantity(value))
    return total


def _qos(spec: Obj) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if resources and all(
        r.get("requests") and r.get("requests") == r.get("limits") for r in resources
    ):
        return "Guaranteed"
    return "Burstable" if any(r for r in resources) else "BestEffort"


def _condition(kind: str, true: bool, reason: str | None) -> Obj:
    condition = {
        "type": kind,
        "status": "True" if true else "False",
        "lastTransitionTime": now_text(),
    }
    if reason:
        condition["reason"] = reason
    return condition


def _set_condition(status: Obj, condition: Obj) -> None:
    """Set one condition; an unchanged one keeps its transition time (no new version)."""
    conditions = status.setdefault("conditions", [])
    for i, old in enumerate(conditions):
        if old["type"] == condition["type"]:
            same = all(old.get(k) == condition.get(k) for k in ("status", "reason", "message"))
            conditions[i] = old if same else condition
            return
    conditions.append(condition)


def _secret_data(secret: Obj) -> None:
    """What the API server keeps of a Secret: ``data`` as base64 (a value that is not is a
    400, as the API's decoding refuses it), with ``stringData`` encoded and merged in."""
    for value in (secret.get("data") or {}).values():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ApiError(
                400,
                "BadRequest",
                'Secret in version "v1" cannot be handled as a Secret: illegal base64 data',
            ) from None
    strings = secret.pop("stringData", None) or {}
    if strings:
        data = secret.setdefault("data", {})
        data.update({k: base64.b64encode(v.encode()).decode() for k, v in strings.items()})


def _tolerated(taint: Obj, tolerations: list[Obj]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (t.get("key") in (None, taint["key"])):
            return True
        if t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _quantity_text(value: float) -> str:
    if value >= 2**30 and value % 2**30 == 0:
        return f"{int(value // 2**30)}Gi"
    return str(int(value)) if value == int(value) else f"{int(value * 1000)}m"


@contextlib.contextmanager
def running(images: set[str] | None = None) -> Iterator[FakeCluster]:
    cluster = FakeCluster(images=images).start()
    try:
        yield cluster
    finally:
        cluster.stop()
