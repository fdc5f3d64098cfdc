"""One HTTP client for a broker node or an aggregator (they speak the same API): typed results
for what the commands read, the answer's JSON kept in ``raw`` for ``--output json|yaml``, and
every failure as one of three errors a command can turn into a message and an exit code:

- :class:`Refused`: the broker said no to the act (a 4xx; its RFC 9457 problem made into a
  sentence, field errors and all);
- :class:`Unreachable`: no answer (connection refused, DNS, timeout, TLS);
- :class:`ServerFailed`: an answer that is no answer (a 5xx, or a body that is not the API's).

The token goes in the ``Authorization`` header only; no message here ever includes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

JSON = "application/json"
USER_AGENT = "ebroker-client"


class ClientError(Exception):
    """A call that did not do what it asked; ``str()`` is the message for the user."""


class Unreachable(ClientError):
    pass


class ServerFailed(ClientError):
    pass


class Refused(ClientError):
    """A 4xx: ``status`` and the problem document (``problem``, {} when the body was none)."""

    def __init__(self, message: str, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.problem = dict(problem)


def problem_message(status: int, problem: Mapping[str, Any], fallback: str = "") -> str:
    """An RFC 9457 problem as one readable text: title and detail, each field error with its
    pointer, the messages, the current phase of a refused update."""
    head = str(problem.get("title") or fallback or f"HTTP {status}")
    detail = problem.get("detail")
    lines = [f"{head} ({status})" + (f": {detail}" if detail and detail != head else "")]
    for error in problem.get("errors") or []:
        if isinstance(error, Mapping):
            where = error.get("pointer") or error.get("parameter") or ""
            lines.append(f"  {where}: {error.get('detail', '')}".rstrip(": "))
    for message in problem.get("messages") or []:
        lines.append(f"  {message}")
    if problem.get("phase") and "phase" not in (detail or ""):
        lines.append(f"  the session is {problem['phase']}")
    if problem.get("limit"):
        lines.append(f"  limit: {problem['limit']}")
    return "\n".join(lines)


def messages_of(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta = doc.get("meta") or {}
    return [m for m in meta.get("messages") or [] if isinstance(m, dict)]


def message_text(message: Mapping[str, Any]) -> str:
    return str(message.get("message") or message.get("template") or "")


@dataclass(frozen=True)
class Session:
    """An offer or an accepted session, as GET /sessions/{uuid} answers it."""

    uuid: str
    phase: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Session:
        meta = doc.get("meta") or {}
        return cls(uuid=str(meta.get("uuid", "")), phase=str(doc.get("phase", "")), raw=dict(doc))

    @property
    def name(self) -> str:
        return str((self.raw.get("meta") or {}).get("name") or "")

    @property
    def start(self) -> str:
        available = (self.raw.get("schedule") or {}).get("available") or {}
        return str(available.get("start", "")).split("/")[0]

    @property
    def duration(self) -> str:
        return str(((self.raw.get("schedule") or {}).get("available") or {}).get("duration", ""))

    @property
    def expires(self) -> str:
        return str(self.raw.get("expires") or "")

    @property
    def site(self) -> str:
        site = self.raw.get("site") or {}
        return str(site.get("upstream") or site.get("name") or "")

    @property
    def pools(self) -> list[str]:
        return [str(p) for p in (self.raw.get("site") or {}).get("pools") or []]

    @property
    def connectors(self) -> list[dict[str, Any]]:
        return [c for c in self.raw.get("connectors") or [] if isinstance(c, dict)]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return messages_of(self.raw)

    def amount(self, resource: str) -> str:
        """The cores or memory granted (an offer's min = max), or the range."""
        value = (self.raw.get("compute") or {}).get(resource) or {}
        low, high = value.get("min"), value.get("max")
        if low is None and high is None:
            return ""
        return str(low if low == high or high is None else f"{low}..{high}")

    def schedule(self, phase: str) -> tuple[str, str]:
        """The booked (start, duration) of ``preparing`` or ``releasing``."""
        span = (self.raw.get("schedule") or {}).get(phase) or {}
        return str(span.get("start", "")), str(span.get("duration", ""))


@dataclass(frozen=True)
class OfferSet:
    uuid: str
    result: str
    offers: list[Session]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> OfferSet:
        meta = doc.get("meta") or {}
        offers = [Session.of(o) for o in doc.get("offers") or [] if isinstance(o, dict)]
        return cls(str(meta.get("uuid", "")), str(doc.get("result", "")), offers, dict(doc))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return messages_of(self.raw)


@dataclass(frozen=True)
class Page:
    """The items of one list, every page of it, and what the broker said on the way (an
    aggregator's unreachable upstreams)."""

    items: list[dict[str, Any]]
    messages: list[dict[str, Any]]


# --- the admin controls' answers


def _dicts(values: Any) -> list[dict[str, Any]]:
    return [v for v in values or [] if isinstance(v, dict)]


def _amounts(values: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (values or {}).items() if isinstance(v, int | float)}


@dataclass(frozen=True)
class BookedSession:
    """A session (or an open offer) booked on a pool, and what it takes there: ``amounts`` per
    class, or ``amount`` of the one class a conflict is about."""

    session: str
    phase: str
    owner: str
    start: str
    end: str
    amounts: dict[str, int]
    amount: int | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> BookedSession:
        amount = doc.get("amount")
        return cls(
            session=str(doc.get("session", "")), phase=str(doc.get("phase") or ""),
            owner=str(doc.get("owner") or ""), start=str(doc.get("start", "")),
            end=str(doc.get("end", "")), amounts=_amounts(doc.get("amounts")),
            amount=int(amount) if isinstance(amount, int) else None,
        )  # fmt: skip


@dataclass(frozen=True)
class MaintenanceWindow:
    """A maintenance window: as GET /node shows it to everyone (the summary), or as the admin
    operations answer it (who booked it, what it took, the sessions it overlaps)."""

    uuid: str
    start: str
    end: str
    reason: str
    amounts: dict[str, int]  # {} when it takes all of the pool's capacity
    pool: str
    created_by: str
    created: str
    deleted: str
    complete: bool | None
    short: list[str]
    taken: list[dict[str, Any]]
    overlapping: list[BookedSession]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> MaintenanceWindow:
        complete = doc.get("complete")
        return cls(
            uuid=str(doc.get("uuid", "")), start=str(doc.get("start", "")),
            end=str(doc.get("end", "")), reason=str(doc.get("reason") or ""),
            amounts=_amounts(doc.get("amounts")), pool=str(doc.get("pool") or ""),
            created_by=str(doc.get("created_by") or ""), created=str(doc.get("created") or ""),
            deleted=str(doc.get("deleted") or ""),
            complete=complete if isinstance(complete, bool) else None,
            short=[str(c) for c in doc.get("short") or []], taken=_dicts(doc.get("taken")),
            overlapping=[BookedSession.of(o) for o in _dicts(doc.get("overlapping"))],
            raw=dict(doc),
        )  # fmt: skip


@dataclass(frozen=True)
class Drain:
    since: str
    by: str
    reason: str

    @classmethod
    def of(cls, doc: Any) -> Drain | None:
        if not isinstance(doc, Mapping):
            return None
        return cls(str(doc.get("since") or ""), str(doc.get("by") or ""),
                   str(doc.get("reason") or ""))  # fmt: skip


@dataclass(frozen=True)
class Override:
    """An admin's change to a pool's inventories: per class, the fields set."""

    inventories: dict[str, dict[str, Any]]
    by: str
    at: str
    reason: str

    @classmethod
    def of(cls, doc: Any) -> Override | None:
        if not isinstance(doc, Mapping):
            return None
        fields = {str(k): dict(v) for k, v in (doc.get("inventories") or {}).items()
                  if isinstance(v, Mapping)}  # fmt: skip
        return cls(fields, str(doc.get("by") or ""), str(doc.get("at") or ""),
                   str(doc.get("reason") or ""))  # fmt: skip


@dataclass(frozen=True)
class PoolState:
    """A pool as GET /node and the drain operations show it: open or drained (and why, by whom,
    since when), its inventories per class, an admin's override, its maintenance windows."""

    name: str  # platform/pool
    state: str
    drain: Drain | None
    inventories: dict[str, dict[str, Any]]
    override: Override | None
    maintenance: list[MaintenanceWindow]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> PoolState:
        inventories = {str(k): dict(v) for k, v in (doc.get("inventories") or {}).items()
                       if isinstance(v, Mapping)}  # fmt: skip
        return cls(
            name=str(doc.get("name", "")), state=str(doc.get("state") or "open"),
            drain=Drain.of(doc.get("drain")), inventories=inventories,
            override=Override.of(doc.get("override")),
            maintenance=[MaintenanceWindow.of(w) for w in _dicts(doc.get("maintenance"))],
            raw=dict(doc),
        )  # fmt: skip

    def capacity(self, resource: str) -> int | None:
        value = (self.inventories.get(resource) or {}).get("capacity")
        return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class InventoryConflict:
    """A stretch of time [start, end) where the sessions booked on a pool would need more of
    ``resource_class`` than its new ``capacity``: ``needed`` at most at once."""

    resource_class: str
    capacity: int
    needed: int
    start: str
    end: str
    sessions: list[BookedSession]

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> InventoryConflict:
        return cls(
            str(doc.get("resource_class", "")), int(doc.get("capacity") or 0),
            int(doc.get("needed") or 0), str(doc.get("from", "")), str(doc.get("to", "")),
            [BookedSession.of(s) for s in _dicts(doc.get("sessions"))],
        )  # fmt: skip


@dataclass(frozen=True)
class InventoryResult:
    """The answer to an inventory change: applied (false for a dry run), the inventories as
    they are now (or would be), the override, and what no longer fits."""

    pool: str
    applied: bool
    inventories: dict[str, dict[str, Any]]
    override: Override | None
    conflicts: list[InventoryConflict]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> InventoryResult:
        inventories = {str(k): dict(v) for k, v in (doc.get("inventories") or {}).items()
                       if isinstance(v, Mapping)}  # fmt: skip
        return cls(
            str(doc.get("pool", "")), bool(doc.get("applied")), inventories,
            Override.of(doc.get("override")),
            [InventoryConflict.of(c) for c in _dicts(doc.get("conflicts"))], dict(doc),
        )  # fmt: skip


class Conflicts(Refused):
    """A 409 refusing an inventory change that booked sessions would no longer fit (without
    ``force``): the problem's ``conflicts``, typed."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(str(refused), refused.status, refused.problem)
        self.conflicts = [InventoryConflict.of(c) for c in _dicts(refused.problem.get("conflicts"))]


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: str
    actor: str
    action: str
    subject: str
    detail: str

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> AuditEvent:
        return cls(int(doc.get("id") or 0), str(doc.get("at", "")), str(doc.get("actor", "")),
                   str(doc.get("action", "")), str(doc.get("subject", "")),
                   str(doc.get("detail") or ""))  # fmt: skip


@dataclass(frozen=True)
class AuditLog:
    """The events read (one page, or every page), their documents in ``raw``, and whether the
    log goes on past them (``more``: a page was read and it had a ``next``)."""

    events: list[AuditEvent]
    raw: list[dict[str, Any]] = field(repr=False)
    more: bool = False


class Broker:
    """The API of one node or aggregator at ``url``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the operations

    def request_offers(
        self, doc: Mapping[str, Any], probe: bool = False, project: str | None = None
    ) -> OfferSet:
        params: dict[str, Any] = {}
        if probe:
            params["probe"] = "true"
        if project:
            params["project"] = project
        return OfferSet.of(self._json("POST", "/requests", json=dict(doc), params=params))

    def session(self, uuid: str) -> Session:
        return Session.of(self._json("GET", f"/sessions/{uuid}"))

    def update(self, uuid: str, update: Mapping[str, Any]) -> Session:
        return Session.of(self._json("POST", f"/sessions/{uuid}", json=dict(update)))

    def offer_set(self, uuid: str) -> OfferSet:
        return OfferSet.of(self._json("GET", f"/offersets/{uuid}"))

    def withdraw(self, uuid: str, update: Mapping[str, Any]) -> OfferSet:
        return OfferSet.of(self._json("POST", f"/offersets/{uuid}", json=dict(update)))

    def logs(self, uuid: str) -> str:
        return self._call("GET", f"/sessions/{uuid}/logs", headers={"Accept": "text/plain"}).text

    def sessions(self, **filters: Any) -> Page:
        return self._every("/sessions", filters)

    def offer_sets(self, **filters: Any) -> Page:
        return self._every("/offersets", filters)

    # --- the admin controls (a pool is PLATFORM/POOL: its path is /pools/PLATFORM/POOL)

    def pools(self) -> list[PoolState]:
        """Every pool of the node, from GET /node (an aggregator has none)."""
        node = self._json("GET", "/node")
        return [PoolState.of(p) for platform in _dicts(node.get("platforms"))
                for p in _dicts(platform.get("pools"))]  # fmt: skip

    def drain(self, pool: str, reason: str) -> PoolState:
        return PoolState.of(self._json("PUT", f"/pools/{pool}/drain", json={"reason": reason}))

    def undrain(self, pool: str) -> PoolState:
        return PoolState.of(self._json("DELETE", f"/pools/{pool}/drain"))

    def maintenance(self, pool: str) -> list[MaintenanceWindow]:
        listed = self._json("GET", f"/pools/{pool}/maintenance")
        return [MaintenanceWindow.of(w) for w in _dicts(listed.get("items"))]

    def book_maintenance(self, pool: str, doc: Mapping[str, Any]) -> MaintenanceWindow:
        booked = self._json("POST", f"/pools/{pool}/maintenance", json=dict(doc))
        return MaintenanceWindow.of(booked)

    def delete_maintenance(self, pool: str, uuid: str) -> MaintenanceWindow:
        return MaintenanceWindow.of(self._json("DELETE", f"/pools/{pool}/maintenance/{uuid}"))

    def change_inventory(self, pool: str, doc: Mapping[str, Any]) -> InventoryResult:
        """PATCH the pool's inventory; a 409 listing conflicts is :class:`Conflicts`."""
        try:
            return InventoryResult.of(
                self._json("PATCH", f"/pools/{pool}/inventory", json=dict(doc))
            )
        except Refused as e:
            if e.status == 409 and "conflicts" in e.problem:
                raise Conflicts(e) from None
            raise

    def audit(self, every: bool = True, **filters: Any) -> AuditLog:
        """The audit log, oldest first: every page (``every``), or the first."""
        if every:
            items = self._every("/audit", filters).items
            return AuditLog([AuditEvent.of(i) for i in items], items)
        params = {k: v for k, v in filters.items() if v not in (None, [], "")}
        page = self._json("GET", "/audit", params=params)
        items = _dicts(page.get("items"))
        return AuditLog([AuditEvent.of(i) for i in items], items, more=bool(page.get("next")))

    # --- the wire

    def _every(self, path: str, filters: Mapping[str, Any], max_pages: int = 10_000) -> Page:
        """Every item of a list, following ``next`` with the same filters."""
        params = {k: v for k, v in filters.items() if v not in (None, [], "")}
        items: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        cursor = None
        for _ in range(max_pages):
            page = self._json(
                "GET", path, params={**params, **({"cursor": cursor} if cursor else {})}
            )
            items += [i for i in page.get("items") or [] if isinstance(i, dict)]
            messages += [m for m in page.get("messages") or [] if isinstance(m, dict)]
            cursor = page.get("next")
            if not cursor:
                return Page(items, messages)
        raise ServerFailed(f"{path}: more than {max_pages} pages; the cursor does not end")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._call(method, path, **kwargs)
        try:
            doc = response.json()
        except ValueError:
            raise ServerFailed(
                f"{method} {self.url}{path}: the answer ({response.status_code}, "
                f"{response.headers.get('content-type', 'no type')}) is not JSON"
            ) from None
        if not isinstance(doc, dict):
            raise ServerFailed(f"{method} {self.url}{path}: the answer is not a JSON object")
        return doc

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise Unreachable(f"{self.url} did not answer in time ({method} {path})") from None
        except httpx.HTTPError as e:
            reason = str(e) or type(e).__name__
            raise Unreachable(f"cannot reach {self.url}: {reason}") from None
        if response.status_code < 400:
            return response
        problem = _problem(response)
        text = problem_message(response.status_code, problem, response.reason_phrase)
        if response.status_code >= 500:
            raise ServerFailed(f"{method} {path}: {text}")
        raise Refused(text, response.status_code, problem)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {"detail": response.text[:300].strip()} if response.text.strip() else {}
    return doc if isinstance(doc, dict) else {}
