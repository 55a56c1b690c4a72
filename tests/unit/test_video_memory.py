"""GPU memory modes (choice and the diffusers calls they make; what runs on a CPU, run), the uint8 decode under
offload hooks, loading failures that leave the video service up and NOT_SERVING, and a mid-request out-of-memory
error that fails only that request (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunereel.channels import open_channel
from tunereel.memory import GiB, ModelFootprint, UnknownMemoryMode, check_memory_mode, choose_memory_mode
from tunereel.presets import video_preset
from tunereel.v1 import video_pb2, video_pb2_grpc
from tunereel.video import loading as video_loading
from tunereel.video import server as video_server
from tunereel.video.pipeline import VideoPipeline

TWO_B = ModelFootprint(transformer_params=1.9e9, text_encoder_params=4.76e9)
THIRTEEN_B = ModelFootprint(transformer_params=13.0e9, text_encoder_params=4.76e9)


@pytest.mark.parametrize(
    "footprint, free_gib, mode",
    [
        (TWO_B, None, "full"),  # no GPU
        (TWO_B, 22, "full"),  # L4 (24 GB): 2B + T5 in bf16 ≈ 14.3 GB + 6 GB working
        (TWO_B, 79, "full"),
        (TWO_B, 16, "model-offload"),  # T5 alone (9.5 GB) + working fits, everything at once does not
        (THIRTEEN_B, 79, "full"),  # H100 80 GB
        (THIRTEEN_B, 40, "model-offload"),  # 26 GB transformer alone fits
        (THIRTEEN_B, 22, "fp8"),  # L4: the 13 GB float8 transformer fits, the bf16 one does not
        (THIRTEEN_B, 12, "group-offload"),
    ],
)
def test_memory_mode_is_the_fastest_that_fits(footprint, free_gib, mode):
    assert choose_memory_mode(footprint, None if free_gib is None else free_gib * GiB) == mode


def test_unknown_memory_mode_names_the_choices():
    assert check_memory_mode("auto") == "auto"
    with pytest.raises(UnknownMemoryMode, match="group-offload"):
        check_memory_mode("half")


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("full", [("pipe", "to")]),
        ("model-offload", [("pipe", "enable_model_cpu_offload")]),
        ("fp8", [("transformer", "enable_layerwise_casting"), ("pipe", "enable_model_cpu_offload")]),
        ("group-offload", [("transformer", "enable_group_offload")]),
    ],
)
def test_each_mode_makes_the_documented_diffusers_call(mode, expected, monkeypatch):
    pipe, transformer = Recorder(), Recorder()
    pipe.__dict__.update(transformer=transformer, text_encoder=object(), vae=object())
    grouped = []
    monkeypatch.setattr("diffusers.hooks.apply_group_offloading", lambda module, **kw: grouped.append((module, kw)))
    video_loading.apply_memory_mode(pipe, mode, torch.device("cuda"), torch.bfloat16)
    made = [("pipe", c[0]) for c in pipe.calls] + [("transformer", c[0]) for c in transformer.calls]
    assert sorted(made) == sorted(expected)
    if mode == "fp8":
        assert transformer.calls[0][2] == dict(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if mode == "group-offload":
        assert transformer.calls[0][2]["offload_type"] == "leaf_level" and transformer.calls[0][2]["use_stream"]
        assert [kw["offload_type"] for _, kw in grouped] == ["block_level", "leaf_level"]  # T5, VAE


@pytest.mark.parametrize("mode", ["model-offload", "group-offload", "fp8-on-cpu"])
def test_modes_that_run_on_a_cpu_still_make_the_same_frames_count(mode, models_dir):
    """Model offload and group offload (onto the CPU) and float8 layerwise casting run here for real, through the
    tiled uint8 decode (the VAE's offload hooks apply to its tiles)."""
    pipeline = VideoPipeline.from_preset(video_preset("tiny"), models_dir, memory="full")
    pipe = pipeline.pipe
    if mode == "model-offload":
        video_loading.apply_memory_mode(pipe, "model-offload", torch.device("cpu"), torch.float32)
        assert pipe.vae._hf_hook is not None  # accelerate's hook, which the uint8 decode must run
    elif mode == "group-offload":
        video_loading.apply_memory_mode(pipe, "group-offload", torch.device("cpu"), torch.float32)
        assert pipe.vae.decoder.conv_in.conv._diffusers_hook.hooks  # every leaf module hooked
    else:
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
        assert pipe.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    frames = pipeline("a city", width=64, height=64, num_frames=81, fps=24, seed=2).frames  # 81 > a 64-frame tile
    assert frames.shape == (81, 64, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0


def test_uint8_decode_runs_the_vae_offload_hook(models_dir):
    """Model offload moves the VAE with accelerate's hook on `vae.decode`; the tiled uint8 decode calls the decoder
    directly, so it must run that hook itself (else the VAE would stay on the CPU while the latents are on the GPU)."""
    pipeline = VideoPipeline.from_preset(video_preset("tiny"), models_dir, memory="full")
    onloads = []

    class Hook:
        def pre_forward(self, module, *args, **kwargs):
            onloads.append(module)
            return args, kwargs

    pipeline.pipe.vae._hf_hook = Hook()
    try:
        pipeline("a city", width=64, height=64, num_frames=81, fps=24, seed=2)
    finally:
        del pipeline.pipe.vae._hf_hook
    assert onloads and all(module is pipeline.pipe.vae for module in onloads)


# ------------------------------------------------------------------------------------------------ failures
def _health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status


@pytest.mark.parametrize(
    "error, words",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ["out of GPU memory", "TUNEREEL_VIDEO_MEMORY=model-offload, fp8"]),
        (ModuleNotFoundError("No module named 'sentencepiece'", name="sentencepiece"), ["install sentencepiece"]),
        (OSError("Error while deserializing header: HeaderTooLarge"), ["corrupt", "download them again"]),
    ],
)
def test_load_failure_leaves_the_service_up_and_not_serving(error, words, models_dir, monkeypatch):
    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(video_loading, "load_ltx", failing_load)
    monkeypatch.setattr("tunereel.video.pipeline.load_ltx", failing_load)
    server = video_server.serve("tiny", host="127.0.0.1", port=0, models_dir=models_dir)
    channel = open_channel(f"127.0.0.1:{server.port}")
    try:
        assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            list(video_pb2_grpc.VideoServiceStub(channel).GenerateVideo(
                video_pb2.GenerateVideoRequest(prompt="a city", width=64, height=64, fps=24, num_frames=9), timeout=10))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        for word in words:
            assert word in caught.value.details()
    finally:
        channel.close()
        server.stop(0)


