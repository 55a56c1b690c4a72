"""GPU benchmark of a preset's full-size architecture, per memory mode: seconds per stage, peak GPU memory, speed.

Random weights cost the same FLOPs as trained ones, so the models are built from the published architectures'
configs (no download): the LTX-Video transformer and VAE as diffusers' conversion script writes them
(scripts/convert_ltx_to_diffusers.py: 2B = 28 layers x 32 heads x 64, 13B = 48 layers x 32 heads x 128; the
0.9.5/0.9.7 VAE), and T5 v1.1 XXL's encoder (google/t5-v1_1-xxl config.json). They run through the service's own
VideoPipeline with the preset's settings and the memory mode applied as the service applies it.

    python bench/gpu.py --preset ltx-2b-distilled                      # every memory mode, 768x512, 121 frames
    python bench/gpu.py --preset ltx-13b-distilled --modes fp8,group-offload
    python bench/gpu.py --tiny --device cpu --width 64 --height 64 --frames 9 --modes full   # (the test does this)

Video stages: text encode (T5), denoise (all transformer calls), decode (the uint8 VAE decode). Music stages come
from `music_stages` (the music half of the benchmark; see there). Prints one JSON line per run and a Markdown table.

The diffusers families without hand-written configs here (LTX-2: `--preset ltx-2.5`; ACE-Step: `--music-preset
ace-step-xl-turbo`) are built with random weights from their repository's own configs (model_index.json and each
component's config; fetch them with `hf download <repo> --include "*.json" "tokenizer/*"`, no weights needed), or with
`--tiny` from the tiny builds of tunereel.tiny, and run through the services' own pipelines (Ltx2Video hearing a
music clip; AceStepMusic making one song of `--music-seconds`).

    python bench/gpu.py --preset ltx-2.5 --music-preset ace-step-xl-turbo --music-seconds 60 --modes model-offload
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunereel import tiny  # noqa: E402
from tunereel.memory import GiB, MEMORY_MODES  # noqa: E402
from tunereel.presets import VIDEO_PRESETS, VideoPreset, video_preset  # noqa: E402

# diffusers scripts/convert_ltx_to_diffusers.py, get_transformer_config: "0.9.7" (13B) and every other version (2B).
LTX_TRANSFORMER_2B = dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                          attention_head_dim=64, cross_attention_dim=2048, num_layers=28, caption_channels=4096,
                          activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads",
                          norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True, attention_out_bias=True)  # fmt: skip
LTX_TRANSFORMER_13B = {**LTX_TRANSFORMER_2B, "attention_head_dim": 128, "cross_attention_dim": 4096, "num_layers": 48}
# get_vae_config "0.9.5" / "0.9.7" (identical); 0.9.0's VAE is lighter, so this is the costlier decode.
LTX_VAE_095 = dict(in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(128, 256, 512, 1024, 2048),
                   down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 1024),
                   layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5),
                   spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
                   decoder_inject_noise=(False, False, False, False),
                   downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                   upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
                   patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True,
                   decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)  # fmt: skip
# google/t5-v1_1-xxl config.json (the encoder LTX-Video ships in text_encoder/).
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0)  # fmt: skip


def _random(cls, config: dict, dtype: torch.dtype):
    """A model of `cls` from `config` with random weights in `dtype`, built without a float32 copy first."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(config) if not isinstance(config, dict) else cls(**config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data = torch.empty_like(parameter, dtype=dtype).normal_(0.0, 0.02)
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.data = torch.zeros_like(buffer, dtype=dtype) if "mean" in name else torch.ones_like(buffer, dtype=dtype)
    return model.eval()


