"""The one request model: validated once, shared by the gateway (HTTP JSON) and the composer (gRPC).

Limits live here as named constants, and every error names the field and the allowed range.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

__all__ = [
    "GenerationRequest",
    "SceneRequest",
    "InvalidRequest",
    "FieldViolation",
    "validate_request",
    "trusted_request",
    "build_music_prompt",
    "LIMITS",
    "parse_webhook_url",
    "UPLOAD_FIELDS",
    "is_upload_id",
    "scene_image_field",
    "scene_upload_ids",
    "check_repaint_range",
]


class Limits(BaseModel):
    """Explicit limits of a request. Data, so the UI and the docs can show them."""

    model_config = ConfigDict(frozen=True)

    max_duration_seconds: float = 300.0  # longer than one model pass: made in segments (tunereel.segments)
    max_frames_per_pass: int = 257  # LTX-Video's per-pass limit; longer videos are chained passes
    min_size: int = 64
    max_size: int = 1280
    size_multiple: int = 32  # LTX-Video's VAE compresses space by 32
    min_fps: int = 8
    max_fps: int = 60
    min_tempo_bpm: int = 40
    max_tempo_bpm: int = 240
    max_seed: int = 2**32 - 1
    max_instruments: int = 10
    max_backend_prompt_chars: int = 2000  # music/video prompts over gRPC (the composer's are far shorter)
    max_scenes: int = 32
    max_cut_every_beats: int = 32  # cuts "beat": a cut every N beats, N in 1..this


LIMITS = Limits()

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
PresetName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class SceneRequest(BaseModel):
    """One scene of the video: a prompt for a part of the song, optionally pinned where it starts (tunereel.shots)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: NonEmpty = Field(max_length=1000, description="What this scene shows.")
    section: int | None = Field(default=None, ge=0, description="Start with this section of the song (0-based).")
    bars: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="Bars [first, last] (1-based, inclusive) the scene starts with; checked against the "
        "song once the music exists (a job fails naming scenes.N.bars if the song is shorter)."
    )
    image: str | None = Field(default=None, description="Upload id of an image each shot of this scene starts from "
                              "(frame 0); omitted: the request's image, if any.")  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _plain_prompt(cls, value: Any) -> Any:
        return {"prompt": value} if isinstance(value, str) else value  # "a beach" is {"prompt": "a beach"}

    @field_validator("image")
    @classmethod
    def _image_id(cls, value: str | None) -> str | None:
        return upload_id_or_none(value)

    @model_validator(mode="after")
    def _one_pin(self) -> SceneRequest:
        if self.section is not None and self.bars is not None:
            raise ValueError("give section or bars, not both")
        if self.bars is not None and self.bars[0] > self.bars[1]:
            raise ValueError(f"bars: first ({self.bars[0]}) is after last ({self.bars[1]})")
        return self


Cuts = Literal["auto", "bar", "beat", "none"]


