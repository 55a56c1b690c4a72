"""MusicService over gRPC: turns MusicPipeline callbacks into a header, progress and PCM chunk stream."""

from __future__ import annotations

from pathlib import Path

import grpc

from tunereel import rpc_errors, wire
from tunereel.model_host import ModelHost, ProgressThrottle, model_main, progress, segment_progress, serve_model
from tunereel.presets import music_preset
from tunereel.serving import GrpcServer
from tunereel.v1 import common_pb2, music_pb2, music_pb2_grpc

from .pipeline import InvalidMusicInput, MusicPipeline

SERVICE_NAME = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name


class MusicServicer(music_pb2_grpc.MusicServiceServicer):
    def __init__(self, preset_name: str, weights: str | None = None):
        self.host: ModelHost[MusicPipeline] = ModelHost(
            "music", preset_name, lambda name, models_dir: MusicPipeline.from_preset(music_preset(name, weights), models_dir)
        )

    def GenerateMusic(self, request: music_pb2.GenerateMusicRequest, context: grpc.ServicerContext):
        self.host.check_prompt_length(context, prompt=request.prompt)
        pipeline = self.host.ready_pipeline(request.model, context)
        guidance = request.guidance_scale or None
        try:
            pipeline.check_inputs(request.prompt, request.duration_seconds, guidance)
            if len(request.melody_pcm) % 4:
                raise InvalidMusicInput("melody_pcm", "must be whole float32 samples")
            melody = wire.pcm_from_bytes(request.melody_pcm, 1)[:, 0] if request.melody_pcm else None
            pipeline.check_melody(melody)
        except InvalidMusicInput as error:
            rpc_errors.abort_invalid_field(context, error.field, str(error))
        if not 0 <= request.seed <= 2**32 - 1:
            rpc_errors.abort_invalid_field(context, "seed", "seed: must be within 0..4294967295")
        total = pipeline.num_samples(request.duration_seconds)
        header = music_pb2.AudioHeader(
            sample_rate=pipeline.sample_rate,
            channels=pipeline.channels,
            total_samples=total,
            model_id=pipeline.model_id,
            seed=request.seed,
        )

        def generate(emit, cancelled) -> None:
            # Window by window: each window's audio goes out as soon as it is decoded (tunereel.segments).
            pieces = pipeline.stream(
                request.prompt,
                request.duration_seconds,
                seed=request.seed,
                guidance_scale=guidance,
                on_progress=ProgressThrottle(lambda report: emit(
                    music_pb2.GenerateMusicResponse(progress=segment_progress(common_pb2.STAGE_MUSIC, report, "generating"))
                )),  # fmt: skip
                interrupt=cancelled,
                melody=melody,
            )
            for piece in pieces:
                for start in range(0, piece.audio.shape[0], wire.AUDIO_CHUNK_SAMPLES):
                    part = piece.audio[start : start + wire.AUDIO_CHUNK_SAMPLES]
                    emit(
                        music_pb2.GenerateMusicResponse(
                            chunk=music_pb2.AudioChunk(
                                offset_samples=piece.offset + start, num_samples=len(part), pcm=wire.pcm_to_bytes(part)
                            )
                        )
                    )
                piece = part = None  # not held while the next window is made

        yield from self.host.stream(
            context,
            music_pb2.GenerateMusicResponse(header=header),
            generate,
            queued=music_pb2.GenerateMusicResponse(progress=progress(common_pb2.STAGE_QUEUED, 0.0, message="waiting for the model")),
        )


def serve(preset: str, *, host: str, port: int, models_dir: Path | None, weights: str | None = None) -> GrpcServer:
    return serve_model(
        MusicServicer(preset, weights), music_pb2_grpc.add_MusicServiceServicer_to_server, SERVICE_NAME,
        host=host, port=port, models_dir=models_dir,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return model_main("music", "MusicService (MusicGen)", 50051, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
