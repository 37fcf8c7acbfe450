"""SyntheticCohort: known factors are measurable, site lives in the head, determinism, export."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vicreg_lab.data import Effects, NiftiFolder, SyntheticCohort
from vicreg_lab.data._templates import mni_templates

N = 128
SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def cohort():
    return SyntheticCohort(N, shape=SHAPE, seed=0)


@pytest.fixture(scope="module")
def tissues(cohort):
    return cohort.tissue_maps(range(N))


@pytest.fixture(scope="module")
def t1(cohort):
    return cohort.generate(range(N)).numpy()


def _volumes(maps, name):
    return maps[name].sum((1, 2, 3, 4)).numpy()


def test_grey_matter_fraction_falls_with_age(cohort, tissues):
    fraction = _volumes(tissues, "gm") / _volumes(tissues, "mask")
    r = stats.pearsonr(cohort.participants.age, fraction).statistic
    assert r < -0.8


def test_ventricles_grow_with_age(cohort, tissues):
    # CSF inside (a dilation of) the template's ventricles, mapped onto the cohort grid
    info = mni_templates()
    weight = info["ventricles"]
    world = np.argwhere(weight > 0.3) @ info["affine"][:3, :3].T + info["affine"][:3, 3]
    center = world.mean(0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    grid = ijk @ cohort.affine[:3, :3].T + cohort.affine[:3, 3]
    region = torch.as_tensor(np.all(np.abs(grid - center) < [25, 40, 20], axis=-1))
    ventricles = (tissues["csf"][:, 0] * region).sum((1, 2, 3)).numpy() * cohort.voxel_volume_ml
    age = cohort.participants.age.to_numpy()
    assert stats.spearmanr(age, ventricles).statistic > 0.7
    assert ventricles[age > 70].mean() > 1.5 * ventricles[age < 35].mean()


def test_males_have_larger_brains(cohort, tissues):
    brain = _volumes(tissues, "gm") + _volumes(tissues, "wm")
    sex = cohort.participants.sex.to_numpy()
    test = stats.ttest_ind(brain[sex == "M"], brain[sex == "F"], alternative="greater")
    assert test.pvalue < 1e-6
    assert 1.05 < brain[sex == "M"].mean() / brain[sex == "F"].mean() < 1.15  # about 9 %


def test_site_is_readable_from_the_head(cohort, tissues, t1):
    inside = tissues["mask"].numpy() > 0.5
    features = np.array([np.percentile(t1[i][inside[i]], [5, 25, 50, 75, 95]) for i in range(N)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(model, features, cohort.participants.site, cv=4).mean()
    assert accuracy > 0.7  # chance: 0.25


def test_background_is_noise_of_the_sites_level(cohort, t1):
    # Slabs at the edges of the field of view (x): empty of brain in every subject.
    background = np.concatenate([t1[:, 0, :3], t1[:, 0, -3:]], axis=1).reshape(N, -1)
    assert (background > 0).mean() > 0.99, "background must not be clamped to zero"
    # Rician noise on zero signal is Rayleigh: mean = sigma * sqrt(pi / 2), nothing more.
    expected = cohort.latents["scanner_noise"].to_numpy() * np.sqrt(np.pi / 2)
    np.testing.assert_allclose(background.mean(1), expected, rtol=0.06)


def test_gm_modality_is_a_probability_map(cohort):
    gm = cohort.generate(range(4), modality="gm")
    assert gm.dtype == torch.float32 and gm.shape == (4, 1, *SHAPE)
    assert gm.min() >= 0 and gm.max() <= 1 and gm.max() > 0.8
    # no noise: the background is exactly empty
    assert torch.all(gm[:, :, :2] == 0)


def test_tissue_maps_can_return_only_some_tissues(cohort, tissues):
    # chunks of 16 subjects at 32^3 are filled in place: 20 subjects cross a chunk boundary
    some = cohort.tissue_maps(range(20), tissues=("mask", "gm"))
    assert list(some) == ["mask", "gm"]
    assert torch.equal(some["gm"], tissues["gm"][:20])
    assert torch.equal(some["mask"], tissues["mask"][:20])
    with pytest.raises(ValueError, match=r"tissues must be some of .*'grey'"):
        cohort.tissue_maps(range(2), tissues=("grey",))


def test_same_seed_same_subjects_whatever_the_cohort_size():
    small = SyntheticCohort(10, shape=(24, 24, 24), seed=3)
    large = SyntheticCohort(200, shape=(24, 24, 24), seed=3, cache=False)
    assert torch.equal(small[7]["image"], large[7]["image"])
    assert small.participants.iloc[7].equals(large.participants.iloc[7])
    again = SyntheticCohort(10, shape=(24, 24, 24), seed=3)
    assert torch.equal(small.generate([0, 5]), again.generate([5, 0]).flip(0))
    other = SyntheticCohort(10, shape=(24, 24, 24), seed=4)
    assert not torch.equal(small[7]["image"], other[7]["image"])


def test_shapes_dtypes_and_affine():
    for shape in [(24, 24, 24), (20, 24, 18)]:
        cohort = SyntheticCohort(2, shape=shape)
        image = cohort[1]["image"]
        assert image.dtype == torch.float32 and image.shape == (1, *shape)
        voxel = np.abs(np.diag(cohort.affine)[:3])
        assert np.allclose(voxel, voxel[0]), "voxels are isotropic"
        # the field of view holds the brain (about 180 mm long) with a margin
        assert 180 < (voxel * shape).max() < 240
        center = cohort.affine @ np.r_[(np.array(shape) - 1) / 2, 1]
        assert np.linalg.norm(center[:3]) < 25  # near the MNI origin
    native = SyntheticCohort(1, shape="native")
    assert native[0]["image"].shape == (1, 99, 117, 95)
    assert np.allclose(native.affine, mni_templates()["affine"])


def test_items_and_targets():
    cohort = SyntheticCohort(6, shape=(16, 16, 16), seed=1)
    item = cohort[2]
    assert set(item) == {"image", "participant_id", "age", "sex", "site", "index"}
    assert item["participant_id"] == "sub-0002" and item["index"] == 2
    assert 20 <= item["age"] <= 85 and item["sex"] in "FM" and item["site"].startswith("site-")
    image, age = SyntheticCohort(6, shape=(16, 16, 16), seed=1, target="age")[2]
    assert torch.equal(image, item["image"])
    assert age.dtype == torch.float32 and float(age) == pytest.approx(item["age"])
    _, labels = SyntheticCohort(6, shape=(16, 16, 16), seed=1, target=["sex", "site"])[2]
    assert labels == {"sex": item["sex"], "site": item["site"]}
    assert torch.equal(cohort[-4]["image"], item["image"])
    with pytest.raises(IndexError, match="out of range"):
        cohort[6]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="modality"):
        SyntheticCohort(2, modality="t2")
    with pytest.raises(ValueError, match="shape"):
        SyntheticCohort(2, shape=(32, 32))
    with pytest.raises(ValueError, match="'diagnosis'"):
        SyntheticCohort(2, target="diagnosis")
    with pytest.raises(ValueError, match="Effects.site_noise"):
        SyntheticCohort(2, effects={"site_noise": (0.05, 0.01)})
    with pytest.raises(ValueError, match="n_subjects"):
        SyntheticCohort(0)


def test_without_site_every_scanner_is_the_same():
    cohort = SyntheticCohort(12, shape=(16, 16, 16), effects=Effects.without_site())
    scanner = cohort.latents[[c for c in cohort.latents if c.startswith("scanner_")]]
    assert len(scanner.columns) == 6
    assert (scanner.nunique() == 1).all()
    assert cohort.participants.site.nunique() > 1  # the labels remain


def test_effects_change_only_what_they_control():
    base = SyntheticCohort(8, shape=(16, 16, 16), seed=2)
    young = SyntheticCohort(8, shape=(16, 16, 16), seed=2, effects={"atrophy": 0.0})
    assert base.participants.equals(young.participants)
    gm_base = base.tissue_maps(range(8))["gm"].sum((1, 2, 3, 4))
    gm_young = young.tissue_maps(range(8))["gm"].sum((1, 2, 3, 4))
    assert torch.all(gm_young >= gm_base)


def test_to_bids_round_trip(tmp_path):
    cohort = SyntheticCohort(5, shape=(20, 24, 20), seed=5)
    root = cohort.to_bids(tmp_path / "bids")
    assert not list(root.rglob(".*")), "no temporary file is left behind"
    folder = NiftiFolder(root, shape=None)
    assert folder.participants.equals(cohort.participants)
    for i in range(5):
        item = folder[i]
        assert item["participant_id"] == cohort.participants.participant_id[i]
        torch.testing.assert_close(item["image"], cohort[i]["image"], rtol=0, atol=1e-6)
        assert np.allclose(folder.get_affine(i), cohort.affine)
    cohort.to_bids(root, modality="gm")
    gm = NiftiFolder(root, shape=None, pattern="sub-*/anat/sub-*_label-GM_probseg.nii*")
    torch.testing.assert_close(gm[3]["image"], cohort.generate([3], "gm")[0])


def test_figures_come_back():
    from matplotlib.figure import Figure

    from vicreg_lab.lab.plots import plot_cohort_grid, plot_factors, plot_subject

    cohort = SyntheticCohort(16, shape=(24, 24, 24), seed=0)
    fig = plot_subject(cohort[0]["image"], cohort.affine, title="sub-0000")
    assert isinstance(fig, Figure) and fig.axes
    by_age = plot_cohort_grid(cohort, by="age", n=4)
    titles = [ax.get_title() for ax in by_age.axes[:4]]
    ages = [float(t.split()[0]) for t in titles]
    assert ages == sorted(ages) and len(by_age.axes) == 8  # axial row + coronal row
    by_site = plot_cohort_grid(cohort, by="site", n=2)
    assert len(by_site.axes) == 2 * cohort.participants.site.nunique()
    assert len(plot_factors(cohort).axes) == 3
    with pytest.raises(ValueError, match="by must be"):
        plot_cohort_grid(cohort, by="sex")
    with pytest.raises(ValueError, match="affine must be 4x4"):
        plot_subject(cohort[0]["image"], np.eye(3))


def test_each_parcel_loses_its_own_grey_matter(cohort, tissues):
    """A parcel's grey matter follows its own latent, beyond what age explains."""
    from vicreg_lab.data._templates import parcel_labels

    info = mni_templates()
    age = cohort.participants.age.to_numpy()
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    world = ijk @ cohort.affine[:3, :3].T + cohort.affine[:3, 3]
    to_voxel = np.linalg.inv(info["affine"])
    voxel = np.rint(world @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(int)
    voxel = np.clip(voxel, 0, np.array(info["parcels"].shape) - 1)
    labels = info["parcels"].numpy()[voxel[..., 0], voxel[..., 1], voxel[..., 2]]
    partial = []
    for k, name in enumerate(parcel_labels()):
        gm = (tissues["gm"][:, 0].numpy() * (labels == k)).sum((1, 2, 3))
        latent = cohort.latents[f"gm_loss_{name}"].to_numpy()
        # residuals after age: the subject's own loss in that parcel
        res_gm = gm - np.polyval(np.polyfit(age, gm, 1), age)
        res_latent = latent - np.polyval(np.polyfit(age, latent, 1), age)
        partial.append(stats.pearsonr(res_gm, res_latent).statistic)
    assert max(partial) < 0 and np.median(partial) < -0.1, partial  # more loss, less GM
    weights = cohort.latents[[f"gm_loss_{n}" for n in parcel_labels()]].corrwith(
        cohort.participants.age
    )
    assert weights.max() - weights.min() > 0.2  # ageing hits parcels unequally


def test_latents_hold_independent_anatomical_factors(cohort):
    latents = cohort.latents
    assert set(SyntheticCohort.anatomical_latents()) <= set(latents.columns)
    age = cohort.participants.age
    assert abs(stats.pearsonr(latents.ventricle_asymmetry, age).statistic) < 0.3
    assert 0.3 < stats.pearsonr(latents.ventricle_size, age).statistic < 0.9
    assert stats.spearmanr(latents.lesion_count, age).statistic > 0.4
    young, old = age < 40, age > 70
    assert latents.lesion_load[old].mean() > 3 * latents.lesion_load[young].mean()


def test_lesions_darken_white_matter():
    base = SyntheticCohort(6, shape=(32, 32, 32), seed=0, effects={"site_noise": (0.0, 0.0)})
    none = SyntheticCohort(
        6, shape=(32, 32, 32), seed=0, effects={"site_noise": (0.0, 0.0), "lesion_rate": (0, 0)}
    )
    diff = (none.generate(range(6)) - base.generate(range(6))).sum((1, 2, 3, 4)).numpy()
    count = base.latents.lesion_count.to_numpy()
    assert np.all(diff[count == 0] == 0)
    assert np.all(diff[count > 0] > 0)  # lesions only ever darken


def test_ventricles_are_asymmetric_as_drawn():
    shape = (48, 48, 48)
    drawn = SyntheticCohort(4, shape=shape, seed=0)
    symmetric = SyntheticCohort(4, shape=shape, seed=0, effects={"ventricle_asymmetry": 0.0})
    assert (symmetric.latents.ventricle_asymmetry == 0).all()
    x = drawn.affine[0, 0] * np.arange(48) + drawn.affine[0, 3]  # MNI x of axis 0

    def right_minus_left(cohort):
        csf = cohort.tissue_maps(range(4), tissues=("csf",))["csf"][:, 0, :, 12:36, 16:32]
        csf = csf.numpy()
        return csf[:, x > 0].sum((1, 2, 3)) - csf[:, x < 0].sum((1, 2, 3))

    change = right_minus_left(drawn) - right_minus_left(symmetric)
    asymmetry = drawn.latents.ventricle_asymmetry.to_numpy()  # right minus left shift
    big = np.abs(asymmetry) > 0.3
    assert big.any() and np.all(np.sign(change[big]) == np.sign(asymmetry[big]))


def test_held_out_subjects_are_new_people_on_the_same_scanners():
    train = SyntheticCohort(8, shape=(16, 16, 16), seed=4)
    test = train.held_out(4)
    everyone = SyntheticCohort(12, shape=(16, 16, 16), seed=4)
    assert test.sites.equals(train.sites)
    assert test.participants.participant_id.tolist() == [f"sub-{i:04d}" for i in range(8, 12)]
    assert test.participants.equals(everyone.participants.iloc[8:].reset_index(drop=True))
    assert torch.equal(test.generate([1]), everyone.generate([9]))


def test_site_age_confound_moves_ages_by_site():
    free = SyntheticCohort(200, shape=(16, 16, 16), seed=0)
    confounded = SyntheticCohort(200, shape=(16, 16, 16), seed=0, site_age_confound=1.0)
    assert confounded.participants.site.equals(free.participants.site)
    mean_age = confounded.participants.groupby("site").age.mean()
    assert mean_age.is_monotonic_increasing and mean_age.iloc[-1] - mean_age.iloc[0] > 30
    spread = free.participants.groupby("site").age.mean()
    assert spread.max() - spread.min() < 15
    with pytest.raises(ValueError, match="site_age_confound"):
        SyntheticCohort(2, site_age_confound=1.5)


def test_parcel_centres_come_from_kmeans_of_grey_matter():
    from vicreg_lab.data._templates import PARCEL_CENTRES_MM, derive_parcel_centres

    np.testing.assert_allclose(derive_parcel_centres(), PARCEL_CENTRES_MM, atol=1.0)


def test_clear_cache_frees_the_volumes_and_renders_them_again_identical():
    small = SyntheticCohort(20, shape=(16, 16, 16), seed=5)
    first = small.generate(range(20))
    assert len(small._volumes) == 20
    small.clear_cache()
    assert len(small._volumes) == 0
    torch.testing.assert_close(small[3]["image"], first[3])
    assert 0 < len(small._volumes) <= 16  # the chunk of subject 3 only
