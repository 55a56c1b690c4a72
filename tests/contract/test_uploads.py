"""Bring your own, over HTTP and gRPC, on the real composer and gateway with scripted backends (no model): uploads
(checked, stored per key, de-duplicated, refused with a 4xx that leaves nothing behind), a song as the music, a
window of it, an image as the video's first frame, a melody on a preset that cannot follow one."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from tests.analysis_media import grid_song
from tests.fake_backends import FakeMusic, FakeVideo, serve_fake
from tests.media import decode_audio, probe_mp4
from tests.songs import RATE, lying_wav, png_bomb, song_pcm, write_image, write_song
from tunereel.auth import ApiKeys
from tunereel.channels import open_channel
from tunereel.composer import server as composer_server
from tunereel.composer.muxer import AudioSpec, aac_round_trip
from tunereel.composer.uploads import UploadSettings
from tunereel.gateway.app import GatewaySettings, create_app

KEYS = ApiKeys(["key-one", "key-two"])
ONE = {"Authorization": "Bearer key-one"}
TWO = {"Authorization": "Bearer key-two"}
SMALL = {"video_prompt": "a test card", "width": 64, "height": 64, "fps": 8, "seed": 3}
SONG_S = 3.0


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    yield from serve_system(tmp_path_factory, max_audio_seconds=10.0, max_upload_bytes=2_000_000)


def serve_system(tmp_path_factory, max_audio_seconds: float, max_upload_bytes: int):
    """The composer (fake music and video services) and the gateway, in-process, with these upload limits."""
    music, video = FakeMusic(), FakeVideo()
    music_server, video_server = serve_fake(music), serve_fake(video)
    data = tmp_path_factory.mktemp("data")
    composer = composer_server.serve(
        host="127.0.0.1", port=0, music_target=f"127.0.0.1:{music_server.port}",
        video_target=f"127.0.0.1:{video_server.port}", data_dir=data, api_keys=KEYS,
        upload_settings=UploadSettings(data, max_audio_seconds=max_audio_seconds, max_image_side=512),
    )  # fmt: skip
    channel = open_channel(f"127.0.0.1:{composer.port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service="")).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "composer never reported SERVING"
        time.sleep(0.05)
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{composer.port}", api_keys=KEYS,
                                     max_upload_bytes=max_upload_bytes, request_timeout_s=60))  # fmt: skip
    media = tmp_path_factory.mktemp("media")
    with TestClient(app) as client:
        yield {"music": music, "video": video, "composer": composer, "http": client, "data": data, "media": media}
    channel.close()
    composer.stop(0)
    music_server.stop(0)
    video_server.stop(0)


def upload(system, path, headers=ONE, kind=None, content_type="application/octet-stream"):
    params = {"kind": kind} if kind else {}
    with open(path, "rb") as file:
        return system["http"].post("/v1/uploads", params=params, headers=headers,
                                   files={"file": (path.name, file, content_type)})  # fmt: skip


def stored(system) -> tuple[list[str], int]:
    """(files under uploads/, rows in the uploads table)."""
    files = sorted(p.name for p in (system["data"] / "uploads").iterdir())
    store = system["composer"].store
    with store.engine.connect() as db:
        rows = db.exec_driver_sql("SELECT count(*) FROM uploads").scalar_one()
    return files, rows


def aligned_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(correlation, rms error relative to the signal) of decoded AAC against the PCM, per sample, no shift."""
    n = min(got.shape[0], want.shape[0])
    g, w = got[:n].ravel(), want[:n].ravel()
    return float(np.corrcoef(g, w)[0, 1]), float(np.sqrt(np.mean((g - w) ** 2)) / np.sqrt(np.mean(w**2)))


def decoded(path) -> np.ndarray:
    """The file's samples as float32 in -1..1 (what the composer reads from it; FLAC/WAV decode as 16-bit ints)."""
    pcm, _ = decode_audio(path)
    return pcm / 32768.0 if pcm.dtype.kind == "i" or np.abs(pcm).max() > 2 else pcm


