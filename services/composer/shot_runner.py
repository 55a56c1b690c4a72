"""The shots of one composition, made on the video replicas at the same time, each into its own segment on disk.

`ShotRunner` takes the shots as they are planned (`add`, in order, while the music still arrives; `end_of_plan` once
the plan is complete) and keeps up to `workers` shots in flight (each one streaming call on the video channel, whose round robin
spreads concurrent calls over the replicas). A worker reads its shot's events, encodes the frames into the shot's own
segment file (muxer.SegmentWriter: a closed-GOP, video-only MP4) and hands back a `ShotResult`; the composer takes the
results in shot order (`next_result`) and copies them into the output. A shot that finishes before the ones before it
waits on disk, compressed, never as raw frames. Any failure but a retryable one stops the composition. `cancel()`
cancels every call in flight and removes every segment not yet taken.

Retries. A shot that fails with a retryable error (a replica down, busy or too slow) is made again, alone, on another
replica when one answers. The round robin picks the replica, not us, and other workers take picks too, so the next
call may land on the same replica again; but every video stream starts with a header naming its replica
(VideoHeader.replica), sent before the replica starts generating (tunereel.model_host). So the runner remembers, per
shot, the replicas the shot failed on (known when the failure came after the header; a replica that refuses
connections is already left out by the channel's health checks), and a retry that lands on one of them is cancelled
at its header and called again, up to `4 × the replicas seen` times per attempt. Past that bound no other replica
answers (one replica left alive): the shot is made where the next call lands, and the log says so.

Progress: the workers put their events in a queue that the composer's thread drains (`drain_progress`), so the
composer's `on_progress` is only ever called from one thread; the video fraction is the share of the song's frames
made so far, which never decreases.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tunereel.shots import Shot
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2

from .backends import Ended, Frame, Progress, Source, VideoHeader
from .errors import ComposeError, MuxFailed
from .muxer import MuxError, SegmentWriter, VideoSpec

log = logging.getLogger("tunereel.composer")

__all__ = ["ShotResult", "ShotRunner"]


@dataclass(frozen=True)
class ShotResult:
    shot: Shot
    path: Path  # the shot's segment (removed by the composer once copied)
    frames: int
    replica: str  # the video replica's instance id ("" when it reports none)
    model_id: str
    attempts: int  # the attempt that made it (1: the first; calls cancelled at their header do not count)


@dataclass
class _Call:
    """What one call to a replica gave so far."""

    header: VideoHeader | None = None  # names the replica
    writer: SegmentWriter | None = None  # the shot's segment, opened once the header is accepted


class _OnFailedReplica(Exception):
    """A retry's call reached a replica the shot already failed on; cancelled at its header, before it generated."""

    def __init__(self, replica: str):
        super().__init__(replica)
        self.replica = replica


