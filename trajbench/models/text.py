"""Fixed deterministic text encoders (stand-ins for SD3's CLIP-L, CLIP-G and T5).

SD3 conditions on frozen pretrained text encoders.  Here, with no downloads and no training, two
small FIXED DETERMINISTIC encoders give two different views of a caption.  They have no learned
parameters: every array is a pure function of the caption string and of constants in
:class:`TextConfig` (tables drawn from ``numpy.random.default_rng`` with fixed seeds, hashes by
``zlib.crc32``), so the same caption gives bit-identical arrays in every process.

* Tokenizer: lowercase, split on anything that is not a letter or digit, word id
  ``zlib.crc32(word) % vocab_size + 1`` (0 = padding), truncate / pad to ``max_len`` words.
* ``word`` encoder (CLIP-like): Gaussian word-embedding table [vocab_size + 1, word_dim] plus the
  standard sinusoidal position code; pooled vector = fixed random projection of the masked mean
  of the word embeddings, rescaled to RMS 1 (like CLIP's normalised pooled embedding).
* ``trigram`` encoder (subword, T5-like view): each word is the normalised sum of hashed
  character-trigram embeddings of ``"<" + word + ">"`` (so related spellings share features), plus
  a fixed random (seeded) absolute position table; pooled vector = fixed random projection of the
  concatenated masked mean and masked max of the word vectors, rescaled to RMS 1.

Combination as in SD3: the token sequences are zero-padded along the channel axis to the common
width ``token_dim = max(word_dim, trigram_dim)`` and concatenated along the SEQUENCE axis
(``[word tokens; trigram tokens]``, 2 * max_len tokens); the pooled vectors are concatenated along
the channel axis.  Padding positions are exact zeros.  :attr:`TextEncoders.layout` records which
token / pooled slices belong to which encoder, so each encoder's part can be zeroed
(:func:`drop_text`).  The all-zeros condition (:func:`null_condition`) is the unconditional one
used for classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_DROP_PROB",
    "TextConfig",
    "TextEncoders",
    "TextLayout",
    "drop_text",
    "null_condition",
    "tokenize",
]

# Each of the two encoders is dropped independently with p = sqrt(0.1), so both are dropped
# together (the fully unconditional case) on 10 % of the examples, as 0.464^3 ~ 0.1 in SD3.
DEFAULT_DROP_PROB = math.sqrt(0.1)

_SPLIT = re.compile(r"[^0-9a-z]+")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Constants of the fixed encoders (all part of the encoders' definition)."""

    max_len: int = 16  # words per encoder
    vocab_size: int = 8192
    word_dim: int = 64
    trigram_dim: int = 32
    trigram_buckets: int = 4096
    pooled_width: int = 64  # pooled width of EACH encoder
    word_seed: int = 1234
    trigram_seed: int = 5678
    drop_probs: tuple[float, ...] = (DEFAULT_DROP_PROB, DEFAULT_DROP_PROB)

    num_encoders = 2

    def __post_init__(self):
        if len(self.drop_probs) != self.num_encoders:
            raise ValueError(f"need {self.num_encoders} drop probabilities, got {self.drop_probs}")

    @property
    def num_tokens(self) -> int:
        return self.num_encoders * self.max_len

    @property
    def token_dim(self) -> int:
        return max(self.word_dim, self.trigram_dim)

    @property
    def pooled_dim(self) -> int:
        return self.num_encoders * self.pooled_width

    def model_kwargs(self) -> dict:
        """``text_dim`` / ``pooled_dim`` / ``max_text_tokens`` for :class:`MMDiTConfig`."""
        return dict(text_dim=self.token_dim, pooled_dim=self.pooled_dim, max_text_tokens=self.num_tokens)

    @property
    def layout(self) -> "TextLayout":
        L, P = self.max_len, self.pooled_width
        return TextLayout(
            names=("word", "trigram"),
            token_slices=((0, L), (L, 2 * L)),
            pooled_slices=((0, P), (P, 2 * P)),
        )


