"""The stream contract of protos/, checked where the composer reads the streams (backends.py): each violation is a
ComposeError that names the service and what it did; a correct stream becomes typed events ending in Ended."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tunereel import wire
from tunereel.composer.backends import (
    AudioHeader,
    Backend,
    Ended,
    ExpectedVideo,
    Frame,
    Pcm,
    VideoHeader,
    audio_events,
    video_events,
)
from tunereel.composer.errors import (
    BackendBusy,
    BackendFailed,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    InvalidAudio,
)
from tunereel.v1 import music_pb2, video_pb2

EXPECTED = ExpectedVideo(width=4, height=2, fps=24, frame_count=2)


def audio_header(total=4):
    return music_pb2.GenerateMusicResponse(
        header=music_pb2.AudioHeader(sample_rate=32000, channels=1, total_samples=total, model_id="m")
    )


def chunk(offset, values):
    pcm = np.asarray(values, np.float32)[:, None]
    return music_pb2.GenerateMusicResponse(
        chunk=music_pb2.AudioChunk(offset_samples=offset, num_samples=pcm.shape[0], pcm=wire.pcm_to_bytes(pcm))
    )


def video_header(**changes):
    fields = dict(width=4, height=2, fps=24, frame_count=2, pixel_format="rgb24", model_id="v") | changes
    return video_pb2.GenerateVideoResponse(header=video_pb2.VideoHeader(**fields))


def piece(index, offset, data):
    return video_pb2.GenerateVideoResponse(frame=video_pb2.FrameChunk(frame_index=index, offset=offset, data=data))


def test_a_correct_audio_stream_becomes_typed_events():
    events = list(audio_events("music", [audio_header(), chunk(0, [0.1, 0.2]), chunk(2, [0.3, 0.4])]))
    assert [type(e) for e in events] == [AudioHeader, Pcm, Pcm, Ended]
    assert events[2].offset == 2 and events[2].samples[:, 0].tolist() == pytest.approx([0.3, 0.4])


@pytest.mark.parametrize(
    ("messages", "error", "words"),
    [
        ([chunk(0, [0.1])], BackendProtocolError, "audio before its header"),
        ([audio_header(), audio_header()], BackendProtocolError, "second audio header"),
        ([audio_header(), chunk(1, [0.1])], BackendProtocolError, "at sample 1, expected 0"),
        ([audio_header(2), chunk(0, [0.1, 0.2, 0.3])], BackendProtocolError, "more audio than announced"),
        ([audio_header(), chunk(0, [0.1])], BackendProtocolError, "sent 1 of the 4 samples"),
        ([audio_header(0)], BackendProtocolError, "bad audio header"),
        ([], BackendProtocolError, "without an audio header"),
        ([audio_header(), chunk(0, [0.1, np.nan, 0.2, 0.3])], InvalidAudio, "NaN"),
    ],
)
def test_audio_stream_violations(messages, error, words):
    with pytest.raises(error, match=words) as caught:
        list(audio_events("music", messages))
    assert caught.value.message.startswith("music service")
    assert not caught.value.retryable


def test_a_correct_video_stream_is_assembled_into_frames():
    frame = bytes(range(24))
    events = list(video_events("video", [video_header(), piece(0, 0, frame[:10]), piece(0, 10, frame[10:]),
                                         piece(1, 0, frame)], EXPECTED))  # fmt: skip
    assert [type(e) for e in events] == [VideoHeader, Frame, Frame, Ended]
    assert events[1].rgb.shape == (2, 4, 3) and events[1].rgb.tobytes() == frame


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([piece(0, 0, bytes(24)), video_header()], "frame 0 before its header"),
        ([video_header(width=8)], "does not match the request"),
        ([video_header(pixel_format="rgba")], "does not match the request"),
        ([video_header(), video_header()], "second video header"),
        ([video_header(), piece(1, 0, bytes(24))], "out of order"),
        ([video_header(), piece(0, 0, bytes(10)), piece(0, 12, bytes(12))], "out of order"),
        ([video_header(), piece(0, 0, bytes(30))], "larger than"),
        ([video_header(), piece(0, 0, bytes(24)), piece(1, 0, bytes(24)), piece(2, 0, bytes(24))], "frame 2 of 2"),
        ([video_header(), piece(0, 0, bytes(24))], "sent 1 of the 2 frames"),
    ],
)
def test_video_stream_violations(messages, words):
    with pytest.raises(BackendProtocolError, match=words) as caught:
        list(video_events("video", messages, EXPECTED))
    assert caught.value.message.startswith("video service") and not caught.value.retryable


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "kind", "retryable", "starts"),
    [
        (grpc.StatusCode.UNAVAILABLE, "connection reset", BackendUnavailable, True, "music service is unavailable"),
        (grpc.StatusCode.FAILED_PRECONDITION, "music service: weights missing", BackendUnavailable, True, "music service is not ready"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", BackendBusy, True, "music service is busy"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", BackendTimeout, True, "music service did not"),
        (grpc.StatusCode.INTERNAL, "model produced NaN", BackendFailed, False, "music service failed (INTERNAL)"),
        (grpc.StatusCode.UNKNOWN, "Exception calling application", BackendFailed, False, "music service failed"),
        (grpc.StatusCode.INVALID_ARGUMENT, "model: serves 'tiny', not 'large'", BackendRejected, False, "music_model: "),
        (grpc.StatusCode.INVALID_ARGUMENT, "duration_seconds: at most 300", BackendRejected, False, "duration: "),
    ],
)
def test_backend_failures_say_what_happened_and_whether_a_retry_helps(code, details, kind, retryable, starts):
    backend = Backend("music", "127.0.0.1:1", "tunereel.v1.MusicService", channel=None)
    error = backend.failure(FakeRpcError(code, details))
    assert type(error) is kind and error.retryable is retryable
    assert error.message.startswith(starts), error.message


def test_a_backend_address_and_its_own_text_stay_in_the_detail_not_the_message():
    backend = Backend("video", "10.1.2.3:50051", "tunereel.v1.VideoService", channel=None)
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED):
        error = backend.failure(FakeRpcError(code, "ipv4:10.1.2.3:50051: /models/x.safetensors broke"))
        assert "10.1.2.3" not in error.message and "/models" not in error.message, error.message
        assert "10.1.2.3" in error.detail and "/models/x.safetensors" in error.detail
        assert error.message.startswith("video service")
