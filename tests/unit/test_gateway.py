"""The gateway on its own: error mapping when the composer is unreachable, validation before any RPC, schema."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tunereel.gateway.app import GatewaySettings, create_app
from tunereel.launch import free_port

PROTOTYPE = {"genre": "pop", "duration": 3, "video_prompt": "A beautiful sunset over the ocean."}


@pytest.fixture
def client():
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{free_port()}", request_timeout_s=20))
    with TestClient(app) as test_client:  # runs the lifespan, as a server would
        yield test_client


def test_composer_down_gives_503_with_a_message(client):
    reply = client.post("/generate_content", json=PROTOTYPE)
    assert reply.status_code == 503
    assert reply.json()["code"] == "UNAVAILABLE" and reply.json()["error"]
    assert reply.headers["Retry-After"]


def test_healthz_is_503_when_nothing_answers(client):
    reply = client.get("/healthz")
    assert reply.status_code == 503
    assert all(status.startswith("UNREACHABLE") for status in reply.json()["services"].values())


def test_validation_happens_before_any_rpc(client):
    reply = client.post("/generate_content", json={**PROTOTYPE, "duration": 0})
    assert reply.status_code == 422 and reply.json()["field"] == "duration"


@pytest.mark.parametrize(
    "change",
    [
        {"cuts": "beat", "cut_every_beats": 0},
        {"cuts": "beat", "cut_every_beats": 33},
        {"cuts": "beat", "cut_every_beats": 1.5},
        {"cuts": "beat", "cut_every_beats": "two"},
        {"cuts": "auto", "cut_every_beats": 2},
        {"cut_every_beats": 4},  # cuts omitted: auto
    ],
)
@pytest.mark.parametrize("path", ["/v1/jobs", "/generate_content"])
def test_cut_every_beats_out_of_range_or_without_beat_cuts_is_4xx_naming_it(client, path, change):
    reply = client.post(path, json={**PROTOTYPE, **change})
    assert 400 <= reply.status_code < 500 and reply.json()["field"] == "cut_every_beats", reply.text
    assert reply.json()["error"].startswith("cut_every_beats: ")


def test_cut_every_beats_with_beat_cuts_passes_validation(client):
    reply = client.post("/v1/jobs", json={**PROTOTYPE, "cuts": "beat", "cut_every_beats": 4})
    assert reply.status_code == 503  # validated, then the (absent) composer was asked


def test_openapi_documents_the_prototype_contract(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/generate_content"]["post"]
    assert "video/mp4" in operation["responses"]["200"]["content"]
    body = schema["components"]["schemas"]["GenerationRequest"]
    # genre and duration are required unless a song is given (the model checks that; the schema can only say it)
    assert set(body["required"]) == {"video_prompt"}
    assert "song" in body["properties"]["genre"]["description"] and "song" in body["properties"]["duration"]["description"]


def test_index_page_is_served(client):
    reply = client.get("/")
    assert reply.status_code == 200 and "<form" in reply.text


def test_enum_names_are_served_from_the_protos(client):
    from tunereel.v1 import common_pb2, jobs_pb2

    names = client.get("/v1/enums").json()
    assert names["job_states"] == [jobs_pb2.JobState.Name(v).removeprefix("JOB_STATE_").lower()
                                   for v in jobs_pb2.JobState.values() if v]  # fmt: skip
    assert names["terminal_states"] == ["succeeded", "failed", "canceled"]
    assert names["generation_stages"] == ["music", "video", "mux"]
    assert set(names["stages"]) == {common_pb2.Stage.Name(v).removeprefix("STAGE_").lower() for v in common_pb2.Stage.values() if v}


# --- body limits (issue 13, item 1) -----------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413_before_parsing(client):
    # The probe, shrunk to just over 1 MiB: deeply nested JSON that would cost the parser dearly.
    nested = ("[" + "[]," * 400_000 + "[]]").encode()
    assert len(nested) > 1024 * 1024
    reply = client.post("/generate_content", content=nested, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413
    assert "limit of 1048576 bytes" in reply.json()["error"]
    # A body just under the limit still reaches the route's own checks.
    reply = client.post("/generate_content", content=b" " * 1000 + b"[]", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400


def test_the_limit_is_a_setting():
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{free_port()}", max_body_bytes=100))
    with TestClient(app) as small:
        body = {**PROTOTYPE, "video_prompt": "x" * 200}
        assert small.post("/generate_content", json=body).status_code == 413
        assert small.post("/v1/jobs", json=body).status_code == 413


def test_a_streamed_body_is_cut_off_at_the_limit_not_read_to_its_end():
    import asyncio

    from tunereel.gateway.limits import BodyLimit

    reached_app = []

    async def app(scope, receive, send):  # pragma: no cover - must not run
        reached_app.append(True)

    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}  # endless, chunked

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimit(app, max_bytes=1024 * 1024)(scope, receive, send))
    assert sent[0]["status"] == 413 and not reached_app
    assert pulled == 17  # 16 chunks fill 1 MiB; the 17th passes the limit and reading stops there


# --- client-facing errors (issue 13, item 9) -------------------------------------------------------------------------

def test_internal_details_stay_in_the_log_and_the_client_gets_a_reference(caplog):
    import asyncio
    import json

    import grpc

    from tunereel.gateway import errors

    detail = ("/data/tmp/compose-1.mp4: [Errno 28] No space left on device; "
              "(psycopg.OperationalError) SELECT jobs.id FROM jobs @ postgres-0.db:5432; ipv4:10.1.2.3:50051")  # fmt: skip
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=detail)
        with caplog.at_level("WARNING", logger="tunereel.gateway"):
            reply = asyncio.run(errors.on_rpc_error(None, error))
        body = json.loads(reply.body)
        for secret in ("/data", "Errno", "SELECT", "postgres", "10.1.2.3"):
            assert secret not in body["error"]
        reference = body["error"].rsplit("reference ", 1)[1].rstrip(")")
        assert any(reference in record.getMessage() and "No space left" in record.getMessage() for record in caplog.records)
    # Our own messages (a field, a limit) still reach the client as written.
    error = grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                 details="duration: must be at most 300 s")  # fmt: skip
    assert json.loads(asyncio.run(errors.on_rpc_error(None, error)).body)["error"] == "duration: must be at most 300 s"


# --- smaller edges (issue 13, item 10) --------------------------------------------------------------------------------

def test_a_range_header_with_thousands_of_digits_is_416_not_500(client):
    from tunereel.v1 import jobs_pb2

    class Succeeded:
        async def GetJob(self, request, **_):
            return jobs_pb2.Job(id=request.id, state=jobs_pb2.JOB_STATE_SUCCEEDED, result_size_bytes=1000)

    client.app.state.jobs = Succeeded()
    job_id = "12345678-1234-5678-1234-567812345678"
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=0-" + "1" * 5000):
        reply = client.get(f"/v1/jobs/{job_id}/video", headers={"Range": header})
        assert reply.status_code == 416 and reply.headers["Content-Range"] == "bytes */1000"


def test_the_bearer_scheme_is_case_insensitive():
    from tunereel.auth import ApiKeys

    keys = ApiKeys(["k1"])
    owner = keys.owner_of("Bearer k1")
    assert owner and keys.owner_of("bearer k1") == owner == keys.owner_of("BEARER  k1")
    assert keys.owner_of("Basic k1") is None and keys.owner_of("bearer ") is None and keys.owner_of("k1") is None


def test_the_ui_cannot_be_framed_and_loads_only_its_own_files(client):
    reply = client.get("/")
    policy = reply.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy and "script-src 'self'" in policy
    assert reply.headers["X-Frame-Options"] == "DENY" and reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "localStorage" not in client.get("/static/app.js").text  # the API key is kept for the tab only


def test_without_a_key_the_body_is_never_read():
    import asyncio

    from tunereel.auth import ApiKeys

    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{free_port()}", api_keys=ApiKeys(["k1"])))
    with TestClient(app) as keyed:
        nested = ("[" + "[]," * 300_000 + "[]]").encode()  # under the size limit, costly to parse
        reply = keyed.post("/generate_content", content=nested, headers={"Content-Type": "application/json"})
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
        assert keyed.get("/healthz").status_code == 503  # open routes stay open (nothing is running behind)

    from tunereel.gateway.security import KeyBeforeBody

    pulled = []

    async def receive():  # pragma: no cover - must not be called
        pulled.append(1)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    async def inner(scope, receive, send):  # pragma: no cover - must not run
        raise AssertionError("reached the app")

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [(b"authorization", b"Bearer wrong")]}
    asyncio.run(KeyBeforeBody(inner, ApiKeys(["k1"]))(scope, receive, send))
    assert sent[0]["status"] == 401 and not pulled
