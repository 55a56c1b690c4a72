"""Scripted MusicService and VideoService over real gRPC, for the composer's failure tests: no model, each call
counted, and a `fault` the test sets to make the next calls misbehave in one precise way."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from tunereel import wire
from tunereel.channels import MESSAGE_LIMIT_BYTES, MUSIC_REQUEST_LIMIT_BYTES
from tunereel.serving import GrpcServer, start_server
from tunereel.v1 import common_pb2, music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc

SAMPLE_RATE = 32000
SERVED_PRESET = "tiny"


class FakeBackend:
    """`calls` counts the generation requests; `fault` (None, or a name the servicer knows) applies to the next
    `fault_calls` calls, then the backend behaves again."""

    def __init__(self) -> None:
        self.calls = 0
        self.fault: str | None = None
        self.fault_calls = 1_000_000
        self._lock = threading.Lock()

    def reset(self, fault: str | None = None, *, times: int = 1_000_000) -> None:
        with self._lock:
            self.calls, self.fault, self.fault_calls = 0, fault, times

    def begin(self) -> str | None:
        """Count a call; the fault that applies to it."""
        with self._lock:
            self.calls += 1
            return self.fault if self.calls <= self.fault_calls else None

    @staticmethod
    def check_model(model: str, context: grpc.ServicerContext) -> None:
        if model and model != SERVED_PRESET:  # as tunereel.model_host answers
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"model: this service serves preset {SERVED_PRESET!r}, not {model!r}")


def _progress(stage: int, fraction: float) -> common_pb2.Progress:
    return common_pb2.Progress(stage=stage, fraction=fraction, step=1, total_steps=1, segment=0, total_segments=1)


class FakeMusic(FakeBackend, music_pb2_grpc.MusicServiceServicer):
    def GenerateMusic(self, request: music_pb2.GenerateMusicRequest, context: grpc.ServicerContext):
        fault = self.begin()
        self.last_request = request
        self.check_model(request.model, context)
        if request.melody_pcm:  # as a replica of a non-melody preset answers
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "melody_pcm: only the melody presets follow a melody")
        if fault == "internal":
            context.abort(grpc.StatusCode.INTERNAL, "music model produced garbage")
        total = round(request.duration_seconds * SAMPLE_RATE)
        yield music_pb2.GenerateMusicResponse(header=music_pb2.AudioHeader(
            sample_rate=SAMPLE_RATE, channels=1, total_samples=total, model_id="fake-music", seed=request.seed))  # fmt: skip
        if fault == "unavailable":  # after the first message: the channel's own retry cannot hide it
            context.abort(grpc.StatusCode.UNAVAILABLE, "music replica is restarting")
        t = np.arange(total) / SAMPLE_RATE
        pcm = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
        if fault == "nan":
            pcm[total // 2 :] = np.nan
        for offset in range(0, total, wire.AUDIO_CHUNK_SAMPLES):
            piece = pcm[offset : offset + wire.AUDIO_CHUNK_SAMPLES]
            yield music_pb2.GenerateMusicResponse(
                chunk=music_pb2.AudioChunk(offset_samples=offset, num_samples=piece.shape[0], pcm=wire.pcm_to_bytes(piece))
            )
            yield music_pb2.GenerateMusicResponse(progress=_progress(common_pb2.STAGE_MUSIC, (offset + piece.shape[0]) / total))


class FakeVideo(FakeBackend, video_pb2_grpc.VideoServiceServicer):
    def GenerateVideo(self, request: video_pb2.GenerateVideoRequest, context: grpc.ServicerContext):
        fault = self.begin()
        self.last_request = request
        self.check_model(request.model, context)
        frame = np.zeros((request.height, request.width, 3), np.uint8)
        if fault == "frame-before-header":
            yield video_pb2.GenerateVideoResponse(frame=video_pb2.FrameChunk(frame_index=0, offset=0, data=frame.tobytes()))
        yield video_pb2.GenerateVideoResponse(header=video_pb2.VideoHeader(
            width=request.width, height=request.height, fps=request.fps, frame_count=request.num_frames,
            pixel_format="rgb24", model_id="fake-video", seed=request.seed))  # fmt: skip
        if fault == "unavailable":  # after the first message: the channel's own retry cannot hide it
            context.abort(grpc.StatusCode.UNAVAILABLE, "video replica is restarting")
        for index in range(request.num_frames):
            if fault == "slow":
                time.sleep(0.05)
            frame[:] = (index * 7) % 256
            for offset, data in wire.split_frame(frame):
                yield video_pb2.GenerateVideoResponse(frame=video_pb2.FrameChunk(frame_index=index, offset=offset, data=data))
            yield video_pb2.GenerateVideoResponse(progress=_progress(common_pb2.STAGE_VIDEO, (index + 1) / request.num_frames))
        if fault == "unavailable-at-end":  # every frame sent (the music has all come by then), then the replica dies
            context.abort(grpc.StatusCode.UNAVAILABLE, "video replica went away")


def serve_fake(servicer: FakeMusic | FakeVideo) -> GrpcServer:
    if isinstance(servicer, FakeMusic):
        name = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name
        register = lambda server: music_pb2_grpc.add_MusicServiceServicer_to_server(servicer, server)  # noqa: E731
    else:
        name = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name
        register = lambda server: video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, server)  # noqa: E731
    # As the real services: the music server takes the one large request (the audio to repaint).
    limit = MUSIC_REQUEST_LIMIT_BYTES if isinstance(servicer, FakeMusic) else MESSAGE_LIMIT_BYTES
    server = start_server(register, [name], host="127.0.0.1", port=0, max_receive_bytes=limit)
    server.set_serving(True)
    return server
