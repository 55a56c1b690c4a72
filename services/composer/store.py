"""JobStore: the only module that touches SQL. SQLite (WAL) by default, PostgreSQL for several composer replicas.

A job is claimed with a lease: the worker renews it while working, and a job whose lease expired (its worker died)
goes back to the queue, up to a maximum number of attempts. Every state change after the claim is a compare-and-set
on (id, lease_owner, state), so two workers can never both finish one job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tunereel.request import UPLOAD_FIELDS, GenerationRequest, scene_upload_ids, trusted_request
from tunereel.v1 import jobs_pb2
from tunereel.wire import job_state_name

log = logging.getLogger("tunereel.composer.store")

__all__ = [
    "JobStore",
    "JobRecord",
    "Heartbeat",
    "QueueFull",
    "QuotaExceeded",
    "Quotas",
    "IdempotencyConflict",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELED",
    "TERMINAL",
    "metadata",
    "jobs",
    "uploads",
    "UploadRecord",
    "UploadInUse",
]


# The names the jobs table stores are the proto enum's (tunereel.wire.job_state_name).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = (
    job_state_name(state)
    for state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_SUCCEEDED,
                  jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELED)
)  # fmt: skip
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})

metadata = sa.MetaData()
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("request_json", sa.Text, nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("stage", sa.Integer, nullable=False, server_default="0"),
    sa.Column("stage_progress_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("not_before", sa.Float, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("result_path", sa.Text, nullable=True),
    sa.Column("result_size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("provenance_json", sa.Text, nullable=True),
    sa.Column("timeline_json", sa.Text, nullable=True),  # a cut video's timeline (tunereel.shots.timeline_dict)
    sa.Column("webhook_state", sa.String(16), nullable=False, server_default="none"),
    sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("webhook_next_at", sa.Float, nullable=False, server_default="0"),
    sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    sa.Index("ix_jobs_state_created", "state", "created_at"),
    sa.Index("ix_jobs_owner_created", "owner", "created_at"),
    sa.Index("ix_jobs_created", "created_at", "id"),
)


uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, server_default=""),
    sa.Column("kind", sa.String(8), nullable=False),  # "audio" or "image"
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("format", sa.String(32), nullable=False, server_default=""),
    sa.Column("filename", sa.String(255), nullable=False, server_default=""),
    sa.Column("duration_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("sample_rate", sa.Integer, nullable=False, server_default="0"),
    sa.Column("channels", sa.Integer, nullable=False, server_default="0"),
    sa.Column("width", sa.Integer, nullable=False, server_default="0"),
    sa.Column("height", sa.Integer, nullable=False, server_default="0"),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.UniqueConstraint("owner", "sha256", name="uq_uploads_owner_sha256"),
    sa.Index("ix_uploads_expires", "expires_at"),
)

UPLOAD_COLUMNS = ("kind", "sha256", "size_bytes", "format", "filename", "duration_seconds", "sample_rate", "channels",
                  "width", "height", "path")  # fmt: skip


@dataclass(frozen=True)
class UploadRecord:
    id: str
    owner: str
    kind: str
    sha256: str
    size_bytes: int
    format: str
    filename: str
    duration_seconds: float
    sample_rate: int
    channels: int
    width: int
    height: int
    path: str
    created_at: float
    expires_at: float

    @classmethod
    def from_row(cls, row: Any) -> UploadRecord:
        return cls(**dict(row._mapping))


class UploadInUse(Exception):
    def __init__(self, upload_id: str, job_id: str):
        super().__init__(f"upload {upload_id} is used by job {job_id}, which has not ended")
        self.job_id = job_id


class QueueFull(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the queue is full ({limit} jobs waiting or running); retry later")
        self.limit = limit


class QuotaExceeded(QueueFull):
    """One key's own limit (jobs waiting or running, jobs kept, bytes of results kept): RESOURCE_EXHAUSTED / 429."""

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.limit = 0


@dataclass(frozen=True)
class Quotas:
    """Per key (owner), so one key cannot fill the queue, the table or the results volume for everyone."""

    active_jobs: int = 10  # TUNEREEL_QUOTA_ACTIVE_JOBS: queued + running
    kept_jobs: int = 1000  # TUNEREEL_QUOTA_KEPT_JOBS: rows of any state within the retention (create-then-cancel)
    stored_bytes: int = 20 * 1024**3  # TUNEREEL_QUOTA_STORED_BYTES: results kept, until the sweeper removes them


