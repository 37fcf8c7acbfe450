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
CORE = (
    "losses.py", "models.py", "augment.py", "optim.py", "train.py", "diagnostics.py", "probes.py"
)  # fmt: skip
TARGETS = {"core": 1500, "package": 7500, "function": 60, "all": 25}


def lines(path: Path) -> int:
    """Physical lines of a file, or of every ``.py`` file under a folder."""
    if path.is_dir():
        return sum(lines(p) for p in sorted(path.rglob("*.py")))
    return len(path.read_text().splitlines())


def kinds(path: Path) -> dict[str, int]:
    """Lines of docstrings, comments, blank lines and code, of a file or of a folder's files."""
    if path.is_dir():
        total = dict.fromkeys(("docstrings", "comments", "blank", "code"), 0)
        for p in sorted(path.rglob("*.py")):
            total = {k: total[k] + n for k, n in kinds(p).items()}
        return total
    source = path.read_text()
    lines, docs = source.splitlines(), set()
    for node in ast.walk(ast.parse(source)):
        has_body = isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        first = node.body[0] if has_body and node.body else None
        if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
            if isinstance(first.value.value, str):
                docs.update(range(first.lineno, first.end_lineno + 1))
    rest = [line.strip() for i, line in enumerate(lines, 1) if i not in docs]
    comments = sum(line.startswith("#") for line in rest)
    blank = sum(not line for line in rest)
    return {"docstrings": len(docs), "comments": comments, "blank": blank,
            "code": len(rest) - comments - blank}  # fmt: skip


def functions(root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(lines, "module.py:name")`` of every function and method, longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(root)}:{node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, reverse=True)


def kinds_of_core() -> dict[str, int]:
    """:func:`kinds` summed over the core reading path."""
    parts = [kinds(PACKAGE / name) for name in CORE]
    return {k: sum(part[k] for part in parts) for k in parts[0]}


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
        "core_kinds": kinds_of_core(),
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
    print("  of which " + ", ".join(f"{k} {n}" for k, n in m["core_kinds"].items()))
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
