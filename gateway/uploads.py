"""/v1/uploads: the user's own songs, melody clips and images, streamed through to the composer's UploadService.

POST takes multipart/form-data with one file part (the first part that carries a filename, or the part named
`file`). The body is parsed as it arrives and the file's bytes go on to the composer in pieces as they are parsed:
the gateway never holds the file (neither in memory nor on its disk), so its memory stays flat however big the
upload. What the file is comes from `?kind=audio|image`, else from the part's Content-Type or the file name.

This route has its own size limit (GatewaySettings.max_upload_bytes, counted as the bytes stream through), not the
JSON routes' body limit.
"""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from collections.abc import AsyncIterator

import grpc
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from tunereel.v1 import uploads_pb2

from .security import caller_metadata

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

PIECE_BYTES = 256 * 1024  # bytes per UploadService message (the RPC allows 1 MiB)
KINDS = {"audio": uploads_pb2.UPLOAD_KIND_AUDIO, "image": uploads_pb2.UPLOAD_KIND_IMAGE}
KIND_NAMES = {value: name for name, value in KINDS.items()}


class UploadFailed(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def upload_to_dict(upload: uploads_pb2.Upload) -> dict:
    kind = KIND_NAMES.get(upload.kind, "unspecified")
    view: dict = {"id": upload.id, "kind": kind, "sha256": upload.sha256, "size_bytes": upload.size_bytes,
                  "format": upload.format, "filename": upload.filename}  # fmt: skip
    if kind == "audio":
        view.update(duration=upload.duration_seconds, sample_rate=upload.sample_rate, channels=upload.channels)
    else:
        view.update(width=upload.width, height=upload.height)
    view["expires"] = upload.expire_time.ToJsonString()
    return view


def _kind_of(content_type: str, filename: str) -> str | None:
    major = content_type.split("/", 1)[0].lower()
    if major in KINDS:
        return major
    guessed = (mimetypes.guess_type(filename)[0] or "").split("/", 1)[0]
    return guessed if guessed in KINDS else None


class MultipartFile:
    """Feeds the body to python-multipart and collects the file part's bytes; `header` once its headers are in."""

    def __init__(self, boundary: bytes, limit: int, kind: str | None):
        self.limit = limit
        self.kind = kind
        self.filename = ""
        self.size = 0
        self.header: uploads_pb2.UploadHeader | None = None
        self.done = False
        self._pending = bytearray()
        self._part_headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._in_file = False
        self._seen_file = False
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        })  # fmt: skip

    def _part_begin(self) -> None:
        self._part_headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._part_headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part_headers.get("content-disposition", ""))
        filename = options.get(b"filename")
        name = options.get(b"name", b"")
        if self._seen_file or (filename is None and name != b"file"):
            return  # another form field: ignored
        self._seen_file = self._in_file = True
        self.filename = (filename or b"").decode("utf-8", "replace")[:255]
        kind = self.kind or _kind_of(self._part_headers.get("content-type", ""), self.filename)
        if kind is None:
            raise UploadFailed(400, "kind: say ?kind=audio or ?kind=image (the file's type does not tell)", "kind")
        self.header = uploads_pb2.UploadHeader(kind=KINDS[kind], filename=self.filename)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadFailed(413, f"too big: uploads are at most {self.limit} bytes")
        self._pending += data[start:end]

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self.done = True

    def take(self, at_least: int = PIECE_BYTES) -> list[bytes]:
        pieces = []
        while len(self._pending) >= at_least and self._pending:
            pieces.append(bytes(self._pending[:PIECE_BYTES]))
            del self._pending[:PIECE_BYTES]
        return pieces


async def _messages(request: Request, body: MultipartFile) -> AsyncIterator[uploads_pb2.CreateUploadRequest]:
    """The CreateUpload stream, made while the body is read: header, then data pieces as they are parsed."""
    sent_header = False
    async for chunk in request.stream():
        body.parser.write(chunk)
        if body.header is not None and not sent_header:
            yield uploads_pb2.CreateUploadRequest(header=body.header)
            sent_header = True
        for piece in body.take():
            yield uploads_pb2.CreateUploadRequest(data=piece)
    body.parser.finalize()
    if body.header is None:
        raise UploadFailed(400, "file: the form has no file part (send the file as multipart/form-data)", "file")
    if not body.done:
        raise UploadFailed(400, "file: the multipart body ended early")
    for piece in body.take(at_least=1):
        yield uploads_pb2.CreateUploadRequest(data=piece)


