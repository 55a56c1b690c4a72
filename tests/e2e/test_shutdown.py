"""SIGTERM on a composer process with a running job: it claims nothing new after the signal, and the job it cannot
finish within the drain goes back to the queue at once (not left leased until the lease runs out)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fake_backends import FakeMusic, FakeVideo, serve_fake
from tunereel.channels import open_channel
from tunereel.composer.store import QUEUED, RUNNING, JobStore, sqlite_url
from tunereel.launch import free_port
from tunereel.request import validate_request
from tunereel.v1 import jobs_pb2, jobs_pb2_grpc

# 10 s at 24 fps with the "slow" video fault (50 ms a frame): about 12 s of work, far past the 3 s drain.
LONG = validate_request({"genre": "pop", "duration": 10, "video_prompt": "a long test card", "width": 64, "height": 64,
                         "fps": 24, "seed": 1, "cuts": "none"})  # fmt: skip
SHORT = validate_request({"genre": "pop", "duration": 1, "video_prompt": "queued after the signal", "width": 64,
                          "height": 64, "seed": 2, "cuts": "none"})  # fmt: skip


def _health_refused(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    except grpc.RpcError:
        return True
    return reply.status != health_pb2.HealthCheckResponse.SERVING


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _start_composer(port, data_dir, music_server, video_server, *, drain: str, extra=()) -> subprocess.Popen:
    env = {**os.environ, "TUNEREEL_DRAIN_SECONDS": drain}
    for name in ("TUNEREEL_API_KEYS", "TUNEREEL_API_KEYS_FILE", "TUNEREEL_WEBHOOK_SECRET"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "tunereel.composer.server", "--port", str(port), "--data-dir", str(data_dir),
         "--music", f"127.0.0.1:{music_server.port}", "--video", f"127.0.0.1:{video_server.port}", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _stop_all(composer: subprocess.Popen, *servers) -> None:
    if composer.poll() is None:
        composer.kill()
        composer.wait()
    for server in servers:
        server.stop(0)


def test_sigterm_stops_claiming_at_once_and_hands_the_running_job_back(tmp_path):
    music, video = FakeMusic(), FakeVideo()
    video.reset("slow")
    music_server, video_server = serve_fake(music), serve_fake(video)
    data_dir = tmp_path / "data"
    port = free_port()
    composer = _start_composer(port, data_dir, music_server, video_server, drain="3",
                               extra=["--lease-seconds", "60", "--workers", "2"])  # a free worker that could claim
    try:
        _wait(lambda: (data_dir / "jobs.db").exists(), 60, "the composer never created its store")
        store = JobStore(sqlite_url(data_dir))
        store.migrate()
        running, _ = store.create(LONG)
        _wait(lambda: store.get(running.id).state == RUNNING and video.calls > 0, 60, "the job never started")
        # An open watch (a browser tab) keeps the gRPC drain busy for the whole drain time, as in production.
        channel = open_channel(f"127.0.0.1:{port}")
        watch = jobs_pb2_grpc.JobServiceStub(channel).WatchJob(jobs_pb2.WatchJobRequest(id=running.id))
        watching, watch_ended = threading.Event(), []

        def follow() -> None:
            try:
                for _ in watch:
                    watching.set()
            except grpc.RpcError as error:
                watch_ended.append(error.code())

        threading.Thread(target=follow, daemon=True).start()
        _wait(watching.is_set, 30, "the watch never answered")

        composer.send_signal(signal.SIGTERM)
        # The handler stops claiming, then refuses new calls: once health is refused, nothing queued may be claimed.
        _wait(lambda: _health_refused(channel), 10, "the composer never began its drain")
        queued, _ = store.create(SHORT)
        _, stderr = composer.communicate(timeout=60)
        assert composer.returncode == 0, stderr[-2000:]
        _wait(lambda: watch_ended, 10, "the watch outlived the composer")
        assert watch_ended == [grpc.StatusCode.UNAVAILABLE]  # ended by the shutdown, a status clients retry on

        after = store.get(running.id)
        assert after.state == QUEUED, after
        assert after.lease_owner is None  # handed back, not left leased for 60 s
        assert "shut down" in after.error
        late = store.get(queued.id)
        assert late.state == QUEUED and late.attempts == 0, f"claimed after SIGTERM: {late}"
        store.close()
        channel.close()
    finally:
        _stop_all(composer, music_server, video_server)


def test_an_idle_composer_ends_at_once_on_sigterm(tmp_path):
    """With no job running there is nothing to drain: the process ends without waiting out the drain time."""
    music_server, video_server = serve_fake(FakeMusic()), serve_fake(FakeVideo())
    data_dir = tmp_path / "data"
    composer = _start_composer(free_port(), data_dir, music_server, video_server, drain="20")
    try:
        _wait(lambda: (data_dir / "jobs.db").exists(), 60, "the composer never created its store")
        time.sleep(1.0)  # serving
        signalled = time.monotonic()
        composer.send_signal(signal.SIGTERM)
        _, stderr = composer.communicate(timeout=60)
        assert composer.returncode == 0, stderr[-2000:]
        assert time.monotonic() - signalled < 8.0  # not the 20 s drain
    finally:
        _stop_all(composer, music_server, video_server)
