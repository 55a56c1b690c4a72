"""How every tunereel client opens a channel: round robin over all resolved addresses, retries on UNAVAILABLE only.

The policy is data in service_config.json beside this file. Targets use gRPC name syntax: `dns:///music:50051`
in a cluster (a headless Service resolves to every replica), `ipv4:127.0.0.1:50051,127.0.0.1:50061` locally.
"""

from __future__ import annotations

import json
from importlib import resources

import grpc

__all__ = ["SERVICE_CONFIG", "channel_options", "open_channel", "open_aio_channel"]

SERVICE_CONFIG: dict = json.loads(resources.files("tunereel").joinpath("service_config.json").read_text())
MESSAGE_LIMIT_BYTES = 8 * 1024 * 1024


def channel_options() -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MESSAGE_LIMIT_BYTES),
        ("grpc.max_send_message_length", MESSAGE_LIMIT_BYTES),
        # Notice a dead peer within seconds on long streams.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def open_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=channel_options())


def open_aio_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=channel_options())
