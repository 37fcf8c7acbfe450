"""Held-out evaluation of a shipped encoder, and the page docs/pretrained.md written from it.

The held-out subjects are new people on the training cohort's scanners
(``SyntheticCohort(...).held_out(n)``); probes are cross-validated (5 folds x 3 split
seeds) on frozen embeddings, beside every baseline of
:func:`vicreg_lab.baselines.embeddings_with_baselines`. With ``--write`` the whole page
(card, training curves, tables, readings, figures) is generated from the encoder's card,
its training history and these measurements: nothing on it is typed by hand.

Usage (the command behind docs/pretrained.md)::

    .venv/bin/python benchmarks/bench_pretrained.py --n 256 --write docs/pretrained.md

``--n 256`` probes the same 256 people as the ``cpu`` profile's runs in docs/learning.md
and the ablation sweep (``held_out(256)`` of the same training cohort), so that the
"0.8 of the long run" comparison is made on the same subjects.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from vicreg_lab.baselines import RANDOM_RECAL, TRAINED, embeddings_with_baselines, latent_table
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.pretrained import load_pretrained
from vicreg_lab.probes import probe_table

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (("age", "r2"), ("age", "mae"), ("sex", "balanced_accuracy"))
TARGETS += (("site", "balanced_accuracy"),)
HEADERS = ("age R^2", "age MAE, years", "sex bal. acc.", "site bal. acc.")


INTRO = """\
A few CPU minutes do not converge VICReg: the `cpu` profile's demo beats every baseline
(`docs/learning.md`) while its loss is still falling. So that learners can see what a longer run
gives without waiting for it, the project trained the same recipe much longer, once, and ships
the encoder inside the package (`vicreg_lab/weights/`):

```python
from vicreg_lab.pretrained import load_pretrained

model = load_pretrained("{name}")  # a fitted vicreg_lab.VICReg
model.pretrained_info_  # the card: command, seed, steps, versions, sha256, ...
embeddings = model.transform(volumes)  # volumes (N, 1, {shape})
```

`load_pretrained` compares the file's SHA-256 with its card and reads the weights with
`torch.load(weights_only=True)`: a corrupt file is refused with a message, and a file carrying a
pickled object cannot run code (both tested in `tests/test_pretrained.py`).
"""

TAIL = """\
## History

Until issue 15 the shipped encoder was trained on cohort v1 (commit ff471a0 and earlier) at 32^3
with the v1 augmentations (crops 0.4-1, flips on three axes), 4096 steps of batch 64. It is in
the git history (`git log -- vicreg_lab/weights/`), and so are its tables (docs/pretrained.md).

## Reproduce

```bash
{command}
.venv/bin/python benchmarks/export_long_run.py runs/long-synthetic-small --started T0 --finished T1
{this}
```

