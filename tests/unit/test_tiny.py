"""Tiny random-weight models: they build offline, load back through `from_pretrained`, and behave like the real ones
where the rest of the system depends on it (audio length per token, frame rate, video shapes, seeding)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tunereel import tiny

PROMPT = "pop, upbeat, 120 bpm, with piano and drums"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return tiny.ensure_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def musicgen(models):
    from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

    model = MusicgenForConditionalGeneration.from_pretrained(models["musicgen"])
    processor = MusicgenProcessor.from_pretrained(models["musicgen"])
    return model, processor


@pytest.fixture(scope="module")
def ltx(models):
    from diffusers import LTXPipeline

    pipe = LTXPipeline.from_pretrained(models["ltx"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate_audio(musicgen, max_new_tokens: int, seed: int = 0, prompt: str = PROMPT) -> torch.Tensor:
    model, processor = musicgen
    inputs = processor(text=[prompt], padding=True, return_tensors="pt")
    torch.manual_seed(seed)
    return model.generate(**inputs, max_new_tokens=max_new_tokens)


def _video(pipe, width=64, height=64, num_frames=9, seed=0) -> np.ndarray:
    return pipe(
        prompt="a neon city at night, aerial shot",
        width=width,
        height=height,
        num_frames=num_frames,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
    ).frames


# --- MusicGen ---------------------------------------------------------------------------------------------------


def test_musicgen_matches_real_layout(musicgen):
    model, processor = musicgen
    audio_cfg, decoder_cfg = model.config.audio_encoder, model.config.decoder
    assert audio_cfg.sampling_rate == processor.feature_extractor.sampling_rate == 32000
    assert audio_cfg.frame_rate == 50
    assert decoder_cfg.num_codebooks == model.audio_encoder.quantizer.get_num_quantizers_for_bandwidth(2.2) == 4
    assert decoder_cfg.audio_channels == 1
    assert decoder_cfg.pad_token_id == decoder_cfg.bos_token_id == audio_cfg.codebook_size == decoder_cfg.vocab_size
    gen = model.generation_config
    assert gen.do_sample and gen.guidance_scale == 3.0 and gen.max_length == 1500


def test_tokenizer_maps_unknown_words_to_unk(musicgen):
    tokenizer = musicgen[1].tokenizer
    assert type(tokenizer).__name__ == "T5Tokenizer"
    ids = tokenizer("pop zzzqx upbeat").input_ids
    assert tokenizer.unk_token_id in ids and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "▁pop"


@pytest.mark.parametrize("max_new_tokens", [10, 53, 103])
def test_musicgen_samples_per_token(musicgen, max_new_tokens):
    # 640 samples per frame (32 kHz / 50 Hz); the codebook delay pattern costs num_codebooks - 1 = 3 frames.
    audio = _generate_audio(musicgen, max_new_tokens)
    assert audio.shape == (1, 1, (max_new_tokens - 3) * 640)


def test_musicgen_is_seeded_noise(musicgen):
    a = _generate_audio(musicgen, 28, seed=1)
    b = _generate_audio(musicgen, 28, seed=1)
    c = _generate_audio(musicgen, 28, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all() and 0.01 < a.std() < 0.5 and a.abs().max() < 1.0


def test_musicgen_build_is_deterministic(models, tmp_path):
    from safetensors.torch import load_file

    again = load_file(tiny.build_tiny_musicgen(tmp_path / "again") / "model.safetensors")
    first = load_file(models["musicgen"] / "model.safetensors")
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)


# --- LTX-Video --------------------------------------------------------------------------------------------------


def test_ltx_keeps_real_compression(ltx):
    assert ltx.vae_spatial_compression_ratio == 32
    assert ltx.vae_temporal_compression_ratio == 8
    assert ltx.tokenizer.model_max_length == 128
    assert ltx.scheduler.config.use_dynamic_shifting


@pytest.mark.parametrize("width,height,num_frames", [(64, 64, 9), (96, 64, 17)])
def test_ltx_output_shape(ltx, width, height, num_frames):
    frames = _video(ltx, width, height, num_frames)
    assert frames.shape == (1, num_frames, height, width, 3)


def test_ltx_is_seeded_noise(ltx):
    a, b, c = _video(ltx, seed=0), _video(ltx, seed=0), _video(ltx, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isfinite(a).all() and a.std() > 0.05  # not constant, not NaN
    assert np.abs(np.diff(a[0], axis=0)).mean() > 0.01  # consecutive frames differ


# --- ensure_tiny_models -----------------------------------------------------------------------------------------


def test_ensure_returns_complete_folders(models):
    assert set(models) == {"musicgen", "ltx", "ace-step", "ltx2"}
    assert models["musicgen"].name == tiny.MUSICGEN_DIRNAME and models["ltx"].name == tiny.LTX_DIRNAME
    assert (models["musicgen"] / "model.safetensors").exists()
    assert (models["ltx"] / "model_index.json").exists()
    assert (models["ace-step"] / "model_index.json").exists() and (models["ltx2"] / "audio_vae").is_dir()
    assert not [p for p in models["ltx"].parent.iterdir() if p.name.startswith(".")]  # no temp folders left


@pytest.fixture
def fake_builders(monkeypatch):
    """Replace the real builders with instant ones that record their calls."""
    calls = []

    def builder(name, fail=False):
        def build(out_dir: Path, seed: int = 0) -> Path:
            calls.append(name)
            (out_dir / "weights").write_text(name)
            if fail:
                raise KeyboardInterrupt  # as if the build were killed midway
            return out_dir

        return build

    def install(fail_ltx=False):
        monkeypatch.setattr(
            tiny,
            "_BUILDERS",
            {
                "musicgen": (tiny.MUSICGEN_DIRNAME, builder("musicgen")),
                "ltx": (tiny.LTX_DIRNAME, builder("ltx", fail=fail_ltx)),
            },
        )

    install()
    return calls, install


def test_ensure_is_idempotent(tmp_path, fake_builders, capsys):
    calls, _ = fake_builders
    assert tiny.main(["--models-dir", str(tmp_path)]) == 0
    assert tiny.ensure_tiny_models(tmp_path) == {"musicgen": tmp_path / "tiny-musicgen", "ltx": tmp_path / "tiny-ltx"}
    assert calls == ["musicgen", "ltx"]  # built once
    assert str(tmp_path / "tiny-ltx") in capsys.readouterr().out


def test_killed_build_leaves_nothing_that_looks_complete(tmp_path, fake_builders):
    calls, install = fake_builders
    install(fail_ltx=True)
    with pytest.raises(KeyboardInterrupt):
        tiny.ensure_tiny_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-musicgen"]
    install()
    tiny.ensure_tiny_models(tmp_path)
    assert calls == ["musicgen", "ltx", "ltx"]


def test_foreign_folder_in_the_way_is_an_error(tmp_path, fake_builders):
    (tmp_path / tiny.MUSICGEN_DIRNAME).mkdir()
    (tmp_path / tiny.MUSICGEN_DIRNAME / "half-written").touch()
    with pytest.raises(RuntimeError, match="not a complete"):
        tiny.ensure_tiny_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-musicgen"]
