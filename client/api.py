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
