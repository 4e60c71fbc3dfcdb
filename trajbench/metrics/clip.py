"""CLIP (OpenAI / OpenCLIP ViT, e.g. ViT-B/32 and ViT-L/14) in Flax, with its BPE tokenizer, loading weights
from a local ``.npz`` you convert once.  Used for FID on CLIP image features and for CLIP score.

Architecture (Radford et al. 2021, as ``open_clip.model.CLIP`` builds it for the ViT configs):

* every transformer block is pre-LN: ``x += MHA(LN_1(x))``, ``x += c_proj(act(c_fc(LN_2(x))))``, hidden width
  4 x width, LayerNorm eps 1e-5, 64-wide heads; ``act`` is exact GELU, or QuickGELU ``x sigmoid(1.702 x)`` for
  OpenAI's weights (and OpenCLIP's ``-quickgelu`` models);
* image tower: a bias-free ``patch x patch`` conv with stride ``patch`` -> ``[class token, patches]`` + learned
  positions -> ``ln_pre`` -> blocks -> ``ln_post`` of the class token -> ``@ proj``;
* text tower: BPE tokens (``<start_of_text> ... <end_of_text>``, zero-padded to 77) -> token + learned position
  embeddings -> causally masked blocks -> ``ln_final`` -> the features at the end-of-text token (the largest id in
  the sequence) -> ``@ text_projection``.

Images ``[N, H, W, 3]`` in [-1, 1], any size, are resized to the tower's input size (bicubic, Keys a = -0.5 as
PIL's bicubic in OpenAI's preprocessing, antialiased when shrinking), mapped to [0, 1] and normalised with
OpenAI's channel mean and std.  CLIP score is the cosine between an image's and its caption's embeddings
(SD3's Table scale, e.g. 0.25); the FID features are the image embeddings (``encode_image``, not normalised).

Weights: no weights ship and none are downloaded.  Convert an OpenCLIP checkpoint or OpenAI's TorchScript
archive once, where torch and ``open_clip_torch`` are installed (the ``bench`` extra)::

    trajbench convert-weights clip --model ViT-B-32 CHECKPOINT --out clip-vit-b-32.npz

(``--model`` is an OpenCLIP model name: ``ViT-B-32`` / ``ViT-L-14``; OpenAI's archives are recognised and get
QuickGELU).  The ``.npz`` holds the torch state-dict arrays, the architecture (``__config__``, JSON) and the
tokenizer's BPE merges (``__bpe__``, the gzipped ``bpe_simple_vocab_16e6.txt.gz`` that ships inside
``open_clip``), so it is all :func:`load_clip` needs::

    clip = load_clip("clip-vit-b-32.npz")
    clip.fid_features(images)                     # [N, embed_dim] float64
    clip.clip_score(images, captions)             # mean cosine image / own caption
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import html
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from trajbench.auxnet.apply import batched
from trajbench.metrics.external import WeightsError, check_images, read_npz

__all__ = [
    "ARCHITECTURES",
    "CLIP",
    "ClipArch",
    "ClipModel",
    "ClipTokenizer",
    "ClipWeightsError",
    "clip_state_dict_shapes",
    "convert_open_clip",
    "load_clip",
    "save_open_clip_model",
    "save_random_clip_weights",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPSILON = 1e-5
HEAD_WIDTH = 64
CONFIG_KEY, BPE_KEY = "__config__", "__bpe__"
IGNORED_KEYS = ("logit_scale", "attn_mask", "input_resolution", "context_length", "vocab_size")

CONVERT_COMMAND = "trajbench convert-weights clip --model ViT-B-32 CHECKPOINT --out clip.npz"
_SUPPLY = f"convert an OpenCLIP / OpenAI checkpoint where torch and open_clip are installed: {CONVERT_COMMAND}"


class ClipWeightsError(WeightsError):
    """The CLIP weight file is unreadable, not a converted CLIP, or of another architecture than it says."""


@dataclass(frozen=True)
class ClipArch:
    """A CLIP ViT's sizes (OpenCLIP config names: ``vision_cfg`` / ``text_cfg``)."""

    name: str
    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    quick_gelu: bool = False

    @property
    def vision_heads(self) -> int:
        return self.vision_width // HEAD_WIDTH

    @property
    def text_heads(self) -> int:
        return self.text_width // HEAD_WIDTH

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


