"""The loss-weight ablation: real training runs on a tiny synthetic cohort, the disk cache,
the side-by-side figure and the AblationPanel driven headless."""

import math
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from vicreg_lab.data import SyntheticCohort
from vicreg_lab.diagnostics import collapse_report
from vicreg_lab.lab.ablation import (
    DEFAULT_CONFIGS,
    PAPER_TABLE7,
    AblationResult,
    ablation_settings,
    config_name,
    evaluate_model,
    paper_findings,
    run_ablation,
    run_verdict,
    training_settings,
)
from vicreg_lab.lab.plots import plot_ablation
from vicreg_lab.lab.widgets import AblationPanel
from vicreg_lab.profiles import get_profile
from vicreg_lab.train import VICReg

CONFIGS = {"no variance": (25.0, 0.0, 1.0), "standard": (25.0, 25.0, 1.0)}


@pytest.fixture(scope="module")
def cohort():
    return SyntheticCohort(n_subjects=16, shape=(16, 16, 16), seed=0)


@pytest.fixture(scope="module")
def settings():
    # 2 steps per epoch x 12 epochs at 16^3, a higher learning rate: seconds per run
    tiny = dict(n_subjects=16, n_eval=16, shape=(16, 16, 16), batch_size=8, expander="32-32")
    return ablation_settings("ci").override(**tiny, max_epochs=12, lr=5e-3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ablation-cache")


@pytest.fixture(scope="module")
def sweep(cohort, settings, cache):
    return run_ablation(CONFIGS, cohort, settings=settings, cache=cache)


def test_settings_follow_the_profile():
    ci, cpu = ablation_settings("ci"), ablation_settings(get_profile("cpu"))
    assert ci.shape == get_profile("ci").shape and ci.batch_size == get_profile("ci").batch_size
    assert ci.steps == ci.n_subjects // ci.batch_size * ci.max_epochs
    assert ci.steps < cpu.steps
    assert ablation_settings("gpu").device == "cuda"
    assert ci.override(max_epochs=1).steps == ci.n_subjects // ci.batch_size
    with pytest.raises(ValueError, match="unknown profile"):
        ablation_settings("laptop")
    with pytest.raises(TypeError, match="profile must be"):
        ablation_settings(3)


def test_training_settings_train_as_the_profile_does(monkeypatch):
    from vicreg_lab.lab import ablation

    cpu = get_profile("cpu")
    long = ablation.training_settings("cpu")
    assert (long.n_subjects, long.shape, long.batch_size) == (
        cpu.n_subjects,
        tuple(cpu.shape),
        cpu.batch_size,
    )
    assert long.steps == cpu.n_subjects // cpu.batch_size * cpu.max_epochs
    assert dict(long.augment) == dict(cpu.augment) and long.n_eval == 256
    assert long.steps > ablation_settings("cpu").steps
    # the views reach the estimator each run trains
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(self, data, **kwargs):
        seen["augment_params"] = self.augment_params
        raise Stop

    from vicreg_lab.train import VICReg

    monkeypatch.setattr(VICReg, "fit", fake_fit)
    tiny = ablation_settings("ci").override(
        n_subjects=8,
        n_eval=8,
        shape=(16, 16, 16),
        batch_size=4,
        max_epochs=1,
        augment=(("p_intensity", 0.0),),
    )
    cohort = SyntheticCohort(8, shape=(16, 16, 16), seed=0)
    with pytest.raises(Stop):
        run_ablation({"standard": (25, 25, 1)}, cohort, settings=tiny, cache=False)
    assert seen["augment_params"] == {"p_intensity": 0.0}


def test_paper_table_and_default_sweep_agree():
    paper = PAPER_TABLE7.set_index("name")
    for name, (inv, var, cov) in DEFAULT_CONFIGS.items():
        assert tuple(paper.loc[name, ["inv", "var", "cov"]]) == (inv, var, cov)
    collapsed = PAPER_TABLE7[PAPER_TABLE7["paper_outcome"] == "collapse"]
    assert collapsed["paper_top1"].isna().all()
    assert PAPER_TABLE7["paper_top1"].max() == 68.6
    # all eleven rows of the ICLR Table 7, each weight triple once
    assert len(PAPER_TABLE7) == 11
    assert not PAPER_TABLE7.duplicated(["inv", "var", "cov"]).any()
    weights = PAPER_TABLE7.set_index(["inv", "var", "cov"])["paper_outcome"]
    assert weights[(1.0, 1.0, 1.0)] == "collapse" and weights[(50.0, 50.0, 1.0)] == "68.3"


def test_sweep_table_and_measurements(sweep, settings):
    table = sweep.table
    assert list(table["name"]) == list(CONFIGS)
    assert (table["steps"] == settings.steps).all()
    assert not table["cached"].any()  # a fresh cache folder: both runs were trained
    run = sweep["standard"]
    assert run.representation.shape == (16, 128)  # small_cnn's representation
    assert run.expander.shape == (16, 32)
    assert run.rep_report.n_samples == 16 and run.exp_report.n_dims == 32
    assert np.isfinite(table[["exp_std", "rep_rankme", "age_r2", "age_mae"]].to_numpy()).all()
    assert (table["rep_rankme"] <= table["rep_rankme_max"] + 1e-9).all()
    assert set(sweep.probes["embedding"]) == set(CONFIGS)
    assert len(run.steps) == settings.steps and len(run.epochs) == settings.max_epochs
    assert [r["step"] for r in run.dynamics] == [2 * (e + 1) for e in range(settings.max_epochs)]
    assert run.info["batchnorm"] == "recalibrate"
    assert set(sweep.histories()) == set(CONFIGS)


def test_variance_off_lowers_the_expander_std(sweep):
    table = sweep.table.set_index("name")
    assert table.loc["no variance", "exp_std"] < 0.6 * table.loc["standard", "exp_std"]
    # during training: without the variance term the std falls, with it the std holds
    falling = [r["exp_std"] for r in sweep["no variance"].dynamics]
    holding = [r["exp_std"] for r in sweep["standard"].dynamics]
    assert falling[-1] < 0.6 * falling[0] and holding[-1] > 0.8 * holding[0]
    # the verdict is the measured rule, not a label attached to the configuration
    for name in CONFIGS:
        run = sweep[name]
        assert table.loc[name, "verdict"] == run_verdict(run.rep_report, run.exp_report)
        if table.loc[name, "exp_std"] < 0.1:
            assert table.loc[name, "verdict"] == "complete collapse"
        assert (run.rep_report.scale, run.exp_report.scale) == ("free", "target_std=1")


def test_run_verdict_reads_the_expander_against_its_target():
    rng = np.random.default_rng(0)
    rep = collapse_report(rng.normal(size=(64, 16)))
    shrunk = 0.013 * rng.normal(size=(64, 16))  # an invariance-only expander
    assert run_verdict(rep, collapse_report(shrunk, target_std=1.0)) == "complete collapse"
    assert run_verdict(rep, collapse_report(100 * shrunk, target_std=1.0)) == "healthy"
    with pytest.raises(ValueError, match="target_std=1.0"):
        run_verdict(rep, collapse_report(shrunk))  # scale-free, it would read healthy


def test_second_call_loads_the_cache_without_training(sweep, cohort, settings, cache):
    files = sorted(cache.glob("*.npz"))
    assert len(files) == len(CONFIGS)
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = run_ablation(CONFIGS, cohort, settings=settings, cache=cache)
    assert again.table["cached"].all()
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.npz"))] == mtimes  # not rewritten
    for name in CONFIGS:
        np.testing.assert_array_equal(again[name].representation, sweep[name].representation)
        np.testing.assert_array_equal(again[name].expander, sweep[name].expander)
        assert again[name].rep_report == sweep[name].rep_report
        assert again[name].steps == sweep[name].steps
    columns = [c for c in sweep.table.columns if c not in ("cached", "train_seconds")]
    pd.testing.assert_frame_equal(again.table[columns], sweep.table[columns])
    assert again[name].info["cache_path"] in map(str, files)


def test_cache_key_depends_on_data_and_settings(sweep, cohort, settings, tmp_path):
    config = {"standard": CONFIGS["standard"]}
    other = SyntheticCohort(n_subjects=16, shape=(16, 16, 16), seed=1)
    shorter = settings.override(max_epochs=1)
    runs = [
        run_ablation(config, other, settings=shorter, cache=tmp_path)["standard"],
        run_ablation(config, cohort, settings=shorter, cache=tmp_path)["standard"],
        run_ablation(config, cohort, settings=shorter, seed=1, cache=tmp_path)["standard"],
    ]
    assert not any(run.cached for run in runs) and runs[1].n_steps == 2
    names = {Path(run.info["cache_path"]).name for run in [sweep["standard"], *runs]}
    assert len(names) == 4


def test_corrupt_cache_file_is_retrained_and_replaced(cohort, settings, tmp_path):
    small = settings.override(max_epochs=1)
    first = run_ablation({"s": (25, 25, 1)}, cohort, settings=small, cache=tmp_path)["s"]
    path = Path(first.info["cache_path"])
    path.write_bytes(b"not an npz file")
    again = run_ablation({"s": (25, 25, 1)}, cohort, settings=small, cache=tmp_path)["s"]
    assert not again.cached
    np.testing.assert_array_equal(again.representation, first.representation)  # same seed
    assert run_ablation({"s": (25, 25, 1)}, cohort, settings=small, cache=tmp_path)["s"].cached


def test_no_cache_writes_nothing(cohort, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("VICREG_LAB_CACHE", str(tmp_path))
    run_ablation({"s": (1, 1, 0)}, cohort, settings=settings.override(max_epochs=1), cache=False)
    assert not list(tmp_path.rglob("*.npz"))


def test_bad_configs_are_rejected(cohort, settings):
    for bad in ({"x": (1, 2)}, {"x": (1, -1, 0)}, {"x": (1, math.nan, 0)}, {"x": "abc"}, {}):
        with pytest.raises(ValueError, match="config|empty"):
            run_ablation(bad, cohort, settings=settings, cache=False)
    with pytest.raises(ValueError, match="training dataset"):
        run_ablation(CONFIGS, None, settings=settings)
    with pytest.raises(TypeError, match="cache must be"):
        run_ablation(CONFIGS, cohort, settings=settings, cache=3)
    assert config_name(25, 0, 1) == "inv 25 / var 0 / cov 1"


def test_evaluate_model_measures_any_fitted_model(cohort, sweep):
    model = VICReg(expander="32-32", batch_size=8, max_epochs=2, progress=False).fit(cohort)
    stored = model.transform(cohort)
    as_is = evaluate_model(model, cohort, "checkpoint-like", batchnorm="eval")
    np.testing.assert_allclose(as_is.representation, stored)
    assert as_is.kind == "checkpoint" and as_is.n_steps == 4
    assert [r["step"] for r in as_is.dynamics] == [2, 4]  # from the model's own history
    assert as_is.exp_report == collapse_report(as_is.expander, target_std=1.0)
    assert as_is.rep_report == collapse_report(as_is.representation)  # scale-free
    run = evaluate_model(model, cohort, "checkpoint-like")  # BatchNorm re-estimated on a copy
    assert not np.allclose(run.representation, stored)
    np.testing.assert_array_equal(model.transform(cohort), stored)  # the model is untouched
    combined = sweep.with_run(run)
    assert list(combined.table["name"]) == [*CONFIGS, "checkpoint-like"]
    assert len(sweep) == len(CONFIGS)  # with_run returns a new result
    with pytest.raises(ValueError, match="not fitted"):
        evaluate_model(VICReg(), cohort, "unfitted")
    with pytest.raises(ValueError, match="rows"):
        evaluate_model(model, cohort, "bad", targets={"age": [1.0, 2.0]})
    with pytest.raises(ValueError, match="batchnorm"):
        evaluate_model(model, cohort, "bad", batchnorm="train")


def test_plot_ablation_draws_every_run(sweep):
    fig = plot_ablation(sweep, title="tiny")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    expander_bars = fig.axes[0].patches
    assert len(expander_bars) == len(CONFIGS)
    heights = [bar.get_height() for bar in expander_bars]
    np.testing.assert_allclose(heights, sweep.table["exp_std"])
    assert len(fig.axes[5].lines) == len(CONFIGS)  # one spectrum per run
    with pytest.raises(ValueError, match="at least one run"):
        plot_ablation(AblationResult({}))


def test_panel_trains_loads_and_shows_headless(cohort, settings, cache, sweep):
    panel = AblationPanel(cohort, sweep=sweep, settings=settings, cache=cache)
    assert isinstance(panel.widget, widgets.VBox) and panel.n_runs == 0
    assert all(isinstance(s, widgets.FloatLogSlider) for s in panel.sliders.values())
    assert panel.weights == (25.0, 25.0, 1.0)

    panel.set_weights(var=0)  # untick the variance term: the sweep's "no variance" run
    assert panel.weights == (25.0, 0.0, 1.0)
    panel.button.click()
    assert panel.n_runs == 1 and panel.run.cached and panel.run.name == "no variance"
    assert panel.image.value[:4] == b"\x89PNG"
    assert panel.run.verdict in panel.readout.value

    panel.presets.value = "standard"  # choosing a precomputed run shows it at once
    assert panel.n_runs == 2 and panel.run.cached and panel.weights == (25.0, 25.0, 1.0)


def test_panel_trains_a_new_configuration_once(cohort, settings, sweep, tmp_path):
    short = settings.override(max_epochs=1)
    panel = AblationPanel(cohort, sweep=sweep, settings=short, cache=tmp_path)
    panel.set_weights(inv=1, var=1, cov=0)  # not in the cache: trained now, then cached
    panel.button.click()
    assert panel.n_runs == 1 and not panel.run.cached
    assert panel.run.name == config_name(1, 1, 0) and panel.run.n_steps == short.steps
    assert len(panel.figure.axes[0].patches) == len(CONFIGS) + 1  # beside the sweep's runs
    assert "trained in" in panel.readout.value
    panel.button.click()
    assert panel.n_runs == 2 and panel.run.cached and "cache" in panel.readout.value


def test_panel_rejects_bad_weights_and_reports_failures(cohort, settings, tmp_path):
    panel = AblationPanel(cohort, settings=settings, cache=tmp_path)
    with pytest.raises(ValueError, match="variance weight"):
        panel.set_weights(var=500)
    with pytest.raises(ValueError, match="config"):
        AblationPanel(cohort, settings=settings, weights=(1, 1))
    with pytest.raises(ValueError, match="invariance weight"):
        AblationPanel(cohort, settings=settings, weights=(500, 1, 1))
    panel.dataset = SyntheticCohort(n_subjects=4, shape=(16, 16, 16))  # fewer than a batch
    panel.button.click()
    assert "training failed" in panel.readout.value and panel.n_runs == 0


def _fake_sweep(rows):
    from types import SimpleNamespace

    columns = ["name", "inv", "var", "cov", "verdict", "age_r2"]
    table = pd.DataFrame(rows, columns=columns).assign(kind="short run")
    return SimpleNamespace(table=table)


def test_paper_findings_are_decided_from_the_numbers(sweep):
    paper_like = _fake_sweep(
        [
            ("invariance only", 1.0, 0.0, 0.0, "complete collapse", 0.01),
            ("no variance", 25.0, 0.0, 1.0, "complete collapse", 0.02),
            ("no covariance", 1.0, 1.0, 0.0, "healthy", 0.20),
            ("standard", 25.0, 25.0, 1.0, "healthy", 0.40),
        ]
    )
    found = paper_findings(paper_like)
    assert len(found) == 3 and found["reproduced"].all()
    # the measured inversion: the standard run has the LOWEST probe
    inverted = paper_like.table.assign(age_r2=[0.22, 0.15, 0.17, 0.13])
    found = paper_findings(_fake_sweep(inverted.drop(columns="kind").values.tolist()))
    assert found["reproduced"].tolist() == [True, False, False]
    assert "invariance only (0.22)" in found.loc[1, "measured"]
    # a no-variance run that kept its spread: the collapse finding is not reproduced
    kept = paper_like.table.drop(columns="kind").values.tolist()
    kept[1][4] = "healthy"
    assert not paper_findings(_fake_sweep(kept)).loc[0, "reproduced"]
    # on real runs: only the findings whose runs are there (no 1 / 1 / 0 in this sweep)
    real = paper_findings(sweep)
    assert len(real) == 2 and real["reproduced"].dtype == bool
    table = sweep.table.set_index("name")
    expected = table.loc["no variance", "verdict"] == "complete collapse" and (
        table.loc["standard", "verdict"] != "complete collapse"
    )
    assert real.loc[0, "reproduced"] == expected


def test_cached_sweep_aggregates_seeds_and_rejects_other_files(tmp_path):
    from vicreg_lab.lab.ablation import cached_sweep

    path = tmp_path / "ablation-x.csv"
    rows = [
        "name,inv,var,cov,seed,steps,exp_std,rep_rankme,verdict,age_r2,train_seconds",
        "no variance,25,0,1,0,60,0.01,3,complete collapse,0.10,5",
        "no variance,25,0,1,1,60,0.02,3,complete collapse,0.20,5",
        "standard,25,25,1,0,60,0.50,20,healthy,0.30,5",
        "standard,25,25,1,1,60,0.40,20,dimensional collapse,0.40,5",
        "standard,25,25,1,2,60,0.45,20,healthy,0.50,5",
    ]
    path.write_text("# bench_ablation.py --profile x --seeds 0 1 2\n" + "\n".join(rows) + "\n")
    sweep = cached_sweep("x", path=path)
    assert sweep.command.startswith("bench_ablation.py --profile x")
    table = sweep.table.set_index("name")
    assert table.loc["standard", "seeds"] == 3 and table.loc["no variance", "collapsed"] == 2
    assert table.loc["standard", "verdict"] == "healthy"  # the majority of the seeds
    assert math.isclose(table.loc["standard", "age_r2"], 0.4)
    found = paper_findings(sweep)
    assert found["reproduced"].tolist() == [True, True]
    with pytest.raises(FileNotFoundError, match="bench_ablation.py --profile nowhere"):
        cached_sweep("nowhere")
    path.write_text("# header\na,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        cached_sweep("x", path=path)


def test_the_shipped_cpu_sweep_is_the_cpu_training_recipe_with_three_seeds():
    # The CSV notebook 04 and docs/pretrained.md read: it must still be what the code
    # would run today (training_settings("cpu")), every configuration with seeds 0, 1, 2.
    from vicreg_lab.lab.ablation import cached_sweep

    sweep = cached_sweep("cpu")
    assert "--recipe training" in sweep.command
    runs = sweep.runs
    weights = {(r.inv, r.var, r.cov) for r in runs.itertuples()}
    assert weights == {(1, 0, 0), (25, 0, 1), (0, 25, 1), (1, 1, 0), (25, 25, 1)}
    assert all(sorted(seeds) == [0, 1, 2] for _, seeds in runs.groupby("name")["seed"])
    assert (runs["steps"] == training_settings("cpu").steps).all()
    assert runs["age_r2"].notna().all() and runs["exp_std"].gt(0).all()
    assert len(paper_findings(sweep)) == 4  # every finding has the runs it needs
