"""Video that hears the music: for a video preset that is generated with its music held fixed (LTX-2), each video
request carries the slice of the final music it covers, so the music of that span must have arrived first.

`listening_sources` asks the video service what it serves (VideoService.DescribeModel, answered from its preset
table) and, when it hears audio, returns a music source that keeps what it passes on (`MusicTap`) and a video source
that waits for the music of its span, resamples it to the rate the model hears at, and only then sends its request.
For every other preset it returns None and the composition runs as before (music and video concurrently). The MP4's
audio is always the music stream itself; whatever audio the video model makes is never used.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import replace

import grpc
import numpy as np

from tunereel.streaming import Cancelled
from tunereel.v1 import video_pb2

from .backends import AudioHeader, Backends, Ended, Event, ExpectedVideo, Frame, Pcm, Progress, Source, VideoHeader, video_events

__all__ = ["MusicTap", "TappedSource", "HearingVideoSource", "listening_sources", "spans", "DESCRIBE_TIMEOUT_S"]

log = logging.getLogger("tunereel.composer")

DESCRIBE_TIMEOUT_S = 5.0


class MusicTap:
    """The music received so far, (samples, channels) float32, for the video requests that must hear it."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._pieces: list[np.ndarray] = []
        self.sample_rate = 0
        self.channels = 0
        self.received = 0
        self.ended = False
        self.failed = False

    def header(self, sample_rate: int, channels: int) -> None:
        with self._ready:
            self.sample_rate, self.channels = sample_rate, channels
            self._ready.notify_all()

    def add(self, samples: np.ndarray) -> None:
        with self._ready:
            self._pieces.append(samples)
            self.received += samples.shape[0]
            self._ready.notify_all()

    def close(self, *, failed: bool = False) -> None:
        with self._ready:
            self.ended, self.failed = True, failed
            self._ready.notify_all()

    def slice(self, start_s: float, stop_s: float, stop: threading.Event) -> tuple[np.ndarray, int]:
        """The music from `start_s` to `stop_s` (zero-padded past its end) and its rate, once it has arrived."""
        with self._ready:
            while True:
                if stop.is_set() or self.failed:
                    raise Cancelled("the music this video hears did not arrive")
                if self.sample_rate and (self.ended or self.received >= math.ceil(stop_s * self.sample_rate)):
                    break
                self._ready.wait(timeout=0.1)
            if len(self._pieces) > 1:
                self._pieces = [np.concatenate(self._pieces)]
            music = self._pieces[0] if self._pieces else np.zeros((0, self.channels), np.float32)
            rate = self.sample_rate
        a, b = round(start_s * rate), round(stop_s * rate)
        out = np.zeros((b - a, music.shape[1]), dtype=np.float32)
        part = music[a:b]
        out[: part.shape[0]] = part
        return out, rate


class TappedSource:
    """A music source whose header and PCM are also kept in a MusicTap."""

    def __init__(self, source: Source, tap: MusicTap):
        self.source = source
        self.name = source.name
        self.tap = tap

    def start(self) -> None:
        self.source.start()

    def cancel(self) -> None:
        self.source.cancel()

    def events(self) -> Iterator[Event]:
        try:
            for event in self.source.events():
                if isinstance(event, AudioHeader):
                    self.tap.header(event.sample_rate, event.channels)
                elif isinstance(event, Pcm):
                    self.tap.add(event.samples)
                elif isinstance(event, Ended):
                    self.tap.close()
                yield event
        except BaseException:
            self.tap.close(failed=True)
            raise