def test_out_of_memory_mid_request_fails_that_request_only(models_dir):
    server = video_server.serve("tiny", host="127.0.0.1", port=0, models_dir=models_dir)
    channel = open_channel(f"127.0.0.1:{server.port}")
    stub = video_pb2_grpc.VideoServiceStub(channel)
    transformer = server.servicer.host.pipeline.pipe.transformer
    request = video_pb2.GenerateVideoRequest(prompt="a city", width=64, height=64, fps=24, num_frames=9, seed=1)

    def out_of_memory(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = transformer.register_forward_pre_hook(out_of_memory, with_kwargs=True)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.GenerateVideo(request, timeout=60))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of GPU memory" in caught.value.details() and "serves the next request" in caught.value.details()
        assert "TUNEREEL_VIDEO_MEMORY" in caught.value.details()
        handle.remove()
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        frames = [m for m in stub.GenerateVideo(request, timeout=60) if m.WhichOneof("payload") == "frame"]
        assert {m.frame.frame_index for m in frames} == set(range(9))  # the next request is served
    finally:
        handle.remove()
        channel.close()
        server.stop(0)


@pytest.mark.parametrize("settings, words", [(dict(memory="half"), ["memory mode 'half'", "group-offload"]),
                                             (dict(quality="best"), ["quality", "draft, final"])])  # fmt: skip
def test_bad_service_settings_are_a_not_serving_reason(settings, words, models_dir):
    servicer = video_server.VideoServicer("tiny", **settings)
    servicer.host.load(models_dir)
    assert servicer.host.pipeline is None
    for word in words:
        assert word in servicer.host.load_error
