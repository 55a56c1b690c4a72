"""JobService over gRPC: the job API on top of the store (any replica answers for any job)."""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
import uuid

import grpc
from google.protobuf import timestamp_pb2

from tunereel import rpc_errors, wire
from tunereel.auth import ApiKeys, metadata_value
from tunereel.request import InvalidRequest, trusted_request, validate_request
from tunereel.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, media_pb2

from .uploads import UploadLibrary, prepare_or_abort
from .store import QUEUED, RUNNING, SUCCEEDED, IdempotencyConflict, JobRecord, JobStore, QueueFull
from .watch import JobWatchHub, Versioned
from .webhooks import WebhookPolicy, check_webhook_url

SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
READ_CHUNK_BYTES = 256 * 1024
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100  # a larger page_size is capped to this (AIP-158), not refused
MAX_IDEMPOTENCY_KEY = 200


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def job_to_proto(record: JobRecord, *, queue_position: int = 0, eta_seconds: float | None = None) -> jobs_pb2.Job:
    job = jobs_pb2.Job(
        id=record.id,
        state=wire.job_state_value(record.state),
        progress=record.progress,
        stage=job_stage(record),
        queue_position=queue_position,
        request=wire.request_to_proto(record.request),
        error=record.error,
        attempts=record.attempts,
        result_size_bytes=record.result_size,
        webhook_url=record.webhook_url or "",
        stage_progress=record.stage_progress,
    )
    for field, seconds in (("create_time", record.created_at), ("start_time", record.started_at), ("end_time", record.ended_at)):
        stamp = _timestamp(seconds)
        if stamp is not None:
            getattr(job, field).CopyFrom(stamp)
    if eta_seconds is not None:
        job.eta.FromNanoseconds(round(eta_seconds * 1e9))
        job.eta_seconds = eta_seconds  # deprecated, still filled for clients built against v1-contract
    if record.timeline:
        job.timeline.CopyFrom(wire.timeline_to_proto(record.timeline))
    if record.provenance:
        p = record.provenance
        job.provenance.CopyFrom(
            common_pb2.Provenance(
                request=wire.request_to_proto(trusted_request(p["request"])),
                seed=p["seed"],
                music_model_id=p["music_model_id"],
                video_model_id=p["video_model_id"],
                music_prompt=p["music_prompt"],
                version=p["version"],
                uploads=[common_pb2.UploadUse(field=u["field"], sha256=u["sha256"]) for u in p.get("uploads", [])],
            )
        )
    return job


def job_stage(record: JobRecord) -> int:
    """The Stage a Job reports: never STAGE_UNSPECIFIED (the store keeps 0 until the first progress event)."""
    if record.state == QUEUED:
        return common_pb2.STAGE_QUEUED
    if record.state == SUCCEEDED:
        return common_pb2.STAGE_DONE
    return record.stage or common_pb2.STAGE_QUEUED  # running or ended: the work stage it reached, if any


def canonical_job_id(raw: str) -> str | None:
    """The canonical UUID form of a job id, or None: no other string ever reaches the store or a file path."""
    try:
        canonical = str(uuid.UUID(raw))
    except ValueError:
        return None
    return canonical if canonical == raw.lower() else None


TERMINAL_STATES = frozenset({jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELED})


