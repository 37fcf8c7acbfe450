"""Run profiles and atomic writes."""

import pytest

from vicreg_lab import _io
from vicreg_lab.profiles import PROFILES, get_profile


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("VICREG_LAB_PROFILE", "CI")
    assert get_profile().name == "ci"
    assert get_profile("gpu").name == "gpu"


def test_unset_profile_falls_back_to_hardware(monkeypatch):
    import torch

    monkeypatch.delenv("VICREG_LAB_PROFILE", raising=False)
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_a_clear_error():
    expected = r"unknown profile 'big'.*\['ci', 'cpu', 'gpu', 'long', 'research'\]"
    with pytest.raises(ValueError, match=expected):
        get_profile("big")


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = PROFILES["ci"], PROFILES["cpu"], PROFILES["gpu"]
    assert ci.n_subjects < cpu.n_subjects and ci.n_subjects < gpu.n_subjects
    assert ci.shape[0] < cpu.shape[0] < gpu.shape[0]
    assert ci.override(max_epochs=7).max_epochs == 7 and ci.max_epochs != 7


def test_gpu_default_is_minutes_and_research_is_explicit(monkeypatch):
    """The automatic GPU profile trains a fraction of the full-size research run."""
    from vicreg_lab.profiles import training_flops

    def fit_flops(p):
        return training_flops(p.encoder, p.shape, p.n_subjects * p.max_epochs)

    gpu, research = PROFILES["gpu"], PROFILES["research"]
    assert research.device == gpu.device == "cuda"
    t4 = 8.1e12 / 3  # a third of a T4's fp32 peak, FLOP/s
    assert fit_flops(gpu) / t4 < 10 * 60  # under ten minutes on a T4, estimated
    assert fit_flops(research) > 30 * fit_flops(gpu)
    monkeypatch.setenv("VICREG_LAB_PROFILE", "")
    assert get_profile().name in ("cpu", "gpu")  # research is never picked for you


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "the temporary file must be cleaned up"
    _io.write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    import os

    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        synced.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _io.write_text(tmp_path / "out.txt", "new")
    # the file's data, then the rename, then the folder that records the rename
    assert [os.path.dirname(p) == str(tmp_path) and p != str(tmp_path) for p in synced[:1]] == [
        True
    ]
    assert synced[1:] == ["rename", str(tmp_path)]


def test_profile_augment_changes_are_valid_views_and_reach_training(tmp_path):
    from vicreg_lab.augment import AugmentParams
    from vicreg_lab.data import SyntheticCohort
    from vicreg_lab.lab.demo import run_train

    for profile in PROFILES.values():
        AugmentParams(**dict(profile.augment))  # raises on an unknown knob or a bad range
    assert dict(PROFILES["cpu"].augment) == {"p_intensity": 0.0}
    tiny = PROFILES["ci"].override(
        n_subjects=8,
        shape=(16, 16, 16),
        batch_size=4,
        max_epochs=1,
        expander="16-16",
        augment=(("p_intensity", 0.0),),
    )
    cohort = SyntheticCohort(8, shape=(16, 16, 16), seed=0)
    model, _ = run_train(cohort, tmp_path / "run", profile=tiny)
    assert model.augment_params == {"p_intensity": 0.0}
    assert len(cohort._volumes) == 8  # its report probed the training volumes: kept


def test_run_train_frees_the_training_volumes_before_probing_held_out_subjects(tmp_path):
    from vicreg_lab.data import SyntheticCohort
    from vicreg_lab.lab.demo import run_train

    tiny = PROFILES["ci"].override(
        n_subjects=8, shape=(16, 16, 16), batch_size=4, max_epochs=1, expander="16-16"
    )
    cohort = SyntheticCohort(8, shape=(16, 16, 16), seed=0)
    held_out = cohort.held_out(8)
    _, index = run_train(cohort, tmp_path / "run", profile=tiny, probe_dataset=held_out)
    assert len(cohort._volumes) == 0 and len(held_out._volumes) == 8
    assert "8 held-out subjects the model never saw" in index.read_text()
