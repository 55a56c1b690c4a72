"""MP4 muxing (tunereel.composer.muxer): exact lengths, codecs, faststart, interleaving, metadata, loudness after AAC."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.media`, however pytest was started

from tests.media import decode_audio, decode_frames, probe_mp4  # noqa: E402
from tunereel.composer.audio import integrated_lufs, master, master_for_aac, true_peak_dbtp  # noqa: E402
from tunereel.composer.muxer import (  # noqa: E402
    SUPPORTED_METADATA_KEYS,
    AudioSpec,
    Mp4Muxer,
    MuxError,
    MuxResult,
    VideoSpec,
    aac_round_trip,
    encode_mp4,
)

MONO = AudioSpec(32000, 1)
STEREO = AudioSpec(48000, 2)


def frames(n: int, width: int = 64, height: int = 64, seed: int = 0):
    """Lazily generated noise-ish frames (a moving gradient plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        base = ((xx + yy + 4 * i) % 256).astype(np.uint8)
        img = np.stack([base, np.roll(base, i, axis=1), 255 - base], axis=-1)
        yield (img // 2 + rng.integers(0, 128, img.shape, dtype=np.uint8)).astype(np.uint8)


def tone(n_samples: int, spec: AudioSpec, amp: float = 0.3) -> np.ndarray:
    t = np.arange(n_samples) / spec.sample_rate
    x = amp * np.sin(2 * np.pi * 440 * t)
    return np.repeat(x[:, None], spec.channels, axis=1).astype(np.float32)


def samples_for(n_frames: int, fps: int, spec: AudioSpec) -> int:
    return round(n_frames / fps * spec.sample_rate)


def partial_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".partial")]


# ------------------------------------------------------------------------------------------- the main 3 s case
PROVENANCE = json.dumps(
    {"request": {"genre": "lo-fi", "duration_s": 3, "prompt": "rain on a window — 雨"}, "seed": 42,
     "models": {"music": "facebook/musicgen-small", "video": "Lightricks/LTX-Video"}},
    ensure_ascii=False,
)


@pytest.fixture(scope="module")
def main_case(tmp_path_factory):
    path = tmp_path_factory.mktemp("mux") / "main.mp4"
    n, fps = 72, 24
    pcm = tone(samples_for(n, fps, MONO), MONO)
    result = encode_mp4(path, VideoSpec(64, 64, fps), MONO, frames(n), pcm,
                        metadata={"comment": PROVENANCE, "title": "tunereel test"})
    return result, probe_mp4(path), pcm


def test_exact_frame_count_and_duration(main_case):
    result, info, _ = main_case
    assert isinstance(result, MuxResult)
    assert result.frame_count == info["frame_count"] == 72
    assert result.video_duration_s == 3.0
    assert info["video_duration_s"] == pytest.approx(3.0, abs=1e-6)
    assert info["decoded_video_duration_s"] == pytest.approx(3.0, abs=1e-6)
    assert info["fps"] == pytest.approx(24.0)
    assert result.size_bytes == result.path.stat().st_size > 0


