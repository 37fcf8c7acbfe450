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

from vicreg_lab import SimCLRTransform
from vicreg_lab.checkpoints import load_checkpoint
from vicreg_lab.data.collate import seeded_views
from vicreg_lab.distributed import autocast_dtype, convert_sync_batchnorm, use_sync_batchnorm
from vicreg_lab.lab.callbacks import InterruptAfter, SimulatedInterruption
from vicreg_lab.optim import LARS, exclude_bias_and_norm, lr_at_step
from vicreg_lab.train import VICReg
from vicreg_lab.vicregl import VICRegL

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
    # the representation is judged scale-free, the expander against the variance target 1
    assert [r["collapse"]["scale"] for r in epochs] == ["free", "free"]
    assert [r["collapse_expander"]["scale"] for r in epochs] == ["target_std=1", "target_std=1"]
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
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # never suggests unsafe loading
    with pytest.raises(ValueError, match="corrupt or truncated"):
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
        (dict(batch_size=1), "batch_size must be an integer >= 2"),
        (dict(max_epochs=0), "max_epochs must be an integer >= 1"),
        (dict(var_coeff=-1.0), "var_coeff must be a finite number >= 0"),
        (dict(inv_coeff=float("nan")), "inv_coeff must be a finite"),
        (dict(cov_coeff="1"), "cov_coeff must be a finite"),
        (dict(lr=float("inf")), "lr must be a finite"),
        (dict(warmup_epochs=float("nan")), "warmup_epochs must be a finite"),
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


def test_lars_filters_can_be_switched_off_and_stay_out_of_the_state_dict(tmp_path):
    bias = torch.nn.Parameter(torch.ones(4))
    opt = LARS([bias], lr=0.1, weight_decay=0.5, momentum=0.0, eta=0.5,
               weight_decay_filter=None, lars_adaptation_filter=None)  # fmt: skip
    bias.grad = torch.full((4,), 2.0)
    opt.step()
    # decayed gradient 2 + 0.5 = 2.5 (norm 5), trust ratio 0.5 * |b| / 5 = 0.2: step 0.1 * 0.5
    torch.testing.assert_close(bias.detach(), torch.full((4,), 1.0 - 0.1 * 0.5))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")  # no functions: loads weights_only
    state = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert state["param_groups"][0]["weight_decay"] == 0.5


def _optimizer_of(**params):
    model = make_model(**params)
    model._build((1, 16, 16, 16), torch.device("cpu"))
    return model, model.optimizer_


def test_lars_estimator_uses_the_official_vicreg_settings():
    model, opt = _optimizer_of(optimizer="lars", batch_size=8)
    assert isinstance(opt, LARS)
    assert opt.weight_decay_filter is exclude_bias_and_norm
    assert opt.lars_adaptation_filter is exclude_bias_and_norm
    for group in opt.param_groups:
        assert group["momentum"] == 0.9 and group["eta"] == 0.001
        assert group["lr"] == pytest.approx(0.2 * 8 / 256)
        if any(p.ndim > 1 for p in group["params"]):
            assert group["weight_decay"] == 1e-6  # main_vicreg.py: --wd 1e-6
    params = [p for m in (model.encoder_, model.expander_) for p in m.parameters()]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params}
    # AdamW keeps its own default; an explicit value wins for both
    _, adamw = _optimizer_of()
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-4
    _, lars = _optimizer_of(optimizer="lars", weight_decay=1e-3)
    assert lars.param_groups[0]["weight_decay"] == 1e-3


def test_batchnorm_becomes_syncbatchnorm_under_ddp_on_gpus():
    # the official code converts the whole model (main_vicreg.py); SyncBatchNorm runs on
    # GPUs only, so the default converts on CUDA and leaves CPU (gloo) runs alone
    model, opt = _optimizer_of(estimator=VICRegL, local_expander="16-16", augmentation="batched")
    assert use_sync_batchnorm(model.sync_batchnorm, torch.device("cuda", 0))
    assert not use_sync_batchnorm(None, torch.device("cpu"))
    assert not use_sync_batchnorm(False, torch.device("cuda", 0))
    with pytest.raises(ValueError, match="SyncBatchNorm does not run on CPU"):
        use_sync_batchnorm(True, torch.device("cpu"))

    before = {id(p) for g in opt.param_groups for p in g["params"]}
    convert_sync_batchnorm(model, model.network_names)
    norms = [
        m
        for net in (model.encoder_, model.expander_, model.local_expander_)
        for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert len(norms) >= 3 and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    # the converted layers hold the very parameters that the optimizer updates
    networks = (model.encoder_, model.expander_, model.local_expander_)
    assert {id(p) for net in networks for p in net.parameters()} == before


def test_seeded_torchio_views_ignore_the_global_rng_batches_and_workers():
    data = Blobs(n=4)
    transform = SimCLRTransform((1, 16, 16, 16))
    dataset, collate = seeded_views(data, transform, seed=0, epoch=1)
    items = [dataset[i] for i in range(4)]
    torch.manual_seed(7)
    first, second, targets = collate(items)
    assert first.shape == (4, 1, 16, 16, 16) and not torch.equal(first, second)
    assert torch.equal(targets["age"], torch.tensor([data[i]["age"] for i in range(4)]).double())
    state = torch.random.get_rng_state()
    again, _, _ = collate(items[::-1])  # other RNG state, other batch order
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert torch.equal(again, first.flip(0))
    other_epoch, _, _ = seeded_views(data, transform, seed=0, epoch=2)[1](items)
    assert not torch.equal(other_epoch, first)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate, num_workers=1)
    in_worker = torch.cat([views for views, _, _ in loader])
    assert torch.equal(in_worker, first)
    with pytest.raises(TypeError, match="IndexedDataset"):
        collate([data[0], data[1]])


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


