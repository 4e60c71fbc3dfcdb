"""Networks: the SD3 MMDiT (:mod:`trajbench.models.mmdit`) and the fixed deterministic text
encoders that condition it (:mod:`trajbench.models.text`).

>>> import jax
>>> from trajbench.models import MMDiT, MMDiTConfig, TextEncoders
>>> enc = TextEncoders()
>>> cfg = MMDiTConfig(depth=2, width=64, heads=2, patch_size=4, image_size=16, **enc.model_kwargs())
>>> tokens, pooled = enc.encode(["a red circle"])
>>> x = jax.numpy.zeros((1, 16, 16, 3)); c = jax.numpy.zeros((1,))
>>> params = MMDiT(cfg).init(jax.random.key(0), x, c, tokens, pooled)
>>> MMDiT(cfg).apply(params, x, c, tokens, pooled).shape
(1, 16, 16, 3)
"""

from trajbench.models.mmdit import MMDiT, MMDiTConfig, count_params, param_count_formula
from trajbench.models.text import (
    DEFAULT_DROP_PROB,
    TextConfig,
    TextEncoders,
    TextLayout,
    drop_text,
    null_condition,
    tokenize,
)

__all__ = [
    "DEFAULT_DROP_PROB",
    "MMDiT",
    "MMDiTConfig",
    "TextConfig",
    "TextEncoders",
    "TextLayout",
    "count_params",
    "drop_text",
    "null_condition",
    "param_count_formula",
    "tokenize",
]
