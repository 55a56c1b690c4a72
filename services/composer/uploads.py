"""Uploads: the users' own songs, melody clips and images, owned by the composer like results.

A file arrives in pieces (UploadService.CreateUpload, which the gateway's POST /v1/uploads streams into), goes to a
temporary file on disk while it is hashed and counted (never held whole in memory; too many bytes stop it at once),
is decoded whole to check it (media_in), and only then is kept: renamed into `uploads/` and recorded in the job
store. The same bytes from the same key are kept once. Whatever fails leaves no file and no record.

An upload is swept after the retention time unless a queued or running job names it; creating a job that names an
upload keeps it at least for another retention time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from tunereel import rpc_errors, wire
from tunereel.analysis import MusicAnalyser, Timeline
from tunereel.auth import ApiKeys, metadata_value
from tunereel.presets import MUSIC_PRESETS
from tunereel.request import LIMITS, GenerationRequest, InvalidRequest, is_upload_id
from tunereel.v1 import common_pb2, uploads_pb2, uploads_pb2_grpc

from .errors import ComposeError
from .media_in import BadMedia, probe_audio, probe_image
from .song import song_mono, song_request
from .store import JobStore, UploadInUse, UploadRecord

log = logging.getLogger("tunereel.composer.uploads")

SERVICE_NAME = uploads_pb2.DESCRIPTOR.services_by_name["UploadService"].full_name
KINDS = {uploads_pb2.UPLOAD_KIND_AUDIO: "audio", uploads_pb2.UPLOAD_KIND_IMAGE: "image"}
KIND_VALUES = {name: value for value, name in KINDS.items()}
MAX_PIECE_BYTES = 1 << 20  # one `data` message (the gRPC limit is 8 MiB)


@dataclass(frozen=True)
class UploadSettings:
    data_dir: Path
    max_audio_bytes: int = 50 * 1000 * 1000
    max_image_bytes: int = 20 * 1000 * 1000
    max_image_side: int = 4096
    max_audio_seconds: float = LIMITS.max_duration_seconds
    retention_seconds: float = 24 * 3600.0

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def max_bytes(self, kind: str) -> int:
        return self.max_audio_bytes if kind == "audio" else self.max_image_bytes


class UploadRejected(ValueError):
    """Bad media or a broken limit: INVALID_ARGUMENT (400), or RESOURCE_EXHAUSTED (413) when `too_big`."""

    def __init__(self, message: str, *, too_big: bool = False):
        super().__init__(message)
        self.too_big = too_big


class UploadNotFound(LookupError):
    pass


class UploadGone(ComposeError):
    """A job's upload disappeared before the job ran (deleted, or swept while no job held it)."""


