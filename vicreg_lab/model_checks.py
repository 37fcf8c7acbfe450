"""Argument checks for :mod:`vicreg_lab.models`: user encoders and expander specs.

A reader of the models can skip this module: it finds the representation size of an
encoder the user wrote (by a dry run) and parses ``"8192-8192-8192"``-style expander specs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["check_user_encoder", "parse_expander_spec"]


def check_user_encoder(
    module: nn.Module, in_channels: int, input_shape: Sequence[int]
) -> nn.Module:
    """Return ``module`` with a checked (or dry-run inferred) ``representation_size``.

    Without an int ``representation_size``, ``F`` is found by a dry run on zeros
    ``(2, in_channels, *input_shape)`` (eval mode, no grad, training flags restored) and
    stored as ``representation_size``.
    """
    size = getattr(module, "representation_size", None)
    if isinstance(size, int) and size > 0:
        return module
    if size is not None:
        raise ValueError(f"representation_size must be a positive int, got {size!r}")
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    flags = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(2, in_channels, *input_shape, device=device))
    finally:
        for m, flag in flags.items():
            m.training = flag
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"an encoder must map (B, {in_channels}, D, H, W) to (B, F); a dry run on "
            f"(2, {in_channels}, {', '.join(map(str, input_shape))}) returned {got} "
            "(add global pooling and flatten, or pass another input_shape)"
        )
    module.representation_size = int(out.shape[1])
    return module


def parse_expander_spec(spec: str | Sequence[int]) -> list[int]:
    """``"a-b-c"`` or ``[a, b, c]`` -> ``[a, b, c]``, checked; ``"none"`` -> ``[]``."""
    if isinstance(spec, str) and spec.strip().lower() == "none":
        return []
    if isinstance(spec, str):
        parts = spec.split("-")
        if not all(p.strip().isdigit() for p in parts):
            raise ValueError(
                f"expander spec {spec!r} is not dash-separated positive ints, e.g. '8192-8192-8192'"
            )
        sizes = [int(p) for p in parts]
    else:
        sizes = list(spec)
        if not all(isinstance(s, int) for s in sizes):
            raise ValueError(f"expander spec must contain ints, got {spec!r}")
    if not sizes or min(sizes) < 1:
        raise ValueError(f"expander sizes must be positive ints, got {spec!r}")
    return sizes
