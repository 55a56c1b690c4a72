"""Conformance of every video preset: loaded by its hub id from a fake Hugging Face cache laid out as the published
repository (tunereel.tiny.write_fake_hub_cache, offline), run on a short request, and checked for what actually
reaches diffusers: the pipeline class, the scheduler's timesteps and sigmas, guidance (+ rescale), the decode
timestep and noise, the prompt's token length, the dtype, for the first pass and a continuation pass.

The expected values are written out here from the documents (not read from tunereel.presets), so a change to a
preset's settings fails this test:
  [diffusers] huggingface/diffusers docs/source/en/api/pipelines/ltx_video.md
  [ltx-cfg]   Lightricks/LTX-Video configs/ltxv-*.yaml
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXImageToVideoPipeline,
    LTXLatentUpsamplePipeline,
    LTXPipeline,
)
from diffusers.pipelines.ltx.pipeline_ltx_condition import linear_quadratic_schedule

from tunereel.loading import pick_dtype
from tunereel.presets import DEFAULT_GPU_VIDEO_PRESET, VIDEO_PRESETS, video_preset
from tunereel.tiny import write_fake_hub_cache
from tunereel.video.pipeline import VideoPipeline

DISTILLED = [1000, 993, 987, 981, 975, 909, 725, 0.03]  # [diffusers] 0.9.7 / 0.9.8 distilled examples
REFINE = [1000, 909, 725, 421, 0]  # [diffusers] "Upscaling" timesteps of the distilled models

EXPECTED = {
    # name: first-pass class, continuation class, steps, timesteps, guidance, rescale, decode t, decode noise, tokens
    # (2B dev: [ltx-cfg]'s rescaling_scale applies with STG only, which diffusers does not run: no rescale)
    "ltx-2b": dict(first=LTXPipeline, cont=LTXImageToVideoPipeline, steps=40, timesteps=None, guidance=3.0,
                   rescale=0.0, decode_t=0.0, decode_noise=None, tokens=128, vae_timestep=False),  # [ltx-cfg] 2b-0.9
    "ltx-2b-0.9.5": dict(first=LTXConditionPipeline, cont=LTXConditionPipeline, steps=40, timesteps=None,
                         guidance=3.0, rescale=0.0, decode_t=0.05, decode_noise=0.025, tokens=256,
                         vae_timestep=True),  # [ltx-cfg] 2b-0.9.5
    "ltx-2b-distilled": dict(first=LTXConditionPipeline, cont=LTXConditionPipeline, steps=8, timesteps=DISTILLED,
                             guidance=1.0, rescale=0.7, decode_t=0.05, decode_noise=0.025, tokens=256,
                             vae_timestep=True),  # [diffusers] 0.9.8 distilled
    "ltx-13b": dict(first=LTXConditionPipeline, cont=LTXConditionPipeline, steps=30, timesteps=None, guidance=5.0,
                    rescale=0.7, decode_t=0.05, decode_noise=0.025, tokens=256, vae_timestep=True),  # [diffusers]
    "ltx-13b-distilled": dict(first=LTXConditionPipeline, cont=LTXConditionPipeline, steps=8, timesteps=DISTILLED,
                              guidance=1.0, rescale=0.7, decode_t=0.05, decode_noise=0.025, tokens=256,
                              vae_timestep=True),  # [diffusers] 0.9.7 distilled
    "ltx-13b-0.9.8-distilled": dict(first=LTXConditionPipeline, cont=LTXConditionPipeline, steps=8,
                                    timesteps=DISTILLED, guidance=1.0, rescale=0.7, decode_t=0.05,
                                    decode_noise=0.025, tokens=256, vae_timestep=True),  # [diffusers] 0.9.8
}
HUB_IDS = {
    "ltx-2b": "Lightricks/LTX-Video",
    "ltx-2b-0.9.5": "Lightricks/LTX-Video-0.9.5",
    "ltx-2b-distilled": "Lightricks/LTX-Video",  # + ltxv-2b-0.9.8-distilled.safetensors
    "ltx-13b": "Lightricks/LTX-Video-0.9.7-dev",
    "ltx-13b-distilled": "Lightricks/LTX-Video-0.9.7-distilled",
    "ltx-13b-0.9.8-distilled": "Lightricks/LTX-Video-0.9.8-13B-distilled",
}


def test_every_hub_preset_is_covered():
    # LTX-2 presets: tests/unit/test_family_presets.py
    assert set(EXPECTED) == {name for name, p in VIDEO_PRESETS.items() if not p.source.startswith("local:") and p.family == "ltx"}
    for name, repo in HUB_IDS.items():
        assert VIDEO_PRESETS[name].source == repo
    assert VIDEO_PRESETS["ltx-2b-distilled"].single_file == "ltxv-2b-0.9.8-distilled.safetensors"
    assert DEFAULT_GPU_VIDEO_PRESET in VIDEO_PRESETS
    for preset in VIDEO_PRESETS.values():
        assert preset.license and preset.docs
        if preset.source == "Lightricks/LTX-Video":  # never the whole repo with its many single-file checkpoints
            assert preset.allow_patterns and "*" not in preset.allow_patterns


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    return write_fake_hub_cache(tmp_path_factory.mktemp("hf-hub"))


@pytest.fixture
def offline_hub(fake_hub, monkeypatch):
    import huggingface_hub.constants as constants

    cache = next(iter(fake_hub.values())).parents[2]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


class Spy:
    """Records what reaches diffusers: pipeline calls (class, arguments), the scheduler's timesteps and sigmas,
    the T5 input length, the transformer's batch (2 = classifier-free guidance), the VAE decode's timestep."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[type, dict]] = []
        self.schedules: list[dict] = []
        for cls in (LTXPipeline, LTXConditionPipeline, LTXImageToVideoPipeline, LTXLatentUpsamplePipeline):
            original = cls.__call__

            def call(pipe, *args, _original=original, _cls=cls, **kwargs):
                self.calls.append((_cls, kwargs))
                return _original(pipe, *args, **kwargs)

            monkeypatch.setattr(cls, "__call__", call)
        set_timesteps = FlowMatchEulerDiscreteScheduler.set_timesteps

        @functools.wraps(set_timesteps)  # diffusers inspects its signature for `timesteps` / `sigmas`
        def recorded(scheduler, *args, **kwargs):
            set_timesteps(scheduler, *args, **kwargs)
            self.schedules.append(dict(kwargs, result_timesteps=scheduler.timesteps.tolist(),
                                       result_sigmas=scheduler.sigmas.tolist()))  # fmt: skip

        monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "set_timesteps", recorded)
        self.token_lengths: list[int] = []
        self.batches: list[int] = []
        self.decode_temb: list = []

    def attach(self, pipeline: VideoPipeline):
        pipe = pipeline.pipe
        pipe.text_encoder.register_forward_hook(lambda m, args, kwargs, out: self.token_lengths.append(
            (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]), with_kwargs=True)  # fmt: skip
        pipe.transformer.register_forward_hook(lambda m, args, kwargs, out: self.batches.append(
            kwargs["hidden_states"].shape[0]), with_kwargs=True)  # fmt: skip
        decode = pipe.vae.decode

        def recorded_decode(z, temb=None, return_dict=True):
            self.decode_temb.append(None if temb is None else temb.tolist())
            return decode(z, temb, return_dict=return_dict)

        pipe.vae.decode = recorded_decode


