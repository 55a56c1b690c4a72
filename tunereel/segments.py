"""How long outputs are cut into model passes: pure planning, no models, shared by the services and their tests.

Video (LTX-Video): a pass makes 8k+1 frames, at most `max_frames`. A long video is a chain of passes; every pass after
the first is conditioned on the last `overlap` frames of the one before (it re-makes them as its first frames) and
adds up to `max_frames - overlap` new ones. The last pass is cut to the exact frame count.

Music (MusicGen): a window holds at most `max_window_frames` codec frames (30 s at 50 Hz). Every window after the
first is prompted with the last `prompt_frames` codes of the one before (audiocraft's long-form generation, whose
`extend_stride` is the `max_window_frames - prompt_frames` new frames each window adds).

The plans below hold exact totals by construction: the new parts of the segments add up to the request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MusicWindow",
    "SegmentProgress",
    "VideoSegment",
    "correlation",
    "crossfade_gains",
    "model_frame_count",
    "music_join_starts",
    "plan_music",
    "plan_video",
    "segment_seed",
    "video_seam_starts",
]


def model_frame_count(num_frames: int, temporal_compression: int = 8) -> int:
    """The smallest count of the form k·8 + 1 that covers `num_frames` (LTX-Video's VAE needs it)."""
    return math.ceil(max(num_frames - 1, 0) / temporal_compression) * temporal_compression + 1


@dataclass(frozen=True)
class VideoSegment:
    index: int
    start: int  # index in the whole video of this pass's first frame (the first conditioned frame, if any)
    condition_frames: int  # leading frames of the pass that re-make the previous segment's last frames (0: none)
    new_frames: int  # frames this segment adds to the video, after its condition frames
    model_frames: int  # frames the model makes in this pass: 8k+1 ≥ condition_frames + new_frames

    @property
    def first_new(self) -> int:
        """Index in the whole video of the first frame only this segment makes."""
        return self.start + self.condition_frames

    @property
    def end(self) -> int:
        return self.first_new + self.new_frames


def plan_video(total_frames: int, max_frames: int, overlap: int, temporal_compression: int = 8) -> list[VideoSegment]:
    """Segments for `total_frames` frames: one pass when it fits, else a chain of conditioned passes.

    `overlap` (the condition frames of every later pass) must be k·8 + 1 and at most half a pass. New frames per
    pass are kept to multiples of 8, so every full pass is exactly `max_frames` long and nothing is made to be cut
    away, except in the last pass.
    """
    tc = temporal_compression
    if total_frames < 1:
        raise ValueError(f"total_frames must be ≥ 1 (got {total_frames})")
    if max_frames < 1 or (max_frames - 1) % tc:
        raise ValueError(f"max_frames must be k·{tc} + 1 (got {max_frames})")
    if overlap < 1 or (overlap - 1) % tc or 2 * overlap > max_frames:
        # every pass must add at least as many frames as the next one takes as its condition
        raise ValueError(f"overlap must be k·{tc} + 1 and at most half of max_frames (got {overlap})")
    if total_frames <= max_frames:
        return [VideoSegment(0, 0, 0, total_frames, model_frame_count(total_frames, tc))]
    step = (max_frames - overlap) // tc * tc  # new frames per full continuation pass
    segments = [VideoSegment(0, 0, 0, max_frames, max_frames)]
    made = max_frames
    while made < total_frames:
        new = min(step, total_frames - made)
        segments.append(
            VideoSegment(len(segments), made - overlap, overlap, new, model_frame_count(overlap + new, tc))
        )
        made += new
    return segments


@dataclass(frozen=True)
class MusicWindow:
    index: int
    start_frame: int  # codec frame (in the whole song) where this window's audio begins: its prompt, if any
    prompt_frames: int  # codes taken from the previous window (0 for the first)
    new_frames: int  # codec frames this window adds

    @property
    def first_new_frame(self) -> int:
        return self.start_frame + self.prompt_frames

    @property
    def end_frame(self) -> int:
        return self.first_new_frame + self.new_frames


def plan_music(total_samples: int, hop: int, max_window_frames: int, prompt_frames: int) -> list[MusicWindow]:
    """Windows covering `total_samples` samples (codec frames of `hop` samples; the last one is cut to the sample)."""
    if total_samples < 1:
        raise ValueError(f"total_samples must be ≥ 1 (got {total_samples})")
    if not 0 < prompt_frames < max_window_frames:
        raise ValueError(f"prompt_frames must be within 1..{max_window_frames - 1} (got {prompt_frames})")
    total_frames = math.ceil(total_samples / hop)
    first = min(total_frames, max_window_frames)
    windows = [MusicWindow(0, 0, 0, first)]
    made = first
    while made < total_frames:
        new = min(max_window_frames - prompt_frames, total_frames - made)
        windows.append(MusicWindow(len(windows), made - prompt_frames, prompt_frames, new))
        made += new
    return windows


@dataclass(frozen=True)
class SegmentProgress:
    """Progress of a long output made in several passes: steps within the current pass, and overall."""

    step: int  # steps done in the current segment
    total_steps: int  # steps of the current segment
    segment: int  # zero-based index of the current segment
    total_segments: int
    fraction: float  # of the whole output, 0..1, never decreasing


def segment_seed(seed: int, index: int) -> int:
    """The seed of pass `index` of a request seeded with `seed`: the request's own seed for the first pass (so a
    long output starts exactly as the one-pass output would), an independent one derived from both for the others."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def crossfade_gains(n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Gains (g_out, g_in), each of length n, for a cross-fade between two signals whose correlation is `rho`.

    A raised-cosine ramp r (0 → 1, sampled at the middle of each of the n steps) gives 1 - r and r, divided by
    sqrt((1-r)² + r² + 2ρ·r(1-r)), which keeps the expected power of the mix flat: for identical signals (ρ = 1) it is
    the equal-gain fade, for unrelated ones (ρ = 0) the equal-power fade, and in between it interpolates. Negative
    correlations are treated as 0.
    """
    rho = min(1.0, max(0.0, float(rho))) if math.isfinite(rho) else 0.0
    r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))
    g_out, g_in = 1.0 - r, r
    norm = np.sqrt(g_out * g_out + g_in * g_in + 2.0 * rho * g_out * g_in)
    return g_out / norm, g_in / norm


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays (1.0 when either is constant: nothing to tell apart)."""
    a64 = np.asarray(a, dtype=np.float64).ravel()
    b64 = np.asarray(b, dtype=np.float64).ravel()
    a64 = a64 - a64.mean()
    b64 = b64 - b64.mean()
    denom = math.sqrt(float(a64 @ a64) * float(b64 @ b64))
    return float(a64 @ b64) / denom if denom > 0 else 1.0


def music_join_starts(windows: list[MusicWindow], hop: int, hold: int) -> list[int]:
    """Sample (in the song) where each join's cross-fade begins: `hold` samples before the previous window's end."""
    return [window.first_new_frame * hop - hold for window in windows[1:]]


def video_seam_starts(segments: list[VideoSegment], blend: int) -> list[int]:
    """Frame (in the video) where each seam's blend begins (with blend 0: the first frame of the new segment)."""
    return [segment.first_new - blend for segment in segments[1:]]
