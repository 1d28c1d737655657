"""Items through the detection pipelines, a few at a time, each answered by one line.

The pipelines are the API's, in this process (``detect.files.detect_file``, as a job runs them):
the same checks, limits and result. Several items run at once (``concurrency``): while one
item's rows are in a model, the others decode (on the engine's decode pool) and queue their rows,
which the in-process client then runs together in one ONNX Runtime call
(``detect.model_clients.InProcessModelClient``): pictures and face crops of many files per call.

Nothing an item does stops the run: its media's typed error (``errors.VerityError``) becomes its
error line, and so does anything unexpected (``internal_error``, with the traceback in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from batch.items import Item
from batch.results import ResultsFile
from batch.sources import Sources
from detect.engine import Engine
from detect.files import detect_file, modality_of, parse_options
from errors import Forbidden, UnsupportedMedia, VerityError

log = logging.getLogger(__name__)


async def answer(
    engine: Engine, sources: Sources, item: Item, default_options: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The output line of ``item``: ``{"id", "source", "modality", "result"}`` or
    ``{..., "error": {"code", "message"}}``. ``default_options`` (per modality) fill in what the
    item's own options leave out."""
    line: dict[str, Any] = {"id": item.id, "source": item.source, "modality": item.modality}
    try:
        copy = sources.local_file(item.source)
        # Entering and leaving may be an S3 download and a folder's removal: blocking I/O.
        path = await anyio.to_thread.run_sync(copy.__enter__)
        try:
            detected = await anyio.to_thread.run_sync(modality_of, path)
            modality = item.modality or detected
            if modality is None:
                raise UnsupportedMedia(
                    "not an image, audio or video file by its content, nor a .txt / .md text",
                    code="unsupported_media_type",
                )
            line["modality"] = modality
            options = parse_options(
                modality,
                {**default_options.get(modality, {}), **item.options},
                max_frames_cap=engine.settings.job_video_max_frames_cap,
            )
            result = await detect_file(engine, path, modality, options, detected=detected)
            line["result"] = engine.sign(result)
        finally:
            await anyio.to_thread.run_sync(copy.__exit__, None, None, None)
    except VerityError as exc:
        line["error"] = {"code": exc.code, "message": exc.message}
    except OSError as exc:  # there, but not readable: permissions, an I/O error, a vanished mount
        unreadable = Forbidden(
            f"cannot read {item.source}: {exc.strerror or type(exc).__name__}", code="file_unreadable"
        )
        line["error"] = {"code": unreadable.code, "message": unreadable.message}
    except Exception as exc:
        log.exception("item %s failed unexpectedly", item.id)
        line["error"] = {"code": "internal_error", "message": f"{type(exc).__name__} (details in the log)"}
    return line


async def run_items(
    engine: Engine,
    sources: Sources,
    items: Sequence[Item],
    results: ResultsFile,
    *,
    concurrency: int,
    default_options: dict[str, dict[str, Any]],
    on_line: Callable[[dict[str, Any]], None],
    stop: anyio.Event,
) -> int:
    """Answer ``items``, ``concurrency`` at a time, each line appended to ``results`` and then
    given to ``on_line``; once ``stop`` is set no further item starts (those running finish).
    Returns how many were answered."""
    pending = iter(items)  # shared by the workers: each takes the next item
    answered = 0

    async def work() -> None:
        nonlocal answered
        for item in pending:
            if stop.is_set():
                return
            line = await answer(engine, sources, item, default_options)
            await anyio.to_thread.run_sync(results.append, line)  # write + fsync: off the loop
            answered += 1
            on_line(line)

    async with anyio.create_task_group() as group:
        for _ in range(max(1, min(concurrency, len(items)))):
            group.start_soon(work)
    return answered
