"""A DataLoader collate function that makes two augmented views of each volume."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from .batched import BatchedAugment


class TwoViewsCollate:
    """Collate dataset items into ``(view1, view2, targets)``.

    Parameters
    ----------
    transform : callable or BatchedAugment
        Either a per-sample transform (e.g. :class:`~vicreg_lab.augment.SimCLRTransform`),
        called twice on each volume (1, D, H, W), or a
        :class:`~vicreg_lab.augment.BatchedAugment`, called on the stacked
        batch (then all volumes must share one shape).

    Notes
    -----
    Each dataset item may be:

    - a tensor (1, D, H, W): ``targets`` is None;
    - a pair ``(image, target)``: ``targets`` is ``default_collate`` of the
      targets (numbers -> tensor);
    - a dict with key ``"image"``: the other keys give ``targets``, a dict of
      tensors (numbers, arrays) or lists (strings, ...).

    Instances pickle, so they work in a DataLoader with ``num_workers > 0``.

    Examples
    --------
    >>> import torch
    >>> from vicreg_lab.augment import SimCLRTransform, TwoViewsCollate
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
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            raise ValueError(f"TwoViewsCollate expects a non-empty list of items, got {items!r}")
        images, targets = zip(*(_split(item, i) for i, item in enumerate(items)), strict=True)
        if isinstance(self.transform, BatchedAugment):
            shapes = {tuple(im.shape) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"TwoViewsCollate: BatchedAugment needs one shape, got {shapes}")
            view1, view2, _, _ = self.transform.two_views(torch.stack(images))
        else:
            view1 = torch.stack([self.transform(im) for im in images])
            view2 = torch.stack([self.transform(im) for im in images])
        if all(t is None for t in targets):
            return view1, view2, None
        return view1, view2, default_collate(list(targets))


def _split(item, index: int):
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
