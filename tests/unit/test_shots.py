"""Shot planning (tunereel.shots): whole bars, cuts on downbeats, exact totals, scenes in order, per-shot seeds."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from tests.analysis_media import grid_song
from tunereel.analysis import Section, Timeline
from tunereel.shots import PlanError, Scene, ShotPlanner, plan_shots, shot_seed, timeline_dict


def grid_timeline(tempi: list[float], pickup: float = 0.6, beats_per_bar: int = 4, loud_from: float | None = None,
                  sections: list[int] | None = None) -> Timeline:  # fmt: skip
    """A Timeline on a known grid: one pickup beat, then bars at the given tempo per bar; quiet, loud from `loud_from` s."""
    intervals = [60.0 / tempi[0]] + [60.0 / t for t in tempi for _ in range(beats_per_bar)]
    beats = pickup + np.concatenate([[0.0], np.cumsum(intervals)])[:-1]
    positions = np.array([beats_per_bar] + list(range(1, beats_per_bar + 1)) * len(tempi))
    duration = float(beats[-1] + intervals[-1])
    energy = np.full(int(duration * 10) + 1, -30.0, np.float32)
    if loud_from is not None:
        energy[int(loud_from * 10):] = -8.0
    downbeats = beats[positions == 1]
    firsts = sections or [0]
    ends = firsts[1:] + [len(downbeats)]
    secs = tuple(Section(i, 0.0 if f == 0 else float(downbeats[f]), duration if e == len(downbeats) else float(downbeats[e]), f, e - f)
                 for i, (f, e) in enumerate(zip(firsts, ends)))  # fmt: skip
    return Timeline(duration, beats, positions, secs, energy, 10.0, duration, True)


def check_exact(shots, total):
    assert shots[0].start_frame == 0 and shots[-1].end_frame == total
    assert all(a.end_frame == b.start_frame for a, b in zip(shots, shots[1:]))
    assert all(s.frames >= 1 for s in shots)


@pytest.mark.parametrize("cuts", ["auto", "bar"])
def test_cuts_land_on_downbeats_at_an_uneven_tempo(cuts):
    tempi = [100.0] * 4 + [110.0, 120.0, 125.0] + [130.0] * 6
    timeline = grid_timeline(tempi, loud_from=12.0, sections=[0, 7])
    fps = 24
    total = round(timeline.duration * fps)
    shots = plan_shots(timeline, [Scene("a"), Scene("b")], cuts=cuts, fps=fps, total_frames=total, seed=7)
    check_exact(shots, total)
    downbeat_frames = timeline.downbeats * fps
    for shot in shots[1:]:
        assert np.min(np.abs(downbeat_frames - shot.start_frame)) <= 0.5  # the downbeat's frame, ± half a frame
    assert [s.scene for s in shots] == sorted(s.scene for s in shots)
    # the second scene starts with the second section
    second = next(s for s in shots if s.scene == 1)
    assert second.start_frame == round(timeline.sections[1].start * fps)
    assert all(s.pass_frames % 8 == 1 and s.frames <= s.pass_frames <= 257 for s in shots)


def test_auto_cuts_shorter_when_loud_and_longer_when_calm():
    timeline = grid_timeline([120.0] * 24, pickup=0.0, loud_from=24.0)  # 2 s bars, loud in the second half
    fps = 24
    total = round(timeline.duration * fps)
    shots = plan_shots(timeline, [Scene("x")], cuts="auto", fps=fps, total_frames=total, seed=1)
    check_exact(shots, total)
    calm = [s.frames for s in shots if s.end_s <= 24.0]
    loud = [s.frames for s in shots if s.start_s >= 24.0]
    assert calm and loud and max(loud) < min(calm)


def test_no_shot_longer_than_one_pass():
    timeline = grid_timeline([40.0] * 4, pickup=0.0)  # 6 s bars: 360 frames at 60 fps
    total = round(timeline.duration * 60)
    shots = plan_shots(timeline, [Scene("slow")], cuts="bar", fps=60, total_frames=total, seed=1)
    check_exact(shots, total)
    assert all(s.frames <= 257 and s.pass_frames <= 257 for s in shots)
    assert len(shots) == 8


@pytest.mark.parametrize("count", [2, 3, 4])
def test_scenes_in_order_with_exact_lengths(count):
    timeline = grid_timeline([120.0] * 16, sections=[0, 4, 8, 12])
    total = round(timeline.duration * 24)
    scenes = [Scene(f"scene {i}") for i in range(count)]
    shots = plan_shots(timeline, scenes, cuts="auto", fps=24, total_frames=total, seed=3)
    check_exact(shots, total)
    assert sorted({s.scene for s in shots}) == list(range(count))
    assert [s.scene for s in shots] == sorted(s.scene for s in shots)
    assert all(s.prompt == f"scene {s.scene}" for s in shots)


def test_pinned_scenes_and_bad_pins_name_the_field():
    timeline = grid_timeline([120.0] * 8, pickup=0.0, sections=[0, 4])
    total = round(timeline.duration * 24)
    shots = plan_shots(timeline, [Scene("a"), Scene("b", bars=(3, 8))], cuts="bar", fps=24, total_frames=total, seed=0)
    assert next(s for s in shots if s.scene == 1).start_frame == round(timeline.downbeats[2] * 24)  # bar 3
    with pytest.raises(PlanError) as error:
        plan_shots(timeline, [Scene("a"), Scene("b", bars=(3, 9))], cuts="bar", fps=24, total_frames=total, seed=0)
    assert error.value.field == "scenes.1.bars"
    with pytest.raises(PlanError) as error:
        plan_shots(timeline, [Scene("a"), Scene("b", section=2)], cuts="bar", fps=24, total_frames=total, seed=0)
    assert error.value.field == "scenes.1.section"
    with pytest.raises(PlanError) as error:
        plan_shots(timeline, [Scene(str(i)) for i in range(9)], cuts="bar", fps=24, total_frames=total, seed=0)
    assert error.value.field == "scenes"


def test_beat_cuts_and_seeds():
    timeline = grid_timeline([120.0] * 4, pickup=0.0)
    total = round(timeline.duration * 24)
    shots = plan_shots(timeline, [Scene("a")], cuts="beat", fps=24, total_frames=total, seed=5)
    check_exact(shots, total)
    assert len(shots) == 17 and all(s.frames == 12 for s in shots)  # the pickup beat and 16 beats of 0.5 s
    assert [s.seed for s in shots] == [shot_seed(5, i) for i in range(17)]
    assert len({s.seed for s in shots}) == 17 and shot_seed(6, 0) != shot_seed(5, 0)


def test_grid_song_through_the_analysis():
    """The real analysis on music with a known grid (uneven tempo, a pickup): every cut on a grid downbeat ± 1 frame,
    and the timeline's beats match the grid."""
    from tunereel.analysis import MusicAnalyser

    song = grid_song()
    timeline = MusicAnalyser().analyse(song.pcm, song.sample_rate)
    fps = 24
    total = round(len(song.pcm) / song.sample_rate * fps)
    shots = plan_shots(timeline, [Scene("a"), Scene("b")], cuts="bar", fps=fps, total_frames=total, seed=1)
    check_exact(shots, total)
    grid_end = song.beats[-1] + 0.5  # after the grid: a second of silence, where the tracker may still see a beat
    cuts = np.array([s.start_frame for s in shots[1:] if s.start_s < grid_end])
    assert np.abs(song.downbeats[:, None] * fps - cuts[None, :]).min(axis=0).max() <= 1.0  # each cut on a downbeat
    assert np.abs(song.downbeats[1:, None] * fps - cuts[None, :]).min(axis=1).max() <= 1.0  # each downbeat a cut
    data = timeline_dict(timeline, shots, fps=fps, total_frames=total)
    assert mir_eval.beat.f_measure(song.beats, np.array(data["beats"])) >= 0.9
    assert mir_eval.beat.f_measure(song.downbeats, np.array(data["downbeats"])) >= 0.9
    assert [s["index"] for s in data["shots"]] == list(range(len(shots)))
    assert data["frames"] == total and data["shots"][-1]["end_frame"] == total


