"""The job layer's workers: claim jobs from the store, compose them, keep the lease alive, retry, deliver webhooks,
sweep old results. Any number of composer replicas may run these against one store."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunereel import wire
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2

from .backends import Progress
from .compose import Composer, failure_of
from .errors import ComposeError, public_message
from .kept_music import KeptMusic
from .store import JobRecord, JobStore
from .webhooks import WebhookSender

log = logging.getLogger("tunereel.composer.jobs")

# Share of the overall progress each stage stands for (music and video run at the same time).
STAGE_WEIGHTS = {common_pb2.STAGE_MUSIC: 0.2, common_pb2.STAGE_VIDEO: 0.5, common_pb2.STAGE_MUX: 0.3}


def should_retry(error: ComposeError) -> bool:
    """The retry policy, in one place: only what a later attempt can change (errors.py says which errors those
    are). A deterministic failure fails the job at once instead of making the same video again with the same seed."""
    return error.retryable


class JobProgress:
    """Progress of one running job, written by the compose thread and read by the heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fractions: dict[int, float] = {}
        self._stage = 0

    def update(self, event: Progress) -> None:
        if event.stage in STAGE_WEIGHTS:
            with self._lock:
                self._fractions[event.stage] = max(self._fractions.get(event.stage, 0.0), event.fraction)
                self._stage = event.stage

    def snapshot(self) -> tuple[float, int, dict[str, float]]:
        """(overall progress, current stage, fraction per stage name), consistent with each other."""
        with self._lock:
            fractions = dict(self._fractions)
            stage = self._stage
        overall = sum(STAGE_WEIGHTS[s] * f for s, f in fractions.items())
        return overall, stage, {wire.stage_name(s): round(f, 4) for s, f in fractions.items()}


@dataclass(frozen=True)
class JobSettings:
    data_dir: Path
    workers: int = 1
    poll_seconds: float = 0.25
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 30.0
    retention_seconds: float = 7 * 24 * 3600.0
    sweep_every_seconds: float = 300.0
    webhook_secret: str = ""
    webhook_max_attempts: int = 6

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "tmp"


