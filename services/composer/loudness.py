"""Loudness measurement and mastering for the final mix (pure numpy / scipy / pyloudnorm, no FFmpeg).

Output target (design.md, "Output"): integrated loudness -14 LUFS (ITU-R BS.1770 / EBU R128 gating, measured with
pyloudnorm) and true peak <= -1 dBTP. `master()` gets there with gain plus a look-ahead true-peak limiter and leaves
extra headroom (0.5 dB by default) for the AAC encoder, whose quantisation noise raises the peak a little.

All functions take PCM shaped (samples, channels) (a 1-D array is treated as mono) in any float dtype; `master()`
returns float32 of the same shape.

Edge cases, by design:
- NaN or inf anywhere in the input -> ValueError (the caller has a bug upstream; we never "master" garbage).
- Digital silence (or anything below the -70 LUFS absolute gate) -> integrated loudness is -inf; `master()` applies
  the fade and otherwise returns the signal unchanged (no gain can make silence -14 LUFS).
- Clips shorter than one 400 ms gating block: BS.1770 integrated loudness is undefined there (pyloudnorm raises). We
  fall back to the *ungated* K-weighted loudness of the whole clip, i.e. treat the clip as a single block (still -inf
  below the -70 LUFS absolute gate). `master()` uses that estimate the same way as the gated value.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyloudnorm
from pyloudnorm.iirfilter import IIRfilter
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

__all__ = ["integrated_lufs", "true_peak_dbtp", "master"]

OVERSAMPLE = 4
_BLOCK_S = 0.400  # BS.1770 gating block
_ABSOLUTE_GATE_LUFS = -70.0
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 weights for L, R, C, Ls, Rs
_OS_CHUNK = 1 << 16  # samples per chunk for the oversampled peak scan (bounds memory on long clips)
_OS_PAD = 64  # context samples either side of a chunk (resample_poly's filter spans ~10 input samples)

# Limiter ballistics. The limiter runs at a control rate of one value per _CONTROL_S (0.5 ms) block. Gain reduction
# (in dB) rises ahead of each peak as an exponential with time constant _ATTACK_S (the look-ahead) and decays after it
# with time constant _RELEASE_S (exponential release: a big reduction recovers faster in dB/s than a small one, which
# keeps heavily limited material from being pinned at the ceiling). The control curve is then smoothed and linearly
# interpolated to the sample rate, never dropping below the reduction that each block needs.
_CONTROL_S = 0.0005
_ATTACK_S = 0.001
_RELEASE_S = 0.100

_LOUDNESS_TOLERANCE_LU = 0.2  # internal convergence target (the contract is +-0.5 LU)
_MAX_PASSES = 8
_MAX_STEP_DB = 24.0  # largest pre-gain change per pass (pathological clips: isolated clicks)


# ----------------------------------------------------------------------------------------------------------- helpers
def _as_2d(pcm: np.ndarray, name: str = "pcm") -> np.ndarray:
    """Validate and return a float64 (samples, channels) view/copy."""
    if not isinstance(pcm, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(pcm).__name__}")
    if pcm.ndim == 1:
        pcm = pcm[:, None]
    if pcm.ndim != 2:
        raise ValueError(f"{name} must have shape (samples, channels), got shape {pcm.shape}")
    if pcm.shape[1] < 1:
        raise ValueError(f"{name} has no channels (shape {pcm.shape})")
    if not np.issubdtype(pcm.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {pcm.dtype}")
    x = np.asarray(pcm, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); refusing to measure or master it")
    return x


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def _peak_envelope(x: np.ndarray) -> np.ndarray:
    """Per input sample n: the largest |value| over all channels of the 4x oversampled signal between samples
    n and n+1 (and of the sample itself). Shape (samples,), float64. Computed in chunks to bound memory."""
    n = x.shape[0]
    env = np.empty(n, dtype=np.float64)
    for start in range(0, n, _OS_CHUNK):
        stop = min(n, start + _OS_CHUNK)
        lo, hi = max(0, start - _OS_PAD), min(n, stop + _OS_PAD)
        # float32 is plenty for a peak reading and about twice as fast as float64
        up = resample_poly(x[lo:hi].astype(np.float32), OVERSAMPLE, 1, axis=0)
        up = np.abs(up[(start - lo) * OVERSAMPLE:(stop - lo) * OVERSAMPLE])
        # strided maxima (phase by phase, then channel by channel) are much faster than a reshape + max(axis=...)
        peak = up[0::OVERSAMPLE]
        for phase in range(1, OVERSAMPLE):
            peak = np.maximum(peak, up[phase::OVERSAMPLE])
        chunk_env = peak[:, 0]
        for ch in range(1, peak.shape[1]):
            chunk_env = np.maximum(chunk_env, peak[:, ch])
        env[start:stop] = chunk_env
    np.maximum(env, np.abs(x).max(axis=1), out=env)
    return env


def _kweighted_ungated_lufs(x: np.ndarray, sample_rate: int) -> float:
    """Loudness of the whole clip as one block (K-weighted mean square, no gating). For clips < 400 ms."""
    shelf = IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sample_rate, "high_shelf")
    highpass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    power = 0.0
    for ch in range(x.shape[1]):
        y = highpass.apply_filter(shelf.apply_filter(x[:, ch]))
        power += _CHANNEL_GAINS[min(ch, len(_CHANNEL_GAINS) - 1)] * float(np.mean(np.square(y)))
    if power <= 0.0:
        return -math.inf
    lufs = -0.691 + 10.0 * math.log10(power)
    return lufs if lufs >= _ABSOLUTE_GATE_LUFS else -math.inf


def _lufs(x: np.ndarray, sample_rate: int) -> float:
    if x.shape[0] == 0 or not np.any(x):
        return -math.inf
    if x.shape[1] > len(_CHANNEL_GAINS):
        raise ValueError(f"at most {len(_CHANNEL_GAINS)} channels are supported, got {x.shape[1]}")
    if x.shape[0] < _BLOCK_S * sample_rate:
        return _kweighted_ungated_lufs(x, sample_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))
    if math.isnan(value) or value < _ABSOLUTE_GATE_LUFS:
        return -math.inf
    return value


# ------------------------------------------------------------------------------------------------------ public API
def integrated_lufs(pcm: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (BS.1770-4 gating, pyloudnorm's Meter). -inf for silence.

    Clips shorter than one 400 ms block get the ungated K-weighted loudness of the whole clip instead (see module
    docstring). Raises ValueError for NaN/inf or a malformed array.
    """
    _check_rate(sample_rate)
    return _lufs(_as_2d(pcm), int(sample_rate))