def build_video(preset: VideoPreset, *, tiny_sizes: bool, dtype: torch.dtype):
    """The preset's pipeline class over random full-size (or tiny) components, on the CPU."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from tunereel.video.loading import PIPELINE_CLASSES

    tokenizer = tiny.word_tokenizer(preset.max_sequence_length)
    if tiny_sizes:
        transformer_config, vae_config = tiny.LTX_TRANSFORMER, tiny.LTX_095_VAE
        text_config = {**tiny.LTX_TEXT_ENCODER, "vocab_size": len(tokenizer)}
    else:
        transformer_config = LTX_TRANSFORMER_13B if preset.transformer_params > 5e9 else LTX_TRANSFORMER_2B
        vae_config, text_config = LTX_VAE_095, T5_XXL
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False)
    return PIPELINE_CLASSES[preset.pipeline_class](
        scheduler=scheduler,
        vae=_random(AutoencoderKLLTXVideo, vae_config, dtype),
        text_encoder=_random(T5EncoderModel, T5Config(**text_config), dtype),
        tokenizer=tokenizer,
        transformer=_random(LTXVideoTransformer3DModel, transformer_config, dtype),
    )


class StageClock:
    """Seconds spent inside each stage's modules (synchronised on CUDA, so the GPU's time is what is counted)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = {"text_encode": 0.0, "denoise": 0.0, "decode": 0.0}
        self._start: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def attach(self, module: torch.nn.Module, stage: str) -> None:
        def before(*_args, **_kwargs):
            self._sync()
            self._start[stage] = time.perf_counter()

        def after(*_args, **_kwargs):
            self._sync()
            self.seconds[stage] += time.perf_counter() - self._start.pop(stage)

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def wrap_decode(self, vae) -> None:
        decode = vae.decode

        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            try:
                return decode(*args, **kwargs)
            finally:
                self._sync()
                self.seconds["decode"] += time.perf_counter() - start

        vae.decode = timed


def video_stages(args, mode: str) -> dict:
    """One run of a preset in one memory mode: seconds per stage, peak GPU memory, frames per second."""
    from tunereel.video.loading import apply_memory_mode
    from tunereel.video.pipeline import VideoPipeline

    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, video_preset(args.preset).dtype)
    preset = video_preset(args.preset)
    if args.steps:
        preset = dataclasses.replace(preset, timesteps=None, num_inference_steps=args.steps)
    pipe = build_video(preset, tiny_sizes=args.tiny, dtype=dtype)
    apply_memory_mode(pipe, mode, device, dtype)
    pipe.vae.enable_tiling(tile_sample_min_num_frames=64, tile_sample_stride_num_frames=56)
    pipeline = VideoPipeline(pipe, preset=preset, model_id=f"random {preset.name}", memory_mode=mode)
    clock = StageClock(device)
    clock.attach(pipe.text_encoder, "text_encode")
    clock.attach(pipe.transformer, "denoise")
    clock.wrap_decode(pipe.vae)  # after VideoPipeline installed the uint8 decode: times that one
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    frames = pipeline("a city street at night, neon lights, rain", width=args.width, height=args.height,
                      num_frames=args.frames, fps=24, seed=0).frames  # fmt: skip
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    del pipeline, pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(kind="video", preset=preset.name, mode=mode, width=args.width, height=args.height,
                frames=int(frames.shape[0]), steps=pipeline_steps(preset), tiny=args.tiny, device=str(device),
                **{f"{k}_s": round(v, 3) for k, v in clock.seconds.items()}, total_s=round(total, 3),
                peak_gpu_gib=None if peak is None else round(peak, 2), fps=round(frames.shape[0] / total, 2))  # fmt: skip


def pipeline_steps(preset: VideoPreset) -> int:
    if preset.sigmas:
        return len(preset.sigmas)
    return len(preset.timesteps) if preset.timesteps else preset.num_inference_steps


def _component_class(library: str, name: str):
    import importlib

    import diffusers
    import transformers

    if library in ("diffusers", "transformers"):
        return getattr(diffusers if library == "diffusers" else transformers, name)
    return getattr(importlib.import_module(f"diffusers.pipelines.{library}"), name)  # e.g. ["ltx2", "LTX2Vocoder"]


def random_from_configs(folder: Path, dtype: torch.dtype):
    """The pipeline of `folder`'s model_index.json with every model random-initialised from its own config (no
    weights read); tokenizers, schedulers and processors load as they are."""
    from diffusers import ModelMixin
    from transformers import AutoConfig, PreTrainedModel

    index = json.loads((folder / "model_index.json").read_text())
    parts = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        cls = _component_class(*spec)
        if issubclass(cls, ModelMixin):
            parts[name] = _random(lambda **config: cls.from_config(config), cls.load_config(folder / name), dtype)
        elif issubclass(cls, PreTrainedModel):
            parts[name] = _random(cls, AutoConfig.from_pretrained(folder / name), dtype)
        else:
            parts[name] = cls.from_pretrained(folder / name)
    return _component_class("diffusers", index["_class_name"])(**parts)


def config_folder(source: str, build, tiny_sizes: bool) -> Path:
    """Where the configs come from: a fresh tiny build, or the preset repository's configs in the local HF cache."""
    if tiny_sizes:
        import tempfile

        return build(Path(tempfile.mkdtemp(prefix="bench-tiny-")) / "model")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=["*.json", "tokenizer/*", "scheduler/*"], local_files_only=True))


