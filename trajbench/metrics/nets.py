"""Small Flax (linen) networks of the in-house evaluators: a CNN image trunk and a caption transformer.

They are separate from the generators' text encoders (:mod:`trajbench.models.text`): their own word
vocabulary, their own learned weights.

* :class:`ConvTrunk` -- ``[B, H, W, 3]`` in [-1, 1] -> ``[B, feature_dim]`` features.  A 3x3 stem at full
  resolution (a patchifying conv above 16x16), then stages (3x3 conv stride 2 + 3x3 conv, each with GroupNorm
  and GELU) until the map is 4x4; the 4x4 map FLATTENED (so where things are -- "left of", "above" --
  survives) together with its spatial mean and max (what is present anywhere, translation invariant) is
  projected by a dense layer + LayerNorm + GELU: these are the trunk's "penultimate" features.
* :class:`TextTower` -- word ids ``[B, T]`` (0 = padding) -> ``[B, width]``: learned word and position
  embeddings, pre-LN transformer blocks with a padding mask, masked mean over the words, LayerNorm.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def stage_count(resolution: int) -> tuple[int, int]:
    """``(patch, stages)``: the stem's patch size (bringing the map to at most 16x16) and the number of
    stride-2 stages that then bring it down to 4x4 (16 -> (1, 2), 32 -> (2, 2), 64 -> (4, 2), 8 -> (1, 1))."""
    r = int(resolution)
    if r < 4 or r & (r - 1):
        raise ValueError(f"the evaluator networks need a power-of-two resolution >= 4, got {resolution}")
    patch = max(1, r // 16)
    r //= patch
    stages = 0
    while r > 4:
        r //= 2
        stages += 1
    return patch, stages


class ConvTrunk(nn.Module):
    widths: Sequence[int] = (24, 48, 96)  # stem, then one width per stride-2 stage (the last one repeated)
    feature_dim: int = 256

    @nn.compact
    def __call__(self, x):
        patch, n_stages = stage_count(x.shape[1])
        widths = list(self.widths) + [self.widths[-1]] * max(0, n_stages + 1 - len(self.widths))

        def block(h, ch, kernel, stride):
            h = nn.Conv(ch, (kernel, kernel), strides=(stride, stride), padding="SAME")(h)
            h = nn.GroupNorm(num_groups=min(8, ch))(h)
            return nn.gelu(h)

        # stem: a 3x3 conv at 16x16 and below, a patchifying conv (kernel = stride = patch) above
        h = block(x, widths[0], 3, 1) if patch == 1 else block(x, widths[0], patch, patch)
        for s in range(n_stages):
            h = block(h, widths[s + 1], 3, 2)
            h = block(h, widths[s + 1], 3, 1)
        # the 4x4 map flattened (where things are) + its spatial mean and max (what is there, anywhere)
        h = jnp.concatenate([h.reshape(h.shape[0], -1), h.mean(axis=(1, 2)), h.max(axis=(1, 2))], axis=-1)
        h = nn.Dense(self.feature_dim)(h)
        h = nn.LayerNorm()(h)
        return nn.gelu(h)


class TextBlock(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, h, mask):
        attn_mask = nn.make_attention_mask(mask, mask)
        y = nn.LayerNorm()(h)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width)(y, y, mask=attn_mask)
        h = h + y
        y = nn.LayerNorm()(h)
        y = nn.Dense(2 * self.width)(y)
        y = nn.Dense(self.width)(nn.gelu(y))
        return h + y


class TextTower(nn.Module):
    vocab_size: int
    max_tokens: int = 16
    width: int = 64
    layers: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, ids):
        mask = ids > 0
        h = nn.Embed(self.vocab_size, self.width)(ids)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_tokens, self.width))
        h = h + pos[None, : ids.shape[1]]
        for _ in range(self.layers):
            h = TextBlock(self.width, self.heads)(h, mask)
        m = mask[..., None].astype(h.dtype)
        h = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        return nn.LayerNorm()(h)


class ClipModel(nn.Module):
    """The two towers, each ending in a linear projection to ``embed_dim`` and L2 normalisation."""

    vocab_size: int
    widths: Sequence[int] = (24, 48, 96)
    feature_dim: int = 256
    embed_dim: int = 128
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    init_temperature: float = 0.07

    def setup(self):
        self.trunk = ConvTrunk(self.widths, self.feature_dim)
        self.image_proj = nn.Dense(self.embed_dim)
        self.text = TextTower(self.vocab_size, self.max_tokens, self.text_width, self.text_layers, self.text_heads)
        self.text_proj = nn.Dense(self.embed_dim)
        self.log_scale = self.param(
            "log_scale", lambda _: jnp.full((), jnp.log(1.0 / self.init_temperature), jnp.float32))

    def image_features(self, x):
        """(penultimate features [B, feature_dim], L2-normalised embedding [B, embed_dim])."""
        feat = self.trunk(x)
        return feat, _l2(self.image_proj(feat))

    def text_embedding(self, ids):
        return _l2(self.text_proj(self.text(ids)))

    def __call__(self, x, ids):
        _, img = self.image_features(x)
        return img, self.text_embedding(ids), self.log_scale


def _l2(x):
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)
