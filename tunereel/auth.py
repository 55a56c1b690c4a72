"""API keys: `TUNEREEL_API_KEYS` (comma-separated) turns authentication on for the /v1 HTTP routes and the gRPC
services. A key's jobs are visible to that key only; the owner id stored with a job is a hash, never the key."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable

import grpc

__all__ = ["ApiKeys", "ApiKeyInterceptor", "InsecureBinding", "refuse_open_binding", "bearer_metadata"]

# Probes and tooling must work without a key.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


class InsecureBinding(RuntimeError):
    pass


class ApiKeys:
    def __init__(self, keys: Iterable[str] = ()):
        self._keys = [key.strip() for key in keys if key.strip()]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ApiKeys:
        return cls((environ if environ is not None else os.environ).get("TUNEREEL_API_KEYS", "").split(","))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def any_key(self) -> str | None:
        """A key for this process's own calls to other tunereel services."""
        return self._keys[0] if self._keys else None

    def owner_of(self, authorization: str | None) -> str | None:
        """The owner id for a valid `Bearer KEY` header; "" when keys are off; None when the header is not valid."""
        if not self.enabled:
            return ""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = authorization.removeprefix("Bearer ").strip().encode()
        match = None
        for key in self._keys:  # compare with every key, in constant time each, so timing tells nothing
            if hmac.compare_digest(offered, key.encode()):
                match = key
        return None if match is None else hashlib.sha256(match.encode()).hexdigest()[:32]


def bearer_metadata(key: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")] if key else []


def metadata_value(context: grpc.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value
    return None


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Rejects calls without a valid key (UNAUTHENTICATED), except health and reflection."""

    def __init__(self, keys: ApiKeys):
        self.keys = keys

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        if not self.keys.enabled or handler_call_details.method.startswith(OPEN_SERVICES):
            return continuation(handler_call_details)
        authorization = dict(handler_call_details.invocation_metadata or ()).get("authorization")
        if self.keys.owner_of(authorization) is not None:
            return continuation(handler_call_details)
        return _deny(continuation(handler_call_details))


def _deny(handler: grpc.RpcMethodHandler | None):
    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send `authorization: Bearer KEY`")

    if handler is None:
        return None
    if handler.request_streaming and not handler.response_streaming:  # an upload: refused before any byte is read
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        def abort_stream(request, context):
            abort(request, context)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort)


def refuse_open_binding(host: str, keys: ApiKeys, what: str) -> None:
    """Binding beyond loopback without keys would publish an unauthenticated GPU service: refuse to start."""
    if keys.enabled or _is_loopback(host):
        return
    raise InsecureBinding(
        f"{what} refuses to listen on {host} without API keys: set TUNEREEL_API_KEYS, or bind to 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