def ltx2_stages(args, mode: str) -> dict:
    """LTX-2 (video hearing the music): one run of Ltx2Video over random weights in one memory mode."""
    import numpy as np

    from tunereel.video.loading import apply_memory_mode
    from tunereel.video.ltx2 import AudioClip, Ltx2Video

    device = torch.device(args.device)
    preset = video_preset(args.preset)
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, preset.dtype)
    pipe = random_from_configs(config_folder(preset.source, tiny.build_tiny_ltx2, args.tiny), dtype)
    apply_memory_mode(pipe, mode, device, dtype)
    video = Ltx2Video(pipe, preset=preset, model_id=f"random {preset.name}", memory_mode=mode)
    clock = StageClock(device)
    clock.attach(pipe.text_encoder, "text_encode")
    clock.attach(pipe.transformer, "denoise")
    clock.wrap_decode(pipe.vae)
    seconds = args.frames / 24
    t = np.arange(round(48000 * seconds)) / 48000
    music = AudioClip(np.stack([np.sin(2 * np.pi * 110 * t)] * 2, axis=1).astype(np.float32) * 0.3, 48000)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    frames = sum(piece.frames.shape[0] for piece in video.stream(
        "a city street at night, neon lights, rain", width=args.width, height=args.height, num_frames=args.frames,
        fps=24, seed=0, audio=music))  # fmt: skip
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    return dict(kind="video", preset=preset.name, mode=mode, width=args.width, height=args.height, frames=int(frames),
                steps=pipeline_steps(preset), tiny=args.tiny, device=str(device),
                **{f"{k}_s": round(v, 3) for k, v in clock.seconds.items()}, total_s=round(total, 3),
                peak_gpu_gib=None if peak is None else round(peak, 2), fps=round(frames / total, 2))  # fmt: skip


def music_stages(args, mode: str) -> dict | None:
    """The music half: MusicGen presets window by window (musicgen_stages), ACE-Step presets in one pass
    (ace_step_stages)."""
    from tunereel.presets import music_preset

    if music_preset(args.music_preset).family == "musicgen":
        return musicgen_stages(args, mode)
    return ace_step_stages(args, mode)


# MusicGen decoders as published (each repository's config.json: decoder hidden_size, num_hidden_layers,
# num_attention_heads, ffn_dim); the text encoder (t5-base) and the 32 kHz EnCodec are the same in all of them.
MUSICGEN_DECODERS = {"small": (1024, 24, 16, 4096), "medium": (1536, 48, 24, 6144), "large": (2048, 48, 32, 8192)}


def musicgen_folder(preset, tiny_sizes: bool) -> Path:
    """A random-weight MusicGen of the preset's architecture, saved once and loaded like the real one."""
    if tiny_sizes:
        from tunereel.presets import default_models_dir

        return tiny.ensure_tiny_models(default_models_dir())["musicgen"]
    import importlib.util

    spec = importlib.util.spec_from_file_location("musicgen_small_random", Path(__file__).with_name("musicgen_small_random.py"))
    small = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(small)
    size = preset.name.removeprefix("stereo-")
    if size not in MUSICGEN_DECODERS:
        raise ValueError(f"no full-size configuration here for music preset {preset.name!r} (melody presets: another class)")
    hidden, layers, heads, ffn = MUSICGEN_DECODERS[size]
    small.DECODER.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, ffn_dim=ffn,
                         num_codebooks=4 * preset.channels, audio_channels=preset.channels)  # fmt: skip
    small.AUDIO_ENCODER.update(audio_channels=1)  # stereo MusicGen decodes each channel with the mono codec
    return small.build(small.DEFAULT_DIR.with_name(f"musicgen-{preset.name}-random"))


