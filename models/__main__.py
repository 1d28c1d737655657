"""``python -m models``: export catalog models into the BentoML store and list what is stored.

python -m models export vit-dima806                 # hub checkpoint, or dev weights offline
python -m models export vit-dima806 --source ./my-hf-dir
python -m models export keras-cnn --source detector.h5
python -m models export wav2vec2-audio              # the default audio model (hub or dev)
python -m models ensure                             # export the served models if missing
python -m models list
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from config import get_settings
from logs import configure_logging

log = logging.getLogger("models")


def _cmd_export(args: argparse.Namespace) -> int:
    from models.export.pipeline import export_model

    stored = export_model(
        args.model_id,
        source=args.source,
        offline=args.offline,
        int8=not args.no_int8,
        fake_index=args.fake_index,
        like_model=args.like,
    )
    for model in stored:
        log.info("stored %s", model.tag, extra={"model": model.describe()})
    return 0


def _cmd_ensure(args: argparse.Namespace) -> int:
    from models.store import find_stored

    settings = get_settings()
    for model_id in [*settings.served_image_models, *settings.served_audio_models]:
        if find_stored(model_id, "fp32") and find_stored(model_id, "int8"):
            log.info("%s already in the model store", model_id)
            continue
        from models.export.pipeline import export_model

        export_model(model_id, offline=args.offline)
    return 0


def _cmd_list(_: argparse.Namespace) -> int:
    from models.store import list_stored

    for model in list_stored():
        sys.stdout.write(json.dumps({"tag": model.tag, **model.describe()}) + "\n")
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
    export.set_defaults(func=_cmd_export)
    ensure = sub.add_parser("ensure", help="export the served models unless already stored")
    ensure.add_argument("--offline", action="store_true")
    ensure.set_defaults(func=_cmd_ensure)
    sub.add_parser("list", help="list stored models as JSON lines").set_defaults(func=_cmd_list)
    args = parser.parse_args(argv)
    configure_logging(get_settings())
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
