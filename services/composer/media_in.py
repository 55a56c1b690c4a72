"""Reading the users' media: uploads checked whole before they are kept, songs and melodies decoded to PCM, images
fitted to the output size.

The muxer writes through FFmpeg; this module is the only other place that touches it (PyAV's decoders), so the rule
"only the composer's media modules touch FFmpeg" holds: the muxer encodes, media_in decodes. Images are read with
Pillow (diffusers' own image library): it reads a file's pixel size from its header, so a decompression bomb is
refused before a single pixel is decoded.

Every check raises `BadMedia` with a message a user can act on.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .muxer import AAC_SAMPLE_RATES

__all__ = [
    "AudioInfo",
    "BadMedia",
    "ImageInfo",
    "IMAGE_FORMATS",
    "decode_audio",
    "fit_image",
    "playback_layout",
    "probe_audio",
    "probe_image",
]

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# A stated length may exceed what decodes by this much (encoder padding, a bitrate estimate) before the file counts as
# truncated or its header as lying.
LENGTH_SLACK_S = 0.5
LENGTH_SLACK_FRACTION = 0.02
DEFAULT_RATE = 48_000  # for audio at a rate AAC cannot carry


class BadMedia(ValueError):
    """An upload that is not what it claims, or breaks a limit; the message says which."""


@dataclass(frozen=True)
class AudioInfo:
    format: str
    sample_rate: int
    channels: int
    samples: int  # per channel, as decoded

    @property
    def duration_seconds(self) -> float:
        return self.samples / self.sample_rate


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


# ------------------------------------------------------------------------------------------------------- audio
def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise BadMedia(f"not audio that can be decoded ({type(error).__name__}: {error})") from None


def _stated_seconds(stream) -> float | None:
    """The length the file's header states for the stream (FLAC's STREAMINFO, an MP3's Xing/Info frame count, MP4's
    sample table, WAV's data size), or None: a length FFmpeg only estimates from the bitrate (a VBR MP3 without a
    Xing header) is not held against the file."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe_audio(path: Path, *, max_duration_s: float) -> AudioInfo:
    """Decode the whole file once: it must be audio, decode without error, last at most `max_duration_s`, and last
    as long as its header says (a truncated file or a header that lies about the length is refused)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise BadMedia("the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        channels = stream.codec_context.channels
        if not rate or not channels:
            raise BadMedia("the audio stream states no sample rate or channels")
        stated = _stated_seconds(stream)
        samples = 0
        try:
            for frame in container.decode(stream):
                samples += frame.samples
                if samples > (max_duration_s + 1.0) * rate:
                    raise BadMedia(f"longer than {max_duration_s:g} s, the duration limit")
        except av.FFmpegError as error:
            raise BadMedia(f"the audio is corrupt ({type(error).__name__}: {error})") from None
        if samples == 0:
            raise BadMedia("the file holds no audio samples")
        decoded = samples / rate
        if decoded > max_duration_s:
            raise BadMedia(f"longer than {max_duration_s:g} s, the duration limit (it lasts {decoded:.2f} s)")
        if stated is not None and stated - decoded > max(LENGTH_SLACK_S, LENGTH_SLACK_FRACTION * stated):
            raise BadMedia(f"truncated or its header lies: it says {stated:.2f} s, but {decoded:.2f} s decode")
        kind = container.format.name.split(",")[0]
    if kind == "wav":
        check_wav_sizes(path)  # FFmpeg trusts a short file over a long header; a header that lies is refused here
    return AudioInfo(format=kind, sample_rate=rate, channels=channels, samples=samples)


def check_wav_sizes(path: Path) -> None:
    """The RIFF size and the `data` chunk's size must fit the file (0 and 0xFFFFFFFF, a streamed WAV's "unknown",
    are accepted)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64"):
            return  # RF64/odd layouts: FFmpeg's decode above is the check
        riff = int.from_bytes(head[4:8], "little")
        if head[:4] == b"RIFF" and riff not in (0, 0xFFFFFFFF) and riff + 8 > size:
            raise BadMedia(f"truncated or its header lies: the WAV header states {riff + 8} bytes, the file has {size}")
        offset = 12
        while offset + 8 <= size:
            file.seek(offset)
            chunk = file.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length not in (0, 0xFFFFFFFF) and offset + 8 + length > size:
                    raise BadMedia(f"truncated or its header lies: the WAV data chunk states {length} bytes, "
                                   f"{size - offset - 8} follow")  # fmt: skip
                return
            offset += 8 + length + (length & 1)


