"""MP4 muxing: the only module in tunereel that touches FFmpeg (through PyAV's bindings to FFmpeg's libraries).

Output (design.md, "Output"): H.264 (libx264) yuv420p + AAC (FFmpeg's native `aac` encoder) in an MP4 with
`+faststart` (the `moov` index before `mdat`, so browsers can start playing before the download ends).

Streaming: `Mp4Muxer.add_frame` and `Mp4Muxer.add_audio` encode as data arrives; nothing keeps raw frames or the
whole PCM. Timing is exact by construction: frame i has pts i in time base 1/fps (frame count = frames given,
video duration = frames / fps), and audio pts are counted in samples (time base 1/sample_rate).

Interleaving: audio and video may arrive in any order (all the music first, all the frames first, or mixed).
The container is opened with `max_interleave_delta=0`, so libavformat's interleaver (av_interleaved_write_frame)
holds *encoded* packets until it has one from every stream and writes them strictly in time order. The cost is
that when one stream runs ahead, its encoded packets wait in memory (compressed size, not raw frames) until the
other stream catches up. (With FFmpeg's default of 10 s, a stream arriving early gets written in ~10 s runs.)

Colour: frames are converted RGB -> yuv420p with the BT.709 matrix, limited range, and the stream is tagged
BT.709 (primaries, transfer, matrix), so browsers decode the colours the caller gave.

Metadata: the mp4 muxer (iTunes-style `ilst`) keeps only a fixed set of string keys; anything else is dropped
silently by FFmpeg, so unknown keys are rejected here with MuxError. `SUPPORTED_METADATA_KEYS` lists the keys
verified to survive a write/read round trip; put the provenance JSON under "comment" (or "description").

Shots (segments): a video cut into shots is made shot by shot, in any order, on several video replicas. Each shot is
encoded on its own (`SegmentWriter`) into a video-only MP4 on disk: its first frame a keyframe (a cut is where a
keyframe belongs), no B-frames (decode order = display order, so joined segments keep increasing timestamps). An
`Mp4Muxer` opened with `segments=True` takes them in order with `add_segment`, which copies their packets into the
output (no re-encoding). Every segment is encoded with the same settings and size, so they share one H.264 parameter
set (checked: a segment whose parameter set differs is refused). Chapters (`chapters=`) are written as the mp4 muxer
writes them: a QuickTime chapter text track (a third, "data", stream) plus Nero `chpl`; FFmpeg's mov muxer takes them
when it writes the header, so they must be known when the muxer opens.

Files: everything is written to a hidden temporary file next to `path`, which is renamed onto `path` only when
`close()` succeeds. An exception inside `with Mp4Muxer(...)`, `abort()`, or a failed `close()` removes it.

Thread safety: add_frame / add_audio / close may be called from different threads (the composer feeds frames from
one and audio from another). Each stream's encoder has its own lock and FFmpeg releases the GIL while it encodes, so
the AAC encoding runs beside the H.264 encoding; only writing packets into the container is serialised.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

__all__ = [
    "AAC_SAMPLE_RATES",
    "AudioSpec",
    "Chapter",
    "SegmentWriter",
    "MuxError",
    "MuxResult",
    "Mp4Muxer",
    "SUPPORTED_METADATA_KEYS",
    "VideoSpec",
    "aac_round_trip",
    "check_pcm",
    "encode_mp4",
]

# Keys that FFmpeg's mp4 muxer writes and its demuxer reads back unchanged (checked with PyAV 18 / libavformat 62).
# Not included: "encoder" (always overwritten with "Lavf..."), "creation_time" (kept but reformatted),
# "track"/"disc" and "media_type"/"hd_video"/"gapless_playback"/"compilation" (numeric: text is lost),
# "year" (not written), and any custom key such as "provenance" (dropped unless movflags=use_metadata_tags).
SUPPORTED_METADATA_KEYS = frozenset({
    "title", "artist", "album_artist", "album", "composer", "date", "comment", "genre", "copyright",
    "grouping", "lyrics", "description", "synopsis", "show", "episode_id", "network", "keywords",
})

# Sampling rates the AAC bitstream (and FFmpeg's native encoder) supports.
AAC_SAMPLE_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000})

_LAYOUTS = {1: "mono", 2: "stereo"}
_BT709 = 1  # AVCOL_PRI_BT709 == AVCOL_TRC_BT709 == AVCOL_SPC_BT709
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG (limited / "TV" range)
_X264_PRESETS = frozenset({
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
})


class MuxError(Exception):
    """Invalid input to the muxer, or FFmpeg failed to encode/write the file."""


@dataclass(frozen=True)
class VideoSpec:
    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MuxResult:
    path: Path
    frame_count: int
    audio_samples: int
    video_duration_s: float
    size_bytes: int


@dataclass(frozen=True)
class Chapter:
    start_s: float
    end_s: float
    title: str


def _segment_stream(container, video: VideoSpec, crf: int, preset: str):
    """A libx264 stream with the settings every shot segment shares (so all have one parameter set)."""
    vs = container.add_stream("libx264", rate=video.fps, options={"crf": str(int(crf)), "preset": preset, "bf": "0"})
    vs.width, vs.height, vs.pix_fmt = video.width, video.height, "yuv420p"
    vcc = vs.codec_context
    vcc.time_base = Fraction(1, video.fps)
    vcc.thread_type = "FRAME"
    vcc.colorspace = vcc.color_primaries = vcc.color_trc = _BT709
    vcc.color_range = _MPEG_RANGE
    return vs


def _yuv_frame(rgb: np.ndarray, video: VideoSpec, index: int) -> av.VideoFrame:
    expected = (video.height, video.width, 3)
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != expected:
        got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise MuxError(f"frame {index}: expected uint8 array of shape {expected} (height, width, RGB), got {got}")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)


class SegmentWriter:
    """One shot as its own video-only MP4 (see "Shots" above): add_frame… close() → frames written; abort() removes it."""

    def __init__(self, path: Path | str, video: VideoSpec, *, crf: int = 23, preset: str = "veryfast"):
        _validate_specs(video, AudioSpec(48000, 1))
        self.path = Path(path)
        self.video = video
        self.frames = 0
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4")
            self._stream = _segment_stream(self._container, video, crf, preset)
            self._container.start_encoding()
        except av.FFmpegError as exc:
            self.abort()
            raise MuxError(f"could not set up the shot segment {self.path}: {exc}") from exc

    def add_frame(self, rgb: np.ndarray) -> None:
        frame = _yuv_frame(rgb, self.video, self.frames)
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.video.fps)
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise MuxError(f"encoding the shot segment {self.path} failed: {exc}") from exc
        self.frames += 1

    def close(self) -> int:
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except av.FFmpegError as exc:
            self.abort()
            raise MuxError(f"could not finish the shot segment {self.path}: {exc}") from exc
        return self.frames

    def abort(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        self.path.unlink(missing_ok=True)


def _audio_bit_rate(channels: int) -> int:
    return 128_000 if channels == 1 else 192_000


def _configure_aac(ctx, audio: AudioSpec) -> None:
    """The one place the AAC settings live: used by Mp4Muxer and by aac_round_trip, so both produce the same bits."""
    ctx.bit_rate = _audio_bit_rate(audio.channels)
    ctx.format = "fltp"


def _validate_specs(video: VideoSpec, audio: AudioSpec) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not (is_int(video.width) and is_int(video.height) and video.width > 0 and video.height > 0):
        raise MuxError(f"video size must be positive ints, got {video.width!r}x{video.height!r}")
    if video.width % 2 or video.height % 2:
        raise MuxError(f"yuv420p needs an even width and height, got {video.width}x{video.height}")
    if not (is_int(video.fps) and 1 <= video.fps <= 240):
        raise MuxError(f"fps must be an int in 1..240, got {video.fps!r}")
    if not is_int(audio.sample_rate) or audio.sample_rate not in AAC_SAMPLE_RATES:
        raise MuxError(f"AAC does not support sample_rate {audio.sample_rate!r}; use one of {sorted(AAC_SAMPLE_RATES)}")
    if audio.channels not in _LAYOUTS:
        raise MuxError(f"channels must be 1 (mono) or 2 (stereo), got {audio.channels!r}")


def _validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if not metadata:
        return {}
    if not isinstance(metadata, Mapping):
        raise MuxError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if key not in SUPPORTED_METADATA_KEYS:
            raise MuxError(
                f"metadata key {key!r} would be dropped by the mp4 muxer; use one of {sorted(SUPPORTED_METADATA_KEYS)}"
                " (put JSON provenance under 'comment')"
            )
        if not isinstance(value, str):
            raise MuxError(f"metadata value for {key!r} must be str, got {type(value).__name__}")
        if "\x00" in value:
            raise MuxError(f"metadata value for {key!r} contains a NUL character")
        out[key] = value
    return out


class Mp4Muxer:
    """Streaming H.264 + AAC MP4 writer. Use as a context manager, or call `close()` (or `abort()`) yourself.

    with Mp4Muxer(path, VideoSpec(768, 512, 24), AudioSpec(32000, 1), metadata={"comment": provenance_json}) as mux:
        for frame in frames: mux.add_frame(frame)     # HxWx3 uint8 RGB
        mux.add_audio(pcm)                            # float32 (samples, channels); any number of chunks
    result = mux.result                               # close() ran on leaving the block
    """

    def __init__(
        self,
        path: Path | str,
        video: VideoSpec,
        audio: AudioSpec,
        *,
        metadata: dict[str, str] | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        segments: bool = False,
        chapters: Iterable[Chapter] = (),
    ) -> None:
        _validate_specs(video, audio)
        meta = _validate_metadata(metadata)
        if not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
            raise MuxError(f"crf must be an int in 0..51, got {crf!r}")
        if preset not in _X264_PRESETS:
            raise MuxError(f"unknown x264 preset {preset!r}; use one of {sorted(_X264_PRESETS)}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise MuxError(f"output directory does not exist: {self.path.parent}")
        self.video = video
        self.audio = audio
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.partial")
        self._lock = threading.Lock()  # the container and the counters
        self._video_lock = threading.Lock()  # the H.264 encoder (always taken before `_lock`)
        self._audio_lock = threading.Lock()  # the AAC encoder (always taken before `_lock`)
        self._frames = 0
        self._samples = 0
        self._result: MuxResult | None = None
        self._finished = False
        self._video_tb = Fraction(1, video.fps)
        self._audio_tb = Fraction(1, audio.sample_rate)
        self._container = None
        try:
            self._container = av.open(
                str(self._tmp),
                mode="w",
                format="mp4",
                container_options={"movflags": "+faststart", "max_interleave_delta": "0"},
            )
            self._container.metadata.update(meta)
            self._segments = segments
            self._parameter_set: bytes | None = None
            if chapters:
                self._container.set_chapters([
                    {"id": i + 1, "start": round(c.start_s * 1000), "end": round(c.end_s * 1000),
                     "time_base": Fraction(1, 1000), "metadata": {"title": c.title}}
                    for i, c in enumerate(chapters)
                ])  # fmt: skip
            if segments:
                self._vstream = self._template_stream(video, crf, preset)
                self._parameter_set = bytes(self._vstream.codec_context.extradata or b"")
            vs = None if segments else self._container.add_stream(
                "libx264", rate=video.fps, options={"crf": str(int(crf)), "preset": preset}
            )
            if vs is not None:
                self._setup_encoder(vs, video)

            as_ = self._container.add_stream("aac", rate=audio.sample_rate, layout=_LAYOUTS[audio.channels])
            _configure_aac(as_.codec_context, audio)
            self._astream = as_

            # Open the encoders now so that a bad setting fails here, not at the first frame.
            if vs is not None:
                vs.codec_context.open()
            as_.codec_context.open()
            # Write the header now: PyAV does it at the first packet muxed, reading both encoders' parameters, which
            # must not happen from the audio thread while the video thread is inside the H.264 encoder.
            self._container.start_encoding()
        except av.FFmpegError as exc:
            self._discard()
            raise MuxError(f"could not set up the MP4 writer for {self.path}: {exc}") from exc
        except BaseException:
            self._discard()
            raise

    def _setup_encoder(self, vs, video: VideoSpec) -> None:
        vs.width, vs.height, vs.pix_fmt = video.width, video.height, "yuv420p"
        vcc = vs.codec_context
        vcc.time_base = self._video_tb
        # Frame threads, as the ffmpeg program uses for libx264 (PyAV's default is slice threads): x264 encodes
        # several frames at once while this thread converts the next one; ~10-20 % faster here
        # (docs/benchmarks.md). x264 stays deterministic with them (its default): the same frames give the same file
        # on the same machine (the number of threads, one per core, shapes the bitstream, as slice threads did).
        vcc.thread_type = "FRAME"
        vcc.colorspace = vcc.color_primaries = vcc.color_trc = _BT709
        vcc.color_range = _MPEG_RANGE
        self._vstream = vs

    def _template_stream(self, video: VideoSpec, crf: int, preset: str):
        """The output's video stream for shot segments: a copy of a one-frame reference segment's stream (so the
        output carries the parameter set every segment shares)."""
        reference = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.reference.mp4")
        try:
            writer = SegmentWriter(reference, video, crf=crf, preset=preset)
            writer.add_frame(np.zeros((video.height, video.width, 3), np.uint8))
            writer.close()
            with av.open(str(reference)) as template:
                return self._container.add_stream_from_template(template.streams.video[0])
        finally:
            reference.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------------- properties
    @property
    def frame_count(self) -> int:
        return self._frames

    @property
    def audio_samples(self) -> int:
        return self._samples

    @property
    def result(self) -> MuxResult | None:
        """The MuxResult once close() has succeeded, else None."""
        return self._result

    # ---------------------------------------------------------------------------------------------------- inputs
    def add_frame(self, rgb: np.ndarray) -> None:
        """Encode one RGB frame (uint8, shape (height, width, 3)) as frame number `frame_count`."""
        if self._segments:
            raise MuxError("a muxer opened with segments=True takes shot segments (add_segment), not frames")
        expected = (self.video.height, self.video.width, 3)
        if not isinstance(rgb, np.ndarray):
            raise MuxError(f"frame {self._frames}: expected a numpy uint8 array of shape {expected}, "
                           f"got {type(rgb).__name__}")
        if rgb.dtype != np.uint8 or rgb.shape != expected:
            raise MuxError(f"frame {self._frames}: expected uint8 array of shape {expected} (height, width, RGB), "
                           f"got {rgb.dtype} array of shape {rgb.shape}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
        with self._video_lock:
            self._check_open()
            frame.pts = self._frames
            frame.time_base = self._video_tb
            self._encode(self._vstream, frame, "video")
            self._frames += 1

    def add_segment(self, segment: Path | str) -> int:
        """Copy a shot segment (SegmentWriter's file) after the frames so far, without re-encoding; returns its
        frame count. Only for a muxer opened with `segments=True`."""
        if not self._segments:
            raise MuxError("add_segment needs a muxer opened with segments=True")
        with self._video_lock:
            self._check_open()
            try:
                with av.open(str(segment)) as source:
                    stream = source.streams.video[0]
                    if bytes(stream.codec_context.extradata or b"") != self._parameter_set:
                        raise MuxError(f"segment {segment}: its H.264 parameter set differs from the output's "
                                       "(encoded with other settings or size)")  # fmt: skip
                    shift = int(round(Fraction(self._frames, self.video.fps) / stream.time_base))
                    frames = 0
                    for packet in source.demux(stream):
                        if packet.dts is None:  # the demuxer's flush packet
                            continue
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = self._vstream
                        frames += 1
                        with self._lock:
                            self._container.mux(packet)
            except av.FFmpegError as exc:
                raise MuxError(f"copying segment {segment} into {self.path} failed: {exc}") from exc
            self._frames += frames
            return frames

    def add_audio(self, pcm: np.ndarray) -> None:
        """Encode a chunk of PCM: float (samples, channels) in [-1, 1] (a 1-D array is accepted for mono).
        Chunks are concatenated in call order; any chunk size works (the encoder re-blocks to AAC's 1024)."""
        pcm = check_pcm(pcm, self.audio)
        if pcm.shape[0] == 0:
            return
        frame = _audio_frame(pcm, self.audio)
        with self._audio_lock:
            self._check_open()
            frame.pts = self._samples
            frame.time_base = self._audio_tb
            self._encode(self._astream, frame, "audio")
            self._samples += pcm.shape[0]

    # ------------------------------------------------------------------------------------------------ finishing
    def close(self) -> MuxResult:
        """Flush both encoders, write the index (moved to the front: faststart) and move the file into place.
        Idempotent: a second call returns the same result. Raises MuxError (and removes the file) on failure."""
        with self._video_lock, self._audio_lock:  # no encode in flight; `_encode` takes `_lock` itself
            if self._result is not None:
                return self._result
            self._check_open()
            self._finished = True
            try:
                if self._frames == 0:
                    raise MuxError("no video frames were added")
                if self._samples == 0:
                    raise MuxError("no audio was added")
                if not self._segments:
                    self._encode(self._vstream, None, "video")
                self._encode(self._astream, None, "audio")
                with self._lock:
                    self._container.close()  # writes the trailer; +faststart rewrites the file with moov first
                    self._container = None
                os.replace(self._tmp, self.path)
            except BaseException as exc:
                self._discard()
                if isinstance(exc, av.FFmpegError):
                    raise MuxError(f"could not finish {self.path}: {exc}") from exc
                raise
            self._result = MuxResult(
                path=self.path,
                frame_count=self._frames,
                audio_samples=self._samples,
                video_duration_s=self._frames / self.video.fps,
                size_bytes=self.path.stat().st_size,
            )
            return self._result

    def abort(self) -> None:
        """Stop without producing a file (cancellation): the partial file is removed. Safe to call at any time."""
        with self._video_lock, self._audio_lock, self._lock:
            if self._result is None:
                self._finished = True
                self._discard()

    def __enter__(self) -> Mp4Muxer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:  # a muxer dropped without close/abort leaves no partial file behind
        try:
            if self._result is None and not self._finished:
                self._discard()
        except Exception:
            pass

    # ---------------------------------------------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._finished:
            raise MuxError("the muxer is already closed")

    def _encode(self, stream, frame, what: str) -> None:
        """Encode on the caller's thread (its stream's lock held), then write the packets under the container lock."""
        try:
            packets = stream.encode(frame)
            with self._lock:
                self._container.mux(packets)
        except av.FFmpegError as exc:
            raise MuxError(f"{what} encoding/muxing failed for {self.path}: {exc}") from exc

    def _discard(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def check_pcm(pcm: np.ndarray, audio: AudioSpec) -> np.ndarray:
    """PCM as the AAC encoder takes it: float (samples, channels), finite; MuxError otherwise."""
    channels = audio.channels
    if not isinstance(pcm, np.ndarray):
        raise MuxError(f"audio: expected a numpy float32 array of shape (samples, {channels}), "
                       f"got {type(pcm).__name__}")
    if pcm.ndim == 1 and channels == 1:
        pcm = pcm[:, None]
    if pcm.ndim != 2 or pcm.shape[1] != channels or not np.issubdtype(pcm.dtype, np.floating):
        raise MuxError(f"audio: expected float32 array of shape (samples, {channels}), "
                       f"got {pcm.dtype} array of shape {pcm.shape}")
    if not np.isfinite(pcm).all():
        raise MuxError("audio: contains NaN or inf samples")
    return pcm


def _audio_frame(pcm: np.ndarray, audio: AudioSpec) -> av.AudioFrame:
    planar = np.ascontiguousarray(pcm.T, dtype=np.float32)  # (channels, samples) for 'fltp'
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=_LAYOUTS[audio.channels])
    frame.sample_rate = audio.sample_rate
    return frame


def aac_round_trip(pcm: np.ndarray, audio: AudioSpec) -> np.ndarray:
    """Encode `pcm` with exactly the AAC settings Mp4Muxer uses, decode it again in memory, and return what a
    player will hear: float32 (samples, channels), encoder delay removed, trimmed to the input length.
    (The AAC encoder is deterministic and its output does not depend on how the PCM was chunked, so this matches
    the audio of an MP4 written with the same PCM sample for sample.)"""
    _validate_specs(VideoSpec(2, 2, 1), audio)
    pcm = check_pcm(pcm, audio)
    n = pcm.shape[0]
    if n == 0:
        return np.zeros((0, audio.channels), np.float32)
    layout = _LAYOUTS[audio.channels]
    try:
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate = audio.sample_rate
        enc.layout = layout
        enc.time_base = Fraction(1, audio.sample_rate)
        _configure_aac(enc, audio)
        enc.open()
        dec = av.CodecContext.create("aac", "r")
        dec.sample_rate = audio.sample_rate
        dec.layout = layout
        dec.extradata = enc.extradata
        frame = _audio_frame(pcm, audio)
        frame.pts = 0
        frame.time_base = enc.time_base
        packets = enc.encode(frame) + enc.encode(None)
        # The encoder's priming (1024 samples for FFmpeg's aac) shows as a negative first pts; the MP4 edit list
        # hides the same samples from players.
        delay = max(0, -int(packets[0].pts)) if packets and packets[0].pts is not None else 0
        chunks = []
        for packet in packets:
            chunks.extend(f.to_ndarray() for f in dec.decode(packet))
        chunks.extend(f.to_ndarray() for f in dec.decode(None))
    except av.FFmpegError as exc:
        raise MuxError(f"AAC round trip failed: {exc}") from exc
    out = np.concatenate(chunks, axis=1).T[delay:delay + n]
    if out.shape[0] < n:  # cannot happen with FFmpeg's encoder; keep the contract anyway
        out = np.concatenate([out, np.zeros((n - out.shape[0], audio.channels), out.dtype)])
    return np.ascontiguousarray(out, dtype=np.float32)


def encode_mp4(
    path: Path | str,
    video: VideoSpec,
    audio: AudioSpec,
    frames: Iterable[np.ndarray],
    pcm: np.ndarray,
    metadata: dict[str, str] | None = None,
) -> MuxResult:
    """Write frames + PCM to `path` in one call. Frames are consumed lazily (a generator is fine) and the audio is
    fed alongside them, one frame's worth at a time, so the encoders see both streams in time order."""
    if not isinstance(pcm, np.ndarray):
        raise MuxError(f"pcm must be a numpy array, got {type(pcm).__name__}")
    if pcm.ndim == 1:
        pcm = pcm[:, None]
    total = pcm.shape[0]
    with Mp4Muxer(path, video, audio, metadata=metadata) as mux:
        fed = 0
        for i, frame in enumerate(frames):
            mux.add_frame(frame)
            upto = min(total, int(math.ceil((i + 1) * audio.sample_rate / video.fps)))
            if upto > fed:
                mux.add_audio(pcm[fed:upto])
                fed = upto
        if fed < total:
            mux.add_audio(pcm[fed:])
    assert mux.result is not None
    return mux.result
