"""``python -m models``: export catalog models into the BentoML store and list what is stored.

python -m models export vit-dima806                 # hub checkpoint, or dev weights offline
python -m models export vit-dima806 --source ./my-hf-dir
python -m models export keras-cnn --source detector.h5
python -m models export cnn-lstm --source video_model_v2.keras --encoder finetuned_model.h5
python -m models export cnn-lstm                    # the video pair (encoder + LSTM head), dev weights
python -m models export wav2vec2-audio              # the default audio model (hub or dev)
python -m models export mtcnn                       # the face detector (weights ship with `mtcnn`)
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
        **({"encoder": args.encoder} if args.encoder else {}),
    )
    for model in stored:
        log.info("stored %s", model.tag, extra={"model": model.describe()})
    return 0


def _cmd_ensure(args: argparse.Namespace) -> int:
    from models.store import find_stored, find_video_pair

    settings = get_settings()
    for model_id in [*settings.served_image_models, *settings.served_audio_models]:
        if find_stored(model_id, "fp32") and find_stored(model_id, "int8"):
            log.info("%s already in the model store", model_id)
            continue
        from models.export.pipeline import export_model

        export_model(model_id, offline=args.offline)
    for model_id in settings.served_video_models:
        # The encoder + head pair, exported together (models/export/keras_video.py); no --source:
        # the dev pair, built offline.
        if find_video_pair(model_id, "fp32") and find_video_pair(model_id, "int8"):
            log.info("%s already in the model store", model_id)
            continue
        from models.export.pipeline import export_model

        export_model(model_id, offline=args.offline)
    for model_id in settings.served_face_models:
        # fp32 only: the face detector has no int8 export (models/export/mtcnn.py says why).
        if find_stored(model_id, "fp32"):
            log.info("%s already in the model store", model_id)
            continue
        from models.export.pipeline import export_model

        export_model(model_id)
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
    export.add_argument(
        "--encoder", help="for cnn-lstm: the Keras CNN (.h5/.keras) whose features the LSTM takes"
    )
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
