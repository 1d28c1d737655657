"""Results on S3 (``--output s3://bucket/prefix/``): one object per shard, never half a line.

S3 has no append. The shard's results are written to a local working copy exactly as a local run
writes them (``batch.results.ResultsFile``: one fsync'd line per item), and that copy is published
whole, with one ``PutObject``, every ``flush_s`` seconds while lines arrive and once more at the
end. A ``PutObject`` replaces the object atomically, so a reader (or the next run) sees either the
previous snapshot or the new one, each made of complete lines only (the snapshot stops at the
copy's last newline). A task killed between two publications loses only the lines since the last
one: the rerun starts from the published object and answers those items again, once.

The summary goes beside the results (``results.summary.json``), also in one ``PutObject``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

from botocore.exceptions import BotoCoreError, ClientError

from batch.shards import DEFAULT_NAME, Shard, shard_file_name
from batch.sources import Sources, split_s3
from batch.usage import UsageError
from errors import ServiceUnavailable

log = logging.getLogger(__name__)

DEFAULT_FLUSH_S = 30.0
_DENIED = {"AccessDenied", "AllAccessDisabled", "403"}
_NO_BUCKET = {"NoSuchBucket"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


def s3_results_uri(output: str, shard: Shard) -> str:
    """Where ``shard``'s results go under ``--output s3://...``: a key ending in ``.jsonl`` or
    ``.json`` names the file (``s3://b/runs/out.jsonl``); any other is a folder that gets
    ``results.jsonl`` (``s3://b/runs/2026-11-30/``, with or without the slash). Shards get
    ``shard_file_name``'s names."""
    bucket, key = split_s3(output)
    if not bucket:
        raise UsageError(f"--output {output}: no bucket named")
    path = PurePosixPath(key)
    if key.endswith("/") or path.suffix not in (".jsonl", ".json"):
        folder, name = key.rstrip("/"), DEFAULT_NAME
    else:
        folder, name = str(path.parent) if str(path.parent) != "." else "", path.name
    name = shard_file_name(name, shard)
    return f"s3://{bucket}/{folder}/{name}" if folder else f"s3://{bucket}/{name}"


def summary_uri(results_uri: str) -> str:
    base, _, name = results_uri.rpartition("/")
    return f"{base}/{PurePosixPath(name).stem}.summary.json"


class S3Results:
    """The S3 object of a shard's results and its local working copy (in a private folder)."""

    def __init__(self, sources: Sources, uri: str, *, flush_s: float = DEFAULT_FLUSH_S) -> None:
        self.uri = uri
        self.bucket, self.key = split_s3(uri)
        self.client = sources.s3_client(self.bucket)
        self.flush_s = flush_s
        # One folder per results object, made afresh: a task killed outright (SIGKILL, a lost
        # machine) cannot clean up, and its rerun on the same machine clears what it left. S3
        # holds the truth; the folder's copy is rebuilt from it.
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        self.workdir = Path(tempfile.gettempdir()) / f"verity-batch-{digest}"
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(mode=0o700)
        self.local = self.workdir / PurePosixPath(self.key).name
        self._published_size = -1
        self._publishing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fetch(self, *, create: bool) -> bool:
        """Copy the published results (if any) to the working copy; whether there were any. With
        ``create``, make the object when there is none yet: that proves, before any model loads,
        that the output is writable."""
        try:
            self.client.download_file(self.bucket, self.key, str(self.local))
        except ClientError as exc:
            code = _code(exc)
            if code in _NO_BUCKET:
                raise UsageError(f"--output {self.uri}: no such bucket") from None
            if code not in _MISSING and code not in _DENIED:
                raise ServiceUnavailable(f"cannot read {self.uri}: {exc}", code="blobs_unavailable") from exc
            # Without s3:ListBucket a missing key is a 403 too; the put below tells them apart.
            self.local.write_bytes(b"")
            if create:
                self._put(self.key, b"", what="results")
                self._published_size = 0
            return False
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"cannot reach {self.uri}: {exc}", code="blobs_unavailable") from exc
        log.info("resuming from %s (%d bytes)", self.uri, self.local.stat().st_size)
        return True

    def start(self) -> None:
        """Publish every ``flush_s`` seconds from a background thread until ``close``."""
        self._thread = threading.Thread(target=self._loop, name="batch-s3-publish", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.publish()
            except (ServiceUnavailable, UsageError) as exc:  # the next round, or the last, tries again
                log.warning("could not publish results to %s: %s; retrying later", self.uri, exc)

    def publish(self) -> None:
        """Put the working copy's complete lines, unless nothing changed since the last put."""
        with self._publishing:
            data = self.local.read_bytes()
            data = data[: data.rfind(b"\n") + 1]  # a line being written now waits for the next put
            if len(data) == self._published_size:
                return
            self._put(self.key, data, what="results")
            self._published_size = len(data)

    def publish_summary(self, summary_file: Path) -> str:
        uri = summary_uri(self.uri)
        self._put(split_s3(uri)[1], summary_file.read_bytes(), what="summary")
        return uri

    def close_publisher(self) -> None:
        """Stop the background publication (``publish`` once more for the last lines)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self, *, keep_local: bool) -> None:
        """Stop publishing; remove the working copy unless ``keep_local`` (its lines were not all
        published: the log says where they are)."""
        self.close_publisher()
        if keep_local:
            log.error("results not yet published to %s are kept in %s", self.uri, self.local)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _put(self, key: str, data: bytes, *, what: str) -> None:
        content_type = "application/json" if key.endswith(".json") else "application/x-ndjson"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
            code = _code(exc)
            if code in _NO_BUCKET:
                raise UsageError(f"--output {self.uri}: no such bucket") from None
            if code in _DENIED:
                raise UsageError(
                    f"--output {self.uri}: not allowed to write s3://{self.bucket}/{key}"
                ) from None
            raise ServiceUnavailable(
                f"cannot write the {what} to s3://{self.bucket}/{key}: {exc}", code="blobs_unavailable"
            ) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(
                f"cannot write the {what} to s3://{self.bucket}/{key}: {exc}", code="blobs_unavailable"
            ) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
