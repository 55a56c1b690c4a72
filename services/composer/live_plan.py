"""The shots of a cut video, planned while its music arrives: analysis and planning on a thread of their own.

The composer's thread reads the music stream and hands each PCM piece to `LivePlan.feed` (a queue put, never a wait),
so neither the music stream (gRPC flow control would hold the music service back) nor a cancel waits for the
analysis, whose networks take seconds per update. The plan's thread feeds the analysis (tunereel.analysis), asks the
planner (tunereel.shots.ShotPlanner) for the shots the settled music decides, and adds them to the ShotRunner at
once, so the video replicas start on the first shots while the song is still being generated. `finish()` waits for
the last update on the whole song, which completes the plan.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from tunereel.analysis import AnalysisStream, Timeline
from tunereel.shots import PlanError, ShotPlanner
from tunereel.streaming import Cancelled

from .errors import ComposeError, InvalidScenes
from .shot_runner import ShotRunner

log = logging.getLogger("tunereel.composer")

__all__ = ["LivePlan"]

_END = None  # the queue's end-of-music marker


class LivePlan:
    def __init__(self, analysis: AnalysisStream, planner: ShotPlanner, runner: ShotRunner):
        self.analysis = analysis
        self.planner = planner
        self.runner = runner
        self.timeline: Timeline | None = None  # the whole song's, once finished
        self.planned_early = 0  # shots added before the music had all arrived
        self._pieces: queue.Queue[np.ndarray | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-plan", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, samples: np.ndarray) -> None:
        self._pieces.put(samples)

    def check(self) -> None:
        """Raises the plan's failure now (a scene that cannot be placed, unusable audio), if there is one."""
        if self._failure is not None:
            raise self._failure

    def finish(self, cancelled: threading.Event) -> Timeline:
        """The whole song's timeline, once the music has ended and every shot is planned and added."""
        self._pieces.put(_END)
        started = time.monotonic()
        while self._thread.is_alive():
            if cancelled.is_set():
                self.stop()
                raise Cancelled("compose cancelled by the caller")
            self._thread.join(0.1)
        self.check()
        assert self.timeline is not None  # the thread ends with a timeline or a failure
        log.info("music analysed (%.1f s after its end): %.0f bpm, %d bars, %d sections; %d of %d shot(s) planned "
                 "while it arrived", time.monotonic() - started, self.timeline.tempo_bpm or 0,
                 len(self.timeline.downbeats), len(self.timeline.sections), self.planned_early,
                 len(self.runner.shots))  # fmt: skip
        return self.timeline

    def stop(self) -> None:
        """No more updates (the update running, if any, finishes on its own; its shots are not added)."""
        self._stop.set()
        self._pieces.put(_END)

    # ------------------------------------------------------------------------------------------------- thread
    def _run(self) -> None:
        try:
            last: Timeline | None = None
            while not self._stop.is_set():
                piece = self._pieces.get()
                if self._stop.is_set():
                    return
                if piece is _END:
                    self.timeline = self.analysis.finish()
                    self._add(self.planner.finish(self.timeline))
                    self.runner.end_of_plan()
                    return
                # One feed per piece as it came from the source, never pieces joined by timing: the analysis updates
                # where the pieces' lengths say, so the same music always gives the same timeline and the same plan.
                timeline = self.analysis.feed(piece)
                if timeline is not last:  # a feed that only buffered returns the last timeline again
                    last = timeline
                    self._add(self.planner.update(timeline))
                    self.planned_early = len(self.runner.shots)
        except PlanError as error:
            self._failure = InvalidScenes(f"{error.field}: {error.reason}", field=error.field)
        except ComposeError as error:
            self._failure = error
        except ValueError as error:  # AnalysisError: PCM the analysis cannot use
            self._failure = ComposeError(f"the music cannot be analysed: {error}")
        except Exception as error:  # noqa: BLE001 - a bug: the composition fails with it
            log.exception("planning the shots failed")
            self._failure = ComposeError(f"planning the shots: {type(error).__name__}: {error}")

    def _add(self, shots: list) -> None:
        if shots and not self._stop.is_set():
            self.runner.add(shots)
