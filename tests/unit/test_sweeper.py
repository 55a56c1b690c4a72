"""Retention: the sweeper deletes old jobs with their results, and stray files only once they are stale."""

from __future__ import annotations

import os
import time

from tunereel.composer.jobs import JobRunner, JobSettings
from tunereel.composer.store import JobStore
from tunereel.request import validate_request


def test_sweep_removes_old_results_and_stale_strays(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    settings = JobSettings(data_dir=tmp_path / "data", retention_seconds=0.0)
    runner = JobRunner(store, composer=None, settings=settings)  # sweeping needs no composer

    job, _ = store.create(validate_request({"genre": "pop", "duration": 1, "video_prompt": "x"}))
    store.claim("w")
    result = settings.results_dir / f"{job.id}.abc.mp4"
    result.write_bytes(b"mp4")
    store.succeed(job.id, "w", result_path=str(result), result_size=3, provenance={})

    stale = settings.work_dir / ".compose-dead.mp4.partial"
    stale.write_bytes(b"left by a killed worker")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = settings.work_dir / ".compose-live.mp4.partial"
    fresh.write_bytes(b"being written right now")

    time.sleep(0.01)
    assert runner.sweep() == 1
    assert store.get(job.id) is None and not result.exists()
    assert not stale.exists() and fresh.exists()
    store.close()
