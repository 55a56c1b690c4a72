"""The composer's streaming master: exact, deterministic, on target after AAC, smooth, and flat in memory."""

from __future__ import annotations

import numpy as np
import pytest

from tunereel.composer.audio import integrated_lufs, true_peak_dbtp
from tunereel.composer.audio import master_for_aac
from tunereel.composer.muxer import AudioSpec, aac_round_trip
from tunereel.composer.audio import IncrementalLoudness, StreamingMaster

RATE = 32000
MONO = AudioSpec(RATE, 1)


def music_like(seconds: float, seed: int = 0, jump_db: float = 0.0, channels: int = 1) -> np.ndarray:
    """Noise plus a pulsing tone (~ -20 dBFS), optionally louder from half-way."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = rng.standard_normal((n, channels)) * 0.05
    x += (0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t)))[:, None]
    x[n // 2 :] *= 10 ** (jump_db / 20)
    return x.astype(np.float32)


def run(master: StreamingMaster, pcm: np.ndarray, chunk: int) -> tuple[np.ndarray, list[int]]:
    out, lags = [], []
    for start in range(0, len(pcm), chunk):
        out += master.push(pcm[start : start + chunk])
        lags.append(master.received - master.released)
    out += master.finish()
    return np.concatenate(out), lags


def test_incremental_loudness_matches_the_whole_clip_meter():
    x = music_like(37.3, seed=3, channels=2)
    meter = IncrementalLoudness(RATE, 2)
    for start in range(0, len(x), 7777):
        meter.push(x[start : start + 7777])
    assert meter.integrated() == pytest.approx(integrated_lufs(x, RATE), abs=0.01)
    assert meter.integrated(10 * RATE) == pytest.approx(integrated_lufs(x[: 10 * RATE], RATE), abs=0.01)


@pytest.mark.parametrize("jump_db", [0.0, 6.0])
def test_long_song_is_on_target_after_aac_and_flat_in_memory(jump_db):
    x = music_like(90, seed=1, jump_db=jump_db)
    master = StreamingMaster(MONO, len(x))
    y, lags = run(master, x, RATE)
    assert y.shape == x.shape and y.dtype == np.float32
    decoded = aac_round_trip(y, MONO)
    loudness, peak = integrated_lufs(decoded, RATE), true_peak_dbtp(decoded, RATE)
    print(f"\n+{jump_db:g} dB half-way: {loudness:.2f} LUFS, {peak:.2f} dBTP after AAC")
    assert loudness == pytest.approx(-14.0, abs=0.5 if jump_db == 0 else 1.0)
    assert peak <= -1.0
    # never more than the calibration audio waits (20 s), and after it only a block and its look-ahead
    assert max(lags) <= 21 * RATE and max(lags[25:]) <= 2 * RATE
    # the gain glides: at most 0.25 dB per 1 s block, no step
    gains = [g for _, g in master.gain_trace]
    assert max(abs(b - a) for a, b in zip(gains, gains[1:])) <= 0.25 + 1e-9
    # the fade-out: the last samples are silent
    assert np.abs(y[-10:]).max() < 1e-3


def test_output_does_not_depend_on_how_the_audio_arrives():
    x = music_like(45, seed=2)
    a, _ = run(StreamingMaster(MONO, len(x)), x, RATE)
    b, _ = run(StreamingMaster(MONO, len(x)), x, 12345)
    assert np.array_equal(a, b)


def test_short_clips_are_mastered_whole_as_before():
    x = music_like(12, seed=4)
    y, lags = run(StreamingMaster(MONO, len(x)), x, RATE)
    assert np.array_equal(y, master_for_aac(x, MONO))
    assert lags[-1] == len(x)


def test_silence_and_wrong_lengths():
    silent = np.zeros((40 * RATE, 1), np.float32)
    y, _ = run(StreamingMaster(MONO, len(silent)), silent, RATE)
    assert y.shape == silent.shape and not y.any()
    master = StreamingMaster(MONO, 100)
    with pytest.raises(ValueError, match="more audio"):
        master.push(np.zeros((101, 1), np.float32))
    with pytest.raises(ValueError, match="ended after"):
        StreamingMaster(MONO, 100).finish()
