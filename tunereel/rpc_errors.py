"""gRPC errors with google.rpc details (AIP-193), so a client learns *which* field was bad, or when to retry,
without parsing a message.

Servers end a call with one of the `abort_*` helpers:

- INVALID_ARGUMENT carries google.rpc.BadRequest: one field violation per broken rule, with the field's path in the
  request message (e.g. "request.duration_seconds", "request.instruments[2]");
- RESOURCE_EXHAUSTED carries google.rpc.QuotaFailure (which limit) and google.rpc.RetryInfo (when to try again);
- UNAVAILABLE carries google.rpc.RetryInfo (`abort` adds it, e.g. to a backend's failure passed through).

(A backend's INVALID_ARGUMENT that the composer passes through carries no BadRequest: its paths would name fields of
another message, and the composer validates the request before any backend sees it.)

The message (the status details a person reads) stays what it was; the details travel beside it in the
`grpc-status-details-bin` trailer, readable with `grpc_status.rpc_status.from_call(call)` or `details_of(error)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tunereel.request import FieldViolation, InvalidRequest

__all__ = [
    "RETRY_UNAVAILABLE_S",
    "ErrorDetails",
    "abort",
    "abort_exhausted",
    "abort_invalid",
    "abort_invalid_field",
    "details_of",
    "rich_status",
]

# A backend that is down or still loading is usually back within seconds (Kubernetes restarts, model loading).
RETRY_UNAVAILABLE_S = 5.0


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, *details: Message) -> NoReturn:
    """End the call with `code` and `message`, plus the details; UNAVAILABLE and RESOURCE_EXHAUSTED without details
    get a RetryInfo of RETRY_UNAVAILABLE_S (e.g. a backend's failure passed through)."""
    if not details and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        details = (_retry_info(RETRY_UNAVAILABLE_S),)
    status = rpc_status.to_status(rich_status(code, message, *details))
    abort_with_status = getattr(context, "abort_with_status", None)
    if abort_with_status is not None:  # grpc's sync server
        abort_with_status(status)
    else:  # a sync handler under grpc.aio (tunereel.serving): abort takes the details as trailing metadata
        context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover - it raises


def abort_invalid(
    context: grpc.ServicerContext, error: InvalidRequest, field_path: Callable[[tuple[str | int, ...]], str]
) -> NoReturn:
    """INVALID_ARGUMENT for a request model error: every violation, its path made a proto field path by `field_path`
    (e.g. `lambda path: wire.proto_field_path(path, "request")`)."""
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), _bad_request(error.violations, field_path))


def abort_invalid_field(context: grpc.ServicerContext, field: str, message: str) -> NoReturn:
    """INVALID_ARGUMENT for one field named by its proto path; the violation's description is the message without
    its "field: " head."""
    violation = FieldViolation((field,), message.removeprefix(f"{field}: "))
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, message, _bad_request([violation], lambda path: path[0]))


def abort_exhausted(context: grpc.ServicerContext, message: str, *, subject: str, retry_after_s: float) -> NoReturn:
    """RESOURCE_EXHAUSTED: `subject` names the limit that is full (QuotaFailure), `retry_after_s` when to retry."""
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)]
    )
    abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message, quota, _retry_info(retry_after_s))


def _bad_request(
    violations: Iterable[FieldViolation], field_path: Callable[[tuple[str | int, ...]], str]
) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field_path(v.path), description=v.reason)
            for v in violations
        ]
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return info


# --- the client's side -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call's google.rpc details say (empty when it carried none)."""

    field_violations: tuple[tuple[str, str], ...] = ()  # (field path, description)
    quota_violations: tuple[tuple[str, str], ...] = ()  # (subject, description)
    retry_after_s: float | None = None

    @property
    def retry_after_header(self) -> str | None:
        """The HTTP Retry-After value (whole seconds, rounded up), if the error said when to retry."""
        return None if self.retry_after_s is None else str(max(1, math.ceil(self.retry_after_s)))


def details_of(error: grpc.RpcError) -> ErrorDetails:
    """The details of a failed call (sync or asyncio). Details whose status disagrees with the call's are ignored."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError, TypeError):
        return ErrorDetails()
    if status is None:
        return ErrorDetails()
    fields, quotas, retry = [], [], None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quotas += [(v.subject, v.description) for v in quota.violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.ToNanoseconds() / 1e9
    return ErrorDetails(tuple(fields), tuple(quotas), retry)
