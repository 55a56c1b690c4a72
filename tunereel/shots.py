"""Shot planning: what the music does (tunereel.analysis.Timeline) + the request's scenes → shots. Pure, no models.

A shot is one video request: whole bars of music, cut on a downbeat's frame, at most one LTX pass long (its pass is
`model_frame_count(frames)` = 8k+1 frames ≥ the shot, ≤ `max_frames`; the video service cuts the pass down). Shots
cover the song exactly: the first starts at frame 0 (a pickup belongs to the first bar), the last ends at
`total_frames`, each starts where the one before ends, so audio = video by construction.

Bars, in frames: the downbeats' frames (rounded: a cut is within half a frame of its downbeat) strictly inside
(0, total_frames), with 0 and total_frames as the ends. A pickup shorter than half a bar joins the first bar.

Scenes (1–32, each a prompt, optionally pinned to a section index or a bar range) cover the song in order: a scene
lasts until the next one starts. Unpinned scenes are spread over the sections (fewer scenes than sections: whole
sections each; more: the bars split evenly). A new scene always starts with a cut.

Cuts:
- "auto": shots of whole bars, shorter where the energy is high, longer where calm (2, 4 or 8 bars by the bar's energy
  against the bars heard before it), never across a scene boundary;
- "bar": one bar a shot;
- "beat": a shot every `cut_every_beats` (N) beats, cut on beats' frames: every N-th beat counted from the scene's
  first downbeat (beats before it, a pickup, counted back from it), so the cuts keep step with the bars when N divides
  or is a multiple of the bar; a scene's start is a cut, and a scene's last shot may be shorter. N beats longer than
  one pass are split on the beats between them (as many whole beats as one pass holds). Music without beats: its
  bars stand in for beats;
- "none": no plan here; the composer makes today's one continuous take.
A bar (or a beat) longer than one pass (slow music, a high fps) is split into equal parts.

Plans are made while the music arrives (`ShotPlanner`): a shot is planned once the music up to just after its end has
settled, and every plan made early is the start of the plan made on the whole song.

Each shot's seed comes from the job seed and the shot index alone (`shot_seed`), so one shot can be re-made.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .analysis import Timeline
from .segments import model_frame_count

__all__ = ["CUTS", "PlanError", "Scene", "Shot", "ShotPlanner", "plan_shots", "shot_seed", "timeline_dict"]

CUTS = ("auto", "bar", "beat", "none")
AUTO_BARS = (2, 4, 8)  # bars per shot in `auto`: loud, middle, calm
AUTO_REFERENCE_BARS = 8  # `auto` judges the first bars against at least this many bars of the song's start
AUTO_CONTRAST_DB = 1.5  # loud / calm: at least this far above / below the median level heard


class PlanError(ValueError):
    """The scenes cannot be placed on this music (names the field, e.g. `scenes.2.bars`)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Scene:
    prompt: str
    section: int | None = None  # 0-based section index this scene starts with
    bars: tuple[int, int] | None = None  # 1-based bar numbers [first, last]; the scene starts at `first`


@dataclass(frozen=True)
class Shot:
    index: int
    scene: int
    start_frame: int
    end_frame: int  # exclusive
    fps: int
    prompt: str
    seed: int

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def pass_frames(self) -> int:
        """Frames of the LTX pass that makes this shot (8k+1 ≥ frames; the service cuts it down)."""
        return model_frame_count(self.frames)

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps


