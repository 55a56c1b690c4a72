"""VideoPipeline: prompt → LTX-Video latents → denoise → decode → exactly `num_frames` uint8 RGB frames.

No gRPC here. One diffusers pipeline call makes one segment (LTX needs 8k+1 frames, at most `preset.max_frames`, so
it runs for the next such count and the output is cut). A step callback reports progress and stops denoising when
interrupted.

Longer videos are a chain of segments (tunereel.segments.plan_video). Every segment after the first is one call of a
conditioning pipeline that shares the loaded weights: diffusers' `LTXConditionPipeline`, conditioned (strength 1) on
the last `overlap_frames` frames of the segment before, which it re-makes as its first frames before going on
(LTX-Video 0.9.5+); or, for checkpoints without video conditioning, `LTXImageToVideoPipeline` on the last frame. The
seam is a short cross-fade (`blend_frames`) between the previous segment's own last frames and the new segment's
re-made ones, which show the same content; the rest of the overlap is cut (SegmentJoin, which LTX-2's chain in
services/video/ltx2.py shares). `stream()` yields each segment's frames as soon as it is made, and holds no more than
one segment; `__call__` returns all frames in one array.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, LTXImageToVideoPipeline, LTXPipeline
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
from diffusers.video_processor import VideoProcessor

from tunereel.loading import pick_device, pick_dtype
from tunereel.presets import VideoPreset
from tunereel.request import LIMITS
from tunereel.segments import (
    SegmentProgress,
    VideoSegment,
    correlation,
    crossfade_gains,
    model_frame_count,
    plan_video,
    segment_seed,
)
from tunereel.streaming import Cancelled

from .loading import ModelLoadError, apply_memory_mode, load_ltx, load_upsampler, resolve_memory_mode

__all__ = [
    "QUALITIES",
    "InvalidVideoInput",
    "VideoOutput",
    "SegmentJoin",
    "VideoPiece",
    "VideoPipeline",
    "blend_frames",
    "check_picture",
    "model_frame_count",
]

# "draft": one denoising pass per segment. "final": the preset's documented multi-scale flow (presets with `refine`).
QUALITIES = ("draft", "final")

ProgressCallback = Callable[[int, int], None]  # (step, total_steps)
SegmentCallback = Callable[[SegmentProgress], None]

# Frames converted from the pipeline's float output to uint8 at a time (bounds the temporaries).
_CONVERT_FRAMES = 16


class _QuietTimesteps(logging.Filter):
    """LTXConditionPipeline passes its own timesteps by design; diffusers' scheduler warns about that on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "were passed without `sigmas`" not in record.getMessage()


logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete").addFilter(_QuietTimesteps())


