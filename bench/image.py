"""Image benchmark (``make bench``): the PyTorch baseline vs the served Verity API.

Full-size ViT-base (``vit-dima806`` architecture), the same weights on every side, one run:

* baseline: ``transformers.pipeline("image-classification")``, PyTorch eager fp32, one request
  at a time with the pipeline's own preprocessing (``bench/baseline.py``, own process);
* model-only: the stored ONNX model in ONNX Runtime with the served thread settings on
  preprocessed batches of 1, 8 and 32 (``bench/model_only.py``, own process);
* Verity: ``bentoml serve service:Verity`` (one server per precision: fp32, and ``auto``, the
  default of ``make serve``, int8 where its stored agreement with fp32 meets the bar), driven
  over HTTP by closed-loop clients at concurrency 1, 8 and 32 (``bench/served.py``).

Every configuration sees the same JPEG bytes (``bench/inputs.py``). Peak RSS is the sum of RSS
over the measured process tree, sampled every 100 ms. Results go to ``bench/results/image.json``
and a Markdown table on stdout.

    python -m bench.image                      # the full run (what `make bench` does)
    python -m bench.image --scale 0.25         # a quick smoke run with fewer requests
    python -m bench.image --quick              # `make bench-quick`: baseline vs the default at c=8

Server settings come from the usual ``VERITY_*`` variables (for example
``VERITY_BATCH_MAX_LATENCY_MS``); the ones in effect are recorded with the results.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BUSY_LIMIT,
    MB,
    PROJECT_ROOT,
    RESULTS_DIR,
    RssSampler,
    child_env,
    effective_settings,
    finish_run,
    fmt,
    fmt_latency,
    fmt_other_cpu,
    loadavg,
    machine_info,
    machine_line,
    md_row,
    now_iso,
    resolved_precision,
    run_worker,
    setup_logging,
)
from bench.inputs import SIZES, digest, make_jpegs, write_jpegs
from bench.model_only import worker_args

log = logging.getLogger("bench.image")

THROUGHPUT_TARGET = 3.0  # the default (auto precision) served at concurrency >= 8 vs the baseline
OVERHEAD_TARGET = 0.10  # 1 - served / model-only at concurrency >= 8, same precision
OVERHEAD_C1_TARGET_MS = 10.0  # served p50 - model-only batch-1 p50 at concurrency 1
COLD_START_TARGET_S = 5.0  # a fresh `make serve` (precision auto): spawn -> first image answer
EQUALITY_TOLERANCE = 1e-3
WARMUP_REQUESTS = 12  # covers BentoML's adaptive-batching training phase (~11 batches)


def label(precision: str, results: dict[str, Any]) -> str:
    resolved = results["config"]["resolved"].get(precision, precision)
    return f"auto → {resolved} (the default)" if precision == "auto" else precision


def requests_for(concurrency: int, scale: float) -> int:
    """Requests per served run: enough rounds at each concurrency for a steady state."""
    return max(concurrency, math.ceil(max(48, 6 * concurrency) * scale))


def run_served(
    precision: str,
    images: list[bytes],
    concurrencies: list[int],
    scale: float,
    log_dir: Path,
    workdir: Path,
    quiet_wait_s: float,
) -> dict[str, Any]:
    from bench.served import Server, auth_env, drive, measured_run, served_model, signup

    env = child_env({"VERITY_PRECISION": precision, **auth_env(workdir)})
    model_id = effective_settings()["image_model"]
    with Server(env, log_dir / f"server-{precision}.log") as server, RssSampler(server.pid) as rss:
        ready = server.wait_ready(poll_s=0.05)
        ready_rss = rss.overall_peak
        model = served_model(ready, model_id, resolved_precision(precision, model_id))
        signup_start = time.perf_counter()
        api_key = signup(server.base_url)
        signup_s = time.perf_counter() - signup_start
        first = drive(server.base_url, images[:1], 1, 1, api_key=api_key)
        if first["errors"]:
            raise RuntimeError(f"the first request failed: {first['statuses']}; see {server.log_path}")
        cold = {
            "spawn_to_ready_s": server.ready_at - server.spawned_at,
            "signup_ms": signup_s * 1000,
            "first_request_ms": first["latency"]["p50_ms"],
            # What a user who already holds a key waits for from a cold start (no signup) ...
            "spawn_to_first_answer_s": server.ready_at - server.spawned_at + first["wall_s"],
            # ... and what the benchmark itself waited for, a signup included.
            "spawn_to_first_answer_with_signup_s": time.perf_counter() - server.spawned_at,
        }
        log.info(
            "%s cold start: ready %.2fs after spawn, signup %.0f ms, first image %.0f ms",
            precision,
            cold["spawn_to_ready_s"],
            cold["signup_ms"],
            cold["first_request_ms"],
        )
        warmup = min(WARMUP_REQUESTS, max(2, math.ceil(WARMUP_REQUESTS * scale)))
        warm = drive(server.base_url, images, warmup, 1, api_key=api_key)
        log.info("%s warm-up: %d requests, statuses %s", precision, warm["requests"], warm["statuses"])
        if warm["errors"]:
            raise RuntimeError(f"warm-up requests failed: {warm['statuses']}; see {server.log_path}")
        runs = []
        for concurrency in concurrencies:
            requests = requests_for(concurrency, scale)
            result = measured_run(
                server.base_url, rss, images, requests, concurrency, quiet_wait_s, api_key=api_key
            )
            log.info(
                "served %s c=%d: %d/%d ok in %.1fs = %.2f images/s, p50 %.0f ms, p99 %.0f ms, "
                "statuses %s, peak RSS %.0f MB, other processes' CPU %.0f%%",
                precision,
                concurrency,
                result["ok"],
                requests,
                result["wall_s"],
                result["images_per_s"],
                result["latency"].get("p50_ms", float("nan")),
                result["latency"].get("p99_ms", float("nan")),
                result["statuses"],
                result["peak_rss_mb"],
                result["cpu"]["other_cpu_share"] * 100,
            )
            runs.append(result)
        return {
            "precision": precision,
            "model": model,
            "ready_rss_mb": ready_rss / MB,
            "cold_start": cold,
            "peak_rss_mb": rss.overall_peak / MB,
            "rss_samples": rss.samples,
            "warmup": {k: warm[k] for k in ("requests", "statuses", "wall_s")},
            "runs": runs,
        }


def equality_checks(results: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {"tolerance": EQUALITY_TOLERANCE}
    onnx = {p: m["fake_probability_image0"] for p, m in results.get("model_only", {}).items()}
    baseline = results.get("baseline")
    if baseline and "fp32" in onnx:
        pipeline_p = baseline["check"]["pipeline_fake_score_image0"]
        logits = np.asarray(baseline["check"]["torch_logits_image0_project_preprocessing"], dtype=np.float64)
        from models.postprocess import fake_probabilities

        fake_index = int(results["served"].get("fp32", {}).get("model", {}).get("fake_index", 1) or 1)
        torch_p = float(fake_probabilities(logits, "logits", fake_index)[0])
        diff = abs(pipeline_p - onnx["fp32"])
        checks["baseline_vs_onnx_fp32"] = {
            "pipeline_fake_score": pipeline_p,
            "onnx_fp32_probability": onnx["fp32"],
            "abs_diff": diff,
            "torch_on_project_preprocessing": torch_p,
            "torch_vs_onnx_abs_diff": abs(torch_p - onnx["fp32"]),
            "pass": diff <= EQUALITY_TOLERANCE,
        }
    for precision, served in results.get("served", {}).items():
        if precision not in onnx:
            continue
        probs = [r["p"] for run in served["runs"] for r in run["results"] if r["index"] == 0]
        if probs:
            diff = max(abs(p - onnx[precision]) for p in probs)
            checks[f"served_vs_onnx_{precision}"] = {
                "served_responses": len(probs),
                "max_abs_diff": diff,
                "pass": diff <= EQUALITY_TOLERANCE,
            }
    return checks


def model_only_reference(results: dict[str, Any], precision: str) -> dict[int, dict[str, float]]:
    """Per batch size, the model alone: images/s and batch p50 ms, the mean of the runs before
    and after the served ones (one of them when only one ran), and how far they drifted apart."""
    runs = [
        r[precision]
        for r in (results.get("model_only", {}), results.get("model_only_after", {}))
        if precision in r
    ]
    out: dict[int, dict[str, float]] = {}
    for row in runs[0]["batches"] if runs else []:
        rows = [next(b for b in run["batches"] if b["batch_size"] == row["batch_size"]) for run in runs]
        speeds = [b["images_per_s"] for b in rows]
        out[row["batch_size"]] = {
            "images_per_s": sum(speeds) / len(speeds),
            "p50_ms": sum(b["batch_latency"]["p50_ms"] for b in rows) / len(rows),
            "drift": (max(speeds) - min(speeds)) / max(speeds),
        }
    return out


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    baseline = results.get("baseline")
    default = results.get("served", {}).get("auto")
    if baseline and default:
        ratios = {
            run["concurrency"]: run["images_per_s"] / baseline["images_per_s"]
            for run in default["runs"]
            if run["concurrency"] >= 8
        }
        if ratios:
            out["default_vs_baseline"] = {
                "ratios": ratios,
                "worst": min(ratios.values()),
                "target": THROUGHPUT_TARGET,
                "vnni": "avx512_vnni" in results["machine"].get("cpu_flags", ""),
                "pass": min(ratios.values()) >= THROUGHPUT_TARGET
                and all(run["errors"] == 0 for run in default["runs"] if run["concurrency"] >= 8),
            }
    overheads, per_request = [], []
    for precision, served in results.get("served", {}).items():
        by_batch = model_only_reference(results, precision)
        if not by_batch:
            continue
        for run in served["runs"]:
            reference = by_batch.get(run["concurrency"])
            if reference:
                run["overhead"] = 1.0 - run["images_per_s"] / reference["images_per_s"]
                if run["concurrency"] >= 8:
                    overheads.append((run["overhead"], precision, run["concurrency"]))
            if run["concurrency"] == 1 and 1 in by_batch and "p50_ms" in run["latency"]:
                run["overhead_ms"] = run["latency"]["p50_ms"] - by_batch[1]["p50_ms"]
                per_request.append((run["overhead_ms"], precision))
    failed = sum(run["errors"] for served in results.get("served", {}).values() for run in served["runs"])
    if overheads:
        worst = max(overheads)
        out["serving_overhead"] = {
            "per_run": [{"precision": p, "concurrency": c, "overhead": o} for o, p, c in overheads],
            "worst": worst[0],
            "worst_at": f"{worst[1]} c={worst[2]}",
            "target": OVERHEAD_TARGET,
            "failed_requests": failed,
            "pass": worst[0] <= OVERHEAD_TARGET and failed == 0,
        }
    cold = default.get("cold_start") if default else None
    if cold:
        out["cold_start"] = {
            **cold,
            "target": COLD_START_TARGET_S,
            "pass": cold["spawn_to_first_answer_s"] <= COLD_START_TARGET_S,
        }
    if per_request:
        worst_ms = max(per_request)
        out["overhead_c1_ms"] = {
            "per_precision": {p: ms for ms, p in per_request},
            "worst": worst_ms[0],
            "target": OVERHEAD_C1_TARGET_MS,
            "pass": worst_ms[0] <= OVERHEAD_C1_TARGET_MS,
        }
    return out


def breakdown(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Where a request's time goes at concurrency 1, medians in ms: the server's own stages
    (``timing_ms`` of the responses), the model call beyond the model's own run (transfer to the
    model service and its batching), and the request path (HTTP, authentication, quota, history,
    JSON) as the client's latency less the server's total."""
    out: dict[str, dict[str, float]] = {}
    for precision, served in results.get("served", {}).items():
        run = next((r for r in served["runs"] if r["concurrency"] == 1), None)
        model_only = results.get("model_only", {}).get(precision)
        if run is None or not run.get("server_timing_median_ms") or "p50_ms" not in run["latency"]:
            continue
        timing = run["server_timing_median_ms"]
        stages = {k: timing[k] for k in ("decode", "preprocess", "inference") if k in timing}
        one = model_only_reference(results, precision).get(1) if model_only else None
        if one is not None and "inference" in stages:
            stages["model run (model-only batch 1)"] = one["p50_ms"]
            stages["model call beyond the run"] = stages["inference"] - one["p50_ms"]
        if "total" in timing:
            stages["request path outside the pipeline"] = run["latency"]["p50_ms"] - timing["total"]
        stages["client p50"] = run["latency"]["p50_ms"]
        out[precision] = stages
    return out


