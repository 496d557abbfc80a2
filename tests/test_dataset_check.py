"""The dataset check (``csv check``): counts of each problem on a CSV written here, coverage against
a loop, the JSON, the plot and the prior suggestion of the command line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ssd_keras.cli import main
from ssd_keras.data.check import PROBLEMS, check_dataset, format_check
from ssd_keras.priors import DEFAULT_PRIORS, PriorConfig
from tests.test_priors import _loop_best_iou
from tests.tiny_objects import write_tiny_dataset

SIZES = {"a.png": (200, 100), "b.png": (120, 120), "c.png": (80, 60)}  # (width, height)
ROWS = """image_path,xmin,ymin,xmax,ymax,class_name
a.png,10,10,60,50,cat
a.png,10,10,60,50,cat
a.png,10,10,60,51,cat
a.png,10,10,60,50,dog
a.png,50,10,40,30,cat
a.png,10,20,30,20,dog
a.png,180,80,220,120,dog
a.png,-5,-5,20,20,cat
a.png,210,10,230,30,cat
a.png,100,50,102,60,cat
b.png,0,0,120,120,dog
b.png,abc,0,10,10,dog
b.png,,,5,5,cat
b.png,1,2,3
c.png,,,,,
missing.png,1,1,20,20,cat
"""
# what the check must find in ROWS
EXPECTED_PROBLEMS = {
    "degenerate": 2,        # lines 6 (xmin > xmax) and 7 (ymin == ymax)
    "outside": 1,           # line 10: x 210-230 in a 200 px wide image
    "clipped": 2,           # lines 8 and 9
    "tiny": 1,              # line 11: 2 px wide, 3 px at the 300x300 input
    "duplicate": 2,         # line 3 (the same box) and line 4 (IoU 0.976) repeat line 2; line 5 is a dog
    "invalid_rows": 3,      # lines 13 (non-numeric), 14 (partly empty), 15 (field count)
    "unreadable_images": 1,  # line 17
}
# the usable boxes (clipped), in pixels of their images
USABLE = [("a.png", (10, 10, 60, 50), "cat"), ("a.png", (10, 10, 60, 50), "cat"), ("a.png", (10, 10, 60, 51), "cat"),
          ("a.png", (10, 10, 60, 50), "dog"), ("a.png", (180, 80, 200, 100), "dog"), ("a.png", (0, 0, 20, 20), "cat"),
          ("a.png", (100, 50, 102, 60), "cat"), ("b.png", (0, 0, 120, 120), "dog")]


@pytest.fixture(scope="module")
def problem_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    for name, (width, height) in SIZES.items():
        cv2.imwrite(str(root / name), np.full((height, width, 3), 90, np.uint8))
    path = root / "train.csv"
    path.write_text(ROWS)
    return path


def test_every_kind_of_problem_is_counted(problem_csv):
    check = check_dataset(problem_csv)
    summary = check.summary
    assert summary["problems"] == EXPECTED_PROBLEMS and list(summary["problems"]) == list(PROBLEMS)
    assert summary["images"] == 4 and summary["images_without_boxes"] == 1  # c.png
    assert summary["boxes"] == len(USABLE) == len(check.boxes)
    assert summary["boxes_per_class"] == {"cat": 5, "dog": 3}
    assert [line.split(":")[0] for line in summary["problem_lines"]["degenerate"]] == ["train.csv line 6",
                                                                                        "train.csv line 7"]
    assert summary["problem_lines"]["tiny"][0].startswith("train.csv line 11")
    expected = np.array([np.array(box, float) / (SIZES[name] * 2) for name, box, _ in USABLE])
    np.testing.assert_allclose(check.boxes, expected, atol=1e-6)
    assert check.labels.tolist() == [label for _, _, label in USABLE]
    assert "2 degenerate, 1 outside, 2 clipped, 1 tiny, 2 duplicate, 3 invalid rows, 1 unreadable images" \
        in format_check(check)


def test_coverage_equals_a_loop(problem_csv):
    check = check_dataset(problem_csv)
    priors = DEFAULT_PRIORS.priors().astype(np.float64)
    best = np.array([_loop_best_iou(box, priors) for box in check.boxes.tolist()])
    np.testing.assert_allclose(check.best_iou, best, atol=1e-12)
    assert check.summary["prior_coverage"] == np.mean(best >= 0.5)
    assert check.summary["priors"]["num_priors"] == 7308 and check.summary["priors"]["default"]
    sizes = np.sqrt((check.boxes[:, 2] - check.boxes[:, 0]) * (check.boxes[:, 3] - check.boxes[:, 1])) * 300
    for row, (low, high) in zip(check.summary["size_buckets"], [(0, 16), (16, 32), (32, 64), (64, 128),
                                                                 (128, np.inf)]):
        inside = (sizes >= low) & (sizes < high)
        assert row["boxes"] == np.count_nonzero(inside)
        assert row["prior_coverage"] == (np.mean(best[inside] >= 0.5) if inside.any() else None)


def test_the_command_reports_plots_and_suggests(tmp_path, capsys):
    csv_path = write_tiny_dataset(tmp_path / "tiny", 30, seed=3)
    report, plot, priors = tmp_path / "check.json", tmp_path / "check.png", tmp_path / "priors.json"
    assert main(["csv", "check", str(csv_path), "--json", str(report), "--plot", str(plot),
                 "--suggest-priors", str(priors)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(report.read_text())
    assert summary["prior_coverage"] < 0.3
    suggested = summary["suggested_priors"]
    assert suggested["prior_coverage"] >= 0.9 and suggested["num_priors"] <= 20_000
    assert f"coverage {100 * summary['prior_coverage']:.1f}% -> {100 * suggested['prior_coverage']:.1f}%" in out
    assert PriorConfig.load(priors) == PriorConfig.from_dict(suggested["config"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imread(str(plot)).shape[1] >= 1000

    # --priors measures another configuration: the suggested one covers as the suggestion said
    assert main(["csv", "check", str(csv_path), "--priors", str(priors), "--json", str(report)]) == 0
    again = json.loads(report.read_text())
    assert again["prior_coverage"] == suggested["prior_coverage"] and not again["priors"]["default"]


def test_suggestion_respects_max_priors(tmp_path, capsys):
    csv_path = write_tiny_dataset(tmp_path / "tiny", 10, seed=4)
    report = tmp_path / "check.json"
    assert main(["csv", "check", str(csv_path), "--suggest-priors", str(tmp_path / "p.json"), "--max-priors", "2000",
                 "--json", str(report)]) == 0
    assert json.loads(report.read_text())["suggested_priors"]["num_priors"] <= 2000


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["csv", "check", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--plot", "--suggest-priors", "--max-priors", "--priors"):
        assert option in out
    with pytest.raises(SystemExit) as exit_info:
        main(["csv", "check", "x.csv", "--max-priors", "0"])
    assert exit_info.value.code == 2
    assert main(["csv", "check", "no_such.csv"]) == 1
    assert "annotation CSV not found" in capsys.readouterr().err