class GenerationRequest(BaseModel):
    """A music-video request: the prototype's three fields plus optional controls."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    genre: NonEmpty | None = Field(default=None, max_length=200, description="Music genre, e.g. 'pop'; optional with a song.",
                                   examples=["pop"])  # fmt: skip
    duration: Annotated[float, Field(gt=0, allow_inf_nan=False, json_schema_extra={"maximum": LIMITS.max_duration_seconds})] | None = Field(
        default=None,
        description=f"Seconds of video, > 0 and ≤ {LIMITS.max_duration_seconds:g}; with a song, omitted means to its end.",
        examples=[3],
    )  # the maximum is enforced by _finite (with its own message)
    video_prompt: NonEmpty = Field(
        max_length=1000, description="What the video shows.", examples=["A beautiful sunset over the ocean."]
    )
    mood: str | None = Field(default=None, max_length=100, description="Mood of the music, e.g. 'upbeat'.")
    tempo_bpm: int | None = Field(
        default=None, ge=LIMITS.min_tempo_bpm, le=LIMITS.max_tempo_bpm, description="Tempo in beats per minute."
    )
    instruments: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=LIMITS.max_instruments, description="Instruments to feature."
    )
    seed: int | None = Field(default=None, ge=0, le=LIMITS.max_seed, description="Seed; omitted means random.")
    # multipleOf is enforced by _multiple_of_32 (with its own message); the schema states it for clients
    width: int = Field(default=768, ge=LIMITS.min_size, le=LIMITS.max_size, description="Multiple of 32.",
                       json_schema_extra={"multipleOf": LIMITS.size_multiple})  # fmt: skip
    height: int = Field(default=512, ge=LIMITS.min_size, le=LIMITS.max_size, description="Multiple of 32.",
                        json_schema_extra={"multipleOf": LIMITS.size_multiple})  # fmt: skip
    fps: int = Field(default=24, ge=LIMITS.min_fps, le=LIMITS.max_fps, description="Frames per second.")
    music_model: PresetName | None = Field(default=None, description="Music preset; omitted means the served one.")
    video_model: PresetName | None = Field(default=None, description="Video preset; omitted means the served one.")
    # Bring your own (uploads: POST /v1/uploads). Ids are checked here for form; the composer resolves them per key.
    song: str | None = Field(default=None, description="Upload id of a song to use instead of generated music.")
    start: float = Field(default=0.0, allow_inf_nan=False, description="With a song: where the video starts in it, seconds ≥ 0.")
    normalize: bool = Field(default=False, description="With a song: bring it to -14 LUFS (default: keep it as mastered).")
    melody: str | None = Field(default=None, description="Upload id of a melody to follow (melody music presets only).")
    image: str | None = Field(default=None, description="Upload id of an image the video starts from (frame 0).")
    # Singing music models only (ACE-Step presets); a model that does not sing answers 400 naming `lyrics`.
    lyrics: str | None = Field(default=None, max_length=4000,
                               description="Song lyrics ([verse], [chorus] tags allowed); singing music models only.")
    vocal_language: str | None = Field(default=None, max_length=16, description="Language code of the lyrics, e.g. 'en'.")
    key: str | None = Field(default=None, max_length=32, description="Musical key, e.g. 'C major' (singing models).")
    time_signature: str | None = Field(default=None, max_length=8, description="Beats per bar, e.g. '4' (singing models).")
    scenes: list[SceneRequest] | None = Field(
        default=None, min_length=1, max_length=LIMITS.max_scenes,
        description=f"Scenes in song order (1 to {LIMITS.max_scenes}; a string is a scene's prompt); omitted means "
        "one scene, video_prompt. Unpinned scenes are spread over the song's sections.",
    )  # fmt: skip
    cuts: Cuts = Field(default="auto", description="auto: shots of whole bars, shorter when loud, cut on downbeats; "
                       "bar: a shot per bar; beat: a shot every cut_every_beats beats; none: one continuous take.")  # fmt: skip
    cut_every_beats: int | None = Field(
        default=None, ge=1, le=LIMITS.max_cut_every_beats,
        description=f"With cuts 'beat' only: a cut every N beats (1 to {LIMITS.max_cut_every_beats}), counted from each "
        "scene's first downbeat; omitted means 1 (every beat).",
    )  # fmt: skip
    # A later re-make of one range of a song (ACE-Step's repaint task): the song is the source, the range is re-made
    # from genre (+ mood, tempo, instruments, lyrics), the rest is kept. Seconds within the video's music (0 = `start`).
    repaint_start: float | None = Field(default=None, allow_inf_nan=False, description="With a song: re-make its "
                                        "music from this second of the video on (repainting music models only).")  # fmt: skip
    repaint_end: float | None = Field(default=None, allow_inf_nan=False, description="With repaint_start: where the "
                                      "re-made range ends, after repaint_start and within the duration.")  # fmt: skip

    @field_validator("duration")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        if value > LIMITS.max_duration_seconds:
            raise ValueError(f"must be at most {LIMITS.max_duration_seconds:g} s (got {value:g})")
        return value

    @field_validator("duration", "seed", "tempo_bpm", "width", "height", "fps", "cut_every_beats", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true is not the number 1
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % LIMITS.size_multiple:
            raise ValueError(f"must be a multiple of {LIMITS.size_multiple} (got {value})")
        return value

    @field_validator("mood", "lyrics", "vocal_language", "key", "time_signature")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("song", "melody", "image")
    @classmethod
    def _upload_id(cls, value: str | None) -> str | None:
        return upload_id_or_none(value)

    @field_validator("start")
    @classmethod
    def _start(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a finite number of seconds >= 0 (got {value})")
        return value

    @model_validator(mode="after")
    def _at_least_one_frame(self) -> GenerationRequest:
        if self.song is None:
            for name, value in (("genre", self.genre), ("duration", self.duration)):
                if value is None:
                    raise ValueError(f"{name}: required (it is optional only with a song)")
            for name, value in (("start", self.start), ("normalize", self.normalize)):
                if value:
                    raise ValueError(f"{name}: only with a song")
        elif self.melody is not None:
            raise ValueError("melody: a song is the music itself; a melody only guides generated music")
        if self.duration is None:
            return self  # the song's length: the composer fills it in (song_request) before composing
        if self.frame_count < 1:
            raise ValueError(f"duration: {self.duration} s at {self.fps} fps is less than one frame")
        return self

    @model_validator(mode="after")
    def _repaint_range(self) -> GenerationRequest:
        if self.repaint_start is None and self.repaint_end is None:
            return self
        if self.repaint_start is None or self.repaint_end is None:
            missing = "repaint_start" if self.repaint_start is None else "repaint_end"
            raise ValueError(f"{missing}: required with {'repaint_end' if missing == 'repaint_start' else 'repaint_start'}")
        if self.song is None:
            raise ValueError("repaint_start: only with a song (the audio to re-make a range of)")
        if self.genre is None:
            raise ValueError("genre: required to repaint (it describes the re-made range)")
        check_repaint_range(self.repaint_start, self.repaint_end, self.duration)
        return self

    @model_validator(mode="after")
    def _scenes_need_cuts(self) -> GenerationRequest:
        if self.cuts == "none" and self.scenes is not None and len(self.scenes) > 1:
            raise ValueError("cuts: 'none' makes one continuous take; it cannot show several scenes")
        return self

    @model_validator(mode="after")
    def _beats_per_cut_with_beat_cuts(self) -> GenerationRequest:
        # Only "beat" counts beats; elsewhere a value would be silently ignored, so it is refused instead. With
        # "beat" the default is written in, so the job and its provenance show the N the video was cut with.
        if self.cuts != "beat":
            if self.cut_every_beats is not None:
                raise ValueError(f"cut_every_beats: only with cuts 'beat' (cuts is '{self.cuts}')")
        elif self.cut_every_beats is None:
            self.cut_every_beats = 1
        return self

    @property
    def scene_list(self) -> list[SceneRequest]:
        """The scenes to show: the request's, or one made of video_prompt."""
        return list(self.scenes) if self.scenes else [SceneRequest(prompt=self.video_prompt)]

    @property
    def frame_count(self) -> int:
        """Exact number of video frames; the audio has the same length."""
        if self.duration is None:
            raise ValueError("the duration is the song's: resolve the song first")
        return round(self.duration * self.fps)

    @property
    def exact_duration(self) -> float:
        """Duration snapped to whole frames: what the MP4 really lasts."""
        return self.frame_count / self.fps

    @property
    def music_prompt(self) -> str:
        """MusicGen's prompt ("" with a song, when no genre was given: no music is generated then)."""
        if self.genre is None:
            return ""
        return build_music_prompt(self.genre, self.mood, self.tempo_bpm, self.instruments)

    @property
    def uploads(self) -> dict[str, str]:
        """The uploads this request names, by field: {"song": id, "melody": id, "image": id, "scenes.N.image": id}
        (those given; N is the scene's index)."""
        named = {name: value for name in UPLOAD_FIELDS if (value := getattr(self, name))}
        for index, scene in enumerate(self.scenes or []):
            if scene.image is not None:
                named[scene_image_field(index)] = scene.image
        return named


