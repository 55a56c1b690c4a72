"""The composer's view of MusicService and VideoService: channels and health, and each gRPC stream turned into typed
events (the protocol of protos/ is checked here, so the composer's core never sees a protobuf).

A source (`music_source`, `video_source`) is one request to one backend: `start()` sends it, `events()` yields
`AudioHeader`, `Pcm`… or `VideoHeader`, `Frame`… with `Progress` in between and `Ended` last, and raises a
`ComposeError` (errors.py) when the backend fails or breaks the stream contract: data before its header, chunks out
of order or past the announced length, audio that is not numbers, a header that does not match the request, fewer
frames or samples than announced. `cancel()` cancels the call (and so the generation behind it).

Anything that yields these events can stand in for a backend (an uploaded song as an audio source, one video source
per shot): the core only reads events.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, Union

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunereel import wire
from tunereel.auth import bearer_metadata
from tunereel.channels import MESSAGE_LIMIT_BYTES, MUSIC_REQUEST_LIMIT_BYTES, open_channel
from tunereel.serving import NOT_SERVING, SERVING, GrpcServer
from tunereel.v1 import common_pb2, music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc

from .errors import (
    BackendBusy,
    BackendFailed,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ComposeError,
    InvalidAudio,
)

log = logging.getLogger("tunereel.composer")

MUSIC_SERVICE = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name
VIDEO_SERVICE = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


# --------------------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class AudioHeader:
    source: str
    sample_rate: int
    channels: int
    total_samples: int  # per channel, in the whole stream
    model_id: str


@dataclass(frozen=True)
class Pcm:
    source: str
    offset: int  # index (per channel) of the first sample
    samples: np.ndarray  # float32 (samples, channels), finite


@dataclass(frozen=True)
class VideoHeader:
    source: str
    width: int
    height: int
    fps: int
    frame_count: int
    model_id: str
    replica: str = ""  # the replica's instance id, when it reports one


@dataclass(frozen=True)
class Frame:
    source: str
    index: int  # zero-based, within its source
    rgb: np.ndarray  # uint8 (height, width, 3)


@dataclass(frozen=True)
class Progress:
    source: str
    stage: int  # a tunereel.v1.Stage value
    fraction: float
    step: int = 0
    total_steps: int = 0
    segment: int = 0
    total_segments: int = 1
    message: str = ""


@dataclass(frozen=True)
class Ended:
    """The source sent everything it announced."""

    source: str


@dataclass(frozen=True)
class Failed:
    """The source stopped with an error (what a reader thread passes on instead of raising)."""

    source: str
    error: ComposeError


Event = Union[AudioHeader, Pcm, VideoHeader, Frame, Progress, Ended, Failed]


class Source(Protocol):
    """One stream of events: an audio source yields AudioHeader then Pcm, a video source VideoHeader then Frame."""

    name: str

    def start(self) -> None: ...

    def events(self) -> Iterator[Event]: ...

    def cancel(self) -> None: ...


def progress_event(source: str, progress: common_pb2.Progress) -> Progress:
    return Progress(source, progress.stage, progress.fraction, progress.step, progress.total_steps, progress.segment,
                    progress.total_segments, progress.message)  # fmt: skip


# ------------------------------------------------------------------------------------------ checking the streams
def audio_events(name: str, messages: Iterable[music_pb2.GenerateMusicResponse]) -> Iterator[Event]:
    """A music stream as events: one header first, then PCM in order up to exactly the announced length."""
    header: AudioHeader | None = None
    received = 0
    for message in messages:
        kind = message.WhichOneof("payload")
        if kind == "progress":
            yield progress_event(name, message.progress)
        elif kind == "header":
            if header is not None:
                raise BackendProtocolError(f"{name} service sent a second audio header")
            header = _audio_header(name, message.header)
            yield header
        elif kind == "chunk":
            pcm = _pcm(name, header, received, message.chunk)
            received += pcm.samples.shape[0]
            yield pcm
    if header is None:
        raise BackendProtocolError(f"{name} service ended its stream without an audio header")
    if received != header.total_samples:
        raise BackendProtocolError(f"{name} service sent {received} of the {header.total_samples} samples it announced")
    yield Ended(name)


def _audio_header(name: str, header: music_pb2.AudioHeader) -> AudioHeader:
    if header.total_samples < 1 or header.channels < 1 or header.sample_rate < 1:
        raise BackendProtocolError(
            f"{name} service sent a bad audio header: {header.sample_rate} Hz, {header.channels} channel(s), "
            f"{header.total_samples} samples"
        )
    return AudioHeader(name, header.sample_rate, header.channels, header.total_samples, header.model_id)


def _pcm(name: str, header: AudioHeader | None, received: int, chunk: music_pb2.AudioChunk) -> Pcm:
    if header is None:
        raise BackendProtocolError(f"{name} service sent audio before its header")
    if chunk.offset_samples != received:
        raise BackendProtocolError(f"{name} service sent audio at sample {chunk.offset_samples}, expected {received}")
    if len(chunk.pcm) % (4 * header.channels):
        raise BackendProtocolError(f"{name} service sent {len(chunk.pcm)} bytes of PCM: not whole float32 frames")
    samples = wire.pcm_from_bytes(chunk.pcm, header.channels)
    if received + samples.shape[0] > header.total_samples:
        raise BackendProtocolError(
            f"{name} service sent more audio than announced: {received + samples.shape[0]} > {header.total_samples} samples"
        )
    bad = np.count_nonzero(~np.isfinite(samples))
    if bad:
        raise InvalidAudio(
            f"{name} service sent audio that is not numbers ({bad} NaN/inf values in the chunk at sample {received}); "
            "it cannot be mastered"
        )
    return Pcm(name, received, samples)


@dataclass(frozen=True)
class ExpectedVideo:
    """What a video stream must announce: the request's size, rate and frame count, as RGB."""

    width: int
    height: int
    fps: int
    frame_count: int


