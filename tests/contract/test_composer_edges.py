"""The composer's job API at its edges (issue 13): per-key quotas alike on gRPC and HTTP, and open watches that hold
no server thread. The backends are not running: jobs stay queued, which is all these tests need."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunereel import wire
from tunereel.auth import ApiKeys, InsecureBinding
from tunereel.channels import open_channel
from tunereel.composer import server as composer_server
from tunereel.composer.store import Quotas
from tunereel.gateway.app import GatewaySettings, create_app
from tunereel.launch import free_port
from tunereel.request import validate_request
from tunereel.v1 import jobs_pb2, jobs_pb2_grpc

TINY = {"genre": "pop", "duration": 1, "video_prompt": "a sunset", "width": 64, "height": 64, "cuts": "none"}
ONE = [("authorization", "Bearer key-one")]
TWO = [("authorization", "Bearer key-two")]


@pytest.fixture
def composer(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    composed = composer_server.serve(
        host="127.0.0.1", port=0, music_target=dead, video_target=dead, data_dir=tmp_path,
        api_keys=ApiKeys(["key-one", "key-two"]), quotas=Quotas(active_jobs=2), retry_base_seconds=60,
    )  # fmt: skip
    channel = open_channel(f"127.0.0.1:{composed.port}")
    yield composed, channel
    channel.close()
    composed.stop(0)


def _create(stub, metadata):
    request = jobs_pb2.CreateJobRequest(request=wire.request_to_proto(validate_request(TINY)))
    return stub.CreateJob(request, metadata=metadata, timeout=10)


def test_per_key_quota_is_the_same_on_grpc_and_http(composer):
    composed, channel = composer
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    _create(stub, ONE)
    _create(stub, ONE)
    with pytest.raises(grpc.RpcError) as caught:
        _create(stub, ONE)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 jobs waiting or running" in caught.value.details()
    _create(stub, TWO)  # the other key is not held up

    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{composed.port}", api_keys=ApiKeys(["key-one", "key-two"])))
    with TestClient(app) as http:
        reply = http.post("/v1/jobs", json=TINY, headers={"Authorization": "Bearer key-one"})
        assert reply.status_code == 429 and "2 jobs waiting or running" in reply.json()["error"]
        assert reply.headers["Retry-After"]


def test_open_watches_hold_no_server_thread(composer):
    composed, channel = composer
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    job = _create(stub, ONE)
    calls = [stub.WatchJob(jobs_pb2.WatchJobRequest(id=job.id), metadata=ONE) for _ in range(64)]  # the pool has 16
    for call in calls:
        assert next(call).id == job.id  # each one open and answered
    started = time.monotonic()
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    assert health.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=ONE, timeout=3).id == job.id
    assert time.monotonic() - started < 3
    # A change reaches every watcher: cancel the job, each stream ends with its canceled state.
    stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=ONE, timeout=10)
    for call in calls:
        states = [update.state for update in call]
        assert states[-1] == jobs_pb2.JOB_STATE_CANCELED
    pool_threads = [t for t in threading.enumerate() if t.name.startswith("grpc")]
    assert len(pool_threads) <= 20  # the aio loop and a small pool, not one thread per watch


@pytest.mark.parametrize(("hosts", "allow_private"), [({"hooks.example.com"}, False), (set(), True),
                                                      ({"127.0.0.1", "10.0.0.5"}, True)])  # fmt: skip
def test_webhooks_configured_beyond_loopback_without_a_secret_refuse_to_start(tmp_path, hosts, allow_private):
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(InsecureBinding, match="TUNEREEL_WEBHOOK_SECRET"):
        composer_server.serve(host="127.0.0.1", port=0, music_target=dead, video_target=dead, data_dir=tmp_path,
                              api_keys=ApiKeys([]), webhook_secret="", webhook_hosts=frozenset(hosts),
                              webhook_allow_private=allow_private)  # fmt: skip
    assert not (tmp_path / "jobs.db").exists()  # refused before anything started


@pytest.mark.parametrize("settings", [
    dict(webhook_hosts=frozenset({"127.0.0.1", "localhost"}), webhook_allow_private=True),  # loopback only
    dict(webhook_hosts=frozenset({"hooks.example.com"}), webhook_secret="s3cret"),
    dict(webhook_hosts=frozenset({"hooks.example.com"}), api_keys=ApiKeys(["tenant"])),  # per-key secrets
])  # fmt: skip
def test_webhooks_with_a_secret_or_only_loopback_start(tmp_path, settings):
    dead = f"127.0.0.1:{free_port()}"
    composed = composer_server.serve(host="127.0.0.1", port=0, music_target=dead, video_target=dead,
                                     data_dir=tmp_path, **{"api_keys": ApiKeys([]), **settings})  # fmt: skip
    composed.stop(0)


def test_without_keys_or_a_secret_no_webhook_is_taken(tmp_path):
    """A webhook would go out signed with an empty secret: such a server refuses webhooks at submit time."""
    dead = f"127.0.0.1:{free_port()}"
    composed = composer_server.serve(host="127.0.0.1", port=0, music_target=dead, video_target=dead,
                                     data_dir=tmp_path, api_keys=ApiKeys([]), webhook_secret="")  # fmt: skip
    channel = open_channel(f"127.0.0.1:{composed.port}")
    try:
        request = jobs_pb2.CreateJobRequest(request=wire.request_to_proto(validate_request(TINY)),
                                            webhook_url="https://hooks.example.com/x")  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            jobs_pb2_grpc.JobServiceStub(channel).CreateJob(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "TUNEREEL_WEBHOOK_SECRET" in caught.value.details()
    finally:
        channel.close()
        composed.stop(0)


def test_webhooks_to_private_addresses_are_refused_on_grpc_too(composer):
    _, channel = composer
    for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:5432/", "http://postgres:5432/"):
        request = jobs_pb2.CreateJobRequest(request=wire.request_to_proto(validate_request(TINY)), webhook_url=url)
        with pytest.raises(grpc.RpcError) as caught:
            jobs_pb2_grpc.JobServiceStub(channel).CreateJob(request, metadata=TWO, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "webhook" in caught.value.details()
