"""The look-ahead true-peak limiter, and the search for the pre-gain that brings limited audio to a loudness target.

The limiter runs at a control rate of one value per CONTROL_S (0.5 ms) block. Gain reduction (in dB) rises ahead of
each peak as an exponential with time constant ATTACK_S (the look-ahead) and decays after it with time constant
RELEASE_S (exponential release: a big reduction recovers faster in dB/s than a small one, which keeps heavily limited
material from being pinned at the ceiling). The control curve is then smoothed and linearly interpolated to the
sample rate, never dropping below the reduction that each block needs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from .meter import loudness_of

__all__ = ["Limiter", "search_pre_gain"]

CONTROL_S = 0.0005
ATTACK_S = 0.001
RELEASE_S = 0.100

LOUDNESS_TOLERANCE_LU = 0.2  # internal convergence target (the contract is +-0.5 LU)
MAX_PASSES = 8
MAX_STEP_DB = 24.0  # largest pre-gain change per pass (pathological clips: isolated clicks)


def _reduction_envelope(required_db: np.ndarray, tau_attack: float, tau_release: float) -> np.ndarray:
    """Gain reduction curve (dB, >= 0) with red[b] >= required_db[b] for every block b.

    red[b] = max_k required[k] * exp(-|b - k| / tau), tau = tau_release for k <= b (after a peak) and tau_attack for
    k >= b (look-ahead before a peak). In the log domain each half is a running maximum of a linear function,
    log red[b] = max_{k<=b}(log r[k] + k/tau) - b/tau, so it is computed with np.maximum.accumulate (no Python loop).
    """
    positive = required_db > 0.0
    if not positive.any():
        return np.zeros_like(required_db)
    log_r = np.full(required_db.shape, -np.inf)
    log_r[positive] = np.log(required_db[positive])
    k = np.arange(required_db.shape[0], dtype=np.float64)
    release = np.exp(np.maximum.accumulate(log_r + k / tau_release) - k / tau_release)
    attack = np.exp(np.maximum.accumulate((log_r - k / tau_attack)[::-1])[::-1] + k / tau_attack)
    red = np.maximum(release, attack)
    # Round the corners (centred max then centred mean of the same width keeps red >= its input), then widen by one
    # block each side so that linear interpolation between block centres never dips below a block's requirement.
    red = uniform_filter1d(maximum_filter1d(red, 3, mode="nearest"), 3, mode="nearest")
    return maximum_filter1d(red, 3, mode="nearest")


class Limiter:
    """Look-ahead true-peak limiter for one clip: `gain_db(pre_gain_db)` -> per-sample total gain in dB."""

    def __init__(self, peak_env: np.ndarray, sample_rate: int, ceiling_db: float) -> None:
        n = peak_env.shape[0]
        self.n = n
        self.ceiling_db = ceiling_db
        self.block = max(1, int(round(CONTROL_S * sample_rate)))
        # an inter-sample peak between n and n+1 depends on both neighbours' gain
        env = np.maximum(peak_env, np.concatenate(([0.0], peak_env[:-1])))
        blocks = -(-n // self.block)
        padded = np.zeros(blocks * self.block)
        padded[:n] = env
        with np.errstate(divide="ignore"):
            self.block_peak_db = 20.0 * np.log10(padded.reshape(blocks, self.block).max(axis=1))
        self.centres = (np.arange(blocks) + 0.5) * self.block - 0.5
        self.tau_attack = ATTACK_S * sample_rate / self.block
        self.tau_release = RELEASE_S * sample_rate / self.block

    def gain_db(self, pre_gain_db: float) -> np.ndarray | float:
        required = self.block_peak_db + (pre_gain_db - self.ceiling_db)
        if not np.any(required > 0.0):
            return pre_gain_db  # nothing to limit: a constant gain
        red = _reduction_envelope(required, self.tau_attack, self.tau_release)
        return pre_gain_db - np.interp(np.arange(self.n, dtype=np.float64), self.centres, red)


def search_pre_gain(
    x: np.ndarray, sample_rate: int, limiter: Limiter, loudness: float, target_lufs: float
) -> tuple[float, np.ndarray]:
    """The pre-gain (dB) whose output of `x` through `limiter` has `target_lufs` loudness, and that output.

    loudness(pre_gain) is monotone with slope <= 1 (1 while nothing is limited), so start with the plain gain
    (`target_lufs - loudness`, the input's own loudness) and refine with the secant method, for a few passes.
    """
    tried: list[tuple[float, float]] = []
    pre_gain = target_lufs - loudness
    y = x
    for _ in range(MAX_PASSES):
        total = limiter.gain_db(pre_gain)
        if isinstance(total, float):
            y = x * 10.0 ** (total / 20.0)
        else:
            y = x * np.power(10.0, total / 20.0)[:, None]
        out = loudness_of(y, sample_rate)
        if out == -math.inf or abs(out - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            break
        tried.append((pre_gain, out))
        slope = 1.0
        if len(tried) >= 2:
            (g0, l0), (g1, l1) = tried[-2], tried[-1]
            if g1 != g0:
                slope = min(1.0, max(0.05, (l1 - l0) / (g1 - g0)))
        pre_gain += min((target_lufs - out) / slope, MAX_STEP_DB)
    return pre_gain, y
