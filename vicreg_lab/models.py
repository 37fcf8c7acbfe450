"""3D encoders, ``(B, 1, D, H, W)`` -> ``(B, F)`` by global average pooling, and the expander.

Every built-in encoder (:func:`list_encoders`) has ``representation_size`` (``F``, an int),
``forward_features(x)`` (the last feature map ``(B, C, d, h, w)``, before pooling) and
``feature_grid = (stride, offset)``: feature-map cell ``j`` along any axis is centred on
input voxel ``offset + stride * j`` (VICRegL places its local features with it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from vicreg_lab.model_checks import check_user_encoder, parse_expander_spec

__all__ = [
    "build_encoder",
    "build_expander",
    "build_local_expander",
    "count_parameters",
    "list_encoders",
]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list:
    """Conv3d (no bias: the BatchNorm has one), BatchNorm3d, ReLU."""
    conv = nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False)
    return [conv, nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


class _Encoder3d(nn.Module):
    """Base: ``forward`` pools ``forward_features`` to ``(B, F)``; see the module docstring."""

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape (B, {self.in_channels}, D, H, W), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool3d(self.forward_features(x), 1), 1)

    def reset_parameters(self) -> None:
        """Fresh weights as the constructor draws them: Kaiming (fan_out) convs, unit BatchNorm."""
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class _BasicBlock3d(nn.Module):
    """Two 3^3 conv-BN layers plus a shortcut (1x1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm3d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet3d(_Encoder3d):
    """3D ResNet: stem (conv 7 stride 2, max pool), then four stages of ``blocks`` BasicBlocks.

    ``width`` scales the stage widths 64-128-256-512; ``zero_init_residual`` zeroes each
    block's last BatchNorm, so that each block starts as the identity (official VICReg).
    """

    def __init__(
        self,
        blocks: Sequence[int],
        in_channels: int = 1,
        width: float = 1.0,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive ints (one per stage), got {blocks}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.in_channels, self.representation_size = in_channels, widths[-1]
        self.stem = nn.Sequential(
            *_conv_bn_relu(in_channels, widths[0], 7, 2, 3), nn.MaxPool3d(3, 2, 1)
        )
        stages, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths, strict=True)):
            first = _BasicBlock3d(c_in, c_out, stride=1 if i == 0 else 2)
            rest = [_BasicBlock3d(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(first, *rest))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_grid = (32, 0.0)  # each strided layer centres output i on input 2 i
        self.zero_init_residual = zero_init_residual
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, _BasicBlock3d):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, representation_size, D/32, H/32, W/32)`` (rounded up)."""
        self._check_input(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


class SmallCNN(_Encoder3d):
    """A small, fast 3D CNN: a "patchify" stem (kernel 4, stride 4), three 3^3 conv-BN-ReLU.

    ``widths``: channels of the four convolutions. ``output_stride`` (16, 8 or 4): input voxels
    per feature-map cell; 8 and 4 give finer maps for VICRegL, with the same weights.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128),
        output_stride: int = 16,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive ints, got {widths}")
        strides = {16: (2, 2), 8: (2, 1), 4: (1, 1)}
        if output_stride not in strides:
            raise ValueError(f"output_stride must be 16, 8 or 4, got {output_stride!r}")
        c1, c2, c3, c4 = widths
        s3, s4 = strides[output_stride]
        self.in_channels, self.representation_size = in_channels, int(c4)
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, c1, 4, 4, 0),
            *_conv_bn_relu(c1, c2, 3, 1, 1),
            *_conv_bn_relu(c2, c3, 3, s3, 1),
            *_conv_bn_relu(c3, c4, 3, s4, 1),
        )
        self.feature_grid = (int(output_stride), 1.5)  # stem cell i: voxels 4 i .. 4 i + 3
        self.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``(B, widths[-1], ~D/s, ~H/s, ~W/s)``, ``s = output_stride``."""
        self._check_input(x)
        return self.features(x)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet10_3d": lambda **kw: ResNet3d((1, 1, 1, 1), **kw),
    "resnet18_3d": lambda **kw: ResNet3d((2, 2, 2, 2), **kw),
    "resnet34_3d": lambda **kw: ResNet3d((3, 4, 6, 3), **kw),
    "small_cnn": lambda **kw: SmallCNN(**kw),
}


def list_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(_REGISTRY)


def build_encoder(
    name_or_module: str | nn.Module,
    in_channels: int = 1,
    input_shape: Sequence[int] = (32, 32, 32),
    **kwargs,
) -> nn.Module:
    """Build an encoder by name (:func:`list_encoders`), or check and return a user module.

    A user module maps ``(B, C, D, H, W)`` to ``(B, F)``; without an int ``representation_size``,
    a dry run on zeros ``(2, in_channels, *input_shape)`` sets it. ``kwargs`` go to the named
    constructor: ``width``, ``zero_init_residual`` (ResNets); ``widths``, ``output_stride``.
    """
    if isinstance(name_or_module, nn.Module):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} only apply to named encoders")
        return check_user_encoder(name_or_module, in_channels, input_shape)
    if not isinstance(name_or_module, str) or name_or_module not in _REGISTRY:
        raise ValueError(
            f"unknown encoder {name_or_module!r}; expected one of {list_encoders()} or an nn.Module"
        )
    return _REGISTRY[name_or_module](in_channels=in_channels, **kwargs)


def _mlp(in_size: int, spec: str | Sequence[int], linear: Callable, norm: Callable):
    """``linear, norm, ReLU`` per hidden size, then a last ``linear`` without bias."""
    sizes = [in_size, *parse_expander_spec(spec)]
    if len(sizes) == 1:  # "none": the loss sees the representation itself
        return nn.Sequential()
    layers: list[nn.Module] = []
    for f_in, f_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [linear(f_in, f_out), norm(f_out), nn.ReLU(inplace=True)]
    layers.append(linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


def build_expander(in_features: int, spec: str | Sequence[int]) -> nn.Sequential:
    """The VICReg expander (official layout) on representations of size ``in_features``.

    ``spec="a-b-c"`` (or ``[a, b, c]``) gives ``Linear(F, a), BatchNorm1d, ReLU, Linear(a, b),
    BatchNorm1d, ReLU, Linear(b, c, bias=False)``; ``"none"``: the identity (paper's ablation).
    """
    if not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"in_features must be a positive int, got {in_features!r}")
    return _mlp(in_features, spec, nn.Linear, nn.BatchNorm1d)


def build_local_expander(in_channels: int, spec: str | Sequence[int]) -> nn.Sequential:
    """VICRegL's dense expander: :func:`build_expander` as 1x1x1 convolutions, on every cell."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    return _mlp(in_channels, spec, partial(nn.Conv3d, kernel_size=1), nn.BatchNorm3d)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
