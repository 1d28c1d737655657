"""Text: a 500-word text through the served API (``bentoml serve``, defaults) against the
``transformers`` ``pipeline("text-classification")`` baseline on the same weights.

    .venv/bin/python -m bench.text          # part of `make bench`

* Texts: 8 texts of 500 words each (docstrings of the Python standard library, the same on every
  machine), posted as ``.txt`` files; each is ~2 windows of 512 tokens with the dev tokenizer.
* Baseline: the full-size model (the dev weights of ``python -m models export
  roberta-openai-detector --offline``, rebuilt here from the same seed) in PyTorch, through
  ``pipeline("text-classification", truncation=True, max_length=512)``, one text at a time. It
  reads the first 512 tokens only (the pipeline truncates); the served API scores every window of
  the text, so it does the same or more work per text.
* Served: the default server (``VERITY_PRECISION=auto``), closed-loop clients at concurrency 1
  and 8, texts per second over the wall time.
* Target: served >= 3x the baseline's texts per second.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BUSY_LIMIT,
    RESULTS_DIR,
    RssSampler,
    child_env,
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

log = logging.getLogger("bench.text")
MODEL_ID = "roberta-openai-detector"
WORDS = 500
TARGET = 3.0


def make_texts(count: int = 8, words: int = WORDS) -> list[str]:
    from models.export.hf_text import dev_corpus

    pool = " ".join(dev_corpus()).split()
    return [" ".join(pool[i * words * 3 : i * words * 3 + words]) for i in range(count)]


def run_baseline(texts: list[str], requests: int) -> dict[str, Any]:
    import torch
    from transformers import PreTrainedTokenizerFast, pipeline

    from models.catalog import get_entry
    from models.export.hf_text import HFTextSource

    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
    source = HFTextSource(get_entry(MODEL_ID), offline=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=source.tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    classify = pipeline("text-classification", model=source.model, tokenizer=tokenizer, device=-1, top_k=None)
    kwargs = {"truncation": True, "max_length": source.spec.max_tokens}
    classify(texts[0], **kwargs)  # warm-up
    latencies, probabilities = [], []
    start = time.perf_counter()
    for i in range(requests):
        mark = time.perf_counter()
        scores = classify(texts[i % len(texts)], **kwargs)
        if scores and isinstance(scores[0], list):  # some versions nest one input's scores
            scores = scores[0]
        latencies.append(time.perf_counter() - mark)
        probabilities.append(
            next(s["score"] for s in scores if s["label"] == source.info.labels[source.info.fake_index])
        )
    wall = time.perf_counter() - start
    # The same work as the served API: every window it scores, through the same PyTorch model.
    windower = source.runtime_tokenizer()
    same_work = []
    with torch.no_grad():
        for i in range(requests):
            windows = windower.windows(
                texts[i % len(texts)], source.spec.max_tokens, source.spec.overlap_tokens
            )
            mark = time.perf_counter()
            for row in windows.ids:
                source.predict(row[None])
            same_work.append(time.perf_counter() - mark)
    return {
        "same_windows": {"texts_per_s": requests / sum(same_work), "latency": latency_stats(same_work)},
        "requests": requests,
        "texts_per_s": requests / wall,
        "latency": latency_stats(latencies),
        "probabilities": probabilities[: len(texts)],
        "tokens_per_text": [len(tokenizer(t)["input_ids"]) for t in texts],
    }


def run_served(texts: list[str], concurrencies: list[int], requests: int, workdir: Path) -> dict[str, Any]:
    from bench.served import Endpoint, Server, auth_env, drive, measured_run, signup

    endpoint = Endpoint("/v1/detect/text", "file", "essay{index}.txt", "text/plain", "texts_per_s")
    payloads = [t.encode("utf-8") for t in texts]
    env = child_env(auth_env(workdir))
    server = Server(env, workdir / "server-text.log")
    with server, RssSampler(server.pid) as rss:
        ready = server.wait_ready()
        model = next(m for m in ready["models"] if m["id"] == MODEL_ID)
        api_key = signup(server.base_url)
        warm = drive(server.base_url, payloads, 4, 1, endpoint=endpoint, api_key=api_key)
        if warm["errors"]:
            raise RuntimeError(f"warm-up failed: {warm['statuses']}; see {server.log_path}")
        runs = []
        for concurrency in concurrencies:
            result = measured_run(
                server.base_url, rss, payloads, requests * concurrency // 2 or requests, concurrency, 60,
                endpoint=endpoint, api_key=api_key,
            )  # fmt: skip
            result.pop("latencies_s", None)
            runs.append(result)
            log.info("served c=%d: %.2f texts/s", concurrency, result["texts_per_s"])
        windows = [r["segments"] for r in runs[0]["results"]]
    return {"model": model, "runs": runs, "windows_per_text": float(np.mean(windows))}


def markdown(results: dict[str, Any]) -> str:
    base = results["baseline"]["texts_per_s"]
    served = results["served"]
    model, tokens = served["model"], results["baseline"]["tokens_per_text"]
    lines = [
        f"Machine: {machine_line(results['machine'])}. Model: {MODEL_ID} ({model['precision']} served, "
        f"{model['weights']} weights); {len(tokens)} texts of {WORDS} words, {np.mean(tokens):.0f} tokens "
        f"each on average; the served API scores {served['windows_per_text']:.1f} windows of 512 tokens "
        "per text, the baseline the first 512 tokens.",
        "",
        md_row(["run", "texts/s", "p50 latency", "× baseline"]),
        md_row(["---"] * 4),
        md_row(["transformers pipeline (PyTorch fp32, one at a time)", f"{base:.2f}",
                f"{results['baseline']['latency']['p50_ms']:.0f} ms", "1.00×"]),
        md_row(["PyTorch fp32 on the windows the API scores (the same work)",
                f"{results['baseline']['same_windows']['texts_per_s']:.2f}",
                f"{results['baseline']['same_windows']['latency']['p50_ms']:.0f} ms",
                f"{results['baseline']['same_windows']['texts_per_s'] / base:.2f}×"]),
    ]  # fmt: skip
    for run in served["runs"]:
        lines.append(
            md_row(
                [
                    f"served API, concurrency {run['concurrency']}",
                    f"{run['texts_per_s']:.2f}",
                    f"{run['latency']['p50_ms']:.0f} ms",
                    f"{run['texts_per_s'] / base:.2f}×",
                ]
            )
        )
    best = max(run["texts_per_s"] for run in served["runs"]) / base
    verdict = "MET" if best >= TARGET else "MISSED"
    same = (
        max(run["texts_per_s"] for run in served["runs"]) / results["baseline"]["same_windows"]["texts_per_s"]
    )
    lines += [
        "",
        f"Target: served >= {TARGET:g}x the baseline: best {best:.2f}x, **{verdict}**. "
        f"Against PyTorch doing the same windows: {same:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text", description=__doc__)
    parser.add_argument("--requests", type=int, default=16, help="baseline requests; served: per concurrency")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "text.json")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    texts = make_texts()
    results: dict[str, Any] = {"started_at": now_iso(), "machine": machine_info(), "loadavg_start": loadavg()}
    busy = {}
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        level = wait_for_quiet(60, BUSY_LIMIT)
        if level >= BUSY_LIMIT:
            busy["served"] = level
        results["served"] = run_served(
            texts, [int(c) for c in args.concurrency.split(",")], args.requests, Path(tmp)
        )
    level = wait_for_quiet(60, BUSY_LIMIT)
    if level >= BUSY_LIMIT:
        busy["baseline"] = level
    results["baseline"] = run_baseline(texts, args.requests)
    results["busy_phases"] = busy
    return finish_run(results, args.out, started, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
