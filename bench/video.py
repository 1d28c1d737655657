"""Video benchmark (issue 5, ``make bench``): the TensorFlow baseline vs the served Verity API.

One run, a 10 s and a 60 s 1280x720 30 fps H.264 clip of one moving face (``bench/inputs.py``;
the same MP4 bytes everywhere), sampled at 1 fps. The video model is the full-size CNN-LSTM pair
(EfficientNetB0 encoder + LSTM head, ``cnn-lstm``), the same weights on both sides:

* baseline: ``cv2.VideoCapture`` reads every frame, keeps one per second; the ``mtcnn`` package
  (TensorFlow) finds the faces of each kept full-resolution frame; the largest is cropped and
  the Keras encoder runs per crop, eager; the Keras LSTM head scores the windows; one clip at a
  time (``bench/video_baseline.py``, own process);
* Verity: one fresh ``bentoml serve service:Verity`` at ``VERITY_PRECISION=int8`` ("int8 where
  available": what the int8 exports hold is read from the store and reported), driven over HTTP
  (``POST /v1/detect/video?fps=1``, multipart, with an API key from ``/v1/auth/signup``) by
  closed-loop clients at concurrency 1 and 4 (``bench/served.py``). Verity decodes only the
  sampled frames, runs the ONNX MTCNN cascade on them downscaled (``VERITY_FACE_MAX_SIDE``) and
  batches the encoder across frames and requests.

Also measured: the served face detector in process (``faces.mtcnn.FaceDetector`` from the store,
no HTTP), on the 1 fps frames of the 10 s clip as the server decodes them, one frame per call.
Per clip: wall time (p50/p99), clips/s, frames/s (sampled frames analysed per second of wall
time), face detection per frame (served: ``timing_ms.faces`` ÷ ``media.frames_analyzed``), and
peak RSS (the sum over the measured process tree, sampled every 100 ms). Results go to
``bench/results/video.json`` and a Markdown table on stdout.

    python -m bench.video                    # the full run (what `make bench` does)
    python -m bench.video --scale 0.25       # a quick smoke run with fewer requests

Server settings come from the usual ``VERITY_*`` variables; the ones in effect are recorded.
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
    fmt_other_cpu,
    latency_stats,
    loadavg,
    machine_info,
    machine_line,
    md_row,
    now_iso,
    run_worker,
    setup_logging,
    wait_for_quiet,
)
from bench.inputs import VIDEO_FORMAT, make_video_clip, video_clip_name

log = logging.getLogger("bench.video")

DURATIONS = "10,60"
PRECISION = "int8"
SAMPLE_FPS = 1.0  # bench.served.VIDEO posts ?fps=1
FACE_TARGET_MS = 100.0  # face detection per 720p frame
E2E_TARGET_S = 3.0  # the 10 s clip end to end at concurrency 1
E2E_TARGET_CLIP_S = 10.0
THROUGHPUT_TARGET = 5.0  # served clips/s vs the baseline's, same clip
COLD_POLL_S = 0.05
WARMUP_REQUESTS = 1  # after the cold-start request, before the measured runs


def requests_for(concurrency: int, duration_s: float, scale: float) -> int:
    """Requests per served run: about 60 s of video at concurrency 1 (at least two requests),
    about 30 s per client above (at least one each): 6 and 2 clips at c=1, 12 and 4 at c=4."""
    rounds = math.ceil(scale * (60.0 if concurrency == 1 else 30.0) / duration_s)
    return concurrency * max(rounds, 2 if concurrency == 1 else 1)


def baseline_requests(duration_s: float, scale: float) -> int:
    """Sequential baseline runs per clip: about 30 s of video, at least one (a baseline minute
    of video costs minutes)."""
    return max(1, math.ceil(scale * 30.0 / duration_s))


def _served_figures(result: dict[str, Any]) -> None:
    """frames/s and face detection per frame of a run, in place."""
    answered = [r for r in result["results"] if "frames_analyzed" in r]
    frames = sum(r["frames_analyzed"] for r in answered)
    result["frames_analyzed"] = frames
    result["frames_per_s"] = frames / result["wall_s"] if result["wall_s"] > 0 else 0.0
    per_frame = [
        r["timing_ms"]["faces"] / r["frames_analyzed"]
        for r in answered
        if r["frames_analyzed"] and "faces" in r.get("timing_ms", {})
    ]
    result["faces_ms_per_frame"] = latency_stats([ms / 1000 for ms in per_frame])
    result["frames_per_clip"] = answered[0]["frames_analyzed"] if answered else None
    result["frames_with_face_per_clip"] = answered[0]["frames_with_face"] if answered else None


def stored_int8(video_model: str) -> dict[str, Any]:
    """What the store says about the int8 video pair: tags, and the integer nodes its graphs hold
    (an encoder with none runs exactly its fp32 convolutions)."""
    from models.store import find_video_pair

    pair = find_video_pair(video_model, PRECISION)
    if pair is None:
        return {"stored": False}
    out: dict[str, Any] = {"stored": True}
    for role, stored in zip(("encoder", "head"), pair, strict=True):
        meta = stored.metadata
        out[role] = {
            "tag": stored.tag,
            "int8_agreement": meta.get("int8_agreement"),
            **{k: v for k, v in meta.items() if "quantized" in k or k.startswith("int8_")},
        }
    return out


def run_faces_inprocess(clip: bytes, quiet_wait_s: float) -> dict[str, Any]:
    """The served face detector without HTTP: the 1 fps frames of ``clip`` decoded as the server
    decodes them, one ``detect`` call per frame, then all of them in one call."""
    from config import get_settings
    from detect.hosting import face_detector
    from media.video import decode_video
    from models.store import find_stored

    settings = get_settings()
    decoded = decode_video(
        clip,
        max_bytes=len(clip) + 1,
        max_pixels=settings.max_video_pixels,
        max_duration_s=settings.max_video_duration_s,
        fps=SAMPLE_FPS,
        max_frames=None,
        timeout_s=settings.video_decode_timeout_s,
        default_max_frames=settings.video_max_frames,
        max_frames_cap=settings.video_max_frames_cap,
        max_side=settings.video_frame_max_side,
        isolated=False,
    )
    frames = [f.rgb for f in decoded.frames]
    detector = face_detector(settings, find_stored(settings.face_model, "fp32"))
    detector.detect(frames[:1])  # first call: session warm-up
    wait_for_quiet(quiet_wait_s, BUSY_LIMIT)
    per_frame, found = [], 0
    for frame in frames:
        start = time.perf_counter()
        faces = detector.detect([frame])[0]
        per_frame.append(time.perf_counter() - start)
        found += bool(faces)
    start = time.perf_counter()
    detector.detect(frames)
    batch_s = time.perf_counter() - start
    result = {
        "frames": len(frames),
        "frame_size": list(frames[0].shape[1::-1]) if frames else None,
        "frames_with_face": found,
        "max_side": detector.max_side,
        "intra_op_threads": settings.intra_op_threads,
        "per_frame_ms": latency_stats(per_frame),
        "batch_ms_per_frame": batch_s * 1000 / max(len(frames), 1),
    }
    log.info(
        "in-process face detection on %d frames %s: p50 %.1f ms/frame one at a time, %.1f ms/frame "
        "in one call; %d with a face",
        len(frames),
        result["frame_size"],
        result["per_frame_ms"].get("p50_ms", float("nan")),
        result["batch_ms_per_frame"],
        found,
    )
    return result


def run_served(
    clips: dict[float, bytes],
    concurrencies: list[int],
    scale: float,
    log_dir: Path,
    workdir: Path,
    quiet_wait_s: float,
) -> dict[str, Any]:
    from bench.served import VIDEO, Server, auth_env, drive, measured_run, served_model, signup

    first_clip = min(clips)
    env = child_env({"VERITY_PRECISION": PRECISION, **auth_env(workdir)})
    wait_for_quiet(quiet_wait_s, BUSY_LIMIT)
    server = Server(env, log_dir / f"server-video-{PRECISION}.log")
    with server, RssSampler(server.pid) as rss:
        ready = server.wait_ready(poll_s=COLD_POLL_S)
        ready_rss = rss.overall_peak
        video_model = os.environ.get("VERITY_VIDEO_MODEL", "cnn-lstm")
        model = served_model(ready, video_model, PRECISION)
        encoder = next((m for m in ready.get("models", []) if m.get("modality") == "video-encoder"), None)
        api_key = signup(server.base_url)
        first = drive(server.base_url, [clips[first_clip]], 1, 1, endpoint=VIDEO, api_key=api_key)
        if first["errors"]:
            raise RuntimeError(f"the first request failed: {first['statuses']}; see {server.log_path}")
        cold = {
            "spawn_to_ready_s": server.ready_at - server.spawned_at,
            "first_request_ms": first["latency"]["p50_ms"],
            "first_request_clip_s": first_clip,
            "first_request_server_timing_ms": first["server_timing_median_ms"],
            "ready_rss_mb": ready_rss / MB,
        }
        log.info(
            "cold start: ready %.1fs after spawn, first %gs clip answered in %.0f ms",
            cold["spawn_to_ready_s"],
            first_clip,
            cold["first_request_ms"],
        )
        warm = drive(
            server.base_url, [clips[first_clip]], WARMUP_REQUESTS, 1, endpoint=VIDEO, api_key=api_key
        )
        if warm["errors"]:
            raise RuntimeError(f"warm-up requests failed: {warm['statuses']}; see {server.log_path}")
        runs = []
        for concurrency in concurrencies:
            for duration, clip in sorted(clips.items()):
                requests = requests_for(concurrency, duration, scale)
                result = measured_run(
                    server.base_url,
                    rss,
                    [clip],
                    requests,
                    concurrency,
                    quiet_wait_s,
                    endpoint=VIDEO,
                    api_key=api_key,
                )
                result["duration_s"] = duration
                _served_figures(result)
                log.info(
                    "served %gs c=%d: %d/%d ok in %.1fs = %.3f clips/s, %.1f frames/s, p50 %.0f ms, "
                    "p99 %.0f ms, faces %.1f ms/frame, statuses %s, peak RSS %.0f MB, other CPU %.0f%%",
                    duration,
                    concurrency,
                    result["ok"],
                    requests,
                    result["wall_s"],
                    result["clips_per_s"],
                    result["frames_per_s"],
                    result["latency"].get("p50_ms", float("nan")),
                    result["latency"].get("p99_ms", float("nan")),
                    result["faces_ms_per_frame"].get("p50_ms", float("nan")),
                    result["statuses"],
                    result["peak_rss_mb"],
                    result["cpu"]["other_cpu_share"] * 100,
                )
                runs.append(result)
    return {
        "precision": PRECISION,
        "model": model,
        "encoder": encoder,
        "cold_start": cold,
        "ready_rss_mb": ready_rss / MB,
        "peak_rss_mb": rss.overall_peak / MB,
        "rss_samples": rss.samples,
        "warmup": {k: warm[k] for k in ("requests", "statuses", "wall_s")},
        "runs": runs,
    }


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    served = results.get("served")
    baseline = results.get("baseline")
    faces = results.get("faces_inprocess")
    if served:
        c1 = [run for run in served["runs"] if run["concurrency"] == 1 and run["faces_ms_per_frame"]]
        if c1:
            worst = max(run["faces_ms_per_frame"]["p50_ms"] for run in c1)
            out["face_detection_served"] = {
                "per_clip_p50_ms": {
                    f"{run['duration_s']:g}": run["faces_ms_per_frame"]["p50_ms"] for run in c1
                },
                "worst_p50_ms": worst,
                "target_ms": FACE_TARGET_MS,
                "pass": worst <= FACE_TARGET_MS,
            }
        e2e = next(
            (r for r in served["runs"] if r["concurrency"] == 1 and r["duration_s"] == E2E_TARGET_CLIP_S),
            None,
        )
        if e2e and e2e["latency"]:
            out["e2e_10s_c1"] = {
                "p50_s": e2e["latency"]["p50_ms"] / 1000,
                "p99_s": e2e["latency"]["p99_ms"] / 1000,
                "target_s": E2E_TARGET_S,
                "failed_requests": e2e["errors"],
                "pass": e2e["latency"]["p50_ms"] / 1000 <= E2E_TARGET_S and e2e["errors"] == 0,
            }
    if faces:
        out["face_detection_inprocess"] = {
            "p50_ms": faces["per_frame_ms"].get("p50_ms"),
            "p99_ms": faces["per_frame_ms"].get("p99_ms"),
            "target_ms": FACE_TARGET_MS,
            "pass": faces["per_frame_ms"].get("p50_ms", math.inf) <= FACE_TARGET_MS,
        }
    if served and baseline:
        base = {clip["duration_s"]: clip["clips_per_s"] for clip in baseline["clips"]}
        top = max(run["concurrency"] for run in served["runs"])
        ratios = [
            {
                "duration_s": run["duration_s"],
                "concurrency": run["concurrency"],
                "ratio": run["clips_per_s"] / base[run["duration_s"]],
            }
            for run in served["runs"]
            if run["duration_s"] in base and base[run["duration_s"]] > 0
        ]
        judged = [r for r in ratios if r["concurrency"] == top]
        failed = sum(run["errors"] for run in served["runs"] if run["concurrency"] == top)
        if judged:
            worst = min(r["ratio"] for r in judged)
            out["throughput_vs_baseline"] = {
                "ratios": ratios,
                "judged_concurrency": top,
                "worst": worst,
                "target": THROUGHPUT_TARGET,
                "failed_requests": failed,
                "pass": worst >= THROUGHPUT_TARGET and failed == 0,
            }
    return out


def busy_phases(results: dict[str, Any]) -> dict[str, float]:
    phases: dict[str, float] = {}
    if results.get("baseline"):
        phases["baseline"] = results["baseline"]["cpu"]["other_cpu_share"]
    for run in (results.get("served") or {}).get("runs", []):
        phases[f"served {run['duration_s']:g}s c={run['concurrency']}"] = run["cpu"]["other_cpu_share"]
    return {name: share for name, share in phases.items() if share > BUSY_LIMIT}


def _verdict(target: dict[str, Any]) -> str:
    return "PASS" if target["pass"] else "MISS"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        md_row(
            [
                "configuration",
                "clip",
                "concurrency",
                "clips/s",
                "× baseline",
                "frames/s",
                "p50 s",
                "p99 s",
                "face detection ms/frame (p50)",
                "peak RSS MB",
                "failed",
                "other processes' CPU",
            ]
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = results.get("baseline")
    base = {c["duration_s"]: c for c in baseline["clips"]} if baseline else {}

    def secs(stats: dict[str, float], key: str) -> str:
        return fmt(stats[key] / 1000, 2) if key in stats else "–"

    for duration, clip in sorted(base.items()):
        lines.append(
            md_row(
                [
                    "baseline: cv2.VideoCapture (every frame) + mtcnn package (TensorFlow, full 720p frame) "
                    "+ Keras encoder per crop + Keras LSTM, eager",
                    f"{duration:g} s",
                    "1 (sequential)",
                    fmt(clip["clips_per_s"], 4),
                    "1.00×",
                    fmt(clip["frames_per_s"], 2),
                    secs(clip["latency"], "p50_ms"),
                    secs(clip["latency"], "p99_ms"),
                    fmt(clip["detect_ms_per_frame"].get("p50_ms"), 0),
                    f"{fmt(baseline['peak_rss_mb'], 0)} (process)",
                    f"0/{clip['requests']}",
                    fmt_other_cpu(baseline),
                ]
            )
        )
    served = results.get("served")
    if served:
        for run in served["runs"]:
            reference = base.get(run["duration_s"], {}).get("clips_per_s")
            lines.append(
                md_row(
                    [
                        f"Verity served {served['precision']} (HTTP, fps=1, ONNX MTCNN + encoder + LSTM)",
                        f"{run['duration_s']:g} s",
                        str(run["concurrency"]),
                        fmt(run["clips_per_s"], 3),
                        f"{run['clips_per_s'] / reference:.1f}×" if reference else "–",
                        fmt(run["frames_per_s"], 2),
                        secs(run["latency"], "p50_ms"),
                        secs(run["latency"], "p99_ms"),
                        fmt(run["faces_ms_per_frame"].get("p50_ms"), 1),
                        f"{fmt(run['peak_rss_mb'], 0)} (server)",
                        f"{run['errors']}/{run['requests']}",
                        fmt_other_cpu(run),
                    ]
                )
            )
    faces = results.get("faces_inprocess")
    if faces:
        lines.append(
            md_row(
                [
                    f"in-process FaceDetector (ONNX MTCNN, frames downscaled to {faces['max_side']} px), "
                    "one frame per call",
                    f"{faces['frames']} frames of the {min(results['config']['durations']):g} s clip",
                    "1",
                    "–",
                    "–",
                    fmt(1000 / faces["per_frame_ms"]["p50_ms"], 1) if faces["per_frame_ms"] else "–",
                    "–",
                    "–",
                    f"{fmt(faces['per_frame_ms'].get('p50_ms'), 1)} "
                    f"(p99 {fmt(faces['per_frame_ms'].get('p99_ms'), 1)}; "
                    f"{fmt(faces['batch_ms_per_frame'], 1)} batched)",
                    "–",
                    "–",
                    "–",
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
    caveat = " (not reliable: machine busy, see above)" if results.get("busy_phases") else ""
    tg = results.get("targets", {})
    if "face_detection_served" in tg or "face_detection_inprocess" in tg:
        parts = []
        if t := tg.get("face_detection_served"):
            per_clip = ", ".join(f"{d} s clip {ms:.1f} ms" for d, ms in t["per_clip_p50_ms"].items())
            parts.append(f"served (timing_ms.faces ÷ frames, p50 at c=1): {per_clip} → **{_verdict(t)}**")
        if t := tg.get("face_detection_inprocess"):
            parts.append(
                f"in process: p50 {fmt(t['p50_ms'], 1)} ms, p99 {fmt(t['p99_ms'], 1)} ms → **{_verdict(t)}**"
            )
        out.append(
            f"- Target: face detection ≤ {FACE_TARGET_MS:g} ms per 720p frame — " + "; ".join(parts) + caveat
        )
    if t := tg.get("e2e_10s_c1"):
        out.append(
            f"- Target: the 10 s clip end to end ≤ {E2E_TARGET_S:g} s at concurrency 1 — "
            f"p50 {t['p50_s']:.2f} s, p99 {t['p99_s']:.2f} s"
            + (f", {t['failed_requests']} failed" if t["failed_requests"] else "")
            + f" → **{_verdict(t)}**{caveat}"
        )
    if t := tg.get("throughput_vs_baseline"):
        ratios = ", ".join(
            f"{r['duration_s']:g} s c={r['concurrency']}: {r['ratio']:.1f}×" for r in t["ratios"]
        )
        out.append(
            f"- Target: served throughput ≥ {t['target']:g}× the baseline's (clips/s, same clip; judged at "
            f"concurrency {t['judged_concurrency']}, worst clip) — {ratios}"
            + (f"; {t['failed_requests']} failed requests" if t["failed_requests"] else "")
            + f" → **{_verdict(t)}**{caveat}"
        )
    if baseline:
        check = baseline["check"]
        onnx = check.get("onnx", {})
        if "fp32" in onnx:
            f32 = onnx["fp32"]
            line = (
                f"- Same weights: {check['crops']} face crops of the first clip through the Keras pair "
                f"vs the stored fp32 ONNX pair: features max |Δ| {f32['feature_max_abs_diff']:.1e} "
                f"(max |feature| "
                f"{f32['feature_scale']:.2g}), head probability {check['keras_fake_probability']:.6f} vs "
                f"{f32['fake_probability']:.6f}, |Δ| {f32['probability_abs_diff']:.1e} "
                f"(≤ {check['tolerance']:g}: {'yes' if check['pass'] else 'NO'})"
            )
            if "int8" in onnx:
                line += f"; int8 pair |Δ| {onnx['int8']['probability_abs_diff']:.1e}"
            line += (
                f"; the baseline's crop preprocessing vs the serving path's: max |Δ| "
                f"{check['preprocess_vs_served_max_abs_diff']:.1e}"
            )
            out.append(line)
        split = "; ".join(
            f"{c['duration_s']:g} s: read all {c['frames_read']} frames "
            f"{c['read_all_frames_median_s']:.1f} s, "
            f"mtcnn {fmt(c['detect_ms_per_frame'].get('p50_ms'), 0)} ms/frame × {c['frames_kept']}, "
            f"encoder {fmt(c['encode_ms_per_crop'].get('p50_ms'), 0)} ms/crop × {c['frames_with_face']}, "
            f"LSTM {c['head_median_ms']:.0f} ms ({c['windows']} windows)"
            for c in baseline["clips"]
        )
        out.append(
            f"- Baseline split, median: {split}; TensorFlow threads intra/inter "
            f"{baseline['tf_threads']['intra_op']}/{baseline['tf_threads']['inter_op']} (0 = all cores); "
            f"first run of a fresh process {baseline['clips'][0]['first_call']['wall_s']:.1f} s"
        )
    if baseline and served:
        served_p = {run["duration_s"]: run["results"][0]["p"] for run in served["runs"] if run["results"]}
        scores = "; ".join(
            f"{c['duration_s']:g} s: baseline {fmt(c['fake_probability'], 4)}, "
            f"served {fmt(served_p.get(c['duration_s']), 4)}"
            for c in baseline["clips"]
        )
        out.append(
            f"- Clip fake probability (mean over windows): {scores} (not expected equal: the served "
            "boxes come from the cascade on a downscaled frame, hence slightly different crops, and "
            f"the served pair is {served['precision']})"
        )
    if served:
        timings = "; ".join(
            f"{run['duration_s']:g} s: "
            + ", ".join(f"{k} {v:.0f}" for k, v in run["server_timing_median_ms"].items())
            for run in served["runs"]
            if run["concurrency"] == 1 and run["server_timing_median_ms"]
        )
        if timings:
            out.append(f"- Server-side timing at concurrency 1, median ms (`timing_ms`): {timings}")
        frames = ", ".join(
            f"{run['duration_s']:g} s clip → {run['frames_per_clip']} frames "
            f"({run['frames_with_face_per_clip']} with a face)"
            for run in served["runs"]
            if run["concurrency"] == 1
        )
        cold = served["cold_start"]
        out.append(
            f"- Frames analysed per clip: {frames}. Cold start (optional): ready "
            f"{cold['spawn_to_ready_s']:.1f} s after spawn, first {cold['first_request_clip_s']:g} s clip "
            f"{cold['first_request_ms'] / 1000:.2f} s; "
            f"RSS at ready {cold['ready_rss_mb']:.0f} MB, peak {served['peak_rss_mb']:.0f} MB"
        )
    int8 = results.get("stored_int8", {})
    if int8.get("stored"):
        nodes = int8["head"].get("int8_quantized_nodes") or int8["encoder"].get("int8_quantized_nodes") or {}

        def held(role: str) -> str:
            ops = nodes.get(role)
            if ops is None:
                return "not recorded"
            return ", ".join(f"{n} {op}" for op, n in ops.items()) or "no integer node (runs as fp32)"

        out.append(
            f"- int8 where available: the store's int8 pair is {int8['encoder']['tag']} + "
            f"{int8['head']['tag']}; integer nodes per the store: encoder {held('encoder')}, head "
            f"{held('head')} (the encoder's int8 export quantizes MatMul/Gemm only: int8 convolutions "
            "run slower on ONNX Runtime's CPU provider, and a pooled EfficientNetB0 has no MatMul)"
        )
    if served and any(run["concurrency"] > 1 for run in served["runs"]):
        out.append(
            "- Above concurrency 1 the served face-detection figure is per request: `timing_ms.faces` then "
            "includes waiting for the detector (one request's frames at a time) and sharing the CPU with "
            "the other requests' decoding and encoder, so it is not the detector's own cost per frame"
        )
    m, s = results["machine"], results["settings"]
    weights = (served or {}).get("model", {}).get("weights") or (
        baseline["model"]["weights"] if baseline else "?"
    )
    out.append(
        f"- Machine: {machine_line(m)}; "
        f"{results['finished_at']}; load average at start {results['loadavg_start']}, "
        f"end {results['loadavg_end']}"
    )
    cfg = results["config"]
    runs = ", ".join(
        f"c={c} {d:g} s: {n}" for c, per in cfg["requests"].items() for d, n in sorted(per.items())
    )
    base_runs = ", ".join(f"{d:g} s: {n}" for d, n in sorted(cfg["baseline_requests"].items()))
    out.append(
        f"- Model: cnn-lstm full-size (EfficientNetB0 encoder + LSTM), weights={weights}; inputs: "
        f"{', '.join(f'{d:g} s' for d in cfg['durations'])} clips ({VIDEO_FORMAT}; "
        + ", ".join(f"{k} {v['bytes'] / MB:.1f} MB" for k, v in cfg["inputs"].items())
        + f"); requests per served run: {runs}, after the cold-start request and {WARMUP_REQUESTS} warm-up; "
        f"baseline runs: {base_runs}, after a first run and 1 warm-up run of the first clip; server "
        f"settings: ORT intra-op threads {s['ort_intra_op_threads']}"
        + (f"; overrides {s['overrides']}" if s["overrides"] else "")
        + "; the server also serves the default image and audio models (their RSS is in the server's)"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--durations", default=DURATIONS, help="clip lengths in seconds")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--skip", default="", help="comma list of baseline,served,faces")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each measurement wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "video.json")
    args = parser.parse_args(argv)
    setup_logging()
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentos"))
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    durations = sorted(float(d) for d in args.durations.split(",") if d)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    clips = {}
    for duration in durations:
        mark = time.perf_counter()
        clips[duration] = make_video_clip(duration)
        log.info(
            "made the %gs clip: %.1f MB in %.1fs",
            duration,
            len(clips[duration]) / MB,
            time.perf_counter() - mark,
        )
    settings = effective_settings()
    video_model = os.environ.get("VERITY_VIDEO_MODEL", "cnn-lstm")
    results: dict[str, Any] = {
        "started_at": now_iso(),
        "command": " ".join(["python -m bench.video", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "settings": settings,
        "loadavg_start": loadavg(),
        "config": {
            "precision": PRECISION,
            "concurrency": concurrencies,
            "durations": durations,
            "sample_fps": SAMPLE_FPS,
            "requests": {c: {d: requests_for(c, d, args.scale) for d in durations} for c in concurrencies},
            "baseline_requests": {d: baseline_requests(d, args.scale) for d in durations},
            "warmup_requests": WARMUP_REQUESTS,
            "inputs": {f"{d:g}s": {"format": VIDEO_FORMAT, "bytes": len(clips[d])} for d in durations},
        },
        "stored_int8": stored_int8(video_model),
    }
    log.info("machine %s; load average %s", results["machine"], results["loadavg_start"])
    with tempfile.TemporaryDirectory(prefix="verity-bench-video-") as tmp:
        if "faces" not in skip:
            results["faces_inprocess"] = run_faces_inprocess(clips[durations[0]], args.quiet_wait)
        if "baseline" not in skip:
            clip_dir = Path(tmp) / "clips"
            clip_dir.mkdir()
            clip_args = []
            for duration, data in clips.items():
                path = clip_dir / video_clip_name(duration)
                path.write_bytes(data)
                clip_args += ["--clip", f"{path}={results['config']['baseline_requests'][duration]}"]
            results["baseline"] = run_worker(
                "bench.video_baseline",
                [*clip_args, "--model-id", video_model],
                Path(tmp) / "baseline.json",
                args.quiet_wait,
            )
            for clip, duration in zip(results["baseline"]["clips"], durations, strict=True):
                clip["duration_s"] = duration
        if "served" not in skip:
            results["served"] = run_served(
                clips, concurrencies, args.scale, args.out.parent, Path(tmp) / "server", args.quiet_wait
            )
    results["targets"] = targets(results)
    results["busy_phases"] = busy_phases(results)
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
