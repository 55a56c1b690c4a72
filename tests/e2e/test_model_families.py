"""End to end with the new model families: tiny-ace-step (sings the lyrics) + tiny-ltx2 through the gateway, every
service a real process. The prototype's request plus "lyrics" gives an exact MP4 whose audio is the music; a scene
that starts from an image, longer than one LTX-2 pass, gives one too."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.media import probe_mp4
from tests.songs import write_image
from tunereel.launch import LocalStack

pytestmark = pytest.mark.slow

REQUEST = {"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean.",
           "lyrics": "[verse]\nthe sun goes down\n[chorus]\nover the sea", "width": 64, "height": 64}  # fmt: skip


@pytest.fixture(scope="module")
def client(models_dir, tmp_path_factory):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path_factory.mktemp("logs"), music_preset="tiny-ace-step",
                    video_preset="tiny-ltx2") as stack:  # fmt: skip
        with httpx.Client(base_url=stack.gateway_url, timeout=300.0) as http:
            yield http


def test_prototype_request_with_lyrics_gives_an_exact_mp4(client, tmp_path):
    reply = client.post("/generate_content", json=REQUEST)
    assert reply.status_code == 200, reply.text
    path = tmp_path / "song.mp4"
    path.write_bytes(reply.content)
    info = probe_mp4(path)
    assert info["frame_count"] == 72 and (info["width"], info["height"]) == (64, 64)
    assert info["video_duration_s"] == pytest.approx(3.0, abs=1 / 24)
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) <= 1 / 24
    provenance = json.loads(info["metadata"]["comment"])
    assert provenance["music_model_id"] == "tiny-ace-step" and provenance["video_model_id"] == "tiny-ltx2"
    assert provenance["request"]["lyrics"].startswith("[verse]")


def test_a_scene_image_on_ltx2_longer_than_one_pass_gives_an_exact_mp4(client, tmp_path):
    """The scene's image is the frame-0 condition of LTX-2's first pass; 6 s at 24 fps (144 frames) is two passes of
    the 121-frame preset, the second continuing the first; one continuous take (cuts none), exact to the frame."""
    path = write_image(tmp_path / "scene.png", 96, 64)
    with open(path, "rb") as file:
        upload = client.post("/v1/uploads", files={"file": (path.name, file, "image/png")})
    assert upload.status_code in (200, 201), upload.text
    image = upload.json()
    request = {**REQUEST, "duration": 6, "cuts": "none", "scenes": [{"prompt": "a red room", "image": image["id"]}]}
    reply = client.post("/generate_content", json=request)
    assert reply.status_code == 200, reply.text
    (tmp_path / "scene.mp4").write_bytes(reply.content)
    info = probe_mp4(tmp_path / "scene.mp4")
    assert info["frame_count"] == 144 and (info["width"], info["height"]) == (64, 64)
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) <= 1 / 24
    provenance = json.loads(info["metadata"]["comment"])
    assert provenance["video_model_id"] == "tiny-ltx2"
    assert provenance["uploads"] == [{"field": "scenes.0.image", "sha256": image["sha256"]}]
