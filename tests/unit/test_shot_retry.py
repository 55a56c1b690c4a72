"""ShotRunner's retries, on scripted sources: the test, not a round robin, says which replica each call reaches, so a
retry that lands back on the replica that failed its shot is certain here, not a matter of timing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tunereel.composer.backends import Ended, Frame, VideoHeader
from tunereel.composer.errors import BackendBusy, BackendRejected, BackendUnavailable
from tunereel.composer.muxer import VideoSpec
from tunereel.composer.shot_runner import ShotRunner
from tunereel.shots import Shot

SIZE, FPS, FRAMES = 32, 24, 3
VIDEO = VideoSpec(width=SIZE, height=SIZE, fps=FPS)


class Call:
    """One scripted video call: a header naming `replica`, then FRAMES frames, or `fail` raised after the header;
    `hold` keeps it before its first frame until cancelled."""

    def __init__(self, shot: Shot, replica: str, fail: Exception | None = None, hold: bool = False):
        self.shot, self.replica, self.fail, self.hold = shot, replica, fail, hold
        self.name = f"shot-{shot.index}"
        self.started = self.cancelled_flag = False
        self.frames_read = 0
        self.ended = False  # the caller read it to the end
        self._cancel = threading.Event()

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled_flag = True
        self._cancel.set()

    def events(self) -> Iterator:
        yield VideoHeader(self.name, SIZE, SIZE, FPS, self.shot.frames, "scripted", self.replica)
        if self.fail is not None:
            raise self.fail
        if self.hold and self._cancel.wait(30):
            raise BackendUnavailable("video service dropped the stream")  # as a cancelled gRPC call ends
        for index in range(self.shot.frames):
            self.frames_read += 1
            yield Frame(self.name, index, np.full((SIZE, SIZE, 3), 10 * self.shot.index, np.uint8))
        self.ended = True
        yield Ended(self.name)


class Replicas:
    """Hands each new call the next replica of `route` (the last one again once it runs out); `faults` maps a shot
    index to the errors its first calls raise after their header, in order."""

    def __init__(self, route: list[str], faults: dict[int, list[Exception]] | None = None, hold: set[int] = frozenset()):
        self.route, self.faults, self.hold = list(route), faults or {}, hold
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    def __call__(self, shot: Shot) -> Call:
        with self.lock:
            replica = self.route.pop(0) if len(self.route) > 1 else self.route[0]
            faults = self.faults.get(shot.index, [])
            call = Call(shot, replica, faults.pop(0) if faults else None, hold=shot.index in self.hold and not faults)
            self.calls.append(call)
        return call

    def of(self, index: int) -> list[Call]:
        return [call for call in self.calls if call.shot.index == index]


def shots(count: int) -> list[Shot]:
    return [Shot(i, 0, i * FRAMES, (i + 1) * FRAMES, FPS, "x", 100 + i) for i in range(count)]


def runner_of(replicas: Replicas, tmp_path, count: int, workers: int = 1) -> ShotRunner:
    runner = ShotRunner(replicas, VIDEO, tmp_path, workers=workers, total_frames=count * FRAMES)
    runner.add(shots(count))
    runner.end_of_plan()
    runner.start()
    return runner


def run(replicas: Replicas, tmp_path, count: int = 3, workers: int = 1):
    runner = runner_of(replicas, tmp_path, count, workers)
    try:
        return [runner.next_result(i, threading.Event(), lambda _p: None) for i in range(count)]
    finally:
        runner.close()


def test_a_retry_that_lands_on_the_replica_that_failed_is_cancelled_at_its_header_and_made_on_another(tmp_path):
    # shot 1 fails on A; its retry's first call lands on A again, the next one on B
    replicas = Replicas(["A", "A", "A", "B", "A"], faults={1: [BackendUnavailable("video replica is restarting")]})
    results = run(replicas, tmp_path)
    assert [(r.replica, r.attempts) for r in results] == [("A", 1), ("B", 2), ("A", 1)]
    failed, declined, made = replicas.of(1)
    assert (failed.replica, declined.replica, made.replica) == ("A", "A", "B")
    assert declined.cancelled_flag and declined.frames_read == 0 and not declined.ended  # stopped at its header
    assert made.ended and not made.cancelled_flag
    assert [len(replicas.of(i)) for i in (0, 2)] == [1, 1]  # no other shot made again
    assert all(r.frames == FRAMES for r in results)


def test_with_one_replica_the_retry_is_made_on_it_after_the_bound_and_says_so(tmp_path, caplog):
    replicas = Replicas(["A"], faults={0: [BackendBusy("video service is busy: out of GPU memory")]})
    with caplog.at_level(logging.INFO, logger="tunereel.composer"):
        results = run(replicas, tmp_path, count=2)
    assert [(r.replica, r.attempts) for r in results] == [("A", 2), ("A", 1)]
    calls = replicas.of(0)
    # failed, then 4 × 1 replica seen calls cancelled at their header, then made there
    assert [c.cancelled_flag for c in calls] == [True] * 5 + [False] and calls[-1].ended
    assert [c.frames_read for c in calls[1:5]] == [0, 0, 0, 0]
    assert any("making it on the replica the next call reaches" in r.getMessage() for r in caplog.records)


def test_a_shot_that_failed_on_both_replicas_avoids_both_then_takes_what_answers(tmp_path):
    faults = {0: [BackendUnavailable("restarting"), BackendUnavailable("restarting")]}
    replicas = Replicas(["A", "B", "B", "A", "B", "A", "A", "B", "B", "A", "A", "A"], faults=faults)
    results = run(replicas, tmp_path, count=1)
    calls = replicas.of(0)
    # fails on A, then on B (new to it); then 4 × 2 replicas seen calls declined at their header; then made on A
    assert [c.replica for c in calls] == ["A", "B", "B", "A", "B", "A", "A", "B", "B", "A", "A"]
    assert [c.frames_read for c in calls] == [0] * 10 + [FRAMES]
    assert results[0].replica == "A" and results[0].attempts == 3


def test_a_failure_that_is_not_retryable_is_not_retried(tmp_path):
    replicas = Replicas(["A", "B"], faults={0: [BackendRejected("prompt: too long", field="prompt")]})
    with pytest.raises(BackendRejected):
        run(replicas, tmp_path, count=1)
    assert len(replicas.calls) == 1


def test_cancel_during_a_retry_leaves_no_call_in_flight_and_no_segment(tmp_path):
    # shot 0 fails on A, its retry is declined on A and then held on B (as a slow generation) when the cancel comes
    replicas = Replicas(["A", "A", "B"], faults={0: [BackendUnavailable("restarting")]}, hold={0})
    runner = runner_of(replicas, tmp_path, 1)
    deadline = time.monotonic() + 10
    while len(replicas.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    runner.close()
    calls = replicas.calls
    assert [c.replica for c in calls] == ["A", "A", "B"]
    assert all(c.cancelled_flag for c in calls) and not any(c.ended for c in calls)  # every call stopped
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("shots-"))
    assert not list(tmp_path.iterdir())  # no segment left
