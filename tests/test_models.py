"""Tests of the MMDiT (trajbench.models.mmdit) and the fixed text encoders (trajbench.models.text)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trajbench.models.mmdit import (
    MMDiT,
    MMDiTConfig,
    _attention,
    count_params,
    materialize_grad,
    param_count_formula,
    patchify,
    unpatchify,
)
from trajbench.models.text import (
    DEFAULT_DROP_PROB,
    TextConfig,
    TextEncoders,
    drop_text,
    null_condition,
    tokenize,
)

CAPTIONS = ["a red circle on a blue background", "two small green squares", "", "A RED circle, on a blue background!!"]

# small text encoders, so that text_dim / pooled_dim / sequence length differ from the defaults
SMALL_TEXT = TextConfig(max_len=4, word_dim=16, trigram_dim=8, pooled_width=8, vocab_size=512, trigram_buckets=256)


def _inputs(cfg: MMDiTConfig, batch: int, n_text: int, seed: int = 0):
    """Random model inputs (numpy RNG: eager jax.random calls compile per shape, which is slow)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
    c = rng.uniform(size=(batch,)).astype(np.float32)
    tt = rng.standard_normal((batch, n_text, cfg.text_dim)).astype(np.float32)
    pl = rng.standard_normal((batch, cfg.pooled_dim)).astype(np.float32)
    return x, c, tt, pl


def _np_jit(fn):
    """jit, with outputs converted to numpy (eager indexing/reductions on jax arrays compile small
    programs one by one, which dominates the run time of a test file like this one)."""
    jitted = jax.jit(fn)
    return lambda *args: jax.tree.map(np.asarray, jitted(*args))


def _perturb(params, seed: int, scale: float = 0.1):
    """Add Gaussian noise to every parameter (the zero-initialised gates / final layer make the
    model output exactly 0 at init, so dependence tests need non-trivial parameters).  numpy RNG:
    no per-shape compilation."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: np.asarray(p) + scale * rng.standard_normal(p.shape).astype(np.float32), params)


def _random_params(model, inputs, seed: int):
    """Random parameters of the right structure without compiling ``init`` (which costs seconds):
    kernels ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2), norm scales ~ 1 + N(0, 0.1^2)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        z = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "kernel":
            return z / np.float32(np.sqrt(leaf.shape[0]))
        if name == "scale":
            return 1.0 + np.float32(0.1) * z
        return np.float32(0.1) * z

    return jax.tree_util.tree_map_with_path(fill, shapes)


# ------------------------------------------------------------------------------------------------
# MMDiT
# ------------------------------------------------------------------------------------------------
SHAPE_CONFIGS = [
    MMDiTConfig(depth=2, width=64, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16, max_text_tokens=8),
    MMDiTConfig(depth=1, width=32, heads=2, patch_size=2, image_size=32, text_dim=16, pooled_dim=16, max_text_tokens=8),
    MMDiTConfig(depth=1, width=32, heads=4, patch_size=4, image_size=32, channels=1, text_dim=16, pooled_dim=16, max_text_tokens=8),
]


@pytest.mark.parametrize("cfg", SHAPE_CONFIGS, ids=lambda c: f"d{c.depth}w{c.hidden_size}p{c.patch_size}s{c.image_size}c{c.channels}")
def test_output_shape(cfg):
    x, c, tt, pl = _inputs(cfg, batch=3, n_text=5)
    model = MMDiT(cfg)
    params = _random_params(model, (x, c, tt, pl), seed=2)
    out = _np_jit(model.apply)(params, x, c, tt, pl)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert bool(np.all(np.isfinite(out))) and float(np.std(out)) > 1e-3