def _continuing(name: str):
    """The preset with passes of 17 frames, so 25 frames are a first pass and one continuation pass."""
    return dataclasses.replace(video_preset(name), max_frames=17, overlap_frames=1, blend_frames=0)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_runs_as_documented(name, offline_hub, monkeypatch):
    want = EXPECTED[name]
    spy = Spy(monkeypatch)
    pipeline = VideoPipeline.from_preset(_continuing(name))  # by hub id, from the fake cache
    spy.attach(pipeline)
    assert pipeline.model_id == HUB_IDS[name]
    assert isinstance(pipeline.pipe, want["first"])
    assert pipeline.pipe.transformer.dtype == torch.float32  # the CPU runs float32 ...
    assert pick_dtype(video_preset(name).dtype, torch.device("cuda")) == torch.bfloat16  # ... a GPU the docs' bf16
    assert pipeline.pipe.vae.config.timestep_conditioning is want["vae_timestep"]

    frames = pipeline("a city at night", width=64, height=64, num_frames=25, fps=24, seed=3).frames
    assert frames.shape == (25, 64, 64, 3)

    assert [cls for cls, _ in spy.calls] == [want["first"], want["cont"]]
    first, cont = (kwargs for _, kwargs in spy.calls)
    assert "conditions" not in first and "image" not in first  # text only: no conditions
    assert ("conditions" in cont) or ("image" in cont)
    for kwargs in (first, cont):
        assert kwargs["guidance_scale"] == want["guidance"]
        assert kwargs["guidance_rescale"] == want["rescale"]
        assert kwargs["decode_timestep"] == want["decode_t"]
        assert kwargs["decode_noise_scale"] == want["decode_noise"]
        assert kwargs["max_sequence_length"] == want["tokens"]
        if want["timesteps"]:
            assert kwargs["timesteps"] == want["timesteps"]
        else:
            assert kwargs["num_inference_steps"] == want["steps"]
    # T5 sees the prompt (and, with guidance, the negative prompt) padded to the preset's length, in both passes
    assert spy.token_lengths == [want["tokens"]] * (2 if want["guidance"] > 1 else 1) * 2
    assert set(spy.batches) == {2 if want["guidance"] > 1 else 1}  # CFG doubles the batch, distilled models don't

    # The schedule that reached the scheduler, for both passes.
    assert len(spy.schedules) == 2
    for schedule in spy.schedules:
        if want["timesteps"]:
            assert schedule["result_timesteps"] == pytest.approx(want["timesteps"])
            assert schedule["result_sigmas"] == pytest.approx([t / 1000 for t in want["timesteps"]] + [0.0], abs=1e-6)
        elif want["first"] is LTXConditionPipeline:
            expected = (linear_quadratic_schedule(want["steps"]) * 1000).tolist()
            assert schedule["result_timesteps"] == pytest.approx(expected, rel=1e-5)
            assert schedule["result_sigmas"][:-1] == pytest.approx([t / 1000 for t in expected], rel=1e-5)
    if want["first"] is LTXPipeline:  # 0.9.0: uniform sigmas with the resolution-dependent shift (mu)
        assert len(spy.schedules[0]["sigmas"]) == want["steps"] and spy.schedules[0]["mu"] is not None

    # What the VAE decoded at: the decode timestep for the timestep-conditioned VAEs, nothing for 0.9.0.
    expected_temb = [want["decode_t"]] if want["vae_timestep"] else None
    assert len(spy.decode_temb) == 2
    for temb in spy.decode_temb:
        assert temb == (pytest.approx(expected_temb) if expected_temb else None)