def playback_layout(sample_rate: int, channels: int) -> tuple[int, int]:
    """(rate, channels) the MP4 carries a song at: its own where AAC allows, else 48 kHz; mono or stereo."""
    return (sample_rate if sample_rate in AAC_SAMPLE_RATES else DEFAULT_RATE), min(max(channels, 1), 2)


def decode_audio(
    path: Path, *, sample_rate: int, channels: int, start_samples: int = 0, total_samples: int, chunk_samples: int = 32_000
) -> Iterator[np.ndarray]:
    """Exactly `total_samples` float32 (n, channels) samples at `sample_rate`, from `start_samples` (counted at
    `sample_rate`) on, in chunks of `chunk_samples`; padded with silence if the file ends first. Memory: a chunk."""
    window = _window(_resampled(path, sample_rate, channels), start_samples, total_samples, channels)
    return _rechunk(window, chunk_samples)


def _resampled(path: Path, sample_rate: int, channels: int) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono" if channels == 1 else "stereo", rate=sample_rate)
    with _open(path) as container:
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1, channels)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1, channels)


def _window(pieces: Iterator[np.ndarray], skip: int, total: int, channels: int) -> Iterator[np.ndarray]:
    """Samples [skip, skip + total) of the pieces, padded with silence to `total`."""
    left = total
    for piece in pieces:
        cut = min(skip, piece.shape[0])
        piece, skip = piece[cut : cut + left], skip - cut
        if piece.shape[0]:
            left -= piece.shape[0]
            yield piece
        if left == 0:
            return
    if left:
        yield np.zeros((left, channels), np.float32)


def _rechunk(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    have = 0
    for piece in pieces:
        pending.append(piece)
        have += piece.shape[0]
        while have >= size:
            block = np.concatenate(pending)
            yield np.ascontiguousarray(block[:size], dtype=np.float32)
            pending, have = [block[size:]], block.shape[0] - size
    if have:
        yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ images
def probe_image(path: Path, *, max_side: int) -> ImageInfo:
    """A PNG, JPEG or WebP of at most `max_side` pixels a side (checked from the header, before decoding), that
    decodes whole (a truncated or corrupt file is refused)."""
    try:
        with Image.open(path) as image:  # reads the header only
            kind = IMAGE_FORMATS.get(image.format or "")
            if kind is None:
                raise BadMedia(f"not a PNG, JPEG or WebP image (it is {image.format or 'unknown'})")
            width, height = image.size
            if width < 1 or height < 1 or width > max_side or height > max_side:
                raise BadMedia(f"{width}x{height} pixels: at most {max_side} pixels a side")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
    except BadMedia:
        raise
    except UnidentifiedImageError:
        raise BadMedia("not a PNG, JPEG or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadMedia(f"refused as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's truncated/corrupt data
        raise BadMedia(f"the image is corrupt or truncated ({error})") from None
    return ImageInfo(format=kind, width=width, height=height)


def fit_image(path: Path, width: int, height: int) -> bytes:
    """The image resized to cover width x height and center-cropped to it, as PNG bytes (what the video service's
    frame-0 condition gets: at most 1280x1280x3 of PNG, under the gRPC message limit)."""
    with Image.open(path) as image:
        fitted = ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    out = io.BytesIO()
    fitted.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    return int(math.floor(seconds * sample_rate + 0.5))