class ShotRunner:
    def __init__(
        self,
        make_source: Callable[[Shot], Source],
        video: VideoSpec,
        work_dir: Path,
        *,
        workers: int,
        total_frames: int,
        attempts: int = 3,
    ):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.make_source = make_source
        self.video = video
        self.work_dir = work_dir
        self.workers = workers
        self.attempts = attempts
        self.total_frames = total_frames  # the shots, once all planned, cover exactly these frames
        self.shots: list[Shot] = []  # planned so far, in order (`add`)
        self.planned = False  # every shot has been added (`end_of_plan`)
        self.spans: dict[int, tuple[float, float]] = {}  # shot index → (start, end) monotonic seconds, for tests
        self._pending: queue.Queue[Shot] = queue.Queue()
        self._results: dict[int, ShotResult] = {}
        self._failure: ComposeError | None = None
        self._made: dict[int, float] = {}  # fraction of each shot made
        self._reported = 0.0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._in_flight: dict[int, Source] = {}
        # Every replica that answered a call of this composition (its header): what bounds the calls a retry makes
        # to find another replica. A replica that failed one shot is avoided for that shot only, not suspected for
        # the others: the retryable failures are mostly passing (busy, out of memory for one request, a restart),
        # a replica that stays broken reports NOT_SERVING and the channel's health checks leave it out, and with
        # two or three replicas shunning one for the rest of the job would cost a third to a half of the throughput.
        self._seen: set[str] = set()
        self._progress: queue.Queue[Progress] = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"shots-{i}", daemon=True) for i in range(self.workers)]

    def add(self, shots: Sequence[Shot]) -> None:
        """More shots of the plan (the next ones, in order): the idle workers start on them at once."""
        with self._changed:
            if self.planned:
                raise ValueError("the plan is complete: no more shots")
            for shot in shots:
                if shot.index != len(self.shots):
                    raise ValueError(f"shot {shot.index} added out of order (expected {len(self.shots)})")
                self.shots.append(shot)
                self._made[shot.index] = 0.0
                self._pending.put(shot)
            self._changed.notify_all()

    def end_of_plan(self) -> None:
        """Every shot has been added: workers with nothing left to make stop."""
        with self._changed:
            self.planned = True
            self._changed.notify_all()

    def check(self) -> None:
        """Raises the first shot's failure now (while the music still arrives), if there is one."""
        with self._changed:
            if self._failure is not None:
                raise self._failure

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def next_result(self, index: int, cancelled: threading.Event, on_progress: Callable[[Progress], None]) -> ShotResult:
        """Shot `index` once its segment is on disk; raises the first shot's failure, or Cancelled."""
        while True:
            self.drain_progress(on_progress)
            if cancelled.is_set():
                raise Cancelled("compose cancelled by the caller")
            with self._changed:
                if self._failure is not None:
                    raise self._failure
                if index in self._results:
                    return self._results.pop(index)
                self._changed.wait(0.1)

    def drain_progress(self, on_progress: Callable[[Progress], None]) -> None:
        while True:
            try:
                on_progress(self._progress.get_nowait())
            except queue.Empty:
                return

    def cancel(self) -> None:
        """Stop every shot: cancel the calls in flight, take no new shot, remove the segments not taken."""
        self._stop.set()
        with self._changed:
            sources = list(self._in_flight.values())
            self._changed.notify_all()
        for source in sources:
            source.cancel()

    def close(self) -> None:
        self.cancel()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(2.0)
        with self._changed:
            for result in self._results.values():
                result.path.unlink(missing_ok=True)
            self._results.clear()

    # -------------------------------------------------------------------------------------------------- workers
    def _work(self) -> None:
        while not self._stop.is_set():
            shot = self._next_shot()
            if shot is None:
                return
            try:
                result = self._make_with_retries(shot)
            except ComposeError as error:
                self._fail(error)
                return
            except Exception as error:  # noqa: BLE001 - a bug: the composition fails with it, at once
                log.exception("shot %d failed", shot.index)
                self._fail(ComposeError(f"shot {shot.index}: {type(error).__name__}: {error}"))
                return
            if result is None:  # stopped
                return
            with self._changed:
                self._results[shot.index] = result
                self._changed.notify_all()

    def _next_shot(self) -> Shot | None:
        """The next shot to make, waiting while the plan is still growing; None when there is none left (or stop)."""
        with self._changed:
            while not self._stop.is_set():
                try:
                    return self._pending.get_nowait()
                except queue.Empty:
                    if self.planned:
                        return None
                self._changed.wait(0.1)
        return None

    def _make_with_retries(self, shot: Shot) -> ShotResult | None:
        failed_on: set[str] = set()  # the replicas this shot failed on, named by their headers
        for attempt in range(1, self.attempts + 1):
            try:
                return self._attempt(shot, attempt, failed_on)
            except ComposeError as error:
                if not error.retryable or attempt == self.attempts or self._stop.is_set():
                    raise
                avoid = f", on another replica than {', '.join(sorted(failed_on))} if one answers" if failed_on else ""
                log.warning("shot %d, attempt %d: %s; making it again%s", shot.index, attempt, error.message, avoid)
        return None

    def _attempt(self, shot: Shot, attempt: int, failed_on: set[str]) -> ShotResult | None:
        """One attempt: calls until one lands on a replica the shot has not failed on (each other call is cancelled at
        its header), at most `4 × replicas seen` of them; then the next call makes it wherever it lands. A declined
        call waits a random moment before the next: two workers retrying at once on a round robin would otherwise
        keep drawing, in lockstep, each the replica its own shot failed on."""
        declined = 0
        while True:
            with self._changed:
                bound = 4 * len(self._seen | failed_on)
            avoid = frozenset(failed_on) if declined < bound else frozenset()
            if declined and not avoid:  # the last call of this attempt: it makes the shot wherever it lands
                log.warning("shot %d, attempt %d: no replica but the one(s) it failed on (%s) answered %d calls; "
                            "making it on the replica the next call reaches, even one of those", shot.index, attempt,
                            ", ".join(sorted(failed_on)), declined)  # fmt: skip
            try:
                return self._make(shot, attempt, avoid, failed_on)
            except _OnFailedReplica as landed:
                declined += 1
                log.info("shot %d, attempt %d: call %d landed on replica %s, which failed it; calling again",
                         shot.index, attempt, declined, landed.replica)  # fmt: skip
                self._stop.wait(random.uniform(0.0, 0.05))

    def _make(self, shot: Shot, attempt: int, avoid: frozenset[str], failed_on: set[str]) -> ShotResult | None:
        """One call: the shot into its segment; None when the runner stopped. Raises _OnFailedReplica when the call's
        header names a replica in `avoid` (the call is cancelled there, nothing written); a failure after the header
        adds the header's replica to `failed_on`."""
        path = self.work_dir / f"shot-{shot.index}-{id(self):x}-{attempt}.mp4"
        source = self.make_source(shot)
        with self._changed:
            if self._stop.is_set():  # closed while the call was made: it is cancelled like any other
                source.cancel()
                return None
            self._in_flight[shot.index] = source
        started = time.monotonic()
        call = _Call()
        done = False
        try:
            source.start()
            if not self._read(shot, source, avoid, path, call):
                return None
            frames = call.writer.close()
            done = True
        except MuxError as error:
            raise MuxFailed(f"encoding shot {shot.index} failed: {error}") from error
        except ComposeError:
            if call.header is not None and call.header.replica:
                failed_on.add(call.header.replica)
            raise
        finally:
            if not done:  # stopped, declined or failed: no call left running, no partial segment left on disk
                source.cancel()
                if call.writer is not None:
                    call.writer.abort()
            with self._changed:
                self._in_flight.pop(shot.index, None)
        self.spans[shot.index] = (started, time.monotonic())
        header = call.header
        if attempt > 1:
            log.info("shot %d made on replica %s at attempt %d", shot.index, header.replica or "?", attempt)
        return ShotResult(shot, path, frames, header.replica, header.model_id, attempt)

    def _read(self, shot: Shot, source: Source, avoid: frozenset[str], path: Path, call: _Call) -> bool:
        """The call's events into `call` (its header, then its frames into a segment opened at the header, for a call
        that makes the shot); False when the runner stopped."""
        for event in source.events():
            if self._stop.is_set():  # also a cancel() that came while the call started, before it could cancel it
                return False
            if isinstance(event, VideoHeader):
                call.header = self._answered(event, avoid)
                call.writer = SegmentWriter(path, self.video)
            elif call.writer is not None and self._take(shot, call.writer, event):
                break
        if call.writer is None:  # video_events yields the header first or raises; a stand-in source might not
            raise ComposeError(f"shot {shot.index}: the video stream ended without its header")
        return True

    def _answered(self, header: VideoHeader, avoid: frozenset[str]) -> VideoHeader:
        """The replica that took the call: noted; refused (_OnFailedReplica) when the shot already failed there."""
        with self._changed:
            if header.replica:
                self._seen.add(header.replica)
        if header.replica in avoid:
            raise _OnFailedReplica(header.replica)
        return header

    def _take(self, shot: Shot, writer: SegmentWriter, event: object) -> bool:
        """One event after the header into the segment (frames) or the progress; True at the stream's end."""
        if isinstance(event, Frame):
            writer.add_frame(event.rgb)
            self._advance(shot, writer.frames / shot.frames)
        elif isinstance(event, Progress) and event.stage == common_pb2.STAGE_VIDEO:
            self._advance(shot, 0.9 * event.fraction)  # denoising; the last tenth is the frames arriving
        return isinstance(event, Ended)

    def _advance(self, shot: Shot, fraction: float) -> None:
        with self._changed:
            self._made[shot.index] = max(self._made[shot.index], min(fraction, 1.0))
            made = sum(self._made[s.index] * s.frames for s in self.shots) / max(self.total_frames, 1)
            done = sum(1 for s in self.shots if self._made[s.index] >= 1.0)
            if made - self._reported < 0.01 and made < 1.0:
                return
            self._reported = made
            planned = len(self.shots)
            more = "" if self.planned else " (more to plan as the music arrives)"
        self._progress.put(Progress("video", common_pb2.STAGE_VIDEO, made, segment=done, total_segments=planned,
                                    message=f"{done} of {planned} shots made{more}"))  # fmt: skip

    def _fail(self, error: ComposeError) -> None:
        with self._changed:
            if self._failure is None:
                self._failure = error
            self._changed.notify_all()
        self.cancel()
