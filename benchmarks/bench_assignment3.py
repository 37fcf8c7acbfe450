"""Assignment 3's experiment over seeds and profiles: where do the designs land?

The grade of assignment 3 rests on two thresholds (age R^2, site balanced accuracy) of a
short VICReg run. This measures three designs on several seeds in each profile, so that
the thresholds and the tiers of the grader are set from numbers, not from one run:

- ``photo``: :data:`~vicreg_lab.classroom.NATURAL_IMAGE_RECIPE` (must fail on site);
- ``default``: the library's default augmentations (``{}``);
- ``solution``: the instructor's solution, read from ``assignments/03_*.ipynb``.

Usage::

    python benchmarks/bench_assignment3.py --profiles ci cpu --seeds 0 1 2 3
    python benchmarks/bench_assignment3.py --markdown   # the table for docs/teaching.md

Prints one line per run (profile, design, seed, age R^2, site accuracy, seconds) and, with
``--markdown``, a table with the score each design gets from the grader's tiers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def solution_design() -> dict:
    """The dict the source notebook's ``my_augmentations`` returns (the instructor's file)."""
    import nbformat

    path = next((ROOT / "assignments").glob("03_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    cell = next(
        c
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade_id") == "augmentations-solution"
    )
    namespace: dict = {}
    exec(cell.source, namespace)  # noqa: S102 - the instructor's own solution cell
    return namespace["my_augmentations"]()


def main(argv=None) -> int:
    from vicreg_lab.classroom import NATURAL_IMAGE_RECIPE, augmentation_experiment
    from vicreg_lab.classroom.augmentations import design_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["ci", "cpu"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    designs = {"photo": NATURAL_IMAGE_RECIPE, "default": {}, "solution": solution_design()}
    rows = []
    for profile in args.profiles:
        for name, design in designs.items():
            for seed in args.seeds:
                start = time.perf_counter()
                result = augmentation_experiment(design, profile=profile, seed=seed)
                seconds = time.perf_counter() - start
                rows.append((profile, name, seed, result.age_r2, result.site_accuracy))
                print(
                    f"{profile} {name} seed {seed}: age R^2 {result.age_r2:.3f}, site "
                    f"{result.site_accuracy:.3f}, {seconds:.0f} s",
                    flush=True,
                )
    if args.markdown:
        print("\n| profile | design | age R^2 by seed | site accuracy by seed | score |")
        print("| --- | --- | --- | --- | --- |")
        for profile in args.profiles:
            for name in designs:
                mine = [r for r in rows if r[0] == profile and r[1] == name]
                ages = ", ".join(f"{r[3]:.2f}" for r in mine)
                sites = ", ".join(f"{r[4]:.2f}" for r in mine)
                score = sum(design_score(r[3], r[4]) for r in mine) / len(mine)
                print(f"| {profile} | {name} | {ages} | {sites} | {score:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
