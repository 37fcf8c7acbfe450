"""The report folder of a training run: figures, the probe table, and a summary page.

:func:`training_report` writes, each file atomically: ``loss_terms.png``, ``collapse.png``
(diagnostics after every epoch), ``spectrum.png`` (trained against random-init),
``umap.png`` (by age and site), ``probes.csv`` (the trained encoder and the baselines),
``history.json`` (per epoch), and ``index.md`` / ``index.html``, a summary page with a
plain-language reading.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from vicreg_lab._io import save_figure, write_text
from vicreg_lab.baselines import (  # noqa: F401 (names the report's readers use)
    HISTOGRAM,
    RANDOM_EVAL,
    RANDOM_RECAL,
    RAW,
    TRAINED,
    embeddings_with_baselines,
)


def read_probes(table: pd.DataFrame) -> list[str]:
    """Plain-language sentences about a probe table, whatever it says."""
    linear = table[table["probe"] == "linear"].set_index(["embedding", "target", "metric"])
    sentences = []

    def score(name, target, metric):
        key = (name, target, metric)
        return linear.loc[key, "mean"] if key in linear.index else None

    age = {name: score(name, "age", "r2") for name in table["embedding"].unique()}
    beats = None
    if age.get(TRAINED) is not None:
        best = max((v, k) for k, v in age.items() if k != TRAINED and v is not None)
        beats = bool(age[TRAINED] > best[0])
        sentences.append(
            f"Age: a linear probe on the VICReg embedding reaches R^2 = {age[TRAINED]:.2f}; "
            f"it {'beats' if beats else 'does not beat'} the best baseline "
            f"({best[1]}, R^2 = {best[0]:.2f})."
        )
    site = score(TRAINED, "site", "balanced_accuracy")
    if site is not None:
        chance = float(table[(table["target"] == "site")]["chance"].iloc[0])
        sentences.append(
            f"Scanner site: balanced accuracy {site:.2f} against a chance level of "
            f"{chance:.2f}; the higher it is, the more the embedding encodes the scanner "
            "rather than the brain."
        )
    if beats is False:
        sentences.append(
            "Why the baselines can win: a short CPU run does not converge VICReg, and the "
            "baselines are strong (the intensity histogram reads the tissue fractions that "
            "change with age; raw voxels carry the anatomy directly; a random encoder is a fair "
            "feature extractor). docs/learning.md measures which recipes beat them, and the "
            "long-run encoder, load_pretrained('synthetic-small'), shows what more training gives."
        )
    return sentences


def seed_summary(runs: pd.DataFrame, metrics, by=("arm",)) -> pd.DataFrame:
    """Mean, min and max of each metric over the seeds, one row per group of ``by``.

    ``runs`` has one row per (group, seed), e.g. from
    :func:`vicreg_lab.pretrained.cached_results`; the last column counts the seeds.
    """
    grouped = runs.groupby(list(by), sort=False)
    table = grouped[list(metrics)].agg(["mean", "min", "max"])
    table[("seeds", "n")] = grouped["seed"].nunique()
    return table


def compare_seeds(runs: pd.DataFrame, metric: str, first: str, second: str, by: str = "arm") -> str:
    """One sentence comparing two arms of a multi-seed table, paired by seed.

    The same seed gives both arms the same initialisation and data order. A difference
    is consistent when it has the same sign at every shared seed, and clear when, moreover,
    the arms' ranges over the seeds do not overlap. Raises ValueError when an arm is
    missing or the arms share no seed.
    """
    values = {}
    for arm in (first, second):
        rows = runs[runs[by] == arm]
        if rows.empty:
            raise ValueError(f"no rows with {by} == {arm!r}; found {sorted(runs[by].unique())}")
        values[arm] = rows.set_index("seed")[metric]
    a, b = values[first], values[second]
    seeds = a.index.intersection(b.index)
    if seeds.empty:
        raise ValueError(f"{first!r} and {second!r} share no seed")
    a, b = a[seeds], b[seeds]
    higher, n = int((a > b).sum()), len(seeds)
    if higher in (0, n):
        top, low = (a, b) if higher == n else (b, a)
        verdict = f"{first if higher == n else second} is higher at every seed"
        clear = top.min() > low.max()
        verdict += ", and the ranges do not overlap" if clear else ", but the ranges overlap"
    else:
        verdict = f"no consistent difference ({first} is higher at {higher} of {n} seeds)"
    return (
        f"{metric.replace('_', ' ')}: {first} {a.mean():.3f} ({a.min():.3f} to {a.max():.3f}), "
        f"{second} {b.mean():.3f} ({b.min():.3f} to {b.max():.3f}) over {n} seeds; "
        f"mean difference {(a - b).mean():+.3f}: {verdict}."
    )


def training_report(
    model, dataset, out, seeds=(0, 1, 2), cv: int = 5, extra_figures=(), probe_dataset=None
) -> Path:
    """Write the report folder of a fitted :class:`vicreg_lab.VICReg`; return its ``index.html``.

    Parameters
    ----------
    model : VICReg
        A fitted estimator.
    dataset : Dataset
        The training volumes; needs a ``participants`` DataFrame.
    out : str or Path
        The report folder.
    seeds, cv : sequence of int, int
        Seeds of the probes' cross-validation splits, and folds per seed.
    extra_figures : sequence of str
        Files already in ``out`` to show first on the summary page (e.g. ``cohort.png``).
    probe_dataset : Dataset, optional
        Subjects the model never saw, to probe and to draw the UMAP on (e.g.
        ``cohort.held_out(n)``); default ``dataset`` (the page says so). With ``latents``
        and ``anatomical_latents`` (a SyntheticCohort) it also gets ``latents.csv``.
    """
    from vicreg_lab.baselines import latent_table
    from vicreg_lab.probes import probe_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history = model.history_
    probed = dataset if probe_dataset is None else probe_dataset
    embeddings = embeddings_with_baselines(model, probed, seed=model.seed)
    factors = probed.participants.reset_index(drop=True)
    shown = [*extra_figures, *_save_figures(out, history, embeddings, factors)]
    folds = min(cv, len(factors) // 2)
    table = probe_table(embeddings, factors, cv=folds, seeds=seeds)
    write_text(out / "probes.csv", table.to_csv(index=False))
    latents = None
    if hasattr(probed, "latents") and hasattr(probed, "anatomical_latents"):
        columns = probed.anatomical_latents()
        latents = latent_table(embeddings, probed.latents, columns, cv=folds)
        write_text(out / "latents.csv", latents.to_csv())
    write_text(out / "history.json", json.dumps(history["epoch"], indent=1) + "\n")
    reading = read_probes(table)
    held_out = probe_dataset is not None
    facts = _facts(model, len(dataset), len(factors), held_out, cv, len(seeds))
    linear = table[table["probe"] == "linear"]
    pivot = linear.pivot_table(index="embedding", columns=["target", "metric"], values="mean")
    pivot = pivot.reindex([k for k in embeddings if k in pivot.index])
    if latents is not None:
        reading.append(read_latents(latents))
    reading.append(read_variance(history["epoch"]))
    write_text(out / "index.md", _markdown(facts, pivot, reading, shown, latents))
    return write_text(out / "index.html", _html(facts, pivot, reading, shown, latents))


def _save_figures(out: Path, history, embeddings, factors) -> list[str]:
    """Draw and save the report's four figures; return their file names."""
    from vicreg_lab.lab import plots as viz

    figures = {
        "loss_terms.png": viz.plot_loss_terms(pd.DataFrame(history["step"])),
        "collapse.png": viz.plot_collapse_history(history["epoch"]),
        "spectrum.png": viz.plot_spectrum(
            [embeddings[TRAINED], embeddings[RANDOM_RECAL]], labels=[TRAINED, RANDOM_RECAL]
        ),
        "umap.png": viz.plot_umap(embeddings[TRAINED], factors, columns=("age", "site")),
    }
    for name, fig in figures.items():
        save_figure(fig, out / name)
    return list(figures)


