"""Music for the analysis tests and bench/analysis.py: the annotated recordings in tests/data/analysis (see its README)
and a song built here on a known beat grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "analysis"
ANNOTATED = ("ballroom_Media-105901", "hainsworth_001")


@dataclass(frozen=True)
class AnnotatedMusic:
    name: str
    pcm: np.ndarray  # float32 mono
    sample_rate: int
    beats: np.ndarray  # annotated beat times, seconds
    positions: np.ndarray  # annotated position in the bar, 1 = downbeat

    @property
    def downbeats(self) -> np.ndarray:
        return self.beats[self.positions == 1]


def load_annotated(name: str) -> AnnotatedMusic:
    with av.open(str(DATA / f"{name}.flac")) as container:
        stream = container.streams.audio[0]
        pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
        rate = stream.rate
    annotations = np.loadtxt(DATA / f"{name}.beats", ndmin=2)
    return AnnotatedMusic(name, (pcm / 32768.0).astype(np.float32), rate, annotations[:, 0], annotations[:, 1].astype(int))


@dataclass(frozen=True)
class GridSong:
    pcm: np.ndarray  # float32 mono
    sample_rate: int
    beats: np.ndarray  # the grid, seconds
    positions: np.ndarray  # 1 = downbeat
    section_start: float  # the downbeat where the second section (other key, brighter sound, hi-hats) begins

    @property
    def downbeats(self) -> np.ndarray:
        return self.beats[self.positions == 1]


def grid_song(rate: int = 32000, seed: int = 0) -> GridSong:
    """A 4/4 song on a known grid: a one-beat pickup at 0.6 s, bars 1-6 at 100 bpm, a ramp to 130 bpm over bars 7-10,
    130 bpm to bar 16. Clicks (accented, higher on downbeats), a kick on beats 1 and 3, a chord and a bass note per
    bar. From bar 9 on, another key, brighter chords and hi-hat eighths: a second section."""
    rng = np.random.default_rng(seed)
    bars = 16
    tempi = [100.0]  # the pickup's interval
    for bar in range(1, bars + 1):
        for beat in range(4):
            if bar <= 6:
                tempi.append(100.0)
            elif bar <= 10:
                tempi.append(100.0 + 30.0 * ((bar - 7) * 4 + beat + 1) / 16)
            else:
                tempi.append(130.0)
    beats = 0.6 + np.concatenate([[0.0], np.cumsum(60.0 / np.array(tempi))])[:-1]
    positions = np.array([4] + [1, 2, 3, 4] * bars)
    duration = beats[-1] + 60.0 / 130.0 + 1.0
    n = int(duration * rate)
    x = np.zeros(n)

    def add(at: float, signal: np.ndarray) -> None:
        i = int(round(at * rate))
        m = min(len(signal), n - i)
        x[i : i + m] += signal[:m]

    def tone(freq: float, seconds: float, partials: int, decay: float) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        return sum(np.sin(2 * np.pi * freq * k * t) / k**1.5 for k in range(1, partials + 1)) * np.exp(-t * decay)

    def hz(midi: int) -> float:
        return 440.0 * 2 ** ((midi - 69) / 12)

    progression_a = [[60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62]]
    progression_b = [[64, 68, 71], [61, 64, 68], [57, 61, 64], [59, 63, 66]]
    downbeats = beats[positions == 1]
    ends = np.append(downbeats[1:], duration - 0.5)
    for bar, (start, end) in enumerate(zip(downbeats, ends, strict=True)):
        second = bar >= 8
        chord = (progression_b if second else progression_a)[bar % 4]
        for note in chord:
            add(start, 0.08 * tone(hz(note), end - start, 8 if second else 2, 1.0))
        add(start, 0.25 * tone(hz(chord[0] - 24), end - start, 3, 2.0))
        if second:
            hat = rng.standard_normal(int(0.03 * rate)) * np.exp(-np.arange(int(0.03 * rate)) / rate * 100)
            for k in range(8):
                add(start + k * (end - start) / 8, 0.05 * hat)
    for time, position in zip(beats, positions, strict=True):
        add(time, (0.5 if position == 1 else 0.2) * tone(1600.0 if position == 1 else 1000.0, 0.04, 1, 80.0))
        if position in (1, 3):
            add(time, 0.5 * tone(55.0, 0.15, 1, 25.0))
    x = 0.8 * x / np.abs(x).max()
    return GridSong(x.astype(np.float32), rate, beats, positions, float(downbeats[8]))