FINAL = {
    # name: refine schedule, denoise strength, adain, tone map  ([diffusers] multi-scale examples)
    "ltx-13b": dict(refine_steps=10, refine_timesteps=None, strength=0.4, adain=0.0, tone=0.0),
    "ltx-13b-distilled": dict(refine_steps=None, refine_timesteps=REFINE, strength=0.999, adain=1.0, tone=0.0),
    "ltx-13b-0.9.8-distilled": dict(refine_steps=None, refine_timesteps=REFINE, strength=0.999, adain=1.0, tone=0.6),
}


@pytest.mark.parametrize("name", list(FINAL))
def test_final_quality_is_the_documented_multi_scale_flow(name, offline_hub, monkeypatch):
    want, base = FINAL[name], EXPECTED[name]
    spy = Spy(monkeypatch)
    pipeline = VideoPipeline.from_preset(video_preset(name), quality="final")
    assert pipeline.quality == "final"
    assert video_preset(name).upsampler == "Lightricks/ltxv-spatial-upscaler-0.9.7"
    frames = pipeline("a city at night", width=96, height=64, num_frames=9, fps=24, seed=3).frames
    assert frames.shape == (9, 64, 96, 3)  # resized back to the request
    classes = [cls for cls, _ in spy.calls]
    assert classes == [LTXConditionPipeline, LTXLatentUpsamplePipeline, LTXConditionPipeline]
    low, up, refine = (kwargs for _, kwargs in spy.calls)
    # 1. generate at 2/3 of the size (rounded down to 32) as latents
    assert (low["width"], low["height"], low["output_type"]) == (64, 32, "latent")  # 96·2/3 = 64, 64·2/3 → 32
    # 2. upsample the latents 2x
    assert (up["adain_factor"], up["tone_map_compression_ratio"], up["output_type"]) == (want["adain"], want["tone"], "latent")
    # 3. refine at twice the small size, with the same guidance / decode settings, and decode
    assert (refine["width"], refine["height"]) == (128, 64) and refine["latents"] is not None
    assert refine["denoise_strength"] == want["strength"]
    if want["refine_timesteps"]:
        assert refine["timesteps"] == want["refine_timesteps"]
    else:
        assert refine["num_inference_steps"] == want["refine_steps"]
    for kwargs in (low, refine):
        assert kwargs["guidance_scale"] == base["guidance"] and kwargs["guidance_rescale"] == base["rescale"]
        assert kwargs["decode_timestep"] == 0.05 and kwargs["decode_noise_scale"] == 0.025
        assert kwargs["max_sequence_length"] == 256


