"""The ``vicreg-lab`` command line.

Examples
--------
.. code-block:: bash

    vicreg-lab --help
    vicreg-lab demo --out demo-report
"""

from __future__ import annotations

import argparse
import sys


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
        help="run the main job end to end and write a report folder",
        description="Run the end-to-end demo and write a report folder with figures.",
    )
    demo.add_argument("--out", default="demo-report", help="report folder (default: %(default)s)")
    demo.add_argument(
        "--profile",
        choices=["ci", "cpu", "gpu"],
        default=None,
        help="run size (default: $VICREG_LAB_PROFILE, else gpu if CUDA is available, else cpu)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_run_demo)
    return parser


def _version() -> str:
    from vicreg_lab import __version__

    return f"vicreg-lab {__version__}"


def _run_demo(args: argparse.Namespace) -> int:
    from vicreg_lab.demo import run_demo
    from vicreg_lab.profiles import get_profile

    profile = get_profile(args.profile)
    report = run_demo(args.out, profile=profile, seed=args.seed)
    print(f"vicreg-lab demo: report written to {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vicreg-lab`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"vicreg-lab {args.command}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
