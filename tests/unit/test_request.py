"""The one request model: defaults, limits with field names, the music prompt, proto round trip."""

from __future__ import annotations

import pytest

from tunereel import wire
from tunereel.request import LIMITS, InvalidRequest, build_music_prompt, validate_request

PROTOTYPE = {"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean."}


def test_prototype_body_gets_defaults():
    request = validate_request(PROTOTYPE)
    assert (request.width, request.height, request.fps) == (768, 512, 24)
    assert request.frame_count == 72
    assert request.seed is None and request.instruments == []


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"genre": ""}, "genre", "at least 1"),
        ({"genre": "   "}, "genre", "at least 1"),
        ({"video_prompt": ""}, "video_prompt", "at least 1"),
        ({"duration": 0}, "duration", "greater than 0"),
        ({"duration": -2}, "duration", "greater than 0"),
        ({"duration": 600}, "duration", f"at most {LIMITS.max_duration_seconds:g} s"),
        ({"duration": 301}, "duration", "at most 300 s (got 301)"),
        ({"duration": float("nan")}, "duration", "finite"),
        ({"duration": "long"}, "duration", "valid number"),
        ({"duration": 0.01}, "duration", "less than one frame"),
        ({"width": 100}, "width", "multiple of 32"),
        ({"height": 32}, "height", "greater than or equal to 64"),
        ({"fps": 0}, "fps", "greater than or equal to 8"),
        ({"tempo_bpm": 500}, "tempo_bpm", "less than or equal to 240"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"instruments": ["piano"] * 11}, "instruments", "at most 10"),
        ({"music_model": "../etc"}, "music_model", "pattern"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_fields_are_named(change, field, words):
    with pytest.raises(InvalidRequest) as caught:
        validate_request({**PROTOTYPE, **change})
    assert caught.value.field == field
    assert words in caught.value.reason


@pytest.mark.parametrize("missing", ["genre", "duration", "video_prompt"])
def test_required_fields(missing):
    body = dict(PROTOTYPE)
    del body[missing]
    with pytest.raises(InvalidRequest) as caught:
        validate_request(body)
    assert caught.value.field == missing


@pytest.mark.parametrize(("duration", "fps", "frames"), [(15, 24, 360), (300, 24, 7200), (300, 60, 18000), (9, 60, 540)])
def test_long_durations_are_accepted_up_to_the_limit(duration, fps, frames):
    assert LIMITS.max_duration_seconds == 300
    assert validate_request({**PROTOTYPE, "duration": duration, "fps": fps}).frame_count == frames


def test_music_prompt_built_in_one_place():
    assert build_music_prompt("pop", None, None, []) == "pop"
    assert build_music_prompt("jazz", "mellow", 90, ["piano"]) == "jazz, mellow, 90 bpm, with piano"
    assert (
        validate_request({**PROTOTYPE, "mood": "upbeat", "tempo_bpm": 120, "instruments": ["piano", "bass", "drums"]}).music_prompt
        == "pop, upbeat, 120 bpm, with piano, bass and drums"
    )


def test_proto_round_trip_keeps_every_field():
    request = validate_request(
        {**PROTOTYPE, "mood": "calm", "tempo_bpm": 80, "instruments": ["harp"], "seed": 7, "width": 256, "height": 128,
         "fps": 12, "music_model": "tiny", "video_model": "tiny"}
    )
    assert validate_request(wire.request_from_proto(wire.request_to_proto(request))) == request


def test_proto_zero_means_default():
    request = validate_request(PROTOTYPE)
    back = validate_request(wire.request_from_proto(wire.request_to_proto(request.model_copy(update={"seed": None}))))
    assert back.seed is None and back.tempo_bpm is None and back.width == 768


@pytest.mark.parametrize("field", ["duration", "seed", "tempo_bpm", "width", "height", "fps", "cut_every_beats"])
def test_booleans_are_not_numbers(field):
    body = {"genre": "pop", "duration": 3, "video_prompt": "a sunset", field: True}
    with pytest.raises(InvalidRequest) as caught:
        validate_request(body)
    assert caught.value.field == field and "true or false" in caught.value.reason


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"cuts": "beat", "cut_every_beats": 0}, "greater than or equal to 1"),
        ({"cuts": "beat", "cut_every_beats": LIMITS.max_cut_every_beats + 1}, "less than or equal to 32"),
        ({"cuts": "beat", "cut_every_beats": 2.5}, "integer"),
        ({"cuts": "beat", "cut_every_beats": "often"}, "integer"),
        ({"cuts": "auto", "cut_every_beats": 4}, "only with cuts 'beat' (cuts is 'auto')"),
        ({"cuts": "bar", "cut_every_beats": 1}, "only with cuts 'beat' (cuts is 'bar')"),
        ({"cut_every_beats": 2}, "only with cuts 'beat' (cuts is 'auto')"),  # cuts omitted: auto
    ],
)
def test_cut_every_beats_is_named_when_bad(change, words):
    with pytest.raises(InvalidRequest) as caught:
        validate_request({**PROTOTYPE, **change})
    assert caught.value.field == "cut_every_beats"
    assert words in caught.value.reason


def test_cut_every_beats_defaults_to_every_beat_only_with_beat_cuts():
    assert validate_request({**PROTOTYPE, "cuts": "beat"}).cut_every_beats == 1  # written in: the job shows its N
    assert validate_request({**PROTOTYPE, "cuts": "beat", "cut_every_beats": 32}).cut_every_beats == 32
    for cuts in ("auto", "bar", "none"):
        assert validate_request({**PROTOTYPE, "cuts": cuts}).cut_every_beats is None


@pytest.mark.parametrize(("cuts", "every"), [("beat", 4), ("beat", None), ("bar", None)])
def test_cut_every_beats_proto_round_trip(cuts, every):
    body = {**PROTOTYPE, "cuts": cuts} | ({"cut_every_beats": every} if every else {})
    request = validate_request(body)
    message = wire.request_to_proto(request)
    assert message.HasField("cut_every_beats") == (cuts == "beat")
    assert message.cut_every_beats == (every or (1 if cuts == "beat" else 0))
    again = validate_request(wire.request_from_proto(message))
    assert again == request and again.cut_every_beats == request.cut_every_beats


def test_cut_every_beats_zero_over_the_wire_is_refused_not_taken_for_unset():
    message = wire.request_to_proto(validate_request({**PROTOTYPE, "cuts": "beat"}))
    message.cut_every_beats = 0  # proto3 `optional`: a 0 that was sent is a value
    with pytest.raises(InvalidRequest) as caught:
        validate_request(wire.request_from_proto(message))
    assert caught.value.field == "cut_every_beats"
    assert wire.request_field_path(caught.value.violations[0].path) == "request.cut_every_beats"