def shot_seed(job_seed: int, index: int) -> int:
    """A shot's seed: the same job seed and index always give the same seed, different shots different ones."""
    digest = hashlib.blake2b(f"tunereel-shot:{job_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def bar_frames(timeline: Timeline, fps: int, total_frames: int) -> list[int]:
    """Bar boundaries in frames: [0, downbeat frames inside the song…, total_frames]. A pickup shorter than half a
    bar joins the first bar. Music without downbeats (noise) gets 2-second bars, so shots still have a length."""
    cuts = downbeat_cuts(timeline, fps, total_frames)
    if not cuts:
        step = max(2 * fps, 1)
        return [*range(0, total_frames, step), total_frames]
    return [0, *cuts, total_frames]


def downbeat_cuts(timeline: Timeline, fps: int, total_frames: int) -> list[int]:
    """The frames of the downbeats that start bars inside the song (the first bar's pickup rule applied)."""
    cuts = sorted({int(round(t * fps)) for t in timeline.downbeats} - {0})
    cuts = [c for c in cuts if 0 < c < total_frames]
    if len(cuts) >= 2 and cuts[0] < (cuts[1] - cuts[0]) / 2:
        cuts = cuts[1:]  # a short pickup belongs to the first bar
    return cuts


def plan_shots(
    timeline: Timeline,
    scenes: Sequence[Scene],
    *,
    cuts: str,
    fps: int,
    total_frames: int,
    seed: int,
    max_frames: int = 257,
    cut_every_beats: int = 1,
) -> list[Shot]:
    """The shots of a song (see the module's docstring). Raises PlanError when a scene's pin does not fit."""
    if cuts not in CUTS or cuts == "none":
        raise PlanError("cuts", f"must be one of {', '.join(c for c in CUTS if c != 'none')} to plan shots")
    if cut_every_beats < 1 or (cut_every_beats != 1 and cuts != "beat"):
        raise PlanError("cut_every_beats", f"must be >= 1 and only with cuts 'beat' (got {cut_every_beats}, cuts '{cuts}')")
    if not scenes:
        raise PlanError("scenes", "at least one scene is needed")
    bars = bar_frames(timeline, fps, total_frames)
    starts = scene_starts(timeline, scenes, bars, fps)
    groups = _bar_groups(timeline, bars, fps, cuts) if cuts != "beat" else []
    beats = sorted({int(round(t * fps)) for t in timeline.beats}) or bars  # music without beats: bars stand in
    downbeats = {int(round(t * fps)) for t in timeline.downbeats}
    boundaries: list[tuple[int, int]] = []  # (start frame, scene)
    for scene, (first, last) in enumerate(zip(starts, [*starts[1:], len(bars) - 1])):  # the scene's bars [first, last)
        if cuts == "beat":
            start, end = bars[first], bars[last]
            frames = _beat_cuts([start, *(f for f in beats if start < f < end), end], downbeats, cut_every_beats, max_frames)
        else:
            edges = sorted({first, *(b for b in groups if first <= b < last)})
            frames = [bars[e] for a, b in zip(edges, [*edges[1:], last]) for e in _fit_in_passes(bars, a, b, max_frames)]
        boundaries += [(frame, scene) for frame in frames]
    ends = [frame for frame, _ in boundaries[1:]] + [total_frames]
    pieces: list[tuple[int, int, int]] = []
    for (start, scene), end in zip(boundaries, ends):
        parts = max(1, math.ceil((end - start) / max_frames))  # a bar longer than one pass: equal parts
        edges = [start + (end - start) * k // parts for k in range(parts + 1)]
        pieces += [(a, b, scene) for a, b in zip(edges, edges[1:])]
    return [Shot(i, scene, a, b, fps, scenes[scene].prompt, shot_seed(seed, i)) for i, (a, b, scene) in enumerate(pieces)]


class ShotPlanner:
    """Plans shots while the music is still arriving, so the first shots are made before the song is finished.

    `update(timeline)` takes the analysis so far (tunereel.analysis.AnalysisStream: its beats and bars before
    `settled_until` never change) and returns the shots newly known for certain: the shots of `plan_shots` on the
    settled music that end at least one settled bar before its end (a shot's end can depend on the bar after it). Every
    choice `plan_shots` makes for such a shot depends only on the music up to there: its cuts are settled downbeats (or
    beats: every N-th counted forward from a settled downbeat, a pass split decided by the next beat), `auto` judges a
    bar against the bars before it (`_bar_groups`), and the scenes before it are known (one
    scene, or scenes pinned to bars). Scenes spread over the song's sections, or pinned to a section, need the whole
    song's sections: those plans wait for the end. `finish(timeline)` takes the final analysis and returns the rest; the
    shots handed out before are its first shots, unchanged (checked: PlanError on a mismatch would be a bug here).
    """

    def __init__(self, scenes: Sequence[Scene], *, cuts: str, fps: int, total_frames: int, seed: int,
                 max_frames: int = 257, min_bars: int = AUTO_REFERENCE_BARS, cut_every_beats: int = 1):  # fmt: skip
        self.scenes = list(scenes)
        self.options = dict(cuts=cuts, fps=fps, total_frames=total_frames, seed=seed, max_frames=max_frames,
                            cut_every_beats=cut_every_beats)  # fmt: skip
        self.min_bars = min_bars if cuts == "auto" else 2  # settled bars needed before `auto` judges any
        self.causal = all(scene.section is None for scene in self.scenes) and (
            len(self.scenes) == 1 or all(scene.bars is not None for scene in self.scenes[1:])
        )
        self.planned: list[Shot] = []

    def update(self, timeline: Timeline) -> list[Shot]:
        """The shots newly certain on this (partial) analysis, in order; [] until enough music has settled."""
        if timeline.final:
            return self.finish(timeline)
        if not self.causal:
            return []
        fps, total = self.options["fps"], self.options["total_frames"]
        settled = settled_part(timeline)
        downbeats = downbeat_cuts(settled, fps, total)  # music without downbeats yet: nothing planned before the end
        if len(downbeats) < max(self.min_bars, 2):
            return []
        limit = downbeats[-2]  # a shot ending here is decided by settled bars alone (the bar after it included)
        last_bar = len(downbeats)  # the bar index of downbeats[-1]
        scenes = [s if s.bars is None else Scene(s.prompt, bars=(s.bars[0], s.bars[0])) for s in self.scenes
                  if s.bars is None or s.bars[0] - 1 < last_bar]  # fmt: skip
        try:
            shots = plan_shots(settled, scenes, **self.options)
        except PlanError:
            return []  # a pin that cannot be placed yet; `finish` names it with the whole song
        return self._take([shot for shot in shots if shot.end_frame <= limit])

    def finish(self, timeline: Timeline) -> list[Shot]:
        """The rest of the plan on the whole song's analysis."""
        shots = plan_shots(timeline, self.scenes, **self.options)
        if shots[: len(self.planned)] != self.planned:
            raise PlanError("cuts", "the shots planned while the music arrived differ from the plan of the whole "
                            "song (a bug: please report it with the job's request)")  # fmt: skip
        return self._take(shots)

    def _take(self, shots: list[Shot]) -> list[Shot]:
        new = shots[len(self.planned):]
        self.planned += new
        return new


def settled_part(timeline: Timeline) -> Timeline:
    """The timeline cut to its settled part (its beats before `settled_until`; energy and sections as they are)."""
    keep = timeline.beats < timeline.settled_until
    return Timeline(timeline.duration, timeline.beats[keep], timeline.beat_positions[keep], timeline.sections,
                    timeline.energy, timeline.energy_rate, timeline.settled_until, timeline.final)  # fmt: skip


def _fit_in_passes(bars: list[int], first: int, end: int, max_frames: int) -> list[int]:
    """Start bars of shots over bars [first, end), each as many whole bars as one pass holds (at least one bar).
    `bars` is any increasing list of boundary frames (bars, or beats with cuts "beat")."""
    starts = [first]
    for bar in range(first + 1, end):
        if bars[bar + 1] - bars[starts[-1]] > max_frames:
            starts.append(bar)
    return starts


def scene_starts(timeline: Timeline, scenes: Sequence[Scene], bars: list[int], fps: int) -> list[int]:
    """The bar index each scene starts at (scene 0 at bar 0), strictly increasing."""
    n_bars = len(bars) - 1
    if len(scenes) > n_bars:
        raise PlanError("scenes", f"{len(scenes)} scenes do not fit in {n_bars} bars of music")
    pinned: dict[int, int] = {}
    for i, scene in enumerate(scenes):
        if scene.section is not None:
            if not 0 <= scene.section < len(timeline.sections):
                raise PlanError(f"scenes.{i}.section", f"the music has {len(timeline.sections)} section(s) "
                                f"(0..{len(timeline.sections) - 1}), got {scene.section}")  # fmt: skip
            pinned[i] = _bar_at(bars, round(timeline.sections[scene.section].start * fps))
        elif scene.bars is not None:
            first, last = scene.bars
            if not 1 <= first <= last <= n_bars:
                raise PlanError(f"scenes.{i}.bars", f"the music has bars 1..{n_bars}, got {first}..{last}")
            pinned[i] = first - 1
    pinned.setdefault(0, 0)
    pinned[0] = 0  # the first scene covers the start (a pickup, an intro) whatever its pin
    anchors = sorted(pinned.items()) + [(len(scenes), n_bars)]
    starts: list[int] = []
    sections = [_bar_at(bars, round(s.start * fps)) for s in timeline.sections]
    for (i, bar), (j, next_bar) in zip(anchors, anchors[1:]):
        starts += _spread(bar, next_bar, j - i, sections)
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise PlanError("scenes", "scenes must be pinned in song order, each to a later bar than the one before")
    return starts


def _spread(first: int, end: int, count: int, section_bars: list[int]) -> list[int]:
    """Starts for `count` scenes over bars [first, end): on section starts when there are enough, else even."""
    inside = sorted({b for b in section_bars if first < b < end})
    if count - 1 <= len(inside):
        # whole sections each, in order: scene k starts with section ⌊k·sections/scenes⌋
        picks = [inside[(k + 1) * (len(inside) + 1) // count - 1] for k in range(count - 1)]
        return [first, *picks]
    return [first + (end - first) * k // count for k in range(count)]


def _bar_at(bars: list[int], frame: int) -> int:
    """The index of the bar boundary nearest `frame`."""
    return int(np.argmin(np.abs(np.asarray(bars[:-1]) - frame)))


def _bar_groups(timeline: Timeline, bars: list[int], fps: int, cuts: str) -> list[int]:
    """Bar indexes where a shot may start (before scene boundaries are added).

    In `auto`, a bar is loud or calm against the bars heard up to it (at least the first AUTO_REFERENCE_BARS), not
    against the whole song: so the shots of the song's start can be planned and made while the rest of it is still
    being generated (ShotPlanner), and a plan made early is the plan made at the end."""
    n_bars = len(bars) - 1
    if cuts == "bar":
        return list(range(n_bars))
    levels = np.array([timeline.energy_between(bars[b] / fps, bars[b + 1] / fps) for b in range(n_bars)])
    starts, bar = [], 0
    while bar < n_bars:
        starts.append(bar)
        bar += AUTO_BARS[_loudness_class(levels[bar], levels[: max(bar + 1, AUTO_REFERENCE_BARS)])]
    return starts


def _loudness_class(level: float, heard: np.ndarray) -> int:
    """0 loud, 1 middle, 2 calm: the bar's level against the top and bottom thirds of the levels heard, and at least
    AUTO_CONTRAST_DB away from their median (so music of one steady level is neither)."""
    finite = heard[np.isfinite(heard)]
    if not finite.size or not np.isfinite(level):
        return 1
    median = float(np.median(finite))
    if level >= np.percentile(finite, 67) and level >= median + AUTO_CONTRAST_DB:
        return 0
    if level <= np.percentile(finite, 33) and level <= median - AUTO_CONTRAST_DB:
        return 2
    return 1


def _beat_cuts(grid: list[int], downbeats: set[int], every: int, max_frames: int) -> list[int]:
    """Cut frames of one scene with cuts "beat". `grid`: the scene's start frame, the beat frames inside it, its end
    frame. Every `every`-th beat counted from the scene's first downbeat (and back from it, over a pickup), the start
    always; N beats longer than one pass split on the beats between them."""
    anchor = next((i for i, frame in enumerate(grid[:-1]) if frame in downbeats), 0)  # no downbeat: the start
    marks = sorted({0, *range(anchor % every, len(grid) - 1, every)})
    cuts: list[int] = []
    for a, b in zip(marks, [*marks[1:], len(grid) - 1]):
        cuts += _fit_in_passes(grid, a, b, max_frames)
    return [grid[i] for i in cuts]


def timeline_dict(timeline: Timeline, shots: Sequence[Shot], *, fps: int, total_frames: int, replicas: dict[int, str] | None = None,
                  attempts: dict[int, int] | None = None) -> dict:  # fmt: skip
    """The timeline as data (JSON-ready): what the music does and which shot shows which part of it; per shot, the
    replica that made it and at which attempt (0: not recorded)."""
    replicas, attempts = replicas or {}, attempts or {}
    return {
        "duration_s": total_frames / fps,
        "fps": fps,
        "frames": total_frames,
        "tempo_bpm": timeline.tempo_bpm,
        "beats": [round(float(t), 4) for t in timeline.beats],
        "downbeats": [round(float(t), 4) for t in timeline.downbeats],
        "sections": [{"index": s.index, "start_s": round(s.start, 4), "end_s": round(s.end, 4), "first_bar": s.first_bar,
                      "bars": s.bar_count} for s in timeline.sections],  # fmt: skip
        "shots": [
            {"index": s.index, "scene": s.scene, "start_frame": s.start_frame, "end_frame": s.end_frame,
             "start_s": round(s.start_s, 4), "end_s": round(s.end_s, 4), "prompt": s.prompt, "seed": s.seed,
             "replica": replicas.get(s.index, ""), "attempts": attempts.get(s.index, 0)}
            for s in shots
        ],  # fmt: skip
    }
