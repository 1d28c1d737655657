"""Pieces shared by the benchmark driver and its worker processes."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
MB = 1024 * 1024
BUSY_LIMIT = 0.10  # other processes' share of the machine above which a figure is flagged

log = logging.getLogger("bench")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def latency_stats(latencies_s: list[float]) -> dict[str, float]:
    """Milliseconds: p50 / p99 (linear interpolation), min, max, mean."""
    if not latencies_s:
        return {}
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
    }


def _busy_cpu_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class RssSampler:
    """Samples a process tree every ``interval_s`` in a thread: peak RSS (sum over the tree) and
    CPU seconds per process, so each phase can also tell how much CPU *other* processes on the
    machine took meanwhile (the benchmark wants a quiet machine; this says whether it had one).

    ``overall_peak`` covers the whole life of the sampler; ``phase_peak`` and the CPU figures
    restart at each ``start_phase()``; ``end_phase()`` returns the phase's figures.
    """

    pid: int
    interval_s: float = 0.1
    overall_peak: int = 0
    phase_peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _cpu: dict[int, list[float]] = field(default_factory=dict)

    def __enter__(self) -> RssSampler:
        self._root = psutil.Process(self.pid)
        self._self = psutil.Process()
        self.start_phase()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def start_phase(self) -> None:
        with self._lock:
            self._cpu = {}
            self.phase_peak = 0
            self._phase_start = (time.perf_counter(), _busy_cpu_s(), sum(self._self.cpu_times()[:2]))
        self._sample(baseline=True)

    def end_phase(self) -> dict[str, float]:
        """Wall seconds, CPU seconds of the tree and of this process, CPU seconds of all other
        processes, and those as a share of the machine's capacity over the phase."""
        self._sample()
        wall0, busy0, own0 = self._phase_start
        wall = time.perf_counter() - wall0
        busy = _busy_cpu_s() - busy0
        own = sum(self._self.cpu_times()[:2]) - own0
        with self._lock:
            tree = sum(last - first for first, last in self._cpu.values())
        other = max(0.0, busy - tree - own)
        return {
            "wall_s": wall,
            "tree_cpu_s": tree,
            "driver_cpu_s": own,
            "other_cpu_s": other,
            "other_cpu_share": other / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0,
            "peak_rss_mb": self.phase_peak / MB,
        }

    def _sample(self, baseline: bool = False) -> None:
        """``baseline``: the phase's first sample; processes first seen later are new, so all
        their CPU time belongs to the phase."""
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu = sum(proc.cpu_times()[:2])
            except psutil.Error:
                continue
            with self._lock:
                self._cpu.setdefault(proc.pid, [cpu if baseline else 0.0, cpu])[1] = cpu
        self.samples += 1
        self.overall_peak = max(self.overall_peak, rss)
        self.phase_peak = max(self.phase_peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()


def wait_for_quiet(max_wait_s: float, busy_limit: float = 0.10, window_s: float = 3.0) -> float:
    """Wait (at most ``max_wait_s``) until the whole machine's CPU use over ``window_s`` falls
    under ``busy_limit``; returns the last busy share seen."""
    deadline = time.monotonic() + max_wait_s
    busy = psutil.cpu_percent(interval=window_s) / 100
    while busy >= busy_limit and time.monotonic() < deadline:
        log.info("machine busy (%.0f%% CPU); waiting for it to be quiet", busy * 100)
        busy = psutil.cpu_percent(interval=window_s) / 100
    if busy >= busy_limit:
        log.warning("machine still busy (%.0f%% CPU) after %.0fs; measuring anyway", busy * 100, max_wait_s)
    return busy


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The vector extensions that decide ONNX Runtime's speed here (VNNI and AMX matter for INT8)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    present = [flag for flag in wanted if f" {flag} " in f" {text.replace(chr(10), ' ')} "]
    return ", ".join(present) or "no AVX2"


def resolved_precision(precision: str, model_id: str) -> str:
    """What a server started with ``VERITY_PRECISION=precision`` serves ``model_id`` at (``auto``,
    the default: int8 where its stored agreement with fp32 meets the bars, else fp32)."""
    if precision != "auto":
        return precision
    from config import Settings
    from detect.hosting import int8_verdict
    from models.store import find_stored

    chosen, reason = int8_verdict(find_stored(model_id, "int8"), Settings(precision="auto"))
    log.info("auto precision serves %s at %s", model_id, reason)
    return "int8" if chosen else "fp32"


def machine_line(machine: dict[str, Any]) -> str:
    """The machine as every benchmark table names it: CPU model, its ISA flags, cores, memory."""
    return (
        f"{machine['nproc']} CPUs ({machine['cpu_model']}; {machine.get('cpu_flags') or cpu_flags()}), "
        f"{machine['memory_gb']} GB RAM, {machine['platform']}"
    )


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def finish_run(
    results: dict[str, Any], out: Path, started: float, markdown: Callable[[dict[str, Any]], str]
) -> int:
    """Close a benchmark run: warn about busy phases, stamp the end, render the Markdown table,
    write ``out`` (JSON) and print the table. ``results["busy_phases"]`` must be filled."""
    if results["busy_phases"]:
        log.warning("other processes used the CPU during: %s", results["busy_phases"])
    results["loadavg_end"] = loadavg()
    results["finished_at"] = now_iso()
    results["duration_s"] = time.perf_counter() - started
    table = markdown(results)
    results["markdown"] = table
    write_json(out, results)
    log.info("done in %.0fs; results in %s", results["duration_s"], out)
    sys.stdout.write(table)
    return 0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker or server process: this one's, plus the project's store."""
    env = dict(os.environ)
    env.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentos"))
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def run_worker(module: str, args: list[str], out: Path, quiet_wait_s: float) -> dict[str, Any]:
    """``python -m module args --out out`` in its own process, with its peak RSS."""
    wait_for_quiet(quiet_wait_s, BUSY_LIMIT)
    cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
    log.info("running %s", " ".join(cmd))
    load_before = loadavg()
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env())
    with RssSampler(proc.pid) as sampler:
        rc = proc.wait()
        phase = sampler.end_phase()
    if rc != 0:
        raise RuntimeError(f"{module} failed with exit status {rc}")
    result = json.loads(out.read_text())
    result["peak_rss_mb"] = sampler.overall_peak / MB
    result["cpu"] = phase
    result["loadavg_before"], result["loadavg_after"] = load_before, loadavg()
    return result


def effective_settings() -> dict[str, Any]:
    """The server settings in effect (defaults plus ``VERITY_*`` overrides), for the record."""
    from config.settings import Settings

    settings = Settings()
    return {
        "image_model": settings.image_model,
        "audio_model": settings.audio_model,
        "ort_intra_op_threads": settings.intra_op_threads,
        "ort_inter_op_threads": settings.ort_inter_op_threads,
        "batch_max_size": settings.batch_max_size,
        "batch_max_latency_ms": settings.batch_max_latency_ms,
        "audio_batch_max_size": settings.audio_batch_max_size,
        "audio_batch_max_latency_ms": settings.audio_batch_max_latency_ms,
        "audio_hop_s": settings.audio_hop_s,
        "overrides": {k: v for k, v in sorted(os.environ.items()) if k.startswith("VERITY_")},
    }


def mapped_files(pid: int, needles: tuple[str, ...]) -> list[str]:
    """Files mapped into process ``pid`` (``/proc/<pid>/maps``) whose path contains any of
    ``needles``: a native library that was imported stays mapped for the life of the process."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    found = set()
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and any(needle in parts[5] for needle in needles):
            found.add(parts[5].strip())
    return sorted(found)


def tree_mapped_files(pid: int, needles: tuple[str, ...]) -> dict[str, Any]:
    """``mapped_files`` over a process and all its descendants: the pids looked at and, per pid
    (with its command line), the matching files."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {"pids": [], "found": {}}
    found: dict[str, Any] = {}
    for proc in procs:
        files = mapped_files(proc.pid, needles)
        if files:
            try:
                cmdline = " ".join(proc.cmdline())[:200]
            except psutil.Error:
                cmdline = "?"
            found[str(proc.pid)] = {"cmdline": cmdline, "files": files}
    return {"pids": [p.pid for p in procs], "found": found}


# --- Markdown ------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_latency(stats: dict[str, float], key: str) -> str:
    return fmt(stats.get(key), 0)


def fmt_other_cpu(result: dict[str, Any]) -> str:
    share = result.get("cpu", {}).get("other_cpu_share")
    return "–" if share is None else f"{share * 100:.0f}%"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
