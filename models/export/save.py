"""Put an exported ONNX file and its metadata into the BentoML model store (``bentos/``)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import bentoml
import yaml
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
    full = {**metadata, "sha256": sha, **extra}
    try:
        existing = get_stored(tag)
    except NotFound:
        existing = None
    if existing is not None:
        log.info("model %s already stored at %s", tag, existing.path)
        changed = {k: v for k, v in full.items() if existing.metadata.get(k) != v}
        return refresh_metadata(existing, changed) if changed else existing
    labels = {k: str(full[k]) for k in ("modality", "precision", "weights")}
    with bentoml.models.create(tag, labels=labels, metadata=full) as model:
        for name, path in files.items():
            shutil.copyfile(path, model.path_of(name))
    stored = get_stored(tag)
    log.info("stored model %s (%s weights, %d file(s)) at %s", tag, full["weights"], len(files), stored.path)
    return stored


def refresh_metadata(stored: StoredModel, added: dict[str, Any]) -> StoredModel:
    """Record what this export measured on the same bytes that an older one did not, or measured
    otherwise (say, INT8 agreement now taken with rows run alone, as served): the same graph, so
    the figures describe the stored model. BentoML has no call for this; model.yaml is plain YAML."""
    info_path = stored.path / "model.yaml"
    info = yaml.safe_load(info_path.read_text(encoding="utf-8"))
    info["metadata"] = {**info.get("metadata", {}), **added}
    tmp = info_path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")
    tmp.replace(info_path)
    log.info("model %s: recorded %s", stored.tag, ", ".join(sorted(added)))
    return get_stored(stored.tag)