ARCHITECTURES = {
    "ViT-B-32": ClipArch("ViT-B-32", 512, 224, 32, 768, 12, text_width=512, text_layers=12),
    "ViT-L-14": ClipArch("ViT-L-14", 768, 224, 14, 1024, 24, text_width=768, text_layers=12),
}
"""The OpenCLIP configs of the two models the SD3 paper's metrics are usually computed with (exact GELU; the
OpenAI weights of the same names use QuickGELU, ``quick_gelu=True``)."""


# =================================================================================================
# the network
# =================================================================================================
def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


class Mlp(nn.Module):
    quick_gelu: bool

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(4 * width, name="c_fc")(x)
        x = quick_gelu(x) if self.quick_gelu else nn.gelu(x, approximate=False)
        return nn.Dense(width, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""

    heads: int
    quick_gelu: bool

    @nn.compact
    def __call__(self, x, mask=None):
        y = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(y, y, mask=mask)
        return x + Mlp(self.quick_gelu, name="mlp")(nn.LayerNorm(epsilon=LN_EPSILON, name="ln_2")(x))


class Transformer(nn.Module):
    layers: int
    heads: int
    quick_gelu: bool

    @nn.compact
    def __call__(self, x, mask=None):
        for i in range(self.layers):
            x = ResidualAttentionBlock(self.heads, self.quick_gelu, name=f"resblocks_{i}")(x, mask)
        return x


def _normal(std: float):
    return nn.initializers.normal(std)


class VisionTransformer(nn.Module):
    """Normalised pixels ``[N, S, S, 3]`` -> image embeddings ``[N, embed_dim]``."""

    arch: ClipArch

    @nn.compact
    def __call__(self, pixels):
        a = self.arch
        x = nn.Conv(a.vision_width, (a.patch_size, a.patch_size), strides=(a.patch_size, a.patch_size),
                    padding="VALID", use_bias=False, name="conv1")(pixels)
        x = x.reshape(x.shape[0], -1, a.vision_width)
        cls = self.param("class_embedding", _normal(0.02), (a.vision_width,))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, a.vision_width)), x], axis=1)
        x = x + self.param("positional_embedding", _normal(0.01), (a.grid**2 + 1, a.vision_width))
        x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_pre")(x)
        x = Transformer(a.vision_layers, a.vision_heads, a.quick_gelu, name="transformer")(x)
        x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_post")(x[:, 0])
        return x @ self.param("proj", _normal(0.02), (a.vision_width, a.embed_dim))


class TextTransformer(nn.Module):
    """Token ids ``[N, context_length]`` -> text embeddings ``[N, embed_dim]`` (at the end-of-text token)."""

    arch: ClipArch

    @nn.compact
    def __call__(self, tokens):
        a = self.arch
        x = nn.Embed(a.vocab_size, a.text_width, name="token_embedding")(tokens)
        x = x + self.param("positional_embedding", _normal(0.01), (a.context_length, a.text_width))
        x = Transformer(a.text_layers, a.text_heads, a.quick_gelu, name="transformer")(x, nn.make_causal_mask(tokens))
        x = nn.LayerNorm(epsilon=LN_EPSILON, name="ln_final")(x)
        x = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
        return x @ self.param("text_projection", _normal(0.02), (a.text_width, a.embed_dim))


class CLIP(nn.Module):
    """Both towers: ``apply(v, pixels, method="encode_image")``, ``apply(v, tokens, method="encode_text")``."""

    arch: ClipArch

    def setup(self):
        self.visual = VisionTransformer(self.arch)
        self.text = TextTransformer(self.arch)

    def encode_image(self, pixels):
        return self.visual(pixels)

    def encode_text(self, tokens):
        return self.text(tokens)

    def __call__(self, pixels, tokens):
        return self.encode_image(pixels), self.encode_text(tokens)