def video_events(name: str, messages: Iterable[video_pb2.GenerateVideoResponse], expected: ExpectedVideo) -> Iterator[Event]:
    """A video stream as events: one header matching `expected` first, then whole frames in order, all of them."""
    header: VideoHeader | None = None
    assembler: wire.FrameAssembler | None = None
    for message in messages:
        kind = message.WhichOneof("payload")
        if kind == "progress":
            yield progress_event(name, message.progress)
        elif kind == "header":
            if header is not None:
                raise BackendProtocolError(f"{name} service sent a second video header")
            header = _video_header(name, message.header, expected)
            assembler = wire.FrameAssembler(header.width, header.height)
            yield header
        elif kind == "frame":
            frame = _frame_piece(name, assembler, expected, message.frame)
            if frame is not None:
                yield frame
    done = assembler.frames_done if assembler else 0
    if header is None:
        raise BackendProtocolError(f"{name} service ended its stream without a video header")
    if done != expected.frame_count:
        raise BackendProtocolError(f"{name} service sent {done} of the {expected.frame_count} frames it announced")
    yield Ended(name)


def _video_header(name: str, header: video_pb2.VideoHeader, expected: ExpectedVideo) -> VideoHeader:
    want = (expected.width, expected.height, expected.fps, expected.frame_count, "rgb24")
    got = (header.width, header.height, header.fps, header.frame_count, header.pixel_format)
    if got != want:
        raise BackendProtocolError(f"{name} service: header (width, height, fps, frames, format) {got} "
                                   f"does not match the request {want}")  # fmt: skip
    return VideoHeader(name, header.width, header.height, header.fps, header.frame_count, header.model_id,
                       header.instance_id)  # fmt: skip


def _frame_piece(
    name: str, assembler: wire.FrameAssembler | None, expected: ExpectedVideo, piece: video_pb2.FrameChunk
) -> Frame | None:
    if assembler is None:
        raise BackendProtocolError(f"{name} service sent frame {piece.frame_index} before its header")
    if piece.frame_index >= expected.frame_count:
        raise BackendProtocolError(f"{name} service sent frame {piece.frame_index} of {expected.frame_count}")
    try:
        rgb = assembler.add(piece.frame_index, piece.offset, piece.data)
    except ValueError as error:
        raise BackendProtocolError(f"{name} service: {error}") from None
    return None if rgb is None else Frame(name, piece.frame_index, rgb)


# ------------------------------------------------------------------------------------------------ the backends
# A backend's field names → the request's (the gateway and the composer name fields as the user wrote them).
_REQUEST_FIELDS = {"duration_seconds": "duration", "num_frames": "duration", "width": "width", "height": "height",
                   "fps": "fps", "seed": "seed", "melody_pcm": "melody", "image": "image", "lyrics": "lyrics",
                   "vocal_language": "vocal_language", "key": "key", "time_signature": "time_signature",
                   "bpm": "tempo_bpm", "repaint_start_seconds": "repaint_start",
                   "repaint_end_seconds": "repaint_end", "source_pcm": "song"}  # fmt: skip


