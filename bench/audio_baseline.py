"""Audio baseline worker: what earlier projects do. ``librosa.load(path, sr=16000)`` then
``transformers.pipeline("audio-classification")`` in PyTorch eager fp32, one request at a time.

The pipeline classifies the WHOLE clip in one forward pass (its feature extractor normalizes the
clip, the model mean-pools every frame); Verity cuts 4 s windows every 2 s and runs each. The
timings here are for the pipeline's own way of doing it, as a user of it would get.

Run by ``bench.audio`` in its own process (so its peak RSS is its own):

    python -m bench.audio_baseline --clip DIR/clip-10s.wav=4 --clip DIR/clip-60s.wav=2 --out FILE

Same weights as the served model: for a ``weights: "dev"`` store the model is rebuilt with
``models.export.hf_audio.build_dev_model`` (same catalog config, same seed as the stored export);
a pretrained export is loaded from where the export came from (``bench.baseline.model_location``).
The equality check runs one 4 s window (the first window Verity makes of the first clip) through
torch, the pipeline and the stored fp32 and int8 ONNX exports.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import latency_stats, mapped_files, setup_logging, write_json

log = logging.getLogger("bench.audio_baseline")

JIT_LIBRARIES = ("numba", "llvmlite")


def rebuild_dev_audio(entry: Any, stored: Any, workdir: Path) -> dict[str, Any]:
    """The audio model with the stored export's dev weights, saved with a feature extractor
    configured as the stored input spec (sample rate, ``do_normalize``)."""
    import transformers

    from models.export.hf import DEV_SEED
    from models.export.hf_audio import build_dev_model

    spec = stored.audio_spec
    build_dev_model(entry).save_pretrained(workdir)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=spec.sample_rate,
        padding_value=0.0,
        do_normalize=spec.do_normalize,
        return_attention_mask=False,
    ).save_pretrained(workdir)
    return {"dev_seed": DEV_SEED}


def _softmax_fake(logits: np.ndarray, fake_index: int) -> float:
    from models.postprocess import fake_probabilities

    return float(fake_probabilities(np.asarray(logits, dtype=np.float32), "logits", fake_index)[0])


def equality_check(pipe: Any, model_id: str, clip: bytes, fake_label: str, fake_index: int) -> dict[str, Any]:
    """One 4 s window (Verity's first window of ``clip``) through torch, the pipeline and the
    stored ONNX exports."""
    import torch

    from config import get_settings
    from media.audio import decode_audio, make_windows
    from models.audio_features import normalize_windows
    from models.runtime import OnnxModel
    from models.store import find_stored

    settings = get_settings()
    stored = find_stored(model_id, "fp32")
    assert stored is not None
    spec = stored.audio_spec
    decoded = decode_audio(
        clip,
        target_rate=spec.sample_rate,
        max_bytes=len(clip) + 1,
        max_duration_s=3600.0,
        min_duration_s=spec.min_duration_s,
        ffmpeg_timeout_s=60.0,
    )
    windows, spans = make_windows(decoded.samples, decoded.sample_rate, spec.window_s, spec.hop_s)
    raw = windows[:1]
    normalized = normalize_windows(raw) if spec.do_normalize else raw
    with torch.no_grad():
        torch_logits = pipe.model(input_values=torch.from_numpy(normalized)).logits.numpy()
    scores = {d["label"]: float(d["score"]) for d in pipe({"raw": raw[0].copy(), "sampling_rate": 16_000})}
    onnx: dict[str, float] = {}
    for precision in ("fp32", "int8"):
        export = find_stored(model_id, precision)
        if export is None:
            continue
        session = OnnxModel(
            export.onnx_path,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
        )
        onnx[precision] = _softmax_fake(session.run(normalized), int(export.metadata["fake_index"]))
        del session
    return {
        "window_s": list(spans[0]),
        "torch_fake_probability": _softmax_fake(torch_logits, fake_index),
        "pipeline_fake_score": scores.get(fake_label),
        "onnx_fake_probability": onnx,
        "torch_logits": torch_logits.tolist(),
    }


def run(clips: list[tuple[Path, int]], warmup: int, model_id: str) -> dict[str, Any]:
    import torch
    import transformers

    from models.store import find_stored

    with tempfile.TemporaryDirectory(prefix="verity-bench-audio-baseline-") as tmp:
        from bench.baseline import model_location

        location, info = model_location(model_id, Path(tmp), rebuild_dev_audio)
        started = time.perf_counter()
        pipe = transformers.pipeline("audio-classification", model=location, device="cpu")
        load_s = time.perf_counter() - started
    stored = find_stored(model_id, "fp32")
    assert stored is not None
    fake_index = int(stored.metadata["fake_index"])
    fake_label = stored.metadata["labels"][fake_index]
    log.info(
        "baseline pipeline ready in %.1fs (%s, extractor %s, torch threads %d)",
        load_s,
        type(pipe.model).__name__,
        type(pipe.feature_extractor).__name__,
        torch.get_num_threads(),
    )
    import_started = time.perf_counter()
    import librosa

    librosa_import_s = time.perf_counter() - import_started

    def classify(path: Path) -> tuple[list[dict[str, Any]], float, float]:
        start = time.perf_counter()
        samples, rate = librosa.load(path, sr=16_000)
        loaded = time.perf_counter()
        labels = pipe({"raw": samples, "sampling_rate": rate})
        return labels, loaded - start, time.perf_counter() - loaded

    per_clip = []
    for index, (path, requests) in enumerate(clips):
        duration = float(librosa.get_duration(path=path))
        # The first call of a fresh process pays librosa's numba JIT and torch's first forward.
        first_labels, first_load_s, first_model_s = classify(path)
        for _ in range(warmup):
            classify(path)
        latencies, loads, models = [], [], []
        wall_start = time.perf_counter()
        for _ in range(requests):
            start = time.perf_counter()
            _, load_t, model_t = classify(path)
            latencies.append(time.perf_counter() - start)
            loads.append(load_t)
            models.append(model_t)
        wall = time.perf_counter() - wall_start
        log.info(
            "baseline %s (%.0f s): %d requests in %.1fs = %.3f clips/s",
            path.name,
            duration,
            requests,
            wall,
            requests / wall,
        )
        per_clip.append(
            {
                "clip": path.name,
                "duration_s": duration,
                "requests": requests,
                "warmup": warmup,
                "first_call": {
                    "fresh_process": index == 0,
                    "load_ms": first_load_s * 1000,
                    "pipeline_ms": first_model_s * 1000,
                    "total_ms": (first_load_s + first_model_s) * 1000,
                },
                "wall_s": wall,
                "clips_per_s": requests / wall,
                "latency": latency_stats(latencies),
                "load_median_ms": float(np.median(loads)) * 1000,
                "pipeline_median_ms": float(np.median(models)) * 1000,
                "fake_score": {d["label"]: float(d["score"]) for d in first_labels}.get(fake_label),
            }
        )
    check = equality_check(pipe, model_id, clips[0][0].read_bytes(), fake_label, fake_index)
    librosa_samples, _ = librosa.load(clips[0][0], sr=16_000)
    import soundfile

    sf_samples, _ = soundfile.read(clips[0][0], dtype="float32")
    check["librosa_vs_soundfile_max_abs_diff"] = float(np.max(np.abs(librosa_samples - sf_samples)))
    return {
        "clips": per_clip,
        "load_s": load_s,
        "librosa_import_s": librosa_import_s,
        "model": info,
        "extractor": pipe.feature_extractor.to_dict(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "librosa": librosa.__version__,
        },
        # The positive control of the served side's "no numba" check: the same test finds them
        # here, where librosa is used.
        "jit_libraries_mapped": mapped_files(os.getpid(), JIT_LIBRARIES),
        "check": check,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audio_baseline")
    parser.add_argument("--clip", action="append", required=True, help="PATH=REQUESTS (repeatable)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--model-id", default="wav2vec2-audio")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    setup_logging()
    clips = [(Path(path), int(n)) for path, n in (item.rsplit("=", 1) for item in args.clip)]
    write_json(args.out, run(clips, args.warmup, args.model_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
