"""LivePlan (services/composer/live_plan.py): the analysis sees the music's pieces as the source sent them, whatever
the plan's thread was doing, so the same music always updates the analysis at the same points (the same plan)."""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.unit.test_shots import grid_timeline
from tunereel.composer.live_plan import LivePlan
from tunereel.shots import Scene, ShotPlanner


class RecordingAnalysis:
    """Stands in for an AnalysisStream: records each feed; the first one is slow (a busy analysis thread)."""

    def __init__(self, timeline):
        self.timeline = timeline
        self.feeds: list[int] = []
        self.finished = False

    def feed(self, pcm, final=False):
        if not self.feeds:
            time.sleep(0.5)  # meanwhile the composer hands over every other piece
        self.feeds.append(len(pcm))
        return self.timeline

    def finish(self):
        self.finished = True
        return self.timeline


class Runner:
    def __init__(self):
        self.shots: list = []
        self.ended = False

    def add(self, shots):
        self.shots += shots

    def end_of_plan(self):
        self.ended = True


def test_every_piece_is_fed_on_its_own_even_when_the_thread_is_behind():
    timeline = grid_timeline([120.0] * 8, pickup=0.0)
    total = round(timeline.duration * 24)
    analysis, runner = RecordingAnalysis(timeline), Runner()
    plan = LivePlan(analysis, ShotPlanner([Scene("a")], cuts="bar", fps=24, total_frames=total, seed=1), runner)
    plan.start()
    sizes = [100, 250, 175, 300, 50]
    for size in sizes:
        plan.feed(np.zeros((size, 2), np.float32))
    final = plan.finish(threading.Event())
    assert analysis.feeds == sizes  # one feed per piece, in order: never joined
    assert analysis.finished and final is timeline
    assert runner.ended and runner.shots and runner.shots[-1].end_frame == total
