"""The Flax CLIP (trajbench.metrics.clip): both towers and the tokenizer against open_clip with random weights
(where the ``bench`` extra is installed), the B/32 and L/14 layouts, and one-line errors for bad weight files."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import re

import numpy as np
import pytest

from trajbench.metrics.clip import (
    ARCHITECTURES,
    CLIP,
    ClipWeightsError,
    clip_state_dict_shapes,
    load_clip,
    pre_tokenize,
    save_random_clip_weights,
)

needs_open_clip = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("open_clip") is None,
    reason="torch and open_clip_torch are not installed (pip install 'trajbench[bench]')")


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------
# against open_clip, random weights (no download)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[False, True], ids=["gelu", "quickgelu"])
def reference(request, tmp_path_factory):
    """A small open_clip CLIP of the ViT-B-32 design (2 layers of width 128: 2 heads of 64), every weight
    randomised (LayerNorms included), and its conversion by trajbench."""
    import open_clip
    import torch

    from trajbench.metrics.clip import save_open_clip_model

    torch.manual_seed(0)
    model = open_clip.create_model(
        "ViT-B-32", pretrained=None, embed_dim=64, quick_gelu=request.param,
        vision_cfg={"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = save_open_clip_model(model, tmp_path_factory.mktemp("clip") / "tiny.npz", "tiny-B-32")
    return model, load_clip(path)


@needs_open_clip
def test_image_tower_matches_open_clip(reference):
    import torch

    model, ours = reference
    assert ours.arch.quick_gelu == (type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU")
    pixels = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)  # normalised input
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(pixels).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(CLIP(ours.arch).apply({"params": ours.params}, pixels, method="encode_image"))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)


CAPTIONS = ["a photo of a cat", "A PHOTO of an Automobile!!", "it's the dog's ball -- 42 x\u00b2 &amp; na\u00efve caf\u00e9",
            "", "a " * 100]


@needs_open_clip
def test_tokenizer_and_text_tower_match_open_clip(reference):
    import open_clip
    import torch

    model, ours = reference
    tokens = ours.tokenizer(CAPTIONS)
    np.testing.assert_array_equal(tokens, open_clip.tokenize(CAPTIONS).numpy())
    with torch.no_grad():
        expected = model.encode_text(torch.from_numpy(tokens).long()).numpy()
    got = np.asarray(CLIP(ours.arch).apply({"params": ours.params}, tokens, method="encode_text"))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)


@needs_open_clip
def test_b32_layout_matches_open_clip_and_l14_config():
    import open_clip

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "logit_scale"}
    assert clip_state_dict_shapes(ARCHITECTURES["ViT-B-32"]) == expected
    for name, arch in ARCHITECTURES.items():
        config = open_clip.get_model_config(name)
        vision, text = config["vision_cfg"], config["text_cfg"]
        assert (arch.embed_dim, arch.image_size, arch.patch_size, arch.vision_width, arch.vision_layers) == (
            config["embed_dim"], vision["image_size"], vision["patch_size"], vision["width"], vision["layers"])
        assert (arch.context_length, arch.vocab_size, arch.text_width, arch.text_layers, arch.text_heads) == (
            text["context_length"], text["vocab_size"], text["width"], text["layers"], text["heads"])


@needs_open_clip
def test_converting_a_checkpoint_of_another_architecture_names_it(reference, tmp_path, capsys):
    import torch

    from trajbench.cli import main

    model, _ = reference
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    assert main(["convert-weights", "clip", str(checkpoint), "--model", "ViT-B-32", "--out", str(tmp_path / "o.npz")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and re.search(r"tiny.pt is not a ViT-B-32 checkpoint .*check --model", error), error
    assert not (tmp_path / "o.npz").exists()


# ------------------------------------------------------------------------------------------------
# without torch
# ------------------------------------------------------------------------------------------------
def test_pre_tokenize_splits_as_clips_regex():
    assert pre_tokenize("it's a dog's ball, 42 x\u00b2!!") == ["it", "'s", "a", "dog", "'s", "ball", ",", "4", "2",
                                                              "x", "\u00b2", "!!"]
    assert pre_tokenize("<end_of_text>done", ("<end_of_text>",)) == ["<end_of_text>", "done"]
    assert pre_tokenize("!'s  caf\u00e9") == ["!'", "s", "caf\u00e9"]  # a run of punctuation takes the apostrophe


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, tiny_clip_arch):
    return save_random_clip_weights(tmp_path_factory.mktemp("clip") / "tiny.npz", tiny_clip_arch)


def test_random_clip_embeds_and_scores(tiny_path, tiny_clip_arch):
    clip = load_clip(tiny_path)
    images = np.random.default_rng(0).uniform(-1, 1, (5, 24, 24, 3)).astype(np.float32)  # resized to 16
    captions = ["a cat", "a dog", "a photo of a truck", "x", "a much longer caption than twelve tokens"]
    features = clip.fid_features(images, batch_size=2)
    assert features.shape == (5, tiny_clip_arch.embed_dim) and np.isfinite(features).all()
    np.testing.assert_allclose(np.linalg.norm(clip.image_features(images), axis=1), 1.0, rtol=1e-6)
    score, per_example = clip.clip_score(images, captions, return_per_example=True)
    assert per_example.shape == (5,) and np.all(np.abs(per_example) <= 1) and score == pytest.approx(per_example.mean())
    tokens = clip.tokenizer(captions)
    assert tokens.shape == (5, 12) and (tokens[:, 0] == 512).all() and tokens[4, -1] == 513  # cut, still ended


def test_images_in_another_range_are_refused(tiny_path):
    clip = load_clip(tiny_path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"x / 127.5 - 1") as excinfo:
        clip.fid_features(images)
    _one_line(excinfo)


def test_missing_file_names_it_and_the_conversion(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz") as excinfo:
        load_clip(tmp_path / "nowhere.npz")
    assert "trajbench convert-weights clip" in _one_line(excinfo)


def test_an_inception_file_is_not_a_clip(tmp_path):
    from trajbench.metrics.inception import save_random_inception_weights

    path = save_random_inception_weights(tmp_path / "inception.npz")
    with pytest.raises(ClipWeightsError, match=r"inception.npz is not a converted CLIP file \(no __config__") as exc:
        load_clip(path)
    assert "convert-weights clip" in _one_line(exc)


def test_weights_of_another_architecture_name_the_key(tmp_path, tiny_clip_arch):
    path = save_random_clip_weights(tmp_path / "wider.npz", dataclasses.replace(tiny_clip_arch, text_width=128))
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["__config__"] = np.array(re.sub(r'"text_width": 128', '"text_width": 64', str(arrays["__config__"])))
    np.savez(tmp_path / "mislabelled.npz", **arrays)
    with pytest.raises(ClipWeightsError, match=re.escape("first: positional_embedding is (12, 128), expected (12, 64)")):
        load_clip(tmp_path / "mislabelled.npz")

    arrays = dict(np.load(save_random_clip_weights(tmp_path / "ok.npz", tiny_clip_arch)))
    arrays["visual.attnpool.k_proj.weight"] = np.zeros((4, 4), np.float32)  # e.g. a ResNet CLIP's attention pool
    np.savez(tmp_path / "resnet.npz", **arrays)
    with pytest.raises(ClipWeightsError, match=r"another architecture .*visual.attnpool.k_proj.weight") as excinfo:
        load_clip(tmp_path / "resnet.npz")
    _one_line(excinfo)


def test_tokenizer_vocabulary_must_fit_the_embedding(tmp_path, tiny_clip_arch):
    path = save_random_clip_weights(tmp_path / "bpe.npz", tiny_clip_arch, bpe_gz=gzip.compress(b"#version: 0.2\na b\n"))
    with pytest.raises(ClipWeightsError, match="515 tokens but token_embedding.weight has 514"):
        load_clip(path)