@dataclasses.dataclass(frozen=True)
class TextLayout:
    """Which [start, stop) of the token sequence / pooled vector belongs to each encoder."""

    names: tuple[str, ...]
    token_slices: tuple[tuple[int, int], ...]
    pooled_slices: tuple[tuple[int, int], ...]

    @staticmethod
    def equal(num_encoders: int, num_tokens: int, pooled_dim: int) -> "TextLayout":
        """Equal consecutive shares of the sequence and of the pooled vector."""
        if num_tokens % num_encoders or pooled_dim % num_encoders:
            raise ValueError(f"cannot split {num_tokens} tokens / {pooled_dim} pooled dims equally in {num_encoders}")
        lt, lp = num_tokens // num_encoders, pooled_dim // num_encoders
        return TextLayout(
            names=tuple(f"enc{i}" for i in range(num_encoders)),
            token_slices=tuple((i * lt, (i + 1) * lt) for i in range(num_encoders)),
            pooled_slices=tuple((i * lp, (i + 1) * lp) for i in range(num_encoders)),
        )

    def token_owner(self, num_tokens: int) -> np.ndarray:
        """[num_tokens] encoder index of every sequence position."""
        owner = np.full(num_tokens, -1, np.int32)
        for i, (a, b) in enumerate(self.token_slices):
            owner[a:b] = i
        if (owner < 0).any():
            raise ValueError(f"layout {self} does not cover {num_tokens} tokens")
        return owner

    def pooled_owner(self, pooled_dim: int) -> np.ndarray:
        owner = np.full(pooled_dim, -1, np.int32)
        for i, (a, b) in enumerate(self.pooled_slices):
            owner[a:b] = i
        if (owner < 0).any():
            raise ValueError(f"layout {self} does not cover {pooled_dim} pooled dims")
        return owner


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------
def words_of(caption: str) -> list[str]:
    """Lowercase and split on non-letters/digits (empty pieces dropped)."""
    return [w for w in _SPLIT.split(caption.lower()) if w]


def word_id(word: str, vocab_size: int) -> int:
    return zlib.crc32(word.encode("utf-8")) % vocab_size + 1


def tokenize(captions: Sequence[str], max_len: int = 16, vocab_size: int = 8192) -> np.ndarray:
    """[B, max_len] int32 word ids, 0 = padding; words beyond ``max_len`` are truncated."""
    ids = np.zeros((len(captions), max_len), np.int32)
    for i, caption in enumerate(captions):
        ws = words_of(caption)[:max_len]
        ids[i, : len(ws)] = [word_id(w, vocab_size) for w in ws]
    return ids


def _trigrams(word: str) -> list[str]:
    s = f"<{word}>"
    return [s[i : i + 3] for i in range(len(s) - 2)]


