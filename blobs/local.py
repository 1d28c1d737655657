"""Local blobs: files under ``VERITY_BLOB_DIR``, uploaded through the service itself with the
same form-POST shape S3 uses.

The form's ``policy`` is base64 JSON (expiry, exact key, exact content type, size range) and
``x-verity-signature`` its HMAC-SHA256 under a server key, so only forms this service made are
accepted, and only for what they say. The receiving route (``api/upload_form.py``) checks all of
it before the first byte of the file is written, streams the file to a temporary file beside its
destination with the size cap enforced while it streams, and moves it into place only when it is
complete: nothing half-written or unverified is ever kept.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from blobs.base import BlobStore, UploadForm
from config import Settings
from errors import Forbidden
from store.records import iso_epoch

log = logging.getLogger(__name__)

LOCAL_UPLOAD_PATH = "/v1/uploads/local"
SIGNATURE_FIELD = "x-verity-signature"
_KEY = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9_]{1,64}/[A-Za-z0-9_]{1,64}$")
_PARTIAL_SUFFIX = ".partial"


def signing_key(settings: Settings) -> bytes:
    """The HMAC key of upload forms (``auth.accounts.derived_key``)."""
    from auth.accounts import derived_key

    return derived_key(settings, b"verity local upload forms v1")


@dataclass(frozen=True)
class Policy:
    key: str
    content_type: str
    min_bytes: int
    max_bytes: int
    expires_at: float


class LocalBlobs(BlobStore):
    def __init__(self, root: Path, key: bytes) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobs:
        return cls(settings.blob_dir, signing_key(settings))  # type: ignore[arg-type]

    # -- keys and paths ----------------------------------------------------------------------------
    def path_of(self, key: str) -> Path:
        if not _KEY.match(key):
            raise Forbidden("the upload key is not one this service makes", code="upload_policy_violation")
        return self.root / key

    # -- forms ---------------------------------------------------------------------------------------
    def _sign(self, policy_b64: str) -> str:
        return hmac.new(self._key, policy_b64.encode(), hashlib.sha256).hexdigest()

    def upload_form(
        self, key: str, *, content_type: str, max_bytes: int, expires_at: float, base_url: str
    ) -> UploadForm:
        self.path_of(key)
        document = {
            "expiration": iso_epoch(expires_at),
            "conditions": [
                {"key": key},
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
        }
        policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
        fields = {
            "key": key,
            "Content-Type": content_type,
            "policy": policy,
            SIGNATURE_FIELD: self._sign(policy),
        }
        return UploadForm(url=base_url.rstrip("/") + LOCAL_UPLOAD_PATH, fields=fields)

    def verify(self, fields: dict[str, str], now: float | None = None) -> Policy:
        """The policy of a submitted form, once its signature, expiry and fields check out;
        ``Forbidden`` (403, like S3) otherwise."""
        policy_b64, signature = fields.get("policy", ""), fields.get(SIGNATURE_FIELD, "")
        if not policy_b64 or not signature:
            raise Forbidden("the form has no policy or signature", code="upload_signature_invalid")
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters (any byte
        # a client puts in the field), which would surface as a 500 instead of this 403.
        if not hmac.compare_digest(self._sign(policy_b64).encode(), signature.encode()):
            raise Forbidden("the form's signature does not match its policy", code="upload_signature_invalid")
        try:
            document = json.loads(base64.b64decode(policy_b64, validate=True))
            conditions = document["conditions"]
            key = conditions[0]["key"]
            content_type = conditions[1]["Content-Type"]
            _, min_bytes, max_bytes = conditions[2]
            expires_at = datetime.fromisoformat(document["expiration"].replace("Z", "+00:00")).timestamp()
        except (binascii.Error, ValueError, KeyError, IndexError, TypeError) as exc:
            raise Forbidden("the form's policy is malformed", code="upload_signature_invalid") from exc
        if (now if now is not None else time.time()) >= expires_at:
            raise Forbidden("the upload form has expired; ask for a new one", code="upload_expired")
        if fields.get("key") != key:
            raise Forbidden("the form's key is not the one its policy allows", code="upload_policy_violation")
        if fields.get("Content-Type") != content_type:
            raise Forbidden(
                f"the form's Content-Type must be {content_type!r}, as signed", code="upload_policy_violation"
            )
        self.path_of(key)
        return Policy(key, content_type, int(min_bytes), int(max_bytes), expires_at)

    # -- receiving -------------------------------------------------------------------------------------
    def open_partial(self, key: str) -> tuple[Path, int]:
        """A new private file beside ``key``'s destination to stream into (O_EXCL: never an
        existing file)."""
        final = self.path_of(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{secrets.token_hex(8)}{_PARTIAL_SUFFIX}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return partial, fd

    def commit(self, partial: Path, key: str) -> None:
        os.replace(partial, self.path_of(key))  # atomic: readers see nothing or the whole file

    # -- reading -----------------------------------------------------------------------------------------
    def size(self, key: str) -> int | None:
        try:
            return self.path_of(key).stat().st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self.path_of(key)  # already a file here: no copy

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(key).unlink()

    def sweep(self, older_than: float) -> int:
        removed = 0
        for path in self.root.rglob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("swept %d expired blob(s) from %s", removed, self.root)
        return removed
