"""The composer's side of repaint: with a song and a range, the song's window goes to MusicService as the source audio
(int16 stereo at 48 kHz, exactly the video's length) with the range, and the MP4's audio is what MusicService sends
back; a music service that cannot repaint is a 400-class rejection naming `repaint_start`; the largest source (300 s)
fits the music channel's message limit, and the other channels keep theirs."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from scipy.signal import resample_poly
from tunereel.composer.backends import Backends, music_source
from tunereel.composer.compose import Composer
from tunereel.composer.errors import BackendRejected
from tunereel.composer.song import song_request
from tunereel.composer.store import UploadRecord

from tests.fake_backends import SAMPLE_RATE, FakeMusic, FakeVideo, serve_fake
from tests.songs import song_pcm, write_song
from tunereel import wire
from tunereel.channels import MESSAGE_LIMIT_BYTES, MUSIC_REQUEST_LIMIT_BYTES
from tunereel.request import LIMITS, validate_request
from tunereel.v1 import music_pb2

SONG = "0b0e3f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b"


class NoRepaintMusic(FakeMusic):
    """A MusicGen replica: refuses a repaint as services/music/server.py does."""

    def GenerateMusic(self, request, context):
        if request.source_pcm:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "repaint_start_seconds: this model cannot repaint (music preset 'tiny' only makes new music)")
        yield from super().GenerateMusic(request, context)


@pytest.fixture
def stack():
    servers = {}

    def start(music: FakeMusic):
        servers["music"], servers["video"] = serve_fake(music), serve_fake(FakeVideo())
        return Backends(f"127.0.0.1:{servers['music'].port}", f"127.0.0.1:{servers['video'].port}")

    yield start
    for server in servers.values():
        server.stop(0)


def _song(tmp_path: Path, seconds: float = 4.0) -> tuple[UploadRecord, np.ndarray]:
    pcm = song_pcm(seconds)
    path = write_song(tmp_path / "song.wav", pcm)
    record = UploadRecord(id=SONG, owner="k", kind="audio", sha256="1" * 64, size_bytes=path.stat().st_size,
                          format="wav", filename="song.wav", duration_seconds=seconds, sample_rate=44100, channels=2,
                          width=0, height=0, path=str(path), created_at=0.0, expires_at=0.0)  # fmt: skip
    return record, pcm


def _compose(backends: Backends, tmp_path: Path, song: UploadRecord, **fields):
    request = validate_request({"genre": "rock", "video_prompt": "a stage", "song": SONG, "width": 64, "height": 64,
                                "fps": 12, "seed": 3, "cuts": "none", **fields})  # fmt: skip
    request = song_request(request, song)
    composer = Composer(backends, tmp_path / "work", uploads=lambda upload_id: song)
    return request, composer.compose(request, on_progress=lambda p: None, cancelled=threading.Event())


def test_the_song_window_goes_to_the_music_service_and_its_answer_is_the_audio(stack, tmp_path):
    music = FakeMusic()
    backends = stack(music)
    song, pcm = _song(tmp_path)
    request, result = _compose(backends, tmp_path, song, start=1.0, duration=2.0, repaint_start=0.5, repaint_end=1.25)
    sent = music.last_request
    assert (sent.repaint_start_seconds, sent.repaint_end_seconds) == (0.5, 1.25)
    assert sent.prompt == request.music_prompt == "rock" and sent.duration_seconds == request.exact_duration == 2.0
    assert len(sent.source_pcm) == 2 * 48000 * 2 * 2  # int16, stereo, 48 kHz, the window's 2 s
    source = wire.pcm16_from_bytes(sent.source_pcm, 2)
    # the window 1..3 s of the song, resampled 44.1 → 48 kHz: compared with an independent resampling
    expected = resample_poly(pcm[44100 : 3 * 44100].astype(np.float64), 160, 147, axis=0)
    middle = slice(4800, 96000 - 4800)  # away from the resamplers' edges
    for channel in range(2):
        assert np.corrcoef(source[middle, channel], expected[middle, channel])[0, 1] > 0.99
    # the MP4 carries the music service's answer (the fake's 32 kHz sine), not the song
    assert result.sample_rate == SAMPLE_RATE and result.mux.frame_count == request.frame_count
    with av.open(str(result.path)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == SAMPLE_RATE
    assert result.provenance.request.repaint_start_seconds == 0.5 and result.provenance.music_model_id == "fake-music"
    assert [u.field for u in result.provenance.uploads] == ["song"]


def test_without_a_range_the_song_is_used_as_it_is(stack, tmp_path):
    music = FakeMusic()
    backends = stack(music)
    song, _ = _song(tmp_path)
    _, result = _compose(backends, tmp_path, song, duration=1.0)
    assert music.calls == 0 and result.sample_rate == 44100


def test_a_music_service_that_cannot_repaint_is_rejected_naming_the_field(stack, tmp_path):
    backends = stack(NoRepaintMusic())
    song, _ = _song(tmp_path)
    with pytest.raises(BackendRejected) as caught:
        _compose(backends, tmp_path, song, duration=2.0, repaint_start=0.5, repaint_end=1.0)
    assert caught.value.field == "repaint_start" and "cannot repaint" in str(caught.value)


def test_the_longest_source_fits_the_music_channel_and_no_other(stack):
    music = FakeMusic()
    backends = stack(music)
    seconds = LIMITS.max_duration_seconds
    source = bytes(round(seconds * wire.SOURCE_RATE) * wire.SOURCE_CHANNELS * 2)
    assert len(source) == 57_600_000 and len(source) + 1_000_000 < MUSIC_REQUEST_LIMIT_BYTES
    assert len(source) > MESSAGE_LIMIT_BYTES  # why the music channel has its own limit
    song = dict(source_pcm=source, repaint_start_seconds=10.0, repaint_end_seconds=20.0, lyrics="x" * 4000)
    events = music_source(backends, prompt="p" * LIMITS.max_backend_prompt_chars, duration_seconds=1.0, seed=0,
                          model="", timeout=60, song=song)  # fmt: skip
    events.start()
    assert sum(1 for _ in events.events()) > 1
    assert len(music.last_request.source_pcm) == 57_600_000
    # the video channel (and every other) keeps the 8 MiB limit
    too_big = music_pb2.GenerateMusicRequest(prompt="p", duration_seconds=1.0, source_pcm=bytes(MESSAGE_LIMIT_BYTES))
    with pytest.raises(grpc.RpcError) as caught:
        list(backends.music_control.GenerateMusic(too_big, timeout=30))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
