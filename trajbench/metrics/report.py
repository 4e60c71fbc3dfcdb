"""How good is an evaluator?  Retrieval accuracy, the FID floor and the FID of bad images, GenEval accuracy.

:func:`evaluator_report` measures, on real held-out data (the ``val`` split, never used for training the
evaluators) against the ``reference`` split:

* ``retrieval``: zero-shot caption retrieval -- for each image, its own caption among ``candidates`` (10)
  distinct captions: its own and 9 others drawn at random from the OTHER distinct captions of the split
  (on synth-imagenet these are exactly the other nine classes' captions); top-1 accuracy (chance 1/10);
* ``clip_score``: mean cosine of each image with its own caption, and with a random different caption;
* ``fid``: the FID floor (``val`` vs ``reference``: two samples of the real distribution, so only the
  finite-sample bias), and for scale the FID of Gaussian-noise images and of blurred ``val`` images (Gaussian
  blur with sigma = resolution / 16 pixels), all on the evaluator's penultimate features; ``kid`` likewise;
* ``geneval`` (synth-cc12m only): the attribute classifier's accuracy per category, judging real held-out
  images against their own ground truth (what a perfect generator would score).

:func:`report_json` is the entry point of ``trajbench evaluator report --dataset NAME --format json``.
"""

from __future__ import annotations

import json
import time

import numpy as np

from trajbench.metrics import stats

__all__ = ["evaluator_report", "format_report", "report_json", "retrieval_accuracy"]


def retrieval_accuracy(image_features, text_features_of, captions, *, candidates: int = 10, seed: int = 0):
    """Zero-shot caption retrieval: per image, is its own caption the most similar of ``candidates`` distinct
    captions (its own + ``candidates - 1`` others drawn without replacement from the other distinct captions)?

    ``text_features_of(list_of_captions) -> [K, D]``.  Returns ``(per_image_correct bool [N], k)`` with ``k``
    the number of candidates actually used (fewer when the split has fewer distinct captions).
    """
    captions = [str(c) for c in captions]
    unique = sorted(set(captions))
    if len(unique) < 2:
        raise ValueError("caption retrieval needs at least two distinct captions")
    index = {c: i for i, c in enumerate(unique)}
    txt = np.asarray(text_features_of(unique), np.float64)
    img = np.asarray(image_features, np.float64)
    k = min(candidates, len(unique))
    rng = np.random.default_rng(seed)
    correct = np.zeros(len(captions), bool)
    for i, cap in enumerate(captions):
        own = index[cap]
        others = rng.choice(len(unique) - 1, k - 1, replace=False)
        others = others + (others >= own)  # skip the own caption
        sims = txt[np.concatenate([[own], others])] @ img[i]
        correct[i] = sims[0] > sims[1:].max()
    return correct, k


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of [N, H, W, C] images over H and W (sigma in pixels)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect").astype(np.float32)


