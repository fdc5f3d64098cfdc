"""The aggregator's answers: fan a request out, merge the offers, and carry session operations
to the node an offer came from."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

from broker_core.errors import Conflict, NotFound, UpstreamUnavailable
from broker_core.kinds.base import Message, message
from broker_core.sessions.views import OFFERSET_KIND, instant, wire_messages

from .config import AggregatorConfig
from .merge import (
    Candidate,
    UpstreamOffer,
    new_uuid,
    parse_offerset,
    rank,
    rewrite_session,
)
from .store import RemoteSession, Store
from .upstreams import Answer, Upstream, UpstreamError, Upstreams

ACCEPTED = "ACCEPTED"
REJECT = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}


def requested_kinds(document: Any) -> set[str]:
    """Every kind URI a (normalised) request names."""
    kinds: set[str] = set()
    if not isinstance(document, dict):
        return kinds
    for key in ("executable", "compute"):
        part = document.get(key)
        if isinstance(part, dict) and isinstance(part.get("kind"), str):
            kinds.add(part["kind"])
    for key in ("storage", "data"):
        for part in document.get(key) or []:
            if isinstance(part, dict) and isinstance(part.get("kind"), str):
                kinds.add(part["kind"])
    return kinds


def _project_query(project: str | None) -> str:
    return f"?{urlencode({'project': project})}" if project else ""


def _dump(m: Message) -> dict[str, Any]:
    (dumped,) = wire_messages([m.model_dump(exclude_none=True)])  # values as strings
    return dumped


class Aggregator:
    def __init__(self, config: AggregatorConfig, store: Store, upstreams: Upstreams):
        self.config = config
        self.store = store
        self.upstreams = upstreams

    @property
    def base_url(self) -> str:
        return self.config.base_url

    # --- POST /requests ----------------------------------------------------------------------

    async def request_offers(
        self, document: Any, token: str | None, project: str | None = None
    ) -> dict[str, Any]:
        """``project`` (the project to charge) is passed on to every node."""
        fanout = self.config.fanout
        deadline = time.monotonic() + fanout.deadline.total_seconds()
        kinds = requested_kinds(document)
        body = json.dumps(document).encode()
        ups = list(self.upstreams.by_name.values())
        path = "/requests" + _project_query(project)
        tasks = [asyncio.create_task(self._ask(u, path, body, token, kinds, deadline)) for u in ups]
        _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0))
        for task in pending:
            task.cancel()
        notes: list[Message] = []
        candidates: list[Candidate] = []
        for upstream, task in zip(ups, tasks, strict=True):
            if task in pending:
                notes.append(message(
                    "upstream {upstream} timed out: no answer within the overall deadline of "
                    "{seconds} s", level="WARN", upstream=upstream.name,
                    seconds=fanout.deadline.total_seconds(),
                ))  # fmt: skip
                continue
            outcome, detail = task.result()
            if outcome == "offers":
                candidates += [Candidate(upstream.name, upstream.config.weight, o) for o in detail]
            else:
                notes.append(detail)
        chosen = rank(candidates, fanout.order, fanout.max_offers)
        return await self._store_merged(chosen, notes)

    async def _ask(
        self,
        upstream: Upstream,
        path: str,
        body: bytes,
        token: str | None,
        kinds: set[str],
        deadline: float,
    ) -> tuple[str, Any]:
        name = upstream.name
        # one budget per upstream for its description and the request itself
        deadline = min(deadline, time.monotonic() + upstream.config.timeout.total_seconds())
        missing = await self._missing_kinds(upstream, kinds, deadline)
        if missing:
            return "skipped", message("upstream {upstream} skipped: it does not accept {kinds}",
                                      upstream=name, kinds=missing)  # fmt: skip
        try:
            answer = await self.upstreams.call(
                upstream, "POST", f"{upstream.config.base}{path}",
                body=body, token=token, deadline=deadline,
            )  # fmt: skip
        except UpstreamError as exc:
            return "failed", _failed(name, str(exc))
        if answer.status != 200:
            return "failed", message("upstream {upstream} refused the request ({status}): "
                                     "{detail}", level="WARN", upstream=name,
                                     status=answer.status, detail=_detail(answer))  # fmt: skip
        try:
            offerset = parse_offerset(answer.document)
        except ValueError as exc:
            upstream.breaker.failure(time.monotonic())
            return "failed", _failed(name, str(exc))
        if offerset.result == "NO":
            reasons = [m.get("message") for m in offerset.meta.get("messages") or []
                       if isinstance(m, dict) and m.get("message")]  # fmt: skip
            return "no", message(
                "upstream {upstream} answered NO: {reasons}",
                upstream=name,
                reasons="; ".join(str(r) for r in reasons) or "no reason given",
            )
        return "offers", offerset.offers

    async def _missing_kinds(self, upstream: Upstream, kinds: set[str], deadline: float) -> str:
        """The requested kinds the upstream's description says it does not accept, if any."""
        accepted = await self.upstreams.kinds(upstream, deadline)
        return "" if accepted is None else ", ".join(sorted(kinds - accepted))

    async def _store_merged(self, chosen: list[Candidate], notes: list[Message]) -> dict[str, Any]:
        now = int(time.time())
        offerset_uuid = new_uuid()
        offers, sessions = [], []
        expires = []
        for index, candidate in enumerate(chosen):
            local = new_uuid()
            offer: UpstreamOffer = candidate.offer
            sessions.append(RemoteSession(
                uuid=local, offerset_uuid=offerset_uuid, upstream=candidate.upstream,
                remote_uuid=offer.meta.uuid, remote_url=offer.meta.url, rank=index,
            ))  # fmt: skip
            offers.append(rewrite_session(
                offer.model_dump(mode="json"), local_uuid=local, offerset_uuid=offerset_uuid,
                upstream=candidate.upstream, base_url=self.base_url,
            ))  # fmt: skip
            if offer.expires:
                expires.append(offer.expires)
        result = "YES" if offers else "NO"
        dumped = [_dump(m) for m in notes]
        await asyncio.to_thread(
            self.store.save_offerset,
            offerset_uuid, created_at=now, expires_at=now, result=result, messages=dumped,
            sessions=sessions,
        )  # fmt: skip
        return {
            "kind": OFFERSET_KIND,
            "meta": {
                "uuid": offerset_uuid,
                "url": f"{self.base_url}/offersets/{offerset_uuid}",
                "created": instant(now),
                "messages": dumped,
            },
            "result": result,
            "expires": min(expires) if expires else instant(now),
            "offers": offers,
        }

    # --- offer sets and sessions -------------------------------------------------------------

    async def get_offerset(self, offerset_uuid: str, token: str | None) -> dict[str, Any]:
        stored = await asyncio.to_thread(self.store.offerset, offerset_uuid)
        if stored is None:
            raise NotFound("offer set", offerset_uuid)
        remotes = await asyncio.to_thread(self.store.sessions_of, offerset_uuid)
        fetched = await asyncio.gather(
            *(self._fetch(r, token) for r in remotes), return_exceptions=True
        )
        messages = list(wire_messages(stored["messages"]))
        offers = []
        for remote, result in zip(remotes, fetched, strict=True):
            if isinstance(result, BaseException):
                messages.append(_dump(message(
                    "offer {uuid} from upstream {upstream} cannot be shown now: {error}",
                    level="WARN", uuid=remote.uuid, upstream=remote.upstream,
                    error=getattr(result, "detail", str(result)),
                )))  # fmt: skip
                continue
            offers.append(result)
        return {
            "kind": OFFERSET_KIND,
            "meta": {
                "uuid": offerset_uuid,
                "url": f"{self.base_url}/offersets/{offerset_uuid}",
                "created": instant(stored["created_at"]),
                "messages": messages,
            },
            "result": stored["result"],
            "expires": min(
                (o["expires"] for o in offers if o.get("expires")),
                default=instant(stored["expires_at"]),
            ),
            "offers": offers,
        }

    async def get_session(self, session_uuid: str, token: str | None) -> dict[str, Any]:
        return await self._fetch(await self._remote(session_uuid), token)

    async def _fetch(self, remote: RemoteSession, token: str | None) -> dict[str, Any]:
        answer = await self._call(remote, "GET", remote.remote_url, token=token)
        if answer.status == 404:
            raise NotFound("session", remote.uuid)
        if answer.status != 200 or not isinstance(answer.document, dict):
            raise UpstreamUnavailable(f"upstream {remote.upstream} answered {answer.status}")
        return self._rewrite(remote, answer.document)

    async def update_session(
        self, session_uuid: str, update: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        remote = await self._remote(session_uuid)
        accepting = update.get("path") == "phase" and update.get("value") == ACCEPTED
        if accepting and not await asyncio.to_thread(
            self.store.claim_acceptance, remote.offerset_uuid, remote.uuid
        ):
            raise Conflict("another offer of this offer set was accepted", phase="REJECTED")
        try:
            answer = await self._call(remote, "POST", remote.remote_url, document=update,
                                      token=token)  # fmt: skip
        except UpstreamUnavailable:
            if accepting:
                await asyncio.to_thread(
                    self.store.release_acceptance, remote.offerset_uuid, remote.uuid
                )
            raise
        if answer.status != 200 or not isinstance(answer.document, dict):
            if accepting:
                await asyncio.to_thread(
                    self.store.release_acceptance, remote.offerset_uuid, remote.uuid
                )
            if answer.status == 404:
                raise NotFound("session", session_uuid)
            if answer.status == 409 and isinstance(answer.document, dict):
                raise Conflict(str(answer.document.get("detail") or "conflict"),
                               phase=answer.document.get("phase"))  # fmt: skip
            raise UpstreamUnavailable(f"upstream {remote.upstream} answered {answer.status}")
        document = self._rewrite(remote, answer.document)
        if accepting:
            notes = await self._reject_siblings(remote, token)
            meta = document.setdefault("meta", {})
            meta["messages"] = list(meta.get("messages") or []) + [_dump(n) for n in notes]
        return document

    async def _reject_siblings(self, accepted: RemoteSession, token: str | None) -> list[Message]:
        """Reject every other offer of the merged set on its upstream; what could not be."""
        members = await asyncio.to_thread(self.store.sessions_of, accepted.offerset_uuid)
        siblings = [s for s in members if s.uuid != accepted.uuid]

        async def reject(sibling: RemoteSession) -> Message | None:
            try:
                answer = await self._call(sibling, "POST", sibling.remote_url, document=REJECT,
                                          token=token)  # fmt: skip
            except UpstreamUnavailable as exc:
                return message("could not reject offer {uuid} at upstream {upstream}: {error}",
                               level="WARN", uuid=sibling.uuid, upstream=sibling.upstream,
                               error=exc.detail)  # fmt: skip
            phase = answer.document.get("phase") if isinstance(answer.document, dict) else None
            if answer.status == 200 or (answer.status == 409 and phase in ("REJECTED", "EXPIRED")):
                return None  # rejected now, or already (the node rejects its own siblings)
            return message("could not reject offer {uuid} at upstream {upstream}: it answered "
                           "{status}", level="WARN", uuid=sibling.uuid,
                           upstream=sibling.upstream, status=answer.status)  # fmt: skip

        results = await asyncio.gather(*(reject(s) for s in siblings))
        return [r for r in results if r is not None]

    async def session_logs(self, session_uuid: str, token: str | None) -> str:
        remote = await self._remote(session_uuid)
        upstream = self.upstreams.by_name.get(remote.upstream)
        if upstream is None:
            raise UpstreamUnavailable(f"upstream {remote.upstream} is no longer configured")
        try:
            text = await self.upstreams.text(upstream, f"{remote.remote_url}/logs", token=token)
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"upstream {remote.upstream}: {exc}") from None
        if text is None:
            raise NotFound("session", session_uuid)
        return text

    async def _remote(self, session_uuid: str) -> RemoteSession:
        remote = await asyncio.to_thread(self.store.session, session_uuid)
        if remote is None:
            raise NotFound("session", session_uuid)
        return remote

    async def _call(
        self, remote: RemoteSession, method: str, url: str, *, document: Any = None,
        token: str | None,
    ) -> Answer:  # fmt: skip
        upstream = self.upstreams.by_name.get(remote.upstream)
        if upstream is None:
            raise UpstreamUnavailable(f"upstream {remote.upstream} is no longer configured")
        try:
            return await self.upstreams.call(upstream, method, url, document=document, token=token)
        except UpstreamError as exc:
            status = 504 if "no answer" in str(exc) else 502
            raise UpstreamUnavailable(f"upstream {remote.upstream}: {exc}", status) from None

    def _rewrite(self, remote: RemoteSession, document: dict[str, Any]) -> dict[str, Any]:
        return rewrite_session(document, local_uuid=remote.uuid,
                               offerset_uuid=remote.offerset_uuid, upstream=remote.upstream,
                               base_url=self.base_url)  # fmt: skip

    # --- POST /direct ------------------------------------------------------------------------

    async def direct(
        self, document: Any, token: str | None, project: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """Start now on the first upstream (by weight) that can; NO or 409 when none can."""
        deadline = time.monotonic() + self.config.fanout.deadline.total_seconds()
        kinds = requested_kinds(document)
        notes: list[Message] = []
        conflicts = []
        ups = sorted(self.upstreams.by_name.values(), key=lambda u: -u.config.weight)
        for upstream in ups:
            if await self._missing_kinds(upstream, kinds, deadline):
                continue
            try:
                answer = await self.upstreams.call(
                    upstream, "POST", f"{upstream.config.base}/direct{_project_query(project)}",
                    document=document, token=token, deadline=deadline,
                )  # fmt: skip
            except UpstreamError as exc:
                notes.append(_failed(upstream.name, str(exc)))
                continue
            if answer.status == 201:
                try:
                    offerset = parse_offerset(answer.document)
                except ValueError as exc:
                    notes.append(_failed(upstream.name, str(exc)))
                    continue
                merged = await self._store_merged(
                    [Candidate(upstream.name, upstream.config.weight, o) for o in offerset.offers],
                    notes,
                )
                return merged, 201
            if answer.status == 409:
                conflicts.append(f"{upstream.name}: {_detail(answer)}")
            else:
                notes.append(message("upstream {upstream} cannot start it: {detail}",
                                     upstream=upstream.name, detail=_detail(answer)))  # fmt: skip
        if conflicts:
            raise Conflict("no upstream can start it now: " + "; ".join(conflicts),
                           messages=conflicts + [n.message for n in notes])  # fmt: skip
        return await self._store_merged([], notes), 200

    # --- the aggregator itself ---------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        ups = list(self.upstreams.by_name.values())
        kinds = await asyncio.gather(*(self.upstreams.kinds(u) for u in ups))
        now = time.monotonic()
        return {
            "site": {"name": self.config.site.name, "description": self.config.site.description},
            "url": self.base_url,
            "kinds": sorted(set().union(*(k or frozenset() for k in kinds))),
            "platforms": [],
            "upstreams": [
                {
                    "name": u.name,
                    "url": u.config.base,
                    "state": u.breaker.state(now),
                    "kinds": sorted(k) if k is not None else None,
                }
                for u, k in zip(ups, kinds, strict=True)
            ],
        }

    def health(self) -> tuple[dict[str, Any], int]:
        problem = self.store.ready()
        now = time.monotonic()
        checks = {"database": problem or "ok"}
        for u in self.upstreams.by_name.values():
            checks[f"upstream {u.name}"] = u.breaker.state(now)
        status = "ok" if problem is None else "unavailable"
        return {"status": status, "checks": checks}, 200 if problem is None else 503


def _failed(upstream: str, error: str) -> Message:
    return message("upstream {upstream} failed: {error}", level="WARN", upstream=upstream,
                   error=error)  # fmt: skip


def _detail(answer: Answer) -> str:
    doc = answer.document
    if isinstance(doc, dict):
        return str(doc.get("detail") or doc.get("title") or "")[:500]
    return ""
