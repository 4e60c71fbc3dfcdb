"""FID Inception-v3 (pool3, 2048-d) features in JAX, with weights read from a local file you supply.

The network is pytorch-fid's FID Inception-v3 -- torchvision's ``Inception3`` patched with
``FIDInceptionA/C/E_1/E_2`` so that it reproduces TensorFlow's 2015-12-05 Inception graph used by the original
FID code: every ``BasicConv2d`` is a bias-free conv, BatchNorm (eps 1e-3, stored running statistics) and ReLU;
the 3x3 average pools of the A, C and first E blocks exclude the zero padding from their averages
(``count_include_pad=False``) and the last E block (``Mixed_7c``) max-pools its pool branch.  The features
are the global average of ``Mixed_7c`` (8x8x2048 for a 299x299 input).  Written with Flax linen, NHWC.

Input: float images ``[N, H, W, 3]`` in [-1, 1] (the project's convention), any size.  As pytorch-fid does
(``resize_input=True``), they are resized bilinearly to 299x299 (``align_corners=False`` half-pixel
sampling, no antialiasing).  pytorch-fid's ``normalize_input`` maps its [0, 1] input by ``2 x - 1`` to the
[-1, 1] range the network expects; our images are already in [-1, 1], so they go in unchanged.

Weights: no weights ship with the project and none are downloaded.  Use pytorch-fid's FID weights
``pt_inception-2015-12-05-6726825d.pth`` (released at
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth),
converted once to ``.npz`` wherever torch is installed::

    trajbench convert-weights inception pt_inception-2015-12-05-6726825d.pth --out inception.npz

The ``.npz`` keys are the torch state-dict names (``Conv2d_1a_3x3.conv.weight`` in OIHW,
``Conv2d_1a_3x3.bn.weight`` / ``.bn.bias`` / ``.bn.running_mean`` / ``.bn.running_var``,
``Mixed_5b.branch1x1.conv.weight``, ...); :func:`inception_state_dict_shapes` lists every key needed.
``fc.*`` (the 1008-way classifier) and ``*.num_batches_tracked`` are ignored.  A ``.pth`` / ``.pt`` file is
read directly when torch happens to be installed.  Usage::

    inception = load_inception("inception.npz")
    feats = inception(images)                      # [N, 2048] float64 pool3 features
    fid = inception_fid(generated, reference, inception)   # reference: images or cached (mu, sigma)
    inception.layer_output(images, "Conv2d_1a_3x3")        # any intermediate layer (NHWC), for checks

:func:`save_random_inception_weights` writes a file of the right layout with random weights, to check a
setup end to end (its features are meaningless as FID features).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from trajbench.auxnet.apply import batched
from trajbench.metrics.external import WeightsError, check_images, read_npz, unreadable
from trajbench.metrics.stats import frechet_distance

__all__ = [
    "FIDInceptionV3",
    "convert_inception_checkpoint",
    "InceptionFeatures",
    "InceptionWeightsError",
    "inception_fid",
    "inception_state_dict_shapes",
    "load_inception",
    "read_state_dict",
    "save_random_inception_weights",
]

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3
CLASSIFIER_SHAPES = {"fc.weight": (1008, FEATURE_DIM), "fc.bias": (1008,)}
"""The FID network's 1008-way classifier: present in the weight file, not used for the features."""

CONVERT_COMMAND = "trajbench convert-weights inception pt_inception-2015-12-05-6726825d.pth --out inception.npz"
_SUPPLY = ("supply pytorch-fid's FID Inception weights converted to .npz "
           f"(where torch is installed: {CONVERT_COMMAND})")


class InceptionWeightsError(WeightsError):
    """The Inception weight file is unreadable, incomplete, or has tensors of the wrong shape."""