class JobRunner:
    def __init__(self, store: JobStore, composer: Composer, settings: JobSettings, webhooks: WebhookSender | None = None,
                 *, extra_sweeps: tuple[Callable[[], int], ...] = ()):  # fmt: skip
        self.store = store
        self.webhooks = webhooks  # delivery lives in .webhooks; this runner only gives it a thread
        self.composer = composer
        self.settings = settings
        self.extra_sweeps = extra_sweeps  # e.g. the uploads' sweep, on the same schedule
        # lease_owner holds 64 characters: a long host name (up to 253) must not make every claim fail.
        self.worker_prefix = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()  # running jobs hand their leases back; webhooks and sweeps end
        self._stop_claiming = threading.Event()  # set first: no new job is taken while running ones drain
        self._drain_ends = 0.0
        self._threads: list[threading.Thread] = []
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        settings.work_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._spawn(self._work_loop, f"{self.worker_prefix}-w{index}")
        if self.webhooks is not None:
            self._spawn(lambda _name: self.webhooks.run(self._stop), "webhooks")
        self._spawn(self._sweep_loop, "sweeper")

    def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop claiming now; jobs still running after `drain_seconds` go back to the queue at their next heartbeat
        (within a second), so another replica takes them without waiting for the lease to run out."""
        self._stop_claiming.set()
        self._drain_ends = time.monotonic() + max(0.0, drain_seconds)
        if drain_seconds <= 0:
            self._stop.set()
            return
        timer = threading.Timer(drain_seconds, self._stop.set)
        timer.daemon = True
        timer.start()

    @property
    def stopping(self) -> bool:
        return self._stop_claiming.is_set()

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the workers (a drain's remaining time, then `timeout` for the hand-back); once none runs a job
        there is nothing left to drain, so webhooks and sweeps end then, not at the drain's end."""
        workers = [thread for thread in self._threads if thread.name.startswith(self.worker_prefix)]
        for thread in workers:
            if thread.is_alive():
                thread.join(max(0.0, self._drain_ends - time.monotonic()) + timeout)
        if not any(thread.is_alive() for thread in workers):
            self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, self._drain_ends - time.monotonic()) + timeout)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, args=(name,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- running jobs -------------------------------------------------------------------------------------------
    def _work_loop(self, worker: str) -> None:
        while not self._stop_claiming.is_set():
            try:
                job = self.store.claim(worker)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                log.exception("claim failed")
                job = None
            if job is None:
                self._stop_claiming.wait(self.settings.poll_seconds)
                continue
            try:
                self.run_one(job, worker)
            except Exception:  # noqa: BLE001
                log.exception("job %s: unexpected error", job.id)

    def run_one(self, job: JobRecord, worker: str) -> None:
        log.info("job %s: attempt %d started by %s", job.id, job.attempts, worker)
        cancelled = threading.Event()
        progress = JobProgress()
        why_stopped: list[str] = []  # "cancel", "lost" or "shutdown": set by the heartbeat thread before `cancelled`

        def keep_lease() -> None:
            interval = min(1.0, self.store.lease_seconds / 3)
            while not cancelled.wait(interval):
                overall, stage, stages = progress.snapshot()
                try:
                    beat = self.store.heartbeat(job.id, worker, progress=overall, stage=stage, stage_progress=stages)
                except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                    log.warning("job %s: heartbeat failed", job.id, exc_info=True)
                    continue
                reason = "lost" if not beat.alive else "cancel" if beat.cancel_requested else None
                if reason is None and self._stop.is_set():
                    reason = "shutdown"
                if reason is not None:
                    why_stopped.append(reason)
                    cancelled.set()

        beat_thread = threading.Thread(target=keep_lease, name=f"lease-{job.id[:8]}", daemon=True)
        beat_thread.start()
        # Music made whole by an attempt is kept until the job ends: an attempt after a failure replays it.
        kept_music = KeptMusic(self.settings.work_dir, job.id)
        ended = True  # the job ends with this attempt (no later attempt to keep the music for)
        try:
            composition = self.composer.compose(job.request, on_progress=progress.update, cancelled=cancelled,
                                                kept_music=kept_music)  # fmt: skip
            result = self._move_into_place(job, composition.path)
        except Cancelled:
            ended = self._after_cancel(job, worker, why_stopped[0] if why_stopped else "shutdown")
            return
        except ComposeError as error:
            ended = self._after_failure(job, worker, error)
            return
        except Exception as error:  # noqa: BLE001 - a bug: the job fails now, saying what it was
            reference = uuid.uuid4().hex[:12]
            log.exception("job %s: unexpected error ref=%s", job.id, reference)
            self.store.fail(job.id, worker, f"composer error: {type(error).__name__} (reference {reference})")
            return
        finally:
            cancelled.set()
            beat_thread.join()
            if ended:
                kept_music.discard()

        provenance = wire.provenance_to_dict(composition.provenance)
        if self.store.succeed(job.id, worker, result_path=str(result), result_size=result.stat().st_size, provenance=provenance,
                              timeline=composition.timeline):  # fmt: skip
            log.info("job %s: succeeded", job.id)
        else:
            result.unlink(missing_ok=True)
            log.warning("job %s: finished after losing its lease; result discarded", job.id)

    def _move_into_place(self, job: JobRecord, path: Path) -> Path:
        """The finished file moves next to the results under a name of its own; the job points at it only if this
        worker still owns the job, so a late worker can never replace a result another worker delivered."""
        result = self.settings.results_dir / f"{job.id}.{uuid.uuid4().hex[:8]}.mp4"
        try:
            os.replace(path, result)
        except OSError as error:
            path.unlink(missing_ok=True)
            raise failure_of(error) from error
        return result

    def _after_cancel(self, job: JobRecord, worker: str, reason: str) -> bool:
        """Whether the job ended (canceled); a job handed back or owned by another worker now has attempts to come."""
        if reason == "cancel":
            self.store.cancel_done(job.id, worker)
            log.info("job %s: canceled", job.id)
            return True
        if reason == "shutdown":  # back to the queue now, not when the lease runs out
            self.store.retry_later(job.id, worker, "the composer running this job shut down", 0.0)
            log.info("job %s: handed back (shutting down)", job.id)
        else:
            log.warning("job %s: lease lost; another worker owns it now", job.id)
        return False

    def _after_failure(self, job: JobRecord, worker: str, error: ComposeError) -> bool:
        """Whether the job ended (failed for good); a job queued again, or owned by another worker, has not."""
        kind = type(error).__name__
        message = public_message(error)  # the job's `error` is read by its owner: no paths or peer addresses
        if not should_retry(error):
            self.store.fail(job.id, worker, message)
            log.info("job %s: failed (%s): %s", job.id, kind, message)
            return True
        delay = min(self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2 ** (job.attempts - 1))
        outcome = self.store.retry_later(job.id, worker, message, delay)
        log.info("job %s: %s (%s); %s", job.id, kind, message,
                 f"retry in {delay:.1f} s" if outcome == "queued" else outcome)  # fmt: skip
        return outcome == "failed"

    # --- housekeeping -------------------------------------------------------------------------------------------
    def _sweep_loop(self, _name: str) -> None:
        while not self._stop.wait(self.settings.sweep_every_seconds):
            for sweep in (self.sweep, *self.extra_sweeps):
                try:
                    sweep()
                except Exception:  # noqa: BLE001
                    log.exception("sweep failed")

    def sweep(self) -> int:
        """Delete jobs and results older than the retention, and stray files no job points at."""
        removed = self.store.sweep(time.time() - self.settings.retention_seconds)
        for path in removed:
            Path(path).unlink(missing_ok=True)
        known = self.store.result_paths()
        cutoff = time.time() - 3600  # older than any live write: a killed worker's leftovers
        strays = [p for p in self.settings.results_dir.glob("*.mp4") if str(p) not in known]
        strays += list(self.settings.work_dir.glob("*"))
        for path in strays:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
        return len(removed)