def test_final_quality_continuation_conditions_both_scales(offline_hub, monkeypatch):
    """A long video in quality "final": every segment runs the three steps; a continuation's small and refine passes
    are both conditioned on the previous segment's last frames."""
    spy = Spy(monkeypatch)
    pipeline = VideoPipeline.from_preset(_continuing("ltx-13b-distilled"), quality="final")
    frames = pipeline("a city at night", width=64, height=64, num_frames=25, fps=24, seed=3).frames
    assert frames.shape == (25, 64, 64, 3)
    assert [cls for cls, _ in spy.calls] == [LTXConditionPipeline, LTXLatentUpsamplePipeline, LTXConditionPipeline] * 2
    passes = [kwargs for cls, kwargs in spy.calls if cls is LTXConditionPipeline]
    assert ["conditions" in kwargs for kwargs in passes] == [False, False, True, True]
    assert [kwargs.get("timesteps") for kwargs in passes] == [DISTILLED, REFINE, DISTILLED, REFINE]


def test_distilled_preset_refuses_another_step_count(offline_hub):
    from tunereel.video.pipeline import InvalidVideoInput

    pipeline = VideoPipeline.from_preset(video_preset("ltx-2b-distilled"))
    with pytest.raises(InvalidVideoInput, match="num_inference_steps"):
        pipeline("a city", width=64, height=64, num_frames=9, fps=24, seed=1, num_inference_steps=20)


def test_missing_weights_say_which_download(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from tunereel.loading import ModelMissing

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelMissing) as error:
        VideoPipeline.from_preset(video_preset("ltx-2b-distilled"))
    message = str(error.value)
    assert "hf download Lightricks/LTX-Video --include ltxv-2b-0.9.8-distilled.safetensors" in message
    assert "hf download Lightricks/LTX-Video-0.9.5" in message and '"text_encoder/*"' in message


