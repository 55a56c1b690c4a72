"""Model presets as data: a name maps to where the weights come from and how the model is run.

A preset's `source` is a hub id (read from the local Hugging Face cache only; nothing is downloaded at run time)
or, for `tiny`, a folder under the models directory built offline by `python -m tunereel.tiny`.

Every preset shares the fields that say where its weights come from, so one table drives the services, the
`tunereel models` listing, the weights Job, the Dockerfile defaults and the README (tunereel/catalog.py):
`source`, `revision` (a commit of the hub repository, or None for its main branch), `allow_patterns` (the files the
service needs, as `hf download --include` takes them), `single_file` (a single checkpoint inside the repository, or
None), `license` and `docs` (where the preset's settings come from).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = [
    "MusicPreset",
    "VideoPreset",
    "RefinePass",
    "DEFAULT_GPU_VIDEO_PRESET",
    "MUSIC_PRESETS",
    "MUSIC_MEMORY_MODES",
    "MUSICGEN_FILES",
    "MUSICGEN_BIN_FILES",
    "MUSIC_FAMILIES",
    "VIDEO_FAMILIES",
    "VIDEO_PRESETS",
    "UnknownPreset",
    "music_preset",
    "video_preset",
    "resolve_source",
    "default_models_dir",
]


class UnknownPreset(KeyError):
    def __init__(self, kind: str, name: str, known: list[str]):
        super().__init__(f"unknown {kind} preset {name!r}; known presets: {', '.join(known)}")
        self.message = self.args[0]


# What a MusicGen service reads from a published facebook/musicgen-* repository: the configs (config.json,
# generation_config.json, preprocessor_config.json, tokenizer files, a sharded model's index), the safetensors
# weights (one file, or `model-0000k-of-0000n` shards) and T5's SentencePiece model. Left out: pytorch_model*.bin
# (the same weights as pickles), the stereo repos' model.fp32*.safetensors (a float32 copy of model.safetensors),
# and audiocraft's own state_dict.bin / compression_state_dict.bin.
MUSICGEN_FILES = ("*.json", "model.safetensors", "model-*-of-*.safetensors", "spiece.model")
# facebook/musicgen-medium and -large have no safetensors on their main branch (only in unmerged conversion pull
# requests): their weights are pytorch_model.bin / pytorch_model-0000k-of-0000n.bin (+ index), loaded weights-only.
MUSICGEN_BIN_FILES = ("*.json", "pytorch_model.bin", "pytorch_model-*-of-*.bin", "spiece.model")
MUSICGEN_LICENSE = "CC-BY-NC-4.0"  # the weights' licence, on every facebook/musicgen-* model card

MUSIC_MEMORY_MODES = ("auto", "full", "model-offload")
# What an ACE-Step service reads from a diffusers-format repository: model_index.json and each component's folder.
_ACE_STEP_FILES = ("model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "transformer/*",
                   "condition_encoder/*", "vae/*")  # fmt: skip

# A music service wraps one family's pipelines; the preset says which (services/music/server.py picks the pipeline).
# "musicgen": transformers' MusicGen (instrumental, 30 s windows); "ace-step": diffusers' AceStepPipeline (ACE-Step
# 1.5: a whole song with vocals from lyrics in one pass).
MUSIC_FAMILIES = ("musicgen", "ace-step")


@dataclass(frozen=True)
class MusicPreset:
    name: str
    source: str  # hub id, or "local:<folder name>" under the models directory
    revision: str | None = None  # a commit of the hub repository; None: its main branch
    allow_patterns: tuple[str, ...] = MUSICGEN_FILES
    single_file: str | None = None  # always None: MusicGen repos load whole (kept for one interface with video)
    license: str = MUSICGEN_LICENSE
    docs: str = ""  # where the settings below come from
    # transformers classes; the melody checkpoints are a different, decoder-only architecture with their own
    # processor (tokenizer + chroma feature extractor, which needs torchaudio)
    model_class: str = "MusicgenForConditionalGeneration"
    processor_class: str = "MusicgenProcessor"
    requires: tuple[str, ...] = ()  # optional Python packages the processor needs
    channels: int = 1  # stereo checkpoints: 2 (8 codebooks, one set of 4 per channel, interleaved)
    dtype: str = "float16"  # dtype on an accelerator; cpu always runs float32
    guidance_scale: float = 3.0  # classifier-free guidance (doubles the batch)
    do_sample: bool = True
    top_k: int = 250
    max_seconds: float = 30.0  # one window: the trained context
    memory: str = "auto"  # default memory mode (MUSIC_MEMORY_MODES); TUNEREEL_MUSIC_MEMORY overrides
    family: str = "musicgen"  # MUSIC_FAMILIES
    # ACE-Step (diffusion) only: steps of the flow-matching schedule and its shift (AceStepPipeline computes the
    # sigmas from these); sample rate and channels come from the VAE config (48 kHz stereo for ACE-Step 1.5).
    num_inference_steps: int = 0
    shift: float = 0.0

    @property
    def sings(self) -> bool:
        """Whether the family takes lyrics (and vocal_language, key, time_signature as conditions)."""
        return self.family == "ace-step"

    @property
    def repaints(self) -> bool:
        """Whether the model re-makes a time range of given audio and keeps the rest (ACE-Step's repaint task)."""
        return self.family == "ace-step"

    @property
    def follows_melody(self) -> bool:
        """Whether the model takes a melody to follow (melody_pcm): MusicGen's melody checkpoints."""
        return self.model_class == "MusicgenMelodyForConditionalGeneration"


# A video service wraps one family's pipelines: "ltx" (LTX-Video 0.9.x, services/video/pipeline.py) or "ltx2"
# (LTX-2.x: video generated while hearing the music, services/video/ltx2.py).
VIDEO_FAMILIES = ("ltx", "ltx2")


@dataclass(frozen=True)
class RefinePass:
    """LTX-Video 0.9.7+'s multi-scale flow (quality "final"): denoise at `downscale` of the size, upsample the
    latents 2x with the latent upsampler, re-denoise a few steps at twice that size, decode, resize to the request."""

    downscale: float  # first pass at this fraction of the requested width/height (rounded down to the VAE's 32)
    denoise_strength: float  # how much of the refine schedule runs on the upsampled latents
    num_inference_steps: int | None = None  # refine schedule by step count (dev models) ...
    timesteps: tuple[float, ...] | None = None  # ... or by explicit timesteps (distilled models)
    adain_factor: float = 0.0  # LTXLatentUpsamplePipeline: match the upsampled latents' statistics to the input
    tone_map_compression_ratio: float = 0.0  # LTXLatentUpsamplePipeline (0.9.8)


@dataclass(frozen=True)
class VideoPreset:
    """One published LTX-Video model and the settings its authors run it with.

    Every setting goes to diffusers the same way for the first pass and every continuation pass of a long video.
    `docs` names the documents the settings come from; each preset below says per setting which one.
    """

    name: str
    source: str  # hub id, or "local:<folder name>" under the models directory
    revision: str | None = None  # pinned commit of `source`; None = whatever the local cache's refs/main names
    # What `hf download <source> --include …` fetches; never a whole repo that carries single-file checkpoints too.
    allow_patterns: tuple[str, ...] = ()
    # A checkpoint file inside `source` in LTX-Video's original layout (transformer + VAE), loaded with diffusers'
    # `from_single_file` and the configs of `config_source`, which also supplies text encoder, tokenizer, scheduler.
    single_file: str | None = None
    config_source: str | None = None
    config_revision: str | None = None
    config_allow_patterns: tuple[str, ...] = ()
    license: str = ""
    docs: str = ""
    dtype: str = "bfloat16"
    # "LTXPipeline" (0.9.0/0.9.1: uniform sigmas with resolution-dependent shift) or "LTXConditionPipeline"
    # (0.9.5+: the one diffusers' docs run them through, text only = no conditions; takes custom timesteps).
    pipeline_class: str = "LTXConditionPipeline"
    num_inference_steps: int = 40
    timesteps: tuple[float, ...] | None = None  # distilled models: the schedule they were distilled for
    guidance_scale: float = 3.0
    guidance_rescale: float = 0.0
    decode_timestep: float = 0.0  # timestep-conditioned VAEs (0.9.1+) decode at this noise level ...
    decode_noise_scale: float | None = None  # ... after mixing this much noise into the latents
    image_cond_noise_scale: float = 0.0  # LTXConditionPipeline: noise on the conditioning latents (continuations)
    max_sequence_length: int = 128  # T5 prompt tokens
    max_frames: int = 257  # frames per pipeline pass
    negative_prompt: str = "worst quality, inconsistent motion, blurry, jittery, distorted"
    # Longer videos are chains of passes, each conditioned on the end of the one before (tunereel.segments):
    # "video": diffusers' LTXConditionPipeline on the last `overlap_frames` frames (LTX-Video 0.9.5 and later; LTX-2:
    # LTX2DFRPipeline's `conditions`); "image": LTXImageToVideoPipeline on the last frame only (0.9.0/0.9.1, which
    # know no video conditioning).
    continuation: str = "video"
    overlap_frames: int = 17  # k·8 + 1 frames the next pass re-makes (~0.7 s at 24 fps)
    blend_frames: int = 8  # of those, the last ones cross-faded at the seam (0: cut)
    # Quality "final" (13B models): the latent upsampler repository and the refine pass; None = one pass only.
    upsampler: str | None = None
    upsampler_revision: str | None = None
    refine: RefinePass | None = None
    # Sizes for choosing a memory mode (tunereel.memory): parameters of the transformer and of the text encoder.
    transformer_params: float = 1.9e9
    text_encoder_params: float = 4.76e9  # T5 v1.1 XXL encoder, shared by every LTX-Video release
    family: str = "ltx"  # VIDEO_FAMILIES
    # LTX-2 (DFR pipeline) only: the sigma schedule of one pass, without the terminal 0; the rate its audio VAE
    # hears at (AutoencoderKLLTX2Audio config sample_rate).
    sigmas: tuple[float, ...] | None = None
    audio_sample_rate: int = 0

    @property
    def hears_audio(self) -> bool:
        """Whether the family generates video conditioned on given audio: the request must carry the music."""
        return self.family == "ltx2"

    @property
    def takes_image(self) -> bool:
        """Whether the video can start from an image (frame-0 condition): every family's first pass can (LTX-Video:
        LTXConditionPipeline / LTXImageToVideoPipeline; LTX-2: an LTX2VideoCondition next to the frozen music)."""
        return self.family in VIDEO_FAMILIES

    def downloads(self) -> list[tuple[str, str | None, tuple[str, ...]]]:
        """(repository, revision, allow_patterns) for every repository this preset reads, for `hf download`."""
        if self.source.startswith("local:"):
            return []
        out = [(self.source, self.revision, self.allow_patterns)]
        if self.config_source:
            out.append((self.config_source, self.config_revision, self.config_allow_patterns))
        if self.upsampler:
            out.append((self.upsampler, self.upsampler_revision, _UPSAMPLER_FILES))
        return out


# Settings, per preset, and where they come from:
# - guidance 3.0, sampling with top-k 250 and a 30 s window: each repository's generation_config.json
#   (do_sample true, top_k 250, guidance_scale 3.0, max_length 1500 = 30 s at 50 frames/s) and audiocraft's
#   MusicGen.set_generation_params defaults (use_sampling, top_k=250, cfg_coef=3.0, duration 30);
# - 50 decoding steps per second of audio (+ the codebook delay): the EnCodec config (32 kHz, hop 640) and the
#   model cards ("50 auto-regressive steps per second of audio");
# - float16 on a GPU for the language model (text encoder + decoder), float32 for the codec: audiocraft generates
#   under float16 autocast on every non-CPU device and decodes outside it (models/genmodel.py); and
#   the stereo repositories publish float16 weights as their default model.safetensors;
# - melody: transformers' musicgen_melody docs (MusicgenMelodyForConditionalGeneration + MusicgenMelodyProcessor);
# - stereo: the stereo model cards ("2 streams of tokens from the EnCodec model, interleaving those using the delay
#   pattern"): decoder audio_channels 2, 8 codebooks.
_MUSICGEN_DOCS = "{repo}: model card, generation_config.json; transformers model_doc/musicgen; audiocraft genmodel.py"
_MELODY_DOCS = "{repo}: model card, generation_config.json; transformers model_doc/musicgen_melody; audiocraft genmodel.py"


def _musicgen(name: str, repo: str, revision: str | None = None, **settings) -> MusicPreset:
    melody = "melody" in repo
    stereo = "stereo" in repo
    return MusicPreset(
        name, repo, revision,
        docs=(_MELODY_DOCS if melody else _MUSICGEN_DOCS).format(repo=repo),
        model_class="MusicgenMelodyForConditionalGeneration" if melody else "MusicgenForConditionalGeneration",
        processor_class="MusicgenMelodyProcessor" if melody else "MusicgenProcessor",
        requires=("torchaudio",) if melody else (),
        channels=2 if stereo else 1,
        **settings,
    )  # fmt: skip


MUSIC_PRESETS: dict[str, MusicPreset] = {
    preset.name: preset
    for preset in (
        # Random weights, real classes, built offline (`make models`); float32 everywhere.
        MusicPreset("tiny", "local:tiny-musicgen", allow_patterns=(), license="none (random weights)",
                    docs="tunereel/tiny.py", dtype="float32"),  # fmt: skip
        # Revisions: all None (each repository's main branch). Commits written here before were never checked
        # against the Hub, and a pin to a commit that does not exist fails `hf download --revision` (so the gpu
        # overlay's load-weights Job never writes its marker and the services never start). To pin a preset, run
        # its `hf download` command once without --revision: the folder it prints, `snapshots/<commit>`, is named
        # by the commit it fetched; put that 40-hex id here and regenerate (`python -m tunereel.catalog --write`).
        _musicgen("small", "facebook/musicgen-small"),
        _musicgen("medium", "facebook/musicgen-medium", allow_patterns=MUSICGEN_BIN_FILES),
        _musicgen("large", "facebook/musicgen-large", allow_patterns=MUSICGEN_BIN_FILES),
        _musicgen("melody", "facebook/musicgen-melody"),
        _musicgen("melody-large", "facebook/musicgen-melody-large"),
        _musicgen("stereo-small", "facebook/musicgen-stereo-small"),
        _musicgen("stereo-medium", "facebook/musicgen-stereo-medium"),
        _musicgen("stereo-large", "facebook/musicgen-stereo-large"),
        _musicgen("stereo-melody", "facebook/musicgen-stereo-melody"),
        _musicgen("stereo-melody-large", "facebook/musicgen-stereo-melody-large"),
        # --- ACE-Step 1.5 (diffusers AceStepPipeline) -------------------------------------------------------------
        # Random weights, the classes and layout of the published repository (tunereel/tiny.py); float32.
        MusicPreset("tiny-ace-step", "local:tiny-ace-step", allow_patterns=(), license="none (random weights)",
                    docs="tunereel/tiny.py", family="ace-step", model_class="AceStepPipeline", processor_class="",
                    channels=2, dtype="float32", guidance_scale=1.0, do_sample=False, top_k=0, max_seconds=600.0,
                    num_inference_steps=8, shift=3.0, memory="full"),  # fmt: skip
        # Settings: [ace-docs] huggingface/diffusers docs/source/en/api/pipelines/ace_step.md (variant table: turbo =
        # guidance-distilled, CFG off, 8 steps, shift 3.0, repo ACE-Step/acestep-v15-xl-turbo-diffusers) and the
        # AceStepPipeline docstring example (bfloat16, 8 steps, 48 kHz stereo out); the pipeline forces guidance 1.0
        # on turbo checkpoints. Song length 10 s .. 10 min in one pass: the ACE-Step 1.5 model card. Licence: MIT
        # (ACE-Step 1.5 model card; the Qwen3-Embedding text encoder inside is Apache-2.0).
        MusicPreset("ace-step-xl-turbo", "ACE-Step/acestep-v15-xl-turbo-diffusers", allow_patterns=_ACE_STEP_FILES,
                    license="MIT (ACE-Step 1.5 model card; its Qwen3 text encoder: Apache-2.0)",
                    docs="[ace-docs] diffusers api/pipelines/ace_step.md variant table + AceStepPipeline example",
                    family="ace-step", model_class="AceStepPipeline", processor_class="", channels=2,
                    dtype="bfloat16", guidance_scale=1.0, do_sample=False, top_k=0, max_seconds=600.0,
                    num_inference_steps=8, shift=3.0),  # fmt: skip
    )
}

# --- LTX-Video ----------------------------------------------------------------------------------------------------
# Documents the settings come from (cited per setting below by these names):
#   [diffusers]  huggingface/diffusers docs/source/en/api/pipelines/ltx_video.md (Notes, and the 0.9.7-dev, 0.9.7-
#                distilled and 0.9.8-distilled examples)
#   [ltx-cfg]    Lightricks/LTX-Video configs/ltxv-*.yaml (the authors' inference settings, named per preset)
#   [convert]    huggingface/diffusers scripts/convert_ltx_to_diffusers.py (which pipeline/scheduler each version ships)
#   [single]     diffusers loaders/single_file_utils.py (which config repository a single-file checkpoint maps to)
# STG (spatio-temporal guidance, stg_scale in [ltx-cfg]) is not offered by the installed diffusers' LTX pipelines
# (0.42.1: LTXPipeline / LTXConditionPipeline take guidance_scale and guidance_rescale only), so no preset sets it;
# [ltx-cfg]'s rescaling_scale goes with it (LTX-Video applies it to the STG-guided prediction only). The 13B dev
# model's per-step guidance/STG schedule ([ltx-cfg] first_pass) is replaced by [diffusers]' own 0.9.7-dev settings.
_LTX_LICENSE = "LTX-Video Open Weights License (model card: license other, License.txt in the repository)"
_T5_FILES = ("model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*")
_DIFFUSERS_FILES = (*_T5_FILES, "transformer/*", "vae/*")
_UPSAMPLER_FILES = ("model_index.json", "latent_upsampler/*")
# [diffusers] 0.9.7-distilled / 0.9.8-distilled examples: first pass and upscale-refine timesteps.
_DISTILLED_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)
_DISTILLED_REFINE = (1000.0, 909.0, 725.0, 421.0, 0.0)

