"""``python -m batch --input DIR|manifest.jsonl|s3://bucket/prefix/ --output results.jsonl``

Runs the detectors over every item of the input that belongs to this task's shard, in this
process, and appends one JSON line per item to the shard's results file; rerun the same command
and it goes on where it stopped. Exit status: 0 when the run went through its items (some of
which may have failed: see their error lines and the summary), 2 when the command cannot run as
given (one line on stderr says why), 1 when the run itself failed (a model missing from the
store, an outage), 128 + the signal's number when SIGTERM or SIGINT stopped it early.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from batch.items import Item, collect, is_s3
from batch.progress import Progress, configure_logging
from batch.results import ResultsFile, scan
from batch.s3_output import DEFAULT_FLUSH_S, S3Results, s3_results_uri
from batch.shards import Shard, choose_shard, results_path, summary_path
from batch.sources import Sources
from batch.summary import Tally, summary_document, write_summary
from batch.usage import USAGE_EXIT, UsageError
from config import Settings
from config.startup import settings_or_exit, startup_or_exit
from detect.files import MODALITIES, modality_of
from errors import VerityError

log = logging.getLogger("batch")

DEFAULT_CONCURRENCY = 4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m batch",
        description="Deepfake detection over a folder, a JSONL manifest or an S3 prefix, in this "
        "process: one JSON line per item, resumable, sharded.",
    )
    p.add_argument("--input", required=True, help="a folder, a JSONL manifest, or s3://bucket/prefix/")
    p.add_argument(
        "--output",
        required=True,
        help="the results file (JSONL; a folder gets results.jsonl), or s3://bucket/prefix/; a "
        "shard writes <stem>.shard-IIII-of-NNNN.jsonl beside it",
    )
    p.add_argument(
        "--modality",
        choices=("auto", *MODALITIES),
        default="auto",
        help="for items that do not name theirs; auto: by the file's magic bytes (default)",
    )
    p.add_argument("--shard", metavar="INDEX/COUNT", help="run only this shard (0-based), e.g. 3/10")
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="shard count of an AWS Batch array job (the index is AWS_BATCH_JOB_ARRAY_INDEX)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="answer at most N more items in this run")
    p.add_argument("--dry-run", action="store_true", help="list the items that would run; run nothing")
    p.add_argument(
        "--model",
        metavar="ID",
        help="catalog id of a served image or audio model, for the items of its modality that "
        "name none in their options (default: the served default)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"items in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--publish-every",
        type=float,
        default=DEFAULT_FLUSH_S,
        metavar="SECONDS",
        help=f"with an s3:// output: put the results so far every SECONDS (default {DEFAULT_FLUSH_S:g}); "
        "a killed task redoes at most the items since the last put",
    )
    return p


@dataclass(frozen=True)
class Plan:
    """What the command asks for, checked: this shard's items and where its results go."""

    input: str
    shard: Shard
    results: Path | None  # the local results file, or None for S3
    results_uri: str | None  # the S3 object of the results, for an s3:// output
    items: list[Item]
    default_options: dict[str, dict[str, Any]]

    @property
    def output(self) -> str:
        return self.results_uri or str(self.results)


def plan(args: argparse.Namespace, settings: Settings, sources: Sources) -> Plan:
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be 1 or more")
    if args.publish_every <= 0:
        raise UsageError("--publish-every must be more than 0 seconds")
    shard = choose_shard(args.shard, args.shards, os.environ)
    results: Path | None = None
    results_uri: str | None = None
    if is_s3(args.output):
        results_uri = s3_results_uri(args.output, shard)
        _check_outside_s3_input(args.input, results_uri)
    else:
        results = results_path(args.output, shard)
        _check_outside_input(args.input, results)
    everything = collect(
        args.input,
        modality=None if args.modality == "auto" else args.modality,
        max_frames_cap=settings.job_video_max_frames_cap,
        list_s3=sources.list_prefix,
    )
    return Plan(
        input=args.input,
        shard=shard,
        results=results,
        results_uri=results_uri,
        items=[item for item in everything if shard.holds(item.id)],
        default_options=_model_defaults(args.model),
    )


