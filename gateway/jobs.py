"""/v1/jobs: the asynchronous job API over the composer's JobService (create, read, list, cancel, events, video)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, field_validator

from tunereel import wire
from tunereel.redact import public_detail
from tunereel.request import GenerationRequest, parse_webhook_url
from tunereel.v1 import jobs_pb2

from .security import caller_metadata

log = logging.getLogger("tunereel.gateway")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # 18 digits: beyond any file, within int() and int64
# ListJobsRequest.page_size: larger pages are capped, not refused (AIP-158); the cap is the JobService's.
MAX_PAGE_SIZE = 100


class JobCreate(GenerationRequest):
    """The body of /generate_content, plus an optional webhook."""

    webhook: str | None = Field(
        default=None, max_length=2000, description="http(s) URL POSTed once with the final job (HMAC-signed)."
    )

    @field_validator("webhook")
    @classmethod
    def _strict_url(cls, value: str | None) -> str | None:
        if value:
            parse_webhook_url(value)  # the sender's own parser: what passes here can be sent
        return value


def _job_id(raw: str) -> str:
    """Only a canonical UUID goes further; anything else (`../`, encodings, braces) is simply not a job."""
    try:
        canonical = str(uuid.UUID(raw))
    except ValueError:
        canonical = None
    if canonical is None or canonical != raw.lower():
        raise HTTPException(status_code=404, detail=f"no job {raw!r}: job ids are UUIDs")
    return canonical


def _stub(request: Request):
    return request.app.state.jobs


@router.post("", status_code=201, summary="Create a job; returns at once with its id.")
async def create_job(
    body: JobCreate,
    request: Request,
    metadata: list = Depends(caller_metadata),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> JSONResponse:
    generation = GenerationRequest.model_validate(body.model_dump(exclude={"webhook"}))
    job = await _stub(request).CreateJob(
        jobs_pb2.CreateJobRequest(
            request=wire.request_to_proto(generation),
            idempotency_key=idempotency_key or "",
            webhook_url=body.webhook or "",
        ),
        metadata=metadata,
        timeout=30,
    )
    view = wire.job_to_dict(job)
    return JSONResponse(view, status_code=201, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("", summary="List jobs, newest first.")
async def list_jobs(
    request: Request,
    metadata: list = Depends(caller_metadata),
    page_size: int = Query(default=20, ge=1, description=f"Jobs per page; a larger value counts as {MAX_PAGE_SIZE}."),
    page_token: str = Query(default="", max_length=500),
) -> dict:
    reply = await _stub(request).ListJobs(
        jobs_pb2.ListJobsRequest(page_size=min(page_size, MAX_PAGE_SIZE), page_token=page_token),
        metadata=metadata,
        timeout=30,
    )
    return {"jobs": [wire.job_to_dict(job) for job in reply.jobs], "next_page_token": reply.next_page_token or None}


@router.get("/{job_id}", summary="One job: state, progress, queue position, ETA, provenance, error.")
async def get_job(job_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    job = await _stub(request).GetJob(jobs_pb2.GetJobRequest(id=_job_id(job_id)), metadata=metadata, timeout=30)
    return wire.job_to_dict(job)


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job.")
async def cancel_job(job_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    job = await _stub(request).CancelJob(jobs_pb2.CancelJobRequest(id=_job_id(job_id)), metadata=metadata, timeout=30)
    return wire.job_to_dict(job)


def event_id(view: dict) -> str:
    """Names one snapshot of a job: a client that reconnects with it as Last-Event-ID is not sent it again."""
    return f"{view['attempts']}.{view['state']}.{view['stage']}.{round(view['progress'] * 1000)}.{view['queue_position']}"


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: one per change (named by the job's state, with an id), then `end`; `error` if the "
    "watch fails (reconnect with Last-Event-ID).",
)
async def job_events(
    job_id: str,
    request: Request,
    metadata: list = Depends(caller_metadata),
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=200),
) -> StreamingResponse:
    stub = _stub(request)
    canonical = _job_id(job_id)
    # Fail before the 200 if the job does not exist or is not the caller's.
    await stub.GetJob(jobs_pb2.GetJobRequest(id=canonical), metadata=metadata, timeout=30)

    async def events() -> AsyncIterator[bytes]:
        call = stub.WatchJob(jobs_pb2.WatchJobRequest(id=canonical), metadata=metadata)
        last = None
        try:
            async for job in call:
                last = wire.job_to_dict(job)
                snapshot = event_id(last)
                if snapshot == last_event_id:  # the client has this one already
                    continue
                yield f"event: {last['state']}\nid: {snapshot}\ndata: {json.dumps(last)}\n\n".encode()
            yield f"event: end\ndata: {json.dumps(last)}\n\n".encode()
        except grpc.aio.AioRpcError as error:
            message = public_detail(error.code(), error.details() or error.code().name, log)
            yield f"event: error\ndata: {json.dumps({'error': message})}\n\n".encode()
        except asyncio.CancelledError:  # the client went away
            call.cancel()
            raise

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/{job_id}/timeline", summary="A cut video's timeline: tempo, beats, downbeats, sections, shots.")
async def job_timeline(job_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    job = await _stub(request).GetJob(jobs_pb2.GetJobRequest(id=_job_id(job_id)), metadata=metadata, timeout=30)
    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise HTTPException(status_code=409, detail=f"job {job.id} is {wire.job_state_name(job.state)}; no timeline yet")
    if not job.HasField("timeline"):
        raise HTTPException(status_code=404, detail=f"job {job.id} is one continuous take (cuts: none): it has no timeline")
    return wire.timeline_to_dict(job.timeline)


@router.get(
    "/{job_id}/video",
    summary="The finished MP4; honours HTTP Range so browsers can seek.",
    responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}}},
)
async def job_video(job_id: str, request: Request, metadata: list = Depends(caller_metadata)):
    stub = _stub(request)
    job = await stub.GetJob(jobs_pb2.GetJobRequest(id=_job_id(job_id)), metadata=metadata, timeout=30)
    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise HTTPException(status_code=409, detail=f"job {job.id} is {wire.job_state_name(job.state)}; no video yet")
    size = job.result_size_bytes
    start, end, status = 0, size - 1, 200
    header = request.headers.get("range")
    if header:
        match = _RANGE.match(header.strip())
        if match is None or match.groups() == ("", ""):
            return JSONResponse({"error": f"unsupported Range {header!r}"}, status_code=416, headers={"Content-Range": f"bytes */{size}"})
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:  # a suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        if start > end or start >= size:
            return JSONResponse({"error": "range not satisfiable"}, status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
    length = end - start + 1
    call = stub.ReadJobVideo(jobs_pb2.ReadJobVideoRequest(id=job.id, offset=start, length=length), metadata=metadata)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in call:
                yield chunk.data
        finally:
            call.cancel()

    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(length),
        "Content-Disposition": f'inline; filename="tunereel-{job.id}.mp4"',
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(body(), status_code=status, media_type="video/mp4", headers=headers)
