"""The user's own song, as they mastered it: no loudness change, only a look-ahead true-peak limiter where a peak
would clip after AAC encoding. Where nothing is that loud the samples pass through unchanged, bit for bit.

Per block: a block whose true peak is below CAN_CLIP_DBTP passes (AAC's overshoot stays under ~3.5 dB, headroom.py);
a louder one is round-tripped through the muxer's AAC encoder (with a little of the output before it as the
encoder's context) and, while its decoded true peak exceeds `ceiling_dbtp`, limited with a headroom grown by the
overshoot (as headroom.fit_through_aac does for generated music). The headroom found is kept for later blocks.

Same interface as StreamingMaster (push → final pieces, finish → the rest, `total`, `whole`), so AudioTrack runs
either; memory: a block, its look-ahead and the limiter's context, however long the song.
"""

from __future__ import annotations

import numpy as np

from ..muxer import AudioSpec, aac_round_trip
from .headroom import INITIAL_HEADROOM_DB, OVERSHOOT_MARGIN_DB
from .limiter import Limiter
from .meter import peak_envelope, true_peak_dbtp

CAN_CLIP_DBTP = -4.5  # below this before AAC, a block cannot clip after it
ATTEMPTS = 4

__all__ = ["SafetyLimiter"]


class SafetyLimiter:
    whole = False  # released block by block as it arrives: nothing waits for the end of the song

    def __init__(self, audio: AudioSpec, total_samples: int, *, ceiling_dbtp: float = 0.0, block_s: float = 1.0,
                 lookahead_s: float = 0.05, context_s: float = 0.5):  # fmt: skip
        self.audio = audio
        self.total = int(total_samples)
        self.max_tp = ceiling_dbtp
        self.headroom_db = INITIAL_HEADROOM_DB
        rate = audio.sample_rate
        self.block, self.lookahead, self.context = round(block_s * rate), round(lookahead_s * rate), round(context_s * rate)
        self.received = self.released = 0
        self.limited_blocks = 0  # blocks where the limiter acted (for tests and logs)
        self._pending = np.zeros((0, audio.channels), np.float32)
        self._history = np.zeros((0, audio.channels), np.float32)
        self._history_out = np.zeros((0, audio.channels), np.float32)  # output before the block: the encoder's context

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1, self.audio.channels)
        if self.received + pcm.shape[0] > self.total:
            raise ValueError(f"more audio than announced: {self.received + pcm.shape[0]} > {self.total} samples")
        self._pending = np.concatenate([self._pending, pcm])
        self.received += pcm.shape[0]
        out = []
        while self._pending.shape[0] >= self.block + self.lookahead:
            out.append(self._release(self.block))
        return out

    def finish(self) -> list[np.ndarray]:
        if self.received != self.total:
            raise ValueError(f"the song ended after {self.received} of {self.total} samples")
        out = []
        while self._pending.shape[0]:
            out.append(self._release(min(self.block, self._pending.shape[0])))
        return out

    def _release(self, count: int) -> np.ndarray:
        rate = self.audio.sample_rate
        block = self._pending[:count]
        x = np.concatenate([self._history, self._pending[: count + self.lookahead]]).astype(np.float64)
        envelope = peak_envelope(x)
        out = block
        for _ in range(ATTEMPTS):
            if true_peak_dbtp(out, rate) < CAN_CLIP_DBTP:
                break
            if out is not block:
                self.headroom_db += self._overshoot(out) + OVERSHOOT_MARGIN_DB
            elif self._overshoot(out) <= 0.0:
                break  # loud, but AAC keeps it under the ceiling: the song's own samples
            reduction = Limiter(envelope, rate, self.max_tp - self.headroom_db).gain_db(0.0)
            if isinstance(reduction, float):
                break
            h = self._history.shape[0]
            out = (block * np.power(10.0, reduction[h : h + count] / 20.0)[:, None]).astype(np.float32)
            if self._overshoot(out) <= 0.0:
                break
        if out is not block:
            self.limited_blocks += 1
        else:
            out = block.copy()
        self._history = np.concatenate([self._history, block])[-self.context :]
        self._history_out = np.concatenate([self._history_out, out])[-self.context :]
        self._pending = self._pending[count:]
        self.released += count
        return out

    def _overshoot(self, out: np.ndarray) -> float:
        """dB by which `out`, decoded from AAC after the output before it, exceeds the ceiling (≤ 0: it fits)."""
        context = self._history_out.shape[0]
        decoded = aac_round_trip(np.concatenate([self._history_out, out]), self.audio)[context:]
        return true_peak_dbtp(decoded, self.audio.sample_rate) - self.max_tp
