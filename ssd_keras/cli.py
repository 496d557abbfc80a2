"""``python -m ssd_keras <command>``: thin command-line wrappers over the library.

Commands:
    detect   run SSD300 on images, write annotated PNGs and ``detections.csv``.
    train    train SSD300 on an annotation CSV (resumable, distributable).
    evaluate Pascal VOC AP / mAP of a model on an annotation CSV, PR curves.
    csv      write dataset CSVs from Pascal VOC XML, class folders or an image folder.
    demo     detect and explain objects in sample images with the embedded model.
    gradcam  explain the top detections of an image (Grad-CAM, guided backpropagation).
    marknet  train, evaluate and explain MarkNet, the mark classifier.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "import_tensorflow_quietly", "find_default_weights", "read_class_names",
           "load_detection_model"]

DEFAULT_WEIGHTS_NAME = "weights_SSD300.hdf5"
PER_IMAGE_LINES = 10  # detect prints a line per image up to this many, then a progress bar
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


def _run_config(weights: Path) -> dict | None:
    """The ``config.json`` of the training run that wrote ``weights`` (beside it, or one folder
    up for ``checkpoints/``), if any."""
    import json

    for folder in (weights.parent, weights.parent.parent):
        candidate = folder / "config.json"
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            if {"classes", "width_multiplier", "input_shape"} <= config.keys():
                return {**config, "path": str(candidate)}
    return None


def load_detection_model(weights: str | None, classes: str = "voc"):
    """The model the entry points detect with, saying on stderr/stdout which one it is.

    ``weights`` given: SSD300 for ``classes`` with those weights (weights of a training run,
    with the default classes: the model its ``config.json`` describes). Otherwise the VOC weights
    (``weights/weights_SSD300.hdf5``) when present; else, with the default classes, the
    embedded shapes demo model; else an untrained SSD300, with a warning.

    Returns:
        ``(model, class_names)``.
    """
    from .demo import DEMO_WEIGHTS, load_demo_model
    from .ssd import SSD300
    from .weights import load_weights

    path = Path(weights) if weights else find_default_weights()
    if weights and not path.is_file():
        raise FileNotFoundError(f"weights file not found: {weights} ({WEIGHTS_HELP})")
    if path is None and classes.lower() == "voc" and DEMO_WEIGHTS.is_file():
        model, class_names = load_demo_model()
        print(f"no VOC weights found ({WEIGHTS_HELP}): using the embedded shapes model "
              f"{DEMO_WEIGHTS.name} (classes: {', '.join(class_names)})", file=sys.stderr)
        return model, class_names
    run_config = _run_config(path) if path is not None and classes.lower() == "voc" else None
    if run_config is not None:  # weights of a training run: its config.json rebuilds the model
        model = SSD300(tuple(run_config["input_shape"]), num_classes=len(run_config["classes"]) + 1,
                       width_multiplier=run_config["width_multiplier"])
        report = load_weights(model, path)
        print(f"weights: {path} ({len(report.loaded)} layers loaded; model from "
              f"{run_config['path']})")
        return model, list(run_config["classes"])
    class_names = read_class_names(classes)
    if path is None:
        import keras

        keras.utils.set_random_seed(0)  # the untrained network is at least repeatable
    model = SSD300((300, 300, 3), num_classes=len(class_names) + 1)
    if path is None:
        print("WARNING: no trained weights found (looked for weights/"
              f"{DEFAULT_WEIGHTS_NAME} here and beside the package; {WEIGHTS_HELP}).\n"
              "WARNING: running the whole pipeline on an UNTRAINED network: its detections are "
              "random and meaningless.", file=sys.stderr)
    else:
        report = load_weights(model, path)
        print(f"weights: {path} ({len(report.loaded)} layers loaded)")
    return model, class_names


def expand_image_arguments(arguments: Sequence[str]) -> list[Path]:
    """Files as given, folders as the image files in them (sorted, not recursive), glob
    patterns as their matches (sorted). A folder or pattern that matches nothing raises."""
    import glob

    from .data.csv_tools import IMAGE_EXTENSIONS

    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(p for p in Path(argument).iterdir()
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif glob.has_magic(argument):
            found = [Path(p) for p in sorted(glob.glob(argument)) if os.path.isfile(p)]
        else:
            found = [Path(argument)]  # a missing file is reported when it is loaded
        if not found:
            raise FileNotFoundError(f"no image files in {argument}")
        paths += found
    return paths


def _cmd_detect(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    import json

    import keras
    import numpy as np

    from .image import load_image
    from .ssd import detect
    from .ssd_utils import BBoxUtility
    from .visualization import draw_detections, save_image, to_pixels

    paths = expand_image_arguments(args.images)
    model, class_names = load_detection_model(args.weights, args.classes)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bbox_util = BBoxUtility(len(class_names) + 1, nms_thresh=args.nms_thresh)
    failures, rows, records, taken = 0, [], [], set()
    progress = keras.utils.Progbar(len(paths)) if len(paths) > PER_IMAGE_LINES else None
    for k, path in enumerate(paths):
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
        found = []
        for label, score, *box in detections:
            pixels = [round(float(v), 1) for v in to_pixels(np.asarray([box]), width, height)[0]]
            found.append({"class_name": class_names[int(label) - 1], "score": round(float(score), 4),
                          "box": pixels})
            rows.append([str(path), found[-1]["class_name"], f"{score:.4f}",
                         *(f"{v:.1f}" for v in pixels)])
        records.append({"image_path": str(path), "width": width, "height": height,
                        "annotated": str(out_path), "detections": found})
        if progress is None:
            print(f"{path}: {len(detections)} detections -> {out_path}")
        else:
            progress.update(k + 1)

    csv_path = out_dir / "detections.csv"
    with open(csv_path, "w", newline="", encoding="utf8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "class_name", "score", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    (out_dir / "detections.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(rows)} detections in {len(paths) - failures} images -> {csv_path} and "
          f"detections.json")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from .demo import DRAW_THRESHOLD, run_demo

    result = run_demo(args.out, args.weights, num_scenes=args.scenes,
                      eval_scenes=args.eval_scenes)
    print(f"model: {result['model']}")
    names = result["class_names"]
    print(f"{'image':<14} {'class':<12} {'score':>6}  box (normalised xmin ymin xmax ymax)")
    for entry in result["images"]:
        shown = [row for row in entry["detections"] if row[1] >= DRAW_THRESHOLD][:8]
        for row in shown:
            box = " ".join(f"{v:.3f}" for v in row[2:6])
            print(f"{entry['name']:<14} {names[int(row[0]) - 1]:<12} {row[1]:6.3f}  {box}")
        if not shown:
            print(f"{entry['name']:<14} (nothing above {DRAW_THRESHOLD})")
    for entry in result["images"]:
        print(f"wrote {entry['picture']}" + (f" and {entry['gradcam']}" if entry["gradcam"]
                                             else ""))
    if result["mAP"] is not None:
        print(f"mAP@0.5 on {args.eval_scenes} held-out scenes: {result['mAP']:.3f}")
    return 0


def _tile(pictures, height: int = 256, columns: int = 3):
    """The pictures side by side, ``columns`` to a row, each scaled to ``height``."""
    import cv2
    import numpy as np

    scaled = [cv2.resize(p, (max(1, round(p.shape[1] * height / p.shape[0])), height))
              for p in pictures]
    width = max(p.shape[1] for p in scaled)
    rows = []
    for start in range(0, len(scaled), columns):
        row = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in
               scaled[start:start + columns]]
        row += [np.zeros_like(row[0])] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def _cmd_gradcam(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    import cv2
    import numpy as np

    from .gradcam import GradCAM, explain_detections, gradient_image, guided_grad_cam, overlay
    from .image import load_image, preprocess_input, resize_image
    from .ssd import detect
    from .visualization import save_image

    model, class_names = load_detection_model(args.weights, args.classes)
    image = load_image(args.image)
    x = preprocess_input(resize_image(image, model.input_shape[1:3]))
    rows = detect(model, [image], confidence_threshold=args.conf_thresh, return_indices=True)[0]
    rows = rows[:args.top]
    if not len(rows):
        print(f"{args.image}: no detection above {args.conf_thresh}")
        return 0
    explained = explain_detections(model, x, rows, class_names, top=args.top, method=args.method)
    if args.layer and args.method != "guided":  # the same detections, another layer
        labels, priors = rows[:, 0].astype(int), rows[:, 6].astype(int)
        batch = np.repeat(x[np.newaxis], len(rows), axis=0)
        maps = (GradCAM(model, args.layer)(batch, labels, priors) if args.method == "gradcam"
                else guided_grad_cam(model, batch, labels, priors, layer_name=args.layer))
        for entry, heatmap in zip(explained, maps):
            entry["map"] = np.asarray(heatmap)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem, pictures = Path(args.image).stem, []
    for k, entry in enumerate(explained):
        row = entry["detection"]
        if args.method == "gradcam":
            picture = overlay(image, entry["map"], box=row[2:6], label=entry["label"])
        else:
            picture = cv2.resize(gradient_image(entry["map"], bgr=True),
                                 (image.shape[1], image.shape[0]))
        path = out / f"{stem}_{k}_{args.method}.png"
        save_image(path, picture)
        pictures.append(picture)
        print(f"{entry['label']:<20} prior {int(row[6]):5d} -> {path}")
    grid = out / f"{stem}_{args.method}_grid.png"
    save_image(grid, _tile(pictures))
    print(f"grid -> {grid}")
    return 0


def _add_gradcam_parser(commands) -> None:
    gradcam = commands.add_parser(
        "gradcam", help="explain the top detections of an image (Grad-CAM)",
        description="Detect objects in IMAGE and explain each of the top detections (one prior, "
                    "one class) with Grad-CAM, guided backpropagation or guided Grad-CAM; write "
                    "one PNG per detection and a grid PNG to --out.")
    gradcam.add_argument("image", metavar="IMAGE")
    gradcam.add_argument("--weights", metavar="PATH", help="weights (default: VOC weights when "
                         "present, else the embedded shapes model)")
    gradcam.add_argument("--classes", default="voc", metavar="voc|FILE",
                         help="class names of --weights (default: %(default)s)")
    gradcam.add_argument("--top", type=int, default=5, help="detections to explain "
                         "(default: %(default)s)")
    gradcam.add_argument("--method", choices=["gradcam", "guided", "guided-gradcam"],
                         default="gradcam", help="default: %(default)s")
    gradcam.add_argument("--layer", metavar="NAME", help="feature layer (default: the one "
                         "feeding each detection's head)")
    gradcam.add_argument("--conf-thresh", type=float, default=0.01,
                         help="minimum confidence (default: %(default)s)")
    gradcam.add_argument("--out", default="gradcam_output", metavar="DIR",
                         help="output folder (default: %(default)s)")
    gradcam.set_defaults(func=_cmd_gradcam)


def _add_demo_parser(commands) -> None:
    demo = commands.add_parser(
        "demo", help="detect and explain objects in sample images (works offline)",
        description="Run the detector on a few held-out synthetic scenes and a photograph "
                    "shipped with matplotlib; write annotated PNGs and Grad-CAM overlays of "
                    "each image's top detection; print the detections and the mAP. Uses the "
                    "VOC weights (on the photograph) when weights/weights_SSD300.hdf5 is "
                    "present, else the embedded shapes model.")
    demo.add_argument("--out", default="demo_output", metavar="DIR",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--weights", metavar="PATH", help="VOC weights (default: "
                      f"weights/{DEFAULT_WEIGHTS_NAME} when present)")
    demo.add_argument("--scenes", type=int, default=4, help="held-out scenes to draw "
                      "(default: %(default)s)")
    demo.add_argument("--eval-scenes", type=int, default=100, help="held-out scenes for the "
                      "mAP (default: %(default)s; 0 skips it)")
    demo.set_defaults(func=_cmd_demo)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from .data.annotations import read_annotations
    from .evaluation import evaluate_records, format_results, plot_pr_curves, save_results_json
    from .ssd import SSD300
    from .weights import load_weights

    classes = read_class_names(args.classes) if args.classes else None
    records, class_names = read_annotations(args.csv, classes)
    if args.weights:
        weights = Path(args.weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file not found: {args.weights} ({WEIGHTS_HELP})")
    else:
        # The published weights fit the full-width network only.
        weights = find_default_weights() if args.width_multiplier == 1.0 else None
    model = SSD300((300, 300, 3), num_classes=len(class_names) + 1,
                   width_multiplier=args.width_multiplier)
    if weights is None:
        print(f"WARNING: no weights given and no default weights for this network (looked for "
              f"weights/{DEFAULT_WEIGHTS_NAME} here and beside the package, used at width 1.0 only; "
              f"{WEIGHTS_HELP}).\nWARNING: evaluating an UNTRAINED network: its scores are "
              "meaningless.", file=sys.stderr)
    else:
        report = load_weights(model, weights)
        print(f"weights: {weights} ({len(report.loaded)} layers loaded)")
        if report.skipped:
            print(f"WARNING: {len(report.skipped)} layers are not in the weights file and keep random "
                  f"weights: {', '.join(report.skipped)}", file=sys.stderr)

    print(f"{args.csv}: {len(records)} images, {len(class_names)} classes")
    result = evaluate_records(model, records, class_names, batch_size=args.batch_size,
                              verbose=0 if args.quiet else 1, confidence_threshold=args.conf_thresh,
                              iou_threshold=args.iou, method=args.method)
    print(format_results(result))
    if args.json:
        save_results_json(result, args.json)
        print(f"results -> {args.json}")
    if args.plot:
        plot_pr_curves(result, path=args.plot)
        print(f"precision/recall curves -> {args.plot}")
    return 0


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="Pascal VOC AP / mAP of SSD300 on an annotation CSV",
        description="Run SSD300 over the images of an annotation CSV and score its detections "
                    "with the Pascal VOC rule (per-class AP, mAP); print a per-class table and "
                    "optionally write the results as JSON and the precision/recall curves as "
                    "a PNG. IoU is computed on continuous coordinates (no +1 pixel in widths).")
    evaluate.add_argument("--csv", required=True, help="annotation CSV (optional difficult column)")
    evaluate.add_argument("--weights", metavar="PATH",
                          help=f"weights file (.h5/.hdf5 legacy, .weights.h5, .keras); default "
                               f"weights/{DEFAULT_WEIGHTS_NAME} when present (width 1.0 only)")
    evaluate.add_argument("--classes", metavar="FILE",
                          help="class list file or 'voc' (default: the CSV's sorted class names)")
    evaluate.add_argument("--width-multiplier", type=float, default=1.0,
                          help="channel width of SSD300 (default: %(default)s, the original)")
    evaluate.add_argument("--method", choices=["voc07", "area"], default="area",
                          help="AP definition: VOC2007's 11-point or VOC2010+'s area "
                               "(default: %(default)s)")
    evaluate.add_argument("--iou", type=float, default=0.5,
                          help="minimum IoU of a true positive (default: %(default)s)")
    evaluate.add_argument("--conf-thresh", type=float, default=0.01,
                          help="minimum detection confidence (default: %(default)s)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="default: %(default)s")
    evaluate.add_argument("--plot", metavar="PNG", help="write the precision/recall curves here")
    evaluate.add_argument("--json", metavar="FILE", help="write the results here (arrays as lists)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_cmd_evaluate)


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


EXAMPLES = {
    "detect": ["python -m ssd_keras detect photo.jpg photos/ 'more/*.png' --out detections",
               "python -m ssd_keras detect scene.png --weights runs/mine/final.weights.h5 "
               "--conf-thresh 0.5   # the run's config.json gives classes and width"],
    "train": ["python -m ssd_keras train --csv train.csv --val-csv val.csv --out runs/mine "
              "--epochs 30 --seed 0",
              "python -m ssd_keras train --csv train.csv --out runs/ft "
              "--weights weights/weights_SSD300.hdf5 --freeze original --lr-decay 0.9"],
    "evaluate": ["python -m ssd_keras evaluate --csv test.csv --weights "
                 "runs/mine/final.weights.h5 --plot pr.png --json results.json"],
    "demo": ["python -m ssd_keras demo --out demo_output"],
    "gradcam": ["python -m ssd_keras gradcam photo.jpg --top 3 --out gradcam_output",
                "python -m ssd_keras gradcam photo.jpg --method guided-gradcam --layer conv4_3"],
    "csv": ["python -m ssd_keras csv voc VOC2007/Annotations VOC2007/JPEGImages train.csv",
            "python -m ssd_keras csv folders marks/ marks.csv",
            "python -m ssd_keras csv images photos/ photos.csv"],
    "marknet": ["python -m ssd_keras marknet train --csv marks.csv --out runs/marks",
                "python -m ssd_keras marknet explain mug.jpg --weights "
                "runs/marks/final.weights.h5 --out explain"],
}


def _cmd_marknet_train(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from .marknet import MarkNetConfig, train_marknet

    filters = tuple(int(f) for f in args.filters.split(","))
    config = MarkNetConfig(csv=args.csv, out=args.out, val_csv=args.val_csv,
                           classes=read_class_names(args.classes) if args.classes else None,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           image_size=args.image_size, backbone=args.backbone,
                           weights="imagenet" if args.imagenet else None, filters=filters,
                           dropout=args.dropout, seed=args.seed, workers=args.workers)
    _, history = train_marknet(config, verbose=0 if args.quiet else 2)
    last = {key: values[-1] for key, values in history.history.items()}
    print("last epoch: " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items())))
    print(f"done: {args.out}/final.weights.h5, config in {args.out}/config.json, history in "
          f"{args.out}/history.csv")
    return 0


def _cmd_marknet_evaluate(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    from .marknet import evaluate_marknet, format_classification_report, load_marknet, plot_confusion_matrix

    model, config = load_marknet(args.weights)
    result = evaluate_marknet(model, args.csv, config["classes"], batch_size=args.batch_size,
                              verbose=0 if args.quiet else 1)
    print(f"{args.csv}: {result['num_images']} images, {len(result['class_names'])} classes")
    print(format_classification_report(result))
    plot = Path(args.plot) if args.plot else Path(args.weights).parent / "confusion_matrix.png"
    plot_confusion_matrix(result, plot)
    print(f"confusion matrix -> {plot}")
    return 0


def _cmd_marknet_explain(args: argparse.Namespace) -> int:
    import_tensorflow_quietly()
    import cv2

    from .gradcam import gradient_image, overlay
    from .image import load_image
    from .marknet import explain_marks, load_marknet
    from .visualization import save_image

    model, config = load_marknet(args.weights)
    names = list(config["classes"])
    unknown = [name for name in args.classes if name not in names]
    if unknown:
        raise ValueError(f"unknown class(es) {', '.join(unknown)}: the model's classes are {', '.join(names)}")
    image = load_image(args.image)
    probabilities, explained = explain_marks(model, image, [names.index(name) for name in args.classes],
                                             layer_name=args.layer)
    order = probabilities.argsort()[::-1]
    print(f"{args.image}: " + ", ".join(f"{names[k]} {probabilities[k]:.3f}" for k in order[:5]))
    out = Path(args.out)
    stem, pictures, whole = Path(args.image).stem, [], [0.0, 0.0, 1.0, 1.0]
    for entry in explained:
        name = names[entry["class_index"]]
        caption = f"{name} {entry['probability']:.2f}"
        gradcam = overlay(image, entry["gradcam"], box=whole, label=caption)
        guided = cv2.resize(gradient_image(entry["guided_gradcam"]), (image.shape[1], image.shape[0]))
        for kind, picture in (("gradcam", gradcam), ("guided_gradcam", guided)):
            path = out / f"{stem}_{name}_{kind}.png"
            save_image(path, picture)
            print(f"{caption:<20} {kind:<15} -> {path}")
        pictures += [gradcam, guided]
    grid = out / f"{stem}_explained.png"
    save_image(grid, _tile(pictures, columns=2))
    print(f"grid -> {grid}")
    return 0


def _add_marknet_parser(commands) -> None:
    marknet = commands.add_parser(
        "marknet", help="train, evaluate and explain MarkNet, the mark classifier",
        description="MarkNet classifies marks (logos, stamps) from a classification CSV "
                    "(image,label with classes.txt beside it, see `csv folders`).")
    actions = marknet.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train", help="train MarkNet on a classification CSV",
        description="Train MarkNet; write config.json, history.csv, checkpoints/epoch_NNN.weights.h5 "
                    "and final.weights.h5 to --out.")
    train.add_argument("--csv", required=True, help="training classification CSV (image,label)")
    train.add_argument("--val-csv", help="validation classification CSV")
    train.add_argument("--out", required=True, metavar="DIR", help="run folder (runs/NAME), must be new")
    train.add_argument("--classes", metavar="FILE", help="class list (default: classes.txt beside --csv)")
    train.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    train.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    train.add_argument("--lr", type=float, default=1e-3,
                       help="Adam learning rate, decayed along a cosine (default: %(default)s)")
    train.add_argument("--image-size", type=int, default=224, help="input side (default: %(default)s)")
    train.add_argument("--backbone", choices=["vgg16", "mobilenetv2"],
                       help="a keras.applications backbone (default: the compact network)")
    train.add_argument("--imagenet", action="store_true",
                       help="start the backbone from ImageNet weights (downloaded by Keras)")
    train.add_argument("--filters", default="32,64,128,256", metavar="N,N,...",
                       help="block widths of the compact network (default: %(default)s)")
    train.add_argument("--dropout", type=float, default=0.2, help="default: %(default)s")
    train.add_argument("--seed", type=int, help="seed for weights, order and augmentation")
    train.add_argument("--workers", type=int, default=1, help="data loading threads (default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.set_defaults(func=_cmd_marknet_train)

    evaluate = actions.add_parser(
        "evaluate", help="accuracy, per-class precision/recall and confusion matrix",
        description="Score MarkNet on a classification CSV; print accuracy and a per-class "
                    "precision/recall table; write the confusion matrix as a PNG.")
    evaluate.add_argument("--csv", required=True, help="classification CSV (image,label)")
    evaluate.add_argument("--weights", required=True, metavar="PATH",
                          help="weights of a run (its config.json is read from the same folder)")
    evaluate.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    evaluate.add_argument("--plot", metavar="PNG",
                          help="confusion matrix picture (default: confusion_matrix.png beside the weights)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_cmd_marknet_evaluate)

    explain = actions.add_parser(
        "explain", help="Grad-CAM and Guided Grad-CAM of an image's classification",
        description="Classify IMAGE and write Grad-CAM and Guided Grad-CAM pictures for the predicted "
                    "class and every --class, plus a grid of them all, to --out.")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--weights", required=True, metavar="PATH",
                         help="weights of a run (its config.json is read from the same folder)")
    explain.add_argument("--out", default="marknet_explained", metavar="DIR",
                         help="output folder (default: %(default)s)")
    explain.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                         help="also explain this class (repeatable)")
    explain.add_argument("--layer", metavar="NAME", help="Grad-CAM layer (default: the last 4-D one)")
    explain.set_defaults(func=_cmd_marknet_explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssd_keras",
                                     description="SSD300 object detection in Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    detect = commands.add_parser(
        "detect", help="detect objects in images",
        description="Run SSD300 on images; write one annotated PNG per image and "
                    "detections.csv (image, class, score, pixel box) to --out.")
    detect.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders of images or glob patterns")
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
    _add_evaluate_parser(commands)
    _add_demo_parser(commands)
    _add_gradcam_parser(commands)
    _add_csv_parser(commands)
    _add_marknet_parser(commands)
    for name, command in commands.choices.items():
        if name in EXAMPLES:
            command.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name])
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
