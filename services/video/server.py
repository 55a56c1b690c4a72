"""VideoService over gRPC: turns VideoPipeline callbacks into a header, progress and chunked-frame stream."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import grpc
import numpy as np

from tunereel import rpc_errors, wire
from tunereel.model_host import ModelHost, ProgressThrottle, model_main, progress, segment_progress, serve_model
from tunereel.presets import UnknownPreset, VideoPreset, video_preset
from tunereel.serving import GrpcServer
from tunereel.v1 import common_pb2, video_pb2, video_pb2_grpc

from .ltx2 import AudioClip, Ltx2Video
from .pipeline import InvalidVideoInput, VideoPipeline, fit_condition_image

SERVICE_NAME = video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


# Service settings (the Deployment's env): "draft" (one pass) or "final" (the 13B presets' multi-scale flow, which
# loads the latent upsampler at start, so it is a replica's setting, not a request's); and the GPU memory mode
# (tunereel.memory: auto, full, model-offload, fp8, group-offload).
QUALITY_ENV = "TUNEREEL_VIDEO_QUALITY"
MEMORY_ENV = "TUNEREEL_VIDEO_MEMORY"
# Which replica this is, in every VideoHeader (the composer's timeline says which replica made each shot).
INSTANCE_ID = f"{socket.gethostname()}:{os.getpid()}"


def load_video(preset: VideoPreset, models_dir: Path | None, *, quality: str, memory: str) -> VideoPipeline | Ltx2Video:
    """The pipeline of the preset's family: one service serves one family's presets, the preset says which."""
    family = {"ltx": VideoPipeline, "ltx2": Ltx2Video}[preset.family]
    return family.from_preset(preset, models_dir, quality=quality, memory=memory)


def heard_audio(request: video_pb2.GenerateVideoRequest, context: grpc.ServicerContext) -> AudioClip | None:
    """The request's music slice, checked; None when it carries none."""
    if not request.HasField("audio"):
        return None
    slice_ = request.audio
    if slice_.channels not in (1, 2) or not 8000 <= slice_.sample_rate <= 192000 or len(slice_.pcm) % (4 * slice_.channels):
        rpc_errors.abort_invalid_field(context, "audio", "audio: needs 1 or 2 channels, a sample rate within "
                                       "8000..192000 and whole float32 frames")  # fmt: skip
    pcm = np.frombuffer(slice_.pcm, dtype="<f4").reshape(-1, slice_.channels)
    return AudioClip(pcm, slice_.sample_rate)


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    def __init__(self, preset_name: str, weights: str | None = None, *, quality: str | None = None,
                 memory: str | None = None):  # fmt: skip
        self.preset_name, self.weights = preset_name, weights
        quality = quality or os.environ.get(QUALITY_ENV, "draft")
        memory = memory or os.environ.get(MEMORY_ENV, "auto")
        self.host: ModelHost[VideoPipeline] = ModelHost(
            "video", preset_name,
            lambda name, models_dir: load_video(video_preset(name, weights), models_dir, quality=quality, memory=memory),
            memory_setting=MEMORY_ENV,
        )  # fmt: skip

    def DescribeModel(self, request: video_pb2.DescribeModelRequest, context: grpc.ServicerContext) -> video_pb2.VideoModelInfo:
        try:
            p = video_preset(self.preset_name, self.weights)
        except UnknownPreset as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error.message)
        return video_pb2.VideoModelInfo(preset=p.name, family=p.family, hears_audio=p.hears_audio,
                                        audio_sample_rate=p.audio_sample_rate, max_frames_per_pass=p.max_frames,
                                        license=p.license, takes_image=p.takes_image)  # fmt: skip

    def GenerateVideo(self, request: video_pb2.GenerateVideoRequest, context: grpc.ServicerContext):
        self.host.check_prompt_length(context, prompt=request.prompt, negative_prompt=request.negative_prompt)
        pipeline = self.host.ready_pipeline(request.model, context)
        steps = request.num_inference_steps or pipeline.steps_for(None)
        guidance = request.guidance_scale or pipeline.preset.guidance_scale
        try:
            pipeline.check_inputs(
                request.prompt, request.width, request.height, request.num_frames, request.fps, steps, guidance
            )
            image = fit_condition_image(request.image, request.width, request.height) if request.image else None
        except InvalidVideoInput as error:
            rpc_errors.abort_invalid_field(context, error.field, str(error))
        if not 0 <= request.seed <= 2**32 - 1:
            rpc_errors.abort_invalid_field(context, "seed", "seed: must be within 0..4294967295")
        header = video_pb2.VideoHeader(
            width=request.width,
            height=request.height,
            fps=request.fps,
            frame_count=request.num_frames,
            pixel_format="rgb24",
            model_id=pipeline.model_id,
            seed=request.seed,
            instance_id=INSTANCE_ID,
        )

        hears = isinstance(pipeline, Ltx2Video)
        extra = {"audio": heard_audio(request, context)} if hears else {}
        if image is not None:  # frame 0 of the first pass (LTX-2: a frame condition next to the frozen music)
            extra["image"] = image
        if hears and extra["audio"] is None:
            rpc_errors.abort_invalid_field(context, "audio", f"audio: preset {pipeline.preset.name!r} generates the "
                                           "video hearing its music; send the music it covers (GenerateVideoRequest.audio)")  # fmt: skip

        def generate(emit, cancelled) -> None:
            # Segment by segment: each segment's frames go out as soon as it is made (tunereel.segments).
            pieces = pipeline.stream(
                request.prompt,
                negative_prompt=request.negative_prompt or None,
                width=request.width,
                height=request.height,
                num_frames=request.num_frames,
                fps=request.fps,
                seed=request.seed,
                num_inference_steps=steps,
                guidance_scale=guidance,
                **extra,
                on_progress=ProgressThrottle(lambda report: emit(
                    video_pb2.GenerateVideoResponse(progress=segment_progress(common_pb2.STAGE_VIDEO, report, "denoising"))
                )),  # fmt: skip
                interrupt=cancelled,
            )
            for piece in pieces:
                for index, frame in enumerate(piece.frames, start=piece.start):
                    for offset, data in wire.split_frame(frame):
                        emit(
                            video_pb2.GenerateVideoResponse(
                                frame=video_pb2.FrameChunk(frame_index=index, offset=offset, data=data)
                            )
                        )
                piece = frame = None  # not held while the next segment is made

        yield from self.host.stream(
            context,
            video_pb2.GenerateVideoResponse(header=header),
            generate,
            queued=video_pb2.GenerateVideoResponse(progress=progress(common_pb2.STAGE_QUEUED, 0.0, message="waiting for the model")),
        )


def serve(preset: str, *, host: str, port: int, models_dir: Path | None, weights: str | None = None) -> GrpcServer:
    return serve_model(
        VideoServicer(preset, weights), video_pb2_grpc.add_VideoServiceServicer_to_server, SERVICE_NAME,
        host=host, port=port, models_dir=models_dir,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return model_main("video", "VideoService (LTX-Video, LTX-2)", 50052, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
