"""tunereel.analysis: beats, downbeats, tempo, sections and energy from PCM, offline and as the music arrives.

Real music: two annotated excerpts (tests/data/analysis/README.md), scored with mir_eval as in docs/benchmarks.md.
A song built here: a known 4/4 grid with a pickup, a tempo ramp and a second section."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from tests.analysis_media import ANNOTATED, grid_song, load_annotated
from tunereel.analysis import AnalysisConfig, AnalysisError, MusicAnalyser, Timeline, energy_curve

# Measured F-measures (docs/benchmarks.md, "Music analysis"): 1.00 beat and 1.00 downbeat on both excerpts; both are
# from datasets madmom's networks were trained on, so these guard against regressions, not claim generalisation.
MIN_BEAT_F = 0.90
MIN_DOWNBEAT_F = 0.90


@pytest.fixture(scope="module")
def analyser() -> MusicAnalyser:
    return MusicAnalyser()


@pytest.fixture(scope="module")
def song():
    return grid_song()


@pytest.fixture(scope="module")
def song_timeline(analyser, song) -> Timeline:
    return analyser.analyse(song.pcm, song.sample_rate)


@pytest.mark.parametrize("name", ANNOTATED)
def test_annotated_music_keeps_its_f_measures(analyser, name):
    music = load_annotated(name)
    timeline = analyser.analyse(music.pcm, music.sample_rate)
    # mir_eval's convention (and the benchmark's): beats in the first 5 s are not scored
    trim = mir_eval.beat.trim_beats
    beat_f = mir_eval.beat.f_measure(trim(music.beats), trim(timeline.beats))
    downbeat_f = mir_eval.beat.f_measure(trim(music.downbeats), trim(timeline.downbeats))
    assert beat_f >= MIN_BEAT_F, f"{name}: beat F-measure {beat_f:.3f}"
    assert downbeat_f >= MIN_DOWNBEAT_F, f"{name}: downbeat F-measure {downbeat_f:.3f}"
    assert timeline.final and timeline.settled_until == timeline.duration
    assert timeline.duration == pytest.approx(len(music.pcm) / music.sample_rate)


def test_known_grid_beats_downbeats_and_pickup(song, song_timeline):
    timeline = song_timeline
    # the whole grid is scored, its first seconds included (the pickup is at 0.6 s)
    assert mir_eval.beat.f_measure(song.beats, timeline.beats) >= 0.9
    assert mir_eval.beat.f_measure(song.downbeats, timeline.downbeats) >= 0.9
    # the pickup is a beat, not a bar's start: the first downbeat is bar 1's
    assert abs(timeline.downbeats[0] - song.downbeats[0]) < 0.05
    assert abs(timeline.beats[0] - song.beats[0]) < 0.05 and timeline.beat_positions[0] != 1
    # every downbeat of the grid is found within 50 ms (a cut on it lands on the right video frame at 24 fps)
    nearest = np.abs(song.downbeats[:, None] - timeline.downbeats[None, :]).min(axis=1)
    assert nearest.max() < 0.05, nearest


def test_known_grid_tempo_follows_the_ramp(song, song_timeline):
    timeline = song_timeline
    tempi = timeline.beat_tempi()
    starts = timeline.beats[:-1]
    steady_slow = tempi[(starts > song.downbeats[0]) & (starts < song.downbeats[5])]
    steady_fast = tempi[(starts > song.downbeats[10]) & (starts < song.downbeats[15])]
    assert np.median(steady_slow) == pytest.approx(100.0, abs=2.0)
    assert np.median(steady_fast) == pytest.approx(130.0, abs=3.0)
    assert 100.0 < timeline.tempo_bpm < 130.0


def test_known_grid_sections_split_where_the_music_changes(song, song_timeline):
    sections = song_timeline.sections
    assert len(sections) == 2, sections
    assert sections[0].start == 0.0 and sections[-1].end == song_timeline.duration
    assert abs(sections[1].start - song.section_start) < 0.05
    assert sections[1].start in song_timeline.downbeats
    assert sum(s.bar_count for s in sections) == len(song_timeline.downbeats)


def test_energy_curve_measures_rms_in_dbfs():
    rate = 32000
    quiet = 0.01 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)  # -43 dBFS RMS
    loud = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)  # -9 dBFS RMS
    curve = energy_curve(np.concatenate([quiet, loud]).astype(np.float32), rate, 10.0)
    assert curve.shape == (20,)
    assert curve[:10] == pytest.approx(20 * np.log10(0.01 / np.sqrt(2)), abs=0.1)
    assert curve[10:] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)


def test_song_energy_is_higher_in_the_busier_section(song, song_timeline):
    first = song_timeline.sections[0]
    second = song_timeline.sections[1]
    assert song_timeline.energy.shape == (int(np.ceil(song_timeline.duration * 10)),)
    assert song_timeline.energy_between(second.start, second.end - 1.5) > song_timeline.energy_between(
        first.start + 1.0, first.end
    )


def test_streamed_analysis_settles_and_ends_where_the_offline_one_does(analyser, song, song_timeline, monkeypatch):
    """Fed in 10 s pieces, like music that streams in: what a timeline calls settled never changes afterwards."""
    decoded = []  # frames each decoder run saw: the later feeds re-decode only a window, not everything
    decode = analyser.decode
    monkeypatch.setattr(analyser, "decode", lambda activations: decoded.append(len(activations)) or decode(activations))
    stream = analyser.stream(song.sample_rate)
    piece = 10 * song.sample_rate
    settled_times = []
    for start in range(0, len(song.pcm), piece):
        timeline = stream.feed(song.pcm[start : start + piece])
        assert not timeline.final
        assert timeline.settled_until <= timeline.duration
        settled = timeline.beats < timeline.settled_until
        count = int(settled.sum())
        # the same beats, in the same bar positions, as the whole song analysed at once (± one 10 ms frame)
        assert count == int((song_timeline.beats < timeline.settled_until).sum())
        np.testing.assert_allclose(timeline.beats[settled], song_timeline.beats[:count], atol=0.0101)
        np.testing.assert_array_equal(timeline.beat_positions[settled], song_timeline.beat_positions[:count])
        settled_times.append(timeline.settled_until)
    assert settled_times == sorted(settled_times) and settled_times[-1] > 0.5 * song_timeline.duration
    final = stream.finish()
    assert decoded[-1] < 0.8 * song_timeline.duration * 100, decoded  # finish() joined a window to the settled beats
    assert stream.disagreements == 0
    assert final.final and final.settled_until == final.duration == song_timeline.duration
    np.testing.assert_allclose(final.beats, song_timeline.beats, atol=0.0101)
    np.testing.assert_array_equal(final.beat_positions, song_timeline.beat_positions)
    assert [(s.first_bar, s.bar_count) for s in final.sections] == [
        (s.first_bar, s.bar_count) for s in song_timeline.sections
    ]
    with pytest.raises(AnalysisError, match="finished"):
        stream.feed(song.pcm[:100])


def test_silence_has_no_beats_and_one_section(analyser):
    rate = 22050
    timeline = analyser.analyse(np.zeros((3 * rate, 2), np.float32), rate)  # stereo: analysed as its mix
    assert timeline.duration == pytest.approx(3.0)
    assert len(timeline.beats) == 0 and timeline.tempo_bpm is None and len(timeline.downbeats) == 0
    assert [(s.start, s.end, s.bar_count) for s in timeline.sections] == [(0.0, 3.0, 0)]
    assert (timeline.energy == -100.0).all()


@pytest.mark.parametrize(
    ("pcm", "rate", "message"),
    [
        (np.zeros(1000, np.float32), 7999, "sample_rate"),
        (np.zeros(1000, np.float32), 44100.0, "sample_rate"),
        (np.zeros(1000, np.int16), 32000, "pcm: must be float"),
        (np.zeros((10, 2, 2), np.float32), 32000, "pcm: must be float"),
        (np.array([0.0, np.nan], np.float32), 32000, "NaN"),
    ],
)
def test_bad_input_is_named(analyser, pcm, rate, message):
    with pytest.raises(AnalysisError, match=message):
        analyser.analyse(pcm, rate)


def test_config_is_checked():
    with pytest.raises(ValueError, match="beats_per_bar"):
        AnalysisConfig(beats_per_bar=(1,))
    with pytest.raises(ValueError, match="min_bpm"):
        AnalysisConfig(min_bpm=200, max_bpm=100)