def test_patchify_roundtrip():
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3), np.float32)
    for p in (1, 2, 4):
        patches = patchify(x, p)
        assert patches.shape == (2, (16 // p) ** 2, p * p * 3)
        np.testing.assert_array_equal(unpatchify(patches, p, 16, 16, 3), x)
    # a patch is a contiguous p x p block
    np.testing.assert_array_equal(patchify(x, 4)[:, 1].reshape(2, 4, 4, 3), x[:, 0:4, 4:8])


def test_text_changes_output():
    enc = TextEncoders(SMALL_TEXT)
    cfg = MMDiTConfig(depth=2, width=32, heads=2, patch_size=4, image_size=16, **enc.model_kwargs())
    model = MMDiT(cfg)
    tok, pool = enc.encode(["a red circle", "a blue square"])
    x = np.broadcast_to(np.random.default_rng(0).standard_normal((1, 16, 16, 3), np.float32), (2, 16, 16, 3))
    c = np.full((2,), 0.5, np.float32)
    params = _random_params(model, (x, c, tok, pool), seed=3)
    apply = _np_jit(model.apply)

    out = apply(params, x, c, tok, pool)
    assert float(np.mean(np.abs(out[0] - out[1]))) > 1e-3 * float(np.mean(np.abs(out)))
    # tokens alone (through the joint attention) and the pooled vector alone (through adaLN) matter
    tok_swap = tok[::-1]
    pool_swap = pool[::-1]
    out_tok = apply(params, x, c, tok_swap, pool)
    out_pool = apply(params, x, c, tok, pool_swap)
    for other in (out_tok, out_pool):
        assert float(np.mean(np.abs(other - out))) > 1e-3 * float(np.mean(np.abs(out)))
    # the text stream has no positional embedding of its own (position is in the encoder features),
    # so joint attention is invariant to a permutation of the whole text sequence
    perm = np.random.default_rng(0).permutation(tok.shape[1])
    np.testing.assert_allclose(apply(params, x, c, tok[:, perm], pool), out, rtol=1e-4, atol=1e-5)
    # the same caption gives the same output
    tok2, pool2 = enc.encode(["a red circle", "a red circle"])
    out2 = apply(params, x, c, tok2, pool2)
    np.testing.assert_allclose(out2[0], out2[1], rtol=1e-5, atol=1e-6)
    # the conditioning scalar matters both for t in [0, 1] and for EDM's c_noise in [-4, 4]
    for c0, c1 in ((0.30, 0.31), (-3.0, 3.0)):
        o0 = apply(params, x, np.full((2,), c0, np.float32), tok, pool)
        o1 = apply(params, x, np.full((2,), c1, np.float32), tok, pool)
        assert float(np.mean(np.abs(o0 - o1))) > 1e-4


def test_zero_init_and_training_learns_text_dependence():
    """At the true initialisation the output is exactly 0 (zero-initialised adaLN modulation, i.e.
    gates, and final layer); a few Adam steps from there make the output text-dependent."""
    enc = TextEncoders(SMALL_TEXT)
    cfg = MMDiTConfig(depth=1, width=32, heads=2, patch_size=4, image_size=16, **enc.model_kwargs())
    model = MMDiT(cfg)
    tok, pool = enc.encode(["red", "blue"])
    x = np.zeros((2, 16, 16, 3), np.float32)
    target = np.stack([np.ones((16, 16, 3), np.float32), -np.ones((16, 16, 3), np.float32)])
    c = np.full((2,), 0.5, np.float32)
    params = _np_jit(model.init)(jax.random.key(0), x, c, tok, pool)

    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
    apply = _np_jit(model.apply)
    out = apply(params, x + 1.0, c, tok, pool)
    assert out.shape == x.shape and float(np.max(np.abs(out))) == 0.0
    for i in range(cfg.depth):
        assert float(np.abs(params["params"][f"joint_block_{i}"]["adaLN_modulation"]["kernel"]).max()) == 0.0
    assert float(np.abs(params["params"]["final_linear"]["kernel"]).max()) == 0.0
    assert float(np.abs(params["params"]["joint_block_0"]["x_qkv"]["kernel"]).max()) > 0.0  # not everything is 0

    opt = optax.adam(1e-2)
    state = jax.jit(opt.init)(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x, c, tok, pool) - target) ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    out = apply(params, x, c, tok, pool)
    assert float(np.mean(out[0] - out[1])) > 0.5


def test_attention_implementations_agree():
    base = dict(depth=1, width=32, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16, max_text_tokens=8,
                context_pre_only_last=False)  # exercises text queries too
    x, c, tt, pl = _inputs(MMDiTConfig(**base), batch=2, n_text=6)
    m1, m2 = MMDiT(MMDiTConfig(**base)), MMDiT(MMDiTConfig(**base, attention="dot_product"))
    params = _random_params(m1, (x, c, tt, pl), seed=1)
    np.testing.assert_allclose(_np_jit(m1.apply)(params, x, c, tt, pl), _np_jit(m2.apply)(params, x, c, tt, pl), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["einsum", "dot_product"])
def test_attention_matches_per_head_reference(kind):
    """q [B, H, Tq, D], k, v [B, H, Tk, D]: each (example, head) is softmax(q k^T / sqrt(D)) v on its own."""
    rng = np.random.default_rng(0)
    b, h, tq, tk, d = 2, 3, 5, 7, 4
    q, k, v = (rng.standard_normal((b, h, t, d)).astype(np.float32) for t in (tq, tk, tk))
    out = np.asarray(jax.jit(_attention, static_argnums=3)(q, k, v, kind))
    assert out.shape == (b, h, tq, d)
    for i in range(b):
        for j in range(h):
            logits = q[i, j].astype(np.float64) @ k[i, j].T / math.sqrt(d)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            np.testing.assert_allclose(out[i, j], weights @ v[i, j], rtol=1e-5, atol=1e-6)


def test_materialize_grad_is_the_identity_both_ways():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 6)), jnp.float32)
    y, vjp = jax.vjp(materialize_grad, x)
    (g,) = vjp(2 * x + 1)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(g, 2 * x + 1)  # g @ I is exact


