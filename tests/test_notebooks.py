"""notebooks/*.ipynb: committed without outputs, and each runs top to bottom in quick mode.

Each notebook is executed with nbclient in a kernel of this very interpreter: a kernelspec
written to a temporary folder whose ``argv`` is ``sys.executable -m ipykernel_launcher`` (and
whose ``env`` sets ``SSD_KERAS_QUICK=1``), found through a ``KernelSpecManager`` that looks only
there, so neither a user's nor the system's ``python3`` kernel can be picked instead. A cell
appended in memory prints the kernel's ``sys.prefix`` to prove it.
"""

from __future__ import annotations

import json
import sys
import time

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("SSD.ipynb", "SSD_training.ipynb", "GradCAM.ipynb")
KERNEL_NAME = "ssd-keras-test"
CELL_TIMEOUT = 300  # seconds per cell: a hang fails, a slow shared machine does not
PROBE = "import os, sys\nprint('KERNEL', sys.prefix, os.environ.get('SSD_KERAS_QUICK'))"
# what each notebook must print (stream outputs) and how many pictures it must show at least
EXPECTED = {
    "SSD.ipynb": (["forward pass:", "decoding (detection_out):", "detections >= 0.6"], 1),
    "SSD_training.ipynb": (["ORIGINAL_FREEZE: input_1, conv1_1", "training from scratch: nothing frozen",
                            "trained 1 epoch(s)", "checkpoints: ['weights.01-"], 2),
    "GradCAM.ipynb": (["detections; the top 2"], 3),
}


def stream_text(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream")


def image_count(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec for this interpreter, in quick mode, and a manager that sees only it."""
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels"
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ssd_keras tests", "language": "python",
            "env": {"SSD_KERAS_QUICK": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: code cell {i} has outputs"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "SSD_KERAS_QUICK=1" in first.source
    assert "../shared" not in nbformat.writes(nb), f"{name} refers to ../shared"


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_quick_mode(name, kernel_specs, tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    # raises CellExecutionError, with the cell and its traceback, on any error; the kernel is
    # shut down either way (nbclient leaves a kernel manager it was given running otherwise)
    client.execute(cleanup_kc=True)
    seconds = time.perf_counter() - start

    probe = nb.cells[-1].outputs[0]["text"].split()
    assert probe == ["KERNEL", sys.prefix, "1"], "the kernel is not this environment in quick mode"
    text = stream_text(nb)
    wanted, pictures = EXPECTED[name]
    for line in wanted:
        assert line in text, f"{name} did not print {line!r}"
    assert image_count(nb) >= pictures
    print(f"{name}: {seconds:.1f} s")
