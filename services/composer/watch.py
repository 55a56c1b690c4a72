"""JobWatchHub: every open WatchJob of one composer, fed from two sides.

- This composer's own changes, pushed as the store commits them (`JobStore.add_listener`): a watcher sees every state a
  job goes through here, however short (a tiny job runs for 0.2 s, less than one poll).
- One poll of all watched jobs every `interval_s`, for the changes that other composer replicas on the same store make
  (seen as they are at each poll: a state another replica held for less than that may be seen only as what followed).

Every view carries the store's `updated_at`: a poll that read a job just before a push arrives after it, older, and is
dropped. Each watcher has its own short queue: every change of state in order, progress within one state coalesced to
the newest, so a slow client holds at most one view per change of state, not one per progress report.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tunereel.v1 import jobs_pb2

__all__ = ["JobWatchHub", "Versioned"]

log = logging.getLogger("tunereel.composer.jobs")

Versioned = tuple[float, jobs_pb2.Job]  # (the store's updated_at, the job's view)


def _snapshot(job: jobs_pb2.Job) -> tuple:
    """What a watcher sees change (time fields and ETA alone do not make an event)."""
    return (job.state, round(job.progress, 3), job.stage, job.queue_position, job.attempts, job.error,
            tuple(sorted(job.stage_progress.items())))  # fmt: skip


@dataclass
class _Follower:
    """One open WatchJob: the views it has yet to send."""

    pending: deque[Versioned] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, view: Versioned) -> None:
        if self.pending and self.pending[-1][1].state == view[1].state:
            self.pending[-1] = view  # a newer view of the same state replaces the unsent one
        else:
            self.pending.append(view)
        self.wake.set()

    def start_from(self, first: Versioned) -> None:
        """The view the watch starts with, before whatever was pushed after it was read."""
        self.pending = deque(view for view in self.pending if view[0] > first[0])
        self.pending.appendleft(first)


@dataclass
class _Watched:
    followers: list[_Follower] = field(default_factory=list)
    job: jobs_pb2.Job | None = None  # the newest view delivered
    version: float = -math.inf
    gone: bool = False  # no longer stored


class JobWatchHub:
    """Every open WatchJob of one composer. A watcher waits on an event: it holds no thread while it waits. One task on
    the server's loop reads all watched jobs in one query per interval (on one thread of its own, off the gRPC pool);
    200 watchers of one job cost one view per change, not 200."""

    def __init__(self, load: Callable[[list[str]], dict[str, Versioned]], is_ended: Callable[[jobs_pb2.Job], bool],
                 *, interval_s: float = 0.25):  # fmt: skip
        self._load = load  # the stored jobs among the ids asked for; a job not in the answer is gone
        self._is_ended = is_ended
        self.interval_s = interval_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-watch")
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def watching(self) -> int:
        return sum(len(entry.followers) for entry in self._watched.values())

    def is_watched(self, job_id: str) -> bool:
        """Whether a change of `job_id` has anyone to go to (any thread may ask)."""
        return job_id in self._watched

    def push(self, job_id: str, view: Versioned | None) -> None:
        """A change this composer just committed (any thread): `None` when the job is no longer stored."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, job_id, view)
        except RuntimeError:  # the loop closed meanwhile: the server is gone, and its watches with it
            pass

    async def watch(self, job_id: str, read: Callable[[], Versioned | None]) -> AsyncIterator[jobs_pb2.Job]:
        """The job's current view (from `read`, on the hub's thread), then every change until it ends or is gone.

        The watcher is registered before `read` runs, so a change committed meanwhile is pushed to it, not missed."""
        self._loop = asyncio.get_running_loop()
        entry = self._watched.setdefault(job_id, _Watched())
        follower = _Follower()
        entry.followers.append(follower)
        try:
            first = await self._loop.run_in_executor(self.executor, read)
            if first is None:
                return
            if first[0] > entry.version:
                entry.version, entry.job = first
            follower.start_from(first)
            if self._task is None or self._task.done():
                self._task = self._loop.create_task(self._poll())
            last = None
            while True:
                while follower.pending:
                    _, job = follower.pending.popleft()
                    if _snapshot(job) != last:
                        last = _snapshot(job)
                        yield job
                    if self._is_ended(job):
                        return
                if entry.gone:
                    return
                follower.wake.clear()
                await follower.wake.wait()
        finally:
            entry.followers.remove(follower)
            if not entry.followers and self._watched.get(job_id) is entry:
                del self._watched[job_id]

    def _deliver(self, job_id: str, view: Versioned | None) -> None:
        entry = self._watched.get(job_id)
        if entry is None:
            return
        if view is None:
            entry.gone = True
            for follower in entry.followers:
                follower.wake.set()
            return
        version, job = view
        if version < entry.version:
            return  # read before a change that has already been delivered
        changed = entry.job is None or _snapshot(job) != _snapshot(entry.job)
        entry.version, entry.job = version, job
        if changed:
            for follower in entry.followers:
                follower.offer(view)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watched:
            await asyncio.sleep(self.interval_s)
            ids = list(self._watched)
            try:
                views = await loop.run_in_executor(self.executor, self._load, ids)
            except Exception:  # noqa: BLE001 - a database hiccup: watchers wait for the next round
                log.warning("job watch poll failed", exc_info=True)
                continue
            for job_id in ids:
                self._deliver(job_id, views.get(job_id))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
