"""Site-age confounding: probes on unseen scanners, and ComBat harmonization beside them.

In multi-site brain-age work the scanner and the age go together (each site recruits its
own age band), so a probe can "learn age" by recognising the scanner. Two protocols tell
the difference:

- shuffled folds: test subjects come from scanners the probe has seen;
- leave one site out (``probe_table(groups="site")``): every test subject comes from a
  scanner the probe never saw; only age read from the anatomy transfers.

ComBat (Johnson et al. 2007; Fortin et al. 2018, the ``neuroCombat`` package) removes each
site's mean and scale from every feature. It needs every site's data, the new one's
included, and under a confound it removes age with the site unless it is told the ages
(``keep="age"``), which at test time are the very labels a probe should predict.
:func:`confound_table` measures all of it on one table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from vicreg_lab.probes import probe_table

__all__ = ["PROTOCOLS", "TRANSFER", "combat", "confound_table", "read_confounds", "read_invariance"]

#: protocol name -> the ``groups`` column of :func:`~vicreg_lab.probes.probe_table`
PROTOCOLS = {"shuffled folds": None, "leave one site out": "site"}
#: an age read-out "transfers" to unseen scanners when its MAE there is below this share of
#: the MAE of predicting the training subjects' mean age
TRANSFER = 0.8


def combat(features, sites, keep: pd.DataFrame | None = None) -> np.ndarray:
    """ComBat-harmonized ``features`` (N, F): each site's location and scale removed.

    Parameters
    ----------
    features : array-like (N, F)
    sites : array-like (N,)
        The batch (scanner) of each row.
    keep : DataFrame, optional
        Numeric covariates (N rows) whose effects ComBat must preserve, e.g. the ages.

    Features constant over all rows are left as they are, and features constant within
    every site (all their spread is the site's) become constant: ComBat divides by the
    spread within sites. Empirical Bayes, parametric, as in ``neuroCombat`` 0.2.12.
    """
    try:
        from neuroCombat import neuroCombat
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("combat needs the neuroCombat package: pip install neuroCombat") from exc
    X = np.asarray(features, dtype=np.float64)
    sites = np.asarray(sites).astype(str)
    if X.ndim != 2 or len(X) != len(sites):
        raise ValueError(f"features must be (N, F) with one site per row, got {X.shape}")
    covars = pd.DataFrame({"site": sites})
    continuous = []
    if keep is not None:
        for column in keep.columns:
            covars[column] = np.asarray(keep[column], dtype=np.float64)
            continuous.append(column)
    tiny = 1e-8 * (1 + np.abs(X).max())
    within = X - pd.DataFrame(X).groupby(sites).transform("mean").to_numpy()
    varying = within.std(axis=0) > tiny
    out = X.copy()
    site_only = ~varying & (X.std(axis=0) > tiny)
    out[:, site_only] = X[:, site_only].mean(axis=0)  # nothing left once the site is removed
    if varying.any():
        result = _quiet(
            neuroCombat, X[:, varying].T, covars, "site", continuous_cols=continuous or None
        )
        out[:, varying] = result["data"].T
    return out


def _quiet(function, *args, **kwargs):
    """Call ``function`` with its progress prints silenced."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def confound_table(
    embeddings: Mapping[str, np.ndarray],
    participants: pd.DataFrame,
    seed: int = 0,
    harmonize: bool = True,
) -> pd.DataFrame:
    """The linear age probe of every embedding, under both :data:`PROTOCOLS`.

    With ``harmonize``, each embedding is also probed after ComBat over the sites
    (``"<name> + ComBat"``: site only, no label used) and after ComBat told the ages
    (``"<name> + ComBat(age)"``: it keeps age effects by using every subject's age, the
    test subjects' included, which a real unseen scanner would not give).

    Returns
    -------
    pandas.DataFrame
        ``embedding``, ``protocol``, ``metric`` (``r2``, ``mae``), ``value``, ``chance``.
    """
    features = dict(embeddings)
    if harmonize:
        sites = participants["site"].to_numpy()
        for name, X in embeddings.items():
            features[f"{name} + ComBat"] = combat(X, sites)
            features[f"{name} + ComBat(age)"] = combat(X, sites, keep=participants[["age"]])
    rows = []
    for protocol, groups in PROTOCOLS.items():
        table = probe_table(
            features, participants, columns={"age": "regression"}, seeds=(seed,), groups=groups
        ).query("probe == 'linear'")
        for row in table.itertuples():
            rows.append(
                dict(
                    embedding=row.embedding,
                    protocol=protocol,
                    metric=row.metric,
                    value=row.mean,
                    chance=row.chance,
                )
            )
    return pd.DataFrame(rows)


