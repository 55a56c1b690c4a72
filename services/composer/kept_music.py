"""KeptMusic: the music one attempt of a job received, kept on disk until the job ends, so that an attempt after a
failure elsewhere (the video service died mid-stream, a shot ran out of retries) replays it instead of asking the music
service to make it again.

Only whole music is kept: the recording is written beside its final name and becomes the job's kept music when its
stream ended with every sample it announced. The seed it was made with is kept with it, so the next attempt makes its
video with that same seed (a request without a seed draws one per attempt). The job runner discards the music when the
job ends, whatever the outcome; the sweep removes what a killed composer left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tunereel import wire
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2

from .backends import AudioHeader, Ended, Event, Pcm, Progress, Source

__all__ = ["KeptMusic", "Recording"]


@dataclasses.dataclass(frozen=True)
class Recording:
    """Whole kept music: what its header said, and the seed it was made with."""

    seed: int
    sample_rate: int
    channels: int
    total_samples: int
    model_id: str


class KeptMusic:
    """One attempt's view of a job's kept music: what earlier attempts kept (read once, when the attempt starts), and
    where this attempt keeps the music it receives."""

    def __init__(self, work_dir: Path, job_id: str):
        self.meta_path = work_dir / f"music-{job_id}.json"
        self.pcm_path = work_dir / f"music-{job_id}.f32"
        self.earlier = self._read()  # None: no whole music kept

    def _read(self) -> Recording | None:
        try:
            recording = Recording(**json.loads(self.meta_path.read_text()))
            whole = self.pcm_path.stat().st_size == recording.total_samples * recording.channels * 4
        except (OSError, ValueError, TypeError):
            return None
        return recording if whole else None

    def replay(self, name: str = "music") -> Source:
        """The music earlier attempts kept, as an audio source (only when `earlier` is not None)."""
        if self.earlier is None:
            raise ValueError("no whole music kept to replay")
        return _Replay(self.pcm_path, self.earlier, name)

    def record(self, source: Source, seed: int) -> Source:
        """`source`, its events passed on as they come and its music kept once the stream has ended whole."""
        return _Recorder(source, self, seed)

    def discard(self) -> None:
        for path in (self.meta_path, self.pcm_path):
            path.unlink(missing_ok=True)


def _partial(path: Path, token: str) -> Path:
    """Where one recording writes before its music is whole: its own name (a worker that lost its lease may still be
    recording beside the one that took the job over)."""
    return path.with_name(f"{path.name}.{token}.part")


class _Recorder:
    def __init__(self, source: Source, kept: KeptMusic, seed: int):
        self.name = source.name
        self._source = source
        self._kept = kept
        self._seed = seed

    def start(self) -> None:
        self._source.start()

    def cancel(self) -> None:
        self._source.cancel()

    def events(self) -> Iterator[Event]:
        token = uuid.uuid4().hex[:8]
        part, meta = _partial(self._kept.pcm_path, token), _partial(self._kept.meta_path, token)
        header: AudioHeader | None = None
        file = None
        try:
            for event in self._source.events():
                try:  # a full disk costs the keeping, never the composition
                    if isinstance(event, AudioHeader):
                        header, file = event, open(part, "wb")  # noqa: SIM115 - closed below
                    elif isinstance(event, Pcm) and file is not None:
                        file.write(np.ascontiguousarray(event.samples, dtype=np.float32).tobytes())
                    elif isinstance(event, Ended) and file is not None and header is not None:
                        file.close()
                        file = None
                        recording = Recording(self._seed, header.sample_rate, header.channels, header.total_samples,
                                              header.model_id)  # fmt: skip
                        meta.write_text(json.dumps(dataclasses.asdict(recording)))
                        os.replace(part, self._kept.pcm_path)
                        os.replace(meta, self._kept.meta_path)  # last: the music counts as kept from here on
                except OSError:
                    if file is not None:
                        file.close()
                    file = None
                yield event
        finally:
            if file is not None:
                file.close()
            part.unlink(missing_ok=True)  # gone already when the music was kept
            meta.unlink(missing_ok=True)


class _Replay:
    """Kept music as an audio source: the header it had, its samples in wire-sized chunks, then Ended."""

    def __init__(self, path: Path, recording: Recording, name: str):
        self.name = name
        self._path = path
        self._recording = recording
        self._cancelled = threading.Event()

    def start(self) -> None:
        """Nothing to start: the file is read as the events are."""

    def cancel(self) -> None:
        self._cancelled.set()

    def events(self) -> Iterator[Event]:
        r = self._recording
        yield AudioHeader(self.name, r.sample_rate, r.channels, r.total_samples, r.model_id)
        yield Progress(self.name, common_pb2.STAGE_MUSIC, 1.0, message="kept from the previous attempt")
        samples = np.memmap(self._path, dtype=np.float32, mode="r").reshape(-1, r.channels)
        for offset in range(0, r.total_samples, wire.AUDIO_CHUNK_SAMPLES):
            if self._cancelled.is_set():
                raise Cancelled("kept music cancelled")
            yield Pcm(self.name, offset, np.array(samples[offset : offset + wire.AUDIO_CHUNK_SAMPLES]))
        del samples
        yield Ended(self.name)
