"""DataLoader collate functions that make two augmented views of each volume.

:class:`TwoViewsCollate` uses the transform's own randomness;
:class:`SeededTwoViewsCollate` seeds each view from ``(seed, epoch, item index, view)``,
so a run resumed from a checkpoint repeats exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vicreg_lab.augment import BatchedAugment


class TwoViewsCollate:
    """Collate dataset items into ``(view1, view2, targets)``.

    Parameters
    ----------
    transform : callable or BatchedAugment
        A per-sample transform (e.g. :class:`~vicreg_lab.augment.SimCLRTransform`),
        called twice per volume, or a :class:`~vicreg_lab.augment.BatchedAugment`,
        called on the stacked batch (all volumes of one shape).

    Notes
    -----
    An item is a tensor (``targets`` is None), an ``(image, target)`` pair, or a
    dict with key ``"image"`` (the other keys give ``targets``); targets go through
    ``default_collate``. Instances pickle, for DataLoader workers.

    Examples
    --------
    >>> from vicreg_lab import SimCLRTransform
    >>> collate = TwoViewsCollate(SimCLRTransform(input_size=16, seed=0))
    >>> items = [{"image": torch.rand(1, 20, 20, 20), "age": 30.0, "id": "s1"}] * 2
    >>> v1, v2, targets = collate(items)
    >>> tuple(v1.shape), targets["id"]
    ((2, 1, 16, 16, 16), ['s1', 's1'])
    """

    def __init__(self, transform):
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform

    def __repr__(self) -> str:
        return f"TwoViewsCollate({self.transform!r})"

    def __call__(self, items):
        images, targets = _split_items(items, type(self).__name__)
        if isinstance(self.transform, BatchedAugment):
            shapes = {tuple(im.shape) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"TwoViewsCollate: BatchedAugment needs one shape, got {shapes}")
            view1, view2, _, _ = self.transform.two_views(torch.stack(images))
        else:
            view1 = torch.stack([self.transform(im) for im in images])
            view2 = torch.stack([self.transform(im) for im in images])
        return view1, view2, _collate_targets(targets)


class IndexedDataset(Dataset):
    """A dataset's items as ``(i, dataset[i])`` pairs, for :class:`SeededTwoViewsCollate`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


class SeededTwoViewsCollate(TwoViewsCollate):
    """Two views of each item, drawn from seeds of ``(seed, epoch, item index, view)``.

    TorchIO draws from torch's global RNG, so each view runs under
    ``torch.random.fork_rng`` seeded with :func:`view_seed`: an item's views in an
    epoch are the same in any worker and batch, resumed or not (a checkpoint cannot
    hold every worker's RNG), and the caller's RNG is left alone.

    Parameters
    ----------
    transform : callable
        A per-sample transform drawing from torch's global RNG
        (e.g. ``SimCLRTransform(seed=None)``).
    seed, epoch : int
        The run's seed and the epoch whose views are drawn.

    Notes
    -----
    Items are ``(index, item)`` pairs from :class:`IndexedDataset`; ``item`` is read as
    by :class:`TwoViewsCollate`.

    Examples
    --------
    >>> from vicreg_lab import SimCLRTransform
    >>> collate = SeededTwoViewsCollate(SimCLRTransform(input_size=16), seed=0, epoch=3)
    >>> items = IndexedDataset([torch.rand(1, 20, 20, 20)] * 2)
    >>> v1, _, _ = collate([items[0], items[1]])
    >>> torch.equal(v1, collate([items[0], items[1]])[0])
    True
    """

    def __init__(self, transform, seed: int, epoch: int):
        if isinstance(transform, BatchedAugment):
            raise TypeError(
                "SeededTwoViewsCollate needs a per-sample transform; BatchedAugment takes a "
                "generator instead (see BatchedAugment(..., generator=...))"
            )
        super().__init__(transform)
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return f"SeededTwoViewsCollate({self.transform!r}, seed={self.seed}, epoch={self.epoch})"

    def __call__(self, items):
        if not isinstance(items, (list, tuple)) or not all(_is_indexed(it) for it in items):
            raise TypeError(
                "SeededTwoViewsCollate expects (index, item) pairs: wrap the dataset in "
                "IndexedDataset"
            )
        indices = [int(index) for index, _ in items]
        images, targets = _split_items([item for _, item in items], type(self).__name__)
        pairs = list(zip(images, indices, strict=True))
        view1, view2 = (torch.stack([self._view(im, i, v) for im, i in pairs]) for v in (0, 1))
        return view1, view2, _collate_targets(targets)

    def _view(self, image: torch.Tensor, index: int, view: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # CPU only: workers have no GPU state
            torch.manual_seed(view_seed(self.seed, self.epoch, index, view))
            return self.transform(image)


def seeded_views(data, transform, seed: int, epoch: int):
    """``(dataset, collate)`` whose batches are ``(view1, view2, targets)``, each view drawn
    from a seed of ``(seed, epoch, item index, view)``: a resumed run draws them again.

    TorchIO draws from torch's global RNG, which differs between a resumed and an
    uninterrupted run (and between DataLoader workers); these seeds do not.
    """
    return IndexedDataset(data), SeededTwoViewsCollate(transform, seed, epoch)


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """A 64-bit seed for one view of one dataset item in one epoch.

    ``numpy.random.SeedSequence`` hashes the four numbers, so nearby tuples get unrelated seeds (a
    linear formula such as ``seed * K + index`` would give some tuples the same seed).
    """
    words = [int(x) % 2**64 for x in (seed, epoch, index, view)]  # non-negative
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def _is_indexed(item) -> bool:
    pair = isinstance(item, (tuple, list)) and len(item) == 2
    return pair and isinstance(item[0], (int, np.integer))


def _split_items(items, who: str):
    if not isinstance(items, (list, tuple)) or len(items) == 0:
        raise ValueError(f"{who} expects a non-empty list of items, got {items!r}")
    images, targets = zip(*(_split(item, i) for i, item in enumerate(items)), strict=True)
    return images, targets


def _collate_targets(targets):
    if all(t is None for t in targets):
        return None
    return default_collate(list(targets))


def _split(item, index: int):
    """(image, target) of one item."""
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, dict):
        if "image" not in item:
            raise KeyError(f"TwoViewsCollate: item {index} is a dict without an 'image' key")
        return item["image"], {k: v for k, v in item.items() if k != "image"}
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(
        f"TwoViewsCollate: item {index} must be a tensor, an (image, target) pair or a dict "
        f"with an 'image' key, got {type(item).__name__}"
    )
