"""The job API over HTTP on real processes: lifecycle, events, video with Range, idempotency, cancel, webhooks,
ids, the bounded queue and API keys."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import httpx
import pytest

from tests.e2e.jobs_helpers import SLOW, TINY, count_in_logs, wait_state
from tests.media import probe_mp4
from tunereel.auth import bearer_metadata
from tunereel.channels import open_channel
from tunereel.launch import LocalStack, free_port
from tunereel.v1 import jobs_pb2, jobs_pb2_grpc, music_pb2, music_pb2_grpc

pytestmark = pytest.mark.slow
SECRET = "test-webhook-secret"


class WebhookReceiver:
    """A loopback HTTP server that records POSTs; answers 500 to the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.received) <= receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    with LocalStack(
        models_dir=models_dir,
        log_dir=tmp_path_factory.mktemp("jobs-logs"),
        env={"TUNEREEL_WEBHOOK_SECRET": SECRET, "TUNEREEL_WEBHOOK_ALLOW_PRIVATE": "1"},  # the receiver is on loopback
        composer_args=["--max-queue", "20"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=60.0) as http:
        yield http


def test_job_lifecycle_events_and_video_with_range(client, tmp_path):
    created = client.post("/v1/jobs", json={**TINY, "duration": 2, "width": 768, "height": 512})
    assert created.status_code == 201, created.text
    job = created.json()
    assert uuid.UUID(job["id"]) and job["state"] in ("queued", "running")
    assert created.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert isinstance(job["request"]["seed"], int)  # fixed at creation, echoed back

    states, progress, etas = [], [], []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("event: "):
                states.append(line.removeprefix("event: "))
            elif line.startswith("data: ") and states[-1] != "end":
                event = json.loads(line.removeprefix("data: "))
                progress.append(event["progress"])
                if event["state"] == "running":
                    etas.append(event["eta_seconds"])
    assert states[-1] == "end" and states[-2] == "succeeded"
    assert "running" in states
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(eta is not None and eta >= 0 for eta in etas), etas

    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["error"] is None
    assert done["provenance"]["seed"] == job["request"]["seed"]
    assert done["provenance"]["music_model_id"] == "tiny-musicgen"
    assert done["started_at"] and done["ended_at"] and done["attempts"] == 1

    video = client.get(f"/v1/jobs/{job['id']}/video")
    assert video.status_code == 200 and video.headers["accept-ranges"] == "bytes"
    assert int(video.headers["content-length"]) == len(video.content) == done["result_size_bytes"]
    path = tmp_path / "job.mp4"
    path.write_bytes(video.content)
    assert probe_mp4(path)["frame_count"] == 48

    part = client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == video.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(video.content)}"
    tail = client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == video.content[-50:]
    bad = client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": f"bytes={len(video.content) + 10}-"})
    assert bad.status_code == 416


def test_list_is_newest_first_and_paginated(client):
    ids = [client.post("/v1/jobs", json=TINY).json()["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"page_size": 2}).json()
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:2]
    second = client.get("/v1/jobs", params={"page_size": 2, "page_token": first["next_page_token"]}).json()
    assert second["jobs"][0]["id"] == ids[0]
    for job_id in ids:
        wait_state(client, job_id, {"succeeded"})


def test_idempotency_key(client):
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = client.post("/v1/jobs", json=TINY, headers=headers)
    again = client.post("/v1/jobs", json=TINY, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/jobs", json={**TINY, "genre": "jazz"}, headers=headers)
    assert other.status_code == 409 and "idempotency key" in other.json()["error"]
    wait_state(client, first.json()["id"], {"succeeded"})


def test_cancel_while_queued_and_while_running(stack, client):
    started_before = count_in_logs(stack.log_dir, "video", "generation started")
    running = client.post("/v1/jobs", json=SLOW).json()
    queued = client.post("/v1/jobs", json=TINY).json()
    wait_state(client, running["id"], {"running"})
    deadline = time.monotonic() + 30
    while count_in_logs(stack.log_dir, "video", "generation started") == started_before:
        assert time.monotonic() < deadline, "the video service never started generating"
        time.sleep(0.05)
    assert client.get(f"/v1/jobs/{queued['id']}").json()["queue_position"] == 0

    canceled = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"

    cancels_before = count_in_logs(stack.log_dir, "video", "cancelled by the caller")
    client.post(f"/v1/jobs/{running['id']}/cancel")
    job = wait_state(client, running["id"], {"canceled", "succeeded", "failed"}, timeout=30)
    assert job["state"] == "canceled"
    deadline = time.monotonic() + 10  # the backend notices the cancel a moment after the job is marked
    while count_in_logs(stack.log_dir, "video", "cancelled by the caller") == cancels_before:
        assert time.monotonic() < deadline, "the video service kept generating after the cancel"
        time.sleep(0.05)
    leftovers = [p.name for p in stack.data_dir.rglob("*") if p.is_file() and (running["id"] in p.name or queued["id"] in p.name or p.suffix == ".partial")]
    assert leftovers == []
    assert list((stack.data_dir / "tmp").iterdir()) == []
    assert client.get(f"/v1/jobs/{running['id']}/video").status_code == 409


@pytest.mark.parametrize(
    "bad_id",
    ["../etc/passwd", "..%2F..%2Fjobs.db", "%2e%2e%2f%2e%2e%2fjobs.db", "not-a-uuid",
     "{12345678-1234-5678-1234-567812345678}", "12345678123456781234567812345678", "..", "%00"],
)
def test_ids_are_checked_before_anything_is_touched(client, bad_id):
    for path in (f"/v1/jobs/{bad_id}", f"/v1/jobs/{bad_id}/video", f"/v1/jobs/{bad_id}/events"):
        reply = client.get(path)
        assert reply.status_code == 404, (path, reply.status_code, reply.text)
    assert client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404


def test_webhook_is_signed_delivered_once_and_retried(stack, client):
    receiver = WebhookReceiver(fail_first=2)
    try:
        job = client.post("/v1/jobs", json={**TINY, "webhook": receiver.url}).json()
        assert job["webhook_url"] == receiver.url
        wait_state(client, job["id"], {"succeeded"})
        deadline = time.monotonic() + 30
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # nothing more may arrive after the success
        assert len(receiver.received) == 3  # two 500s, then delivered, then nothing
        headers, body = receiver.received[-1]
        timestamp = headers["X-Tunereel-Timestamp"]
        assert abs(int(timestamp) - time.time()) < 120
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-Tunereel-Signature"] == f"t={timestamp},v1={expected}"
        payload = json.loads(body)
        assert payload["id"] == job["id"] and payload["state"] == "succeeded"
    finally:
        receiver.close()


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "not a url",
                                 "http://exa\tmple.com/", "http://[::1", "http://ｅxample.com/"])  # fmt: skip
