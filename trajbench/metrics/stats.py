"""Pure metric functions on feature arrays (numpy / scipy only; usable from a notebook).

All statistics are computed in float64.  Features are ``[N, D]`` arrays (one row per image or caption).

* :func:`frechet_distance` -- FID between two feature sets (or from precomputed Gaussian statistics):
  ``d^2 = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})``.
* :func:`kid` -- Kernel Inception Distance: the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets (suited to small sample counts: unlike FID
  it is unbiased, so its expectation does not depend on the number of samples).
* :func:`clip_score` -- mean cosine similarity of every image embedding with its own prompt's embedding.
* :func:`bootstrap_ci` -- percentile bootstrap confidence interval of any of these statistics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import linalg

__all__ = [
    "bootstrap_ci",
    "clip_score",
    "clip_score_per_example",
    "feature_statistics",
    "bootstrap_indices",
    "fid_with_ci",
    "frechet_distances_to",
    "interval_from_replicates",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kid",
    "mmd2_unbiased",
    "polynomial_kernel",
]


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of features, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``mu = 1/N sum_i x_i`` and covariance ``S = 1/(N-1) sum_i (x_i - mu)(x_i - mu)^T`` (float64).

    The unbiased (N - 1) covariance, as ``np.cov`` and pytorch-fid use.  Needs ``N >= 2``.
    """
    x = _features(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def psd_sqrt(sigma) -> np.ndarray:
    """The symmetric square root ``S^{1/2}`` of a covariance, from its eigen-decomposition (negative
    round-off eigenvalues clipped to 0)."""
    w, v = linalg.eigh(np.asarray(sigma, np.float64))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma_a, root_b) -> float:
    """``Tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i)``, with ``lambda_i`` the eigenvalues of the symmetric PSD
    ``S_b^{1/2} S_a S_b^{1/2}`` (similar to ``S_a S_b``); ``root_b = psd_sqrt(S_b)``.

    Exact and always real, and faster than ``scipy.linalg.sqrtm`` of the non-symmetric product (pytorch-fid's
    route, which needs an ``eps * I`` retry when the product is singular; timings in benchmarks/README.md).
    Passing a precomputed ``root_b`` makes bootstrap replicates one ``eigvalsh`` each.
    ``sigma_a`` may be a stack ``[B, D, D]``; the result is then an array ``[B]``.
    """
    lam = np.linalg.eigvalsh(root_b @ sigma_a @ root_b)
    total = np.sqrt(np.clip(lam, 0.0, None)).sum(-1)
    return float(total) if total.ndim == 0 else total


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b, *, root_b=None) -> float:
    """Frechet distance between the Gaussians ``N(mu_a, S_a)`` and ``N(mu_b, S_b)``.

    ``d^2 = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})`` (the squared 2-Wasserstein
    distance); see :func:`trace_sqrt_product`. ``root_b``: ``psd_sqrt(S_b)`` when it is already known (a fixed
    reference set). Tiny negative values from round-off are returned as 0.
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu_a {mu_a.shape}, sigma_a {sigma_a.shape}, mu_b {mu_b.shape}, sigma_b {sigma_b.shape}"
        )
    root_b = psd_sqrt(sigma_b) if root_b is None else root_b
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt_product(sigma_a, root_b)
    return max(float(value), 0.0)


def frechet_distance(features_a, features_b) -> float:
    """FID between two feature sets ``[N_a, D]`` and ``[N_b, D]`` (see :func:`frechet_distance_from_stats`).

    Either argument may also be a precomputed ``(mu, sigma)`` pair from :func:`feature_statistics`
    (e.g. the cached statistics of a reference set).  FID is biased upward for finite ``N`` (the bias falls
    roughly like ``1/N``): compare values computed from the same numbers of samples only.
    """
    stats_a = tuple(features_a) if isinstance(features_a, tuple) else feature_statistics(features_a)
    stats_b = tuple(features_b) if isinstance(features_b, tuple) else feature_statistics(features_b)
    return frechet_distance_from_stats(*stats_a, *stats_b)


def polynomial_kernel(x, y) -> np.ndarray:
    """``k(x, y) = (x . y / d + 1)^3`` for all pairs of rows (the KID kernel), ``[N_x, N_y]``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel between samples ``x`` [n, D] and ``y`` [m, D]:

    ``1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j)``.
    Its expectation is exactly 0 when ``x`` and ``y`` come from the same distribution (it can be negative).
    """
    x, y = _features(x, "x"), _features(y, "y")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 samples on each side, got {n} and {m}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def kid(features_a, features_b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
        return_subsets: bool = False):
    """Kernel Inception Distance: the mean over ``subsets`` random subsets (without replacement, of size
    ``s = min(subset_size, N_a, N_b)`` from each set) of the unbiased MMD^2 :func:`mmd2_unbiased`.

    With ``subset_size >= N_a == N_b`` every subset is the whole sets (in another order), so the value is the
    full unbiased estimator.  ``return_subsets=True`` returns ``(mean, per_subset_values)``; their standard
    deviation is the spread usually reported with KID.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    s = min(int(subset_size), a.shape[0], b.shape[0])
    if s < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    if s == a.shape[0] == b.shape[0]:  # every subset is the whole of both sets: one evaluation serves all
        values = np.full(subsets, mmd2_unbiased(a, b))
        mean = float(values[0])
        return (mean, values) if return_subsets else mean
    values = np.empty(subsets)
    for k in range(subsets):
        xa = a[rng.choice(a.shape[0], s, replace=False)]
        xb = b[rng.choice(b.shape[0], s, replace=False)]
        values[k] = mmd2_unbiased(xa, xb)
    mean = float(values.mean())
    return (mean, values) if return_subsets else mean


