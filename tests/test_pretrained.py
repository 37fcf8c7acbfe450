"""The shipped long-run encoder: loaded by name, checksum checked, weights_only, exportable."""

import json
import shutil

import numpy as np
import pytest
import torch

import vicreg_lab
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.pretrained import (
    available_pretrained,
    export_pretrained,
    load_pretrained,
    pretrained_info,
    sha256_of,
)
from vicreg_lab.train import VICReg


def test_shipped_encoder_loads_by_name_and_embeds():
    assert "synthetic-small" in available_pretrained()
    model = vicreg_lab.load_pretrained("synthetic-small")
    info = model.pretrained_info_
    for key in ("command", "seed", "steps", "epochs", "wall_time_s", "hardware", "versions"):
        assert key in info, key
    assert info["steps"] >= 1 and len(info["shape"]) == 3
    assert "vicreg-lab train" in info["command"]
    held_out = SyntheticCohort(4, shape=tuple(info["shape"]), seed=7)
    x = torch.stack([held_out[i]["image"] for i in range(4)])
    z = model.transform(x)
    assert z.shape == (4, model.encoder_.representation_size)
    assert np.isfinite(z).all() and z.std(axis=0).max() > 0


@pytest.fixture
def weights_copy(tmp_path):
    info = pretrained_info("synthetic-small")
    for name in (info["file"], "synthetic-small.json"):
        shutil.copy(vicreg_lab.pretrained.WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path, info


def test_corrupt_file_is_refused_by_checksum(weights_copy):
    folder, info = weights_copy
    path = folder / info["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_pretrained("synthetic-small", weights_dir=folder)


def test_pickled_object_is_refused_even_with_matching_checksum(weights_copy):
    folder, info = weights_copy
    path = folder / info["file"]
    torch.save({"format": "vicreg-lab-checkpoint-v1", "payload": _Evil()}, path)
    card = dict(info, sha256=sha256_of(path))
    (folder / "synthetic-small.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_pretrained("synthetic-small", weights_dir=folder)


class _Evil:
    def __reduce__(self):
        return (print, ("this should never run",))


def test_unknown_name_and_missing_file(weights_copy):
    folder, info = weights_copy
    with pytest.raises(KeyError, match="available: \\['synthetic-small'\\]"):
        load_pretrained("imagenet-huge", weights_dir=folder)
    (folder / info["file"]).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_pretrained("synthetic-small", weights_dir=folder)


def test_export_roundtrip_strips_optimizer_and_keeps_embeddings(tmp_path):
    cohort = SyntheticCohort(8, shape=(16, 16, 16), seed=3)
    model = VICReg(expander="32-32", batch_size=4, max_epochs=1, progress=False, seed=1)
    model.fit(cohort)
    saved = model.save(tmp_path / "model.ckpt")
    card_path = export_pretrained(saved, "tiny", {"command": "test", "seed": 1}, tmp_path / "w")
    card = json.loads(card_path.read_text())
    assert card["steps"] == 2 and card["epochs"] == 1 and card["shape"] == [16, 16, 16]
    assert card["sha256"] == sha256_of(tmp_path / "w" / "tiny.pt")
    assert card["versions"]["torch"] and card["versions"]["python"]
    assert "optimizer" not in torch.load(tmp_path / "w" / "tiny.pt", weights_only=True)
    loaded = load_pretrained("tiny", weights_dir=tmp_path / "w")
    x = torch.stack([cohort[i]["image"] for i in range(4)])
    np.testing.assert_allclose(loaded.transform(x), model.transform(x), rtol=1e-5, atol=1e-6)


def test_cached_results_reads_the_command_and_refuses_bad_tables(tmp_path):
    from vicreg_lab.pretrained import cached_results

    path = tmp_path / "t.csv"
    path.write_text("# benchmarks/x.py --seeds 0 1 | 12 s\narm,seed,m\na,0,0.5\na,1,0.7\n")
    runs, command = cached_results("t", ["arm", "m"], path=path)
    assert command == "benchmarks/x.py --seeds 0 1 | 12 s" and runs.m.tolist() == [0.5, 0.7]
    with pytest.raises(ValueError, match=r"missing columns \['site'\]"):
        cached_results("t", ["arm", "site"], path=path)
    path.write_text("# header only\narm,seed\n")
    with pytest.raises(ValueError, match="no rows"):
        cached_results("t", path=path)
    with pytest.raises(FileNotFoundError, match="no cached results at .*nowhere.csv"):
        cached_results("nowhere")


def _steps(n_subjects, epochs, batch_size):
    return n_subjects // batch_size * epochs


def test_the_shipped_live_comparisons_are_the_notebooks_recipes_with_three_seeds():
    # The tables notebooks 05 and 06 show beside the student's one-seed run: they must
    # still be what bench_live_runs.py computes for the cpu profile's sizes.
    from vicreg_lab.pretrained import cached_results
    from vicreg_lab.profiles import get_profile

    cpu = get_profile("cpu")
    runs, command = cached_results("augment-cpu", ["recipe", "arm", "seed", "age_r2"])
    assert command.startswith("benchmarks/bench_live_runs.py augment --seeds 0 1 2")
    trained = runs[runs.recipe != "baseline"]
    assert trained.groupby(["recipe", "arm"]).seed.nunique().eq(3).all()
    assert len(trained.groupby(["recipe", "arm"])) == 6
    live_epochs = round(cpu.max_epochs * cpu.n_subjects / 512 / 4)
    steps = trained.groupby("recipe").steps.unique().to_dict()
    assert list(steps["notebook 05 live run"]) == [_steps(512, live_epochs, cpu.batch_size)]
    assert list(steps["cpu profile recipe"]) == [
        _steps(cpu.n_subjects, cpu.max_epochs, cpu.batch_size)
    ]
    dense, command = cached_results("vicregl-cpu", ["arm", "seed", "r2_within_cell"])
    assert command.startswith("benchmarks/bench_live_runs.py vicregl --seeds 0 1 2")
    assert dense.groupby("arm").seed.nunique().to_dict() == {
        "VICReg": 3,
        "VICRegL": 3,
        "random init": 3,
    }
    n = min(cpu.n_subjects, 256)
    assert set(dense[dense.arm != "random init"].steps) == {
        _steps(n, cpu.max_epochs, cpu.batch_size)
    }


def test_notebook_05s_reading_of_the_shipped_augmentation_table_holds():
    # Notebook 05 states these findings of the shipped table in prose: they must stay true.
    from vicreg_lab.lab import compare_seeds
    from vicreg_lab.pretrained import cached_results

    runs, _ = cached_results("augment-cpu")
    cpu = runs[runs.recipe == "cpu profile recipe"]
    none, scanner = "no intensity augmentation", "scanner-like intensity augmentation"
    for metric in ("site_balanced_accuracy", "age_r2"):
        assert f"{none} is higher at every seed" in compare_seeds(cpu, metric, scanner, none)
    default = cpu[cpu.arm == "default intensity augmentation"].site_balanced_accuracy
    assert default.min() > 0.98 and cpu[cpu.arm == none].site_balanced_accuracy.min() > 0.98
    baseline = runs[runs.recipe == "baseline"].set_index("arm").site_balanced_accuracy
    assert baseline.min() > 0.75  # site is readable before any training
