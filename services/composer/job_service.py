"""JobService over gRPC: the job API on top of the store (any replica answers for any job)."""

from __future__ import annotations

import base64
import json
import statistics
import time
import uuid
from urllib.parse import urlsplit

import grpc
from google.protobuf import timestamp_pb2

from tunereel import rpc_errors, wire
from tunereel.auth import ApiKeys, metadata_value
from tunereel.request import InvalidRequest, trusted_request, validate_request
from tunereel.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, media_pb2

from .store import QUEUED, RUNNING, SUCCEEDED, IdempotencyConflict, JobRecord, JobStore, QueueFull

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


def check_webhook_url(url: str, allowed_hosts: frozenset[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook", "must be an http:// or https:// URL")
    if allowed_hosts and parts.hostname.lower() not in allowed_hosts:
        raise InvalidRequest("webhook", f"host {parts.hostname!r} is not in the server's webhook allow-list")


def _create_field_path(path: tuple[str | int, ...]) -> str:
    """CreateJobRequest's field for a check made on it: the webhook is `webhook_url` there."""
    return {"webhook": "webhook_url"}.get(str(path[0]), str(path[0])) if path else ""


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, store: JobStore, keys: ApiKeys, *, webhook_hosts: frozenset[str] = frozenset(), workers: int = 1):
        self.store = store
        self.keys = keys
        self.webhook_hosts = webhook_hosts
        self.workers = max(1, workers)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _owner(self, context: grpc.ServicerContext) -> str:
        owner = self.keys.owner_of(metadata_value(context, "authorization"))
        if owner is None:  # the interceptor already refused; this keeps the servicer safe on its own
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        return owner

    def _job_id(self, raw: str, context: grpc.ServicerContext) -> str:
        """Only the canonical UUID form passes, so no other string ever reaches the store or a file path."""
        try:
            canonical = str(uuid.UUID(raw))
        except ValueError:
            canonical = None
        if canonical is None or canonical != raw.lower():
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
                check_webhook_url(request.webhook_url, self.webhook_hosts)
            if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
                raise InvalidRequest("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
        except InvalidRequest as error:
            rpc_errors.abort_invalid(context, error, _create_field_path)
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

    def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext):
        record = self._record(request.id, context)
        last = None
        while context.is_active():
            job = self.view(record)
            snapshot = (job.state, round(job.progress, 3), job.stage, job.queue_position, job.attempts, job.error,
                        tuple(sorted(job.stage_progress.items())))  # fmt: skip
            if snapshot != last:
                yield job
                last = snapshot
            if record.terminal:
                return
            time.sleep(0.2)
            record = self.store.get(record.id) or record

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

