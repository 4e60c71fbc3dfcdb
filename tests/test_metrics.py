"""Pure metric functions (trajbench.metrics.stats) against independent reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from trajbench.metrics import (
    bootstrap_ci,
    bootstrap_indices,
    clip_score,
    clip_score_per_example,
    feature_statistics,
    fid_with_ci,
    frechet_distance,
    frechet_distance_from_stats,
    frechet_distances_to,
    kid,
    mmd2_unbiased,
)


# ---- independent references -------------------------------------------------------------------------
def fid_diagonal_closed_form(mu_a, var_a, mu_b, var_b):
    """For diagonal covariances: ||mu_a - mu_b||^2 + sum_i (sqrt(var_a_i) - sqrt(var_b_i))^2."""
    return float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))


def fid_eigen(a, b):
    """FID with Tr((S_a S_b)^1/2) = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)), all by symmetric eigh in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s_b @ root)
    tr = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr)


def fid_sqrtm(a, b):
    """pytorch-fid's route: Tr((S_a S_b)^1/2) from scipy.linalg.sqrtm of the non-symmetric product."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr = np.trace(linalg.sqrtm(s_a @ s_b)).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr)


def mmd2_direct(x, y):
    """Unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3, by explicit double loops over pairs."""
    d = x.shape[1]
    k = lambda u, v: (float(u @ v) / d + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def correlated(rng, n, d, scale=1.0):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix * scale


# ---- FID --------------------------------------------------------------------------------------------
def test_fid_matches_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    var_a, var_b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    got = frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    want = fid_diagonal_closed_form(mu_a, var_a, mu_b, var_b)
    assert got == pytest.approx(want, rel=1e-6)


def test_fid_on_samples_of_known_statistics():
    # samples from N(mu, diag(var)): the FID of the samples matches the eigen reference to 1e-3, and is
    # close to the closed form of the true parameters (sampling error only)
    rng = np.random.default_rng(1)
    d, n = 8, 20000
    mu_a, mu_b = np.zeros(d), np.full(d, 0.5)
    var_a, var_b = np.linspace(0.5, 2.0, d), np.linspace(2.0, 0.5, d)
    a = mu_a + rng.normal(size=(n, d)) * np.sqrt(var_a)
    b = mu_b + rng.normal(size=(n, d)) * np.sqrt(var_b)
    got = frechet_distance(a, b)
    assert got == pytest.approx(fid_eigen(a, b), rel=1e-3)
    assert got == pytest.approx(fid_diagonal_closed_form(mu_a, var_a, mu_b, var_b), rel=0.05)


@pytest.mark.parametrize("reference", [fid_eigen, fid_sqrtm])
@pytest.mark.parametrize("d", [4, 32, 128])
def test_fid_matches_reference_implementations_on_correlated_features(d, reference):
    rng = np.random.default_rng(d)
    a = correlated(rng, 3 * d + 50, d)
    b = correlated(rng, 2 * d + 80, d, scale=1.3) + 0.2
    assert frechet_distance(a, b) == pytest.approx(reference(a, b), rel=1e-3)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(2)
    a = correlated(rng, 500, 64) * 3.0
    scale = np.trace(np.cov(a, rowvar=False))
    assert 0.0 <= frechet_distance(a, a) < 1e-6 * scale


@pytest.mark.parametrize("shift", [0.0, 0.1, 1.0, 5.0])
def test_fid_of_a_mean_shift_is_its_squared_norm(shift):
    rng = np.random.default_rng(3)
    a = correlated(rng, 400, 32)
    delta = rng.normal(size=32)
    delta *= shift / max(np.linalg.norm(delta), 1e-12)
    got = frechet_distance(a + delta, a)  # identical covariances: only ||mu_a - mu_b||^2 remains
    assert got == pytest.approx(shift**2, rel=1e-6, abs=1e-7)


def test_fid_from_precomputed_statistics_equals_from_features():
    rng = np.random.default_rng(4)
    a, b = correlated(rng, 300, 16), correlated(rng, 200, 16) + 0.3
    stats_b = feature_statistics(b)
    assert frechet_distance(a, stats_b) == pytest.approx(frechet_distance(a, b), rel=1e-12)
    assert frechet_distance(feature_statistics(a), stats_b) == pytest.approx(frechet_distance(a, b), rel=1e-12)
    mu, sigma = stats_b
    assert np.allclose(mu, b.mean(0)) and np.allclose(sigma, np.cov(b, rowvar=False))


def test_fid_with_singular_covariances_is_finite_and_close():
    # fewer samples than dimensions: both covariances are singular (sqrtm of their product is unreliable)
    rng = np.random.default_rng(5)
    a, b = correlated(rng, 20, 64), correlated(rng, 30, 64) + 0.1
    got = frechet_distance(a, b)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(fid_eigen(a, b), rel=1e-2)


def test_fid_rejects_bad_input():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError):
        frechet_distance(np.full((4, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))


# ---- KID --------------------------------------------------------------------------------------------
def test_kid_matches_direct_double_loop():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    direct = mmd2_direct(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-10)
    # one subset holding all of both (equal) sets: the full unbiased estimator
    assert kid(x, y, subsets=1, subset_size=30) == pytest.approx(direct, rel=1e-10)
    # unequal sizes
    z = rng.normal(size=(17, 5))
    assert mmd2_unbiased(x, z) == pytest.approx(mmd2_direct(x, z), rel=1e-10)


def test_kid_is_unbiased_for_equal_distributions():
    rng = np.random.default_rng(7)
    d, n, reps = 8, 20, 400
    values, biased = [], []
    for _ in range(reps):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        values.append(mmd2_unbiased(x, y))
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())  # the V-statistic: biased upward
    values = np.array(values)
    stderr = values.std(ddof=1) / np.sqrt(reps)
    assert abs(values.mean()) < 3 * stderr
    assert np.mean(biased) > 10 * stderr  # the biased estimator would be clearly positive


def test_kid_positive_for_different_distributions():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) * 1.5 + 0.5
    value, per_subset = kid(x, y, subsets=20, subset_size=100, return_subsets=True)
    assert value > 0 and (per_subset > 0).all() and value == pytest.approx(per_subset.mean())
    same = kid(x, rng.normal(size=(200, 16)), subsets=20, subset_size=100)
    assert abs(same) < 0.2 * value


def test_kid_is_deterministic_given_a_seed():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    assert kid(x, y, subsets=5, subset_size=20, seed=3) == kid(x, y, subsets=5, subset_size=20, seed=3)


# ---- CLIP score -------------------------------------------------------------------------------------
def test_clip_score_is_mean_cosine_with_own_prompt():
    rng = np.random.default_rng(10)
    img, txt = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    mean, per = clip_score(img, txt, return_per_example=True)
    want = np.array([i @ t / np.linalg.norm(i) / np.linalg.norm(t) for i, t in zip(img, txt)])
    assert np.allclose(per, want) and mean == pytest.approx(want.mean())
    assert np.allclose(clip_score_per_example(3 * img, 0.5 * txt), want)  # scale invariant
    assert clip_score(img, img) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        clip_score(img, txt[:10])


# ---- bootstrap --------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_samples():
    rng = np.random.default_rng(11)
    widths = []
    for n in (100, 1600):
        x = rng.normal(size=n)
        lo, hi = bootstrap_ci(np.mean, x, n_boot=500, seed=0)
        assert lo < x.mean() < hi
        widths.append(hi - lo)
        # ~ 2 * 1.96 / sqrt(n) for a standard normal
        assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.25)
    assert widths[1] < widths[0] / 2.5  # 16x the samples: about 4x narrower


def test_bootstrap_ci_is_seeded_and_pairs_arrays():
    rng = np.random.default_rng(12)
    img, txt = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    txt = img + 0.5 * txt
    stat = lambda i, t: clip_score(i, t)  # noqa: E731
    a = bootstrap_ci(stat, img, txt, n_boot=200, seed=1)
    assert a == bootstrap_ci(stat, img, txt, n_boot=200, seed=1)
    assert a[0] < clip_score(img, txt) < a[1]
    lo_b, hi_b = bootstrap_ci(np.mean, rng.normal(size=100), n_boot=200, method="basic")
    assert lo_b < hi_b
    with pytest.raises(ValueError):
        bootstrap_ci(stat, img, txt[:10])
    with pytest.raises(ValueError):
        bootstrap_ci(np.mean, img[:, 0], level=1.5)


def test_fid_with_ci_resamples_the_generated_set():
    rng = np.random.default_rng(13)
    ref = correlated(rng, 400, 8)
    gen = correlated(rng, 300, 8) + 0.5
    out = fid_with_ci(gen, ref, n_boot=50)
    assert out["fid"] == pytest.approx(frechet_distance(gen, ref))
    assert out["ci_low"] < out["ci_high"] and out["n"] == 300
    basic = fid_with_ci(gen, feature_statistics(ref), n_boot=50, method="basic")
    assert basic["fid"] == out["fid"] and basic["ci_low"] < basic["ci_high"]
    # basic = the percentile interval reflected about the estimate
    assert basic["ci_low"] == pytest.approx(2 * out["fid"] - out["ci_high"])


def test_bias_corrected_fid_interval_is_centred_where_the_percentile_one_is_not():
    # few samples close to the reference: resampling inflates FID, so the percentile interval sits above it
    rng = np.random.default_rng(14)
    ref = correlated(rng, 2000, 16)
    gen = correlated(rng, 40, 16)
    percentile = fid_with_ci(gen, ref, n_boot=200)
    corrected = fid_with_ci(gen, ref, n_boot=200, method="bias_corrected")
    fid = percentile["fid"]
    off_centre = {name: abs((ci["ci_low"] + ci["ci_high"]) / 2 - fid) / (ci["ci_high"] - ci["ci_low"])
                  for name, ci in (("percentile", percentile), ("corrected", corrected))}
    assert off_centre["percentile"] > 0.3 and off_centre["corrected"] < 0.15, off_centre
    assert corrected["ci_low"] < fid < corrected["ci_high"]
    # the same width, moved by the replicates' mean shift
    width = percentile["ci_high"] - percentile["ci_low"]
    assert corrected["ci_high"] - corrected["ci_low"] == pytest.approx(width)


@pytest.mark.parametrize("n, d", [(40, 64), (300, 8)])  # fewer samples than dimensions (N x N route), and more
def test_batched_fid_equals_the_per_set_formula_and_the_generic_bootstrap(n, d):
    rng = np.random.default_rng(15)
    ref = correlated(rng, 500, d)
    gen = correlated(rng, n, d) * 1.3 + 0.2
    mu_r, sigma_r = feature_statistics(ref)
    indices = bootstrap_indices(n, 20, seed=3)
    batched = frechet_distances_to(gen[indices], mu_r, sigma_r)
    one_by_one = [frechet_distance_from_stats(*feature_statistics(gen[i]), mu_r, sigma_r) for i in indices]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
    # fid_with_ci's batched replicates give the interval bootstrap_ci gives with the per-set FID
    out = fid_with_ci(gen, ref, n_boot=20, seed=3, method="bias_corrected")
    generic = bootstrap_ci(lambda g: frechet_distance_from_stats(*feature_statistics(g), mu_r, sigma_r), gen,
                           n_boot=20, seed=3, method="bias_corrected")
    np.testing.assert_allclose([out["ci_low"], out["ci_high"]], generic, rtol=1e-6)
    assert out["fid"] == pytest.approx(frechet_distance(gen, ref), rel=1e-6)
