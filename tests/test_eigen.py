"""Tests for cxrlab.callbacks.explanations.eigen: averages, uncentred class PCA, tables, argmax map, comparison."""

import time

import numpy as np
import pytest

from cxrlab.callbacks.explanations.eigen import (
    argmax_class_map,
    average_heatmaps,
    class_pca,
    compare,
    eigen_heatmaps,
    pearson,
    reconstruct,
)


def blob(size: int, cy: float, cx: float, width: float) -> np.ndarray:
    """A positive Gaussian blob template [size, size]."""
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))


def class_templates(size: int = 16) -> list[np.ndarray]:
    """Three classes with blobs in different places."""
    return [blob(size, 4, 4, 2.5), blob(size, 11, 11, 3.0), blob(size, 4, 12, 2.0)]


def scaled_set(template: np.ndarray, m: int, noise: float, seed: int = 0) -> np.ndarray:
    """m maps a_i * template + |noise| with random positive a_i."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, size=(m, 1, 1))
    return a * template + noise * np.abs(rng.standard_normal((m, *template.shape)))


def labelled_heatmaps(counts: list[int], size: int = 16, seed: int = 0):
    """Heatmaps [N, 3, size, size] whose map c follows class c's template, and labels [N]."""
    rng = np.random.default_rng(seed)
    temps = class_templates(size)
    labels = np.repeat(np.arange(len(counts)), counts)
    maps = np.stack([scaled_set(t, len(labels), 0.02, seed + c) for c, t in enumerate(temps)], 1)
    # an image's own-class map is twice as strong, like Grad-CAM of the true class
    maps[np.arange(len(labels)), labels] *= 2.0
    return maps + 0.01 * rng.random(maps.shape), labels


@pytest.mark.parametrize("size", [16, 4])  # 16x16: Gram of rows (M < D); 4x4: of columns
def test_pc1_recovers_template_and_matches_full_svd(size):
    template = blob(size, size / 3, size / 2, size / 4)
    maps = scaled_set(template, 40, 0.01)
    pca = class_pca(maps, var_threshold=0.999)
    assert pearson(pca.components[0], template) > 0.99
    s = np.linalg.svd(maps.reshape(40, -1), compute_uv=False)
    k = pca.n_components
    np.testing.assert_allclose(pca.explained_variance_ratio, (s**2 / (s**2).sum())[:k], rtol=1e-9)
    np.testing.assert_allclose(pca.singular_values, s[:k], rtol=1e-9)
    norms = np.linalg.norm(pca.components.reshape(k, -1), axis=1)
    np.testing.assert_allclose(norms, np.ones(k), rtol=1e-9)


def test_noiseless_rank_one_explains_everything():
    pca = class_pca(scaled_set(blob(16, 8, 8, 3), 25, noise=0.0))
    assert pca.n_components == 1
    assert pca.explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-12)


def test_rank_two_data_needs_exactly_two_components():
    rng = np.random.default_rng(1)
    t1, t2 = blob(16, 4, 4, 2), blob(16, 12, 12, 2)
    a, b = rng.uniform(0.5, 2, (30, 1, 1)), rng.uniform(0.5, 2, (30, 1, 1))
    pca = class_pca(a * t1 + b * t2, var_threshold=0.95)
    assert pca.n_components == 2
    cum = np.cumsum(pca.explained_variance_ratio)
    assert cum[0] < 0.95 <= cum[1]
    assert cum[1] == pytest.approx(1.0, abs=1e-12)
    assert class_pca(a * t1 + b * t2, max_components=1).n_components == 1


def test_components_correlate_positively_with_average():
    rng = np.random.default_rng(2)
    temps = np.stack(class_templates(16))
    maps = np.einsum("mk,khw->mhw", rng.uniform(0.2, 2, (30, 3)), temps)
    pca = class_pca(-maps + 3.0, var_threshold=1.0)  # offset keeps maps positive, PCs mixed
    average = maps.mean(0) * -1 + 3.0
    corrs = [pearson(c, average) for c in pca.components]
    assert pca.n_components == 4  # three templates plus the constant offset
    assert min(corrs) > 0


def test_average_heatmaps_by_hand():
    maps = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])[:, :, None, None] * np.ones((1, 1, 2, 2))
    maps = np.concatenate([maps, np.zeros((3, 1, 2, 2))], axis=1)  # a third, empty class
    avg = average_heatmaps(maps, np.array([0, 0, 1]), 3)
    assert avg.shape == (3, 3, 2, 2)
    np.testing.assert_allclose(avg[0, :, 0, 0], [2.0, 3.0, 0.0])
    np.testing.assert_allclose(avg[1, :, 0, 0], [5.0, 6.0, 0.0])
    assert np.isnan(avg[2]).all()


def test_argmax_map_uses_normalised_maps():
    diag = np.array([[[100, 60, 0, 0]], [[0, 0.7, 1, 0]], [[0, 0, 0.5, 2]]], dtype=float)
    np.testing.assert_array_equal(argmax_class_map(diag), [[0, 1, 1, 2]])
    diag[2] = np.nan  # an absent class never wins; all absent gives -1
    np.testing.assert_array_equal(argmax_class_map(diag), [[0, 1, 1, 0]])
    np.testing.assert_array_equal(argmax_class_map(np.full((2, 1, 2), np.nan)), [[-1, -1]])


