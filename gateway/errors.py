"""One table from gRPC status to HTTP status, and the JSON error body every route returns.

The body is `{"error": message, "field"?: first bad field, "code"?: gRPC code}` plus, where the error said more
(google.rpc details from the composer, or every problem the request model found): `field_violations`
(`[{"field", "description"}]`, field names as this HTTP API spells them), `quota_violations` (`[{"subject",
"description"}]`) and `retry_after_seconds` (also sent as the Retry-After header).
"""

from __future__ import annotations

import logging
import re

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunereel import rpc_errors, wire
from tunereel.redact import public_detail
from tunereel.request import FieldViolation, InvalidRequest

log = logging.getLogger("tunereel.gateway")

GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,  # the composer's own checks; the gateway's model answers 422 first
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.FAILED_PRECONDITION: 503,  # a backend without its model: the service is not ready
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


# gRPC field paths (CreateJobRequest, ComposeRequest) → this API's names: the request's fields sit at the top of the
# JSON body, and a few are spelled differently (the proto names the unit; the webhook is `webhook` here).
HTTP_FIELD_NAMES = {proto: model for model, proto in wire.PROTO_FIELD_NAMES.items()} | {"webhook_url": "webhook"}


def error_body(message: str, field: str | None = None, code: str | None = None, **details) -> dict:
    body: dict = {"error": message}
    if field:
        body["field"] = field
    if code:
        body["code"] = code
    body.update((name, value) for name, value in details.items() if value is not None)
    return body


def http_field(proto_path: str) -> str:
    """ "request.duration_seconds" → "duration"; "request.instruments[2]" → "instruments.2" (as the 422s name it)."""
    parts = re.findall(r"[^.\[\]]+", proto_path)
    if parts[:1] == ["request"] and len(parts) > 1:
        parts = parts[1:]
    return ".".join(HTTP_FIELD_NAMES.get(part, part) for part in parts)


def details_members(details: rpc_errors.ErrorDetails) -> dict:
    """A gRPC error's google.rpc details as body members (see the module's docstring)."""
    return {
        "field_violations": [
            {"field": http_field(field), "description": description} for field, description in details.field_violations
        ] or None,
        "quota_violations": [
            {"subject": subject, "description": description} for subject, description in details.quota_violations
        ] or None,
        "retry_after_seconds": details.retry_after_s,
    }


def _violations(violations: tuple[FieldViolation, ...]) -> list[dict]:
    return [{"field": violation.field, "description": violation.reason} for violation in violations]


async def on_rpc_error(request: Request, error: grpc.aio.AioRpcError) -> JSONResponse:
    code = error.code()
    status = GRPC_TO_HTTP.get(code, 502)  # anything else is a backend fault, reported as a bad gateway
    details = rpc_errors.details_of(error)
    members = details_members(details)
    field = http_field(details.field_violations[0][0]) if details.field_violations else None
    headers = {"Retry-After": details.retry_after_header or "5"} if status in (429, 503) else None
    message = public_detail(code, error.details() or code.name, log)  # no paths, SQL or addresses to the client
    body = error_body(message, field=field, code=code.name, **members)
    return JSONResponse(body, status_code=status, headers=headers)


async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(error.detail)), status_code=error.status_code, headers=error.headers)


async def on_invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
    body = error_body(str(error), field=error.field, field_violations=_violations(error.violations))
    return JSONResponse(body, status_code=422)


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {}
    if first.get("type") in ("json_invalid", "model_attributes_type", "dict_type") or (
        first.get("loc") == ("body",) and first.get("type") == "missing"
    ):
        return JSONResponse(error_body("the body must be a JSON object, e.g. " + _EXAMPLE), status_code=400)
    converted = InvalidRequest.from_validation_error_list(problems)
    body = error_body(str(converted), field=converted.field, field_violations=_violations(converted.violations))
    return JSONResponse(body, status_code=422)


_EXAMPLE = '{"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean."}'