def test_model_gradients_do_not_depend_on_materialized_grads(monkeypatch):
    """The CPU-only gradient materialisation changes what XLA fuses, not what it computes."""
    import trajbench.models.mmdit as mmdit

    cfg = MMDiTConfig(depth=2, width=32, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16,
                      max_text_tokens=8)
    x, c, tt, pl = _inputs(cfg, batch=3, n_text=6)
    model = MMDiT(cfg)
    params = _random_params(model, (x, c, tt, pl), seed=2)
    loss = lambda p: jnp.mean(jnp.square(model.apply(p, x, c, tt, pl) - x))
    with_materialized = _np_jit(jax.grad(loss))(params)
    monkeypatch.setattr(mmdit, "_materialize_on_this_backend", lambda x: x)
    plain = _np_jit(jax.grad(loss))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), with_materialized, plain)


def test_bfloat16_compute_keeps_float32_params():
    base = dict(depth=1, width=32, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16, max_text_tokens=8)
    cfg = MMDiTConfig(**base, dtype="bfloat16")
    x, c, tt, pl = _inputs(cfg, batch=2, n_text=4)
    model = MMDiT(cfg)
    params = _random_params(model, (x, c, tt, pl), seed=1)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0), x, c, tt, pl)))
    out = _np_jit(model.apply)(params, x, c, tt, pl)
    ref = _np_jit(MMDiT(MMDiTConfig(**base)).apply)(params, x, c, tt, pl)
    assert out.dtype == np.float32
    assert float(np.mean(np.abs(out - ref))) < 0.05 * float(np.mean(np.abs(ref)))


COUNT_CONFIGS = [
    MMDiTConfig(depth=1),
    MMDiTConfig(depth=2),  # default sizing: width 128, 2 heads of 64
    MMDiTConfig(depth=3, image_size=16, patch_size=4),
    MMDiTConfig(depth=2, width=64, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16),
    MMDiTConfig(depth=3, width=64, heads=3, patch_size=4, image_size=16, max_text_tokens=8),  # 3 heads of 22
    MMDiTConfig(depth=2, width=48, heads=4, head_dim=8, mlp_ratio=2, channels=1, freq_dim=64),
    MMDiTConfig(depth=2, width=64, heads=4, qk_norm=False),
    MMDiTConfig(depth=2, width=64, heads=4, context_pre_only_last=False),
]


