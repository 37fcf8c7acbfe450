"""SimCLRTransform (TorchIO), TwoViewsCollate and the shared AugmentParams."""

import pickle

import pytest
import torch
import torchio as tio
from torch.utils.data import DataLoader

from vicreg_lab.augment import AugmentParams, BatchedAugment
from vicreg_lab.data.collate import TwoViewsCollate
from vicreg_lab.data.torchio_views import RandomResizedCrop, SimCLRTransform

OFF = dict(p_blur=0.0, p_noise=0.0, p_intensity=0.0)  # geometry only


def test_view_has_input_size_and_float32_for_every_input_type(brain):
    transform = SimCLRTransform(input_size=(1, 16, 20, 24), seed=0)
    inputs = [
        brain,
        brain.double(),
        brain.numpy(),
        tio.ScalarImage(tensor=brain),
        tio.Subject(image=tio.ScalarImage(tensor=brain), mask=tio.LabelMap(tensor=brain > 0.5)),
        tio.Subject(t1=tio.ScalarImage(tensor=brain)),
    ]
    for x in inputs:
        view = transform(x)
        assert isinstance(view, torch.Tensor)
        assert view.shape == (1, 16, 20, 24) and view.dtype == torch.float32
        assert torch.isfinite(view).all()


def test_input_is_left_unchanged(brain):
    x = brain.clone()
    SimCLRTransform(32, noise_std=0.1, p_noise=1, p_intensity=1, p_blur=1)(x)
    assert torch.equal(x, brain)
    batch = brain[None].repeat(2, 1, 1, 1, 1)
    BatchedAugment(32, noise_std=0.1, p_noise=1, p_intensity=1, p_blur=1)(batch)
    assert torch.equal(batch[1], brain)


def test_pipeline_is_made_of_torchio_transforms():
    def kinds(transform):
        found = []
        for step in transform.pipeline.transforms:
            inner = step.transforms if isinstance(step, tio.Compose) else [step]
            found += [type(t) for t in inner]
        return found

    found = kinds(SimCLRTransform(rotation_degrees=10))
    expected = [tio.RescaleIntensity, RandomResizedCrop, tio.RandomFlip, tio.RandomAffine]
    expected += [tio.RandomGamma, tio.RandomBiasField, tio.RandomBlur, tio.RandomNoise]
    assert found == expected
    assert tio.RandomAffine not in kinds(SimCLRTransform())  # no rotation by default


def test_full_crop_without_other_ops_only_rescales(brain):
    view = SimCLRTransform(32, crop_scale=(1, 1), flip_prob=0, **OFF)(brain)
    expected = (brain - brain.min()) / (brain.max() - brain.min())
    torch.testing.assert_close(view, expected, atol=1e-6, rtol=0)
    flipped = SimCLRTransform(32, crop_scale=(1, 1), flip_prob=1, **OFF)(brain)
    torch.testing.assert_close(flipped, expected.flip(1), atol=1e-6, rtol=0)  # left-right only
    every = SimCLRTransform(32, crop_scale=(1, 1), flip_prob=1, flip_axes=(0, 1, 2), **OFF)
    torch.testing.assert_close(every(brain), expected.flip(1, 2, 3), atol=1e-6, rtol=0)
    never = SimCLRTransform(32, crop_scale=(1, 1), flip_prob=1, flip_axes=(), **OFF)
    torch.testing.assert_close(never(brain), expected, atol=1e-6, rtol=0)


def test_resized_crop_takes_the_requested_volume_fraction():
    n = 32
    ramp = torch.arange(n, dtype=torch.float32).view(1, n, 1, 1).expand(1, n, n, n)
    crop = RandomResizedCrop((n, n, n), (0.125, 0.125))  # half of each side: 16 voxels
    for _ in range(5):
        out = crop(ramp)
        assert out.shape == (1, n, n, n)
        assert out.max() - out.min() == pytest.approx(15.0, abs=1e-4)  # 16 source voxels


