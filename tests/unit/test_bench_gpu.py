"""bench/gpu.py runs end to end on the CPU at tiny sizes (so it cannot rot), for every memory mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tunereel.memory import MEMORY_MODES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_stage_per_mode(bench, capsys):
    rows = bench.main(["--tiny", "--device", "cpu", "--preset", "ltx-13b-distilled", "--width", "64", "--height", "64",
                       "--frames", "9", "--modes", ",".join(MEMORY_MODES)])  # fmt: skip
    assert [r["mode"] for r in rows] == list(MEMORY_MODES)
    for row in rows:
        assert "error" not in row, row
        assert row["frames"] == 9 and row["steps"] == 8  # the distilled schedule's 8 steps
        for stage in ("text_encode_s", "denoise_s", "decode_s"):
            assert 0 < row[stage] <= row["total_s"]
        assert row["fps"] == pytest.approx(9 / row["total_s"], rel=0.02)
    assert "| ltx-13b-distilled | group-offload | 64x64 | 9 | 8 |" in capsys.readouterr().out


def test_full_size_configs_are_the_published_architectures(bench):
    assert bench.LTX_TRANSFORMER_2B["num_layers"] == 28 and bench.LTX_TRANSFORMER_13B["num_layers"] == 48
    assert bench.T5_XXL["d_model"] == 4096 and bench.T5_XXL["num_layers"] == 24
    from diffusers import LTXVideoTransformer3DModel
    from accelerate import init_empty_weights

    with init_empty_weights():
        params = sum(p.numel() for p in LTXVideoTransformer3DModel(**bench.LTX_TRANSFORMER_13B).parameters())
    assert 12.5e9 < params < 14.5e9  # "13B"


def test_tiny_run_covers_ltx2_and_ace_step(bench):
    """The LTX-2 and ACE-Step presets through the services' own pipelines, random weights from the tiny builds'
    configs (the same code path builds the full-size models from the published repositories' configs)."""
    rows = bench.main(["--tiny", "--device", "cpu", "--preset", "ltx-2.5", "--width", "64", "--height", "64",
                       "--frames", "9", "--modes", "full", "--music-preset", "ace-step-xl-turbo",
                       "--music-seconds", "2"])  # fmt: skip
    video, music = rows
    assert "error" not in video and video["preset"] == "ltx-2.5" and video["frames"] == 9 and video["steps"] == 8
    assert 0 < video["denoise_s"] <= video["total_s"]
    assert music["kind"] == "music" and music["seconds"] == 2.0 and music["steps"] == 8
    assert 0 < music["denoise_s"] <= music["total_s"] and music["realtime_factor"] > 0


def test_tiny_run_covers_musicgen_windows(bench):
    """A MusicGen preset through the music service's own MusicPipeline: stages, windows, real-time factor, in both
    of the music service's memory modes (the video modes that offload map to its model offload)."""
    rows = bench.main(["--tiny", "--device", "cpu", "--preset", "ltx-2b-distilled", "--width", "64", "--height", "64",
                       "--frames", "9", "--modes", "full,fp8", "--music-preset", "small", "--music-seconds", "2"])  # fmt: skip
    music = [r for r in rows if r["kind"] == "music"]
    assert [r["mode"] for r in music] == ["full", "model-offload"]
    for row in music:
        assert "error" not in row, row
        assert row["seconds"] == 2.0 and len(row["windows_s"]) == 1  # 2 s is one window
        for stage in ("text_encode_s", "denoise_s", "decode_s"):
            assert 0 < row[stage] <= row["total_s"]
        assert row["realtime_factor"] == pytest.approx(2.0 / row["total_s"], rel=0.02)


def test_full_size_musicgen_decoders_are_the_published_sizes(bench):
    assert bench.MUSICGEN_DECODERS["small"] == (1024, 24, 16, 4096)  # musicgen-small's decoder (~300M with T5-base)
    assert bench.MUSICGEN_DECODERS["large"][:3] == (2048, 48, 32)
