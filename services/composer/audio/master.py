"""Mastering a whole clip: fade out, normalise loudness, limit true peaks, and verify it all through AAC.

`master()` gets to -14 LUFS / <= -1 dBTP with gain plus the look-ahead true-peak limiter and leaves extra headroom
(0.5 dB by default) for the AAC encoder; `master_for_aac()` checks the result through the encoder the muxer uses
(headroom.fit_through_aac) and re-masters with more headroom when the codec pushes the peak over.

Silence (below the -70 LUFS gate) gets the fade and is otherwise returned unchanged: no gain can make silence
-14 LUFS. NaN or inf input raises ValueError.
"""

from __future__ import annotations

import math

import numpy as np

from ..muxer import AudioSpec, MuxError, check_pcm
from .headroom import OVERSHOOT_MARGIN_DB, fit_through_aac
from .limiter import Limiter, search_pre_gain
from .meter import check_rate, checked_pcm, loudness_of, peak_envelope, true_peak_dbtp

__all__ = ["fade_out", "master", "master_for_aac"]


def fade_out(x: np.ndarray, sample_rate: int, fade_out_s: float) -> np.ndarray:
    """A raised-cosine fade over min(fade_out_s, a quarter of the clip) at the end of `x` (a copy)."""
    n = x.shape[0]
    length = int(round(min(max(fade_out_s, 0.0) * sample_rate, n / 4)))
    if length < 1:
        return x
    ramp = 0.5 * (1.0 + np.cos(np.linspace(0.0, math.pi, length)))  # 1 -> 0, raised cosine
    x = x.copy()
    x[n - length:] *= ramp[:, None]
    return x


def master(
    pcm: np.ndarray,
    sample_rate: int,
    *,
    target_lufs: float = -14.0,
    max_true_peak_dbtp: float = -1.0,
    fade_out_s: float = 0.5,
    headroom_db: float = 0.5,
) -> np.ndarray:
    """Master a clip for delivery: fade out, normalise loudness, limit true peaks.

    1. Raised-cosine fade-out over min(fade_out_s, a quarter of the clip).
    2. Gain to `target_lufs` integrated loudness.
    3. Look-ahead true-peak limiter (gain reduction from the 4x oversampled peak envelope, smooth exponential attack
       and release; not a clipper) with its ceiling at `max_true_peak_dbtp - headroom_db` (-1.5 dBTP by default) so
       the peak still holds after AAC encoding.
    4. Limiting lowers the loudness, so re-measure and re-apply gain + limiter (a few passes) until both hold:
       loudness within +-0.2 LU of the target (contract: +-0.5) and true peak <= the ceiling.
    A final true-peak check scales the result down if it were ever above `max_true_peak_dbtp - headroom_db`.
    For signals whose loudness cannot reach the target under the ceiling (e.g. isolated clicks) the peak limit wins.

    Silence is returned faded (unchanged); see the module docstring for short clips and invalid input.
    Returns float32 with the input's shape.
    """
    check_rate(sample_rate)
    sample_rate = int(sample_rate)
    for name, value in (("target_lufs", target_lufs), ("max_true_peak_dbtp", max_true_peak_dbtp),
                        ("fade_out_s", fade_out_s), ("headroom_db", headroom_db)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    shape = pcm.shape if isinstance(pcm, np.ndarray) else None
    x = fade_out(checked_pcm(pcm), sample_rate, fade_out_s)
    if x.shape[0] == 0:
        return x.astype(np.float32).reshape(shape)

    loudness = loudness_of(x, sample_rate)
    if loudness == -math.inf:
        return x.astype(np.float32).reshape(shape)

    ceiling_db = max_true_peak_dbtp - max(headroom_db, 0.0)
    limiter = Limiter(peak_envelope(x), sample_rate, ceiling_db)

    _, y = search_pre_gain(x, sample_rate, limiter, loudness, target_lufs)

    # Guarantee the ceiling on the real (not estimated) true peak.
    peak = true_peak_dbtp(y, sample_rate)
    if peak > ceiling_db:
        y = y * 10.0 ** ((ceiling_db - peak) / 20.0)
    return y.astype(np.float32).reshape(shape)


def master_for_aac(
    pcm: np.ndarray,
    audio: AudioSpec,
    *,
    target_lufs: float = -14.0,
    max_true_peak_dbtp: float = -1.0,
    fade_out_s: float = 0.5,
    max_attempts: int = 4,
) -> np.ndarray:
    """`master`, verified through the AAC encoder the muxer uses (see headroom.py). If no attempt holds both the
    peak and the loudness, the last one that held the peak is used; failing that, the last one scaled down by the
    remaining overshoot (AAC is close enough to linear for this). Returns float32 (samples, channels)."""
    try:
        pcm = check_pcm(pcm, audio)
    except MuxError as error:
        raise ValueError(str(error)) from None

    def render(headroom_db: float, target: float) -> np.ndarray:
        return master(pcm, audio.sample_rate, target_lufs=target, max_true_peak_dbtp=max_true_peak_dbtp,
                      fade_out_s=fade_out_s, headroom_db=headroom_db)  # fmt: skip

    fit = fit_through_aac(render, audio, target_lufs=target_lufs, max_true_peak_dbtp=max_true_peak_dbtp,
                          loudness_tolerance_lu=0.5, attempts=max_attempts)  # fmt: skip
    if fit.fits:
        return fit.output
    if fit.within_peak is not None:
        return fit.within_peak
    return (fit.output * 10.0 ** ((max_true_peak_dbtp - OVERSHOOT_MARGIN_DB - fit.peak_dbtp) / 20.0)).astype(np.float32)