# =================================================================================================
# the network (NHWC); layer names are the torch state-dict names
# =================================================================================================
def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nn.Module):
    """Bias-free conv -> BatchNorm (eps 1e-3, running statistics) -> ReLU, with torch's ``kernel_size``,
    ``stride`` and symmetric ``padding`` (an int or ``(pad_h, pad_w)``)."""

    features: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x):
        pad_h, pad_w = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                    padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_excluding_padding(x):
    """3x3 stride-1 average pool over the in-image pixels only (torch ``count_include_pad=False``)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x):
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class MaxPool(nn.Module):
    """3x3 stride-2 max pool without padding (torch ``MaxPool2d(3, stride=2)``)."""

    @nn.compact
    def __call__(self, x):
        return _max_pool_3x3_stride2(x)


class InceptionA(nn.Module):
    """``FIDInceptionA``: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool (padding excluded) -> 1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv2d(64, name="branch1x1")(x)
        branch5x5 = BasicConv2d(48, name="branch5x5_1")(x)
        branch5x5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(branch5x5)
        branch3x3dbl = BasicConv2d(64, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(branch3x3dbl)
        branch_pool = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_3x3_excluding_padding(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
    """torchvision ``InceptionB`` (grid reduction): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
        branch3x3dbl = BasicConv2d(64, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(branch3x3dbl)
        return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """``FIDInceptionC``: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool (padding
    excluded) -> 1x1, with ``channels_7x7`` channels inside the factorised 7x7 branches."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        branch1x1 = BasicConv2d(192, name="branch1x1")(x)
        branch7x7 = BasicConv2d(c7, name="branch7x7_1")(x)
        branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        branch7x7dbl = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
        branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
        branch_pool = BasicConv2d(192, name="branch_pool")(_avg_pool_3x3_excluding_padding(x))
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
    """torchvision ``InceptionD`` (grid reduction): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv2d(192, name="branch3x3_1")(x)
        branch3x3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(branch3x3)
        branch7x7x3 = BasicConv2d(192, name="branch7x7x3_1")(x)
        branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
        branch7x7x3 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """``FIDInceptionE_1`` (``pool="avg"``, padding excluded) / ``FIDInceptionE_2`` (``pool="max"``):
    1x1 | 1x1 -> (1x3 | 3x1) | 1x1 -> 3x3 -> (1x3 | 3x1) | pool -> 1x1."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv2d(320, name="branch1x1")(x)
        branch3x3 = BasicConv2d(384, name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3),
        ], axis=-1)
        branch3x3dbl = BasicConv2d(448, name="branch3x3dbl_1")(x)
        branch3x3dbl = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
        branch3x3dbl = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl),
        ], axis=-1)
        pooled = _max_pool_3x3_same(x) if self.pool == "max" else _avg_pool_3x3_excluding_padding(x)
        branch_pool = BasicConv2d(192, name="branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


FID_INCEPTION_LAYERS = (
    # (torch name, module, its settings)                       output for a 299x299 input
    ("Conv2d_1a_3x3", BasicConv2d, dict(features=32, kernel=3, stride=2)),  # 149x149x32
    ("Conv2d_2a_3x3", BasicConv2d, dict(features=32, kernel=3)),            # 147x147x32
    ("Conv2d_2b_3x3", BasicConv2d, dict(features=64, kernel=3, padding=1)),  # 147x147x64
    ("maxpool1", MaxPool, {}),                                               # 73x73x64
    ("Conv2d_3b_1x1", BasicConv2d, dict(features=80, kernel=1)),            # 73x73x80
    ("Conv2d_4a_3x3", BasicConv2d, dict(features=192, kernel=3)),           # 71x71x192
    ("maxpool2", MaxPool, {}),                                               # 35x35x192
    ("Mixed_5b", InceptionA, dict(pool_features=32)),                        # 35x35x256
    ("Mixed_5c", InceptionA, dict(pool_features=64)),                        # 35x35x288
    ("Mixed_5d", InceptionA, dict(pool_features=64)),                        # 35x35x288
    ("Mixed_6a", InceptionB, {}),                                            # 17x17x768
    ("Mixed_6b", InceptionC, dict(channels_7x7=128)),                        # 17x17x768
    ("Mixed_6c", InceptionC, dict(channels_7x7=160)),                        # 17x17x768
    ("Mixed_6d", InceptionC, dict(channels_7x7=160)),                        # 17x17x768
    ("Mixed_6e", InceptionC, dict(channels_7x7=192)),                        # 17x17x768
    ("Mixed_7a", InceptionD, {}),                                            # 8x8x1280
    ("Mixed_7b", InceptionE, dict(pool="avg")),                              # 8x8x2048
    ("Mixed_7c", InceptionE, dict(pool="max")),                              # 8x8x2048
)
"""The FID Inception-v3 trunk, in order (followed by the global average pool giving the features)."""

LAYER_NAMES = ("resize", *(name for name, _, _ in FID_INCEPTION_LAYERS))
"""Names accepted by ``upto`` / :meth:`InceptionFeatures.layer_output` (``"resize"``: the 299x299 input)."""

FEATURE_LAYER_BY_DIMS = {64: "maxpool1", 192: "maxpool2", 768: "Mixed_6e", FEATURE_DIM: "Mixed_7c"}
"""pytorch-fid's ``--dims`` choices: the features are the spatial average of this layer's output (2048: the
standard pool3 features; the smaller ones are sometimes used when there are few samples)."""


def resize_for_inception(images):
    """Bilinear resize of ``[N, H, W, C]`` to ``[N, 299, 299, C]`` as torch ``F.interpolate(mode="bilinear",
    align_corners=False)`` (half-pixel sampling, no antialiasing), which pytorch-fid uses."""
    n, _, _, c = images.shape
    return jax.image.resize(images, (n, INPUT_SIZE, INPUT_SIZE, c), method="bilinear", antialias=False)


class FIDInceptionV3(nn.Module):
    """Images ``[N, H, W, 3]`` in [-1, 1] -> pool3 features ``[N, 2048]`` (or, with ``upto``, the NHWC output
    of the named layer of :data:`LAYER_NAMES`, computing only the layers up to it)."""

    @nn.compact
    def __call__(self, images, upto: str | None = None):
        x = resize_for_inception(images)
        if upto == "resize":
            return x
        for name, module, settings in FID_INCEPTION_LAYERS:
            x = module(name=name, **settings)(x)
            if name == upto:
                return x
        return jnp.mean(x, axis=(1, 2))


_MODEL = FIDInceptionV3()


@functools.partial(jax.jit, static_argnames=("upto", "spatial_mean"))
def _apply(variables, images, upto=None, spatial_mean=False):
    """The jit-compiled forward pass up to layer ``upto``, optionally averaged over space (module level, so
    every loaded network shares its compilations)."""
    out = _MODEL.apply(variables, images, upto=upto)
    return jnp.mean(out, axis=(1, 2)) if spatial_mean else out


# =================================================================================================
# torch state-dict names <-> Flax variables
# =================================================================================================
_TORCH_TO_FLAX = {
    # torch suffix of a BasicConv2d       (Flax collection, path inside the BasicConv2d)
    "conv.weight": ("params", ("conv", "kernel")),
    "bn.weight": ("params", ("bn", "scale")),
    "bn.bias": ("params", ("bn", "bias")),
    "bn.running_mean": ("batch_stats", ("bn", "mean")),
    "bn.running_var": ("batch_stats", ("bn", "var")),
}


def _hwio_to_oihw_shape(shape) -> tuple[int, ...]:
    h, w, i, o = shape
    return (o, i, h, w)


@functools.lru_cache(maxsize=1)
def _variable_layout() -> tuple[tuple[str, str, tuple[str, ...], tuple[int, ...]], ...]:
    """``(torch key, Flax collection, Flax path, torch shape)`` for every weight of :class:`FIDInceptionV3`,
    read from the module itself (abstract initialisation, nothing computed), in network order."""
    abstract = jax.eval_shape(_MODEL.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
    flat = {coll: traverse_util.flatten_dict(abstract[coll]) for coll in ("params", "batch_stats")}
    layout = []
    for path in flat["params"]:
        if path[-2:] != ("conv", "kernel"):
            continue
        prefix = path[:-2]
        for suffix, (coll, leaf) in _TORCH_TO_FLAX.items():
            shape = tuple(flat[coll][prefix + leaf].shape)
            if suffix == "conv.weight":
                shape = _hwio_to_oihw_shape(shape)
            layout.append((".".join(prefix + (suffix,)), coll, prefix + leaf, shape))
    return tuple(layout)


def inception_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """``{torch state-dict key: shape}`` of every weight the features need (5 per conv layer: the OIHW conv
    weight and the BatchNorm weight, bias, running mean and running variance), in network order.
    Derived from :class:`FIDInceptionV3`; the unused classifier is :data:`CLASSIFIER_SHAPES`."""
    return {key: shape for key, _, _, shape in _variable_layout()}


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The arrays of a weight file: an ``.npz`` of torch state-dict names, or a ``.pth`` / ``.pt`` state dict
    when torch is installed.  Raises FileNotFoundError / :class:`InceptionWeightsError` (one line)."""
    path = Path(path).expanduser()
    if path.suffix in (".pth", ".pt") and path.is_file():
        return _read_torch_state_dict(path)
    return read_npz(path, what="Inception", fix=_SUPPLY, error=InceptionWeightsError)


def _read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise InceptionWeightsError(f"{path} is a PyTorch checkpoint but torch is not installed; convert it to "
                                    f".npz where torch is available: {CONVERT_COMMAND}") from None
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as exc:  # torch raises many types for a bad file
        raise unreadable(path, "Inception", "a torch checkpoint", exc, _SUPPLY, InceptionWeightsError) from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path} holds a {type(state).__name__}, not a state dict; {_SUPPLY}")
    return {key: value.detach().cpu().numpy() for key, value in state.items() if isinstance(value, torch.Tensor)}


def _ignored(key: str) -> bool:
    return key in CLASSIFIER_SHAPES or key.endswith("num_batches_tracked")


def check_state_dict(state: dict, source="weights") -> None:
    """Raise :class:`InceptionWeightsError` (one line) unless ``state`` holds every key of
    :func:`inception_state_dict_shapes` at its shape, as finite floats; warn about keys that suggest the
    wrong network (torchvision's ImageNet Inception instead of the FID one)."""
    expected = inception_state_dict_shapes()
    missing = [key for key in expected if key not in state]
    if missing:
        raise InceptionWeightsError(
            f"{source}: {len(missing)} of {len(expected)} Inception weights missing (first: "
            f"{', '.join(missing[:3])}); {_SUPPLY}")
    wrong = [key for key, shape in expected.items() if tuple(np.shape(state[key])) != shape]
    if wrong:
        key = wrong[0]
        raise InceptionWeightsError(
            f"{source}: {len(wrong)} Inception weights have the wrong shape (first: {key} is "
            f"{tuple(np.shape(state[key]))}, expected {expected[key]}); {_SUPPLY}")
    bad = [key for key in expected
           if np.asarray(state[key]).dtype.kind != "f" or not np.isfinite(state[key]).all()]
    if bad:
        raise InceptionWeightsError(f"{source}: {len(bad)} Inception weights are not finite floats (first: "
                                    f"{bad[0]}); {_SUPPLY}")
    fc = state.get("fc.weight")
    if any(key.startswith("AuxLogits.") for key in state) or (fc is not None and np.shape(fc)[:1] == (1000,)):
        warnings.warn(f"{source} looks like torchvision's ImageNet Inception-v3, not the FID Inception "
                      "(pt_inception-2015-12-05): its FIDs are not comparable with published ones", stacklevel=3)
    extra = [key for key in state if key not in expected and not _ignored(key) and not key.startswith("AuxLogits.")]
    if extra:
        warnings.warn(f"{source}: ignoring {len(extra)} unexpected keys (first: {', '.join(extra[:3])})",
                      stacklevel=3)


def state_dict_to_variables(state: dict) -> dict:
    """Flax variables ``{"params", "batch_stats"}`` of :class:`FIDInceptionV3` from a checked torch state
    dict (conv weights OIHW -> HWIO, all float32)."""
    flat = {"params": {}, "batch_stats": {}}
    for key, coll, path, _ in _variable_layout():
        array = np.asarray(state[key], dtype=np.float32)
        flat[coll][path] = array.transpose(2, 3, 1, 0) if key.endswith("conv.weight") else array
    return {coll: traverse_util.unflatten_dict(leaves) for coll, leaves in flat.items()}


# =================================================================================================
# public API
# =================================================================================================
class InceptionFeatures:
    """The FID Inception-v3 with loaded weights: ``inception(images)`` -> pool3 features ``[N, 2048]``."""

    def __init__(self, variables: dict, source: str = ""):
        self.variables = jax.device_put(variables)
        self.source = source

    def __repr__(self) -> str:
        return f"InceptionFeatures({self.source!r})"

    def __call__(self, images, batch_size: int = 64, *, dims: int = FEATURE_DIM) -> np.ndarray:
        """Features (float64 ``[N, dims]``) of float images ``[N, H, W, 3]`` in [-1, 1], any size, computed
        ``batch_size`` images at a time (one compilation per image size, batch size and ``dims``).
        ``dims=2048``: the pool3 features FID uses; 64 / 192 / 768 as pytorch-fid's ``--dims``."""
        if dims not in FEATURE_LAYER_BY_DIMS:
            raise ValueError(f"dims must be one of {sorted(FEATURE_LAYER_BY_DIMS)} (as pytorch-fid), got {dims!r}")
        return self._run(images, FEATURE_LAYER_BY_DIMS[dims], batch_size, spatial_mean=True).astype(np.float64)

    def layer_output(self, images, layer: str, batch_size: int = 64) -> np.ndarray:
        """Output (float32, NHWC) of the named layer of :data:`LAYER_NAMES` -- e.g. ``"Conv2d_1a_3x3"`` (after
        its ReLU) or ``"resize"`` (the 299x299 network input); only the layers up to it are computed."""
        if layer not in LAYER_NAMES:
            raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYER_NAMES)}")
        return self._run(images, layer, batch_size, spatial_mean=False)

    def _run(self, images, layer: str, batch_size: int, spatial_mean: bool) -> np.ndarray:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = check_images(images)
        forward = functools.partial(_apply, upto=layer, spatial_mean=spatial_mean)
        return batched(forward, self.variables, x, int(batch_size))


def load_inception(path) -> InceptionFeatures:
    """:class:`InceptionFeatures` with the weights of ``path`` (``.npz`` of torch state-dict names, or
    ``.pth`` / ``.pt`` when torch is installed).  FileNotFoundError if it is missing,
    :class:`InceptionWeightsError` if it is unreadable, incomplete or has wrong shapes."""
    state = read_state_dict(path)
    check_state_dict(state, source=str(path))
    return InceptionFeatures(state_dict_to_variables(state), source=str(path))


def inception_fid(images_a, images_b, inception: InceptionFeatures, *, dims: int = FEATURE_DIM,
                  batch_size: int = 64) -> float:
    """FID between two image sets ``[N, H, W, 3]`` in [-1, 1] on ``inception``'s features (pool3 for the
    default ``dims=2048``), by :func:`trajbench.metrics.stats.frechet_distance`.  Either set may instead be
    precomputed ``(mu, sigma)`` statistics (e.g. a cached reference set)."""

    def side(images):
        return tuple(images) if isinstance(images, tuple) else inception(images, batch_size, dims=dims)

    return frechet_distance(side(images_a), side(images_b))


def save_random_inception_weights(path, seed: int = 0) -> Path:
    """Write an ``.npz`` in the layout :func:`load_inception` reads -- every key at its shape, the classifier
    included -- with random weights: He-scaled conv weights (std ``sqrt(2 / fan_in)``, so activations stay
    of order one through the network), BatchNorm weights near 1, small biases and running means, positive
    running variances.  For tests and for checking a setup; its features carry no meaning for FID.
    Returns the path (written exactly there, no ``.npz`` appended)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in {**inception_state_dict_shapes(), **CLASSIFIER_SHAPES}.items():
        if key.endswith("conv.weight") or key == "fc.weight":
            fan_in = int(np.prod(shape[1:]))
            arrays[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif key.endswith("bn.weight"):
            arrays[key] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif key.endswith("running_var"):
            arrays[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:  # bn.bias, bn.running_mean, fc.bias
            arrays[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    path = Path(path)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def convert_inception_checkpoint(checkpoint, out) -> Path:
    """Write pytorch-fid's FID Inception checkpoint (``pt_inception-2015-12-05-6726825d.pth``; needs torch) as the
    ``.npz`` :func:`load_inception` reads, after checking every key and shape; returns ``out``."""
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"Inception checkpoint not found at {checkpoint}: {_SUPPLY}")
    state = _read_torch_state_dict(checkpoint)
    check_state_dict(state, source=str(checkpoint))
    keep = [key for key in {**inception_state_dict_shapes(), **CLASSIFIER_SHAPES} if key in state]
    out = Path(out)
    with open(out, "wb") as handle:
        np.savez(handle, **{key: np.asarray(state[key], np.float32) for key in keep})
    return out
