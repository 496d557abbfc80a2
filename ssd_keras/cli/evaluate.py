"""``evaluate``: VOC AP / mAP or COCO metrics of SSD300 (or of saved detections) on an annotation CSV:
a table, JSON and PR curves. Scoring saved detections imports no TensorFlow."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._common import (add_command, add_exported_model_option, add_model_options, add_nms_option,
                      check_exported_options, class_list, iou_threshold, load_exported_model, load_model,
                      nms_thresh, positive_float, positive_int, probability, say_model, untrained_model)

__all__ = ["add_parser", "run"]

EXAMPLES = (
    "%(prog)s --csv test.csv --weights runs/mine/final.weights.h5 --plot pr.png --json results.json",
    "%(prog)s --csv test.csv --classes voc --allow-untrained --quiet   # the pipeline, on an untrained network",
    "%(prog)s --csv test.csv --detections out/detections.csv --metric coco --json coco.json   # no model run",
    "%(prog)s --csv test.csv --model ssd300_int8.tflite   # the mAP of the exported file you deploy",
)

METRICS = ("voc07", "voc", "coco")


class _MethodAlias(argparse.Action):
    """``--method voc07|area``, the older spelling of ``--metric voc07|voc``."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, "voc07" if values == "voc07" else "voc")


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "evaluate", help="VOC AP / mAP or COCO metrics of SSD300 or of saved detections",
        description="Score detections against an annotation CSV: run SSD300 over its images, or read the "
                    "detections CSV that detect wrote (--detections; no model runs). Metrics: the Pascal VOC "
                    "rule (per-class AP, mAP; IoU on continuous coordinates, no +1 pixel in widths), VOC2007's "
                    "11-point or VOC2010+'s area AP, or COCO's (AP@[.50:.95], AP50, AP75, AP by size, "
                    "AR@1/10/100, by pycocotools). Print a per-class table and optionally write the results "
                    "as JSON and (VOC) the precision/recall curves as a PNG. Difficult boxes count neither "
                    "way (COCO: as iscrowd). The CSV's classes must be classes of the model (a subset is "
                    "fine). --model runs an exported file (.tflite, .onnx, SavedModel) instead of Keras weights.",
        examples=EXAMPLES)
    parser.add_argument("--csv", required=True, help="annotation CSV, the ground truth (optional difficult column)")
    parser.add_argument("--detections", metavar="CSV",
                        help="score this detections CSV (detect's format: image_path, class_name, score, "
                             "pixel box) instead of running a model; its images must be images of --csv "
                             "(paths resolved as in annotation CSVs) and its classes classes of the ground "
                             "truth: --classes when given, else the class list an importer wrote beside the "
                             "CSV (<csv stem>_classes.txt), else the CSV's class names")
    add_model_options(parser, "the embedded shapes model when the CSV's classes are its classes")
    add_exported_model_option(parser)
    parser.add_argument("--width-multiplier", type=positive_float,
                        help="channel width of SSD300 for weights without a run configuration, or of an "
                             "untrained network (default: the run's; else 1.0, the original)")
    parser.add_argument("--metric", choices=METRICS, default="voc",
                        help="voc07: VOC2007's 11-point AP; voc: VOC2010+'s area AP; coco: COCO's metrics by "
                             "pycocotools (default: %(default)s)")
    parser.add_argument("--method", choices=["voc07", "area"], dest="metric", action=_MethodAlias,
                        default=argparse.SUPPRESS, help="the older spelling of --metric: voc07, or area (= voc)")
    parser.add_argument("--iou", type=iou_threshold,
                        help="VOC metrics: minimum IoU of a true positive, in (0, 1] (default: 0.5)")
    parser.add_argument("--conf-thresh", type=probability, default=0.01,
                        help="minimum detection confidence, in [0, 1] (default: %(default)s; with --model, one "
                             "below the file's own threshold gets a warning)")
    add_nms_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="default: %(default)s")
    parser.add_argument("--plot", metavar="PNG", help="write the precision/recall curves here (VOC metrics)")
    parser.add_argument("--json", metavar="FILE", help="write the results here (arrays as lists)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def _unknown(csv_classes: Sequence[str], model_classes: Sequence[str]) -> list[str]:
    return [name for name in csv_classes if name not in model_classes]


def _mismatch(csv_path: str, unknown: Sequence[str], model_classes: Sequence[str]) -> ValueError:
    return ValueError(f"{csv_path} has classes the model does not know: {', '.join(unknown)} (the model's "
                      f"classes: {', '.join(model_classes)}); pass the weights of a model trained on them")


def _model_for(args: argparse.Namespace, csv_classes: Sequence[str]):
    """The model of the options (``--model``: the exported file); without weights, an untrained
    network for the CSV's classes when ``--allow-untrained`` and no trained model knows them."""
    if args.model is not None:
        resolved = load_exported_model(args, args.conf_thresh)
        unknown = _unknown(csv_classes, resolved.class_names)
        if unknown:
            raise _mismatch(args.csv, unknown, resolved.class_names)
        return resolved
    if args.weights is not None or not args.allow_untrained:
        resolved = load_model(args, args.width_multiplier)
        unknown = _unknown(csv_classes, resolved.class_names)
        if unknown:
            raise _mismatch(args.csv, unknown, resolved.class_names)
        return resolved
    from ..backends import import_backend_quietly
    from ..models import resolve_model

    import_backend_quietly()
    classes = class_list(args.classes)
    try:
        resolved = resolve_model(None, classes, args.width_multiplier)
    except (FileNotFoundError, ValueError):  # nothing trained fits these options
        resolved = None
    if resolved is not None and not _unknown(csv_classes, resolved.class_names):
        return say_model(resolved)
    if classes is not None and _unknown(csv_classes, classes):
        raise _mismatch(args.csv, _unknown(csv_classes, classes), classes)
    return untrained_model(classes or csv_classes, args.width_multiplier)


def _check_options(args: argparse.Namespace) -> None:
    """The combinations of options that cannot work, before anything is read."""
    if args.detections and (args.weights or args.model):
        option = "--weights" if args.weights else "--model"
        raise ValueError(f"--detections scores saved detections and {option} runs a model: give one of them")
    check_exported_options(args)
    if args.metric == "coco":
        if args.plot:
            raise ValueError("--plot draws the VOC precision/recall curves: not with --metric coco")
        if args.iou is not None:
            raise ValueError("--iou is the VOC metrics' threshold; COCO's AP averages IoU 0.50, 0.55, ..., 0.95")
        from ..coco_metrics import require_pycocotools

        require_pycocotools()


def _run_model(args: argparse.Namespace):
    """Records (labels in the model's class list), the model's detections and its class names."""
    from ..data.annotations import read_annotations

    records, csv_classes = read_annotations(args.csv)  # the CSV's errors before the model is built
    model, class_names, _ = _model_for(args, csv_classes)
    import numpy as np

    from ..evaluation import detect_records

    to_model = np.array([0] + [class_names.index(name) + 1 for name in csv_classes], dtype=np.int64)
    records = [{**record, "labels": to_model[np.asarray(record["labels"], dtype=np.int64)]} for record in records]
    print(f"{args.csv}: {len(records)} images, {len(csv_classes)} classes"
          + (f" of the model's {len(class_names)} (the others have no ground truth: left out of the mean)"
             if len(class_names) > len(csv_classes) else ""))
    if args.model is None:
        from .. import layout
        from ..ssd_utils import BBoxUtility

        bbox_util = BBoxUtility(layout.num_classes_of(model), nms_thresh=nms_thresh(args))
    else:
        bbox_util = None  # the file's NMS, fixed at export
    detections = detect_records(model, records, bbox_util, batch_size=args.batch_size,
                                verbose=0 if args.quiet else 1, confidence_threshold=args.conf_thresh)
    return records, detections, class_names


def _read_saved(args: argparse.Namespace):
    """Records, the detections of --detections matched to them, and the ground truth's class names."""
    from ..data.annotations import read_annotations
    from ..detections_csv import read_detections_csv

    from ..data.csv_tools import exported_class_list

    records, class_names = read_annotations(args.csv, exported_class_list(args.csv, class_list(args.classes)))
    detections = read_detections_csv(args.detections, records, class_names, args.conf_thresh,
                                     truth_name=args.csv)
    print(f"{args.detections}: {sum(len(rows) for rows in detections)} detections (score >= {args.conf_thresh:g}) "
          f"on {len(records)} images of {args.csv}, {len(class_names)} classes")
    return records, detections, class_names


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    records, detections, class_names = _read_saved(args) if args.detections else _run_model(args)
    if args.metric == "coco":
        from ..coco_metrics import coco_evaluate, format_coco_results, save_coco_json

        result = coco_evaluate(records, detections, class_names)
        print(format_coco_results(result))
        if args.json:
            save_coco_json(result, args.json)
            print(f"results -> {args.json}")
        return 0
    from ..evaluation import evaluate_detections, format_results, normalized_annotations, save_results_json

    result = evaluate_detections(detections, normalized_annotations(records), len(class_names) + 1,
                                 0.5 if args.iou is None else args.iou, "voc07" if args.metric == "voc07" else "area")
    result["class_names"] = list(class_names)
    print(format_results(result))
    if args.json:
        save_results_json(result, args.json)
        print(f"results -> {args.json}")
    if args.plot:
        from ..plots import plot_pr_curves

        plot_pr_curves(result, path=args.plot)
        print(f"precision/recall curves -> {args.plot}")
    return 0
