"""What a client may read of an error: our own messages as they are; anything that can carry internals (paths,
SQL, peer addresses, tracebacks) replaced by a plain sentence and a reference, with the detail in the log."""

from __future__ import annotations

import logging
import re
import uuid

import grpc

__all__ = ["public_detail", "PASS_THROUGH"]

# Codes whose details our own code writes for the caller (a field, a limit, an id, a state).
PASS_THROUGH = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.CANCELLED,
})  # fmt: skip
# A message that starts by naming one of our services keeps that name: which service failed is the client's business.
SUBJECT = re.compile(r"^(music|video|composer) service\b")


def public_detail(code: grpc.StatusCode, detail: str, log: logging.Logger) -> str:
    if code in PASS_THROUGH:
        return detail
    reference = uuid.uuid4().hex[:12]
    log.warning("error ref=%s %s: %s", reference, code.name, detail)
    match = SUBJECT.match(detail)
    subject = match.group(0) if match else None
    if code == grpc.StatusCode.UNAVAILABLE:
        text = f"{subject or 'a backend service'} is unavailable"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        text = f"{subject or 'the request'} took longer than its deadline"
    else:
        text = f"{subject} failed" if subject else "internal error"
    return f"{text} (reference {reference})"
