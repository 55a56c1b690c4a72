"""Composer core: music and video streams in flight together, both muxed as they arrive. No gRPC server here.

compose(): pick the seed → start both backend streams → read each in its own thread into one queue → this thread
feeds the muxer the frames as they come, and hands the PCM to the audio track, whose own thread masters it
(loudness and peak limiting in bounded memory, services/composer/stream_master.py) and encodes it beside the frames
(services/composer/audio_track.py) → close the MP4 → return it with its provenance. A cancel flag or a failing
backend stops both streams at once.

Memory stays flat however long the output: the backends send segment by segment, raw frames and PCM go to the
encoders as they arrive, and whichever stream is ahead waits *compressed* in the muxer's interleaver. Audio ahead
costs little (AAC at 128 kbit/s: 5 MB for 5 minutes). The video stream is not read further than `VIDEO_LEAD_S`
seconds ahead of the audio received (gRPC flow control then pauses the video service), so compressed video waits
for at most that lead plus the audio the master holds (its 20 s calibration, or a whole clip of up to 30 s): a bound
that does not grow with the duration. The audio stream is never held back.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

import tunereel
from tunereel import wire
from tunereel.request import GenerationRequest
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2, music_pb2, video_pb2

from .audio_track import AudioTrack, AudioTrackCancelled, AudioTrackError
from .backends import Backend, BackendFailure, Backends
from .muxer import AudioSpec, Mp4Muxer, MuxResult, VideoSpec
from .stream_master import StreamingMaster

log = logging.getLogger("tunereel.composer")

ProgressSink = Callable[[common_pb2.Progress], None]

# How far (in seconds of video) the video stream may be read ahead of the audio received so far.
VIDEO_LEAD_S = 10.0
# Messages waiting between the reader threads and the muxing thread (a 768x512 frame is two 1 MiB messages).
INBOX_MESSAGES = 64


@dataclass(frozen=True)
class Composition:
    path: Path
    provenance: common_pb2.Provenance
    mux: MuxResult
    sample_rate: int


class Composer:
    def __init__(self, backends: Backends, work_dir: Path, *, backend_timeout: float = 3600.0):
        self.backends = backends
        self.work_dir = work_dir
        self.backend_timeout = backend_timeout
        work_dir.mkdir(parents=True, exist_ok=True)

    def compose(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressSink,
        cancelled: threading.Event,
        timeout: float | None = None,
    ) -> Composition:
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        frame_count = request.frame_count
        deadline = min(timeout or self.backend_timeout, self.backend_timeout)

        music_call = self.backends.music_stub.GenerateMusic(
            music_pb2.GenerateMusicRequest(
                prompt=request.music_prompt,
                duration_seconds=request.exact_duration,
                seed=seed,
                model=request.music_model or "",
            ),
            timeout=deadline,
            metadata=self.backends.metadata,
        )
        video_call = self.backends.video_stub.GenerateVideo(
            video_pb2.GenerateVideoRequest(
                prompt=request.video_prompt,
                width=request.width,
                height=request.height,
                fps=request.fps,
                num_frames=frame_count,
                seed=seed,
                model=request.video_model or "",
            ),
            timeout=deadline,
            metadata=self.backends.metadata,
        )
        calls = (music_call, video_call)
        inbox: queue.Queue = queue.Queue(maxsize=INBOX_MESSAGES)
        stop = threading.Event()
        gate = _LeadGate(request.fps, stop)
        readers = [
            threading.Thread(target=_read, args=(self.backends.music, music_call, inbox, stop, None), daemon=True, name="read-music"),
            threading.Thread(target=_read, args=(self.backends.video, video_call, inbox, stop, gate), daemon=True, name="read-video"),
        ]
        for reader in readers:
            reader.start()

        path = self.work_dir / f"compose-{uuid.uuid4().hex}.mp4"
        try:
            return self._mux(request, seed, frame_count, path, inbox, gate, on_progress, cancelled)
        except BaseException:
            for call in calls:
                call.cancel()
            path.unlink(missing_ok=True)
            raise
        finally:
            stop.set()  # readers blocked on the gate or a full inbox give up

    def _mux(
        self,
        request: GenerationRequest,
        seed: int,
        frame_count: int,
        path: Path,
        inbox: queue.Queue,
        gate: _LeadGate,
        on_progress: ProgressSink,
        cancelled: threading.Event,
    ) -> Composition:
        music_header: music_pb2.AudioHeader | None = None
        video_header: video_pb2.VideoHeader | None = None
        assembler: wire.FrameAssembler | None = None
        track: AudioTrack | None = None  # masters and encodes the audio in its own thread
        frames_ready: list[np.ndarray] = []  # usually one frame: they go to the encoder as soon as it is open
        muxer: Mp4Muxer | None = None
        frames_muxed = 0

        try:
            for source, message in _drain(inbox, cancelled):
                if track is not None:
                    track.check()  # a failed audio thread stops the composition now, not after the last frame
                kind = message.WhichOneof("payload") if message is not None else None
                if kind == "progress":
                    on_progress(message.progress)
                elif source == "music" and kind == "header":
                    if track is not None:
                        raise BackendFailure(grpc.StatusCode.INTERNAL, "music service: a second header")
                    music_header = message.header
                    if music_header.total_samples < 1 or music_header.channels < 1:
                        raise BackendFailure(grpc.StatusCode.INTERNAL, f"music service: bad header {music_header}")
                    track = AudioTrack(StreamingMaster(
                        AudioSpec(sample_rate=music_header.sample_rate, channels=music_header.channels),
                        music_header.total_samples,
                    ))  # fmt: skip
                elif source == "music" and kind == "chunk":
                    chunk = message.chunk
                    if track is None or chunk.offset_samples != track.received:
                        raise BackendFailure(
                            grpc.StatusCode.INTERNAL,
                            f"music service: chunk at sample {chunk.offset_samples}, expected "
                            f"{track.received if track else 'a header first'}",
                        )
                    try:
                        track.push(wire.pcm_from_bytes(chunk.pcm, music_header.channels))
                    except ValueError as error:
                        raise BackendFailure(grpc.StatusCode.INTERNAL, f"music service: {error}") from None
                    gate.advance(track.received / music_header.sample_rate)
                elif source == "video" and kind == "header":
                    video_header = message.header
                    _check_video_header(video_header, request, frame_count)
                    assembler = wire.FrameAssembler(video_header.width, video_header.height)
                elif source == "video" and kind == "frame":
                    frame = assembler.add(message.frame.frame_index, message.frame.offset, message.frame.data)
                    if frame is not None:
                        frames_ready.append(frame)
                elif source == "music-done":
                    if track is None:
                        raise BackendFailure(grpc.StatusCode.INTERNAL, "music service: stream ended without a header")
                    if track.received != track.total:
                        raise BackendFailure(
                            grpc.StatusCode.INTERNAL, f"music service: sent {track.received} of {track.total} samples"
                        )
                    gate.open()
                    if track.whole:
                        on_progress(_progress(common_pb2.STAGE_MUX, frames_muxed / frame_count, "mastering the audio"))
                    track.end()
                elif source == "video-done":
                    done = assembler.frames_done if assembler else 0
                    if done != frame_count:
                        raise BackendFailure(
                            grpc.StatusCode.INTERNAL, f"video service: sent {done} of {frame_count} frames"
                        )

                if muxer is None and music_header is not None and video_header is not None:
                    provenance = _provenance(request, seed, music_header, video_header)
                    muxer = Mp4Muxer(
                        path,
                        VideoSpec(width=video_header.width, height=video_header.height, fps=video_header.fps),
                        AudioSpec(sample_rate=music_header.sample_rate, channels=music_header.channels),
                        metadata={"comment": provenance_json(provenance)},
                    )
                    track.attach(muxer)
                if muxer is not None:
                    for frame in frames_ready:
                        muxer.add_frame(frame)
                        frames_muxed += 1
                        if frames_muxed % 8 == 0 or frames_muxed == frame_count:
                            on_progress(_progress(common_pb2.STAGE_MUX, frames_muxed / frame_count, "encoding"))
                    frames_ready.clear()

            track.join(cancelled)  # every sample mastered and encoded
            result = muxer.close()
            muxer = None
        except AudioTrackCancelled:
            raise Cancelled("compose cancelled by the caller") from None
        except AudioTrackError as error:
            raise BackendFailure(grpc.StatusCode.INTERNAL, f"composer: {error}") from error
        finally:
            if track is not None:
                track.abort()
            if muxer is not None:
                muxer.abort()  # removes the partial file
        on_progress(_progress(common_pb2.STAGE_DONE, 1.0, "done"))
        return Composition(path=path, provenance=provenance, mux=result, sample_rate=music_header.sample_rate)


class _LeadGate:
    """Holds the video reader while the frame it would pass on lies more than VIDEO_LEAD_S ahead of the audio
    received; opens for good once the music has all arrived (or the composition stops)."""

    def __init__(self, fps: int, stop: threading.Event):
        self.fps = fps
        self.stop = stop
        self._audio_s = 0.0
        self._open = False
        self._changed = threading.Condition()

    def advance(self, audio_seconds: float) -> None:
        with self._changed:
            self._audio_s = audio_seconds
            self._changed.notify_all()

    def open(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def wait(self, frame_index: int) -> None:
        with self._changed:
            while not (self._open or self.stop.is_set() or frame_index / self.fps <= self._audio_s + VIDEO_LEAD_S):
                self._changed.wait(0.1)


def _read(backend: Backend, call, inbox: queue.Queue, stop: threading.Event, gate: _LeadGate | None) -> None:
    """Reader thread: every message of one backend stream into the shared inbox, then a done or error marker.
    Gives up (without blocking forever on a full inbox) once `stop` is set."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                inbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for message in call:
            if gate is not None and message.WhichOneof("payload") == "frame" and message.frame.offset == 0:
                gate.wait(message.frame.frame_index)
            if not put((backend.name, message)):
                return
        put((f"{backend.name}-done", None))
    except grpc.RpcError as error:
        put((f"{backend.name}-error", backend.failure(error)))


