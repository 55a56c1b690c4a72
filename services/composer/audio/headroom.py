"""AAC headroom: the one calibration routine both masters share (whole-file and streaming).

AAC adds quantisation noise and (at 44.1/48 kHz) a low-pass, so the decoded true peak can exceed the PCM's by more
than the limiter's default 0.5 dB headroom on noise-like material (measured up to ~3.5 dB for limited white-noise
bursts in 48 kHz stereo; music sourced at 32 kHz mono stays within ~0.3 dB). `fit_through_aac` renders the audio with
a headroom and a loudness target, round-trips it through the encoder the muxer uses, and while the decoded true peak
is above the ceiling (or the decoded loudness off the target) grows the headroom by the overshoot and nudges the
target by what the codec lost, up to a few attempts. Each attempt costs one AAC encode and decode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..muxer import AudioSpec, aac_round_trip
from .meter import integrated_lufs, true_peak_dbtp

__all__ = ["AacFit", "fit_through_aac", "INITIAL_HEADROOM_DB"]

INITIAL_HEADROOM_DB = 0.5
OVERSHOOT_MARGIN_DB = 0.2  # added to the measured overshoot when the headroom grows


@dataclass(frozen=True)
class AacFit:
    output: np.ndarray  # the last rendering
    headroom_db: float  # the headroom to render with from now on (grown after the last overshoot, if any)
    target_lufs: float  # the loudness target to render with from now on
    fits: bool  # the last rendering holds both the peak and the loudness after AAC (or is silence)
    peak_dbtp: float  # the decoded true peak of the last rendering
    within_peak: np.ndarray | None  # the last rendering whose decoded peak held, if any


def fit_through_aac(
    render: Callable[[float, float], np.ndarray],
    audio: AudioSpec,
    *,
    target_lufs: float,
    max_true_peak_dbtp: float,
    loudness_tolerance_lu: float,
    attempts: int = 4,
) -> AacFit:
    """Call `render(headroom_db, target_lufs)` until its output, decoded from AAC, holds the peak and the loudness."""
    headroom, target = INITIAL_HEADROOM_DB, target_lufs
    within_peak: np.ndarray | None = None
    y, peak = np.zeros((0, audio.channels), np.float32), -math.inf
    for _ in range(max(1, attempts)):
        y = render(headroom, target)
        decoded = aac_round_trip(y.astype(np.float32), audio)
        peak = true_peak_dbtp(decoded, audio.sample_rate)
        loud = integrated_lufs(decoded, audio.sample_rate)
        if peak == -math.inf or loud == -math.inf:  # silence (or below the -70 LUFS gate): nothing to verify
            return AacFit(y, headroom, target, True, peak, within_peak)
        loud_ok = abs(loud - target_lufs) <= loudness_tolerance_lu
        if peak <= max_true_peak_dbtp:
            if loud_ok:
                return AacFit(y, headroom, target, True, peak, y)
            within_peak = y
        else:
            headroom += (peak - max_true_peak_dbtp) + OVERSHOOT_MARGIN_DB
        if not loud_ok:
            target += target_lufs - loud
    return AacFit(y, headroom, target, False, peak, within_peak)
