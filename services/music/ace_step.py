"""AceStepMusic: text + lyrics → ACE-Step 1.5 (diffusers AceStepPipeline) → 48 kHz stereo float32 PCM. No gRPC here.

The same surface as MusicPipeline (services/music/pipeline.py), so the music service serves either family: check_inputs
→ one diffusion pass for the whole song (ACE-Step makes 10 s .. 10 min in one pass; no windows) with a step callback
that reports progress and interrupts → decode (inside diffusers) → exactly round(duration · rate) samples, yielded as
one piece as soon as it is decoded (the servicer chunks it onto the stream at once).

What reaches diffusers comes from the preset (tunereel/presets.py cites the documents): num_inference_steps, shift,
guidance (turbo checkpoints: 1.0, CFG off), and the request's lyrics, vocal_language, bpm, keyscale, timesignature.
With a `Repaint` (repaint.py), the same call runs the repaint task on the source audio and its range, and what comes
out is the source with that range re-made.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tunereel.loading import ModelMissing, load_offline, pick_device, pick_dtype
from tunereel.presets import MusicPreset, resolve_source
from tunereel.segments import SegmentProgress
from tunereel.streaming import Cancelled

from .memory import InvalidMemoryMode, memory_mode
from .pipeline import InvalidMusicInput, MusicLoadError, MusicPiece
from .repaint import Repaint, pipeline_arguments, seeded_source_encoding, splice

if TYPE_CHECKING:
    from diffusers import AceStepPipeline

__all__ = ["AceStepMusic", "SongConditions", "MAX_LYRICS_CHARS", "choose_mode"]

# Activations of one pass beyond the weights: a 10-minute song is 15 000 latent frames through the DiT and the VAE's
# decode of 28.8 M samples per channel (ACE-Step's authors report under 4 GB of VRAM for whole songs).
WORKING_BYTES = 4 * 1024**3


def choose_mode(pipe: AceStepPipeline, free_bytes: int) -> str:
    """`auto`'s choice for a pipeline not yet on the GPU: everything in 90 % of `free_bytes`, or model offload."""
    weights = sum(
        t.numel() * t.element_size()
        for module in pipe.components.values() if isinstance(module, torch.nn.Module)
        for t in [*module.parameters(), *module.buffers()]
    )  # fmt: skip
    return "full" if weights + WORKING_BYTES <= 0.9 * free_bytes else "model-offload"

SegmentCallback = Callable[[SegmentProgress], None]

MAX_LYRICS_CHARS = 4000  # AceStepPipeline encodes lyrics to at most 2048 tokens (max_lyric_length)


@dataclass(frozen=True)
class SongConditions:
    """What a singing model takes beyond the prompt. Empty strings / 0 mean "let the model choose"."""

    lyrics: str = ""
    vocal_language: str = ""
    key: str = ""  # e.g. "C major", "A minor" (ACE-Step's keyscale)
    time_signature: str = ""  # beats per bar, e.g. "4" (4/4), "3" (3/4) (ACE-Step's timesignature)
    bpm: int = 0

    def pipeline_arguments(self) -> dict:
        return dict(
            lyrics=self.lyrics,
            vocal_language=self.vocal_language or "en",
            keyscale=self.key or None,
            timesignature=self.time_signature or None,
            bpm=self.bpm or None,
        )


