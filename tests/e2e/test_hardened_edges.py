"""Issue 13's probes of items 1, 2, 3 and 8 fired at a running stack on loopback, all at once, while an ordinary
client goes on using it: health answers, a job is created and completes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.jobs_helpers import TINY, wait_state
from tunereel.channels import open_channel
from tunereel.launch import LocalStack
from tunereel.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.slow

STREAMS = 200
LONG = {"genre": "pop", "duration": 300, "video_prompt": "a long sunset", "width": 64, "height": 64, "fps": 8, "cuts": "none"}


async def _open_event_streams(url: str, job_id: str, count: int, opened: list, finished: list, stop: asyncio.Event):
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one() -> None:
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as reply:
                assert reply.status_code == 200
                first = True
                async for line in reply.aiter_lines():
                    if first and line.startswith("event:"):
                        opened.append(1)
                        first = False
                    if line == "event: end":
                        finished.append(1)
                        return

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        done = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, done], return_when=asyncio.ALL_COMPLETED)
        for task in tasks:
            task.result()  # a stream that failed fails the test


def _stream_huge_body(url: str, megabytes: int) -> tuple[int, int]:
    """POST a chunked body of `megabytes` MiB; returns (status, MiB the gateway let us send before answering)."""
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(megabytes):
            sent += 1
            yield b"[" * (1024 * 1024)

    try:
        reply = httpx.post(url + "/generate_content", content=chunks(), timeout=60,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        return reply.status_code, sent
    except httpx.HTTPError:  # the gateway answered 413 and closed while we were still sending: also refused
        return 413, sent


def test_probes_of_items_1_2_3_and_8_leave_every_other_client_served(models_dir, tmp_path):
    env = {"TUNEREEL_WEBHOOK_SECRET": "probe-secret", "TUNEREEL_WEBHOOK_ALLOW": "example.com"}
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", env=env, composer_args=["--max-queue", "20"]) as stack:
        url = stack.gateway_url
        http = httpx.Client(base_url=url, timeout=30)
        long_job = http.post("/v1/jobs", json=LONG).json()
        wait_state(http, long_job["id"], {"running"}, timeout=60)

        # Item 2: 200 open event streams on one running job (each one an SSE stream through the gateway and a
        # WatchJob on the composer, which has a pool of 16 threads).
        opened: list = []
        finished: list = []
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        streams = threading.Thread(
            target=lambda: loop.run_until_complete(_open_event_streams(url, long_job["id"], STREAMS, opened, finished, stop)),
            daemon=True,
        )
        streams.start()
        deadline = time.monotonic() + 60
        while len(opened) < STREAMS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(opened) == STREAMS, f"only {len(opened)} of {STREAMS} event streams opened"

        channel = open_channel(stack.target("composer"))
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        # Item 1: a body just over the limit, and a huge one streamed without a length.
        nested = ("[" + "[]," * 400_000 + "[]]").encode()
        over = http.post("/generate_content", content=nested, headers={"Content-Type": "application/json"})
        assert over.status_code == 413
        status, sent_mib = _stream_huge_body(url, 256)
        assert status == 413 and sent_mib < 256, (status, sent_mib)

        # Item 3: webhook URLs httpx cannot send (one passes the allow-list by name) are refused at submit.
        for bad in ("http://exa\tmple.com/", "http://[::1"):
            reply = http.post("/v1/jobs", json={**TINY, "webhook": bad})
            assert reply.status_code == 422 and reply.json()["field"] == "webhook"

        # Item 8: gRPC takes no more than HTTP: a 3 MB webhook URL and a 3 MB prompt are refused.
        request = common_pb2.GenerationRequest(genre="pop", duration_seconds=1, video_prompt="a sunset", width=64,
                                               height=64, fps=24)  # fmt: skip
        long_prompt = common_pb2.GenerationRequest()
        long_prompt.CopyFrom(request)
        long_prompt.video_prompt = "x" * 3_000_000
        for probe in (
            jobs_pb2.CreateJobRequest(request=request, webhook_url="http://example.com/" + "a" * 3_000_000),
            jobs_pb2.CreateJobRequest(request=long_prompt),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                jobs.CreateJob(probe, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # The ordinary client, while all 200 streams are open: health answers at once, a job is created and read.
        started = time.monotonic()
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status == health_pb2.HealthCheckResponse.SERVING
        assert http.get("/healthz").status_code == 200
        ordinary = http.post("/v1/jobs", json=TINY)
        assert ordinary.status_code == 201
        assert http.get(f"/v1/jobs/{ordinary.json()['id']}").json()["state"] == "queued"
        assert time.monotonic() - started < 10
        assert len(finished) == 0 and len(opened) == STREAMS  # every stream still open

        # The long job ends (cancelled): every one of the 200 streams sees its end; the ordinary job then completes.
        assert http.post(f"/v1/jobs/{long_job['id']}/cancel").status_code == 200
        deadline = time.monotonic() + 60
        while len(finished) < STREAMS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(finished) == STREAMS
        loop.call_soon_threadsafe(stop.set)
        streams.join(30)
        assert wait_state(http, ordinary.json()["id"], {"succeeded", "failed"}, timeout=180)["state"] == "succeeded"
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