def resample(pcm: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if not target_rate or source_rate == target_rate:
        return pcm
    from scipy.signal import resample_poly

    g = math.gcd(source_rate, target_rate)
    return resample_poly(pcm, target_rate // g, source_rate // g, axis=0).astype(np.float32)


# The music one video request may carry: well inside the 8 MiB message limit (tunereel.channels), with room for the
# rest of the request. At 16 kHz stereo float32 this is ~24 s of music.
AUDIO_BUDGET_BYTES = 6 * 1024 * 1024


def spans(frame_count: int, fps: int, pass_frames: int, bytes_per_second: float) -> list[tuple[int, int]]:
    """(first frame, frames) of each video request: as many whole model passes as the music budget allows."""
    passes = max(1, int(AUDIO_BUDGET_BYTES / bytes_per_second * fps) // max(pass_frames, 1))
    step = passes * max(pass_frames, 1)
    return [(start, min(step, frame_count - start)) for start in range(0, frame_count, step)]


class HearingVideoSource:
    """The video of one composition from requests that each carry the music of their span: each is sent once that
    music has arrived. More than one request when the music would not fit one message; the frames of all of them
    come out as one stream (one header, frames in order), the requests joined as cuts. (Within one request the video
    service chains its passes, each continuing the one before.) A start image is the first request's frame 0 only:
    a later request starts where the video already is, not back at the image."""

    def __init__(self, backends: Backends, tap: MusicTap, request: video_pb2.GenerateVideoRequest, *,
                 expected: ExpectedVideo, timeout: float, info: video_pb2.VideoModelInfo, name: str = "video",
                 start_frame: int = 0):  # fmt: skip
        self.name = name
        self.info = info
        self.start_frame = start_frame  # where this video starts in the music (a shot's first frame)
        self.backends = backends
        self.tap = tap
        self.request = request
        self.expected = expected
        self.timeout = timeout
        self.audio_rate = info.audio_sample_rate
        self.pass_frames = info.max_frames_per_pass or expected.frame_count
        self._stop = threading.Event()
        self._call = None

    def start(self) -> None:
        """Nothing to send yet: each request goes out from `events()` once its music is here."""

    def cancel(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    def events(self) -> Iterator[Event]:
        fps = self.expected.fps
        plan = spans(self.expected.frame_count, fps, self.pass_frames, 4 * 2 * (self.audio_rate or 48000))
        for number, (first, count) in enumerate(plan):
            part = ExpectedVideo(self.expected.width, self.expected.height, fps, count)
            for event in self._span(first, part, number):
                if isinstance(event, VideoHeader):
                    if number == 0:
                        yield replace(event, frame_count=self.expected.frame_count)
                elif isinstance(event, Frame):
                    yield replace(event, index=first + event.index)
                elif isinstance(event, Ended):
                    if number == len(plan) - 1:
                        yield event
                elif isinstance(event, Progress):
                    total = self.expected.frame_count
                    yield replace(event, fraction=(first + event.fraction * count) / total, segment=number,
                                  total_segments=len(plan))  # fmt: skip
                else:
                    yield event

    def _span(self, first: int, part: ExpectedVideo, number: int) -> Iterator[Event]:
        fps = part.fps
        start = self.start_frame + first
        pcm, rate = self.tap.slice(start / fps, (start + part.frame_count) / fps, self._stop)
        pcm = resample(pcm, rate, self.audio_rate)
        request = video_pb2.GenerateVideoRequest()
        request.CopyFrom(self.request)
        request.num_frames = part.frame_count
        request.seed = (self.request.seed + number) % 2**32  # one seed per request, the job seed's for the first
        if number:
            request.ClearField("image")
        request.audio.CopyFrom(video_pb2.AudioSlice(sample_rate=self.audio_rate or rate, channels=pcm.shape[1],
                                                    pcm=np.ascontiguousarray(pcm, dtype="<f4").tobytes()))  # fmt: skip
        self._call = self.backends.video_stub.GenerateVideo(request, timeout=self.timeout, metadata=self.backends.metadata)
        if self._stop.is_set():
            self._call.cancel()
        try:
            yield from video_events(self.name, self._call, part)
        except grpc.RpcError as error:
            raise self.backends.video.failure(error) from None


def describe_video(backends: Backends) -> video_pb2.VideoModelInfo | None:
    """What the video service serves; None when it cannot say (an older service: UNIMPLEMENTED, or unreachable now —
    the generation call then reports the real problem)."""
    try:
        return backends.video_control.DescribeModel(video_pb2.DescribeModelRequest(), timeout=DESCRIBE_TIMEOUT_S,
                                                 metadata=backends.metadata)  # fmt: skip
    except grpc.RpcError as error:
        log.info("video service does not describe its model (%s): not sending it the music", error.code())
        return None


def listening_sources(backends: Backends, music: Source, request: video_pb2.GenerateVideoRequest, *,
                      expected: ExpectedVideo, timeout: float) -> tuple[Source, Source] | None:  # fmt: skip
    """(music source, video source) for a video preset that hears the music; None for one that does not."""
    info = describe_video(backends)
    if info is None or not info.hears_audio:
        return None
    tap = MusicTap()
    video = HearingVideoSource(backends, tap, request, expected=expected, timeout=timeout, info=info)
    return TappedSource(music, tap), video
