"""Where a loaded MusicGen's parts live on the accelerator: the music service's memory modes.

MusicGen is three models in one: a T5 text encoder (run once per window), the decoder (run once per codec frame,
50 times per second of audio, with a key/value cache that grows with the window) and the EnCodec audio codec (run once
per window to decode the codes). The decoder and its cache are what need the accelerator.

- `full`: all three on the accelerator (fastest; what transformers' and audiocraft's examples do).
- `model-offload`: the decoder on the accelerator; the text encoder and the codec wait in CPU memory and visit the
  accelerator only for their one call per window (like diffusers' `enable_model_cpu_offload`, one component at a
  time). Saves their weights' memory (musicgen-*: T5-base ~110 M parameters + EnCodec ~60 M, i.e. ~0.35 GB in
  float16) for two host-to-device copies per window.

- `auto` (the presets' default): `full` when the weights plus one window's key/value cache (classifier-free guidance
  doubles the batch) fit in 90 % of the accelerator's free memory, else `model-offload`. On a CPU: `full`.

What transformers/accelerate offer beyond that does not fit MusicGen honestly: layer-by-layer (sequential) offload or
group offload would stream the decoder's weights over PCIe once per *token* (1 500 times per 30 s window; for
musicgen-large ~6.6 GB each time), and the decoder's cross-attention inputs come from the text encoder, so the decoder
cannot be cast to another dtype alone (docs/benchmarks.md). On a CPU there is nothing to offload: every mode runs the
same (float32; services/music/acceleration.py applies there).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
from torch import nn

from tunereel.presets import MUSIC_MEMORY_MODES

__all__ = ["ENV_VAR", "InvalidMemoryMode", "choose_mode", "memory_mode", "place"]

ENV_VAR = "TUNEREEL_MUSIC_MEMORY"


class InvalidMemoryMode(ValueError):
    pass


def memory_mode(preset_default: str, setting: str | None = None) -> str:
    """The mode to run: `setting`, else $TUNEREEL_MUSIC_MEMORY, else the preset's default."""
    mode = (setting or os.environ.get(ENV_VAR) or preset_default).strip().lower()
    if mode not in MUSIC_MEMORY_MODES:
        raise InvalidMemoryMode(f"{ENV_VAR}: unknown music memory mode {mode!r}; use one of {', '.join(MUSIC_MEMORY_MODES)}")
    return mode


def choose_mode(model: nn.Module, free_bytes: int, window_frames: int = 1500) -> str:
    """`auto`'s choice for a model not yet on the accelerator: does everything fit in 90 % of `free_bytes`?"""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    decoder = model.decoder.config
    element = next(model.decoder.parameters()).element_size()
    # self-attention keys and values, every layer, a batch of 2 (guidance), one window of frames
    cache = 2 * decoder.num_hidden_layers * 2 * window_frames * decoder.hidden_size * element
    return "full" if weights + cache <= 0.9 * free_bytes else "model-offload"


def place(model: nn.Module, device: torch.device, mode: str) -> nn.Module:
    """Put `model`'s parts where `mode` says; returns it. Records the mode run as `model.tunereel_memory`."""
    if mode == "auto":
        mode = "full" if device.type == "cpu" else choose_mode(model, torch.cuda.mem_get_info(device)[0])
    model.to(device)
    if mode == "model-offload" and device.type != "cpu":
        for name, method in (("text_encoder", "forward"), ("audio_encoder", "decode")):
            _visit_for_calls(getattr(model, name), method, device)
    model.tunereel_memory = mode
    return model


def _visit_for_calls(module: nn.Module, method: str, device: torch.device) -> None:
    """Keep `module` in CPU memory; `module.<method>(...)` moves it to `device` for the call, then back."""
    module.to("cpu")
    original: Callable = getattr(module, method)

    @functools.wraps(original)
    def visiting(*args, **kwargs):
        module.to(device)
        try:
            return original(*args, **kwargs)
        finally:
            module.to("cpu")

    setattr(module, method, visiting)
