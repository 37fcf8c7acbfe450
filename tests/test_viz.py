"""plot_augmentation_gallery: each augmentation alone, on a real brain, through real TorchIO."""

import numpy as np
import pytest
import torch
from conftest import mni_brain

from vicreg_lab import SimCLRTransform
from vicreg_lab.lab.plots import _NO_AUGMENTATION, GALLERY, plot_augmentation_gallery


@pytest.fixture(scope="module")
def brain():
    return mni_brain((15, 17, 15))  # odd sides: a flip maps the middle slice onto itself


def _images(fig):
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes]


@pytest.fixture(scope="module")
def gallery(brain):
    return plot_augmentation_gallery(brain, seed=0)


def test_gallery_has_the_original_then_one_column_per_augmentation(gallery):
    assert [ax.get_title() for ax in gallery.axes] == ["original", *GALLERY]
    assert all(ax.images[0].get_clim() == (0.0, 1.0) for ax in gallery.axes)


def test_original_column_is_the_rescaled_volume(brain, gallery):
    volume = brain[0].numpy()
    rescaled = (volume - volume.min()) / (volume.max() - volume.min())
    assert np.allclose(_images(gallery)[0], rescaled[:, :, 7].T, atol=1e-6)


def test_every_augmentation_changes_the_view(gallery):
    original, *augmented = _images(gallery)
    for title, image in zip(GALLERY, augmented, strict=True):
        if title == "flip":  # left-right: the MNI template is nearly symmetric (next test)
            continue
        assert np.abs(image - original).max() > 0.02, title


def test_flip_column_is_the_original_flipped_left_right(gallery):
    images = dict(zip(["original", *GALLERY], _images(gallery), strict=True))
    # the axial slice is drawn transposed: its second image axis is axis 0 (left-right)
    assert np.allclose(images["flip"], images["original"][:, ::-1], atol=1e-5)


def test_gamma_darkens_and_noise_keeps_the_mean(gallery):
    images = dict(zip(["original", *GALLERY], _images(gallery), strict=True))
    assert images["gamma"].mean() < images["original"].mean() - 0.05  # gamma = e^0.7 > 1
    assert abs(images["noise"].mean() - images["original"].mean()) < 0.03


def test_custom_augmentations_size_and_axis(brain):
    fig = plot_augmentation_gallery(brain, {"blur": {"blur_sigma": 2.0}}, input_size=12, axis=0)
    original, blur = _images(fig)
    assert original.shape == blur.shape == (12, 12)
    assert np.allclose(original, blur)  # p_blur stays 0: named knobs only are switched on


def test_gallery_is_repeatable_and_uses_the_seed(brain):
    knobs = {"crop": {"crop_scale": (0.3, 0.5)}}
    first = _images(plot_augmentation_gallery(brain, knobs, seed=3))
    again = _images(plot_augmentation_gallery(brain, knobs, seed=3))
    other = _images(plot_augmentation_gallery(brain, knobs, seed=4))
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_gallery_matches_a_simclr_transform_with_the_same_knobs(brain):
    fig = plot_augmentation_gallery(brain, {"noise": GALLERY["noise"]}, seed=5)
    transform = SimCLRTransform(input_size=brain.shape[1:], seed=5,
                                **{**_NO_AUGMENTATION, **GALLERY["noise"]})  # fmt: skip
    expected = transform(brain)[0].numpy()[:, :, 7].T
    assert np.allclose(_images(fig)[1], expected)


def test_gallery_refuses_bad_input(brain):
    with pytest.raises(ValueError, match="'warp'.*unknown knob.*'strength'"):
        plot_augmentation_gallery(brain, {"warp": {"strength": 1.0}})
    with pytest.raises(ValueError, match="'noise'.*noise_std must lie in"):
        plot_augmentation_gallery(brain, {"noise": {"noise_std": 5.0}})
    with pytest.raises(ValueError, match="'blur' must be a dict"):
        plot_augmentation_gallery(brain, {"blur": 1.0})
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        plot_augmentation_gallery(brain, axis=3)
    with pytest.raises(ValueError, match=r"\(D, H, W\) or \(1, D, H, W\)"):
        plot_augmentation_gallery(torch.zeros(2, 8, 8, 8))