def _upload_id(raw: str) -> str:
    try:
        canonical = str(uuid.UUID(raw))
    except ValueError:
        canonical = None
    if canonical is None or canonical != raw.lower():
        raise HTTPException(status_code=404, detail=f"no upload {raw!r}: upload ids are UUIDs")
    return canonical


def _failure(error: UploadFailed) -> JSONResponse:
    body = {"error": error.message} | ({"field": error.field} if error.field else {})
    return JSONResponse(body, status_code=error.status)


@router.post(
    "",
    status_code=201,
    summary="Upload a song, a melody clip or an image (multipart/form-data, one file part); returns its id.",
    responses={400: {"description": "Not audio / not an image, corrupt, truncated, empty or too long."},
               413: {"description": "More bytes than the upload limit."}},  # fmt: skip
)
async def create_upload(
    request: Request,
    metadata: list = Depends(caller_metadata),
    kind: str | None = Query(default=None, pattern="^(audio|image)$", description="audio or image; else from the file"),
) -> JSONResponse:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        return _failure(UploadFailed(415, "send the file as multipart/form-data"))
    limit = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        return _failure(UploadFailed(413, f"too big: uploads are at most {limit} bytes"))
    body = MultipartFile(boundary, limit, kind)
    messages = _messages(request, body)
    failure: list[BaseException] = []

    async def guarded() -> AsyncIterator[uploads_pb2.CreateUploadRequest]:
        try:
            async for message in messages:
                yield message
        except (UploadFailed, ClientDisconnect, ValueError) as error:  # python-multipart: ValueError-based errors
            failure.append(error)
            raise

    try:
        upload = await request.app.state.uploads.CreateUpload(guarded(), metadata=metadata, timeout=600)
    except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
        if failure:
            return _uploaded_failure(failure[0])
        if isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return _failure(UploadFailed(413, error.details() or "too big"))
        raise
    return JSONResponse(upload_to_dict(upload), status_code=201, headers={"Location": f"/v1/uploads/{upload.id}"})


def _uploaded_failure(error: BaseException) -> JSONResponse:
    if isinstance(error, UploadFailed):
        return _failure(error)
    if isinstance(error, ClientDisconnect):
        return JSONResponse({"error": "the client went away"}, status_code=499)
    return _failure(UploadFailed(400, f"file: not a well-formed multipart body ({error})", "file"))


@router.get("/{upload_id}", summary="One upload: kind, duration or size in pixels, sha256, expiry.")
async def get_upload(upload_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    upload = await request.app.state.uploads.GetUpload(
        uploads_pb2.GetUploadRequest(id=_upload_id(upload_id)), metadata=metadata, timeout=30
    )
    return upload_to_dict(upload)


@router.get("/{upload_id}/analysis", summary="An audio upload's tempo, bars and sections, as a job would find them.")
async def get_upload_analysis(upload_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    analysis = await request.app.state.uploads.AnalyseUpload(
        uploads_pb2.AnalyseUploadRequest(id=_upload_id(upload_id)), metadata=metadata, timeout=300
    )
    return {
        "id": analysis.id, "duration": analysis.duration_seconds, "tempo_bpm": round(analysis.tempo_bpm, 2),
        "beats": analysis.beat_count, "downbeats": analysis.downbeat_count,
        "sections": [{"index": s.index, "start_s": round(s.start_seconds, 4), "end_s": round(s.end_seconds, 4),
                      "first_bar": s.first_bar, "bars": s.bar_count} for s in analysis.sections],
    }  # fmt: skip


@router.delete("/{upload_id}", summary="Delete an upload (409 while an unfinished job uses it).")
async def delete_upload(upload_id: str, request: Request, metadata: list = Depends(caller_metadata)) -> dict:
    try:
        reply = await request.app.state.uploads.DeleteUpload(
            uploads_pb2.DeleteUploadRequest(id=_upload_id(upload_id)), metadata=metadata, timeout=30
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return JSONResponse({"error": error.details()}, status_code=409)
        raise
    return {"id": reply.id, "deleted": True}