def test_reconstruct_is_exact_inside_the_span():
    rng = np.random.default_rng(3)
    temps = np.stack(class_templates(16))
    maps = np.einsum("mk,khw->mhw", rng.uniform(0.2, 2, (20, 3)), temps)
    pca = class_pca(maps, var_threshold=1.0)
    assert pca.n_components == 3
    unseen = np.einsum("k,khw->hw", np.array([0.3, 1.7, 0.9]), temps)
    np.testing.assert_allclose(reconstruct(unseen, pca, 3), unseen, atol=1e-10)
    assert np.abs(reconstruct(unseen, pca, 1) - unseen).max() > 1e-3
    with pytest.raises(ValueError, match="k must be in 1..3"):
        reconstruct(unseen, pca, 4)


def test_eigen_heatmaps_tables_and_skipped_class():
    maps, labels = labelled_heatmaps([12, 10, 1])
    with pytest.warns(UserWarning, match="class 'pneumonia' has 1 image"):
        res = eigen_heatmaps(maps, labels, ["normal", "covid", "pneumonia"])
    table = res.variance_table
    assert list(table.columns) == ["class", "component", "explained_variance_ratio", "cumulative"]
    skipped = table[table["class"] == "pneumonia"]
    assert len(skipped) == 1 and skipped["explained_variance_ratio"].isna().all()
    normal = table[table["class"] == "normal"]
    assert normal["cumulative"].iloc[-1] >= 0.95 and normal["cumulative"].iloc[:-1].lt(0.95).all()
    assert res.pc1_var[0] == pytest.approx(res.pcas[0].explained_variance_ratio[0])
    assert np.isnan(res.pc1_var[2]) and res.pcas[2] is None
    corr = res.avg_pc1_corr.to_numpy()
    assert corr[0, 0] > 0.99 and corr[1, 1] > 0.99
    assert corr[0, 1] < 0.5 and np.isnan(corr[2]).all() and not np.isnan(corr[0, 2])
    np.testing.assert_array_equal(res.counts, [12, 10, 1])
    np.testing.assert_allclose(res.box_values["covid"], res.averages[1, 1].ravel())
    # the blob centres of each class win the four-colour map
    assert res.argmax_map[4, 4] == 0 and res.argmax_map[11, 11] == 1 and res.argmax_map[4, 12] == 2


def test_compare_self_is_one_and_shift_is_lower():
    maps, labels = labelled_heatmaps([15, 15, 15])
    names = ["a", "b", "c"]
    res = eigen_heatmaps(maps, labels, names)
    same = compare(res, res)
    assert len(same) == 9
    np.testing.assert_allclose(same["average_corr"], 1.0, atol=1e-12)
    diag = same[same["image_class"] == same["heatmap_class"]]
    np.testing.assert_allclose(diag["pc1_corr"], 1.0, atol=1e-12)
    assert same.loc[same["image_class"] != same["heatmap_class"], "pc1_corr"].isna().all()
    shifted = compare(res, eigen_heatmaps(np.roll(maps, 4, axis=-1), labels, names))
    assert (shifted["average_corr"] < 0.9).all() and (shifted["pc1_corr"].dropna() < 0.9).all()
    # a set stored at twice the display size is resized before correlating
    big = eigen_heatmaps(maps.repeat(2, axis=-1).repeat(2, axis=-2), labels, names)
    assert (compare(res, big)["average_corr"] > 0.97).all()


def test_bad_inputs_raise():
    maps, labels = labelled_heatmaps([3, 3, 3])
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        eigen_heatmaps(maps, labels + 1, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"heatmaps must be \[N, 2, H, W\]"):
        eigen_heatmaps(maps, labels, ["a", "b"])
    with pytest.raises(ValueError, match="M >= 2"):
        class_pca(maps[:1, 0])
    with pytest.raises(ValueError, match="var_threshold"):
        class_pca(maps[:, 0], var_threshold=0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        class_pca(np.full((3, 4, 4), np.nan))
    with pytest.raises(ValueError, match="same classes"):
        res = eigen_heatmaps(maps, labels, ["a", "b", "c"])
        compare(res, eigen_heatmaps(maps, labels, ["a", "b", "x"]))


def test_speed_smoke_2000_maps_224():
    # 500 images x 4 class maps = 2,000 raw heatmaps of 224^2 (the design's goal: < 2 s)
    rng = np.random.default_rng(0)
    base = np.stack([blob(224, 50 + 40 * c, 112, 30) for c in range(4)]).astype(np.float32)
    labels = rng.integers(0, 4, 500)
    scale = rng.uniform(0.5, 2.0, (500, 4, 1, 1)).astype(np.float32)
    speckle = rng.random((500, 4, 28, 28), dtype=np.float32).repeat(8, -1).repeat(8, -2)
    maps = scale * base + 0.05 * speckle
    start = time.perf_counter()
    res = eigen_heatmaps(maps, labels, ["a", "b", "c", "d"])
    print(f"eigen_heatmaps on 2,000 maps of 224^2: {time.perf_counter() - start:.2f} s")
    assert res.averages.shape == (4, 4, 224, 224)
    assert all(p is not None and p.components.shape[1:] == (224, 224) for p in res.pcas)
