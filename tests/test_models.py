"""Encoders (shapes, feature maps, user modules, channels_last, autocast) and the expander."""

import pytest
import torch
from torch import nn

from vicreg_lab.models import build_encoder, build_expander, count_parameters, list_encoders

# name -> (kwargs that keep the test fast, representation size, feature map side at 32^3)
ENCODERS = {
    "resnet10_3d": ({}, 512, 1),
    "resnet18_3d": ({"width": 0.25}, 128, 1),
    "resnet34_3d": ({"width": 0.25}, 128, 1),
    "small_cnn": ({}, 128, 2),
}


def test_list_encoders_matches_the_registry():
    assert list_encoders() == sorted(ENCODERS)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_shapes_and_representation_size(name):
    kwargs, size, side = ENCODERS[name]
    torch.manual_seed(0)
    encoder = build_encoder(name, **kwargs)
    assert encoder.representation_size == size
    x = torch.randn(2, 1, 32, 32, 32)
    features = encoder.forward_features(x)
    assert features.shape == (2, size, side, side, side)
    out = encoder(x)
    assert out.shape == (2, size)
    torch.testing.assert_close(out, features.mean(dim=(2, 3, 4)))


def test_resnet_width_multiplier_and_zero_init_residual():
    encoder = build_encoder("resnet18_3d", width=0.5)
    assert encoder.representation_size == 256
    assert encoder.stem[0].out_channels == 32
    assert torch.all(encoder.layer4[-1].bn2.weight == 0)
    assert torch.all(
        build_encoder("resnet10_3d", zero_init_residual=False).layer1[0].bn2.weight == 1
    )


def test_resnet_depths_differ():
    sizes = [count_parameters(build_encoder(n, width=0.25)) for n in ("resnet10_3d", "resnet18_3d")]
    assert sizes[0] < sizes[1] < count_parameters(build_encoder("resnet34_3d", width=0.25))


def test_small_cnn_feature_map_at_48():
    encoder = build_encoder("small_cnn", widths=(8, 16, 32, 64))
    assert encoder.representation_size == 64
    assert encoder.forward_features(torch.randn(2, 1, 48, 48, 48)).shape == (2, 64, 3, 3, 3)


def test_unknown_name_lists_available_encoders():
    with pytest.raises(ValueError, match="unknown encoder 'resnet50'") as info:
        build_encoder("resnet50")
    for name in ENCODERS:
        assert name in str(info.value)


def test_wrong_input_shape_is_a_clear_error():
    encoder = build_encoder("small_cnn")
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\), got \(1, 32, 32, 32\)"):
        encoder(torch.randn(1, 32, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 32, 32, 32\)"):
        encoder(torch.randn(2, 3, 32, 32, 32))


def test_in_channels():
    encoder = build_encoder("small_cnn", in_channels=2)
    assert encoder(torch.randn(2, 2, 32, 32, 32)).shape == (2, 128)


def test_user_module_with_representation_size_is_returned_without_a_forward():
    class Declared(nn.Module):
        representation_size = 7

        def forward(self, x):
            raise AssertionError("build_encoder must not call forward")

    module = Declared()
    assert build_encoder(module) is module


def test_user_module_size_is_inferred_by_a_dry_run_without_side_effects():
    module = nn.Sequential(
        nn.Conv3d(1, 6, 3), nn.BatchNorm3d(6), nn.AdaptiveAvgPool3d(1), nn.Flatten()
    )
    module.train()
    assert build_encoder(module) is module
    assert module.representation_size == 6
    assert module.training and module[1].training  # flags restored
    assert module[1].num_batches_tracked.item() == 0  # BatchNorm statistics untouched


def test_user_module_with_wrong_output_is_rejected():
    with pytest.raises(ValueError, match=r"\(B, F\).*returned \(2, 4, 30, 30, 30\)"):
        build_encoder(nn.Conv3d(1, 4, 3))
    with pytest.raises(TypeError, match="width"):
        build_encoder(nn.Flatten(), width=2)


@pytest.mark.parametrize("name", ["small_cnn", "resnet10_3d"])
def test_channels_last_3d_gives_the_same_output(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, **ENCODERS[name][0]).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    expected = encoder(x)
    x_cl = x.to(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(encoder(x_cl), expected, rtol=1e-4, atol=1e-4)
    encoder = encoder.to(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(encoder(x_cl), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["small_cnn", "resnet10_3d"])
def test_bfloat16_autocast_forward_and_backward_are_finite(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, **ENCODERS[name][0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(torch.randn(4, 1, 32, 32, 32))
    assert out.shape == (4, encoder.representation_size)
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_seeded_init_gives_identical_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return build_encoder("small_cnn").state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_expander_has_the_official_layout():
    expander = build_expander(20, "64-32-16")
    kinds = [type(m) for m in expander]
    linear, bn, relu = nn.Linear, nn.BatchNorm1d, nn.ReLU
    assert kinds == [linear, bn, relu, linear, bn, relu, linear]
    assert [(m.in_features, m.out_features) for m in expander if isinstance(m, linear)] == [
        (20, 64),
        (64, 32),
        (32, 16),
    ]
    assert [m.num_features for m in expander if isinstance(m, bn)] == [64, 32]
    assert expander[0].bias is not None and expander[3].bias is not None
    assert expander[-1].bias is None
    assert expander(torch.randn(5, 20)).shape == (5, 16)


def test_expander_with_one_size_is_a_single_linear_without_bias():
    expander = build_expander(8, "4")
    assert len(expander) == 1 and expander[0].bias is None
    assert build_expander(8, [16, 4])[-1].out_features == 4


@pytest.mark.parametrize("spec", ["", "8192-x", "0-10", "-5", "10--5", "10-", "1.5-3", "64 128"])
def test_bad_expander_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="spec|sizes"):
        build_expander(16, spec)


def test_bad_expander_in_features_is_rejected():
    with pytest.raises(ValueError, match="in_features"):
        build_expander(0, "8")


def test_count_parameters():
    layer = nn.Linear(10, 3)
    assert count_parameters(layer) == 33
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 30
    assert count_parameters(layer) == 33
