"""The target of local upload forms (``POST /v1/uploads/local``): a ``multipart/form-data`` body
parsed as it streams (python-multipart's parser, fed chunk by chunk). The fields come first and
are checked (``LocalBlobs.verify``: signature, expiry, key, type) before the first byte of the
file is written; the file goes to a private partial file beside its destination, the size cap
enforced while it streams, and is moved into place only once complete. Anything that fails on
the way removes the partial file: nothing half-written or unverified is kept."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import anyio
from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from api.account_routes import run
from blobs.local import LocalBlobs
from errors import BadMedia, BadRequest, Conflict, Forbidden, TooLarge
from jobs.backend import JobsBackend

log = logging.getLogger(__name__)

FORM_FIELD_LIMIT = 16 * 1024  # bytes of one non-file form field
FORM_FIELDS_MAX = 20


async def receive_form(request: Request, backend: JobsBackend, blobs: LocalBlobs) -> None:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadRequest("send the form as multipart/form-data", code="invalid_upload_form")
    state = _FormState(blobs)
    parser = MultipartParser(boundary, state.callbacks())
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                await state.flush()
            parser.finalize()
        except FormParserError as exc:
            # Broken framing (a boundary line that does not match, a header without CRLF): the
            # client's mistake, not ours.
            raise BadRequest(f"the form is not valid multipart: {exc}", code="invalid_upload_form") from exc
        await state.finish(backend)
    except Exception:
        state.discard()
        raise


class _FormState:
    """One form being received: fields buffered (small), then the file streamed to a private
    partial file once the fields have passed ``LocalBlobs.verify``."""

    def __init__(self, blobs: LocalBlobs) -> None:
        self.blobs = blobs
        self.fields: dict[str, str] = {}
        self.headers: dict[str, bytes] = {}
        self._header_name = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()
        self._pending = bytearray()  # file bytes parsed but not yet written
        self.policy = None
        self.partial: Any = None
        self.fd: int | None = None
        self.written = 0
        self.file_done = False
        self.error: Exception | None = None
        self._field_name_buffer = b""
        self._header_value_buffer = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda data, start, end: self._data(data[start:end]),
            "on_part_end": self._part_end,
        }

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc

    def _part_begin(self) -> None:
        self.headers, self._name, self._is_file, self._value = {}, None, False, bytearray()
        self._field_name_buffer = b""
        self._header_value_buffer = b""

    def _header_field(self, data: bytes) -> None:
        self._field_name_buffer += data

    def _header_value(self, data: bytes) -> None:
        self._header_value_buffer += data

    def _header_end(self) -> None:
        self.headers[self._field_name_buffer.strip().lower()] = self._header_value_buffer.strip()
        self._field_name_buffer, self._header_value_buffer = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        self._is_file = name == "file"
        if self._is_file:
            if self.file_done:
                self._fail(BadRequest("the form holds more than one file", code="invalid_upload_form"))
                return
            try:
                self.policy = self.blobs.verify(self.fields)  # before the first byte is kept
                self.partial, self.fd = self.blobs.open_partial(self.policy.key)
            except Exception as exc:  # noqa: BLE001 - reported after the parser returns
                self._fail(exc)
        elif len(self.fields) >= FORM_FIELDS_MAX:
            self._fail(BadRequest("the form has too many fields", code="invalid_upload_form"))

    def _data(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self._is_file:
            self.written += len(data)
            if self.policy is not None and self.written > self.policy.max_bytes:
                self._fail(
                    TooLarge(
                        f"the file is over the {self.policy.max_bytes} bytes its form allows",
                        code="upload_too_large",
                    )
                )
                return
            self._pending += data
        else:
            self._value += data
            if len(self._value) > FORM_FIELD_LIMIT:
                self._fail(BadRequest("a form field is too long", code="invalid_upload_form"))

    def _part_end(self) -> None:
        if self._is_file:
            self.file_done = True
        elif self._name is not None and self.error is None:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    async def flush(self) -> None:
        if self.error is not None:
            raise self.error
        if self._pending and self.fd is not None:
            block, self._pending = bytes(self._pending), bytearray()
            await anyio.to_thread.run_sync(_write_all, self.fd, block)

    async def finish(self, backend: JobsBackend) -> None:
        await self.flush()
        if not self.file_done or self.policy is None or self.fd is None:
            raise BadRequest(
                "the form has no file field named 'file' after its fields", code="invalid_upload_form"
            )
        os.close(self.fd)
        self.fd = None
        if self.written < self.policy.min_bytes:
            raise BadMedia("the file is empty", code="empty_file")
        user_id, upload_id = self.policy.key.split("/")[-2:]
        upload = await run(lambda: backend.stores.uploads.get_upload(user_id, upload_id, now=backend.clock()))
        if upload is None:
            raise Forbidden("this upload no longer exists", code="upload_expired")
        if upload.job_id is not None:
            # Its job reads the media it was given; another file under the same key would
            # change a job's input after it was submitted.
            raise Conflict(f"upload {upload_id} belongs to a job already", code="upload_in_use")
        await run(self.blobs.commit, self.partial, self.policy.key)
        self.partial = None
        log.info("upload %s received: %d bytes", upload_id, self.written)

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.partial is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
            self.partial = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