def assert_is_the_song(audio: np.ndarray, song: np.ndarray) -> None:
    """The MP4's audio is the song's samples through the muxer's AAC encoder and nothing else: the same PCM
    round-tripped through that encoder (muxer.aac_round_trip: deterministic, independent of chunking) matches it
    to AAC's rounding, and the PCM correlates with it (AAC's own error on the noise in the test song is ~25 % rms, and
    the encoder's quantisation may round a few coefficients the other way: hence a bound, not equality)."""
    n = min(audio.shape[0], song.shape[0])
    assert n >= song.shape[0] - 1  # all of the song (a decoded AAC track may end with up to a frame of padding)
    through_aac = aac_round_trip(np.ascontiguousarray(song[:n], dtype=np.float32), AudioSpec(RATE, 2))
    assert np.abs(audio[: through_aac.shape[0]] - through_aac).max() < 1e-3
    correlation, _ = aligned_error(audio, song)
    assert correlation > 0.95


@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
def test_a_song_is_the_music_of_the_video(system, suffix, tmp_path):
    pcm = song_pcm(SONG_S)
    path = write_song(system["media"] / f"song{suffix}", pcm)
    reply = upload(system, path, content_type="audio/mpeg" if suffix == ".mp3" else "audio/flac")
    assert reply.status_code == 201, reply.text
    song = reply.json()
    assert song["kind"] == "audio" and song["sample_rate"] == RATE and song["channels"] == 2
    assert abs(song["duration"] - SONG_S) < 0.03 and len(song["sha256"]) == 64 and song["expires"]
    music_calls = system["music"].calls

    reply = system["http"].post("/generate_content", headers=ONE, json={**SMALL, "song": song["id"]})  # no genre
    assert reply.status_code == 200, reply.text
    assert system["music"].calls == music_calls  # the song replaced the music service
    out = tmp_path / "out.mp4"
    out.write_bytes(reply.content)
    info = probe_mp4(out)
    assert info["frame_count"] == round(song["duration"] * 8)  # the song's length, to the frame
    audio, rate = decode_audio(out)
    assert rate == RATE and audio.shape[1] == 2
    expected = info["frame_count"] / 8 * RATE
    assert abs(audio.shape[0] - expected) <= 1024 + 1  # AAC frames: the muxer trims to the video's length
    assert_is_the_song(audio, decoded(path))  # the file's own samples (MP3 is lossy itself, FLAC 16-bit)
    correlation, _ = aligned_error(audio, pcm)
    assert correlation > 0.9  # ... which are the song the test made