class IdempotencyConflict(Exception):
    def __init__(self, key: str, job_id: str):
        super().__init__(f"idempotency key {key!r} was already used for job {job_id} with a different request")
        self.job_id = job_id


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    state: str
    request: GenerationRequest  # validated once, when the job was created
    idempotency_key: str | None
    webhook_url: str | None
    progress: float
    stage: int
    stage_progress: dict[str, float]
    error: str
    attempts: int
    max_attempts: int
    lease_owner: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    ended_at: float | None
    updated_at: float
    result_path: str | None
    result_size: int
    provenance: dict[str, Any] | None
    webhook_state: str
    timeline: dict[str, Any] | None = None  # tempo, beats, sections, shots of a video cut with its music

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            owner=m["owner"],
            state=m["state"],
            request=trusted_request(json.loads(m["request_json"])),
            idempotency_key=m["idempotency_key"],
            webhook_url=m["webhook_url"],
            progress=m["progress"],
            stage=m["stage"],
            stage_progress=json.loads(m["stage_progress_json"] or "{}"),
            error=m["error"],
            attempts=m["attempts"],
            max_attempts=m["max_attempts"],
            lease_owner=m["lease_owner"],
            cancel_requested=bool(m["cancel_requested"]),
            created_at=m["created_at"],
            started_at=m["started_at"],
            ended_at=m["ended_at"],
            updated_at=m["updated_at"],
            result_path=m["result_path"],
            result_size=m["result_size"],
            provenance=json.loads(m["provenance_json"]) if m["provenance_json"] else None,
            webhook_state=m["webhook_state"],
            timeline=json.loads(m["timeline_json"]) if m.get("timeline_json") else None,
        )


@dataclass(frozen=True)
class Heartbeat:
    alive: bool  # the worker still holds the lease
    cancel_requested: bool


def request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# A microsecond: a step an epoch-seconds double still holds (its spacing is at most 4.8e-7 s until 2106).
ORDER_STEP = 1e-6

READ_ONLY = "tunereel_read_only"  # an execution option: this connection only reads


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'jobs.db').resolve()}"


