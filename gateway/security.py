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


class KeyBeforeBody:
    """ASGI middleware: with keys on, a request to a keyed route without a valid key is answered 401 before its body
    is read, so an anonymous caller cannot make the gateway parse anything (the routes check the key again)."""

    KEYED = ("/generate_content", "/v1/jobs")

    def __init__(self, app, keys):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope["path"].startswith(self.KEYED):
            authorization = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            if self.keys.owner_of(authorization) is None:
                body = b'{"error": "missing or invalid API key: send `Authorization: Bearer KEY`"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"), (b"connection", b"close")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
