"""Long media through uploads and jobs (issue 11, ``make bench``): a 10-minute 1280x720 clip.

One run, on the embedded default backends (SQLite, local blobs) and the models ``make serve``
serves (the full-size dev exports in ``./bentos``):

* the clip: ``bench/inputs.py``'s 10 s 1280x720 30 fps H.264 clip of one moving face, looped
  with ``ffmpeg -stream_loop`` (a stream copy: no re-encoding) to 10 minutes (18000 frames);
* the API in this process (``api.app.create_app`` + its stores, no models) takes the upload
  (``POST /v1/uploads``, then the signed form to ``POST /v1/uploads/local``) and the job
  (``POST /v1/jobs``, ``options.fps = 1``), exactly as a client does;
* the job runs in ``python -m jobs.worker`` (its own process, the in-process engine); the peak RSS
  of its process tree (worker + decoder child) is sampled every 100 ms, from when its models
  are loaded to when the job is done;
* the same for the 10 s clip (three jobs: median and range), whose peak is the reference of the
  memory target;
* the inline path for comparison: the 10 s clip through ``detect_video`` (bytes, as
  ``POST /v1/detect/video`` takes it; three runs) in its own process; the 10-minute clip is over
  the inline caps (32 MB, 300 s), so its inline cost is that per-frame cost times 600 frames.

Targets: the worker's peak RSS on the 10-minute clip at most 300 MB over the 10 s clip's; the
10-minute clip end to end (submission to result, upload apart) within 3 minutes.

    python -m bench.jobs                  # the full run (what `make bench` does)
    python -m bench.jobs --minutes 2      # a shorter long clip
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    PROJECT_ROOT,
    RESULTS_DIR,
    RssSampler,
    child_env,
    cpu_flags,
    fmt,
    machine_info,
    md_row,
    now_iso,
    setup_logging,
    wait_for_quiet,
    write_json,
)
from bench.inputs import make_video_clip

log = logging.getLogger("bench.jobs")

SAMPLE_FPS = 1.0
SHORT_S = 10.0
SHORT_RUNS = 3
RSS_TARGET_MB = 300.0
E2E_TARGET_S = 180.0
READY_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 1800.0


def loop_clip(short: Path, target: Path, repeats: int) -> None:
    from tests.video_factory import ffmpeg_path

    subprocess.run(
        [
            ffmpeg_path(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-stream_loop",
            str(repeats - 1),
            "-i",
            str(short),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            "-y",
            str(target),
        ],
        check=True,
    )


class Api:
    """The API routes in this process, without models: uploads and jobs only need the stores."""

    def __init__(self, env: dict[str, str]) -> None:
        from starlette.testclient import TestClient

        from api.app import attach_backends, create_app
        from config import Settings

        os.environ.update(env)
        settings = Settings()
        app = create_app(settings)
        attach_backends(app, settings)
        self.client = TestClient(app)
        answer = self.client.post(
            "/v1/auth/signup", json={"email": "bench@example.com", "password": "bench-password-1"}
        )
        answer.raise_for_status()
        self.client.headers["x-api-key"] = answer.json()["api_key"]["key"]

    def upload(self, path: Path) -> tuple[str, float]:
        started = time.perf_counter()
        size = path.stat().st_size
        form = self.client.post(
            "/v1/uploads", json={"filename": path.name, "content_type": "video/mp4", "size": size}
        ).json()
        with path.open("rb") as handle:
            sent = self.client.post(
                form["url"], data=form["fields"], files={"file": (path.name, handle, "video/mp4")}
            )
        if sent.status_code != 204:
            raise RuntimeError(f"upload failed: {sent.status_code} {sent.text}")
        return form["upload_id"], time.perf_counter() - started

    def run_job(self, upload_id: str) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        job = self.client.post(
            "/v1/jobs", json={"upload_id": upload_id, "modality": "video", "options": {"fps": SAMPLE_FPS}}
        ).json()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self.client.get(f"/v1/jobs/{job['id']}").json()
            if state["status"] in ("succeeded", "failed", "canceled"):
                return state, time.perf_counter() - started
            time.sleep(0.25)
        raise RuntimeError(f"job {job['id']} did not finish in {JOB_TIMEOUT_S} s")


class Worker:
    """``python -m jobs.worker`` with its RSS sampled; ready once its log says its workers started."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobs.worker"],
                cwd=PROJECT_ROOT,
                env=child_env({**env, "VERITY_JOB_WORKERS": "1"}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "local job worker(s) started" not in log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the worker did not start: {log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)
        self.sampler = RssSampler(self.process.pid).__enter__()

    def stop(self) -> None:
        self.sampler.__exit__()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure_jobs(api: Api, env: dict[str, str], clip: Path, runs: int, workdir: Path) -> dict[str, Any]:
    worker = Worker(env, workdir / f"worker-{clip.stem}.log")
    try:
        idle_mb = worker.sampler.phase_peak / MB
        walls, uploads, peaks, frames, jobs = [], [], [], [], []
        for _ in range(runs):
            wait_for_quiet(60.0)
            upload_id, upload_s = api.upload(clip)
            worker.sampler.start_phase()
            job, wall = api.run_job(upload_id)
            phase = worker.sampler.end_phase()
            if job["status"] != "succeeded":
                raise RuntimeError(f"the job failed: {job['error']}")
            result = job["result"]
            walls.append(wall)
            uploads.append(upload_s)
            peaks.append(phase["peak_rss_mb"])
            frames.append(result["media"]["frames_analyzed"])
            jobs.append(
                {
                    "wall_s": wall,
                    "upload_s": upload_s,
                    "cpu": phase,
                    "timing_ms": result["timing_ms"],
                    "verdict": result["verdict"],
                    "frames_analyzed": frames[-1],
                    "duration_s": result["media"]["duration_s"],
                    "warnings": result["warnings"],
                }
            )
    finally:
        worker.stop()
    return {
        "clip_mb": clip.stat().st_size / MB,
        "runs": runs,
        "idle_rss_mb": idle_mb,
        "wall_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls)},
        "upload_s": {"median": statistics.median(uploads), "min": min(uploads), "max": max(uploads)},
        "peak_rss_mb": {"median": statistics.median(peaks), "min": min(peaks), "max": max(peaks)},
        "frames_analyzed": frames[0],
        "frames_per_s": frames[0] / statistics.median(walls),
        "jobs": jobs,
    }


INLINE_PROBE = """
import asyncio, json, statistics, sys, time
from config import Settings
from detect.hosting import build_inprocess_engine
from detect.video import detect_video

settings = Settings()
engine = build_inprocess_engine(settings)
data = open(sys.argv[1], "rb").read()
async def once():
    started = time.perf_counter()
    fps = float(sys.argv[2])
    result = await detect_video(engine, data, fps=fps, max_frames=None, strategy="temporal", model_id=None)
    return time.perf_counter() - started, result["media"]["frames_analyzed"]
asyncio.run(once())  # warm-up
runs = [asyncio.run(once()) for _ in range(int(sys.argv[3]))]
print(json.dumps({"wall_s": [r[0] for r in runs], "frames": runs[0][1]}))
"""


def measure_inline(clip: Path, env: dict[str, str]) -> dict[str, Any]:
    wait_for_quiet(60.0)
    done = subprocess.run(
        [sys.executable, "-c", INLINE_PROBE, str(clip), str(SAMPLE_FPS), str(SHORT_RUNS)],
        cwd=PROJECT_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    per_frame = [w / answer["frames"] for w in answer["wall_s"]]
    return {
        "wall_s": {
            "median": statistics.median(answer["wall_s"]),
            "min": min(answer["wall_s"]),
            "max": max(answer["wall_s"]),
        },
        "frames": answer["frames"],
        "s_per_frame": {"median": statistics.median(per_frame), "min": min(per_frame), "max": max(per_frame)},
    }


def span(stats: dict[str, float]) -> str:
    return f"{fmt(stats['median'])} ({fmt(stats['min'])}–{fmt(stats['max'])})"


def markdown(results: dict[str, Any]) -> str:
    short, long, inline = results["short"], results["long"], results["inline"]
    minutes = results["minutes"]
    lines = [
        f"Machine: {results['machine']['cpu_model']} ({results['cpu_flags']}), "
        f"{results['machine']['nproc']} cores; precision {results['precision']}; "
        f"{results['started_at'][:10]}.",
        "",
        md_row(
            [
                "clip (1280x720, 30 fps, H.264)",
                "frames analysed",
                "upload s",
                "job s (submit → result)",
                "frames/s",
                "worker peak RSS MB (idle)",
            ]
        ),
        md_row(["---", "---:", "---:", "---:", "---:", "---:"]),
        md_row(
            [
                f"10 s, job ×{short['runs']} (median, range)",
                str(short["frames_analyzed"]),
                fmt(short["upload_s"]["median"]),
                span(short["wall_s"]),
                fmt(short["frames_per_s"]),
                f"{fmt(short['peak_rss_mb']['median'], 0)} ({fmt(short['idle_rss_mb'], 0)})",
            ]
        ),
        md_row(
            [
                f"{minutes:g} min, job ×1",
                str(long["frames_analyzed"]),
                fmt(long["upload_s"]["median"]),
                fmt(long["wall_s"]["median"]),
                fmt(long["frames_per_s"]),
                f"{fmt(long['peak_rss_mb']['median'], 0)} ({fmt(long['idle_rss_mb'], 0)})",
            ]
        ),
        md_row(
            [
                f"10 s inline ×{SHORT_RUNS} (`detect_video`, bytes)",
                str(inline["frames"]),
                "–",
                span(inline["wall_s"]),
                fmt(inline["frames"] / inline["wall_s"]["median"]),
                "–",
            ]
        ),
        md_row(
            [
                f"{minutes:g} min inline, extrapolated (over the inline caps)",
                str(long["frames_analyzed"]),
                "–",
                fmt(inline["s_per_frame"]["median"] * long["frames_analyzed"]),
                fmt(1 / inline["s_per_frame"]["median"]),
                "–",
            ]
        ),
        "",
        f"Targets: peak RSS growth {fmt(results['rss_growth_mb'], 0)} MB over the 10 s clip's "
        f"(target ≤ {RSS_TARGET_MB:g}: {'met' if results['rss_target_met'] else 'MISSED'}); "
        f"{minutes:g}-minute clip end to end {fmt(long['wall_s']['median'], 1)} s "
        f"(target ≤ {E2E_TARGET_S:g} s: {'met' if results['e2e_target_met'] else 'MISSED'}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long clip")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "jobs.json")
    args = parser.parse_args(argv)
    setup_logging()
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentos"))
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="verity-bench-jobs-"))
    try:
        short = workdir / "clip-10s.mp4"
        short.write_bytes(make_video_clip(SHORT_S))
        long = workdir / f"clip-{args.minutes:g}min.mp4"
        loop_clip(short, long, round(args.minutes * 60 / SHORT_S))
        env = {
            "VERITY_SQLITE_PATH": str(workdir / "verity.db"),
            "VERITY_BLOB_DIR": str(workdir / "blobs"),
            "VERITY_DEV_SECRET_PATH": str(workdir / "dev-secret"),
            "VERITY_QUEUE": "local",
            "VERITY_JOB_WORKERS": "0",
            # The worker is another process: it finds jobs by scanning the store (no shared
            # in-memory queue); scanning often keeps that wait out of the job's measured time.
            "VERITY_JOB_SCAN_S": "0.2",
            "VERITY_RATE_LIMIT_JOBS_PER_MIN": "1000",
            "VERITY_DAILY_LIMIT": "100000",
        }
        api = Api(env)
        from config import Settings

        results: dict[str, Any] = {
            "started_at": now_iso(),
            "command": " ".join(["python -m bench.jobs", *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine_info(),
            "cpu_flags": cpu_flags(),
            "precision": Settings().precision,
            "minutes": args.minutes,
        }
        results["short"] = measure_jobs(api, env, short, SHORT_RUNS, workdir)
        results["long"] = measure_jobs(api, env, long, 1, workdir)
        results["inline"] = measure_inline(short, env)
        growth = results["long"]["peak_rss_mb"]["median"] - results["short"]["peak_rss_mb"]["median"]
        results["rss_growth_mb"] = growth
        results["rss_target_met"] = growth <= RSS_TARGET_MB
        results["e2e_target_met"] = results["long"]["wall_s"]["median"] <= E2E_TARGET_S
        results["duration_s"] = time.perf_counter() - started
        table = markdown(results)
        results["markdown"] = table
        write_json(args.out, results)
        sys.stdout.write(table)
        log.info("done in %.0f s; results in %s", results["duration_s"], args.out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