UPLOAD_FIELDS = ("song", "melody", "image")


def check_repaint_range(start: float, end: float, duration: float | None) -> None:
    """The repaint range [start, end) within the video's music of `duration` seconds (None: not known yet, the song's
    rest); raises ValueError naming the field, as the request model's rules do."""
    if start < 0:
        raise ValueError(f"repaint_start: must be >= 0 s (got {start:g})")
    if end <= start:
        raise ValueError(f"repaint_end: must be after repaint_start ({start:g} s; got {end:g})")
    if duration is not None and end > duration + 1e-9:
        raise ValueError(f"repaint_end: must be within the video's music (duration {duration:g} s; got {end:g})")


def scene_image_field(index: int) -> str:
    """The field path of scene `index`'s image, as errors and provenance name it."""
    return f"scenes.{index}.image"


def scene_upload_ids(request: dict) -> list[str]:
    """The scene image ids of a stored request (its JSON as a dict), without validating it again."""
    scenes = request.get("scenes") or []
    return [scene["image"] for scene in scenes if isinstance(scene, dict) and scene.get("image")]


def upload_id_or_none(value: str | None) -> str | None:
    if not value:
        return None
    if not is_upload_id(value):
        raise ValueError("must be an upload id (a UUID, as POST /v1/uploads returns it)")
    return value.lower()


