"""Ltx2Video: prompt + the music it plays under → LTX-2.5 (diffusers LTX2DFRPipeline) → uint8 RGB frames. No gRPC.

LTX-2 is one model of video and audio whose video stream cross-attends to the audio stream. In diffusers 0.42.1 the
pipeline that holds given audio fixed is LTX2DFRPipeline: `audio_latents` (raw, unpacked (batch, channels, length,
mel bins) latents of its audio VAE) with `freeze_audio=True` keep the audio at sigma 0 (no audio Euler step) while the
video is denoised hearing it. The music is encoded as LTX-2 itself encodes audio: resampled to the audio VAE's rate
(16 kHz), a log-mel spectrogram (Hann window n_fft 1024, the VAE's hop 160 and mel bins 64, Slaney mel scale and
norm, magnitude, log of max(·, 1e-5); LTX-2's ltx-core AudioProcessor), the audio VAE's encoder, the posterior mode.
LTX-2's own decoded audio is dropped: the MP4's audio is always the music itself (the composer muxes it).

Frame conditions go through the DFR pipeline's own `conditions` argument (diffusers `LTX2VideoCondition`: `frames`,
`index` — a latent index — and `strength`; an `index == 0` condition is VAE-encoded and pinned as the clean target of
the first latent frames, `LTX2DFRPipeline.prepare_latents`), next to `audio_latents` + `freeze_audio=True`, so the
video still hears the music:
- a start image (the request's, or its scene's) is `LTX2VideoCondition(frames=image, index=0, strength=1.0)` on the
  first pass, as diffusers' LTX2ConditionPipeline example conditions a first frame; `crf` is left to the pipeline,
  which re-compresses a single-frame condition at the CRF the model was trained with (18 for LTX-2.5);
- a video longer than one pass (`preset.max_frames`) is a chain of passes planned as LTX-Video's
  (tunereel.segments.plan_video): every pass after the first is conditioned (index 0, strength 1) on the last
  `preset.overlap_frames` (k·8 + 1) frames of the pass before, which it re-makes as its first frames before going on,
  and the seams are joined as LTX-Video's (services/video/pipeline.py SegmentJoin: a short cross-fade of
  `blend_frames`, the rest of the overlap cut). Each pass hears the music under its own frames, from its first one.
The same surface as VideoPipeline (services/video/pipeline.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import LTX2DFRPipeline
from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

from tunereel.loading import load_offline, pick_device, pick_dtype
from tunereel.presets import VideoPreset, resolve_source
from tunereel.request import LIMITS
from tunereel.segments import SegmentProgress, VideoSegment, plan_video, segment_seed
from tunereel.streaming import Cancelled

from .loading import ModelLoadError, apply_memory_mode, resolve_memory_mode
from .pipeline import InvalidVideoInput, SegmentJoin, VideoPiece, check_picture

__all__ = ["Ltx2Video", "AudioClip", "log_mel"]

SegmentCallback = Callable[[SegmentProgress], None]
MEL_N_FFT = 1024  # LTX-2 ltx-core AudioProcessor (n_fft = win_length)


class AudioClip:
    """Audio handed to a video request: (samples, channels) float32 at `sample_rate`."""

    def __init__(self, pcm: np.ndarray, sample_rate: int):
        self.pcm = np.asarray(pcm, dtype=np.float32).reshape(len(pcm), -1)
        self.sample_rate = int(sample_rate)

    def seconds(self, start: float, stop: float) -> np.ndarray:
        """The slice from `start` to `stop` seconds, zero-padded past the end."""
        a, b = round(start * self.sample_rate), round(stop * self.sample_rate)
        out = np.zeros((b - a, self.pcm.shape[1]), dtype=np.float32)
        part = self.pcm[a:b]
        out[: len(part)] = part
        return out


def _slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney mel scale with Slaney (area) normalisation."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        linear = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, linear)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        linear = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, linear)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    filters = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(filters).float()


def _resample(pcm: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return pcm
    from scipy.signal import resample_poly

    g = math.gcd(source_rate, target_rate)
    return resample_poly(pcm, target_rate // g, source_rate // g, axis=0).astype(np.float32)


def log_mel(pcm: np.ndarray, sample_rate: int, *, target_rate: int, hop: int, mel_bins: int) -> torch.Tensor:
    """(samples, channels) audio → (1, 2, frames, mel_bins) log-mel, as LTX-2's audio VAE takes it (stereo: mono is
    duplicated)."""
    audio = _resample(pcm, sample_rate, target_rate)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    wave = torch.from_numpy(np.ascontiguousarray(audio[:, :2].T))  # (2, samples)
    spec = torch.stft(wave, MEL_N_FFT, hop, MEL_N_FFT, torch.hann_window(MEL_N_FFT), center=True, pad_mode="reflect",
                      return_complex=True).abs()  # fmt: skip
    mel = _slaney_mel_filters(target_rate, MEL_N_FFT, mel_bins) @ spec  # (2, mel, frames)
    return torch.log(mel.clamp(min=1e-5)).permute(0, 2, 1).unsqueeze(0)


class Ltx2Video:
    family = "ltx2"

    def __init__(self, pipe: LTX2DFRPipeline, *, preset: VideoPreset, model_id: str, memory_mode: str = "full"):
        self.pipe = pipe
        self.preset = preset
        self.model_id = model_id
        self.memory_mode = memory_mode
        self.spatial_compression = int(pipe.vae_spatial_compression_ratio)
        self.temporal_compression = int(pipe.vae_temporal_compression_ratio)
        self.max_total_frames = int(LIMITS.max_duration_seconds * LIMITS.max_fps)
        self.pipe.set_progress_bar_config(disable=True)
        if preset.continuation != "video" or preset.blend_frames > preset.overlap_frames:
            raise ValueError(f"preset {preset.name}: LTX-2 continues a pass with a video condition "
                             "(continuation 'video'), and blend_frames ≤ overlap_frames")  # fmt: skip

    @classmethod
    def from_preset(cls, preset: VideoPreset, models_dir: Path | None = None, *, quality: str = "draft",
                    memory: str = "auto") -> Ltx2Video:  # fmt: skip
        """Load the preset offline; memory modes as LTX-Video's (services/video/loading.py, tunereel.memory): the
        Gemma text encoder is the large part, so model offload / fp8 / group offload apply as documented."""
        device = pick_device()
        dtype = pick_dtype(preset.dtype, device)
        mode = resolve_memory_mode(memory, preset, device)
        source = resolve_source(preset.source, models_dir)
        local = preset.source.startswith("local:") or Path(source).is_absolute() or source.startswith(".")
        where = {} if local or preset.revision is None else {"revision": preset.revision}
        try:
            # optional components never used here (prompt enhancement is off): not loaded, not needed on disk
            pipe = load_offline(LTX2DFRPipeline.from_pretrained, source, dtype=dtype, prompt_enhancer=None,
                                processor=None, **where)  # fmt: skip
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"video preset {preset.name!r}: {str(error).splitlines()[0][:200]}") from None
        apply_memory_mode(pipe, mode, device, dtype)
        return cls(pipe, preset=preset, model_id=Path(source).name if local else source, memory_mode=mode)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def steps_for(self, requested: int | None) -> int:
        return len(self.preset.sigmas)

    def check_inputs(self, prompt: str, width: int, height: int, num_frames: int, fps: int, steps: int, guidance: float) -> None:
        check_picture(prompt, width, height, num_frames, fps, spatial_compression=self.spatial_compression,
                      max_total_frames=self.max_total_frames)  # fmt: skip
        if steps != len(self.preset.sigmas):
            raise InvalidVideoInput("num_inference_steps", f"preset {self.preset.name} runs its {len(self.preset.sigmas)}"
                                    f"-step distilled schedule (got {steps}); leave it 0")  # fmt: skip
        if guidance != 1.0:
            raise InvalidVideoInput("guidance_scale", f"preset {self.preset.name} runs without guidance; leave it 0")

    def plan(self, num_frames: int) -> list[VideoSegment]:
        """The passes, as LTX-Video's: one when it fits, else a chain each conditioned on the end of the one before."""
        return plan_video(num_frames, self.preset.max_frames, self.preset.overlap_frames, self.temporal_compression)

    def model_frames(self, segment: VideoSegment) -> int:
        """Frames one pass makes for a segment: the next 8k+1 ≥ its frames, at least 9 (the DFR canvas)."""
        return max(self.temporal_compression + 1, segment.model_frames)

    def encode_audio(self, clip: AudioClip, start: float, num_frames: int, fps: int) -> torch.Tensor:
        """Raw audio latents (1, channels, length, mel bins) of the music under this pass, as long as the DFR canvas."""
        canvas, _, _ = resolve_canvas(num_frames, self.temporal_compression)
        per_second = self.pipe.audio_sampling_rate / self.pipe.audio_hop_length / self.pipe.audio_vae_temporal_compression_ratio
        length = round(canvas / fps * per_second)  # what LTX2DFRPipeline makes for this canvas
        mel = log_mel(clip.seconds(start, start + canvas / fps), clip.sample_rate, target_rate=self.pipe.audio_sampling_rate,
                      hop=self.pipe.audio_hop_length, mel_bins=self.pipe.audio_mel_bins)  # fmt: skip
        vae = self.pipe.audio_vae
        with torch.no_grad():
            latents = vae.encode(mel.to(self.device, vae.dtype)).latent_dist.mode()
        if latents.shape[2] < length:
            latents = torch.nn.functional.pad(latents, (0, 0, 0, length - latents.shape[2]))
        return latents[:, :, :length]

    def call_settings(self) -> dict:
        p = self.preset
        return dict(sigmas=list(p.sigmas), decode_timestep=p.decode_timestep, decode_noise_scale=p.decode_noise_scale,
                    max_sequence_length=p.max_sequence_length)  # fmt: skip

    def conditions(self, segment: VideoSegment, held: np.ndarray | None, image: PIL.Image.Image | None) -> dict:
        """The pass's frame condition, if any: the previous pass's last frames (a continuation), or the start image
        (the first pass), each at latent index 0 with strength 1 (see the module docstring)."""
        if held is not None:  # (overlap, h, w, 3) uint8: diffusers takes channels-last arrays in 0..255
            return dict(conditions=[LTX2VideoCondition(frames=held, index=0, strength=1.0)])
        if image is not None and segment.index == 0:
            return dict(conditions=[LTX2VideoCondition(frames=image, index=0, strength=1.0)])
        return {}

    def stream(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        num_frames: int,
        fps: int,
        seed: int,
        audio: AudioClip | None = None,
        image: PIL.Image.Image | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        on_progress: SegmentCallback | None = None,
        interrupt: threading.Event | None = None,
    ) -> Iterator[VideoPiece]:
        """Exactly `num_frames` frames, one piece per pass. With `audio`, every pass hears its slice (frozen); `image`
        (width x height RGB, see fit_condition_image) conditions the first pass's frame 0."""
        steps = num_inference_steps or self.steps_for(None)
        # 1. check inputs, plan the passes
        self.check_inputs(prompt, width, height, num_frames, fps, steps, guidance_scale or 1.0)
        if image is not None and image.size != (width, height):
            raise InvalidVideoInput("image", f"must be {width}x{height} here (got {image.size[0]}x{image.size[1]})")
        segments = self.plan(num_frames)
        join = SegmentJoin(len(segments), overlap=self.preset.overlap_frames, blend=self.preset.blend_frames)
        for segment in segments:
            if interrupt is not None and interrupt.is_set():
                raise Cancelled("video generation cancelled")
            frames = self.model_frames(segment)

            def step_end(pipe, step: int, timestep, callback_kwargs: dict, index=segment.index) -> dict:
                if interrupt is not None and interrupt.is_set():
                    raise Cancelled("video generation cancelled")
                if on_progress is not None:
                    on_progress(SegmentProgress(step + 1, steps, index, len(segments),
                                                (index + (step + 1) / steps) / len(segments)))  # fmt: skip
                return callback_kwargs

            # 2. the music under this pass (from its first frame, condition frames included), encoded by LTX-2's
            # audio VAE and held fixed; the pass's frame condition
            heard = {}
            if audio is not None:
                heard = dict(audio_latents=self.encode_audio(audio, segment.start / fps, frames, fps), freeze_audio=True)
            conditioned = self.conditions(segment, join.held, image)
            # 3-5. encode prompt → denoise hearing the music → decode video (inside diffusers)
            generator = torch.Generator(device="cpu").manual_seed(segment_seed(seed, segment.index))
            with torch.inference_mode():
                result = self.pipe(prompt=prompt, width=width, height=height, num_frames=frames, frame_rate=float(fps),
                                   generator=generator, callback_on_step_end=step_end, output_type="pt",
                                   **self.call_settings(), **heard, **conditioned)  # fmt: skip
            # 6. uint8 frames (its audio is dropped), cut to this segment's share, joined to the one before at the seam
            video = result.frames[0][: segment.condition_frames + segment.new_frames]  # (frames, 3, h, w) in 0..1
            out = video.permute(0, 2, 3, 1).mul(255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            del result, video
            yield join.add(segment, out)
