"""FID Inception-v3 (trajbench.metrics.inception) with random weights written by the test itself.

The whole-network forward pass is compiled once (every full pass here runs in batches of BATCH images of
16x16, resized to 299x299 inside); the other programs stop early (resize, first conv, maxpool1).
"""

import importlib.util
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trajbench.metrics import stats
from trajbench.metrics.inception import (
    FIDInceptionV3,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionWeightsError,
    inception_fid,
    inception_state_dict_shapes,
    load_inception,
    save_random_inception_weights,
)

BATCH = 2


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
    return save_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.npz", seed=0)


@pytest.fixture(scope="module")
def inception(weights_path):
    return load_inception(weights_path)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def features(inception, images):
    return inception(images, batch_size=BATCH)


def _zero_state_dict():
    return {key: np.zeros(shape, np.float32) for key, shape in inception_state_dict_shapes().items()}


def _single_line_message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------
# layout of the weights
# ------------------------------------------------------------------------------------------------
def test_state_dict_shapes_match_torchvision_inception_v3():
    shapes = inception_state_dict_shapes()
    known = {  # torchvision Inception3 / pytorch-fid FID Inception, OIHW
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7_1.conv.weight": (192, 768, 1, 1),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
    }
    for key, shape in known.items():
        assert shapes.get(key) == shape, key

    conv_keys = [key for key in shapes if key.endswith(".conv.weight")]
    assert len(conv_keys) == 94
    assert len(shapes) == 5 * 94  # conv weight + BatchNorm weight, bias, running mean, running variance
    for key in conv_keys:
        layer, out_channels = key[: -len(".conv.weight")], shapes[key][0]
        for bn in ("weight", "bias", "running_mean", "running_var"):
            assert shapes[f"{layer}.bn.{bn}"] == (out_channels,), layer
    per_block = {block: sum(key.startswith(block + ".") for key in conv_keys)
                 for block in ("Mixed_5b", "Mixed_6a", "Mixed_6b", "Mixed_7a", "Mixed_7b", "Mixed_7c")}
    assert per_block == {"Mixed_5b": 7, "Mixed_6a": 4, "Mixed_6b": 10, "Mixed_7a": 6, "Mixed_7b": 9, "Mixed_7c": 9}
    assert not [key for key in shapes if key.startswith(("fc.", "AuxLogits."))]