def test_fake_cache_is_laid_out_as_the_published_repositories(fake_hub):
    """models--ORG--NAME/snapshots/REV + refs/main; the pipeline class, scheduler and VAE of each release as
    diffusers' conversion script writes them; only what the presets' `hf download --include` patterns fetch."""
    import json

    expected = {  # repo: (model_index class, dynamic shifting, shift_terminal, timestep-conditioned VAE)
        "Lightricks/LTX-Video": ("LTXPipeline", True, 0.1, False),
        "Lightricks/LTX-Video-0.9.5": ("LTXPipeline", False, None, True),
        "Lightricks/LTX-Video-0.9.7-dev": ("LTXConditionPipeline", False, None, True),
        "Lightricks/LTX-Video-0.9.7-distilled": ("LTXConditionPipeline", False, None, True),
        "Lightricks/LTX-Video-0.9.8-13B-distilled": ("LTXConditionPipeline", False, None, True),
    }
    for repo, (cls, dynamic, terminal, timestep_vae) in expected.items():
        snapshot = fake_hub[repo]
        assert (snapshot.parents[1] / "refs" / "main").read_text() == snapshot.name
        assert json.loads((snapshot / "model_index.json").read_text())["_class_name"] == cls
        scheduler = json.loads((snapshot / "scheduler" / "scheduler_config.json").read_text())
        assert scheduler["use_dynamic_shifting"] is dynamic and scheduler["shift_terminal"] == terminal
        assert json.loads((snapshot / "vae" / "config.json").read_text())["timestep_conditioning"] is timestep_vae
    root = fake_hub["Lightricks/LTX-Video"]
    assert (root / "ltxv-2b-0.9.8-distilled.safetensors").is_file()
    assert not (root / "ltx-video-2b-v0.9.safetensors").exists()  # other checkpoints of the repo are not fetched
    upscaler = fake_hub["Lightricks/ltxv-spatial-upscaler-0.9.7"]
    assert (upscaler / "latent_upsampler" / "config.json").is_file() and not (upscaler / "vae").exists()


def test_single_file_preset_needs_only_the_configs_of_its_config_repository(tmp_path, monkeypatch):
    """ltx-2b-distilled's download: the checkpoint, and of Lightricks/LTX-Video-0.9.5 only configs + T5 + tokenizer
    (no 2B dev transformer or VAE weights); that alone loads and runs."""
    import huggingface_hub.constants as constants

    preset = video_preset("ltx-2b-distilled")
    snapshots = write_fake_hub_cache(tmp_path, [preset])
    config_repo = snapshots["Lightricks/LTX-Video-0.9.5"]
    assert (config_repo / "transformer" / "config.json").is_file()
    assert not list((config_repo / "transformer").glob("*.safetensors")) and not list((config_repo / "vae").glob("*.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    frames = VideoPipeline.from_preset(preset)("a city", width=64, height=64, num_frames=9, fps=24, seed=1).frames
    assert frames.shape == (9, 64, 64, 3)


@pytest.mark.parametrize("name", ["ltx-2b", "ltx-2b-distilled"])
def test_an_image_conditions_frame_zero_of_the_first_pass(name, offline_hub, monkeypatch):
    """The user's image, fitted to the output size, reaches diffusers as the first pass's frame-0 condition: an
    LTXVideoCondition(image, frame_index=0) for LTXConditionPipeline presets, `image` for LTXImageToVideoPipeline
    (0.9.0); continuation passes still condition on the frames before them."""
    import io

    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
    from PIL import Image

    from tunereel.video.pipeline import fit_condition_image

    source = io.BytesIO()
    Image.new("RGB", (200, 100), (250, 10, 10)).save(source, format="PNG")
    image = fit_condition_image(source.getvalue(), 64, 96)
    assert image.size == (64, 96) and image.mode == "RGB"
    spy = Spy(monkeypatch)
    pipeline = VideoPipeline.from_preset(_continuing(name))
    frames = pipeline("a face", width=64, height=96, num_frames=25, fps=24, seed=3, image=image).frames
    assert frames.shape == (25, 96, 64, 3)
    (first_cls, first), (_, cont) = spy.calls
    if EXPECTED[name]["cont"] is LTXConditionPipeline:
        assert first_cls is LTXConditionPipeline
        (condition,) = first["conditions"]
        assert isinstance(condition, LTXVideoCondition) and condition.frame_index == 0 and condition.video is None
        assert condition.image is image and condition.strength == 1.0
        assert cont["conditions"][0].video is not None and cont["conditions"][0].image is None
    else:
        assert first_cls is LTXImageToVideoPipeline and first["image"] is image
        assert isinstance(cont["image"], torch.Tensor)


def test_a_bad_condition_image_is_refused_naming_the_field():
    from tunereel.video.pipeline import InvalidVideoInput, fit_condition_image

    for data in (b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20):
        with pytest.raises(InvalidVideoInput) as error:
            fit_condition_image(data, 64, 64)
        assert error.value.field == "image"
