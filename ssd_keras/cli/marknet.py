"""``marknet``: train, evaluate and explain MarkNet, the mark classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_command, class_list, dropout_rate, positive_float, positive_int
from .train import RUN_FOLDER_HELP, add_run_folder_options, interruptible, run_training

__all__ = ["add_parser", "run_train", "run_evaluate", "run_explain"]

EXAMPLES = (
    "%(prog)s train --csv marks.csv --out runs/marks",
    "%(prog)s evaluate --csv test.csv --weights runs/marks/final.weights.h5",
    "%(prog)s explain mug.jpg --weights runs/marks/final.weights.h5 --out explain",
)


def _filters(text: str) -> tuple[int, ...]:
    try:
        filters = tuple(int(part) for part in text.split(","))
    except ValueError:
        filters = ()
    if not filters or min(filters) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return filters


def add_parser(commands) -> argparse.ArgumentParser:
    marknet = add_command(
        commands, "marknet", help="train, evaluate and explain MarkNet, the mark classifier",
        description="MarkNet classifies marks (logos, stamps) from a classification CSV (image,label with "
                    "classes.txt beside it, see `csv folders`).",
        examples=EXAMPLES)
    actions = marknet.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train", help="train MarkNet on a classification CSV",
        description="Train MarkNet; write config.json, history.csv, loss.png, checkpoints/epoch_NNN.weights.h5 "
                    "and final.weights.h5 to --out. " + RUN_FOLDER_HELP.replace(", --strategy", ""))
    train.add_argument("--csv", required=True, help="training classification CSV (image,label)")
    train.add_argument("--val-csv", help="validation classification CSV")
    train.add_argument("--out", required=True, metavar="DIR", help="run folder (runs/NAME)")
    train.add_argument("--classes", metavar="FILE", help="class list (default: classes.txt beside --csv)")
    train.add_argument("--epochs", type=positive_int, default=10,
                       help="epochs in all; a finished run given more continues (default: %(default)s)")
    train.add_argument("--batch-size", type=positive_int, default=32, help="default: %(default)s")
    train.add_argument("--lr", type=positive_float, default=1e-3,
                       help="Adam learning rate, decayed along a cosine (default: %(default)s)")
    train.add_argument("--image-size", type=positive_int, default=224, help="input side (default: %(default)s)")
    train.add_argument("--backbone", choices=["vgg16", "mobilenetv2"],
                       help="a keras.applications backbone (default: the compact network)")
    train.add_argument("--imagenet", action="store_true",
                       help="start the backbone from ImageNet weights (downloaded by Keras)")
    train.add_argument("--filters", type=_filters, default=(32, 64, 128, 256), metavar="N,N,...",
                       help="block widths of the compact network (default: 32,64,128,256)")
    train.add_argument("--dropout", type=dropout_rate, default=0.2, help="in [0, 1) (default: %(default)s)")
    train.add_argument("--seed", type=int, help="seed for weights, order and augmentation")
    train.add_argument("--workers", type=positive_int, default=1, help="data loading threads (default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    add_run_folder_options(train)
    train.set_defaults(run=run_train)

    evaluate = actions.add_parser(
        "evaluate", help="accuracy, per-class precision/recall and confusion matrix",
        description="Score MarkNet on a classification CSV; print accuracy and a per-class precision/recall "
                    "table; write the confusion matrix as a PNG.")
    evaluate.add_argument("--csv", required=True, help="classification CSV (image,label)")
    evaluate.add_argument("--weights", required=True, metavar="PATH",
                          help="weights of a run (its config.json is read from the same folder)")
    evaluate.add_argument("--batch-size", type=positive_int, default=32, help="default: %(default)s")
    evaluate.add_argument("--plot", metavar="PNG",
                          help="confusion matrix picture (default: confusion_matrix.png beside the weights)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=run_evaluate)

    explain = actions.add_parser(
        "explain", help="Grad-CAM and Guided Grad-CAM of an image's classification",
        description="Classify IMAGE and write Grad-CAM and Guided Grad-CAM pictures for the predicted class "
                    "and every --class, plus a grid of them all, to --out.")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--weights", required=True, metavar="PATH",
                         help="weights of a run (its config.json is read from the same folder)")
    explain.add_argument("--out", default="marknet_explained", metavar="DIR",
                         help="output folder (default: %(default)s)")
    explain.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                         help="also explain this class (repeatable)")
    explain.add_argument("--layer", metavar="NAME", help="Grad-CAM layer (default: the last 4-D one)")
    explain.set_defaults(run=run_explain)
    return marknet


@interruptible
def run_train(args: argparse.Namespace) -> int:
    from ..backends import import_backend_quietly

    import_backend_quietly()
    from ..marknet import MarkNetConfig, train_marknet

    config = MarkNetConfig(csv=args.csv, out=args.out, val_csv=args.val_csv, classes=class_list(args.classes),
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                           backbone=args.backbone, weights="imagenet" if args.imagenet else None,
                           filters=args.filters, dropout=args.dropout, seed=args.seed, workers=args.workers,
                           keep_checkpoints=args.keep_checkpoints)
    result = []
    status = run_training(lambda: result.append(train_marknet(
        config, verbose=0 if args.quiet else 2, overwrite=args.overwrite,
        say=lambda message: print(message, flush=True))))
    if status:
        return status
    last = {key: values[-1] for key, values in result[0][1].history.items() if values}
    if last:
        print("last epoch: " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items())))
    print(f"done: {args.out}/final.weights.h5, config in {args.out}/config.json, history in "
          f"{args.out}/history.csv")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..backends import import_backend_quietly

    import_backend_quietly()
    from ..marknet import evaluate_marknet, format_classification_report, load_marknet
    from ..plots import plot_confusion_matrix

    model, config = load_marknet(args.weights)
    result = evaluate_marknet(model, args.csv, config["classes"], batch_size=args.batch_size,
                              verbose=0 if args.quiet else 1)
    print(f"{args.csv}: {result['num_images']} images, {len(result['class_names'])} classes")
    print(format_classification_report(result))
    plot = Path(args.plot) if args.plot else Path(args.weights).parent / "confusion_matrix.png"
    plot_confusion_matrix(result, plot)
    print(f"confusion matrix -> {plot}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..backends import require_tensorflow
    from ..models import import_tensorflow_quietly

    require_tensorflow("marknet explain (Grad-CAM uses tf.GradientTape)")
    import_tensorflow_quietly()
    import cv2

    from ..image import load_image
    from ..marknet import explain_marks, load_marknet
    from ..visualization import gradient_image, overlay, save_image, tile

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
    save_image(grid, tile(pictures, columns=2))
    print(f"grid -> {grid}")
    return 0