def test_cohort_grid_shows_each_subjects_own_slice(tmp_path):
    from vicreg_lab.data import NiftiFolder, SyntheticCohort
    from vicreg_lab.lab.plots import _section, plot_cohort_grid

    cohort = SyntheticCohort(12, shape=(20, 24, 20), seed=1)
    table = cohort.participants
    picks = [g.sort_values("age").index[:2] for _, g in table.groupby("site", sort=True)]
    folder = NiftiFolder(cohort.to_bids(tmp_path, indices=range(12)), shape=None)
    for dataset in (cohort, folder):  # generated in one batch / read file by file
        fig = plot_cohort_grid(dataset, by="site", n=2)
        shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
        expected = [
            _section(cohort.generate([int(i)])[0, 0].numpy(), cohort.affine, "axial").T
            for idx in picks
            for i in idx
        ]
        assert len(shown) == len(expected)
        for got, want in zip(shown, expected, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_plot_factors_measures_every_subject_across_chunks():
    from vicreg_lab.data import SyntheticCohort
    from vicreg_lab.lab.plots import plot_factors

    cohort = SyntheticCohort(20, shape=(16, 20, 16), seed=2)  # 20 subjects: chunks of 16 and 4
    fig = plot_factors(cohort, n=20)
    maps = cohort.tissue_maps(range(20))
    gm = maps["gm"].sum((1, 2, 3, 4)).numpy() * cohort.voxel_volume_ml
    icv = maps["mask"].sum((1, 2, 3, 4)).numpy() * cohort.voxel_volume_ml
    table = cohort.participants
    for sex, volume_points, fraction_points in zip(
        ("F", "M"), fig.axes[0].collections, fig.axes[1].collections, strict=True
    ):
        chosen = (table["sex"] == sex).to_numpy()
        np.testing.assert_allclose(volume_points.get_offsets()[:, 0], table["age"][chosen])
        np.testing.assert_allclose(volume_points.get_offsets()[:, 1], gm[chosen], rtol=1e-5)
        np.testing.assert_allclose(
            fraction_points.get_offsets()[:, 1], 100 * gm[chosen] / icv[chosen], rtol=1e-5
        )
    assert len(fig.axes[2].patches) == table["site"].nunique()  # one histogram per site


def test_umap_panels_one_per_factor_quietly_and_reproducibly():
    import warnings

    import pandas as pd

    from vicreg_lab.lab.plots import plot_umap

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 40)
    z = rng.normal(size=(80, 8)) + 6.0 * groups[:, None]  # two well-separated clusters
    factors = pd.DataFrame({"age": rng.uniform(20, 80, 80), "site": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. umap's n_jobs warning
        fig = plot_umap(z, factors, columns=("age", "site"), seed=0)
        again = plot_umap(z, factors, columns=("age", "site"), seed=0)
    panels = [ax for ax in fig.axes if ax.collections and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["UMAP coloured by age", "UMAP coloured by site"]
    xy = panels[0].collections[0].get_offsets()
    np.testing.assert_allclose(xy, again.axes[0].collections[0].get_offsets())
    centres = [np.asarray(xy)[groups == g].mean(0) for g in (0, 1)]
    spread = np.asarray(xy)[groups == 0].std(0).max()
    assert np.linalg.norm(centres[0] - centres[1]) > 2 * spread  # the clusters stay apart
    with pytest.raises(ValueError, match="80 embeddings but 3 rows"):
        plot_umap(z, factors.head(3))


# ------------------------------------------------------------ notebooks 07 and 08's figures


def test_age_by_site_puts_each_subject_at_its_site_and_age():
    import pandas as pd

    from vicreg_lab.lab import plot_age_by_site

    table = pd.DataFrame({"site": ["site-B", "site-A", "site-B"], "age": [70.0, 20.0, 60.0]})
    ax = plot_age_by_site(table).axes[0]
    xy = ax.collections[0].get_offsets()
    assert np.allclose(xy[:, 1], table["age"])
    assert np.allclose(np.round(xy[:, 0]), [1, 0, 1])  # site-A at 0, site-B at 1 (jittered)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["site-A", "site-B"]
    assert np.isclose(ax.lines[0].get_ydata()[0], 50.0)  # the mean age


def test_probe_errors_one_bar_per_embedding_and_protocol_with_its_chance():
    import pandas as pd

    from vicreg_lab.lab import plot_probe_errors

    rows = [
        ("VICReg", "shuffled folds", 5.0, 15.0),
        ("VICReg", "leave one site out", 9.0, 20.0),
        ("raw", "shuffled folds", 6.0, 15.0),
        ("raw", "leave one site out", 12.0, 20.0),
    ]
    table = pd.DataFrame(rows, columns=["embedding", "protocol", "value", "chance"])
    table = pd.concat([table.assign(metric="mae"), table.assign(metric="r2", value=0.5)])
    ax = plot_probe_errors(table).axes[0]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == [5.0, 6.0, 9.0, 12.0]  # the MAE rows only, not the R^2 ones
    chance = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    assert sorted(chance) == [15.0, 15.0, 20.0, 20.0]
    with pytest.raises(ValueError, match="mae"):
        plot_probe_errors(table[table["metric"] == "r2"])


def test_rankme_against_probe_labels_every_row():
    import pandas as pd

    from vicreg_lab.lab import plot_rankme_against_probe

    table = pd.DataFrame({"arm": ["a", "b", "c"], "rankme": [10, 100, 50], "age_r2": [0.4, 0, 0.2]})
    ax = plot_rankme_against_probe(table, rankme="rankme").axes[0]
    assert np.allclose(ax.collections[0].get_offsets(), table[["rankme", "age_r2"]].to_numpy())
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]
