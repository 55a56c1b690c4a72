"""API keys on the HTTP side: checked here, then forwarded to the composer as gRPC metadata."""

from __future__ import annotations

from fastapi import HTTPException, Request

from tunereel.auth import bearer_metadata


def caller_metadata(request: Request) -> list[tuple[str, str]]:
    """The gRPC metadata for this caller; 401 when keys are on and the caller has no valid one."""
    keys = request.app.state.api_keys
    authorization = request.headers.get("authorization")
    if keys.owner_of(authorization) is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key: send `Authorization: Bearer KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return [("authorization", authorization)] if keys.enabled else bearer_metadata(None)
