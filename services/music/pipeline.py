"""MusicPipeline: text → MusicGen tokens → waveform, with no gRPC in it.

Reads like a diffusers pipeline: check_inputs → encode prompt (processor) → generate codes (seeded, with a per-step
callback that reports progress and can interrupt) → decode → exact-length float32 PCM.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, MusicgenProcessor, StoppingCriteria, StoppingCriteriaList

from tunereel.loading import load_offline, pick_device, pick_dtype
from tunereel.presets import MusicPreset, resolve_source
from tunereel.streaming import Cancelled

__all__ = ["MusicPipeline", "MusicOutput", "InvalidMusicInput"]

ProgressCallback = Callable[[int, int], None]  # (step, total_steps)


class InvalidMusicInput(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


@dataclass(frozen=True)
class MusicOutput:
    audio: np.ndarray  # (samples, channels) float32
    sample_rate: int


class _StepWatch(StoppingCriteria):
    """Called by generate() once per decoding step: reports progress, and stops generation when interrupted."""

    def __init__(self, total_steps: int, on_step: ProgressCallback | None, interrupt: threading.Event | None):
        self.total_steps = total_steps
        self.on_step = on_step
        self.interrupt = interrupt
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.step += 1
        if self.on_step is not None:
            self.on_step(min(self.step, self.total_steps), self.total_steps)
        stop = self.interrupt is not None and self.interrupt.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class MusicPipeline:
    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        processor: MusicgenProcessor,
        *,
        model_id: str,
        max_seconds: float = 30.0,
        guidance_scale: float = 3.0,
    ):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.max_seconds = max_seconds
        self.guidance_scale = guidance_scale
        audio_config = model.config.audio_encoder
        self.sample_rate = int(audio_config.sampling_rate)
        self.channels = int(getattr(audio_config, "audio_channels", 1))
        self.frame_rate = float(getattr(audio_config, "frame_rate", None) or self.sample_rate / math.prod(audio_config.upsampling_ratios))
        self.num_codebooks = int(model.decoder.config.num_codebooks)

    @classmethod
    def from_preset(cls, preset: MusicPreset, models_dir: Path | None = None) -> MusicPipeline:
        source = resolve_source(preset.source, models_dir)
        device = pick_device()
        dtype = pick_dtype(preset.dtype, device)
        model = load_offline(MusicgenForConditionalGeneration.from_pretrained, source, dtype=dtype).to(device)
        processor = load_offline(MusicgenProcessor.from_pretrained, source)
        return cls(
            model,
            processor,
            model_id=Path(source).name if Path(source).is_dir() else source,
            max_seconds=preset.max_seconds,
            guidance_scale=preset.guidance_scale,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def num_samples(self, duration_seconds: float) -> int:
        return round(duration_seconds * self.sample_rate)

    def check_inputs(self, prompt: str, duration_seconds: float, guidance_scale: float | None) -> None:
        if not prompt or not prompt.strip():
            raise InvalidMusicInput("prompt", "must not be empty")
        if not (math.isfinite(duration_seconds) and 0 < duration_seconds <= self.max_seconds):
            raise InvalidMusicInput(
                "duration_seconds", f"must be > 0 and ≤ {self.max_seconds:g} s for one pass (got {duration_seconds:g})"
            )
        if self.num_samples(duration_seconds) < 1:
            raise InvalidMusicInput("duration_seconds", "is shorter than one sample")
        if guidance_scale is not None and not (1.0 <= guidance_scale <= 10.0):
            raise InvalidMusicInput("guidance_scale", f"must be within 1.0..10.0 (got {guidance_scale:g})")

    def __call__(
        self,
        prompt: str,
        duration_seconds: float,
        *,
        seed: int,
        guidance_scale: float | None = None,
        on_step: ProgressCallback | None = None,
        interrupt: threading.Event | None = None,
    ) -> MusicOutput:
        # 1. check inputs
        self.check_inputs(prompt, duration_seconds, guidance_scale)
        total_samples = self.num_samples(duration_seconds)
        hop = self.sample_rate / self.frame_rate
        audio_frames = math.ceil(total_samples / hop)
        # The codebook delay pattern costs (num_codebooks - 1) extra steps before the last frame is complete.
        steps = audio_frames + self.num_codebooks - 1

        # 2. encode the prompt
        inputs = self.processor(text=[prompt], padding=True, return_tensors="pt").to(self.device)

        # 3. generate codes, seeded
        torch.manual_seed(seed)
        watch = _StepWatch(steps, on_step, interrupt)
        with torch.inference_mode():
            audio = self.model.generate(
                **inputs,
                do_sample=True,
                guidance_scale=guidance_scale or self.guidance_scale,
                max_new_tokens=steps,
                stopping_criteria=StoppingCriteriaList([watch]),
            )
        if interrupt is not None and interrupt.is_set():
            raise Cancelled("music generation cancelled")

        # 4. to exact-length (samples, channels) float32
        pcm = audio[0].float().cpu().numpy().T  # (channels, samples) → (samples, channels)
        if pcm.shape[0] < total_samples:
            raise RuntimeError(f"model returned {pcm.shape[0]} samples, expected at least {total_samples}")
        return MusicOutput(np.ascontiguousarray(pcm[:total_samples], dtype=np.float32), self.sample_rate)
