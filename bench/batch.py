"""Batch runner benchmark (``make bench``): ``python -m batch`` vs model-only and the served API.

One run, on the models ``make serve`` serves (the full-size dev exports in ``./bentos``), for the
served image model at each stored precision (fp32 and int8):

* images: 200 mixed JPEGs (``bench/inputs.py``: sizes from 320x240 to 2048x1536, every 4th with
  a face) written to a folder;
  - batch: ``python -m batch --input DIR --output OUT`` as a subprocess with
    ``VERITY_PRECISION`` set, a fresh output each of 3 reps; images/s is the summary's
    ``this_run.items_per_s`` (items ÷ ``run_s``: opening the models is ``startup_s``, reported
    apart), with the process's wall time and peak RSS (the sum over its process tree, sampled
    every 100 ms); median and min–max over the reps;
  - model-only: ``bench/model_only.py`` (the stored ONNX model in ONNX Runtime with the served
    thread settings on preprocessed batches of 1, 8 and 32, own process);
  - served: ``bentoml serve service:Verity`` as ``bench/image.py`` starts it, driven by
    ``bench/served.py``'s closed-loop clients at concurrency 8 over the same JPEG bytes (one
    pass over the folder after the image bench's warm-up).
  Targets: batch images/s ≥ 0.9 × model-only (its best batch size) and ≥ 1.3 × served at
  concurrency 8, same precision.
* clips: 20 short clips (2, 3 and 4 s; ``bench/inputs.py``'s 1280x720 30 fps H.264 clip of one
  moving face) at the video bench's precision, sampled at 1 fps as ``bench/video.py`` posts
  them: through ``python -m batch`` (a JSONL manifest with ``options.fps``; clips/s and
  frames/s, same reps) and served ``POST /v1/detect/video?fps=1`` at concurrency 8.

The runner is measured only through its command line, its results file and its summary. Results
go to ``bench/results/batch.json`` and a Markdown table on stdout.

    python -m bench.batch                                  # the full run (what `make bench` does)
    python -m bench.batch --scale 0.1                      # a quick smoke run: fewer items and reps
    python -m bench.batch --skip served,model-only,clips   # the batch runner's images only
    python -m bench.batch --concurrency 8                  # passed to python -m batch

Server and runner settings come from the usual ``VERITY_*`` variables; those in effect are
recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BUSY_LIMIT,
    MB,
    PROJECT_ROOT,
    RESULTS_DIR,
    RssSampler,
    child_env,
    cpu_flags,
    effective_settings,
    finish_run,
    fmt,
    fmt_other_cpu,
    loadavg,
    machine_info,
    md_row,
    now_iso,
    run_worker,
    setup_logging,
    wait_for_quiet,
)
from bench.inputs import (
    FACE_EVERY,
    MIXED_SIZES,
    VIDEO_FORMAT,
    digest,
    make_mixed_jpegs,
    make_video_clip,
    write_jpegs,
)
from bench.model_only import worker_args

log = logging.getLogger("bench.batch")

IMAGES = 200
CLIPS = 20
CLIP_DURATIONS = (2.0, 3.0, 4.0)  # seconds, in turn
REPS = 3
SERVED_CONCURRENCY = 8
MODEL_ONLY_BATCH_SIZES = (1, 8, 32)
MODEL_ONLY_TARGET = 0.9  # batch images/s ≥ this × model-only (best batch size)
SERVED_TARGET = 1.3  # batch images/s ≥ this × served at concurrency 8
BATCH_TIMEOUT_S = 3600.0
SKIPPABLE = ("served", "model-only", "clips")


# --- inputs --------------------------------------------------------------------------------------


def clip_durations(count: int) -> list[float]:
    return [CLIP_DURATIONS[index % len(CLIP_DURATIONS)] for index in range(count)]


def write_clips(count: int, directory: Path, sample_fps: float) -> tuple[Path, list[bytes]]:
    """``count`` clips and a manifest naming them with ``options.fps`` (the served run's fps);
    returns the manifest and the clips' bytes (in manifest order)."""
    directory.mkdir(parents=True, exist_ok=True)
    clips, lines = [], []
    started = time.perf_counter()
    for index, duration in enumerate(clip_durations(count)):
        data = make_video_clip(duration, seed=index)
        name = f"clip{index:03d}-{duration:g}s.mp4"
        (directory / name).write_bytes(data)
        clips.append(data)
        entry = {"id": name, "path": name, "modality": "video", "options": {"fps": sample_fps}}
        lines.append(json.dumps(entry))
    manifest = directory / "clips.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    log.info(
        "made %d clips (%.1f MB) in %.1fs", count, sum(map(len, clips)) / MB, time.perf_counter() - started
    )
    return manifest, clips


