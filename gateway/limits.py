"""Request-body limits, enforced before any route parses anything.

A body over the limit is answered 413 as soon as its declared length (Content-Length) or the bytes received so far
pass the limit; the rest is never read, so a huge or endless body costs at most `max_bytes` of memory and no
parsing time.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "DEFAULT_MAX_BODY_BYTES"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # JSON bodies: a request is a few hundred bytes


class BodyLimit:
    """ASGI middleware: buffers at most `max_bytes` of a request body, then hands it on; beyond that, 413.

    `streamed` names routes (path prefixes) that stream their bodies themselves under a limit of their own (uploads:
    counted as the file passes through, never buffered, refused as soon as it passes the limit): they are let through.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES, streamed: tuple[str, ...] = ()):
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if any(scope["path"].startswith(prefix) for prefix in self.streamed):
            await self.app(scope, receive, send)  # the route counts the bytes as they stream, and stops at its limit
            return
        if declared is not None and declared > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        if declared == 0 or (declared is None and not _has_body(scope)):
            await self.app(scope, receive, send)
            return
        # Read the body here (bounded), so the route never sees more than the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, as the server sends them

        await self.app(scope, replay, send)



async def _too_large(send: Send, limit: int) -> None:
    payload = json.dumps(
        {"error": f"request body is larger than the server's limit of {limit} bytes", "code": "PAYLOAD_TOO_LARGE"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # The connection closes: the unread rest of the body must not be taken for the next request.
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                        (b"connection", b"close")],  # fmt: skip
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value) if len(value) <= 20 else 1 << 62
            except ValueError:
                return None
    return None


def _has_body(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))
