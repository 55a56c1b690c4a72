"""Failures end a job at once with the real cause; only what a retry can change is retried (backend calls counted).

The composer runs for real (gRPC, job runner, SQLite store, FFmpeg) against scripted backends (tests/fake_backends.py),
so each fault is exactly the one named: a mux failure, a full disk, a frame before its header, NaN audio, a backend
that is restarting, a backend's internal error, a model the backend does not serve.
"""

from __future__ import annotations

import threading
import time

import av
import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fake_backends import FakeMusic, FakeVideo, serve_fake
from tunereel import wire
from tunereel.channels import open_channel
from tunereel.composer import compose as compose_module
from tunereel.composer import server as composer_server
from tunereel.composer.muxer import Mp4Muxer, MuxError
from tunereel.composer.store import JobStore, sqlite_url
from tunereel.gateway.app import GatewaySettings, create_app
from tunereel.request import validate_request
from tunereel.v1 import composer_pb2, composer_pb2_grpc, jobs_pb2, jobs_pb2_grpc, music_pb2

# One continuous take: these faults are those of music and video made at the same time (shots: tests/contract/test_shots.py).
REQUEST = {"genre": "pop", "duration": 1, "video_prompt": "a test card", "width": 64, "height": 64, "seed": 7, "cuts": "none"}
TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELED}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    music, video = FakeMusic(), FakeVideo()
    music_server, video_server = serve_fake(music), serve_fake(video)
    composer = composer_server.serve(
        host="127.0.0.1", port=0, music_target=f"127.0.0.1:{music_server.port}",
        video_target=f"127.0.0.1:{video_server.port}", data_dir=tmp_path_factory.mktemp("data"),
        max_attempts=3, lease_seconds=30.0, retry_base_seconds=0.05,
    )  # fmt: skip
    channel = open_channel(f"127.0.0.1:{composer.port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while health.Check(health_pb2.HealthCheckRequest(service="")).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "composer never reported SERVING"
        time.sleep(0.05)
    yield {
        "music": music, "video": video, "composer": composer, "channel": channel,
        "jobs": jobs_pb2_grpc.JobServiceStub(channel), "compose": composer_pb2_grpc.ComposerServiceStub(channel),
    }  # fmt: skip
    channel.close()
    composer.stop(0)
    music_server.stop(0)
    video_server.stop(0)


def run_job(system, **fields) -> jobs_pb2.Job:
    request = wire.request_to_proto(validate_request({**REQUEST, **fields}))
    job = system["jobs"].CreateJob(jobs_pb2.CreateJobRequest(request=request), timeout=10)
    deadline = time.monotonic() + 60
    while job.state not in TERMINAL:
        assert time.monotonic() < deadline, f"job never ended: {job}"
        time.sleep(0.05)
        job = system["jobs"].GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=10)
    return job


@pytest.fixture(autouse=True)
def healthy_backends(system):
    system["music"].reset()
    system["video"].reset()
    yield


def assert_failed_at_once(system, job: jobs_pb2.Job, *words: str) -> None:
    assert job.state == jobs_pb2.JOB_STATE_FAILED, job
    assert job.attempts == 1, f"a deterministic failure was retried: {job}"
    # Generated at most once, not again with the same seed (the other source may not have been called yet when the
    # failing one ended the composition).
    assert system["music"].calls <= 1 and system["video"].calls <= 1, (system["music"].calls, system["video"].calls)
    for word in words:
        assert word in job.error, job.error
    assert "stopped responding" not in job.error
    work_dir = system["composer"].runner.settings.work_dir
    assert not [p for p in work_dir.iterdir() if p.name.startswith(("compose-", ".compose-"))]


def test_a_healthy_job_succeeds_with_one_call_each(system):
    job = run_job(system)
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job
    assert (system["music"].calls, system["video"].calls) == (1, 1)


def test_nan_audio_fails_the_job_at_once(system):
    system["music"].reset("nan")
    assert_failed_at_once(system, run_job(system), "music service", "NaN")


def test_frame_before_its_header_fails_the_job_at_once(system):
    system["video"].reset("frame-before-header")
    assert_failed_at_once(system, run_job(system), "video service", "frame 0 before its header")


def test_backend_internal_error_is_not_generated_again(system, caplog):
    system["music"].reset("internal")
    with caplog.at_level("WARNING", logger="tunereel.composer"):
        job = run_job(system)
    assert job.state == jobs_pb2.JOB_STATE_FAILED and job.attempts == 1, job
    assert system["music"].calls == 1
    # The client reads which service failed and a reference; the backend's own text is in the log under it.
    assert job.error.startswith("music service failed (INTERNAL) (reference "), job.error
    assert "music model produced garbage" not in job.error
    reference = job.error.rsplit("reference ", 1)[1].rstrip(")")
    assert any(reference in r.getMessage() and "music model produced garbage" in r.getMessage() for r in caplog.records)


def test_mux_failure_fails_the_job_at_once(system, monkeypatch):
    class BrokenEncoder(Mp4Muxer):
        def add_frame(self, rgb):
            if self.frame_count == 3:
                raise MuxError("video encoding/muxing failed: Invalid data found when processing input")
            super().add_frame(rgb)

    monkeypatch.setattr(compose_module, "Mp4Muxer", BrokenEncoder)
    job = run_job(system)
    assert_failed_at_once(system, job, "writing the MP4 failed", "(reference ")
    assert "Invalid data" not in job.error  # FFmpeg's own words go to the log, under the reference