def test_torchio_run_resumes_to_the_same_weights_and_history(tmp_path):
    # TorchIO draws from torch's global RNG, which no checkpoint holds: the views must
    # come from seeds of (seed, epoch, item, view) for a resumed run to repeat the whole.
    params = dict(augmentation="torchio", batch_size=4, max_epochs=2)
    whole = make_model(tmp_path / "whole", **params).fit(Blobs(n=8))
    with pytest.raises(SimulatedInterruption):
        make_model(tmp_path / "ckpt", callbacks=[InterruptAfter(1)], **params).fit(Blobs(n=8))
    torch.manual_seed(1234)  # whatever the global RNG holds when the run is resumed
    resumed = make_model(tmp_path / "ckpt", **params).fit(Blobs(n=8), resume=True)
    assert len(resumed.history_["step"]) == 4
    for part in ("encoder_", "expander_"):
        a, b = getattr(whole, part).state_dict(), getattr(resumed, part).state_dict()
        for key, value in a.items():
            assert torch.equal(value, b[key]), f"{part}{key} differs after resume"
    _same_history(whole.history_, resumed.history_)


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
        estimator=VICRegL,
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
    assert isinstance(loaded, VICRegL) and loaded.encoder_kwargs == {"output_stride": 4}
    np.testing.assert_array_equal(loaded.feature_maps(Blobs()), maps)
    for key, value in model.local_expander_.state_dict().items():
        assert torch.equal(value, loaded.local_expander_.state_dict()[key]), key


def test_vicregl_with_batched_augment_lowers_the_local_term():
    model = make_model(
        max_epochs=3,
        batch_size=4,
        lr=3e-3,
        estimator=VICRegL,
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
        (dict(), "needs the geometry of every view"),  # noisy_flip: views only
        (dict(augmentation="torchio"), "TorchIO views do not record it"),
        (dict(alpha=2.0), r"alpha must lie in \[0, 1\]"),
        (dict(num_matches=0), "num_matches must be a positive int"),
    ],
)
def test_vicregl_bad_settings(params, message):
    with pytest.raises(ValueError, match=message):
        make_model(estimator=VICRegL, **params).fit(Blobs())


@pytest.mark.parametrize("estimator", [VICReg, VICRegL])
def test_clone_and_get_params_keep_every_constructor_parameter(estimator):
    import inspect

    from sklearn.base import clone

    names = [n for n in inspect.signature(estimator.__init__).parameters if n != "self"]
    changes = {"max_epochs": 3, "augment_params": {"p_intensity": 0.0}, "encoder_kwargs": {}}
    if estimator is VICRegL:
        changes |= {"alpha": 0.5, "local_expander": "16-16"}
        assert set(VICReg().get_params()) < set(names)  # VICReg's parameters, and more
    model = estimator(**changes)
    params = model.get_params()
    assert sorted(params) == sorted(names)
    for name, value in changes.items():
        assert params[name] is value  # stored unchanged, not copied or validated
    copy = clone(model)
    assert type(copy) is estimator and copy is not model
    assert copy.get_params() == params and not hasattr(copy, "encoder_")
    assert repr(copy) == repr(model)


def test_repr_shows_only_changed_parameters():
    text = repr(VICReg(max_epochs=3, expander="64-64"))
    assert text == "VICReg(expander='64-64', max_epochs=3)"
    assert repr(VICReg()) == "VICReg()"


