"""Repaint (re-make one range of a song, keep the rest): the wire form of the source audio, the request's rules, the
music service's checks, the splice that keeps the rest, and the tiny ACE-Step model end to end inside the service.

What AceStepPipeline itself does (diffusers 0.42.1): it conditions on the source outside the range but denoises every
latent frame from noise and peak-normalises the whole output, so the outside is not copied; with random weights it
is not re-created either (see test_tiny_ace_step_repaint_keeps_the_rest_exactly: the pipeline's own output outside
the range is measured, not asserted). The service splices, so the rest is the source's own samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AceStepPipeline
from tunereel.composer.song import song_request
from tunereel.composer.store import UploadRecord
from tunereel.music.ace_step import AceStepMusic
from tunereel.music.pipeline import InvalidMusicInput
from tunereel.music.repaint import FADE_S, Repaint, level_match, pipeline_arguments, repaint_from_wire, splice
from tunereel.music.server import repaint_request

from tunereel import wire
from tunereel.presets import MUSIC_PRESETS
from tunereel.request import InvalidRequest, validate_request
from tunereel.v1 import music_pb2

RATE = wire.SOURCE_RATE
SONG = "0b0e3f4a-1d2c-4e5f-8a9b-0c1d2e3f4a5b"
REPAINT = {"genre": "rock", "video_prompt": "a stage", "song": SONG, "repaint_start": 1.0, "repaint_end": 2.0}


def tones(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], axis=1) * 0.3).astype(np.float32)


# ------------------------------------------------------------------------------------------------- the wire form
def test_source_pcm_is_int16_interleaved_within_one_step():
    pcm = np.array([[0.0, -1.0], [1.0, 0.5], [-0.25, 2.0], [1e-6, -3.0]], dtype=np.float32)
    data = wire.pcm16_to_bytes(pcm)
    assert len(data) == pcm.size * 2
    assert np.frombuffer(data, "<i2").tolist() == [0, -32768, 32767, 16384, -8192, 32767, 0, -32768]  # interleaved, clipped
    back = wire.pcm16_from_bytes(data, 2)
    assert back.dtype == np.float32 and back.shape == (4, 2)
    music = tones(0.5)
    assert np.abs(wire.pcm16_from_bytes(wire.pcm16_to_bytes(music), 2) - music).max() <= 1 / 65536


def test_the_repaint_range_round_trips_over_the_wire_start_zero_included():
    request = validate_request({**REPAINT, "repaint_start": 0.0, "duration": 3})
    message = wire.request_to_proto(request)
    assert message.HasField("repaint_start_seconds") and message.repaint_start_seconds == 0.0
    assert message.repaint_end_seconds == 2.0
    again = validate_request(wire.request_from_proto(message))
    assert (again.repaint_start, again.repaint_end) == (0.0, 2.0)
    plain = wire.request_to_proto(validate_request({"genre": "pop", "duration": 3, "video_prompt": "x"}))
    assert not plain.HasField("repaint_start_seconds") and "repaint_start" not in wire.request_from_proto(plain)


# ----------------------------------------------------------------------------------------------- request's rules
@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"song": None}, "repaint_start", "only with a song"),
        ({"repaint_end": 1.0}, "repaint_end", "after repaint_start"),
        ({"repaint_end": 0.5}, "repaint_end", "after repaint_start"),
        ({"repaint_start": -1.0}, "repaint_start", ">= 0"),
        ({"repaint_end": None}, "repaint_end", "required with repaint_start"),
        ({"repaint_start": None}, "repaint_start", "required with repaint_end"),
        ({"genre": None}, "genre", "required to repaint"),
        ({"duration": 1.5}, "repaint_end", "within the video's music"),
        ({"repaint_end": float("inf")}, "repaint_end", "finite"),
    ],
)
def test_bad_repaint_requests_name_the_field(change, field, words):
    data = {key: value for key, value in {**REPAINT, "duration": 3, **change}.items() if value is not None}
    with pytest.raises(InvalidRequest) as caught:
        validate_request(data)
    assert caught.value.field == field and words in caught.value.reason, caught.value


def _song(seconds: float) -> UploadRecord:
    return UploadRecord(id=SONG, owner="k", kind="audio", sha256="0" * 64, size_bytes=1, format="wav", filename="s.wav",
                        duration_seconds=seconds, sample_rate=44100, channels=2, width=0, height=0, path="/nowhere",
                        created_at=0.0, expires_at=0.0)  # fmt: skip


def test_the_range_must_lie_in_the_song_window_once_it_is_known():
    request = validate_request({**REPAINT, "start": 2.0, "repaint_end": 5.0})  # duration: the song's rest
    assert song_request(request, _song(8.0)).duration == 6.0  # window 2..8 s: the range 1..5 s of it fits
    with pytest.raises(InvalidRequest) as caught:
        song_request(request, _song(5.0))  # window 2..5 s: 3 s long
    assert caught.value.field == "repaint_end" and "within the video's music" in caught.value.reason


# --------------------------------------------------------------------------------------- the music service's checks
class _Aborted(Exception):
    pass


class _Context:
    def abort_with_status(self, status):
        raise _Aborted(status.details)


class _Model:
    sample_rate, channels = RATE, 2


def _music_request(seconds=3.0, start=1.0, end=2.0, pcm: bytes | None = None) -> music_pb2.GenerateMusicRequest:
    pcm = wire.pcm16_to_bytes(tones(seconds)) if pcm is None else pcm
    return music_pb2.GenerateMusicRequest(prompt="rock", duration_seconds=seconds, source_pcm=pcm,
                                          repaint_start_seconds=start, repaint_end_seconds=end)  # fmt: skip


def test_a_model_that_cannot_repaint_says_so_naming_the_field():
    assert not MUSIC_PRESETS["tiny"].repaints and MUSIC_PRESETS["tiny-ace-step"].repaints
    with pytest.raises(_Aborted, match=r"^repaint_start_seconds: this model cannot repaint \(music preset 'tiny'"):
        repaint_request(_music_request(), _Model(), False, "tiny", _Context())
    only_end = music_pb2.GenerateMusicRequest(prompt="x", duration_seconds=1, repaint_end_seconds=0.5)
    with pytest.raises(_Aborted, match="^repaint_end_seconds: this model cannot repaint"):
        repaint_request(only_end, _Model(), False, "tiny", _Context())
    plain = music_pb2.GenerateMusicRequest(prompt="x", duration_seconds=1)
    assert repaint_request(plain, _Model(), False, "tiny", _Context()) is None
    repaint = repaint_request(_music_request(), _Model(), True, "tiny-ace-step", _Context())
    assert (repaint.start_s, repaint.end_s, repaint.source.shape) == (1.0, 2.0, (3 * RATE, 2))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(pcm=b""), "source_pcm"),
        (dict(pcm=b"\0" * 10), "source_pcm"),
        (dict(seconds=3.0, pcm=wire.pcm16_to_bytes(tones(2.0))), "source_pcm"),
        (dict(start=2.0, end=2.0), "repaint_end_seconds"),
        (dict(start=1.0, end=3.5), "repaint_end_seconds"),
        (dict(start=-0.5), "repaint_start_seconds"),
    ],
)
def test_bad_repaint_fields_name_the_field(kwargs, field):
    request = _music_request(**kwargs)
    with pytest.raises(InvalidMusicInput) as caught:
        repaint_request(request, _Model(), True, "tiny-ace-step", _Context())
    assert caught.value.field == field


def test_a_model_at_another_rate_refuses_the_source():
    class Mono32k:
        sample_rate, channels = 32000, 1

    with pytest.raises(InvalidMusicInput) as caught:
        repaint_request(_music_request(), Mono32k(), True, "x", _Context())
    assert caught.value.field == "source_pcm" and "48000 Hz stereo" in str(caught.value)


# ---------------------------------------------------------------------------------------------------- the splice
def test_splice_keeps_the_rest_and_fades_into_the_new_range_at_the_songs_level():
    source = tones(3.0)
    generated = (2.0 * tones(3.0)[::-1]).copy()  # the "model": twice as loud, other audio
    repaint = Repaint(source, 1.0, 2.0)
    out = splice(repaint, generated, RATE)
    start, end, fade = RATE, 2 * RATE, round(FADE_S * RATE)
    np.testing.assert_array_equal(out[:start], source[:start])
    np.testing.assert_array_equal(out[end:], source[end:])
    assert level_match(source[np.r_[0:start, end : 3 * RATE]], generated[np.r_[0:start, end : 3 * RATE]]) == pytest.approx(0.5)
    np.testing.assert_allclose(out[start + fade : end - fade], 0.5 * generated[start + fade : end - fade], atol=1e-6)
    # the fades: from the source to the new audio, and back
    weights = (out[start : start + fade, 0] - source[start : start + fade, 0]) / (
        0.5 * generated[start : start + fade, 0] - source[start : start + fade, 0] + 1e-12)
    steady = np.abs(0.5 * generated[start : start + fade, 0] - source[start : start + fade, 0]) > 1e-3
    assert np.all(np.diff(weights[steady]) > 0) and 0 < weights[steady][0] < 0.1 and 0.9 < weights[steady][-1] < 1


def test_a_range_at_the_songs_edges_has_no_fade_there_and_no_outside_keeps_the_level():
    source, generated = tones(2.0), tones(2.0)[::-1].copy()
    whole = splice(Repaint(source, 0.0, 2.0), generated, RATE)
    np.testing.assert_array_equal(whole, generated)  # nothing outside: nothing to match, no edge inside the song
    head = splice(Repaint(source, 0.0, 1.0), generated, RATE)
    assert head[0, 0] == pytest.approx(generated[0, 0] * level_match(source[RATE:], generated[RATE:]))
    assert level_match(np.zeros((10, 2)), generated[:10]) == 1.0  # silence outside: no gain from it
    assert level_match(source, 1e-3 * source) == 10.0  # bounded


def test_pipeline_arguments_are_what_diffusers_takes():
    source = tones(2.01)  # not whole latent frames (1920 samples at 48 kHz)
    args = pipeline_arguments(Repaint(source, 0.5, 1.5), hop=1920)
    assert args["task_type"] == "repaint" and (args["repainting_start"], args["repainting_end"]) == (0.5, 1.5)
    src = args["src_audio"]
    assert isinstance(src, torch.Tensor) and src.dtype == torch.float32
    assert src.shape == (2, 51 * 1920)  # [channels, samples], padded up to whole latent frames
    np.testing.assert_array_equal(src[:, : source.shape[0]].numpy(), source.T)
    assert not src[:, source.shape[0] :].any()


# ---------------------------------------------------------------------------------------- the tiny model, for real
def test_tiny_ace_step_repaint_keeps_the_rest_exactly(models_dir, monkeypatch):
    music = AceStepMusic.from_preset(MUSIC_PRESETS["tiny-ace-step"], models_dir)
    outputs: list[torch.Tensor] = []
    real = AceStepPipeline.__call__

    def spy(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        outputs.append(result.audios.clone())
        return result

    monkeypatch.setattr(AceStepPipeline, "__call__", spy)
    seconds = 3.0
    request = _music_request(seconds, 1.0, 2.0)
    repaint = repaint_from_wire(request.source_pcm, 1.0, 2.0, duration_s=seconds, rate=RATE, channels=2)
    (piece,) = music.stream("rock", seconds, seed=5, repaint=repaint)
    out, source = piece.audio, repaint.source
    assert out.shape == source.shape == (3 * RATE, 2) and out.dtype == np.float32
    outside = np.ones(out.shape[0], dtype=bool)
    outside[RATE : 2 * RATE] = False
    np.testing.assert_array_equal(out[outside], source[outside])  # the rest: the song's own samples
    assert np.abs(out[~outside] - source[~outside]).max() > 0.05  # the range: re-made
    # What the pipeline itself gives outside the range (random weights): measured for the record, not a guarantee.
    raw = outputs[0][0].numpy().T[: out.shape[0]]
    raw_corr = float(np.corrcoef(raw[outside].ravel(), source[outside].ravel())[0, 1])
    print(f"pipeline output outside the range: corr {raw_corr:+.4f}, max diff {np.abs(raw[outside] - source[outside]).max():.3f}")
    again = next(music.stream("rock", seconds, seed=5, repaint=repaint)).audio
    np.testing.assert_array_equal(out, again)  # seeded


def test_a_tiny_ace_step_built_before_the_vae_fix_is_built_again(tmp_path):
    """The repaint task encodes audio: the tiny VAE's encoder must give as many latent channels as the transformer's
    acoustic ones (the real VAE: 128 hidden = 2 × 64 latents); an older build (6 hidden → 3 latents) is replaced."""
    import json

    from tunereel import tiny

    assert tiny.ACE_STEP_VAE["encoder_hidden_size"] == 2 * tiny.ACE_STEP_VAE["decoder_input_channels"]
    assert tiny.ACE_STEP_VAE["decoder_input_channels"] == tiny.ACE_STEP_TRANSFORMER["audio_acoustic_hidden_dim"]
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"encoder_hidden_size": 6}))
    assert tiny.outdated_build("ace-step", tmp_path) and not tiny.outdated_build("musicgen", tmp_path)
    (tmp_path / "vae" / "config.json").write_text(json.dumps(dict(tiny.ACE_STEP_VAE)))
    assert not tiny.outdated_build("ace-step", tmp_path)
