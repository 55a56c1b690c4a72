"""How every tunereel client opens a channel: round robin over all resolved addresses, retries on UNAVAILABLE only.

The policy is data in service_config.json beside this file. Targets use gRPC name syntax: `dns:///music:50051`
in a cluster (a headless Service resolves to every replica), `ipv4:127.0.0.1:50051,127.0.0.1:50061` locally.

A channel to a replicated backend names the backend's health service (`health_service=`): gRPC then watches
grpc.health.v1 on every replica (client-side health checking) and round robin sends new calls only to replicas that
report SERVING — one still loading its model, draining after SIGTERM or without weights gets none. With no replica
SERVING a call fails at once with UNAVAILABLE. A channel opened without it (tests, tools talking to one server)
reaches the server whatever it reports, so it can read the server's own error.
"""

from __future__ import annotations

import copy
import json
from importlib import resources

import grpc

__all__ = ["SERVICE_CONFIG", "MESSAGE_LIMIT_BYTES", "MUSIC_REQUEST_LIMIT_BYTES", "channel_options", "open_aio_channel", "open_channel", "service_config"]

SERVICE_CONFIG: dict = json.loads(resources.files("tunereel").joinpath("service_config.json").read_text())
MESSAGE_LIMIT_BYTES = 8 * 1024 * 1024
# The one larger message: a GenerateMusicRequest that carries the audio to repaint (music.proto `source_pcm`: up to
# 300 s of int16 stereo at 48 kHz, 57.6 MB). Only the composer's music channel sends it and only the music server
# receives it; every other channel and server keeps MESSAGE_LIMIT_BYTES.
MUSIC_REQUEST_LIMIT_BYTES = 64 * 1024 * 1024


def service_config(health_service: str | None = None) -> dict:
    """service_config.json, plus `healthCheckConfig` for `health_service` when given ("" = the server's overall status)."""
    config = copy.deepcopy(SERVICE_CONFIG)
    if health_service is not None:
        config["healthCheckConfig"] = {"serviceName": health_service}
    return config


def channel_options(health_service: str | None = None, *,
                    max_send_bytes: int = MESSAGE_LIMIT_BYTES) -> list[tuple[str, object]]:  # fmt: skip
    return [
        ("grpc.service_config", json.dumps(service_config(health_service))),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
        ("grpc.max_send_message_length", max_send_bytes),
        # Notice a dead peer within seconds on long streams.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def open_channel(target: str, *, health_service: str | None = None,
                 max_send_bytes: int = MESSAGE_LIMIT_BYTES) -> grpc.Channel:  # fmt: skip
    return grpc.insecure_channel(target, options=channel_options(health_service, max_send_bytes=max_send_bytes))


def open_aio_channel(target: str, *, health_service: str | None = None) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=channel_options(health_service))