class AceStepMusic:
    family = "ace-step"

    def __init__(self, pipe: AceStepPipeline, preset: MusicPreset, *, model_id: str):
        self.pipe = pipe
        self.preset = preset
        self.model_id = model_id
        self.sample_rate = int(pipe.sample_rate)
        self.channels = int(pipe.vae.config.audio_channels)
        self.max_total_seconds = preset.max_seconds
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_preset(cls, preset: MusicPreset, models_dir: Path | None = None, *, memory: str | None = None) -> AceStepMusic:
        """Load `preset` offline in its dtype and place it as the memory mode says (diffusers' own offload)."""
        source = resolve_source(preset.source, models_dir)
        local = Path(source).is_absolute() or source.startswith(".") or Path(source).is_dir()
        device = pick_device()
        dtype = pick_dtype(preset.dtype, device)
        where = {} if local or preset.revision is None else {"revision": preset.revision}
        # Imported here, not at the top: diffusers costs a MusicGen music service ~3 s of start-up it has no use for.
        from diffusers import AceStepPipeline

        try:
            pipe = load_offline(AceStepPipeline.from_pretrained, source, dtype=dtype, **where)
        except ModelMissing:
            raise
        except Exception as error:  # noqa: BLE001 — truncated or corrupt files raise the reader's own errors
            raise MusicLoadError(
                f"music preset {preset.name!r}: the weights in {source} cannot be read ({type(error).__name__}: "
                f"{(str(error).splitlines() or [''])[0][:200]})"
            ) from None
        try:
            mode = memory_mode(preset.memory, memory)  # auto, full, model-offload (TUNEREEL_MUSIC_MEMORY)
        except InvalidMemoryMode as error:
            raise MusicLoadError(str(error)) from None
        if mode == "auto":
            mode = "full" if device.type == "cpu" else choose_mode(pipe, torch.cuda.mem_get_info(device)[0])
        if mode == "model-offload" and device.type != "cpu":
            # diffusers' model offload, in AceStepPipeline.model_cpu_offload_seq order: text_encoder →
            # condition_encoder → transformer → vae, each on the GPU only while it runs.
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.tunereel_memory = mode
        channels = int(pipe.vae.config.audio_channels)
        if channels != preset.channels:
            raise MusicLoadError(f"music preset {preset.name!r} expects {preset.channels} channels, {source} has {channels}")
        return cls(pipe, preset, model_id=Path(source).name if local else source)

    def num_samples(self, duration_seconds: float) -> int:
        return round(duration_seconds * self.sample_rate)

    def check_inputs(self, prompt: str, duration_seconds: float, guidance_scale: float | None,
                     conditions: SongConditions | None = None) -> None:  # fmt: skip
        if not prompt or not prompt.strip():
            raise InvalidMusicInput("prompt", "must not be empty")
        if not (math.isfinite(duration_seconds) and 0 < duration_seconds <= self.max_total_seconds):
            raise InvalidMusicInput(
                "duration_seconds", f"must be > 0 and ≤ {self.max_total_seconds:g} s (got {duration_seconds:g})"
            )
        if guidance_scale is not None and not (1.0 <= guidance_scale <= 10.0):
            raise InvalidMusicInput("guidance_scale", f"must be within 1.0..10.0 (got {guidance_scale:g})")
        lyrics = (conditions or SongConditions()).lyrics
        if len(lyrics) > MAX_LYRICS_CHARS:
            raise InvalidMusicInput("lyrics", f"must be at most {MAX_LYRICS_CHARS} characters (got {len(lyrics)})")

    def call_settings(self, guidance_scale: float | None) -> dict:
        """What every call hands AceStepPipeline from the preset (tunereel.presets cites the source)."""
        p = self.preset
        return dict(num_inference_steps=p.num_inference_steps, shift=p.shift,
                    guidance_scale=guidance_scale or p.guidance_scale)  # fmt: skip

    def stream(
        self,
        prompt: str,
        duration_seconds: float,
        *,
        seed: int,
        guidance_scale: float | None = None,
        conditions: SongConditions | None = None,
        repaint: Repaint | None = None,
        on_progress: SegmentCallback | None = None,
        interrupt: threading.Event | None = None,
    ) -> Iterator[MusicPiece]:
        """The whole song as one piece, yielded as soon as the VAE has decoded it (with `repaint`: the source with
        its range re-made, repaint.py)."""
        # 1. check inputs
        conditions = conditions or SongConditions()
        self.check_inputs(prompt, duration_seconds, guidance_scale, conditions)
        total = self.num_samples(duration_seconds)
        settings = self.call_settings(guidance_scale)
        steps = settings["num_inference_steps"]

        def step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
            if interrupt is not None and interrupt.is_set():
                pipe._interrupt = True  # AceStepPipeline's documented way to stop its loop
            elif on_progress is not None:
                on_progress(SegmentProgress(step + 1, steps, 0, 1, (step + 1) / steps))
            return callback_kwargs

        # 2-4. encode prompt + lyrics (+ the source audio to repaint) → denoise (seeded) → decode, one pass for the whole
        #      duration (inside diffusers)
        task = pipeline_arguments(repaint, int(self.pipe.vae.hop_length)) if repaint is not None else {}
        generator = torch.Generator(device="cpu").manual_seed(seed)
        seeded = seeded_source_encoding(seed, self.pipe._execution_device) if repaint else contextlib.nullcontext()
        with torch.inference_mode(), seeded:
            audio = self.pipe(
                prompt=prompt,
                audio_duration=duration_seconds,
                generator=generator,
                callback_on_step_end=step_end,
                output_type="pt",
                **settings,
                **conditions.pipeline_arguments(),
                **task,
            ).audios
        if interrupt is not None and interrupt.is_set():
            raise Cancelled("music generation cancelled")
        # 5. exactly `total` samples: the latents cover whole 1/25 s frames, so the decode is at least as long
        pcm = np.ascontiguousarray(audio[0].float().cpu().numpy().T[:total])  # (samples, channels)
        if pcm.shape[0] < total:
            raise RuntimeError(f"model returned {pcm.shape[0]} samples, expected {total}")
        if repaint is not None:
            pcm = splice(repaint, pcm, self.sample_rate)  # the rest of the song kept as it is
        yield MusicPiece(0, pcm, 0, 1)
