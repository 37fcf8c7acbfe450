"""Tests of vicreg_lab.losses: exactness of both covariance forms, semantics, input checks."""

import math

import pytest
import torch

from vicreg_lab import covariance_kernels
from vicreg_lab.losses import VICRegLoss, _loss_terms, vicreg_loss

KEYS = ("loss", "invariance", "variance", "covariance")


# ----------------------------------------------------------------------------- reference


def _naive_vicreg(z1, z2, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0, gamma=1.0, eps=1e-4):
    """The VICReg loss written as plainly as possible, in float64, with torch.cov."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    invariance = ((z1 - z2) ** 2).sum() / (n * d)
    off_diagonal = ~torch.eye(d, dtype=torch.bool)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        cov = torch.cov(z.T, correction=1).reshape(d, d)  # D x D, unbiased
        std = torch.sqrt(torch.var(z, dim=0, correction=1) + eps)
        variance = variance + torch.clamp(gamma - std, min=0).mean() / 2
        covariance = covariance + (cov[off_diagonal] ** 2).sum() / d
    loss = inv_coeff * invariance + var_coeff * variance + cov_coeff * covariance
    return dict(zip(KEYS, (loss, invariance, variance, covariance), strict=True))


def _ours(z1, z2, method):
    if method == "auto":
        return vicreg_loss(z1, z2)
    terms = _loss_terms(z1, z2, gamma=1.0, eps=1e-4, cov_form=method)
    loss = 25.0 * terms[0] + 25.0 * terms[1] + 1.0 * terms[2]
    return dict(zip(KEYS, (loss, *terms), strict=True))


def _embeddings(kind, n, d, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        z1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
        z2 = z1 + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    elif kind == "collapsed":  # one point per view, plus a tiny noise: std ~ 1e-6
        # Integer centre, noise on a 2**-30 grid and N a power of two: the float64
        # reference then centres exactly. Otherwise its own rounding of the mean
        # (eps * |mean| / std ~ 1e-10 relative) is what the test would measure.
        centre = torch.randint(-3, 4, (1, d), generator=gen).double()
        noise = 1e-6 * torch.randn(2, n, d, generator=gen, dtype=torch.float64)
        noise = torch.round(noise * 2**30) / 2**30
        z1, z2 = centre + noise[0], centre + noise[1]
    elif kind == "offset":  # healthy spread on top of a large mean
        z1 = 1e3 + torch.randn(n, d, generator=gen, dtype=torch.float64)
        z2 = 1e3 + torch.randn(n, d, generator=gen, dtype=torch.float64)
    else:
        raise AssertionError(kind)
    return z1.to(dtype), z2.to(dtype)


def _assert_rel_close(actual, expected, rtol, what):
    """max |actual - expected| <= rtol * max |expected| (scalar or tensor)."""
    actual, expected = actual.double(), expected.double()
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * scale, f"{what}: error {err:.3e} > {rtol:.0e} * {scale:.3e}"


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("method", ["auto", "gram", "dxd"])
@pytest.mark.parametrize("kind", ["gaussian", "collapsed", "offset"])
@pytest.mark.parametrize("shape", [(8, 40), (64, 12), (16, 16)], ids=["N<D", "N>D", "N=D"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_naive_reference_values_and_gradients(method, kind, shape, dtype, rtol):
    z1, z2 = _embeddings(kind, *shape, dtype)
    ours_in = [z.clone().requires_grad_(True) for z in (z1, z2)]
    ref_in = [z.clone().double().requires_grad_(True) for z in (z1, z2)]
    ours = _ours(*ours_in, method)
    ref = _naive_vicreg(*ref_in)
    for key in KEYS:
        assert ours[key].dtype == dtype
        _assert_rel_close(ours[key], ref[key], rtol, f"{method} {key}")
        got = torch.autograd.grad(ours[key], ours_in, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(ref[key], ref_in, retain_graph=True, allow_unused=True)
        for name, g, w in zip(("z1", "z2"), got, want, strict=True):
            g = torch.zeros_like(ours_in[0]) if g is None else g
            w = torch.zeros_like(ref_in[0]) if w is None else w
            _assert_rel_close(g, w, rtol, f"{method} d{key}/d{name}")


def test_collapsed_batch_has_a_large_variance_term():
    z1, z2 = _embeddings("collapsed", 32, 64, torch.float32)
    out = vicreg_loss(z1, z2)
    # std = sqrt(1e-12 + eps) ~ 0.01, so each hinge is ~ 0.99
    assert out["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-3)
    assert out["covariance"].item() < 1e-18


@pytest.mark.parametrize(
    "shape,forbidden", [((8, 32), "offdiag_sq_sum_dxd"), ((32, 8), "offdiag_sq_sum_gram")]
)
def test_auto_form_never_builds_the_more_expensive_matrix(monkeypatch, shape, forbidden):
    def _forbidden(*args, **kwargs):
        raise AssertionError(f"{forbidden} must not be called for shape {shape}")

    monkeypatch.setattr(covariance_kernels, forbidden, _forbidden)
    out = vicreg_loss(torch.randn(*shape), torch.randn(*shape))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(20, 30), (30, 20), (128, 2048)], ids=["N<D", "N>D", "4M"])
def test_both_helpers_equal_the_plain_dxd_formula_on_random_embeddings(shape, dtype, rtol):
    # 4M: 2048^2 squares to add up; a float32 BLAS dot product of C with itself is off
    # by ~6e-5 there
    z = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z = z - z.mean(dim=0)
    cov = z.T @ z / (shape[0] - 1)
    expected = (cov - torch.diag(cov.diagonal())).pow(2).sum().item()  # float64, masked
    for helper in (covariance_kernels.offdiag_sq_sum_gram, covariance_kernels.offdiag_sq_sum_dxd):
        got = helper(z.to(dtype))
        assert got.dtype == dtype
        assert got.item() == pytest.approx(expected, rel=rtol), helper.__name__


@pytest.mark.parametrize("block", [7, 1024])
def test_gram_form_value_and_gradient_by_column_blocks(monkeypatch, block):
    # the Gram form goes through float64 by blocks of columns, its gradient by hand
    monkeypatch.setattr(covariance_kernels, "_BLOCK", block)
    z = torch.randn(6, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    z = (z - z.mean(dim=0)).requires_grad_(True)
    value = covariance_kernels.offdiag_sq_sum_gram(z)
    (grad,) = torch.autograd.grad(value, z)
    reference = z.detach().clone().requires_grad_(True)
    expected = covariance_kernels.offdiag_sq_sum_dxd(reference)
    (expected_grad,) = torch.autograd.grad(expected, reference)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def _decorrelated(n, d, seed=0):
    """float32 (n, d), n >= d, centred columns, orthogonal to float64 precision: C = I."""
    a = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q, _ = torch.linalg.qr(a - a.mean(dim=0))  # orthonormal, and still orthogonal to 1
    return (math.sqrt(n - 1) * q).float()


def _covariance_reference(z):
    """Covariance term of one view in float64, from the masked D x D matrix."""
    z = z.double() - z.double().mean(dim=0)
    cov = z.T @ z / (z.shape[0] - 1)
    return (cov - torch.diag(cov.diagonal())).pow(2).sum().item() / z.shape[1]


@pytest.mark.parametrize("method", ["auto", "gram", "dxd"])
@pytest.mark.parametrize("shape", [(64, 16), (256, 64), (48, 48)])
def test_decorrelated_float32_embeddings_have_a_tiny_non_negative_covariance(method, shape):
    # C = I up to float32 rounding: the off-diagonal part is ~1e-15 of ||C||_F^2 = D.
    # Subtracting sum(var^2) from ||C||_F^2 in float32 leaves rounding noise ~1e-6 D,
    # often negative.
    z = _decorrelated(*shape)
    covariance = _ours(z, z, method)["covariance"].item() / 2  # one view
    reference = _covariance_reference(z)
    assert covariance >= 0.0
    assert abs(covariance - reference) <= 1e-12 * shape[1]  # scale: ||C||_F^2 / D = 1


@pytest.mark.parametrize("method", ["auto", "gram", "dxd"])
@pytest.mark.parametrize("shape", [(32, 64), (256, 1024), (96, 32), (2048, 1024)])
def test_one_dominant_dimension_keeps_an_accurate_covariance(method, shape):
    # A collapse along one axis: one dimension 1e4 times wider than the others. The
    # variances then carry almost all of ||C||_F^2, and a difference of the two loses
    # everything in float32 (errors of several times the value, of either sign).
    z = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z[:, 0] *= 1e4
    z = z.float()
    covariance = _ours(z, z, method)["covariance"].item() / 2
    assert covariance == pytest.approx(_covariance_reference(z), rel=1e-5)


# ----------------------------------------------------------------------------- known values


def test_identical_views_have_zero_invariance():
    z = torch.randn(16, 8)
    assert vicreg_loss(z, z.clone())["invariance"].item() == 0.0


def test_wide_spread_gives_zero_variance_term():
    # each column takes the values +-2, so its std is 2 * sqrt(N / (N - 1)) > gamma = 1
    signs = torch.tensor([1.0, -1.0]).repeat(8)
    z = 2 * torch.stack([signs, signs.roll(1), -signs, signs.roll(3)], dim=1)
    out = vicreg_loss(z, z.flip(0))
    assert out["variance"].item() == 0.0


def test_hand_computed_values():
    x = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    # two identical columns of 0.5 * x: Var = 0.25 * 4 / 3 = 1/3 and C = [[1/3, 1/3], [1/3, 1/3]]
    z = 0.5 * torch.stack([x, x], dim=1)
    out = vicreg_loss(z, z.clone())
    assert out["invariance"].item() == 0.0
    assert out["variance"].item() == pytest.approx(1 - math.sqrt(1 / 3 + 1e-4), rel=1e-12)
    # per view: 2 off-diagonal entries (1/3)^2, divided by D = 2; summed over the 2 views
    assert out["covariance"].item() == pytest.approx(2 * (2 / 9) / 2, rel=1e-12)
    # orthogonal centred columns have zero covariance
    z = torch.stack([x, torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)], dim=1)
    assert vicreg_loss(z, z)["covariance"].item() == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- weights, module


def test_components_are_unweighted():
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    default = vicreg_loss(z1, z2)
    other = vicreg_loss(z1, z2, inv_coeff=1.0, var_coeff=2.0, cov_coeff=3.0)
    for key in ("invariance", "variance", "covariance"):
        assert torch.equal(default[key], other[key])
    expected = other["invariance"] + 2 * other["variance"] + 3 * other["covariance"]
    assert other["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert other["loss"].item() != pytest.approx(default["loss"].item(), rel=1e-3)


def test_zero_weights():
    z1 = torch.randn(16, 32, requires_grad=True)
    z2 = torch.randn(16, 32)
    out = vicreg_loss(z1, z2, inv_coeff=0.0, var_coeff=0.0, cov_coeff=0.0)
    assert out["loss"].item() == 0.0
    assert out["invariance"].item() > 0  # the terms are still reported
    out["loss"].backward()
    assert torch.count_nonzero(z1.grad) == 0

    only_inv = vicreg_loss(z1, z2, var_coeff=0.0, cov_coeff=0.0)
    assert only_inv["loss"].item() == pytest.approx(25 * only_inv["invariance"].item())


def test_module_equals_functional():
    z1, z2 = torch.randn(12, 20), torch.randn(12, 20)
    kwargs = dict(inv_coeff=3.0, var_coeff=4.0, cov_coeff=0.5, gamma=2.0, eps=1e-3)
    module = VICRegLoss(**kwargs)
    functional = vicreg_loss(z1, z2, **kwargs)
    for key in KEYS:
        assert torch.equal(module(z1, z2)[key], functional[key])
    assert "gamma=2.0" in repr(module)


def test_gather_distributed_without_process_group_is_single_process():
    z1, z2 = torch.randn(12, 20), torch.randn(12, 20)
    local = vicreg_loss(z1, z2)
    gathered = vicreg_loss(z1, z2, gather_distributed=True)
    for key in KEYS:
        assert torch.equal(local[key], gathered[key])


# ----------------------------------------------------------------------------- dtypes


def test_autocast_bf16_computes_in_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 64)
    x1, x2 = torch.randn(32, 16), torch.randn(32, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = layer(x1), layer(x2)
        assert z1.dtype == torch.bfloat16
        out = vicreg_loss(z1, z2)
    expected = vicreg_loss(z1.float(), z2.float())
    for key in KEYS:
        assert out[key].dtype == torch.float32
        assert torch.equal(out[key], expected[key])
    out["loss"].backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_output_dtypes():
    z = torch.randn(8, 4)
    assert vicreg_loss(z.half(), z.half())["loss"].dtype == torch.float32
    assert vicreg_loss(z.double(), z.double())["loss"].dtype == torch.float64
    assert vicreg_loss(z.double(), z)["loss"].dtype == torch.float64


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "z1,z2,match",
    [
        (torch.randn(1, 8), torch.randn(1, 8), r"N >= 2.*\(1, 8\)"),
        (torch.randn(4, 8), torch.randn(4, 9), r"same shape.*\(4, 8\) and \(4, 9\)"),
        (torch.randn(4, 8, 2), torch.randn(4, 8, 2), r"z1 must be a float tensor.*\(4, 8, 2\)"),
        (torch.randn(4, 8), torch.randn(8), r"z2 must be a float tensor"),
        (torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8), r"z1 must be a float tensor.*int64"),
        ([[1.0, 2.0]], torch.randn(1, 2), r"z1 must be a float tensor.*list"),
    ],
)
def test_bad_shapes_raise(z1, z2, match):
    with pytest.raises(ValueError, match=match):
        vicreg_loss(z1, z2)


@pytest.mark.parametrize("name", ["z1", "z2"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_the_culprit(name, bad):
    z = {"z1": torch.randn(4, 8), "z2": torch.randn(4, 8)}
    z[name][2, 3] = bad
    with pytest.raises(ValueError, match=rf"{name} contains NaN or infinite"):
        vicreg_loss(z["z1"], z["z2"])
    with pytest.raises(ValueError, match=rf"{name} contains NaN or infinite"):
        VICRegLoss()(z["z1"], z["z2"])
    # the check can be switched off (it costs a device sync); the NaN then propagates
    out = vicreg_loss(z["z1"], z["z2"], check_finite=False)
    assert not torch.isfinite(out["loss"])


def test_unknown_covariance_form_raises():
    with pytest.raises(ValueError, match="cov_form must be"):
        _loss_terms(torch.randn(4, 3), torch.randn(4, 3), gamma=1.0, eps=1e-4, cov_form="svd")


def test_the_three_public_terms_are_the_losss_terms():
    from vicreg_lab.losses import covariance, invariance, variance

    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 32, generator=g, dtype=torch.float64)
    z2 = z1 + 0.1 * torch.randn(16, 32, generator=g, dtype=torch.float64)
    terms = vicreg_loss(z1, z2)
    assert torch.equal(terms["invariance"], invariance(z1, z2))
    assert torch.equal(terms["variance"], (variance(z1) + variance(z2)) / 2)
    assert torch.allclose(terms["covariance"], covariance(z1) + covariance(z2), rtol=1e-12)
    # a collapsed batch: every std is 0 -> the hinge is gamma - sqrt(eps); no covariance
    collapsed = torch.ones(8, 4, dtype=torch.float64)
    assert float(variance(collapsed, gamma=2.0)) == pytest.approx(2.0 - 1e-2)
    assert float(covariance(collapsed)) == 0.0
    assert float(invariance(z1, z1)) == 0.0
