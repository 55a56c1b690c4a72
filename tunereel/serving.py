"""What every tunereel gRPC server has: a thread pool, health (grpc.health.v1), reflection, graceful shutdown."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunereel.auth import ApiKeyInterceptor, ApiKeys, refuse_open_binding
from tunereel.channels import MESSAGE_LIMIT_BYTES

__all__ = ["GrpcServer", "start_server", "Turnstile", "SERVING", "NOT_SERVING"]

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

    def wait_for_signals(self, grace: float | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then drain for `grace` seconds (default: TUNEREEL_DRAIN_SECONDS, else 10)."""
        grace = float(os.environ.get("TUNEREEL_DRAIN_SECONDS", "10")) if grace is None else grace
        stopped = threading.Event()

        def on_signal(signum, frame):  # noqa: ARG001
            logging.getLogger(__name__).info("signal %s: draining for up to %.0f s", signum, grace)
            threading.Thread(target=lambda: (self.stop(grace), stopped.set()), daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
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
        options=[
            ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
            ("grpc.so_reuseport", 0),
            # Clients ping every 20 s on long streams (tunereel.channels); the server's default policy would answer
            # such pings with GOAWAY too_many_pings and cut streams after a few minutes.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            *_connection_age_options(),
        ],
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    wrapped = GrpcServer(server, health_servicer, service_full_names, bound)
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

    def __init__(self) -> None:
        self._lock = threading.Lock()

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
