"""The package's shape: a small core without plotting, teaching helpers in vicreg_lab.lab,
no private names across modules, and notebooks that import from two places only."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import vicreg_lab
import vicreg_lab.lab as lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vicreg_lab"
CORE = ["losses", "models", "augment", "optim", "train", "diagnostics", "probes"]


def test_the_core_imports_neither_matplotlib_nor_ipywidgets():
    modules = ", ".join(f"vicreg_lab.{name}" for name in CORE)
    code = (
        f"import sys, {modules}\n"
        "loaded = sorted(m for m in ('matplotlib', 'ipywidgets', 'umap') if m in sys.modules)\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the core loaded {out.stdout.strip()}"


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in _imports(ast.parse(path.read_text())):
            internal = node.level > 0 or (node.module or "").startswith("vicreg_lab")
            for alias in node.names if internal else ():
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")
    assert offenders == []


def test_the_public_namespaces_are_small_disjoint_and_resolve():
    assert len(vicreg_lab.__all__) <= 25
    assert not set(vicreg_lab.__all__) & set(lab.__all__)
    for namespace in (vicreg_lab, lab):
        for name in namespace.__all__:
            assert getattr(namespace, name) is not None, name


def test_notebooks_import_only_from_the_core_and_the_lab():
    """The tutorials, and the assignments (which also call the classroom's checks)."""
    seen = {}
    paths = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (ROOT / "assignments").glob("*.ipynb")
    )
    for path in paths:
        allowed = ("vicreg_lab", "vicreg_lab.lab")
        if path.parent.name == "assignments":
            allowed += ("vicreg_lab.classroom",)
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            lines = [
                line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
            ]
            for node in _imports(ast.parse("\n".join(lines))):
                if not (node.module or "").startswith("vicreg_lab"):
                    continue
                assert node.module in allowed, f"{path.name}: {node.module}"
                for alias in node.names:
                    assert seen.setdefault(alias.name, node.module) == node.module, alias.name
    assert len(seen) > 40  # the notebooks do use the package


def _package_size():
    """benchmarks/package_size.py, which measures what the tests below bound."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "package_size", ROOT / "benchmarks/package_size.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_function_is_longer_than_60_lines():
    size = _package_size()
    longest = size.functions()
    assert longest and longest[0][0] >= longest[-1][0]  # it found functions, longest first
    too_long = [(n, where) for n, where in longest if n > size.TARGETS["function"]]
    assert too_long == []


def test_the_size_measure_counts_the_core_inside_the_package():
    measures = _package_size().measure()
    assert set(measures["core_modules"]) >= {"losses.py", "train.py", "augment.py"}
    assert 0 < measures["core"] < measures["package"]
    assert sum(measures["core_kinds"].values()) == measures["core"]  # every line counted once
    assert measures["core_kinds"]["docstrings"] > 0 and measures["core_kinds"]["code"] > 0
    assert measures["vicreg_lab.__all__"] == len(vicreg_lab.__all__)


def test_the_size_table_in_the_docs_is_the_measure_of_this_code():
    # docs/architecture.md states the sizes; a change to the package must re-measure them
    import re

    measures = _package_size().measure()
    text = (ROOT / "docs" / "architecture.md").read_text()
    stated = {
        "core": r"\| core reading path:[^|]*\| [\d,]+ \| ([\d,]+) \|",
        "package": r"\| whole package \| [\d,]+ \| ([\d,]+) \|",
    }
    for key, pattern in stated.items():
        found = re.search(pattern, text)
        assert found, f"docs/architecture.md has no {key} row"
        number = int(found.group(1).replace(",", ""))
        assert number == measures[key], (
            f"docs/architecture.md says {key} {number}, the code measures {measures[key]}: "
            "rerun benchmarks/package_size.py and update the table"
        )
