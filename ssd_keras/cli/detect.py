"""``detect``: SSD300 on images; annotated PNGs, ``detections.csv``, ``detections.json`` and, with
``--coco-json``, COCO results. ``--model FILE`` runs an exported model (LiteRT, ONNX, SavedModel)
instead of a Keras one: a LiteRT or ONNX file imports no TensorFlow (up to 10 images)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._common import (add_command, add_exported_model_option, add_model_options, add_nms_option,
                      check_exported_options, load_exported_model, load_model, nms_thresh, probability)

__all__ = ["add_parser", "run", "expand_image_arguments", "CSV_COLUMNS"]

PER_IMAGE_LINES = 10  # a line per image up to this many images, then a progress bar
CSV_COLUMNS = ("image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax")  # detections_csv's
EXAMPLES = (
    "%(prog)s photo.jpg photos/ 'more/*.png' --out detections",
    "%(prog)s scene.png --weights runs/mine/final.weights.h5 --conf-thresh 0.5"
    "   # the run's config.json gives classes and width",
    "%(prog)s val/ --conf-thresh 0.01 --coco-json val_results.json   # for COCO tools (see --help)",
    "%(prog)s photos/ --model ssd300_int8.tflite   # the exported file you deploy (LiteRT, ONNX, SavedModel)",
)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "detect", help="detect objects in images",
        description="Run SSD300 on images; write one annotated PNG per image, detections.csv (image, "
                    "class, score, pixel box; image paths relative to --out, or absolute) and "
                    "detections.json to --out. Without weights: the VOC weights when present, else the "
                    "embedded shapes model (it says which); --model runs an exported file (.tflite, .onnx, "
                    "SavedModel) instead. evaluate --detections scores detections.csv.",
        examples=EXAMPLES)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders of images or glob patterns")
    add_model_options(parser, "the embedded shapes model")
    add_exported_model_option(parser)
    parser.add_argument("--out", default="detections", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--conf-thresh", type=probability, default=0.6,
                        help="minimum confidence of a detection, in [0, 1] (default: %(default)s; with --model, "
                             "one below the file's own threshold gets a warning)")
    add_nms_option(parser)
    parser.add_argument("--coco-json", metavar="FILE",
                        help="also write the detections in COCO's results format ([{image_id, category_id, "
                             "bbox: [x, y, w, h], score}], pixels): image ids 1, 2, ... in the order of the "
                             "images (as listed here, folders sorted), category id = the class's 1-based "
                             "position in the model's class list; the ids 'csv to-coco' gives a CSV listing "
                             "the same images in that order with the same class list")
    parser.set_defaults(run=run)
    return parser


def expand_image_arguments(arguments: Sequence[str]) -> list[Path]:
    """Files as given, folders as the image files in them (sorted, not recursive), glob
    patterns as their matches (sorted). A folder or pattern that matches nothing raises
    FileNotFoundError; a missing file is reported when it is loaded."""
    from ..data.csv_tools import IMAGE_EXTENSIONS

    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(p for p in Path(argument).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif glob.has_magic(argument):
            found = [Path(p) for p in sorted(glob.glob(argument)) if os.path.isfile(p)]
        else:
            found = [Path(argument)]
        if not found:
            raise FileNotFoundError(f"no image files in {argument}")
        paths += found
    return paths


def _unique_output(out_dir: Path, image_path: Path, taken: set[str]) -> Path:
    """``out_dir/<stem>.png``, or ``<stem>_2.png``, ... when another image had that stem."""
    stem, k = image_path.stem, 1
    name = f"{stem}.png"
    while name in taken:
        k += 1
        name = f"{stem}_{k}.png"
    taken.add(name)
    return out_dir / name


def _detector(args: argparse.Namespace):
    """``(detect one RGB image -> rows, class names)`` of ``--model`` or the Keras model."""
    if args.model is not None:
        model, class_names, _ = load_exported_model(args, args.conf_thresh)
        return (lambda image: model.detect([image], confidence_threshold=args.conf_thresh)[0]), class_names
    model, class_names, _ = load_model(args)
    from .. import layout
    from ..ssd import detect
    from ..ssd_utils import BBoxUtility

    bbox_util = BBoxUtility(layout.num_classes_of(model), nms_thresh=nms_thresh(args))
    return (lambda image: detect(model, [image], bbox_util, confidence_threshold=args.conf_thresh)[0]), class_names


def run(args: argparse.Namespace) -> int:
    check_exported_options(args)
    paths = expand_image_arguments(args.images)
    find, class_names = _detector(args)
    from .. import layout
    from ..boxes import to_pixels
    from ..data.coco import coco_results
    from ..detections_csv import write_detections_csv
    from ..image import load_image
    from ..visualization import draw_detections, save_image

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures, rows, records, taken, coco = 0, [], [], set(), []
    image_ids: dict[str, int] = {}  # csv to-coco's numbering: by first appearance
    for path in paths:
        image_ids.setdefault(os.path.normpath(os.path.abspath(path)), len(image_ids) + 1)
    num_images = len(image_ids)
    progress = None
    if len(paths) > PER_IMAGE_LINES:
        import keras

        progress = keras.utils.Progbar(len(paths))
    for k, path in enumerate(paths):
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        detections = find(image)
        height, width = image.shape[:2]
        out_path = _unique_output(out_dir, path, taken)
        save_image(out_path, draw_detections(image, detections, class_names))
        found = []
        pixels = to_pixels(detections[:, layout.BOX], width, height) if len(detections) else []
        for row, box in zip(detections, pixels):
            name, score = class_names[int(row[layout.LABEL]) - 1], float(row[layout.CONFIDENCE])
            found.append({"class_name": name, "score": round(score, 4), "box": [round(float(v), 1) for v in box]})
            rows.append((path, name, score, box))
        image_id = image_ids.pop(os.path.normpath(os.path.abspath(path)), None)  # an image listed twice: once
        if len(detections) and image_id is not None:
            coco += coco_results(image_id, detections[:, layout.LABEL], detections[:, layout.CONFIDENCE], pixels,
                                 decimals=2)
        records.append({"image_path": str(path), "width": width, "height": height, "annotated": str(out_path),
                        "detections": found})
        if progress is None:
            print(f"{path}: {len(detections)} detections -> {out_path}")
        else:
            progress.update(k + 1)

    csv_path = out_dir / "detections.csv"
    write_detections_csv(csv_path, rows)
    (out_dir / "detections.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(rows)} detections in {len(paths) - failures} images -> {csv_path} and detections.json")
    if args.coco_json:
        Path(args.coco_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.coco_json).write_text(json.dumps(coco) + "\n")
        print(f"COCO results ({len(coco)} detections, image ids 1..{num_images}, category ids 1.."
              f"{len(class_names)}) -> {args.coco_json}")
    return 1 if failures else 0
