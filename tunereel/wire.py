"""Conversions between Python values and the tunereel.v1 wire types: requests, PCM and frames.

Every service uses these, so the byte layouts promised in protos/ are written down once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tunereel.request import GenerationRequest, SceneRequest, trusted_request
from tunereel.v1 import common_pb2, jobs_pb2

__all__ = [
    "FRAME_CHUNK_BYTES",
    "AUDIO_CHUNK_SAMPLES",
    "request_to_proto",
    "request_from_proto",
    "PROTO_FIELD_NAMES",
    "proto_field_path",
    "request_field_path",
    "provenance_to_dict",
    "job_to_dict",
    "timeline_to_proto",
    "timeline_to_dict",
    "job_state_name",
    "job_state_value",
    "stage_name",
    "enum_names",
    "pcm_to_bytes",
    "pcm_from_bytes",
    "pcm16_to_bytes",
    "pcm16_from_bytes",
    "SOURCE_RATE",
    "SOURCE_CHANNELS",
    "split_frame",
    "FrameAssembler",
]

# 1 MiB keeps every message far below gRPC's 4 MiB default; a 768x512 RGB frame (1.18 MB) takes two chunks.
# (One message per frame measured no cheaper: the streaming is ~2.5 % of a 768x512 tiny-model run either way and the
# copies ~0.2 ms per frame; see bench/transport.py.)
FRAME_CHUNK_BYTES = 1 << 20
# One second of 32 kHz audio per message (128 KB as float32 mono).
AUDIO_CHUNK_SAMPLES = 32_000
# GenerateMusicRequest.source_pcm (the audio to repaint): int16 interleaved stereo at 48 kHz, ACE-Step 1.5's own
# layout, so the music service neither resamples nor remixes; int16 halves float32's size (300 s: 57.6 MB).
SOURCE_RATE = 48_000
SOURCE_CHANNELS = 2


def request_to_proto(request: GenerationRequest) -> common_pb2.GenerationRequest:
    message = common_pb2.GenerationRequest(
        genre=request.genre or "",
        duration_seconds=request.duration or 0.0,
        video_prompt=request.video_prompt,
        mood=request.mood or "",
        instruments=request.instruments,
        width=request.width,
        height=request.height,
        fps=request.fps,
        music_model=request.music_model or "",
        video_model=request.video_model or "",
        song=request.song or "",
        song_start_seconds=request.start,
        normalize=request.normalize,
        melody=request.melody or "",
        image=request.image or "",
        lyrics=request.lyrics or "",
        vocal_language=request.vocal_language or "",
        key=request.key or "",
        time_signature=request.time_signature or "",
        cuts=common_pb2.Cuts.Value(f"CUTS_{request.cuts.upper()}"),
        scenes=[scene_to_proto(scene) for scene in request.scenes or []],
    )
    for name in ("tempo_bpm", "seed", "cut_every_beats", "repaint_start", "repaint_end"):  # proto3 `optional`: 0 is a value
        if (value := getattr(request, name)) is not None:
            setattr(message, PROTO_FIELD_NAMES.get(name, name), value)
    return message


def request_from_proto(message: common_pb2.GenerationRequest) -> dict:
    """The proto as the plain dict the request model validates (zero means "default" for sizes and fps)."""
    data: dict = {
        "genre": message.genre,
        "duration": message.duration_seconds,
        "video_prompt": message.video_prompt,
        "mood": message.mood or None,
        "instruments": list(message.instruments),
        "music_model": message.music_model or None,
        "video_model": message.video_model or None,
    }
    # Zero / empty means "not given" for these: the request model's defaults apply (sizes, fps, singing fields,
    # upload ids); tempo, seed, cut_every_beats and the repaint range are proto3 `optional`, where 0 is a value (refused
    # for cut_every_beats).
    unset_when_empty = ("lyrics", "vocal_language", "key", "time_signature", "width", "height", "fps", "song", "melody",
                        "image", "song_start_seconds", "normalize")  # fmt: skip
    data.update({REQUEST_FIELD_NAMES.get(name, name): getattr(message, name)
                 for name in unset_when_empty if getattr(message, name)})  # fmt: skip
    data.update({REQUEST_FIELD_NAMES.get(name, name): getattr(message, name)
                 for name in ("tempo_bpm", "seed", "cut_every_beats", "repaint_start_seconds", "repaint_end_seconds")
                 if message.HasField(name)})  # fmt: skip
    if message.song:  # a song makes genre and duration optional: empty and 0 mean "not given"
        data["genre"] = message.genre or None
        data["duration"] = message.duration_seconds or None
    if message.cuts:
        data["cuts"] = common_pb2.Cuts.Name(message.cuts).removeprefix("CUTS_").lower()
    if message.scenes:
        data["scenes"] = [scene_from_proto(scene) for scene in message.scenes]
    return data


def scene_to_proto(scene: SceneRequest) -> common_pb2.Scene:
    message = common_pb2.Scene(prompt=scene.prompt)
    if scene.section is not None:
        message.section = scene.section
    if scene.bars is not None:
        message.first_bar, message.last_bar = scene.bars
    if scene.image is not None:
        message.image = scene.image
    return message


def scene_from_proto(message: common_pb2.Scene) -> dict:
    data: dict = {"prompt": message.prompt}
    if message.HasField("section"):
        data["section"] = message.section
    if message.HasField("first_bar") or message.HasField("last_bar"):
        data["bars"] = [message.first_bar, message.last_bar if message.HasField("last_bar") else message.first_bar]
    if message.image:
        data["image"] = message.image
    return data


# The request model's field names where GenerationRequest's differ (the proto names the unit).
PROTO_FIELD_NAMES = {"duration": "duration_seconds", "start": "song_start_seconds",
                     "repaint_start": "repaint_start_seconds", "repaint_end": "repaint_end_seconds"}  # fmt: skip
REQUEST_FIELD_NAMES = {proto: model for model, proto in PROTO_FIELD_NAMES.items()}


def proto_field_path(path: tuple[str | int, ...], prefix: str = "") -> str:
    """A request-model path as a field path of the proto (google.rpc.BadRequest, AIP-193): proto field names joined by
    dots, list indexes in brackets; e.g. ("instruments", 2) with prefix "request" is "request.instruments[2]"."""
    text = prefix
    for part in path:
        if isinstance(part, int) or part.isdigit():
            text += f"[{part}]"
        else:
            text += ("." if text else "") + PROTO_FIELD_NAMES.get(part, part)
    return text


def request_field_path(path: tuple[str | int, ...]) -> str:
    """Where a request-model field lies in ComposeRequest and CreateJobRequest (their `request` field)."""
    return proto_field_path(path, "request")


def provenance_to_dict(provenance: common_pb2.Provenance) -> dict:
    """Plain JSON-ready provenance: the request in the HTTP API's own field names, numbers as numbers."""
    return {
        "request": trusted_request(request_from_proto(provenance.request)).model_dump(),
        "seed": provenance.seed,
        "music_model_id": provenance.music_model_id,
        "video_model_id": provenance.video_model_id,
        "music_prompt": provenance.music_prompt,
        "version": provenance.version,
        "uploads": [{"field": use.field, "sha256": use.sha256} for use in provenance.uploads],
    }


