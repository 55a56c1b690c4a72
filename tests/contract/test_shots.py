"""A video cut with its music, through the composer on scripted backends over real gRPC: the music is a song built on a
known beat grid (an uneven tempo, a pickup), so where the cuts must fall is known."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter

import av
import grpc
import numpy as np
import pytest

from tests.analysis_media import grid_song
from tests.fake_backends import FakeMusic, FakeVideo, serve_fake
from tests.songs import write_image, write_song
from tunereel import wire
from tunereel.composer.backends import Backends
from tunereel.composer.compose import Composer
from tunereel.composer.errors import InvalidScenes
from tunereel.composer.song import song_request
from tunereel.composer.store import UploadRecord
from tunereel.request import validate_request
from tunereel.shots import shot_seed
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2, music_pb2, video_pb2

SONG = grid_song()
FPS = 24


class GridMusic(FakeMusic):
    """Streams the grid song (cut to the requested duration) instead of a sine; `seconds_per_chunk` paces it like a
    model generating it; `ended_at` is when it sent its last chunk."""

    seconds_per_chunk = 0.0
    ended_at = 0.0

    def GenerateMusic(self, request, context):
        self.begin()
        total = round(request.duration_seconds * SONG.sample_rate)
        pcm = np.zeros((total, 1), np.float32)
        n = min(total, len(SONG.pcm))
        pcm[:n, 0] = SONG.pcm[:n]
        yield music_pb2.GenerateMusicResponse(header=music_pb2.AudioHeader(
            sample_rate=SONG.sample_rate, channels=1, total_samples=total, model_id="grid-music", seed=request.seed))  # fmt: skip
        for offset in range(0, total, wire.AUDIO_CHUNK_SAMPLES):
            piece = pcm[offset : offset + wire.AUDIO_CHUNK_SAMPLES]
            time.sleep(self.seconds_per_chunk)
            yield music_pb2.GenerateMusicResponse(
                chunk=music_pb2.AudioChunk(offset_samples=offset, num_samples=piece.shape[0], pcm=wire.pcm_to_bytes(piece))
            )
        self.ended_at = time.monotonic()


class ShotVideo(FakeVideo):
    """Frames whose colour says the seed (so each shot's frames can be told apart), slow enough to overlap; records
    each call's prompt, frame count and time span, and how each call ended; its header names the replica.

    `fail_first`: seeds (shots) whose next call fails with `fail_code` right after its header, once each; give two
    replicas the same set and the shot fails on whichever replica its first call reaches."""

    def __init__(self, name: str, delay: float = 0.0):
        super().__init__()
        self.name = name
        self.delay = delay
        self.spans: list[tuple[float, float, str, int]] = []
        self.stopped: list[tuple[float, float]] = []  # calls that ended before their last frame, without failing
        self.outcomes: list[tuple[int, str]] = []  # (seed, "made" | "failed" | "stopped"), one per call, as they end
        self.started: list[int] = []  # the seed of each call, as they start
        self.fail_first: set[int] = set()
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.active = 0  # calls running now

    def GenerateVideo(self, request, context):
        fault = self.begin()
        start = time.monotonic()
        with self._lock:
            self.active += 1
            self.started.append(request.seed)
        outcome, sent = "stopped", 0
        try:
            yield video_pb2.GenerateVideoResponse(header=video_pb2.VideoHeader(
                width=request.width, height=request.height, fps=request.fps, frame_count=request.num_frames,
                pixel_format="rgb24", model_id="fake-video", seed=request.seed, instance_id=self.name))  # fmt: skip
            if fault == "unavailable" or self._fails(request.seed):
                outcome = "failed"
                context.abort(self.fail_code, f"video replica {self.name} is restarting")
            frame = np.full((request.height, request.width, 3), request.seed % 200 + 20, np.uint8)
            for index in range(request.num_frames):
                time.sleep(self.delay)
                for offset, data in wire.split_frame(frame):
                    yield video_pb2.GenerateVideoResponse(frame=video_pb2.FrameChunk(frame_index=index, offset=offset, data=data))
                sent += 1
            outcome = "made"
        finally:  # a cancelled call's generator is closed at its yield
            with self._lock:
                self.active -= 1
                self.outcomes.append((request.seed, outcome))
                if outcome == "stopped":
                    self.stopped.append((start, time.monotonic()))
        self.spans.append((start, time.monotonic(), request.prompt, request.num_frames))

    def _fails(self, seed: int) -> bool:
        try:
            self.fail_first.remove(seed)  # atomic: of two replicas sharing the set, one takes the fault
        except KeyError:
            return False
        return True

    def ended(self, outcome: str) -> list[int]:
        """The seeds of the calls that ended so."""
        return [seed for seed, how in self.outcomes if how == outcome]


@pytest.fixture(scope="module")
def analyser():
    from tunereel.analysis import MusicAnalyser

    return MusicAnalyser()


@pytest.fixture
def make_stack(tmp_path, analyser):
    """A composer on the grid music and video replicas of these names (one round-robin channel over them)."""
    opened = []

    def make(*names: str):
        music, videos = GridMusic(), [ShotVideo(name, 0.004) for name in names]
        servers = [serve_fake(music), *(serve_fake(v) for v in videos)]
        video_target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers[1:])
        backends = Backends(f"127.0.0.1:{servers[0].port}", video_target)
        opened.append((backends, servers))
        return Composer(backends, tmp_path / "work", shot_workers=2, analyser=analyser), music, videos

    yield make
    for backends, servers in opened:
        backends.close()
        for server in servers:
            server.stop(0)


@pytest.fixture
def stack(make_stack):
    return make_stack("replica-a", "replica-b")


def compose(composer, cancelled=None, **fields):
    request = validate_request({"genre": "pop", "duration": 20, "video_prompt": "x", "width": 64, "height": 64,
                                "fps": FPS, "seed": 11, **fields})  # fmt: skip
    events = []
    result = composer.compose(request, on_progress=events.append, cancelled=cancelled or threading.Event())
    return request, result, events


def decoded_frames(path) -> list[int]:
    with av.open(str(path)) as container:
        return [int(f.to_ndarray(format="rgb24")[32, 32, 0]) for f in container.decode(container.streams.video[0])]


def assert_each_shot_where_it_is(path, shots, frame_count):
    """The MP4 has every frame, and each shot's frames (their colour says the seed) where the timeline puts it."""
    colours = decoded_frames(path)
    assert len(colours) == frame_count
    for shot in shots:
        seen = set(colours[shot["start_frame"] : shot["end_frame"]])
        assert max(seen) - min(seen) <= 3 and abs(min(seen) - (shot["seed"] % 200 + 20)) <= 3, shot


def ended(videos, outcome: str) -> Counter:
    """Calls per seed (per shot), over the replicas, that ended so: made, failed, or stopped (cancelled)."""
    return Counter(seed for video in videos for seed in video.ended(outcome))


def test_cuts_on_downbeats_scenes_in_order_chapters_and_both_replicas_at_once(stack):
    composer, _music, videos = stack
    scenes = ["a red room", "a blue sea", "a green field"]
    request, result, events = compose(composer, scenes=scenes, cuts="bar")
    timeline = result.timeline
    shots = timeline["shots"]
    # exact length, audio = video
    assert result.mux.frame_count == request.frame_count
    assert result.mux.audio_samples == round(request.frame_count / FPS * SONG.sample_rate)
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == request.frame_count
    # every cut on a downbeat of the grid, ± 1 frame; the timeline's beats match the grid
    grid = SONG.downbeats[SONG.downbeats < request.duration]
    for shot in shots[1:]:
        assert np.min(np.abs(grid * FPS - shot["start_frame"])) <= 1.0, shot
    inside = SONG.beats[SONG.beats < request.duration - 1]
    found = np.array(timeline["beats"])
    assert np.abs(inside[:, None] - found[None, :]).min(axis=1).max() < 0.05
    # scenes in order, each shot its own seed and colour, frames of each shot where the shot is
    assert [s["scene"] for s in shots] == sorted(s["scene"] for s in shots) and {s["scene"] for s in shots} == {0, 1, 2}
    assert_each_shot_where_it_is(result.path, shots, request.frame_count)
    assert all(s["attempts"] == 1 for s in shots)
    # both replicas made shots of this job, at the same time
    assert {s["replica"] for s in shots} == {"replica-a", "replica-b"}
    a, b = videos[0].spans, videos[1].spans
    assert any(sa < eb and sb < ea for sa, ea, *_ in a for sb, eb, *_ in b)
    # one chapter per scene, titled with its prompt, starting where its first shot starts
    with av.open(str(result.path)) as container:
        chapters = container.chapters()
    assert [c["metadata"]["title"] for c in chapters] == scenes
    firsts = [next(s for s in shots if s["scene"] == k)["start_s"] for k in range(3)]
    assert [c["start"] / 1000 for c in chapters] == pytest.approx(firsts, abs=0.002)
    # progress: the video fraction never decreases and reaches 1
    video = [e.fraction for e in events if e.stage == common_pb2.STAGE_VIDEO]
    assert video == sorted(video) and video[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("count", [2, 4])
def test_scene_counts_give_exact_lengths(stack, count):
    composer, *_ = stack
    request, result, _ = compose(composer, duration=12.3, scenes=[f"scene {i}" for i in range(count)])
    assert result.mux.frame_count == request.frame_count == len(decoded_frames(result.path))
    shots = result.timeline["shots"]
    assert [s["scene"] for s in shots] == sorted(s["scene"] for s in shots) and len({s["scene"] for s in shots}) == count


def test_shots_are_made_while_the_music_is_still_generated(stack):
    """Music that takes 24 s to generate its 30 s: the first shots are planned and made on the replicas before the
    last of it arrives; the plan is the same as on the whole song (cuts on the grid's downbeats, exact length).
    (The analysis of a prefix takes CPU seconds: on a slow 2-core machine, 16 s of music left the first shot only
    1-2 s before the music's end.)"""
    composer, music, videos = stack
    seconds = 30.0
    chunks = seconds * SONG.sample_rate / wire.AUDIO_CHUNK_SAMPLES
    music.seconds_per_chunk = 24.0 / chunks
    request, result, _ = compose(composer, duration=seconds, cuts="bar")
    starts = sorted(start for v in videos for start, *_ in v.spans)
    print(f"first shot started {music.ended_at - starts[0]:.1f} s before the music's end")
    assert starts[0] < music.ended_at - 2.0  # a shot in the making well before the music's end
    made_early = sum(1 for v in videos for _, end, *_ in v.spans if end < music.ended_at)
    assert made_early >= 1
    shots = result.timeline["shots"]
    assert result.mux.frame_count == request.frame_count and shots[-1]["end_frame"] == request.frame_count
    grid = SONG.downbeats[SONG.downbeats < request.duration]
    assert all(np.min(np.abs(grid * FPS - shot["start_frame"])) <= 1.0 for shot in shots[1:])


def test_a_failed_shot_is_made_again_alone(stack):
    composer, _music, videos = stack
    for video in videos:
        video.reset("unavailable", times=1)  # the first call on each replica fails after its header
    request, result, _ = compose(composer, duration=8, cuts="bar")
    shots = result.timeline["shots"]
    assert result.mux.frame_count == request.frame_count
    # Two calls failed, one on each replica: two shots, or one shot twice (planned alone first, it may take the first
    # call on both replicas). Every shot made once, at the attempt after its failures; no other shot made again.
    failed = {video.name: video.ended("failed") for video in videos}
    assert sorted(len(seeds) for seeds in failed.values()) == [1, 1]
    failures = ended(videos, "failed")
    assert ended(videos, "made") == Counter(s["seed"] for s in shots)
    assert all(s["attempts"] == 1 + failures[s["seed"]] for s in shots)
    for shot in shots:  # a shot that failed on one replica only was made on the other
        on = {name for name, seeds in failed.items() if shot["seed"] in seeds}
        assert len(on) != 1 or shot["replica"] not in on, (shot, failed)
    assert set(ended(videos, "stopped")) <= set(failures)  # calls cancelled at their header: retries only


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_a_shot_that_failed_on_a_replica_is_made_again_on_the_other(stack, code):
    composer, _music, videos = stack
    # Shot 0, the first call. Its retry's call may land back on the replica that failed it (when the other worker's
    # call took the other pick first): then the runner cancels it at its header and calls again. (Which case a run
    # gets is timing; tests/unit/test_shot_retry.py scripts the landing.)
    failing = {shot_seed(11, 0)}
    for video in videos:
        video.fail_first, video.fail_code = failing, code  # one set: the shot fails once, wherever it lands first
    request, result, _ = compose(composer, duration=8, cuts="bar")
    shots = result.timeline["shots"]
    assert not failing and shots[0]["seed"] == shot_seed(11, 0)
    (failed_on,) = [video.name for video in videos if video.ended("failed")]
    assert ended(videos, "failed") == Counter([shots[0]["seed"]])
    # its successful attempt, the second, on the other replica; every other shot made once, at its first attempt
    assert shots[0]["attempts"] == 2 and shots[0]["replica"] == ({"replica-a", "replica-b"} - {failed_on}).pop()
    assert ended(videos, "made") == Counter(s["seed"] for s in shots)
    assert all(s["attempts"] == 1 for s in shots[1:])
    # a call cancelled at its header: only a retry of shot 0 that landed on the replica that failed it
    assert all(video.name == failed_on for video in videos if video.ended("stopped"))
    assert set(ended(videos, "stopped")) <= {shots[0]["seed"]}
    # the MP4 is exact; nothing runs on the replicas
    assert result.mux.frame_count == request.frame_count
    assert result.mux.audio_samples == round(request.frame_count / FPS * SONG.sample_rate)
    assert_each_shot_where_it_is(result.path, shots, request.frame_count)
    assert sum(video.active for video in videos) == 0


def test_with_one_replica_a_failed_shot_is_made_again_on_it(make_stack, caplog):
    composer, _music, (video,) = make_stack("replica-a")
    video.fail_first, video.fail_code = {shot_seed(11, 1)}, grpc.StatusCode.RESOURCE_EXHAUSTED
    with caplog.at_level(logging.INFO, logger="tunereel.composer"):
        request, result, _ = compose(composer, duration=8, cuts="bar")
    shots = result.timeline["shots"]
    assert shots[1]["attempts"] == 2 and shots[1]["replica"] == "replica-a"
    assert all(s["attempts"] == 1 and s["replica"] == "replica-a" for i, s in enumerate(shots) if i != 1)
    assert ended([video], "made") == Counter(s["seed"] for s in shots)
    assert video.ended("failed") == [shots[1]["seed"]]
    # the retry looked for another replica (4 × the one replica seen), found none, and made it here, saying so
    assert video.ended("stopped") == [shots[1]["seed"]] * 4
    assert any("making it on the replica the next call reaches" in r.getMessage() for r in caplog.records)
    assert result.mux.frame_count == request.frame_count
    assert_each_shot_where_it_is(result.path, shots, request.frame_count)


def test_cancel_during_a_retry_leaves_no_call_in_flight(stack):
    composer, _music, videos = stack
    seed = shot_seed(11, 0)
    failing = {seed}
    for video in videos:
        video.delay, video.fail_first = 0.05, failing
    cancelled = threading.Event()
    at: list[float] = []

    def cancel_while_the_retry_makes_it():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            failed = [v for v in videos if v.ended("failed")]
            if failed and any(seed in v.started for v in videos if v is not failed[0]):
                break
            time.sleep(0.01)
        time.sleep(0.2)  # a few frames into it
        at.append(time.monotonic())
        cancelled.set()

    threading.Thread(target=cancel_while_the_retry_makes_it, daemon=True).start()
    with pytest.raises(Cancelled):
        compose(composer, cancelled, duration=8, cuts="bar")
    deadline = time.monotonic() + 2
    while sum(v.active for v in videos) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(v.active for v in videos) == 0  # no call left running on any replica
    assert ended(videos, "failed") == Counter([seed]) and seed in ended(videos, "stopped")  # the retry, stopped
    assert not ended(videos, "made")[seed]
    assert all(end < at[0] + 1.0 for v in videos for _start, end in v.stopped)  # within a second of the cancel
    assert not list(composer.work_dir.glob("*.mp4")) and not list(composer.work_dir.glob(".*partial"))


def test_cancel_stops_every_shot(stack):
    composer, _music, videos = stack
    for video in videos:
        video.delay = 0.05
    cancelled = threading.Event()
    at: list[float] = []

    def cancel_once_both_make_shots():
        deadline = time.monotonic() + 60
        while not all(v.active for v in videos) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        at.append(time.monotonic())
        cancelled.set()

    threading.Thread(target=cancel_once_both_make_shots, daemon=True).start()
    with pytest.raises(Cancelled):
        compose(composer, cancelled, cuts="bar")
    deadline = time.monotonic() + 10  # the replicas hear the cancel on their own threads
    while sum(v.active for v in videos) and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped = [call for v in videos for call in v.stopped]
    assert len(stopped) == 2  # both calls in flight at the cancel stopped there, within a second
    assert all(start < at[0] < end < at[0] + 1.0 for start, end in stopped)
    started = [start for v in videos for start, *_ in v.spans] + [start for start, _ in stopped]
    assert all(start < at[0] for start in started)  # and no shot started after it
    assert not list((composer.work_dir).glob("*.mp4")) and not list(composer.work_dir.glob(".*partial"))


def test_cuts_none_is_one_continuous_take(stack):
    composer, _music, videos = stack
    request, result, _ = compose(composer, duration=4, cuts="none")
    assert result.timeline is None and result.mux.frame_count == request.frame_count
    assert sum(v.calls for v in videos) == 1 and len(decoded_frames(result.path)) == request.frame_count


def test_beat_cuts_every_two_beats_through_the_composer(stack):
    """cut_every_beats reaches the planner: cuts on the grid's beats, two beats apart, from the first downbeat."""
    composer, *_ = stack
    request, result, _ = compose(composer, duration=8, cuts="beat", cut_every_beats=2)
    assert request.cut_every_beats == 2 and result.mux.frame_count == request.frame_count
    shots = result.timeline["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == request.frame_count
    cuts = np.array([s["start_frame"] for s in shots[1:]])
    nearest = np.abs(SONG.beats[:, None] * FPS - cuts[None, :]).argmin(axis=0)  # the grid beat of each cut
    assert np.abs(SONG.beats[nearest] * FPS - cuts).max() <= 1.0  # every cut on a beat of the grid, ± 1 frame
    assert SONG.positions[nearest[0]] == 1  # the first cut: the first downbeat (the pickup is the first shot)
    settled = nearest[SONG.beats[nearest] < request.duration - 1]  # the analysis may still move the last second's
    assert len(settled) >= 4 and set(np.diff(settled)) == {2}


def test_a_bar_range_past_the_song_fails_naming_the_field(stack):
    composer, *_ = stack
    with pytest.raises(InvalidScenes) as error:
        compose(composer, duration=6, scenes=["a", {"prompt": "b", "bars": [30, 31]}])
    assert error.value.field == "scenes.1.bars" and "scenes.1.bars" in str(error.value)


def _record(path, kind: str, **fields) -> UploadRecord:
    return UploadRecord(**{"id": str(uuid.uuid4()), "owner": "k", "kind": kind, "sha256": uuid.uuid4().hex * 2,
                           "size_bytes": path.stat().st_size, "format": path.suffix[1:], "filename": path.name,
                           "duration_seconds": 0.0, "sample_rate": 0, "channels": 0, "width": 0, "height": 0,
                           "path": str(path), "created_at": 0.0, "expires_at": 0.0, **fields})  # fmt: skip


def test_each_upload_is_looked_up_once_per_composition(stack, analyser, tmp_path):
    """A cut video of the user's song with the request's image and a scene's own: the music, every shot's image and
    the provenance all come from one lookup per upload id (the request's image is also the second scene's)."""
    composer, music, _videos = stack
    song = _record(write_song(tmp_path / "grid.wav", SONG.pcm.reshape(-1, 1), rate=SONG.sample_rate), "audio",
                   duration_seconds=len(SONG.pcm) / SONG.sample_rate, sample_rate=SONG.sample_rate, channels=1)  # fmt: skip
    place = _record(write_image(tmp_path / "place.png", 64, 64), "image", width=64, height=64)
    face = _record(write_image(tmp_path / "face.png", 96, 64), "image", width=96, height=64)
    records = {record.id: record for record in (song, place, face)}
    lookups: Counter[str] = Counter()

    def uploads(upload_id: str) -> UploadRecord:
        lookups[upload_id] += 1
        return records[upload_id]

    counting = Composer(composer.backends, tmp_path / "work", shot_workers=2, analyser=analyser, uploads=uploads)
    request = validate_request({"genre": "pop", "duration": 8, "video_prompt": "x", "width": 64, "height": 64,
                                "fps": FPS, "seed": 11, "cuts": "bar", "song": song.id, "image": place.id,
                                "scenes": [{"prompt": "a face", "image": face.id},
                                           {"prompt": "a place", "image": place.id}]})  # fmt: skip
    request = song_request(request, song)
    result = counting.compose(request, on_progress=lambda p: None, cancelled=threading.Event())
    assert lookups == {song.id: 1, place.id: 1, face.id: 1}
    assert result.mux.frame_count == request.frame_count and len(result.timeline["shots"]) >= 2
    assert music.calls == 0  # the song is the music
    assert [(u.field, u.sha256) for u in result.provenance.uploads] == [
        ("song", song.sha256), ("image", place.sha256), ("scenes.0.image", face.sha256),
        ("scenes.1.image", place.sha256)]  # fmt: skip


def test_the_timeline_is_served_over_grpc_and_http_and_stored_with_the_job(tmp_path):
    from fastapi.testclient import TestClient

    from tunereel.channels import open_channel
    from tunereel.composer import server as composer_server
    from tunereel.gateway.app import GatewaySettings, create_app
    from tunereel.v1 import jobs_pb2, jobs_pb2_grpc

    music, video = GridMusic(), ShotVideo("replica-a")
    servers = [serve_fake(music), serve_fake(video)]
    composer = composer_server.serve(host="127.0.0.1", port=0, music_target=f"127.0.0.1:{servers[0].port}",
                                     video_target=f"127.0.0.1:{servers[1].port}", data_dir=tmp_path / "data")  # fmt: skip
    channel = open_channel(f"127.0.0.1:{composer.port}")
    try:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        body = {"genre": "pop", "duration": 10, "video_prompt": "x", "width": 64, "height": 64, "seed": 3,
                "scenes": ["one", "two"], "cuts": "bar"}  # fmt: skip
        job = stub.CreateJob(jobs_pb2.CreateJobRequest(request=wire.request_to_proto(validate_request(body))), timeout=10)
        deadline = time.monotonic() + 120
        while job.state not in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED):
            assert time.monotonic() < deadline
            time.sleep(0.1)
            job = stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), timeout=10)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        # gRPC: the Job carries it
        assert job.HasField("timeline") and job.timeline.frame_count == 240 and job.timeline.fps == FPS
        assert [s.prompt for s in job.timeline.shots][0] == "one" and job.timeline.shots[-1].prompt == "two"
        assert job.timeline.shots[-1].end_frame == 240 and all(s.replica == "replica-a" for s in job.timeline.shots)
        assert all(s.attempts == 1 for s in job.timeline.shots)
        assert list(job.request.scenes[1].prompt) and job.request.cuts == common_pb2.CUTS_BAR
        # HTTP: GET /v1/jobs/{id}/timeline, the same data
        app = create_app(GatewaySettings(composer_target=f"127.0.0.1:{composer.port}"))
        with TestClient(app) as client:
            reply = client.get(f"/v1/jobs/{job.id}/timeline")
            assert reply.status_code == 200, reply.text
            data = reply.json()
            assert data == wire.timeline_to_dict(job.timeline)
            assert [s["scene"] for s in data["shots"]][0] == 0 and data["beats"] and data["downbeats"]
            assert client.get(f"/v1/jobs/{job.id}").json()["request"]["scenes"][1]["prompt"] == "two"
            bad = client.post("/v1/jobs", json={**body, "scenes": [{"prompt": ""}]})
            assert bad.status_code in (400, 422) and "scenes.0.prompt" in bad.text
            bad = client.post("/v1/jobs", json={**body, "scenes": ["x"] * 33})
            assert bad.status_code in (400, 422) and "scenes" in bad.text
            bad = client.post("/v1/jobs", json={**body, "cuts": "often"})
            assert bad.status_code in (400, 422) and "cuts" in bad.text
        # scenes that do not fit the music made: INVALID_ARGUMENT naming the field, over Compose
        from tunereel.v1 import composer_pb2, composer_pb2_grpc

        compose_stub = composer_pb2_grpc.ComposerServiceStub(channel)
        bad = validate_request({**body, "duration": 4, "scenes": ["a", {"prompt": "b", "bars": [20, 21]}]})
        with pytest.raises(grpc.RpcError) as error:
            list(compose_stub.Compose(composer_pb2.ComposeRequest(request=wire.request_to_proto(bad)), timeout=60))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("scenes.1.bars:"), error.value.details()
        # stored with the result: a fresh read from the store has it
        record = composer.store.get(job.id)
        assert record.timeline == {**wire.timeline_to_dict(job.timeline), "duration_s": record.timeline["duration_s"]}
    finally:
        channel.close()
        composer.stop(0)
        for server in servers:
            server.stop(0)
