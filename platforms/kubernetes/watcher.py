"""The sessions' pods, watched: one stream per platform (a list, then a watch from its
resourceVersion, listed again when the stream ends or breaks), so that polling a running session
reads memory instead of asking the API server every few seconds."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .client import Kube
from .manifests import SESSION_LABEL

log = logging.getLogger(__name__)
Obj = dict[str, Any]
WATCH_SECONDS = 240


class PodWatch:
    def __init__(self, kube: Kube, labels: str):
        self.kube, self.labels = kube, labels
        self.pods: dict[str, Obj] = {}  # session uuid -> its pod
        self.synced = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="kube-pod-watch", daemon=True)
                self.thread.start()

    def pod(self, session: str) -> tuple[bool, Obj | None]:
        """(whether the watch is live, the session's pod as last seen)."""
        with self.lock:
            return self.synced.is_set(), self.pods.get(session)

    def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                items, since = self.kube.list("Pod", self.labels)
                with self.lock:
                    self.pods = {}
                    for pod in items:
                        self._keep("ADDED", pod)
                self.synced.set()
                backoff = 1.0
                for event in self.kube.watch("Pod", self.labels, since, WATCH_SECONDS):
                    kind, pod = event["type"], event["object"]
                    if kind == "ERROR":  # e.g. 410 Gone: the version is too old; list again
                        break
                    if kind == "BOOKMARK":
                        continue
                    with self.lock:
                        self._keep(kind, pod)
            except Exception as exc:  # the stream breaks or expires (410): list and watch again
                self.synced.clear()
                log.info("kubernetes pod watch: %s; listing again in %.0f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30)

    def _keep(self, kind: str, pod: Obj) -> None:
        session = ((pod.get("metadata") or {}).get("labels") or {}).get(SESSION_LABEL)
        if not session:
            return
        if kind == "DELETED":
            if (self.pods.get(session) or {}).get("metadata", {}).get("uid") == pod["metadata"].get(
                "uid"
            ):
                self.pods.pop(session, None)
        else:
            self.pods[session] = pod
