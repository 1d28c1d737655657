"""``make soak``: a bounded mixed load against the served API, for a set time.

Starts ``bentoml serve service:Verity`` (what ``make serve`` runs) on a free loopback port with
its own SQLite file, or drives ``--url`` when given, and keeps ``--concurrency`` callers busy
with a weighted mix: images, explained images, audio, video, hostile files (random bytes,
truncated video, a decompression-bomb header, broken and deeply nested JSON), a flood of wrong
logins, and history / usage reads. It reports the statuses and p50/p99 per route, connection
errors, and the server tree's RSS over time.

Pass (exit 0) when there was no 5xx, no connection error, and the RSS after warm-up stayed flat:
the median of the last tenth of the samples within ``--rss-tolerance`` (5%) of the median of the
first tenth after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import (
    MB,
    RESULTS_DIR,
    cpu_flags,
    latency_stats,
    machine_info,
    now_iso,
    setup_logging,
    write_json,
)
from bench.inputs import make_clip, make_video_clip
from bench.served import UNMETERED, Server, auth_env, signup

log = logging.getLogger("bench.soak")

REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Call:
    """One kind of request: what it sends, and the route it is reported under."""

    route: str
    weight: int
    send: Callable[[httpx.AsyncClient, dict[str, bytes], str], Any]


def _media(route: str, field: str, data: bytes, name: str, kind: str) -> Callable[..., Any]:
    def send(client: httpx.AsyncClient, _: dict[str, bytes], key: str) -> Any:
        return client.post(route, files={field: (name, data, kind)}, headers={"x-api-key": key})

    return send


def calls(inputs: dict[str, bytes]) -> list[Call]:
    nested = ("[" * 100_000 + "]" * 100_000).encode()

    def login_flood(client: httpx.AsyncClient, _: dict[str, bytes], __: str) -> Any:
        email = random.choice(["victim@example.com", f"nobody-{uuid.uuid4().hex[:6]}@example.com"])
        return client.post("/v1/auth/login", json={"email": email, "password": "wrong-" + uuid.uuid4().hex})

    def history(client: httpx.AsyncClient, _: dict[str, bytes], key: str) -> Any:
        return client.get("/v1/history?limit=20", headers={"x-api-key": key})

    def usage(client: httpx.AsyncClient, _: dict[str, bytes], key: str) -> Any:
        return client.get("/v1/usage", headers={"x-api-key": key})

    def json_body(body: bytes) -> Callable[..., Any]:
        def send(client: httpx.AsyncClient, _: dict[str, bytes], key: str) -> Any:
            headers = {"x-api-key": key, "content-type": "application/json"}
            return client.post("/v1/detect/image", content=body, headers=headers)

        return send

    return [
        Call("image", 30, _media("/v1/detect/image", "image", inputs["jpeg"], "a.jpg", "image/jpeg")),
        Call(
            "image explain",
            2,
            _media("/v1/detect/image?explain=true", "image", inputs["jpeg"], "a.jpg", "image/jpeg"),
        ),
        Call("audio", 8, _media("/v1/detect/audio", "audio", inputs["wav"], "a.wav", "audio/wav")),
        Call("video", 4, _media("/v1/detect/video?fps=1", "video", inputs["mp4"], "a.mp4", "video/mp4")),
        Call(
            "hostile: random bytes",
            4,
            _media("/v1/detect/image", "image", inputs["random"], "x.jpg", "image/jpeg"),
        ),
        Call(
            "hostile: truncated video",
            3,
            _media("/v1/detect/video", "video", inputs["mp4"][:4000], "x.mp4", "video/mp4"),
        ),
        Call(
            "hostile: bomb header",
            3,
            _media("/v1/detect/image", "image", inputs["bomb"], "x.png", "image/png"),
        ),
        Call("hostile: broken JSON", 2, json_body(b'{"image": "data:image/png;base64,')),
        Call("hostile: nested JSON", 2, json_body(nested)),
        Call("login flood", 10, login_flood),
        Call("history", 8, history),
        Call("usage", 6, usage),
    ]


def make_inputs() -> dict[str, bytes]:
    import io

    from PIL import Image

    from tests.media_factory import jpeg_bytes, png_header_only

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return {
        "jpeg": jpeg_bytes(640, 480, seed=1),
        "wav": make_clip(8.0, seed=2),
        "mp4": make_video_clip(4.0, seed=3),
        "random": os.urandom(200_000),
        "bomb": png_header_only(100_000, 100_000),
    }


class RssSeries:
    """The server tree's RSS every ``interval_s``, in a thread."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> RssSeries:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.samples.append((round(time.monotonic() - self._started, 1), round(total / MB, 1)))


