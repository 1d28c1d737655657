"""The served side: start ``bentoml serve service:Verity`` in its own process group, sign up an
account on it, drive a detection endpoint (``POST /v1/detect/image`` or ``/v1/detect/audio``)
at a fixed concurrency with that account's API key, stop exactly that process group.

Detection needs an API key (issue 3) and is metered: ``auth_env`` gives a bench server its own
SQLite file and development secret in a temporary directory, and quotas no benchmark reaches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil

from bench.common import BUSY_LIMIT, PROJECT_ROOT, RssSampler, latency_stats, loadavg, wait_for_quiet

log = logging.getLogger("bench.served")

READY_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 600.0
BENCH_PASSWORD = "bench-password-not-secret"  # a throwaway account on a throwaway database
UNMETERED = "1000000"  # quotas (per day, per minute) no benchmark run reaches


@dataclass(frozen=True)
class Endpoint:
    """A detection endpoint and how a file is posted to it (multipart)."""

    path: str
    field: str
    filename: str  # with ``{index}``
    content_type: str
    rate_key: str  # the throughput's name in the results

    def upload(self, index: int, data: bytes) -> dict[str, tuple[str, bytes, str]]:
        return {self.field: (self.filename.format(index=index), data, self.content_type)}


IMAGE = Endpoint("/v1/detect/image", "image", "img{index}.jpg", "image/jpeg", "images_per_s")
AUDIO = Endpoint("/v1/detect/audio", "audio", "clip{index}.wav", "audio/wav", "clips_per_s")
VIDEO = Endpoint("/v1/detect/video?fps=1", "video", "clip{index}.mp4", "video/mp4", "clips_per_s")


def auth_env(workdir: Path) -> dict[str, str]:
    """``VERITY_*`` settings for a bench server: its own account database and development secret
    under ``workdir`` (never the developer's ``var/``), and no quota in the way."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "VERITY_SQLITE_PATH": str(workdir / "verity.db"),
        "VERITY_DEV_SECRET_PATH": str(workdir / "dev-secret"),
        "VERITY_DAILY_LIMIT": UNMETERED,
        "VERITY_RATE_LIMIT_IMAGE_PER_MIN": UNMETERED,
        "VERITY_RATE_LIMIT_AUDIO_PER_MIN": UNMETERED,
        "VERITY_RATE_LIMIT_VIDEO_PER_MIN": UNMETERED,
    }


def signup(base_url: str) -> str:
    """``POST /v1/auth/signup`` with a fresh address; returns the new account's API key."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    response = httpx.post(
        f"{base_url}/v1/auth/signup", json={"email": email, "password": BENCH_PASSWORD}, timeout=60.0
    )
    if response.status_code != 201:
        raise RuntimeError(f"signup failed: {response.status_code} {response.text[:300]}")
    return str(response.json()["api_key"]["key"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bentoml_command() -> list[str]:
    script = Path(sys.executable).parent / "bentoml"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bentoml"]


class Server:
    """One ``bentoml serve`` process tree; a context manager that always stops what it started."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.spawned_at = 0.0  # perf_counter() just before the spawn
        self.ready_at = 0.0  # perf_counter() at the first 200 from /health/ready

    def __enter__(self) -> Server:
        cmd = [*bentoml_command(), "serve", "service:Verity", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        log.info("starting %s (log: %s)", " ".join(cmd), self.log_path)
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll ``/health/ready`` every ``poll_s`` until it answers 200; returns its body."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        respawned = False
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    if not respawned and self._lost_a_port_race():
                        # BentoML's supervisor picks its control ports at random; another
                        # process can take one between the pick and the bind. Start once more.
                        log.warning("bentoml serve lost a port race at start; starting it again")
                        respawned = True
                        self.stop()
                        self.port = free_port()
                        self.base_url = f"http://127.0.0.1:{self.port}"
                        client.base_url = httpx.URL(self.base_url)
                        self.__enter__()
                        continue
                    raise RuntimeError(
                        f"bentoml serve exited with {self.proc.returncode}; see {self.log_path}"
                    )
                try:
                    response = client.get("/health/ready")
                    if response.status_code == 200:
                        self.ready_at = time.perf_counter()
                        log.info("server ready in %.1fs", time.monotonic() - started)
                        return response.json()
                except httpx.HTTPError:
                    pass
                time.sleep(poll_s)
        raise TimeoutError(f"server not ready after {timeout_s:.0f}s; see {self.log_path}")

    def _lost_a_port_race(self) -> bool:
        try:
            return b"Address already in use" in self.log_path.read_bytes()[-20_000:]
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the process group this object started; SIGKILL to the group if it lingers,
        then to any of the server's own descendants still alive (BentoML's workers run in
        process groups of their own; psutil refuses to signal a pid that was reused)."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("server did not stop on SIGTERM; sending SIGKILL to group %d", pgid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for child in alive:
            log.warning("killing leftover server process %d", child.pid)
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def served_model(ready: dict[str, Any], model_id: str, precision: str) -> dict[str, Any]:
    """The ``/health/ready`` description of ``model_id``; fails unless it is served at
    ``precision`` (the answer lists every served model, in no fixed order)."""
    model = next((m for m in ready.get("models", []) if m.get("id") == model_id), None)
    if model is None:
        raise RuntimeError(f"server does not serve {model_id!r}: {ready.get('models')}")
    if model.get("precision") != precision:
        raise RuntimeError(
            f"server reports {model_id} at precision {model.get('precision')!r}, expected {precision!r}"
        )
    return model


