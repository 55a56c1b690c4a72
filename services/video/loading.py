"""Loading an LTX-Video preset the way its repository is published, then placing it on the GPU in a memory mode.

Three layouts (tunereel.presets.VideoPreset): a local folder saved with `save_pretrained` (tiny); a diffusers-format
hub repository read from the local Hugging Face cache; or a single-file checkpoint in a hub repository, whose
transformer and VAE load with diffusers' `from_single_file` against the configs of `config_source`, which also
supplies the text encoder, tokenizer and scheduler. Nothing is downloaded: missing weights raise ModelMissing with
the `hf download` commands that fetch them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    LTXConditionPipeline,
    LTXLatentUpsamplePipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

from tunereel.catalog import download_commands
from tunereel.loading import ModelMissing, load_offline
from tunereel.memory import GiB, ModelFootprint, check_memory_mode, choose_memory_mode
from tunereel.presets import VideoPreset, resolve_source

__all__ = [
    "PIPELINE_CLASSES",
    "ModelLoadError",
    "apply_memory_mode",
    "free_gpu_bytes",
    "load_ltx",
    "load_upsampler",
    "resolve_memory_mode",
]

log = logging.getLogger("tunereel.video")

PIPELINE_CLASSES = {"LTXPipeline": LTXPipeline, "LTXConditionPipeline": LTXConditionPipeline}


class ModelLoadError(RuntimeError):
    """Loading failed for a reason the operator can fix; the message says how."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _missing(preset: VideoPreset, error: Exception) -> ModelMissing:
    how = "; ".join(f"`{command}`" for command in download_commands(preset))
    return ModelMissing(
        f"weights of video preset {preset.name!r} are not in the local Hugging Face cache and tunereel never "
        f"downloads at run time: run {how} once on a machine with network access (or fill HF_HOME on the volume), "
        f"then restart the service ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    )


def load_ltx(preset: VideoPreset, models_dir: Path | None, dtype: torch.dtype):
    """The preset's pipeline (class `preset.pipeline_class`) with its weights in `dtype`, on the CPU."""
    cls = PIPELINE_CLASSES[preset.pipeline_class]
    source = resolve_source(preset.source, models_dir)
    if preset.source.startswith("local:") or Path(source).is_absolute() or source.startswith("."):
        return load_offline(cls.from_pretrained, source, dtype=dtype)
    from huggingface_hub import hf_hub_download

    try:
        if preset.single_file is None:
            return cls.from_pretrained(source, revision=preset.revision, dtype=dtype, local_files_only=True)
        checkpoint = hf_hub_download(source, preset.single_file, revision=preset.revision, local_files_only=True)
        common = dict(config=preset.config_source, config_revision=preset.config_revision, local_files_only=True,
                      dtype=dtype)  # fmt: skip
        transformer = LTXVideoTransformer3DModel.from_single_file(checkpoint, subfolder="transformer", **common)
        vae = AutoencoderKLLTXVideo.from_single_file(checkpoint, subfolder="vae", **common)
        return cls.from_pretrained(
            preset.config_source, revision=preset.config_revision, transformer=transformer, vae=vae, dtype=dtype,
            local_files_only=True,
        )  # fmt: skip
    except (OSError, ValueError) as error:  # huggingface_hub's "not in the cache" errors are OSErrors
        raise _missing(preset, error) from error


def load_upsampler(preset: VideoPreset, vae, dtype: torch.dtype) -> LTXLatentUpsamplePipeline:
    """The latent upsampler of quality "final", sharing the main pipeline's VAE (no second copy)."""
    try:
        model = LTXLatentUpsamplerModel.from_pretrained(
            preset.upsampler, subfolder="latent_upsampler", revision=preset.upsampler_revision, dtype=dtype,
            local_files_only=True,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        raise _missing(preset, error) from error
    return LTXLatentUpsamplePipeline(vae=vae, latent_upsampler=model.eval())


def free_gpu_bytes(device: torch.device) -> float | None:
    """Free memory of the GPU, or None when the device is not one."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return float(free)


def resolve_memory_mode(mode: str, preset: VideoPreset, device: torch.device) -> str:
    """`mode` itself, or for "auto" the fastest mode that fits the GPU's free memory (tunereel.memory)."""
    check_memory_mode(mode)
    if mode != "auto":
        return mode
    footprint = ModelFootprint(preset.transformer_params, preset.text_encoder_params)
    free = free_gpu_bytes(device)
    chosen = choose_memory_mode(footprint, free)
    if free is not None:
        log.info("memory mode %s chosen for %.1f GiB free", chosen, free / GiB)
    return chosen


def apply_memory_mode(pipe, mode: str, device: torch.device, dtype: torch.dtype) -> None:
    """Place the pipeline's components as `mode` says (diffusers' documented APIs; tunereel.memory)."""
    if mode == "full":
        pipe.to(device)
    elif mode == "model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "fp8":
        # The LTX-Video page's memory example: float8 storage, compute in the pipeline's dtype.
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "group-offload":
        from diffusers.hooks import apply_group_offloading

        # As the LTX-Video page's memory example: transformer leaf by leaf, T5 two blocks at a time, VAE leaf level.
        stream = device.type == "cuda"
        pipe.transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="leaf_level", use_stream=stream
        )
        apply_group_offloading(pipe.text_encoder, onload_device=device, offload_type="block_level",
                               num_blocks_per_group=2)  # fmt: skip
        apply_group_offloading(pipe.vae, onload_device=device, offload_type="leaf_level")
        # LTX-2's other parts (audio VAE, vocoder, text connectors: small) stay on the GPU.
        for name in ("audio_vae", "vocoder", "connectors"):
            component = getattr(pipe, name, None)
            if isinstance(component, torch.nn.Module):
                component.to(device)
    else:
        check_memory_mode(mode)
        raise ValueError(f"memory mode {mode!r} cannot be applied")
