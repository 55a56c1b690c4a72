"""Several replicas of music and of video, as local processes, behind the composer's round-robin channels.

The composer dials every replica through one static address list (`ipv4:127.0.0.1:P1,127.0.0.1:P2`), with the same
service config it uses over DNS in a cluster: round robin, retries on UNAVAILABLE, and client-side health checking,
so a replica that reports NOT_SERVING gets no new streams. Streams per replica are counted in each replica's log
("generation started", one line per stream that reaches the model).
"""

from __future__ import annotations

import logging
import time

import grpc
import httpx
import pytest

from tests.e2e.jobs_helpers import TINY, wait_state
from tunereel.channels import open_channel
from tunereel.launch import LocalStack, static_target
from tunereel.serving import start_server

STARTED = "generation started"
FAST_RECOVERY = ["--workers", "2", "--lease-seconds", "3", "--retry-base-seconds", "0.5", "--max-attempts", "6"]


# --- the channel policy, in-process (fast) ---------------------------------------------------------------------------


class Echo:
    """A gRPC server that counts its calls; health as tunereel servers have it (NOT_SERVING until told)."""

    def __init__(self):
        self.calls = 0
        handler = grpc.method_handlers_generic_handler(
            "x.Echo", {"Call": grpc.unary_unary_rpc_method_handler(self._call)}
        )
        self.server = start_server(lambda s: s.add_generic_rpc_handlers((handler,)), ["x.Echo"])

    def _call(self, request, context):
        self.calls += 1
        return b"ok"


def _settle(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_round_robin_sends_new_calls_only_to_serving_replicas():
    first, second = Echo(), Echo()
    target = static_target("127.0.0.1", [first.server.port, second.server.port])
    checked = open_channel(target, health_service="x.Echo")
    unchecked = open_channel(target)
    call = checked.unary_unary("/x.Echo/Call")
    try:
        first.server.set_serving(True)
        second.server.set_serving(True)
        _settle(lambda: call(b"", timeout=5) and first.calls > 0 and second.calls > 0)  # both connected
        first.calls = second.calls = 0
        for _ in range(10):
            call(b"", timeout=5)
        assert first.calls > 0 and second.calls > 0, (first.calls, second.calls)

        second.server.set_serving(False)  # e.g. draining, or still loading its model
        time.sleep(0.3)  # the status reaches the channel through its Watch stream
        first.calls = second.calls = 0
        for _ in range(10):
            call(b"", timeout=5)
        assert (first.calls, second.calls) == (10, 0)

        # a channel that does not name the health service reaches it anyway (tools, tests reading its own errors)
        plain = unchecked.unary_unary("/x.Echo/Call")
        for _ in range(6):
            plain(b"", timeout=5)
        assert second.calls > 0

        first.server.set_serving(False)
        time.sleep(0.3)  # as above: let the Watch stream carry the new status to the channel
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 5  # fails fast (and retried by policy), no hang until the deadline

        second.server.set_serving(True)
        time.sleep(0.3)
        first.calls = second.calls = 0
        for _ in range(5):
            call(b"", timeout=5)
        assert (first.calls, second.calls) == (0, 5)
    finally:
        checked.close()
        unchecked.close()
        first.server.stop(0)
        second.server.stop(0)


def test_local_stack_names_ports_and_targets(tmp_path):
    stack = LocalStack(models_dir=tmp_path, log_dir=tmp_path / "logs", music_replicas=2, video_replicas=3)
    assert stack.replicas("music") == ["music", "music-2"]
    assert stack.replicas("video") == ["video", "video-2", "video-3"]
    ports = [stack.ports[name] for name in (*stack.replicas("music"), *stack.replicas("video"), "composer", "gateway")]
    assert len(set(ports)) == len(ports)
    composer = stack.command("composer")
    music_ports = ",".join(f"127.0.0.1:{stack.ports[name]}" for name in stack.replicas("music"))
    assert composer[composer.index("--music") + 1] == f"ipv4:{music_ports}"
    assert stack.command("video-3")[2] == "tunereel.video.server"
    assert str(stack.ports["video-3"]) in stack.command("video-3")
    single = LocalStack(models_dir=tmp_path, log_dir=tmp_path / "logs1")
    assert single.backend_target("music") == single.target("music")  # one replica: as before
    assert static_target("::1", [1, 2]) == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError):
        static_target("localhost", [1, 2])


