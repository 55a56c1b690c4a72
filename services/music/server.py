"""MusicService over gRPC: turns MusicPipeline callbacks into a header, progress and PCM chunk stream."""

from __future__ import annotations

from pathlib import Path

import grpc

from tunereel import rpc_errors, wire
from tunereel.channels import MUSIC_REQUEST_LIMIT_BYTES
from tunereel.model_host import ModelHost, ProgressThrottle, model_main, progress, segment_progress, serve_model
from tunereel.presets import MusicPreset, UnknownPreset, music_preset
from tunereel.serving import GrpcServer
from tunereel.v1 import common_pb2, music_pb2, music_pb2_grpc

from .ace_step import AceStepMusic, SongConditions
from .pipeline import InvalidMusicInput, MusicPipeline
from .repaint import Repaint, repaint_from_wire

SERVICE_NAME = music_pb2.DESCRIPTOR.services_by_name["MusicService"].full_name


def load_music(preset: MusicPreset, models_dir: Path | None) -> MusicPipeline | AceStepMusic:
    """The pipeline of the preset's family: one service serves one family's presets, the preset says which."""
    family = {"musicgen": MusicPipeline, "ace-step": AceStepMusic}[preset.family]
    return family.from_preset(preset, models_dir)


def song_conditions(request: music_pb2.GenerateMusicRequest, sings: bool, preset: str, context: grpc.ServicerContext):
    """The singing models' fields of `request`; for a model that does not sing, any of them is INVALID_ARGUMENT."""
    conditions = SongConditions(request.lyrics, request.vocal_language, request.key, request.time_signature, request.bpm)
    if not sings:
        for name in ("lyrics", "vocal_language", "key", "time_signature"):
            if getattr(conditions, name):
                rpc_errors.abort_invalid_field(
                    context, name, f"{name}: this model does not sing (music preset {preset!r} makes instrumentals); "
                    f"use a singing preset such as 'ace-step-xl-turbo'"
                )  # fmt: skip
    if conditions.bpm and not 40 <= conditions.bpm <= 240:
        rpc_errors.abort_invalid_field(context, "bpm", f"bpm: must be within 40..240 (got {conditions.bpm})")
    return conditions


def repaint_request(request: music_pb2.GenerateMusicRequest, pipeline: MusicPipeline | AceStepMusic, repaints: bool,
                    preset: str, context: grpc.ServicerContext) -> Repaint | None:  # fmt: skip
    """The audio and range to repaint, if the request asks for it; for a model that cannot repaint (the preset's
    `repaints`, as DescribeModel reports it), INVALID_ARGUMENT naming the field, as for lyrics."""
    asked = [name for name in ("repaint_start_seconds", "repaint_end_seconds", "source_pcm") if getattr(request, name)]
    if not asked:
        return None
    if not repaints:
        name = "repaint_start_seconds" if "source_pcm" in asked else asked[0]
        rpc_errors.abort_invalid_field(
            context, name, f"{name}: this model cannot repaint (music preset {preset!r} only makes new music); use a "
            f"preset that repaints such as 'ace-step-xl-turbo'"
        )  # fmt: skip
    return repaint_from_wire(request.source_pcm, request.repaint_start_seconds, request.repaint_end_seconds,
                             duration_s=request.duration_seconds, rate=pipeline.sample_rate,
                             channels=pipeline.channels)  # fmt: skip


class MusicServicer(music_pb2_grpc.MusicServiceServicer):
    def __init__(self, preset_name: str, weights: str | None = None):
        self.preset_name, self.weights = preset_name, weights
        self.host: ModelHost[MusicPipeline | AceStepMusic] = ModelHost(
            "music", preset_name, lambda name, models_dir: load_music(music_preset(name, weights), models_dir)
        )

    def DescribeModel(self, request: music_pb2.MusicServiceDescribeModelRequest,
                      context: grpc.ServicerContext) -> music_pb2.MusicModelInfo:  # fmt: skip
        try:
            p = music_preset(self.preset_name, self.weights)
        except UnknownPreset as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error.message)
        return music_pb2.MusicModelInfo(preset=p.name, family=p.family, sings=p.sings, follows_melody=p.follows_melody,
                                        license=p.license, repaints=p.repaints)  # fmt: skip

    def GenerateMusic(self, request: music_pb2.GenerateMusicRequest, context: grpc.ServicerContext):
        self.host.check_prompt_length(context, prompt=request.prompt)
        pipeline = self.host.ready_pipeline(request.model, context)
        guidance = request.guidance_scale or None
        sings = isinstance(pipeline, AceStepMusic)
        conditions = song_conditions(request, sings, request.model or self.preset_name, context)
        extra = {"conditions": conditions} if sings else {}  # MusicGen's tempo is in its prompt
        try:
            pipeline.check_inputs(request.prompt, request.duration_seconds, guidance, **extra)
            if len(request.melody_pcm) % 4:
                raise InvalidMusicInput("melody_pcm", "must be whole float32 samples")
            melody = wire.pcm_from_bytes(request.melody_pcm, 1)[:, 0] if request.melody_pcm else None
            if sings and melody is not None:  # ACE-Step's "cover" task takes reference audio; not wired yet
                raise InvalidMusicInput("melody_pcm", "only the MusicGen melody presets follow a melody; this replica "
                                                      f"serves {pipeline.model_id}")  # fmt: skip
            if melody is not None:
                pipeline.check_melody(melody)
                extra["melody"] = melody
            repaints = music_preset(self.preset_name, self.weights).repaints  # as DescribeModel reports it
            repaint = repaint_request(request, pipeline, repaints, request.model or self.preset_name, context)
            if repaint is not None:
                extra["repaint"] = repaint
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
                **extra,
                on_progress=ProgressThrottle(lambda report: emit(
                    music_pb2.GenerateMusicResponse(progress=segment_progress(common_pb2.STAGE_MUSIC, report, "generating"))
                )),  # fmt: skip
                interrupt=cancelled,
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
        host=host, port=port, models_dir=models_dir, max_receive_bytes=MUSIC_REQUEST_LIMIT_BYTES,  # the audio to repaint
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return model_main("music", "MusicService (MusicGen, ACE-Step)", 50051, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
