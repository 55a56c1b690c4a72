"""The job layer's workers: claim jobs from the store, compose them, keep the lease alive, retry, deliver webhooks,
sweep old results. Any number of composer replicas may run these against one store."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from tunereel import wire
from tunereel.redact import public_detail
from tunereel.request import validate_request
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2

from .backends import BackendFailure
from .compose import Composer
from .store import JobRecord, JobStore
from .webhooks import WebhookSender

log = logging.getLogger("tunereel.composer.jobs")

# Share of the overall progress each stage stands for (music and video run at the same time).
STAGE_WEIGHTS = {common_pb2.STAGE_MUSIC: 0.2, common_pb2.STAGE_VIDEO: 0.5, common_pb2.STAGE_MUX: 0.3}
STAGE_KEYS = {common_pb2.STAGE_MUSIC: "music", common_pb2.STAGE_VIDEO: "video", common_pb2.STAGE_MUX: "mux"}
# Backend failures that a later attempt may not meet; everything else fails the job at once.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
}


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
    def __init__(self, store: JobStore, composer: Composer, settings: JobSettings, webhooks: WebhookSender | None = None):
        self.store = store
        self.webhooks = webhooks  # delivery lives in .webhooks; this runner only gives it a thread
        self.composer = composer
        self.settings = settings
        # lease_owner holds 64 characters: a long host name (up to 253) must not make every claim fail.
        self.worker_prefix = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        settings.work_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._spawn(self._work_loop, f"{self.worker_prefix}-w{index}")
        if self.webhooks is not None:
            self._spawn(lambda _name: self.webhooks.run(self._stop), "webhooks")
        self._spawn(self._sweep_loop, "sweeper")

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, args=(name,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- running jobs -------------------------------------------------------------------------------------------
    def _work_loop(self, worker: str) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim(worker)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                log.exception("claim failed")
                job = None
            if job is None:
                self._stop.wait(self.settings.poll_seconds)
                continue
            try:
                self.run_one(job, worker)
            except Exception:  # noqa: BLE001
                log.exception("job %s: unexpected error", job.id)

    def run_one(self, job: JobRecord, worker: str) -> None:
        log.info("job %s: attempt %d started by %s", job.id, job.attempts, worker)
        request = validate_request(job.request)
        cancelled = threading.Event()
        state = {"progress": 0.0, "stage": 0, "lost": False, "cancel": False}
        fractions: dict[int, float] = {}

        def on_progress(event: common_pb2.Progress) -> None:
            if event.stage in STAGE_WEIGHTS:
                fractions[event.stage] = max(fractions.get(event.stage, 0.0), event.fraction)
                state["progress"] = sum(STAGE_WEIGHTS[s] * f for s, f in fractions.items())
                state["stage"] = event.stage

        def keep_lease() -> None:
            interval = min(1.0, self.store.lease_seconds / 3)
            while not cancelled.wait(interval):
                try:
                    beat = self.store.heartbeat(
                        job.id,
                        worker,
                        progress=state["progress"],
                        stage=state["stage"],
                        stage_progress={STAGE_KEYS[s]: round(f, 4) for s, f in fractions.items()},
                    )
                except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                    log.warning("job %s: heartbeat failed", job.id, exc_info=True)
                    continue
                if not beat.alive:
                    state["lost"] = True
                    cancelled.set()
                elif beat.cancel_requested:
                    state["cancel"] = True
                    cancelled.set()

        beat_thread = threading.Thread(target=keep_lease, name=f"lease-{job.id[:8]}", daemon=True)
        beat_thread.start()
        try:
            composition = self.composer.compose(request, on_progress=on_progress, cancelled=cancelled)
        except Cancelled:
            if state["cancel"]:
                self.store.cancel_done(job.id, worker)
                log.info("job %s: canceled", job.id)
            else:
                log.warning("job %s: lease lost; another worker owns it now", job.id)
            return
        except BackendFailure as failure:
            self._after_failure(job, worker, failure)
            return
        finally:
            cancelled.set()
            beat_thread.join()

        # The finished file moves next to the results under a name of its own; the job points at it only if this
        # worker still owns the job, so a late worker can never replace a result another worker delivered.
        result = self.settings.results_dir / f"{job.id}.{uuid.uuid4().hex[:8]}.mp4"
        os.replace(composition.path, result)
        provenance = wire.provenance_to_dict(composition.provenance)
        if self.store.succeed(job.id, worker, result_path=str(result), result_size=result.stat().st_size, provenance=provenance):
            log.info("job %s: succeeded", job.id)
        else:
            result.unlink(missing_ok=True)
            log.warning("job %s: finished after losing its lease; result discarded", job.id)

    def _after_failure(self, job: JobRecord, worker: str, failure: BackendFailure) -> None:
        # The job's `error` is read by its owner: no paths, SQL or peer addresses (the detail goes to the log).
        failure = BackendFailure(failure.code, public_detail(failure.code, failure.message, log))
        if failure.code not in RETRYABLE:
            self.store.fail(job.id, worker, failure.message)
            log.info("job %s: failed: %s", job.id, failure.message)
            return
        delay = min(self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2 ** (job.attempts - 1))
        outcome = self.store.retry_later(job.id, worker, failure.message, delay)
        log.info("job %s: %s (%s); %s", job.id, failure.code.name, failure.message,
                 f"retry in {delay:.1f} s" if outcome == "queued" else outcome)  # fmt: skip

    # --- housekeeping -------------------------------------------------------------------------------------------
    def _sweep_loop(self, _name: str) -> None:
        while not self._stop.wait(self.settings.sweep_every_seconds):
            try:
                self.sweep()
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
