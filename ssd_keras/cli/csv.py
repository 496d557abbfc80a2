"""``csv``: dataset CSVs from Pascal VOC XML, COCO, YOLO, class folders or an image folder, and
annotation CSVs back to COCO and YOLO (no TensorFlow).

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
)


def add_parser(commands) -> argparse.ArgumentParser:
    from ._common import add_command

    tools = add_command(
        commands, "csv", help="convert datasets: VOC XML, COCO, YOLO, class folders, image folders",
        description="Write the project's CSV files: an annotation CSV from Pascal VOC XML, a COCO instances "
                    "file or YOLO label files (its class list beside it as <csv stem>_classes.txt), a "
                    "classification CSV from a folder per class (classes.txt beside it, which its labels "
                    "index), or an annotation CSV without boxes listing the images of a folder; and an "
                    "annotation CSV back to a COCO instances file or to YOLO label files. Inputs are checked "
                    "before anything is written, every bad line listed in one error.",
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
    tools.set_defaults(run=run)
    return tools


def run(args: argparse.Namespace) -> int:
    from ..data import csv_tools

    classes = None
    if getattr(args, "classes", None):
        from ..models import read_class_names

        classes = read_class_names(args.classes)
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
