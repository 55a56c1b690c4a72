"""The `tunereel` CLI as a user runs it: a real process against real services."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.jobs_helpers import wait_state
from tests.media import probe_mp4
from tunereel.launch import LocalStack, free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "tunereel")  # the console script installed with the package


def tunereel(*args: str, server: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "--server", server, *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path_factory.mktemp("cli-logs")) as running:
        yield running


def test_generate_writes_a_valid_mp4(stack, tmp_path):
    out = tmp_path / "clip.mp4"
    result = tunereel(
        "generate", "--genre", "pop", "--duration", "1.5", "--prompt", "A beautiful sunset over the ocean.",
        "--mood", "upbeat", "--tempo", "120", "--instruments", "piano,drums", "--seed", "42",
        "--width", "64", "--height", "64", "-o", str(out), server=stack.gateway_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(out)) and "seed 42" in result.stdout
    info = probe_mp4(out)
    assert info["frame_count"] == 36 and info["audio_codec"] == "aac"
    assert json.loads(info["metadata"]["comment"])["music_prompt"] == "pop, upbeat, 120 bpm, with piano and drums"
    assert "Traceback" not in result.stderr

    listing = tunereel("jobs", "list", server=stack.gateway_url)
    assert listing.returncode == 0 and "succeeded" in listing.stdout
    job_id = listing.stdout.split()[0]
    shown = tunereel("jobs", "show", job_id, server=stack.gateway_url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["generate", "--genre", "pop"], 2, "required"),
        (["generate", "--genre", "pop", "--duration", "abc", "--prompt", "x"], 2, "invalid float"),
        (["generate", "--genre", "pop", "--duration", "-1", "--prompt", "x"], 1, "duration"),
        (["generate", "--genre", "pop", "--duration", "1", "--prompt", "x", "--width", "100"], 1, "multiple of 32"),
        (["jobs", "show", "not-a-job"], 1, "no job"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_non_zero_exit(stack, args, code, words):
    result = tunereel(*args, server=stack.gateway_url)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_server_down():
    result = tunereel("generate", "--genre", "pop", "--duration", "1", "--prompt", "x", server=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "cannot reach tunereel" in result.stderr


def test_ctrl_c_cancels_the_job(stack, tmp_path):
    process = subprocess.Popen(
        # long enough (about a minute of work here) that the job is still running when the Ctrl-C arrives
        [CLI, "--server", stack.gateway_url, "generate", "--genre", "pop", "--duration", "120",
         "--prompt", "a long one", "-o", str(tmp_path / "never.mp4")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a shell without job control starts background commands (`make test &`, CI runners)
        # with SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    client = httpx.Client(base_url=stack.gateway_url, timeout=30)
    deadline = time.monotonic() + 60
    job = None
    while time.monotonic() < deadline:
        jobs = client.get("/v1/jobs", params={"page_size": 1}).json()["jobs"]
        if jobs and jobs[0]["request"]["video_prompt"] == "a long one" and jobs[0]["state"] == "running":
            job = jobs[0]
            break
        time.sleep(0.1)
    assert job is not None
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "canceled job" in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert wait_state(client, job["id"], {"canceled", "succeeded", "failed"})["state"] == "canceled"
    assert not (tmp_path / "never.mp4").exists()