def test_auto_precision_uses_bf16_only_where_the_gpu_has_it(monkeypatch):
    """precision="auto": bf16 on Ampere+, fp32 on a T4 (emulated bf16 is slower) and CPUs."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert autocast_dtype("auto", cuda) is None  # a T4: only emulated bf16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16


def test_transform_sees_volumes_rescaled_like_the_training_views():
    """Training views are min-max rescaled per volume; transform rescales the same way,
    so a scanner's global intensity scale and offset do not reach the encoder."""
    data = Blobs(n=16, size=16)
    model = make_model(max_epochs=1).fit(data)
    x = torch.stack([data[i]["image"] for i in range(8)])
    z = model.transform(x)
    np.testing.assert_allclose(model.transform(3.0 * x + 0.5), z, rtol=1e-4, atol=1e-5)
    lo = x.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    hi = x.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        direct = model.encoder_.eval()((x - lo) / (hi - lo)).numpy()
    np.testing.assert_allclose(z, direct, rtol=1e-4, atol=1e-5)


def _refuse(x, generator):
    raise AssertionError("the loader's views must not be augmented again")


def test_fit_takes_a_loader_of_two_view_batches_without_augmenting_them_again():
    from vicreg_lab import BatchedAugment, TwoViewsCollate

    data = Blobs(n=16)
    collate = TwoViewsCollate(BatchedAugment(16, seed=0))
    loader = torch.utils.data.DataLoader(data, batch_size=8, collate_fn=collate)
    model = make_model(max_epochs=2, augmentation=_refuse).fit(loader)
    assert len(model.history_["step"]) == 4
    assert all(math.isfinite(r["loss"]) for r in model.history_["step"])
    # a loader of plain volumes is augmented on the device by the estimator's augmentation
    plain = torch.utils.data.DataLoader(data, batch_size=8)
    with pytest.raises(AssertionError, match="augmented again"):
        make_model(max_epochs=1, augmentation=_refuse).fit(plain)


def test_torchio_augmentation_with_a_loader_of_volumes_is_refused_before_training():
    steps = []
    plain = torch.utils.data.DataLoader(Blobs(n=16), batch_size=8)
    model = make_model(augmentation="torchio", callbacks=[lambda m, e, r: steps.append(e)])
    with pytest.raises(ValueError, match="TwoViewsCollate"):
        model.fit(plain)
    assert steps == [] and model.history_["step"] == []


# every constructor parameter, none at its default (objects checked by identity)
_NON_DEFAULT = {
    "encoder": torch.nn.Linear(2, 2), "expander": "64-64", "inv_coeff": 10.0, "var_coeff": 5.0,
    "cov_coeff": 2.0, "optimizer": "lars", "lr": 0.01, "weight_decay": 0.1,
    "warmup_epochs": 0.5, "batch_size": 8, "max_epochs": 3, "input_size": (8, 8, 8),
    "augmentation": "torchio", "augment_params": {"flip_prob": 0.3}, "device": "cpu",
    "precision": "fp32", "num_workers": 2, "checkpoint_dir": "runs/x", "seed": 7,
    "progress": False, "callbacks": [print], "sync_batchnorm": True,
    "encoder_kwargs": {"width": 0.5}, "alpha": 0.5, "num_matches": (4, 2),
    "l2_all_matches": True, "local_expander": "32-32", "lambd": 0.01, "temperature": 0.5,
}  # fmt: skip


@pytest.mark.parametrize("name", ["VICReg", "VICRegL", "BarlowTwins", "SimCLR"])
def test_get_params_returns_every_constructor_parameter_and_clone_copies_them(name):
    import inspect

    from sklearn.base import clone

    from vicreg_lab.peers import BarlowTwins, SimCLR

    klass = {"VICReg": VICReg, "VICRegL": VICRegL, "BarlowTwins": BarlowTwins, "SimCLR": SimCLR}
    klass = klass[name]
    names = [p for p in inspect.signature(klass.__init__).parameters if p != "self"]
    given = {p: _NON_DEFAULT[p] for p in names}
    model = klass(**given)
    params = model.get_params()
    assert set(params) == set(names)
    assert all(params[p] is given[p] for p in names)  # stored unchanged, not validated copies
    copy = clone(model)
    assert type(copy) is klass and copy is not model
    assert copy.get_params()["encoder"] is not given["encoder"]  # a deep copy of the module
    assert copy.get_params()["augment_params"] == given["augment_params"]
    assert not hasattr(copy, "encoder_")  # unfitted


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_shows_the_loss_terms_only_when_asked(progress, capsys):
    make_model(max_epochs=1, progress=progress).fit(Blobs(n=16))
    err = capsys.readouterr().err
    if progress:
        assert "VICReg" in err and "inv=" in err and "step" in err
    else:
        assert "VICReg" not in err and "it/s" not in err and "step/s" not in err
