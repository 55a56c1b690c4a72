"""Mastering a song as it streams in, in bounded memory (the composer's audio path).

A clip of up to `whole_clip_s` (30 s: one MusicGen window) is mastered whole, as before: `master.master_for_aac`
(fade-out, -14 LUFS, look-ahead true-peak limiter, verified through the AAC encoder). A longer song is never held whole:

1. Calibrate on its first `calibration_s` (20 s): the input's gated loudness (BS.1770, measured incrementally), the
   pre-gain that brings the *limited* calibration audio to the target (`limiter.search_pre_gain`, which
   `master.master` uses too), and the headroom the AAC encoder needs (`headroom.fit_through_aac`, the routine
   `master_for_aac` calibrates with).
2. Then release the song in `block_s` (1 s) blocks, each as soon as `lookahead_s` of audio after it has arrived:
   - pre-gain = target - (gated loudness of the input up to the end of the look-ahead) + the limiter's loss found
     in step 1 + a correction by the gap between the target and the gated loudness of all output released so far;
     it moves by at most `max_gain_rate_db_s` and is ramped linearly across each block, so there is no step in level;
   - the same look-ahead limiter as `master.master`, run over the block with `context_s` of history before it
     (its release reaches that far) and the look-ahead after it, of which only the block is kept;
   - the fade-out over the last `fade_out_s` of the song (its length is known from the music header).
   Every decision depends only on the audio up to a fixed position, never on how the chunks arrived, so the output is
   deterministic. Memory: the calibration audio, then a block plus its context and look-ahead.

The integrated loudness of the whole output lands within a few tenths of a LU of the target (loudness that changes
over the song is followed slowly, like a broadcast loudness controller, instead of being measured over the whole
song first).
"""

from __future__ import annotations

import math

import numpy as np

from ..muxer import AudioSpec
from .headroom import INITIAL_HEADROOM_DB, fit_through_aac
from .limiter import Limiter, search_pre_gain
from .master import master_for_aac
from .meter import IncrementalLoudness, peak_envelope

__all__ = ["StreamingMaster"]