def busy_phases(results: dict[str, Any]) -> dict[str, float]:
    """Measurements during which other processes took more than BUSY_LIMIT of the machine."""
    phases: dict[str, float] = {}
    if results.get("baseline"):
        phases["baseline"] = results["baseline"]["cpu"]["other_cpu_share"]
    for precision, model_only in results.get("model_only", {}).items():
        phases[f"model-only {precision}"] = model_only["cpu"]["other_cpu_share"]
    for precision, model_only in results.get("model_only_after", {}).items():
        phases[f"model-only again {precision}"] = model_only["cpu"]["other_cpu_share"]
    for precision, served in results.get("served", {}).items():
        for run in served["runs"]:
            phases[f"served {precision} c={run['concurrency']}"] = run["cpu"]["other_cpu_share"]
    return {name: share for name, share in phases.items() if share > BUSY_LIMIT}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        md_row(
            [
                "configuration",
                "concurrency",
                "images/s",
                "p50 ms",
                "p99 ms",
                "min–max ms",
                "peak RSS MB",
                "failed",
                "× baseline",
                "overhead vs model-only",
                "other processes' CPU",
            ]
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = results.get("baseline")
    base_ips = baseline["images_per_s"] if baseline else None

    def times(ips: float) -> str:
        return f"{ips / base_ips:.2f}×" if base_ips else "–"

    def latencies(lat: dict[str, float]) -> list[str]:
        return [
            fmt_latency(lat, "p50_ms"),
            fmt_latency(lat, "p99_ms"),
            f"{fmt_latency(lat, 'min_ms')}–{fmt_latency(lat, 'max_ms')}",
        ]

    if baseline:
        lines.append(
            md_row(
                [
                    "baseline: transformers pipeline, PyTorch eager fp32 "
                    f"({baseline['torch_threads']} threads)",
                    "1 (sequential)",
                    fmt(base_ips),
                    *latencies(baseline["latency"]),
                    f"{fmt(baseline['peak_rss_mb'], 0)} (process)",
                    f"0/{baseline['requests']}",
                    "1.00×",
                    "",
                    fmt_other_cpu(baseline),
                ]
            )
        )
    for precision in results["config"]["precisions"]:
        model_only = results.get("model_only", {}).get(precision)
        again = results.get("model_only_after", {}).get(precision)
        measured = (
            [
                (
                    f"model-only: ONNX Runtime {label(precision, results)}, "
                    f"{model_only['intra_op_threads']} threads (per-batch latency)",
                    model_only,
                )
            ]
            if model_only
            else []
        )
        if again:
            measured.append((f"model-only again, after the served runs: {label(precision, results)}", again))
        for title, run_result in measured:
            for row in run_result["batches"]:
                lines.append(
                    md_row(
                        [
                            title,
                            f"batch {row['batch_size']}",
                            fmt(row["images_per_s"]),
                            *latencies(row["batch_latency"]),
                            f"{fmt(run_result['peak_rss_mb'], 0)} (process)",
                            "0",
                            times(row["images_per_s"]),
                            "",
                            fmt_other_cpu(run_result),
                        ]
                    )
                )
        served = results.get("served", {}).get(precision)
        for run in served["runs"] if served else []:
            lines.append(
                md_row(
                    [
                        f"Verity served {label(precision, results)} (HTTP, adaptive batching)",
                        str(run["concurrency"]),
                        fmt(run["images_per_s"]),
                        *latencies(run["latency"]),
                        f"{fmt(run['peak_rss_mb'], 0)} (server)",
                        f"{run['errors']}/{run['requests']}",
                        times(run["images_per_s"]),
                        f"{run['overhead'] * 100:.1f}%" if "overhead" in run else "–",
                        fmt_other_cpu(run),
                    ]
                )
            )
    out = ["\n".join(lines), ""]
    if results.get("busy_phases"):
        busy = ", ".join(f"{name} ({share * 100:.0f}%)" for name, share in results["busy_phases"].items())
        out.append(
            f"- **Warning: other processes took more than {BUSY_LIMIT * 100:.0f}% of the CPU during "
            f"{busy}; those figures (and the targets built on them) are not reliable — rerun on a "
            "quiet machine.**"
        )
    tg = results.get("targets", {})
    caveat = " (not reliable: machine busy, see above)" if results.get("busy_phases") else ""
    if "default_vs_baseline" in tg:
        t = tg["default_vs_baseline"]
        detail = ", ".join(f"c={c}: {r:.2f}×" for c, r in t["ratios"].items())
        where = (
            "a machine with AVX-512 VNNI"
            if t["vnni"]
            else "a machine WITHOUT AVX-512 VNNI (the target is set for VNNI)"
        )
        out.append(
            f"- Target: the default (`make serve`, precision auto → "
            f"{results['config']['resolved'].get('auto')}) at concurrency ≥ 8 ≥ "
            f"{t['target']:.0f}× baseline on {where} — {detail} → "
            f"**{'PASS' if t['pass'] else 'MISS'}**{caveat}"
        )
    if "serving_overhead" in tg:
        t = tg["serving_overhead"]
        detail = ", ".join(
            f"{r['precision']} c={r['concurrency']}: {r['overhead'] * 100:.1f}%" for r in t["per_run"]
        )
        out.append(
            f"- Target: serving overhead at concurrency ≥ 8 (1 − served images/s at concurrency c ÷ "
            f"model-only images/s at batch c, same precision and threads) ≤ {t['target'] * 100:.0f}% — "
            f"{detail}; worst "
            f"{t['worst'] * 100:.1f}% ({t['worst_at']})"
            + (f", {t['failed_requests']} failed requests" if t["failed_requests"] else "")
            + f" → **{'PASS' if t['pass'] else 'MISS'}**{caveat}"
        )
    drifts = {
        label(p, results): ref[1]["drift"]
        for p in results["config"]["precisions"]
        if 1 in (ref := model_only_reference(results, p)) and len(results.get("model_only_after", {})) > 0
    }
    if drifts:
        out.append(
            "- The model alone measured before and after the served runs (overheads use their mean): batch-1 "
            "speed differed by "
            + ", ".join(f"{p} {d * 100:.0f}%" for p, d in drifts.items())
            + (
                " — the CPU's speed drifted during the run; overhead figures carry that uncertainty"
                if max(drifts.values()) > 0.10
                else ""
            )
        )
    if "overhead_c1_ms" in tg:
        t = tg["overhead_c1_ms"]
        detail = ", ".join(f"{label(p, results)}: {ms:.1f} ms" for p, ms in t["per_precision"].items())
        out.append(
            f"- Target: serving overhead at concurrency 1 (served p50 − model-only batch-1 p50) ≤ "
            f"{t['target']:.0f} ms — {detail} → **{'PASS' if t['pass'] else 'MISS'}**{caveat}"
        )
    if "cold_start" in tg:
        t = tg["cold_start"]
        out.append(
            f"- Target: a fresh server (`bentoml serve`, the default settings) answers its first image "
            f"≤ {t['target']:.0f} s after it is spawned — ready {t['spawn_to_ready_s']:.2f} s + first "
            f"image {t['first_request_ms']:.0f} ms = {t['spawn_to_first_answer_s']:.2f} s → "
            f"**{'PASS' if t['pass'] else 'MISS'}**{caveat} (the benchmark also signed up between the "
            f"two, {t['signup_ms']:.0f} ms of bcrypt: {t['spawn_to_first_answer_with_signup_s']:.2f} s "
            "with it)"
        )
    for precision, stages in results.get("breakdown", {}).items():
        out.append(
            f"- Where a request's time goes, {label(precision, results)} at c=1 (medians, ms): "
            + ", ".join(f"{name} {ms:.1f}" for name, ms in stages.items())
        )
    checks = results.get("checks", {})
    if "baseline_vs_onnx_fp32" in checks:
        c = checks["baseline_vs_onnx_fp32"]
        out.append(
            f"- Same weights: pipeline fake score {c['pipeline_fake_score']:.6f} vs stored fp32 ONNX "
            f"{c['onnx_fp32_probability']:.6f} on image 0: |Δ| = {c['abs_diff']:.2e} "
            f"(≤ {checks['tolerance']:g}: {'yes' if c['pass'] else 'NO'}); torch vs ONNX on the same tensor "
            f"|Δ| = {c['torch_vs_onnx_abs_diff']:.2e}"
        )
    served_checks = []
    for precision in results["config"]["precisions"]:
        check = checks.get(f"served_vs_onnx_{precision}")
        if check:
            note = "" if check["pass"] else " (over tolerance)"
            served_checks.append(f"{label(precision, results)} max |Δ| {check['max_abs_diff']:.1e}{note}")
    if served_checks:
        out.append(
            "- Served responses vs model-only ONNX (batch of one) on image 0: " + "; ".join(served_checks)
        )
    timings = []
    for precision, served in results.get("served", {}).items():
        for run in served["runs"][:1]:
            t = run.get("server_timing_median_ms", {})
            if t:
                timings.append(
                    f"{label(precision, results)} c={run['concurrency']}: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
                )
    if timings:
        out.append("- Server-side timing, median ms (`timing_ms` of the responses): " + "; ".join(timings))
    m, s = results["machine"], results["settings"]
    warmup = next((v["warmup"]["requests"] for v in results.get("served", {}).values()), 0)
    out.append(
        f"- Machine: {machine_line(m)}; "
        f"{results['finished_at']}; load average at start {results['loadavg_start']}, "
        f"end {results['loadavg_end']}"
    )
    weights = results.get("served", {}).get("fp32", {}).get("model", {}).get("weights") or (
        baseline["model"]["weights"] if baseline else "?"
    )
    out.append(
        f"- Model: {s['image_model']} full-size ViT-base, weights={weights}; server settings: ORT intra-op "
        f"threads {s['ort_intra_op_threads']}, batch max size {s['batch_max_size']}, batch max latency "
        f"{s['batch_max_latency_ms']} ms{'; overrides ' + str(s['overrides']) if s['overrides'] else ''}"
    )
    out.append(
        f"- Inputs: {len(SIZES)} JPEGs around 640×480 (sha {results['config']['inputs_sha']}); served runs: "
        f"{results['config']['requests']} requests per concurrency after {warmup} warm-up requests; "
        "p50/p99/min/max from one run; peak RSS = sum of RSS over the process tree, sampled every 100 ms"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--precisions", default="fp32,auto", help="auto: the default of `make serve` (int8 where it agrees)"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="`make bench-quick` (a few minutes): the baseline vs the default served at concurrency 8",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--baseline-requests", type=int, default=32)
    parser.add_argument("--skip", default="", help="comma list of baseline,model-only,served")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each measurement wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "image.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.precisions, args.concurrency, args.skip = "auto", "8", "model-only"
        args.scale, args.baseline_requests, args.quiet_wait = 0.5, 16, 30.0
        if args.out == RESULTS_DIR / "image.json":  # keep the full run's results
            args.out = RESULTS_DIR / "image-quick.json"
    setup_logging()
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentos"))
    precisions = [p for p in args.precisions.split(",") if p]
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    skip = set(filter(None, args.skip.split(",")))
    images = make_jpegs()
    results: dict[str, Any] = {
        "started_at": now_iso(),
        "command": " ".join(["python -m bench.image", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "settings": effective_settings(),
        "loadavg_start": loadavg(),
        "config": {
            "precisions": precisions,
            "resolved": {p: resolved_precision(p, effective_settings()["image_model"]) for p in precisions},
            "concurrency": concurrencies,
            "requests": {c: requests_for(c, args.scale) for c in concurrencies},
            "baseline_requests": max(1, math.ceil(args.baseline_requests * args.scale)),
            "inputs": [f"{w}x{h}" for w, h in SIZES],
            "inputs_sha": digest(images),
        },
        "model_only": {},
        "model_only_after": {},
        "served": {},
    }
    log.info("machine %s; load average %s", results["machine"], results["loadavg_start"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verity-bench-") as tmp:
        image_dir = Path(tmp) / "images"
        write_jpegs(images, image_dir)
        if "baseline" not in skip:
            results["baseline"] = run_worker(
                "bench.baseline",
                [
                    "--images",
                    str(image_dir),
                    "--requests",
                    str(results["config"]["baseline_requests"]),
                    "--model-id",
                    results["settings"]["image_model"],
                ],
                Path(tmp) / "baseline.json",
                args.quiet_wait,
            )

        def model_only(precision: str, when: str) -> dict[str, Any]:
            return run_worker(
                "bench.model_only",
                worker_args(image_dir, results["config"]["resolved"][precision], concurrencies, args.scale),
                Path(tmp) / f"model-only-{when}-{precision}.json",
                args.quiet_wait,
            )

        if "model-only" not in skip:
            for precision in precisions:
                results["model_only"][precision] = model_only(precision, "before")
        if "served" not in skip:
            for precision in precisions:
                results["served"][precision] = run_served(
                    precision,
                    images,
                    concurrencies,
                    args.scale,
                    args.out.parent,
                    Path(tmp) / f"server-{precision}",
                    args.quiet_wait,
                )
        # The model alone again: this CPU's speed drifts over minutes (int8 batch-1 runs measured
        # 63 ms and 91 ms on the same machine within ten minutes), so the overhead is taken
        # against both measurements, and their difference is reported.
        if "model-only" not in skip and "served" not in skip:
            for precision in precisions:
                results["model_only_after"][precision] = model_only(precision, "after")
    results["checks"] = equality_checks(results)
    results["targets"] = targets(results)
    results["breakdown"] = breakdown(results)
    results["busy_phases"] = busy_phases(results)
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