@pytest.mark.parametrize("cfg", COUNT_CONFIGS, ids=lambda c: f"d{c.depth}w{c.hidden_size}h{c.num_heads}q{int(c.qk_norm)}po{int(c.context_pre_only_last)}")
def test_param_count_formula(cfg):
    x, c, tt, pl = _inputs(cfg, batch=1, n_text=3)
    shapes = jax.eval_shape(MMDiT(cfg).init, jax.random.key(0), x, c, tt, pl)
    assert count_params(shapes) == param_count_formula(cfg)
    blocks = shapes["params"]
    last = blocks[f"joint_block_{cfg.depth - 1}"]
    assert ("ctx_mlp_fc1" in last) == (not cfg.context_pre_only_last)
    assert ("x_q_norm" in last) == cfg.qk_norm


def test_default_sizing():
    for d in (1, 2, 3, 4):
        cfg = MMDiTConfig(depth=d)
        assert (cfg.hidden_size, cfg.num_heads, cfg.head_size, cfg.mlp_hidden) == (64 * d, d, 64, 256 * d)
    cfg = MMDiTConfig(depth=3, width=64, heads=3)
    assert (cfg.head_size, cfg.attn_dim) == (22, 66)
    with pytest.raises(ValueError):
        MMDiTConfig(depth=1, image_size=16, patch_size=3)


