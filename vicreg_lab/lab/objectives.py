"""VICReg, its expander and its peers, trained side by side on one harness (notebook 08).

Every objective is a :class:`vicreg_lab.VICReg` (or a subclass from :mod:`vicreg_lab.peers`)
with the same encoder, data, augmentations, optimizer and steps; only the criterion or the
expander changes. Each is measured as :func:`~vicreg_lab.lab.evaluate_model` measures an
ablation run, on held-out subjects.
"""

from __future__ import annotations

import pandas as pd

from vicreg_lab.peers import BarlowTwins, SimCLR
from vicreg_lab.train import VICReg

__all__ = ["OBJECTIVES", "PAPER_EXPANDER_WIDTH", "compare_objectives", "rankme_against_probe"]

#: name -> (estimator, settings that differ from the short-run recipe)
OBJECTIVES = {
    "VICReg": (VICReg, {}),
    "VICReg, no expander": (VICReg, {"expander": "none"}),
    "Barlow Twins": (BarlowTwins, {"lambd": 0.0051}),
    "SimCLR (InfoNCE)": (SimCLR, {"temperature": 0.1}),
}

#: VICReg paper (Bardes et al., ICLR 2022), expander width (three layers of this width)
#: against ImageNet linear top-1 after 100 epochs
PAPER_EXPANDER_WIDTH = pd.DataFrame(
    {
        "width": [256, 512, 1024, 2048, 4096, 8192, 16384],
        "top1": [55.9, 59.2, 62.4, 65.1, 67.3, 68.6, 68.8],
    }
)


def compare_objectives(train, held_out, settings, objectives=None, seed: int = 0) -> pd.DataFrame:
    """Train every objective with ``settings`` (an AblationSettings) and measure it.

    Returns one row per objective: ``steps``, ``final_loss`` (each objective's own loss:
    not comparable across objectives), the representation's RankMe (and its maximum),
    its scale-free collapse verdict, and the held-out linear age probe (R^2 and sd).
    The expander-output verdict of :func:`evaluate_model` is not used: it assumes
    VICReg's target standard deviation of 1, which the peers do not have.
    """
    from vicreg_lab.lab.ablation import evaluate_model

    rows = []
    for name, (estimator, changed) in (objectives or OBJECTIVES).items():
        model = estimator(**{**settings.estimator_params(seed), **changed}).fit(train)
        row = evaluate_model(model, held_out, name, kind="short run", seed=seed).row()
        rows.append(
            {
                "objective": name,
                "steps": row["steps"],
                "final_loss": model.history_["epoch"][-1]["loss"],
                "rep_rankme": row["rep_rankme"],
                "rep_rankme_max": row["rep_rankme_max"],
                "rep_verdict": row["rep_verdict"],
                "age_r2": row["age_r2"],
                "age_r2_sd": row["age_r2_sd"],
            }
        )
    return pd.DataFrame(rows)


def rankme_against_probe(table: pd.DataFrame, rankme="rep_rankme", probe="age_r2") -> str:
    """Whether a higher RankMe went with a better probe in ``table``: one computed sentence.

    Compares the order of the rows by RankMe with their order by the probe (Spearman's
    rank correlation), and names the rows with the highest RankMe and the best probe.
    """
    if len(table) < 3:
        raise ValueError(f"need at least 3 rows to compare orders, got {len(table)}")
    label = table.columns[0]
    rho = table[rankme].rank().corr(table[probe].rank())
    top_rank = table.loc[table[rankme].idxmax(), label]
    top_probe = table.loc[table[probe].idxmax(), label]
    same = "the same row" if top_rank == top_probe else f"not the same row ({top_probe})"
    ordered = "RankMe did not order the probes"
    if rho > 0.5:
        ordered = "a higher RankMe went with a better probe"
    return (
        f"Highest RankMe: {top_rank}; best age probe: {same}. Rank correlation between "
        f"RankMe and the age R^2 over the {len(table)} rows: {rho:.2f} ({ordered})."
    )