def _drain(inbox: queue.Queue, cancelled: threading.Event) -> Iterator[tuple[str, object]]:
    """Messages from both streams until both ended; raises on the first failure or on cancel."""
    open_streams = {"music", "video"}
    while open_streams:
        if cancelled.is_set():
            raise Cancelled("compose cancelled by the caller")
        try:
            source, message = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        if source.endswith("-error"):
            raise message
        if source.endswith("-done"):
            open_streams.discard(source.removesuffix("-done"))
        yield source, message


def _check_video_header(header: video_pb2.VideoHeader, request: GenerationRequest, frame_count: int) -> None:
    expected = (request.width, request.height, request.fps, frame_count, "rgb24")
    got = (header.width, header.height, header.fps, header.frame_count, header.pixel_format)
    if got != expected:
        raise BackendFailure(grpc.StatusCode.INTERNAL, f"video service: header {got} does not match the request {expected}")


def _progress(stage: int, fraction: float, message: str) -> common_pb2.Progress:
    return common_pb2.Progress(
        stage=stage, fraction=min(max(fraction, 0.0), 1.0), segment=0, total_segments=1, message=message
    )


def _provenance(
    request: GenerationRequest, seed: int, music_header: music_pb2.AudioHeader, video_header: video_pb2.VideoHeader
) -> common_pb2.Provenance:
    effective = request.model_copy(update={"seed": seed})
    return common_pb2.Provenance(
        request=wire.request_to_proto(effective),
        seed=seed,
        music_model_id=music_header.model_id,
        video_model_id=video_header.model_id,
        music_prompt=request.music_prompt,
        version=tunereel.__version__,
    )


def provenance_json(provenance: common_pb2.Provenance) -> str:
    """The provenance as the JSON written into the MP4 (the same shape the HTTP API returns)."""
    return json.dumps(wire.provenance_to_dict(provenance), sort_keys=True)