@dataclass
class Backend:
    name: str  # "music" or "video"
    target: str
    service: str
    channel: grpc.Channel  # round robin over the replicas that report SERVING for `service`
    health_channel: grpc.Channel | None = None  # the same, for HealthMirror: its checks don't take the streams' turns

    def failure(self, error: grpc.RpcError) -> ComposeError:
        """A failed call as the composer's error: what happened, and so whether a retry can help."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        if code == grpc.StatusCode.UNAVAILABLE:
            if "unhealthy" in details:  # client-side health checking found no replica SERVING
                return BackendUnavailable(
                    f"{self.name} service is unavailable: no replica reports SERVING (loading, draining, or without "
                    "its weights: see its log)", detail=f"{self.target}: {details}",
                )
            return BackendUnavailable(f"{self.name} service is unavailable", detail=f"{self.target}: {details}")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION) and details.startswith("model:"):
            field = f"{self.name}_model"
            return BackendRejected(f"{field}: {details.removeprefix('model:').strip()}", field=field)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return self._rejected(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:  # a replica without its model: not ready
            return BackendUnavailable(f"{self.name} service is not ready: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return BackendBusy(f"{self.name} service is busy: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return BackendTimeout(f"{self.name} service did not finish in time: {details}")
        if code == grpc.StatusCode.CANCELLED:  # not by us (we stop reading first): the replica went away
            return BackendUnavailable(f"{self.name} service dropped the stream", detail=f"{self.target}: {details}")
        return BackendFailed(f"{self.name} service failed ({code.name})", detail=details)

    def _rejected(self, details: str) -> BackendRejected:
        head, _, rest = details.partition(":")
        field = _REQUEST_FIELDS.get(head.strip())
        if field is None or not rest:
            return BackendRejected(f"{self.name} service refused the request: {details}")
        return BackendRejected(f"{field}: {rest.strip()} ({self.name} service)", field=field)


class GrpcSource:
    """One streaming call to a backend as a Source: `start` sends it, `events` checks what comes back, a failed call
    becomes the ComposeError that says what happened (Backend.failure)."""

    def __init__(self, name: str, backend: Backend, call: Callable[[], Iterator], check: Callable[[Iterable], Iterator[Event]]):
        self.name = name
        self.backend = backend
        self._start_call = call
        self._check = check
        self._call = None

    def start(self) -> None:
        self._call = self._start_call()

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    def events(self) -> Iterator[Event]:
        if self._call is None:
            raise RuntimeError(f"{self.name} source: events() before start()")
        try:
            yield from self._check(self._call)
        except grpc.RpcError as error:
            raise self.backend.failure(error) from None


def music_source(backends: Backends, *, prompt: str, duration_seconds: float, seed: int, model: str, timeout: float,
                 name: str = "music", melody_pcm: bytes = b"", song: dict | None = None) -> GrpcSource:  # fmt: skip
    """The audio of one composition from MusicService (following a melody: float32 mono 32 kHz PCM, if given).
    `song`: the singing models' fields of GenerateMusicRequest (lyrics, vocal_language, key, time_signature, bpm; and
    to repaint: source_pcm, repaint_start_seconds, repaint_end_seconds), passed through; the music service rejects
    what its model cannot do, naming the field."""
    request = music_pb2.GenerateMusicRequest(prompt=prompt, duration_seconds=duration_seconds, seed=seed, model=model,
                                             melody_pcm=melody_pcm, **(song or {}))  # fmt: skip
    call = functools.partial(backends.music_stub.GenerateMusic, request, timeout=timeout, metadata=backends.metadata)
    return GrpcSource(name, backends.music, call, functools.partial(audio_events, name))


def video_request(prompt: str, expected: ExpectedVideo, seed: int, model: str,
                  image: bytes = b"") -> video_pb2.GenerateVideoRequest:  # fmt: skip
    return video_pb2.GenerateVideoRequest(
        prompt=prompt, width=expected.width, height=expected.height, fps=expected.fps, num_frames=expected.frame_count,
        seed=seed, model=model, image=image,
    )  # fmt: skip


def video_source(backends: Backends, *, prompt: str, expected: ExpectedVideo, seed: int, model: str, timeout: float,
                 name: str = "video", image: bytes = b"") -> GrpcSource:  # fmt: skip
    """The frames of one video request (today the whole composition; later one shot) from VideoService; `image`
    (PNG of the frame's size) is the first frame's condition."""
    request = video_request(prompt, expected, seed, model, image=image)
    call = functools.partial(backends.video_stub.GenerateVideo, request, timeout=timeout, metadata=backends.metadata)
    return GrpcSource(name, backends.video, call, lambda messages: video_events(name, messages, expected))


class Backends:
    def __init__(self, music_target: str, video_target: str, api_key: str | None = None):
        self.metadata = bearer_metadata(api_key)
        # Health-checked round robin: a replica that is not SERVING gets no new streams (see tunereel.channels).
        # The music streams' channel may send the one large request (the audio to repaint, MUSIC_REQUEST_LIMIT_BYTES).
        self.music, self.video = (
            Backend(name, target, service, open_channel(target, health_service=service, max_send_bytes=limit),
                    open_channel(target, health_service=service))
            for name, target, service, limit in (("music", music_target, MUSIC_SERVICE, MUSIC_REQUEST_LIMIT_BYTES),
                                                 ("video", video_target, VIDEO_SERVICE, MESSAGE_LIMIT_BYTES))
        )  # fmt: skip
        self.music_stub = music_pb2_grpc.MusicServiceStub(self.music.channel)
        self.video_stub = video_pb2_grpc.VideoServiceStub(self.video.channel)
        # Short questions (DescribeModel) go over the other channel: on the streams' channel each one would take a
        # turn of the round robin, and a describe before every generation sent all the generations to one replica.
        self.music_control = music_pb2_grpc.MusicServiceStub(self.music.health_channel or self.music.channel)
        self.video_control = video_pb2_grpc.VideoServiceStub(self.video.health_channel or self.video.channel)

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

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

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