def _check_outside_input(location: str, results: Path) -> None:
    folder = Path(location)
    if not is_s3(location) and folder.is_dir() and results.resolve().is_relative_to(folder.resolve()):
        raise UsageError(
            f"--output {results} lies inside --input {location}: the next run would read it as media"
        )


def _check_outside_s3_input(location: str, results_uri: str) -> None:
    if is_s3(location) and results_uri.startswith(location.rstrip("/") + "/"):
        raise UsageError(
            f"--output {results_uri} lies under --input {location}: the next run would read it as media"
        )


def _model_defaults(model: str | None) -> dict[str, dict[str, Any]]:
    if model is None:
        return {}
    from models.catalog import load_catalog

    entry = load_catalog().get(model)
    if entry is None or entry.modality not in ("image", "audio"):
        raise UsageError(
            f"--model {model}: not an image or audio model of the catalog "
            "(a video model is chosen with VERITY_VIDEO_MODEL)"
        )
    return {entry.modality: {"model": model}}


def dry_run(the_plan: Plan, sources: Sources, limit: int | None) -> int:
    """One JSON line per item that would run, on stdout; the counts in the log."""
    answered: set[str] = set()
    if the_plan.results_uri is not None:
        remote = S3Results(sources, the_plan.results_uri)
        try:
            if remote.fetch(create=False):
                scan(remote.local, lambda line: answered.add(line["id"]))
        finally:
            remote.close(keep_local=False)
    elif the_plan.results is not None and the_plan.results.exists():
        scan(the_plan.results, lambda line: answered.add(line["id"]))
    elif the_plan.results is not None:
        _check_creatable(the_plan.results)
    todo = _todo(the_plan.items, answered, limit)
    for item in todo:
        modality = item.modality
        if modality is None and not is_s3(item.source):
            try:
                modality = modality_of(Path(item.source))
            except OSError:
                modality = None  # the run will answer file_not_found
        entry = {"id": item.id, "source": item.source, "modality": modality, "options": item.options}
        sys.stdout.write(json.dumps(entry) + "\n")
    log.info(
        "dry run, shard %s: %d items, %d already answered in %s, %d would run",
        the_plan.shard,
        len(the_plan.items),
        sum(item.id in answered for item in the_plan.items),
        the_plan.output,
        len(todo),
    )
    return 0


def _check_creatable(path: Path) -> None:
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--output: cannot write {path}: {parent} is not a writable folder")


def _todo(items: list[Item], answered: set[str], limit: int | None) -> list[Item]:
    todo = [item for item in items if item.id not in answered]
    return todo if limit is None else todo[:limit]


@dataclass(frozen=True)
class Outcome:
    answered: int
    stopped_by: int | None  # the signal that stopped the run early
    startup_s: float  # opening the models
    run_s: float  # answering the items


async def _run(
    the_plan: Plan,
    settings: Settings,
    sources: Sources,
    results: ResultsFile,
    tally: Tally,
    todo: list[Item],
    *,
    concurrency: int,
    tty: bool,
) -> Outcome:
    from batch.runner import run_items
    from detect.hosting import build_inprocess_engine

    if not todo:
        return Outcome(0, None, startup_s=0.0, run_s=0.0)  # nothing to run: no models to open
    started = time.monotonic()
    engine = startup_or_exit(lambda: build_inprocess_engine(settings))
    for modality, options in the_plan.default_options.items():
        try:
            getattr(engine, f"{modality}_model")(options["model"])
        except VerityError as exc:
            raise UsageError(f"--model: {exc.message}") from None
    stop = anyio.Event()
    stopped_by: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(number: int) -> None:
        stopped_by.append(number)
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # a second signal stops the process at once
        log.warning("stopping: the items in flight finish, no new one starts; a second signal stops now")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    progress = Progress(len(todo), tty=tty)
    running = time.monotonic()

    def on_line(line: dict[str, Any]) -> None:
        tally.add(line)
        progress.advance(line)

    try:
        answered = await run_items(
            engine,
            sources,
            todo,
            results,
            concurrency=concurrency,
            default_options=the_plan.default_options,
            on_line=on_line,
            stop=stop,
        )
    finally:
        progress.close()
    return Outcome(
        answered,
        stopped_by[0] if stopped_by else None,
        startup_s=running - started,
        run_s=time.monotonic() - running,
    )


