"""Client-facing error text (issue 13, item 9): which service failed, never its address, path or SQL."""

from __future__ import annotations

import logging

import grpc

from tunereel.redact import public_detail

LOG = logging.getLogger("test.redact")


def test_the_service_name_stays_and_the_address_goes(caplog):
    detail = "video service at 10.1.2.3:50052 is unavailable: ipv4:10.1.2.3:50052: Connection refused"
    with caplog.at_level("WARNING", logger="test.redact"):
        text = public_detail(grpc.StatusCode.UNAVAILABLE, detail, LOG)
    assert text.startswith("video service is unavailable (reference ") and "10.1.2.3" not in text
    reference = text.rsplit(" ", 1)[1].rstrip(")")
    assert any(reference in r.getMessage() and "Connection refused" in r.getMessage() for r in caplog.records)


def test_paths_and_sql_become_a_plain_sentence():
    text = public_detail(grpc.StatusCode.INTERNAL, "/data/tmp/compose-1.mp4: [Errno 28] No space left on device", LOG)
    assert text.startswith("internal error (reference ") and "/data" not in text
    text = public_detail(grpc.StatusCode.UNKNOWN, "(psycopg.OperationalError) SELECT jobs.id FROM jobs", LOG)
    assert "SELECT" not in text
    assert public_detail(grpc.StatusCode.INVALID_ARGUMENT, "duration: too long", LOG) == "duration: too long"