async def drive(
    base_url: str, key: str, inputs: dict[str, bytes], duration_s: float, concurrency: int, seed: int
) -> dict[str, Any]:
    mix = calls(inputs)
    weights = [c.weight for c in mix]
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    rng = random.Random(seed)

    async def caller(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            call = rng.choices(mix, weights)[0]
            started = time.perf_counter()
            try:
                response = await call.send(client, inputs, key)
            except httpx.HTTPError as exc:
                errors[f"{call.route}: {type(exc).__name__}"] += 1
                continue
            latencies[call.route].append(time.perf_counter() - started)
            statuses[call.route][response.status_code] += 1
            if response.status_code >= 500:
                log.warning("%s answered %d: %s", call.route, response.status_code, response.text[:300])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        await asyncio.gather(*(caller(client) for _ in range(concurrency)))
    return {
        "routes": {
            route: {"statuses": dict(sorted(statuses[route].items())), **latency_stats(latencies[route])}
            for route in sorted(statuses)
        },
        "connection_errors": dict(errors),
    }


def rss_verdict(samples: list[tuple[float, float]], warmup_s: float, tolerance: float) -> dict[str, Any]:
    after = [mb for t, mb in samples if t >= warmup_s]
    if len(after) < 20:
        return {"flat": None, "reason": "too few samples after warm-up"}
    tenth = max(2, len(after) // 10)
    first, last = statistics.median(after[:tenth]), statistics.median(after[-tenth:])
    growth = (last - first) / first
    return {
        "first_mb": first,
        "last_mb": last,
        "growth": round(growth, 4),
        "peak_mb": max(after),
        "flat": abs(growth) <= tolerance,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Soak: {results['duration_s']:.0f} s, {results['concurrency']} callers, "
        f"{results['machine']['cpu_model']} ({results['machine']['nproc']} CPUs, "
        f"flags: {results['cpu_flags']})",
        "",
        "| route | requests | statuses | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|",
    ]
    for route, figures in results["routes"].items():
        count = sum(figures["statuses"].values())
        shown = ", ".join(f"{code}: {n}" for code, n in figures["statuses"].items())
        lines.append(f"| {route} | {count} | {shown} | {figures['p50_ms']:.0f} | {figures['p99_ms']:.0f} |")
    rss = results["rss"]
    lines += [
        "",
        f"- 5xx answers: {results['server_errors']}; connection errors: "
        f"{sum(results['connection_errors'].values())}",
        f"- server tree RSS after {results['warmup_s']:.0f} s of warm-up: {rss.get('first_mb')} MB -> "
        f"{rss.get('last_mb')} MB ({rss.get('growth', 0) * 100:+.1f}%), peak {rss.get('peak_mb')} MB",
        f"- verdict: **{'PASS' if results['passed'] else 'FAIL'}**",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=float(os.environ.get("SOAK_S", 300)))
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--warmup-s", type=float, default=None, help="default: a tenth of the run, 30-120 s")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--url", default=None, help="drive this server instead of starting one")
    parser.add_argument("--api-key", default=None, help="with --url: the key to use (else one is signed up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    warmup_s = args.warmup_s if args.warmup_s is not None else min(120.0, max(30.0, args.duration_s / 10))
    out = args.out or RESULTS_DIR / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    log.info("making inputs ...")
    inputs = make_inputs()
    with tempfile.TemporaryDirectory(prefix="verity-soak-") as tmp:
        if args.url:
            base_url, pid = args.url.rstrip("/"), None
            server = None
        else:
            # The account database and secret of its own; the soak's caller is unmetered, and the
            # signup/login throttles stay as shipped (the login flood is meant to meet them).
            env = {**os.environ, **auth_env(Path(tmp))}
            env["VERITY_RATE_LIMIT_JOBS_PER_MIN"] = UNMETERED
            server = Server(env, Path(tmp) / "server.log")
            server.__enter__()
            server.wait_ready()
            base_url, pid = server.base_url, server.pid
        try:
            key = args.api_key or signup(base_url)
            started = time.perf_counter()
            if pid is not None:
                # ~100 samples or more: enough for the tenths the verdict compares.
                with RssSeries(pid, interval_s=max(0.5, min(5.0, args.duration_s / 100))) as rss:
                    driven = asyncio.run(
                        drive(base_url, key, inputs, args.duration_s, args.concurrency, args.seed)
                    )
                samples = rss.samples
            else:
                driven = asyncio.run(
                    drive(base_url, key, inputs, args.duration_s, args.concurrency, args.seed)
                )
                samples = []
            duration = time.perf_counter() - started
        finally:
            if server is not None:
                server.stop()
    server_errors = sum(
        n for figures in driven["routes"].values() for code, n in figures["statuses"].items() if code >= 500
    )
    verdict = rss_verdict(samples, warmup_s, args.rss_tolerance) if samples else {"flat": None}
    results = {
        "started_at": now_iso(),
        "machine": machine_info(),
        "cpu_flags": cpu_flags(),
        "duration_s": duration,
        "concurrency": args.concurrency,
        "warmup_s": warmup_s,
        **driven,
        "server_errors": server_errors,
        "rss": verdict,
        "rss_samples": samples,
    }
    # Driving someone else's server (--url) measures no RSS: that run passes on errors alone.
    rss_ok = verdict.get("flat") is True if pid is not None else True
    results["passed"] = server_errors == 0 and not driven["connection_errors"] and rss_ok
    table = markdown(results)
    results["markdown"] = table
    write_json(out, results)
    sys.stdout.write(table)
    log.info("results in %s", out)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
