"""The HTTP gateway: the prototype's POST /generate_content, health, and the browser UI, in front of the composer.

Thin on purpose: the request model validates (the same model the composer uses), one table maps gRPC errors to
HTTP, and the channel to the composer is opened once in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

import grpc
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tunereel
from tunereel import wire
from tunereel.auth import ApiKeys
from tunereel.channels import open_aio_channel
from tunereel.request import LIMITS, GenerationRequest, InvalidRequest
from tunereel.v1 import composer_pb2, composer_pb2_grpc, jobs_pb2_grpc, uploads_pb2_grpc

from . import errors, jobs, uploads
from .headers import SecurityHeaders
from .limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from .security import KeyBeforeBody, caller_metadata

COMPOSER_SERVICE = composer_pb2.DESCRIPTOR.services_by_name["ComposerService"].full_name
BACKEND_HEALTH_NAMES = {
    "composer": COMPOSER_SERVICE,
    "music": "tunereel.v1.MusicService",
    "video": "tunereel.v1.VideoService",
}


@dataclass(frozen=True)
class GatewaySettings:
    composer_target: str = "127.0.0.1:50050"
    request_timeout_s: float = 3600.0  # deadline for one /generate_content call, end to end
    api_keys: ApiKeys = ApiKeys()  # TUNEREEL_API_KEYS: when set, /generate_content and /v1 need a Bearer key
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # TUNEREEL_MAX_BODY_BYTES: larger bodies get 413, unread
    max_upload_bytes: int = 50 * 1000 * 1000  # POST /v1/uploads: its own limit, counted as the file streams through


class ComposerEndedEarly(Exception):
    pass


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = open_aio_channel(settings.composer_target)
        app.state.composer = composer_pb2_grpc.ComposerServiceStub(channel)
        app.state.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        app.state.health = health_pb2_grpc.HealthStub(channel)
        app.state.uploads = uploads_pb2_grpc.UploadServiceStub(channel)
        try:
            yield
        finally:
            await channel.close()

    app = FastAPI(
        title="tunereel",
        version=tunereel.__version__,
        summary="Genre + duration + video prompt → an MP4 music video.",
        lifespan=lifespan,
    )
    app.state.api_keys = settings.api_keys
    app.state.max_upload_bytes = settings.max_upload_bytes
    app.add_middleware(KeyBeforeBody, keys=settings.api_keys)  # innermost of the two: runs after the size check
    # Uploads stream under their own limit (gateway/uploads.py counts the file's bytes as they pass).
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, streamed=("/v1/uploads",))
    app.add_middleware(SecurityHeaders)
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    app.add_exception_handler(grpc.aio.AioRpcError, errors.on_rpc_error)
    app.add_exception_handler(StarletteHTTPException, errors.on_http_error)
    app.add_exception_handler(InvalidRequest, errors.on_invalid_request)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)

    @app.post(
        "/generate_content",
        response_class=Response,
        responses={
            200: {"content": {"video/mp4": {}}, "description": "The MP4 music video."},
            400: {"description": "Body is not a JSON object."},
            422: {"description": "A field breaks a rule; the body names it."},
            503: {"description": "A backend service is down or lacks its model."},
        },
        summary="Make a music video and return the MP4 (the prototype's contract).",
    )
    async def generate_content(
        body: GenerationRequest, request: Request, metadata: list = Depends(caller_metadata)
    ) -> Response:
        call = app.state.composer.Compose(
            composer_pb2.ComposeRequest(request=wire.request_to_proto(body)),
            timeout=settings.request_timeout_s,
            metadata=metadata,
        )
        try:
            result = await _until_result(call, request)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if result is None:  # the HTTP client went away; the compose call was cancelled
            return Response(status_code=499)
        provenance = wire.provenance_to_dict(result.provenance)
        return StreamingResponse(
            _mp4_chunks(call),
            media_type="video/mp4",
            headers={
                "Content-Length": str(result.size_bytes),
                "Content-Disposition": f'inline; filename="tunereel-{provenance["seed"]}.mp4"',
                "X-Tunereel-Seed": str(provenance["seed"]),
                "X-Tunereel-Music-Model": quote(provenance["music_model_id"]),
                "X-Tunereel-Video-Model": quote(provenance["video_model_id"]),
                "X-Tunereel-Frames": str(result.frame_count),
            },
        )

    @app.get("/healthz", summary="200 when the composer, music and video services all report SERVING.")
    async def healthz() -> JSONResponse:
        statuses = {}
        for label, service in BACKEND_HEALTH_NAMES.items():
            try:
                reply = await app.state.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=3.0)
                statuses[label] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                statuses[label] = f"UNREACHABLE ({error.code().name})"
        healthy = all(status == "SERVING" for status in statuses.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", "services": statuses}, status_code=200 if healthy else 503)

    @app.get("/v1/limits", summary="The request limits the server enforces (the UI mirrors them).")
    async def limits() -> dict:
        return LIMITS.model_dump()

    @app.get("/v1/models", summary="The music and video presets the services serve, what each takes, and its licence "
             "(the UI shows the licence, offers a lyrics box when the music model sings and greys out the rest).")
    async def models(metadata: list = Depends(caller_metadata)) -> dict:
        reply = await app.state.composer.DescribeModels(composer_pb2.DescribeModelsRequest(), timeout=10.0,
                                                       metadata=metadata)  # fmt: skip
        return models_view(reply)

    @app.get("/v1/enums", summary="The names of job states and stages, as every job view spells them (the UI uses them).")
    async def enums() -> dict:
        return wire.enum_names()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(resources.files("tunereel.gateway").joinpath("static/index.html").read_text())

    # The UI's own files (CSS, JS modules, icon): all served here, so the page needs no other host.
    app.mount("/static", StaticFiles(packages=[("tunereel.gateway", "static")]), name="static")

    return app


def models_view(reply: composer_pb2.DescribeModelsResponse) -> dict:
    """DescribeModels as JSON, every field spelled out (false and 0 included: the UI greys by them)."""
    music, video = reply.music, reply.video
    return {
        "music": {"preset": music.preset, "family": music.family, "license": music.license, "sings": music.sings,
                  "follows_melody": music.follows_melody, "repaints": music.repaints},
        "video": {"preset": video.preset, "family": video.family, "license": video.license,
                  "hears_audio": video.hears_audio, "takes_image": video.takes_image,
                  "max_frames_per_pass": video.max_frames_per_pass},
    }  # fmt: skip


async def _until_result(call, request: Request) -> composer_pb2.ComposeResult | None:
    """Read progress until the result header; cancel the call if the HTTP client disconnects meanwhile."""

    async def watch_disconnect() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        call.cancel()

    watcher = asyncio.create_task(watch_disconnect())
    try:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise ComposerEndedEarly("the composer ended the stream without a result")
            if message.WhichOneof("payload") == "result":
                return message.result
    except asyncio.CancelledError:
        if call.cancelled():
            return None
        raise
    finally:
        watcher.cancel()


async def _mp4_chunks(call) -> AsyncIterator[bytes]:
    try:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("payload") == "chunk":
                yield message.chunk.data
    finally:
        call.cancel()
