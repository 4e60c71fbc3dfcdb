"""The latent autoencoder: training, caching, standardisation, and a latent-space run end to end."""

import numpy as np
import pytest

from trajbench.auxnet.cache import EvaluatorConfigError
from trajbench.data import get_dataset
from trajbench.models.autoencoder import load_or_train_autoencoder
from trajbench.run.config import RunError, data_shape, model_config, resolve_config
from trajbench.run.load import load_run
from trajbench.train import train

TINY_AE = {"steps": 60, "train_examples": 512, "batch_size": 32}


@pytest.fixture(scope="module")
def dataset():
    return get_dataset("synth-imagenet", resolution=16, seed=0)


@pytest.fixture(scope="module")
def autoencoder(dataset, tmp_path_factory):
    return load_or_train_autoencoder(dataset, config=TINY_AE, cache_dir=tmp_path_factory.mktemp("ae"))


def test_autoencoder_shapes_standardisation_and_cache(autoencoder, dataset):
    images = dataset.images("train", np.arange(256))
    latents = autoencoder.to_latent(images)
    assert latents.shape == (256, 8, 8, 4)
    # standardised with the training split's statistics: about zero mean and unit std per channel
    assert np.all(np.abs(latents.mean(axis=(0, 1, 2))) < 0.3) and np.all(np.abs(latents.std(axis=(0, 1, 2)) - 1) < 0.3)
    back = np.asarray(autoencoder.to_image(latents))
    np.testing.assert_allclose(back, autoencoder.decode(autoencoder.encode(images)), atol=1e-4)
    # even 60 steps reconstruct better than the images' own spread around their mean
    assert np.mean((back - images) ** 2) < 0.5 * np.mean((images - images.mean(0)) ** 2)
    again = load_or_train_autoencoder(dataset, config=TINY_AE, cache_dir=autoencoder.path.parent)
    assert again.path == autoencoder.path
    np.testing.assert_array_equal(again.encode(images[:8]), autoencoder.encode(images[:8]))


def test_bad_autoencoder_configs(dataset, tmp_path):
    with pytest.raises(EvaluatorConfigError, match="power of two"):
        load_or_train_autoencoder(dataset, config={"factor": 3}, cache_dir=tmp_path)
    with pytest.raises(EvaluatorConfigError, match="not divisible"):
        load_or_train_autoencoder(get_dataset("synth-imagenet", resolution=12), config={"factor": 8},
                                  cache_dir=tmp_path)
    with pytest.raises(RunError, match="latent_factor must be 1 or a power of two"):
        resolve_config("smoke", ["latent_factor=3"])


def test_latent_run_trains_on_latents_and_samples_images(tmp_path, monkeypatch):
    from trajbench.evaluate import generate_images
    from trajbench.samplers import SamplerSetting

    monkeypatch.setenv("TRAJBENCH_CACHE", str(tmp_path / "cache"))
    config = resolve_config("smoke", ["depth=1", "width=32", "heads=1", "patch_size=2", "batch_size=8",
                                      "train_examples=256", "val_examples=16", "log_every=5", "eval_every=10",
                                      "warmup_steps=5", "steps=20", "latent_factor=2", "autoencoder_steps=30",
                                      "text_words=5"], dataset="synth-imagenet")
    assert data_shape(config) == (8, 8, 4) and model_config(config).num_patches == 16
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["complete"] and np.isfinite(summary["final_loss"])
    run = load_run(tmp_path / "run")
    assert run.autoencoder is not None and run.autoencoder.path.is_relative_to(tmp_path / "cache")
    tokens, pooled = run.text_encoders.encode(["a photo of a circle"] * 4)
    images, info = generate_images(run, "ema", SamplerSetting.parse("4x2.0"), tokens, pooled)
    assert images.shape == (4, 16, 16, 3) and images.min() >= -1 and images.max() <= 1 and info["nfe"] == 4
