"""The ``vicreg-lab`` command line.

Examples
--------
.. code-block:: bash

    vicreg-lab --help
    vicreg-lab demo --out demo-report
    vicreg-lab train --profile cpu --epochs 20 --out runs/cpu
    vicreg-lab train --nifti /data/my_bids --out runs/mine
    vicreg-lab assignments release student-version
    torchrun --nproc_per_node=4 -m vicreg_lab train --openbhb /data/openBHB \
        --profile research
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from vicreg_lab.profiles import PROFILES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("x", ",").split(",")
    if len(parts) == 1:
        parts = parts * 3
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 8:
        raise argparse.ArgumentTypeError(f"expected a shape like 48 or 48x48x48 (>= 8), got {text}")
    return shape


def _common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help="report folder (default: %(default)s)")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="run size (default: $VICREG_LAB_PROFILE, else gpu if CUDA is available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty report folder")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vicreg-lab",
        description="VICReg self-supervised learning on 3D brain MRI, for learning and research.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="train on the synthetic cohort and write a report folder (what `make demo` runs)",
        description="Synthetic cohort -> VICReg training -> report folder with figures.",
    )
    _common(demo, "demo-report")
    demo.set_defaults(func=_run_demo)

    train = commands.add_parser(
        "train",
        help="train VICReg on the synthetic cohort, a NIfTI folder or OpenBHB",
        description="Train VICReg and write a report folder (model.ckpt, checkpoints/, figures).",
    )
    _common(train, "vicreg-run")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--nifti", metavar="DIR", help="BIDS-like folder: participants.tsv + NIfTI")
    source.add_argument("--openbhb", metavar="ROOT", help="OpenBHB root (see vicreg_lab.data)")
    train.add_argument("--modality", default="vbm", choices=["vbm", "quasiraw"], help="OpenBHB")
    train.add_argument(
        "--check-volumes",
        action="store_true",
        help="with --nifti: read every volume in full before training (default: headers only)",
    )
    train.add_argument("--subjects", type=_positive_int, help="synthetic cohort size")
    train.add_argument("--shape", type=_shape, help="volume shape, e.g. 48 or 64x64x64")
    train.add_argument("--encoder", help="encoder name, e.g. small_cnn or resnet18_3d")
    train.add_argument("--expander", help='expander spec, e.g. "8192-8192-8192"')
    train.add_argument("--epochs", type=_positive_int, dest="max_epochs")
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--lr", type=_non_negative_float)
    train.add_argument("--optimizer", choices=["adamw", "lars"])
    train.add_argument("--augmentation", choices=["batched", "torchio"])
    train.add_argument("--inv", type=_non_negative_float, dest="inv_coeff", help="default 25")
    train.add_argument("--var", type=_non_negative_float, dest="var_coeff", help="default 25")
    train.add_argument("--cov", type=_non_negative_float, dest="cov_coeff", help="default 1")
    train.add_argument("--workers", type=int, default=0, dest="num_workers")
    train.add_argument("--resume", action="store_true", help="continue from out/checkpoints")
    train.add_argument(
        "--force-resume",
        action="store_true",
        help="continue from out/checkpoints even if its settings differ from this run's",
    )
    train.set_defaults(func=_run_train)
    _add_assignments(commands)
    return parser


def _add_assignments(commands) -> None:
    assignments = commands.add_parser(
        "assignments",
        help="classroom assignments: build the student versions",
        description="Classroom assignments (nbgrader-compatible notebooks in assignments/).",
    )
    actions = assignments.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    release = actions.add_parser(
        "release",
        help="write the student version of every assignment into OUT_DIR",
        description="Replace solutions with stubs, remove hidden tests, clear outputs and "
        "lock cells, as `nbgrader generate_assignment` does (nbgrader is not needed).",
    )
    release.add_argument("out_dir", metavar="OUT_DIR", help="folder for the student notebooks")
    release.add_argument(
        "--source",
        default=None,
        help="source notebook or folder (default: the assignments/ folder of this checkout, "
        "else ./assignments)",
    )
    release.add_argument("--force", action="store_true", help="overwrite existing notebooks")
    release.set_defaults(func=_run_release)
    _add_grade(actions)


def _add_grade(actions) -> None:
    grade = actions.add_parser(
        "grade",
        help="grade every submission; write grades.csv, gradebook.csv and feedback/",
        description="Grade SUBMISSIONS/<student>/<notebook>.ipynb: run each submission's "
        "answer cells in a contained child process (no vicreg_lab, no files outside its "
        "folder, time and memory limits), check the answers here on visible and hidden "
        "cases, and write OUT/grades.csv, OUT/gradebook.csv (one row per student) and "
        "OUT/feedback/<student>/<notebook>.ipynb.",
    )
    grade.add_argument("submissions", metavar="SUBMISSIONS", help="one folder per student")
    grade.add_argument("--out", default="grading", help="output folder (default: grading)")
    grade.add_argument("--source", default=None, help="source notebooks (default: assignments/)")
    grade.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="VICREG_LAB_PROFILE of the kernels: the profile the students worked in "
        "(default: VICREG_LAB_PROFILE, else cpu, or gpu with CUDA)",
    )
    grade.add_argument(
        "--timeout", type=_positive_int, default=120, help="seconds per cell (default 120)"
    )
    grade.add_argument(
        "--notebook-timeout",
        type=_positive_int,
        default=600,
        help="seconds for all of a notebook's answer cells (default 600)",
    )
    grade.add_argument(
        "--memory-mb", type=_positive_int, default=4096, help="memory of a child (default 4096)"
    )
    grade.add_argument(
        "--hand",
        default=None,
        help="CSV of points given by hand to written answers (student, notebook, grade_id, "
        "points), merged into the grades",
    )
    grade.set_defaults(func=_run_grade)


def _version() -> str:
    from vicreg_lab import __version__

    return f"vicreg-lab {__version__}"


def _run_demo(args: argparse.Namespace) -> int:
    from vicreg_lab.lab.demo import run_demo
    from vicreg_lab.profiles import get_profile

    report = run_demo(args.out, profile=get_profile(args.profile), seed=args.seed, force=args.force)
    _print_summary(report)
    print(f"vicreg-lab demo: report written to {report}")
    return 0


def _print_summary(report) -> None:
    """The report's facts, probe table and plain-language reading, on the terminal."""
    from vicreg_lab.lab.report import summary_text

    print(summary_text(report))