def _facts(model, n_volumes, n_probed, held_out, cv, n_seeds) -> list[str]:
    """The summary page's facts: the run, how it was probed, its loss and collapse verdicts."""
    history = model.history_
    first, last = history["epoch"][0], history["epoch"][-1]
    rep, exp = last["collapse"], last["collapse_expander"]  # scale-free, target_std=1
    probed = (
        f"Probes: {n_probed} held-out subjects the model never saw"
        if held_out
        else f"Probes: cross-validated on the {n_probed} training subjects"
    )
    return [
        f"Encoder {model.encoder}, expander {model.expander}, weights "
        f"{model.inv_coeff:g}/{model.var_coeff:g}/{model.cov_coeff:g}, "
        f"{len(history['step'])} steps over {len(history['epoch'])} epochs, "
        f"{n_volumes} volumes of shape {tuple(model.input_size_)}.",
        probed + f" ({cv}-fold x {n_seeds} split seeds; linear = ridge / logistic regression).",
        f"Loss {first['loss']:.3f} (first epoch) -> {last['loss']:.3f} (last); "
        f"collapse verdict of the representation: {rep['verdict']} (scale-free; RankMe "
        f"{rep['rankme']:.1f} of at most {rep['rankme'] / rep['rankme_fraction']:.0f}); "
        f"of the expander output: {exp['verdict']} (target std 1; mean std "
        f"{exp['mean_std']:.2g}).",
    ]