def _unit(x, name) -> np.ndarray:
    a = _features(x, name)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{name} contains an all-zero feature vector (its direction is undefined)")
    return a / norm


def clip_score_per_example(image_features, text_features) -> np.ndarray:
    """``cos(f_img_i, f_txt_i) = f_img_i . f_txt_i / (|f_img_i| |f_txt_i|)`` for each pair i (float64 [N]).

    Row ``i`` of ``text_features`` must be the embedding of the prompt image ``i`` was generated from.
    """
    img, txt = _unit(image_features, "image_features"), _unit(text_features, "text_features")
    if img.shape != txt.shape:
        raise ValueError(f"image and text features must have the same shape, got {img.shape} and {txt.shape}")
    return np.einsum("nd,nd->n", img, txt)


def clip_score(image_features, text_features, *, return_per_example: bool = False):
    """CLIP score: the mean over images of the cosine similarity of each image with its own prompt,
    ``1/N sum_i cos(f_img_i, f_txt_i)`` (in [-1, 1]; higher is better).

    Reported as the raw mean cosine; Hessel et al.'s CLIPScore is ``2.5 max(cos, 0)`` and torchmetrics'
    ``100 max(cos, 0)`` of the same quantity.  ``return_per_example=True`` gives ``(mean, per_example)``.
    """
    per = clip_score_per_example(image_features, text_features)
    mean = float(per.mean())
    return (mean, per) if return_per_example else mean


def bootstrap_ci(statistic: Callable[..., float], *arrays, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, method: str = "percentile") -> tuple[float, float]:
    """Bootstrap confidence interval ``(low, high)`` of ``statistic(*arrays)``.

    Each replicate draws N example indices uniformly with replacement and evaluates ``statistic`` on
    ``[a[idx] for a in arrays]`` -- the arrays are resampled jointly (paired), so they must share their
    first dimension N (e.g. image and text features of the same examples; for FID pass only the generated
    features and close over the fixed reference statistics).

    ``method="percentile"``: ``(q_{(1-level)/2}, q_{(1+level)/2})`` of the replicates theta*_b.
    ``method="basic"``: ``(2 theta - q_{(1+level)/2}, 2 theta - q_{(1-level)/2})``.
    ``method="bias_corrected"``: the percentile interval moved by the bootstrap estimate of the bias,
    ``(q_lo - b, q_hi - b)`` with ``b = mean(theta*) - theta``. For a statistic whose replicates are biased
    (FID and KID are: a resample holds only ~63 % distinct examples, so its FID is biased further upward and
    the percentile interval can lie entirely above the estimate) it keeps the spread and centres it on theta.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    _check_interval(n_boot, level, method)
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n < 1 or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        raise ValueError(f"arrays must share a non-empty first dimension, got shapes {[a.shape for a in arrays]}")
    reps = np.array([float(statistic(*[a[idx] for a in arrays])) for idx in bootstrap_indices(n, n_boot, seed)])
    return interval_from_replicates(reps, lambda: float(statistic(*arrays)), level=level, method=method)


def _check_interval(n_boot: int, level: float, method: str) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in ("percentile", "basic", "bias_corrected"):
        raise ValueError(f"method must be 'percentile', 'basic' or 'bias_corrected', got {method!r}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` example indices, each row N draws uniformly with replacement (the replicates of
    :func:`bootstrap_ci`, in its order)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(n_boot)])


def interval_from_replicates(reps, estimate: Callable[[], float], *, level: float = 0.95,
                             method: str = "percentile") -> tuple[float, float]:
    """The bootstrap interval of :func:`bootstrap_ci` from its replicates; ``estimate()`` gives theta (called
    only by the methods that need it)."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(reps, [alpha, 1.0 - alpha])  # a replicate may be undefined (NaN)
    if method == "basic":
        theta = estimate()
        lo, hi = 2 * theta - hi, 2 * theta - lo
    elif method == "bias_corrected":
        bias = float(np.nanmean(reps)) - estimate()
        lo, hi = lo - bias, hi - bias
    return float(lo), float(hi)


