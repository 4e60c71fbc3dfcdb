"""The recognisability classifier: training beats chance, the cache round-trip, corrupt caches, unlabelled data.

Everything runs at 16x16 on a 2-class synth-imagenet with a tiny network and a temporary cache folder.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from trajbench.auxnet.cache import EvaluatorCacheError, EvaluatorConfigError
from trajbench.auxnet.fit import TRAINING_RUNS
from trajbench.data import get_dataset
from trajbench.metrics.classifier import (
    ClassifierConfig,
    UnlabelledDatasetError,
    classifier_key,
    load_or_train_classifier,
)

# small enough to train in about ten seconds, big enough to separate circles from squares
# (held-out accuracy measured 0.91 / 0.96 / 0.98 with seeds 0 / 1 / 2; chance is 0.5)
TINY = dict(widths=(8, 16, 16), feature_dim=32, steps=150, batch_size=64, warmup_steps=10, lr=5e-3,
            train_examples=1024)


@pytest.fixture(scope="module")
def two_class():
    return get_dataset("synth-imagenet", resolution=16, num_classes=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(scope="module")
def tiny(two_class, cache):
    return load_or_train_classifier(two_class, cache_dir=cache, config=TINY)


def test_training_beats_chance(two_class, tiny):
    assert tiny.source == "trained" and tiny.classes == ("circle", "square")
    images, labels = two_class.images("val", range(400)), two_class.labels("val", range(400))
    acc, correct = tiny.accuracy(images, labels, return_per_image=True)
    assert acc > 0.75 and correct.shape == (400,) and correct.dtype == bool
    assert acc == pytest.approx(correct.mean())
    assert tiny.meta["train"]["val_accuracy"] > 0.75 and tiny.meta["train"]["examples"] == 1024
    pred = tiny.predict(images[:5])
    assert pred.shape == (5,) and pred.dtype == np.int64 and set(pred) <= {0, 1}
    prob = tiny.probabilities(images[:5])
    assert prob.shape == (5, 2) and np.allclose(prob.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(prob.argmax(1), pred)
    uint8 = np.round((images[:5] + 1) * 127.5).astype(np.uint8)
    assert tiny.predict(uint8).shape == (5,)


def test_cache_round_trip_is_identical_without_retraining(two_class, cache, tiny):
    runs = TRAINING_RUNS["classifier"]
    again = load_or_train_classifier(two_class, cache_dir=cache, config=dict(TINY))
    assert again.source == "cache" and TRAINING_RUNS["classifier"] == runs
    assert again.key == tiny.key == classifier_key(two_class, config=TINY)
    assert again.meta["train"] == tiny.meta["train"]
    images = two_class.images("val", range(64))
    assert np.array_equal(again.predict(images), tiny.predict(images))
    assert np.array_equal(again.probabilities(images), tiny.probabilities(images))
    assert classifier_key(two_class, config=TINY, seed=1) != tiny.key
    assert classifier_key(two_class, config=dict(TINY, steps=151)) != tiny.key


def test_corrupt_cache_is_retrained_with_a_warning(two_class, tiny, tmp_path):
    entry = tmp_path / tiny.path.name
    shutil.copytree(tiny.path, entry)
    data = (entry / "params.npz").read_bytes()
    (entry / "params.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EvaluatorCacheError) as info:
        load_or_train_classifier(two_class, cache_dir=tmp_path, config=TINY, on_corrupt="error")
    assert "\n" not in str(info.value) and str(entry) in str(info.value)
    runs = TRAINING_RUNS["classifier"]
    with pytest.warns(RuntimeWarning, match="unusable"):
        clf = load_or_train_classifier(two_class, cache_dir=tmp_path, config=TINY)
    assert clf.source == "trained" and TRAINING_RUNS["classifier"] == runs + 1
    assert load_or_train_classifier(two_class, cache_dir=tmp_path, config=TINY).source == "cache"


@pytest.mark.parametrize("dataset", ["name", "object"])
def test_dataset_without_labels_is_a_one_line_error(tmp_path, dataset):
    cc12m = "synth-cc12m" if dataset == "name" else get_dataset("synth-cc12m", resolution=16)
    with pytest.raises(UnlabelledDatasetError) as info:
        load_or_train_classifier(cc12m, cache_dir=tmp_path, config=TINY, resolution=16)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message and "'synth-cc12m'" in message
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_config_and_input_checks(two_class, tiny):
    with pytest.raises(EvaluatorConfigError, match="unknown ClassifierConfig field"):
        ClassifierConfig.from_any({"stepz": 3})
    with pytest.raises(EvaluatorConfigError):
        ClassifierConfig(steps=0).validate()
    images = two_class.images("val", range(4))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        tiny.accuracy(images, [0, 1, 0])
    with pytest.raises(ValueError, match="class ids in 0..1"):
        tiny.accuracy(images, [0, 1, 2, 0])
    with pytest.raises(ValueError, match="16, 16, 3"):
        tiny.predict(np.zeros((2, 32, 32, 3), np.float32))