def evaluator_report(dataset, evaluator, *, n: int = 1000, n_boot: int = 100, seed: int = 0,
                     geneval_classifier=None, kid_subsets: int = 20) -> dict:
    """Quality of ``evaluator`` on ``dataset`` (see the module docstring); a JSON-able dict.

    ``n``: held-out ``val`` items used (at most the split's size); ``n_boot``: bootstrap replicates of the
    95 % CIs (0 to skip them); ``geneval_classifier``: include its per-category accuracy (synth-cc12m).
    """
    t0 = time.perf_counter()
    n = min(int(n), dataset.split_size("val"))
    idx = np.arange(n)
    images = dataset.images("val", idx)
    captions = dataset.captions("val", idx)
    emb = evaluator.image_features(images)
    feats = evaluator.fid_features(images)
    ref = np.concatenate([evaluator.fid_features(dataset.images("reference", np.arange(s, min(s + 2048, m))))
                          for m in [dataset.split_size("reference")] for s in range(0, m, 2048)])
    ref_stats = stats.feature_statistics(ref)

    def ci(statistic, *arrays):
        if n_boot < 2:
            return None
        return list(stats.bootstrap_ci(statistic, *arrays, n_boot=n_boot, seed=seed))

    # retrieval
    correct, k = retrieval_accuracy(emb, evaluator.text_features, captions, seed=seed)
    retrieval = {"top1": float(correct.mean()), "top1_ci": ci(np.mean, correct.astype(float)),
                 "candidates": k, "chance": 1.0 / k, "n": n}

    # CLIP score: own captions vs a random different caption of the split
    txt = evaluator.text_features(captions)
    per = stats.clip_score_per_example(emb, txt)
    unique = sorted(set(captions))
    pos = {c: i for i, c in enumerate(unique)}
    other = np.random.default_rng(seed).integers(0, len(unique) - 1, n)
    own = np.array([pos[c] for c in captions])
    other = other + (other >= own)
    clip = {"matched": float(per.mean()), "matched_ci": ci(np.mean, per),
            "mismatched": stats.clip_score(emb, evaluator.text_features(unique)[other])}

    # FID / KID: real floor vs noise and blur
    rng = np.random.default_rng(seed + 1)
    noise = np.clip(rng.normal(0.0, 0.5, images.shape), -1, 1).astype(np.float32)
    sigma = dataset.resolution / 16.0
    sets = {"floor": feats, "noise": evaluator.fid_features(noise),
            "blur": evaluator.fid_features(blur(images, sigma))}
    fid = {name: stats.frechet_distance(f, ref_stats) for name, f in sets.items()}
    # percentile bootstrap over the val set; note that a resample holds only ~63 % distinct images, so its FID is
    # biased upward and this interval can lie above the floor itself (it shows the spread, not the bias)
    fid["floor_ci"] = ci(lambda g: stats.frechet_distance(g, ref_stats), feats)
    fid.update({"n_generated": n, "n_reference": int(ref.shape[0]), "blur_sigma_px": sigma,
                "features": f"penultimate image features ({ref.shape[1]}-d)",
                "floor_over_noise": fid["floor"] / max(fid["noise"], 1e-12)})
    kid_size = min(1000, n, ref.shape[0])
    kid = {name: stats.kid(f, ref, subsets=kid_subsets, subset_size=kid_size, seed=seed) for name, f in sets.items()}
    kid.update(subset_size=kid_size, subsets=kid_subsets)

    meta = dict(evaluator.meta)
    train = {k: v for k, v in meta.get("train", {}).items() if k != "history"}
    report = {
        "dataset": dataset.spec(),
        "evaluator": {"key": evaluator.key, "source": evaluator.source, "path": str(evaluator.path),
                      "config": evaluator.config.to_dict(), "train": train},
        "retrieval": retrieval,
        "clip_score": clip,
        "fid": fid,
        "kid": kid,
    }
    if geneval_classifier is not None:
        attrs = dataset.attributes("val", idx)
        scores, correct_g = geneval_classifier.scores(images, attrs, return_per_image=True)
        train_g = {k: v for k, v in geneval_classifier.meta.get("train", {}).items() if k != "history"}
        report["geneval"] = {"real_accuracy": scores, "split": "val",
                             "classifier": {"key": geneval_classifier.key, "source": geneval_classifier.source,
                                            "config": geneval_classifier.config.to_dict(), "train": train_g}}
    report["report_seconds"] = round(time.perf_counter() - t0, 2)
    return report


def report_json(dataset_name: str, resolution: int = 32, *, seed: int = 0, cache_dir=None, config=None,
                geneval: bool | None = None, geneval_config=None, n: int = 1000, n_boot: int = 100,
                indent: int | None = 2) -> str:
    """Load (or train and cache) the evaluators of ``dataset_name`` at ``resolution`` and return
    :func:`evaluator_report` as a JSON string.  ``geneval`` defaults to True for synth-cc12m."""
    from trajbench.data import get_dataset
    from trajbench.metrics.evaluator import load_or_train_evaluator

    dataset = get_dataset(dataset_name, resolution=resolution)
    evaluator = load_or_train_evaluator(dataset, cache_dir=cache_dir, config=config, seed=seed)
    if geneval is None:
        geneval = dataset.name == "synth-cc12m"
    classifier = None
    if geneval:
        from trajbench.metrics.geneval import load_or_train_geneval

        classifier = load_or_train_geneval(dataset, cache_dir=cache_dir, config=geneval_config, seed=seed)
    report = evaluator_report(dataset, evaluator, n=n, n_boot=n_boot, seed=seed, geneval_classifier=classifier)
    return json.dumps(report, indent=indent, default=float)


def format_report(report: dict) -> str:
    """A few human-readable lines of an :func:`evaluator_report` dict."""
    d, ev = report["dataset"], report["evaluator"]
    r, c, f, k = report["retrieval"], report["clip_score"], report["fid"], report["kid"]
    lines = [
        f"{d['name']} {d['resolution']}px  evaluator {ev['key']} ({ev['source']}, trained in "
        f"{ev['train'].get('train_seconds', '?')} s)",
        f"  caption retrieval top-1 {r['top1']:.3f} among {r['candidates']} (chance {r['chance']:.2f}, n={r['n']})",
        f"  CLIP score: own caption {c['matched']:.3f}, other caption {c['mismatched']:.3f}",
        f"  FID floor (val vs reference) {f['floor']:.3f}; blurred {f['blur']:.3f}; noise {f['noise']:.3f}",
        f"  KID floor {k['floor']:.5f}; blurred {k['blur']:.5f}; noise {k['noise']:.5f}",
    ]
    g = report.get("geneval")
    if g:
        acc = g["real_accuracy"]
        cats = ", ".join(f"{c} {acc[c]:.3f}" for c in acc if c not in ("overall", "n"))
        lines.append(f"  GenEval classifier on real val images: overall {acc['overall']:.3f} ({cats})")
    return "\n".join(lines)
