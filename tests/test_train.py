"""The VICReg estimator: fit / transform, schedule, LARS, checkpoints, resume, errors."""

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_script import Blobs, make_model, noisy_flip

from vicreg_lab.train import LARS, VICReg, load_checkpoint, lr_at_step

SCRIPT = Path(__file__).parent / "_train_script.py"
TIMING = {"volumes_per_s", "seconds"}


def _same_history(a, b):
    assert len(a["step"]) == len(b["step"]) and len(a["epoch"]) == len(b["epoch"])
    for ra, rb in zip(a["step"] + a["epoch"], b["step"] + b["epoch"], strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_fit_records_history_and_transform_embeds():
    data = Blobs(n=24)
    model = make_model(max_epochs=2)
    assert model.fit(data) is model
    steps, epochs = model.history_["step"], model.history_["epoch"]
    assert len(steps) == 2 * (24 // 8) and len(epochs) == 2
    for key in ("loss", "invariance", "variance", "covariance", "lr", "volumes_per_s"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert epochs[-1]["collapse"]["verdict"] in {
        "healthy",
        "dimensional collapse",
        "complete collapse",
    }
    assert "rankme" in epochs[-1]["collapse_expander"]
    z = model.transform(data)
    assert isinstance(z, np.ndarray) and z.shape == (24, model.representation_size_)
    assert np.isfinite(z).all() and z.std(0).max() > 0
    # a raw tensor batch gives the same embeddings as the dataset
    np.testing.assert_allclose(model.transform(data.volumes), z, rtol=1e-5, atol=1e-6)


def test_training_lowers_the_loss():
    model = make_model(max_epochs=6, lr=3e-3).fit(Blobs(n=32))
    losses = [r["loss"] for r in model.history_["epoch"]]
    assert losses[-1] < losses[0]


def test_same_seed_same_weights():
    a = make_model(max_epochs=1).fit(Blobs())
    b = make_model(max_epochs=1).fit(Blobs())
    c = make_model(max_epochs=1, seed=1).fit(Blobs())
    wa, wb, wc = (next(m.encoder_.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_callbacks_see_every_step_and_epoch():
    events = []
    make_model(max_epochs=2, callbacks=[lambda m, e, r: events.append(e)]).fit(Blobs())
    assert events.count("step") == 6 and events.count("epoch") == 2
    assert events[-1] == "epoch"


def test_save_load_round_trip(tmp_path):
    model = make_model(max_epochs=1).fit(Blobs())
    path = model.save(tmp_path / "model.ckpt")
    loaded = VICReg.load(path)
    np.testing.assert_array_equal(loaded.transform(Blobs()), model.transform(Blobs()))
    _same_history(loaded.history_, model.history_)


def test_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "vicreg-lab-checkpoint-v1", "payload": pickle.loads}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="weights_only"):
        VICReg.load(path)


def test_loading_a_file_that_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vicreg-lab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_non_finite_loss_names_term_and_step_and_keeps_checkpoint(tmp_path):
    calls = {"n": 0}

    def poisoned(x, generator):
        calls["n"] += 1
        views = noisy_flip(x, generator)
        return views * float("nan") if calls["n"] > 8 else views  # step 4 (two views per step)

    model = make_model(tmp_path, augmentation=poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite invariance term .* at step 4") as err:
        model.fit(Blobs())
    assert "learning rate" in str(err.value) and "var_coeff=0" in str(err.value)
    state = load_checkpoint(tmp_path / "last.ckpt")
    assert state["epochs_done"] == 1  # the checkpoint of the last good epoch is intact
    assert all(math.isfinite(r["loss"]) for r in state["history"]["step"])


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(optimizer="sgd"), "optimizer must be"),
        (dict(batch_size=1), "batch_size must be >= 2"),
        (dict(max_epochs=0), "max_epochs must be a positive integer"),
        (dict(var_coeff=-1.0), "var_coeff must be >= 0"),
        (dict(augmentation="mixup"), "augmentation must be"),
        (dict(precision="fp8"), "precision must be"),
    ],
)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        make_model(**params).fit(Blobs())


def test_bad_data():
    with pytest.raises(ValueError, match=r"shape \(1, D, H, W\)"):
        make_model().fit([torch.zeros(16, 16, 16)] * 8)
    with pytest.raises(ValueError, match="no full batch"):
        make_model(batch_size=16).fit(Blobs(n=10))
    with pytest.raises(RuntimeError, match="not fitted"):
        make_model().transform(Blobs())


def test_warmup_then_cosine_schedule():
    lrs = [lr_at_step(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 0.01 and min(lrs) >= 0.001 - 1e-12


def test_lars_leaves_biases_and_norms_out_of_decay_and_adaptation():
    weight = torch.nn.Parameter(torch.ones(4, 4))
    bias = torch.nn.Parameter(torch.ones(4))
    opt = LARS([weight, bias], lr=0.1, weight_decay=0.5, momentum=0.0)
    weight.grad, bias.grad = torch.zeros(4, 4), torch.full((4,), 2.0)
    opt.step()
    # the weight only decays (trust ratio eta*|w|/|wd*w| applied), the bias takes a plain SGD step
    assert torch.all(weight < 1.0)
    torch.testing.assert_close(bias.detach(), torch.full((4,), 1.0 - 0.1 * 2.0))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_history(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True)

    whole = run(tmp_path / "ckpt_whole", tmp_path / "whole.ckpt")
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    # 3 steps per epoch: step 5 is the last step of epoch 1, after the epoch-0 checkpoint
    killed = run(tmp_path / "ckpt", tmp_path / "never.ckpt", "--kill-at-step", 5)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (tmp_path / "never.ckpt").exists()
    assert load_checkpoint(tmp_path / "ckpt" / "last.ckpt")["epochs_done"] == 1
    resumed = run(tmp_path / "ckpt", tmp_path / "resumed.ckpt", "--resume")
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]

    a, b = load_checkpoint(tmp_path / "whole.ckpt"), load_checkpoint(tmp_path / "resumed.ckpt")
    for part in ("encoder", "expander"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    _same_history(a["history"], b["history"])


def flip_with_geometry(x, generator):
    """noisy_flip that also returns each view's (B, 3, 4) view-index -> source-index map."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    views = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
    views = views + 0.1 * torch.randn(x.shape, generator=generator)
    geometry = torch.eye(3, 4).repeat(x.shape[0], 1, 1)
    geometry[flip, 2, 2], geometry[flip, 2, 3] = -1.0, x.shape[-1] - 1.0
    return views, geometry


def test_vicregl_trains_records_local_terms_and_round_trips(tmp_path):
    model = make_model(
        max_epochs=2,
        loss="vicregl",
        alpha=0.5,
        num_matches=16,
        local_expander="16-16",
        encoder_kwargs={"output_stride": 4},
        augmentation=flip_with_geometry,
    ).fit(Blobs())
    assert model.local_expander_[-1].out_channels == 16
    for record in model.history_["step"] + model.history_["epoch"]:
        for key in ("loss", "global", "local", "local_invariance", "local_covariance"):
            assert math.isfinite(record[key]), key
        assert record["loss"] == pytest.approx(0.5 * record["global"] + 0.5 * record["local"])
    maps = model.feature_maps(Blobs())
    assert maps.shape == (24, model.representation_size_, 4, 4, 4)  # 16^3 at stride 4
    np.testing.assert_allclose(maps.mean((2, 3, 4)), model.transform(Blobs()), rtol=1e-4, atol=1e-5)
    loaded = VICReg.load(model.save(tmp_path / "vicregl.ckpt"))
    assert loaded.loss == "vicregl" and loaded.encoder_kwargs == {"output_stride": 4}
    np.testing.assert_array_equal(loaded.feature_maps(Blobs()), maps)
    for key, value in model.local_expander_.state_dict().items():
        assert torch.equal(value, loaded.local_expander_.state_dict()[key]), key


def test_vicregl_with_batched_augment_lowers_the_local_term():
    model = make_model(
        max_epochs=3,
        batch_size=4,
        lr=3e-3,
        loss="vicregl",
        alpha=0.0,
        local_expander="16-16",
        encoder_kwargs={"output_stride": 8},
        augmentation="batched",
    ).fit(Blobs(n=16))
    local = [r["local"] for r in model.history_["epoch"]]
    assert local[-1] < local[0]


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(loss="vicregl"), "needs the geometry of every view"),  # noisy_flip: views only
        (dict(loss="vicregl", augmentation="torchio"), "TorchIO views do not record it"),
        (dict(loss="vicregl", alpha=2.0), r"alpha must lie in \[0, 1\]"),
        (dict(loss="vicregl", num_matches=0), "num_matches must be a positive int"),
        (dict(loss="simclr"), "loss must be 'vicreg' or 'vicregl'"),
    ],
)
def test_vicregl_bad_settings(params, message):
    with pytest.raises(ValueError, match=message):
        make_model(**params).fit(Blobs())


def test_repr_shows_only_changed_parameters():
    text = repr(VICReg(max_epochs=3, expander="64-64"))
    assert text == "VICReg(expander='64-64', max_epochs=3)"
    assert repr(VICReg()) == "VICReg()"
