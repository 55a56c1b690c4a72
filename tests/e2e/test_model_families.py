"""End to end with the new model families: tiny-ace-step (sings the lyrics) + tiny-ltx2 through the gateway, every
service a real process. The prototype's request plus "lyrics" gives an exact MP4 whose audio is the music; a scene
that starts from an image, longer than one LTX-2 pass, gives one too; a song with one range repainted keeps the rest."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.media import decode_audio, probe_mp4
from tests.songs import song_pcm, write_image, write_song
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


def _best_lag(a: np.ndarray, b: np.ndarray, most: int = 4096) -> int:
    """The shift of `a` against `b` (AAC's priming, if the decoder keeps it) that lines them up best."""
    scores = [float(np.dot(a[most + lag : most + lag + 24000], b[most : most + 24000])) for lag in range(-most, most + 1)]
    return int(np.argmax(scores)) - most


def test_a_song_with_one_range_repainted_keeps_the_rest(client, tmp_path):
    """A later re-make of one range: the user's song (uploaded) with 1..2 s of the video's music re-made by ACE-Step's
    repaint task; the MP4's audio is the song outside the range (through AAC) and something else inside it."""
    rate = 48000
    song = write_song(tmp_path / "song.wav", song_pcm(4.0, rate=rate), rate=rate)
    with open(song, "rb") as file:
        reply = client.post("/v1/uploads", files={"file": ("song.wav", file, "application/octet-stream")})
    assert reply.status_code in (200, 201), reply.text
    request = {"genre": "rock", "video_prompt": "a stage", "song": reply.json()["id"], "start": 0.5, "duration": 3,
               "repaint_start": 1.0, "repaint_end": 2.0, "width": 64, "height": 64, "cuts": "none", "seed": 4}  # fmt: skip
    reply = client.post("/generate_content", json=request)
    assert reply.status_code == 200, reply.text
    path = tmp_path / "repainted.mp4"
    path.write_bytes(reply.content)
    audio, got_rate = decode_audio(path)
    assert got_rate == rate
    window = song_pcm(4.0, rate=rate)[rate // 2 : rate // 2 + 3 * rate, 0]
    lag = _best_lag(audio[:, 0], window)
    heard = audio[max(lag, 0) :, 0][: window.size - max(-lag, 0)]

    def corr(part: slice) -> float:
        return float(np.corrcoef(heard[part], window[part])[0, 1])

    kept = [corr(slice(int(0.1 * rate), int(0.9 * rate))), corr(slice(int(2.1 * rate), int(2.9 * rate)))]
    remade = corr(slice(int(1.1 * rate), int(1.9 * rate)))
    print(f"repaint e2e: lag {lag}, kept corr {kept}, re-made corr {remade:.3f}")
    assert min(kept) > 0.95 and remade < 0.5, (lag, kept, remade)
    provenance = json.loads(probe_mp4(path)["metadata"]["comment"])
    assert provenance["music_model_id"] == "tiny-ace-step" and provenance["request"]["repaint_start"] == 1.0


def test_a_repaint_without_a_song_is_a_400_naming_the_field(client):
    reply = client.post("/generate_content", json={**REQUEST, "repaint_start": 1.0, "repaint_end": 2.0})
    assert reply.status_code == 422 and reply.json()["field"] == "repaint_start", reply.text  # the request model's rule


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
