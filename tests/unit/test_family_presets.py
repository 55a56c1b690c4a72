"""Conformance of the ACE-Step and LTX-2 presets: the real preset (hub id) loads offline from a fake Hugging Face cache
laid out as its published repository (tiny random weights, the same classes), and what reaches diffusers is what the
authors document (tunereel/presets.py cites each document):

- ACE-Step 1.5 turbo (ACE-Step/acestep-v15-xl-turbo-diffusers): AceStepPipeline, 8 steps, shift 3.0, guidance 1.0
  (guidance-distilled), the sigma schedule AceStepPipeline derives from them; the request's lyrics, vocal_language,
  bpm, keyscale, timesignature; 48 kHz stereo; one pass for the whole duration.
- LTX-2.5 (Lightricks/LTX-2.5-Diffusers): LTX2DFRPipeline with the distilled sigmas, `audio_latents` from LTX-2's
  audio VAE + `freeze_audio=True` (the music held fixed), the 8k+1 frame count, exact frames out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AceStepPipeline, LTX2DFRPipeline
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

from tests.fake_hub import use_offline_hub
from tunereel.music.ace_step import AceStepMusic, SongConditions
from tunereel.music.pipeline import MusicPipeline
from tunereel.music.server import load_music, song_conditions
from tunereel.presets import MUSIC_PRESETS, VIDEO_PRESETS
from tunereel.tiny import write_fake_hub_cache
from tunereel.v1 import music_pb2
from tunereel.video.ltx2 import AudioClip, Ltx2Video
from tunereel.video.server import load_video

ACE = MUSIC_PRESETS["ace-step-xl-turbo"]
LTX2 = VIDEO_PRESETS["ltx-2.5"]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    write_fake_hub_cache(cache, presets=[ACE, LTX2])
    return cache


@pytest.fixture
def hub(monkeypatch, hub_dir):
    use_offline_hub(monkeypatch, hub_dir)
    return hub_dir


def _spy(monkeypatch, cls) -> list[dict]:
    calls: list[dict] = []
    real = cls.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    return calls


def test_presets_state_family_licence_and_source():
    assert ACE.family == "ace-step" and ACE.sings and ACE.license.startswith("MIT")
    assert LTX2.family == "ltx2" and LTX2.hears_audio and "commercial" in LTX2.license
    assert all(p.license and p.docs for p in [*MUSIC_PRESETS.values(), *VIDEO_PRESETS.values()])


def test_ace_step_runs_as_documented(hub, monkeypatch):
    music = load_music(ACE, None)
    assert isinstance(music, AceStepMusic) and type(music.pipe) is AceStepPipeline
    assert music.pipe.is_turbo and music.model_id == ACE.source
    calls = _spy(monkeypatch, AceStepPipeline)
    sigmas: list[list[float]] = []
    real_set = music.pipe.scheduler.set_timesteps
    monkeypatch.setattr(music.pipe.scheduler, "set_timesteps", lambda *a, **k: (sigmas.append(k["sigmas"]), real_set(*a, **k))[1])
    steps: list[int] = []
    song = SongConditions(lyrics="[verse]\nthe city night", vocal_language="en", key="C major", time_signature="4", bpm=120)
    pieces = list(music.stream("pop, upbeat", 2.5, seed=7, conditions=song, on_progress=lambda p: steps.append(p.step)))
    (call,) = calls
    assert (call["num_inference_steps"], call["shift"], call["guidance_scale"]) == (8, 3.0, 1.0)
    assert (call["lyrics"], call["vocal_language"], call["keyscale"], call["timesignature"], call["bpm"]) == (
        "[verse]\nthe city night", "en", "C major", "4", 120)
    assert call["audio_duration"] == 2.5
    expected = music.pipe._get_timestep_schedule(num_inference_steps=8, shift=3.0).tolist()
    assert sigmas == [expected] and expected[0] == pytest.approx(1.0)
    assert steps == list(range(1, 9))
    (piece,) = pieces  # one pass, no windows
    assert (music.sample_rate, music.channels) == (48000, 2)
    assert piece.offset == 0 and piece.audio.shape == (round(2.5 * 48000), 2) and piece.audio.dtype == np.float32
    again = next(music.stream("pop, upbeat", 2.5, seed=7, conditions=song)).audio
    np.testing.assert_array_equal(piece.audio, again)


def test_ace_step_repaints_as_documented(hub, monkeypatch):
    """The repaint task as AceStepPipeline's docstring calls it: task_type="repaint", src_audio [channels, samples]
    float at the pipeline's 48 kHz (the source as sent: int16 → float, padded with silence to whole 1920-sample latent
    frames, since the VAE's encoder floors the rest), repainting_start/end in seconds; with the preset's settings."""
    from tunereel import wire
    from tunereel.music.repaint import repaint_from_wire

    music = load_music(ACE, None)
    calls = _spy(monkeypatch, AceStepPipeline)
    seconds, rate = 2.5, 48000
    t = np.arange(round(seconds * rate)) / rate
    source = (np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], axis=1) * 0.3).astype(np.float32)
    data = wire.pcm16_to_bytes(source)
    repaint = repaint_from_wire(data, 0.5, 1.75, duration_s=seconds, rate=music.sample_rate, channels=music.channels)
    (piece,) = music.stream("rock, guitar solo", seconds, seed=3, repaint=repaint)
    (call,) = calls
    assert call["task_type"] == "repaint" and (call["repainting_start"], call["repainting_end"]) == (0.5, 1.75)
    assert (call["num_inference_steps"], call["shift"], call["guidance_scale"]) == (8, 3.0, 1.0)
    assert call["audio_duration"] == 2.5 and music.pipe.sample_rate == rate
    src = call["src_audio"]
    hop = music.pipe.vae.hop_length
    assert hop == 1920 and src.dtype == torch.float32 and src.shape == (2, 63 * hop)  # ceil(120000 / 1920) = 63
    sent = np.frombuffer(data, "<i2").reshape(-1, 2).T / 32768.0
    np.testing.assert_array_equal(src[:, :120000].numpy(), sent.astype(np.float32))  # the source's own values
    assert not src[:, 120000:].any()
    assert piece.audio.shape == (120000, 2)
    np.testing.assert_array_equal(piece.audio[:24000], repaint.source[:24000])  # the rest, kept (0 .. 0.5 s)
    np.testing.assert_array_equal(piece.audio[84000:], repaint.source[84000:])  # (1.75 s .. the end)


class _Aborted(Exception):
    pass


class _Context:
    def abort_with_status(self, status):
        raise _Aborted(status.details)


def test_musicgen_refuses_lyrics_naming_the_field():
    request = music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1, lyrics="la la")
    with pytest.raises(_Aborted):
        song_conditions(request, False, "tiny", _Context())
    try:
        song_conditions(request, False, "tiny", _Context())
    except _Aborted as error:
        assert "lyrics" in str(error) and "does not sing" in str(error)
    assert song_conditions(request, True, "tiny-ace-step", _Context()).lyrics == "la la"
    assert song_conditions(music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1), False, "tiny", _Context())


def test_music_service_picks_the_family_from_the_preset(tmp_path):
    from tunereel.tiny import build_tiny_ace_step

    build_tiny_ace_step(tmp_path / "tiny-ace-step")
    assert isinstance(load_music(MUSIC_PRESETS["tiny-ace-step"], tmp_path), AceStepMusic)
    assert MUSIC_PRESETS["tiny"].family == "musicgen" and load_music.__annotations__  # MusicGen: MusicPipeline
    assert MusicPipeline.from_preset  # unchanged path


def test_ltx2_hears_the_music_held_fixed(hub, monkeypatch):
    video = load_video(LTX2, None, quality="draft", memory="auto")
    assert isinstance(video, Ltx2Video) and type(video.pipe) is LTX2DFRPipeline and video.model_id == LTX2.source
    calls = _spy(monkeypatch, LTX2DFRPipeline)
    rate, seconds = 48000, 30 / 24
    t = np.arange(round(rate * seconds)) / rate
    music = AudioClip(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], axis=1) * 0.3, rate)
    frames = np.concatenate([p.frames for p in video.stream("a city at night", width=64, height=64, num_frames=30, fps=24,
                                                             seed=3, audio=music)])  # fmt: skip
    assert frames.shape == (30, 64, 64, 3) and frames.dtype == np.uint8
    (call,) = calls
    assert call["freeze_audio"] is True
    assert call["sigmas"] == list(DISTILLED_SIGMA_VALUES) == list(LTX2.sigmas)
    assert call["num_frames"] == 33 and call["frame_rate"] == 24.0  # next 8k+1 ≥ 30
    latents = call["audio_latents"]
    assert latents.ndim == 4 and latents.shape[0] == 1
    assert latents.shape[1] == video.pipe.audio_vae.config.latent_channels
    assert latents.shape[3] == video.pipe.audio_mel_bins // video.pipe.audio_vae_mel_compression_ratio
    # the music decides the latents: other music, other conditioning
    other = video.encode_audio(AudioClip(np.zeros_like(music.pcm), rate), 0.0, 33, 24)
    assert other.shape == latents.shape and not torch.equal(other, latents)


def test_ace_step_memory_modes(tmp_path, monkeypatch):
    from tunereel.music import ace_step
    from tunereel.tiny import build_tiny_ace_step

    build_tiny_ace_step(tmp_path / "tiny-ace-step")
    music = AceStepMusic.from_preset(MUSIC_PRESETS["tiny-ace-step"], tmp_path)
    assert music.pipe.tunereel_memory == "full"  # CPU: nothing to offload
    assert ace_step.choose_mode(music.pipe, 100 * 1024**3) == "full"
    assert ace_step.choose_mode(music.pipe, 3 * 1024**3) == "model-offload"  # under the working memory alone
    with pytest.raises(Exception, match="unknown music memory mode"):
        AceStepMusic.from_preset(MUSIC_PRESETS["tiny-ace-step"], tmp_path, memory="fp4")


@pytest.mark.parametrize("mode", ["model-offload", "group-offload", "fp8-on-cpu"])
def test_ltx2_memory_modes_run_on_a_cpu(mode, tmp_path_factory):
    """LTX-2's Gemma text encoder is the large part: the LTX-Video memory modes (services/video/loading.py) apply to
    the LTX-2 pipeline as they are, and every mode still makes the frames."""
    from tunereel.tiny import build_tiny_ltx2
    from tunereel.video import loading as video_loading

    models = tmp_path_factory.getbasetemp() / "ltx2-models"
    if not (models / "tiny-ltx2" / "model_index.json").exists():
        build_tiny_ltx2(models / "tiny-ltx2")
    video = Ltx2Video.from_preset(VIDEO_PRESETS["tiny-ltx2"], models, memory="full")
    pipe = video.pipe
    if mode == "fp8-on-cpu":
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    else:
        video_loading.apply_memory_mode(pipe, mode, torch.device("cpu"), torch.float32)
    clip = AudioClip(np.random.default_rng(0).standard_normal((16000, 2)).astype(np.float32) * 0.1, 16000)
    (piece,) = video.stream("a city", width=64, height=64, num_frames=9, fps=24, seed=1, audio=clip)
    assert piece.frames.shape == (9, 64, 64, 3)
