"""The jobs behind ``vicreg-lab demo`` and ``vicreg-lab train``.

``run_demo`` is ``make demo``: the synthetic cohort, a VICReg training sized by the
profile, and a report folder (:mod:`vicreg_lab.lab.report`). ``run_train`` is the same
job on any dataset, with overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

from vicreg_lab._io import save_figure
from vicreg_lab.profiles import Profile, get_profile

PROBE_SUBJECTS = 256  # held-out subjects the demo probes (as benchmarks/bench_learning.py)


def check_out(out, force: bool = False, resume: bool = False, create: bool = True) -> Path:
    """The report folder, writable; a non-empty one only with ``force`` or ``resume``.

    Checked before any work starts: a run never fails at its end for want of a folder,
    and never overwrites an earlier report silently. ``create=False`` only checks (the
    nearest existing folder above must then be writable).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (force or resume):
        raise FileExistsError(
            f"--out {out} is not empty (an earlier report?); pass --force to overwrite it, "
            "or choose another folder"
        )
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written ({existing} is not a writable folder)")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def run_train(
    dataset,
    out,
    profile: Profile | None = None,
    seed: int = 0,
    resume: bool | str = False,
    extra_figures=(),
    probe_dataset=None,
    force: bool = False,
    **overrides,
):
    """Train VICReg on ``dataset`` as sized by ``profile`` and write the report folder.

    ``overrides`` are :class:`vicreg_lab.VICReg` parameters (e.g. ``max_epochs``; None is
    ignored); ``resume`` continues from ``out/checkpoints/last.ckpt`` if present (``"force"``:
    even when its settings differ, see :meth:`vicreg_lab.VICReg.fit`). A non-empty ``out``
    is refused unless ``force`` or ``resume``.

    Parameters
    ----------
    dataset : Dataset
        Volumes (1, D, H, W) with a ``participants`` table for the probes.
    out : str or Path
        Report folder; checkpoints go to ``out/checkpoints``, the model to ``out/model.ckpt``.
    profile : Profile, optional
        Default from ``VICREG_LAB_PROFILE``.
    extra_figures : sequence of str
        Figures already in ``out`` to link from the summary page.
    probe_dataset : Dataset, optional
        Held-out subjects for the probes (see :func:`vicreg_lab.lab.report.training_report`).

    Returns
    -------
    model, index : VICReg, Path
        The fitted model and the report's ``index.html`` (None on torchrun ranks > 0).
    """
    from vicreg_lab.distributed import is_main
    from vicreg_lab.lab.report import check_report_targets, training_report
    from vicreg_lab.train import VICReg

    profile = profile or get_profile()
    check_report_targets(getattr(probe_dataset or dataset, "participants", None))
    out = check_out(out, force=force, resume=bool(resume))
    model = VICReg(**_params(profile, out, seed, overrides)).fit(dataset, resume=resume)
    if not is_main():  # under torchrun, rank 0 writes the report
        return model, None
    model.save(out / "model.ckpt")
    if probe_dataset is not None and callable(getattr(dataset, "clear_cache", None)):
        dataset.clear_cache()  # the report reads only the probe subjects: free the training volumes
    seeds = (seed, seed + 1, seed + 2)
    index = training_report(
        model, dataset, out, seeds=seeds, extra_figures=extra_figures, probe_dataset=probe_dataset
    )
    return model, index


def _params(profile: Profile, out: Path, seed: int, overrides: dict) -> dict:
    """VICReg's parameters: the profile's recipe, then the overrides that are not None."""
    params = dict(
        encoder=profile.encoder,
        expander=profile.expander,
        batch_size=profile.batch_size,
        max_epochs=profile.max_epochs,
        augment_params=dict(profile.augment) or None,
        checkpoint_dir=out / "checkpoints",
        seed=seed,
    )
    return params | {k: v for k, v in overrides.items() if v is not None}


def run_demo(
    out: str | Path = "demo-report",
    profile: Profile | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """``make demo``: synthetic cohort -> VICReg training -> report; returns ``index.html``.

    A non-empty ``out`` is refused unless ``force`` (``make demo`` passes it: it rewrites
    its own ``demo-report``).
    """
    from vicreg_lab.data import SyntheticCohort
    from vicreg_lab.lab.plots import plot_cohort_grid

    profile = profile or get_profile()
    out = check_out(out, force=force)
    cohort = SyntheticCohort(n_subjects=profile.n_subjects, shape=profile.shape, seed=seed)
    save_figure(plot_cohort_grid(cohort, by="age", n=8), out / "cohort.png")
    # probed on new subjects of the same scanners: what the encoder generalises to
    held_out = cohort.held_out(min(profile.n_subjects, PROBE_SUBJECTS))
    _, index = run_train(
        cohort,
        out,
        profile=profile,
        seed=seed,
        extra_figures=["cohort.png"],
        probe_dataset=held_out,
        force=True,  # checked above; cohort.png is already there
    )
    return index
