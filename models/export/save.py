"""Put an exported ONNX file and its metadata into the BentoML model store (``bentos/``)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from models.store import ONNX_FILE, StoredModel, get_stored

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_onnx(onnx_path: Path, metadata: dict[str, Any]) -> StoredModel:
    """Store ``onnx_path`` as ``<model_id>:<precision>-<sha12>``; storing the same bytes twice
    is a no-op, so re-running an export is idempotent."""
    return _store({ONNX_FILE: onnx_path}, metadata, sha256_of(onnx_path), {})


def save_onnx_files(files: dict[str, Path], metadata: dict[str, Any]) -> StoredModel:
    """Store graphs that only work together (MTCNN's P/R/O-nets) as ONE model holding each file
    under its name. The tag's digest covers every file's name and bytes, and ``files`` in the
    metadata lists each one's sha256; storing the same bytes twice is a no-op, as save_onnx."""
    digests = {name: sha256_of(path) for name, path in sorted(files.items())}
    manifest = "".join(f"{name}:{digest}\n" for name, digest in digests.items())
    return _store(files, metadata, hashlib.sha256(manifest.encode()).hexdigest(), {"files": digests})


def _store(files: dict[str, Path], metadata: dict[str, Any], sha: str, extra: dict[str, Any]) -> StoredModel:
    """``files`` (name in the model -> path) as ``<model_id>:<precision>-<sha12>``, unless that
    tag is stored already."""
    tag = f"{metadata['model_id']}:{metadata['precision']}-{sha[:12]}"
    try:
        existing = get_stored(tag)
        log.info("model %s already stored at %s", tag, existing.path)
        return existing
    except NotFound:
        pass
    full = {**metadata, "sha256": sha, **extra}
    labels = {k: str(full[k]) for k in ("modality", "precision", "weights")}
    with bentoml.models.create(tag, labels=labels, metadata=full) as model:
        for name, path in files.items():
            shutil.copyfile(path, model.path_of(name))
    stored = get_stored(tag)
    log.info("stored model %s (%s weights, %d file(s)) at %s", tag, full["weights"], len(files), stored.path)
    return stored