def test_each_strength_knob_changes_the_view(brain):
    base = dict(input_size=16, crop_scale=(1, 1), flip_prob=0, **OFF, seed=0)
    reference = SimCLRTransform(**base)(brain)
    strong = {
        "crop_scale": (0.3, 0.3),
        "flip_prob": 1.0,
        "rotation_degrees": 30.0,
        "blur_sigma": (1.5, 2.0),
        "noise_std": (0.1, 0.1),
        "gamma": (0.5, 0.5),
        "bias_field": 0.8,
    }
    probability = {"blur_sigma": "p_blur", "noise_std": "p_noise", "gamma": "p_intensity"}
    probability["bias_field"] = "p_intensity"
    for knob, value in strong.items():
        kwargs = {**base, knob: value}
        if knob in probability:
            kwargs[probability[knob]] = 1.0
        if knob == "bias_field":
            kwargs["gamma"] = (0.0, 0.0)
        if knob == "flip_prob":  # a brain is nearly left-right symmetric: flip front-back
            kwargs["flip_axes"] = (1,)
        view = SimCLRTransform(**kwargs)(brain)
        assert (view - reference).abs().mean() > 1e-3, knob


def test_seeded_transforms_repeat_and_leave_the_global_rng_alone(brain):
    state = torch.get_rng_state()
    a = [SimCLRTransform(16, seed=3)(brain) for _ in range(2)]
    transform = SimCLRTransform(16, seed=3)
    first, second = transform(brain), transform(brain)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], first)
    assert not torch.equal(first, second)  # successive calls give new views
    assert not torch.equal(first, SimCLRTransform(16, seed=4)(brain))


def test_unseeded_transform_follows_torch_manual_seed(brain):
    transform = SimCLRTransform(16)
    torch.manual_seed(11)
    a = transform(brain)
    torch.manual_seed(11)
    assert torch.equal(a, transform(brain))


def test_setting_params_rebuilds_the_pipeline():
    transform = SimCLRTransform(16)
    transform.params = transform.params.replace(rotation_degrees=15, blur_sigma=2)
    affine = [t for t in transform.pipeline.transforms if isinstance(t, tio.RandomAffine)]
    blur = [t for t in transform.pipeline.transforms if isinstance(t, tio.RandomBlur)]
    assert len(affine) == 1 and affine[0].degrees == (-15, 15, -15, 15, -15, 15)
    assert blur[0].std_ranges == (0, 2, 0, 2, 0, 2)
    with pytest.raises(ValueError, match="flip_axes must be distinct spatial axes"):
        AugmentParams(flip_axes=(0, 3))
    with pytest.raises(ValueError, match="flip_axes"):
        AugmentParams(flip_axes=(1, 1))
    assert AugmentParams(flip_axes=[2, 0]).flip_axes == (0, 2)
    with pytest.raises(TypeError, match="AugmentParams"):
        transform.params = {"blur_sigma": 2}


