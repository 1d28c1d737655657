"""The blob store contract: a signed form-POST target for the client, and the media back as a
file for the worker. Keys are chosen by the server (``upload_key``), never from a user's file name."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from errors import InvalidInput

_SAFE_PART = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def upload_key(prefix: str, user_id: str, upload_id: str) -> str:
    """``<prefix><user id>/<upload id>``: per-user, server-chosen, no user text in it."""
    for part in (user_id, upload_id):
        if not _SAFE_PART.match(part):
            raise InvalidInput("malformed id in an upload key", code="invalid_upload_id")
    return f"{prefix}{user_id}/{upload_id}"


@dataclass(frozen=True)
class UploadForm:
    """What the client sends: ``fields`` first, then the file as the last field named ``file``,
    as ``multipart/form-data`` to ``url`` (S3's browser-POST shape, for both backends)."""

    url: str
    fields: dict[str, str]


class BlobStore(ABC):
    @abstractmethod
    def upload_form(
        self, key: str, *, content_type: str, max_bytes: int, expires_at: float, base_url: str
    ) -> UploadForm:
        """A form that lets its holder store 1..``max_bytes`` bytes of ``content_type`` at
        ``key`` until ``expires_at`` (unix seconds), and nothing else."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Bytes stored at ``key``, or None when nothing was uploaded there."""

    @abstractmethod
    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """The blob as a file on this machine for as long as the context lasts (S3: downloaded
        into a private temporary directory, removed afterwards)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; nothing there is not an error."""

    def sweep(self, older_than: float) -> int:
        """Remove blobs last written before ``older_than`` (unix seconds); the count removed."""
        return 0


def iter_file(path: Path, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            yield block
