"""Repaint: re-make one time range of a song and keep the rest (ACE-Step 1.5's `task_type="repaint"`). No gRPC here.

What AceStepPipeline does with it (diffusers 0.42.1, pipeline_ace_step.py): the VAE encodes `src_audio`
([channels, samples] at 48 kHz) to latents, floor(samples / 1920) of them (25 per second); `_build_chunk_mask` marks
latent frames int(start · 25) .. int(end · 25) to generate; inside them the context holds the learned silence latent,
outside the source's latents; then *every* latent frame is denoised from noise with that context, decoded, and the
whole output scaled to a -1 dBFS peak. So the outside is not copied, in latent space or in samples: a trained model
re-creates it from the context (close to the source), a random one does not at all.

The contract "keep the rest" is therefore kept here, in samples: the source is padded to whole latent frames (the
encoder floors), and the pipeline's output is spliced into the source: outside the range the source's own samples,
inside the re-made ones brought to the song's level (the pipeline's peak normalisation is undone by the ratio of
the source's RMS to the output's RMS outside the range), with a short linear cross-fade inside each edge of the
range that lies within the song.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tunereel import wire

from .pipeline import InvalidMusicInput

__all__ = ["Repaint", "repaint_from_wire", "pipeline_arguments", "splice", "seeded_source_encoding", "FADE_S"]

FADE_S = 0.04  # one latent frame: long enough to hide a step, short against any range worth re-making
MAX_GAIN = 10.0  # the level match is bounded (±20 dB): a near-silent outside must not blow up the new range


@dataclass(frozen=True)
class Repaint:
    """The audio to re-make a range of, and the range in seconds from its start."""

    source: np.ndarray  # float32 (samples, channels) at the model's rate
    start_s: float
    end_s: float

    def bounds(self, rate: int) -> tuple[int, int]:
        """The range in samples: [start, end)."""
        return round(self.start_s * rate), min(round(self.end_s * rate), self.source.shape[0])


def repaint_from_wire(source_pcm: bytes, start_s: float, end_s: float, *, duration_s: float, rate: int,
                      channels: int) -> Repaint:  # fmt: skip
    """GenerateMusicRequest's repaint fields, checked against the request's duration and the model's layout;
    InvalidMusicInput names the field."""
    if (rate, channels) != (wire.SOURCE_RATE, wire.SOURCE_CHANNELS):
        raise InvalidMusicInput("source_pcm", f"this model runs at {rate} Hz with {channels} channel(s); repaint takes "
                                              f"{wire.SOURCE_RATE} Hz stereo sources only")  # fmt: skip
    if not source_pcm:
        raise InvalidMusicInput("source_pcm", "required with a repaint range (the audio to re-make a range of)")
    frame = 2 * channels
    expected = round(duration_s * rate)
    if len(source_pcm) != expected * frame:
        raise InvalidMusicInput("source_pcm", f"must be exactly duration_seconds of int16 stereo at {rate} Hz: "
                                              f"{expected * frame} bytes (got {len(source_pcm)})")  # fmt: skip
    if not (math.isfinite(start_s) and start_s >= 0):
        raise InvalidMusicInput("repaint_start_seconds", f"must be >= 0 (got {start_s:g})")
    if not (math.isfinite(end_s) and start_s < end_s <= duration_s):
        raise InvalidMusicInput("repaint_end_seconds", f"must be after repaint_start_seconds ({start_s:g}) and at most "
                                                       f"duration_seconds ({duration_s:g}); got {end_s:g}")  # fmt: skip
    return Repaint(wire.pcm16_from_bytes(source_pcm, channels), start_s, end_s)


def pipeline_arguments(repaint: Repaint, hop: int) -> dict:
    """What AceStepPipeline takes for the repaint task: `src_audio` [channels, samples] padded with silence to whole
    latent frames of `hop` samples (its encoder floors the rest away), and the range in seconds."""
    samples = repaint.source.shape[0]
    padded = np.zeros((math.ceil(samples / hop) * hop, repaint.source.shape[1]), dtype=np.float32)
    padded[:samples] = repaint.source
    return dict(task_type="repaint", src_audio=torch.from_numpy(np.ascontiguousarray(padded.T)),
                repainting_start=repaint.start_s, repainting_end=repaint.end_s)  # fmt: skip


@contextlib.contextmanager
def seeded_source_encoding(seed: int, device: torch.device) -> Iterator[None]:
    """AceStepPipeline encodes `src_audio` with `latent_dist.sample()` and no generator: it draws from torch's global
    RNG, so the same seed would not give the same repaint. Within this block the global RNG (CPU and `device`) is
    seeded from the request's seed, and restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def splice(repaint: Repaint, generated: np.ndarray, rate: int) -> np.ndarray:
    """The source with [start, end) taken from `generated` (the pipeline's output, as long as the source), at the
    source's level, cross-faded over FADE_S inside each edge that lies within the song. Outside: the source itself."""
    source = repaint.source
    start, end = repaint.bounds(rate)
    outside = np.ones(source.shape[0], dtype=bool)
    outside[start:end] = False
    gain = level_match(source[outside], generated[outside])
    weight = np.zeros(source.shape[0], dtype=np.float32)  # 0: the source, 1: the re-made audio
    weight[start:end] = 1.0
    fade = min(round(FADE_S * rate), (end - start) // 4)
    if fade > 0:
        ramp = (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1))
        if start > 0:
            weight[start : start + fade] = ramp
        if end < source.shape[0]:
            weight[end - fade : end] = ramp[::-1]
    weight = weight[:, None]
    out = source * (1.0 - weight) + generated * np.float32(gain) * weight
    out[outside] = source[outside]  # exactly the source's samples, whatever the arithmetic above
    return out.astype(np.float32)


def level_match(source: np.ndarray, generated: np.ndarray) -> float:
    """How much to scale the re-made audio so that it sits at the song's level: the source's RMS over the model's RMS
    where both should agree (outside the range), within ±20 dB; 1.0 without such a part or with silence in it."""
    if source.size == 0:
        return 1.0
    ours, theirs = (float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) for part in (source, generated))
    if ours < 1e-6 or theirs < 1e-6:
        return 1.0
    return min(max(ours / theirs, 1.0 / MAX_GAIN), MAX_GAIN)