def test_webhook_must_be_http(client, url):
    reply = client.post("/v1/jobs", json={**TINY, "webhook": url})
    assert reply.status_code == 422 and reply.json()["field"] == "webhook", reply.text


def test_bad_body_is_refused_before_a_job_exists(client):
    reply = client.post("/v1/jobs", json={**TINY, "duration": -1})
    assert reply.status_code == 422 and reply.json()["field"] == "duration"


def test_bounded_queue_answers_201_or_429(models_dir, tmp_path):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=["--max-queue", "3"]) as small:
        def submit(_):
            return httpx.post(small.gateway_url + "/v1/jobs", json=TINY, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(submit, range(100)))
        assert set(codes) <= {201, 429}, codes
        assert codes.count(201) >= 3 and codes.count(429) >= 50
        busy = httpx.post(small.gateway_url + "/v1/jobs", json=TINY, timeout=60)
        if busy.status_code == 429:
            assert busy.headers["Retry-After"]


def test_api_keys(models_dir, tmp_path):
    env = {"TUNEREEL_API_KEYS": "key-one,key-two"}
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", env=env) as secured:
        url = secured.gateway_url
        assert httpx.post(url + "/v1/jobs", json=TINY).status_code == 401
        assert httpx.post(url + "/generate_content", json=TINY).status_code == 401
        wrong = httpx.get(url + "/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        one = {"Authorization": "Bearer key-one"}
        two = {"Authorization": "Bearer key-two"}
        job = httpx.post(url + "/v1/jobs", json=TINY, headers=one).json()
        assert httpx.get(url + f"/v1/jobs/{job['id']}", headers=one).status_code == 200
        assert httpx.get(url + f"/v1/jobs/{job['id']}", headers=two).status_code == 404
        assert job["id"] not in [j["id"] for j in httpx.get(url + "/v1/jobs", headers=two).json()["jobs"]]
        assert httpx.get(url + "/healthz").status_code == 200  # probes stay open

        channel = open_channel(secured.target("composer"))
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(jobs_pb2.GetJobRequest(id=job["id"]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        mine = stub.GetJob(jobs_pb2.GetJobRequest(id=job["id"]), metadata=[("authorization", "Bearer key-one")], timeout=10)
        assert mine.id == job["id"]
        channel.close()
        wait_state(httpx.Client(base_url=url, headers=one), job["id"], {"succeeded"})  # the composer's own key works

        # A tenant's key does not open music (or video) directly: only the composer's service key does.
        music = music_pb2_grpc.MusicServiceStub(open_channel(secured.target("music")))
        request = music_pb2.GenerateMusicRequest(prompt="pop", duration_seconds=1.0, seed=1)
        for key in ("key-one", "key-two", None):
            with pytest.raises(grpc.RpcError) as refused:
                next(music.GenerateMusic(request, metadata=bearer_metadata(key), timeout=30))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, key
        first = next(music.GenerateMusic(request, metadata=bearer_metadata(secured.service_key), timeout=60))
        assert first.HasField("header")


def test_a_composer_with_unsigned_webhooks_beyond_loopback_refuses_to_start(tmp_path):
    env = {**__import__("os").environ, "TUNEREEL_API_KEYS": "", "TUNEREEL_WEBHOOK_SECRET": "",
           "TUNEREEL_WEBHOOK_ALLOW": "hooks.example.com"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tunereel.composer.server", "--port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "TUNEREEL_WEBHOOK_SECRET" in line and "empty secret" in line


def test_a_model_service_beyond_loopback_refuses_to_start_with_only_tenant_keys(tmp_path):
    env = {**__import__("os").environ, "TUNEREEL_API_KEYS": "tenant-key", "TUNEREEL_SERVICE_KEYS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "tunereel.music.server", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "TUNEREEL_SERVICE_KEYS" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["tunereel.gateway", "tunereel.composer.server"])
def test_open_binding_without_keys_refuses_to_start(module, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, "--host", "0.0.0.0", "--port", str(free_port()), *(["--data-dir", str(tmp_path)] if "composer" in module else [])],
        capture_output=True, text=True, timeout=60, env={**__import__("os").environ, "TUNEREEL_API_KEYS": ""},
    )
    assert result.returncode == 2
    assert "TUNEREEL_API_KEYS" in result.stderr and "Traceback" not in result.stderr
