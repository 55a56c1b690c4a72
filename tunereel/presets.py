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
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "MusicPreset",
    "VideoPreset",
    "MUSIC_PRESETS",
    "MUSIC_MEMORY_MODES",
    "MUSICGEN_FILES",
    "MUSICGEN_BIN_FILES",
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


@dataclass(frozen=True)
class VideoPreset:
    name: str
    source: str
    dtype: str = "bfloat16"
    num_inference_steps: int = 40
    guidance_scale: float = 3.0
    max_frames: int = 257  # frames per pipeline pass
    negative_prompt: str = "worst quality, inconsistent motion, blurry, jittery, distorted"
    extra_call_kwargs: dict = field(default_factory=dict)
    # Longer videos are chains of passes, each conditioned on the end of the one before (tunereel.segments):
    # "video": diffusers' LTXConditionPipeline on the last `overlap_frames` frames (LTX-Video 0.9.5 and later);
    # "image": LTXImageToVideoPipeline on the last frame only (0.9.0/0.9.1, which know no video conditioning).
    continuation: str = "video"
    overlap_frames: int = 17  # k·8 + 1 frames the next pass re-makes (~0.7 s at 24 fps)
    blend_frames: int = 8  # of those, the last ones cross-faded at the seam (0: cut)
    continue_call_kwargs: dict = field(default_factory=dict)  # extra arguments of the continuation pipeline


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
        # Revisions: main-branch commits whose file lists (Hub "Files" page at that commit) hold every file the
        # preset loads; None (the main branch) where no such commit was confirmed.
        _musicgen("small", "facebook/musicgen-small", "e5d0b04e30c5f420c3eae5519aa3d1d9b53c4923"),
        _musicgen("medium", "facebook/musicgen-medium", "f910df651fc7fb070ae3d4ecb8edb8a74c932807",
                  allow_patterns=MUSICGEN_BIN_FILES),
        _musicgen("large", "facebook/musicgen-large", "cc3b291ccc9166a9a6694be052741112693ff910",
                  allow_patterns=MUSICGEN_BIN_FILES),
        _musicgen("melody", "facebook/musicgen-melody"),
        _musicgen("melody-large", "facebook/musicgen-melody-large"),
        _musicgen("stereo-small", "facebook/musicgen-stereo-small", "9520631640f24f25ae1dc16e42de5c6b83c32843"),
        _musicgen("stereo-medium", "facebook/musicgen-stereo-medium"),
        _musicgen("stereo-large", "facebook/musicgen-stereo-large"),
        _musicgen("stereo-melody", "facebook/musicgen-stereo-melody"),
        _musicgen("stereo-melody-large", "facebook/musicgen-stereo-melody-large", "695b0f6bbdd736edea7dc0fbafcf2fdd4d6cc9d2"),
    )
}

# diffusers' advice for the timestep-aware VAE of LTX-Video 0.9.1+ when conditioning on frames.
_CONDITION_0_9_5 = {"decode_timestep": 0.05, "image_cond_noise_scale": 0.025}

VIDEO_PRESETS: dict[str, VideoPreset] = {
    preset.name: preset
    for preset in (
        # Random weights, real architecture; cheap enough for 768x512 on a laptop CPU.
        VideoPreset("tiny", "local:tiny-ltx", dtype="float32", num_inference_steps=4, guidance_scale=1.0),
        VideoPreset(
            "ltx-2b", "Lightricks/LTX-Video", num_inference_steps=40, guidance_scale=3.0,
            continuation="image", overlap_frames=1, blend_frames=0,
        ),
        VideoPreset(
            "ltx-2b-distilled", "Lightricks/LTX-Video-0.9.8-2B-distilled", num_inference_steps=8, guidance_scale=1.0,
            continue_call_kwargs=_CONDITION_0_9_5,
        ),
        VideoPreset(
            "ltx-13b", "Lightricks/LTX-Video-0.9.7-dev", num_inference_steps=40, guidance_scale=3.0,
            continue_call_kwargs=_CONDITION_0_9_5,
        ),
        VideoPreset(
            "ltx-13b-distilled", "Lightricks/LTX-Video-0.9.7-distilled", num_inference_steps=8, guidance_scale=1.0,
            continue_call_kwargs=_CONDITION_0_9_5,
        ),
    )
}


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
