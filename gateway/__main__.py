"""`python -m tunereel.gateway`: serve the HTTP gateway with uvicorn."""

from __future__ import annotations

import argparse
import os

import sys

import uvicorn

from tunereel.auth import ApiKeys, InsecureBinding, refuse_open_binding

from .app import GatewaySettings, create_app
from .limits import DEFAULT_MAX_BODY_BYTES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunereel-gateway", description="tunereel HTTP gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--composer", default="127.0.0.1:50050", help="ComposerService target")
    parser.add_argument("--max-body-bytes", type=int,
                        default=int(os.environ.get("TUNEREEL_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
                        help="request bodies larger than this get 413 before any parsing")
    parser.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("TUNEREEL_MAX_UPLOAD_MB", "50")),
                        help="largest upload in MB (POST /v1/uploads; the composer checks it too)")
    args = parser.parse_args(argv)
    keys = ApiKeys.from_env()
    try:
        refuse_open_binding(args.host, keys, "the gateway")
    except InsecureBinding as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app = create_app(GatewaySettings(composer_target=args.composer, api_keys=keys, max_body_bytes=args.max_body_bytes,
                                     max_upload_bytes=int(args.max_upload_mb * 1e6)))  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
