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

import grpc
import numpy as np

from tunereel.streaming import Cancelled
from tunereel.v1 import video_pb2

from .backends import AudioHeader, Backends, Ended, Event, ExpectedVideo, Pcm, Source, video_events

__all__ = ["MusicTap", "TappedSource", "HearingVideoSource", "listening_sources", "DESCRIBE_TIMEOUT_S"]

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


class HearingVideoSource:
    """One video request that carries the music of its span: sent once that music has arrived."""

    def __init__(self, backends: Backends, tap: MusicTap, request: video_pb2.GenerateVideoRequest, *,
                 expected: ExpectedVideo, start_s: float, timeout: float, audio_rate: int, name: str = "video"):  # fmt: skip
        self.name = name
        self.backends = backends
        self.tap = tap
        self.request = request
        self.expected = expected
        self.span = (start_s, start_s + expected.frame_count / expected.fps)
        self.timeout = timeout
        self.audio_rate = audio_rate
        self._stop = threading.Event()
        self._call = None

    def start(self) -> None:
        """Nothing to send yet: the request goes out from `events()` once its music is here."""

    def cancel(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    def events(self) -> Iterator[Event]:
        pcm, rate = self.tap.slice(*self.span, self._stop)
        pcm = resample(pcm, rate, self.audio_rate)
        request = video_pb2.GenerateVideoRequest()
        request.CopyFrom(self.request)
        request.audio.CopyFrom(video_pb2.AudioSlice(sample_rate=self.audio_rate or rate, channels=pcm.shape[1],
                                                    pcm=np.ascontiguousarray(pcm, dtype="<f4").tobytes()))  # fmt: skip
        self._call = self.backends.video_stub.GenerateVideo(request, timeout=self.timeout, metadata=self.backends.metadata)
        if self._stop.is_set():
            self._call.cancel()
        try:
            yield from video_events(self.name, self._call, self.expected)
        except grpc.RpcError as error:
            raise self.backends.video.failure(error) from None


def describe_video(backends: Backends) -> video_pb2.VideoModelInfo | None:
    """What the video service serves; None when it cannot say (an older service: UNIMPLEMENTED, or unreachable now —
    the generation call then reports the real problem)."""
    try:
        return backends.video_stub.DescribeModel(video_pb2.DescribeModelRequest(), timeout=DESCRIBE_TIMEOUT_S,
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
    video = HearingVideoSource(backends, tap, request, expected=expected, start_s=0.0, timeout=timeout,
                               audio_rate=info.audio_sample_rate)  # fmt: skip
    return TappedSource(music, tap), video