def test_codecs_pixel_format_and_faststart(main_case):
    _, info, _ = main_case
    assert (info["video_codec"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", 64, 64)
    assert (info["audio_codec"], info["sample_rate"], info["channels"]) == ("aac", 32000, 1)
    assert info["faststart"] is True
    assert info["top_level_boxes"].index("moov") < info["top_level_boxes"].index("mdat")


def test_audio_length_matches_video(main_case):
    result, info, pcm = main_case
    assert result.audio_samples == pcm.shape[0] == 96000
    # the edit list carries the exact length; decoders may add the rest of the last 1024-sample AAC frame
    assert info["audio_track_duration_s"] == pytest.approx(3.0, abs=1e-3)
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) <= 1 / 24
    assert info["audio_samples"] >= pcm.shape[0]  # the priming was skipped, nothing was cut


def test_metadata_round_trip(main_case):
    _, info, _ = main_case
    assert info["metadata"]["comment"] == PROVENANCE
    assert json.loads(info["metadata"]["comment"])["seed"] == 42
    assert info["metadata"]["title"] == "tunereel test"


def test_every_supported_metadata_key_survives(tmp_path):
    meta = {key: f"value of {key} ✓" for key in sorted(SUPPORTED_METADATA_KEYS)}
    path = tmp_path / "meta.mp4"
    encode_mp4(path, VideoSpec(64, 64, 24), MONO, frames(2), tone(2667, MONO), metadata=meta)
    got = probe_mp4(path)["metadata"]
    assert {k: got.get(k) for k in meta} == meta


def test_unsupported_metadata_key_is_rejected(tmp_path):
    with pytest.raises(MuxError, match="provenance"):
        Mp4Muxer(tmp_path / "x.mp4", VideoSpec(64, 64, 24), MONO, metadata={"provenance": "{}"})
    assert list(tmp_path.iterdir()) == []


def test_audio_matches_the_input(main_case):
    result, _, pcm = main_case
    decoded, rate = decode_audio(result.path)
    assert rate == 32000 and decoded.dtype == np.float32 and decoded.shape[1] == 1
    # priming removed: the decoded audio lines up with the input sample for sample (AAC is lossy: compare loosely)
    n = pcm.shape[0]
    err = decoded[:n] - pcm
    assert np.sqrt(np.mean(err**2)) < 0.01


# ------------------------------------------------------------------------------------------ other shapes/rates
def test_60_frames_48k_stereo(tmp_path):
    n, fps = 60, 24
    pcm = tone(samples_for(n, fps, STEREO), STEREO)
    result = encode_mp4(tmp_path / "b.mp4", VideoSpec(64, 64, fps), STEREO, frames(n), pcm)
    info = probe_mp4(result.path)
    assert info["frame_count"] == result.frame_count == 60
    assert info["video_duration_s"] == pytest.approx(2.5, abs=1e-6)
    assert (info["sample_rate"], info["channels"]) == (48000, 2)
    assert abs(info["audio_duration_s"] - 2.5) <= 1 / fps
    assert info["faststart"]


def test_768x512(tmp_path):
    n, fps = 24, 24
    pcm = tone(samples_for(n, fps, MONO), MONO)
    result = encode_mp4(tmp_path / "big.mp4", VideoSpec(768, 512, fps), MONO, frames(n, 768, 512), pcm)
    info = probe_mp4(result.path)
    assert (info["width"], info["height"], info["pix_fmt"]) == (768, 512, "yuv420p")
    assert info["frame_count"] == 24 and info["video_duration_s"] == pytest.approx(1.0, abs=1e-6)
    assert abs(info["audio_duration_s"] - 1.0) <= 1 / fps


def test_colours_survive(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 255), (0, 0, 0)]
    imgs = [np.full((64, 64, 3), c, np.uint8) for c in colours]
    path = tmp_path / "colours.mp4"
    encode_mp4(path, VideoSpec(64, 64, 24), MONO, imgs, tone(8000, MONO))
    for img, got in zip(imgs, decode_frames(path)):
        assert np.abs(got[16:48, 16:48].astype(int) - img[16:48, 16:48]).max() <= 6


# ------------------------------------------------------------------------------------------------ interleaving
@pytest.mark.parametrize("order", ["audio-first", "video-first", "chunks-interleaved"])
def test_interleaved_whatever_the_arrival_order(tmp_path, order):
    n, fps = 240, 24  # 10 s: beyond FFmpeg's default 10 s max_interleave_delta
    pcm = tone(samples_for(n, fps, MONO), MONO)
    path = tmp_path / f"{order}.mp4"
    with Mp4Muxer(path, VideoSpec(32, 32, fps), MONO) as mux:
        if order == "audio-first":
            for chunk in np.array_split(pcm, 7):
                mux.add_audio(chunk)
            for f in frames(n, 32, 32):
                mux.add_frame(f)
        elif order == "video-first":
            for f in frames(n, 32, 32):
                mux.add_frame(f)
            mux.add_audio(pcm)
        else:
            step = MONO.sample_rate // fps
            for i, f in enumerate(frames(n, 32, 32)):
                mux.add_frame(f)
                mux.add_audio(pcm[i * step:(i + 1) * step])
            mux.add_audio(pcm[n * step:])
    info = probe_mp4(path)
    assert info["frame_count"] == n
    assert abs(info["audio_duration_s"] - 10.0) <= 1 / fps
    assert info["max_interleave_lag_s"] < 0.5, info["max_interleave_lag_s"]


