"""Conformance of every music preset: the real preset (hub id, its revision) loads offline from a fake Hugging Face
cache laid out as its published repository, and what reaches transformers is what the authors document.

Documented settings (the preset table cites them): each facebook/musicgen-* generation_config.json says do_sample,
top_k 250, guidance_scale 3.0, max_length 1500 (30 s at 50 frames/s); audiocraft's MusicGen.set_generation_params has
the same defaults; 50 decoding steps per second of audio plus the codebook delay (3 frames: 4 codebooks per channel,
codebook k delayed by k); 32 kHz; stereo: 2 channels from 8 interleaved codebooks; float16 on a GPU.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from fnmatch import fnmatch

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunereel.music import memory as memory_module
from tunereel.music import pipeline as pipeline_module
from tunereel.music.acceleration import applied
from tunereel.music.pipeline import MusicLoadError, MusicPipeline
from tests.fake_hub import FAKE_PIN, REAL_MUSIC, build_variants, fill_cache, pinned, shape_of, use_offline_hub
from tunereel import catalog, wire
from tunereel.channels import open_channel
from tunereel.music import server as music_server
from tunereel.presets import MUSIC_PRESETS
from tunereel.tiny import fake_revision
from tunereel.v1 import music_pb2, music_pb2_grpc

DOCUMENTED = dict(do_sample=True, top_k=250, guidance_scale=3.0, max_length=1500)
FRAMES_PER_SECOND = 50
DELAY = 3  # 4 codebooks per channel, codebook k delayed by k frames
SAMPLE_RATE = 32000


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return build_variants(tmp_path_factory.mktemp("tiny-musicgen"))


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory, variants):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    fill_cache(cache, variants)
    return cache


@pytest.fixture
def hub(monkeypatch, hub_dir):
    use_offline_hub(monkeypatch, hub_dir)
    return hub_dir


def _spy_generate(monkeypatch, pipe) -> list[dict]:
    calls: list[dict] = []
    real = pipe.model.generate

    def generate(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "generate", generate)
    return calls


def test_every_published_shape_has_presets():
    shapes = {shape_of(MUSIC_PRESETS[name])[:2] for name in REAL_MUSIC}
    assert shapes == {(1, False), (2, False), (1, True), (2, True)}
    for name in REAL_MUSIC:
        preset = MUSIC_PRESETS[name]
        assert preset.source.startswith("facebook/musicgen-") and preset.license == "CC-BY-NC-4.0"
        assert preset.single_file is None and "*.json" in preset.allow_patterns and preset.docs
        assert (preset.channels == 2) == ("stereo" in preset.source)
        assert (preset.model_class == "MusicgenMelodyForConditionalGeneration") == ("melody" in preset.source)
        assert preset.dtype == "float16", f"{name}: MusicGen runs float16 on a GPU (audiocraft's autocast)"


@pytest.mark.parametrize("name", REAL_MUSIC)
def test_music_preset_conformance(name, hub, monkeypatch):
    preset = MUSIC_PRESETS[name]
    pipe = MusicPipeline.from_preset(preset)  # the hub id: no folder, no network
    calls = _spy_generate(monkeypatch, pipe)
    duration = 1.0
    out = pipe("upbeat pop with piano", duration, seed=7)

    assert type(pipe.model).__name__ == preset.model_class
    assert pipe.model.config.architectures == [preset.model_class]  # what the repository's config.json names
    snapshot = hub / ("models--" + preset.source.replace("/", "--")) / "snapshots" / (preset.revision or fake_revision(preset.source))
    weights = {p.name for p in snapshot.iterdir() if p.suffix in (".safetensors", ".bin")}
    assert weights and all(any(fnmatch(w, pattern) for pattern in preset.allow_patterns) for w in weights)
    assert type(pipe.processor).__name__ == preset.processor_class
    assert pipe.model.dtype == torch.float32  # CPU; float16 on a GPU: test_gpu_dtype_and_memory_mode
    (kwargs,) = calls
    assert kwargs["guidance_scale"] == DOCUMENTED["guidance_scale"]
    assert kwargs["do_sample"] is DOCUMENTED["do_sample"] and kwargs["top_k"] == DOCUMENTED["top_k"]
    assert kwargs["max_new_tokens"] == FRAMES_PER_SECOND * duration + DELAY
    config = pipe.model.generation_config  # the repository's own file agrees with the preset
    assert {key: getattr(config, key) for key in DOCUMENTED} == DOCUMENTED
    assert pipe.window_frames == DOCUMENTED["max_length"] == FRAMES_PER_SECOND * preset.max_seconds
    assert (out.sample_rate, out.audio.shape) == (SAMPLE_RATE, (SAMPLE_RATE * duration, preset.channels))
    assert out.audio.dtype == np.float32 and np.isfinite(out.audio).all() and np.abs(out.audio).max() > 0
    if preset.channels == 2:
        assert not np.allclose(out.audio[:, 0], out.audio[:, 1]), "left and right decode their own codebooks"


def test_pinned_revision_is_what_loads(tmp_path, variants, monkeypatch):
    # `main` of the pinned repository is a decoy of the other channel count (tests/fake_hub.py)
    preset = pinned("small")
    cache = tmp_path / "hub"
    fill_cache(cache, variants, [preset])
    repo = cache / "models--facebook--musicgen-small"
    assert (repo / "refs" / "main").read_text() != FAKE_PIN and (repo / "snapshots" / FAKE_PIN).is_dir()
    use_offline_hub(monkeypatch, cache)
    pipe = MusicPipeline.from_preset(preset)
    assert pipe.channels == 1 and pipe.model.decoder.config.audio_channels == 1
    with pytest.raises(MusicLoadError, match="expects 1-channel weights, facebook/musicgen-small has 2"):
        MusicPipeline.from_preset(replace(preset, revision=None))  # main: the decoy


def test_a_checkpoint_of_another_architecture_is_refused(hub):
    melody = MUSIC_PRESETS["melody"]
    wrong = melody.__class__(**{**melody.__dict__, "model_class": "MusicgenForConditionalGeneration",
                                "processor_class": "MusicgenProcessor", "requires": ()})  # fmt: skip
    with pytest.raises(MusicLoadError, match="MusicgenMelodyForConditionalGeneration checkpoint"):
        MusicPipeline.from_preset(wrong)


def test_gpu_dtype_and_memory_mode(hub, monkeypatch):
    """On an accelerator the weights load float16 and the memory mode reaches `place`; no CPU acceleration."""
    placed = []
    monkeypatch.setattr(pipeline_module, "pick_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(pipeline_module, "place", lambda model, device, mode: placed.append((device.type, mode)) or model)
    for name in ("small", "melody", "stereo-small"):
        pipe = MusicPipeline.from_preset(MUSIC_PRESETS[name])
        assert pipe.model.dtype == torch.float16 and applied(pipe.model) == ()
        assert pipe.model.decoder.dtype == pipe.model.text_encoder.dtype == torch.float16
        assert pipe.model.audio_encoder.dtype == torch.float32  # audiocraft decodes outside its float16 autocast
    assert placed == [("cuda", "auto")] * 3
    monkeypatch.setenv(memory_module.ENV_VAR, "model-offload")
    MusicPipeline.from_preset(MUSIC_PRESETS["small"])
    assert placed[-1] == ("cuda", "model-offload")


def test_model_offload_moves_encoder_and_codec_only_for_their_calls(monkeypatch):
    """model-offload on an accelerator: the decoder stays there; the text encoder and the codec live in CPU memory and
    visit the accelerator for the duration of their call."""
    moves: list[tuple[str, str]] = []

    class Part(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def to(self, device):
            moves.append((self.name, torch.device(device).type))
            return self

        def forward(self):
            moves.append((self.name, "runs"))

        def decode(self):
            moves.append((self.name, "runs"))

    model = torch.nn.Module()
    model.text_encoder, model.decoder, model.audio_encoder = Part("text_encoder"), Part("decoder"), Part("audio_encoder")
    model.to = lambda device: [part.to(device) for part in (model.text_encoder, model.decoder, model.audio_encoder)]
    memory_module.place(model, torch.device("cuda"), "model-offload")
    assert ("decoder", "cuda") in moves and moves[-2:] == [("text_encoder", "cpu"), ("audio_encoder", "cpu")]
    moves.clear()
    model.text_encoder()
    model.audio_encoder.decode()
    assert moves == [("text_encoder", "cuda"), ("text_encoder", "runs"), ("text_encoder", "cpu"),
                     ("audio_encoder", "cuda"), ("audio_encoder", "runs"), ("audio_encoder", "cpu")]  # fmt: skip
    assert model.tunereel_memory == "model-offload"


def test_auto_offloads_only_when_the_model_does_not_fit(hub):
    pipe = MusicPipeline.from_preset(MUSIC_PRESETS["small"])
    model = pipe.model
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert memory_module.choose_mode(model, free_bytes=10 * weights + 10**9) == "full"
    assert memory_module.choose_mode(model, free_bytes=weights) == "model-offload"
    assert model.tunereel_memory == "full"  # auto on a CPU


def test_model_offload_on_cpu_runs_like_full(hub, monkeypatch):
    monkeypatch.setenv(memory_module.ENV_VAR, "model-offload")
    pipe = MusicPipeline.from_preset(MUSIC_PRESETS["small"])
    assert pipe.model.tunereel_memory == "model-offload"
    assert pipe("pop", 0.5, seed=1).audio.shape == (16000, 1)


def _load_error(preset: str) -> tuple[object, str | None]:
    servicer = music_server.MusicServicer(preset)
    servicer.host.load(None)
    return servicer.host.pipeline, servicer.host.load_error


def test_a_bad_memory_setting_leaves_the_service_not_serving(hub, monkeypatch):
    monkeypatch.setenv(memory_module.ENV_VAR, "sequential")
    pipeline, error = _load_error("small")
    assert pipeline is None and "TUNEREEL_MUSIC_MEMORY" in error and "model-offload" in error


def test_melody_without_torchaudio_is_not_serving_with_a_message(hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # `import torchaudio` now fails, as where it is missing
    server = music_server.serve("melody", host="127.0.0.1", port=0, models_dir=None)
    try:
        assert server.servicer.host.pipeline is None
        error = server.servicer.host.load_error
        assert "torchaudio" in error and "melody" in error and "tunereel[melody]" in error
        channel = open_channel(f"127.0.0.1:{server.port}")
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=music_server.SERVICE_NAME), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            list(music_pb2_grpc.MusicServiceStub(channel).GenerateMusic(
                music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1, seed=1), timeout=10))  # fmt: skip
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "torchaudio" in caught.value.details()
        channel.close()
    finally:
        server.stop(0)


def test_missing_weights_name_the_presets_download_command(tmp_path, monkeypatch):
    use_offline_hub(monkeypatch, tmp_path / "empty-hub")
    monkeypatch.setitem(MUSIC_PRESETS, "stereo-small", replace(MUSIC_PRESETS["stereo-small"], revision=None))
    pipeline, error = _load_error("stereo-small")  # the main branch
    assert pipeline is None
    assert f"`{catalog.download_command(MUSIC_PRESETS['stereo-small'])}`" in error and "huggingface-cli" not in error
    assert "hf download facebook/musicgen-stereo-small --include" in error and "--revision" not in error
    monkeypatch.setitem(MUSIC_PRESETS, "stereo-small", pinned("stereo-small"))  # as a verified pin in the table
    pipeline, error = _load_error("stereo-small")
    assert pipeline is None
    assert f"hf download facebook/musicgen-stereo-small --revision {FAKE_PIN} --include" in error


def test_stereo_streams_interleaved_pcm(hub):
    """The service's stereo stream: header says 2 channels; the chunks carry (samples, 2) frames that reassemble to
    exactly what the pipeline makes for the same seed."""
    server = music_server.serve("stereo-small", host="127.0.0.1", port=0, models_dir=None)
    try:
        channel = open_channel(f"127.0.0.1:{server.port}")
        messages = list(music_pb2_grpc.MusicServiceStub(channel).GenerateMusic(
            music_pb2.GenerateMusicRequest(prompt="ambient strings", duration_seconds=1.5, seed=11), timeout=120))  # fmt: skip
        channel.close()
        header = messages[0].header
        assert (header.channels, header.sample_rate, header.total_samples) == (2, SAMPLE_RATE, 48000)
        assert header.model_id == "facebook/musicgen-stereo-small"
        chunks = [m.chunk for m in messages if m.WhichOneof("payload") == "chunk"]
        assert all(len(c.pcm) == c.num_samples * 2 * 4 for c in chunks)
        pcm = np.concatenate([wire.pcm_from_bytes(c.pcm, header.channels) for c in chunks])
        expected = server.servicer.host.pipeline("ambient strings", 1.5, seed=11).audio
        assert pcm.shape == (48000, 2) and np.array_equal(pcm, expected)
    finally:
        server.stop(0)


def test_out_of_memory_at_load_leaves_the_service_not_serving(hub, monkeypatch):
    def too_big(model, device, mode):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.50 GiB")

    monkeypatch.setattr(pipeline_module, "place", too_big)
    pipeline, error = _load_error("large")
    assert pipeline is None
    assert "does not fit" in error and "6.50 GiB" in error and "TUNEREEL_MUSIC_MEMORY=model-offload" in error


def test_corrupt_weights_leave_the_service_not_serving(tmp_path, variants, monkeypatch):
    cache = tmp_path / "hub"
    fill_cache(cache, variants, ["stereo-medium"])
    snapshot = cache / "models--facebook--musicgen-stereo-medium" / "snapshots" / fake_revision("facebook/musicgen-stereo-medium")
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])  # an interrupted copy
    use_offline_hub(monkeypatch, cache)
    pipeline, error = _load_error("stereo-medium")
    assert pipeline is None and "cannot be read" in error and "tunereel models stereo-medium" in error


@pytest.mark.parametrize("name", ["melody", "stereo-small"])
def test_long_music_continues_across_windows(name, hub, monkeypatch):
    """Past one 30 s window the next is prompted with the last 10 s of codes (decoder_input_ids): the decoder-only
    melody model and the 8-codebook stereo layout take the same continuation path as mono MusicGen."""
    pipe = MusicPipeline.from_preset(MUSIC_PRESETS[name])
    calls = _spy_generate(monkeypatch, pipe)
    pieces = list(pipe.stream("calm piano", 31.0, seed=5))
    assert [piece.segment for piece in pieces] == [0, 1] and len(calls) == 2
    prompt = calls[1]["decoder_input_ids"]
    assert prompt.shape == (4 * MUSIC_PRESETS[name].channels, 10 * FRAMES_PER_SECOND)
    audio = np.concatenate([piece.audio for piece in pieces])
    assert audio.shape == (31 * SAMPLE_RATE, MUSIC_PRESETS[name].channels) and np.isfinite(audio).all()


def test_melody_clip_conditions_generation_on_its_chroma(hub, monkeypatch):
    """A melody preset gets the clip (mono, 32 kHz, resampled by the composer) as the processor's audio: its chroma
    (12 bins) reaches generate() as input_features, in every window."""
    pipe = MusicPipeline.from_preset(MUSIC_PRESETS["melody"])
    calls = _spy_generate(monkeypatch, pipe)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    hum = (0.3 * np.sin(2 * np.pi * 261.6 * t)).astype(np.float32)  # middle C for 3 s
    audio = np.concatenate([piece.audio for piece in pipe.stream("calm piano", 2.0, seed=1, melody=hum)])
    assert audio.shape[0] == 2 * SAMPLE_RATE
    features = calls[0]["input_features"]
    assert features.shape[-1] == 12  # chroma bins
    c = features[0].float().mean(0)
    assert int(c.argmax()) == 0  # the C bin dominates: the clip, not noise, was analysed
    without = _spy_generate(monkeypatch, pipe)
    list(pipe.stream("calm piano", 1.0, seed=1))
    assert "input_features" not in without[0] or without[0]["input_features"] is None


def test_melody_on_another_preset_is_refused_naming_the_field(hub):
    pipe = MusicPipeline.from_preset(MUSIC_PRESETS["small"])
    with pytest.raises(pipeline_module.InvalidMusicInput) as error:
        list(pipe.stream("calm piano", 1.0, seed=1, melody=np.zeros(32_000, np.float32)))
    assert error.value.field == "melody_pcm" and "melody" in str(error.value)


def test_the_service_takes_a_melody_only_where_the_preset_follows_one(hub):
    """Over gRPC: melody_pcm reaches a melody preset's pipeline (the music differs from the same seed without it);
    another preset, or bytes that are not whole float32 samples, are INVALID_ARGUMENT naming melody_pcm."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    hum = wire.pcm_to_bytes((0.3 * np.sin(2 * np.pi * 392.0 * t)).astype(np.float32)[:, None])
    for name, melody, ok in (("melody", hum, True), ("small", hum, False), ("melody", b"\0\0\0", False)):
        server = music_server.serve(name, host="127.0.0.1", port=0, models_dir=None)
        try:
            channel = open_channel(f"127.0.0.1:{server.port}")
            stub = music_pb2_grpc.MusicServiceStub(channel)
            request = music_pb2.GenerateMusicRequest(prompt="folk", duration_seconds=1.0, seed=4, melody_pcm=melody)
            if ok:
                followed = [m.chunk.pcm for m in stub.GenerateMusic(request, timeout=120) if m.WhichOneof("payload") == "chunk"]
                request.melody_pcm = b""
                plain = [m.chunk.pcm for m in stub.GenerateMusic(request, timeout=120) if m.WhichOneof("payload") == "chunk"]
                assert b"".join(followed) != b"".join(plain)
            else:
                with pytest.raises(grpc.RpcError) as caught:
                    list(stub.GenerateMusic(request, timeout=60))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith("melody_pcm")
            channel.close()
        finally:
            server.stop(0)
