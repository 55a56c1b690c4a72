"""The composer's audio track: the same audio as mastering on one thread, in order, and failures that surface."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import decode_audio, probe_mp4
from tunereel.composer.audio_track import AudioTrack, AudioTrackError
from tunereel.composer.muxer import AudioSpec, Mp4Muxer, VideoSpec, aac_round_trip
from tunereel.composer.stream_master import StreamingMaster

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


@pytest.mark.parametrize("seconds", [12.0, 41.0], ids=["whole-clip", "streamed"])
def test_muxed_audio_is_what_one_thread_would_have_made(tmp_path, seconds):
    x = music_like(seconds, seed=5)
    n = int(seconds * FPS)
    path = tmp_path / "track.mp4"
    track = AudioTrack(StreamingMaster(MONO, len(x)), max_pending=4)
    with Mp4Muxer(path, VideoSpec(32, 32, FPS), MONO) as mux:
        pushed = 0
        for i, frame in enumerate(frames(n)):
            # the audio arrives ahead of the frames, in uneven chunks; the muxer is attached late, as in the composer
            while pushed < len(x) and pushed <= (i + 20) * RATE // FPS:
                piece = x[pushed : pushed + 7001]
                track.push(piece)
                pushed += len(piece)
            if i == 3:
                track.attach(mux)
            mux.add_frame(frame)
        while pushed < len(x):
            track.push(x[pushed : pushed + 7001])
            pushed += 7001
        assert track.received == len(x)
        track.end()
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
    with pytest.raises(AudioTrackError, match="stopped"):
        track.push(np.zeros((RATE, 1), np.float32))