class JobStore:
    def __init__(self, url: str, *, max_queue: int = 100, max_attempts: int = 5, lease_seconds: float = 30.0,
                 quotas: Quotas | None = None):  # fmt: skip
        self.url = url
        self.quotas = quotas  # None: no per-key limits (the server always sets them)
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.engine = _engine(url)
        # Reads take no write lock: on SQLite they open a deferred transaction (WAL lets them run beside a writer).
        self.reader = self.engine.execution_options(**{READ_ONLY: True})
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(job_id)` after this object commits a change of that job, on the thread that made it.
        Changes committed by other processes (other composer replicas on one database) are not seen here."""
        self._listeners.append(listener)

    def _changed(self, *job_ids: str) -> None:
        for job_id in job_ids:
            for listener in self._listeners:
                try:
                    listener(job_id)
                except Exception:  # noqa: BLE001 - a listener's fault must not undo or stop the committed change
                    log.warning("job change listener failed for %s", job_id, exc_info=True)

    # --- schema -------------------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe when several replicas start at once)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with self.engine.begin() as connection:
            if self.is_postgres:  # one migrator at a time across replicas
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def now(self, db: sa.Connection) -> float:
        """The database's clock in epoch seconds: leases, claims and retry times compare against one clock, not
        each replica's (a replica whose clock is an hour off neither steals a live lease nor keeps a dead one)."""
        if self.is_postgres:
            return float(db.execute(sa.select(sa.extract("epoch", sa.func.now()))).scalar_one())
        return float(db.execute(sa.select((sa.func.julianday("now") - 2440587.5) * 86400.0)).scalar_one())

    # --- creation and reading -----------------------------------------------------------------------------------
    def create(
        self,
        request: GenerationRequest,
        *,
        owner: str = "",
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        identity: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; returns (job, created). `identity` is what idempotency compares (defaults to `request`)."""
        digest = request_hash(identity if identity is not None else request.model_dump())
        with self.engine.begin() as db:
            if self.is_postgres:  # count-then-insert must be atomic for the queue bound
                db.execute(sa.text("SELECT pg_advisory_xact_lock(727275)"))
            now = self.now(db)
            if idempotency_key:
                existing = db.execute(
                    sa.select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == idempotency_key)
                ).first()
                if existing is not None:
                    record = JobRecord.from_row(existing)
                    if existing._mapping["request_hash"] != digest:
                        raise IdempotencyConflict(idempotency_key, record.id)
                    return record, False
            active = db.execute(
                sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state.in_([QUEUED, RUNNING]))
            ).scalar_one()
            if active >= self.max_queue:
                raise QueueFull(self.max_queue)
            if self.quotas is not None:
                self._check_quotas(db, owner)
            job_id = str(uuid.uuid4())
            created_at = self._next_created_at(db, now)
            db.execute(
                jobs.insert().values(
                    id=job_id,
                    owner=owner,
                    state=QUEUED,
                    request_json=json.dumps(request.model_dump(), sort_keys=True),
                    request_hash=digest,
                    idempotency_key=idempotency_key,
                    webhook_url=webhook_url,
                    max_attempts=self.max_attempts,
                    created_at=created_at,
                    updated_at=created_at,
                    not_before=0.0,
                    webhook_state="pending" if webhook_url else "none",
                )
            )
            return JobRecord.from_row(db.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()), True

    def _next_created_at(self, db: sa.Connection, now: float) -> float:
        """`now`, or just after the newest job when that is not earlier: creation order is strict, so lists,
        queue positions and claims follow the order jobs were submitted in. The clock alone ties (SQLite's reads in
        milliseconds; several jobs fit in one) and the random id would then decide. Creations are serialised (the
        write lock, or the advisory lock on PostgreSQL), so the newest is read and passed without a race."""
        newest = db.execute(sa.select(sa.func.max(jobs.c.created_at))).scalar()
        return now if newest is None or now > newest else newest + ORDER_STEP

    def _check_quotas(self, db: sa.Connection, owner: str) -> None:
        assert self.quotas is not None
        mine = jobs.c.owner == owner
        active, kept, stored = db.execute(
            sa.select(
                sa.func.count().filter(jobs.c.state.in_([QUEUED, RUNNING])),
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(jobs.c.result_size), 0),
            ).where(mine)
        ).one()
        if active >= self.quotas.active_jobs:
            raise QuotaExceeded(f"this key already has {active} jobs waiting or running (its limit is "
                                f"{self.quotas.active_jobs}); retry when one ends")  # fmt: skip
        if kept >= self.quotas.kept_jobs:
            raise QuotaExceeded(f"this key already has {kept} jobs stored (its limit is {self.quotas.kept_jobs}); "
                                "old jobs are removed after the retention period")  # fmt: skip
        if stored >= self.quotas.stored_bytes:
            raise QuotaExceeded(f"this key's stored videos take {stored} bytes (its limit is "
                                f"{self.quotas.stored_bytes}); old results are removed after the retention period")  # fmt: skip

    def get(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        with self.reader.connect() as db:
            row = db.execute(query).first()
        return JobRecord.from_row(row) if row is not None else None

    def get_many(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """Several jobs in one query (the job watchers' poll); missing ids are simply absent."""
        if not job_ids:
            return {}
        with self.reader.connect() as db:
            rows = db.execute(sa.select(jobs).where(jobs.c.id.in_(job_ids))).all()
        return {row._mapping["id"]: JobRecord.from_row(row) for row in rows}

    def list(self, owner: str | None, *, limit: int = 20, before: tuple[float, str] | None = None) -> list[JobRecord]:
        """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if before is not None:
            created, last_id = before
            query = query.where(
                sa.or_(jobs.c.created_at < created, sa.and_(jobs.c.created_at == created, jobs.c.id < last_id))
            )
        with self.reader.connect() as db:
            return [JobRecord.from_row(row) for row in db.execute(query)]

    def queue_position(self, record: JobRecord) -> int:
        if record.state != QUEUED:
            return 0
        with self.reader.connect() as db:
            return db.execute(
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(
                    jobs.c.state == QUEUED,
                    sa.or_(
                        jobs.c.created_at < record.created_at,
                        sa.and_(jobs.c.created_at == record.created_at, jobs.c.id < record.id),
                    ),
                )
            ).scalar_one()

    def recent_durations(self, limit: int = 20) -> list[float]:
        """Run times of the latest succeeded jobs, for ETAs."""
        with self.reader.connect() as db:
            rows = db.execute(
                sa.select(jobs.c.ended_at - jobs.c.started_at)
                .where(jobs.c.state == SUCCEEDED, jobs.c.started_at.is_not(None))
                .order_by(jobs.c.ended_at.desc())
                .limit(limit)
            ).all()
        return [row[0] for row in rows if row[0] is not None]

    # --- the worker's side --------------------------------------------------------------------------------------
    def claim(self, worker: str) -> JobRecord | None:
        """Take the oldest runnable job with a fresh lease; first returns expired leases to the queue."""
        with self.engine.begin() as db:
            now = self.now(db)
            expired = self._expire_leases(db, now)
            query = (
                sa.select(jobs.c.id)
                .where(jobs.c.state == QUEUED, jobs.c.not_before <= now)
                .order_by(jobs.c.created_at, jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job_id = db.execute(query).scalar()
            claimed = job_id is not None and db.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == QUEUED)
                .values(
                    state=RUNNING,
                    lease_owner=worker,
                    lease_expires_at=now + self.lease_seconds,
                    attempts=jobs.c.attempts + 1,
                    started_at=now,
                    progress=0.0,
                    stage=0,
                    stage_progress_json="{}",
                    updated_at=_after(now),
                )
            ).rowcount == 1
            record = JobRecord.from_row(db.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()) if claimed else None
        self._changed(*expired, *([job_id] if claimed else []))
        return record

    def _expire_leases(self, db: sa.Connection, now: float) -> list[str]:
        """Jobs whose worker stopped renewing go back to the queue (or end); returns their ids."""
        expired = db.execute(
            sa.select(jobs.c.id, jobs.c.attempts, jobs.c.max_attempts, jobs.c.cancel_requested)
            .where(jobs.c.state == RUNNING, jobs.c.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for job_id, attempts, max_attempts, cancel in expired:
            if cancel:
                values = dict(state=CANCELED, ended_at=now, error="canceled")
            elif attempts >= max_attempts:
                values = dict(
                    state=FAILED,
                    ended_at=now,
                    error=f"gave up after {attempts} attempts: the worker running this job stopped responding",
                )
            else:
                values = dict(state=QUEUED, error="the previous attempt's worker stopped responding; retrying")
            db.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == RUNNING, jobs.c.lease_expires_at < now)
                .values(lease_owner=None, lease_expires_at=None, updated_at=_after(now), **values)
            )
        return [job_id for job_id, *_ in expired]

    def heartbeat(
        self,
        job_id: str,
        worker: str,
        *,
        progress: float | None = None,
        stage: int | None = None,
        stage_progress: dict[str, float] | None = None,
    ) -> Heartbeat:
        """Renew the lease (and record progress); tells the worker whether it still owns the job and if it should stop."""
        values: dict[str, Any] = {}
        if progress is not None:
            values["progress"] = progress
        if stage is not None:
            values["stage"] = stage
        if stage_progress is not None:
            values["stage_progress_json"] = json.dumps(stage_progress, sort_keys=True)
        with self.engine.begin() as db:
            now = self.now(db)
            values.update(lease_expires_at=now + self.lease_seconds, updated_at=_after(now))
            renewed = db.execute(
                jobs.update().where(*self._owned(job_id, worker)).values(**values)
            ).rowcount
            cancel = db.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        if renewed == 1:
            self._changed(job_id)
        return Heartbeat(alive=renewed == 1, cancel_requested=bool(cancel))

    def succeed(self, job_id: str, worker: str, *, result_path: str, result_size: int, provenance: dict,
                timeline: dict | None = None) -> bool:  # fmt: skip
        return self._end(
            job_id, worker, state=SUCCEEDED, progress=1.0, error="", result_path=result_path,
            result_size=result_size, provenance_json=json.dumps(provenance, sort_keys=True),
            timeline_json=json.dumps(timeline, sort_keys=True) if timeline is not None else None,
        )  # fmt: skip

    def fail(self, job_id: str, worker: str, error: str) -> bool:
        return self._end(job_id, worker, state=FAILED, error=error)

    def cancel_done(self, job_id: str, worker: str) -> bool:
        return self._end(job_id, worker, state=CANCELED, error="canceled")

    def retry_later(self, job_id: str, worker: str, error: str, delay: float) -> str:
        """Put the job back in the queue after `delay` seconds, or fail it when its attempts are used up."""
        with self.engine.begin() as db:
            now = self.now(db)
            row = db.execute(sa.select(jobs.c.attempts, jobs.c.max_attempts).where(*self._owned(job_id, worker))).first()
            if row is None:
                return "lost"
            attempts, max_attempts = row
            if attempts >= max_attempts:
                values = dict(state=FAILED, ended_at=now, error=f"gave up after {attempts} attempts: {error}")
            else:
                values = dict(state=QUEUED, not_before=now + delay, error=f"{error} (retrying, attempt {attempts} of {max_attempts})")
            db.execute(
                jobs.update()
                .where(*self._owned(job_id, worker))
                .values(lease_owner=None, lease_expires_at=None, updated_at=_after(now), **values)
            )
        self._changed(job_id)
        return values["state"]

    def _owned(self, job_id: str, worker: str) -> tuple:
        return (jobs.c.id == job_id, jobs.c.lease_owner == worker, jobs.c.state == RUNNING)

    def _end(self, job_id: str, worker: str, *, state: str, **values: Any) -> bool:
        with self.engine.begin() as db:
            now = self.now(db)
            ended = db.execute(
                jobs.update()
                .where(*self._owned(job_id, worker))
                .values(state=state, ended_at=now, updated_at=_after(now), lease_owner=None, lease_expires_at=None,
                        **values)
            ).rowcount == 1
        if ended:
            self._changed(job_id)
        return ended

    # --- the owner's side ---------------------------------------------------------------------------------------
    def request_cancel(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """A queued job ends at once; a running one is flagged and its worker stops it at the next heartbeat."""
        where = [jobs.c.id == job_id] + ([jobs.c.owner == owner] if owner is not None else [])
        with self.engine.begin() as db:
            now = self.now(db)
            db.execute(
                jobs.update()
                .where(*where, jobs.c.state == QUEUED)
                .values(state=CANCELED, ended_at=now, updated_at=_after(now), cancel_requested=True, error="canceled")
            )
            db.execute(
                jobs.update()
                .where(*where, jobs.c.state == RUNNING)
                .values(cancel_requested=True, updated_at=_after(now))
            )
            row = db.execute(sa.select(jobs).where(*where)).first()
        if row is None:
            return None
        self._changed(job_id)
        return JobRecord.from_row(row)

    # --- housekeeping -------------------------------------------------------------------------------------------
    def sweep(self, older_than: float) -> list[str]:
        """Delete jobs that ended before `older_than` (epoch seconds); returns their result paths to delete."""
        with self.engine.begin() as db:
            rows = db.execute(
                sa.select(jobs.c.id, jobs.c.result_path).where(
                    jobs.c.state.in_(list(TERMINAL)), jobs.c.ended_at < older_than,
                    jobs.c.webhook_state.in_(["none", "delivered", "failed"]),
                )  # fmt: skip
            ).all()
            if rows:
                db.execute(jobs.delete().where(jobs.c.id.in_([row[0] for row in rows])))
        self._changed(*(row[0] for row in rows))
        return [row[1] for row in rows if row[1]]

    def result_paths(self) -> set[str]:
        with self.reader.connect() as db:
            return {row[0] for row in db.execute(sa.select(jobs.c.result_path).where(jobs.c.result_path.is_not(None)))}

    # --- uploads ------------------------------------------------------------------------------------------------
    def add_upload(self, owner: str, values: dict[str, Any], *, expires_at: float) -> tuple[UploadRecord, bool]:
        """Record a stored file; returns (upload, created). The same bytes from the same owner give the upload
        recorded before (its expiry pushed to `expires_at`), and the caller removes its own copy of the file."""
        with self.engine.begin() as db:
            now = self.now(db)
            existing = db.execute(
                sa.select(uploads).where(uploads.c.owner == owner, uploads.c.sha256 == values["sha256"])
            ).first()
            if existing is not None:
                keep = max(existing._mapping["expires_at"], expires_at)
                db.execute(uploads.update().where(uploads.c.id == existing._mapping["id"]).values(expires_at=keep))
                row = db.execute(sa.select(uploads).where(uploads.c.id == existing._mapping["id"])).one()
                return UploadRecord.from_row(row), False
            upload_id = str(uuid.uuid4())
            db.execute(uploads.insert().values(id=upload_id, owner=owner, created_at=now, expires_at=expires_at,
                                               **{name: values.get(name, 0) for name in UPLOAD_COLUMNS}))  # fmt: skip
            return UploadRecord.from_row(db.execute(sa.select(uploads).where(uploads.c.id == upload_id)).one()), True

    def get_upload(self, upload_id: str, owner: str | None = None) -> UploadRecord | None:
        query = sa.select(uploads).where(uploads.c.id == upload_id)
        if owner is not None:
            query = query.where(uploads.c.owner == owner)
        with self.reader.connect() as db:
            row = db.execute(query).first()
        return UploadRecord.from_row(row) if row is not None else None

    def keep_uploads(self, upload_ids: list[str], until: float) -> None:
        """A job uses these uploads: keep them at least until `until` (the sweep also skips them while it runs)."""
        if not upload_ids:
            return
        with self.engine.begin() as db:
            db.execute(uploads.update().where(uploads.c.id.in_(upload_ids), uploads.c.expires_at < until)
                       .values(expires_at=until))  # fmt: skip

    def uploads_in_use(self) -> dict[str, str]:
        """{upload id: job id} for every upload a queued or running job names."""
        with self.reader.connect() as db:
            rows = db.execute(sa.select(jobs.c.id, jobs.c.request_json).where(jobs.c.state.in_([QUEUED, RUNNING]))).all()
        used: dict[str, str] = {}
        for job_id, request_json in rows:
            request = json.loads(request_json)
            for name in UPLOAD_FIELDS:
                if request.get(name):
                    used[request[name]] = job_id
            for upload_id in scene_upload_ids(request):
                used[upload_id] = job_id
        return used

    def delete_upload(self, upload_id: str, owner: str | None = None) -> UploadRecord | None:
        """Remove the record (the caller removes the file); UploadInUse while an unfinished job names it."""
        record = self.get_upload(upload_id, owner)
        if record is None:
            return None
        job_id = self.uploads_in_use().get(record.id)
        if job_id is not None:
            raise UploadInUse(record.id, job_id)
        with self.engine.begin() as db:
            db.execute(uploads.delete().where(uploads.c.id == record.id))
        return record

    def sweep_uploads(self, now: float) -> list[str]:
        """Delete the records of uploads expired before `now` that no unfinished job uses; returns their paths."""
        used = set(self.uploads_in_use())
        with self.engine.begin() as db:
            rows = [row for row in db.execute(sa.select(uploads.c.id, uploads.c.path).where(uploads.c.expires_at < now))
                    if row[0] not in used]  # fmt: skip
            if rows:
                db.execute(uploads.delete().where(uploads.c.id.in_([row[0] for row in rows])))
        return [row[1] for row in rows]

    def upload_paths(self) -> set[str]:
        with self.reader.connect() as db:
            return {row[0] for row in db.execute(sa.select(uploads.c.path))}

    # --- webhooks -----------------------------------------------------------------------------------------------
    def claim_webhook(self, hold_seconds: float = 60.0) -> JobRecord | None:
        """An ended job whose webhook is due; held for `hold_seconds` so no other replica sends it meanwhile."""
        with self.engine.begin() as db:
            now = self.now(db)
            job_id = db.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.webhook_state == "pending", jobs.c.state.in_(list(TERMINAL)), jobs.c.webhook_next_at <= now)
                .order_by(jobs.c.ended_at, jobs.c.created_at, jobs.c.id)  # jobs that ended in one tick: in turn
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if job_id is None:
                return None
            db.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.webhook_next_at <= now)
                .values(webhook_next_at=now + hold_seconds, webhook_attempts=jobs.c.webhook_attempts + 1)
            )
            return JobRecord.from_row(db.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    def webhook_result(self, job_id: str, *, delivered: bool, retry_in: float | None) -> None:
        if delivered:
            values: dict[str, Any] = dict(webhook_state="delivered")
        elif retry_in is None:
            values = dict(webhook_state="failed")
        with self.engine.begin() as db:
            if not delivered and retry_in is not None:
                values = dict(webhook_next_at=self.now(db) + retry_in)
            db.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    def webhook_attempts(self, job_id: str) -> int:
        with self.reader.connect() as db:
            return db.execute(sa.select(jobs.c.webhook_attempts).where(jobs.c.id == job_id)).scalar_one()


def _after(now: float) -> sa.ColumnElement[float]:
    """A changed job's `updated_at`: `now`, or just after its last change when the clock has not moved since, so
    each change of a job has a later `updated_at` than the one before (the job watchers order views by it)."""
    return sa.case((jobs.c.updated_at < now, now), else_=jobs.c.updated_at + ORDER_STEP)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            # The driver's own transaction handling is off; BEGIN IMMEDIATE below takes the write lock up front,
            # so count-then-insert and claim are atomic across threads and processes.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection) -> None:
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
