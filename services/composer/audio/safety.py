"""The user's own song, as they mastered it: no loudness change, only a look-ahead true-peak limiter where a peak
would clip after AAC encoding (true peak above `ceiling_dbtp` − the AAC headroom). Where nothing is that loud the
samples pass through unchanged, bit for bit.

Same interface as StreamingMaster (push → final pieces, finish → the rest, `total`, `whole`), so AudioTrack runs
either; memory: a block, its look-ahead and the limiter's context, however long the song.
"""

from __future__ import annotations

import numpy as np

from ..muxer import AudioSpec
from .headroom import INITIAL_HEADROOM_DB
from .limiter import Limiter
from .meter import peak_envelope

__all__ = ["SafetyLimiter"]


class SafetyLimiter:
    whole = False  # released block by block as it arrives: nothing waits for the end of the song

    def __init__(self, audio: AudioSpec, total_samples: int, *, ceiling_dbtp: float = 0.0, block_s: float = 1.0,
                 lookahead_s: float = 0.05, context_s: float = 0.5):  # fmt: skip
        self.audio = audio
        self.total = int(total_samples)
        self.ceiling_db = ceiling_dbtp - INITIAL_HEADROOM_DB
        rate = audio.sample_rate
        self.block, self.lookahead, self.context = round(block_s * rate), round(lookahead_s * rate), round(context_s * rate)
        self.received = self.released = 0
        self.limited_blocks = 0  # blocks where the limiter acted (for tests and logs)
        self._pending = np.zeros((0, audio.channels), np.float32)
        self._history = np.zeros((0, audio.channels), np.float32)

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
        ahead = self._pending[: count + self.lookahead]
        x = np.concatenate([self._history, ahead]).astype(np.float64)
        reduction = Limiter(peak_envelope(x), self.audio.sample_rate, self.ceiling_db).gain_db(0.0)
        block = self._pending[:count]
        if isinstance(reduction, float):
            out = block.copy()  # nothing near clipping: the song's own samples
        else:
            h = self._history.shape[0]
            gain = np.power(10.0, reduction[h : h + count] / 20.0)[:, None]
            out = (block * gain).astype(np.float32)
            self.limited_blocks += 1
        self._history = np.concatenate([self._history, block])[-self.context :]
        self._pending = self._pending[count:]
        self.released += count
        return out
