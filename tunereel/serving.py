"""What every tunereel gRPC server has: a thread pool, health (grpc.health.v1), reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import _async as aio_health
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunereel.auth import ApiKeyInterceptor, ApiKeys, AsyncApiKeyInterceptor, refuse_open_binding
from tunereel.channels import MESSAGE_LIMIT_BYTES

__all__ = ["GrpcServer", "AsyncGrpcServer", "start_server", "start_async_server", "Turnstile", "SERVING", "NOT_SERVING"]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING



class GrpcServer:
    """A started server with its health servicer; `set_serving` flips every registered service at once."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, service_names: Sequence[str], port: int):
        self.server = server
        self.health = health_servicer
        self.service_names = list(service_names)
        self.port = port
        self.servicer: object | None = None  # the main servicer, for introspection and tests

    def set_status(self, status: int, service: str | None = None) -> None:
        for name in [service] if service is not None else ["", *self.service_names]:
            self.health.set(name, status)

    def set_serving(self, serving: bool) -> None:
        self.set_status(SERVING if serving else NOT_SERVING)

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let in-flight streams finish for `grace` seconds, then end."""
        self.set_serving(False)
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait_for_signals(self, grace: float | None = None, *, on_signal: Callable[[float], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then drain for `grace` seconds (default: TUNEREEL_DRAIN_SECONDS, else 10).
        `on_signal(grace)` runs at once when the signal comes (e.g. a job runner that must stop claiming now)."""
        grace = float(os.environ.get("TUNEREEL_DRAIN_SECONDS", "10")) if grace is None else grace
        stopped = threading.Event()
        first_signal = on_signal

        def on_signal_received(signum, frame):  # noqa: ARG001
            logging.getLogger(__name__).info("signal %s: draining for up to %.0f s", signum, grace)
            if first_signal is not None:
                first_signal(grace)
            threading.Thread(target=lambda: (self.stop(grace), stopped.set()), daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal_received)
        signal.signal(signal.SIGINT, on_signal_received)
        while not stopped.wait(0.5):
            pass


def start_server(
    register: Callable[[grpc.Server], None],
    service_full_names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
    api_keys: ApiKeys | None = None,
    max_receive_bytes: int = MESSAGE_LIMIT_BYTES,
) -> GrpcServer:
    """pool → servicers → health → reflection → port → start. Health starts NOT_SERVING.

    With API keys (TUNEREEL_API_KEYS), every call but health and reflection needs one; without keys the server
    refuses to bind beyond loopback.
    """
    api_keys = api_keys if api_keys is not None else ApiKeys.from_env()
    refuse_open_binding(host, api_keys, "this gRPC server")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[ApiKeyInterceptor(api_keys)],
        options=_server_options(max_receive_bytes),
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    bound = _add_health_reflection_and_port(server, health_servicer, service_full_names, host, port)
    server.start()
    wrapped = GrpcServer(server, health_servicer, service_full_names, bound)
    wrapped.set_serving(False)
    return wrapped


def _server_options(max_receive_bytes: int = MESSAGE_LIMIT_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES),
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.so_reuseport", 0),
        # Clients ping every 20 s on long streams (tunereel.channels); the server's default policy would answer
        # such pings with GOAWAY too_many_pings and cut streams after a few minutes.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        *_connection_age_options(),
    ]


class AsyncGrpcServer(GrpcServer):
    """The same surface as GrpcServer over grpc.aio, whose event loop runs in a thread of its own.

    `async def` handlers (long waits such as WatchJob) hold no thread while they wait, and health answers on the
    loop, never queued behind the pool; plain handlers run in the pool as before (grpc.aio's migration pool).
    """

    def __init__(self, server, health_servicer, service_names: Sequence[str], port: int,
                 loop: asyncio.AbstractEventLoop, thread: threading.Thread):  # fmt: skip
        super().__init__(server, health_servicer, service_names, port)
        self.loop = loop
        self._thread = thread
        self._stopped = False

    def run(self, coroutine, timeout: float | None = 30.0):
        """Run a coroutine on the server's loop from any other thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def set_status(self, status: int, service: str | None = None) -> None:
        if self._stopped:
            return
        for name in [service] if service is not None else ["", *self.service_names]:
            self.run(self.health.set(name, status))

    def stop(self, grace: float = 10.0) -> None:
        if self._stopped:
            return
        self.set_serving(False)
        self._stopped = True
        self.run(self.health.enter_graceful_shutdown())
        self.run(self.server.stop(grace), timeout=grace + 30.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10.0)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple = ()):
        super().__init__(details)
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class _ThreadSideContext:
    """What a plain (sync) streaming handler sees as its context when it runs under grpc.aio: the sync server's
    behaviour, in particular `add_callback` callbacks that run when the call ends (a client's cancel included)."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._context = context
        self.callbacks: list[Callable[[], None]] = []
        self.done = False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return not self.done

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple = ()):
        raise _Aborted(code, details, trailing_metadata)  # the metadata carries google.rpc details (rpc_errors)

    def abort_with_status(self, status: grpc.Status):
        raise _Aborted(status.code, status.details, status.trailing_metadata)

    def __getattr__(self, name: str):  # time_remaining, invocation_metadata, peer, … as they are
        return getattr(self._context, name)