On a GPU, `--profile research` trains `resnet18_3d` at 128^3 (hours; `--profile gpu` is the
minutes-scale 64^3 version); neither has been run for this release."""


def _markdown(frame, digits: int) -> str:
    header = [str(frame.index.name or "")] + [
        " ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in frame.iterrows():
        lines.append("| " + " | ".join([str(name)] + [f"{v:.{digits}f}" for v in values]) + " |")
    return "\n".join(lines)


def evaluate(name: str, n: int, seeds) -> dict:
    """Embeddings of ``n`` held-out subjects, the probe table and the per-latent table."""
    model = load_pretrained(name)
    info = model.pretrained_info_
    cohort = info["cohort"]
    training = SyntheticCohort(
        cohort["n_subjects"], shape=tuple(info["shape"]), seed=cohort["seed"]
    )
    held_out = training.held_out(n)
    embeddings = embeddings_with_baselines(model, held_out, seed=int(info.get("seed", 0)))
    table = probe_table(embeddings, held_out.participants, cv=5, seeds=seeds)
    latents = latent_table(embeddings, held_out.latents, held_out.anatomical_latents(), seeds=seeds)
    return dict(
        model=model,
        info=info,
        held_out=held_out,
        embeddings=embeddings,
        table=table,
        latents=latents,
    )


def cpu_profile_ages(path: Path | None = None) -> tuple[list[float], str] | None:
    """Held-out age R^2 of the cpu profile's recipe (the standard row of the shipped
    ablation sweep at the training recipe), one per seed, with the sweep's command;
    None when the shipped sweep is not at the training recipe."""
    from vicreg_lab.lab.ablation import cached_sweep

    try:
        sweep = cached_sweep("cpu", path)
    except (FileNotFoundError, ValueError):
        return None
    if "--recipe training" not in sweep.command:
        return None
    runs = sweep.runs
    standard = runs[(runs["inv"] == 25) & (runs["var"] == 25) & (runs["cov"] == 1)]
    if standard.empty:
        return None
    return [float(v) for v in standard.sort_values("seed")["age_r2"]], sweep.command


def _terms(record) -> str:
    return ", ".join(
        f"{k} {record[k]:.3g}" for k in ("loss", "invariance", "variance", "covariance")
    )


def write_page(result: dict, out: Path, figures: Path, seconds: float, seeds, command) -> None:
    """docs/pretrained.md (and its figures and CSV) from an :func:`evaluate` result."""
    from vicreg_lab._io import save_figure, write_text
    from vicreg_lab.lab import plots as viz
    from vicreg_lab.lab.report import read_latents, read_probes, read_variance

    model, info, table = result["model"], result["info"], result["table"]
    latents, held_out = result["latents"], result["held_out"]
    history = model.history_
    epochs = history["epoch"]
    figures.mkdir(parents=True, exist_ok=True)
    rel = Path("figures")
    pictures = {
        "pretrained-loss_terms.png": viz.plot_loss_terms(pd.DataFrame(history["step"])),
        "pretrained-collapse.png": viz.plot_collapse_history(epochs),
        "pretrained-spectrum.png": viz.plot_spectrum(
            [result["embeddings"][TRAINED], result["embeddings"][RANDOM_RECAL]],
            labels=[TRAINED, RANDOM_RECAL],
        ),
        "pretrained-umap.png": viz.plot_umap(
            result["embeddings"][TRAINED], held_out.participants.reset_index(drop=True)
        ),
    }
    for file, fig in pictures.items():
        save_figure(fig, figures / file)
    write_text(out.parent / "pretrained-heldout-probes.csv", table.to_csv(index=False))

    linear = table[table["probe"] == "linear"]
    pivot = linear.pivot_table(index="embedding", columns=["target", "metric"], values="mean")
    sds = linear.pivot_table(index="embedding", columns=["target", "metric"], values="sd")
    order = list(result["embeddings"])
    rows = []
    for name in order:
        cells = [
            f"{pivot.loc[name, t]:.{1 if t[1] == 'mae' else 3}f} ± "
            f"{sds.loc[name, t]:.{1 if t[1] == 'mae' else 3}f}"
            for t in TARGETS
        ]
        label = f"**VICReg, {info['name']}**" if name == TRAINED else name
        rows.append("| " + " | ".join([label, *cells]) + " |")
    latent_rows = latents.rename(index={"mean": "**mean**"})
    params, cohort = info["params"], info["cohort"]
    age = pivot[("age", "r2")]
    best_baseline = max((v, k) for k, v in age.items() if k != TRAINED)
    cpu = cpu_profile_ages()
    if cpu is None:
        comparison = (
            "Not measured: the shipped ablation sweep (`vicreg_lab/cached/ablation-cpu.csv`) is "
            "not at the training recipe, so there is no multi-seed cpu-profile run to compare."
        )
    else:
        ages, sweep_command = cpu
        ratio = min(ages) / age[TRAINED]
        comparison = (
            f"The `cpu` profile's recipe (384 steps, the standard 25/25/1 rows of the shipped "
            f"ablation sweep, `{sweep_command}`) reaches age R^2 "
            + ", ".join(f"{a:.3f}" for a in ages)
            + f" over {len(ages)} seeds on these same {len(held_out)} people (5 folds, one split "
            f"seed each); the long run reaches {age[TRAINED]:.3f}. Worst seed / long run = "
            f"**{ratio:.2f}**: the target of 0.8 is **{'met' if ratio >= 0.8 else 'missed'}**."
        )
    first, last = epochs[0], epochs[-1]
    exp = last["collapse_expander"]
    rep = last["collapse"]
    reading = read_probes(table)[:2] + [read_latents(latents), read_variance(epochs)]
    name, shape = info["name"], ", ".join(map(str, info["shape"]))
    lr = params["lr"] if params["lr"] is not None else "default"
    weights = f"{params['inv_coeff']:g} / {params['var_coeff']:g} / {params['cov_coeff']:g}"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    n_scores = int(table["n_splits"].iloc[0])
    lines = [
        f'# The shipped encoder: `load_pretrained("{name}")`',
        "",
        "<!-- Generated by benchmarks/bench_pretrained.py; edit the script, not this page. -->",
        "",
        INTRO.format(name=name, shape=shape),
        "## How it was made",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{info['command']}` |",
        f"| cohort | `SyntheticCohort(n_subjects={cohort['n_subjects']}, "
        f"shape={tuple(info['shape'])}, seed={cohort['seed']})` (cohort v2) |",
        f"| recipe | profile `{info['profile']}`: `{params['encoder']}`, "
        f"expander `{params['expander']}`, weights {weights}, {params['optimizer']} lr {lr}, "
        f"batch {params['batch_size']}, {info['epochs']} epochs = **{info['steps']} steps**, "
        f"views {params.get('augment_params') or 'default'} |",
        f"| wall time | {info['wall_time_s'] / 60:.0f} min ({info['started']} to "
        f"{info['finished']}), training and its report |",
        f"| hardware | {info['hardware']}; {info.get('hardware_note', '')} |",
        f"| versions | {versions} |",
        "",
        f"Training: the loss terms went from {_terms(first)} (first epoch) to {_terms(last)} "
        f"(last). At the end the expander output's mean std is {exp['mean_std']:.2f} (the loss "
        f"asks for 1; verdict {exp['verdict']}), and the representation's verdict is "
        f"{rep['verdict']} (RankMe {rep['rankme']:.1f}).",
        "",
        f"![loss terms]({rel / 'pretrained-loss_terms.png'})",
        f"![collapse diagnostics over training]({rel / 'pretrained-collapse.png'})",
        "",
        "## Evaluation on held-out subjects",
        "",
        f"`{command}` ({seconds:.0f} s): {len(held_out)} new people on the training cohort's "
        f"scanners (`{held_out!r}`), frozen embeddings, linear probes (ridge / logistic "
        f"regression), 5 folds x {len(seeds)} split seeds ({n_scores} scores); mean ± sd over "
        "them. Full table, kNN included: `docs/pretrained-heldout-probes.csv`.",
        "",
        "| embedding | " + " | ".join(HEADERS) + " |",
        "|---|" + "---|" * len(HEADERS),
        *rows,
        "",
        "Chance: age R^2 0, site 0.25, sex 0.5.",
        "",
        "Per anatomical latent (linear R^2):",
        "",
        _markdown(latent_rows, 2),
        "",
        "Read from the numbers:",
        "",
        *[f"- {s}" for s in reading],
        f"- Best baseline on age: {best_baseline[1]} ({best_baseline[0]:.3f}); margin of the "
        f"long run {age[TRAINED] - best_baseline[0]:+.3f}.",
        "",
        f"![spectrum]({rel / 'pretrained-spectrum.png'})",
        f"![umap]({rel / 'pretrained-umap.png'})",
        "",
        "## The cpu profile against the long run",
        "",
        comparison,
        "",
        TAIL.format(command=info["command"], this=command),
    ]
    write_text(out, "\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="synthetic-small")
    parser.add_argument("--n", type=int, default=256, help="held-out subjects")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--write", type=Path, help="write this page (docs/pretrained.md)")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python benchmarks/bench_pretrained.py", *sys.argv[1:]])
    start = time.perf_counter()
    result = evaluate(args.name, args.n, args.seeds)
    seconds = time.perf_counter() - start
    table = result["table"]
    linear = table[table["probe"] == "linear"]
    pivot = linear.pivot_table(index="embedding", columns=["target", "metric"], values="mean")
    print(f"{result['held_out']!r}\n")
    print(_markdown(pivot.reindex(list(result["embeddings"])), 3))
    print("\nPer-latent linear R^2:\n")
    print(_markdown(result["latents"], 2))
    print(f"\n{seconds:.0f} s")
    if args.write:
        write_page(result, args.write, args.write.parent / "figures", seconds, args.seeds, command)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
