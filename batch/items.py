"""What a run goes through: the items of a folder, a JSONL manifest or an S3 prefix.

Every item has an ``id``, the key of resume and sharding, so ids are deterministic: a file's path
relative to the folder (or the key relative to the prefix) in POSIX form, or the manifest's own.
Folders are walked recursively in sorted order; names starting with "." are skipped (``.git``,
``.DS_Store``).

A manifest is read whole before anything runs, and one bad line refuses the run, naming the line
(``UsageError``): an item without a usable id cannot be resumed or sharded, and finding out after
hours of work that line 9000 was never run is worse than fixing it first. Each line is an object:
``{"id": str, "path": str | "uri": str, "modality"?: "image"|"audio"|"video", "options"?: {...}}``
(the options of a job for that modality); other keys are refused, never silently dropped. A
relative ``path`` is relative to the manifest's folder; a ``uri`` is ``s3://bucket/key`` or
``file:///abs/path``. The items' own media problems are not the manifest's: a missing file
becomes that item's error line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from batch.usage import UsageError
from detect.files import MODALITIES, parse_options
from errors import VerityError

MANIFEST_KEYS = frozenset({"id", "path", "uri", "modality", "options"})


@dataclass(frozen=True)
class Item:
    id: str
    source: str  # a local path, or an s3:// URI: where the bytes are read from, as the output says
    modality: str | None = None  # None: told by the file's magic bytes when it runs
    options: dict[str, Any] = field(default_factory=dict)


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def collect(
    location: str,
    *,
    modality: str | None,
    max_frames_cap: int,
    list_s3: Callable[[str], list[tuple[str, str]]],
) -> list[Item]:
    """The items of ``--input``: an S3 prefix (listed by ``list_s3``: (id, uri) pairs), a folder,
    or a manifest file; ``modality`` is given to every item that does not name its own."""
    if is_s3(location):
        return [Item(item_id, uri, modality) for item_id, uri in list_s3(location)]
    path = Path(location)
    if path.is_dir():
        return [Item(item_id, str(path / item_id), modality) for item_id in list_folder(path)]
    if path.is_file():
        return read_manifest(path, modality=modality, max_frames_cap=max_frames_cap)
    raise UsageError(f"--input {location}: no such file or folder")


def list_folder(root: Path) -> list[str]:
    """Relative POSIX paths of the files under ``root``, sorted, hidden names skipped."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # os.walk descends in this order
        base = Path(folder).relative_to(root)
        found.extend((base / name).as_posix() for name in sorted(files) if not name.startswith("."))
    return sorted(found)


def read_manifest(path: Path, *, modality: str | None, max_frames_cap: int) -> list[Item]:
    items: list[Item] = []
    seen: dict[str, int] = {}
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--input {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue  # a blank line (often the last) is not an item
                item = _manifest_item(line, path.parent, modality, max_frames_cap, f"{path}:{number}")
                if item.id in seen:
                    raise UsageError(f"{path}:{number}: id {item.id!r} again (first on line {seen[item.id]})")
                seen[item.id] = number
                items.append(item)
        except UnicodeDecodeError:
            raise UsageError(
                f"{path}: not UTF-8 text; a file given as --input is read as a JSONL manifest"
            ) from None
    return items


def _manifest_item(
    line: str, folder: Path, default_modality: str | None, max_frames_cap: int, where: str
) -> Item:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not JSON ({exc.msg}); a file given as --input is read as a JSONL manifest"
        ) from None
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: each line must be a JSON object")
    if unknown := sorted(set(entry) - MANIFEST_KEYS):
        raise UsageError(f"{where}: unknown keys {unknown} (known: {sorted(MANIFEST_KEYS)})")
    item_id = entry.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise UsageError(f"{where}: 'id' must be a non-empty string")
    modality = entry.get("modality", default_modality)
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"{where}: 'modality' must be one of {list(MODALITIES)}, not {modality!r}")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise UsageError(f"{where}: 'options' must be an object")
    if modality is not None and options:
        # Checked now when the modality is known; otherwise when the item runs (an error line).
        try:
            parse_options(modality, options, max_frames_cap=max_frames_cap)
        except VerityError as exc:
            raise UsageError(f"{where}: {exc.message}") from None
    return Item(item_id, _source(entry, folder, where), modality, options)


def _source(entry: dict[str, Any], folder: Path, where: str) -> str:
    path, uri = entry.get("path"), entry.get("uri")
    if (path is None) == (uri is None):
        raise UsageError(f"{where}: give exactly one of 'path' and 'uri'")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise UsageError(f"{where}: 'path' must be a non-empty string")
        return str(folder / path)  # an absolute path stays itself
    if not isinstance(uri, str):
        raise UsageError(f"{where}: 'uri' must be a string")
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc and parsed.path.strip("/"):
        return uri
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return unquote(parsed.path)
    raise UsageError(f"{where}: 'uri' must be s3://bucket/key or file:///absolute/path, not {uri!r}")