# --- two music and two video processes (slow) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    running = LocalStack(
        models_dir=models_dir,
        log_dir=tmp_path_factory.mktemp("replica-logs"),
        music_replicas=2,
        video_replicas=2,
        composer_args=FAST_RECOVERY,
    )
    with running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=120.0) as http:
        yield http


def _started(stack: LocalStack, name: str) -> int:
    return (stack.log_dir / f"{name}.log").read_text(errors="replace").count(STARTED)


def _counts(stack: LocalStack, kind: str) -> dict[str, int]:
    return {name: _started(stack, name) for name in stack.replicas(kind)}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


@pytest.mark.slow
def test_eight_jobs_spread_over_both_replicas_of_each_backend(stack, client):
    # The composer's channels connect on their first stream; once connected, round robin alternates.
    assert client.post("/generate_content", json=TINY).status_code == 200
    time.sleep(1.0)
    before = {kind: _counts(stack, kind) for kind in ("music", "video")}
    ids = []
    for index in range(8):
        reply = client.post("/v1/jobs", json={**TINY, "seed": index})
        assert reply.status_code == 201, reply.text
        ids.append(reply.json()["id"])
    jobs = [wait_state(client, job_id, {"succeeded", "failed", "canceled"}, timeout=240) for job_id in ids]
    assert [job["state"] for job in jobs] == ["succeeded"] * 8, jobs
    for kind in ("music", "video"):
        spread = _delta(_counts(stack, kind), before[kind])
        print(f"{kind} streams per replica: {spread}")
        assert sum(spread.values()) == 8, spread  # one stream per job, none retried
        assert all(count >= 2 for count in spread.values()), f"{kind} streams not spread: {spread}"


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record):
        if record.getMessage() == STARTED:
            self.count += 1


@pytest.mark.slow
def test_a_replica_that_reports_not_serving_gets_no_new_streams(stack, client, models_dir):
    """video-2 is replaced by the same server run in this process, so the test can flip its health."""
    from tunereel.video.server import serve

    body = {**TINY, "duration": 0.5}
    stack.stop_service("video-2")
    counter = _Counter()
    logger = logging.getLogger("tunereel.video")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(counter)
    replica = serve("tiny", host=stack.host, port=stack.ports["video-2"], models_dir=models_dir)
    try:
        assert replica.servicer.host.pipeline is not None
        # SERVING: the composer finds this replica again once its channel reconnects (gRPC's reconnect backoff after
        # the old process went away: seconds, however fast the requests are), then sends it streams
        deadline = time.monotonic() + 60
        while not counter.count and time.monotonic() < deadline:
            assert client.post("/generate_content", json=body).status_code == 200
            time.sleep(0.2)
        assert counter.count > 0, "the in-process replica never got a stream while SERVING"

        replica.set_serving(False)  # e.g. draining after SIGTERM, or a model that failed to load
        time.sleep(0.5)
        before, seen = _started(stack, "video"), counter.count
        for _ in range(6):
            assert client.post("/generate_content", json=body).status_code == 200
        assert counter.count == seen, "a NOT_SERVING replica got new streams"
        assert _started(stack, "video") - before == 6

        replica.set_serving(True)  # back: it gets streams again, so it was health, not a dead connection
        time.sleep(0.5)
        for _ in range(6):
            assert client.post("/generate_content", json=body).status_code == 200
        assert counter.count > seen
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        replica.stop(0)
        stack.start_service("video-2")
        stack.wait_ready()


