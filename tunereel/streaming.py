"""Run blocking work in a thread and hand its events to a generator, so a gRPC handler can stream while it works."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["Cancelled", "events_from_thread"]

T = TypeVar("T")
_DONE = object()


class Cancelled(Exception):
    """The caller cancelled; the work stopped early."""


def events_from_thread(
    work: Callable[[Callable[[T], None]], None], *, name: str = "work", cancelled: threading.Event | None = None
) -> Iterator[T]:
    """Yield what `work(emit)` emits, in order, while it runs in its own thread.

    An exception raised by `work` is re-raised here after the events emitted before it. If the consumer stops
    early (the generator is closed, e.g. the RPC was cancelled), the next `emit` raises Cancelled in the worker,
    so the work unwinds instead of blocking on a full queue forever; so does a set `cancelled` flag (the RPC's
    cancel callback), which gRPC raises well before it closes the generator.
    """
    events: queue.Queue = queue.Queue(maxsize=64)  # bounded: a slow consumer slows the producer, memory stays flat
    abandoned = threading.Event()
    failure: list[BaseException] = []

    def emit(item: Any) -> None:
        while True:
            if abandoned.is_set() or (cancelled is not None and cancelled.is_set()):
                raise Cancelled("the consumer stopped reading")
            try:
                events.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run() -> None:
        try:
            work(emit)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            failure.append(error)
        finally:
            abandoned_or_done = abandoned.is_set()
            while not abandoned_or_done:
                try:
                    events.put(_DONE, timeout=0.1)
                    abandoned_or_done = True
                except queue.Full:
                    abandoned_or_done = abandoned.is_set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if item is _DONE:
                break
            yield item
    finally:
        abandoned.set()
    thread.join()
    if failure:
        raise failure[0]