# ------------------------------------------------------------------------------------- planning while music arrives
def partial(timeline: Timeline, settled_until: float, heard_until: float, rng: np.random.Generator) -> Timeline:
    """What an analysis stream could say while the music has arrived up to `heard_until`: the beats before
    `settled_until` as they will stay, later ones provisional (jittered, some missing), energy only of the audio heard,
    sections of no use yet."""
    keep = timeline.beats < settled_until
    later = (timeline.beats >= settled_until) & (timeline.beats < heard_until) & (rng.random(len(timeline.beats)) > 0.3)
    beats = np.concatenate([timeline.beats[keep], timeline.beats[later] + rng.normal(0, 0.05, later.sum())])
    positions = np.concatenate([timeline.beat_positions[keep], rng.permutation(timeline.beat_positions[later])])
    energy = timeline.energy[: int(heard_until * timeline.energy_rate)]
    return Timeline(heard_until, beats, positions, (), energy, timeline.energy_rate, settled_until, False)


@pytest.mark.parametrize(
    ("cuts", "scenes"),
    [
        ("auto", [Scene("one")]),
        ("bar", [Scene("one")]),
        ("beat", [Scene("one")]),
        ("auto", [Scene("a"), Scene("b", bars=(5, 6)), Scene("c", bars=(12, 12))]),
        ("bar", [Scene("a"), Scene("b", bars=(9, 20))]),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shots_planned_while_the_music_arrives_are_the_start_of_the_final_plan(cuts, scenes, seed):
    rng = np.random.default_rng(seed)
    tempi = list(rng.uniform(70, 170, size=20))  # every bar its own tempo
    timeline = grid_timeline(tempi, pickup=float(rng.uniform(0.0, 1.2)), beats_per_bar=int(rng.choice([3, 4])))
    levels = rng.choice([-30.0, -18.0, -8.0], size=len(timeline.energy) // 20 + 1)
    energy = np.repeat(levels, 20)[: len(timeline.energy)].astype(np.float32)  # the level changes every 2 s
    timeline = Timeline(timeline.duration, timeline.beats, timeline.beat_positions, timeline.sections, energy, 10.0,
                        timeline.duration, True)  # fmt: skip
    fps = 24
    total = round(timeline.duration * fps)
    planner = ShotPlanner(scenes, cuts=cuts, fps=fps, total_frames=total, seed=9)
    early: list = []
    for heard in np.arange(4.0, timeline.duration, 3.0):
        settled = max(heard - 10.0, 0.0)
        new = planner.update(partial(timeline, settled, heard, rng))
        assert all(shot.end_s <= settled + 0.5 / fps for shot in new)  # only what the settled music decides
        early += new
    assert early, "no shot was planned before the song's end"
    rest = planner.finish(timeline)
    final = plan_shots(timeline, scenes, cuts=cuts, fps=fps, total_frames=total, seed=9)
    assert early + rest == final
    check_exact(final, total)


def test_scenes_spread_over_sections_wait_for_the_whole_song():
    timeline = grid_timeline([120.0] * 16, pickup=0.0, sections=[0, 8])
    total = round(timeline.duration * 24)
    planner = ShotPlanner([Scene("a"), Scene("b")], cuts="bar", fps=24, total_frames=total, seed=1)
    rng = np.random.default_rng(0)
    assert planner.update(partial(timeline, 20.0, 30.0, rng)) == []
    assert planner.finish(timeline) == plan_shots(timeline, [Scene("a"), Scene("b")], cuts="bar", fps=24,
                                                  total_frames=total, seed=1)  # fmt: skip


def test_grid_song_planned_while_it_streams():
    """The real incremental analysis, fed 4 s at a time: shots are planned before the music ends, and those shots
    are the start of the plan on the whole song."""
    from tunereel.analysis import AnalysisConfig, MusicAnalyser

    song = grid_song()
    stream = MusicAnalyser(AnalysisConfig(min_update_s=8.0)).stream(song.sample_rate)
    fps = 24
    total = round(len(song.pcm) / song.sample_rate * fps)
    planner = ShotPlanner([Scene("a")], cuts="bar", fps=fps, total_frames=total, seed=4)
    step = 4 * song.sample_rate
    early: list = []
    for start in range(0, len(song.pcm), step):
        heard = min(start + step, len(song.pcm)) / song.sample_rate
        new = planner.update(stream.feed(song.pcm[start : start + step]))
        early += [(shot, heard) for shot in new]
    rest = planner.finish(stream.finish())
    assert early and early[0][1] < len(song.pcm) / song.sample_rate - 5  # the first shot well before the end
    shots = [shot for shot, _ in early] + rest
    check_exact(shots, total)
    cuts_at = np.array([s.start_frame for s in shots[1:] if s.start_s < song.beats[-1] + 0.5])
    assert np.abs(song.downbeats[:, None] * fps - cuts_at[None, :]).min(axis=0).max() <= 1.0