def _sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    pos = np.arange(length, dtype=np.float64)[:, None]
    freqs = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    ang = pos * freqs[None]
    out = np.zeros((length, dim))
    out[:, 0 : 2 * (dim // 2) : 2] = np.sin(ang)
    out[:, 1 : 2 * (dim // 2) : 2] = np.cos(ang)
    return out


def _project(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a [N, D] @ w [D, P], summed in a fixed order (d = 0, 1, ...) so that each row's result is
    bit-identical whatever the batch size (BLAS picks different kernels for different N)."""
    out = np.zeros((a.shape[0], w.shape[1]), np.float32)
    for d in range(w.shape[0]):
        out += a[:, d : d + 1] * w[d]
    return out


def _rms_normalise(v: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(v), axis=-1, keepdims=True))
    return np.where(rms > 0, v / np.maximum(rms, 1e-12), 0.0)


# ------------------------------------------------------------------------------------------------
# encoders
# ------------------------------------------------------------------------------------------------
class TextEncoders:
    """The two fixed deterministic encoders, combined like SD3.

    >>> enc = TextEncoders()
    >>> tokens, pooled = enc.encode(["a red circle", "two blue squares"])
    >>> tokens.shape, pooled.shape        # [B, 2 * max_len, token_dim], [B, 2 * pooled_width]
    ((2, 32, 64), (2, 128))

    Outputs are float32 numpy arrays (pass them to jax as they are).  Each distinct word is hashed
    once and each distinct caption tokenized once (memoised); the embedding itself is a vectorised
    gather computed once per distinct caption of a batch (speeds: benchmarks/README.md).  Words are
    hashed into ``vocab_size`` ids, so rare collisions share a word embedding (the trigram encoder
    still tells them apart).  Every row is computed in a fixed summation order, so a caption's
    arrays are bit-identical whatever batch it is encoded in.
    """

    def __init__(self, config: TextConfig | None = None):
        self.config = cfg = config or TextConfig()
        rng_w = np.random.default_rng(cfg.word_seed)
        # the padding row (id 0) is zero
        self._word_table = rng_w.standard_normal((cfg.vocab_size + 1, cfg.word_dim)).astype(np.float32)
        self._word_table[0] = 0.0
        self._word_pool_proj = (rng_w.standard_normal((cfg.word_dim, cfg.pooled_width)) / math.sqrt(cfg.word_dim)).astype(np.float32)
        self._word_pos = _sinusoidal_positions(cfg.max_len, cfg.word_dim).astype(np.float32)

        rng_t = np.random.default_rng(cfg.trigram_seed)
        self._tri_table = rng_t.standard_normal((cfg.trigram_buckets, cfg.trigram_dim)).astype(np.float32)
        self._tri_pool_proj = (rng_t.standard_normal((2 * cfg.trigram_dim, cfg.pooled_width)) / math.sqrt(2 * cfg.trigram_dim)).astype(np.float32)
        self._tri_pos = (0.5 * rng_t.standard_normal((cfg.max_len, cfg.trigram_dim))).astype(np.float32)

        # Caches (pure memoisation, they never change results).  Per distinct word: its word id and
        # trigram vector, stored in growing arrays (row 0 = padding).  Per distinct caption: its
        # row of word indices [max_len] (64 bytes), so repeated captions skip the Python tokenizer.
        self._word_index: dict[str, int] = {}
        self._n_words = 1
        self._w_ids = np.zeros(1024, np.int64)
        self._w_tri = np.zeros((1024, cfg.trigram_dim), np.float32)
        self._caption_index: dict[str, int] = {}
        self._n_captions = 0
        self._c_rows = np.zeros((1024, cfg.max_len), np.int32)

    # ---- layout / shapes ------------------------------------------------------------------------
    @property
    def layout(self) -> TextLayout:
        return self.config.layout

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @property
    def pooled_dim(self) -> int:
        return self.config.pooled_dim

    def model_kwargs(self) -> dict:
        return self.config.model_kwargs()

    # ---- encoding -------------------------------------------------------------------------------
    def _new_word(self, word: str) -> int:
        cfg = self.config
        buckets = [zlib.crc32(g.encode("utf-8")) % cfg.trigram_buckets for g in _trigrams(word)]
        row = self._n_words
        if row == len(self._w_ids):
            self._w_ids = np.concatenate([self._w_ids, np.zeros_like(self._w_ids)])
            self._w_tri = np.concatenate([self._w_tri, np.zeros_like(self._w_tri)])
        self._w_ids[row] = word_id(word, cfg.vocab_size)
        self._w_tri[row] = self._tri_table[buckets].sum(0) / math.sqrt(len(buckets))
        self._word_index[word] = row
        self._n_words = row + 1
        return row

    def _add_captions(self, captions: list[str]) -> None:
        """Tokenize new captions into rows of word indices (vectorised fill)."""
        L = self.config.max_len
        windex = self._word_index
        flat: list[int] = []
        lengths: list[int] = []
        for caption in captions:
            ws = words_of(caption)[:L]
            for w in ws:
                r = windex.get(w)
                flat.append(self._new_word(w) if r is None else r)
            lengths.append(len(ws))
        n0, n = self._n_captions, len(captions)
        cap = len(self._c_rows)
        while n0 + n > cap:
            cap *= 2
        if cap > len(self._c_rows):
            grown = np.zeros((cap, L), np.int32)
            grown[:n0] = self._c_rows[:n0]
            self._c_rows = grown
        lengths_a = np.asarray(lengths, np.int64)
        caption_of = np.repeat(np.arange(n0, n0 + n), lengths_a)
        starts = np.cumsum(lengths_a) - lengths_a
        position = np.arange(len(flat)) - np.repeat(starts, lengths_a)
        self._c_rows[n0 : n0 + n] = 0
        self._c_rows[caption_of, position] = np.asarray(flat, np.int32)
        for i, caption in enumerate(captions):
            self._caption_index[caption] = n0 + i
        self._n_captions = n0 + n

    def _embed_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [N, max_len] word indices (0 = padding) -> (tokens, pooled)."""
        cfg = self.config
        L = cfg.max_len
        n = rows.shape[0]
        valid = rows > 0
        mask = valid[..., None].astype(np.float32)  # [N, L, 1]
        count = mask.sum(1)  # [N, 1]
        inv_count = 1.0 / np.maximum(count, 1.0)

        word_emb = self._word_table[self._w_ids[rows]]  # [N, L, Dw], padding rows are zero
        tri_words = self._w_tri[rows]  # [N, L, Dt], padding rows are zero

        tokens = np.zeros((n, 2 * L, cfg.token_dim), np.float32)
        view = tokens[:, :L, : cfg.word_dim]
        np.add(word_emb, self._word_pos[None], out=view)
        view *= mask
        view = tokens[:, L:, : cfg.trigram_dim]
        np.add(tri_words, self._tri_pos[None], out=view)
        view *= mask

        word_pooled = _rms_normalise(_project(word_emb.sum(1) * inv_count, self._word_pool_proj))
        tri_mean = tri_words.sum(1) * inv_count
        tri_max = tri_words.max(1, where=valid[..., None], initial=-np.inf)
        tri_max = np.where(count > 0, tri_max, np.float32(0.0))
        tri_pooled = _rms_normalise(_project(np.concatenate([tri_mean, tri_max], -1), self._tri_pool_proj))
        pooled = np.concatenate([word_pooled, tri_pooled], -1).astype(np.float32)
        return tokens, pooled

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """captions -> (tokens [B, 2 * max_len, token_dim], pooled [B, 2 * pooled_width]), float32."""
        captions = [c if isinstance(c, str) else str(c) for c in captions]
        cindex = self._caption_index
        missing = [c for c in dict.fromkeys(captions) if c not in cindex]
        if missing:
            self._add_captions(missing)
        idx = np.fromiter((cindex[c] for c in captions), np.int64, len(captions))
        # embed each distinct caption once, then gather
        uidx, inverse = np.unique(idx, return_inverse=True)
        tokens, pooled = self._embed_rows(self._c_rows[uidx])
        if len(uidx) == len(idx) and np.array_equal(uidx, idx):
            return tokens, pooled
        return tokens[inverse], pooled[inverse]

    __call__ = encode

    def tokenize(self, captions: Sequence[str]) -> np.ndarray:
        return tokenize(captions, self.config.max_len, self.config.vocab_size)

    # ---- conditioning dropout -------------------------------------------------------------------
    def drop_text(self, key, tokens, pooled, drop_probs=None):
        """:func:`drop_text` with this encoder's layout and (by default) its drop probabilities."""
        probs = self.config.drop_probs if drop_probs is None else drop_probs
        return drop_text(key, tokens, pooled, probs, layout=self.layout)

    def null_condition(self, batch_size: int):
        return null_condition(batch_size, self.config)


def drop_text(key, tokens, pooled, drop_probs=None, layout: TextLayout | None = None):
    """Zero each encoder's contribution (its tokens AND its pooled part) per example, independently
    with that encoder's probability.  Jit-able (``layout`` is static).

    tokens [B, L_total, D], pooled [B, P]; drop_probs: one probability per encoder (default
    ``(sqrt(0.1), sqrt(0.1))``: both dropped together on 10 % of the examples); layout: the
    encoders' slices (default: equal consecutive shares, which is the layout of
    :class:`TextEncoders` for any :class:`TextConfig`).
    """
    if drop_probs is None:
        drop_probs = (DEFAULT_DROP_PROB, DEFAULT_DROP_PROB)
    probs = jnp.asarray(drop_probs, jnp.float32).reshape(-1)
    n = probs.shape[0]
    if layout is None:
        layout = TextLayout.equal(n, tokens.shape[1], pooled.shape[-1])
    if len(layout.token_slices) != n:
        raise ValueError(f"{n} drop probabilities for {len(layout.token_slices)} encoders")
    b = tokens.shape[0]
    keep = jax.random.uniform(key, (b, n)) >= probs[None]  # [B, n]
    tok_keep = keep[:, layout.token_owner(tokens.shape[1])]  # [B, L_total]
    pool_keep = keep[:, layout.pooled_owner(pooled.shape[-1])]  # [B, P]
    tokens = jnp.where(tok_keep[:, :, None], tokens, jnp.zeros((), tokens.dtype))
    pooled = jnp.where(pool_keep, pooled, jnp.zeros((), pooled.dtype))
    return tokens, pooled


def null_condition(batch_size: int, config: TextConfig | None = None):
    """The unconditional (all encoders dropped) condition: zeros of the encoders' shapes."""
    cfg = config or TextConfig()
    return (
        jnp.zeros((batch_size, cfg.num_tokens, cfg.token_dim), jnp.float32),
        jnp.zeros((batch_size, cfg.pooled_dim), jnp.float32),
    )