def is_upload_id(value: str) -> bool:
    """An upload id is a canonical UUID (any other string never reaches the store or a path)."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def build_music_prompt(genre: str, mood: str | None, tempo_bpm: int | None, instruments: list[str]) -> str:
    """The single place where the musical fields become MusicGen's text prompt."""
    parts = [genre.strip()]
    if mood:
        parts.append(mood.strip())
    if tempo_bpm:
        parts.append(f"{tempo_bpm} bpm")
    if instruments:
        names = [name.strip() for name in instruments]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        parts.append(f"with {listed}")
    return ", ".join(parts)


class FieldViolation(NamedTuple):
    """One broken rule: where (names and list indexes in the request model, e.g. ("instruments", 2)) and why."""

    path: tuple[str | int, ...]
    reason: str

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.path)


class InvalidRequest(ValueError):
    """A request broke a rule; `field` names the offending field (dotted path) and `reason` says why.

    `violations` lists every broken rule (the first is `field`/`reason`): the gateway's JSON errors and the gRPC
    services' google.rpc.BadRequest details (tunereel.rpc_errors) are both made from it.
    """

    def __init__(self, field: str, reason: str, violations: Sequence[FieldViolation] = ()):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
        self.violations = tuple(violations) or (FieldViolation(tuple(field.split(".")) if field else (), reason),)

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> InvalidRequest:
        return cls.from_validation_error_list(error.errors(include_url=False))

    @classmethod
    def from_validation_error_list(cls, errors: Sequence[dict[str, Any]]) -> InvalidRequest:
        """A pydantic error list (FastAPI hands the list over as is): the first problem names the error, and every
        problem becomes one of its violations. The one place pydantic's error locations become field paths."""
        errors = list(errors) or [{"msg": "invalid request"}]
        violations = [FieldViolation(_path_of(err), _reason_of(err)) for err in errors]
        return cls(_field_of(errors[0]), violations[0].reason, violations)


def _path_of(err: dict[str, Any]) -> tuple[str | int, ...]:
    loc = tuple(part for part in err.get("loc", ()) if part != "body")
    if not loc and err.get("type") == "value_error":
        # model-level rules put the field name first in the message ("duration: ...")
        message = str(err.get("msg", ""))
        head = message.removeprefix("Value error, ").split(":", 1)[0]
        if head in GenerationRequest.model_fields:
            return (head,)
    return loc


def _field_of(err: dict[str, Any]) -> str:
    return ".".join(str(part) for part in _path_of(err))


def _reason_of(err: dict[str, Any]) -> str:
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    field = _field_of(err)
    if field and message.startswith(field + ": "):
        message = message[len(field) + 2 :]
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
    return message


MAX_WEBHOOK_URL_CHARS = 2000


def parse_webhook_url(url: str) -> httpx.URL:
    """A webhook URL as httpx (the sender) will send it, or InvalidRequest("webhook", …): one parser decides, on HTTP
    and gRPC, at submit time and at delivery. No control characters, spaces or non-ASCII anywhere (urlsplit drops
    tabs and newlines and takes full-width letters; httpx refuses them later)."""
    if len(url) > MAX_WEBHOOK_URL_CHARS:
        raise InvalidRequest("webhook", f"must be at most {MAX_WEBHOOK_URL_CHARS} characters")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in url):
        raise InvalidRequest("webhook", "must be a plain ASCII URL without spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise InvalidRequest("webhook", f"not a valid URL ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest("webhook", "must be an http:// or https:// URL")
    if parsed.userinfo:
        raise InvalidRequest("webhook", "must not carry a user name or password")
    return parsed


def validate_request(data: dict[str, Any]) -> GenerationRequest:
    """Validate a plain dict into a GenerationRequest, raising InvalidRequest with the first problem."""
    try:
        return GenerationRequest.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest.from_validation_error(error) from None


def trusted_request(data: dict[str, Any]) -> GenerationRequest:
    """A request this system validated before (a stored job, a provenance), rebuilt without checking it again."""
    if data.get("scenes"):
        data = {**data, "scenes": [SceneRequest.model_validate(scene) for scene in data["scenes"]]}
    return GenerationRequest.model_construct(**data)
