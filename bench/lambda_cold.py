"""AWS Lambda entry point: cold start and warm latency (``make bench``, or
``.venv/bin/python -m bench.lambda_cold``).

For each precision (fp32, int8), with the default served models of the project's store:

* cold start: a fresh Python process imports ``infra.aws_lambda.handler`` (the container's init:
  every ONNX session opened once), then answers ``GET /health/ready``, a signup and a first
  ``POST /v1/detect/image``, all through the handler with API Gateway v2 events; times from the
  process spawn, and the process's peak RSS;
* warm: 24 more image invocations in that process (one at a time, as Lambda sends them), against
  the served API (``bentoml serve``) at concurrency 1 on the same JPEGs.

Target: spawn -> first image answer <= 5 s with the default models.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PROJECT_ROOT,
    child_env,
    fmt,
    fmt_latency,
    latency_stats,
    machine_info,
    machine_line,
    md_row,
    now_iso,
    setup_logging,
    wait_for_quiet,
    write_json,
)
from bench.inputs import make_jpegs
from bench.served import Server, auth_env, drive, signup

log = logging.getLogger("bench.lambda_cold")

OUT = PROJECT_ROOT / "bench" / "results" / "lambda.json"
WARM_REQUESTS = 24
TARGET_FIRST_IMAGE_S = 5.0
QUIET_WAIT_S = 60.0
PRECISIONS = ("fp32", "int8")


def _worker(out: Path, images_dir: Path) -> int:
    """In the fresh process: init, first answers, warm invocations; timestamps as time.time()."""
    imported_at = time.time()
    import infra.aws_lambda.handler as handler  # the container's init
    from infra.aws_lambda.events import Context, decode_answer, http_api_event, multipart

    init_done = time.time()

    def invoke(event: dict[str, Any]) -> tuple[int, bytes]:
        status, _, body = decode_answer(handler.http(event, Context()))
        return status, body

    status, body = invoke(http_api_event("GET", "/health/ready"))
    if status != 200:
        raise RuntimeError(f"/health/ready: {status} {body[:300]!r}")
    ready_at = time.time()
    credentials = json.dumps({"email": f"bench-{time.time_ns()}@example.com", "password": "bench-password-x"})
    status, body = invoke(
        http_api_event(
            "POST", "/v1/auth/signup", headers={"content-type": "application/json"}, body=credentials.encode()
        )
    )
    if status != 201:
        raise RuntimeError(f"signup: {status} {body[:300]!r}")
    key = json.loads(body)["api_key"]["key"]
    images = [p.read_bytes() for p in sorted(images_dir.glob("*.jpg"))]

    def detect(index: int) -> dict[str, Any]:
        payload, content_type = multipart(
            "image", f"img{index}.jpg", images[index % len(images)], "image/jpeg"
        )
        event = http_api_event(
            "POST", "/v1/detect/image", headers={"content-type": content_type, "x-api-key": key}, body=payload
        )
        status, body = invoke(event)
        if status != 200:
            raise RuntimeError(f"detect: {status} {body[:300]!r}")
        return json.loads(body)

    first = detect(0)
    first_image_at = time.time()
    warm = []
    for index in range(1, WARM_REQUESTS + 1):
        start = time.perf_counter()
        detect(index)
        warm.append(time.perf_counter() - start)
    write_json(
        out,
        {
            "imported_at": imported_at,
            "init_done": init_done,
            "ready_at": ready_at,
            "first_image_at": first_image_at,
            "model": first["model"],
            "warm_latencies_s": warm,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    )
    return 0


def _cold(precision: str, workdir: Path, images_dir: Path) -> dict[str, Any]:
    out = workdir / f"worker-{precision}.json"
    env = child_env(
        {**auth_env(workdir / precision), "VERITY_PRECISION": precision, "VERITY_LOG_LEVEL": "WARNING"}
    )
    wait_for_quiet(QUIET_WAIT_S)
    spawned = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.lambda_cold",
            "--worker",
            "--out",
            str(out),
            "--images",
            str(images_dir),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the cold-start worker failed with {done.returncode}")
    worker = json.loads(out.read_text())
    return {
        "precision": precision,
        "model": worker["model"],
        "spawn_to_import_s": worker["imported_at"] - spawned,
        "spawn_to_init_s": worker["init_done"] - spawned,
        "spawn_to_ready_s": worker["ready_at"] - spawned,
        "spawn_to_first_image_s": worker["first_image_at"] - spawned,
        "peak_rss_mb": worker["peak_rss_mb"],
        "warm": latency_stats(worker["warm_latencies_s"]),
    }


def _served(precision: str, workdir: Path, images: list[bytes]) -> dict[str, Any]:
    env = child_env({**auth_env(workdir / f"served-{precision}"), "VERITY_PRECISION": precision})
    with Server(env, workdir / f"server-{precision}.log") as server:
        server.wait_ready()
        key = signup(server.base_url)
        drive(server.base_url, images, 4, 1, api_key=key)  # warm-up
        wait_for_quiet(QUIET_WAIT_S)
        result = drive(server.base_url, images, WARM_REQUESTS, 1, api_key=key)
    return {"precision": precision, "latency": result["latency"], "errors": result["errors"]}


def _p50_p99(stats: dict[str, float]) -> str:
    return f"{fmt_latency(stats, 'p50_ms')} / {fmt_latency(stats, 'p99_ms')}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        md_row(
            [
                "precision",
                "spawn → init s",
                "→ /health/ready s",
                "→ first image s",
                "peak RSS MB",
                "warm handler p50 / p99 ms",
                "served API c=1 p50 / p99 ms",
            ]
        ),
        md_row(["---"] + ["---:"] * 6),
    ]
    for cold, served in zip(results["cold"], results["served"], strict=True):
        lines.append(
            md_row(
                [
                    cold["precision"],
                    fmt(cold["spawn_to_init_s"]),
                    fmt(cold["spawn_to_ready_s"]),
                    fmt(cold["spawn_to_first_image_s"]),
                    f"{cold['peak_rss_mb']:.0f}",
                    _p50_p99(cold["warm"]),
                    _p50_p99(served["latency"]),
                ]
            )
        )
    worst = max(c["spawn_to_first_image_s"] for c in results["cold"])
    machine = results["machine"]
    verdict = "MET" if worst <= TARGET_FIRST_IMAGE_S else "MISSED"
    lines += [
        "",
        f"- Target: fresh process → first image answer ≤ {TARGET_FIRST_IMAGE_S:g} s with the default "
        f"models — worst {worst:.2f} s → **{verdict}**",
        f"- Machine: {machine_line(machine)}; {results['started_at']}",
        "- Cold start, one fresh process per precision: init = importing the handler (every served "
        "model's ONNX session: image, audio, video pair, faces); first image = after /health/ready and a "
        "signup (one bcrypt hash), the first POST /v1/detect/image; all through API Gateway v2 events",
        f"- Warm: {WARM_REQUESTS} image requests one at a time after the first, same 8 JPEGs (~640×480) "
        "for the handler and the served API; p50/p99 from one run",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lambda_cold", description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.out, args.images)
    setup_logging()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "started_at": now_iso(), "cold": [], "served": []}
    images = make_jpegs()
    with tempfile.TemporaryDirectory(prefix="verity-bench-lambda-") as tmp:
        workdir = Path(tmp)
        images_dir = workdir / "images"
        images_dir.mkdir()
        for index, image in enumerate(images):
            (images_dir / f"{index:02d}.jpg").write_bytes(image)
        for precision in PRECISIONS:
            results["cold"].append(_cold(precision, workdir, images_dir))
            results["served"].append(_served(precision, workdir, images))
    results["duration_s"] = time.perf_counter() - started
    results["markdown"] = markdown(results)
    write_json(args.out, results)
    sys.stdout.write(results["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