def test_augment_params_parse_scalars_and_share_defaults():
    params = AugmentParams(blur_sigma=2, noise_std=0.1, gamma=-0.4)
    assert params.blur_sigma == (0.0, 2.0)
    assert params.noise_std == (0.0, 0.1)
    assert params.gamma == (-0.4, 0.4)
    assert SimCLRTransform().params == BatchedAugment().params == AugmentParams()
    with pytest.raises(TypeError, match="unexpected keyword"):
        params.replace(blur=1)
    with pytest.raises(TypeError, match="crop_scale must be a"):
        AugmentParams(crop_scale=0.5)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(32, 32, 32), ValueError, r"4-D tensor \(1, D, H, W\).*x\[None\]"),
        (torch.rand(1, 1, 32, 32, 32), ValueError, r"4-D tensor"),
        (torch.rand(2, 32, 32, 32), ValueError, "1 channel"),
        (torch.randint(0, 100, (1, 32, 32, 32)), TypeError, r"floating-point.*torch.int64"),
        (torch.rand(1, 3, 32, 32), ValueError, "more than 4x the source"),
        (
            tio.Subject(
                a=tio.ScalarImage(tensor=torch.rand(1, 8, 8, 8)),
                b=tio.ScalarImage(tensor=torch.rand(1, 8, 8, 8)),
            ),
            ValueError,
            "named 'image'",
        ),  # fmt: skip
    ],
)
def test_bad_volumes_are_refused(x, error, match):
    with pytest.raises(error, match=match):
        SimCLRTransform(16)(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_scale": (0.0, 0.5)}, r"crop_scale must lie in \(0, 1\]"),
        ({"crop_scale": (0.2, 1.5)}, r"crop_scale must lie in \[0.0, 1.0\], got 1.5"),
        ({"crop_scale": (0.9, 0.4)}, "low <= high"),
        ({"blur_sigma": -0.5}, r"blur_sigma must lie in \[0.0, 10.0\], got -0.5"),
        ({"noise_std": (-0.1, 0.1)}, "noise_std must lie in"),
        ({"p_blur": -0.1}, "p_blur must lie in"),
        ({"input_size": (1, 16, 16, 512)}, r"each side of input_size must lie in \[2, 256\]"),
        ({"input_size": (16, 16)}, r"input_size must be an int, \(D, H, W\)"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimCLRTransform(**kwargs)


def test_two_views_collate_handles_tensors_pairs_and_dicts(brain):
    collate = TwoViewsCollate(SimCLRTransform(16, seed=0))
    v1, v2, targets = collate([brain, brain, brain])
    assert v1.shape == v2.shape == (3, 1, 16, 16, 16) and targets is None
    assert not torch.equal(v1, v2)

    _, _, targets = collate([(brain, 1), (brain, 0)])
    assert torch.equal(targets, torch.tensor([1, 0]))

    items = [{"image": brain, "age": 30.5, "id": "a"}, {"image": brain, "age": 41.0, "id": "b"}]
    v1, _, targets = collate(items)
    assert v1.shape == (2, 1, 16, 16, 16)
    assert torch.equal(targets["age"], torch.tensor([30.5, 41.0], dtype=torch.float64))
    assert targets["id"] == ["a", "b"]


def test_two_views_collate_with_batched_augment(brain):
    v1, v2, targets = TwoViewsCollate(BatchedAugment(16, seed=0))([(brain, 1.0)] * 3)
    assert v1.shape == v2.shape == (3, 1, 16, 16, 16) and not torch.equal(v1, v2)
    assert torch.equal(targets, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        TwoViewsCollate(BatchedAugment(8))([brain, brain[:, :16]])


def test_two_views_collate_refuses_bad_items(brain):
    collate = TwoViewsCollate(SimCLRTransform(16))
    with pytest.raises(KeyError, match="item 1 is a dict without an 'image' key"):
        collate([{"image": brain}, {"volume": brain}])
    with pytest.raises(TypeError, match="item 0 must be a tensor"):
        collate(["brain.nii.gz"])
    with pytest.raises(ValueError, match="non-empty list"):
        collate([])
    with pytest.raises(TypeError, match="callable"):
        TwoViewsCollate("flip")


def test_two_views_collate_pickles_and_runs_in_workers(brain):
    collate = TwoViewsCollate(SimCLRTransform(16, seed=0))
    clone = pickle.loads(pickle.dumps(collate))
    assert torch.equal(clone([brain])[0], collate([brain])[0])

    loader = DataLoader([brain] * 4, batch_size=2, num_workers=2, collate_fn=collate)
    (a1, a2, _), (b1, _, _) = list(loader)
    assert a1.shape == (2, 1, 16, 16, 16) and not torch.equal(a1, a2)
    assert not torch.equal(a1, b1)  # each worker mixes its id into the seed
    (c1, _, _), _ = list(loader)
    assert torch.equal(a1, c1)  # and seeded loaders repeat
