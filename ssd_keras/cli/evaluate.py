"""``evaluate``: Pascal VOC AP / mAP of SSD300 on an annotation CSV, table, JSON and PR curves."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._common import (add_command, add_model_options, class_list, iou_threshold, load_model, positive_float,
                      positive_int, probability, say_model, untrained_model)

__all__ = ["add_parser", "run"]

EXAMPLES = (
    "%(prog)s --csv test.csv --weights runs/mine/final.weights.h5 --plot pr.png --json results.json",
    "%(prog)s --csv test.csv --classes voc --allow-untrained --quiet   # the pipeline, on an untrained network",
)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "evaluate", help="Pascal VOC AP / mAP of SSD300 on an annotation CSV",
        description="Run SSD300 over the images of an annotation CSV and score its detections with the "
                    "Pascal VOC rule (per-class AP, mAP); print a per-class table and optionally write "
                    "the results as JSON and the precision/recall curves as a PNG. The CSV's classes must "
                    "be classes of the model (a subset is fine). IoU is computed on continuous "
                    "coordinates (no +1 pixel in widths).",
        examples=EXAMPLES)
    parser.add_argument("--csv", required=True, help="annotation CSV (optional difficult column)")
    add_model_options(parser, "the embedded shapes model when the CSV's classes are its classes")
    parser.add_argument("--width-multiplier", type=positive_float,
                        help="channel width of SSD300 for weights without a run configuration, or of an "
                             "untrained network (default: the run's; else 1.0, the original)")
    parser.add_argument("--method", choices=["voc07", "area"], default="area",
                        help="AP definition: VOC2007's 11-point or VOC2010+'s area (default: %(default)s)")
    parser.add_argument("--iou", type=iou_threshold, default=0.5,
                        help="minimum IoU of a true positive, in (0, 1] (default: %(default)s)")
    parser.add_argument("--conf-thresh", type=probability, default=0.01,
                        help="minimum detection confidence, in [0, 1] (default: %(default)s)")
    parser.add_argument("--nms-thresh", type=probability, default=0.45,
                        help="IoU threshold of non-maximum suppression, in [0, 1] (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="default: %(default)s")
    parser.add_argument("--plot", metavar="PNG", help="write the precision/recall curves here")
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
    """The model of the options; without weights, an untrained network for the CSV's classes when
    ``--allow-untrained`` and no trained model knows them."""
    if args.weights is not None or not args.allow_untrained:
        resolved = load_model(args, args.width_multiplier)
        unknown = _unknown(csv_classes, resolved.class_names)
        if unknown:
            raise _mismatch(args.csv, unknown, resolved.class_names)
        return resolved
    from ..models import import_tensorflow_quietly, resolve_model

    import_tensorflow_quietly()
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


def run(args: argparse.Namespace) -> int:
    from ..data.annotations import read_annotations

    records, csv_classes = read_annotations(args.csv)  # the CSV's errors before the model is built
    model, class_names, _ = _model_for(args, csv_classes)
    import numpy as np

    from .. import layout
    from ..evaluation import evaluate_records, format_results, save_results_json
    from ..plots import plot_pr_curves
    from ..ssd_utils import BBoxUtility

    to_model = np.array([0] + [class_names.index(name) + 1 for name in csv_classes], dtype=np.int64)
    records = [{**record, "labels": to_model[np.asarray(record["labels"], dtype=np.int64)]} for record in records]
    print(f"{args.csv}: {len(records)} images, {len(csv_classes)} classes"
          + (f" of the model's {len(class_names)} (the others have no ground truth: left out of the mAP)"
             if len(class_names) > len(csv_classes) else ""))
    result = evaluate_records(model, records, class_names, BBoxUtility(layout.num_classes_of(model),
                                                                       nms_thresh=args.nms_thresh),
                              batch_size=args.batch_size, verbose=0 if args.quiet else 1,
                              confidence_threshold=args.conf_thresh, iou_threshold=args.iou, method=args.method)
    print(format_results(result))
    if args.json:
        save_results_json(result, args.json)
        print(f"results -> {args.json}")
    if args.plot:
        plot_pr_curves(result, path=args.plot)
        print(f"precision/recall curves -> {args.plot}")
    return 0