def _run_train(args: argparse.Namespace) -> int:
    from vicreg_lab.distributed import init_distributed
    from vicreg_lab.lab.demo import check_out, run_train
    from vicreg_lab.profiles import get_profile

    init_distributed()
    profile = get_profile(args.profile)
    resume = "force" if args.force_resume else args.resume
    check_out(args.out, force=args.force, resume=bool(resume), create=False)  # before any data
    shape = args.shape or profile.shape
    if args.nifti:
        from vicreg_lab.data import NiftiFolder

        check = "volumes" if args.check_volumes else "headers"
        dataset = NiftiFolder(args.nifti, shape=shape, check=check)
    elif args.openbhb:
        from vicreg_lab.data import OpenBHB

        dataset = OpenBHB(args.openbhb, modality=args.modality, split="train", shape=shape)
    else:
        from vicreg_lab.data import SyntheticCohort

        n = args.subjects or profile.n_subjects
        dataset = SyntheticCohort(n_subjects=n, shape=shape, seed=args.seed)
    keys = ("encoder", "expander", "max_epochs", "batch_size", "lr", "optimizer", "augmentation")
    keys += ("inv_coeff", "var_coeff", "cov_coeff", "num_workers")
    overrides = {key: getattr(args, key) for key in keys}
    _, report = run_train(
        dataset,
        args.out,
        profile=profile,
        seed=args.seed,
        resume=resume,
        force=args.force,
        **overrides,
    )
    if report is not None:
        _print_summary(report)
        print(f"vicreg-lab train: report written to {report}")
    return 0


def _run_release(args: argparse.Namespace) -> int:
    from vicreg_lab.classroom.release import default_source, release

    source = Path(args.source) if args.source else default_source()
    written = release(source, args.out_dir, force=args.force)
    for path in written:
        print(f"vicreg-lab assignments release: wrote {path}")
    return 0


def _run_grade(args: argparse.Namespace) -> int:
    from vicreg_lab._io import write_text
    from vicreg_lab.classroom.grade import grade, gradebook, merge_hand_grades
    from vicreg_lab.classroom.sandbox import Limits

    def progress(line: str) -> None:
        print(f"vicreg-lab assignments grade: {line}", flush=True)

    if args.hand is not None and not Path(args.hand).is_file():
        raise FileNotFoundError(f"hand grades {args.hand} do not exist")
    limits = Limits(
        wall_seconds=args.notebook_timeout,
        cell_seconds=min(args.timeout, args.notebook_timeout),
        memory_mb=args.memory_mb,
        cpu_seconds=args.notebook_timeout * 2,
    )
    table = grade(
        args.submissions,
        source=args.source,
        out_dir=args.out,
        profile=args.profile,
        limits=limits,
        progress=progress,
    )
    if args.hand is not None:
        table = merge_hand_grades(table, args.hand)
        write_text(Path(args.out) / "grades.csv", table.to_csv(index=False))
        write_text(Path(args.out) / "gradebook.csv", gradebook(table).to_csv())
    print(gradebook(table).to_string())
    broken = table[table["status"] == "error"][["student", "notebook", "feedback"]]
    for row in broken.drop_duplicates().itertuples(index=False):
        print(f"vicreg-lab assignments grade: {row.student}/{row.notebook} {row.feedback}")
    print(f"vicreg-lab assignments grade: wrote {Path(args.out) / 'grades.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vicreg-lab`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:  # expected: bad input, one line
        message = _one_line(err)
        parser.exit(2, f"vicreg-lab {args.command}: error: {message}\n")
    except Exception:  # noqa: BLE001 - unexpected: one line here, the traceback in a log
        log = _write_crash_log()
        parser.exit(1, f"vicreg-lab {args.command}: unexpected error; traceback in {log}\n")


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line; for an error a DataLoader worker re-raised
    (whose message is "Caught ... in DataLoader worker process N" and the worker's
    traceback), the original error's last line."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        last = lines[-1]
        prefix = f"{type(err).__name__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last
    return lines[0]


def _write_crash_log() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="vicreg-lab-error-", suffix=".log")
    with open(fd, "w", encoding="utf-8") as f:
        f.write(traceback.format_exc())
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
