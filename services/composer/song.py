"""The user's own media as the composition's inputs: a song as the audio source (instead of MusicService), a melody
clip as PCM for the melody presets, an image fitted to the frame for the video's first frame.

`SongSource` is a Source like the gRPC ones (backends.py): an AudioHeader, then Pcm in order, then Ended; so the
composer's steps (and a music analysis fed by Pcm events) do not know whether the music was generated or uploaded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tunereel import wire
from tunereel.request import LIMITS, GenerationRequest, InvalidRequest, check_repaint_range
from tunereel.streaming import Cancelled

from .backends import AudioHeader, Ended, Event, Pcm
from .errors import ComposeError, InvalidAudio
from .media_in import BadMedia, decode_audio, fit_image, playback_layout, seconds_to_samples
from .store import UploadRecord

__all__ = ["SongSource", "song_request", "melody_pcm", "repaint_source_pcm", "song_mono", "frame_image", "MELODY_RATE",
           "MELODY_MAX_S"]  # fmt: skip

MELODY_RATE = 32_000  # MusicGen-melody's chroma is computed at 32 kHz (we resample; see melody_pcm)
MELODY_MAX_S = 30.0  # one MusicGen window: the chroma conditioning covers at most this much


def song_request(request: GenerationRequest, song: UploadRecord) -> GenerationRequest:
    """The request with the song's window made explicit: `start` inside the song, `duration` the rest of the song
    (at most the duration limit) unless given, and start + duration within the song (to the frame)."""
    if request.start >= song.duration_seconds:
        raise InvalidRequest("start", f"must be before the song's end ({song.duration_seconds:.3f} s; got {request.start:g})")
    left = song.duration_seconds - request.start
    duration = request.duration if request.duration is not None else min(left, LIMITS.max_duration_seconds)
    if duration > left + 1.0 / request.fps:
        raise InvalidRequest("duration", f"start + duration ({request.start + duration:g} s) runs past the song's end "
                                         f"({song.duration_seconds:.3f} s)")  # fmt: skip
    resolved = request.model_copy(update={"duration": duration})
    if resolved.frame_count < 1:
        raise InvalidRequest("duration", f"{duration:g} s at {request.fps} fps is less than one frame")
    if request.repaint_start is not None and request.repaint_end is not None:
        try:  # the window is known only now when the duration was omitted (to the song's end)
            check_repaint_range(request.repaint_start, request.repaint_end, duration)
        except ValueError as error:
            field, _, reason = str(error).partition(": ")
            raise InvalidRequest(field, reason) from None
        if request.repaint_start >= resolved.exact_duration:  # the music lasts whole frames
            raise InvalidRequest("repaint_start", f"must be before the video's end ({resolved.exact_duration:g} s)")
    return resolved


class SongSource:
    """An uploaded song, decoded from its file as the composition reads it: exactly `seconds` of it from `start`."""

    def __init__(self, song: UploadRecord, *, start_s: float, seconds: float, name: str = "song"):
        self.name = name
        self.song = song
        self.rate, self.channels = playback_layout(song.sample_rate, song.channels)
        self.start_samples = seconds_to_samples(start_s, self.rate)
        self.total = seconds_to_samples(seconds, self.rate)
        self._cancelled = threading.Event()

    def start(self) -> None:
        """Nothing to start: the file is read as the events are."""

    def cancel(self) -> None:
        self._cancelled.set()

    def events(self) -> Iterator[Event]:
        yield AudioHeader(self.name, self.rate, self.channels, self.total, f"upload:sha256:{self.song.sha256}")
        offset = 0
        try:
            for pcm in decode_audio(Path(self.song.path), sample_rate=self.rate, channels=self.channels,
                                    start_samples=self.start_samples, total_samples=self.total,
                                    chunk_samples=wire.AUDIO_CHUNK_SAMPLES):  # fmt: skip
                if self._cancelled.is_set():
                    raise Cancelled("song source cancelled")
                yield Pcm(self.name, offset, pcm)
                offset += pcm.shape[0]
        except (BadMedia, OSError) as error:
            raise InvalidAudio(f"song: the upload {self.song.id} cannot be read any more: {error}") from None
        yield Ended(self.name)


def song_mono(song: UploadRecord) -> tuple[np.ndarray, int]:
    """The whole song as float32 mono at the rate a job reads it at (what its music analysis hears), and that rate."""
    rate, channels = playback_layout(song.sample_rate, song.channels)
    try:
        pieces = decode_audio(Path(song.path), sample_rate=rate, channels=channels,
                              total_samples=seconds_to_samples(song.duration_seconds, rate))  # fmt: skip
        return np.concatenate([piece.mean(axis=1) for piece in pieces]).astype(np.float32), rate
    except (BadMedia, OSError) as error:
        raise InvalidAudio(f"song: the upload {song.id} cannot be read any more: {error}") from None


def melody_pcm(melody: UploadRecord) -> bytes:
    """The melody clip's first MELODY_MAX_S seconds as float32 mono PCM at 32 kHz (the wire form of
    GenerateMusicRequest.melody_pcm). Resampled here: transformers' melody feature extractor resamples numpy input
    wrongly when it is not at 32 kHz already."""
    seconds = min(melody.duration_seconds, MELODY_MAX_S)
    total = seconds_to_samples(seconds, MELODY_RATE)
    try:
        pieces = decode_audio(Path(melody.path), sample_rate=MELODY_RATE, channels=1, total_samples=total)
        return np.concatenate(list(pieces)).astype("<f4").tobytes()
    except (BadMedia, OSError) as error:
        raise InvalidAudio(f"melody: the upload {melody.id} cannot be read any more: {error}") from None


def repaint_source_pcm(song: UploadRecord, *, start_s: float, seconds: float) -> bytes:
    """The song's window (the video's music) as GenerateMusicRequest.source_pcm: int16 interleaved stereo at 48 kHz,
    exactly round(seconds · 48000) samples per channel (a mono song is sent on both channels)."""
    rate, channels = wire.SOURCE_RATE, wire.SOURCE_CHANNELS
    try:
        pieces = decode_audio(Path(song.path), sample_rate=rate, channels=channels,
                              start_samples=seconds_to_samples(start_s, rate),
                              total_samples=seconds_to_samples(seconds, rate))  # fmt: skip
        return b"".join(wire.pcm16_to_bytes(piece) for piece in pieces)
    except (BadMedia, OSError) as error:
        raise InvalidAudio(f"song: the upload {song.id} cannot be read any more: {error}") from None


def frame_image(image: UploadRecord, width: int, height: int) -> bytes:
    """The image resized to cover the frame and center-cropped to it, as PNG (GenerateVideoRequest.image)."""
    try:
        return fit_image(Path(image.path), width, height)
    except OSError as error:  # Pillow's errors are OSErrors
        raise UploadUnreadable(f"image: the upload {image.id} cannot be read any more: {error}") from None


class UploadUnreadable(ComposeError):
    """A stored upload that no longer reads (its file damaged after it was checked)."""
