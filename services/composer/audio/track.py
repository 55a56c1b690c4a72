"""The composer's audio path in its own thread: PCM in → StreamingMaster → the muxer's AAC encoder.

Mastering (loudness, true-peak limiting, the AAC round trips that verify it) and AAC encoding cost about a tenth of
the frames' encoding time. Done on the thread that feeds the frames, that tenth is added to every composition; here
it runs beside the frame encoding, on a core x264 leaves partly idle (docs/benchmarks.md, "Mux and encode").

The caller pushes PCM in order, attaches the muxer once it exists (mastered audio waits here until then), marks the
end of the song, and joins before closing the muxer. All mastering and every `add_audio` happen on the track's
thread, in order, so the output is the same as on one thread, sample for sample.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from ..muxer import Mp4Muxer
from .stream import StreamingMaster

__all__ = ["AudioTrack", "AudioTrackCancelled", "AudioTrackError"]

_END = object()


class AudioTrackError(Exception):
    """The audio thread failed (mastering or encoding); the original error is its `__cause__`."""


class AudioTrackCancelled(AudioTrackError):
    """`join` gave up because the composition was cancelled."""


class AudioTrack:
    """push(pcm)… attach(muxer)… end() → join(). `received` counts the samples pushed (for offsets and pacing)."""

    def __init__(self, master: StreamingMaster, *, max_pending: int = 32):
        self.master = master
        self.received = 0
        self._ended = self._attached = False
        self._inbox: queue.Queue = queue.Queue(maxsize=max_pending)  # bounded: a slow track slows its feeder
        self._failure: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio-track", daemon=True)
        self._thread.start()

    @property
    def total(self) -> int:
        return self.master.total

    @property
    def whole(self) -> bool:
        """True when the song is short enough to be mastered whole, once it has all arrived."""
        return self.master.whole

    def push(self, pcm: np.ndarray) -> None:
        """Queue the next PCM (float32 (samples, channels)); ValueError if it runs past the announced length."""
        if self.received + pcm.shape[0] > self.master.total:
            raise ValueError(f"more audio than announced: {self.received + pcm.shape[0]} > {self.master.total} samples")
        self._put(("pcm", pcm))
        self.received += pcm.shape[0]

    def attach(self, muxer: Mp4Muxer) -> None:
        """From now on mastered audio goes to `muxer` (what was mastered before goes first)."""
        self._put(("muxer", muxer))
        self._attached = True

    def end(self) -> None:
        """The song is complete: master what is left."""
        if self.received != self.master.total:
            raise ValueError(f"the song ended after {self.received} of {self.master.total} samples")
        self._put(("end", None))
        self._ended = True

    def join(self, cancelled: threading.Event | None = None) -> None:
        """Wait until every sample pushed has been mastered and handed to the muxer; re-raise a failure.
        A set `cancelled` stops the wait (and the track) with AudioTrackCancelled."""
        if not (self._ended and self._attached):
            self.abort()
            raise AudioTrackError("join() before end() and attach(): the audio would be incomplete")
        self._put((_END, None))
        while self._thread.is_alive():
            if cancelled is not None and cancelled.is_set():
                self.abort()
                raise AudioTrackCancelled("the audio track was cancelled")
            self._thread.join(0.1)
        self._raise_failure()

    def check(self) -> None:
        """Raise AudioTrackError now if the thread has failed (the feeder calls this as it goes)."""
        self._raise_failure()

    def abort(self, wait_s: float = 1.0) -> None:
        """Stop the thread without finishing (the composition failed or was cancelled). Waits up to `wait_s` for it;
        a mastering call already running (up to a few tenths of a second) ends on its own, its output unused."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    # ------------------------------------------------------------------------------------------------- internals
    def _put(self, item) -> None:
        while True:
            self._raise_failure()
            if self._stopped.is_set():
                raise AudioTrackError("the audio track was stopped")
            try:
                self._inbox.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise AudioTrackError(f"audio mastering/encoding failed: {self._failure}") from self._failure

    def _run(self) -> None:
        muxer: Mp4Muxer | None = None
        waiting: list[np.ndarray] = []  # mastered before the muxer was attached
        try:
            while not self._stopped.is_set():
                try:
                    kind, value = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                if kind is _END:
                    return
                if kind == "pcm":
                    waiting += self.master.push(value)
                elif kind == "end":
                    waiting += self.master.finish()
                elif kind == "muxer":
                    muxer = value
                if muxer is not None:
                    for piece in waiting:
                        muxer.add_audio(piece)
                    waiting.clear()
        except BaseException as error:  # noqa: BLE001 - handed to the feeding thread
            self._failure = error
