"""VideoPipeline: prompt → LTX-Video latents → denoise → decode → exactly `num_frames` uint8 RGB frames.

No gRPC here. One diffusers pipeline call makes all the frames of a request (LTX needs 8k+1 frames, so it runs for
the next such count and the output is cut). A step callback reports progress and stops denoising when interrupted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import LTXPipeline

from tunereel.loading import load_offline, pick_device, pick_dtype
from tunereel.presets import VideoPreset, resolve_source
from tunereel.streaming import Cancelled

__all__ = ["VideoPipeline", "VideoOutput", "InvalidVideoInput", "model_frame_count"]

ProgressCallback = Callable[[int, int], None]  # (step, total_steps)


class InvalidVideoInput(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


@dataclass(frozen=True)
class VideoOutput:
    frames: np.ndarray  # (num_frames, height, width, 3) uint8
    fps: int


def model_frame_count(num_frames: int, temporal_compression: int = 8) -> int:
    """The smallest count of the form k·8 + 1 that covers `num_frames` (LTX-Video's VAE needs it)."""
    return math.ceil(max(num_frames - 1, 0) / temporal_compression) * temporal_compression + 1


class VideoPipeline:
    def __init__(self, pipe: LTXPipeline, *, preset: VideoPreset, model_id: str):
        self.pipe = pipe
        self.preset = preset
        self.model_id = model_id
        self.spatial_compression = int(getattr(pipe, "vae_spatial_compression_ratio", 32))
        self.temporal_compression = int(getattr(pipe, "vae_temporal_compression_ratio", 8))
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_preset(cls, preset: VideoPreset, models_dir: Path | None = None) -> VideoPipeline:
        source = resolve_source(preset.source, models_dir)
        device = pick_device()
        pipe = load_offline(LTXPipeline.from_pretrained, source, dtype=pick_dtype(preset.dtype, device))
        pipe.to(device)
        # Decoding hundreds of frames at once would need tens of GB; tiles bound it.
        pipe.vae.enable_tiling()
        return cls(pipe, preset=preset, model_id=Path(source).name if Path(source).is_dir() else source)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def check_inputs(self, prompt: str, width: int, height: int, num_frames: int, fps: int, steps: int, guidance: float) -> None:
        if not prompt or not prompt.strip():
            raise InvalidVideoInput("prompt", "must not be empty")
        for name, value in (("width", width), ("height", height)):
            if not (64 <= value <= 1280) or value % self.spatial_compression:
                raise InvalidVideoInput(name, f"must be a multiple of {self.spatial_compression} within 64..1280 (got {value})")
        if not 1 <= num_frames <= self.preset.max_frames:
            raise InvalidVideoInput("num_frames", f"must be within 1..{self.preset.max_frames} (got {num_frames})")
        if not 8 <= fps <= 60:
            raise InvalidVideoInput("fps", f"must be within 8..60 (got {fps})")
        if not 1 <= steps <= 100:
            raise InvalidVideoInput("num_inference_steps", f"must be within 1..100 (got {steps})")
        if not 1.0 <= guidance <= 20.0:
            raise InvalidVideoInput("guidance_scale", f"must be within 1.0..20.0 (got {guidance:g})")

    def __call__(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        num_frames: int,
        fps: int,
        seed: int,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        on_step: ProgressCallback | None = None,
        interrupt: threading.Event | None = None,
    ) -> VideoOutput:
        steps = num_inference_steps or self.preset.num_inference_steps
        guidance = guidance_scale or self.preset.guidance_scale
        # 1. check inputs
        self.check_inputs(prompt, width, height, num_frames, fps, steps, guidance)

        def step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            if interrupt is not None and interrupt.is_set():
                raise Cancelled("video generation cancelled")
            if on_step is not None:
                on_step(step + 1, steps)
            return callback_kwargs

        # 2-5. encode prompt → latents from the seeded generator → denoise → decode (all inside diffusers)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        result = self.pipe(
            prompt=prompt,
            negative_prompt=negative_prompt or self.preset.negative_prompt,
            width=width,
            height=height,
            num_frames=model_frame_count(num_frames, self.temporal_compression),
            frame_rate=fps,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="pt",  # diffusers' numpy conversion of float frames costs seconds; torch does it faster
            callback_on_step_end=step_end,
            **self.preset.extra_call_kwargs,
        )
        # 6. exactly num_frames uint8 frames
        frames = result.frames[0][:num_frames]  # (frames, channels, height, width) floats in 0..1
        frames = frames.permute(0, 2, 3, 1).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
        return VideoOutput(frames=frames, fps=fps)