def test_threads_feeding_audio_and_video(tmp_path):
    n, fps = 48, 24
    pcm = tone(samples_for(n, fps, MONO), MONO)
    path = tmp_path / "threads.mp4"
    with Mp4Muxer(path, VideoSpec(32, 32, fps), MONO) as mux:
        t = threading.Thread(target=lambda: [mux.add_audio(c) for c in np.array_split(pcm, 50)])
        t.start()
        for f in frames(n, 32, 32):
            mux.add_frame(f)
        t.join()
    info = probe_mp4(path)
    assert info["frame_count"] == n and abs(info["audio_duration_s"] - 2.0) <= 1 / fps


# ----------------------------------------------------------------------------------------------- errors / files
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 32, 3), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        [[0]],
    ],
    ids=["wrong-size", "rgba", "gray", "float", "list"],
)
def test_wrong_frame_raises_mux_error(tmp_path, bad):
    with Mp4Muxer(tmp_path / "x.mp4", VideoSpec(64, 64, 24), MONO) as mux:
        mux.add_frame(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(MuxError, match=r"frame 1: expected .*\(64, 64, 3\)"):
            mux.add_frame(bad)
        mux.add_audio(tone(1334, MONO))
    assert probe_mp4(tmp_path / "x.mp4")["frame_count"] == 1  # the bad frame was not counted


def test_wrong_audio_raises_mux_error(tmp_path):
    with Mp4Muxer(tmp_path / "x.mp4", VideoSpec(64, 64, 24), STEREO) as mux:
        mux.add_frame(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(MuxError, match="shape"):
            mux.add_audio(np.zeros((100, 1), np.float32))
        with pytest.raises(MuxError, match="NaN"):
            mux.add_audio(np.full((100, 2), np.nan, np.float32))
        mux.add_audio(np.zeros((2000, 2), np.float32))


def test_exception_inside_with_removes_the_partial_file(tmp_path):
    path = tmp_path / "boom.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Muxer(path, VideoSpec(64, 64, 24), MONO) as mux:
            for f in frames(30):
                mux.add_frame(f)
            mux.add_audio(tone(20000, MONO))
            raise RuntimeError("video service went away")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MuxError, match="closed"):
        mux.add_frame(np.zeros((64, 64, 3), np.uint8))


def test_nothing_appears_until_close_and_abort_cleans_up(tmp_path):
    path = tmp_path / "late.mp4"
    mux = Mp4Muxer(path, VideoSpec(64, 64, 24), MONO)
    for f in frames(60):  # enough to get packets past x264's look-ahead, so the file has been opened
        mux.add_frame(f)
    assert not path.exists() and len(partial_files(tmp_path)) == 1
    mux.abort()
    assert list(tmp_path.iterdir()) == []


def test_close_is_idempotent_and_requires_both_streams(tmp_path):
    mux = Mp4Muxer(tmp_path / "a.mp4", VideoSpec(64, 64, 24), MONO)
    mux.add_frame(np.zeros((64, 64, 3), np.uint8))
    mux.add_audio(tone(1334, MONO))
    assert mux.close() is mux.close()

    empty = Mp4Muxer(tmp_path / "b.mp4", VideoSpec(64, 64, 24), MONO)
    empty.add_audio(tone(1334, MONO))
    with pytest.raises(MuxError, match="no video frames"):
        empty.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


@pytest.mark.parametrize(
    "video, audio, kwargs, match",
    [
        (VideoSpec(63, 64, 24), MONO, {}, "even"),
        (VideoSpec(64, 64, 0), MONO, {}, "fps"),
        (VideoSpec(64, 64, 24), AudioSpec(12345, 1), {}, "sample_rate"),
        (VideoSpec(64, 64, 24), AudioSpec(32000, 6), {}, "channels"),
        (VideoSpec(64, 64, 24), MONO, {"preset": "warp"}, "preset"),
        (VideoSpec(64, 64, 24), MONO, {"crf": 99}, "crf"),
    ],
)
def test_bad_settings_raise_mux_error(tmp_path, video, audio, kwargs, match):
    with pytest.raises(MuxError, match=match):
        Mp4Muxer(tmp_path / "x.mp4", video, audio, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_raises_mux_error(tmp_path):
    with pytest.raises(MuxError, match="directory"):
        Mp4Muxer(tmp_path / "nope" / "x.mp4", VideoSpec(64, 64, 24), MONO)


# -------------------------------------------------------------------------------------- loudness through AAC
def _signals(spec: AudioSpec, seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = int(seconds * spec.sample_rate)
    t = np.arange(n) / spec.sample_rate
    mono = {
        "noise": rng.standard_normal(n) * 0.3,
        "sine": 0.5 * np.sin(2 * np.pi * 997 * t),
        "square": 0.95 * np.tanh(20 * np.sin(2 * np.pi * 220 * t)),
    }
    return {k: np.repeat(v[:, None], spec.channels, axis=1).astype(np.float32) for k, v in mono.items()}


@pytest.mark.parametrize("kind", ["noise", "sine", "square"])
def test_mastered_audio_after_aac(tmp_path, kind):
    n, fps = 72, 24
    x = _signals(MONO)[kind][: samples_for(n, fps, MONO)]
    y = master(x, MONO.sample_rate)
    assert integrated_lufs(y, 32000) == pytest.approx(-14.0, abs=0.5)
    assert true_peak_dbtp(y, 32000) <= -1.0
    result = encode_mp4(tmp_path / f"{kind}.mp4", VideoSpec(64, 64, fps), MONO, frames(n), y)
    decoded, rate = decode_audio(result.path)
    assert integrated_lufs(decoded, rate) == pytest.approx(-14.0, abs=1.0)
    assert true_peak_dbtp(decoded, rate) <= -1.0


def test_aac_round_trip_predicts_the_muxed_audio_exactly(tmp_path):
    n, fps = 48, 24
    y = master(_signals(MONO)["noise"][: samples_for(n, fps, MONO)], 32000)
    result = encode_mp4(tmp_path / "rt.mp4", VideoSpec(64, 64, fps), MONO, frames(n), y)
    decoded, _ = decode_audio(result.path)
    predicted = aac_round_trip(y, MONO)
    assert predicted.shape == y.shape
    np.testing.assert_array_equal(decoded[: y.shape[0]], predicted)


def test_master_for_aac_holds_the_peak_on_hard_material(tmp_path):
    # limited white-noise bursts in 48 kHz stereo overshoot by >2 dB through AAC; master_for_aac corrects for it
    rng = np.random.default_rng(11)
    n_frames, fps = 72, 24
    n = samples_for(n_frames, fps, STEREO)
    x = rng.standard_normal((n, 2)) * 0.01
    env = np.exp(-np.arange(3840) / 720.0)[:, None]
    for start in range(0, n - 3840, 12000):
        x[start:start + 3840] += rng.standard_normal((3840, 2)) * 0.5 * env
    y = master_for_aac(x.astype(np.float32), STEREO)
    result = encode_mp4(tmp_path / "hard.mp4", VideoSpec(64, 64, fps), STEREO, frames(n_frames), y)
    decoded, rate = decode_audio(result.path)
    assert true_peak_dbtp(decoded, rate) <= -1.0
    assert integrated_lufs(decoded, rate) == pytest.approx(-14.0, abs=1.0)


def test_master_for_aac_silence():
    z = np.zeros((16000, 1), np.float32)
    assert not np.any(master_for_aac(z, MONO))