def musicgen_stages(args, mode: str) -> dict:
    """A MusicGen preset through the music service's own MusicPipeline (its windows, guidance, sampling, dtype and
    memory mode) over random weights: text encode, decoder steps, codec decode, seconds per window, real-time
    factor, peak GPU memory."""
    from tunereel.music.pipeline import MusicPipeline
    from tunereel.presets import music_preset

    preset = music_preset(args.music_preset)
    music_mode = "model-offload" if mode in ("model-offload", "fp8", "group-offload") else "full"
    try:
        folder = musicgen_folder(preset, args.tiny)
    except ValueError as error:
        return dict(kind="music", preset=preset.name, mode=music_mode, error=str(error))
    music = MusicPipeline.from_preset(dataclasses.replace(preset, source=str(folder), revision=None), memory=music_mode)
    device = music.model.device if music_mode == "full" else torch.device(args.device)
    clock = StageClock(device)
    clock.attach(music.model.text_encoder, "text_encode")
    clock.attach(music.model.decoder, "denoise")  # the decoder's steps: the autoregressive part
    clock.wrap_decode(music.model.audio_encoder)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    windows, samples = [], 0
    start = last = time.perf_counter()
    for piece in music.stream("pop, upbeat, piano", args.music_seconds, seed=0):
        now = time.perf_counter()
        windows.append(round(now - last, 3))
        last, samples = now, samples + piece.audio.shape[0]
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    return dict(kind="music", preset=preset.name, mode=music_mode, seconds=round(samples / music.sample_rate, 3),
                windows_s=windows, tiny=args.tiny, device=str(device),
                **{f"{k}_s": round(v, 3) for k, v in clock.seconds.items()}, total_s=round(total, 3),
                realtime_factor=round(samples / music.sample_rate / total, 2),
                peak_gpu_gib=None if peak is None else round(peak, 2))  # fmt: skip


def ace_step_stages(args, mode: str) -> dict:
    """The music half for an ACE-Step preset: one song of `args.music_seconds` in one pass through AceStepMusic over
    random weights: seconds per stage, real-time factor, peak GPU memory."""
    from tunereel.music.ace_step import AceStepMusic
    from tunereel.presets import music_preset

    preset = music_preset(args.music_preset)
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, preset.dtype)
    pipe = random_from_configs(config_folder(preset.source, tiny.build_tiny_ace_step, args.tiny), dtype)
    if mode in ("model-offload", "fp8", "group-offload") and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)  # the music service's modes: full or model offload
        mode = "model-offload"
    else:
        pipe.to(device)
    music = AceStepMusic(pipe, preset, model_id=f"random {preset.name}")
    clock = StageClock(device)
    clock.attach(pipe.text_encoder, "text_encode")
    clock.attach(pipe.transformer, "denoise")
    clock.wrap_decode(pipe.vae)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    samples = sum(p.audio.shape[0] for p in music.stream("pop, upbeat, piano", args.music_seconds, seed=0))
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    return dict(kind="music", preset=preset.name, mode=mode, seconds=round(samples / music.sample_rate, 3),
                steps=preset.num_inference_steps, tiny=args.tiny, device=str(device),
                **{f"{k}_s": round(v, 3) for k, v in clock.seconds.items()}, total_s=round(total, 3),
                realtime_factor=round(samples / music.sample_rate / total, 2),
                peak_gpu_gib=None if peak is None else round(peak, 2))  # fmt: skip


def table(rows: list[dict]) -> str:
    head = "| preset | mode | size | frames | steps | text encode s | denoise s | decode s | total s | peak GPU GiB | frames/s |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if r["kind"] != "video":
            continue
        lines.append(f"| {r['preset']} | {r['mode']} | {r['width']}x{r['height']} | {r['frames']} | {r['steps']} | "
                     f"{r['text_encode_s']} | {r['denoise_s']} | {r['decode_s']} | {r['total_s']} | "
                     f"{r['peak_gpu_gib'] if r['peak_gpu_gib'] is not None else '-'} | {r['fps']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ltx-2b-distilled", choices=[n for n in VIDEO_PRESETS if not n.startswith("tiny")])
    parser.add_argument("--modes", default=",".join(MEMORY_MODES), help="comma-separated memory modes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--steps", type=int, default=0, help="override the preset's step count (0: the preset's)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs instead of the full-size architecture")
    parser.add_argument("--music-preset", default=None, help="also run the music stages (music_stages)")
    parser.add_argument("--music-seconds", type=float, default=60.0, help="length of the song (ACE-Step)")
    args = parser.parse_args(argv)
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in MEMORY_MODES:
            parser.error(f"--modes: unknown memory mode {mode!r} (choose from {', '.join(MEMORY_MODES)})")
        try:
            stages = ltx2_stages if video_preset(args.preset).family == "ltx2" else video_stages
            row = stages(args, mode)
        except torch.OutOfMemoryError as error:
            row = dict(kind="video", preset=args.preset, mode=mode, error=f"out of memory: {str(error)[:120]}")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.music_preset:
            music = music_stages(args, mode)
            if music is not None:
                rows.append(music)
                print(json.dumps(music), flush=True)
    print(table([r for r in rows if "error" not in r]))
    return rows


if __name__ == "__main__":
    main()
