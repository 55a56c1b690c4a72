"""Shot segments (muxer.SegmentWriter) joined in order by an Mp4Muxer opened with segments=True: no re-encoding, exact
frame counts, each segment's first frame a keyframe, chapters; and the request's scenes and cuts."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tunereel.composer.muxer import AudioSpec, Chapter, Mp4Muxer, MuxError, SegmentWriter, VideoSpec
from tunereel.request import InvalidRequest, validate_request

VIDEO = VideoSpec(64, 64, 24)
AUDIO = AudioSpec(32000, 1)


def segment(path, frames: int, level: int, video: VideoSpec = VIDEO):
    writer = SegmentWriter(path, video)
    for i in range(frames):
        writer.add_frame(np.full((video.height, video.width, 3), level + (i % 3), np.uint8))
    assert writer.close() == frames
    return path


def test_segments_join_in_order_without_reencoding(tmp_path):
    parts = [segment(tmp_path / f"s{i}.mp4", n, level) for i, (n, level) in enumerate([(30, 20), (17, 120), (9, 220)])]
    sizes = []
    for part in parts:
        with av.open(str(part)) as source:
            sizes.append([p.size for p in source.demux(source.streams.video[0]) if p.dts is not None])
    chapters = [Chapter(0.0, 30 / 24, "one"), Chapter(30 / 24, 56 / 24, "two")]
    muxer = Mp4Muxer(tmp_path / "out.mp4", VIDEO, AUDIO, segments=True, chapters=chapters)
    assert [muxer.add_segment(part) for part in parts] == [30, 17, 9]
    muxer.add_audio(np.zeros((round(56 / 24 * 32000), 1), np.float32))
    result = muxer.close()
    assert result.frame_count == 56
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.dts is not None]
        assert [p.size for p in packets] == [s for part in sizes for s in part]  # the same bits: copied, not re-encoded
        keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
        assert {0, 30, 47} <= set(keyframes)  # every shot starts on a keyframe
        assert [c["metadata"]["title"] for c in container.chapters()] == ["one", "two"]
    with av.open(str(result.path)) as container:
        levels = [int(f.to_ndarray(format="rgb24")[32, 32, 0]) for f in container.decode(video=0)]
    assert len(levels) == 56
    assert max(levels[:30]) < 60 and 100 < min(levels[30:47]) < max(levels[30:47]) < 160 and min(levels[47:]) > 190


def test_a_segment_of_another_size_is_refused_and_frames_are_not_taken(tmp_path):
    other = segment(tmp_path / "big.mp4", 3, 50, VideoSpec(128, 64, 24))
    muxer = Mp4Muxer(tmp_path / "out.mp4", VIDEO, AUDIO, segments=True)
    with pytest.raises(MuxError, match="parameter set"):
        muxer.add_segment(other)
    with pytest.raises(MuxError, match="segments"):
        muxer.add_frame(np.zeros((64, 64, 3), np.uint8))
    muxer.abort()
    assert not list(tmp_path.glob(".*"))  # no partial or reference file left


BASE = {"genre": "pop", "duration": 3, "video_prompt": "x"}


@pytest.mark.parametrize(("fields", "field"), [
    ({"scenes": []}, "scenes"),
    ({"scenes": ["x"] * 33}, "scenes"),
    ({"scenes": ["a", ""]}, "scenes.1.prompt"),
    ({"scenes": [{"prompt": "a", "bars": [3, 2]}]}, "scenes.0"),
    ({"scenes": [{"prompt": "a", "bars": [0, 2]}]}, "scenes.0.bars.0"),
    ({"scenes": [{"prompt": "a", "section": -1}]}, "scenes.0.section"),
    ({"scenes": [{"prompt": "a", "section": 1, "bars": [1, 2]}]}, "scenes.0"),
    ({"cuts": "often"}, "cuts"),
    ({"scenes": ["a", "b"], "cuts": "none"}, "cuts"),
])  # fmt: skip
def test_bad_scenes_and_cuts_name_the_field(fields, field):
    with pytest.raises(InvalidRequest) as error:
        validate_request({**BASE, **fields})
    assert error.value.field == field, str(error.value)


def test_scenes_and_cuts_defaults():
    request = validate_request(BASE)
    assert request.cuts == "auto" and request.scenes is None and [s.prompt for s in request.scene_list] == ["x"]
    request = validate_request({**BASE, "scenes": ["a", {"prompt": " b ", "bars": [2, 4]}, {"prompt": "c", "section": 1}]})
    assert [(s.prompt, s.section, s.bars) for s in request.scene_list] == [("a", None, None), ("b", None, (2, 4)), ("c", 1, None)]
    assert len(validate_request({**BASE, "scenes": ["x"] * 32}).scene_list) == 32
