"""What a client may read of an error: our own messages as they are; anything that can carry internals (paths,
SQL, peer addresses, tracebacks) replaced by a plain sentence and a reference, with the detail in the log."""

from __future__ import annotations

import logging
import uuid

import grpc

__all__ = ["public_detail", "PASS_THROUGH"]

# Codes whose details our own code writes for the caller (a field, a limit, an id, a state).
PASS_THROUGH = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.CANCELLED,
})  # fmt: skip
PLAIN = {
    grpc.StatusCode.UNAVAILABLE: "a backend service is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the request took longer than its deadline",
    grpc.StatusCode.INTERNAL: "internal error",
    grpc.StatusCode.UNKNOWN: "internal error",
    grpc.StatusCode.DATA_LOSS: "internal error",
    grpc.StatusCode.UNIMPLEMENTED: "not implemented by this server",
    grpc.StatusCode.ABORTED: "the operation was aborted; retry",
}


def public_detail(code: grpc.StatusCode, detail: str, log: logging.Logger) -> str:
    if code in PASS_THROUGH:
        return detail
    reference = uuid.uuid4().hex[:12]
    log.warning("error ref=%s %s: %s", reference, code.name, detail)
    return f"{PLAIN.get(code, 'internal error')} (reference {reference})"
