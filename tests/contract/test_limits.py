"""Every limit of a request is stated alike in three places: the protos (the comment of each field), the gateway's
OpenAPI schema, and the request model that enforces them (probed at each limit: the value on it passes, the value
past it fails naming the field).

The protos state limits in a few fixed phrases ("non-empty", "at most N characters", "A..B", "a multiple of N",
"> N", "at most N", "at most N entries", "of [chars], starting with [chars]"); a limit written another way is not seen
here, and the comparison then fails for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tunereel import wire
from tunereel.composer import job_service
from tunereel.gateway import jobs as gateway_jobs
from tunereel.gateway.app import create_app
from tunereel.request import LIMITS, InvalidRequest, validate_request

ROOT = Path(__file__).resolve().parents[2]
VALID = {"genre": "pop", "duration": 3, "video_prompt": "a red ball"}
# Fields that are valid only beside another field's value: each is probed with that value.
NEEDS = {"cut_every_beats": {"cuts": "beat"}}


@pytest.fixture(scope="module")
def proto_comments(tmp_path_factory) -> dict[str, str]:
    """{"tunereel.v1.Message.field": its leading comment}, from protoc's source info."""
    out = tmp_path_factory.mktemp("protos") / "set.binpb"
    builtin = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos" / "tunereel" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{ROOT / 'protos'}", f"-I{ROOT / 'build' / 'googleapis'}", f"-I{builtin}",
            "--include_source_info", f"--descriptor_set_out={out}", *files]  # fmt: skip
    assert protoc.main(args) == 0
    comments = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        for location in file.source_code_info.location:
            path = list(location.path)
            if len(path) == 4 and path[0] == 4 and path[2] == 2:  # message_type[i].field[j]
                message = file.message_type[path[1]]
                comments[f"{file.package}.{message.name}.{message.field[path[3]].name}"] = location.leading_comments
    return comments


def limits_in_words(comment: str, repeated: bool = False) -> dict[str, float | str]:
    """The limits a field's comment states, as JSON-schema keywords (string ones under "items." for a list)."""
    text = " ".join(comment.split())
    item = "items." if repeated else ""
    found: dict[str, float | str] = {}
    if re.search(r"\bnon-empty\b", text, re.I):
        found[item + "minLength"] = 1
    if m := re.search(r"at most (\d+) characters", text, re.I):
        found[item + "maxLength"] = int(m[1])
    if m := re.search(r"at most (\d+) entries", text, re.I):
        found["maxItems"] = int(m[1])
    if m := re.search(r"\bat most (\d+)(?![\d ]*(?:characters|entries))", text, re.I):
        found["maximum"] = int(m[1])
    if m := re.search(r"(\d+)\.\.(\d+)", text):
        found["minimum"], found["maximum"] = int(m[1]), int(m[2])
    if m := re.search(r"a multiple of (\d+)", text):
        found["multipleOf"] = int(m[1])
    if m := re.search(r"> (\d+)", text):
        found["exclusiveMinimum"] = int(m[1])
    if m := re.search(r"of \[([^\]]+)\], starting with \[([^\]]+)\]", text):
        found[item + "pattern"] = f"^[{m[2]}][{m[1]}]*$"
    return found


def limits_in_schema(schema: dict) -> dict[str, float | str]:
    """The same keywords from an OpenAPI property (Optional[...] is anyOf [T, null])."""
    if "anyOf" in schema:
        (schema,) = [member for member in schema["anyOf"] if member.get("type") != "null"]
    keys = ("minimum", "maximum", "exclusiveMinimum", "multipleOf", "minLength", "maxLength", "pattern", "maxItems")
    found = {key: schema[key] for key in keys if key in schema}
    for key in keys:
        if key in schema.get("items", {}):
            found[f"items.{key}"] = schema["items"][key]
    return found


@pytest.fixture(scope="module")
def openapi() -> dict:
    return create_app().openapi()


def request_fields(openapi) -> dict[str, dict]:
    return openapi["components"]["schemas"]["GenerationRequest"]["properties"]


def proto_name(http_name: str) -> str:
    return wire.PROTO_FIELD_NAMES.get(http_name, http_name)


def test_every_request_field_states_the_same_limits_in_the_protos_and_the_openapi(openapi, proto_comments):
    fields = request_fields(openapi)
    assert set(map(proto_name, fields)) == {
        name.rsplit(".", 1)[1] for name in proto_comments if name.startswith("tunereel.v1.GenerationRequest.")
    }
    for name, schema in fields.items():
        comment = proto_comments[f"tunereel.v1.GenerationRequest.{proto_name(name)}"]
        stated = limits_in_words(comment, repeated=schema.get("type") == "array")
        assert stated == limits_in_schema(schema), f"{name}: the proto says {comment!r}"
    assert limits_in_schema(fields["width"]) == {"minimum": 64, "maximum": 1280, "multipleOf": 32}
    assert limits_in_schema(fields["duration"]) == {"exclusiveMinimum": 0, "maximum": 300}
    assert limits_in_schema(fields["cut_every_beats"]) == {"minimum": 1, "maximum": LIMITS.max_cut_every_beats}


