"""Measuring audio: BS.1770 integrated loudness (whole clips and streams fed in pieces) and true peak.

Output target (design.md, "Output"): integrated loudness -14 LUFS (ITU-R BS.1770 / EBU R128 gating, measured with
pyloudnorm) and true peak <= -1 dBTP.

All functions take PCM shaped (samples, channels) (a 1-D array is treated as mono) in any float dtype.

Edge cases, by design:
- NaN or inf anywhere in the input -> ValueError (the caller has a bug upstream; we never "master" garbage).
- Digital silence (or anything below the -70 LUFS absolute gate) -> integrated loudness is -inf.
- Clips shorter than one 400 ms gating block: BS.1770 integrated loudness is undefined there (pyloudnorm raises). We
  fall back to the *ungated* K-weighted loudness of the whole clip, i.e. treat the clip as a single block (still -inf
  below the -70 LUFS absolute gate).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyloudnorm
from pyloudnorm.iirfilter import IIRfilter
from scipy.signal import lfilter, lfilter_zi, resample_poly

__all__ = [
    "CHANNEL_GAINS",
    "channel_gain",
    "IncrementalLoudness",
    "OVERSAMPLE",
    "checked_pcm",
    "check_rate",
    "integrated_lufs",
    "k_weighting",
    "loudness_of",
    "peak_envelope",
    "true_peak_dbtp",
]

OVERSAMPLE = 4
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 weights for L, R, C, Ls, Rs
BLOCK_S = 0.400  # BS.1770 gating block
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_OS_CHUNK = 1 << 16  # samples per chunk for the oversampled peak scan (bounds memory on long clips)
_OS_PAD = 64  # context samples either side of a chunk (resample_poly's filter spans ~10 input samples)


def k_weighting(sample_rate: int) -> tuple[IIRfilter, IIRfilter]:
    """BS.1770's K-weighting as pyloudnorm builds it: a high shelf, then a high pass (applied in that order)."""
    shelf = IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sample_rate, "high_shelf")
    highpass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return shelf, highpass


def channel_gain(channel: int) -> float:
    return CHANNEL_GAINS[min(channel, len(CHANNEL_GAINS) - 1)]


def checked_pcm(pcm: np.ndarray, name: str = "pcm") -> np.ndarray:
    """Validate and return a float64 (samples, channels) view/copy; ValueError for NaN/inf or a bad shape."""
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


def check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def peak_envelope(x: np.ndarray) -> np.ndarray:
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
    shelf, highpass = k_weighting(sample_rate)
    power = 0.0
    for ch in range(x.shape[1]):
        y = highpass.apply_filter(shelf.apply_filter(x[:, ch]))
        power += channel_gain(ch) * float(np.mean(np.square(y)))
    if power <= 0.0:
        return -math.inf
    lufs = -0.691 + 10.0 * math.log10(power)
    return lufs if lufs >= ABSOLUTE_GATE_LUFS else -math.inf


def loudness_of(x: np.ndarray, sample_rate: int) -> float:
    """integrated_lufs without the checks, for arrays that `checked_pcm` already returned (the mastering loops)."""
    if x.shape[0] == 0 or not np.any(x):
        return -math.inf
    if x.shape[1] > len(CHANNEL_GAINS):
        raise ValueError(f"at most {len(CHANNEL_GAINS)} channels are supported, got {x.shape[1]}")
    if x.shape[0] < BLOCK_S * sample_rate:
        return _kweighted_ungated_lufs(x, sample_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))
    if math.isnan(value) or value < ABSOLUTE_GATE_LUFS:
        return -math.inf
    return value


def integrated_lufs(pcm: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (BS.1770-4 gating, pyloudnorm's Meter). -inf for silence.

    Clips shorter than one 400 ms block get the ungated K-weighted loudness of the whole clip instead (see module
    docstring). Raises ValueError for NaN/inf or a malformed array.
    """
    check_rate(sample_rate)
    return loudness_of(checked_pcm(pcm), int(sample_rate))


def true_peak_dbtp(pcm: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP: the largest absolute value of the 4x oversampled signal (scipy.signal.resample_poly),
    over all channels. -inf for silence or an empty array."""
    check_rate(sample_rate)
    x = checked_pcm(pcm)
    if x.shape[0] == 0:
        return -math.inf
    return _db(float(peak_envelope(x).max()))


class IncrementalLoudness:
    """BS.1770 gated loudness of a stream, fed in pieces: K-weighting with carried filter state, mean squares per
    100 ms step, 400 ms blocks with 75 % overlap (as pyloudnorm's Meter). Keeps one number per channel per 100 ms."""

    def __init__(self, sample_rate: int, channels: int):
        self.rate = sample_rate
        self.channels = channels
        self._filters = [(f.b, f.a) for f in k_weighting(sample_rate)]
        self._state = [[np.zeros(len(lfilter_zi(b, a))) for b, a in self._filters] for _ in range(channels)]
        self._gains = np.array([channel_gain(ch) for ch in range(channels)])
        self._step = 0.1 * sample_rate
        self._sums: list[np.ndarray] = []  # per finished 100 ms step: sum of squares per channel
        self._partial = np.zeros(channels)
        self._samples = 0

    @property
    def samples(self) -> int:
        return self._samples

    def push(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.float64).reshape(-1, self.channels)
        if x.shape[0] == 0:
            return
        weighted = np.empty_like(x)
        for ch in range(self.channels):
            y = x[:, ch]
            for i, (b, a) in enumerate(self._filters):
                y, self._state[ch][i] = lfilter(b, a, y, zi=self._state[ch][i])
            weighted[:, ch] = y
        squares = weighted * weighted
        start = self._samples
        pos = 0
        while pos < x.shape[0]:
            boundary = int((len(self._sums) + 1) * self._step)  # end of the current 100 ms step (as pyloudnorm)
            take = min(x.shape[0] - pos, boundary - (start + pos))
            self._partial += squares[pos : pos + take].sum(axis=0)
            pos += take
            if start + pos == boundary:
                self._sums.append(self._partial)
                self._partial = np.zeros(self.channels)
        self._samples += x.shape[0]

    def integrated(self, upto: int | None = None) -> float:
        """Gated loudness (LUFS) of the stream's first `upto` samples (all so far by default), counting whole
        400 ms blocks only; -inf while there is none or all are below the absolute gate."""
        steps = len(self._sums) if upto is None else min(len(self._sums), int(upto // self._step))
        blocks = steps - 3
        if blocks < 1:
            return -math.inf
        sums = np.array(self._sums[:steps])  # (steps, channels)
        z = (sums[:-3] + sums[1:-2] + sums[2:-1] + sums[3:]) / (4 * self._step)  # (blocks, channels)
        power = z @ self._gains
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10.0 * np.log10(power)
        gated = loud >= ABSOLUTE_GATE_LUFS
        if not gated.any():
            return -math.inf
        relative = -0.691 + 10.0 * math.log10(float(power[gated].mean())) + RELATIVE_GATE_LU
        gated &= loud > relative
        return -0.691 + 10.0 * math.log10(float(power[gated].mean()))
