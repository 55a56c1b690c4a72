"""Contract tests of MusicService and VideoService: stream layout, chunk sizes, health, reflection, errors, cancel."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tunereel import rpc_errors, wire
from tunereel.channels import open_channel
from tunereel.serving import Turnstile
from tunereel.music import server as music_server
from tunereel.v1 import music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc
from tunereel.video import server as video_server

GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024


def _served(serve, preset: str, stub_class, models_dir):
    """A model service in this process on a free port: (server, channel, stub), stopped after the module."""
    server = serve(preset, host="127.0.0.1", port=0, models_dir=models_dir)
    channel = open_channel(f"127.0.0.1:{server.port}")
    yield server, channel, stub_class(channel)
    channel.close()
    server.stop(0)


@pytest.fixture(scope="module")
def music(models_dir):
    yield from _served(music_server.serve, "tiny", music_pb2_grpc.MusicServiceStub, models_dir)


@pytest.fixture(scope="module")
def video(models_dir):
    yield from _served(video_server.serve, "tiny", video_pb2_grpc.VideoServiceStub, models_dir)


def _music_pcm(stub, **fields):
    messages = list(stub.GenerateMusic(music_pb2.GenerateMusicRequest(**fields), timeout=120))
    header = messages[0].header
    chunks = [m.chunk for m in messages if m.WhichOneof("payload") == "chunk"]
    pcm = np.concatenate([wire.pcm_from_bytes(c.pcm, header.channels) for c in chunks])
    return messages, header, chunks, pcm


def test_music_stream_layout(music):
    _, _, stub = music
    messages, header, chunks, pcm = _music_pcm(stub, prompt="pop, upbeat", duration_seconds=2.5, seed=3)
    assert messages[0].WhichOneof("payload") == "header"
    assert (header.sample_rate, header.channels, header.total_samples) == (32000, 1, 80000)
    assert header.model_id == "tiny-musicgen"
    offsets = [c.offset_samples for c in chunks]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(a.offset_samples + a.num_samples == b.offset_samples for a, b in zip(chunks, chunks[1:]))
    assert sum(c.num_samples for c in chunks) == len(pcm) == 80000
    assert max(m.ByteSize() for m in messages) < GRPC_DEFAULT_LIMIT
    progress = [m.progress for m in messages if m.WhichOneof("payload") == "progress"]
    assert progress and progress[-1].fraction == pytest.approx(1.0)
    assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0


def test_music_same_seed_is_bit_identical(music):
    _, _, stub = music
    a = _music_pcm(stub, prompt="jazz", duration_seconds=1.0, seed=11)[3]
    b = _music_pcm(stub, prompt="jazz", duration_seconds=1.0, seed=11)[3]
    c = _music_pcm(stub, prompt="jazz", duration_seconds=1.0, seed=12)[3]
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"prompt": "", "duration_seconds": 1}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ({"prompt": "pop", "duration_seconds": 0}, grpc.StatusCode.INVALID_ARGUMENT, "duration_seconds"),
        ({"prompt": "pop", "duration_seconds": 301}, grpc.StatusCode.INVALID_ARGUMENT, "duration_seconds"),
        ({"prompt": "pop", "duration_seconds": 1, "guidance_scale": 50}, grpc.StatusCode.INVALID_ARGUMENT, "guidance"),
        ({"prompt": "pop", "duration_seconds": 1, "seed": -5}, grpc.StatusCode.INVALID_ARGUMENT, "seed"),
        ({"prompt": "pop", "duration_seconds": 1, "model": "large"}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
    ],
)
def test_music_errors(music, fields, code, words):
    _, _, stub = music
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GenerateMusic(music_pb2.GenerateMusicRequest(**fields), timeout=30))
    assert caught.value.code() == code
    assert words in caught.value.details()
    if code == grpc.StatusCode.INVALID_ARGUMENT:  # the field also comes as a google.rpc.BadRequest detail
        assert [field for field, _ in rpc_errors.details_of(caught.value).field_violations] == [
            next(name for name in fields if name.startswith(words))
        ]


def _frames(stub, **fields):
    messages = list(stub.GenerateVideo(video_pb2.GenerateVideoRequest(**fields), timeout=120))
    header = messages[0].header
    assembler = wire.FrameAssembler(header.width, header.height)
    frames = []
    for m in messages:
        if m.WhichOneof("payload") == "frame":
            frame = assembler.add(m.frame.frame_index, m.frame.offset, m.frame.data)
            if frame is not None:
                frames.append(frame)
    return messages, header, np.stack(frames)


def test_video_stream_layout_at_768x512(video):
    _, _, stub = video
    messages, header, frames = _frames(stub, prompt="a sunset", width=768, height=512, fps=24, num_frames=10, seed=1)
    assert messages[0].WhichOneof("payload") == "header"
    assert (header.width, header.height, header.fps, header.frame_count, header.pixel_format) == (768, 512, 24, 10, "rgb24")
    assert frames.shape == (10, 512, 768, 3)
    chunk_sizes = [len(m.frame.data) for m in messages if m.WhichOneof("payload") == "frame"]
    assert len(chunk_sizes) == 20  # 1.18 MB frames → two chunks each
    assert max(m.ByteSize() for m in messages) < GRPC_DEFAULT_LIMIT
    assert frames.std() > 1.0  # not a constant image


def test_video_exact_frame_count_and_seed(video):
    _, _, stub = video
    request = dict(prompt="waves", width=64, height=64, fps=24, num_frames=13, seed=5)
    a = _frames(stub, **request)[2]
    b = _frames(stub, **request)[2]
    c = _frames(stub, **{**request, "seed": 6})[2]
    assert a.shape == (13, 64, 64, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"width": 100}, "width"), ({"height": 0}, "height"), ({"num_frames": 0}, "num_frames"),
     ({"num_frames": 18001}, "num_frames"), ({"prompt": " "}, "prompt"), ({"fps": 2}, "fps")],
)
def test_video_invalid_argument_names_the_field(video, change, field):
    _, _, stub = video
    request = {**dict(prompt="waves", width=64, height=64, fps=24, num_frames=9, seed=5), **change}
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GenerateVideo(video_pb2.GenerateVideoRequest(**request), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
    assert [name for name, _ in rpc_errors.details_of(caught.value).field_violations] == [field]


@pytest.fixture(scope="module")
def ltx2_video(models_dir):
    yield from _served(video_server.serve, "tiny-ltx2", video_pb2_grpc.VideoServiceStub, models_dir)


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_ltx2_starts_from_an_image_while_hearing_the_music(ltx2_video):
    """Over gRPC an LTX-2 preset takes GenerateVideoRequest.image with the music (DescribeModel says so): exact frames
    back; an image that is not one is INVALID_ARGUMENT naming `image`."""
    _, _, stub = ltx2_video
    assert stub.DescribeModel(video_pb2.DescribeModelRequest(), timeout=30).takes_image
    audio = video_pb2.AudioSlice(sample_rate=16000, channels=1, pcm=np.zeros(16000, "<f4").tobytes())
    request = dict(prompt="a face", width=64, height=64, fps=24, num_frames=20, seed=5, audio=audio)
    _, header, frames = _frames(stub, **request, image=_png(96, 80))
    assert header.frame_count == 20 and frames.shape == (20, 64, 64, 3)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GenerateVideo(video_pb2.GenerateVideoRequest(**request, image=b"not an image"), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in rpc_errors.details_of(caught.value).field_violations] == ["image"]


def test_cancel_stops_the_video_backend(video):
    server, _, stub = video
    servicer_lock = _turnstile_lock(server)
    call = stub.GenerateVideo(
        video_pb2.GenerateVideoRequest(
            prompt="long", width=768, height=512, fps=24, num_frames=257, seed=1, num_inference_steps=100
        ),
        timeout=600,
    )
    for message in call:
        if message.WhichOneof("payload") == "progress" and message.progress.step >= 1:
            break
    assert servicer_lock.busy  # generation is running
    call.cancel()
    deadline = time.monotonic() + 20
    while servicer_lock.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not servicer_lock.busy, "the pipeline kept running after the cancel"


def test_cancel_stops_the_music_backend(music):
    server, _, stub = music
    servicer_lock = _turnstile_lock(server)
    call = stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=30, seed=1), timeout=600)
    steps_seen = 0
    for message in call:
        if message.WhichOneof("payload") == "progress":
            steps_seen = message.progress.step
            total = message.progress.total_steps
            if steps_seen >= 5:
                break
    call.cancel()
    deadline = time.monotonic() + 20
    while servicer_lock.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not servicer_lock.busy
    assert steps_seen < total


def _turnstile_lock(server) -> Turnstile:
    return server.servicer.host.turnstile


@pytest.mark.parametrize("fixture", ["music", "video"])
def test_health_and_reflection(request, fixture):
    server, channel, _ = request.getfixturevalue(fixture)
    health = health_pb2_grpc.HealthStub(channel)
    name = {"music": "tunereel.v1.MusicService", "video": "tunereel.v1.VideoService"}[fixture]
    for service in ("", name):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_missing_weights_give_failed_precondition_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server = music_server.serve("small", host="127.0.0.1", port=0, models_dir=tmp_path)
    channel = open_channel(f"127.0.0.1:{server.port}")
    try:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            list(music_pb2_grpc.MusicServiceStub(channel).GenerateMusic(
                music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1), timeout=10))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        from tunereel.catalog import download_command
        from tunereel.presets import MUSIC_PRESETS

        assert download_command(MUSIC_PRESETS["small"]) in caught.value.details()  # the table's own command
    finally:
        channel.close()
        server.stop(0)


def test_preset_settings_with_weights_from_a_local_folder(models_dir):
    server = music_server.serve(
        "small", host="127.0.0.1", port=0, models_dir=None, weights=str(models_dir / "tiny-musicgen")
    )
    channel = open_channel(f"127.0.0.1:{server.port}")
    try:
        header = next(iter(music_pb2_grpc.MusicServiceStub(channel).GenerateMusic(
            music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=0.5, model="small"), timeout=30))).header
        assert header.model_id == "tiny-musicgen"
    finally:
        channel.close()
        server.stop(0)


def test_waiting_for_the_model_is_bounded_and_health_still_answers(models_dir):
    """Issue 13, item 2: calls waiting for the model are bounded (RESOURCE_EXHAUSTED beyond), so they can never take
    every server thread from the health checks."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = music_server.serve("tiny", host="127.0.0.1", port=0, models_dir=models_dir)
    server.servicer.host.turnstile.max_waiting = 1
    channel = open_channel(f"127.0.0.1:{server.port}")
    stub = music_pb2_grpc.MusicServiceStub(channel)
    try:
        running = stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=60, seed=1), timeout=120)
        next(running), next(running)  # header, then the generation is under way
        waiting = stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1, seed=2), timeout=120)
        assert next(waiting).WhichOneof("payload") == "header"
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1, seed=3), timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in caught.value.details()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        running.cancel()
        waiting.cancel()
        deadline = time.monotonic() + 20
        while server.servicer.host.turnstile._admitted and time.monotonic() < deadline:  # noqa: SLF001 - the count
            time.sleep(0.05)
        list(stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1, seed=4), timeout=60))
    finally:
        channel.close()
        server.stop(0)


@pytest.mark.parametrize("kind", ["music", "video"])
def test_prompts_over_the_limit_are_refused(request, kind):
    _, _, stub = request.getfixturevalue(kind)
    long_prompt = "x" * 8_000_000 if kind == "music" else "x" * 2001
    with pytest.raises(grpc.RpcError) as caught:
        if kind == "music":
            list(stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt=long_prompt[:3_000_000], duration_seconds=1), timeout=30))
        else:
            list(stub.GenerateVideo(video_pb2.GenerateVideoRequest(prompt=long_prompt, width=64, height=64, num_frames=9, fps=8), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 2000" in caught.value.details()