def test_the_video_service_accepts_what_the_request_model_allows(proto_comments):
    for name in ("width", "height"):
        stated = limits_in_words(proto_comments[f"tunereel.v1.GenerateVideoRequest.{name}"])
        assert stated == {"minimum": LIMITS.min_size, "maximum": LIMITS.max_size, "multipleOf": LIMITS.size_multiple}
    assert limits_in_words(proto_comments["tunereel.v1.GenerateVideoRequest.fps"]) == {
        "minimum": LIMITS.min_fps, "maximum": LIMITS.max_fps,
    }  # fmt: skip


def test_job_api_limits_agree(openapi, proto_comments):
    page_size = limits_in_words(proto_comments["tunereel.v1.ListJobsRequest.page_size"])
    assert page_size["maximum"] == job_service.MAX_PAGE_SIZE == gateway_jobs.MAX_PAGE_SIZE
    list_jobs = {p["name"]: p["schema"] for p in openapi["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert "maximum" not in list_jobs["page_size"]  # capped, not refused (AIP-158)
    key = limits_in_words(proto_comments["tunereel.v1.CreateJobRequest.idempotency_key"])
    create = {p["name"]: p["schema"] for p in openapi["paths"]["/v1/jobs"]["post"]["parameters"]}
    assert key["maxLength"] == limits_in_schema(create["Idempotency-Key"])["maxLength"] == job_service.MAX_IDEMPOTENCY_KEY


def probes(name: str, limits: dict) -> list[tuple[object, bool]]:
    """(value, valid?) pairs on and just past each limit of one field."""
    cases: list[tuple[object, bool]] = []
    step = limits.get("multipleOf", 1)
    for key, limit in limits.items():
        if key == "maximum":
            cases += [(limit, True), (limit + (0.001 if name == "duration" else step), False)]
        elif key == "minimum":
            cases += [(limit, True), (limit - step, False)]
        elif key == "exclusiveMinimum":
            cases += [(limit, False), (limit + 1, True)]
        elif key == "multipleOf":
            cases += [(limits["minimum"] + limit, True), (limits["minimum"] + limit + 1, False)]
        elif key == "minLength":
            cases += [("", False), ("x", True)]
        elif key == "maxLength":
            cases += [("x" * limit, True), ("x" * (limit + 1), False)]
        elif key == "items.minLength":
            cases += [([""], False), (["x"], True)]
        elif key == "items.maxLength":
            cases += [(["x" * limit], True), (["x" * (limit + 1)], False)]
        elif key == "maxItems":
            cases += [(["x"] * limit, True), (["x"] * (limit + 1), False)]
        elif key == "pattern":
            cases += [("tiny-0.9_b", True), ("../etc", False), ("Tiny", False)]
        else:
            raise AssertionError(f"no probe for {key}")
    return cases


def test_the_request_model_enforces_exactly_the_published_limits(openapi):
    fields = request_fields(openapi)
    probed = 0
    for name, schema in fields.items():
        for value, valid in probes(name, limits_in_schema(schema)):
            probed += 1
            body = {**VALID, **NEEDS.get(name, {}), name: value}
            if valid:
                validate_request(body)
                continue
            with pytest.raises(InvalidRequest) as caught:
                validate_request(body)
            assert caught.value.field.split(".")[0] == name, (name, value, str(caught.value))
    assert probed > 40


def test_the_repaint_source_limit_is_stated_and_fits_the_music_channel(proto_comments):
    """music.proto's `source_pcm` states its largest size: the longest request's music as int16 stereo at 48 kHz
    (tunereel.wire), under the one raised message limit (tunereel.channels) with room for the rest of the request."""
    from tunereel.channels import MESSAGE_LIMIT_BYTES, MUSIC_REQUEST_LIMIT_BYTES

    comment = " ".join(proto_comments["tunereel.v1.GenerateMusicRequest.source_pcm"].split())
    largest = round(LIMITS.max_duration_seconds * wire.SOURCE_RATE) * wire.SOURCE_CHANNELS * 2
    assert f"at most {LIMITS.max_duration_seconds:g} s ({largest} bytes;" in comment
    assert f"{wire.SOURCE_RATE} Hz" in comment and "int16" in comment and "stereo" in comment
    assert f"is {MUSIC_REQUEST_LIMIT_BYTES // 2**20} MiB" in comment
    rest = LIMITS.max_backend_prompt_chars * 4 + 4000 * 4 + 1024  # prompt and lyrics as UTF-8 (≤ 4 bytes a char) + fields
    assert largest + rest < MUSIC_REQUEST_LIMIT_BYTES and largest > MESSAGE_LIMIT_BYTES
