"""KeptMusic: whole music kept exactly and replayed as it came; anything less is not kept and leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from tunereel import wire
from tunereel.composer.backends import AudioHeader, Ended, Pcm, Progress
from tunereel.composer.kept_music import KeptMusic

RATE, CHANNELS = 48_000, 2


class Scripted:
    """An audio source that sends `total` samples of noise in uneven pieces, or fails after `fail_after` pieces."""

    def __init__(self, total: int, *, fail_after: int | None = None):
        self.name = "music"
        self.total = total
        self.fail_after = fail_after
        rng = np.random.default_rng(3)
        self.pcm = rng.uniform(-0.5, 0.5, (total, CHANNELS)).astype(np.float32)

    def start(self) -> None: ...

    def cancel(self) -> None: ...

    def events(self):
        yield AudioHeader(self.name, RATE, CHANNELS, self.total, "model-x")
        offset, piece = 0, 0
        while offset < self.total:
            if piece == self.fail_after:
                raise ConnectionError("the music replica went away")
            size = 1000 + 7919 * piece % 20_000
            yield Pcm(self.name, offset, self.pcm[offset : offset + size])
            yield Progress(self.name, 2, min(1.0, (offset + size) / self.total))
            offset, piece = offset + size, piece + 1
        yield Ended(self.name)


def _pcm(events) -> np.ndarray:
    return np.concatenate([event.samples for event in events if isinstance(event, Pcm)])


def test_whole_music_is_kept_exactly_and_replayed_with_its_header_and_seed(tmp_path):
    kept = KeptMusic(tmp_path, "job-1")
    source = Scripted(RATE * 3 + 17)
    passed = list(kept.record(source, seed=1234).events())
    assert np.array_equal(_pcm(passed), source.pcm) and isinstance(passed[-1], Ended)  # passed on as it came

    kept = KeptMusic(tmp_path, "job-1")  # the next attempt's
    recording = kept.earlier
    assert (recording.seed, recording.sample_rate, recording.channels, recording.total_samples, recording.model_id) == (
        1234, RATE, CHANNELS, source.total, "model-x")  # fmt: skip
    replayed = list(kept.replay().events())
    assert replayed[0] == AudioHeader("music", RATE, CHANNELS, source.total, "model-x")
    assert isinstance(replayed[-1], Ended)
    pieces = [event for event in replayed if isinstance(event, Pcm)]
    assert [p.offset for p in pieces] == list(range(0, source.total, wire.AUDIO_CHUNK_SAMPLES))
    assert np.array_equal(_pcm(replayed), source.pcm)  # bit for bit
    assert sorted(path.name for path in tmp_path.iterdir()) == ["music-job-1.f32", "music-job-1.json"]

    kept.discard()
    assert KeptMusic(tmp_path, "job-1").earlier is None and not list(tmp_path.iterdir())


def test_music_cut_short_is_not_kept(tmp_path):
    kept = KeptMusic(tmp_path, "job-2")
    with pytest.raises(ConnectionError):
        list(kept.record(Scripted(RATE * 3, fail_after=2), seed=1).events())
    assert KeptMusic(tmp_path, "job-2").earlier is None and not list(tmp_path.iterdir())

    events = kept.record(Scripted(RATE * 3), seed=1).events()  # a composition that stopped reading (cancel, failure)
    next(events), next(events)
    events.close()
    assert KeptMusic(tmp_path, "job-2").earlier is None and not list(tmp_path.iterdir())


def test_a_truncated_recording_is_not_replayed(tmp_path):
    kept = KeptMusic(tmp_path, "job-3")
    list(kept.record(Scripted(RATE), seed=5).events())
    assert KeptMusic(tmp_path, "job-3").earlier is not None
    with open(kept.pcm_path, "r+b") as file:  # a disk that lost the tail of the file
        file.truncate(kept.pcm_path.stat().st_size - 8)
    assert KeptMusic(tmp_path, "job-3").earlier is None


def test_a_full_disk_costs_the_keeping_not_the_music(tmp_path, monkeypatch):
    import errno

    import tunereel.composer.kept_music as kept_music_module

    class FullDisk:
        def __init__(self, path, mode):
            self.path, self.closed = path, False
            open(path, mode).close()  # the part file exists, as on a real disk that filled up

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True

    monkeypatch.setattr(kept_music_module, "open", FullDisk, raising=False)
    source = Scripted(RATE * 2)
    passed = list(KeptMusic(tmp_path, "job-4").record(source, seed=1).events())
    assert np.array_equal(_pcm(passed), source.pcm) and isinstance(passed[-1], Ended)  # the composition got it all
    assert KeptMusic(tmp_path, "job-4").earlier is None and not list(tmp_path.iterdir())
