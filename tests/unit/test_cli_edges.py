"""The CLI trusts nothing the server names (issue 13, item 10): a job id that is not a UUID never becomes a path."""

from __future__ import annotations

import http.server
import json
import threading

from tunereel import cli


def test_a_job_id_that_is_not_a_uuid_never_becomes_a_file_name(tmp_path, monkeypatch, capsys):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"id": "../../escaped", "state": "queued", "request": {"seed": 1}}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(["--server", f"http://127.0.0.1:{server.server_port}", "generate", "--genre", "pop",
                         "--duration", "1", "--prompt", "x", "--no-progress"])  # fmt: skip
    finally:
        server.shutdown()
    assert code == 1 and "not a UUID" in capsys.readouterr().err
    assert list(tmp_path.parent.glob("escaped*")) == [] and list(tmp_path.iterdir()) == []
