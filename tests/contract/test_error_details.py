"""Errors carry google.rpc details a gRPC client can read with grpc_status.rpc_status.from_call, and the gateway turns
them into its JSON errors: INVALID_ARGUMENT → BadRequest field violations, RESOURCE_EXHAUSTED → QuotaFailure +
RetryInfo, UNAVAILABLE → RetryInfo. ComposerService and JobService run in-process (no models are needed: every call
here ends before a backend would be asked, or finds the backends down)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tunereel import rpc_errors
from tunereel.auth import ApiKeys
from tunereel.composer.backends import Backends
from tunereel.composer.compose import Composer
from tunereel.composer.webhooks import WebhookPolicy
from tunereel.composer.job_service import JobServicer
from tunereel.composer.server import ComposerServicer
from tunereel.composer.store import JobStore
from tunereel.gateway.app import GatewaySettings, create_app
from tunereel.gateway.errors import http_field
from tunereel.launch import free_port
from tunereel.serving import start_server
from tunereel.v1 import common_pb2, composer_pb2, composer_pb2_grpc, jobs_pb2, jobs_pb2_grpc

GOOD = {"genre": "pop", "duration": 1, "video_prompt": "a red ball", "cuts": "none"}


def unpack(status, kind):
    found = []
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


@pytest.fixture
def composer(tmp_path: Path):
    """ComposerService with no free slot and JobService with a queue of one, over backends that are not there."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", max_queue=1)
    store.migrate()
    backends = Backends(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    idle = ComposerServicer(Composer(backends, tmp_path / "work"), max_concurrent=1)
    busy = ComposerServicer(Composer(backends, tmp_path / "work"), max_concurrent=0)
    jobs = JobServicer(store, ApiKeys(), webhook_policy=WebhookPolicy(allowed_hosts=frozenset({"hooks.example"})))
    servers = []
    for servicer in (idle, busy):
        def register(server, servicer=servicer):
            composer_pb2_grpc.add_ComposerServiceServicer_to_server(servicer, server)
            jobs_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)

        servers.append(start_server(register, [], port=0, api_keys=ApiKeys()))
    channels = [grpc.insecure_channel(f"127.0.0.1:{server.port}") for server in servers]
    yield {"idle": channels[0], "busy": channels[1], "busy_port": servers[1].port, "store": store}
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(0)
    backends.close()
    store.close()


def failed_call(method, request):
    """The error a call ends with (a stream is read to its end)."""
    with pytest.raises(grpc.RpcError) as caught:
        reply = method(request, timeout=20)
        if isinstance(reply, grpc.Call):  # a server stream; a unary call returned its message or raised
            list(reply)
    return caught.value


def violations(call) -> list[tuple[str, str]]:
    status = rpc_status.from_call(call)
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    (bad_request,) = unpack(status, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad_request.field_violations]


def test_compose_names_every_bad_field_in_bad_request_details(composer):
    request = common_pb2.GenerationRequest(
        genre="pop", duration_seconds=0, video_prompt="x", width=100, instruments=["piano"] * 3 + [""]
    )
    stub = composer_pb2_grpc.ComposerServiceStub(composer["idle"])
    call = failed_call(stub.Compose, composer_pb2.ComposeRequest(request=request))
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert call.details().startswith("duration: ")  # the message a person reads is unchanged
    fields = dict(violations(call))
    assert set(fields) == {"request.duration_seconds", "request.width", "request.instruments[3]"}
    assert "multiple of 32" in fields["request.width"]
    assert "greater than 0" in fields["request.duration_seconds"]


def test_create_job_names_the_request_field_and_the_webhook(composer):
    stub = jobs_pb2_grpc.JobServiceStub(composer["idle"])
    bad = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x", fps=500)
    call = failed_call(stub.CreateJob, jobs_pb2.CreateJobRequest(request=bad))
    assert [field for field, _ in violations(call)] == ["request.fps"]

    good = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x")
    call = failed_call(stub.CreateJob, jobs_pb2.CreateJobRequest(request=good, webhook_url="https://evil.example/x"))
    assert violations(call) == [("webhook_url", "host 'evil.example' is not in the server's webhook allow-list")]


def test_cut_every_beats_out_of_range_or_without_beat_cuts_is_named(composer):
    stub = jobs_pb2_grpc.JobServiceStub(composer["idle"])
    for cuts, every in ((common_pb2.CUTS_BEAT, 0), (common_pb2.CUTS_BEAT, 33), (common_pb2.CUTS_BAR, 2),
                        (common_pb2.CUTS_UNSPECIFIED, 4)):  # fmt: skip
        bad = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x", cuts=cuts,
                                           cut_every_beats=every)  # fmt: skip
        call = failed_call(stub.CreateJob, jobs_pb2.CreateJobRequest(request=bad))
        assert [field for field, _ in violations(call)] == ["request.cut_every_beats"], (cuts, every)
        assert call.details().startswith("cut_every_beats: ")