def read_confounds(table: pd.DataFrame) -> list[str]:
    """One sentence per embedding of a :func:`confound_table`, computed from its numbers.

    An embedding's age read-out *transfers* when its MAE on unseen sites is below
    :data:`TRANSFER` times the chance MAE there (predicting the training mean).
    """
    sentences = []
    for name, rows in table.groupby("embedding", sort=False):
        value = rows.set_index(["protocol", "metric"])
        r2 = value.loc[("shuffled folds", "r2"), "value"]
        mae = value.loc[("leave one site out", "mae")]
        transfers = mae["value"] < TRANSFER * mae["chance"]
        verdict = "transfers" if transfers else "does not transfer"
        sentences.append(
            f"{name}: age R^2 {r2:.2f} with shuffled folds; on an unseen scanner its MAE is "
            f"{mae['value']:.1f} years against {mae['chance']:.1f} for guessing the training "
            f"mean: the age read-out {verdict}."
        )
    return sentences


def read_invariance(
    table: pd.DataFrame, base: str = "cpu recipe", augmented: str = "scanner-like views"
) -> list[str]:
    """Learned invariance against ComBat, in sentences computed from multi-seed rows.

    ``table`` holds ``benchmarks/bench_invariance.py``'s rows (``embedding``, ``protocol``,
    ``metric``, ``value``, ``chance``, ``confound``, ``seed``): per confound, whether the
    ``augmented`` encoder carries less site than ``base`` (linear site probe, ``site_bacc``)
    and whether it or ``base + ComBat`` reads age better than ``base`` on unseen scanners,
    counted seed by seed. ``ComBat(age)`` is left out: it is told the test subjects' ages.
    """

    def per_seed(part, name, metric, protocol):
        rows = part[
            (part["embedding"] == name)
            & (part["metric"] == metric)
            & (part["protocol"] == protocol)
        ]
        if rows.empty:
            raise ValueError(f"no {metric!r} rows for {name!r} ({protocol}) in the table")
        return rows.set_index("seed")["value"]

    sentences = []
    for confound, part in table.groupby("confound"):
        n = part["seed"].nunique()
        site = {k: per_seed(part, k, "site_bacc", "shuffled folds") for k in (base, augmented)}
        fewer = int((site[augmented] < site[base]).sum())
        sentences.append(
            f"site_age_confound {confound:g}, {n} seeds: a linear probe tells the scanner from "
            f"the {augmented} encoder with balanced accuracy {site[augmented].mean():.2f} "
            f"against {site[base].mean():.2f} from the {base} one (lower in {fewer} of {n} "
            f"seeds; chance {part.loc[part['metric'] == 'site_bacc', 'chance'].mean():.2f})."
        )
        unseen = {
            k: per_seed(part, k, "mae", "leave one site out")
            for k in (base, augmented, f"{base} + ComBat")
        }
        chance = part[(part["metric"] == "mae") & (part["protocol"] == "leave one site out")]
        chance = chance["chance"].mean()
        parts = []
        for name in (augmented, f"{base} + ComBat"):
            better = int((unseen[name] < unseen[base]).sum())
            parts.append(f"{name} {unseen[name].mean():.1f} (better in {better} of {n} seeds)")
        best = min(unseen, key=lambda k: unseen[k].mean())
        transfers = unseen[best].mean() < TRANSFER * chance
        sentences.append(
            f"Age MAE on an unseen scanner: {base} {unseen[base].mean():.1f} years, "
            + ", ".join(parts)
            + f"; chance {chance:.1f}. Lowest: {best}, which "
            + ("transfers" if transfers else "does not transfer")
            + f" (below {TRANSFER} x chance)."
        )
    return sentences
