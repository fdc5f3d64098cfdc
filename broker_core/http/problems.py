"""One table from domain exceptions to problem responses, and spec validation with pointers.

Every error a client can cause becomes ``application/problem+json`` (RFC 9457); a 400 carries an
``errors`` list of ``{pointer, detail}`` naming each offending field by RFC 6901 pointer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator
from itertools import islice
from typing import Any

from connexion.exceptions import BadRequestProblem, ExtraParameterProblem, ProblemException
from connexion.json_schema import Draft4RequestValidator
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match

from ..errors import (
    BrokerError,
    CapacityConflict,
    Conflict,
    DocumentInvalid,
    FieldError,
    Forbidden,
    IdentityUnavailable,
    NotFound,
    ParameterInvalid,
    TooManyHolds,
    Unauthenticated,
    UpstreamUnavailable,
    pointer,
)
from ..schedule import ScheduleError
from ..suggest import unknown_field
from .bodies import BodyError
from .body_workers import RETRY_AFTER_SECONDS, run_body_job
from .formats import SPEC_FORMATS

log = logging.getLogger(__name__)
# the parameter a detail of connexion's (or ``SpecParameterValidator``'s) names
_PARAMETER_DETAIL = re.compile(r"(?:query|path) parameter '(?P<name>[^']+)'(?:: )?", re.S)
PROBLEM = "application/problem+json"
# the most errors one answer names: a hostile body can have a million, and each costs to explain
MAX_ERRORS = 20
_VALIDATED = object()  # what ``_parse`` hands connexion once it has validated the body itself


def problem_response(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ConnexionResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extensions.items() if v is not None})
    return ConnexionResponse(
        status_code=status,
        mimetype=PROBLEM,
        content_type=PROBLEM,
        body=json.dumps(body),
        headers=headers or {},
    )


def _errors(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"pointer": e.pointer, "detail": e.detail} for e in errors]


# exception class -> (status, title)
PROBLEMS: dict[type[Exception], tuple[int, str]] = {
    DocumentInvalid: (400, "Invalid document"),
    ParameterInvalid: (400, "Invalid parameter"),
    ScheduleError: (400, "Invalid schedule"),
    NotFound: (404, "Not Found"),
    Conflict: (409, "Conflict"),
    UpstreamUnavailable: (502, "Bad Gateway"),
    Unauthenticated: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
    IdentityUnavailable: (503, "Service Unavailable"),
    TooManyHolds: (429, "Too Many Requests"),
}


def broker_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    status, title = next(
        (v for cls, v in PROBLEMS.items() if isinstance(exc, cls)), (400, "Bad Request")
    )
    extensions: dict[str, Any] = {}
    if isinstance(exc, DocumentInvalid):
        extensions["errors"] = _errors(exc.errors)
    if isinstance(exc, ParameterInvalid):
        extensions["errors"] = [{"parameter": exc.parameter, "detail": exc.detail}]
    if isinstance(exc, UpstreamUnavailable) and exc.status == 504:
        status, title = 504, "Gateway Timeout"
    if isinstance(exc, Conflict):
        extensions["phase"] = exc.phase
        extensions["messages"] = exc.messages or None
    if isinstance(exc, Conflict | DocumentInvalid):
        # a refused update shows the session as it is now (the standard's other implementation
        # answers 200 with it; here the fault keeps its 4xx and the session comes along)
        extensions["session"] = exc.session
    if isinstance(exc, CapacityConflict):
        extensions["conflicts"] = exc.conflicts
    headers = None
    if isinstance(exc, TooManyHolds):
        headers = {"Retry-After": str(exc.retry_after)}
        extensions.update(limit=exc.limit, messages=exc.messages or None)
    return problem_response(status, title, str(exc), headers, **extensions)


def connexion_problem(_request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    extensions = dict(exc.ext or {})
    return problem_response(
        exc.status,
        exc.title or "Bad Request",
        str(exc.detail or exc.title),
        dict(exc.headers or {}) or None,
        **extensions,
    )


def unexpected(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.exception("unexpected error", exc_info=exc)
    return problem_response(500, "Internal Server Error", "an unexpected error was logged")


def register(app: Any) -> None:
    for cls in (BrokerError, ScheduleError):
        app.add_error_handler(cls, broker_error)
    app.add_error_handler(ProblemException, connexion_problem)
    app.add_error_handler(Exception, unexpected)


def _leaf(error: ValidationError) -> ValidationError:
    """The most specific error, descending into anyOf/oneOf branches of the matching kind."""
    return best_match([error]) if not error.context else best_match(error.context)


class PointerBodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validation, reporting the offending field as a JSON pointer, with
    the parsing and validation on a body worker, off the event loop."""

    @property
    def _validator(self) -> Draft4Validator:
        return Draft4RequestValidator(self._schema, format_checker=SPEC_FORMATS)

    async def _parse(self, stream: AsyncGenerator[bytes, None], scope: Any) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        try:
            return await run_body_job(self._parse_and_validate, raw)
        except BodyError as exc:  # too many waiting (503), out of memory (413)
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
            raise ProblemException(
                status=exc.status, title=exc.title, detail=exc.detail, headers=retry
            ) from None

    def _parse_and_validate(self, raw: bytes) -> Any:
        """What connexion does with a body, parse and ``_validate``, in one job."""
        text = raw.decode(self._encoding)
        body = None
        if text:
            try:
                body = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRequestProblem(detail=str(exc)) from None
        if body is None and self._nullable:
            return None
        self._validate(body)
        return _VALIDATED

    def _validate(self, body: Any) -> dict | None:
        if body is _VALIDATED:  # connexion calls this after _parse, which has done it
            return None
        if not self._nullable and body is None:
            raise BadRequestProblem("Request body must not be empty")
        errors = list(islice(self._validator.iter_errors(body), 4 * MAX_ERRORS))
        if not errors:
            return body
        errors = [e for error in errors for e in _document_branch(error)]
        found = []
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            leaf = _kind_branch(error) or _leaf(error)
            found.extend(_field_errors(leaf, MAX_ERRORS - len(found)))
            if len(found) >= MAX_ERRORS:
                break
        detail = "; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in found)
        raise ProblemException(
            status=400, title="Invalid document", detail=detail, ext={"errors": found}
        )


