"""The aggregator's answers: fan a request out, merge the offers, and carry session operations
to the node an offer came from."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from broker_core.errors import (
    Conflict,
    DocumentInvalid,
    FieldError,
    Forbidden,
    NotFound,
    UpstreamUnavailable,
)
from broker_core.http.app import SPEC_DOCUMENT
from broker_core.kinds.base import Message, message
from broker_core.offers.accelerators import AcceleratorNeed
from broker_core.schedule import instant
from broker_core.sessions.views import OFFERSET_KIND, SESSION_KIND, wire_messages

from . import accelerators, series
from .budget import AfterFanout, fanout_deadline, fanout_ended
from .combined.request import is_combined
from .combined.service import Combined
from .config import AggregatorConfig
from .merge import (
    Candidate,
    UpstreamOffer,
    is_session,
    locate_offers,
    new_uuid,
    own_messages,
    parse_offerset,
    phase_of,
    rank,
    rewrite_session,
)
from .rejections import REJECT, Rejections, Unused
from .store import RemoteSession, Store
from .upstreams import Answer, Upstream, UpstreamError, Upstreams

__all__ = ["Aggregator", "phase_of", "refused"]

ACCEPTED = "ACCEPTED"
FAILED = "FAILED"
# the spec (the node's own, which the aggregator serves) answers POST /direct in the standard's
# form, 303 See Other to the session, or (before that) 201 with an offer set
DIRECT_SEE_OTHER = "303" in SPEC_DOCUMENT["paths"]["/direct"]["post"]["responses"]


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


def _query(project: str | None, probe: bool = False) -> str:
    """The query passed on to upstreams: the project to charge, and whether this is a probe."""
    params = {**({"project": project} if project else {}), **({"probe": "true"} if probe else {})}
    return f"?{urlencode(params)}" if params else ""


def _is_probe(offer: UpstreamOffer) -> bool:
    """An offer that holds nothing (a node's answer to ``?probe=true``)."""
    return (offer.model_extra or {}).get("probe") is True


def _dump(m: Message) -> dict[str, Any]:
    (dumped,) = wire_messages([m.model_dump(exclude_none=True)])  # values as strings
    return dumped


def unused(candidates: Iterable[Candidate]) -> list[Unused]:
    return [Unused(c.upstream, c.offer.meta.url) for c in candidates]


@dataclass
class Merged:
    """A merged offer set before it is kept: the document served and the rows behind it."""

    document: dict[str, Any]
    sessions: list[RemoteSession]
    created_at: int


class Aggregator:
    def __init__(self, config: AggregatorConfig, store: Store, upstreams: Upstreams):
        self.config = config
        self.store = store
        self.upstreams = upstreams
        self.rejections = Rejections(upstreams)
        self.after_fanout = AfterFanout(config.fanout.reserve.total_seconds())
        self.combined = Combined(self)  # requests of parts: one booking across sites

    def _stop_at(self) -> float:
        """When the current request's fan-out stops waiting, so that its answer is sent
        within the deadline (see ``budget``)."""
        return fanout_deadline(self.config.fanout.deadline.total_seconds(), self.after_fanout)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    # --- POST /requests ----------------------------------------------------------------------

    async def request_offers(
        self, document: Any, token: str | None, project: str | None = None, probe: bool = False
    ) -> dict[str, Any]:
        """``project`` (the project to charge) and ``probe`` are passed on to every node. Every
        upstream offer not passed on (ranked out, answered too late, or of a request given up)
        is rejected on its upstream in the background. A probe passes on only offers that hold
        nothing: an upstream that made real ones (a node that knows no probes) has them
        withdrawn at once."""
        if is_combined(document):
            return await self.combined.request_offers(document, token, project, probe)
        fanout = self.config.fanout
        stop = self._stop_at()
        kinds = requested_kinds(document)
        needs = accelerators.requested(document)
        body = json.dumps(document).encode()
        ups = list(self.upstreams.by_name.values())
        path = "/requests" + _query(project, probe)
        tasks = [
            asyncio.create_task(self._ask(u, path, body, token, kinds, stop, needs)) for u in ups
        ]
        try:
            _, pending = await asyncio.wait(tasks, timeout=max(stop - time.monotonic(), 0))
        except asyncio.CancelledError:  # the client went away: nobody will see these offers
            self._reject_answers(zip(ups, tasks, strict=True), token)
            raise
        fanout_ended()
        # answers under way are read (within each upstream's timeout) only to be rejected
        self._reject_answers(((u, t) for u, t in zip(ups, tasks, strict=True) if t in pending),
                             token)  # fmt: skip
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
                offers, degraded = detail
                holding = [o for o in offers if not _is_probe(o)] if probe else []
                if holding:
                    withdrawn = [Unused(upstream.name, o.meta.url) for o in holding]
                    self.rejections.reject(withdrawn, token, "a probe passes on no held offer")
                    notes.append(message(
                        "upstream {upstream} does not answer probes: its offers, which held "
                        "slots, were withdrawn", level="WARN", upstream=upstream.name,
                    ))  # fmt: skip
                    offers = [o for o in offers if _is_probe(o)]
                candidates += [Candidate(upstream.name, upstream.config.weight, o) for o in offers]
                notes += degraded
            else:
                notes.append(detail)
        chosen = rank(candidates, fanout.order, fanout.max_offers)
        passed = {id(c) for c in chosen}
        ranked_out = (c for c in candidates if id(c) not in passed and not _is_probe(c.offer))
        self.rejections.reject(unused(ranked_out), token,
                               "ranked out of the merged offers")  # fmt: skip
        try:
            return await self._store_merged(chosen, notes)
        except BaseException:  # not kept, so never to be seen
            self.rejections.reject(unused(chosen), token, "the merged offer set was not kept")
            raise

    def _reject_answers(
        self, asked: Iterable[tuple[Upstream, asyncio.Task[tuple[str, Any]]]], token: str | None
    ) -> None:
        async def offers_of(task: asyncio.Task[tuple[str, Any]], name: str) -> list[Unused]:
            outcome, detail = await task
            return [Unused(name, o.meta.url) for o in detail[0]] if outcome == "offers" else []

        self.rejections.reject_when_answered(
            ((u.name, offers_of(t, u.name)) for u, t in asked), token
        )

    async def _ask(
        self,
        upstream: Upstream,
        path: str,
        body: bytes,
        token: str | None,
        kinds: set[str],
        stop: float,
        needs: Sequence[AcceleratorNeed] = (),
    ) -> tuple[str, Any]:
        """One upstream's part of a fan-out. Its call may outlast ``stop`` (when the fan-out
        stops waiting) up to its own timeout, so that offers made too late are known (and
        rejected); such an answer counts against its breaker like a timeout."""
        name = upstream.name
        # one budget per upstream for its description and the request itself
        timeout = upstream.config.timeout.total_seconds()
        deadline = time.monotonic() + timeout
        missing = await self._missing_kinds(upstream, kinds, min(deadline, stop))
        if missing:
            return "skipped", message("upstream {upstream} skipped: it does not accept {kinds}",
                                      upstream=name, kinds=missing)  # fmt: skip
        lacking = accelerators.skip_reason(name, upstream.pools, needs)
        if lacking:
            return "skipped", lacking
        if time.monotonic() >= min(deadline, stop):  # asking now would only make offers late
            return "failed", _failed(name, f"no answer within {timeout:.1f} s (its description, "
                                     "GET /node, took the time left)")  # fmt: skip
        try:
            answer = await self.upstreams.call(
                upstream, "POST", f"{upstream.config.base}{path}",
                body=body, token=token, deadline=deadline, follow=True, late_after=stop,
            )  # fmt: skip
        except UpstreamError as exc:
            return "failed", _failed(name, str(exc))
        if answer.status not in (200, 303):  # 303: the offer set was fetched from its Location
            return "failed", message("upstream {upstream} refused the request ({status}): "
                                     "{detail}", level="WARN", upstream=name,
                                     status=answer.status, detail=_detail(answer))  # fmt: skip
        try:
            offerset = parse_offerset(locate_offers(answer.document, upstream.config.base))
        except ValueError as exc:
            upstream.breaker.failure(time.monotonic(), str(exc))
            return "failed", _failed(name, str(exc))
        if offerset.result == "NO":
            reasons = [m.get("message") for m in offerset.meta.get("messages") or []
                       if isinstance(m, dict) and m.get("message")]  # fmt: skip
            return "no", message(
                "upstream {upstream} answered NO: {reasons}",
                upstream=name,
                reasons="; ".join(str(r) for r in reasons) or "no reason given",
            )
        return "offers", (offerset.offers, self._degraded(upstream, offerset.offers, kinds))

    def _degraded(
        self, upstream: Upstream, offers: list[UpstreamOffer], kinds: set[str]
    ) -> list[Message]:
        """What the aggregator could not know about an upstream's offers, as messages: a node
        without a description (of another implementation) is asked whatever the kinds, and
        offers without a site are named by the upstream alone."""
        notes = []
        if upstream.undescribed and kinds:
            notes.append(message(
                "upstream {upstream} does not describe itself (no /node): asked without "
                "checking the kinds it accepts", upstream=upstream.name,
            ))  # fmt: skip
        if any(not (o.model_extra or {}).get("site") for o in offers):
            notes.append(message(
                "upstream {upstream} names no site in its offers: they are known by the "
                "upstream's name alone", upstream=upstream.name,
            ))  # fmt: skip
        return notes

    async def _missing_kinds(self, upstream: Upstream, kinds: set[str], deadline: float) -> str:
        """The requested kinds the upstream's description says it does not accept, if any."""
        accepted = await self.upstreams.kinds(upstream, deadline)
        return "" if accepted is None else ", ".join(sorted(kinds - accepted))

    async def _store_merged(
        self, chosen: list[Candidate], notes: list[Message], result: str | None = None
    ) -> dict[str, Any]:
        merged = self._merge(chosen, notes, result)
        await self._save(merged)
        return merged.document

    async def _save(self, merged: Merged, own_session: dict[str, Any] | None = None) -> None:
        """Keep a merged offer set (and the aggregator's own session for it, if any)."""
        document = merged.document
        await asyncio.to_thread(
            self.store.save_offerset,
            document["meta"]["uuid"], created_at=merged.created_at, expires_at=merged.created_at,
            result=document["result"], messages=document["meta"]["messages"],
            sessions=merged.sessions, own_session=own_session,
        )  # fmt: skip

    def _merge(
        self, chosen: list[Candidate], notes: list[Message], result: str | None = None
    ) -> Merged:
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
        result = result or ("YES" if offers else "NO")
        dumped = [_dump(m) for m in notes]
        document = {
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
        return Merged(document, sessions, now)

    # --- offer sets and sessions -------------------------------------------------------------

    async def get_offerset(self, offerset_uuid: str, token: str | None) -> dict[str, Any]:
        stored = await asyncio.to_thread(self.store.offerset, offerset_uuid)
        if stored is None:
            raise NotFound("offer set", offerset_uuid)
        combined = await self.combined.offerset(offerset_uuid, stored, token)
        if combined is not None:
            return combined
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
        own = await asyncio.to_thread(self.store.own_session, session_uuid)
        if own is not None:
            return own
        combined = await self.combined.session(session_uuid, token)
        if combined is not None:
            return combined
        return await self._fetch(await self._remote(session_uuid), token)

    async def _fetch(self, remote: RemoteSession, token: str | None) -> dict[str, Any]:
        answer = await self._call(remote, "GET", remote.remote_url, token=token)
        if answer.status == 404:
            raise NotFound("session", remote.uuid)
        if answer.status != 200 or not isinstance(answer.document, dict):
            raise UpstreamUnavailable(f"upstream {remote.upstream} answered {answer.status}")
        return await series.adopt(self.store, remote, self._rewrite(remote, answer.document),
                                  self.base_url)  # fmt: skip

    async def update_session(
        self, session_uuid: str, update: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        own = await asyncio.to_thread(self.store.own_session, session_uuid)
        if own is not None:
            return _update_own(own, update)
        combined = await self.combined.update(session_uuid, update, token)
        if combined is not None:
            return combined
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
            refused(answer, remote.upstream)
            raise UpstreamUnavailable(f"upstream {remote.upstream} answered {answer.status}")
        document = await series.adopt(self.store, remote, self._rewrite(remote, answer.document),
                                      self.base_url)  # a series: its occurrences  # fmt: skip
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
            phase = phase_of(answer.document)
            if answer.status == 200 or (answer.status == 409 and phase in ("REJECTED", "EXPIRED")):
                return None  # rejected now, or already (the node rejects its own siblings)
            return message("could not reject offer {uuid} at upstream {upstream}: it answered "
                           "{status}", level="WARN", uuid=sibling.uuid,
                           upstream=sibling.upstream, status=answer.status)  # fmt: skip

        results = await asyncio.gather(*(reject(s) for s in siblings))
        return [r for r in results if r is not None]

    async def session_logs(self, session_uuid: str, token: str | None) -> str:
        if await asyncio.to_thread(self.store.own_session, session_uuid) is not None:
            return ""  # it never ran: no output, as a node says of a session that did not
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
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Start now on the first upstream (by weight) that can; NO or 409 when none can.

        An upstream answers in one of the forms either implementation has: ``303 See Other`` to
        ``/sessions/{uuid}`` (with the session as its body, or followed), ``200`` with the
        session, ``400`` with a FAILED session (it cannot start it), or, from ebroker nodes
        before the standard's form, ``201`` with an offer set. The aggregator answers in the
        form its spec declares (see ``DIRECT_SEE_OTHER``). When none kept a FAILED session,
        the aggregator's own is kept with its NO offer set, for GET /sessions/{uuid}."""
        deadline = self._stop_at()
        kinds = requested_kinds(document)
        needs = accelerators.requested(document)
        notes: list[Message] = []
        conflicts = []
        failed: list[Candidate] = []  # the FAILED sessions upstreams kept, by weight
        ups = sorted(self.upstreams.by_name.values(), key=lambda u: -u.config.weight)
        for upstream in ups:
            if await self._missing_kinds(upstream, kinds, deadline):
                continue
            lacking = accelerators.skip_reason(upstream.name, upstream.pools, needs)
            if lacking:
                notes.append(lacking)
                continue
            try:
                answer = await self.upstreams.call(
                    upstream, "POST", f"{upstream.config.base}/direct{_query(project)}",
                    document=document, token=token, deadline=deadline, follow=True,
                )  # fmt: skip
            except UpstreamError as exc:
                notes.append(_failed(upstream.name, str(exc)))
                continue
            started = self._started(upstream, answer, notes)
            if started:
                fanout_ended()
                merged = await self._store_merged(
                    [Candidate(upstream.name, upstream.config.weight, o) for o in started], notes
                )
                return self._direct_answer(merged)
            if started is not None:
                continue  # malformed: noted
            if answer.status == 409:
                conflicts.append(f"{upstream.name}: {_detail(answer)}")
                continue
            notes.append(message("upstream {upstream} cannot start it: {detail}",
                                 upstream=upstream.name, detail=_detail(answer)))  # fmt: skip
            kept = _failed_session_of(upstream, answer)
            if kept is not None:
                failed.append(Candidate(upstream.name, upstream.config.weight, kept))
        fanout_ended()
        if conflicts:
            raise Conflict("no upstream can start it now: " + "; ".join(conflicts),
                           messages=conflicts + [n.message for n in notes])  # fmt: skip
        if not DIRECT_SEE_OTHER:
            return await self._store_merged([], notes), 200, {}
        if failed:
            # the first FAILED session an upstream kept is ours too: GET finds it there
            merged = await self._store_merged(failed[:1], notes, result="NO")
            session = merged["offers"][0]
            meta = session.setdefault("meta", {})
            meta["messages"] = list(meta.get("messages") or []) + merged["meta"]["messages"]
            return session, 400, {}
        merged = self._merge([], notes)
        session = self._failed_session(document, merged.document)
        await self._save(merged, own_session=session)
        return session, 400, {}

    def _started(
        self, upstream: Upstream, answer: Answer, notes: list[Message]
    ) -> list[UpstreamOffer] | None:
        """The session(s) an upstream's answer to ``/direct`` started: a list (empty when the
        answer was malformed, which is noted), or None when it did not start one."""
        doc = answer.document
        try:
            if answer.status == 201 or (answer.status == 200 and isinstance(doc, dict)
                                        and "offers" in doc):  # fmt: skip
                offerset = parse_offerset(locate_offers(doc, upstream.config.base))
                if offerset.result == "YES":
                    return offerset.offers
                return None if answer.status == 200 else []
            if answer.status in (200, 303) and is_session(doc) and doc.get("phase") != "FAILED":
                meta = dict(doc["meta"])
                if not meta.get("url") and answer.location:
                    meta["url"] = answer.location
                wrapped = locate_offers({"offers": [{**doc, "meta": meta}]}, upstream.config.base)
                return [UpstreamOffer.model_validate(wrapped["offers"][0])]
        except (ValueError, ValidationError) as exc:
            notes.append(_failed(upstream.name, f"malformed session ({str(exc)[:200]})"))
            return []
        if answer.status in (200, 303):
            notes.append(_failed(upstream.name, f"its answer ({answer.status}) is no session"))
            return []
        return None

    def _direct_answer(self, merged: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
        if not DIRECT_SEE_OTHER:
            return merged, 201, {}
        (session,) = merged["offers"][:1] or [None]
        if session is None:
            return merged, 201, {}
        meta = session.setdefault("meta", {})
        meta["messages"] = list(meta.get("messages") or []) + merged["meta"]["messages"]
        return session, 303, {"Location": session["meta"]["url"]}

    def _failed_session(self, document: Any, merged: dict[str, Any]) -> dict[str, Any]:
        """No upstream could start it, and none kept a FAILED session: one of the aggregator's
        own (the standard's 400 answer) whose messages say why."""
        request = document if isinstance(document, dict) else {}
        uuid = new_uuid()
        session: dict[str, Any] = {
            "kind": SESSION_KIND,
            "meta": {
                "uuid": uuid,
                "url": f"{self.base_url}/sessions/{uuid}",
                "created": merged["meta"]["created"],
                "messages": merged["meta"]["messages"],
            },
            "phase": "FAILED",
            "expires": merged["expires"],
            "schedule": {},
            "executable": request.get("executable") or {},
            "offerset": {"uuid": merged["meta"]["uuid"], "url": merged["meta"]["url"]},
        }
        for key in ("compute", "storage", "data"):
            if request.get(key):
                session[key] = request[key]
        return session

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
    """What an upstream's refusal says: a problem's detail, or a session's (the standard's
    FAILED session) or offer set's messages."""
    doc = answer.document
    if not isinstance(doc, dict):
        return ""
    said = doc.get("detail") or doc.get("title")
    if not said:
        meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
        texts = [m.get("message") or m.get("template") for m in own_messages(meta.get("messages"))]
        said = "; ".join(t for t in texts if t)
    return str(said or f"it answered {answer.status}")[:500]


def _update_own(session: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """An update of one of the aggregator's own FAILED sessions: repeating FAILED is harmless,
    as on a node; nothing else can change about a session that never started."""
    if update.get("path") == "phase" and update.get("value") == FAILED:
        return session
    raise Conflict(
        "the session FAILED (no upstream could start it): it cannot change any more",
        phase=FAILED,
        session=session,
    )


def _failed_session_of(upstream: Upstream, answer: Answer) -> UpstreamOffer | None:
    """The FAILED session an upstream's 400 carries (the standard's answer to a direct
    execution that cannot start), if it names one the aggregator can point at."""
    doc = answer.document
    if answer.status != 400 or not is_session(doc) or doc.get("phase") != "FAILED":
        return None
    located = locate_offers({"offers": [doc]}, upstream.config.base)["offers"][0]
    try:
        return UpstreamOffer.model_validate(located)
    except ValidationError:
        return None


def refused(answer: Answer, upstream: str) -> None:
    """Raise the problem of our own for an upstream's 4xx to an update: a conflict (409, or
    a 4xx carrying the session as it is), a bad update (400, 422), or forbidden (403)."""
    status, doc = answer.status, answer.document
    if not 400 <= status < 500:
        return
    detail = f"upstream {upstream}: {_detail(answer)}"
    if status == 409 or (status not in (400, 403, 422) and phase_of(doc)):
        raise Conflict(detail, phase=phase_of(doc))
    if status in (400, 422):
        raise DocumentInvalid([FieldError("", detail)])
    if status == 403:
        raise Forbidden(detail)
