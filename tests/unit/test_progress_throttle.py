"""ProgressThrottle: few messages for many steps, and never a lost segment edge or final report."""

from __future__ import annotations

from tunereel.model_host import ProgressThrottle
from tunereel.segments import SegmentProgress


def reports(segments: int, steps: int):
    """Every step report of `segments` segments of `steps` steps each, as a pipeline makes them."""
    for segment in range(segments):
        for step in range(1, steps + 1):
            yield SegmentProgress(step, steps, segment, segments, (segment * steps + step) / (segments * steps))


def run(segments: int, steps: int, seconds_per_step: float) -> list[SegmentProgress]:
    now = [0.0]
    sent: list[SegmentProgress] = []
    throttle = ProgressThrottle(sent.append, clock=lambda: now[0])
    for report in reports(segments, steps):
        throttle(report)
        now[0] += seconds_per_step
    return sent


def test_fast_steps_are_thinned_to_the_time_limit():
    # 1500 steps at 1 ms each (a tiny model): 1.5 s of work → about 15 messages at 100 ms, plus the edges
    sent = run(1, 1500, 0.001)
    assert 10 <= len(sent) <= 20, len(sent)
    assert sent[0].step == 1 and sent[-1].step == 1500 and sent[-1].fraction == 1.0


def test_slow_steps_are_thinned_to_one_percent():
    # 1500 steps at 50 ms each (musicgen-small on a CPU): at most one message per 1 % of the work
    sent = run(1, 1500, 0.05)
    assert 95 <= len(sent) <= 102, len(sent)
    fractions = [r.fraction for r in sent]
    assert fractions == sorted(fractions)
    assert all(b - a >= 0.01 - 1e-9 for a, b in zip(fractions[1:-2], fractions[2:-1]))


def test_every_segment_start_and_end_goes_out():
    sent = run(4, 300, 0.0001)
    for segment in range(4):
        steps = [r.step for r in sent if r.segment == segment]
        assert steps[0] == 1 and steps[-1] == 300, (segment, steps)


def test_slow_steps_each_go_out_when_they_move_more_than_one_percent():
    sent = run(2, 8, 2.0)  # video-like: 8 denoising steps of seconds each
    assert len(sent) == 16
