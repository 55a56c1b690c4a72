"""A video preset that hears the music (LTX-2) gets, with its request, the music of the span it covers: the composer
learns it from VideoService.DescribeModel, waits for that music, resamples it to the rate the model hears at, and
sends it; the MP4's audio is still the music stream itself. A preset that does not hear (LTX-Video) is asked as before,
with no audio, and so is a video service that cannot describe itself."""

from __future__ import annotations

import io
import threading
import uuid

import grpc
import numpy as np
import pytest
from PIL import Image
from scipy.signal import resample_poly

from tests.fake_backends import SAMPLE_RATE, FakeMusic, FakeVideo, serve_fake
from tests.songs import write_image
from tunereel.composer.backends import Backends
from tunereel.composer.compose import Composer
from tunereel.composer.store import UploadRecord
from tunereel.request import validate_request
from tunereel.v1 import video_pb2

HEARING_RATE = 16000


class HearingVideo(FakeVideo):
    """An LTX-2-like video service: says it hears audio, refuses a request without it, keeps what it heard."""

    def __init__(self, hears: bool = True):
        super().__init__()
        self.hears = hears
        self.heard: list[video_pb2.AudioSlice] = []
        self.images: list[bytes] = []

    def DescribeModel(self, request, context):
        return video_pb2.VideoModelInfo(preset="tiny", family="ltx2" if self.hears else "ltx", hears_audio=self.hears,
                                        audio_sample_rate=HEARING_RATE if self.hears else 0, max_frames_per_pass=121)  # fmt: skip

    def GenerateVideo(self, request, context):
        if self.hears and not request.HasField("audio"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audio: this preset hears the music; send it")
        self.heard.append(request.audio if request.HasField("audio") else None)
        self.images.append(bytes(request.image))
        yield from super().GenerateVideo(request, context)


@pytest.fixture
def music_server():
    server = serve_fake(FakeMusic())
    yield server
    server.stop(0)


def _compose(music_port: int, video: FakeVideo, tmp_path, duration: float = 1.5, uploads=None, **fields):
    server = serve_fake(video)
    try:
        backends = Backends(f"127.0.0.1:{music_port}", f"127.0.0.1:{server.port}")
        request = validate_request({"genre": "pop", "duration": duration, "video_prompt": "a test card", "width": 64,
                                    "height": 64, "seed": 7, **fields})  # fmt: skip
        composer = Composer(backends, tmp_path, uploads=uploads)
        result = composer.compose(request, on_progress=lambda p: None, cancelled=threading.Event())
        return request, result
    finally:
        server.stop(0)


def test_a_hearing_preset_gets_the_music_of_its_span(music_server, tmp_path):
    video = HearingVideo()
    request, result = _compose(music_server.port, video, tmp_path)
    (heard,) = video.heard
    assert (heard.sample_rate, heard.channels) == (HEARING_RATE, 1)
    pcm = np.frombuffer(heard.pcm, dtype="<f4")
    assert pcm.size == round(request.exact_duration * HEARING_RATE)
    # the fake music is a 220 Hz sine from sample 0: what was sent is that music, resampled
    t = np.arange(round(request.exact_duration * SAMPLE_RATE)) / SAMPLE_RATE
    expected = resample_poly((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 1, 2)
    np.testing.assert_allclose(pcm, expected, atol=1e-4)
    assert result.mux.frame_count == request.frame_count and result.sample_rate == SAMPLE_RATE  # the music itself


@pytest.mark.parametrize("video", [HearingVideo(hears=False), FakeVideo()], ids=["ltx-video", "no-describe"])
def test_other_presets_get_no_audio(music_server, tmp_path, video):
    request, result = _compose(music_server.port, video, tmp_path)
    assert getattr(video, "heard", [None]) == [None]
    assert result.mux.frame_count == request.frame_count


def test_music_too_large_for_one_message_goes_in_several_requests(music_server, tmp_path, monkeypatch):
    from tunereel.composer import hearing

    # budget for ~0.5 s of 16 kHz stereo float32 per request, passes of 6 frames: 1.5 s at 24 fps = 36 frames
    monkeypatch.setattr(hearing, "AUDIO_BUDGET_BYTES", 0.5 * 16000 * 8)
    video = HearingVideo()
    monkeypatch.setattr(video, "DescribeModel", lambda request, context: video_pb2.VideoModelInfo(
        family="ltx2", hears_audio=True, audio_sample_rate=HEARING_RATE, max_frames_per_pass=6))  # fmt: skip
    request, result = _compose(music_server.port, video, tmp_path)
    assert hearing.spans(36, 24, 6, 16000 * 8) == [(0, 12), (12, 12), (24, 12)]
    assert len(video.heard) == 3
    joined = np.concatenate([np.frombuffer(h.pcm, dtype="<f4") for h in video.heard])
    assert joined.size == round(request.exact_duration * HEARING_RATE)
    t = np.arange(round(request.exact_duration * SAMPLE_RATE)) / SAMPLE_RATE
    whole = resample_poly((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 1, 2)
    np.testing.assert_allclose(joined, whole, atol=1e-2)  # slices resampled apart: their edges differ a little
    assert result.mux.frame_count == request.frame_count == 36


def test_each_shot_hears_the_music_of_its_own_span(music_server, tmp_path):
    """Cut with the music (the default), every shot's request carries the slice of the music under that shot: joined
    in shot order they are the whole song, resampled."""
    video = HearingVideo()
    request, result = _compose(music_server.port, video, tmp_path, duration=5.0, cuts="bar")
    shots = result.timeline["shots"]
    assert len(shots) >= 2 and len(video.heard) == len(shots)
    heard = sorted(video.heard, key=lambda h: len(h.pcm))  # calls run in parallel: match them to shots by length
    lengths = sorted(round((s["end_frame"] - s["start_frame"]) / request.fps * HEARING_RATE) for s in shots)
    assert all(abs(len(h.pcm) // 4 - n) <= 1 for h, n in zip(heard, lengths))  # within a sample of resampling
    t = np.arange(round(request.exact_duration * SAMPLE_RATE)) / SAMPLE_RATE
    whole = resample_poly((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 1, 2)
    # Each shot's slice is the song at its own place, not the song's start. (The fake music is a 220 Hz sine: a slice
    # from the wrong place is out of phase by up to 0.3; resampling a slice apart from the rest costs at most ~0.015.)
    for shot in shots:
        first = round(shot["start_frame"] / request.fps * HEARING_RATE)
        size = round((shot["end_frame"] - shot["start_frame"]) / request.fps * HEARING_RATE)
        assert any(abs(len(h.pcm) // 4 - size) <= 1 and np.allclose(np.frombuffer(h.pcm, "<f4")[100 : size - 100],
                                                                      whole[first + 100 : first + size - 100], atol=3e-2)
                   for h in video.heard), shot  # fmt: skip
    assert result.mux.frame_count == request.frame_count


def _image_upload(tmp_path) -> UploadRecord:
    path = write_image(tmp_path / "start.png", 96, 64)
    return UploadRecord(id=str(uuid.uuid4()), owner="", kind="image", sha256="0" * 64, size_bytes=path.stat().st_size,
                        format="png", filename=path.name, duration_seconds=0.0, sample_rate=0, channels=0, width=96,
                        height=64, path=str(path), created_at=0.0, expires_at=0.0)  # fmt: skip


def test_a_hearing_preset_starts_from_the_image_with_the_music(music_server, tmp_path):
    """LTX-2 takes a start image: the request carries the fitted image and the music of its span together."""
    record = _image_upload(tmp_path)
    video = HearingVideo()
    request, result = _compose(music_server.port, video, tmp_path / "work", uploads={record.id: record}.__getitem__,
                               image=record.id, cuts="none")  # fmt: skip
    (heard,), (image,) = video.heard, video.images
    assert heard is not None and len(heard.pcm) // 4 == round(request.exact_duration * HEARING_RATE)
    fitted = Image.open(io.BytesIO(image))
    assert fitted.size == (64, 64) and np.asarray(fitted.convert("RGB"))[:, :8, 0].mean() > 240  # the red left half
    assert result.mux.frame_count == request.frame_count


def test_only_the_first_of_several_requests_starts_from_the_image(music_server, tmp_path, monkeypatch):
    """Music too large for one message: the video is several requests joined as cuts; the image is the first one's
    frame 0, and a later request goes on from where the video is, not back at the image."""
    from tunereel.composer import hearing

    monkeypatch.setattr(hearing, "AUDIO_BUDGET_BYTES", 0.5 * 16000 * 8)
    record = _image_upload(tmp_path)
    video = HearingVideo()
    monkeypatch.setattr(video, "DescribeModel", lambda request, context: video_pb2.VideoModelInfo(
        family="ltx2", hears_audio=True, audio_sample_rate=HEARING_RATE, max_frames_per_pass=6))  # fmt: skip
    request, result = _compose(music_server.port, video, tmp_path / "work", uploads={record.id: record}.__getitem__,
                               image=record.id, cuts="none")  # fmt: skip
    assert len(video.images) == 3 and video.images[0] and video.images[1:] == [b"", b""]
    assert result.mux.frame_count == request.frame_count == 36
