"""``csv``: dataset CSVs from Pascal VOC XML, COCO, YOLO, class folders or an image folder,
annotation CSVs back to COCO and YOLO, and the dataset check with its prior suggestion (no
TensorFlow).

(This module is ``ssd_keras.cli.csv``; ``import csv`` elsewhere still imports the standard library's,
imports being absolute.)
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EXAMPLES = (
    "%(prog)s voc VOC2007/Annotations VOC2007/JPEGImages train.csv   # + train_classes.txt",
    "%(prog)s folders marks/ marks.csv   # + classes.txt",
    "%(prog)s images photos/ photos.csv",
    "%(prog)s coco annotations/instances_val2017.json val2017/ val.csv   # + val_classes.txt",
    "%(prog)s yolo labels/train images/train train.csv --data data.yaml",
    "%(prog)s to-coco train.csv train.json",
    "%(prog)s to-yolo train.csv labels/   # + labels/classes.txt",
    "%(prog)s check train.csv --plot check.png --suggest-priors priors.json",
)
DEFAULT_MAX_PRIORS = 20_000


def add_parser(commands) -> argparse.ArgumentParser:
    from ._common import add_command

    tools = add_command(
        commands, "csv", help="convert datasets: VOC XML, COCO, YOLO, class folders, image folders",
        description="Write the project's CSV files: an annotation CSV from Pascal VOC XML, a COCO instances "
                    "file or YOLO label files (its class list beside it as <csv stem>_classes.txt), a "
                    "classification CSV from a folder per class (classes.txt beside it, which its labels "
                    "index), or an annotation CSV without boxes listing the images of a folder; and an "
                    "annotation CSV back to a COCO instances file or to YOLO label files. Inputs are checked "
                    "before anything is written, every bad line listed in one error. 'check' reports what an "
                    "annotation CSV holds, its problems and how well the model's priors cover its boxes, and "
                    "can suggest priors that fit them.",
        examples=EXAMPLES)
    sources = tools.add_subparsers(dest="source", required=True, metavar="SOURCE")
    voc = sources.add_parser("voc", help="Pascal VOC XML annotations to an annotation CSV (+ <stem>_classes.txt)")
    voc.add_argument("annotations_dir", metavar="ANNOTATIONS_DIR", help="folder of VOC XML files (Annotations/)")
    voc.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of the images (JPEGImages/)")
    voc.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    voc.add_argument("--classes", metavar="voc|FILE",
                     help="class list file or 'voc' (default: the sorted object names)")
    folders = sources.add_parser("folders", help="a folder per class to a classification CSV (image,label) "
                                                 "and classes.txt")
    folders.add_argument("root", metavar="ROOT", help="folder holding one folder of images per class")
    folders.add_argument("out_csv", metavar="OUT_CSV", help="classification CSV to write")
    images = sources.add_parser("images", help="an image folder to an annotation CSV without boxes")
    images.add_argument("folder", metavar="FOLDER", help="folder of images (searched recursively)")
    images.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    coco = sources.add_parser("coco", help="a COCO instances file to an annotation CSV (+ <stem>_classes.txt)")
    coco.add_argument("instances_json", metavar="INSTANCES_JSON", help="COCO instances file (instances_*.json)")
    coco.add_argument("images_dir", metavar="IMAGES_DIR", help="folder the images' file_name are relative to")
    coco.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    yolo = sources.add_parser("yolo", help="YOLO label files to an annotation CSV (+ <stem>_classes.txt)")
    yolo.add_argument("labels_dir", metavar="LABELS_DIR", help="folder of .txt label files (labels/)")
    yolo.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of the images (images/), mirrored by "
                                                               "LABELS_DIR")
    yolo.add_argument("out_csv", metavar="OUT_CSV", help="annotation CSV to write")
    names = yolo.add_mutually_exclusive_group()
    names.add_argument("--classes", metavar="FILE", help="class list, one name per line (default: "
                                                         "LABELS_DIR/classes.txt)")
    names.add_argument("--data", metavar="YAML", help="Ultralytics data.yaml whose 'names' are the classes")
    to_coco = sources.add_parser("to-coco", help="an annotation CSV to a COCO instances file")
    to_coco.add_argument("csv", metavar="CSV", help="annotation CSV")
    to_coco.add_argument("out_json", metavar="OUT_JSON", help="COCO file to write (file_name relative to "
                                                               "the CSV's folder)")
    to_yolo = sources.add_parser("to-yolo", help="an annotation CSV to YOLO label files and classes.txt")
    to_yolo.add_argument("csv", metavar="CSV", help="annotation CSV")
    to_yolo.add_argument("out_dir", metavar="OUT_DIR", help="labels folder to write (one .txt per image)")
    to_yolo.add_argument("--images-dir", metavar="DIR", help="folder whose tree the label files mirror "
                                                             "(default: the deepest folder holding every image)")
    for exporter in (to_coco, to_yolo):
        exporter.add_argument("--classes", metavar="voc|FILE",
                              help="class list numbering the classes (default: <csv stem>_classes.txt beside "
                                   "the CSV when there is one, else the CSV's sorted class names)")
    _add_check(sources)
    tools.set_defaults(run=run)
    return tools


def _add_check(sources) -> None:
    from ._common import positive_int

    check = sources.add_parser(
        "check", help="check an annotation CSV: counts, problems, box sizes, prior coverage; suggest priors",
        description="Prints (and with --json writes) what an annotation CSV holds: images, boxes, boxes per "
                    "class, images without boxes; its problems (degenerate, outside, clipped, tiny, duplicate "
                    "boxes, invalid rows, unreadable images, with their lines); the box size and aspect-ratio "
                    "distribution at the network input; and the prior coverage: the share of boxes whose best "
                    "IoU with the model's priors reaches the matching threshold 0.5, overall and per size "
                    "bucket. --suggest-priors searches a prior configuration that covers the boxes within "
                    "--max-priors (train --priors takes it).")
    check.add_argument("csv", metavar="CSV", help="annotation CSV")
    check.add_argument("--json", metavar="OUT", help="write the report as JSON")
    check.add_argument("--plot", metavar="OUT.png", help="write a picture: box size / aspect-ratio scatter "
                                                         "with the priors' shapes, and the best-IoU histogram")
    check.add_argument("--suggest-priors", metavar="OUT.json",
                       help="write a prior configuration fitted to the boxes, and report its coverage")
    check.add_argument("--max-priors", type=positive_int, default=DEFAULT_MAX_PRIORS, metavar="N",
                       help="prior budget of --suggest-priors (default: %(default)s; SSD300 has 7308)")
    check.add_argument("--priors", metavar="CONFIG", help="prior configuration JSON to measure (default: "
                                                          "SSD300's 7308 priors)")
    check.add_argument("--classes", metavar="voc|FILE",
                       help="class list (default: the CSV's class names; other names are invalid rows)")
    check.add_argument("--input-size", type=positive_int, default=300, metavar="N",
                       help="network input size, as train's --input-size (default: %(default)s)")


def _check(args: argparse.Namespace, classes: list[str] | None) -> int:
    import json

    from ..data.check import check_dataset, format_check, plot_check, suggest

    input_shape = (args.input_size, args.input_size, 3)
    report = check_dataset(args.csv, classes=classes, priors=args.priors, input_shape=input_shape)
    if args.suggest_priors:
        if not len(report.boxes):
            raise ValueError(f"{args.csv}: no usable boxes to suggest priors for")
        suggest(report, args.max_priors)
        report.suggestion.config.save(args.suggest_priors)
    print(format_check(report))
    if args.suggest_priors:
        print(f"suggested priors -> {args.suggest_priors} (train --priors {args.suggest_priors})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report.summary, file, indent=2)
            file.write("\n")
        print(f"report -> {args.json}")
    if args.plot:
        plot_check(report, args.plot)
        print(f"plot -> {args.plot}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data import csv_tools

    classes = None
    if getattr(args, "classes", None):
        from ..models import read_class_names

        classes = read_class_names(args.classes)
    if args.source == "check":
        return _check(args, classes)
    if args.source in ("voc", "coco", "yolo"):
        if args.source == "voc":
            names = csv_tools.voc_to_csv(args.annotations_dir, args.images_dir, args.out_csv, classes=classes)
        elif args.source == "coco":
            from ..data.coco import coco_to_csv

            names = coco_to_csv(args.instances_json, args.images_dir, args.out_csv)
        else:
            from ..data.yolo import yolo_to_csv

            names = yolo_to_csv(args.labels_dir, args.images_dir, args.out_csv, classes=args.data or classes)
        class_file = csv_tools.annotation_class_list_path(args.out_csv)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)}), class list -> {class_file}")
    elif args.source == "to-coco":
        from ..data.coco import csv_to_coco

        dataset = csv_to_coco(args.csv, args.out_json, classes=classes)
        print(f"{args.out_json}: {len(dataset['images'])} images, {len(dataset['annotations'])} annotations, "
              f"{len(dataset['categories'])} categories (ids 1..{len(dataset['categories'])}: "
              f"{', '.join(c['name'] for c in dataset['categories'])})")
    elif args.source == "to-yolo":
        from ..data.yolo import csv_to_yolo

        done = csv_to_yolo(args.csv, args.out_dir, classes=classes, images_dir=args.images_dir)
        print(f"{args.out_dir}: {done.label_files} label files, {done.boxes} boxes of the images under "
              f"{done.images_dir}; classes.txt ({', '.join(done.class_names)})")
        if done.difficult_left_out:
            print(f"{done.difficult_left_out} difficult boxes left out (YOLO has no difficult flag)")
    elif args.source == "folders":
        names = csv_tools.folders_to_csv(args.root, args.out_csv)
        print(f"{args.out_csv}: {len(names)} classes ({', '.join(names)}), class list -> "
              f"{csv_tools.CLASSES_FILENAME} beside it")
    else:
        count = csv_tools.images_to_csv(args.folder, args.out_csv)
        print(f"{args.out_csv}: {count} images")
    return 0
