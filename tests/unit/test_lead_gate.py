"""The composer reads video at most VIDEO_LEAD_S ahead of the audio received, and never blocks the audio."""

from __future__ import annotations

import threading
import time

from tunereel.composer.compose import VIDEO_LEAD_S, LeadGate


def _passes(gate: LeadGate, frame: int, timeout: float) -> bool:
    """True when gate.wait(frame) returns within `timeout` seconds (the thread is left to finish later)."""
    done = threading.Event()
    threading.Thread(target=lambda: (gate.wait(frame), done.set()), daemon=True).start()
    return done.wait(timeout)


def _waits(gate: LeadGate, frame: int) -> bool:
    """Still blocked after 0.3 s."""
    return not _passes(gate, frame, 0.3)


def _goes_on(gate: LeadGate, frame: int) -> bool:
    """Returns, within 10 s (a loaded machine may take a while to run the thread at all)."""
    return _passes(gate, frame, 10.0)


def test_video_waits_for_the_audio_and_goes_on_when_it_arrives():
    stop = threading.Event()
    gate = LeadGate(fps=24, stop=stop)
    lead_frames = int(VIDEO_LEAD_S * 24)
    assert _goes_on(gate, lead_frames)  # up to the lead: no wait
    assert _waits(gate, lead_frames + 1)
    gate.advance(1.0)  # one second of audio arrived: one second more of video may pass
    assert _goes_on(gate, lead_frames + 24)
    assert _waits(gate, lead_frames + 25)


def test_gate_opens_when_the_music_is_complete_or_the_composition_stops():
    stop = threading.Event()
    gate = LeadGate(fps=24, stop=stop)
    blocked = threading.Event()
    released = threading.Event()

    def reader():
        blocked.set()
        gate.wait(10_000)
        released.set()

    threading.Thread(target=reader, daemon=True).start()
    blocked.wait(1)
    time.sleep(0.1)
    assert not released.is_set()
    gate.open()
    assert released.wait(10)
    stopped = LeadGate(fps=24, stop=stop)
    stop.set()
    assert _goes_on(stopped, 10_000)
