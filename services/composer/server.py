"""ComposerService over gRPC: validates, composes, then streams the result header and the MP4 in chunks."""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import grpc

from tunereel import wire
from tunereel.request import InvalidRequest, validate_request
from tunereel.serving import GrpcServer, start_server
from tunereel.streaming import Cancelled, events_from_thread
from tunereel.v1 import composer_pb2, composer_pb2_grpc

from .backends import BackendFailure, Backends, HealthMirror
from .compose import Composer, Composition

log = logging.getLogger("tunereel.composer")
SERVICE_NAME = composer_pb2.DESCRIPTOR.services_by_name["ComposerService"].full_name
MP4_CHUNK_BYTES = 256 * 1024


class ComposerServicer(composer_pb2_grpc.ComposerServiceServicer):
    def __init__(self, composer: Composer, *, max_concurrent: int = 2):
        self.composer = composer
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent

    def Compose(self, request: composer_pb2.ComposeRequest, context: grpc.ServicerContext):
        try:
            generation = validate_request(wire.request_from_proto(request.request))
        except InvalidRequest as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not self.slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"composer is busy: {self.max_concurrent} compositions already running, retry later",
            )
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        composition: list[Composition] = []

        def work(emit) -> None:
            composition.append(
                self.composer.compose(
                    generation,
                    on_progress=lambda progress: emit(composer_pb2.ComposeResponse(progress=progress)),
                    cancelled=cancelled,
                    timeout=context.time_remaining(),
                )
            )

        started = time.monotonic()
        log.info("compose: %d frames at %dx%d", generation.frame_count, generation.width, generation.height)
        try:
            yield from events_from_thread(work, name="compose", cancelled=cancelled)
        except BackendFailure as failure:
            log.warning("compose failed after %.1f s: %s %s", time.monotonic() - started, failure.code.name, failure.message)
            context.abort(failure.code, failure.message)
        except Cancelled:
            log.info("compose cancelled after %.1f s", time.monotonic() - started)
            context.abort(grpc.StatusCode.CANCELLED, "compose cancelled")
        except GeneratorExit:  # the caller cancelled: gRPC stopped reading this stream
            log.info("compose cancelled by the caller after %.1f s", time.monotonic() - started)
            raise
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
    *, host: str, port: int, music_target: str, video_target: str, work_dir: Path, max_concurrent: int = 2
) -> tuple[GrpcServer, HealthMirror]:
    backends = Backends(music_target, video_target)
    servicer = ComposerServicer(Composer(backends, work_dir), max_concurrent=max_concurrent)
    server = start_server(
        lambda s: composer_pb2_grpc.add_ComposerServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
        host=host,
        port=port,
    )
    mirror = HealthMirror(backends, server, SERVICE_NAME)
    mirror.start()
    return server, mirror


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunereel-composer", description="tunereel ComposerService")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50050)
    parser.add_argument("--music", default="127.0.0.1:50051", help="MusicService target, e.g. dns:///music:50051")
    parser.add_argument("--video", default="127.0.0.1:50052", help="VideoService target, e.g. dns:///video:50052")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "tunereel-composer")
    parser.add_argument("--max-concurrent", type=int, default=2, help="compositions at once; more get RESOURCE_EXHAUSTED")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s composer %(levelname)s %(message)s")
    server, mirror = serve(
        host=args.host,
        port=args.port,
        music_target=args.music,
        video_target=args.video,
        work_dir=args.work_dir,
        max_concurrent=args.max_concurrent,
    )
    log.info("ComposerService on %s:%d (music %s, video %s)", args.host, server.port, args.music, args.video)
    server.wait_for_signals()
    mirror.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
