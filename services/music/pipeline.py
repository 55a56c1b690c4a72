"""MusicPipeline: text → MusicGen tokens → waveform, with no gRPC in it.

Reads like a diffusers pipeline: check_inputs → encode prompt (processor) → generate codes (seeded, with a per-step
callback that reports progress and can interrupt) → decode → exact-length float32 PCM.

Long music (more than one window, 30 s) is made as audiocraft makes it: windowed continuation. Every window after the
first is prompted with the last `prompt_seconds` (10 s) of the previous window's codes, under the same text prompt,
and adds up to 20 s of new audio. MusicGen decodes the prompt codes again with the new ones, so each window's audio
overlaps the previous window's tail with the *same* codes; the join is a short cross-fade inside that overlap, placed
away from both windows' edges (where the codec's decoder lacks context), so it is not heard. `stream()` yields the
audio window by window as it is made; `__call__` is the one-pass case (and joins the pieces for callers that want
one array).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import MusicgenForConditionalGeneration, MusicgenProcessor, StoppingCriteria, StoppingCriteriaList

from tunereel.loading import ModelMissing, load_offline, pick_device, pick_dtype
from tunereel.presets import MusicPreset, resolve_source
from tunereel.request import LIMITS
from tunereel.segments import (
    MusicWindow,
    SegmentProgress,
    correlation,
    crossfade_gains,
    music_join_starts,
    plan_music,
    segment_seed,
)
from tunereel.streaming import Cancelled

from .acceleration import accelerate
from .memory import InvalidMemoryMode, memory_mode, place

__all__ = ["MusicPipeline", "MusicOutput", "MusicPiece", "InvalidMusicInput", "MusicLoadError", "crossfade"]

ProgressCallback = Callable[[int, int], None]  # (step, total_steps)
SegmentCallback = Callable[[SegmentProgress], None]


MELODY_RATE = 32_000  # GenerateMusicRequest.melody_pcm: mono float32 at this rate
MELODY_MAX_SAMPLES = 30 * MELODY_RATE


class MusicLoadError(ModelMissing):
    """The preset cannot be served here (missing package, weights that do not match the preset, bad setting, out of
    memory). A ModelMissing, so the service stays up, NOT_SERVING, with this message."""


class InvalidMusicInput(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


@dataclass(frozen=True)
class MusicOutput:
    audio: np.ndarray  # (samples, channels) float32
    sample_rate: int


@dataclass(frozen=True)
class MusicPiece:
    """A contiguous piece of the song, final: `offset` is the index of its first sample in the whole song."""

    offset: int
    audio: np.ndarray  # (samples, channels) float32
    segment: int  # the window that made it
    total_segments: int


class _StepWatch(StoppingCriteria):
    """Called by generate() once per decoding step: reports progress, stops generation when interrupted, and keeps
    the latest token ids (the codes of the window, in MusicGen's delayed layout)."""

    def __init__(self, total_steps: int, on_step: ProgressCallback | None, interrupt: threading.Event | None):
        self.total_steps = total_steps
        self.on_step = on_step
        self.interrupt = interrupt
        self.step = 0
        self.ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.step += 1
        self.ids = input_ids
        if self.on_step is not None:
            self.on_step(min(self.step, self.total_steps), self.total_steps)
        stop = self.interrupt is not None and self.interrupt.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def crossfade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross-fade from `a` to `b` (same shape, (samples, channels)) keeping the level flat whatever their correlation
    (see `crossfade_gains`). Both decode the same codes here, so the fade is in effect an equal-gain one."""
    if a.shape[0] == 0:
        return a.copy()
    g_out, g_in = crossfade_gains(a.shape[0], correlation(a, b))
    return (g_out[:, None] * a.astype(np.float64) + g_in[:, None] * b.astype(np.float64)).astype(np.float32)


class MusicPipeline:
    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        processor: MusicgenProcessor,
        *,
        model_id: str,
        max_seconds: float = 30.0,
        guidance_scale: float = 3.0,
        do_sample: bool = True,
        top_k: int = 250,
        max_total_seconds: float = LIMITS.max_duration_seconds,
        prompt_seconds: float = 10.0,
        crossfade_seconds: float = 0.2,
        join_margin_seconds: float = 0.5,
    ):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.max_seconds = max_seconds  # one window
        self.max_total_seconds = max_total_seconds  # one request, made in windows
        self.guidance_scale = guidance_scale
        self.do_sample = do_sample
        self.top_k = top_k
        audio_config = model.config.audio_encoder
        self.sample_rate = int(audio_config.sampling_rate)
        # Stereo checkpoints keep a mono codec and decode one set of codebooks per channel: the decoder knows.
        self.channels = int(getattr(model.decoder.config, "audio_channels", 1))
        self.frame_rate = float(getattr(audio_config, "frame_rate", None) or self.sample_rate / math.prod(audio_config.upsampling_ratios))
        self.num_codebooks = int(model.decoder.config.num_codebooks)
        self.hop = int(round(self.sample_rate / self.frame_rate))  # samples per codec frame (640)
        # Codebook k is delayed by k frames (stereo: pairs of codebooks, one per channel, share a delay).
        self._delays = [k // self.channels for k in range(self.num_codebooks)]
        self.max_delay = max(self._delays)
        self.window_frames = int(math.floor(max_seconds * self.frame_rate))
        self.prompt_frames = int(round(prompt_seconds * self.frame_rate))
        self.crossfade_samples = int(round(crossfade_seconds * self.sample_rate))
        self.join_margin_samples = int(round(join_margin_seconds * self.sample_rate))
        if not 0 < self.prompt_frames < self.window_frames:
            raise ValueError(f"prompt_seconds must be shorter than one window ({max_seconds:g} s)")
        if self.crossfade_samples + self.join_margin_samples > self.prompt_frames * self.hop // 2:
            raise ValueError("the cross-fade and its margin must fit well inside the prompt")

    @classmethod
    def from_preset(cls, preset: MusicPreset, models_dir: Path | None = None, *, memory: str | None = None) -> MusicPipeline:
        """Load `preset` offline: its transformers classes, its revision, its dtype and memory mode on this machine.

        Anything that stops the preset from running here raises MusicLoadError (or ModelMissing for absent weights)
        with a message that says what to do; nothing is downloaded.
        """
        source = resolve_source(preset.source, models_dir)
        local = Path(source).is_absolute() or source.startswith(".") or Path(source).is_dir()
        device = pick_device()
        dtype = pick_dtype(preset.dtype, device)
        try:
            mode = memory_mode(preset.memory, memory)
        except InvalidMemoryMode as error:
            raise MusicLoadError(str(error)) from None
        model_class, processor_class = _classes(preset)
        where = {} if local or preset.revision is None else {"revision": preset.revision}
        try:
            model = load_offline(model_class.from_pretrained, source, dtype=dtype, **where)
            processor = load_offline(processor_class.from_pretrained, source, **where)
        except ImportError as error:  # e.g. the processor's own backends
            raise MusicLoadError(f"music preset {preset.name!r}: {str(error).strip().splitlines()[0]}") from None
        except ModelMissing:
            raise
        except Exception as error:  # noqa: BLE001 — truncated or corrupt files raise the reader's own errors
            raise MusicLoadError(
                f"music preset {preset.name!r}: the weights in {source} cannot be read ({type(error).__name__}: "
                f"{(str(error).splitlines() or [''])[0][:200]}); fetch them again (`tunereel models {preset.name}` "
                f"says how), then restart"
            ) from None
        # A checkpoint of another architecture would load with every unmatched weight initialised at random (the
        # melody checkpoints through MusicgenForConditionalGeneration did): the repository's config names its class.
        architectures = list(getattr(model.config, "architectures", None) or [])
        if not isinstance(model, model_class) or (architectures and model_class.__name__ not in architectures):
            raise MusicLoadError(
                f"music preset {preset.name!r} loads {model_class.__name__}, but {source} is a "
                f"{', '.join(architectures) or type(model).__name__} checkpoint"
            )  # fmt: skip
        if dtype != torch.float32:
            # As audiocraft: the language model (text encoder + decoder) runs float16, the codec decodes outside that
            # autocast in float32. The codec's inputs are integer codes, so its dtype touches nothing else.
            model.audio_encoder.to(torch.float32)
        channels = int(getattr(model.decoder.config, "audio_channels", 1))
        if channels != preset.channels:
            raise MusicLoadError(
                f"music preset {preset.name!r} expects {preset.channels}-channel weights, {source} has {channels}"
            )  # fmt: skip
        try:
            place(model, device, mode)
        except torch.OutOfMemoryError as error:
            del model
            torch.cuda.empty_cache()  # what was moved before the failure
            raise MusicLoadError(
                f"music preset {preset.name!r} does not fit on {device} in memory mode {mode!r} "
                f"({str(error).splitlines()[0][:160]}); try TUNEREEL_MUSIC_MEMORY=model-offload or a smaller preset"
            ) from None
        # CPU: int8 decoder + in-place KV cache (services/music/acceleration.py). The in-place cache replaces the
        # encoder-decoder cache of MusicgenForConditionalGeneration; the melody model (decoder-only) gets int8 only.
        supported = ("int8", "kv-growth") if model_class is MusicgenForConditionalGeneration else ("int8",)
        model = accelerate(model, device, supported=supported)
        return cls(
            model,
            processor,
            model_id=Path(source).name if local else source,
            max_seconds=preset.max_seconds,
            guidance_scale=preset.guidance_scale,
            do_sample=preset.do_sample,
            top_k=preset.top_k,
        )

    @property
    def device(self) -> torch.device:
        """Where generation runs: the decoder's device (in model-offload the other parts visit it)."""
        return self.model.decoder.device

    def num_samples(self, duration_seconds: float) -> int:
        return round(duration_seconds * self.sample_rate)

    def plan(self, duration_seconds: float) -> list[MusicWindow]:
        """The windows a request of this length is made in (one when it fits one window)."""
        return plan_music(self.num_samples(duration_seconds), self.hop, self.window_frames, self.prompt_frames)

    @property
    def hold(self) -> int:
        """Samples of each window's end that wait for the next window: the cross-fade and its margin."""
        return self.crossfade_samples + self.join_margin_samples

    def joins(self, duration_seconds: float) -> list[int]:
        """Samples where the joins' cross-fades (each `crossfade_samples` long) begin."""
        return music_join_starts(self.plan(duration_seconds), self.hop, self.hold)

    def check_inputs(self, prompt: str, duration_seconds: float, guidance_scale: float | None) -> None:
        if not prompt or not prompt.strip():
            raise InvalidMusicInput("prompt", "must not be empty")
        if not (math.isfinite(duration_seconds) and 0 < duration_seconds <= self.max_total_seconds):
            raise InvalidMusicInput(
                "duration_seconds", f"must be > 0 and ≤ {self.max_total_seconds:g} s (got {duration_seconds:g})"
            )
        if self.num_samples(duration_seconds) < 1:
            raise InvalidMusicInput("duration_seconds", "is shorter than one sample")
        if guidance_scale is not None and not (1.0 <= guidance_scale <= 10.0):
            raise InvalidMusicInput("guidance_scale", f"must be within 1.0..10.0 (got {guidance_scale:g})")

    @property
    def follows_melody(self) -> bool:
        """A melody model (MusicgenMelodyForConditionalGeneration: chroma conditioning)."""
        return hasattr(self.model.config, "num_chroma")

    def check_melody(self, melody: np.ndarray | None) -> None:
        if melody is None:
            return
        if not self.follows_melody:
            raise InvalidMusicInput("melody_pcm", "only the melody presets follow a melody; this replica serves "
                                                  f"{self.model_id}")  # fmt: skip
        if melody.ndim != 1 or not 0 < melody.shape[0] <= MELODY_MAX_SAMPLES:
            raise InvalidMusicInput("melody_pcm", f"must be 1..{MELODY_MAX_SAMPLES} mono samples at 32 kHz")
        if not np.isfinite(melody).all():
            raise InvalidMusicInput("melody_pcm", "must be finite numbers")

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
        """The whole song as one array (windows joined). `on_step(step, total)` counts steps over all windows."""
        report = None
        if on_step is not None:
            total = sum(w.new_frames + self.max_delay for w in self.plan(duration_seconds))
            report = lambda p: on_step(min(total, round(p.fraction * total)), total)  # noqa: E731
        pieces = [
            piece.audio
            for piece in self.stream(
                prompt, duration_seconds, seed=seed, guidance_scale=guidance_scale, on_progress=report, interrupt=interrupt
            )
        ]
        return MusicOutput(np.concatenate(pieces) if len(pieces) > 1 else pieces[0], self.sample_rate)

    def stream(
        self,
        prompt: str,
        duration_seconds: float,
        *,
        seed: int,
        guidance_scale: float | None = None,
        on_progress: SegmentCallback | None = None,
        interrupt: threading.Event | None = None,
        melody: np.ndarray | None = None,
    ) -> Iterator[MusicPiece]:
        """The song as final, contiguous pieces, one per window, each yielded as soon as its window is decoded.
        `melody` (mono float32 at 32 kHz, melody presets only) is the tune every window follows (its chroma).

        Holds at most one window's audio and codes. The pieces add up to exactly round(duration · rate) samples.
        """
        # 1. check inputs, plan the windows
        self.check_inputs(prompt, duration_seconds, guidance_scale)
        self.check_melody(melody)
        total_samples = self.num_samples(duration_seconds)
        windows = self.plan(duration_seconds)
        count = len(windows)
        all_steps = sum(w.new_frames + self.max_delay for w in windows)
        hold = self.hold

        # 2. encode the text prompt (and the melody's chroma) once: every window gets the same conditioning
        inputs = self.processor(text=[prompt], padding=True, return_tensors="pt")
        if melody is not None:
            # The feature extractor on its own: through the processor (transformers 5) the audio's attention mask
            # replaces the text's. At 32 kHz already: its own resampling of numpy input is wrong.
            chroma = self.processor.feature_extractor(melody, sampling_rate=MELODY_RATE, return_tensors="pt")
            inputs["input_features"] = chroma["input_features"]
        inputs = inputs.to(self.device)

        codes: torch.Tensor | None = None  # (codebooks, frames) of the previous window
        tail: np.ndarray | None = None  # the previous window's audio from `emitted` on, kept for the join
        emitted = 0  # samples yielded so far
        steps_before = 0
        for window in windows:
            if interrupt is not None and interrupt.is_set():
                raise Cancelled("music generation cancelled")
            steps = window.new_frames + self.max_delay

            def step_done(step: int, total: int, window: MusicWindow = window, before: int = steps_before) -> None:
                if on_progress is not None:
                    on_progress(SegmentProgress(step, total, window.index, count, (before + step) / all_steps))

            # 3. generate this window's codes, seeded, prompted with the previous window's last codes
            prompt_codes = codes[:, -window.prompt_frames :] if codes is not None else None
            pcm, codes = self._window(inputs, prompt_codes, steps, segment_seed(seed, window.index),
                                      guidance_scale, step_done, interrupt)  # fmt: skip
            steps_before += steps

            # 4. keep the new part; join it to the previous window inside the re-decoded prompt
            start = window.start_frame * self.hop  # sample (in the song) where this window's audio begins
            last = window.index == count - 1
            stop = total_samples if last else start + pcm.shape[0] - hold
            if pcm.shape[0] < stop - start:
                raise RuntimeError(f"model returned {pcm.shape[0]} samples, expected at least {stop - start}")
            if tail is None:
                audio = pcm[emitted - start : stop - start]
            else:
                fade = self.crossfade_samples
                joined = crossfade(tail[:fade], pcm[emitted - start : emitted - start + fade])
                audio = np.concatenate([joined, pcm[emitted - start + fade : stop - start]])
            yield MusicPiece(emitted, np.ascontiguousarray(audio, dtype=np.float32), window.index, count)
            tail = None if last else pcm[stop - start :].copy()
            emitted = stop

    def _window(
        self,
        inputs,
        prompt_codes: torch.Tensor | None,
        steps: int,
        seed: int,
        guidance_scale: float | None,
        on_step: ProgressCallback,
        interrupt: threading.Event | None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """One MusicGen pass: (audio of prompt + new frames as (samples, channels) float32, their codes)."""
        torch.manual_seed(seed)
        watch = _StepWatch(steps, on_step, interrupt)
        extra = {}
        if prompt_codes is not None:
            # Codes, not audio: the prompt is continued exactly (no re-encoding), as audiocraft does.
            extra["decoder_input_ids"] = prompt_codes.reshape(self.num_codebooks, -1)
        try:
            with torch.inference_mode():
                audio = self.model.generate(
                    **inputs,
                    **extra,
                    do_sample=self.do_sample,
                    top_k=self.top_k,
                    guidance_scale=guidance_scale or self.guidance_scale,
                    max_new_tokens=steps,
                    stopping_criteria=StoppingCriteriaList([watch]),
                )
        except RuntimeError:
            # stopped half-way, generate() cannot always undo the delay pattern of a prompted window
            if interrupt is not None and interrupt.is_set():
                raise Cancelled("music generation cancelled") from None
            raise
        if interrupt is not None and interrupt.is_set():
            raise Cancelled("music generation cancelled")
        pcm = np.ascontiguousarray(audio[0].float().cpu().numpy().T)  # (channels, samples) → (samples, channels)
        return pcm, self._codes(watch.ids, prompt_codes)

    def _codes(self, ids: torch.Tensor, prompt_codes: torch.Tensor | None) -> torch.Tensor:
        """Undo the delay pattern: (codebooks, frames) for every complete frame (prompt included) of the window."""
        ids = ids.reshape(-1, self.num_codebooks, ids.shape[-1])[0]  # batch of one: (codebooks, 1 + frames + delay)
        frames = ids.shape[-1] - 1 - self.max_delay
        codes = torch.stack([ids[k, 1 + d : 1 + d + frames] for k, d in enumerate(self._delays)])
        if prompt_codes is not None:
            # generate() keeps the prompt where the delay pattern overlaps it; the raw ids there are placeholders
            codes[:, : prompt_codes.shape[-1]] = prompt_codes
        return codes.clone()


def _classes(preset: MusicPreset) -> tuple[type, type]:
    """The preset's model and processor classes; a processor whose packages are missing is a MusicLoadError."""
    for package in preset.requires:
        try:
            __import__(package)
        except Exception as error:  # noqa: BLE001 — a broken install raises OSError/RuntimeError, not ImportError
            raise MusicLoadError(
                f"music preset {preset.name!r} needs the Python package {package!r} for its {preset.processor_class} "
                f"(import failed: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}); "
                f"install tunereel[melody] in the music environment (the CUDA music image has it), then restart"
            ) from None
    try:
        return getattr(transformers, preset.model_class), getattr(transformers, preset.processor_class)
    except (AttributeError, ImportError, OSError) as error:
        raise MusicLoadError(f"music preset {preset.name!r}: transformers cannot provide its classes ({error})") from None