class SpecParameterValidator(ParameterValidator):
    """connexion's path, query and header validation with every format of the spec checked
    (a uuid path parameter is a uuid before any query uses it), and a one-line detail; a
    problem for a query or path parameter names it in ``errors`` (``{parameter, detail}``)."""

    def validate_request(self, request: Any) -> None:
        try:
            super().validate_request(request)
        except ExtraParameterProblem as exc:
            known = {p["name"] for p in self.parameters.get("query", [])}
            extra = sorted(set(request.query_params) - known)
            raise ProblemException(
                status=400, title="Invalid parameter", detail=exc.detail,
                ext={"errors": [{"parameter": name[:100], "detail": "not a parameter of this "
                                 "operation"} for name in extra[:MAX_ERRORS]]},
            ) from None  # fmt: skip
        except BadRequestProblem as exc:
            detail = str(exc.detail or "")
            named = _PARAMETER_DETAIL.search(detail)
            if named is None:
                raise
            rest = (detail[: named.start()] + detail[named.end() :]).strip() or detail
            raise ProblemException(
                status=400, title="Invalid parameter", detail=detail,
                ext={"errors": [{"parameter": named["name"], "detail": rest}]},
            ) from None  # fmt: skip

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        if value is None:
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        error = best_match(
            Draft4Validator(param.get("schema", param), format_checker=SPEC_FORMATS).iter_errors(
                value
            )
        )
        if error is None:
            return None
        return f"{parameter_type} parameter '{param['name']}': {_detail(error)}"


def _document_branch(error: ValidationError) -> list[ValidationError]:
    """A whole document that may be one of several (an execution request, or a combined
    request of parts): the errors of the branch whose required properties the document has
    (the first branch when none), each reported as the branch's own would be, rather than one
    error of the anyOf that names no field."""
    if error.validator != "anyOf" or error.absolute_path or not isinstance(error.instance, dict):
        return [error]
    branches = [_resolved(error, schema) for schema in error.validator_value]
    if not all(isinstance(b, dict) and b.get("required") for b in branches):
        return [error]
    chosen = next((i for i, b in enumerate(branches)
                   if all(key in error.instance for key in b["required"])), 0)  # fmt: skip
    return [e for e in error.context or () if e.relative_schema_path[0] == chosen] or [error]


def _resolved(error: ValidationError, schema: Any) -> Any:
    """A subschema with its ``$ref`` (if any) looked up."""
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref and error._resolver is not None:  # type: ignore[attr-defined]
        try:
            return error._resolver.lookup(ref).contents  # type: ignore[attr-defined]
        except Exception:
            return None
    return schema


def _kind_branch(error: ValidationError) -> ValidationError | None:
    """For an anyOf over kinds, the errors of the branch whose ``kind`` matched the document."""
    if error.validator != "anyOf" or not isinstance(error.instance, dict):
        return None
    kind = error.instance.get("kind")
    for sub in error.context or ():
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else None
        schema = error.validator_value[branch] if isinstance(branch, int) else {}
        enum = _resolve_kind_enum(error, schema)
        if enum and kind in enum:
            return best_match([e for e in error.context if e.relative_schema_path[0] == branch])
    return None


def _resolve_kind_enum(error: ValidationError, schema: dict) -> list | None:
    schema = _resolved(error, schema)
    kind = schema.get("properties", {}).get("kind", {}) if isinstance(schema, dict) else {}
    return kind.get("enum")


def _field_errors(error: ValidationError, most: int = MAX_ERRORS) -> list[dict[str, str]]:
    """One entry per offending field (the first ``most``); unexpected properties are named
    themselves."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = list(islice((k for k in error.instance if k not in known), most))
        if extra:
            return [
                {"pointer": pointer(*error.absolute_path, k), "detail": unknown_field(k, known)}
                for k in extra
            ]
    return [{"pointer": pointer(*error.absolute_path), "detail": _detail(error)}]


def _detail(error: ValidationError) -> str:
    message = error.message
    return message if len(message) <= 300 else message[:297] + "..."