# --- the batch runner ----------------------------------------------------------------------------


def batch_command(input_location: Path, output: Path, concurrency: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "batch", "--input", str(input_location), "--output", str(output)]
    return cmd if concurrency is None else [*cmd, "--concurrency", str(concurrency)]


def shown_command(precision: str, cmd: list[str]) -> str:
    """The command as a person types it (the interpreter as ``python``)."""
    return f"VERITY_PRECISION={precision} " + shlex.join(["python", *cmd[1:]])


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_batch_once(
    precision: str,
    input_location: Path,
    workdir: Path,
    concurrency: int | None,
    quiet_wait_s: float,
) -> dict[str, Any]:
    """One ``python -m batch`` process into a fresh output folder: its summary's figures, its
    wall time and the peak RSS of its process tree, and what its results say they ran."""
    workdir.mkdir(parents=True)
    output = workdir / "results.jsonl"
    cmd = batch_command(input_location, output, concurrency)
    wait_for_quiet(quiet_wait_s, BUSY_LIMIT)
    load_before = loadavg()
    log_path = workdir / "batch.log"
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=child_env({"VERITY_PRECISION": precision}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            with RssSampler(proc.pid) as sampler:
                rc = proc.wait(timeout=BATCH_TIMEOUT_S)
                wall = time.perf_counter() - started
                phase = sampler.end_phase()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"python -m batch exited with {rc}:\n{tail}")
    summary = json.loads(output.with_name("results.summary.json").read_text())
    lines = read_results(output)
    this_run = summary["this_run"]
    models = sorted(
        {
            f"{line['result']['model'].get('id')}:{line['result']['model'].get('precision')}"
            for line in lines
            if line.get("result") and line["result"].get("model")
        }
    )
    return {
        "command": shown_command(precision, cmd),
        "status": summary["status"],
        "items": summary["items"],
        "answered": this_run["answered"],
        "errors": summary["errors"],
        "errors_by_code": summary["errors_by_code"],
        "by_modality": summary["by_modality"],
        "items_per_s": this_run["items_per_s"],
        "startup_s": this_run["startup_s"],
        "run_s": this_run["run_s"],
        "process_wall_s": wall,
        "peak_rss_mb": sampler.overall_peak / MB,
        "frames_analyzed": sum(
            (line.get("result") or {}).get("media", {}).get("frames_analyzed", 0) for line in lines
        ),
        "models": models,
        "cpu": phase,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_batch(
    label: str,
    precision: str,
    input_location: Path,
    expected_items: int,
    reps: int,
    workdir: Path,
    concurrency: int | None,
    quiet_wait_s: float,
) -> dict[str, Any]:
    runs = []
    for rep in range(reps):
        run = run_batch_once(
            precision, input_location, workdir / f"{label}-{precision}-{rep}", concurrency, quiet_wait_s
        )
        if run["items"] != expected_items or run["answered"] != expected_items:
            raise RuntimeError(
                f"python -m batch saw {run['items']} items and answered {run['answered']}, "
                f"expected {expected_items}"
            )
        wrong = [m for m in run["models"] if not m.endswith(f":{precision}")]
        if wrong:
            raise RuntimeError(f"VERITY_PRECISION={precision} but the results name {wrong}")
        log.info(
            "batch %s %s rep %d: %d items (%d errors) in %.1fs = %.2f items/s; startup %.1fs, "
            "process wall %.1fs, peak RSS %.0f MB, other processes' CPU %.0f%%",
            label,
            precision,
            rep + 1,
            run["answered"],
            run["errors"],
            run["run_s"],
            run["items_per_s"] or 0.0,
            run["startup_s"],
            run["process_wall_s"],
            run["peak_rss_mb"],
            run["cpu"]["other_cpu_share"] * 100,
        )
        runs.append(run)
    out: dict[str, Any] = {
        "precision": precision,
        "concurrency": concurrency,
        "command": runs[0]["command"],
        "reps": reps,
        "items": expected_items,
        "errors": sum(run["errors"] for run in runs),
        "items_per_s": spread([run["items_per_s"] or 0.0 for run in runs]),
        "run_s": spread([run["run_s"] for run in runs]),
        "startup_s": spread([run["startup_s"] for run in runs]),
        "process_wall_s": spread([run["process_wall_s"] for run in runs]),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "models": runs[0]["models"],
        "runs": runs,
    }
    if any(run["frames_analyzed"] for run in runs):
        out["frames_per_s"] = spread(
            [run["frames_analyzed"] / run["run_s"] for run in runs if run["run_s"] > 0]
        )
        out["frames_analyzed"] = runs[0]["frames_analyzed"]
    # The worst phase decides whether the median can be trusted.
    out["cpu"] = max((run["cpu"] for run in runs), key=lambda cpu: cpu["other_cpu_share"])
    return out


# --- the served API ------------------------------------------------------------------------------


def run_served(
    precision: str,
    images: list[bytes] | None,
    clips: list[bytes] | None,
    log_dir: Path,
    workdir: Path,
    quiet_wait_s: float,
) -> dict[str, Any]:
    """One ``bentoml serve`` at ``precision`` (as ``bench/image.py`` starts it): the images, then
    the clips, once each by ``SERVED_CONCURRENCY`` closed-loop clients."""
    from bench.image import WARMUP_REQUESTS
    from bench.served import VIDEO, Server, auth_env, drive, measured_run, served_model, signup

    env = child_env({"VERITY_PRECISION": precision, **auth_env(workdir)})
    out: dict[str, Any] = {"precision": precision}
    with Server(env, log_dir / f"server-batch-{precision}.log") as server, RssSampler(server.pid) as rss:
        ready = server.wait_ready()
        out["ready_rss_mb"] = rss.overall_peak / MB
        api_key = signup(server.base_url)
        if images:
            out["model"] = served_model(ready, effective_settings()["image_model"], precision)
            warmup = min(WARMUP_REQUESTS, len(images))
            warm = drive(server.base_url, images, warmup, 1, api_key=api_key)
            if warm["errors"]:
                raise RuntimeError(f"warm-up requests failed: {warm['statuses']}; see {server.log_path}")
            run = measured_run(
                server.base_url, rss, images, len(images), SERVED_CONCURRENCY, quiet_wait_s, api_key=api_key
            )
            run["warmup_requests"] = warmup
            log.info(
                "served %s images c=%d: %d/%d ok in %.1fs = %.2f images/s, statuses %s, peak RSS %.0f MB",
                precision,
                SERVED_CONCURRENCY,
                run["ok"],
                run["requests"],
                run["wall_s"],
                run["images_per_s"],
                run["statuses"],
                run["peak_rss_mb"],
            )
            out["images"] = _trimmed(run)
        if clips:
            video_model = os.environ.get("VERITY_VIDEO_MODEL", "cnn-lstm")
            out["video_model"] = served_model(ready, video_model, precision)
            warm = drive(server.base_url, clips[:1], 1, 1, endpoint=VIDEO, api_key=api_key)
            if warm["errors"]:
                raise RuntimeError(f"video warm-up failed: {warm['statuses']}; see {server.log_path}")
            run = measured_run(
                server.base_url,
                rss,
                clips,
                len(clips),
                SERVED_CONCURRENCY,
                quiet_wait_s,
                endpoint=VIDEO,
                api_key=api_key,
            )
            run["frames_analyzed"] = sum(r.get("frames_analyzed", 0) for r in run["results"])
            run["frames_per_s"] = run["frames_analyzed"] / run["wall_s"] if run["wall_s"] > 0 else 0.0
            log.info(
                "served %s clips c=%d: %d/%d ok in %.1fs = %.3f clips/s, %.1f frames/s, statuses %s",
                precision,
                SERVED_CONCURRENCY,
                run["ok"],
                run["requests"],
                run["wall_s"],
                run["clips_per_s"],
                run["frames_per_s"],
                run["statuses"],
            )
            out["clips"] = _trimmed(run)
        out["peak_rss_mb"] = rss.overall_peak / MB
    return out


def _trimmed(run: dict[str, Any]) -> dict[str, Any]:
    """A served run without its per-request lists (thousands of numbers in the JSON)."""
    return {k: v for k, v in run.items() if k not in ("latencies_s", "results")}


# --- targets and the table -----------------------------------------------------------------------


def best_model_only(model_only: dict[str, Any]) -> dict[str, Any]:
    return max(model_only["batches"], key=lambda row: row["images_per_s"])


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision, part in results["images"].items():
        batch = part.get("batch")
        if not batch:
            continue
        ips = batch["items_per_s"]["median"]
        clean = batch["errors"] == 0
        model_only = part.get("model_only")
        if model_only:
            best = best_model_only(model_only)
            ratio = ips / best["images_per_s"]
            out[f"{precision}_vs_model_only"] = {
                "batch_images_per_s": ips,
                "model_only_images_per_s": best["images_per_s"],
                "model_only_batch_size": best["batch_size"],
                "ratio": ratio,
                "target": MODEL_ONLY_TARGET,
                "pass": clean and ratio >= MODEL_ONLY_TARGET,
            }
        served = (part.get("served") or {}).get("images")
        if served:
            ratio = ips / served["images_per_s"] if served["images_per_s"] > 0 else math.inf
            out[f"{precision}_vs_served_c{SERVED_CONCURRENCY}"] = {
                "batch_images_per_s": ips,
                "served_images_per_s": served["images_per_s"],
                "served_failed": served["errors"],
                "ratio": ratio,
                "target": SERVED_TARGET,
                "pass": clean and served["errors"] == 0 and ratio >= SERVED_TARGET,
            }
    return out


def busy_phases(results: dict[str, Any]) -> dict[str, float]:
    phases: dict[str, float] = {}
    for precision, part in results["images"].items():
        if part.get("batch"):
            phases[f"batch images {precision}"] = part["batch"]["cpu"]["other_cpu_share"]
        if part.get("model_only"):
            phases[f"model-only {precision}"] = part["model_only"]["cpu"]["other_cpu_share"]
        if (part.get("served") or {}).get("images"):
            phases[f"served images {precision}"] = part["served"]["images"]["cpu"]["other_cpu_share"]
    clips = results.get("clips") or {}
    if clips.get("batch"):
        phases["batch clips"] = clips["batch"]["cpu"]["other_cpu_share"]
    if clips.get("served"):
        phases["served clips"] = clips["served"]["cpu"]["other_cpu_share"]
    return {name: share for name, share in phases.items() if share > BUSY_LIMIT}


def span(stats: dict[str, float], digits: int = 2) -> str:
    if stats["min"] == stats["max"]:
        return fmt(stats["median"], digits)
    return f"{fmt(stats['median'], digits)} ({fmt(stats['min'], digits)}–{fmt(stats['max'], digits)})"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def markdown(results: dict[str, Any]) -> str:
    m, cfg = results["machine"], results["config"]
    lines = [
        f"Machine: {m['cpu_model']} ({results['cpu_flags']}), {m['nproc']} cores, {m['memory_gb']} GB RAM; "
        f"{results['started_at'][:10]}; load average at start {results['loadavg_start']}, "
        f"end {results['loadavg_end']}.",
        f"Command: `{results['command']}`. The runner, as run (first rep of each part; temporary folders):",
        "",
        *(f"- `{command}`" for command in results["batch_commands"]),
        "",
        md_row(
            [
                "configuration",
                "precision",
                "items",
                "items/s (median, min–max)",
                "frames/s",
                "run s",
                "startup s",
                "wall s",
                "peak RSS MB",
                "failed",
                "other processes' CPU",
            ]
        ),
        md_row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    runner = f"concurrency {cfg['concurrency']}" if cfg["concurrency"] else "default concurrency"

    def batch_row(name: str, batch: dict[str, Any]) -> str:
        return md_row(
            [
                f"{name}: `python -m batch` ({runner}), ×{batch['reps']}",
                batch["precision"],
                str(batch["items"]),
                span(batch["items_per_s"]),
                span(batch["frames_per_s"], 1) if "frames_per_s" in batch else "–",
                span(batch["run_s"], 1),
                span(batch["startup_s"], 1),
                span(batch["process_wall_s"], 1),
                f"{fmt(batch['peak_rss_mb'], 0)} (process tree)",
                f"{batch['errors']}/{batch['items'] * batch['reps']}",
                fmt_other_cpu(batch),
            ]
        )

    def served_row(name: str, precision: str, run: dict[str, Any], rate: str) -> str:
        return md_row(
            [
                f"{name}: served HTTP, concurrency {run['concurrency']}",
                precision,
                str(run["requests"]),
                fmt(run[rate], 3 if rate == "clips_per_s" else 2),
                fmt(run["frames_per_s"], 1) if "frames_per_s" in run else "–",
                fmt(run["wall_s"], 1),
                "–",
                "–",
                f"{fmt(run['peak_rss_mb'], 0)} (server tree, this run)",
                f"{run['errors']}/{run['requests']}",
                fmt_other_cpu(run),
            ]
        )

    for precision, part in results["images"].items():
        if part.get("batch"):
            lines.append(batch_row("images", part["batch"]))
        model_only = part.get("model_only")
        if model_only:
            best = best_model_only(model_only)
            shown = [row for row in model_only["batches"] if row["batch_size"] == 1 or row is best]
            for row in shown:
                tag = " (best)" if row is best else ""
                lines.append(
                    md_row(
                        [
                            f"images: model-only ONNX Runtime, {model_only['intra_op_threads']} threads, "
                            f"batch {row['batch_size']}{tag}",
                            precision,
                            str(row["reps"] * row["batch_size"]),
                            fmt(row["images_per_s"]),
                            "–",
                            "–",
                            "–",
                            "–",
                            f"{fmt(model_only['peak_rss_mb'], 0)} (process)",
                            "0",
                            fmt_other_cpu(model_only),
                        ]
                    )
                )
        served = part.get("served") or {}
        if served.get("images"):
            lines.append(served_row("images", precision, served["images"], "images_per_s"))
    clips = results.get("clips") or {}
    if clips.get("batch"):
        lines.append(batch_row("clips", clips["batch"]))
    if clips.get("served"):
        served = clips["served"]
        lines.append(served_row("clips", served["precision"], served, "clips_per_s"))
    lines.append("")
    if results.get("busy_phases"):
        busy = ", ".join(f"{name} ({share * 100:.0f}%)" for name, share in results["busy_phases"].items())
        lines.append(
            f"- **Warning: other processes took more than {BUSY_LIMIT * 100:.0f}% of the CPU during {busy}; "
            "those figures (and the targets built on them) are not reliable — rerun on a quiet machine.**"
        )
    caveat = " (not reliable: machine busy, see above)" if results.get("busy_phases") else ""
    tg = results["targets"]
    for precision in results["images"]:
        t = tg.get(f"{precision}_vs_model_only")
        if t:
            lines.append(
                f"- Target ({precision}): batch images/s ≥ {t['target']:g} × model-only (best batch size, "
                f"{t['model_only_batch_size']}) — {fmt(t['batch_images_per_s'])} vs "
                f"{fmt(t['model_only_images_per_s'])} = {t['ratio']:.2f}× → **{verdict(t['pass'])}**{caveat}"
            )
        t = tg.get(f"{precision}_vs_served_c{SERVED_CONCURRENCY}")
        if t:
            lines.append(
                f"- Target ({precision}): batch images/s ≥ {t['target']:g} × served at concurrency "
                f"{SERVED_CONCURRENCY} — {fmt(t['batch_images_per_s'])} vs {fmt(t['served_images_per_s'])} = "
                f"{t['ratio']:.2f}× → **{verdict(t['pass'])}**{caveat}"
            )
    s = results["settings"]
    lines.append(
        f"- Images: {cfg['images']} JPEGs (quality 90, {len(MIXED_SIZES)} sizes from 320×240 to 2048×1536, "
        f"every {FACE_EVERY}th with a face; sha {cfg['inputs_sha']}); model {s['image_model']} (full-size "
        f"ViT-base, dev weights); ORT intra-op threads {s['ort_intra_op_threads']}, batch max size "
        f"{s['batch_max_size']}" + (f"; overrides {s['overrides']}" if s["overrides"] else "")
    )
    if clips:
        lines.append(
            f"- Clips: {cfg['clips']} × {VIDEO_FORMAT}, {'/'.join(f'{d:g}' for d in CLIP_DURATIONS)} s in "
            f"turn ({cfg['clip_seconds']:g} s in all), sampled at {cfg['sample_fps']:g} fps (manifest "
            "`options.fps`; the served runs post `?fps=1`); frames/s = frames analysed ÷ run time"
        )
    lines.append(
        "- Batch: images/s = items ÷ `run_s` of the runner's summary (model loading is `startup_s`); wall = "
        "the whole process; a fresh output each rep. Served: one pass over the same bytes after "
        "warm-up. Peak RSS = sum over the process tree, sampled every 100 ms"
    )
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def stored_precisions(wanted: list[str]) -> list[str]:
    from config.settings import Settings
    from models.store import find_stored

    model = Settings().image_model
    found = [p for p in wanted if find_stored(model, p) is not None]
    for precision in sorted(set(wanted) - set(found)):
        log.warning("%s %s is not stored: not measured (run `make models`)", model, precision)
    if not found:
        raise SystemExit(f"none of {wanted} of {model} is stored; run `make models` first")
    return found


def video_precision() -> str:
    """The video bench's precision when the store holds that pair, else fp32."""
    from bench.video import PRECISION
    from models.store import find_video_pair

    return (
        PRECISION if find_video_pair(os.environ.get("VERITY_VIDEO_MODEL", "cnn-lstm"), PRECISION) else "fp32"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--precisions", default="fp32,int8", help="those stored are measured")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the item counts and reps")
    parser.add_argument("--skip", default="", help=f"comma list of {','.join(SKIPPABLE)}")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="passed to python -m batch (default: the runner's)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each measurement wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "batch.json")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SKIPPABLE):
        parser.error(f"--skip: unknown {sorted(skip - set(SKIPPABLE))}; choose from {','.join(SKIPPABLE)}")
    if args.scale <= 0:
        parser.error("--scale must be more than 0")
    setup_logging()
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentos"))
    from bench.video import SAMPLE_FPS

    precisions = stored_precisions([p for p in args.precisions.split(",") if p])
    n_images = max(8, round(IMAGES * args.scale))
    n_clips = max(2, round(CLIPS * args.scale))
    reps = max(1, min(REPS, round(REPS * args.scale)))
    started = time.perf_counter()
    mark = time.perf_counter()
    images = make_mixed_jpegs(n_images)
    log.info(
        "made %d JPEGs (%.1f MB) in %.1fs", n_images, sum(map(len, images)) / MB, time.perf_counter() - mark
    )
    clip_precision = video_precision() if "clips" not in skip else None
    results: dict[str, Any] = {
        "started_at": now_iso(),
        "command": " ".join(["python -m bench.batch", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "cpu_flags": cpu_flags(),
        "settings": effective_settings(),
        "loadavg_start": loadavg(),
        "config": {
            "precisions": precisions,
            "images": n_images,
            "inputs_sha": digest(images),
            "sizes": [f"{w}x{h}" for w, h in MIXED_SIZES],
            "face_every": FACE_EVERY,
            "clips": 0 if "clips" in skip else n_clips,
            "clip_seconds": sum(clip_durations(n_clips)),
            "clip_precision": clip_precision,
            "sample_fps": SAMPLE_FPS,
            "reps": reps,
            "concurrency": args.concurrency,
            "served_concurrency": SERVED_CONCURRENCY,
            "model_only_batch_sizes": list(MODEL_ONLY_BATCH_SIZES),
            "skip": sorted(skip),
        },
        "images": {},
        "clips": {},
    }
    log.info("machine %s; load average %s", results["machine"], results["loadavg_start"])
    commands = []
    with tempfile.TemporaryDirectory(prefix="verity-bench-batch-") as tmp:
        work = Path(tmp)
        image_dir = work / "images"
        write_jpegs(images, image_dir)
        manifest, clips = (None, None)
        if clip_precision:
            manifest, clips = write_clips(n_clips, work / "clips", SAMPLE_FPS)
        for precision in precisions:
            part: dict[str, Any] = {}
            results["images"][precision] = part
            part["batch"] = run_batch(
                "images",
                precision,
                image_dir,
                n_images,
                reps,
                work / "runs",
                args.concurrency,
                args.quiet_wait,
            )
            commands.append(part["batch"]["command"])
            if "model-only" not in skip:
                part["model_only"] = run_worker(
                    "bench.model_only",
                    worker_args(image_dir, precision, MODEL_ONLY_BATCH_SIZES, args.scale),
                    work / f"model-only-{precision}.json",
                    args.quiet_wait,
                )
            if "served" not in skip:
                served = run_served(
                    precision,
                    images,
                    clips if precision == clip_precision else None,
                    args.out.parent,
                    work / f"server-{precision}",
                    args.quiet_wait,
                )
                part["served"] = served
                if "clips" in served:
                    results["clips"]["served"] = {"precision": precision, **served.pop("clips")}
        if clip_precision and manifest is not None:
            results["clips"]["batch"] = run_batch(
                "clips",
                clip_precision,
                manifest,
                n_clips,
                reps,
                work / "runs",
                args.concurrency,
                args.quiet_wait,
            )
            commands.append(results["clips"]["batch"]["command"])
            if "served" not in skip and "served" not in results["clips"]:
                served = run_served(
                    clip_precision, None, clips, args.out.parent, work / "server-clips", args.quiet_wait
                )
                results["clips"]["served"] = {
                    "precision": clip_precision,
                    "server_peak_rss_mb": served["peak_rss_mb"],
                    **served["clips"],
                }
    results["batch_commands"] = commands  # the first rep's; the temporary folders are gone now
    results["targets"] = targets(results)
    results["busy_phases"] = busy_phases(results)
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
