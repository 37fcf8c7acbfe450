"""Which CPU recipe shows VICReg learning? A sweep of training recipes on cohort v2 (issue 15).

Every configuration trains :class:`vicreg_lab.VICReg` on 256 subjects of
``SyntheticCohort(seed=0)`` and is probed on 256 HELD-OUT subjects of the same scanners
(``cohort.held_out(256)``): linear age R^2 (ridge, 5 folds x 1 split seed; the split is
the same for every row) and the mean R^2 over the anatomical latents, beside the
baselines of :func:`vicreg_lab.baselines.embeddings_with_baselines` (random init of the
same architecture, both BatchNorm modes; raw voxels 16^3; intensity histogram). One row
per configuration: mean and range over the training seeds, the final variance term, and
the training time on this machine.

Usage (the command behind docs/learning.md)::

    .venv/bin/python benchmarks/bench_learning.py --seeds 0 1 2
    .venv/bin/python benchmarks/bench_learning.py --only base --seeds 0   # one config, quick
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from vicreg_lab import VICReg
from vicreg_lab.baselines import (
    HISTOGRAM,
    RANDOM_EVAL,
    RANDOM_RECAL,
    RAW,
    TRAINED,
    embeddings_with_baselines,
    latent_table,
)
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.probes import probe

BASE = {
    "shape": 32,
    "steps": 800,
    "batch_size": 32,
    "expander": "512-512",
    "optimizer": "adamw",
    "lr": None,
    "widths": (16, 32, 64, 128),
    "crop": 0.85,
    "p_intensity": 0.8,
    "gamma": 0.15,
    "n_train": 256,
}
# name -> changes to BASE: one knob at a time (two where the cost must stay in budget)
CONFIGS = {
    "base": {},
    "400 steps": {"steps": 400},
    "48^3, 400 steps": {"shape": 48, "steps": 400},
    "24^3": {"shape": 24},
    "wide encoder": {"widths": (24, 48, 96, 192)},
    "expander 128-128": {"expander": "128-128"},
    "expander 256-256-256": {"expander": "256-256-256"},
    "batch 64, 400 steps": {"batch_size": 64, "steps": 400},
    "LARS": {"optimizer": "lars"},
    "lr 3e-4": {"lr": 3e-4},
    "crop 0.5": {"crop": 0.5},
    "no intensity augmentation": {"p_intensity": 0.0},
    "strong gamma": {"gamma": 0.4, "p_intensity": 1.0},
    # stage 2, after the first 13 rows showed resolution to be the strongest knob
    "48^3": {"shape": 48},
    "48^3, 400 steps, no intensity augmentation": {"shape": 48, "steps": 400, "p_intensity": 0.0},
    # stage 3: more training subjects (256 subjects x 100 epochs can be told apart by their
    # own lesions and folds, which say nothing about a new person's age)
    "1024 subjects, no intensity augmentation": {"n_train": 1024, "p_intensity": 0.0},
    "2048 subjects, no intensity augmentation": {"n_train": 2048, "p_intensity": 0.0},
    "1024 subjects, no intensity augmentation, lr 2e-3": {
        "n_train": 1024,
        "p_intensity": 0.0,
        "lr": 2e-3,
    },
    "48^3, 1024 subjects, 400 steps, no intensity augmentation": {
        "shape": 48,
        "n_train": 1024,
        "steps": 400,
        "p_intensity": 0.0,
    },
    "40^3, 1024 subjects, 550 steps, no intensity augmentation": {
        "shape": 40,
        "n_train": 1024,
        "steps": 550,
        "p_intensity": 0.0,
    },
}
N_TEST = 256


def _age_r2(z: np.ndarray, age: np.ndarray) -> float:
    rows = probe(z, age, cv=5, seed=0)
    return next(r["mean"] for r in rows if r["probe"] == "linear" and r["metric"] == "r2")


@functools.cache
def _cohorts(shape: int, n_train: int):
    """Training and held-out subjects at one shape, generated once per process."""
    train = SyntheticCohort(n_train, shape=(shape,) * 3, seed=0)
    test = train.held_out(N_TEST)
    for cohort in (train, test):  # fill the caches before any timing
        cohort.generate(range(len(cohort)))
    return train, test


def run(config: dict, seed: int) -> dict:
    train, test = _cohorts(config["shape"], config["n_train"])
    epochs = max(1, round(config["steps"] * config["batch_size"] / config["n_train"]))
    start = time.perf_counter()
    model = VICReg(
        expander=config["expander"],
        optimizer=config["optimizer"],
        lr=config["lr"],
        batch_size=config["batch_size"],
        max_epochs=epochs,
        augment_params={
            "crop_scale": (config["crop"], 1.0),
            "p_intensity": config["p_intensity"],
            "gamma": config["gamma"],
        },
        encoder_kwargs={"widths": config["widths"]},
        seed=seed,
        progress=False,
    ).fit(train)
    seconds = time.perf_counter() - start
    embeddings = embeddings_with_baselines(model, test, seed=seed)
    age = test.participants.age.to_numpy()
    r2 = {name: _age_r2(z, age) for name, z in embeddings.items()}
    latents = latent_table(embeddings, test.latents, test.anatomical_latents(), cv=5)
    return {
        "r2": r2,
        "latent_mean": latents.loc["mean"].to_dict(),
        "variance": model.history_["epoch"][-1]["variance"],
        "first_variance": model.history_["epoch"][0]["variance"],
        "seconds": seconds,
        "steps": len(model.history_["step"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to run")
    parser.add_argument(
        "--steps", type=int, help="override every configuration's steps (smoke test)"
    )
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), seeds {args.seeds}\n")
    print(
        "| config | steps | VICReg age R^2 mean (min-max) | best baseline age R^2 (which) "
        "| margin (worst seed) | latent mean R^2: VICReg / best baseline "
        "| variance term first -> last | train s |"
    )
    print("|---|---:|---|---|---:|---|---|---:|")
    for name in args.only or CONFIGS:
        config = {**BASE, **CONFIGS[name]}
        if args.steps:
            config["steps"] = args.steps
        runs = [run(config, seed) for seed in args.seeds]
        ours = np.array([r["r2"][TRAINED] for r in runs])
        baselines = (RANDOM_EVAL, RANDOM_RECAL, RAW, HISTOGRAM)
        best = [max((r["r2"][b], b) for b in baselines) for r in runs]
        margin = min(o - b for o, (b, _) in zip(ours, best, strict=True))
        top = max(best)
        lat_ours = np.mean([r["latent_mean"][TRAINED] for r in runs])
        lat_base = np.mean([max(r["latent_mean"][b] for b in baselines) for r in runs])
        var0 = np.mean([r["first_variance"] for r in runs])
        var1 = np.mean([r["variance"] for r in runs])
        print(
            f"| {name} | {runs[0]['steps']} "
            f"| {ours.mean():.2f} ({ours.min():.2f}-{ours.max():.2f}) "
            f"| {top[0]:.2f} ({top[1]}) | {margin:+.2f} | {lat_ours:.2f} / {lat_base:.2f} "
            f"| {var0:.2f} -> {var1:.2f} | {np.mean([r['seconds'] for r in runs]):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
