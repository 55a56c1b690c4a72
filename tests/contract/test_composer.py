"""Contract tests of ComposerService on in-process backends: concurrency, cancel propagation, status codes."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tunereel import wire
from tunereel.channels import open_channel
from tunereel.composer import server as composer_server
from tunereel.music import server as music_server
from tunereel.request import validate_request
from tunereel.v1 import composer_pb2, composer_pb2_grpc
from tunereel.video import server as video_server


class Recorder:
    """Wraps a pipeline's `stream`: records when each call ran, how many steps of which segment it made, and the
    pieces it yielded; can slow each step down."""

    def __init__(self, pipeline, step_delay: float = 0.0):
        self.pipeline = pipeline
        self.step_delay = step_delay
        self.calls: list[dict] = []

    def __getattr__(self, name):
        return getattr(self.pipeline, name)

    def stream(self, *args, on_progress=None, **kwargs):
        record = {"start": time.monotonic(), "steps": 0, "total": None, "end": None, "segments": set(), "pieces": 0}
        self.calls.append(record)

        def step(report):
            record["steps"], record["total"] = report.step, report.total_steps
            record["segment"], record["total_segments"] = report.segment, report.total_segments
            record["segments"].add(report.segment)
            if self.step_delay:
                time.sleep(self.step_delay)
            if on_progress:
                on_progress(report)

        try:
            for piece in self.pipeline.stream(*args, on_progress=step, **kwargs):
                record["pieces"] += 1
                yield piece
        finally:
            record["end"] = time.monotonic()


@pytest.fixture(scope="module")
def system(models_dir, tmp_path_factory):
    music = music_server.serve("tiny", host="127.0.0.1", port=0, models_dir=models_dir)
    video = video_server.serve("tiny", host="127.0.0.1", port=0, models_dir=models_dir)
    music.servicer.host.pipeline = Recorder(music.servicer.host.pipeline)
    video.servicer.host.pipeline = Recorder(video.servicer.host.pipeline)
    composer = composer_server.serve(
        host="127.0.0.1",
        port=0,
        music_target=f"127.0.0.1:{music.port}",
        video_target=f"127.0.0.1:{video.port}",
        data_dir=tmp_path_factory.mktemp("data"),
        max_concurrent=1,
    )
    channel = open_channel(f"127.0.0.1:{composer.port}")
    deadline = time.monotonic() + 30
    health = health_pb2_grpc.HealthStub(channel)
    while health.Check(health_pb2.HealthCheckRequest(service="")).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "composer never reported SERVING"
        time.sleep(0.1)
    yield {
        "music": music,
        "video": video,
        "composer": composer,
        "channel": channel,
        "stub": composer_pb2_grpc.ComposerServiceStub(channel),
    }
    channel.close()
    for server in (composer, music, video):
        server.stop(0)


@pytest.fixture(autouse=True)
def composer_is_free_after(system):
    """The composer here runs one composition at a time: a test that cancelled one (or ran out of its deadline) hands
    on a composer that may still be winding it down after the backends stopped; the next test starts when it is done.
    """
    yield
    slots = system["composer"].servicer.slots
    assert slots.acquire(timeout=30), "the composer still holds a composition 30 s after the test"
    slots.release()


def _request(**fields):
    # one continuous take: music and video in flight together (videos cut into shots: tests/contract/test_shots.py)
    body = {"genre": "pop", "duration": 2, "video_prompt": "a sunset", "width": 256, "height": 256, "cuts": "none", **fields}
    return composer_pb2.ComposeRequest(request=wire.request_to_proto(validate_request(body)))


def _assert_backends_stop(system, within_s: float) -> None:
    """Both backends release their model within `within_s` (after a cancel)."""
    locks = [system[name].servicer.host.turnstile for name in ("music", "video")]
    deadline = time.monotonic() + within_s
    while any(lock.busy for lock in locks) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(lock.busy for lock in locks), "a backend kept generating after the cancel"


def test_stream_layout_and_both_backends_in_flight_together(system):
    music_calls = system["music"].servicer.host.pipeline.calls
    video_calls = system["video"].servicer.host.pipeline.calls
    before = len(music_calls), len(video_calls)
    messages = list(system["stub"].Compose(_request(duration=3, seed=5), timeout=120))

    kinds = [m.WhichOneof("payload") for m in messages]
    first_result = kinds.index("result")
    assert set(kinds[:first_result]) == {"progress"}
    assert set(kinds[first_result + 1 :]) == {"chunk"} and kinds.count("result") == 1
    result = messages[first_result].result
    chunks = [m.chunk for m in messages[first_result + 1 :]]
    assert sum(len(c.data) for c in chunks) == result.size_bytes
    assert [c.offset for c in chunks] == [sum(len(c.data) for c in chunks[:i]) for i in range(len(chunks))]
    assert result.frame_count == 72 and result.duration_seconds == pytest.approx(3.0)
    assert result.provenance.seed == 5 and result.provenance.music_model_id == "tiny-musicgen"
    stages = {m.progress.stage for m in messages if m.WhichOneof("payload") == "progress"}
    assert {2, 3, 4, 5} <= stages  # MUSIC, VIDEO, MUX, DONE

    music, video = music_calls[before[0]], video_calls[before[1]]
    # Both generations ran at the same time: each started before the other ended.
    assert music["start"] < video["end"] and video["start"] < music["end"]
    overlap = min(music["end"], video["end"]) - max(music["start"], video["start"])
    print(f"music {music['end'] - music['start']:.2f} s, video {video['end'] - video['start']:.2f} s, overlap {overlap:.2f} s")
    assert overlap > 0


def test_cancel_reaches_both_backends_and_stops_them(system):
    music_pipeline = system["music"].servicer.host.pipeline
    video_pipeline = system["video"].servicer.host.pipeline
    # slow models: both still busy when we cancel (the video has 4 steps: a 0.3 s step leaves ~1 s to stop it in)
    music_pipeline.step_delay, video_pipeline.step_delay = 0.05, 0.3
    try:
        call = system["stub"].Compose(_request(duration=10, width=768, height=512), timeout=300)
        seen = set()
        for message in call:
            if message.WhichOneof("payload") == "progress" and message.progress.step > 0:
                seen.add(message.progress.stage)
            if {2, 3} <= seen:
                break
        call.cancel()
        _assert_backends_stop(system, within_s=15)
        music_call, video_call = music_pipeline.calls[-1], video_pipeline.calls[-1]
        assert music_call["steps"] < music_call["total"]
        assert video_call["steps"] < video_call["total"]
    finally:
        music_pipeline.step_delay = video_pipeline.step_delay = 0.0


def test_invalid_argument_names_the_field(system):
    bad = composer_pb2.ComposeRequest(request=wire.request_to_proto(validate_request({"genre": "pop", "duration": 1, "video_prompt": "x"})))
    bad.request.width = 100
    with pytest.raises(grpc.RpcError) as caught:
        list(system["stub"].Compose(bad, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("width:")
    empty = composer_pb2.ComposeRequest()
    with pytest.raises(grpc.RpcError) as caught:
        list(system["stub"].Compose(empty, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class BadAudio(Recorder):
    """A music pipeline whose last window of audio is not numbers (NaN), as a broken model could send: for a long
    song the failure comes after good audio has been mastered and muxed."""

    def stream(self, *args, **kwargs):
        for piece in super().stream(*args, **kwargs):
            if piece.segment == piece.total_segments - 1:
                piece = dataclasses.replace(piece, audio=np.full_like(piece.audio, np.nan))
            yield piece


@pytest.mark.parametrize("duration", [2.0, 32.0], ids=["whole-clip", "streamed"])
def test_audio_that_cannot_be_mastered_fails_the_composition_cleanly(system, duration):
    """The audio is mastered on its own thread: its failure must still end the call with a status, leave no
    partial file, and leave the composer serving."""
    music = system["music"].servicer.host
    original = music.pipeline
    music.pipeline = BadAudio(original.pipeline)
    work_dir = system["composer"].runner.composer.work_dir
    try:
        with pytest.raises(grpc.RpcError) as caught:
            list(system["stub"].Compose(_request(duration=duration, width=64, height=64), timeout=300))
    finally:
        music.pipeline = original
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "audio" in caught.value.details() and "NaN" in caught.value.details(), caught.value.details()
    assert not [p for p in work_dir.iterdir() if p.name.startswith(("compose-", ".compose-"))]
    messages = list(system["stub"].Compose(_request(duration=1, width=64, height=64, seed=3), timeout=120))
    assert any(m.WhichOneof("payload") == "result" for m in messages)  # still serving


def test_deadline_exceeded(system):
    with pytest.raises(grpc.RpcError) as caught:
        list(system["stub"].Compose(_request(duration=10, width=768, height=512), timeout=0.5))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    lock = system["video"].servicer.host.turnstile
    deadline = time.monotonic() + 15
    while lock.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lock.busy


def test_resource_exhausted_when_full(system):
    system["music"].servicer.host.pipeline.step_delay = 0.02
    try:
        first = system["stub"].Compose(_request(duration=5), timeout=120)
        next(iter(first))  # the first composition holds the only slot
        with pytest.raises(grpc.RpcError) as caught:
            list(system["stub"].Compose(_request(duration=1), timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
    finally:
        system["music"].servicer.host.pipeline.step_delay = 0.0


def test_health_and_reflection(system):
    health = health_pb2_grpc.HealthStub(system["channel"])
    for service in ("", "tunereel.v1.ComposerService", "tunereel.v1.MusicService", "tunereel.v1.VideoService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(system["channel"]).get_services())
    assert {"tunereel.v1.ComposerService", "grpc.health.v1.Health"} <= services


def test_long_request_is_made_in_segments_and_muxed_as_they_arrive(system):
    # 40 s: two music windows (30 s + 10 s continuing the last 10 s) and four video segments (257 + 3 x 240 frames)
    messages = list(system["stub"].Compose(_request(duration=40, width=64, height=64, seed=9), timeout=600))
    result = next(m.result for m in messages if m.WhichOneof("payload") == "result")
    assert result.frame_count == 960 and result.duration_seconds == pytest.approx(40.0)
    assert result.audio_samples == 40 * 32000
    progress = [m.progress for m in messages if m.WhichOneof("payload") == "progress"]
    music = [p for p in progress if p.stage == 2]
    video = [p for p in progress if p.stage == 3]
    assert {p.total_segments for p in music} == {2} and sorted({p.segment for p in music}) == [0, 1]
    assert {p.total_segments for p in video} == {4} and sorted({p.segment for p in video}) == [0, 1, 2, 3]
    for stage in (music, video):
        assert [p.fraction for p in stage] == sorted(p.fraction for p in stage)
    # streaming end to end: frames of the first segments were muxed while the video service made the last one
    first_muxed = next(i for i, p in enumerate(progress) if p.stage == 4 and p.message == "encoding")
    last_segment_starts = next(i for i, p in enumerate(progress) if p.stage == 3 and p.segment == 3)
    assert first_muxed < last_segment_starts


def test_cancel_mid_way_through_a_long_request_stops_within_a_segment(system):
    video_pipeline = system["video"].servicer.host.pipeline
    music_pipeline = system["music"].servicer.host.pipeline
    video_pipeline.step_delay = 0.2  # 4 steps of 0.2 s per segment: the cancel lands while segments are made
    before = len(video_pipeline.calls)
    try:
        call = system["stub"].Compose(_request(duration=60, width=64, height=64), timeout=300)
        # cancel once the video service itself (not what has reached us: streams buffer) is in its third segment
        for _ in call:
            if len(video_pipeline.calls) > before and video_pipeline.calls[-1].get("segment", 0) >= 2:
                break
        at_cancel = video_pipeline.calls[-1]["segment"]
        call.cancel()
        _assert_backends_stop(system, within_s=10)
        video_call = video_pipeline.calls[-1]
        assert video_call["total_segments"] == 6
        assert max(video_call["segments"]) <= at_cancel + 1 < 5  # stopped within the segment it was in (or the next)
        music_call = music_pipeline.calls[-1]
        assert music_call["steps"] < music_call["total"] or music_call["segment"] < music_call["total_segments"] - 1
    finally:
        video_pipeline.step_delay = 0.0
