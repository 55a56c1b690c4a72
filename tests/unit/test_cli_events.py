"""`tunereel generate` against a scripted gateway: an `error` event, a dropped event stream (reconnect with the last
event id), a failed job — each a one-line message and the right exit code, never a traceback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunereel import cli

JOB_ID = "0b0e5c1e-8f5e-4c52-9a57-3d4cf5a6b0a1"
MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64


def job(state: str, progress: float = 0.0, error: str | None = None) -> dict:
    return {
        "id": JOB_ID, "state": state, "progress": progress, "stage": None, "stage_progress": {}, "queue_position": 0,
        "eta_seconds": None, "error": error, "attempts": 1, "request": {"seed": 5}, "provenance": None,
    }  # fmt: skip


def sse(name: str, data, event_id: str | None = None) -> bytes:
    lines = [f"event: {name}"] + ([f"id: {event_id}"] if event_id else []) + [f"data: {json.dumps(data)}", "", ""]
    return "\n".join(lines).encode()


class Gateway:
    """`streams`: what each successive GET .../events sends (bytes), its connection then closed; `current`: what
    GET /v1/jobs/{id} answers. Records the Last-Event-ID of every events request."""

    def __init__(self, streams: list[bytes], current: dict):
        self.streams = list(streams)
        self.current = current
        self.last_event_ids: list[str | None] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/jobs":
                    self.reply(201, json.dumps(job("queued")).encode())
                else:
                    self.reply(200, json.dumps(job("canceled")).encode())

            def do_GET(self):
                if self.path.endswith("/events"):
                    gateway.last_event_ids.append(self.headers.get("Last-Event-ID"))
                    body = gateway.streams.pop(0) if gateway.streams else b""
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)  # then the connection closes: the stream ends here
                    self.close_connection = True
                elif self.path.endswith("/video"):
                    self.reply(200, MP4, "video/mp4")
                else:
                    self.reply(200, json.dumps(gateway.current).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def quick_reconnects(monkeypatch):
    monkeypatch.setattr(cli, "RECONNECT_DELAY_S", 0.01)


def generate(gateway: Gateway, tmp_path, capsys) -> tuple[int, str, str]:
    code = cli.main(["--server", gateway.url, "generate", "--genre", "pop", "--duration", "1", "--prompt", "x",
                     "-o", str(tmp_path / "out.mp4"), "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_dropped_stream_and_error_event_reconnect_with_the_last_event_id(tmp_path, capsys):
    gateway = Gateway(
        streams=[
            sse("running", job("running", 0.3), "1.running.music.300.0"),  # then dropped, no `end`
            sse("error", {"error": "the composer is restarting"}),
            sse("succeeded", job("succeeded", 1.0), "1.succeeded.done.1000.0") + sse("end", job("succeeded", 1.0)),
        ],
        current=job("running", 0.3),
    )
    try:
        code, out, err = generate(gateway, tmp_path, capsys)
    finally:
        gateway.close()
    assert code == 0, err
    assert (tmp_path / "out.mp4").read_bytes() == MP4
    assert gateway.last_event_ids == [None, "1.running.music.300.0", "1.running.music.300.0"]
    assert "Traceback" not in err


def test_error_events_until_giving_up_end_with_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "MAX_RECONNECTS", 2)
    gateway = Gateway(streams=[sse("error", {"error": "watch failed: UNAVAILABLE"})] * 3, current=job("running", 0.5))
    try:
        code, out, err = generate(gateway, tmp_path, capsys)
    finally:
        gateway.close()
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "watch failed: UNAVAILABLE" in last and "reconnects" in last
    assert "Traceback" not in err and not (tmp_path / "out.mp4").exists()


def test_stream_that_drops_after_the_job_ended_reads_the_job_and_reports_its_failure(tmp_path, capsys):
    gateway = Gateway(streams=[b""], current=job("failed", 0.4, error="the audio cannot be mastered: NaN"))
    try:
        code, out, err = generate(gateway, tmp_path, capsys)
    finally:
        gateway.close()
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: job {JOB_ID} failed: the audio cannot be mastered: NaN"


def test_parse_events_follows_the_event_stream_rules():
    lines = ["event: running", "id: 7", "data: {\"state\": \"running\",", "data: \"progress\": 0.5}", "",
             ": a comment", "", "event: end", "data: null", ""]  # fmt: skip
    events = list(cli.parse_events(lines))
    assert events == [cli.ServerEvent("running", {"state": "running", "progress": 0.5}, "7"), cli.ServerEvent("end", None)]
