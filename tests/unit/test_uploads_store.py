"""Uploads at rest: kept once per key, swept after the retention unless an unfinished job names them, and the
user's song passed through untouched unless a peak would clip after AAC."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.songs import song_pcm, write_image, write_song
from tunereel.composer.audio import SafetyLimiter, true_peak_dbtp
from tunereel.composer.jobs import JobRunner, JobSettings
from tunereel.composer.muxer import AudioSpec, aac_round_trip
from tunereel.composer.store import JobStore, UploadInUse
from tunereel.composer.uploads import UploadLibrary, UploadRejected, UploadSettings
from tunereel.request import validate_request


@pytest.fixture
def library(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    yield UploadLibrary(store, UploadSettings(tmp_path / "data", retention_seconds=60.0))
    store.close()


def pieces(path, size=100_000):
    data = path.read_bytes()
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_unused_uploads_are_swept_after_the_retention_and_used_ones_kept(library, tmp_path):
    song = write_song(tmp_path / "a.flac", song_pcm(1.0))
    image = write_image(tmp_path / "b.png", 32, 32)
    unused, _ = library.add("me", "audio", "a.flac", pieces(song))
    used, _ = library.add("me", "image", "b.png", pieces(image))
    job, _ = library.store.create(validate_request({"genre": "pop", "duration": 1, "video_prompt": "x", "image": used.id}),
                                  owner="me")  # fmt: skip
    assert library.sweep(now=time.time()) == 0  # within the retention: both stay
    later = time.time() + 3600
    assert library.sweep(now=later) == 1  # past it: the unused one goes, file and row
    assert library.store.get_upload(unused.id) is None and not os.path.exists(unused.path)
    assert library.store.get_upload(used.id) is not None and os.path.exists(used.path)  # a queued job names it
    with pytest.raises(UploadInUse):
        library.delete(used.id, "me")
    library.store.request_cancel(job.id)  # the job ends: nothing holds the image any more
    assert library.sweep(now=later) == 1 and not os.path.exists(used.path)
    assert sorted(p.name for p in library.settings.uploads_dir.iterdir()) == []


def test_a_queued_jobs_scene_images_are_never_swept(library, tmp_path):
    kept, _ = library.add("me", "image", "scene.png", pieces(write_image(tmp_path / "scene.png", 32, 32)))
    other, _ = library.add("me", "image", "other.png", pieces(write_image(tmp_path / "other.png", 48, 32)))
    scenes = [{"prompt": "a plain scene"}, {"prompt": "a face", "image": kept.id}]
    job, _ = library.store.create(validate_request({"genre": "pop", "duration": 1, "video_prompt": "x", "scenes": scenes}), owner="me")
    assert library.store.uploads_in_use() == {kept.id: job.id}
    later = time.time() + 3600
    assert library.sweep(now=later) == 1  # the image no job names goes; the scene's stays while the job is queued
    assert library.store.get_upload(other.id) is None and library.store.get_upload(kept.id) is not None
    assert os.path.exists(kept.path)
    library.store.request_cancel(job.id)
    assert library.sweep(now=later) == 1 and not os.path.exists(kept.path)


def test_a_stale_temp_file_is_swept_and_a_fresh_one_kept(library):
    stale = library.settings.uploads_dir / ".incoming-dead"
    stale.write_bytes(b"an upload whose process died")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = library.settings.uploads_dir / ".incoming-live"
    fresh.write_bytes(b"arriving right now")
    library.sweep()
    assert not stale.exists() and fresh.exists()


def test_a_stream_that_breaks_off_leaves_nothing(library, tmp_path):
    def broken():
        yield b"RIFF...."
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        library.add("me", "audio", "x.wav", broken())
    assert list(library.settings.uploads_dir.iterdir()) == []
    with pytest.raises(UploadRejected, match="too big"):
        library.add("me", "image", "x.png", [b"\0" * 1_000_000] * 21)
    assert list(library.settings.uploads_dir.iterdir()) == []


def test_the_job_runner_sweeps_uploads_on_its_schedule(library, tmp_path):
    runner = JobRunner(library.store, composer=None, settings=JobSettings(data_dir=tmp_path / "jobs", sweep_every_seconds=0.05),
                       extra_sweeps=(lambda: library.sweep(now=time.time() + 3600),))  # fmt: skip
    record, _ = library.add("me", "audio", "a.flac", pieces(write_song(tmp_path / "a.flac", song_pcm(0.5))))
    runner._spawn(runner._sweep_loop, "sweeper")
    deadline = time.time() + 5
    while library.store.get_upload(record.id) is not None:
        assert time.time() < deadline, "the runner never swept the upload"
        time.sleep(0.05)
    runner.stop()
    runner.join()


def test_a_song_passes_through_untouched_unless_it_would_clip():
    spec = AudioSpec(44_100, 2)
    quiet = song_pcm(3.0)
    limiter = SafetyLimiter(spec, quiet.shape[0])
    out = np.concatenate([*limiter.push(quiet[:50_000]), *limiter.push(quiet[50_000:]), *limiter.finish()])
    assert np.array_equal(out, quiet) and limiter.limited_blocks == 0  # bit for bit

    hot = quiet.copy()
    hot[int(1.3 * 44_100) : int(1.6 * 44_100)] *= 2.6  # a passage with peaks over 0 dBFS: it would clip
    limiter = SafetyLimiter(spec, hot.shape[0])
    out = np.concatenate([*limiter.push(hot), *limiter.finish()])
    assert limiter.limited_blocks > 0 and out.shape == hot.shape
    assert true_peak_dbtp(hot, spec.sample_rate) > 0.5
    assert true_peak_dbtp(aac_round_trip(out, spec), spec.sample_rate) <= 0.0  # no clipping after AAC
    assert np.array_equal(out[: 44_100], hot[: 44_100])  # away from the passage the song is untouched
    assert np.array_equal(out[2 * 44_100 :], hot[2 * 44_100 :])
