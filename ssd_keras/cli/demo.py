"""``demo``: each model on what it was made for (the shapes model on synthetic scenes, offline;
the VOC SSD300 on a photograph), with pictures, a summary grid and the mAP."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ._common import add_command, non_negative_int, positive_int

__all__ = ["add_parser", "run", "detection_table"]

EXAMPLES = ("%(prog)s --out demo_output",)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = add_command(
        commands, "demo", help="detect and explain objects in sample images (works offline)",
        description="Run each model on what it was made for. Without VOC weights (the normal case offline), "
                    "the embedded shapes model on held-out synthetic scenes: its detections beside the ground "
                    "truth, a Grad-CAM overlay of each scene's top detection, and its mAP on more scenes. With "
                    "VOC weights (--weights, or found), the VOC SSD300 on a photograph shipped with matplotlib. "
                    "Writes a PNG per picture and summary.png (all of them in one grid); prints every drawn "
                    "detection.",
        examples=EXAMPLES)
    parser.add_argument("--out", default="demo_output", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--weights", metavar="PATH",
                        help="VOC weights (default: ./weights/weights_SSD300.hdf5 or $SSD_KERAS_WEIGHTS when "
                             "present)")
    parser.add_argument("--scenes", type=positive_int, default=4,
                        help="held-out scenes the shapes model is shown (default: %(default)s)")
    parser.add_argument("--eval-scenes", type=non_negative_int, default=100,
                        help="held-out scenes for the shapes model's mAP (default: %(default)s; 0 skips it)")
    parser.set_defaults(run=run)
    return parser


def detection_table(result: Mapping[str, Any], threshold: float) -> list[str]:
    """The lines of the detections table: every detection of confidence >= ``threshold`` (the
    ones drawn on the pictures), most confident first, per image."""
    from .. import layout

    names = result["class_names"]
    lines = [f"{'image':<14} {'class':<12} {'score':>6}  box (normalised xmin ymin xmax ymax)"]
    for entry in result["images"]:
        rows = [row for row in entry["detections"] if row[layout.CONFIDENCE] >= threshold]
        rows.sort(key=lambda row: -row[layout.CONFIDENCE])
        for row in rows:
            box = " ".join(f"{v:.3f}" for v in row[layout.BOX])
            name = names[int(row[layout.LABEL]) - 1]
            lines.append(f"{entry['name']:<14} {name:<12} {row[layout.CONFIDENCE]:6.3f}  {box}")
        if not rows:
            lines.append(f"{entry['name']:<14} (nothing above {threshold})")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..backends import require_tensorflow
    from ..models import import_tensorflow_quietly

    require_tensorflow("demo (it explains detections with Grad-CAM, which uses tf.GradientTape)")
    import_tensorflow_quietly()
    from ..demo import DRAW_THRESHOLD, VOC_HINT, run_demo, runs_on_scenes

    result = run_demo(args.out, args.weights, num_scenes=args.scenes, eval_scenes=args.eval_scenes)
    print(f"model: {result['model']}")
    print("\n".join(detection_table(result, DRAW_THRESHOLD)))
    for entry in result["images"]:
        written = [entry[key] for key in ("picture", "truth_picture", "gradcam") if entry.get(key)]
        print(f"wrote {', '.join(written)}")
    if result.get("summary"):
        print(f"wrote {result['summary']} (all of them in one picture)")
    if result["mAP"] is not None:
        print(f"mAP@0.5 on {args.eval_scenes} held-out scenes: {result['mAP']:.3f}")
    if runs_on_scenes(result["class_names"]):
        print(VOC_HINT)
    return 0