def timeline_to_proto(timeline: dict) -> common_pb2.Timeline:
    """A timeline (tunereel.shots.timeline_dict) as the proto."""
    return common_pb2.Timeline(
        tempo_bpm=timeline.get("tempo_bpm") or 0.0,
        beats=timeline["beats"],
        downbeats=timeline["downbeats"],
        fps=timeline["fps"],
        frame_count=timeline["frames"],
        sections=[common_pb2.TimelineSection(index=s["index"], start_seconds=s["start_s"], end_seconds=s["end_s"],
                                             first_bar=s["first_bar"], bar_count=s["bars"])
                  for s in timeline["sections"]],
        shots=[common_pb2.Shot(index=s["index"], scene=s["scene"], start_frame=s["start_frame"], end_frame=s["end_frame"],
                               start_seconds=s["start_s"], end_seconds=s["end_s"], prompt=s["prompt"], seed=s["seed"],
                               replica=s["replica"], attempts=s.get("attempts", 0))
               for s in timeline["shots"]],
    )  # fmt: skip


def timeline_to_dict(message: common_pb2.Timeline) -> dict:
    """The proto as the HTTP API shows it (the same shape as tunereel.shots.timeline_dict)."""
    return {
        "duration_s": message.frame_count / message.fps if message.fps else 0.0,
        "fps": message.fps,
        "frames": message.frame_count,
        "tempo_bpm": message.tempo_bpm or None,
        "beats": list(message.beats),
        "downbeats": list(message.downbeats),
        "sections": [{"index": s.index, "start_s": s.start_seconds, "end_s": s.end_seconds, "first_bar": s.first_bar,
                      "bars": s.bar_count} for s in message.sections],
        "shots": [{"index": s.index, "scene": s.scene, "start_frame": s.start_frame, "end_frame": s.end_frame,
                   "start_s": s.start_seconds, "end_s": s.end_seconds, "prompt": s.prompt, "seed": s.seed,
                   "replica": s.replica, "attempts": s.attempts} for s in message.shots],
    }  # fmt: skip


def job_state_name(state: int) -> str:
    """A JobState as the store, the HTTP API, the CLI and the UI name it: JOB_STATE_QUEUED → "queued"."""
    return jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def job_state_value(name: str) -> int:
    return jobs_pb2.JobState.Value(f"JOB_STATE_{name.upper()}")


def stage_name(stage: int) -> str | None:
    """A Stage by its short name: STAGE_MUX → "mux"; None for STAGE_UNSPECIFIED (no stage yet)."""
    if stage == common_pb2.STAGE_UNSPECIFIED:
        return None
    return common_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()


