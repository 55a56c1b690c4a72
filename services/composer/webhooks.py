"""Webhooks: what a job's webhook URL may be, and delivery with a signature, a total deadline and no way to a
private address.

One parser (httpx's, the one that sends) decides at submit time and again at delivery; the host is checked by name
at submit time and by every address it resolves to at delivery, and the request then goes to the checked address
(Host header and TLS server name stay the URL's), so a name cannot point somewhere else between check and send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tunereel import wire
from tunereel.request import MAX_WEBHOOK_URL_CHARS, InvalidRequest, parse_webhook_url

from .store import JobRecord, JobStore

__all__ = ["WebhookPolicy", "WebhookSender", "UnsafeDestination", "check_webhook_url", "parse_webhook_url", "sign",
           "unsigned_webhooks_refusal"]

log = logging.getLogger("tunereel.composer.webhooks")

MAX_URL_LENGTH = MAX_WEBHOOK_URL_CHARS
# Names that only mean something inside a cluster or a host: never public receivers.
PRIVATE_SUFFIXES = (".local", ".localhost", ".internal", ".svc", ".cluster.local", ".lan", ".home.arpa")


class UnsafeDestination(Exception):
    """A webhook host that is, or resolves to, an address the server must not call."""


@dataclass(frozen=True)
class WebhookPolicy:
    allowed_hosts: frozenset[str] = frozenset()  # TUNEREEL_WEBHOOK_ALLOW: when set, only these host names
    allow_private: bool = False  # TUNEREEL_WEBHOOK_ALLOW_PRIVATE=1: loopback/private/link-local too (local tests)
    total_timeout_s: float = 15.0  # one delivery, connect to status line, however slowly the receiver answers
    max_attempts: int = 6


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def unsigned_webhooks_refusal(policy: WebhookPolicy, *, has_secret: bool) -> str | None:
    """Why the composer must not start (None: it may): webhooks configured to leave loopback (an allow-list naming
    another host, or private addresses allowed) with no signing secret would go out signed with b"", forgeable by
    anyone. Without such settings a server with no secret simply refuses webhooks at submit time."""
    if has_secret or not (policy.allowed_hosts or policy.allow_private):
        return None
    if policy.allowed_hosts and all(_is_loopback_name(host) for host in policy.allowed_hosts):
        return None
    return ("webhooks are configured beyond loopback (TUNEREEL_WEBHOOK_ALLOW / TUNEREEL_WEBHOOK_ALLOW_PRIVATE) but "
            "would be signed with an empty secret: set TUNEREEL_WEBHOOK_SECRET, or TUNEREEL_API_KEYS for per-key secrets")


def _is_loopback_name(host: str) -> bool:
    address = _address(host)
    return host == "localhost" if address is None else address.is_loopback


def check_webhook_url(url: str, policy: WebhookPolicy) -> httpx.URL:
    """Submit-time check: the strict parse, the allow-list, and no private, loopback or cluster host by name."""
    parsed = parse_webhook_url(url)
    host = parsed.host.lower()
    if policy.allowed_hosts and host not in policy.allowed_hosts:
        raise InvalidRequest("webhook", f"host {host!r} is not in the server's webhook allow-list")
    if policy.allow_private:
        return parsed
    address = _address(host)
    if address is not None:
        if not is_public_address(address):
            raise InvalidRequest("webhook", "must not point at a private, loopback or link-local address")
    elif "." not in host or host == "localhost" or host.endswith(PRIVATE_SUFFIXES):
        raise InvalidRequest("webhook", f"host {host!r} is not a public name")
    return parsed


def resolve_public(host: str, port: int, policy: WebhookPolicy,
                   resolve: Callable[..., list] = socket.getaddrinfo) -> str:  # fmt: skip
    """Delivery-time check: every address the name resolves to must be public; returns the one to connect to."""
    literal = _address(host)
    addresses = [literal] if literal is not None else [
        ipaddress.ip_address(info[4][0].split("%")[0]) for info in resolve(host, port, type=socket.SOCK_STREAM)
    ]  # fmt: skip
    if not addresses:
        raise UnsafeDestination(f"{host} resolves to nothing")
    if not policy.allow_private:
        bad = [str(a) for a in addresses if not is_public_address(a)]
        if bad:
            raise UnsafeDestination(f"{host} resolves to a non-public address")
    return str(addresses[0])


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`t=TIMESTAMP,v1=HEX`: HMAC-SHA256 over "TIMESTAMP." + body, so an old delivery cannot be replayed as new."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSender:
    """The webhook thread of one composer: claims due deliveries from the store and sends them, one at a time.

    Nothing a receiver does (a bad URL left in the database, a refused address, a receiver that answers one byte
    every few seconds, an exception of any kind) stops the loop: each delivery ends within the policy's total
    deadline, as delivered, retried later or given up.
    """

    def __init__(self, store: JobStore, policy: WebhookPolicy, signing_key: Callable[[str], bytes],
                 render: Callable[[JobRecord], dict]):  # fmt: skip
        self.store = store
        self.policy = policy
        self.signing_key = signing_key  # owner id → that key's secret
        self.render = render  # the job as the API shows it

    def run(self, stop: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not stop.is_set():
                try:
                    job = self.store.claim_webhook(hold_seconds=self.policy.total_timeout_s + 30.0)
                except Exception:  # noqa: BLE001
                    log.exception("webhook claim failed")
                    job = None
                if job is None:
                    stop.wait(0.5)
                    continue
                try:
                    loop.run_until_complete(self.deliver(job))
                except Exception:  # noqa: BLE001 - whatever happens, the next webhook still goes out
                    log.exception("job %s: webhook delivery crashed; giving up on it", job.id)
                    self._record(job.id, delivered=False, retry_in=None)
        finally:
            loop.close()

    async def deliver(self, job: JobRecord) -> bool:
        attempts = self.store.webhook_attempts(job.id)
        body = json.dumps(self.render(job), sort_keys=True).encode()
        timestamp = int(time.time())
        permanent = False
        try:
            url = parse_webhook_url(job.webhook_url or "")
            port = url.port or (443 if url.scheme == "https" else 80)
            address = await asyncio.get_running_loop().run_in_executor(
                None, resolve_public, url.host, port, self.policy
            )
            target = url.copy_with(host=address)
            headers = {
                "Host": url.netloc.decode("ascii"),
                "Content-Type": "application/json",
                "X-Tunereel-Signature": sign(self.signing_key(job.owner), timestamp, body),
                "X-Tunereel-Timestamp": str(timestamp),
                "X-Tunereel-Job": job.id,
            }
            async with httpx.AsyncClient(timeout=self.policy.total_timeout_s, follow_redirects=False) as client:
                async with asyncio.timeout(self.policy.total_timeout_s):
                    request = client.build_request("POST", target, content=body, headers=headers,
                                                   extensions={"sni_hostname": url.host})  # fmt: skip
                    reply = await client.send(request, stream=True)  # the status is enough; the body is not read
                    await reply.aclose()
            delivered, reason = 200 <= reply.status_code < 300, f"HTTP {reply.status_code}"
        except (InvalidRequest, UnsafeDestination) as error:
            delivered, reason, permanent = False, str(error), True
        except TimeoutError:
            delivered, reason = False, f"no answer within {self.policy.total_timeout_s:g} s"
        except (httpx.HTTPError, OSError) as error:
            delivered, reason = False, type(error).__name__
        if delivered:
            self._record(job.id, delivered=True, retry_in=None)
            log.info("job %s: webhook delivered", job.id)
            return True
        retry_in = None if permanent or attempts >= self.policy.max_attempts else min(60.0, 0.5 * 2 ** (attempts - 1))
        self._record(job.id, delivered=False, retry_in=retry_in)
        log.info("job %s: webhook attempt %d failed (%s)%s", job.id, attempts, reason,
                 f"; retry in {retry_in:.1f} s" if retry_in is not None else "; giving up")  # fmt: skip
        return False

    def _record(self, job_id: str, *, delivered: bool, retry_in: float | None) -> None:
        try:
            self.store.webhook_result(job_id, delivered=delivered, retry_in=retry_in)
        except Exception:  # noqa: BLE001 - the claim's hold expires and the delivery is tried again
            log.exception("job %s: could not record the webhook outcome", job_id)


def job_view(job: JobRecord) -> dict:
    from .job_service import job_to_proto  # the webhook body is the job exactly as the API shows it

    return wire.job_to_dict(job_to_proto(job))