def test_full_disk_fails_the_job_at_once(system, monkeypatch):
    """FFmpeg really writes to a full device (/dev/full answers every write with ENOSPC)."""
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda _path, *args, **kwargs: real_open("/dev/full", *args, **kwargs))
    job = run_job(system)
    assert_failed_at_once(system, job, "disk is full", "(reference ")
    assert "No space left" not in job.error and "/" not in job.error  # no path or errno text for the client


def test_full_disk_when_moving_the_result_into_place(system, monkeypatch):
    from tunereel.composer import jobs as jobs_module

    def replace(_src, _dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs_module.os, "replace", replace)
    assert_failed_at_once(system, run_job(system), "disk is full")


def test_unavailable_backend_is_retried_with_backoff_and_then_succeeds(system):
    system["video"].reset("unavailable", times=1)
    job = run_job(system)
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job
    assert job.attempts == 2 and system["video"].calls == 2


def test_music_received_whole_before_a_video_failure_is_not_made_again(system):
    """The video replica dies after its last frame: the retry replays the music the first attempt received whole (and
    makes its video with that music's seed: the request has none, so the first attempt drew it)."""
    system["video"].reset("unavailable-at-end", times=1)
    job = run_job(system, seed=None)
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job
    assert job.attempts == 2 and system["video"].calls == 2
    assert system["music"].calls == 1, "the music was made again"
    assert job.provenance.seed == system["music"].last_request.seed == system["video"].last_request.seed
    assert not list(system["composer"].runner.settings.work_dir.glob("music-*")), "kept music outlived its job"


def test_unavailable_backend_that_stays_down_fails_after_the_attempts(system):
    system["music"].reset("unavailable")
    job = run_job(system)
    assert job.state == jobs_pb2.JOB_STATE_FAILED and job.attempts == 3, job
    assert system["music"].calls == 3
    assert "gave up after 3 attempts" in job.error and "music service" in job.error


def test_unserved_model_is_invalid_argument_naming_the_field(system):
    request = wire.request_to_proto(validate_request({**REQUEST, "music_model": "large"}))
    with pytest.raises(grpc.RpcError) as caught:
        list(system["compose"].Compose(composer_pb2.ComposeRequest(request=request), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("music_model:"), caught.value.details()
    job = run_job(system, video_model="ltx-13b")
    assert job.state == jobs_pb2.JOB_STATE_FAILED and job.attempts == 1 and job.error.startswith("video_model:")


def test_wrong_model_name_over_http_is_400_naming_the_field(system):
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{system['composer'].port}"))
    with TestClient(app) as client:
        reply = client.post("/generate_content", json={**REQUEST, "video_model": "no-such-model"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith("video_model:")
    assert "Retry-After" not in reply.headers


def test_composition_errors_map_to_status_codes(system):
    system["video"].reset("frame-before-header")
    request = wire.request_to_proto(validate_request(REQUEST))
    with pytest.raises(grpc.RpcError) as caught:
        list(system["compose"].Compose(composer_pb2.ComposeRequest(request=request), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INTERNAL and "before its header" in caught.value.details()
    system["video"].reset("unavailable")
    with pytest.raises(grpc.RpcError) as caught:
        list(system["compose"].Compose(composer_pb2.ComposeRequest(request=request), timeout=30))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and caught.value.details().startswith("video service is unavailable")
    assert "restarting" not in caught.value.details()  # the backend's own words and address go to the log


def test_stop_hands_running_jobs_back_and_closes_threads_channels_and_store(tmp_path):
    music, video = FakeMusic(), FakeVideo()
    video.reset("slow")
    music_server, video_server = serve_fake(music), serve_fake(video)
    before = set(threading.enumerate())  # the module's composer has threads of the same names
    composer = composer_server.serve(
        host="127.0.0.1", port=0, music_target=f"127.0.0.1:{music_server.port}",
        video_target=f"127.0.0.1:{video_server.port}", data_dir=tmp_path, retry_base_seconds=0.05,
    )  # fmt: skip
    try:
        request = wire.request_to_proto(validate_request({**REQUEST, "duration": 4}))
        with open_channel(f"127.0.0.1:{composer.port}") as channel:
            job = jobs_pb2_grpc.JobServiceStub(channel).CreateJob(jobs_pb2.CreateJobRequest(request=request), timeout=10)
        deadline = time.monotonic() + 20
        while video.calls == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        owned = {composer.runner.worker_prefix, "health-mirror", "webhooks", "sweeper"}
        composer.stop(0)
        alive = [t.name for t in set(threading.enumerate()) - before if any(t.name.startswith(n) for n in owned)]
        assert alive == [], f"threads still running after stop: {alive}"
        with pytest.raises(ValueError, match="[Cc]losed"):
            composer.backends.music_stub.GenerateMusic(music_pb2.GenerateMusicRequest(), timeout=1)
        assert composer.store.engine.pool.checkedout() == 0
        store = JobStore(sqlite_url(tmp_path))
        try:
            record = store.get(job.id)
        finally:
            store.close()
        assert record.state == "queued" and "shut down" in record.error, record  # back in the queue, not leased
    finally:
        composer.stop(0)
        music_server.stop(0)
        video_server.stop(0)


def test_event_stream_ids_and_last_event_id(system):
    job = run_job(system)
    app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{system['composer'].port}"))
    with TestClient(app) as client:
        first = client.get(f"/v1/jobs/{job.id}/events").text
        ids = [line.removeprefix("id: ") for line in first.splitlines() if line.startswith("id: ")]
        assert "event: succeeded" in first and len(ids) == 1 and first.rstrip().endswith("}")
        again = client.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": ids[0]}).text
    assert "event: succeeded" not in again  # the snapshot the client has is not sent again
    assert again.startswith("event: end") and '"state": "succeeded"' in again