def test_layer_output_sizes_for_a_299_input():
    model = FIDInceptionV3()
    x = jax.ShapeDtypeStruct((1, 40, 30, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    _, captured = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x)
    sizes = {name: out["__call__"][0].shape[1:] for name, out in captured["intermediates"].items()
             if name != "__call__"}
    assert sizes == {  # torchvision's Inception3._forward comments
        "Conv2d_1a_3x3": (149, 149, 32), "Conv2d_2a_3x3": (147, 147, 32), "Conv2d_2b_3x3": (147, 147, 64),
        "maxpool1": (73, 73, 64), "Conv2d_3b_1x1": (73, 73, 80), "Conv2d_4a_3x3": (71, 71, 192),
        "maxpool2": (35, 35, 192), "Mixed_5b": (35, 35, 256), "Mixed_5c": (35, 35, 288), "Mixed_5d": (35, 35, 288),
        "Mixed_6a": (17, 17, 768), "Mixed_6b": (17, 17, 768), "Mixed_6c": (17, 17, 768), "Mixed_6d": (17, 17, 768),
        "Mixed_6e": (17, 17, 768), "Mixed_7a": (8, 8, 1280), "Mixed_7b": (8, 8, 2048), "Mixed_7c": (8, 8, 2048),
    }
    assert captured["intermediates"]["__call__"][0].shape == (1, 2048)


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------
def test_random_weights_give_finite_deterministic_features(weights_path, images, features):
    assert features.shape == (4, 2048) and features.dtype == np.float64
    assert np.isfinite(features).all()
    assert np.ptp(features, axis=0).max() > 1e-3  # different images, different features

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the classifier (fc.*) in the file is ignored without a warning
        reloaded = load_inception(weights_path)
    np.testing.assert_array_equal(reloaded(images, batch_size=BATCH), features)


def test_batching_pads_the_last_batch_and_keeps_the_order(inception, images, features):
    np.testing.assert_allclose(inception(images[:3], batch_size=BATCH), features[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inception(images[::-1], batch_size=BATCH), features[::-1], rtol=1e-5, atol=1e-6)


def test_images_beyond_the_range_are_clipped_to_it(inception, images):
    overshoot = images[:2] * 1.5  # an unclipped sampler's output
    np.testing.assert_array_equal(inception.layer_output(overshoot, "resize"),
                                  inception.layer_output(np.clip(overshoot, -1.0, 1.0), "resize"))


def test_images_in_another_range_are_refused(inception, images):
    with pytest.raises(ValueError, match=r"\[-1, 1\], got values in \[0.*x / 127.5 - 1") as excinfo:
        inception((images + 1) * 127.5, batch_size=BATCH)  # [0, 255] floats
    _single_line_message(excinfo)


@pytest.mark.skipif(importlib.util.find_spec("pytorch_fid") is None,
                    reason="pytorch-fid (and torch) not installed (pip install 'trajbench[bench]')")
def test_pool3_features_match_pytorch_fid_with_the_same_random_weights(weights_path, images, features, monkeypatch):
    """pytorch-fid's FID Inception built with our random weights in place of its download (it loads them through
    ``load_state_dict_from_url``), fed [0, 1] images as it expects."""
    import torch
    from pytorch_fid import inception as pytorch_fid_inception

    state = {key: torch.from_numpy(value) for key, value in np.load(weights_path).items()}
    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
    network = pytorch_fid_inception.InceptionV3([3]).eval()  # pool3, resize to 299, [0, 1] -> [-1, 1]
    with torch.no_grad():
        (pool3,) = network(torch.from_numpy((images[:1] + 1) / 2).permute(0, 3, 1, 2))
    np.testing.assert_allclose(features[:1], pool3[:, :, 0, 0].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed (the bench extra)")
def test_convert_weights_writes_the_npz_that_load_inception_reads(weights_path, tmp_path, capsys):
    import torch

    from trajbench.cli import main

    with np.load(weights_path) as archive:
        state = dict(archive)
    checkpoint, out = tmp_path / "pt_inception-2015-12-05-6726825d.pth", tmp_path / "converted.npz"
    torch.save({key: torch.from_numpy(value) for key, value in state.items()}, checkpoint)
    assert main(["convert-weights", "inception", str(checkpoint), "--out", str(out)]) == 0
    assert f"inception:{out}" in capsys.readouterr().out
    with np.load(out) as converted:
        assert sorted(converted.files) == sorted(state)
        for key in state:
            np.testing.assert_array_equal(converted[key], state[key])


def _torch_bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
    """NHWC numpy version of torch ``F.interpolate(mode="bilinear", align_corners=False)``."""

    def taps(n_in):
        src = np.maximum((np.arange(size) + 0.5) * (n_in / size) - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = taps(x.shape[1])
    x0, x1, fx = taps(x.shape[2])
    rows = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def test_first_conv_layer_matches_an_independent_numpy_computation(inception, weights_path, images):
    x = images[:2]
    resized = _torch_bilinear_resize(x.astype(np.float64), 299)
    np.testing.assert_allclose(inception.layer_output(x, "resize", batch_size=BATCH), resized, rtol=1e-5, atol=1e-5)
    # downsampled: no antialiasing, like torch (float32 sample positions put the values ~1e-4 off float64)
    larger = np.random.default_rng(2).uniform(-1, 1, (1, 331, 320, 3)).astype(np.float32)
    np.testing.assert_allclose(inception.layer_output(larger, "resize"),
                               _torch_bilinear_resize(larger.astype(np.float64), 299), rtol=0, atol=5e-4)

    with np.load(weights_path) as npz:
        weight, gamma, beta, mean, var = (npz[f"Conv2d_1a_3x3.{name}"].astype(np.float64) for name in
                                          ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"))
    windows = np.lib.stride_tricks.sliding_window_view(resized, (3, 3), axis=(1, 2))[:, ::2, ::2]  # [N,149,149,C,3,3]
    conv = np.einsum("nhwcij,ocij->nhwo", windows, weight)  # weight is OIHW
    expected = np.maximum((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0.0)
    assert 0.1 < (expected > 0).mean() < 0.9  # a comparison of non-trivial activations

    got = inception.layer_output(x, "Conv2d_1a_3x3", batch_size=BATCH)
    assert got.shape == (2, 149, 149, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# numpy (float64, NHWC) re-statement of torchvision's blocks with pytorch-fid's patches, from the npz arrays
def _np_conv(x, weights, layer, stride=1, padding=(0, 0)):
    """BasicConv2d: conv (OIHW weight, no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU."""
    w = weights[f"{layer}.conv.weight"].astype(np.float64)
    pad_h, pad_w = padding
    x = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
    y = np.tensordot(windows, w, axes=([3, 4, 5], [1, 2, 3]))
    gamma, beta, mean, var = (weights[f"{layer}.bn.{name}"].astype(np.float64)
                              for name in ("weight", "bias", "running_mean", "running_var"))
    return np.maximum((y - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0.0)


def _np_pool(x, kind, stride=1, padding=1):
    """3x3 pool; "avg" divides by the number of in-image pixels (torch ``count_include_pad=False``)."""
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    if kind == "max":
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, pads, constant_values=-np.inf), (3, 3),
                                                           axis=(1, 2))
        return windows[:, ::stride, ::stride].max(axis=(-2, -1))
    sums = np.lib.stride_tricks.sliding_window_view(np.pad(x, pads), (3, 3), axis=(1, 2)).sum(axis=(-2, -1))
    counts = np.lib.stride_tricks.sliding_window_view(np.pad(np.ones_like(x[:1, ..., :1]), pads), (3, 3),
                                                      axis=(1, 2)).sum(axis=(-2, -1))
    return (sums / counts)[:, ::stride, ::stride]


def _np_block(kind, x, w, name):
    def conv(inp, branch, stride=1, padding=(0, 0)):
        return _np_conv(inp, w, f"{name}.{branch}", stride, padding)

    cat = np.concatenate
    if kind == "A":
        b5 = conv(conv(x, "branch5x5_1"), "branch5x5_2", padding=(2, 2))
        b3 = conv(conv(conv(x, "branch3x3dbl_1"), "branch3x3dbl_2", padding=(1, 1)), "branch3x3dbl_3", padding=(1, 1))
        return cat([conv(x, "branch1x1"), b5, b3, conv(_np_pool(x, "avg"), "branch_pool")], axis=-1)
    if kind == "B":
        b3 = conv(conv(conv(x, "branch3x3dbl_1"), "branch3x3dbl_2", padding=(1, 1)), "branch3x3dbl_3", stride=2)
        return cat([conv(x, "branch3x3", stride=2), b3, _np_pool(x, "max", stride=2, padding=0)], axis=-1)
    if kind == "C":
        b7 = conv(conv(conv(x, "branch7x7_1"), "branch7x7_2", padding=(0, 3)), "branch7x7_3", padding=(3, 0))
        d = conv(x, "branch7x7dbl_1")
        for i, pad in zip((2, 3, 4, 5), ((3, 0), (0, 3), (3, 0), (0, 3))):
            d = conv(d, f"branch7x7dbl_{i}", padding=pad)
        return cat([conv(x, "branch1x1"), b7, d, conv(_np_pool(x, "avg"), "branch_pool")], axis=-1)
    if kind == "D":
        b3 = conv(conv(x, "branch3x3_1"), "branch3x3_2", stride=2)
        b7 = conv(conv(conv(x, "branch7x7x3_1"), "branch7x7x3_2", padding=(0, 3)), "branch7x7x3_3", padding=(3, 0))
        return cat([b3, conv(b7, "branch7x7x3_4", stride=2), _np_pool(x, "max", stride=2, padding=0)], axis=-1)
    b3 = conv(x, "branch3x3_1")
    d = conv(conv(x, "branch3x3dbl_1"), "branch3x3dbl_2", padding=(1, 1))
    pool = "avg" if kind == "E_1" else "max"
    return cat([conv(x, "branch1x1"),
                conv(b3, "branch3x3_2a", padding=(0, 1)), conv(b3, "branch3x3_2b", padding=(1, 0)),
                conv(d, "branch3x3dbl_3a", padding=(0, 1)), conv(d, "branch3x3dbl_3b", padding=(1, 0)),
                conv(_np_pool(x, pool), "branch_pool")], axis=-1)


@pytest.mark.parametrize("name, kind, module, in_channels", [
    ("Mixed_5b", "A", InceptionA(pool_features=32), 192),
    ("Mixed_6a", "B", InceptionB(), 288),
    ("Mixed_6b", "C", InceptionC(channels_7x7=128), 768),
    ("Mixed_7a", "D", InceptionD(), 768),
    ("Mixed_7b", "E_1", InceptionE(pool="avg"), 1280),
    ("Mixed_7c", "E_2", InceptionE(pool="max"), 2048),
])
def test_inception_blocks_match_a_numpy_restatement(inception, weights_path, name, kind, module, in_channels):
    # small maps (mostly border pixels), so the padding rules of the pools and the asymmetric kernels matter
    x = np.random.default_rng(1).uniform(0, 2, (2, 7, 9, in_channels)).astype(np.float32)
    variables = {coll: inception.variables[coll][name] for coll in ("params", "batch_stats")}
    got = np.asarray(jax.jit(module.apply)(variables, x))
    with np.load(weights_path) as npz:
        weights = {key: npz[key] for key in npz.files if key.startswith(name + ".")}
    expected = _np_block(kind, x.astype(np.float64), weights, name)
    assert got.shape == expected.shape
    assert 0.1 < (expected > 0).mean() < 0.95
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_inception_fid_is_zero_for_a_set_with_itself_and_positive_for_different_sets(inception, images):
    # dims=64 (pytorch-fid's smallest feature set): the 2048x2048 matrix square root of the default pool3 FID
    # takes minutes on a small CPU; frechet_distance itself is tested in test_metrics.
    constant = np.broadcast_to(np.array([-0.6, -0.1, 0.3, 0.8], np.float32)[:, None, None, None], images.shape)
    same = inception_fid(images, images, inception, dims=64, batch_size=BATCH)
    different = inception_fid(images, constant, inception, dims=64, batch_size=BATCH)
    assert different > 1e-3
    assert same <= 1e-6 * different

    feats_a = inception(images, batch_size=BATCH, dims=64)
    feats_b = inception(constant, batch_size=BATCH, dims=64)
    assert feats_a.shape == (4, 64)
    assert different == pytest.approx(stats.frechet_distance(feats_a, feats_b), rel=1e-9)
    cached = stats.feature_statistics(feats_b)
    assert inception_fid(images, cached, inception, dims=64, batch_size=BATCH) == pytest.approx(different, rel=1e-9)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_invalid_images_and_options_raise_one_line_value_errors(inception, images):
    bad_inputs = [
        (images * 127.5 + 127.5).astype(np.uint8),  # uint8 instead of floats in [-1, 1]
        images[..., 0],  # no channel axis
        images[:0],  # no images
        np.where(np.arange(3) == 1, np.nan, images),  # NaN
    ]
    for bad in bad_inputs:
        with pytest.raises(ValueError) as excinfo:
            inception(bad, batch_size=BATCH)
        _single_line_message(excinfo)
    with pytest.raises(ValueError, match="dims"):
        inception(images, dims=100)
    with pytest.raises(ValueError, match="unknown layer"):
        inception.layer_output(images, "Mixed_9z")


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "no-such-inception.npz"
    with pytest.raises(FileNotFoundError, match="no-such-inception.npz") as excinfo:
        load_inception(path)
    assert ".npz" in _single_line_message(excinfo)


def test_npz_missing_a_key_names_it_on_one_line(tmp_path):
    key = "Mixed_6c.branch7x7dbl_3.bn.running_var"
    state = _zero_state_dict()
    del state[key]
    path = tmp_path / "incomplete.npz"
    np.savez_compressed(path, **state)
    assert issubclass(InceptionWeightsError, ValueError)
    with pytest.raises(InceptionWeightsError, match=re.escape(key)) as excinfo:
        load_inception(path)
    assert "1 of 470" in _single_line_message(excinfo)


def test_wrong_shape_names_the_key(tmp_path):
    key = "Mixed_7c.branch3x3dbl_3b.conv.weight"
    state = _zero_state_dict()
    state[key] = np.zeros((384, 384, 1, 3), np.float32)  # the (1, 3) kernel's shape instead of (3, 1)
    path = tmp_path / "wrong-shape.npz"
    np.savez_compressed(path, **state)
    with pytest.raises(InceptionWeightsError, match=re.escape(key)) as excinfo:
        load_inception(path)
    assert "expected (384, 384, 3, 1)" in _single_line_message(excinfo)


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_unreadable_file_raises_one_line_weights_error(tmp_path, weights_path, corruption):
    path = tmp_path / "corrupt.npz"
    if corruption == "garbage":
        path.write_bytes(b"this is not an npz archive\n" * 10)
    else:
        with open(weights_path, "rb") as handle:
            path.write_bytes(handle.read(1 << 20))
    with pytest.raises(InceptionWeightsError, match="corrupt.npz") as excinfo:
        load_inception(path)
    _single_line_message(excinfo)


def test_pth_without_torch_explains_the_conversion(tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: .pth files are read directly")
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    path.write_bytes(b"\x80\x02 not really a checkpoint")
    with pytest.raises(InceptionWeightsError, match="torch is not installed") as excinfo:
        load_inception(path)
    message = _single_line_message(excinfo)
    assert "trajbench convert-weights inception" in message and ".npz" in message
