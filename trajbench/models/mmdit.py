"""MMDiT: the multimodal diffusion transformer of Stable Diffusion 3 (Esser et al. 2024, Section 4).

Layout of one forward pass ``MMDiT(config).apply(params, x, c_noise, text_tokens, pooled)``:

* image ``x`` [B, H, W, C] -> non-overlapping p x p patches -> linear embedding to ``width``
  (equivalent to SD3's stride-p convolution) + fixed 2-D sin-cos positional embedding;
* text tokens [B, L, text_dim] -> linear embedding to ``width`` (no positional embedding: the
  text encoders already encode position, as in SD3);
* conditioning vector ``c = MLP(sinusoidal(1000 * c_noise)) + MLP(pooled)``.  The scalar is
  multiplied by ``time_scale = 1000`` (as in DiT) so that both ``t`` in [0, 1] and EDM's
  ``c_noise = log(sigma) / 4`` in about [-4, 4] are resolved by the 256 sinusoidal frequencies
  (periods 2*pi ... 2*pi*10^4 in units of 1000 c);
* ``depth`` joint blocks.  Every block has two sets of weights (image stream ``x_*`` and text
  stream ``ctx_*``) for every projection, norm and MLP.  Per stream: adaLN-modulated LayerNorm
  (no affine) -> fused QKV projection -> per-head RMSNorm of Q and K -> ONE joint attention over
  the concatenated ``[text; image]`` sequence -> split back -> per-stream output projection with
  gate -> adaLN-modulated LayerNorm -> GELU(tanh) MLP with gate.  The modulation vectors
  (shift/scale/gate for attention and MLP, both streams) come from one fused zero-initialised
  ``Dense(SiLU(c))`` per block, so all gates start at 0 and every block starts as the identity;
* as in SD3 the text stream of the LAST block is "pre-only" (``context_pre_only_last=True``): it
  only produces K/V for the joint attention (its modulation has just shift and scale) and has no
  output projection or MLP, because its output would never be used.  Its Q projection and
  Q-norm are kept (SD3 has them, and the parameter count matches SD3's layout) but are not
  computed: only image queries attend in that block, so they get zero gradient.  Set the flag to
  False to keep the full text stream there (its output parameters then get no gradient either);
* final adaLN-modulated LayerNorm + zero-initialised linear to p*p*C, unpatchify to [B, H, W, C].
  The model output is therefore exactly 0 at initialisation.

All parameters are plain float32 pytrees (no mutable state, no batch statistics), so parameter
sets can be stacked with ``jax.tree.map(jnp.stack, ...)`` and ``vmap``-ed.  ``dtype`` is the
compute dtype (``"bfloat16"`` for accelerators); LayerNorm, RMSNorm statistics and the softmax are
computed in float32 and the output has the dtype of ``x``.

Attention uses a plain einsum softmax (``attention="einsum"``, the default) with the softmax in
float32, on q, k, v in head-major layout [B, H, T, D]: the QKV projection's output is rearranged
once, so both attention products are batched matrix products over (B, H) with no further layout
change.  ``attention="dot_product"`` selects ``jax.nn.dot_product_attention`` (same results to ~1e-6).
On the CPU the backward pass stores the residual stream's gradient at block boundaries (:func:`materialize_grad`),
so XLA does not recompute it inside every consumer.  Speeds of both choices: benchmarks/README.md
(``benchmarks/mmdit_step.py`` times one step).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MMDiT",
    "MMDiTConfig",
    "count_params",
    "param_count_formula",
    "sincos_pos_embed_2d",
    "timestep_embedding",
]


@dataclasses.dataclass(frozen=True)
class MMDiTConfig:
    """Size of an MMDiT.  Default sizing follows SD3: width ``64 * depth``, ``depth`` heads (head
    dimension 64), MLP ratio 4.  ``width``/``heads`` override this for tiny CPU models, e.g.
    ``MMDiTConfig(depth=2, width=64, heads=2, patch_size=4, image_size=16)``.  When ``heads`` does
    not divide ``width`` the per-head dimension is ``ceil(width / heads)`` (or ``head_dim``) and
    the QKV / output projections map to / from an inner attention width ``heads * head_dim``.

    ``text_dim``/``pooled_dim``/``max_text_tokens`` must match the text encoders; the defaults
    match ``trajbench.models.text.TextConfig()`` (see ``TextConfig.model_kwargs()``).
    ``max_text_tokens`` is an upper bound on the text sequence length (checked at trace time); the
    model has no text positional embedding, so it adds no parameters.
    """

    depth: int
    width: int | None = None
    heads: int | None = None
    head_dim: int | None = None
    mlp_ratio: int = 4
    patch_size: int = 2
    image_size: int = 32
    channels: int = 3
    text_dim: int = 64
    pooled_dim: int = 128
    max_text_tokens: int = 32
    dtype: str = "float32"
    qk_norm: bool = True
    context_pre_only_last: bool = True
    freq_dim: int = 256
    time_scale: float = 1000.0
    attention: str = "einsum"  # or "dot_product" (jax.nn.dot_product_attention)

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        w = self.hidden_size
        if self.num_heads < 1 or self.head_size < 1:
            raise ValueError(f"need heads >= 1 and head_dim >= 1, got {self.num_heads}, {self.head_size}")
        if w % 4:
            raise ValueError(f"width {w} must be divisible by 4 (2-D sin-cos positional embedding)")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not divisible by patch_size {self.patch_size}")
        if self.freq_dim % 2:
            raise ValueError("freq_dim must be even")
        if self.attention not in ("einsum", "dot_product"):
            raise ValueError(f"attention must be 'einsum' or 'dot_product', got {self.attention!r}")
        jnp.dtype(self.dtype)  # validates the name

    @property
    def hidden_size(self) -> int:
        return 64 * self.depth if self.width is None else self.width

    @property
    def num_heads(self) -> int:
        return self.depth if self.heads is None else self.heads

    @property
    def head_size(self) -> int:
        """Per-head dimension: ``head_dim`` if given, else ``ceil(width / heads)`` (= width / heads
        whenever it divides, e.g. 64 for the default sizing; 22 for width 64 with 3 heads)."""
        if self.head_dim is not None:
            return self.head_dim
        return -(-self.hidden_size // self.num_heads)

    @property
    def attn_dim(self) -> int:
        """Inner width of the attention: heads * head_size (= width when heads divides width)."""
        return self.num_heads * self.head_size

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_ratio * self.hidden_size

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.channels

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


# ------------------------------------------------------------------------------------------------
# fixed embeddings
# ------------------------------------------------------------------------------------------------
def timestep_embedding(c, dim: int = 256, scale: float = 1000.0, max_period: float = 10000.0):
    """DiT/SD3 sinusoidal embedding [cos | sin] of ``scale * c`` (c: [B]) -> [B, dim], float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (scale * jnp.asarray(c, jnp.float32))[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> np.ndarray:
    """MAE/DiT/SD3 fixed 2-D sin-cos positional embedding, [grid_size**2, dim] (row-major)."""
    gh, gw = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64), indexing="ij")
    # first half of the channels encodes the column (w), second half the row (h), as in MAE.
    emb = np.concatenate([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], axis=1)
    return emb.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros
