"""One table from gRPC status to HTTP status, and the JSON error body every route returns."""

from __future__ import annotations

import logging

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunereel.redact import public_detail
from tunereel.request import InvalidRequest

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


def error_body(message: str, field: str | None = None, code: str | None = None) -> dict:
    body: dict = {"error": message}
    if field:
        body["field"] = field
    if code:
        body["code"] = code
    return body


async def on_rpc_error(request: Request, error: grpc.aio.AioRpcError) -> JSONResponse:
    code = error.code()
    status = GRPC_TO_HTTP.get(code, 502)  # anything else is a backend fault, reported as a bad gateway
    headers = {"Retry-After": "5"} if status in (429, 503) else None
    message = public_detail(code, error.details() or code.name, log)  # no paths, SQL or addresses to the client
    return JSONResponse(error_body(message, code=code.name), status_code=status, headers=headers)


async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(error.detail)), status_code=error.status_code, headers=error.headers)


async def on_invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
    return JSONResponse(error_body(str(error), field=error.field), status_code=422)


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {}
    if first.get("type") in ("json_invalid", "model_attributes_type", "dict_type") or (
        first.get("loc") == ("body",) and first.get("type") == "missing"
    ):
        return JSONResponse(error_body("the body must be a JSON object, e.g. " + _EXAMPLE), status_code=400)
    converted = InvalidRequest.from_validation_error_list(problems)
    return JSONResponse(error_body(str(converted), field=converted.field), status_code=422)


_EXAMPLE = '{"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean."}'
