"""The main job behind ``vicreg-lab demo`` (and ``make demo``): run, diagnose, report.

For now the demo trains the toy problem of :mod:`vicreg_lab.toy` twice, once with the
standard weights (25 / 25 / 1) and once without the variance term (25 / 0 / 1), and
writes a report folder:

- ``loss_terms.png``: every loss term of both runs over the steps;
- ``spectrum.png``: singular value spectra of the embeddings before and after training;
- ``diagnostics.png`` and ``diagnostics.json``: the collapse report of each run;
- ``cohort.png``: synthetic brains ordered by age (when the data module is available);
- ``index.md`` and ``index.html``: a summary page linking all of them.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from vicreg_lab._io import save_figure, write_text
from vicreg_lab.profiles import Profile, get_profile

# steps of the toy runs per profile
_TOY_STEPS = {"ci": 80, "cpu": 300, "gpu": 300}

RUNS = {
    "standard (25/25/1)": dict(inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0),
    "no variance (25/0/1)": dict(inv_coeff=25.0, var_coeff=0.0, cov_coeff=1.0),
}


def _report_dict(report) -> dict:
    report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in report.items()}


def run_demo(
    out: str | Path = "demo-report", profile: Profile | None = None, seed: int = 0
) -> Path:
    """Run the demo and write the report folder.

    Parameters
    ----------
    out : str or Path
        Output folder (created if missing; files in it are replaced atomically).
    profile : Profile, optional
        Run size; default from ``VICREG_LAB_PROFILE`` (see :func:`vicreg_lab.get_profile`).
    seed : int
        Random seed.

    Returns
    -------
    Path
        The summary page ``index.html`` inside ``out``.
    """
    from vicreg_lab import viz
    from vicreg_lab.diagnostics import collapse_report
    from vicreg_lab.toy import train_toy

    profile = profile or get_profile()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; give a folder path")
    out.mkdir(parents=True, exist_ok=True)

    steps = _TOY_STEPS[profile.name]
    results = {name: train_toy(steps=steps, seed=seed, **weights) for name, weights in RUNS.items()}

    figures = {}
    histories = {name: run["history"] for name, run in results.items()}
    figures["loss_terms.png"] = save_figure(viz.plot_loss_terms(histories), out / "loss_terms.png")
    first = next(iter(results.values()))
    spectra = {"before training": first["initial_embeddings"]}
    spectra.update({name: run["embeddings"] for name, run in results.items()})
    figures["spectrum.png"] = save_figure(
        viz.plot_spectrum(list(spectra.values()), labels=list(spectra)), out / "spectrum.png"
    )
    reports = {name: collapse_report(run["embeddings"]) for name, run in results.items()}
    figures["diagnostics.png"] = save_figure(
        viz.plot_collapse_reports(reports), out / "diagnostics.png"
    )
    cohort = _cohort_figure(profile, seed)
    if cohort is not None:
        figures["cohort.png"] = save_figure(cohort, out / "cohort.png")

    summary = {
        "profile": profile.name,
        "seed": seed,
        "toy_steps": steps,
        "runs": {
            name: {
                "weights": RUNS[name],
                "final_terms": {k: v[-1] for k, v in run["history"].items() if k != "step"},
                "collapse_report": _report_dict(reports[name]),
            }
            for name, run in results.items()
        },
    }
    write_text(out / "diagnostics.json", json.dumps(summary, indent=2, default=float) + "\n")
    markdown = _summary_markdown(summary, figures)
    write_text(out / "index.md", markdown)
    return write_text(out / "index.html", _summary_html(summary, figures))


def _cohort_figure(profile: Profile, seed: int):
    """A grid of synthetic brains ordered by age, or None when the cohort is unavailable."""
    try:
        from vicreg_lab.data import SyntheticCohort
        from vicreg_lab.viz import plot_cohort_grid
    except ImportError:
        return None
    cohort = SyntheticCohort(n_subjects=16, shape=profile.shape, seed=seed)
    return plot_cohort_grid(cohort, by="age", n=8)


_COLUMNS = ["run", "loss", "invariance", "variance", "covariance", "RankMe", "verdict"]
_READING = (
    "Without the variance term nothing stops the invariance term from mapping every input "
    "to the same point: the embedding collapses. With it, each dimension keeps a spread and "
    "the covariance term decorrelates the dimensions."
)


def _summary_rows(summary: dict) -> list[list[str]]:
    rows = []
    for name, run in summary["runs"].items():
        t, r = run["final_terms"], run["collapse_report"]
        rows.append(
            [name, f"{t['loss']:.3f}", f"{t['invariance']:.4f}", f"{t['variance']:.4f}"]
            + [f"{t['covariance']:.4f}", f"{r['rankme']:.2f}", r["verdict"]]
        )
    return rows


def _intro(summary: dict) -> str:
    return (
        f"Profile {summary['profile']}, seed {summary['seed']}, "
        f"{summary['toy_steps']} steps of the toy VICReg problem per run."
    )


def _summary_markdown(summary: dict, figures: dict) -> str:
    table = [_COLUMNS, ["---"] * len(_COLUMNS), *_summary_rows(summary)]
    lines = ["# vicreg-lab demo report", "", _intro(summary), ""]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines += ["", _READING, ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _summary_html(summary: dict, figures: dict) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
        for row in _summary_rows(summary)
    )
    images = "".join(f'<p><img src="{esc(n)}" alt="{esc(n)}"></p>' for n in figures)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>vicreg-lab demo</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}</style></head><body>"
        f"<h1>vicreg-lab demo report</h1><p>{esc(_intro(summary))}</p>"
        f"<table><tr>{head}</tr>{rows}</table><p>{esc(_READING)}</p>{images}</body></html>\n"
    )
