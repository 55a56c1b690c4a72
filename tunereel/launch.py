"""Start every tunereel service as a local process: music, video, composer, gateway (what `make run` does).

`LocalStack` is also what the end-to-end tests use, so the tests run the system exactly as a user starts it.
Music and video can run as several replicas (`music_replicas`, `video_replicas`), each a process on its own port,
named "music", "music-2", … (logs music.log, music-2.log, …). The composer reaches them through one static address
list (`ipv4:127.0.0.1:P1,127.0.0.1:P2`) with the same round-robin, health-checked channel configuration it uses with
DNS in a cluster (`dns:///music:50051`).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tunereel.auth import API_KEYS_SETTING, SERVICE_KEY_SETTING, SERVICE_KEYS_SETTING
from tunereel.envoy import envoy_command, render_local_config
from tunereel.healthcheck import grpc_status

__all__ = ["LocalStack", "free_port", "main", "static_target"]

BACKENDS = ("music", "video")
_REPLICA = re.compile(r"^(music|video)(?:-([2-9]|[1-9][0-9]+))?$")


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
    music_replicas: int = 1
    video_replicas: int = 1
    composer_args: list[str] = field(default_factory=list)  # extra flags, e.g. ["--lease-seconds", "5"]
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every service
    envoy: bool = False  # also start Envoy as the grpc-web front of the composer
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    service_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # composer → music/video, this run only

    def __post_init__(self) -> None:
        for kind in BACKENDS:
            if self.replica_count(kind) < 1:
                raise ValueError(f"{kind}_replicas must be at least 1")
        for name in (*self.replicas("music"), *self.replicas("video"), "composer", "gateway", "envoy", "envoy-admin"):
            self.ports.setdefault(name, free_port())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.data_dir or self.log_dir / "data"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.ports['gateway']}"

    def target(self, name: str) -> str:
        """One process's address, e.g. target("video-2")."""
        return f"{self.host}:{self.ports[name]}"

    def replica_count(self, kind: str) -> int:
        return {"music": self.music_replicas, "video": self.video_replicas}[kind]

    def replicas(self, kind: str) -> list[str]:
        """The process names of one backend's replicas: ["video", "video-2", …]."""
        return [kind if index == 1 else f"{kind}-{index}" for index in range(1, self.replica_count(kind) + 1)]

    def backend_target(self, kind: str) -> str:
        """What the composer dials for a backend: the one replica's address, or a static list of all of them."""
        names = self.replicas(kind)
        if len(names) == 1:
            return self.target(names[0])
        return static_target(self.host, [self.ports[name] for name in names])

    def command(self, name: str) -> list[str]:
        py = [sys.executable, "-m"]
        port = ["--host", self.host, "--port", str(self.ports[name])]
        replica = _REPLICA.match(name)
        kind = replica.group(1) if replica else name
        if kind == "music":
            return [*py, "tunereel.music.server", *port, "--preset", self.music_preset, "--models-dir", str(self.models_dir)]
        if kind == "video":
            return [*py, "tunereel.video.server", *port, "--preset", self.video_preset, "--models-dir", str(self.models_dir)]
        if name == "composer":
            return [
                *py, "tunereel.composer.server", *port,
                "--music", self.backend_target("music"), "--video", self.backend_target("video"),
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
                cors_origins=[self.gateway_url, *filter(None, self.env.get("TUNEREEL_CORS_ORIGINS", "").split(","))],
            )
            return envoy_command(config)
        raise KeyError(name)

    def start_service(self, name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env}
        if env.get(API_KEYS_SETTING, "").strip():  # tenants' keys on: music and video take only the composer's key
            replica = _REPLICA.match(name)
            if (replica.group(1) if replica else name) in BACKENDS:
                env.setdefault(SERVICE_KEYS_SETTING, self.service_key)
            elif name == "composer":
                env.setdefault(SERVICE_KEY_SETTING, self.service_key)
        process = subprocess.Popen(self.command(name), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = process
        return process

    def start(self) -> LocalStack:
        backends = [*self.replicas("music"), *self.replicas("video")]
        for name in backends:
            self.start_service(name)
        if len(backends) > 2:
            # The composer connects to every replica at once; one not listening yet would sit in reconnect backoff
            # for seconds and get no streams meanwhile. Replicas listen before they load their model.
            self._wait_listening(backends)
        for name in ("composer", "gateway", *(["envoy"] if self.envoy else [])):
            self.start_service(name)
        return self

    def _wait_listening(self, names: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}")
                try:
                    socket.create_connection((self.host, self.ports[name]), timeout=1.0).close()
                    waiting.remove(name)
                except OSError:
                    pass
            time.sleep(0.1)
        if waiting:
            raise TimeoutError(f"{', '.join(waiting)} not listening after {timeout:.0f} s (logs in {self.log_dir})")

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
        for name in ("envoy", "gateway", "composer", *self.replicas("video"), *self.replicas("music")):
            self.stop_service(name)
        for name in list(self.processes):  # anything else a caller started
            self.stop_service(name)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the gateway's /healthz says every service is SERVING and every running music and video replica
        reports SERVING itself; fails fast if a process died."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                reply = httpx.get(self.gateway_url + "/healthz", timeout=5.0)
                last = reply.text
                if reply.status_code == 200:
                    waiting = {name: grpc_status(self.target(name)) for name in self._running_replicas()}
                    waiting = {name: status for name, status in waiting.items() if status != "SERVING"}
                    if not waiting:
                        return
                    last = f"replicas not serving yet: {waiting}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.5)
        raise TimeoutError(f"services not ready after {timeout:.0f} s: {last} (logs in {self.log_dir})")

    def _running_replicas(self) -> list[str]:
        return [name for name in self.processes if _REPLICA.match(name)]

    def __enter__(self) -> LocalStack:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def static_target(host: str, ports: list[int]) -> str:
    """A gRPC target naming several addresses at once (the `ipv4:`/`ipv6:` schemes take IP literals only)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"several replicas need an IP address as host, not {host!r}") from None
    if address.version == 4:
        return "ipv4:" + ",".join(f"{host}:{port}" for port in ports)
    return "ipv6:" + ",".join(f"[{host}]:{port}" for port in ports)


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
    parser.add_argument("--music-replicas", type=int, default=1, help="music processes, on ports of their own")
    parser.add_argument("--video-replicas", type=int, default=1, help="video processes, on ports of their own")
    args = parser.parse_args(argv)
    if args.music_replicas < 1 or args.video_replicas < 1:
        parser.error("--music-replicas and --video-replicas must be at least 1")
    stack = LocalStack(
        models_dir=args.models_dir.resolve(),
        log_dir=args.log_dir.resolve(),
        data_dir=args.data_dir.resolve(),
        music_preset=args.music_preset,
        video_preset=args.video_preset,
        ports={"gateway": args.port, "envoy": args.envoy_port},
        envoy=args.envoy,
        music_replicas=args.music_replicas,
        video_replicas=args.video_replicas,
    )
    backends = " and ".join(
        kind if stack.replica_count(kind) == 1 else f"{stack.replica_count(kind)} {kind} replicas" for kind in BACKENDS
    )
    print(f"starting {backends}, composer and gateway (logs in {stack.log_dir}) …", flush=True)
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
