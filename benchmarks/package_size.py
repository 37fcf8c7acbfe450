"""How big the package a student reads is: lines per module, the core reading path, the whole
package, the longest functions and the size of the public namespaces (issue 16's measures).

Lines are physical lines of the files, docstrings, comments and blank lines included (``wc -l``).

Command: ``.venv/bin/python benchmarks/package_size.py`` (``--json`` for the numbers alone).
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vicreg_lab"
# the core reading path of issue 16: what a student reads beside the notebooks
CORE = ("losses.py", "models.py", "augment", "optim.py", "train.py", "diagnostics.py", "probes.py")
TARGETS = {"core": 1500, "package": 7500, "function": 60, "all": 25}


def lines(path: Path) -> int:
    """Physical lines of a file, or of every ``.py`` file under a folder."""
    if path.is_dir():
        return sum(lines(p) for p in sorted(path.rglob("*.py")))
    return len(path.read_text().splitlines())


def functions(root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(lines, "module.py:name")`` of every function and method, longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(root)}:{node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, reverse=True)


def measure() -> dict:
    """The measures, each beside its target where issue 16 set one."""
    import vicreg_lab
    import vicreg_lab.lab

    core = {name: lines(PACKAGE / name) for name in CORE}
    layers = {
        p.name: lines(p) for p in sorted(PACKAGE.iterdir()) if p.is_dir() and p.name[0] != "_"
    }
    longest = functions()[:5]
    return {
        "core": sum(core.values()),
        "core_modules": core,
        "package": lines(PACKAGE),
        "layers": layers,
        "longest_functions": longest,
        "vicreg_lab.__all__": len(vicreg_lab.__all__),
        "vicreg_lab.lab.__all__": len(vicreg_lab.lab.__all__),
        "targets": TARGETS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    m = measure()
    if parser.parse_args().json:
        print(json.dumps(m, indent=1))
        return
    verdict = {True: "met", False: "MISSED"}
    print(f"core reading path: {m['core']} lines (target <= {TARGETS['core']}: "
          f"{verdict[m['core'] <= TARGETS['core']]})")  # fmt: skip
    for name, n in m["core_modules"].items():
        print(f"  {name:<16} {n:>5}")
    print(f"whole package: {m['package']} lines (target <= {TARGETS['package']}: "
          f"{verdict[m['package'] <= TARGETS['package']]})")  # fmt: skip
    for name, n in m["layers"].items():
        print(f"  {name + '/':<16} {n:>5}")
    n, where = m["longest_functions"][0]
    print(f"longest function: {n} lines, {where} (target <= {TARGETS['function']}: "
          f"{verdict[n <= TARGETS['function']]})")  # fmt: skip
    n_all = m["vicreg_lab.__all__"]
    print(f"vicreg_lab.__all__: {n_all} names (target <= {TARGETS['all']}: "
          f"{verdict[n_all <= TARGETS['all']]}); vicreg_lab.lab.__all__: "
          f"{m['vicreg_lab.lab.__all__']} names")  # fmt: skip


if __name__ == "__main__":
    main()