def check_report_targets(participants) -> None:
    """Refuse, before any training, a participants table the report cannot probe.

    The report probes ``age`` (regression) and ``site`` (classification, stratified folds)
    and draws the UMAP by both: each column must be there, age numeric and complete, and
    at least two sites with at least two subjects each.
    """
    import pandas as pd

    if not isinstance(participants, pd.DataFrame):
        raise ValueError("the dataset has no participants table; the report needs age and site")
    missing = [c for c in ("age", "site") if c not in participants.columns]
    if missing:
        raise ValueError(
            f"the participants table has no {' or '.join(missing)} column; the report probes "
            f"age and site (columns found: {', '.join(map(str, participants.columns))})"
        )
    age = pd.to_numeric(participants["age"], errors="coerce")
    if age.isna().any():
        raise ValueError(f"age is missing or not a number for {int(age.isna().sum())} subjects")
    sites = participants["site"].value_counts()
    if len(sites) < 2 or sites.min() < 2:
        raise ValueError(
            f"the report's site probe needs >= 2 sites with >= 2 subjects each; found "
            f"{', '.join(f'{k}: {v}' for k, v in sites.items())}"
        )


def read_variance(epochs) -> str:
    """One sentence on how far the variance term fell, whatever it did."""
    first, last = epochs[0]["variance"], epochs[-1]["variance"]
    trend = "fell" if last < first else "did not fall"
    mark = "reached" if last <= 0.3 else "not reached"
    return (
        "Spread: the expander's variance term (the mean shortfall of each embedding "
        f"dimension's std below 1) {trend} from {first:.2f} (first epoch) to {last:.2f} "
        f"(last); 0.3 or less marks embeddings spread out as the loss asks: {mark}."
    )


def read_latents(latents: pd.DataFrame) -> str:
    """One sentence on the per-latent table, whatever it says."""
    mean = latents.loc["mean"]
    best = max((v, k) for k, v in mean.items() if k != TRAINED)
    verb = "above" if mean[TRAINED] > best[0] else "not above"
    return (
        f"Anatomy: over {len(latents) - 1} anatomical latents, the mean R^2 of the VICReg "
        f"embedding is {mean[TRAINED]:.2f}, {verb} the best baseline ({best[1]}, {best[0]:.2f})."
    )


def summary_text(report) -> str:
    """The summary page for a terminal: ``index.md`` of a report folder without title and figures.

    ``report`` is the folder written by :func:`training_report`, or its ``index.html`` /
    ``index.md``.
    """
    folder = Path(report)
    if folder.suffix in {".html", ".md"}:
        folder = folder.parent
    page = folder / "index.md"
    if not page.is_file():
        raise FileNotFoundError(f"no report summary at {page}: run write_report first")
    lines = page.read_text().splitlines()
    kept = [line for line in lines[1:] if not line.startswith("![")]
    return "\n".join(kept).strip() + "\n"


def _md_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _markdown(facts, pivot: pd.DataFrame, reading, figures, latents=None) -> str:
    header = ["embedding"] + [f"{t} {m}" for t, m in pivot.columns]
    rows = [[name] + [f"{v:.3f}" for v in values] for name, values in pivot.iterrows()]
    lines = ["# vicreg-lab training report", "", *facts, "", "## Linear probes (mean over splits)"]
    lines += ["", *_md_table(header, rows), "", "All probes, kNN included, with sd: `probes.csv`."]
    if latents is not None:
        rows = [[str(name)] + [f"{v:.2f}" for v in values] for name, values in latents.iterrows()]
        lines += ["", "## Anatomical latents: linear R^2 (`latents.csv`)", ""]
        lines += _md_table(["latent", *latents.columns], rows)
    lines += ["", *reading, ""]
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _html(facts, pivot: pd.DataFrame, reading, figures, latents=None) -> str:
    esc = html.escape
    table = pivot.to_html(float_format=lambda v: f"{v:.3f}", border=0)
    paragraphs = "".join(f"<p>{esc(s)}</p>" for s in facts)
    readings = "".join(f"<li>{esc(s)}</li>" for s in reading)
    images = "".join(f'<p><img src="{esc(n)}" alt="{esc(n)}"></p>' for n in figures)
    if latents is not None:
        latent_html = latents.to_html(float_format=lambda v: f"{v:.2f}", border=0)
        table += f"<h2>Anatomical latents: linear R^2</h2>{latent_html}"
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>vicreg-lab report</title>'
        "<style>body{font-family:sans-serif;max-width:64em;margin:auto}"
        "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}</style></head><body>"
        f"<h1>vicreg-lab training report</h1>{paragraphs}<h2>Linear probes</h2>{table}"
        '<p>All probes, kNN included, with sd: <a href="probes.csv">probes.csv</a>.</p>'
        f"<ul>{readings}</ul>{images}</body></html>\n"
    )