class SyncStreamBridge(grpc.aio.ServerInterceptor):
    """Runs plain generator handlers under grpc.aio one `next()` at a time in the pool, so a pool thread is held only
    while the handler works, not while a slow client reads; the client's cancel reaches `add_callback` callbacks."""

    _END = object()

    def __init__(self, pool: futures.ThreadPoolExecutor):
        self.pool = pool

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_stream is None or inspect.isasyncgenfunction(handler.unary_stream):
            return handler
        return grpc.unary_stream_rpc_method_handler(
            self._bridge(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _bridge(self, sync_handler: Callable):
        pool, end = self.pool, self._END

        async def bridged(request, context: grpc.aio.ServicerContext):
            loop = asyncio.get_running_loop()
            side = _ThreadSideContext(context)
            generator = None
            pending: asyncio.Future | None = None
            try:
                generator = await loop.run_in_executor(pool, lambda: iter(sync_handler(request, side)))
                while True:
                    pending = loop.run_in_executor(pool, next, generator, end)
                    item = await pending
                    pending = None
                    if item is end:
                        return
                    yield item
            except _Aborted as aborted:
                await context.abort(aborted.code, aborted.details, aborted.trailing_metadata)
            finally:
                side.done = True
                for callback in side.callbacks:  # as the sync server does when a call ends, cancelled or not
                    callback()
                if generator is not None:
                    close = lambda: pool.submit(generator.close)  # noqa: E731
                    if pending is not None and not pending.done():  # still running in the pool: close it after
                        pending.add_done_callback(lambda _future: close())
                    else:
                        close()

        return bridged



def _add_health_reflection_and_port(server, health_servicer, service_full_names: Sequence[str], host: str, port: int) -> int:
    """What every server of ours adds besides its own services: grpc.health.v1, reflection (grpcurl, Envoy), a port."""
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return bound

def start_async_server(
    register: Callable[[grpc.aio.Server], None],
    service_full_names: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
    api_keys: ApiKeys | None = None,
) -> AsyncGrpcServer:
    """start_server's steps on grpc.aio: the same options, keys, health (NOT_SERVING at first) and reflection."""
    api_keys = api_keys if api_keys is not None else ApiKeys.from_env()
    refuse_open_binding(host, api_keys, "this gRPC server")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-aio", daemon=True)
    thread.start()

    async def build():
        pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        server = grpc.aio.server(
            migration_thread_pool=pool,
            interceptors=[AsyncApiKeyInterceptor(api_keys), SyncStreamBridge(pool)],
            options=_server_options(),
        )
        register(server)
        health_servicer = aio_health.HealthServicer()
        bound = _add_health_reflection_and_port(server, health_servicer, service_full_names, host, port)
        await server.start()
        return server, health_servicer, bound

    try:
        server, health_servicer, bound = asyncio.run_coroutine_threadsafe(build(), loop).result(60)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        raise
    wrapped = AsyncGrpcServer(server, health_servicer, service_full_names, bound, loop, thread)
    wrapped.set_serving(False)
    return wrapped


def _connection_age_options() -> list[tuple[str, int]]:
    """TUNEREEL_MAX_CONNECTION_AGE_S: close client connections after that long (in-flight calls finish first), so
    clients that balance over DNS (`dns:///music:50051`) resolve again and find replicas added since they connected."""
    seconds = os.environ.get("TUNEREEL_MAX_CONNECTION_AGE_S")
    return [("grpc.max_connection_age_ms", int(float(seconds) * 1000))] if seconds else []


class Turnstile:
    """Lets one generation run at a time on this replica (one model, one accelerator); others wait in order.

    `enter` returns False if the caller's cancel flag was set while it waited.
    """

    def __init__(self, max_waiting: int | None = None) -> None:
        self._lock = threading.Lock()
        # Calls admitted (running + waiting) are bounded, so waiting calls can never take every server thread and
        # health checks always find one: TUNEREEL_MAX_WAITING, default 8 (of the pool's 16).
        self.max_waiting = int(os.environ.get("TUNEREEL_MAX_WAITING", "8")) if max_waiting is None else max_waiting
        self._admitted = 0
        self._count_lock = threading.Lock()

    def admit(self) -> bool:
        """Take a place in the line (the one running call included); False when the line is full."""
        with self._count_lock:
            if self._admitted >= 1 + self.max_waiting:
                return False
            self._admitted += 1
            return True

    def dismiss(self) -> None:
        with self._count_lock:
            self._admitted = max(0, self._admitted - 1)

    def enter(self, cancelled: threading.Event, on_wait: Callable[[], None] | None = None) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if on_wait is not None:
            on_wait()
        while not self._lock.acquire(timeout=0.2):
            if cancelled.is_set():
                return False
        return True

    def leave(self) -> None:
        self._lock.release()

    @property
    def busy(self) -> bool:
        """True while a generation holds the model."""
        return self._lock.locked()
