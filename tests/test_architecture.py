"""The package's structure rules (docs/ARCHITECTURE.md), each measured: no import cycle, no
module over 500 lines, no TensorFlow for the data tools, the packed layout spelled out only in
``layout.py``, Keras private API only in ``_keras_compat.py``, the CLI imported by nobody."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "ssd_keras"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """The package modules that ``name`` imports anywhere (module level, functions, methods), except
    under ``if TYPE_CHECKING:``; importing ``a.b.c`` counts as importing ``a`` and ``a.b`` too
    (their ``__init__`` runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets |= {f"{module}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    resolved = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if candidate in MODULES and candidate != name:
                resolved.add(candidate)
    return resolved


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            # a package's __init__ importing its own submodules is how packages work; a cycle
            # through a parent package's lazy __init__ is not possible (it imports nothing)
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_sees_the_imports_it_should():
    # the rule below is only as good as the graph: check it on known edges
    assert "ssd_keras.ssd_layers" in GRAPH["ssd_keras.ssd"]
    assert "ssd_keras.ssd_layers" in GRAPH["ssd_keras.ssd"]  # module level
    assert "ssd_keras.ssd_utils" in GRAPH["ssd_keras.ssd"]  # inside detect()
    assert "ssd_keras.data.annotations" in GRAPH["ssd_keras.data.generator"]
    assert "ssd_keras.data" in GRAPH["ssd_keras.data.generator"]  # the parent package runs too


def test_no_import_cycle_in_the_package():
    assert _cycle() is None, f"import cycle: {' -> '.join(_cycle())}"


def test_no_library_module_imports_the_cli():
    users = sorted(name for name, imported in GRAPH.items()
                   if not name.startswith("ssd_keras.cli") and name != "ssd_keras.__main__"
                   and any(target == "ssd_keras.cli" or target.startswith("ssd_keras.cli.") for target in imported))
    assert users == []


@pytest.mark.parametrize("path", sorted(MODULES.values()) + sorted((REPO_ROOT / "testing_utils").glob("*.py")),
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_module_over_500_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


# The packed prediction layout and detection-row columns, as code spells them out.
LAYOUT_SPELLINGS = [
    r"shape\[-1\]\s*-\s*12", r"\[[^\]]*5:-8[^\]]*\]",
    r"\[[^\]]*4:-8[^\]]*\]", r"\[[^\]]*-8:-4[^\]]*\]", r"\[[^\]]*,\s*-8\]", r"\[:,\s*6\]", r"\[:,\s*2:6\]",
]


def _code_lines(path: Path):
    """(number, line) of the lines that are code, not docstrings or comments."""
    text = path.read_text(encoding="utf-8")
    docstring_lines = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            docstring_lines |= set(range(node.lineno, node.end_lineno + 1))
    for number, line in enumerate(text.splitlines(), 1):
        if number not in docstring_lines:
            yield number, line.split("#", 1)[0]


def test_the_prediction_layout_is_spelled_out_in_layout_py_only():
    files = [p for p in MODULES.values() if p.name != "layout.py"]
    files += sorted((REPO_ROOT / "testing_utils").glob("*.py"))
    found = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
             for path in files for number, line in _code_lines(path)
             for pattern in LAYOUT_SPELLINGS if re.search(pattern, line)]
    assert found == []


def test_the_layout_check_would_find_a_spelling(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""rows[:, 6] in a docstring is fine"""\nnum_classes = model.output_shape[-1] - 12\n'
                    "labels = rows[:, 6]\n")
    hits = [line for _, line in _code_lines(path) for p in LAYOUT_SPELLINGS if re.search(p, line)]
    assert len(hits) == 2


def test_keras_private_api_only_in_keras_compat():
    private = re.compile(r"\._keras_history\b|\._run_through_graph\b|\._symbolic_build\b|\._maybe_symbolic_build\b")
    found = [f"{path.relative_to(REPO_ROOT)}:{number}"
             for path in MODULES.values() if path.name != "_keras_compat.py"
             for number, line in _code_lines(path) if private.search(line)]
    assert found == []


def test_keras_version_guard():
    from ssd_keras import _keras_compat

    _keras_compat.check_keras_version("3.15.1")
    _keras_compat.check_keras_version("3.10.0")
    for version in ("3.16.0", "3.9.2", "4.0.0"):
        with pytest.raises(ImportError, match=f"Keras {re.escape(version)} is installed"):
            _keras_compat.check_keras_version(version)


def test_keras_version_guard_can_be_overridden(monkeypatch):
    from ssd_keras import _keras_compat

    monkeypatch.setenv(_keras_compat.UNTESTED_ENV, "1")
    _keras_compat.check_keras_version("3.16.0")


def test_setup_cfg_states_the_tested_keras_range():
    from ssd_keras import _keras_compat

    (low_major, low_minor), (high_major, high_minor) = _keras_compat.TESTED_KERAS
    setup = (REPO_ROOT / "setup.cfg").read_text()
    assert f"keras>={low_major}.{low_minor},<{high_major}.{high_minor}" in setup


LIGHT_MODULES = ["ssd_keras", "ssd_keras.data", "ssd_keras.data.annotations", "ssd_keras.data.classes",
                 "ssd_keras.data.csv_tools", "ssd_keras.data.synthetic", "ssd_keras.data.augment",
                 "ssd_keras.layout", "ssd_keras.boxes", "ssd_keras.runs", "ssd_keras.models", "ssd_keras.ssd_utils",
                 "ssd_keras.visualization", "ssd_keras.plots", "ssd_keras.checks", "ssd_keras.marknet", "ssd_keras.cli",
                 "ssd_keras.evaluation", "ssd_keras.coco_metrics", "ssd_keras.detections_csv", "ssd_keras.data.coco",
                 "ssd_keras.data.yolo", "ssd_keras.priors", "ssd_keras.prior_search", "ssd_keras.data.check",
                 "ssd_keras.exported", "ssd_keras.backends"]


def test_data_tools_import_no_tensorflow():
    code = ("import sys\n"
            f"for name in {LIGHT_MODULES!r}:\n"
            "    __import__(name)\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            check=True)
    assert result.stdout.strip() == ""


def test_light_modules_list_is_checked_against_real_modules():
    assert set(LIGHT_MODULES) <= set(MODULES)
