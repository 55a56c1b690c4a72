"""Small helpers for the job tests: wait for states, read SSE, count log lines."""

from __future__ import annotations

import time

import httpx

# One continuous take (cuts: none): these tests count one video stream per job. Cut videos: test_replicas.py, test_shots.py.
TINY = {"genre": "pop", "duration": 1, "video_prompt": "a sunset", "width": 64, "height": 64, "cuts": "none"}
SLOW = {"genre": "pop", "duration": 10, "video_prompt": "a long sunset", "width": 768, "height": 512, "cuts": "none"}


def wait_state(client: httpx.Client, job_id: str, states: set[str], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("state") in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def count_in_logs(log_dir, service: str, text: str) -> int:
    return sum(path.read_text(errors="replace").count(text) for path in log_dir.glob(f"{service}*.log"))
