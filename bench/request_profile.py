"""Where the API process spends a served image request: a sampling profile (py-spy) of the
``make serve`` API worker while one client sends images one at a time (concurrency 1).

The image benchmark's breakdown (bench/image.py) gives the stages the server times itself
(decode, preprocess, model call) and the rest of the client's latency as one figure, "request
path outside the pipeline". This splits the API process's CPU per request into what it is spent
on (framework, event loop, thread hand-offs, the call to the model service, SQLite, logging, ...)
so a change to the request path can be judged by measurement. Samples in which a thread waits
(a thread pool's idle queue, the event loop's select) count as idle.

    .venv/bin/python -m bench.request_profile              # ~1.5 minutes
    .venv/bin/python -m bench.request_profile --seconds 60

Results: bench/results/request-profile.json (with a Markdown table, also printed).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import (
    RESULTS_DIR,
    child_env,
    finish_run,
    loadavg,
    machine_info,
    machine_line,
    md_row,
    now_iso,
    setup_logging,
)
from bench.inputs import make_jpegs

log = logging.getLogger("bench.request_profile")

SAMPLE_RATE_HZ = 200
API_WORKER = "--service-name Verity "  # the API worker's command line among BentoML's processes
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE_LEAVES = ("Condition.wait ", "_worker (concurrent/futures/thread.py:81)", "EpollSelector.select ")
# (category, substring of a frame): the innermost frame that matches names the sample's category.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("SQLite store (quota, history, key)", "store/sqlite.py"),
    ("image decode", "decode_image"),
    ("resize to model pixels", "model_pixels"),
    ("call to the model service (pickle, aiohttp)", "_bentoml_impl/client"),
    ("call to the model service (pickle, aiohttp)", "aiohttp/"),
    ("logging", "logging/__init__"),
    ("multipart parsing", "formparsers"),
    ("authentication", "auth/"),
    ("Verity middleware", "api/middleware.py"),
    ("BentoML middleware", "bentoml/_internal/server"),
    ("OpenTelemetry middleware", "opentelemetry"),
    ("OpenTelemetry middleware", "asgi/__init__"),
    ("FastAPI / Starlette", "fastapi/"),
    ("FastAPI / Starlette", "starlette/"),
    ("uvicorn (HTTP parsing)", "uvicorn/"),
    ("thread hand-offs (anyio)", "anyio/"),
    ("asyncio event loop", "asyncio/"),
)


def categorize(raw_profile: str) -> Counter[str]:
    """Samples per category, from py-spy's raw (collapsed-stack) output of one process."""
    counts: Counter[str] = Counter()
    for line in raw_profile.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            counts["idle (waiting)"] += int(count)
            continue
        category = "other"
        for frame in reversed(frames):
            match = next((name for name, needle in CATEGORIES if needle in frame), None)
            if match:
                category = match
                break
        counts[category] += int(count)
    return counts


def py_spy() -> str:
    script = Path(sys.executable).parent / "py-spy"
    if not script.exists():
        raise SystemExit("py-spy is not installed: run `make setup` (it is a dev dependency)")
    return str(script)


def profile(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="verity-profile-") as tmp:
        return _profile(Path(tmp), seconds)


def _profile(workdir: Path, seconds: float) -> dict[str, Any]:
    from bench.served import Server, auth_env, drive, signup

    images = make_jpegs()
    raw_path = workdir / "profile.txt"
    with Server(child_env(auth_env(workdir)), workdir / "server.log") as server:
        server.wait_ready(timeout_s=180)
        api_key = signup(server.base_url)
        drive(server.base_url, images, 20, 1, api_key=api_key)  # warm-up
        workers = psutil.Process(server.pid).children(recursive=True)
        api = next(p for p in workers if API_WORKER in " ".join(p.cmdline()) + " ")
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(raw_path),
                "--pid",
                str(api.pid),
                "--duration",
                str(int(seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.perf_counter()
        answered = 0
        latencies_s: list[float] = []
        while time.perf_counter() - started < seconds - 1:  # stop inside the recording
            run = drive(server.base_url, images, len(images), 1, api_key=api_key)
            answered += run["ok"]
            latencies_s += run["latencies_s"]
        window_s = time.perf_counter() - started
        if spy.wait(timeout=seconds + 60) != 0:
            raise RuntimeError(f"py-spy failed (exit {spy.returncode})")
    counts = categorize(raw_path.read_text())
    per_request_ms = {
        name: samples / SAMPLE_RATE_HZ / answered * 1000 for name, samples in counts.most_common()
    }
    return {
        "requests": answered,
        "window_s": window_s,
        "client_p50_ms": float(np.median(latencies_s)) * 1000,
        "per_request_ms": per_request_ms,
        "busy_ms": sum(v for k, v in per_request_ms.items() if not k.startswith("idle")),
    }


def markdown(results: dict[str, Any]) -> str:
    run = results["profile"]
    lines = [
        f"API worker CPU per image request, concurrency 1, default settings; {run['requests']} requests "
        f"in {run['window_s']:.0f} s (client p50 {run['client_p50_ms']:.1f} ms), "
        f"py-spy at {SAMPLE_RATE_HZ} Hz; {machine_line(results['machine'])}",
        "",
        md_row(["where", "ms per request"]),
        md_row(["---", "---:"]),
    ]
    for name, ms in run["per_request_ms"].items():
        if not name.startswith("idle"):
            lines.append(md_row([name, f"{ms:.2f}"]))
    lines.append(md_row(["**API worker busy, total**", f"**{run['busy_ms']:.1f}**"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the recording")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "request-profile.json")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": now_iso(),
        "machine": machine_info(),
        "loadavg_start": loadavg(),
        "profile": profile(args.seconds),
        "busy_phases": {},
    }
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    sys.exit(main())