class InvalidVideoInput(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field


def check_picture(prompt: str, width: int, height: int, num_frames: int, fps: int, *, spatial_compression: int,
                  max_total_frames: int) -> None:  # fmt: skip
    """What every video family asks of a request: a prompt, a size its VAE divides, a frame count and rate in range."""
    if not prompt or not prompt.strip():
        raise InvalidVideoInput("prompt", "must not be empty")
    for name, value in (("width", width), ("height", height)):
        if not (64 <= value <= 1280) or value % spatial_compression:
            raise InvalidVideoInput(name, f"must be a multiple of {spatial_compression} within 64..1280 (got {value})")
    if not 1 <= num_frames <= max_total_frames:
        raise InvalidVideoInput("num_frames", f"must be within 1..{max_total_frames} (got {num_frames})")
    if not 8 <= fps <= 60:
        raise InvalidVideoInput("fps", f"must be within 8..60 (got {fps})")


@dataclass(frozen=True)
class VideoOutput:
    frames: np.ndarray  # (num_frames, height, width, 3) uint8
    fps: int


@dataclass(frozen=True)
class VideoPiece:
    """Final frames of the video, in order: `start` is the index of the first one in the whole video."""

    start: int
    frames: np.ndarray  # (n, height, width, 3) uint8
    segment: int
    total_segments: int


def blend_frames(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Cross-fade from `old` to `new` frames ((n, h, w, 3) uint8 each) at a steady contrast.

    Each frame's mean is faded linearly; the detail around it with the gains of `crossfade_gains` for the correlation
    of the two runs, so a blend of two renderings of the same content (the usual case) is a plain equal-gain fade,
    and a blend of unrelated content does not dip in contrast halfway.
    """
    n = old.shape[0]
    if n == 0:
        return old.copy()
    a, b = old.astype(np.float32), new.astype(np.float32)
    mean_a = a.mean(axis=(1, 2), keepdims=True)
    mean_b = b.mean(axis=(1, 2), keepdims=True)
    a -= mean_a
    b -= mean_b
    g_out, g_in = crossfade_gains(n, correlation(a, b))
    lin_out, lin_in = g_out / (g_out + g_in), g_in / (g_out + g_in)  # the means fade with gains summing to 1
    shape = (n, 1, 1, 1)
    mixed = (g_out.reshape(shape) * a + g_in.reshape(shape) * b
             + lin_out.reshape(shape) * mean_a + lin_in.reshape(shape) * mean_b)  # fmt: skip
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class SegmentJoin:
    """The seams of a chain of segments (tunereel.segments.plan_video), shared by every video family: each segment's
    frames (its condition frames, which re-make the previous segment's last `overlap` frames, then its new ones) in,
    the final frames out as a VideoPiece. At a seam the last `blend` frames of the segment before are cross-faded into
    the new segment's re-made ones (`blend_frames`); the rest of the overlap is cut. `held` is what the next segment
    is conditioned on: the previous segment's last `overlap` frames (None before the first and after the last)."""

    def __init__(self, count: int, *, overlap: int, blend: int):
        if not 0 <= blend <= overlap:
            raise ValueError(f"blend ({blend}) must be within 0..overlap ({overlap})")
        self.count, self.overlap, self.blend = count, overlap, blend
        self.held: np.ndarray | None = None
        self.emitted = 0  # frames of the video yielded so far

    def add(self, segment: VideoSegment, frames: np.ndarray) -> VideoPiece:
        """`frames`: (condition_frames + new_frames, h, w, 3) uint8, the segment's frames from its first."""
        last = segment.index == self.count - 1
        blend = self.blend
        stop = segment.end if last else segment.end - blend  # the last `blend` frames wait for the next seam
        if self.held is not None and blend:
            c = segment.condition_frames
            seam = blend_frames(self.held[self.held.shape[0] - blend :], frames[c - blend : c])
            out = np.concatenate([seam, frames[c : stop - segment.start]])
        else:
            out = frames[self.emitted - segment.start : stop - segment.start]
        piece = VideoPiece(self.emitted, out, segment.index, self.count)
        self.emitted = stop
        self.held = None if last else frames[frames.shape[0] - self.overlap :].copy()
        return piece


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """(batch, channels, frames, height, width) floats in -1..1 → uint8 (batch, frames, height, width, 3) on the CPU."""
    return video.permute(0, 2, 3, 4, 1).float().mul(0.5).add(0.5).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu()


class _Uint8Decode:
    """The VAE's decode for the pipelines, in bounded memory: the temporal tiles of diffusers' own framewise decoding
    (`AutoencoderKLLTXVideo._temporal_tiled_decode`, with the VAE's tile settings: frames per tile, and the overlap
    cross-faded with the tile before), each converted to uint8 frames as soon as it is blended, instead of all tiles
    kept and concatenated in float. Spatial tiling stays as the VAE is set. The frames are bit for bit those of
    diffusers' framewise decoding. For 257 frames at 768x512 the decode peak falls from about 4 GB to under 2 GB.
    Returns uint8 frames laid out (batch, frames, height, width, 3) and viewed as (batch, channels, frames, height,
    width); `_Uint8Frames` hands them on."""

    def __init__(self, vae):
        self.vae = vae
        self.original = vae.decode
        self.interrupt: threading.Event | None = None  # checked between tiles: a cancel does not wait for the decode

    def __call__(self, z: torch.Tensor, temb: torch.Tensor | None = None, return_dict: bool = True):
        vae = self.vae
        # The VAE's own `decode` runs accelerate's offload hook first (diffusers' `apply_forward_hook`), which moves
        # it to the GPU under model offload; the tiles below call its decoder directly, so run that hook here too.
        # (Group offload and layerwise casting hook every leaf module, which the decoder's calls pass through.)
        hook = getattr(vae, "_hf_hook", None)
        if hook is not None:
            hook.pre_forward(vae)
        tc = vae.temporal_compression_ratio
        tile = vae.tile_sample_min_num_frames // tc
        stride = vae.tile_sample_stride_num_frames // tc
        blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
        if stride < 1 or z.shape[2] <= tile:
            video = to_uint8(self.original(z, temb, return_dict=False)[0])
            return self._wrap(video, return_dict)
        batch, _, frames, height, width = z.shape
        count = (frames - 1) * tc + 1
        out = torch.empty((batch, count, height * vae.spatial_compression_ratio, width * vae.spatial_compression_ratio, 3),
                          dtype=torch.uint8)  # fmt: skip
        previous, filled = None, 0
        with torch.no_grad():
            for i in range(0, frames, stride):
                if self.interrupt is not None and self.interrupt.is_set():
                    raise Cancelled("video generation cancelled")
                part = z[:, :, i : i + tile + 1]
                spatial = vae.use_tiling and (
                    part.shape[-1] > vae.tile_sample_min_width // vae.spatial_compression_ratio
                    or part.shape[-2] > vae.tile_sample_min_height // vae.spatial_compression_ratio
                )
                decoded = vae.tiled_decode(part, temb, return_dict=True).sample if spatial else vae.decoder(part, temb)
                if previous is None:
                    done = decoded[:, :, : vae.tile_sample_stride_num_frames + 1]
                else:
                    decoded = decoded[:, :, :-1]
                    done = vae.blend_t(previous, decoded, blend)[:, :, : vae.tile_sample_stride_num_frames]
                take = min(done.shape[2], count - filled)
                out[:, filled : filled + take] = to_uint8(done[:, :, :take])
                filled += take
                previous = decoded
                if filled >= count:
                    break
        return self._wrap(out, return_dict)

    @staticmethod
    def _wrap(frames: torch.Tensor, return_dict: bool):
        from diffusers.models.autoencoders.vae import DecoderOutput

        video = frames.permute(0, 4, 1, 2, 3)  # a view: (batch, channels, frames, height, width)
        return DecoderOutput(sample=video) if return_dict else (video,)


class _Uint8Frames(VideoProcessor):
    """The pipelines' last step, decoded video → frames: passes on the uint8 frames of `_Uint8Decode` as
    (batch, frames, height, width, 3) on the CPU (diffusers' own postprocessing would make three more float copies
    of the whole segment)."""

    def postprocess_video(self, video: torch.Tensor, output_type: str = "pt", **kwargs) -> torch.Tensor:
        if video.dtype == torch.uint8:
            return video.permute(0, 2, 3, 4, 1)
        out = torch.empty((video.shape[0], video.shape[2], video.shape[3], video.shape[4], 3), dtype=torch.uint8)
        for start in range(0, video.shape[2], _CONVERT_FRAMES):
            part = to_uint8(video[:, :, start : start + _CONVERT_FRAMES])
            out[:, start : start + part.shape[1]] = part
        return out


def _resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(frames, h, w, 3) uint8 → (frames, height, width, 3) uint8, antialiased, a few frames at a time."""
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    out = torch.empty((frames.shape[0], height, width, 3), dtype=torch.uint8)
    for start in range(0, frames.shape[0], _CONVERT_FRAMES):
        part = frames[start : start + _CONVERT_FRAMES].permute(0, 3, 1, 2).float()
        part = torch.nn.functional.interpolate(part, size=(height, width), mode="bilinear", antialias=True)
        out[start : start + part.shape[0]] = part.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _without_dynamic_shift(scheduler):
    """LTXConditionPipeline passes its own timesteps and no resolution-dependent shift (`mu`), so the scheduler must
    not expect one (0.9.0/0.9.1 configs do; 0.9.5+ configs ship without it); the rest of its configuration stays."""
    if scheduler.config.get("use_dynamic_shifting", False):
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, use_dynamic_shifting=False)
    return scheduler


def fit_condition_image(data: bytes, width: int, height: int, max_side: int = 4096) -> PIL.Image.Image:
    """GenerateVideoRequest.image (PNG or JPEG bytes) as the RGB frame-0 condition: resized to cover width x height
    and center-cropped to it. The pixel size is checked from the header before decoding."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG", "WEBP"):
                raise InvalidVideoInput("image", f"must be a PNG, JPEG or WebP file (got {image.format})")
            if max(image.size) > max_side:
                raise InvalidVideoInput("image", f"at most {max_side} pixels a side (got {image.size[0]}x{image.size[1]})")
            rgb = image.convert("RGB")
    except InvalidVideoInput:
        raise
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise InvalidVideoInput("image", f"cannot be decoded ({error})") from None
    return PIL.ImageOps.fit(rgb, (width, height), method=PIL.Image.Resampling.LANCZOS, centering=(0.5, 0.5))


class VideoPipeline:
    def __init__(
        self,
        pipe: LTXPipeline | LTXConditionPipeline,
        *,
        preset: VideoPreset,
        model_id: str,
        max_total_frames: int | None = None,
        quality: str = "draft",
        upsampler=None,
        memory_mode: str = "full",
    ):
        self.pipe = pipe
        self.preset = preset
        self.model_id = model_id
        self.memory_mode = memory_mode
        self.spatial_compression = int(getattr(pipe, "vae_spatial_compression_ratio", 32))
        self.temporal_compression = int(getattr(pipe, "vae_temporal_compression_ratio", 8))
        # A request may last LIMITS.max_duration_seconds at the highest frame rate.
        self.max_total_frames = max_total_frames or int(LIMITS.max_duration_seconds * LIMITS.max_fps)
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)} (got {quality!r})")
        if quality == "final" and (preset.refine is None or upsampler is None):
            raise ValueError(f"preset {preset.name}: quality 'final' needs a preset with a refine pass and its upsampler")
        self.quality = quality
        self.upsampler = upsampler
        if isinstance(pipe, LTXConditionPipeline):
            pipe.scheduler = _without_dynamic_shift(pipe.scheduler)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.video_processor = _Uint8Frames(vae_scale_factor=self.spatial_compression)
        if all(hasattr(pipe.vae, name) for name in ("tiled_decode", "blend_t", "tile_sample_stride_num_frames", "decoder")):
            pipe.vae.decode = _Uint8Decode(pipe.vae)  # this instance only; shared by the continuation pipeline
        self._continuation: LTXConditionPipeline | LTXImageToVideoPipeline | None = None
        if preset.continuation not in ("video", "image"):
            raise ValueError(f"preset {preset.name}: continuation must be 'video' or 'image' (got {preset.continuation!r})")
        if preset.blend_frames > preset.overlap_frames or (preset.continuation == "image" and preset.overlap_frames != 1):
            raise ValueError(f"preset {preset.name}: blend_frames ≤ overlap_frames, and image continuation overlaps 1 frame")

    @classmethod
    def from_preset(
        cls, preset: VideoPreset, models_dir: Path | None = None, *, quality: str = "draft", memory: str = "auto"
    ) -> VideoPipeline:
        device = pick_device()
        dtype = pick_dtype(preset.dtype, device)
        mode = resolve_memory_mode(memory, preset, device)
        if quality not in QUALITIES:
            raise ModelLoadError(f"video quality must be one of {', '.join(QUALITIES)} (got {quality!r})")
        if quality == "final" and preset.refine is None:
            logging.getLogger("tunereel.video").info("preset %s documents one pass only: quality draft", preset.name)
            quality = "draft"
        pipe = load_ltx(preset, models_dir, dtype)
        upsampler = load_upsampler(preset, pipe.vae, dtype) if quality == "final" else None
        apply_memory_mode(pipe, mode, device, dtype)
        if upsampler is not None:
            upsampler.latent_upsampler.to(device)  # ~0.5 GB; the VAE it shares is placed with the main pipeline
        # Decoding hundreds of frames at once would need tens of GB; tiles bound it. Temporal tiles of 64 frames (8 of
        # them cross-faded with the tile before) decode as fast as one piece and keep a 257-frame decode at 768x512
        # under 2 GB (diffusers' default of 16 frames takes 3x longer for little more saving).
        pipe.vae.enable_tiling(tile_sample_min_num_frames=64, tile_sample_stride_num_frames=56)
        source = preset.source
        model_id = Path(source.removeprefix("local:")).name if source.startswith("local:") or Path(source).is_dir() else source
        return cls(pipe, preset=preset, model_id=model_id, quality=quality, upsampler=upsampler, memory_mode=mode)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def plan(self, num_frames: int) -> list[VideoSegment]:
        return plan_video(num_frames, self.preset.max_frames, self.preset.overlap_frames, self.temporal_compression)

    def steps_for(self, requested: int | None) -> int:
        """Denoising steps of one pass: the preset's schedule, or the request's count where the preset allows one."""
        return len(self.preset.timesteps) if self.preset.timesteps else (requested or self.preset.num_inference_steps)

    def check_inputs(self, prompt: str, width: int, height: int, num_frames: int, fps: int, steps: int, guidance: float) -> None:
        check_picture(prompt, width, height, num_frames, fps, spatial_compression=self.spatial_compression,
                      max_total_frames=self.max_total_frames)  # fmt: skip
        if not 1 <= steps <= 100:
            raise InvalidVideoInput("num_inference_steps", f"must be within 1..100 (got {steps})")
        if self.preset.timesteps and steps != len(self.preset.timesteps):
            raise InvalidVideoInput(
                "num_inference_steps",
                f"preset {self.preset.name} runs the {len(self.preset.timesteps)}-step schedule it was distilled for "
                f"(got {steps}); leave it 0",
            )
        if not 1.0 <= guidance <= 20.0:
            raise InvalidVideoInput("guidance_scale", f"must be within 1.0..20.0 (got {guidance:g})")

    def call_settings(self, steps: int, guidance: float, *, conditioned: bool) -> dict:
        """What every pass hands the diffusers pipeline, from the preset (tunereel.presets cites the source of each):
        the same for the first pass and every continuation."""
        p = self.preset
        settings = dict(
            guidance_scale=guidance,
            guidance_rescale=p.guidance_rescale,
            decode_timestep=p.decode_timestep,
            decode_noise_scale=p.decode_noise_scale,
            max_sequence_length=p.max_sequence_length,
        )
        if p.timesteps:
            settings["timesteps"] = list(p.timesteps)
        else:
            settings["num_inference_steps"] = steps
        if isinstance(self.pipe, LTXConditionPipeline) or (conditioned and p.continuation == "video"):
            settings["image_cond_noise_scale"] = p.image_cond_noise_scale  # an LTXConditionPipeline argument only
        return settings

    def __call__(self, prompt: str, *, num_frames: int, fps: int, on_step: ProgressCallback | None = None, **kwargs) -> VideoOutput:
        """All frames in one array (for short videos and tests; the service streams). `on_step(step, total)` counts
        denoising steps over all segments."""
        report = None
        if on_step is not None:
            steps = self.steps_for(kwargs.get("num_inference_steps"))
            total = steps * len(self.plan(num_frames))
            report = lambda p: on_step(p.segment * p.total_steps + p.step, total)  # noqa: E731
        pieces = [piece.frames for piece in self.stream(prompt, num_frames=num_frames, fps=fps, on_progress=report, **kwargs)]
        return VideoOutput(frames=pieces[0] if len(pieces) == 1 else np.concatenate(pieces), fps=fps)

    def stream(
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
        on_progress: SegmentCallback | None = None,
        interrupt: threading.Event | None = None,
        image: PIL.Image.Image | None = None,
    ) -> Iterator[VideoPiece]:
        """Exactly `num_frames` frames as final pieces, one per segment, each yielded as soon as it is made. `image`
        (width x height RGB, see fit_condition_image) conditions the first segment's frame 0."""
        steps = num_inference_steps or self.steps_for(None)
        guidance = guidance_scale or self.preset.guidance_scale
        # 1. check inputs, plan the segments
        self.check_inputs(prompt, width, height, num_frames, fps, steps, guidance)
        if image is not None and image.size != (width, height):
            raise InvalidVideoInput("image", f"must be {width}x{height} here (got {image.size[0]}x{image.size[1]})")
        segments = self.plan(num_frames)
        count = len(segments)
        all_frames = sum(segment.model_frames for segment in segments)
        common = dict(
            prompt=prompt,
            negative_prompt=negative_prompt or self.preset.negative_prompt,
            width=width,
            height=height,
            frame_rate=fps,
            output_type="pt",  # frames come back as uint8 tensors (_Uint8Frames)
        )
        pass_steps = steps + (self._refine_steps() if self.quality == "final" else 0)

        if isinstance(self.pipe.vae.decode, _Uint8Decode):
            self.pipe.vae.decode.interrupt = interrupt
        try:
            join = SegmentJoin(count, overlap=self.preset.overlap_frames, blend=self.preset.blend_frames)
            frames_before = 0
            for segment in segments:
                if interrupt is not None and interrupt.is_set():
                    raise Cancelled("video generation cancelled")

                def step_end(pipe, step: int, timestep, callback_kwargs: dict, segment=segment, before=frames_before,
                             offset=0) -> dict:  # fmt: skip
                    if interrupt is not None and interrupt.is_set():
                        raise Cancelled("video generation cancelled")
                    if on_progress is not None:
                        done = min(offset + step + 1, pass_steps)
                        fraction = (before + segment.model_frames * done / pass_steps) / all_frames
                        on_progress(SegmentProgress(done, pass_steps, segment.index, count, fraction))
                    return callback_kwargs

                # 2-5. encode prompt → latents from the seeded generator → denoise → decode (all inside diffusers)
                generator = torch.Generator(device="cpu").manual_seed(segment_seed(seed, segment.index))
                start_image = image if segment.index == 0 else None
                settings = self.call_settings(steps, guidance, conditioned=join.held is not None or start_image is not None)
                frames = self._one_pass(join.held, segment, generator, step_end, {**common, **settings}, steps, start_image)
                # 6. uint8 frames, cut to this segment's share, joined to the one before at the seam
                frames_before += segment.model_frames
                yield join.add(segment, frames[: segment.condition_frames + segment.new_frames].numpy())
                del frames
        finally:
            if isinstance(self.pipe.vae.decode, _Uint8Decode):
                self.pipe.vae.decode.interrupt = None

    def _refine_steps(self) -> int:
        refine = self.preset.refine
        return len(refine.timesteps) if refine.timesteps else refine.num_inference_steps

    def _one_pass(self, held: np.ndarray | None, segment: VideoSegment, generator, step_end, kwargs: dict, steps: int,
                  image: PIL.Image.Image | None = None):  # fmt: skip
        """One segment's frames, (frames, height, width, 3) uint8: one pass ("draft"), or generate small → upsample
        the latents 2x → refine → decode → resize ("final"). `held` (the previous segment's last frames) conditions
        it: the segment's first frames re-make them; `image` (the first segment only) conditions frame 0."""
        pipe, kwargs = self._pass_pipe(held, kwargs) if image is None else self._image_pipe(image, kwargs)
        kwargs.update(num_frames=segment.model_frames, generator=generator, callback_on_step_end=step_end)
        if self.quality == "draft":
            result = pipe(**kwargs)
            return result.frames[0]
        refine = self.preset.refine
        width, height = kwargs["width"], kwargs["height"]
        unit = self.spatial_compression
        low_w, low_h = (max(unit, int(v * refine.downscale) // unit * unit) for v in (width, height))
        latents = pipe(**{**kwargs, "width": low_w, "height": low_h, "output_type": "latent"}).frames
        upscaled = self.upsampler(
            latents=latents, adain_factor=refine.adain_factor, tone_map_compression_ratio=refine.tone_map_compression_ratio,
            output_type="latent",
        ).frames  # fmt: skip
        del latents
        schedule = {"timesteps": list(refine.timesteps)} if refine.timesteps else {"num_inference_steps": refine.num_inference_steps}
        kwargs.pop("timesteps", None)
        kwargs.pop("num_inference_steps", None)
        step_end = functools.partial(step_end, offset=steps)
        result = pipe(
            **{**kwargs, **schedule, "width": 2 * low_w, "height": 2 * low_h, "latents": upscaled,
               "denoise_strength": refine.denoise_strength, "callback_on_step_end": step_end},
        )  # fmt: skip
        return _resize_frames(result.frames[0], height, width)

    def _pass_pipe(self, held: np.ndarray | None, kwargs: dict):
        """The pipeline for this pass and its arguments: the loaded one for a first pass (0.9.5+ load as
        LTXConditionPipeline, so text only = no conditions), the conditioning one for a continuation."""
        if held is None:
            return self.pipe, dict(kwargs)
        pipe = self._continuation_pipe()
        condition = torch.from_numpy(held).permute(0, 3, 1, 2).float().div(255.0)  # (frames, 3, h, w) in 0..1
        kwargs = dict(kwargs)
        if self.preset.continuation == "video":
            kwargs["conditions"] = [LTXVideoCondition(video=condition, frame_index=0, strength=1.0)]
        else:
            kwargs["image"] = condition[-1:]
        return pipe, kwargs

    def _image_pipe(self, image: PIL.Image.Image, kwargs: dict):
        """The pipeline and arguments of a first pass that starts from the user's image: LTX-Video's image
        conditioning at frame 0, as diffusers' docs run it (0.9.5+: LTXConditionPipeline with an LTXVideoCondition
        of the image at frame_index 0; 0.9.0/0.9.1: LTXImageToVideoPipeline with `image`)."""
        pipe = self._continuation_pipe()
        kwargs = dict(kwargs)
        if self.preset.continuation == "video":
            kwargs["conditions"] = [LTXVideoCondition(image=image, frame_index=0, strength=1.0)]
        else:
            kwargs["image"] = image
        return pipe, kwargs

    def _continuation_pipe(self):
        """The conditioning pipeline: the loaded one when it is an LTXConditionPipeline, else built once over the
        loaded components (no second copy of the weights)."""
        if self.preset.continuation == "video" and isinstance(self.pipe, LTXConditionPipeline):
            return self.pipe
        if self._continuation is None:
            components = dict(self.pipe.components)
            if self.preset.continuation == "video":
                components["scheduler"] = _without_dynamic_shift(self.pipe.scheduler)
                pipe = LTXConditionPipeline(**components)
            else:
                pipe = LTXImageToVideoPipeline(**components)
            pipe.set_progress_bar_config(disable=True)
            pipe.video_processor = _Uint8Frames(vae_scale_factor=self.spatial_compression)
            self._continuation = pipe
        return self._continuation