@pytest.mark.slow
def test_kill_9_of_a_video_replica_mid_stream_retries_the_job_on_the_other(stack, client):
    before = _counts(stack, "video")
    job = client.post("/v1/jobs", json={**TINY, "duration": 6, "width": 768, "height": 512}).json()
    deadline = time.monotonic() + 60
    while sum(_delta(_counts(stack, "video"), before).values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    (victim,) = [name for name, count in _delta(_counts(stack, "video"), before).items() if count]
    (survivor,) = [name for name in stack.replicas("video") if name != victim]
    time.sleep(0.5)  # generating and streaming
    assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
    survivor_before = _started(stack, survivor)
    stack.stop_service(victim, kill=True)
    try:
        done = wait_state(client, job["id"], {"succeeded", "failed", "canceled"}, timeout=180)
        assert done["state"] == "succeeded", done
        assert done["attempts"] >= 2  # the killed attempt was run again …
        assert _started(stack, survivor) > survivor_before  # … on the replica that is still up
        video = client.get(f"/v1/jobs/{job['id']}/video")
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    finally:
        stack.start_service(victim)
        stack.wait_ready()


def test_each_backend_channel_names_its_own_health_service():
    """Music and video channels watch different health services; the shipped config is never modified."""
    from tunereel.channels import SERVICE_CONFIG, service_config

    music, video = service_config("tunereel.v1.MusicService"), service_config("tunereel.v1.VideoService")
    assert music["healthCheckConfig"] != video["healthCheckConfig"]
    assert "healthCheckConfig" not in SERVICE_CONFIG and "healthCheckConfig" not in service_config()


def _spans(stack: LocalStack, name: str, since: float) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of the generations in a replica's log after `since` (epoch seconds)."""
    import datetime

    spans, start = [], None
    for line in (stack.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
        if not line.endswith(("generation started", "generation ended")):
            continue
        stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if line.endswith("started"):
            start = stamp
        elif start is not None:
            if start >= since:
                spans.append((start, stamp))
            start = None
    return spans


@pytest.mark.slow
def test_shots_of_one_job_are_made_on_both_video_replicas_at_once(stack, client):
    """A video cut into shots: both video replicas make shots of the one job, their generations overlap in time, and
    the timeline (HTTP) says which replica made each shot. The tiny MusicGen makes noise, so the beats are whatever
    the tracker finds: this tests the structure, not the positions (tests/contract/test_shots.py tests those)."""
    _until_both_video_replicas_take_streams(stack, client)
    since = time.time() - 1.0  # the logs' clock has millisecond steps
    body = {**TINY, "duration": 8, "cuts": "bar", "scenes": ["a red room", "a blue sea"]}
    reply = client.post("/v1/jobs", json=body)
    assert reply.status_code == 201, reply.text
    job = wait_state(client, reply.json()["id"], {"succeeded", "failed", "canceled"}, timeout=300)
    assert job["state"] == "succeeded", job
    timeline = client.get(f"/v1/jobs/{job['id']}/timeline").json()
    shots = timeline["shots"]
    assert len(shots) >= 2 and shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == timeline["frames"] == 8 * 24
    assert [s["scene"] for s in shots] == sorted(s["scene"] for s in shots) and {s["scene"] for s in shots} == {0, 1}
    assert len({s["replica"] for s in shots}) == 2, shots
    first, second = (_spans(stack, name, since) for name in stack.replicas("video"))
    assert first and second
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second), (first, second)
    video = client.get(f"/v1/jobs/{job['id']}/video")
    assert video.status_code == 200
    chapters = _chapters(video.content)
    assert [c["metadata"]["title"] for c in chapters] == ["a red room", "a blue sea"]


def _until_both_video_replicas_take_streams(stack: LocalStack, client: httpx.Client, timeout: float = 60.0) -> None:
    """A replica restarted by an earlier test (kill -9) is back in the composer's round robin only once its channel
    has reconnected (after a backoff): small single takes until each video replica has taken one."""
    before = _counts(stack, "video")
    deadline = time.monotonic() + timeout
    while not all(_delta(_counts(stack, "video"), before).values()):
        assert time.monotonic() < deadline, f"a video replica takes no streams: {_delta(_counts(stack, 'video'), before)}"
        assert client.post("/generate_content", json=TINY).status_code == 200
        time.sleep(0.2)


def _chapters(mp4: bytes) -> list[dict]:
    import io

    import av

    with av.open(io.BytesIO(mp4)) as container:
        return container.chapters()
