"""The VICReg estimator: ``VICReg(...).fit(dataset)``, then ``transform`` to embed volumes.

scikit-learn style: the constructor only stores its parameters; :meth:`VICReg.fit` sets the
trailing-underscore attributes (``encoder_``, ``expander_``, ``history_``). One training
step, as in the official implementation (facebookresearch/vicreg)::

    view1, view2 = augment(x), augment(x)              # two random views of each volume
    z1 = expander(encoder(view1)); z2 = expander(encoder(view2))
    loss = VICRegLoss(inv, var, cov)(z1, z2)["loss"]   # bf16 autocast on CUDA
    loss.backward(); optimizer.step()                  # LARS or AdamW, warm-up + cosine

Subclasses change the step: :class:`vicreg_lab.VICRegL` (local features), and VICReg's
peers in :mod:`vicreg_lab.peers`. The shuffling and the augmentations of epoch ``e`` are
drawn from generators seeded with ``(seed, e)``, so a run resumed from the checkpoint of
an epoch continues exactly as the uninterrupted run would have (on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn
from torch.utils.data import DataLoader

from vicreg_lab import checkpoints, distributed
from vicreg_lab.checkpoints import CHECKPOINT_NAME, checkpoint_lock, load_checkpoint
from vicreg_lab.data import image_of, stack_images
from vicreg_lab.data.loaders import (
    augment_generator,
    augmented_views,
    n_items,
    pair_of_views,
    rescale_and_resize,
    training_loader,
    yields_views,
)
from vicreg_lab.diagnostics import training_collapse
from vicreg_lab.distributed import is_main, rank, world_size
from vicreg_lab.losses import VICRegLoss
from vicreg_lab.models import build_encoder, build_expander
from vicreg_lab.optim import build_optimizer, lr_at_step
from vicreg_lab.probes import device_of, encode

__all__ = ["VICReg", "channels_last", "load_checkpoint"]

TERMS = ("loss", "invariance", "variance", "covariance")


class VICReg(TransformerMixin, BaseEstimator):
    """VICReg self-supervised training of a 3D encoder.

    Parameters
    ----------
    encoder : a name from :func:`vicreg_lab.models.list_encoders`, or a module ("small_cnn").
    expander : expander widths, "512-512" (official VICReg: "8192-8192-8192").
    inv_coeff, var_coeff, cov_coeff : the loss weights, 25, 25, 1 (:class:`vicreg_lab.VICRegLoss`).
    optimizer : "adamw" or "lars" (:class:`vicreg_lab.optim.LARS`, as in the official code).
    lr, weight_decay : AdamW 1e-3 and 1e-4, LARS ``0.2 * batch_size / 256`` and 1e-6 if None.
    warmup_epochs : linear warm-up (1 epoch), then cosine decay, per step.
    batch_size, max_epochs : 32, 10.
    input_size : (D, H, W) of the views; default: the volumes' shape.
    augmentation : "batched" (:class:`vicreg_lab.BatchedAugment` on the training device),
        "torchio" (:class:`vicreg_lab.SimCLRTransform` in the DataLoader workers), or a
        callable ``f(x, generator) -> views`` on a batch (B, 1, D, H, W).
    augment_params : dict of :class:`vicreg_lab.lab.AugmentParams` strengths.
    device : "auto" picks CUDA when available.
    precision : "auto" (bf16 autocast on GPUs with native bfloat16), "bf16" or "fp32".
    num_workers : DataLoader workers (0).
    checkpoint_dir : where ``last.ckpt`` is written (atomically) after every epoch.
    seed : 0.
    progress : a ``tqdm.auto`` progress bar with the loss terms (True).
    callbacks : callables ``callback(estimator, event, record)``, event "step" or "epoch".
    sync_batchnorm : SyncBatchNorm under torch.distributed; None: on CUDA only.
    encoder_kwargs : passed to :func:`vicreg_lab.build_encoder`, e.g. ``{"width": 0.5}``.

    Attributes
    ----------
    encoder_, expander_ : the trained networks; ``representation_size_``: the encoder's.
    history_ : ``"step"``: a record per step (the loss terms, lr, volumes/s); ``"epoch"``: a
        record per epoch with the mean terms and ``collapse`` / ``collapse_expander``,
        collapse reports of a held batch (the representation's scale-free, the expander's
        against the variance term's target std 1).
    """

    TERMS = TERMS  # keys of the loss dict and of every step record
    network_names = ("encoder_", "expander_")  # saved, loaded and put in eval mode together

    def __init__(
        self,
        encoder: str | nn.Module = "small_cnn",
        expander: str = "512-512",
        inv_coeff: float = 25.0,
        var_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        optimizer: str = "adamw",
        lr: float | None = None,
        weight_decay: float | None = None,
        warmup_epochs: float = 1.0,
        batch_size: int = 32,
        max_epochs: int = 10,
        input_size: tuple[int, int, int] | None = None,
        augmentation: str | Callable = "batched",
        augment_params: dict | None = None,
        device: str = "auto",
        precision: str = "auto",
        num_workers: int = 0,
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        progress: bool = True,
        callbacks: Sequence[Callable] = (),
        sync_batchnorm: bool | None = None,
        encoder_kwargs: dict | None = None,
    ):
        self.encoder = encoder
        self.expander = expander
        self.inv_coeff = inv_coeff
        self.var_coeff = var_coeff
        self.cov_coeff = cov_coeff
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.input_size = input_size
        self.augmentation = augmentation
        self.augment_params = augment_params
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.progress = progress
        self.callbacks = callbacks
        self.sync_batchnorm = sync_batchnorm
        self.encoder_kwargs = encoder_kwargs

    # ---------------------------------------------------------------- set-up

    def _check_params(self) -> None:
        choices = {"optimizer": ("adamw", "lars"), "precision": ("auto", "bf16", "fp32")}
        choices["augmentation"] = ("batched", "torchio")  # or a callable
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "augmentation" and callable(value)):
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name, lowest in (("batch_size", 2), ("max_epochs", 1)):  # a variance needs 2 samples
            value = getattr(self, name)
            if not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
        for name in ("inv_coeff", "var_coeff", "cov_coeff", "warmup_epochs", "lr", "weight_decay"):
            value = getattr(self, name)
            if value is None and name in ("lr", "weight_decay"):
                continue  # chosen by the optimizer
            real = isinstance(value, int | float) and not isinstance(value, bool)
            if not real or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def _build(self, image_shape: Sequence[int], device: torch.device) -> None:
        torch.manual_seed(self.seed)
        self.input_size_ = tuple(self.input_size or image_shape[-3:])
        self._build_networks()
        for network in self._networks():
            network.to(device)
        if device.type == "cuda":
            self.encoder_.to(memory_format=torch.channels_last_3d)
        self.optimizer_, self.base_lr_ = build_optimizer(
            self.optimizer, self._networks(), self.batch_size, self.lr, self.weight_decay
        )
        self.history_ = {"step": [], "epoch": []}

    def _build_networks(self) -> None:
        self.encoder_ = build_encoder(self.encoder, **dict(self.encoder_kwargs or {}))
        self.representation_size_ = int(self.encoder_.representation_size)
        self.expander_ = build_expander(self.representation_size_, self.expander)

    def _networks(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.network_names]

    def _views_function(self, data) -> Callable:
        """``f(batch, device, generator) -> (views, geometries)``: read from a DataLoader that
        yields ``(view1, view2, targets)`` (TorchIO's is built by :meth:`_loader`), or drawn
        on the training device by ``augmentation``."""
        if yields_views(data):
            return pair_of_views
        if self.augmentation == "torchio":
            if isinstance(data, DataLoader):
                raise ValueError(
                    "augmentation='torchio' needs a Dataset (the estimator builds the DataLoader) "
                    "or a DataLoader with TwoViewsCollate yielding (view1, view2, targets)"
                )
            return pair_of_views
        if callable(self.augmentation):
            return augmented_views(self.augmentation)
        from vicreg_lab.augment import BatchedAugment

        return augmented_views(BatchedAugment(self.input_size_, **dict(self.augment_params or {})))

    def _loader(self, data, epoch: int) -> DataLoader:
        transform = None
        if self.augmentation == "torchio":
            from vicreg_lab.data.torchio_views import SimCLRTransform

            size, params = (1, *self.input_size_), dict(self.augment_params or {})
            transform = SimCLRTransform(size, **params)
        return training_loader(data, self.batch_size, self.seed, epoch, self.num_workers, transform)

    # ---------------------------------------------------------------- training

    def _training_modules(self) -> dict[str, nn.Module]:
        """The modules a training step calls; under torch.distributed each is wrapped in DDP."""
        return {"encoder": self.encoder_, "expander": self.expander_}

    def _loss_terms(self, criterion, views, geometries) -> dict:
        """The loss dict of one batch of view pairs (the geometries are VICRegL's)."""
        encoder, expander = self._modules["encoder"], self._modules["expander"]
        z1, z2 = (expander(encoder(channels_last(view))) for view in views)
        return criterion(z1, z2)

    def _criterion(self, distributed: bool) -> nn.Module:
        coeffs = (self.inv_coeff, self.var_coeff, self.cov_coeff)  # finiteness: after the step
        return VICRegLoss(*coeffs, gather_distributed=distributed, check_finite=False)

    def fit(self, data, resume: bool | str = False) -> VICReg:
        """Train on a Dataset of volumes (1, D, H, W), or a DataLoader.

        Items may be a tensor, ``(image, target)`` or a dict with key ``"image"``; a
        DataLoader with a :class:`~vicreg_lab.TwoViewsCollate` yields views already.
        ``resume=True`` continues from ``checkpoint_dir/last.ckpt`` if it exists, and
        refuses a checkpoint whose parameters (``max_epochs`` aside), input size or data
        differ from this run's, naming the fields; ``resume="force"`` continues anyway.
        """
        if resume not in (False, True, "force"):
            raise ValueError(f"resume must be True, False or 'force', got {resume!r}")
        self._check_params()
        device = distributed.resolve_device(self.device)
        first = data.dataset[0] if isinstance(data, DataLoader) else data[0]
        image_shape = tuple(image_of(first).shape)
        if len(image_shape) != 4 or image_shape[0] != 1:
            raise ValueError(
                f"volumes must have shape (1, D, H, W); the first item has shape {image_shape}"
            )
        self._build(image_shape, device)
        self.n_items_ = n_items(data)
        self.data_fingerprint_ = checkpoints.fingerprint(data, first)
        with checkpoint_lock(self.checkpoint_dir if is_main() else None):
            start_epoch = checkpoints.restore(self, force=resume == "force") if resume else 0
            self._train(data, device, start_epoch)
        for network in self._networks():
            network.eval()
        return self

    def _train(self, data, device: torch.device, start_epoch: int) -> None:
        """The epochs from ``start_epoch`` on (``fit`` has built and restored everything)."""
        several = world_size() > 1
        if several and distributed.use_sync_batchnorm(self.sync_batchnorm, device):
            distributed.convert_sync_batchnorm(self, self.network_names)
        views_of = self._views_function(data)  # an augmentation's errors come first
        self._modules = self._training_modules()
        if several:
            self._modules = distributed.wrap_ddp(self._modules, device)
        criterion = self._criterion(several)
        held = self._held_batch(data, device)
        steps_per_epoch = len(self._loader(data, 0))
        if steps_per_epoch == 0:
            raise ValueError(
                f"no full batch: the dataset has {n_items(data)} items, "
                f"fewer than batch_size={self.batch_size}"
            )
        schedule = (steps_per_epoch, int(self.warmup_epochs * steps_per_epoch))
        total = steps_per_epoch * self.max_epochs
        from tqdm.auto import tqdm

        done, quiet = start_epoch * steps_per_epoch, not (self.progress and is_main())
        bar = tqdm(total=total, initial=done, desc="VICReg", unit="step", disable=quiet)
        try:
            for epoch in range(start_epoch, self.max_epochs):
                self._train_epoch(data, epoch, device, criterion, schedule, views_of, bar)
                self._end_epoch(epoch, held)
        finally:  # also on an error, so that its message starts on a line of its own
            bar.close()
        self._modules = None

    def _train_epoch(self, data, epoch, device, criterion, schedule, views_of, bar) -> None:
        steps_per_epoch, warmup = schedule
        total = steps_per_epoch * self.max_epochs
        dtype = distributed.autocast_dtype(self.precision, device)
        for network in self._networks():
            network.train()
        generator = augment_generator(self.seed, epoch, rank(), device)
        tick = time.perf_counter()
        for i, batch in enumerate(self._loader(data, epoch)):
            step = epoch * steps_per_epoch + i
            lr = lr_at_step(step, total, warmup, self.base_lr_)
            for group in self.optimizer_.param_groups:
                group["lr"] = lr
            views, geometries = views_of(batch, device, generator)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                terms = self._loss_terms(criterion, views, geometries)
            values = {k: float(terms[k].detach()) for k in self.TERMS}
            self._check_finite(values, step, epoch)
            self.optimizer_.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer_.step()
            now = time.perf_counter()
            record = {"epoch": epoch, "step": step, **values, "lr": lr}
            record["volumes_per_s"] = views[0].shape[0] / max(now - tick, 1e-9)  # 2 views each
            tick = now
            self.history_["step"].append(record)
            bar.update(1)
            bar.set_postfix({k[:3]: f"{record[k]:.3g}" for k in self.TERMS[:4]}, refresh=False)
            self._notify("step", record)

    def _check_finite(self, values: dict, step: int, epoch: int) -> None:
        order = ("invariance", "variance", "covariance", "loss", *self.TERMS)  # first culprit first
        bad = next((k for k in order if k in values and not math.isfinite(values[k])), None)
        if bad is None:
            return
        kept = f"the last good checkpoint is in {self.checkpoint_dir}"
        raise FloatingPointError(
            f"non-finite {bad} term ({values[bad]}) at step {step} (epoch {epoch}); likely causes: "
            f"a learning rate too high (lr={self.base_lr_:g}), var_coeff=0 letting the embeddings "
            "collapse or explode, or non-finite input volumes; "
            + (kept if self.checkpoint_dir else "no checkpoint_dir was set")
        )

    def _held_batch(self, data, device) -> torch.Tensor:
        """A fixed, un-augmented batch whose embeddings are diagnosed after every epoch."""
        dataset = data.dataset if isinstance(data, DataLoader) else data
        n = min(len(dataset), max(self.batch_size, 64))
        return self.prepare(stack_images(dataset[i] for i in range(n))).to(device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Un-augmented volumes as the encoder sees its training views: min-max rescaled to
        [0, 1] per volume (as both augmentations start) and resized to ``input_size_``."""
        return rescale_and_resize(x, self.input_size_)

    def _end_epoch(self, epoch: int, held: torch.Tensor) -> None:
        steps = [r for r in self.history_["step"] if r["epoch"] == epoch]
        record = {"epoch": epoch, "steps": len(steps)}
        for key in (*self.TERMS, "volumes_per_s"):
            record[key] = float(np.mean([r[key] for r in steps]))
        record["lr"] = steps[-1]["lr"]
        record.update(training_collapse(self.encoder_, self.expander_, held))
        self.history_["epoch"].append(record)
        if self.checkpoint_dir is not None and is_main():
            path = Path(self.checkpoint_dir) / CHECKPOINT_NAME
            checkpoints.save_state(checkpoints.state_of(self, epoch + 1), path)
        self._notify("epoch", record)

    def _notify(self, event: str, record: dict) -> None:
        for callback in self.callbacks:
            callback(self, event, record)

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Save the trained estimator (weights, parameters, history) atomically."""
        self._check_fitted()
        state = checkpoints.state_of(self, len(self.history_["epoch"]))
        return checkpoints.save_state(state, Path(path))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> VICReg:
        """Load an estimator written by :meth:`save` or a training checkpoint, safely
        (``weights_only=True``); a VICRegL checkpoint gives a :class:`vicreg_lab.VICRegL`."""
        state = load_checkpoint(path)
        klass, params = checkpoints.estimator_of(state)
        model = klass(**params)
        model.device = device
        model._build((1, *state["input_size"]), torch.device(device))
        checkpoints.load_weights(model, state)
        model.history_ = state["history"]
        for network in model._networks():
            network.eval()
        return model

    # ---------------------------------------------------------------- inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise RuntimeError(
                f"this {type(self).__name__} estimator is not fitted yet: call fit() first"
            )

    def transform(self, data, batch_size: int | None = None) -> np.ndarray:
        """Representations (before the expander) of a Dataset, DataLoader or (N, 1, D, H, W)
        tensor, as an array (N, representation_size_)."""
        return self._encode(data, batch_size, features=False)

    def feature_maps(self, data, batch_size: int | None = None) -> np.ndarray:
        """Feature maps (N, representation_size_, d, h, w), before pooling; cell ``j`` along
        an axis is centred on voxel ``offset + stride * j``, ``(stride, offset) =
        encoder_.feature_grid``."""
        return self._encode(data, batch_size, features=True)

    def _encode(self, data, batch_size: int | None, features: bool) -> np.ndarray:
        """:func:`vicreg_lab.probes.encode` of the volumes as the encoder saw its views."""
        self._check_fitted()
        size = batch_size or self.batch_size
        if torch.is_tensor(data):
            batches = data.split(size)
        elif isinstance(data, DataLoader):
            batches = (image_of(b) for b in data)
        else:
            batches = DataLoader(data, batch_size=size, collate_fn=stack_images)
        device = device_of(self.encoder_)
        prepared = (channels_last(self.prepare(x).to(device)) for x in batches)
        return encode(self.encoder_, prepared, device=device, features=features)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The memory layout cuDNN's 3D convolutions are fastest with (CUDA only)."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.device.type == "cuda" else x
