"""What the trust layer costs per picture: the stability check, reading Content Credentials,
signing, measured on the default image model as served (``VERITY_PRECISION=auto``), in process.

    .venv/bin/python -m bench.trust                  # part of `make bench`
    .venv/bin/python -m bench.trust --images 40

One request at a time through ``detect_image`` on an in-process engine (the pipeline of the
Lambda handler, the job workers and the batch runner; the served API adds its HTTP hop on top of
every row alike). Each mode runs the same JPEGs of ``bench.inputs`` (8 sizes, cycled), after a
warm-up; medians and spread (min–max) of the per-picture wall time and of ``timing_ms.inference``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import (
    RESULTS_DIR,
    finish_run,
    latency_stats,
    loadavg,
    machine_info,
    machine_line,
    md_row,
    now_iso,
    setup_logging,
    wait_for_quiet,
)
from bench.inputs import make_jpegs

log = logging.getLogger("bench.trust")

MODES: dict[str, dict[str, Any]] = {
    "classifier only (provenance off)": {"provenance": False},
    "default (Content Credentials read)": {},
    "stability=true": {"stability": True},
}


async def _measure(images: list[bytes], count: int) -> dict[str, Any]:
    from config import Settings
    from detect.hosting import build_inprocess_engine
    from detect.image import detect_image

    settings = Settings()
    engine = build_inprocess_engine(settings)
    served = engine.image_model(None)
    for data in images[:3]:  # warm-up: first session runs allocate
        await detect_image(engine, data, model_id=None, explain=False, stability=True)
    modes: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for name, options in MODES.items():
        walls, inference = [], []
        for i in range(count):
            start = time.perf_counter()
            last = await detect_image(
                engine, images[i % len(images)], model_id=None, explain=False, **options
            )
            walls.append(time.perf_counter() - start)
            inference.append(last["timing_ms"]["inference"] / 1000)
        modes[name] = {"wall": latency_stats(walls), "inference": latency_stats(inference)}
        log.info("%s: p50 %.1f ms", name, modes[name]["wall"]["p50_ms"])
    signing: list[float] = []
    if engine.signer is not None:
        for _ in range(200):
            copy = {k: v for k, v in last.items() if k != "signature"}
            start = time.perf_counter()
            engine.signer.sign(copy)
            signing.append(time.perf_counter() - start)
    return {
        "model": served.stored.describe()["id"],
        "precision": served.stored.precision,
        "weights": served.stored.weights,
        "requests_per_mode": count,
        "modes": modes,
        "signing": latency_stats(signing),
    }


def markdown(results: dict[str, Any]) -> str:
    base = results["modes"]["classifier only (provenance off)"]["wall"]["p50_ms"]
    lines = [
        f"Machine: {machine_line(results['machine'])}. Model: {results['model']} "
        f"({results['precision']}, {results['weights']} weights), in process, one request at a time, "
        f"{results['requests_per_mode']} pictures per mode (8 sizes, 480x640 to 1024x768).",
        "",
        md_row(["mode", "per picture p50 (min–max)", "model call p50", "× classifier only"]),
        md_row(["---"] * 4),
    ]
    for name, mode in results["modes"].items():
        wall, inference = mode["wall"], mode["inference"]
        lines.append(
            md_row(
                [
                    name,
                    f"{wall['p50_ms']:.1f} ms ({wall['min_ms']:.1f}–{wall['max_ms']:.1f})",
                    f"{inference['p50_ms']:.1f} ms",
                    f"{wall['p50_ms'] / base:.2f}×",
                ]
            )
        )
    sign = results["signing"]
    if sign:
        lines += [
            "",
            f"Signing a result (Ed25519 over RFC 8785 JSON): p50 {sign['p50_ms']:.3f} ms "
            f"({sign['min_ms']:.3f}–{sign['max_ms']:.3f}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__)
    parser.add_argument("--images", type=int, default=40, help="pictures per mode")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "trust.json")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    results: dict[str, Any] = {"started_at": now_iso(), "machine": machine_info(), "loadavg_start": loadavg()}
    busy = wait_for_quiet(60)
    results.update(anyio.run(_measure, make_jpegs(), args.images))
    results["busy_phases"] = {"start": busy} if busy >= 0.10 else {}
    modes = results["modes"]
    results["stability_cost"] = (
        modes["stability=true"]["wall"]["p50_ms"]
        / modes["default (Content Credentials read)"]["wall"]["p50_ms"]
    )
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
