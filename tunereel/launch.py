"""Start every tunereel service as a local process: music, video, composer, gateway (what `make run` does).

`LocalStack` is also what the end-to-end tests use, so the tests run the system exactly as a user starts it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tunereel.envoy import envoy_command, render_local_config

__all__ = ["LocalStack", "free_port", "main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalStack:
    models_dir: Path
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tunereel-logs-")))
    data_dir: Path | None = None  # job store and results; kept across restarts (defaults to log_dir/data)
    music_preset: str = "tiny"
    video_preset: str = "tiny"
    composer_args: list[str] = field(default_factory=list)  # extra flags, e.g. ["--lease-seconds", "5"]
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every service
    envoy: bool = False  # also start Envoy as the grpc-web front of the composer
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("music", "video", "composer", "gateway", "envoy", "envoy-admin"):
            self.ports.setdefault(name, free_port())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.data_dir or self.log_dir / "data"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.ports['gateway']}"

    def target(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    def command(self, name: str) -> list[str]:
        py = [sys.executable, "-m"]
        port = ["--host", self.host, "--port", str(self.ports[name])]
        if name == "music":
            return [*py, "tunereel.music.server", *port, "--preset", self.music_preset, "--models-dir", str(self.models_dir)]
        if name == "video":
            return [*py, "tunereel.video.server", *port, "--preset", self.video_preset, "--models-dir", str(self.models_dir)]
        if name == "composer":
            return [
                *py, "tunereel.composer.server", *port,
                "--music", self.target("music"), "--video", self.target("video"),
                "--data-dir", str(self.data_dir), *self.composer_args,
            ]  # fmt: skip
        if name == "gateway":
            return [*py, "tunereel.gateway", *port, "--composer", self.target("composer")]
        if name == "envoy":
            config = render_local_config(
                self.log_dir / "envoy.yaml",
                listen_port=self.ports["envoy"],
                admin_port=self.ports["envoy-admin"],
                composer_host=self.host,
                composer_port=self.ports["composer"],
            )
            return envoy_command(config)
        raise KeyError(name)

    def start_service(self, name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env}
        process = subprocess.Popen(self.command(name), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = process
        return process

    def start(self) -> LocalStack:
        for name in ("music", "video", "composer", "gateway", *(["envoy"] if self.envoy else [])):
            self.start_service(name)
        return self

    @property
    def grpc_web_url(self) -> str:
        return f"http://{self.host}:{self.ports['envoy']}"

    def stop_service(self, name: str, *, kill: bool = False, timeout: float = 15.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for name in ("envoy", "gateway", "composer", "video", "music"):
            self.stop_service(name)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the gateway's /healthz says every service is SERVING; fails fast if a process died."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                reply = httpx.get(self.gateway_url + "/healthz", timeout=5.0)
                if reply.status_code == 200:
                    return
                last = reply.text
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.5)
        raise TimeoutError(f"services not ready after {timeout:.0f} s: {last} (logs in {self.log_dir})")

    def __enter__(self) -> LocalStack:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunereel-launch", description="Start every tunereel service locally.")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/tunereel/models"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("TUNEREEL_PORT", "8000")), help="gateway port")
    parser.add_argument("--music-preset", default="tiny")
    parser.add_argument("--video-preset", default="tiny")
    parser.add_argument("--log-dir", type=Path, default=Path(".cache/tunereel/logs"))
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/tunereel/data"), help="jobs and results")
    parser.add_argument("--envoy", action="store_true", help="also start Envoy as a grpc-web proxy of the composer")
    parser.add_argument("--envoy-port", type=int, default=8080)
    args = parser.parse_args(argv)
    stack = LocalStack(
        models_dir=args.models_dir.resolve(),
        log_dir=args.log_dir.resolve(),
        data_dir=args.data_dir.resolve(),
        music_preset=args.music_preset,
        video_preset=args.video_preset,
        ports={"gateway": args.port, "envoy": args.envoy_port},
        envoy=args.envoy,
    )
    print(f"starting music, video, composer and gateway (logs in {stack.log_dir}) …", flush=True)
    try:
        with stack:
            print(f"tunereel is ready: {stack.gateway_url}  (Ctrl-C stops every service)", flush=True)
            if stack.envoy:
                print(f"grpc-web (Envoy): {stack.grpc_web_url}", flush=True)
            while all(process.poll() is None for process in stack.processes.values()):
                time.sleep(1.0)
            dead = [name for name, process in stack.processes.items() if process.poll() is not None]
            print(f"error: {', '.join(dead)} stopped; see {stack.log_dir}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
