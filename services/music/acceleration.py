"""Faster MusicGen on the machine the music service runs on, with the same output length and the same determinism.

`accelerate(model, device)` is what `MusicPipeline.from_preset` applies to every loaded model. On a CPU, MusicGen's
decode loop is bound by reading the decoder's weights once per step (about 300 M parameters for musicgen-small, so
1.2 GB per step in float32) and, late in a long generation, by copying its growing key/value cache. Two changes:

1. `int8` — weight int8 quantisation of the decoder's `nn.Linear` layers (attention, feed-forward and the four
   codebook heads), per output channel, with PyTorch's dynamic quantisation (fbgemm/oneDNN kernels; activations are
   quantised per call, results come back in float32). 4x fewer bytes per step. The text encoder runs once per request
   and EnCodec must stay in float32 (in bfloat16 its decode is many times slower), so both stay float32 — copied out
   of the memory-mapped checkpoint into process memory, so that no weight is dropped from the page cache and read
   back from disk in the middle of a request (seen on a shared VM: single steps of seconds).
2. `kv-growth` — the decoder's self-attention cache grows in place (capacity doubles) instead of being rebuilt by
   `torch.cat` at every step, so a step no longer copies the whole cache (~200 MB per step at step 500 for
   musicgen-small). Same tokens, bit for bit; no gain measurable at 10 s, kept for the 30 s windows.

What a listener loses, and the speed-up, are measured by `bench/music_speed.py` (docs/benchmarks.md). Same seed gives
bit-identical audio on the same machine, and the sample count never changes (the number of steps is untouched).

On CUDA (and any other device) nothing is changed: fp16/bf16 there is the preset's `dtype`.
`TUNEREEL_MUSIC_ACCELERATION=off` turns everything off; a comma list (e.g. `int8`) picks changes.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
from torch import nn

__all__ = ["accelerate", "applied", "ENV_VAR", "CPU_DEFAULT"]

log = logging.getLogger("tunereel.music")

ENV_VAR = "TUNEREEL_MUSIC_ACCELERATION"
CPU_DEFAULT = ("int8", "kv-growth")
_KNOWN = frozenset(CPU_DEFAULT)


def applied(model: nn.Module) -> tuple[str, ...]:
    """The changes `accelerate` made to `model` (empty when none)."""
    return tuple(getattr(model, "_tunereel_acceleration", ()))


def _wanted(device: torch.device, setting: str | None) -> tuple[str, ...]:
    setting = (setting if setting is not None else os.environ.get(ENV_VAR, "auto")).strip().lower()
    if setting in ("off", "none", "0", "false", ""):
        return ()
    if device.type != "cpu":
        return ()
    if setting in ("auto", "on", "1", "true"):
        return CPU_DEFAULT
    names = tuple(name.strip() for name in setting.split(",") if name.strip())
    unknown = sorted(set(names) - _KNOWN)
    if unknown:
        raise ValueError(f"{ENV_VAR}: unknown change(s) {unknown}; use 'off', 'auto' or a list of {sorted(_KNOWN)}")
    return names


def accelerate(
    model: nn.Module, device: torch.device, setting: str | None = None, *, supported: tuple[str, ...] = CPU_DEFAULT
) -> nn.Module:
    """Apply the speed-ups that are safe on `device` to a loaded MusicGen model; returns it.

    `setting` overrides the environment variable (`"off"`, `"auto"`, or e.g. `"int8,kv-growth"`). `supported`: the
    changes this model class takes (`kv-growth` replaces the encoder-decoder cache of
    `MusicgenForConditionalGeneration`; the decoder-only melody model takes `int8` only); the others are skipped
    with a log line. A change whose kernels this build of PyTorch lacks is skipped with a warning, never an error.
    """
    done: list[str] = list(applied(model))
    for name in _wanted(torch.device(device), setting):
        if name in done:
            continue
        if name not in supported:
            log.info("music acceleration %r does not apply to %s: skipped", name, type(model).__name__)
            continue
        try:
            if name == "int8":
                _quantize_decoder_int8(model)
            elif name == "kv-growth":
                _grow_kv_cache_in_place(model)
        except (ImportError, AttributeError, RuntimeError, NotImplementedError) as error:
            log.warning("music acceleration %r skipped: %s", name, error)
            continue
        done.append(name)
    model._tunereel_acceleration = tuple(done)
    if done:
        log.info("music acceleration on %s: %s", device, ", ".join(done))
    return model


# ------------------------------------------------------------------------------------------------------- int8
def _quantize_decoder_int8(model: nn.Module) -> None:
    engine = torch.backends.quantized.engine
    if engine in (None, "none") or engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"no quantized engine in this PyTorch build (engine {engine!r})")
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; eager dynamic quantisation still works as before.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # inplace: no second float copy of the decoder (1.2 GB for musicgen-small) while converting.
        quantize_dynamic(
            model.decoder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
    # What stays float (text encoder, EnCodec, embeddings, norms) is still a view of the memory-mapped checkpoint,
    # i.e. page cache the kernel may drop and read back from disk mid-request. Copy it into the process's own memory
    # (about 0.6 GB for musicgen-small) so every request reads weights from RAM; the int8 weights already are.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


# -------------------------------------------------------------------------------------------------- kv-growth
def _grow_kv_cache_in_place(model: nn.Module) -> None:
    from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer whose keys/values are views into a buffer that doubles when full (amortised O(1) append).

        Anything that replaces `keys`/`values` (crop, batch selection) is honoured: the buffer is re-seeded from them.
        """

        _kbuf: torch.Tensor | None = None
        _vbuf: torch.Tensor | None = None
        _kview: torch.Tensor | None = None
        _vview: torch.Tensor | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if self.keys is not self._kview or self.values is not self._vview:
                # first call, or keys/values were replaced (crop, batch selection): start from what is there
                self._kbuf = self._vbuf = None
                self._kview, self._vview = self.keys, self.values
            used = self._kview.shape[-2] if self._kview.dim() == 4 else 0
            end = used + key_states.shape[-2]
            if self._kbuf is None or end > self._kbuf.shape[-2]:
                self._resize(key_states, value_states, used, max(2 * end, 256))
            self._kbuf[:, :, used:end].copy_(key_states)
            self._vbuf[:, :, used:end].copy_(value_states)
            self.keys = self._kview = self._kbuf[:, :, :end]
            self.values = self._vview = self._vbuf[:, :, :end]
            return self.keys, self.values

        def _resize(self, key_states, value_states, used: int, capacity: int) -> None:
            b, h, _, dk = key_states.shape
            kbuf = key_states.new_empty((b, h, capacity, dk))
            vbuf = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
            if used:
                kbuf[:, :, :used].copy_(self._kview)
                vbuf[:, :, :used].copy_(self._vview)
            self._kbuf, self._vbuf = kbuf, vbuf

        def reset(self) -> None:
            self._kbuf = self._vbuf = self._kview = self._vview = None
            super().reset()

    decoder = model.decoder.model.decoder  # MusicgenForCausalLM → MusicgenModel → MusicgenDecoder
    config = model.decoder.config

    def inject_cache(module, args, kwargs):
        use_cache = kwargs.get("use_cache")
        if kwargs.get("cache") is None and (config.use_cache if use_cache is None else use_cache):
            self_attention = DynamicCache(config=config)
            if not all(type(layer) is DynamicLayer for layer in self_attention.layers):
                return None  # a layer type this does not know (sliding window...): leave the default cache
            self_attention.layers = [GrowingLayer() for _ in self_attention.layers]
            kwargs["cache"] = EncoderDecoderCache(self_attention, DynamicCache(config=config))
            return args, kwargs
        return None

    decoder.register_forward_pre_hook(inject_cache, with_kwargs=True)