TERMINAL_STATES = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELED)


def enum_names() -> dict[str, list[str]]:
    """Every name a client meets in a job view, in the enums' order (the gateway serves this to the UI)."""
    return {
        "job_states": [job_state_name(v) for v in jobs_pb2.JobState.values() if v != jobs_pb2.JOB_STATE_UNSPECIFIED],
        "terminal_states": [job_state_name(v) for v in TERMINAL_STATES],
        "stages": [name for name in map(stage_name, common_pb2.Stage.values()) if name is not None],
        "generation_stages": [stage_name(v) for v in (common_pb2.STAGE_MUSIC, common_pb2.STAGE_VIDEO, common_pb2.STAGE_MUX)],
    }


def job_to_dict(job) -> dict:
    """A tunereel.v1.Job as the HTTP API and webhooks show it."""

    def when(field: str) -> str | None:
        return getattr(job, field).ToJsonString() if job.HasField(field) else None

    return {
        "id": job.id,
        "state": job_state_name(job.state),
        "progress": round(job.progress, 4),
        "stage": stage_name(job.stage),
        "stage_progress": {name: round(value, 4) for name, value in sorted(job.stage_progress.items())},
        "queue_position": job.queue_position,
        "eta_seconds": _eta_seconds(job),
        "created_at": when("create_time"),
        "started_at": when("start_time"),
        "ended_at": when("end_time"),
        "request": trusted_request(request_from_proto(job.request)).model_dump(),
        "provenance": provenance_to_dict(job.provenance) if job.HasField("provenance") else None,
        "error": job.error or None,
        "attempts": job.attempts,
        "result_size_bytes": job.result_size_bytes or None,
        "webhook_url": job.webhook_url or None,
    }


def _eta_seconds(job) -> float | None:
    if job.HasField("eta"):
        return round(job.eta.ToNanoseconds() / 1e9, 3)
    return job.eta_seconds if job.HasField("eta_seconds") else None  # a server that predates `eta`


def pcm_to_bytes(pcm: np.ndarray) -> bytes:
    """(samples, channels) float → interleaved float32 little-endian bytes."""
    return np.ascontiguousarray(pcm, dtype="<f4").tobytes()


def pcm_from_bytes(data: bytes, channels: int) -> np.ndarray:
    """Interleaved float32 little-endian bytes → (samples, channels) float32 array (a copy, writable)."""
    return np.frombuffer(data, dtype="<f4").reshape(-1, channels).astype(np.float32)


def pcm16_to_bytes(pcm: np.ndarray) -> bytes:
    """(samples, channels) float in -1..1 → interleaved int16 little-endian bytes (clipped, rounded to the nearest
    of 65536 steps: at most 1/65536 off)."""
    return np.round(np.clip(pcm, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def pcm16_from_bytes(data: bytes, channels: int) -> np.ndarray:
    """Interleaved int16 little-endian bytes → (samples, channels) float32 in -1..1 (exact: every int16 is a float32)."""
    return (np.frombuffer(data, dtype="<i2").reshape(-1, channels) / np.float32(32768)).astype(np.float32)


def split_frame(frame: np.ndarray, chunk_bytes: int = FRAME_CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) pieces of one HxWx3 uint8 frame."""
    data = memoryview(np.ascontiguousarray(frame, dtype=np.uint8)).cast("B")
    for offset in range(0, len(data), chunk_bytes):
        yield offset, bytes(data[offset : offset + chunk_bytes])


class FrameAssembler:
    """Rebuilds whole frames from FrameChunk pieces, checking order and sizes."""

    def __init__(self, width: int, height: int):
        self.shape = (height, width, 3)
        self.frame_bytes = width * height * 3
        self._buffer = bytearray(self.frame_bytes)
        self._index = 0
        self._filled = 0

    def add(self, frame_index: int, offset: int, data: bytes) -> np.ndarray | None:
        """Add a piece; returns the frame once its last byte arrived, else None."""
        if frame_index != self._index or offset != self._filled:
            raise ValueError(
                f"frame chunk out of order: got frame {frame_index} offset {offset}, "
                f"expected frame {self._index} offset {self._filled}"
            )
        end = offset + len(data)
        if end > self.frame_bytes:
            raise ValueError(f"frame {frame_index} is larger than {self.frame_bytes} bytes")
        if offset == 0 and end == self.frame_bytes:  # the whole frame in one piece: no copy at all
            frame = np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
        else:
            self._buffer[offset:end] = data
            self._filled = end
            if end < self.frame_bytes:
                return None
            # hand this buffer over to the frame and start the next frame in a new one (no copy of the whole frame)
            frame = np.frombuffer(self._buffer, dtype=np.uint8).reshape(self.shape)
            self._buffer = bytearray(self.frame_bytes)
        self._index += 1
        self._filled = 0
        return frame

    @property
    def frames_done(self) -> int:
        return self._index
