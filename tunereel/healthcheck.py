"""`python -m tunereel.healthcheck`: exit 0 when a local tunereel server is healthy, 1 otherwise.

The container images' HEALTHCHECK (Docker, Compose); Kubernetes uses its native gRPC probes instead. A gRPC server is
healthy when grpc.health.v1 reports SERVING for the service asked (default "", the server's overall status); the
gateway when an HTTP URL answers 2xx.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["grpc_status", "http_ok", "main"]


def grpc_status(target: str, service: str = "", timeout: float = 3.0) -> str:
    """The server's answer for `service` ("SERVING", "NOT_SERVING", ...), or "UNREACHABLE (CODE)"."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return f"UNREACHABLE ({error.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # a local URL named by the image
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunereel.healthcheck", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--port", type=int, help="gRPC port on 127.0.0.1")
    what.add_argument("--target", help="gRPC target, e.g. 127.0.0.1:50051")
    what.add_argument("--http", metavar="URL", help="HTTP URL that must answer 2xx")
    parser.add_argument("--service", default="", help='grpc.health.v1 service name (default "": overall)')
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.http:
        healthy = http_ok(args.http, args.timeout)
        print(f"{args.http}: {'ok' if healthy else 'not ok'}")
        return 0 if healthy else 1
    target = args.target or f"127.0.0.1:{args.port}"
    status = grpc_status(target, args.service, args.timeout)
    print(f"{target} {args.service or '(overall)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
