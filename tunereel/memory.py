"""GPU memory modes: how much of a model stays on the GPU, chosen by a setting or from the GPU's free memory.

The modes are diffusers' documented memory savers (docs/source/en/optimization/memory.md, and the LTX-Video page's
"memory" example):

    full           every component on the GPU (fastest)
    model-offload  `enable_model_cpu_offload`: each component moves to the GPU only while it runs
    fp8            the transformer's weights stored in float8 and cast per layer (`enable_layerwise_casting`),
                   plus model offload so the text encoder and the transformer are never on the GPU together
    group-offload  `enable_group_offload` / `apply_group_offloading`: groups of layers stream to the GPU as they
                   run (least GPU memory, slowest)

`choose_memory_mode` is pure: a list of component sizes and a free-memory figure in, a mode out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MEMORY_MODES", "ModelFootprint", "UnknownMemoryMode", "choose_memory_mode", "check_memory_mode"]

MEMORY_MODES = ("full", "model-offload", "fp8", "group-offload")

GiB = 1024**3


class UnknownMemoryMode(ValueError):
    def __init__(self, mode: str):
        super().__init__(f"memory mode {mode!r} is unknown; choose one of: auto, {', '.join(MEMORY_MODES)}")
        self.message = self.args[0]


@dataclass(frozen=True)
class ModelFootprint:
    """Parameter counts of the big components and the working memory a generation needs beyond its weights."""

    transformer_params: float
    text_encoder_params: float
    other_params: float = 0.5e9  # VAE (+ latent upsampler)
    bytes_per_param: int = 2  # bfloat16 / float16
    working_bytes: float = 6 * GiB  # activations, attention, and the tiled VAE decode at 768x512 (docs/benchmarks.md)

    def weights(self, params: float) -> float:
        return params * self.bytes_per_param


def check_memory_mode(mode: str) -> str:
    if mode != "auto" and mode not in MEMORY_MODES:
        raise UnknownMemoryMode(mode)
    return mode


def choose_memory_mode(footprint: ModelFootprint, free_bytes: float | None) -> str:
    """The fastest mode whose GPU peak fits in `free_bytes`; "full" when there is no GPU (free_bytes None).

    Peaks: full holds every component; model-offload the largest one; fp8 the larger of the float8 transformer
    (1 byte per parameter) and the text encoder; group-offload about one group of layers (always chosen last).
    """
    if free_bytes is None:
        return "full"
    f = footprint
    transformer, text, other = f.weights(f.transformer_params), f.weights(f.text_encoder_params), f.weights(f.other_params)
    peaks = {
        "full": transformer + text + other,
        "model-offload": max(transformer, text, other),
        "fp8": max(f.transformer_params * 1, text, other),
    }
    for mode in ("full", "model-offload", "fp8"):
        if peaks[mode] + f.working_bytes <= free_bytes:
            return mode
    return "group-offload"
