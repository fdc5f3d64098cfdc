"""The Kubernetes API as the platform uses it: one ``ApiClient`` per process and cluster, and a
few verbs on plain JSON objects (what the API sends, so the pure functions of ``cluster``,
``status`` and ``manifests`` read and write the API's own field names). Every failure is a
``PlatformError`` saying what was asked and what the API server answered."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch

from ..errors import PlatformError
from .options import KubernetesOptions

Obj = dict[str, Any]
_clients: dict[tuple[Any, ...], client.ApiClient] = {}
_lock = threading.Lock()


def api_client(options: KubernetesOptions) -> client.ApiClient:
    """The process's client for this cluster (kubeconfig and context, or in-cluster), made on
    first use and shared by every platform and thread after."""
    key = (options.in_cluster, options.kubeconfig, options.context)
    with _lock:
        found = _clients.get(key)
        if found is None:
            configuration = client.Configuration()
            try:
                if options.in_cluster or only_in_cluster(options):
                    config.load_incluster_config(client_configuration=configuration)
                else:
                    config.load_kube_config(
                        config_file=os.path.expanduser(options.kubeconfig)
                        if options.kubeconfig
                        else None,
                        context=options.context,
                        client_configuration=configuration,
                    )
            except (config.ConfigException, OSError, ValueError) as exc:
                where = "in-cluster" if options.in_cluster else options.kubeconfig or "kubeconfig"
                raise PlatformError(
                    f"cannot load the Kubernetes credentials ({where}): {exc}"
                ) from None
            configuration.connection_pool_maxsize = 16
            found = _clients[key] = client.ApiClient(configuration)
        return found


def only_in_cluster(options: KubernetesOptions) -> bool:
    """No kubeconfig given or at its default places, inside a pod: the service account."""
    if options.kubeconfig or options.context:
        return False
    default = os.environ.get("KUBECONFIG") or os.path.expanduser(
        config.KUBE_CONFIG_DEFAULT_LOCATION
    )
    return not os.path.exists(default.split(os.pathsep)[0]) and bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
    )


@dataclass(frozen=True)
class Kind:
    """One resource: how the client names its calls (``{verb}_namespaced_{snake}``)."""

    api: type[Any]
    snake: str
    kind: str
    namespaced: bool = True


KINDS = {
    "Job": Kind(client.BatchV1Api, "job", "Job"),
    "Pod": Kind(client.CoreV1Api, "pod", "Pod"),
    "PersistentVolumeClaim": Kind(
        client.CoreV1Api, "persistent_volume_claim", "PersistentVolumeClaim"
    ),
    "Service": Kind(client.CoreV1Api, "service", "Service"),
    "Ingress": Kind(client.NetworkingV1Api, "ingress", "Ingress"),
    "Secret": Kind(client.CoreV1Api, "secret", "Secret"),
    "Event": Kind(client.CoreV1Api, "event", "Event"),
    "ResourceQuota": Kind(client.CoreV1Api, "resource_quota", "ResourceQuota"),
    "Node": Kind(client.CoreV1Api, "node", "Node", namespaced=False),
}
# what a session is made of, in the order release removes it
WORK_KINDS = ("Job", "Pod", "Service", "Ingress", "Secret", "PersistentVolumeClaim")


def _api_message(exc: client.ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    text = body.get("message") if isinstance(body, dict) else None
    return f"{text or exc.reason} ({exc.status})"


class Kube:
    """Verbs on one namespace, returning the API's JSON."""

    def __init__(self, options: KubernetesOptions):
        self.options = options
        self.namespace = options.namespace

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            answer = call(
                *args,
                _preload_content=False,
                _request_timeout=self.options.request_timeout,
                **kwargs,
            )
        except client.ApiException:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = api_client(self.options).configuration.host
            raise PlatformError(f"kubernetes API at {host}: {what}: {exc}") from None
        data = answer.data
        return data.decode(errors="replace") if isinstance(data, bytes) else data

    def _method(self, kind: str, verb: str, scope: str = "") -> Callable[..., Any]:
        spec = KINDS[kind]
        api = spec.api(api_client(self.options))
        middle = "_namespaced" if spec.namespaced and scope != "all" else ""
        suffix = "_for_all_namespaces" if scope == "all" else ""
        return getattr(api, f"{verb}{middle}_{spec.snake}{suffix}")

    def _args(self, kind: str) -> tuple[str, ...]:
        return (self.namespace,) if KINDS[kind].namespaced else ()

    def get(self, kind: str, name: str) -> Obj | None:
        try:
            text = self._call(
                f"get {kind}/{name}", self._method(kind, "read"), name, *self._args(kind)
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise PlatformError(f"get {kind}/{name}: {_api_message(exc)}") from None
        return dict(json.loads(text))

    def list(
        self,
        kind: str,
        labels: str | None = None,
        fields: str | None = None,
        all_namespaces: bool = False,
    ) -> tuple[list[Obj], str]:
        """The objects and the list's resourceVersion (where a watch carries on)."""
        scope = "all" if all_namespaces else ""
        args = () if all_namespaces else self._args(kind)
        try:
            text = self._call(
                f"list {kind}",
                self._method(kind, "list", scope),
                *args,
                label_selector=labels,
                field_selector=fields,
            )
        except client.ApiException as exc:
            raise PlatformError(f"list {kind}: {_api_message(exc)}") from None
        listing = json.loads(text)
        return list(listing.get("items") or []), str(listing["metadata"].get("resourceVersion"))

    def create(self, manifest: Obj) -> tuple[Obj, bool]:
        """Create an object; one of that name already there is found instead (so a repeated
        step is a no-op): the object, and whether this call made it."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            text = self._call(
                f"create {kind}/{name}", self._method(kind, "create"), *self._args(kind), manifest
            )
            return dict(json.loads(text)), True
        except client.ApiException as exc:
            if exc.status == 409:
                found = self.get(kind, name)
                if found is not None:
                    return found, False
            raise PlatformError(f"create {kind}/{name}: {_api_message(exc)}") from None

    def patch(self, kind: str, name: str, body: Obj) -> Obj | None:
        try:
            text = self._call(
                f"patch {kind}/{name}", self._method(kind, "patch"), name, *self._args(kind), body
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise PlatformError(f"patch {kind}/{name}: {_api_message(exc)}") from None
        return dict(json.loads(text))

    def delete(self, kind: str, name: str) -> bool:
        """Delete an object and (in the background) what it owns; False when it was gone."""
        try:
            self._call(
                f"delete {kind}/{name}",
                self._method(kind, "delete"),
                name,
                *self._args(kind),
                propagation_policy="Background",
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise PlatformError(f"delete {kind}/{name}: {_api_message(exc)}") from None
        return True

    def log(self, pod: str, container: str) -> str | None:
        """The container's output; None while it has not started or once the pod is gone."""
        read = client.CoreV1Api(api_client(self.options)).read_namespaced_pod_log
        try:
            return str(self._call(f"log of {pod}", read, pod, self.namespace, container=container))
        except client.ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise PlatformError(f"log of pod {pod}: {_api_message(exc)}") from None

    def watch(self, kind: str, labels: str, since: str, seconds: int) -> Iterator[Obj]:
        """Events (``{"type", "object"}``, the object as JSON) after resourceVersion ``since``,
        for up to ``seconds``."""
        stream = watch.Watch().stream(
            self._method(kind, "list"),
            *self._args(kind),
            label_selector=labels,
            resource_version=since,
            timeout_seconds=seconds,
            allow_watch_bookmarks=True,
            _request_timeout=seconds + self.options.request_timeout,
        )
        for event in stream:
            raw = event.get("raw_object")
            yield {"type": event.get("type"), "object": raw if isinstance(raw, dict) else {}}
