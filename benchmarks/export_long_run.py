"""Export the long run's model as the shipped encoder ``synthetic-small`` (weights + card).

Usage (after ``vicreg-lab train --profile long --seed 0 --out runs/long-synthetic-small``)::

    .venv/bin/python benchmarks/export_long_run.py runs/long-synthetic-small \\
        --started 2026-12-06T02:58:00 --finished 2026-12-06T03:55:00 --note "..."

The card records the command, the cohort, the wall time and the machine; the file name,
checksum, steps, shape, parameters and versions are added by
:func:`vicreg_lab.pretrained.export_pretrained`. Then regenerate docs/pretrained.md with
``benchmarks/bench_pretrained.py --write``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from vicreg_lab.profiles import PROFILES

COMMAND = "vicreg-lab train --profile long --seed 0 --out runs/long-synthetic-small"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run's --out folder")
    parser.add_argument("--name", default="synthetic-small")
    parser.add_argument("--started", required=True, help="UTC start, ISO format")
    parser.add_argument("--finished", required=True, help="UTC end, ISO format")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = parser.parse_args(argv)
    from vicreg_lab.pretrained import export_pretrained

    model = args.run / "model.ckpt"
    if not model.is_file():
        raise SystemExit(f"export_long_run: no {model}; train first ({COMMAND})")
    started, finished = datetime.fromisoformat(args.started), datetime.fromisoformat(args.finished)
    if finished <= started:
        raise SystemExit(f"export_long_run: --finished {args.finished} is not after --started")
    long = PROFILES["long"]
    card = {
        "name": args.name,
        "description": (
            f"{long.encoder} encoder trained with VICReg (25/25/1, expander {long.expander}, "
            f"batch {long.batch_size}, AdamW, views {dict(long.augment)}) on a "
            f"{long.n_subjects}-subject synthetic cohort (v2) at "
            f"{'x'.join(map(str, long.shape))}"
        ),
        "command": COMMAND,
        "seed": 0,
        "profile": "long",
        "cohort": {"n_subjects": long.n_subjects, "shape": list(long.shape), "seed": 0},
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": int((finished - started).total_seconds()),
        "hardware_note": args.note,
        "report": f"{args.run}/index.md (probes on the training cohort); "
        "held-out: docs/pretrained.md",
    }
    print(export_pretrained(model, args.name, card))


if __name__ == "__main__":
    main()
