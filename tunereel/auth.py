"""API keys: `TUNEREEL_API_KEYS` (comma-separated) turns authentication on for the /v1 HTTP routes and the gRPC
services. A key's jobs are visible to that key only; the owner id stored with a job is a hash, never the key.

Tenant keys never reach music and video: those take only service keys (`TUNEREEL_SERVICE_KEYS`), and the composer
calls them with its own (`TUNEREEL_SERVICE_KEY`), so a tenant cannot drive the GPUs directly past the job queue."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable

import grpc

__all__ = ["API_KEYS_SETTING", "SERVICE_KEYS_SETTING", "SERVICE_KEY_SETTING", "service_key_from_env",
           "webhook_secret_for_key", "ApiKeys", "ApiKeyInterceptor", "AsyncApiKeyInterceptor", "InsecureBinding", "refuse_open_binding", "bearer_metadata"]

# Probes and tooling must work without a key.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


API_KEYS_SETTING = "TUNEREEL_API_KEYS"  # tenants' keys: the gateway and the composer
SERVICE_KEYS_SETTING = "TUNEREEL_SERVICE_KEYS"  # what music and video accept (comma-separated, for key rotation)
SERVICE_KEY_SETTING = "TUNEREEL_SERVICE_KEY"  # what the composer sends to music and video


class InsecureBinding(RuntimeError):
    pass


class ApiKeys:
    def __init__(self, keys: Iterable[str] = (), *, setting: str = API_KEYS_SETTING):
        self._keys = [key.strip() for key in keys if key.strip()]
        self.setting = setting  # the environment variable these keys come from, for messages

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, *, setting: str = API_KEYS_SETTING) -> ApiKeys:
        return cls((environ if environ is not None else os.environ).get(setting, "").split(","), setting=setting)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner_of(self, authorization: str | None) -> str | None:
        """The owner id for a valid `Bearer KEY` header; "" when keys are off; None when the header is not valid."""
        if not self.enabled:
            return ""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():  # the scheme is case-insensitive (RFC 9110)
            return None
        offered = credentials.strip().encode()
        match = None
        for key in self._keys:  # compare with every key, in constant time each, so timing tells nothing
            if hmac.compare_digest(offered, key.encode()):
                match = key
        return None if match is None else self.owner_id(match)

    @staticmethod
    def owner_id(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def webhook_secret(self, owner: str) -> bytes | None:
        """The webhook signing secret of the key whose owner id this is (None when no key has it)."""
        for key in self._keys:
            if hmac.compare_digest(self.owner_id(key), owner):
                return webhook_secret_for_key(key)
        return None


def webhook_secret_for_key(key: str) -> bytes:
    """Each API key's own webhook signing secret: derived from the key, so its holder computes it and no other
    tenant can (the key itself never leaves the client's side of the signature)."""
    return hmac.new(key.encode(), b"tunereel webhook signing v1", hashlib.sha256).hexdigest().encode()


def service_key_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The key the composer presents to music and video (None: it sends none)."""
    return (environ if environ is not None else os.environ).get(SERVICE_KEY_SETTING, "").strip() or None


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


class AsyncApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """ApiKeyInterceptor for grpc.aio servers (which take only asyncio interceptors)."""

    def __init__(self, keys: ApiKeys):
        self.keys = keys

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if not self.keys.enabled or handler_call_details.method.startswith(OPEN_SERVICES) or handler is None:
            return handler
        authorization = dict(handler_call_details.invocation_metadata or ()).get("authorization")
        if self.keys.owner_of(authorization) is not None:
            return handler
        message = "missing or invalid API key: send `authorization: Bearer KEY`"
        if handler.request_streaming and not handler.response_streaming:  # an upload: refused before its first chunk
            async def abort_upload(requests, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            return grpc.stream_unary_rpc_method_handler(abort_upload)
        if handler.response_streaming:
            async def abort_stream(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover - abort raises

            return grpc.unary_stream_rpc_method_handler(abort_stream)

        async def abort(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return grpc.unary_unary_rpc_method_handler(abort)


def refuse_open_binding(host: str, keys: ApiKeys, what: str) -> None:
    """Binding beyond loopback without keys would publish an unauthenticated GPU service: refuse to start."""
    if keys.enabled or _is_loopback(host):
        return
    raise InsecureBinding(
        f"{what} refuses to listen on {host} without API keys: set {keys.setting}, or bind to 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
