"""JobStore against SQLite and the real PostgreSQL on this machine (a database created and dropped here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import tunereel.composer.store as store_module
from tunereel.request import validate_request
from tunereel.composer.store import (
    CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, IdempotencyConflict, JobStore, QueueFull, metadata,
)  # fmt: skip

REQUEST = validate_request({"genre": "pop", "duration": 1, "video_prompt": "x"})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def make_store(store_url):
    stores = []

    def make(**settings) -> JobStore:
        store = JobStore(store_url, **settings)
        store.migrate()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def test_migrations_match_the_table_definitions(make_store):
    store = make_store()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
    store.migrate()  # idempotent


def test_create_get_and_idempotency(make_store):
    store = make_store()
    job, created = store.create(REQUEST, idempotency_key="k1")
    assert created and job.state == QUEUED and job.attempts == 0
    again, created_again = store.create(REQUEST, idempotency_key="k1")
    assert again.id == job.id and not created_again
    with pytest.raises(IdempotencyConflict):
        store.create(REQUEST.model_copy(update={"genre": "jazz"}), idempotency_key="k1")
    other_owner, created = store.create(REQUEST, idempotency_key="k1", owner="someone-else")
    assert created and other_owner.id != job.id
    assert store.get(job.id).request == REQUEST
    assert store.get(job.id, owner="someone-else") is None


def test_queue_is_bounded(make_store):
    store = make_store(max_queue=2)
    store.create(REQUEST)
    store.create(REQUEST)
    with pytest.raises(QueueFull):
        store.create(REQUEST)


def test_claim_lease_and_finish_once(make_store):
    store = make_store()
    job, _ = store.create(REQUEST)
    claimed = store.claim("w1")
    assert claimed.id == job.id and claimed.state == RUNNING and claimed.attempts == 1
    assert store.claim("w2") is None
    assert store.heartbeat(job.id, "w1", progress=0.5).alive
    assert not store.heartbeat(job.id, "w2").alive
    assert not store.succeed(job.id, "w2", result_path="x", result_size=1, provenance={})
    assert store.succeed(job.id, "w1", result_path="x", result_size=1, provenance={"seed": 1})
    assert not store.succeed(job.id, "w1", result_path="x", result_size=1, provenance={})
    assert store.get(job.id).state == SUCCEEDED and store.get(job.id).progress == 1.0


def test_expired_lease_goes_back_to_the_queue_then_fails_after_max_attempts(make_store):
    store = make_store(lease_seconds=0.2, max_attempts=2)
    job, _ = store.create(REQUEST)
    assert store.claim("dead-worker").attempts == 1
    time.sleep(0.3)
    second = store.claim("w2")  # the expired lease is returned first, then claimed again
    assert second.id == job.id and second.attempts == 2 and "stopped responding" in second.error
    assert not store.heartbeat(job.id, "dead-worker").alive
    time.sleep(0.3)
    assert store.claim("w3") is None
    failed = store.get(job.id)
    assert failed.state == FAILED and "gave up after 2 attempts" in failed.error


def test_retry_later_waits_its_delay(make_store):
    store = make_store(max_attempts=3)
    job, _ = store.create(REQUEST)
    store.claim("w1")
    assert store.retry_later(job.id, "w1", "music service is unavailable", delay=0.3) == QUEUED
    assert store.claim("w1") is None
    time.sleep(0.35)
    assert store.claim("w1").attempts == 2


def test_cancel_queued_and_running(make_store):
    store = make_store()
    queued, _ = store.create(REQUEST)
    running, _ = store.create(REQUEST)
    store.claim("w1")  # takes the oldest: `queued`
    store.request_cancel(running.id)
    assert store.get(running.id).state == CANCELED
    beat = store.heartbeat(queued.id, "w1")
    assert beat.alive and not beat.cancel_requested
    store.request_cancel(queued.id)
    assert store.heartbeat(queued.id, "w1").cancel_requested
    assert store.cancel_done(queued.id, "w1")
    assert store.get(queued.id).state == CANCELED


def test_list_newest_first_with_pages(make_store):
    store = make_store()
    ids = [store.create(REQUEST)[0].id for _ in range(5)]
    first = store.list(None, limit=2)
    assert [job.id for job in first] == ids[::-1][:2]
    rest = store.list(None, limit=10, before=(first[-1].created_at, first[-1].id))
    assert [job.id for job in rest] == ids[::-1][2:]
    assert store.queue_position(store.get(ids[3])) == 3


def _frozen_clock(store: JobStore, monkeypatch) -> JobStore:
    """`store` with its database clock stopped at the current reading: every statement happens in one tick."""
    with store.engine.connect() as db:
        now = store.now(db)
    monkeypatch.setattr(store, "now", lambda db: now)
    return store


def test_jobs_made_in_one_tick_of_the_clock_keep_the_order_they_were_made_in(make_store, monkeypatch):
    # SQLite's clock reads in milliseconds and a fast machine makes several jobs in one; the random id must not
    # then decide which is newest, which is next in the queue, or which a worker takes first.
    store = _frozen_clock(make_store(), monkeypatch)
    ids = [store.create(REQUEST)[0].id for _ in range(6)]
    assert [job.id for job in store.list(None, limit=10)] == ids[::-1]
    assert [store.queue_position(store.get(job_id)) for job_id in ids] == list(range(6))
    assert [store.claim("w").id for _ in ids] == ids


def test_each_change_of_a_job_in_one_tick_of_the_clock_is_later_than_the_one_before(make_store, monkeypatch):
    # The job watchers drop a view older than the one they delivered; a change in the same tick must not look older.
    store = _frozen_clock(make_store(), monkeypatch)
    job, _ = store.create(REQUEST)
    seen = [job.updated_at]
    for change in (
        lambda: store.claim("w"),
        lambda: store.heartbeat(job.id, "w", progress=0.5),
        lambda: store.retry_later(job.id, "w", "busy", delay=0.0),
        lambda: store.claim("w"),
        lambda: store.request_cancel(job.id),
        lambda: store.cancel_done(job.id, "w"),
    ):
        change()
        seen.append(store.get(job.id).updated_at)
    assert store.get(job.id).state == CANCELED
    assert all(earlier < later for earlier, later in zip(seen, seen[1:])), seen


def test_concurrent_workers_never_share_a_job(make_store):
    store = make_store()
    ids = {store.create(REQUEST)[0].id for _ in range(20)}
    claims: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim(name)) is not None:
            with lock:
                claims.append(job.id)
            store.succeed(job.id, name, result_path="r", result_size=1, provenance={})

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == sorted(ids)


def test_sweep_deletes_old_finished_jobs(make_store):
    store = make_store()
    job, _ = store.create(REQUEST)
    store.claim("w")
    store.succeed(job.id, "w", result_path="/tmp/none.mp4", result_size=1, provenance={})
    assert store.sweep(older_than=time.time() - 60) == []
    assert store.sweep(older_than=time.time() + 1) == ["/tmp/none.mp4"]
    assert store.get(job.id) is None


def test_upgrade_keeps_existing_jobs(store_url):
    from alembic import command
    from alembic.config import Config

    store = JobStore(store_url)
    config = Config()
    config.set_main_option("script_location", str(Path(store_module.__file__).with_name("migrations")))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(sa.text(
            "INSERT INTO jobs (id, owner, state, request_json, request_hash, max_attempts, created_at, updated_at) "
            "VALUES ('00000000-0000-4000-8000-000000000001', '', 'queued', '{}', 'h', 5, 1.0, 1.0)"
        ))
    store.migrate()
    job = store.get("00000000-0000-4000-8000-000000000001")
    assert job.state == QUEUED and job.stage_progress == {}
    store.close()


# --- per-key quotas (issue 13, item 7) --------------------------------------------------------------------------------

def test_one_key_cannot_fill_the_queue_for_everyone(make_store):
    from tunereel.composer.store import Quotas, QuotaExceeded

    store = make_store(max_queue=100, quotas=Quotas(active_jobs=3))
    for _ in range(3):
        store.create(REQUEST, owner="greedy")
    with pytest.raises(QuotaExceeded, match="3 jobs waiting or running"):
        store.create(REQUEST, owner="greedy")
    store.create(REQUEST, owner="other")  # another key still gets in
    job = store.claim("w1")
    store.fail(job.id, "w1", "done")  # one of greedy's ended: room again
    store.create(REQUEST, owner="greedy")


def test_create_then_cancel_cannot_grow_the_table_without_bound(make_store):
    from tunereel.composer.store import Quotas, QuotaExceeded

    store = make_store(quotas=Quotas(kept_jobs=5))
    for _ in range(5):
        job, _ = store.create(REQUEST, owner="churn")
        store.request_cancel(job.id)
    with pytest.raises(QuotaExceeded, match="5 jobs stored"):
        store.create(REQUEST, owner="churn")


def test_stored_bytes_are_limited_per_key(make_store):
    from tunereel.composer.store import Quotas, QuotaExceeded

    store = make_store(quotas=Quotas(stored_bytes=1000))
    store.create(REQUEST, owner="big")
    job = store.claim("w1")
    store.succeed(job.id, "w1", result_path="/tmp/x.mp4", result_size=1000, provenance={})
    with pytest.raises(QuotaExceeded, match="stored videos take 1000 bytes"):
        store.create(REQUEST, owner="big")
    store.create(REQUEST, owner="small")


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_a_worker_with_a_skewed_clock_neither_steals_a_live_lease_nor_keeps_a_dead_one(make_store, monkeypatch, skew):
    """Leases compare against the database's clock: a replica whose clock is an hour off behaves as the others."""
    true_time = time.time
    store = make_store(lease_seconds=1.0)

    def skewed(action):
        with monkeypatch.context() as patch:
            patch.setattr(time, "time", lambda: true_time() + skew)
            return action()

    live, _ = store.create(REQUEST)
    assert store.claim("honest").id == live.id
    assert skewed(lambda: store.claim("skewed")) is None, "a live lease was taken by a worker whose clock is ahead"
    assert store.get(live.id).lease_owner == "honest"

    mine, _ = store.create(REQUEST)
    assert skewed(lambda: store.claim("skewed")).id == mine.id
    assert store.claim("honest-2") is None, "the skewed worker's live lease was taken"
    assert skewed(lambda: store.heartbeat(mine.id, "skewed")).alive

    time.sleep(1.3)  # neither worker renews: both leases are dead now, by the database's clock
    reclaimed = {skewed(lambda: store.claim("skewed-2")).id, skewed(lambda: store.claim("skewed-3")).id}
    assert reclaimed == {live.id, mine.id}, "a dead lease was kept by a worker whose clock is behind"
    assert store.get(live.id).attempts == 2 and "stopped responding" in store.get(live.id).error


def test_sqlite_reads_do_not_wait_for_a_long_write_transaction(tmp_path):
    """A writer holding its transaction open (e.g. a slow claim) must not stall job views: reads take no write lock."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    job, _ = store.create(REQUEST)
    seen: list = []

    def read_views() -> None:
        started = time.monotonic()
        record = store.get(job.id)
        seen.append((record.state, len(store.list(None)), store.queue_position(record), time.monotonic() - started))

    try:
        with store.engine.begin() as writer:  # BEGIN IMMEDIATE: the write lock, held for the whole block
            writer.execute(sa.update(store_module.jobs).where(store_module.jobs.c.id == job.id).values(state=RUNNING))
            reader = threading.Thread(target=read_views, daemon=True)
            reader.start()
            reader.join(3.0)
            assert seen, "a read of job views waited for the writer's transaction"
        state, listed, position, took = seen[0]
        assert (state, listed, position) == (QUEUED, 1, 0) and took < 2.0  # the last committed state, at once
        assert store.get(job.id).state == RUNNING
    finally:
        store.close()