def _create_field_path(path: tuple[str | int, ...]) -> str:
    """CreateJobRequest's field for a check made on it: the webhook is `webhook_url` there."""
    return {"webhook": "webhook_url"}.get(str(path[0]), str(path[0])) if path else ""


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, store: JobStore, keys: ApiKeys, *, webhook_policy: WebhookPolicy | None = None, workers: int = 1,
                 uploads: UploadLibrary | None = None):  # fmt: skip
        self.uploads = uploads
        self.store = store
        self.keys = keys
        self.webhook_policy = webhook_policy  # None: this server takes no webhooks (it has no secret to sign with)
        self.workers = max(1, workers)
        self.watchers = JobWatchHub(self._views, lambda job: job.state in TERMINAL_STATES)
        store.add_listener(self._changed)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _owner(self, context: grpc.ServicerContext) -> str:
        owner = self.keys.owner_of(metadata_value(context, "authorization"))
        if owner is None:  # the interceptor already refused; this keeps the servicer safe on its own
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        return owner

    def _job_id(self, raw: str, context: grpc.ServicerContext) -> str:
        canonical = canonical_job_id(raw)
        if canonical is None:
            rpc_errors.abort_invalid_field(context, "id", "id: must be a job UUID")
        return canonical

    def _record(self, raw_id: str, context: grpc.ServicerContext) -> JobRecord:
        job_id = self._job_id(raw_id, context)
        record = self.store.get(job_id, owner=self._owner(context) if self.keys.enabled else None)
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        return record

    def view(self, record: JobRecord) -> jobs_pb2.Job:
        position = self.store.queue_position(record)
        return job_to_proto(record, queue_position=position, eta_seconds=self._eta(record, position))

    def _queue_retry_s(self) -> float:
        """When a full queue likely has room again: one job's typical run per worker, else a guess of 30 s."""
        durations = self.store.recent_durations()
        return round(statistics.median(durations) / self.workers, 1) if durations else 30.0

    def _views(self, job_ids: list[str]) -> dict[str, Versioned]:
        return {job_id: (record.updated_at, self.view(record)) for job_id, record in self.store.get_many(job_ids).items()}

    def _changed(self, job_id: str) -> None:
        """The store committed a change of `job_id` in this process (on the thread that made it): its watchers get
        the view as it is now, so a state that lasts less than one poll is still seen."""
        if self.watchers.is_watched(job_id):
            record = self.store.get(job_id)
            self.watchers.push(job_id, (record.updated_at, self.view(record)) if record is not None else None)

    def _eta(self, record: JobRecord, position: int) -> float | None:
        if record.state == RUNNING and record.started_at and record.progress >= 0.05:
            elapsed = time.time() - record.started_at
            return round(elapsed * (1 - record.progress) / record.progress, 1)
        if record.state == QUEUED:
            durations = self.store.recent_durations()
            if durations:
                return round(statistics.median(durations) * (position // self.workers + 1), 1)
        return None

    # --- RPCs ---------------------------------------------------------------------------------------------------
    def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        owner = self._owner(context)
        try:
            generation = validate_request(wire.request_from_proto(request.request))
        except InvalidRequest as error:
            rpc_errors.abort_invalid(context, error, wire.request_field_path)
        try:
            if request.webhook_url:
                if self.webhook_policy is None:
                    raise InvalidRequest("webhook", "this server takes no webhooks: it has no API keys and no "
                                                    "TUNEREEL_WEBHOOK_SECRET to sign them with")  # fmt: skip
                check_webhook_url(request.webhook_url, self.webhook_policy)
            if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
                raise InvalidRequest("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
        except InvalidRequest as error:
            rpc_errors.abort_invalid(context, error, _create_field_path)
        generation = prepare_or_abort(self.uploads, generation, owner, context)  # the caller's own uploads only
        identity = {"request": generation.model_dump(), "webhook_url": request.webhook_url}
        # The seed is fixed at creation so that a retried job makes the same video and the answer can echo it.
        if generation.seed is None:
            generation = generation.model_copy(update={"seed": int.from_bytes(uuid.uuid4().bytes[:4], "big")})
        try:
            record, _created = self.store.create(
                generation,
                owner=owner,
                idempotency_key=request.idempotency_key or None,
                webhook_url=request.webhook_url or None,
                identity=identity,
            )
        except QueueFull as error:
            rpc_errors.abort_exhausted(context, str(error), subject="jobs:queue", retry_after_s=self._queue_retry_s())
        except IdempotencyConflict as error:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
        return self.view(record)

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self.view(self._record(request.id, context))

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        owner = self._owner(context) if self.keys.enabled else None
        if request.page_size < 0:
            rpc_errors.abort_invalid_field(context, "page_size", "page_size: must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = None
        if request.page_token:
            try:
                created, last_id = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                before = (float(created), str(last_id))
            except (ValueError, TypeError):
                rpc_errors.abort_invalid_field(context, "page_token", "page_token: not a token this server gave out")
        records = self.store.list(owner, limit=size + 1, before=before)
        page, more = records[:size], len(records) > size
        token = ""
        if more:
            last = page[-1]
            token = base64.urlsafe_b64encode(json.dumps([last.created_at, last.id]).encode()).decode()
        return jobs_pb2.ListJobsResponse(jobs=[self.view(record) for record in page], next_page_token=token)

    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        record = self._record(request.id, context)
        if not record.terminal:
            record = self.store.request_cancel(record.id) or record
        return self.view(record)

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext):
        """Every change of one job until it ends. Runs on the server's loop: an open watch holds no pool thread."""
        job_id = canonical_job_id(request.id)
        if job_id is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: must be a job UUID")
        owner = self.keys.owner_of(metadata_value(context, "authorization")) if self.keys.enabled else None
        if self.keys.enabled and owner is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        loop = asyncio.get_running_loop()
        record = await loop.run_in_executor(self.watchers.executor, lambda: self.store.get(job_id, owner=owner))
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")

        def read() -> Versioned | None:
            current = self.store.get(job_id)
            return (current.updated_at, self.view(current)) if current is not None else None

        async for job in self.watchers.watch(job_id, read):
            yield job

    def ReadJobVideo(self, request: jobs_pb2.ReadJobVideoRequest, context: grpc.ServicerContext):
        record = self._record(request.id, context)
        if record.state != SUCCEEDED or not record.result_path:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {record.id} is {record.state}; no video to read")
        if request.offset < 0 or request.length < 0 or request.offset > record.result_size:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset/length outside the file of {record.result_size} bytes")
        end = record.result_size if request.length == 0 else min(record.result_size, request.offset + request.length)
        try:
            file = open(record.result_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"the video of job {record.id} is no longer stored")
        with file:
            file.seek(request.offset)
            position = request.offset
            while position < end:
                data = file.read(min(READ_CHUNK_BYTES, end - position))
                if not data:
                    break
                yield media_pb2.MediaChunk(offset=position, data=data)
                position += len(data)

