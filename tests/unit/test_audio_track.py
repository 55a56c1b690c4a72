"""The composer's audio track: the same audio as mastering on one thread, in order, and failures that surface."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.media import decode_audio, probe_mp4
from tunereel.composer.audio import AudioTrack, AudioTrackCancelled, AudioTrackError
from tunereel.composer.muxer import AudioSpec, Mp4Muxer, VideoSpec, aac_round_trip
from tunereel.composer.audio import StreamingMaster

from .test_stream_master import music_like

RATE = 32000
MONO = AudioSpec(RATE, 1)
FPS = 8


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def single_thread_master(x: np.ndarray, chunk: int) -> np.ndarray:
    master = StreamingMaster(MONO, len(x))
    out = []
    for start in range(0, len(x), chunk):
        out += master.push(x[start : start + chunk])
    out += master.finish()
    return np.concatenate(out)


@pytest.mark.parametrize(
    "seconds, attach_at",
    [(12.0, 3), (12.0, None), (41.0, 3), (41.0, 25 * FPS), (41.0, None)],
    ids=["whole-clip", "whole-clip-attached-after-the-end", "streamed", "streamed-attached-after-calibration",
         "streamed-attached-after-the-end"],
)
def test_muxed_audio_is_what_one_thread_would_have_made(tmp_path, seconds, attach_at):
    """In every order of arrival, including audio mastered before the muxer exists (it waits in the track)."""
    x = music_like(seconds, seed=5)
    n = int(seconds * FPS)
    path = tmp_path / "track.mp4"
    track = AudioTrack(StreamingMaster(MONO, len(x)), max_pending=4)
    with Mp4Muxer(path, VideoSpec(32, 32, FPS), MONO) as mux:
        pushed = 0
        # the audio arrives 2.5 s ahead of the frames, in uneven chunks; `None`: the whole song before any frame
        lead = 2.5 * RATE if attach_at is not None else len(x)
        for i, frame in enumerate(frames(n)):
            while pushed < len(x) and pushed <= i * RATE // FPS + lead:
                piece = x[pushed : pushed + 7001]
                track.push(piece)
                pushed += len(piece)
                if pushed == len(x):
                    track.end()
            if attach_at is None and i == 0:
                track.attach(mux)
            elif i == attach_at:
                track.attach(mux)
            mux.add_frame(frame)
        assert track.received == len(x)
        track.join()
    info = probe_mp4(path)
    assert info["frame_count"] == n and abs(info["audio_duration_s"] - seconds) <= 1 / FPS
    decoded, rate = decode_audio(path)
    expected = aac_round_trip(single_thread_master(x, RATE), MONO)  # what a player hears of the one-thread master
    assert rate == RATE
    np.testing.assert_array_equal(decoded[: len(x)], expected)


def test_too_much_audio_and_an_early_end_are_refused():
    track = AudioTrack(StreamingMaster(MONO, 1000))
    with pytest.raises(ValueError, match="more audio than announced"):
        track.push(np.zeros((1001, 1), np.float32))
    track.push(np.zeros((400, 1), np.float32))
    with pytest.raises(ValueError, match="ended after 400 of 1000"):
        track.end()
    track.abort()


def test_a_failure_in_the_thread_reaches_the_feeder(tmp_path):
    track = AudioTrack(StreamingMaster(MONO, 2 * RATE))
    mux = Mp4Muxer(tmp_path / "x.mp4", VideoSpec(32, 32, FPS), MONO)
    mux.abort()  # closed: the track's first add_audio fails
    track.attach(mux)
    track.push(np.zeros((2 * RATE, 1), np.float32))
    track.end()
    with pytest.raises(AudioTrackError, match="already closed"):
        track.join()


def test_abort_stops_a_track_that_waits_for_input():
    track = AudioTrack(StreamingMaster(MONO, 10 * RATE))
    track.push(np.zeros((RATE, 1), np.float32))
    track.abort()
    assert not track._thread.is_alive()
    with pytest.raises(AudioTrackError, match="stopped"):
        track.push(np.zeros((RATE, 1), np.float32))


def test_a_failure_is_seen_by_check_before_the_end(tmp_path):
    track = AudioTrack(StreamingMaster(MONO, 40 * RATE))
    mux = Mp4Muxer(tmp_path / "x.mp4", VideoSpec(32, 32, FPS), MONO)
    mux.abort()
    track.attach(mux)
    for second in range(25):  # past the 20 s calibration: the first mastered block reaches the closed muxer
        track.push(np.full((RATE, 1), 0.1, np.float32))
    deadline = time.monotonic() + 10
    with pytest.raises(AudioTrackError, match="already closed"):
        while time.monotonic() < deadline:
            track.check()
            time.sleep(0.01)
    assert not track._thread.is_alive()


def test_join_gives_up_when_cancelled(tmp_path):
    x = music_like(30.0, seed=6)  # a whole clip: mastered in one call of some tenths of a second after end()
    track = AudioTrack(StreamingMaster(MONO, len(x)))
    mux = Mp4Muxer(tmp_path / "x.mp4", VideoSpec(32, 32, FPS), MONO)
    track.attach(mux)
    track.push(x)
    track.end()
    cancelled = threading.Event()
    cancelled.set()
    started = time.monotonic()
    with pytest.raises(AudioTrackCancelled):
        track.join(cancelled)
    assert time.monotonic() - started < 2
    mux.abort()


def test_join_before_the_end_is_an_error_not_a_silent_loss(tmp_path):
    track = AudioTrack(StreamingMaster(MONO, 10 * RATE))
    track.attach(Mp4Muxer(tmp_path / "x.mp4", VideoSpec(32, 32, FPS), MONO))
    track.push(np.zeros((RATE, 1), np.float32))
    with pytest.raises(AudioTrackError, match="before end"):
        track.join()
    assert not track._thread.is_alive()
