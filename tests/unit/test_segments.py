"""Segment planning for long outputs (pure): exact totals, limits per pass, 8k+1 frames, overlaps; cross-fade gains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunereel.segments import (
    correlation,
    crossfade_gains,
    model_frame_count,
    music_join_starts,
    plan_music,
    plan_video,
    segment_seed,
    video_seam_starts,
)


@pytest.mark.parametrize("total", [1, 8, 9, 72, 240, 256, 257, 258, 360, 497, 498, 960, 7200, 18000])
@pytest.mark.parametrize(("max_frames", "overlap"), [(257, 17), (257, 9), (257, 1), (121, 17), (33, 9)])
def test_video_plan_is_exact_and_within_limits(total, max_frames, overlap):
    segments = plan_video(total, max_frames, overlap)
    assert sum(s.new_frames for s in segments) == total
    assert segments[-1].end == total
    for previous, segment in zip(segments, segments[1:]):
        assert segment.first_new == previous.end  # contiguous, no frame twice
        assert segment.condition_frames == overlap and segment.start == previous.end - overlap
        assert previous.new_frames >= overlap  # the condition frames all come from the segment just before
    for segment in segments:
        assert segment.model_frames <= max_frames
        assert (segment.model_frames - 1) % 8 == 0  # LTX-Video's 8k+1
        assert segment.model_frames >= segment.condition_frames + segment.new_frames
        assert segment.model_frames - (segment.condition_frames + segment.new_frames) < 8  # at most 7 cut away
    if total <= max_frames:
        assert len(segments) == 1 and segments[0].condition_frames == 0
    else:  # every pass but the last is a full one
        assert all(s.model_frames == max_frames for s in segments[:-1])


def test_video_plan_examples():
    # the prototype's 15 s at 24 fps: 257 + 103 frames; 300 s at 24 fps: 30 passes
    assert [(s.new_frames, s.model_frames) for s in plan_video(360, 257, 17)] == [(257, 257), (103, 121)]
    five_minutes = plan_video(7200, 257, 17)
    assert len(five_minutes) == 30 and five_minutes[1].new_frames == 240
    assert video_seam_starts(plan_video(360, 257, 17), 8) == [249]


@pytest.mark.parametrize(("args", "words"), [
    ((0, 257, 17), "total_frames"), ((100, 256, 17), "max_frames"), ((300, 257, 16), "overlap"),
    ((300, 257, 257), "overlap"), ((300, 257, 0), "overlap"), ((300, 33, 25), "overlap"),
])  # fmt: skip
def test_video_plan_rejects_bad_arguments(args, words):
    with pytest.raises(ValueError, match=words):
        plan_video(*args)


@pytest.mark.parametrize("total", [1, 639, 640, 641, 320_000, 960_000, 960_001, 1_280_000, 1_673_600, 9_600_000])
def test_music_plan_is_exact_and_within_limits(total):
    hop, window, prompt = 640, 1500, 500
    windows = plan_music(total, hop, window, prompt)
    assert windows[-1].end_frame == math.ceil(total / hop)
    assert windows[-1].end_frame * hop - total < hop  # the last frame is cut to the sample
    for previous, current in zip(windows, windows[1:]):
        assert current.first_new_frame == previous.end_frame
        assert current.prompt_frames == prompt and current.start_frame == previous.end_frame - prompt
    for w in windows:
        assert w.prompt_frames + w.new_frames <= window
        assert w.new_frames >= 1
    assert all(w.new_frames == window - prompt for w in windows[1:-1])  # audiocraft's extend_stride: 20 s


def test_music_plan_examples():
    assert len(plan_music(300 * 32000, 640, 1500, 500)) == 15
    assert len(plan_music(30 * 32000, 640, 1500, 500)) == 1
    windows = plan_music(40 * 32000, 640, 1500, 500)
    assert [(w.prompt_frames, w.new_frames) for w in windows] == [(0, 1500), (500, 500)]
    assert music_join_starts(windows, 640, 22400) == [1500 * 640 - 22400]


def test_model_frame_count():
    assert [model_frame_count(n) for n in (1, 2, 9, 10, 120, 257)] == [1, 9, 9, 17, 121, 257]


def test_segment_seeds():
    assert segment_seed(7, 0) == 7
    seeds = {segment_seed(7, i) for i in range(1, 50)} | {segment_seed(8, i) for i in range(1, 50)}
    assert len(seeds) == 98 and all(0 <= s < 2**63 for s in seeds)
    assert segment_seed(7, 3) == segment_seed(7, 3)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7, 1.0])
def test_crossfade_keeps_the_expected_level(rho):
    g_out, g_in = crossfade_gains(64, rho)
    assert g_out[0] > 0.99 and g_in[-1] > 0.99 and g_out[-1] < 0.01
    power = g_out**2 + g_in**2 + 2 * rho * g_out * g_in
    np.testing.assert_allclose(power, 1.0, atol=1e-12)
    # measured on signals with that correlation: the mix has the level of its inputs all the way through
    rng = np.random.default_rng(0)
    common, own_a, own_b = rng.standard_normal((3, 64, 4000))
    a = math.sqrt(rho) * common + math.sqrt(1 - rho) * own_a
    b = math.sqrt(rho) * common + math.sqrt(1 - rho) * own_b
    assert correlation(a, b) == pytest.approx(rho, abs=0.01)
    mixed = g_out[:, None] * a + g_in[:, None] * b
    np.testing.assert_allclose(mixed.std(axis=1), 1.0, atol=0.05)


def test_crossfade_of_identical_signals_is_the_signal():
    x = np.random.default_rng(1).standard_normal(1000)
    g_out, g_in = crossfade_gains(1000, correlation(x, x))
    np.testing.assert_allclose(g_out * x + g_in * x, x, atol=1e-12)
