"""Loudness measurement and mastering (tunereel.composer.loudness): pure numpy/scipy/pyloudnorm, no FFmpeg."""

from __future__ import annotations


import numpy as np
import pytest

from tunereel.composer.audio import integrated_lufs, master, true_peak_dbtp

SR = 32000
TARGET = -14.0
CEILING = -1.0


def _t(seconds: float, sr: int = SR) -> np.ndarray:
    return np.arange(int(round(seconds * sr))) / sr


def noise(seconds=4.0, sr=SR, channels=1, scale=0.3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((int(seconds * sr), channels)) * scale).astype(np.float32)


def sine(seconds=4.0, sr=SR, freq=997.0, amp=0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * _t(seconds, sr)))[:, None].astype(np.float32)


def square(seconds=4.0, sr=SR, freq=220.0, amp=0.95) -> np.ndarray:
    """A loud, square-ish wave (tanh-saturated sine): crest factor near 0 dB, strong overshoot when band-limited."""
    return (amp * np.tanh(20 * np.sin(2 * np.pi * freq * _t(seconds, sr))))[:, None].astype(np.float32)


def drums(seconds=4.0, sr=SR, channels=1, seed=1) -> np.ndarray:
    """Quiet noise bed + loud decaying noise bursts 4x a second: peaky, so -14 LUFS needs real limiting."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = rng.standard_normal((n, channels)) * 0.01
    env = np.exp(-np.arange(int(0.08 * sr)) / (0.015 * sr))[:, None]
    for start in range(0, n - env.shape[0], sr // 4):
        x[start:start + env.shape[0]] += rng.standard_normal((env.shape[0], channels)) * 0.5 * env
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------------------ measuring
def test_integrated_lufs_of_a_reference_sine():
    # BS.1770: a 997 Hz sine at 0 dBFS peak in one channel reads -3.01 LUFS; at amplitude 0.5 it is 6.02 dB lower.
    assert integrated_lufs(sine(amp=0.5), SR) == pytest.approx(-9.03, abs=0.1)


def test_integrated_lufs_accepts_1d_and_stereo():
    x = sine(amp=0.5)
    assert integrated_lufs(x[:, 0], SR) == pytest.approx(integrated_lufs(x, SR))
    # the same signal in both channels is 3 dB louder
    assert integrated_lufs(np.repeat(x, 2, axis=1), SR) == pytest.approx(integrated_lufs(x, SR) + 3.01, abs=0.05)


def test_true_peak_sees_intersample_peaks():
    # a sine at fs/4 with a 45 degree phase: every sample sits at +-0.707 * amp, the waveform peaks at amp
    # (faded in/out: an abrupt start from silence has real inter-sample overshoot of its own)
    amp = 0.8
    n = np.arange(SR)
    ramp = np.minimum(1.0, np.minimum(n, n[::-1]) / 400)
    x = (ramp * amp * np.sin(2 * np.pi * n / 4 + np.pi / 4))[:, None].astype(np.float32)
    sample_peak_db = 20 * np.log10(np.abs(x).max())
    assert sample_peak_db == pytest.approx(20 * np.log10(amp) - 3.01, abs=0.05)
    assert true_peak_dbtp(x, SR) == pytest.approx(20 * np.log10(amp), abs=0.05)


@pytest.mark.parametrize("freq", [100.0, 1000.0, 5000.0, 9000.0, 13000.0, 15000.0])
def test_true_peak_accuracy_across_the_band(freq):
    # 4x oversampling reads band-limited peaks to within ~0.2 dB (low) anywhere up to 15 kHz at 32 kHz
    n = np.arange(SR // 4)
    ramp = np.minimum(1.0, np.minimum(n, n[::-1]) / 200)
    for phase in np.linspace(0, np.pi, 7):
        x = (ramp * 0.5 * np.sin(2 * np.pi * freq * n / SR + phase))[:, None]
        assert true_peak_dbtp(x, SR) == pytest.approx(20 * np.log10(0.5), abs=0.2)


def test_silence_measures_minus_inf():
    z = np.zeros((SR, 1), np.float32)
    assert integrated_lufs(z, SR) == -np.inf
    assert true_peak_dbtp(z, SR) == -np.inf


def test_short_clip_uses_ungated_estimate():
    x = sine(0.2, amp=0.5)  # shorter than one 400 ms gating block: pyloudnorm alone would raise
    assert integrated_lufs(x, SR) == pytest.approx(-9.03, abs=0.3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_a_clear_error(bad):
    x = sine(1.0)
    x[100, 0] = bad
    for fn in (integrated_lufs, true_peak_dbtp, master):
        with pytest.raises(ValueError, match="NaN/inf"):
            fn(x, SR)


def test_malformed_input_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        master(np.zeros((2, 3, 4), np.float32), SR)
    with pytest.raises(ValueError, match="float"):
        master(np.zeros((SR, 1), np.int16), SR)


# ------------------------------------------------------------------------------------------------------ mastering
@pytest.mark.parametrize(
    "make, sr",
    [
        (lambda: noise(), SR),
        (lambda: sine(amp=0.05), SR),  # quiet: needs +gain
        (lambda: square(), SR),  # loud: needs -gain
        (lambda: drums(), SR),  # peaky: needs the limiter
        (lambda: noise(sr=48000, channels=2, scale=0.8), 48000),
        (lambda: drums(sr=48000, channels=2), 48000),
    ],
    ids=["noise", "sine", "square", "drums", "noise-48k-stereo", "drums-48k-stereo"],
)
def test_master_hits_loudness_and_true_peak(make, sr):
    x = make()
    y = master(x, sr)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert integrated_lufs(y, sr) == pytest.approx(TARGET, abs=0.5)
    # the internal ceiling is -1.5 dBTP (0.5 dB headroom for AAC); -1 dBTP is the contract
    assert true_peak_dbtp(y, sr) <= CEILING - 0.45


def test_limiter_is_smooth_not_a_clipper():
    x = drums()
    y = master(x, SR, fade_out_s=0.0)
    body = np.abs(x[:, 0]) > 1e-3
    gain_db = 20 * np.log10(np.abs(y[body, 0]) / np.abs(x[body, 0]))
    idx = np.flatnonzero(body)
    adjacent = np.diff(idx) == 1
    steps = np.abs(np.diff(gain_db))[adjacent]
    assert gain_db.max() - gain_db.min() > 3.0  # it really limited
    # but the gain moves smoothly (the steepest part is the ~1 ms look-ahead attack) ...
    assert steps.max() < 1.0
    # ... whereas a clipper to the same peak jumps by many dB from one sample to the next
    scale = 10 ** ((integrated_lufs(y, SR) - integrated_lufs(x, SR)) / 20)
    clipped = np.clip(x * scale * 2, -np.abs(y).max(), np.abs(y).max())
    clip_gain_db = 20 * np.log10(np.abs(clipped[body, 0]) / np.abs(x[body, 0]))
    assert np.abs(np.diff(clip_gain_db))[adjacent].max() > 3.0
    # and no flat-topped runs at the ceiling
    peak = np.abs(y).max()
    assert np.count_nonzero(np.abs(y) >= peak * 0.9999) < 10


def test_master_fades_out():
    x = noise(4.0)
    y = master(x, SR, fade_out_s=0.5)
    tail = np.abs(y[-int(0.05 * SR):]).max()
    body = np.abs(y[: -int(0.5 * SR)]).max()
    assert tail < 0.2 * body
    assert abs(y[-1, 0]) < 1e-3
    # the fade is at most a quarter of a short clip: the first 3/4 of a 1 s clip are not faded
    z = sine(1.0, amp=0.3)
    w = master(z, SR, fade_out_s=0.5)
    ratio = w[: int(0.74 * SR), 0] / np.where(np.abs(z[: int(0.74 * SR), 0]) > 1e-6, z[: int(0.74 * SR), 0], 1)
    ok = np.abs(z[: int(0.74 * SR), 0]) > 1e-3
    assert np.ptp(ratio[ok]) < 1e-3


def test_master_silence_and_short_clips_do_not_crash():
    z = np.zeros((SR * 2, 1), np.float32)
    y = master(z, SR)
    assert y.dtype == np.float32 and not np.any(y)

    short = sine(0.2, amp=0.5)
    y = master(short, SR)
    assert y.shape == short.shape and np.isfinite(y).all()
    assert true_peak_dbtp(y, SR) <= CEILING
    assert integrated_lufs(y, SR) == pytest.approx(TARGET, abs=1.0)

    one = np.full((1, 1), 0.5, np.float32)
    assert master(one, SR).shape == (1, 1)
    assert master(np.zeros((0, 2), np.float32), SR).shape == (0, 2)


def test_master_accepts_1d_mono():
    x = noise()[:, 0]
    y = master(x, SR)
    assert y.shape == x.shape and y.dtype == np.float32


def test_master_holds_the_ceiling_over_five_minutes():
    # its speed is measured in bench/mux_encode.py (docs/benchmarks.md), not timed here
    rng = np.random.default_rng(3)
    n = 300 * SR
    x = (rng.standard_normal((n, 1)) * 0.1).astype(np.float32)
    x *= (1 + 0.8 * np.sin(2 * np.pi * 0.2 * np.arange(n) / SR))[:, None].astype(np.float32)
    y = master(x, SR)
    assert y.shape == x.shape
    assert true_peak_dbtp(y, SR) <= CEILING
