"""``python -m models``: export catalog models into the BentoML store and list what is stored.

python -m models export vit-dima806                 # hub checkpoint, or dev weights offline
python -m models export vit-dima806 --source ./my-hf-dir
python -m models export keras-cnn --source detector.h5
python -m models export cnn-lstm --source video_model_v2.keras --encoder finetuned_model.h5
python -m models export cnn-lstm                    # the video pair (encoder + LSTM head), dev weights
python -m models export wav2vec2-audio              # the default audio model (hub or dev)
python -m models export roberta-openai-detector     # the default text model (hub or dev)
python -m models export mtcnn                       # the face detector (weights ship with `mtcnn`)
python -m models ensure                             # export the served models if missing
python -m models calibrate vit-dima806 --data labeled.jsonl   # calibration map + operating points
python -m models list                               # what the store holds (JSON lines)
python -m models bento verity:latest                # what a built bento holds (`make build` runs it)

The model store is $BENTOML_HOME: the project's bentos/ folder unless the environment names
another (`make` and every .venv interpreter set it). `--offline` never contacts the model hub and
builds the architecture with seeded dev weights (`weights: "dev"` in every result).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from config.startup import settings_or_exit
from errors import ModelError
from logs import configure_logging
from models.store import StoredModel, store_home

log = logging.getLogger("models")


def _cmd_export(args: argparse.Namespace) -> int:
    from models.export.pipeline import export_model

    log.info("exporting %s into the model store under %s", args.model_id, store_home())
    stored = export_model(
        args.model_id,
        source=args.source,
        offline=args.offline,
        int8=not args.no_int8,
        fake_index=args.fake_index,
        like_model=args.like,
        **({"encoder": args.encoder} if args.encoder else {}),
    )
    # Each model was logged where it was stored (models/export/save.py); the summary for scripts:
    log.info("exported %s: %s", args.model_id, ", ".join(m.tag for m in stored))
    return 0


def _source_option(stored: StoredModel) -> str:
    """The ``--source`` that exports ``stored`` again, as far as its metadata tells."""
    source = str(stored.metadata.get("source", ""))
    if source.startswith("hf:"):
        return f" --source {source.removeprefix('hf:')}"
    if source.startswith("dev:"):
        return " --offline"
    return " --source YOUR_FILE"


def _ensure_one(model_id: str, precision: str, *, offline: bool) -> None:
    """Export ``model_id`` from its catalog source unless the store can already serve it.

    Never replaces what is stored: a model exported by hand (``--source``, ``--no-int8``) that
    lacks the served precision is reported with the command to fix it, not overwritten by a hub
    or dev export, because serving always takes the newest version."""
    from models.catalog import load_catalog
    from models.store import find_stored, find_video_pair, list_stored

    entry = load_catalog().get(model_id)
    video = entry is not None and entry.modality == "video-head"
    found = find_video_pair(model_id, precision) if video else find_stored(model_id, precision)
    if found is not None:
        model = found[1] if video else found
        log.info(
            "%s already in the model store: %s (%s weights, source %s) at %s",
            model_id,
            model.tag,
            model.weights,
            model.metadata.get("source"),
            model.path,
        )
        return
    others = list_stored(model_id)
    if others:
        raise SystemExit(
            f"{model_id} is stored ({', '.join(m.tag for m in others)}) but cannot be served as {precision} "
            f"(VERITY_PRECISION{', or its encoder is missing' if video else ''}). Export it again: "
            f"`python -m models export {model_id}{_source_option(others[0])}`, or serve what is stored; "
            "`make serve` never replaces a stored model"
        )
    if entry is not None and entry.source == "file" and not video:
        raise SystemExit(
            f"{model_id} is served but not in the model store under {store_home()}, and it comes from "
            f"your own file: run `python -m models export {model_id} --source FILE` first"
        )
    from models.export.pipeline import export_model

    log.info("%s is not in the model store under %s: exporting it", model_id, store_home())
    export_model(model_id, offline=offline)  # each stored model is logged with its path


def _cmd_ensure(args: argparse.Namespace) -> int:
    settings = settings_or_exit(check_store=False)
    for model_id in [
        *settings.served_image_models,
        *settings.served_audio_models,
        *settings.served_text_models,
        *settings.served_video_models,
    ]:
        # auto serves int8 only beside its fp32 export (export_model stores both), else fp32.
        _ensure_one(
            model_id, "fp32" if settings.precision == "auto" else settings.precision, offline=args.offline
        )
    # fp32 only: the face detector has no int8 export (models/export/mtcnn.py says why).
    for model_id in settings.served_face_models:
        _ensure_one(model_id, "fp32", offline=args.offline)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from models.calibrate import calibrate, exports_to_calibrate, read_labelled
    from models.export.save import refresh_metadata

    settings = settings_or_exit(check_store=False)
    data = Path(args.data)
    if not data.is_file():
        raise ValueError(f"no file {data}")
    items = read_labelled(data)
    for stored in exports_to_calibrate(args.model_id, args.precision):
        log.info("calibrating %s on %d items of %s", stored.tag, len(items), data)
        block = calibrate(settings, stored, data, items, args.method)
        refresh_metadata(stored, {"calibration": block})
        sys.stdout.write(json.dumps({"tag": stored.tag, "calibration": block}) + "\n")
    return 0


def _cmd_list(_: argparse.Namespace) -> int:
    from models.store import list_stored

    for model in list_stored():
        sys.stdout.write(json.dumps({"tag": model.tag, **model.describe()}) + "\n")
    return 0


def _cmd_bento(args: argparse.Namespace) -> int:
    """What `make build` built: the bento's tag and folder, the models it references (they stay in
    the model store until `bentoml export` packs them), and how it runs."""
    import bentoml
    import yaml

    from models.store import get_stored

    bento = bentoml.get(args.tag)
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text(encoding="utf-8"))
    tags = sorted({m["tag"] for svc in info.get("services", []) for m in svc.get("models", [])})
    total = 0
    lines = [f"built bento {bento.tag} in {bento.path}", f"models ({len(tags)}):"]
    for tag in tags:
        stored = get_stored(tag)
        size = sum(f.stat().st_size for f in stored.path.rglob("*") if f.is_file())
        total += size
        lines.append(f"  {tag:<40} {stored.weights:>10} weights  {size / 1e6:8.1f} MB")
    envs = ", ".join(f"{e['name']}={e['value']}" for e in info.get("envs") or [])
    lines += [
        f"model files: {total / 1e6:.1f} MB in {store_home() / 'models'}",
        f"envs applied where it runs: {envs or '(none)'}",
        f"run it:     VERITY_JWT_SECRET=... .venv/bin/bentoml serve {bento.tag}",
        f"export it:  .venv/bin/bentoml export {bento.tag} verity.bento",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export one catalog model to ONNX (fp32 + int8)")
    export.add_argument("model_id")
    export.add_argument("--source", help="hub id, local HF directory, or a .h5/.keras file")
    export.add_argument("--offline", action="store_true", help="never contact the hub (dev weights)")
    export.add_argument("--no-int8", action="store_true")
    export.add_argument("--fake-index", type=int, help="output index meaning fake (Keras / ONNX files)")
    export.add_argument("--like", help="for a .onnx source: the catalog id whose preprocessing it uses")
    export.add_argument(
        "--encoder", help="for cnn-lstm: the Keras CNN (.h5/.keras) whose features the LSTM takes"
    )
    export.set_defaults(func=_cmd_export)
    ensure = sub.add_parser("ensure", help="export the served models unless already stored")
    ensure.add_argument("--offline", action="store_true")
    ensure.set_defaults(func=_cmd_ensure)
    cal = sub.add_parser("calibrate", help="fit a calibration map and operating points on labelled media")
    cal.add_argument("model_id")
    cal.add_argument("--data", required=True, help="JSONL: {media, label: fake|real, domain?} per line")
    cal.add_argument("--method", default="auto", choices=["auto", "platt", "temperature", "isotonic"])
    cal.add_argument("--precision", choices=["fp32", "int8"], help="default: every stored precision")
    cal.set_defaults(func=_cmd_calibrate)
    sub.add_parser("list", help="list stored models as JSON lines").set_defaults(func=_cmd_list)
    bento = sub.add_parser("bento", help="describe a built bento: models, sizes, how to run it")
    bento.add_argument("tag")
    bento.set_defaults(func=_cmd_bento)
    args = parser.parse_args(argv)
    configure_logging(settings_or_exit(check_store=False))
    try:
        return int(args.func(args))
    except (ValueError, ModelError) as exc:  # a bad source or option: say what, no traceback
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
