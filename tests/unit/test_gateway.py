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
