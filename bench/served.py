"""The served side: start ``bentoml serve service:Verity`` in its own process group, drive
``POST /v1/detect/image`` at a fixed concurrency, stop exactly that process group."""

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
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil

from bench.common import PROJECT_ROOT, latency_stats

log = logging.getLogger("bench.served")

READY_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 600.0


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

    def __enter__(self) -> Server:
        cmd = [*bentoml_command(), "serve", "service:Verity", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        log.info("starting %s (log: %s)", " ".join(cmd), self.log_path)
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

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"bentoml serve exited with {self.proc.returncode}; see {self.log_path}"
                    )
                try:
                    response = client.get("/health/ready")
                    if response.status_code == 200:
                        log.info("server ready in %.1fs", time.monotonic() - started)
                        return response.json()
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout_s:.0f}s; see {self.log_path}")

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


async def _drive(base_url: str, images: list[bytes], requests: int, concurrency: int) -> dict[str, Any]:
    counter = iter(range(requests))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    server_timing: list[dict[str, float]] = []
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for index in counter:
            data = images[index % len(images)]
            start = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/detect/image", files={"image": (f"img{index % len(images)}.jpg", data, "image/jpeg")}
                )
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status, response = type(exc).__name__, None
            elapsed = time.perf_counter() - start
            statuses[status] += 1
            if response is not None and response.status_code == 200:
                latencies.append(elapsed)
                body = response.json()
                server_timing.append(body.get("timing_ms", {}))
                results.append(
                    {"index": index % len(images), "p": body["fake_probability"], "model": body["model"]}
                )

    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        wall_start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - wall_start
    ok = len(latencies)
    timing = {
        key: float(np.median([t[key] for t in server_timing if key in t]))
        for key in ("decode", "preprocess", "inference", "total")
        if any(key in t for t in server_timing)
    }
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "statuses": dict(statuses),
        "wall_s": wall,
        "images_per_s": ok / wall if wall > 0 else 0.0,
        "latency": latency_stats(latencies),
        "server_timing_median_ms": timing,
        "results": results,
    }


def drive(base_url: str, images: list[bytes], requests: int, concurrency: int) -> dict[str, Any]:
    """``requests`` multipart POSTs by ``concurrency`` closed-loop clients; throughput counts
    successful responses over the wall time of the whole run."""
    return asyncio.run(_drive(base_url, images, requests, concurrency))