def preprocess(images, image_size: int):
    """[-1, 1] images of any size -> the image tower's normalised ``[N, S, S, 3]`` input (see module docstring)."""
    n, _, _, c = images.shape
    x = jax.image.resize(images, (n, image_size, image_size, c), method="bicubic")
    x = (x + 1.0) / 2.0
    return (x - jnp.asarray(OPENAI_MEAN)) / jnp.asarray(OPENAI_STD)


@functools.partial(jax.jit, static_argnames=("arch",))
def _image_embeddings(params, images, arch: ClipArch):
    return CLIP(arch).apply({"params": params}, preprocess(images, arch.image_size), method="encode_image")


@functools.partial(jax.jit, static_argnames=("arch",))
def _text_embeddings(params, tokens, arch: ClipArch):
    return CLIP(arch).apply({"params": params}, tokens, method="encode_text")


# =================================================================================================
# the tokenizer (OpenAI's byte-level BPE)
# =================================================================================================
@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible map of the 256 bytes to printable characters (GPT-2's)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def _char_class(ch: str) -> str:
    if ch.isspace():
        return "space"
    category = unicodedata.category(ch)[0]
    return {"L": "letter", "N": "number"}.get(category, "other")


def pre_tokenize(text: str, specials=()) -> list[str]:
    """CLIP's word split, the regex ``specials|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+``
    (case-insensitive) written out with ``unicodedata``: special tokens, contractions, runs of letters, single
    digits, runs of other non-space characters."""
    words, i, lower = [], 0, text.lower()
    while i < len(text):
        kind = _char_class(text[i])
        match = next((s for s in (*specials, *_CONTRACTIONS) if lower.startswith(s.lower(), i)), None)
        if match:
            end = i + len(match)
        elif kind == "space":
            i += 1
            continue
        elif kind == "number":
            end = i + 1
        else:
            end = i + 1
            while end < len(text) and _char_class(text[end]) == kind:
                end += 1
        words.append(text[i:end])
        i = end
    return words


class ClipTokenizer:
    """OpenAI CLIP's byte-level BPE (``open_clip.tokenizer.SimpleTokenizer`` with its default ``lower``
    cleaning): HTML entities unescaped, whitespace collapsed, lower-cased, split by :func:`pre_tokenize`, each
    word's UTF-8 bytes merged by the ranked BPE merges, then ``<start_of_text> ids <end_of_text>`` cut / zero-padded
    to ``context_length`` (a cut sequence still ends with ``<end_of_text>``).  Unlike open_clip it does not run
    ``ftfy.fix_text`` (which repairs mojibake; clean captions are unchanged by it)."""

    SPECIALS = ("<start_of_text>", "<end_of_text>")

    def __init__(self, bpe_gz: bytes, context_length: int = 77):
        lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1] if line.strip()]
        vocab = list(bytes_to_unicode().values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(self.SPECIALS)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.context_length = int(context_length)
        self.sot, self.eot = self.encoder[self.SPECIALS[0]], self.encoder[self.SPECIALS[1]]
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_file(cls, path, context_length: int = 77) -> "ClipTokenizer":
        """From a ``bpe_simple_vocab_16e6.txt.gz`` on disk (it ships inside ``open_clip``)."""
        return cls(Path(path).expanduser().read_bytes(), context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> list[str]:
        """The BPE pieces of one pre-tokenised word (already mapped by :func:`bytes_to_unicode`)."""
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        byte_map = bytes_to_unicode()
        ids = []
        for word in pre_tokenize(text, self.SPECIALS):
            if word in self.SPECIALS:
                ids.append(self.encoder[word])
                continue
            ids += [self.encoder[piece] for piece in self.bpe("".join(byte_map[b] for b in word.encode("utf-8")))]
        return ids

    def __call__(self, captions) -> np.ndarray:
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, not one string")
        out = np.zeros((len(captions), self.context_length), np.int32)
        for row, caption in enumerate(captions):
            ids = [self.sot, *self.encode(str(caption)), self.eot][: self.context_length]
            ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out


# =================================================================================================
# torch state-dict names <-> Flax parameters
# =================================================================================================
def _block_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.attn.in_proj_weight": (3 * width, width), f"{prefix}.attn.in_proj_bias": (3 * width,),
            f"{prefix}.attn.out_proj.weight": (width, width), f"{prefix}.attn.out_proj.bias": (width,),
            f"{prefix}.ln_1.weight": (width,), f"{prefix}.ln_1.bias": (width,),
            f"{prefix}.mlp.c_fc.weight": (4 * width, width), f"{prefix}.mlp.c_fc.bias": (4 * width,),
            f"{prefix}.mlp.c_proj.weight": (width, 4 * width), f"{prefix}.mlp.c_proj.bias": (width,),
            f"{prefix}.ln_2.weight": (width,), f"{prefix}.ln_2.bias": (width,)}


def clip_state_dict_shapes(arch: ClipArch) -> dict[str, tuple[int, ...]]:
    """``{torch state-dict key: shape}`` of every weight of ``open_clip.model.CLIP`` for ``arch`` (without
    ``logit_scale``)."""
    a, vw, tw = arch, arch.vision_width, arch.text_width
    shapes = {"visual.class_embedding": (vw,), "visual.positional_embedding": (a.grid**2 + 1, vw),
              "visual.proj": (vw, a.embed_dim), "visual.conv1.weight": (vw, 3, a.patch_size, a.patch_size),
              "visual.ln_pre.weight": (vw,), "visual.ln_pre.bias": (vw,),
              "visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,)}
    for i in range(a.vision_layers):
        shapes |= _block_shapes(f"visual.transformer.resblocks.{i}", vw)
    shapes |= {"positional_embedding": (a.context_length, tw), "text_projection": (tw, a.embed_dim),
               "token_embedding.weight": (a.vocab_size, tw), "ln_final.weight": (tw,), "ln_final.bias": (tw,)}
    for i in range(a.text_layers):
        shapes |= _block_shapes(f"transformer.resblocks.{i}", tw)
    return shapes


def _block_params(state: dict, prefix: str, heads: int) -> dict:
    """One block's Flax parameters from torch's ``nn.MultiheadAttention`` (packed q, k, v) and ``nn.Linear``
    (``[out, in]``) weights."""
    width = state[f"{prefix}.ln_1.weight"].shape[0]
    w_qkv, b_qkv = state[f"{prefix}.attn.in_proj_weight"], state[f"{prefix}.attn.in_proj_bias"]
    attn = {name: {"kernel": w_qkv[k * width:(k + 1) * width].T.reshape(width, heads, -1),
                   "bias": b_qkv[k * width:(k + 1) * width].reshape(heads, -1)}
            for k, name in enumerate(("query", "key", "value"))}
    attn["out"] = {"kernel": state[f"{prefix}.attn.out_proj.weight"].T.reshape(heads, -1, width),
                   "bias": state[f"{prefix}.attn.out_proj.bias"]}
    layer_norm = lambda name: {"scale": state[f"{prefix}.{name}.weight"], "bias": state[f"{prefix}.{name}.bias"]}  # noqa: E731
    linear = lambda name: {"kernel": state[f"{prefix}.mlp.{name}.weight"].T, "bias": state[f"{prefix}.mlp.{name}.bias"]}  # noqa: E731
    return {"ln_1": layer_norm("ln_1"), "attn": attn, "ln_2": layer_norm("ln_2"),
            "mlp": {"c_fc": linear("c_fc"), "c_proj": linear("c_proj")}}


def state_dict_to_params(state: dict, arch: ClipArch) -> dict:
    """Flax parameters of :class:`CLIP` from a checked open_clip state dict (float32)."""
    state = {key: np.asarray(value, np.float32) for key, value in state.items()}
    ln = lambda prefix: {"scale": state[f"{prefix}.weight"], "bias": state[f"{prefix}.bias"]}  # noqa: E731
    visual = {
        "conv1": {"kernel": state["visual.conv1.weight"].transpose(2, 3, 1, 0)},
        "class_embedding": state["visual.class_embedding"],
        "positional_embedding": state["visual.positional_embedding"],
        "ln_pre": ln("visual.ln_pre"), "ln_post": ln("visual.ln_post"), "proj": state["visual.proj"],
        "transformer": {f"resblocks_{i}": _block_params(state, f"visual.transformer.resblocks.{i}", arch.vision_heads)
                        for i in range(arch.vision_layers)},
    }
    text = {
        "token_embedding": {"embedding": state["token_embedding.weight"]},
        "positional_embedding": state["positional_embedding"],
        "ln_final": ln("ln_final"), "text_projection": state["text_projection"],
        "transformer": {f"resblocks_{i}": _block_params(state, f"transformer.resblocks.{i}", arch.text_heads)
                        for i in range(arch.text_layers)},
    }
    return {"visual": visual, "text": text}


def check_state_dict(state: dict, arch: ClipArch, source: str) -> None:
    """Raise :class:`ClipWeightsError` (one line) unless ``state`` has every key of ``arch`` at its shape, as
    finite floats, and no key of another architecture."""
    expected = clip_state_dict_shapes(arch)
    missing = [key for key in expected if key not in state]
    if missing:
        raise ClipWeightsError(f"{source}: {len(missing)} of {len(expected)} CLIP {arch.name} weights missing "
                               f"(first: {', '.join(missing[:3])}); {_SUPPLY}")
    wrong = [key for key, shape in expected.items() if tuple(state[key].shape) != shape]
    if wrong:
        raise ClipWeightsError(f"{source}: {len(wrong)} weights do not fit CLIP {arch.name} (first: {wrong[0]} is "
                               f"{tuple(state[wrong[0]].shape)}, expected {expected[wrong[0]]}); {_SUPPLY}")
    extra = [key for key in state if key not in expected and key not in IGNORED_KEYS]
    if extra:
        raise ClipWeightsError(f"{source}: {len(extra)} weights of another architecture than CLIP {arch.name} "
                               f"(first: {', '.join(extra[:3])}); only OpenAI-style ViT CLIPs are supported; {_SUPPLY}")
    bad = [key for key in expected if state[key].dtype.kind != "f" or not np.isfinite(state[key]).all()]
    if bad:
        raise ClipWeightsError(f"{source}: {len(bad)} CLIP weights are not finite floats (first: {bad[0]}); {_SUPPLY}")


# =================================================================================================
# public API
# =================================================================================================
class ClipModel:
    """A CLIP with loaded weights and its tokenizer: image / text embeddings, FID features, CLIP score."""

    def __init__(self, params: dict, arch: ClipArch, tokenizer: ClipTokenizer, source: str = ""):
        self.params = jax.device_put(params)
        self.arch = arch
        self.tokenizer = tokenizer
        self.source = source

    def __repr__(self) -> str:
        return f"ClipModel({self.arch.name!r}, {self.source!r})"

    def image_features(self, images, *, normalize: bool = True, batch_size: int = 128) -> np.ndarray:
        """Image embeddings (float64 ``[N, embed_dim]``) of ``[N, H, W, 3]`` images in [-1, 1], L2-normalised
        unless ``normalize=False``."""
        x = check_images(images)
        out = batched(functools.partial(_image_embeddings, arch=self.arch), self.params, x, batch_size)
        return _normalised(out) if normalize else out.astype(np.float64)

    def text_features(self, captions, *, batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings (float64 ``[N, embed_dim]``) of a list of captions."""
        tokens = self.tokenizer(list(captions))
        return _normalised(batched(functools.partial(_text_embeddings, arch=self.arch), self.params, tokens,
                                   batch_size))

    def fid_features(self, images, *, batch_size: int = 128) -> np.ndarray:
        """The image embeddings, not normalised: the features of FID / KID on CLIP."""
        return self.image_features(images, normalize=False, batch_size=batch_size)

    def clip_score(self, images, captions, *, return_per_example: bool = False):
        """Mean cosine between each image and its own caption (and the per-image cosines)."""
        from trajbench.metrics.stats import clip_score

        return clip_score(self.image_features(images), self.text_features(captions),
                          return_per_example=return_per_example)


def _normalised(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def read_clip_file(path) -> tuple[dict, ClipArch, bytes]:
    """(state dict, architecture, gzipped BPE merges) of a converted ``.npz``; one-line errors."""
    state = read_npz(path, what="CLIP", fix=_SUPPLY, error=ClipWeightsError)
    if CONFIG_KEY not in state or BPE_KEY not in state:
        key = CONFIG_KEY if CONFIG_KEY not in state else BPE_KEY
        raise ClipWeightsError(f"{path} is not a converted CLIP file (no {key} entry); {_SUPPLY}")
    try:
        config = json.loads(str(state.pop(CONFIG_KEY)))
        arch = ClipArch(**config)
    except (ValueError, TypeError) as exc:
        raise ClipWeightsError(f"{path}: unreadable {CONFIG_KEY} ({exc}); convert the checkpoint again: "
                               f"{CONVERT_COMMAND}") from None
    return state, arch, state.pop(BPE_KEY).tobytes()


def load_clip(path) -> ClipModel:
    """:class:`ClipModel` with the weights of a converted ``.npz`` (see the module docstring).
    FileNotFoundError if it is missing, :class:`ClipWeightsError` if it is unreadable or inconsistent."""
    state, arch, bpe = read_clip_file(path)
    check_state_dict(state, arch, str(path))
    tokenizer = ClipTokenizer(bpe, arch.context_length)
    if tokenizer.vocab_size != arch.vocab_size:
        raise ClipWeightsError(f"{path}: its BPE merges give {tokenizer.vocab_size} tokens but token_embedding.weight "
                               f"has {arch.vocab_size}; convert the checkpoint again: {CONVERT_COMMAND}")
    return ClipModel(state_dict_to_params(state, arch), arch, tokenizer, source=str(path))


def clip_arch_of(path) -> ClipArch:
    """The architecture recorded in a converted file (reads only its small ``__config__`` entry)."""
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as archive:
            return ClipArch(**json.loads(str(archive[CONFIG_KEY])))
    except Exception:  # noqa: BLE001 - any problem is reported by load_clip with its reason
        return read_clip_file(path)[1]


# =================================================================================================
# conversion (needs torch and open_clip)
# =================================================================================================
def _arch_of_open_clip(model, name: str) -> ClipArch:
    """The :class:`ClipArch` of an ``open_clip.model.CLIP``; ClipWeightsError for other model classes."""
    import torch

    visual = model.visual
    supported = (type(model).__name__ == "CLIP" and type(visual).__name__ == "VisionTransformer"
                 and getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", "tok") == "tok"
                 and getattr(model, "text_pool_type", "argmax") == "argmax"
                 and isinstance(getattr(model, "text_projection", None), torch.nn.Parameter))
    if not supported:
        raise ClipWeightsError(f"{name}: only OpenAI-style ViT CLIPs (class-token pooling, text pooled at the "
                               "end-of-text token) are supported, e.g. ViT-B-32 and ViT-L-14")
    block = visual.transformer.resblocks[0]
    act = type(block.mlp.gelu).__name__
    if act not in ("GELU", "QuickGELU"):
        raise ClipWeightsError(f"{name}: activation {act} is not supported (GELU or QuickGELU)")
    heads = (block.attn.num_heads, model.transformer.resblocks[0].attn.num_heads)
    widths = (visual.conv1.out_channels, model.ln_final.weight.shape[0])
    if heads != tuple(w // HEAD_WIDTH for w in widths):
        raise ClipWeightsError(f"{name}: heads {heads} are not {HEAD_WIDTH} wide for widths {widths}")
    return ClipArch(name=name, embed_dim=int(model.text_projection.shape[1]), image_size=int(visual.image_size[0]),
                    patch_size=int(visual.patch_size[0]), vision_width=widths[0],
                    vision_layers=len(visual.transformer.resblocks), context_length=int(model.context_length),
                    vocab_size=int(model.vocab_size), text_width=widths[1],
                    text_layers=len(model.transformer.resblocks), quick_gelu=act == "QuickGELU")


def save_open_clip_model(model, out, name: str, bpe_path=None) -> Path:
    """Write an ``open_clip`` CLIP (any weights) as the ``.npz`` :func:`load_clip` reads: its float32 state
    dict, its architecture and the BPE merges (``bpe_path``, default: the file inside ``open_clip``)."""
    import open_clip

    arch = _arch_of_open_clip(model, name)
    if (model.visual.image_mean or OPENAI_MEAN) != OPENAI_MEAN or (model.visual.image_std or OPENAI_STD) != OPENAI_STD:
        raise ClipWeightsError(f"{name}: preprocessing other than OpenAI's mean / std is not supported")
    state = {key: value.detach().float().cpu().numpy() for key, value in model.state_dict().items()
             if key not in IGNORED_KEYS}
    bpe = Path(bpe_path or open_clip.tokenizer.default_bpe()).read_bytes()
    out = Path(out)
    with open(out, "wb") as handle:
        np.savez(handle, **state, **{CONFIG_KEY: np.array(json.dumps(dataclasses.asdict(arch))),
                                     BPE_KEY: np.frombuffer(bpe, np.uint8)})
    return out


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def convert_open_clip(model_name: str, checkpoint, out, bpe_path=None) -> Path:
    """Convert a local CLIP checkpoint to ``.npz`` (needs torch and open_clip; nothing is downloaded):
    an OpenCLIP checkpoint of ``model_name`` (``ViT-B-32``, ``ViT-L-14``, their ``-quickgelu`` variants, ...),
    or OpenAI's TorchScript archive (``ViT-B-32.pt``), recognised by its content (QuickGELU)."""
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found at {checkpoint}; give the path of a local OpenCLIP "
                                "checkpoint (.bin / .pt / .safetensors) or OpenAI's ViT-*.pt")
    try:
        import open_clip
    except ImportError:
        raise ClipWeightsError("converting CLIP weights needs torch and open_clip_torch: pip install "
                               "'trajbench[bench]'") from None
    try:
        if _is_torchscript(checkpoint):
            model = open_clip.openai.load_openai_model(str(checkpoint), precision="fp32", device="cpu")
        else:
            model = open_clip.create_model(model_name, pretrained=str(checkpoint), precision="fp32", device="cpu")
    except Exception as exc:  # noqa: BLE001 - open_clip raises many types for a checkpoint that does not fit
        message = " ".join(str(exc).split())[:300]
        raise ClipWeightsError(f"{checkpoint} is not a {model_name} checkpoint ({type(exc).__name__}: {message}); "
                               "check --model") from None
    return save_open_clip_model(model.eval(), out, model_name, bpe_path)


def save_random_clip_weights(path, arch: ClipArch, seed: int = 0, bpe_gz: bytes | None = None) -> Path:
    """Write a converted-layout ``.npz`` of ``arch`` with random weights (normal, std ``fan_in^-1/2`` for matrices;
    LayerNorm scales near 1), for tests and for checking a setup; its embeddings carry no meaning.  Without
    ``bpe_gz`` the tokenizer has no merges (one token per character; ``arch.vocab_size`` must be 514)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in clip_state_dict_shapes(arch).items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            arrays[key] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif len(shape) == 1:
            arrays[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = shape[-1] if len(shape) == 2 else int(np.prod(shape[1:]))
            arrays[key] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    bpe_gz = bpe_gz if bpe_gz is not None else gzip.compress(b"#version: 0.2\n")
    path = Path(path)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{CONFIG_KEY: np.array(json.dumps(dataclasses.asdict(arch))),
                                      BPE_KEY: np.frombuffer(bpe_gz, np.uint8)})
    return path