def test_job_ids_and_page_tokens_are_named(composer):
    stub = jobs_pb2_grpc.JobServiceStub(composer["idle"])
    assert [f for f, _ in violations(failed_call(stub.GetJob, jobs_pb2.GetJobRequest(id="../etc")))] == ["id"]
    call = failed_call(stub.ListJobs, jobs_pb2.ListJobsRequest(page_token="nonsense"))
    assert [f for f, _ in violations(call)] == ["page_token"]
    call = failed_call(stub.ListJobs, jobs_pb2.ListJobsRequest(page_size=-1))
    assert [f for f, _ in violations(call)] == ["page_size"]


def test_a_page_size_over_the_maximum_is_capped_not_refused(composer):
    stub = jobs_pb2_grpc.JobServiceStub(composer["idle"])
    good = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x")
    created = stub.CreateJob(jobs_pb2.CreateJobRequest(request=good), timeout=20)
    assert created.stage == common_pb2.STAGE_QUEUED  # a queued job is in the QUEUED stage, never UNSPECIFIED
    reply = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1_000_000), timeout=20)
    assert [job.id for job in reply.jobs] == [created.id]


def test_a_busy_composer_says_which_limit_and_when_to_retry(composer):
    stub = composer_pb2_grpc.ComposerServiceStub(composer["busy"])
    request = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x")
    call = failed_call(stub.Compose, composer_pb2.ComposeRequest(request=request))
    assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(call)
    (quota,) = unpack(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "composer:concurrent_compositions"
    (retry,) = unpack(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 5


def test_a_full_job_queue_says_which_limit_and_when_to_retry(composer):
    stub = jobs_pb2_grpc.JobServiceStub(composer["idle"])
    good = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="x")
    stub.CreateJob(jobs_pb2.CreateJobRequest(request=good), timeout=20)
    call = failed_call(stub.CreateJob, jobs_pb2.CreateJobRequest(request=good))
    assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rpc_errors.details_of(call)
    assert [subject for subject, _ in details.quota_violations] == ["jobs:queue"]
    assert details.retry_after_s == 30.0  # no finished job yet to estimate from


def test_backends_down_give_unavailable_with_retry_info(composer):
    stub = composer_pb2_grpc.ComposerServiceStub(composer["idle"])
    request = common_pb2.GenerationRequest(genre="pop", duration_seconds=0.5, video_prompt="x", width=64, height=64)
    call = failed_call(stub.Compose, composer_pb2.ComposeRequest(request=request))
    assert call.code() == grpc.StatusCode.UNAVAILABLE, call.details()
    assert rpc_errors.details_of(call).retry_after_s == rpc_errors.RETRY_UNAVAILABLE_S


# --- the gateway's JSON --------------------------------------------------------------------------------------------
def test_gateway_maps_details_into_its_json_errors(composer):
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{composer['busy_port']}", request_timeout_s=20))
    with TestClient(app) as client:
        busy = client.post("/generate_content", json=GOOD)
        assert busy.status_code == 429
        assert busy.json()["quota_violations"][0]["subject"] == "composer:concurrent_compositions"
        assert busy.json()["retry_after_seconds"] == 5.0 and busy.headers["Retry-After"] == "5"

        hook = client.post("/v1/jobs", json={**GOOD, "webhook": "https://evil.example/x"})
        assert hook.status_code == 400
        assert hook.json()["field"] == "webhook"  # CreateJobRequest.webhook_url, as this API names it
        assert hook.json()["field_violations"] == [
            {"field": "webhook", "description": "host 'evil.example' is not in the server's webhook allow-list"}
        ]

        invalid = client.post("/generate_content", json={**GOOD, "duration": 0, "width": 100, "fps": 500})
        assert invalid.status_code == 422 and invalid.json()["field"] == "duration"
        assert [v["field"] for v in invalid.json()["field_violations"]] == ["duration", "width", "fps"]


@pytest.mark.parametrize(
    ("proto", "http"),
    [("request.duration_seconds", "duration"), ("request.instruments[2]", "instruments.2"), ("webhook_url", "webhook"),
     ("page_token", "page_token"), ("idempotency_key", "idempotency_key")],
)  # fmt: skip
def test_proto_field_paths_become_the_http_names(proto, http):
    assert http_field(proto) == http