def test_jit_vmap_over_stacked_params():
    cfg = MMDiTConfig(depth=1, width=32, heads=2, patch_size=4, image_size=16, text_dim=16, pooled_dim=16, max_text_tokens=8)
    model = MMDiT(cfg)
    x, c, tt, pl = _inputs(cfg, batch=3, n_text=4)
    p1 = _random_params(model, (x, c, tt, pl), seed=10)
    p2 = _perturb(p1, 11)
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), p1, p2)  # as jax.tree.map(jnp.stack, ...), minus eager compiles
    apply = _np_jit(model.apply)
    sep = np.stack([apply(p1, x, c, tt, pl), apply(p2, x, c, tt, pl)])
    # shared inputs
    out = _np_jit(jax.vmap(model.apply, in_axes=(0, None, None, None, None)))(stacked, x, c, tt, pl)
    np.testing.assert_allclose(out, sep, rtol=1e-4, atol=1e-5)
    assert float(np.mean(np.abs(sep[0] - sep[1]))) > 1e-3
    # per-variant inputs
    x2 = np.stack([x, -x])
    out2 = _np_jit(jax.vmap(model.apply, in_axes=(0, 0, None, None, None)))(stacked, x2, c, tt, pl)
    np.testing.assert_allclose(out2[1], apply(p2, -x, c, tt, pl), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# text encoders
# ------------------------------------------------------------------------------------------------
def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_text_shapes_and_layout():
    enc = TextEncoders()
    tok, pool = enc.encode(CAPTIONS)
    cfg = enc.config
    assert tok.shape == (4, 2 * cfg.max_len, cfg.token_dim) and tok.dtype == np.float32
    assert pool.shape == (4, 2 * cfg.pooled_width) and pool.dtype == np.float32
    assert enc.model_kwargs() == dict(text_dim=64, pooled_dim=128, max_text_tokens=32)
    assert MMDiTConfig(depth=1).text_dim == 64 and MMDiTConfig(depth=1).pooled_dim == 128  # defaults match
    lay = enc.layout
    assert lay.token_slices == ((0, 16), (16, 32)) and lay.pooled_slices == ((0, 64), (64, 128))
    # the trigram encoder (width 32) is zero-padded to the common width 64
    assert np.all(tok[:, 16:, cfg.trigram_dim :] == 0)
    nt, npool = null_condition(3)
    assert nt.shape == (3,) + tok.shape[1:] and npool.shape == (3,) + pool.shape[1:]
    assert float(np.abs(nt).max()) == 0.0 and float(np.abs(npool).max()) == 0.0


def test_text_deterministic_and_distinct():
    a = TextEncoders().encode(CAPTIONS)
    b = TextEncoders().encode(list(reversed(CAPTIONS)))
    np.testing.assert_array_equal(a[0], b[0][::-1])
    np.testing.assert_array_equal(a[1], b[1][::-1])
    tok, pool = a
    # normalisation: case and punctuation do not matter
    np.testing.assert_array_equal(tok[0], tok[3])
    np.testing.assert_array_equal(pool[0], pool[3])
    # different captions differ in both encoders' tokens and pooled parts
    for sl_t, sl_p in ((slice(0, 16), slice(0, 64)), (slice(16, 32), slice(64, 128))):
        assert np.abs(tok[0, sl_t] - tok[1, sl_t]).max() > 0.1
        assert np.abs(pool[0, sl_p] - pool[1, sl_p]).max() > 0.1
    # word order changes the tokens (position codes)
    t1, _ = TextEncoders().encode(["red circle", "circle red"])
    assert np.abs(t1[0] - t1[1]).max() > 0.1
    # repeated captions in one batch == separately encoded
    enc = TextEncoders()
    rep = ["x y", "a b c", "x y", "x y"]
    t_rep, p_rep = enc.encode(rep)
    for i, cap in enumerate(rep):
        t_i, p_i = TextEncoders().encode([cap])
        np.testing.assert_array_equal(t_rep[i], t_i[0])
        np.testing.assert_array_equal(p_rep[i], p_i[0])


def test_text_deterministic_across_processes():
    code = (
        "import hashlib, numpy as np\n"
        "from trajbench.models.text import TextEncoders\n"
        f"t, p = TextEncoders().encode({CAPTIONS!r})\n"
        "h = hashlib.sha256(); h.update(np.ascontiguousarray(t).tobytes()); h.update(np.ascontiguousarray(p).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "JAX_PLATFORMS": "cpu", "PATH": ""})
    assert out.stdout.strip() == _digest(TextEncoders().encode(CAPTIONS))


def test_text_padding_and_truncation():
    cfg = TextConfig()
    enc = TextEncoders(cfg)
    ids = tokenize(["red circle", "", " ,.; ", " ".join(f"w{i}" for i in range(40))], cfg.max_len, cfg.vocab_size)
    assert ids.shape == (4, 16) and ids.dtype == np.int32
    assert np.all(ids[0, :2] > 0) and np.all(ids[0, 2:] == 0)
    assert np.all(ids[1] == 0) and np.all(ids[2] == 0)
    assert np.all((ids[3] >= 1) & (ids[3] <= cfg.vocab_size))
    tok, pool = enc.encode(["red circle", "", " ,.; ", " ".join(f"w{i}" for i in range(40))])
    # padding positions are exact zeros in both encoders' segments; real words are not
    for seg in (slice(0, 16), slice(16, 32)):
        assert np.all(tok[0, seg][2:] == 0) and np.all(np.abs(tok[0, seg][:2]).max(-1) > 0)
    # a caption without words is the null condition
    assert np.all(tok[1] == 0) and np.all(pool[1] == 0) and np.all(tok[2] == 0)
    # truncation: only the first max_len words count
    t16, p16 = enc.encode([" ".join(f"w{i}" for i in range(16))])
    np.testing.assert_array_equal(tok[3], t16[0])
    np.testing.assert_array_equal(pool[3], p16[0])
    # pooled vectors of non-empty captions have RMS 1 per encoder
    np.testing.assert_allclose(np.sqrt(np.mean(pool[0].reshape(2, -1) ** 2, -1)), [1.0, 1.0], rtol=1e-5)


def test_text_encoding_of_many_distinct_captions_is_repeatable():
    """10k distinct captions encode to one row each, identically when encoded again (memoised); the time it takes
    is measured in benchmarks/README.md, not here."""
    captions = [f"a small red circle on a blue background number {i}" for i in range(10_000)]
    enc = TextEncoders()
    tok, pooled = enc.encode(captions)
    tok2, pooled2 = enc.encode(captions)
    assert tok.shape[0] == pooled.shape[0] == 10_000
    np.testing.assert_array_equal(tok, tok2)
    np.testing.assert_array_equal(pooled, pooled2)
    assert len({row.tobytes() for row in np.asarray(pooled)}) > 1  # the captions are not all encoded alike


def test_drop_text_probabilities():
    cfg = SMALL_TEXT
    enc = TextEncoders(cfg)
    n = 200_000
    tokens = np.ones((n, cfg.num_tokens, 1), np.float32)  # only the sequence axis matters
    pooled = np.ones((n, cfg.pooled_dim), np.float32)
    t, p = _np_jit(enc.drop_text)(jax.random.key(0), tokens, pooled)
    lay = enc.layout
    tok_kept = np.stack([np.asarray(t[:, a:b].max((1, 2))) for a, b in lay.token_slices], 1) > 0
    pool_kept = np.stack([np.asarray(p[:, a:b].max(1)) for a, b in lay.pooled_slices], 1) > 0
    # each encoder's tokens and pooled part are dropped together, all or nothing
    np.testing.assert_array_equal(tok_kept, pool_kept)
    for i, (a, b) in enumerate(lay.token_slices):
        seg = np.asarray(t[:, a:b])
        assert np.all((seg.min((1, 2)) == seg.max((1, 2))))
    dropped = ~tok_kept
    tol = 4 * math.sqrt(0.25 / n)
    assert abs(dropped[:, 0].mean() - DEFAULT_DROP_PROB) < tol
    assert abs(dropped[:, 1].mean() - DEFAULT_DROP_PROB) < tol
    assert abs(dropped.all(1).mean() - 0.1) < tol  # fully unconditional on ~10 %
    # independence of the two encoders' draws
    assert abs(dropped.all(1).mean() - dropped[:, 0].mean() * dropped[:, 1].mean()) < tol


def test_drop_text_explicit_probabilities_and_jit():
    cfg = SMALL_TEXT
    enc = TextEncoders(cfg)
    tok, pool = enc.encode(["a red circle", "two green squares", "blue"])
    fn = _np_jit(lambda key, t, p, probs: drop_text(key, t, p, probs, layout=enc.layout))
    t, p = fn(jax.random.key(1), tok, pool, np.array([0.0, 0.0], np.float32))
    np.testing.assert_array_equal(t, tok)
    np.testing.assert_array_equal(p, pool)
    t, p = fn(jax.random.key(1), tok, pool, np.array([1.0, 0.0], np.float32))
    (a0, b0), (a1, b1) = enc.layout.token_slices
    (c0, d0), (c1, d1) = enc.layout.pooled_slices
    assert float(np.abs(t[:, a0:b0]).max()) == 0 and float(np.abs(p[:, c0:d0]).max()) == 0
    np.testing.assert_array_equal(t[:, a1:b1], tok[:, a1:b1])
    np.testing.assert_array_equal(p[:, c1:d1], pool[:, c1:d1])
    # both dropped == the null condition
    t, p = fn(jax.random.key(1), tok, pool, np.array([1.0, 1.0], np.float32))
    nt, npool = enc.null_condition(3)
    np.testing.assert_array_equal(t, nt)
    np.testing.assert_array_equal(p, npool)
    # the module-level function without an explicit layout uses equal shares (== the encoders' layout)
    t1, p1 = _np_jit(drop_text)(jax.random.key(5), tok, pool)
    t2, p2 = _np_jit(enc.drop_text)(jax.random.key(5), tok, pool)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)