def test_a_window_of_the_song_and_its_provenance(system, tmp_path):
    path = write_song(system["media"] / "window.flac", song_pcm(SONG_S, seed=1))
    pcm = decoded(path)
    song = upload(system, path, content_type="audio/flac").json()
    job = system["http"].post("/v1/jobs", headers=ONE,
                              json={**SMALL, "song": song["id"], "start": 1.0, "duration": 1.5}).json()  # fmt: skip
    deadline = time.monotonic() + 60
    while job["state"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        job = system["http"].get(f"/v1/jobs/{job['id']}", headers=ONE).json()
    assert job["state"] == "succeeded", job["error"]
    assert job["provenance"]["uploads"] == [{"field": "song", "sha256": song["sha256"]}]
    assert job["provenance"]["music_model_id"] == f"upload:sha256:{song['sha256']}"
    out = tmp_path / "window.mp4"
    out.write_bytes(system["http"].get(f"/v1/jobs/{job['id']}/video", headers=ONE).content)
    assert probe_mp4(out)["frame_count"] == 12
    audio, _ = decode_audio(out)
    assert_is_the_song(audio, pcm[RATE : RATE + int(1.5 * RATE)])
    with pytest.raises(AssertionError):  # it is the window from 1 s, not the song's start (the check can fail)
        assert_is_the_song(audio, pcm[: int(1.5 * RATE)])


def test_a_window_past_the_song_is_400_naming_the_field(system):
    song = upload(system, write_song(system["media"] / "short.flac", song_pcm(1.0, seed=2))).json()
    reply = system["http"].post("/v1/jobs", headers=ONE, json={**SMALL, "song": song["id"], "start": 0.5, "duration": 2})
    assert reply.status_code == 400 and reply.json()["field"] == "duration"
    reply = system["http"].post("/v1/jobs", headers=ONE, json={**SMALL, "song": song["id"], "start": 5})
    assert reply.status_code == 400 and reply.json()["field"] == "start"


def test_the_same_file_twice_is_one_upload_per_key(system):
    path = write_song(system["media"] / "twice.wav", song_pcm(0.5, seed=4))
    first, again = upload(system, path).json(), upload(system, path).json()
    assert first["id"] == again["id"]
    other = upload(system, path, headers=TWO).json()
    assert other["id"] != first["id"] and other["sha256"] == first["sha256"]
    files, _ = stored(system)
    assert sum(name.startswith(first["sha256"]) for name in files) == 2  # one per key


@pytest.mark.parametrize("suffix", [".wav", ".m4a", ".ogg"])
def test_the_other_audio_formats_are_accepted(system, suffix):
    reply = upload(system, write_song(system["media"] / f"format{suffix}", song_pcm(1.0, seed=12)))
    assert reply.status_code == 201, reply.text
    assert abs(reply.json()["duration"] - 1.0) < 0.05 and reply.json()["channels"] == 2


def test_another_keys_upload_is_404(system):
    song = upload(system, write_song(system["media"] / "mine.flac", song_pcm(1.0, seed=5))).json()
    assert system["http"].get(f"/v1/uploads/{song['id']}", headers=ONE).status_code == 200
    assert system["http"].get(f"/v1/uploads/{song['id']}", headers=TWO).status_code == 404
    reply = system["http"].post("/generate_content", headers=TWO, json={**SMALL, "song": song["id"]})
    assert reply.status_code == 404 and "song" in reply.json()["error"]
    assert system["http"].post("/v1/jobs", headers=TWO, json={**SMALL, "song": song["id"]}).status_code == 404
    assert system["http"].delete(f"/v1/uploads/{song['id']}", headers=TWO).status_code == 404
    assert system["http"].delete(f"/v1/uploads/{song['id']}", headers=ONE).status_code == 200
    assert system["http"].get(f"/v1/uploads/{song['id']}", headers=ONE).status_code == 404


def _bad_inputs(media):
    song = write_song(media / "ok.flac", song_pcm(2.0, seed=6))
    data = song.read_bytes()
    (media / "truncated.flac").write_bytes(data[: len(data) // 2])
    mp3 = write_song(media / "ok.mp3", song_pcm(2.0, seed=6)).read_bytes()
    (media / "truncated.mp3").write_bytes(mp3[: len(mp3) // 2])
    (media / "text.mp3").write_bytes(b"this is not audio at all\n" * 200)
    (media / "empty.wav").write_bytes(b"")
    write_image(media / "photo.png", 64, 48)
    png = (media / "photo.png").read_bytes()
    (media / "truncated.png").write_bytes(png[: len(png) // 2])
    write_image(media / "wide.png", 600, 10)
    return {
        "not audio": (media / "text.mp3", "audio", 400, "decoded"),
        "an image as audio": (media / "photo.png", "audio", 400, "no audio"),
        "truncated audio": (media / "truncated.flac", "audio", 400, "corrupt"),
        "truncated MP3": (media / "truncated.mp3", "audio", 400, "truncated"),
        "zero-length": (media / "empty.wav", "audio", 400, "empty"),
        "too long": (write_song(media / "long.flac", song_pcm(11.0, seed=7)), "audio", 400, "duration limit"),
        "too big": (write_song(media / "big.wav", song_pcm(12.0, seed=8)), "audio", 413, "too big"),
        "lying WAV header": (lying_wav(media / "lying.wav", 1.0, 8.0), "audio", 400, "header lies"),
        "not an image": (song, "image", 400, "not a PNG"),
        "truncated image": (media / "truncated.png", "image", 400, "truncated"),
        "too many pixels a side": (media / "wide.png", "image", 400, "at most 512"),
        "decompression bomb": (png_bomb(media / "bomb.png"), "image", 400, "bomb"),
    }


def test_each_bad_input_is_a_4xx_with_a_message_and_leaves_nothing(system):
    before = stored(system)
    for name, (path, kind, status, words) in _bad_inputs(system["media"]).items():
        reply = upload(system, path, kind=kind)
        assert reply.status_code == status, (name, reply.status_code, reply.text)
        assert words in reply.json()["error"], (name, reply.json())
        assert stored(system) == before, name  # no file (not even a temp file), no row


def test_a_form_without_a_file_and_an_unknown_kind_are_400(system):
    reply = system["http"].post("/v1/uploads", headers=ONE, data={"note": "hello"},
                                files={"other": ("x", b"abc", "text/plain")})  # fmt: skip
    assert reply.status_code == 400 and reply.json()["field"] in ("file", "kind")
    reply = system["http"].post("/v1/uploads", headers=ONE, content=b"raw", params={"kind": "audio"})
    assert reply.status_code == 415


def test_the_image_is_the_first_frames_condition(system):
    path = write_image(system["media"] / "face.png", 300, 100)  # red left half
    image = upload(system, path, content_type="image/png").json()
    assert (image["kind"], image["width"], image["height"], image["format"]) == ("image", 300, 100, "png")
    reply = system["http"].post("/generate_content", headers=ONE,
                                json={**SMALL, "genre": "pop", "duration": 1, "image": image["id"]})  # fmt: skip
    assert reply.status_code == 200, reply.text
    sent = Image.open(io.BytesIO(system["video"].last_request.image))
    assert sent.size == (64, 64)  # resized to cover the frame, then center-cropped
    rgb = np.asarray(sent.convert("RGB")).astype(int)
    assert rgb[:, :16, 0].mean() > 240 and rgb[:, 48:, 0].mean() < 200  # the crop is the center: red left, not all


def test_the_image_field_needs_an_image_and_a_song_needs_audio(system):
    song = upload(system, write_song(system["media"] / "s2.flac", song_pcm(1.0, seed=9))).json()
    reply = system["http"].post("/v1/jobs", headers=ONE, json={**SMALL, "genre": "pop", "duration": 1, "image": song["id"]})
    assert reply.status_code == 400 and reply.json()["field"] == "image"


def test_a_repaint_asked_of_a_named_preset_that_cannot_repaint_is_400_at_once(system):
    song = upload(system, write_song(system["media"] / "take1.wav", song_pcm(2.0, seed=12))).json()
    request = {**SMALL, "genre": "pop", "song": song["id"], "repaint_start": 0.5, "repaint_end": 1.0}
    reply = system["http"].post("/v1/jobs", headers=ONE, json={**request, "music_model": "small"})
    assert reply.status_code == 400 and reply.json()["field"] == "repaint_start", reply.json()
    assert "cannot repaint" in reply.json()["error"]


def test_a_melody_on_a_preset_that_cannot_follow_one_is_400(system):
    hum = upload(system, write_song(system["media"] / "hum.wav", song_pcm(1.0, seed=10))).json()
    request = {**SMALL, "genre": "pop", "duration": 1, "melody": hum["id"]}
    reply = system["http"].post("/v1/jobs", headers=ONE, json={**request, "music_model": "small"})
    assert reply.status_code == 400 and reply.json()["field"] == "melody"  # known at once from the preset table
    reply = system["http"].post("/generate_content", headers=ONE, json=request)  # the served preset says so
    assert reply.status_code == 400 and reply.json()["field"] == "melody", reply.json()
    sent = system["music"].last_request.melody_pcm
    assert len(sent) == 4 * 32_000  # 1 s of mono float32 at 32 kHz, resampled by the composer


def test_the_cli_uploads_first_then_creates_the_job(system, tmp_path, capsys):
    from tunereel import cli

    song = write_song(tmp_path / "track.flac", song_pcm(1.0, seed=11))
    face = write_image(tmp_path / "face.png", 80, 80)
    out = tmp_path / "cli.mp4"
    args = cli.parse_args(["generate", "--song", str(song), "--image", str(face), "--prompt", "a face",
                                     "--width", "64", "--height", "64", "--fps", "8", "-o", str(out), "--no-progress"])  # fmt: skip
    api = cli.Api("http://testserver", None)
    api.http = system["http"]
    api.http.headers["Authorization"] = ONE["Authorization"]
    assert cli.generate(api, args) == 0
    assert probe_mp4(out)["frame_count"] == 8  # the song's 1 s at 8 fps
    assert "uploaded track.flac" in capsys.readouterr().err
    args = cli.parse_args(["generate", "--prompt", "x", "--width", "64"])
    with pytest.raises(cli.CliError, match="--genre and --duration are required unless --song"):
        cli.generate(api, args)
    del api.http.headers["Authorization"]  # the client is shared by the module's tests


def test_cut_with_the_music_every_shot_starts_from_the_image(system, monkeypatch):
    """The one image of a request is the frame-0 condition of every shot, so what it shows stays across the cuts."""
    path = write_image(system["media"] / "place.png", 64, 64)
    image = upload(system, path, content_type="image/png").json()
    seen: list[bytes] = []
    # Every video request the fake takes passes through its `last_request` attribute: record them all.
    monkeypatch.setattr(type(system["video"]), "last_request",
                        property(lambda self: None, lambda self, request: seen.append(bytes(request.image))),
                        raising=False)  # fmt: skip
    reply = system["http"].post("/generate_content", headers=ONE, json={**SMALL, "genre": "pop", "duration": 5,
                                                                       "cuts": "bar", "image": image["id"]})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert len(seen) >= 2 and all(seen) and len(set(seen)) == 1  # several shots, each with the same fitted image


def test_each_scene_starts_from_its_own_image_else_the_requests(system, monkeypatch):
    """A scene's image is the frame-0 condition of each of its shots; a scene without one gets the request's image;
    the images are fitted to the output size; the provenance names each by field and content hash."""
    face = upload(system, write_image(system["media"] / "scene-face.png", 96, 64), content_type="image/png").json()
    place = upload(system, write_image(system["media"] / "scene-place.png", 64, 96), content_type="image/png").json()
    assert face["sha256"] != place["sha256"]
    seen: list[tuple[str, bytes]] = []
    monkeypatch.setattr(type(system["video"]), "last_request",
                        property(lambda self: None, lambda self, r: seen.append((r.prompt, bytes(r.image)))),
                        raising=False)  # fmt: skip
    scenes = [{"prompt": "a face", "image": face["id"]}, {"prompt": "a place"}]
    job = system["http"].post("/v1/jobs", headers=ONE, json={**SMALL, "genre": "pop", "duration": 5, "cuts": "bar",
                                                            "scenes": scenes, "image": place["id"]}).json()  # fmt: skip
    deadline = time.monotonic() + 60
    while job["state"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        job = system["http"].get(f"/v1/jobs/{job['id']}", headers=ONE).json()
    assert job["state"] == "succeeded", job["error"]
    by_scene = {prompt: {image for p, image in seen if p == prompt} for prompt in ("a face", "a place")}
    assert all(len(images) == 1 for images in by_scene.values()), seen  # every shot of a scene: the same image
    (face_png,), (place_png,) = by_scene["a face"], by_scene["a place"]
    assert face_png != place_png
    for png in (face_png, place_png):
        assert Image.open(io.BytesIO(png)).size == (64, 64)
    wide = np.asarray(Image.open(io.BytesIO(face_png)).convert("RGB")).astype(int)
    assert wide[:, :8, 0].mean() > 240  # the face image's red left half, center-cropped from 96 px wide
    timeline = system["http"].get(f"/v1/jobs/{job['id']}/timeline", headers=ONE).json()
    shots_per_scene = [sum(1 for shot in timeline["shots"] if shot["scene"] == index) for index in (0, 1)]
    assert shots_per_scene == [sum(1 for p, _ in seen if p == prompt) for prompt in ("a face", "a place")]
    assert job["provenance"]["uploads"] == [{"field": "image", "sha256": place["sha256"]},
                                            {"field": "scenes.0.image", "sha256": face["sha256"]}]  # fmt: skip


def test_a_scene_image_of_another_key_is_404_and_of_a_song_400(system):
    theirs = upload(system, write_image(system["media"] / "theirs.png", 40, 40), headers=TWO,
                    content_type="image/png").json()  # fmt: skip
    request = {**SMALL, "genre": "pop", "duration": 1, "scenes": [{"prompt": "x"}, {"prompt": "y", "image": theirs["id"]}]}
    reply = system["http"].post("/v1/jobs", headers=ONE, json=request)
    assert reply.status_code == 404 and "scenes.1.image" in reply.text
    assert system["http"].post("/v1/jobs", headers=TWO, json=request).status_code == 201  # the owner may
    song = upload(system, write_song(system["media"] / "s3.flac", song_pcm(1.0, seed=12))).json()
    request["scenes"][1]["image"] = song["id"]
    reply = system["http"].post("/v1/jobs", headers=ONE, json=request)
    assert reply.status_code == 400 and reply.json()["field"] == "scenes.1.image", reply.json()


@pytest.fixture(scope="module")
def roomy_system(tmp_path_factory):
    """Uploads up to a minute and 20 MB: room for a whole song on the beat grid."""
    yield from serve_system(tmp_path_factory, max_audio_seconds=60.0, max_upload_bytes=20_000_000)


def wait_for(system, job: dict, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = system["http"].get(f"/v1/jobs/{job['id']}", headers=ONE).json()
    return job


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
def test_your_own_song_is_cut_on_its_downbeats(roomy_system, suffix, tmp_path):
    """A song on a known grid (a pickup, 100 bpm ramping to 130 bpm, a second section), stereo at 44.1 kHz, uploaded as
    MP3 and as FLAC: the video lasts as long as the song and every cut of the timeline lands on a downbeat ± 1 frame."""
    fps = 24
    grid = grid_song(rate=RATE)
    stereo = np.stack([grid.pcm, 0.8 * grid.pcm], axis=1)
    path = write_song(roomy_system["media"] / f"grid{suffix}", stereo)
    song = upload(roomy_system, path, content_type="audio/mpeg" if suffix == ".mp3" else "audio/flac").json()
    assert (song["sample_rate"], song["channels"]) == (RATE, 2) and abs(song["duration"] - len(grid.pcm) / RATE) < 0.06
    request = {**SMALL, "fps": fps, "song": song["id"], "scenes": ["first part", "second part"]}
    job = wait_for(roomy_system, roomy_system["http"].post("/v1/jobs", headers=ONE, json=request).json())
    assert job["state"] == "succeeded", job["error"]
    out = tmp_path / "grid.mp4"
    out.write_bytes(roomy_system["http"].get(f"/v1/jobs/{job['id']}/video", headers=ONE).content)
    frames = probe_mp4(out)["frame_count"]
    assert frames == round(song["duration"] * fps)  # the song's length, to the frame
    timeline = roomy_system["http"].get(f"/v1/jobs/{job['id']}/timeline", headers=ONE).json()
    shots = timeline["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == frames and len(shots) >= 4
    downbeat_frames = grid.downbeats * fps
    for shot in shots[1:]:  # every cut (the first shot starts at 0, before the pickup's downbeat)
        assert np.min(np.abs(downbeat_frames - shot["start_frame"])) <= 1.0, (shot, grid.downbeats)
    assert [shot["scene"] for shot in shots] == sorted(shot["scene"] for shot in shots) and shots[-1]["scene"] == 1
    assert abs(timeline["tempo_bpm"] - 100.0) < 20  # median of 100 and 130 bpm stretches


def test_the_cli_sends_a_scenes_image_that_reaches_the_video_service(system, tmp_path):
    from tunereel import cli

    face = write_image(tmp_path / "cli-face.png", 128, 64)
    args = cli.parse_args(["generate", "--genre", "pop", "--duration", "1", "--prompt", "unused", "--scene", "a face",
                           "--image", str(face), "--cuts", "none", "--width", "64", "--height", "64", "--fps", "8",
                           "-o", str(tmp_path / "scene.mp4"), "--no-progress"])  # fmt: skip
    api = cli.Api("http://testserver", None)
    api.http = system["http"]
    api.http.headers["Authorization"] = ONE["Authorization"]
    try:
        assert cli.generate(api, args) == 0
    finally:
        del api.http.headers["Authorization"]  # the client is shared by the module's tests
    sent = system["video"].last_request
    assert sent.image and Image.open(io.BytesIO(sent.image)).size == (64, 64)  # the one take starts from the scene's


@pytest.mark.slow
def test_the_analysis_of_a_dropped_song_before_generating(roomy_system):
    """GET /v1/uploads/{id}/analysis: the tempo, bars and sections a job would find, for the owner only."""
    grid = grid_song(rate=RATE)
    path = write_song(roomy_system["media"] / "analysed.flac", np.stack([grid.pcm, grid.pcm], axis=1))
    song = upload(roomy_system, path, content_type="audio/flac").json()
    reply = roomy_system["http"].get(f"/v1/uploads/{song['id']}/analysis", headers=ONE)
    assert reply.status_code == 200, reply.text
    analysis = reply.json()
    assert analysis["id"] == song["id"] and abs(analysis["duration"] - song["duration"]) < 0.05
    assert 97.0 < analysis["tempo_bpm"] < 133.0  # the song runs at 100, ramps, then 130 bpm: a median inside that
    assert abs(analysis["downbeats"] - len(grid.downbeats)) <= 1 and analysis["beats"] >= len(grid.beats) - 4
    sections = analysis["sections"]
    assert len(sections) >= 1 and sections[0]["start_s"] == 0 and abs(sections[-1]["end_s"] - song["duration"]) < 0.1
    started = time.monotonic()
    assert roomy_system["http"].get(f"/v1/uploads/{song['id']}/analysis", headers=ONE).json() == analysis
    assert time.monotonic() - started < 1.0  # cached per content hash
    reply = roomy_system["http"].get(f"/v1/uploads/{song['id']}/analysis", headers=TWO)
    assert reply.status_code == 404
    image = upload(roomy_system, write_image(roomy_system["media"] / "not-a-song.png", 32, 32), content_type="image/png")
    reply = roomy_system["http"].get(f"/v1/uploads/{image.json()['id']}/analysis", headers=ONE)
    assert reply.status_code == 400 and "not audio" in reply.text