class UploadLibrary:
    """The uploads of every key: files under `uploads/`, records in the job store."""

    def __init__(self, store: JobStore, settings: UploadSettings):
        self.store = store
        self.settings = settings
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)

    def add(self, owner: str, kind: str, filename: str, pieces: Iterable[bytes]) -> tuple[UploadRecord, bool]:
        """Store one file from its pieces; returns (upload, created). UploadRejected leaves nothing behind."""
        if kind not in KIND_VALUES:
            raise UploadRejected(f"kind: must be audio or image (got {kind!r})")
        limit = self.settings.max_bytes(kind)
        temp = self.settings.uploads_dir / f".incoming-{uuid.uuid4().hex}"
        try:
            digest, size = self._receive(temp, pieces, limit, kind)
            values = dict(kind=kind, sha256=digest, size_bytes=size, filename=filename[:255], **self._check(temp, kind))
            final = self.settings.uploads_dir / f"{digest}-{uuid.uuid4().hex[:12]}"
            os.replace(temp, final)
            try:
                record, created = self.store.add_upload(owner, {**values, "path": str(final)},
                                                        expires_at=time.time() + self.settings.retention_seconds)  # fmt: skip
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            if not created:
                final.unlink(missing_ok=True)  # the same bytes are stored already
            return record, created
        finally:
            temp.unlink(missing_ok=True)

    def _receive(self, temp: Path, pieces: Iterable[bytes], limit: int, kind: str) -> tuple[str, int]:
        hasher = hashlib.sha256()
        size = 0
        with temp.open("wb") as file:
            for piece in pieces:
                size += len(piece)
                if size > limit:
                    raise UploadRejected(f"too big: {kind} uploads are at most {limit} bytes", too_big=True)
                hasher.update(piece)
                file.write(piece)
        if size == 0:
            raise UploadRejected("the file is empty")
        return hasher.hexdigest(), size

    def _check(self, path: Path, kind: str) -> dict:
        try:
            if kind == "audio":
                audio = probe_audio(path, max_duration_s=self.settings.max_audio_seconds)
                return dict(format=audio.format, duration_seconds=audio.duration_seconds,
                            sample_rate=audio.sample_rate, channels=audio.channels)  # fmt: skip
            image = probe_image(path, max_side=self.settings.max_image_side)
            return dict(format=image.format, width=image.width, height=image.height)
        except BadMedia as error:
            raise UploadRejected(str(error)) from None

    def get(self, upload_id: str, owner: str) -> UploadRecord:
        record = self.store.get_upload(upload_id, owner) if is_upload_id(upload_id) else None
        if record is None or not Path(record.path).is_file():
            raise UploadNotFound(f"no upload {upload_id!r}")
        return record

    def record(self, upload_id: str) -> UploadRecord:
        """An upload a validated request names (its owner was checked when the request came in), for the composer."""
        record = self.store.get_upload(upload_id)
        if record is None or not Path(record.path).is_file():
            raise UploadGone(f"the upload {upload_id} is no longer stored (deleted or swept); upload it again")
        return record

    def delete(self, upload_id: str, owner: str) -> UploadRecord:
        record = self.store.delete_upload(upload_id, owner) if is_upload_id(upload_id) else None
        if record is None:
            raise UploadNotFound(f"no upload {upload_id!r}")
        Path(record.path).unlink(missing_ok=True)
        return record

    def resolve(self, request: GenerationRequest, owner: str) -> dict[str, UploadRecord]:
        """The uploads a request names, each the caller's own and of the right kind (InvalidRequest naming the field;
        UploadNotFound for an unknown id or another key's)."""
        found = {}
        for field, upload_id in request.uploads.items():
            try:
                record = self.get(upload_id, owner)
            except UploadNotFound:
                raise UploadNotFound(f"{field}: no upload {upload_id!r}") from None
            wanted = "image" if field.endswith("image") else "audio"
            if record.kind != wanted:
                raise InvalidRequest(field, f"upload {upload_id} is {record.kind}, not {wanted}")
            found[field] = record
        return found

    def keep_for_job(self, records: Iterable[UploadRecord]) -> None:
        self.store.keep_uploads([record.id for record in records], time.time() + self.settings.retention_seconds)

    def prepare(self, request: GenerationRequest, owner: str) -> GenerationRequest:
        """A validated request with its uploads checked for this owner and kept for the job, and a song's window
        made explicit (song.song_request). UploadNotFound for another key's id; InvalidRequest naming a field."""
        if request.melody and request.music_model in MUSIC_PRESETS:
            preset = MUSIC_PRESETS[request.music_model]
            if preset.model_class != "MusicgenMelodyForConditionalGeneration":
                raise InvalidRequest("melody", f"music_model {preset.name!r} does not follow a melody; use a melody "
                                               "preset (e.g. melody)")  # fmt: skip
        if request.repaint_start is not None and request.music_model in MUSIC_PRESETS:
            preset = MUSIC_PRESETS[request.music_model]
            if not preset.repaints:
                raise InvalidRequest("repaint_start", f"music_model {preset.name!r} cannot repaint; use an ACE-Step "
                                                      "preset (e.g. ace-step-xl-turbo)")  # fmt: skip
        records = self.resolve(request, owner)
        if "song" in records:
            request = song_request(request, records["song"])
        self.keep_for_job(records.values())
        return request

    def sweep(self, now: float | None = None) -> int:
        """Delete expired uploads no unfinished job uses, and stray files (an interrupted upload's temp file)."""
        now = time.time() if now is None else now
        paths = self.store.sweep_uploads(now)
        for path in paths:
            Path(path).unlink(missing_ok=True)
        known = self.store.upload_paths()
        for path in self.settings.uploads_dir.iterdir():
            stale = path.stat().st_mtime < now - 3600.0
            if str(path) not in known and (not path.name.startswith(".incoming-") or stale):
                path.unlink(missing_ok=True)
        return len(paths)


def prepare_or_abort(library: UploadLibrary | None, request: GenerationRequest, owner: str,
                     context: grpc.ServicerContext) -> GenerationRequest:  # fmt: skip
    """UploadLibrary.prepare for a servicer: NOT_FOUND for an upload that is not the caller's, INVALID_ARGUMENT
    naming the field for one of the wrong kind or a window outside the song."""
    if not request.uploads:
        return request
    if library is None:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this composer keeps no uploads")
    try:
        return library.prepare(request, owner)
    except UploadNotFound as error:
        context.abort(grpc.StatusCode.NOT_FOUND, str(error))
    except InvalidRequest as error:
        rpc_errors.abort_invalid(context, error, wire.request_field_path)


