"""Metrics: FID, KID, CLIP score, bootstrap CIs, and the in-house evaluator networks they are computed with.

Pure functions on feature arrays (numpy / scipy, float64; :mod:`trajbench.metrics.stats`)::

    frechet_distance(feats_a, feats_b)            # FID; either side may be a precomputed (mu, sigma)
    frechet_distance_from_stats(mu_a, s_a, mu_b, s_b)
    feature_statistics(feats) -> (mu, sigma)
    kid(feats_a, feats_b, subsets=100, subset_size=1000)   # unbiased MMD^2, cubic polynomial kernel
    clip_score(image_feats, text_feats)           # mean cosine with the own prompt (+ per example)
    bootstrap_ci(statistic, *arrays, n_boot=1000, level=0.95, seed=0) -> (low, high)
    fid_with_ci(generated_feats, reference)       # FID + bootstrap CI over the generated set

Evaluators, trained once per dataset on its ``evaluator`` split and cached on disk (imported lazily, they
need JAX)::

    ev = load_or_train_evaluator(dataset)         # trajbench.metrics.evaluator: small CLIP (FID + CLIP score)
    ev.image_features(images); ev.fid_features(images); ev.text_features(captions); ev.key
    clf = load_or_train_geneval(dataset)          # trajbench.metrics.geneval: synth-cc12m attribute classifier
    geneval_scores(images, attributes, clf)       # {category: accuracy, "overall": ...}
    evaluator_report(dataset, ev); report_json("synth-imagenet", 16)   # trajbench.metrics.report

Or networks from weights a user supplies (converted once by ``trajbench convert-weights``), chosen per spec by
:mod:`trajbench.metrics.judges` (``inhouse`` | ``inception:PATH`` | ``clip:PATH``)::

    load_inception("inception.npz")(images)       # trajbench.metrics.inception: FID Inception pool3 features
    load_clip("clip.npz").clip_score(images, captions)   # trajbench.metrics.clip: OpenAI / OpenCLIP ViT CLIP
"""

from __future__ import annotations

import importlib

from trajbench.metrics.stats import (
    bootstrap_ci,
    bootstrap_indices,
    clip_score,
    clip_score_per_example,
    feature_statistics,
    fid_with_ci,
    frechet_distances_to,
    frechet_distance,
    frechet_distance_from_stats,
    kid,
    mmd2_unbiased,
    polynomial_kernel,
)

_LAZY = {
    "Evaluator": "evaluator",
    "EvaluatorConfig": "evaluator",
    "load_or_train_evaluator": "evaluator",
    "evaluator_key": "evaluator",
    "EvaluatorCacheError": "evaluator",
    "GenEvalClassifier": "geneval",
    "GenEvalConfig": "geneval",
    "geneval_scores": "geneval",
    "load_or_train_geneval": "geneval",
    "ClassifierConfig": "classifier",
    "ShapeClassifier": "classifier",
    "UnlabelledDatasetError": "classifier",
    "classifier_key": "classifier",
    "load_or_train_classifier": "classifier",
    "evaluator_report": "report",
    "format_report": "report",
    "report_json": "report",
}

__all__ = [
    "bootstrap_ci",
    "bootstrap_indices",
    "clip_score",
    "clip_score_per_example",
    "feature_statistics",
    "fid_with_ci",
    "frechet_distance",
    "frechet_distances_to",
    "frechet_distance_from_stats",
    "kid",
    "mmd2_unbiased",
    "polynomial_kernel",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"trajbench.metrics.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'trajbench.metrics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
