"""The in-house evaluators: training, caching, corrupt caches, quality report, GenEval classifier.

Everything runs at 16x16 with small training budgets and a temporary cache folder.  Two real trainings
(the CLIP evaluator on synth-imagenet, the GenEval classifier on synth-cc12m) take most of the time; the
cache protocol is tested with a tiny network.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from trajbench.auxnet.cache import EvaluatorCacheError, cache_root
from trajbench.auxnet.fit import TRAINING_RUNS
from trajbench.data import get_dataset
from trajbench.metrics import stats
from trajbench.metrics.evaluator import evaluator_key, load_or_train_evaluator
from trajbench.metrics.geneval import (
    geneval_judge,
    geneval_scores,
    labels_from_attributes,
    load_or_train_geneval,
    relations_from_boxes,
)
from trajbench.metrics.report import evaluator_report, format_report, report_json

# a network small enough that training it is mostly compilation: for the cache protocol
TINY = dict(widths=(8, 8, 8), feature_dim=16, embed_dim=8, text_width=16, text_layers=1, text_heads=2,
            steps=3, batch_size=16, train_examples=64)
# the smallest budget that reliably clears 90 % retrieval on synth-imagenet at 16x16 (default: 500 steps)
SMALL = dict(steps=250)
# GenEval detector test budget (default: 1000 steps)
GENEVAL_SMALL = dict(steps=400)
GENEVAL_FLOOR = 0.75  # per category, on real held-out images, with the small budget (measured: >= 0.82)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluators")


@pytest.fixture(scope="module")
def imagenet16():
    return get_dataset("synth-imagenet", resolution=16)


@pytest.fixture(scope="module")
def cc12m16():
    return get_dataset("synth-cc12m", resolution=16)


@pytest.fixture(scope="module")
def tiny(imagenet16, cache):
    return load_or_train_evaluator(imagenet16, cache_dir=cache, config=TINY)


# ---- cache protocol ---------------------------------------------------------------------------------
def test_second_call_is_a_cache_hit(imagenet16, cache, tiny):
    assert tiny.source == "trained"
    assert (tiny.path / "meta.json").exists() and (tiny.path / "params.npz").exists()
    runs = TRAINING_RUNS["clip"]
    again = load_or_train_evaluator(imagenet16, cache_dir=cache, config=TINY)
    assert again.source == "cache" and TRAINING_RUNS["clip"] == runs  # nothing retrained
    assert again.key == tiny.key == evaluator_key(imagenet16, config=TINY)
    images = imagenet16.images("val", range(8))
    assert np.array_equal(again.image_features(images), tiny.image_features(images))
    assert np.array_equal(again.text_features(["a photo of a star"]), tiny.text_features(["a photo of a star"]))


def test_key_hashes_dataset_spec_config_and_seed(imagenet16):
    key = evaluator_key(imagenet16, config=TINY)
    assert key == evaluator_key(get_dataset("synth-imagenet", resolution=16), config=dict(TINY))
    others = {
        evaluator_key(get_dataset("synth-imagenet", resolution=16, seed=1), config=TINY),
        evaluator_key(get_dataset("synth-imagenet", resolution=32), config=TINY),
        evaluator_key(get_dataset("synth-imagenet", resolution=16, evaluator_size=5000), config=TINY),
        evaluator_key(get_dataset("synth-cc12m", resolution=16), config=TINY),
        evaluator_key(imagenet16, config=dict(TINY, steps=4)),
        evaluator_key(imagenet16, config=TINY, seed=1),
    }
    assert key not in others and len(others) == 6
    assert len(key) == 16 and int(key, 16) >= 0


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAJBENCH_CACHE", raising=False)
    assert cache_root().parts[-3:] == (".cache", "trajbench", "evaluators")
    monkeypatch.setenv("TRAJBENCH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "evaluators"
    assert cache_root(tmp_path / "x") == tmp_path / "x"


@pytest.mark.parametrize("damage", ["truncate_params", "garbage_meta", "missing_params"])
def test_corrupt_cache_gives_one_line_error_or_retrains(imagenet16, tiny, tmp_path, damage):
    entry = tmp_path / tiny.path.name
    shutil.copytree(tiny.path, entry)
    if damage == "truncate_params":
        data = (entry / "params.npz").read_bytes()
        (entry / "params.npz").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_meta":
        (entry / "meta.json").write_text("{not json")
    else:
        (entry / "params.npz").unlink()
    with pytest.raises(EvaluatorCacheError) as info:
        load_or_train_evaluator(imagenet16, cache_dir=tmp_path, config=TINY, on_corrupt="error")
    message = str(info.value)
    assert "\n" not in message and str(entry) in message and "delete" in message
    if damage == "truncate_params":  # the default: warn in one line, retrain, overwrite
        runs = TRAINING_RUNS["clip"]
        with pytest.warns(RuntimeWarning, match="unusable"):
            ev = load_or_train_evaluator(imagenet16, cache_dir=tmp_path, config=TINY)
        assert ev.source == "trained" and TRAINING_RUNS["clip"] == runs + 1
        assert load_or_train_evaluator(imagenet16, cache_dir=tmp_path, config=TINY).source == "cache"


def test_feature_api_and_input_checks(imagenet16, tiny):
    images = imagenet16.images("val", range(5))
    emb, feat = tiny.image_features(images), tiny.fid_features(images)
    assert emb.shape == (5, TINY["embed_dim"]) and feat.shape == (5, TINY["feature_dim"])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    txt = tiny.text_features(imagenet16.captions("val", range(5)) + ["an unknown zebra"])
    assert txt.shape == (6, TINY["embed_dim"]) and np.allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    uint8 = np.round((images + 1) * 127.5).astype(np.uint8)
    assert np.allclose(tiny.image_features(uint8), emb, atol=0.05)
    assert tiny.image_features(images[:0]).shape == (0, TINY["embed_dim"])
    with pytest.raises(ValueError, match="16, 16, 3"):
        tiny.image_features(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(TypeError):
        tiny.text_features("a photo of a star")


def test_reference_statistics_are_stored_with_the_evaluator(imagenet16, tiny):
    mu, sigma = tiny.reference_statistics(imagenet16)
    assert mu.shape == (TINY["feature_dim"],) and sigma.shape == (TINY["feature_dim"],) * 2
    assert list(tiny.path.glob("stats-reference-*.npz"))
    fresh = load_or_train_evaluator(imagenet16, cache_dir=tiny.path.parent, config=TINY)
    mu2, sigma2 = fresh.reference_statistics(imagenet16)  # read back from disk
    assert np.allclose(mu, mu2) and np.allclose(sigma, sigma2)


def test_report_json_runs_on_a_cached_evaluator(tiny, cache):
    report = json.loads(report_json("synth-imagenet", 16, cache_dir=cache, config=TINY, n=200, n_boot=0))
    assert report["evaluator"]["key"] == tiny.key and report["evaluator"]["source"] == "cache"
    assert {"retrieval", "clip_score", "fid", "kid", "dataset"} <= set(report)


# ---- quality of a (small-budget) trained evaluator --------------------------------------------------
@pytest.mark.slow
def test_trained_evaluator_retrieves_captions_and_separates_real_from_noise(imagenet16, cache):
    ev = load_or_train_evaluator(imagenet16, cache_dir=cache, config=SMALL)
    report = evaluator_report(imagenet16, ev, n=1000, n_boot=0)
    print(format_report(report))
    json.dumps(report)
    assert report["retrieval"]["candidates"] == 10
    assert report["retrieval"]["top1"] >= 0.90
    fid = report["fid"]
    assert fid["floor"] < 0.05 * fid["noise"]  # real vs real: far below noise
    assert fid["floor"] < fid["blur"] < fid["noise"]
    assert report["kid"]["floor"] < 0.05 * report["kid"]["noise"]
    assert report["clip_score"]["matched"] > report["clip_score"]["mismatched"] + 0.3
    # CLIP score of images with their own captions, via the evaluator
    images, captions = imagenet16.images("val", range(50)), imagenet16.captions("val", range(50))
    mean, per = ev.clip_score(images, captions, return_per_example=True)
    assert per.shape == (50,) and mean == pytest.approx(per.mean())
    assert ev.fid(images, imagenet16) == pytest.approx(
        stats.frechet_distance(ev.fid_features(images), ev.reference_statistics(imagenet16)))


# ---- GenEval ----------------------------------------------------------------------------------------
def test_geneval_judge_is_exact_on_ground_truth(cc12m16):
    attrs = cc12m16.attributes("val", range(600))
    truth = labels_from_attributes(attrs)
    assert geneval_judge(truth, attrs).all()
    # judged against another prompt's ground truth, most images are wrong
    shifted = geneval_judge({k: np.roll(v, 1, axis=0) for k, v in truth.items()}, attrs)
    assert shifted.mean() < 0.5


def test_geneval_relation_rule():
    left, right = [0.1, 0.4, 0.3, 0.6], [0.6, 0.45, 0.8, 0.65]
    assert relations_from_boxes(left, right) == {"left of"}
    assert relations_from_boxes(right, left) == {"right of"}
    top, bottom = [0.4, 0.05, 0.6, 0.25], [0.4, 0.7, 0.6, 0.9]
    assert relations_from_boxes(top, bottom) == {"above"}
    assert relations_from_boxes(bottom, top) == {"below"}
    assert relations_from_boxes(left, left) == set()


def test_geneval_needs_the_compositional_dataset(imagenet16):
    with pytest.raises(ValueError, match="synth-cc12m"):
        load_or_train_geneval(imagenet16)


@pytest.mark.slow
def test_geneval_classifier_accuracy_on_real_images(cc12m16, cache):
    clf = load_or_train_geneval(cc12m16, cache_dir=cache, config=GENEVAL_SMALL)
    assert clf.source == "trained"
    images, attrs = cc12m16.images("val", range(1000)), cc12m16.attributes("val", range(1000))
    scores, correct = geneval_scores(images, attrs, clf, return_per_image=True)
    print({k: v for k, v in scores.items()})
    assert set(scores["n"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    for category in scores["n"]:
        assert scores[category] >= GENEVAL_FLOOR, (category, scores)
    assert correct.shape == (1000,)
    # the images judged against wrong prompts score low
    wrong = clf.scores(images, attrs[1:] + attrs[:1])
    assert wrong["overall"] < scores["overall"] - 0.3
    again = load_or_train_geneval(cc12m16, cache_dir=cache, config=GENEVAL_SMALL)
    assert again.source == "cache" and again.key == clf.key
