"""``python -m ssd_keras <command>``: thin command-line wrappers over the library.

Commands:
    detect   run SSD300 on images, write annotated PNGs and ``detections.csv``.
    train    train SSD300 on an annotation CSV (resumable, distributable).
    csv      write dataset CSVs from Pascal VOC XML, class folders or an image folder.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "import_tensorflow_quietly", "find_default_weights", "read_class_names"]

DEFAULT_WEIGHTS_NAME = "weights_SSD300.hdf5"
WEIGHTS_HELP = "see weights/README.md for where to get weights_SSD300.hdf5"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up log lines silenced.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level, and sends the native
    stderr to ``/dev/null`` while TensorFlow loads and looks for devices (the oneDNN and CUDA
    notices are printed there before any log level applies; GPUs are still found and used).
    Python exceptions still propagate. Used by the CLI and the tests; importing the library
    itself changes no global state.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2 (embedded interpreters)
        import tensorflow  # noqa: F401
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logging.getLogger("absl").setLevel(logging.ERROR)


def find_default_weights() -> Path | None:
    """``weights/weights_SSD300.hdf5`` in the working directory or beside the package, if any."""
    for root in (Path.cwd(), PACKAGE_ROOT):
        candidate = root / "weights" / DEFAULT_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    return None


def read_class_names(spec: str) -> list[str]:
    """``"voc"`` for the 20 Pascal VOC classes, or a class-list file (one name per line, see
    :func:`ssd_keras.data.read_class_list`)."""
    if spec.lower() == "voc":
        from .ssd import VOC_CLASSES

        return list(VOC_CLASSES)
    from .data.annotations import read_class_list

    return read_class_list(spec)


def _unique_output(out_dir: Path, image_path: Path, taken: set[str]) -> Path:
    stem, k = image_path.stem, 1
    name = f"{stem}.png"
    while name in taken:
        k += 1
        name = f"{stem}_{k}.png"
    taken.add(name)
    return out_dir / name


def _cmd_detect(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    import numpy as np

    from .image import load_image
    from .ssd import SSD300, detect
    from .ssd_utils import BBoxUtility
    from .visualization import draw_detections, save_image, to_pixels
    from .weights import load_weights

    class_names = read_class_names(args.classes)
    weights = Path(args.weights) if args.weights else find_default_weights()
    if args.weights and not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {args.weights} ({WEIGHTS_HELP})")

    if weights is None:
        import keras

        keras.utils.set_random_seed(0)  # the untrained demo is at least repeatable
    model = SSD300((300, 300, 3), num_classes=len(class_names) + 1)
    if weights is None:
        print("WARNING: no trained weights found (looked for weights/"
              f"{DEFAULT_WEIGHTS_NAME} here and beside the package; {WEIGHTS_HELP}).\n"
              "WARNING: running the whole pipeline on an UNTRAINED network: its detections are "
              "random and meaningless.", file=sys.stderr)
    else:
        report = load_weights(model, weights)
        print(f"weights: {weights} ({len(report.loaded)} layers loaded)")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bbox_util = BBoxUtility(len(class_names) + 1, nms_thresh=args.nms_thresh)
    failures, rows, taken = 0, [], set()
    for path in map(Path, args.images):
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        detections = detect(model, [image], bbox_util, confidence_threshold=args.conf_thresh)[0]
        height, width = image.shape[:2]
        out_path = _unique_output(out_dir, path, taken)
        save_image(out_path, draw_detections(image, detections, class_names))
        for label, score, *box in detections:
            xmin, ymin, xmax, ymax = to_pixels(np.asarray([box]), width, height)[0]
            rows.append([str(path), class_names[int(label) - 1], f"{score:.4f}",
                         f"{xmin:.1f}", f"{ymin:.1f}", f"{xmax:.1f}", f"{ymax:.1f}"])
        print(f"{path}: {len(detections)} detections -> {out_path}")

    csv_path = out_dir / "detections.csv"
    with open(csv_path, "w", newline="", encoding="utf8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    print(f"{len(rows)} detections in {len(args.images) - failures} images -> {csv_path}")
    return 1 if failures else 0


CPU_DEVICES_ENV = "SSD_KERAS_CPU_DEVICES"


def _split_cpu(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (before TensorFlow's runtime starts), so
    that multi-device code paths (``--strategy mirrored``) run on a machine without GPUs."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _cmd_train(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    if os.environ.get(CPU_DEVICES_ENV):
        _split_cpu(int(os.environ[CPU_DEVICES_ENV]))
    from .trainer import ORIGINAL_FREEZE, TrainConfig, TrainingStopped, train

    freeze = []
    for name in filter(None, (args.freeze or "").split(",")):
        freeze += list(ORIGINAL_FREEZE) if name == "original" else [name.strip()]
    size = args.input_size
    config = TrainConfig(csv=args.csv, out=args.out, val_csv=args.val_csv, weights=args.weights,
                         classes=read_class_names(args.classes) if args.classes else None,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         lr_decay=args.lr_decay, width_multiplier=args.width_multiplier,
                         input_shape=(size, size, 3), freeze=freeze, strategy=args.strategy,
                         seed=args.seed, workers=args.workers)
    try:
        train(config, verbose=0 if args.quiet else 1)
    except TrainingStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"done: {args.out}/final.weights.h5, history in {args.out}/history.csv")
    return 0


def _cmd_csv(args: argparse.Namespace) -> int:
    from .data import csv_tools

    if args.source == "voc":
        classes = read_class_names(args.classes) if args.classes else None
        names = csv_tools.voc_to_csv(args.annotations_dir, args.images_dir, args.out_csv,
                                     classes=classes)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)})")
    elif args.source == "folders":
        names = csv_tools.folders_to_csv(args.root, args.out_csv)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)})")
    else:
        count = csv_tools.images_to_csv(args.folder, args.out_csv)
        print(f"{args.out_csv}: {count} images")
    return 0


def _add_train_parser(commands) -> None:
    train = commands.add_parser(
        "train", help="train SSD300 on an annotation CSV",
        description="Train SSD300 with MultiboxLoss on an annotation CSV. Writes config.json, "
                    "history.csv, loss.png, checkpoints/epoch_NNN.weights.h5 and "
                    "final.weights.h5 to --out; run the same command again to resume a run "
                    "that was killed.")
    train.add_argument("--csv", required=True, help="training annotation CSV")
    train.add_argument("--val-csv", help="validation annotation CSV")
    train.add_argument("--out", required=True, metavar="DIR", help="run folder (runs/NAME)")
    train.add_argument("--weights", metavar="PATH",
                       help="initial weights (e.g. weights/weights_SSD300.hdf5 to fine-tune)")
    train.add_argument("--classes", metavar="FILE",
                       help="class list file or 'voc' (default: the CSV's sorted class names)")
    train.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    train.add_argument("--batch-size", type=int, default=16, help="default: %(default)s")
    train.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate "
                       "(default: %(default)s)")
    train.add_argument("--lr-decay", type=float, default=1.0,
                       help="multiply the learning rate by this every epoch (default: "
                            "%(default)s; the original notebook used 0.9)")
    train.add_argument("--width-multiplier", type=float, default=1.0,
                       help="channel width of SSD300 (default: %(default)s, the original)")
    train.add_argument("--input-size", type=int, default=300, help="default: %(default)s")
    train.add_argument("--freeze", metavar="LAYER,...",
                       help="comma-separated layers to freeze; 'original' stands for the "
                            "original notebook's conv1_1 .. pool3 (for fine-tuning from VOC "
                            "weights). Default: nothing is frozen")
    train.add_argument("--strategy", choices=["mirrored", "multiworker"],
                       help="tf.distribute strategy: all local GPUs, or the workers of TF_CONFIG")
    train.add_argument("--seed", type=int, help="seed for weights, order and augmentation")
    train.add_argument("--workers", type=int, default=1,
                       help="data loading threads (default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)


def _add_csv_parser(commands) -> None:
    tools = commands.add_parser("csv", help="write dataset CSVs from VOC XML, class folders "
                                            "or an image folder")
    sources = tools.add_subparsers(dest="source", required=True, metavar="SOURCE")
    voc = sources.add_parser("voc", help="Pascal VOC XML annotations to an annotation CSV")
    voc.add_argument("annotations_dir")
    voc.add_argument("images_dir")
    voc.add_argument("out_csv")
    voc.add_argument("--classes", metavar="FILE", help="class list file or 'voc'")
    folders = sources.add_parser("folders", help="a folder per class to a classification CSV "
                                                 "(image,label) and classes.txt")
    folders.add_argument("root")
    folders.add_argument("out_csv")
    images = sources.add_parser("images", help="an image folder to an unannotated CSV")
    images.add_argument("folder")
    images.add_argument("out_csv")
    tools.set_defaults(func=_cmd_csv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssd_keras",
                                     description="SSD300 object detection in Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    detect = commands.add_parser(
        "detect", help="detect objects in images",
        description="Run SSD300 on images; write one annotated PNG per image and "
                    "detections.csv (image, class, score, pixel box) to --out.")
    detect.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    detect.add_argument("--weights", metavar="PATH",
                        help=f"weights file (.h5/.hdf5 legacy, .weights.h5, .keras); default "
                             f"weights/{DEFAULT_WEIGHTS_NAME} when present")
    detect.add_argument("--out", default="detections", metavar="DIR",
                        help="output folder (default: %(default)s)")
    detect.add_argument("--conf-thresh", type=float, default=0.6,
                        help="minimum confidence of a drawn detection (default: %(default)s)")
    detect.add_argument("--nms-thresh", type=float, default=0.45,
                        help="IoU threshold of non-maximum suppression (default: %(default)s)")
    detect.add_argument("--classes", default="voc", metavar="voc|FILE",
                        help="class names without background: 'voc' or a file with one name "
                             "per line (default: %(default)s)")
    detect.set_defaults(func=_cmd_detect)
    _add_train_parser(commands)
    _add_csv_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
