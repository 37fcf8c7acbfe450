"""Held-out evaluation of a shipped encoder: probe table and per-latent table (markdown).

The held-out subjects are new people on the training cohort's scanners
(``SyntheticCohort(...).held_out(n)``); probes are cross-validated (5 folds x 3 split
seeds) on frozen embeddings, beside every baseline of
:func:`vicreg_lab.evaluate.embeddings_with_baselines`.

Usage (the command behind the tables in docs/pretrained.md)::

    .venv/bin/python benchmarks/bench_pretrained.py --n 512
"""

from __future__ import annotations

import argparse
import time

from vicreg_lab.data import SyntheticCohort
from vicreg_lab.evaluate import embeddings_with_baselines, latent_table, probe_table
from vicreg_lab.pretrained import load_pretrained


def _markdown(frame, digits: int) -> str:
    header = [str(frame.index.name or "")] + [
        " ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in frame.iterrows():
        lines.append("| " + " | ".join([str(name)] + [f"{v:.{digits}f}" for v in values]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="synthetic-small")
    parser.add_argument("--n", type=int, default=512, help="held-out subjects")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = load_pretrained(args.name)
    info = model.pretrained_info_
    cohort = info["cohort"]
    training = SyntheticCohort(
        cohort["n_subjects"], shape=tuple(info["shape"]), seed=cohort["seed"]
    )
    held_out = training.held_out(args.n)
    embeddings = embeddings_with_baselines(model, held_out, seed=int(info.get("seed", 0)))
    table = probe_table(embeddings, held_out.participants, cv=5, seeds=args.seeds)
    linear = table[table["probe"] == "linear"]
    pivot = linear.pivot_table(index="embedding", columns=["target", "metric"], values="mean")
    pivot = pivot.reindex(list(embeddings))
    print(f"{held_out!r}\n")
    print(_markdown(pivot, 3))
    latents = latent_table(
        embeddings, held_out.latents, held_out.anatomical_latents(), seeds=args.seeds
    )
    print("\nPer-latent linear R^2:\n")
    print(_markdown(latents, 2))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
