"""End to end over HTTP: every service a real process on a free port, real gRPC, real MP4s."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from tunereel.composer.audio import integrated_lufs, true_peak_dbtp

from tests.media import decode_audio, probe_mp4
from tests.songs import song_pcm, write_song
from tunereel.launch import LocalStack

pytestmark = pytest.mark.slow

PROTOTYPE = {"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean."}


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=300.0) as http:
        yield http


def _generate(client, body, artifacts=None, name=None):
    started = time.monotonic()
    reply = client.post("/generate_content", json=body)
    elapsed = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "video/mp4"
    if artifacts is not None:
        (artifacts / name).write_bytes(reply.content)
    return reply, elapsed


@pytest.mark.parametrize(("duration", "frames"), [(3, 72), (2.5, 60)])
def test_prototype_request_gives_an_exact_browser_safe_mp4(client, tmp_path, artifacts, duration, frames):
    reply, elapsed = _generate(client, {**PROTOTYPE, "duration": duration}, artifacts, f"e2e-{duration}s.mp4")
    path = tmp_path / "out.mp4"
    path.write_bytes(reply.content)
    info = probe_mp4(path)
    print(f"{duration} s at 768x512: {elapsed:.1f} s end to end, {len(reply.content)} bytes")

    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (768, 512)
    assert info["frame_count"] == frames
    assert info["video_duration_s"] == pytest.approx(duration, abs=1 / 24)
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) <= 1 / 24
    assert info["faststart"] is True
    assert int(reply.headers["X-Tunereel-Frames"]) == frames

    pcm, rate = decode_audio(path)
    assert integrated_lufs(pcm, rate) == pytest.approx(-14.0, abs=1.0)
    assert true_peak_dbtp(pcm, rate) <= -1.0

    provenance = json.loads(info["metadata"]["comment"])
    assert provenance["seed"] == int(reply.headers["X-Tunereel-Seed"])
    assert provenance["request"]["genre"] == "pop" and provenance["request"]["seed"] == provenance["seed"]
    assert provenance["music_model_id"] == "tiny-musicgen" and provenance["video_model_id"] == "tiny-ltx"


def test_same_seed_same_audio_other_seed_different(client, tmp_path):
    body = {**PROTOTYPE, "duration": 1, "width": 64, "height": 64, "seed": 1234}
    first, _ = _generate(client, body)
    second, _ = _generate(client, body)
    other, _ = _generate(client, {**body, "seed": 99})
    audio = []
    for name, reply in (("a", first), ("b", second), ("c", other)):
        (tmp_path / f"{name}.mp4").write_bytes(reply.content)
        audio.append(decode_audio(tmp_path / f"{name}.mp4")[0])
    assert first.headers["X-Tunereel-Seed"] == "1234"
    assert np.array_equal(audio[0], audio[1])
    assert audio[0].shape == audio[2].shape and not np.array_equal(audio[0], audio[2])


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"duration": 3, "video_prompt": "x"}, 422, "genre"),
        ({"genre": "pop", "video_prompt": "x"}, 422, "duration"),
        ({"genre": "pop", "duration": 3}, 422, "video_prompt"),
        ({**PROTOTYPE, "genre": ""}, 422, "genre"),
        ({**PROTOTYPE, "video_prompt": "   "}, 422, "video_prompt"),
        ({**PROTOTYPE, "duration": -1}, 422, "duration"),
        ({**PROTOTYPE, "duration": 0}, 422, "duration"),
        ({**PROTOTYPE, "duration": 100000}, 422, "duration"),
        ({**PROTOTYPE, "duration": "three"}, 422, "duration"),
        ({**PROTOTYPE, "genre": ["pop"]}, 422, "genre"),
        ({**PROTOTYPE, "width": 700}, 422, "width"),
        ({**PROTOTYPE, "height": 500}, 422, "height"),
    ],
)
def test_bad_input_gets_4xx_naming_the_field(client, body, status, field):
    reply = client.post("/generate_content", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["field"] == field
    assert field in reply.json()["error"]


def test_lyrics_for_a_model_that_does_not_sing_get_400_naming_the_field(client):
    reply = client.post("/generate_content", json={**PROTOTYPE, "duration": 1, "width": 64, "height": 64,
                                                   "lyrics": "[verse]\nla la la"})  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "lyrics"
    assert "does not sing" in reply.json()["error"]


def test_a_repaint_for_a_model_that_cannot_repaint_gets_400_naming_the_field(client, tmp_path):
    """Decided where "does not sing" is: the music service, from its preset's capabilities (MusicGen: no repaint)."""
    song = write_song(tmp_path / "song.wav", song_pcm(3.0))
    with open(song, "rb") as file:
        upload = client.post("/v1/uploads", files={"file": ("song.wav", file, "application/octet-stream")})
    assert upload.status_code in (200, 201), upload.text
    reply = client.post("/generate_content", json={**PROTOTYPE, "duration": 2, "width": 64, "height": 64,
                                                   "song": upload.json()["id"], "repaint_start": 0.5,
                                                   "repaint_end": 1.5, "cuts": "none"})  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "repaint_start"
    assert "cannot repaint" in reply.json()["error"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'"pop"'])
def test_body_that_is_not_a_json_object_gets_400(client, raw):
    reply = client.post("/generate_content", content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert "JSON object" in reply.json()["error"]


def test_long_duration_gets_a_clear_limit(client):
    reply = client.post("/generate_content", json={**PROTOTYPE, "duration": 301})
    assert reply.status_code == 422
    assert reply.json()["field"] == "duration"
    assert "at most 300 s (got 301)" in reply.json()["error"]


def test_health_and_openapi(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["services"] == {"composer": "SERVING", "music": "SERVING", "video": "SERVING"}
    schema = client.get("/openapi.json").json()
    assert "/generate_content" in schema["paths"]


@pytest.mark.parametrize("backend", ["music", "video"])
def test_backend_down_gives_503_not_a_hang(stack, client, backend):
    stack.stop_service(backend)
    try:
        started = time.monotonic()
        reply = client.post("/generate_content", json={**PROTOTYPE, "duration": 1, "width": 64, "height": 64})
        assert reply.status_code == 503, reply.text
        assert backend in reply.json()["error"]
        assert time.monotonic() - started < 30
        # the composer polls its backends' health every second
        deadline = time.monotonic() + 10
        while client.get("/healthz").status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["services"][backend] != "SERVING"
    finally:
        stack.start_service(backend)
        stack.wait_ready()


def test_http_client_disconnect_cancels_the_backends(stack):
    video_log = stack.log_dir / "video.log"
    music_log = stack.log_dir / "music.log"
    marks = video_log.read_text().count("cancelled by the caller")
    body = {**PROTOTYPE, "duration": 10, "cuts": "none"}  # music and video in flight together (shots: test_shots.py)
    with pytest.raises(httpx.ReadTimeout):
        # the client gives up after 2 s and closes its connection mid-request
        httpx.post(stack.gateway_url + "/generate_content", json=body, timeout=httpx.Timeout(2.0, connect=5.0))
    deadline = time.monotonic() + 20
    while video_log.read_text().count("cancelled by the caller") == marks and time.monotonic() < deadline:
        time.sleep(0.2)
    assert video_log.read_text().count("cancelled by the caller") > marks, "video kept generating"
    assert "Traceback" not in music_log.read_text()
