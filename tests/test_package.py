"""The package: public names, a light import, installable metadata."""

from __future__ import annotations

import configparser
import subprocess
import sys

import ssd_keras
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