VIDEO_PRESETS: dict[str, VideoPreset] = {
    preset.name: preset
    for preset in (
        # Random weights, real architecture (0.9.0-style); cheap enough for 768x512 on a laptop CPU. `make run`.
        VideoPreset(
            "tiny", "local:tiny-ltx", dtype="float32", pipeline_class="LTXPipeline", num_inference_steps=4,
            guidance_scale=1.0, docs="tunereel.tiny", license="random weights",
        ),
        # LTX-Video 0.9.0 (2B), diffusers weights at the root of Lightricks/LTX-Video.
        VideoPreset(
            "ltx-2b", "Lightricks/LTX-Video", allow_patterns=_DIFFUSERS_FILES, license=_LTX_LICENSE,
            docs="[ltx-cfg] configs/ltxv-2b-0.9.yaml; [diffusers] LTXPipeline; [convert] 0.9.0",
            pipeline_class="LTXPipeline",  # [convert]: 0.9.0 ships as LTXPipeline (no video conditioning)
            num_inference_steps=40, guidance_scale=3.0,  # [ltx-cfg] ltxv-2b-0.9.yaml
            guidance_rescale=0.0,  # [ltx-cfg]'s rescaling_scale 0.7 rescales only the STG-guided prediction
            # (LTX-Video ltx_video/pipelines/pipeline_ltx_video.py); without STG LTX-Video rescales nothing either.
            # 0.9.0's VAE is not timestep-conditioned: diffusers ignores decode_timestep for it; kept at 0.
            max_sequence_length=128,  # [convert] TOKENIZER_MAX_LENGTH 128; LTXPipeline's default
            continuation="image", overlap_frames=1, blend_frames=0,
        ),
        # LTX-Video 0.9.5 (2B dev), diffusers format; also the config repository of the 0.9.8 2B single file.
        VideoPreset(
            "ltx-2b-0.9.5", "Lightricks/LTX-Video-0.9.5", allow_patterns=_DIFFUSERS_FILES, license=_LTX_LICENSE,
            docs="[ltx-cfg] configs/ltxv-2b-0.9.5.yaml; [diffusers] Notes",
            pipeline_class="LTXConditionPipeline",  # [diffusers] runs 0.9.5 through LTXConditionPipeline (LoRA example)
            num_inference_steps=40, guidance_scale=3.0,  # [ltx-cfg] ltxv-2b-0.9.5.yaml
            guidance_rescale=0.0,  # as ltx-2b: rescaling_scale applies with STG only
            decode_timestep=0.05, decode_noise_scale=0.025,  # [ltx-cfg] ltxv-2b-0.9.5.yaml, [diffusers] Notes
            image_cond_noise_scale=0.025,  # [diffusers] Notes: timestep-aware VAEs, image_cond_noise_scale 0.025
            max_sequence_length=256,  # LTXConditionPipeline's default; LTX-Video's inference encodes 256 tokens
        ),
        # LTX-Video 0.9.8 2B distilled: only published as a single-file checkpoint in Lightricks/LTX-Video. The GPU
        # default: transformer 1.9B + T5-XXL 4.8B in bf16 are ~14 GB, so it runs in memory mode "full" on a 24 GB L4.
        VideoPreset(
            "ltx-2b-distilled", "Lightricks/LTX-Video", single_file="ltxv-2b-0.9.8-distilled.safetensors",
            allow_patterns=("ltxv-2b-0.9.8-distilled.safetensors",),
            config_source="Lightricks/LTX-Video-0.9.5",  # [single]: a 2B checkpoint with the 2048-ch VAE → 0.9.5
            config_allow_patterns=(*_T5_FILES, "transformer/config.json", "vae/config.json"),
            license=_LTX_LICENSE,
            docs="[ltx-cfg] configs/ltxv-2b-0.9.8-distilled.yaml; [diffusers] 0.9.8-distilled example; [single]",
            pipeline_class="LTXConditionPipeline",  # [diffusers] 0.9.7/0.9.8 distilled run through it
            num_inference_steps=len(_DISTILLED_TIMESTEPS), timesteps=_DISTILLED_TIMESTEPS,  # [diffusers]
            guidance_scale=1.0,  # [diffusers] Notes + [ltx-cfg]: guidance-distilled, guidance 1
            guidance_rescale=0.7,  # [diffusers] 0.9.8-distilled example (no effect at guidance 1: CFG is off)
            decode_timestep=0.05, decode_noise_scale=0.025,  # [diffusers] example, [ltx-cfg]
            image_cond_noise_scale=0.0,  # [diffusers] 0.9.8-distilled example
            max_sequence_length=256,
        ),
        # LTX-Video 0.9.7 13B dev.
        VideoPreset(
            "ltx-13b", "Lightricks/LTX-Video-0.9.7-dev", allow_patterns=_DIFFUSERS_FILES, license=_LTX_LICENSE,
            docs="[diffusers] 0.9.7-dev example; [ltx-cfg] configs/ltxv-13b-0.9.7-dev.yaml (STG, per-step guidance: "
                 "not in diffusers)",
            pipeline_class="LTXConditionPipeline",  # [convert] 0.9.7 ships as LTXConditionPipeline
            num_inference_steps=30,  # [diffusers] example and [ltx-cfg] first_pass.num_inference_steps
            guidance_scale=5.0, guidance_rescale=0.7,  # [diffusers] 0.9.7-dev example
            decode_timestep=0.05, decode_noise_scale=0.025, image_cond_noise_scale=0.0,  # [diffusers] example
            max_sequence_length=256,
            upsampler="Lightricks/ltxv-spatial-upscaler-0.9.7",  # [diffusers] example
            refine=RefinePass(downscale=2 / 3, denoise_strength=0.4, num_inference_steps=10),  # [diffusers] example
            transformer_params=13.0e9,
        ),
        # LTX-Video 0.9.7 13B distilled.
        VideoPreset(
            "ltx-13b-distilled", "Lightricks/LTX-Video-0.9.7-distilled", allow_patterns=_DIFFUSERS_FILES,
            license=_LTX_LICENSE,
            docs="[diffusers] 0.9.7-distilled example; [ltx-cfg] configs/ltxv-13b-0.9.7-distilled.yaml",
            pipeline_class="LTXConditionPipeline",
            num_inference_steps=len(_DISTILLED_TIMESTEPS), timesteps=_DISTILLED_TIMESTEPS,  # [diffusers]
            guidance_scale=1.0, guidance_rescale=0.7,  # [diffusers] example (rescale has no effect at guidance 1)
            decode_timestep=0.05, decode_noise_scale=0.025, image_cond_noise_scale=0.0,  # [diffusers] example
            max_sequence_length=256,
            upsampler="Lightricks/ltxv-spatial-upscaler-0.9.7",
            refine=RefinePass(downscale=2 / 3, denoise_strength=0.999, timesteps=_DISTILLED_REFINE, adain_factor=1.0),
            transformer_params=13.0e9,
        ),
        # LTX-Video 0.9.8 13B distilled (long videos; tone mapping on upsampling).
        VideoPreset(
            "ltx-13b-0.9.8-distilled", "Lightricks/LTX-Video-0.9.8-13B-distilled", allow_patterns=_DIFFUSERS_FILES,
            license=_LTX_LICENSE,
            docs="[diffusers] 0.9.8-distilled example; [ltx-cfg] configs/ltxv-13b-0.9.8-distilled.yaml",
            pipeline_class="LTXConditionPipeline",
            num_inference_steps=len(_DISTILLED_TIMESTEPS), timesteps=_DISTILLED_TIMESTEPS,  # [diffusers]
            guidance_scale=1.0, guidance_rescale=0.7,  # [diffusers] example
            decode_timestep=0.05, decode_noise_scale=0.025, image_cond_noise_scale=0.0,  # [diffusers] example
            max_sequence_length=256,
            # [diffusers] uses "a-r-r-o-w/LTX-0.9.8-Latent-Upsampler" (marked TODO there); [ltx-cfg] names the 0.9.8
            # upscaler, which Lightricks publishes only as a single file. [convert] gives 0.9.7 and 0.9.8 upsamplers
            # the same config, so the published diffusers-format 0.9.7 one is used.
            upsampler="Lightricks/ltxv-spatial-upscaler-0.9.7",
            refine=RefinePass(downscale=2 / 3, denoise_strength=0.999, timesteps=_DISTILLED_REFINE, adain_factor=1.0,
                              tone_map_compression_ratio=0.6),  # [diffusers] example, [ltx-cfg] second_pass
            transformer_params=13.0e9,
        ),
    )
}

