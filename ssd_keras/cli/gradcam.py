"""``gradcam``: explain the top detections of an image (Grad-CAM, guided backpropagation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_command, add_model_options, load_model, positive_int, probability

__all__ = ["add_parser", "run"]

METHODS = ("gradcam", "guided", "guided-gradcam")  # ssd_keras.gradcam.METHODS, without importing TensorFlow
EXAMPLES = (
    "%(prog)s photo.jpg --top 3 --out gradcam_output",
    "%(prog)s photo.jpg --method guided-gradcam --layer conv4_3",
)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "gradcam", help="explain the top detections of an image (Grad-CAM)",
        description="Detect objects in IMAGE and explain each of the top detections (one prior, one class) "
                    "with Grad-CAM, guided backpropagation or guided Grad-CAM; write one PNG per detection "
                    "and a grid PNG to --out.",
        examples=EXAMPLES)
    parser.add_argument("image", metavar="IMAGE")
    add_model_options(parser, "the embedded shapes model")
    parser.add_argument("--top", type=positive_int, default=5, help="detections to explain (default: %(default)s)")
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="default: %(default)s")
    parser.add_argument("--layer", metavar="NAME",
                        help="feature layer (default: the one feeding each detection's head)")
    parser.add_argument("--conf-thresh", type=probability, default=0.01,
                        help="minimum confidence, in [0, 1] (default: %(default)s)")
    parser.add_argument("--out", default="gradcam_output", metavar="DIR", help="output folder (default: %(default)s)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..backends import require_tensorflow

    require_tensorflow("gradcam (Grad-CAM uses tf.GradientTape)")
    model, class_names, _ = load_model(args)
    import cv2

    from .. import layout
    from ..gradcam import explain_detections
    from ..image import load_image, preprocess_input, resize_image
    from ..ssd import detect
    from ..visualization import gradient_image, overlay, save_image, tile

    image = load_image(args.image)
    x = preprocess_input(resize_image(image, model.input_shape[1:3]))
    rows = detect(model, [image], confidence_threshold=args.conf_thresh, return_indices=True)[0]
    if not len(rows):
        print(f"{args.image}: no detection above {args.conf_thresh}")
        return 0
    explained = explain_detections(model, x, rows, class_names, top=args.top, method=args.method,
                                   layer_name=args.layer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem, pictures = Path(args.image).stem, []
    for k, entry in enumerate(explained):
        row = entry["detection"]
        if args.method == "gradcam":
            picture = overlay(image, entry["map"], box=row[layout.BOX], label=entry["label"])
        else:
            picture = cv2.resize(gradient_image(entry["map"], bgr=True), (image.shape[1], image.shape[0]))
        path = out / f"{stem}_{k}_{args.method}.png"
        save_image(path, picture)
        pictures.append(picture)
        print(f"{entry['label']:<20} prior {int(row[layout.PRIOR_INDEX]):5d} -> {path}")
    grid = out / f"{stem}_{args.method}_grid.png"
    save_image(grid, tile(pictures))
    print(f"grid -> {grid}")
    return 0
