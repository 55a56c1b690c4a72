"""Long outputs on the tiny models, pipeline level: music windows and video segments are exact, seamless, streamed
piece by piece, and stop on cancel within one segment.

The music tests use short windows (3 s, prompted with 1 s) so that several joins take seconds; the windowing code is
the same as for MusicGen's 30 s windows (the end-to-end 40 s test has a real 30 s join).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from tests.seams import audio_join_report, video_seam_report
from tunereel.music import pipeline as music_module
from tunereel.music.pipeline import MusicPipeline
from tunereel.presets import music_preset, video_preset
from tunereel.streaming import Cancelled
from tunereel.video.pipeline import VideoPipeline, blend_frames

RATE = 32000


@pytest.fixture(scope="module")
def music(models_dir) -> MusicPipeline:
    full = MusicPipeline.from_preset(music_preset("tiny"), models_dir)
    return MusicPipeline(
        full.model, full.processor, model_id=full.model_id,
        max_seconds=3.0, prompt_seconds=1.0, crossfade_seconds=0.1, join_margin_seconds=0.2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def long_song(music):
    """8 s in four windows (three joins), with what the pipeline streamed and reported."""
    reports, fades = [], []
    original = music_module.crossfade

    def spy(a, b):
        fades.append((a.copy(), b.copy()))
        return original(a, b)

    music_module.crossfade = spy
    try:
        pieces = list(music.stream("pop, upbeat", 8.0, seed=21, on_progress=reports.append))
    finally:
        music_module.crossfade = original
    return pieces, reports, fades


def test_music_windows_stream_an_exact_song(music, long_song):
    pieces, reports, _ = long_song
    assert len(music.plan(8.0)) == 4
    assert [p.segment for p in pieces] == [0, 1, 2, 3] and {p.total_segments for p in pieces} == {4}
    assert pieces[0].offset == 0
    assert all(a.offset + len(a.audio) == b.offset for a, b in zip(pieces, pieces[1:]))
    assert sum(len(p.audio) for p in pieces) == 8 * RATE
    assert [p.offset for p in pieces[1:]] == music.joins(8.0)  # each piece starts with its join's cross-fade
    # progress counts windows, and the fraction never goes back
    assert sorted({r.segment for r in reports}) == [0, 1, 2, 3] and {r.total_segments for r in reports} == {4}
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_music_window_reproduces_the_previous_tail_where_they_join(long_song):
    # Every window re-decodes the codes it was prompted with: at the cross-fade both sides are the same sound.
    _, _, fades = long_song
    assert len(fades) == 3
    for old, new in fades:
        assert np.corrcoef(old[:, 0], new[:, 0])[0, 1] > 0.999
        assert np.abs(old - new).max() < 1e-3 * np.abs(old).max()


def test_music_joins_are_not_heard(music, long_song):
    pieces, _, _ = long_song
    song = np.concatenate([p.audio for p in pieces])[:, 0]
    joins = music.joins(8.0)
    report = audio_join_report(song, RATE, joins, music.crossfade_samples)
    print("\njoin discontinuity (join max vs elsewhere min/p99/max):")
    for name, figure in report.items():
        print(f"  {name:5s} {figure['join_max']:8.3f}  vs {figure['rest_min']:.3f} / {figure['rest_p99']:.3f} / {figure['rest_max']:.3f}")
    for name, figure in report.items():
        assert figure["join_max"] <= figure["rest_max"], f"{name} spikes at a join: {figure}"

    # The same figures do catch a click, a drop-out and a jump in level placed away from the joins.
    where = int(4.0 * RATE)  # between the second and the third join, more than 0.5 s from both
    assert all(abs(where - j) > 0.5 * RATE for j in joins)
    click = song.copy()
    peak = where + int(np.argmax(np.abs(song[where : where + 320])))
    click[peak] += np.sign(song[peak]) * 2 * report["step"]["rest_max"]
    dropout = song.copy()
    dropout[where : where + 320] = 0.0  # 10 ms
    jump = song.copy()
    jump[where:] *= 10 ** (3 / 20)  # +3 dB
    for name, damaged, figure in (("click", click, "step"), ("drop-out", dropout, "gap"), ("drop-out", dropout, "flux"),
                                  ("3 dB jump", jump, "level")):  # fmt: skip
        caught = audio_join_report(damaged, RATE, [where], 1)[figure]["join_max"]
        assert caught > report[figure]["rest_max"], f"the {figure} figure misses a {name}"


def test_music_exact_for_awkward_lengths(music):
    for seconds in (0.01, 2.999, 3.0211):
        audio = music("jazz", seconds, seed=1).audio
        assert audio.shape == (round(seconds * RATE), 1)


def test_music_cancel_stops_within_the_window(music):
    interrupt = threading.Event()
    seen = []

    def on_progress(report):
        seen.append(report)
        if report.segment == 1 and report.step == 5:
            interrupt.set()

    pieces = []
    with pytest.raises(Cancelled):
        for piece in music.stream("pop", 8.0, seed=2, on_progress=on_progress, interrupt=interrupt):
            pieces.append(piece)
    assert [p.segment for p in pieces] == [0]
    assert max(r.segment for r in seen) == 1
    assert len([r for r in seen if r.segment == 1]) <= 6  # stopped at the next step


# ------------------------------------------------------------------------------------------------------------ video
@pytest.fixture(scope="module")
def video(models_dir) -> VideoPipeline:
    return VideoPipeline.from_preset(video_preset("tiny"), models_dir)


def _video(pipeline, frames, **kwargs):
    reports = []
    pieces = list(pipeline.stream("a sunset over the ocean", width=64, height=64, num_frames=frames, fps=24, seed=4,
                                  on_progress=reports.append, **kwargs))  # fmt: skip
    return pieces, reports


def test_video_segments_are_exact_and_seamless(video):
    frames = 600  # 25 s at 24 fps: 257 + 240 + 103 new frames
    pieces, reports = _video(video, frames)
    segments = video.plan(frames)
    assert len(segments) == 3 and [p.segment for p in pieces] == [0, 1, 2]
    assert all(a.start + len(a.frames) == b.start for a, b in zip(pieces, pieces[1:]))
    clip = np.concatenate([p.frames for p in pieces])
    assert clip.shape == (frames, 64, 64, 3) and clip.dtype == np.uint8
    assert sorted({r.segment for r in reports}) == [0, 1, 2]
    assert [r.fraction for r in reports] == sorted(r.fraction for r in reports)

    seams = [p.start for p in pieces[1:]]
    report = video_seam_report(clip, seams, video.preset.blend_frames)
    print(f"\nvideo seams: change across seams {report['seam_min']:.1f}..{report['seam_max']:.1f}, "
          f"inside segments {report['inside_min']:.1f}..{report['inside_max']:.1f}")  # fmt: skip
    assert report["inside_min"] <= report["seam_min"] and report["seam_max"] <= report["inside_max"]

    # The figure does catch a frozen frame or a jump in brightness at a seam.
    frozen = clip.copy()
    frozen[seams[0]] = frozen[seams[0] - 1]
    assert video_seam_report(frozen, seams, video.preset.blend_frames)["seam_min"] < report["inside_min"]
    brighter = clip.astype(np.int16)
    brighter[seams[0]:] += 60
    brighter = np.clip(brighter, 0, 255).astype(np.uint8)
    assert video_seam_report(brighter, seams, video.preset.blend_frames)["seam_max"] > report["inside_max"]


def test_video_first_segment_is_the_one_pass_video(video):
    long, _ = _video(video, 300)
    one, _ = _video(video, 257)
    first = long[0].frames  # 257 - 8 frames: the last 8 wait for the seam
    assert np.array_equal(first, one[0].frames[: len(first)])


def test_video_image_continuation_for_older_checkpoints(models_dir):
    preset = dataclasses.replace(video_preset("tiny"), continuation="image", overlap_frames=1, blend_frames=0)
    pipeline = VideoPipeline.from_preset(preset, models_dir)
    pieces, _ = _video(pipeline, 300)
    assert [len(p.frames) for p in pieces] == [257, 43]


def test_video_cancel_stops_within_the_segment(video):
    interrupt = threading.Event()
    seen = []

    def on_progress(report):
        seen.append(report)
        if report.segment == 1 and report.step == 1:
            interrupt.set()

    with pytest.raises(Cancelled):
        for _ in video.stream("waves", width=64, height=64, num_frames=700, fps=24, seed=1, on_progress=on_progress,
                              interrupt=interrupt):  # fmt: skip
            pass
    assert max(r.segment for r in seen) == 1 and len([r for r in seen if r.segment == 1]) == 1


def test_blend_keeps_contrast_for_unrelated_frames_and_is_a_plain_fade_for_the_same():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
    mixed = blend_frames(a, b).astype(np.float32)
    assert np.all(np.abs(mixed.std(axis=(1, 2, 3)) - a.std()) < 0.1 * a.std())
    assert np.array_equal(blend_frames(a, a), a)


def test_stereo_music_has_two_channels_and_joins_the_same_way(music):
    """Stereo checkpoints (musicgen-stereo-*): a mono codec, 8 codebooks (one set per channel, delayed in pairs)."""
    from transformers import GenerationConfig, MusicgenConfig, MusicgenForConditionalGeneration

    from tunereel import tiny

    config = MusicgenConfig(
        text_encoder={**tiny.MUSICGEN_TEXT_ENCODER, "vocab_size": len(music.processor.tokenizer)},
        audio_encoder=tiny.MUSICGEN_AUDIO_ENCODER,
        decoder={**tiny.MUSICGEN_DECODER, "num_codebooks": 8, "audio_channels": 2},
    )
    model = MusicgenForConditionalGeneration(config).eval()
    tiny.make_codec_audible(model.audio_encoder)
    model.generation_config = GenerationConfig(**tiny.MUSICGEN_GENERATION)
    stereo = MusicPipeline(model, music.processor, model_id="tiny-stereo", max_seconds=3.0, prompt_seconds=1.0,
                           crossfade_seconds=0.1, join_margin_seconds=0.2)  # fmt: skip
    assert stereo.channels == 2 and stereo.max_delay == 3
    fades = []
    original = music_module.crossfade
    music_module.crossfade = lambda a, b: (fades.append((a, b)), original(a, b))[1]
    try:
        pieces = list(stereo.stream("pop", 5.5, seed=3))
    finally:
        music_module.crossfade = original
    audio = np.concatenate([p.audio for p in pieces])
    assert audio.shape == (round(5.5 * RATE), 2)
    assert len(fades) == 2 and all(np.abs(a - b).max() < 1e-3 * np.abs(a).max() for a, b in fades)


@pytest.mark.parametrize("latent_frames", [1, 2, 5, 33])
def test_bounded_decode_gives_diffusers_framewise_decode_exactly(video, latent_frames):
    """The video service decodes tile by tile straight to uint8 (flat memory); the frames are those of diffusers' own
    temporal tiling (use_framewise_decoding), bit for bit."""
    import torch

    from tunereel.video.pipeline import to_uint8

    vae = video.pipe.vae
    z = torch.randn(1, vae.config.latent_channels, latent_frames, 2, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        mine = vae.decode(z, None, return_dict=False)[0].permute(0, 2, 3, 4, 1)
        vae.use_framewise_decoding = True
        try:
            reference = to_uint8(vae.decode.original(z, None, return_dict=False)[0])
        finally:
            vae.use_framewise_decoding = False
    assert mine.dtype == torch.uint8 and mine.shape == reference.shape == (1, (latent_frames - 1) * 8 + 1, 64, 96, 3)
    assert torch.equal(mine, reference)
