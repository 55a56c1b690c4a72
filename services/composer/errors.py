"""What can go wrong in a composition, as one family of exceptions.

Each error says what happened in words a user can act on, and whether a later attempt can help (`retryable`): a
backend that is down, busy or too slow may be back; a deterministic failure (a bad request, audio that is not
numbers, a backend's internal error with the same seed, a protocol violation, a full disk) would only fail again,
after another full generation. Which gRPC status a caller gets is decided by the servicer (server.py); what is retried
and when, by the job runner (jobs.py). Nothing here knows about either.
"""

from __future__ import annotations

import errno
import logging
import uuid

__all__ = [
    "BackendBusy",
    "BackendFailed",
    "BackendProtocolError",
    "BackendRejected",
    "BackendTimeout",
    "BackendUnavailable",
    "ComposeError",
    "InvalidAudio",
    "InvalidScenes",
    "MuxFailed",
    "OutOfSpace",
    "StorageFailed",
    "is_disk_full",
    "public_message",
]


class ComposeError(Exception):
    """A composition failed; `message` says why in words a client may read, `detail` (for the log only) what the
    system said: file paths, peer addresses, a backend's own text. `retryable`: whether another attempt can succeed."""

    retryable = False

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.detail = detail


class BackendUnavailable(ComposeError):
    """No replica of a backend answers (down, restarting, draining, still loading its model), or the stream broke."""

    retryable = True


class BackendBusy(ComposeError):
    """A backend refused for now (RESOURCE_EXHAUSTED): all its slots are taken."""

    retryable = True


class BackendTimeout(ComposeError):
    """A backend did not finish within the deadline; a less loaded replica may."""

    retryable = True


class BackendRejected(ComposeError):
    """A backend refused the request itself (INVALID_ARGUMENT), e.g. a model it does not serve. `field` names the
    request field at fault (`music_model`, `video_model`, ...) when the backend's message names one."""

    def __init__(self, message: str, field: str | None = None, detail: str | None = None):
        super().__init__(message, detail)
        self.field = field


class BackendFailed(ComposeError):
    """A backend ended with an internal error. The same request and seed would fail the same way, so no retry."""


class BackendProtocolError(ComposeError):
    """A backend broke the stream contract of protos/ (data before its header, chunks out of order, too few frames)."""


class InvalidAudio(ComposeError):
    """The audio cannot be mastered (NaN or inf samples)."""


class InvalidScenes(ComposeError):
    """The request's scenes do not fit the music that was made (a bar range past the song's end, more scenes than
    bars). Known only once the music exists; `field` names the request field (e.g. `scenes.2.bars`)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class MuxFailed(ComposeError):
    """FFmpeg could not encode or write the MP4."""


class OutOfSpace(ComposeError):
    """The disk is full. Not retried: the same file would not fit again until someone frees space."""


class StorageFailed(ComposeError):
    """Writing or moving the result failed for another reason than a full disk (permissions, a missing folder)."""


def is_disk_full(error: BaseException | None) -> bool:
    """True when `error`, or an error it was raised from, is ENOSPC (or EDQUOT: a quota is a full disk too)."""
    seen = 0
    while error is not None and seen < 10:
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def public_message(error: ComposeError) -> str:
    """What a client reads of a failure: the error's own message; its detail (paths, peer addresses, a backend's
    text) goes to the log under a reference the client sees."""
    if not error.detail:
        return error.message
    reference = uuid.uuid4().hex[:12]
    log = logging.getLogger("tunereel.composer")
    log.warning("error ref=%s %s: %s: %s", reference, type(error).__name__, error.message, error.detail)
    return f"{error.message} (reference {reference})"
