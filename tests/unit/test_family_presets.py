"""Conformance of the ACE-Step and LTX-2 presets: the real preset (hub id) loads offline from a fake Hugging Face cache
laid out as its published repository (tiny random weights, the same classes), and what reaches diffusers is what the
authors document (tunereel/presets.py cites each document):

- ACE-Step 1.5 turbo (ACE-Step/acestep-v15-xl-turbo-diffusers): AceStepPipeline, 8 steps, shift 3.0, guidance 1.0
  (guidance-distilled), the sigma schedule AceStepPipeline derives from them; the request's lyrics, vocal_language,
  bpm, keyscale, timesignature; 48 kHz stereo; one pass for the whole duration.
- LTX-2.5 (Lightricks/LTX-2.5-Diffusers): LTX2DFRPipeline with the distilled sigmas, `audio_latents` from LTX-2's
  audio VAE + `freeze_audio=True` (the music held fixed), the 8k+1 frame count, exact frames out; a start image as
  an LTX2VideoCondition at index 0 (strength 1) of the first pass; a video longer than one pass chained, each pass
  after the first conditioned the same way on the previous pass's last frames and hearing its own slice.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import AceStepPipeline, LTX2DFRPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES
from PIL import Image

from tests.fake_hub import use_offline_hub
from tunereel.music.ace_step import AceStepMusic, SongConditions
from tunereel.music.pipeline import MusicPipeline
from tunereel.music.server import load_music, song_conditions
from tunereel.presets import MUSIC_PRESETS, VIDEO_PRESETS
from tunereel.segments import plan_video
from tunereel.tiny import write_fake_hub_cache
from tunereel.v1 import music_pb2
from tunereel.video.ltx2 import AudioClip, Ltx2Video
from tunereel.video.pipeline import blend_frames, fit_condition_image
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


def _spy(monkeypatch, cls, results: list | None = None) -> list[dict]:
    """Every call's keyword arguments (and, given `results`, what each call returned)."""
    calls: list[dict] = []
    real = cls.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        result = real(self, *args, **kwargs)
        if results is not None:
            results.append(result)
        return result

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


def _music(seconds: float, rate: int = 48000) -> AudioClip:
    t = np.arange(round(rate * seconds)) / rate
    return AudioClip(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], axis=1) * 0.3, rate)


def _uint8(frames: torch.Tensor) -> np.ndarray:
    """The DFR pipeline's (frames, 3, h, w) output in 0..1 as the service's uint8 (frames, h, w, 3)."""
    return frames.permute(0, 2, 3, 1).mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def test_ltx2_starts_from_the_image_while_hearing_the_music(hub, monkeypatch):
    """The request's image (fitted to the output size) reaches LTX2DFRPipeline as its frame-0 condition —
    LTX2VideoCondition(frames=image, index=0, strength=1.0), as diffusers' LTX2ConditionPipeline example conditions a
    first frame — in the same call as the frozen music; without an image the call has no condition."""
    video = load_video(LTX2, None, quality="draft", memory="auto")
    calls = _spy(monkeypatch, LTX2DFRPipeline)
    music = _music(30 / 24)
    png = io.BytesIO()
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :64, 0] = 255  # red left half, a blue stripe: a crop or a flip would show
    rgb[:10, :, 2] = 200
    Image.fromarray(rgb).save(png, format="PNG")
    image = fit_condition_image(png.getvalue(), 64, 64)
    pixels = np.asarray(image).copy()

    def run(**extra) -> np.ndarray:
        return np.concatenate([p.frames for p in video.stream("a face", width=64, height=64, num_frames=30, fps=24,
                                                              seed=3, audio=music, **extra)])  # fmt: skip

    with_image = run(image=image)
    without = run()
    assert with_image.shape == without.shape == (30, 64, 64, 3)
    started, plain = calls
    (condition,) = started["conditions"]
    assert type(condition) is LTX2VideoCondition
    assert (condition.index, condition.strength, condition.crf) == (0, 1.0, None)  # crf: the model's own default
    np.testing.assert_array_equal(np.asarray(condition.frames), pixels)
    assert started["freeze_audio"] is True and plain["freeze_audio"] is True
    assert torch.equal(started["audio_latents"], plain["audio_latents"])  # the same music, heard the same way
    assert started["num_frames"] == plain["num_frames"] == 33
    assert plain.get("conditions") is None  # text only: no image condition
    assert not np.array_equal(with_image, without)  # the image reached the model


def test_ltx2_refuses_an_image_of_another_size_naming_the_field(hub):
    from tunereel.video.pipeline import InvalidVideoInput

    video = load_video(LTX2, None, quality="draft", memory="auto")
    with pytest.raises(InvalidVideoInput) as error:
        next(video.stream("a face", width=64, height=64, num_frames=9, fps=24, seed=3, audio=_music(0.5),
                          image=Image.new("RGB", (96, 64))))  # fmt: skip
    assert error.value.field == "image"


def test_ltx2_long_video_continues_each_pass_from_the_last_frames(hub, monkeypatch):
    """Longer than one pass (121 frames): the second pass is conditioned on the first pass's last 17 frames
    (LTX2VideoCondition at index 0, strength 1), re-makes them and goes on, hearing the music from its own first
    frame; the seam is LTX-Video's (8 frames cross-faded, the rest of the overlap cut); exactly the frames asked."""
    video = load_video(LTX2, None, quality="draft", memory="auto")
    results: list = []
    calls = _spy(monkeypatch, LTX2DFRPipeline, results)
    music = _music(130 / 24 + 1)
    pieces = list(video.stream("a city at night", width=64, height=64, num_frames=130, fps=24, seed=3, audio=music))
    frames = np.concatenate([p.frames for p in pieces])
    assert frames.shape == (130, 64, 64, 3) and frames.dtype == np.uint8

    _, second = plan_video(130, LTX2.max_frames, LTX2.overlap_frames)
    assert (LTX2.overlap_frames, LTX2.blend_frames) == (17, 8)
    assert (second.start, second.condition_frames, second.new_frames, second.model_frames) == (104, 17, 9, 33)
    one, two = calls
    assert "conditions" not in one and (one["num_frames"], two["num_frames"]) == (121, 33)
    made_one, made_two = (_uint8(result.frames[0]) for result in results)
    (condition,) = two["conditions"]
    assert type(condition) is LTX2VideoCondition and (condition.index, condition.strength) == (0, 1.0)
    np.testing.assert_array_equal(condition.frames, made_one[121 - 17 : 121])  # the first pass's last 17 frames
    # each pass hears the music under its own frames (the second from frame 104), held fixed
    assert one["freeze_audio"] is True and two["freeze_audio"] is True
    assert torch.equal(two["audio_latents"], video.encode_audio(music, 104 / 24, 33, 24))
    assert not torch.equal(two["audio_latents"], video.encode_audio(music, 0.0, 33, 24))
    # the frames out: the first pass up to the seam, the cross-fade, then the second pass's new frames
    assert [(p.start, len(p.frames)) for p in pieces] == [(0, 113), (113, 17)]
    np.testing.assert_array_equal(frames[:113], made_one[:113])
    np.testing.assert_array_equal(frames[113:121], blend_frames(made_one[113:121], made_two[9:17]))
    np.testing.assert_array_equal(frames[121:], made_two[17:26])


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
