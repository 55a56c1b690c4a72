"""services/music/acceleration.py: what it changes, that output length and determinism hold, and the off switch.

No timings here (bench/music_speed.py measures speed); these check behaviour on the tiny model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

from tunereel.music import acceleration
from tunereel.music.acceleration import ENV_VAR, accelerate, applied

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_dir(models_dir):
    return models_dir / "tiny-musicgen"


@pytest.fixture(scope="module")
def inputs(tiny_dir):
    return MusicgenProcessor.from_pretrained(tiny_dir)(text=["jazz, calm piano"], padding=True, return_tensors="pt")


def _load(tiny_dir):
    return MusicgenForConditionalGeneration.from_pretrained(tiny_dir).eval()


def _generate(model, inputs, steps=60, seed=5, **kwargs):
    torch.manual_seed(seed)
    with torch.inference_mode():
        return model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=steps, **kwargs)


def _float_linears(module: nn.Module) -> int:
    return sum(type(m) is nn.Linear for m in module.modules())


def test_cpu_default_quantizes_every_decoder_linear_and_nothing_else(tiny_dir):
    model = accelerate(_load(tiny_dir), CPU, "auto")
    assert applied(model) == ("int8", "kv-growth")
    assert _float_linears(model.decoder) == 0  # attention, feed-forward and the codebook heads
    quantized = [m for m in model.decoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == 2 * (4 + 4 + 2) + 4  # 2 layers x (self q/k/v/o + cross q/k/v/o + fc1/fc2) + 4 heads
    assert _float_linears(model.text_encoder) > 0  # T5 runs once per request: left in float32
    assert all(p.dtype == torch.float32 for p in model.audio_encoder.parameters())  # EnCodec stays float32
    assert model.device.type == "cpu"


def test_same_seed_gives_bit_identical_audio_and_the_same_length(tiny_dir, inputs):
    plain = _generate(_load(tiny_dir), inputs)
    model = accelerate(_load(tiny_dir), CPU, "auto")
    a, b = _generate(model, inputs), _generate(model, inputs)
    assert a.shape == b.shape == plain.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, _generate(model, inputs, seed=6))


def test_kv_growth_changes_no_output(tiny_dir, inputs):
    """The in-place cache is a memory layout change only: the same tokens, hence the same audio, as transformers'."""
    plain = _generate(_load(tiny_dir), inputs, steps=300)  # longer than the first buffer (256): it must grow
    grown = _generate(accelerate(_load(tiny_dir), CPU, "kv-growth"), inputs, steps=300)
    assert torch.equal(plain, grown)


def test_kv_growth_with_an_audio_prompt_matches(tiny_dir, inputs):
    """Windowed continuation prefills many positions at once (the audio prompt's codes): the cache must take them."""
    prompt = torch.full((4, 40), 7, dtype=torch.long)
    prompt[:, ::3] = 11
    plain = _generate(_load(tiny_dir), inputs, steps=50, decoder_input_ids=prompt)
    grown = _generate(accelerate(_load(tiny_dir), CPU, "kv-growth"), inputs, steps=50, decoder_input_ids=prompt)
    assert torch.equal(plain, grown)


def test_int8_stays_close_to_float32(tiny_dir, inputs):
    """Teacher-forced logits of the int8 decoder against float32 on the same codes: a small relative error."""
    ref, fast = _load(tiny_dir), accelerate(_load(tiny_dir), CPU, "int8")
    codes = torch.randint(0, 2048, (4, 30))
    with torch.inference_mode():
        a = ref(**inputs, decoder_input_ids=codes).logits
        b = fast(**inputs, decoder_input_ids=codes).logits
    assert a.shape == b.shape
    assert (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a)).item() < 0.05


def test_off_and_non_cpu_devices_change_nothing(tiny_dir, monkeypatch):
    model = _load(tiny_dir)
    linears = _float_linears(model)
    assert applied(accelerate(model, CPU, "off")) == ()
    assert _float_linears(model) == linears
    assert applied(accelerate(model, torch.device("cuda"), "auto")) == ()  # never touches an accelerator's model
    monkeypatch.setenv(ENV_VAR, "off")
    assert applied(accelerate(model, CPU)) == ()
    assert _float_linears(model) == linears
    monkeypatch.setenv(ENV_VAR, "int8")
    assert applied(accelerate(model, CPU)) == ("int8",)


def test_unknown_setting_is_an_error(tiny_dir):
    with pytest.raises(ValueError, match="unknown"):
        accelerate(_load(tiny_dir), CPU, "int4")


def test_missing_kernels_skip_with_a_warning(tiny_dir, monkeypatch, caplog):
    def no_kernels(model):
        raise RuntimeError("no quantized engine in this PyTorch build")

    monkeypatch.setattr(acceleration, "_quantize_decoder_int8", no_kernels)
    model = accelerate(_load(tiny_dir), CPU, "auto")
    assert applied(model) == ("kv-growth",)
    assert "skipped" in caplog.text


def test_the_music_service_runs_the_accelerated_model(models_dir, monkeypatch):
    """MusicPipeline.from_preset is the one place models are loaded: what the service serves is accelerated."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    from tunereel.music.pipeline import MusicPipeline
    from tunereel.presets import music_preset

    pipeline = MusicPipeline.from_preset(music_preset("tiny"), models_dir)
    assert applied(pipeline.model) == ("int8", "kv-growth")
    out = pipeline("pop, upbeat", 1.0, seed=3)
    assert out.audio.shape == (pipeline.num_samples(1.0), 1)
    assert np.isfinite(out.audio).all()
