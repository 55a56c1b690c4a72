"""WatchJob's hub: every state a job goes through in this composer, however short; other replicas' changes by poll;
an older view never after a newer one; a slow watcher holds one view per change of state."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tunereel.auth import ApiKeys
from tunereel.composer.job_service import TERMINAL_STATES, JobServicer
from tunereel.composer.store import JobStore
from tunereel.composer.watch import JobWatchHub
from tunereel.request import validate_request
from tunereel.v1 import jobs_pb2

REQUEST = validate_request({"genre": "pop", "duration": 1, "video_prompt": "x"})
QUEUED, RUNNING, SUCCEEDED = jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_SUCCEEDED


def _ended(job: jobs_pb2.Job) -> bool:
    return job.state in TERMINAL_STATES


def _states(updates: list[jobs_pb2.Job]) -> list[int]:
    """The states in the order seen, a run of one state's progress views counted once."""
    states = [update.state for update in updates]
    return [state for index, state in enumerate(states) if index == 0 or states[index - 1] != state]


@pytest.fixture
def store(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    yield store
    store.close()


def _watch_while(servicer: JobServicer, job_id: str, work) -> list[jobs_pb2.Job]:
    """Every view WatchJob sends, with `work` run on a thread of its own once the first one has come."""
    worker = threading.Thread(target=work)

    async def watch() -> list[jobs_pb2.Job]:
        updates = []
        async for job in servicer.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), context=None):
            updates.append(job)
            if len(updates) == 1:
                worker.start()
        return updates

    updates = asyncio.run(asyncio.wait_for(watch(), timeout=20))
    worker.join()
    return updates


def test_a_job_that_runs_within_one_poll_is_seen_in_every_state(store):
    """The worker claims, reports progress and ends the job at once; no poll runs in the meantime (one an hour), so
    only the changes this composer pushes as it commits them reach the watcher."""
    servicer = JobServicer(store, ApiKeys())
    servicer.watchers.interval_s = 3600.0
    job, _ = store.create(REQUEST)

    def run_the_job() -> None:
        claimed = store.claim("worker")
        store.heartbeat(claimed.id, "worker", progress=0.5, stage=2)
        store.succeed(claimed.id, "worker", result_path="/nowhere.mp4", result_size=1, provenance={})

    updates = _watch_while(servicer, job.id, run_the_job)
    assert _states(updates) == [QUEUED, RUNNING, SUCCEEDED]
    assert updates[1].attempts == 1 and updates[-1].progress == 1.0
    servicer.watchers.close()


def test_another_replicas_changes_are_seen_by_the_poll(store, tmp_path):
    servicer = JobServicer(store, ApiKeys())
    servicer.watchers.interval_s = 0.05
    other = JobStore(store.url)  # another composer replica on the same database: its changes are not pushed here
    job, _ = store.create(REQUEST)

    def run_elsewhere() -> None:
        claimed = other.claim("elsewhere")
        threading.Event().wait(0.5)  # several polls while it runs
        other.succeed(claimed.id, "elsewhere", result_path="/nowhere.mp4", result_size=1, provenance={})

    try:
        assert _states(_watch_while(servicer, job.id, run_elsewhere)) == [QUEUED, RUNNING, SUCCEEDED]
    finally:
        other.close()
        servicer.watchers.close()


def test_an_older_view_never_follows_a_newer_one_and_a_slow_watcher_keeps_one_per_state():
    stale = (1.0, jobs_pb2.Job(id="j", state=QUEUED))
    polls = []

    def load(ids):  # a poll that keeps reading the job as it was before the changes pushed below
        polls.append(ids)
        return {"j": stale}

    hub = JobWatchHub(load, _ended, interval_s=0.01)

    async def main():
        updates = []

        async def watcher():
            async for job in hub.watch("j", lambda: stale):
                updates.append(job)

        task = asyncio.create_task(watcher())
        while not updates:
            await asyncio.sleep(0.01)
        for step in range(1, 10):  # progress reports in one burst, before the watcher runs again
            hub.push("j", (2.0 + step, jobs_pb2.Job(id="j", state=RUNNING, progress=step / 10)))
        await asyncio.sleep(0.2)  # ~20 stale polls
        hub.push("j", (20.0, jobs_pb2.Job(id="j", state=SUCCEEDED, progress=1.0)))
        await asyncio.wait_for(task, timeout=5)
        return updates

    updates = asyncio.run(main())
    assert len(polls) >= 2  # stale polls did run between the pushes
    assert _states(updates) == [QUEUED, RUNNING, SUCCEEDED]
    assert len(updates) == 3 and updates[1].progress == pytest.approx(0.9)  # the newest of the burst, not nine views
    assert hub.watching == 0
    hub.close()
