"""Byte layouts promised in protos/: PCM and chunked frames."""

from __future__ import annotations

import numpy as np
import pytest

from tunereel import wire


def test_pcm_round_trip_is_exact():
    pcm = np.random.default_rng(0).standard_normal((1000, 2)).astype(np.float32)
    assert np.array_equal(wire.pcm_from_bytes(wire.pcm_to_bytes(pcm), 2), pcm)


def test_768x512_frame_takes_two_chunks_under_the_grpc_limit():
    frame = np.random.default_rng(1).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    pieces = list(wire.split_frame(frame))
    assert len(pieces) == 2
    assert all(len(data) <= wire.FRAME_CHUNK_BYTES < 4 * 1024 * 1024 for _, data in pieces)
    assembler = wire.FrameAssembler(768, 512)
    assert assembler.add(0, *pieces[0]) is None
    rebuilt = assembler.add(0, *pieces[1])
    assert np.array_equal(rebuilt, frame)
    assert assembler.frames_done == 1


def test_a_frame_in_one_piece_is_taken_as_is():
    frame = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assembler = wire.FrameAssembler(64, 64)
    assert np.array_equal(assembler.add(0, 0, frame.tobytes()), frame)


def test_the_largest_frame_splits_and_reassembles():
    frame = np.random.default_rng(2).integers(0, 256, (1280, 1280, 3), dtype=np.uint8)
    pieces = list(wire.split_frame(frame))
    assert len(pieces) == 5 and all(len(data) <= wire.FRAME_CHUNK_BYTES for _, data in pieces)
    assembler = wire.FrameAssembler(1280, 1280)
    frames = []
    for _ in range(2):  # two frames in a row: the second must not overwrite the first
        out = [assembler.add(assembler.frames_done, offset, data) for offset, data in pieces]
        assert all(piece is None for piece in out[:-1])
        frames.append(out[-1])
    assert all(np.array_equal(f, frame) for f in frames)
    assert frames[0] is not frames[1] and assembler.frames_done == 2


def test_assembler_rejects_out_of_order_chunks():
    assembler = wire.FrameAssembler(64, 64)
    with pytest.raises(ValueError, match="out of order"):
        assembler.add(1, 0, b"\0" * 100)


def test_a_scene_image_goes_over_grpc_and_back():
    from tunereel.request import validate_request

    image = "0b0e4d0c-7a53-4b55-9c1e-3f3c1b8e2a10"
    request = validate_request({"genre": "pop", "duration": 1, "video_prompt": "x",
                                "scenes": [{"prompt": "a"}, {"prompt": "b", "image": image.upper()}]})  # fmt: skip
    message = wire.request_to_proto(request)
    assert [scene.image for scene in message.scenes] == ["", image]
    again = validate_request(wire.request_from_proto(message))
    assert [scene.image for scene in again.scenes] == [None, image]
    assert again.uploads == {"scenes.1.image": image}
