"""``export``: SSD300 for deployment, with decoding and NMS inside: a LiteRT (``.tflite``) or ONNX
file, or a TensorFlow SavedModel folder, at float32, float16, dynamic-range or int8 precision
(:func:`ssd_keras.export.export_model`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..exported import DEFAULT_CALIBRATION_SIZE, FORMATS, PRECISIONS, check_export
from ._common import (DEFAULT_NMS_THRESH, OptionConflict, add_command, add_model_options, load_model, positive_int,
                      probability)

__all__ = ["add_parser", "run", "CALIBRATION_SIZE", "SYNTHETIC", "synthetic_calibration"]

CALIBRATION_SIZE = DEFAULT_CALIBRATION_SIZE
SYNTHETIC = "synthetic"
"""``--calibration synthetic``: random shapes scenes (what the embedded shapes model knows)."""
SYNTHETIC_SEED = 0
EXAMPLES = (
    "%(prog)s --out shapes.tflite   # the model detect would run, litert float32",
    "%(prog)s --weights runs/mine/final.weights.h5 --format onnx --precision float16 --out mine.onnx",
    "%(prog)s --weights runs/mine/final.weights.h5 --precision int8 --calibration val/annotations.csv "
    "--out mine_int8.tflite",
    "%(prog)s --precision int8 --calibration synthetic --out shapes_int8.tflite",
    "%(prog)s --format saved_model --out exported/shapes   # a folder",
)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "export", help="export a model for deployment (LiteRT, ONNX, SavedModel)",
        description="Export SSD300 with box decoding and non-maximum suppression inside, so that the file "
                    "maps a preprocessed image to detection rows [label, confidence, xmin, ymin, xmax, ymax]: "
                    "a LiteRT (.tflite) or ONNX (.onnx) file for one image at a time, or a TensorFlow "
                    "SavedModel folder (any batch). The file records the class names and detection "
                    "settings; ssd_keras.load_exported runs it. Without weights: the model detect would "
                    "run (the VOC weights when present, else the embedded shapes model; it says which).",
        examples=EXAMPLES)
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="the file to write (name it .tflite for litert, .onnx for onnx: the suffix is "
                             "how a file's format is recognised), or the folder for saved_model; written "
                             "exactly there, replacing what is there")
    add_model_options(parser, "the embedded shapes model")
    parser.add_argument("--format", choices=tuple(FORMATS), default=None,
                        help="litert (.tflite, LiteRT builtins only), onnx (opset 17, ONNX Runtime) or "
                             "saved_model (a folder, float32 only) (default: from --out's suffix, .tflite or "
                             ".onnx)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32; float16 (float16 weights, half the file); dynamic (int8 weights, "
                             "float activations); int8 (int8 weights and activations, calibrated: needs "
                             "--calibration). Decoding and NMS stay float32 (default: %(default)s)")
    parser.add_argument("--calibration", metavar="DIR|CSV|synthetic",
                        help="for --precision int8: a folder of images (searched recursively), an annotation "
                             "CSV (its images), or 'synthetic' for random shapes scenes (they suit the "
                             "embedded shapes model only; a folder of that name: ./synthetic); images like "
                             "those the model will see")
    parser.add_argument("--calibration-size", type=positive_int, default=CALIBRATION_SIZE, metavar="N",
                        help="calibrate on the first N images at most (default: %(default)s)")
    parser.add_argument("--keep-top-k", type=positive_int, default=200, metavar="N",
                        help="detection rows per image in the file's output (default: %(default)s)")
    parser.add_argument("--conf-thresh", type=probability, default=0.01, metavar="X",
                        help="lowest confidence the file keeps, in [0, 1]; a runtime may raise it later, "
                             "never lower it (default: %(default)s)")
    parser.add_argument("--nms-thresh", type=probability, default=DEFAULT_NMS_THRESH, metavar="X",
                        help="IoU threshold of non-maximum suppression, in [0, 1] (default: %(default)s)")
    parser.set_defaults(run=run)
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """What can be checked before the model loads (``exported.check_export``'s rules, and the
    calibration source); ValueError, OSError or MissingRuntimeError naming the problem."""
    if args.precision == "int8" and args.calibration not in (None, SYNTHETIC) \
            and not Path(args.calibration).exists():
        raise FileNotFoundError(f"calibration source not found: {args.calibration}")
    if args.precision != "int8" and args.calibration is not None:
        print(f"note: --calibration is for --precision int8 only; {args.precision} does not use it",
              file=sys.stderr)
    if args.precision == "int8" and args.calibration is None:
        raise OptionConflict("--precision int8 needs --calibration (a folder of images, an annotation CSV or, "
                             "for the shapes model, 'synthetic'): the images fix the int8 ranges of the activations")
    _, args.format = check_export(args.out, args.format, args.precision, args.calibration is not None)
    if args.precision == "int8" and args.calibration != SYNTHETIC and Path(args.calibration).is_dir():
        from ..data.csv_tools import list_images

        if not list_images(Path(args.calibration)):
            raise ValueError(f"calibration source {args.calibration} has no images")


def synthetic_calibration(input_shape, size: int, seed: int = SYNTHETIC_SEED):
    """``size`` random shapes scenes (:func:`ssd_keras.data.synthetic.make_scene`), resized to
    ``input_shape`` ``(H, W, 3)`` and preprocessed: ``(size, H, W, 3)`` float32."""
    import numpy as np

    from ..data.synthetic import make_scene
    from ..image import model_batches

    rng = np.random.default_rng(seed)
    return next(model_batches([make_scene(rng)[0] for _ in range(size)], tuple(input_shape[:2]), size))


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def run(args: argparse.Namespace) -> int:
    from ..backends import require_tensorflow

    require_tensorflow("export (the converters trace TensorFlow graphs)")
    _check_arguments(args)
    model, class_names, _ = load_model(args)
    from ..export import calibration_images, export_model

    start = time.perf_counter()
    calibration = None
    if args.precision == "int8":
        shape = model.input_shape[1:]
        calibration = synthetic_calibration(shape, args.calibration_size) if args.calibration == SYNTHETIC \
            else calibration_images(args.calibration, shape, args.calibration_size)
        print(f"calibration: {len(calibration)} images from {args.calibration}")
    path = export_model(model, args.out, format=args.format, precision=args.precision, calibration=calibration,
                        keep_top_k=args.keep_top_k, calibration_size=args.calibration_size,
                        class_names=class_names, confidence_threshold=args.conf_thresh, nms_thresh=args.nms_thresh)
    seconds = time.perf_counter() - start
    size = _folder_size(Path(path)) / 1e6
    kind = "folder" if args.format == "saved_model" else "file"
    print(f"exported {args.format} {args.precision} -> {path} ({kind}, {size:.1f} MB) in {seconds:.1f} s")
    print(f"classes recorded: {', '.join(class_names)}")
    print(f"detections: up to {args.keep_top_k} rows per image, confidence > {args.conf_thresh}, "
          f"NMS IoU {args.nms_thresh}")
    return 0
