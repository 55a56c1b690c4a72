"""Media the upload tests build themselves: a stereo 44.1 kHz song (MP3, FLAC, WAV), broken variants, images."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

RATE = 44_100


def song_pcm(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """(samples, 2) float32: two detuned tones with clicks on an uneven beat grid and a pickup, peaks near 0.5 (no
    limiting needed), different in each channel, so a channel swap or an offset shows."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    left = 0.25 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(n)
    right = 0.2 * np.sin(2 * np.pi * 331.0 * t + 0.3) + 0.05 * rng.standard_normal(n)
    beats = [0.3] + list(np.cumsum(np.tile([0.5, 0.55, 0.48, 0.52], int(seconds) + 1)) + 0.3)  # pickup, then uneven
    for beat in beats:
        start = int(beat * rate)
        if start < n:
            click = np.exp(-np.arange(min(2000, n - start)) / 300.0) * 0.15
            left[start : start + click.size] += click
            right[start : start + click.size] += click
    return np.stack([left, right], axis=1).astype(np.float32)


def write_song(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    """Encode (samples, channels) float32 with the codec the suffix names: .mp3, .flac, .wav, .m4a, .ogg."""
    codec = {".mp3": "libmp3lame", ".flac": "flac", ".wav": "pcm_s16le", ".m4a": "aac", ".ogg": "libopus"}[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=48_000 if codec == "libopus" else rate,
                                      layout="stereo" if pcm.shape[1] == 2 else "mono")  # fmt: skip
        if codec == "libopus":
            resampler = av.AudioResampler(format="flt", layout="stereo", rate=48_000)
        fmt = stream.codec_context.codec.audio_formats[0].name
        for offset in range(0, pcm.shape[0], 4096):
            block = pcm[offset : offset + 4096]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.reshape(1, -1)), format="flt",
                                               layout="stereo" if pcm.shape[1] == 2 else "mono")  # fmt: skip
            frame.sample_rate = rate
            frame.pts = offset
            frame.time_base = Fraction(1, rate)
            frames = resampler.resample(frame) if codec == "libopus" else [frame]
            for f in frames:
                if codec != "libopus":
                    f = av.AudioResampler(format=fmt, layout=f.layout.name, rate=rate).resample(f)[0]
                for packet in stream.encode(f):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def lying_wav(path: Path, real_seconds: float, claimed_seconds: float, rate: int = RATE) -> Path:
    """A 16-bit stereo WAV whose RIFF and data sizes claim `claimed_seconds` but hold `real_seconds`."""
    data = (song_pcm(real_seconds, rate) * 32767).astype("<i2").tobytes()
    claimed = int(claimed_seconds * rate) * 4
    header = b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16)
    header += b"data" + struct.pack("<I", claimed)
    path.write_bytes(header + data)
    return path


def write_image(path: Path, width: int, height: int, fmt: str = "PNG") -> Path:
    """A gradient with a red left half (so a crop or a flip shows)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    rgb = np.stack([x, x[::-1, ::-1] * 0.5, np.full_like(x, 80)], axis=-1).astype(np.uint8)
    rgb[:, : width // 2, 0] = 255
    Image.fromarray(rgb).save(path, format=fmt)
    return path


def png_bomb(path: Path, width: int = 60_000, height: int = 60_000) -> Path:
    """A tiny PNG whose header states width x height (billions of pixels); its data is one zero row, compressed."""
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()
