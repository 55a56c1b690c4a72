"""Webhooks as an attacker would probe them (issue 13, items 3-6): strict URLs, no private destinations, a total
deadline per delivery, a loop that survives anything, per-key signatures with a timestamp."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
import time

import pytest

from tunereel.request import validate_request

from tunereel.auth import ApiKeys, webhook_secret_for_key
from tunereel.composer.store import JobStore, sqlite_url
from tunereel.composer.webhooks import (
    UnsafeDestination,
    WebhookPolicy,
    WebhookSender,
    check_webhook_url,
    resolve_public,
    sign,
)
from tunereel.request import InvalidRequest

PUBLIC = WebhookPolicy()
REQUEST = validate_request({"genre": "pop", "duration": 1, "video_prompt": "a sunset", "width": 64, "height": 64})


@pytest.mark.parametrize(
    "url",
    ["http://exa\tmple.com/", "http://example.com/\r\nX-Injected: 1", "http://ｅxample.com/", "http://[::1",
     "http://exa mple.com/", "http://user:pw@example.com/", "ftp://example.com/", "http:///nohost"],
)  # fmt: skip
def test_urls_that_httpx_could_not_send_are_refused_at_submit(url):
    with pytest.raises(InvalidRequest) as caught:
        check_webhook_url(url, WebhookPolicy(allowed_hosts=frozenset({"example.com"})))
    assert caught.value.field == "webhook"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://postgres:5432/", "http://localhost/",
     "http://10.0.0.7/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://composer.default.svc.cluster.local/",
     "http://0.0.0.0/", "http://192.168.1.1/"],
)  # fmt: skip
def test_private_loopback_link_local_and_cluster_hosts_are_refused(url):
    with pytest.raises(InvalidRequest, match="webhook"):
        check_webhook_url(url, PUBLIC)
    check_webhook_url(url, WebhookPolicy(allow_private=True))  # the explicit setting (local tests) allows them


def test_public_urls_pass():
    assert check_webhook_url("https://hooks.example.com/x?y=1", PUBLIC).host == "hooks.example.com"


def test_a_public_name_that_resolves_to_a_private_address_is_refused_at_delivery():
    def rebinding(host, port, type):  # noqa: A002 - getaddrinfo's keyword
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]  # fmt: skip

    with pytest.raises(UnsafeDestination):
        resolve_public("hooks.example.com", 443, PUBLIC, resolve=rebinding)
    assert resolve_public("hooks.example.com", 443, WebhookPolicy(allow_private=True), resolve=rebinding)


def test_signature_covers_a_timestamp_and_each_key_has_its_own_secret():
    body = b'{"id": "x"}'
    signature = sign(b"secret", 1700000000, body)
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature == f"t=1700000000,v1={expected}"
    assert sign(b"secret", 1700000001, body) != signature  # a replay with a new timestamp needs a new signature
    keys = ApiKeys(["key-a", "key-b"])
    secret_a = keys.webhook_secret(ApiKeys.owner_id("key-a"))
    assert secret_a == webhook_secret_for_key("key-a") and secret_a != keys.webhook_secret(ApiKeys.owner_id("key-b"))
    assert keys.webhook_secret("not-an-owner") is None


@pytest.fixture
def store(tmp_path):
    job_store = JobStore(sqlite_url(tmp_path))
    job_store.migrate()
    yield job_store
    job_store.close()


def _ended_job_with_webhook(store: JobStore, url: str) -> str:
    record, _ = store.create(REQUEST, webhook_url=url)
    job = store.claim("w")
    store.fail(job.id, "w", "boom")
    return record.id


class _Dripper:
    """A receiver that accepts, then sends one byte of its status line every 0.5 s: never a complete answer."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection):
        with connection:
            for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                if self.stop.wait(0.5):
                    return
                try:
                    connection.send(bytes([byte]))
                except OSError:
                    return


def test_a_slow_receiver_is_cut_off_at_the_total_deadline(store):
    dripper = _Dripper()
    try:
        job_id = _ended_job_with_webhook(store, f"http://127.0.0.1:{dripper.port}/hook")
        policy = WebhookPolicy(allow_private=True, total_timeout_s=1.5)
        sender = WebhookSender(store, policy, lambda owner: b"s", lambda job: {"id": job.id})
        job = store.claim_webhook()
        started = time.monotonic()
        delivered = asyncio.run(sender.deliver(job))
        assert not delivered and time.monotonic() - started < 3.0
        assert store.get(job_id).webhook_state == "pending"  # retried later, not lost
    finally:
        dripper.stop.set()


def test_the_delivery_loop_survives_bad_urls_and_crashes_and_keeps_delivering(store):
    received = []

    class Receiver(threading.Thread):
        def run(self):
            import http.server

            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self):  # noqa: N802
                    received.append(self.rfile.read(int(self.headers["Content-Length"])))
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *args):
                    pass

            self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
            ready.set()
            self.server.serve_forever()

    ready = threading.Event()
    receiver = Receiver(daemon=True)
    receiver.start()
    ready.wait(5)
    # Rows a strict submit check would refuse (left by an older version): the loop must get past them.
    bad_tab = _ended_job_with_webhook(store, "http://exa\tmple.com/")
    bad_bracket = _ended_job_with_webhook(store, "http://[::1")
    good = _ended_job_with_webhook(store, f"http://127.0.0.1:{receiver.server.server_port}/hook")
    after = _ended_job_with_webhook(store, f"http://127.0.0.1:{receiver.server.server_port}/hook")
    crashes = iter([RuntimeError("render failed once")])

    def render(job):
        if job.id == good and not received:
            error = next(crashes, None)
            if error is not None:
                raise error
        return {"id": job.id}

    sender = WebhookSender(store, WebhookPolicy(allow_private=True, total_timeout_s=3), lambda owner: b"s", render)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and store.get(after).webhook_state == "pending":
        time.sleep(0.1)
    stop.set()
    thread.join(10)
    assert store.get(bad_tab).webhook_state == "failed" and store.get(bad_bracket).webhook_state == "failed"
    # The crash gave the first delivery of `good` up; the thread lived on and handled the other rows.
    assert store.get(good).webhook_state == "failed"
    assert store.get(after).webhook_state == "delivered" and received
    assert not thread.is_alive()
    receiver.server.shutdown()


def test_a_private_destination_in_the_database_is_given_up_at_delivery(store):
    job_id = _ended_job_with_webhook(store, "http://127.0.0.1:9/hook")
    sender = WebhookSender(store, PUBLIC, lambda owner: b"s", lambda job: {"id": job.id})
    assert not asyncio.run(sender.deliver(store.claim_webhook()))
    assert store.get(job_id).webhook_state == "failed"
