"""Uploads through a real ``bentoml serve`` process (local blobs): a large file sent with the
signed form is streamed to disk, never held in the server's memory, and a job on it runs in the
server's own workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Account
from tests.e2e.servers import ServerProcess

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
SIZE = 200 * MB
CHUNK = MB
BOUNDARY = "verity-test-boundary-7d1c"


def multipart(fields: dict[str, str], size: int) -> Iterator[bytes]:
    """The form as S3 takes it (fields, then ``file`` last), generated while it is sent: the test
    holds one chunk at a time, and so must the server."""
    for name, value in fields.items():
        yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * (CHUNK // 256)
    for _ in range(size // CHUNK):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


class PeakRss:
    """The largest summed RSS of the server's process tree, sampled every 20 ms."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        total = 0
        for proc in self.server.tree():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_large_upload_is_streamed_to_disk(verity_server: ServerProcess, server_account: Account) -> None:
    headers = {"x-api-key": server_account.key}
    with httpx.Client(base_url=verity_server.url, timeout=120) as http:
        form = http.post(
            "/v1/uploads",
            headers=headers,
            json={"filename": "big.mp4", "content_type": "video/mp4", "size": SIZE},
        )
        assert form.status_code == 201, form.text
        form = form.json()
        time.sleep(0.5)
        with PeakRss(verity_server) as rss:
            before = rss.now()
            sent = httpx.post(
                form["url"],
                content=multipart(form["fields"], SIZE),
                headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                timeout=300,
            )
        assert sent.status_code == 204, sent.text
        growth_mb = (rss.peak - before) / MB
        assert growth_mb < 64, f"the server grew by {growth_mb:.0f} MB while receiving {SIZE // MB} MB"
        stored = Path(verity_server.log_path.parent / "blobs" / form["fields"]["key"])
        assert stored.stat().st_size == SIZE
        assert not [p for p in stored.parent.iterdir() if p.name.endswith(".partial")]

        # Not a video by its bytes: the job fails with a typed error, and the media goes with it.
        job = http.post(
            "/v1/jobs", headers=headers, json={"upload_id": form["upload_id"], "modality": "video"}
        )
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 60
        while (state := http.get(f"/v1/jobs/{job.json()['id']}", headers=headers).json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["status"] == "failed" and state["error"]["code"] == "modality_mismatch", state
        assert not stored.exists()