_normal002 = nn.initializers.normal(0.02)


def _layer_norm(x, eps: float = 1e-6):
    """LayerNorm without affine parameters (SD3: elementwise_affine=False), statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _modulate(x, shift, scale):
    """x [B, T, W]; shift, scale [B, W]."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


def patchify(x, p: int):
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C] (row-major patches, (py, px, c) inside a patch)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x, p: int, h: int, w: int, c: int):
    """Inverse of :func:`patchify`."""
    b = x.shape[0]
    x = x.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class _RMSNorm(nn.Module):
    """Per-head RMSNorm over the last axis with a learnable scale, statistics in float32."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * scale).astype(x.dtype)


@jax.custom_vjp
def materialize_grad(x):
    """Identity whose backward pass routes the cotangent through ``g @ I`` (exact in floating point).

    XLA:CPU fuses a chain of elementwise ops into every consumer of its result. In the backward pass the
    residual stream's gradient is such a chain (it grows by one LayerNorm backward per block), and each
    consumer -- the LayerNorm reductions, the transposed copy for a weight gradient, the next product --
    recomputed all of it, back to the last block. A matrix product is not fused into its consumers, so the
    gradient is computed once and stored. The product costs 2 N W^2 FLOPs for N tokens of width W; it is
    applied only on the CPU (see :func:`_materialize_on_this_backend`). Measured in benchmarks/README.md."""
    return x


def _materialize_fwd(x):
    return x, None


def _materialize_bwd(_, g):
    return (g @ jnp.eye(g.shape[-1], dtype=g.dtype),)


materialize_grad.defvjp(_materialize_fwd, _materialize_bwd)


def _materialize_on_this_backend(x):
    """:func:`materialize_grad` on the CPU, the identity elsewhere (GPU/TPU compilers do not recompute)."""
    return materialize_grad(x) if jax.default_backend() == "cpu" else x


def _attention(q, k, v, kind: str):
    """q [B, H, Tq, D], k, v [B, H, Tk, D] -> [B, H, Tq, D]: softmax(q k^T / sqrt(D)) v, softmax in float32.

    Heads lead so that both products are batched matrix products over (B, H) with no layout change."""
    if kind == "dot_product":
        swap = lambda a: jnp.swapaxes(a, 1, 2)  # the JAX op takes [B, T, H, D]
        return swap(jax.nn.dot_product_attention(swap(q), swap(k), swap(v), implementation="xla"))
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)  # scale q, the smaller tensor, not the logits
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
class JointBlock(nn.Module):
    """One MMDiT block: two streams (image ``x_*``, text ``ctx_*``), one joint attention."""

    config: MMDiTConfig
    context_pre_only: bool = False

    @nn.compact
    def __call__(self, x, ctx, c_act):
        cfg = self.config
        w, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_size
        a = cfg.attn_dim
        dt = cfg.compute_dtype
        b = x.shape[0]
        n_txt = ctx.shape[1]
        x, ctx = _materialize_on_this_backend(x), _materialize_on_this_backend(ctx)

        def dense(features, name, init=_xavier):
            return nn.Dense(features, dtype=dt, param_dtype=jnp.float32, kernel_init=init, name=name)

        # One fused, zero-initialised Dense for all modulation vectors of both streams:
        # image: shift/scale/gate (attention), shift/scale/gate (MLP); text: the same, or only
        # shift/scale when the text stream is pre-only.
        n_ctx_mod = 2 if self.context_pre_only else 6
        mod = dense((6 + n_ctx_mod) * w, "adaLN_modulation", init=_zeros)(c_act)
        mod = mod.reshape(b, 6 + n_ctx_mod, w)
        x_shift_msa, x_scale_msa, x_gate_msa, x_shift_mlp, x_scale_mlp, x_gate_mlp = (mod[:, i] for i in range(6))
        ctx_mod = [mod[:, 6 + i] for i in range(n_ctx_mod)]

        def qkv(stream, name, shift, scale):
            y = _modulate(_layer_norm(stream), shift, scale)
            y = dense(3 * a, f"{name}_qkv")(y).reshape(b, stream.shape[1], 3, h, hd)
            q, k, v = jnp.moveaxis(y, (2, 3), (0, 2))  # 3 x [B, H, T, D]
            if cfg.qk_norm:
                q = _RMSNorm(name=f"{name}_q_norm")(q)
                k = _RMSNorm(name=f"{name}_k_norm")(k)
            return q, k, v

        xq, xk, xv = qkv(x, "x", x_shift_msa, x_scale_msa)
        cq, ck, cv = qkv(ctx, "ctx", ctx_mod[0], ctx_mod[1])

        # joint attention over [text; image].  A pre-only text stream discards its attention
        # output, so only the image queries are computed (its Q weights exist, as in SD3, but get
        # no gradient).
        def tokens_last(out):  # [B, H, T, D] -> [B, T, H * D]
            return jnp.swapaxes(out, 1, 2).reshape(b, out.shape[2], a)

        k = jnp.concatenate([ck, xk], axis=2)
        v = jnp.concatenate([cv, xv], axis=2)
        if self.context_pre_only:
            x_attn = tokens_last(_attention(xq, k, v, cfg.attention))
            ctx_attn = None
        else:
            q = jnp.concatenate([cq, xq], axis=2)
            attn = tokens_last(_attention(q, k, v, cfg.attention))
            ctx_attn, x_attn = attn[:, :n_txt], attn[:, n_txt:]

        def post(stream, attn_out, name, gate_msa, shift_mlp, scale_mlp, gate_mlp):
            stream = _materialize_on_this_backend(stream + gate_msa[:, None] * dense(w, f"{name}_proj")(attn_out))
            y = _modulate(_layer_norm(stream), shift_mlp, scale_mlp)
            y = dense(cfg.mlp_hidden, f"{name}_mlp_fc1")(y)
            y = nn.gelu(y, approximate=True)
            y = dense(w, f"{name}_mlp_fc2")(y)
            return stream + gate_mlp[:, None] * y

        x = post(x, x_attn, "x", x_gate_msa, x_shift_mlp, x_scale_mlp, x_gate_mlp)
        if not self.context_pre_only:
            ctx = post(ctx, ctx_attn, "ctx", ctx_mod[2], ctx_mod[3], ctx_mod[4], ctx_mod[5])
        return x, ctx


class MMDiT(nn.Module):
    """``MMDiT(config).apply(params, x, c_noise, text_tokens, pooled) -> [B, H, W, C]``.

    x: [B, H, W, C]; c_noise: [B] (or scalar, broadcast); text_tokens: [B, L, text_dim] with
    L <= max_text_tokens; pooled: [B, pooled_dim].
    """

    config: MMDiTConfig

    @nn.compact
    def __call__(self, x, c_noise, text_tokens, pooled):
        cfg = self.config
        w, p = cfg.hidden_size, cfg.patch_size
        dt = cfg.compute_dtype
        b, hh, ww, cc = x.shape
        if (hh, ww, cc) != (cfg.image_size, cfg.image_size, cfg.channels):
            raise ValueError(f"x has shape {x.shape}, config expects [B, {cfg.image_size}, {cfg.image_size}, {cfg.channels}]")
        if text_tokens.ndim != 3 or text_tokens.shape[0] != b or text_tokens.shape[2] != cfg.text_dim:
            raise ValueError(f"text_tokens has shape {text_tokens.shape}, expected [{b}, L, {cfg.text_dim}]")
        if text_tokens.shape[1] > cfg.max_text_tokens:
            raise ValueError(f"{text_tokens.shape[1]} text tokens > max_text_tokens={cfg.max_text_tokens}")
        if pooled.shape != (b, cfg.pooled_dim):
            raise ValueError(f"pooled has shape {pooled.shape}, expected [{b}, {cfg.pooled_dim}]")
        c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (b,))

        def dense(features, name, init=_xavier, dtype=dt):
            return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=init, name=name)

        # image tokens
        tokens = patchify(x.astype(dt), p)
        tokens = dense(w, "x_embedder")(tokens)
        tokens = tokens + jnp.asarray(sincos_pos_embed_2d(w, cfg.grid_size), dt)[None]

        # text tokens
        ctx = dense(w, "context_embedder")(text_tokens.astype(dt))

        # conditioning vector c (kept in float32: it is tiny and drives every modulation)
        temb = timestep_embedding(c_noise, cfg.freq_dim, cfg.time_scale)
        temb = dense(w, "t_embedder_fc1", _normal002, jnp.float32)(temb)
        temb = dense(w, "t_embedder_fc2", _normal002, jnp.float32)(nn.silu(temb))
        yemb = dense(w, "y_embedder_fc1", _xavier, jnp.float32)(pooled.astype(jnp.float32))
        yemb = dense(w, "y_embedder_fc2", _xavier, jnp.float32)(nn.silu(yemb))
        c_act = nn.silu(temb + yemb).astype(dt)

        for i in range(cfg.depth):
            pre_only = cfg.context_pre_only_last and i == cfg.depth - 1
            tokens, ctx = JointBlock(cfg, context_pre_only=pre_only, name=f"joint_block_{i}")(tokens, ctx, c_act)

        # final layer
        tokens = _materialize_on_this_backend(tokens)
        mod = dense(2 * w, "final_adaLN_modulation", _zeros)(c_act)
        shift, scale = mod[:, :w], mod[:, w:]
        tokens = _modulate(_layer_norm(tokens), shift, scale)
        out = dense(cfg.patch_dim, "final_linear", _zeros)(tokens)
        return unpatchify(out, p, hh, ww, cc).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# parameter counting
# ------------------------------------------------------------------------------------------------
def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def param_count_formula(config: MMDiTConfig) -> int:
    """Closed-form parameter count, derived from the architecture (not by initialising).

    With W = width, A = heads * head_dim (= W when heads divides W), M = mlp_ratio W, P = p^2 C,
    F = freq_dim, q = 2 head_dim if qk_norm else 0 (RMSNorm scales of Q and K per stream):

    * patch embedding  P W + W;  text embedding  text_dim W + W;
    * timestep MLP  F W + W + W^2 + W;  pooled MLP  pooled_dim W + W + W^2 + W;
    * full stream of a block: QKV 3WA + 3A, Q/K norm q, out-proj A W + W, MLP 2 W M + M + W;
    * full block: modulation W 12W + 12W + 2 full streams;
    * last block with a pre-only text stream: modulation W 8W + 8W + 1 full stream
      + text QKV 3WA + 3A + q;
    * final layer: modulation W 2W + 2W, linear W P + P.
    """
    w, m, a = config.hidden_size, config.mlp_hidden, config.attn_dim
    pp = config.patch_dim
    q = 2 * config.head_size if config.qk_norm else 0
    embed = (pp * w + w) + (config.text_dim * w + w)
    cond = (config.freq_dim * w + w + w * w + w) + (config.pooled_dim * w + w + w * w + w)
    stream = (3 * w * a + 3 * a) + q + (a * w + w) + (2 * w * m + m + w)
    full_block = (12 * w * w + 12 * w) + 2 * stream
    pre_only_block = (8 * w * w + 8 * w) + stream + (3 * w * a + 3 * a + q)
    if config.context_pre_only_last:
        blocks = (config.depth - 1) * full_block + pre_only_block
    else:
        blocks = config.depth * full_block
    final = (2 * w * w + 2 * w) + (w * pp + pp)
    return embed + cond + blocks + final


def forward_flops(config: MMDiTConfig, text_tokens: int | None = None) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward pass for one example.

    With N image patches, L text tokens, S = N + L, W = width, A = attention width, M = MLP width, P = patch
    dim: embeddings 2 N P W + 2 L text_dim W; per full block, per stream of T tokens 2 T (3 W A + A W + 2 W M)
    and the joint attention 4 S^2 A; the last block's text stream (pre-only) 2 L 3 W A; adaLN modulation
    2 W 12 W per block; final layer 2 N W P. A training step costs about 3x this (forward + backward).
    """
    n, tokens = config.num_patches, config.max_text_tokens if text_tokens is None else text_tokens
    w, a, m, p = config.hidden_size, config.attn_dim, config.mlp_hidden, config.patch_dim
    stream = 2 * (3 * w * a + a * w + 2 * w * m)
    attention = 4 * (n + tokens) ** 2 * a
    flops = 2 * n * p * w + 2 * tokens * config.text_dim * w + 2 * n * w * p
    for block in range(config.depth):
        pre_only = config.context_pre_only_last and block == config.depth - 1
        flops += 2 * w * 12 * w + n * stream + attention
        flops += tokens * 2 * 3 * w * a if pre_only else tokens * stream
    return int(flops)
