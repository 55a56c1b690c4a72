"""Model presets as data: a name maps to where the weights come from and how the model is run.

A preset's `source` is a hub id (read from the local Hugging Face cache only; nothing is downloaded at run time)
or, for `tiny`, a folder under the models directory built offline by `python -m tunereel.tiny`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "MusicPreset",
    "VideoPreset",
    "MUSIC_PRESETS",
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


@dataclass(frozen=True)
class MusicPreset:
    name: str
    source: str  # hub id, or "local:<folder name>" under the models directory
    dtype: str = "float32"  # dtype on the accelerator; cpu always runs float32
    guidance_scale: float = 3.0
    max_seconds: float = 30.0  # MusicGen's trained window


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


MUSIC_PRESETS: dict[str, MusicPreset] = {
    preset.name: preset
    for preset in (
        MusicPreset("tiny", "local:tiny-musicgen"),
        MusicPreset("small", "facebook/musicgen-small"),
        MusicPreset("medium", "facebook/musicgen-medium", dtype="float16"),
        MusicPreset("large", "facebook/musicgen-large", dtype="float16"),
        MusicPreset("melody", "facebook/musicgen-melody", dtype="float16"),
        MusicPreset("stereo-small", "facebook/musicgen-stereo-small"),
        MusicPreset("stereo-medium", "facebook/musicgen-stereo-medium", dtype="float16"),
        MusicPreset("stereo-large", "facebook/musicgen-stereo-large", dtype="float16"),
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
