"""Test helpers: read an MP4 back with PyAV and report what a player would see.

probe_mp4(path) -> dict with
    video_codec, pix_fmt, width, height, frame_count (frames actually decoded), fps (float),
    video_duration_s (the video track's duration from the container, i.e. its edit list; equals
        frame_count / fps for a constant-rate file), decoded_video_duration_s (last frame end - first frame start),
    audio_codec, sample_rate, channels,
    audio_samples / audio_duration_s: decoded samples (/ rate). FFmpeg's mov demuxer + decoder honour the edit list's
        start (the AAC encoder's 1024 priming samples are skipped) but not its end: the last AAC frame decodes whole,
        so this can exceed the muxed length by up to 1023 samples.
    audio_track_duration_s: the audio track duration from the container (edit list; millisecond precision),
    metadata (container-level dict), faststart (moov before mdat), top_level_boxes (list of box types),
    max_interleave_lag_s: walking the packets in file order, the largest amount by which a packet's time lies behind
        the latest time already seen in the file (0 = perfectly interleaved; FFmpeg's default interleaving with one
        stream arriving early gives ~10 s).

decode_audio(path) -> (float32 array (samples, channels), sample_rate), decoded as FFmpeg does (see above).
decode_frames(path, limit=None) -> list of RGB uint8 frames (height, width, 3).
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np


def mp4_top_level_boxes(path: Path | str) -> list[str]:
    """Types of the top-level ISO BMFF boxes, in file order."""
    boxes: list[str] = []
    with open(path, "rb") as f:
        f.seek(0, 2)
        end = f.tell()
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:  # 64-bit largesize follows
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:  # box extends to the end of the file
                size = end - pos
            if size < 8:
                raise ValueError(f"{path}: corrupt box header at offset {pos} (size {size})")
            boxes.append(kind.decode("latin-1"))
            pos += size
    return boxes


def _seconds(value, time_base) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def decode_audio(path: Path | str) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            if frame.format.is_planar:  # (channels, samples)
                arr = arr.T
            else:  # packed: (1, samples * channels)
                arr = arr.reshape(-1, frame.layout.nb_channels)
            chunks.append(arr.astype(np.float32, copy=False))
        channels = stream.codec_context.channels
    if not chunks:
        return np.zeros((0, channels), np.float32), rate
    return np.concatenate(chunks, axis=0), rate


def _interleave_lag(path: Path | str) -> float:
    items: list[tuple[int, float]] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0 or packet.pos is None or packet.pos < 0 or packet.dts is None:
                continue
            items.append((packet.pos, float(packet.dts * packet.time_base)))
    items.sort()
    latest = -float("inf")
    lag = 0.0
    for _, t in items:
        latest = max(latest, t)
        lag = max(lag, latest - t)
    return lag


def probe_mp4(path: Path | str) -> dict:
    info: dict = {}
    with av.open(str(path)) as container:
        info["metadata"] = dict(container.metadata)
        v = container.streams.video[0]
        info["video_codec"] = v.codec_context.name
        info["pix_fmt"] = v.codec_context.pix_fmt
        info["width"] = v.codec_context.width
        info["height"] = v.codec_context.height
        rate = v.average_rate or v.guessed_rate
        info["fps"] = float(rate) if rate else None
        info["video_duration_s"] = _seconds(v.duration, v.time_base)
        count = 0
        first = last_end = None
        for frame in container.decode(v):
            count += 1
            start = float(frame.pts * frame.time_base)
            dur = float(frame.duration * frame.time_base) if frame.duration else (1.0 / info["fps"])
            first = start if first is None else min(first, start)
            last_end = start + dur if last_end is None else max(last_end, start + dur)
        info["frame_count"] = count
        info["decoded_video_duration_s"] = (last_end - first) if count else 0.0

    with av.open(str(path)) as container:
        a = container.streams.audio[0]
        info["audio_codec"] = a.codec_context.name
        info["sample_rate"] = a.codec_context.sample_rate
        info["channels"] = a.codec_context.channels
        info["audio_track_duration_s"] = _seconds(a.duration, a.time_base)

    pcm, rate = decode_audio(path)
    info["audio_samples"] = int(pcm.shape[0])
    info["audio_duration_s"] = pcm.shape[0] / rate
    boxes = mp4_top_level_boxes(path)
    info["top_level_boxes"] = boxes
    info["faststart"] = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    info["max_interleave_lag_s"] = _interleave_lag(path)
    return info


def decode_frames(path: Path | str, limit: int | None = None) -> list[np.ndarray]:
    """Decoded video frames as RGB uint8 arrays (height, width, 3), converted with the stream's colour tags."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames
