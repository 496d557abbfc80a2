"""The package: public names, a light import, installable metadata."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys

import pytest

import ssd_keras
from ssd_keras.models import WEIGHTS_ENV
from tests.conftest import REPO_ROOT


def test_every_public_name_resolves():
    for name in ssd_keras.__all__:
        assert getattr(ssd_keras, name) is not None, name
    assert set(ssd_keras.__all__) <= set(dir(ssd_keras))


def test_import_is_light_and_changes_no_global_state():
    code = ("import os, sys; before = dict(os.environ); import ssd_keras; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert dict(os.environ) == before, 'environment changed'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_requirements_pin_what_setup_cfg_declares():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    declared = {line.split(">")[0].split("=")[0].strip().lower()
                for line in config["options"]["install_requires"].splitlines() if line.strip()}
    pinned = {line.split("==")[0].strip().lower()
              for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert declared <= pinned


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_demo_from_anywhere(tmp_path):
    """`pip wheel` the project, install the wheel alone (no editable checkout) into a folder and
    run the demo from another folder with only that folder on PYTHONPATH: the embedded model must
    come from the package data, not from the checkout."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "demo_output",
        "notebooks", "tests", "bench"))
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "installed", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ssd_keras-*.whl")
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    shutil.rmtree(source)  # nothing may come from a checkout
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop(WEIGHTS_ENV, None)
    where = subprocess.run([sys.executable, "-c", "import ssd_keras; print(ssd_keras.__file__)"], env=env,
                           cwd=elsewhere, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(target))
    run = subprocess.run([sys.executable, "-m", "ssd_keras", "demo", "--scenes", "1", "--eval-scenes", "0",
                          "--out", "out"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "embedded shapes model" in run.stdout
    assert (elsewhere / "out" / "summary.png").is_file()
    entry = subprocess.run([sys.executable, "-c", "import sys; from ssd_keras.cli import main; "
                            "sys.argv = ['ssd-keras', '--help']; sys.exit(main())"], env=env, cwd=elsewhere,
                           capture_output=True, text=True, timeout=60)
    assert entry.returncode == 0 and entry.stdout.startswith("usage: ssd-keras")
