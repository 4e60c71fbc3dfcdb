"""Tests of the auxiliary networks' shared machinery (trajbench.auxnet): config base, batches, fit, cache keys."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from trajbench.auxnet.cache import EvaluatorConfigError, cache_key
from trajbench.auxnet.fit import FitConfig, batch_schedule, fit, training_count
from trajbench.data import get_dataset
from trajbench.metrics import classifier, evaluator, geneval
from trajbench.models import autoencoder


# The dataset's spec (with its generator version) is part of every key: synth-imagenet's keys are those of its
# version 2, synth-cc12m's those of version 1.
@pytest.mark.parametrize("kind, module, config_cls, name, resolution, config, key", [
    ("clip", evaluator, evaluator.EvaluatorConfig, "synth-imagenet", 16, {}, "38050a7c52ec68ed"),
    ("clip", evaluator, evaluator.EvaluatorConfig, "synth-cc12m", 16, {}, "c210014f90327235"),
    ("geneval", geneval, geneval.GenEvalConfig, "synth-cc12m", 16, {}, "ba37591928fecb94"),
    ("classifier", classifier, classifier.ClassifierConfig, "synth-imagenet", 16, {}, "7c0457dae9bda362"),
    ("autoencoder", autoencoder, autoencoder.AutoencoderConfig, "synth-imagenet", 16, {}, "81c83348ec85abd0"),
    ("autoencoder", autoencoder, autoencoder.AutoencoderConfig, "synth-imagenet", 32,
     {"factor": 4, "channels": 4, "steps": 800}, "165f14e3cc1c1de6"),
])
def test_cache_keys_of_default_configs_are_pinned(kind, module, config_cls, name, resolution, config, key):
    """The keys of already-trained networks, computed before the configs shared a base class: a change here
    retrains every cached network of that kind."""
    dataset = get_dataset(name, resolution=resolution)
    config = config_cls.from_any(config).validate()
    assert cache_key(kind, dataset.spec(), config.to_dict(), 0, module.VERSION) == key


def test_fit_config_fields_validation_and_training_count():
    @dataclass(frozen=True)
    class Toy(FitConfig):
        label: ClassVar[str] = "toy"
        width: int = 3
        steps: int = 7

    config = Toy.from_any({"width": 5, "lr": 0.1})
    assert (config.width, config.steps, config.lr, config.batch_size) == (5, 7, 0.1, FitConfig.batch_size)
    assert config.to_dict()["width"] == 5 and Toy.from_any(config.to_dict()) == config
    with pytest.raises(EvaluatorConfigError, match="unknown Toy field"):
        Toy.from_any({"depth": 2})
    for bad in ({"steps": 0}, {"batch_size": 1}, {"lr": 0.0}, {"warmup_steps": -1}, {"train_examples": -1}):
        with pytest.raises(EvaluatorConfigError, match="invalid toy config"):
            Toy.from_any(bad).validate()
    data = SimpleNamespace(name="toy-data", split_size=lambda split: {"train": 50, "tiny": 1}[split])
    assert training_count(data, "train", Toy()) == 50  # train_examples = 0: all
    assert training_count(data, "train", Toy(train_examples=20)) == 20
    assert training_count(data, "train", Toy(train_examples=80)) == 50
    with pytest.raises(ValueError, match="the tiny split of 'toy-data' has 1 items; need at least 2"):
        training_count(data, "tiny", Toy())


def test_batch_schedule_is_shuffled_epochs_without_replacement():
    schedule = batch_schedule(10, 4, 7, seed=0)
    assert schedule.shape == (7, 4)
    for epoch in range(3):  # two full batches per epoch of 10, the last 2 items of the permutation dropped
        rows = schedule[2 * epoch: 2 * epoch + 2].ravel()
        assert len(set(rows.tolist())) == 8
    assert np.array_equal(schedule, batch_schedule(10, 4, 7, seed=0))
    assert not np.array_equal(schedule, batch_schedule(10, 4, 7, seed=1))


def test_fit_minimises_a_least_squares_loss_and_is_reproducible():
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    w_true = np.array([1.0, -2.0, 0.5], np.float32)
    data = (jnp.asarray(x), jnp.asarray(x @ w_true))

    def loss_fn(p, data, idx, key):
        xs, ys = data
        err = xs[idx] @ p["w"] - ys[idx]
        return jnp.mean(err**2), (jnp.max(jnp.abs(err)),)

    config = FitConfig(steps=300, batch_size=16, lr=0.05, warmup_steps=10, weight_decay=0.0)
    params, info = fit(loss_fn, {"w": jnp.zeros(3)}, data, config, seed=0, name="toy", aux_names=("max err",))
    np.testing.assert_allclose(params["w"], w_true, atol=0.05)
    assert [row[0] for row in info["history"]] == [50, 100, 150, 200, 250, 300]
    assert info["final_loss"] < 1e-3 and info["final_loss"] == round(info["history"][-1][1], 5)
    assert len(info["history"][-1]) == 3  # step, loss, max err
    again, _ = fit(loss_fn, {"w": jnp.zeros(3)}, data, config, seed=0, name="toy")
    assert np.array_equal(np.asarray(again["w"]), np.asarray(params["w"]))