# --- LTX-2 ---------------------------------------------------------------------------------------------------------
# Audio held fixed while the video is generated: in diffusers 0.42.1 only the DFR pipelines take `freeze_audio`
# (LTX2DFRPipeline.__call__: `audio_latents` + `freeze_audio=True` keep the audio stream at sigma 0 while the video
# cross-attends to it); LTX2Pipeline / LTX2ConditionPipeline take `audio_latents` but denoise them again. The DFR
# pass has no classifier-free guidance: it runs the distilled sigma schedule (diffusers pipelines/ltx2/utils.py
# DISTILLED_SIGMA_VALUES, the DFR default) and, with keyframe slots, needs a transformer with
# `use_keyframes_abs_pos_embedding` (LTX-2.5 and later). So the preset is LTX-2.5: [ltx2-docs] the LTX2DFRPipeline
# docstring example (Lightricks/LTX-2.5-Diffusers, bfloat16, enable_model_cpu_offload, 121 frames, 24 fps).
# Lightricks/LTX-2 (2.0, dev weights needing guidance) has no audio-frozen path in diffusers and is not offered.
_LTX2_LICENSE = (
    "LTX-2 Community License (model card, gated repository): free use only below the licence's revenue threshold; "
    "larger companies and competing products need a paid commercial licence from Lightricks"
)
_LTX2_DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
# The prompt enhancer (a second, Gemma 4 model) and its processor are optional components the service never uses:
# neither fetched nor loaded. The duration head (small) only predicts a length, which tunereel always gives.
_LTX2_FILES = ("model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "connectors/*", "transformer/*",
               "vae/*", "audio_vae/*", "vocoder/*", "duration_head/*")  # fmt: skip
VIDEO_PRESETS.update(
    {
        preset.name: preset
        for preset in (
            VideoPreset(
                "tiny-ltx2", "local:tiny-ltx2", dtype="float32", family="ltx2", pipeline_class="LTX2DFRPipeline",
                num_inference_steps=len(_LTX2_DISTILLED_SIGMAS), sigmas=_LTX2_DISTILLED_SIGMAS, guidance_scale=1.0,
                max_sequence_length=128, max_frames=121, docs="tunereel/tiny.py", license="random weights",
                audio_sample_rate=16000,
                continuation="video", overlap_frames=17, blend_frames=8,  # as ltx-2.5
            ),
            VideoPreset(
                "ltx-2.5", "Lightricks/LTX-2.5-Diffusers", allow_patterns=_LTX2_FILES, license=_LTX2_LICENSE,
                docs="[ltx2-docs] LTX2DFRPipeline example; diffusers pipelines/ltx2/utils.py DISTILLED_SIGMA_VALUES",
                family="ltx2", pipeline_class="LTX2DFRPipeline", dtype="bfloat16", audio_sample_rate=16000,
                num_inference_steps=len(_LTX2_DISTILLED_SIGMAS), sigmas=_LTX2_DISTILLED_SIGMAS,  # the DFR default
                guidance_scale=1.0,  # no CFG in the DFR pass (distilled)
                decode_timestep=0.0, decode_noise_scale=None,  # LTX2DFRPipeline defaults
                max_sequence_length=1024,  # LTX2DFRPipeline default (Gemma prompt tokens)
                max_frames=121,  # the example's pass length
                # Longer videos: each pass after the first conditioned (LTX2VideoCondition at index 0, strength 1) on
                # the last 17 frames of the one before, 8 of them cross-faded at the seam. Lightricks document no
                # chaining for LTX-2 in diffusers: these are LTX-Video's chain settings (VideoPreset defaults).
                continuation="video", overlap_frames=17, blend_frames=8,
                transformer_params=19.0e9, text_encoder_params=12.0e9,  # LTX-2 19B; Gemma 3 12B text encoder
            ),
        )
    }
)

# The preset the GPU images and overlay default to (see VideoPreset "ltx-2b-distilled": fits a 24 GB L4 in "full").
DEFAULT_GPU_VIDEO_PRESET = "ltx-2b-distilled"


def music_preset(name: str, weights: str | None = None) -> MusicPreset:
    """A music preset by name; `weights` (a folder or hub id) replaces where its weights come from."""
    try:
        preset = MUSIC_PRESETS[name]
    except KeyError:
        raise UnknownPreset("music", name, list(MUSIC_PRESETS)) from None
    return replace(preset, source=weights) if weights else preset


def video_preset(name: str, weights: str | None = None) -> VideoPreset:
    """A video preset by name; `weights` (a folder or hub id) replaces where its weights come from."""
    try:
        preset = VIDEO_PRESETS[name]
    except KeyError:
        raise UnknownPreset("video", name, list(VIDEO_PRESETS)) from None
    return replace(preset, source=weights) if weights else preset


def default_models_dir() -> Path:
    return Path(os.environ.get("TUNEREEL_MODELS_DIR", ".cache/tunereel/models")).resolve()


def resolve_source(source: str, models_dir: Path | None = None) -> str:
    """A preset source → what from_pretrained gets: a local folder path or a hub id."""
    if source.startswith("local:"):
        return str((models_dir or default_models_dir()) / source.removeprefix("local:"))
    return source
