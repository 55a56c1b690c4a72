"""The composer's view of MusicService and VideoService: stubs over round-robin channels, and their health."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunereel.auth import bearer_metadata
from tunereel.channels import open_channel
from tunereel.serving import NOT_SERVING, SERVING, GrpcServer
from tunereel.v1 import music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc

log = logging.getLogger("tunereel.composer")

MUSIC_SERVICE = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name
VIDEO_SERVICE = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


class BackendFailure(Exception):
    """A backend call ended badly; `code` is what the composer's own caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# A backend's status → what the composer reports. Caller mistakes pass through; anything unexpected is INTERNAL.
_PASS_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE,
}


@dataclass
class Backend:
    name: str  # "music" or "video"
    target: str
    service: str
    channel: grpc.Channel  # round robin over the replicas that report SERVING for `service`
    health_channel: grpc.Channel | None = None  # the same, for HealthMirror: its checks don't take the streams' turns

    def failure(self, error: grpc.RpcError) -> BackendFailure:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        if code == grpc.StatusCode.UNAVAILABLE:
            if "unhealthy" in details:  # client-side health checking found no replica SERVING
                details = f"no replica reports SERVING (loading, draining, or without its weights: see its log); {details}"
            return BackendFailure(code, f"{self.name} service at {self.target} is unavailable: {details}")
        if code in _PASS_THROUGH:
            return BackendFailure(code, f"{self.name} service: {details}")
        return BackendFailure(grpc.StatusCode.INTERNAL, f"{self.name} service failed ({code.name}): {details}")


class Backends:
    def __init__(self, music_target: str, video_target: str, api_key: str | None = None):
        self.metadata = bearer_metadata(api_key)
        # Health-checked round robin: a replica that is not SERVING gets no new streams (see tunereel.channels).
        self.music, self.video = (
            Backend(name, target, service, open_channel(target, health_service=service),
                    open_channel(target, health_service=service))
            for name, target, service in (("music", music_target, MUSIC_SERVICE), ("video", video_target, VIDEO_SERVICE))
        )  # fmt: skip
        self.music_stub = music_pb2_grpc.MusicServiceStub(self.music.channel)
        self.video_stub = video_pb2_grpc.VideoServiceStub(self.video.channel)

    def close(self) -> None:
        for backend in (self.music, self.video):
            backend.channel.close()
            if backend.health_channel is not None:
                backend.health_channel.close()


class HealthMirror:
    """Polls the backends' health and mirrors it into the composer's health service.

    The composer reports each backend under the backend's service name, and the overall ("") status is SERVING only
    when the composer and both backends are, so one Check against the composer answers for the whole system.
    """

    def __init__(
        self, backends: Backends, server: GrpcServer, own_service: str, interval: float = 1.0,
        extra_services: list[str] | None = None,
    ):  # fmt: skip
        self.extra_services = extra_services or []
        self.backends = backends
        self.server = server
        self.own_service = own_service
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-mirror", daemon=True)

    def start(self) -> None:
        for service in (self.own_service, *self.extra_services):
            self.server.set_status(SERVING, service)
        self.server.set_status(NOT_SERVING, "")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check_once(self) -> bool:
        healthy = True
        for backend in (self.backends.music, self.backends.video):
            status = _check(backend)
            self.server.set_status(status, backend.service)
            healthy = healthy and status == SERVING
        self.server.set_status(SERVING if healthy else NOT_SERVING, "")
        return healthy

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - a monitor must never die
                log.exception("health check failed")
            self._stop.wait(self.interval)


def _check(backend: Backend) -> int:
    stub = health_pb2_grpc.HealthStub(backend.health_channel or backend.channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=backend.service), timeout=2.0)
        return reply.status
    except grpc.RpcError:
        return NOT_SERVING