def fid_with_ci(generated_features, reference, *, n_boot: int = 100, level: float = 0.95, seed: int = 0,
                method: str = "percentile") -> dict:
    """FID of generated features against a reference (features or ``(mu, sigma)``), with a bootstrap CI
    over the GENERATED set (the reference statistics are held fixed): ``{"fid", "ci_low", "ci_high", "n"}``.

    FID's finite-sample bias grows when a resample repeats images, so the percentile interval sits above the
    estimate when the FID is small (near the floor); ``method="bias_corrected"`` (what ``trajbench eval``
    reports) moves it back by the replicates' mean shift, ``"basic"`` reflects it about the estimate.
    """
    _check_interval(n_boot, level, method)
    mu_r, sigma_r = tuple(reference) if isinstance(reference, tuple) else feature_statistics(reference)
    gen = _features(generated_features, "generated_features")
    if gen.shape[0] < 2:
        raise ValueError(f"need at least 2 generated feature vectors, got {gen.shape[0]}")
    mu_r, sigma_r = np.asarray(mu_r, np.float64), np.asarray(sigma_r, np.float64)
    root_r = psd_sqrt(sigma_r) if gen.shape[0] >= gen.shape[1] else None
    fid = float(frechet_distances_to(gen[None], mu_r, sigma_r, root_r)[0])
    indices = bootstrap_indices(gen.shape[0], n_boot, seed)
    reps = np.concatenate([frechet_distances_to(gen[chunk], mu_r, sigma_r, root_r)
                           for chunk in np.array_split(indices, max(1, indices.size * gen.shape[1] // (1 << 24)))])
    lo, hi = interval_from_replicates(reps, lambda: fid, level=level, method=method)
    return {"fid": fid, "ci_low": lo, "ci_high": hi, "n": int(gen.shape[0])}


def frechet_distances_to(feature_sets, mu_r, sigma_r, root_r=None) -> np.ndarray:
    """FIDs of a stack of feature sets ``[B, N, D]`` against the fixed Gaussian ``N(mu_r, S_r)``: ``[B]``.

    With ``C`` the centred ``[N, D]`` features, ``S = C^T C / (N-1)``, and the non-zero eigenvalues of
    ``S S_r`` are those of the ``N x N`` matrix ``C S_r C^T / (N-1)`` (``AB`` and ``BA`` share them), so when
    ``N < D`` ``Tr((S S_r)^{1/2})`` needs an ``N x N`` ``eigvalsh`` per set (no ``S_r^{1/2}``); otherwise the
    ``D x D`` route of :func:`trace_sqrt_product` (``root_r = psd_sqrt(S_r)`` computed once if not given).
    Equal to :func:`frechet_distance_from_stats` on each set to round-off; all sets are one batched call.
    """
    x = np.asarray(feature_sets, np.float64)
    n, d = x.shape[1], x.shape[2]
    mu = x.mean(axis=1)
    centred = x - mu[:, None, :]
    trace_a = np.einsum("bnd,bnd->b", centred, centred) / (n - 1)
    if n < d:
        lam = np.linalg.eigvalsh(centred @ sigma_r @ centred.transpose(0, 2, 1) / (n - 1))
        cross = np.sqrt(np.clip(lam, 0.0, None)).sum(-1)
    else:
        root_r = psd_sqrt(sigma_r) if root_r is None else root_r
        cross = trace_sqrt_product(centred.transpose(0, 2, 1) @ centred / (n - 1), root_r)
    diff = mu - mu_r
    value = np.einsum("bd,bd->b", diff, diff) + trace_a + np.trace(sigma_r) - 2.0 * cross
    return np.maximum(value, 0.0)