class StreamingMaster:
    """push(pcm) → mastered pieces that are final; finish() → the rest. The pieces add up to the input exactly."""

    def __init__(
        self,
        audio: AudioSpec,
        total_samples: int,
        *,
        target_lufs: float = -14.0,
        max_true_peak_dbtp: float = -1.0,
        fade_out_s: float = 0.5,
        whole_clip_s: float = 30.0,
        calibration_s: float = 20.0,
        block_s: float = 1.0,
        lookahead_s: float = 0.05,
        context_s: float = 1.0,
        max_gain_rate_db_s: float = 0.25,
    ):
        self.audio = audio
        self.total = int(total_samples)
        self.rate = audio.sample_rate
        self.target = target_lufs
        self.max_tp = max_true_peak_dbtp
        self.fade_out_s = fade_out_s
        self.whole = self.total <= round(whole_clip_s * self.rate)
        self.calibration = round(calibration_s * self.rate)
        self.block = round(block_s * self.rate)
        self.lookahead = round(lookahead_s * self.rate)
        self.context = round(context_s * self.rate)
        self.max_step_db = max_gain_rate_db_s * block_s
        self.fade_len = int(round(min(max(fade_out_s, 0.0) * self.rate, self.total / 4)))
        self.received = 0
        self.released = 0
        self._pending: list[np.ndarray] = []  # raw input not yet released (plus `_history` before it)
        self._pending_len = 0
        self._history = np.zeros((0, audio.channels))  # raw input just before `released`, for the limiter's context
        self._history_gain = np.zeros(0)  # the pre-gain (dB) those samples got
        self._meter_in = IncrementalLoudness(self.rate, audio.channels)
        self._meter_out = IncrementalLoudness(self.rate, audio.channels)
        self._calibrated = False
        self._silent = False
        self._gain_db = 0.0  # pre-gain at the end of the last released block
        self._limiter_loss_db = 0.0
        self.ceiling_db = max_true_peak_dbtp - INITIAL_HEADROOM_DB
        self.gain_trace: list[tuple[int, float]] = []  # (sample, pre-gain dB) per block, for tests and logs

    # ------------------------------------------------------------------------------------------------- interface
    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1, self.audio.channels)
        if self.received + pcm.shape[0] > self.total:
            raise ValueError(f"more audio than announced: {self.received + pcm.shape[0]} > {self.total} samples")
        if pcm.shape[0] == 0:
            return []
        self._pending.append(pcm)
        self._pending_len += pcm.shape[0]
        self.received += pcm.shape[0]
        if self.whole:
            return []
        self._meter_in.push(pcm)
        out: list[np.ndarray] = []
        if not self._calibrated and self.received >= min(self.calibration, self.total):
            self._calibrate()
        while self._calibrated and self.received - self.released >= self.block + self.lookahead:
            out.append(self._release(self.block))
        return out

    def finish(self) -> list[np.ndarray]:
        if self.received != self.total:
            raise ValueError(f"the song ended after {self.received} of {self.total} samples")
        if self.whole:
            pcm = self._take_all()
            return [master_for_aac(pcm, self.audio, target_lufs=self.target, max_true_peak_dbtp=self.max_tp,
                                   fade_out_s=self.fade_out_s)] if pcm.shape[0] else []  # fmt: skip
        if not self._calibrated:
            self._calibrate()
        out = []
        while self.released < self.total:
            out.append(self._release(min(self.block, self.total - self.released)))
        return out

    # -------------------------------------------------------------------------------------------------- helpers
    def _take_all(self) -> np.ndarray:
        pcm = np.concatenate(self._pending) if self._pending else np.zeros((0, self.audio.channels), np.float32)
        self._pending, self._pending_len = [], 0
        return pcm

    def _peek(self, count: int) -> np.ndarray:
        """The next `count` (or fewer, at the end) unreleased raw samples, as float64, without consuming them."""
        parts, have = [], 0
        for part in self._pending:
            if have >= count:
                break
            parts.append(part[: count - have])
            have += parts[-1].shape[0]
        if not parts:
            return np.zeros((0, self.audio.channels))
        return np.concatenate(parts).astype(np.float64)

    def _consume(self, count: int) -> None:
        while count:
            head = self._pending[0]
            if head.shape[0] <= count:
                self._pending.pop(0)
                count -= head.shape[0]
                self._pending_len -= head.shape[0]
            else:
                self._pending[0] = head[count:]
                self._pending_len -= count
                count = 0

    def _calibrate(self) -> None:
        """Pre-gain, limiter loss and AAC headroom from the first `calibration` samples (see the module docstring)."""
        self._calibrated = True
        x = self._peek(self.calibration)
        loudness = self._meter_in.integrated(x.shape[0])
        if loudness == -math.inf:
            self._silent = True  # below the gate: nothing to normalise; such audio only gets the fade
            return
        pre_gains: list[float] = []

        def render(headroom: float, target: float) -> np.ndarray:
            ceiling = self.max_tp - headroom
            pre_gain, _ = search_pre_gain(x, self.rate, Limiter(peak_envelope(x), self.rate, ceiling), loudness, target)
            pre_gains.append(pre_gain)
            return self._limited(x, np.full(x.shape[0], pre_gain), ceiling)

        fit = fit_through_aac(render, self.audio, target_lufs=self.target, max_true_peak_dbtp=self.max_tp,
                              loudness_tolerance_lu=0.3)  # fmt: skip
        headroom, pre_gain = fit.headroom_db, pre_gains[-1]
        self.ceiling_db = self.max_tp - headroom
        self._limiter_loss_db = pre_gain - (self.target - loudness)
        self._gain_db = pre_gain

    def _limited(self, x: np.ndarray, gain_db: np.ndarray, ceiling: float) -> np.ndarray:
        """x with a per-sample pre-gain, through the look-ahead true-peak limiter."""
        y = x * np.power(10.0, gain_db / 20.0)[:, None]
        reduction = Limiter(peak_envelope(y), self.rate, ceiling).gain_db(0.0)
        if isinstance(reduction, float):
            return y
        return y * np.power(10.0, reduction / 20.0)[:, None]

    def _release(self, count: int) -> np.ndarray:
        """Master and hand out the next `count` samples."""
        start = self.released
        ahead = self._peek(count + self.lookahead)  # the block and its look-ahead
        if self._silent:
            gain = np.zeros(ahead.shape[0])
        else:
            # pre-gain at the end of this block: follow the input's loudness so far, minus what the output overshot
            loud_in = self._meter_in.integrated(start + ahead.shape[0])
            wanted = self.target - loud_in + self._limiter_loss_db if loud_in != -math.inf else self._gain_db
            loud_out = self._meter_out.integrated()
            if loud_out != -math.inf and self._meter_out.samples >= 5 * self.rate:
                wanted += min(3.0, max(-3.0, 2.0 * (self.target - loud_out)))
            new_gain = self._gain_db + min(self.max_step_db, max(-self.max_step_db, wanted - self._gain_db))
            ramp = self._gain_db + (new_gain - self._gain_db) * (np.arange(1, count + 1) / count)
            gain = np.concatenate([ramp, np.full(ahead.shape[0] - count, new_gain)])
            self._gain_db = new_gain
        self.gain_trace.append((start, self._gain_db))
        # the limiter sees the history before the block (its release) and the look-ahead after it
        x = np.concatenate([self._history, ahead])
        g = np.concatenate([self._history_gain, gain])
        h = self._history.shape[0]
        y = self._limited(x, g, self.ceiling_db)[h : h + count]
        # fade-out over the song's last fade_len samples
        fade_start = self.total - self.fade_len
        if self.fade_len and start + count > fade_start:
            index = np.arange(max(start, fade_start), start + count)
            ramp = 0.5 * (1.0 + np.cos(np.pi * (index - fade_start) / max(self.fade_len - 1, 1)))
            y[index - start] *= ramp[:, None]
        # keep the context for the next block, consume the block
        block = ahead[:count]
        self._history = np.concatenate([self._history, block])[-self.context :]
        self._history_gain = np.concatenate([self._history_gain, gain[:count]])[-self.context :]
        self._consume(count)
        self.released += count
        out = y.astype(np.float32)
        self._meter_out.push(out)
        return out
