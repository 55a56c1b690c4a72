"""ComposerService over gRPC: validates, composes, then streams the result header and the MP4 in chunks."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunereel import rpc_errors, wire
from tunereel.auth import ApiKeys, InsecureBinding, metadata_value, service_key_from_env
from tunereel.request import InvalidRequest, validate_request
from tunereel.serving import GrpcServer, start_async_server
from tunereel.streaming import Cancelled, events_from_thread
from tunereel.v1 import common_pb2, composer_pb2, composer_pb2_grpc, jobs_pb2_grpc, music_pb2, uploads_pb2_grpc, video_pb2

from .backends import Backends, HealthMirror, Progress
from .compose import Composer, Composition
from .errors import (
    BackendBusy,
    BackendRejected,
    InvalidScenes,
    BackendTimeout,
    BackendUnavailable,
    ComposeError,
    OutOfSpace,
    public_message,
)
from .job_service import SERVICE_NAME as JOB_SERVICE_NAME
from .job_service import JobServicer
from .jobs import JobRunner, JobSettings
from .store import JobStore, Quotas, sqlite_url
from .webhooks import WebhookPolicy, WebhookSender, job_view, unsigned_webhooks_refusal
from .uploads import SERVICE_NAME as UPLOAD_SERVICE_NAME
from .uploads import UploadAnalyses, UploadLibrary, UploadServicer, UploadSettings, prepare_or_abort

log = logging.getLogger("tunereel.composer")
SERVICE_NAME = composer_pb2.DESCRIPTOR.services_by_name["ComposerService"].full_name
MP4_CHUNK_BYTES = 256 * 1024
DESCRIBE_TIMEOUT_S = 5.0  # DescribeModels: each backend answers from its preset table, without the model
BUSY_RETRY_S = 5.0  # when all Compose slots are taken: a short composition frees one within seconds

# The one place a composer error becomes a gRPC status (jobs.py decides retries from the errors themselves).
STATUS_OF_ERROR: tuple[tuple[type[ComposeError], grpc.StatusCode], ...] = (
    (BackendRejected, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidScenes, grpc.StatusCode.INVALID_ARGUMENT),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (BackendBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BackendTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (OutOfSpace, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def status_of(error: ComposeError) -> grpc.StatusCode:
    """INTERNAL for whatever the table does not name: protocol errors, bad audio, mux failures, backend faults."""
    for kind, code in STATUS_OF_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def progress_message(event: Progress) -> composer_pb2.ComposeResponse:
    return composer_pb2.ComposeResponse(progress=common_pb2.Progress(
        stage=event.stage, fraction=event.fraction, step=event.step, total_steps=event.total_steps,
        segment=event.segment, total_segments=event.total_segments, message=event.message,
    ))  # fmt: skip


class ComposerServicer(composer_pb2_grpc.ComposerServiceServicer):
    def __init__(self, composer: Composer, *, max_concurrent: int = 2, uploads: UploadLibrary | None = None,
                 keys: ApiKeys | None = None):  # fmt: skip
        self.uploads = uploads
        self.keys = keys or ApiKeys()
        self.composer = composer
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent

    def DescribeModels(self, request: composer_pb2.DescribeModelsRequest,
                       context: grpc.ServicerContext) -> composer_pb2.DescribeModelsResponse:  # fmt: skip
        backends = self.composer.backends
        asks = (("music", backends.music_control, music_pb2.MusicServiceDescribeModelRequest()),
                ("video", backends.video_control, video_pb2.DescribeModelRequest()))  # fmt: skip
        described = {}
        for label, stub, ask in asks:
            try:
                described[label] = stub.DescribeModel(ask, timeout=DESCRIBE_TIMEOUT_S, metadata=backends.metadata)
            except grpc.RpcError as error:  # the backend's own code (UNAVAILABLE, FAILED_PRECONDITION), named
                code = error.code() if error.code() != grpc.StatusCode.UNIMPLEMENTED else grpc.StatusCode.FAILED_PRECONDITION
                context.abort(code, f"{label} service does not describe its model: {error.details()}")
        return composer_pb2.DescribeModelsResponse(**described)

    def Compose(self, request: composer_pb2.ComposeRequest, context: grpc.ServicerContext):
        try:
            generation = validate_request(wire.request_from_proto(request.request))
        except InvalidRequest as error:
            rpc_errors.abort_invalid(context, error, wire.request_field_path)
        owner = self.keys.owner_of(metadata_value(context, "authorization")) or ""
        generation = prepare_or_abort(self.uploads, generation, owner, context)
        if not self.slots.acquire(blocking=False):
            rpc_errors.abort_exhausted(
                context,
                f"composer is busy: {self.max_concurrent} compositions already running, retry later",
                subject="composer:concurrent_compositions",
                retry_after_s=BUSY_RETRY_S,
            )
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        composition: list[Composition] = []

        def work(emit) -> None:
            composition.append(
                self.composer.compose(
                    generation,
                    on_progress=lambda progress: emit(progress_message(progress)),
                    cancelled=cancelled,
                    timeout=context.time_remaining(),
                )
            )

        started = time.monotonic()
        log.info("compose: %d frames at %dx%d", generation.frame_count, generation.width, generation.height)
        try:
            yield from events_from_thread(work, name="compose", cancelled=cancelled)
        except ComposeError as failure:
            code = status_of(failure)
            message = public_message(failure)  # the detail (paths, addresses) stays in the log, under a reference
            log.warning("compose failed after %.1f s: %s %s", time.monotonic() - started, code.name, message)
            if isinstance(failure, BackendRejected) and failure.field:  # a model this deployment does not serve
                rpc_errors.abort_invalid_field(context, f"request.{failure.field}", message)
            if isinstance(failure, InvalidScenes) and failure.field:  # scenes that do not fit the music made
                path = tuple(int(part) if part.isdigit() else part for part in failure.field.split("."))
                rpc_errors.abort_invalid_field(context, wire.request_field_path(path), message)
            rpc_errors.abort(context, code, message)  # UNAVAILABLE gets a RetryInfo
        except Cancelled:
            log.info("compose cancelled after %.1f s", time.monotonic() - started)
            context.abort(grpc.StatusCode.CANCELLED, "compose cancelled")
        except GeneratorExit:  # the caller cancelled: gRPC stopped reading this stream
            log.info("compose cancelled by the caller after %.1f s", time.monotonic() - started)
            raise
        except Exception as error:  # a bug: the caller hears what it was at once, not a bare "unexpected error"
            log.exception("compose failed after %.1f s", time.monotonic() - started)
            context.abort(grpc.StatusCode.INTERNAL, f"composer error: {type(error).__name__}: {error}")
        finally:
            self.slots.release()
        log.info("compose done in %.1f s", time.monotonic() - started)

        result = composition[0]
        try:
            yield composer_pb2.ComposeResponse(
                result=composer_pb2.ComposeResult(
                    provenance=result.provenance,
                    content_type="video/mp4",
                    size_bytes=result.mux.size_bytes,
                    frame_count=result.mux.frame_count,
                    duration_seconds=result.mux.video_duration_s,
                    audio_samples=result.mux.audio_samples,
                    sample_rate=result.sample_rate,
                    timeline=wire.timeline_to_proto(result.timeline) if result.timeline else None,
                )
            )
            with result.path.open("rb") as file:
                offset = 0
                while data := file.read(MP4_CHUNK_BYTES):
                    yield composer_pb2.ComposeResponse(chunk=composer_pb2.MediaChunk(offset=offset, data=data))
                    offset += len(data)
        finally:
            result.path.unlink(missing_ok=True)


def serve(
    *,
    host: str,
    port: int,
    music_target: str,
    video_target: str,
    data_dir: Path,
    database_url: str | None = None,
    max_concurrent: int = 2,
    job_workers: int = 1,
    max_queue: int = 100,
    max_attempts: int = 5,
    lease_seconds: float = 30.0,
    retry_base_seconds: float = 1.0,
    retention_hours: float = 168.0,
    webhook_hosts: frozenset[str] = frozenset(),
    webhook_secret: str = "",
    webhook_allow_private: bool = False,
    api_keys: ApiKeys | None = None,
    quotas: Quotas | None = None,
    upload_settings: UploadSettings | None = None,
    shot_workers: int = 2,
    service_key: str | None = None,
) -> Composed:
    """Composer, job service and job workers on one port; health mirrors the backends."""
    api_keys = api_keys if api_keys is not None else ApiKeys.from_env()
    webhook_policy = WebhookPolicy(allowed_hosts=webhook_hosts, allow_private=webhook_allow_private)
    # Without keys there is no per-key secret; without the server's secret too, a webhook would go out signed with
    # b"": such a server takes no webhooks at all.
    webhooks_enabled = api_keys.enabled or bool(webhook_secret)
    refusal = unsigned_webhooks_refusal(webhook_policy, has_secret=webhooks_enabled)
    if refusal is not None:  # main() prints it on one line and exits 2
        raise InsecureBinding(refusal)

    def signing_key(owner: str) -> bytes:
        # Per key when keys are on (each tenant verifies with its own secret); the server's secret otherwise.
        secret = (api_keys.webhook_secret(owner) if api_keys.enabled else None) or webhook_secret.encode()
        if not secret:
            raise RuntimeError("no webhook signing secret")  # the sender gives this delivery up
        return secret

    data_dir.mkdir(parents=True, exist_ok=True)
    settings = JobSettings(
        data_dir=data_dir,
        workers=job_workers,
        retry_base_seconds=retry_base_seconds,
        retention_seconds=retention_hours * 3600.0,
        webhook_secret=webhook_secret,
    )
    store = JobStore(
        database_url or sqlite_url(data_dir), max_queue=max_queue, max_attempts=max_attempts, lease_seconds=lease_seconds,
        quotas=quotas or Quotas(
            active_jobs=int(os.environ.get("TUNEREEL_QUOTA_ACTIVE_JOBS", Quotas.active_jobs)),
            kept_jobs=int(os.environ.get("TUNEREEL_QUOTA_KEPT_JOBS", Quotas.kept_jobs)),
            stored_bytes=int(os.environ.get("TUNEREEL_QUOTA_STORED_BYTES", Quotas.stored_bytes)),
        ),
    )
    store.migrate()
    # Its own service key, never a tenant's: music and video accept only service keys.
    backends = Backends(music_target, video_target, api_key=service_key if service_key is not None else service_key_from_env())
    library = UploadLibrary(store, upload_settings or UploadSettings(data_dir))
    composer = Composer(backends, settings.work_dir, shot_workers=shot_workers, uploads=library.record)
    # the beat networks load now, beside the first requests, not when the first cut video needs them (~1 s)
    threading.Thread(target=lambda: composer.analyser, name="load-analysis", daemon=True).start()
    servicer = ComposerServicer(composer, max_concurrent=max_concurrent, uploads=library, keys=api_keys)
    jobs = JobServicer(store, api_keys, webhook_policy=webhook_policy if webhooks_enabled else None, workers=job_workers,
                       uploads=library)  # fmt: skip
    uploads = UploadServicer(library, api_keys, UploadAnalyses(lambda: composer.analyser))

    def register(server: grpc.Server) -> None:
        composer_pb2_grpc.add_ComposerServiceServicer_to_server(servicer, server)
        jobs_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
        uploads_pb2_grpc.add_UploadServiceServicer_to_server(uploads, server)

    # grpc.aio underneath: an open WatchJob (an SSE stream, a browser tab) waits on the loop, not in a pool thread.
    services = [SERVICE_NAME, JOB_SERVICE_NAME, UPLOAD_SERVICE_NAME]
    server = start_async_server(register, services, host=host, port=port, api_keys=api_keys)
    mirror = HealthMirror(backends, server, SERVICE_NAME, extra_services=services[1:])
    mirror.start()
    webhooks = WebhookSender(store, webhook_policy, signing_key, job_view)
    runner = JobRunner(store, composer, settings, webhooks, extra_sweeps=(library.sweep,))
    runner.start()
    return Composed(server=server, mirror=mirror, runner=runner, store=store, backends=backends, servicer=servicer)


@dataclass
class Composed:
    server: GrpcServer
    mirror: HealthMirror
    runner: JobRunner
    store: JobStore
    backends: Backends
    servicer: ComposerServicer

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float = 0.0) -> None:
        """Stop taking work, let running calls end within `grace`, then close every thread, channel and the store."""
        if not self.runner.stopping:  # after a signal the runner is already draining: its drain is not cut short
            self.runner.stop()
        self.mirror.stop()
        self.server.stop(grace)
        self.runner.join()
        self.mirror.join()
        self.backends.close()
        self.store.close()


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="tunereel-composer", description="tunereel ComposerService + JobService")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50050)
    parser.add_argument("--music", default="127.0.0.1:50051", help="MusicService target, e.g. dns:///music:50051")
    parser.add_argument("--video", default="127.0.0.1:50052", help="VideoService target, e.g. dns:///video:50052")
    parser.add_argument("--data-dir", type=Path, default=Path(env("TUNEREEL_DATA_DIR", ".cache/tunereel/data")),
                        help="results, temp files and the SQLite job store; shared by replicas of one deployment")
    parser.add_argument("--database-url", default=env("TUNEREEL_DATABASE_URL"),
                        help="SQLAlchemy URL of the job store (postgresql://... for several replicas); default SQLite")
    parser.add_argument("--max-concurrent", type=int, default=2, help="direct Compose calls at once")
    parser.add_argument("--shot-workers", type=int, default=int(env("TUNEREEL_SHOT_WORKERS", "2")),
                        help="shots of one video made at once (about the number of video replicas)")
    parser.add_argument("--workers", type=int, default=int(env("TUNEREEL_JOB_WORKERS", "1")), help="jobs at once")
    parser.add_argument("--max-queue", type=int, default=int(env("TUNEREEL_MAX_QUEUE", "100")))
    parser.add_argument("--max-attempts", type=int, default=int(env("TUNEREEL_MAX_ATTEMPTS", "5")))
    parser.add_argument("--lease-seconds", type=float, default=_env_float("TUNEREEL_LEASE_SECONDS", 30.0))
    parser.add_argument("--retry-base-seconds", type=float, default=_env_float("TUNEREEL_RETRY_BASE_SECONDS", 1.0))
    parser.add_argument("--retention-hours", type=float, default=_env_float("TUNEREEL_RETENTION_HOURS", 168.0))
    parser.add_argument("--max-upload-mb", type=float, default=_env_float("TUNEREEL_MAX_UPLOAD_MB", 50.0),
                        help="largest audio upload in MB (images: 20 MB)")
    parser.add_argument("--upload-retention-hours", type=float, default=_env_float("TUNEREEL_UPLOAD_RETENTION_HOURS", 24.0),
                        help="uploads no job uses are swept after this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s composer %(levelname)s %(message)s")
    try:
        composed = serve(
            host=args.host,
            port=args.port,
            music_target=args.music,
            video_target=args.video,
            data_dir=args.data_dir,
            database_url=args.database_url,
            max_concurrent=args.max_concurrent,
            job_workers=args.workers,
            max_queue=args.max_queue,
            max_attempts=args.max_attempts,
            lease_seconds=args.lease_seconds,
            retry_base_seconds=args.retry_base_seconds,
            retention_hours=args.retention_hours,
            webhook_hosts=frozenset(h.strip().lower() for h in env("TUNEREEL_WEBHOOK_ALLOW", "").split(",") if h.strip()),
            webhook_secret=env("TUNEREEL_WEBHOOK_SECRET", ""),
            webhook_allow_private=env("TUNEREEL_WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
            upload_settings=UploadSettings(args.data_dir, max_audio_bytes=int(args.max_upload_mb * 1e6),
                                           retention_seconds=args.upload_retention_hours * 3600.0),
            shot_workers=args.shot_workers,
        )
    except InsecureBinding as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("ComposerService on %s:%d (music %s, video %s)", args.host, composed.port, args.music, args.video)
    # On SIGTERM the runner stops claiming at once; jobs it cannot finish within the drain go back to the queue.
    composed.server.wait_for_signals(on_signal=lambda grace: composed.runner.stop(drain_seconds=grace))
    composed.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
