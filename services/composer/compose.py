"""The composer's core: music and video in flight together, both muxed as they arrive. No gRPC in here.

`Composer.compose` reads top to bottom:

1. inputs: the seed and one deadline for every backend call;
2. start the sources (backends.py: one audio source, one video source), each read on its own thread into one queue
   of typed events;
3. wait for both headers;
4. open the audio track (mastering and AAC encoding on its own thread, audio/track.py) and the muxer;
5. feed frames and PCM as they come;
6. finish: the audio track drains, the muxer writes the MP4;
7. return it with its provenance (the job runner moves it into place).

A cancel flag, a failing source or a failing step stops both streams at once, removes the partial file, and raises a
`ComposeError` (errors.py) that says what happened; anything else that goes wrong is a bug and propagates as it is.

Memory stays flat however long the output: the backends send segment by segment, raw frames and PCM go to the
encoders as they arrive, and whichever stream is ahead waits *compressed* in the muxer's interleaver. Audio ahead
costs little (AAC at 128 kbit/s: 5 MB for 5 minutes). The video stream is not read further than `VIDEO_LEAD_S`
seconds ahead of the audio received (gRPC flow control then pauses the video service), so compressed video waits
for at most that lead plus the audio the master holds (its 20 s calibration, or a whole clip of up to 30 s): a bound
that does not grow with the duration. The audio stream is never held back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tunereel
from tunereel import wire
from tunereel.analysis import AnalysisConfig, MusicAnalyser, Timeline
from tunereel.request import GenerationRequest, scene_image_field
from tunereel.shots import Scene, Shot, ShotPlanner, timeline_dict
from tunereel.streaming import Cancelled
from tunereel.v1 import common_pb2

from .audio import AudioTrack, AudioTrackCancelled, AudioTrackError, SafetyLimiter, StreamingMaster
from .backends import (
    AudioHeader,
    Backends,
    Ended,
    Event,
    ExpectedVideo,
    Failed,
    Frame,
    Pcm,
    Progress,
    Source,
    VideoHeader,
    music_source,
    video_request,
    video_source,
)
from .errors import ComposeError, InvalidAudio, MuxFailed, OutOfSpace, StorageFailed, is_disk_full
from .hearing import HearingVideoSource, listening_sources
from .kept_music import KeptMusic
from .live_plan import LivePlan
from .muxer import AudioSpec, Chapter, Mp4Muxer, MuxError, MuxResult, VideoSpec
from .shot_runner import ShotResult, ShotRunner
from .song import SongSource, frame_image, melody_pcm, repaint_source_pcm
from .store import UploadRecord

log = logging.getLogger("tunereel.composer")

ProgressSink = Callable[[Progress], None]
Uploads = dict[str, UploadRecord]  # a composition's uploads by request field ("song", "scenes.0.image"), looked up once

# How far (in seconds of video) the video stream may be read ahead of the audio received so far.
VIDEO_LEAD_S = 10.0
# Events waiting between the reader threads and the muxing thread (each at most one frame or one PCM chunk).
INBOX_EVENTS = 64
SOURCE = "composer"  # the `source` of the progress events the composer makes itself
# The analysis re-runs its networks with 15 s of context around each update, so small updates cost several times the
# audio they add: measured on 60 s here, updates every 4 s (the module's default) cost 30 CPU s while the music
# arrives and 2.3 s after it; every 20 s, 7.3 s while and 3.8 s after; one offline pass at the end, 7.7 s after.
# Shots are planned at each update (ShotPlanner), so updates every 10 s: on 60 s of music fed a second at a time,
# 13.2 CPU s while it arrives and 2.5 s after its end (every 20 s: 7.2 and 4.8), and the music is settled 15 s behind
# what has arrived (every 20 s: up to 25 s behind), so the first shots start sooner.
ANALYSIS = AnalysisConfig(min_update_s=10.0)


@dataclass(frozen=True)
class Composition:
    path: Path
    provenance: common_pb2.Provenance
    mux: MuxResult
    sample_rate: int
    timeline: dict | None = None  # tempo, beats, downbeats, sections, shots (tunereel.shots.timeline_dict); cut videos


class Composer:
    def __init__(self, backends: Backends, work_dir: Path, *, backend_timeout: float = 3600.0, shot_workers: int = 2,
                 analyser: MusicAnalyser | None = None, max_shot_frames: int = 257,
                 uploads: Callable[[str], UploadRecord] | None = None):  # fmt: skip
        self.backends = backends
        self.work_dir = work_dir
        self.backend_timeout = backend_timeout
        self.shot_workers = shot_workers  # shots in flight at once: about the number of video replicas
        self.max_shot_frames = max_shot_frames  # one LTX pass
        self.uploads = uploads  # upload id → its record (the caller checked the owner when the request came in)
        self._analyser = analyser
        self._analyser_lock = threading.Lock()
        work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def analyser(self) -> MusicAnalyser:
        """The beat/downbeat networks, loaded at the first cut video (one analyser serves every composition)."""
        with self._analyser_lock:
            if self._analyser is None:
                self._analyser = MusicAnalyser(ANALYSIS)
            return self._analyser

    def sources(self, request: GenerationRequest, uploads: Uploads, seed: int, timeout: float,
                kept_music: KeptMusic | None = None) -> tuple[Source, Source]:  # fmt: skip
        """The audio source (the user's song, or MusicService — guided by a melody clip, or singing lyrics, if given)
        and the video source (starting from the user's image, if one is given) of one composition."""
        music = self.music(request, uploads, seed, timeout, kept_music)
        image = self.scene_images(request, uploads)[0]  # one continuous take: one scene
        expected = ExpectedVideo(request.width, request.height, request.fps, request.frame_count)
        # A video preset that hears the music (LTX-2) gets the music of its span with its request (hearing.py).
        heard = listening_sources(self.backends, music, video_request(request.video_prompt, expected, seed,
                                  request.video_model or "", image=image), expected=expected, timeout=timeout)  # fmt: skip
        if heard is not None:
            return heard
        video = video_source(self.backends, prompt=request.video_prompt, expected=expected, seed=seed,
                             model=request.video_model or "", timeout=timeout, image=image)  # fmt: skip
        return music, video

    def music(self, request: GenerationRequest, uploads: Uploads, seed: int, timeout: float,
              kept_music: KeptMusic | None = None) -> Source:  # fmt: skip
        """The audio source: the user's song as it is; or MusicService's music — from nothing (guided by a melody
        clip, or singing lyrics, if given), or the song's window with one range re-made (repaint_start/end). With
        `kept_music` (a job's), music an earlier attempt received whole is replayed, and new music is kept."""
        repaint = request.repaint_start is not None and request.repaint_end is not None
        if "song" in uploads and not repaint:
            return SongSource(uploads["song"], start_s=request.start, seconds=request.exact_duration)
        if kept_music is not None and kept_music.earlier is not None and kept_music.earlier.seed == seed:
            # before the melody or the repaint's song window is decoded: a replay needs neither
            log.info("music kept from an earlier attempt (%s, seed %d): not made again", kept_music.earlier.model_id, seed)
            return kept_music.replay()
        melody = melody_pcm(uploads["melody"]) if "melody" in uploads else b""
        song = dict(lyrics=request.lyrics or "", vocal_language=request.vocal_language or "", key=request.key or "",
                    time_signature=request.time_signature or "", bpm=request.tempo_bpm or 0)  # fmt: skip
        if repaint:
            # The range in the music as it will be: its end at most the music's length (whole frames; song_request
            # checked that the start lies before it).
            end = min(request.repaint_end, request.exact_duration)
            song |= dict(source_pcm=repaint_source_pcm(uploads["song"], start_s=request.start,
                                                       seconds=request.exact_duration),
                         repaint_start_seconds=request.repaint_start, repaint_end_seconds=end)  # fmt: skip
        made = music_source(self.backends, prompt=request.music_prompt, duration_seconds=request.exact_duration,
                            seed=seed, model=request.music_model or "", timeout=timeout, melody_pcm=melody,
                            song=song)  # fmt: skip
        return kept_music.record(made, seed) if kept_music is not None else made

    def uploads_of(self, request: GenerationRequest) -> Uploads:
        """The request's uploads, each id looked up once (one image may be several scenes'); `compose` does this once
        and passes the dict to every step that needs it."""
        if request.uploads and self.uploads is None:
            raise ComposeError("this composer has no upload store; requests with song, melody or image need one")
        records = {upload_id: self.uploads(upload_id) for upload_id in dict.fromkeys(request.uploads.values())}
        return {field: records[upload_id] for field, upload_id in request.uploads.items()}

    @staticmethod
    def scene_images(request: GenerationRequest, uploads: Uploads) -> list[bytes]:
        """Per scene, the PNG its shots start from (fitted to the output size): its own image, else the request's,
        else b"" (no image). Each distinct upload is fitted once."""
        fitted: dict[str, bytes] = {}

        def fit(record: UploadRecord) -> bytes:
            if record.id not in fitted:
                fitted[record.id] = frame_image(record, request.width, request.height)
            return fitted[record.id]

        fallback = uploads.get("image")
        images = []
        for index in range(len(request.scene_list)):
            record = uploads.get(scene_image_field(index), fallback)
            images.append(fit(record) if record is not None else b"")
        return images

    @staticmethod
    def master_for(request: GenerationRequest, spec: AudioSpec, total_samples: int) -> StreamingMaster | SafetyLimiter:
        """Generated music (or a song the user asked to normalise) is mastered to -14 LUFS; a song is kept as it was
        mastered, with only a safety limiter on peaks that would clip after AAC."""
        if request.song is not None and not request.normalize:
            return SafetyLimiter(spec, total_samples)
        return StreamingMaster(spec, total_samples)

    def compose(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressSink,
        cancelled: threading.Event,
        timeout: float | None = None,
        kept_music: KeptMusic | None = None,
    ) -> Composition:
        # 1. Inputs: a seed for both models (the request's, or the one of the music an earlier attempt of this job kept,
        #    or a new one) and one deadline for every backend call.
        kept = kept_music.earlier if kept_music is not None else None
        seed = request.seed if request.seed is not None else kept.seed if kept is not None else secrets.randbelow(2**32)
        deadline = min(timeout or self.backend_timeout, self.backend_timeout)
        path = self.work_dir / f"compose-{uuid.uuid4().hex}.mp4"
        uploads = self.uploads_of(request)
        if request.cuts != "none":  # a video cut into shots with the music: see compose_shots
            return self.compose_shots(request, uploads, seed, deadline, path, on_progress, cancelled, kept_music)

        # 2. Start the sources: music and video generate at the same time, each read on its own thread. The video is
        #    read no further than VIDEO_LEAD_S ahead of the audio received.
        audio, video = self.sources(request, uploads, seed, deadline, kept_music)
        streams = EventStreams([audio, video], gated=video.name, fps=request.fps)
        streams.start()
        try:
            with composer_errors(), Output(path) as output:  # the output ends first: the track, the muxer, the file
                return self._mux(request, uploads, seed, streams, output, on_progress, cancelled)
        except BaseException:
            streams.cancel()  # the backends stop generating
            raise
        finally:
            streams.close()

    def _mux(
        self,
        request: GenerationRequest,
        uploads: Uploads,
        seed: int,
        streams: EventStreams,
        output: Output,
        on_progress: ProgressSink,
        cancelled: threading.Event,
    ) -> Composition:
        events = streams.events(cancelled)

        # 3. Wait for both headers; audio that arrives before the video header waits in `early`.
        audio, video, early = wait_for_headers(events, on_progress)

        # 4. Open the audio track (it masters and encodes on its own thread) and the muxer, and join them.
        provenance = make_provenance(request, uploads, seed, audio.model_id, video.model_id)
        spec = AudioSpec(sample_rate=audio.sample_rate, channels=audio.channels)
        track = AudioTrack(self.master_for(request, spec, audio.total_samples))
        muxer = output.open(track, VideoSpec(width=video.width, height=video.height, fps=video.fps), spec, provenance)
        feed = Feed(track, muxer, streams.gate, on_progress, audio, video)

        # 5. Feed frames and PCM as they come.
        for event in early:
            feed(event)
        for event in events:
            feed(event)

        # 6. Finish: every sample mastered and encoded, then the MP4's index.
        track.join(cancelled)
        result = muxer.close()
        on_progress(Progress(SOURCE, common_pb2.STAGE_DONE, 1.0, message="done"))

        # 7. The file and where it came from.
        return Composition(path=output.path, provenance=provenance, mux=result, sample_rate=audio.sample_rate)


    # ------------------------------------------------------------------------------------------- cut into shots
    def compose_shots(
        self,
        request: GenerationRequest,
        uploads: Uploads,
        seed: int,
        deadline: float,
        path: Path,
        on_progress: ProgressSink,
        cancelled: threading.Event,
        kept_music: KeptMusic | None = None,
    ) -> Composition:
        """A video cut with its music, in numbered steps like `compose`:

        2. start the audio source alone (the music leads) and the shot workers (ShotRunner, `shot_workers` at once);
        3. read the music: PCM to the audio track (mastered and waiting there) and to the analysis as it arrives; each
           shot is planned (tunereel.shots.ShotPlanner) and sent to a video replica as soon as the music up to just
           after its end has settled, the rest once the song has all arrived;
        4. open the muxer when the first shot is made (its header names the video model) with one chapter per
           scene, and copy the segments in shot order, each as soon as it and the ones before it are made;
        5. finish: the audio track drains, the muxer writes the MP4;
        6. return it with its provenance and its timeline.
        """
        audio_source, whole_video = self.sources(request, uploads, seed, deadline, kept_music)
        # A video preset that hears the music (LTX-2): the audio source keeps the music, each shot is sent its slice.
        hearing = whole_video if isinstance(whole_video, HearingVideoSource) else None
        streams = EventStreams([audio_source], gated="", fps=request.fps)
        video = VideoSpec(width=request.width, height=request.height, fps=request.fps)
        runner = ShotRunner(self._shot_source(request, uploads, deadline, hearing), video, self.work_dir,
                            workers=self.shot_workers, total_frames=request.frame_count)  # fmt: skip
        with Output(path) as output:
            try:
                with composer_errors():
                    # 2. The music leads; the shot workers wait for shots.
                    streams.start()
                    runner.start()
                    # 3. The music, mastered and analysed as it arrives; the shots, as soon as each is certain.
                    audio, track, analysis = self._receive_music(request, seed, streams, runner, on_progress, cancelled)
                    output.track = track  # the output stops it from now on
                    shots = runner.shots
                    # 4. The segments in shot order.
                    first = runner.next_result(0, cancelled, on_progress)
                    provenance = make_provenance(request, uploads, seed, audio.model_id, first.model_id)
                    muxer = output.open(track, video, AudioSpec(sample_rate=audio.sample_rate, channels=audio.channels),
                                        provenance, segments=True, chapters=scene_chapters(shots, request))  # fmt: skip
                    made = self._mux_shots(runner, muxer, first, track, on_progress, cancelled)
                    # 5. Finish.
                    track.join(cancelled)
                    result = muxer.close()
            except BaseException:
                streams.cancel()
                runner.cancel()
                raise
            finally:
                streams.close()
                runner.close()
            on_progress(Progress(SOURCE, common_pb2.STAGE_DONE, 1.0, message="done"))
        # 6. The file, where it came from, and what it shows when.
        timeline = timeline_dict(analysis, shots, fps=request.fps, total_frames=request.frame_count,
                                 replicas={i: r.replica for i, r in made.items()},
                                 attempts={i: r.attempts for i, r in made.items()})  # fmt: skip
        return Composition(path=path, provenance=provenance, mux=result, sample_rate=audio.sample_rate, timeline=timeline)

    def _receive_music(self, request: GenerationRequest, seed: int, streams: EventStreams, runner: ShotRunner,
                       on_progress: ProgressSink, cancelled: threading.Event) -> tuple[AudioHeader, AudioTrack, Timeline]:  # fmt: skip
        """Step 3: the music to the audio track and to the live plan (analysis and planning on its own thread, which
        adds each shot to the runner as soon as it is certain)."""
        header: AudioHeader | None = None
        track: AudioTrack | None = None
        plan: LivePlan | None = None
        try:
            for event in streams.events(cancelled):
                runner.check()  # a shot that failed for good stops the composition now
                runner.drain_progress(on_progress)
                if plan is not None:
                    plan.check()
                if isinstance(event, Progress):
                    on_progress(event)
                elif isinstance(event, AudioHeader):  # the source checks it comes first, once
                    header = event
                    spec = AudioSpec(sample_rate=event.sample_rate, channels=event.channels)
                    track = AudioTrack(self.master_for(request, spec, event.total_samples))
                    plan = LivePlan(self.analyser.stream(event.sample_rate), self._planner(request, seed), runner)
                    plan.start()
                elif isinstance(event, Pcm) and track is not None and plan is not None:
                    track.check()
                    track.push(event.samples)
                    plan.feed(event.samples)
                elif isinstance(event, Ended) and track is not None:
                    track.end()
            if header is None or track is None or plan is None:
                raise ComposeError("the audio stream ended without its header")  # the source checks this first
            on_progress(Progress(SOURCE, common_pb2.STAGE_MUSIC, 1.0, message="analysing the music"))
            timeline = plan.finish(cancelled)
        except BaseException:
            if plan is not None:
                plan.stop()
            if track is not None:
                track.abort()
            raise
        log.info("%d shots of %d scene(s), cuts %s%s", len(runner.shots), len(request.scene_list), request.cuts,
                 f" every {request.cut_every_beats} beat(s)" if request.cuts == "beat" else "")  # fmt: skip
        return header, track, timeline

    def _planner(self, request: GenerationRequest, seed: int) -> ShotPlanner:
        scenes = [Scene(s.prompt, s.section, s.bars) for s in request.scene_list]
        # a request stored before cut_every_beats existed has none: 1, every beat, as it was made then
        return ShotPlanner(scenes, cuts=request.cuts, fps=request.fps, total_frames=request.frame_count, seed=seed,
                           max_frames=self.max_shot_frames, cut_every_beats=request.cut_every_beats or 1)  # fmt: skip

    def _shot_source(self, request: GenerationRequest, uploads: Uploads, deadline: float,
                     hearing: HearingVideoSource | None) -> Callable[[Shot], Source]:  # fmt: skip
        """How one shot is made: a video request of its frames, prompt and seed; starting from its scene's image, or
        the request's (so a character or a place stays recognisable across cuts); with the music of its span for a
        preset that hears."""
        images = self.scene_images(request, uploads)

        def make(shot: Shot) -> Source:
            image = images[shot.scene]
            expected = ExpectedVideo(request.width, request.height, request.fps, shot.frames)
            if hearing is not None:
                shot_request = video_request(shot.prompt, expected, shot.seed, request.video_model or "", image=image)
                return HearingVideoSource(self.backends, hearing.tap, shot_request, expected=expected, timeout=deadline,
                                          info=hearing.info, name=f"shot-{shot.index}", start_frame=shot.start_frame)  # fmt: skip
            return video_source(self.backends, prompt=shot.prompt, expected=expected, seed=shot.seed,
                                model=request.video_model or "", timeout=deadline, name=f"shot-{shot.index}",
                                image=image)  # fmt: skip

        return make

    @staticmethod
    def _mux_shots(runner: ShotRunner, muxer: Mp4Muxer, first: ShotResult, track: AudioTrack, on_progress: ProgressSink,
                   cancelled: threading.Event) -> dict[int, ShotResult]:  # fmt: skip
        """Each shot's segment into the output, in order; the results (which replica made it, at which attempt)."""
        made: dict[int, ShotResult] = {}
        result = first
        for index in range(len(runner.shots)):
            if index:
                result = runner.next_result(index, cancelled, on_progress)
            track.check()
            try:
                muxer.add_segment(result.path)
            finally:
                result.path.unlink(missing_ok=True)
            made[index] = result
            on_progress(Progress(SOURCE, common_pb2.STAGE_MUX, (index + 1) / len(runner.shots),
                                 message=f"shot {index + 1} of {len(runner.shots)} joined"))  # fmt: skip
        return made


def scene_chapters(shots: list[Shot], request: GenerationRequest) -> list[Chapter]:
    """One chapter per scene shown, from its first shot's start to its last shot's end, titled with its prompt."""
    scenes = request.scene_list
    spans: dict[int, list[float]] = {}
    for shot in shots:
        span = spans.setdefault(shot.scene, [shot.start_s, shot.end_s])
        span[1] = shot.end_s
    return [Chapter(start, end, scenes[scene].prompt[:200]) for scene, (start, end) in sorted(spans.items())]


@dataclass
class Output(contextlib.AbstractContextManager["Output"]):
    """Step 4's audio track and muxer, ended the same way on both paths: the track stops and the muxer is aborted
    (no-ops after a successful close; no partial file is left), and if the composition failed its file goes too."""

    path: Path
    track: AudioTrack | None = None  # handed over as soon as there is one
    muxer: Mp4Muxer | None = None

    def open(self, track: AudioTrack, video: VideoSpec, audio: AudioSpec, provenance: common_pb2.Provenance, *,
             segments: bool = False, chapters: Sequence[Chapter] = ()) -> Mp4Muxer:  # fmt: skip
        """The muxer, the provenance in its metadata, with `track` joined to it."""
        self.track = track
        self.muxer = Mp4Muxer(self.path, video, audio, metadata={"comment": provenance_json(provenance)},
                              segments=segments, chapters=chapters)  # fmt: skip
        track.attach(self.muxer)
        return self.muxer

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if self.track is not None:
            self.track.abort()
        if self.muxer is not None:
            self.muxer.abort()
        if error is not None:
            self.path.unlink(missing_ok=True)


def wait_for_headers(events: Iterator[Event], on_progress: ProgressSink) -> tuple[AudioHeader, VideoHeader, list[Event]]:
    audio: AudioHeader | None = None
    video: VideoHeader | None = None
    early: list[Event] = []
    for event in events:
        if isinstance(event, Progress):
            on_progress(event)
        elif isinstance(event, AudioHeader):
            audio = event
        elif isinstance(event, VideoHeader):
            video = event
        else:
            early.append(event)
        if audio is not None and video is not None:
            return audio, video, early
    raise ComposeError("the backends' streams ended before both headers arrived")  # the sources check this first


class Feed:
    """Step 5: where each event goes. PCM to the audio track, frames to the muxer, progress to the caller."""

    def __init__(self, track: AudioTrack, muxer: Mp4Muxer, gate: LeadGate, on_progress: ProgressSink,
                 audio: AudioHeader, video: VideoHeader):  # fmt: skip
        self.track = track
        self.muxer = muxer
        self.gate = gate
        self.on_progress = on_progress
        self.audio = audio
        self.video = video
        self.frames = 0

    def __call__(self, event: Event) -> None:
        self.track.check()  # a failed audio thread stops the composition now, not after the last frame
        if isinstance(event, Progress):
            self.on_progress(event)
        elif isinstance(event, Pcm):
            self.track.push(event.samples)
            self.gate.advance(self.track.received / self.audio.sample_rate)
        elif isinstance(event, Frame):
            self.muxer.add_frame(event.rgb)
            self.frames += 1
            if self.frames % 8 == 0 or self.frames == self.video.frame_count:
                self._mux_progress("encoding")
        elif isinstance(event, Ended) and event.source == self.audio.source:
            self.gate.open()
            if self.track.whole:
                self._mux_progress("mastering the audio")
            self.track.end()

    def _mux_progress(self, message: str) -> None:
        fraction = min(max(self.frames / self.video.frame_count, 0.0), 1.0)
        self.on_progress(Progress(SOURCE, common_pb2.STAGE_MUX, fraction, message=message))


@contextlib.contextmanager
def composer_errors() -> Iterator[None]:
    """The failures of the composer's own steps (audio, muxing, disk) as ComposeErrors that say what happened."""
    try:
        yield
    except AudioTrackCancelled:
        raise Cancelled("compose cancelled by the caller") from None
    except AudioTrackError as error:
        raise failure_of(error.__cause__ or error) from error
    except (MuxError, OSError) as error:
        raise failure_of(error) from error


def failure_of(error: BaseException) -> BaseException:
    if isinstance(error, ComposeError):
        return error
    if is_disk_full(error):
        return OutOfSpace("the composer's disk is full", detail=str(error))
    if isinstance(error, MuxError):
        return MuxFailed("writing the MP4 failed", detail=str(error))
    if isinstance(error, OSError):
        return StorageFailed("the composer could not write its file", detail=str(error))
    if isinstance(error, ValueError):  # the master's checks (NaN/inf, shapes)
        return InvalidAudio(f"the audio cannot be mastered: {error}")
    return error  # a bug: propagates as it is


class LeadGate:
    """Holds the video reader while the frame it would pass on lies more than VIDEO_LEAD_S ahead of the audio
    received; opens for good once the music has all arrived (or the composition stops)."""

    def __init__(self, fps: int, stop: threading.Event):
        self.fps = fps
        self.stop = stop
        self._audio_s = 0.0
        self._open = False
        self._changed = threading.Condition()

    def advance(self, audio_seconds: float) -> None:
        with self._changed:
            self._audio_s = audio_seconds
            self._changed.notify_all()

    def open(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def wait(self, frame_index: int) -> None:
        with self._changed:
            while not (self._open or self.stop.is_set() or frame_index / self.fps <= self._audio_s + VIDEO_LEAD_S):
                self._changed.wait(0.1)


class EventStreams:
    """Reads several sources at once, each on its own thread, into one bounded queue of events; `events()` yields
    them until every source has ended and raises the first source's failure. Frames of the `gated` source wait at
    the lead gate."""

    def __init__(self, sources: Sequence[Source], *, gated: str, fps: int, capacity: int = INBOX_EVENTS):
        self.sources = list(sources)
        self.gated = gated
        self._stop = threading.Event()
        self.gate = LeadGate(fps, self._stop)
        self._inbox: queue.Queue[Event] = queue.Queue(maxsize=capacity)
        self._threads = [
            threading.Thread(target=self._read, args=(source,), name=f"read-{source.name}", daemon=True)
            for source in self.sources
        ]

    def start(self) -> None:
        for source in self.sources:
            source.start()
        for thread in self._threads:
            thread.start()

    def events(self, cancelled: threading.Event) -> Iterator[Event]:
        open_sources = {source.name for source in self.sources}
        while open_sources:
            if cancelled.is_set():
                raise Cancelled("compose cancelled by the caller")
            try:
                event = self._inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, Ended):
                open_sources.discard(event.source)
            yield event

    def cancel(self) -> None:
        for source in self.sources:
            source.cancel()

    def close(self) -> None:
        """Stop the readers (those blocked at the gate or on a full queue give up) and wait a moment for them."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(1.0)

    def _read(self, source: Source) -> None:
        try:
            for event in source.events():
                if source.name == self.gated and isinstance(event, Frame):
                    self.gate.wait(event.index)
                if not self._put(event):
                    return
        except ComposeError as error:
            self._put(Failed(source.name, error))
        except Exception as error:  # noqa: BLE001 - a bug in a source: the composition fails with it, at once
            log.exception("%s source failed", source.name)
            self._put(Failed(source.name, ComposeError(f"{source.name} source: {type(error).__name__}: {error}")))

    def _put(self, event: Event) -> bool:
        while not self._stop.is_set():
            try:
                self._inbox.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def make_provenance(request: GenerationRequest, uploads: Uploads, seed: int, music_model_id: str,
                    video_model_id: str) -> common_pb2.Provenance:  # fmt: skip
    """What made the video: the request, the seed, the models, and the uploads by content hash."""
    effective = request.model_copy(update={"seed": seed})
    return common_pb2.Provenance(
        request=wire.request_to_proto(effective),
        seed=seed,
        music_model_id=music_model_id,
        video_model_id=video_model_id,
        music_prompt=request.music_prompt,
        version=tunereel.__version__,
        uploads=[common_pb2.UploadUse(field=field, sha256=record.sha256) for field, record in uploads.items()],
    )


def provenance_json(provenance: common_pb2.Provenance) -> str:
    """The provenance as the JSON written into the MP4 (the same shape the HTTP API returns)."""
    return json.dumps(wire.provenance_to_dict(provenance), sort_keys=True)
