"""VideoService over gRPC: turns VideoPipeline callbacks into a header, progress and chunked-frame stream."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import grpc

from tunereel import wire
from tunereel.loading import ModelMissing
from tunereel.presets import UnknownPreset, default_models_dir, video_preset
from tunereel.serving import GrpcServer, Turnstile, start_server
from tunereel.streaming import Cancelled, events_from_thread
from tunereel.v1 import common_pb2, video_pb2, video_pb2_grpc

from .pipeline import InvalidVideoInput, VideoPipeline

log = logging.getLogger("tunereel.video")
SERVICE_NAME = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    def __init__(self, preset_name: str):
        self.preset_name = preset_name
        self.pipeline: VideoPipeline | None = None
        self.load_error: str | None = "model is still loading"
        self.turnstile = Turnstile()

    def load(self, models_dir: Path | None) -> None:
        try:
            self.pipeline = VideoPipeline.from_preset(video_preset(self.preset_name), models_dir)
            self.load_error = None
        except (ModelMissing, UnknownPreset) as error:
            self.load_error = getattr(error, "message", None) or str(error)
            log.error("video model not loaded: %s", self.load_error)

    def GenerateVideo(self, request: video_pb2.GenerateVideoRequest, context: grpc.ServicerContext):
        pipeline = self.pipeline
        if pipeline is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"video service: {self.load_error}")
        if request.model and request.model != self.preset_name:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model: this video service serves preset {self.preset_name!r}, not {request.model!r}",
            )
        steps = request.num_inference_steps or pipeline.preset.num_inference_steps
        guidance = request.guidance_scale or pipeline.preset.guidance_scale
        try:
            pipeline.check_inputs(
                request.prompt, request.width, request.height, request.num_frames, request.fps, steps, guidance
            )
        except InvalidVideoInput as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not 0 <= request.seed <= 2**32 - 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "seed: must be within 0..4294967295")

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        yield video_pb2.GenerateVideoResponse(
            header=video_pb2.VideoHeader(
                width=request.width,
                height=request.height,
                fps=request.fps,
                frame_count=request.num_frames,
                pixel_format="rgb24",
                model_id=pipeline.model_id,
                seed=request.seed,
            )
        )

        def work(emit) -> None:
            if not self.turnstile.enter(
                cancelled, lambda: emit(_progress(common_pb2.STAGE_QUEUED, 0.0, 0, 0, "waiting for the model"))
            ):
                raise Cancelled()
            try:
                result = pipeline(
                    request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    width=request.width,
                    height=request.height,
                    num_frames=request.num_frames,
                    fps=request.fps,
                    seed=request.seed,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    on_step=lambda step, total: emit(
                        _progress(common_pb2.STAGE_VIDEO, step / total, step, total, "denoising")
                    ),
                    interrupt=cancelled,
                )
            finally:
                self.turnstile.leave()
            for index, frame in enumerate(result.frames):
                for offset, data in wire.split_frame(frame):
                    emit(
                        video_pb2.GenerateVideoResponse(
                            frame=video_pb2.FrameChunk(frame_index=index, offset=offset, data=data)
                        )
                    )

        def logged_work(emit) -> None:
            try:
                work(emit)
            except Cancelled:
                log.info("generation cancelled by the caller")
                raise

        try:
            yield from events_from_thread(logged_work, name="ltx", cancelled=cancelled)
        except Cancelled:
            context.abort(grpc.StatusCode.CANCELLED, "video generation cancelled")


def _progress(stage, fraction, step, steps, message) -> video_pb2.GenerateVideoResponse:
    return video_pb2.GenerateVideoResponse(
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
    """Start the server at once (health NOT_SERVING), load the pipeline, then flip health to SERVING."""
    servicer = VideoServicer(preset)
    server = start_server(
        lambda s: video_pb2_grpc.add_VideoServiceServicer_to_server(servicer, s), [SERVICE_NAME], host=host, port=port
    )
    server.servicer = servicer
    servicer.load(models_dir)
    server.set_serving(servicer.pipeline is not None)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunereel-video", description="tunereel VideoService (LTX-Video)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--preset", default="tiny", help="video preset name (see tunereel.presets)")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of local model folders (tiny)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s video %(levelname)s %(message)s")
    server = serve(args.preset, host=args.host, port=args.port, models_dir=args.models_dir or default_models_dir())
    log.info("VideoService on %s:%d (preset %s)", args.host, server.port, args.preset)
    server.wait_for_signals()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