def execute(args: argparse.Namespace, settings: Settings, the_plan: Plan, sources: Sources, tty: bool) -> int:
    remote: S3Results | None = None
    if the_plan.results_uri is not None:
        remote = S3Results(sources, the_plan.results_uri, flush_s=args.publish_every)
        try:
            remote.fetch(create=True)
        except BaseException:
            remote.close(keep_local=False)
            raise
        local = remote.local
    else:
        assert the_plan.results is not None
        local = the_plan.results
    published = False
    try:
        code = _answer(args, settings, the_plan, sources, tty, local, remote)
        published = True
        return code
    finally:
        if remote is not None:
            remote.close(keep_local=not published)


def _answer(
    args: argparse.Namespace,
    settings: Settings,
    the_plan: Plan,
    sources: Sources,
    tty: bool,
    local: Path,
    remote: S3Results | None,
) -> int:
    """Run the shard's remaining items into ``local`` (published to ``remote`` as they come and at
    the end), then write the summary; the exit status."""
    tally = Tally()
    results = ResultsFile.open(local, tally.add)
    try:
        todo = _todo(the_plan.items, tally.ids, args.limit)
        skipped = sum(item.id in tally.ids for item in the_plan.items)
        log.info(
            "shard %s: %d items, %d already answered in %s, %d to run",
            the_plan.shard,
            len(the_plan.items),
            skipped,
            the_plan.output,
            len(todo),
        )
        if remote is not None:
            remote.start()
        outcome = asyncio.run(
            _run(the_plan, settings, sources, results, tally, todo, concurrency=args.concurrency, tty=tty)
        )
    finally:
        results.close()
    if remote is not None:
        remote.close_publisher()
        remote.publish()  # the last lines; a failure here fails the run (the copy is kept)
    remaining = sum(item.id not in tally.ids for item in the_plan.items)
    document = summary_document(
        tally,
        input_location=the_plan.input,
        results=the_plan.output,
        shard=str(the_plan.shard),
        items=len(the_plan.items),
        remaining=remaining,
        answered_now=outcome.answered,
        skipped=skipped,
        startup_s=outcome.startup_s,
        run_s=outcome.run_s,
        status="stopped" if outcome.stopped_by else "completed",
    )
    summary = summary_path(local)
    write_summary(summary, document)
    summary_location = remote.publish_summary(summary) if remote is not None else str(summary)
    log.info(
        "done, shard %s: %d answered now (%s items/s), %d in %s, %d errors, %d remaining; summary in %s",
        the_plan.shard,
        outcome.answered,
        document["this_run"]["items_per_s"] or 0,
        document["answered"],
        the_plan.output,
        document["errors"],
        remaining,
        summary_location,
        extra={"summary": document},
    )
    return 128 + outcome.stopped_by if outcome.stopped_by else 0


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # argparse's own usage errors: exit 2 with its message
    settings = settings_or_exit(check_store=False, serves_auth=False)
    tty = configure_logging(settings.log_level, sys.stderr)
    sources = Sources(settings)
    try:
        the_plan = plan(args, settings, sources)
        if args.dry_run:
            return dry_run(the_plan, sources, args.limit)
        return execute(args, settings, the_plan, sources, tty)
    except UsageError as exc:
        sys.stderr.write(f"python -m batch: error: {exc}\n")
        return USAGE_EXIT
    except VerityError as exc:  # an outage: listing S3, or writing the results there
        sys.stderr.write(f"python -m batch: the run failed: {exc.message}\n")
        return 1


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))