def true_peak_dbtp(pcm: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP: the largest absolute value of the 4x oversampled signal (scipy.signal.resample_poly),
    over all channels. -inf for silence or an empty array."""
    _check_rate(sample_rate)
    x = _as_2d(pcm)
    if x.shape[0] == 0:
        return -math.inf
    return _db(float(_peak_envelope(x).max()))


def _fade_out(x: np.ndarray, sample_rate: int, fade_out_s: float) -> np.ndarray:
    n = x.shape[0]
    length = int(round(min(max(fade_out_s, 0.0) * sample_rate, n / 4)))
    if length < 1:
        return x
    ramp = 0.5 * (1.0 + np.cos(np.linspace(0.0, math.pi, length)))  # 1 -> 0, raised cosine
    x = x.copy()
    x[n - length:] *= ramp[:, None]
    return x


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


class _Limiter:
    """Look-ahead true-peak limiter for one clip: `gain_db(pre_gain_db)` -> per-sample total gain in dB."""

    def __init__(self, peak_env: np.ndarray, sample_rate: int, ceiling_db: float) -> None:
        n = peak_env.shape[0]
        self.n = n
        self.ceiling_db = ceiling_db
        self.block = max(1, int(round(_CONTROL_S * sample_rate)))
        # an inter-sample peak between n and n+1 depends on both neighbours' gain
        env = np.maximum(peak_env, np.concatenate(([0.0], peak_env[:-1])))
        blocks = -(-n // self.block)
        padded = np.zeros(blocks * self.block)
        padded[:n] = env
        with np.errstate(divide="ignore"):
            self.block_peak_db = 20.0 * np.log10(padded.reshape(blocks, self.block).max(axis=1))
        self.centres = (np.arange(blocks) + 0.5) * self.block - 0.5
        self.tau_attack = _ATTACK_S * sample_rate / self.block
        self.tau_release = _RELEASE_S * sample_rate / self.block

    def gain_db(self, pre_gain_db: float) -> np.ndarray | float:
        required = self.block_peak_db + (pre_gain_db - self.ceiling_db)
        if not np.any(required > 0.0):
            return pre_gain_db  # nothing to limit: a constant gain
        red = _reduction_envelope(required, self.tau_attack, self.tau_release)
        return pre_gain_db - np.interp(np.arange(self.n, dtype=np.float64), self.centres, red)


def search_pre_gain(
    x: np.ndarray, sample_rate: int, limiter: _Limiter, loudness: float, target_lufs: float
) -> tuple[float, np.ndarray]:
    """The pre-gain (dB) whose output of `x` through `limiter` has `target_lufs` loudness, and that output.

    loudness(pre_gain) is monotone with slope <= 1 (1 while nothing is limited), so start with the plain gain
    (`target_lufs - loudness`, the input's own loudness) and refine with the secant method, for a few passes.
    """
    tried: list[tuple[float, float]] = []
    pre_gain = target_lufs - loudness
    y = x
    for _ in range(_MAX_PASSES):
        total = limiter.gain_db(pre_gain)
        if isinstance(total, float):
            y = x * 10.0 ** (total / 20.0)
        else:
            y = x * np.power(10.0, total / 20.0)[:, None]
        out = _lufs(y, sample_rate)
        if out == -math.inf or abs(out - target_lufs) <= _LOUDNESS_TOLERANCE_LU:
            break
        tried.append((pre_gain, out))
        slope = 1.0
        if len(tried) >= 2:
            (g0, l0), (g1, l1) = tried[-2], tried[-1]
            if g1 != g0:
                slope = min(1.0, max(0.05, (l1 - l0) / (g1 - g0)))
        pre_gain += min((target_lufs - out) / slope, _MAX_STEP_DB)
    return pre_gain, y


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
    _check_rate(sample_rate)
    sample_rate = int(sample_rate)
    for name, value in (("target_lufs", target_lufs), ("max_true_peak_dbtp", max_true_peak_dbtp),
                        ("fade_out_s", fade_out_s), ("headroom_db", headroom_db)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    shape = pcm.shape if isinstance(pcm, np.ndarray) else None
    x = _fade_out(_as_2d(pcm), sample_rate, fade_out_s)
    if x.shape[0] == 0:
        return x.astype(np.float32).reshape(shape)

    loudness = _lufs(x, sample_rate)
    if loudness == -math.inf:
        return x.astype(np.float32).reshape(shape)

    ceiling_db = max_true_peak_dbtp - max(headroom_db, 0.0)
    limiter = _Limiter(_peak_envelope(x), sample_rate, ceiling_db)

    _, y = search_pre_gain(x, sample_rate, limiter, loudness, target_lufs)

    # Guarantee the ceiling on the real (not estimated) true peak.
    peak = true_peak_dbtp(y, sample_rate)
    if peak > ceiling_db:
        y = y * 10.0 ** ((ceiling_db - peak) / 20.0)
    return y.astype(np.float32).reshape(shape)
