"""Which items are this task's, and which file its results go to.

An item belongs to shard ``sha256(id) mod count``: a pure function of the id, so every task
computes the same partition from the same input without talking to the others, the shards are
disjoint and together hold every item, and an item stays in its shard however the input is listed
or reordered. The shard comes from, in this order: ``--shard i/n``; Cloud Run Jobs'
``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``; AWS Batch's ``AWS_BATCH_JOB_ARRAY_INDEX`` with
``--shards N`` (an array child learns only its index, not the array's size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batch.usage import UsageError

DEFAULT_NAME = "results.jsonl"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count}: the index must be in 0..count-1")

    def holds(self, item_id: str) -> bool:
        return shard_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(0, 1)


def shard_of(item_id: str, count: int) -> int:
    """The shard of ``item_id`` among ``count``: stable across processes, machines and Python
    versions (``hash()`` is salted per process, so it cannot serve)."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _integer(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {value!r}") from None


def parse_shard(text: str) -> Shard:
    """``--shard i/n`` (0-based index)."""
    index, slash, count = text.partition("/")
    if not slash:
        raise UsageError(f"--shard takes INDEX/COUNT, e.g. 3/10 (0-based), not {text!r}")
    return Shard(_integer(index.strip(), "--shard's index"), _integer(count.strip(), "--shard's count"))


def choose_shard(shard: str | None, shards: int | None, env: Mapping[str, str]) -> Shard:
    """This task's shard from the flags and the environment (module docstring: the order)."""
    if shard is not None:
        return parse_shard(shard)
    if "CLOUD_RUN_TASK_INDEX" in env or "CLOUD_RUN_TASK_COUNT" in env:
        return Shard(
            _integer(env.get("CLOUD_RUN_TASK_INDEX", ""), "CLOUD_RUN_TASK_INDEX"),
            _integer(env.get("CLOUD_RUN_TASK_COUNT", ""), "CLOUD_RUN_TASK_COUNT"),
        )
    if "AWS_BATCH_JOB_ARRAY_INDEX" in env:
        if shards is None:
            # Without the array's size every child would run every item.
            raise UsageError("AWS_BATCH_JOB_ARRAY_INDEX is set: give --shards N, the array's size")
        return Shard(_integer(env["AWS_BATCH_JOB_ARRAY_INDEX"], "AWS_BATCH_JOB_ARRAY_INDEX"), shards)
    if shards is not None and shards != 1:
        raise UsageError(
            "--shards N needs AWS_BATCH_JOB_ARRAY_INDEX (an AWS Batch array child); "
            "elsewhere give --shard INDEX/COUNT"
        )
    return WHOLE


def shard_file_name(name: str, shard: Shard) -> str:
    """``results.jsonl`` for an unsharded run, ``results.shard-0003-of-0010.jsonl`` for a shard:
    no two shards ever write one file."""
    if shard.count == 1:
        return name
    path = Path(name)
    suffix = path.suffix or ".jsonl"
    return f"{path.stem}.shard-{shard.index:04d}-of-{shard.count:04d}{suffix}"


def results_path(output: str, shard: Shard) -> Path:
    """The local results file of ``shard``: ``--output`` itself (``results.jsonl`` inside it when it
    names a folder), named for the shard by ``shard_file_name``."""
    path = Path(output)
    if output.endswith(("/", "\\")) or path.is_dir():
        path = path / DEFAULT_NAME
    return path.with_name(shard_file_name(path.name, shard))


def summary_path(results: Path) -> Path:
    """``results.jsonl`` -> ``results.summary.json``, beside it."""
    return results.with_name(f"{results.stem}.summary.json")
