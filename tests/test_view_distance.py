"""view_distance_ratio: are two views of one subject closer than views of two subjects?"""

import pytest

from vicreg_lab.augment import BatchedAugment
from vicreg_lab.data import SyntheticCohort
from vicreg_lab.lab import view_distance_ratio

OFF = dict(p_intensity=0.0, p_blur=0.0, p_noise=0.0, flip_prob=0.0)


@pytest.fixture(scope="module")
def volumes():
    return SyntheticCohort(32, shape=(24, 24, 24), seed=0).generate(range(32))


def test_identical_views_have_zero_within_distance(volumes):
    result = view_distance_ratio(volumes, BatchedAugment(24, crop_scale=(1, 1), **OFF))
    assert result.within == pytest.approx(0.0, abs=1e-10) and result.ratio == float("inf")
    assert result.between == pytest.approx(result.raw_between, rel=1e-4)


def test_stronger_crops_lower_the_ratio(volumes):
    ratios = [
        view_distance_ratio(volumes, BatchedAugment(24, crop_scale=(low, 1.0)), seed=1).ratio
        for low in (0.3, 0.7, 1.0)
    ]
    assert ratios[0] < ratios[1] < ratios[2]


def test_views_of_one_subject_beat_subjects_with_the_default_views(volumes):
    result = view_distance_ratio(volumes)  # BatchedAugment's defaults
    assert result.ratio > 1.3 and result.n_subjects == 32


def test_same_seed_same_result_and_bad_input(volumes):
    a = view_distance_ratio(volumes[:8], seed=3)
    assert a == view_distance_ratio(volumes[:8], seed=3)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        view_distance_ratio(volumes[:1])
