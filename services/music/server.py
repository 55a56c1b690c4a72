"""MusicService over gRPC: turns MusicPipeline callbacks into a header, progress and PCM chunk stream."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import grpc

from tunereel import wire
from tunereel.loading import ModelMissing
from tunereel.presets import UnknownPreset, default_models_dir, music_preset
from tunereel.serving import GrpcServer, Turnstile, start_server
from tunereel.streaming import Cancelled, events_from_thread
from tunereel.v1 import common_pb2, music_pb2, music_pb2_grpc

from .pipeline import InvalidMusicInput, MusicPipeline

log = logging.getLogger("tunereel.music")
SERVICE_NAME = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name


class MusicServicer(music_pb2_grpc.MusicServiceServicer):
    def __init__(self, preset_name: str):
        self.preset_name = preset_name
        self.pipeline: MusicPipeline | None = None
        self.load_error: str | None = "model is still loading"
        self.turnstile = Turnstile()

    def load(self, models_dir: Path | None) -> None:
        try:
            self.pipeline = MusicPipeline.from_preset(music_preset(self.preset_name), models_dir)
            self.load_error = None
        except (ModelMissing, UnknownPreset) as error:
            self.load_error = getattr(error, "message", None) or str(error)
            log.error("music model not loaded: %s", self.load_error)

    def GenerateMusic(self, request: music_pb2.GenerateMusicRequest, context: grpc.ServicerContext):
        pipeline = self.pipeline
        if pipeline is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"music service: {self.load_error}")
        if request.model and request.model != self.preset_name:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model: this music service serves preset {self.preset_name!r}, not {request.model!r}",
            )
        guidance = request.guidance_scale or None
        try:
            pipeline.check_inputs(request.prompt, request.duration_seconds, guidance)
        except InvalidMusicInput as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not 0 <= request.seed <= 2**32 - 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "seed: must be within 0..4294967295")

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        total = pipeline.num_samples(request.duration_seconds)
        yield music_pb2.GenerateMusicResponse(
            header=music_pb2.AudioHeader(
                sample_rate=pipeline.sample_rate,
                channels=pipeline.channels,
                total_samples=total,
                model_id=pipeline.model_id,
                seed=request.seed,
            )
        )

        def work(emit) -> None:
            def on_wait() -> None:
                emit(_progress(common_pb2.STAGE_QUEUED, 0.0, 0, 0, "waiting for the model"))

            if not self.turnstile.enter(cancelled, on_wait):
                raise Cancelled()
            try:
                result = pipeline(
                    request.prompt,
                    request.duration_seconds,
                    seed=request.seed,
                    guidance_scale=guidance,
                    on_step=lambda step, steps: emit(
                        _progress(common_pb2.STAGE_MUSIC, step / steps, step, steps, "generating")
                    ),
                    interrupt=cancelled,
                )
            finally:
                self.turnstile.leave()
            for offset in range(0, total, wire.AUDIO_CHUNK_SAMPLES):
                piece = result.audio[offset : offset + wire.AUDIO_CHUNK_SAMPLES]
                emit(
                    music_pb2.GenerateMusicResponse(
                        chunk=music_pb2.AudioChunk(
                            offset_samples=offset, num_samples=len(piece), pcm=wire.pcm_to_bytes(piece)
                        )
                    )
                )

        def logged_work(emit) -> None:
            try:
                work(emit)
            except Cancelled:
                log.info("generation cancelled by the caller")
                raise

        try:
            yield from events_from_thread(logged_work, name="musicgen", cancelled=cancelled)
        except Cancelled:
            context.abort(grpc.StatusCode.CANCELLED, "music generation cancelled")


def _progress(stage, fraction, step, steps, message) -> music_pb2.GenerateMusicResponse:
    return music_pb2.GenerateMusicResponse(
        progress=common_pb2.Progress(
            stage=stage,
            fraction=float(fraction),
            step=step,
            total_steps=steps,
            segment=0,
            total_segments=1,
            message=message,
        )
    )


def serve(preset: str, *, host: str, port: int, models_dir: Path | None) -> GrpcServer:
    """Start the server at once (health NOT_SERVING), load the model, then flip health to SERVING."""
    servicer = MusicServicer(preset)
    server = start_server(
        lambda s: music_pb2_grpc.add_MusicServiceServicer_to_server(servicer, s), [SERVICE_NAME], host=host, port=port
    )
    server.servicer = servicer
    servicer.load(models_dir)
    server.set_serving(servicer.pipeline is not None)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunereel-music", description="tunereel MusicService (MusicGen)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--preset", default="tiny", help="music preset name (see tunereel.presets)")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of local model folders (tiny)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s music %(levelname)s %(message)s")
    server = serve(args.preset, host=args.host, port=args.port, models_dir=args.models_dir or default_models_dir())
    log.info("MusicService on %s:%d (preset %s)", args.host, server.port, args.preset)
    server.wait_for_signals()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
