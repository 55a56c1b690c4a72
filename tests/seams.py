"""Discontinuity figures for the joins of long outputs: music windows and video segments.

Audio (mono float PCM), each figure a value per 10 ms block:
  step   largest sample-to-sample step in the block (a click)
  flux   spectral flux: summed positive change of the log-magnitude spectrum (n_fft 512, hop 256) into the block's
         frames (a click, a gap, a splice of unrelated sound)
  gap    |level change| in dB between the 10 ms before and the 10 ms after the block's start (a drop-out)
  level  |level change| in dB between the 200 ms before and the 200 ms after the block's start (a jump in level)
`audio_join_report` compares each figure over every join (the cross-fade plus 20 ms either side) with its values
away from the joins (more than 0.5 s from any join and from the ends): a join passes when it stays within that range.

Video: `frame_changes` is the mean absolute change per pixel between consecutive frames; `video_seam_report`
compares the changes across each seam (into, through and out of the blend) with those inside the segments.
"""

from __future__ import annotations

import numpy as np

BLOCK_S = 0.010


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    n = x.shape[0] // size
    return x[: n * size].reshape(n, size)


def _level_db(x: np.ndarray, size: int) -> np.ndarray:
    return 10 * np.log10(np.maximum(_blocks(x * x, size).mean(axis=1), 1e-20))


def audio_figures(pcm: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """Every figure per 10 ms block of `pcm` (1-D float)."""
    x = np.asarray(pcm, dtype=np.float64).ravel()
    size = int(round(BLOCK_S * rate))
    count = x.shape[0] // size
    step = np.zeros(count)
    diffs = np.abs(np.diff(x, prepend=x[:1]))
    step[:] = _blocks(diffs, size).max(axis=1)[:count]

    n_fft, hop = 512, 256
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-6)
    flux_frames = np.concatenate([[0.0], np.maximum(np.diff(mag, axis=0), 0.0).sum(axis=1)])
    flux = np.zeros(count)
    for i, value in enumerate(flux_frames):  # a frame counts for every block it spans
        first, last = (i * hop) // size, min(count - 1, (i * hop + n_fft - 1) // size)
        flux[first : last + 1] = np.maximum(flux[first : last + 1], value)

    short = _level_db(x, size)[:count]
    gap = np.zeros(count)
    gap[1:] = np.abs(np.diff(short))
    long_blocks = int(round(0.2 / BLOCK_S))
    level = np.zeros(count)
    csum = np.concatenate([[0.0], np.cumsum(_blocks(x * x, size).mean(axis=1))])
    for b in range(long_blocks, count - long_blocks):
        before = (csum[b] - csum[b - long_blocks]) / long_blocks
        after = (csum[b + long_blocks] - csum[b]) / long_blocks
        level[b] = abs(10 * np.log10(max(after, 1e-20) / max(before, 1e-20)))
    return {"step": step, "flux": flux, "gap": gap, "level": level}


def audio_join_report(pcm: np.ndarray, rate: int, joins: list[int], fade: int) -> dict[str, dict[str, float]]:
    """Per figure: the largest value over the joins, and the range (min, max) and 99th percentile elsewhere."""
    figures = audio_figures(pcm, rate)
    size = int(round(BLOCK_S * rate))
    count = len(figures["step"])
    at_join = np.zeros(count, bool)
    near = np.zeros(count, bool)
    margin = int(round(0.5 / BLOCK_S))
    for join in joins:
        first, last = (join - int(0.02 * rate)) // size, (join + fade + int(0.02 * rate)) // size
        at_join[max(first, 0) : last + 1] = True
        near[max(first - margin, 0) : last + 1 + margin] = True
    near[:margin] = near[-margin:] = True  # the ends (the fade-out, the first blocks) are no reference
    report = {}
    for name, values in figures.items():
        rest = values[~near]
        report[name] = {
            "join_max": float(values[at_join].max()) if at_join.any() else 0.0,
            "rest_min": float(rest.min()),
            "rest_p99": float(np.percentile(rest, 99)),
            "rest_max": float(rest.max()),
        }
    return report


def frame_changes(frames) -> np.ndarray:
    """Mean absolute change per pixel value from each frame to the next (len(frames) - 1 values)."""
    changes = []
    previous = None
    for frame in frames:
        current = np.asarray(frame, dtype=np.float32)
        if previous is not None:
            changes.append(float(np.abs(current - previous).mean()))
        previous = current
    return np.array(changes)


def video_seam_report(frames, seams: list[int], blend: int) -> dict[str, float]:
    """The frame changes across the seams (from the frame before each blend to the first frame after it) against
    those inside the segments (more than 2 frames away from any seam)."""
    changes = frame_changes(frames)
    across = np.zeros(len(changes), bool)
    near = np.zeros(len(changes), bool)
    for seam in seams:
        # change i is frame i → i+1: the seam's changes run from (seam-1 → seam) to (seam+blend-1 → seam+blend)
        across[max(seam - 1, 0) : seam + blend] = True
        near[max(seam - 3, 0) : seam + blend + 2] = True
    inside = changes[~near]
    return {
        "seam_min": float(changes[across].min()),
        "seam_max": float(changes[across].max()),
        "inside_min": float(inside.min()),
        "inside_max": float(inside.max()),
    }
