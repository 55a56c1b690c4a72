"""Faults between the services, with real processes and kill -9: nothing lost, nothing run twice."""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pytest

from tests.e2e.jobs_helpers import TINY, count_in_logs, wait_state
from tunereel.launch import LocalStack, free_port

pytestmark = pytest.mark.slow

# Short leases and backoffs so that a dead worker's job comes back within seconds.
FAST_RECOVERY = ["--lease-seconds", "3", "--retry-base-seconds", "0.5", "--max-attempts", "6"]
BUSY = {**TINY, "duration": 5, "width": 768, "height": 512}  # several seconds of video on the tiny model


def _succeeded_counts(stack: LocalStack, job_ids: list[str]) -> dict[str, int]:
    """How often each job's success was logged; the composer logs it just after its commit, which the API may show
    first, so a job not yet logged is waited for (a few seconds)."""
    deadline = time.monotonic() + 10
    while True:
        text = "".join(path.read_text(errors="replace") for path in stack.log_dir.glob("composer*.log"))
        counts = {job_id: len(re.findall(rf"job {job_id}: succeeded", text)) for job_id in job_ids}
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_composer_killed_mid_job_then_restarted(models_dir, tmp_path):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=FAST_RECOVERY) as stack:
        client = httpx.Client(base_url=stack.gateway_url, timeout=60)
        ids = [client.post("/v1/jobs", json=BUSY).json()["id"], client.post("/v1/jobs", json=TINY).json()["id"]]
        wait_state(client, ids[0], {"running"})
        time.sleep(1.0)
        stack.stop_service("composer", kill=True)  # kill -9 in the middle of the first job
        stack.start_service("composer")
        stack.wait_ready()
        jobs = [wait_state(client, job_id, {"succeeded", "failed", "canceled"}, timeout=180) for job_id in ids]
        assert [job["state"] for job in jobs] == ["succeeded", "succeeded"]
        assert jobs[0]["attempts"] >= 2  # the killed attempt was run again
        assert _succeeded_counts(stack, ids) == {job_id: 1 for job_id in ids}
        results = list((stack.data_dir / "results").glob("*.mp4"))
        assert sorted(path.name.split(".")[0] for path in results) == sorted(ids)  # one file per job, no strays
        for job_id in ids:
            assert client.get(f"/v1/jobs/{job_id}/video").status_code == 200


def test_whole_system_killed_with_jobs_queued_and_running(models_dir, tmp_path):
    stack = LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=FAST_RECOVERY)
    with stack:
        client = httpx.Client(base_url=stack.gateway_url, timeout=60)
        ids = [client.post("/v1/jobs", json=body).json()["id"] for body in (BUSY, TINY, TINY)]
        wait_state(client, ids[0], {"running"})
        for name in list(stack.processes):
            stack.stop_service(name, kill=True)

    # `make run` again: new processes on the same data folder
    again = LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", data_dir=stack.data_dir, composer_args=FAST_RECOVERY)
    with again:
        client = httpx.Client(base_url=again.gateway_url, timeout=60)
        for job_id in ids:
            job = wait_state(client, job_id, {"succeeded", "failed", "canceled"}, timeout=180)
            assert job["state"] == "succeeded", job
            video = client.get(f"/v1/jobs/{job_id}/video")
            assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert _succeeded_counts(again, ids) == {job_id: 1 for job_id in ids}


def test_backend_dies_mid_stream_or_is_down_then_comes_back(models_dir, tmp_path):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=FAST_RECOVERY) as stack:
        client = httpx.Client(base_url=stack.gateway_url, timeout=60)

        # video killed while it generates and streams
        job = client.post("/v1/jobs", json=BUSY).json()
        deadline = time.monotonic() + 60
        while count_in_logs(stack.log_dir, "video", "generation started") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        stack.stop_service("video", kill=True)
        retried = wait_state(client, job["id"], {"queued", "failed"}, timeout=30)
        assert retried["state"] == "queued" and "video service" in retried["error"]
        stack.start_service("video")
        done = wait_state(client, job["id"], {"succeeded", "failed"}, timeout=180)
        assert done["state"] == "succeeded" and done["attempts"] >= 2

        # music down when the job starts, back a little later
        stack.stop_service("music", kill=True)
        job = client.post("/v1/jobs", json=TINY).json()
        deadline = time.monotonic() + 30
        retried = client.get(f"/v1/jobs/{job['id']}").json()
        while not retried["error"] and time.monotonic() < deadline:  # until the first attempt has failed
            time.sleep(0.1)
            retried = client.get(f"/v1/jobs/{job['id']}").json()
        assert retried["state"] == "queued" and "music service" in retried["error"]
        stack.start_service("music")
        done = wait_state(client, job["id"], {"succeeded", "failed"}, timeout=180)
        assert done["state"] == "succeeded" and done["attempts"] >= 2


def test_backend_that_never_comes_back_fails_the_job_in_bounded_time(models_dir, tmp_path):
    args = ["--lease-seconds", "3", "--retry-base-seconds", "0.3", "--max-attempts", "3"]
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=args) as stack:
        client = httpx.Client(base_url=stack.gateway_url, timeout=60)
        stack.stop_service("video", kill=True)
        started = time.monotonic()
        job = client.post("/v1/jobs", json=TINY).json()
        failed = wait_state(client, job["id"], {"succeeded", "failed"}, timeout=60)
        assert failed["state"] == "failed"
        assert "video service" in failed["error"] and "gave up after 3 attempts" in failed["error"]
        assert time.monotonic() - started < 60


def test_two_composer_replicas_on_one_postgresql_run_each_job_once(models_dir, tmp_path, postgres_url):
    args = ["--database-url", postgres_url, *FAST_RECOVERY]
    with LocalStack(models_dir=models_dir, log_dir=tmp_path / "logs", composer_args=args) as stack:
        # a second composer replica: same store, same data folder, its own port
        command = stack.command("composer")
        command[command.index("--port") + 1] = str(free_port())
        log = open(stack.log_dir / "composer-2.log", "ab")  # noqa: SIM115
        second = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = httpx.Client(base_url=stack.gateway_url, timeout=60)
            before = count_in_logs(stack.log_dir, "video", "generation started")
            ids = [client.post("/v1/jobs", json=TINY).json()["id"] for _ in range(10)]
            for job_id in ids:
                assert wait_state(client, job_id, {"succeeded", "failed"}, timeout=180)["state"] == "succeeded"
            assert count_in_logs(stack.log_dir, "video", "generation started") - before == 10
            assert count_in_logs(stack.log_dir, "music", "generation started") == 10
            assert _succeeded_counts(stack, ids) == {job_id: 1 for job_id in ids}
            per_replica = [
                (stack.log_dir / name).read_text().count(": succeeded") for name in ("composer.log", "composer-2.log")
            ]
            print(f"jobs per composer replica: {per_replica}")
            assert sum(per_replica) == 10
        finally:
            second.kill()
            second.wait()
            log.close()