async def _drive(
    base_url: str,
    payloads: list[bytes],
    requests: int,
    concurrency: int,
    endpoint: Endpoint,
    api_key: str | None,
) -> dict[str, Any]:
    counter = iter(range(requests))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    server_timing: list[dict[str, float]] = []
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"x-api-key": api_key} if api_key else {}

    async def worker(client: httpx.AsyncClient) -> None:
        for index in counter:
            item = index % len(payloads)
            start = time.perf_counter()
            try:
                response = await client.post(endpoint.path, files=endpoint.upload(item, payloads[item]))
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status, response = type(exc).__name__, None
            elapsed = time.perf_counter() - start
            statuses[status] += 1
            if response is not None and response.status_code == 200:
                latencies.append(elapsed)
                body = response.json()
                server_timing.append(body.get("timing_ms", {}))
                result = {"index": item, "p": body["fake_probability"], "model": body["model"]}
                if body.get("segments"):
                    result["segment0_p"] = body["segments"][0]["fake_probability"]
                    result["segments"] = len(body["segments"])
                media = body.get("media", {})
                if "frames_analyzed" in media:  # video: what the face-detection time was spent on
                    result["frames_analyzed"] = media["frames_analyzed"]
                    result["frames_with_face"] = media["frames_with_face"]
                    result["timing_ms"] = body.get("timing_ms", {})
                results.append(result)

    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits, headers=headers
    ) as client:
        wall_start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - wall_start
    ok = len(latencies)
    timing = {
        key: float(np.median([t[key] for t in server_timing if key in t]))
        for key in ("decode", "faces", "preprocess", "inference", "total")
        if any(key in t for t in server_timing)
    }
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "statuses": dict(statuses),
        "wall_s": wall,
        endpoint.rate_key: ok / wall if wall > 0 else 0.0,
        "latency": latency_stats(latencies),
        "latencies_s": latencies,
        "server_timing_median_ms": timing,
        "results": results,
    }


def drive(
    base_url: str,
    payloads: list[bytes],
    requests: int,
    concurrency: int,
    *,
    endpoint: Endpoint = IMAGE,
    api_key: str | None = None,
) -> dict[str, Any]:
    """``requests`` multipart POSTs of ``payloads`` (round robin) to ``endpoint`` by
    ``concurrency`` closed-loop clients, with ``api_key`` as ``x-api-key``; throughput counts
    successful responses over the wall time of the whole run."""
    return asyncio.run(_drive(base_url, payloads, requests, concurrency, endpoint, api_key))


def measured_run(
    base_url: str,
    rss: RssSampler,
    payloads: list[bytes],
    requests: int,
    concurrency: int,
    quiet_wait_s: float,
    **drive_kwargs: Any,
) -> dict[str, Any]:
    """One measured ``drive`` on a quiet machine: the server tree's CPU and peak RSS over exactly
    this run (``rss`` samples it), and the load average before and after."""
    wait_for_quiet(quiet_wait_s, BUSY_LIMIT)
    load_before = loadavg()
    rss.start_phase()
    result = drive(base_url, payloads, requests, concurrency, **drive_kwargs)
    result["cpu"] = rss.end_phase()
    result["peak_rss_mb"] = result["cpu"]["peak_rss_mb"]
    result["loadavg_before"], result["loadavg_after"] = load_before, loadavg()
    return result