def upload_to_proto(record: UploadRecord) -> uploads_pb2.Upload:
    expire = timestamp_pb2.Timestamp()
    expire.FromNanoseconds(int(record.expires_at * 1e9))
    return uploads_pb2.Upload(
        id=record.id, kind=KIND_VALUES[record.kind], sha256=record.sha256, size_bytes=record.size_bytes,
        duration_seconds=record.duration_seconds, sample_rate=record.sample_rate, channels=record.channels,
        width=record.width, height=record.height, format=record.format, filename=record.filename, expire_time=expire,
    )  # fmt: skip


class UploadAnalyses:
    """Each audio upload's music analysis (the whole file, decoded as a job reads it), cached per content hash: the
    tempo and sections a client shows under a dropped song before generating. `analyser` is called when needed (the
    composer's, loaded once)."""

    def __init__(self, analyser: Callable[[], MusicAnalyser], max_cached: int = 64):
        self.analyser = analyser
        self.max_cached = max_cached
        self._cache: OrderedDict[str, Timeline] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, record: UploadRecord) -> Timeline:
        with self._lock:
            if record.sha256 in self._cache:
                self._cache.move_to_end(record.sha256)
                return self._cache[record.sha256]
        mono, rate = song_mono(record)
        timeline = self.analyser().analyse(mono, rate)
        with self._lock:
            self._cache[record.sha256] = timeline
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return timeline


def analysis_to_proto(record: UploadRecord, timeline: Timeline) -> uploads_pb2.UploadAnalysis:
    return uploads_pb2.UploadAnalysis(
        id=record.id, duration_seconds=timeline.duration, tempo_bpm=timeline.tempo_bpm or 0.0,
        beat_count=len(timeline.beats), downbeat_count=len(timeline.downbeats),
        sections=[common_pb2.TimelineSection(index=s.index, start_seconds=s.start, end_seconds=s.end,
                                             first_bar=s.first_bar, bar_count=s.bar_count) for s in timeline.sections],
    )  # fmt: skip


class UploadServicer(uploads_pb2_grpc.UploadServiceServicer):
    def __init__(self, library: UploadLibrary, keys: ApiKeys, analyses: UploadAnalyses | None = None):
        self.library = library
        self.keys = keys
        self.analyses = analyses

    def _owner(self, context: grpc.ServicerContext) -> str:
        owner = self.keys.owner_of(metadata_value(context, "authorization"))
        if owner is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        return owner

    def CreateUpload(self, request_iterator: Iterator[uploads_pb2.CreateUploadRequest], context: grpc.ServicerContext):
        owner = self._owner(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "header":
            rpc_errors.abort_invalid_field(context, "header", "header: the first message must be the header")
        kind = KINDS.get(first.header.kind)
        if kind is None:
            rpc_errors.abort_invalid_field(context, "header.kind", "header.kind: must be UPLOAD_KIND_AUDIO or UPLOAD_KIND_IMAGE")
        try:
            record, created = self.library.add(owner, kind, first.header.filename, _data(request_iterator))
        except UploadRejected as error:
            log.info("upload refused: %s", error)
            if error.too_big:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            rpc_errors.abort_invalid_field(context, "data", str(error))
        except BadPiece as error:
            rpc_errors.abort_invalid_field(context, "data", str(error))
        log.info("upload %s: %s %s, %d bytes (%s)", record.id, kind, record.format, record.size_bytes,
                 "new" if created else "known")  # fmt: skip
        return upload_to_proto(record)

    def GetUpload(self, request: uploads_pb2.GetUploadRequest, context: grpc.ServicerContext):
        owner = self._owner(context)
        try:
            return upload_to_proto(self.library.get(request.id, owner))
        except UploadNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))

    def DeleteUpload(self, request: uploads_pb2.DeleteUploadRequest, context: grpc.ServicerContext):
        owner = self._owner(context)
        try:
            record = self.library.delete(request.id, owner)
        except UploadNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except UploadInUse as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return uploads_pb2.DeleteUploadResponse(id=record.id)


    def AnalyseUpload(self, request: uploads_pb2.AnalyseUploadRequest, context: grpc.ServicerContext):
        owner = self._owner(context)
        try:
            record = self.library.get(request.id, owner)
        except UploadNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        if record.kind != "audio":
            rpc_errors.abort_invalid_field(context, "id", f"id: upload {record.id} is {record.kind}, not audio")
        if self.analyses is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this composer does not analyse uploads")
        try:
            timeline = self.analyses.of(record)
        except ComposeError as error:  # the stored file no longer decodes
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return analysis_to_proto(record, timeline)


class BadPiece(ValueError):
    pass


def _data(messages: Iterator[uploads_pb2.CreateUploadRequest]) -> Iterator[bytes]:
    for message in messages:
        if message.WhichOneof("payload") != "data":
            raise BadPiece("data: only data messages may follow the header")
        if len(message.data) > MAX_PIECE_BYTES:
            raise BadPiece(f"data: a message carries at most {MAX_PIECE_BYTES} bytes")
        yield message.data
