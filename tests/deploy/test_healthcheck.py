"""`python -m tunereel.healthcheck`, the images' HEALTHCHECK: 0 only when the server reports SERVING."""

from __future__ import annotations

import http.server
import threading

import grpc
import pytest

from tunereel.healthcheck import grpc_status, main
from tunereel.launch import free_port
from tunereel.serving import start_server


@pytest.fixture
def server():
    handler = grpc.method_handlers_generic_handler("x.Echo", {})
    running = start_server(lambda s: s.add_generic_rpc_handlers((handler,)), ["x.Echo"])
    yield running
    running.stop(0)


def test_grpc_exit_status_follows_the_health_service(server):
    assert main(["--port", str(server.port)]) == 1  # NOT_SERVING until the model is loaded
    server.set_serving(True)
    assert main(["--port", str(server.port)]) == 0
    assert main(["--target", f"127.0.0.1:{server.port}", "--service", "x.Echo"]) == 0
    assert main(["--port", str(server.port), "--service", "no.Such"]) == 1
    server.set_serving(False)
    assert main(["--port", str(server.port), "--service", "x.Echo"]) == 1


def test_unreachable_server_is_unhealthy():
    assert grpc_status(f"127.0.0.1:{free_port()}", timeout=1.0).startswith("UNREACHABLE")
    assert main(["--port", str(free_port()), "--timeout", "1"]) == 1


def test_http_mode():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        assert main(["--http", base + "/ok"]) == 0
        assert main(["--http", base + "/down"]) == 1
    finally:
        httpd.shutdown()
